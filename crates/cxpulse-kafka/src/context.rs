//! The consumer's callbacks: rebalances (commit what was processed before a partition goes, and
//! drop its window contribution) and statistics (lag, broker reachability).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use cxpulse_core::health::Health;
use cxpulse_core::{Engine, SourcePartition};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::metrics::PipelineMetrics;

pub(crate) struct WorkerContext {
    pub engine: Arc<Mutex<Engine>>,
    pub health: Arc<Health>,
    pub metrics: PipelineMetrics,
    pub topics: Vec<String>,
    /// Per (topic, partition): the next offset to read, once processing passed it. Committed on
    /// revoke and shutdown; the auto-commit reads the same offsets from librdkafka's store.
    pub processed: Mutex<BTreeMap<(String, i32), i64>>,
    pub assigned: Mutex<BTreeSet<(String, i32)>>,
    /// Bumped on every revoke, so the loop re-checks a batch's partitions only when one happened.
    pub revocations: std::sync::atomic::AtomicU64,
}

/// Locks even when another thread panicked while holding the lock: the state is plain data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WorkerContext {
    pub fn source(&self, topic: &str, partition: i32) -> SourcePartition {
        let index = self.topics.iter().position(|t| t == topic).unwrap_or(self.topics.len());
        SourcePartition { topic: index as u32, partition }
    }

    /// Synchronously commits the processed offsets of `partitions` (all when `None`).
    pub fn commit_processed(&self, consumer: &BaseConsumer<WorkerContext>, partitions: Option<&BTreeSet<(String, i32)>>) {
        let processed = lock(&self.processed);
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in processed.iter() {
            if partitions.is_none_or(|set| set.contains(&(topic.clone(), *partition))) {
                if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
                    warn!(%topic, partition, error = %e, "cannot add offset to commit");
                }
            }
        }
        drop(processed);
        if tpl.count() == 0 {
            return;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => info!(partitions = tpl.count(), "committed processed offsets"),
            Err(e) => warn!(error = %e, "commit of processed offsets failed; the next owner re-reads from the last commit"),
        }
    }

    fn publish_assignment(&self, assigned: &BTreeSet<(String, i32)>) {
        self.health.set_assigned(assigned.len());
        self.metrics.partitions_assigned.set(assigned.len() as i64);
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> BTreeSet<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ClientContext for WorkerContext {
    fn stats(&self, statistics: Statistics) {
        let up = statistics.brokers.values().any(|b| b.state == "UP");
        self.health.set_broker_up(up);
        let assigned = lock(&self.assigned);
        self.metrics.consumer_lag.reset();
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                if !assigned.contains(&(topic.clone(), *partition)) {
                    continue;
                }
                let lag = if p.consumer_lag_stored >= 0 { p.consumer_lag_stored } else { p.consumer_lag };
                if lag >= 0 {
                    self.metrics.consumer_lag.with_label_values(&[topic.as_str(), &partition.to_string()]).set(lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)) {
            self.health.set_broker_up(false);
        }
        warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let revoked = partitions_of(tpl);
                self.revocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.metrics.rebalances.with_label_values(&["revoke"]).inc();
                if consumer.assignment_lost() {
                    warn!(partitions = revoked.len(), "assignment lost: not committing, the next owner re-reads");
                } else {
                    self.commit_processed(consumer, Some(&revoked));
                }
                let mut engine = lock(&self.engine);
                for (topic, partition) in &revoked {
                    engine.drop_partition(self.source(topic, *partition));
                }
                drop(engine);
                let mut processed = lock(&self.processed);
                processed.retain(|key, _| !revoked.contains(key));
                drop(processed);
                let mut assigned = lock(&self.assigned);
                assigned.retain(|key| !revoked.contains(key));
                self.publish_assignment(&assigned);
                info!(revoked = revoked.len(), now = assigned.len(), "partitions revoked");
            }
            Rebalance::Assign(tpl) => {
                let added = partitions_of(tpl);
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                let mut assigned = lock(&self.assigned);
                assigned.extend(added.iter().cloned());
                self.publish_assignment(&assigned);
                self.health.set_joined(true);
                info!(added = added.len(), now = assigned.len(), "partitions assigned");
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
    }
}
