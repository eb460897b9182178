//! Survey tools' time fields in whatever form they come: Unix seconds (a number or a string of
//! digits), RFC 3339 / ISO 8601 with an offset, or Ruby's `2018-03-28 15:11:55 -0700`.

use chrono::DateTime;
use serde_json::Value;

/// Epoch milliseconds from a tool's time value; `None` when it is none of the known forms.
pub fn epoch_ms(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => seconds_to_ms(n.as_i64()?),
        Value::String(text) => {
            let text = text.trim();
            if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                return seconds_to_ms(text.parse().ok()?);
            }
            if let Ok(t) = DateTime::parse_from_rfc3339(text) {
                return Some(t.timestamp_millis());
            }
            for format in
                ["%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M:%S%.f %z", "%Y-%m-%dT%H:%M:%S%.f%z"]
            {
                if let Ok(t) = DateTime::parse_from_str(text, format) {
                    return Some(t.timestamp_millis());
                }
            }
            None
        }
        _ => None,
    }
}

/// Unix seconds to milliseconds; values already in milliseconds (after 2286) are taken as such.
fn seconds_to_ms(value: i64) -> Option<i64> {
    if value < 0 {
        return None;
    }
    if value >= 10_000_000_000 {
        return Some(value);
    }
    value.checked_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_form_the_tools_send() {
        let expected = 1_522_275_115_000; // 2018-03-28T22:11:55Z
        assert_eq!(epoch_ms(&json!(1_522_275_115)), Some(expected));
        assert_eq!(epoch_ms(&json!("1522275115")), Some(expected));
        assert_eq!(epoch_ms(&json!("2018-03-28 15:11:55 -0700")), Some(expected));
        assert_eq!(epoch_ms(&json!("2018-03-28T15:11:55-07:00")), Some(expected));
        assert_eq!(epoch_ms(&json!("2018-03-28T22:11:55Z")), Some(expected));
        assert_eq!(epoch_ms(&json!("2018-03-28T22:11:55.000+00:00")), Some(expected));
        assert_eq!(epoch_ms(&json!("2018-03-28")), None);
        assert_eq!(epoch_ms(&json!(-5)), None);
        assert_eq!(epoch_ms(&json!(null)), None);
        assert_eq!(epoch_ms(&json!("99999999999999999999999")), None);
    }
}
