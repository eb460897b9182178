use super::*;
use cxpulse_core::alerts::{AlertOverride, AlertPolicy};
use cxpulse_core::secret::Secret;
use cxpulse_core::{ClockMode, Engine, EngineConfig, SourcePartition};

const T0: i64 = 1_795_428_000_000;

/// An engine with `pairs` brand/segment pairs, each with NPS answers in every step of the hour;
/// brand `b0`'s answers are mostly detractors.
fn engine_with(pairs: usize) -> Engine {
    let config = EngineConfig { clock: ClockMode::Event, ..EngineConfig::default() };
    let mut engine = Engine::new(config).unwrap();
    let mut id = 0;
    for pair in 0..pairs {
        let (brand, segment) = (format!("b{}", pair / 4), format!("s{}", pair % 4));
        for minute in 0..60 {
            for k in 0..3 {
                id += 1;
                let score = if brand == "b0" { [2, 9, 4][k] } else { [10, 9, 5][k] };
                let at = T0 - minute * 60_000;
                let event = format!(
                    r#"{{"event_id":"e{id}","type":"survey_response","occurred_at":{at},"brand":"{brand}","segment":"{segment}","survey":"nps","score":{score}}}"#
                );
                engine.process(SourcePartition { topic: 0, partition: 0 }, event.as_bytes(), T0);
            }
        }
    }
    engine
}

fn view(policy: &AlertPolicy) -> PageView<'_> {
    PageView { policy, window: 0, now_ms: T0, version: "9.9.9", health: HealthFigures::default() }
}

fn policy() -> AlertPolicy {
    AlertPolicy {
        overrides: vec![AlertOverride {
            brand: "b0".into(),
            segment: None,
            nps_threshold: Some(10.0),
            min_responses: None,
            churn_threshold: None,
        }],
        ..AlertPolicy::default()
    }
}

#[test]
fn a_hundred_pairs_fit_in_200_kb() {
    let mut engine = engine_with(100);
    let policy = policy();
    let html = render_page(&engine.snapshot_with_steps(T0), &view(&policy));
    assert_eq!(html.matches("<tr id=r").count(), 100);
    eprintln!("page at 100 pairs, 60 answered steps each: {} bytes", html.len());
    assert!(html.len() < 200 * 1024, "{} bytes", html.len());
    assert!(!html.contains("http://") && !html.contains("https://"), "external reference");
}

#[test]
fn past_the_row_cap_the_pairs_below_stay() {
    let mut engine = engine_with(MAX_ROWS + 8);
    let policy = policy();
    let html = render_page(&engine.snapshot_with_steps(T0), &view(&policy));
    assert_eq!(html.matches("<tr id=r").count(), MAX_ROWS);
    assert_eq!(html.matches("data-below=1").count(), 4, "b0's four segments");
    assert!(html.contains(&format!("Showing {MAX_ROWS} of {} brand/segment pairs", MAX_ROWS + 8)));
}

#[test]
fn an_empty_engine_says_so() {
    let config = EngineConfig { clock: ClockMode::Event, ..EngineConfig::default() };
    let mut engine = Engine::new(config).unwrap();
    let policy = AlertPolicy::default();
    let html = render_page(&engine.snapshot_with_steps(T0), &view(&policy));
    assert!(html.contains("No events counted yet.") && html.contains("no events yet"));
}

#[test]
fn below_threshold_rows_are_marked_and_listed() {
    let mut engine = engine_with(8);
    let policy = policy();
    let html = render_page(&engine.snapshot_with_steps(T0), &view(&policy));
    assert_eq!(html.matches("data-below=1").count(), 4, "b0's four segments");
    assert!(html.contains(r#"data-brand="b0" data-segment="s2" data-below=1"#));
    assert!(html.contains(r#"data-brand="b1" data-segment="s2" data-below=0"#));
    assert!(html.contains("Below NPS threshold in the last 1h: <a href=\"#r"));
    assert!(html.contains("<title>(4 below) cxpulse</title>"));
}

#[test]
fn trends_hold_one_entry_per_step() {
    let mut engine = engine_with(1);
    let policy = AlertPolicy::default();
    let html = render_page(&engine.snapshot_with_steps(T0), &view(&policy));
    let nps = html.split("data-nps=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap();
    let values: Vec<&str> = nps.split(',').collect();
    assert_eq!(values.len(), 60);
    // b0 answers 2, 9, 4: a promoter and two detractors in every step.
    assert!(values.iter().all(|v| *v == "-33"), "{nps}");
    let path = html.split("class=l d=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
    // One absolute start, then 59 relative steps of 2 px, all level.
    assert_eq!(path.matches('M').count(), 1, "{path}");
    assert_eq!(path.matches(" 2 0").count() + path.matches("l2 0").count(), 59, "{path}");
}

#[test]
fn basic_and_bearer_credentials_carry_the_token() {
    let mut headers = HeaderMap::new();
    assert!(!authorized(&headers, &BearerToken::new(Some(&Secret::new("s3cret")))));
    headers.insert(header::AUTHORIZATION, "Basic b3BzOnMzY3JldA==".parse().unwrap()); // ops:s3cret
    assert!(authorized(&headers, &BearerToken::new(Some(&Secret::new("s3cret")))));
    assert!(!authorized(&headers, &BearerToken::new(Some(&Secret::new("s3cre")))));
    headers.insert(header::AUTHORIZATION, "bAsIc b3BzOnMzY3JldA==".parse().unwrap());
    assert!(authorized(&headers, &BearerToken::new(Some(&Secret::new("s3cret")))));
    headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
    assert!(authorized(&headers, &BearerToken::new(Some(&Secret::new("s3cret")))));
    headers.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
    assert!(!authorized(&headers, &BearerToken::new(Some(&Secret::new("s3cret")))));
    assert_eq!(base64_decode("YTpiOmM=").as_deref(), Some(&b"a:b:c"[..]));
}

#[test]
fn rates_cover_the_last_minute() {
    let mut rates = RateTracker::default();
    assert_eq!(rates.record(0, 0, 0), None);
    assert_eq!(rates.record(10_000, 1_000, 10), Some((100.0, 1.0)));
    rates.record(70_000, 7_000, 10);
    // The sample at 0 is dropped: the one at 10 s is also over a minute old.
    assert_eq!(rates.record(80_000, 9_000, 10), Some((8_000.0 / 70.0, 0.0)));
}

#[test]
fn the_drop_evidence_fills_a_bar_and_a_silent_series_is_marked() {
    let mut engine = engine_with(3);
    let mut snapshot = engine.snapshot_with_steps(T0);
    snapshot.series[0].nps_drop_evidence = 1.4;
    snapshot.series[1].nps_drop_evidence = 0.3;
    // 180 answers in the hour, none before: over the 7-day window that is about 1.07 an hour,
    // at which 10 answers take 9.3 hours. Series 2 has had none for 10 hours.
    snapshot.series[2].last_answer_wall_ms = Some(T0 - 10 * 3_600_000);
    snapshot.series[1].last_answer_wall_ms = Some(T0 - 60_000);
    let policy = AlertPolicy { silence_min_rate: 1.0, ..AlertPolicy::default() };
    let html = render_page(&snapshot, &view(&policy));
    assert!(html.contains(r#"class="ev bad" data-evidence="1.400""#), "{html}");
    assert!(html.contains(r#"<i style="width:100%">"#), "a full bar at the alarm");
    assert!(html.contains(r#"class="ev ok" data-evidence="0.300""#));
    assert!(html.contains(r#"<i style="width:30%">"#));
    assert_eq!(html.matches(">SILENT<").count(), 1, "only series 2");
    assert!(html.contains("none for 10h"), "how long");
    snapshot.series[2].last_answer_wall_ms = Some(T0 - 9 * 3_600_000);
    let html = render_page(&snapshot, &view(&policy));
    assert!(!html.contains(">SILENT<"), "9 hours is within its usual gaps");
    let quiet = AlertPolicy { silence_min_rate: 5.0, ..AlertPolicy::default() };
    snapshot.series[2].last_answer_wall_ms = Some(T0 - 48 * 3_600_000);
    let html = render_page(&snapshot, &view(&quiet));
    assert!(!html.contains(">SILENT<"), "below the rate that makes a gap mean anything");
}

#[test]
fn a_row_shows_repeat_purchases_and_churn_by_nps_category() {
    let mut engine = engine_with(2);
    let p = SourcePartition { topic: 0, partition: 0 };
    let lifecycle = |id: &str, action: &str, customer: &str| {
        format!(
            r#"{{"event_id":"{id}","type":"customer_lifecycle","occurred_at":{T0},"brand":"b0","segment":"s1","action":"{action}","customer_id":"{customer}"}}"#
        )
    };
    let answer = |id: &str, score: u8, customer: &str| {
        format!(
            r#"{{"event_id":"{id}","type":"survey_response","occurred_at":{},"brand":"b0","segment":"s1","survey":"nps","score":{score},"customer_id":"{customer}"}}"#,
            T0 - 60_000
        )
    };
    for json in [
        lifecycle("p1", "purchase", "ann"),
        lifecycle("p2", "purchase", "ann"),
        lifecycle("p3", "purchase", "bob"),
        lifecycle("p4", "purchase", "cid"),
        lifecycle("p5", "purchase", "dan"),
        answer("a1", 2, "ann"),
        answer("a2", 3, "bob"),
        answer("a3", 10, "cid"),
        lifecycle("c1", "churn", "ann"),
        lifecycle("c2", "churn", "eve"),
    ] {
        engine.process(p, json.as_bytes(), T0);
    }
    let policy = policy();
    let html = render_page(&engine.snapshot_with_steps(T0), &view(&policy));
    let row = html.split("<tr id=r").find(|r| r.contains("data-segment=\"s1\"")).unwrap();
    assert!(row.contains("<td class=repeat>25.0 %<br><small>1 of 4 buyers</small>"), "{row}");
    assert!(
        row.contains(
            "<span title=promoters>0.0 %</span> / <span title=passives>–</span> / \
             <span title=detractors class=bad>50.0 %</span><br><small>2 churned, 1 unknown"
        ),
        "{row}"
    );
    let other = html.split("<tr id=r").find(|r| r.contains("data-segment=\"s0\"")).unwrap();
    assert!(other.contains("<td>–</td><td>–</td>"), "no customers, no figures: {other}");
}
