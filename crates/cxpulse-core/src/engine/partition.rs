//! One source partition's state: its series' window rings, its remembered event ids and its
//! correctable answers (both in time buckets), and what its checkpoints have written so far.
//! A partition's state goes whole when the partition does, so a revoke is one removal.

use std::collections::HashMap;

use ahash::RandomState;

use crate::buckets::TimeBuckets;
use crate::customers::CustomerBook;
use crate::drop_evidence::DropDetector;
use crate::event::Survey;
use crate::window::{Counter, Counts, Ring};

use super::persist::PersistBook;
use super::series::SeriesId;

/// Series ids an answer can name: the rest of its word holds the category and the CES score.
pub(crate) const ANSWER_SERIES_LIMIT: u32 = 1 << 26;

/// A correctable answer: what to take out of the windows when a correction replaces it. Packed
/// into 12 bytes (a table slot is its 8-byte key and this): millions are remembered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Answer {
    /// `occurred_at` in ms, as two halves so that the struct aligns to 4 bytes.
    occurred: [u32; 2],
    /// The series id (26 bits), the index into `snapshot::SURVEY_CATEGORIES` (3 bits) and the
    /// CES score (3 bits).
    packed: u32,
}

impl Answer {
    /// `None` for a series id past [`ANSWER_SERIES_LIMIT`] or a category or score out of range.
    pub fn new(occurred_at_ms: i64, series: SeriesId, category: u8, ces_score: u8) -> Option<Self> {
        if series >= ANSWER_SERIES_LIMIT || category > 6 || ces_score > 7 {
            return None;
        }
        let bits = occurred_at_ms as u64;
        Some(Answer {
            occurred: [bits as u32, (bits >> 32) as u32],
            packed: series | u32::from(category) << 26 | u32::from(ces_score) << 29,
        })
    }

    pub fn occurred_at_ms(&self) -> i64 {
        (u64::from(self.occurred[0]) | u64::from(self.occurred[1]) << 32) as i64
    }

    pub fn series(&self) -> SeriesId {
        self.packed & (ANSWER_SERIES_LIMIT - 1)
    }

    pub fn category(&self) -> u8 {
        (self.packed >> 26 & 0b111) as u8
    }

    pub fn ces_score(&self) -> u8 {
        (self.packed >> 29) as u8
    }

    pub fn counts(&self) -> Counts {
        let counter = match self.category() {
            c @ 0..=2 => Counter::Nps(usize::from(c)),
            c @ 3..=4 => Counter::Csat(usize::from(c - 3)),
            c => Counter::Ces(usize::from(c.saturating_sub(5))),
        };
        Counts::of(counter, u32::from(self.ces_score()))
    }
}

pub(crate) struct PartitionState {
    /// Indexed by `SeriesId`: the series' windows in this partition, a ring per configured
    /// window; `None` where the partition never saw the series.
    pub series: Vec<Option<Box<[Ring]>>>,
    /// The ids whose slot is filled, in the order first seen (a series' position here is its
    /// local number in checkpoints), so reads visit only those.
    pub present: Vec<SeriesId>,
    /// Hashes of the event ids seen within the dedup horizon.
    pub dedup: TimeBuckets<()>,
    /// Answers that carried a `response_id`, by its hash, within the correction horizon.
    pub answers: TimeBuckets<Answer>,
    /// The series of the partition's last counted event.
    pub last_series: Option<SeriesId>,
    pub book: PersistBook,
    /// NPS-drop evidence of each series this partition took NPS answers for, checkpointed in
    /// the manifest (`checkpoint::Manifest::encode_with_drops`).
    pub drops: HashMap<SeriesId, DropDetector, RandomState>,
    /// The customers of the partition's series (purchases, NPS answers, churns), made on the
    /// first event that names a customer.
    pub customers: Option<Box<CustomerBook>>,
}

impl PartitionState {
    pub fn new(dedup_horizon_ms: i64, correction_horizon_ms: i64) -> Self {
        PartitionState {
            series: Vec::new(),
            present: Vec::new(),
            dedup: TimeBuckets::new(dedup_horizon_ms),
            answers: TimeBuckets::new(correction_horizon_ms),
            last_series: None,
            book: PersistBook::default(),
            drops: HashMap::default(),
            customers: None,
        }
    }

    /// The series' rings in this partition, created at `heads` on first use.
    pub fn rings_of(
        &mut self,
        series: SeriesId,
        heads: &[i64],
        future_panes: &[usize],
    ) -> &mut [Ring] {
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

    /// Heap bytes of the window rings (and of the drop detectors beside them).
    pub fn window_bytes(&self) -> usize {
        let detector = std::mem::size_of::<(SeriesId, DropDetector)>() + 1;
        let slots = self.series.capacity() * std::mem::size_of::<Option<Box<[Ring]>>>()
            + self.present.capacity() * std::mem::size_of::<SeriesId>()
            + self.drops.capacity() * detector;
        let rings: usize = self
            .present
            .iter()
            .filter_map(|&id| self.series.get(id as usize).and_then(Option::as_ref))
            .flat_map(|rings| rings.iter())
            .map(Ring::bytes)
            .sum();
        slots + rings
    }
}

/// The counter an answer moves, and what it adds to the CES score sum.
pub(crate) fn survey_counter(survey: Survey) -> (Counter, u32) {
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
pub(crate) fn survey_category_index(survey: Survey) -> usize {
    match survey {
        Survey::Nps { score } => Survey::nps_category(score) as usize,
        Survey::Csat { score, scale } => 3 + usize::from(!Survey::csat_satisfied(score, scale)),
        Survey::Ces { score } => 5 + usize::from(!Survey::ces_easy(score)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_packs_into_twelve_bytes_and_refuses_what_does_not_fit() {
        assert_eq!(std::mem::size_of::<Answer>(), 12);
        let at = 1_800_000_000_123;
        let a = Answer::new(at, ANSWER_SERIES_LIMIT - 1, 6, 7).unwrap();
        assert_eq!(
            (a.occurred_at_ms(), a.series(), a.category(), a.ces_score()),
            (at, ANSWER_SERIES_LIMIT - 1, 6, 7)
        );
        assert_eq!(Answer::new(at, ANSWER_SERIES_LIMIT, 0, 0), None);
        assert_eq!(Answer::new(at, 0, 7, 0), None);
        assert_eq!(Answer::new(at, 0, 0, 8), None);
    }

    #[test]
    fn an_answer_gives_back_the_counts_of_its_category() {
        for (survey, category) in [
            (Survey::Nps { score: 10 }, 0),
            (Survey::Nps { score: 3 }, 2),
            (Survey::Csat { score: 2, scale: crate::event::CsatScale::Five }, 4),
            (Survey::Ces { score: 6 }, 5),
            (Survey::Ces { score: 2 }, 6),
        ] {
            assert_eq!(survey_category_index(survey), category);
            let (counter, ces) = survey_counter(survey);
            let answer = Answer::new(-5, 77, category as u8, ces as u8).unwrap();
            assert_eq!(answer.counts(), Counts::of(counter, ces), "{survey:?}");
            assert_eq!(
                (answer.occurred_at_ms(), answer.series(), answer.category(), answer.ces_score()),
                (-5, 77, category as u8, ces as u8)
            );
        }
    }
}
