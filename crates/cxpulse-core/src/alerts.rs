//! Per-brand alert settings (NPS threshold, fewest answers to judge, churn threshold): a default
//! and overrides, the most specific match winning. The worker exports them as gauges so that
//! Prometheus's alert rules can join on them.

#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct AlertOverride {
    pub brand: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nps_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_responses: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn_threshold: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AlertPolicy {
    pub nps_threshold: f64,
    pub min_responses: u64,
    /// Share (0..1) of the customers active at the 30-day window's start who churned in it.
    pub churn_threshold: f64,
    /// Answers an hour (7-day average) from which a brand that falls silent alerts.
    pub silence_min_rate: f64,
    pub overrides: Vec<AlertOverride>,
}

/// The churn threshold when `[alerts]` sets none: 5 % over 30 days, several times the monthly
/// churn of a healthy subscription business, so it flags a real change rather than noise.
pub const DEFAULT_CHURN_THRESHOLD: f64 = 0.05;

/// The silence alert's traffic floor when `[alerts]` sets none: a brand with fewer answers an
/// hour than this has quiet hours too often for a gap to mean anything.
pub const DEFAULT_SILENCE_MIN_RATE: f64 = 5.0;

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy {
            nps_threshold: 0.0,
            min_responses: 30,
            churn_threshold: DEFAULT_CHURN_THRESHOLD,
            silence_min_rate: DEFAULT_SILENCE_MIN_RATE,
            overrides: Vec::new(),
        }
    }
}

impl AlertPolicy {
    /// `(nps_threshold, min_responses)` for a series: a brand+segment override beats a brand-only
    /// one, which beats the defaults. Each setting falls back separately.
    pub fn for_series(&self, brand: &str, segment: &str) -> (f64, u64) {
        let threshold = self.pick(brand, segment, |o| o.nps_threshold, self.nps_threshold);
        let min = self.pick(
            brand,
            segment,
            |o| o.min_responses.map(|m| m as f64),
            self.min_responses as f64,
        ) as u64;
        (threshold, min)
    }

    /// The churn threshold of a series, chosen like the NPS settings.
    pub fn churn_threshold_for(&self, brand: &str, segment: &str) -> f64 {
        self.pick(brand, segment, |o| o.churn_threshold, self.churn_threshold)
    }

    fn pick(
        &self,
        brand: &str,
        segment: &str,
        get: fn(&AlertOverride) -> Option<f64>,
        default: f64,
    ) -> f64 {
        let exact = self
            .overrides
            .iter()
            .find(|o| o.brand == brand && o.segment.as_deref() == Some(segment));
        let brand_wide = self.overrides.iter().find(|o| o.brand == brand && o.segment.is_none());
        exact.and_then(get).or_else(|| brand_wide.and_then(get)).unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_override_wins_per_setting() {
        let policy = AlertPolicy {
            nps_threshold: 0.0,
            min_responses: 30,
            churn_threshold: 0.05,
            silence_min_rate: 5.0,
            overrides: vec![
                AlertOverride {
                    brand: "acme".into(),
                    segment: None,
                    nps_threshold: Some(10.0),
                    min_responses: Some(50),
                    churn_threshold: Some(0.02),
                },
                AlertOverride {
                    brand: "acme".into(),
                    segment: Some("smb".into()),
                    nps_threshold: Some(20.0),
                    min_responses: None,
                    churn_threshold: Some(0.1),
                },
            ],
        };
        assert_eq!(policy.for_series("acme", "smb"), (20.0, 50));
        assert_eq!(policy.for_series("acme", "enterprise"), (10.0, 50));
        assert_eq!(policy.for_series("globex", "smb"), (0.0, 30));
        assert_eq!(policy.churn_threshold_for("acme", "smb"), 0.1);
        assert_eq!(policy.churn_threshold_for("acme", "enterprise"), 0.02);
        assert_eq!(policy.churn_threshold_for("globex", "smb"), 0.05);
    }
}
