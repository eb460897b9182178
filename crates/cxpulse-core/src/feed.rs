//! The detractor feed's messages: one per NPS answer scored 0–6 (`open`), and one when a
//! correction lifts such an answer out of 0–6 (`resolved`), keyed by `response_id` (else
//! `event_id`). Built from the event alone, so a message written again after a crash has the
//! same key and the same bytes: a compacted feed topic holds each answer's latest status.

use chrono::{TimeZone, Utc};
use serde::Serialize;

use crate::event::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedStatus {
    Open,
    Resolved,
}

impl FeedStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedStatus::Open => "open",
            FeedStatus::Resolved => "resolved",
        }
    }
}

/// One feed message, with the index of the message it came from in the batch the engine was
/// given (0 for `Engine::process`), so that the caller can hold that message's offset until the
/// feed message is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedItem {
    pub index: usize,
    pub key: String,
    pub value: Vec<u8>,
    pub status: FeedStatus,
}

#[derive(Serialize)]
struct Value<'a> {
    brand: &'a str,
    segment: &'a str,
    customer_id: Option<&'a str>,
    response_id: Option<&'a str>,
    event_id: &'a str,
    score: u8,
    occurred_at: String,
    comment: Option<&'a str>,
    status: &'static str,
}

impl FeedItem {
    /// The message for an NPS answer `score` of `event` (a survey response).
    pub fn new(
        index: usize,
        event: &Event<'_>,
        parts: FeedParts<'_>,
        score: u8,
        status: FeedStatus,
    ) -> FeedItem {
        let occurred_at = Utc
            .timestamp_millis_opt(event.occurred_at_ms)
            .single()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        let value = Value {
            brand: &event.brand,
            segment: &event.segment,
            customer_id: parts.customer_id,
            response_id: parts.response_id,
            event_id: &event.event_id,
            score,
            occurred_at,
            comment: parts.comment,
            status: status.as_str(),
        };
        let key = parts.response_id.unwrap_or(&event.event_id).to_string();
        // A struct of strings and integers always serializes.
        let value = serde_json::to_vec(&value).unwrap_or_default();
        FeedItem { index, key, value, status }
    }
}

/// The optional parts of a survey answer that the feed passes on.
#[derive(Clone, Copy, Debug, Default)]
pub struct FeedParts<'a> {
    pub response_id: Option<&'a str>,
    pub customer_id: Option<&'a str>,
    pub comment: Option<&'a str>,
}
