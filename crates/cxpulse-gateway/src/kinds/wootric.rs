//! Wootric (InMoment): `{"response": {id, score, text, end_user_id, end_user_properties,
//! created_at, updated_at, excluded_from_calculations}, "event_name": "created" | "updated",
//! "timestamp", "survey_mode": "NPS" | "CSAT" | "CES"}`, or `"decline": {...}` instead of
//! `response`. It may come form-encoded (`response[score]=7&...`, times like
//! `2016-08-04 13:57:26 -0700`). There is no delivery id: the response id and its `updated_at`
//! stand for one (a retry repeats both, an update moves `updated_at`).

use serde_json::Value;

use super::{customer, no_score, survey_name};
use crate::config::SourceSpec;
use crate::mapping::{at, invalid, missing, text, Answer, MapResult, Mapped};
use crate::time::epoch_ms;

pub fn map(payload: &Value, source: &SourceSpec) -> MapResult {
    let Some(response) = at(payload, "response") else {
        let what = if at(payload, "decline").is_some() { "a decline" } else { "no response" };
        return Ok(Mapped::Ignored(format!("wootric delivery is {what}")));
    };
    let id = text(at(response, "id")).ok_or_else(|| missing("response.id"))?;
    let score = at(response, "score");
    if no_score(score) {
        return Ok(Mapped::Ignored("wootric response without a score".into()));
    }
    if matches!(text(at(response, "excluded_from_calculations")).as_deref(), Some("true"))
        || at(response, "excluded_from_calculations") == Some(&Value::Bool(true))
    {
        return Ok(Mapped::Ignored("wootric response excluded from calculations".into()));
    }
    let survey = match text(at(payload, "survey_mode")) {
        Some(mode) => match survey_name(&mode) {
            Some(survey) => survey,
            None => return Ok(Mapped::Ignored(format!("wootric survey_mode {mode} not counted"))),
        },
        None => source.survey.clone().unwrap_or_else(|| "nps".into()),
    };
    let created = at(response, "created_at").ok_or_else(|| missing("response.created_at"))?;
    let occurred_at_ms =
        epoch_ms(created).ok_or_else(|| invalid("response.created_at", "not a time"))?;
    let version = at(response, "updated_at").and_then(epoch_ms).unwrap_or(occurred_at_ms);
    Ok(Mapped::Answers(vec![Answer {
        delivery_id: format!("{id}@{version}"),
        response_id: id,
        occurred_at_ms,
        survey,
        score: score.cloned().unwrap_or(Value::Null),
        customer_id: customer(payload, source, "response.end_user_id"),
        comment: text(at(response, "text")),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;
    use crate::form::parse_form;
    use crate::kinds::test_support::{fixture, fixture_json, source};
    use serde_json::json;

    #[test]
    fn json_and_form_bodies_map_alike() {
        let s = source(Kind::Wootric);
        let Mapped::Answers(from_json) = map(&fixture_json("wootric.json"), &s).unwrap() else {
            panic!()
        };
        let form_text: String =
            fixture("wootric-form.txt").lines().filter(|l| !l.starts_with("//")).collect();
        let Mapped::Answers(from_form) = map(&parse_form(&form_text), &s).unwrap() else {
            panic!()
        };
        assert_eq!(from_json[0].score, json!(7));
        assert_eq!(from_form[0].score, json!("7"));
        assert_eq!(from_json[0].response_id, from_form[0].response_id);
        assert_eq!(from_form[0].customer_id.as_deref(), Some("30"));
        assert_eq!(from_form[0].occurred_at_ms, 1_470_344_246_000);
    }

    #[test]
    fn declines_are_ignored() {
        let decline = json!({"decline": {"id": 19}, "event_name": "created"});
        assert!(matches!(map(&decline, &source(Kind::Wootric)), Ok(Mapped::Ignored(_))));
    }
}
