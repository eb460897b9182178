//! `/api/v1/scores` (version 1): this worker's windowed counts by name, the scores computed from
//! them, the NPS alert settings and verdict, and each window's per-step NPS history for trends.
//! `docs/scores.schema.json` describes the document; `docs/api.md` explains it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cxpulse_core::alerts::AlertPolicy;
use cxpulse_core::customers::CustomerCounts;
use cxpulse_core::event::Action;
use cxpulse_core::window::PANES_PER_WINDOW;
use cxpulse_core::{Counts, Scores, Snapshot};
use serde::Serialize;

use crate::state::HttpState;

/// The document's version; a breaking change to its shape gets a new one.
pub const VERSION: u32 = 1;

/// What the query string asks for: `window=1h` keeps one window, `steps=false` leaves the
/// history out (both shrink the answer for big deployments).
#[derive(Debug, PartialEq)]
pub struct ScoresQuery {
    pub window: Option<String>,
    pub steps: bool,
}

impl ScoresQuery {
    pub fn parse(query: Option<&str>) -> Result<ScoresQuery, String> {
        let mut parsed = ScoresQuery { window: None, steps: true };
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "window" => parsed.window = Some(value.to_string()),
                "steps" => {
                    parsed.steps = match value {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("steps must be true or false, not {value:?}")),
                    }
                }
                _ => return Err(format!("unknown parameter {key:?} (known: window, steps)")),
            }
        }
        Ok(parsed)
    }
}

#[derive(Serialize)]
pub struct ScoresDocument<'a> {
    pub version: u32,
    /// The clock T the windows end at; `null` before the event clock saw an event.
    pub clock_ms: Option<i64>,
    pub windows: Vec<WindowInfo<'a>>,
    pub series: Vec<SeriesScores<'a>>,
}

#[derive(Serialize)]
pub struct WindowInfo<'a> {
    pub name: &'a str,
    pub size_ms: i64,
    pub step_ms: i64,
    /// Start of the oldest step in the window at the clock (the history's first entry).
    pub first_step_start_ms: Option<i64>,
}

#[derive(Serialize)]
pub struct SeriesScores<'a> {
    pub brand: &'a str,
    pub segment: &'a str,
    pub customers_active: Option<i64>,
    pub nps_alert_threshold: f64,
    pub nps_alert_min_responses: u64,
    pub windows: BTreeMap<&'a str, WindowScores>,
}

#[derive(Serialize)]
pub struct WindowScores {
    pub nps: NpsCounts,
    pub csat: CsatCounts,
    pub ces: CesCounts,
    pub customer_events: BTreeMap<&'static str, u32>,
    pub customers_active_at_window_start: Option<i64>,
    pub customers: CustomerJourney,
    pub scores: Scores,
    /// The score is below the threshold with at least the minimum number of answers.
    pub nps_below_threshold: bool,
    /// One entry per step, oldest first; absent when `steps=false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<NpsCounts>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct NpsCounts {
    pub promoter: u32,
    pub passive: u32,
    pub detractor: u32,
}

impl From<[u32; 3]> for NpsCounts {
    fn from([promoter, passive, detractor]: [u32; 3]) -> Self {
        NpsCounts { promoter, passive, detractor }
    }
}

/// Distinct customers in the window (this worker's partitions) and the ratios of the recording
/// rules `cxpulse:repeat_purchase_ratio` and `cxpulse:churn_ratio_by_nps`.
#[derive(Serialize)]
pub struct CustomerJourney {
    pub purchasers: u32,
    pub repeat_purchasers: u32,
    pub repeat_purchase_ratio: Option<f64>,
    pub nps_respondents: NpsCounts,
    pub churned_by_nps: ChurnedByNps,
    pub churn_ratio_by_nps: NpsRatios,
}

#[derive(Serialize)]
pub struct ChurnedByNps {
    pub promoter: u32,
    pub passive: u32,
    pub detractor: u32,
    pub unknown: u32,
}

#[derive(Serialize)]
pub struct NpsRatios {
    pub promoter: Option<f64>,
    pub passive: Option<f64>,
    pub detractor: Option<f64>,
}

impl From<&CustomerCounts> for CustomerJourney {
    fn from(c: &CustomerCounts) -> Self {
        let [promoter, passive, detractor, unknown] = c.churned_by_nps;
        let [p, q, d] = c.churn_ratio_by_nps();
        CustomerJourney {
            purchasers: c.purchasers,
            repeat_purchasers: c.repeat_purchasers,
            repeat_purchase_ratio: c.repeat_purchase_ratio(),
            nps_respondents: NpsCounts::from(c.nps_respondents),
            churned_by_nps: ChurnedByNps { promoter, passive, detractor, unknown },
            churn_ratio_by_nps: NpsRatios { promoter: p, passive: q, detractor: d },
        }
    }
}

#[derive(Serialize)]
pub struct CsatCounts {
    pub satisfied: u32,
    pub unsatisfied: u32,
}

#[derive(Serialize)]
pub struct CesCounts {
    pub easy: u32,
    pub not_easy: u32,
    pub score_sum: u32,
}

fn known(value: Option<(i64, bool)>) -> Option<i64> {
    value.and_then(|(v, known)| known.then_some(v))
}

/// The version-1 document for a snapshot (taken with steps when `query.steps`).
/// `Err` names a window the query asked for that is not configured.
pub fn document<'a>(
    snapshot: &'a Snapshot,
    policy: &AlertPolicy,
    query: &ScoresQuery,
) -> Result<ScoresDocument<'a>, String> {
    let selected: Vec<usize> = match &query.window {
        None => (0..snapshot.windows.len()).collect(),
        Some(name) => match snapshot.windows.iter().position(|w| w.name == *name) {
            Some(index) => vec![index],
            None => {
                let known: Vec<&str> = snapshot.windows.iter().map(|w| w.name.as_str()).collect();
                return Err(format!("no window {name:?}; configured: {}", known.join(", ")));
            }
        },
    };
    let windows = selected
        .iter()
        .map(|&i| {
            let window = &snapshot.windows[i];
            WindowInfo {
                name: &window.name,
                size_ms: window.size_ms,
                step_ms: window.step_ms,
                first_step_start_ms: snapshot.clock_ms.map(|clock| {
                    (window.pane_of(clock) - PANES_PER_WINDOW + 1).saturating_mul(window.step_ms)
                }),
            }
        })
        .collect();
    let series = snapshot
        .series
        .iter()
        .map(|s| {
            let (threshold, min_responses) = policy.for_series(&s.brand, &s.segment);
            let active_now = known(s.active_now);
            let windows = selected
                .iter()
                .map(|&i| {
                    let counts = s.windows.get(i).copied().unwrap_or_default();
                    let start = s.active_at_start.get(i).copied().and_then(known);
                    let steps = query.steps.then(|| {
                        s.nps_steps
                            .get(i)
                            .map(|steps| steps.iter().map(|&c| NpsCounts::from(c)).collect())
                            .unwrap_or_default()
                    });
                    let mut values =
                        window_scores(&counts, start, active_now, threshold, min_responses, steps);
                    if let Some(customers) = s.customers.get(i) {
                        values.customers = CustomerJourney::from(customers);
                    }
                    (snapshot.windows[i].name.as_str(), values)
                })
                .collect();
            SeriesScores {
                brand: &s.brand,
                segment: &s.segment,
                customers_active: active_now,
                nps_alert_threshold: threshold,
                nps_alert_min_responses: min_responses,
                windows,
            }
        })
        .collect();
    Ok(ScoresDocument { version: VERSION, clock_ms: snapshot.clock_ms, windows, series })
}

fn window_scores(
    counts: &Counts,
    start: Option<i64>,
    active_now: Option<i64>,
    threshold: f64,
    min_responses: u64,
    steps: Option<Vec<NpsCounts>>,
) -> WindowScores {
    let scores = Scores::compute(counts, start, active_now);
    WindowScores {
        nps: NpsCounts::from(counts.nps),
        csat: CsatCounts { satisfied: counts.csat[0], unsatisfied: counts.csat[1] },
        ces: CesCounts {
            easy: counts.ces[0],
            not_easy: counts.ces[1],
            score_sum: counts.ces_score_sum,
        },
        customer_events: Action::ALL
            .iter()
            .map(|a| (a.as_str(), counts.actions[a.index()]))
            .collect(),
        customers_active_at_window_start: start,
        customers: CustomerJourney::from(&CustomerCounts::default()),
        nps_below_threshold: scores.nps_below_threshold(threshold, min_responses),
        scores,
        steps,
    }
}

/// `GET /api/v1/scores`.
pub async fn handler(State(state): State<Arc<HttpState>>, uri: Uri) -> Response {
    let query = match ScoresQuery::parse(uri.query()) {
        Ok(query) => query,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let built = state
        .clone()
        .build_for_people(move || {
            let snapshot = state.snapshot_for_people(query.steps);
            document(&snapshot, &state.policy, &query).map(|doc| serde_json::to_vec(&doc))
        })
        .await;
    match built {
        Ok(Ok(Ok(body))) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(message)) => (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
        Ok(Ok(Err(e))) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode scores: {e}\n"))
                .into_response()
        }
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_checked() {
        assert_eq!(ScoresQuery::parse(None), Ok(ScoresQuery { window: None, steps: true }));
        assert_eq!(
            ScoresQuery::parse(Some("window=24h&steps=false")),
            Ok(ScoresQuery { window: Some("24h".into()), steps: false })
        );
        assert!(ScoresQuery::parse(Some("steps=maybe")).is_err());
        assert!(ScoresQuery::parse(Some("brand=acme")).is_err());
    }
}
