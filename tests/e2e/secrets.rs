//! No secret in any output: each case plants secrets where an error message could quote them
//! (TOML syntax, a wrongly typed value, librdkafka's refusal, an environment override, an
//! encrypted key) and greps everything the binary printed, stdout and stderr, for every one.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fixture::*;

/// Runs `cxpulse` (stdin closed) and returns its exit code and everything it printed; a process
/// still running after `limit` (one asking for a passphrase, say) is killed and reported as None.
fn cxpulse(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (Option<i32>, String) {
    let dir = TempDir::new("secrets-out");
    let (out_path, err_path) = (dir.0.join("out"), dir.0.join("err"));
    let mut child = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("out"))
        .stderr(std::fs::File::create(&err_path).expect("err"))
        .spawn()
        .expect("spawn cxpulse");
    let status = wait_for(limit, || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
    }
    let _ = child.wait();
    let mut printed = String::new();
    for path in [&out_path, &err_path] {
        let _ = std::fs::File::open(path).map(|mut f| f.read_to_string(&mut printed));
    }
    (status.and_then(|s| s.code()), printed)
}

fn assert_no_secret(case: &str, printed: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!printed.contains(secret), "{case}: `{secret}` printed:\n{printed}");
    }
}

/// A one-line `cxpulse:` error with exit code 1 containing `needle`.
fn assert_one_line_error(case: &str, code: Option<i32>, printed: &str, needle: &str) {
    assert_eq!(code, Some(1), "{case}:\n{printed}");
    assert_eq!(printed.trim_end().lines().count(), 1, "{case}:\n{printed}");
    assert!(printed.starts_with("cxpulse: ") && printed.contains(needle), "{case}:\n{printed}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// An RSA key encrypted with `passphrase`, and a certificate for it.
fn encrypted_key(dir: &Path, passphrase: &str) -> (String, String) {
    let (key, cert) = (dir.join("enc.key"), dir.join("enc.crt"));
    let pass = format!("pass:{passphrase}");
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-aes256"])
        .args(["-pass", &pass, "-out"])
        .arg(&key)
        .output()
        .expect("openssl is needed");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-days", "1", "-subj", "/CN=127.0.0.1", "-passin", &pass, "-key"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    (cert.display().to_string(), key.display().to_string())
}

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn configuration_errors_quote_no_secret() {
    let dir = TempDir::new("secrets-config");
    let cases: [(&str, &str, &str); 5] = [
        (
            "TOML syntax error on a secret's line",
            "[kafka]\n\"sasl.password\" = \"TOPSECRET-aa11\" trailing\n",
            "line 2",
        ),
        ("unterminated secret string", "[kafka]\n\"sasl.password\" = \"TOPSECRET-aa11\n", "line 2"),
        ("a secret where a number goes", "[limits]\nmax_series = \"TOPSECRET-aa11\"\n", "max_series"),
        ("a token written as a number", "[http]\nbearer_token = 987654321\n", "bearer_token"),
        (
            "librdkafka refuses a secret setting",
            "[kafka]\n\"sasl.oauthbearer.client.secret\" = \"OAUTHSEC-55aa\"\n\"sasl.mechanisms\" = \"OAUTHBEARER\"\n\"sasl.oauthbearer.method\" = \"oidc\"\n",
            "sasl.oauthbearer",
        ),
    ];
    for (case, text, needle) in cases {
        let path = write(&dir.0, "c.toml", text);
        for args in [vec!["check-config", path.as_str()], vec!["run", "--config", path.as_str()]] {
            let (code, printed) = cxpulse(&args, &[], WAIT);
            assert_one_line_error(case, code, &printed, needle);
            assert_no_secret(case, &printed, &["TOPSECRET-aa11", "987654321", "OAUTHSEC-55aa"]);
        }
    }
}

#[test]
fn environment_override_errors_quote_no_secret() {
    let env_cases = [
        ("CXPULSE_LIMITS__MAX_SERIES", "ENVSECRET-1", "max_series"),
        ("CXPULSE_WINDOWS__SIZES", "ENVSECRET-2x", "sizes"),
        ("CXPULSE_KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET", "ENVSECRET-3", "sasl.oauthbearer"),
    ];
    for (name, value, needle) in env_cases {
        for args in [vec!["check-config", "/dev/null"], vec!["run"]] {
            let (code, printed) = cxpulse(&args, &[(name, value)], WAIT);
            assert_one_line_error(name, code, &printed, needle);
            assert_no_secret(name, &printed, &[value]);
        }
    }
    // A token that looks like a number, a boolean or a list is taken as it is, and redacted.
    for token in ["987654321", "true", "1e3", "a,b"] {
        let (code, printed) =
            cxpulse(&["check-config", "/dev/null"], &[("CXPULSE_HTTP__BEARER_TOKEN", token)], WAIT);
        assert_eq!(code, Some(0), "{token}: {printed}");
        assert!(printed.contains("bearer_token = \"<redacted>\""), "{printed}");
    }
}

#[test]
fn an_encrypted_http_key_takes_its_passphrase_or_fails_in_one_line() {
    let dir = TempDir::new("secrets-httpkey");
    let passphrase = "PASSPHRASE-http-42";
    let (cert, key) = encrypted_key(&dir.0, passphrase);
    let config = format!("[http]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n");
    let path = write(&dir.0, "c.toml", &config);
    let (code, printed) = cxpulse(&["run", "--config", &path], &[], WAIT);
    assert_one_line_error("no passphrase", code, &printed, "tls_key_password");
    let wrong = [("CXPULSE_HTTP__TLS_KEY_PASSWORD", "WRONG-PASS-9")];
    let (code, printed) = cxpulse(&["run", "--config", &path], &wrong, WAIT);
    assert_one_line_error("wrong passphrase", code, &printed, "cannot decrypt");
    assert_no_secret("wrong passphrase", &printed, &["WRONG-PASS-9", passphrase]);

    // With the passphrase from the environment it serves HTTPS, and says nothing of it.
    let scenario = Scenario::new(&[("sec-key", 1)]);
    let addr = format!("127.0.0.1:{}", free_port());
    let log_path = dir.0.join("worker.log");
    let mut worker = Command::new(binary())
        .args(["run", "--config", &path, "--topic", "sec-key", "--listen", &addr])
        .args(["--brokers", &scenario.brokers])
        .env("CXPULSE_HTTP__TLS_KEY_PASSWORD", passphrase)
        .env("CXPULSE_HTTP__BEARER_TOKEN", "BEARER-SECRET-77")
        .env("CXPULSE_KAFKA__SASL_PASSWORD", "SASL-SECRET-88")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log_path).expect("log"))
        .stderr(std::fs::File::create(dir.0.join("worker.err")).expect("log"))
        .spawn()
        .expect("spawn");
    let served = wait_for(Duration::from_secs(20), || {
        let output = Command::new("curl")
            .args(["-sk", "--max-time", "2", "-H", "Authorization: bearer BEARER-SECRET-77"])
            .arg(format!("https://{addr}/metrics"))
            .output()
            .ok()?;
        String::from_utf8_lossy(&output.stdout).contains("cxpulse_build_info").then_some(())
    });
    let _ = Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
    let _ = wait_for(Duration::from_secs(15), || worker.try_wait().ok().flatten());
    let _ = worker.kill();
    let _ = worker.wait();
    let mut printed = std::fs::read_to_string(&log_path).unwrap_or_default();
    printed += &std::fs::read_to_string(dir.0.join("worker.err")).unwrap_or_default();
    assert!(served.is_some(), "no HTTPS with the passphrase:\n{printed}");
    assert_no_secret(
        "running worker",
        &printed,
        &[passphrase, "BEARER-SECRET-77", "SASL-SECRET-88"],
    );
}

#[test]
fn an_encrypted_kafka_key_takes_its_password_or_fails_in_one_line() {
    let dir = TempDir::new("secrets-kafkakey");
    let passphrase = "PASSPHRASE-kafka-43";
    let (_, key) = encrypted_key(&dir.0, passphrase);
    let config =
        format!("[kafka]\n\"security.protocol\" = \"ssl\"\n\"ssl.key.location\" = \"{key}\"\n");
    let path = write(&dir.0, "c.toml", &config);
    for args in [vec!["check-config", path.as_str()], vec!["run", "--config", path.as_str()]] {
        let (code, printed) = cxpulse(&args, &[], WAIT);
        assert_one_line_error("no ssl.key.password", code, &printed, "ssl.key.password");
        let wrong = [("CXPULSE_KAFKA__SSL_KEY_PASSWORD", "WRONG-KAFKA-PASS")];
        let (code, printed) = cxpulse(&args, &wrong, WAIT);
        assert_one_line_error("wrong ssl.key.password", code, &printed, "cannot decrypt");
        assert_no_secret("wrong ssl.key.password", &printed, &["WRONG-KAFKA-PASS", passphrase]);
    }
    let right = [("CXPULSE_KAFKA__SSL_KEY_PASSWORD", passphrase)];
    let (code, printed) = cxpulse(&["check-config", &path], &right, WAIT);
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains("\"ssl.key.password\" = \"<redacted>\""), "{printed}");
    assert_no_secret("check-config", &printed, &[passphrase]);
}

/// A distinct secret in every secret field of the configuration (`PLANT-…`), with the addresses
/// to fill in.
const PLANTED_TOML: &str = include_str!("../fixtures/planted-secrets.toml");

/// The planted secrets themselves.
fn planted() -> Vec<&'static str> {
    PLANTED_TOML.split('"').filter(|part| part.starts_with("PLANT-")).collect()
}

fn planted_config(brokers: &str, topic: &str, http: &str, gateway: &str) -> String {
    PLANTED_TOML
        .replace("BROKERS", brokers)
        .replace("\"TOPIC\"", &format!("\"{topic}\""))
        .replace("HTTP_LISTEN", http)
        .replace("GATEWAY_LISTEN", gateway)
}

/// `curl` with the given arguments: the status line, headers and body it received.
fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-s", "-i", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl is needed");
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Starts `cxpulse <command> --config <path>` at debug level, logging to files in `dir`.
fn spawn_logged(dir: &Path, command: &str, config: &str) -> std::process::Child {
    Command::new(binary())
        .args(["--log-level", "debug", command, "--config", config])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{command}.out"))).expect("log"))
        .stderr(std::fs::File::create(dir.join(format!("{command}.err"))).expect("log"))
        .spawn()
        .expect("spawn cxpulse")
}

fn stop(child: &mut std::process::Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = wait_for(Duration::from_secs(15), || child.try_wait().ok().flatten());
    let _ = child.kill();
    let _ = child.wait();
}

/// Plants a distinct secret in every secret field and scans everything the program says:
/// check-config, the worker's and the gateway's logs at debug level, startup and configuration
/// errors, the gateway's error replies, `/metrics` and `/api/v1/scores`. Any field that lost
/// its `Secret` type shows in check-config at least.
#[test]
fn every_secret_stays_unsaid() {
    let dir = TempDir::new("secrets-planted");
    let scenario = Scenario::new(&[("planted", 2)]);
    let (http, gateway) =
        (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let path =
        write(&dir.0, "c.toml", &planted_config(&scenario.brokers, "planted", &http, &gateway));
    let mut said = Vec::new();

    let (code, printed) = cxpulse(&["check-config", &path], &[], WAIT);
    assert_eq!(code, Some(0), "{printed}");
    let planted = planted();
    assert_eq!(planted.len(), 9, "{planted:?}");
    assert_eq!(printed.matches("<redacted>").count(), planted.len(), "{printed}");
    said.push(("check-config".to_string(), printed));

    let mut worker = spawn_logged(&dir.0, "run", &path);
    let mut front = spawn_logged(&dir.0, "gateway", &path);
    let token = "Authorization: Bearer PLANT-http-token";
    let metrics = wait_for(Duration::from_secs(30), || {
        let reply = curl(&["-H", token, &format!("http://{http}/metrics")]);
        reply.contains("cxpulse_build_info").then_some(reply)
    });
    said.push(("/metrics".into(), metrics.unwrap_or_default()));
    said.push((
        "/api/v1/scores".into(),
        curl(&["-H", token, &format!("http://{http}/api/v1/scores")]),
    ));
    said.push((
        "a wrong token".into(),
        curl(&["-H", "Authorization: Bearer x", &format!("http://{http}/metrics")]),
    ));
    let up = wait_for(Duration::from_secs(30), || {
        curl(&[&format!("http://{gateway}/healthz")]).contains("200 OK").then_some(())
    });
    assert!(up.is_some(), "the gateway never answered /healthz");
    let events_token = "Authorization: Bearer PLANT-gateway-token";
    for (what, header, body, path) in [
        ("/v1/events, no token", "X-None: 1", "{}", "/v1/events"),
        ("/v1/events, malformed", events_token, "{not json", "/v1/events"),
        ("webhook, wrong token", "X-None: 1", "{}", "/v1/webhooks/d?token=x"),
        ("webhook, malformed", "X-None: 1", "[", "/v1/webhooks/d?token=PLANT-source-token"),
        ("webhook, bad signature", "Typeform-Signature: sha256=x", "{}", "/v1/webhooks/t"),
        ("unknown webhook", "X-None: 1", "{}", "/v1/webhooks/nope"),
    ] {
        let url = format!("http://{gateway}{path}");
        let reply = curl(&["-H", header, "-H", "Content-Type: application/json", "-d", body, &url]);
        assert!(reply.starts_with("HTTP/1.1 "), "{what}: {reply}");
        said.push((what.into(), reply));
    }
    // Startup errors: the addresses are taken now.
    for command in ["run", "gateway"] {
        let (code, printed) = cxpulse(&[command, "--config", &path], &[], WAIT);
        assert_eq!(code, Some(1), "{command} on a taken address:\n{printed}");
        said.push((format!("{command} on a taken address"), printed));
    }
    let broken = format!(
        "{}\n[limits]\nmax_series = 0\n",
        std::fs::read_to_string(&path).unwrap_or_default()
    );
    let broken = write(&dir.0, "broken.toml", &broken);
    for command in ["run", "gateway", "check-config"] {
        let args = if command == "check-config" {
            vec![command, &broken]
        } else {
            vec![command, "--config", &broken]
        };
        let (code, printed) = cxpulse(&args, &[], WAIT);
        assert_eq!(code, Some(1), "{command} with a bad setting:\n{printed}");
        said.push((format!("{command} with a bad setting"), printed));
    }
    stop(&mut worker);
    stop(&mut front);
    for command in ["run", "gateway"] {
        let read = |end: &str| {
            std::fs::read_to_string(dir.0.join(format!("{command}.{end}"))).unwrap_or_default()
        };
        said.push((format!("{command}'s output and log"), read("out") + &read("err")));
    }
    let logged: String = said.iter().map(|(what, text)| format!("--- {what}\n{text}\n")).collect();
    assert!(said.iter().any(|(_, text)| text.contains("DEBUG")), "no debug lines:\n{logged}");
    for (what, text) in &said {
        assert!(!text.is_empty(), "{what}: nothing said");
        assert_no_secret(what, text, &planted);
    }
}
