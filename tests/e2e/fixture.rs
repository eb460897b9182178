//! Helpers for the end-to-end tests: an in-process mock Kafka cluster, the real `cxpulse` binary
//! as a child process, a plain HTTP scraper and a Prometheus text parser. Loopback only, every
//! wait bounded.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
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

/// The variable naming a running real broker (its bootstrap address) for the tests that run on
/// either broker.
pub const REAL_BROKER_VAR: &str = "CXPULSE_TEST_BROKERS";

/// The real broker's address when [`REAL_BROKER_VAR`] is set. In CI (`CI=true`) it must be:
/// the real-broker suite may not quietly fall back to the mock there.
pub fn real_broker() -> Option<String> {
    let brokers = std::env::var(REAL_BROKER_VAR).ok().filter(|b| !b.trim().is_empty());
    if brokers.is_none() && std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!(
            "CI=true but {REAL_BROKER_VAR} is not set: the real-broker tests must run in CI \
             (.ci/run starts tansu and sets it)"
        );
    }
    brokers
}

/// The state topic's name before a scenario's prefix (the worker's default).
pub const STATE_TOPIC: &str = "cxpulse.state";

/// A broker with its topics: the place an end-to-end test starts workers against. Either an
/// in-process mock cluster (topic names as given), or the real broker of [`REAL_BROKER_VAR`],
/// shared by every test, where each scenario's topics get a prefix of their own.
pub struct Scenario {
    cluster: Option<Cluster>,
    pub brokers: String,
    prefix: String,
}

impl Scenario {
    /// A one-broker mock cluster with `topics` as `(name, partitions)`: for tests that need the
    /// mock's fault injection or that are not about the broker.
    pub fn new(topics: &[(&str, i32)]) -> Scenario {
        let cluster = cluster(topics);
        let brokers = cluster.bootstrap_servers();
        Scenario { cluster: Some(cluster), brokers, prefix: String::new() }
    }

    /// On the real broker when [`REAL_BROKER_VAR`] is set, else on a mock cluster. The state
    /// topic is created too (compacted, 3 partitions) unless `topics` lists it.
    pub fn on_either_broker(topics: &[(&'static str, i32)]) -> Scenario {
        let mut with_state = topics.to_vec();
        if !with_state.iter().any(|(name, _)| *name == STATE_TOPIC) {
            with_state.push((STATE_TOPIC, 3));
        }
        match real_broker() {
            None => Scenario::new(&with_state),
            Some(brokers) => {
                let specs: Vec<TopicSpec> = with_state
                    .into_iter()
                    .map(|(name, partitions)| TopicSpec {
                        name,
                        partitions,
                        compacted: name == STATE_TOPIC,
                    })
                    .collect();
                Scenario::real(brokers, &specs)
            }
        }
    }

    /// On the real broker with exactly `topics`, created as specified; `None` (the reason
    /// printed) when no real broker is set and CI does not require one.
    pub fn on_real_broker(topics: &[TopicSpec]) -> Option<Scenario> {
        match real_broker() {
            Some(brokers) => Some(Scenario::real(brokers, topics)),
            None => {
                eprintln!("skipped: needs a real broker ({REAL_BROKER_VAR} is not set)");
                None
            }
        }
    }

    fn real(brokers: String, topics: &[TopicSpec]) -> Scenario {
        let prefix = format!("t{}-", unique_id());
        let named: Vec<(String, TopicSpec)> =
            topics.iter().map(|t| (format!("{prefix}{}", t.name), *t)).collect();
        create_topics(&brokers, &named);
        Scenario { cluster: None, brokers, prefix }
    }

    /// The mock cluster, for fault injection; only scenarios made by [`Scenario::new`] have one.
    pub fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("a mock-only test: make its scenario with Scenario::new")
    }

    /// The broker's name for topic `name` of this scenario.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A producer on this cluster.
    pub fn producer(&self) -> BaseProducer {
        producer(&self.brokers)
    }

    /// Starts `cxpulse run` on this broker with `config`, its state topic this scenario's unless
    /// the config names one.
    pub fn start(&self, tag: &str, config: &WorkerConfig) -> WorkerProcess {
        start_worker(tag, &self.brokers, &self.config(config).toml())
    }

    /// [`Scenario::start`] with extra environment variables (failpoints).
    pub fn start_env(
        &self,
        tag: &str,
        config: &WorkerConfig,
        env: &[(&str, &str)],
    ) -> WorkerProcess {
        start_worker_env(tag, &self.brokers, &self.config(config).toml(), env)
    }

    /// The broker's name for consumer group `name` of this scenario: on the real broker, groups
    /// get the scenario's prefix too, so that no member of an earlier test or run (killed, never
    /// left) takes part in this one's rebalances.
    pub fn group(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `config` with this scenario's group and state topic (unless it names one).
    pub fn config(&self, config: &WorkerConfig) -> WorkerConfig {
        let mut config = config.clone();
        const GROUP: &str = "\"group.id\" = \"";
        for line in &mut config.kafka {
            if let Some(group) = line.strip_prefix(GROUP) {
                *line = format!("{GROUP}{}", self.group(group));
            }
        }
        if config.source.iter().any(|line| line.trim_start().starts_with("state_topic")) {
            config
        } else {
            config.state_topic(&self.topic(STATE_TOPIC))
        }
    }
}

/// A topic to create on the real broker.
#[derive(Clone, Copy, Debug)]
pub struct TopicSpec {
    pub name: &'static str,
    pub partitions: i32,
    /// `cleanup.policy = compact` (the state topic's documented setting).
    pub compacted: bool,
}

/// An id no other scenario of this run or of an earlier run on the same broker has.
fn unique_id() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000_000);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:x}{:x}{n}", std::process::id(), nanos)
}

/// Creates each `(name, spec)` on the broker with AdminClient and waits (at most 30 s) until its
/// metadata lists each with its partitions.
fn create_topics(brokers: &str, topics: &[(String, TopicSpec)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, spec)| {
            let topic = NewTopic::new(name, spec.partitions, TopicReplication::Fixed(1));
            if spec.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                admin.create_topics(&new_topics, &options),
            )
            .await
        })
        .expect("create_topics answered within 30 s")
        .expect("create_topics");
    for result in results {
        if let Err((topic, code)) = result {
            panic!("cannot create topic {topic} on {brokers}: {code}");
        }
    }
    let client = producer(brokers);
    let listed = wait_for(Duration::from_secs(30), || {
        let metadata = client.client().fetch_metadata(None, Duration::from_secs(5)).ok()?;
        topics
            .iter()
            .all(|(name, spec)| {
                metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == name && t.partitions().len() == spec.partitions as usize)
            })
            .then_some(())
    });
    assert!(listed.is_some(), "topics {topics:?} never listed by {brokers}");
}

/// A worker's configuration with typed options, rendered to TOML by [`WorkerConfig::toml`]: one
/// group (quick joins) on its topics, plus whatever a test adds.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    kafka: Vec<String>,
    topics: Vec<String>,
    source: Vec<String>,
    windows: Vec<String>,
    extra: String,
}

impl WorkerConfig {
    /// Group `group` on `topic`, with a short session timeout and heartbeat so joins are quick.
    pub fn new(group: &str, topic: &str) -> WorkerConfig {
        WorkerConfig::with_kafka(
            topic,
            &[
                &format!("\"group.id\" = \"{group}\""),
                "\"session.timeout.ms\" = \"6000\"",
                "\"heartbeat.interval.ms\" = \"500\"",
            ],
        )
    }

    /// Group `group` on `topic` with only `group.id` under `[kafka]` (librdkafka's own timeouts).
    pub fn plain(group: &str, topic: &str) -> WorkerConfig {
        WorkerConfig::with_kafka(topic, &[&format!("\"group.id\" = \"{group}\"")])
    }

    /// No group, but `bootstrap.servers` set in the file (what `cxpulse gateway` reads).
    pub fn bootstrap(brokers: &str, topic: &str) -> WorkerConfig {
        WorkerConfig::with_kafka(topic, &[&format!("\"bootstrap.servers\" = \"{brokers}\"")])
    }

    fn with_kafka(topic: &str, kafka: &[&str]) -> WorkerConfig {
        WorkerConfig {
            kafka: kafka.iter().map(|line| line.to_string()).collect(),
            topics: vec![topic.to_string()],
            source: Vec::new(),
            windows: Vec::new(),
            extra: String::new(),
        }
    }

    /// Another `[kafka]` setting, as a TOML line (`"fetch.max.bytes" = "2048"`).
    pub fn kafka_line(mut self, line: &str) -> WorkerConfig {
        self.kafka.push(line.to_string());
        self
    }

    /// The `[source] topics` list.
    pub fn topics(mut self, topics: &[&str]) -> WorkerConfig {
        self.topics = topics.iter().map(|t| t.to_string()).collect();
        self
    }

    /// `[source] state_topic`.
    pub fn state_topic(self, topic: &str) -> WorkerConfig {
        self.source_line(&format!("state_topic = \"{topic}\""))
    }

    /// `[source] batch_size`.
    pub fn batch_size(self, size: usize) -> WorkerConfig {
        self.source_line(&format!("batch_size = {size}"))
    }

    /// `[source] checkpoint_interval`, e.g. `"1s"`.
    pub fn checkpoint_interval(self, interval: &str) -> WorkerConfig {
        self.source_line(&format!("checkpoint_interval = \"{interval}\""))
    }

    /// Any other line under `[source]`.
    pub fn source_line(mut self, line: &str) -> WorkerConfig {
        self.source.push(line.to_string());
        self
    }

    /// `[windows] clock`: `"wall"` or `"event"`.
    pub fn clock(self, clock: &str) -> WorkerConfig {
        self.windows_line(&format!("clock = \"{clock}\""))
    }

    /// Any line under `[windows]`.
    pub fn windows_line(mut self, line: &str) -> WorkerConfig {
        self.windows.push(line.to_string());
        self
    }

    /// TOML appended after the sections above (`[http]`, `[alerts]`, `[gateway]`...).
    pub fn extra(mut self, toml: &str) -> WorkerConfig {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The configuration file's text.
    pub fn toml(&self) -> String {
        let topics: Vec<String> = self.topics.iter().map(|t| format!("\"{t}\"")).collect();
        let mut text = format!("[kafka]\n{}\n", self.kafka.join("\n"));
        text.push_str(&format!("[source]\ntopics = [{}]\n", topics.join(", ")));
        for line in &self.source {
            text.push_str(&format!("{line}\n"));
        }
        if !self.windows.is_empty() {
            text.push_str(&format!("[windows]\n{}\n", self.windows.join("\n")));
        }
        text.push_str(&self.extra);
        text
    }
}

/// A free loopback port (bound and released; the binary binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A free loopback port whose next port is free too, for `cxpulse demo` (its gateway listens on
/// the worker's port + 1). A port from [`free_port`] alone is not enough: Linux gives `bind` ports
/// of one parity and `connect` the other, so the port after it is of the kind the outgoing
/// connections of a concurrent test hold (`http_limits` opens a thousand), and a listener cannot
/// bind a port a connection holds.
pub fn free_port_pair() -> u16 {
    (0..50)
        .find_map(|_| {
            let first = TcpListener::bind("127.0.0.1:0").ok()?;
            let port = first.local_addr().ok()?.port();
            let _next = TcpListener::bind(("127.0.0.1", port.checked_add(1)?)).ok()?;
            Some(port)
        })
        .expect("a free loopback port with a free next port")
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cxpulse"))
}

/// A `cxpulse` child process (killed on drop) with its address, log and temporary directory.
pub struct WorkerProcess {
    pub child: Child,
    pub addr: String,
    pub stderr_path: PathBuf,
    pub _dir: TempDir,
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new directory named by `tag`, this process and a number no other `TempDir` of this
    /// process has: tests of every module share one process, and several use the same tag.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("cxpulse-test-{tag}-{}-{n}", std::process::id()));
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
pub fn start_worker(tag: &str, brokers: &str, config: &str) -> WorkerProcess {
    start_worker_with(tag, brokers, config, QUIET_KAFKA_LOG, None, &[])
}

/// [`start_worker`] with extra environment variables (failpoints).
pub fn start_worker_env(
    tag: &str,
    brokers: &str,
    config: &str,
    env: &[(&str, &str)],
) -> WorkerProcess {
    start_worker_with(tag, brokers, config, QUIET_KAFKA_LOG, None, env)
}

/// The log filter of [`start_worker`]: the worker's own lines, librdkafka's warnings and worse.
pub const QUIET_KAFKA_LOG: &str = "info,librdkafka=warn,rdkafka=warn";

/// [`start_worker`] with a log filter of the test's choosing (`RUST_LOG`).
pub fn start_worker_logging(
    tag: &str,
    brokers: &str,
    config: &str,
    rust_log: &str,
) -> WorkerProcess {
    start_worker_with(tag, brokers, config, rust_log, None, &[])
}

/// [`start_worker`], with the descriptor limit lowered to `nofile` when given (through the
/// shell's `ulimit`, as an operator's would be).
pub fn start_worker_limited(
    tag: &str,
    brokers: &str,
    config: &str,
    nofile: Option<u32>,
) -> WorkerProcess {
    start_worker_with(tag, brokers, config, QUIET_KAFKA_LOG, nofile, &[])
}

fn start_worker_with(
    tag: &str,
    brokers: &str,
    config: &str,
    rust_log: &str,
    nofile: Option<u32>,
    env: &[(&str, &str)],
) -> WorkerProcess {
    let dir = TempDir::new(tag);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config_path = dir.0.join("cxpulse.toml");
    std::fs::write(&config_path, config).expect("write config");
    let stderr_path = dir.0.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("log file");
    let mut command = match nofile {
        None => Command::new(binary()),
        Some(n) => {
            let mut shell = Command::new("sh");
            shell.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(binary());
            shell
        }
    };
    let child = command
        .args(["run", "--config"])
        .arg(&config_path)
        .args(["--brokers", brokers, "--listen", &addr])
        .env("RUST_LOG", rust_log)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn cxpulse");
    WorkerProcess { child, addr, stderr_path, _dir: dir }
}

impl WorkerProcess {
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

impl Drop for WorkerProcess {
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

/// Runs `cxpulse <args>` and waits at most 5 s: exit code, stderr and how long it took.
pub fn run_briefly(args: &[&str]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(binary())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten());
    let took = started.elapsed();
    if status.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let mut stderr = String::new();
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
    (status.and_then(|s| s.code()), stderr, took)
}

/// Whether the server has closed `stream` (a read sees the end or a reset).
pub fn closed(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// A slowloris: `clients` connections to `addr` each send `request` a byte every 0.25 s, until
/// every one is closed or 6 s pass. Returns how many were still open, and the time taken.
pub fn slowloris(addr: &str, clients: usize, request: &[u8]) -> (usize, Duration) {
    let mut clients: Vec<TcpStream> =
        (0..clients).map(|_| TcpStream::connect(addr).expect("connect")).collect();
    let started = Instant::now();
    let mut open = clients.len();
    let mut sent = 0;
    while open > 0 && started.elapsed() < Duration::from_secs(6) {
        open = 0;
        for client in &mut clients {
            let byte = request[sent.min(request.len() - 1)];
            let still_open = client.write_all(&[byte]).is_ok() && !closed(client);
            open += usize::from(still_open);
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    (open, started.elapsed())
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

/// A message read back (a dead letter, a feed message): key, payload and headers.
#[derive(Debug)]
pub struct Letter {
    pub key: Option<Vec<u8>>,
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
            letters.push(Letter {
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    // A moment more, to see any message beyond what was expected.
    let extra_deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < extra_deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            letters.push(Letter {
                key: message.key().map(<[u8]>::to_vec),
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
