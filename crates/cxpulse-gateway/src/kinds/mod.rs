//! One mapper per survey tool: each reads the tool's documented webhook shape (see the fixture
//! notes in `tests/fixtures/webhooks/`) and says which answer it carries, or why none.

use serde_json::Value;

use crate::config::{Kind, SourceSpec};
use crate::mapping::{at, text, MapResult};

pub mod asknicely;
pub mod delighted;
pub mod survicate;
pub mod typeform;
pub mod wootric;

pub fn map(kind: Kind, payload: &Value, source: &SourceSpec) -> MapResult {
    match kind {
        Kind::Delighted => delighted::map(payload, source),
        Kind::Typeform => typeform::map(payload, source),
        Kind::Survicate => survicate::map(payload, source),
        Kind::Wootric => wootric::map(payload, source),
        Kind::Asknicely => asknicely::map(payload, source),
    }
}

/// The customer id: the source's `customer_from` path when set, else the kind's default path.
fn customer(payload: &Value, source: &SourceSpec, default_path: &str) -> Option<String> {
    text(at(payload, source.customer_from.as_deref().unwrap_or(default_path)))
}

/// `nps`, `csat` or `ces` from a tool's own name for it (any case); `None` for other surveys.
fn survey_name(tool_says: &str) -> Option<String> {
    let lower = tool_says.to_ascii_lowercase();
    ["nps", "csat", "ces"].contains(&lower.as_str()).then_some(lower)
}

/// A score that is absent, null or blank: the delivery carries no answer to count.
fn no_score(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::config::{Kind, SourceSpec};

    pub fn source(kind: Kind) -> SourceSpec {
        SourceSpec {
            name: kind.as_str().into(),
            kind,
            brand: Some("acme".into()),
            brand_from: None,
            segment_from: None,
            token: Some(cxpulse_core::secret::Secret::new("t")),
            secret: None,
            survey: None,
            scale_max: None,
            score_field: None,
            customer_from: None,
        }
    }

    pub fn fixture(name: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/webhooks/");
        std::fs::read_to_string(format!("{path}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// A fixture's JSON, after its leading `//` note lines.
    pub fn fixture_json(name: &str) -> serde_json::Value {
        let text = fixture(name);
        let body: String =
            text.lines().filter(|l| !l.starts_with("//")).collect::<Vec<_>>().join("\n");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}
