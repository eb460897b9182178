//! Dead letters: each rejected message goes, unchanged, to the dead-letter topic with headers
//! saying why and where from. A batch's letters are flushed together, and the worker stores a
//! partition's offsets only up to its first letter not yet acknowledged, retrying with backoff.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cxpulse_core::health::Health;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};
use tracing::warn;

use crate::context::lock;
use crate::metrics::PipelineMetrics;

/// A rejected message, copied out of the consumer's buffer.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The rejection reason label (`invalid_json`, ...).
    pub reason: &'static str,
    pub detail: String,
}

struct DeliveryContext {
    /// Indices into the batch being flushed, with whether each was acknowledged.
    results: Mutex<Vec<(usize, bool)>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        lock(&self.results).push((index, result.is_ok()));
    }
}

pub struct DeadLetterProducer {
    producer: BaseProducer<DeliveryContext>,
    topic: String,
    metrics: PipelineMetrics,
    /// Retrying is the consume loop at work: it keeps `/healthz` alive meanwhile.
    health: Arc<Health>,
}

const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl DeadLetterProducer {
    pub fn new(
        config: &ClientConfig,
        topic: String,
        metrics: PipelineMetrics,
        health: Arc<Health>,
    ) -> anyhow::Result<Self> {
        let context = DeliveryContext { results: Mutex::new(Vec::new()) };
        let producer = config.create_with_context(context)?;
        Ok(DeadLetterProducer { producer, topic, metrics, health })
    }

    /// Delivers every letter, retrying failures with backoff until they are acknowledged or
    /// `stop` is set. Returns, per letter, whether it was acknowledged.
    pub fn deliver(&self, letters: &[DeadLetter], stop: &AtomicBool) -> Vec<bool> {
        let mut acked = vec![false; letters.len()];
        let mut backoff = Duration::from_millis(100);
        loop {
            lock(&self.producer.context().results).clear();
            for (index, letter) in letters.iter().enumerate().filter(|(i, _)| !acked[*i]) {
                self.enqueue(index, letter);
            }
            if let Err(e) = self.producer.flush(FLUSH_TIMEOUT) {
                warn!(error = %e, "dead-letter flush timed out");
            }
            for (index, ok) in lock(&self.producer.context().results).drain(..) {
                if ok {
                    if let Some(slot) = acked.get_mut(index) {
                        *slot = true;
                    }
                }
            }
            let missing = acked.iter().filter(|ok| !**ok).count();
            if missing == 0 {
                self.metrics.dead_letters.inc_by(letters.len() as u64);
                return acked;
            }
            self.metrics.dead_letter_retries.inc_by(missing as u64);
            if stop.load(Ordering::Relaxed) {
                let delivered = acked.iter().filter(|ok| **ok).count();
                self.metrics.dead_letters.inc_by(delivered as u64);
                return acked;
            }
            warn!(
                missing,
                backoff_ms = backoff.as_millis() as u64,
                "dead letters not acknowledged; retrying"
            );
            self.health.heartbeat(crate::worker::wall_ms());
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn enqueue(&self, index: usize, letter: &DeadLetter) {
        let partition = letter.source_partition.to_string();
        let offset = letter.source_offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "cxpulse-error", value: Some(letter.reason) })
            .insert(Header { key: "cxpulse-error-detail", value: Some(letter.detail.as_str()) })
            .insert(Header {
                key: "cxpulse-source-topic",
                value: Some(letter.source_topic.as_str()),
            })
            .insert(Header { key: "cxpulse-source-partition", value: Some(partition.as_str()) })
            .insert(Header { key: "cxpulse-source-offset", value: Some(offset.as_str()) });
        let mut record = BaseRecord::with_opaque_to(&self.topic, index)
            .payload(&letter.payload)
            .headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        let mut record = record;
        // A full local queue only needs the producer to make room; anything else is retried by
        // the caller's loop as an unacknowledged letter.
        for _ in 0..100 {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((e, returned)) => {
                    record = returned;
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ) {
                        warn!(error = %e, "dead letter not enqueued");
                        return;
                    }
                    self.producer.poll(Duration::from_millis(100));
                }
            }
        }
    }
}
