//! Event-time rolling windows built from panes with running sums.
//!
//! A window of size W is cut into 60 panes of `step = W / 60`. A [`Ring`] keeps the panes of the
//! window plus a few "future" panes (events a little ahead of the wall clock), and a running sum
//! of the in-window panes, so reading a window is O(1) and memory is fixed by the window, not by
//! the event count. Pane `p` holds events with `floor(occurred_at / step) == p`; at clock T the
//! window holds panes `head-59 ..= head` with `head = floor(T / step)`, so it covers between
//! `W - step` and `W` of history ("to the resolution of the step").
//!
//! Active customers are tracked alongside: a pane carries the net lifecycle moves and the latest
//! `customer_base` value seen in it, and each ring folds panes that leave it into an anchor: the
//! active count at the window's start.

/// Panes per window: the step is W / 60 (the step is at most W/60, docs/metrics.md).
pub const PANES_PER_WINDOW: i64 = 60;

/// Why a window size is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowError {
    /// The name is no duration.
    Duration(crate::duration::DurationError),
    /// Shorter than a minute, or not a whole number of milliseconds per step.
    Size { size_ms: i64 },
}

impl std::fmt::Display for WindowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WindowError::Duration(e) => e.fmt(f),
            WindowError::Size { size_ms } => write!(
                f,
                "window {} is too short or not divisible into {PANES_PER_WINDOW} steps: use at \
                 least 1m",
                crate::duration::format_duration_ms(*size_ms)
            ),
        }
    }
}

impl std::error::Error for WindowError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WindowError::Duration(e) => Some(e),
            WindowError::Size { .. } => None,
        }
    }
}

/// One configured window: its size, step and label value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub name: String,
    pub size_ms: i64,
    pub step_ms: i64,
}

impl WindowSpec {
    /// A window of `size_ms`, which must be a whole number of seconds of at least one minute so
    /// that the step is a whole number of milliseconds.
    pub fn new(size_ms: i64) -> Result<Self, WindowError> {
        if size_ms < 60_000 || size_ms % PANES_PER_WINDOW != 0 {
            return Err(WindowError::Size { size_ms });
        }
        Ok(WindowSpec {
            name: crate::duration::format_duration_ms(size_ms),
            size_ms,
            step_ms: size_ms / PANES_PER_WINDOW,
        })
    }

    /// A window named as the configuration writes it (`"24h"` stays `24h`, not `1d`).
    pub fn named(name: &str) -> Result<Self, WindowError> {
        let size_ms = crate::duration::parse_duration_ms(name).map_err(WindowError::Duration)?;
        Ok(WindowSpec { name: name.trim().to_string(), ..Self::new(size_ms)? })
    }

    pub fn pane_of(&self, time_ms: i64) -> i64 {
        time_ms.div_euclid(self.step_ms)
    }
}

/// Counts kept per pane and summed per window. Indices follow the metric label order:
/// nps = [promoter, passive, detractor], csat = [satisfied, unsatisfied], ces = [easy, not_easy],
/// actions = `Action::index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub nps: [u32; 3],
    pub csat: [u32; 2],
    pub ces: [u32; 2],
    pub ces_score_sum: u32,
    pub actions: [u32; 5],
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.combine(other, u32::wrapping_add);
    }

    pub fn sub(&mut self, other: &Counts) {
        self.combine(other, u32::wrapping_sub);
    }

    // Field by field with a generic `op`: this runs for every ring an event touches, and once
    // inlined the fixed-size loops compile to a few vector instructions.
    #[inline(always)]
    fn combine(&mut self, other: &Counts, op: impl Fn(u32, u32) -> u32) {
        for (x, y) in self.nps.iter_mut().zip(other.nps) {
            *x = op(*x, y);
        }
        for (x, y) in self.csat.iter_mut().zip(other.csat) {
            *x = op(*x, y);
        }
        for (x, y) in self.ces.iter_mut().zip(other.ces) {
            *x = op(*x, y);
        }
        self.ces_score_sum = op(self.ces_score_sum, other.ces_score_sum);
        for (x, y) in self.actions.iter_mut().zip(other.actions) {
            *x = op(*x, y);
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }

    pub fn nps_total(&self) -> u32 {
        self.nps.iter().sum()
    }
}

/// The active-customer part of a pane or an anchor: `base` is the latest `customer_base` value
/// (with its event time, to pick the latest of several), `net` the lifecycle moves.
/// Applying a pane to a running count: a base resets it, then the pane's moves apply — at pane
/// resolution, moves in the same pane as a base count as after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Active {
    pub base: Option<Base>,
    pub net: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Base {
    pub time_ms: i64,
    pub value: i64,
}

impl Active {
    fn set_base(&mut self, base: Base) {
        if self.base.is_none_or(|old| base.time_ms >= old.time_ms) {
            self.base = Some(base);
        }
    }
}

/// A running active-customer count at a pane boundary: `value` is meaningful as an absolute count
/// only once a base has been folded in (`base_pane` is `Some`); before that it is the net of moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    pub value: i64,
    /// The pane and the base folded into `value`, if any.
    pub base: Option<(i64, Base)>,
}

impl Anchor {
    /// Folds pane `pane` (later than everything folded so far) into the count.
    pub fn fold(&mut self, pane: i64, active: &Active) {
        match active.base {
            Some(base) => {
                self.value = base.value.saturating_add(active.net);
                self.base = Some((pane, base));
            }
            None => self.value = self.value.saturating_add(active.net),
        }
    }

    /// Applies a lifecycle move that belongs to an already folded pane.
    fn late_move(&mut self, pane: i64, delta: i64) {
        if self.base.is_none_or(|(base_pane, _)| pane >= base_pane) {
            self.value = self.value.saturating_add(delta);
        }
    }

    /// Applies a `customer_base` that belongs to an already folded pane. Exact when it lands in the
    /// pane of the folded base; when it is newer, the moves between it and the window start were
    /// folded without their pane, so the count restarts from the base (a step-resolution
    /// approximation documented in the README).
    fn late_base(&mut self, pane: i64, base: Base) {
        match self.base {
            Some((base_pane, old)) if pane == base_pane => {
                if base.time_ms >= old.time_ms {
                    self.value = self.value.saturating_sub(old.value).saturating_add(base.value);
                    self.base = Some((pane, base));
                }
            }
            Some((base_pane, _)) if pane < base_pane => {}
            _ => {
                self.value = base.value;
                self.base = Some((pane, base));
            }
        }
    }

    pub fn known(&self) -> Option<i64> {
        self.base.map(|_| self.value)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Pane {
    counts: Counts,
    active: Active,
}

/// A ring as it is checkpointed: only the panes that hold something, by absolute index.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RingState {
    pub head: i64,
    pub anchor: Anchor,
    pub panes: Vec<(i64, Counts, Active)>,
}

impl RingState {
    /// Applies a newer delta of the same ring ([`Ring::take_changes`]): its head and anchor
    /// replace these, panes that left the window (folded into that anchor) go, and its panes
    /// replace these (a zero pane is removed).
    pub fn merge(&mut self, delta: &RingState) {
        self.head = self.head.max(delta.head);
        self.anchor = delta.anchor;
        let start = self.head.saturating_sub(PANES_PER_WINDOW - 1);
        self.panes.retain(|(pane, _, _)| *pane >= start);
        for &(pane, counts, active) in &delta.panes {
            let zero = counts == Counts::default() && active == Active::default();
            match self.panes.binary_search_by_key(&pane, |(p, _, _)| *p) {
                Ok(i) if zero => {
                    self.panes.remove(i);
                }
                Ok(i) => self.panes[i] = (pane, counts, active),
                Err(_) if zero => {}
                Err(i) => self.panes.insert(i, (pane, counts, active)),
            }
        }
    }
}

/// One counter of `Counts`, by family and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Nps(usize),
    Csat(usize),
    Ces(usize),
    Action(usize),
}

impl Counts {
    /// Adds one to `counter` and `ces_score` to the CES sum: the whole of one event's counts,
    /// without touching the other counters (the hot path).
    fn bump(&mut self, counter: Counter, ces_score: u32) {
        let cell = match counter {
            Counter::Nps(i) => self.nps.get_mut(i),
            Counter::Csat(i) => self.csat.get_mut(i),
            Counter::Ces(i) => self.ces.get_mut(i),
            Counter::Action(i) => self.actions.get_mut(i),
        };
        if let Some(cell) = cell {
            *cell = cell.wrapping_add(1);
        }
        self.ces_score_sum = self.ces_score_sum.wrapping_add(ces_score);
    }

    pub fn of(counter: Counter, ces_score: u32) -> Counts {
        let mut counts = Counts::default();
        counts.bump(counter, ces_score);
        counts
    }
}

/// What one event contributes to a pane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contribution {
    /// Any counts (taking a corrected answer out).
    Counts(Counts),
    /// One new event: a counter, the CES score, and its move of the active-customer count.
    One {
        counter: Counter,
        ces_score: u32,
        active_delta: i64,
    },
    Base(Base),
}

/// One window of one series: the panes, their running sum and the active-customer anchor.
#[derive(Clone, Debug)]
pub struct Ring {
    panes: Box<[Pane]>,
    /// Pane index of the clock: the newest in-window pane.
    head: i64,
    sum: Counts,
    anchor: Anchor,
    /// Whether any active-customer information ever reached the ring: reads skip the pane walks
    /// for the (common) series that carry none.
    has_active: bool,
    /// `slot(head)`, kept so that slots of panes near the head need no division.
    head_slot: i64,
    /// The absolute panes changed since [`Ring::take_changes`] last ran (a change of the anchor
    /// alone marks the head pane), for incremental checkpoints.
    changed: Option<(i64, i64)>,
}

impl Ring {
    /// `future_panes` slots hold events ahead of the clock (wall clock with skew).
    pub fn new(head: i64, future_panes: usize) -> Self {
        let len = PANES_PER_WINDOW + future_panes as i64;
        Ring {
            panes: vec![Pane::default(); len as usize].into_boxed_slice(),
            head,
            sum: Counts::default(),
            anchor: Anchor::default(),
            has_active: false,
            head_slot: head.rem_euclid(len),
            changed: None,
        }
    }

    fn len(&self) -> i64 {
        self.panes.len() as i64
    }

    /// Heap and inline bytes of the ring.
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Ring>() + self.panes.len() * std::mem::size_of::<Pane>()
    }

    /// The slot of `pane`. Every caller asks for panes less than two ring lengths from the head,
    /// so a correction or two replaces the division on this per-event path.
    fn slot(&self, pane: i64) -> usize {
        let len = self.len();
        let mut slot = self.head_slot + (pane - self.head);
        while slot < 0 {
            slot += len;
        }
        while slot >= len {
            slot -= len;
        }
        slot as usize
    }

    /// First pane inside the window.
    pub fn start(&self) -> i64 {
        self.head - PANES_PER_WINDOW + 1
    }

    pub fn head(&self) -> i64 {
        self.head
    }

    /// Moves the clock forward to `head`: future panes enter the window, old panes leave it and
    /// are folded into the anchor. Never moves backwards.
    pub fn advance(&mut self, head: i64) {
        if head <= self.head {
            return;
        }
        // After `len` steps every slot has been folded and cleared, so later steps are no-ops.
        let last = head.min(self.head + self.len());
        for entering in self.head + 1..=last {
            let leaving = entering - PANES_PER_WINDOW;
            let entering_slot = self.slot(entering);
            let leaving_slot = self.slot(leaving);
            let pane = self.panes[leaving_slot];
            self.sum.sub(&pane.counts);
            self.anchor.fold(leaving, &pane.active);
            // The leaving slot is next reused for pane `leaving + len`, beyond the future range.
            self.panes[leaving_slot] = Pane::default();
            let counts = self.panes[entering_slot].counts;
            self.sum.add(&counts);
        }
        self.head_slot = head.rem_euclid(self.len());
        self.head = head;
    }

    /// Adds (or with `remove`, takes out) an event's contribution at `pane`. Panes beyond the
    /// future slots are ignored: the caller rejects those events before. Panes before the window
    /// only move the active-customer anchor.
    pub fn apply(&mut self, pane: i64, contribution: &Contribution, remove: bool) {
        if pane > self.head + self.len() - PANES_PER_WINDOW {
            return;
        }
        let marked = pane.max(self.start());
        self.changed = Some(match self.changed {
            Some((lo, hi)) => (lo.min(marked), hi.max(marked)),
            None => (marked, marked),
        });
        self.has_active |= match contribution {
            Contribution::Counts(_) => false,
            Contribution::One { active_delta, .. } => *active_delta != 0,
            Contribution::Base(_) => true,
        };
        if pane < self.start() {
            match *contribution {
                Contribution::Counts(_) => {}
                Contribution::One { active_delta, .. } => {
                    if active_delta != 0 {
                        self.anchor
                            .late_move(pane, if remove { -active_delta } else { active_delta })
                    }
                }
                Contribution::Base(base) => {
                    if !remove {
                        self.anchor.late_base(pane, base)
                    }
                }
            }
            return;
        }
        let in_window = pane <= self.head;
        let slot = self.slot(pane);
        let target = &mut self.panes[slot];
        match *contribution {
            Contribution::Counts(counts) => {
                if remove {
                    target.counts.sub(&counts);
                    if in_window {
                        self.sum.sub(&counts);
                    }
                } else {
                    target.counts.add(&counts);
                    if in_window {
                        self.sum.add(&counts);
                    }
                }
            }
            Contribution::One { counter, ces_score, active_delta } => {
                debug_assert!(!remove, "events are taken out as Counts");
                target.counts.bump(counter, ces_score);
                target.active.net += active_delta;
                if in_window {
                    self.sum.bump(counter, ces_score);
                }
            }
            Contribution::Base(base) => {
                if !remove {
                    target.active.set_base(base);
                }
            }
        }
    }

    /// The ring's state for a checkpoint.
    pub fn export(&self) -> RingState {
        let panes = (self.start()..=self.head + self.len() - PANES_PER_WINDOW)
            .map(|pane| (pane, self.panes[self.slot(pane)]))
            .filter(|(_, p)| *p != Pane::default())
            .map(|(pane, p)| (pane, p.counts, p.active))
            .collect();
        RingState { head: self.head, anchor: self.anchor, panes }
    }

    /// What changed since the last call, as a delta for [`RingState::merge`]: the head, the
    /// anchor and every changed pane still in range, zero or not. `None` when nothing changed.
    pub fn take_changes(&mut self) -> Option<RingState> {
        let (lo, hi) = self.changed.take()?;
        let last = self.head + self.len() - PANES_PER_WINDOW;
        let panes = (lo.max(self.start())..=hi.min(last))
            .map(|pane| {
                let p = self.panes[self.slot(pane)];
                (pane, p.counts, p.active)
            })
            .collect();
        Some(RingState { head: self.head, anchor: self.anchor, panes })
    }

    /// Forgets what changed: the next checkpoint writes the whole ring anyway.
    pub fn clear_changes(&mut self) {
        self.changed = None;
    }

    /// Rebuilds a ring from a checkpoint; panes outside its range are ignored.
    pub fn import(state: &RingState, future_panes: usize) -> Ring {
        let mut ring = Ring::new(state.head, future_panes);
        ring.anchor = state.anchor;
        ring.has_active = state.anchor != Anchor::default()
            || state.panes.iter().any(|(_, _, a)| *a != Active::default());
        let last = ring.head + ring.len() - PANES_PER_WINDOW;
        for (pane, counts, active) in &state.panes {
            if *pane < ring.start() || *pane > last {
                continue;
            }
            let slot = ring.slot(*pane);
            ring.panes[slot] = Pane { counts: *counts, active: *active };
            if *pane <= ring.head {
                ring.sum.add(counts);
            }
        }
        ring
    }

    /// The in-window panes' counts, oldest first: one entry per step of the window.
    pub fn steps(&self) -> impl Iterator<Item = &Counts> + '_ {
        (self.start()..=self.head).map(|pane| &self.panes[self.slot(pane)].counts)
    }

    /// The window's counts at the clock.
    pub fn sum(&self) -> &Counts {
        &self.sum
    }

    /// Active customers at the window's start. Known once a `customer_base` was folded in before
    /// the start; failing that, the first base inside the window is walked back over the moves
    /// between the start and its pane (a base sets the count at its instant, and moves before it
    /// lead up to it).
    pub fn active_at_start(&self) -> Anchor {
        if self.anchor.known().is_some() || !self.has_active {
            return self.anchor;
        }
        let mut moves_before = 0i64;
        for pane in self.start()..=self.head {
            let active = &self.panes[self.slot(pane)].active;
            if let Some(base) = active.base {
                return Anchor {
                    value: base.value.saturating_sub(moves_before),
                    base: Some((pane, base)),
                };
            }
            moves_before = moves_before.saturating_add(active.net);
        }
        self.anchor
    }

    /// Active customers at the clock: the anchor with every in-window pane folded in.
    pub fn active_now(&self) -> Anchor {
        let mut anchor = self.anchor;
        if !self.has_active {
            return anchor;
        }
        for pane in self.start()..=self.head {
            anchor.fold(pane, &self.panes[self.slot(pane)].active);
        }
        anchor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lifecycle event that only moves the active count (a renewal-like counter, for the test).
    fn lifecycle_move(delta: i64) -> Contribution {
        Contribution::One { counter: Counter::Action(1), ces_score: 0, active_delta: delta }
    }

    fn one_promoter() -> Contribution {
        Contribution::Counts(Counts { nps: [1, 0, 0], ..Counts::default() })
    }

    #[test]
    fn steps_are_a_sixtieth() {
        let w = WindowSpec::new(3_600_000).unwrap();
        assert_eq!((w.name.as_str(), w.step_ms), ("1h", 60_000));
        assert!(WindowSpec::new(59_000).is_err());
    }

    #[test]
    fn events_leave_after_sixty_panes() {
        let mut ring = Ring::new(100, 0);
        ring.apply(100, &one_promoter(), false);
        ring.apply(41, &one_promoter(), false);
        ring.apply(40, &one_promoter(), false); // before the window: not counted
        assert_eq!(ring.sum().nps[0], 2);
        ring.advance(101);
        assert_eq!(ring.sum().nps[0], 1);
        ring.advance(159);
        assert_eq!(ring.sum().nps[0], 1);
        ring.advance(160);
        assert_eq!(ring.sum().nps[0], 0);
    }

    #[test]
    fn future_panes_enter_when_the_clock_reaches_them() {
        let mut ring = Ring::new(10, 2);
        ring.apply(12, &one_promoter(), false);
        ring.apply(13, &one_promoter(), false); // beyond the future slots: ignored
        assert_eq!(ring.sum().nps[0], 0);
        ring.advance(12);
        assert_eq!(ring.sum().nps[0], 1);
    }

    #[test]
    fn long_jumps_clear_everything() {
        let mut ring = Ring::new(0, 1);
        ring.apply(0, &one_promoter(), false);
        ring.apply(1, &Contribution::Base(Base { time_ms: 1, value: 7 }), false);
        ring.advance(1_000_000);
        assert!(ring.sum().is_zero());
        assert_eq!(ring.active_at_start().known(), Some(7));
        assert_eq!(ring.active_now().known(), Some(7));
    }

    #[test]
    fn export_and_import_round_trip() {
        let mut ring = Ring::new(100, 2);
        ring.apply(100, &one_promoter(), false);
        ring.apply(102, &one_promoter(), false);
        ring.apply(70, &lifecycle_move(3), false);
        ring.apply(20, &Contribution::Base(Base { time_ms: 5, value: 9 }), false);
        let state = ring.export();
        assert_eq!(state.panes.len(), 3);
        let mut copy = Ring::import(&state, 2);
        assert_eq!(copy.sum(), ring.sum());
        assert_eq!(copy.active_now(), ring.active_now());
        copy.advance(102);
        ring.advance(102);
        assert_eq!(copy.sum(), ring.sum());
        assert_eq!(copy.export(), ring.export());
    }

    #[test]
    fn steps_list_the_window_oldest_first() {
        let mut ring = Ring::new(100, 1);
        ring.apply(41, &one_promoter(), false);
        ring.apply(100, &one_promoter(), false);
        ring.apply(100, &one_promoter(), false);
        ring.apply(101, &one_promoter(), false); // a future pane: not a step yet
        let promoters: Vec<u32> = ring.steps().map(|c| c.nps[0]).collect();
        assert_eq!(promoters.len(), PANES_PER_WINDOW as usize);
        assert_eq!((promoters[0], promoters[59]), (1, 2));
        assert_eq!(promoters.iter().sum::<u32>(), ring.sum().nps[0]);
        ring.advance(101);
        let promoters: Vec<u32> = ring.steps().map(|c| c.nps[0]).collect();
        assert_eq!((promoters[0], promoters[58], promoters[59]), (0, 2, 1));
    }

    #[test]
    fn removal_undoes_addition() {
        let mut ring = Ring::new(5, 0);
        ring.apply(5, &one_promoter(), false);
        ring.apply(5, &one_promoter(), true);
        assert!(ring.sum().is_zero());
    }

    #[test]
    fn active_customers_fold_base_and_moves() {
        let mut ring = Ring::new(100, 0);
        // Window start is pane 41: these land before it, in the anchor.
        ring.apply(30, &Contribution::Base(Base { time_ms: 0, value: 10 }), false);
        assert_eq!(ring.active_at_start().known(), Some(10));
        ring.apply(25, &lifecycle_move(1), false); // older than the base's pane: overridden
        assert_eq!(ring.active_at_start().known(), Some(10));
        ring.apply(35, &lifecycle_move(1), false);
        ring.apply(30, &lifecycle_move(1), false); // same pane as the base: counts after it
        assert_eq!(ring.active_at_start().known(), Some(12));
        ring.apply(60, &lifecycle_move(-1), false); // in the window: not at its start
        assert_eq!(ring.active_at_start().known(), Some(12));
        assert_eq!(ring.active_now().known(), Some(11));
        ring.apply(90, &lifecycle_move(1), false);
        ring.apply(95, &Contribution::Base(Base { time_ms: 0, value: 40 }), false);
        ring.apply(96, &lifecycle_move(-1), false);
        assert_eq!(ring.active_now().known(), Some(39));
        ring.advance(200);
        assert_eq!(ring.active_at_start().known(), Some(39));
        assert_eq!(ring.active_now().known(), Some(39));
    }

    #[test]
    fn a_base_inside_the_window_is_walked_back_to_its_start() {
        let mut ring = Ring::new(100, 0);
        ring.apply(45, &lifecycle_move(1), false);
        ring.apply(50, &lifecycle_move(2), false);
        ring.apply(60, &Contribution::Base(Base { time_ms: 0, value: 100 }), false);
        ring.apply(60, &lifecycle_move(-1), false);
        ring.apply(70, &Contribution::Base(Base { time_ms: 0, value: 500 }), false);
        assert_eq!(ring.active_at_start().known(), Some(97));
        assert_eq!(ring.active_now().known(), Some(500));
        assert_eq!(Ring::new(100, 0).active_at_start().known(), None);
    }
}
