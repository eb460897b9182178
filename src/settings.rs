//! The configuration compiled: `Config` (what the TOML file and the environment say) is checked
//! once by [`Config::compile`](crate::config::Config::compile), which turns each component's
//! section into the typed, validated settings the running code takes. Nothing downstream checks
//! a setting again.

use cxpulse_core::alerts::AlertPolicy;
use cxpulse_core::secret::Redactor;
use cxpulse_core::EngineConfig;
use cxpulse_gateway::GatewaySettings;
use cxpulse_http::HttpSettings;
use cxpulse_kafka::feed::FeedConfig;
use cxpulse_kafka::{KafkaSettings, SourceConfig};

pub struct Settings {
    pub engine: EngineConfig,
    /// `[kafka]` as librdkafka takes it (secrets in clear: for librdkafka only).
    pub kafka: KafkaSettings,
    pub source: SourceConfig,
    /// `[feed]`: the detractor feed's topic, if any.
    pub feed: FeedConfig,
    pub http: HttpSettings,
    pub gateway: GatewaySettings,
    pub alerts: AlertPolicy,
    pub log: LogSettings,
    /// Scrubs every secret of the configuration from text that may quote one.
    pub redactor: Redactor,
}

/// `[log]` compiled.
pub struct LogSettings {
    /// A tracing filter (`info`, `cxpulse=debug,rdkafka=warn`).
    pub level: String,
    pub json: bool,
}

impl Settings {
    /// `text` with every secret of the configuration replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// The longest window, which bounds what a replay needs to read.
    pub fn longest_window_ms(&self) -> i64 {
        self.engine.windows.iter().map(|w| w.size_ms).max().unwrap_or(0)
    }

    /// The broker list, as the error messages name it.
    pub fn brokers(&self) -> String {
        let default = cxpulse_kafka::config::DEFAULT_BOOTSTRAP_SERVERS;
        self.kafka.get("bootstrap.servers").map_or(default, String::as_str).to_string()
    }
}
