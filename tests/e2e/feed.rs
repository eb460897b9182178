//! The detractor feed through a broker: every NPS answer scored 0–6 gives one message keyed by
//! its `response_id` (else `event_id`), a correction that lifts it out of 0–6 gives `resolved`
//! under the same key, and a worker SIGKILLed half-way is followed by one that repeats messages,
//! never changes one. A feed topic that cannot be written blocks the partitions it holds back
//! (in `/readyz` and the metrics), never the counting or the other partitions. The first test runs
//! on the real broker of `CXPULSE_TEST_BROKERS` when set; the second needs the mock's faults.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::Value;

use crate::fixture::*;

const MINUTE: i64 = 60_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis()
        as i64
}

/// An NPS answer as `(partition, json)`; keyed by response, so an answer and its corrections
/// reach one partition.
fn answer(
    event_id: &str,
    response: Option<&str>,
    score: u8,
    at: i64,
    extra: &str,
) -> (i32, Vec<u8>) {
    let key = response.unwrap_or(event_id);
    let partition = i32::from(key.bytes().map(u16::from).sum::<u16>() % 2 == 1);
    let response = response.map(|r| format!(r#","response_id":"{r}""#)).unwrap_or_default();
    let json = format!(
        r#"{{"event_id":"{event_id}","type":"survey_response","occurred_at":{at},"brand":"acme","segment":"smb","survey":"nps","score":{score}{response}{extra}}}"#
    );
    (partition, json.into_bytes())
}

const COMMENT: &str = "Lieferung \\\"zu spät\\\", two weeks";

/// Events as `(partition, json)`.
type Events = Vec<(i32, Vec<u8>)>;

/// The stream in two halves, and each feed key's final (status, score).
fn stream(t: i64) -> ([Events; 2], BTreeMap<String, (&'static str, u64)>) {
    let mut first = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..30u8 {
        let response = format!("r-{i}");
        let score = i % 11;
        let extra = match i {
            3 => format!(r#","customer_id":"c-3","comment":"{COMMENT}""#),
            _ => format!(r#","customer_id":"c-{i}""#),
        };
        first.push(answer(&format!("e-{i}"), Some(&response), score, t - MINUTE, &extra));
        if score <= 6 {
            expected.insert(response, ("open", u64::from(score)));
        }
    }
    first.push(answer("e-1", Some("r-1"), 1, t - MINUTE, "")); // a duplicate: counted once
    first.push(answer("e-anon", None, 2, t - MINUTE, "")); // keyed by its event id
    expected.insert("e-anon".into(), ("open", 2));
    let csat = format!(
        r#"{{"event_id":"e-csat","type":"survey_response","occurred_at":{},"brand":"acme","segment":"smb","survey":"csat","score":1}}"#,
        t - MINUTE
    );
    first.push((0, csat.into_bytes())); // not NPS: no message

    let second = vec![
        answer("e-0b", Some("r-0"), 10, t, ""),  // resolved
        answer("e-1b", Some("r-1"), 4, t, ""),   // still a detractor: open, new score
        answer("e-7b", Some("r-7"), 3, t, ""),   // a passive becomes a detractor: open
        answer("e-9b", Some("r-9"), 10, t, ""),  // promoter to promoter: nothing
        answer("e-22b", Some("r-22"), 8, t, ""), // resolved
        answer("e-30", Some("r-30"), 6, t, ""),  // a new detractor
    ];
    expected.insert("r-0".into(), ("resolved", 10));
    expected.insert("r-1".into(), ("open", 4));
    expected.insert("r-7".into(), ("open", 3));
    expected.insert("r-22".into(), ("resolved", 8));
    expected.insert("r-30".into(), ("open", 6));
    ([first, second], expected)
}

fn produce_events(scenario: &Scenario, topic: &str, events: &Events) {
    let messages: Vec<(i32, &str, Vec<u8>)> =
        events.iter().map(|(p, json)| (*p, "response", json.clone())).collect();
    produce(&scenario.producer(), topic, &messages);
}

#[test]
fn the_feed_holds_each_detractor_answer_with_its_final_status_through_a_sigkill() {
    let scenario = Scenario::on_either_broker(&[("fb", 2), ("fb.dlq", 1), ("fb.detractors", 1)]);
    let topic = scenario.topic("fb");
    let feed_topic = scenario.topic("fb.detractors");
    let config = WorkerConfig::new(&scenario.group("g-fb"), &topic)
        .checkpoint_interval("1s")
        .extra(&format!("[feed]\ndetractors_topic = \"{feed_topic}\""));
    let ([first, second], expected) = stream(now_ms());

    let mut worker = scenario.start("feed-a", &config);
    produce_events(&scenario, &topic, &first);
    let counted = first.len() as f64 - 1.0; // less the duplicate
    let opened = 22.0; // the first half's detractors: 21 with a response id, one without
    wait_for(Duration::from_secs(60), || {
        worker.metrics().filter(|m| {
            m.get("cxpulse_events_counted_total", &[]) == Some(counted)
                && m.get("cxpulse_feed_messages_total", &[("status", "open")]) == Some(opened)
        })
    })
    .unwrap_or_else(|| panic!("first half never counted and fed:\n{}", worker.log()));
    // Killed at once: offsets stored after the feed's acknowledgements may not be committed
    // yet, and the next worker then writes their messages again.
    worker.child.kill().expect("SIGKILL");
    worker.child.wait().expect("reaped");

    produce_events(&scenario, &topic, &second);
    let restarted = scenario.start("feed-b", &config);
    let resolved = wait_for(Duration::from_secs(60), || {
        restarted.metrics().filter(|m| {
            m.get("cxpulse_feed_messages_total", &[("status", "resolved")]) == Some(2.0)
        })
    });
    assert!(resolved.is_some(), "the corrections never resolved:\n{}", restarted.log());

    let messages = read_topic(&scenario.brokers, &feed_topic, 1, 27, Duration::from_secs(30));
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    let mut written: BTreeMap<(String, Vec<u8>), usize> = BTreeMap::new();
    for message in &messages {
        let key = String::from_utf8(message.key.clone().expect("keyed")).expect("UTF-8 key");
        let value: Value = serde_json::from_slice(&message.payload).expect("JSON value");
        *written.entry((key.clone(), message.payload.clone())).or_default() += 1;
        latest.insert(key, value);
    }
    let finals: BTreeMap<String, (String, u64)> = latest
        .iter()
        .map(|(key, v)| {
            let status = v["status"].as_str().unwrap_or_default().to_string();
            (key.clone(), (status, v["score"].as_u64().unwrap_or(99)))
        })
        .collect();
    let want: BTreeMap<String, (String, u64)> =
        expected.iter().map(|(k, (s, score))| (k.clone(), (s.to_string(), *score))).collect();
    assert_eq!(finals, want, "one key per detractor answer, each with its final status");
    // At least once, never a changed message: 27 distinct messages (21 + 1 opened, 2 resolved,
    // 2 reopened with a new score, 1 new), each written once or repeated as it was.
    let distinct: Vec<_> = written.keys().collect();
    assert_eq!(distinct.len(), 27, "{distinct:#?}");

    let commented = &latest["r-3"];
    assert_eq!(commented["comment"], "Lieferung \"zu spät\", two weeks");
    assert_eq!(commented["customer_id"], "c-3");
    assert_eq!(commented["event_id"], "e-3");
    assert_eq!(
        (commented["brand"].as_str(), commented["segment"].as_str()),
        (Some("acme"), Some("smb"))
    );
    assert!(commented["occurred_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{commented}");
    let anonymous = &latest["e-anon"];
    assert_eq!(
        (anonymous["response_id"].is_null(), anonymous["customer_id"].is_null()),
        (true, true)
    );
    assert_eq!(latest["r-0"]["event_id"], "e-0b", "the resolving correction's own event");
}

#[test]
fn a_feed_topic_that_fails_blocks_only_its_partition_and_counting_goes_on() {
    let scenario = Scenario::new(&[("fs", 2), ("fs.dlq", 1), ("fs.detractors", 1)]);
    let t = now_ms();
    // Partition 0 holds a detractor at offset 10; partition 1 only promoters.
    let mut messages: Vec<(i32, &str, Vec<u8>)> = Vec::new();
    for i in 0..40 {
        let (partition, score) = (i % 2, if i == 20 { 3 } else { 9 });
        let (_, json) = answer(&format!("s-{i}"), Some(&format!("q-{i}")), score, t, "");
        messages.push((partition, "k", json));
    }
    produce(&scenario.producer(), "fs", &messages);
    scenario.cluster().request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 5_000],
    );
    let config = WorkerConfig::new("g-fs", "fs")
        .checkpoint_interval("1s")
        .extra("[feed]\ndetractors_topic = \"fs.detractors\"");
    let mut worker = scenario.start("feed-stalled", &config);
    let stalled = wait_for(Duration::from_secs(60), || {
        worker.metrics().filter(|m| {
            m.get("cxpulse_events_counted_total", &[]) == Some(40.0)
                && m.get("cxpulse_partitions_blocked", &[]) == Some(1.0)
        })
    });
    assert!(
        stalled.is_some(),
        "never counted everything with one partition blocked:\n{}",
        worker.log()
    );
    assert_eq!(
        http_get(&worker.addr, "/readyz").map(|(s, _)| s),
        Some(503),
        "a blocked partition is not ready"
    );
    let promoters_only = wait_for(Duration::from_secs(20), || {
        let both = committed_total(&scenario.brokers, "g-fs", "fs", 2);
        let first = committed_total(&scenario.brokers, "g-fs", "fs", 1);
        (both - first == 20).then_some(first)
    });
    let held =
        promoters_only.unwrap_or_else(|| panic!("partition 1 never committed:\n{}", worker.log()));
    assert!(held <= 10, "partition 0 held at its detractor (offset 10), committed {held}");

    scenario.cluster().clear_request_errors(RDKafkaApiKey::Produce);
    let written = wait_for(Duration::from_secs(60), || {
        worker.metrics().filter(|m| {
            m.get("cxpulse_feed_messages_total", &[("status", "open")]) == Some(1.0)
                && m.get("cxpulse_partitions_blocked", &[]) == Some(0.0)
        })
    });
    assert!(written.is_some(), "the feed never recovered:\n{}", worker.log());
    assert_eq!(http_get(&worker.addr, "/readyz").map(|(s, _)| s), Some(200));
    let caught_up = wait_for(Duration::from_secs(20), || {
        (committed_total(&scenario.brokers, "g-fs", "fs", 2) == 40).then_some(())
    });
    assert!(caught_up.is_some(), "offsets never caught up after the feed recovered");
    let exit = worker.terminate(Duration::from_secs(10)).expect("exits");
    assert!(exit.success(), "{}", worker.log());
    let feed = read_topic(&scenario.brokers, "fs.detractors", 1, 1, Duration::from_secs(10));
    assert_eq!(feed.len(), 1, "one message for the one detractor");
    assert_eq!(feed[0].key.as_deref(), Some(&b"q-20"[..]));
}

#[test]
fn a_busy_partition_is_checkpointed_while_each_batch_sends_feed_messages() {
    const EVENTS: usize = 500;
    let scenario =
        Scenario::new(&[("fc", 1), ("fc.dlq", 1), ("fc.detractors", 1), (STATE_TOPIC, 1)]);
    // A backlog of detractors on one partition, one record per record batch so that a fetch of
    // 2 kB brings a handful, counted 32 at a time: each batch leaves feed messages in flight for
    // as long as the worker is busy. A 10 ms round trip to the broker, set once the backlog is
    // in, paces the fetches and the acknowledgements, so the worker is busy for seconds however
    // fast it counts.
    let t = now_ms();
    let messages: Vec<(i32, &str, Vec<u8>)> = (0..EVENTS)
        .map(|i| {
            let (_, json) = answer(&format!("c-{i}"), Some(&format!("cr-{i}")), 2, t, "");
            (0, "k", json)
        })
        .collect();
    let one_per_batch: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &scenario.brokers)
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    produce(&one_per_batch, "fc", &messages);
    scenario.cluster().broker_round_trip_time(1, Duration::from_millis(10)).expect("round trip");
    let config = WorkerConfig::new("g-fc", "fc")
        .kafka_line(r#""max.partition.fetch.bytes" = "2048""#)
        .batch_size(32)
        .checkpoint_interval("100ms")
        .extra("[feed]\ndetractors_topic = \"fc.detractors\"");
    let worker = scenario.start("feed-checkpoints", &config);
    let started = std::time::Instant::now();
    // Taken the moment the backlog is counted: before the worker, idle at last, checkpoints
    // anyway.
    let checkpoints = wait_for(Duration::from_secs(60), || {
        let m = worker.metrics()?;
        (m.get("cxpulse_events_counted_total", &[]) == Some(EVENTS as f64))
            .then(|| m.get("cxpulse_checkpoints_total", &[]).unwrap_or(0.0))
    });
    let Some(checkpoints) = checkpoints else {
        panic!("the backlog was never counted:\n{}", worker.log());
    };
    assert!(
        checkpoints >= 2.0,
        "{checkpoints} checkpoints of a partition busy until {:?} at a 100 ms interval:\n{}",
        started.elapsed(),
        worker.log()
    );
}
