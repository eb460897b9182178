//! The engine against a naive reference model: the model keeps every accepted event in a list and
//! recomputes each window by filtering it, so it shares no data structure with the engine. Random
//! events (with repeated ids, corrections, out-of-order and stale times, several partitions),
//! random partition drops and random clock moves must give exactly the model's counts.

use std::collections::BTreeMap;

use cxpulse_core::engine::OVERFLOW_LABEL;
use cxpulse_core::{
    CheckpointBatch, ClockMode, Counts, Engine, EngineConfig, Outcome, RejectReason,
    SourcePartition, WindowSpec,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const BASE_MS: i64 = 1_800_000_000_000;
const WINDOWS_MS: [i64; 3] = [60_000, 300_000, 900_000];
const HORIZON_MS: i64 = 120_000;
const CORRECTION_HORIZON_MS: i64 = 200_000;
const SKEW_MS: i64 = 30_000;
const MAX_SERIES: usize = 4;
const BRANDS: [&str; 3] = ["acme", "globex", "initech"];
const SEGMENTS: [&str; 2] = ["smb", "all"];

#[derive(Clone, Debug)]
enum Kind {
    Nps(u8),
    Csat(u8),
    Ces(u8),
    Lifecycle(usize),
}

#[derive(Clone, Debug)]
struct Ev {
    id: u8,
    response_id: Option<u8>,
    offset_ms: i64,
    brand: usize,
    segment: usize,
    kind: Kind,
    /// c0..c2 (NPS answers: 3 for none).
    customer: u8,
}

#[derive(Clone, Debug)]
enum Op {
    Event {
        partition: i32,
        wall_step_ms: i64,
        event: Ev,
    },
    /// A partition forgotten (with its checkpoints: it comes back as new).
    Drop(i32),
    Maintain,
    /// Checkpoint a partition to its simulated state topic and restore it from there: nothing
    /// may change.
    RoundTrip(i32),
    /// A checkpoint cut short: only the first `percent` of its records (never the manifest)
    /// reach the topic.
    CrashedCheckpoint(i32, u8),
}

const ACTIONS: [&str; 5] = ["signup", "renewal", "purchase", "churn", "reactivation"];

impl Ev {
    fn json(&self, time_ms: i64) -> String {
        let body = match self.kind {
            Kind::Nps(s) if self.customer < 3 => format!(
                r#""type":"survey_response","survey":"nps","score":{s},"customer_id":"c{}""#,
                self.customer
            ),
            Kind::Nps(s) => format!(r#""type":"survey_response","survey":"nps","score":{s}"#),
            Kind::Csat(s) => format!(r#""type":"survey_response","survey":"csat","score":"{s}""#),
            Kind::Ces(s) => format!(r#""type":"survey_response","survey":"ces","score":{s}"#),
            Kind::Lifecycle(a) => format!(
                r#""type":"customer_lifecycle","action":"{}","customer_id":"c{}""#,
                ACTIONS[a],
                self.customer % 3
            ),
        };
        let response =
            self.response_id.map(|r| format!(r#","response_id":"r{r}""#)).unwrap_or_default();
        let segment = if SEGMENTS[self.segment] == "all" {
            String::new()
        } else {
            format!(r#","segment":"{}""#, SEGMENTS[self.segment])
        };
        format!(
            r#"{{"event_id":"e{}","occurred_at":{time_ms},"brand":"{}"{segment},{body}{response}}}"#,
            self.id, BRANDS[self.brand]
        )
    }

    /// The model's own classification, written from docs/events.md independently of the engine.
    fn counts(&self) -> Counts {
        let mut c = Counts::default();
        match self.kind {
            Kind::Nps(s) if s >= 9 => c.nps[0] = 1,
            Kind::Nps(s) if s >= 7 => c.nps[1] = 1,
            Kind::Nps(_) => c.nps[2] = 1,
            Kind::Csat(s) if s >= 4 => c.csat[0] = 1,
            Kind::Csat(_) => c.csat[1] = 1,
            Kind::Ces(s) => {
                if s >= 5 {
                    c.ces[0] = 1
                } else {
                    c.ces[1] = 1
                }
                c.ces_score_sum = u32::from(s);
            }
            Kind::Lifecycle(a) => c.actions[a] = 1,
        }
        c
    }
}

fn ev_strategy() -> impl Strategy<Value = Ev> {
    let kind = prop_oneof![
        (0u8..=10).prop_map(Kind::Nps),
        (1u8..=5).prop_map(Kind::Csat),
        (1u8..=7).prop_map(Kind::Ces),
        (0usize..5).prop_map(Kind::Lifecycle),
    ];
    (
        0u8..40,
        prop::option::weighted(0.3, 0u8..6),
        -1_200_000i64..60_000,
        0usize..3,
        0usize..2,
        kind,
        0u8..4,
    )
        .prop_map(|(id, response_id, offset_ms, brand, segment, kind, customer)| {
            let response_id = if matches!(kind, Kind::Lifecycle(_)) { None } else { response_id };
            Ev { id, response_id, offset_ms, brand, segment, kind, customer }
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (0i32..3, 0i64..40_000, ev_strategy()).prop_map(|(partition, wall_step_ms, event)| Op::Event { partition, wall_step_ms, event }),
        1 => (0i32..3).prop_map(Op::Drop),
        3 => (0i32..3).prop_map(Op::RoundTrip),
        1 => (0i32..3, 0u8..100).prop_map(|(p, percent)| Op::CrashedCheckpoint(p, percent)),
        1 => Just(Op::Maintain),
    ]
}

struct Accepted {
    partition: i32,
    epoch: u64,
    id: u8,
    seen_at: i64,
    time_ms: i64,
    series: (String, String),
    counts: Counts,
    response_id: Option<u8>,
    superseded: bool,
}

#[derive(Default)]
struct Model {
    clock: Option<i64>,
    accepted: Vec<Accepted>,
    /// Current epoch of each partition: a drop starts a new one.
    epochs: [u64; 3],
    series: Vec<(String, String)>,
    rejected: Vec<RejectReason>,
    duplicates: u64,
    overflow: u64,
    corrections: u64,
    unmatched: u64,
}

/// Whether something stored at clock `at` is still remembered at clock `t` for `horizon`: it sits
/// in a bucket of an eighth of the horizon, kept while the bucket's end is after `t - horizon`.
fn remembered(at: i64, t: i64, horizon: i64) -> bool {
    let span = horizon / 8;
    at.div_euclid(span) >= (t - horizon).div_euclid(span)
}

fn pane(time_ms: i64, window_ms: i64) -> i64 {
    time_ms.div_euclid(window_ms / 60)
}

impl Model {
    fn live(&self, a: &Accepted) -> bool {
        a.epoch == self.epochs[a.partition as usize]
    }

    fn process(
        &mut self,
        mode: ClockMode,
        partition: i32,
        ev: &Ev,
        time_ms: i64,
        wall_ms: i64,
    ) -> Outcome {
        if mode == ClockMode::Wall {
            self.clock = Some(self.clock.map_or(wall_ms, |t| t.max(wall_ms)));
        }
        // Ids are remembered per partition.
        let dup = self.clock.is_some_and(|t| {
            self.accepted.iter().any(|a| {
                self.live(a)
                    && a.partition == partition
                    && a.id == ev.id
                    && remembered(a.seen_at, t, HORIZON_MS)
            })
        });
        if dup {
            self.duplicates += 1;
            return Outcome::Duplicate;
        }
        // Both clocks refuse events too far ahead of the wall clock (the wall clock is T itself).
        if time_ms > wall_ms + SKEW_MS {
            self.rejected.push(RejectReason::TooFarInFuture);
            return Outcome::Rejected(cxpulse_core::Rejection::new(
                RejectReason::TooFarInFuture,
                "",
            ));
        }
        if let Some(t) = self.clock {
            let longest = WINDOWS_MS[2];
            if pane(time_ms, longest) < pane(t, longest) - 59 {
                self.rejected.push(RejectReason::TooOld);
                return Outcome::Rejected(cxpulse_core::Rejection::new(RejectReason::TooOld, ""));
            }
        }
        if mode == ClockMode::Event {
            self.clock = Some(self.clock.map_or(time_ms, |t| t.max(time_ms)));
        }
        let clock = self.clock.unwrap_or(time_ms);
        let pair = (BRANDS[ev.brand].to_string(), SEGMENTS[ev.segment].to_string());
        let series = if self.series.contains(&pair) {
            pair
        } else if self.series.len() < MAX_SERIES {
            self.series.push(pair.clone());
            pair
        } else {
            self.overflow += 1;
            (OVERFLOW_LABEL.to_string(), OVERFLOW_LABEL.to_string())
        };
        let epoch = self.epochs[partition as usize];
        if let Some(r) = ev.response_id {
            // The latest answer under this id on this partition, if still correctable.
            let latest = self.accepted.iter_mut().rev().find(|a| {
                a.partition == partition
                    && a.epoch == epoch
                    && a.response_id == Some(r)
                    && !a.superseded
            });
            match latest {
                Some(a) if remembered(a.seen_at, clock, CORRECTION_HORIZON_MS) => {
                    a.superseded = true;
                    self.corrections += 1;
                }
                _ if time_ms < clock - CORRECTION_HORIZON_MS => self.unmatched += 1,
                _ => {}
            }
        }
        self.accepted.push(Accepted {
            partition,
            epoch,
            id: ev.id,
            seen_at: clock,
            time_ms,
            series,
            counts: ev.counts(),
            response_id: ev.response_id,
            superseded: false,
        });
        Outcome::Counted
    }

    fn window(&self, series: &(String, String), window_ms: i64) -> Counts {
        let mut sum = Counts::default();
        let Some(t) = self.clock else { return sum };
        let head = pane(t, window_ms);
        for a in &self.accepted {
            let p = pane(a.time_ms, window_ms);
            if self.live(a) && !a.superseded && &a.series == series && p > head - 60 && p <= head {
                sum.add(&a.counts);
            }
        }
        sum
    }
}

/// Writes the first `limit` records of a checkpoint to a simulated compacted topic (all of them,
/// then its tombstones, when `limit` covers the batch).
fn write(topic: &mut BTreeMap<String, Vec<u8>>, batch: &CheckpointBatch, limit: usize) {
    for (key, value) in batch.records.iter().take(limit) {
        topic.insert(key.to_string(), value.clone());
    }
    if limit >= batch.records.len() {
        for key in &batch.tombstones {
            topic.remove(&key.to_string());
        }
    }
}

/// The engine configuration both properties run with.
fn config(mode: ClockMode) -> EngineConfig {
    EngineConfig {
        windows: WINDOWS_MS.iter().map(|&w| WindowSpec::new(w).unwrap()).collect(),
        clock: mode,
        max_future_skew_ms: SKEW_MS,
        max_series: MAX_SERIES,
        dedup_horizon_ms: HORIZON_MS,
        correction_horizon_ms: CORRECTION_HORIZON_MS,
        state_memory_bytes: None,
        ..EngineConfig::default()
    }
}

fn run(mode: ClockMode, ops: &[Op]) -> Result<(), TestCaseError> {
    let config = config(mode);
    let mut engine = Engine::new(config.clone()).unwrap();
    // The same events, drops and upkeep without any checkpoint: the customer counts (which the
    // model leaves to `customers.rs`'s own) must come out of round trips and crashes unchanged.
    let mut reference = Engine::new(config).unwrap();
    let mut model = Model::default();
    let mut wall = BASE_MS;
    let mut topics: [BTreeMap<String, Vec<u8>>; 3] = Default::default();
    for op in ops {
        match op {
            Op::Event { partition, wall_step_ms, event } => {
                wall += wall_step_ms;
                // With the event clock, times wander around a slowly advancing base.
                let time_ms = wall + event.offset_ms;
                let json = event.json(time_ms);
                let source = SourcePartition { topic: 0, partition: *partition };
                let got = engine.process(source, json.as_bytes(), wall);
                reference.process(source, json.as_bytes(), wall);
                let want = model.process(mode, *partition, event, time_ms, wall);
                let same = match (&got, &want) {
                    (Outcome::Rejected(a), Outcome::Rejected(b)) => a.reason == b.reason,
                    _ => got == want,
                };
                prop_assert!(same, "{json}: engine {got:?}, model {want:?}");
            }
            Op::Drop(partition) => {
                engine.drop_partition(SourcePartition { topic: 0, partition: *partition });
                reference.drop_partition(SourcePartition { topic: 0, partition: *partition });
                model.epochs[*partition as usize] += 1;
                topics[*partition as usize].clear();
            }
            Op::Maintain => {
                engine.maintain(wall);
                reference.maintain(wall);
            }
            Op::RoundTrip(partition) => {
                let source = SourcePartition { topic: 0, partition: *partition };
                let topic = &mut topics[*partition as usize];
                write(topic, &engine.checkpoint(source, 0), usize::MAX);
                let records: Vec<(String, Vec<u8>)> =
                    topic.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let restored = engine.restore(source, &records, 0);
                prop_assert!(restored.is_ok() || records.is_empty(), "{restored:?}");
            }
            Op::CrashedCheckpoint(partition, percent) => {
                let source = SourcePartition { topic: 0, partition: *partition };
                let batch = engine.checkpoint(source, 0);
                let parts = batch.records.len().saturating_sub(1);
                write(
                    &mut topics[*partition as usize],
                    &batch,
                    parts * usize::from(*percent) / 100,
                );
                engine.checkpoint_failed(source, batch);
            }
        }
    }
    let snapshot = engine.snapshot(wall);
    if mode == ClockMode::Wall {
        model.clock = Some(model.clock.map_or(wall, |t| t.max(wall)));
    }
    prop_assert_eq!(snapshot.clock_ms, model.clock);
    for s in &snapshot.series {
        let key = (s.brand.to_string(), s.segment.to_string());
        for (i, &w) in WINDOWS_MS.iter().enumerate() {
            prop_assert_eq!(s.windows[i], model.window(&key, w), "series {:?} window {}", key, w);
        }
    }
    let unbroken = reference.snapshot(wall);
    for s in &snapshot.series {
        let r = unbroken.series.iter().find(|r| r.brand == s.brand && r.segment == s.segment);
        let want = r.map(|r| r.customers.clone()).unwrap_or_default();
        prop_assert_eq!(&s.customers, &want, "customers of {}/{}", s.brand, s.segment);
    }
    let known: usize = snapshot.series.len();
    prop_assert_eq!(known, model.series.len() + usize::from(model.overflow > 0));
    prop_assert_eq!(snapshot.pipeline.duplicates, model.duplicates);
    prop_assert_eq!(snapshot.pipeline.corrections, model.corrections);
    prop_assert_eq!(snapshot.pipeline.corrections_unmatched, model.unmatched);
    prop_assert_eq!(snapshot.pipeline.series_overflow, model.overflow);
    let rejected: u64 = snapshot.pipeline.rejected.iter().sum();
    prop_assert_eq!(rejected, model.rejected.len() as u64);
    Ok(())
}

/// `n` cases, after the ones saved in `model.proptest-regressions` beside this file. Named here
/// on purpose: proptest's default walks up to the nearest `main.rs`, this binary's own, and would
/// read a `proptest-regressions` directory beside `core/` instead, without a word.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn event_clock_matches_model(ops in prop::collection::vec(op_strategy(), 1..150)) {
        run(ClockMode::Event, &ops)?;
    }

    #[test]
    fn wall_clock_matches_model(ops in prop::collection::vec(op_strategy(), 1..150)) {
        run(ClockMode::Wall, &ops)?;
    }
}

/// A run of messages of one partition, some of them not events at all, counted or replayed.
fn run_strategy() -> impl Strategy<Value = (i32, i64, Vec<Option<Ev>>, bool)> {
    (
        0i32..3,
        0i64..40_000,
        prop::collection::vec(prop::option::weighted(0.9, ev_strategy()), 1..80),
        prop::bool::weighted(0.2),
    )
}

/// `process_batch` must be `process` called message by message: the same outcome for each
/// message, and the same state after every run (runs cross its internal chunk size); likewise
/// `replay_batch` and `replay`.
fn batched_like_one_by_one(
    mode: ClockMode,
    runs: &[(i32, i64, Vec<Option<Ev>>, bool)],
) -> Result<(), TestCaseError> {
    let config = config(mode);
    let mut one_by_one = Engine::new(config.clone()).unwrap();
    let mut batched = Engine::new(config).unwrap();
    let mut wall = BASE_MS;
    for (partition, wall_step_ms, messages, replay) in runs {
        wall += wall_step_ms;
        let payloads: Vec<String> = messages
            .iter()
            .map(|m| {
                m.as_ref().map_or_else(
                    || r#"{"event_id":"x","type":"survey_response""#.to_string(),
                    |e| e.json(wall + e.offset_ms),
                )
            })
            .collect();
        let source = SourcePartition { topic: 0, partition: *partition };
        let slices: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
        if *replay {
            for payload in &slices {
                one_by_one.replay(source, payload, wall);
            }
            batched.replay_batch(source, &slices, wall);
        } else {
            let want: Vec<Outcome> =
                slices.iter().map(|p| one_by_one.process(source, p, wall)).collect();
            let mut got = Vec::new();
            batched.process_batch(source, &slices, wall, |i, outcome| got.push((i, outcome)));
            let want: Vec<(usize, Outcome)> = want.into_iter().enumerate().collect();
            prop_assert_eq!(got, want);
        }
        let (a, b) = (one_by_one.snapshot(wall), batched.snapshot(wall));
        prop_assert_eq!(a.clock_ms, b.clock_ms);
        prop_assert_eq!(&a.pipeline, &b.pipeline);
        prop_assert_eq!(&a.state, &b.state);
        prop_assert_eq!(a.series.len(), b.series.len());
        for (x, y) in a.series.iter().zip(&b.series) {
            prop_assert_eq!((&x.brand, &x.segment, &x.windows), (&y.brand, &y.segment, &y.windows));
            prop_assert_eq!(
                (&x.active_at_start, x.active_now, x.survey_totals),
                (&y.active_at_start, y.active_now, y.survey_totals)
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(200))]

    #[test]
    fn batches_match_one_by_one_on_the_event_clock(runs in prop::collection::vec(run_strategy(), 1..12)) {
        batched_like_one_by_one(ClockMode::Event, &runs)?;
    }

    #[test]
    fn batches_match_one_by_one_on_the_wall_clock(runs in prop::collection::vec(run_strategy(), 1..12)) {
        batched_like_one_by_one(ClockMode::Wall, &runs)?;
    }
}
