//! The broker's settings of the topics a worker uses, checked once at startup. A topic setting
//! that quietly defeats a promise (a state topic that is not compacted, an event topic that keeps
//! less than the longest window, a topic too small for what cxpulse writes to it) is said once in
//! the log, as `cxpulse_topic_config_warnings{topic,setting}`, and by `check-config --connect`.
//! The decision is [`evaluate`], pure; [`describe`] asks the broker, with a deadline, and a
//! broker that cannot answer DescribeConfigs (librdkafka's mock cluster) is not an error.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tracing::{info, warn};

use crate::client_log::{ClientLog, QuietContext};
use crate::metrics::PipelineMetrics;

/// The largest checkpoint record (`checkpoint::MAX_RECORD_BYTES`, 990,000 bytes) plus room for
/// its key and the batch framing: Kafka's default (1,048,588) is above it.
pub const STATE_MAX_MESSAGE_BYTES: u64 = cxpulse_core::checkpoint::MAX_RECORD_BYTES as u64 + 10_000;

/// The topics a worker uses, by role.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicRoles {
    pub events: Vec<String>,
    pub dead_letter: Option<String>,
    pub state: Option<String>,
    /// The detractor feed, when one is configured.
    pub feed: Option<String>,
}

impl TopicRoles {
    /// Every topic, each once, events first.
    pub fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        let others = [&self.dead_letter, &self.state, &self.feed];
        for topic in self.events.iter().chain(others.into_iter().flatten()) {
            if !all.contains(topic) {
                all.push(topic.clone());
            }
        }
        all
    }
}

/// One setting of one topic that will hurt.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TopicWarning {
    pub topic: String,
    /// The topic setting at fault, or `exists` for a missing topic.
    pub setting: &'static str,
    pub problem: String,
}

/// What the broker said about each topic: its settings, or `None` when it does not exist.
pub type TopicConfigs = BTreeMap<String, Option<HashMap<String, String>>>;

/// The warnings for `configs`, given the roles and the longest window (ms). A setting the broker
/// did not report is taken as fine, except `cleanup.policy`, taken as Kafka's default `delete`
/// (a broker reports only what was set at creation, tansu for one).
pub fn evaluate(
    roles: &TopicRoles,
    configs: &TopicConfigs,
    longest_window_ms: i64,
) -> Vec<TopicWarning> {
    let mut warnings = Vec::new();
    let window = human_ms(longest_window_ms);
    let number = |settings: &HashMap<String, String>, key: &str| -> Option<i64> {
        settings.get(key).and_then(|v| v.trim().parse().ok())
    };
    let mut event_max_bytes: Option<i64> = None;
    for topic in roles.all() {
        let Some(known) = configs.get(&topic) else { continue };
        let Some(settings) = known else {
            warnings.push(TopicWarning {
                topic: topic.clone(),
                setting: "exists",
                problem: "the topic does not exist: create it (a broker that does not create \
                          topics on first use leaves the worker without it)"
                    .into(),
            });
            continue;
        };
        let is_event = roles.events.contains(&topic);
        let is_state = roles.state.as_ref() == Some(&topic);
        let retention = number(settings, "retention.ms").filter(|r| *r >= 0);
        let compacted = settings
            .get("cleanup.policy")
            .is_some_and(|p| p.split(',').any(|part| part.trim() == "compact"));
        if is_event {
            if let Some(bytes) = number(settings, "max.message.bytes") {
                event_max_bytes = Some(event_max_bytes.map_or(bytes, |b| b.max(bytes)));
            }
            if let Some(retention) = retention.filter(|r| *r < longest_window_ms) {
                warnings.push(TopicWarning {
                    topic: topic.clone(),
                    setting: "retention.ms",
                    problem: format!(
                        "keeps {} of events, less than the longest window ({window}): a \
                         partition rebuilt by replay misses what the topic deleted",
                        human_ms(retention)
                    ),
                });
            }
        }
        if is_state {
            if !compacted {
                warnings.push(TopicWarning {
                    topic: topic.clone(),
                    setting: "cleanup.policy",
                    problem: "the state topic is not compacted (cleanup.policy lacks `compact`): \
                              it grows without bound, or deletes checkpoints still in use"
                        .into(),
                });
                if let Some(retention) = retention.filter(|r| *r < longest_window_ms) {
                    warnings.push(TopicWarning {
                        topic: topic.clone(),
                        setting: "retention.ms",
                        problem: format!(
                            "deletes checkpoints after {}, less than the longest window \
                             ({window}): a partition idle that long is rebuilt by replay",
                            human_ms(retention)
                        ),
                    });
                }
            }
            if let Some(bytes) = number(settings, "max.message.bytes")
                .filter(|b| *b < STATE_MAX_MESSAGE_BYTES as i64)
            {
                warnings.push(TopicWarning {
                    topic: topic.clone(),
                    setting: "max.message.bytes",
                    problem: format!(
                        "accepts records of {bytes} bytes, less than a checkpoint record needs \
                         ({STATE_MAX_MESSAGE_BYTES}): large checkpoints are refused"
                    ),
                });
            }
        }
    }
    if let (Some(dead_letter), Some(event_bytes)) = (&roles.dead_letter, event_max_bytes) {
        let dead_letter_bytes = configs
            .get(dead_letter)
            .and_then(Option::as_ref)
            .and_then(|settings| number(settings, "max.message.bytes"));
        if let Some(bytes) = dead_letter_bytes.filter(|b| *b < event_bytes) {
            warnings.push(TopicWarning {
                topic: dead_letter.clone(),
                setting: "max.message.bytes",
                problem: format!(
                    "accepts records of {bytes} bytes, less than the event topics' \
                     {event_bytes}: the largest rejected messages are dead-lettered truncated"
                ),
            });
        }
    }
    warnings
}

fn human_ms(ms: i64) -> String {
    const UNITS: [(i64, &str); 4] =
        [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")];
    for (size, unit) in UNITS {
        if ms >= size && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Why the settings could not be read.
#[derive(Debug)]
pub enum DescribeError {
    /// The broker does not implement DescribeConfigs (librdkafka's mock cluster).
    Unsupported(String),
    /// No answer in time, or the connection failed.
    Unreachable(String),
}

impl std::fmt::Display for DescribeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DescribeError::Unsupported(e) => {
                write!(f, "the broker cannot describe topic configs ({e})")
            }
            DescribeError::Unreachable(e) => write!(f, "no answer to DescribeConfigs ({e})"),
        }
    }
}

/// Asks the broker which of `topics` exist (the metadata of every topic, so that asking creates
/// none on a broker that creates topics on first use) and the settings of those that do, each
/// request bounded by `timeout`.
pub fn describe(
    config: &ClientConfig,
    topics: &[String],
    timeout: Duration,
    log: &ClientLog,
) -> Result<TopicConfigs, DescribeError> {
    let admin: AdminClient<QuietContext> = config
        .create_with_context(QuietContext(log.clone()))
        .map_err(|e| DescribeError::Unreachable(e.to_string()))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, timeout)
        .map_err(|e| DescribeError::Unreachable(e.to_string()))?;
    let mut configs = TopicConfigs::new();
    let mut existing = Vec::new();
    for topic in topics {
        if metadata.topics().iter().any(|t| t.name() == topic && t.error().is_none()) {
            existing.push(topic.clone());
        } else {
            configs.insert(topic.clone(), None);
        }
    }
    if existing.is_empty() {
        return Ok(configs);
    }
    let topics = existing;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| DescribeError::Unreachable(e.to_string()))?;
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let resources: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let asked = admin.describe_configs(&resources, &options);
    let answer = runtime
        .block_on(async { tokio::time::timeout(timeout + Duration::from_secs(1), asked).await })
        .map_err(|_| DescribeError::Unreachable(format!("nothing within {timeout:?}")))?
        .map_err(|e| match e {
            KafkaError::AdminOp(code) if unsupported(code) => {
                DescribeError::Unsupported(code.to_string())
            }
            other => DescribeError::Unreachable(other.to_string()),
        })?;
    for (topic, result) in topics.iter().zip(answer) {
        match result {
            Ok(resource) => {
                let settings = resource
                    .entries
                    .into_iter()
                    .filter_map(|entry| entry.value.map(|value| (entry.name, value)))
                    .collect();
                configs.insert(topic.clone(), Some(settings));
            }
            Err(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
                configs.insert(topic.clone(), None);
            }
            Err(code) if unsupported(code) => {
                return Err(DescribeError::Unsupported(code.to_string()))
            }
            // Not authorized and the like: that topic is left unjudged.
            Err(_) => {}
        }
    }
    Ok(configs)
}

fn unsupported(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnsupportedVersion
            | RDKafkaErrorCode::UnsupportedFeature
            | RDKafkaErrorCode::InvalidRequest
    )
}

/// Checks the topics once and tells: one warn line per warning, the gauge set to 1 for each; a
/// broker that cannot tell gets one info line. Meant for a thread of its own.
pub fn check_and_report(
    config: &ClientConfig,
    roles: &TopicRoles,
    longest_window_ms: i64,
    metrics: &PipelineMetrics,
    log: &ClientLog,
) -> Option<Vec<TopicWarning>> {
    match describe(config, &roles.all(), DESCRIBE_TIMEOUT, log) {
        Ok(configs) => {
            let warnings = evaluate(roles, &configs, longest_window_ms);
            for w in &warnings {
                warn!(topic = %w.topic, setting = w.setting, "topic setting will hurt: {}", w.problem);
                metrics.topic_config_warnings.with_label_values(&[&w.topic, w.setting]).set(1);
            }
            if warnings.is_empty() {
                info!(topics = configs.len(), "topic settings checked: nothing to warn about");
            }
            Some(warnings)
        }
        Err(e) => {
            info!("topic settings not checked: {e}");
            None
        }
    }
}

/// How long the startup check waits for the broker's answer.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn roles() -> TopicRoles {
        TopicRoles {
            events: vec!["cx".into()],
            dead_letter: Some("cx.dlq".into()),
            state: Some("state".into()),
            feed: None,
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    /// Kafka's defaults, with the state topic compacted as documented.
    fn healthy() -> TopicConfigs {
        let topic = [
            ("cleanup.policy", "delete"),
            ("retention.ms", "-1"),
            ("max.message.bytes", "1048588"),
        ];
        let mut configs = TopicConfigs::new();
        configs.insert("cx".into(), settings(&topic));
        configs.insert("cx.dlq".into(), settings(&topic));
        configs.insert(
            "state".into(),
            settings(&[
                ("cleanup.policy", "compact"),
                ("retention.ms", "604800000"),
                ("max.message.bytes", "1048588"),
            ]),
        );
        configs
    }

    fn settings_of(warnings: &[TopicWarning]) -> Vec<(&str, &str)> {
        warnings.iter().map(|w| (w.topic.as_str(), w.setting)).collect()
    }

    #[test]
    fn the_documented_settings_give_no_warning() {
        assert_eq!(evaluate(&roles(), &healthy(), 30 * DAY), vec![]);
        let mut both = healthy();
        both.insert("state".into(), settings(&[("cleanup.policy", "compact,delete")]));
        assert_eq!(evaluate(&roles(), &both, 30 * DAY), vec![]);
    }

    #[test]
    fn a_state_topic_not_compacted_is_said_with_its_short_retention() {
        let mut configs = healthy();
        configs.insert(
            "state".into(),
            settings(&[("cleanup.policy", "delete"), ("retention.ms", "604800000")]),
        );
        let warnings = evaluate(&roles(), &configs, 30 * DAY);
        assert_eq!(
            settings_of(&warnings),
            [("state", "cleanup.policy"), ("state", "retention.ms")]
        );
        assert!(warnings[1].problem.contains("7d") && warnings[1].problem.contains("30d"));
        // Kept forever: only the policy is said.
        configs.insert(
            "state".into(),
            settings(&[("cleanup.policy", "delete"), ("retention.ms", "-1")]),
        );
        assert_eq!(
            settings_of(&evaluate(&roles(), &configs, 30 * DAY)),
            [("state", "cleanup.policy")]
        );
    }

    #[test]
    fn an_event_topic_keeping_less_than_the_longest_window_is_said() {
        let mut configs = healthy();
        configs.insert("cx".into(), settings(&[("retention.ms", "604800000")]));
        assert_eq!(settings_of(&evaluate(&roles(), &configs, 30 * DAY)), [("cx", "retention.ms")]);
        assert_eq!(evaluate(&roles(), &configs, 7 * DAY), vec![], "equal is enough");
    }

    #[test]
    fn missing_topics_are_said() {
        let mut configs = healthy();
        configs.insert("cx.dlq".into(), None);
        configs.insert("state".into(), None);
        assert_eq!(
            settings_of(&evaluate(&roles(), &configs, DAY)),
            [("cx.dlq", "exists"), ("state", "exists")]
        );
    }

    #[test]
    fn small_records_on_the_state_and_dead_letter_topics_are_said() {
        let mut configs = healthy();
        configs.insert(
            "state".into(),
            settings(&[("cleanup.policy", "compact"), ("max.message.bytes", "900000")]),
        );
        configs.insert("cx".into(), settings(&[("max.message.bytes", "2000000")]));
        configs.insert("cx.dlq".into(), settings(&[("max.message.bytes", "1048588")]));
        assert_eq!(
            settings_of(&evaluate(&roles(), &configs, DAY)),
            [("state", "max.message.bytes"), ("cx.dlq", "max.message.bytes")]
        );
    }

    #[test]
    fn unreported_settings_and_unjudged_topics_give_no_warning_but_the_policy_defaults_to_delete() {
        let mut configs = TopicConfigs::new();
        configs.insert("cx".into(), settings(&[]));
        assert_eq!(evaluate(&roles(), &configs, 30 * DAY), vec![]);
        configs.insert("state".into(), settings(&[]));
        assert_eq!(
            settings_of(&evaluate(&roles(), &configs, 30 * DAY)),
            [("state", "cleanup.policy")]
        );
    }

    #[test]
    fn every_topic_is_asked_once() {
        let mut roles = roles();
        roles.events.push("cx.dlq".into());
        assert_eq!(roles.all(), ["cx", "cx.dlq", "state"]);
        assert_eq!(human_ms(90_000), "90s");
        assert_eq!(human_ms(1500), "1500ms");
    }
}
