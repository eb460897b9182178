//! The TOML configuration: typed sections with defaults, environment overrides
//! (`CXPULSE_<SECTION>__<KEY>`), validation with one-line errors, and a redacted rendering for
//! `check-config`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use cxpulse_core::alerts::{AlertOverride, AlertPolicy};
use cxpulse_core::drop_evidence::DropSettings;
use cxpulse_core::duration::DurationSetting;
use cxpulse_core::secret::{secrets_in, Redactor, Secret};
use cxpulse_core::{ClockMode, EngineConfig, WindowSpec};
use cxpulse_http::HttpConfig;
use cxpulse_kafka::config::is_secret_key;
use cxpulse_kafka::feed::FeedConfig;
use cxpulse_kafka::{KafkaSettings, SourceConfig};

use crate::settings::{LogSettings, Settings};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Passed to librdkafka as is; values may be written as strings, numbers or booleans.
    #[serde(deserialize_with = "kafka_section")]
    pub kafka: BTreeMap<String, KafkaValue>,
    pub source: SourceConfig,
    pub windows: WindowsConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub alerts: AlertsConfig,
    pub log: LogConfig,
    pub gateway: cxpulse_gateway::GatewayConfig,
    pub feed: FeedConfig,
    /// Scrubs this configuration's secret values from error text; found by [`secrets_in`].
    #[serde(skip)]
    redactor: Redactor,
}

/// One `[kafka]` value: a secret (by its key, see `is_secret_key`) or a plain setting.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum KafkaValue {
    Secret(Secret),
    Plain(toml::Value),
}

impl KafkaValue {
    /// The value as librdkafka takes it.
    fn text(&self) -> String {
        match self {
            KafkaValue::Secret(secret) => secret.expose().to_string(),
            KafkaValue::Plain(toml::Value::String(text)) => text.clone(),
            KafkaValue::Plain(other) => other.to_string(),
        }
    }
}

/// `[kafka]`: strings, numbers and booleans; the values of secret keys become [`Secret`]s.
fn kafka_section<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, KafkaValue>, D::Error> {
    let table = BTreeMap::<String, toml::Value>::deserialize(deserializer)?;
    table
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    return Err(serde::de::Error::custom(format!(
                        "`{key}` must be a string, a number or a boolean"
                    )))
                }
                value if is_secret_key(&key) => KafkaValue::Secret(Secret::new(match value {
                    toml::Value::String(text) => text,
                    other => other.to_string(),
                })),
                value => KafkaValue::Plain(value),
            };
            Ok((key, value))
        })
        .collect()
}

/// `[windows]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Rolling window sizes; each is cut into 60 steps.
    pub sizes: Vec<String>,
    /// `wall` (T = now) or `event` (T = highest event time seen).
    #[serde(with = "clock_name")]
    pub clock: ClockMode,
    /// With the wall clock, how far ahead of T an event may be.
    pub max_future_skew: DurationSetting,
}

impl Default for WindowsConfig {
    /// The engine's own defaults, so they live in one place.
    fn default() -> Self {
        let engine = EngineConfig::default();
        WindowsConfig {
            sizes: engine.windows.iter().map(|w| w.name.clone()).collect(),
            clock: engine.clock,
            max_future_skew: DurationSetting::of_ms(engine.max_future_skew_ms),
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
    pub dedup_horizon: DurationSetting,
    /// How long an answer with a `response_id` can be corrected; at most the longest window
    /// (default 24h, or the longest window when shorter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correction_horizon: Option<DurationSetting>,
    /// State size past which the oldest ids and answers are forgotten early (`"768MiB"`);
    /// default 70 % of the cgroup memory limit, else no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_memory: Option<String>,
}

impl Default for LimitsConfig {
    /// The engine's own defaults, so they live in one place.
    fn default() -> Self {
        let engine = EngineConfig::default();
        LimitsConfig {
            max_series: engine.max_series,
            // Written in hours, as the docs give it (`24h`).
            dedup_horizon: DurationSetting::hours((engine.dedup_horizon_ms / 3_600_000) as u32),
            correction_horizon: None,
            state_memory: None,
        }
    }
}

/// `[alerts]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub nps_threshold: f64,
    pub min_responses: u64,
    /// Churn share (0..1) over 30 days above which CxpulseChurnRateHigh fires.
    pub churn_threshold: f64,
    /// Answers an hour (7-day average) from which a brand's silence raises
    /// CxpulseBrandFeedSilent.
    pub silence_min_rate: f64,
    /// `[alerts.nps_drop]`: the sequential NPS-drop evidence behind CxpulseNpsDropDetected.
    pub nps_drop: DropSettings,
    #[serde(rename = "override", skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<AlertOverride>,
}

impl Default for AlertsConfig {
    /// The alert policy's own defaults (`cxpulse_core::alerts`), so they live in one place.
    fn default() -> Self {
        let policy = AlertPolicy::default();
        AlertsConfig {
            nps_threshold: policy.nps_threshold,
            min_responses: policy.min_responses,
            churn_threshold: policy.churn_threshold,
            silence_min_rate: policy.silence_min_rate,
            nps_drop: DropSettings::default(),
            overrides: policy.overrides,
        }
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
            .map_err(|e| anyhow!("invalid config: {}", syntax_error(text, &e)))?;
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
            let takes_string = section == "kafka" || key_takes_a_string(&section, &key);
            let value = env_value(&raw, takes_string, section_table.get(&key));
            section_table.insert(key, value);
        }
        let input = toml::Value::Table(table);
        let mut config: Config = input.clone().try_into().map_err(|e: toml::de::Error| {
            anyhow!("invalid config: {}", keyed(&without_values(&e.to_string())))
        })?;
        config.redactor = Redactor::new(secrets_in(
            &serde_json::to_value(&input).unwrap_or_default(),
            &serde_json::to_value(&config).unwrap_or_default(),
        ));
        Ok(config)
    }

    /// Checks every setting and compiles each section into what its component runs with. Each
    /// error is one line naming the key; a secret it might quote (a librdkafka refusal, say) is
    /// redacted.
    pub fn compile(&self) -> anyhow::Result<Settings> {
        self.compile_unredacted().map_err(|e| anyhow!(self.redact(&format!("{e:#}"))))
    }

    fn compile_unredacted(&self) -> anyhow::Result<Settings> {
        let engine = self.engine_config()?;
        if self.source.topics.is_empty() || self.source.topics.iter().any(String::is_empty) {
            bail!("invalid config: [source] topics must name at least one topic");
        }
        let http = self.http.compile().map_err(|e| anyhow!("invalid config: {e}"))?;
        let json = match self.log.format.as_str() {
            "text" => false,
            "json" => true,
            _ => bail!("invalid config: [log] format must be `text` or `json`"),
        };
        let kafka = self.kafka_settings();
        for (key, value) in &kafka {
            // An empty secret would silently connect without credentials.
            if value.is_empty() {
                bail!("invalid config: [kafka] `{key}` is empty");
            }
        }
        crate::kafka_check::check(&kafka)?;
        let gateway = self
            .gateway
            .compile(self.source.topics.first().map(String::as_str))
            .map_err(|e| anyhow!("invalid config: {e}"))?;
        let alerts = self.alert_policy()?;
        let mut redactor = self.redactor.clone();
        if let Some(token) = &http.token_value {
            redactor.add(token);
        }
        Ok(Settings {
            engine,
            kafka,
            source: self.source.clone(),
            feed: self.feed.clone(),
            http,
            gateway,
            alerts,
            log: LogSettings { level: self.log.level.clone(), json },
            redactor,
        })
    }

    /// Sets a `[kafka]` setting that is not a secret (a command-line override).
    pub fn set_kafka(&mut self, key: &str, value: &str) {
        self.kafka.insert(key.into(), KafkaValue::Plain(toml::Value::String(value.into())));
    }

    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        let mut windows = Vec::new();
        for size in &self.windows.sizes {
            duration_ms("[windows] sizes", size)?;
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
        if self.limits.max_series == 0 {
            bail!("invalid config: [limits] max_series must be at least 1");
        }
        self.alerts
            .nps_drop
            .validate()
            .map_err(|e| anyhow!("invalid config: [alerts.nps_drop] {e}"))?;
        let longest = windows.iter().map(|w| w.size_ms).max().unwrap_or(0);
        let correction_horizon_ms = match &self.limits.correction_horizon {
            Some(horizon) if horizon.ms() > longest => bail!(
                "invalid config: [limits] correction_horizon {} is longer than the longest window",
                horizon.as_str()
            ),
            Some(horizon) => horizon.ms(),
            None => DurationSetting::hours(24).ms().min(longest),
        };
        let state_memory_bytes = match &self.limits.state_memory {
            Some(text) => Some(
                crate::memory_limit::parse_size(text)
                    .map_err(|e| anyhow!("invalid config: [limits] state_memory: {e}"))?,
            ),
            None => crate::memory_limit::default_budget(),
        };
        Ok(EngineConfig {
            windows,
            clock: self.windows.clock,
            max_future_skew_ms: self.windows.max_future_skew.ms(),
            max_series: self.limits.max_series,
            dedup_horizon_ms: self.limits.dedup_horizon.ms(),
            correction_horizon_ms,
            state_memory_bytes,
            drop: self.alerts.nps_drop.clone(),
            detractor_feed: self.feed.topic().is_some(),
        })
    }

    /// `[kafka]` as librdkafka strings.
    pub fn kafka_settings(&self) -> KafkaSettings {
        self.kafka.iter().map(|(key, value)| (key.clone(), value.text())).collect()
    }

    fn alert_policy(&self) -> anyhow::Result<AlertPolicy> {
        let churn_share = |value: f64| (0.0..=1.0).contains(&value);
        if !churn_share(self.alerts.churn_threshold) {
            bail!("invalid config: [alerts] churn_threshold is a share of customers, 0 to 1");
        }
        for o in &self.alerts.overrides {
            if o.brand.is_empty() {
                bail!("invalid config: [[alerts.override]] needs a brand");
            }
            if o.churn_threshold.is_some_and(|value| !churn_share(value)) {
                bail!(
                    "invalid config: [[alerts.override]] churn_threshold of brand {} is a share of customers, 0 to 1",
                    o.brand
                );
            }
        }
        if !(self.alerts.silence_min_rate >= 0.0 && self.alerts.silence_min_rate.is_finite()) {
            bail!("invalid config: [alerts] silence_min_rate is answers an hour, 0 or more");
        }
        Ok(AlertPolicy {
            nps_threshold: self.alerts.nps_threshold,
            min_responses: self.alerts.min_responses,
            churn_threshold: self.alerts.churn_threshold,
            silence_min_rate: self.alerts.silence_min_rate,
            overrides: self.alerts.overrides.clone(),
        })
    }

    /// The resolved configuration as TOML; every secret prints as `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.source.dead_letter_topic.is_none() {
            shown.source.dead_letter_topic =
                Some(self.source.dead_letter_topic().unwrap_or_default());
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// `text` with every secret of this configuration replaced by `<redacted>` (the settings'
    /// own redactor also knows a token read from a file).
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }
}

/// A window size; surrounding spaces are refused, as the window names show them.
fn duration_ms(what: &str, text: &str) -> anyhow::Result<i64> {
    DurationSetting::parse(text)
        .map(|setting| setting.ms())
        .map_err(|e| anyhow!("invalid config: {what}: {e}"))
}

/// `[windows] clock` as written: `wall` or `event`.
pub mod clock_name {
    use cxpulse_core::ClockMode;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(text: &str) -> Result<ClockMode, String> {
        match text {
            "wall" => Ok(ClockMode::Wall),
            "event" => Ok(ClockMode::Event),
            other => Err(format!("must be `wall` or `event`, not `{other}`")),
        }
    }

    pub fn serialize<S: Serializer>(clock: &ClockMode, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match clock {
            ClockMode::Wall => "wall",
            ClockMode::Event => "event",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ClockMode, D::Error> {
        parse(&String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// A deserializer's message about a key or a section (`… in `windows.clock``, `… in `http``)
/// as the other config errors put it: `[windows] clock: …`, `[http] …`.
fn keyed(message: &str) -> String {
    let Some((reason, path)) = message.rsplit_once(" in `") else { return message.to_string() };
    let Some(path) = path.strip_suffix('`').filter(|p| !p.contains(['`', ' '])) else {
        return message.to_string();
    };
    match path.split_once('.') {
        Some((section, key)) if !key.contains('.') => format!("[{section}] {key}: {reason}"),
        Some(_) => message.to_string(),
        None => format!("[{path}] {reason}"),
    }
}

/// Whether `[section] key` is a string (or optional string) setting: then an environment value
/// is taken as the raw string, whatever it looks like (`987654321`, `true`, `a,b`).
fn key_takes_a_string(section: &str, key: &str) -> bool {
    let mut probe = toml::Table::new();
    let mut inner = toml::Table::new();
    inner.insert(key.to_string(), toml::Value::String(String::new()));
    probe.insert(section.to_string(), toml::Value::Table(inner));
    toml::Value::Table(probe).try_into::<Config>().is_ok()
}

/// A TOML syntax error as position and reason, never the offending line: it may hold a secret.
fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    let reason = without_values(error.message());
    match error.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
            format!("TOML syntax error at line {line}, column {column}: {reason}")
        }
        None => format!("TOML syntax error: {reason}"),
    }
}

/// A deserializer's message with any quoted value left out: `invalid type: string "…"` names
/// the kind of value it got, never the value, which may be a secret in the wrong place.
fn without_values(message: &str) -> String {
    let message = one_line(message);
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            if let Some((got, expected)) = rest.split_once(", expected") {
                let kind: String =
                    got.split(['"', '`']).next().unwrap_or_default().trim_end().to_string();
                return format!("{prefix}{kind}, expected{expected}");
            }
        }
    }
    message
}

/// An environment value: the raw string for string keys; else TOML if it parses as one
/// (numbers, booleans, arrays), else a comma list where the key holds an array, else a string.
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

    /// Reads and compiles, as `run` and `check-config` do.
    fn load(text: &str, env: impl Iterator<Item = (String, String)>) -> anyhow::Result<Config> {
        let config = Config::from_toml_and_env(text, env)?;
        config.compile()?;
        Ok(config)
    }

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn defaults_match_the_design() {
        let config = load("", env(&[])).unwrap();
        let engine = config.engine_config().unwrap();
        let names: Vec<_> = engine.windows.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["1h", "24h", "7d", "30d"]);
        assert_eq!(engine.max_series, 10_000);
        assert_eq!(engine.dedup_horizon_ms, 86_400_000);
        assert_eq!(config.http.listen, "127.0.0.1:9898");
        assert_eq!(config.source.dead_letter_topic().as_deref(), Some("cx-events.dlq"));
        assert_eq!(config.feed.topic(), None, "the detractor feed is off by default");
        assert!(!engine.detractor_feed);
    }

    #[test]
    fn environment_overrides_every_section() {
        let config = load(
            "[kafka]\n\"bootstrap.servers\" = \"a:1\"\n[limits]\nmax_series = 5\n",
            env(&[
                ("CXPULSE_KAFKA__BOOTSTRAP_SERVERS", "b:2"),
                ("CXPULSE_KAFKA__SASL_PASSWORD", "hunter2"),
                ("CXPULSE_LIMITS__MAX_SERIES", "7"),
                ("CXPULSE_SOURCE__TOPICS", "x,y"),
                ("CXPULSE_WINDOWS__CLOCK", "event"),
                ("CXPULSE_HTTP__LISTEN", "0.0.0.0:9898"),
                ("CXPULSE_FEED__DETRACTORS_TOPIC", "1234"),
                ("UNRELATED", "1"),
            ]),
        )
        .unwrap();
        let kafka = config.kafka_settings();
        assert_eq!(kafka["bootstrap.servers"], "b:2");
        assert_eq!(config.limits.max_series, 7);
        assert_eq!(config.source.topics, ["x", "y"]);
        assert_eq!(config.engine_config().unwrap().clock, ClockMode::Event);
        assert_eq!(config.feed.topic(), Some("1234"));
        assert!(config.engine_config().unwrap().detractor_feed);
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
            ("[http]\nheader_read_timeout = \"1s\"\nnonsense = 1", "unknown field `nonsense`"),
            ("[kafka]\n\"sasl.password\" = \"\"", "sasl.password"),
            ("[alerts.nps_drop]\nmin_drop_points = 0", "[alerts.nps_drop] min_drop_points"),
            ("[alerts.nps_drop]\nwarmup = 5", "unknown field `warmup`"),
            ("[alerts]\nsilence_min_rate = -1", "[alerts] silence_min_rate"),
        ] {
            let error = load(text, env(&[])).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn environment_strings_are_taken_raw() {
        for raw in ["987654321", "true", "1e3", "a,b", "[1]"] {
            let config = load("", env(&[("CXPULSE_HTTP__BEARER_TOKEN", raw)])).unwrap();
            assert_eq!(config.http.bearer_token.as_ref().map(Secret::expose), Some(raw));
            let config = load("", env(&[("CXPULSE_LOG__LEVEL", raw)])).unwrap();
            assert_eq!(config.log.level, raw);
        }
        // Typed keys still read numbers and lists.
        let config = load(
            "",
            env(&[("CXPULSE_HTTP__MAX_CONNECTIONS", "9"), ("CXPULSE_WINDOWS__SIZES", "1h,2h")]),
        )
        .unwrap();
        assert_eq!(config.http.limits.max_connections, 9);
        assert_eq!(config.windows.sizes, ["1h", "2h"]);
    }

    #[test]
    fn errors_never_quote_a_value() {
        for (text, env_pairs, secret) in [
            ("[kafka]\n\"sasl.password\" = \"TOPSECRET-9\" x\n", vec![], "TOPSECRET-9"),
            ("[kafka]\n\"sasl.password\" = \"TOPSECRET-9\n", vec![], "TOPSECRET-9"),
            ("[http]\nbearer_token = 987654321\n", vec![], "987654321"),
            ("", vec![("CXPULSE_LIMITS__MAX_SERIES", "SECRET-ENV-1")], "SECRET-ENV-1"),
        ] {
            let error = load(text, env(&env_pairs)).unwrap_err().to_string();
            assert!(error.starts_with("invalid config: "), "{error}");
            assert!(!error.contains(secret), "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
        let error = load("a = 1\nb = = 2\n", env(&[])).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn check_config_refuses_what_run_would() {
        for (text, needle) in [
            ("[kafka]\n\"bootstrap.servers\" = [\"a:1\", \"b:2\"]\n", "bootstrap.servers"),
            ("[windows]\nmax_future_skew = \" 1h\"\n", "[windows] max_future_skew: "),
            ("[windows]\nsizes = [\" 1h\"]\n", "[windows] sizes"),
            ("[limits]\ndedup_horizon = \"1h \"\n", "[limits] dedup_horizon: "),
            ("[windows]\nmax_future_skew = \"5x\"\n", "[windows] max_future_skew: "),
            ("[kafka]\n\"no.such.setting\" = \"1\"\n", "no.such.setting"),
            ("[http]\nheader_read_timeout = \"0s\"\n", "[http] header_read_timeout"),
        ] {
            let error = load(text, env(&[])).unwrap_err().to_string();
            assert!(error.contains(needle), "{text}: {error}");
            assert!(!error.contains("]]") && !error.contains("skew]"), "{error}");
        }
    }

    #[test]
    fn durations_and_the_clock_are_read_once_and_shown_as_written() {
        let text = "[source]\ncheckpoint_interval = \"1h30m\"\n[windows]\nclock = \"event\"\n\
                    [gateway]\ndrain_timeout = \"90s\"\nkeep_alive_timeout = \"2m\"\n";
        let config = load(text, env(&[])).unwrap();
        assert_eq!(config.source.checkpoint_interval.get().as_secs(), 5_400);
        assert_eq!(config.windows.clock, ClockMode::Event);
        let gateway = config.compile().unwrap().gateway;
        assert_eq!(gateway.listener.shutdown_grace.as_secs(), 90);
        assert_eq!(gateway.listener.keep_alive.as_secs(), 120);
        let shown = config.redacted_toml();
        for line in
            ["checkpoint_interval = \"1h30m\"", "clock = \"event\"", "dedup_horizon = \"24h\""]
        {
            assert!(shown.contains(line), "{line}: {shown}");
        }
        // What check-config prints reads back to the same configuration.
        let again = load(&shown, env(&[])).unwrap();
        assert_eq!(again.source.checkpoint_interval, config.source.checkpoint_interval);
        assert_eq!(again.windows.clock, config.windows.clock);
        assert_eq!(again.gateway.limits, config.gateway.limits);
        for (text, error) in [
            ("[gateway]\nheader_read_timeout = \"5q\"", "[gateway] header_read_timeout: `5q`"),
            ("[source]\nstall_timeout = \"1h \"", "[source] stall_timeout: `1h` has spaces"),
            ("[windows]\nclock = \"moon\"", "[windows] clock: must be `wall` or `event`"),
        ] {
            let got = load(text, env(&[])).unwrap_err().to_string();
            assert!(got.starts_with(&format!("invalid config: {error}")), "{got}");
        }
    }

    #[test]
    fn redaction_replaces_every_secret_longest_first() {
        let config = load(
            "[kafka]\n\"sasl.password\" = \"abc\"\n\"ssl.key.password\" = \"abcdef\"\n",
            env(&[("CXPULSE_HTTP__BEARER_TOKEN", "tok-1")]),
        )
        .unwrap();
        let shown = config.redact("x abcdef y abc z tok-1 localhost:9092");
        assert_eq!(shown, "x <redacted> y <redacted> z <redacted> localhost:9092");
    }

    /// A distinct secret in every secret field of the configuration (`PLANT-…`).
    fn planted() -> String {
        include_str!("../tests/fixtures/planted-secrets.toml")
            .replace("BROKERS", "127.0.0.1:9092")
            .replace("TOPIC", "cx-events")
            .replace("HTTP_LISTEN", "127.0.0.1:9898")
            .replace("GATEWAY_LISTEN", "127.0.0.1:9899")
    }

    #[test]
    fn every_secret_field_is_redacted_in_check_config_and_in_error_text() {
        let text = planted();
        let config = load(&text, env(&[])).unwrap();
        let planted: Vec<&str> =
            text.split('"').filter(|part| part.starts_with("PLANT-")).collect();
        assert_eq!(planted.len(), 9, "{planted:?}");
        let shown = config.redacted_toml() + &format!("{config:?}");
        let all = planted.join(" ");
        let scrubbed = config.redact(&all);
        for secret in &planted {
            assert!(!shown.contains(secret), "check-config shows {secret}:\n{shown}");
            assert!(!scrubbed.contains(secret), "redaction misses {secret}: {scrubbed}");
        }
        assert_eq!(scrubbed, vec!["<redacted>"; planted.len()].join(" "));
    }

    #[test]
    fn churn_threshold_has_a_default_and_per_brand_overrides() {
        let text = "[alerts]\nchurn_threshold = 0.03\n[[alerts.override]]\nbrand = \"acme\"\nchurn_threshold = 0.1\n";
        let policy = load(text, env(&[])).unwrap().compile().unwrap().alerts;
        assert_eq!(policy.churn_threshold_for("acme", "smb"), 0.1);
        assert_eq!(policy.churn_threshold_for("globex", "smb"), 0.03);
        let default = Config::default().compile().unwrap().alerts;
        assert_eq!(default.churn_threshold_for("globex", "smb"), 0.05);
        for bad in [
            "[alerts]\nchurn_threshold = 5",
            "[[alerts.override]]\nbrand = \"acme\"\nchurn_threshold = -0.1",
        ] {
            let error = load(bad, env(&[])).unwrap_err().to_string();
            assert!(error.contains("churn_threshold"), "{bad}: {error}");
        }
    }
}
