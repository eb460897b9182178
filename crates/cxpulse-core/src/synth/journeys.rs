//! Customer journeys for the demo's story: named customers of each brand/segment answer NPS, buy
//! (some again soon after) and churn, and one brand's detractors churn far more often than its
//! promoters, while elsewhere churn does not depend on the answer. A churn follows its customer's
//! answer a few events later, in the slot of a lifecycle event, so the event mix keeps its shares.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::Rng;

/// The brand whose detractors churn: the demo's churn-by-NPS story.
pub const CHURNING_BRAND: usize = 2; // initech
/// Customers per brand/segment: enough that most answers come from customers who answered none
/// before in the window, few enough that some buy twice.
const POOL: u32 = 50_000;
/// Churn chance after an answer, by category (promoter, passive, detractor): the story brand's,
/// and everyone else's.
const STORY_CHURN: [f64; 3] = [0.006, 0.015, 0.06];
const FLAT_CHURN: f64 = 0.006;
/// A purchase by one of the last buyers, rather than by anyone.
const REPEAT_SHARE: f64 = 0.35;
const RECENT_BUYERS: usize = 256;

#[derive(Default)]
struct Series {
    recent_buyers: VecDeque<u32>,
    churns_due: VecDeque<u32>,
}

/// The journeys of every brand/segment.
#[derive(Default)]
pub struct Journeys {
    series: [[Series; 3]; 4],
}

impl Journeys {
    /// Any customer of the pool.
    pub fn anyone(rng: &mut SmallRng) -> u32 {
        rng.gen_range(0..POOL)
    }

    /// The customer who gives an NPS answer of `category` (0 promoter, 1 passive, 2 detractor);
    /// whether they churn later is decided now.
    pub fn answer(
        &mut self,
        rng: &mut SmallRng,
        brand: usize,
        segment: usize,
        category: u8,
    ) -> u32 {
        let customer = Self::anyone(rng);
        let chance = if brand == CHURNING_BRAND {
            STORY_CHURN[usize::from(category.min(2))]
        } else {
            FLAT_CHURN
        };
        if rng.gen_bool(chance) {
            self.series[brand][segment].churns_due.push_back(customer);
        }
        customer
    }

    /// A churn owed by an earlier answer, if any.
    pub fn churn_due(&mut self, brand: usize, segment: usize) -> Option<u32> {
        self.series[brand][segment].churns_due.pop_front()
    }

    /// The customer of a purchase: now and then one of the last buyers again.
    pub fn buyer(&mut self, rng: &mut SmallRng, brand: usize, segment: usize) -> u32 {
        let series = &mut self.series[brand][segment];
        let again = !series.recent_buyers.is_empty() && rng.gen_bool(REPEAT_SHARE);
        let customer = match again {
            true => series.recent_buyers[rng.gen_range(0..series.recent_buyers.len())],
            false => Self::anyone(rng),
        };
        if series.recent_buyers.len() >= RECENT_BUYERS {
            series.recent_buyers.pop_front();
        }
        series.recent_buyers.push_back(customer);
        customer
    }
}
