//! AskNicely: `{"count", "person": {id, name, email, segment, ...}, "question": {id, score,
//! comment, sent, opened, responded (Unix seconds as strings), segment, deliverymethod, ...}}`.
//! `count` goes up by one with each webhook for the same response, so `question.id` with `count`
//! identifies a delivery; the payload does not say which survey, so the source's `survey`
//! (default `nps`) does.

use serde_json::Value;

use super::{customer, no_score};
use crate::config::SourceSpec;
use crate::mapping::{at, invalid, missing, text, Answer, MapResult, Mapped};
use crate::time::epoch_ms;

pub fn map(payload: &Value, source: &SourceSpec) -> MapResult {
    let question = at(payload, "question").ok_or_else(|| missing("question"))?;
    let id = text(at(question, "id")).ok_or_else(|| missing("question.id"))?;
    let score = at(question, "score");
    if no_score(score) {
        return Ok(Mapped::Ignored("asknicely delivery without a score".into()));
    }
    let count = text(at(payload, "count")).unwrap_or_else(|| "1".into());
    let responded = at(question, "responded").ok_or_else(|| missing("question.responded"))?;
    let occurred_at_ms =
        epoch_ms(responded).ok_or_else(|| invalid("question.responded", "not a time"))?;
    Ok(Mapped::Answers(vec![Answer {
        delivery_id: format!("{id}#{count}"),
        response_id: id,
        occurred_at_ms,
        survey: source.survey.clone().unwrap_or_else(|| "nps".into()),
        score: score.cloned().unwrap_or(Value::Null),
        customer_id: customer(payload, source, "person.id"),
        comment: text(at(question, "comment")),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;
    use crate::kinds::test_support::{fixture_json, source};
    use serde_json::json;

    #[test]
    fn the_documented_payload_maps_with_its_string_score() {
        let Mapped::Answers(a) =
            map(&fixture_json("asknicely.json"), &source(Kind::Asknicely)).unwrap()
        else {
            panic!()
        };
        assert_eq!(a[0].score, json!("10"));
        assert_eq!(a[0].delivery_id, "345094#1");
        assert_eq!(a[0].customer_id.as_deref(), Some("163012"));
        assert_eq!(a[0].occurred_at_ms, 1_774_990_125_000);
    }
}
