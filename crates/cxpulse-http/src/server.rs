//! The HTTP server: metrics, probes, the scores API and the page, on one listener.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cxpulse_core::alerts::AlertPolicy;
use cxpulse_core::health::Health;
use cxpulse_core::secret::Secret;
use cxpulse_core::{Engine, Snapshot};
use prometheus::Registry;

use crate::listener::HttpLimits;
use crate::scrape::SharedScrape;
use crate::security::{BearerToken, TlsFiles};
use serde::Serialize;

/// `[http]`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; `0.0.0.0:9898` in containers.
    pub listen: String,
    /// Require `Authorization: Bearer <token>` on /metrics and /api/v1/scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// Read the token from this file instead (trailing newline ignored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token_file: Option<String>,
    /// HTTPS: `tls_cert`, `tls_key`, `tls_key_password`.
    #[serde(flatten)]
    pub tls: TlsFiles,
    /// Time limits, connection cap and body limit of the listener.
    #[serde(flatten)]
    pub limits: HttpLimits,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9898".into(),
            bearer_token: None,
            bearer_token_file: None,
            tls: TlsFiles::default(),
            limits: HttpLimits::default(),
        }
    }
}

impl HttpConfig {
    /// The token in effect; an empty one is an error, never "no authentication".
    pub fn token(&self) -> anyhow::Result<Option<Secret>> {
        let token = match (&self.bearer_token, &self.bearer_token_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("[http] set bearer_token or bearer_token_file, not both")
            }
            (Some(token), None) => Some(token.clone()),
            (None, Some(path)) => Some(Secret::new(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot read [http] bearer_token_file {path}: {e}")
                    })?
                    .trim_end_matches(['\n', '\r']),
            )),
            (None, None) => None,
        };
        if token.as_ref().is_some_and(Secret::is_blank) {
            anyhow::bail!("[http] bearer token is empty: set a real token or remove the setting");
        }
        Ok(token)
    }

    /// The TLS acceptor, when both files are set; one without the other is an error.
    pub fn tls(&self) -> anyhow::Result<Option<openssl::ssl::SslAcceptor>> {
        self.tls.acceptor("http")
    }
}

pub struct HttpState {
    pub engine: Arc<Mutex<Engine>>,
    pub health: Arc<Health>,
    pub registry: Option<Registry>,
    pub policy: AlertPolicy,
    pub version: &'static str,
}

pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl HttpState {
    fn snapshot(&self) -> Snapshot {
        let mut engine = self.engine.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        engine.snapshot(wall_ms())
    }

    /// A snapshot for the scores API and the page, with each window's steps when asked.
    pub(crate) fn snapshot_for_people(&self, with_steps: bool) -> Snapshot {
        let mut engine = self.engine.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if with_steps {
            engine.snapshot_with_steps(wall_ms())
        } else {
            engine.snapshot(wall_ms())
        }
    }
}

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
/// limits, token and TLS, until `shutdown` completes.
pub async fn serve(
    config: &HttpConfig,
    listener: std::net::TcpListener,
    state: Arc<HttpState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = BearerToken::new(config.token()?.as_ref());
    let tls = config.tls()?;
    let limits = config.limits.resolve("http")?;
    crate::listener::serve(listener, router(state, token), limits, tls, shutdown).await
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
