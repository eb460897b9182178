//! The compacted state topic: incremental partition checkpoints, each record keyed
//! `group/topic/partition/<record>` (the record names are `cxpulse_core::checkpoint`'s).
//!
//! Every record of one source partition goes to one state-topic partition (a hash of its prefix),
//! so a restore reads only the state partitions of what it restores, from their beginning to
//! their end (partition EOF), keeping the latest value of each key of the wanted prefixes. A
//! checkpoint is written in three acknowledged steps: segments, then manifests, then tombstones,
//! so the manifest a restore finds always names segments that are there. Records stay within
//! Kafka's default message size: the topic works at its default settings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cxpulse_core::CheckpointBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tracing::warn;

use crate::client_log::{ClientLog, QuietContext};
use crate::util::lock;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A restore gives up after this long without a record or an end of partition.
const READ_STALL: Duration = Duration::from_secs(10);

struct Acks(Mutex<Vec<bool>>, ClientLog);

impl ClientContext for Acks {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.1.log_line(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.1.client_error(&error, reason);
    }
}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        lock(&self.0).push(result.is_ok());
    }
}

/// The latest value of each record of a source partition, by its name below the prefix.
pub type PartitionRecords = Vec<(String, Vec<u8>)>;

pub struct StateStore {
    topic: String,
    producer: BaseProducer<Acks>,
    reader: BaseConsumer<QuietContext>,
    /// The state topic's partition count, once known.
    partitions: Option<i32>,
    /// Checkpoint rounds written so far, and the one to die in (see [`FAILPOINT`]).
    rounds: u64,
    abort_in_round: Option<u64>,
}

/// Fault injection for the end-to-end test of a crash in the middle of a checkpoint:
/// `CXPULSE_FAILPOINT=abort-mid-checkpoint:N` aborts the process in its Nth round of
/// checkpoints, after the segments are acknowledged and before any manifest is written.
pub const FAILPOINT: &str = "CXPULSE_FAILPOINT";

impl StateStore {
    /// `producer` and `consumer` carry the connection settings; the store adds its own.
    pub fn new(
        mut producer: ClientConfig,
        mut consumer: ClientConfig,
        topic: String,
        log: ClientLog,
    ) -> anyhow::Result<Self> {
        producer.set("compression.type", "lz4");
        let producer = producer.create_with_context(Acks(Mutex::new(Vec::new()), log.clone()))?;
        consumer
            .set("group.id", "cxpulse-state-reader")
            .set("enable.auto.commit", "false")
            // A restore waits for every partition's end: a fetch that finds nothing new should
            // answer at once rather than after the default half second.
            .set("fetch.wait.max.ms", "10")
            .set("fetch.message.max.bytes", "8388608")
            .set("enable.partition.eof", "true")
            .set("partition.assignment.strategy", "range")
            .set("statistics.interval.ms", "0");
        let reader = consumer.create_with_context(QuietContext(log))?;
        let abort_in_round = std::env::var(FAILPOINT)
            .ok()
            .and_then(|v| v.strip_prefix("abort-mid-checkpoint:")?.parse().ok());
        Ok(StateStore { topic, producer, reader, partitions: None, rounds: 0, abort_in_round })
    }

    /// The state partition holding every record of `prefix`.
    fn partition_of(prefix: &str, partitions: i32) -> i32 {
        (crc32fast::hash(prefix.as_bytes()) % partitions.max(1) as u32) as i32
    }

    /// Asked through the producer when writing, whose metadata requests let a broker that
    /// auto-creates topics create the state topic, and through the reader when reading, whose
    /// request also opens its connections before it fetches (a consumer's first fetch otherwise
    /// waits on its own metadata round). A topic just created may take a moment to show its
    /// partitions.
    fn partition_count(&mut self, wait: Duration, for_reading: bool) -> Result<i32, String> {
        let deadline = Instant::now() + wait;
        loop {
            let metadata = if for_reading {
                self.reader.fetch_metadata(Some(&self.topic), IO_TIMEOUT)
            } else {
                self.producer.client().fetch_metadata(Some(&self.topic), IO_TIMEOUT)
            };
            let metadata = metadata.map_err(|e| format!("metadata: {e}"))?;
            let count = metadata
                .topics()
                .iter()
                .find(|t| t.name() == self.topic && t.error().is_none())
                .map(|t| t.partitions().len() as i32)
                .filter(|n| *n > 0);
            if let Some(count) = count {
                self.partitions = Some(count);
                return Ok(count);
            }
            if Instant::now() >= deadline {
                return Err(format!("state topic {} not found", self.topic));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Writes each prefix's checkpoint: every segment, then every manifest, then every
    /// tombstone, each step acknowledged before the next, all before `deadline`. Returns the
    /// bytes written. On error nothing is known of what landed.
    pub fn save(
        &mut self,
        batches: &[(String, CheckpointBatch)],
        deadline: Instant,
    ) -> Result<u64, String> {
        let partitions = match self.partitions {
            Some(n) => n,
            None => self.partition_count(IO_TIMEOUT, false)?,
        };
        let mut bytes = 0u64;
        let mut segments = Vec::new();
        let mut manifests = Vec::new();
        let mut tombstones = Vec::new();
        for (prefix, batch) in batches {
            let partition = Self::partition_of(prefix, partitions);
            for (key, value) in &batch.records {
                let record = (partition, format!("{prefix}/{key}"), Some(value.as_slice()));
                bytes += value.len() as u64;
                match key {
                    cxpulse_core::checkpoint::RecordKey::Manifest => manifests.push(record),
                    _ => segments.push(record),
                }
            }
            for key in &batch.tombstones {
                tombstones.push((partition, format!("{prefix}/{key}"), None));
            }
        }
        self.rounds += 1;
        self.send_all(&segments, deadline)?;
        if self.abort_in_round == Some(self.rounds) {
            warn!(
                round = self.rounds,
                "failpoint: aborting between a checkpoint's segments and its manifests"
            );
            std::process::abort();
        }
        self.send_all(&manifests, deadline)?;
        self.send_all(&tombstones, deadline)?;
        Ok(bytes)
    }

    fn send_all(
        &self,
        records: &[(i32, String, Option<&[u8]>)],
        deadline: Instant,
    ) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        lock(&self.producer.context().0).clear();
        for (partition, key, value) in records {
            let mut record = BaseRecord::to(&self.topic).partition(*partition).key(key.as_str());
            if let Some(value) = value {
                record = record.payload(*value);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((
                        KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        r,
                    )) => {
                        if Instant::now() >= deadline {
                            return Err("checkpoint queue full at the deadline".into());
                        }
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(format!("checkpoint record not enqueued: {e}")),
                }
            }
        }
        let flushed = self.producer.flush(deadline.saturating_duration_since(Instant::now()));
        if let Err(e) = flushed {
            // Nothing may land later, after a newer checkpoint.
            self.producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            return Err(format!("checkpoint flush: {e}"));
        }
        let acks = lock(&self.producer.context().0);
        let failed =
            acks.iter().filter(|ok| !**ok).count() + records.len().saturating_sub(acks.len());
        if failed == 0 {
            Ok(())
        } else {
            Err(format!("{failed} of {} checkpoint records not acknowledged", records.len()))
        }
    }

    /// The records of each of `prefixes`, read from the beginning of their state partitions to
    /// their current end. Stops early, with an error, when `stop` is set or the read stalls.
    pub fn load(
        &mut self,
        prefixes: &[String],
        stop: &AtomicBool,
    ) -> Result<HashMap<String, PartitionRecords>, String> {
        let result = self.read(prefixes, stop);
        // Nothing is fetched in the background until the next restore.
        if let Err(e) = self.reader.unassign() {
            warn!(error = %e, "cannot unassign the state-topic reader");
        }
        result
    }

    fn read(
        &mut self,
        prefixes: &[String],
        stop: &AtomicBool,
    ) -> Result<HashMap<String, PartitionRecords>, String> {
        // A state topic that is not there (or only just created) holds no checkpoint yet: no
        // waiting for it, which would hold up the first assignment.
        let Ok(partitions) = self.partition_count(Duration::ZERO, true) else {
            return Ok(HashMap::new());
        };
        let wanted: HashSet<i32> =
            prefixes.iter().map(|p| Self::partition_of(p, partitions)).collect();
        let mut tpl = TopicPartitionList::new();
        for &p in &wanted {
            tpl.add_partition_offset(&self.topic, p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        self.reader.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
        let mut latest: HashMap<&str, BTreeMap<String, Vec<u8>>> =
            prefixes.iter().map(|p| (p.as_str(), BTreeMap::new())).collect();
        let mut at_end = HashSet::new();
        let mut last_progress = Instant::now();
        while at_end.len() < wanted.len() {
            if last_progress.elapsed() >= READ_STALL {
                return Err("timed out reading the state topic".into());
            }
            if stop.load(Ordering::Relaxed) {
                return Err("stopping".into());
            }
            match self.reader.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    last_progress = Instant::now();
                    let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                        continue;
                    };
                    // `group/topic/partition/record`: the prefix is all but the record's name,
                    // which itself has at most four fields.
                    let Some((prefix, record)) = split_key(key, &latest) else { continue };
                    let Some(records) = latest.get_mut(prefix) else { continue };
                    match message.payload() {
                        Some(value) => records.insert(record.to_string(), value.to_vec()),
                        None => records.remove(record),
                    };
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    last_progress = Instant::now();
                    at_end.insert(partition);
                }
                Some(Err(e)) => warn!(error = %e, "state topic read error"),
                None => {}
            }
        }
        Ok(latest
            .into_iter()
            .map(|(prefix, records)| (prefix.to_string(), records.into_iter().collect()))
            .collect())
    }
}

/// Splits a state key into a wanted prefix and the record name below it.
fn split_key<'k, V>(key: &'k str, wanted: &HashMap<&str, V>) -> Option<(&'k str, &'k str)> {
    // Record names have one field (`m`) or four (`d/bucket/seq/part`).
    for fields in [1, 4] {
        let mut cut = key.len();
        for _ in 0..fields {
            cut = key[..cut].rfind('/')?;
        }
        let (prefix, record) = (&key[..cut], &key[cut + 1..]);
        if wanted.contains_key(prefix) {
            return Some((prefix, record));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_their_prefix_and_record_whatever_the_topic_name() {
        let wanted: HashMap<&str, ()> = [("g/cx/events/3", ()), ("g/t/0", ())].into();
        assert_eq!(split_key("g/cx/events/3/m", &wanted), Some(("g/cx/events/3", "m")));
        assert_eq!(split_key("g/t/0/d/12/5/0", &wanted), Some(("g/t/0", "d/12/5/0")));
        assert_eq!(split_key("g/t/1/d/12/5/0", &wanted), None);
        assert_eq!(split_key("g/t/0", &wanted), None);
        assert_eq!(split_key("", &wanted), None);
    }

    #[test]
    fn one_prefix_always_lands_on_one_partition_in_range() {
        for n in [1, 3, 64] {
            let p = StateStore::partition_of("cxpulse/cx-events/7", n);
            assert!((0..n).contains(&p));
            assert_eq!(p, StateStore::partition_of("cxpulse/cx-events/7", n));
        }
    }
}
