use super::*;

const STEP: i64 = 60_000;

fn hour() -> Vec<WindowSpec> {
    vec![WindowSpec::new(60 * STEP).unwrap()]
}

fn event(customer: u64, at_step: i64, touch: Touch) -> CustomerEvent {
    CustomerEvent { series: 0, customer, occurred_at_ms: at_step * STEP, touch }
}

fn answer(category: NpsCategory, response: Option<u64>) -> Touch {
    Touch::Answer { category, response }
}

#[test]
fn purchases_out_of_order_move_the_customer_between_steps() {
    let mut book = CustomerBook::new(&hour(), &[0], &[1_000]);
    assert_eq!(book.apply(&event(1, 990, Touch::Purchase)), Taken::Counted);
    assert_eq!(book.counts(0)[0].purchasers, 1);
    assert_eq!(book.counts(0)[0].repeat_purchasers, 0);
    book.apply(&event(1, 950, Touch::Purchase)); // older: the repeat lands at step 950
    book.apply(&event(1, 945, Touch::Purchase)); // older still: changes nothing
    let counts = book.counts(0)[0];
    assert_eq!((counts.purchasers, counts.repeat_purchasers), (1, 1));
    book.set_clock(&[1_010]); // step 950 leaves the window: one purchase is left in it
    let counts = book.counts(0)[0];
    assert_eq!((counts.purchasers, counts.repeat_purchasers), (1, 0));
    book.apply(&event(1, 1_005, Touch::Purchase)); // newer: the repeat moves to step 990
    let counts = book.counts(0)[0];
    assert_eq!((counts.purchasers, counts.repeat_purchasers), (1, 1));
    assert_eq!(book.apply(&event(2, 950, Touch::Purchase)), Taken::TooOld);
    assert_eq!(book.apply(&event(2, 1_011, Touch::Purchase)), Taken::TooFarAhead);
}

#[test]
fn a_churn_takes_the_category_of_the_last_answer_before_it() {
    let mut book = CustomerBook::new(&hour(), &[0], &[1_000]);
    book.apply(&event(1, 960, answer(NpsCategory::Detractor, Some(11))));
    book.apply(&event(1, 980, answer(NpsCategory::Promoter, None)));
    book.apply(&event(1, 970, Touch::Churn)); // after the detractor answer only
    book.apply(&event(1, 990, Touch::Churn)); // after both
    book.apply(&event(1, 950, Touch::Churn)); // before both
    book.apply(&event(2, 990, Touch::Churn)); // no answer at all
    let counts = book.counts(0)[0];
    assert_eq!(counts.churned_by_nps, [1, 0, 1, 2]);
    assert_eq!(counts.nps_respondents, [1, 0, 0], "the latest answer only");
    assert_eq!(book.entries(), 1, "a churn alone is not remembered");
}

#[test]
fn a_correction_replaces_the_newest_answer() {
    let mut book = CustomerBook::new(&hour(), &[0], &[1_000]);
    book.apply(&event(1, 950, answer(NpsCategory::Passive, Some(1 << 40))));
    book.apply(&event(1, 960, answer(NpsCategory::Detractor, Some(2 << 40))));
    assert_eq!(book.counts(0)[0].nps_respondents, [0, 0, 1]);
    book.apply(&event(1, 960, answer(NpsCategory::Promoter, Some(2 << 40))));
    assert_eq!(book.counts(0)[0].nps_respondents, [1, 0, 0]);
    // Moved forward in time: still one answer, the correction.
    book.apply(&event(1, 965, answer(NpsCategory::Passive, Some(2 << 40))));
    assert_eq!(book.counts(0)[0].nps_respondents, [0, 1, 0]);
    book.apply(&event(1, 962, Touch::Churn));
    assert_eq!(book.counts(0)[0].churned_by_nps, [0, 1, 0, 0], "the first answer, before it");
    // Moved back before the first answer: that one is the latest again.
    book.apply(&event(1, 940, answer(NpsCategory::Detractor, Some(2 << 40))));
    assert_eq!(book.counts(0)[0].nps_respondents, [0, 1, 0]);
}

#[test]
fn a_customer_is_forgotten_when_its_newest_event_leaves_the_longest_window() {
    let windows = vec![WindowSpec::new(60 * STEP).unwrap(), WindowSpec::new(600 * STEP).unwrap()];
    let heads = |t_step: i64| [t_step, t_step / 10];
    let mut book = CustomerBook::new(&windows, &[0, 0], &heads(10_000));
    book.apply(&event(1, 9_500, answer(NpsCategory::Detractor, None)));
    book.apply(&event(2, 9_990, Touch::Purchase));
    book.set_clock(&heads(10_090));
    book.maintain();
    assert_eq!(book.entries(), 2);
    // The long window now starts at step 9_500 (its step is ten short ones): gone after 9_509.
    book.set_clock(&heads(10_100));
    book.apply(&event(1, 10_100, Touch::Churn));
    assert_eq!(book.counts(0)[1].churned_by_nps, [0, 0, 0, 1], "forgotten before the sweep");
    book.maintain();
    assert_eq!(book.entries(), 1);
    assert_eq!(book.counts(0)[1].purchasers, 1);
}
