//! Typeform: `{"event_id", "event_type": "form_response", "form_response": {token,
//! submitted_at (RFC 3339), hidden: {...}, answers: [{type, <type>: value, field: {id, type,
//! ref}}]}}`. The source's `score_field` names the `ref` of the score question; the answer's value
//! sits under the key its `type` names (`"number": 9`).

use serde_json::Value;

use super::customer;
use crate::config::SourceSpec;
use crate::mapping::{at, invalid, missing, text, Answer, MapResult, Mapped};
use crate::time::epoch_ms;

pub fn map(payload: &Value, source: &SourceSpec) -> MapResult {
    let event_type = text(at(payload, "event_type")).ok_or_else(|| missing("event_type"))?;
    if event_type != "form_response" {
        return Ok(Mapped::Ignored(format!("typeform event_type {event_type} has no answers")));
    }
    let delivery_id = text(at(payload, "event_id")).ok_or_else(|| missing("event_id"))?;
    let response = at(payload, "form_response").ok_or_else(|| missing("form_response"))?;
    let response_id = text(at(response, "token")).ok_or_else(|| missing("form_response.token"))?;
    let submitted =
        at(response, "submitted_at").ok_or_else(|| missing("form_response.submitted_at"))?;
    let occurred_at_ms =
        epoch_ms(submitted).ok_or_else(|| invalid("form_response.submitted_at", "not a time"))?;
    let wanted = source.score_field.as_deref().unwrap_or_default();
    let answers = at(response, "answers").and_then(Value::as_array);
    let answer = answers
        .into_iter()
        .flatten()
        .find(|a| at(a, "field.ref").and_then(Value::as_str) == Some(wanted));
    let Some(answer) = answer else {
        return Ok(Mapped::Ignored(format!("typeform response has no answer to {wanted}")));
    };
    let value_key = text(at(answer, "type")).unwrap_or_default();
    let score = at(answer, &value_key).cloned().unwrap_or(Value::Null);
    Ok(Mapped::Answers(vec![Answer {
        delivery_id,
        response_id,
        occurred_at_ms,
        survey: source.survey.clone().unwrap_or_else(|| "nps".into()),
        score,
        customer_id: customer(payload, source, "form_response.hidden.user_id"),
        comment: None,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;
    use crate::kinds::test_support::{fixture_json, source};
    use serde_json::json;

    fn typeform_source() -> SourceSpec {
        let mut s = source(Kind::Typeform);
        s.score_field = Some("readable_ref_nps".into());
        s
    }

    #[test]
    fn the_configured_ref_picks_the_score() {
        let mapped = map(&fixture_json("typeform.json"), &typeform_source()).unwrap();
        let Mapped::Answers(answers) = mapped else { panic!("{mapped:?}") };
        assert_eq!(answers[0].score, json!(9));
        assert_eq!(answers[0].response_id, "a3a12ec67a1365927098a606107fac15");
        assert_eq!(answers[0].customer_id.as_deref(), Some("abc123456"));
        assert_eq!(answers[0].occurred_at_ms, 1_516_299_422_000);
    }

    #[test]
    fn a_response_without_the_score_question_is_ignored() {
        let mut s = typeform_source();
        s.score_field = Some("no_such_ref".into());
        assert!(matches!(map(&fixture_json("typeform.json"), &s), Ok(Mapped::Ignored(_))));
    }
}
