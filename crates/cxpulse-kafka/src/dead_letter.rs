//! Dead letters: each rejected message goes to the dead-letter topic with headers saying why and
//! where from. Sending never blocks the consume loop: letters are queued here, delivery reports
//! are collected as the loop goes round, and the loop stores a partition's offsets only up to its
//! first letter still pending (`floors`). A payload larger than the topic accepts is written
//! truncated; a letter the topic refuses for good is counted and let go; anything else is retried
//! with backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use tracing::{info, warn};

use crate::client_log::{ClientLog, QuietContext, Throttle};
use crate::metrics::PipelineMetrics;
use crate::partitions::SourcePartition;
use crate::util::lock;

/// A rejected message, copied out of the consumer's buffer.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The source topic's name, for the letter's headers.
    pub source_topic: String,
    pub source: SourcePartition,
    pub source_offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The rejection reason label (`invalid_json`, ...).
    pub reason: &'static str,
    pub detail: String,
}

/// Bytes a record needs beyond its key, payload and headers (framing, timestamps, varints),
/// rounded up generously so that a truncated letter always fits.
const RECORD_OVERHEAD: usize = 1024;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A partition whose oldest pending letter is older than this counts as blocked.
pub const BLOCKED_AFTER: Duration = Duration::from_secs(5);
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// The payload bytes a letter may keep so that the whole record stays within `max_bytes`;
/// `None` when it fits whole.
pub fn truncated_len(
    max_bytes: usize,
    payload: usize,
    key: usize,
    headers: usize,
) -> Option<usize> {
    // The truncation headers: a size and a 64-digit hex digest, with their names.
    const TRUNCATION_HEADERS: usize = 128;
    let fixed = key + headers + RECORD_OVERHEAD;
    if fixed + payload <= max_bytes {
        return None;
    }
    Some(max_bytes.saturating_sub(fixed + TRUNCATION_HEADERS).min(payload))
}

/// Why a produce error is final: the `reason` label of `cxpulse_dead_letter_failures_total`.
/// `None` for transient errors, which are retried.
pub fn permanent_failure(code: RDKafkaErrorCode) -> Option<&'static str> {
    use RDKafkaErrorCode as E;
    match code {
        E::MessageSizeTooLarge | E::InvalidMessageSize | E::MessageBatchTooLarge => {
            Some("too_large")
        }
        E::UnknownTopicOrPartition | E::UnknownTopic | E::UnknownPartition | E::InvalidTopic => {
            Some("unknown_topic")
        }
        E::TopicAuthorizationFailed
        | E::ClusterAuthorizationFailed
        | E::SaslAuthenticationFailed
        | E::PolicyViolation => Some("not_authorized"),
        E::InvalidRecord | E::InvalidMessage | E::UnsupportedForMessageFormat => {
            Some("invalid_record")
        }
        _ => None,
    }
}

struct DeliveryContext {
    /// Letter ids with their delivery outcome, collected by `poll`.
    results: Mutex<Vec<(usize, Result<(), RDKafkaErrorCode>)>>,
    log: ClientLog,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log_line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.client_error(&error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
        };
        lock(&self.results).push((id, outcome));
    }
}

struct Pending {
    letter: DeadLetter,
    headers: OwnedHeaders,
    submitted: Instant,
    /// Sent and awaiting its report.
    in_flight: bool,
    retry_at: Instant,
    backoff: Duration,
}

/// The dead-letter producer and the letters it has not settled yet. Owned by the consume loop.
pub struct DeadLetterProducer {
    producer: BaseProducer<DeliveryContext>,
    topic: String,
    metrics: PipelineMetrics,
    max_bytes: usize,
    pending: BTreeMap<usize, Pending>,
    next_id: usize,
    failure_logs: HashMap<&'static str, Throttle>,
}

impl DeadLetterProducer {
    /// `fallback_max_bytes` is the letter size limit when the broker does not say the topic's.
    pub fn new(
        config: &ClientConfig,
        topic: String,
        metrics: PipelineMetrics,
        fallback_max_bytes: usize,
        log: ClientLog,
    ) -> anyhow::Result<Self> {
        let max_bytes = match topic_max_bytes(config, &topic, &log) {
            Some(limit) => {
                info!(%topic, max_bytes = limit, "dead-letter size limit from the topic");
                limit
            }
            None => {
                info!(%topic, max_bytes = fallback_max_bytes, "dead-letter size limit from [source] dead_letter_max_bytes (the broker did not say the topic's)");
                fallback_max_bytes
            }
        };
        let mut config = config.clone();
        // A batch of letters must fit the topic too, and no local check may refuse what fits.
        config
            .set("message.max.bytes", (max_bytes + RECORD_OVERHEAD).max(1000).to_string())
            .set("batch.size", max_bytes.max(1).to_string());
        if config.get("message.timeout.ms").is_none() {
            // A report within half a minute, so an unreachable topic is retried and shown.
            config.set("message.timeout.ms", "30000");
        }
        let context = DeliveryContext { results: Mutex::new(Vec::new()), log };
        let producer = config.create_with_context(context)?;
        Ok(DeadLetterProducer {
            producer,
            topic,
            metrics,
            max_bytes,
            pending: BTreeMap::new(),
            next_id: 0,
            failure_logs: HashMap::new(),
        })
    }

    /// Queues letters and sends them; returns at once.
    pub fn submit(&mut self, letters: Vec<DeadLetter>) {
        let now = Instant::now();
        for letter in letters {
            let (letter, headers) = fit(letter, self.max_bytes);
            let id = self.next_id;
            self.next_id += 1;
            let pending = Pending {
                letter,
                headers,
                submitted: now,
                in_flight: false,
                retry_at: now,
                backoff: FIRST_BACKOFF,
            };
            self.pending.insert(id, pending);
            self.send(id);
        }
    }

    /// Collects delivery reports and resends letters whose backoff is over. Never blocks.
    pub fn service(&mut self) {
        self.producer.poll(Duration::ZERO);
        let results: Vec<_> = lock(&self.producer.context().results).drain(..).collect();
        let now = Instant::now();
        for (id, outcome) in results {
            match outcome {
                Ok(()) => {
                    if self.pending.remove(&id).is_some() {
                        self.metrics.dead_letters.inc();
                    }
                }
                Err(code) => self.failed(id, code, now),
            }
        }
        let due: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.in_flight && p.retry_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.send(id);
        }
    }

    /// Per partition, the offset of its first letter not yet settled: offsets stop there.
    pub fn floors(&self) -> BTreeMap<SourcePartition, i64> {
        let mut floors = BTreeMap::new();
        for p in self.pending.values() {
            let key = p.letter.source;
            let floor = floors.entry(key).or_insert(p.letter.source_offset);
            *floor = (*floor).min(p.letter.source_offset);
        }
        floors
    }

    /// Partitions with a letter pending for longer than `BLOCKED_AFTER`.
    pub fn blocked(&self) -> BTreeSet<SourcePartition> {
        let now = Instant::now();
        self.pending
            .values()
            .filter(|p| now.saturating_duration_since(p.submitted) >= BLOCKED_AFTER)
            .map(|p| p.letter.source)
            .collect()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Payload bytes of the letters not settled yet.
    pub fn pending_bytes(&self) -> usize {
        self.pending.values().map(|p| p.letter.payload.len()).sum()
    }

    /// Lets go of the letters of partitions no longer ours: their new owner reads them again.
    pub fn forget(&mut self, partitions: &BTreeSet<SourcePartition>) {
        self.pending.retain(|_, p| !partitions.contains(&p.letter.source));
    }

    /// On shutdown: services until nothing is pending or `deadline`.
    pub fn settle(&mut self, deadline: Instant) {
        while !self.pending.is_empty() && Instant::now() < deadline {
            self.service();
            self.producer.poll(Duration::from_millis(50));
        }
        if !self.pending.is_empty() {
            warn!(
                pending = self.pending.len(),
                "dead letters not acknowledged by the stop deadline; their offsets stay uncommitted, so the next owner reads them again"
            );
        }
        self.producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    }

    fn send(&mut self, id: usize) {
        let Some(pending) = self.pending.get_mut(&id) else { return };
        let mut record = BaseRecord::with_opaque_to(&self.topic, id)
            .payload(&pending.letter.payload)
            .headers(pending.headers.clone());
        if let Some(key) = &pending.letter.key {
            record = record.key(key);
        }
        match self.producer.send(record) {
            Ok(()) => pending.in_flight = true,
            Err((e, _)) => {
                let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                self.failed(id, code, Instant::now());
            }
        }
    }

    fn failed(&mut self, id: usize, code: RDKafkaErrorCode, now: Instant) {
        match permanent_failure(code) {
            Some(reason) => {
                let Some(pending) = self.pending.remove(&id) else { return };
                self.metrics.dead_letter_failures.with_label_values(&[reason]).inc();
                let throttle =
                    self.failure_logs.entry(reason).or_insert(Throttle::new(FAILURE_LOG_EVERY));
                if let Some(held_back) = throttle.allow(now) {
                    let letter = &pending.letter;
                    warn!(
                        reason,
                        error = %code,
                        topic = %letter.source_topic,
                        partition = letter.source.partition,
                        offset = letter.source_offset,
                        dead_letter_topic = %self.topic,
                        held_back,
                        "dead letter refused for good; counted in cxpulse_dead_letter_failures_total and let go (the source message stays in its topic)"
                    );
                }
            }
            None => {
                let Some(pending) = self.pending.get_mut(&id) else { return };
                self.metrics.dead_letter_retries.inc();
                pending.in_flight = false;
                pending.retry_at = now + pending.backoff;
                pending.backoff = (pending.backoff * 2).min(MAX_BACKOFF);
                if code != RDKafkaErrorCode::QueueFull {
                    let what = format!("dead letter not acknowledged: {code}");
                    self.producer.context().log.connectivity(&what);
                }
            }
        }
    }
}

/// A dead letter as it is written: the `cxpulse-*` headers, and the payload cut (with
/// `cxpulse-truncated` and `cxpulse-original-sha256`) when the record would not fit `max_bytes`.
pub fn fit(mut letter: DeadLetter, max_bytes: usize) -> (DeadLetter, OwnedHeaders) {
    let headers = base_headers(&letter);
    let headers_len: usize = header_bytes(&letter);
    let key_len = letter.key.as_ref().map_or(0, Vec::len);
    match truncated_len(max_bytes, letter.payload.len(), key_len, headers_len) {
        None => (letter, headers),
        Some(keep) => {
            let original = letter.payload.len().to_string();
            let digest = hex(&openssl::sha::sha256(&letter.payload));
            letter.payload.truncate(keep);
            let headers = headers
                .insert(Header { key: "cxpulse-truncated", value: Some(original.as_str()) })
                .insert(Header { key: "cxpulse-original-sha256", value: Some(digest.as_str()) });
            (letter, headers)
        }
    }
}

fn base_headers(letter: &DeadLetter) -> OwnedHeaders {
    let partition = letter.source.partition.to_string();
    let offset = letter.source_offset.to_string();
    OwnedHeaders::new()
        .insert(Header { key: "cxpulse-error", value: Some(letter.reason) })
        .insert(Header { key: "cxpulse-error-detail", value: Some(letter.detail.as_str()) })
        .insert(Header { key: "cxpulse-source-topic", value: Some(letter.source_topic.as_str()) })
        .insert(Header { key: "cxpulse-source-partition", value: Some(partition.as_str()) })
        .insert(Header { key: "cxpulse-source-offset", value: Some(offset.as_str()) })
}

fn header_bytes(letter: &DeadLetter) -> usize {
    // Names and values of the five headers, with a little room for the numbers.
    100 + letter.reason.len() + letter.detail.len() + letter.source_topic.len() + 40
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The topic's `max.message.bytes`, when the broker answers DescribeConfigs within 3 s.
fn topic_max_bytes(config: &ClientConfig, topic: &str, log: &ClientLog) -> Option<usize> {
    let admin: AdminClient<QuietContext> =
        config.create_with_context(QuietContext(log.clone())).ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().ok()?;
    let timeout = Duration::from_secs(3);
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let resources = [ResourceSpecifier::Topic(topic)];
    let describe = admin.describe_configs(&resources, &options);
    let answer =
        runtime.block_on(async { tokio::time::timeout(timeout, describe).await }).ok()?.ok()?;
    let resource = answer.into_iter().next()?.ok()?;
    resource.get("max.message.bytes")?.value.as_deref()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_that_fit_are_kept_whole() {
        assert_eq!(truncated_len(1_000_000, 500, 10, 200), None);
        assert_eq!(truncated_len(1_000_000, 1_000_000 - 1234, 10, 200), None);
    }

    #[test]
    fn oversized_letters_are_cut_to_fit_with_their_headers() {
        let keep = truncated_len(1_000_000, 1_200_000, 10, 200).expect("truncated");
        assert!(keep + 10 + 200 + RECORD_OVERHEAD + 128 <= 1_000_000);
        assert!(keep > 990_000, "keeps nearly all that fits: {keep}");
        assert_eq!(truncated_len(100, 1_000, 10, 200), Some(0), "a tiny limit keeps nothing");
    }

    #[test]
    fn final_errors_are_told_from_transient_ones() {
        assert_eq!(permanent_failure(RDKafkaErrorCode::MessageSizeTooLarge), Some("too_large"));
        assert_eq!(
            permanent_failure(RDKafkaErrorCode::TopicAuthorizationFailed),
            Some("not_authorized")
        );
        assert_eq!(permanent_failure(RDKafkaErrorCode::UnknownTopic), Some("unknown_topic"));
        assert_eq!(permanent_failure(RDKafkaErrorCode::InvalidRecord), Some("invalid_record"));
        for transient in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            assert_eq!(permanent_failure(transient), None, "{transient:?}");
        }
    }
}
