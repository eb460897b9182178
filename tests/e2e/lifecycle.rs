//! The binary's lifecycle: the embedded demo comes up with data, and a worker stopped by SIGTERM
//! mid-stream commits exactly what it processed, so a second run in the same group neither
//! re-counts nor skips.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixture::*;

#[test]
fn demo_serves_nps_for_every_brand_within_15_seconds() {
    let port = free_port_pair();
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let child = Command::new(binary())
        .args(["demo", "--listen", &addr, "--rate", "400"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let dir = TempDir::new("demo");
    let mut demo =
        WorkerProcess { child, addr: addr.clone(), stderr_path: dir.0.join("none"), _dir: dir };
    let brands = ["acme", "globex", "initech", "umbrella"];
    let ready = wait_for(Duration::from_secs(15).saturating_sub(started.elapsed()), || {
        let metrics = demo.metrics()?;
        brands
            .iter()
            .all(|brand| {
                metrics.sum("cxpulse_nps_responses", &[("brand", brand), ("window", "1h")]) > 0.0
            })
            .then_some(metrics)
    });
    let metrics = ready.expect("NPS metrics for every demo brand within 15 s");
    assert!(metrics.sum("cxpulse_events_rejected_total", &[]) >= 0.0);
    let (status, _) = http_get(&addr, "/api/v1/scores").expect("scores endpoint");
    assert_eq!(status, 200);
    let exit = demo.terminate(Duration::from_secs(10)).expect("demo exits within 10 s of SIGTERM");
    assert!(exit.success(), "demo exit status {exit:?}");
}

const TOPIC: &str = "cxs";
const PARTITIONS: i32 = 4;
const EVENTS: usize = 30_000;

fn config(group: &str) -> WorkerConfig {
    WorkerConfig::new(group, TOPIC).batch_size(256)
}

#[test]
fn sigterm_commits_what_was_processed_and_a_restart_continues_exactly() {
    let scenario = Scenario::new(&[(TOPIC, PARTITIONS), ("cxs.dlq", 1)]);
    let brokers = scenario.brokers.clone();
    let producer_brokers = brokers.clone();
    // Events keep arriving while the first worker runs and is stopped.
    let producing = std::thread::spawn(move || {
        let producer = producer(&producer_brokers);
        let started = Instant::now();
        for chunk in 0..30 {
            let messages: Vec<(i32, &str, Vec<u8>)> = (0..EVENTS / 30)
                .map(|i| {
                    let n = chunk * (EVENTS / 30) + i;
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
                    let brand = ["acme", "globex", "initech"][n % 3];
                    let payload = format!(
                        r#"{{"event_id":"s-{n}","type":"survey_response","occurred_at":{now},"brand":"{brand}","survey":"nps","score":{}}}"#,
                        n % 11
                    );
                    ((n % PARTITIONS as usize) as i32, "k", payload.into_bytes())
                })
                .collect();
            produce(&producer, TOPIC, &messages);
            // About 6 s in all.
            let due = Duration::from_millis(200 * (chunk as u64 + 1));
            std::thread::sleep(due.saturating_sub(started.elapsed()));
        }
    });

    let group = "cxpulse-restart";
    let mut first = scenario.start("first", &config(group));
    wait_for(Duration::from_secs(60), || {
        first.metrics().filter(|m| {
            m.get("cxpulse_events_consumed_total", &[("topic", TOPIC)]).unwrap_or(0.0) >= 3_000.0
        })
    })
    .unwrap_or_else(|| panic!("first worker did not start consuming; log:\n{}", first.log()));
    let exit = first.terminate(Duration::from_secs(10)).expect("exit within 10 s of SIGTERM");
    assert!(exit.success(), "exit status {exit:?}; log:\n{}", first.log());
    let log = first.log();
    let consumed_first = final_count(&log, "consumed").expect("final consumed count in the log");
    let counted_first = final_count(&log, "counted").expect("final counted count");
    assert_eq!(consumed_first, counted_first, "every event is valid and distinct");
    let committed = committed_total(&brokers, group, TOPIC, PARTITIONS) as u64;
    assert_eq!(
        committed, consumed_first,
        "committed offsets cover exactly what the first run processed"
    );
    producing.join().expect("producer thread");
    assert!(
        consumed_first < EVENTS as u64,
        "the first run was stopped mid-stream ({consumed_first})"
    );

    let second = scenario.start("second", &config(group));
    let remaining = (EVENTS as u64 - consumed_first) as f64;
    let metrics = wait_for(Duration::from_secs(60), || {
        second.metrics().filter(|m| {
            m.get("cxpulse_events_consumed_total", &[("topic", TOPIC)]) == Some(remaining)
        })
    })
    .unwrap_or_else(|| {
        panic!("second worker did not consume the remaining {remaining}; log:\n{}", second.log())
    });
    // Nothing more arrives later: no re-reads.
    std::thread::sleep(Duration::from_secs(2));
    let settled = second.metrics().expect("metrics");
    assert_eq!(settled.get("cxpulse_events_consumed_total", &[("topic", TOPIC)]), Some(remaining));
    assert_eq!(metrics.get("cxpulse_events_counted_total", &[]), Some(remaining));
    // The first run's windows come back from its checkpoints: the second holds every event once.
    assert_eq!(settled.sum("cxpulse_nps_responses", &[("window", "1h")]), EVENTS as f64);
    assert_eq!(consumed_first as f64 + remaining, EVENTS as f64);
}

#[test]
fn a_broker_outage_turns_readiness_off_and_consumption_resumes_after_it() {
    let scenario = Scenario::new(&[("cxo", 2), ("cxo.dlq", 1)]);
    let brokers = scenario.brokers.clone();
    let batch = |from: usize| -> Vec<(i32, &'static str, Vec<u8>)> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        (from..from + 500)
            .map(|n| {
                let payload = format!(
                    r#"{{"event_id":"o-{n}","type":"survey_response","occurred_at":{now},"brand":"acme","survey":"nps","score":9}}"#
                );
                ((n % 2) as i32, "k", payload.into_bytes())
            })
            .collect()
    };
    produce(&producer(&brokers), "cxo", &batch(0));
    let mut worker = scenario.start("outage", &config("cxpulse-outage").topics(&["cxo"]));
    let consumed = |w: &WorkerProcess| {
        w.metrics().and_then(|m| m.get("cxpulse_events_consumed_total", &[("topic", "cxo")]))
    };
    let ready = |w: &WorkerProcess| http_get(&w.addr, "/readyz").map(|(status, _)| status == 200);
    wait_for(Duration::from_secs(60), || {
        (consumed(&worker) == Some(500.0) && ready(&worker) == Some(true)).then_some(())
    })
    .unwrap_or_else(|| panic!("not consuming and ready; log:\n{}", worker.log()));
    // An outage before the first commit would make the group re-read everything (at-least-once
    // offsets); this test is about the outage itself, so it starts once the offsets are committed.
    wait_for(Duration::from_secs(20), || {
        (committed_total(&brokers, "cxpulse-outage", "cxo", 2) == 500).then_some(())
    })
    .unwrap_or_else(|| panic!("offsets not committed; log:\n{}", worker.log()));

    scenario.cluster().broker_down(1).expect("broker down");
    wait_for(Duration::from_secs(20), || (ready(&worker) == Some(false)).then_some(()))
        .unwrap_or_else(|| {
            panic!("/readyz stayed 200 with the broker down; log:\n{}", worker.log())
        });
    assert_eq!(http_get(&worker.addr, "/healthz").map(|(s, _)| s), Some(200), "still alive");
    std::thread::sleep(Duration::from_secs(3));
    assert!(worker.child.try_wait().expect("wait").is_none(), "the worker survived the outage");

    scenario.cluster().broker_up(1).expect("broker up");
    produce(&producer(&brokers), "cxo", &batch(500));
    let windowed = |w: &WorkerProcess| {
        w.metrics().map(|m| m.sum("cxpulse_nps_responses", &[("window", "1h")]))
    };
    wait_for(Duration::from_secs(60), || {
        (windowed(&worker) == Some(1000.0) && ready(&worker) == Some(true)).then_some(())
    })
    .unwrap_or_else(|| panic!("did not resume; log:\n{}", worker.log()));
    // The session may have timed out during the outage: then the partitions came back through a
    // replay, which takes the already-counted messages into the windows only.
    std::thread::sleep(Duration::from_secs(1));
    let metrics = worker.metrics().expect("metrics");
    assert_eq!(windowed(&worker), Some(1000.0), "nothing lost, nothing twice");
    assert_eq!(
        metrics.get("cxpulse_events_counted_total", &[]),
        Some(1000.0),
        "no message counted twice"
    );
    let exit = worker.terminate(Duration::from_secs(10)).expect("exits");
    assert!(exit.success());
}
