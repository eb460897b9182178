//! A known set of events through the real binary and a real Kafka-protocol broker gives exactly
//! the expected windowed counts, rejections and dead letters: on librdkafka's mock cluster, or on
//! the real broker named by `CXPULSE_TEST_BROKERS` (CI runs them on tansu).

use std::time::Duration;

use crate::fixture::*;

const T0: i64 = 1_795_428_000_000; // 2026-11-23T10:00:00Z
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

fn nps(id: &str, brand: &str, segment: Option<&str>, at: i64, score: u8) -> Vec<u8> {
    let segment = segment.map(|s| format!(r#","segment":"{s}""#)).unwrap_or_default();
    format!(r#"{{"event_id":"{id}","type":"survey_response","occurred_at":{at},"brand":"{brand}"{segment},"survey":"nps","score":{score}}}"#).into_bytes()
}

fn event(id: &str, at: i64, brand_segment: &str, rest: &str) -> Vec<u8> {
    format!(r#"{{"event_id":"{id}","occurred_at":{at},{brand_segment},{rest}}}"#).into_bytes()
}

const ACME_SMB: &str = r#""brand":"acme","segment":"smb""#;

/// Partition 0 carries everything whose outcome depends on order; the other partitions hold
/// events whose counts do not depend on how partitions interleave.
fn partition0() -> Vec<(Vec<u8>, Option<&'static str>)> {
    let mut too_large = String::from(
        r#"{"event_id":"big","type":"survey_response","occurred_at":1795428000000,"brand":"acme","survey":"nps","score":9,"pad":""#,
    );
    too_large.push_str(&"x".repeat(70 * 1024));
    too_large.push_str("\"}");
    vec![
        (br#"{"event_id":"e1","type":"survey_response","occurred_at":"2026-11-23T10:00:00Z","brand":"acme","segment":"smb","survey":"nps","score":9}"#.to_vec(), None),
        (nps("e2", "acme", Some("smb"), T0 - 10 * MIN, 10), None), // out of order
        (nps("e3", "acme", Some("smb"), T0 - 2 * HOUR, 3), None),
        (nps("e4", "acme", None, T0 - 30 * MIN, 7), None),
        (nps("e1", "acme", Some("smb"), T0 - MIN, 0), None), // duplicate id, other content
        (event("e5", T0 - 5 * MIN, ACME_SMB, r#""type":"survey_response","survey":"csat","score":5"#), None),
        (event("e6", T0 - 5 * MIN, ACME_SMB, r#""type":"survey_response","survey":"csat","score":3,"scale_max":7"#), None),
        (event("e7", T0 - 3 * DAY, ACME_SMB, r#""type":"survey_response","survey":"ces","score":"6""#), None),
        (event("e8", T0 - 20 * DAY, ACME_SMB, r#""type":"customer_base","active_customers":100"#), None),
        (event("e9", T0 - 20 * MIN, ACME_SMB, r#""type":"customer_lifecycle","action":"signup","customer_id":"c1""#), None),
        (event("e10", T0 - 2 * DAY, ACME_SMB, r#""type":"customer_lifecycle","action":"churn","customer_id":"c2""#), None),
        (nps("e11", "acme", Some("smb"), T0 - 31 * DAY, 9), Some("too_old")),
        (br#"{"event_id":"#.to_vec(), Some("invalid_json")),
        (br#"{"event_id":"m1","type":"survey_response","occurred_at":1795428000000,"survey":"nps","score":9}"#.to_vec(), Some("missing_field")),
        (nps("f1", "bad brand!", None, T0, 9), Some("invalid_field")),
        (nps("s1", "acme", None, T0, 11), Some("score_out_of_range")),
        (event("u1", T0, ACME_SMB, r#""type":"refund""#), Some("unknown_type")),
        (event("u2", T0, ACME_SMB, r#""schema":2,"type":"survey_response","survey":"nps","score":9"#), Some("unknown_schema")),
        (too_large.into_bytes(), Some("too_large")),
        (br#"{"event_id":"e1","type":"survey_response","occurred_at":"2026-11-23T10:00:00Z","brand":"acme","segment":"smb","survey":"nps","score":9}"#.to_vec(), None),
        // The event clock follows events, but never past the wall clock.
        (br#"{"event_id":"y1","type":"survey_response","occurred_at":"9999-12-31T23:59:59Z","brand":"acme","survey":"nps","score":9}"#.to_vec(), Some("too_far_in_future")),
    ]
}

fn other_partitions() -> Vec<(i32, Vec<u8>)> {
    let globex = r#""brand":"globex","segment":"mid""#;
    let initech = r#""brand":"initech","segment":"enterprise""#;
    vec![
        (1, nps("g1", "globex", Some("mid"), T0 - MIN, 6)),
        (1, nps("g2", "globex", Some("mid"), T0 - 50 * MIN, 8)),
        (
            1,
            event(
                "g3",
                T0 - 6 * HOUR,
                globex,
                r#""type":"customer_lifecycle","action":"purchase","customer_id":"c9""#,
            ),
        ),
        (
            2,
            event(
                "i1",
                T0 - 15 * MIN,
                initech,
                r#""type":"survey_response","survey":"ces","score":2"#,
            ),
        ),
        (2, nps("i2", "initech", Some("enterprise"), T0 - 8 * DAY, 10)),
    ]
}

/// The counting worker: group `group` on `topic`, on the event clock unless told otherwise.
fn worker_config(group: &str, topic: &str, clock: &str) -> WorkerConfig {
    WorkerConfig::new(group, topic).clock(clock)
}

#[test]
fn known_events_give_exact_counts_rejections_and_dead_letters() {
    let scenario = Scenario::on_either_broker(&[("cx", 3), ("cx.dlq", 1)]);
    let brokers = scenario.brokers.clone();
    let (topic, dead_letter_topic) = (scenario.topic("cx"), scenario.topic("cx.dlq"));
    let p0 = partition0();
    let mut messages: Vec<(i32, &str, Vec<u8>)> =
        p0.iter().map(|(payload, _)| (0, "acme/smb", payload.clone())).collect();
    messages.extend(other_partitions().into_iter().map(|(p, payload)| (p, "k", payload)));
    produce(&producer(&brokers), &topic, &messages);
    let total = messages.len() as f64;

    let worker = scenario.start("counts", &worker_config("cxpulse-counts", &topic, "event"));
    let metrics = wait_for(Duration::from_secs(60), || {
        worker
            .metrics()
            .filter(|m| m.get("cxpulse_events_consumed_total", &[("topic", &topic)]) == Some(total))
    })
    .unwrap_or_else(|| panic!("worker did not consume {total} messages; log:\n{}", worker.log()));
    // Dead letters are acknowledged after the batch is counted: wait for them too.
    let rejected_count = p0.iter().filter(|(_, reason)| reason.is_some()).count() as f64;
    let metrics = wait_for(Duration::from_secs(20), || {
        worker
            .metrics()
            .filter(|m| m.get("cxpulse_dead_letters_total", &[]) == Some(rejected_count))
    })
    .unwrap_or(metrics);

    let nps_of = |brand: &str, segment: &str, window: &str| -> [f64; 3] {
        ["promoter", "passive", "detractor"].map(|category| {
            metrics
                .get(
                    "cxpulse_nps_responses",
                    &[
                        ("brand", brand),
                        ("segment", segment),
                        ("window", window),
                        ("category", category),
                    ],
                )
                .unwrap_or(-1.0)
        })
    };
    assert_eq!(nps_of("acme", "smb", "1h"), [2.0, 0.0, 0.0]);
    assert_eq!(nps_of("acme", "smb", "24h"), [2.0, 0.0, 1.0]);
    assert_eq!(nps_of("acme", "smb", "30d"), [2.0, 0.0, 1.0]);
    assert_eq!(nps_of("acme", "all", "1h"), [0.0, 1.0, 0.0]);
    assert_eq!(nps_of("globex", "mid", "1h"), [0.0, 1.0, 1.0]);
    assert_eq!(nps_of("initech", "enterprise", "7d"), [0.0, 0.0, 0.0]);
    assert_eq!(nps_of("initech", "enterprise", "30d"), [1.0, 0.0, 0.0]);

    let get = |name: &str, labels: &[(&str, &str)]| metrics.get(name, labels).unwrap_or(-1.0);
    let acme = |window: &'static str| [("brand", "acme"), ("segment", "smb"), ("window", window)];
    for (window, satisfied, unsatisfied) in [("1h", 1.0, 1.0), ("30d", 1.0, 1.0)] {
        let mut l = acme(window).to_vec();
        l.push(("outcome", "satisfied"));
        assert_eq!(get("cxpulse_csat_responses", &l), satisfied, "{window}");
        l.pop();
        l.push(("outcome", "unsatisfied"));
        assert_eq!(get("cxpulse_csat_responses", &l), unsatisfied, "{window}");
    }
    assert_eq!(
        get("cxpulse_ces_responses", &[acme("24h").as_slice(), &[("outcome", "easy")]].concat()),
        0.0
    );
    assert_eq!(
        get("cxpulse_ces_responses", &[acme("7d").as_slice(), &[("outcome", "easy")]].concat()),
        1.0
    );
    assert_eq!(get("cxpulse_ces_score_sum", &acme("7d")), 6.0);
    assert_eq!(
        get(
            "cxpulse_ces_responses",
            &[
                ("brand", "initech"),
                ("segment", "enterprise"),
                ("window", "1h"),
                ("outcome", "not_easy")
            ]
        ),
        1.0
    );
    assert_eq!(
        get(
            "cxpulse_ces_score_sum",
            &[("brand", "initech"), ("segment", "enterprise"), ("window", "1h")]
        ),
        2.0
    );
    let action = |window: &'static str, action: &'static str| {
        get("cxpulse_customer_events", &[acme(window).as_slice(), &[("action", action)]].concat())
    };
    assert_eq!((action("1h", "signup"), action("1h", "churn")), (1.0, 0.0));
    assert_eq!((action("7d", "signup"), action("7d", "churn")), (1.0, 1.0));
    assert_eq!(
        get(
            "cxpulse_customer_events",
            &[("brand", "globex"), ("segment", "mid"), ("window", "1h"), ("action", "purchase")]
        ),
        0.0
    );
    assert_eq!(
        get(
            "cxpulse_customer_events",
            &[("brand", "globex"), ("segment", "mid"), ("window", "24h"), ("action", "purchase")]
        ),
        1.0
    );
    // Base 100 at T0-20d, churn at T0-2d, signup at T0-20m.
    assert_eq!(get("cxpulse_customers_active", &[("brand", "acme"), ("segment", "smb")]), 100.0);
    for (window, start) in [("1h", 99.0), ("24h", 99.0), ("7d", 100.0), ("30d", 100.0)] {
        assert_eq!(
            get("cxpulse_customers_active_at_window_start", &acme(window)),
            start,
            "{window}"
        );
    }
    assert_eq!(
        get(
            "cxpulse_survey_responses_total",
            &[("brand", "acme"), ("segment", "smb"), ("survey", "nps"), ("category", "promoter")]
        ),
        2.0
    );

    let expected_rejections: Vec<&str> = p0.iter().filter_map(|(_, reason)| *reason).collect();
    for reason in [
        "invalid_json",
        "missing_field",
        "invalid_field",
        "score_out_of_range",
        "unknown_type",
        "unknown_schema",
        "too_large",
        "too_old",
        "too_far_in_future",
    ] {
        let want = expected_rejections.iter().filter(|r| **r == reason).count() as f64;
        assert_eq!(get("cxpulse_events_rejected_total", &[("reason", reason)]), want, "{reason}");
    }
    assert_eq!(get("cxpulse_events_duplicate_total", &[]), 2.0);
    assert_eq!(rejected_count, 9.0, "every reason, too_old and too_far_in_future included");
    assert_eq!(get("cxpulse_events_counted_total", &[]), total - rejected_count - 2.0);
    assert_eq!(get("cxpulse_dead_letters_total", &[]), rejected_count);
    assert_eq!(get("cxpulse_series", &[]), 4.0);

    let letters = read_topic(
        &brokers,
        &dead_letter_topic,
        1,
        expected_rejections.len(),
        Duration::from_secs(20),
    );
    assert_eq!(letters.len(), expected_rejections.len(), "dead letters");
    for letter in &letters {
        let offset: usize = letter.headers["cxpulse-source-offset"].parse().expect("offset header");
        let (payload, reason) = &p0[offset];
        assert_eq!(Some(letter.headers["cxpulse-error"].as_str()), *reason);
        assert_eq!(letter.headers["cxpulse-source-topic"], topic);
        assert_eq!(letter.headers["cxpulse-source-partition"], "0");
        assert_eq!(&letter.payload, payload, "dead letter carries the original bytes");
    }
}

#[test]
fn wall_clock_rejects_future_and_stale_events() {
    let scenario = Scenario::on_either_broker(&[("cxw", 1), ("cxw.dlq", 1)]);
    let brokers = scenario.brokers.clone();
    let (topic, dead_letter_topic) = (scenario.topic("cxw"), scenario.topic("cxw.dlq"));
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    let messages = vec![
        (0, "k", nps("w1", "acme", None, now, 10)),
        (0, "k", nps("w2", "acme", None, now + HOUR, 10)),
        (0, "k", br#"{"event_id":"w3","type":"survey_response","occurred_at":"9999-12-31T23:59:59Z","brand":"acme","survey":"nps","score":10}"#.to_vec()),
        (0, "k", nps("w4", "acme", None, now - 40 * DAY, 10)),
    ];
    produce(&producer(&brokers), &topic, &messages);
    let worker = scenario.start("wall", &worker_config("cxpulse-wall", &topic, "wall"));
    let metrics = wait_for(Duration::from_secs(60), || {
        worker.metrics().filter(|m| m.get("cxpulse_dead_letters_total", &[]) == Some(3.0))
    })
    .unwrap_or_else(|| panic!("no dead letters; log:\n{}", worker.log()));
    assert_eq!(
        metrics.get("cxpulse_events_rejected_total", &[("reason", "too_far_in_future")]),
        Some(2.0)
    );
    assert_eq!(metrics.get("cxpulse_events_rejected_total", &[("reason", "too_old")]), Some(1.0));
    assert_eq!(
        metrics.get(
            "cxpulse_nps_responses",
            &[("brand", "acme"), ("segment", "all"), ("window", "1h"), ("category", "promoter")]
        ),
        Some(1.0)
    );
    let letters = read_topic(&brokers, &dead_letter_topic, 1, 3, Duration::from_secs(20));
    let reasons: Vec<_> = letters.iter().map(|l| l.headers["cxpulse-error"].clone()).collect();
    assert_eq!(reasons, ["too_far_in_future", "too_far_in_future", "too_old"]);
}
