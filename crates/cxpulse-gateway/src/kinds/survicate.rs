//! Survicate: one delivery per answered question, `{"messageId", "deliveryTries", "event":
//! {"questionAnswered": {responseUuid, timestamp (ISO), respondent: {id, uuid, attributes},
//! question: {id, body}, choice: {id, body, comment}}}}`. For an NPS question `choice.id` is the
//! score and `choice.body` its category (`promoter`, `passive`, `detractor`); other questions of
//! the same response arrive as their own deliveries and are ignored, unless the source's
//! `score_field` names a question id (then `choice.body` holds its score, e.g. a rating).

use serde_json::Value;

use super::{customer, no_score};
use crate::config::SourceSpec;
use crate::mapping::{at, invalid, missing, text, Answer, MapResult, Mapped};
use crate::time::epoch_ms;

const NPS_CATEGORIES: [&str; 3] = ["promoter", "passive", "detractor"];

pub fn map(payload: &Value, source: &SourceSpec) -> MapResult {
    let Some(answered) = at(payload, "event.questionAnswered") else {
        return Ok(Mapped::Ignored("survicate event is not questionAnswered".into()));
    };
    let delivery_id = text(at(payload, "messageId")).ok_or_else(|| missing("messageId"))?;
    let response_uuid = text(at(answered, "responseUuid"))
        .ok_or_else(|| missing("event.questionAnswered.responseUuid"))?;
    let question = text(at(answered, "question.id")).unwrap_or_default();
    let choice_body = text(at(answered, "choice.body")).unwrap_or_default();
    let (survey, score) = match &source.score_field {
        Some(wanted) if *wanted == question => (
            source.survey.clone().unwrap_or_else(|| "nps".into()),
            if NPS_CATEGORIES.contains(&choice_body.as_str()) {
                at(answered, "choice.id")
            } else {
                at(answered, "choice.body")
            },
        ),
        Some(_) => {
            return Ok(Mapped::Ignored(format!("survicate question {question} is not the score")))
        }
        None if NPS_CATEGORIES.contains(&choice_body.as_str()) => {
            ("nps".to_string(), at(answered, "choice.id"))
        }
        None => {
            return Ok(Mapped::Ignored(format!("survicate question {question} is not an NPS one")))
        }
    };
    if no_score(score) {
        return Ok(Mapped::Ignored("survicate answer without a score".into()));
    }
    let stamp = at(answered, "timestamp").ok_or_else(|| missing("questionAnswered.timestamp"))?;
    let occurred_at_ms =
        epoch_ms(stamp).ok_or_else(|| invalid("questionAnswered.timestamp", "not a time"))?;
    let customer_id = customer(payload, source, "event.questionAnswered.respondent.id")
        .or_else(|| text(at(answered, "respondent.uuid")));
    Ok(Mapped::Answers(vec![Answer {
        delivery_id,
        response_id: format!("{response_uuid}:{question}"),
        occurred_at_ms,
        survey,
        score: score.cloned().unwrap_or(Value::Null),
        customer_id,
        comment: text(at(answered, "choice.comment")),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;
    use crate::kinds::test_support::{fixture_json, source};
    use serde_json::json;

    #[test]
    fn an_nps_answer_is_counted_and_other_questions_are_not() {
        let s = source(Kind::Survicate);
        let mapped = map(&fixture_json("survicate-nps.json"), &s).unwrap();
        let Mapped::Answers(answers) = mapped else { panic!("{mapped:?}") };
        assert_eq!((answers[0].survey.as_str(), &answers[0].score), ("nps", &json!(9)));
        assert_eq!(answers[0].customer_id.as_deref(), Some("534759"));
        let other = map(&fixture_json("survicate-other-question.json"), &s).unwrap();
        assert!(matches!(other, Mapped::Ignored(_)), "{other:?}");
    }

    #[test]
    fn a_configured_rating_question_reads_its_body() {
        let mut s = source(Kind::Survicate);
        s.score_field = Some("12123".into());
        s.survey = Some("csat".into());
        let mut payload = fixture_json("survicate-other-question.json");
        payload["event"]["questionAnswered"]["choice"]["body"] = json!("4");
        let Mapped::Answers(answers) = map(&payload, &s).unwrap() else { panic!() };
        assert_eq!((answers[0].survey.as_str(), &answers[0].score), ("csat", &json!("4")));
    }
}
