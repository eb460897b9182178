//! The worker's listener put together: `/metrics` and the probes (handled here), the scores
//! API and the page (their own modules), behind the token where they need it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::config::HttpSettings;
use crate::scrape::SharedScrape;
use crate::security::BearerToken;
use crate::state::{wall_ms, HttpState};

/// Every route of the worker's listener.
pub fn router(state: Arc<HttpState>, token: BearerToken) -> Router {
    let scrape = Arc::new(SharedScrape::default());
    let protected = Router::new()
        .route("/metrics", get(metrics).layer(axum::Extension(scrape)))
        .route("/api/v1/scores", get(crate::scores::handler))
        .route_layer(axum::middleware::from_fn_with_state(
            token.clone(),
            crate::security::require_token,
        ));
    Router::new()
        .merge(protected)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state.clone())
        .merge(crate::page::router(state, token))
}

/// Serves the worker's routes on `listener` (from [`crate::listener::bind`]) with `[http]`'s
/// compiled limits, token and TLS, until `shutdown` completes.
pub async fn serve(
    settings: &HttpSettings,
    listener: std::net::TcpListener,
    state: Arc<HttpState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = router(state, settings.token.clone());
    let (limits, tls) = (settings.limits, settings.tls.clone());
    crate::listener::serve(listener, router, limits, tls, shutdown).await
}

async fn metrics(
    State(state): State<Arc<HttpState>>,
    axum::Extension(scrape): axum::Extension<Arc<SharedScrape>>,
    headers: HeaderMap,
) -> Response {
    scrape
        .respond(&headers, move || {
            let snapshot = state.snapshot();
            crate::render::render_metrics(
                &snapshot,
                &state.policy,
                state.registry.as_ref(),
                state.version,
            )
        })
        .await
}

async fn healthz(State(state): State<Arc<HttpState>>) -> Response {
    if state.health.is_live(wall_ms()) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "consume loop not running\n").into_response()
    }
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    live: bool,
    broker_up: bool,
    partitions_assigned: usize,
    partitions_restoring: usize,
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let now = wall_ms();
    let health = &state.health;
    let body = Readiness {
        ready: health.is_ready(now),
        live: health.is_live(now),
        broker_up: health.broker_up(),
        partitions_assigned: health.assigned(),
        partitions_restoring: health.restoring(),
    };
    let status = if body.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}
