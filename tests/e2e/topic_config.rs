//! The topic settings check at startup: on a real broker (`CXPULSE_TEST_BROKERS`; CI runs it on
//! tansu), a worker whose state topic is not compacted says so once in its log and in
//! `cxpulse_topic_config_warnings`, and `check-config --connect` prints it; on the mock cluster,
//! which cannot answer DescribeConfigs, the worker says so in one info line and counts as usual.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fixture::*;

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn nps_json(id: &str) -> Vec<u8> {
    format!(
        r#"{{"event_id":"{id}","type":"survey_response","occurred_at":{},"brand":"acme","survey":"nps","score":9}}"#,
        now_ms()
    )
    .into_bytes()
}

/// `cxpulse check-config --connect FILE`, run to completion.
fn check_config_connect(path: &std::path::Path) -> std::process::Output {
    Command::new(binary())
        .args(["check-config", "--connect"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("check-config")
}

fn topic_warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("topic setting will hurt")).collect()
}

#[test]
fn a_state_topic_not_compacted_is_said_in_the_log_the_metrics_and_check_config() {
    let Some(scenario) = Scenario::on_real_broker(&[
        TopicSpec { name: "cfg", partitions: 2, compacted: false },
        TopicSpec { name: "cfg.dlq", partitions: 1, compacted: false },
        TopicSpec { name: STATE_TOPIC, partitions: 1, compacted: false },
    ]) else {
        return;
    };
    let (topic, state) = (scenario.topic("cfg"), scenario.topic(STATE_TOPIC));
    let config = WorkerConfig::new("g-cfg", &topic);
    let worker = scenario.start("cfg", &config);
    produce(&scenario.producer(), &topic, &[(0, "k", nps_json("cfg-1"))]);
    let state_warning = [("topic", state.as_str()), ("setting", "cleanup.policy")];
    let metrics = wait_for(Duration::from_secs(30), || {
        worker
            .metrics()
            .filter(|m| m.get("cxpulse_topic_config_warnings", &state_warning).is_some())
    })
    .unwrap_or_else(|| panic!("no topic config warning in /metrics; log:\n{}", worker.log()));
    assert_eq!(metrics.get("cxpulse_topic_config_warnings", &state_warning), Some(1.0));
    assert_eq!(metrics.sum("cxpulse_topic_config_warnings", &[]), 1.0, "only the state topic");
    let log = worker.log();
    let warnings = topic_warnings(&log);
    assert_eq!(warnings.len(), 1, "one line:\n{log}");
    assert!(warnings[0].contains(&state) && warnings[0].contains("cleanup.policy"), "{log}");
    assert!(warnings[0].contains("WARN"), "{log}");
    // The check holds nothing up: the worker counts as usual.
    let counted = wait_for(Duration::from_secs(30), || {
        let m = worker.metrics()?;
        (m.sum("cxpulse_nps_responses", &[("window", "1h"), ("category", "promoter")]) == 1.0)
            .then_some(())
    });
    assert!(counted.is_some(), "{}", worker.log());

    // The same from check-config --connect, which exits 0 with warnings.
    let dir = TempDir::new("cfg-check");
    let path = dir.0.join("cxpulse.toml");
    let toml = scenario.config(&config).toml().replace(
        "[kafka]\n",
        &format!("[kafka]\n\"bootstrap.servers\" = \"{}\"\n", scenario.brokers),
    );
    std::fs::write(&path, toml).expect("config");
    let output = check_config_connect(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said: Vec<&str> = stdout.lines().filter(|l| l.starts_with("# warning: topic")).collect();
    assert_eq!(said.len(), 1, "{stdout}");
    assert!(said[0].contains(&format!("{state} cleanup.policy")), "{stdout}");
}

#[test]
fn check_config_connect_fails_only_when_no_broker_answers() {
    let dir = TempDir::new("cfg-down");
    let path = dir.0.join("cxpulse.toml");
    let nobody = format!("127.0.0.1:{}", free_port());
    std::fs::write(&path, WorkerConfig::bootstrap(&nobody, "cx").toml()).expect("config");
    let started = std::time::Instant::now();
    let output = check_config_connect(&path);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach Kafka"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "bounded: {:?}", started.elapsed());
}

#[test]
fn a_broker_that_cannot_describe_configs_gets_one_info_line() {
    let scenario = Scenario::new(&[("nodescribe", 1), ("nodescribe.dlq", 1)]);
    let worker = scenario.start("nodescribe", &WorkerConfig::new("g-nodescribe", "nodescribe"));
    let said = wait_for(Duration::from_secs(30), || {
        worker.log().contains("topic settings not checked").then_some(())
    });
    assert!(said.is_some(), "no line about the unchecked settings:\n{}", worker.log());
    produce(&scenario.producer(), "nodescribe", &[(0, "k", nps_json("nd-1"))]);
    let counted = wait_for(Duration::from_secs(30), || {
        let m = worker.metrics()?;
        (m.sum("cxpulse_nps_responses", &[("window", "1h"), ("category", "promoter")]) == 1.0)
            .then_some(m)
    });
    let metrics = counted.unwrap_or_else(|| panic!("not counted; log:\n{}", worker.log()));
    assert_eq!(metrics.sum("cxpulse_topic_config_warnings", &[]), 0.0);
    let log = worker.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("topic settings")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("INFO"), "an info line, not a warning: {log}");
    assert!(topic_warnings(&log).is_empty(), "{log}");
}
