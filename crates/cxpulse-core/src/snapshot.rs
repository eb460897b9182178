//! What the engine shows the outside: windowed counts per series and pipeline counters, plus the
//! scores computed from them (for `/api/v1/scores`; Prometheus computes its own from the counts).

use std::sync::Arc;

use crate::customers::CustomerCounts;
use crate::window::{Counts, WindowSpec};

/// `(survey, category)` label pairs of `cxpulse_survey_responses_total`, in index order.
pub const SURVEY_CATEGORIES: [(&str, &str); 7] = [
    ("nps", "promoter"),
    ("nps", "passive"),
    ("nps", "detractor"),
    ("csat", "satisfied"),
    ("csat", "unsatisfied"),
    ("ces", "easy"),
    ("ces", "not_easy"),
];

/// Engine-wide counters since start. `rejected` is indexed by `RejectReason::index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    pub consumed: u64,
    pub counted: u64,
    pub duplicates: u64,
    pub rejected: [u64; 9],
    pub series_overflow: u64,
    pub corrections: u64,
    /// Answers with a `response_id` not remembered, old enough that an earlier answer under the
    /// same id would have been forgotten (past the correction horizon).
    pub corrections_unmatched: u64,
    /// Messages taken in again while rebuilding a partition by replay.
    pub replayed: u64,
    pub last_event_ms: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct SeriesSnapshot {
    pub brand: Arc<str>,
    pub segment: Arc<str>,
    /// One entry per configured window, in configuration order.
    pub windows: Vec<Counts>,
    /// Active customers at each window's start: `(value, known)`; `known` once any
    /// `customer_base` was seen. `None` where no partition has state for the series.
    pub active_at_start: Vec<Option<(i64, bool)>>,
    pub active_now: Option<(i64, bool)>,
    pub survey_totals: [u64; 7],
    /// When this worker last counted an answer of the series (wall clock); `None` since start.
    pub last_answer_wall_ms: Option<i64>,
    /// Per window, its steps oldest first, each step's NPS counts `[promoter, passive,
    /// detractor]`; empty unless asked for (`Engine::snapshot_with_steps`).
    pub nps_steps: Vec<Vec<[u32; 3]>>,
    /// Sequential evidence that the series' NPS dropped, 1.0 at the alarm (`drop_evidence`);
    /// the largest of its partitions' where several count it.
    pub nps_drop_evidence: f64,
    /// Per window, distinct customers: purchasers, repeat purchasers, NPS respondents and churns
    /// by NPS category (`customers`), summed over partitions; zero where none was seen.
    pub customers: Vec<CustomerCounts>,
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub clock_ms: Option<i64>,
    pub windows: Vec<WindowSpec>,
    pub series: Vec<SeriesSnapshot>,
    pub pipeline: PipelineCounts,
    pub partitions: usize,
    pub state: StateStats,
    /// `(quantile, milliseconds)` over the recent past.
    pub event_age_quantiles_ms: Vec<(f64, u64)>,
    pub event_age_sum_ms: u64,
    pub event_age_count: u64,
}

/// The `kind` label values of the state metrics, in `StateStats` index order.
pub const STATE_KINDS: [&str; 4] = ["dedup", "answers", "windows", "customers"];

/// What the engine remembers, per kind of `STATE_KINDS`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Heap bytes, every slot of every table counted.
    pub bytes: [u64; 4],
    /// Remembered ids, answers, series windows (a series on a partition) and customers (a
    /// customer of a series).
    pub entries: [u64; 4],
    /// The horizon actually kept, in ms: the configured one unless the memory budget forgot
    /// more (windows: the longest window, never shortened).
    pub horizon_ms: [i64; 4],
    /// The horizons configured: `horizon_ms` is shorter while the budget binds.
    pub horizon_configured_ms: [i64; 4],
    /// Entries forgotten early by the memory budget.
    pub evictions: [u64; 4],
}

/// Scores of one window of one series, as Prometheus's recording rules define them.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Scores {
    pub nps_responses: u32,
    pub nps_score: Option<f64>,
    pub nps_margin_of_error: Option<f64>,
    pub csat_responses: u32,
    pub csat_ratio: Option<f64>,
    pub ces_responses: u32,
    pub ces_mean: Option<f64>,
    pub churn_ratio: Option<f64>,
    pub retention_ratio: Option<f64>,
}

impl Scores {
    /// `active_at_start` is S, `active_now` E (both only when known).
    pub fn compute(
        counts: &Counts,
        active_at_start: Option<i64>,
        active_now: Option<i64>,
    ) -> Scores {
        let n = counts.nps_total();
        let (nps_score, nps_margin_of_error) = if n > 0 {
            let p = f64::from(counts.nps[0]) / f64::from(n);
            let d = f64::from(counts.nps[2]) / f64::from(n);
            let variance = ((p + d) - (p - d).powi(2)).max(0.0);
            (Some(100.0 * (p - d)), Some(1.96 * 100.0 * (variance / f64::from(n)).sqrt()))
        } else {
            (None, None)
        };
        let csat_total = counts.csat[0] + counts.csat[1];
        let ces_total = counts.ces[0] + counts.ces[1];
        let ratio = |num: f64, den: f64| (den != 0.0).then(|| num / den);
        let churns = f64::from(counts.actions[crate::event::Action::Churn.index()]);
        let signups = f64::from(counts.actions[crate::event::Action::Signup.index()]);
        let start = active_at_start.filter(|s| *s > 0).map(|s| s as f64);
        Scores {
            nps_responses: n,
            nps_score,
            nps_margin_of_error,
            csat_responses: csat_total,
            csat_ratio: ratio(f64::from(counts.csat[0]), f64::from(csat_total)),
            ces_responses: ces_total,
            ces_mean: ratio(f64::from(counts.ces_score_sum), f64::from(ces_total)),
            churn_ratio: start.map(|s| churns / s),
            retention_ratio: start.zip(active_now).map(|(s, e)| (e as f64 - signups) / s),
        }
    }

    /// What the NPS alert judges: the score is below `threshold` and rests on at least
    /// `min_responses` answers (fewer say too little to page anyone).
    pub fn nps_below_threshold(&self, threshold: f64, min_responses: u64) -> bool {
        u64::from(self.nps_responses) >= min_responses
            && self.nps_score.is_some_and(|score| score < threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nps_and_margin_follow_the_design_formulas() {
        let counts = Counts { nps: [50, 30, 20], ..Counts::default() };
        let scores = Scores::compute(&counts, None, None);
        assert!((scores.nps_score.unwrap() - 30.0).abs() < 1e-9);
        // p=.5, d=.2: 1.96*100*sqrt((.7-.09)/100)
        let expected = 1.96 * 100.0 * (0.61f64 / 100.0).sqrt();
        assert!((scores.nps_margin_of_error.unwrap() - expected).abs() < 1e-9);
        assert_eq!(scores.csat_ratio, None);
    }

    #[test]
    fn below_threshold_needs_enough_answers() {
        let counts = Counts { nps: [10, 10, 20], ..Counts::default() };
        let scores = Scores::compute(&counts, None, None);
        assert!(scores.nps_below_threshold(0.0, 40));
        assert!(!scores.nps_below_threshold(0.0, 41));
        assert!(!scores.nps_below_threshold(-25.0, 30));
        assert!(!Scores::default().nps_below_threshold(0.0, 0));
    }

    #[test]
    fn steps_sum_to_the_window_over_partitions() {
        use crate::{ClockMode, Engine, EngineConfig, SourcePartition};
        let config = EngineConfig { clock: ClockMode::Event, ..EngineConfig::default() };
        let mut engine = Engine::new(config).unwrap();
        let t0 = 1_795_428_000_000i64;
        for (i, (partition, minutes_ago, score)) in
            [(0, 30, 10), (1, 30, 3), (0, 0, 8), (1, 2, 9)].into_iter().enumerate()
        {
            let at = t0 - minutes_ago * 60_000;
            let event = format!(
                r#"{{"event_id":"e{i}","type":"survey_response","occurred_at":{at},"brand":"a","survey":"nps","score":{score}}}"#
            );
            engine.process(SourcePartition { topic: 0, partition }, event.as_bytes(), t0);
        }
        let snapshot = engine.snapshot_with_steps(t0);
        let series = &snapshot.series[0];
        assert_eq!(series.nps_steps.len(), snapshot.windows.len());
        let hour = &series.nps_steps[0]; // 1h: one-minute steps, the newest last
        assert_eq!(hour.len(), 60);
        assert_eq!((hour[59], hour[57], hour[29]), ([0, 1, 0], [1, 0, 0], [1, 0, 1]));
        for (steps, counts) in series.nps_steps.iter().zip(&series.windows) {
            let total: u32 = steps.iter().flatten().sum();
            assert_eq!(total, counts.nps_total());
        }
        assert!(engine.snapshot(t0).series[0].nps_steps.is_empty());
    }

    #[test]
    fn churn_and_retention_need_a_start_count() {
        let mut counts = Counts::default();
        counts.actions[crate::event::Action::Churn.index()] = 5;
        counts.actions[crate::event::Action::Signup.index()] = 10;
        let scores = Scores::compute(&counts, Some(100), Some(105));
        assert_eq!(scores.churn_ratio, Some(0.05));
        assert_eq!(scores.retention_ratio, Some(0.95));
        assert_eq!(Scores::compute(&counts, None, Some(105)).churn_ratio, None);
    }
}
