//! Measures the NPS-drop detector (`cxpulse_core::drop_evidence`) against today's Prometheus alert
//! `CxpulseNpsDroppedSignificantly` and against an oracle CUSUM, on simulated answers with an event
//! clock (no wall clock) and a fixed seed. Prints markdown tables (docs/alerting.md keeps them).
//!
//! ```sh
//! cargo run --release -p cxpulse-core --example drop_simulation            # the full run
//! cargo run --release -p cxpulse-core --example drop_simulation -- --quick # a tenth of the series
//! cargo run --release -p cxpulse-core --example drop_simulation -- --seed 7
//! cargo run --release -p cxpulse-core --example drop_simulation -- --stable-only --stable-factor 4
//! ```
//!
//! Traffic: Poisson arrivals at a constant rate; each series has its own mix around 50 %
//! promoters, 30 % passives, 20 % detractors (NPS 30): promoters 45–55 %, detractors 17–23 %.
//! A drop of Δ points moves Δ/2 % of the answers from promoters to detractors.
//!
//! The Prometheus alert is evaluated every minute on the answers of the last hour and the last 24
//! hours, as recording.yml and alerts.yml compute it: NPS = 100·(P−D)/n,
//! moe = 196·sqrt(max((P+D)/n − ((P−D)/n)², 0)/n); it is active when
//! NPS_1h − NPS_24h < −sqrt(moe_1h² + moe_24h²), n_1h ≥ 30 and n_24h ≥ 2·n_1h, and fires once it
//! has been active at every evaluation for 15 minutes.
//!
//! The oracle knows the series' mix before and after the drop and runs the exact
//! log-likelihood-ratio CUSUM from the moment of the drop; its threshold is calibrated by
//! simulation to the same false-alarm budget as the detector's (one per 100 series-months).

use cxpulse_core::drop_evidence::{DropDetector, DropSettings, Step, HOURS_PER_MONTH};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

const RATES: [f64; 3] = [20.0, 100.0, 1_000.0];
const DROPS: [f64; 3] = [10.0, 20.0, 30.0];
const STABLE_DAYS: i64 = 30;
const HISTORY_DAYS: i64 = 14;
const LONG_HISTORY_DAYS: i64 = 28;
const CENSOR_DAYS: i64 = 7;

const DROP_HEADER: &str = "| answers/hour | drop | detector median | p90 | oracle median | p90 | \
    detector / oracle (median) | detector answers (median) | oracle answers (median) | \
    `CxpulseNpsDroppedSignificantly` median | p90 | its misses |";

/// Answer shares (promoter, passive, detractor).
#[derive(Clone, Copy)]
struct Mix {
    p: f64,
    a: f64,
    d: f64,
}

impl Mix {
    fn random(rng: &mut SmallRng) -> Mix {
        let p = 0.5 + rng.gen_range(-0.05..0.05);
        let d = 0.2 + rng.gen_range(-0.03..0.03);
        Mix { p, a: 1.0 - p - d, d }
    }

    fn base() -> Mix {
        Mix { p: 0.5, a: 0.3, d: 0.2 }
    }

    fn dropped(self, points: f64) -> Mix {
        let half = points / 200.0;
        Mix { p: self.p - half, a: self.a, d: self.d + half }
    }

    fn draw(self, rng: &mut SmallRng) -> i8 {
        let u: f64 = rng.gen();
        if u < self.p {
            1
        } else if u < self.p + self.a {
            0
        } else {
            -1
        }
    }
}

/// Poisson arrivals: the next answer's time.
fn next_at(rng: &mut SmallRng, at_ms: i64, per_hour: f64) -> i64 {
    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    at_ms + (-u.ln() / per_hour * HOUR_MS as f64).round() as i64
}

/// `CxpulseNpsDroppedSignificantly` as Prometheus evaluates it every minute.
struct PromAlert {
    /// Counts (promoter, passive, detractor) per minute of the run.
    minutes: Vec<[u32; 3]>,
    next_eval: usize,
    h1: [i64; 3],
    h24: [i64; 3],
    active_since: Option<usize>,
    firing: bool,
}

impl PromAlert {
    fn new(total_minutes: usize) -> Self {
        PromAlert {
            minutes: vec![[0; 3]; total_minutes + 1],
            next_eval: 1,
            h1: [0; 3],
            h24: [0; 3],
            active_since: None,
            firing: false,
        }
    }

    fn count(&mut self, value: i8, at_ms: i64) {
        let i = match value {
            1 => 0,
            0 => 1,
            _ => 2,
        };
        if let Some(m) = self.minutes.get_mut((at_ms / MINUTE_MS) as usize) {
            m[i] += 1;
        }
    }

    /// Evaluates every minute boundary up to `at_ms`; returns the minutes at which it started
    /// firing.
    fn evaluate_until(&mut self, at_ms: i64, fired: &mut Vec<usize>) {
        let last = ((at_ms / MINUTE_MS) as usize).min(self.minutes.len() - 1);
        while self.next_eval <= last {
            let k = self.next_eval;
            // At k·60 s the windows hold minutes k−60..k−1 and k−1440..k−1.
            for c in 0..3 {
                self.h1[c] += i64::from(self.minutes[k - 1][c]);
                self.h24[c] += i64::from(self.minutes[k - 1][c]);
                if k > 60 {
                    self.h1[c] -= i64::from(self.minutes[k - 61][c]);
                }
                if k > 1440 {
                    self.h24[c] -= i64::from(self.minutes[k - 1441][c]);
                }
            }
            if self.active(k) {
                let since = *self.active_since.get_or_insert(k);
                if !self.firing && k - since >= 15 {
                    self.firing = true;
                    fired.push(k);
                }
            } else {
                self.active_since = None;
                self.firing = false;
            }
            self.next_eval += 1;
        }
    }

    fn active(&self, _k: usize) -> bool {
        let score = |c: &[i64; 3]| {
            let n = (c[0] + c[1] + c[2]) as f64;
            let nps = 100.0 * (c[0] - c[2]) as f64 / n;
            let moe =
                196.0 * ((((c[0] + c[2]) as f64 / n) - (nps / 100.0).powi(2)).max(0.0) / n).sqrt();
            (n, nps, moe)
        };
        let (n1, nps1, moe1) = score(&self.h1);
        let (n24, nps24, moe24) = score(&self.h24);
        n1 >= 30.0 && n24 >= 2.0 * n1 && nps1 - nps24 < -(moe1 * moe1 + moe24 * moe24).sqrt()
    }
}

/// The exact log-likelihood-ratio CUSUM of `before` against `after`.
struct Oracle {
    steps: [f64; 3],
    sum: f64,
}

impl Oracle {
    fn new(before: Mix, after: Mix) -> Self {
        Oracle {
            steps: [
                (after.p / before.p).ln(),
                (after.a / before.a).ln(),
                (after.d / before.d).ln(),
            ],
            sum: 0.0,
        }
    }

    fn observe(&mut self, value: i8) -> f64 {
        let i = match value {
            1 => 0,
            0 => 1,
            _ => 2,
        };
        self.sum = (self.sum + self.steps[i]).max(0.0);
        self.sum
    }
}

/// The oracle's threshold for a mean of `arl` answers between false alarms: ln ARL₀ − h is
/// measured at h = 5, 6, 7 on stable answers of the base mix and extrapolated (slope 1).
fn oracle_threshold(rng: &mut SmallRng, drop: f64, arl: f64, alarms: usize) -> f64 {
    let before = Mix::base();
    let after = before.dropped(drop);
    let mut offsets = Vec::new();
    for h in [5.0, 6.0, 7.0] {
        let mut answers = 0u64;
        for _ in 0..alarms {
            let mut o = Oracle::new(before, after);
            loop {
                answers += 1;
                if o.observe(before.draw(rng)) >= h {
                    break;
                }
            }
        }
        offsets.push((answers as f64 / alarms as f64).ln() - h);
    }
    let c = offsets.iter().sum::<f64>() / offsets.len() as f64;
    arl.ln() - c
}

struct StableResult {
    series: usize,
    detector_alarms: usize,
    detector_series: usize,
    prom_alarms: usize,
    prom_series: usize,
}

fn stable(rng: &mut SmallRng, rate: f64, series: usize, settings: &DropSettings) -> StableResult {
    let end = STABLE_DAYS * DAY_MS;
    let mut r = StableResult {
        series,
        detector_alarms: 0,
        detector_series: 0,
        prom_alarms: 0,
        prom_series: 0,
    };
    let mut fired = Vec::new();
    for _ in 0..series {
        let mix = Mix::random(rng);
        let mut det = DropDetector::new();
        let mut prom = PromAlert::new((end / MINUTE_MS) as usize);
        fired.clear();
        let mut alarms = 0;
        let mut at = next_at(rng, 0, rate);
        while at < end {
            prom.evaluate_until(at, &mut fired);
            let v = mix.draw(rng);
            prom.count(v, at);
            if det.observe(v, at, settings) == Step::Alarm {
                alarms += 1;
                if std::env::var_os("DROP_SIM_TRACE").is_some() {
                    eprintln!(
                        "false alarm at {rate}/h: day {:.1}, baseline of {} answers, NPS {:.1} (true {:.1})",
                        at as f64 / DAY_MS as f64,
                        det.baseline_answers(),
                        det.baseline_nps(),
                        100.0 * (mix.p - mix.d)
                    );
                }
            }
            at = next_at(rng, at, rate);
        }
        prom.evaluate_until(end, &mut fired);
        r.detector_alarms += alarms;
        r.detector_series += usize::from(alarms > 0);
        r.prom_alarms += fired.len();
        r.prom_series += usize::from(!fired.is_empty());
    }
    r
}

/// Hours from the drop to detection of (detector, Prometheus alert, oracle); `None` if not
/// within the censoring horizon.
struct Delays {
    detector: Vec<Option<f64>>,
    prom: Vec<Option<f64>>,
    oracle: Vec<Option<f64>>,
    detector_answers: Vec<Option<f64>>,
    oracle_answers: Vec<Option<f64>>,
    early: usize,
}

fn drops(
    rng: &mut SmallRng,
    rate: f64,
    drop: f64,
    series: usize,
    settings: &DropSettings,
    oracle_h: f64,
    history_days: i64,
) -> Delays {
    let drop_at = history_days * DAY_MS;
    let end = drop_at + CENSOR_DAYS * DAY_MS;
    let mut out = Delays {
        detector: Vec::new(),
        prom: Vec::new(),
        oracle: Vec::new(),
        detector_answers: Vec::new(),
        oracle_answers: Vec::new(),
        early: 0,
    };
    let mut fired = Vec::new();
    for _ in 0..series {
        let before = Mix::random(rng);
        let after = before.dropped(drop);
        let mut det = DropDetector::new();
        let mut prom = PromAlert::new((end / MINUTE_MS) as usize);
        let mut oracle = Oracle::new(before, after);
        fired.clear();
        let (mut t_det, mut t_prom, mut t_oracle) = (None, None, None);
        let (mut n_det, mut n_oracle) = (None, None);
        let mut answers_after = 0u64;
        let mut at = next_at(rng, 0, rate);
        while at < end {
            prom.evaluate_until(at, &mut fired);
            if t_prom.is_none() {
                if let Some(&m) = fired.iter().find(|&&m| m as i64 * MINUTE_MS >= drop_at) {
                    t_prom = Some((m as i64 * MINUTE_MS - drop_at) as f64 / HOUR_MS as f64);
                }
            }
            let after_drop = at >= drop_at;
            let v = if after_drop { after.draw(rng) } else { before.draw(rng) };
            prom.count(v, at);
            let step = det.observe(v, at, settings);
            if after_drop {
                answers_after += 1;
                let hours = (at - drop_at) as f64 / HOUR_MS as f64;
                if step == Step::Alarm && t_det.is_none() {
                    t_det = Some(hours);
                    n_det = Some(answers_after as f64);
                }
                if t_oracle.is_none() && oracle.observe(v) >= oracle_h {
                    t_oracle = Some(hours);
                    n_oracle = Some(answers_after as f64);
                }
            } else if step == Step::Alarm {
                out.early += 1;
            }
            if t_det.is_some() && t_oracle.is_some() && t_prom.is_some() {
                break;
            }
            at = next_at(rng, at, rate);
        }
        if t_prom.is_none() {
            prom.evaluate_until(end, &mut fired);
            if let Some(&m) = fired.iter().find(|&&m| m as i64 * MINUTE_MS >= drop_at) {
                t_prom = Some((m as i64 * MINUTE_MS - drop_at) as f64 / HOUR_MS as f64);
            }
        }
        out.detector.push(t_det);
        out.prom.push(t_prom);
        out.oracle.push(t_oracle);
        out.detector_answers.push(n_det);
        out.oracle_answers.push(n_oracle);
    }
    out
}

/// The q-quantile, undetected runs counting as longer than any detection.
fn quantile(values: &[Option<f64>], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().map(|x| x.unwrap_or(f64::INFINITY)).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v.get(i).copied().filter(|x| x.is_finite())
}

fn hours(v: Option<f64>) -> String {
    match v {
        Some(h) if h < 10.0 => format!("{h:.1} h"),
        Some(h) => format!("{h:.0} h"),
        None => format!("> {} d", CENSOR_DAYS),
    }
}

fn answers(v: Option<f64>) -> String {
    match v {
        Some(n) => format!("{n:.0}"),
        None => "—".to_string(),
    }
}

fn missed(v: &[Option<f64>]) -> usize {
    v.iter().filter(|x| x.is_none()).count()
}

/// One line of the drop table.
fn drop_row(
    rng: &mut SmallRng,
    rate: f64,
    drop: f64,
    series: usize,
    settings: &DropSettings,
    scale: usize,
    history_days: i64,
) {
    let arl = settings.answers_between_false_alarms(rate);
    let oracle_h = oracle_threshold(rng, drop, arl, 200 / scale);
    let d = drops(rng, rate, drop, series, settings, oracle_h, history_days);
    let (dm, om) = (quantile(&d.detector, 0.5), quantile(&d.oracle, 0.5));
    let ratio = match (dm, om) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "—".to_string(),
    };
    println!(
        "| {rate:.0} | {drop:.0} | {} | {} | {} | {} | {ratio} | {} | {} | {} | {} | {}/{} |",
        hours(dm),
        hours(quantile(&d.detector, 0.9)),
        hours(om),
        hours(quantile(&d.oracle, 0.9)),
        answers(quantile(&d.detector_answers, 0.5)),
        answers(quantile(&d.oracle_answers, 0.5)),
        hours(quantile(&d.prom, 0.5)),
        hours(quantile(&d.prom, 0.9)),
        missed(&d.prom),
        d.prom.len(),
    );
    if d.early > 0 || missed(&d.detector) > 0 {
        println!(
            "|   | (detector: {} alarms before the drop, {} drops missed) | | | | | | | | | | |",
            d.early,
            missed(&d.detector)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let seed = args
        .iter()
        .position(|a| a == "--seed")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(19);
    let scale = if quick { 10 } else { 1 };
    let stable_only = args.iter().any(|a| a == "--stable-only");
    let stable_factor = args
        .iter()
        .position(|a| a == "--stable-factor")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1);
    let stable_series =
        |rate: f64| if rate >= 1_000.0 { 400 } else { 1_000 } * stable_factor / scale;
    let drop_series = 200 / scale;
    let settings = DropSettings::default();
    let mut rng = SmallRng::seed_from_u64(seed);

    println!("Seed {seed}; detector settings: {settings:?}.");
    println!();
    println!(
        "Stable traffic, {STABLE_DAYS} days per series from a fresh start (the warm-up included):"
    );
    println!();
    println!(
        "| answers/hour | series | detector: false alarms per 100 series-months | series with one | \
         `CxpulseNpsDroppedSignificantly`: false alarms per 100 series-months | series with one |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let months = STABLE_DAYS as f64 * 24.0 / HOURS_PER_MONTH;
    for rate in RATES {
        let r = stable(&mut rng, rate, stable_series(rate), &settings);
        let per100 = |alarms: usize| alarms as f64 / (r.series as f64 * months) * 100.0;
        println!(
            "| {rate:.0} | {} | {:.2} ({} alarms) | {} | {:.0} ({} alarms) | {} |",
            r.series,
            per100(r.detector_alarms),
            r.detector_alarms,
            r.detector_series,
            per100(r.prom_alarms),
            r.prom_alarms,
            r.prom_series,
        );
    }

    if stable_only {
        return;
    }
    println!();
    println!(
        "Drops after {HISTORY_DAYS} days of stable history, {drop_series} series per line; time \
         from the drop to the alarm (not detected within {CENSOR_DAYS} days counts as longer):"
    );
    println!();
    println!("{DROP_HEADER}");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for rate in RATES {
        for drop in DROPS {
            drop_row(&mut rng, rate, drop, drop_series, &settings, scale, HISTORY_DAYS);
        }
    }
    println!();
    println!(
        "The slowest case again with {LONG_HISTORY_DAYS} days of history (a baseline of more \
         answers):"
    );
    println!();
    println!("{DROP_HEADER}");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    drop_row(&mut rng, 20.0, 10.0, drop_series, &settings, scale, LONG_HISTORY_DAYS);
}
