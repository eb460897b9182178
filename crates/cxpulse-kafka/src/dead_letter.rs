//! Dead letters: each rejected message goes to the dead-letter topic with headers saying why and
//! where from, through an [`Outbox`] (offsets wait for its acknowledgement). A payload larger than
//! the topic accepts is written truncated.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::ClientConfig;
use tracing::info;

use crate::client_log::{ClientLog, QuietContext};
use crate::metrics::PipelineMetrics;
use crate::outbox::{Outbox, Outgoing};
use crate::partitions::SourcePartition;
/// A rejected message, copied out of the consumer's buffer.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The source topic's name, for the letter's headers.
    pub source_topic: String,
    pub source: SourcePartition,
    pub source_offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The rejection reason label (`invalid_json`, ...).
    pub reason: &'static str,
    pub detail: String,
}

/// Bytes a record needs beyond its key, payload and headers (framing, timestamps, varints),
/// rounded up generously so that a truncated letter always fits.
const RECORD_OVERHEAD: usize = 1024;

/// The payload bytes a letter may keep so that the whole record stays within `max_bytes`;
/// `None` when it fits whole.
pub fn truncated_len(
    max_bytes: usize,
    payload: usize,
    key: usize,
    headers: usize,
) -> Option<usize> {
    // The truncation headers: a size and a 64-digit hex digest, with their names.
    const TRUNCATION_HEADERS: usize = 128;
    let fixed = key + headers + RECORD_OVERHEAD;
    if fixed + payload <= max_bytes {
        return None;
    }
    Some(max_bytes.saturating_sub(fixed + TRUNCATION_HEADERS).min(payload))
}

/// A dead letter as written: fitted to the topic, with its headers.
struct Letter {
    letter: DeadLetter,
    headers: OwnedHeaders,
}

impl Outgoing for Letter {
    fn source(&self) -> SourcePartition {
        self.letter.source
    }
    fn source_offset(&self) -> i64 {
        self.letter.source_offset
    }
    fn key(&self) -> Option<&[u8]> {
        self.letter.key.as_deref()
    }
    fn payload(&self) -> &[u8] {
        &self.letter.payload
    }
    fn headers(&self) -> Option<&OwnedHeaders> {
        Some(&self.headers)
    }
    fn delivered(&self, metrics: &PipelineMetrics) {
        metrics.dead_letters.inc();
    }
    fn retried(&self, metrics: &PipelineMetrics) {
        metrics.dead_letter_retries.inc();
    }
    fn refused(&self, metrics: &PipelineMetrics, reason: &'static str) {
        metrics.dead_letter_failures.with_label_values(&[reason]).inc();
    }
}

/// The dead-letter topic's outbox, and the size its letters are cut to.
pub struct DeadLetters {
    pub outbox: Outbox,
    max_bytes: usize,
}

impl DeadLetters {
    /// `fallback_max_bytes` is the letter size limit when the broker does not say the topic's.
    pub fn new(
        config: &ClientConfig,
        topic: String,
        metrics: PipelineMetrics,
        fallback_max_bytes: usize,
        log: ClientLog,
    ) -> anyhow::Result<Self> {
        let max_bytes = match topic_max_bytes(config, &topic, &log) {
            Some(limit) => {
                info!(%topic, max_bytes = limit, "dead-letter size limit from the topic");
                limit
            }
            None => {
                info!(%topic, max_bytes = fallback_max_bytes, "dead-letter size limit from [source] dead_letter_max_bytes (the broker did not say the topic's)");
                fallback_max_bytes
            }
        };
        let mut config = config.clone();
        // A batch of letters must fit the topic too, and no local check may refuse what fits.
        config
            .set("message.max.bytes", (max_bytes + RECORD_OVERHEAD).max(1000).to_string())
            .set("batch.size", max_bytes.max(1).to_string());
        let outbox = Outbox::new("dead letter", &config, topic, metrics, log)?;
        Ok(DeadLetters { outbox, max_bytes })
    }

    /// Queues letters and sends them; returns at once.
    pub fn submit(&mut self, letters: Vec<DeadLetter>) {
        let max_bytes = self.max_bytes;
        self.outbox.submit(letters.into_iter().map(|letter| {
            let (letter, headers) = fit(letter, max_bytes);
            Box::new(Letter { letter, headers }) as Box<dyn Outgoing>
        }));
    }
}

/// A dead letter as it is written: the `cxpulse-*` headers, and the payload cut (with
/// `cxpulse-truncated` and `cxpulse-original-sha256`) when the record would not fit `max_bytes`.
pub fn fit(mut letter: DeadLetter, max_bytes: usize) -> (DeadLetter, OwnedHeaders) {
    let headers = base_headers(&letter);
    let headers_len: usize = header_bytes(&letter);
    let key_len = letter.key.as_ref().map_or(0, Vec::len);
    match truncated_len(max_bytes, letter.payload.len(), key_len, headers_len) {
        None => (letter, headers),
        Some(keep) => {
            let original = letter.payload.len().to_string();
            let digest = hex(&openssl::sha::sha256(&letter.payload));
            letter.payload.truncate(keep);
            let headers = headers
                .insert(Header { key: "cxpulse-truncated", value: Some(original.as_str()) })
                .insert(Header { key: "cxpulse-original-sha256", value: Some(digest.as_str()) });
            (letter, headers)
        }
    }
}

fn base_headers(letter: &DeadLetter) -> OwnedHeaders {
    let partition = letter.source.partition.to_string();
    let offset = letter.source_offset.to_string();
    OwnedHeaders::new()
        .insert(Header { key: "cxpulse-error", value: Some(letter.reason) })
        .insert(Header { key: "cxpulse-error-detail", value: Some(letter.detail.as_str()) })
        .insert(Header { key: "cxpulse-source-topic", value: Some(letter.source_topic.as_str()) })
        .insert(Header { key: "cxpulse-source-partition", value: Some(partition.as_str()) })
        .insert(Header { key: "cxpulse-source-offset", value: Some(offset.as_str()) })
}

fn header_bytes(letter: &DeadLetter) -> usize {
    // Names and values of the five headers, with a little room for the numbers.
    100 + letter.reason.len() + letter.detail.len() + letter.source_topic.len() + 40
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The topic's `max.message.bytes`, when the broker answers DescribeConfigs within 3 s.
fn topic_max_bytes(config: &ClientConfig, topic: &str, log: &ClientLog) -> Option<usize> {
    let admin: AdminClient<QuietContext> =
        config.create_with_context(QuietContext(log.clone())).ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().ok()?;
    let timeout = Duration::from_secs(3);
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let resources = [ResourceSpecifier::Topic(topic)];
    let describe = admin.describe_configs(&resources, &options);
    let answer =
        runtime.block_on(async { tokio::time::timeout(timeout, describe).await }).ok()?.ok()?;
    let resource = answer.into_iter().next()?.ok()?;
    resource.get("max.message.bytes")?.value.as_deref()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_that_fit_are_kept_whole() {
        assert_eq!(truncated_len(1_000_000, 500, 10, 200), None);
        assert_eq!(truncated_len(1_000_000, 1_000_000 - 1234, 10, 200), None);
    }

    #[test]
    fn oversized_letters_are_cut_to_fit_with_their_headers() {
        let keep = truncated_len(1_000_000, 1_200_000, 10, 200).expect("truncated");
        assert!(keep + 10 + 200 + RECORD_OVERHEAD + 128 <= 1_000_000);
        assert!(keep > 990_000, "keeps nearly all that fits: {keep}");
        assert_eq!(truncated_len(100, 1_000, 10, 200), Some(0), "a tiny limit keeps nothing");
    }
}
