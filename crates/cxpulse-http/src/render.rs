//! Prometheus text exposition of a snapshot. Windowed values are counts, never ratios, so that
//! sums over workers stay right; scores are Prometheus's recording rules' job.

use std::fmt::Write;

use cxpulse_core::alerts::AlertPolicy;
use cxpulse_core::customers::CustomerCounts;
use cxpulse_core::engine::OVERFLOW_LABEL;
use cxpulse_core::event::{Action, RejectReason};
use cxpulse_core::snapshot::{STATE_KINDS, SURVEY_CATEGORIES};
use cxpulse_core::Snapshot;
use prometheus::{Encoder, Registry, TextEncoder};

const NPS: [&str; 3] = ["promoter", "passive", "detractor"];
const CSAT: [&str; 2] = ["satisfied", "unsatisfied"];
const CES: [&str; 2] = ["easy", "not_easy"];
const CHURN_CATEGORIES: [&str; 4] = ["promoter", "passive", "detractor", "unknown"];

/// Names of every metric `/metrics` can show; tests and the dashboard check use it.
pub const METRIC_NAMES: &[&str] = &[
    "cxpulse_nps_responses",
    "cxpulse_csat_responses",
    "cxpulse_ces_responses",
    "cxpulse_ces_score_sum",
    "cxpulse_customer_events",
    "cxpulse_customers_active_at_window_start",
    "cxpulse_purchasers",
    "cxpulse_repeat_purchasers",
    "cxpulse_nps_respondents",
    "cxpulse_churned_by_nps",
    "cxpulse_survey_responses_total",
    "cxpulse_customers_active",
    "cxpulse_nps_alert_threshold",
    "cxpulse_nps_alert_min_responses",
    "cxpulse_churn_alert_threshold",
    "cxpulse_nps_drop_evidence",
    "cxpulse_alert_silence_min_rate",
    "cxpulse_events_consumed_total",
    "cxpulse_events_rejected_total",
    "cxpulse_events_duplicate_total",
    "cxpulse_events_counted_total",
    "cxpulse_corrections_total",
    "cxpulse_corrections_unmatched_total",
    "cxpulse_state_bytes",
    "cxpulse_state_entries",
    "cxpulse_state_horizon_seconds",
    "cxpulse_state_evictions_total",
    "cxpulse_checkpoint_bytes_total",
    "cxpulse_checkpoint_duration_seconds",
    "cxpulse_checkpoints_unusable_total",
    "cxpulse_series_overflow_total",
    "cxpulse_dead_letters_total",
    "cxpulse_dead_letter_retries_total",
    "cxpulse_feed_messages_total",
    "cxpulse_feed_failures_total",
    "cxpulse_consumer_lag",
    "cxpulse_partitions_assigned",
    "cxpulse_partitions_restoring",
    "cxpulse_last_event_timestamp_seconds",
    "cxpulse_event_age_seconds",
    "cxpulse_series",
    "cxpulse_build_info",
    "cxpulse_rebalances_total",
    "cxpulse_checkpoints_total",
    "cxpulse_partition_restores_total",
    "cxpulse_topic_partitions",
    "cxpulse_topic_config_warnings",
];

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders the snapshot, the alert settings and the worker's registry as Prometheus text.
pub fn render_metrics(
    snapshot: &Snapshot,
    policy: &AlertPolicy,
    registry: Option<&Registry>,
    version: &str,
) -> String {
    let mut out =
        String::with_capacity(256 + snapshot.series.len() * snapshot.windows.len() * 1_200);
    render_windows(&mut out, snapshot);
    render_series_gauges(&mut out, snapshot, policy);
    render_pipeline(&mut out, snapshot, version);
    if let Some(registry) = registry {
        let mut buffer = Vec::new();
        if TextEncoder::new().encode(&registry.gather(), &mut buffer).is_ok() {
            out.push_str(&String::from_utf8_lossy(&buffer));
        }
    }
    out
}

fn render_windows(out: &mut String, snapshot: &Snapshot) {
    // The label set of each (series, window), built once and shared by every family: at 10k
    // pairs this is the bulk of the exposition, so it is written with plain pushes.
    let labels: Vec<String> = snapshot
        .series
        .iter()
        .flat_map(|series| {
            snapshot.windows.iter().map(move |window| {
                format!(
                    r#"brand="{}",segment="{}",window="{}""#,
                    series.brand, series.segment, window.name
                )
            })
        })
        .collect();
    let windows = snapshot.windows.len();
    let actions: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
    type Pick = fn(&cxpulse_core::Counts) -> &[u32];
    let families: [(&str, &str, &str, &[&str], Pick); 4] = [
        (
            "cxpulse_nps_responses",
            "NPS answers in the window by category.",
            "category",
            &NPS,
            |c| &c.nps,
        ),
        (
            "cxpulse_csat_responses",
            "CSAT answers in the window by top-2-box outcome.",
            "outcome",
            &CSAT,
            |c| &c.csat,
        ),
        (
            "cxpulse_ces_responses",
            "CES answers in the window by outcome (easy = 5-7).",
            "outcome",
            &CES,
            |c| &c.ces,
        ),
        (
            "cxpulse_customer_events",
            "Customer lifecycle events in the window by action.",
            "action",
            &[],
            |c| &c.actions,
        ),
    ];
    let mut number = itoa::Buffer::new();
    for (index, (name, help, label, values, pick)) in families.iter().enumerate() {
        let values: &[&str] = if index == 3 { &actions } else { values };
        header(out, name, "gauge", help);
        for (s, series) in snapshot.series.iter().enumerate() {
            for (w, counts) in series.windows.iter().enumerate() {
                let series_labels = &labels[s * windows + w];
                for (value, count) in values.iter().zip(pick(counts)) {
                    push_sample(out, name, series_labels, Some((label, value)), *count);
                }
            }
        }
    }
    render_customers(out, snapshot, &labels);
    header(out, "cxpulse_ces_score_sum", "gauge", "Sum of CES scores in the window, for the mean.");
    for (s, series) in snapshot.series.iter().enumerate() {
        for (w, counts) in series.windows.iter().enumerate() {
            out.push_str("cxpulse_ces_score_sum{");
            out.push_str(&labels[s * windows + w]);
            out.push_str("} ");
            out.push_str(number.format(counts.ces_score_sum));
            out.push('\n');
        }
    }
    header(
        out,
        "cxpulse_customers_active_at_window_start",
        "gauge",
        "Active customers at the window's start (needs a customer_base event).",
    );
    for series in &snapshot.series {
        for (window, active) in snapshot.windows.iter().zip(&series.active_at_start) {
            if let Some((value, true)) = active {
                let _ = writeln!(
                    out,
                    r#"cxpulse_customers_active_at_window_start{{brand="{}",segment="{}",window="{}"}} {value}"#,
                    series.brand, series.segment, window.name
                );
            }
        }
    }
}

/// The distinct-customer gauges, for the series that have any customer in some window (the
/// others would only add zeros to every scrape).
fn render_customers(out: &mut String, snapshot: &Snapshot, labels: &[String]) {
    type Pick = fn(&CustomerCounts) -> &[u32];
    // A family without a label of its own has "" for it.
    let families: [(&str, &str, &str, &[&str], Pick); 4] = [
        (
            "cxpulse_purchasers",
            "Distinct customers with at least one purchase in the window.",
            "",
            &[""],
            |c| std::slice::from_ref(&c.purchasers),
        ),
        (
            "cxpulse_repeat_purchasers",
            "Distinct customers with at least two purchases in the window.",
            "",
            &[""],
            |c| std::slice::from_ref(&c.repeat_purchasers),
        ),
        (
            "cxpulse_nps_respondents",
            "Distinct customers whose latest NPS answer is in the window, by its category.",
            "category",
            &NPS,
            |c| &c.nps_respondents,
        ),
        (
            "cxpulse_churned_by_nps",
            "Churns in the window by the customer's latest NPS answer at or before the churn.",
            "category",
            &CHURN_CATEGORIES,
            |c| &c.churned_by_nps,
        ),
    ];
    let windows = snapshot.windows.len();
    let active: Vec<usize> = (0..snapshot.series.len())
        .filter(|&s| snapshot.series[s].customers.iter().any(|c| *c != CustomerCounts::default()))
        .collect();
    for (name, help, label, values, pick) in families {
        header(out, name, "gauge", help);
        for &s in &active {
            for (w, counts) in snapshot.series[s].customers.iter().enumerate() {
                for (value, count) in values.iter().zip(pick(counts)) {
                    let extra = (!label.is_empty()).then_some((label, *value));
                    push_sample(out, name, &labels[s * windows + w], extra, *count);
                }
            }
        }
    }
}

/// One sample line: `name{series_labels[,label="value"]} count`, with plain pushes (the bulk of
/// a large exposition).
fn push_sample(
    out: &mut String,
    name: &str,
    series_labels: &str,
    extra: Option<(&str, &str)>,
    count: u32,
) {
    out.push_str(name);
    out.push('{');
    out.push_str(series_labels);
    if let Some((label, value)) = extra {
        out.push(',');
        out.push_str(label);
        out.push_str("=\"");
        out.push_str(value);
        out.push('"');
    }
    out.push_str("} ");
    out.push_str(itoa::Buffer::new().format(count));
    out.push('\n');
}

fn render_series_gauges(out: &mut String, snapshot: &Snapshot, policy: &AlertPolicy) {
    header(
        out,
        "cxpulse_survey_responses_total",
        "counter",
        "Survey answers accepted since start.",
    );
    for series in &snapshot.series {
        for ((survey, category), total) in SURVEY_CATEGORIES.iter().zip(series.survey_totals) {
            let _ = writeln!(
                out,
                r#"cxpulse_survey_responses_total{{brand="{}",segment="{}",survey="{survey}",category="{category}"}} {total}"#,
                series.brand, series.segment
            );
        }
    }
    header(
        out,
        "cxpulse_nps_drop_evidence",
        "gauge",
        "Sequential evidence that the NPS dropped; the alert fires at 1 (docs/alerting.md).",
    );
    for series in &snapshot.series {
        let _ = writeln!(
            out,
            r#"cxpulse_nps_drop_evidence{{brand="{}",segment="{}"}} {}"#,
            series.brand,
            series.segment,
            (series.nps_drop_evidence * 1000.0).round() / 1000.0
        );
    }
    header(
        out,
        "cxpulse_alert_silence_min_rate",
        "gauge",
        "Answers an hour (7-day average) from which a silent brand alerts (config).",
    );
    let _ = writeln!(out, "cxpulse_alert_silence_min_rate {}", policy.silence_min_rate);
    header(
        out,
        "cxpulse_customers_active",
        "gauge",
        "Active customers now (customer_base plus lifecycle moves).",
    );
    for series in &snapshot.series {
        if let Some((value, true)) = series.active_now {
            let _ = writeln!(
                out,
                r#"cxpulse_customers_active{{brand="{}",segment="{}"}} {value}"#,
                series.brand, series.segment
            );
        }
    }
    let series: Vec<_> = snapshot.series.iter().filter(|s| &*s.brand != OVERFLOW_LABEL).collect();
    let setting = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&str, &str) -> f64| {
        header(out, name, "gauge", help);
        for s in &series {
            let _ = writeln!(
                out,
                r#"{name}{{brand="{}",segment="{}"}} {}"#,
                s.brand,
                s.segment,
                value(&s.brand, &s.segment)
            );
        }
    };
    setting(
        out,
        "cxpulse_nps_alert_threshold",
        "NPS below which the brand/segment alerts (config).",
        &|brand, segment| policy.for_series(brand, segment).0,
    );
    setting(
        out,
        "cxpulse_nps_alert_min_responses",
        "Fewest NPS answers in a window for the alert to judge (config).",
        &|brand, segment| policy.for_series(brand, segment).1 as f64,
    );
    setting(
        out,
        "cxpulse_churn_alert_threshold",
        "Churn share over 30 days above which the brand/segment alerts (config).",
        &|brand, segment| policy.churn_threshold_for(brand, segment),
    );
}

fn render_pipeline(out: &mut String, snapshot: &Snapshot, version: &str) {
    let p = &snapshot.pipeline;
    header(
        out,
        "cxpulse_events_rejected_total",
        "counter",
        "Messages rejected, by reason; each is dead-lettered.",
    );
    for reason in RejectReason::ALL {
        let _ = writeln!(
            out,
            r#"cxpulse_events_rejected_total{{reason="{}"}} {}"#,
            reason.as_str(),
            p.rejected[reason.index()]
        );
    }
    let counters = [
        (
            "cxpulse_events_duplicate_total",
            "Repeated event_ids within the dedup horizon, counted once.",
            p.duplicates,
        ),
        ("cxpulse_events_counted_total", "Events accepted into the windows.", p.counted),
        (
            "cxpulse_corrections_total",
            "Survey answers replaced by a later answer with the same response_id.",
            p.corrections,
        ),
        (
            "cxpulse_corrections_unmatched_total",
            "Answers with a response_id not remembered, older than the correction horizon: corrections whose original may have been forgotten, counted as new answers.",
            p.corrections_unmatched,
        ),
        (
            "cxpulse_series_overflow_total",
            "Events of brand/segment pairs beyond max_series, counted under __overflow__.",
            p.series_overflow,
        ),
    ];
    for (name, help, value) in counters {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    render_state(out, &snapshot.state);
    if let Some(last) = p.last_event_ms {
        header(
            out,
            "cxpulse_last_event_timestamp_seconds",
            "gauge",
            "Newest occurred_at among accepted events.",
        );
        let _ = writeln!(out, "cxpulse_last_event_timestamp_seconds {}", last as f64 / 1000.0);
    }
    header(
        out,
        "cxpulse_event_age_seconds",
        "summary",
        "Processing time minus occurred_at, over the last minute or two.",
    );
    for (quantile, ms) in &snapshot.event_age_quantiles_ms {
        let _ = writeln!(
            out,
            r#"cxpulse_event_age_seconds{{quantile="{quantile}"}} {}"#,
            *ms as f64 / 1000.0
        );
    }
    let _ = writeln!(
        out,
        "cxpulse_event_age_seconds_sum {}",
        snapshot.event_age_sum_ms as f64 / 1000.0
    );
    let _ = writeln!(out, "cxpulse_event_age_seconds_count {}", snapshot.event_age_count);
    header(out, "cxpulse_series", "gauge", "Brand/segment pairs held (overflow included).");
    let _ = writeln!(out, "cxpulse_series {}", snapshot.series.len());
    header(out, "cxpulse_build_info", "gauge", "Build information.");
    let _ = writeln!(out, r#"cxpulse_build_info{{version="{version}"}} 1"#);
}

/// What the worker remembers, by kind: size, entries, the horizon kept, early evictions.
fn render_state(out: &mut String, state: &cxpulse_core::StateStats) {
    let seconds = state.horizon_ms.map(|ms| (ms as f64 / 1000.0).to_string());
    let show = |values: &[u64; 4]| values.map(|v| v.to_string());
    let families = [
        (
            "cxpulse_state_bytes",
            "gauge",
            "Memory held by remembered state, every table slot counted.",
            show(&state.bytes),
        ),
        (
            "cxpulse_state_entries",
            "gauge",
            "Remembered event ids (dedup), correctable answers (answers), series windows per partition (windows) and customers of a series (customers).",
            show(&state.entries),
        ),
        (
            "cxpulse_state_horizon_seconds",
            "gauge",
            "How far back state is kept: the configured horizon, less when the memory budget forgot the oldest early.",
            seconds,
        ),
        (
            "cxpulse_state_evictions_total",
            "counter",
            "Entries forgotten early to keep state within state_memory.",
            show(&state.evictions),
        ),
    ];
    for (name, kind, help, values) in families {
        header(out, name, kind, help);
        for (label, value) in STATE_KINDS.iter().zip(values) {
            let _ = writeln!(out, r#"{name}{{kind="{label}"}} {value}"#);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxpulse_core::alerts::AlertOverride;
    use cxpulse_core::{ClockMode, Engine, EngineConfig, SourcePartition};

    #[test]
    fn renders_counts_thresholds_and_pipeline_from_a_snapshot() {
        let config = EngineConfig { clock: ClockMode::Event, ..EngineConfig::default() };
        let mut engine = Engine::new(config).unwrap();
        let p = SourcePartition { topic: 0, partition: 0 };
        let at = 1_795_428_000_000i64;
        engine.process(p, format!(r#"{{"event_id":"a","type":"survey_response","occurred_at":{at},"brand":"acme","segment":"smb","survey":"nps","score":10}}"#).as_bytes(), at);
        engine.process(p, format!(r#"{{"event_id":"b","type":"customer_base","occurred_at":{at},"brand":"acme","segment":"smb","active_customers":5}}"#).as_bytes(), at);
        engine.process(p, b"nope", at);
        for (id, action, customer) in
            [("c", "purchase", "ann"), ("d", "purchase", "ann"), ("e", "churn", "bob")]
        {
            let json = format!(
                r#"{{"event_id":"{id}","type":"customer_lifecycle","occurred_at":{at},"brand":"acme","segment":"smb","action":"{action}","customer_id":"{customer}"}}"#
            );
            engine.process(p, json.as_bytes(), at);
        }
        engine.process(p, format!(r#"{{"event_id":"f","type":"survey_response","occurred_at":{at},"brand":"quiet","survey":"csat","score":"5"}}"#).as_bytes(), at);
        let policy = AlertPolicy {
            overrides: vec![AlertOverride {
                brand: "acme".into(),
                segment: None,
                nps_threshold: Some(25.0),
                min_responses: None,
                churn_threshold: Some(0.02),
            }],
            ..AlertPolicy::default()
        };
        let text = render_metrics(&engine.snapshot(at), &policy, None, "9.9.9");
        for line in [
            r#"cxpulse_nps_responses{brand="acme",segment="smb",window="1h",category="promoter"} 1"#,
            r#"cxpulse_nps_responses{brand="acme",segment="smb",window="30d",category="detractor"} 0"#,
            r#"cxpulse_customers_active{brand="acme",segment="smb"} 4"#,
            r#"cxpulse_customers_active_at_window_start{brand="acme",segment="smb",window="24h"} 5"#,
            r#"cxpulse_nps_alert_threshold{brand="acme",segment="smb"} 25"#,
            r#"cxpulse_nps_alert_min_responses{brand="acme",segment="smb"} 30"#,
            r#"cxpulse_churn_alert_threshold{brand="acme",segment="smb"} 0.02"#,
            r#"cxpulse_survey_responses_total{brand="acme",segment="smb",survey="nps",category="promoter"} 1"#,
            r#"cxpulse_events_rejected_total{reason="invalid_json"} 1"#,
            "cxpulse_events_counted_total 6",
            "cxpulse_series 2",
            r#"cxpulse_purchasers{brand="acme",segment="smb",window="1h"} 1"#,
            r#"cxpulse_repeat_purchasers{brand="acme",segment="smb",window="30d"} 1"#,
            r#"cxpulse_nps_respondents{brand="acme",segment="smb",window="24h",category="promoter"} 0"#,
            r#"cxpulse_churned_by_nps{brand="acme",segment="smb",window="7d",category="unknown"} 1"#,
            r#"cxpulse_state_entries{kind="customers"} 1"#,
            r#"cxpulse_build_info{version="9.9.9"} 1"#,
            r#"cxpulse_state_entries{kind="dedup"} 6"#,
            r#"cxpulse_state_entries{kind="answers"} 0"#,
            r#"cxpulse_state_entries{kind="windows"} 2"#,
            r#"cxpulse_state_horizon_seconds{kind="dedup"} 86400"#,
            r#"cxpulse_state_evictions_total{kind="dedup"} 0"#,
            "cxpulse_corrections_unmatched_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        // A series without customers adds no zeros to the customer families.
        assert!(!text.contains(r#"cxpulse_purchasers{brand="quiet""#), "{text}");
        // Every sample line belongs to a family announced with # TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(
                text.contains(&format!("# TYPE {family} "))
                    || text.contains(&format!("# TYPE {name} ")),
                "{line}"
            );
            assert!(
                METRIC_NAMES.contains(&family) || METRIC_NAMES.contains(&name),
                "{name} not in METRIC_NAMES"
            );
        }
    }
}
