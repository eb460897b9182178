//! `cxpulse produce`: synthetic schema-1 events to any Kafka, at a steady rate, keyed by
//! `brand/segment` as docs/events.md recommends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cxpulse_core::synth::{Synth, SynthConfig, SynthMessage};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use tracing::info;

#[derive(Clone, Debug)]
pub struct ProduceOptions {
    pub topic: String,
    /// Events per second; 0 = as fast as the broker takes them.
    pub rate: u64,
    /// Stop after this many events; `None` = until stopped.
    pub count: Option<u64>,
    pub synth: SynthConfig,
}

/// Produces until `count` is reached or `stop` is set; returns how many were acknowledged.
pub fn produce_synthetic(
    config: &ClientConfig,
    options: &ProduceOptions,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let producer: BaseProducer =
        config.create().map_err(|e| anyhow::anyhow!("cannot create the producer: {e}"))?;
    let mut synth = Synth::new(options.synth.clone());
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut last_report = Instant::now();
    while options.count.is_none_or(|limit| sent < limit) && !stop.load(Ordering::Relaxed) {
        if options.rate > 0 {
            let due = (started.elapsed().as_secs_f64() * options.rate as f64) as u64;
            if sent >= due {
                producer.poll(Duration::from_millis(1));
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        }
        let message = synth.next_message(crate::util::wall_ms());
        let record = BaseRecord::to(&options.topic).key(&message.key).payload(&message.payload);
        send_when_room(&producer, record, Duration::from_millis(50), None)
            .map_err(|e| anyhow::anyhow!("produce failed: {e}"))?;
        sent += 1;
        // Serving delivery reports per message costs a clock read each; every 256 is plenty.
        if sent.is_multiple_of(256) {
            producer.poll(Duration::ZERO);
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            info!(sent, "producing");
            last_report = Instant::now();
        }
    }
    producer.flush(Duration::from_secs(30)).map_err(|e| anyhow::anyhow!("flush failed: {e}"))?;
    Ok(sent)
}

/// A batch of events to write as fast as the broker takes them (benchmarks, the demo's history).
#[derive(Clone, Debug)]
pub struct Preload<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub events: u64,
    /// `Some(n)`: round robin over partitions `0..n`; `None`: the partitioner places by key.
    pub partitions: Option<i32>,
    /// How long the final flush may take.
    pub flush_limit: Duration,
}

/// How long one message may wait for room in a full local queue before the preload fails.
const QUEUE_FULL_LIMIT: Duration = Duration::from_secs(60);

/// Writes `plan.events` messages, the `i`-th from `message(i)`, and waits for every
/// acknowledgement. Returns the payload bytes written.
pub fn preload(
    plan: &Preload<'_>,
    mut message: impl FnMut(u64) -> SynthMessage,
) -> anyhow::Result<u64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", plan.brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .map_err(|e| anyhow::anyhow!("cannot create the producer: {e}"))?;
    let mut bytes = 0u64;
    for i in 0..plan.events {
        let message = message(i);
        bytes += message.payload.len() as u64;
        let mut record = BaseRecord::to(plan.topic).key(&message.key).payload(&message.payload);
        if let Some(partitions) = plan.partitions {
            record = record.partition((i % partitions.max(1) as u64) as i32);
        }
        let deadline = Instant::now() + QUEUE_FULL_LIMIT;
        send_when_room(&producer, record, Duration::from_millis(10), Some(deadline))
            .map_err(|e| anyhow::anyhow!("preload failed: {e}"))?;
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(plan.flush_limit).map_err(|e| anyhow::anyhow!("flush failed: {e}"))?;
    Ok(bytes)
}

/// [`preload`] of `events` plain synthetic events round robin over `partitions`, their times
/// spread over the ten minutes before `end_ms` so that every window sees traffic.
pub fn preload_synthetic(
    brokers: &str,
    topic: &str,
    events: u64,
    partitions: i32,
    synth: SynthConfig,
    end_ms: i64,
) -> anyhow::Result<u64> {
    let plan = Preload {
        brokers,
        topic,
        events,
        partitions: Some(partitions),
        flush_limit: Duration::from_secs(120),
    };
    let mut synth = Synth::new(synth);
    preload(&plan, |i| synth.next_message(spread_over_ten_minutes(end_ms, i, events)))
}

/// The time of the `i`-th of `events` spread evenly over the ten minutes before `end_ms`.
pub fn spread_over_ten_minutes(end_ms: i64, i: u64, events: u64) -> i64 {
    end_ms - 600_000 + (i as i64 * 600_000 / events.max(1) as i64)
}

/// Sends `record`, serving delivery reports for `wait` whenever the local queue is full, and
/// giving up with the queue-full error once `deadline` (if any) has passed.
fn send_when_room(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, String, String>,
    wait: Duration,
    deadline: Option<Instant>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned))
                if deadline.is_none_or(|d| Instant::now() < d) =>
            {
                record = returned;
                producer.poll(wait);
            }
            Err((e, _)) => return Err(e),
        }
    }
}
