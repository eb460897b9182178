//! Arbitrary bytes into `parse_event`: it must never panic, what it accepts must keep the
//! promises of `event::Event` (label values, id lengths, time range, range-checked scores, text
//! that is UTF-8), and it must answer exactly as the serde-based reference path does (the
//! hand-written fast path takes most events and must never differ from it).
#![no_main]

use cxpulse_core::event::{
    is_label_value, Event, Payload, Survey, MAX_COMMENT_BYTES, MAX_EVENT_BYTES, MAX_OCCURRED_AT_MS,
};
use cxpulse_core::parse::{parse_event, parse_event_reference};
use cxpulse_core::RejectReason;
use libfuzzer_sys::fuzz_target;

fn check_id(field: &str, id: &str) {
    assert!((1..=128).contains(&id.len()), "{field} is {} bytes: {id:?}", id.len());
    // The fast path builds text without the general validator where it saw only ASCII.
    assert!(std::str::from_utf8(id.as_bytes()).is_ok(), "{field} is not UTF-8");
}

fn check(event: &Event<'_>) {
    assert!(is_label_value(&event.brand), "brand {:?} is not a label value", event.brand);
    assert!(is_label_value(&event.segment), "segment {:?} is not a label value", event.segment);
    check_id("event_id", &event.event_id);
    assert!(
        (0..=MAX_OCCURRED_AT_MS).contains(&event.occurred_at_ms),
        "occurred_at {} out of range",
        event.occurred_at_ms
    );
    match &event.payload {
        Payload::Survey { survey, response_id, customer_id, comment } => {
            match *survey {
                Survey::Nps { score } => assert!(score <= 10, "nps score {score}"),
                Survey::Csat { score, scale } => {
                    assert!((1..=scale.max()).contains(&score), "csat score {score} on {scale:?}")
                }
                Survey::Ces { score } => assert!((1..=7).contains(&score), "ces score {score}"),
            }
            if let Some(id) = response_id {
                check_id("response_id", id);
            }
            if let Some(id) = customer_id {
                check_id("customer_id", id);
            }
            if let Some(comment) = comment {
                assert!(comment.len() <= MAX_COMMENT_BYTES, "comment of {} bytes", comment.len());
            }
        }
        Payload::Lifecycle { customer_id, .. } => check_id("customer_id", customer_id),
        Payload::CustomerBase { .. } => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_event(data);
    assert_eq!(
        parsed,
        parse_event_reference(data),
        "fast and reference paths differ on {:?}",
        String::from_utf8_lossy(data)
    );
    match parsed {
        Ok(event) => {
            assert!(data.len() <= MAX_EVENT_BYTES);
            check(&event);
        }
        Err(rejection) => {
            // The engine's clock checks are not the parser's business.
            assert!(
                !matches!(rejection.reason, RejectReason::TooOld | RejectReason::TooFarInFuture),
                "parser returned a clock rejection: {rejection}"
            );
        }
    }
});
