//! Secrets of the configuration (passwords, tokens, signing secrets) as a type that cannot be
//! printed by accident, and the redaction of text that may quote one.
//!
//! A [`Secret`] prints as `<redacted>` through `Debug`, `Display` and `Serialize`; its value is
//! reached only by [`Secret::expose`], where it is used (a password handed to librdkafka or
//! OpenSSL, a token compared with a request's). Since serializing a configuration writes
//! `<redacted>` exactly where its secrets are, comparing the written form with the input finds
//! every secret value without a hand-kept list ([`secrets_in`]), and a [`Redactor`] built from
//! them scrubs error text.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

/// A secret value: a password, token or signing secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty or only spaces (an empty secret is always a mistake).
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Every string of `input` at a place where `shown` (the same configuration deserialized, then
/// serialized) holds `<redacted>`: the values of its secrets. Both are JSON-like trees of the
/// same shape; places the typed form added or dropped are skipped.
pub fn secrets_in(input: &serde_json::Value, shown: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    collect(input, shown, &mut found);
    found
}

fn collect(input: &serde_json::Value, shown: &serde_json::Value, found: &mut Vec<String>) {
    use serde_json::Value;
    match (input, shown) {
        (Value::String(value), Value::String(marker)) if marker == REDACTED => {
            found.push(value.clone())
        }
        // A secret given as a number or a boolean (an environment override such as `987654321`
        // is kept as a string, but a TOML file may hold anything a typed field then refused).
        (Value::Number(_) | Value::Bool(_), Value::String(marker)) if marker == REDACTED => {
            found.push(input.to_string())
        }
        (Value::Object(input), Value::Object(shown)) => {
            for (key, value) in input {
                if let Some(written) = shown.get(key) {
                    collect(value, written, found);
                }
            }
        }
        (Value::Array(input), Value::Array(shown)) => {
            for (value, written) in input.iter().zip(shown) {
                collect(value, written, found);
            }
        }
        _ => {}
    }
}

/// Replaces each known secret value in text by `<redacted>`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first: one secret may contain another.
    values: Vec<Secret>,
}

impl Redactor {
    pub fn new(values: impl IntoIterator<Item = String>) -> Redactor {
        let mut values: Vec<Secret> =
            values.into_iter().filter(|v| !v.is_empty() && v != REDACTED).map(Secret).collect();
        values.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        values.dedup();
        Redactor { values }
    }

    /// Adds a secret learnt after loading (a token read from a file).
    pub fn add(&mut self, value: &Secret) {
        let mut values: Vec<String> = self.values.drain(..).map(|s| s.0).collect();
        values.push(value.0.clone());
        *self = Redactor::new(values);
    }

    pub fn redact(&self, text: &str) -> String {
        self.values.iter().fold(text.to_string(), |text, secret| text.replace(&secret.0, REDACTED))
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Section {
        name: String,
        token: Option<Secret>,
        nested: Vec<Inner>,
    }

    #[derive(Serialize, Deserialize)]
    struct Inner {
        secret: Secret,
        plain: String,
    }

    #[test]
    fn a_secret_never_prints() {
        let secret = Secret::new("hunter2");
        for shown in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{:?}", Some(&secret)),
            serde_json::to_string(&secret).unwrap(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
        }
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn the_secrets_of_a_typed_value_are_found_by_where_it_writes_redacted() {
        let input = serde_json::json!({
            "name": "visible",
            "token": "tok-1",
            "nested": [{"secret": "s-1", "plain": "p"}, {"secret": "s-2", "plain": "q"}],
        });
        let typed: Section = serde_json::from_value(input.clone()).unwrap();
        let shown = serde_json::to_value(&typed).unwrap();
        let mut found = secrets_in(&input, &shown);
        found.sort();
        assert_eq!(found, ["s-1", "s-2", "tok-1"]);
    }

    #[test]
    fn redaction_replaces_longest_first() {
        let redactor = Redactor::new(["abc".to_string(), "abcdef".to_string(), String::new()]);
        assert_eq!(redactor.redact("x abcdef y abc"), "x <redacted> y <redacted>");
        let mut redactor = redactor;
        redactor.add(&Secret::new("zz"));
        assert_eq!(redactor.redact("zz abc"), "<redacted> <redacted>");
        assert_eq!(redactor.len(), 3);
    }
}
