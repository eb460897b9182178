//! The memory budget (`state_memory`): when state passes it, the oldest dedup and answer buckets
//! of any partition are forgotten early (the window counts never are), and the horizons actually
//! kept are reported instead of a worker dying of memory.

use crate::buckets::span_of;

use super::Engine;

/// Kinds the budget can shrink, as indices of `snapshot::STATE_KINDS`.
const DEDUP: usize = 0;
const ANSWERS: usize = 1;

/// What the budget has forgotten, per kind.
#[derive(Clone, Debug, Default)]
pub(crate) struct Evictions {
    entries: [u64; 4],
    /// The end (on T) of the newest bucket forgotten early: nothing stored before it is known.
    through_ms: [Option<i64>; 4],
}

impl Evictions {
    pub fn entries(&self, kind: usize) -> u64 {
        self.entries[kind]
    }

    /// The horizon kept for `kind` at clock `now`: the configured one, unless the budget forgot
    /// more recent buckets.
    pub fn horizon_kept(&self, kind: usize, configured_ms: i64, now: Option<i64>) -> i64 {
        match (self.through_ms[kind], now) {
            (Some(through), Some(now)) => configured_ms.min((now - through).max(0)),
            _ => configured_ms,
        }
    }
}

impl Engine {
    pub(super) fn enforce_budget_if_grown(&mut self) {
        if std::mem::take(&mut self.grew) {
            self.enforce_budget();
        }
    }

    /// Forgets the oldest buckets, one at a time, until the state fits the budget; a partition's
    /// newest bucket of each kind stays (the ids of the last moments guard against retries).
    pub(super) fn enforce_budget(&mut self) {
        self.grew = false;
        let Some(budget) = self.config.state_memory_bytes else { return };
        let stats = self.state_stats();
        let mut total: u64 = stats.bytes.iter().sum();
        let spans =
            [span_of(self.config.dedup_horizon_ms), span_of(self.config.correction_horizon_ms)];
        while total > budget {
            // The bucket that ends first, over partitions and both kinds.
            let oldest = self
                .partitions
                .iter()
                .flat_map(|(partition, state)| {
                    let dedup = (state.dedup.buckets().len() > 1)
                        .then(|| state.dedup.oldest())
                        .flatten()
                        .map(|b| (b.saturating_add(1).saturating_mul(spans[0]), DEDUP, *partition));
                    let answers = (state.answers.buckets().len() > 1)
                        .then(|| state.answers.oldest())
                        .flatten()
                        .map(|b| {
                            (b.saturating_add(1).saturating_mul(spans[1]), ANSWERS, *partition)
                        });
                    dedup.into_iter().chain(answers)
                })
                .min();
            let Some((end_ms, kind, partition)) = oldest else { break };
            let Some(state) = self.partitions.get_mut(&partition) else { break };
            let before = if kind == DEDUP { state.dedup.bytes() } else { state.answers.bytes() };
            let evicted = if kind == DEDUP {
                state.dedup.evict_oldest()
            } else {
                state.answers.evict_oldest()
            };
            let after = if kind == DEDUP { state.dedup.bytes() } else { state.answers.bytes() };
            let Some((_, entries)) = evicted else { break };
            self.evictions.entries[kind] += entries as u64;
            self.evictions.through_ms[kind] =
                Some(self.evictions.through_ms[kind].map_or(end_ms, |t| t.max(end_ms)));
            total = total.saturating_sub((before - after) as u64);
        }
    }
}
