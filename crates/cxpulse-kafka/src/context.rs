//! The consumer's callbacks. On assignment: acknowledge at once with the new partitions paused;
//! the consume loop then restores them together (`restore_awaiting`: each from its checkpoint, or
//! rebuilt by replay), seeks each to where its state ends and resumes it. On revocation:
//! checkpoint and commit what was processed, then drop the partition's contribution. Statistics
//! feed the lag gauges and broker reachability. The context stays thin: the partition
//! bookkeeping and its decisions live in `partitions`; three locks, always taken in the order
//! state store, partitions, engine.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cxpulse_core::health::Health;
use cxpulse_core::{ClockMode, RestoreError, SharedEngine, SourcePartition};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::client_log::ClientLog;
use crate::fetch_queue::FetchQueue;
use crate::metrics::PipelineMetrics;
use crate::partitions::{replay_end, start_offset, Partitions, Topics};
use crate::state_store::StateStore;
use crate::util::{lock, wall_ms};

pub(crate) struct WorkerContext {
    pub engine: SharedEngine,
    pub health: Arc<Health>,
    pub metrics: PipelineMetrics,
    pub client_log: ClientLog,
    pub topics: Topics,
    pub group: String,
    /// The partition bookkeeping, one owner for all of it. Lock order: `store`, then
    /// `partitions`, then `engine`.
    pub partitions: Mutex<Partitions>,
    /// Bumped on every revoke, so the loop re-checks a batch's partitions only when one happened.
    pub revocations: AtomicU64,
    pub store: Mutex<Option<StateStore>>,
    /// Set once the worker stops: an assignment that still arrives is acknowledged at once,
    /// without restoring state. Restoring asks the group coordinator for committed offsets, which
    /// a closing consumer cannot answer (a 10 s timeout), and librdkafka aborts the process when
    /// an assign call lands after its group handle decided to terminate.
    pub closing: AtomicBool,
    /// The worker's stop request: an assignment that arrives (or is restoring) when it is set is
    /// acknowledged without restoring the rest.
    pub stop: Arc<AtomicBool>,
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl WorkerContext {
    fn state_key(&self, source: SourcePartition) -> String {
        format!("{}/{}/{}", self.group, self.topics.name(source), source.partition)
    }

    /// The partitions of a list librdkafka handed over.
    fn partitions_of(&self, tpl: &TopicPartitionList) -> BTreeSet<SourcePartition> {
        tpl.elements().iter().map(|e| self.topics.source(e.topic(), e.partition())).collect()
    }

    /// The real offsets of a list; logical ones (-1 "end", unset) are left out.
    fn known_offsets(&self, tpl: &TopicPartitionList) -> HashMap<SourcePartition, i64> {
        tpl.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => {
                    Some((self.topics.source(e.topic(), e.partition()), o))
                }
                _ => None,
            })
            .collect()
    }

    fn stopping(&self) -> bool {
        self.closing.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed)
    }

    /// Commits every processed offset and waits until the group's committed offsets show it, or
    /// `deadline`. Used on shutdown, where a synchronous commit to an unreachable coordinator would
    /// wait out the session timeout.
    pub fn commit_before(&self, consumer: &BaseConsumer<WorkerContext>, deadline: Instant) {
        let tpl = self.offsets_to_commit(None);
        if tpl.count() == 0 {
            return;
        }
        let wanted = self.known_offsets(&tpl);
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            warn!(error = %e, "commit of processed offsets failed; the next owner re-reads from the last commit");
            return;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!("commit not confirmed by the stop deadline; the next owner re-reads from the last commit");
                return;
            }
            let ask = left.min(Duration::from_millis(500));
            if let Ok(committed) = consumer.committed_offsets(tpl.clone(), ask) {
                let committed = self.known_offsets(&committed);
                if wanted.iter().all(|(key, offset)| committed.get(key) >= Some(offset)) {
                    info!(partitions = wanted.len(), "committed processed offsets");
                    return;
                }
            }
            let _ = consumer.poll(Duration::from_millis(20));
        }
    }

    fn offsets_to_commit(&self, only: Option<&BTreeSet<SourcePartition>>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (source, offset) in lock(&self.partitions).to_commit(only) {
            let (topic, partition) = (self.topics.name(source), source.partition);
            if let Err(e) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                warn!(%topic, partition, error = %e, "cannot add offset to commit");
            }
        }
        tpl
    }

    /// Synchronously commits the processed offsets of `partitions` (used on revoke).
    pub fn commit_processed(
        &self,
        consumer: &BaseConsumer<WorkerContext>,
        partitions: Option<&BTreeSet<SourcePartition>>,
    ) {
        let tpl = self.offsets_to_commit(partitions);
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => info!(partitions = tpl.count(), "committed processed offsets"),
            Err(e) => {
                warn!(error = %e, "commit of processed offsets failed; the next owner re-reads from the last commit")
            }
        }
    }

    /// Writes a checkpoint for every processed partition of `partitions` (all when `None`) that
    /// moved since its last one, waiting for acknowledgements until `deadline`. Partitions read
    /// past their safe offset (a dead letter pending) are left out: their windows hold messages
    /// the next owner reads again. A failed write is logged, and those partitions' next
    /// checkpoints write their whole state anew.
    pub fn checkpoint(&self, only: Option<&BTreeSet<SourcePartition>>, deadline: Instant) {
        let mut store = lock(&self.store);
        let Some(store) = store.as_mut() else { return };
        let due = lock(&self.partitions).to_checkpoint(only);
        if due.is_empty() {
            return;
        }
        let started = Instant::now();
        let batches: Vec<(String, cxpulse_core::CheckpointBatch)> = self.engine.with(|engine| {
            due.iter()
                .map(|(source, offset)| {
                    (self.state_key(*source), engine.checkpoint(*source, *offset))
                })
                .collect()
        });
        match store.save(&batches, deadline) {
            Ok(bytes) => {
                self.metrics.checkpoints.inc_by(due.len() as u64);
                self.metrics.checkpoint_bytes.inc_by(bytes);
                self.metrics.checkpoint_seconds.observe(started.elapsed().as_secs_f64());
                lock(&self.partitions).checkpointed(&due);
            }
            Err(e) => {
                warn!(error = %e, "checkpoints not written; the next ones write the whole state");
                self.engine.with(|engine| {
                    for ((source, _), (_, batch)) in due.iter().zip(batches) {
                        engine.checkpoint_failed(*source, batch);
                    }
                });
            }
        }
    }

    fn publish_assignment(&self, assigned: usize) {
        self.health.set_assigned(assigned);
        self.metrics.partitions_assigned.set(assigned as i64);
    }

    pub fn publish_restoring(&self) {
        let restoring = lock(&self.partitions).restoring();
        self.health.set_restoring(restoring);
        self.metrics.partitions_restoring.set(restoring as i64);
    }

    /// Restores every partition awaiting it, with one read of the state topic, then seeks each to
    /// where its state ends and resumes it. Runs on the consume loop, between polls.
    pub fn restore_awaiting(&self, consumer: &BaseConsumer<Self>, fetched: Option<&FetchQueue>) {
        if self.stopping() {
            return;
        }
        let awaiting = lock(&self.partitions).awaiting_restore();
        if awaiting.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut tpl = TopicPartitionList::new();
        for source in &awaiting {
            tpl.add_partition(self.topics.name(*source), source.partition);
        }
        let replays = self.prepare_assignment(consumer, &mut tpl);
        if self.stop.load(Ordering::Relaxed) {
            // Left paused and unprocessed: nothing of theirs is committed or checkpointed.
            return;
        }
        if let Err(e) = consumer.seek_partitions(tpl.clone(), IO_TIMEOUT) {
            // Still awaiting: restored again at the next round.
            warn!(error = %e, "cannot seek restored partitions; restoring them again");
            return;
        }
        {
            let mut partitions = lock(&self.partitions);
            for (key, replay_until) in replays {
                partitions.restored(&key, replay_until);
            }
        }
        // From here their messages are read in batches (`fetch_queue`).
        if let Some(fetched) = fetched {
            self.route(fetched, &awaiting);
        }
        if let Err(e) = consumer.resume(&tpl) {
            warn!(error = %e, "cannot resume restored partitions");
        }
        self.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        info!(
            partitions = awaiting.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "restored and resumed"
        );
        self.publish_restoring();
    }

    /// Routes every partition being counted to `fetched` again. librdkafka clears a partition's
    /// forward when its fetcher stops, asynchronously: a stop left over from an earlier
    /// assignment can land after the route, and the partition's messages would then wait in a
    /// queue nobody reads. Routing again is harmless (the same forward, and whatever waits moves
    /// along in order), so the consume loop does it every maintenance round.
    /// (One that cannot be routed was warned about at its restore and comes by poll.)
    pub fn route_processing(&self, fetched: &FetchQueue) {
        let processing = lock(&self.partitions).processing();
        for source in processing {
            fetched.route(self.topics.name(source), source.partition);
        }
    }

    fn route(&self, fetched: &FetchQueue, sources: &[SourcePartition]) {
        for source in sources {
            if !fetched.route(self.topics.name(*source), source.partition) {
                warn!(
                    partition = source.partition,
                    "cannot route a partition's messages; they come by poll"
                );
            }
        }
    }

    /// First offsets at or after `since_ms`; partitions the broker cannot answer for are left out.
    fn offsets_for_time(
        &self,
        consumer: &BaseConsumer<WorkerContext>,
        partitions: &[(SourcePartition, Option<i64>)],
        since_ms: i64,
    ) -> HashMap<SourcePartition, i64> {
        let mut query = TopicPartitionList::new();
        for (source, _) in partitions {
            let (topic, partition) = (self.topics.name(*source), source.partition);
            let _ = query.add_partition_offset(topic, partition, Offset::Offset(since_ms));
        }
        match consumer.offsets_for_times(query, IO_TIMEOUT) {
            Ok(answer) => self.known_offsets(&answer),
            Err(e) => {
                warn!(error = %e, "offsets by time unavailable; replaying from the beginning");
                HashMap::new()
            }
        }
    }

    /// Sets where each newly assigned partition starts and restores or clears its state.
    /// Returns each partition with the end of its replay.
    fn prepare_assignment(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> Vec<(SourcePartition, Option<i64>)> {
        let partitions = self.partitions_of(tpl);
        let asked = Instant::now();
        let committed = match consumer.committed_offsets(tpl.clone(), IO_TIMEOUT) {
            Ok(committed) => self.known_offsets(&committed),
            Err(e) => {
                warn!(error = %e, "cannot read committed offsets; replays start without a known end");
                HashMap::new()
            }
        };
        let committed_ms = asked.elapsed().as_millis() as u64;
        let (longest_ms, clock) = self.engine.with(|engine| {
            let config = engine.config();
            (config.windows.iter().map(|w| w.size_ms).max().unwrap_or(0), config.clock)
        });
        let keys: Vec<String> = partitions.iter().map(|source| self.state_key(*source)).collect();
        // The state topic is read once for the whole assignment.
        let read = Instant::now();
        let mut checkpoints = match lock(&self.store).as_mut() {
            Some(store) => store.load(&keys, &self.stop).unwrap_or_else(|e| {
                warn!(error = %e, "cannot read the state topic; partitions are rebuilt by replay");
                HashMap::new()
            }),
            None => HashMap::new(),
        };
        debug!(
            committed_ms,
            state_topic_ms = read.elapsed().as_millis() as u64,
            "restore inputs read"
        );
        let mut replay_from_time = Vec::new();
        let mut replays = Vec::new();
        for (&source, key) in partitions.iter().zip(&keys) {
            let (topic, partition) = (self.topics.name(source), &source.partition);
            let records = checkpoints.remove(key).unwrap_or_default();
            let restored = self.engine.with(|e| e.restore(source, &records, wall_ms() as u64));
            let restored = match restored {
                Ok(offset) => Some(offset),
                Err(RestoreError::NoCheckpoint) => None,
                Err(e) => {
                    warn!(%topic, partition, error = %e, "checkpoint unusable; rebuilding by replay");
                    self.metrics
                        .checkpoints_unusable
                        .with_label_values(&[unusable_reason(&e)])
                        .inc();
                    None
                }
            };
            let committed = committed.get(&source).copied();
            match restored {
                Some(offset) => {
                    info!(%topic, partition, offset, "restored from checkpoint");
                    self.metrics.restores.with_label_values(&["checkpoint"]).inc();
                    set_start(tpl, topic, *partition, Offset::Offset(offset));
                    replays.push((source, replay_end(offset, committed)));
                }
                None => {
                    // The engine left the partition empty (remembering what to tombstone).
                    self.metrics.restores.with_label_values(&["replay"]).inc();
                    replay_from_time.push((source, committed));
                }
            }
        }
        if !replay_from_time.is_empty() {
            // Replay what the longest window can still hold. A broker that cannot look offsets up
            // by time (or a backfill on the event clock) replays from the beginning: too-old
            // events are then only re-read, never counted.
            let since = wall_ms() - longest_ms;
            let starts = match clock {
                ClockMode::Wall => self.offsets_for_time(consumer, &replay_from_time, since),
                ClockMode::Event => HashMap::new(),
            };
            for (source, committed) in replay_from_time {
                let start = start_offset(None, starts.get(&source).copied());
                let (topic, partition) = (self.topics.name(source), source.partition);
                info!(%topic, partition, start = ?start, "rebuilding by replay");
                set_start(tpl, topic, partition, start.map_or(Offset::Beginning, Offset::Offset));
                replays.push((source, replay_end(start.unwrap_or(0), committed)));
            }
        }
        replays
    }
}

/// The `reason` label of `cxpulse_checkpoints_unusable_total`.
fn unusable_reason(error: &RestoreError) -> &'static str {
    match error {
        RestoreError::NoCheckpoint => "none",
        RestoreError::NoManifest => "no_manifest",
        RestoreError::Unreadable(_) => "unreadable",
        RestoreError::OtherWindows { .. } => "other_windows",
        RestoreError::Incomplete(_) => "incomplete",
        _ => "invalid",
    }
}

fn set_start(tpl: &mut TopicPartitionList, topic: &str, partition: i32, offset: Offset) {
    if let Err(e) = tpl.set_partition_offset(topic, partition, offset) {
        warn!(%topic, partition, error = %e, "cannot set the start offset");
    }
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: Statistics) {
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        self.health.set_broker_up(up);
        if up {
            self.client_log.connectivity_restored();
        }
        let partitions = lock(&self.partitions);
        self.metrics.consumer_lag.reset();
        for (topic, stats) in &statistics.topics {
            if self.topics.names().contains(topic) {
                let partitions = stats.partitions.keys().filter(|p| **p >= 0).count();
                self.metrics
                    .topic_partitions
                    .with_label_values(&[topic.as_str()])
                    .set(partitions as i64);
            }
            for (partition, p) in &stats.partitions {
                if !partitions.is_assigned(&self.topics.source(topic, *partition)) {
                    continue;
                }
                let lag =
                    if p.consumer_lag_stored >= 0 { p.consumer_lag_stored } else { p.consumer_lag };
                if lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(lag);
                }
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.client_log.log_line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)) {
            self.health.set_broker_up(false);
        }
        self.client_log.client_error(&error, reason);
    }
}

impl ConsumerContext for WorkerContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            warn!(error = %e, "commit failed; the next owner re-reads from the last commit");
        }
    }

    /// The default rebalance, with start offsets chosen (and state restored) before assigning.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if self.stopping() {
                    info!(
                        partitions = tpl.count(),
                        "assignment while stopping: acknowledged, not restored"
                    );
                } else {
                    self.pre_rebalance(consumer, &Rebalance::Assign(tpl));
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = result {
                    warn!(error = %e, "assign failed");
                } else if !self.stopping() {
                    // Nothing is fetched for them until the loop restored them.
                    if let Err(e) = consumer.pause(tpl) {
                        warn!(error = %e, "cannot pause the partitions to restore");
                    }
                    self.publish_restoring();
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = result {
                    warn!(error = %e, "unassign failed");
                }
            }
            other => {
                warn!(error = ?other, "rebalance error; dropping the assignment");
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                let _ = consumer.unassign();
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = self.partitions_of(tpl);
                self.revocations.fetch_add(1, Ordering::Relaxed);
                self.metrics.rebalances.with_label_values(&["revoke"]).inc();
                if self.closing.load(Ordering::Relaxed) {
                    // Stopping: the shutdown already checkpointed and committed, with deadlines.
                } else if consumer.assignment_lost() {
                    warn!(
                        partitions = revoked.len(),
                        "assignment lost: not committing, the next owner re-reads"
                    );
                } else {
                    self.checkpoint(Some(&revoked), Instant::now() + IO_TIMEOUT);
                    self.commit_processed(consumer, Some(&revoked));
                }
                let sources: Vec<SourcePartition> = revoked.iter().copied().collect();
                let now = {
                    let mut partitions = lock(&self.partitions);
                    partitions.revoke(&revoked);
                    partitions.assigned()
                };
                self.engine.with(|engine| engine.drop_partitions(&sources));
                self.publish_restoring();
                self.publish_assignment(now);
                info!(revoked = revoked.len(), now, "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                let added = self.partitions_of(tpl);
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                let now = {
                    let mut partitions = lock(&self.partitions);
                    partitions.assign(added.iter().copied());
                    partitions.assigned()
                };
                self.publish_assignment(now);
                self.health.set_joined(true);
                info!(added = added.len(), now, "partitions assigned");
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}
