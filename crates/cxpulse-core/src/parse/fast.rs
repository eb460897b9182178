//! A single-pass fast path for [`super::parse_event`], for the shape nearly every event has.
//!
//! It accepts only a flat JSON object whose keys are unescaped (the known schema-1 field names each
//! at most once, others ignored as the schema says) and whose values are strings without
//! backslashes or plain non-negative integers of at most [`MAX_FAST_DIGITS`] digits. It works on
//! bytes: a key is picked by its first bytes and confirmed against its name in [`Field`], literal
//! values (`type`, `survey`, `action`) are compared as fixed-size arrays, labels are checked
//! against a byte table, timestamps in the common RFC 3339 form are read by hand, and UTF-8 is
//! checked only where a string has a non-ASCII byte. The checks mirror the slow path's field by
//! field (differential proptests hold them together), so an event it returns is the event
//! `parse_event` would return. Anything else (`null`, booleans, nested values, negative or
//! non-integral numbers, escapes, duplicates, invalid fields, trailing garbage, ...) gives `None`
//! and the slow path decides, with its rejection details. The fast path never rejects.

use std::borrow::Cow;

use super::{digits_value, occurred_at, Field, FIELDS, MAX_ID_BYTES};
use crate::event::*;

/// Longest integer the fast path reads; longer ones (still valid for some fields) go the slow way.
const MAX_FAST_DIGITS: usize = 15;

// Every count of at most MAX_FAST_DIGITS digits is an `active_customers` the slow path accepts.
const _: () = assert!(10u64.pow(MAX_FAST_DIGITS as u32) - 1 <= MAX_ACTIVE_CUSTOMERS);

/// The slot of the key whose text (after the opening quote) starts `body`, if it is a known one,
/// and its length with the closing quote. A byte or two pick the one candidate, and comparing
/// its name confirms it; a key with an escape or a control character matches no known
/// name, so it needs no other check.
#[inline]
fn key_slot(body: &[u8]) -> Option<(usize, usize)> {
    match (body.first()?, body.get(1)?) {
        (b't', _) => known(body, Field::Type),
        (b'e', _) => known(body, Field::EventId),
        (b'o', _) => known(body, Field::OccurredAt),
        (b'b', _) => known(body, Field::Brand),
        (b'c', b'u') => known(body, Field::CustomerId),
        (b'c', _) => known(body, Field::Comment),
        (b'r', _) => known(body, Field::ResponseId),
        (b's', b'e') => known(body, Field::Segment),
        (b's', b'u') => known(body, Field::Survey),
        (b's', b'c') => match body.get(2)? {
            b'h' => known(body, Field::Schema),
            b'o' => known(body, Field::Score),
            _ => known(body, Field::ScaleMax),
        },
        (b'a', _) => match body.get(4)? {
            b'o' => known(body, Field::Action),
            _ => known(body, Field::ActiveCustomers),
        },
        _ => None,
    }
}

/// `Some((slot, length with the closing quote))` if `body` starts with `field`'s name and a quote.
/// Inlined with a constant `field`, the name's length is a constant and the comparison a few loads.
#[inline(always)]
fn known(body: &[u8], field: Field) -> Option<(usize, usize)> {
    let name = field.name().as_bytes();
    let matches = body.get(..name.len())? == name && body.get(name.len()) == Some(&b'"');
    matches.then_some((field as usize, name.len() + 1))
}

/// `raw == literal`, compared as fixed-size arrays so that it compiles to a few loads instead of a
/// call to `memcmp`.
#[inline(always)]
fn is<const N: usize>(raw: &[u8], literal: &[u8; N]) -> bool {
    <&[u8; N]>::try_from(raw).is_ok_and(|array| array == literal)
}

/// The event `parse_event` would return for `payload`, if `payload` has the common shape and is
/// valid; `None` whenever the slow path has to look (including every input it would reject).
pub(crate) fn parse_fast(payload: &[u8]) -> Option<Event<'_>> {
    if payload.len() > MAX_EVENT_BYTES {
        return None;
    }
    let fields = scan(payload)?;
    build(&fields)
}

/// JSON whitespace, exactly the four bytes serde_json skips.
#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    // Compact JSON has none: one comparison settles it.
    if b.get(i).is_some_and(|&c| c > b' ') {
        return i;
    }
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// `b[start]` is an opening quote: the index of the closing one, or `None` if the string has an
/// escape or a control character (which JSON forbids unescaped), is not UTF-8, or is unterminated.
/// The scan never converts the payload to text as a whole, so this is where UTF-8 is checked.
#[inline]
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut i = start + 1;
    // Eight bytes at a time: flag each byte that is `"`, `\`, below 0x20 or not ASCII. A borrow
    // in these tricks only ever runs from a flagged byte upwards, so the lowest flag is a true one.
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().ok()?);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let flags = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x)
            | x)
            & HIGHS;
        if flags != 0 {
            i += (flags.trailing_zeros() / 8) as usize;
            break;
        }
        i += 8;
    }
    let from = i;
    loop {
        match *b.get(i)? {
            b'"' => break,
            b'\\' => return None,
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
    // A quote byte never occurs inside a multi-byte UTF-8 sequence, so the text up to it is
    // whole characters; bytes before `from` are ASCII.
    if b.get(from..i)?.iter().any(|c| !c.is_ascii()) {
        std::str::from_utf8(b.get(from..i)?).ok()?;
    }
    Some(i)
}

/// The slot of the key whose opening quote is at `b[start]`, and the index after its closing quote.
#[inline]
fn key(b: &[u8], start: usize) -> Option<(usize, usize)> {
    let (slot, len) = key_slot(b.get(start + 1..)?)?;
    Some((slot, start + 1 + len))
}

/// Splits the object into the raw JSON text of each known field; an absent field is empty (no
/// JSON value is).
fn scan(b: &[u8]) -> Option<[&[u8]; FIELDS]> {
    let mut fields: [&[u8]; FIELDS] = [&[]; FIELDS];
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    loop {
        if b.get(i) != Some(&b'"') {
            return None; // includes `{}` and a trailing comma
        }
        let (slot, after_key) = match key(b, i) {
            Some((slot, after_key)) => (Some(slot), after_key),
            // A key the schema ignores (producers add their own): skipped with its value, when
            // both are as simple as a known field's.
            None => (None, string_end(b, i)? + 1),
        };
        i = skip_ws(b, after_key);
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
                while let Some(eight) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
                    if !all_digits(u64::from_le_bytes(eight)) {
                        break;
                    }
                    i += 8;
                }
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
        if let Some(slot) = slot {
            if !std::mem::replace(&mut fields[slot], b.get(start..i)?).is_empty() {
                return None; // duplicate: the slow path rejects it
            }
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

/// The field's raw value, `None` when absent.
#[inline]
fn present(raw: &[u8]) -> Option<&[u8]> {
    (!raw.is_empty()).then_some(raw)
}

/// Validates the fields exactly as `parse_event` does; `None` where it would reject.
fn build<'a>(f: &[&'a [u8]; FIELDS]) -> Option<Event<'a>> {
    let slot = |field: Field| f[field as usize];
    if present(slot(Field::Schema)).is_some_and(|raw| raw != b"1") {
        return None;
    }
    let event_type = present(slot(Field::Type))?;
    let event_id = id(slot(Field::EventId))?;
    let occurred_at_ms = match present(slot(Field::OccurredAt))? {
        // What `occurred_at` does with an integer, for the at most 15 digits the scanner passes.
        raw if raw[0] != b'"' => Some(plain_integer(raw)).filter(|ms| *ms <= MAX_OCCURRED_AT_MS)?,
        // The common RFC 3339 form by hand, anything else as the reference path reads it.
        raw => match rfc3339_ms(raw) {
            Some(ms) => ms,
            None => occurred_at(std::str::from_utf8(raw).ok()?).ok()?,
        },
    };
    let brand = fast_label(slot(Field::Brand))?;
    let segment = match present(slot(Field::Segment)) {
        Some(raw) => fast_label(raw)?,
        None => "all",
    };
    // Checked on every type, kept by lifecycle events and survey answers.
    let customer_id = match present(slot(Field::CustomerId)) {
        Some(raw) => Some(id(raw)?),
        None => None,
    };
    let payload = if is(event_type, b"\"survey_response\"") {
        let survey = match present(slot(Field::Survey))? {
            b"\"nps\"" => Survey::Nps { score: score(present(slot(Field::Score))?, 0, 10)? },
            b"\"csat\"" => {
                let scale = match present(slot(Field::ScaleMax)) {
                    None | Some(b"5") => CsatScale::Five,
                    Some(b"7") => CsatScale::Seven,
                    Some(b"10") => CsatScale::Ten,
                    Some(_) => return None,
                };
                Survey::Csat { score: score(present(slot(Field::Score))?, 1, scale.max())?, scale }
            }
            b"\"ces\"" => Survey::Ces { score: score(present(slot(Field::Score))?, 1, 7)? },
            _ => return None,
        };
        let response_id = match present(slot(Field::ResponseId)) {
            Some(raw) => Some(Cow::Borrowed(id(raw)?)),
            None => None,
        };
        // A comment without escapes, in bounds; anything else as the reference path reads it.
        let comment = match present(slot(Field::Comment)) {
            Some(raw) => {
                Some(Cow::Borrowed(string_body(raw).filter(|s| s.len() <= MAX_COMMENT_BYTES)?))
            }
            None => None,
        };
        Payload::Survey {
            survey,
            response_id,
            customer_id: customer_id.map(Cow::Borrowed),
            comment,
        }
    } else if is(event_type, b"\"customer_lifecycle\"") {
        let action = present(slot(Field::Action))?;
        let action = Action::ALL.into_iter().find(|a| action_literal(*a) == action)?;
        Payload::Lifecycle { action, customer_id: Cow::Borrowed(customer_id?) }
    } else if is(event_type, b"\"customer_base\"") {
        // The scanner passed at most 15 digits: always a valid count (see MAX_FAST_DIGITS).
        let raw = present(slot(Field::ActiveCustomers)).filter(|raw| raw[0] != b'"')?;
        Payload::CustomerBase { active_customers: plain_integer(raw) as u64 }
    } else {
        return None;
    };
    Some(Event {
        event_id: Cow::Borrowed(event_id),
        occurred_at_ms,
        brand: Cow::Borrowed(brand),
        segment: Cow::Borrowed(segment),
        payload,
    })
}

/// Epoch milliseconds of a JSON string holding an RFC 3339 timestamp in its common form,
/// `"YYYY-MM-DDTHH:MM:SS[.fraction]"` then `Z` or `±HH:MM`, with every field in range and the
/// instant in 1970..=9999; `None` for anything else (lowercase separators, leap seconds, longer
/// fractions, ...), which the reference path reads as it always does. Producers write nearly
/// all timestamps this way, and reading them by hand costs a fraction of the general parser.
fn rfc3339_ms(raw: &[u8]) -> Option<i64> {
    let text = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let digits = |at: usize, len: usize| -> Option<i64> {
        let bytes = text.get(at..at + len)?;
        bytes
            .iter()
            .try_fold(0i64, |n, &b| b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, c)| text.get(at) != Some(&c)) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0;
    if text.get(at) == Some(&b'.') {
        let count = text.get(at + 1..)?.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=9).contains(&count) {
            return None;
        }
        // Truncated to the millisecond, as the reference path keeps it.
        let kept = count.min(3);
        millis = digits(at + 1, kept)? * 10i64.pow(3 - kept as u32);
        at += 1 + count;
    }
    let offset_s = match text.get(at..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3_600 + minutes * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
    let ms = (seconds - offset_s) * 1_000 + millis;
    (0..=MAX_OCCURRED_AT_MS).contains(&ms).then_some(ms)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (the well-known "days from civil"
/// arithmetic: years start in March, so the leap day is the last day of a year).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The action's name as a JSON string.
fn action_literal(action: Action) -> &'static [u8] {
    match action {
        Action::Signup => b"\"signup\"",
        Action::Renewal => b"\"renewal\"",
        Action::Purchase => b"\"purchase\"",
        Action::Churn => b"\"churn\"",
        Action::Reactivation => b"\"reactivation\"",
    }
}

/// The body of a string value the scanner passed (no escapes, UTF-8 checked), `None` for other
/// values.
#[inline]
fn string_body(raw: &[u8]) -> Option<&str> {
    let body = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    match ascii_str(body) {
        Some(text) => Some(text),
        None => std::str::from_utf8(body).ok(),
    }
}

/// `bytes` as text when they are all ASCII. Most field values are, and this costs a few word
/// operations where `str::from_utf8` is a call into the general UTF-8 validator.
#[inline]
#[allow(unsafe_code)]
fn ascii_str(bytes: &[u8]) -> Option<&str> {
    if !bytes.is_ascii() {
        return None;
    }
    // SAFETY: every byte is below 0x80, and a sequence of ASCII bytes is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// What `id_string` accepts: a string of 1..=`MAX_ID_BYTES` bytes.
#[inline]
fn id(raw: &[u8]) -> Option<&str> {
    string_body(raw).filter(|s| (1..=MAX_ID_BYTES).contains(&s.len()))
}

/// What `label` accepts: a label value other than the overflow series' own.
#[inline]
fn fast_label(raw: &[u8]) -> Option<&str> {
    let body = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let valid = (1..=MAX_LABEL_BYTES).contains(&body.len())
        && body.iter().all(|&c| LABEL_BYTES[usize::from(c)]);
    if !valid || body == OVERFLOW_LABEL.as_bytes() {
        return None;
    }
    ascii_str(body)
}

/// The bytes `is_label_value` allows, as a table.
static LABEL_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
        c += 1;
    }
    table
};

/// The value of an integer the scanner passed: 1 to [`MAX_FAST_DIGITS`] ASCII digits, so it
/// cannot overflow (and needs no checked arithmetic). Eight digits at a time where there are.
fn plain_integer(raw: &[u8]) -> i64 {
    debug_assert!((1..=MAX_FAST_DIGITS).contains(&raw.len()));
    let mut value = 0i64;
    let mut rest = raw;
    while let Some((eight, tail)) = rest.split_first_chunk::<8>() {
        value = value * 100_000_000 + eight_digits(u64::from_le_bytes(*eight)) as i64;
        rest = tail;
    }
    rest.iter().fold(value, |n, b| n * 10 + i64::from(b.wrapping_sub(b'0')))
}

/// The value of eight ASCII digits read as a little-endian word (first digit lowest): pairs, then
/// quads, then the whole, each step one multiply.
#[inline]
fn eight_digits(word: u64) -> u64 {
    let digits = word.wrapping_sub(0x3030_3030_3030_3030);
    let pairs = (digits.wrapping_mul(10) + (digits >> 8)) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs.wrapping_mul(100) + (pairs >> 16)) & 0x0000_ffff_0000_ffff;
    (quads.wrapping_mul(10_000) + (quads >> 32)) & 0xffff_ffff
}

/// Whether all eight bytes of a little-endian word are ASCII digits.
#[inline]
fn all_digits(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // A digit is 0x30..=0x39: its high nibble is 3, and adding 6 leaves the high nibble at 3.
    (word & (ONES * 0xf0)) == ONES * 0x30
        && (word.wrapping_add(ONES * 0x06) & (ONES * 0xf0)) == ONES * 0x30
}

/// A score in `lo..=hi`: a JSON integer or a (here unescaped) string of ASCII digits.
fn score(raw: &[u8], lo: u8, hi: u8) -> Option<u8> {
    let value = match raw.strip_prefix(b"\"") {
        Some(body) => {
            let digits = body.strip_suffix(b"\"")?;
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            digits_value(std::str::from_utf8(digits).ok()?)?
        }
        // The scanner passed 1 to 15 digits.
        None => plain_integer(raw) as u64,
    };
    u8::try_from(value).ok().filter(|s| (lo..=hi).contains(s))
}

#[cfg(test)]
mod tests;
