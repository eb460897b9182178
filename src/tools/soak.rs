//! `cxpulse bench --soak SECONDS`: bounded state checked the way a user leaves a worker running.
//! The real `cxpulse run` binary, as a child process on an embedded broker, takes gateway-shaped
//! traffic (answers with `response_id`s, some corrected) at a steady rate; every 10 s its memory,
//! state and checkpoint bytes are printed beside the input's. At the end: what checkpoints cost
//! against the input, what the state topic holds, memory growth per event, and whether the counts
//! survive a SIGKILL exactly. It prints figures and asserts nothing.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use cxpulse_core::synth::{realistic_message, Synth, SynthConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "soak";
const DLQ: &str = "soak.dlq";
const STATE_TOPIC: &str = "cxpulse.state";
const GROUP: &str = "soak";
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The worker's default `[source] checkpoint_interval`, which the soak's config leaves alone.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// Kafka's default largest record (`max.message.bytes` is about 1 MiB).
const KAFKA_RECORD_LIMIT: usize = 1_048_576;
/// The embedded broker keeps at most this much per partition and deletes the oldest beyond it
/// (librdkafka's mock; it never compacts).
const MOCK_PARTITION_BYTES: u64 = 5 * 1024 * 1024;
const WINDOWED: [&str; 4] = [
    "cxpulse_nps_responses",
    "cxpulse_csat_responses",
    "cxpulse_ces_responses",
    "cxpulse_customer_events",
];
const MIB: f64 = 1024.0 * 1024.0;

pub struct SoakOptions {
    pub seconds: u64,
    pub rate: u64,
    pub partitions: i32,
    pub state_partitions: i32,
}

/// One sample of the worker and the input.
#[derive(Clone, Debug, Default)]
struct Sample {
    elapsed: Duration,
    input_bytes: u64,
    consumed: u64,
    checkpoint_bytes: u64,
    rss_kib: u64,
    /// `cxpulse_state_bytes` and `cxpulse_state_entries` by kind.
    state_bytes: BTreeMap<String, u64>,
    state_entries: BTreeMap<String, u64>,
}

pub fn run(options: &SoakOptions) -> anyhow::Result<()> {
    anyhow::ensure!(options.seconds > 0, "--soak needs at least 1 second");
    anyhow::ensure!(options.rate > 0, "--rate must be above 0");
    anyhow::ensure!(
        options.partitions > 0 && options.state_partitions > 0,
        "partition counts must be above 0"
    );
    let dir = TempDir::new()?;
    let cluster =
        MockCluster::new(1).map_err(|e| anyhow!("cannot start the embedded broker: {e}"))?;
    for (topic, partitions) in
        [(TOPIC, options.partitions), (DLQ, 1), (STATE_TOPIC, options.state_partitions)]
    {
        cluster
            .create_topic(topic, partitions, 1)
            .map_err(|e| anyhow!("cannot create topic {topic}: {e}"))?;
    }
    let brokers = cluster.bootstrap_servers();
    let listen = free_loopback_port()?;
    let config_path = dir.path.join("cxpulse.toml");
    std::fs::write(&config_path, worker_config(&brokers, listen))
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    println!(
        "soak: {} s at {} events/s (gateway-shaped: 80 % answers with response_id, 5 % of them corrections), topic {TOPIC} with {} partitions, state topic {STATE_TOPIC} with {}; worker `cxpulse run` on {listen}, checkpoints every {} s",
        options.seconds,
        options.rate,
        options.partitions,
        options.state_partitions,
        CHECKPOINT_INTERVAL.as_secs()
    );

    let mut first = WorkerProcess::start(&config_path, &dir.path.join("worker-1.log"), listen)?;
    let ready_in = first.wait_ready(Duration::from_secs(60))?;
    println!("worker ready in {:.1} s", ready_in.as_secs_f64());

    let (samples, produced, end_sample) = soak(options, &brokers, &mut first)?;

    // (a) checkpoint bytes against input bytes, over the last 30 s of producing and in all.
    println!("--- after producing ---");
    let from = end_sample.elapsed.saturating_sub(Duration::from_secs(30));
    let last30 = samples
        .iter()
        .filter(|s| s.elapsed < end_sample.elapsed)
        .min_by_key(|s| s.elapsed.abs_diff(from))
        .cloned()
        .unwrap_or_default();
    let (input30, checkpoint30) = (
        end_sample.input_bytes.saturating_sub(last30.input_bytes),
        end_sample.checkpoint_bytes.saturating_sub(last30.checkpoint_bytes),
    );
    println!(
        "(a) last {:.0} s of producing: checkpoints {:.2} MiB, input {:.2} MiB, ratio {}",
        (end_sample.elapsed - last30.elapsed).as_secs_f64(),
        checkpoint30 as f64 / MIB,
        input30 as f64 / MIB,
        ratio(checkpoint30, input30)
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut consumed = end_sample.consumed;
    while consumed < produced && Instant::now() < deadline {
        first.check_running()?;
        std::thread::sleep(Duration::from_millis(200));
        if let Some(text) = first.metrics() {
            consumed = metric_sum(&text, "cxpulse_events_consumed_total") as u64;
        }
    }
    if consumed < produced {
        println!("    the worker consumed {consumed} of {produced} events within 60 s");
    }
    // Past one more checkpoint round, every partition's last events are on the state topic.
    std::thread::sleep(CHECKPOINT_INTERVAL + Duration::from_secs(2));
    let end = first.sample(Duration::ZERO, 0)?;
    println!(
        "    whole run: checkpoints {:.2} MiB, input {:.2} MiB, ratio {} (consumed {} of {produced} produced)",
        end.checkpoint_bytes as f64 / MIB,
        end_sample.input_bytes as f64 / MIB,
        ratio(end.checkpoint_bytes, end_sample.input_bytes),
        end.consumed
    );

    // (b) the state topic as a restore reads it.
    let topic = read_state_topic(&brokers, options.state_partitions)?;
    println!(
        "(b) state topic: {} records ({} tombstones), {:.2} MiB in all; largest value {} bytes; latest value per key (what compaction keeps) {:.2} MiB over {} keys; every record <= 1 MiB: {}",
        topic.records,
        topic.tombstones,
        topic.bytes as f64 / MIB,
        topic.largest,
        topic.latest_bytes as f64 / MIB,
        topic.latest_keys,
        if topic.largest <= KAFKA_RECORD_LIMIT { "yes" } else { "NO" }
    );
    println!(
        "    per state partition (low..high offsets, bytes read): {}",
        topic
            .partitions
            .iter()
            .map(|(p, (low, high, bytes))| format!(
                "{p}: {low}..{high} {:.2} MiB",
                *bytes as f64 / MIB
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if topic.partitions.values().any(|(low, _, _)| *low > 0) {
        println!(
            "    note: the embedded broker deleted the oldest records of a state partition (it keeps ~{} MiB per partition and does not compact): what is read above and what a restore finds lack them",
            MOCK_PARTITION_BYTES / 1024 / 1024
        );
    }
    let (with_events, trimmed) = source_partitions(&brokers, options.partitions)?;
    println!(
        "    {with_events} of the {} partitions of {TOPIC} hold events (12 brand/segment keys); a partition without any has no checkpoint and counts as a replay on restore",
        options.partitions
    );
    if !trimmed.is_empty() {
        println!(
            "    note: the embedded broker deleted the oldest events of {TOPIC} partitions {trimmed:?}: a partition that replays cannot count them"
        );
    }

    // (c) memory growth per event once the first minute is behind.
    let after_minute = samples.iter().find(|s| s.elapsed >= Duration::from_secs(60));
    match after_minute {
        Some(start) if options.seconds >= 90 && end.consumed > start.consumed => {
            let events = (end.consumed - start.consumed) as f64;
            let grown = end.rss_kib as f64 * 1024.0 - start.rss_kib as f64 * 1024.0;
            // The id and answer tables grow until their 24 h horizons are full, so a soak
            // shorter than that sees them grow throughout: their share tells state from leaks.
            let state = |s: &Sample| s.state_bytes.values().sum::<u64>() as f64;
            let state_grown = state(&end) - state(start);
            println!(
                "(c) RSS growth: {:.1} bytes/event ({:.1} MiB at {:.0} s -> {:.1} MiB at the end, over {} events); of which state tables (cxpulse_state_bytes) {:.1} bytes/event, the rest {:.1} bytes/event",
                grown / events,
                start.rss_kib as f64 / 1024.0,
                start.elapsed.as_secs_f64(),
                end.rss_kib as f64 / 1024.0,
                end.consumed - start.consumed,
                state_grown / events,
                (grown - state_grown) / events
            );
        }
        _ => println!("(c) RSS growth: n/a (needs a run of at least 90 s)"),
    }

    exact_after_sigkill(options, first, &config_path, &dir.path, listen)?;
    drop(cluster);
    Ok(())
}

/// Produces for `options.seconds` while sampling the worker every 10 s. Returns the samples, the
/// events produced (all acknowledged) and a sample taken as producing ended.
fn soak(
    options: &SoakOptions,
    brokers: &str,
    worker: &mut WorkerProcess,
) -> anyhow::Result<(Vec<Sample>, u64, Sample)> {
    let input_bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let producer = {
        let (brokers, input_bytes, stop) = (brokers.to_string(), input_bytes.clone(), stop.clone());
        let (seconds, rate) = (options.seconds, options.rate);
        std::thread::spawn(move || {
            produce(&brokers, rate, Duration::from_secs(seconds), &input_bytes, &stop)
        })
    };
    println!("elapsed_s  consumed  input_MiB  checkpoint_MiB  rss_MiB  state_MiB(dedup/answers/windows/customers)  entries(dedup/answers/windows/customers)");
    let mut samples = Vec::new();
    let mut next = SAMPLE_EVERY;
    let result = loop {
        if producer.is_finished() {
            break Ok(());
        }
        if let Err(e) = worker.check_running() {
            break Err(e);
        }
        if started.elapsed() >= next {
            let sample = worker.sample(started.elapsed(), input_bytes.load(Ordering::Relaxed));
            match sample {
                Ok(sample) => {
                    print_sample(&sample);
                    samples.push(sample);
                }
                Err(e) => break Err(e),
            }
            next += SAMPLE_EVERY;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if result.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    let produced_total = producer.join().map_err(|_| anyhow!("the producer thread panicked"))?;
    result?;
    let produced_total = produced_total?;
    let end = worker.sample(started.elapsed(), input_bytes.load(Ordering::Relaxed))?;
    print!("end of producing: ");
    print_sample(&end);
    println!(
        "produced {produced_total} events, {:.1} MiB ({:.0} bytes each), {:.0} events/s",
        end.input_bytes as f64 / MIB,
        end.input_bytes as f64 / produced_total.max(1) as f64,
        produced_total as f64 / end.elapsed.as_secs_f64()
    );
    Ok((samples, produced_total, end))
}

fn print_sample(s: &Sample) {
    let kinds = cxpulse_core::snapshot::STATE_KINDS;
    let of = |map: &BTreeMap<String, u64>, scale: f64, digits: usize| {
        kinds
            .iter()
            .map(|k| format!("{:.digits$}", map.get(*k).copied().unwrap_or(0) as f64 / scale))
            .collect::<Vec<_>>()
            .join("/")
    };
    println!(
        "{:>9.0}  {:>8}  {:>9.2}  {:>14.2}  {:>7.1}  {:>43}  {}",
        s.elapsed.as_secs_f64(),
        s.consumed,
        s.input_bytes as f64 / MIB,
        s.checkpoint_bytes as f64 / MIB,
        s.rss_kib as f64 / 1024.0,
        of(&s.state_bytes, MIB, 2),
        of(&s.state_entries, 1.0, 0)
    );
}

fn ratio(part: u64, whole: u64) -> String {
    if whole == 0 {
        "n/a".into()
    } else {
        format!("{:.3}", part as f64 / whole as f64)
    }
}

/// Gateway-shaped events as producers write them, keyed `brand/segment`, at `rate` per second in
/// 10 ms batches for `duration`. Returns the events produced once all are acknowledged.
fn produce(
    brokers: &str,
    rate: u64,
    duration: Duration,
    input_bytes: &AtomicU64,
    stop: &AtomicBool,
) -> anyhow::Result<u64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .map_err(|e| anyhow!("cannot create the producer: {e}"))?;
    let mut synth = Synth::new(SynthConfig {
        run_id: format!("soak{}", cxpulse_kafka::util::wall_ms()),
        dip_brand: None,
        gateway_shape: true,
        ..SynthConfig::default()
    });
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let message = realistic_message(&mut synth, cxpulse_kafka::util::wall_ms());
            let mut record = BaseRecord::to(TOPIC).key(&message.key).payload(&message.payload);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if Instant::now() < deadline =>
                    {
                        record = back;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => bail!("produce failed: {e}"),
                }
            }
            sent += 1;
            input_bytes.fetch_add(message.payload.len() as u64, Ordering::Relaxed);
        }
        producer.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(10));
    }
    producer.flush(Duration::from_secs(30)).map_err(|e| anyhow!("producer flush failed: {e}"))?;
    Ok(sent)
}

/// The worker's configuration: the soak's topics, wall clock, default windows, horizons and
/// checkpoint interval.
fn worker_config(brokers: &str, listen: SocketAddr) -> String {
    format!(
        r#"[kafka]
"bootstrap.servers" = "{brokers}"
"group.id" = "{GROUP}"

[source]
topics = ["{TOPIC}"]
dead_letter_topic = "{DLQ}"
state_topic = "{STATE_TOPIC}"

[windows]
clock = "wall"

[http]
listen = "{listen}"

[log]
level = "info"
"#
    )
}

fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a loopback port for the worker")?;
    Ok(listener.local_addr()?)
}

/// A `cxpulse run` child; killed when dropped, so no error path leaves it running.
struct WorkerProcess {
    child: Child,
    log: PathBuf,
    listen: SocketAddr,
}

impl WorkerProcess {
    fn start(config: &Path, log: &Path, listen: SocketAddr) -> anyhow::Result<WorkerProcess> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(std::env::current_exe()?)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start `cxpulse run`")?;
        Ok(WorkerProcess { child, log: log.to_path_buf(), listen })
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                bail!("the worker exited ({status}); its log ends:\n{}", self.log_tail())
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits for `/readyz` to answer 200.
    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            self.check_running()?;
            if http_get(self.listen, "/readyz").is_some_and(|(status, _)| status == 200) {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "the worker was not ready within {} s; its log ends:\n{}",
            limit.as_secs(),
            self.log_tail()
        )
    }

    fn metrics(&self) -> Option<String> {
        match http_get(self.listen, "/metrics") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }

    /// A sample of the worker now; a scrape that fails under load is retried for up to 10 s.
    fn sample(&mut self, elapsed: Duration, input_bytes: u64) -> anyhow::Result<Sample> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            self.check_running()?;
            if let Some(text) = self.metrics() {
                break text;
            }
            if Instant::now() >= deadline {
                bail!("the worker's /metrics did not answer within 10 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        Ok(Sample {
            elapsed,
            input_bytes,
            consumed: metric_sum(&text, "cxpulse_events_consumed_total") as u64,
            checkpoint_bytes: metric_sum(&text, "cxpulse_checkpoint_bytes_total") as u64,
            rss_kib: rss_kib(self.child.id()).unwrap_or(0),
            state_bytes: by_label(&text, "cxpulse_state_bytes", "kind"),
            state_entries: by_label(&text, "cxpulse_state_entries", "kind"),
        })
    }

    /// SIGTERM, then a bounded wait for the graceful stop; SIGKILL past it.
    fn terminate(mut self, limit: Duration) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("cannot run `kill -TERM`")?;
        anyhow::ensure!(sent.success(), "`kill -TERM` failed: {sent}");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(None)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The windowed counts of a scrape by their full series name (labels included).
type Counts = BTreeMap<String, f64>;

fn windowed_counts(text: &str) -> Counts {
    text.lines()
        .filter(|line| WINDOWED.iter().any(|name| line.starts_with(&format!("{name}{{"))))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Up to `limit` differences between two scrapes' counts, as text.
fn differences(before: &Counts, after: &Counts, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (series, value) in before {
        match after.get(series) {
            Some(v) if v == value => {}
            Some(v) => out.push(format!("{series}: {value} before, {v} after")),
            None => out.push(format!("{series}: {value} before, missing after")),
        }
    }
    for (series, value) in after {
        if !before.contains_key(series) {
            out.push(format!("{series}: missing before, {value} after"));
        }
    }
    out.truncate(limit);
    out
}

/// Scrapes the windowed counts, SIGKILLs the worker, starts another on the same config and
/// compares its counts once it holds every partition with none restoring.
fn exact_after_sigkill(
    options: &SoakOptions,
    mut first: WorkerProcess,
    config: &Path,
    dir: &Path,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    let before = windowed_counts(
        &first.metrics().ok_or_else(|| anyhow!("the worker's /metrics did not answer"))?,
    );
    first.child.kill().context("cannot SIGKILL the worker")?;
    first.child.wait()?;
    drop(first);
    let started = Instant::now();
    let mut second = WorkerProcess::start(config, &dir.join("worker-2.log"), listen)?;
    let limit = Duration::from_secs(120);
    let text = loop {
        second.check_running()?;
        if started.elapsed() >= limit {
            bail!(
                "the restarted worker did not hold all {} partitions, none restoring, within {} s; its log ends:\n{}",
                options.partitions,
                limit.as_secs(),
                second.log_tail()
            );
        }
        let ready = http_get(listen, "/readyz").is_some_and(|(status, _)| status == 200);
        if let (true, Some(text)) = (ready, second.metrics()) {
            let assigned = metric_sum(&text, "cxpulse_partitions_assigned") as i32;
            let restoring = metric_sum(&text, "cxpulse_partitions_restoring") as i32;
            if assigned == options.partitions && restoring == 0 {
                break text;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let restored_in = started.elapsed();
    let after = windowed_counts(&text);
    let restores = |source: &str| {
        metric_value(&text, &format!("cxpulse_partition_restores_total{{source=\"{source}\"}}"))
            .unwrap_or(0.0) as u64
    };
    println!(
        "--- exactness after SIGKILL (restart to all {} partitions held, none restoring: {:.1} s) ---",
        options.partitions,
        restored_in.as_secs_f64()
    );
    println!(
        "partition restores: checkpoint {}, replay {}; checkpoints unusable: {}",
        restores("checkpoint"),
        restores("replay"),
        metric_sum(&text, "cxpulse_checkpoints_unusable_total") as u64
    );
    let diff = differences(&before, &after, 5);
    println!(
        "windowed series compared: {} before, {} after; identical: {}",
        before.len(),
        after.len(),
        if diff.is_empty() && !before.is_empty() { "yes" } else { "no" }
    );
    for line in &diff {
        println!("    {line}");
    }
    if !diff.is_empty() {
        // A replay still catching up would settle; a real loss would not.
        let settling = Instant::now();
        while settling.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_secs(1));
            let now = second.metrics().map(|text| windowed_counts(&text));
            if now.is_some_and(|now| differences(&before, &now, 1).is_empty()) {
                println!("    identical {:.0} s later", settling.elapsed().as_secs_f64());
                break;
            }
        }
    }
    match second.terminate(Duration::from_secs(30))? {
        Some(status) => println!("restarted worker stopped on SIGTERM: {status}"),
        None => println!("restarted worker did not stop within 30 s of SIGTERM; killed"),
    }
    Ok(())
}

/// What the state topic holds, read from the beginning to the end of every partition.
struct StateTopic {
    records: u64,
    tombstones: u64,
    bytes: u64,
    largest: usize,
    latest_keys: usize,
    latest_bytes: u64,
    /// Per partition: low and high offsets when the read started, value bytes read.
    partitions: BTreeMap<i32, (i64, i64, u64)>,
}

fn reader(brokers: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "soak-state-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| anyhow!("cannot create the state topic reader: {e}"))
}

fn read_state_topic(brokers: &str, partitions: i32) -> anyhow::Result<StateTopic> {
    let consumer = reader(brokers)?;
    let mut topic = StateTopic {
        records: 0,
        tombstones: 0,
        bytes: 0,
        largest: 0,
        latest_keys: 0,
        latest_bytes: 0,
        partitions: BTreeMap::new(),
    };
    let mut tpl = TopicPartitionList::new();
    // Where each partition's read is done: its high watermark when the read started.
    let mut remaining = HashMap::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(STATE_TOPIC, p, Duration::from_secs(10))
            .map_err(|e| anyhow!("watermarks of {STATE_TOPIC} [{p}]: {e}"))?;
        topic.partitions.insert(p, (low, high, 0));
        if high > low {
            remaining.insert(p, high);
            tpl.add_partition_offset(STATE_TOPIC, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut latest: HashMap<Vec<u8>, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !remaining.is_empty() {
        if Instant::now() >= deadline {
            bail!("reading {STATE_TOPIC} took over 120 s; partitions left: {remaining:?}");
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => message,
            Some(Err(e)) => bail!("reading {STATE_TOPIC}: {e}"),
            None => continue,
        };
        let len = message.payload().map_or(0, <[u8]>::len);
        topic.records += 1;
        topic.bytes += len as u64;
        topic.largest = topic.largest.max(len);
        if let Some(entry) = topic.partitions.get_mut(&message.partition()) {
            entry.2 += len as u64;
        }
        let key = message.key().unwrap_or_default().to_vec();
        match message.payload() {
            Some(value) => {
                latest.insert(key, value.len());
            }
            None => {
                topic.tombstones += 1;
                latest.remove(&key);
            }
        }
        if remaining.get(&message.partition()).is_some_and(|high| message.offset() + 1 >= *high) {
            remaining.remove(&message.partition());
        }
    }
    topic.latest_keys = latest.len();
    topic.latest_bytes = latest.values().map(|n| *n as u64).sum();
    Ok(topic)
}

/// How many partitions of the event topic hold events, and those whose oldest events the
/// embedded broker has deleted.
fn source_partitions(brokers: &str, partitions: i32) -> anyhow::Result<(usize, Vec<i32>)> {
    let consumer = reader(brokers)?;
    let (mut with_events, mut trimmed) = (0, Vec::new());
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .map_err(|e| anyhow!("watermarks of {TOPIC} [{p}]: {e}"))?;
        if high > 0 {
            with_events += 1;
        }
        if low > 0 {
            trimmed.push(p);
        }
    }
    Ok((with_events, trimmed))
}

/// A plain HTTP/1.0 GET on loopback: the status and the body, or `None` on any failure.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: soak\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Some((status, body.to_string()))
}

/// The sum of every series of the family `name` (labelled or not).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of one series, written exactly as `series` (name and labels).
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The series of the family `name` by the value of their one label `label`.
fn by_label(text: &str, name: &str, label: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{name}{{{label}=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (value, tail) = rest.split_once('"')?;
            let number: f64 = tail.rsplit(' ').next()?.parse().ok()?;
            Some((value.to_string(), number as u64))
        })
        .collect()
}

/// The resident set size of process `pid`, from /proc (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A directory of its own under the system's temp dir, removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(format!(
            "cxpulse-soak-{}-{}",
            std::process::id(),
            cxpulse_kafka::util::wall_ms()
        ));
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
