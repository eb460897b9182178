//! The gateway end to end: the real `cxpulse gateway` and `cxpulse run` as processes on a mock
//! cluster (the delivery test on the real broker of `CXPULSE_TEST_BROKERS` when it is set). Each survey tool's documented delivery, posted as the tool would, is counted exactly
//! once in the worker's `/metrics`; updates correct, retries do not double, bad credentials get
//! 401, and a broker outage answers 503 until the tool's retry goes through, counted once.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::fixture::*;
use serde_json::{json, Value};

const TYPEFORM_SECRET: &str = "tf-secret";
const EVENTS_TOKEN: &str = "events-token";
const WOOTRIC_SECRET: &str = "w-secret";

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).unwrap().to_rfc3339()
}

fn fixture(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhooks/");
    std::fs::read_to_string(format!("{path}{name}")).unwrap()
}

/// A fixture with its time fields moved to now, so that the worker's windows count it.
fn fresh(name: &str) -> Value {
    let mut v: Value = serde_json::from_str(&fixture(name)).unwrap();
    let now = now_secs();
    match name.split(['-', '.']).next().unwrap() {
        "delighted" => v["event_data"]["created_at"] = json!(now),
        "typeform" => v["form_response"]["submitted_at"] = json!(rfc3339(now)),
        "survicate" => v["event"]["questionAnswered"]["timestamp"] = json!(rfc3339(now)),
        "wootric" => {
            v["response"]["created_at"] = json!(rfc3339(now));
            v["response"]["updated_at"] = json!(rfc3339(now));
        }
        "asknicely" => v["question"]["responded"] = json!(now.to_string()),
        other => panic!("no kind {other}"),
    }
    v
}

fn gateway_config(brokers: &str, topic: &str, listen: &str) -> String {
    let gateway = format!(
        r#"
[gateway]
listen = "{listen}"
token = "{EVENTS_TOKEN}"
ack_timeout = "2s"
retry_after_seconds = 7
max_body_bytes = 65536
[[gateway.sources]]
name = "delighted-acme"
kind = "delighted"
brand = "delighted"
segment_from = "event_data.person_properties.plan"
token = "d-token"
[[gateway.sources]]
name = "typeform-acme"
kind = "typeform"
brand = "typeform"
secret = "{TYPEFORM_SECRET}"
score_field = "readable_ref_nps"
[[gateway.sources]]
name = "survicate-acme"
kind = "survicate"
brand = "survicate"
token = "s-token"
[[gateway.sources]]
name = "wootric-acme"
kind = "wootric"
brand = "wootric"
segment_from = "response.end_user_properties.pricing_plan"
token = "w-token"
[[gateway.sources]]
name = "wootric-signed"
kind = "wootric"
brand = "wootric-signed"
secret = "{WOOTRIC_SECRET}"
[[gateway.sources]]
name = "asknicely-acme"
kind = "asknicely"
brand_from = "person.segment"
token = "a-token"
"#
    );
    WorkerConfig::bootstrap(brokers, topic).extra(&gateway).toml()
}

struct Gateway {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(brokers: &str, topic: &str) -> Gateway {
    let dir = TempDir::new("gateway");
    let addr = format!("127.0.0.1:{}", free_port());
    let path = dir.0.join("gateway.toml");
    std::fs::write(&path, gateway_config(brokers, topic, &addr)).unwrap();
    let log = std::fs::File::create(dir.0.join("stderr.log")).unwrap();
    let child = Command::new(binary())
        .args(["gateway", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let gateway = Gateway { child, addr, _dir: dir };
    let up = wait_for(Duration::from_secs(20), || {
        http_get(&gateway.addr, "/healthz").filter(|(s, _)| *s == 200)
    });
    assert!(up.is_some(), "gateway never answered /healthz");
    gateway
}

/// A bare HTTP/1.0 POST: `(status, head, body)`.
fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut request = format!("POST {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (key, value) in headers {
        request.push_str(&format!("{key}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    // The server may answer (413, 401) before reading a large body; a reset is fine then.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).to_string();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn post_json(addr: &str, path: &str, bearer: &str, body: &Value) -> (u16, String, String) {
    let auth = format!("Bearer {bearer}");
    post(addr, path, &[("Authorization", &auth)], body.to_string().as_bytes())
}

fn hmac(digest: openssl::hash::MessageDigest, secret: &str, body: &[u8]) -> Vec<u8> {
    let key = openssl::pkey::PKey::hmac(secret.as_bytes()).unwrap();
    let mut signer = openssl::sign::Signer::new(digest, &key).unwrap();
    signer.update(body).unwrap();
    signer.sign_to_vec().unwrap()
}

fn typeform_signature(body: &[u8]) -> String {
    let digest = hmac(openssl::hash::MessageDigest::sha256(), TYPEFORM_SECRET, body);
    format!("sha256={}", openssl::base64::encode_block(&digest))
}

fn wootric_signature(body: &[u8]) -> String {
    let digest = hmac(openssl::hash::MessageDigest::sha1(), WOOTRIC_SECRET, body);
    format!("sha1={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// NPS answers of `brand` in the worker's 1h window, by category.
fn nps(worker: &WorkerProcess, brand: &str) -> Option<[f64; 3]> {
    let m = worker.metrics()?;
    let at = |category| {
        m.sum(
            "cxpulse_nps_responses",
            &[("brand", brand), ("window", "1h"), ("category", category)],
        )
    };
    Some([at("promoter"), at("passive"), at("detractor")])
}

fn assert_nps(worker: &WorkerProcess, brand: &str, expected: [f64; 3]) {
    let settled = wait_for(Duration::from_secs(30), || {
        (nps(worker, brand)? == expected).then_some(())?;
        std::thread::sleep(Duration::from_millis(500));
        (nps(worker, brand)? == expected).then_some(())
    });
    assert!(
        settled.is_some(),
        "{brand}: expected {expected:?}, worker has {:?}\n{}",
        nps(worker, brand),
        worker.log()
    );
}

#[test]
fn every_kind_counts_once_updates_correct_and_credentials_are_checked() {
    const TOPIC: &str = "gw-events";
    let scenario = Scenario::on_either_broker(&[(TOPIC, 4), ("gw-events.dlq", 1)]);
    let brokers = scenario.brokers.clone();
    let topic = scenario.topic(TOPIC);
    let worker = scenario.start("gw-worker", &WorkerConfig::new("g-gw", &topic));
    let gateway = start_gateway(&brokers, &topic);
    let addr = gateway.addr.as_str();

    // Delighted: counted, a retried delivery counts once, an update corrects the answer.
    let delighted = fresh("delighted.json");
    for _ in 0..2 {
        let (status, _, body) =
            post_json(addr, "/v1/webhooks/delighted-acme", "d-token", &delighted);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"accepted\":1"), "{body}");
    }
    assert_nps(&worker, "delighted", [1.0, 0.0, 0.0]);
    let mut update = delighted.clone();
    update["event_id"] = json!("delighted-update-1");
    update["event_data"]["score"] = json!("3");
    assert_eq!(post_json(addr, "/v1/webhooks/delighted-acme", "d-token", &update).0, 200);
    assert_nps(&worker, "delighted", [0.0, 0.0, 1.0]);

    // Typeform: signed with HMAC-SHA256; a bad signature is refused.
    let typeform = fresh("typeform.json").to_string();
    let signature = typeform_signature(typeform.as_bytes());
    let (status, _, body) = post(
        addr,
        "/v1/webhooks/typeform-acme",
        &[("Typeform-Signature", &signature)],
        typeform.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let forged = typeform_signature(b"another body");
    let (status, _, _) = post(
        addr,
        "/v1/webhooks/typeform-acme",
        &[("Typeform-Signature", &forged)],
        typeform.as_bytes(),
    );
    assert_eq!(status, 401);
    assert_nps(&worker, "typeform", [1.0, 0.0, 0.0]);

    // Survicate: the NPS question counts (its token in Survicate's own `Token` header), another
    // question of the same response is ignored.
    let survicate = fresh("survicate-nps.json").to_string();
    let (status, _, body) =
        post(addr, "/v1/webhooks/survicate-acme", &[("Token", "s-token")], survicate.as_bytes());
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = post_json(
        addr,
        "/v1/webhooks/survicate-acme?x=1",
        "s-token",
        &fresh("survicate-other-question.json"),
    );
    assert_eq!((status, body.contains("\"ignored\"")), (200, true), "{body}");
    assert_nps(&worker, "survicate", [1.0, 0.0, 0.0]);

    // Wootric, form-encoded with the token in the URL (the JSON twin is the same delivery).
    let now = now_secs();
    let stamp = chrono::DateTime::from_timestamp(now, 0)
        .unwrap()
        .format("%Y-%m-%d%%20%H%%3A%M%%3A%S%%20%%2B0000");
    let form = fixture("wootric-form.txt")
        .replace("2016-08-04%2013%3A57%3A26%20-0700", &stamp.to_string());
    let form_type = [("Content-Type", "application/x-www-form-urlencoded")];
    let (status, _, body) =
        post(addr, "/v1/webhooks/wootric-acme?token=w-token", &form_type, form.as_bytes());
    assert_eq!(status, 200, "{body}");
    let (status, _, _) =
        post(addr, "/v1/webhooks/wootric-acme?token=wrong", &form_type, form.as_bytes());
    assert_eq!(status, 401);
    assert_nps(&worker, "wootric", [0.0, 1.0, 0.0]);
    let metrics = worker.metrics().unwrap();
    assert_eq!(
        metrics.sum("cxpulse_nps_responses", &[("brand", "wootric"), ("segment", "Enterprise")]),
        4.0,
        "segment read from the payload, in all four windows"
    );

    // Wootric with a signing secret: the JSON body, signed; a body changed after signing is not.
    let signed = fresh("wootric.json").to_string();
    let signature = wootric_signature(signed.as_bytes());
    let header = [("X-Wootric-Signature", signature.as_str())];
    assert_eq!(post(addr, "/v1/webhooks/wootric-signed", &header, signed.as_bytes()).0, 200);
    let tampered = signed.replace("\"score\":7", "\"score\":10");
    assert_ne!(tampered, signed);
    assert_eq!(post(addr, "/v1/webhooks/wootric-signed", &header, tampered.as_bytes()).0, 401);
    assert_nps(&worker, "wootric-signed", [0.0, 1.0, 0.0]);

    // AskNicely: the brand read from the payload, the score sent as a string.
    let (status, _, body) =
        post_json(addr, "/v1/webhooks/asknicely-acme", "a-token", &fresh("asknicely.json"));
    assert_eq!(status, 200, "{body}");
    assert_nps(&worker, "general", [1.0, 0.0, 0.0]);

    // No token, wrong token, unknown source, too large.
    assert_eq!(post(addr, "/v1/webhooks/delighted-acme", &[], b"{}").0, 401);
    assert_eq!(post_json(addr, "/v1/webhooks/delighted-acme", "s-token", &delighted).0, 401);
    assert_eq!(post_json(addr, "/v1/webhooks/nobody", "d-token", &delighted).0, 404);
    let huge = vec![b' '; 70_000];
    assert_eq!(post(addr, "/v1/events", &[], &huge).0, 401, "the token comes before the body");
    assert_eq!(post(addr, "/v1/webhooks/delighted-acme", &[], &huge).0, 401);
    assert_eq!(post(addr, "/v1/webhooks/nobody", &[], &huge).0, 404);
    assert_eq!(post(addr, "/v1/events", &[("Authorization", "Bearer events-token")], &huge).0, 413);

    // /v1/events: an NDJSON batch with one bad event; the bad one is listed and dead-lettered.
    let ms = now * 1000;
    let batch = format!(
        "{{\"event_id\":\"v1-a\",\"type\":\"survey_response\",\"occurred_at\":{ms},\"brand\":\"direct\",\"survey\":\"nps\",\"score\":10}}\n\
         {{\"event_id\":\"v1-b\",\"type\":\"survey_response\",\"occurred_at\":{ms},\"brand\":\"direct\",\"survey\":\"nps\",\"score\":11}}\n"
    );
    assert_eq!(post(addr, "/v1/events", &[], batch.as_bytes()).0, 401);
    let (status, _, body) =
        post(addr, "/v1/events", &[("Authorization", "Bearer events-token")], batch.as_bytes());
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["accepted"], 1);
    assert_eq!(reply["rejected"][0]["index"], 1);
    assert_eq!(reply["rejected"][0]["reason"], "score_out_of_range");
    assert_nps(&worker, "direct", [1.0, 0.0, 0.0]);
    let letters =
        read_topic(&brokers, &scenario.topic("gw-events.dlq"), 1, 1, Duration::from_secs(20));
    assert_eq!(letters.len(), 1, "one dead letter");
    assert_eq!(
        letters[0].headers.get("cxpulse-error").map(String::as_str),
        Some("score_out_of_range")
    );
    assert!(String::from_utf8_lossy(&letters[0].payload).contains("v1-b"));

    // The gateway's own metrics tell the same story.
    let (_, text) = http_get(addr, "/metrics").unwrap();
    let m = Metrics::parse(&text);
    let events = |source: &str, outcome: &str| {
        m.get("cxpulse_gateway_events_total", &[("source", source), ("outcome", outcome)])
    };
    assert_eq!(events("delighted-acme", "accepted"), Some(3.0));
    assert_eq!(events("survicate-acme", "ignored"), Some(1.0));
    assert_eq!(events("events", "rejected"), Some(1.0));
    let requests = |source: &str, code: &str| {
        m.get("cxpulse_gateway_requests_total", &[("source", source), ("code", code)])
    };
    assert_eq!(requests("typeform-acme", "401"), Some(1.0));
    assert_eq!(requests("unknown", "404"), Some(2.0));
    assert_eq!(requests("events", "413"), Some(1.0));
    // Nothing rejected by the worker: the gateway let through only what its parser accepts.
    let worker_metrics = worker.metrics().unwrap();
    assert_eq!(worker_metrics.sum("cxpulse_events_rejected_total", &[]), 0.0);
    assert_eq!(worker_metrics.sum("cxpulse_events_duplicate_total", &[]), 1.0);
}

#[test]
fn broker_outage_answers_503_and_the_retry_counts_once() {
    const TOPIC: &str = "gw-outage";
    let scenario = Scenario::new(&[(TOPIC, 2), ("gw-outage.dlq", 1)]);
    let brokers = scenario.brokers.clone();
    let worker = scenario.start("gw-outage-worker", &WorkerConfig::new("g-out", TOPIC));
    let gateway = start_gateway(&brokers, TOPIC);
    let delighted = fresh("delighted.json");
    // Warm up: one accepted answer proves the path before the outage.
    let mut first = delighted.clone();
    first["event_id"] = json!("warm-up");
    first["event_data"]["id"] = json!("warm-up-response");
    assert_eq!(post_json(&gateway.addr, "/v1/webhooks/delighted-acme", "d-token", &first).0, 200);
    assert_nps(&worker, "delighted", [1.0, 0.0, 0.0]);

    scenario.cluster().broker_down(1).expect("broker down");
    let (status, head, _) =
        post_json(&gateway.addr, "/v1/webhooks/delighted-acme", "d-token", &delighted);
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 7"), "{head}");
    scenario.cluster().broker_up(1).expect("broker up");

    // The tool retries until it is taken; the answer is counted once whatever the earlier try did.
    let accepted = wait_for(Duration::from_secs(60), || {
        let (status, _, _) =
            post_json(&gateway.addr, "/v1/webhooks/delighted-acme", "d-token", &delighted);
        (status == 200).then_some(())
    });
    assert!(accepted.is_some(), "the retry was never accepted");
    assert_nps(&worker, "delighted", [2.0, 0.0, 0.0]);
    std::thread::sleep(Duration::from_secs(2));
    assert_nps(&worker, "delighted", [2.0, 0.0, 0.0]);

    // Shutdown drains: a request waiting for Kafka when SIGTERM comes still gets its answer.
    scenario.cluster().broker_down(1).expect("broker down");
    let addr = gateway.addr.clone();
    let mut late = delighted.clone();
    late["event_id"] = json!("during-shutdown");
    let in_flight = std::thread::spawn(move || {
        post_json(&addr, "/v1/webhooks/delighted-acme", "d-token", &late)
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut gateway = gateway;
    let _ = Command::new("kill").args(["-TERM", &gateway.child.id().to_string()]).status();
    let (status, head, _) = in_flight.join().unwrap();
    assert_eq!(status, 503, "the request in flight was answered: {head}");
    let exited = wait_for(Duration::from_secs(15), || gateway.child.try_wait().ok().flatten());
    assert!(exited.is_some_and(|s| s.success()), "gateway exit: {exited:?}");
}
