//! Checks of everything under `deploy/` plus `docker-compose.yml` and `Dockerfile`:
//! the Prometheus rules (promtool check + promtool unit tests), the Prometheus and
//! Alertmanager configs, the Grafana dashboard's queries, the Kubernetes
//! PrometheusRule against the rule files, the runbook, and the compose mounts.
//!
//! Needs `promtool` and `amtool` on PATH (Debian: `apt-get install -y prometheus
//! prometheus-alertmanager`). Without them these tests fail; they never skip.
//!
//! The repository root is `CXPULSE_REPO_ROOT` if set, else this package's root.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const INSTALL_HINT: &str =
    "install it with `apt-get update && apt-get install -y prometheus prometheus-alertmanager` \
     (Debian packages providing promtool and amtool)";

/// Metric names of the documented contract (docs/metrics.md) that dashboards may read directly.
const CONTRACT_METRICS: &[&str] = &[
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
    "cxpulse_events_consumed_total",
    "cxpulse_events_rejected_total",
    "cxpulse_events_duplicate_total",
    "cxpulse_series_overflow_total",
    "cxpulse_dead_letters_total",
    "cxpulse_consumer_lag",
    "cxpulse_partitions_assigned",
    "cxpulse_partitions_restoring",
    "cxpulse_last_event_timestamp_seconds",
    "cxpulse_event_age_seconds",
    "cxpulse_series",
    "cxpulse_build_info",
];

#[test]
fn the_exporter_renders_every_design_metric() {
    for name in CONTRACT_METRICS {
        assert!(
            cxpulse_http::render::METRIC_NAMES.contains(name),
            "{name} is documented but not rendered"
        );
    }
}

/// Recording rules the docs promise.
const CONTRACT_RULES: &[&str] = &[
    "cxpulse:nps_score",
    "cxpulse:nps_margin_of_error",
    "cxpulse:csat_ratio",
    "cxpulse:ces_mean",
    "cxpulse:churn_ratio",
    "cxpulse:retention_ratio",
    "cxpulse:repeat_purchase_ratio",
    "cxpulse:churn_ratio_by_nps",
];

const DASHBOARD_UID: &str = "cxpulse-overview";
const RULE_FILES: &[&str] = &["recording.yml", "alerts.yml"];

// ---------------------------------------------------------------- helpers

fn root() -> PathBuf {
    match std::env::var_os("CXPULSE_REPO_ROOT") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

fn path(rel: &str) -> PathBuf {
    root().join(rel)
}

fn read(rel: &str) -> String {
    let p = path(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Runs a tool, failing (never skipping) with an install hint when it is missing.
fn run(tool: &str, args: &[&str]) -> Output {
    match Command::new(tool).args(args).current_dir(root()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`{tool}` is not on PATH: {INSTALL_HINT}")
        }
        Err(e) => panic!("cannot run `{tool}`: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn files_with_ext(rel_dir: &str, exts: &[&str]) -> Vec<String> {
    let dir = path(rel_dir);
    let mut v: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| exts.iter().any(|x| n.ends_with(x)))
        .map(|n| format!("{rel_dir}/{n}"))
        .collect();
    v.sort();
    v
}

/// `- record: NAME` / `- alert: NAME` entries of a rule file, in order.
fn rule_names(src: &str, kind: &str) -> Vec<String> {
    let key = format!("- {kind}:");
    src.lines()
        .filter_map(|l| l.trim_start().strip_prefix(&key))
        .map(|n| n.trim().trim_matches('"').to_string())
        .collect()
}

fn recording_rules() -> BTreeSet<String> {
    RULE_FILES
        .iter()
        .flat_map(|f| rule_names(&read(&format!("deploy/prometheus/rules/{f}")), "record"))
        .collect()
}

/// Alert name -> the text of its rule (up to the next rule or group).
fn alert_blocks() -> Vec<(String, String)> {
    let src = read("deploy/prometheus/rules/alerts.yml");
    let mut blocks: Vec<(String, String)> = Vec::new();
    let mut open = false;
    for line in src.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            blocks.push((name.trim().to_string(), String::new()));
            open = true;
        } else if t.starts_with("- record:") || t.starts_with("- name:") {
            open = false;
        } else if open {
            let body = &mut blocks.last_mut().unwrap().1;
            body.push_str(line);
            body.push('\n');
        }
    }
    assert!(!blocks.is_empty(), "no `- alert:` found in alerts.yml");
    blocks
}

// ------------------------------------------------- PromQL metric-name extraction

const PROMQL_KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
];
/// Aggregation operators: like functions, but `sum by (x) (...)` puts the
/// label list between the name and the parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesised list of label names (not metrics).
const LABEL_LIST_KEYWORDS: &[&str] =
    &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// Names of the series an expression selects: every identifier that is not a
/// function, aggregation, keyword, label name, string, duration or number.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    // 1. blank out strings, {label matchers}, [ranges] and # comments
    let mut clean = String::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                clean.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                i += 1;
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' || chars[i] == '\'' {
                        let q = chars[i];
                        i += 1;
                        while i < chars.len() && chars[i] != q {
                            if chars[i] == '\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                clean.push(' ');
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            _ => clean.push(c),
        }
        i += 1;
    }
    // 2. tokens
    let c: Vec<char> = clean.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let next_non_space = |mut j: usize| {
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        j
    };
    while i < c.len() {
        let ch = c[i];
        if ch.is_ascii_digit() || (ch == '.' && i + 1 < c.len() && c[i + 1].is_ascii_digit()) {
            // number or duration (1e3, 0.5, 15m, 0x1f)
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.' || c[i] == '_') {
                i += 1;
            }
            continue;
        }
        if ch == '$' {
            // a Grafana variable outside a string: $__rate_interval, ${window}
            i += 1;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || "_{}:".contains(c[i])) {
                i += 1;
            }
            continue;
        }
        if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let j = next_non_space(i);
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                // skip `by (a, b)`; group_left may come without a list
                if j < c.len() && c[j] == '(' {
                    let mut k = j;
                    while k < c.len() && c[k] != ')' {
                        k += 1;
                    }
                    i = k + 1;
                }
                continue;
            }
            if PROMQL_KEYWORDS.contains(&lower.as_str()) || AGGREGATIONS.contains(&lower.as_str()) {
                continue;
            }
            if j < c.len() && c[j] == '(' {
                continue; // function or aggregation call
            }
            names.insert(word);
            continue;
        }
        i += 1;
    }
    names
}

/// What the exporter and the gateway render, plus recording rules and `up`.
fn allowed_metrics() -> BTreeSet<String> {
    let mut s: BTreeSet<String> =
        cxpulse_http::render::METRIC_NAMES.iter().map(|m| m.to_string()).collect();
    s.extend(recording_rules());
    s.extend(cxpulse_gateway::metrics::METRIC_NAMES.iter().map(|m| m.to_string()));
    s.insert("up".to_string());
    s
}

/// Every `expr` of every panel target (rows' nested panels included) and every
/// templating query, with where it was found.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    fn panels(v: &Value, out: &mut Vec<(String, String)>) {
        for p in v.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((format!("panel {title:?}"), e.to_string()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dash["panels"], &mut out);
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = match &var["query"] {
            Value::String(s) if var["type"] == "query" => Some(s.clone()),
            Value::Object(o) => o.get("query").and_then(|q| q.as_str()).map(String::from),
            _ => None,
        };
        // label_values(selector, label) and query_result(expr) hold PromQL;
        // label_values(label) holds none.
        let q = q.as_deref().map(str::trim).and_then(|q| {
            if let Some(inner) = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')) {
                inner.rfind(',').map(|comma| inner[..comma].trim().to_string())
            } else if let Some(inner) =
                q.strip_prefix("query_result(").and_then(|r| r.strip_suffix(')'))
            {
                Some(inner.to_string())
            } else {
                Some(q.to_string())
            }
        });
        if let Some(q) = q {
            out.push((format!("variable {}", var["name"]), q));
        }
    }
    out
}

/// The problems of a dashboard: a wrong uid, or queries using unknown metrics.
fn dashboard_problems(dash: &Value, allowed: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    if dash["uid"].as_str() != Some(DASHBOARD_UID) {
        problems.push(format!("uid is {} instead of {DASHBOARD_UID:?}", dash["uid"]));
    }
    let queries = dashboard_queries(dash);
    if queries.is_empty() {
        problems.push("no panel query found".into());
    }
    for (place, expr) in queries {
        for m in metric_names(&expr) {
            if !allowed.contains(&m) {
                problems.push(format!("{place}: unknown metric {m:?} in {expr:?}"));
            }
        }
    }
    problems
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/cxpulse.json"))
        .expect("deploy/grafana/dashboards/cxpulse.json is not valid JSON")
}

// ------------------------------------------------------------------ tests

#[test]
fn promtool_check_rules_passes_without_lint_warnings() {
    let files = files_with_ext("deploy/prometheus/rules", &[".yml", ".yaml"]);
    let mut expected = RULE_FILES.to_vec();
    expected.sort();
    assert_eq!(
        files.iter().map(|f| f.rsplit('/').next().unwrap()).collect::<Vec<_>>(),
        expected,
        "deploy/prometheus/rules holds exactly the rule files prometheus.yml, the tests and the \
         PrometheusRule use"
    );
    for f in &files {
        let out = run("promtool", &["check", "rules", "--lint=all", "--lint-fatal", f]);
        let t = text(&out);
        let lower = t.to_lowercase();
        assert!(out.status.success(), "promtool check rules {f} failed:\n{t}");
        for bad in ["warning", "lint", "failed", "duplicate"] {
            assert!(!lower.contains(bad), "promtool check rules {f} printed {bad:?}:\n{t}");
        }
        assert!(t.contains("SUCCESS"), "promtool check rules {f}: no SUCCESS in\n{t}");
    }
}

#[test]
fn promtool_unit_tests_pass() {
    let files = files_with_ext("deploy/prometheus/tests", &[".yml", ".yaml"]);
    assert!(files.len() >= 2, "expected promtool test files in deploy/prometheus/tests");
    for f in &files {
        let out = run("promtool", &["test", "rules", f]);
        let t = text(&out);
        assert!(
            out.status.success() && t.contains("SUCCESS"),
            "promtool test rules {f} failed:\n{t}"
        );
    }
}

#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for f in files_with_ext("deploy/prometheus/tests", &[".yml", ".yaml"]) {
        let src = read(&f);
        let lines: Vec<&str> = src.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if let Some(name) = l.trim_start().strip_prefix("- alertname:") {
                let exp = lines[i + 1..]
                    .iter()
                    .find(|l| l.trim_start().starts_with("exp_alerts:"))
                    .unwrap_or_else(|| panic!("{f}: no exp_alerts after alertname {name}"));
                let value = exp.trim_start()["exp_alerts:".len()..].trim();
                if value == "[]" {
                    quiet.insert(name.trim().to_string());
                } else {
                    firing.insert(name.trim().to_string());
                }
            }
        }
    }
    for (alert, _) in alert_blocks() {
        assert!(firing.contains(&alert), "no promtool test where {alert} fires");
        assert!(quiet.contains(&alert), "no promtool test where {alert} does not fire");
    }
}

#[test]
fn recording_rules_cover_the_contract() {
    let rules = recording_rules();
    for r in CONTRACT_RULES {
        assert!(rules.contains(*r), "recording rule {r} (docs/metrics.md) is missing");
    }
    // Every score sums over workers first.
    let src = read("deploy/prometheus/rules/recording.yml");
    for r in CONTRACT_RULES {
        let at = src.find(&format!("- record: {r}\n")).unwrap();
        let body = &src[at..];
        let end = body[1..].find("- record:").map(|e| e + 1).unwrap_or(body.len());
        // (A rule by category sums by it too: `sum by (brand, segment, window, category)`.)
        assert!(
            body[..end].contains("sum by (brand, segment, window"),
            "{r} does not sum by (brand, segment, window)"
        );
    }
}

#[test]
fn prometheus_config_is_valid() {
    let out = run("promtool", &["check", "config", "deploy/prometheus/prometheus.yml"]);
    let t = text(&out);
    assert!(out.status.success(), "promtool check config failed:\n{t}");
    assert!(!t.to_lowercase().contains("warning"), "promtool check config warned:\n{t}");
    let cfg = read("deploy/prometheus/prometheus.yml");
    assert!(
        cfg.contains("job_name: cxpulse"),
        "the scrape job must be named cxpulse (rules select job=\"cxpulse\")"
    );
    for f in RULE_FILES {
        assert!(cfg.contains(&format!("rules/{f}")), "prometheus.yml does not load rules/{f}");
    }
}

#[test]
fn alertmanager_config_is_valid_and_routes_by_severity() {
    let cfg = "deploy/alertmanager/alertmanager.yml";
    let out = run("amtool", &["check-config", cfg]);
    let t = text(&out);
    assert!(out.status.success() && t.contains("SUCCESS"), "amtool check-config failed:\n{t}");

    let route = |labels: &[&str]| {
        let mut args = vec!["config", "routes", "test", "--config.file", cfg];
        args.extend_from_slice(labels);
        let out = run("amtool", &args);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        route(&["alertname=CxpulseNpsBelowThreshold", "severity=critical", "brand=acme"]),
        "cxpulse-pager"
    );
    assert_eq!(route(&["alertname=CxpulseWorkerDown", "severity=warning"]), "cxpulse-team");
    // A brand's warning alerts (NPS drop, churn) go to the team together, apart from its page.
    for alert in ["CxpulseNpsDropDetected", "CxpulseChurnRateHigh", "CxpulseBrandFeedSilent"] {
        let name = format!("alertname={alert}");
        assert_eq!(route(&[&name, "severity=warning", "brand=acme"]), "cxpulse-team");
    }

    // Names in the routing/inhibition must be real alerts, or the inhibition silently breaks.
    let src = read(cfg);
    let alerts: BTreeSet<String> = alert_blocks().into_iter().map(|(n, _)| n).collect();
    let mut mentioned = BTreeSet::new();
    for word in src.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.starts_with("Cxpulse") {
            mentioned.insert(word.to_string());
        }
    }
    assert!(mentioned.contains("CxpulseNpsBelowThreshold"), "the NPS alerts are not inhibited");
    for m in &mentioned {
        assert!(alerts.contains(m), "alertmanager.yml names {m}, which alerts.yml does not define");
    }
    assert!(src.contains("group_by: [\"brand\", \"segment\"]"), "group by brand and segment");
}

#[test]
fn every_alert_has_severity_summary_description_and_runbook() {
    let runbook = read("deploy/RUNBOOK.md");
    let headings: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_string())
        .collect();
    let blocks = alert_blocks();
    for (name, body) in &blocks {
        assert!(
            body.contains("severity: critical") || body.contains("severity: warning"),
            "{name}: severity must be critical or warning"
        );
        for key in ["summary:", "description:", "for:"] {
            assert!(body.contains(key), "{name}: no {key}");
        }
        // The base comes from the external label (docs/alerting.md), the repository path without it.
        let url = format!(
            "runbook_url: '{{{{ or $externalLabels.runbook_base_url \"deploy/RUNBOOK.md\" }}}}#{}'",
            name.to_lowercase()
        );
        assert!(body.contains(&url), "{name}: expected {url}");
        assert!(headings.contains(name), "RUNBOOK.md has no `## {name}` heading");
    }
    let names: BTreeSet<&String> = blocks.iter().map(|(n, _)| n).collect();
    for h in headings.iter().filter(|h| h.starts_with("Cxpulse")) {
        assert!(names.contains(h), "RUNBOOK.md documents {h}, which is no alert");
    }
    for required in [
        "CxpulseNpsBelowThreshold",
        "CxpulseNpsDropDetected",
        "CxpulseBrandFeedSilent",
        "CxpulseResponseVolumeAnomaly",
        "CxpulseChurnRateHigh",
        "CxpulseWorkerDown",
        "CxpulseAllWorkersDown",
        "CxpulseNoEventsProcessed",
        "CxpulseConsumerLagGrowing",
        "CxpulseEventsRejected",
        "CxpulseDeadLettersRising",
        "CxpulseSeriesOverflow",
    ] {
        assert!(names.contains(&required.to_string()), "alert {required} is missing");
    }
}

#[test]
fn metric_name_extraction() {
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        metric_names(
            r#"sum by (brand, segment) (rate(cxpulse_events_consumed_total{topic="x"}[$__rate_interval]))"#
        ),
        set(&["cxpulse_events_consumed_total"])
    );
    assert_eq!(
        metric_names(
            r#"cxpulse:nps_score{brand="$brand"} - on (brand) group_left () max by (brand, segment) (cxpulse_nps_alert_threshold) > bool 0"#
        ),
        set(&["cxpulse:nps_score", "cxpulse_nps_alert_threshold"])
    );
    assert_eq!(
        metric_names(
            r#"time() - max(cxpulse_last_event_timestamp_seconds offset 5m) * 1e3 + up{job="cxpulse_fake"}"#
        ),
        set(&["cxpulse_last_event_timestamp_seconds", "up"])
    );
    assert_eq!(
        metric_names(
            "sum without (instance) (x) / ignoring(category) group_left sum(y) or vector(0)"
        ),
        set(&["x", "y"])
    );
}

#[test]
fn dashboard_checker_rejects_unknown_metrics() {
    let allowed = allowed_metrics();
    let bad = serde_json::json!({
        "uid": DASHBOARD_UID,
        "panels": [
            {"title": "ok", "targets": [{"expr": "cxpulse:nps_score{window=\"24h\"}"}]},
            {"title": "row", "type": "row", "panels": [
                {"title": "typo", "targets": [{"expr": "sum(rate(cxpulse_events_consumd_total[5m]))"}]}
            ]},
            {"title": "not ours", "targets": [{"expr": "ALERTS{alertname=\"x\"}"}]}
        ]
    });
    let problems = dashboard_problems(&bad, &allowed);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("cxpulse_events_consumd_total"), "{problems:#?}");
    assert!(problems[1].contains("ALERTS"), "{problems:#?}");

    let moved =
        serde_json::json!({"uid": "abc", "panels": [{"title": "t", "targets": [{"expr": "up"}]}]});
    assert_eq!(dashboard_problems(&moved, &allowed).len(), 1);
}

#[test]
fn dashboard_uses_only_known_metrics_and_recording_rules() {
    let dash = dashboard();
    let problems = dashboard_problems(&dash, &allowed_metrics());
    assert!(problems.is_empty(), "dashboard problems:\n{}", problems.join("\n"));

    let vars: BTreeSet<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["brand", "segment", "window"] {
        assert!(vars.contains(v), "dashboard variable ${v} missing");
    }
    // What the dashboard must show.
    let exprs: String = dashboard_queries(&dash).into_iter().map(|(_, e)| e + "\n").collect();
    for needed in [
        "cxpulse:nps_score",
        "cxpulse:nps_margin_of_error",
        "cxpulse_nps_alert_threshold",
        "cxpulse_nps_responses",
        "cxpulse:csat_ratio",
        "cxpulse:ces_mean",
        "cxpulse:churn_ratio",
        "cxpulse:retention_ratio",
        "cxpulse_events_consumed_total",
        "cxpulse:consumer_lag:sum",
        "cxpulse_events_rejected_total",
        "cxpulse_event_age_seconds",
    ] {
        assert!(exprs.contains(needed), "no dashboard panel shows {needed}");
    }
    assert!(
        !exprs.contains("cxpulse_event_age_seconds_"),
        "use only the quantile series of event age"
    );
}

#[test]
fn dashboard_queries_parse_as_promql() {
    let dash = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (_, expr)) in dashboard_queries(&dash).into_iter().enumerate() {
        let e = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$window", "24h")
            .replace("$brand", "acme")
            .replace("$segment", "smb");
        rules.push_str(&format!(
            "      - record: dashboard_query_{n}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = std::env::temp_dir().join(format!("cxpulse-deploy-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dashboard-queries.yml");
    fs::write(&file, rules).unwrap();
    let out = run("promtool", &["check", "rules", "--lint=none", file.to_str().unwrap()]);
    let t = text(&out);
    let _ = fs::remove_dir_all(&dir);
    assert!(out.status.success(), "a dashboard query is not valid PromQL:\n{t}");
}

#[test]
fn grafana_provisioning_points_at_the_dashboards() {
    let compose = read("docker-compose.yml");
    let mounts = compose_mounts(&compose);
    let target_of = |host: &str| {
        mounts
            .iter()
            .find(|(h, _)| h.trim_end_matches('/') == host)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("docker-compose.yml does not mount {host}"))
    };
    let dash_dir = target_of("./deploy/grafana/dashboards");
    assert_eq!(target_of("./deploy/grafana/provisioning"), "/etc/grafana/provisioning");

    let providers = files_with_ext("deploy/grafana/provisioning/dashboards", &[".yml", ".yaml"]);
    assert!(!providers.is_empty(), "no dashboard provider");
    for p in providers {
        let src = read(&p);
        let paths: Vec<&str> =
            src.lines().filter_map(|l| l.trim().strip_prefix("path:")).map(str::trim).collect();
        assert_eq!(
            paths,
            vec![dash_dir.as_str()],
            "{p}: provider path must be where compose mounts the dashboards"
        );
    }
    let ds = files_with_ext("deploy/grafana/provisioning/datasources", &[".yml", ".yaml"]);
    assert!(!ds.is_empty(), "no datasource provisioning");
    let ds: String = ds.iter().map(|f| read(f)).collect();
    assert!(
        ds.contains("type: prometheus") && ds.contains("url: http://prometheus:9090"),
        "datasource must be the compose Prometheus"
    );
    assert!(!files_with_ext("deploy/grafana/dashboards", &[".json"]).is_empty());
}

/// `- ./host/path:/container/path[:ro]` volume lines of a compose file.
fn compose_mounts(src: &str) -> Vec<(String, String)> {
    src.lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|v| v.trim().trim_matches('"').trim_matches('\''))
        .filter(|v| v.starts_with("./"))
        .map(|v| {
            let mut parts = v.splitn(3, ':');
            let host = parts.next().unwrap().to_string();
            let container = parts.next().unwrap_or_else(|| panic!("bad volume {v:?}")).to_string();
            (host, container)
        })
        .collect()
}

#[test]
fn compose_mounts_only_files_in_the_repo() {
    let compose = read("docker-compose.yml");
    let mounts = compose_mounts(&compose);
    assert!(mounts.len() >= 5, "expected the rules, configs and Grafana mounts, found {mounts:?}");
    for (host, container) in &mounts {
        assert!(
            path(host.trim_start_matches("./")).exists(),
            "docker-compose.yml mounts {host}, which does not exist"
        );
        assert!(container.starts_with('/'), "{host} is mounted at a relative path {container}");
    }
    assert!(
        compose_mounts("      - ./nope:/x:ro\n      - \"./deploy:/d\"\n      - data:/var\n")
            == vec![
                ("./nope".to_string(), "/x".to_string()),
                ("./deploy".to_string(), "/d".to_string())
            ],
        "the mount parser itself is broken"
    );
    for needed in [
        "apache/kafka",
        "kafka-init",
        "service_completed_successfully",
        "dockerfile: Dockerfile",
        "produce",
        "prom/prometheus",
        "prom/alertmanager",
        "grafana/grafana",
    ] {
        assert!(compose.contains(needed), "docker-compose.yml lacks {needed}");
    }
    assert!(
        compose.contains("KAFKA_PROCESS_ROLES: broker,controller"),
        "Kafka must run in KRaft mode"
    );
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.matches("\nFROM ").count() >= 2, "the Dockerfile must be multi-stage");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("Dockerfile sets no USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "the runtime image must not run as root"
    );
}

/// The PrometheusRule's spec.groups, as gen-prometheusrule.sh writes them.
fn expected_prometheusrule_groups() -> String {
    let mut out = String::new();
    for f in RULE_FILES {
        out.push_str(&format!("    # from deploy/prometheus/rules/{f}\n"));
        let src = read(&format!("deploy/prometheus/rules/{f}"));
        let mut found = false;
        for line in src.lines() {
            if found {
                if line.is_empty() {
                    out.push('\n');
                } else {
                    out.push_str("  ");
                    out.push_str(line);
                    out.push('\n');
                }
            } else if line.trim_end() == "groups:" {
                found = true;
            }
        }
        assert!(found, "{f} has no top-level groups:");
    }
    out
}

#[test]
fn kubernetes_prometheusrule_matches_the_rule_files() {
    let k8s = read("deploy/kubernetes/prometheusrule.yaml");
    assert!(k8s.contains("kind: PrometheusRule"));
    let marker = "\nspec:\n  groups:\n";
    let at = k8s.find(marker).expect("prometheusrule.yaml: no `spec:\\n  groups:`");
    let groups = &k8s[at + marker.len()..];
    assert!(
        groups == expected_prometheusrule_groups(),
        "deploy/kubernetes/prometheusrule.yaml is out of date with deploy/prometheus/rules: \
         run deploy/kubernetes/gen-prometheusrule.sh"
    );
    // The same rules by name, in the same order, as a second look.
    for kind in ["record", "alert"] {
        let from_files: Vec<String> = RULE_FILES
            .iter()
            .flat_map(|f| rule_names(&read(&format!("deploy/prometheus/rules/{f}")), kind))
            .collect();
        assert_eq!(rule_names(groups, kind), from_files, "PrometheusRule {kind} rules differ");
    }
}

#[test]
fn kubernetes_workload_is_complete() {
    let dep = read("deploy/kubernetes/deployment.yaml");
    for needed in [
        "kind: Deployment",
        "path: /healthz",
        "path: /readyz",
        "livenessProbe:",
        "readinessProbe:",
        "requests:",
        "cpu:",
        "memory:",
        "runAsNonRoot: true",
    ] {
        assert!(dep.contains(needed), "deployment.yaml lacks {needed}");
    }
    let number = |key: &str| -> u32 {
        dep.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("deployment.yaml has no {key}"))
            .trim()
            .trim_matches('"')
            .parse()
            .unwrap()
    };
    let replicas = number("replicas:");
    let partitions = number("cxpulse.io/source-topic-partitions:");
    assert!(
        replicas >= 1 && replicas <= partitions,
        "replicas {replicas} must be 1..={partitions} (partitions)"
    );

    assert!(read("deploy/kubernetes/service.yaml").contains("kind: Service"));
    let pm = read("deploy/kubernetes/podmonitor.yaml");
    assert!(pm.contains("kind: PodMonitor") && pm.contains("port: metrics"));
    // job="cxpulse" comes from the pod label the PodMonitor names as jobLabel.
    assert!(pm.contains("jobLabel: app.kubernetes.io/name"), "PodMonitor must set job=cxpulse");
    assert!(dep.contains("app.kubernetes.io/name: cxpulse"));
    let kust = read("deploy/kubernetes/kustomization.yaml");
    for f in files_with_ext("deploy/kubernetes", &[".yaml"]) {
        let name = f.rsplit('/').next().unwrap();
        if name != "kustomization.yaml" {
            assert!(kust.contains(&format!("- {name}")), "kustomization.yaml does not list {name}");
        }
    }
}
