//! `cxpulse gateway`: the HTTP front door (crates/cxpulse-gateway) wired to the configuration,
//! Kafka and the process's signals.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use cxpulse_gateway::kafka::Sink;
use cxpulse_gateway::metrics::GatewayMetrics;
use cxpulse_gateway::{Gateway, GatewayConfig, GatewaySettings};
use cxpulse_kafka::KafkaSettings;
use tracing::info;

use crate::settings::Settings;

/// Runs the gateway until SIGINT/SIGTERM.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    crate::pipeline::stop_on_signal(stop.clone())?;
    // Bound first, so that a taken address fails at once, before Kafka is touched.
    let listener = cxpulse_http::listener::bind(&settings.gateway.listen.to_string())?;
    let dead_letter_topic = settings.source.dead_letter_topic();
    run_bound(&settings.kafka, dead_letter_topic, settings.gateway.clone(), listener, stop, |_| {})
}

/// Runs `gateway` on a listener the caller bound already (from `cxpulse_http::listener::bind`)
/// until `stop` is set; `on_bound` learns the address once it listens.
fn run_bound(
    kafka: &KafkaSettings,
    dead_letter_topic: Option<String>,
    gateway: GatewaySettings,
    listener: std::net::TcpListener,
    stop: Arc<AtomicBool>,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let topic = gateway.topic.clone();
    let sink = Sink::new(kafka, topic.clone(), dead_letter_topic, gateway.ack_timeout)?;
    let addr = cxpulse_http::listener::local_addr(&listener)?;
    let gateway = Arc::new(Gateway { settings: gateway, sink, metrics: GatewayMetrics::new() });
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let served = runtime.block_on(async {
        let tls_on = gateway.settings.tls.is_some();
        let sources = gateway.settings.sources.len();
        info!(%addr, %topic, tls = tls_on, sources, "gateway listening");
        on_bound(addr);
        let shutdown = async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            info!("gateway stopping: draining requests in flight");
        };
        let router = cxpulse_gateway::router(gateway.clone());
        cxpulse_gateway::serve(router, listener, &gateway.settings, shutdown)
            .await
            .map_err(|e| anyhow!("gateway server failed: {e}"))
    });
    gateway.sink.flush(Duration::from_secs(2));
    runtime.shutdown_timeout(Duration::from_secs(2));
    info!("gateway stopped");
    served
}

/// Binds the demo gateway's address, the port after the worker's, so that the demo can fail on
/// a taken port with one line before anything starts.
pub fn bind_demo(worker_listen: &str) -> anyhow::Result<std::net::TcpListener> {
    let mut addr: SocketAddr = worker_listen
        .parse()
        .map_err(|_| anyhow!("`{worker_listen}` is not an address like 127.0.0.1:9898"))?;
    addr.set_port(addr.port().checked_add(1).ok_or_else(|| anyhow!("no port after {addr}"))?);
    cxpulse_http::listener::bind(&addr.to_string())
        .map_err(|e| anyhow!("demo gateway (the worker's port + 1): {e}"))
}

/// The demo's gateway on `listener` (from [`bind_demo`]), with one Delighted source (brand
/// `demo`, token `demo`), so a `curl` shows an answer going from webhook to `/metrics`.
pub fn spawn_demo(
    settings: &Settings,
    listener: std::net::TcpListener,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let addr = cxpulse_http::listener::local_addr(&listener)?;
    let mut config = GatewayConfig { listen: addr.to_string(), ..GatewayConfig::default() };
    if !addr.ip().is_loopback() {
        config.token = Some(cxpulse_core::secret::Secret::new("demo"));
    }
    config.sources = vec![cxpulse_gateway::SourceSpec {
        name: "delighted".into(),
        kind: cxpulse_gateway::Kind::Delighted,
        brand: Some("demo".into()),
        brand_from: None,
        segment_from: Some("event_data.person_properties.plan".into()),
        token: Some(cxpulse_core::secret::Secret::new("demo")),
        secret: None,
        survey: None,
        scale_max: None,
        score_field: None,
        customer_from: None,
    }];
    let gateway = config
        .compile(settings.source.topics.first().map(String::as_str))
        .map_err(|e| anyhow!("demo gateway: {e}"))?;
    let (kafka, dead_letter_topic) = (settings.kafka.clone(), settings.source.dead_letter_topic());
    Ok(std::thread::spawn(move || {
        let printed = run_bound(&kafka, dead_letter_topic, gateway, listener, stop, |addr| {
            println!("  gateway  http://{addr}/v1/events   http://{addr}/v1/webhooks/delighted?token=demo");
        });
        if let Err(e) = printed {
            tracing::error!("demo gateway failed: {e:#}");
        }
    }))
}
