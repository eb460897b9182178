//! Serving the router through cxpulse's hardened listener (header, TLS and keep-alive time
//! limits, a connection cap with a probes-only reserve, the body limit, TCP_NODELAY), the same one
//! the worker's endpoints use, with the gateway's own drain of requests in flight on shutdown.

use std::future::Future;

use axum::Router;

use crate::config::GatewaySettings;

/// Serves `router` on `listener` (from `cxpulse_http::listener::bind`) with the settings' limits,
/// over TLS when they have it, until `shutdown` completes; requests in flight then get
/// `drain_timeout` to finish, and whatever still runs after that is dropped.
pub async fn serve(
    router: Router,
    listener: std::net::TcpListener,
    settings: &GatewaySettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = settings.tls.clone();
    cxpulse_http::listener::serve(listener, router, settings.listener, tls, shutdown).await
}
