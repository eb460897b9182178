//! Would a second thread speed the pipeline up? An experiment behind a README figure: on one
//! embedded broker with 1M preloaded events over 64 partitions, it consumes them three ways, three
//! rounds each, and prints the rate:
//!
//! - `bare`: poll only (the ceiling);
//! - `one`: poll and count on one thread, as the worker does (partition runs, `process_batch`);
//! - `two`: a poll thread copies each batch into one buffer and hands it to a counting thread.
//!
//! `cargo run --release --example poll_split -- bare|one|two`

use std::sync::mpsc;
use std::time::{Duration, Instant};

use cxpulse_core::synth::SynthConfig;
use cxpulse_core::{Engine, EngineConfig, SourcePartition};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};

const EVENTS: u64 = 1_000_000;
const PARTITIONS: i32 = 64;
const BATCH: usize = 500;
const NOW: i64 = 1_795_428_000_000;

/// A polled batch copied out of librdkafka's buffers: `(partition, start, end)` per message.
struct CopiedBatch {
    buffer: Vec<u8>,
    messages: Vec<(i32, usize, usize)>,
}

fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "one".into());
    let cluster = MockCluster::new(1)?;
    cluster.create_topic("t", PARTITIONS, 1)?;
    let brokers = cluster.bootstrap_servers();
    let synth = SynthConfig { dip_brand: None, ..SynthConfig::default() };
    cxpulse_kafka::produce::preload_synthetic(&brokers, "t", EVENTS, PARTITIONS, synth, NOW)?;
    for round in 1..=3 {
        let consumer = consumer(&brokers)?;
        let started = match mode.as_str() {
            "bare" => bare(&consumer),
            "two" => two_threads(&consumer)?,
            _ => one_thread(&consumer)?,
        };
        let rate = EVENTS as f64 / started.elapsed().as_secs_f64();
        println!("{mode} round {round}: {:.2} M events/s", rate / 1e6);
    }
    Ok(())
}

fn consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    let mut config = cxpulse_kafka::config::consumer_config(&Default::default());
    config.set("bootstrap.servers", brokers).set("group.id", "poll-split");
    let consumer: BaseConsumer = config.create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset("t", partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// Polls everything; returns when the first message arrived.
fn bare(consumer: &BaseConsumer) -> Instant {
    let mut started = None;
    let mut seen = 0;
    while seen < EVENTS {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            std::hint::black_box(message.payload().map_or(0, <[u8]>::len));
            seen += 1;
        }
    }
    started.unwrap_or_else(Instant::now)
}

/// Counts `messages` (consecutive runs of one partition) in `engine`.
fn count<'a>(engine: &mut Engine, messages: impl Iterator<Item = (i32, &'a [u8])>) {
    let mut run: Vec<&[u8]> = Vec::new();
    let mut run_partition = None;
    for (partition, payload) in messages {
        if run_partition.is_some_and(|p| p != partition) {
            flush(engine, run_partition, &mut run);
        }
        run_partition = Some(partition);
        run.push(payload);
    }
    flush(engine, run_partition, &mut run);
}

fn flush(engine: &mut Engine, partition: Option<i32>, run: &mut Vec<&[u8]>) {
    if let Some(partition) = partition {
        engine.process_batch(SourcePartition { topic: 0, partition }, run, NOW, |_, outcome| {
            std::hint::black_box(outcome);
        });
    }
    run.clear();
}

fn one_thread(consumer: &BaseConsumer) -> anyhow::Result<Instant> {
    let mut engine = Engine::new(EngineConfig::default()).map_err(anyhow::Error::msg)?;
    let mut started = None;
    let mut seen = 0;
    while seen < EVENTS {
        let mut batch = Vec::new();
        let mut timeout = Duration::from_millis(100);
        while batch.len() < BATCH {
            match consumer.poll(timeout) {
                Some(Ok(message)) => batch.push(message),
                _ => break,
            }
            timeout = Duration::ZERO;
        }
        if batch.is_empty() {
            continue;
        }
        started.get_or_insert_with(Instant::now);
        count(&mut engine, batch.iter().map(|m| (m.partition(), m.payload().unwrap_or_default())));
        seen += batch.len() as u64;
    }
    Ok(started.unwrap_or_else(Instant::now))
}

fn two_threads(consumer: &BaseConsumer) -> anyhow::Result<Instant> {
    let (sender, receiver) = mpsc::sync_channel::<CopiedBatch>(4);
    let mut engine = Engine::new(EngineConfig::default()).map_err(anyhow::Error::msg)?;
    let counter = std::thread::spawn(move || {
        while let Ok(batch) = receiver.recv() {
            count(&mut engine, batch.messages.iter().map(|&(p, a, b)| (p, &batch.buffer[a..b])));
        }
    });
    let mut started = None;
    let mut seen = 0;
    while seen < EVENTS {
        let mut batch = CopiedBatch {
            buffer: Vec::with_capacity(BATCH * 160),
            messages: Vec::with_capacity(BATCH),
        };
        let mut timeout = Duration::from_millis(100);
        while batch.messages.len() < BATCH {
            match consumer.poll(timeout) {
                Some(Ok(message)) => {
                    let start = batch.buffer.len();
                    batch.buffer.extend_from_slice(message.payload().unwrap_or_default());
                    batch.messages.push((message.partition(), start, batch.buffer.len()));
                }
                _ => break,
            }
            timeout = Duration::ZERO;
        }
        if batch.messages.is_empty() {
            continue;
        }
        started.get_or_insert_with(Instant::now);
        seen += batch.messages.len() as u64;
        sender.send(batch)?;
    }
    drop(sender);
    counter.join().map_err(|_| anyhow::anyhow!("counting thread panicked"))?;
    Ok(started.unwrap_or_else(Instant::now))
}
