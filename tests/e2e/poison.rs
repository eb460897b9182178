//! Nothing stalls, nothing hides: hostile messages and a hostile dead-letter topic never stop
//! counting on other partitions, show up in the probes and metrics, and never delay a stop.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixture::*;
use rdkafka::producer::BaseProducer;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn nps_json(id: &str, n: usize) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","type":"survey_response","occurred_at":{},"brand":"acme","segment":"smb","survey":"nps","score":{}}}"#,
        now_ms(),
        n % 11
    )
    .into_bytes()
}

fn nps_total(worker: &WorkerProcess) -> Option<f64> {
    Some(worker.metrics()?.sum("cxpulse_nps_responses", &[("window", "1h")]))
}

fn wait_exact(worker: &WorkerProcess, expected: f64, what: &str) {
    let settled = wait_for(Duration::from_secs(90), || {
        (nps_total(worker) == Some(expected)).then_some(())?;
        std::thread::sleep(Duration::from_secs(1));
        (nps_total(worker) == Some(expected)).then_some(())
    });
    assert!(
        settled.is_some(),
        "{what}: expected {expected}, counted {:?}\nlog:\n{}",
        nps_total(worker),
        worker.log()
    );
}

/// A producer that may send messages of a few MB.
fn big_producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "4000000")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().expect("stdin").write_all(bytes).expect("write");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

fn config(group: &str, topic: &str) -> String {
    WorkerConfig::new(group, topic).batch_size(256).checkpoint_interval("1s").toml()
}

#[test]
fn a_megabyte_message_is_dead_lettered_truncated_and_everything_else_counted() {
    const TOPIC: &str = "poison";
    const EVENTS: usize = 4_000;
    let cluster = cluster(&[(TOPIC, 8), ("poison.dlq", 1)]);
    let brokers = cluster.bootstrap_servers();
    let mut poison = b"{\"event_id\":\"huge\",\"pad\":\"".to_vec();
    poison.resize(1_200_000, b'x');
    let mut messages: Vec<(i32, &str, Vec<u8>)> =
        (0..EVENTS).map(|n| ((n % 8) as i32, "k", nps_json(&format!("p-{n}"), n))).collect();
    messages.insert(EVENTS / 2, (3, "k", poison.clone()));
    messages.insert(EVENTS / 3, (5, "k", poison.clone()));
    produce(&big_producer(&brokers), TOPIC, &messages);

    let worker = start_worker("poison", &brokers, &config("g-poison", TOPIC));
    wait_exact(&worker, EVENTS as f64, "every event but the two poison messages");
    let letters = read_topic(&brokers, "poison.dlq", 1, 2, Duration::from_secs(30));
    assert_eq!(letters.len(), 2, "two dead letters, each written once");
    let digest = sha256_hex(&poison);
    for letter in &letters {
        assert_eq!(letter.headers.get("cxpulse-error").map(String::as_str), Some("too_large"));
        assert_eq!(letter.headers.get("cxpulse-truncated").map(String::as_str), Some("1200000"));
        assert_eq!(letter.headers.get("cxpulse-original-sha256"), Some(&digest));
        assert!(letter.payload.len() < 1_000_000, "truncated to fit: {}", letter.payload.len());
        assert!(poison.starts_with(&letter.payload), "the payload's beginning is kept");
    }
    let metrics = worker.metrics().expect("metrics");
    assert_eq!(metrics.get("cxpulse_dead_letters_total", &[]), Some(2.0));
    assert_eq!(metrics.get("cxpulse_partitions_blocked", &[]), Some(0.0));
    assert_eq!(committed_total(&brokers, "g-poison", TOPIC, 8), (EVENTS + 2) as i64);
}

#[test]
fn a_dead_letter_topic_that_refuses_for_good_is_counted_and_counting_goes_on() {
    const TOPIC: &str = "refused";
    let cluster = cluster(&[(TOPIC, 2), ("refused.dlq", 1)]);
    let brokers = cluster.bootstrap_servers();
    cluster
        .topic_error("refused.dlq", RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
        .expect("inject topic error");
    let mut messages: Vec<(i32, &str, Vec<u8>)> =
        (0..200).map(|n| ((n % 2) as i32, "k", nps_json(&format!("r-{n}"), n))).collect();
    for n in 0..6 {
        messages.insert(50 + n * 20, ((n % 2) as i32, "k", b"{not json".to_vec()));
    }
    produce(&producer(&brokers), TOPIC, &messages);
    let mut worker = start_worker("refused", &brokers, &config("g-refused", TOPIC));
    wait_exact(&worker, 200.0, "valid events while the dead-letter topic refuses");
    let failures = wait_for(Duration::from_secs(60), || {
        let metrics = worker.metrics()?;
        let failed =
            metrics.get("cxpulse_dead_letter_failures_total", &[("reason", "not_authorized")])?;
        (failed == 6.0).then_some(metrics)
    })
    .unwrap_or_else(|| panic!("failures not counted; log:\n{}", worker.log()));
    assert_eq!(failures.get("cxpulse_partitions_blocked", &[]), Some(0.0));
    assert_eq!(http_get(&worker.addr, "/readyz").map(|(s, _)| s), Some(200));
    let exit = worker.terminate(Duration::from_secs(10)).expect("exits within 10 s");
    assert!(exit.success(), "log:\n{}", worker.log());
    assert_eq!(committed_total(&brokers, "g-refused", TOPIC, 2), 206, "offsets moved past them");
    let log = worker.log();
    let logged = log.lines().filter(|l| l.contains("dead letter refused for good")).count();
    assert_eq!(logged, 1, "one line per reason per minute:\n{log}");
}

#[test]
fn a_dead_letter_pending_blocks_only_its_partition_shows_and_never_delays_a_stop() {
    const TOPIC: &str = "pending";
    let cluster = cluster(&[(TOPIC, 4), ("pending.dlq", 1)]);
    let brokers = cluster.bootstrap_servers();
    let mut messages: Vec<(i32, &str, Vec<u8>)> =
        (0..800).map(|n| ((n % 4) as i32, "k", nps_json(&format!("w-{n}"), n))).collect();
    messages.insert(10, (2, "k", b"{not json".to_vec()));
    produce(&producer(&brokers), TOPIC, &messages);
    // Every produce is answered with a retriable error from now on: the letter stays pending.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5_000],
    );
    let mut worker = start_worker("pending", &brokers, &config("g-pending", TOPIC));
    wait_exact(&worker, 800.0, "other partitions and later messages keep counting");
    let blocked = wait_for(Duration::from_secs(30), || {
        let metrics = worker.metrics()?;
        (metrics.get("cxpulse_partitions_blocked", &[]) == Some(1.0)).then_some(())?;
        let (status, _) = http_get(&worker.addr, "/readyz")?;
        (status == 503).then_some(())
    });
    assert!(blocked.is_some(), "blocked partition not shown; log:\n{}", worker.log());
    assert_eq!(http_get(&worker.addr, "/healthz").map(|(s, _)| s), Some(200), "still live");
    let started = Instant::now();
    let exit = worker.terminate(Duration::from_secs(10)).expect("exits within 10 s");
    eprintln!("stop with dead letters pending took {:?}", started.elapsed());
    assert!(exit.success(), "log:\n{}", worker.log());
}
