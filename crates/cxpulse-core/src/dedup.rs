//! The engine's dedup memory: for each remembered event id, the partition that holds it and the
//! clock when it was first seen.
//!
//! Every event looks its id up here, and at a day's horizon the table holds millions of ids, so
//! this is the per-event path's one unavoidable cache miss. The table is built for that: open
//! addressing with linear probing over 32-byte slots (a probe is one cache line, where a
//! general-purpose map reads a control array and then a bucket array), at most half full, deletion
//! by backward shift (no tombstones to skip), and [`DedupTable::prefetch`] so that a batch can
//! start the misses of all its lookups before it needs the first answer.
//!
//! Growing a large table is incremental: the full table becomes the "old" one, and every later
//! change moves a few of its slots into the new table, twice the size, until it is empty. Moving
//! millions of ids at once would stop counting (and scrapes, which wait for the engine) for 100 to
//! 500 ms per million.

use crate::event::SourcePartition;

/// Smallest table, in slots.
const MIN_SLOTS: usize = 16;

/// Largest table that is moved into its successor all at once when it fills: about 262k ids, a
/// pause of tens of milliseconds (a million ids at once had taken 364-513 ms on a slow day, long
/// enough to show in the freshness p99). Moving all at once is cheaper in total (moving a few
/// slots per change costs a fresh worker up to a fifth of its rate while it fills), larger tables
/// move a few slots per change so that no pause grows with them. Small in tests, so that both
/// ways are exercised.
const MOVE_AT_ONCE_MAX_SLOTS: usize = if cfg!(test) { 64 } else { 1 << 19 };

/// Slots of the old table moved on by every change while growing: the old table (N slots, half
/// full) is empty after N / 8 changes, which add at most N / 8 ids, so the new table (2N slots)
/// is still under half full when the move ends.
const MOVE_PER_CHANGE: usize = 8;

/// A remembered id: `key` is the id's xxh3-128 hash, never 0 (0 marks an empty slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    key: u128,
    seen_at: i64,
    owner: SourcePartition,
}

/// A slot as stored: four words, all zero when empty, so that a new table comes from the
/// allocator already zeroed (fresh pages) instead of being written over once more.
type Packed = [u64; 4];

const EMPTY: Packed = [0; 4];

/// An old-table slot whose id moved on or was forgotten: lookups in the old table probe past it.
const MOVED: u128 = u128::MAX;

fn pack(slot: Slot) -> Packed {
    let owner = (u64::from(slot.owner.topic) << 32) | u64::from(slot.owner.partition as u32);
    [slot.key as u64, (slot.key >> 64) as u64, slot.seen_at as u64, owner]
}

fn unpack(packed: &Packed) -> Slot {
    Slot {
        key: key_of(packed),
        seen_at: packed[2] as i64,
        owner: SourcePartition {
            topic: (packed[3] >> 32) as u32,
            partition: packed[3] as u32 as i32,
        },
    }
}

/// Marks an old-table slot as no longer holding its id.
fn mark_moved(packed: &mut Packed) {
    packed[..2].copy_from_slice(&[MOVED as u64, (MOVED >> 64) as u64]);
}

#[inline]
fn key_of(packed: &Packed) -> u128 {
    u128::from(packed[0]) | (u128::from(packed[1]) << 64)
}

/// Where a key is, or where it would go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    Found(usize),
    Vacant(usize),
}

pub(crate) struct DedupTable {
    slots: Vec<Packed>,
    /// Ids remembered, in both tables.
    len: usize,
    /// While growing, the previous table (empty otherwise); ids leave it, none enter.
    old: Vec<Packed>,
    /// The next old-table slot to move.
    moved_up_to: usize,
}

impl Default for DedupTable {
    fn default() -> Self {
        DedupTable { slots: empty_table(MIN_SLOTS), len: 0, old: Vec::new(), moved_up_to: 0 }
    }
}

/// Tables from this size on ask the kernel for huge pages.
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// A table of `size` empty slots. A large one is asked to live on transparent huge pages (where
/// the kernel offers them only on request): every lookup lands on a random slot, so with 4 KiB
/// pages nearly every probe also misses the TLB, and filling the table faults once per 4 KiB.
fn empty_table(size: usize) -> Vec<Packed> {
    let table = vec![EMPTY; size];
    if size * std::mem::size_of::<Packed>() >= HUGE_PAGE_BYTES {
        advise_huge_pages(&table);
    }
    table
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_huge_pages(table: &[Packed]) {
    const PAGE: usize = 4096;
    let start = (table.as_ptr() as usize).next_multiple_of(PAGE);
    let end = table.as_ptr() as usize + std::mem::size_of_val(table);
    if end > start {
        // SAFETY: madvise with MADV_HUGEPAGE changes how the kernel backs these pages, never
        // their contents; the page-aligned range lies inside the table's own allocation, which
        // outlives the call. A refusal (THP disabled) leaves ordinary pages, so it is ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_table: &[Packed]) {}

/// The stored form of an id hash: 0 marks an empty slot and `MOVED` a moved one, so those two are
/// stored as their neighbours (two ids meeting there is as likely as any other 128-bit collision).
#[inline]
fn stored(key: u128) -> u128 {
    key.clamp(1, MOVED - 1)
}

/// Where `key` is in `table` (the old one: empty slots end a probe run, moved ones do not).
fn find_in_old(table: &[Packed], key: u128) -> Option<usize> {
    let mask = table.len().checked_sub(1)?;
    let mut index = (key as usize) & mask;
    loop {
        match key_of(table.get(index)?) {
            0 => return None,
            k if k == key => return Some(index),
            _ => index = (index + 1) & mask,
        }
    }
}

impl DedupTable {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline]
    fn home(&self, key: u128) -> usize {
        (key as usize) & self.mask()
    }

    /// Asks the CPU to start loading the key's home slot, so that a batch can have the cache
    /// misses of many lookups in flight while it parses, before it needs any of their answers.
    #[inline]
    #[allow(unsafe_code)]
    pub(crate) fn prefetch(&self, key: u128) {
        let Some(slot) = self.slots.get(self.home(stored(key))) else { return };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint: it reads nothing architecturally, never faults and has no
        // effect on the program's behaviour, whatever the address (this one is a live slot).
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(slot.as_ptr().cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        std::hint::black_box(slot[0]);
    }

    /// Finds the key's slot, or the free slot it would take. Reserves room for one insertion
    /// first, so that [`DedupTable::fill`] on a `Vacant` answer never has to grow the table.
    pub(crate) fn probe(&mut self, key: u128) -> Probe {
        self.move_old(MOVE_PER_CHANGE);
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let key = stored(key);
        let index = self.find_or_vacant(key);
        if key_of(&self.slots[index]) == key {
            return Probe::Found(index);
        }
        // Not moved yet: take it over to the new table now, where the caller will use it.
        if let Some(old_index) = find_in_old(&self.old, key) {
            self.slots[index] = self.old[old_index];
            mark_moved(&mut self.old[old_index]);
            return Probe::Found(index);
        }
        Probe::Vacant(index)
    }

    /// The key's slot in the new table, or the empty slot ending its probe run.
    #[inline]
    fn find_or_vacant(&self, key: u128) -> usize {
        let mask = self.mask();
        let mut index = self.home(key);
        loop {
            match key_of(&self.slots[index]) {
                k if k == 0 || k == key => return index,
                _ => index = (index + 1) & mask,
            }
        }
    }

    /// The owner and first-seen clock at a found slot.
    #[inline]
    pub(crate) fn at(&self, index: usize) -> (SourcePartition, i64) {
        let slot = unpack(&self.slots[index]);
        (slot.owner, slot.seen_at)
    }

    /// Sets the key's owner and clock at the slot `probe` gave for it, with no change in between.
    pub(crate) fn fill(&mut self, probe: Probe, key: u128, owner: SourcePartition, seen_at: i64) {
        let index = match probe {
            Probe::Found(index) => index,
            Probe::Vacant(index) => {
                self.len += 1;
                index
            }
        };
        self.slots[index] = pack(Slot { key: stored(key), seen_at, owner });
    }

    #[cfg(test)]
    pub(crate) fn get(&self, key: u128) -> Option<(SourcePartition, i64)> {
        let key = stored(key);
        let index = self.find_or_vacant(key);
        if key_of(&self.slots[index]) == key {
            return Some(self.at(index));
        }
        let slot = unpack(&self.old[find_in_old(&self.old, key)?]);
        Some((slot.owner, slot.seen_at))
    }

    /// Inserts the key unless it is present.
    pub(crate) fn insert_if_absent(&mut self, key: u128, owner: SourcePartition, seen_at: i64) {
        if let probe @ Probe::Vacant(_) = self.probe(key) {
            self.fill(probe, key, owner, seen_at);
        }
    }

    /// Forgets the key if it is still held by `owner` from `seen_at` (an id seen again since
    /// belongs to the newer sighting).
    pub(crate) fn remove_if_held(&mut self, key: u128, owner: SourcePartition, seen_at: i64) {
        self.move_old(MOVE_PER_CHANGE);
        let key = stored(key);
        let held = |packed: &Packed| {
            let slot = unpack(packed);
            slot.owner == owner && slot.seen_at == seen_at
        };
        let index = self.find_or_vacant(key);
        if key_of(&self.slots[index]) == key {
            if held(&self.slots[index]) {
                self.remove_at(index);
            }
        } else if let Some(old_index) = find_in_old(&self.old, key) {
            if held(&self.old[old_index]) {
                mark_moved(&mut self.old[old_index]);
                self.len -= 1;
            }
        }
    }

    /// Forgets every id held by one of `owners` (sorted) in one pass over the table, refilling a
    /// table of the same size with the rest. For a revoke that takes most of the table, this reads
    /// memory in order where a removal per id pays a cache miss each (`bench`, 2.6M of 3M ids: 336
    /// ms id by id, 50-63 ms by sweep, under the engine lock). Equivalent to `remove_if_held` for
    /// every id the owners' partitions remember, since a slot always holds its owner's latest
    /// sighting.
    pub(crate) fn forget_owners(&mut self, owners: &[SourcePartition]) {
        self.move_old(usize::MAX);
        let size = self.slots.len();
        let previous = std::mem::replace(&mut self.slots, empty_table(size));
        self.len = 0;
        for packed in previous.iter().filter(|packed| key_of(packed) != 0) {
            if owners.binary_search(&unpack(packed).owner).is_ok() {
                continue;
            }
            let index = self.find_or_vacant(key_of(packed));
            self.slots[index] = *packed;
            self.len += 1;
        }
    }

    /// Empties a slot and shifts later members of its probe run back, so that every key stays
    /// reachable from its home without tombstones.
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.mask();
        self.len -= 1;
        let mut next = (hole + 1) & mask;
        loop {
            let slot = self.slots[next];
            if key_of(&slot) == 0 {
                break;
            }
            // The slot may move into the hole only if its home is not cyclically in (hole, next].
            let home = self.home(key_of(&slot));
            let home_after_hole = (home.wrapping_sub(hole) & mask) != 0
                && (home.wrapping_sub(hole) & mask) <= (next.wrapping_sub(hole) & mask);
            if !home_after_hole {
                self.slots[hole] = slot;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = EMPTY;
    }

    /// Grows: the table becomes the old one, emptied at once if small, else by later changes.
    fn grow(&mut self) {
        self.move_old(usize::MAX);
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        self.old = std::mem::replace(&mut self.slots, empty_table(size));
        self.moved_up_to = 0;
        if self.old.len() <= MOVE_AT_ONCE_MAX_SLOTS {
            self.move_old(usize::MAX);
        }
    }

    /// Moves up to `count` old-table slots' ids into the new table; frees the old table once done.
    fn move_old(&mut self, count: usize) {
        if self.old.is_empty() {
            return;
        }
        let end = self.moved_up_to.saturating_add(count).min(self.old.len());
        for old_index in self.moved_up_to..end {
            let packed = self.old[old_index];
            let key = key_of(&packed);
            if key == 0 || key == MOVED {
                continue;
            }
            let index = self.find_or_vacant(key);
            self.slots[index] = packed;
            mark_moved(&mut self.old[old_index]);
        }
        self.moved_up_to = end;
        if end == self.old.len() {
            self.old = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn partition(p: i32) -> SourcePartition {
        SourcePartition { topic: 0, partition: p }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Upsert(u128, i32, i64),
        InsertIfAbsent(u128, i32, i64),
        RemoveIfHeld(u128, i32, i64),
        ForgetOwners(Vec<i32>),
    }

    /// Keys crowd into few homes (small values, shared low bits) so runs, wrap-around and
    /// backward shifts all happen.
    fn key() -> impl Strategy<Value = u128> {
        prop_oneof![0u128..40, (0u128..8).prop_map(|k| (k << 64) | 3), any::<u128>()]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (key(), 0i32..3, 0i64..4).prop_map(|(k, p, t)| Op::Upsert(k, p, t)),
            1 => (key(), 0i32..3, 0i64..4).prop_map(|(k, p, t)| Op::InsertIfAbsent(k, p, t)),
            3 => (key(), 0i32..3, 0i64..4).prop_map(|(k, p, t)| Op::RemoveIfHeld(k, p, t)),
            1 => proptest::collection::btree_set(0i32..3, 0..3).prop_map(|owners| Op::ForgetOwners(owners.into_iter().collect())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The table answers like a map of the same operations.
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..300)) {
            let mut table = DedupTable::default();
            let mut model: HashMap<u128, (SourcePartition, i64)> = HashMap::new();
            for op in &ops {
                match *op {
                    Op::Upsert(k, p, t) => {
                        let probe = table.probe(k);
                        prop_assert_eq!(matches!(probe, Probe::Found(_)), model.contains_key(&stored(k)));
                        if let Probe::Found(index) = probe {
                            prop_assert_eq!(Some(table.at(index)), model.get(&stored(k)).copied());
                        }
                        table.fill(probe, k, partition(p), t);
                        model.insert(stored(k), (partition(p), t));
                    }
                    Op::InsertIfAbsent(k, p, t) => {
                        table.insert_if_absent(k, partition(p), t);
                        model.entry(stored(k)).or_insert((partition(p), t));
                    }
                    Op::RemoveIfHeld(k, p, t) => {
                        table.remove_if_held(k, partition(p), t);
                        if model.get(&stored(k)) == Some(&(partition(p), t)) {
                            model.remove(&stored(k));
                        }
                    }
                    Op::ForgetOwners(ref owners) => {
                        let owners: Vec<SourcePartition> = owners.iter().map(|p| partition(*p)).collect();
                        table.forget_owners(&owners);
                        model.retain(|_, (owner, _)| !owners.contains(owner));
                    }
                }
                prop_assert_eq!(table.len(), model.len());
            }
            for (k, v) in &model {
                prop_assert_eq!(table.get(*k), Some(*v));
            }
            for k in 0u128..40 {
                prop_assert_eq!(table.get(k), model.get(&stored(k)).copied());
            }
        }
    }

    #[test]
    fn grows_and_keeps_every_key() {
        let mut table = DedupTable::default();
        for k in 1..=10_000u128 {
            let probe = table.probe(k * 0x9e37_79b9_7f4a_7c15);
            assert!(matches!(probe, Probe::Vacant(_)), "{k}");
            table.fill(probe, k * 0x9e37_79b9_7f4a_7c15, partition(1), k as i64);
        }
        assert_eq!(table.len(), 10_000);
        assert!(table.slots.len() >= 20_000, "at most half full");
        for k in 1..=10_000u128 {
            assert_eq!(table.get(k * 0x9e37_79b9_7f4a_7c15), Some((partition(1), k as i64)));
        }
        for k in (1..=10_000u128).step_by(2) {
            table.remove_if_held(k * 0x9e37_79b9_7f4a_7c15, partition(1), k as i64);
        }
        assert_eq!(table.len(), 5_000);
        for k in 1..=10_000u128 {
            let expected = (k % 2 == 0).then_some((partition(1), k as i64));
            assert_eq!(table.get(k * 0x9e37_79b9_7f4a_7c15), expected);
        }
    }

    #[test]
    fn growing_moves_a_few_slots_per_change() {
        let mut table = DedupTable::default();
        let key = |k: u128| k * 0x9e37_79b9_7f4a_7c15;
        let mut k = 1;
        // Fill to the brink of the doubling from 1,024 slots, then take one more id.
        while table.slots.len() < 1_024 || (table.len + 1) * 2 <= table.slots.len() {
            table.insert_if_absent(key(k), partition(1), k as i64);
            k += 1;
        }
        table.insert_if_absent(key(k), partition(1), k as i64);
        assert_eq!(table.slots.len(), 2_048);
        assert_eq!(table.old.len(), 1_024, "the old table stays until its ids have moved");
        assert_eq!(table.moved_up_to, 0, "nothing moved by the change that grew it");
        for _ in 0..1_024 / MOVE_PER_CHANGE {
            k += 1;
            table.insert_if_absent(key(k), partition(2), k as i64);
        }
        assert!(table.old.is_empty(), "moved after 1,024 / {MOVE_PER_CHANGE} changes");
        for id in 1..=k {
            assert!(table.get(key(id)).is_some(), "id {id}");
        }
        assert_eq!(table.len(), k as usize);
    }

    #[test]
    fn forgetting_owners_mid_growth_keeps_every_other_id() {
        let mut table = DedupTable::default();
        let key = |k: u128| k * 0x9e37_79b9_7f4a_7c15;
        let owner = |k: u128| partition((k % 4) as i32);
        let mut k = 1;
        while table.old.is_empty() || table.slots.len() < 1_024 {
            table.insert_if_absent(key(k), owner(k), k as i64);
            k += 1;
        }
        assert!(!table.old.is_empty(), "growing when the owners are forgotten");
        table.forget_owners(&[partition(1), partition(3)]);
        assert!(table.old.is_empty());
        for id in 1..k {
            let expected = (id % 2 == 0).then_some((owner(id), id as i64));
            assert_eq!(table.get(key(id)), expected, "id {id}");
        }
        assert_eq!(table.len(), (1..k).filter(|id| id % 2 == 0).count());
    }

    #[test]
    fn removal_only_when_still_held_by_that_sighting() {
        let mut table = DedupTable::default();
        table.insert_if_absent(7, partition(1), 10);
        table.remove_if_held(7, partition(2), 10);
        table.remove_if_held(7, partition(1), 11);
        assert_eq!(table.get(7), Some((partition(1), 10)));
        table.remove_if_held(7, partition(1), 10);
        assert_eq!(table.get(7), None);
        assert_eq!(table.len(), 0);
    }
}
