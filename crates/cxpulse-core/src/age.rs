//! Event age (processing time minus `occurred_at`) in an HdrHistogram, over a rolling minute or
//! two: two histograms take turns, so quantiles describe recent traffic, not the whole uptime.

use hdrhistogram::Histogram;

const ROTATE_MS: i64 = 60_000;
/// Ages are clamped to a year: older events are rejected as too old long before that anyway.
const MAX_AGE_MS: u64 = 366 * 86_400_000;
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

pub struct AgeHistogram {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    current_started_ms: Option<i64>,
    sum_ms: u64,
    count: u64,
}

impl Default for AgeHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl AgeHistogram {
    pub fn new() -> Self {
        let make = || {
            Histogram::new_with_bounds(1, MAX_AGE_MS, 2).unwrap_or_else(|_| unreachable_bounds())
        };
        AgeHistogram {
            current: make(),
            previous: make(),
            current_started_ms: None,
            sum_ms: 0,
            count: 0,
        }
    }

    fn rotate(&mut self, now_ms: i64) {
        match self.current_started_ms {
            None => self.current_started_ms = Some(now_ms),
            Some(start) if now_ms - start >= 2 * ROTATE_MS => {
                self.previous.reset();
                self.current.reset();
                self.current_started_ms = Some(now_ms);
            }
            Some(start) if now_ms - start >= ROTATE_MS => {
                std::mem::swap(&mut self.current, &mut self.previous);
                self.current.reset();
                self.current_started_ms = Some(now_ms);
            }
            Some(_) => {}
        }
    }

    pub fn record(&mut self, now_ms: i64, age_ms: i64) {
        self.rotate(now_ms);
        let age = u64::try_from(age_ms).unwrap_or(0).clamp(1, MAX_AGE_MS);
        self.current.saturating_record(age);
        self.sum_ms = self.sum_ms.saturating_add(age);
        self.count += 1;
    }

    /// `(quantile, ms)` over the current and previous minute; empty when nothing was recorded.
    pub fn quantiles(&mut self, now_ms: i64) -> Vec<(f64, u64)> {
        self.rotate(now_ms);
        let mut merged = self.current.clone();
        if merged.add(&self.previous).is_err() || merged.is_empty() {
            return Vec::new();
        }
        QUANTILES.iter().map(|&q| (q, merged.value_at_quantile(q))).collect()
    }

    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// The bounds above are constants that hdrhistogram accepts; this is never reached.
fn unreachable_bounds() -> Histogram<u64> {
    Histogram::new(2).unwrap_or_else(|_| std::process::abort())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_track_recent_ages() {
        let mut h = AgeHistogram::new();
        for age in 1..=1000 {
            h.record(0, age);
        }
        let q = h.quantiles(0);
        assert_eq!(q.len(), 4);
        assert!((495..=505).contains(&q[0].1), "{q:?}");
        assert!((985..=1000).contains(&q[2].1), "{q:?}");
        // Two minutes later the old ages are gone.
        h.record(130_000, 5);
        assert!(h.quantiles(130_000)[3].1 <= 5);
        assert_eq!(h.count(), 1001);
    }
}
