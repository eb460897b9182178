//! The worker's own pipeline metrics, in a prometheus registry the HTTP edge renders next to the
//! engine's windowed state. Updated per batch, not per event.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct PipelineMetrics {
    pub registry: Registry,
    pub consumed: IntCounterVec,
    pub dead_letters: IntCounter,
    pub dead_letter_retries: IntCounter,
    pub dead_letter_failures: IntCounterVec,
    pub partitions_blocked: IntGauge,
    pub feed_messages: IntCounterVec,
    pub feed_failures: IntCounter,
    pub restore_seconds: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub partitions_assigned: IntGauge,
    pub partitions_restoring: IntGauge,
    pub rebalances: IntCounterVec,
    pub checkpoints: IntCounter,
    pub checkpoint_bytes: IntCounter,
    pub checkpoint_seconds: Histogram,
    pub checkpoints_unusable: IntCounterVec,
    pub topic_partitions: IntGaugeVec,
    pub restores: IntCounterVec,
    pub topic_config_warnings: IntGaugeVec,
}

impl PipelineMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = PipelineMetrics {
            consumed: IntCounterVec::new(
                Opts::new(
                    "cxpulse_events_consumed_total",
                    "Messages read, whatever became of them.",
                ),
                &["topic"],
            )
            .unwrap_or_else(invalid_metric),
            dead_letters: IntCounter::new(
                "cxpulse_dead_letters_total",
                "Rejected messages acknowledged by the dead-letter topic.",
            )
            .unwrap_or_else(invalid_metric),
            dead_letter_retries: IntCounter::new(
                "cxpulse_dead_letter_retries_total",
                "Dead-letter deliveries that failed and were retried.",
            )
            .unwrap_or_else(invalid_metric),
            dead_letter_failures: IntCounterVec::new(
                Opts::new(
                    "cxpulse_dead_letter_failures_total",
                    "Dead letters the dead-letter topic refused for good (the source message stays in its topic), by reason.",
                ),
                &["reason"],
            )
            .unwrap_or_else(invalid_metric),
            partitions_blocked: IntGauge::new(
                "cxpulse_partitions_blocked",
                "Assigned partitions whose offsets cannot advance: a dead letter or detractor feed message pending for more than 5 s.",
            )
            .unwrap_or_else(invalid_metric),
            feed_messages: IntCounterVec::new(
                Opts::new(
                    "cxpulse_feed_messages_total",
                    "Detractor feed messages acknowledged by the feed topic, by status (open, resolved).",
                ),
                &["status"],
            )
            .unwrap_or_else(invalid_metric),
            feed_failures: IntCounter::new(
                "cxpulse_feed_failures_total",
                "Detractor feed deliveries that failed (retried, or refused for good and let go).",
            )
            .unwrap_or_else(invalid_metric),
            restore_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "cxpulse_restore_duration_seconds",
                    "Time to restore the partitions of one assignment (state topic read once).",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
            )
            .unwrap_or_else(invalid_metric),
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "cxpulse_consumer_lag",
                    "Messages between the partition's end and this worker's stored offset.",
                ),
                &["topic", "partition"],
            )
            .unwrap_or_else(invalid_metric),
            partitions_assigned: IntGauge::new(
                "cxpulse_partitions_assigned",
                "Partitions assigned to this worker.",
            )
            .unwrap_or_else(invalid_metric),
            partitions_restoring: IntGauge::new(
                "cxpulse_partitions_restoring",
                "Assigned partitions still restoring their state.",
            )
            .unwrap_or_else(invalid_metric),
            rebalances: IntCounterVec::new(
                Opts::new(
                    "cxpulse_rebalances_total",
                    "Partition assignments and revocations seen.",
                ),
                &["kind"],
            )
            .unwrap_or_else(invalid_metric),
            topic_partitions: IntGaugeVec::new(
                Opts::new(
                    "cxpulse_topic_partitions",
                    "Partitions of each consumed topic, from the broker's metadata.",
                ),
                &["topic"],
            )
            .unwrap_or_else(invalid_metric),
            checkpoints: IntCounter::new(
                "cxpulse_checkpoints_total",
                "Partition checkpoints acknowledged by the state topic.",
            )
            .unwrap_or_else(invalid_metric),
            checkpoint_bytes: IntCounter::new(
                "cxpulse_checkpoint_bytes_total",
                "Bytes of checkpoint records acknowledged by the state topic.",
            )
            .unwrap_or_else(invalid_metric),
            checkpoint_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "cxpulse_checkpoint_duration_seconds",
                    "Time to write one round of partition checkpoints, acknowledgements included.",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )
            .unwrap_or_else(invalid_metric),
            checkpoints_unusable: IntCounterVec::new(
                Opts::new(
                    "cxpulse_checkpoints_unusable_total",
                    "Partition checkpoints found but not usable (damaged, incomplete, other windows); the partition was rebuilt by replay.",
                ),
                &["reason"],
            )
            .unwrap_or_else(invalid_metric),
            restores: IntCounterVec::new(
                Opts::new(
                    "cxpulse_partition_restores_total",
                    "Assigned partitions restored, by how (checkpoint or replay).",
                ),
                &["source"],
            )
            .unwrap_or_else(invalid_metric),
            topic_config_warnings: IntGaugeVec::new(
                Opts::new(
                    "cxpulse_topic_config_warnings",
                    "1 for each topic setting found at startup to defeat a promise (docs/operations.md).",
                ),
                &["topic", "setting"],
            )
            .unwrap_or_else(invalid_metric),
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 19] = [
            Box::new(metrics.feed_messages.clone()),
            Box::new(metrics.feed_failures.clone()),
            Box::new(metrics.checkpoint_bytes.clone()),
            Box::new(metrics.checkpoint_seconds.clone()),
            Box::new(metrics.checkpoints_unusable.clone()),
            Box::new(metrics.topic_config_warnings.clone()),
            Box::new(metrics.restore_seconds.clone()),
            Box::new(metrics.dead_letter_failures.clone()),
            Box::new(metrics.partitions_blocked.clone()),
            Box::new(metrics.topic_partitions.clone()),
            Box::new(metrics.checkpoints.clone()),
            Box::new(metrics.restores.clone()),
            Box::new(metrics.consumed.clone()),
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.dead_letter_retries.clone()),
            Box::new(metrics.consumer_lag.clone()),
            Box::new(metrics.partitions_assigned.clone()),
            Box::new(metrics.partitions_restoring.clone()),
            Box::new(metrics.rebalances.clone()),
        ];
        for collector in collectors {
            if let Err(e) = metrics.registry.register(collector) {
                invalid_metric::<()>(e);
            }
        }
        metrics
    }
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Metric names and help texts above are constants; a failure here is a programming error.
fn invalid_metric<T>(error: prometheus::Error) -> T {
    panic!("invalid built-in metric definition: {error}")
}
