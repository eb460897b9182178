//! Customer journeys through a broker: a crafted stream of purchases, NPS answers (one corrected)
//! and churns, keyed by customer over two partitions, gives the repeat-purchase and churn-by-NPS
//! gauges worked out by hand below for every brand/segment/window, in `/metrics` and in the
//! scores API; a worker SIGKILLed half-way and a new one restoring from the checkpoints end with
//! the same figures, and so do two workers after a rebalance, and one again after the second
//! left. Runs on the real broker of `CXPULSE_TEST_BROKERS` when set.

use std::time::Duration;

use serde_json::Value;

use crate::fixture::*;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const WINDOWS: [&str; 4] = ["1h", "24h", "7d", "30d"];

/// One event of the stream: (partition, JSON).
fn event(id: &str, at: i64, series: (&str, &str), customer: &str, body: &str) -> (i32, Vec<u8>) {
    // Keyed by customer: all of a customer's events reach one partition.
    let partition = i32::from(customer.bytes().map(u16::from).sum::<u16>() % 2 == 1);
    let customer =
        if customer.is_empty() { String::new() } else { format!(r#","customer_id":"{customer}""#) };
    let json = format!(
        r#"{{"event_id":"{id}","occurred_at":{at},"brand":"{}","segment":"{}"{customer},{body}}}"#,
        series.0, series.1
    );
    (partition, json.into_bytes())
}

const PURCHASE: &str = r#""type":"customer_lifecycle","action":"purchase""#;
const CHURN: &str = r#""type":"customer_lifecycle","action":"churn""#;

fn nps(score: u8, response: &str) -> String {
    format!(r#""type":"survey_response","survey":"nps","score":{score},"response_id":"{response}""#)
}

/// The stream in two halves (the worker is killed between them). `t` is the newest event: the
/// event clock's T.
fn stream(t: i64) -> [Vec<(i32, Vec<u8>)>; 2] {
    let acme = ("acme", "smb");
    let globex = ("globex", "all");
    let first = vec![
        event("a-p1", t - 10 * DAY, acme, "ann", PURCHASE),
        event("a-p2", t - 2 * HOUR, acme, "ann", PURCHASE),
        event("a-n1", t - 3 * DAY, acme, "ann", &nps(3, "r-ann")),
        event("b-p1", t - 5 * MINUTE, acme, "bob", PURCHASE),
        event("b-p2", t - 3 * MINUTE, acme, "bob", PURCHASE),
        event("c-n1", t - 30 * MINUTE, acme, "cid", &nps(9, "r-cid")),
        event("e-n1", t - 40 * HOUR, acme, "eve", &nps(8, "r-eve1")),
        event("g-n1", t - 6 * DAY, globex, "gus", &nps(2, "r-gus")),
        event("f-p1", t - MINUTE, globex, "fay", PURCHASE),
    ];
    let second = vec![
        event("b-p2", t - 3 * MINUTE, acme, "bob", PURCHASE), // a duplicate: no third purchase
        event("b-p3", t - MINUTE, acme, "bob", PURCHASE),
        event("a-c1", t - 20 * HOUR, acme, "ann", CHURN), // after her detractor answer
        event("c-n2", t - 20 * MINUTE, acme, "cid", &nps(5, "r-cid")), // corrected to a detractor
        event("c-c1", t - 10 * MINUTE, acme, "cid", CHURN),
        event("d-c1", t - 2 * MINUTE, acme, "dan", CHURN), // never answered: unknown
        event("e-n2", t - 5 * MINUTE, acme, "eve", &nps(10, "r-eve2")),
        event("e-c1", t - 30 * HOUR, acme, "eve", CHURN), // after her passive answer only
        event("g-c1", t - 5 * DAY, globex, "gus", CHURN),
        event("x-1", t, acme, "", r#""type":"survey_response","survey":"csat","score":"5""#),
    ];
    [first, second]
}

/// What the stream gives, worked out by hand per window (1h, 24h, 7d, 30d): purchasers, repeat
/// purchasers, respondents [promoter, passive, detractor], churns [.., unknown].
struct Expected {
    series: (&'static str, &'static str),
    purchasers: [u32; 4],
    repeat: [u32; 4],
    respondents: [[u32; 3]; 4],
    churned: [[u32; 4]; 4],
}

fn expected() -> [Expected; 2] {
    [
        Expected {
            series: ("acme", "smb"),
            // bob in every window; ann's newest purchase (2 h ago) from 24h on; ann's repeat
            // (10 days ago) only in 30d.
            purchasers: [1, 2, 2, 2],
            repeat: [1, 1, 1, 2],
            // cid (detractor after the correction) and eve (promoter, her newest); ann's
            // detractor answer 3 days ago from 7d on.
            respondents: [[1, 0, 1], [1, 0, 1], [1, 0, 2], [1, 0, 2]],
            // cid (detractor) and dan (unknown); ann 20 h ago (detractor) from 24h; eve 30 h ago
            // (passive) from 7d.
            churned: [[0, 0, 1, 1], [0, 0, 2, 1], [0, 1, 2, 1], [0, 1, 2, 1]],
        },
        Expected {
            series: ("globex", "all"),
            purchasers: [1, 1, 1, 1],
            repeat: [0, 0, 0, 0],
            respondents: [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 1]],
            churned: [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]],
        },
    ]
}

const CATEGORIES: [&str; 4] = ["promoter", "passive", "detractor", "unknown"];

/// The differences between the worker's gauges and the expected values (empty when equal).
fn differences(metrics: &Metrics) -> Vec<String> {
    let mut out = Vec::new();
    for e in expected() {
        let (brand, segment) = e.series;
        for (w, window) in WINDOWS.iter().enumerate() {
            let labels = [("brand", brand), ("segment", segment), ("window", *window)];
            let mut check = |name: &str, category: Option<&str>, want: u32| {
                let mut labels = labels.to_vec();
                labels.extend(category.map(|c| ("category", c)));
                let got = metrics.get(name, &labels);
                if got != Some(f64::from(want)) {
                    out.push(format!("{name}{labels:?}: got {got:?}, want {want}"));
                }
            };
            check("cxpulse_purchasers", None, e.purchasers[w]);
            check("cxpulse_repeat_purchasers", None, e.repeat[w]);
            for (c, category) in CATEGORIES.iter().enumerate() {
                if c < 3 {
                    check("cxpulse_nps_respondents", Some(category), e.respondents[w][c]);
                }
                check("cxpulse_churned_by_nps", Some(category), e.churned[w][c]);
            }
        }
    }
    out
}

fn produce_half(scenario: &Scenario, topic: &str, events: &[(i32, Vec<u8>)]) {
    let messages: Vec<(i32, &str, Vec<u8>)> =
        events.iter().map(|(p, json)| (*p, "customer", json.clone())).collect();
    produce(&scenario.producer(), topic, &messages);
}

#[test]
fn repeat_purchases_and_churn_by_nps_match_the_hand_count_through_a_sigkill_and_a_rebalance() {
    let scenario = Scenario::on_either_broker(&[("journeys", 2), ("journeys.dlq", 1)]);
    let topic = scenario.topic("journeys");
    let config = WorkerConfig::new(&scenario.group("g-journeys"), &topic)
        .clock("event")
        .checkpoint_interval("1s");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let t = now / MINUTE * MINUTE - 10 * MINUTE + 30_000;
    let [first, second] = stream(t);

    let mut worker = scenario.start("journeys-a", &config);
    produce_half(&scenario, &topic, &first);
    let counted = first.len() as f64;
    wait_for(Duration::from_secs(60), || {
        worker.metrics().filter(|m| {
            m.get("cxpulse_events_counted_total", &[]) == Some(counted)
                && m.get("cxpulse_checkpoints_total", &[]).unwrap_or(0.0) >= 2.0
        })
    })
    .unwrap_or_else(|| panic!("first half never counted and checkpointed:\n{}", worker.log()));
    // Let a checkpoint cover everything counted, then SIGKILL.
    std::thread::sleep(Duration::from_millis(2_500));
    worker.child.kill().expect("SIGKILL");
    worker.child.wait().expect("reaped");

    produce_half(&scenario, &topic, &second);
    let restarted = scenario.start("journeys-b", &config);
    let last = wait_for(Duration::from_secs(60), || {
        let metrics = restarted.metrics()?;
        differences(&metrics).is_empty().then_some(metrics)
    });
    let Some(metrics) = last else {
        let now = restarted.metrics().map(|m| differences(&m)).unwrap_or_default();
        panic!("gauges never matched the hand count: {now:#?}\n{}", restarted.log());
    };
    assert_eq!(
        metrics.get("cxpulse_partition_restores_total", &[("source", "checkpoint")]),
        Some(2.0),
        "restored from checkpoints, not replayed:\n{}",
        restarted.log()
    );
    assert_eq!(metrics.get("cxpulse_state_entries", &[("kind", "customers")]), Some(6.0));

    // The scores API says the same, with the ratios.
    let (status, body) = http_get(&restarted.addr, "/api/v1/scores?steps=false").expect("scores");
    assert_eq!(status, 200, "{body}");
    let document: Value = serde_json::from_str(&body).expect("JSON");
    let acme = document["series"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["brand"] == "acme"))
        .expect("acme in the scores");
    let month = &acme["windows"]["30d"]["customers"];
    assert_eq!(month["purchasers"], 2);
    assert_eq!(month["repeat_purchasers"], 2);
    assert_eq!(month["repeat_purchase_ratio"], 1.0);
    assert_eq!(month["churned_by_nps"]["unknown"], 1);
    let ratios = &month["churn_ratio_by_nps"];
    assert_eq!((ratios["detractor"].as_f64(), ratios["passive"].as_f64()), (Some(1.0), None));
    assert_eq!(ratios["promoter"], 0.0);
    let day = &acme["windows"]["24h"]["customers"];
    assert_eq!(day["repeat_purchase_ratio"], 0.5);

    // A rebalance 1 -> 2 -> 1: each worker restores what it takes from the checkpoints, and the
    // gauges summed over the workers (as Prometheus sums them) stay the hand count.
    let mut joined = scenario.start("journeys-c", &config);
    let split = wait_for(Duration::from_secs(60), || {
        let (a, c) = (restarted.metrics()?, joined.metrics()?);
        let one_each = [&a, &c].iter().all(|m| {
            m.get("cxpulse_partitions_assigned", &[]) == Some(1.0)
                && m.get("cxpulse_partitions_restoring", &[]) == Some(0.0)
        });
        (one_each && differences(&summed(&a, &c)).is_empty()).then_some(())
    });
    assert!(split.is_some(), "two workers never summed to the hand count:\n{}", joined.log());
    let exit = joined.terminate(Duration::from_secs(10)).expect("the second worker stops");
    assert!(exit.success(), "{}", joined.log());
    let back = wait_for(Duration::from_secs(60), || {
        let m = restarted.metrics()?;
        (m.get("cxpulse_partitions_assigned", &[]) == Some(2.0) && differences(&m).is_empty())
            .then_some(())
    });
    assert!(back.is_some(), "one worker again never matched the hand count:\n{}", restarted.log());
}

/// Two workers' samples added up series by series, as a `sum by` over workers would.
fn summed(a: &Metrics, b: &Metrics) -> Metrics {
    let mut sum = a.0.clone();
    for (series, value) in &b.0 {
        *sum.entry(series.clone()).or_insert(0.0) += value;
    }
    Metrics(sum)
}
