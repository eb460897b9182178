//! `cxpulse demo`: everything in one process. librdkafka's mock cluster is a real Kafka-protocol
//! broker on loopback; a synthetic producer feeds it (globex's NPS dips after a minute) and a
//! worker with the default windows consumes it and serves the HTTP endpoints.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use cxpulse_core::synth::SynthConfig;
use cxpulse_kafka::produce::{produce_synthetic, ProduceOptions};
use rdkafka::mocking::MockCluster;
use tracing::{error, info};

use crate::config::Config;

const TOPIC: &str = "cx-events";
const PARTITIONS: i32 = 12;

pub fn run(listen: &str, rate: u64, duration: Option<u64>) -> anyhow::Result<()> {
    // Bound first, so that a taken address stops the demo before anything starts.
    let listener = cxpulse_http::listener::bind(listen)?;
    let gateway_listener = crate::gateway::bind_demo(listen)?;
    let cluster =
        MockCluster::new(1).map_err(|e| anyhow!("cannot start the embedded broker: {e}"))?;
    cluster
        .create_topic(TOPIC, PARTITIONS, 1)
        .map_err(|e| anyhow!("cannot create {TOPIC}: {e}"))?;
    cluster
        .create_topic(&format!("{TOPIC}.dlq"), 1, 1)
        .map_err(|e| anyhow!("cannot create the DLQ: {e}"))?;
    let brokers = cluster.bootstrap_servers();
    info!(%brokers, "embedded Kafka-protocol broker up");

    let mut config = Config::default();
    for (key, value) in [
        ("bootstrap.servers", brokers.as_str()),
        ("group.id", "cxpulse-demo"),
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        config.kafka.insert(key.into(), toml::Value::String(value.into()));
    }
    config.http.listen = listen.to_string();
    config.alerts.nps_threshold = 10.0;
    config.validate()?;

    let stop = Arc::new(AtomicBool::new(false));
    let producer_stop = stop.clone();
    let producer_config = cxpulse_kafka::config::producer_config(&config.kafka_settings());
    let producer = std::thread::spawn(move || {
        let options = ProduceOptions {
            topic: TOPIC.into(),
            rate,
            count: None,
            synth: SynthConfig {
                run_id: format!("demo{}", cxpulse_kafka::worker::wall_ms()),
                invalid_ratio: 0.01,
                ..SynthConfig::default()
            },
        };
        match produce_synthetic(&producer_config, &options, &producer_stop) {
            Ok(sent) => info!(sent, "synthetic producer stopped"),
            Err(e) => error!("synthetic producer failed: {e}"),
        }
    });
    if let Some(seconds) = duration {
        let timer_stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(seconds));
            timer_stop.store(true, Ordering::Relaxed);
        });
    }

    let gateway = crate::gateway::spawn_demo(&config, gateway_listener, stop.clone())?;
    let result = crate::pipeline::run_bound(&config, listener, Some(stop.clone()), move |addr| {
        println!("cxpulse demo is running (Ctrl-C to stop):");
        println!("  page     http://{addr}/");
        println!("  metrics  http://{addr}/metrics");
        println!("  scores   http://{addr}/api/v1/scores");
        println!("  health   http://{addr}/healthz   http://{addr}/readyz");
        println!("  broker   {brokers} (topic {TOPIC}, {PARTITIONS} partitions; DLQ {TOPIC}.dlq)");
        println!("  globex's NPS starts dipping about a minute in.");
    });
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    let _ = gateway.join();
    drop(cluster);
    result
}
