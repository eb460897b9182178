//! The engine under a sequence of operations: events on partitions 0..=3 at an advancing wall time,
//! one by one and in batches, replays, partition drops, checkpoint round trips through a simulated
//! compacted state topic per partition, checkpoints cut short, restores of one partition from
//! another's topic, maintenance and snapshots. Nothing may panic.
//!
//! Input layout: the first byte picks the configuration (bit 0: event clock instead of the wall
//! clock; bit 1: small windows, short dedup and correction horizons and `max_series` 2, so that
//! expiry, overflow and too-old/too-far-in-future are reached quickly; bit 2: a state memory
//! budget small enough that buckets are evicted early); the rest is decoded with `arbitrary` into
//! the operations.
//!
//! Each partition's topic is the latest value of each key, as log compaction leaves it: a
//! checkpoint's records are applied in order and its tombstones after them, as the worker writes
//! them (a crashed checkpoint applies only some records before the manifest, and no tombstones).
//!
//! Oracles beyond "no panic": a checkpoint's manifest is its last record; checkpointing a
//! partition into its topic and restoring it from there returns the checkpoint's offset and
//! changes no series a snapshot shows, also after checkpoints cut short (the model test,
//! `crates/cxpulse-core/tests/core/model.rs`, holds the engine to the same); a topic holding a manifest
//! restores, into its own partition or another; and no two series of a snapshot share a label
//! set.
//!
//! To see what a crash input does, run it with `CXPULSE_FUZZ_TRACE=1`: each operation, with the
//! payload it sends, is printed to stderr.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use cxpulse_core::checkpoint::RecordKey;
use cxpulse_core::snapshot::Snapshot;
use cxpulse_core::{
    CheckpointBatch, ClockMode, Engine, EngineConfig, RestoreError, SourcePartition, WindowSpec,
};
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
    Process {
        partition: u8,
        advance: u16,
        event: Ev,
    },
    ProcessRaw {
        partition: u8,
        advance: u16,
        payload: Vec<u8>,
    },
    Replay {
        partition: u8,
        event: Ev,
    },
    /// A run of one partition through `process_batch` (or `replay_batch`), as the worker sends it.
    Batch {
        partition: u8,
        advance: u16,
        events: Vec<Ev>,
        replay: bool,
    },
    /// Forgets the partition and clears its topic: see `Topics::clear`.
    Drop {
        partition: u8,
    },
    /// Checkpoint into the partition's topic and restore from it.
    RoundTrip {
        partition: u8,
        offset: i64,
    },
    /// A checkpoint whose write failed: `written`/255 of its records before the manifest reached
    /// the topic.
    CrashedCheckpoint {
        partition: u8,
        offset: i64,
        written: u8,
    },
    /// Restore `to` from what `from`'s topic holds (after a checkpoint of `from` into it if
    /// `checkpoint_first`, else whatever it was left with, possibly stale or empty).
    Restore {
        from: u8,
        to: u8,
        checkpoint_first: bool,
    },
    Maintain {
        advance: u16,
    },
    Snapshot {
        advance: u16,
    },
}

struct Setup {
    config: EngineConfig,
    /// What one step of `advance` or of a relative event time is worth.
    time_unit_ms: i64,
}

fn setup(mode: u8) -> Setup {
    let clock = if mode & 1 == 0 { ClockMode::Wall } else { ClockMode::Event };
    // A few KiB: a bucket table's minimum size, so that every partition with more than one
    // bucket is over budget and has its oldest forgotten.
    let state_memory_bytes = (mode & 4 != 0).then_some(4096);
    if mode & 2 == 0 {
        Setup {
            config: EngineConfig { clock, state_memory_bytes, ..EngineConfig::default() },
            time_unit_ms: 60_000,
        }
    } else {
        let windows =
            [60_000, 300_000].into_iter().map(|ms| WindowSpec::new(ms).unwrap()).collect();
        Setup {
            config: EngineConfig {
                windows,
                clock,
                max_future_skew_ms: 30_000,
                max_series: 2,
                dedup_horizon_ms: 120_000,
                correction_horizon_ms: 180_000,
                state_memory_bytes,
                ..EngineConfig::default()
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
        let response =
            self.response_id.map(|r| format!(r#","response_id":"r{r}""#)).unwrap_or_default();
        let body = match self.kind {
            // Scores a little beyond the ranges, so that rejections happen too.
            Kind::Nps(s) => {
                format!(r#""type":"survey_response","survey":"nps","score":{}{response}"#, s % 12)
            }
            Kind::Csat { score, scale } => format!(
                r#""type":"survey_response","survey":"csat","score":{},"scale_max":{}{response}"#,
                score % 12,
                [5, 7, 10][usize::from(scale) % 3]
            ),
            Kind::Ces(s) => {
                format!(r#""type":"survey_response","survey":"ces","score":"{}"{response}"#, s % 9)
            }
            Kind::Lifecycle { action, customer } => format!(
                r#""type":"customer_lifecycle","action":"{}","customer_id":"c{customer}""#,
                ACTIONS[usize::from(action) % ACTIONS.len()]
            ),
            // Mostly counts the parser accepts (up to 10^15 - 1); with the top bit set, any u64.
            Kind::Base(n) if n >> 63 == 1 => {
                format!(r#""type":"customer_base","active_customers":{n}"#)
            }
            Kind::Base(n) => format!(
                r#""type":"customer_base","active_customers":{}"#,
                n % 1_000_000_000_000_000
            ),
        };
        format!(
            r#"{{"schema":1,"event_id":"e{}","occurred_at":{occurred},"brand":"{brand}"{segment},{body}}}"#,
            self.id
        )
    }
}

/// What a snapshot shows of each series, comparably. Not `state`: a checkpoint first drops the
/// buckets the clock has left behind, which the snapshot before it still counted, and a table's
/// bytes depend on how it grew and was compacted, not only on what it holds; neither changes
/// what the engine counts.
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
        assert!(
            seen.insert((&s.brand, &s.segment)),
            "two series labelled {}/{}",
            s.brand,
            s.segment
        );
    }
}

/// Each partition's state topic: the latest value of each key, as log compaction leaves it.
#[derive(Default)]
struct Topics([BTreeMap<String, Vec<u8>>; 4]);

impl Topics {
    fn topic(&mut self, p: u8) -> &mut BTreeMap<String, Vec<u8>> {
        &mut self.0[usize::from(p % 4)]
    }

    /// Writes the first `count` records of `batch`, and its tombstones only if that was all of
    /// them: the worker deletes only after the manifest is acknowledged.
    fn write(&mut self, p: u8, batch: &CheckpointBatch, count: usize) {
        let manifest = batch.records.iter().position(|(key, _)| *key == RecordKey::Manifest);
        assert!(
            batch.records.is_empty() || manifest == Some(batch.records.len() - 1),
            "a checkpoint's manifest is its one last record: {:?}",
            batch.records.iter().map(|(key, _)| key.to_string()).collect::<Vec<_>>()
        );
        if tracing() {
            let written: Vec<String> =
                batch.records.iter().take(count).map(|(key, _)| key.to_string()).collect();
            eprintln!("  p{}: wrote {written:?} of {}", p % 4, batch.records.len());
        }
        let topic = self.topic(p);
        for (key, value) in batch.records.iter().take(count) {
            topic.insert(key.to_string(), value.clone());
        }
        if count >= batch.records.len() {
            if tracing() && !batch.tombstones.is_empty() {
                let keys: Vec<String> = batch.tombstones.iter().map(ToString::to_string).collect();
                eprintln!("  p{}: deleted {keys:?}", p % 4);
            }
            for key in &batch.tombstones {
                topic.remove(&key.to_string());
            }
        }
    }

    /// A dropped partition comes back as new, so its topic goes with it. Keeping the topic would
    /// model a worker that processes a partition without first restoring what its topic holds,
    /// which no worker does: its fresh checkpoints (numbered from 1 again) would mix with the old
    /// records, restores could then rightly fail, and the assertion that a topic holding a
    /// manifest restores exactly would have to go.
    fn clear(&mut self, p: u8) {
        self.topic(p).clear();
    }

    fn records(&mut self, p: u8) -> Vec<(String, Vec<u8>)> {
        self.topic(p).iter().map(|(key, value)| (key.clone(), value.clone())).collect()
    }

    fn has_manifest(&mut self, p: u8) -> bool {
        self.topic(p).contains_key(&RecordKey::Manifest.to_string())
    }
}

/// What restoring from a topic must give: every checkpoint the harness wrote whole is complete,
/// and a crashed one never reached the manifest, so a topic holding a manifest restores; without
/// one there is nothing to restore.
fn check_restore(result: &Result<i64, RestoreError>, has_manifest: bool, what: &str) {
    if tracing() {
        eprintln!("  restore: {result:?}");
    }
    if has_manifest {
        assert!(result.is_ok(), "{what}: {result:?}");
    } else {
        assert!(
            matches!(result, Err(RestoreError::NoCheckpoint | RestoreError::NoManifest)),
            "{what} from a topic without a manifest: {result:?}"
        );
    }
}

/// What the worker passes as `seq_floor`: its wall clock in ms.
fn seq_floor(wall_ms: i64) -> u64 {
    u64::try_from(wall_ms).unwrap_or(0)
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
    let mut topics = Topics::default();
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        if tracing() {
            match &op {
                Op::Process { event, advance, .. } => {
                    let at = wall + i64::from(*advance) * time_unit_ms / 8;
                    eprintln!("{op:?}\n  wall {at}: {}", event.json(at, time_unit_ms));
                }
                Op::Replay { event, .. } => {
                    eprintln!("{op:?}\n  wall {wall}: {}", event.json(wall, time_unit_ms))
                }
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
                let payloads: Vec<String> =
                    events.iter().map(|event| event.json(wall, time_unit_ms)).collect();
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
            Op::Drop { partition: p } => {
                engine.drop_partition(partition(p));
                topics.clear(p);
            }
            Op::RoundTrip { partition: p, offset } => {
                let before = engine.snapshot(wall);
                let batch = engine.checkpoint(partition(p), offset);
                topics.write(p, &batch, usize::MAX);
                let restored = engine.restore(partition(p), &topics.records(p), seq_floor(wall));
                let has_manifest = topics.has_manifest(p);
                check_restore(&restored, has_manifest, "restoring the partition's own checkpoint");
                if !batch.records.is_empty() {
                    assert_eq!(restored, Ok(offset), "the offset checkpointed");
                }
                let after = engine.snapshot(wall);
                assert_eq!(
                    view(&after),
                    view(&before),
                    "checkpoint + restore of {:?} changed the state",
                    partition(p)
                );
            }
            Op::CrashedCheckpoint { partition: p, offset, written } => {
                let batch = engine.checkpoint(partition(p), offset);
                let before_manifest = batch.records.len().saturating_sub(1);
                topics.write(p, &batch, before_manifest * usize::from(written) / 255);
                engine.checkpoint_failed(partition(p), batch);
            }
            Op::Restore { from, to, checkpoint_first } => {
                if checkpoint_first {
                    let batch = engine.checkpoint(partition(from), 0);
                    topics.write(from, &batch, usize::MAX);
                }
                let records = topics.records(from);
                let restored = engine.restore(partition(to), &records, seq_floor(wall));
                check_restore(
                    &restored,
                    topics.has_manifest(from),
                    "restoring another partition's checkpoint",
                );
                // What `to` was restored from is its topic now, as far as its checkpoints go: they
                // build on the segments found there.
                *topics.topic(to) = topics.topic(from).clone();
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
