//! The routes: `/v1/events`, `/v1/webhooks/{name}`, `/metrics`, `/healthz`, `/readyz`. Every
//! event, posted or mapped, goes through the worker's parser ([`cxpulse_core::parse::parse_event`]);
//! the reply comes after Kafka acknowledged what the request produced.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cxpulse_core::event::{RejectReason, Rejection};
use cxpulse_core::parse::parse_event;
use serde_json::{json, Value};
use tracing::warn;

use crate::auth;
use crate::config::{GatewaySettings, SourceSpec};
use crate::kafka::{Record, Sink};
use crate::kinds;
use crate::mapping::{event_json, Mapped};
use crate::metrics::GatewayMetrics;

/// Everything a request needs; one per process.
pub struct Gateway {
    pub settings: GatewaySettings,
    pub sink: Sink,
    pub metrics: GatewayMetrics,
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    let limit = gateway.settings.max_body_bytes;
    // The token is checked before the body is read: a stranger cannot make us buffer it.
    let events_route = post(events)
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), events_token));
    Router::new()
        .route("/v1/events", events_route)
        .route(
            "/v1/webhooks/{name}",
            post(webhook)
                .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), webhook_gate)),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(gateway)
}

/// The `source` label of `/v1/events`.
const EVENTS_SOURCE: &str = "events";

/// One rejected item of a request, as the reply lists it.
struct Rejected {
    index: usize,
    rejection: Rejection,
}

/// What a request comes to before Kafka is asked.
#[derive(Default)]
struct Outcome {
    records: Vec<Record>,
    accepted: usize,
    rejected: Vec<Rejected>,
}

impl Outcome {
    /// Validates `payload` with the worker's parser: a keyed event, or a dead letter.
    fn add(&mut self, index: usize, payload: Vec<u8>, source: &str) {
        match parse_event(&payload) {
            Ok(event) => {
                let key = format!("{}/{}", event.brand, event.segment);
                self.accepted += 1;
                self.records.push(Record::Event { key, payload });
            }
            Err(rejection) => self.reject(index, payload, rejection, source),
        }
    }

    fn reject(&mut self, index: usize, payload: Vec<u8>, rejection: Rejection, source: &str) {
        self.records.push(Record::DeadLetter {
            payload,
            reason: rejection.reason.as_str(),
            detail: rejection.detail.clone(),
            source: source.to_string(),
        });
        self.rejected.push(Rejected { index, rejection });
    }
}

async fn events(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = events_inner(&gateway, body).await;
    gateway.finish(EVENTS_SOURCE, started, response)
}

/// `/v1/events` needs the gateway's token, when one is set.
async fn events_token(
    State(gateway): State<Arc<Gateway>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    if let Some(token) = &gateway.settings.token {
        let authorization = header_str(request.headers(), header::AUTHORIZATION);
        if !auth::token_matches(authorization, request.uri().query(), token.expose()) {
            return gateway.finish(EVENTS_SOURCE, started, unauthorized());
        }
    }
    next.run(request).await
}

/// An unknown source, or a wrong token, is answered before the body is read; a signature needs
/// the body, so signed sources are checked in the handler.
async fn webhook_gate(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let Some(source) = gateway.settings.source(&name) else {
        let response = (StatusCode::NOT_FOUND, "unknown source\n").into_response();
        return gateway.finish("unknown", started, response);
    };
    let query = request.uri().query();
    if source.secret.is_none() && !auth::source_authorized(source, request.headers(), query, b"") {
        return gateway.finish(&source.name, started, unauthorized());
    }
    next.run(request).await
}

async fn events_inner(gateway: &Gateway, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let mut outcome = Outcome::default();
    for (index, item) in split_items(&body).into_iter().enumerate() {
        outcome.add(index, item.to_vec(), EVENTS_SOURCE);
    }
    gateway.deliver(EVENTS_SOURCE, outcome).await
}

async fn webhook(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let Some(source) = gateway.settings.source(&name) else {
        let response = (StatusCode::NOT_FOUND, "unknown source\n").into_response();
        return gateway.finish("unknown", started, response);
    };
    let response = webhook_inner(&gateway, source, &headers, query.as_deref(), body).await;
    gateway.finish(&source.name, started, response)
}

async fn webhook_inner(
    gateway: &Gateway,
    source: &SourceSpec,
    headers: &HeaderMap,
    query: Option<&str>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return rejection.into_response(),
    };
    let authorized = auth::source_authorized(source, headers, query, &body);
    if !authorized {
        return unauthorized();
    }
    let mut outcome = Outcome::default();
    let payload = match parse_body(headers, &body) {
        Ok(payload) => payload,
        Err(rejection) => {
            outcome.reject(0, body.to_vec(), rejection, &source.name);
            return gateway.deliver(&source.name, outcome).await;
        }
    };
    match kinds::map(source.kind, &payload, source) {
        Ok(Mapped::Answers(answers)) => {
            for (index, answer) in answers.iter().enumerate() {
                outcome.add(index, event_json(answer, source, &payload), &source.name);
            }
        }
        Ok(Mapped::Ignored(why)) => {
            gateway.metrics.events.with_label_values(&[&source.name, "ignored"]).inc();
            return (StatusCode::OK, Json(json!({ "ignored": why }))).into_response();
        }
        Err(rejection) => outcome.reject(0, body.to_vec(), rejection, &source.name),
    }
    gateway.deliver(&source.name, outcome).await
}

impl Gateway {
    /// Asks Kafka to take the request's records; 200 with the tally once it has, 503 if not.
    async fn deliver(&self, source: &str, outcome: Outcome) -> Response {
        let items = outcome.accepted + outcome.rejected.len();
        if let Err(unavailable) = self.sink.deliver(&outcome.records).await {
            warn!(source, error = %unavailable.0, "Kafka did not acknowledge; answering 503");
            self.metrics.events.with_label_values(&[source, "unavailable"]).inc_by(items as u64);
            let retry_after = self.settings.retry_after_seconds.to_string();
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, retry_after)],
                Json(json!({ "error": "Kafka is unavailable; retry later" })),
            )
                .into_response();
        }
        let events = &self.metrics.events;
        events.with_label_values(&[source, "accepted"]).inc_by(outcome.accepted as u64);
        events.with_label_values(&[source, "rejected"]).inc_by(outcome.rejected.len() as u64);
        let rejected: Vec<Value> = outcome
            .rejected
            .iter()
            .map(|r| {
                json!({
                    "index": r.index,
                    "reason": r.rejection.reason.as_str(),
                    "detail": r.rejection.detail,
                })
            })
            .collect();
        Json(json!({ "accepted": outcome.accepted, "rejected": rejected })).into_response()
    }

    fn finish(&self, source: &str, started: Instant, response: Response) -> Response {
        let code = response.status().as_u16().to_string();
        self.metrics.requests.with_label_values(&[source, &code]).inc();
        self.metrics.duration.with_label_values(&[source]).observe(started.elapsed().as_secs_f64());
        response
    }
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], gateway.metrics.render())
        .into_response()
}

/// Alive unless the producer failed for good, which only a restart mends.
async fn health(State(gateway): State<Arc<Gateway>>) -> Response {
    match gateway.sink.fatal_error() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(error) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("Kafka producer failed: {error}\n"))
                .into_response()
        }
    }
}

async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    let probe = gateway.clone();
    match tokio::task::spawn_blocking(move || probe.sink.reachable()).await {
        Ok(true) => (StatusCode::OK, "ready\n").into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "Kafka unreachable\n").into_response(),
    }
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n")
        .into_response()
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A webhook body as JSON: parsed as JSON, or as a form when the tool sends one.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Rejection> {
    let form = header_str(headers, header::CONTENT_TYPE)
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if form {
        let text = std::str::from_utf8(body)
            .map_err(|_| Rejection::new(RejectReason::InvalidJson, "form body is not UTF-8"))?;
        return Ok(crate::form::parse_form(text));
    }
    serde_json::from_slice(body)
        .map_err(|e| Rejection::new(RejectReason::InvalidJson, format!("webhook body: {e}")))
}

/// A `/v1/events` body as items: one JSON object, a JSON array, or NDJSON (one per line). A body
/// that is none of these is one item, for the parser to reject.
pub fn split_items(body: &[u8]) -> Vec<&[u8]> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() {
        return Vec::new();
    }
    if trimmed.starts_with(b"[") {
        return match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(trimmed) {
            Ok(items) => items.into_iter().map(|raw| raw.get().as_bytes()).collect(),
            Err(_) => vec![trimmed],
        };
    }
    if serde_json::from_slice::<&serde_json::value::RawValue>(trimmed).is_ok() {
        return vec![trimmed];
    }
    trimmed.split(|b| *b == b'\n').map(<[u8]>::trim_ascii).filter(|l| !l.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::split_items;

    #[test]
    fn objects_arrays_and_ndjson() {
        assert_eq!(split_items(b" {\"a\":\n 1} "), vec![&b"{\"a\":\n 1}"[..]]);
        assert_eq!(split_items(b"[{\"a\":1}, {\"b\":2}]"), vec![&b"{\"a\":1}"[..], b"{\"b\":2}"]);
        assert_eq!(
            split_items(b"{\"a\":1}\n\n{\"b\":2}\r\n"),
            vec![&b"{\"a\":1}"[..], b"{\"b\":2}"]
        );
        assert_eq!(split_items(b"[1,"), vec![&b"[1,"[..]]);
        assert!(split_items(b" \n").is_empty());
    }
}
