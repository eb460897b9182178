//! Core benchmarks: parse + validate alone, the whole per-event path (parse, validate, dedup,
//! every window) message by message and in partition runs as the worker calls it, on a fresh
//! engine and in a long-running worker's steady state, and the snapshot a scrape takes at 10k
//! brand/segment pairs.
//! `cargo bench -p cxpulse-core`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use cxpulse_core::parse::{parse_event, parse_event_reference};
use cxpulse_core::synth::{
    fetch_runs, fetch_runs_of, realistic_message, with_retries, FetchRun, Synth, SynthConfig,
};
use cxpulse_core::{Engine, EngineConfig, SourcePartition};

const NOW: i64 = 1_795_428_000_000;

fn payloads(count: usize) -> Vec<String> {
    let mut synth = Synth::new(SynthConfig { dip_brand: None, ..SynthConfig::default() });
    (0..count).map(|i| synth.next_message(NOW - 600_000 + i as i64).payload).collect()
}

/// The same events as [`payloads`], written as producers write them (RFC 3339 times with
/// offsets, fields the schema ignores).
fn realistic_payloads(count: usize) -> Vec<String> {
    let mut synth = Synth::new(SynthConfig { dip_brand: None, ..SynthConfig::default() });
    (0..count).map(|i| realistic_message(&mut synth, NOW - 600_000 + i as i64).payload).collect()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, events) in [("compact", payloads(10_000)), ("realistic", realistic_payloads(10_000))]
    {
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function(format!("parse_event x10k, {name}"), |b| {
            b.iter(|| {
                for payload in &events {
                    std::hint::black_box(parse_event(payload.as_bytes()).is_ok());
                }
            })
        });
        group.bench_function(format!("reference path x10k, {name}"), |b| {
            b.iter(|| {
                for payload in &events {
                    std::hint::black_box(parse_event_reference(payload.as_bytes()).is_ok());
                }
            })
        });
    }
    group.finish();
}

fn process(c: &mut Criterion) {
    let events = payloads(100_000);
    let mut group = c.benchmark_group("process");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("engine.process x100k (4 windows, dedup)", |b| {
        b.iter_batched_ref(
            || Engine::new(EngineConfig::default()).unwrap(),
            |engine| {
                for (i, payload) in events.iter().enumerate() {
                    let partition = SourcePartition { topic: 0, partition: (i % 64) as i32 };
                    std::hint::black_box(engine.process(partition, payload.as_bytes(), NOW));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Runs of up to 500 messages of one partition, as the worker hands them over: `keyed` puts each
/// brand/segment pair in one partition (as producers keying by pair do), otherwise every
/// partition sees every pair.
fn runs(count: u64, keyed: bool) -> Vec<FetchRun> {
    runs_of("synth", count, keyed, |i| NOW - 600_000 + i as i64)
}

/// [`runs`] of the synthetic run `run_id`, the i-th message stamped `time_of(i)`.
fn runs_of(run_id: &str, count: u64, keyed: bool, time_of: impl Fn(u64) -> i64) -> Vec<FetchRun> {
    const RUN: u64 = 500;
    let mut synth = Synth::new(SynthConfig {
        run_id: run_id.into(),
        dip_brand: None,
        ..SynthConfig::default()
    });
    fetch_runs(&mut synth, count, 64, RUN as usize, time_of, |i, message| {
        if keyed {
            (xxhash_rust::xxh3::xxh3_64(message.key.as_bytes()) % 64) as usize
        } else {
            ((i / RUN) % 64) as usize
        }
    })
}

/// The messages of `cxpulse bench`'s rounds: the gateway's mix (answers with a `response_id`
/// and a `customer_id`, some corrections, lifecycle events) as producers write them, one in a
/// hundred a producer's retry of the partition's message before; in runs of 500, the pairs spread
/// over 64 partitions.
fn gateway_runs(count: u64) -> Vec<FetchRun> {
    const PARTITIONS: u64 = 64;
    let mut synth = Synth::new(SynthConfig {
        run_id: "gateway".into(),
        dip_brand: None,
        gateway_shape: true,
        ..SynthConfig::default()
    });
    let message_of = with_retries(PARTITIONS as usize, 100, |i| {
        realistic_message(&mut synth, NOW - 600_000 + i as i64)
    });
    fetch_runs_of(count, PARTITIONS as usize, 500, message_of, |i, _| (i % PARTITIONS) as usize)
}

/// The per-event path as the worker calls it, over partition runs.
fn process_batch(c: &mut Criterion) {
    const EVENTS: usize = 100_000;
    let mut group = c.benchmark_group("process");
    group.throughput(Throughput::Elements(EVENTS as u64));
    let variants = [
        ("pairs spread over partitions", runs(EVENTS as u64, false)),
        ("keyed by pair", runs(EVENTS as u64, true)),
        ("the bench's gateway mix as producers write it", gateway_runs(EVENTS as u64)),
    ];
    for (name, runs) in variants {
        let runs: Vec<TimedRun> =
            runs.iter().map(|run| (run.partition, run.payloads(), NOW)).collect();
        group.bench_function(format!("engine.process_batch x100k in runs of 500, {name}"), |b| {
            b.iter_batched_ref(
                || Engine::new(EngineConfig::default()).unwrap(),
                |engine| count_runs(engine, &runs),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// The per-event path in a long-running worker's steady state: events arrive at 10 per
/// millisecond of event and wall time, the dedup horizon is one minute, so the dedup memory holds
/// about 600k ids and every new id expires an old one. The engine is warmed with two horizons of
/// traffic (not timed), then takes the next 100k events, keyed by pair.
fn process_batch_steady(c: &mut Criterion) {
    const PER_MS: u64 = 10;
    const HORIZON_MS: i64 = 60_000;
    const WARM: u64 = 2 * HORIZON_MS as u64 * PER_MS;
    const EVENTS: u64 = 100_000;
    let start = NOW - 3_600_000;
    let time_of = move |i: u64| start + (i / PER_MS) as i64;
    let warm = runs_of("warm", WARM, true, time_of);
    let measured = runs_of("steady", EVENTS, true, |i| time_of(WARM + i));
    let warm = with_wall_time(&warm, 0, time_of);
    let measured = with_wall_time(&measured, WARM, time_of);
    let config = EngineConfig { dedup_horizon_ms: HORIZON_MS, ..EngineConfig::default() };
    let mut check = Engine::new(config.clone()).unwrap();
    count_runs(&mut check, &warm);
    let remembered = check.snapshot(time_of(WARM)).state.entries[0] as usize;
    // A horizon's worth of ids, and up to an eighth more (buckets leave whole).
    assert!(
        (590_000..=680_000).contains(&remembered),
        "the warm engine remembers {remembered} ids, not 600k to 675k"
    );
    let mut group = c.benchmark_group("process");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);
    group.bench_function(
        "engine.process_batch x100k, steady state (600k ids remembered, one expiring per event)",
        |b| {
            b.iter_batched_ref(
                || {
                    let mut engine = Engine::new(config.clone()).unwrap();
                    count_runs(&mut engine, &warm);
                    engine
                },
                |engine| count_runs(engine, &measured),
                BatchSize::LargeInput,
            )
        },
    );
    group.finish();
}

/// A partition run's partition, payloads, and the wall time it is handed over at.
type TimedRun<'a> = (i32, Vec<&'a [u8]>, i64);

/// Each run into the engine, as the worker hands it over.
fn count_runs(engine: &mut Engine, runs: &[TimedRun]) {
    for (partition, payloads, wall) in runs {
        engine.process_batch(
            SourcePartition { topic: 0, partition: *partition },
            payloads,
            *wall,
            |_, outcome| {
                std::hint::black_box(outcome);
            },
        );
    }
}

/// Each run with the wall time it is handed over at: the time of the traffic so far, as a live
/// worker sees it (`first` events came before the runs).
fn with_wall_time(
    runs: &[FetchRun],
    first: u64,
    time_of: impl Fn(u64) -> i64,
) -> Vec<TimedRun<'_>> {
    let mut seen = first;
    runs.iter()
        .map(|run| {
            let payloads = run.payloads();
            seen += payloads.len() as u64;
            (run.partition, payloads, time_of(seen) + 100)
        })
        .collect()
}

/// An engine holding `pairs` brand/segment pairs, each with a few answers in every window.
pub fn engine_with_pairs(pairs: usize) -> Engine {
    let config = EngineConfig { max_series: pairs + 1, ..EngineConfig::default() };
    let mut engine = Engine::new(config).unwrap();
    for i in 0..pairs * 3 {
        let pair = i % pairs;
        let payload = format!(
            r#"{{"event_id":"s{i}","type":"survey_response","occurred_at":{},"brand":"b{}","segment":"s{}","survey":"nps","score":{}}}"#,
            NOW - (i as i64 % 20) * 86_400_000,
            pair / 10,
            pair % 10,
            i % 11
        );
        engine.process(
            SourcePartition { topic: 0, partition: (pair % 64) as i32 },
            payload.as_bytes(),
            NOW,
        );
    }
    engine
}

fn scrape(c: &mut Criterion) {
    let mut engine = engine_with_pairs(10_000);
    let mut group = c.benchmark_group("scrape");
    group.sample_size(20);
    group.bench_function("snapshot, 10k pairs x 4 windows", |b| {
        b.iter(|| std::hint::black_box(engine.snapshot(NOW).series.len()))
    });
    group.finish();
}

criterion_group!(benches, parse, process, process_batch, process_batch_steady, scrape);
criterion_main!(benches);
