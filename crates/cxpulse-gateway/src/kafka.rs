//! The gateway's Kafka producer: idempotent, `acks=all`, and a request is answered only once
//! every one of its records (events and dead letters alike) is acknowledged, or 503 when that
//! does not happen within the ack timeout.

use std::time::Duration;

use cxpulse_kafka::client_log::QuietContext;
use cxpulse_kafka::dead_letter::{fit, DeadLetter};
use cxpulse_kafka::KafkaSettings;
use rdkafka::message::Header;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// What one request asks Kafka to take.
#[derive(Clone, Debug)]
pub enum Record {
    /// A valid event, keyed `brand/segment`.
    Event { key: String, payload: Vec<u8> },
    /// A rejected one, with the worker's dead-letter headers.
    DeadLetter { payload: Vec<u8>, reason: &'static str, detail: String, source: String },
}

/// Kafka did not acknowledge in time, or refused.
#[derive(Debug)]
pub struct Unavailable(pub String);

pub struct Sink {
    producer: FutureProducer<QuietContext>,
    topic: String,
    dead_letter_topic: Option<String>,
    ack_timeout: Duration,
}

/// Dead letters above this are cut, with the original size and hash in headers, so that a
/// letter always fits the dead-letter topic (Kafka's default message limit is 1 MB).
const MAX_DEAD_LETTER_BYTES: usize = 512 * 1024;

impl Sink {
    pub fn new(
        settings: &KafkaSettings,
        topic: String,
        dead_letter_topic: Option<String>,
        ack_timeout: Duration,
    ) -> anyhow::Result<Sink> {
        let mut config = cxpulse_kafka::config::producer_config(settings);
        if config.get("linger.ms").is_none() {
            config.set("linger.ms", "2");
        }
        // Every request waits for its acknowledgement: Nagle's delay would be added to each.
        if config.get("socket.nagle.disable").is_none() {
            config.set("socket.nagle.disable", "true");
        }
        // Librdkafka gives up on a record at this point; the request has answered 503 by then.
        let timeout_ms = ack_timeout.as_millis().max(1).to_string();
        config.set("message.timeout.ms", &timeout_ms);
        config.set("enable.idempotence", "true");
        config.set("acks", "all");
        // Connection trouble is reported through the shared limiter: one line at once, then at
        // most one every 30 s, as for the worker's clients.
        let producer: FutureProducer<QuietContext> = config
            .create_with_context(QuietContext::default())
            .map_err(|e| anyhow::anyhow!("cannot create the producer: {e}"))?;
        Ok(Sink { producer, topic, dead_letter_topic, ack_timeout })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sends every record and waits (at most the ack timeout) for all acknowledgements.
    pub async fn deliver(&self, records: &[Record]) -> Result<(), Unavailable> {
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let sent = match record {
                Record::Event { key, payload } => self
                    .producer
                    .send_result(FutureRecord::to(&self.topic).key(key).payload(payload))
                    .map_err(|(e, _)| e),
                Record::DeadLetter { payload, reason, detail, source } => {
                    let Some(dead_letter_topic) = &self.dead_letter_topic else { continue };
                    let letter = DeadLetter {
                        source_topic: self.topic.clone(),
                        source: cxpulse_core::SourcePartition { topic: 0, partition: -1 },
                        source_offset: -1,
                        key: None,
                        payload: payload.clone(),
                        reason,
                        detail: detail.clone(),
                    };
                    let (letter, headers) = fit(letter, MAX_DEAD_LETTER_BYTES);
                    let headers = headers
                        .insert(Header { key: "cxpulse-gateway-source", value: Some(source) });
                    self.producer
                        .send_result(
                            FutureRecord::<(), [u8]>::to(dead_letter_topic)
                                .payload(&letter.payload)
                                .headers(headers),
                        )
                        .map_err(|(e, _)| e)
                }
            };
            match sent {
                Ok(future) => pending.push(future),
                Err(e) => return Err(Unavailable(format!("cannot enqueue: {e}"))),
            }
        }
        let all = async {
            for future in pending {
                match future.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => return Err(Unavailable(e.to_string())),
                    Err(_) => return Err(Unavailable("producer closed".into())),
                }
            }
            Ok(())
        };
        // A little past librdkafka's own message timeout, so its verdict usually comes first.
        let limit = self.ack_timeout + Duration::from_millis(250);
        tokio::time::timeout(limit, all)
            .await
            .map_err(|_| Unavailable(format!("no acknowledgement within {limit:?}")))?
    }

    /// Can a broker be reached (metadata within a second)? For `/readyz`.
    pub fn reachable(&self) -> bool {
        self.producer.client().fetch_metadata(None, Duration::from_secs(1)).is_ok()
    }

    /// An idempotent producer can fail for good (librdkafka's fatal errors): then every request
    /// would answer 503, and only a restart helps. For `/healthz`.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer.client().fatal_error().map(|(code, text)| format!("{code:?}: {text}"))
    }

    /// Waits (bounded) for records still queued, on shutdown.
    pub fn flush(&self, limit: Duration) {
        let _ = self.producer.flush(limit);
    }
}
