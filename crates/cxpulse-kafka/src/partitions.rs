//! The partition bookkeeping, in one place: for each assigned partition, whether it still awaits
//! its restore, how far it was read, what offset is stored for commit, what the last checkpoint
//! reflects, and where its replay ends. `Partitions` is the one owner (behind one mutex in the
//! consumer context); its decisions are the pure functions at the top, tested below. Partitions
//! are [`SourcePartition`]s here as in the engine; [`Topics`] names them for librdkafka.

use std::collections::{BTreeMap, BTreeSet};

pub use cxpulse_core::SourcePartition;

/// The subscribed topics, numbered in the order `[source] topics` lists them: a partition is a
/// [`SourcePartition`] everywhere inside the worker (the engine's identity too), and a topic's
/// name is looked up only at librdkafka's edge.
#[derive(Clone, Debug, Default)]
pub struct Topics {
    names: Vec<String>,
}

impl Topics {
    pub fn new(names: &[String]) -> Topics {
        Topics { names: names.to_vec() }
    }

    /// The partition `partition` of topic `topic`. A topic not subscribed gets the number after
    /// the last, which no assigned partition has (librdkafka only hands out subscribed ones).
    pub fn source(&self, topic: &str, partition: i32) -> SourcePartition {
        let index = self.names.iter().position(|name| name == topic).unwrap_or(self.names.len());
        SourcePartition { topic: index as u32, partition }
    }

    /// The topic's name, as librdkafka takes it.
    pub fn name(&self, source: SourcePartition) -> &str {
        self.names.get(source.topic as usize).map_or("", String::as_str)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// The offset that is safe to store for a partition read up to `read_next` (the offset after the
/// last message counted): never past its first dead letter still pending.
pub fn safe_offset(read_next: i64, first_pending_letter: Option<i64>) -> i64 {
    first_pending_letter.map_or(read_next, |floor| floor.min(read_next))
}

/// Where a partition's replay ends, when it starts at `start` and the group's committed offset
/// is `committed`: messages below the end were handled (counted, dead-lettered) by an earlier
/// owner and go back into the windows only. `None` when there is nothing to replay.
pub fn replay_end(start: i64, committed: Option<i64>) -> Option<i64> {
    committed.filter(|until| *until > start)
}

/// A replay is over once reading reached its end.
pub fn replay_over(read_next: i64, until: i64) -> bool {
    read_next >= until
}

/// Where a newly assigned partition starts: its checkpoint's offset when one was restored, else
/// the first offset within the longest window when the broker could tell it, else the beginning
/// (`None`).
pub fn start_offset(restored_at: Option<i64>, within_window: Option<i64>) -> Option<i64> {
    restored_at.or(within_window)
}

/// The offset to checkpoint a partition at, if it needs one: only where everything read is also
/// stored (no dead letter pending, so the windows hold nothing past the stored offset) and the
/// last checkpoint is older.
pub fn checkpoint_due(book: &PartitionBook) -> Option<i64> {
    let stored = book.stored?;
    (book.read_next == Some(stored) && book.checkpointed != Some(stored)).then_some(stored)
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionBook {
    /// Assigned and paused; the consume loop restores it between polls.
    pub awaiting_restore: bool,
    /// The offset after the last message counted.
    pub read_next: Option<i64>,
    /// The offset stored for commit (`safe_offset`).
    pub stored: Option<i64>,
    /// The offset the last acknowledged checkpoint reflects.
    pub checkpointed: Option<i64>,
    /// Replaying up to this offset (`replay_end`).
    pub replay_until: Option<i64>,
}

/// Every assigned partition's book. Lock order where it is shared: the state store, then this,
/// then the engine; never the other way round.
#[derive(Debug, Default)]
pub struct Partitions {
    books: BTreeMap<SourcePartition, PartitionBook>,
}

impl Partitions {
    /// New partitions, awaiting their restore.
    pub fn assign(&mut self, added: impl IntoIterator<Item = SourcePartition>) {
        for key in added {
            self.books.insert(key, PartitionBook { awaiting_restore: true, ..Default::default() });
        }
    }

    /// What a revoke drops: the revoked partitions' books, all of them.
    pub fn revoke(&mut self, revoked: &BTreeSet<SourcePartition>) {
        self.books.retain(|key, _| !revoked.contains(key));
    }

    pub fn assigned(&self) -> usize {
        self.books.len()
    }

    pub fn is_assigned(&self, key: &SourcePartition) -> bool {
        self.books.contains_key(key)
    }

    /// Messages of this partition may be counted: assigned and restored.
    pub fn accepts(&self, key: &SourcePartition) -> bool {
        self.books.get(key).is_some_and(|b| !b.awaiting_restore)
    }

    /// Partitions awaiting their restore or replaying up to where their previous owner stopped.
    pub fn restoring(&self) -> usize {
        self.books.values().filter(|b| b.awaiting_restore || b.replay_until.is_some()).count()
    }

    /// Assigned and restored: the partitions whose messages are being counted.
    pub fn processing(&self) -> Vec<SourcePartition> {
        self.books.iter().filter(|(_, b)| !b.awaiting_restore).map(|(k, _)| *k).collect()
    }

    pub fn awaiting_restore(&self) -> Vec<SourcePartition> {
        self.books.iter().filter(|(_, b)| b.awaiting_restore).map(|(k, _)| *k).collect()
    }

    /// The partition's state was restored (or cleared for a rebuild); reading starts afresh.
    pub fn restored(&mut self, key: &SourcePartition, replay_until: Option<i64>) {
        if let Some(book) = self.books.get_mut(key) {
            *book = PartitionBook { replay_until, ..Default::default() };
        }
    }

    /// The replaying partitions with the end of their replay.
    pub fn replaying(&self) -> impl Iterator<Item = (&SourcePartition, i64)> {
        self.books.iter().filter_map(|(k, b)| b.replay_until.map(|until| (k, until)))
    }

    /// Reading reached `read_next`; true when that ended the partition's replay.
    pub fn read(&mut self, key: &SourcePartition, read_next: i64) -> bool {
        let Some(book) = self.books.get_mut(key) else { return false };
        book.read_next = Some(read_next);
        match book.replay_until {
            Some(until) if replay_over(read_next, until) => {
                book.replay_until = None;
                true
            }
            _ => false,
        }
    }

    /// The offsets to store now, given each partition's first pending dead letter; records them.
    pub fn offsets_to_store(
        &mut self,
        first_pending: &BTreeMap<SourcePartition, i64>,
    ) -> Vec<(SourcePartition, i64)> {
        let mut moved = Vec::new();
        for (key, book) in &mut self.books {
            let Some(read_next) = book.read_next else { continue };
            let safe = safe_offset(read_next, first_pending.get(key).copied());
            if book.stored != Some(safe) {
                book.stored = Some(safe);
                moved.push((*key, safe));
            }
        }
        moved
    }

    /// Partitions read but not fully stored: a dead letter of theirs is pending.
    pub fn held_back(&self) -> BTreeSet<SourcePartition> {
        self.books.iter().filter(|(_, b)| b.read_next != b.stored).map(|(k, _)| *k).collect()
    }

    /// The stored offsets of `only` (all when `None`), to commit.
    pub fn to_commit(
        &self,
        only: Option<&BTreeSet<SourcePartition>>,
    ) -> Vec<(SourcePartition, i64)> {
        self.books
            .iter()
            .filter(|(k, _)| only.is_none_or(|set| set.contains(*k)))
            .filter_map(|(k, b)| b.stored.map(|offset| (*k, offset)))
            .collect()
    }

    /// The partitions of `only` (all when `None`) due a checkpoint, with its offset.
    pub fn to_checkpoint(
        &self,
        only: Option<&BTreeSet<SourcePartition>>,
    ) -> Vec<(SourcePartition, i64)> {
        self.books
            .iter()
            .filter(|(k, _)| only.is_none_or(|set| set.contains(*k)))
            .filter_map(|(k, b)| checkpoint_due(b).map(|offset| (*k, offset)))
            .collect()
    }

    /// Checkpoints acknowledged.
    pub fn checkpointed(&mut self, written: &[(SourcePartition, i64)]) {
        for (key, offset) in written {
            if let Some(book) = self.books.get_mut(key) {
                book.checkpointed = Some(*offset);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> SourcePartition {
        SourcePartition { topic: 0, partition: p }
    }

    #[test]
    fn topics_are_numbered_as_listed_and_unknown_ones_have_no_name() {
        let topics = Topics::new(&["a".to_string(), "b".to_string()]);
        let b3 = topics.source("b", 3);
        assert_eq!(b3, SourcePartition { topic: 1, partition: 3 });
        assert_eq!(topics.name(b3), "b");
        assert_eq!(topics.name(topics.source("c", 0)), "");
    }

    #[test]
    fn offsets_stop_at_the_first_pending_dead_letter() {
        assert_eq!(safe_offset(100, None), 100);
        assert_eq!(safe_offset(100, Some(40)), 40);
        assert_eq!(safe_offset(100, Some(150)), 100, "a letter ahead never moves it forward");
    }

    #[test]
    fn a_partition_starts_at_its_checkpoint_else_within_the_window_else_the_beginning() {
        assert_eq!(start_offset(Some(500), Some(20)), Some(500));
        assert_eq!(start_offset(None, Some(20)), Some(20));
        assert_eq!(start_offset(None, None), None);
    }

    #[test]
    fn a_replay_runs_up_to_the_committed_offset_and_ends_there() {
        assert_eq!(replay_end(10, Some(50)), Some(50));
        assert_eq!(replay_end(50, Some(50)), None, "nothing between start and commit");
        assert_eq!(replay_end(10, None), None, "no commit: nothing was handled before");
        let mut partitions = Partitions::default();
        partitions.assign([tp(0)]);
        partitions.restored(&tp(0), replay_end(10, Some(50)));
        assert_eq!(partitions.restoring(), 1);
        assert!(!partitions.read(&tp(0), 49));
        assert!(partitions.read(&tp(0), 50));
        assert_eq!(partitions.restoring(), 0);
    }

    #[test]
    fn new_partitions_await_their_restore_and_count_nothing_meanwhile() {
        let mut partitions = Partitions::default();
        partitions.assign([tp(0), tp(1)]);
        assert!(!partitions.accepts(&tp(0)));
        assert_eq!(partitions.awaiting_restore(), vec![tp(0), tp(1)]);
        assert_eq!(partitions.restoring(), 2);
        partitions.restored(&tp(0), None);
        assert!(partitions.accepts(&tp(0)));
        assert_eq!(partitions.awaiting_restore(), vec![tp(1)]);
    }

    #[test]
    fn stored_offsets_follow_reading_up_to_pending_letters_and_checkpoints_wait_for_them() {
        let mut partitions = Partitions::default();
        partitions.assign([tp(0), tp(1)]);
        partitions.restored(&tp(0), None);
        partitions.restored(&tp(1), None);
        partitions.read(&tp(0), 100);
        partitions.read(&tp(1), 80);
        let pending = BTreeMap::from([(tp(1), 30)]);
        assert_eq!(partitions.offsets_to_store(&pending), vec![(tp(0), 100), (tp(1), 30)]);
        assert!(partitions.offsets_to_store(&pending).is_empty(), "nothing moved");
        assert_eq!(partitions.held_back(), BTreeSet::from([tp(1)]));
        assert_eq!(partitions.to_checkpoint(None), vec![(tp(0), 100)], "not the held-back one");
        partitions.checkpointed(&[(tp(0), 100)]);
        assert!(partitions.to_checkpoint(None).is_empty(), "unchanged since");
        // The letter is acknowledged: the offset catches up and a checkpoint is due again.
        assert_eq!(partitions.offsets_to_store(&BTreeMap::new()), vec![(tp(1), 80)]);
        assert_eq!(partitions.to_checkpoint(None), vec![(tp(1), 80)]);
        assert_eq!(partitions.to_commit(None), vec![(tp(0), 100), (tp(1), 80)]);
    }

    #[test]
    fn a_revoke_drops_everything_about_the_revoked_partitions_only() {
        let mut partitions = Partitions::default();
        partitions.assign([tp(0), tp(1)]);
        partitions.restored(&tp(1), Some(10));
        partitions.read(&tp(1), 5);
        partitions.revoke(&BTreeSet::from([tp(1)]));
        assert_eq!(partitions.assigned(), 1);
        assert!(!partitions.is_assigned(&tp(1)));
        assert_eq!(partitions.replaying().count(), 0);
        assert!(partitions.to_commit(None).is_empty());
        assert_eq!(partitions.restoring(), 1, "partition 0 still awaits its restore");
    }
}
