//! Tooling beside the worker, not part of it: `cxpulse bench` (the pipeline against a bare
//! drain, scrape memory, restore time), `cxpulse bench --soak` (a `cxpulse run` worker left
//! taking steady traffic) and the local Prometheus + Alertmanager of `cxpulse demo --alerting`.

pub mod alerting;
pub mod bench;
mod cpu;
pub mod soak;
