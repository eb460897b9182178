//! `cxpulse demo --alerting`: the demo's worker behind Debian's real Prometheus and Alertmanager,
//! all on loopback. Prometheus scrapes the worker as a static target and evaluates the
//! repository's rules (built into the binary) with every `for:` read in seconds instead of
//! minutes; Alertmanager delivers to a webhook receiver in this process, which prints each alert
//! as it arrives. Nothing here outlives the demo: the daemons are killed and their files removed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use cxpulse_core::duration::parse_duration_ms;
use serde_json::Value;

const RECORDING_RULES: &str = include_str!("../../deploy/prometheus/rules/recording.yml");
const ALERT_RULES: &str = include_str!("../../deploy/prometheus/rules/alerts.yml");

/// How much shorter every `for:` is in the generated copy: a minute becomes a second.
const FOR_DIVISOR: i64 = 60;
/// The shortest `for:` of the copy. Scrapes every second still fail for a few seconds in a row
/// while a loaded machine starts the demo (a worker busy reading its history misses the 1 s
/// scrape timeout); `CxpulseAllWorkersDown` held for 5 s would page about that.
const FOR_FLOOR_MS: i64 = 20_000;
/// Largest webhook body read; Alertmanager's notifications are a few KiB.
const MAX_BODY: usize = 4 << 20;

/// The two Debian programs, found before anything starts.
pub struct Programs {
    prometheus: PathBuf,
    alertmanager: PathBuf,
}

impl Programs {
    pub fn find() -> anyhow::Result<Programs> {
        let find = |name: &str| {
            let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default();
            dirs.push(PathBuf::from("/usr/bin"));
            dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
                anyhow!(
                    "--alerting needs `{name}`: apt-get install -y prometheus prometheus-alertmanager"
                )
            })
        };
        Ok(Programs {
            prometheus: find("prometheus")?,
            alertmanager: find("prometheus-alertmanager")?,
        })
    }
}

/// Prometheus and Alertmanager as child processes, killed (and their files removed) on drop.
pub struct LocalAlerting {
    children: Vec<(&'static str, Child)>,
    dir: PathBuf,
}

impl Drop for LocalAlerting {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl LocalAlerting {
    /// Starts the receiver, Alertmanager and Prometheus (scraping `worker`); alert times are
    /// printed relative to `since`.
    pub fn start(programs: &Programs, worker: SocketAddr, since: Instant) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("cxpulse-alerting-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rules")).context("alerting work directory")?;
        let mut stack = LocalAlerting { children: Vec::new(), dir: dir.clone() };

        let receiver = TcpListener::bind("127.0.0.1:0").context("binding the alert receiver")?;
        let receiver_addr = receiver.local_addr()?;
        std::thread::spawn(move || receive_alerts(receiver, since));

        let alertmanager_addr = free_loopback_addr()?;
        let alertmanager_yml = dir.join("alertmanager.yml");
        std::fs::write(&alertmanager_yml, alertmanager_config(receiver_addr))?;
        stack.spawn(
            "alertmanager",
            &programs.alertmanager,
            &[
                format!("--config.file={}", alertmanager_yml.display()),
                format!("--storage.path={}", dir.join("alertmanager-data").display()),
                format!("--web.listen-address={alertmanager_addr}"),
                "--cluster.listen-address=".into(),
            ],
        )?;

        let mut rule_files = Vec::new();
        for (name, text) in [("recording.yml", RECORDING_RULES), ("alerts.yml", ALERT_RULES)] {
            let path = dir.join("rules").join(name);
            std::fs::write(&path, shorten_for(text)?)?;
            rule_files.push(path);
        }
        let prometheus_addr = free_loopback_addr()?;
        let prometheus_yml = dir.join("prometheus.yml");
        std::fs::write(&prometheus_yml, prometheus_config(&rule_files, alertmanager_addr, worker))?;
        stack.spawn(
            "prometheus",
            &programs.prometheus,
            &[
                format!("--config.file={}", prometheus_yml.display()),
                format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()),
                format!("--web.listen-address={prometheus_addr}"),
            ],
        )?;

        // A daemon that cannot start (a port taken meanwhile) exits at once: say so now.
        std::thread::sleep(Duration::from_millis(1500));
        for (name, child) in &mut stack.children {
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                bail!(
                    "{name} exited ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
        }
        println!("  prometheus    http://{prometheus_addr}/alerts   (rules with every for: in seconds, not minutes)");
        println!("  alertmanager  http://{alertmanager_addr}/");
        println!("  alerts arriving at the receiver are printed below as `alert +<seconds since start> ...`");
        Ok(stack)
    }

    fn spawn(&mut self, name: &'static str, program: &Path, args: &[String]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.children.push((name, child));
        Ok(())
    }
}

/// Waits (at most `limit`, or until `stop`) until the worker at `worker` has counted or rejected
/// `events` messages, reading its own `/metrics`; says how it went, for the demo to print.
pub fn wait_until_consumed(
    worker: SocketAddr,
    events: u64,
    limit: Duration,
    stop: &AtomicBool,
) -> String {
    let started = Instant::now();
    while started.elapsed() < limit && !stop.load(Ordering::Relaxed) {
        if consumed(worker).is_some_and(|n| n >= events as f64) {
            return format!("after {:.1} s", started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    format!(
        "only in part after {:.0} s; starting Prometheus anyway",
        started.elapsed().as_secs_f64()
    )
}

/// Messages counted plus messages rejected, from one bounded GET of `/metrics`.
fn consumed(worker: SocketAddr) -> Option<f64> {
    let mut stream = TcpStream::connect_timeout(&worker, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: demo\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.take(64 << 20).read_to_string(&mut text).ok()?;
    let total = text
        .lines()
        .filter(|line| {
            line.starts_with("cxpulse_events_counted_total")
                || line.starts_with("cxpulse_events_rejected_total")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Some(total)
}

/// The rule file with each `for: <duration>` line divided by [`FOR_DIVISOR`] (at least
/// [`FOR_FLOOR_MS`]), every other line as is.
fn shorten_for(rules: &str) -> anyhow::Result<String> {
    rules
        .split_inclusive('\n')
        .map(|line| {
            let Some(value) = line.trim().strip_prefix("for:") else {
                return Ok(line.to_string());
            };
            let ms = parse_duration_ms(value.trim())
                .map_err(|e| anyhow!("built-in rule `{}`: {e}", line.trim()))?;
            let short = (ms / FOR_DIVISOR).max(FOR_FLOOR_MS);
            let indent = &line[..line.len() - line.trim_start().len()];
            Ok(format!("{indent}for: {}ms\n", short))
        })
        .collect()
}

fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    let probe = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(probe.local_addr()?)
}

fn alertmanager_config(receiver: SocketAddr) -> String {
    format!(
        r#"route:
  receiver: print
  group_by: ["alertname", "brand", "segment"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: print
    webhook_configs:
      - url: "http://{receiver}/alerts"
        send_resolved: true
"#
    )
}

fn prometheus_config(
    rule_files: &[PathBuf],
    alertmanager: SocketAddr,
    worker: SocketAddr,
) -> String {
    let rules: String = rule_files.iter().map(|p| format!("  - \"{}\"\n", p.display())).collect();
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
{rules}alerting:
  alertmanagers:
    - static_configs:
        - targets: ["{alertmanager}"]
scrape_configs:
  - job_name: cxpulse
    static_configs:
      - targets: ["{worker}"]
"#
    )
}

/// The webhook receiver: one request per connection, each alert of a notification printed.
fn receive_alerts(listener: TcpListener, since: Instant) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        match read_post(stream) {
            Ok(body) => print_alerts(&body, since),
            Err(e) => eprintln!("alert receiver: {e}"),
        }
    }
}

/// Reads one request with a Content-Length body (bounded in size and time), answers 200.
fn read_post(stream: TcpStream) -> anyhow::Result<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut header_bytes = 0usize;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        header_bytes += n;
        if n == 0 || header_bytes > 64 << 10 {
            bail!("incomplete request head");
        }
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().context("Content-Length")?;
            }
        }
    }
    if length > MAX_BODY {
        bail!("body of {length} bytes is over the limit");
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut stream = stream;
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    Ok(body)
}

fn print_alerts(body: &[u8], since: Instant) {
    let Ok(notification) = serde_json::from_slice::<Value>(body) else {
        eprintln!("alert receiver: a notification that is not JSON");
        return;
    };
    let seconds = since.elapsed().as_secs_f64();
    for alert in notification["alerts"].as_array().into_iter().flatten() {
        println!("{}", alert_line(alert, seconds));
    }
}

/// `alert +<seconds> FIRING <alertname> <brand>/<segment> window=… severity=…: <summary>`.
fn alert_line(alert: &Value, seconds: f64) -> String {
    let labels = &alert["labels"];
    let label = |name: &str| labels[name].as_str().unwrap_or("").to_string();
    let subject = match (label("brand"), label("segment")) {
        (brand, segment) if !brand.is_empty() => format!(" {brand}/{segment}"),
        _ => String::new(),
    };
    let window = match label("window") {
        window if !window.is_empty() => format!(" window={window}"),
        _ => String::new(),
    };
    format!(
        "alert +{seconds:.0}s {status} {name}{subject}{window} severity={severity}: {summary}",
        status = alert["status"].as_str().unwrap_or("?").to_uppercase(),
        name = label("alertname"),
        severity = label("severity"),
        summary = alert["annotations"]["summary"].as_str().unwrap_or(""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_for_of_the_built_in_rules_is_shortened_and_nothing_else_changes() {
        let copy = shorten_for(ALERT_RULES).unwrap();
        assert_eq!(copy.lines().count(), ALERT_RULES.lines().count());
        let fors: Vec<&str> = copy.lines().filter(|l| l.trim().starts_with("for:")).collect();
        assert!(fors.len() >= 10, "{fors:?}");
        assert!(fors.contains(&"        for: 30000ms"), "30m becomes 30s: {fors:?}");
        assert!(fors.contains(&"        for: 60000ms"), "1h becomes 60s: {fors:?}");
        assert!(!fors.contains(&"        for: 5000ms"), "5m stays at the floor of 20s: {fors:?}");
        assert!(fors.contains(&"        for: 20000ms"), "5m stays at the floor of 20s: {fors:?}");
        for (original, short) in ALERT_RULES.lines().zip(copy.lines()) {
            if !original.trim().starts_with("for:") {
                assert_eq!(original, short);
            }
        }
    }

    #[test]
    fn an_alert_prints_as_one_line() {
        let alert: Value = serde_json::from_str(
            r#"{"status":"firing","labels":{"alertname":"CxpulseNpsBelowThreshold","brand":"globex","segment":"smb","window":"24h","severity":"critical"},"annotations":{"summary":"NPS of globex/smb is below its alert threshold"}}"#,
        )
        .unwrap();
        assert_eq!(
            alert_line(&alert, 81.4),
            "alert +81s FIRING CxpulseNpsBelowThreshold globex/smb window=24h severity=critical: NPS of globex/smb is below its alert threshold"
        );
    }
}
