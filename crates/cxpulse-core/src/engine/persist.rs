//! Incremental checkpoints of a partition and their restore (the format is `checkpoint`'s).
//!
//! Each checkpoint writes only what changed since the one before: the ids and answers stored
//! since (into their bucket's group), and the window rings that changed (into the current windows
//! generation). When the changes written to a generation outweigh its first, whole, segment, the
//! next checkpoint starts a new generation with the whole rings and the old one is tombstoned;
//! expired buckets are tombstoned likewise. So the bytes written follow the input, and the live
//! records follow the live state. After a failed write the next checkpoint writes everything
//! anew, since what reached the topic is unknown.

use std::collections::{BTreeMap, HashMap};

use crate::checkpoint::{
    self, AnswerRecord, CheckpointError, GroupRef, Manifest, ManifestTail, Part, RecordKey,
    SegmentKind, WindowsSegment,
};
use crate::customers::CustomerBook;
use crate::event::{is_label_value, MAX_ACTIVE_CUSTOMERS, MAX_OCCURRED_AT_MS, OVERFLOW_LABEL};
use crate::window::{Base, Ring, RingState, WindowSpec, PANES_PER_WINDOW};
use crate::SourcePartition;

use super::partition::{Answer, PartitionState};
use super::{ClockMode, Engine};
use crate::drop_evidence::DropDetector;

/// A windows generation is rewritten whole once its changes pass its first segment's size, and
/// never for less than this (small states would otherwise start generations all the time).
const MIN_REWRITE_BYTES: usize = 256 * 1024;

/// Checkpoint numbers at or past this are refused as damaged.
const MAX_SEQ: u64 = 1 << 62;

/// One group of segments as written: its reference in the manifest, and each segment's
/// `(seq, parts)` for tombstones.
#[derive(Clone, Debug, Default)]
struct Group {
    reference: GroupRef,
    segments: Vec<(u64, u32)>,
}

impl Group {
    fn keys(&self, kind: SegmentKind) -> impl Iterator<Item = RecordKey> + '_ {
        let group = self.reference.group;
        self.segments.iter().flat_map(move |&(seq, parts)| {
            (0..parts).map(move |part| RecordKey::Part { kind, group, seq, part })
        })
    }
}

/// What a partition's checkpoints have written: the groups the next manifest names, and the
/// records no manifest names any more, to tombstone.
#[derive(Clone, Debug)]
pub(crate) struct PersistBook {
    next_seq: u64,
    /// The next checkpoint writes everything anew: none was written yet by this engine, a write
    /// failed, or the partition was rebuilt by replay.
    rewrite: bool,
    windows: Group,
    windows_base_bytes: usize,
    windows_delta_bytes: usize,
    /// How many of the partition's series (in `present` order) the windows generation defines.
    series_saved: usize,
    dedup: BTreeMap<i64, Group>,
    answers: BTreeMap<i64, Group>,
    /// The customer book's generation: a whole segment, then segments of its changes, rewritten
    /// whole on the same rule as the windows.
    customers: Group,
    customers_base_bytes: usize,
    customers_delta_bytes: usize,
    /// A rewrite of the customer book in slices, one per checkpoint, under way.
    customers_next: Option<Rebase>,
    garbage: Vec<RecordKey>,
}

/// The new generation of a customer book written a slice at a time: its segments so far, the
/// next slice, and how many there are.
#[derive(Clone, Debug, Default)]
struct Rebase {
    group: Group,
    bytes: usize,
    next_slice: u32,
    slices: u32,
}

/// A customer book is rewritten in slices of about this size, one per checkpoint (at most
/// `MAX_SLICES`), so that no checkpoint writes the whole of a big book at once.
const SLICE_BYTES: usize = 128 * 1024;
const MAX_SLICES: usize = 16;

impl Default for PersistBook {
    fn default() -> Self {
        PersistBook {
            next_seq: 1,
            rewrite: true,
            windows: Group::default(),
            windows_base_bytes: 0,
            windows_delta_bytes: 0,
            series_saved: 0,
            dedup: BTreeMap::new(),
            answers: BTreeMap::new(),
            customers: Group::default(),
            customers_base_bytes: 0,
            customers_delta_bytes: 0,
            customers_next: None,
            garbage: Vec::new(),
        }
    }
}

impl PersistBook {
    /// Whether the next checkpoint writes only changes (so changes are worth tracking): not
    /// before the first one, nor after a failure, nor when checkpoints are off.
    pub fn is_incremental(&self) -> bool {
        !self.rewrite
    }

    fn all_keys(&self) -> impl Iterator<Item = RecordKey> + '_ {
        let dedup = self.dedup.values().flat_map(|g| g.keys(SegmentKind::Dedup));
        let answers = self.answers.values().flat_map(|g| g.keys(SegmentKind::Answers));
        let customers = self.customers.keys(SegmentKind::Customers);
        let next = self.customers_next.iter().flat_map(|r| r.group.keys(SegmentKind::Customers));
        let windows = self.windows.keys(SegmentKind::Windows);
        windows.chain(dedup).chain(answers).chain(customers).chain(next)
    }

    /// A new generation of the customer book takes over; the old one's records are garbage.
    fn replace_customers(&mut self, generation: Group, base_bytes: usize) {
        let old = std::mem::replace(&mut self.customers, generation);
        self.garbage.extend(old.keys(SegmentKind::Customers));
        self.customers_base_bytes = base_bytes;
        self.customers_delta_bytes = 0;
    }
}

/// A checkpoint's records: `records` in the order to write them, the manifest last, then
/// `tombstones` (keys to delete) once the manifest is acknowledged.
#[derive(Clone, Debug, Default)]
pub struct CheckpointBatch {
    pub records: Vec<(RecordKey, Vec<u8>)>,
    pub tombstones: Vec<RecordKey>,
}

impl CheckpointBatch {
    pub fn bytes(&self) -> usize {
        self.records.iter().map(|(_, v)| v.len()).sum()
    }
}

/// Why a checkpoint cannot be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreError {
    /// Nothing was ever checkpointed for the partition.
    NoCheckpoint,
    /// Records exist, but no manifest names them.
    NoManifest,
    Unreadable(String),
    OtherWindows {
        checkpoint_ms: Vec<i64>,
        configured_ms: Vec<i64>,
    },
    /// A segment the manifest names is missing or is not the one written.
    Incomplete(&'static str),
    WrongWindowCount,
    InvalidSeriesLabels,
    RingOutOfRange,
    ImpossibleActiveCounts,
    InvalidAnswer,
    InvalidCustomers(String),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::NoCheckpoint => f.write_str("no checkpoint"),
            RestoreError::NoManifest => f.write_str("checkpoint records without a manifest"),
            RestoreError::Unreadable(e) => write!(f, "checkpoint unreadable: {e}"),
            RestoreError::OtherWindows { checkpoint_ms, configured_ms } => write!(
                f,
                "checkpoint windows {checkpoint_ms:?} differ from the configured {configured_ms:?}"
            ),
            RestoreError::Incomplete(what) => write!(f, "checkpoint incomplete: {what}"),
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
            RestoreError::InvalidAnswer => f.write_str("checkpoint answer is invalid"),
            RestoreError::InvalidCustomers(e) => write!(f, "checkpoint customers: {e}"),
        }
    }
}

impl std::error::Error for RestoreError {}

impl From<CheckpointError> for RestoreError {
    fn from(error: CheckpointError) -> Self {
        RestoreError::Unreadable(error.to_string())
    }
}

impl Engine {
    /// The partition's changes since its last checkpoint, as records reflecting every message
    /// before `offset`. Call [`Engine::checkpoint_failed`] with the batch if it was not written.
    pub fn checkpoint(&mut self, partition: SourcePartition, offset: i64) -> CheckpointBatch {
        let clock = self.clock.now;
        let window_sizes_ms = self.config.windows.iter().map(|w| w.size_ms).collect();
        self.expire_partition(partition);
        let Some(state) = self.partitions.get_mut(&partition) else {
            return CheckpointBatch::default();
        };
        let book = &mut state.book;
        let seq = book.next_seq;
        book.next_seq = book.next_seq.saturating_add(1);
        let rewrite = std::mem::replace(&mut book.rewrite, false);
        if rewrite {
            let old: Vec<RecordKey> = book.all_keys().collect();
            book.garbage.extend(old);
            book.dedup.clear();
            book.answers.clear();
            book.windows = Group::default();
            book.customers = Group::default();
        }
        let mut records = Vec::new();

        // Ids: the new ones of each bucket (all of them after a failure), one segment a bucket.
        for bucket in state.dedup.buckets_mut() {
            let ids = bucket.take_changed(rewrite);
            if !ids.is_empty() {
                let body = checkpoint::encode_ids(&ids);
                let group = book.dedup.entry(bucket.index).or_default();
                push_segment(&mut records, group, SegmentKind::Dedup, bucket.index, seq, &body);
            }
        }
        let live: Vec<i64> = state.dedup.buckets().iter().map(|b| b.index).collect();
        retire_groups(&mut book.dedup, &live, SegmentKind::Dedup, &mut book.garbage);

        // Answers: the current value of each one stored or changed, by bucket. Series go by
        // their local number (their place in `present`), here, in customers and in drops.
        let local: HashMap<u32, u32> =
            state.present.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect();
        for bucket in state.answers.buckets_mut() {
            let mut keys = bucket.take_changed(rewrite);
            keys.sort_unstable();
            keys.dedup();
            let answers: Vec<AnswerRecord> = keys
                .iter()
                .filter_map(|&key| {
                    let answer = bucket.table.get(key)?;
                    Some(AnswerRecord {
                        key,
                        occurred_at_ms: answer.occurred_at_ms(),
                        series: *local.get(&answer.series())?,
                        category: answer.category(),
                        ces_score: answer.ces_score(),
                    })
                })
                .collect();
            if !answers.is_empty() {
                let body = checkpoint::encode_answers(&answers);
                let group = book.answers.entry(bucket.index).or_default();
                push_segment(&mut records, group, SegmentKind::Answers, bucket.index, seq, &body);
            }
        }
        let live: Vec<i64> = state.answers.buckets().iter().map(|b| b.index).collect();
        retire_groups(&mut book.answers, &live, SegmentKind::Answers, &mut book.garbage);

        // Windows: the changed rings, or every ring in a new generation.
        let new_generation = rewrite
            || book.windows.segments.is_empty()
            || book.windows_delta_bytes > book.windows_base_bytes.max(MIN_REWRITE_BYTES);
        if new_generation {
            let old: Vec<RecordKey> = book.windows.keys(SegmentKind::Windows).collect();
            book.garbage.extend(old);
            book.windows = Group {
                reference: GroupRef { group: seq as i64, ..GroupRef::default() },
                segments: Vec::new(),
            };
            book.series_saved = 0;
            book.windows_delta_bytes = 0;
        }
        let mut segment = WindowsSegment::default();
        for (number, &id) in state.present.iter().enumerate() {
            let Some(Some(rings)) = state.series.get_mut(id as usize) else { continue };
            if number >= book.series_saved {
                if let Some(info) = self.series.list.get(id as usize) {
                    segment.series.push((
                        number as u32,
                        info.brand.to_string(),
                        info.segment.to_string(),
                    ));
                }
            }
            for (w, ring) in rings.iter_mut().enumerate() {
                let delta = if new_generation {
                    ring.clear_changes();
                    Some(ring.export())
                } else {
                    ring.take_changes()
                };
                if let Some(delta) = delta {
                    segment.rings.push((number as u32, w as u8, delta));
                }
            }
        }
        book.series_saved = state.present.len();
        if new_generation || segment != WindowsSegment::default() {
            match checkpoint::encode_windows(&segment) {
                Ok(body) => {
                    if new_generation {
                        book.windows_base_bytes = body.len();
                    } else {
                        book.windows_delta_bytes += body.len();
                    }
                    let group = book.windows.reference.group;
                    push_segment(
                        &mut records,
                        &mut book.windows,
                        SegmentKind::Windows,
                        group,
                        seq,
                        &body,
                    );
                }
                // Unreachable for these types; the next checkpoint rewrites everything.
                Err(_) => book.rewrite = true,
            }
        }

        // Customers, by the local series numbers the windows segments define.
        let mut customers_ref = None;
        let mut customers_next_ref = None;
        if let Some(customers) = state.customers.as_mut() {
            let number_of = |id| local.get(&id).copied();
            // A rewrite in slices found on restore (`slices` 0) is finished whole.
            let whole = rewrite
                || book.customers.segments.is_empty()
                || book.customers_next.as_ref().is_some_and(|r| r.slices == 0);
            let outgrown =
                book.customers_delta_bytes > book.customers_base_bytes.max(MIN_REWRITE_BYTES);
            let slices = (book.customers_base_bytes / SLICE_BYTES).clamp(1, MAX_SLICES) as u32;
            if whole || (outgrown && slices == 1 && book.customers_next.is_none()) {
                // The whole book in one segment: a new generation, the old ones garbage.
                match customers.encode_full(number_of) {
                    Ok(body) => {
                        if let Some(rebase) = book.customers_next.take() {
                            book.garbage.extend(rebase.group.keys(SegmentKind::Customers));
                        }
                        book.replace_customers(Group::default(), body.len());
                        push_customers(&mut records, &mut book.customers, seq as i64, seq, &body);
                    }
                    Err(_) => book.rewrite = true,
                }
            } else if outgrown || book.customers_next.is_some() {
                // A slice of the new generation, with the changes since the last segment.
                let mut rebase = book.customers_next.take().unwrap_or(Rebase {
                    group: Group::default(),
                    bytes: 0,
                    next_slice: 0,
                    slices,
                });
                match customers.encode_slice(number_of, rebase.next_slice, rebase.slices) {
                    Ok(body) => {
                        let group = if rebase.next_slice == 0 {
                            seq as i64
                        } else {
                            rebase.group.reference.group
                        };
                        push_customers(&mut records, &mut rebase.group, group, seq, &body);
                        rebase.bytes += body.len();
                        rebase.next_slice += 1;
                        if rebase.next_slice == rebase.slices {
                            // Every slice written: the new generation stands alone.
                            book.replace_customers(rebase.group, rebase.bytes);
                        } else {
                            book.customers_next = Some(rebase);
                        }
                    }
                    Err(_) => book.rewrite = true,
                }
            } else {
                match customers.encode_changes(number_of) {
                    Ok(Some(body)) => {
                        book.customers_delta_bytes += body.len();
                        let group = book.customers.reference.group;
                        push_customers(&mut records, &mut book.customers, group, seq, &body);
                    }
                    Ok(None) => {}
                    Err(_) => book.rewrite = true,
                }
            }
            customers_ref =
                (book.customers.reference.segments > 0).then_some(book.customers.reference);
            customers_next_ref = book.customers_next.as_ref().map(|r| r.group.reference);
        }

        let manifest = Manifest {
            seq,
            offset,
            clock_ms: clock,
            window_sizes_ms,
            windows: book.windows.reference,
            dedup: book.dedup.values().map(|g| g.reference).collect(),
            answers: book.answers.values().map(|g| g.reference).collect(),
        };
        // The drop detectors are small and change with every NPS answer: the manifest carries
        // them whole, by the series' local number (every present series is saved by now).
        let mut drops: Vec<(u32, DropDetector)> = state
            .drops
            .iter()
            .filter_map(|(id, detector)| Some((*local.get(id)?, detector.clone())))
            .collect();
        drops.sort_by_key(|(number, _)| *number);
        let tail =
            ManifestTail { drops, customers: customers_ref, customers_next: customers_next_ref };
        match manifest.encode_with_tail(&tail) {
            Ok(bytes) => records.push((RecordKey::Manifest, bytes)),
            Err(_) => book.rewrite = true,
        }
        CheckpointBatch { records, tombstones: std::mem::take(&mut book.garbage) }
    }

    /// The batch was not (wholly) written: the next checkpoint writes everything anew, and
    /// tombstones what this one would have, besides everything the partition wrote before.
    pub fn checkpoint_failed(&mut self, partition: SourcePartition, batch: CheckpointBatch) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.book.rewrite = true;
            state.book.garbage.extend(batch.tombstones);
        }
    }

    /// Replaces the partition's state with the checkpoint in `records` (each key below the
    /// partition's prefix, with its latest value). Returns the offset it reflects. On any error
    /// the partition is left empty, to be rebuilt by replay, and its first checkpoint will
    /// tombstone every record found here. Its checkpoints are numbered from past every number
    /// found and from `seq_floor` (the caller's wall clock in ms: should the topic have been
    /// unreadable, numbers a previous owner used are not reused).
    pub fn restore(
        &mut self,
        partition: SourcePartition,
        records: &[(String, Vec<u8>)],
        seq_floor: u64,
    ) -> Result<i64, RestoreError> {
        self.drop_partition(partition);
        let keyed: Vec<(RecordKey, &[u8])> = records
            .iter()
            .filter_map(|(key, value)| RecordKey::parse(key).map(|k| (k, value.as_slice())))
            .collect();
        // A number no writer reaches (they count from the wall clock in ms) is damage: it is
        // tombstoned like the rest, but not numbered after.
        let next_seq = keyed
            .iter()
            .filter_map(|(k, _)| k.seq())
            .filter(|seq| *seq < MAX_SEQ)
            .max()
            .unwrap_or(0)
            .saturating_add(1)
            .max(seq_floor);
        match self.restore_from(&keyed) {
            Ok((mut state, offset, seq)) => {
                state.book.next_seq = next_seq.max(seq.saturating_add(1));
                self.partitions.insert(partition, state);
                Ok(offset)
            }
            Err(error) => {
                let mut state = self.new_partition_state();
                state.book.next_seq = next_seq;
                state.book.garbage =
                    keyed.iter().map(|(k, _)| *k).filter(|k| *k != RecordKey::Manifest).collect();
                if !state.book.garbage.is_empty() {
                    self.partitions.insert(partition, state);
                }
                Err(error)
            }
        }
    }

    fn restore_from(
        &mut self,
        records: &[(RecordKey, &[u8])],
    ) -> Result<(PartitionState, i64, u64), RestoreError> {
        let (manifest, tail) = match records.iter().find(|(k, _)| *k == RecordKey::Manifest) {
            Some((_, bytes)) => Manifest::decode_with_tail(bytes)?,
            None if records.is_empty() => return Err(RestoreError::NoCheckpoint),
            None => return Err(RestoreError::NoManifest),
        };
        let sizes: Vec<i64> = self.config.windows.iter().map(|w| w.size_ms).collect();
        if manifest.window_sizes_ms != sizes {
            return Err(RestoreError::OtherWindows {
                checkpoint_ms: manifest.window_sizes_ms.clone(),
                configured_ms: sizes,
            });
        }
        // The segments the manifest names, by group, each with its parts in order.
        let named = |kind: SegmentKind, group: i64| -> bool {
            match kind {
                SegmentKind::Windows => group == manifest.windows.group,
                SegmentKind::Dedup => manifest.dedup.iter().any(|g| g.group == group),
                SegmentKind::Answers => manifest.answers.iter().any(|g| g.group == group),
                SegmentKind::Customers => {
                    tail.customers.is_some_and(|g| g.group == group)
                        || tail.customers_next.is_some_and(|g| g.group == group)
                }
            }
        };
        let mut segments: BTreeMap<(SegmentKind, i64, u64), Vec<Part<'_>>> = BTreeMap::new();
        let mut garbage = Vec::new();
        for &(key, bytes) in records {
            let RecordKey::Part { kind, group, seq, .. } = key else { continue };
            if seq > manifest.seq || !named(kind, group) {
                garbage.push(key);
                continue;
            }
            segments.entry((kind, group, seq)).or_default().push(checkpoint::parse_part(bytes)?);
        }
        let mut bodies: BTreeMap<(SegmentKind, i64), Vec<Segment>> = BTreeMap::new();
        for ((kind, group, seq), mut parts) in segments {
            parts.sort_by_key(|p| p.index);
            let count = parts.len() as u32;
            let body = checkpoint::join_parts(&parts)?;
            bodies.entry((kind, group)).or_default().push((seq, count, body));
        }
        // Buckets are numbered by the clock when they were filled: none can be newer than the
        // clock the manifest carries.
        let newest_bucket = |horizon_ms: i64| {
            manifest.clock_ms.map(|t| t.div_euclid(crate::buckets::span_of(horizon_ms)))
        };
        let buckets_ok = |groups: &[GroupRef], horizon_ms: i64| {
            groups.iter().all(|g| newest_bucket(horizon_ms).is_some_and(|newest| g.group <= newest))
        };
        if !buckets_ok(&manifest.dedup, self.config.dedup_horizon_ms)
            || !buckets_ok(&manifest.answers, self.config.correction_horizon_ms)
            || manifest.seq >= MAX_SEQ
        {
            return Err(RestoreError::Incomplete("a bucket or sequence number out of range"));
        }
        let mut book = PersistBook { rewrite: false, garbage, ..PersistBook::default() };
        let check = |kind: SegmentKind, reference: &GroupRef| -> Result<Group, RestoreError> {
            let mut group = Group {
                reference: GroupRef { group: reference.group, ..GroupRef::default() },
                segments: Vec::new(),
            };
            for (seq, parts, body) in bodies.get(&(kind, reference.group)).into_iter().flatten() {
                group.reference.add(crc32fast::hash(body));
                group.segments.push((*seq, *parts));
            }
            if group.reference != *reference {
                return Err(RestoreError::Incomplete(match kind {
                    SegmentKind::Dedup => "an id segment",
                    SegmentKind::Answers => "an answer segment",
                    SegmentKind::Windows => "a windows segment",
                    SegmentKind::Customers => "a customers segment",
                }));
            }
            Ok(group)
        };
        book.windows = check(SegmentKind::Windows, &manifest.windows)?;
        for reference in &manifest.dedup {
            book.dedup.insert(reference.group, check(SegmentKind::Dedup, reference)?);
        }
        for reference in &manifest.answers {
            book.answers.insert(reference.group, check(SegmentKind::Answers, reference)?);
        }
        if let Some(reference) = &tail.customers {
            book.customers = check(SegmentKind::Customers, reference)?;
        }
        if let Some(reference) = &tail.customers_next {
            // A rewrite in slices was under way: the next checkpoint writes the book whole.
            let group = check(SegmentKind::Customers, reference)?;
            book.customers_next = Some(Rebase { group, ..Rebase::default() });
        }

        // Windows: the generation's segments in order, merged per ring.
        let mut series: Vec<(String, String)> = Vec::new();
        let mut rings: BTreeMap<(u32, u8), RingState> = BTreeMap::new();
        let window_bodies = bodies.get(&(SegmentKind::Windows, manifest.windows.group));
        for (i, (_, _, body)) in window_bodies.into_iter().flatten().enumerate() {
            let segment = checkpoint::decode_windows(body)?;
            if i == 0 {
                book.windows_base_bytes = body.len();
            } else {
                book.windows_delta_bytes += body.len();
            }
            for (number, brand, segment_label) in segment.series {
                if number as usize != series.len() {
                    return Err(RestoreError::InvalidSeriesLabels);
                }
                series.push((brand, segment_label));
            }
            for (number, window, delta) in segment.rings {
                if number as usize >= series.len() {
                    return Err(RestoreError::InvalidSeriesLabels);
                }
                if usize::from(window) >= self.config.windows.len() {
                    return Err(RestoreError::WrongWindowCount);
                }
                match rings.get_mut(&(number, window)) {
                    Some(ring) => ring.merge(&delta),
                    None => {
                        rings.insert((number, window), delta);
                    }
                }
            }
        }
        validate(&series, &rings, &self.config.windows)?;

        if self.config.clock == ClockMode::Event {
            if let Some(clock) = manifest.clock_ms {
                self.advance_clock(clock);
            }
        }
        let mut state = self.new_partition_state();
        let mut ids = Vec::with_capacity(series.len());
        for (brand, segment) in &series {
            let id = self.series.intern_restored(brand, segment, self.config.max_series);
            ids.push(id);
            state.rings_of(id, &self.clock.heads, &self.future_panes);
        }
        for ((number, window), ring_state) in &rings {
            let id = ids[*number as usize];
            if let Some(Some(rings)) = state.series.get_mut(id as usize) {
                let future = self.future_panes[usize::from(*window)];
                rings[usize::from(*window)] = Ring::import(ring_state, future);
            }
        }
        book.series_saved = series.len();
        for (number, detector) in tail.drops {
            let Some(&id) = ids.get(number as usize) else {
                return Err(RestoreError::InvalidSeriesLabels);
            };
            state.drops.insert(id, detector);
        }

        for &index in book.dedup.keys() {
            let body = bodies.get(&(SegmentKind::Dedup, index));
            let mut all = Vec::new();
            for (_, _, bytes) in body.into_iter().flatten() {
                all.extend(checkpoint::decode_ids(bytes)?);
            }
            state.dedup.restore(index, all.into_iter().map(|k| (k, ())));
        }
        for &index in book.answers.keys() {
            let body = bodies.get(&(SegmentKind::Answers, index));
            let mut all = Vec::new();
            for (_, _, bytes) in body.into_iter().flatten() {
                for record in checkpoint::decode_answers(bytes)? {
                    let series = ids.get(record.series as usize).copied();
                    let answer = series
                        .filter(|_| (0..=MAX_OCCURRED_AT_MS).contains(&record.occurred_at_ms))
                        .and_then(|series| {
                            Answer::new(
                                record.occurred_at_ms,
                                series,
                                record.category,
                                record.ces_score,
                            )
                        });
                    let Some(answer) = answer else {
                        return Err(RestoreError::InvalidAnswer);
                    };
                    all.push((record.key, answer));
                }
            }
            state.answers.restore(index, all.into_iter());
        }
        if let Some(reference) = &tail.customers {
            // The book's generation, then the slices of a rewrite under way.
            let next = tail.customers_next.map(|g| g.group);
            let bodies: Vec<&[u8]> = [Some(reference.group), next]
                .into_iter()
                .flatten()
                .flat_map(|group| {
                    bodies.get(&(SegmentKind::Customers, group)).into_iter().flatten()
                })
                .map(|(_, _, body)| body.as_slice())
                .collect();
            book.customers_base_bytes = bodies.first().map_or(0, |b| b.len());
            book.customers_delta_bytes = bodies.iter().skip(1).map(|b| b.len()).sum();
            let segments = bodies.iter().copied();
            let id_of = |number: u32| ids.get(number as usize).copied();
            let mut customers =
                CustomerBook::restore(&self.config.windows, &self.future_panes, segments, id_of)
                    .map_err(|e| RestoreError::InvalidCustomers(e.to_string()))?;
            customers.set_clock(&self.clock.heads);
            state.customers = Some(Box::new(customers));
        }
        state.book = book;
        Ok((state, manifest.offset, manifest.seq))
    }
}

/// A segment read back: its seq, how many parts it came in, its body.
type Segment = (u64, u32, Vec<u8>);

/// Adds one segment's parts to `records` and to its group.
fn push_segment(
    records: &mut Vec<(RecordKey, Vec<u8>)>,
    group: &mut Group,
    kind: SegmentKind,
    group_id: i64,
    seq: u64,
    body: &[u8],
) {
    let (parts, crc) = checkpoint::split_parts(seq, body);
    group.reference.group = group_id;
    group.reference.add(crc);
    group.segments.push((seq, parts.len() as u32));
    for (part, bytes) in parts.into_iter().enumerate() {
        records.push((RecordKey::Part { kind, group: group_id, seq, part: part as u32 }, bytes));
    }
}

/// [`push_segment`] for a customer book's segment.
fn push_customers(
    records: &mut Vec<(RecordKey, Vec<u8>)>,
    group: &mut Group,
    group_id: i64,
    seq: u64,
    body: &[u8],
) {
    push_segment(records, group, SegmentKind::Customers, group_id, seq, body);
}

/// Moves the groups of buckets no longer in memory (expired or evicted) to the garbage.
fn retire_groups(
    groups: &mut BTreeMap<i64, Group>,
    live: &[i64],
    kind: SegmentKind,
    garbage: &mut Vec<RecordKey>,
) {
    groups.retain(|index, group| {
        let keep = live.contains(index);
        if !keep {
            garbage.extend(group.keys(kind));
        }
        keep
    });
}

/// What restored state must satisfy before any of it is used: a CRC only proves the bytes are
/// the ones written, not that a writer (another version, a bug) wrote sane state.
fn validate(
    series: &[(String, String)],
    rings: &BTreeMap<(u32, u8), RingState>,
    windows: &[WindowSpec],
) -> Result<(), RestoreError> {
    let label_pair_ok = |brand: &str, segment: &str| {
        (brand == OVERFLOW_LABEL && segment == OVERFLOW_LABEL)
            || (brand != OVERFLOW_LABEL
                && segment != OVERFLOW_LABEL
                && is_label_value(brand)
                && is_label_value(segment))
    };
    if !series.iter().all(|(brand, segment)| label_pair_ok(brand, segment)) {
        return Err(RestoreError::InvalidSeriesLabels);
    }
    for ((_, window), ring) in rings {
        let Some(window) = windows.get(usize::from(*window)) else {
            return Err(RestoreError::WrongWindowCount);
        };
        let newest = window.pane_of(MAX_OCCURRED_AT_MS) + PANES_PER_WINDOW;
        let head_ok = (0..=newest).contains(&ring.head);
        let panes_ok = ring.panes.iter().all(|(pane, _, _)| {
            (ring.head.saturating_sub(2 * PANES_PER_WINDOW)..=newest + PANES_PER_WINDOW)
                .contains(pane)
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
    Ok(())
}
