//! The page's HTML: one window in detail, a row per brand/segment with inline SVG (the NPS
//! interval against the threshold, the shares, the per-step trend), the pipeline-health strip on
//! top. Pure: everything it shows comes in through the snapshot and [`PageView`].

use std::fmt::Write;

use cxpulse_core::alerts::AlertPolicy;
use cxpulse_core::customers::CustomerCounts;
use cxpulse_core::duration::format_duration_ms;
use cxpulse_core::event::Action;
use cxpulse_core::{Scores, Snapshot};

const STYLE: &str = include_str!("../../assets/page.css");
const SCRIPT: &str = include_str!("../../assets/page.js");
/// More rows than anyone reads; series below their threshold are kept first when cutting.
pub const MAX_ROWS: usize = 500;

/// The pipeline's health as the strip shows it.
#[derive(Clone, Debug, Default)]
pub struct HealthFigures {
    pub events_per_s: Option<f64>,
    pub rejects_per_s: Option<f64>,
    pub consumer_lag: Option<i64>,
    pub dead_letters: Option<u64>,
    pub ready: bool,
    pub partitions_assigned: usize,
    pub partitions_restoring: usize,
}

/// What the page shows besides the snapshot.
pub struct PageView<'a> {
    pub policy: &'a AlertPolicy,
    /// Index of the window shown in detail.
    pub window: usize,
    pub now_ms: i64,
    pub version: &'a str,
    pub health: HealthFigures,
}

/// One brand/segment in the shown window.
struct Row<'a> {
    index: usize,
    brand: &'a str,
    segment: &'a str,
    threshold: f64,
    min_responses: u64,
    scores: Scores,
    below: bool,
    /// Evidence that the NPS dropped, 1.0 at the alarm.
    drop_evidence: f64,
    /// No answer for longer than the series' own rate makes likely (`silent_for`).
    silent_for_ms: Option<i64>,
}

/// How long a series has had no answer, when its rate says it should have had some: at least
/// `min_rate` answers an hour on average over the longest window of at most 7 days, and nothing
/// for as long as 10 of them normally take (at least 30 minutes). The page's reading of
/// `CxpulseBrandFeedSilent`, from this worker's own counts.
fn silent_for(snapshot: &Snapshot, series: usize, min_rate: f64, now_ms: i64) -> Option<i64> {
    const WEEK_MS: i64 = 7 * 86_400_000;
    let s = &snapshot.series[series];
    let (w, spec) = snapshot
        .windows
        .iter()
        .enumerate()
        .filter(|(_, w)| w.size_ms <= WEEK_MS)
        .max_by_key(|(_, w)| w.size_ms)?;
    let counts = s.windows.get(w)?;
    let answers: u32 = counts.nps.iter().chain(&counts.csat).chain(&counts.ces).sum();
    let per_hour = f64::from(answers) / (spec.size_ms as f64 / 3_600_000.0);
    if per_hour <= 0.0 || per_hour < min_rate {
        return None;
    }
    let quiet_ms = now_ms - s.last_answer_wall_ms?;
    let expected_ms = ((10.0 / per_hour * 3_600_000.0) as i64).max(30 * 60_000);
    (quiet_ms >= expected_ms).then_some(quiet_ms)
}

fn known(value: Option<(i64, bool)>) -> Option<i64> {
    value.and_then(|(v, known)| known.then_some(v))
}

fn scores_of(snapshot: &Snapshot, series: usize, window: usize) -> Scores {
    let s = &snapshot.series[series];
    let counts = s.windows.get(window).copied().unwrap_or_default();
    let start = s.active_at_start.get(window).copied().and_then(known);
    Scores::compute(&counts, start, known(s.active_now))
}

/// The whole page for a snapshot taken with steps.
pub fn render_page(snapshot: &Snapshot, view: &PageView) -> String {
    let window = view.window.min(snapshot.windows.len().saturating_sub(1));
    let below_per_window: Vec<usize> = (0..snapshot.windows.len())
        .map(|w| {
            (0..snapshot.series.len())
                .filter(|&i| {
                    let s = &snapshot.series[i];
                    let (threshold, min) = view.policy.for_series(&s.brand, &s.segment);
                    scores_of(snapshot, i, w).nps_below_threshold(threshold, min)
                })
                .count()
        })
        .collect();
    let mut rows: Vec<Row> = snapshot
        .series
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let (threshold, min_responses) = view.policy.for_series(&s.brand, &s.segment);
            let scores = scores_of(snapshot, index, window);
            let below = scores.nps_below_threshold(threshold, min_responses);
            Row {
                index,
                brand: &s.brand,
                segment: &s.segment,
                threshold,
                min_responses,
                scores,
                below,
                drop_evidence: s.nps_drop_evidence,
                silent_for_ms: silent_for(
                    snapshot,
                    index,
                    view.policy.silence_min_rate,
                    view.now_ms,
                ),
            }
        })
        .collect();
    let total_rows = rows.len();
    if rows.len() > MAX_ROWS {
        rows.sort_by_key(|r| !r.below);
        rows.truncate(MAX_ROWS);
    }
    rows.sort_by(|a, b| (a.brand, a.segment).cmp(&(b.brand, b.segment)));

    let mut out = String::with_capacity(8_192 + rows.len() * 1_600);
    let below_now = below_per_window.get(window).copied().unwrap_or(0);
    let title = match below_now {
        0 => "cxpulse".to_string(),
        n => format!("({n} below) cxpulse"),
    };
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title><link rel=icon href=\"data:,\"><noscript><meta http-equiv=refresh content=30></noscript>\
         <style>{STYLE}</style></head><body><div id=stale></div><div id=live data-title=\"{title}\">"
    );
    render_header(&mut out, snapshot, view, window, &below_per_window);
    render_health(&mut out, snapshot, view);
    render_attention(&mut out, snapshot, &rows, window);
    render_table(&mut out, snapshot, &rows, window);
    if total_rows > rows.len() {
        let _ = write!(
            out,
            "<p class=attn>Showing {} of {total_rows} brand/segment pairs (those below their \
             threshold first); /api/v1/scores has them all.</p>",
            rows.len()
        );
    }
    let _ = write!(out, "</div><script>{SCRIPT}</script></body></html>");
    out
}

fn render_header(
    out: &mut String,
    snapshot: &Snapshot,
    view: &PageView,
    window: usize,
    below_per_window: &[usize],
) {
    out.push_str("<header><h1>cxpulse</h1><nav>");
    for (i, w) in snapshot.windows.iter().enumerate() {
        let class = if i == window { " class=on" } else { "" };
        let badge = match below_per_window.get(i) {
            Some(&n) if n > 0 => format!(" <span class=\"st bad\">{n}</span>"),
            _ => String::new(),
        };
        let _ = write!(out, "<a href=\"?window={0}\"{class}>{0}{badge}</a>", esc(&w.name));
    }
    let clock = snapshot
        .clock_ms
        .map_or("no events yet".to_string(), |ms| format!("window ends {}", time_of_day(ms)));
    let _ = write!(
        out,
        "</nav><span class=upd>{clock} · updated {} · v{}</span></header>",
        time_of_day(view.now_ms),
        esc(view.version)
    );
}

fn render_health(out: &mut String, snapshot: &Snapshot, view: &PageView) {
    let h = &view.health;
    let p = &snapshot.pipeline;
    let rejected: u64 = p.rejected.iter().sum();
    let mut items = String::new();
    let mut item = |label: &str, value: String, detail: String, warn: bool| {
        let class = if warn { " class=warn" } else { "" };
        let _ = write!(
            items,
            "<div{class}><span>{label}</span><b>{value}</b><span>{detail}</span></div>"
        );
    };
    item(
        "status",
        if h.ready { "ready" } else { "not ready" }.into(),
        format!("{} partitions, {} restoring", h.partitions_assigned, h.partitions_restoring),
        !h.ready,
    );
    item(
        "events/s",
        h.events_per_s.map_or("–".into(), |r| format!("{r:.0}")),
        format!("{} counted", p.counted),
        false,
    );
    let share = match (h.rejects_per_s, h.events_per_s) {
        (Some(r), Some(e)) if e > 0.0 => format!("{:.1} %", 100.0 * r / e),
        _ => "–".into(),
    };
    item("rejected", share, format!("{rejected} total, {} duplicates", p.duplicates), false);
    item(
        "dead letters",
        h.dead_letters.map_or("–".into(), |n| n.to_string()),
        "acknowledged by the DLQ".into(),
        false,
    );
    item(
        "consumer lag",
        h.consumer_lag.map_or("–".into(), |n| n.to_string()),
        "messages behind".into(),
        false,
    );
    let quantile = |q: f64| {
        snapshot
            .event_age_quantiles_ms
            .iter()
            .find(|(at, _)| (*at - q).abs() < 1e-9)
            .map_or("–".into(), |(_, ms)| seconds(*ms as f64 / 1000.0))
    };
    item("event age p50", quantile(0.5), format!("p99 {}", quantile(0.99)), false);
    let last = p
        .last_event_ms
        .map_or("–".into(), |ms| seconds(((view.now_ms - ms) as f64 / 1000.0).max(0.0)) + " ago");
    item("last event", last, format!("{} series", snapshot.series.len()), false);
    // Remembered ids and answers, with the horizons actually kept: shorter than configured
    // (and marked) while the memory budget binds.
    let state = &snapshot.state;
    let kept = |kind: usize| format_duration_ms(state.horizon_ms[kind] / 60_000 * 60_000);
    let shortened = (0..2).any(|k| state.horizon_ms[k] < state.horizon_configured_ms[k]);
    item(
        "state",
        format!("{:.0} MiB", state.bytes.iter().sum::<u64>() as f64 / 1_048_576.0),
        format!("ids kept {} · answers {}", kept(0), kept(1)),
        shortened,
    );
    let _ = write!(out, "<section class=health aria-label=\"pipeline health\">{items}</section>");
}

fn render_attention(out: &mut String, snapshot: &Snapshot, rows: &[Row], window: usize) {
    let name = snapshot.windows.get(window).map_or("", |w| w.name.as_str());
    let below: Vec<&Row> = rows.iter().filter(|r| r.below).collect();
    if rows.is_empty() {
        out.push_str("<p class=\"attn ok\" id=attn>No events counted yet.</p>");
        return;
    }
    if below.is_empty() {
        let _ = write!(
            out,
            "<p class=\"attn ok\" id=attn>No brand/segment is below its NPS threshold in the last {}.</p>",
            esc(name)
        );
        return;
    }
    let _ = write!(out, "<p class=attn id=attn>Below NPS threshold in the last {}: ", esc(name));
    for row in below {
        let _ = write!(
            out,
            "<a href=\"#r{}\">{}/{} {}</a>",
            row.index,
            esc(row.brand),
            esc(row.segment),
            score(row.scores.nps_score)
        );
    }
    out.push_str("</p>");
}

fn render_table(out: &mut String, snapshot: &Snapshot, rows: &[Row], window: usize) {
    let step = snapshot
        .windows
        .get(window)
        .map_or(String::new(), |w| cxpulse_core::duration::format_duration_ms(w.step_ms));
    let _ = write!(
        out,
        "<div class=wrap><table><thead><tr><th>brand / segment</th><th>NPS ±95&nbsp;%</th>\
         <th>vs threshold</th><th>alert<br><small>drop evidence</small></th><th>promoters / passives / detractors&nbsp;%</th>\
         <th>NPS per {} step</th><th>CSAT top&#8209;2</th><th>CES 1–7</th><th>churn</th>\
         <th>retention</th><th>repeat purchase</th><th>churn by NPS<br><small>P / Q / D</small></th>\
         <th>other windows</th></tr></thead><tbody>",
        esc(&step)
    );
    for row in rows {
        render_row(out, snapshot, row, window);
    }
    out.push_str("</tbody></table></div>");
}

fn render_row(out: &mut String, snapshot: &Snapshot, row: &Row, window: usize) {
    let s = &row.scores;
    let class = if row.below { " class=below" } else { "" };
    let _ = write!(
        out,
        "<tr id=r{}{class} data-brand=\"{}\" data-segment=\"{}\" data-below={}>\
         <td><b>{}</b> / {}</td>",
        row.index,
        esc(row.brand),
        esc(row.segment),
        u8::from(row.below),
        esc(row.brand),
        esc(row.segment)
    );
    let moe = s.nps_margin_of_error.map_or(String::new(), |m| format!(" <small>±{m:.1}</small>"));
    let _ = write!(
        out,
        "<td><span class=n>{}</span>{moe}<br><small>{} answers</small></td><td>",
        score(s.nps_score),
        s.nps_responses
    );
    margin_bar(out, s, row.threshold);
    let status = if row.silent_for_ms.is_some() {
        "<span class=\"st silent\" title=\"no answer for longer than its rate makes likely\">SILENT</span>"
    } else if row.below {
        "<span class=\"st bad\">BELOW</span>"
    } else if s.nps_score.is_some_and(|v| v < row.threshold) {
        "<span class=\"st few\" title=\"below, but on too few answers to alert\">few answers</span>"
    } else if s.nps_responses == 0 {
        "<span class=\"st few\">no answers</span>"
    } else {
        "<span class=\"st ok\">ok</span>"
    };
    let _ = write!(
        out,
        "<small>threshold {}</small></td><td>{status}<br><small>min {} answers</small>",
        fmt_threshold(row.threshold),
        row.min_responses
    );
    if let Some(quiet) = row.silent_for_ms {
        let _ = write!(
            out,
            "<br><small>none for {}</small>",
            format_duration_ms(quiet / 60_000 * 60_000)
        );
    }
    evidence_bar(out, row.drop_evidence);
    out.push_str("</td><td>");
    let counts = snapshot.series[row.index].windows.get(window).copied().unwrap_or_default();
    shares(out, counts.nps);
    out.push_str("</td><td>");
    let steps = snapshot.series[row.index].nps_steps.get(window).map_or(&[][..], Vec::as_slice);
    trend(out, steps, row.threshold);
    let churns = counts.actions[Action::Churn.index()];
    let _ = write!(
        out,
        "</td><td>{}<br><small>{} answers</small></td><td>{}<br><small>{} answers</small></td>\
         <td>{}<br><small>{churns} churned</small></td><td>{}</td>",
        percent(s.csat_ratio, 1),
        s.csat_responses,
        s.ces_mean.map_or("–".into(), |m| format!("{m:.2}")),
        s.ces_responses,
        percent(s.churn_ratio, 2),
        percent(s.retention_ratio, 1),
    );
    let customers = snapshot.series[row.index].customers.get(window).copied().unwrap_or_default();
    customer_journey(out, &customers);
    out.push_str("<td class=other>");
    for (w, spec) in snapshot.windows.iter().enumerate().filter(|(w, _)| *w != window) {
        let other = scores_of(snapshot, row.index, w);
        let mark =
            if other.nps_below_threshold(row.threshold, row.min_responses) { "▼" } else { "" };
        let _ = write!(out, "<span>{} {}{mark}</span>", esc(&spec.name), score(other.nps_score));
    }
    out.push_str("</td></tr>");
}

/// Repeat purchase rate, and churn by the category of the customer's last NPS answer (the
/// detractors' in red when they churn more than the promoters).
fn customer_journey(out: &mut String, c: &CustomerCounts) {
    if *c == CustomerCounts::default() {
        out.push_str("<td>–</td><td>–</td>");
        return;
    }
    let _ = write!(
        out,
        "<td class=repeat>{}<br><small>{} of {} buyers</small></td><td class=churn-nps>",
        percent(c.repeat_purchase_ratio(), 1),
        c.repeat_purchasers,
        c.purchasers
    );
    let [promoter, passive, detractor] = c.churn_ratio_by_nps();
    let worse = detractor.is_some_and(|d| promoter.is_none_or(|p| d > p));
    let detractor_class = if worse { " class=bad" } else { "" };
    let _ = write!(
        out,
        "<span title=promoters>{}</span> / <span title=passives>{}</span> / \
         <span title=detractors{detractor_class}>{}</span><br><small>{} churned, {} unknown</small></td>",
        percent(promoter, 1),
        percent(passive, 1),
        percent(detractor, 1),
        c.churned_by_nps.iter().sum::<u32>(),
        c.churned_by_nps[3]
    );
}

/// The drop evidence as a bar filling up to the alert level (1.0): amber from half way, red at
/// the alarm.
fn evidence_bar(out: &mut String, evidence: f64) {
    let filled = (evidence.clamp(0.0, 1.0) * 100.0).round();
    let level = if evidence >= 1.0 {
        "bad"
    } else if evidence >= 0.5 {
        "warn"
    } else {
        "ok"
    };
    let _ = write!(
        out,
        "<div class=\"ev {level}\" data-evidence=\"{evidence:.3}\" title=\"NPS drop evidence {evidence:.2}          (CxpulseNpsDropDetected at 1.00)\"><i style=\"width:{filled}%\"></i></div>"
    );
}

/// NPS against the threshold: the axis is centred on the threshold and spans 50 points either
/// side (beyond that the marks stop at the edge), so the 95 % interval is wide enough to judge.
/// The interval is red when wholly below the threshold, amber when it straddles it.
fn margin_bar(out: &mut String, s: &Scores, threshold: f64) {
    let x = |v: f64| ((v - threshold).clamp(-50.0, 50.0) * 1.2 + 60.0).round();
    out.push_str(
        "<svg class=mb width=120 height=14 viewBox=\"0 0 120 14\" role=img>\
         <line class=ax x1=0 y1=7 x2=120 y2=7 /><line class=th x1=60 y1=0 x2=60 y2=14 />",
    );
    if let (Some(v), Some(m)) = (s.nps_score, s.nps_margin_of_error) {
        let (lo, hi) = (x(v - m), x(v + m));
        let relation = if v + m < threshold {
            " lo"
        } else if v - m < threshold {
            " mid"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<title>NPS {v:.1} ± {m:.1} (95 %), threshold {}</title>\
             <rect class=\"ci{relation}\" x={lo} y=4 width={} height=6 rx=2 />\
             <rect class=v x={} y=1 width=3 height=12 />",
            fmt_threshold(threshold),
            (hi - lo).max(1.0),
            x(v) - 1.0
        );
    }
    out.push_str("</svg>");
}

fn shares(out: &mut String, nps: [u32; 3]) {
    let total: u32 = nps.iter().sum();
    if total == 0 {
        out.push('–');
        return;
    }
    let [p, pa, d] = nps.map(|n| (100.0 * f64::from(n) / f64::from(total)).round() as u32);
    let _ = write!(
        out,
        "<div class=sh title=\"promoters {p} %, passives {pa} %, detractors {d} %\">\
         <i style=width:{p}%></i><b style=width:{pa}%></b><u style=width:{d}%></u></div>\
         <small>{p} / {pa} / {d} %</small>"
    );
}

/// NPS per step, oldest to newest, with the threshold dashed. The scale fits the row's scores and
/// threshold (at least 40 points tall; `data-range` says which), so a dip shows in every row.
/// Steps without answers are gaps. `data-nps` lists every step's rounded score (empty: no answers).
fn trend(out: &mut String, steps: &[[u32; 3]], threshold: f64) {
    const WIDTH: f64 = 120.0;
    const HEIGHT: f64 = 36.0;
    let values: Vec<Option<f64>> = steps
        .iter()
        .map(|[p, pa, d]| {
            let n = p + pa + d;
            (n > 0).then(|| 100.0 * (f64::from(*p) - f64::from(*d)) / f64::from(n))
        })
        .collect();
    let (mut low, mut high) = values
        .iter()
        .flatten()
        .fold((threshold, threshold), |(low, high), v| (low.min(*v), high.max(*v)));
    let centre = (low + high) / 2.0;
    if high - low < 40.0 {
        (low, high) = (centre - 20.0, centre + 20.0);
    }
    (low, high) = ((low - 5.0).floor().max(-100.0), (high + 5.0).ceil().min(100.0));
    let y = |v: f64| (1.0 + (high - v) * (HEIGHT - 2.0) / (high - low)).round();
    let dx = WIDTH / steps.len().max(1) as f64;
    let _ = write!(
        out,
        "<svg class=tr width=120 height=36 viewBox=\"0 0 120 36\" role=img data-steps={} \
         data-range=\"{low},{high}\" data-nps=\"",
        steps.len()
    );
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some(v) = v {
            let _ = write!(out, "{}", v.round());
        }
    }
    let _ = write!(
        out,
        "\"><title>NPS per step, {low} to {high}; dashed: threshold {}</title>\
         <line class=th x1=0 y1={1} x2=120 y2={1} /><path class=l d=\"",
        fmt_threshold(threshold),
        y(threshold)
    );
    // An absolute move at each run of answered steps, then relative lines (the shortest text):
    // `M x y l dx dy dx dy ...`; `h0` makes a lone step show as a dot (round caps).
    let mut previous: Option<(f64, f64)> = None;
    for (i, v) in values.iter().enumerate() {
        let Some(v) = v else {
            previous = None;
            continue;
        };
        let point = (((i as f64 + 0.5) * dx * 10.0).round() / 10.0, y(*v));
        match previous {
            None => {
                let _ = write!(out, "M{} {}", point.0, point.1);
            }
            Some(last) => {
                let step = ((point.0 - last.0) * 10.0).round() / 10.0;
                let first = values.get(i.wrapping_sub(2)).is_none_or(Option::is_none);
                let _ = write!(out, "{}{step} {}", if first { 'l' } else { ' ' }, point.1 - last.1);
            }
        }
        if !values.get(i + 1).is_some_and(Option::is_some) {
            out.push_str("h0");
        }
        previous = Some(point);
    }
    out.push_str("\" /></svg>");
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn score(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.1}").replace('-', "−"))
}

fn fmt_threshold(value: f64) -> String {
    format!("{value}").replace('-', "−")
}

fn percent(ratio: Option<f64>, decimals: usize) -> String {
    ratio.map_or("–".into(), |r| format!("{:.*} %", decimals, 100.0 * r).replace('-', "−"))
}

fn seconds(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.1} s")
    } else if value < 120.0 {
        format!("{value:.0} s")
    } else {
        format!("{:.0} min", value / 60.0)
    }
}

/// `HH:MM:SS UTC` of epoch milliseconds.
fn time_of_day(ms: i64) -> String {
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", secs / 3600, secs / 60 % 60, secs % 60)
}
