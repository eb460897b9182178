//! Human durations as the configuration writes them: `500ms`, `30s`, `5m`, `1h`, `7d`, `2w`.

use std::fmt;

/// Why a duration could not be read; each variant carries the text as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    MissingNumber(String),
    MissingUnit(String),
    UnknownUnit {
        text: String,
        unit: String,
    },
    NumberTooLarge(String),
    TooLarge(String),
    /// A setting written with spaces around it (`" 1h"`): refused rather than silently trimmed.
    SpacesAround(String),
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => f.write_str("empty duration"),
            DurationError::MissingNumber(text) => {
                write!(f, "`{text}`: expected a number before a unit")
            }
            DurationError::MissingUnit(text) => {
                write!(f, "`{text}`: missing unit (ms, s, m, h, d, w)")
            }
            DurationError::UnknownUnit { text, unit } => {
                write!(f, "`{text}`: unknown unit `{unit}`")
            }
            DurationError::NumberTooLarge(text) => write!(f, "`{text}`: number too large"),
            DurationError::TooLarge(text) => write!(f, "`{text}`: duration too large"),
            DurationError::SpacesAround(text) => write!(f, "`{text}` has spaces around it"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a duration into milliseconds. Compound forms (`1h30m`) are accepted.
pub fn parse_duration_ms(text: &str) -> Result<i64, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(DurationError::MissingNumber(text.into()));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let scale: i64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "" => return Err(DurationError::MissingUnit(text.into())),
            other => {
                return Err(DurationError::UnknownUnit { text: text.into(), unit: other.into() })
            }
        };
        let value: i64 = number.parse().map_err(|_| DurationError::NumberTooLarge(text.into()))?;
        total = value
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| DurationError::TooLarge(text.into()))?;
        rest = after;
    }
    Ok(total)
}

/// A duration setting: parsed once, when the configuration is read, and shown as it was written
/// (`"10s"` stays `"10s"` in `check-config`). Surrounding spaces are refused, as window names
/// show them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationSetting {
    text: String,
    ms: i64,
}

impl DurationSetting {
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        if text.trim() != text {
            return Err(DurationError::SpacesAround(text.trim().into()));
        }
        Ok(DurationSetting { text: text.into(), ms: parse_duration_ms(text)? })
    }

    /// A default written in seconds (`10s`).
    pub fn secs(n: u32) -> Self {
        DurationSetting { text: format!("{n}s"), ms: i64::from(n) * 1_000 }
    }

    /// A default written in minutes (`5m`).
    pub fn mins(n: u32) -> Self {
        DurationSetting { text: format!("{n}m"), ms: i64::from(n) * 60_000 }
    }

    /// A default written in hours (`24h`).
    pub fn hours(n: u32) -> Self {
        DurationSetting { text: format!("{n}h"), ms: i64::from(n) * 3_600_000 }
    }

    /// A default given in milliseconds, written the shortest way (`24h`, `1h30m`).
    pub fn of_ms(ms: i64) -> Self {
        DurationSetting { text: format_duration_ms(ms), ms }
    }

    pub fn ms(&self) -> i64 {
        self.ms
    }

    pub fn get(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ms.max(0) as u64)
    }

    /// The setting as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::str::FromStr for DurationSetting {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, DurationError> {
        DurationSetting::parse(text)
    }
}

impl serde::Serialize for DurationSetting {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for DurationSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DurationSetting::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Formats milliseconds back in the largest exact unit (`86400000` -> `1d`).
pub fn format_duration_ms(ms: i64) -> String {
    const UNITS: [(i64, &str); 5] =
        [(604_800_000, "w"), (86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")];
    if ms == 0 {
        return "0s".into();
    }
    for (scale, unit) in UNITS {
        if ms % scale == 0 {
            // Days read better than weeks for the usual window names (7d, 30d).
            if unit == "w" {
                return format!("{}d", ms / 86_400_000);
            }
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_keeps_its_text_and_refuses_spaces() {
        let setting: DurationSetting = "1h30m".parse().unwrap();
        assert_eq!((setting.ms(), setting.as_str()), (5_400_000, "1h30m"));
        assert_eq!(setting.get(), std::time::Duration::from_secs(5_400));
        assert_eq!(DurationSetting::parse(" 1h"), Err(DurationError::SpacesAround("1h".into())));
        assert!(DurationSetting::parse("5x").is_err());
        for (default, text) in [
            (DurationSetting::secs(10), "10s"),
            (DurationSetting::mins(5), "5m"),
            (DurationSetting::hours(24), "24h"),
        ] {
            assert_eq!(default, DurationSetting::parse(text).unwrap());
        }
    }

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert!(parse_duration_ms("5").is_err());
        assert!(parse_duration_ms("h").is_err());
        assert!(parse_duration_ms("5y").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let message = |text: &str| parse_duration_ms(text).map_err(|e| e.to_string());
        assert_eq!(message(" "), Err("empty duration".into()));
        assert_eq!(message("h"), Err("`h`: expected a number before a unit".into()));
        assert_eq!(message("5"), Err("`5`: missing unit (ms, s, m, h, d, w)".into()));
        assert_eq!(message("5y"), Err("`5y`: unknown unit `y`".into()));
        assert_eq!(
            message("99999999999999999999d"),
            Err("`99999999999999999999d`: number too large".into())
        );
        assert_eq!(
            message("9999999999999999d"),
            Err("`9999999999999999d`: duration too large".into())
        );
    }

    #[test]
    fn formats_in_largest_unit() {
        assert_eq!(format_duration_ms(3_600_000), "1h");
        assert_eq!(format_duration_ms(7 * 86_400_000), "7d");
        assert_eq!(format_duration_ms(30 * 86_400_000), "30d");
        assert_eq!(format_duration_ms(90_000), "90s");
        assert_eq!(format_duration_ms(1_500), "1500ms");
    }
}
