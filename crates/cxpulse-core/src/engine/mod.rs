//! The engine: validated events in, windowed state out. No I/O and no clock reads: every call
//! takes the wall-clock time from the caller.
//!
//! State is kept per source partition (`partition`: its window contribution, its remembered ids
//! and its correctable answers apart), so a partition lost in a rebalance takes exactly its own
//! contribution with it. Series (brand/segment pairs) are interned once per engine (`series`).
//! Checkpoints and restores are `persist`'s; the memory budget is `budget`'s.

mod budget;
mod partition;
mod persist;
mod series;
mod shared;

use std::collections::HashMap;

use ahash::RandomState;

use crate::age::AgeHistogram;
use crate::buckets::{live_from, span_of, Key};
use crate::customers::{CustomerBook, CustomerCounts, CustomerEvent, Touch};
use crate::drop_evidence::{DropSettings, SettingsTag};
use crate::event::{Action, Event, NpsCategory, Payload, RejectReason, Rejection, Survey};
use crate::feed::{FeedItem, FeedParts, FeedStatus};
// Re-exported where they used to live, for callers that name them by this path.
pub use crate::event::{SourcePartition, OVERFLOW_LABEL};
use crate::parse::parse_event;
use crate::snapshot::{PipelineCounts, SeriesSnapshot, Snapshot, StateStats};
use crate::window::{Base, Contribution, Counter, Counts, WindowSpec, PANES_PER_WINDOW};

use partition::{survey_category_index, survey_counter, Answer, PartitionState};
pub use persist::{CheckpointBatch, RestoreError};
pub use series::SeriesId;
use series::SeriesTable;
pub use shared::SharedEngine;

type FastMap<K, V> = HashMap<K, V, RandomState>;

/// Messages `process_batch` parses, prefetching their dedup slots, before counting them: enough
/// for the misses to be over when counting starts, few enough that the lines are still cached.
const BATCH_CHUNK: usize = 32;

/// The 64-bit key an id is held by: an event id in the dedup memory, a `response_id` among the
/// correctable answers (and within its customer), a `customer_id` in the customer book.
fn key_of(id: &str) -> Key {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// What counting an event looks it up by, worked out before: the hashes of its ids and, for an
/// event of a customer when the engine knows its brand/segment pair already, the pair's series.
struct Prepared {
    /// The key the event is remembered by in the dedup memory.
    id: Key,
    /// Its `response_id`'s, for an answer that has one.
    response: Option<Key>,
    /// Its `customer_id`'s and what the customer did, for an event the customer book takes.
    customer: Option<(Key, Touch)>,
    series: Option<SeriesId>,
}

impl Prepared {
    /// Without `series`, the series is left to the counting.
    fn of(event: &Event<'_>, series: Option<&SeriesTable>) -> Self {
        let (response, customer_id) = match &event.payload {
            Payload::Survey { response_id, customer_id, .. } => {
                (response_id.as_deref().map(key_of), customer_id.as_deref())
            }
            Payload::Lifecycle { customer_id, .. } => (None, Some(&**customer_id)),
            Payload::CustomerBase { .. } => (None, None),
        };
        let customer = customer_touch(&event.payload, response)
            .zip(customer_id)
            .map(|(touch, id)| (key_of(id), touch));
        // The series is only worth finding here for the customer's slot, found with it.
        let series = series
            .filter(|_| customer.is_some())
            .and_then(|series| series.cached(&event.brand, &event.segment));
        Prepared { id: key_of(&event.event_id), response, customer, series }
    }

    /// Starts loading what counting the event looks up in `state` into the cache.
    fn prefetch(&self, state: &PartitionState) {
        state.dedup.prefetch(self.id);
        if let Some(response) = self.response {
            state.answers.prefetch(response);
        }
        if let (Some((customer, _)), Some(series), Some(book)) =
            (self.customer, self.series, &state.customers)
        {
            book.prefetch(series, customer);
        }
    }
}

/// Where the clock T comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockMode {
    /// T is the wall clock passed in by the caller.
    Wall,
    /// T is the highest event time seen: deterministic, for backfills and tests.
    Event,
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Window sizes, any order; the longest decides what is too old.
    pub windows: Vec<WindowSpec>,
    pub clock: ClockMode,
    pub max_future_skew_ms: i64,
    pub max_series: usize,
    /// How long an event id is remembered after it was first seen (on T).
    pub dedup_horizon_ms: i64,
    /// How long an answer with a `response_id` stays correctable (on T); at most the longest
    /// window (a longer one is cut to it).
    pub correction_horizon_ms: i64,
    /// Bytes of state past which the oldest ids and answers are forgotten early; `None`: no limit.
    pub state_memory_bytes: Option<u64>,
    /// The NPS-drop detector's settings (`[alerts]`), the same for every series.
    pub drop: DropSettings,
    /// Whether detractor answers (and corrections that resolve them) make feed messages, taken
    /// with `Engine::take_feed`.
    pub detractor_feed: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let windows = ["1h", "24h", "7d", "30d"]
            .into_iter()
            .filter_map(|name| WindowSpec::named(name).ok())
            .collect();
        EngineConfig {
            windows,
            clock: ClockMode::Wall,
            max_future_skew_ms: 5 * 60_000,
            max_series: 10_000,
            dedup_horizon_ms: 86_400_000,
            correction_horizon_ms: 86_400_000,
            state_memory_bytes: None,
            drop: DropSettings::default(),
            detractor_feed: false,
        }
    }
}

/// What became of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Counted,
    Duplicate,
    Rejected(Rejection),
}

/// The clock T and what follows from it, changed together.
struct Clock {
    now: Option<i64>,
    /// Each window's pane at T and the time it starts at, so that the hot path finds an event's
    /// pane without a division when it falls in the newest one.
    heads: Vec<i64>,
    head_starts: Vec<i64>,
    /// The oldest live dedup and answer buckets at T.
    dedup_live_from: i64,
    answers_live_from: i64,
}

impl Clock {
    fn set(&mut self, now_ms: i64, config: &EngineConfig) {
        self.now = Some(now_ms);
        let windows = &config.windows;
        for ((head, start), window) in
            self.heads.iter_mut().zip(self.head_starts.iter_mut()).zip(windows)
        {
            *head = window.pane_of(now_ms);
            *start = head.saturating_mul(window.step_ms);
        }
        let dedup = config.dedup_horizon_ms;
        self.dedup_live_from = live_from(now_ms, dedup, span_of(dedup));
        let answers = config.correction_horizon_ms;
        self.answers_live_from = live_from(now_ms, answers, span_of(answers));
    }
}

pub struct Engine {
    config: EngineConfig,
    /// Index of the longest window in `config.windows`.
    longest: usize,
    future_panes: Vec<usize>,
    clock: Clock,
    series: SeriesTable,
    partitions: FastMap<SourcePartition, PartitionState>,
    /// Set while `replay` runs: process-wide counters are not moved twice.
    replaying: bool,
    /// A table grew since the memory budget was last checked.
    grew: bool,
    pipeline: PipelineCounts,
    evictions: budget::Evictions,
    age: AgeHistogram,
    /// Detractor feed messages not yet taken (`take_feed`), and the index in the current batch
    /// of the message being counted.
    feed: Vec<FeedItem>,
    batch_index: usize,
    /// `config.drop`'s fingerprint, taken once.
    drop_tag: SettingsTag,
}

/// Why an engine cannot be built from a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineError {
    NoWindows,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::NoWindows => f.write_str("at least one window size is needed"),
        }
    }
}

impl std::error::Error for EngineError {}

impl Engine {
    pub fn new(mut config: EngineConfig) -> Result<Self, EngineError> {
        if config.windows.is_empty() {
            return Err(EngineError::NoWindows);
        }
        let window_count = config.windows.len();
        let longest =
            (0..config.windows.len()).max_by_key(|&i| config.windows[i].size_ms).unwrap_or(0);
        config.correction_horizon_ms =
            config.correction_horizon_ms.clamp(0, config.windows[longest].size_ms);
        config.dedup_horizon_ms = config.dedup_horizon_ms.max(0);
        // The overflow series takes one id more.
        config.max_series = config.max_series.min(partition::ANSWER_SERIES_LIMIT as usize - 2);
        let future_panes = config
            .windows
            .iter()
            .map(|w| match config.clock {
                ClockMode::Wall => (config.max_future_skew_ms.max(0) / w.step_ms + 1) as usize,
                ClockMode::Event => 0,
            })
            .collect();
        Ok(Engine {
            drop_tag: config.drop.tag(),
            config,
            longest,
            future_panes,
            clock: Clock {
                now: None,
                heads: vec![0; window_count],
                head_starts: vec![0; window_count],
                dedup_live_from: i64::MIN,
                answers_live_from: i64::MIN,
            },
            series: SeriesTable::default(),
            partitions: FastMap::default(),
            replaying: false,
            grew: false,
            pipeline: PipelineCounts::default(),
            evictions: budget::Evictions::default(),
            age: AgeHistogram::new(),
            feed: Vec::new(),
            batch_index: 0,
        })
    }

    /// The detractor feed messages of the messages counted since the last call, each with its
    /// message's index in the batch it came in (`EngineConfig::detractor_feed`).
    pub fn take_feed(&mut self) -> Vec<FeedItem> {
        std::mem::take(&mut self.feed)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Pipeline counters since start.
    pub fn pipeline(&self) -> &PipelineCounts {
        &self.pipeline
    }

    /// The clock T as the engine last saw it.
    pub fn clock_ms(&self) -> Option<i64> {
        self.clock.now
    }

    fn new_partition_state(&self) -> PartitionState {
        PartitionState::new(self.config.dedup_horizon_ms, self.config.correction_horizon_ms)
    }

    /// Parses, validates and counts one Kafka message. `wall_ms` is the caller's clock reading.
    pub fn process(&mut self, partition: SourcePartition, payload: &[u8], wall_ms: i64) -> Outcome {
        self.pipeline.consumed += 1;
        self.batch_index = 0;
        let outcome = match parse_event(payload) {
            Ok(event) => {
                let prepared = Prepared::of(&event, None);
                self.apply(partition, &event, &prepared, wall_ms)
            }
            Err(rejection) => Outcome::Rejected(rejection),
        };
        self.count_outcome(&outcome);
        self.enforce_budget_if_grown();
        outcome
    }

    /// `process` for consecutive messages of one partition, with the same outcomes, handed to
    /// `outcome_of` with each message's index. Faster: each chunk of messages is parsed first,
    /// prefetching every event's dedup slots on the way, so that the cache misses of those
    /// lookups overlap with the parsing instead of stalling the counting one event at a time.
    pub fn process_batch(
        &mut self,
        partition: SourcePartition,
        payloads: &[&[u8]],
        wall_ms: i64,
        outcome_of: impl FnMut(usize, Outcome),
    ) {
        self.batch(partition, payloads, wall_ms, false, outcome_of);
    }

    /// `replay` for consecutive messages of one partition, as fast as `process_batch`.
    pub fn replay_batch(&mut self, partition: SourcePartition, payloads: &[&[u8]], wall_ms: i64) {
        self.batch(partition, payloads, wall_ms, true, |_, _| {});
    }

    fn batch(
        &mut self,
        partition: SourcePartition,
        payloads: &[&[u8]],
        wall_ms: i64,
        replay: bool,
        mut outcome_of: impl FnMut(usize, Outcome),
    ) {
        // The partition's state is taken out for the batch: one lookup instead of one per event.
        let taken = self.partitions.remove(&partition);
        let mut keep_state = taken.is_some();
        let mut state = taken.unwrap_or_else(|| self.new_partition_state());
        let mut parsed = Vec::with_capacity(BATCH_CHUNK.min(payloads.len()));
        for (chunk_index, chunk) in payloads.chunks(BATCH_CHUNK).enumerate() {
            parsed.clear();
            let series = state.customers.is_some().then_some(&self.series);
            parsed.extend(chunk.iter().map(|payload| {
                parse_event(payload).map(|event| {
                    let prepared = Prepared::of(&event, series);
                    prepared.prefetch(&state);
                    (event, prepared)
                })
            }));
            // By reference: an event is over a hundred bytes, not worth moving again.
            for (i, event) in parsed.iter().enumerate() {
                if replay {
                    self.pipeline.replayed += 1;
                    self.replaying = true;
                } else {
                    self.pipeline.consumed += 1;
                }
                self.batch_index = chunk_index * BATCH_CHUNK + i;
                let outcome = match event {
                    Ok((event, prepared)) => {
                        keep_state = true;
                        self.apply_in(&mut state, event, prepared, wall_ms)
                    }
                    Err(rejection) => Outcome::Rejected(rejection.clone()),
                };
                self.replaying = false;
                if !replay {
                    self.count_outcome(&outcome);
                }
                outcome_of(chunk_index * BATCH_CHUNK + i, outcome);
            }
        }
        // As with `process`, a partition gets state from its first message that parses.
        if keep_state {
            self.partitions.insert(partition, state);
        }
        self.enforce_budget_if_grown();
    }

    /// Like `process`, for a message an earlier owner of the partition already handled (a
    /// rebuild by replay): the windows take it in, but the pipeline counters, which that owner
    /// already moved, only count it as replayed.
    pub fn replay(&mut self, partition: SourcePartition, payload: &[u8], wall_ms: i64) -> Outcome {
        self.pipeline.replayed += 1;
        self.replaying = true;
        let outcome = match parse_event(payload) {
            Ok(event) => {
                let prepared = Prepared::of(&event, None);
                self.apply(partition, &event, &prepared, wall_ms)
            }
            Err(rejection) => Outcome::Rejected(rejection),
        };
        self.replaying = false;
        self.enforce_budget_if_grown();
        outcome
    }

    fn count_outcome(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Counted => self.pipeline.counted += 1,
            Outcome::Duplicate => self.pipeline.duplicates += 1,
            Outcome::Rejected(rejection) => self.pipeline.rejected[rejection.reason.index()] += 1,
        }
    }

    /// Counts a parsed event (the pipeline counters are `process`'s job).
    fn apply(
        &mut self,
        partition: SourcePartition,
        event: &Event<'_>,
        prepared: &Prepared,
        wall_ms: i64,
    ) -> Outcome {
        let mut state =
            self.partitions.remove(&partition).unwrap_or_else(|| self.new_partition_state());
        let outcome = self.apply_in(&mut state, event, prepared, wall_ms);
        self.partitions.insert(partition, state);
        outcome
    }

    /// [`Engine::apply`] to the state of the event's partition, which the caller holds.
    fn apply_in(
        &mut self,
        state: &mut PartitionState,
        event: &Event<'_>,
        prepared: &Prepared,
        wall_ms: i64,
    ) -> Outcome {
        let id_hash = prepared.id;
        if self.config.clock == ClockMode::Wall {
            self.advance_clock(wall_ms);
        }
        let occurred = event.occurred_at_ms;
        let (dedup_horizon, correction_horizon) =
            (self.config.dedup_horizon_ms, self.config.correction_horizon_ms);
        if state.dedup.contains(id_hash, self.clock.dedup_live_from) {
            return Outcome::Duplicate;
        }
        if let Some(rejection) =
            check_time(&self.config, &self.clock, self.longest, occurred, wall_ms)
        {
            return Outcome::Rejected(rejection);
        }
        if self.config.clock == ClockMode::Event && self.clock.now.is_none_or(|t| occurred > t) {
            self.clock.set(occurred, &self.config);
        }
        let clock = self.clock.now.unwrap_or(occurred);
        if state.dedup.oldest().is_some_and(|b| b < self.clock.dedup_live_from) {
            state.dedup.expire(self.clock.dedup_live_from);
        }
        if dedup_horizon > 0 {
            self.grew |= state.dedup.insert(id_hash, (), clock, state.book.is_incremental());
        }

        // An event of a customer may have found its series already, for the prefetch. Producers
        // key by brand/segment, so a partition mostly sees the series it saw last: two short
        // comparisons instead of hashing both labels. (The overflow series never matches: its
        // label is refused in events.)
        let (series, overflowed) = match prepared.series.or_else(|| {
            state.last_series.filter(|&id| self.series.is(id, &event.brand, &event.segment))
        }) {
            Some(id) => (id, false),
            None => self.series.intern(&event.brand, &event.segment, self.config.max_series),
        };
        state.last_series = Some(series);
        if overflowed {
            self.pipeline.series_overflow += 1;
        }

        let contribution = match &event.payload {
            Payload::Survey { survey, .. } => {
                if let Survey::Nps { score } = survey {
                    let value = match Survey::nps_category(*score) {
                        NpsCategory::Promoter => 1,
                        NpsCategory::Passive => 0,
                        NpsCategory::Detractor => -1,
                    };
                    let detector = state.drops.entry(series).or_default();
                    detector.observe_tagged(value, occurred, &self.config.drop, self.drop_tag);
                }
                let (counter, ces_score) = survey_counter(*survey);
                if !self.replaying {
                    let info = &mut self.series.list[series as usize];
                    info.survey_totals[survey_category_index(*survey)] += 1;
                    info.last_answer_wall_ms = Some(wall_ms);
                }
                Contribution::One { counter, ces_score, active_delta: 0 }
            }
            Payload::Lifecycle { action, .. } => Contribution::One {
                counter: Counter::Action(action.index()),
                ces_score: 0,
                active_delta: action.active_delta(),
            },
            Payload::CustomerBase { active_customers } => Contribution::Base(Base {
                time_ms: occurred,
                value: i64::try_from(*active_customers).unwrap_or(i64::MAX),
            }),
        };
        let panes = PaneFinder {
            windows: &self.config.windows,
            heads: &self.clock.heads,
            head_starts: &self.clock.head_starts,
        };
        let rings = state.rings_of(series, &self.clock.heads, &self.future_panes);
        for (w, ring) in rings.iter_mut().enumerate() {
            ring.advance(self.clock.heads[w]);
            ring.apply(panes.pane(w, occurred), &contribution, false);
        }

        let mut replaced_detractor = false;
        // Hashed once: the answer's correction key, and its customer's match of answers.
        let response_key = prepared.response;
        if let (Payload::Survey { survey, .. }, Some(key)) = (&event.payload, response_key) {
            let live_from = self.clock.answers_live_from;
            if state.answers.oldest().is_some_and(|b| b < live_from) {
                state.answers.expire(live_from);
            }
            if let Some(old) = state.answers.get(key, live_from).copied() {
                replaced_detractor = old.category() == NpsCategory::Detractor as u8;
                // The replaced answer leaves every window it is still in.
                if let Some(Some(rings)) = state.series.get_mut(old.series() as usize) {
                    let old_counts = Contribution::Counts(old.counts());
                    for (ring, window) in rings.iter_mut().zip(&self.config.windows) {
                        ring.apply(window.pane_of(old.occurred_at_ms()), &old_counts, true);
                    }
                }
                self.pipeline.corrections += 1;
            } else if occurred < clock.saturating_sub(correction_horizon) {
                // Old enough that an earlier answer under this id would have been forgotten.
                self.pipeline.corrections_unmatched += 1;
            }
            let (_, ces_score) = survey_counter(*survey);
            let category = survey_category_index(*survey) as u8;
            // Series ids stay below the answer's limit: `Engine::new` caps `max_series` under it.
            let answer = Answer::new(occurred, series, category, ces_score as u8);
            if let Some(answer) = answer.filter(|_| correction_horizon > 0) {
                let track = state.book.is_incremental();
                self.grew |= state.answers.insert(key, answer, clock, track);
            }
        }
        if let Some((customer, touch)) = prepared.customer {
            let book = state.customers.get_or_insert_with(|| {
                Box::new(CustomerBook::new(
                    &self.config.windows,
                    &self.future_panes,
                    &self.clock.heads,
                ))
            });
            book.set_clock(&self.clock.heads);
            // The engine refused events outside the windows already: the book takes the rest.
            book.apply(&CustomerEvent { series, customer, occurred_at_ms: occurred, touch });
        }
        if self.config.detractor_feed && !self.replaying {
            self.feed_message(event, replaced_detractor);
        }
        self.pipeline.last_event_ms =
            Some(self.pipeline.last_event_ms.map_or(occurred, |t| t.max(occurred)));
        if !self.replaying {
            self.age.record(wall_ms, wall_ms.saturating_sub(occurred));
        }
        Outcome::Counted
    }

    /// The feed message of a counted NPS answer, if it makes one: `open` for a score of 0–6,
    /// `resolved` for a correction that lifts an answer that was 0–6 above it. (An answer replayed
    /// from before the partition's committed offset made its message with its first owner.)
    fn feed_message(&mut self, event: &Event<'_>, replaced_detractor: bool) {
        let Payload::Survey { survey: Survey::Nps { score }, response_id, customer_id, comment } =
            &event.payload
        else {
            return;
        };
        let status = match Survey::nps_category(*score) {
            NpsCategory::Detractor => FeedStatus::Open,
            _ if replaced_detractor => FeedStatus::Resolved,
            _ => return,
        };
        let parts = FeedParts {
            response_id: response_id.as_deref(),
            customer_id: customer_id.as_deref(),
            comment: comment.as_deref(),
        };
        self.feed.push(FeedItem::new(self.batch_index, event, parts, *score, status));
    }

    /// Moves the clock forward (never back).
    pub fn advance_clock(&mut self, now_ms: i64) {
        if self.clock.now.is_none_or(|t| now_ms > t) {
            self.clock.set(now_ms, &self.config);
        }
    }

    /// Forgets a partition's contribution and memory (it was revoked or is being rebuilt).
    pub fn drop_partition(&mut self, partition: SourcePartition) {
        self.partitions.remove(&partition);
    }

    /// [`Engine::drop_partition`] for several partitions at once (a revoke).
    pub fn drop_partitions(&mut self, partitions: &[SourcePartition]) {
        for partition in partitions {
            self.partitions.remove(partition);
        }
    }

    /// Drops the partition's buckets that the clock has left behind.
    fn expire_partition(&mut self, partition: SourcePartition) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.dedup.expire(self.clock.dedup_live_from);
            state.answers.expire(self.clock.answers_live_from);
        }
    }

    /// Housekeeping the hot path leaves for later: expire the buckets of idle partitions, rebuild
    /// a sparse bucket per partition, and keep to the memory budget. Call it every few seconds.
    pub fn maintain(&mut self, wall_ms: i64) {
        if self.config.clock == ClockMode::Wall {
            self.advance_clock(wall_ms);
        }
        for state in self.partitions.values_mut() {
            state.dedup.expire(self.clock.dedup_live_from);
            state.answers.expire(self.clock.answers_live_from);
            if !state.dedup.compact_one() {
                state.answers.compact_one();
            }
            if let Some(book) = state.customers.as_mut() {
                book.set_clock(&self.clock.heads);
                book.maintain();
            }
        }
        self.enforce_budget();
    }

    /// The windowed values of every series at the clock, summed over partitions, plus the
    /// pipeline counters. Advances every ring to the clock on the way.
    pub fn snapshot(&mut self, wall_ms: i64) -> Snapshot {
        self.snapshot_with(wall_ms, false)
    }

    /// [`Engine::snapshot`] plus each window's NPS counts per step (`SeriesSnapshot::nps_steps`),
    /// for trends.
    pub fn snapshot_with_steps(&mut self, wall_ms: i64) -> Snapshot {
        self.snapshot_with(wall_ms, true)
    }

    fn snapshot_with(&mut self, wall_ms: i64, with_steps: bool) -> Snapshot {
        if self.config.clock == ClockMode::Wall {
            self.advance_clock(wall_ms);
        }
        let window_count = self.config.windows.len();
        let mut series: Vec<SeriesSnapshot> = self
            .series
            .list
            .iter()
            .map(|info| SeriesSnapshot {
                brand: info.brand.clone(),
                segment: info.segment.clone(),
                windows: vec![Counts::default(); window_count],
                active_at_start: vec![None; window_count],
                active_now: None,
                survey_totals: info.survey_totals,
                last_answer_wall_ms: info.last_answer_wall_ms,
                nps_steps: if with_steps {
                    vec![vec![[0; 3]; PANES_PER_WINDOW as usize]; window_count]
                } else {
                    Vec::new()
                },
                nps_drop_evidence: 0.0,
                customers: vec![CustomerCounts::default(); window_count],
            })
            .collect();
        for state in self.partitions.values() {
            for (&id, detector) in &state.drops {
                if let Some(out) = series.get_mut(id as usize) {
                    let evidence = detector.evidence(&self.config.drop);
                    out.nps_drop_evidence = out.nps_drop_evidence.max(evidence);
                }
            }
        }
        if self.clock.now.is_some() {
            for state in self.partitions.values_mut() {
                for &id in &state.present {
                    let slot = id as usize;
                    let (Some(Some(rings)), Some(out)) =
                        (state.series.get_mut(slot), series.get_mut(slot))
                    else {
                        continue;
                    };
                    for (i, (ring, head)) in rings.iter_mut().zip(&self.clock.heads).enumerate() {
                        ring.advance(*head);
                        out.windows[i].add(ring.sum());
                        if let Some(steps) = out.nps_steps.get_mut(i) {
                            for (step, counts) in steps.iter_mut().zip(ring.steps()) {
                                for (total, n) in step.iter_mut().zip(counts.nps) {
                                    *total = total.wrapping_add(n);
                                }
                            }
                        }
                        out.active_at_start[i] =
                            merge_active(out.active_at_start[i], ring.active_at_start());
                        if i == self.longest {
                            out.active_now = merge_active(out.active_now, ring.active_now());
                        }
                    }
                }
                let Some(book) = state.customers.as_mut() else { continue };
                book.set_clock(&self.clock.heads);
                for id in book.series().to_vec() {
                    let Some(out) = series.get_mut(id as usize) else { continue };
                    for (total, counts) in out.customers.iter_mut().zip(book.counts(id)) {
                        total.add(&counts);
                    }
                }
            }
        }
        Snapshot {
            clock_ms: self.clock.now,
            windows: self.config.windows.clone(),
            series,
            pipeline: self.pipeline.clone(),
            partitions: self.partitions.len(),
            state: self.state_stats(),
            event_age_quantiles_ms: self.age.quantiles(wall_ms),
            event_age_sum_ms: self.age.sum_ms(),
            event_age_count: self.age.count(),
        }
    }

    /// What the engine remembers, by kind (`snapshot::STATE_KINDS` order).
    pub fn state_stats(&self) -> StateStats {
        let mut stats = StateStats::default();
        for state in self.partitions.values() {
            stats.bytes[0] += state.dedup.bytes() as u64;
            stats.entries[0] += state.dedup.len() as u64;
            stats.bytes[1] += state.answers.bytes() as u64;
            stats.entries[1] += state.answers.len() as u64;
            stats.bytes[2] += state.window_bytes() as u64;
            stats.entries[2] += state.present.len() as u64;
            if let Some(book) = &state.customers {
                stats.bytes[3] += book.bytes() as u64;
                stats.entries[3] += book.entries() as u64;
            }
        }
        let longest = self.config.windows[self.longest].size_ms;
        let horizons =
            [self.config.dedup_horizon_ms, self.config.correction_horizon_ms, longest, longest];
        for (kind, horizon) in horizons.into_iter().enumerate() {
            stats.horizon_ms[kind] = self.evictions.horizon_kept(kind, horizon, self.clock.now);
            stats.horizon_configured_ms[kind] = horizon;
            stats.evictions[kind] = self.evictions.entries(kind);
        }
        stats
    }
}

/// What an event tells the customer book, if anything: a purchase, a churn, or an NPS answer of
/// a named customer.
fn customer_touch(payload: &Payload<'_>, response_key: Option<Key>) -> Option<Touch> {
    match payload {
        Payload::Lifecycle { action: Action::Purchase, .. } => Some(Touch::Purchase),
        Payload::Lifecycle { action: Action::Churn, .. } => Some(Touch::Churn),
        Payload::Survey { survey: Survey::Nps { score }, customer_id: Some(_), .. } => {
            Some(Touch::Answer { category: Survey::nps_category(*score), response: response_key })
        }
        _ => None,
    }
}

/// Whether an event at `occurred` is too far ahead of the clock or older than the longest window.
fn check_time(
    config: &EngineConfig,
    clock: &Clock,
    longest: usize,
    occurred: i64,
    wall_ms: i64,
) -> Option<Rejection> {
    // The event clock follows events, but not past the wall clock: one event stamped in
    // year 9999 would otherwise push every later event out as too old.
    let reference = match config.clock {
        ClockMode::Wall => clock.now.unwrap_or(wall_ms),
        ClockMode::Event => wall_ms,
    };
    if occurred > reference.saturating_add(config.max_future_skew_ms) {
        return Some(Rejection::new(
            RejectReason::TooFarInFuture,
            format!("occurred_at is {} ms ahead of the clock", occurred - reference),
        ));
    }
    // Before the first event the event clock has no T, so nothing is too old yet.
    clock.now?;
    let window = &config.windows[longest];
    let oldest_start = (clock.heads[longest] - PANES_PER_WINDOW + 1).saturating_mul(window.step_ms);
    if occurred < oldest_start {
        return Some(Rejection::new(
            RejectReason::TooOld,
            format!("occurred_at is older than the longest window ({})", window.name),
        ));
    }
    None
}

/// Finds an event's pane in each window, dividing only when it is not in the newest pane (live
/// traffic mostly is, in all but the shortest window).
struct PaneFinder<'a> {
    windows: &'a [WindowSpec],
    heads: &'a [i64],
    head_starts: &'a [i64],
}

impl PaneFinder<'_> {
    #[inline]
    fn pane(&self, window: usize, at_ms: i64) -> i64 {
        let step = self.windows[window].step_ms;
        match at_ms.wrapping_sub(self.head_starts[window]) {
            since if (0..step).contains(&since) => self.heads[window],
            _ => self.windows[window].pane_of(at_ms),
        }
    }
}

/// Sums per-partition active counts. A partition without a base contributes its net moves, so a
/// base on one partition plus moves on others still adds up; the sum is known once any is.
fn merge_active(acc: Option<(i64, bool)>, anchor: crate::window::Anchor) -> Option<(i64, bool)> {
    let (value, known) = acc.unwrap_or((0, false));
    Some((value.saturating_add(anchor.value), known || anchor.known().is_some()))
}

#[cfg(test)]
mod tests;
