//! The page at `/` in a real browser: `cxpulse demo` on a free port, Debian's `chromium` headless.
//! Every brand/segment is shown, globex is marked below its threshold once the demo's dip comes,
//! each trend has one entry per step, the refresh script swaps in fresh figures, and the console
//! stays silent. Screenshots (wide and phone width) are kept under `target/tmp/page_browser/`.
//! Behind a bearer token, the browser gets in with Basic credentials and keeps refreshing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fixture::*;
use serde_json::Value;

/// How long the demo may take to bring globex below its threshold (it takes about 60-90 s).
const DIP_LIMIT: Duration = Duration::from_secs(150);
/// Virtual time the browser runs the page for: two refreshes at 10 s each.
const VIRTUAL_TIME_MS: u32 = 25_000;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .expect("Debian's chromium is needed: apt-get install -y chromium (.ci/run does)")
}

/// What one headless run gave: stdout (the DOM with `--dump-dom`) and the console lines.
struct BrowserRun {
    stdout: String,
    console: Vec<String>,
}

/// Runs headless chromium on `url` with a fresh profile; `extra` adds the action
/// (`--dump-dom`, `--screenshot=...`) and the window size. Killed after a minute.
fn browse(url: &str, extra: &[String]) -> BrowserRun {
    let profile = TempDir::new("chromium-profile");
    let out_dir = TempDir::new("chromium-out");
    let (stdout_path, stderr_path) = (out_dir.0.join("stdout"), out_dir.0.join("stderr"));
    let mut child = Process(
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--enable-logging=stderr",
                "--v=0",
                &format!("--virtual-time-budget={VIRTUAL_TIME_MS}"),
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("start chromium"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => panic!("chromium did not finish within a minute on {url}"),
        }
    }
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    BrowserRun {
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        // Every console message (log, warning, error, uncaught exception) is logged as CONSOLE.
        console: stderr.lines().filter(|l| l.contains(":CONSOLE")).map(str::to_string).collect(),
    }
}

/// The value of `name="..."` in an element's serialized start tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    tag[start..].split('"').next()
}

/// One table row of a dumped DOM: its series, its marks and its trend.
struct PageRow {
    brand: String,
    segment: String,
    below: bool,
    class_below: bool,
    steps: Option<usize>,
    range: Option<(f64, f64)>,
    nps: Vec<Option<i64>>,
    vertices: Vec<(f64, f64)>,
}

fn rows_of(dom: &str) -> Vec<PageRow> {
    dom.split("<tr id=\"r")
        .skip(1)
        .map(|row| {
            let row = row.split("</tr>").next().unwrap_or_default();
            let tag = row.split('>').next().unwrap_or_default();
            let trend = row.split("<svg class=\"tr\"").nth(1).unwrap_or_default();
            let trend_tag = trend.split('>').next().unwrap_or_default();
            let path = trend.split("class=\"l\" d=\"").nth(1).and_then(|p| p.split('"').next());
            PageRow {
                brand: attr(tag, "data-brand").unwrap_or_default().to_string(),
                segment: attr(tag, "data-segment").unwrap_or_default().to_string(),
                below: attr(tag, "data-below") == Some("1"),
                class_below: attr(tag, "class").is_some_and(|c| c.split(' ').any(|c| c == "below")),
                steps: attr(trend_tag, "data-steps").and_then(|s| s.parse().ok()),
                range: attr(trend_tag, "data-range")
                    .and_then(|r| r.split_once(','))
                    .and_then(|(low, high)| Some((low.parse().ok()?, high.parse().ok()?))),
                nps: attr(trend_tag, "data-nps")
                    .map(|list| list.split(',').map(|v| v.parse().ok()).collect())
                    .unwrap_or_default(),
                vertices: path.map(vertices).unwrap_or_default(),
            }
        })
        .collect()
}

/// The points of an SVG path written as `Mx y` (absolute) then `l dx dy dx dy ...` (relative),
/// with `h0` after lone points.
fn vertices(path: &str) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    let mut current = (0.0, 0.0);
    let mut rest = path;
    while let Some(letter) = rest.chars().next() {
        let end = rest[1..].find(|c: char| c.is_ascii_alphabetic()).map_or(rest.len(), |e| e + 1);
        let numbers: Vec<f64> =
            rest[1..end].split_whitespace().filter_map(|n| n.parse().ok()).collect();
        match letter {
            'M' if numbers.len() == 2 => {
                current = (numbers[0], numbers[1]);
                points.push(current);
            }
            'l' => {
                for pair in numbers.chunks_exact(2) {
                    current = (current.0 + pair[0], current.1 + pair[1]);
                    points.push(current);
                }
            }
            'h' => {}
            _ => panic!("unexpected path command in {path:?}"),
        }
        rest = &rest[end..];
    }
    points
}

fn scores(addr: &str) -> Option<Value> {
    let (status, body) = http_get(addr, "/api/v1/scores?window=1h")?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// `(brand, segment)` pairs the API marks below the threshold in the 1h window.
fn below_in_api(document: &Value) -> BTreeSet<(String, String)> {
    document["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["windows"]["1h"]["nps_below_threshold"] == true)
        .map(|s| {
            (s["brand"].as_str().unwrap_or("").into(), s["segment"].as_str().unwrap_or("").into())
        })
        .collect()
}

fn png_size(path: &Path) -> Option<(u32, u32)> {
    let bytes = std::fs::read(path).ok()?;
    let field = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    (bytes.get(1..4) == Some(b"PNG")).then_some(())?;
    Some((field(16)?, field(20)?))
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page_browser");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

#[test]
fn the_console_capture_sees_errors() {
    // The check below is only worth something if a console error would reach it.
    let run = browse(
        "data:text/html,<script>setTimeout(function(){undefinedFunction()},12000)</script>",
        &["--dump-dom".into()],
    );
    assert!(
        run.console.iter().any(|l| l.contains("undefinedFunction")),
        "console capture missed an uncaught error: {:?}",
        run.console
    );
}

#[test]
fn the_demo_page_in_chromium() {
    let addr = format!("127.0.0.1:{}", free_port_pair());
    let log_dir = TempDir::new("page-demo");
    let log = log_dir.0.join("stderr.log");
    let _demo = Process(
        Command::new(binary())
            .args(["demo", "--listen", &addr, "--duration", "600"])
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start cxpulse demo"),
    );
    let demo_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Bounded wait for the story: globex below its threshold in the last hour.
    let started = Instant::now();
    let dipped = wait_for(DIP_LIMIT, || {
        let document = scores(&addr)?;
        let below = below_in_api(&document);
        below.iter().any(|(brand, _)| brand == "globex").then_some(document)
    });
    let Some(document) = dipped else {
        panic!("globex never went below its threshold within {DIP_LIMIT:?}:\n{}", demo_log());
    };
    eprintln!(
        "globex below its threshold {:.0} s after the demo started",
        started.elapsed().as_secs_f64()
    );
    let all_pairs: BTreeSet<(String, String)> = document["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (s["brand"].as_str().unwrap_or("").into(), s["segment"].as_str().unwrap_or("").into())
        })
        .collect();
    for brand in cxpulse_core::synth::BRANDS {
        assert!(all_pairs.iter().any(|(b, _)| b == brand), "{brand} missing from the API");
    }

    let (status, html) = http_get(&addr, "/").expect("page");
    assert_eq!(status, 200);
    eprintln!("page: {} bytes for {} pairs", html.len(), all_pairs.len());
    assert!(!html.contains("src=") && !html.contains("href=\"http"), "the page loads nothing");

    let url = format!("http://{addr}/?window=1h");
    // The API's verdict just before and just after the browser's load must agree, so that the
    // page is compared with a settled state (bounded retries while the dip settles).
    let mut attempt = 0;
    let (run, expected_below) = loop {
        attempt += 1;
        let before = below_in_api(&scores(&addr).expect("scores"));
        let run = browse(&url, &["--dump-dom".into(), "--window-size=1400,1000".into()]);
        let after = below_in_api(&scores(&addr).expect("scores"));
        if before == after || attempt == 5 {
            break (run, after);
        }
    };
    assert!(run.console.is_empty(), "console messages: {:#?}", run.console);
    let dom = &run.stdout;
    assert!(dom.contains("<div id=\"live\""), "no page in the DOM:\n{dom}");
    let refreshes = dom
        .split("data-refreshes=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(refreshes >= Some(1), "the refresh script never swapped in a new render");
    assert!(!dom.contains("<body class=\"stale\""), "a refresh failed");
    // The health strip shows the state's size and the horizons kept (the demo's defaults: a
    // day of ids and of answers, no budget binding).
    assert!(
        dom.contains("<span>state</span>") && dom.contains("ids kept 1d · answers 1d"),
        "no state in the health strip:\n{dom}"
    );

    let rows = rows_of(dom);
    let shown: BTreeSet<(String, String)> =
        rows.iter().map(|r| (r.brand.clone(), r.segment.clone())).collect();
    assert_eq!(shown, all_pairs, "every brand/segment has a row");
    for brand in cxpulse_core::synth::BRANDS {
        assert!(shown.iter().any(|(b, _)| b == brand), "{brand} missing from the page");
    }
    let marked: BTreeSet<(String, String)> =
        rows.iter().filter(|r| r.below).map(|r| (r.brand.clone(), r.segment.clone())).collect();
    assert_eq!(marked, expected_below, "the page marks what the API says is below");
    assert!(marked.iter().any(|(b, _)| b == "globex"), "globex is not marked: {marked:?}");
    assert!(marked.iter().all(|(b, _)| b == "globex"), "only globex dips: {marked:?}");
    for row in &rows {
        assert_eq!(
            row.class_below, row.below,
            "{}/{} highlighted as marked",
            row.brand, row.segment
        );
    }
    let attention = dom.split("id=\"attn\"").nth(1).and_then(|a| a.split("</p>").next());
    assert!(attention.is_some_and(|a| a.contains("globex/")), "globex not in the attention line");

    // Trends: one entry per step of the 1h window (60 one-minute steps), and one path point for
    // each step with answers, at that step's position, oldest first.
    let api_steps = document["series"][0]["windows"]["1h"]["steps"].as_array().map(Vec::len);
    assert_eq!(api_steps, Some(60));
    for row in &rows {
        let name = format!("{}/{}", row.brand, row.segment);
        assert_eq!(row.steps, Some(60), "{name}: data-steps");
        assert_eq!(row.nps.len(), 60, "{name}: one entry per step");
        let answered: Vec<usize> = (0..60).filter(|&i| row.nps[i].is_some()).collect();
        assert!(!answered.is_empty(), "{name}: an empty trend");
        assert_eq!(row.vertices.len(), answered.len(), "{name}: a point per answered step");
        for ((x, _), i) in row.vertices.iter().zip(&answered) {
            let expected = (*i as f64 + 0.5) * 2.0;
            assert!((x - expected).abs() < 0.01, "{name}: step {i} at x {x}, not {expected}");
        }
        let (low, high) = row.range.unwrap_or_else(|| panic!("{name}: no data-range"));
        assert!(high - low >= 40.0 && low >= -100.0 && high <= 100.0, "{name}: {low}..{high}");
        for ((_, y), i) in row.vertices.iter().zip(&answered) {
            let nps = row.nps[*i].unwrap_or_default() as f64;
            assert!((low..=high).contains(&nps), "{name}: step {i} outside the scale");
            let expected = 1.0 + (high - nps) * 34.0 / (high - low);
            assert!((y - expected).abs() <= 1.5, "{name}: step {i} at y {y}, not {expected}");
        }
    }

    // Screenshots to look at: wide and phone width.
    let dir = shots_dir();
    for (name, size) in [("wide", (1400, 1000)), ("phone", (390, 1600))] {
        let path = dir.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&path);
        let run = browse(
            &url,
            &[
                format!("--screenshot={}", path.display()),
                format!("--window-size={},{}", size.0, size.1),
            ],
        );
        assert!(run.console.is_empty(), "console messages at {name} width: {:#?}", run.console);
        assert_eq!(png_size(&path), Some(size), "{name} screenshot at {}", path.display());
        eprintln!("screenshot: {}", path.display());
    }
}

#[test]
fn behind_the_token_the_browser_logs_in_and_refreshes() {
    let scenario = Scenario::new(&[("paged", 1)]);
    let config =
        WorkerConfig::new("g-paged", "paged").extra("[http]\nbearer_token = \"br0wser-t0ken\"");
    let worker = scenario.start("paged", &config);
    let up = wait_for(Duration::from_secs(30), || {
        http_get(&worker.addr, "/healthz").filter(|(status, _)| *status == 200)
    });
    assert!(up.is_some(), "worker never came up:\n{}", worker.log());

    let refused = browse(&format!("http://{}/", worker.addr), &["--dump-dom".into()]);
    assert!(!refused.stdout.contains("id=\"live\""), "the page showed without credentials");

    let run = browse(&format!("http://ops:br0wser-t0ken@{}/", worker.addr), &["--dump-dom".into()]);
    assert!(run.stdout.contains("<div id=\"live\""), "no page with credentials:\n{}", run.stdout);
    assert!(run.stdout.contains("data-refreshes=\""), "refreshes fail behind the token");
    assert!(!run.stdout.contains("<body class=\"stale\""), "a refresh failed behind the token");
    assert!(run.console.is_empty(), "console messages: {:#?}", run.console);
}
