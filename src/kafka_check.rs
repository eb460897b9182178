//! `[kafka]` checked before anything connects, so that `check-config` refuses what `run` would
//! and no error quotes a secret: librdkafka's own messages for a refused setting can carry the
//! value, and an encrypted `ssl.key.location` without `ssl.key.password` must fail in one line
//! rather than reach OpenSSL, which may ask for a passphrase on the terminal.

use std::path::Path;

use anyhow::anyhow;
use cxpulse_core::secret::Redactor;
use cxpulse_kafka::config::{consumer_config, is_secret_key, producer_config};
use cxpulse_kafka::KafkaSettings;
use rdkafka::error::KafkaError;

pub fn check(settings: &KafkaSettings) -> anyhow::Result<()> {
    let secrets = Redactor::new(
        settings.iter().filter(|(key, _)| is_secret_key(key)).map(|(_, value)| value.clone()),
    );
    for config in [consumer_config(settings), producer_config(settings)] {
        config.create_native_config().map_err(|e| {
            let text = match e {
                KafkaError::ClientConfig(_, reason, key, _value) => format!("`{key}`: {reason}"),
                other => other.to_string(),
            };
            anyhow!("invalid config: [kafka] {}", secrets.redact(&text))
        })?;
    }
    check_private_key(settings)
}

fn check_private_key(settings: &KafkaSettings) -> anyhow::Result<()> {
    const PASSWORD_KEY: &str = "[kafka] ssl.key.password (or CXPULSE_KAFKA__SSL_KEY_PASSWORD)";
    let password = settings.get("ssl.key.password").map(String::as_str);
    if let Some(path) = settings.get("ssl.key.location") {
        cxpulse_http::security::load_private_key(Path::new(path), password, PASSWORD_KEY)
            .map_err(|e| anyhow!("invalid config: [kafka] ssl.key.location: {e}"))?;
    }
    if let Some(pem) = settings.get("ssl.key.pem") {
        if cxpulse_http::security::is_encrypted_pem(pem.as_bytes()) && password.is_none() {
            anyhow::bail!(
                "invalid config: [kafka] ssl.key.pem is encrypted: set its passphrase in {PASSWORD_KEY}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> KafkaSettings {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_refused_setting_is_named_without_its_value() {
        for (key, value) in [
            ("sasl.oauthbearer.client.secret", "OAUTHSEC-55aa"),
            ("sasl.password", "PW-77"),
            ("no.such.property", "x"),
            ("session.timeout.ms", "not-a-number"),
        ] {
            let mut pairs = vec![(key, value)];
            if key != "session.timeout.ms" {
                pairs.push(("sasl.mechanisms", "NONSENSE"));
            }
            let Err(error) = check(&settings(&pairs)) else { continue };
            let error = error.to_string();
            assert!(error.starts_with("invalid config: [kafka]"), "{error}");
            assert!(!error.contains("OAUTHSEC-55aa") && !error.contains("PW-77"), "{error}");
        }
        let error = check(&settings(&[("no.such.property", "x")])).unwrap_err().to_string();
        assert!(error.contains("no.such.property"), "{error}");
    }
}
