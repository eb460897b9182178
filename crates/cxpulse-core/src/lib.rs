//! cxpulse-core: the pure logic of cxpulse. Event parsing and validation, scoring, event-time
//! windows, dedup and corrections, kept per source partition. No Kafka, no sockets, no clock
//! reads: callers pass bytes and the time in, and read state out.

// The exception is a prefetch hint in `buckets`, allowed where it stands.
#![deny(unsafe_code)]

pub mod age;
pub mod alerts;
pub mod buckets;
pub mod checkpoint;
pub mod customers;
pub mod drop_evidence;
pub mod duration;
pub mod engine;
pub mod event;
pub mod feed;
pub mod health;
pub mod parse;
pub mod secret;
pub mod snapshot;
pub mod synth;
pub mod window;

pub use checkpoint::CheckpointError;
pub use duration::DurationError;
pub use engine::{
    CheckpointBatch, ClockMode, Engine, EngineConfig, EngineError, Outcome, RestoreError,
    SharedEngine,
};
pub use event::{RejectReason, Rejection, SourcePartition};
pub use snapshot::{Scores, Snapshot, StateStats};
pub use window::{Counts, WindowError, WindowSpec};
