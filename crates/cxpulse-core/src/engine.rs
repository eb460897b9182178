//! The engine: validated events in, windowed state out. No I/O and no clock reads: every call
//! takes the wall-clock time from the caller.
//!
//! State is kept per source partition (each partition's window contribution and dedup memory
//! apart), so a partition lost in a rebalance takes exactly its own contribution with it. Series
//! (brand/segment pairs) are interned once per engine and capped at `max_series`.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use ahash::RandomState;

use crate::age::AgeHistogram;
use crate::checkpoint::{PartitionCheckpoint, ResponseCheckpoint, SeriesCheckpoint};
use crate::dedup::{DedupTable, Probe};
use crate::event::{
    is_label_value, Event, Payload, RejectReason, Rejection, Survey, MAX_ACTIVE_CUSTOMERS,
    MAX_OCCURRED_AT_MS,
};
// Re-exported where they used to live, for callers that name them by this path.
pub use crate::event::{SourcePartition, OVERFLOW_LABEL};
use crate::parse::parse_event;
use crate::snapshot::{PipelineCounts, SeriesSnapshot, Snapshot};
use crate::window::{Base, Contribution, Counter, Counts, Ring, WindowSpec, PANES_PER_WINDOW};

type FastMap<K, V> = HashMap<K, V, RandomState>;

/// Maps keyed by an xxh3-128 hash of an id: the key is already uniformly random, so hashing it
/// again (as a general-purpose hasher would) only costs time.
type IdMap<V> = HashMap<u128, V, BuildHasherDefault<IdHasher>>;

/// The [`IdMap`] hasher: folds the two halves of a 128-bit key that is itself a hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = (key as u64) ^ ((key >> 64) as u64);
    }

    // Only u128 keys are hashed with it; any other input is still hashed, just slowly.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

/// Messages `process_batch` parses, prefetching their dedup slots, before counting them: enough
/// for the misses to be over when counting starts, few enough that the lines are still cached.
const BATCH_CHUNK: usize = 32;

/// Fewest remembered ids a drop sweeps the dedup table for; below, a removal per id is cheaper
/// than reading the whole table.
const SWEEP_MIN_IDS: usize = 4_096;

/// The key an event is remembered by in the dedup memory.
fn id_hash(event: &Event<'_>) -> u128 {
    xxhash_rust::xxh3::xxh3_128(event.event_id.as_bytes())
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
    pub dedup_horizon_ms: i64,
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

/// Index into the engine's series table.
pub type SeriesId = u32;

struct SeriesInfo {
    brand: Arc<str>,
    segment: Arc<str>,
    /// `cxpulse_survey_responses_total` by `snapshot::SURVEY_CATEGORIES` index.
    survey_totals: [u64; 7],
}

/// Interned brand/segment pairs; two-level so lookups borrow the event's strings.
#[derive(Default)]
struct SeriesTable {
    index: FastMap<Box<str>, FastMap<Box<str>, SeriesId>>,
    list: Vec<SeriesInfo>,
    overflow: Option<SeriesId>,
}

impl SeriesTable {
    /// The pair's id, interning it while under the cap; `(id, overflowed)`.
    fn intern(&mut self, brand: &str, segment: &str, max_series: usize) -> (SeriesId, bool) {
        if let Some(id) = self.index.get(brand).and_then(|segments| segments.get(segment)) {
            return (*id, false);
        }
        if self.list.len() - usize::from(self.overflow.is_some()) >= max_series {
            let id = match self.overflow {
                Some(id) => id,
                None => {
                    let id = self.push(OVERFLOW_LABEL, OVERFLOW_LABEL);
                    self.overflow = Some(id);
                    id
                }
            };
            return (id, true);
        }
        let id = self.push(brand, segment);
        self.index.entry(brand.into()).or_default().insert(segment.into(), id);
        (id, false)
    }

    /// Whether `id` is the pair `brand`/`segment`.
    fn is(&self, id: SeriesId, brand: &str, segment: &str) -> bool {
        self.list
            .get(id as usize)
            .is_some_and(|info| *info.brand == *brand && *info.segment == *segment)
    }

    fn push(&mut self, brand: &str, segment: &str) -> SeriesId {
        self.list.push(SeriesInfo {
            brand: brand.into(),
            segment: segment.into(),
            survey_totals: [0; 7],
        });
        (self.list.len() - 1) as SeriesId
    }
}

struct PartitionState {
    epoch: u64,
    /// Indexed by `SeriesId`: the series' windows in this partition, a ring per configured
    /// window; `None` where the partition never saw the series.
    series: Vec<Option<Box<[Ring]>>>,
    /// The ids whose slot is filled, so reads visit only those (a partition holds few of many).
    present: Vec<SeriesId>,
    /// Event-id hashes in the order first seen, with the clock at that moment, for expiry.
    dedup_order: VecDeque<(i64, u128)>,
    /// The series of the partition's last counted event.
    last_series: Option<SeriesId>,
}

impl PartitionState {
    fn new(next_epoch: &mut u64) -> Self {
        *next_epoch += 1;
        PartitionState {
            epoch: *next_epoch,
            series: Vec::new(),
            present: Vec::new(),
            dedup_order: VecDeque::new(),
            last_series: None,
        }
    }

    /// The series' rings in this partition, created at `heads` on first use.
    fn rings_of(&mut self, series: SeriesId, heads: &[i64], future_panes: &[usize]) -> &mut [Ring] {
        let slot = series as usize;
        if self.series.len() <= slot {
            self.series.resize_with(slot + 1, || None);
        }
        if self.series[slot].is_none() {
            self.present.push(series);
        }
        self.series[slot].get_or_insert_with(|| {
            heads.iter().zip(future_panes).map(|(head, f)| Ring::new(*head, *f)).collect()
        })
    }
}

/// The latest answer for a `response_id`, to take out again when it is corrected.
struct ResponseEntry {
    partition: SourcePartition,
    /// The partition state's epoch: a partition dropped and seen again is a new state.
    epoch: u64,
    series: SeriesId,
    occurred_at_ms: i64,
    counts: Counts,
}

pub struct Engine {
    config: EngineConfig,
    /// Index of the longest window in `config.windows`.
    longest: usize,
    future_panes: Vec<usize>,
    /// The clock T; for the event clock, `None` until the first event.
    clock_ms: Option<i64>,
    /// Each window's pane at T and the time it starts at, kept with the clock so that the hot path
    /// finds an event's pane without a division when it falls in the newest one.
    heads: Vec<i64>,
    head_starts: Vec<i64>,
    series: SeriesTable,
    partitions: FastMap<SourcePartition, PartitionState>,
    /// Event-id hash -> the partition whose dedup memory holds it, and the clock when first seen.
    dedup: DedupTable,
    responses: IdMap<ResponseEntry>,
    next_epoch: u64,
    /// Set while `replay` runs: process-wide counters are not moved twice.
    replaying: bool,
    pipeline: PipelineCounts,
    age: AgeHistogram,
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

/// Why a checkpoint cannot be restored: it was made with other windows, or it holds state no
/// engine could have written (a CRC proves only that the bytes are the ones written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    OtherWindows { checkpoint_ms: Vec<i64>, configured_ms: Vec<i64> },
    WrongWindowCount,
    InvalidSeriesLabels,
    RingOutOfRange,
    ImpossibleActiveCounts,
    InvalidAnswerLabels,
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::OtherWindows { checkpoint_ms, configured_ms } => write!(
                f,
                "checkpoint windows {checkpoint_ms:?} differ from the configured {configured_ms:?}"
            ),
            RestoreError::WrongWindowCount => {
                f.write_str("checkpoint series has the wrong number of windows")
            }
            RestoreError::InvalidSeriesLabels => {
                f.write_str("checkpoint series has invalid labels")
            }
            RestoreError::RingOutOfRange => {
                f.write_str("checkpoint ring is outside the representable time range")
            }
            RestoreError::ImpossibleActiveCounts => {
                f.write_str("checkpoint ring holds active-customer counts no events can make")
            }
            RestoreError::InvalidAnswerLabels => {
                f.write_str("checkpoint answer has invalid labels")
            }
        }
    }
}

impl std::error::Error for RestoreError {}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        if config.windows.is_empty() {
            return Err(EngineError::NoWindows);
        }
        let window_count = config.windows.len();
        let longest =
            (0..config.windows.len()).max_by_key(|&i| config.windows[i].size_ms).unwrap_or(0);
        let future_panes = config
            .windows
            .iter()
            .map(|w| match config.clock {
                ClockMode::Wall => (config.max_future_skew_ms.max(0) / w.step_ms + 1) as usize,
                ClockMode::Event => 0,
            })
            .collect();
        Ok(Engine {
            config,
            longest,
            future_panes,
            clock_ms: None,
            heads: vec![0; window_count],
            head_starts: vec![0; window_count],
            series: SeriesTable::default(),
            partitions: FastMap::default(),
            dedup: DedupTable::default(),
            responses: IdMap::default(),
            next_epoch: 0,
            replaying: false,
            pipeline: PipelineCounts::default(),
            age: AgeHistogram::new(),
        })
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
        self.clock_ms
    }

    /// Parses, validates and counts one Kafka message. `wall_ms` is the caller's clock reading.
    pub fn process(&mut self, partition: SourcePartition, payload: &[u8], wall_ms: i64) -> Outcome {
        self.pipeline.consumed += 1;
        let outcome = match parse_event(payload) {
            Ok(event) => self.apply(partition, &event, id_hash(&event), wall_ms),
            Err(rejection) => Outcome::Rejected(rejection),
        };
        self.count_outcome(&outcome);
        outcome
    }

    /// `process` for consecutive messages of one partition, with the same outcomes, handed to
    /// `outcome_of` with each message's index. Faster: each chunk of messages is parsed first,
    /// prefetching every event's dedup slot on the way, so that the cache misses of those lookups
    /// overlap with the parsing instead of stalling the counting one event at a time.
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
        let mut parsed = Vec::with_capacity(BATCH_CHUNK.min(payloads.len()));
        for (chunk_index, chunk) in payloads.chunks(BATCH_CHUNK).enumerate() {
            parsed.clear();
            parsed.extend(chunk.iter().map(|payload| {
                parse_event(payload).map(|event| {
                    let hash = id_hash(&event);
                    self.dedup.prefetch(hash);
                    (event, hash)
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
                let outcome = match event {
                    Ok((event, hash)) => self.apply(partition, event, *hash, wall_ms),
                    Err(rejection) => Outcome::Rejected(rejection.clone()),
                };
                self.replaying = false;
                if !replay {
                    self.count_outcome(&outcome);
                }
                outcome_of(chunk_index * BATCH_CHUNK + i, outcome);
            }
        }
    }

    /// Like `process`, for a message an earlier owner of the partition already handled (a
    /// rebuild by replay): the windows take it in, but the pipeline counters, which that owner
    /// already moved, only count it as replayed.
    pub fn replay(&mut self, partition: SourcePartition, payload: &[u8], wall_ms: i64) -> Outcome {
        self.pipeline.replayed += 1;
        self.replaying = true;
        let outcome = match parse_event(payload) {
            Ok(event) => self.apply(partition, &event, id_hash(&event), wall_ms),
            Err(rejection) => Outcome::Rejected(rejection),
        };
        self.replaying = false;
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
        id_hash: u128,
        wall_ms: i64,
    ) -> Outcome {
        if self.config.clock == ClockMode::Wall {
            self.advance_clock(wall_ms);
        }
        let occurred = event.occurred_at_ms;
        let horizon = self.clock_ms.map_or(i64::MIN, |t| t - self.config.dedup_horizon_ms);
        // One probe: the slot found here is the one filled in below.
        let probe = self.dedup.probe(id_hash);
        if let Probe::Found(index) = probe {
            if self.dedup.at(index).1 > horizon {
                return Outcome::Duplicate;
            }
        }
        if let Some(rejection) =
            check_time(&self.config, self.clock_ms, &self.heads, self.longest, occurred, wall_ms)
        {
            return Outcome::Rejected(rejection);
        }
        if self.config.clock == ClockMode::Event && self.clock_ms.is_none_or(|t| occurred > t) {
            self.clock_ms = Some(occurred);
            set_heads(&mut self.heads, &mut self.head_starts, &self.config.windows, occurred);
        }
        let clock = self.clock_ms.unwrap_or(occurred);
        self.dedup.fill(probe, id_hash, partition, clock);

        let epochs = &mut self.next_epoch;
        let state = self.partitions.entry(partition).or_insert_with(|| PartitionState::new(epochs));
        // Producers key by brand/segment, so a partition mostly sees the series it saw last: two
        // short comparisons instead of hashing both labels. (The overflow series never matches:
        // its label is refused in events.)
        let (series, overflowed) = match state
            .last_series
            .filter(|&id| self.series.is(id, &event.brand, &event.segment))
        {
            Some(id) => (id, false),
            None => self.series.intern(&event.brand, &event.segment, self.config.max_series),
        };
        state.last_series = Some(series);
        if overflowed {
            self.pipeline.series_overflow += 1;
        }
        expire_dedup(state, partition, &mut self.dedup, clock - self.config.dedup_horizon_ms);
        state.dedup_order.push_back((clock, id_hash));
        let epoch = state.epoch;

        let contribution = match &event.payload {
            Payload::Survey { survey, .. } => {
                let (counter, ces_score) = survey_counter(*survey);
                if !self.replaying {
                    self.series.list[series as usize].survey_totals
                        [survey_category_index(*survey)] += 1;
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
        if self.clock_ms.is_some() {
            let panes = PaneFinder {
                windows: &self.config.windows,
                heads: &self.heads,
                head_starts: &self.head_starts,
            };
            for (w, ring) in
                state.rings_of(series, &self.heads, &self.future_panes).iter_mut().enumerate()
            {
                ring.advance(self.heads[w]);
                ring.apply(panes.pane(w, occurred), &contribution, false);
            }
        }
        // After the windows took the answer in: taking the replaced one out needs its partition.
        if let (
            Payload::Survey { response_id: Some(response_id), .. },
            Contribution::One { counter, ces_score, .. },
        ) = (&event.payload, contribution)
        {
            let key = xxhash_rust::xxh3::xxh3_128(response_id.as_bytes());
            let counts = Counts::of(counter, ces_score);
            let entry =
                ResponseEntry { partition, epoch, series, occurred_at_ms: occurred, counts };
            if let Some(old) = self.responses.insert(key, entry) {
                self.retract(&old);
                self.pipeline.corrections += 1;
            }
        }
        self.pipeline.last_event_ms =
            Some(self.pipeline.last_event_ms.map_or(occurred, |t| t.max(occurred)));
        if !self.replaying {
            self.age.record(wall_ms, wall_ms.saturating_sub(occurred));
        }
        Outcome::Counted
    }

    /// Moves the clock forward (never back).
    pub fn advance_clock(&mut self, now_ms: i64) {
        if self.clock_ms.is_none_or(|t| now_ms > t) {
            self.clock_ms = Some(now_ms);
            set_heads(&mut self.heads, &mut self.head_starts, &self.config.windows, now_ms);
        }
    }

    /// Takes a replaced answer out of every window it is still in.
    fn retract(&mut self, old: &ResponseEntry) {
        if self.clock_ms.is_none() {
            return;
        }
        let Some(state) = self.partitions.get_mut(&old.partition).filter(|s| s.epoch == old.epoch)
        else {
            return;
        };
        let Some(Some(rings)) = state.series.get_mut(old.series as usize) else { return };
        for ((ring, window), head) in rings.iter_mut().zip(&self.config.windows).zip(&self.heads) {
            ring.advance(*head);
            ring.apply(window.pane_of(old.occurred_at_ms), &Contribution::Counts(old.counts), true);
        }
    }

    /// The partition's state as a checkpoint reflecting every message before `offset` (empty
    /// when the engine holds nothing for it).
    pub fn checkpoint(&self, partition: SourcePartition, offset: i64) -> PartitionCheckpoint {
        let mut checkpoint = PartitionCheckpoint {
            offset,
            window_sizes_ms: self.config.windows.iter().map(|w| w.size_ms).collect(),
            clock_ms: self.clock_ms,
            series: Vec::new(),
            dedup: Vec::new(),
            responses: Vec::new(),
        };
        let Some(state) = self.partitions.get(&partition) else { return checkpoint };
        for &id in &state.present {
            let slot = id as usize;
            let (Some(Some(windows)), Some(info)) =
                (state.series.get(slot), self.series.list.get(slot))
            else {
                continue;
            };
            checkpoint.series.push(SeriesCheckpoint {
                brand: info.brand.to_string(),
                segment: info.segment.to_string(),
                rings: windows.iter().map(Ring::export).collect(),
            });
        }
        checkpoint.dedup = state.dedup_order.iter().copied().collect();
        for (key, entry) in &self.responses {
            if entry.partition == partition && entry.epoch == state.epoch {
                let info = &self.series.list[entry.series as usize];
                checkpoint.responses.push(ResponseCheckpoint {
                    key: *key,
                    brand: info.brand.to_string(),
                    segment: info.segment.to_string(),
                    occurred_at_ms: entry.occurred_at_ms,
                    counts: entry.counts,
                });
            }
        }
        checkpoint
    }

    /// Replaces the partition's state with a checkpoint's. Fails (changing nothing) when the
    /// checkpoint was made with other windows.
    pub fn restore(
        &mut self,
        partition: SourcePartition,
        checkpoint: &PartitionCheckpoint,
    ) -> Result<(), RestoreError> {
        let sizes: Vec<i64> = self.config.windows.iter().map(|w| w.size_ms).collect();
        if checkpoint.window_sizes_ms != sizes {
            return Err(RestoreError::OtherWindows {
                checkpoint_ms: checkpoint.window_sizes_ms.clone(),
                configured_ms: sizes,
            });
        }
        validate_checkpoint(checkpoint, &self.config.windows)?;
        self.drop_partition(partition);
        if self.config.clock == ClockMode::Event {
            if let Some(clock) = checkpoint.clock_ms {
                self.advance_clock(clock);
            }
        }
        let mut state = PartitionState::new(&mut self.next_epoch);
        for series in &checkpoint.series {
            let id = self.intern_restored(&series.brand, &series.segment);
            let rings = series
                .rings
                .iter()
                .zip(&self.future_panes)
                .map(|(ring, f)| Ring::import(ring, *f))
                .collect();
            let slot = id as usize;
            if state.series.len() <= slot {
                state.series.resize_with(slot + 1, || None);
            }
            if state.series[slot].is_none() {
                state.present.push(id);
            }
            state.series[slot] = Some(rings);
        }
        for &(seen_at, id_hash) in &checkpoint.dedup {
            state.dedup_order.push_back((seen_at, id_hash));
            self.dedup.insert_if_absent(id_hash, partition, seen_at);
        }
        for response in &checkpoint.responses {
            let series = self.intern_restored(&response.brand, &response.segment);
            let entry = ResponseEntry {
                partition,
                epoch: state.epoch,
                series,
                occurred_at_ms: response.occurred_at_ms,
                counts: response.counts,
            };
            // An answer corrected meanwhile on another partition stays corrected.
            match self.responses.get_mut(&response.key) {
                Some(existing) if existing.partition != partition => {}
                Some(existing) => *existing = entry,
                None => {
                    self.responses.insert(response.key, entry);
                }
            }
        }
        self.partitions.insert(partition, state);
        Ok(())
    }

    fn intern_restored(&mut self, brand: &str, segment: &str) -> SeriesId {
        if brand == OVERFLOW_LABEL && segment == OVERFLOW_LABEL {
            if let Some(id) = self.series.overflow {
                return id;
            }
            let id = self.series.push(OVERFLOW_LABEL, OVERFLOW_LABEL);
            self.series.overflow = Some(id);
            return id;
        }
        self.series.intern(brand, segment, self.config.max_series).0
    }

    /// Forgets a partition's contribution and dedup memory (it was revoked or is being rebuilt).
    pub fn drop_partition(&mut self, partition: SourcePartition) {
        self.drop_partitions(&[partition]);
    }

    /// [`Engine::drop_partition`] for several partitions at once (a revoke). When they remember
    /// at least half of the dedup memory, it is swept once instead of visited id by id.
    pub fn drop_partitions(&mut self, partitions: &[SourcePartition]) {
        self.drop_states(partitions, |remembered, table| {
            remembered >= SWEEP_MIN_IDS && remembered * 2 >= table
        });
    }

    /// [`Engine::drop_partitions`] always by sweep, for the model test to hold that way to the
    /// same answers at sizes where the engine would remove id by id.
    #[doc(hidden)]
    pub fn drop_partitions_by_sweep(&mut self, partitions: &[SourcePartition]) {
        self.drop_states(partitions, |_, _| true);
    }

    /// `sweep(ids the partitions remember, ids in the dedup table)` picks the way.
    fn drop_states(
        &mut self,
        partitions: &[SourcePartition],
        sweep: impl Fn(usize, usize) -> bool,
    ) {
        let dropped: Vec<(SourcePartition, PartitionState)> = partitions
            .iter()
            .filter_map(|p| self.partitions.remove(p).map(|state| (*p, state)))
            .collect();
        let remembered: usize = dropped.iter().map(|(_, state)| state.dedup_order.len()).sum();
        if sweep(remembered, self.dedup.len()) {
            let mut owners: Vec<SourcePartition> = dropped.iter().map(|(p, _)| *p).collect();
            owners.sort_unstable();
            self.dedup.forget_owners(&owners);
            return;
        }
        for (partition, state) in dropped {
            for (seen_at, id_hash) in state.dedup_order {
                self.dedup.remove_if_held(id_hash, partition, seen_at);
            }
        }
    }

    /// Housekeeping the hot path leaves for later: expire dedup memory of idle partitions and
    /// corrections that no window can hold any more. Call it every few seconds.
    pub fn maintain(&mut self, wall_ms: i64) {
        if self.config.clock == ClockMode::Wall {
            self.advance_clock(wall_ms);
        }
        let Some(clock) = self.clock_ms else { return };
        let horizon = clock - self.config.dedup_horizon_ms;
        for (partition, state) in self.partitions.iter_mut() {
            expire_dedup(state, *partition, &mut self.dedup, horizon);
        }
        let longest = &self.config.windows[self.longest];
        let oldest_pane = self.heads[self.longest] - PANES_PER_WINDOW + 1;
        self.responses.retain(|_, entry| longest.pane_of(entry.occurred_at_ms) >= oldest_pane);
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
                nps_steps: if with_steps {
                    vec![vec![[0; 3]; PANES_PER_WINDOW as usize]; window_count]
                } else {
                    Vec::new()
                },
            })
            .collect();
        if self.clock_ms.is_some() {
            for state in self.partitions.values_mut() {
                for &id in &state.present {
                    let slot = id as usize;
                    let (Some(Some(rings)), Some(out)) =
                        (state.series.get_mut(slot), series.get_mut(slot))
                    else {
                        continue;
                    };
                    for (i, (ring, head)) in rings.iter_mut().zip(&self.heads).enumerate() {
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
            }
        }
        Snapshot {
            clock_ms: self.clock_ms,
            windows: self.config.windows.clone(),
            series,
            pipeline: self.pipeline.clone(),
            partitions: self.partitions.len(),
            dedup_entries: self.dedup.len(),
            event_age_quantiles_ms: self.age.quantiles(wall_ms),
            event_age_sum_ms: self.age.sum_ms(),
            event_age_count: self.age.count(),
        }
    }
}

/// Whether an event at `occurred` is too far ahead of the clock or older than the longest window.
fn check_time(
    config: &EngineConfig,
    clock_ms: Option<i64>,
    heads: &[i64],
    longest: usize,
    occurred: i64,
    wall_ms: i64,
) -> Option<Rejection> {
    // The event clock follows events, but not past the wall clock: one event stamped in
    // year 9999 would otherwise push every later event out as too old.
    let reference = match config.clock {
        ClockMode::Wall => clock_ms.unwrap_or(wall_ms),
        ClockMode::Event => wall_ms,
    };
    if occurred > reference.saturating_add(config.max_future_skew_ms) {
        return Some(Rejection::new(
            RejectReason::TooFarInFuture,
            format!("occurred_at is {} ms ahead of the clock", occurred - reference),
        ));
    }
    // Before the first event the event clock has no T, so nothing is too old yet.
    clock_ms?;
    let window = &config.windows[longest];
    let oldest_start = (heads[longest] - PANES_PER_WINDOW + 1).saturating_mul(window.step_ms);
    if occurred < oldest_start {
        return Some(Rejection::new(
            RejectReason::TooOld,
            format!("occurred_at is older than the longest window ({})", window.name),
        ));
    }
    None
}

/// Sets each window's head pane, and the time it starts at, for the clock `now_ms`.
fn set_heads(heads: &mut [i64], head_starts: &mut [i64], windows: &[WindowSpec], now_ms: i64) {
    for ((head, start), window) in heads.iter_mut().zip(head_starts.iter_mut()).zip(windows) {
        *head = window.pane_of(now_ms);
        *start = head.saturating_mul(window.step_ms);
    }
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

/// What a checkpoint must satisfy before any of it is used: a CRC only proves the bytes are the
/// ones written, not that a writer (another version, a bug) wrote sane state.
fn validate_checkpoint(
    checkpoint: &PartitionCheckpoint,
    windows: &[WindowSpec],
) -> Result<(), RestoreError> {
    let label_pair_ok = |brand: &str, segment: &str| {
        (brand == OVERFLOW_LABEL && segment == OVERFLOW_LABEL)
            || (brand != OVERFLOW_LABEL
                && segment != OVERFLOW_LABEL
                && is_label_value(brand)
                && is_label_value(segment))
    };
    for series in &checkpoint.series {
        if series.rings.len() != windows.len() {
            return Err(RestoreError::WrongWindowCount);
        }
        if !label_pair_ok(&series.brand, &series.segment) {
            return Err(RestoreError::InvalidSeriesLabels);
        }
        for (ring, window) in series.rings.iter().zip(windows) {
            let newest = window.pane_of(MAX_OCCURRED_AT_MS) + PANES_PER_WINDOW;
            let head_ok = (0..=newest).contains(&ring.head);
            let panes_ok = ring.panes.iter().all(|(pane, _, _)| {
                (ring.head - 2 * PANES_PER_WINDOW..=newest + PANES_PER_WINDOW).contains(pane)
            });
            let anchor_ok = ring.anchor.base.is_none_or(|(pane, _)| (-1..=newest).contains(&pane));
            if !(head_ok && panes_ok && anchor_ok) {
                return Err(RestoreError::RingOutOfRange);
            }
            // Counts as events can make them (`MAX_ACTIVE_CUSTOMERS` and one move per event), far
            // from where saturating arithmetic would make restoring inexact.
            let sane = |value: i64| value.unsigned_abs() <= 2 * MAX_ACTIVE_CUSTOMERS;
            let base_ok = |base: Option<Base>| {
                base.is_none_or(|b| (0..=MAX_ACTIVE_CUSTOMERS as i64).contains(&b.value))
            };
            let counts_ok = sane(ring.anchor.value)
                && base_ok(ring.anchor.base.map(|(_, b)| b))
                && ring.panes.iter().all(|(_, _, active)| sane(active.net) && base_ok(active.base));
            if !counts_ok {
                return Err(RestoreError::ImpossibleActiveCounts);
            }
        }
    }
    if checkpoint.responses.iter().any(|r| !label_pair_ok(&r.brand, &r.segment)) {
        return Err(RestoreError::InvalidAnswerLabels);
    }
    Ok(())
}

/// Sums per-partition active counts. A partition without a base contributes its net moves, so a
/// base on one partition plus moves on others still adds up; the sum is known once any is.
fn merge_active(acc: Option<(i64, bool)>, anchor: crate::window::Anchor) -> Option<(i64, bool)> {
    let (value, known) = acc.unwrap_or((0, false));
    Some((value.saturating_add(anchor.value), known || anchor.known().is_some()))
}

/// Forgets the partition's ids first seen at or before `horizon_ms`; an id seen again since (and
/// so owned by a newer entry) is left alone.
fn expire_dedup(
    state: &mut PartitionState,
    partition: SourcePartition,
    dedup: &mut DedupTable,
    horizon_ms: i64,
) {
    while let Some(&(seen_at, id_hash)) = state.dedup_order.front() {
        if seen_at > horizon_ms {
            break;
        }
        state.dedup_order.pop_front();
        dedup.remove_if_held(id_hash, partition, seen_at);
    }
}

/// The counter an answer moves, and what it adds to the CES score sum.
fn survey_counter(survey: Survey) -> (Counter, u32) {
    match survey {
        Survey::Nps { score } => (Counter::Nps(Survey::nps_category(score) as usize), 0),
        Survey::Csat { score, scale } => {
            (Counter::Csat(usize::from(!Survey::csat_satisfied(score, scale))), 0)
        }
        Survey::Ces { score } => {
            (Counter::Ces(usize::from(!Survey::ces_easy(score))), u32::from(score))
        }
    }
}

/// Index into `snapshot::SURVEY_CATEGORIES`.
fn survey_category_index(survey: Survey) -> usize {
    match survey {
        Survey::Nps { score } => Survey::nps_category(score) as usize,
        Survey::Csat { score, scale } => 3 + usize::from(!Survey::csat_satisfied(score, scale)),
        Survey::Ces { score } => 5 + usize::from(!Survey::ces_easy(score)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: SourcePartition = SourcePartition { topic: 0, partition: 0 };

    fn engine_with(windows: &[&str]) -> Result<Engine, EngineError> {
        let windows = windows.iter().filter_map(|w| WindowSpec::named(w).ok()).collect();
        Engine::new(EngineConfig { windows, clock: ClockMode::Event, ..EngineConfig::default() })
    }

    #[test]
    fn an_engine_needs_a_window() {
        let error = engine_with(&[]).err();
        assert_eq!(error, Some(EngineError::NoWindows));
        assert_eq!(
            error.map(|e| e.to_string()).as_deref(),
            Some("at least one window size is needed")
        );
    }

    #[test]
    fn a_checkpoint_of_other_windows_or_impossible_state_is_refused_untouched() {
        let mut source = engine_with(&["1h", "24h"]).unwrap();
        let event = br#"{"event_id":"e","type":"survey_response","occurred_at":3600000,"brand":"b","survey":"nps","score":9}"#;
        assert_eq!(source.process(SOURCE, event, 3_600_000), Outcome::Counted);
        let checkpoint = source.checkpoint(SOURCE, 1);

        let mut other = engine_with(&["1h"]).unwrap();
        let error = other.restore(SOURCE, &checkpoint).unwrap_err();
        assert_eq!(
            error,
            RestoreError::OtherWindows {
                checkpoint_ms: vec![3_600_000, 86_400_000],
                configured_ms: vec![3_600_000]
            }
        );
        assert_eq!(
            error.to_string(),
            "checkpoint windows [3600000, 86400000] differ from the configured [3600000]"
        );
        assert_eq!(other.snapshot(0).partitions, 0);

        let mut same = engine_with(&["1h", "24h"]).unwrap();
        let mut bad = checkpoint.clone();
        bad.series[0].brand = OVERFLOW_LABEL.into();
        assert_eq!(same.restore(SOURCE, &bad), Err(RestoreError::InvalidSeriesLabels));
        bad.series[0].rings.pop();
        assert_eq!(same.restore(SOURCE, &bad), Err(RestoreError::WrongWindowCount));
        assert_eq!(same.restore(SOURCE, &checkpoint), Ok(()));
        assert_eq!(same.snapshot(0).partitions, 1);
    }
}
