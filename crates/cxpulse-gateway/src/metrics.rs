//! The gateway's own metrics, served at its `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Every series name the gateway's `/metrics` can show, for checks of dashboards and rules.
pub const METRIC_NAMES: &[&str] = &[
    "cxpulse_gateway_requests_total",
    "cxpulse_gateway_events_total",
    "cxpulse_gateway_request_duration_seconds_bucket",
    "cxpulse_gateway_request_duration_seconds_sum",
    "cxpulse_gateway_request_duration_seconds_count",
];

#[derive(Clone)]
pub struct GatewayMetrics {
    pub registry: Registry,
    /// `{source, code}`: every request, by source (`events` for `/v1/events`, `unknown` for
    /// an unknown webhook name) and HTTP status.
    pub requests: IntCounterVec,
    /// `{source, outcome}`: events `accepted`, `rejected`, `ignored` (a delivery without a
    /// score) or `unavailable` (Kafka did not acknowledge; the sender retries).
    pub events: IntCounterVec,
    pub duration: HistogramVec,
}

impl GatewayMetrics {
    pub fn new() -> GatewayMetrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("cxpulse_gateway_requests_total", "Gateway requests by source and status"),
            &["source", "code"],
        )
        .expect("static metric definition");
        let events = IntCounterVec::new(
            Opts::new("cxpulse_gateway_events_total", "Gateway events by source and outcome"),
            &["source", "outcome"],
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "cxpulse_gateway_request_duration_seconds",
                "Gateway request time, Kafka acknowledgement included",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["source"],
        )
        .expect("static metric definition");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(events.clone()),
            Box::new(duration.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        GatewayMetrics { registry, requests, events, duration }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_listed_are_the_names_rendered() {
        let metrics = GatewayMetrics::new();
        metrics.requests.with_label_values(&["s", "200"]).inc();
        metrics.events.with_label_values(&["s", "accepted"]).inc();
        metrics.duration.with_label_values(&["s"]).observe(0.01);
        let text = metrics.render();
        let mut rendered: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        rendered.sort();
        rendered.dedup();
        let mut listed = METRIC_NAMES.to_vec();
        listed.sort();
        assert_eq!(rendered, listed);
    }
}
