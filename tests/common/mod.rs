//! Helpers for the end-to-end tests: an in-process mock Kafka cluster, the real `cxpulse` binary
//! as a child process, a plain HTTP scraper and a Prometheus text parser. Loopback only, every
//! wait bounded.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub type Cluster = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

pub fn cluster(topics: &[(&str, i32)]) -> Cluster {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in topics {
        cluster.create_topic(topic, *partitions, 1).expect("create topic");
    }
    cluster
}

pub fn producer(brokers: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces `(partition, key, payload)` in order and waits for every acknowledgement.
pub fn produce(producer: &BaseProducer, topic: &str, messages: &[(i32, &str, Vec<u8>)]) {
    for (partition, key, payload) in messages {
        let mut record = BaseRecord::to(topic).partition(*partition).key(*key).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(20));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// A worker configuration for one group on one topic, with quick group joins, plus `extra` lines
/// appended to `[source]`.
pub fn group_config(group: &str, topic: &str, source_extra: &str) -> String {
    format!(
        r#"
[kafka]
"group.id" = "{group}"
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[source]
topics = ["{topic}"]
{source_extra}
"#
    )
}

/// A free loopback port (bound and released; the binary binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cxpulse"))
}

pub struct Worker {
    pub child: Child,
    pub addr: String,
    pub stderr_path: PathBuf,
    pub _dir: TempDir,
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "cxpulse-test-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `cxpulse run` with `config` (TOML) plus bootstrap/listen, logging to a file.
pub fn start_worker(tag: &str, brokers: &str, config: &str) -> Worker {
    start_worker_logging(tag, brokers, config, "info,librdkafka=warn,rdkafka=warn")
}

/// `start_worker` with a log filter of the test's choosing (`RUST_LOG`).
pub fn start_worker_logging(tag: &str, brokers: &str, config: &str, rust_log: &str) -> Worker {
    let dir = TempDir::new(tag);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config_path = dir.0.join("cxpulse.toml");
    std::fs::write(&config_path, config).expect("write config");
    let stderr_path = dir.0.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("log file");
    let child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config_path)
        .args(["--brokers", brokers, "--listen", &addr])
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn cxpulse");
    Worker { child, addr, stderr_path, _dir: dir }
}

impl Worker {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn metrics(&self) -> Option<Metrics> {
        http_get(&self.addr, "/metrics").map(|(_, body)| Metrics::parse(&body))
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.0 GET on loopback: `(status, body)`.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Polls `check` every 100 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prometheus text, as `series -> value` where series is the name and labels sorted by name.
#[derive(Debug, Default)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut map = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            map.insert(normalize(series), value);
        }
        Metrics(map)
    }

    /// The value of `name{labels}`; `labels` as `k=v` pairs in any order.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.get(&key(name, labels)).copied()
    }

    /// Sum of every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (series_name, series_labels) =
                    series.split_once('{').unwrap_or((series.as_str(), ""));
                series_name == name
                    && labels.iter().all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let mut sorted: Vec<_> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    sorted.sort();
    format!("{name}{{{}}}", sorted.join(","))
}

fn normalize(series: &str) -> String {
    match series.split_once('{') {
        None => series.to_string(),
        Some((name, rest)) => {
            let inner = rest.trim_end_matches('}');
            let mut labels: Vec<&str> =
                if inner.is_empty() { Vec::new() } else { inner.split(',').collect() };
            labels.sort();
            if labels.is_empty() {
                name.to_string()
            } else {
                format!("{name}{{{}}}", labels.join(","))
            }
        }
    }
}

/// A dead letter read back: payload and headers.
#[derive(Debug)]
pub struct Letter {
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Reads `topic` (all partitions) from the start until `expected` messages or `limit`.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    limit: Duration,
) -> Vec<Letter> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "cxpulse-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut letters = Vec::new();
    let deadline = Instant::now() + limit;
    while letters.len() < expected && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|header| {
                            (
                                header.key.to_string(),
                                String::from_utf8_lossy(header.value.unwrap_or_default())
                                    .to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            letters
                .push(Letter { payload: message.payload().unwrap_or_default().to_vec(), headers });
        }
    }
    // A moment more, to see any message beyond what was expected.
    let extra_deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < extra_deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            letters.push(Letter {
                payload: message.payload().unwrap_or_default().to_vec(),
                headers: BTreeMap::new(),
            });
        }
    }
    letters
}

/// The group's committed offsets summed over `partitions` of `topic` (unset counts 0).
pub fn committed_total(brokers: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed =
        consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// A number from the worker's final log line (`worker stopped consumed=..`).
pub fn final_count(log: &str, field: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains("worker stopped"))?;
    let plain: String = strip_ansi(line);
    let start = plain.find(&format!("{field}="))? + field.len() + 1;
    plain[start..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
