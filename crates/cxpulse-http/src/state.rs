//! What the handlers of the worker's listener read: the engine, the probes' health, the
//! pipeline's registry and the alert policy, plus the one-at-a-time turn for the views built
//! for people. A leaf: every handler module imports it, it imports none of them.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use cxpulse_core::alerts::AlertPolicy;
use cxpulse_core::health::Health;
use cxpulse_core::{SharedEngine, Snapshot};
use prometheus::Registry;
use tokio::sync::Semaphore;

/// How long a request for a view waits for its turn before it is told to come back.
const BUILD_WAIT: Duration = Duration::from_secs(10);

pub struct HttpState {
    pub engine: SharedEngine,
    pub health: Arc<Health>,
    /// The pipeline's own metrics, rendered after the counts.
    pub registry: Option<Registry>,
    pub policy: AlertPolicy,
    pub version: &'static str,
    /// The scores document and the page are built from a snapshot with every step, which at
    /// thousands of pairs takes tens of megabytes: one build at a time, so that their memory
    /// does not grow with the number of clients.
    people_builds: Semaphore,
}

impl HttpState {
    pub fn new(
        engine: SharedEngine,
        health: Arc<Health>,
        registry: Option<Registry>,
        policy: AlertPolicy,
        version: &'static str,
    ) -> HttpState {
        HttpState { engine, health, registry, policy, version, people_builds: Semaphore::new(1) }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.engine.snapshot(wall_ms())
    }

    /// A snapshot for the scores API and the page, with each window's steps when asked.
    pub(crate) fn snapshot_for_people(&self, with_steps: bool) -> Snapshot {
        if with_steps {
            self.engine.snapshot_with_steps(wall_ms())
        } else {
            self.engine.snapshot(wall_ms())
        }
    }

    /// Runs `build` off the async threads once it is this request's turn; 503 with
    /// `Retry-After` when the turn does not come within `BUILD_WAIT`.
    pub(crate) async fn build_for_people<T: Send + 'static>(
        &self,
        build: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Response> {
        self.build_within(BUILD_WAIT, build).await
    }

    async fn build_within<T: Send + 'static>(
        &self,
        wait: Duration,
        build: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Response> {
        let Ok(Ok(permit)) = tokio::time::timeout(wait, self.people_builds.acquire()).await else {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                "busy building another view; retry shortly\n",
            )
                .into_response());
        };
        let built = tokio::task::spawn_blocking(build).await;
        drop(permit);
        built.map_err(|e| {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("build failed: {e}\n")).into_response()
        })
    }
}

/// Now, in milliseconds since the Unix epoch (0 for a clock set before 1970).
pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxpulse_core::{Engine, EngineConfig};

    #[tokio::test]
    async fn builds_take_turns_and_waiting_is_bounded() {
        let engine = SharedEngine::new(Engine::new(EngineConfig::default()).unwrap());
        let state = HttpState::new(engine, Arc::default(), None, AlertPolicy::default(), "test");
        let held = state.people_builds.acquire().await.unwrap();
        let refused = state.build_within(Duration::from_millis(50), || 1).await;
        let status = refused.err().map(|response| response.status());
        assert_eq!(status, Some(StatusCode::SERVICE_UNAVAILABLE));
        drop(held);
        assert_eq!(state.build_within(Duration::from_millis(50), || 2).await.ok(), Some(2));
    }
}
