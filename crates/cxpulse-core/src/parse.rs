//! Schema-1 event parsing and validation (docs/events.md).
//!
//! [`parse_event`] turns one Kafka payload into a validated [`Event`], or into a [`Rejection`] whose
//! reason is the `cxpulse_events_rejected_total` label and whose detail goes to the dead letter.
//! Checks that need the clock (`too_old`, `too_far_in_future`) are the engine's, not ours.
//!
//! This runs for every consumed message. The common shape (a flat object of known keys, plain
//! strings and integers) goes through `parse_fast`'s single hand-written pass; anything else falls
//! back to the general path here, which is the reference: one serde pass splits the object into
//! raw JSON slices per field, then each known field is interpreted from its slice, borrowing
//! strings from the payload. Both allocate nothing for well-formed events without escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::*;

/// `event_id`, `customer_id` and `response_id` are 1..=128 bytes.
pub(super) const MAX_ID_BYTES: usize = 128;

/// 9999-12-31T23:59:59.999Z, the last instant an RFC 3339 timestamp can name.
pub(super) const MAX_OCCURRED_AT_MS: i64 = 253_402_300_799_999;

/// Deepest array/object nesting allowed inside a field's value. serde_json refuses documents
/// nested 128 levels deep and the event object is one level; but its fast path for values it only
/// skips (raw values, ignored fields) does not count levels, so we count them ourselves.
const MAX_VALUE_NESTING: usize = 126;

/// Longest excerpt of a sender's value quoted in a rejection detail.
const MAX_EXCERPT_BYTES: usize = 40;

/// Parses and validates one schema-1 event. Never panics, whatever the bytes.
pub fn parse_event(payload: &[u8]) -> Result<Event<'_>, Rejection> {
    // The common shape, scanned by hand; it returns only what the full path below would.
    if payload.len() <= MAX_EVENT_BYTES {
        if let Some(event) = crate::parse_fast::parse_fast(payload) {
            return Ok(event);
        }
    }
    parse_event_slow(payload)
}

/// [`parse_event`] without the fast path, for tests and fuzzing to hold the fast path to it.
#[doc(hidden)]
pub fn parse_event_reference(payload: &[u8]) -> Result<Event<'_>, Rejection> {
    parse_event_slow(payload)
}

/// [`parse_event`] without the fast path: serde splits the object, then each field is checked.
pub(crate) fn parse_event_slow(payload: &[u8]) -> Result<Event<'_>, Rejection> {
    // Before anything else, so an oversized message costs nothing to reject.
    if payload.len() > MAX_EVENT_BYTES {
        return Err(Rejection::new(
            RejectReason::TooLarge,
            format!("payload is {} bytes, more than {MAX_EVENT_BYTES}", payload.len()),
        ));
    }
    let text = std::str::from_utf8(payload).map_err(|e| {
        Rejection::new(
            RejectReason::InvalidJson,
            format!("payload is not UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })?;
    let f: RawFields<'_> = serde_json::from_str(text)
        .map_err(|e| Rejection::new(RejectReason::InvalidJson, e.to_string()))?;

    check_schema(f.schema)?;
    let event_type = event_type(f.event_type)?;

    let event_id = id_string("event_id", required("event_id", f.event_id)?)?;
    let occurred_at_ms = occurred_at(required("occurred_at", f.occurred_at)?)?;
    let brand = label("brand", required("brand", f.brand)?)?;
    let segment = match optional(f.segment) {
        Some(raw) => label("segment", raw)?,
        None => Cow::Borrowed("all"),
    };
    // Only lifecycle events keep it, but a malformed one is rejected on any type.
    let customer_id = match optional(f.customer_id) {
        Some(raw) => Some(id_string("customer_id", raw)?),
        None => None,
    };

    let payload = match event_type {
        EventType::SurveyResponse => survey_response(&f)?,
        EventType::CustomerLifecycle => {
            let Some(customer_id) = customer_id else {
                return Err(missing("customer_id", f.customer_id));
            };
            Payload::Lifecycle { action: action(required("action", f.action)?)?, customer_id }
        }
        EventType::CustomerBase => Payload::CustomerBase {
            active_customers: active_customers(required("active_customers", f.active_customers)?)?,
        },
    };

    Ok(Event { event_id, occurred_at_ms, brand, segment, payload })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EventType {
    SurveyResponse,
    CustomerLifecycle,
    CustomerBase,
}

fn check_schema(raw: Option<&RawValue>) -> Result<(), Rejection> {
    // Not `optional()`: `"schema": null` is a malformed version, not a missing one.
    let Some(raw) = raw.map(RawValue::get) else { return Ok(()) };
    match integer(raw) {
        Some(Integer::NonNegative(1)) => Ok(()),
        Some(_) => Err(Rejection::new(
            RejectReason::UnknownSchema,
            format!("field `schema`: version {} is not supported (only 1)", excerpt(raw)),
        )),
        None => Err(invalid("schema", format_args!("expected an integer, got {}", kind_of(raw)))),
    }
}

fn event_type(raw: Option<&RawValue>) -> Result<EventType, Rejection> {
    let raw = required("type", raw)?;
    let Some(name) = json_string("type", raw)? else {
        return Err(invalid("type", format_args!("expected a string, got {}", kind_of(raw))));
    };
    match &*name {
        "survey_response" => Ok(EventType::SurveyResponse),
        "customer_lifecycle" => Ok(EventType::CustomerLifecycle),
        "customer_base" => Ok(EventType::CustomerBase),
        _ => Err(Rejection::new(
            RejectReason::UnknownType,
            format!("field `type`: unknown event type {}", excerpt(raw)),
        )),
    }
}

fn survey_response<'a>(f: &RawFields<'a>) -> Result<Payload<'a>, Rejection> {
    let raw = required("survey", f.survey)?;
    let name = json_string("survey", raw)?;
    let survey = match name.as_deref() {
        Some("nps") => Survey::Nps { score: score(f.score, 0, 10, "nps")? },
        Some("csat") => {
            let scale = csat_scale(f.scale_max)?;
            Survey::Csat { score: score(f.score, 1, scale.max(), "csat")?, scale }
        }
        Some("ces") => Survey::Ces { score: score(f.score, 1, 7, "ces")? },
        _ => {
            return Err(invalid(
                "survey",
                format_args!("{} is not one of \"nps\", \"csat\", \"ces\"", excerpt(raw)),
            ))
        }
    };
    let response_id = match optional(f.response_id) {
        Some(raw) => Some(id_string("response_id", raw)?),
        None => None,
    };
    Ok(Payload::Survey { survey, response_id })
}

/// A score is a JSON integer or a string of ASCII digits. Anything integral outside the range,
/// however large or negative, is out of range rather than invalid.
fn score(raw: Option<&RawValue>, lo: u8, hi: u8, survey: &str) -> Result<u8, Rejection> {
    let raw = required("score", raw)?;
    let value = match integer(raw) {
        Some(Integer::NonNegative(v)) => Some(v),
        Some(Integer::Negative | Integer::TooLarge) => None,
        None => match json_string("score", raw)? {
            Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => digits_value(&s),
            _ => {
                return Err(invalid(
                    "score",
                    format_args!("{} is not an integer or a string of digits", excerpt(raw)),
                ))
            }
        },
    };
    value.and_then(|v| u8::try_from(v).ok()).filter(|s| (lo..=hi).contains(s)).ok_or_else(|| {
        Rejection::new(
            RejectReason::ScoreOutOfRange,
            format!("field `score`: {} is outside {lo}..={hi} for {survey}", excerpt(raw)),
        )
    })
}

fn csat_scale(raw: Option<&RawValue>) -> Result<CsatScale, Rejection> {
    let Some(raw) = optional(raw) else { return Ok(CsatScale::Five) };
    match integer(raw) {
        Some(Integer::NonNegative(5)) => Ok(CsatScale::Five),
        Some(Integer::NonNegative(7)) => Ok(CsatScale::Seven),
        Some(Integer::NonNegative(10)) => Ok(CsatScale::Ten),
        _ => Err(invalid("scale_max", format_args!("{} is not 5, 7 or 10", excerpt(raw)))),
    }
}

pub(super) fn action(raw: &str) -> Result<Action, Rejection> {
    let name = json_string("action", raw)?;
    name.as_deref()
        .and_then(|name| Action::ALL.into_iter().find(|a| a.as_str() == name))
        .ok_or_else(|| {
            invalid(
                "action",
                format_args!(
                    "{} is not one of signup, renewal, purchase, churn, reactivation",
                    excerpt(raw)
                ),
            )
        })
}

pub(super) fn active_customers(raw: &str) -> Result<u64, Rejection> {
    match integer(raw) {
        Some(Integer::NonNegative(n)) if n <= MAX_ACTIVE_CUSTOMERS => Ok(n),
        _ => Err(invalid(
            "active_customers",
            format_args!("{} is not an integer in 0..={MAX_ACTIVE_CUSTOMERS}", excerpt(raw)),
        )),
    }
}

/// RFC 3339 with an offset, or integer epoch milliseconds; either way within years 1970..=9999,
/// so the engine can rely on a non-negative time that any timestamp format can print.
pub(super) fn occurred_at(raw: &str) -> Result<i64, Rejection> {
    let ms = if let Some(text) = json_string("occurred_at", raw)? {
        match chrono::DateTime::parse_from_rfc3339(&text) {
            Ok(t) => t.timestamp_millis(),
            Err(e) => {
                return Err(invalid(
                    "occurred_at",
                    format_args!("{} is not an RFC 3339 timestamp with offset ({e})", excerpt(raw)),
                ))
            }
        }
    } else {
        match integer(raw) {
            Some(Integer::NonNegative(n)) => i64::try_from(n).unwrap_or(i64::MAX),
            Some(Integer::Negative) => -1,
            Some(Integer::TooLarge) => i64::MAX,
            None => {
                return Err(invalid(
                    "occurred_at",
                    format_args!(
                        "expected an RFC 3339 string or integer epoch milliseconds, got {}",
                        excerpt(raw)
                    ),
                ))
            }
        }
    };
    if (0..=MAX_OCCURRED_AT_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(invalid(
            "occurred_at",
            format_args!(
                "{} is outside 1970-01-01T00:00:00Z..=9999-12-31T23:59:59.999Z",
                excerpt(raw)
            ),
        ))
    }
}

pub(super) fn id_string<'a>(field: &str, raw: &'a str) -> Result<Cow<'a, str>, Rejection> {
    let Some(s) = json_string(field, raw)? else {
        return Err(invalid(field, format_args!("expected a string, got {}", kind_of(raw))));
    };
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return Err(invalid(
            field,
            format_args!("must be 1..={MAX_ID_BYTES} bytes, got {}", s.len()),
        ));
    }
    Ok(s)
}

pub(super) fn label<'a>(field: &str, raw: &'a str) -> Result<Cow<'a, str>, Rejection> {
    match json_string(field, raw)? {
        // The overflow series' label is cxpulse's own: a sender using it would be merged into it.
        Some(s) if s == crate::engine::OVERFLOW_LABEL => Err(invalid(
            field,
            format_args!("{} is reserved for the overflow series", crate::engine::OVERFLOW_LABEL),
        )),
        Some(s) if is_label_value(&s) => Ok(s),
        _ => Err(invalid(
            field,
            format_args!("{} is not a label value (1..=64 bytes of [A-Za-z0-9_.:-])", excerpt(raw)),
        )),
    }
}

/// The raw text of a required field; absent and `null` are both missing.
fn required<'a>(field: &str, raw: Option<&'a RawValue>) -> Result<&'a str, Rejection> {
    optional(raw).ok_or_else(|| missing(field, raw))
}

/// The raw text of an optional field; `null` counts as absent.
fn optional(raw: Option<&RawValue>) -> Option<&str> {
    raw.map(RawValue::get).filter(|raw| *raw != "null")
}

/// The text of a JSON string literal, borrowed from the payload unless it has escapes;
/// `None` if the value is not a string.
fn json_string<'a>(field: &str, raw: &'a str) -> Result<Option<Cow<'a, str>>, Rejection> {
    let Some(body) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return Ok(None);
    };
    if !body.contains('\\') {
        return Ok(Some(Cow::Borrowed(body)));
    }
    // Skipping raw values does not check what `\u` escapes decode to (a lone surrogate is no
    // character); a string that cannot become text is malformed JSON, not a bad field value.
    match serde_json::from_str::<String>(raw) {
        Ok(s) => Ok(Some(Cow::Owned(s))),
        Err(e) => Err(Rejection::new(RejectReason::InvalidJson, format!("field `{field}`: {e}"))),
    }
}

/// A JSON number without fraction or exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Integer {
    /// Fits u64 (`-0` included).
    NonNegative(u64),
    Negative,
    /// Positive, beyond u64.
    TooLarge,
}

/// `None` unless `raw` is an integral JSON number. The text is already valid JSON, so a value
/// made of an optional `-` and digits is exactly an integer.
pub(super) fn integer(raw: &str) -> Option<Integer> {
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, raw),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(match digits_value(digits) {
        Some(0) => Integer::NonNegative(0),
        _ if negative => Integer::Negative,
        Some(n) => Integer::NonNegative(n),
        None => Integer::TooLarge,
    })
}

/// The value of a string of ASCII digits, `None` if it overflows u64.
pub(super) fn digits_value(digits: &str) -> Option<u64> {
    digits
        .bytes()
        .try_fold(0u64, |n, b| n.checked_mul(10)?.checked_add(u64::from(b.wrapping_sub(b'0'))))
}

/// What kind of JSON value `raw` is, for error details (valid JSON: the first byte decides).
fn kind_of(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// A sender's value, shortened so a 60 KiB string does not end up in a dead-letter header.
fn excerpt(raw: &str) -> Excerpt<'_> {
    Excerpt(raw)
}

struct Excerpt<'a>(&'a str);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= MAX_EXCERPT_BYTES {
            return f.write_str(self.0);
        }
        let mut end = MAX_EXCERPT_BYTES;
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}… ({} bytes)", self.0.get(..end).unwrap_or_default(), self.0.len())
    }
}

fn missing(field: &str, raw: Option<&RawValue>) -> Rejection {
    let what = if raw.is_some() { "is null" } else { "is missing" };
    Rejection::new(RejectReason::MissingField, format!("field `{field}` {what}"))
}

fn invalid(field: &str, detail: impl fmt::Display) -> Rejection {
    Rejection::new(RejectReason::InvalidField, format!("field `{field}`: {detail}"))
}

/// Does a (valid JSON) value nest arrays/objects more than `limit` levels deep?
fn nests_deeper_than(raw: &str, limit: usize) -> bool {
    if !raw.starts_with(['[', '{']) {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in raw.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The event object split into the raw JSON text of each known field. Filled by a hand-written
/// visitor rather than `#[derive(Deserialize)]` because it must see `"schema": null` (derive maps
/// it to `None`) and must bound the nesting of skipped values (see [`MAX_VALUE_NESTING`]).
#[derive(Default)]
struct RawFields<'a> {
    schema: Option<&'a RawValue>,
    event_type: Option<&'a RawValue>,
    event_id: Option<&'a RawValue>,
    occurred_at: Option<&'a RawValue>,
    brand: Option<&'a RawValue>,
    segment: Option<&'a RawValue>,
    customer_id: Option<&'a RawValue>,
    survey: Option<&'a RawValue>,
    score: Option<&'a RawValue>,
    scale_max: Option<&'a RawValue>,
    response_id: Option<&'a RawValue>,
    action: Option<&'a RawValue>,
    active_customers: Option<&'a RawValue>,
}

impl<'a> RawFields<'a> {
    fn slot(&mut self, key: Key) -> Option<&mut Option<&'a RawValue>> {
        Some(match key {
            Key::Schema => &mut self.schema,
            Key::Type => &mut self.event_type,
            Key::EventId => &mut self.event_id,
            Key::OccurredAt => &mut self.occurred_at,
            Key::Brand => &mut self.brand,
            Key::Segment => &mut self.segment,
            Key::CustomerId => &mut self.customer_id,
            Key::Survey => &mut self.survey,
            Key::Score => &mut self.score,
            Key::ScaleMax => &mut self.scale_max,
            Key::ResponseId => &mut self.response_id,
            Key::Action => &mut self.action,
            Key::ActiveCustomers => &mut self.active_customers,
            Key::Unknown => return None,
        })
    }
}

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = RawFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = RawFields::default();
        while let Some(key) = map.next_key::<Key>()? {
            let value: &'de RawValue = map.next_value()?;
            if nests_deeper_than(value.get(), MAX_VALUE_NESTING) {
                return Err(de::Error::custom(format_args!(
                    "value nested more than {} levels deep",
                    MAX_VALUE_NESTING + 1
                )));
            }
            if let Some(slot) = fields.slot(key) {
                // Which of two values would win is exactly what a sender cannot rely on.
                if slot.replace(value).is_some() {
                    return Err(de::Error::custom(format_args!(
                        "duplicate field `{}`",
                        key.name()
                    )));
                }
            }
        }
        Ok(fields)
    }
}

#[derive(Clone, Copy)]
enum Key {
    Schema,
    Type,
    EventId,
    OccurredAt,
    Brand,
    Segment,
    CustomerId,
    Survey,
    Score,
    ScaleMax,
    ResponseId,
    Action,
    ActiveCustomers,
    Unknown,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Key::Schema => "schema",
            Key::Type => "type",
            Key::EventId => "event_id",
            Key::OccurredAt => "occurred_at",
            Key::Brand => "brand",
            Key::Segment => "segment",
            Key::CustomerId => "customer_id",
            Key::Survey => "survey",
            Key::Score => "score",
            Key::ScaleMax => "scale_max",
            Key::ResponseId => "response_id",
            Key::Action => "action",
            Key::ActiveCustomers => "active_customers",
            Key::Unknown => "(unknown)",
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    // Borrowed and escaped keys both arrive here, so `"\u0074ype"` is `type`.
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(match key {
            "schema" => Key::Schema,
            "type" => Key::Type,
            "event_id" => Key::EventId,
            "occurred_at" => Key::OccurredAt,
            "brand" => Key::Brand,
            "segment" => Key::Segment,
            "customer_id" => Key::CustomerId,
            "survey" => Key::Survey,
            "score" => Key::Score,
            "scale_max" => Key::ScaleMax,
            "response_id" => Key::ResponseId,
            "action" => Key::Action,
            "active_customers" => Key::ActiveCustomers,
            _ => Key::Unknown,
        })
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
