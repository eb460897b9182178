//! Delighted: `{"event_type": "survey_response.created" | "survey_response.updated" |
//! "unsubscribe.created", "event_id", "event_data": {id, person: {id}, survey_type, score,
//! comment, created_at (Unix seconds), updated_at}}`. Each delivery has its own `event_id`, so
//! a retry repeats it and an update does not.

use serde_json::Value;

use super::{customer, no_score, survey_name};
use crate::config::SourceSpec;
use crate::mapping::{at, invalid, missing, text, Answer, MapResult, Mapped};
use crate::time::epoch_ms;

pub fn map(payload: &Value, source: &SourceSpec) -> MapResult {
    let event_type = text(at(payload, "event_type")).ok_or_else(|| missing("event_type"))?;
    if !event_type.starts_with("survey_response.") {
        return Ok(Mapped::Ignored(format!("delighted event_type {event_type} has no score")));
    }
    let delivery_id = text(at(payload, "event_id")).ok_or_else(|| missing("event_id"))?;
    let data = at(payload, "event_data").ok_or_else(|| missing("event_data"))?;
    let response_id = text(at(data, "id")).ok_or_else(|| missing("event_data.id"))?;
    let score = at(data, "score");
    if no_score(score) {
        return Ok(Mapped::Ignored("delighted response without a score".into()));
    }
    let survey = match text(at(data, "survey_type")) {
        Some(tool_says) => match survey_name(&tool_says) {
            Some(survey) => survey,
            None => {
                return Ok(Mapped::Ignored(format!(
                    "delighted survey_type {tool_says} is not NPS, CSAT or CES"
                )))
            }
        },
        None => source.survey.clone().unwrap_or_else(|| "nps".into()),
    };
    let created = at(data, "created_at").ok_or_else(|| missing("event_data.created_at"))?;
    let occurred_at_ms =
        epoch_ms(created).ok_or_else(|| invalid("event_data.created_at", "not a time"))?;
    Ok(Mapped::Answers(vec![Answer {
        delivery_id,
        response_id,
        occurred_at_ms,
        survey,
        score: score.cloned().unwrap_or(Value::Null),
        customer_id: customer(payload, source, "event_data.person.id"),
        comment: text(at(data, "comment")),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;
    use crate::kinds::test_support::{fixture_json, source};
    use serde_json::json;

    #[test]
    fn the_documented_response_maps_to_one_answer() {
        let mapped = map(&fixture_json("delighted.json"), &source(Kind::Delighted)).unwrap();
        let Mapped::Answers(answers) = mapped else { panic!("{mapped:?}") };
        assert_eq!(answers.len(), 1);
        let a = &answers[0];
        assert_eq!(a.survey, "nps");
        assert_eq!(a.score, json!(9));
        assert_eq!(a.response_id, "5435");
        assert_eq!(a.customer_id.as_deref(), Some("5975"));
        assert_eq!(a.occurred_at_ms % 1000, 0);
        assert!(a.comment.is_some());
    }

    #[test]
    fn unsubscribes_and_other_surveys_are_ignored() {
        let s = source(Kind::Delighted);
        let unsubscribe = json!({"event_type": "unsubscribe.created", "event_id": "e"});
        assert!(matches!(map(&unsubscribe, &s), Ok(Mapped::Ignored(_))));
        let mut smileys = fixture_json("delighted.json");
        smileys["event_data"]["survey_type"] = json!("smileys");
        assert!(matches!(map(&smileys, &s), Ok(Mapped::Ignored(_))));
        let mut no_id = fixture_json("delighted.json");
        no_id.as_object_mut().unwrap().remove("event_id");
        assert!(map(&no_id, &s).is_err());
    }
}
