//! `/api/v1/scores` version 1 from the real binary: named counts, scores with the NPS margin of
//! error, the alert verdict and each window's per-step history, validated against
//! `docs/scores.schema.json`; and the page and the API behind the bearer token.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::fixture::*;
use serde_json::Value;

fn schema_validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/scores.schema.json");
    let text = std::fs::read_to_string(path).expect("docs/scores.schema.json");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

fn assert_valid(validator: &jsonschema::Validator, document: &Value) {
    let errors: Vec<String> =
        validator.iter_errors(document).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "schema violations: {errors:#?}");
}

/// A GET with an optional `Authorization` value: `(status, head, body)`.
fn get(addr: &str, path: &str, authorization: Option<&str>) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

fn scores(addr: &str, query: &str) -> Option<Value> {
    let (status, _, body) = get(addr, &format!("/api/v1/scores{query}"), None)?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn survey(id: &str, at: i64, brand: &str, segment: &str, survey: &str, score: u8) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","type":"survey_response","occurred_at":{at},"brand":"{brand}","segment":"{segment}","survey":"{survey}","score":{score}}}"#
    )
    .into_bytes()
}

#[test]
fn version_1_names_counts_scores_and_step_history() {
    let scenario = Scenario::new(&[("scores", 2)]);
    let brokers = scenario.brokers.clone();
    let config = WorkerConfig::new("g-scores", "scores").clock("event").extra(
        "[alerts]\nnps_threshold = 0\nmin_responses = 3\n\
         [[alerts.override]]\nbrand = \"globex\"\nnps_threshold = 20",
    );
    let worker = scenario.start("scores", &config);

    // The event clock ends at `t`, half-way through a minute, ten minutes ago.
    let now_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
        / 60_000;
    let t = (now_minute - 10) * 60_000 + 30_000;
    let minute = 60_000;
    let mut messages: Vec<(i32, &str, Vec<u8>)> = vec![
        // acme/smb: two promoters now, a passive 2 minutes ago, a detractor 30 minutes ago.
        (0, "acme/smb", survey("a1", t, "acme", "smb", "nps", 10)),
        (1, "acme/smb", survey("a2", t, "acme", "smb", "nps", 9)),
        (0, "acme/smb", survey("a3", t - 2 * minute, "acme", "smb", "nps", 7)),
        (1, "acme/smb", survey("a4", t - 30 * minute, "acme", "smb", "nps", 3)),
        (0, "acme/smb", survey("a5", t, "acme", "smb", "csat", 5)),
        (0, "acme/smb", survey("a6", t, "acme", "smb", "ces", 6)),
        (0, "acme/smb", survey("a7", t, "acme", "smb", "ces", 2)),
        // globex/all: 1 promoter, 2 detractors (NPS -33.3), below its threshold of 20.
        (1, "globex/all", survey("g1", t, "globex", "all", "nps", 10)),
        (1, "globex/all", survey("g2", t - minute, "globex", "all", "nps", 2)),
        (1, "globex/all", survey("g3", t - minute, "globex", "all", "nps", 6)),
    ];
    let base = format!(
        r#"{{"event_id":"b1","type":"customer_base","occurred_at":{},"brand":"acme","segment":"smb","active_customers":200}}"#,
        t - 2 * 3_600_000
    );
    messages.push((0, "acme/smb", base.into_bytes()));
    let churn = format!(
        r#"{{"event_id":"c1","type":"customer_lifecycle","occurred_at":{t},"brand":"acme","segment":"smb","customer_id":"u1","action":"churn"}}"#
    );
    messages.push((0, "acme/smb", churn.into_bytes()));
    produce(&producer(&brokers), "scores", &messages);

    let document = wait_for(Duration::from_secs(60), || {
        let document = scores(&worker.addr, "")?;
        let counted = document["series"]
            .as_array()?
            .iter()
            .filter_map(|s| s["windows"]["30d"]["nps"].as_object())
            .flat_map(|nps| nps.values().filter_map(Value::as_u64))
            .sum::<u64>();
        (counted == 7).then_some(document)
    })
    .unwrap_or_else(|| panic!("scores never showed 7 NPS answers:\n{}", worker.log()));

    let validator = schema_validator();
    assert_valid(&validator, &document);
    assert_eq!(document["version"], 1);
    assert_eq!(document["clock_ms"], t);
    let names: Vec<&str> =
        document["windows"].as_array().unwrap().iter().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(names, ["1h", "24h", "7d", "30d"]);
    assert_eq!(document["windows"][0]["step_ms"], 60_000);
    assert_eq!(document["windows"][0]["first_step_start_ms"], (t / minute - 59) * minute);

    let series = |brand: &str| {
        document["series"].as_array().unwrap().iter().find(|s| s["brand"] == brand).unwrap()
    };
    let acme = series("acme");
    let hour = &acme["windows"]["1h"];
    assert_eq!(hour["nps"], serde_json::json!({"promoter": 2, "passive": 1, "detractor": 1}));
    assert_eq!(hour["csat"], serde_json::json!({"satisfied": 1, "unsatisfied": 0}));
    assert_eq!(hour["ces"], serde_json::json!({"easy": 1, "not_easy": 1, "score_sum": 8}));
    assert_eq!(hour["customer_events"]["churn"], 1);
    assert_eq!(hour["customers_active_at_window_start"], 200);
    assert_eq!(acme["customers_active"], 199);
    let s = &hour["scores"];
    assert_eq!(s["nps_responses"], 4);
    assert!((s["nps_score"].as_f64().unwrap() - 25.0).abs() < 1e-9, "{s}");
    // p = .5, d = .25: 1.96 * 100 * sqrt((.75 - .0625) / 4)
    let margin = 1.96 * 100.0 * (0.6875f64 / 4.0).sqrt();
    assert!((s["nps_margin_of_error"].as_f64().unwrap() - margin).abs() < 1e-9, "{s}");
    assert_eq!(s["csat_ratio"], 1.0);
    assert_eq!(s["ces_mean"], 4.0);
    assert_eq!(s["churn_ratio"], 0.005);
    assert_eq!(hour["nps_below_threshold"], false);

    // The history: 60 one-minute steps, oldest first, the clock's step last.
    let steps = hour["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 60);
    let step = |i: usize| (steps[i]["promoter"].clone(), steps[i]["passive"].clone());
    assert_eq!(step(59), (2.into(), 0.into()));
    assert_eq!(step(57), (0.into(), 1.into()));
    assert_eq!(steps[29]["detractor"], 1);
    for window in ["1h", "24h", "7d", "30d"] {
        let w = &acme["windows"][window];
        let steps = w["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 60, "{window}");
        for category in ["promoter", "passive", "detractor"] {
            let total: u64 = steps.iter().filter_map(|s| s[category].as_u64()).sum();
            assert_eq!(Some(total), w["nps"][category].as_u64(), "{window} {category}");
        }
    }

    let globex = series("globex");
    assert_eq!(globex["nps_alert_threshold"], 20.0);
    assert_eq!(globex["nps_alert_min_responses"], 3);
    assert_eq!(globex["windows"]["1h"]["nps_below_threshold"], true);
    assert_eq!(acme["nps_alert_threshold"], 0.0);

    // One window without history: still the same schema.
    let small = scores(&worker.addr, "?window=24h&steps=false").expect("filtered scores");
    assert_valid(&validator, &small);
    assert_eq!(small["windows"].as_array().map(Vec::len), Some(1));
    let acme_small = small["series"].as_array().unwrap().iter().find(|s| s["brand"] == "acme");
    let day = &acme_small.unwrap()["windows"];
    assert_eq!(day.as_object().map(|o| o.len()), Some(1));
    assert!(day["24h"]["steps"].is_null() && day["24h"]["nps"]["promoter"] == 2);
    let (status, _, body) = get(&worker.addr, "/api/v1/scores?window=2h", None).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("1h, 24h, 7d, 30d"), "{body}");

    // The schema is strict enough to catch the old positional arrays.
    let mut positional = document.clone();
    positional["series"][0]["windows"]["1h"]["nps"] = serde_json::json!([2, 1, 1]);
    assert!(!validator.is_valid(&positional));
}

#[test]
fn the_page_and_the_api_take_the_token() {
    let scenario = Scenario::new(&[("tokened", 1)]);
    let config =
        WorkerConfig::new("g-tokened", "tokened").extra("[http]\nbearer_token = \"page-s3cret\"");
    let worker = scenario.start("tokened", &config);
    let up = wait_for(Duration::from_secs(30), || {
        get(&worker.addr, "/healthz", None).filter(|(status, _, _)| *status == 200)
    });
    assert!(up.is_some(), "worker never came up:\n{}", worker.log());

    let (status, head, _) = get(&worker.addr, "/", None).unwrap();
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase().contains("www-authenticate: basic realm=\"cxpulse\""),
        "{head}"
    );
    // "ops:wrong" and "ops:page-s3cret" in base64: any user name, the token as password.
    assert_eq!(get(&worker.addr, "/", Some("Basic b3BzOndyb25n")).unwrap().0, 401);
    let (status, head, body) = get(&worker.addr, "/", Some("Basic b3BzOnBhZ2UtczNjcmV0")).unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/html") && body.contains("<div id=live "), "{head}\n{body}");
    let (status, _, _) = get(&worker.addr, "/", Some("Bearer page-s3cret")).unwrap();
    assert_eq!(status, 200);

    assert_eq!(get(&worker.addr, "/api/v1/scores", None).unwrap().0, 401);
    let (status, _, body) =
        get(&worker.addr, "/api/v1/scores", Some("Bearer page-s3cret")).unwrap();
    assert_eq!(status, 200);
    let document: Value = serde_json::from_str(&body).expect("JSON");
    assert_valid(&schema_validator(), &document);
    assert_eq!(document["version"], 1);
}
