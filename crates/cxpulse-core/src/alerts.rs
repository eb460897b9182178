//! Per-brand NPS alert settings: a default and overrides, the most specific match winning.
//! The worker exports them as gauges so that Prometheus's alert rules can join on them.

#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct AlertOverride {
    pub brand: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nps_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_responses: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AlertPolicy {
    pub nps_threshold: f64,
    pub min_responses: u64,
    pub overrides: Vec<AlertOverride>,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy { nps_threshold: 0.0, min_responses: 30, overrides: Vec::new() }
    }
}

impl AlertPolicy {
    /// `(nps_threshold, min_responses)` for a series: a brand+segment override beats a brand-only
    /// one, which beats the defaults. Each setting falls back separately.
    pub fn for_series(&self, brand: &str, segment: &str) -> (f64, u64) {
        let exact = self
            .overrides
            .iter()
            .find(|o| o.brand == brand && o.segment.as_deref() == Some(segment));
        let brand_wide = self.overrides.iter().find(|o| o.brand == brand && o.segment.is_none());
        let pick = |get: fn(&AlertOverride) -> Option<f64>, default: f64| {
            exact.and_then(get).or_else(|| brand_wide.and_then(get)).unwrap_or(default)
        };
        let threshold = pick(|o| o.nps_threshold, self.nps_threshold);
        let min = pick(|o| o.min_responses.map(|m| m as f64), self.min_responses as f64) as u64;
        (threshold, min)
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
            overrides: vec![
                AlertOverride {
                    brand: "acme".into(),
                    segment: None,
                    nps_threshold: Some(10.0),
                    min_responses: Some(50),
                },
                AlertOverride {
                    brand: "acme".into(),
                    segment: Some("smb".into()),
                    nps_threshold: Some(20.0),
                    min_responses: None,
                },
            ],
        };
        assert_eq!(policy.for_series("acme", "smb"), (20.0, 50));
        assert_eq!(policy.for_series("acme", "enterprise"), (10.0, 50));
        assert_eq!(policy.for_series("globex", "smb"), (0.0, 30));
    }
}
