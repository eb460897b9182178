//! The customer book against a naive model: the model keeps every accepted event in a list and
//! recomputes each window's counts from it. Random out-of-order streams over several series and
//! customers, with corrections, churns, clock moves, sweeps and checkpoint round trips (full and
//! incremental) must give exactly the model's counts; and the memory figure at a million.

use cxpulse_core::customers::{CustomerBook, CustomerCounts, CustomerEvent, Taken, Touch};
use cxpulse_core::event::NpsCategory;
use cxpulse_core::WindowSpec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const BASE_MS: i64 = 1_800_000_000_000;
const WINDOWS_MS: [i64; 2] = [60_000, 300_000];
const SERIES: u32 = 2;
const CUSTOMERS: u64 = 6;
const CATEGORIES: [NpsCategory; 3] =
    [NpsCategory::Promoter, NpsCategory::Passive, NpsCategory::Detractor];

fn windows() -> Vec<WindowSpec> {
    WINDOWS_MS.iter().map(|&ms| WindowSpec::new(ms).unwrap()).collect()
}

fn heads(windows: &[WindowSpec], now_ms: i64) -> Vec<i64> {
    windows.iter().map(|w| w.pane_of(now_ms)).collect()
}

fn customer_hash(customer: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&customer.to_le_bytes())
}

#[derive(Clone, Debug)]
enum Op {
    /// An event `back_ms` before the clock (never after it).
    Event {
        series: u32,
        customer: u64,
        back_ms: i64,
        kind: u8,
        category: usize,
        keyed: bool,
    },
    /// A correction of the `pick`-th answer sent with a response id, `forward_ms` later than its
    /// last version (at most the clock), with a new category.
    Correct {
        pick: usize,
        forward_ms: i64,
        category: usize,
    },
    Advance(i64),
    Maintain,
    /// A checkpoint (`full` or of the changes) and a restore from every segment so far.
    RoundTrip {
        full: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..SERIES, 0..CUSTOMERS, 0i64..400_000, 0u8..3, 0usize..3, any::<bool>()).prop_map(
            |(series, customer, back_ms, kind, category, keyed)| Op::Event {
                series, customer, back_ms, kind, category, keyed
            }
        ),
        3 => (any::<usize>(), 0i64..20_000, 0usize..3)
            .prop_map(|(pick, forward_ms, category)| Op::Correct { pick, forward_ms, category }),
        4 => (0i64..40_000).prop_map(Op::Advance),
        1 => Just(Op::Maintain),
        1 => any::<bool>().prop_map(|full| Op::RoundTrip { full }),
    ]
}

/// An accepted event as the model keeps it.
#[derive(Clone, Debug)]
struct Seen {
    series: u32,
    customer: u64,
    time: i64,
    what: What,
}

#[derive(Clone, Debug)]
enum What {
    Purchase,
    /// The answer's response id (if any) and category.
    Answer(Option<u64>, usize),
    /// The category decided when it was processed (3: unknown).
    Churn(usize),
    /// An answer a later version of the same response replaced.
    Replaced,
}

#[derive(Default)]
struct Model {
    /// Every accepted event in processing order.
    seen: Vec<Seen>,
    /// Per (series, customer): the index into `seen` where the current memory of it starts.
    epoch: std::collections::HashMap<(u32, u64), usize>,
}

impl Model {
    fn horizon(windows: &[WindowSpec], now_ms: i64) -> i64 {
        windows.iter().map(|w| (w.pane_of(now_ms) - 59) * w.step_ms).min().unwrap()
    }

    /// The customer's remembered events: those since its memory last started.
    fn remembered(&self, series: u32, customer: u64) -> impl Iterator<Item = &Seen> + '_ {
        let from = self.epoch.get(&(series, customer)).copied().unwrap_or(0);
        self.seen[from.min(self.seen.len())..]
            .iter()
            .filter(move |s| s.series == series && s.customer == customer)
    }

    /// The customer's answers, newest first (a later processed one first among equal times).
    fn answers(&self, series: u32, customer: u64) -> Vec<(i64, usize)> {
        let mut answers: Vec<(i64, usize, usize)> = self
            .remembered(series, customer)
            .enumerate()
            .filter_map(|(i, s)| match s.what {
                What::Answer(_, c) => Some((s.time, i, c)),
                _ => None,
            })
            .collect();
        answers.sort_by_key(|a| std::cmp::Reverse((a.0, a.1)));
        answers.into_iter().map(|(t, _, c)| (t, c)).collect()
    }

    /// Takes an event in as the spec says; whether it was accepted.
    fn apply(&mut self, windows: &[WindowSpec], now_ms: i64, mut event: Seen) -> bool {
        let horizon = Self::horizon(windows, now_ms);
        if event.time < horizon {
            return false;
        }
        let key = (event.series, event.customer);
        let newest = self
            .remembered(key.0, key.1)
            .filter(|s| matches!(s.what, What::Purchase | What::Answer(..)))
            .map(|s| s.time)
            .max();
        if newest.is_none_or(|t| t < horizon) {
            self.epoch.insert(key, self.seen.len());
        }
        match &mut event.what {
            What::Churn(category) => {
                // Of the two newest answers remembered, the newest at or before the churn.
                *category = self
                    .answers(key.0, key.1)
                    .into_iter()
                    .take(2)
                    .find(|(t, _)| *t <= event.time)
                    .map_or(3, |(_, c)| c);
            }
            What::Answer(Some(response), _) => {
                let (from, response) = (self.epoch[&key], *response);
                for s in &mut self.seen[from..] {
                    if (s.series, s.customer) == key
                        && matches!(s.what, What::Answer(Some(r), _) if r == response)
                    {
                        s.what = What::Replaced;
                    }
                }
            }
            _ => {}
        }
        self.seen.push(event);
        true
    }

    fn counts(&self, windows: &[WindowSpec], now_ms: i64, series: u32) -> Vec<CustomerCounts> {
        windows
            .iter()
            .map(|w| {
                let head = w.pane_of(now_ms);
                let inside = |t: i64| (head - 59..=head).contains(&w.pane_of(t));
                let mut counts = CustomerCounts::default();
                for customer in 0..CUSTOMERS {
                    let mine = || {
                        self.seen.iter().filter(|s| (s.series, s.customer) == (series, customer))
                    };
                    let purchases = mine()
                        .filter(|s| matches!(s.what, What::Purchase) && inside(s.time))
                        .count();
                    counts.purchasers += u32::from(purchases >= 1);
                    counts.repeat_purchasers += u32::from(purchases >= 2);
                    // The latest answer over every version still standing.
                    let latest = mine()
                        .enumerate()
                        .filter_map(|(i, s)| match s.what {
                            What::Answer(_, c) => Some(((s.time, i), c)),
                            _ => None,
                        })
                        .max_by_key(|(order, _)| *order);
                    if let Some(((t, _), c)) = latest {
                        if inside(t) {
                            counts.nps_respondents[c] += 1;
                        }
                    }
                    for s in mine() {
                        if let What::Churn(c) = s.what {
                            if inside(s.time) {
                                counts.churned_by_nps[c] += 1;
                            }
                        }
                    }
                }
                counts
            })
            .collect()
    }

    /// Customers remembered at the clock: some purchase or answer not before the horizon.
    fn live(&self, windows: &[WindowSpec], now_ms: i64) -> usize {
        let horizon = Self::horizon(windows, now_ms);
        (0..SERIES)
            .flat_map(|series| (0..CUSTOMERS).map(move |c| (series, c)))
            .filter(|&(series, c)| {
                self.remembered(series, c).any(|s| {
                    matches!(s.what, What::Purchase | What::Answer(..)) && s.time >= horizon
                })
            })
            .count()
    }
}

fn book_counts(book: &mut CustomerBook, series: u32) -> Vec<CustomerCounts> {
    let counts = book.counts(series);
    if counts.is_empty() {
        vec![CustomerCounts::default(); WINDOWS_MS.len()]
    } else {
        counts
    }
}

proptest! {
    // Failures are saved in `customers.proptest-regressions` beside this file (see `model`).
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn customer_counts_match_a_naive_model(ops in prop::collection::vec(op(), 1..160)) {
        let windows = windows();
        let mut now = BASE_MS;
        let mut book = CustomerBook::new(&windows, &[0, 0], &heads(&windows, now));
        let mut model = Model::default();
        let mut segments: Vec<Vec<u8>> = Vec::new();
        // Answers sent with a response id: (series, customer, response, last version's time).
        let mut keyed: Vec<(u32, u64, u64, i64)> = Vec::new();
        let mut next_response = 0u64;
        for op in &ops {
            let event = match *op {
                Op::Event { series, customer, back_ms, kind, category, keyed: with_id } => {
                    let time = now - back_ms;
                    let what = match kind {
                        0 => What::Purchase,
                        1 => {
                            let response = with_id.then(|| {
                                next_response += 1;
                                let r = xxhash_rust::xxh3::xxh3_64(&next_response.to_le_bytes());
                                keyed.push((series, customer, r, time));
                                r
                            });
                            What::Answer(response, category)
                        }
                        _ => What::Churn(3),
                    };
                    Some(Seen { series, customer, time, what })
                }
                Op::Correct { pick, forward_ms, category } if !keyed.is_empty() => {
                    let index = pick % keyed.len();
                    let (series, customer, response, last) = keyed[index];
                    let time = (last + forward_ms).min(now);
                    keyed[index].3 = time;
                    Some(Seen { series, customer, time, what: What::Answer(Some(response), category) })
                }
                Op::Correct { .. } => None,
                Op::Advance(ms) => {
                    now += ms;
                    book.set_clock(&heads(&windows, now));
                    None
                }
                Op::Maintain => {
                    book.maintain();
                    prop_assert_eq!(book.entries(), model.live(&windows, now));
                    None
                }
                Op::RoundTrip { full } => {
                    if full || segments.is_empty() {
                        segments = vec![book.encode_full(Some).unwrap()];
                    } else if let Some(changes) = book.encode_changes(Some).unwrap() {
                        segments.push(changes);
                    }
                    let mut restored = CustomerBook::restore(
                        &windows,
                        &[0, 0],
                        segments.iter().map(Vec::as_slice),
                        Some,
                    ).unwrap();
                    // A segment is written only when something changed: the clock is the caller's.
                    restored.set_clock(&heads(&windows, now));
                    for series in 0..SERIES {
                        prop_assert_eq!(book_counts(&mut restored, series), book_counts(&mut book, series));
                    }
                    // Go on with the restored book: what follows must match the model too.
                    book = restored;
                    None
                }
            };
            if let Some(seen) = event {
                let touch = match seen.what {
                    What::Purchase => Touch::Purchase,
                    What::Answer(response, c) => Touch::Answer { category: CATEGORIES[c], response },
                    What::Churn(_) | What::Replaced => Touch::Churn,
                };
                let taken = book.apply(&CustomerEvent {
                    series: seen.series,
                    customer: customer_hash(seen.customer),
                    occurred_at_ms: seen.time,
                    touch,
                });
                let accepted = model.apply(&windows, now, seen);
                prop_assert_eq!(taken == Taken::Counted, accepted, "{:?}", taken);
            }
            for series in 0..SERIES {
                prop_assert_eq!(
                    book_counts(&mut book, series),
                    model.counts(&windows, now, series),
                    "series {} at {} after {:?}", series, now - BASE_MS, op
                );
            }
        }
    }
}

/// A checkpoint written before more changes, and those changes after it, restore to the same
/// counts as the book that wrote them; a full segment alone does too.
#[test]
fn incremental_and_full_checkpoints_restore_identical_counts() {
    let windows = windows();
    let mut now = BASE_MS;
    let mut book = CustomerBook::new(&windows, &[2, 1], &heads(&windows, now));
    let mut segments = vec![book.encode_full(Some).unwrap()];
    for i in 0..2_000u64 {
        now += 150;
        book.set_clock(&heads(&windows, now));
        let touch = match i % 4 {
            0 | 1 => Touch::Purchase,
            2 => Touch::Answer {
                category: CATEGORIES[(i % 3) as usize],
                response: Some(customer_hash(i / 8)),
            },
            _ => Touch::Churn,
        };
        let occurred_at_ms = now - (i as i64 * 7_919) % 200_000;
        book.apply(&CustomerEvent {
            series: (i % 3) as u32,
            customer: i % 50,
            occurred_at_ms,
            touch,
        });
        if i % 97 == 0 {
            book.maintain();
        }
        if i % 61 == 0 {
            segments.extend(book.encode_changes(Some).unwrap());
        }
    }
    segments.extend(book.encode_changes(Some).unwrap());
    let restore = |segments: &[Vec<u8>]| {
        CustomerBook::restore(&windows, &[2, 1], segments.iter().map(Vec::as_slice), Some).unwrap()
    };
    let mut incremental = restore(&segments);
    let mut full = restore(&[book.encode_full(Some).unwrap()]);
    for series in 0..3 {
        let want = book.counts(series);
        assert!(want.iter().any(|c| *c != CustomerCounts::default()));
        assert_eq!(incremental.counts(series), want);
        assert_eq!(full.counts(series), want);
    }
    book.maintain();
    assert_eq!(incremental.entries(), book.entries());
    assert!(
        CustomerBook::restore(&windows, &[2, 1], segments[1..].iter().map(Vec::as_slice), Some)
            .is_err(),
        "changes without their full segment are refused"
    );
    let mut damaged = segments[0].clone();
    damaged[0] = 9;
    assert!(CustomerBook::restore(&windows, &[2, 1], [damaged.as_slice()], Some).is_err());
}

/// The memory figure: a million customers of one series, one purchase each. Run with
/// `cargo test --release -p cxpulse-core --test core customers::a_million -- --nocapture`.
#[test]
fn a_million_customers_take_at_most_64_bytes_each() {
    let windows: Vec<WindowSpec> =
        ["1h", "24h", "7d", "30d"].iter().map(|w| WindowSpec::named(w).unwrap()).collect();
    let now = BASE_MS;
    let mut book = CustomerBook::new(&windows, &[6, 1, 1, 1], &heads(&windows, now));
    let started = std::time::Instant::now();
    for i in 0..1_000_000u64 {
        let event = CustomerEvent {
            series: 0,
            customer: customer_hash(i),
            occurred_at_ms: now - (i as i64 % 3_600_000),
            touch: Touch::Purchase,
        };
        assert_eq!(book.apply(&event), Taken::Counted);
    }
    let elapsed = started.elapsed();
    let per_customer = book.bytes() as f64 / book.entries() as f64;
    println!(
        "customers: {} entries, {} bytes, {per_customer:.1} bytes per customer; 1M purchases \
         added in {elapsed:?}",
        book.entries(),
        book.bytes()
    );
    assert_eq!(book.entries(), 1_000_000);
    assert_eq!(book.counts(0)[0].purchasers, 1_000_000);
    assert!(per_customer <= 64.0, "{per_customer} bytes per customer");
}
