//! Wiring shared by `run` and `demo`: engine, worker thread, HTTP server, logging, signals.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use cxpulse_core::Engine;
use cxpulse_http::HttpState;
use cxpulse_kafka::client_log::{ClientLog, QuietContext};
use cxpulse_kafka::topic_check::{self, TopicRoles};
use cxpulse_kafka::Worker;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use tracing::{error, info};

use crate::settings::Settings;

pub fn init_logging(level: &str, json: bool) -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| anyhow!("invalid log level `{filter}`: {e}"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if json { builder.json().try_init() } else { builder.try_init() };
    result.map_err(|e| anyhow!("cannot start logging: {e}"))
}

/// Sets `stop` on SIGINT or SIGTERM (from a small background thread with its own runtime).
pub fn stop_on_signal(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            wait_for_signal().await;
            info!("signal received, stopping");
            stop.store(true, Ordering::Relaxed);
            // Every stop step has its own deadline; this one bounds them all, so a stop never
            // outlasts Kubernetes' grace period. What is not committed is read again.
            tokio::time::sleep(cxpulse_kafka::worker::STOP_LIMIT + Duration::from_secs(1)).await;
            error!("stop deadline passed; exiting now");
            std::process::exit(0);
        })
    });
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Fails with one clear line when no broker answers a metadata request within 10 s.
/// Its client reports through `log`, the process's other clients' (so that a broker that is away
/// is one line, whoever noticed).
pub fn check_brokers(config: &ClientConfig, brokers: &str, log: &ClientLog) -> anyhow::Result<()> {
    let producer: BaseProducer<QuietContext> = config
        .create_with_context(QuietContext(log.clone()))
        .map_err(|e| anyhow!("invalid Kafka settings: {e}"))?;
    // Short tries with a poll between them, so the first connection failure is reported at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match producer.client().fetch_metadata(None, Duration::from_millis(500)) {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(anyhow!("cannot reach Kafka at {brokers}: {e}"))
            }
            Err(_) => producer.poll(Duration::ZERO),
        }
    }
}

/// How long the startup topic check keeps waiting for a broker that did not answer at first.
const TOPIC_CHECK_PATIENCE: Duration = Duration::from_secs(300);

/// Retries [`check_brokers`] (its failures are already reported) until a broker answers, `stop`
/// is set or [`TOPIC_CHECK_PATIENCE`] passes; whether a broker answered.
fn wait_for_brokers(
    config: &ClientConfig,
    brokers: &str,
    stop: &AtomicBool,
    log: &ClientLog,
) -> bool {
    let deadline = std::time::Instant::now() + TOPIC_CHECK_PATIENCE;
    while std::time::Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if check_brokers(config, brokers, log).is_ok() {
            return true;
        }
        // An attempt lasts 10 s when the broker is away; this bounds the loop when it fails fast.
        std::thread::sleep(Duration::from_secs(1));
    }
    false
}

/// The topics a worker uses, by role, for the topic settings check.
pub fn topic_roles(settings: &Settings) -> TopicRoles {
    let state = &settings.source.state_topic;
    TopicRoles {
        events: settings.source.topics.clone(),
        dead_letter: settings.source.dead_letter_topic(),
        state: (!state.is_empty()).then(|| state.clone()),
        feed: settings.feed.topic().map(str::to_string),
    }
}

/// `check-config --connect`: reaches the brokers (an error when none answers within 10 s), then
/// prints the topic settings that will hurt as TOML comments, so the output stays valid TOML.
/// Warnings are not errors: the worker runs with them.
pub fn check_topics_connected(settings: &Settings) -> anyhow::Result<()> {
    let brokers = settings.brokers();
    let client = cxpulse_kafka::config::producer_config(&settings.kafka);
    let log = ClientLog::default();
    check_brokers(&client, &brokers, &log)?;
    let roles = topic_roles(settings);
    match topic_check::describe(&client, &roles.all(), topic_check::DESCRIBE_TIMEOUT, &log) {
        Ok(configs) => {
            let warnings = topic_check::evaluate(&roles, &configs, settings.longest_window_ms());
            for w in &warnings {
                println!("# warning: topic {} {}: {}", w.topic, w.setting, w.problem);
            }
            println!(
                "# connected to {brokers}: {} topic settings warning(s) for {} topic(s)",
                warnings.len(),
                configs.len()
            );
        }
        Err(e) => println!("# connected to {brokers}; topic settings not checked: {e}"),
    }
    Ok(())
}

/// Runs the worker and the HTTP server until a signal (or `stop`, when given) asks to stop.
/// `on_bound` learns the HTTP address once it listens.
pub fn run(settings: &Settings, stop: Option<Arc<AtomicBool>>) -> anyhow::Result<()> {
    // First of all: a worker that cannot serve must not join its group and take partitions.
    let listener = cxpulse_http::listener::bind(&settings.http.listen.to_string())?;
    run_bound(settings, listener, stop, |_| {})
}

/// [`run_with`] on a listener the caller bound already (from `cxpulse_http::listener::bind`).
pub fn run_bound(
    settings: &Settings,
    listener: std::net::TcpListener,
    stop: Option<Arc<AtomicBool>>,
    on_bound: impl FnOnce(SocketAddr) + Send + 'static,
) -> anyhow::Result<()> {
    let addr = cxpulse_http::listener::local_addr(&listener)?;
    let worker = Worker::new(Engine::new(settings.engine.clone()).map_err(|e| anyhow!(e))?);
    let engine = worker.engine.clone();
    let stop = stop.unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
    stop_on_signal(stop.clone())?;

    let brokers = settings.brokers();
    let probe = cxpulse_kafka::config::producer_config(&settings.kafka);
    let roles = topic_roles(settings);
    let longest_window_ms = settings.longest_window_ms();
    let check_metrics = worker.metrics.clone();
    let client_log = worker.client_log.clone();
    let probe_stop = stop.clone();
    // Off the consume thread: neither joining the group nor counting waits for these answers.
    std::thread::spawn(move || {
        if let Err(e) = check_brokers(&probe, &brokers, &client_log) {
            client_log.connectivity(&format!("{e}; /readyz stays false until it answers"));
            if !wait_for_brokers(&probe, &brokers, &probe_stop, &client_log) {
                return;
            }
        }
        topic_check::check_and_report(
            &probe,
            &roles,
            longest_window_ms,
            &check_metrics,
            &client_log,
        );
    });

    let state = Arc::new(HttpState::new(
        engine,
        worker.health.clone(),
        Some(worker.metrics.registry.clone()),
        settings.alerts.clone(),
        env!("CARGO_PKG_VERSION"),
    ));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let http_stop = stop.clone();
    info!(%addr, "serving /metrics /healthz /readyz /api/v1/scores");
    on_bound(addr);
    let http_settings = settings.http.clone();
    let http = runtime.spawn(async move {
        let stopping = http_stop.clone();
        let shutdown = async move {
            while !stopping.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let served = cxpulse_http::serve(&http_settings, listener, state, shutdown).await;
        // A worker that no longer serves stops too, rather than run on invisibly.
        http_stop.store(true, Ordering::Relaxed);
        served
    });

    let worker_result = cxpulse_kafka::run_worker(
        &worker,
        &settings.kafka,
        &settings.source,
        &settings.feed,
        &stop,
    );
    stop.store(true, Ordering::Relaxed);
    let http_result =
        runtime.block_on(http).map_err(|e| anyhow!("http server task failed: {e}"))?;
    runtime.shutdown_timeout(Duration::from_secs(2));
    worker_result?;
    http_result
}
