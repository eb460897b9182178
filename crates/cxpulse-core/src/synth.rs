//! Synthetic schema-1 events for the demo, `cxpulse produce`, tests and benchmarks: several brands
//! and segments, a realistic mix of surveys and lifecycle events, and one brand whose NPS dips.
//! Deterministic for a given seed; the caller supplies the time.
//!
//! Customers come and go at realistic daily rates of the active base (churn 0.2 % a day), paced
//! by event time rather than by the event rate: however fast events are produced, churn stays
//! well under 1 % a day, as in a real subscription business.
//!
//! NPS categories are dealt per brand/segment like cards from a shuffled deck of 20 in the brand's
//! mix, so any run of answers holds close to that mix: a healthy brand's score never wanders
//! across a significance line by chance and pages nobody in the demo, while every single answer
//! still looks random.
//!
//! With `journeys` on (the demo), answers and purchases name customers of each brand/segment and
//! one brand's detractors churn visibly more ([`journeys`]).

mod journeys;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::event::Survey;

pub const BRANDS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
pub const SEGMENTS: [&str; 3] = ["smb", "mid", "enterprise"];

#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub seed: u64,
    /// Prefix of every `event_id`, so that separate runs never collide in dedup.
    pub run_id: String,
    /// The brand whose NPS falls after `dip_after_ms` of event time from the first event.
    pub dip_brand: Option<String>,
    pub dip_after_ms: i64,
    /// Share of messages that are deliberately malformed (for the dead-letter path).
    pub invalid_ratio: f64,
    /// Traffic as `cxpulse gateway` forwards it from survey tools: about 80 % answers, each with
    /// a `response_id` and a `customer_id`, about 5 % of them corrections of a recent answer of
    /// the same brand/segment, and 20 % lifecycle events. Off: the plain mix, unchanged.
    pub gateway_shape: bool,
    /// The plain mix with named customers: NPS answers carry a `customer_id` and a
    /// `response_id`, purchases come from the same customers (some buying again), and initech's
    /// detractors churn far more than its promoters. The active bases are ten times larger, so
    /// those churns stay a realistic share of them.
    pub journeys: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 7,
            run_id: "synth".into(),
            dip_brand: Some("globex".into()),
            dip_after_ms: 60_000,
            invalid_ratio: 0.0,
            gateway_shape: false,
            journeys: false,
        }
    }
}

/// Lifecycle actions that move the active customer count, each with its share of the active base
/// per day and its effect on that count.
const BASE_MOVES: [(&str, f64, f64); 3] =
    [("churn", 0.002, -1.0), ("signup", 0.0025, 1.0), ("reactivation", 0.0002, 1.0)];
const DAY_MS: f64 = 86_400_000.0;

/// Gateway-shaped traffic: the share of events that are answers, the share of answers that
/// correct a recent one, and how many recent answers per brand/segment a correction picks from.
const GATEWAY_ANSWER_SHARE: f64 = 0.8;
const GATEWAY_CORRECTION_SHARE: f64 = 0.05;
const GATEWAY_RECENT: usize = 256;

/// One brand/segment's customers: how many are active, and the moves owed since the last event.
#[derive(Clone, Copy, Default)]
struct Customers {
    active: f64,
    last_ms: Option<i64>,
    owed: [f64; BASE_MOVES.len()],
}

pub struct Synth {
    config: SynthConfig,
    rng: SmallRng,
    seq: u64,
    first_ms: Option<i64>,
    base_sent: [[bool; 3]; 4],
    customers: [[Customers; 3]; 4],
    nps_decks: [[NpsDeck; 3]; 4],
    /// Gateway shape only: recent answers per brand/segment, for corrections to re-use.
    recent_answers: [[std::collections::VecDeque<RecentAnswer>; 3]; 4],
    journeys: journeys::Journeys,
}

/// An answer a later correction can replace: its ids and which survey it answered.
#[derive(Clone)]
struct RecentAnswer {
    response_id: String,
    customer: u32,
    survey: SurveyKind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SurveyKind {
    Nps,
    Csat,
    Ces,
}

/// NPS categories still to deal for one brand/segment (0 promoter, 1 passive, 2 detractor), and
/// whether they are the dipping mix.
#[derive(Clone, Default)]
struct NpsDeck {
    cards: Vec<u8>,
    dipping: bool,
}

/// Promoters, passives and detractors in a deck of 20: healthy NPS 40, dipping NPS -80.
const HEALTHY_DECK: [usize; 3] = [11, 6, 3];
const DIPPING_DECK: [usize; 3] = [1, 2, 17];

/// A lifecycle event of customer `c-{customer}`, after the common fields.
fn lifecycle(common: &str, action: &str, customer: u32) -> String {
    format!(
        r#"{{{common},"type":"customer_lifecycle","action":"{action}","customer_id":"c-{customer}"}}"#
    )
}

/// What one message drew before its kind is chosen: the common JSON fields, the event id, the
/// brand and segment indexes, the roll that picks the kind, and whether the brand dips.
#[derive(Clone, Copy)]
struct Draw<'a> {
    common: &'a str,
    id: &'a str,
    b: usize,
    s: usize,
    roll: f64,
    dipping: bool,
}

/// One generated message: its Kafka key (`brand/segment`) and JSON payload.
#[derive(Clone, Debug)]
pub struct SynthMessage {
    pub key: String,
    pub payload: String,
}

impl Synth {
    pub fn new(config: SynthConfig) -> Self {
        let rng = SmallRng::seed_from_u64(config.seed);
        Synth {
            config,
            rng,
            seq: 0,
            first_ms: None,
            base_sent: [[false; 3]; 4],
            customers: [[Customers::default(); 3]; 4],
            nps_decks: Default::default(),
            recent_answers: Default::default(),
            journeys: journeys::Journeys::default(),
        }
    }

    /// The next message, with `occurred_at = now_ms`.
    pub fn next_message(&mut self, now_ms: i64) -> SynthMessage {
        self.seq += 1;
        let first = *self.first_ms.get_or_insert(now_ms);
        let b = self.rng.gen_range(0..BRANDS.len());
        let s = self.rng.gen_range(0..SEGMENTS.len());
        let (brand, segment) = (BRANDS[b], SEGMENTS[s]);
        let key = format!("{brand}/{segment}");
        let id = format!("{}-{}", self.config.run_id, self.seq);
        if self.config.invalid_ratio > 0.0 && self.rng.gen_bool(self.config.invalid_ratio.min(1.0))
        {
            return SynthMessage { key, payload: self.invalid_payload(&id, brand, now_ms) };
        }
        let common = format!(
            r#""event_id":"{id}","occurred_at":{now_ms},"brand":"{brand}","segment":"{segment}""#
        );
        if !self.base_sent[b][s] {
            self.base_sent[b][s] = true;
            let scale = if self.config.journeys { 10 } else { 1 };
            let active = scale * (1_000 * (b as u64 + 1) + 250 * s as u64);
            self.customers[b][s] =
                Customers { active: active as f64, last_ms: Some(now_ms), ..Customers::default() };
            return SynthMessage {
                key,
                payload: format!(
                    r#"{{{common},"type":"customer_base","active_customers":{active}}}"#
                ),
            };
        }
        let dipping = self.config.dip_brand.as_deref() == Some(brand)
            && now_ms - first >= self.config.dip_after_ms;
        let base_move = self.customers[b][s].move_due(now_ms);
        let roll: f64 = self.rng.gen();
        if self.config.gateway_shape && base_move.is_none() {
            return SynthMessage {
                key,
                payload: self.gateway_event(&Draw {
                    common: &common,
                    id: &id,
                    b,
                    s,
                    roll,
                    dipping,
                }),
            };
        }
        if self.config.journeys {
            return SynthMessage {
                key,
                payload: self.journey_event(
                    &Draw { common: &common, id: &id, b, s, roll, dipping },
                    base_move,
                ),
            };
        }
        let payload = if let Some(action) = base_move {
            lifecycle(&common, action, self.rng.gen_range(0..1_000_000))
        } else if roll < 0.5 {
            let score = self.nps_score(b, s, dipping);
            format!(r#"{{{common},"type":"survey_response","survey":"nps","score":{score}}}"#)
        } else if roll < 0.65 {
            let score = self.rng.gen_range(1..=5);
            let score = if self.rng.gen_bool(0.6) { score.max(4) } else { score };
            format!(r#"{{{common},"type":"survey_response","survey":"csat","score":{score}}}"#)
        } else if roll < 0.75 {
            let score = self.rng.gen_range(1..=7);
            format!(r#"{{{common},"type":"survey_response","survey":"ces","score":{score}}}"#)
        } else {
            // Moves of the customer base come from `move_due`, at their daily rates.
            let action = if self.rng.gen_bool(0.6) { "purchase" } else { "renewal" };
            lifecycle(&common, action, self.rng.gen_range(0..1_000_000))
        };
        SynthMessage { key, payload }
    }

    /// The plain mix with named customers ([`SynthConfig::journeys`]).
    fn journey_event(&mut self, draw: &Draw<'_>, base_move: Option<&'static str>) -> String {
        let Draw { common, id, b, s, roll, dipping } = *draw;
        if let Some(action) = base_move {
            return lifecycle(common, action, journeys::Journeys::anyone(&mut self.rng));
        }
        if roll < 0.5 {
            let score = self.nps_score(b, s, dipping);
            let category = Survey::nps_category(score) as u8;
            let customer = self.journeys.answer(&mut self.rng, b, s, category);
            return format!(
                r#"{{{common},"type":"survey_response","survey":"nps","score":{score},"response_id":"{id}-r","customer_id":"c-{customer}"}}"#
            );
        }
        if roll < 0.75 {
            // CSAT and CES as in the plain mix.
            let (survey, score) = if roll < 0.65 {
                let score = self.rng.gen_range(1..=5);
                ("csat", if self.rng.gen_bool(0.6) { score.max(4) } else { score })
            } else {
                ("ces", self.rng.gen_range(1..=7))
            };
            return format!(
                r#"{{{common},"type":"survey_response","survey":"{survey}","score":{score}}}"#
            );
        }
        if let Some(customer) = self.journeys.churn_due(b, s) {
            return lifecycle(common, "churn", customer);
        }
        if self.rng.gen_bool(0.6) {
            let customer = self.journeys.buyer(&mut self.rng, b, s);
            lifecycle(common, "purchase", customer)
        } else {
            lifecycle(common, "renewal", journeys::Journeys::anyone(&mut self.rng))
        }
    }

    /// One gateway-shaped event after the base moves: the plain mix's answer kinds scaled up to
    /// [`GATEWAY_ANSWER_SHARE`] (so NPS, CSAT and CES keep their proportions), each answer with
    /// both ids; the rest lifecycle events as in the plain mix.
    fn gateway_event(&mut self, draw: &Draw<'_>) -> String {
        let Draw { common, id, b, s, roll, dipping } = *draw;
        // The plain mix has 75 % answers: below 0.75 the same thresholds pick the same kinds.
        let roll = roll * 0.75 / GATEWAY_ANSWER_SHARE;
        if roll >= 0.75 {
            let action = if self.rng.gen_bool(0.6) { "purchase" } else { "renewal" };
            return lifecycle(common, action, self.rng.gen_range(0..1_000_000));
        }
        let recent = &self.recent_answers[b][s];
        let corrected = if !recent.is_empty() && self.rng.gen_bool(GATEWAY_CORRECTION_SHARE) {
            recent.get(self.rng.gen_range(0..recent.len())).cloned()
        } else {
            None
        };
        let fresh = corrected.is_none();
        // A correction answers the same survey again, so the kinds keep their mix.
        let answer = corrected.unwrap_or_else(|| RecentAnswer {
            response_id: format!("{id}-r"),
            customer: self.rng.gen_range(0..1_000_000),
            survey: match roll {
                r if r < 0.5 => SurveyKind::Nps,
                r if r < 0.65 => SurveyKind::Csat,
                _ => SurveyKind::Ces,
            },
        });
        let (survey, score) = match answer.survey {
            SurveyKind::Nps => ("nps", self.nps_score(b, s, dipping)),
            SurveyKind::Csat => {
                let score = self.rng.gen_range(1..=5);
                ("csat", if self.rng.gen_bool(0.6) { score.max(4) } else { score })
            }
            SurveyKind::Ces => ("ces", self.rng.gen_range(1..=7)),
        };
        let payload = format!(
            r#"{{{common},"type":"survey_response","survey":"{survey}","score":{score},"response_id":"{}","customer_id":"c-{}"}}"#,
            answer.response_id, answer.customer
        );
        // Only first answers are remembered, so no answer is more likely to be corrected twice.
        let recent = &mut self.recent_answers[b][s];
        if fresh {
            if recent.len() >= GATEWAY_RECENT {
                recent.pop_front();
            }
            recent.push_back(answer);
        }
        payload
    }

    /// Healthy brands are mostly promoters (NPS 40); a dipping brand turns mostly detractor
    /// (NPS -80), a drop deep enough for the demo's one story.
    fn nps_score(&mut self, brand: usize, segment: usize, dipping: bool) -> u8 {
        let deck = &mut self.nps_decks[brand][segment];
        if deck.dipping != dipping {
            *deck = NpsDeck { cards: Vec::new(), dipping };
        }
        if deck.cards.is_empty() {
            let mix = if dipping { DIPPING_DECK } else { HEALTHY_DECK };
            for (category, count) in mix.into_iter().enumerate() {
                deck.cards.resize(deck.cards.len() + count, category as u8);
            }
            deck.cards.shuffle(&mut self.rng);
        }
        match deck.cards.pop() {
            Some(0) => self.rng.gen_range(9..=10),
            Some(1) => self.rng.gen_range(7..=8),
            _ => self.rng.gen_range(0..=6),
        }
    }

    fn invalid_payload(&mut self, id: &str, brand: &str, now_ms: i64) -> String {
        match self.rng.gen_range(0..4) {
            0 => format!(
                r#"{{"event_id":"{id}","type":"survey_response","occurred_at":{now_ms},"brand":"{brand}","survey":"nps","score":11}}"#
            ),
            1 => format!(r#"{{"event_id":"{id}","type":"survey_response","occurred_at":{now_ms}"#),
            2 => format!(
                r#"{{"event_id":"{id}","type":"refund","occurred_at":{now_ms},"brand":"{brand}"}}"#
            ),
            _ => format!(
                r#"{{"event_id":"{id}","type":"customer_lifecycle","occurred_at":{now_ms},"brand":"{brand}","action":"churn"}}"#
            ),
        }
    }
}

impl Customers {
    /// The base move owed by now, if any: each kind accrues its daily share of the active base
    /// over the event time since the last call, and one whole owed move is paid per event.
    fn move_due(&mut self, now_ms: i64) -> Option<&'static str> {
        let elapsed = self.last_ms.map_or(0, |last| (now_ms - last).max(0)) as f64;
        self.last_ms = Some(now_ms);
        for (owed, (_, per_day, _)) in self.owed.iter_mut().zip(BASE_MOVES) {
            *owed += self.active * per_day * elapsed / DAY_MS;
        }
        let (i, (action, _, step)) = BASE_MOVES
            .iter()
            .enumerate()
            .find(|(i, _)| self.owed[*i] >= 1.0)
            .map(|(i, m)| (i, *m))?;
        self.owed[i] -= 1.0;
        self.active = (self.active + step).max(0.0);
        Some(action)
    }
}

/// Payloads of one partition back to back in one buffer, as a fetch response holds them: how the
/// worker hands messages to the engine (`Engine::process_batch`), for benchmarks to do the same.
pub struct FetchRun {
    pub partition: i32,
    buffer: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl FetchRun {
    fn new(partition: i32) -> Self {
        FetchRun { partition, buffer: Vec::new(), spans: Vec::new() }
    }

    fn push(&mut self, payload: &[u8]) {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(payload);
        self.spans.push((start, self.buffer.len()));
    }

    pub fn payloads(&self) -> Vec<&[u8]> {
        self.spans.iter().map(|&(a, b)| &self.buffer[a..b]).collect()
    }
}

/// `count` messages from `synth`, the i-th stamped `time_of(i)`, in runs of up to `run_len`
/// messages of the partition `partition_of(i, message)` picks among `partitions`.
pub fn fetch_runs(
    synth: &mut Synth,
    count: u64,
    partitions: usize,
    run_len: usize,
    time_of: impl Fn(u64) -> i64,
    partition_of: impl Fn(u64, &SynthMessage) -> usize,
) -> Vec<FetchRun> {
    fetch_runs_of(count, partitions, run_len, |i| synth.next_message(time_of(i)), partition_of)
}

/// The messages `next(i)` makes, with producers' retries: message i goes to lane
/// `i % lanes` (a partition, when written round robin), and one in `every` is that lane's
/// previous message again, as a producer's retry lands where its first copy did.
pub fn with_retries(
    lanes: usize,
    every: u64,
    mut next: impl FnMut(u64) -> SynthMessage,
) -> impl FnMut(u64) -> SynthMessage {
    let mut last_in_lane: Vec<Option<SynthMessage>> = vec![None; lanes.max(1)];
    let every = every.max(1);
    move |i| {
        let lane = (i % last_in_lane.len() as u64) as usize;
        match &last_in_lane[lane] {
            Some(sent) if i % every == every - 1 => sent.clone(),
            _ => {
                let message = next(i);
                last_in_lane[lane] = Some(message.clone());
                message
            }
        }
    }
}

/// [`fetch_runs`] of the messages `message_of(i)` makes, for i in `0..count`.
pub fn fetch_runs_of(
    count: u64,
    partitions: usize,
    run_len: usize,
    mut message_of: impl FnMut(u64) -> SynthMessage,
    partition_of: impl Fn(u64, &SynthMessage) -> usize,
) -> Vec<FetchRun> {
    let mut pending: Vec<FetchRun> = (0..partitions).map(|p| FetchRun::new(p as i32)).collect();
    let mut runs = Vec::new();
    for i in 0..count {
        let message = message_of(i);
        let Some(run) = pending.get_mut(partition_of(i, &message)) else { continue };
        run.push(message.payload.as_bytes());
        if run.spans.len() >= run_len {
            let fresh = FetchRun::new(run.partition);
            runs.push(std::mem::replace(run, fresh));
        }
    }
    runs.extend(pending.into_iter().filter(|run| !run.spans.is_empty()));
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_event;

    #[test]
    fn a_retry_repeats_its_lanes_previous_message_and_nothing_else_repeats() {
        let mut synth = Synth::new(SynthConfig { gateway_shape: true, ..SynthConfig::default() });
        let mut next = with_retries(8, 10, |i| synth.next_message(1_800_000_000_000 + i as i64));
        let messages: Vec<SynthMessage> = (0..200).map(&mut next).collect();
        for (i, message) in messages.iter().enumerate() {
            let earlier = messages[..i].iter().position(|m| m.payload == message.payload);
            if i % 10 == 9 && i >= 8 {
                assert_eq!(earlier, Some(i - 8), "message {i} retries message {}", i - 8);
            } else {
                assert_eq!(earlier, None, "message {i} is new");
            }
        }
    }

    /// The demo's story, counted by an engine: six hours of journeys at the demo's history rate.
    /// initech's detractors churn several times as often as its promoters; elsewhere churn does
    /// not depend on the answer; some purchasers buy again.
    #[test]
    fn journeys_make_initechs_detractors_churn_and_some_customers_buy_again() {
        use crate::{ClockMode, Engine, EngineConfig, SourcePartition};
        let mut engine =
            Engine::new(EngineConfig { clock: ClockMode::Event, ..EngineConfig::default() })
                .expect("engine");
        let mut synth =
            Synth::new(SynthConfig { journeys: true, dip_brand: None, ..SynthConfig::default() });
        let (start, events) = (1_800_000_000_000i64, 400_000i64);
        for i in 0..events {
            let at = start + i * 6 * 3_600_000 / events;
            let message = synth.next_message(at);
            let partition = SourcePartition { topic: 0, partition: 0 };
            engine.process(partition, message.payload.as_bytes(), at);
        }
        let snapshot = engine.snapshot(start + 6 * 3_600_000);
        let day = 1; // the 24h window: the whole run
        let ratio = |brand: &str, category: usize| {
            let (mut churned, mut respondents) = (0u32, 0u32);
            for series in snapshot.series.iter().filter(|s| &*s.brand == brand) {
                churned += series.customers[day].churned_by_nps[category];
                respondents += series.customers[day].nps_respondents[category];
            }
            f64::from(churned) / f64::from(respondents.max(1))
        };
        let (promoters, detractors) = (ratio("initech", 0), ratio("initech", 2));
        eprintln!(
            "initech churn per respondent: promoters {promoters:.4}, detractors {detractors:.4}"
        );
        assert!(
            detractors > 4.0 * promoters && detractors > 0.03,
            "initech: {promoters} vs {detractors}"
        );
        let (promoters, detractors) = (ratio("acme", 0), ratio("acme", 2));
        assert!(
            detractors < 2.0 * promoters && promoters > 0.0,
            "acme: {promoters} vs {detractors}"
        );
        let (buyers, again): (u32, u32) = snapshot
            .series
            .iter()
            .map(|s| (s.customers[day].purchasers, s.customers[day].repeat_purchasers))
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        let share = f64::from(again) / f64::from(buyers.max(1));
        eprintln!(
            "acme: {:.4} / {:.4}; {again} of {buyers} bought again",
            ratio("acme", 0),
            ratio("acme", 2)
        );
        assert!((0.05..0.8).contains(&share), "{again} of {buyers} bought again");
    }

    #[test]
    fn generated_events_parse_and_invalid_ones_do_not() {
        let mut synth = Synth::new(SynthConfig { invalid_ratio: 0.1, ..SynthConfig::default() });
        let (mut valid, mut invalid) = (0, 0);
        for i in 0..2_000 {
            let message = synth.next_message(1_795_000_000_000 + i);
            match parse_event(message.payload.as_bytes()) {
                Ok(_) => valid += 1,
                Err(_) => invalid += 1,
            }
        }
        assert!(invalid > 100 && invalid < 300, "{invalid}");
        assert_eq!(valid + invalid, 2_000);
    }

    /// Any run of 100 NPS answers of one brand/segment is within a few points of its mix: NPS 40
    /// healthy, -80 once the dip has started.
    #[test]
    fn nps_answers_keep_close_to_their_mix() {
        let mut synth =
            Synth::new(SynthConfig { dip_after_ms: 1_000_000, ..SynthConfig::default() });
        let (mut healthy, mut dipping) = (Vec::new(), Vec::new());
        for i in 0..40_000i64 {
            let message = synth.next_message(1_795_000_000_000 + i * 50);
            if message.key != "globex/smb" || !message.payload.contains(r#""survey":"nps""#) {
                continue;
            }
            let Some(at) = message.payload.find(r#""score":"#) else { continue };
            let digits: String =
                message.payload[at + 8..].chars().take_while(|c| c.is_ascii_digit()).collect();
            let score: u8 = digits.parse().unwrap_or(99);
            let weight = match score {
                9..=10 => 1,
                7..=8 => 0,
                _ => -1,
            };
            if i * 50 < 1_000_000 {
                healthy.push(weight)
            } else {
                dipping.push(weight)
            }
        }
        for (answers, nps) in [(&healthy, 40), (&dipping, -80)] {
            assert!(answers.len() > 500, "{}", answers.len());
            for run in answers.windows(100) {
                let score: i32 = run.iter().sum();
                assert!((score - nps).abs() <= 12, "a run of 100 scored {score}, mix {nps}");
            }
        }
    }

    /// Gateway-shaped traffic: 80 % answers, each with both ids, 5 % of them corrections that
    /// re-use a recent `response_id` of their brand/segment under a new `event_id`; the answers
    /// keep the plain mix's NPS/CSAT/CES proportions (50:15:10).
    #[test]
    fn gateway_shape_has_its_shares_and_ids() {
        let mut synth = Synth::new(SynthConfig { gateway_shape: true, ..SynthConfig::default() });
        let field = |payload: &str, name: &str| -> Option<String> {
            let at = payload.find(&format!(r#""{name}":""#))? + name.len() + 4;
            payload[at..].split('"').next().map(str::to_string)
        };
        let (events, mut answers, mut lifecycle, mut corrections) = (20_000, 0, 0, 0);
        let mut kinds = [0u32; 3];
        let mut seen: std::collections::HashMap<String, String> = Default::default();
        let mut event_ids = std::collections::HashSet::new();
        for i in 0..events {
            let message = synth.next_message(1_795_000_000_000 + i * 50);
            let payload = &message.payload;
            assert!(parse_event(payload.as_bytes()).is_ok(), "{payload}");
            assert!(event_ids.insert(field(payload, "event_id")), "{payload}");
            if payload.contains(r#""type":"customer_lifecycle""#) {
                lifecycle += 1;
            }
            if !payload.contains(r#""type":"survey_response""#) {
                continue;
            }
            answers += 1;
            let response_id = field(payload, "response_id").unwrap_or_default();
            assert!(!response_id.is_empty(), "{payload}");
            assert!(field(payload, "customer_id").is_some_and(|c| !c.is_empty()), "{payload}");
            for (k, survey) in ["nps", "csat", "ces"].iter().enumerate() {
                if payload.contains(&format!(r#""survey":"{survey}""#)) {
                    kinds[k] += 1;
                }
            }
            if let Some(key) = seen.insert(response_id, message.key.clone()) {
                corrections += 1;
                assert_eq!(key, message.key, "a correction of another brand/segment: {payload}");
            }
        }
        let share = |n: u32, of: u32| f64::from(n) / f64::from(of);
        let events = events as u32;
        assert!((share(answers, events) - 0.8).abs() <= 0.03, "{answers} answers");
        assert!((share(lifecycle, events) - 0.2).abs() <= 0.03, "{lifecycle} lifecycle");
        assert!((share(corrections, answers) - 0.05).abs() <= 0.03, "{corrections} corrections");
        for (k, want) in [0.5 / 0.75, 0.15 / 0.75, 0.1 / 0.75].into_iter().enumerate() {
            assert!((share(kinds[k], answers) - want).abs() <= 0.03, "{kinds:?}");
        }
    }

    /// A day of events at a high rate: churns stay near 0.2 % of the base, whatever the rate.
    #[test]
    fn churn_follows_event_time_not_the_event_rate() {
        let mut synth = Synth::new(SynthConfig::default());
        let start = 1_795_000_000_000i64;
        let (mut churns, mut base) = (0u64, 0u64);
        let events = 200_000i64;
        for i in 0..events {
            let message = synth.next_message(start + i * 86_400_000 / events);
            if message.payload.contains(r#""action":"churn""#) {
                churns += 1;
            }
            if let Some(at) = message.payload.find(r#""active_customers":"#) {
                let digits: String =
                    message.payload[at + 19..].chars().take_while(|c| c.is_ascii_digit()).collect();
                base += digits.parse::<u64>().unwrap_or(0);
            }
        }
        let share = churns as f64 / base as f64;
        assert!(base > 20_000, "{base}");
        assert!(share > 0.001 && share < 0.003, "{churns} churns of {base}: {share}");
    }
}

/// UTC offsets of the producers in [`realistic_message`], in seconds: Europe, the US east coast,
/// India, UTC itself written as `Z`, and Japan.
const PRODUCER_OFFSETS_S: [i32; 5] = [3_600, -5 * 3_600, 5 * 3_600 + 1_800, 0, 9 * 3_600];

/// Fields a real producer adds that the schema ignores: the system that sent the event, the
/// respondent's locale, and the channel the survey went out on.
const PRODUCER_SOURCES: [&str; 3] = ["qualtrics", "zendesk", "web-app"];
const LOCALES: [&str; 4] = ["en-US", "de-DE", "fr-FR", "ja-JP"];
const CHANNELS: [&str; 3] = ["email", "in-app", "sms"];

/// The next message of `synth` as producers really write it, like the examples in
/// docs/events.md: `occurred_at` in RFC 3339 with milliseconds and the producer's UTC offset
/// instead of epoch milliseconds, and two or three fields the schema ignores, about 200 bytes in
/// all. [`Synth::next_message`]'s compact form (epoch milliseconds, known fields only) is the
/// shape the parser's fast path is built for, so throughput measured on it alone flatters.
/// Malformed messages (`invalid_ratio`) are passed through as they are.
pub fn realistic_message(synth: &mut Synth, now_ms: i64) -> SynthMessage {
    let mut message = synth.next_message(now_ms);
    let epoch_field = format!(r#""occurred_at":{now_ms},"#);
    let Some(at) = message.payload.find(&epoch_field) else { return message };
    if !message.payload.ends_with('}') {
        return message;
    }
    // A stream of its own, so the events are exactly `synth`'s, only written differently.
    let rng = &mut SmallRng::seed_from_u64(synth.config.seed ^ synth.seq.rotate_left(32));
    let offset_s = PRODUCER_OFFSETS_S[rng.gen_range(0..PRODUCER_OFFSETS_S.len())];
    let occurred_at = chrono::DateTime::from_timestamp_millis(now_ms)
        .zip(chrono::FixedOffset::east_opt(offset_s))
        .map(|(utc, offset)| {
            utc.with_timezone(&offset).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        });
    let Some(occurred_at) = occurred_at else { return message };
    message
        .payload
        .replace_range(at..at + epoch_field.len(), &format!(r#""occurred_at":"{occurred_at}","#));
    message.payload.pop();
    let source = PRODUCER_SOURCES[rng.gen_range(0..PRODUCER_SOURCES.len())];
    let locale = LOCALES[rng.gen_range(0..LOCALES.len())];
    message.payload += &format!(r#","source":"{source}","locale":"{locale}""#);
    if rng.gen_bool(0.5) {
        let channel = CHANNELS[rng.gen_range(0..CHANNELS.len())];
        message.payload += &format!(r#","channel":"{channel}""#);
    }
    message.payload.push('}');
    message
}

#[cfg(test)]
mod realistic_tests {
    use super::*;
    use crate::parse::{parse_event, parse_event_reference};

    /// The realistic form is the same event as the compact one, in the other shape.
    #[test]
    fn realistic_messages_are_the_compact_events_written_as_producers_do() {
        let (mut compact, mut realistic) =
            (Synth::new(SynthConfig::default()), Synth::new(SynthConfig::default()));
        let mut bytes = 0;
        let mut offsets = std::collections::BTreeSet::new();
        for i in 0..2_000 {
            let now_ms = 1_795_000_000_123 + i * 997;
            let plain = compact.next_message(now_ms);
            let real = realistic_message(&mut realistic, now_ms);
            // Same random stream up to the added fields: the same key and the same event.
            assert_eq!(plain.key, real.key);
            let (want, got) =
                (parse_event(plain.payload.as_bytes()), parse_event(real.payload.as_bytes()));
            assert_eq!(got, want, "{}", real.payload);
            assert_eq!(got, parse_event_reference(real.payload.as_bytes()));
            assert!(!real.payload.contains(&format!(":{now_ms}")), "{}", real.payload);
            assert!(real.payload.contains(r#""locale":""#), "{}", real.payload);
            let at = real.payload.find(r#""occurred_at":""#).unwrap() + 15;
            // `2026-11-18T20:06:41.120` and then the offset.
            offsets.insert(real.payload[at + 23..].split('"').next().unwrap_or("").to_string());
            bytes += real.payload.len();
        }
        let mean = bytes / 2_000;
        assert!((180..=230).contains(&mean), "mean size {mean} bytes");
        assert!(offsets.len() >= 4, "{offsets:?}");
    }
}
