//! cxpulse-http: the HTTP edge. `/metrics` renders the Prometheus text straight from an engine
//! snapshot (no metric update per event), next to the worker's own pipeline registry;
//! `/healthz`, `/readyz`, `/api/v1/scores` and the page at `/` serve probes and people.

pub mod page;
pub mod render;
pub mod scores;
pub mod security;
pub mod server;

pub use server::{serve, HttpConfig, HttpState};
