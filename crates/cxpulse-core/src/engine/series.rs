//! Interned brand/segment pairs, shared by every partition of an engine and capped at
//! `max_series`: pairs past the cap count under the overflow series.

use std::collections::HashMap;
use std::sync::Arc;

use ahash::RandomState;

use crate::event::OVERFLOW_LABEL;

type FastMap<K, V> = HashMap<K, V, RandomState>;

/// Index into the engine's series table.
pub type SeriesId = u32;

pub(crate) struct SeriesInfo {
    pub brand: Arc<str>,
    pub segment: Arc<str>,
    /// `cxpulse_survey_responses_total` by `snapshot::SURVEY_CATEGORIES` index.
    pub survey_totals: [u64; 7],
    /// The wall-clock time the last of those answers was counted at.
    pub last_answer_wall_ms: Option<i64>,
}

/// Slots of [`SeriesTable`]'s lookup cache: a power of two.
const CACHE_SLOTS: usize = 256;

/// An empty cache slot.
const NO_SERIES: SeriesId = SeriesId::MAX;

/// Two-level so that lookups borrow the event's strings, with a direct-mapped cache in front:
/// a partition that takes many pairs in turn finds each with one hash of both labels and two
/// short comparisons, instead of two map lookups.
pub(crate) struct SeriesTable {
    index: FastMap<Box<str>, FastMap<Box<str>, SeriesId>>,
    pub list: Vec<SeriesInfo>,
    overflow: Option<SeriesId>,
    cache: Box<[SeriesId; CACHE_SLOTS]>,
}

impl Default for SeriesTable {
    fn default() -> Self {
        SeriesTable {
            index: FastMap::default(),
            list: Vec::new(),
            overflow: None,
            cache: Box::new([NO_SERIES; CACHE_SLOTS]),
        }
    }
}

/// The cache slot of a pair.
#[inline]
fn cache_slot(brand: &str, segment: &str) -> usize {
    use xxhash_rust::xxh3::xxh3_64;
    let hash = xxh3_64(brand.as_bytes()) ^ xxh3_64(segment.as_bytes()).rotate_left(32);
    (hash as usize) & (CACHE_SLOTS - 1)
}

impl SeriesTable {
    /// The pair's id, interning it while under the cap; `(id, overflowed)`.
    pub fn intern(&mut self, brand: &str, segment: &str, max_series: usize) -> (SeriesId, bool) {
        let slot = cache_slot(brand, segment);
        if let Some(id) = self.cached_in(slot, brand, segment) {
            return (id, false);
        }
        if let Some(&id) = self.index.get(brand).and_then(|segments| segments.get(segment)) {
            self.cache[slot] = id;
            return (id, false);
        }
        if self.list.len() - usize::from(self.overflow.is_some()) >= max_series {
            return (self.overflow_id(), true);
        }
        let id = self.push(brand, segment);
        self.index.entry(brand.into()).or_default().insert(segment.into(), id);
        self.cache[slot] = id;
        (id, false)
    }

    /// The pair's id if the cache holds it (a pair past the cap never is): a lookup that
    /// interns nothing, for events that may yet be refused.
    #[inline]
    pub fn cached(&self, brand: &str, segment: &str) -> Option<SeriesId> {
        self.cached_in(cache_slot(brand, segment), brand, segment)
    }

    #[inline]
    fn cached_in(&self, slot: usize, brand: &str, segment: &str) -> Option<SeriesId> {
        let id = self.cache[slot];
        (id != NO_SERIES && self.is(id, brand, segment)).then_some(id)
    }

    /// A pair from a checkpoint: the overflow pair maps to the overflow series.
    pub fn intern_restored(&mut self, brand: &str, segment: &str, max_series: usize) -> SeriesId {
        if brand == OVERFLOW_LABEL && segment == OVERFLOW_LABEL {
            return self.overflow_id();
        }
        self.intern(brand, segment, max_series).0
    }

    fn overflow_id(&mut self) -> SeriesId {
        match self.overflow {
            Some(id) => id,
            None => {
                let id = self.push(OVERFLOW_LABEL, OVERFLOW_LABEL);
                self.overflow = Some(id);
                id
            }
        }
    }

    /// Whether `id` is the pair `brand`/`segment`.
    pub fn is(&self, id: SeriesId, brand: &str, segment: &str) -> bool {
        self.list
            .get(id as usize)
            .is_some_and(|info| *info.brand == *brand && *info.segment == *segment)
    }

    fn push(&mut self, brand: &str, segment: &str) -> SeriesId {
        self.list.push(SeriesInfo {
            brand: brand.into(),
            segment: segment.into(),
            survey_totals: [0; 7],
            last_answer_wall_ms: None,
        });
        (self.list.len() - 1) as SeriesId
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_sharing_cache_slots_keep_their_own_ids_and_the_cap_holds() {
        let mut table = SeriesTable::default();
        let pairs: Vec<(String, String)> = (0..2_000)
            .map(|i| (format!("brand{}", i % 97), format!("segment{}", i / 97)))
            .collect();
        let ids: Vec<(SeriesId, bool)> =
            pairs.iter().map(|(b, s)| table.intern(b, s, 1_500)).collect();
        // More pairs than cache slots: every slot is shared, in turns.
        for round in 0..3 {
            for ((brand, segment), first) in pairs.iter().zip(&ids).rev() {
                assert_eq!(table.intern(brand, segment, 1_500), *first, "round {round}");
            }
        }
        assert_eq!(ids.iter().filter(|(_, overflowed)| !overflowed).count(), 1_500);
        for ((brand, segment), (id, overflowed)) in pairs.iter().zip(&ids) {
            assert_eq!(table.is(*id, brand, segment), !overflowed);
        }
    }
}
