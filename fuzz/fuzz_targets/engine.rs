//! The engine under a sequence of operations: events on partitions 0..=3 at an advancing wall time,
//! one by one and in batches, replays, partition drops, checkpoint round trips, restores onto
//! another partition, maintenance and snapshots. Nothing may panic.
//!
//! Input layout: the first byte picks the configuration (bit 0: event clock instead of the wall
//! clock; bit 1: small windows, a short dedup horizon and `max_series` 2, so that expiry, overflow
//! and too-old/too-far-in-future are reached quickly); the rest is decoded with `arbitrary` into
//! the operations.
//!
//! Oracles beyond "no panic": checkpointing a partition, encoding, decoding and restoring it onto
//! the same partition changes no series a snapshot shows (the model test,
//! `crates/cxpulse-core/tests/model.rs`, holds the engine to the same); an encoded checkpoint
//! decodes to itself and the engine's own checkpoint restores; and no two series of a snapshot
//! share a label set.
//!
//! To see what a crash input does, run it with `CXPULSE_FUZZ_TRACE=1`: each operation, with the
//! payload it sends, is printed to stderr.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use cxpulse_core::checkpoint::PartitionCheckpoint;
use cxpulse_core::snapshot::Snapshot;
use cxpulse_core::{ClockMode, Engine, EngineConfig, SourcePartition, WindowSpec};
use libfuzzer_sys::fuzz_target;

/// 2027-01-15T08:00:00Z: the wall clock starts here.
const START_MS: i64 = 1_800_000_000_000;

const BRANDS: [&str; 4] = ["acme", "globex", "initech", "__overflow__"];
const SEGMENTS: [&str; 3] = ["smb", "ent", "__overflow__"];
const ACTIONS: [&str; 6] = ["signup", "renewal", "purchase", "churn", "reactivation", "upgrade"];

#[derive(Arbitrary, Debug)]
enum When {
    /// Relative to the wall clock, in units of the configuration's `time_unit_ms`.
    Relative(i16),
    /// Epoch milliseconds as written (the parser rejects what is out of 1970..=9999).
    Absolute(u64),
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Nps(u8),
    Csat { score: u8, scale: u8 },
    Ces(u8),
    Lifecycle { action: u8, customer: u8 },
    Base(u64),
}

#[derive(Arbitrary, Debug)]
struct Ev {
    id: u8,
    response_id: Option<u8>,
    when: When,
    brand: u8,
    segment: Option<u8>,
    kind: Kind,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Process { partition: u8, advance: u16, event: Ev },
    ProcessRaw { partition: u8, advance: u16, payload: Vec<u8> },
    Replay { partition: u8, event: Ev },
    /// A run of one partition through `process_batch` (or `replay_batch`), as the worker sends it.
    Batch { partition: u8, advance: u16, events: Vec<Ev>, replay: bool },
    Drop { partition: u8 },
    /// Checkpoint, encode, decode and restore onto the same partition.
    RoundTrip { partition: u8, offset: i64 },
    /// Checkpoint one partition and restore it onto another.
    Restore { from: u8, to: u8 },
    Maintain { advance: u16 },
    Snapshot { advance: u16 },
}

struct Setup {
    config: EngineConfig,
    /// What one step of `advance` or of a relative event time is worth.
    time_unit_ms: i64,
}

fn setup(mode: u8) -> Setup {
    let clock = if mode & 1 == 0 { ClockMode::Wall } else { ClockMode::Event };
    if mode & 2 == 0 {
        Setup { config: EngineConfig { clock, ..EngineConfig::default() }, time_unit_ms: 60_000 }
    } else {
        let windows = [60_000, 300_000].into_iter().map(|ms| WindowSpec::new(ms).unwrap()).collect();
        Setup {
            config: EngineConfig {
                windows,
                clock,
                max_future_skew_ms: 30_000,
                max_series: 2,
                dedup_horizon_ms: 120_000,
            },
            time_unit_ms: 1_000,
        }
    }
}

fn partition(p: u8) -> SourcePartition {
    SourcePartition { topic: 0, partition: i32::from(p % 4) }
}

impl Ev {
    fn json(&self, wall_ms: i64, time_unit_ms: i64) -> String {
        let occurred = match self.when {
            When::Relative(units) => (wall_ms + i64::from(units) * time_unit_ms).to_string(),
            When::Absolute(ms) => ms.to_string(),
        };
        let brand = BRANDS[usize::from(self.brand) % BRANDS.len()];
        let segment = match self.segment {
            Some(s) => format!(r#","segment":"{}""#, SEGMENTS[usize::from(s) % SEGMENTS.len()]),
            None => String::new(),
        };
        let response = self.response_id.map(|r| format!(r#","response_id":"r{r}""#)).unwrap_or_default();
        let body = match self.kind {
            // Scores a little beyond the ranges, so that rejections happen too.
            Kind::Nps(s) => format!(r#""type":"survey_response","survey":"nps","score":{}{response}"#, s % 12),
            Kind::Csat { score, scale } => format!(
                r#""type":"survey_response","survey":"csat","score":{},"scale_max":{}{response}"#,
                score % 12,
                [5, 7, 10][usize::from(scale) % 3]
            ),
            Kind::Ces(s) => format!(r#""type":"survey_response","survey":"ces","score":"{}"{response}"#, s % 9),
            Kind::Lifecycle { action, customer } => format!(
                r#""type":"customer_lifecycle","action":"{}","customer_id":"c{customer}""#,
                ACTIONS[usize::from(action) % ACTIONS.len()]
            ),
            // Mostly counts the parser accepts (up to 10^15 - 1); with the top bit set, any u64.
            Kind::Base(n) if n >> 63 == 1 => format!(r#""type":"customer_base","active_customers":{n}"#),
            Kind::Base(n) => format!(r#""type":"customer_base","active_customers":{}"#, n % 1_000_000_000_000_000),
        };
        format!(r#"{{"schema":1,"event_id":"e{}","occurred_at":{occurred},"brand":"{brand}"{segment},{body}}}"#, self.id)
    }
}

/// What a snapshot shows of each series, comparably. Not `dedup_entries`: a restore puts back
/// the partition's dedup memory as it was checkpointed, including ids already past the horizon
/// whose entry another partition had taken over meanwhile; those are inert (they cannot make a
/// duplicate) and go at the next `maintain`.
fn view(snapshot: &Snapshot) -> Vec<(String, String, String)> {
    snapshot
        .series
        .iter()
        .map(|s| {
            (
                format!("{}/{}", s.brand, s.segment),
                format!("{:?} {:?} {:?}", s.windows, s.active_at_start, s.active_now),
                format!("{:?}", s.survey_totals),
            )
        })
        .collect()
}

/// Every series is one Prometheus label set: no two may share brand and segment.
fn check_unique_series(snapshot: &Snapshot) {
    let mut seen = std::collections::HashSet::new();
    for s in &snapshot.series {
        assert!(seen.insert((&s.brand, &s.segment)), "two series labelled {}/{}", s.brand, s.segment);
    }
}

fn round_trip(engine: &Engine, partition: SourcePartition, offset: i64) -> PartitionCheckpoint {
    let checkpoint = engine.checkpoint(partition, offset);
    let bytes = checkpoint.encode().expect("a checkpoint encodes");
    let decoded = PartitionCheckpoint::decode(&bytes).expect("an encoded checkpoint decodes");
    assert_eq!(decoded, checkpoint, "checkpoint changed by encode + decode");
    decoded
}

fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CXPULSE_FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Setup { config, time_unit_ms } = setup(mode);
    if tracing() {
        eprintln!("config: {:?}", config);
    }
    let mut engine = Engine::new(config).expect("valid config");
    let mut u = Unstructured::new(rest);
    let mut wall = START_MS;
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        if tracing() {
            match &op {
                Op::Process { event, advance, .. } => {
                    let at = wall + i64::from(*advance) * time_unit_ms / 8;
                    eprintln!("{op:?}\n  wall {at}: {}", event.json(at, time_unit_ms));
                }
                Op::Replay { event, .. } => eprintln!("{op:?}\n  wall {wall}: {}", event.json(wall, time_unit_ms)),
                Op::Batch { events, advance, .. } => {
                    let at = wall + i64::from(*advance) * time_unit_ms / 8;
                    eprintln!("{op:?}");
                    for event in events {
                        eprintln!("  wall {at}: {}", event.json(at, time_unit_ms));
                    }
                }
                _ => eprintln!("{op:?}"),
            }
        }
        match op {
            Op::Process { partition: p, advance, event } => {
                wall += i64::from(advance) * time_unit_ms / 8;
                engine.process(partition(p), event.json(wall, time_unit_ms).as_bytes(), wall);
            }
            Op::ProcessRaw { partition: p, advance, payload } => {
                wall += i64::from(advance) * time_unit_ms / 8;
                engine.process(partition(p), &payload, wall);
            }
            Op::Replay { partition: p, event } => {
                engine.replay(partition(p), event.json(wall, time_unit_ms).as_bytes(), wall);
            }
            Op::Batch { partition: p, advance, events, replay } => {
                wall += i64::from(advance) * time_unit_ms / 8;
                let payloads: Vec<String> = events.iter().map(|event| event.json(wall, time_unit_ms)).collect();
                let payloads: Vec<&[u8]> = payloads.iter().map(String::as_bytes).collect();
                if replay {
                    engine.replay_batch(partition(p), &payloads, wall);
                } else {
                    let mut seen = 0;
                    engine.process_batch(partition(p), &payloads, wall, |i, _| {
                        assert_eq!(i, seen, "outcomes in message order");
                        seen += 1;
                    });
                    assert_eq!(seen, payloads.len(), "an outcome for every message");
                }
            }
            Op::Drop { partition: p } => engine.drop_partition(partition(p)),
            Op::RoundTrip { partition: p, offset } => {
                let before = engine.snapshot(wall);
                let checkpoint = round_trip(&engine, partition(p), offset);
                engine.restore(partition(p), &checkpoint).expect("restoring the engine's own checkpoint");
                let after = engine.snapshot(wall);
                assert_eq!(view(&after), view(&before), "checkpoint + restore of {:?} changed the state", partition(p));
            }
            Op::Restore { from, to } => {
                let checkpoint = round_trip(&engine, partition(from), 0);
                engine.restore(partition(to), &checkpoint).expect("restoring a checkpoint of the same windows");
            }
            Op::Maintain { advance } => {
                wall += i64::from(advance) * time_unit_ms;
                engine.maintain(wall);
            }
            Op::Snapshot { advance } => {
                wall += i64::from(advance) * time_unit_ms;
                let snapshot = engine.snapshot(wall);
                assert_eq!(snapshot.pipeline.consumed, engine.pipeline().consumed);
                check_unique_series(&snapshot);
            }
        }
    }
    check_unique_series(&engine.snapshot(wall));
});
