//! From a mapper's [`Answer`] to a schema-1 event: ids scoped by source, brand and segment from
//! the source's settings or the payload, the score as the tool sent it (the worker's parser judges
//! it). A mapper finds the answer; this module owns the event's shape.

use cxpulse_core::event::{RejectReason, Rejection, MAX_LABEL_BYTES};
use serde_json::{json, Map, Value};

use crate::config::SourceSpec;

/// One survey answer found in a delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The same for every retry of one delivery, different for an update.
    pub delivery_id: String,
    /// The tool's response id: a later answer with the same id replaces this one.
    pub response_id: String,
    pub occurred_at_ms: i64,
    pub survey: String,
    /// As sent: an integer or a string of digits; anything else the parser rejects.
    pub score: Value,
    pub customer_id: Option<String>,
    pub comment: Option<String>,
}

/// What a delivery comes to.
#[derive(Clone, Debug, PartialEq)]
pub enum Mapped {
    Answers(Vec<Answer>),
    /// No score in it (a decline, an unsubscribe, another question): why, for the reply.
    Ignored(String),
}

pub type MapResult = Result<Mapped, Rejection>;

pub fn missing(field: &str) -> Rejection {
    Rejection::new(RejectReason::MissingField, format!("webhook payload has no {field}"))
}

pub fn invalid(field: &str, detail: impl std::fmt::Display) -> Rejection {
    Rejection::new(RejectReason::InvalidField, format!("webhook payload {field}: {detail}"))
}

/// The value at a dotted path (`a.b.0.c`; numbers index arrays).
pub fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |node, key| match node {
        Value::Object(map) => map.get(key),
        Value::Array(items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A string or number as text; `None` for null, empty, objects and arrays.
pub fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer sent as a number or as a string of digits (surrounding blanks allowed).
pub fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A score as the parser should see it: integers as integers, digit strings trimmed, the rest
/// as sent (so the rejection is the parser's own).
pub fn score_value(value: &Value) -> Value {
    match integer(Some(value)) {
        Some(n) => json!(n),
        None => value.clone(),
    }
}

const MAX_ID_BYTES: usize = 128;
const MAX_COMMENT_CHARS: usize = 2000;

/// `source:id`, hashed when it would pass the 128-byte id limit.
pub fn scoped_id(source: &str, id: &str) -> String {
    let scoped = format!("{source}:{id}");
    if scoped.len() <= MAX_ID_BYTES {
        return scoped;
    }
    format!("{source}:h{:032x}", xxhash_rust::xxh3::xxh3_128(id.as_bytes()))
}

/// A payload value made a label value: characters outside `[A-Za-z0-9_.:-]` become `_`, cut at
/// 64 bytes. `None` when nothing is left.
pub fn label_from(value: Option<&Value>) -> Option<String> {
    let raw = text(value)?;
    let label: String =
        raw.trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(MAX_LABEL_BYTES)
            .collect();
    (!label.is_empty()).then_some(label)
}

/// The schema-1 event for `answer`, with brand and segment from the source's settings.
pub fn event_json(answer: &Answer, source: &SourceSpec, payload: &Value) -> Vec<u8> {
    let mut event = Map::new();
    event.insert("event_id".into(), json!(scoped_id(&source.name, &answer.delivery_id)));
    event.insert("type".into(), json!("survey_response"));
    event.insert("occurred_at".into(), json!(answer.occurred_at_ms));
    let brand = match (&source.brand, &source.brand_from) {
        (Some(brand), _) => Some(brand.clone()),
        (None, Some(path)) => label_from(at(payload, path)),
        (None, None) => None,
    };
    // A missing brand is left out, for the parser to reject as `missing_field`.
    if let Some(brand) = brand {
        event.insert("brand".into(), json!(brand));
    }
    if let Some(segment) = source.segment_from.as_deref().and_then(|p| label_from(at(payload, p))) {
        event.insert("segment".into(), json!(segment));
    }
    event.insert("survey".into(), json!(answer.survey));
    event.insert("score".into(), score_value(&answer.score));
    if answer.survey == "csat" {
        event.insert("scale_max".into(), json!(source.scale_max.unwrap_or(5)));
    }
    event.insert("response_id".into(), json!(scoped_id(&source.name, &answer.response_id)));
    if let Some(customer) = &answer.customer_id {
        event.insert("customer_id".into(), json!(scoped_id(&source.name, customer)));
    }
    if let Some(comment) = &answer.comment {
        event.insert(
            "comment".into(),
            json!(comment.chars().take(MAX_COMMENT_CHARS).collect::<String>()),
        );
    }
    event.insert("source".into(), json!(source.name));
    serde_json::to_vec(&Value::Object(event)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_reach_into_objects_and_arrays() {
        let v = json!({"a": {"b": [{"c": "x y"}]}, "n": 7});
        assert_eq!(text(at(&v, "a.b.0.c")).as_deref(), Some("x y"));
        assert_eq!(label_from(at(&v, "a.b.0.c")).as_deref(), Some("x_y"));
        assert_eq!(text(at(&v, "n")).as_deref(), Some("7"));
        assert_eq!(at(&v, "a.b.1"), None);
        assert_eq!(at(&v, "n.x"), None);
    }

    #[test]
    fn long_ids_are_hashed_to_fit() {
        assert_eq!(scoped_id("d", "42"), "d:42");
        let long = scoped_id("d", &"x".repeat(200));
        assert!(long.len() <= 128 && long.starts_with("d:h"), "{long}");
        assert_ne!(long, scoped_id("d", &"y".repeat(200)));
    }

    #[test]
    fn scores_sent_as_strings_become_integers() {
        assert_eq!(score_value(&json!(" 9")), json!(9));
        assert_eq!(score_value(&json!("nine")), json!("nine"));
        assert_eq!(score_value(&json!(9.5)), json!(9.5));
    }
}
