//! `cxpulse gateway`: the HTTP front door (crates/cxpulse-gateway) wired to the configuration,
//! Kafka and the process's signals.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use cxpulse_gateway::kafka::Sink;
use cxpulse_gateway::metrics::GatewayMetrics;
use cxpulse_gateway::Gateway;
use tracing::info;

use crate::config::Config;

/// Runs the gateway until SIGINT/SIGTERM.
pub fn run(config: &Config) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    crate::pipeline::stop_on_signal(stop.clone())?;
    run_until(config, stop, |_| {})
}

/// Runs the gateway until `stop` is set; `on_bound` learns the address once it listens.
pub fn run_until(
    config: &Config,
    stop: Arc<AtomicBool>,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let settings = &config.gateway;
    settings.validate().map_err(|e| anyhow!("invalid config: {e}"))?;
    let topic = settings
        .topic
        .clone()
        .or_else(|| config.source.topics.first().cloned())
        .ok_or_else(|| anyhow!("invalid config: no [gateway] topic and no [source] topics"))?;
    let sink = Sink::new(
        &config.kafka_settings(),
        topic.clone(),
        config.source.dead_letter_topic(),
        settings.ack_timeout(),
    )?;
    let drain = settings.drain_timeout();
    let gateway =
        Arc::new(Gateway { config: settings.clone(), sink, metrics: GatewayMetrics::new() });
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listen = settings.listen.clone();
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|e| anyhow!("cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        info!(%addr, %topic, sources = gateway.config.sources.len(), "gateway listening");
        on_bound(addr);
        let shutdown = async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            info!("gateway stopping: draining requests in flight");
        };
        cxpulse_gateway::serve(cxpulse_gateway::router(gateway.clone()), listener, shutdown, drain)
            .await
            .map_err(|e| anyhow!("gateway server failed: {e}"))
    });
    gateway.sink.flush(Duration::from_secs(2));
    runtime.shutdown_timeout(Duration::from_secs(2));
    info!("gateway stopped");
    served
}

/// The demo's gateway: on the port after the worker's, with one Delighted source (brand `demo`,
/// token `demo`), so a `curl` shows an answer going from webhook to `/metrics`.
pub fn spawn_demo(
    config: &Config,
    worker_listen: &str,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut addr: SocketAddr = worker_listen
        .parse()
        .map_err(|_| anyhow!("`{worker_listen}` is not an address like 127.0.0.1:9898"))?;
    addr.set_port(addr.port().checked_add(1).ok_or_else(|| anyhow!("no port after {addr}"))?);
    let mut config = config.clone();
    config.gateway.listen = addr.to_string();
    if !addr.ip().is_loopback() {
        config.gateway.token = Some("demo".into());
    }
    config.gateway.sources = vec![cxpulse_gateway::SourceSpec {
        name: "delighted".into(),
        kind: cxpulse_gateway::Kind::Delighted,
        brand: Some("demo".into()),
        brand_from: None,
        segment_from: Some("event_data.person_properties.plan".into()),
        token: Some("demo".into()),
        secret: None,
        survey: None,
        scale_max: None,
        score_field: None,
        customer_from: None,
    }];
    config.gateway.validate().map_err(|e| anyhow!("demo gateway: {e}"))?;
    Ok(std::thread::spawn(move || {
        let printed = run_until(&config, stop, |addr| {
            println!("  gateway  http://{addr}/v1/events   http://{addr}/v1/webhooks/delighted?token=demo");
        });
        if let Err(e) = printed {
            tracing::error!("demo gateway failed: {e:#}");
        }
    }))
}
