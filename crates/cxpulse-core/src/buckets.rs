//! Time-bucketed memory of 64-bit keys: the remembered event ids and correctable answers of one
//! partition. Keys live in buckets by the clock T at which they were stored; a bucket whose whole
//! span is past the horizon is dropped in one piece, with no per-entry work.
//!
//! Each bucket is a flat open-addressing table (linear probing, any capacity, keys spread over it
//! by a multiply instead of a modulo), keys and values in two arrays so that an id costs its 8
//! bytes over the load factor and nothing else. The newest bucket takes inserts and grows by half
//! when 80 % full; older ones never change size except once, when [`TimeBuckets::compact_one`] rebuilds
//! a sparse one at 80 % load. A lookup probes every live bucket, newest first: eight spans make a
//! horizon, so memory overshoots the horizon by at most an eighth and a lookup costs nine probes,
//! which a batch prefetches together.
//!
//! A 64-bit key stands for an id: a new one equal to one of the N keys remembered has a chance
//! of N / 2^64 (5 × 10^-13 at ten million), and half the memory of a 128-bit key buys that.

use std::collections::VecDeque;

/// Buckets per horizon: a key is remembered for at least the horizon and at most an eighth more.
pub const BUCKETS_PER_HORIZON: i64 = 8;

/// The highest load a table is filled to before it grows (inserts) or is rebuilt at (compaction).
const MAX_LOAD_PERCENT: usize = 80;

/// How much a full table grows, in percent: by half, so that a growing table is between 53 % and
/// 80 % full (doubling would leave it between 40 % and 80 %, a sixth more memory on average).
const GROWTH_PERCENT: usize = 150;

/// A sealed table this sparse or sparser is worth rebuilding.
const COMPACT_BELOW_PERCENT: usize = 65;

const MIN_CAPACITY: usize = 16;

/// The empty-slot marker; a real key of 0 is stored as 1 (a collision as likely as any other).
const EMPTY: Key = 0;

/// A remembered key: a 64-bit hash of an event id or a `response_id`.
pub type Key = u64;

#[inline]
fn stored(key: Key) -> Key {
    key.max(1)
}

/// An open-addressing table of non-zero 64-bit keys, each with a value.
#[derive(Clone, Debug)]
pub struct IdTable<V> {
    keys: Box<[Key]>,
    values: Box<[V]>,
    len: usize,
}

impl<V: Copy + Default> IdTable<V> {
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(MIN_CAPACITY);
        IdTable {
            keys: vec![EMPTY; capacity].into_boxed_slice(),
            values: vec![V::default(); capacity].into_boxed_slice(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes held, every slot counted.
    pub fn bytes(&self) -> usize {
        self.keys.len() * (std::mem::size_of::<Key>() + std::mem::size_of::<V>())
    }

    #[inline]
    fn home(&self, key: Key) -> usize {
        // The key is a uniform hash: times the capacity, shifted, it spreads evenly.
        ((u128::from(key) * self.keys.len() as u128) >> 64) as usize
    }

    /// The slot holding `key`, else the empty slot where it would go.
    #[inline]
    fn probe(&self, key: Key) -> Result<usize, usize> {
        let capacity = self.keys.len();
        let mut index = self.home(key);
        loop {
            let found = self.keys[index];
            if found == key {
                return Ok(index);
            }
            if found == EMPTY {
                return Err(index);
            }
            index += 1;
            if index == capacity {
                index = 0;
            }
        }
    }

    pub fn get(&self, key: Key) -> Option<&V> {
        self.probe(stored(key)).ok().map(|index| &self.values[index])
    }

    pub fn contains(&self, key: Key) -> bool {
        self.probe(stored(key)).is_ok()
    }

    /// Stores `value` under `key`; the previous value, if any.
    pub fn insert(&mut self, key: Key, value: V) -> Option<V> {
        let key = stored(key);
        if (self.len + 1) * 100 > self.keys.len() * MAX_LOAD_PERCENT {
            self.rebuild(self.keys.len() * GROWTH_PERCENT / 100);
        }
        match self.probe(key) {
            Ok(index) => Some(std::mem::replace(&mut self.values[index], value)),
            Err(index) => {
                self.keys[index] = key;
                self.values[index] = value;
                self.len += 1;
                None
            }
        }
    }

    fn rebuild(&mut self, capacity: usize) {
        let mut next = IdTable::with_capacity(capacity);
        for (key, value) in self.iter() {
            if let Err(index) = next.probe(key) {
                next.keys[index] = key;
                next.values[index] = *value;
            }
        }
        next.len = self.len;
        *self = next;
    }

    /// Whether the table is sparse enough for [`IdTable::compact`] to be worth its rehash.
    pub fn is_sparse(&self) -> bool {
        self.keys.len() > MIN_CAPACITY && self.len * 100 < self.keys.len() * COMPACT_BELOW_PERCENT
    }

    /// Rebuilds the table at the highest load.
    pub fn compact(&mut self) {
        let capacity = (self.len * 100).div_ceil(MAX_LOAD_PERCENT) + 1;
        self.rebuild(capacity);
    }

    pub fn iter(&self) -> impl Iterator<Item = (Key, &V)> + '_ {
        self.keys.iter().zip(self.values.iter()).filter(|(k, _)| **k != EMPTY).map(|(k, v)| (*k, v))
    }

    /// Starts loading the key's home slot into the cache: a hint with no effect on behaviour.
    #[inline]
    pub fn prefetch(&self, key: Key) {
        if let Some(slot) = self.keys.get(self.home(stored(key))) {
            prefetch(slot);
        }
    }
}

/// Starts loading the cache line of `value` (a table slot): a hint with no effect on behaviour.
#[inline]
#[allow(unsafe_code)]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing architecturally, never faults and changes no state,
    // whatever the address; this one points at a live value.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::hint::black_box(value);
}

/// One bucket: the keys first stored while T was in `[index * span, (index + 1) * span)`.
#[derive(Clone, Debug)]
pub struct Bucket<V> {
    pub index: i64,
    pub table: IdTable<V>,
    /// Keys stored or changed since the last checkpoint took them.
    pub unsaved: Vec<Key>,
}

impl<V: Copy + Default> Bucket<V> {
    /// The keys a checkpoint writes: those changed since the last one, or with `all` every key
    /// held; either way nothing is left marked changed.
    pub fn take_changed(&mut self, all: bool) -> Vec<Key> {
        let changed = std::mem::take(&mut self.unsaved);
        if all {
            self.table.iter().map(|(k, _)| k).collect()
        } else {
            changed
        }
    }
}

/// A partition's keys of one kind, in buckets by the time they were stored, oldest first.
#[derive(Clone, Debug)]
pub struct TimeBuckets<V> {
    span_ms: i64,
    buckets: VecDeque<Bucket<V>>,
}

impl<V: Copy + Default> TimeBuckets<V> {
    /// Buckets for `horizon_ms`; a horizon of 0 remembers nothing.
    pub fn new(horizon_ms: i64) -> Self {
        TimeBuckets { span_ms: span_of(horizon_ms), buckets: VecDeque::new() }
    }

    pub fn span_ms(&self) -> i64 {
        self.span_ms
    }

    pub fn buckets(&self) -> &VecDeque<Bucket<V>> {
        &self.buckets
    }

    pub fn buckets_mut(&mut self) -> impl Iterator<Item = &mut Bucket<V>> + '_ {
        self.buckets.iter_mut()
    }

    /// The bucket a key stored at clock `at_ms` belongs to.
    pub fn bucket_of(&self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.span_ms)
    }

    /// The newest value of `key` in a bucket at or after `live_from`.
    #[inline]
    pub fn get(&self, key: Key, live_from: i64) -> Option<&V> {
        self.buckets
            .iter()
            .rev()
            .take_while(|b| b.index >= live_from)
            .find_map(|bucket| bucket.table.get(key))
    }

    #[inline]
    pub fn contains(&self, key: Key, live_from: i64) -> bool {
        self.get(key, live_from).is_some()
    }

    #[inline]
    pub fn prefetch(&self, key: Key) {
        for bucket in &self.buckets {
            bucket.table.prefetch(key);
        }
    }

    /// Stores `key` in the bucket of `at_ms`, which is never older than the newest bucket (the
    /// clock does not go back); with `track`, marks it unsaved for the next incremental
    /// checkpoint (without, the next checkpoint writes everything, or there is none). Returns
    /// whether memory grew (a new bucket, or a table that doubled).
    pub fn insert(&mut self, key: Key, value: V, at_ms: i64, track: bool) -> bool {
        let index = self.bucket_of(at_ms);
        let opened = self.buckets.back().is_none_or(|b| b.index < index);
        if opened {
            let capacity = self.buckets.back().map_or(MIN_CAPACITY, |b| b.table.len() + 1);
            self.buckets.push_back(Bucket {
                index,
                table: IdTable::with_capacity(capacity * 100 / MAX_LOAD_PERCENT + 1),
                unsaved: Vec::new(),
            });
        }
        let Some(bucket) = self.buckets.back_mut() else { return false };
        let before = bucket.table.bytes();
        bucket.table.insert(key, value);
        if track {
            bucket.unsaved.push(key);
        }
        opened || bucket.table.bytes() != before
    }

    /// Restores a bucket as checkpointed (oldest first); later values of a key win.
    pub fn restore(&mut self, index: i64, entries: impl ExactSizeIterator<Item = (Key, V)>) {
        let position = self.buckets.iter().position(|b| b.index >= index);
        // Sized for all of them at once: growing a table step by step rehashes it every time.
        let capacity = entries.len() * 100 / MAX_LOAD_PERCENT + 1;
        let bucket = match position {
            Some(p) if self.buckets[p].index == index => &mut self.buckets[p],
            _ => {
                let bucket =
                    Bucket { index, table: IdTable::with_capacity(capacity), unsaved: Vec::new() };
                let at = position.unwrap_or(self.buckets.len());
                self.buckets.insert(at, bucket);
                &mut self.buckets[at]
            }
        };
        for (key, value) in entries {
            bucket.table.insert(key, value);
        }
    }

    /// Drops every bucket before `live_from`; returns how many entries they held.
    pub fn expire(&mut self, live_from: i64) -> usize {
        let mut dropped = 0;
        while self.buckets.front().is_some_and(|b| b.index < live_from) {
            dropped += self.buckets.pop_front().map_or(0, |b| b.table.len());
        }
        dropped
    }

    /// Drops the oldest bucket (the memory budget's last resort): its index and entry count.
    pub fn evict_oldest(&mut self) -> Option<(i64, usize)> {
        self.buckets.pop_front().map(|b| (b.index, b.table.len()))
    }

    pub fn oldest(&self) -> Option<i64> {
        self.buckets.front().map(|b| b.index)
    }

    /// Rebuilds one sparse bucket other than the newest (which still takes inserts) at full
    /// load; whether it found one.
    pub fn compact_one(&mut self) -> bool {
        let sealed = self.buckets.len().saturating_sub(1);
        match self.buckets.iter_mut().take(sealed).find(|b| b.table.is_sparse()) {
            Some(bucket) => {
                bucket.table.compact();
                true
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.table.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|b| b.table.is_empty())
    }

    pub fn bytes(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| b.table.bytes() + b.unsaved.capacity() * std::mem::size_of::<Key>())
            .sum()
    }
}

/// The bucket span for a horizon: an eighth of it, at least a millisecond.
pub fn span_of(horizon_ms: i64) -> i64 {
    (horizon_ms / BUCKETS_PER_HORIZON).max(1)
}

/// The oldest bucket still live at clock `clock_ms`: bucket `b` ends at `(b + 1) * span`, and is
/// live while that end is after `clock - horizon`.
pub fn live_from(clock_ms: i64, horizon_ms: i64, span_ms: i64) -> i64 {
    clock_ms.saturating_sub(horizon_ms).div_euclid(span_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn a_table_finds_what_it_holds_through_growth_and_compaction() {
        let mut table: IdTable<u32> = IdTable::with_capacity(0);
        for i in 0..10_000u32 {
            let key = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
            assert_eq!(table.insert(key, i), None);
        }
        assert_eq!(table.insert(xxhash_rust::xxh3::xxh3_64(&7u32.to_le_bytes()), 70), Some(7));
        table.compact();
        assert!(table.len() * 100 <= table.keys.len() * MAX_LOAD_PERCENT);
        for i in 0..10_000u32 {
            let key = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
            assert_eq!(table.get(key).copied(), Some(if i == 7 { 70 } else { i }));
        }
        assert!(!table.contains(xxhash_rust::xxh3::xxh3_64(b"absent")));
        assert_eq!(table.insert(0, 1), None, "key 0 is stored too");
        assert!(table.contains(0));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert { key: u8, advance_ms: i64 },
        Lookup(u8),
        Compact,
        Evict,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0u8..60, 0i64..30_000).prop_map(|(key, advance_ms)| Op::Insert { key, advance_ms }),
            4 => (0u8..60).prop_map(Op::Lookup),
            1 => Just(Op::Compact),
            1 => Just(Op::Evict),
        ]
    }

    proptest! {
        /// Bucketed expiry against a naive map of key -> (value, time stored): a key is found
        /// while its bucket is live, and only then.
        #[test]
        fn buckets_expire_like_a_naive_set(ops in prop::collection::vec(op(), 1..300)) {
            const HORIZON: i64 = 80_000;
            let mut buckets: TimeBuckets<u32> = TimeBuckets::new(HORIZON);
            let span = buckets.span_ms();
            let mut naive: HashMap<u8, Vec<(u32, i64)>> = HashMap::new();
            let mut evictions: Vec<(i64, u32)> = Vec::new();
            let mut clock = 1_000_000i64;
            // The naive answer: the newest value of a key whose bucket is live and not evicted.
            // An eviction `(bucket, op)` forgets what was stored up to that bucket before that op.
            let want = |naive: &HashMap<u8, Vec<(u32, i64)>>, key: u8, live: i64, evictions: &[(i64, u32)]| {
                naive.get(&key).and_then(|versions| {
                    versions.iter().rev().find(|(v, at)| {
                        let b = at.div_euclid(span);
                        b >= live && !evictions.iter().any(|&(e, n)| b <= e && *v < n)
                    }).map(|(v, _)| *v)
                })
            };
            for (n, op) in ops.iter().enumerate() {
                let live = live_from(clock, HORIZON, span);
                match op {
                    Op::Insert { key, advance_ms } => {
                        clock += advance_ms;
                        let k = xxhash_rust::xxh3::xxh3_64(&[*key]);
                        buckets.insert(k, n as u32, clock, true);
                        naive.entry(*key).or_default().push((n as u32, clock));
                        buckets.expire(live_from(clock, HORIZON, span));
                    }
                    Op::Lookup(key) => {
                        let k = xxhash_rust::xxh3::xxh3_64(&[*key]);
                        prop_assert_eq!(buckets.get(k, live).copied(), want(&naive, *key, live, &evictions));
                        prop_assert_eq!(buckets.contains(k, live), want(&naive, *key, live, &evictions).is_some());
                    }
                    Op::Compact => { buckets.compact_one(); }
                    Op::Evict => {
                        if let Some((index, _)) = buckets.evict_oldest() {
                            evictions.push((index, n as u32));
                        }
                    }
                }
            }
            let live = live_from(clock, HORIZON, span);
            for key in 0u8..60 {
                let k = xxhash_rust::xxh3::xxh3_64(&[key]);
                prop_assert_eq!(buckets.get(k, live).copied(), want(&naive, key, live, &evictions));
            }
        }
    }
}
