//! The command line as a user meets it: check-config, one-line errors, produce.

use std::process::Command;
use std::time::Duration;

use crate::fixture::*;

fn cxpulse(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output =
        Command::new(binary()).args(args).envs(env.iter().copied()).output().expect("run cxpulse");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

fn example_config() -> String {
    format!("{}/config/cxpulse.toml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_config_prints_resolved_settings_with_secrets_redacted() {
    let (code, stdout, stderr) = cxpulse(
        &["check-config", &example_config()],
        &[
            ("CXPULSE_KAFKA__SASL_PASSWORD", "hunter2-secret"),
            ("CXPULSE_HTTP__BEARER_TOKEN", "bearer-secret"),
            ("CXPULSE_LIMITS__MAX_SERIES", "77"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("max_series = 77"), "{stdout}");
    assert!(stdout.contains(r#"sizes = ["1h", "24h", "7d", "30d"]"#), "{stdout}");
    assert!(stdout.contains(r#""sasl.password" = "<redacted>""#), "{stdout}");
    assert!(stdout.contains(r#"bearer_token = "<redacted>""#), "{stdout}");
    for secret in ["hunter2-secret", "bearer-secret"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
}

#[test]
fn bad_configs_fail_with_one_clear_line() {
    let dir = TempDir::new("badconfig");
    for (text, needle) in [
        ("[windows]\nsizes = [\"90x\"]\n", "unknown unit"),
        ("[limits]\nmax_series = -1\n", "invalid config"),
        ("[kafka]\n\"sasl.password\" = \"\"\n", "sasl.password"),
        ("not toml at all [", "invalid config"),
        ("[kafka]\n\"bootstrap.servers\" = [\"a:1\", \"b:2\"]\n", "bootstrap.servers"),
        ("[windows]\nmax_future_skew = \" 1h\"\n", "[windows] max_future_skew: "),
        ("[windows]\nsizes = [\" 1h\"]\n", "[windows] sizes: "),
        ("[kafka]\n\"no.such.property\" = \"x\"\n", "no.such.property"),
        ("[http]\nmax_connections = 0\n", "max_connections"),
    ] {
        let path = dir.0.join("bad.toml");
        std::fs::write(&path, text).expect("write");
        for command in ["check-config", "run"] {
            let args: Vec<&str> = match command {
                "run" => vec!["run", "--config", path.to_str().unwrap()],
                _ => vec!["check-config", path.to_str().unwrap()],
            };
            let (code, _, stderr) = cxpulse(&args, &[]);
            assert_eq!(code, 1, "{command} {text}");
            assert!(stderr.contains(needle), "{command} {text}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{command}: one line, got {stderr}");
        }
    }
}

#[test]
fn produce_to_an_unreachable_broker_fails_with_one_line() {
    let port = free_port();
    let (code, _, stderr) = cxpulse(
        &["produce", "--brokers", &format!("127.0.0.1:{port}"), "--count", "1"],
        &[("RUST_LOG", "off")],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot reach Kafka"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn produce_publishes_the_requested_count_of_valid_events() {
    let scenario = Scenario::new(&[("cx-events", 2)]);
    let brokers = scenario.brokers.clone();
    let (code, stdout, stderr) = cxpulse(
        &["produce", "--brokers", &brokers, "--count", "500", "--rate", "0"],
        &[("RUST_LOG", "warn")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("produced 500 events"), "{stdout}");
    let read = read_topic(&brokers, "cx-events", 2, 500, Duration::from_secs(20));
    assert_eq!(read.len(), 500);
    for message in &read {
        assert!(
            cxpulse_core::parse::parse_event(&message.payload).is_ok(),
            "{}",
            String::from_utf8_lossy(&message.payload)
        );
    }
}

/// `bench` runs its drain as `cxpulse bench-drain`, a process of its own: it reads every message
/// of the topic's partitions and prints its figures as one JSON line.
#[test]
fn the_bench_drain_reads_every_message_and_reports_its_figures_as_json() {
    let cluster = cluster(&[("bench", 4)]);
    let brokers = cluster.bootstrap_servers();
    let messages: Vec<(i32, &str, Vec<u8>)> =
        (0..2_000i32).map(|n| (n % 4, "k", format!("message {n}").into_bytes())).collect();
    produce(&producer(&brokers), "bench", &messages);
    let args = ["bench-drain", "--brokers", &brokers, "--events", "2000", "--partitions", "4"];
    let (code, stdout, stderr) = cxpulse(&args, &[]);
    assert_eq!(code, 0, "{stderr}");
    let figures: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    // CPU is read from /proc in clock ticks: a drain this short may show none.
    let cpu = figures["cpu_seconds"].as_f64().expect("cpu_seconds");
    assert!(figures["startup_seconds"].as_f64().is_some_and(|s| (0.0..=cpu).contains(&s)));
    assert!(figures["took"]["secs"].is_u64(), "{stdout}");
    assert!(figures["threads"].is_array(), "{stdout}");
}
