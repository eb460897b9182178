//! `cxpulse demo`: everything in one process. librdkafka's mock cluster is a real Kafka-protocol
//! broker on loopback; it starts with hours of normal history, a synthetic producer then feeds it
//! live (globex's NPS dips after `--dip-after` seconds), and a worker with the default windows
//! consumes it and serves the HTTP endpoints. `--alerting` adds Prometheus and Alertmanager.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use cxpulse_core::synth::{Synth, SynthConfig};
use cxpulse_kafka::produce::{preload, produce_synthetic, Preload, ProduceOptions};
use rdkafka::mocking::MockCluster;
use tracing::{error, info};

use crate::config::Config;
use crate::tools::alerting::{LocalAlerting, Programs};

const TOPIC: &str = "cx-events";
/// The detractor feed's topic: one message per detractor answer, for someone to call back.
const FEED_TOPIC: &str = "cx-events.detractors";
const PARTITIONS: i32 = 12;
/// The demo's NPS threshold for every brand: healthy brands sit near 40, globex's dip near -80.
const NPS_THRESHOLD: f64 = 10.0;
/// History spans from 6 hours ago to now: the older part (to an hour ago) in the 24h window,
/// the last hour in the 1h window too, so the page's trend is drawn at first load.
const HISTORY_FROM_MS: i64 = 6 * 3_600_000;
const LAST_HOUR_MS: i64 = 3_600_000;
/// The older history holds as many events as this many seconds of live traffic. Sized for one
/// story: the history teaches each series' drop detector its baseline, so globex's drop evidence
/// reaches the alarm within seconds of the dip, well before its 24h NPS (history plus dip) falls
/// under the threshold, under a minute into the dip.
const HISTORY_SECONDS_OF_TRAFFIC: u64 = 110;
/// The last hour holds this many seconds of live traffic: about ten NPS answers per
/// brand/segment and minute, a trend a dip quickly outweighs in the 1h window.
const LAST_HOUR_SECONDS_OF_TRAFFIC: u64 = 30;

/// Longest wait for the worker to read the history before Prometheus starts anyway.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

pub struct DemoOptions {
    pub listen: String,
    /// Live events per second.
    pub rate: u64,
    /// Stop after this many seconds.
    pub duration: Option<u64>,
    /// Seconds of live traffic before globex's NPS dips.
    pub dip_after: u64,
    /// Run Prometheus and Alertmanager too, and print the alerts.
    pub alerting: bool,
}

pub fn run(options: &DemoOptions) -> anyhow::Result<()> {
    // Bound first, so that a taken address stops the demo before anything starts.
    let listener = cxpulse_http::listener::bind(&options.listen)?;
    let gateway_listener = crate::gateway::bind_demo(&options.listen)?;
    let started = Instant::now();
    let programs = options.alerting.then(Programs::find).transpose()?;
    let cluster =
        MockCluster::new(1).map_err(|e| anyhow!("cannot start the embedded broker: {e}"))?;
    cluster
        .create_topic(TOPIC, PARTITIONS, 1)
        .map_err(|e| anyhow!("cannot create {TOPIC}: {e}"))?;
    cluster
        .create_topic(&format!("{TOPIC}.dlq"), 1, 1)
        .map_err(|e| anyhow!("cannot create the DLQ: {e}"))?;
    cluster
        .create_topic(FEED_TOPIC, 1, 1)
        .map_err(|e| anyhow!("cannot create the detractor feed: {e}"))?;
    let brokers = cluster.bootstrap_servers();
    info!(%brokers, "embedded Kafka-protocol broker up");

    let mut config = Config::default();
    for (key, value) in [
        ("bootstrap.servers", brokers.as_str()),
        ("group.id", "cxpulse-demo"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        config.set_kafka(key, value);
    }
    config.http.listen = options.listen.clone();
    config.alerts.nps_threshold = NPS_THRESHOLD;
    config.feed.detractors_topic = FEED_TOPIC.into();
    let settings = config.compile()?;

    let run_id = format!("demo{}", cxpulse_kafka::util::wall_ms());
    let rate = options.rate.max(1);
    let history = rate * (HISTORY_SECONDS_OF_TRAFFIC + LAST_HOUR_SECONDS_OF_TRAFFIC);
    backfill(&brokers, &run_id, rate)?;
    info!(events = history, "backfilled hours of normal history");

    let stop = Arc::new(AtomicBool::new(false));
    let producer_stop = stop.clone();
    let producer_config = cxpulse_kafka::config::producer_config(&settings.kafka);
    let live = ProduceOptions {
        topic: TOPIC.into(),
        rate: options.rate,
        count: None,
        synth: SynthConfig {
            run_id,
            dip_after_ms: options.dip_after as i64 * 1000,
            invalid_ratio: 0.01,
            journeys: true,
            ..SynthConfig::default()
        },
    };
    let producer = std::thread::spawn(move || {
        match produce_synthetic(&producer_config, &live, &producer_stop) {
            Ok(sent) => info!(sent, "synthetic producer stopped"),
            Err(e) => error!("synthetic producer failed: {e}"),
        }
    });
    if let Some(seconds) = options.duration {
        let timer_stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(seconds));
            timer_stop.store(true, Ordering::Relaxed);
        });
    }

    let gateway = crate::gateway::spawn_demo(&settings, gateway_listener, stop.clone())?;
    // The alerting stack starts once the worker listens, and is stopped as soon as the demo is
    // told to stop, before the worker goes away (or its disappearance would alert).
    let alerting_failed: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    let alerting_watcher: Arc<Mutex<Option<std::thread::JoinHandle<()>>>> = Arc::default();
    let (failed, watcher) = (alerting_failed.clone(), alerting_watcher.clone());
    let alerting_stop = stop.clone();
    let dip_after = options.dip_after;
    let result = crate::pipeline::run_bound(&settings, listener, Some(stop.clone()), move |addr| {
        println!("cxpulse demo is running (Ctrl-C to stop):");
        println!("  page     http://{addr}/");
        println!("  metrics  http://{addr}/metrics");
        println!("  scores   http://{addr}/api/v1/scores");
        println!("  health   http://{addr}/healthz   http://{addr}/readyz");
        println!("  broker   {brokers} (topic {TOPIC}, {PARTITIONS} partitions; DLQ {TOPIC}.dlq; detractor feed {FEED_TOPIC})");
        println!("  history  {history} events of normal traffic over the last 6 hours");
        println!("  globex's NPS starts dipping {dip_after} s in; initech's detractors churn ten times as often as its promoters.");
        let Some(programs) = programs else { return };
        // Not in this callback: the worker serves HTTP only once it returns.
        let handle = std::thread::spawn(move || {
            // Prometheus starts once the history is read: a worker busy with it may answer
            // scrapes late, and with `for:` in seconds a few late scrapes would page "no worker
            // is up".
            let caught_up = crate::tools::alerting::wait_until_consumed(
                addr,
                history,
                CATCH_UP_LIMIT,
                &alerting_stop,
            );
            println!("  history  read by the worker {caught_up}");
            match LocalAlerting::start(&programs, addr, started) {
                Ok(stack) => {
                    while !alerting_stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    drop(stack);
                }
                Err(e) => {
                    *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    alerting_stop.store(true, Ordering::Relaxed);
                }
            }
        });
        *watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    });
    stop.store(true, Ordering::Relaxed);
    if let Some(handle) = alerting_watcher.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = handle.join();
    }
    let _ = producer.join();
    let _ = gateway.join();
    drop(cluster);
    if let Some(e) = alerting_failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e.context("--alerting"));
    }
    result
}

/// Hours of normal traffic for every brand (no dip), written before the worker starts: up to an
/// hour ago as much as `HISTORY_SECONDS_OF_TRAFFIC` of live traffic at `rate`, then the last hour.
fn backfill(brokers: &str, run_id: &str, rate: u64) -> anyhow::Result<()> {
    let mut synth = Synth::new(SynthConfig {
        seed: 11,
        run_id: format!("{run_id}-history"),
        dip_brand: None,
        invalid_ratio: 0.01,
        journeys: true,
        ..SynthConfig::default()
    });
    let now = cxpulse_kafka::util::wall_ms();
    let parts = [
        (now - HISTORY_FROM_MS, HISTORY_FROM_MS - LAST_HOUR_MS, rate * HISTORY_SECONDS_OF_TRAFFIC),
        (now - LAST_HOUR_MS, LAST_HOUR_MS, rate * LAST_HOUR_SECONDS_OF_TRAFFIC),
    ];
    for (from, span, events) in parts {
        let plan = Preload {
            brokers,
            topic: TOPIC,
            events,
            partitions: None,
            flush_limit: Duration::from_secs(30),
        };
        preload(&plan, |i| synth.next_message(from + (i as i64 * span / events.max(1) as i64)))
            .map(drop)
            .map_err(|e| e.context("history"))?;
    }
    Ok(())
}
