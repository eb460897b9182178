//! The HTTP listener's protection: a bearer token on the data endpoints, TLS, and unsafe
//! settings refused at startup. Uses the openssl and curl command-line tools.

use std::process::Command;
use std::time::Duration;

use crate::fixture::*;

fn curl(args: &[&str]) -> (String, String) {
    let output = Command::new("curl")
        .args(["-s", "-k", "--max-time", "10", "-o", "/dev/stderr", "-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl is needed: apt-get install -y curl");
    (
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn token_and_tls_protect_the_data_endpoints() {
    let dir = TempDir::new("tls");
    let (cert, key) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed: apt-get install -y openssl");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    let scenario = Scenario::new(&[("sec", 1)]);
    let http = format!(
        r#"
[http]
bearer_token = "s3cr3t-token"
tls_cert = "{}"
tls_key = "{}"
"#,
        cert.display(),
        key.display()
    );
    let worker = scenario.start("sec", &WorkerConfig::plain("g-sec", "sec").extra(&http));
    let url = |path: &str| format!("https://{}{path}", worker.addr);
    wait_for(Duration::from_secs(30), || (curl(&[&url("/healthz")]).0 == "200").then_some(()))
        .unwrap_or_else(|| panic!("no HTTPS health; log:\n{}", worker.log()));

    assert_eq!(curl(&[&url("/metrics")]).0, "401", "no token");
    assert_eq!(
        curl(&["-H", "Authorization: Bearer wrong-token!", &url("/metrics")]).0,
        "401",
        "wrong token"
    );
    let (code, body) = curl(&["-H", "Authorization: Bearer s3cr3t-token", &url("/metrics")]);
    assert_eq!(code, "200");
    assert!(body.contains("cxpulse_build_info"), "{body}");
    // The scheme in any case (RFC 7235); a token only differing in case is still wrong.
    for header in ["Authorization: bearer s3cr3t-token", "Authorization: BEARER  s3cr3t-token"] {
        assert_eq!(curl(&["-H", header, &url("/metrics")]).0, "200", "{header}");
    }
    assert_eq!(curl(&["-H", "Authorization: Bearer S3CR3T-TOKEN", &url("/metrics")]).0, "401");
    // gzip when asked, as Prometheus asks (curl unpacks it).
    let auth = "Authorization: Bearer s3cr3t-token";
    let (code, body) = curl(&["--compressed", "-H", auth, &url("/metrics")]);
    assert_eq!(code, "200");
    assert!(body.contains("cxpulse_build_info"), "{body}");
    assert_eq!(curl(&[&url("/api/v1/scores")]).0, "401");
    assert_eq!(
        curl(&["-H", "Authorization: Bearer s3cr3t-token", &url("/api/v1/scores")]).0,
        "200"
    );
    // Plain HTTP on the TLS port gets no answer.
    assert_ne!(http_get(&worker.addr, "/healthz").map(|(s, _)| s), Some(200));
    assert!(!worker.log().contains("s3cr3t-token"), "the token never reaches the log");
}

#[test]
fn unsafe_http_settings_stop_startup_with_one_line() {
    let dir = TempDir::new("unsafe");
    for (text, needle) in [
        ("[http]\nbearer_token = \"\"\n", "bearer token is empty"),
        ("[http]\nbearer_token = \"   \"\n", "bearer token is empty"),
        ("[http]\ntls_cert = \"/etc/hostname\"\n", "go together"),
        (
            "[http]\ntls_cert = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.key\"\n",
            "/nonexistent.pem",
        ),
    ] {
        let path = dir.0.join("c.toml");
        std::fs::write(&path, text).expect("write");
        let output =
            Command::new(binary()).args(["run", "--config"]).arg(&path).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}
