//! cxpulse-kafka: the Kafka edge of cxpulse. The consuming worker (at-least-once: an offset is
//! stored only after its message is counted, and its dead letter or detractor feed message
//! acknowledged), the outboxes that write those, and the synthetic producer behind
//! `cxpulse produce` and the demo.

pub mod client_log;
pub mod config;
pub mod dead_letter;
pub mod feed;
pub mod metrics;
pub mod outbox;
pub mod partitions;
pub mod produce;
pub mod state_store;
pub mod topic_check;
pub mod util;
pub mod worker;

mod context;
mod fetch_queue;

pub use config::{KafkaSettings, SourceConfig};
pub use metrics::PipelineMetrics;
pub use worker::{run_worker, Worker};
