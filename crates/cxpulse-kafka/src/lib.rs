//! cxpulse-kafka: the Kafka edge of cxpulse. The consuming worker (at-least-once: an offset is
//! stored only after its message is counted or dead-lettered), the dead-letter producer, and the
//! synthetic producer behind `cxpulse produce` and the demo.

pub mod client_log;
pub mod config;
pub mod dead_letter;
pub mod metrics;
pub mod partitions;
pub mod produce;
pub mod state_store;
pub mod topic_check;
pub mod util;
pub mod worker;

mod context;

pub use config::{KafkaSettings, SourceConfig};
pub use metrics::PipelineMetrics;
pub use worker::{run_worker, Worker};
