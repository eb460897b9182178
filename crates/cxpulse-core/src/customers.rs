//! Per-customer state of one source partition, for the customer-journey gauges: repeat purchase
//! rate (`purchasers`, `repeat_purchasers`) and churn by the customer's NPS category
//! (`nps_respondents`, `churned_by_nps`), per series and window. Sans-IO like the rest of the
//! core: a [`CustomerBook`] takes events and the clock (the windows' heads) and returns counts.
//!
//! Each remembered customer (of a series) keeps its newest two purchase times and its newest two
//! NPS answers (`table`), and contributes to window steps (`ring`): +1 purchaser at the step of
//! its newest purchase, +1 repeat purchaser at the step of its second newest, +1 respondent of
//! its newest answer's category at that answer's step. When those change the contribution moves
//! (-1 at the old step, +1 at the new), so the window sums stay exact at step granularity, for
//! events in any order. A churn counts +1 at its own step under the category of the newest
//! remembered answer at or before it, as known when it is processed (`unknown`: none).
//!
//! What is exact, and the edges left:
//! - Events before the horizon (the earliest start of any window) are ignored, and so are events
//!   past the future steps: the engine rejects both (too old, too far in the future).
//! - A customer whose newest purchase is ahead of the clock (producer clock skew) counts as a
//!   purchaser, and its second purchase as a repeat, from when the clock reaches that newest one.
//! - Two answers are remembered. A churn older than both (it arrives after two newer answers of
//!   the customer) finds none of them at or before it and counts as `unknown`, although an older,
//!   no longer remembered answer was.
//! - Corrections are matched, within the customer, on a 30-bit fingerprint of the `response_id`
//!   of the newest answer; a correction of the second newest is taken as a new answer, which is
//!   the same when it keeps or moves forward the answer's time. A correction that moves an answer
//!   back in time can leave a third, forgotten answer out of the newest two.
//! - A customer is forgotten once its newest purchase or answer is before the horizon (a churn
//!   is counted, not remembered); [`CustomerBook::maintain`] sweeps them out, a lookup already
//!   treats them as forgotten, so when the sweep runs changes the memory, never the counts.
//! - Customers are keyed by a 64-bit hash of their id: two ids of a series colliding (about one
//!   chance in 10^7 at a million customers) count as one.

mod persist;
mod ring;
mod table;

use crate::event::NpsCategory;
use crate::window::{WindowSpec, PANES_PER_WINDOW};

pub use persist::CustomerRestoreError;
use ring::{Tally, TallyRing};
use table::{Customer, CustomerTable, MAX_TIME_MS};

/// The engine's series id.
pub type SeriesId = u32;

/// Counter indices in a step's tally.
const PURCHASERS: usize = 0;
const REPEAT: usize = 1;
const RESPONDENTS: usize = 2;
const CHURNED: usize = 5;

/// What a customer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// A purchase (its event id already deduplicated upstream).
    Purchase,
    /// An NPS answer, with a hash of its `response_id` if it has one (a later answer with the same
    /// one corrects it).
    Answer {
        category: NpsCategory,
        response: Option<u64>,
    },
    Churn,
}

/// One event of a customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CustomerEvent {
    pub series: SeriesId,
    /// A hash of the customer's id (a 64-bit one, e.g. xxh3).
    pub customer: u64,
    pub occurred_at_ms: i64,
    pub touch: Touch,
}

/// Whether an event was taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    Counted,
    /// Before the horizon: in no window, and its customer's memory may be gone.
    TooOld,
    /// Past the future steps of some window (or beyond the representable times).
    TooFarAhead,
}

/// One window's customer counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CustomerCounts {
    pub purchasers: u32,
    pub repeat_purchasers: u32,
    /// By category: promoter, passive, detractor.
    pub nps_respondents: [u32; 3],
    /// By category of the last answer: promoter, passive, detractor, unknown.
    pub churned_by_nps: [u32; 4],
}

impl CustomerCounts {
    /// Adds another partition's counts of the same series and window.
    pub fn add(&mut self, other: &CustomerCounts) {
        self.purchasers = self.purchasers.wrapping_add(other.purchasers);
        self.repeat_purchasers = self.repeat_purchasers.wrapping_add(other.repeat_purchasers);
        for (a, b) in self.nps_respondents.iter_mut().zip(other.nps_respondents) {
            *a = a.wrapping_add(b);
        }
        for (a, b) in self.churned_by_nps.iter_mut().zip(other.churned_by_nps) {
            *a = a.wrapping_add(b);
        }
    }

    /// Repeat purchasers over purchasers (`cxpulse:repeat_purchase_ratio`); `None` without any.
    pub fn repeat_purchase_ratio(&self) -> Option<f64> {
        (self.purchasers > 0)
            .then(|| f64::from(self.repeat_purchasers) / f64::from(self.purchasers))
    }

    /// Churns over respondents per category, promoter, passive, detractor
    /// (`cxpulse:churn_ratio_by_nps`); `None` for a category without respondents. The `unknown`
    /// churns have no respondents to divide by.
    pub fn churn_ratio_by_nps(&self) -> [Option<f64>; 3] {
        std::array::from_fn(|c| {
            let respondents = self.nps_respondents[c];
            (respondents > 0).then(|| f64::from(self.churned_by_nps[c]) / f64::from(respondents))
        })
    }

    fn of(tally: &Tally) -> Self {
        let [purchasers, repeat_purchasers, p, q, d, cp, cq, cd, cu] = *tally;
        CustomerCounts {
            purchasers,
            repeat_purchasers,
            nps_respondents: [p, q, d],
            churned_by_nps: [cp, cq, cd, cu],
        }
    }
}

fn category_index(category: NpsCategory) -> u8 {
    match category {
        NpsCategory::Promoter => 0,
        NpsCategory::Passive => 1,
        NpsCategory::Detractor => 2,
    }
}

/// The 30-bit fingerprint a `response_id` hash is remembered by (never 0, which means none).
fn fingerprint(response: u64) -> u32 {
    ((response >> 34) as u32).max(1)
}

/// The steps a customer contributes to: (counter, time) for purchaser, repeat, respondent.
fn contributions(customer: &Customer) -> [Option<(usize, i64)>; 3] {
    [
        customer.purchases[0].map(|t| (PURCHASERS, t)),
        customer.purchases[1].map(|t| (REPEAT, t)),
        customer.answers[0].map(|(t, c)| (RESPONDENTS + usize::from(c.min(2)), t)),
    ]
}

/// Inserts `time` among the newest two, newest first; a tie goes before (the later processed is
/// the newer).
fn insert_newest<T: Copy>(list: &mut [Option<T>; 2], item: T, time: impl Fn(&T) -> i64) {
    let t = time(&item);
    if list[0].as_ref().is_none_or(|old| t >= time(old)) {
        list[1] = list[0];
        list[0] = Some(item);
    } else if list[1].as_ref().is_none_or(|old| t >= time(old)) {
        list[1] = Some(item);
    }
}

/// One partition's customers: see the module docs.
#[derive(Clone, Debug)]
pub struct CustomerBook {
    windows: Vec<WindowSpec>,
    future_steps: Vec<usize>,
    heads: Vec<i64>,
    /// The earliest start of any window at the heads, in ms: older is in no window.
    horizon_ms: i64,
    /// The first time past some window's future steps.
    ahead_ms: i64,
    longest: usize,
    table: CustomerTable,
    /// Indexed by series id: the series' rings, one per window.
    rings: Vec<Option<Box<[TallyRing]>>>,
    present: Vec<SeriesId>,
    /// The longest window's head at the last sweep.
    swept_head: i64,
    /// Checkpoints are incremental: a full one was taken, or the book was restored.
    tracking: bool,
    /// Customers forgotten since the last checkpoint that a checkpoint had written.
    forgotten: Vec<(SeriesId, u64)>,
    /// While `tracking`: the customers changed since the last checkpoint (each slot marked dirty
    /// is here), so that a checkpoint of changes finds them without a pass over the table.
    changed: Vec<(SeriesId, u64)>,
}

impl CustomerBook {
    /// A book for `windows`, with `future_steps` steps ahead of the clock per window (as the
    /// engine's rings), at the clock `heads` (each window's step index at T).
    pub fn new(windows: &[WindowSpec], future_steps: &[usize], heads: &[i64]) -> Self {
        let longest = (0..windows.len()).max_by_key(|&i| windows[i].size_ms).unwrap_or(0);
        let mut book = CustomerBook {
            windows: windows.to_vec(),
            future_steps: windows
                .iter()
                .enumerate()
                .map(|(i, _)| future_steps.get(i).copied().unwrap_or(0))
                .collect(),
            heads: windows
                .iter()
                .enumerate()
                .map(|(i, _)| heads.get(i).copied().unwrap_or(i64::MIN))
                .collect(),
            horizon_ms: i64::MIN,
            ahead_ms: i64::MAX,
            longest,
            table: CustomerTable::default(),
            rings: Vec::new(),
            present: Vec::new(),
            swept_head: i64::MIN,
            tracking: false,
            forgotten: Vec::new(),
            changed: Vec::new(),
        };
        book.update_limits();
        book.swept_head = book.heads.get(longest).copied().unwrap_or(i64::MIN);
        book
    }

    fn update_limits(&mut self) {
        let starts =
            self.windows.iter().zip(&self.heads).map(|(w, head)| {
                head.saturating_sub(PANES_PER_WINDOW - 1).saturating_mul(w.step_ms)
            });
        self.horizon_ms = starts.min().unwrap_or(i64::MIN);
        let ends = self.windows.iter().zip(&self.heads).zip(&self.future_steps).map(
            |((w, head), future)| head.saturating_add(*future as i64 + 1).saturating_mul(w.step_ms),
        );
        self.ahead_ms = ends.min().unwrap_or(i64::MAX);
    }

    /// Moves the clock to `heads` (each window's step at T); a head never goes back.
    pub fn set_clock(&mut self, heads: &[i64]) {
        let mut moved = false;
        for (head, new) in self.heads.iter_mut().zip(heads) {
            if new > head {
                *head = *new;
                moved = true;
            }
        }
        if moved {
            self.update_limits();
        }
    }

    pub fn heads(&self) -> &[i64] {
        &self.heads
    }

    pub fn windows(&self) -> &[WindowSpec] {
        &self.windows
    }

    /// The series' rings, created at the clock and moved to it.
    fn rings_of(&mut self, series: SeriesId) -> &mut [TallyRing] {
        let slot = series as usize;
        if self.rings.len() <= slot {
            self.rings.resize_with(slot + 1, || None);
        }
        if self.rings[slot].is_none() {
            self.present.push(series);
        }
        let (heads, future) = (&self.heads, &self.future_steps);
        let rings = self.rings[slot].get_or_insert_with(|| {
            heads.iter().zip(future).map(|(h, f)| TallyRing::new(*h, *f)).collect()
        });
        for (ring, head) in rings.iter_mut().zip(heads) {
            ring.advance(*head);
        }
        rings
    }

    /// Adds `delta` to `counter` at the step of `time_ms` in every window of the series.
    fn contribute(&mut self, series: SeriesId, counter: usize, time_ms: i64, delta: i32) {
        let windows = std::mem::take(&mut self.windows);
        for (ring, window) in self.rings_of(series).iter_mut().zip(&windows) {
            ring.apply(window.pane_of(time_ms), counter, delta);
        }
        self.windows = windows;
    }

    /// The customer as remembered, if it is not past the horizon.
    fn live(&self, series: SeriesId, customer: u64) -> Option<Customer> {
        let horizon = self.horizon_ms;
        self.table.get(customer, series).filter(|c| c.newest().is_some_and(|t| t >= horizon))
    }

    /// Starts loading what [`CustomerBook::apply`] looks up for the customer into the cache.
    #[inline]
    pub fn prefetch(&self, series: SeriesId, customer: u64) {
        self.table.prefetch(customer, series);
    }

    /// Takes in one event at the current clock.
    pub fn apply(&mut self, event: &CustomerEvent) -> Taken {
        let t = event.occurred_at_ms;
        if t < self.horizon_ms {
            return Taken::TooOld;
        }
        if t >= self.ahead_ms || !(0..=MAX_TIME_MS).contains(&t) {
            return Taken::TooFarAhead;
        }
        let (series, hash) = (event.series, event.customer);
        let known = self.live(series, hash);
        let before = known.unwrap_or_default();
        let mut after = before;
        match event.touch {
            Touch::Churn => {
                let category = before
                    .answers
                    .iter()
                    .flatten()
                    .find(|(at, _)| *at <= t)
                    .map_or(3, |(_, c)| usize::from((*c).min(2)));
                self.contribute(series, CHURNED + category, t, 1);
                return Taken::Counted;
            }
            Touch::Purchase => insert_newest(&mut after.purchases, t, |t| *t),
            Touch::Answer { category, response } => {
                let fingerprint = response.map_or(0, fingerprint);
                if fingerprint != 0 && fingerprint == after.fingerprint {
                    // A correction of the newest answer: it is taken out, then in as new. The
                    // second newest moves up without a fingerprint (none is kept for it).
                    after.answers = [after.answers[1], None];
                    after.fingerprint = 0;
                }
                let newest = after.answers[0].is_none_or(|(old, _)| t >= old);
                insert_newest(&mut after.answers, (t, category_index(category)), |a| a.0);
                if newest {
                    after.fingerprint = fingerprint;
                }
            }
        }
        let was_dirty = match known {
            Some(customer) => customer.dirty,
            None => {
                // A forgotten customer's slot may still be there: start anew, keeping whether
                // some checkpoint wrote it (its forgetting must then reach the checkpoints too).
                let old = self.table.get(hash, series);
                after = Customer { persisted: old.is_some_and(|c| c.persisted), ..after };
                old.is_some_and(|c| c.dirty)
            }
        };
        for (old, new) in contributions(&before).into_iter().zip(contributions(&after)) {
            if old != new {
                if let Some((counter, at)) = old {
                    self.contribute(series, counter, at, -1);
                }
                if let Some((counter, at)) = new {
                    self.contribute(series, counter, at, 1);
                }
            }
        }
        after.dirty = true;
        self.table.put(hash, series, &after);
        if self.tracking && !was_dirty {
            self.changed.push((series, hash));
        }
        Taken::Counted
    }

    /// Forgets the customers whose newest event is before the horizon, once per step of the
    /// longest window: one pass over the table (about 40 bytes read per slot).
    pub fn maintain(&mut self) {
        let head = self.heads.get(self.longest).copied().unwrap_or(i64::MIN);
        if head > self.swept_head {
            self.swept_head = head;
            self.sweep();
        }
    }

    fn sweep(&mut self) {
        let horizon = self.horizon_ms;
        let tracking = self.tracking;
        let forgotten = &mut self.forgotten;
        self.table.sweep(
            |c| c.newest().is_none_or(|t| t < horizon),
            |hash, series, c| {
                if tracking && c.persisted {
                    forgotten.push((series, hash));
                }
            },
        );
    }

    /// Each window's counts of the series at the clock (empty for a series never seen).
    pub fn counts(&mut self, series: SeriesId) -> Vec<CustomerCounts> {
        let heads = &self.heads;
        match self.rings.get_mut(series as usize) {
            Some(Some(rings)) => rings
                .iter_mut()
                .zip(heads)
                .map(|(ring, head)| {
                    ring.advance(*head);
                    CustomerCounts::of(ring.sum())
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The counts of each step of a window of the series at the clock, oldest first (for trends;
    /// empty for a series never seen).
    pub fn steps(&mut self, series: SeriesId, window: usize) -> Vec<CustomerCounts> {
        let Some(head) = self.heads.get(window).copied() else { return Vec::new() };
        match self.rings.get_mut(series as usize).and_then(Option::as_mut) {
            Some(rings) => match rings.get_mut(window) {
                Some(ring) => {
                    ring.advance(head);
                    ring.steps().map(CustomerCounts::of).collect()
                }
                None => Vec::new(),
            },
            None => Vec::new(),
        }
    }

    /// The series this book holds counts for, in the order first seen.
    pub fn series(&self) -> &[SeriesId] {
        &self.present
    }

    /// Remembered customers (those past the horizon included, until the next sweep).
    pub fn entries(&self) -> usize {
        self.table.len()
    }

    /// Heap and inline bytes of the book: the table as allocated, the rings, the lists.
    pub fn bytes(&self) -> usize {
        let rings: usize = self
            .rings
            .iter()
            .flatten()
            .map(|rings| rings.iter().map(TallyRing::bytes).sum::<usize>())
            .sum();
        std::mem::size_of::<Self>()
            + self.table.bytes()
            + rings
            + self.rings.capacity() * std::mem::size_of::<Option<Box<[TallyRing]>>>()
            + self.present.capacity() * std::mem::size_of::<SeriesId>()
            + (self.forgotten.capacity() + self.changed.capacity())
                * std::mem::size_of::<(SeriesId, u64)>()
            + self.windows.capacity() * std::mem::size_of::<WindowSpec>()
            + (self.heads.capacity() + self.future_steps.capacity()) * 8
    }
}

#[cfg(test)]
mod tests;
