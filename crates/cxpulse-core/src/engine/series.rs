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

/// Two-level so that lookups borrow the event's strings.
#[derive(Default)]
pub(crate) struct SeriesTable {
    index: FastMap<Box<str>, FastMap<Box<str>, SeriesId>>,
    pub list: Vec<SeriesInfo>,
    overflow: Option<SeriesId>,
}

impl SeriesTable {
    /// The pair's id, interning it while under the cap; `(id, overflowed)`.
    pub fn intern(&mut self, brand: &str, segment: &str, max_series: usize) -> (SeriesId, bool) {
        if let Some(id) = self.index.get(brand).and_then(|segments| segments.get(segment)) {
            return (*id, false);
        }
        if self.list.len() - usize::from(self.overflow.is_some()) >= max_series {
            return (self.overflow_id(), true);
        }
        let id = self.push(brand, segment);
        self.index.entry(brand.into()).or_default().insert(segment.into(), id);
        (id, false)
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
