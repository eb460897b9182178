//! The window ring of the customer counts: like `window::Ring`, 60 in-window steps plus a few
//! future ones and a running sum, but over the nine customer counters, with contributions that
//! can be moved (a `-1` at one step and a `+1` at another).

use crate::window::PANES_PER_WINDOW;

/// Counters per step: purchasers, repeat purchasers, respondents by NPS category (3), churns by
/// NPS category or unknown (4).
pub(crate) const COUNTERS: usize = 9;

pub(crate) type Tally = [u32; COUNTERS];

/// A ring as checkpointed: its head and its steps by absolute index.
pub(crate) type RingImage = (i64, Vec<(i64, Tally)>);

#[derive(Clone, Debug)]
pub(crate) struct TallyRing {
    steps: Box<[Tally]>,
    /// Step index of the clock: the newest in-window step.
    head: i64,
    sum: Tally,
    /// The absolute steps changed since the last checkpoint took them.
    changed: Option<(i64, i64)>,
}

fn add(into: &mut Tally, from: &Tally) {
    for (x, y) in into.iter_mut().zip(from) {
        *x = x.wrapping_add(*y);
    }
}

fn sub(into: &mut Tally, from: &Tally) {
    for (x, y) in into.iter_mut().zip(from) {
        *x = x.wrapping_sub(*y);
    }
}

impl TallyRing {
    pub fn new(head: i64, future_steps: usize) -> Self {
        let len = PANES_PER_WINDOW as usize + future_steps;
        TallyRing {
            steps: vec![[0; COUNTERS]; len].into_boxed_slice(),
            head,
            sum: [0; COUNTERS],
            changed: None,
        }
    }

    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of_val(&*self.steps)
    }

    fn len(&self) -> i64 {
        self.steps.len() as i64
    }

    fn slot(&self, step: i64) -> usize {
        step.rem_euclid(self.len()) as usize
    }

    pub fn start(&self) -> i64 {
        self.head - PANES_PER_WINDOW + 1
    }

    /// The last step a contribution may land in: the last future one.
    pub fn last(&self) -> i64 {
        self.head + self.len() - PANES_PER_WINDOW
    }

    /// Moves the clock to `head` (never back): future steps enter the window, old ones leave it.
    pub fn advance(&mut self, head: i64) {
        if head <= self.head {
            return;
        }
        let last = head.min(self.head + self.len());
        for entering in self.head + 1..=last {
            let leaving = self.slot(entering - PANES_PER_WINDOW);
            let old = std::mem::replace(&mut self.steps[leaving], [0; COUNTERS]);
            sub(&mut self.sum, &old);
            let entering = self.steps[self.slot(entering)];
            add(&mut self.sum, &entering);
        }
        self.head = head;
    }

    /// Adds `delta` (+1 or -1) to `counter` at `step`. Steps before the window or past the
    /// future ones are ignored: the caller never puts a contribution past the future steps, and
    /// one before the window left the sums when its step did.
    pub fn apply(&mut self, step: i64, counter: usize, delta: i32) {
        if step < self.start() || step > self.last() || counter >= COUNTERS {
            return;
        }
        self.changed = Some(match self.changed {
            Some((lo, hi)) => (lo.min(step), hi.max(step)),
            None => (step, step),
        });
        let slot = self.slot(step);
        let cell = &mut self.steps[slot][counter];
        *cell = cell.wrapping_add_signed(delta);
        if step <= self.head {
            self.sum[counter] = self.sum[counter].wrapping_add_signed(delta);
        }
    }

    pub fn sum(&self) -> &Tally {
        &self.sum
    }

    /// The in-window steps, oldest first.
    pub fn steps(&self) -> impl Iterator<Item = &Tally> + '_ {
        (self.start()..=self.head).map(|step| &self.steps[self.slot(step)])
    }

    /// Every step that holds something.
    pub fn export(&mut self) -> RingImage {
        self.changed = None;
        let steps = (self.start()..=self.last())
            .map(|step| (step, self.steps[self.slot(step)]))
            .filter(|(_, tally)| *tally != [0; COUNTERS])
            .collect();
        (self.head, steps)
    }

    /// The steps changed since the last export or call, zero or not; `None` if none did.
    pub fn take_changes(&mut self) -> Option<RingImage> {
        let (lo, hi) = self.changed.take()?;
        let steps = (lo.max(self.start())..=hi.min(self.last()))
            .map(|step| (step, self.steps[self.slot(step)]))
            .collect();
        Some((self.head, steps))
    }

    /// Applies a checkpointed image (whole, or the changes of a later checkpoint): its head, and
    /// its steps replace these.
    pub fn merge(&mut self, (head, steps): &RingImage) {
        self.advance(*head);
        for (step, tally) in steps {
            if *step < self.start() || *step > self.last() {
                continue;
            }
            let slot = self.slot(*step);
            let old = std::mem::replace(&mut self.steps[slot], *tally);
            if *step <= self.head {
                sub(&mut self.sum, &old);
                add(&mut self.sum, tally);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_contribution_follows_its_step_out_of_the_window() {
        let mut ring = TallyRing::new(100, 1);
        ring.apply(41, 0, 1);
        ring.apply(101, 0, 1); // future: not in the sum yet
        assert_eq!(ring.sum()[0], 1);
        ring.apply(41, 0, -1);
        ring.apply(60, 0, 1);
        ring.apply(40, 0, 1); // before the window: ignored
        ring.apply(102, 0, 1); // past the future step: ignored
        assert_eq!(ring.sum()[0], 1);
        ring.advance(101);
        assert_eq!(ring.sum()[0], 2);
        ring.advance(120);
        assert_eq!(ring.sum()[0], 1);
        ring.advance(10_000);
        assert_eq!(ring.sum()[0], 0);
        assert_eq!(ring.steps().count(), PANES_PER_WINDOW as usize);
    }

    #[test]
    fn an_export_and_its_changes_rebuild_the_ring() {
        let mut ring = TallyRing::new(100, 2);
        ring.apply(50, 3, 1);
        ring.apply(102, 8, 1);
        let mut copy = TallyRing::new(0, 2);
        copy.merge(&ring.export());
        ring.apply(50, 3, -1);
        ring.apply(70, 3, 1);
        ring.advance(105);
        ring.apply(105, 1, 1);
        if let Some(changes) = ring.take_changes() {
            copy.merge(&changes);
        }
        assert_eq!(ring.take_changes(), None);
        copy.advance(105);
        assert_eq!(copy.sum(), ring.sum());
        assert!(copy.steps().eq(ring.steps()));
    }
}
