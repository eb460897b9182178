//! The listener under attack, as a hostile client on loopback would try it: slow headers, idle
//! connections by the thousand, a stalled TLS handshake, oversized bodies; and a worker whose
//! address is taken. Every wait is bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixture::*;

/// A worker with `http` lines added to `[http]`, its descriptor limit lowered to `nofile` when
/// given, once it answers `/healthz`.
fn worker_with(scenario: &Scenario, tag: &str, http: &str, nofile: Option<u32>) -> WorkerProcess {
    let config = WorkerConfig::new(&format!("g-{tag}"), tag).extra(&format!("[http]\n{http}"));
    let worker = start_worker_limited(tag, &scenario.brokers, &config.toml(), nofile);
    wait_for(Duration::from_secs(30), || {
        http_get(&worker.addr, "/healthz").filter(|(s, _)| *s == 200)
    })
    .unwrap_or_else(|| panic!("worker never healthy; log:\n{}", worker.log()));
    worker
}

/// A probe as Kubernetes sends it: the status, if the answer comes within 1 s.
fn probe(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    String::from_utf8_lossy(&head[9..12]).parse().ok()
}

#[test]
fn a_slowloris_is_closed_within_the_header_limit() {
    let scenario = Scenario::new(&[("slow", 1)]);
    let worker = worker_with(&scenario, "slow", "header_read_timeout = \"2s\"", None);
    let request =
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (open, took) = slowloris(&worker.addr, 50, request);
    assert_eq!(open, 0, "slow clients still open after {took:?}");
    assert!(took >= Duration::from_millis(1500), "closed before the limit: {took:?}");
    assert!(took < Duration::from_millis(4500), "limit 2 s, closed after {took:?}");
    // The listener still serves real clients.
    assert_eq!(http_get(&worker.addr, "/healthz").map(|(s, _)| s), Some(200));
}

#[test]
fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let scenario = Scenario::new(&[("idle", 1)]);
    let worker = worker_with(
        &scenario,
        "idle",
        "keep_alive_timeout = \"2s\"\nheader_read_timeout = \"5s\"",
        None,
    );
    let mut busy = TcpStream::connect(&worker.addr).expect("connect");
    let mut idle = TcpStream::connect(&worker.addr).expect("connect");
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    idle.write_all(request).expect("write");
    let started = Instant::now();
    // The busy one asks every 0.5 s over 4 s: twice the idle limit, never idle that long.
    let mut answers = 0;
    while started.elapsed() < Duration::from_secs(4) {
        busy.write_all(request).expect("busy connection kept");
        busy.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let mut buf = [0u8; 1024];
        if busy.read(&mut buf).is_ok_and(|n| n > 0) {
            answers += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(answers >= 6, "busy keep-alive connection answered {answers} times");
    let mut drained = Vec::new();
    idle.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let _ = idle.read_to_end(&mut drained);
    assert!(String::from_utf8_lossy(&drained).starts_with("HTTP/1.1 200"));
    assert!(closed(&mut idle), "idle connection still open after 4 s (limit 2 s)");
}

#[test]
fn a_thousand_idle_connections_do_not_stop_the_probes() {
    let scenario = Scenario::new(&[("flood", 1)]);
    let worker = worker_with(&scenario, "flood", "", None);
    let idle: Vec<TcpStream> =
        (0..1000).filter_map(|_| TcpStream::connect(&worker.addr).ok()).collect();
    assert_eq!(idle.len(), 1000, "the test could not open its connections");
    std::thread::sleep(Duration::from_millis(300));
    for attempt in 0..3 {
        assert_eq!(
            probe(&worker.addr, "/healthz"),
            Some(200),
            "probe {attempt} with 1,000 idle connections open; log:\n{}",
            worker.log()
        );
        assert!(probe(&worker.addr, "/readyz").is_some(), "readiness probe {attempt}");
    }
    // Past the cap only probes are served; data endpoints are told to come back.
    assert_eq!(probe(&worker.addr, "/metrics"), Some(503));
    drop(idle);
}

#[test]
fn a_low_descriptor_limit_still_answers_the_probes() {
    let scenario = Scenario::new(&[("fds", 1)]);
    let worker = worker_with(&scenario, "fds", "", Some(256));
    let idle: Vec<TcpStream> =
        (0..300).filter_map(|_| TcpStream::connect(&worker.addr).ok()).collect();
    std::thread::sleep(Duration::from_millis(300));
    for attempt in 0..3 {
        assert_eq!(
            probe(&worker.addr, "/healthz"),
            Some(200),
            "probe {attempt} with 300 idle connections and 256 descriptors; log:\n{}",
            worker.log()
        );
    }
    assert!(worker.log().contains("max_connections lowered"), "{}", worker.log());
    drop(idle);
}

#[test]
fn a_stalled_tls_handshake_is_closed_within_its_limit() {
    let dir = TempDir::new("tlsstall");
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed");
    assert!(made.status.success());
    let scenario = Scenario::new(&[("tlsstall", 1)]);
    let addr = format!("127.0.0.1:{}", free_port());
    let config_path = dir.0.join("c.toml");
    let config = WorkerConfig::new("g-tlsstall", "tlsstall")
        .extra(&format!(
            "[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_handshake_timeout = \"2s\"",
            cert.display(),
            key.display()
        ))
        .toml();
    std::fs::write(&config_path, config).expect("write");
    let child = Command::new(binary())
        .args(["run", "--config"])
        .arg(&config_path)
        .args(["--brokers", &scenario.brokers, "--listen", &addr])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let _worker =
        WorkerProcess { child, addr: addr.clone(), stderr_path: dir.0.join("none"), _dir: dir };
    let mut stalled: Vec<TcpStream> = wait_for(Duration::from_secs(20), || {
        TcpStream::connect(&addr).ok().map(|first| {
            let mut all = vec![first];
            all.extend((0..19).filter_map(|_| TcpStream::connect(&addr).ok()));
            all
        })
    })
    .expect("listener up");
    // Half a ClientHello, then nothing.
    for stream in &mut stalled {
        let _ = stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]);
    }
    let started = Instant::now();
    let all_closed =
        wait_for(Duration::from_secs(5), || stalled.iter_mut().all(closed).then_some(()));
    assert!(all_closed.is_some(), "stalled handshakes open after {:?}", started.elapsed());
}

#[test]
fn a_body_over_the_limit_is_refused() {
    let scenario = Scenario::new(&[("body", 1)]);
    let worker = worker_with(&scenario, "body", "max_body_bytes = 1000", None);
    let mut stream = TcpStream::connect(&worker.addr).expect("connect");
    write!(stream, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).expect("an answer");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// `cxpulse <args>` with the listen address taken: exit code, stderr and how long it took.
fn run_on_taken_port(args: &[&str]) -> (Option<i32>, String, Duration) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    run_briefly(&[args, &["--listen", &addr]].concat())
}

#[test]
fn a_taken_port_stops_run_and_demo_at_once_with_one_line() {
    let scenario = Scenario::new(&[("taken", 1)]);
    let brokers = scenario.brokers.clone();
    for args in [vec!["run", "--brokers", brokers.as_str(), "--topic", "taken"], vec!["demo"]] {
        let (code, stderr, took) = run_on_taken_port(&args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(took < Duration::from_secs(2), "{args:?} took {took:?}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("cxpulse: cannot listen on"), "{stderr}");
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `count` answers from `start` on, one per brand/segment pair `brand{i/100}`/`seg{i%100}`.
fn pair_events(start: usize, count: usize, pairs: usize) -> Vec<(i32, String, Vec<u8>)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    (start..start + count)
        .map(|i| {
            let pair = i % pairs;
            let payload = format!(
                r#"{{"event_id":"m{i}","type":"survey_response","occurred_at":{now},"brand":"brand{}","segment":"seg{}","survey":"nps","score":{}}}"#,
                pair / 100,
                pair % 100,
                i % 11
            );
            ((i % 4) as i32, format!("k{pair}"), payload.into_bytes())
        })
        .collect()
}

#[test]
fn sixty_four_concurrent_scrapes_stay_within_the_memory_bound() {
    const PAIRS: usize = 10_000;
    let scenario = Scenario::new(&[("mem", 4)]);
    let brokers = scenario.brokers.clone();
    let producer = producer(&brokers);
    let first = pair_events(0, PAIRS, PAIRS);
    let refs: Vec<_> = first.iter().map(|(p, k, v)| (*p, k.as_str(), v.clone())).collect();
    produce(&producer, "mem", &refs);
    let worker = worker_with(&scenario, "mem", "", None);
    let counted = wait_for(Duration::from_secs(120), || {
        (committed_total(&brokers, "g-mem", "mem", 4) >= PAIRS as i64).then_some(())
    });
    assert!(counted.is_some(), "10k events not counted; log:\n{}", worker.log());
    let pid = worker.child.id();
    let baseline = rss_kib(pid).expect("worker RSS");

    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    // Counting goes on meanwhile.
    let more = {
        let brokers = brokers.clone();
        std::thread::spawn(move || {
            let producer = crate::fixture::producer(&brokers);
            let events = pair_events(PAIRS, 2_000, PAIRS);
            let refs: Vec<_> = events.iter().map(|(p, k, v)| (*p, k.as_str(), v.clone())).collect();
            produce(&producer, "mem", &refs);
        })
    };
    let scrapers: Vec<_> = (0..64)
        .map(|_| {
            let addr = worker.addr.clone();
            std::thread::spawn(move || -> Option<u64> {
                let mut stream = TcpStream::connect(&addr).ok()?;
                stream.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
                write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .ok()?;
                let (mut buf, mut total) = (vec![0u8; 64 * 1024], 0u64);
                loop {
                    match stream.read(&mut buf).ok()? {
                        0 => return Some(total),
                        n => total += n as u64,
                    }
                }
            })
        })
        .collect();
    let sizes: Vec<Option<u64>> =
        scrapers.into_iter().map(|s| s.join().expect("scraper")).collect();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    more.join().expect("producer");

    let size = sizes[0].expect("first scrape answered");
    assert!(size > 40 << 20, "10k pairs x 4 windows render {size} bytes");
    assert!(sizes.iter().all(|s| s.is_some_and(|s| s.abs_diff(size) < size / 100)), "{sizes:?}");
    let added_mib = peak.saturating_sub(baseline) / 1024;
    assert!(added_mib <= 128, "64 concurrent scrapes added {added_mib} MiB of RSS");
    let kept_counting = wait_for(Duration::from_secs(60), || {
        (committed_total(&brokers, "g-mem", "mem", 4) >= (PAIRS + 2_000) as i64).then_some(())
    });
    assert!(kept_counting.is_some(), "counting stopped during the scrapes");
    eprintln!("64 concurrent scrapes of {} MiB: RSS +{added_mib} MiB", size >> 20);
}

#[test]
fn an_address_that_is_not_local_stops_run_with_one_line() {
    let output = Command::new(binary())
        .args(["run", "--brokers", "127.0.0.1:1", "--listen", "192.0.2.1:80"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("cxpulse: cannot listen on 192.0.2.1:80"), "{stderr}");
}
