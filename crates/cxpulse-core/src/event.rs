//! The validated shape of a schema-1 event, and the reasons a message can be rejected.
//!
//! `parse` turns raw Kafka payload bytes into an [`Event`] that borrows from the payload where it
//! can, so the hot path allocates nothing for well-formed events.

use std::borrow::Cow;
use std::fmt;

/// Maximum payload size in bytes (docs/events.md: "at most 64 KiB").
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// 9999-12-31T23:59:59.999Z, the last instant an RFC 3339 timestamp can name: the latest
/// `occurred_at` accepted, and so the latest time any state can hold.
pub const MAX_OCCURRED_AT_MS: i64 = 253_402_300_799_999;

/// Label value of the series that takes brand/segment pairs beyond `max_series`; reserved, so a
/// sender cannot use it.
pub const OVERFLOW_LABEL: &str = "__overflow__";

/// A Kafka source partition, by topic index (the caller's numbering) and partition number. State
/// is kept per source partition, so a revoked partition takes exactly its own contribution along.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePartition {
    pub topic: u32,
    pub partition: i32,
}

/// Why a message was rejected. The `as_str` names are the `reason` label values of
/// `cxpulse_events_rejected_total` and the `cxpulse-error` dead-letter header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    InvalidJson,
    MissingField,
    InvalidField,
    ScoreOutOfRange,
    UnknownType,
    UnknownSchema,
    TooLarge,
    TooOld,
    TooFarInFuture,
}

impl RejectReason {
    pub const ALL: [RejectReason; 9] = [
        RejectReason::InvalidJson,
        RejectReason::MissingField,
        RejectReason::InvalidField,
        RejectReason::ScoreOutOfRange,
        RejectReason::UnknownType,
        RejectReason::UnknownSchema,
        RejectReason::TooLarge,
        RejectReason::TooOld,
        RejectReason::TooFarInFuture,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::ScoreOutOfRange => "score_out_of_range",
            RejectReason::UnknownType => "unknown_type",
            RejectReason::UnknownSchema => "unknown_schema",
            RejectReason::TooLarge => "too_large",
            RejectReason::TooOld => "too_old",
            RejectReason::TooFarInFuture => "too_far_in_future",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A rejection with a human-readable detail (which field, what was wrong) for the dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Rejection { reason, detail: detail.into() }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

/// NPS category, classified from the score (9–10 promoter, 7–8 passive, 0–6 detractor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NpsCategory {
    Promoter,
    Passive,
    Detractor,
}

/// CSAT scale: the highest score the survey offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CsatScale {
    Five,
    Seven,
    Ten,
}

impl CsatScale {
    pub fn max(self) -> u8 {
        match self {
            CsatScale::Five => 5,
            CsatScale::Seven => 7,
            CsatScale::Ten => 10,
        }
    }
}

/// A validated survey answer. Scores are already range-checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Survey {
    Nps { score: u8 },
    Csat { score: u8, scale: CsatScale },
    Ces { score: u8 },
}

impl Survey {
    pub fn nps_category(score: u8) -> NpsCategory {
        match score {
            9..=10 => NpsCategory::Promoter,
            7..=8 => NpsCategory::Passive,
            _ => NpsCategory::Detractor,
        }
    }

    /// Top-2 box: the two highest scores of the scale.
    pub fn csat_satisfied(score: u8, scale: CsatScale) -> bool {
        score + 1 >= scale.max()
    }

    pub fn ces_easy(score: u8) -> bool {
        score >= 5
    }
}

/// Lifecycle action of a `customer_lifecycle` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Signup,
    Renewal,
    Purchase,
    Churn,
    Reactivation,
}

impl Action {
    pub const ALL: [Action; 5] =
        [Action::Signup, Action::Renewal, Action::Purchase, Action::Churn, Action::Reactivation];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Signup => "signup",
            Action::Renewal => "renewal",
            Action::Purchase => "purchase",
            Action::Churn => "churn",
            Action::Reactivation => "reactivation",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// How the action moves the count of active customers.
    pub fn active_delta(self) -> i64 {
        match self {
            Action::Signup | Action::Reactivation => 1,
            Action::Churn => -1,
            Action::Renewal | Action::Purchase => 0,
        }
    }
}

/// What the event says, by `type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// `customer_id` and `comment` are optional; the comment is only passed on (to the detractor
    /// feed), never stored.
    Survey {
        survey: Survey,
        response_id: Option<Cow<'a, str>>,
        customer_id: Option<Cow<'a, str>>,
        comment: Option<Cow<'a, str>>,
    },
    Lifecycle {
        action: Action,
        customer_id: Cow<'a, str>,
    },
    CustomerBase {
        active_customers: u64,
    },
}

/// A fully validated schema-1 event. Time checks against the clock (too_old,
/// too_far_in_future) are not done here: they need the clock, which the engine owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    /// Event time in epoch milliseconds.
    pub occurred_at_ms: i64,
    pub brand: Cow<'a, str>,
    pub segment: Cow<'a, str>,
    pub payload: Payload<'a>,
}

/// Largest `active_customers` accepted: a quadrillion less one, far beyond any customer base, and
/// small enough that counts built from it (summed over partitions, moved by lifecycle events)
/// never reach the limits of an i64, where saturating arithmetic would stop being exact.
pub const MAX_ACTIVE_CUSTOMERS: u64 = 999_999_999_999_999;

/// Longest `comment` of a survey answer, in bytes.
pub const MAX_COMMENT_BYTES: usize = 4 * 1024;

/// Longest label value (brand, segment), in bytes.
pub const MAX_LABEL_BYTES: usize = 64;

/// Is `s` a valid label value: 1..64 bytes of `[A-Za-z0-9_.:-]`.
pub fn is_label_value(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_BYTES
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}
