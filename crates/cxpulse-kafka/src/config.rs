//! The `[kafka]` and `[source]` configuration sections.

use std::collections::BTreeMap;

use cxpulse_core::duration::DurationSetting;
use rdkafka::ClientConfig;

/// `[kafka]`: passed through to librdkafka as is (`bootstrap.servers`, `group.id`,
/// `security.protocol`, `sasl.*`, `ssl.*` ...). cxpulse only adds defaults for what it relies on.
pub type KafkaSettings = BTreeMap<String, String>;

/// `[source]`: what to read and where rejects go.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Topics to consume, all in the one consumer group.
    pub topics: Vec<String>,
    /// Dead-letter topic; "" turns dead-lettering off (rejects are still counted).
    /// Absent: `<first topic>.dlq`.
    pub dead_letter_topic: Option<String>,
    /// Most messages handled per poll batch (one engine lock and one dead-letter flush per batch).
    pub batch_size: usize,
    /// Compacted topic holding partition checkpoints; "" turns checkpoints off (every assigned
    /// partition is then rebuilt by replay).
    pub state_topic: String,
    /// How often each partition that moved is checkpointed (also on revoke and shutdown).
    pub checkpoint_interval: DurationSetting,
    /// Largest dead letter (bytes, payload with key and headers) when the broker does not tell
    /// the dead-letter topic's `max.message.bytes`; larger payloads are written truncated.
    pub dead_letter_max_bytes: usize,
    /// `/healthz` fails when the consume loop made no progress for this long.
    pub stall_timeout: DurationSetting,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            topics: vec!["cx-events".into()],
            dead_letter_topic: None,
            batch_size: 4096,
            state_topic: "cxpulse.state".into(),
            checkpoint_interval: DurationSetting::secs(10),
            dead_letter_max_bytes: 1_000_000,
            stall_timeout: DurationSetting::secs(30),
        }
    }
}

impl SourceConfig {
    /// The dead-letter topic in effect, `None` when turned off.
    pub fn dead_letter_topic(&self) -> Option<String> {
        match &self.dead_letter_topic {
            Some(topic) if topic.is_empty() => None,
            Some(topic) => Some(topic.clone()),
            None => self.topics.first().map(|t| format!("{t}.dlq")),
        }
    }
}

/// The broker list when `[kafka]` names none.
pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "localhost:9092";

/// Settings cxpulse's correctness rests on; a user's `[kafka]` value wins only where it is safe.
const CONSUMER_DEFAULTS: [(&str, &str); 11] = [
    // A crashed worker's partitions move after at most this (plus the rebalance itself).
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
    // Freshness: a broker that parks an empty fetch (the embedded one does) answers within this.
    ("fetch.wait.max.ms", "100"),
    // librdkafka's default (1 s) idles a consumer that falls behind a full prefetch queue.
    ("fetch.queue.backoff.ms", "10"),
    ("bootstrap.servers", DEFAULT_BOOTSTRAP_SERVERS),
    ("group.id", "cxpulse"),
    ("auto.offset.reset", "earliest"),
    ("partition.assignment.strategy", "cooperative-sticky"),
    ("statistics.interval.ms", "2000"),
    ("enable.auto.commit", "true"),
    ("auto.commit.interval.ms", "1000"),
];

/// Keys whose values are secrets: never logged, never printed.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "key.pem", "keystore", "private"]
        .iter()
        .any(|needle| key.contains(needle))
        || key == "ssl.key.password"
}

/// The librdkafka consumer configuration: defaults, then the user's settings, then what
/// at-least-once needs (offsets are stored by cxpulse, never automatically).
pub fn consumer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in CONSUMER_DEFAULTS {
        config.set(key, value);
    }
    for (key, value) in settings {
        config.set(key, value);
    }
    config.set("enable.auto.offset.store", "false");
    config
}

/// The producer configuration for dead letters and synthetic events: connection and security
/// settings from `[kafka]`, without the consumer-only ones.
pub fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", DEFAULT_BOOTSTRAP_SERVERS);
    for (key, value) in settings {
        let consumer_only = key.starts_with("group.")
            || key.starts_with("enable.auto")
            || key.starts_with("auto.")
            || key.starts_with("partition.assignment")
            || key.starts_with("session.")
            || key.starts_with("heartbeat.")
            || key.starts_with("max.poll")
            || key.starts_with("fetch.")
            || key.starts_with("isolation.")
            || key.starts_with("statistics.");
        if !consumer_only {
            config.set(key, value);
        }
    }
    config.set("enable.idempotence", "true");
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_topic_defaults_and_turns_off() {
        let mut source = SourceConfig::default();
        assert_eq!(source.dead_letter_topic().as_deref(), Some("cx-events.dlq"));
        source.dead_letter_topic = Some(String::new());
        assert_eq!(source.dead_letter_topic(), None);
    }

    #[test]
    fn offsets_are_never_stored_automatically() {
        let mut settings = KafkaSettings::new();
        settings.insert("enable.auto.offset.store".into(), "true".into());
        settings.insert("group.id".into(), "g".into());
        let config = consumer_config(&settings);
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("group.id"), Some("g"));
        assert_eq!(producer_config(&settings).get("group.id"), None);
    }

    #[test]
    fn sasl_and_ssl_settings_reach_librdkafka() {
        let mut settings = KafkaSettings::new();
        for (key, value) in [
            ("bootstrap.servers", "127.0.0.1:1"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "cxpulse"),
            ("sasl.password", "pw"),
        ] {
            settings.insert(key.into(), value.into());
        }
        // librdkafka refuses settings it was built without, so creating the clients proves support.
        let consumer: Result<rdkafka::consumer::BaseConsumer, _> =
            consumer_config(&settings).create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
        let producer: Result<rdkafka::producer::BaseProducer, _> =
            producer_config(&settings).create();
        assert!(producer.is_ok(), "{:?}", producer.err());
        settings.insert("security.protocol".into(), "NOT_A_PROTOCOL".into());
        let refused: Result<rdkafka::consumer::BaseConsumer, _> =
            consumer_config(&settings).create();
        assert!(refused.is_err());
    }

    #[test]
    fn secrets_are_recognised() {
        assert!(is_secret_key("sasl.password"));
        assert!(is_secret_key("ssl.key.password"));
        assert!(!is_secret_key("sasl.username"));
    }
}
