//! cxpulse-http: the HTTP edge. `/metrics` renders the Prometheus text straight from an engine
//! snapshot (no metric update per event), next to the worker's own pipeline registry;
//! `/healthz`, `/readyz`, `/api/v1/scores` and the page at `/` serve probes and people.
//! `listener` serves any router with the limits every cxpulse listener shares.

pub mod config;
pub mod listener;
pub mod page;
pub mod render;
pub mod scores;
pub mod scrape;
pub mod security;
pub mod server;
pub mod state;

pub use config::{HttpConfig, HttpSettings};
pub use listener::HttpLimits;
pub use server::serve;
pub use state::HttpState;
