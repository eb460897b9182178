//! `cxpulse bench`: one embedded broker, N preloaded synthetic events written as producers write
//! them (`synth::realistic_message`), and on the same data (a) the bare librdkafka consume rate
//! (the ceiling), (b) cxpulse's full pipeline rate in this process and (b') in the `cxpulse run`
//! binary as a separate process. It reports figures; it asserts nothing.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use cxpulse_core::health::Health;
use cxpulse_core::synth::{
    fetch_runs_of, realistic_message, with_retries, Synth, SynthConfig, SynthMessage,
};
use cxpulse_core::{Engine, SharedEngine};
use cxpulse_kafka::produce::{self, Preload};
use cxpulse_kafka::Worker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};

use super::cpu::{process_seconds, PhaseCpu};
use crate::config::Config;
use crate::settings::Settings;

const TOPIC: &str = "bench";

pub fn run(events: u64, partitions: i32) -> anyhow::Result<()> {
    // The embedded broker keeps about 5 MiB or 100k messages per partition and deletes older ones.
    let per_partition = events / partitions.max(1) as u64;
    // ~209 bytes an event and the log's own overhead: 3M events over 128 partitions (23.4k a
    // partition) lost 4 % of them, so 250 bytes against 95 % of 5 MiB; `preload` checks.
    if per_partition * 250 > 5 * 1024 * 1024 * 95 / 100 || per_partition > 90_000 {
        anyhow::bail!(
            "{events} events over {partitions} partitions exceed what the embedded broker keeps per partition (~5 MiB, 100k messages): use at least {} partitions",
            (events * 250 / (5 * 1024 * 1024 * 95 / 100)).max(events / 90_000) + 1
        );
    }
    // First, while the process is small, so the memory figure is the engine's alone.
    let scrape = scrape_at_pairs(10_000)?;
    println!(
        "/metrics at 10k brand/segment pairs x 4 windows: snapshot (engine lock held) {:.2} ms, render {:.2} ms, {} KiB of text; engine memory +{} MiB",
        scrape.snapshot.as_secs_f64() * 1000.0,
        scrape.render.as_secs_f64() * 1000.0,
        scrape.bytes / 1024,
        scrape.engine_rss_kib / 1024
    );

    print_scrape_memory()?;

    let spread = core_alone(events, Partitioning::Spread, Mix::Compact)?;
    let keyed = core_alone(events, Partitioning::Keyed, Mix::Compact)?;
    let gateway = core_alone(events, Partitioning::Spread, Mix::Gateway)?;
    println!(
        "(c) core alone (parse + validate + dedup + windows, one thread): compact events {:.0} events/s with pairs spread over partitions, {:.0} events/s keyed by pair; the rounds' messages (gateway mix, as producers write them) {:.0} events/s spread",
        events as f64 / spread.as_secs_f64(),
        events as f64 / keyed.as_secs_f64(),
        events as f64 / gateway.as_secs_f64()
    );

    // Short rounds mislead: a round of 1M events lasts a second or two, in which the embedded
    // broker's thread, the allocator's first growth and the machine's other work weigh as much as
    // the pipeline itself (docs/performance.md). So: ROUNDS rounds of several seconds each, each on
    // a fresh broker with the same data, drain and cxpulse taking turns to go first, each timed
    // from its first to its last message inside this process, and the CPU of the threads each one
    // started (not the broker's) per million events.
    const ROUNDS: usize = 5;
    let (mut ratios, mut drain_cpu, mut pipeline_cpu, mut binaries) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ceilings, mut pipelines, mut binary_cpu_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut drain_running_cpu, mut pipeline_running_cpu) = (Vec::new(), Vec::new());
    let per_million = |cpu: f64| cpu / (events as f64 / 1e6);
    for round in 1..=ROUNDS {
        let cluster =
            MockCluster::new(1).map_err(|e| anyhow!("cannot start the embedded broker: {e}"))?;
        cluster.create_topic(TOPIC, partitions, 1).map_err(|e| anyhow!("create topic: {e}"))?;
        cluster
            .create_topic(&Config::default().source.state_topic, partitions, 1)
            .map_err(|e| anyhow!("create state topic: {e}"))?;
        let brokers = cluster.bootstrap_servers();
        let (bytes, took) = preload(&brokers, events, partitions)?;
        println!(
            "round {round}: preloaded {events} events ({:.0} bytes each) into {partitions} partitions in {:.2} s",
            bytes as f64 / events as f64,
            took.as_secs_f64()
        );
        let drain_first = round % 2 == 1;
        let mut drain = None;
        if drain_first {
            drain = Some(drain_in_own_process(&brokers, events, partitions)?);
        }
        let pipeline = full_pipeline(&brokers, events)?;
        let drain = match drain {
            Some(drain) => drain,
            None => drain_in_own_process(&brokers, events, partitions)?,
        };
        let (drain_took, drain_seconds) = (drain.took, drain.cpu_seconds);
        let ceiling = events as f64 / drain_took.as_secs_f64();
        let rate = events as f64 / pipeline.took.as_secs_f64();
        println!(
            "round {round} ({} first): (a) bare librdkafka consume {ceiling:.0} events/s, {:.2} CPU-s per million; (b) cxpulse full pipeline {rate:.0} events/s, {:.2} CPU-s per million; (b)/(a) {:.2}; {} partition checkpoints written; /metrics render after the run {:.2} ms",
            if drain_first { "drain" } else { "cxpulse" },
            per_million(drain_seconds),
            per_million(pipeline.cpu_seconds),
            rate / ceiling,
            pipeline.checkpoints,
            pipeline.render.as_secs_f64() * 1000.0
        );
        println!(
            "round {round}: CPU-s per million by thread: (a) {}; (b) {}; of it before the first message: (a) {:.2}, (b) {:.2}",
            per_thread(&drain.threads, events),
            per_thread(&pipeline.threads, events),
            per_million(drain.startup_seconds),
            per_million(pipeline.startup_seconds)
        );
        let (binary_took, binary_seconds) = binary_pipeline(&brokers, events)?;
        let binary = events as f64 / binary_took.as_secs_f64();
        println!(
            "round {round}: (b') the cxpulse binary as its own process {binary:.0} events/s, (b')/(a) {:.2}; {:.2} CPU-s per million, {:.2} x the drain's",
            binary / ceiling,
            per_million(binary_seconds),
            binary_seconds / drain_seconds
        );
        ratios.push(rate / ceiling);
        drain_cpu.push(per_million(drain_seconds));
        pipeline_cpu.push(per_million(pipeline.cpu_seconds));
        drain_running_cpu.push(per_million(drain.cpu_seconds - drain.startup_seconds));
        pipeline_running_cpu.push(per_million(pipeline.cpu_seconds - pipeline.startup_seconds));
        ceilings.push(ceiling);
        pipelines.push(rate);
        binaries.push(binary / ceiling);
        binary_cpu_ratios.push(binary_seconds / drain_seconds);
    }
    let cpu_ratios: Vec<f64> = pipeline_cpu.iter().zip(&drain_cpu).map(|(p, d)| p / d).collect();
    println!("over {ROUNDS} rounds of {events} events, median [range]:");
    println!("  (a) bare librdkafka consume: {} events/s", median_range(&ceilings, 0));
    println!("  (b) cxpulse full pipeline:   {} events/s", median_range(&pipelines, 0));
    println!("  throughput (b)/(a):          {}", median_range(&ratios, 2));
    println!("  CPU-s per million, drain:    {}", median_range(&drain_cpu, 2));
    println!("  CPU-s per million, cxpulse:  {}", median_range(&pipeline_cpu, 2));
    println!("  CPU per event, cxpulse/drain: {}", median_range(&cpu_ratios, 2));
    // Starting (a group join, the state topic asked for checkpoints) is paid once, not per event.
    let running_ratios: Vec<f64> =
        pipeline_running_cpu.iter().zip(&drain_running_cpu).map(|(p, d)| p / d).collect();
    println!(
        "  from the first message to the last: CPU-s per million, drain {}, cxpulse {}; cxpulse/drain {}",
        median_range(&drain_running_cpu, 2),
        median_range(&pipeline_running_cpu, 2),
        median_range(&running_ratios, 2)
    );
    println!(
        "  (b') `cxpulse run` process / (a): {} (from no event to every event in its /metrics); CPU per event {} x the drain's (the whole process: starting, and answering the scrapes every 20 ms, included)",
        median_range(&binaries, 2),
        median_range(&binary_cpu_ratios, 2)
    );

    let (p50, p99, rate) = freshness(partitions, 100_000, Duration::from_secs(10))?;
    println!("freshness at a steady {rate:.0} events/s: event age when counted p50 {p50} ms, p99 {p99} ms");
    let (restore, ready) = restore_from_checkpoints(partitions, events.min(200_000))?;
    println!(
        "restore of {partitions} partitions from checkpoints (state topic at {partitions} partitions, read once): {:.0} ms; assignment to ready {:.0} ms",
        restore.as_secs_f64() * 1000.0,
        ready.as_secs_f64() * 1000.0
    );
    println!(
        "peak RSS of this process (embedded broker with every preloaded event included): {} MiB",
        peak_rss_kib().unwrap_or(0) / 1024
    );
    // Last: its engine would otherwise be the peak above.
    let state = state_memory(10_000_000)?;
    println!(
        "state memory at {} events, each with a distinct event_id and response_id: {:.1} bytes per remembered id, {:.1} per correctable answer (every table slot counted); RSS +{:.1} bytes per event; longest single event while the tables grew: {:.0} ms at event {}",
        state.events,
        state.bytes_per_id,
        state.bytes_per_answer,
        state.rss_per_event,
        state.longest.as_secs_f64() * 1000.0,
        state.longest_at
    );
    println!(
        "revoke with {} ids and answers over 8 partitions: one partition {:.1} ms; the other 7 at once {:.1} ms",
        state.events,
        state.drop_one.as_secs_f64() * 1000.0,
        state.drop_rest.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// `median [lowest–highest]`, with `decimals` decimals.
fn median_range(values: &[f64], decimals: usize) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |i: usize| sorted.get(i).copied().unwrap_or(0.0);
    format!(
        "{:.*} [{:.*}–{:.*}]",
        decimals,
        at(sorted.len() / 2),
        decimals,
        at(0),
        decimals,
        at(sorted.len().saturating_sub(1))
    )
}

struct ScrapeFigures {
    snapshot: Duration,
    render: Duration,
    bytes: usize,
    engine_rss_kib: u64,
}

/// An engine with `pairs` brand/segment pairs spread over 64 partitions, each with answers in
/// every step of the 30-day window, then one scrape's snapshot and render timed.
fn scrape_at_pairs(pairs: usize) -> anyhow::Result<ScrapeFigures> {
    let before = current_rss_kib().unwrap_or(0);
    let settings = Config::default().compile()?;
    let now = cxpulse_kafka::util::wall_ms();
    let mut engine = engine_with_pairs(&settings, pairs, now)?;
    let engine_rss_kib = current_rss_kib().unwrap_or(0).saturating_sub(before);
    let started = Instant::now();
    let snapshot = engine.snapshot(now);
    let snapshot_time = started.elapsed();
    let started = Instant::now();
    let text = cxpulse_http::render::render_metrics(&snapshot, &settings.alerts, None, "bench");
    Ok(ScrapeFigures {
        snapshot: snapshot_time,
        render: started.elapsed(),
        bytes: text.len(),
        engine_rss_kib,
    })
}

/// An engine with `pairs` brand/segment pairs spread over 64 partitions, each with answers in
/// every step of the 30-day window.
fn engine_with_pairs(settings: &Settings, pairs: usize, now: i64) -> anyhow::Result<Engine> {
    let mut engine_config = settings.engine.clone();
    engine_config.max_series = pairs;
    let mut engine = Engine::new(engine_config).map_err(|e| anyhow!(e))?;
    let step = 12 * 3_600_000; // the 30-day window's step: one answer in each of its 60 panes
    for i in 0..pairs * 60 {
        let pair = i % pairs;
        let at = now - ((i / pairs) as i64) * step;
        let payload = format!(
            r#"{{"event_id":"x{i}","type":"survey_response","occurred_at":{at},"brand":"brand{}","segment":"seg{}","survey":"nps","score":{}}}"#,
            pair / 100,
            pair % 100,
            i % 11
        );
        engine.process(
            cxpulse_core::SourcePartition { topic: 0, partition: (pair % 64) as i32 },
            payload.as_bytes(),
            now,
        );
    }
    Ok(engine)
}

/// Runs a worker while producing at `rate` events/s (stamped when produced) for `duration`;
/// returns the p50 and p99 event age when counted, and the rate reached.
fn freshness(partitions: i32, rate: u64, duration: Duration) -> anyhow::Result<(u64, u64, f64)> {
    const FRESH: &str = "fresh";
    let cluster =
        MockCluster::new(1).map_err(|e| anyhow!("cannot start the embedded broker: {e}"))?;
    cluster.create_topic(FRESH, partitions, 1).map_err(|e| anyhow!("create topic: {e}"))?;
    let brokers = cluster.bootstrap_servers();
    let brokers = brokers.as_str();
    let BenchWorker { settings, engine, worker, stop, thread } =
        start_worker(brokers, "bench-fresh", FRESH)?;
    // Let the group form before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !worker.health.is_ready(cxpulse_kafka::util::wall_ms()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let producer_config = cxpulse_kafka::config::producer_config(&settings.kafka);
    let options = cxpulse_kafka::produce::ProduceOptions {
        topic: FRESH.into(),
        rate,
        count: Some(rate * duration.as_secs()),
        synth: SynthConfig { run_id: "fresh".into(), dip_brand: None, ..SynthConfig::default() },
    };
    let started = Instant::now();
    let produced = cxpulse_kafka::produce::produce_synthetic(
        &producer_config,
        &options,
        &AtomicBool::new(false),
    )?;
    let reached = produced as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.pipeline().consumed < produced && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let snapshot = engine.snapshot(cxpulse_kafka::util::wall_ms());
    let quantiles = snapshot.event_age_quantiles_ms;
    stop.store(true, Ordering::Relaxed);
    thread.join().map_err(|_| anyhow!("worker thread panicked"))??;
    let at = |q: f64| quantiles.iter().find(|(x, _)| *x == q).map_or(0, |(_, ms)| *ms);
    Ok((at(0.5), at(0.99), reached))
}

fn current_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One message in this many is a producer's retry: the same message again, in its partition.
const DUPLICATE_EVERY: u64 = 100;

/// Writes `events` realistic messages round-robin over the topic's partitions, stamped over the
/// last 10 minutes: the mix the gateway forwards (answers with a `response_id` and a
/// `customer_id`, some of them corrections, lifecycle events), RFC 3339 times with offsets, a few
/// fields the schema ignores, and one message in [`DUPLICATE_EVERY`] sent twice.
fn preload(brokers: &str, events: u64, partitions: i32) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut synth = Synth::new(SynthConfig {
        run_id: "bench".into(),
        dip_brand: None,
        gateway_shape: true,
        ..SynthConfig::default()
    });
    let end_ms = cxpulse_kafka::util::wall_ms();
    let plan = Preload {
        brokers,
        topic: TOPIC,
        events,
        partitions: Some(partitions),
        flush_limit: Duration::from_secs(120),
    };
    // Message i goes to partition i % partitions, the lanes of the retries.
    let message_of = with_retries(partitions.max(1) as usize, DUPLICATE_EVERY, |i| {
        realistic_message(&mut synth, produce::spread_over_ten_minutes(end_ms, i, events))
    });
    let bytes = produce::preload(&plan, message_of)?;
    let took = started.elapsed();
    // The embedded broker deletes a partition's oldest messages past its size limit: a round
    // must read every event it wrote.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-watermarks")
        .create()?;
    let mut kept = 0i64;
    for partition in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(TOPIC, partition, Duration::from_secs(10))?;
        kept += high - low;
    }
    anyhow::ensure!(
        kept as u64 == events,
        "the embedded broker kept {kept} of the {events} events (about 5 MiB per partition): use more partitions"
    );
    Ok((bytes, took))
}

struct StateFigures {
    events: u64,
    bytes_per_id: f64,
    bytes_per_answer: f64,
    rss_per_event: f64,
    longest: Duration,
    longest_at: u64,
    /// Dropping one of the 8 partitions, then the other 7 at once.
    drop_one: Duration,
    drop_rest: Duration,
}

/// Memory per remembered event id and correctable answer at `events` answers (the engine's own
/// accounting and the process's RSS), and the longest single `process` call on the way (a
/// bucket's table doubles in one step).
fn state_memory(events: u64) -> anyhow::Result<StateFigures> {
    let now = cxpulse_kafka::util::wall_ms();
    let before = current_rss_kib().unwrap_or(0);
    let mut engine = Engine::new(Config::default().engine_config()?).map_err(|e| anyhow!(e))?;
    let (mut longest, mut longest_at) = (Duration::ZERO, 0);
    let mut payload = String::with_capacity(192);
    for i in 0..events {
        payload.clear();
        use std::fmt::Write as _;
        let _ = write!(
            payload,
            r#"{{"event_id":"d{i}","type":"survey_response","occurred_at":{now},"brand":"b","segment":"s","survey":"nps","score":9,"response_id":"r{i}"}}"#
        );
        let source = cxpulse_core::SourcePartition { topic: 0, partition: (i % 8) as i32 };
        let started = Instant::now();
        engine.process(source, payload.as_bytes(), now);
        if started.elapsed() > longest {
            (longest, longest_at) = (started.elapsed(), i);
        }
    }
    let grown_kib = current_rss_kib().unwrap_or(0).saturating_sub(before);
    let stats = engine.state_stats();
    let source = |partition| cxpulse_core::SourcePartition { topic: 0, partition };
    let started = Instant::now();
    engine.drop_partition(source(0));
    let drop_one = started.elapsed();
    let rest: Vec<_> = (1..8).map(source).collect();
    let started = Instant::now();
    engine.drop_partitions(&rest);
    let drop_rest = started.elapsed();
    Ok(StateFigures {
        events,
        bytes_per_id: stats.bytes[0] as f64 / stats.entries[0].max(1) as f64,
        bytes_per_answer: stats.bytes[1] as f64 / stats.entries[1].max(1) as f64,
        rss_per_event: grown_kib as f64 * 1024.0 / events as f64,
        longest,
        longest_at,
        drop_one,
        drop_rest,
    })
}

/// How the core-alone run assigns events to partitions.
#[derive(Clone, Copy)]
enum Partitioning {
    /// Round robin, as the preload does: every partition sees every brand/segment pair.
    Spread,
    /// By key (`brand/segment`), as docs/events.md asks producers to: a pair lives in one partition.
    Keyed,
}

/// Which messages the core-alone run takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// The plain synthetic events, compact (epoch-millisecond times, no extra fields).
    Compact,
    /// The rounds' messages: the gateway's mix as producers write them, one in
    /// [`DUPLICATE_EVERY`] sent twice.
    Gateway,
}

/// The engine alone on one thread, fed as the worker feeds it: runs of up to 500 messages of one
/// partition (a fetch's worth), each run's payloads back to back in one buffer as in a fetch
/// response. The dedup memory grows to `events` ids during the run.
fn core_alone(events: u64, partitioning: Partitioning, mix: Mix) -> anyhow::Result<Duration> {
    const PARTITIONS: u64 = 64;
    const RUN: usize = 500;
    let mut synth = Synth::new(SynthConfig {
        run_id: "core".into(),
        dip_brand: None,
        gateway_shape: mix == Mix::Gateway,
        ..SynthConfig::default()
    });
    let base = cxpulse_kafka::util::wall_ms();
    let keyed =
        std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
    let time_of = |i: u64| base - 600_000 + (i as i64 * 600_000 / events.max(1) as i64);
    let message_of: Box<dyn FnMut(u64) -> SynthMessage + '_> = match mix {
        Mix::Compact => Box::new(|i| synth.next_message(time_of(i))),
        // As in `preload`: a retry repeats message i - PARTITIONS, which went to the same
        // partition (spread), or the same pair's (keyed).
        Mix::Gateway => Box::new(with_retries(PARTITIONS as usize, DUPLICATE_EVERY, |i| {
            realistic_message(&mut synth, time_of(i))
        })),
    };
    let runs =
        fetch_runs_of(
            events,
            PARTITIONS as usize,
            RUN,
            message_of,
            |i, message| match partitioning {
                Partitioning::Spread => (i % PARTITIONS) as usize,
                Partitioning::Keyed => (keyed.hash_one(&message.key) % PARTITIONS) as usize,
            },
        );
    let runs: Vec<(i32, Vec<&[u8]>)> =
        runs.iter().map(|run| (run.partition, run.payloads())).collect();
    let mut engine = Engine::new(Config::default().engine_config()?).map_err(|e| anyhow!(e))?;
    let started = Instant::now();
    for (partition, payloads) in &runs {
        let partition = cxpulse_core::SourcePartition { topic: 0, partition: *partition };
        engine.process_batch(partition, payloads, base, |_, outcome| {
            std::hint::black_box(outcome);
        });
    }
    let took = started.elapsed();
    let pipeline = engine.pipeline();
    anyhow::ensure!(
        pipeline.counted + pipeline.duplicates == events,
        "the core counted {} of {events} events and found {} duplicates",
        pipeline.counted,
        pipeline.duplicates
    );
    Ok(took)
}

/// The drain: every message read and its bytes touched, nothing else. Its time from the first to
/// the last message, and the CPU seconds of the threads it started.
fn bare_consume(brokers: &str, events: u64, partitions: i32) -> anyhow::Result<Drain> {
    let cpu = PhaseCpu::start();
    let mut config = cxpulse_kafka::config::consumer_config(&Default::default());
    config.set("bootstrap.servers", brokers).set("group.id", "bench-ceiling");
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut seen = 0u64;
    let mut bytes = 0usize;
    let mut started = None;
    let mut startup_seconds = 0.0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < events && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(|| {
                startup_seconds = cpu.seconds();
                Instant::now()
            });
            bytes += message.payload().map_or(0, <[u8]>::len);
            seen += 1;
        }
    }
    std::hint::black_box(bytes);
    let took = started.map_or(Duration::ZERO, |s| s.elapsed());
    anyhow::ensure!(seen >= events, "the drain read {seen} of {events} events in 600 s");
    Ok(Drain { took, cpu_seconds: cpu.seconds(), startup_seconds, threads: cpu.by_thread() })
}

/// `cxpulse bench-drain`: [`bare_consume`], its figures as one JSON line on stdout.
pub fn drain_process(brokers: &str, events: u64, partitions: i32) -> anyhow::Result<()> {
    let drain = bare_consume(brokers, events, partitions)?;
    println!("{}", serde_json::to_string(&drain)?);
    Ok(())
}

/// The drain in a process of its own: the bench process fixes glibc's mmap threshold as the
/// worker does (`memory_limit.rs`), which made the drain's broker thread about 0.2 CPU-s per
/// million dearer and cxpulse's no dearer (docs/performance.md); a bare consumer runs without it.
fn drain_in_own_process(brokers: &str, events: u64, partitions: i32) -> anyhow::Result<Drain> {
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["bench-drain", "--brokers", brokers])
        .args(["--events", &events.to_string(), "--partitions", &partitions.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    // The drain gives up after 600 s by itself; this bounds the wait if it hangs.
    let deadline = Instant::now() + Duration::from_secs(660);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the drain process did not finish in 660 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out)?;
    }
    anyhow::ensure!(status.success(), "the drain process failed: {status}");
    Ok(serde_json::from_str(out.trim())?)
}

/// What one run of the drain took.
#[derive(serde::Serialize, serde::Deserialize)]
struct Drain {
    took: Duration,
    cpu_seconds: f64,
    /// The part of `cpu_seconds` before the first message.
    startup_seconds: f64,
    /// `cpu_seconds` by thread name.
    threads: Vec<(String, f64)>,
}

/// `name 0.88, ...`: each thread's CPU seconds per million events.
fn per_thread(threads: &[(String, f64)], events: u64) -> String {
    let list: Vec<String> = threads
        .iter()
        .map(|(name, seconds)| format!("{name} {:.2}", seconds / (events as f64 / 1e6)))
        .collect();
    list.join(", ")
}

struct BenchWorker {
    settings: Settings,
    engine: SharedEngine,
    worker: Worker,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

/// How often the pipeline of a round checkpoints: a round lasts a few seconds, so at the default
/// 10 s it would end before its first checkpoint.
const ROUND_CHECKPOINT_INTERVAL: &str = "1s";

/// The real worker on its own thread, default settings, no dead-letter topic.
fn start_worker(brokers: &str, group: &str, topic: &str) -> anyhow::Result<BenchWorker> {
    start_worker_with(brokers, group, topic, |_| Ok(()))
}

/// [`start_worker`], with `adjust` changing the configuration first.
fn start_worker_with(
    brokers: &str,
    group: &str,
    topic: &str,
    adjust: impl FnOnce(&mut Config) -> anyhow::Result<()>,
) -> anyhow::Result<BenchWorker> {
    let mut config = Config::default();
    config.set_kafka("bootstrap.servers", brokers);
    config.set_kafka("group.id", group);
    config.source.topics = vec![topic.into()];
    config.source.dead_letter_topic = Some(String::new());
    adjust(&mut config)?;
    let settings = config.compile()?;
    let worker = Worker::new(Engine::new(settings.engine.clone()).map_err(|e| anyhow!(e))?);
    let engine = worker.engine.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (worker, stop, kafka, source, feed) = (
            worker.clone(),
            stop.clone(),
            settings.kafka.clone(),
            settings.source.clone(),
            settings.feed.clone(),
        );
        std::thread::Builder::new()
            .name("consume loop".into())
            .spawn(move || cxpulse_kafka::run_worker(&worker, &kafka, &source, &feed, &stop))?
    };
    Ok(BenchWorker { settings, engine, worker, stop, thread })
}

/// What one run of the full pipeline took.
struct PipelineRun {
    /// From the first event consumed to the last.
    took: Duration,
    /// CPU of the threads the worker started (its consume loop, librdkafka's) and of this one.
    cpu_seconds: f64,
    /// The part of `cpu_seconds` before the first event: the worker's start, joining the group,
    /// asking the state topic for checkpoints.
    startup_seconds: f64,
    /// One `/metrics` render afterwards.
    render: Duration,
    /// `cpu_seconds` by thread name.
    threads: Vec<(String, f64)>,
    /// Partition checkpoints the state topic acknowledged while the events were counted.
    checkpoints: u64,
}

fn full_pipeline(brokers: &str, events: u64) -> anyhow::Result<PipelineRun> {
    let cpu = PhaseCpu::start();
    let BenchWorker { settings, engine, worker, stop, thread } =
        start_worker_with(brokers, "bench-pipeline", TOPIC, |config| {
            config.source.checkpoint_interval = ROUND_CHECKPOINT_INTERVAL.parse()?;
            Ok(())
        })?;
    let consumed = || engine.pipeline().consumed;
    let deadline = Instant::now() + Duration::from_secs(600);
    while consumed() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = Instant::now();
    let startup_seconds = cpu.seconds();
    while consumed() < events && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = started.elapsed();
    anyhow::ensure!(consumed() >= events, "the pipeline consumed {} of {events}", consumed());
    let cpu_seconds = cpu.seconds();
    let threads = cpu.by_thread();
    let render_started = Instant::now();
    let snapshot = engine.snapshot(cxpulse_kafka::util::wall_ms());
    let text = cxpulse_http::render::render_metrics(
        &snapshot,
        &settings.alerts,
        Some(&worker.metrics.registry),
        "bench",
    );
    let render = render_started.elapsed();
    std::hint::black_box(text.len());
    let checkpoints = worker.metrics.checkpoints.get();
    stop.store(true, Ordering::Relaxed);
    thread.join().map_err(|_| anyhow!("worker thread panicked"))??;
    Ok(PipelineRun { took, cpu_seconds, startup_seconds, render, threads, checkpoints })
}

/// Prints [`scrape_memory`] at 10k pairs x 4 windows, 64 scrapers.
pub fn print_scrape_memory() -> anyhow::Result<()> {
    let scrapes = scrape_memory(10_000, 64, 2)?;
    println!(
        "/metrics, {} concurrent scrapers x 2 (half with gzip) at 10k pairs x 4 windows while counting goes on: RSS +{} MiB at the peak; {} KiB of text, {} KiB gzipped; {} events counted meanwhile; {:.1} s in all",
        scrapes.scrapers,
        scrapes.added_rss_kib / 1024,
        scrapes.text_bytes / 1024,
        scrapes.gzip_bytes / 1024,
        scrapes.counted_during,
        scrapes.took.as_secs_f64()
    );
    Ok(())
}

/// What 64 scrapers at once cost: see [`scrape_memory`].
pub struct ScrapeMemory {
    pub scrapers: usize,
    pub text_bytes: u64,
    pub gzip_bytes: u64,
    pub added_rss_kib: u64,
    pub counted_during: u64,
    pub took: Duration,
}

/// `scrapers` concurrent scrapes of `/metrics` (`rounds` each, every other one asking for gzip
/// as Prometheus does) through the real HTTP edge, from an engine of `pairs` pairs into which
/// another thread keeps counting 20k events/s; returns the peak RSS they add over the RSS
/// before the first scrape, sampled every 5 ms.
pub fn scrape_memory(pairs: usize, scrapers: usize, rounds: usize) -> anyhow::Result<ScrapeMemory> {
    use std::io::{Read, Write};
    let settings = Config::default().compile()?;
    let now = cxpulse_kafka::util::wall_ms();
    let engine = SharedEngine::new(engine_with_pairs(&settings, pairs, now)?);
    let state = Arc::new(cxpulse_http::HttpState::new(
        engine.clone(),
        Arc::new(Health::default()),
        None,
        settings.alerts.clone(),
        "bench",
    ));
    let listener = cxpulse_http::listener::bind("127.0.0.1:0")?;
    let addr = cxpulse_http::listener::local_addr(&listener)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let server_stop = stop.clone();
    let http_settings = settings.http.clone();
    let server = runtime.spawn(async move {
        let shutdown = async move {
            while !server_stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        cxpulse_http::serve(&http_settings, listener, state, shutdown).await
    });
    let counter = {
        let (engine, stop) = (engine.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut counted = 0u64;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * 20_000.0) as u64;
                if counted >= due {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                let at = cxpulse_kafka::util::wall_ms();
                engine.with(|engine| {
                    for i in counted..counted + 200 {
                        let pair = i as usize % pairs;
                        let payload = format!(
                            r#"{{"event_id":"live{i}","type":"survey_response","occurred_at":{at},"brand":"brand{}","segment":"seg{}","survey":"nps","score":{}}}"#,
                            pair / 100,
                            pair % 100,
                            i % 11
                        );
                        let partition = cxpulse_core::SourcePartition {
                            topic: 0,
                            partition: (pair % 64) as i32,
                        };
                        engine.process(partition, payload.as_bytes(), at);
                    }
                });
                counted += 200;
            }
            counted
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let baseline = current_rss_kib().unwrap_or(0);
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(current_rss_kib().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let counted_before = engine.pipeline().consumed;
    let started = Instant::now();
    let clients: Vec<_> = (0..scrapers)
        .map(|i| {
            std::thread::spawn(move || -> std::io::Result<u64> {
                let mut body = 0;
                for _ in 0..rounds {
                    let mut stream = std::net::TcpStream::connect(addr)?;
                    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
                    let gzip = if i % 2 == 0 { "Accept-Encoding: gzip\r\n" } else { "" };
                    write!(
                        stream,
                        "GET /metrics HTTP/1.1\r\nHost: bench\r\n{gzip}Connection: close\r\n\r\n"
                    )?;
                    let (mut buf, mut total, mut head) = (vec![0u8; 64 * 1024], 0u64, None);
                    loop {
                        let n = stream.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        if head.is_none() {
                            head =
                                buf[..n].windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
                        }
                        total += n as u64;
                    }
                    body = total - head.unwrap_or(0) as u64;
                }
                Ok(body)
            })
        })
        .collect();
    let (mut text_bytes, mut gzip_bytes) = (0, 0);
    for (i, client) in clients.into_iter().enumerate() {
        let body = client.join().map_err(|_| anyhow!("scraper panicked"))??;
        if i % 2 == 0 {
            gzip_bytes = body;
        } else {
            text_bytes = body;
        }
    }
    let took = started.elapsed();
    let counted_during = engine.pipeline().consumed.saturating_sub(counted_before);
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().map_err(|_| anyhow!("sampler panicked"))?;
    counter.join().map_err(|_| anyhow!("counter panicked"))?;
    runtime.block_on(server).map_err(|e| anyhow!("server task: {e}"))??;
    Ok(ScrapeMemory {
        scrapers,
        text_bytes,
        gzip_bytes,
        added_rss_kib: peak.saturating_sub(baseline),
        counted_during,
        took,
    })
}

/// The `cxpulse run` binary (this executable) as a separate process on the preloaded topic, as
/// an operator runs it: from the last poll of its `/metrics` that shows no event consumed to the
/// first that shows them all, polled every 20 ms. So the time is never under one poll, and the
/// rate never above what was seen. The child is killed when done or after 10 minutes.
/// (b′): `cxpulse run` in its own process, timed from the last scrape showing no event to the
/// first showing every one; and the CPU seconds the whole process had spent by then (starting
/// and answering the scrapes included).
fn binary_pipeline(brokers: &str, events: u64) -> anyhow::Result<(Duration, f64)> {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["--log-level", "error", "run", "--brokers", brokers, "--group", "bench-binary"])
        .args(["--topic", TOPIC, "--listen", &listen.to_string()])
        .env("CXPULSE_SOURCE__DEAD_LETTER_TOPIC", "")
        .env("CXPULSE_SOURCE__CHECKPOINT_INTERVAL", ROUND_CHECKPOINT_INTERVAL)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut none_seen_at = Instant::now();
    let mut took = None;
    while took.is_none() && Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("the cxpulse binary exited early: {status}");
        }
        let polled_at = Instant::now();
        // A scrape that fails or times out under load says nothing: only an answer of zero
        // moves the start.
        match consumed_in_metrics(listen) {
            Some(0) => none_seen_at = polled_at,
            Some(consumed) if consumed >= events => {
                took = Some((none_seen_at.elapsed(), process_seconds(child.id()).unwrap_or(0.0)))
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    took.ok_or_else(|| anyhow!("the cxpulse binary did not consume {events} events in time"))
}

/// `cxpulse_events_consumed_total` summed over topics, from one plain HTTP/1.0 scrape.
fn consumed_in_metrics(addr: std::net::SocketAddr) -> Option<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let total = text
        .lines()
        .filter(|line| line.starts_with("cxpulse_events_consumed_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(total as u64)
}

/// A worker counts `events` over `partitions` and stops (checkpointing every partition); a second
/// worker of the group then takes them all. Returns the second worker's restore (the loop's own
/// measure: state topic read, checkpoints decoded, seeks) and its time from start to ready.
fn restore_from_checkpoints(partitions: i32, events: u64) -> anyhow::Result<(Duration, Duration)> {
    let cluster =
        MockCluster::new(1).map_err(|e| anyhow!("cannot start the embedded broker: {e}"))?;
    cluster.create_topic(TOPIC, partitions, 1).map_err(|e| anyhow!("create topic: {e}"))?;
    let state_topic = Config::default().source.state_topic;
    cluster
        .create_topic(&state_topic, partitions, 1)
        .map_err(|e| anyhow!("create state topic: {e}"))?;
    let brokers = cluster.bootstrap_servers();
    preload(&brokers, events, partitions)?;
    let first = start_worker(&brokers, "bench-restore", TOPIC)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while first.engine.pipeline().consumed < events {
        if Instant::now() >= deadline {
            anyhow::bail!("the first worker did not count the preloaded events in time");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    first.stop.store(true, Ordering::Relaxed);
    first.thread.join().map_err(|_| anyhow!("worker thread panicked"))??;

    let started = Instant::now();
    let second = start_worker(&brokers, "bench-restore", TOPIC)?;
    let health = second.worker.health.clone();
    let restored = &second.worker.metrics.restore_seconds;
    while !(health.assigned() == partitions as usize
        && health.restoring() == 0
        && restored.get_sample_count() > 0)
    {
        if Instant::now() >= deadline {
            anyhow::bail!("the second worker did not restore in time");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready = started.elapsed();
    let restore = Duration::from_secs_f64(restored.get_sample_sum());
    second.stop.store(true, Ordering::Relaxed);
    second.thread.join().map_err(|_| anyhow!("worker thread panicked"))??;
    Ok((restore, ready))
}

/// Peak resident set size of this process, from /proc (Linux).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
