//! The live page at `/`: server-rendered HTML with inline SVG, its stylesheet and a small refresh
//! script embedded in the binary (nothing fetched from elsewhere). One window at a time (`?window=`),
//! one row per brand/segment; the script swaps in a fresh render every 10 s.
//!
//! With `[http] bearer_token` set, the page asks the browser for HTTP Basic credentials (any user
//! name, the token as password) and also takes `Authorization: Bearer`; the browser then resends
//! the credentials on each refresh by itself.

mod html;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cxpulse_core::Snapshot;

use crate::security::BearerToken;
use crate::state::{wall_ms, HttpState};

pub use html::{render_page, HealthFigures, PageView, MAX_ROWS};

/// Rates on the health strip cover about the last minute of page loads.
const RATE_SPAN_MS: i64 = 60_000;

pub struct PageState {
    http: Arc<HttpState>,
    token: BearerToken,
    rates: Mutex<RateTracker>,
}

/// `(wall_ms, consumed, rejected)` at recent renders, seeded at startup so that the first view
/// already shows an average.
#[derive(Default)]
struct RateTracker {
    samples: VecDeque<(i64, u64, u64)>,
}

impl RateTracker {
    /// Records a sample and returns `(events/s, rejects/s)` since the oldest kept one.
    fn record(&mut self, now_ms: i64, consumed: u64, rejected: u64) -> Option<(f64, f64)> {
        self.samples.push_back((now_ms, consumed, rejected));
        while self.samples.len() > 2 && now_ms - self.samples[1].0 >= RATE_SPAN_MS {
            self.samples.pop_front();
        }
        let &(then, consumed_then, rejected_then) = self.samples.front()?;
        let seconds = (now_ms - then) as f64 / 1000.0;
        (seconds >= 1.0).then(|| {
            (
                consumed.saturating_sub(consumed_then) as f64 / seconds,
                rejected.saturating_sub(rejected_then) as f64 / seconds,
            )
        })
    }
}

pub fn router(http: Arc<HttpState>, token: BearerToken) -> Router {
    let mut rates = RateTracker::default();
    let pipeline = http.engine.pipeline();
    rates.record(wall_ms(), pipeline.consumed, pipeline.rejected.iter().sum());
    let state = Arc::new(PageState { http, token, rates: Mutex::new(rates) });
    Router::new().route("/", get(handler)).with_state(state)
}

async fn handler(State(page): State<Arc<PageState>>, headers: HeaderMap, uri: Uri) -> Response {
    if !authorized(&headers, &page.token) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, r#"Basic realm="cxpulse", charset="UTF-8""#)],
            "unauthorized: user name anything, password the [http] bearer token\n",
        )
            .into_response();
    }
    let window = uri.query().and_then(|q| {
        q.split('&').find_map(|pair| pair.strip_prefix("window=")).map(str::to_string)
    });
    let http = page.http.clone();
    let rendered = http
        .build_for_people(move || {
            let now = wall_ms();
            let snapshot = page.http.snapshot_for_people(true);
            let health = health_figures(&page, &snapshot, now);
            let window = window
                .and_then(|name| snapshot.windows.iter().position(|w| w.name == name))
                .unwrap_or(0);
            let view = PageView {
                policy: &page.http.policy,
                window,
                now_ms: now,
                version: page.http.version,
                health,
            };
            render_page(&snapshot, &view)
        })
        .await;
    match rendered {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_SECURITY_POLICY, "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:"),
            ],
            html,
        )
            .into_response(),
        Err(response) => response,
    }
}

/// `Authorization: Bearer <token>`, or `Basic` with the token as password (browsers' own login).
fn authorized(headers: &HeaderMap, token: &BearerToken) -> bool {
    let value = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if token.admits(value) {
        return true;
    }
    let Some(basic) = value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, credentials)| base64_decode(credentials.trim()))
    else {
        return false;
    };
    match basic.iter().position(|&b| b == b':') {
        Some(colon) => token.matches(&basic[colon + 1..]),
        None => false,
    }
}

/// Standard base64 (RFC 4648) as browsers send Basic credentials, decoded by the OpenSSL the
/// TLS listener already links; `None` when it is not base64.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    openssl::base64::decode_block(text).ok()
}

fn health_figures(page: &PageState, snapshot: &Snapshot, now: i64) -> HealthFigures {
    let rejected: u64 = snapshot.pipeline.rejected.iter().sum();
    let rates = page.rates.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).record(
        now,
        snapshot.pipeline.consumed,
        rejected,
    );
    let (mut consumer_lag, mut dead_letters) = (None, None);
    if let Some(registry) = &page.http.registry {
        for family in registry.gather() {
            match family.name() {
                "cxpulse_consumer_lag" => {
                    let lag = family.get_metric().iter().map(|m| m.get_gauge().get_value());
                    consumer_lag = Some(lag.sum::<f64>() as i64);
                }
                "cxpulse_dead_letters_total" => {
                    let total = family.get_metric().iter().map(|m| m.get_counter().get_value());
                    dead_letters = Some(total.sum::<f64>() as u64);
                }
                _ => {}
            }
        }
    }
    let health = &page.http.health;
    HealthFigures {
        events_per_s: rates.map(|r| r.0),
        rejects_per_s: rates.map(|r| r.1),
        consumer_lag,
        dead_letters,
        ready: health.is_ready(now),
        partitions_assigned: health.assigned(),
        partitions_restoring: health.restoring(),
    }
}

#[cfg(test)]
mod tests;
