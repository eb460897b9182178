//! What librdkafka says, said once. Every Kafka client of a worker (consumer, dead-letter
//! producer, state-store clients, the startup probe) routes its log lines and error callbacks
//! through the worker's one [`ClientLog`]. Lost connectivity is one line at once, then at most
//! one line every `CONNECTIVITY_EVERY` while it lasts (with how many were held back); other
//! lines pass through.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;
use tracing::{debug, error, info, warn};

use crate::util::lock;

/// The longest a lasting connectivity problem stays silent.
pub const CONNECTIVITY_EVERY: Duration = Duration::from_secs(30);

/// A limiter: `allow` answers true at most once per `every`, counting what it held back.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub const fn new(every: Duration) -> Throttle {
        Throttle { every, last: None, held_back: 0 }
    }

    /// `Some(lines held back since the last one allowed)` when a line may be written now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }

    /// Forgets the last line, so that the next problem is reported at once.
    pub fn reset(&mut self) {
        self.last = None;
        self.held_back = 0;
    }
}

/// Where a process's Kafka clients report: cloned into each client's context, so that they all
/// share one connectivity limiter.
#[derive(Clone, Debug)]
pub struct ClientLog {
    connectivity: Arc<Mutex<Throttle>>,
}

impl Default for ClientLog {
    fn default() -> Self {
        ClientLog { connectivity: Arc::new(Mutex::new(Throttle::new(CONNECTIVITY_EVERY))) }
    }
}

impl ClientLog {
    /// Reports a connectivity problem through the shared limiter.
    pub fn connectivity(&self, what: &str) {
        if let Some(held_back) = lock(&self.connectivity).allow(Instant::now()) {
            warn!(
                held_back,
                "cannot reach Kafka ({what}); retrying, next report in {} s at the latest if it lasts",
                CONNECTIVITY_EVERY.as_secs()
            );
        }
    }

    /// A broker answered again: the next problem is reported at once.
    pub fn connectivity_restored(&self) {
        let mut throttle = lock(&self.connectivity);
        if throttle.last.is_some() {
            throttle.reset();
            info!("Kafka reachable again");
        }
    }

    /// librdkafka's log callback, shared by every client context.
    pub fn log_line(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= RDKafkaLogLevel::Warning as i32 && is_connectivity_line(fac, message) {
            self.connectivity(message);
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Warning => warn!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", "{fac} {message}"),
        }
    }

    /// librdkafka's error callback, shared by every client context.
    pub fn client_error(&self, error: &KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            // The state-topic reader asks for these to know it read everything; not a problem.
            debug!(reason, "end of partition");
        } else if is_connectivity_error(error) {
            self.connectivity(reason);
        } else {
            warn!(error = %error, reason, "kafka client error");
        }
    }
}

/// Error codes that mean "no broker reachable right now", retried by librdkafka on its own.
pub fn is_connectivity_error(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NetworkException
        )
    )
}

/// librdkafka log facilities and texts about connections failing.
fn is_connectivity_line(fac: &str, message: &str) -> bool {
    matches!(fac, "FAIL" | "BROKERFAIL" | "CONNECT" | "ERROR" | "RESOLVE" | "REQTMOUT")
        || [
            "Connection refused",
            "Connect to",
            "Disconnected",
            "Failed to resolve",
            "brokers are down",
        ]
        .iter()
        .any(|needle| message.contains(needle))
}

/// A client context that only routes logs and errors to a [`ClientLog`] (state store, startup
/// probe, admin clients).
#[derive(Clone, Debug, Default)]
pub struct QuietContext(pub ClientLog);

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.log_line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.client_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for QuietContext {}

impl rdkafka::producer::ProducerContext for QuietContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_allows_one_line_per_period_and_counts_the_rest() {
        let start = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(30));
        assert_eq!(throttle.allow(start), Some(0));
        for s in 1..30 {
            assert_eq!(throttle.allow(start + Duration::from_secs(s)), None);
        }
        assert_eq!(throttle.allow(start + Duration::from_secs(30)), Some(29));
        throttle.reset();
        assert_eq!(throttle.allow(start + Duration::from_secs(31)), Some(0));
    }

    #[test]
    fn connection_failures_are_recognised() {
        assert!(is_connectivity_line(
            "FAIL",
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed"
        ));
        assert!(!is_connectivity_line("CONFWARN", "Configuration property x is ignored"));
        assert!(is_connectivity_error(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)));
        assert!(!is_connectivity_error(&KafkaError::Global(RDKafkaErrorCode::MessageSizeTooLarge)));
    }
}
