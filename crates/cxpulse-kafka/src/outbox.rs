//! Records the consume loop writes on behalf of the messages it reads (dead letters, detractor
//! feed messages), whose source offsets wait until the broker acknowledged them. Sending never
//! blocks the loop: records are queued here, delivery reports are collected as the loop goes
//! round, and the loop stores a partition's offsets only up to its first record still pending
//! (`floors`). A record the topic refuses for good is counted and let go; anything else is
//! retried with backoff, and a partition whose record waits too long shows as blocked. An outbox
//! ordered by key sends one record of a key at a time, so that a retry never lands after a later
//! record of its key (a compacted topic then keeps the latest).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use tracing::warn;

use crate::client_log::{ClientLog, Throttle};
use crate::metrics::PipelineMetrics;
use crate::partitions::SourcePartition;
use crate::util::lock;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A partition whose oldest pending record is older than this counts as blocked.
pub const BLOCKED_AFTER: Duration = Duration::from_secs(5);
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// A record written for one source message.
pub trait Outgoing {
    fn source(&self) -> SourcePartition;
    fn source_offset(&self) -> i64;
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> &[u8];
    fn headers(&self) -> Option<&OwnedHeaders>;
    /// The broker acknowledged it.
    fn delivered(&self, metrics: &PipelineMetrics);
    /// An attempt failed; it is sent again after a backoff.
    fn retried(&self, metrics: &PipelineMetrics);
    /// The topic refused it for good (`reason`, see [`permanent_failure`]); it is let go.
    fn refused(&self, metrics: &PipelineMetrics, reason: &'static str);
}

/// Why a produce error is final (a `reason` label); `None` for transient errors, which are
/// retried.
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
    /// Record ids with their delivery outcome, collected by `poll`.
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
    record: Box<dyn Outgoing>,
    submitted: Instant,
    /// Sent and awaiting its report.
    in_flight: bool,
    retry_at: Instant,
    backoff: Duration,
}

/// A producer to one topic and the records it has not settled yet. Owned by the consume loop.
pub struct Outbox {
    /// What the logs call its records ("dead letter").
    what: &'static str,
    producer: BaseProducer<DeliveryContext>,
    topic: String,
    metrics: PipelineMetrics,
    pending: BTreeMap<usize, Pending>,
    /// When ordered by key: the pending ids of each key, oldest first (only the oldest is sent).
    by_key: Option<HashMap<Vec<u8>, VecDeque<usize>>>,
    next_id: usize,
    failure_logs: HashMap<&'static str, Throttle>,
}

impl Outbox {
    /// A producer made from `config` (a delivery timeout of 30 s unless it sets one) for records
    /// the logs call `what`.
    pub fn new(
        what: &'static str,
        config: &ClientConfig,
        topic: String,
        metrics: PipelineMetrics,
        log: ClientLog,
    ) -> anyhow::Result<Self> {
        let mut config = config.clone();
        if config.get("message.timeout.ms").is_none() {
            // A report within half a minute, so an unreachable topic is retried and shown.
            config.set("message.timeout.ms", "30000");
        }
        let context = DeliveryContext { results: Mutex::new(Vec::new()), log };
        let producer = config.create_with_context(context)?;
        Ok(Outbox {
            what,
            producer,
            topic,
            metrics,
            pending: BTreeMap::new(),
            by_key: None,
            next_id: 0,
            failure_logs: HashMap::new(),
        })
    }

    /// Sends the records of one key one at a time, in the order submitted.
    pub fn ordered_by_key(mut self) -> Self {
        self.by_key = Some(HashMap::new());
        self
    }

    /// Whether `id` may be sent now: it is not waiting behind an older record of its key.
    fn may_send(&self, id: usize) -> bool {
        let Some(by_key) = &self.by_key else { return true };
        let Some(key) = self.pending.get(&id).and_then(|p| p.record.key()) else { return true };
        by_key.get(key).and_then(VecDeque::front).is_none_or(|oldest| *oldest == id)
    }

    /// `record` (`id`) is settled: the next record of its key may go (`service` sends it).
    fn release(&mut self, id: usize, record: &dyn Outgoing) {
        let (Some(by_key), Some(key)) = (self.by_key.as_mut(), record.key()) else { return };
        let Some(queue) = by_key.get_mut(key) else { return };
        queue.retain(|queued| *queued != id);
        if queue.is_empty() {
            by_key.remove(key);
        }
    }

    /// Queues records and sends them; returns at once.
    pub fn submit(&mut self, records: impl IntoIterator<Item = Box<dyn Outgoing>>) {
        let now = Instant::now();
        for record in records {
            let id = self.next_id;
            self.next_id += 1;
            if let (Some(by_key), Some(key)) = (self.by_key.as_mut(), record.key()) {
                by_key.entry(key.to_vec()).or_default().push_back(id);
            }
            let pending = Pending {
                record,
                submitted: now,
                in_flight: false,
                retry_at: now,
                backoff: FIRST_BACKOFF,
            };
            self.pending.insert(id, pending);
            if self.may_send(id) {
                self.send(id);
            }
        }
    }

    /// Collects delivery reports and resends records whose backoff is over. Never blocks.
    pub fn service(&mut self) {
        self.producer.poll(Duration::ZERO);
        let results: Vec<_> = lock(&self.producer.context().results).drain(..).collect();
        let now = Instant::now();
        for (id, outcome) in results {
            match outcome {
                Ok(()) => {
                    if let Some(done) = self.pending.remove(&id) {
                        done.record.delivered(&self.metrics);
                        self.release(id, &*done.record);
                    }
                }
                Err(code) => self.failed(id, code, now),
            }
        }
        let due: Vec<usize> = self
            .pending
            .iter()
            .filter(|(id, p)| !p.in_flight && p.retry_at <= now && self.may_send(**id))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.send(id);
        }
    }

    /// Per partition, the offset of its first record not yet settled: offsets stop there.
    pub fn floors(&self) -> BTreeMap<SourcePartition, i64> {
        let mut floors = BTreeMap::new();
        for p in self.pending.values() {
            let offset = p.record.source_offset();
            let floor = floors.entry(p.record.source()).or_insert(offset);
            *floor = (*floor).min(offset);
        }
        floors
    }

    /// Partitions with a record pending for longer than `BLOCKED_AFTER`.
    pub fn blocked(&self) -> BTreeSet<SourcePartition> {
        let now = Instant::now();
        self.pending
            .values()
            .filter(|p| now.saturating_duration_since(p.submitted) >= BLOCKED_AFTER)
            .map(|p| p.record.source())
            .collect()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Payload bytes of the records not settled yet.
    pub fn pending_bytes(&self) -> usize {
        self.pending.values().map(|p| p.record.payload().len()).sum()
    }

    /// Lets go of the records of partitions no longer ours: their new owner reads them again.
    pub fn forget(&mut self, partitions: &BTreeSet<SourcePartition>) {
        self.pending.retain(|_, p| !partitions.contains(&p.record.source()));
        if let Some(by_key) = self.by_key.as_mut() {
            let pending = &self.pending;
            by_key.values_mut().for_each(|queue| queue.retain(|id| pending.contains_key(id)));
            by_key.retain(|_, queue| !queue.is_empty());
        }
    }

    /// On shutdown: services until nothing is pending or `deadline`, then drops what is left.
    pub fn settle(&mut self, deadline: Instant) {
        while !self.pending.is_empty() && Instant::now() < deadline {
            self.service();
            self.producer.poll(Duration::from_millis(50));
        }
        if !self.pending.is_empty() {
            warn!(
                pending = self.pending.len(),
                topic = %self.topic,
                "{}s not acknowledged by the stop deadline; their offsets stay uncommitted, so the next owner reads them again",
                self.what
            );
        }
        self.producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    }

    fn send(&mut self, id: usize) {
        let Some(pending) = self.pending.get_mut(&id) else { return };
        let record = &pending.record;
        let mut out = BaseRecord::with_opaque_to(&self.topic, id).payload(record.payload());
        if let Some(headers) = record.headers() {
            out = out.headers(headers.clone());
        }
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        match self.producer.send(out) {
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
                let record = &pending.record;
                record.refused(&self.metrics, reason);
                self.release(id, &**record);
                let throttle =
                    self.failure_logs.entry(reason).or_insert(Throttle::new(FAILURE_LOG_EVERY));
                if let Some(held_back) = throttle.allow(now) {
                    warn!(
                        reason,
                        error = %code,
                        partition = record.source().partition,
                        offset = record.source_offset(),
                        topic = %self.topic,
                        held_back,
                        "{} refused for good; counted and let go (the source message stays in its topic)",
                        self.what
                    );
                }
            }
            None => {
                let Some(pending) = self.pending.get_mut(&id) else { return };
                pending.record.retried(&self.metrics);
                pending.in_flight = false;
                pending.retry_at = now + pending.backoff;
                pending.backoff = (pending.backoff * 2).min(MAX_BACKOFF);
                if code != RDKafkaErrorCode::QueueFull {
                    let what = format!("{} not acknowledged: {code}", self.what);
                    self.producer.context().log.connectivity(&what);
                }
            }
        }
    }
}

/// The floors of several outboxes: per partition, the lowest.
pub fn merged_floors<'a>(
    outboxes: impl IntoIterator<Item = &'a Outbox>,
) -> BTreeMap<SourcePartition, i64> {
    let mut merged = BTreeMap::new();
    for outbox in outboxes {
        for (source, floor) in outbox.floors() {
            let lowest = merged.entry(source).or_insert(floor);
            *lowest = (*lowest).min(floor);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::Message;

    struct Keyed(&'static str, &'static str);

    impl Outgoing for Keyed {
        fn source(&self) -> SourcePartition {
            SourcePartition { topic: 0, partition: 0 }
        }
        fn source_offset(&self) -> i64 {
            0
        }
        fn key(&self) -> Option<&[u8]> {
            Some(self.0.as_bytes())
        }
        fn payload(&self) -> &[u8] {
            self.1.as_bytes()
        }
        fn headers(&self) -> Option<&OwnedHeaders> {
            None
        }
        fn delivered(&self, _: &PipelineMetrics) {}
        fn retried(&self, _: &PipelineMetrics) {}
        fn refused(&self, _: &PipelineMetrics, _: &'static str) {}
    }

    #[test]
    fn an_outbox_ordered_by_key_sends_one_record_of_a_key_at_a_time_in_order() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("ordered", 1, 1).expect("topic");
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", cluster.bootstrap_servers());
        let metrics = PipelineMetrics::new();
        let mut outbox =
            Outbox::new("record", &config, "ordered".into(), metrics, ClientLog::default())
                .expect("producer")
                .ordered_by_key();
        let records = [("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "a3"), ("b", "b2")];
        outbox.submit(records.map(|(k, v)| Box::new(Keyed(k, v)) as Box<dyn Outgoing>));
        let in_flight: Vec<usize> =
            outbox.pending.iter().filter(|(_, p)| p.in_flight).map(|(id, _)| *id).collect();
        assert_eq!(in_flight, [0, 1], "the oldest of each key only");
        outbox.settle(Instant::now() + Duration::from_secs(20));
        assert_eq!(outbox.pending(), 0, "all delivered");

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "reader")
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset("ordered", 0, rdkafka::Offset::Beginning).expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let mut read = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while read.len() < records.len() && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                read.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string());
            }
        }
        let of =
            |key: char| read.iter().filter(|v| v.starts_with(key)).cloned().collect::<Vec<_>>();
        assert_eq!(of('a'), ["a1", "a2", "a3"]);
        assert_eq!(of('b'), ["b1", "b2"]);
    }

    #[test]
    fn an_unordered_outbox_sends_everything_at_once() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", cluster.bootstrap_servers());
        let metrics = PipelineMetrics::new();
        let mut outbox =
            Outbox::new("record", &config, "any".into(), metrics, ClientLog::default())
                .expect("producer");
        outbox.submit(
            [("a", "a1"), ("a", "a2")].map(|(k, v)| Box::new(Keyed(k, v)) as Box<dyn Outgoing>),
        );
        assert!(outbox.pending.values().all(|p| p.in_flight));
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
