//! Two simulated days on the event clock: 10 million events at a steady rate over 4 partitions
//! (80 % answers carrying a `response_id`, some of them corrected within the hour, 1 % repeated
//! event ids, 20 % lifecycle events), checkpointed incrementally every 10 simulated minutes into
//! a simulated compacted topic per partition.
//!
//! It checks what a worker left running for days needs: remembered state stops growing once the
//! horizons are full, each id and answer costs what the docs say, the checkpoints write no more
//! than the input and the topics stay the size of the live state, the counts equal a naive model
//! kept beside the engine, and a fresh engine restored from the topics shows the same counts.
//! `cargo test --release -p cxpulse-core --test core long_run -- --nocapture` prints the figures.

use std::collections::{BTreeMap, VecDeque};

use cxpulse_core::checkpoint::{RecordKey, SegmentKind};
use cxpulse_core::{
    CheckpointBatch, ClockMode, Counts, Engine, EngineConfig, Outcome, SourcePartition, WindowSpec,
};

const EVENTS: u64 = 10_000_000;
const HOURS: i64 = 48;
const PARTITIONS: i32 = 4;
const START_MS: i64 = 1_800_000_000_000;
const HOUR_MS: i64 = 3_600_000;
const CHECKPOINT_EVERY_MS: i64 = 600_000;
const BRANDS: [&str; 3] = ["acme", "globex", "initech"];

/// A small deterministic generator (xorshift), so runs are repeatable without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the model keeps of an accepted event: when, which series, which counter.
#[derive(Clone, Copy)]
struct Kept {
    time_ms: i64,
    series: u8,
    /// 0..=2 NPS category, 3..=7 lifecycle action index + 3.
    counter: u8,
    superseded: bool,
}

/// Writes `batch` into `topic`; returns its bytes, and those of them that are customer segments.
fn write(topic: &mut BTreeMap<String, Vec<u8>>, batch: &CheckpointBatch) -> (u64, u64) {
    let mut customers = 0;
    for (key, value) in &batch.records {
        if matches!(key, RecordKey::Part { kind: SegmentKind::Customers, .. }) {
            customers += value.len() as u64;
        }
        topic.insert(key.to_string(), value.clone());
    }
    for key in &batch.tombstones {
        topic.remove(&key.to_string());
    }
    (batch.bytes() as u64, customers)
}

fn topic_bytes(topic: &BTreeMap<String, Vec<u8>>) -> u64 {
    topic.values().map(|v| v.len() as u64).sum()
}

fn model_counts(kept: &[Kept], series: u8, window: &WindowSpec, clock_ms: i64) -> Counts {
    let head = window.pane_of(clock_ms);
    let mut counts = Counts::default();
    for k in kept.iter().filter(|k| !k.superseded && k.series == series) {
        let pane = window.pane_of(k.time_ms);
        if pane > head - 60 && pane <= head {
            match k.counter {
                c @ 0..=2 => counts.nps[usize::from(c)] += 1,
                c => counts.actions[usize::from(c - 3)] += 1,
            }
        }
    }
    counts
}

#[test]
fn two_days_of_steady_traffic_level_off_stay_exact_and_restore() {
    let config = EngineConfig { clock: ClockMode::Event, ..EngineConfig::default() };
    let windows = config.windows.clone();
    let mut engine = Engine::new(config.clone()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut kept: Vec<Kept> = Vec::with_capacity(EVENTS as usize);
    // Recent answers by partition: (response number, index in `kept`), for corrections.
    let mut recent: Vec<VecDeque<(u64, usize, i64)>> = vec![VecDeque::new(); PARTITIONS as usize];
    let mut topics: Vec<BTreeMap<String, Vec<u8>>> = vec![BTreeMap::new(); PARTITIONS as usize];
    let step_ms = (HOURS * HOUR_MS) as f64 / EVENTS as f64;
    let (mut input_bytes, mut written_bytes) = (0u64, 0u64);
    let (mut input_since, mut written_since, mut customers_since) = (0u64, 0u64, 0u64);
    let (mut input_day2, mut written_day2) = (0u64, 0u64);
    let mut next_checkpoint = START_MS + CHECKPOINT_EVERY_MS;
    // (hour, dedup bytes, answer bytes, ids, topic bytes, written/input % of the ids', answers'
    // and windows' segments, and of the customers' segments)
    let mut hourly: Vec<(i64, u64, u64, u64, u64, u64, u64)> = Vec::new();
    let mut next_hour = START_MS + HOUR_MS;
    let mut duplicates = 0u64;
    // The id of each partition's last counted event, for retries.
    let mut last_id: Vec<Option<u64>> = vec![None; PARTITIONS as usize];
    let mut payload = String::with_capacity(256);
    for n in 0..EVENTS {
        let time_ms = START_MS + (n as f64 * step_ms) as i64;
        let partition = (n % PARTITIONS as u64) as i32;
        let source = SourcePartition { topic: 0, partition };
        let series = (rng.below(3)) as u8;
        let roll = rng.below(100);
        payload.clear();
        let recent_here = &mut recent[partition as usize];
        while recent_here.front().is_some_and(|(_, _, t)| *t < time_ms - HOUR_MS) {
            recent_here.pop_front();
        }
        let mut expect_duplicate = false;
        let mut replaces = None;
        let counter;
        if let Some(id) = last_id[partition as usize].filter(|_| roll < 1) {
            // A producer's retry: the partition's last counted event again.
            payload.push_str(&format!(
                r#"{{"event_id":"e{id}","type":"customer_lifecycle","occurred_at":{time_ms},"brand":"{}","customer_id":"c","action":"renewal"}}"#,
                BRANDS[usize::from(series)]
            ));
            expect_duplicate = true;
            counter = 0;
        } else if roll < 80 {
            let score = rng.below(11);
            counter = match score {
                9..=10 => 0,
                7..=8 => 1,
                _ => 2,
            };
            // One answer in twenty corrects a recent one of the same partition and series.
            let corrected = (roll < 5)
                .then(|| recent_here.iter().rev().find(|(_, i, _)| kept[*i].series == series))
                .flatten()
                .copied();
            let response = match corrected {
                Some((response, index, _)) => {
                    replaces = Some(index);
                    response
                }
                None => n,
            };
            payload.push_str(&format!(
                r#"{{"event_id":"e{n}","type":"survey_response","occurred_at":{time_ms},"brand":"{}","survey":"nps","score":{score},"response_id":"r{response}","customer_id":"c{}"}}"#,
                BRANDS[usize::from(series)],
                rng.below(100_000)
            ));
            recent_here.push_back((response, kept.len(), time_ms));
        } else {
            let action = rng.below(5);
            const ACTIONS: [&str; 5] = ["signup", "renewal", "purchase", "churn", "reactivation"];
            counter = 3 + action as u8;
            payload.push_str(&format!(
                r#"{{"event_id":"e{n}","type":"customer_lifecycle","occurred_at":{time_ms},"brand":"{}","customer_id":"c{}","action":"{}"}}"#,
                BRANDS[usize::from(series)],
                rng.below(100_000),
                ACTIONS[action as usize]
            ));
        }
        input_bytes += payload.len() as u64;
        input_since += payload.len() as u64;
        let outcome = engine.process(source, payload.as_bytes(), time_ms);
        if expect_duplicate {
            assert_eq!(outcome, Outcome::Duplicate, "{payload}");
            duplicates += 1;
        } else {
            assert_eq!(outcome, Outcome::Counted, "{payload}");
            if let Some(index) = replaces {
                kept[index].superseded = true;
            }
            kept.push(Kept { time_ms, series, counter, superseded: false });
            last_id[partition as usize] = Some(n);
        }

        if time_ms >= next_checkpoint {
            next_checkpoint += CHECKPOINT_EVERY_MS;
            engine.maintain(time_ms);
            for p in 0..PARTITIONS {
                let batch = engine.checkpoint(SourcePartition { topic: 0, partition: p }, n as i64);
                let (bytes, customers) = write(&mut topics[p as usize], &batch);
                written_bytes += bytes;
                written_since += bytes;
                customers_since += customers;
            }
        }
        if time_ms >= next_hour {
            next_hour += HOUR_MS;
            let stats = engine.state_stats();
            let topic: u64 = topics.iter().map(topic_bytes).sum();
            let hour = (time_ms - START_MS) / HOUR_MS;
            hourly.push((
                hour,
                stats.bytes[0],
                stats.bytes[1],
                stats.entries[0],
                topic,
                (written_since - customers_since) * 100 / input_since.max(1),
                customers_since * 100 / input_since.max(1),
            ));
            if hour >= 26 {
                input_day2 += input_since;
                written_day2 += written_since;
            }
            input_since = 0;
            written_since = 0;
            customers_since = 0;
        }
    }

    println!("hour  dedup MiB  answers MiB  ids         topic MiB  written/input %: ids, answers, windows + customers");
    for (hour, dedup, answers, ids, topic, ratio, customers) in &hourly {
        println!(
            "{hour:>4}  {:>9.1}  {:>11.1}  {ids:>10}  {:>9.1}  {ratio:>5} + {customers}",
            *dedup as f64 / 1048576.0,
            *answers as f64 / 1048576.0,
            *topic as f64 / 1048576.0
        );
    }
    let stats = engine.state_stats();
    let per_id = stats.bytes[0] as f64 / stats.entries[0] as f64;
    let per_answer = stats.bytes[1] as f64 / stats.entries[1] as f64;
    println!(
        "at 48 h: {} ids at {per_id:.1} B each, {} answers at {per_answer:.1} B each; \
         checkpoints wrote {:.0} % of the input's bytes over the two days",
        stats.entries[0],
        stats.entries[1],
        written_bytes as f64 * 100.0 / input_bytes as f64
    );

    // Levels off: once past the horizon (24 h and an eighth), memory and topic stop growing.
    let at = |hour: i64| hourly.iter().find(|h| h.0 == hour).copied().unwrap();
    let (day2_start, end) = (at(30), at(HOURS - 1));
    assert!(end.1 <= day2_start.1 * 5 / 4, "dedup memory grew from {} to {}", day2_start.1, end.1);
    assert!(end.2 <= day2_start.2 * 5 / 4, "answer memory grew from {} to {}", day2_start.2, end.2);
    assert!(end.4 <= day2_start.4 * 5 / 4, "topic grew from {} to {}", day2_start.4, end.4);
    // The documented costs, every slot counted.
    assert!(per_id <= 24.0, "{per_id} bytes per id");
    assert!(per_answer <= 48.0, "{per_answer} bytes per answer");
    // Steady state: every hour of the second day wrote at most the input's bytes, the customer
    // book's rewrites included (a slice per checkpoint, never the whole book at once).
    let day2 = written_day2 * 100 / input_day2.max(1);
    assert!(day2 <= 100, "the second day's checkpoints wrote {day2} % of its input");
    for hour in hourly.iter().filter(|h| h.0 >= 26) {
        let all = hour.5 + hour.6;
        assert!(all <= 100, "hour {}: checkpoints wrote {all} % of the input", hour.0);
    }

    // Exact against the model, and the same after a restore from the topics.
    let clock = engine.clock_ms().unwrap();
    engine.maintain(clock);
    let mut restored = Engine::new(config).unwrap();
    for p in 0..PARTITIONS {
        let source = SourcePartition { topic: 0, partition: p };
        let batch = engine.checkpoint(source, EVENTS as i64);
        write(&mut topics[p as usize], &batch);
        let records: Vec<(String, Vec<u8>)> =
            topics[p as usize].iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(restored.restore(source, &records, 0), Ok(EVENTS as i64));
    }
    let live = engine.snapshot(clock);
    let again = restored.snapshot(clock);
    assert_eq!(live.pipeline.duplicates, duplicates);
    for (series, brand) in BRANDS.iter().enumerate() {
        let find = |s: &cxpulse_core::Snapshot| {
            s.series.iter().find(|x| &*x.brand == *brand).map(|x| x.windows.clone()).unwrap()
        };
        let (from_live, from_restore) = (find(&live), find(&again));
        for (w, window) in windows.iter().enumerate() {
            let want = model_counts(&kept, series as u8, window, clock);
            assert_eq!(from_live[w], want, "{brand} {}", window.name);
            assert_eq!(from_restore[w], want, "{brand} {} after restore", window.name);
        }
    }
    assert_eq!(restored.state_stats().entries[..2], engine.state_stats().entries[..2]);
}
