use super::*;

const SOURCE: SourcePartition = SourcePartition { topic: 0, partition: 0 };

fn engine_with(windows: &[&str]) -> Result<Engine, EngineError> {
    let windows = windows.iter().filter_map(|w| WindowSpec::named(w).ok()).collect();
    Engine::new(EngineConfig { windows, clock: ClockMode::Event, ..EngineConfig::default() })
}

fn records(batch: &CheckpointBatch) -> Vec<(String, Vec<u8>)> {
    batch.records.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

#[test]
fn an_engine_needs_a_window() {
    let error = engine_with(&[]).err();
    assert_eq!(error, Some(EngineError::NoWindows));
    assert_eq!(error.map(|e| e.to_string()).as_deref(), Some("at least one window size is needed"));
}

#[test]
fn a_checkpoint_of_other_windows_is_refused_and_leaves_the_partition_to_replay() {
    let mut source = engine_with(&["1h", "24h"]).unwrap();
    let event = br#"{"event_id":"e","type":"survey_response","occurred_at":3600000,"brand":"b","survey":"nps","score":9}"#;
    assert_eq!(source.process(SOURCE, event, 3_600_000), Outcome::Counted);
    let batch = source.checkpoint(SOURCE, 1);

    let mut other = engine_with(&["1h"]).unwrap();
    let error = other.restore(SOURCE, &records(&batch), 0).unwrap_err();
    assert_eq!(
        error,
        RestoreError::OtherWindows {
            checkpoint_ms: vec![3_600_000, 86_400_000],
            configured_ms: vec![3_600_000]
        }
    );
    assert_eq!(
        error.to_string(),
        "checkpoint windows [3600000, 86400000] differ from the configured [3600000]"
    );
    assert!(other.snapshot(0).series.is_empty());
    // Its first checkpoint tombstones what it could not use (but never the manifest's key).
    assert_eq!(other.process(SOURCE, event, 3_600_000), Outcome::Counted);
    let next = other.checkpoint(SOURCE, 2);
    let parts = batch.records.len() - 1;
    assert_eq!(next.tombstones.len(), parts);
    assert!(!next.tombstones.contains(&crate::checkpoint::RecordKey::Manifest));

    let mut same = engine_with(&["1h", "24h"]).unwrap();
    assert_eq!(same.restore(SOURCE, &records(&batch), 0), Ok(1));
    assert_eq!(same.snapshot(0).series[0].windows[0].nps[0], 1);
    assert_eq!(same.restore(SOURCE, &[], 0), Err(RestoreError::NoCheckpoint));
}

/// A partition with ids, answers and windows, checkpointed twice (the second incrementally):
/// its records as a compacted topic holds them.
fn checkpointed_topic() -> (Engine, Vec<(String, Vec<u8>)>) {
    let mut engine = engine_with(&["1h", "24h"]).unwrap();
    let mut topic = std::collections::BTreeMap::new();
    for round in 0..2 {
        for i in 0..50 {
            let at = 3_600_000 + round * 600_000 + i * 1_000;
            let event = format!(
                r#"{{"event_id":"e{round}-{i}","type":"survey_response","occurred_at":{at},"brand":"b","survey":"nps","score":{},"response_id":"r{i}"}}"#,
                i % 11
            );
            assert_eq!(engine.process(SOURCE, event.as_bytes(), at), Outcome::Counted);
        }
        let batch = engine.checkpoint(SOURCE, 100 * (round + 1));
        for (key, value) in &batch.records {
            topic.insert(key.to_string(), value.clone());
        }
        for key in &batch.tombstones {
            topic.remove(&key.to_string());
        }
    }
    (engine, topic.into_iter().collect())
}

#[test]
fn damaged_missing_or_stray_records_are_refused_never_misread() {
    let (mut source, records) = checkpointed_topic();
    let mut fresh = engine_with(&["1h", "24h"]).unwrap();
    assert_eq!(fresh.restore(SOURCE, &records, 0), Ok(200));
    let (a, b) = (source.snapshot(0), fresh.snapshot(0));
    assert_eq!(a.series[0].windows, b.series[0].windows);
    assert_eq!(a.state.entries[..2], b.state.entries[..2]);
    assert!(records.len() >= 5, "two rounds of ids, answers and windows, and a manifest");

    let restore = |records: Vec<(String, Vec<u8>)>| {
        let mut engine = engine_with(&["1h", "24h"]).unwrap();
        let result = engine.restore(SOURCE, &records, 0);
        // Whatever was refused, the partition is empty and counting starts from nothing.
        if result.is_err() {
            assert!(engine.snapshot(0).series.is_empty());
        }
        result
    };
    let part = records.iter().position(|(k, _)| k.starts_with("d/")).unwrap();
    let manifest = records.iter().position(|(k, _)| k == "m").unwrap();

    let mut truncated = records.clone();
    truncated[part].1.truncate(20);
    assert!(matches!(restore(truncated), Err(RestoreError::Unreadable(_))));

    let mut flipped = records.clone();
    let last = flipped[part].1.len() - 1;
    flipped[part].1[last] ^= 0x40;
    let error = restore(flipped).unwrap_err();
    assert_eq!(error.to_string(), "checkpoint unreadable: checkpoint corrupted (CRC mismatch)");

    let mut missing_part = records.clone();
    missing_part.remove(part);
    assert!(matches!(restore(missing_part), Err(RestoreError::Incomplete(_))));

    let mut missing_manifest = records.clone();
    missing_manifest.remove(manifest);
    assert_eq!(restore(missing_manifest), Err(RestoreError::NoManifest));

    let mut bad_manifest = records.clone();
    let half = bad_manifest[manifest].1.len() / 2;
    bad_manifest[manifest].1.truncate(half);
    assert!(matches!(restore(bad_manifest), Err(RestoreError::Unreadable(_))));

    // A segment of a checkpoint that never got its manifest (a crash mid-write) is ignored.
    let mut stray = records.clone();
    stray.push(("d/0/99/0".into(), records[part].1.clone()));
    assert_eq!(restore(stray), Ok(200));

    // An older format is replayed, not misread.
    let mut old = records.clone();
    old[manifest].1[4] = 3;
    let error = restore(old).unwrap_err();
    assert_eq!(error.to_string(), "checkpoint unreadable: checkpoint format 3, expected 4");
}

#[test]
fn a_checkpoint_writes_only_what_changed_and_tombstones_what_expired() {
    let mut engine = Engine::new(EngineConfig {
        windows: vec![WindowSpec::named("1h").unwrap()],
        clock: ClockMode::Event,
        dedup_horizon_ms: 80_000,
        correction_horizon_ms: 80_000,
        ..EngineConfig::default()
    })
    .unwrap();
    let event = |id: u32, at: i64| {
        format!(
            r#"{{"event_id":"e{id}","type":"survey_response","occurred_at":{at},"brand":"b","survey":"nps","score":9}}"#
        )
    };
    let t0 = 3_600_000_000;
    for id in 0..100 {
        engine.process(SOURCE, event(id, t0).as_bytes(), t0);
    }
    let first = engine.checkpoint(SOURCE, 100);
    let ids_in = |batch: &CheckpointBatch| -> usize {
        batch
            .records
            .iter()
            .filter(|(k, _)| k.to_string().starts_with("d/"))
            .map(|(_, v)| v.len() - 28)
            .sum::<usize>()
            / 8
    };
    assert_eq!(ids_in(&first), 100);
    // Nothing new: a manifest alone.
    let idle = engine.checkpoint(SOURCE, 100);
    assert_eq!(idle.records.len(), 1);
    // Three new ids: three ids written, nothing else of the ids.
    for id in 100..103 {
        engine.process(SOURCE, event(id, t0 + 1_000).as_bytes(), t0 + 1_000);
    }
    assert_eq!(ids_in(&engine.checkpoint(SOURCE, 103)), 3);
    // Two horizons later the old bucket is gone, and its records get tombstones.
    engine.process(SOURCE, event(999, t0 + 200_000).as_bytes(), t0 + 200_000);
    let later = engine.checkpoint(SOURCE, 104);
    assert!(later.tombstones.iter().any(|k| k.to_string().starts_with("d/")), "{later:?}");
}

#[test]
fn the_memory_budget_forgets_the_oldest_ids_early_and_says_so_but_keeps_every_count() {
    let config = |budget| EngineConfig {
        windows: vec![WindowSpec::named("24h").unwrap()],
        clock: ClockMode::Event,
        dedup_horizon_ms: 8 * 3_600_000,
        state_memory_bytes: budget,
        ..EngineConfig::default()
    };
    let (mut limited, mut unlimited) =
        (Engine::new(config(Some(64 * 1024))).unwrap(), Engine::new(config(None)).unwrap());
    let t0 = 3_600_000_000;
    // Eight hours, a thousand ids an hour: the ids of one hour alone take ~20 KiB.
    for i in 0..8_000i64 {
        let at = t0 + i * 3_600;
        let event = format!(
            r#"{{"event_id":"e{i}","type":"survey_response","occurred_at":{at},"brand":"b","survey":"nps","score":9}}"#
        );
        assert_eq!(limited.process(SOURCE, event.as_bytes(), at), Outcome::Counted);
        assert_eq!(unlimited.process(SOURCE, event.as_bytes(), at), Outcome::Counted);
    }
    let (a, b) = (limited.snapshot(0), unlimited.snapshot(0));
    assert_eq!(a.series[0].windows, b.series[0].windows, "counts never shrink");
    let bytes: u64 = a.state.bytes.iter().sum();
    assert!(bytes <= 64 * 1024, "{bytes} bytes over the budget: {:?}", a.state);
    assert!(a.state.evictions[0] > 0);
    assert_eq!(b.state.evictions[0], 0);
    assert!(a.state.horizon_ms[0] < 8 * 3_600_000, "{:?}", a.state);
    assert_eq!(a.state.horizon_configured_ms[0], 8 * 3_600_000);
    assert_eq!(b.state.horizon_ms[0], 8 * 3_600_000);
    // The newest ids are still remembered; the oldest are not.
    let again = |id: i64| {
        format!(
            r#"{{"event_id":"e{id}","type":"survey_response","occurred_at":{},"brand":"b","survey":"nps","score":9}}"#,
            t0 + 8_000 * 3_600
        )
    };
    let now = t0 + 8_000 * 3_600;
    assert_eq!(limited.process(SOURCE, again(7_999).as_bytes(), now), Outcome::Duplicate);
    assert_eq!(limited.process(SOURCE, again(0).as_bytes(), now), Outcome::Counted);
    assert_eq!(unlimited.process(SOURCE, again(0).as_bytes(), now), Outcome::Duplicate);
}

#[test]
fn drop_evidence_rises_for_the_series_whose_nps_falls_and_only_for_it() {
    let windows = ["1h", "24h"].iter().filter_map(|w| WindowSpec::named(w).ok()).collect();
    let drop = DropSettings { warmup_answers: 100, ..DropSettings::default() };
    let config = EngineConfig { windows, clock: ClockMode::Event, drop, ..EngineConfig::default() };
    let mut engine = Engine::new(config).unwrap();
    // 60 answers an hour for each of two series: five promoters, three passives and two
    // detractors in every ten; after 20 hours, "falls" gets nothing but detractors.
    let scores = [10, 9, 8, 10, 6, 9, 7, 3, 9, 8];
    let mut highest = std::collections::BTreeMap::<(String, bool), f64>::new();
    for i in 0..1_500i64 {
        let at = 1_800_000_000_000 + i * 60_000;
        let dropping = i >= 1_200;
        for brand in ["steady", "falls"] {
            let score = if brand == "falls" && dropping { 2 } else { scores[i as usize % 10] };
            let event = format!(
                r#"{{"event_id":"{brand}-{i}","type":"survey_response","occurred_at":{at},"brand":"{brand}","survey":"nps","score":{score}}}"#
            );
            assert_eq!(engine.process(SOURCE, event.as_bytes(), at), Outcome::Counted);
        }
        for series in engine.snapshot(at).series {
            let top = highest.entry((series.brand.to_string(), dropping)).or_default();
            *top = top.max(series.nps_drop_evidence);
        }
    }
    let top = |brand: &str, dropping: bool| highest[&(brand.to_string(), dropping)];
    assert!(top("falls", false) < 1.0, "before the drop: {highest:?}");
    assert!(top("falls", true) >= 1.0, "during the drop: {highest:?}");
    assert!(top("steady", false) < 1.0 && top("steady", true) < 1.0, "{highest:?}");
    assert!(top("falls", false) > 0.0 || top("steady", false) > 0.0, "evidence moves: {highest:?}");
    // A revoked partition takes its evidence along.
    engine.drop_partitions(&[SOURCE]);
    assert!(engine.snapshot(0).series.iter().all(|s| s.nps_drop_evidence == 0.0));
}

#[test]
fn detractor_answers_open_feed_messages_and_corrections_resolve_them() {
    let windows = ["1h", "24h"].iter().filter_map(|w| WindowSpec::named(w).ok()).collect();
    let config = EngineConfig {
        windows,
        clock: ClockMode::Event,
        detractor_feed: true,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config.clone()).unwrap();
    let at = 1_800_000_000_000i64;
    let answer = |id: &str, response: Option<&str>, score: u8, minutes: i64| {
        let response = response.map_or(String::new(), |r| format!(r#","response_id":"{r}""#));
        format!(
            r#"{{"event_id":"{id}","type":"survey_response","occurred_at":{},"brand":"acme","segment":"smb","survey":"nps","score":{score},"customer_id":"c-1","comment":"late"{response}}}"#,
            at + minutes * 60_000
        )
    };
    let batch = [
        answer("e1", Some("r1"), 3, 0), // open r1
        answer("e2", None, 2, 1),       // open e2 (no response_id)
        answer("e3", Some("r3"), 9, 2), // a promoter: nothing
        answer("e4", Some("r1"), 5, 3), // still a detractor: open r1 again, with score 5
        answer("e5", Some("r1"), 9, 4), // lifted out of 0-6: resolved r1
        answer("e6", Some("r3"), 8, 5), // a promoter corrected to passive: nothing
        answer("e1", Some("r1"), 3, 0), // a duplicate: nothing
    ];
    let payloads: Vec<&[u8]> = batch.iter().map(|p| p.as_bytes()).collect();
    let wall = at + 3_600_000;
    engine.process_batch(SOURCE, &payloads, wall, |_, _| {});
    let feed = engine.take_feed();
    let summary: Vec<(usize, &str, &str)> =
        feed.iter().map(|f| (f.index, f.key.as_str(), f.status.as_str())).collect();
    assert_eq!(
        summary,
        [(0, "r1", "open"), (1, "e2", "open"), (3, "r1", "open"), (4, "r1", "resolved")]
    );
    let first: serde_json::Value = serde_json::from_slice(&feed[0].value).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"brand": "acme", "segment": "smb", "customer_id": "c-1",
            "response_id": "r1", "event_id": "e1", "score": 3,
            "occurred_at": "2027-01-15T08:00:00.000Z", "comment": "late", "status": "open"})
    );
    assert!(engine.take_feed().is_empty(), "taken once");

    // The same message again (a replay after a crash, on a fresh engine): the same bytes.
    let mut again = Engine::new(config.clone()).unwrap();
    again.process(SOURCE, batch[0].as_bytes(), wall);
    assert_eq!(again.take_feed(), vec![feed[0].clone()]);
    // Messages an earlier owner handled (a rebuild by replay) make none; nor does a worker
    // without the feed.
    let mut replaying = Engine::new(config).unwrap();
    replaying.replay_batch(SOURCE, &payloads, wall);
    assert!(replaying.take_feed().is_empty());
    let mut off = engine_with(&["1h"]).unwrap();
    assert_eq!(off.process(SOURCE, batch[0].as_bytes(), wall), Outcome::Counted);
    assert!(off.take_feed().is_empty());
}

#[test]
fn drop_detectors_are_checkpointed_and_carry_on_after_a_restore_exactly() {
    let windows: Vec<WindowSpec> =
        ["1h", "24h"].iter().filter_map(|w| WindowSpec::named(w).ok()).collect();
    let drop = DropSettings { warmup_answers: 100, ..DropSettings::default() };
    let config = EngineConfig { windows, clock: ClockMode::Event, drop, ..EngineConfig::default() };
    let scores = [10, 9, 8, 10, 6, 9, 7, 3, 9, 8];
    let event = |i: i64, brand: &str| {
        let at = 1_800_000_000_000 + i * 60_000;
        let score = if brand == "falls" && i >= 300 { 2 } else { scores[i as usize % 10] };
        let text = format!(
            r#"{{"event_id":"{brand}-{i}","type":"survey_response","occurred_at":{at},"brand":"{brand}","survey":"nps","score":{score}}}"#
        );
        (text, at)
    };
    let feed = |engine: &mut Engine, from: i64, to: i64| {
        for i in from..to {
            for brand in ["steady", "falls"] {
                let (text, at) = event(i, brand);
                assert_eq!(engine.process(SOURCE, text.as_bytes(), at), Outcome::Counted);
            }
        }
    };
    let evidence = |engine: &mut Engine| -> Vec<(String, f64)> {
        let mut all: Vec<(String, f64)> = engine
            .snapshot(0)
            .series
            .iter()
            .map(|s| (s.brand.to_string(), s.nps_drop_evidence))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    };
    let mut original = Engine::new(config.clone()).unwrap();
    feed(&mut original, 0, 305);
    let batch = original.checkpoint(SOURCE, 610);
    let mut restored = Engine::new(config).unwrap();
    assert_eq!(restored.restore(SOURCE, &records(&batch), 0), Ok(610));
    let before = evidence(&mut original);
    assert!(before.iter().any(|(_, e)| *e > 0.0), "a baseline was learned: {before:?}");
    assert_eq!(evidence(&mut restored), before, "the same evidence right after the restore");
    feed(&mut original, 305, 340);
    feed(&mut restored, 305, 340);
    let after = evidence(&mut original);
    assert_eq!(evidence(&mut restored), after, "and the same after more answers");
    assert!(after.iter().any(|(brand, e)| brand == "falls" && *e >= 1.0), "{after:?}");
}

/// A crafted stream of purchases, NPS answers (one corrected) and churns on two partitions, with
/// the counts worked out by hand; then the same after an incremental checkpoint and a restore.
#[test]
fn customer_counts_follow_purchases_answers_and_churns_through_checkpoints() {
    const H: i64 = 3_600_000;
    let t0 = 1_000 * H; // the start of an hour: every event below is in the 1h window at t0 + 50 min
    let ev = |id: &str, minute: i64, body: &str| {
        format!(
            r#"{{"event_id":"{id}","occurred_at":{},"brand":"acme",{body}}}"#,
            t0 + minute * 60_000
        )
    };
    let purchase =
        |c: &str| format!(r#""type":"customer_lifecycle","action":"purchase","customer_id":"{c}""#);
    let churn =
        |c: &str| format!(r#""type":"customer_lifecycle","action":"churn","customer_id":"{c}""#);
    let nps = |c: &str, score: u8, r: &str| {
        format!(
            r#""type":"survey_response","survey":"nps","score":{score},"customer_id":"{c}","response_id":"{r}""#
        )
    };
    let p0 = SOURCE;
    let p1 = SourcePartition { topic: 0, partition: 1 };
    let mut engine = engine_with(&["1h", "24h"]).unwrap();
    let first = [
        (p0, ev("a1", 10, &purchase("ann"))),
        (p0, ev("a2", 5, &purchase("ann"))), // out of order: ann is a repeat purchaser
        (p0, ev("a1", 10, &purchase("ann"))), // duplicate id: not a third purchase
        (p0, ev("b1", 12, &purchase("bob"))),
        (p0, ev("n1", 20, &nps("ann", 3, "r1"))), // ann: detractor
        (p0, ev("n2", 21, &nps("bob", 9, "r2"))), // bob: promoter
        (p1, ev("n3", 22, &nps("cid", 7, "r3"))), // cid: passive, on the other partition
        (p0, ev("c1", 30, &churn("ann"))),        // churns as a detractor
    ];
    for (partition, json) in &first {
        let outcome = engine.process(*partition, json.as_bytes(), t0 + H);
        assert!(!matches!(outcome, Outcome::Rejected(_)), "{json}: {outcome:?}");
    }
    let mut topic = std::collections::BTreeMap::new();
    let write = |batch: &CheckpointBatch,
                 topic: &mut std::collections::BTreeMap<String, Vec<u8>>| {
        for (key, value) in &batch.records {
            topic.insert(key.to_string(), value.clone());
        }
        for key in &batch.tombstones {
            topic.remove(&key.to_string());
        }
    };
    write(&engine.checkpoint(p0, 8), &mut topic);
    let second = [
        (p0, ev("n1b", 25, &nps("ann", 10, "r1"))), // ann's answer corrected: promoter
        (p0, ev("c2", 40, &churn("bob"))),          // bob churns as a promoter
        (p0, ev("c3", 41, &churn("dan"))),          // dan never answered: unknown
        (p0, ev("b2", 45, &purchase("bob"))),       // bob buys again
        (p0, ev("c4", 15, &churn("bob"))),          // before bob's answer: unknown
        (p0, ev("x1", 50, r#""type":"survey_response","survey":"csat","score":"5""#)),
    ];
    for (partition, json) in &second {
        assert_eq!(engine.process(*partition, json.as_bytes(), t0 + H), Outcome::Counted, "{json}");
    }
    let expected = |engine: &mut Engine| {
        let snapshot = engine.snapshot(t0 + H);
        let series = &snapshot.series[0];
        for counts in &series.customers {
            assert_eq!((counts.purchasers, counts.repeat_purchasers), (2, 2), "{counts:?}");
            assert_eq!(counts.nps_respondents, [2, 1, 0], "ann and bob promoters, cid passive");
            assert_eq!(counts.churned_by_nps, [1, 0, 1, 2], "bob, ann; dan and bob's early one");
        }
        assert_eq!(snapshot.state.entries[3], 3, "ann, bob and cid (dan only churned)");
        assert!(snapshot.state.bytes[3] > 0);
    };
    expected(&mut engine);

    let batch = engine.checkpoint(p0, 14);
    let kinds: Vec<String> = batch.records.iter().map(|(k, _)| k.to_string()).collect();
    assert!(kinds.iter().any(|k| k.starts_with("c/")), "customers written: {kinds:?}");
    write(&batch, &mut topic);
    let records: Vec<(String, Vec<u8>)> = topic.into_iter().collect();
    let mut restored = engine_with(&["1h", "24h"]).unwrap();
    assert_eq!(restored.restore(p0, &records, 0), Ok(14));
    for (partition, json) in first.iter().filter(|(p, _)| *p == p1) {
        restored.process(*partition, json.as_bytes(), t0 + H);
    }
    expected(&mut restored);

    // Without the customers' segments the manifest names, the restore is refused.
    let without: Vec<(String, Vec<u8>)> =
        records.iter().filter(|(k, _)| !k.starts_with("c/")).cloned().collect();
    let mut refused = engine_with(&["1h", "24h"]).unwrap();
    assert_eq!(
        refused.restore(p0, &without, 0),
        Err(RestoreError::Incomplete("a customers segment"))
    );
}

/// A big customer book is rewritten a slice per checkpoint: no checkpoint writes the whole of
/// it, and a restore from the topic at any point of the rewrite (old generation plus the slices
/// so far) or after it (the new generation alone) gives the counts the engine has.
#[test]
fn a_big_customer_book_is_rewritten_in_slices_and_restores_exactly_at_every_step() {
    const H: i64 = 3_600_000;
    let t0 = 2_000 * H;
    let mut engine = engine_with(&["1h", "24h"]).unwrap();
    let mut n = 0u64;
    // Purchases and answers of `count` customers out of 40,000, at minute `minute`.
    let mut feed = |engine: &mut Engine, count: u64, minute: i64| {
        for _ in 0..count {
            n += 1;
            let customer = n.wrapping_mul(2_654_435_761) % 40_000;
            let body = if n.is_multiple_of(3) {
                format!(
                    r#""type":"survey_response","survey":"nps","score":{},"customer_id":"c{customer}","response_id":"r{n}""#,
                    n % 11
                )
            } else {
                format!(
                    r#""type":"customer_lifecycle","action":"{}","customer_id":"c{customer}""#,
                    if n.is_multiple_of(7) { "churn" } else { "purchase" }
                )
            };
            let json = format!(
                r#"{{"event_id":"e{n}","occurred_at":{},"brand":"acme",{body}}}"#,
                t0 + minute * 60_000
            );
            let outcome = engine.process(SOURCE, json.as_bytes(), t0 + H);
            assert_eq!(outcome, Outcome::Counted, "{json}");
        }
    };
    let mut topic = std::collections::BTreeMap::new();
    let mut write = |batch: &CheckpointBatch| {
        for (key, value) in &batch.records {
            topic.insert(key.to_string(), value.clone());
        }
        for key in &batch.tombstones {
            topic.remove(&key.to_string());
        }
        let records: Vec<(String, Vec<u8>)> =
            topic.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        records
    };
    let counts = |engine: &mut Engine| -> Vec<_> {
        engine.snapshot(t0 + H).series.iter().map(|s| s.customers.clone()).collect()
    };
    feed(&mut engine, 30_000, 1);
    let first = engine.checkpoint(SOURCE, 1);
    let whole = first.bytes();
    write(&first);
    let mut largest_later = 0;
    let mut rebasing_seen = 0;
    for round in 2..40 {
        feed(&mut engine, 2_000, round);
        let batch = engine.checkpoint(SOURCE, round);
        largest_later = largest_later.max(batch.bytes());
        let records = write(&batch);
        let (_, tail) = records
            .iter()
            .find(|(k, _)| k == "m")
            .map(|(_, v)| crate::checkpoint::Manifest::decode_with_tail(v).unwrap())
            .unwrap();
        rebasing_seen += usize::from(tail.customers_next.is_some());
        let mut restored = engine_with(&["1h", "24h"]).unwrap();
        assert_eq!(restored.restore(SOURCE, &records, 0), Ok(round));
        assert_eq!(counts(&mut restored), counts(&mut engine), "round {round}");
    }
    assert!(rebasing_seen >= 3, "a rewrite in slices spans checkpoints: {rebasing_seen}");
    assert!(
        largest_later < whole / 2,
        "no later checkpoint writes the book whole: {largest_later} of {whole} bytes"
    );
}
