//! The compacted state topic: partition checkpoints keyed `group/topic/partition`. Writes are
//! acknowledged before they count; reads tail the topic up to its high watermarks so that a
//! checkpoint written by the previous owner of a partition, just before it let go, is seen. The
//! topic is read once per assignment (`load_all`), from where the last read ended, until every
//! partition reports its end.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tracing::warn;

use crate::client_log::{self, QuietContext};
use crate::util::lock;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Acks(Mutex<Vec<bool>>);

impl ClientContext for Acks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        client_log::log_line(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        client_log::client_error(&error, reason);
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        lock(&self.0).push(result.is_ok());
    }
}

pub struct StateStore {
    topic: String,
    producer: BaseProducer<Acks>,
    reader: BaseConsumer<QuietContext>,
    latest: HashMap<String, Vec<u8>>,
    /// Next offset to read, per state-topic partition.
    positions: HashMap<i32, i64>,
}

impl StateStore {
    /// `producer` and `consumer` carry the connection settings; the store adds its own.
    pub fn new(
        mut producer: ClientConfig,
        mut consumer: ClientConfig,
        topic: String,
    ) -> anyhow::Result<Self> {
        producer.set("compression.type", "lz4").set("message.max.bytes", "67108864");
        let producer = producer.create_with_context(Acks(Mutex::new(Vec::new())))?;
        consumer
            .set("group.id", "cxpulse-state-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.message.max.bytes", "67108864")
            .set("enable.partition.eof", "true")
            .set("partition.assignment.strategy", "range")
            .set("statistics.interval.ms", "0");
        let reader = consumer.create_with_context(QuietContext)?;
        Ok(StateStore {
            topic,
            producer,
            reader,
            latest: HashMap::new(),
            positions: HashMap::new(),
        })
    }

    /// Writes every `(key, value)` and waits for all acknowledgements until `deadline`.
    pub fn save(&self, entries: Vec<(String, Vec<u8>)>, deadline: Instant) -> Result<(), String> {
        lock(&self.producer.context().0).clear();
        let count = entries.len();
        for (key, value) in &entries {
            let mut record = BaseRecord::to(&self.topic).key(key).payload(value);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        if Instant::now() >= deadline {
                            return Err("checkpoint queue full at the deadline".into());
                        }
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(format!("checkpoint not enqueued: {e}")),
                }
            }
        }
        let flushed = self.producer.flush(deadline.saturating_duration_since(Instant::now()));
        if let Err(e) = flushed {
            // Nothing may deliver them later under an older checkpoint's name.
            self.producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            return Err(format!("checkpoint flush: {e}"));
        }
        let acks = lock(&self.producer.context().0);
        let ok = acks.iter().filter(|ok| **ok).count();
        if ok == count {
            Ok(())
        } else {
            Err(format!("{} of {count} checkpoints not acknowledged", count - ok))
        }
    }

    /// The latest value of each of `keys` that has one, after reading the topic up to its
    /// current end once. Stops reading early when `stop` is set.
    pub fn load_all(&mut self, keys: &[String], stop: &AtomicBool) -> HashMap<String, Vec<u8>> {
        if let Err(e) = self.catch_up(stop) {
            warn!(topic = %self.topic, error = %e, "cannot read the state topic; partitions are rebuilt by replay");
        }
        keys.iter()
            .filter_map(|key| self.latest.get(key).map(|value| (key.clone(), value.clone())))
            .collect()
    }

    fn catch_up(&mut self, stop: &AtomicBool) -> Result<(), String> {
        let metadata = self
            .reader
            .fetch_metadata(Some(&self.topic), IO_TIMEOUT)
            .map_err(|e| format!("metadata: {e}"))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Ok(());
        }
        // Read every partition from where the last read stopped until librdkafka reports its end
        // (partition EOF): one pass, no request per partition.
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            let offset = self.positions.get(&p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            tpl.add_partition_offset(&self.topic, p, offset).map_err(|e| e.to_string())?;
        }
        self.reader.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
        let mut at_end = HashSet::new();
        let deadline = Instant::now() + IO_TIMEOUT;
        while at_end.len() < partitions.len() {
            if Instant::now() >= deadline {
                return Err("timed out reading the state topic".into());
            }
            if stop.load(Ordering::Relaxed) {
                return Err("stopping".into());
            }
            match self.reader.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    self.positions.insert(message.partition(), message.offset() + 1);
                    let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                        continue;
                    };
                    match message.payload() {
                        Some(value) => self.latest.insert(key.to_string(), value.to_vec()),
                        None => self.latest.remove(key),
                    };
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    at_end.insert(partition);
                }
                Some(Err(e)) => warn!(error = %e, "state topic read error"),
                None => {}
            }
        }
        // Nothing is fetched in the background until the next assignment.
        if let Err(e) = self.reader.unassign() {
            warn!(error = %e, "cannot unassign the state-topic reader");
        }
        Ok(())
    }
}
