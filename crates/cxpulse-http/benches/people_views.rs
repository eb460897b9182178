//! Sizes and build times of `/api/v1/scores` and the page at many brand/segment pairs (figures for
//! docs/api.md; no thresholds). `cargo bench -p cxpulse-http --bench people_views -- [PAIRS]`
//! (default 10,000).

use std::time::Instant;

use cxpulse_core::alerts::AlertPolicy;
use cxpulse_core::{ClockMode, Engine, EngineConfig, SourcePartition};
use cxpulse_http::page::{render_page, HealthFigures, PageView};
use cxpulse_http::scores::{document, ScoresQuery};

const NOW: i64 = 1_795_428_000_000;

fn main() {
    // `cargo bench` adds `--bench`; the first number is the pair count.
    let pairs: usize = std::env::args().skip(1).find_map(|n| n.parse().ok()).unwrap_or(10_000);
    let config = EngineConfig { clock: ClockMode::Event, ..EngineConfig::default() };
    let Ok(mut engine) = Engine::new(config) else { return eprintln!("engine config refused") };
    for pair in 0..pairs {
        for (k, minutes_ago) in [0i64, 5, 30].into_iter().enumerate() {
            let at = NOW - minutes_ago * 60_000;
            let event = format!(
                r#"{{"event_id":"e{pair}-{k}","type":"survey_response","occurred_at":{at},"brand":"brand{}","segment":"seg{}","survey":"nps","score":{}}}"#,
                pair / 10,
                pair % 10,
                [9, 7, 3][k]
            );
            let partition = SourcePartition { topic: 0, partition: (pair % 12) as i32 };
            engine.process(partition, event.as_bytes(), NOW);
        }
    }
    let policy = AlertPolicy::default();
    println!("{pairs} pairs, 4 windows; three rounds each");
    for _ in 0..3 {
        let started = Instant::now();
        let snapshot = engine.snapshot_with_steps(NOW);
        let snapshot_time = started.elapsed();
        let query = ScoresQuery { window: None, steps: true };
        let full = document(&snapshot, &policy, &query).map(|d| serde_json::to_vec(&d));
        let full_time = started.elapsed() - snapshot_time;
        let view = PageView {
            policy: &policy,
            window: 0,
            now_ms: NOW,
            version: "bench",
            health: HealthFigures::default(),
        };
        let page_started = Instant::now();
        let page = render_page(&snapshot, &view);
        let page_time = page_started.elapsed();
        let started = Instant::now();
        let lean = engine.snapshot(NOW);
        let query = ScoresQuery { window: None, steps: false };
        let without_steps = document(&lean, &policy, &query).map(|d| serde_json::to_vec(&d));
        let lean_time = started.elapsed();
        let size = |d: &Result<Result<Vec<u8>, serde_json::Error>, String>| {
            d.as_ref().ok().and_then(|r| r.as_ref().ok()).map_or(0, Vec::len)
        };
        println!(
            "snapshot with steps {snapshot_time:.0?}; scores document {:.1} MB in {full_time:.0?}; \
             steps=false {:.1} MB in {lean_time:.0?} (snapshot included); page {} KB in {page_time:.0?}",
            size(&full) as f64 / 1e6,
            size(&without_steps) as f64 / 1e6,
            page.len() / 1024
        );
    }
}
