//! Sequential evidence that a series' NPS has dropped: a bank of one-sided CUSUMs on the
//! per-answer NPS value (+1 promoter, 0 passive, −1 detractor) against a baseline learned from the
//! series' own answers. Sans IO: callers pass each answer and its time in, and read the evidence
//! out; nothing here reads a clock.
//!
//! # Method
//!
//! A drop of the NPS by `δ` points is a drop of the mean answer value by `δ/100`. For each of three
//! design drops `δ_j` (`min_drop_points` × 1, 2 and 3) the detector keeps
//!
//! ```text
//! S_j ← max(0, S_j + λ_j·(μ̂ − m_j − x) − ψ(λ_j)),   λ_j = δ_j / σ̂²,
//! ψ(λ) = ln E_baseline[exp(λ·(μ̂ − x))]
//! ```
//!
//! where `μ̂` and `σ̂²` are the baseline's mean and variance of the answer value. Without the
//! margin `m_j`, the increment is the log-likelihood ratio of the baseline mix against its
//! exponential tilt, the mix closest to it (in Kullback-Leibler terms) whose mean is about `δ_j`
//! lower, `I_j ≈ δ_j²/(2σ̂²)` nats per answer away from it: under the baseline `exp(S_j)` is a
//! supermartingale restarted at 1, whatever the mix (ψ is exact for a three-valued answer), so the
//! evidence only moves when answers arrive and reading it more often changes nothing. A CUSUM
//! restarted at 0 crosses `h` about once in `e^h / I` answers of stable traffic (Siegmund's
//! approximation; Lorden's bound `e^h` is exact but about `1/I`, 10 to 100 times, too cautious).
//! Three design drops rather than one keep the delay within about 12 % of a CUSUM tuned to the
//! true drop anywhere from `min_drop_points` to four times it.
//!
//! **The threshold knows the traffic.** A budget of `false_alarms_per_100_series_months` is a
//! budget per month, not per answer, and a month holds 14,610 answers at 20 answers/hour but
//! 730,500 at 1,000/hour. The detector learns the series' mean gap between answers, so it knows
//! `A`, the answers in `100 / budget` months, and sets each CUSUM's threshold to
//!
//! ```text
//! h_j = ln(A · I_j) + ln 3 + ln 2
//! ```
//!
//! `ln 3` is the union bound over the three CUSUMs; `ln 2` aims at half the budget, because
//! `e^h / I` is an approximation (the simulation in `examples/drop_simulation.rs` measures the
//! result: docs/alerting.md). The evidence is `max_j S_j / h_j`, 1.0 at the alarm.
//!
//! **The baseline is learned, so it is wrong by `ε ≈ σ/√n`.** A baseline `ε` too high makes
//! stable traffic look like a drop of `ε` and raises the false-alarm rate by about `exp(2hε/δ)`;
//! averaged over `ε ~ N(0, σ²/n)` that is `exp(2h²σ²/(δ²n))`, a factor of thousands for a
//! 10-point design after a week at 20 answers/hour. The margin `m_j = h_j·σ̂²/(δ_j·n)` cancels it
//! (it multiplies the rate by `exp(−2h·m_j/δ_j)`), and it shrinks as the baseline grows: about
//! 1 point for the smallest design drop after two weeks at 20 answers/hour, a tenth of a point at
//! 1,000/hour. It is also why small drops on quiet series take longer than for a method that knows
//! the baseline: the price of learning it.
//!
//! # Baseline
//!
//! - **Warm-up:** the first `warmup_answers` answers only teach the baseline; the evidence is 0.
//! - **Learning:** afterwards each answer updates the baseline's mean and share of non-passives with
//!   weight `1/n`, `n` counting the baseline's answers up to `baseline_answers` (then a moving
//!   average of about that many answers, so a slow seasonal drift is followed), **unless the
//!   evidence was already at [`FREEZE_AT`] or more before the answer**: a drop in progress must not
//!   teach the baseline that it is normal. The choice depends only on earlier answers, so it does
//!   not bias the baseline of stable traffic.
//! - **After an alarm** the evidence stays at its alarm value (≥ 1) for `alarm_hold_minutes` of
//!   event time, so the alert is seen; the first answer after that resets everything but the
//!   traffic rate: the CUSUMs go to 0 and the baseline is learned again from scratch, from the new
//!   level (warm-up included). A lasting drop raises one alarm, not one per warm-up.
//! - **After a settings change** (any field of [`DropSettings`]) the CUSUMs and a pending alarm are
//!   cleared, the baseline is kept: it does not depend on the settings.
//!
//! # Keying
//!
//! One detector per brand/segment series, fed every answer of that series in (roughly) event-time
//! order. Answers out of order by a little cost nothing; an answer older than the newest seen
//! counts as a zero gap for the traffic rate (which errs on the quiet side: a higher threshold).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The evidence at or above which the baseline stops learning (see the module docs).
pub const FREEZE_AT: f64 = 0.25;

/// Mean hours in a month (365.25 days / 12 × 24).
pub const HOURS_PER_MONTH: f64 = 730.5;

/// Added to every threshold: `ARL₀ ≈ e^h / I` is an approximation, not a bound, so the
/// threshold aims at half the budget (`ln 2`), which the simulation measures.
const SAFETY: f64 = std::f64::consts::LN_2;

/// How many design drops the bank holds (`min_drop_points` × 1, 2, 3).
const BANK: usize = 3;

/// Floor on the baseline's variance of the answer value, so that a series of nothing but
/// promoters (variance 0) still gives finite steps.
const MIN_VARIANCE: f64 = 0.02;

/// Settings of the NPS-drop detector; the same for every series of a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DropSettings {
    /// The smallest drop worth an alarm, in NPS points (1..=50). Drops this size are detected
    /// as fast as the false-alarm budget allows; smaller ones slowly or not at all.
    pub min_drop_points: f64,
    /// False alarms allowed per 100 months of one stable series (> 0, at most 100).
    pub false_alarms_per_100_series_months: f64,
    /// Answers that only teach the baseline before any evidence is computed (at least 50).
    pub warmup_answers: u32,
    /// Memory of the baseline, in answers (at least `warmup_answers`).
    pub baseline_answers: u32,
    /// How long, in event-time minutes, the evidence stays at its alarm value (at least 1).
    pub alarm_hold_minutes: u32,
}

impl Default for DropSettings {
    fn default() -> Self {
        DropSettings {
            min_drop_points: 10.0,
            false_alarms_per_100_series_months: 1.0,
            warmup_answers: 400,
            baseline_answers: 50_000,
            alarm_hold_minutes: 60,
        }
    }
}

/// Why [`DropSettings`] were refused.
#[derive(Clone, Debug, PartialEq)]
pub enum DropSettingsError {
    MinDropPoints(f64),
    FalseAlarmBudget(f64),
    WarmupAnswers(u32),
    BaselineAnswers { baseline: u32, warmup: u32 },
    AlarmHold(u32),
}

impl fmt::Display for DropSettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropSettingsError::MinDropPoints(v) => {
                write!(f, "min_drop_points = {v}: expected 1 to 50 NPS points")
            }
            DropSettingsError::FalseAlarmBudget(v) => write!(
                f,
                "false_alarms_per_100_series_months = {v}: expected more than 0, at most 100"
            ),
            DropSettingsError::WarmupAnswers(v) => {
                write!(f, "warmup_answers = {v}: expected at least 50")
            }
            DropSettingsError::BaselineAnswers { baseline, warmup } => write!(
                f,
                "baseline_answers = {baseline}: expected at least warmup_answers ({warmup})"
            ),
            DropSettingsError::AlarmHold(v) => {
                write!(f, "alarm_hold_minutes = {v}: expected at least 1")
            }
        }
    }
}

impl std::error::Error for DropSettingsError {}

impl DropSettings {
    /// Validated settings; the fields not given take their defaults.
    pub fn new(
        min_drop_points: f64,
        false_alarms_per_100_series_months: f64,
    ) -> Result<Self, DropSettingsError> {
        let s = DropSettings {
            min_drop_points,
            false_alarms_per_100_series_months,
            ..DropSettings::default()
        };
        s.validate()?;
        Ok(s)
    }

    /// Checks every field; call it on deserialized settings before use. (The detector does not
    /// panic on invalid settings, but its evidence then means nothing.)
    pub fn validate(&self) -> Result<(), DropSettingsError> {
        if !(1.0..=50.0).contains(&self.min_drop_points) {
            return Err(DropSettingsError::MinDropPoints(self.min_drop_points));
        }
        let budget = self.false_alarms_per_100_series_months;
        if !(budget > 0.0 && budget <= 100.0) {
            return Err(DropSettingsError::FalseAlarmBudget(budget));
        }
        if self.warmup_answers < 50 {
            return Err(DropSettingsError::WarmupAnswers(self.warmup_answers));
        }
        if self.baseline_answers < self.warmup_answers {
            return Err(DropSettingsError::BaselineAnswers {
                baseline: self.baseline_answers,
                warmup: self.warmup_answers,
            });
        }
        if self.alarm_hold_minutes == 0 {
            return Err(DropSettingsError::AlarmHold(self.alarm_hold_minutes));
        }
        Ok(())
    }

    /// A fingerprint of every field (FNV-1a), never 0: a detector that remembers another one
    /// clears its CUSUMs. Take it once and give it to [`DropDetector::observe_tagged`]: over
    /// thirty dependent multiplies are worth not repeating per answer.
    pub fn tag(&self) -> SettingsTag {
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u32::from(*b);
                h = h.wrapping_mul(0x0100_0193);
            }
        };
        eat(&self.min_drop_points.to_bits().to_le_bytes());
        eat(&self.false_alarms_per_100_series_months.to_bits().to_le_bytes());
        eat(&self.warmup_answers.to_le_bytes());
        eat(&self.baseline_answers.to_le_bytes());
        eat(&self.alarm_hold_minutes.to_le_bytes());
        SettingsTag(h.max(1))
    }

    /// The mean number of answers between false alarms that the budget allows a series with this
    /// many answers an hour: its answers in `100 / budget` months (at least 1,000).
    pub fn answers_between_false_alarms(&self, answers_per_hour: f64) -> f64 {
        let months = 100.0 / self.false_alarms_per_100_series_months;
        (answers_per_hour * HOURS_PER_MONTH * months).max(1_000.0)
    }

    /// The design drops of the bank, as shifts of the mean answer value (NPS / 100).
    fn design_drop(&self, j: usize) -> f64 {
        self.min_drop_points / 100.0 * (j + 1) as f64
    }
}

/// Threshold of a CUSUM whose alternative is `information` nats per answer away from the baseline,
/// for a mean of `arl` answers between false alarms, given `ln(arl · information)`, with the
/// bank's union bound: a CUSUM restarted at 0 crosses `h` about once in `e^h / information`
/// answers of stable traffic.
fn threshold_of_ln(ln_arl_information: f64) -> f64 {
    (ln_arl_information + LN_BANK + SAFETY).max(LOWEST_THRESHOLD)
}

/// ln(BANK), and ln(j + 1) for each design j: constants, where the hot path would otherwise take
/// a logarithm of a constant several times per answer.
const LN_BANK: f64 = 1.098_612_288_668_109_8;
const LN_DESIGN_MULTIPLE: [f64; BANK] = [0.0, std::f64::consts::LN_2, 1.098_612_288_668_109_8];

/// The fingerprint of a [`DropSettings`] ([`DropSettings::tag`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingsTag(u32);

/// The lowest threshold [`threshold_of_ln`] gives: CUSUMs all below it cannot be at an alarm.
const LOWEST_THRESHOLD: f64 = 1.0 + LN_BANK + SAFETY;

/// Each CUSUM's threshold `h_j`: [`threshold_of_ln`] of `ln(arl · δ_j² / (2σ̂²))`, which is
/// `ln(scale / σ̂²) + 2 ln(j + 1)` for `scale = arl · δ₁² / 2` (design drop j is j + 1 times the
/// first): one logarithm for the whole bank.
fn thresholds(scale: f64, variance: f64) -> [f64; BANK] {
    let common = (scale / variance).ln();
    std::array::from_fn(|j| threshold_of_ln(common + 2.0 * LN_DESIGN_MULTIPLE[j]))
}

/// What one answer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not an NPS value (only −1, 0 and 1 are): ignored.
    Ignored,
    /// Taught the baseline during the warm-up; the evidence is 0.
    WarmingUp,
    /// Counted; no alarm.
    Watching,
    /// This answer took the evidence to 1 or more.
    Alarm,
    /// An alarm is being held; the answer was not used.
    Holding,
}

/// Drop evidence of one series. Small (`size_of` is 72 bytes) and cheap to clone; serialize it
/// to checkpoint it, and a restored detector continues exactly where the original was.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DropDetector {
    /// Answers in the baseline, up to `baseline_answers`.
    n: u32,
    /// Gaps between answers seen (for the traffic rate), up to `baseline_answers`.
    gaps: u32,
    /// Baseline mean of the answer value (NPS / 100).
    mean: f64,
    /// Baseline share of non-passive answers (mean of the squared value).
    spread: f64,
    /// Mean gap between answers, milliseconds.
    gap_ms: f64,
    /// Newest answer time seen, milliseconds; meaningful once an answer was seen.
    last_at_ms: i64,
    /// The CUSUMs, one per design drop.
    sums: [f32; BANK],
    /// Evidence at the alarm while it is held, 0 otherwise.
    alarm_evidence: f32,
    /// When the held alarm was raised.
    alarm_at_ms: i64,
    /// Fingerprint of the settings last used; 0 before the first answer.
    settings_tag: u32,
    /// Whether any answer was seen (`last_at_ms` is meaningful).
    seen: bool,
}

impl DropDetector {
    pub fn new() -> Self {
        DropDetector::default()
    }

    /// Counts one answer: `nps_value` is +1 (promoter), 0 (passive) or −1 (detractor); other
    /// values are ignored. `occurred_at_ms` is the answer's event time.
    pub fn observe(&mut self, nps_value: i8, occurred_at_ms: i64, settings: &DropSettings) -> Step {
        self.observe_tagged(nps_value, occurred_at_ms, settings, settings.tag())
    }

    /// [`observe`](Self::observe) with the settings' [`tag`](DropSettings::tag) taken already.
    pub fn observe_tagged(
        &mut self,
        nps_value: i8,
        occurred_at_ms: i64,
        settings: &DropSettings,
        tag: SettingsTag,
    ) -> Step {
        let x = match nps_value {
            -1 => -1.0,
            0 => 0.0,
            1 => 1.0,
            _ => return Step::Ignored,
        };
        let SettingsTag(tag) = tag;
        if tag != self.settings_tag {
            self.sums = [0.0; BANK];
            self.alarm_evidence = 0.0;
            self.settings_tag = tag;
        }
        self.learn_rate(occurred_at_ms, settings);

        if self.alarm_evidence > 0.0 {
            let hold_ms = i64::from(settings.alarm_hold_minutes) * 60_000;
            if occurred_at_ms.saturating_sub(self.alarm_at_ms) < hold_ms {
                return Step::Holding;
            }
            self.sums = [0.0; BANK];
            self.alarm_evidence = 0.0;
            self.n = 0;
            self.mean = 0.0;
            self.spread = 0.0;
        }

        if self.n < settings.warmup_answers {
            self.learn(x, settings);
            return Step::WarmingUp;
        }

        // This runs for every NPS answer: the logarithms and the exponential shared by the
        // bank's three CUSUMs are taken once (design drop j is j+1 times the first).
        let variance = self.variance();
        let scale = self.threshold_scale(settings);
        let h = thresholds(scale, variance);
        let before = self.over_thresholds(&h);
        let (p, d) = self.shares();
        let a = (1.0 - p - d).max(0.0);
        let n = f64::from(self.n.max(1));
        let first_up = (settings.design_drop(0) / variance).exp();
        let mut up = 1.0;
        for (j, (sum, h)) in self.sums.iter_mut().zip(h).enumerate() {
            let delta = settings.design_drop(j);
            let lambda = delta / variance;
            up *= first_up; // e^λ, λ being (j+1) times the first design's
                            // ψ(λ) = λμ̂ + ln(p·e^−λ + a + d·e^λ): the baseline's cumulant generating function of
                            // μ̂ − x, exact for a three-valued answer.
            let psi = lambda * self.mean + (p / up + a + d * up).ln();
            let margin = h * variance / (delta * n);
            let step = lambda * (self.mean - margin - x) - psi;
            *sum = (f64::from(*sum) + step).max(0.0) as f32;
        }
        // The baseline may learn from this answer: the thresholds move with its variance.
        let h = if before < FREEZE_AT {
            self.learn(x, settings);
            // No threshold is below the lowest: CUSUMs under it need no new ones to say "no alarm".
            if self.sums.iter().all(|&s| f64::from(s) < LOWEST_THRESHOLD) {
                return Step::Watching;
            }
            thresholds(scale, self.variance())
        } else {
            h
        };
        let evidence = self.over_thresholds(&h);
        if evidence >= 1.0 {
            self.alarm_evidence = evidence as f32;
            self.alarm_at_ms = occurred_at_ms;
            return Step::Alarm;
        }
        Step::Watching
    }

    /// The evidence of a drop, scaled so that the alarm is at 1.0: 0 during the warm-up, the
    /// alarm value (≥ 1) while an alarm is held, else the largest CUSUM over its threshold.
    /// `settings` must be those given to [`observe`](Self::observe).
    pub fn evidence(&self, settings: &DropSettings) -> f64 {
        if self.alarm_evidence > 0.0 {
            return f64::from(self.alarm_evidence);
        }
        if self.n < settings.warmup_answers {
            return 0.0;
        }
        self.evidence_now(settings)
    }

    /// max_j S_j / h_j, ignoring the warm-up and a held alarm.
    fn evidence_now(&self, settings: &DropSettings) -> f64 {
        let h = thresholds(self.threshold_scale(settings), self.variance());
        self.over_thresholds(&h)
    }

    /// `arl · δ₁² / 2`, for `arl` the answers between false alarms at the learned rate and `δ₁`
    /// the first design drop: what [`thresholds`] takes apart from the variance.
    fn threshold_scale(&self, settings: &DropSettings) -> f64 {
        let drop = settings.design_drop(0);
        settings.answers_between_false_alarms(self.rate_or_high()) * drop * drop / 2.0
    }

    /// max_j S_j / h_j.
    fn over_thresholds(&self, h: &[f64; BANK]) -> f64 {
        self.sums.iter().zip(h).map(|(s, h)| f64::from(*s) / h).fold(0.0, f64::max)
    }

    /// Whether an alarm is being held.
    pub fn alarmed(&self) -> bool {
        self.alarm_evidence > 0.0
    }

    /// Answers in the baseline (0 right after an alarm's hold ends).
    pub fn baseline_answers(&self) -> u32 {
        self.n
    }

    /// The baseline's NPS, −100..100 (0 before any answer).
    pub fn baseline_nps(&self) -> f64 {
        self.mean * 100.0
    }

    /// The series' traffic as learned, in answers per hour (0 before two answers).
    pub fn answers_per_hour(&self) -> f64 {
        if self.gaps == 0 {
            return 0.0;
        }
        3_600_000.0 / self.gap_ms.max(1.0)
    }

    /// The learned rate, or one answer a second before any gap is known (a high threshold).
    fn rate_or_high(&self) -> f64 {
        if self.gaps == 0 {
            3_600.0
        } else {
            self.answers_per_hour()
        }
    }

    fn variance(&self) -> f64 {
        (self.spread - self.mean * self.mean).max(MIN_VARIANCE)
    }

    /// (promoter share, detractor share) of the baseline.
    fn shares(&self) -> (f64, f64) {
        let p = ((self.spread + self.mean) / 2.0).clamp(0.0, 1.0);
        let d = ((self.spread - self.mean) / 2.0).clamp(0.0, 1.0);
        (p, d)
    }

    fn learn(&mut self, x: f64, settings: &DropSettings) {
        if self.n < settings.baseline_answers {
            self.n += 1;
        }
        let w = 1.0 / f64::from(self.n.max(1));
        self.mean += (x - self.mean) * w;
        self.spread += (x * x - self.spread) * w;
    }

    fn learn_rate(&mut self, at_ms: i64, settings: &DropSettings) {
        if !self.seen {
            self.seen = true;
            self.last_at_ms = at_ms;
            return;
        }
        let gap = at_ms.saturating_sub(self.last_at_ms).max(0) as f64;
        if self.gaps < settings.baseline_answers {
            self.gaps += 1;
        }
        self.gap_ms += (gap - self.gap_ms) / f64::from(self.gaps.max(1));
        self.last_at_ms = self.last_at_ms.max(at_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logarithm_constants_are_the_logarithms() {
        assert_eq!(LN_BANK, (BANK as f64).ln());
        for (j, ln) in LN_DESIGN_MULTIPLE.iter().enumerate() {
            assert_eq!(*ln, ((j + 1) as f64).ln(), "design {j}");
        }
    }

    /// One logarithm for the bank gives each threshold as its definition does:
    /// `ln(arl) + ln(δ_j² / (2σ̂²))` through `threshold_of_ln`.
    #[test]
    fn the_bank_thresholds_match_their_definition() {
        let settings = DropSettings::default();
        for (rate, variance) in [(3_600.0, 0.5), (2.0, 0.02), (40.0, 0.9), (0.01, 0.3)] {
            let arl = settings.answers_between_false_alarms(rate);
            let drop = settings.design_drop(0);
            let got = thresholds(arl * drop * drop / 2.0, variance);
            for (j, h) in got.iter().enumerate() {
                let delta = settings.design_drop(j);
                let want = threshold_of_ln(arl.ln() + (delta * delta / (2.0 * variance)).ln());
                assert!(
                    (h - want).abs() < 1e-9,
                    "design {j} at {rate}/h, {variance}: {h} vs {want}"
                );
            }
        }
    }
}
