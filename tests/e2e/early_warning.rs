//! The early warnings, live on loopback: the real `cxpulse run` worker on the event clock, a real
//! Prometheus evaluating the repository's rules and a real Alertmanager delivering to a webhook
//! of this test (the stack of `alerting`). Two stories run on the one stack:
//!
//! - **Drop:** brands `steady` and `falls` answer once a minute of event time for hours (NPS 30),
//!   then `falls` sends only detractors while `steady` goes on as before. `CxpulseNpsDropDetected`
//!   must reach the webhook for `falls` and never for `steady`, and `CxpulseNpsBelowThreshold`
//!   not at all: the 24h NPS of `falls` is still above 0 when the evidence says "dropped".
//! - **Silence:** brands `quiet` and `busy` answer twice a wall-clock second each; then `quiet`
//!   stops while `busy` goes on. `CxpulseBrandFeedSilent` must reach the webhook for `quiet` and
//!   never for `busy`, although `busy` meets every other condition of the alert.
//!
//! No other alert about customers may reach the webhook, or even be pending in Prometheus.
//!
//! The silence rule counts in Prometheus's (wall) time with hours, days and a week; the test's copy
//! of the rules compresses those (see [`COMPRESSIONS`]), and only those. Every other byte of the
//! copy is the repository's, but for the `for:` lines `alerting::copy_rules` shortens to 3 s.
//!
//! Needs the Debian packages `prometheus` and `prometheus-alertmanager`; fails without them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::alerting::{answers_at, copy_rules, label, now_ms, query, Stack};
use crate::fixture::*;

const TOPIC: &str = "cxw";

const DROP_ALERT: &str = "CxpulseNpsDropDetected";
const SILENCE_ALERT: &str = "CxpulseBrandFeedSilent";
/// Alerts about customers: each may only fire for the brand its story drives.
const BUSINESS_ALERTS: &str =
    "CxpulseNpsBelowThreshold|CxpulseNpsDropDetected|CxpulseChurnRateHigh|CxpulseBrandFeedSilent|CxpulseResponseVolumeAnomaly";

/// One text substitution of the test's copy of the rules: `real` must occur exactly once in
/// `file`, or the test fails (the rules changed and the compression must follow them).
struct Compression {
    file: &'static str,
    real: &'static str,
    compressed: &'static str,
}

/// Time compression of the brand-volume rules, in the test's copy only (never in deploy/):
///
/// | rule | real | compressed | why |
/// |---|---|---|---|
/// | `cxpulse:brand_responses:rate1h` | `[1h]` | `[10s]` | the hour becomes 10 s (factor 360) |
/// | `cxpulse:brand_responses:hourly_avg7d` | `3600 * …[7d:1h]` | `10 * …[140s:1s]` | answers per compressed hour (10 s); the week becomes 7 compressed days of 20 s, read every second |
/// | `cxpulse:brand_last_response_timestamp` | `increase(…[2m])` | `increase(…[5s])` | must span scrape + evaluation interval (1 s + 1 s here, as 2m covers 1m + 1m), with room for a late scrape |
/// | `CxpulseBrandFeedSilent` | `clamp_min(36000 / avg, 1800)` | `clamp_min(100 / avg, 5)` | 10 answers' worth: 10 × 10 s per compressed hour / answers per compressed hour; 30 min becomes 5 s (factor 360) |
/// | `CxpulseBrandFeedSilent` | `rate1h offset 1d` | `rate1h offset 20s` | a day of history becomes 20 s (two compressed hours) |
///
/// The day is compressed harder than the hour (20 s, not 2.4 min): the rule only uses it as the
/// history it waits for, and as the 7-day average's span, which is the average of what there is
/// when shorter, as on a young Prometheus. Left as they are: `rate(cxpulse_events_consumed_total
/// [10m])` ("other answers flow": `busy` flows throughout) and the four-week rules of
/// `CxpulseResponseVolumeAnomaly` (they wait for four weeks, so that alert stays quiet, which the
/// test checks).
const COMPRESSIONS: [Compression; 5] = [
    Compression {
        file: "recording.yml",
        real: "sum by (brand) (rate(cxpulse_survey_responses_total[1h]))",
        compressed: "sum by (brand) (rate(cxpulse_survey_responses_total[10s]))",
    },
    Compression {
        file: "recording.yml",
        real: "3600 * avg_over_time(cxpulse:brand_responses:rate1h[7d:1h])",
        compressed: "10 * avg_over_time(cxpulse:brand_responses:rate1h[140s:1s])",
    },
    Compression {
        file: "recording.yml",
        real: "sum by (brand) (increase(cxpulse_survey_responses_total[2m])) > 0",
        compressed: "sum by (brand) (increase(cxpulse_survey_responses_total[5s])) > 0",
    },
    Compression {
        file: "alerts.yml",
        real: "clamp_min(36000 / cxpulse:brand_responses:hourly_avg7d, 1800)",
        compressed: "clamp_min(100 / cxpulse:brand_responses:hourly_avg7d, 5)",
    },
    Compression {
        file: "alerts.yml",
        real: "(cxpulse:brand_responses:rate1h offset 1d)",
        compressed: "(cxpulse:brand_responses:rate1h offset 20s)",
    },
];

/// `[alerts] silence_min_rate`, compared by the rule with `cxpulse:brand_responses:hourly_avg7d`.
/// In the compressed copy that average is in answers per compressed hour (10 s), so this is
/// 5 answers per 10 s. `quiet` sends about 2 a second, some 17 per compressed hour; the average
/// is over the samples Prometheus has (less than the compressed week), so once `quiet` has sent
/// for 30 s and stopped it reads about 10 × 50 / (30 + u) after u seconds of silence: 10–11 when
/// the alert arrives (u ≈ 17–19 s, measured), under 5 only after some 70 s. Its silence threshold,
/// 100 / 10.5 ≈ 9–10 s, is then the 10-answers term, not the 5 s floor. The default (5 answers a real
/// hour) happens to be the same number: here it means 1,800 answers a real hour.
const SILENCE_MIN_RATE: f64 = 5.0;

const CONFIG: &str = r#"
[alerts]
nps_threshold = 0
min_responses = 30
silence_min_rate = 5
[alerts.nps_drop]
warmup_answers = 50
"#;

/// Answers of the drop story before the drop, per brand, one a minute of event time (4 hours).
const HISTORY: usize = 240;
/// Detractors `falls` then sends, one a minute, while `steady` goes on as before. The detector
/// (default settings, 50 answers of warm-up, a 10-point design drop at 60 answers an hour) raises
/// its alarm at about the 32nd (worked out from its formulas, not measured here); 50 leave the
/// 24h NPS of `falls` at (120 − 48 − 50) / 290 = +7.6, above the threshold of 0, so the
/// threshold alert has nothing to say.
const DETRACTORS: usize = 50;
/// The scores of stable traffic, in this order: 5 promoters, 3 passives, 2 detractors (NPS 30).
const STABLE: [u8; 10] = [10, 9, 7, 10, 3, 9, 8, 7, 5, 10];
const DETRACTOR: u8 = 2;

/// Each live brand's answers: one every this often (2 a second).
const LIVE_EVERY: Duration = Duration::from_millis(500);
/// `quiet` answers at least this long before it stops (the compressed rules need 20 s of history
/// for `offset 20s`; the rest is margin).
const QUIET_AT_LEAST: Duration = Duration::from_secs(30);
/// How long `busy` keeps answering after `quiet`'s alert, for a late alert about `busy` to show.
const AFTERWARDS: Duration = Duration::from_secs(10);

/// Applies [`COMPRESSIONS`] to the copied rule files, failing on a pattern not found exactly once.
fn compress_time(rule_files: &[PathBuf]) {
    for c in &COMPRESSIONS {
        let path = rule_files
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == c.file))
            .unwrap_or_else(|| panic!("no copied rule file {}: {rule_files:?}", c.file));
        let text = std::fs::read_to_string(path).expect("read copied rules");
        let found = text.matches(c.real).count();
        assert_eq!(
            found, 1,
            "{}: `{}` found {found} times, expected once. The brand-volume rules changed: update \
             COMPRESSIONS in tests/e2e/early_warning.rs, or this test would run them uncompressed",
            c.file, c.real
        );
        std::fs::write(path, text.replacen(c.real, c.compressed, 1)).expect("write copied rules");
    }
}

/// Stable answer `i` of a series (see [`STABLE`]).
fn stable(i: usize) -> u8 {
    STABLE[i % STABLE.len()]
}

/// The drop evidence the worker exports for `brand` (segment "all").
fn evidence(worker: &WorkerProcess, brand: &str) -> Option<f64> {
    worker.metrics()?.get("cxpulse_nps_drop_evidence", &[("brand", brand), ("segment", "all")])
}

fn counted(worker: &WorkerProcess) -> Option<f64> {
    worker.metrics()?.get("cxpulse_events_counted_total", &[])
}

/// The single value of an instant query, if it has exactly one series.
fn single(prometheus: &str, promql: &str) -> Option<f64> {
    let result = query(prometheus, promql)?;
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// `quiet` and `busy` answering in a thread of the test, with occurred_at = now.
struct LiveTraffic {
    running: Arc<AtomicBool>,
    quiet_on: Arc<AtomicBool>,
    quiet_last: Arc<Mutex<Option<Instant>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LiveTraffic {
    fn start(brokers: &str) -> LiveTraffic {
        let running = Arc::new(AtomicBool::new(true));
        let quiet_on = Arc::new(AtomicBool::new(true));
        let quiet_last = Arc::new(Mutex::new(None));
        let (run, quiet, last) = (running.clone(), quiet_on.clone(), quiet_last.clone());
        let producer = producer(brokers);
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while run.load(Ordering::Relaxed) {
                let at = now_ms();
                let mut batch: Vec<(i32, &str, Vec<u8>)> = Vec::new();
                for payload in answers_at("live", "busy", None, stable(i), 1, at) {
                    batch.push((0, "busy/all", payload));
                }
                let quiet_now = quiet.load(Ordering::Relaxed);
                if quiet_now {
                    for payload in answers_at("live", "quiet", None, stable(i), 1, at) {
                        batch.push((1, "quiet/all", payload));
                    }
                }
                produce(&producer, TOPIC, &batch);
                if quiet_now {
                    *last.lock().unwrap() = Some(Instant::now());
                }
                i += 1;
                std::thread::sleep(LIVE_EVERY);
            }
        });
        LiveTraffic { running, quiet_on, quiet_last, thread: Some(thread) }
    }

    /// Stops `quiet`; returns when its last answer was acknowledged by the broker.
    fn stop_quiet(&self) -> Instant {
        self.quiet_on.store(false, Ordering::Relaxed);
        // The thread may be inside a send that still includes `quiet`: wait for it to finish.
        std::thread::sleep(LIVE_EVERY * 2);
        self.quiet_last.lock().unwrap().expect("quiet answered")
    }
}

impl Drop for LiveTraffic {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn drop_and_silent_feed_alert_live_for_their_brands_only() {
    let started = Instant::now();
    let dir = TempDir::new("early-warning");
    let rule_files = copy_rules(&dir.0);
    compress_time(&rule_files);

    let scenario = Scenario::new(&[(TOPIC, 2), ("cxw.dlq", 1)]);
    let worker = scenario.start(
        "early-warning",
        &WorkerConfig::new("cxpulse-early-warning", TOPIC).clock("event").extra(CONFIG),
    );
    let limit = Duration::from_secs(30);
    let ready =
        wait_for(limit, || http_get(&worker.addr, "/readyz").filter(|(status, _)| *status == 200));
    assert!(ready.is_some(), "worker not ready within {limit:?}:\n{}", worker.log());

    // 1. The drop story, in event time, before Prometheus starts. Its hours of answers reach the
    //    worker within a second of wall time: in Prometheus's time `steady` and `falls` would be
    //    a burst followed by silence, which is just what CxpulseBrandFeedSilent is for. Counted
    //    before Prometheus's first scrape, their counters never rise in its view (no last-answer
    //    time, a 7-day average of 0), so the silence story is only about `quiet` and `busy`.
    let producer = scenario.producer();
    let minute = 60_000;
    let last_at = now_ms() - minute;
    let first_at = last_at - (HISTORY + DETRACTORS - 1) as i64 * minute;
    let at = |i: usize| first_at + i as i64 * minute;
    let series = |i: usize, falls: u8| {
        let mut batch: Vec<(i32, &str, Vec<u8>)> = Vec::new();
        for p in answers_at("drop", "steady", None, stable(i), 1, at(i)) {
            batch.push((0, "steady/all", p));
        }
        for p in answers_at("drop", "falls", None, falls, 1, at(i)) {
            batch.push((1, "falls/all", p));
        }
        batch
    };
    let history: Vec<_> = (0..HISTORY).flat_map(|i| series(i, stable(i))).collect();
    produce(&producer, TOPIC, &history);
    let total = history.len() as f64;
    let done = wait_for(limit, || counted(&worker).filter(|n| *n == total));
    assert!(done.is_some(), "history not counted within {limit:?}:\n{}", worker.log());
    let before = [evidence(&worker, "steady"), evidence(&worker, "falls")];
    assert!(
        before.iter().all(|e| e.is_some_and(|e| e < 0.25)),
        "drop evidence of steady, falls after the stable history: {before:?}"
    );

    let dropped: Vec<_> =
        (HISTORY..HISTORY + DETRACTORS).flat_map(|i| series(i, DETRACTOR)).collect();
    produce(&producer, TOPIC, &dropped);
    let total = total + dropped.len() as f64;
    let done = wait_for(limit, || counted(&worker).filter(|n| *n == total));
    assert!(done.is_some(), "the drop not counted within {limit:?}:\n{}", worker.log());
    let after = [evidence(&worker, "steady"), evidence(&worker, "falls")];
    assert!(
        after[0].is_some_and(|e| e < 0.25) && after[1].is_some_and(|e| e >= 1.0),
        "drop evidence of steady, falls after the drop: {after:?}"
    );
    eprintln!(
        "[early_warning] drop evidence (steady, falls): {before:?} after the history, {after:?} \
         after the drop"
    );

    // 2. Prometheus and Alertmanager; `quiet` and `busy` start answering at once.
    let prometheus_at = Instant::now();
    let mut stack = Stack::start("early_warning", &dir.0, worker, &rule_files).watch(&[
        "cxpulse_nps_drop_evidence",
        "cxpulse:brand_responses:rate1h",
        "cxpulse:brand_responses:hourly_avg7d",
        "time() - cxpulse:brand_last_response_timestamp",
        "cxpulse:brand_responses:rate1h offset 20s",
    ]);
    let traffic = LiveTraffic::start(&scenario.brokers);
    let rules = stack.wait_until_watching(2.0, limit);
    let silence_rule = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .find(|r| r["name"] == SILENCE_ALERT)
        .unwrap_or_else(|| panic!("{SILENCE_ALERT} not loaded{}", stack.context()));
    assert!(
        silence_rule["query"].as_str().is_some_and(|q| q.contains("offset 20s")),
        "Prometheus evaluates the compressed copy: {silence_rule}"
    );

    // 3. The drop reaches the webhook for `falls`.
    let firing = stack.wait("firing CxpulseNpsDropDetected{falls} at the webhook", limit, |s| {
        s.webhook.find("firing", DROP_ALERT, "falls", "all")
    });
    let drop_after = prometheus_at.elapsed();
    assert_eq!(label(&firing["labels"], "severity"), "warning", "{firing}");

    // 4. `quiet` has the history the compressed rule wants (its rate 20 s ago, an average of at
    //    least silence_min_rate), and so has `busy`; then `quiet` stops.
    let history_met = |s: &Stack, brand: &str| {
        let avg = single(
            &s.prometheus_addr,
            &format!(r#"cxpulse:brand_responses:hourly_avg7d{{brand="{brand}"}}"#),
        )?;
        let day_ago = single(
            &s.prometheus_addr,
            &format!(r#"cxpulse:brand_responses:rate1h{{brand="{brand}"}} offset 20s"#),
        )?;
        (avg >= SILENCE_MIN_RATE && day_ago > 0.0).then_some(avg)
    };
    stack.wait("quiet and busy have the compressed history", Duration::from_secs(60), |s| {
        let quiet = history_met(s, "quiet")?;
        let busy = history_met(s, "busy")?;
        (prometheus_at.elapsed() >= QUIET_AT_LEAST).then_some((quiet, busy))
    });
    let quiet_stopped = traffic.stop_quiet();
    eprintln!(
        "[early_warning] quiet stopped {:.1}s after Prometheus started",
        prometheus_at.elapsed().as_secs_f64()
    );

    // 5. Its silence reaches the webhook.
    let silent = stack.wait(
        "firing CxpulseBrandFeedSilent{quiet} at the webhook",
        Duration::from_secs(60),
        |s| s.webhook.find("firing", SILENCE_ALERT, "quiet", ""),
    );
    let silence_after = quiet_stopped.elapsed();
    assert_eq!(label(&silent["labels"], "severity"), "warning", "{silent}");
    let busy_eligible = history_met(&stack, "busy");
    let quiet_avg =
        single(&stack.prometheus_addr, r#"cxpulse:brand_responses:hourly_avg7d{brand="quiet"}"#);
    let quiet_threshold = single(
        &stack.prometheus_addr,
        r#"clamp_min(100 / cxpulse:brand_responses:hourly_avg7d{brand="quiet"}, 5)"#,
    );

    // 6. `busy` goes on for a while; then nothing but those two may have been notified, or even
    //    pending, about customers.
    std::thread::sleep(AFTERWARDS);
    let context = stack.context();
    assert!(
        busy_eligible.is_some(),
        "busy met the silence alert's history conditions when quiet's alert fired, so only its \
         answers kept it quiet{context}"
    );
    let expected = |name: &str, brand: &str| {
        (name == DROP_ALERT && brand == "falls") || (name == SILENCE_ALERT && brand == "quiet")
    };
    for (status, alert) in stack.webhook.alerts() {
        let l = &alert["labels"];
        let (name, brand) = (label(l, "alertname"), label(l, "brand"));
        assert!(
            !BUSINESS_ALERTS.split('|').any(|b| b == name) || expected(name, brand),
            "unexpected notification ({status}): {name} {brand}{context}"
        );
    }
    let ever = query(
        &stack.prometheus_addr,
        &format!(r#"last_over_time(ALERTS{{alertname=~"{BUSINESS_ALERTS}"}}[10m])"#),
    )
    .unwrap_or_else(|| panic!("ALERTS query failed{context}"));
    let mut seen = std::collections::BTreeSet::new();
    for series in &ever {
        let m = &series["metric"];
        let (name, brand) = (label(m, "alertname"), label(m, "brand"));
        assert!(
            expected(name, brand),
            "business alert pending or firing for the wrong brand: {m}{context}"
        );
        seen.insert((name, brand));
    }
    assert_eq!(
        seen.len(),
        2,
        "ALERTS holds both expected alerts (pending or firing): {ever:?}{context}"
    );
    let held = [evidence(&stack.worker, "steady"), evidence(&stack.worker, "falls")];
    assert!(
        held[0].is_some_and(|e| e < 1.0) && held[1].is_some_and(|e| e >= 1.0),
        "drop evidence of steady, falls at the end: {held:?}{context}"
    );

    eprintln!(
        "[early_warning] {DROP_ALERT}{{falls}} at the webhook {:.1}s after Prometheus started; \
         {SILENCE_ALERT}{{quiet}} {:.1}s after quiet's last answer ({}; its average then \
         {quiet_avg:.1?} answers per compressed hour, its silence threshold {quiet_threshold:.1?} \
         s); notified: {:?}; total {:.1}s",
        drop_after.as_secs_f64(),
        silence_after.as_secs_f64(),
        silent["annotations"]["summary"].as_str().unwrap_or(""),
        stack
            .webhook
            .alerts()
            .iter()
            .map(|(_, a)| {
                let l = &a["labels"];
                format!("{} {}{{{}}}", label(a, "status"), label(l, "alertname"), label(l, "brand"))
            })
            .collect::<std::collections::BTreeSet<_>>(),
        started.elapsed().as_secs_f64()
    );
    drop(traffic);
    drop(stack);
    drop(scenario);
    drop(dir);
}
