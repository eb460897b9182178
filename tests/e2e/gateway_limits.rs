//! The gateway behind the hardened listener, as a hostile client or an unlucky operator would
//! meet it: slow headers are cut off at the header limit, HTTPS works with an encrypted key whose
//! passphrase is never printed and a stalled handshake is cut off, bad `[gateway]` keys are one
//! line, and a taken address (for `gateway`, and for the demo's gateway on the worker's port + 1)
//! stops the process at once with one line. Every wait is bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixture::*;

struct Gateway {
    child: Child,
    addr: String,
    stderr_path: std::path::PathBuf,
    dir: TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

/// `cxpulse gateway` on a free port, with `extra` lines added to `[gateway]`.
fn start_gateway(tag: &str, brokers: &str, extra: &str) -> Gateway {
    start_gateway_with(tag, brokers, extra, &[], false)
}

/// [`start_gateway`] with `env` set, over HTTPS when `tls` (health is then checked by connecting).
fn start_gateway_with(
    tag: &str,
    brokers: &str,
    extra: &str,
    env: &[(&str, &str)],
    tls: bool,
) -> Gateway {
    let dir = TempDir::new(tag);
    let addr = format!("127.0.0.1:{}", free_port());
    let path = dir.0.join("gateway.toml");
    let config = WorkerConfig::bootstrap(brokers, tag)
        .extra(&format!("[gateway]\nlisten = \"{addr}\"\n{extra}"))
        .toml();
    std::fs::write(&path, config).expect("write config");
    let stderr_path = dir.0.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("log file");
    let child = Command::new(binary())
        .args(["gateway", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn cxpulse gateway");
    let gateway = Gateway { child, addr, stderr_path, dir };
    let up = wait_for(Duration::from_secs(20), || match tls {
        false => http_get(&gateway.addr, "/healthz").filter(|(s, _)| *s == 200).map(drop),
        true => TcpStream::connect(&gateway.addr).ok().map(drop),
    });
    assert!(up.is_some(), "gateway never healthy; log:\n{}", gateway.log());
    gateway
}

#[test]
fn a_slowloris_on_the_gateway_is_closed_within_the_header_limit() {
    let scenario = Scenario::new(&[("gw-slow", 1)]);
    let gateway = start_gateway("gw-slow", &scenario.brokers, "header_read_timeout = \"2s\"");
    let request =
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (open, took) = slowloris(&gateway.addr, 30, request);
    assert_eq!(open, 0, "slow clients still open after {took:?}");
    assert!(took >= Duration::from_millis(1500), "closed before the limit: {took:?}");
    assert!(took < Duration::from_millis(4500), "limit 2 s, closed after {took:?}");
    // The gateway still serves real clients.
    assert_eq!(http_get(&gateway.addr, "/healthz").map(|(s, _)| s), Some(200));
}

#[test]
fn an_unknown_gateway_key_and_a_bad_limit_are_refused_in_one_line() {
    let dir = TempDir::new("gw-keys");
    for (extra, expected) in [
        ("header_read_timout = \"2s\"", "header_read_timout"),
        ("keep_alive_timeout = \"0s\"", "[gateway] keep_alive_timeout"),
        ("tls_cert = \"/nonexistent.pem\"", "[gateway] tls_cert and tls_key go together"),
    ] {
        let path = dir.0.join("gateway.toml");
        std::fs::write(&path, format!("[gateway]\n{extra}\n")).expect("write config");
        let output = Command::new(binary())
            .arg("check-config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run check-config");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{extra}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{extra}: {stderr}");
        assert!(stderr.contains(expected), "{extra}: {stderr}");
    }
}

#[test]
fn a_taken_gateway_port_exits_1_at_once_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    // No broker at all: the address is checked before Kafka is touched.
    let (code, stderr, took) =
        run_briefly(&["gateway", "--brokers", "127.0.0.1:1", "--listen", &addr]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("cxpulse: cannot listen on {addr}")), "{stderr}");
}

#[test]
fn a_taken_port_for_the_demo_gateway_stops_the_demo_with_one_line() {
    // A free port whose next one is taken: the demo's gateway listens on the worker's port + 1.
    let (worker_port, _taken) = (0..20)
        .find_map(|_| {
            let taken = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
            let port = taken.local_addr().ok()?.port().checked_sub(1)?;
            std::net::TcpListener::bind(("127.0.0.1", port)).ok().map(drop)?;
            Some((port, taken))
        })
        .expect("a free port below a taken one");
    let listen = format!("127.0.0.1:{worker_port}");
    let (code, stderr, took) = run_briefly(&["demo", "--listen", &listen]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let gateway_addr = format!("127.0.0.1:{}", worker_port + 1);
    assert!(stderr.starts_with("cxpulse: demo gateway"), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {gateway_addr}")), "{stderr}");
}

/// `GET path` over HTTPS, the certificate not checked (it is self-signed): the status line.
fn https_get(addr: &str, path: &str) -> Option<String> {
    let mut connector =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).ok()?;
    connector.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let tcp = TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut tls = connector.build().connect("127.0.0.1", tcp).ok()?;
    write!(tls, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response);
    response.lines().next().map(str::to_string)
}

#[test]
fn the_gateway_serves_https_with_an_encrypted_key_and_cuts_a_stalled_handshake() {
    const PASSPHRASE: &str = "gw-pem-passphrase-7731";
    let dir = TempDir::new("gw-tls");
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-passout", &format!("pass:{PASSPHRASE}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let scenario = Scenario::new(&[("gw-tls", 1)]);
    let extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_handshake_timeout = \"2s\"",
        cert.display(),
        key.display()
    );
    let env = [("CXPULSE_GATEWAY__TLS_KEY_PASSWORD", PASSPHRASE)];
    let gateway = start_gateway_with("gw-tls", &scenario.brokers, &extra, &env, true);
    let status = wait_for(Duration::from_secs(10), || https_get(&gateway.addr, "/healthz"));
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"), "log:\n{}", gateway.log());
    // Half a ClientHello, then nothing: closed at the handshake limit.
    let mut stalled = TcpStream::connect(&gateway.addr).expect("connect");
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).expect("write");
    let started = Instant::now();
    let gone = wait_for(Duration::from_secs(5), || closed(&mut stalled).then_some(()));
    assert!(gone.is_some(), "a stalled handshake still open after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_millis(1500), "closed before the limit");
    // Without the passphrase: one line naming the key to set, never a prompt.
    let (code, stderr, _) =
        run_briefly(&["check-config", &gateway.dir.0.join("gateway.toml").to_string_lossy()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("[gateway] tls_key_password"), "{stderr}");
    assert!(!gateway.log().contains(PASSPHRASE), "the passphrase was logged");
}
