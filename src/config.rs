//! The TOML configuration: typed sections with defaults, environment overrides
//! (`CXPULSE_<SECTION>__<KEY>`), validation with one-line errors, and a redacted rendering for
//! `check-config`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use cxpulse_core::alerts::{AlertOverride, AlertPolicy};
use cxpulse_core::duration::parse_duration_ms;
use cxpulse_core::{ClockMode, EngineConfig, WindowSpec};
use cxpulse_http::HttpConfig;
use cxpulse_kafka::config::is_secret_key;
use cxpulse_kafka::{KafkaSettings, SourceConfig};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Passed to librdkafka as is; values may be written as strings, numbers or booleans.
    pub kafka: BTreeMap<String, toml::Value>,
    pub source: SourceConfig,
    pub windows: WindowsConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub alerts: AlertsConfig,
    pub log: LogConfig,
}

/// `[windows]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Rolling window sizes; each is cut into 60 steps.
    pub sizes: Vec<String>,
    /// `wall` (T = now) or `event` (T = highest event time seen).
    pub clock: String,
    /// With the wall clock, how far ahead of T an event may be.
    pub max_future_skew: String,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        WindowsConfig {
            sizes: ["1h", "24h", "7d", "30d"].map(String::from).to_vec(),
            clock: "wall".into(),
            max_future_skew: "5m".into(),
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Distinct brand/segment pairs before new ones go to `__overflow__`.
    pub max_series: usize,
    /// How long an `event_id` is remembered to drop repeats.
    pub dedup_horizon: String,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { max_series: 10_000, dedup_horizon: "24h".into() }
    }
}

/// `[alerts]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub nps_threshold: f64,
    pub min_responses: u64,
    #[serde(rename = "override", skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<AlertOverride>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { nps_threshold: 0.0, min_responses: 30, overrides: Vec::new() }
    }
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter (`cxpulse=debug,rdkafka=warn`).
    pub level: String,
    /// `text` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: "text".into() }
    }
}

const ENV_PREFIX: &str = "CXPULSE_";

impl Config {
    /// Reads `path` (or starts from the defaults), then applies the environment's overrides.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config {}", path.display()))?,
            None => String::new(),
        };
        Self::from_toml_and_env(&text, std::env::vars())
    }

    pub fn from_toml_and_env(
        text: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| anyhow!("invalid config: {}", one_line(&e.to_string())))?;
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
            let Some((section, key)) = rest.split_once("__") else { continue };
            let section = section.to_ascii_lowercase();
            let key = if section == "kafka" {
                key.to_ascii_lowercase().replace('_', ".")
            } else {
                key.to_ascii_lowercase()
            };
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section_table) = entry.as_table_mut() else {
                bail!("{name}: [{section}] is not a table in the config");
            };
            let value = env_value(&raw, section == "kafka", section_table.get(&key));
            section_table.insert(key, value);
        }
        let config: Config =
            toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
                anyhow!("invalid config: {}", one_line(&e.to_string()))
            })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.engine_config()?;
        if self.source.topics.is_empty() || self.source.topics.iter().any(String::is_empty) {
            bail!("invalid config: [source] topics must name at least one topic");
        }
        parse_duration_ms(&self.source.checkpoint_interval)
            .map_err(|e| anyhow!("invalid config: [source] checkpoint_interval: {e}"))?;
        parse_duration_ms(&self.source.stall_timeout)
            .map_err(|e| anyhow!("invalid config: [source] stall_timeout: {e}"))?;
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                "invalid config: [http] listen `{}` is not an address like 127.0.0.1:9898",
                self.http.listen
            );
        }
        self.http.token().map_err(|e| anyhow!("invalid config: {e}"))?;
        self.http.tls().map_err(|e| anyhow!("invalid config: {e}"))?;
        if !["text", "json"].contains(&self.log.format.as_str()) {
            bail!("invalid config: [log] format must be `text` or `json`");
        }
        for (key, value) in self.kafka_settings() {
            // An empty secret would silently connect without credentials.
            if value.is_empty() {
                bail!("invalid config: [kafka] `{key}` is empty");
            }
        }
        for o in &self.alerts.overrides {
            if o.brand.is_empty() {
                bail!("invalid config: [[alerts.override]] needs a brand");
            }
        }
        Ok(())
    }

    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        let duration = |what: &str, text: &str| {
            parse_duration_ms(text).map_err(|e| anyhow!("invalid config: [{what}]: {e}"))
        };
        let mut windows = Vec::new();
        for size in &self.windows.sizes {
            let spec = WindowSpec::named(size)
                .map_err(|e| anyhow!("invalid config: [windows] sizes: {e}"))?;
            if windows.iter().any(|w: &WindowSpec| w.size_ms == spec.size_ms) {
                bail!("invalid config: [windows] sizes lists {size} twice");
            }
            windows.push(spec);
        }
        if windows.is_empty() {
            bail!("invalid config: [windows] sizes must list at least one window");
        }
        let clock = match self.windows.clock.as_str() {
            "wall" => ClockMode::Wall,
            "event" => ClockMode::Event,
            other => {
                bail!("invalid config: [windows] clock must be `wall` or `event`, not `{other}`")
            }
        };
        if self.limits.max_series == 0 {
            bail!("invalid config: [limits] max_series must be at least 1");
        }
        Ok(EngineConfig {
            windows,
            clock,
            max_future_skew_ms: duration(
                "windows] max_future_skew",
                &self.windows.max_future_skew,
            )?,
            max_series: self.limits.max_series,
            dedup_horizon_ms: duration("limits] dedup_horizon", &self.limits.dedup_horizon)?,
        })
    }

    /// `[kafka]` as librdkafka strings.
    pub fn kafka_settings(&self) -> KafkaSettings {
        self.kafka
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect()
    }

    pub fn alert_policy(&self) -> AlertPolicy {
        AlertPolicy {
            nps_threshold: self.alerts.nps_threshold,
            min_responses: self.alerts.min_responses,
            overrides: self.alerts.overrides.clone(),
        }
    }

    /// The resolved configuration as TOML, with every secret replaced.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.http.bearer_token.is_some() {
            shown.http.bearer_token = Some("<redacted>".into());
        }
        for (key, value) in shown.kafka.iter_mut() {
            if is_secret_key(key) {
                *value = toml::Value::String("<redacted>".into());
            }
        }
        if shown.source.dead_letter_topic.is_none() {
            shown.source.dead_letter_topic =
                Some(self.source.dead_letter_topic().unwrap_or_default());
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// An environment value: TOML if it parses as one (numbers, booleans, arrays), else a string;
/// a comma list where the key holds an array. `[kafka]` values stay strings.
fn env_value(raw: &str, always_string: bool, existing: Option<&toml::Value>) -> toml::Value {
    if always_string {
        return toml::Value::String(raw.to_string());
    }
    if let Ok(mut table) = toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        if let Some(value) = table.remove("v") {
            return value;
        }
    }
    if matches!(existing, Some(toml::Value::Array(_))) || raw.contains(',') {
        return toml::Value::Array(
            raw.split(',').map(|s| toml::Value::String(s.trim().to_string())).collect(),
        );
    }
    toml::Value::String(raw.to_string())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn defaults_match_the_design() {
        let config = Config::from_toml_and_env("", env(&[])).unwrap();
        let engine = config.engine_config().unwrap();
        let names: Vec<_> = engine.windows.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["1h", "24h", "7d", "30d"]);
        assert_eq!(engine.max_series, 10_000);
        assert_eq!(engine.dedup_horizon_ms, 86_400_000);
        assert_eq!(config.http.listen, "127.0.0.1:9898");
        assert_eq!(config.source.dead_letter_topic().as_deref(), Some("cx-events.dlq"));
    }

    #[test]
    fn environment_overrides_every_section() {
        let config = Config::from_toml_and_env(
            "[kafka]\n\"bootstrap.servers\" = \"a:1\"\n[limits]\nmax_series = 5\n",
            env(&[
                ("CXPULSE_KAFKA__BOOTSTRAP_SERVERS", "b:2"),
                ("CXPULSE_KAFKA__SASL_PASSWORD", "hunter2"),
                ("CXPULSE_LIMITS__MAX_SERIES", "7"),
                ("CXPULSE_SOURCE__TOPICS", "x,y"),
                ("CXPULSE_WINDOWS__CLOCK", "event"),
                ("CXPULSE_HTTP__LISTEN", "0.0.0.0:9898"),
                ("UNRELATED", "1"),
            ]),
        )
        .unwrap();
        let kafka = config.kafka_settings();
        assert_eq!(kafka["bootstrap.servers"], "b:2");
        assert_eq!(config.limits.max_series, 7);
        assert_eq!(config.source.topics, ["x", "y"]);
        assert_eq!(config.engine_config().unwrap().clock, ClockMode::Event);
        let shown = config.redacted_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn bad_values_give_one_line_errors() {
        for (text, needle) in [
            ("[windows]\nsizes = [\"1x\"]", "unknown unit"),
            ("[windows]\nclock = \"moon\"", "clock"),
            ("[limits]\nmax_series = 0", "max_series"),
            ("[http]\nlisten = \"nowhere\"", "listen"),
            ("[source]\ntopics = []", "topics"),
            ("[nonsense]\nx = 1", "unknown field"),
            ("[kafka]\n\"sasl.password\" = \"\"", "sasl.password"),
        ] {
            let error = Config::from_toml_and_env(text, env(&[])).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }
}
