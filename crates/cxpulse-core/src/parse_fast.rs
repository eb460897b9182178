//! A single-pass fast path for [`crate::parse::parse_event`], for the shape nearly every event has.
//!
//! It accepts only a flat JSON object whose keys are the known schema-1 field names (unescaped,
//! each at most once) and whose values are strings without backslashes or plain non-negative
//! integers of at most [`MAX_FAST_DIGITS`] digits. For that shape the raw JSON text of each field is
//! exactly what serde_json's `RawValue` would have handed the slow path, and the field values are
//! validated with the slow path's own helpers, so an event it returns is the event `parse_event`
//! would return. Anything else (unknown keys, `null`, booleans, nested values, negative or
//! non-integral numbers, escapes, duplicates, invalid fields, trailing garbage, ...) gives `None`
//! and the slow path decides, with its rejection details. The fast path never rejects.

use std::borrow::Cow;

use crate::event::*;
use crate::parse::{
    action, active_customers, digits_value, id_string, integer, label, occurred_at, Integer,
    MAX_OCCURRED_AT_MS,
};

/// Longest integer the fast path reads; longer ones (still valid for some fields) go the slow way.
const MAX_FAST_DIGITS: usize = 15;

/// The raw JSON text of each known field, indexed by [`key_slot`].
const FIELDS: usize = 13;
const SCHEMA: usize = 0;
const TYPE: usize = 1;
const EVENT_ID: usize = 2;
const OCCURRED_AT: usize = 3;
const BRAND: usize = 4;
const SEGMENT: usize = 5;
const CUSTOMER_ID: usize = 6;
const SURVEY: usize = 7;
const SCORE: usize = 8;
const SCALE_MAX: usize = 9;
const RESPONSE_ID: usize = 10;
const ACTION: usize = 11;
const ACTIVE_CUSTOMERS: usize = 12;

fn key_slot(key: &[u8]) -> Option<usize> {
    Some(match key {
        b"schema" => SCHEMA,
        b"type" => TYPE,
        b"event_id" => EVENT_ID,
        b"occurred_at" => OCCURRED_AT,
        b"brand" => BRAND,
        b"segment" => SEGMENT,
        b"customer_id" => CUSTOMER_ID,
        b"survey" => SURVEY,
        b"score" => SCORE,
        b"scale_max" => SCALE_MAX,
        b"response_id" => RESPONSE_ID,
        b"action" => ACTION,
        b"active_customers" => ACTIVE_CUSTOMERS,
        _ => return None,
    })
}

/// The event `parse_event` would return for `payload`, if `payload` has the common shape and is
/// valid; `None` whenever the slow path has to look (including every input it would reject).
pub(crate) fn parse_fast(payload: &[u8]) -> Option<Event<'_>> {
    if payload.len() > MAX_EVENT_BYTES {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?;
    let fields = scan(text)?;
    build(&fields)
}

/// JSON whitespace, exactly the four bytes serde_json skips.
#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// `b[start]` is an opening quote: the index of the closing one, or `None` if the string has an
/// escape or a control character (which JSON forbids unescaped) or is unterminated.
#[inline]
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = start + 1;
    // Eight bytes at a time: flag each byte that is `"`, `\` or below 0x20. A borrow in these
    // tricks only ever runs from a flagged byte upwards, so the lowest flag is a true one.
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().ok()?);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let flags = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGHS;
        if flags != 0 {
            i += (flags.trailing_zeros() / 8) as usize;
            return (*b.get(i)? == b'"').then_some(i);
        }
        i += 8;
    }
    loop {
        match *b.get(i)? {
            b'"' => return Some(i),
            b'\\' => return None,
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
}

/// Splits the object into the raw text of each known field.
fn scan(text: &str) -> Option<[Option<&str>; FIELDS]> {
    let b = text.as_bytes();
    let mut fields: [Option<&str>; FIELDS] = [None; FIELDS];
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    loop {
        // Key.
        if b.get(i) != Some(&b'"') {
            return None; // includes `{}` and a trailing comma
        }
        let key_end = string_end(b, i)?;
        let slot = key_slot(b.get(i + 1..key_end)?)?;
        i = skip_ws(b, key_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        // Value: a string without escapes, or a plain non-negative integer.
        let start = i;
        match *b.get(i)? {
            b'"' => i = string_end(b, i)? + 1,
            b'0' => i += 1, // JSON allows no leading zeros, so a 0 stands alone
            b'1'..=b'9' => {
                while let Some(b'0'..=b'9') = b.get(i) {
                    i += 1;
                }
                if i - start > MAX_FAST_DIGITS {
                    return None;
                }
            }
            _ => return None,
        }
        // A fraction, exponent or other stray byte after a number fails the separator check.
        let raw = text.get(start..i)?;
        if fields[slot].replace(raw).is_some() {
            return None; // duplicate: the slow path rejects it
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    // Only whitespace may follow the object.
    (skip_ws(b, i + 1) == b.len()).then_some(fields)
}

/// Validates the fields exactly as `parse_event` does; `None` where it would reject.
fn build<'a>(f: &[Option<&'a str>; FIELDS]) -> Option<Event<'a>> {
    if f[SCHEMA].is_some_and(|raw| raw != "1") {
        return None;
    }
    let event_type = f[TYPE]?;
    let event_id = id_string("event_id", f[EVENT_ID]?).ok()?;
    let occurred_at_ms = match f[OCCURRED_AT]? {
        // What `occurred_at` does with an integer, for the at most 15 digits the scanner passes.
        raw if !raw.starts_with('"') => {
            Some(plain_integer(raw)).filter(|ms| *ms <= MAX_OCCURRED_AT_MS)?
        }
        raw => occurred_at(raw).ok()?,
    };
    let brand = label("brand", f[BRAND]?).ok()?;
    let segment = match f[SEGMENT] {
        Some(raw) => label("segment", raw).ok()?,
        None => Cow::Borrowed("all"),
    };
    // Checked on every type, kept only by lifecycle events.
    let customer_id = match f[CUSTOMER_ID] {
        Some(raw) => Some(id_string("customer_id", raw).ok()?),
        None => None,
    };
    let payload = match event_type {
        "\"survey_response\"" => {
            let survey = match f[SURVEY]? {
                "\"nps\"" => Survey::Nps { score: score(f[SCORE]?, 0, 10)? },
                "\"csat\"" => {
                    let scale = match f[SCALE_MAX] {
                        None => CsatScale::Five,
                        Some("5") => CsatScale::Five,
                        Some("7") => CsatScale::Seven,
                        Some("10") => CsatScale::Ten,
                        Some(_) => return None,
                    };
                    Survey::Csat { score: score(f[SCORE]?, 1, scale.max())?, scale }
                }
                "\"ces\"" => Survey::Ces { score: score(f[SCORE]?, 1, 7)? },
                _ => return None,
            };
            let response_id = match f[RESPONSE_ID] {
                Some(raw) => Some(id_string("response_id", raw).ok()?),
                None => None,
            };
            Payload::Survey { survey, response_id }
        }
        "\"customer_lifecycle\"" => {
            Payload::Lifecycle { action: action(f[ACTION]?).ok()?, customer_id: customer_id? }
        }
        "\"customer_base\"" => {
            Payload::CustomerBase { active_customers: active_customers(f[ACTIVE_CUSTOMERS]?).ok()? }
        }
        _ => return None,
    };
    Some(Event { event_id, occurred_at_ms, brand, segment, payload })
}

/// The value of an integer the scanner passed: 1 to [`MAX_FAST_DIGITS`] ASCII digits, so it
/// cannot overflow (and needs no checked arithmetic).
fn plain_integer(raw: &str) -> i64 {
    debug_assert!((1..=MAX_FAST_DIGITS).contains(&raw.len()));
    raw.bytes().fold(0, |n, b| n * 10 + i64::from(b.wrapping_sub(b'0')))
}

/// A score in `lo..=hi`: a JSON integer or a (here unescaped) string of ASCII digits.
fn score(raw: &str, lo: u8, hi: u8) -> Option<u8> {
    let value = match raw.strip_prefix('"') {
        Some(body) => {
            let digits = body.strip_suffix('"')?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits_value(digits)?
        }
        None => match integer(raw)? {
            Integer::NonNegative(v) => v,
            Integer::Negative | Integer::TooLarge => return None,
        },
    };
    u8::try_from(value).ok().filter(|s| (lo..=hi).contains(s))
}

#[cfg(test)]
#[path = "parse_fast_tests.rs"]
mod tests;
