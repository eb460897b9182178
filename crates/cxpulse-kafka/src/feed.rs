//! The detractor feed: the engine's feed messages (one per NPS answer scored 0–6, one more when a
//! correction resolves it) written to `[feed] detractors_topic` through an [`Outbox`], so that the
//! source message's offset waits for the broker's acknowledgement: at least once, and a message
//! written again after a crash has the same key and bytes.

use cxpulse_core::feed::FeedItem;
use rdkafka::message::OwnedHeaders;
use rdkafka::ClientConfig;

use crate::client_log::ClientLog;
use crate::metrics::PipelineMetrics;
use crate::outbox::{Outbox, Outgoing};
use crate::partitions::SourcePartition;

/// `[feed]`: where detractor answers go for someone to call the customer back.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// Topic of the detractor feed; "" (the default) turns the feed off.
    pub detractors_topic: String,
}

impl FeedConfig {
    /// The feed topic in effect, `None` when turned off.
    pub fn topic(&self) -> Option<&str> {
        Some(self.detractors_topic.as_str()).filter(|topic| !topic.is_empty())
    }
}

/// A feed message with the source message it came from.
pub struct FeedMessage {
    pub source: SourcePartition,
    pub source_offset: i64,
    pub item: FeedItem,
}

impl Outgoing for FeedMessage {
    fn source(&self) -> SourcePartition {
        self.source
    }
    fn source_offset(&self) -> i64 {
        self.source_offset
    }
    fn key(&self) -> Option<&[u8]> {
        Some(self.item.key.as_bytes())
    }
    fn payload(&self) -> &[u8] {
        &self.item.value
    }
    fn headers(&self) -> Option<&OwnedHeaders> {
        None
    }
    fn delivered(&self, metrics: &PipelineMetrics) {
        metrics.feed_messages.with_label_values(&[self.item.status.as_str()]).inc();
    }
    fn retried(&self, metrics: &PipelineMetrics) {
        metrics.feed_failures.inc();
    }
    fn refused(&self, metrics: &PipelineMetrics, _reason: &'static str) {
        metrics.feed_failures.inc();
    }
}

/// The feed topic's outbox.
pub fn outbox(
    config: &ClientConfig,
    topic: &str,
    metrics: PipelineMetrics,
    log: ClientLog,
) -> anyhow::Result<Outbox> {
    // An answer's `resolved` must land after its `open`: a compacted topic keeps the last.
    Ok(Outbox::new("detractor feed message", config, topic.to_string(), metrics, log)?
        .ordered_by_key())
}
