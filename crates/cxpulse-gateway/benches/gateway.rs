//! How many `/v1/events` requests, and events, the gateway takes per second: an embedded
//! Kafka-protocol broker (librdkafka's mock cluster), the gateway's router served as
//! `cxpulse gateway` serves it, and keep-alive HTTP/1.1 clients posting NDJSON batches of 100
//! valid events. Every request is answered only after Kafka acknowledged its events, so the
//! figures include the round trip to the broker.
//!
//! `cargo bench -p cxpulse-gateway --bench gateway -- [connections] [seconds] [batch]`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cxpulse_gateway::kafka::Sink;
use cxpulse_gateway::metrics::GatewayMetrics;
use cxpulse_gateway::{Gateway, GatewayConfig};
use rdkafka::mocking::MockCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let connections = args.first().copied().unwrap_or(8);
    let seconds = args.get(1).copied().unwrap_or(10);
    let batch = args.get(2).copied().unwrap_or(100);

    let cluster = MockCluster::new(1)?;
    cluster.create_topic("cx-events", 12, 1)?;
    let mut settings = cxpulse_kafka::KafkaSettings::new();
    settings.insert("bootstrap.servers".into(), cluster.bootstrap_servers());
    let config = GatewayConfig {
        limits: cxpulse_http::HttpLimits { max_body_bytes: 4 << 20, ..Default::default() },
        ..GatewayConfig::default()
    };
    let compiled = config.compile(Some("cx-events"))?;
    let sink = Sink::new(&settings, compiled.topic.clone(), None, compiled.ack_timeout)?;
    let gateway = Arc::new(Gateway { settings: compiled, sink, metrics: GatewayMetrics::new() });

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let listener = cxpulse_http::listener::bind("127.0.0.1:0")?;
        let addr = cxpulse_http::listener::local_addr(&listener)?;
        let stop = Arc::new(AtomicBool::new(false));
        let server_stop = stop.clone();
        let shutdown = async move {
            while !server_stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let router = cxpulse_gateway::router(gateway.clone());
        let served = gateway.clone();
        let server = tokio::spawn(async move {
            cxpulse_gateway::serve(router, listener, &served.settings, shutdown).await
        });
        let requests = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let mut clients = Vec::new();
        for connection in 0..connections {
            let (requests, failures) = (requests.clone(), failures.clone());
            clients.push(tokio::spawn(async move {
                let Ok(mut stream) = TcpStream::connect(addr).await else { return };
                let _ = stream.set_nodelay(true);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let body = ndjson(connection, n, batch);
                    n += 1;
                    match post(&mut stream, &body).await {
                        Some(200) => requests.fetch_add(1, Ordering::Relaxed),
                        _ => failures.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        for client in clients {
            let _ = client.await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let _ = server.await;
        let ok = requests.load(Ordering::Relaxed);
        println!(
            "{connections} connections, {seconds} s, {batch}-event batches: {:.0} requests/s, \
             {:.0} events/s ({ok} requests acknowledged, {} failed)",
            ok as f64 / elapsed,
            (ok * batch) as f64 / elapsed,
            failures.load(Ordering::Relaxed)
        );
        anyhow::Ok(())
    })?;
    drop(cluster);
    Ok(())
}

fn ndjson(connection: u64, request: u64, batch: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let brands = ["acme", "globex", "initech", "umbrella"];
    let mut body = String::with_capacity(batch as usize * 160);
    for i in 0..batch {
        body.push_str(&format!(
            "{{\"event_id\":\"bench-{connection}-{request}-{i}\",\"type\":\"survey_response\",\
             \"occurred_at\":{now},\"brand\":\"{}\",\"segment\":\"smb\",\"survey\":\"nps\",\
             \"score\":{}}}\n",
            brands[(i % 4) as usize],
            i % 11
        ));
    }
    body
}

/// One keep-alive HTTP/1.1 POST; the status, or `None` when the connection failed.
async fn post(stream: &mut TcpStream, body: &str) -> Option<u16> {
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: bench\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body.as_bytes()).await.ok()?;
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = std::str::from_utf8(&buffer[..end]).ok()?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buffer.len() < end + 4 + length {
            let read = stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        return Some(status);
    }
}
