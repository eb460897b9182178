//! Schema-1 event parsing and validation (docs/events.md).
//!
//! [`parse_event`] turns one Kafka payload into a validated [`Event`], or into a [`Rejection`]
//! whose reason is the `cxpulse_events_rejected_total` label and whose detail goes to the dead
//! letter. Checks that need the clock (`too_old`, `too_far_in_future`) are the engine's, not ours.
//!
//! This runs for every consumed message. The common shape (a flat object of known keys, plain
//! strings and integers) goes through [`fast`]'s single hand-written pass; anything else falls
//! back to the general path here, which is the reference: one serde pass splits the object into
//! raw JSON slices per field, then each known field is interpreted from its slice, borrowing
//! strings from the payload. Both allocate nothing for well-formed events without escapes, and
//! both know the schema's fields from the one list in [`Field`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::event::*;

mod fast;

/// `event_id`, `customer_id` and `response_id` are 1..=128 bytes.
const MAX_ID_BYTES: usize = 128;

/// Declares [`Field`] from one list of the schema's field names, so that the names, the slot
/// order and the lookup by name cannot drift apart.
macro_rules! schema_fields {
    ($($field:ident => $name:literal,)+) => {
        /// A schema-1 field, by the slot its raw value takes while an object is split.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Field {
            $($field,)+
        }

        impl Field {
            const ALL: [Field; [$(Field::$field),+].len()] = [$(Field::$field),+];

            /// The field's name as events spell it.
            const fn name(self) -> &'static str {
                match self {
                    $(Field::$field => $name,)+
                }
            }

            /// The known field named `name`, if any.
            fn named(name: &str) -> Option<Field> {
                match name {
                    $($name => Some(Field::$field),)+
                    _ => None,
                }
            }
        }
    };
}

schema_fields! {
    Schema => "schema",
    Type => "type",
    EventId => "event_id",
    OccurredAt => "occurred_at",
    Brand => "brand",
    Segment => "segment",
    CustomerId => "customer_id",
    Survey => "survey",
    Score => "score",
    ScaleMax => "scale_max",
    ResponseId => "response_id",
    Action => "action",
    ActiveCustomers => "active_customers",
    Comment => "comment",
}

/// How many fields schema 1 knows.
const FIELDS: usize = Field::ALL.len();

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
        if let Some(event) = fast::parse_fast(payload) {
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

    check_schema(f.get(Field::Schema))?;
    let event_type = event_type(f.get(Field::Type))?;

    let event_id = id_string(Field::EventId, f.required(Field::EventId)?)?;
    let occurred_at_ms = occurred_at(f.required(Field::OccurredAt)?)?;
    let brand = label(Field::Brand, f.required(Field::Brand)?)?;
    let segment = match f.optional(Field::Segment) {
        Some(raw) => label(Field::Segment, raw)?,
        None => Cow::Borrowed("all"),
    };
    // Lifecycle events need it, survey answers may carry it; a malformed one is rejected on any
    // type.
    let customer_id = match f.optional(Field::CustomerId) {
        Some(raw) => Some(id_string(Field::CustomerId, raw)?),
        None => None,
    };

    let payload = match event_type {
        EventType::SurveyResponse => survey_response(&f, customer_id)?,
        EventType::CustomerLifecycle => {
            let Some(customer_id) = customer_id else {
                return Err(missing(Field::CustomerId, f.get(Field::CustomerId)));
            };
            Payload::Lifecycle { action: action(f.required(Field::Action)?)?, customer_id }
        }
        EventType::CustomerBase => Payload::CustomerBase {
            active_customers: active_customers(f.required(Field::ActiveCustomers)?)?,
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
        None => {
            Err(invalid(Field::Schema, format_args!("expected an integer, got {}", kind_of(raw))))
        }
    }
}

fn event_type(raw: Option<&RawValue>) -> Result<EventType, Rejection> {
    let raw = required(Field::Type, raw)?;
    let Some(name) = json_string(Field::Type, raw)? else {
        return Err(invalid(Field::Type, format_args!("expected a string, got {}", kind_of(raw))));
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

fn survey_response<'a>(
    f: &RawFields<'a>,
    customer_id: Option<Cow<'a, str>>,
) -> Result<Payload<'a>, Rejection> {
    let raw = f.required(Field::Survey)?;
    let name = json_string(Field::Survey, raw)?;
    let survey = match name.as_deref() {
        Some("nps") => Survey::Nps { score: score(f.get(Field::Score), 0, 10, "nps")? },
        Some("csat") => {
            let scale = csat_scale(f.get(Field::ScaleMax))?;
            Survey::Csat { score: score(f.get(Field::Score), 1, scale.max(), "csat")?, scale }
        }
        Some("ces") => Survey::Ces { score: score(f.get(Field::Score), 1, 7, "ces")? },
        _ => {
            return Err(invalid(
                Field::Survey,
                format_args!("{} is not one of \"nps\", \"csat\", \"ces\"", excerpt(raw)),
            ))
        }
    };
    let response_id = match f.optional(Field::ResponseId) {
        Some(raw) => Some(id_string(Field::ResponseId, raw)?),
        None => None,
    };
    let comment = match f.optional(Field::Comment) {
        Some(raw) => Some(comment(raw)?),
        None => None,
    };
    Ok(Payload::Survey { survey, response_id, customer_id, comment })
}

/// Any string of at most `MAX_COMMENT_BYTES` bytes (empty too).
fn comment(raw: &str) -> Result<Cow<'_, str>, Rejection> {
    let Some(text) = json_string(Field::Comment, raw)? else {
        return Err(invalid(
            Field::Comment,
            format_args!("expected a string, got {}", kind_of(raw)),
        ));
    };
    if text.len() > MAX_COMMENT_BYTES {
        return Err(invalid(
            Field::Comment,
            format_args!("must be at most {MAX_COMMENT_BYTES} bytes, got {}", text.len()),
        ));
    }
    Ok(text)
}

/// A score is a JSON integer or a string of ASCII digits. Anything integral outside the range,
/// however large or negative, is out of range rather than invalid.
fn score(raw: Option<&RawValue>, lo: u8, hi: u8, survey: &str) -> Result<u8, Rejection> {
    let raw = required(Field::Score, raw)?;
    let value = match integer(raw) {
        // `-0` is zero to JSON, but a score has no sign (`"-0"` fails the digits check below).
        Some(Integer::NonNegative(_)) if raw.starts_with('-') => {
            return Err(invalid(Field::Score, format_args!("{} is signed", excerpt(raw))))
        }
        Some(Integer::NonNegative(v)) => Some(v),
        Some(Integer::Negative | Integer::TooLarge) => None,
        None => match json_string(Field::Score, raw)? {
            Some(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => digits_value(&s),
            _ => {
                return Err(invalid(
                    Field::Score,
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
        _ => Err(invalid(Field::ScaleMax, format_args!("{} is not 5, 7 or 10", excerpt(raw)))),
    }
}

fn action(raw: &str) -> Result<Action, Rejection> {
    let name = json_string(Field::Action, raw)?;
    name.as_deref()
        .and_then(|name| Action::ALL.into_iter().find(|a| a.as_str() == name))
        .ok_or_else(|| {
            invalid(
                Field::Action,
                format_args!(
                    "{} is not one of signup, renewal, purchase, churn, reactivation",
                    excerpt(raw)
                ),
            )
        })
}

fn active_customers(raw: &str) -> Result<u64, Rejection> {
    match integer(raw) {
        Some(Integer::NonNegative(n)) if n <= MAX_ACTIVE_CUSTOMERS => Ok(n),
        _ => Err(invalid(
            Field::ActiveCustomers,
            format_args!("{} is not an integer in 0..={MAX_ACTIVE_CUSTOMERS}", excerpt(raw)),
        )),
    }
}

/// RFC 3339 with an offset, or integer epoch milliseconds; either way within years 1970..=9999,
/// so the engine can rely on a non-negative time that any timestamp format can print.
fn occurred_at(raw: &str) -> Result<i64, Rejection> {
    let ms = if let Some(text) = json_string(Field::OccurredAt, raw)? {
        match chrono::DateTime::parse_from_rfc3339(&text) {
            Ok(t) => t.timestamp_millis(),
            Err(e) => {
                return Err(invalid(
                    Field::OccurredAt,
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
                    Field::OccurredAt,
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
            Field::OccurredAt,
            format_args!(
                "{} is outside 1970-01-01T00:00:00Z..=9999-12-31T23:59:59.999Z",
                excerpt(raw)
            ),
        ))
    }
}

fn id_string<'a>(field: Field, raw: &'a str) -> Result<Cow<'a, str>, Rejection> {
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

fn label<'a>(field: Field, raw: &'a str) -> Result<Cow<'a, str>, Rejection> {
    match json_string(field, raw)? {
        // The overflow series' label is cxpulse's own: a sender using it would be merged into it.
        Some(s) if s == OVERFLOW_LABEL => Err(invalid(
            field,
            format_args!("{} is reserved for the overflow series", OVERFLOW_LABEL),
        )),
        Some(s) if is_label_value(&s) => Ok(s),
        _ => Err(invalid(
            field,
            format_args!("{} is not a label value (1..=64 bytes of [A-Za-z0-9_.:-])", excerpt(raw)),
        )),
    }
}

/// The raw text of a required field; absent and `null` are both missing.
fn required(field: Field, raw: Option<&RawValue>) -> Result<&str, Rejection> {
    optional(raw).ok_or_else(|| missing(field, raw))
}

impl<'a> RawFields<'a> {
    /// The raw text of a required field; absent and `null` are both missing.
    fn required(&self, field: Field) -> Result<&'a str, Rejection> {
        required(field, self.get(field))
    }

    /// The raw text of an optional field; `null` counts as absent.
    fn optional(&self, field: Field) -> Option<&'a str> {
        optional(self.get(field))
    }
}

/// The raw text of an optional field; `null` counts as absent.
fn optional(raw: Option<&RawValue>) -> Option<&str> {
    raw.map(RawValue::get).filter(|raw| *raw != "null")
}

/// The text of a JSON string literal, borrowed from the payload unless it has escapes;
/// `None` if the value is not a string.
fn json_string<'a>(field: Field, raw: &'a str) -> Result<Option<Cow<'a, str>>, Rejection> {
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
        Err(e) => {
            Err(Rejection::new(RejectReason::InvalidJson, format!("field `{}`: {e}", field.name())))
        }
    }
}

/// A JSON number without fraction or exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Integer {
    /// Fits u64 (`-0` included).
    NonNegative(u64),
    Negative,
    /// Positive, beyond u64.
    TooLarge,
}

/// `None` unless `raw` is an integral JSON number. The text is already valid JSON, so a value
/// made of an optional `-` and digits is exactly an integer.
fn integer(raw: &str) -> Option<Integer> {
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
fn digits_value(digits: &str) -> Option<u64> {
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

fn missing(field: Field, raw: Option<&RawValue>) -> Rejection {
    let what = if raw.is_some() { "is null" } else { "is missing" };
    Rejection::new(RejectReason::MissingField, format!("field `{}` {what}", field.name()))
}

fn invalid(field: Field, detail: impl fmt::Display) -> Rejection {
    Rejection::new(RejectReason::InvalidField, format!("field `{}`: {detail}", field.name()))
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

/// The event object split into the raw JSON text of each known field, by [`Field`] slot. Filled by
/// a hand-written visitor rather than `#[derive(Deserialize)]` because it must see
/// `"schema": null` (derive maps it to `None`) and must bound the nesting of skipped values (see
/// [`MAX_VALUE_NESTING`]).
#[derive(Default)]
struct RawFields<'a>([Option<&'a RawValue>; FIELDS]);

impl<'a> RawFields<'a> {
    fn get(&self, field: Field) -> Option<&'a RawValue> {
        self.0[field as usize]
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
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let value: &'de RawValue = map.next_value()?;
            if nests_deeper_than(value.get(), MAX_VALUE_NESTING) {
                return Err(de::Error::custom(format_args!(
                    "value nested more than {} levels deep",
                    MAX_VALUE_NESTING + 1
                )));
            }
            if let Some(field) = key {
                // Which of two values would win is exactly what a sender cannot rely on.
                if fields.0[field as usize].replace(value).is_some() {
                    return Err(de::Error::custom(format_args!(
                        "duplicate field `{}`",
                        field.name()
                    )));
                }
            }
        }
        Ok(fields)
    }
}

/// An object key: a known field, or `None` for one the schema ignores.
struct Key(Option<Field>);

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
        Ok(Key(Field::named(key)))
    }
}

#[cfg(test)]
mod tests;
