//! Partitions that move quickly and restores that scale: a group growing from one worker to two
//! and back stays exact (on the real broker of `CXPULSE_TEST_BROKERS` too), static membership
//! keeps a restarted worker's partitions without a rebalance, and a 64-partition group converges
//! to exact counts soon after a worker is SIGKILLed and another stopped mid-stream.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::fixture::*;

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn nps_json(id: &str, n: usize) -> Vec<u8> {
    let brand = ["acme", "globex", "initech", "umbrella"][n % 4];
    format!(
        r#"{{"event_id":"{id}","type":"survey_response","occurred_at":{},"brand":"{brand}","segment":"smb","survey":"nps","score":{}}}"#,
        now_ms(),
        n % 11
    )
    .into_bytes()
}

fn nps_total(workers: &[&WorkerProcess]) -> Option<f64> {
    let mut total = 0.0;
    for worker in workers {
        total += worker.metrics()?.sum("cxpulse_nps_responses", &[("window", "1h")]);
    }
    Some(total)
}

fn assigned(worker: &WorkerProcess) -> Option<f64> {
    worker.metrics()?.get("cxpulse_partitions_assigned", &[])
}

/// The partitions a worker's log says it restored or rebuilt.
fn partitions_taken(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains("rebuilding by replay") || l.contains("restored from checkpoint"))
        .filter_map(|l| l.split("partition=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .map(str::to_string)
        .collect()
}

/// Waits until the live workers' 1h NPS answers sum to `expected` and stay there for a second.
fn assert_exact(workers: &[&WorkerProcess], expected: usize, what: &str) {
    let settled = wait_for(Duration::from_secs(90), || {
        (nps_total(workers)? == expected as f64).then_some(())?;
        std::thread::sleep(Duration::from_secs(1));
        (nps_total(workers)? == expected as f64).then_some(())
    });
    if settled.is_none() {
        let logs: Vec<String> = workers.iter().map(|w| w.log()).collect();
        panic!(
            "{what}: expected {expected}, the workers sum to {:?}\nlogs:\n{}",
            nps_total(workers),
            logs.join("\n-----\n")
        );
    }
}

/// One worker, then two (the group splits the partitions, each restored from the first worker's
/// checkpoints), then one again (the second stops and its partitions come back, restored from
/// its checkpoints): after each step the counts, summed over the live workers, are exact. Runs
/// on the real broker of `CXPULSE_TEST_BROKERS` when it is set.
#[test]
fn one_then_two_then_one_worker_keep_the_counts_exact() {
    const PARTITIONS: i32 = 4;
    const STEP: usize = 4_000;
    let scenario = Scenario::on_either_broker(&[("grow", PARTITIONS), ("grow.dlq", 1)]);
    let topic = scenario.topic("grow");
    let producer = scenario.producer();
    let publish = |from: usize| {
        let messages: Vec<(i32, &str, Vec<u8>)> = (from..from + STEP)
            .map(|n| ((n % PARTITIONS as usize) as i32, "k", nps_json(&format!("grow-{n}"), n)))
            .collect();
        produce(&producer, &topic, &messages);
    };
    let config = WorkerConfig::new("g-grow", &topic).checkpoint_interval("1s");
    let a = scenario.start("grow-a", &config);
    publish(0);
    assert_exact(&[&a], STEP, "one worker");

    let mut b = scenario.start("grow-b", &config);
    let split = wait_for(Duration::from_secs(60), || {
        (assigned(&a)? == 2.0 && assigned(&b)? == 2.0).then_some(())
    });
    assert!(split.is_some(), "never split 2/2; logs:\n{}\n-----\n{}", a.log(), b.log());
    publish(STEP);
    assert_exact(&[&a, &b], 2 * STEP, "two workers");
    assert_eq!(partitions_taken(&b.log()).len(), 2, "b restored two partitions: {}", b.log());
    assert!(b.log().contains("restored from checkpoint"), "b restored from a's checkpoints");

    assert!(b.terminate(Duration::from_secs(10)).expect("b stops within 10 s").success());
    let back = wait_for(Duration::from_secs(60), || (assigned(&a)? == 4.0).then_some(()));
    assert!(back.is_some(), "a never took b's partitions back; log:\n{}", a.log());
    publish(2 * STEP);
    assert_exact(&[&a], 3 * STEP, "one worker again");
    let restores = a.metrics().expect("metrics");
    assert!(
        restores.get("cxpulse_partition_restores_total", &[("source", "checkpoint")]) >= Some(2.0),
        "a restored b's partitions from checkpoints; log:\n{}",
        a.log()
    );
}

/// With `group.instance.id`, a quick restart gets the same partitions back and no partition
/// moves: the other worker neither loses nor gains any. A real broker also skips the join round
/// for the returning member (KIP-345); the mock cluster runs one (the other worker's callback sees
/// an assignment adding nothing), and it does not reassign a leaving dynamic member's partitions
/// before the session timeout either, so on the mock this test cannot tell static from dynamic
/// membership: it checks that nothing moves.
#[test]
fn static_membership_gives_a_quick_restart_its_partitions_back_without_moving_any() {
    const TOPIC: &str = "static";
    let cluster = cluster(&[(TOPIC, 4), ("static.dlq", 1)]);
    let brokers = cluster.bootstrap_servers();
    let config = |id: &str| {
        WorkerConfig::new("g-static", TOPIC)
            .source_line("checkpoint_interval = \"1s\"")
            .toml()
            .replace("[source]", &format!("\"group.instance.id\" = \"{id}\"\n[source]"))
            .replace("\"session.timeout.ms\" = \"6000\"", "\"session.timeout.ms\" = \"15000\"")
    };
    let mut a = start_worker("static-a", &brokers, &config("worker-a"));
    let b = start_worker("static-b", &brokers, &config("worker-b"));
    let settled = wait_for(Duration::from_secs(60), || {
        (assigned(&a)? == 2.0 && assigned(&b)? == 2.0).then_some(())
    });
    assert!(settled.is_some(), "never split 2/2; logs:\n{}\n-----\n{}", a.log(), b.log());
    std::thread::sleep(Duration::from_secs(2));
    let revokes =
        |w: &WorkerProcess| w.metrics()?.get("cxpulse_rebalances_total", &[("kind", "revoke")]);
    let b_revokes = revokes(&b);
    let a_partitions = partitions_taken(&a.log());
    assert_eq!(a_partitions.len(), 2, "log:\n{}", a.log());

    let exit = a.terminate(Duration::from_secs(10)).expect("a stops within 10 s");
    assert!(exit.success(), "log:\n{}", a.log());
    // Without static membership a leaves the group, and b takes its partitions at once.
    let mut b_most = 0.0_f64;
    let away = Instant::now();
    while away.elapsed() < Duration::from_secs(5) {
        b_most = b_most.max(assigned(&b).unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(100));
    }
    let a2 = start_worker("static-a2", &brokers, &config("worker-a"));
    let back = wait_for(Duration::from_secs(30), || {
        b_most = b_most.max(assigned(&b).unwrap_or(0.0));
        (assigned(&a2)? == 2.0).then_some(())
    });
    assert!(back.is_some(), "restarted a got no partitions; log:\n{}", a2.log());
    std::thread::sleep(Duration::from_secs(2));
    b_most = b_most.max(assigned(&b).unwrap_or(0.0));
    assert_eq!(b_most, 2.0, "b took a's partitions; log of b:\n{}", b.log());
    assert_eq!(revokes(&b), b_revokes, "b lost partitions; log of b:\n{}", b.log());
    assert_eq!(partitions_taken(&a2.log()), a_partitions, "the same partitions came back");
}

#[test]
fn sixty_four_partitions_converge_soon_after_a_sigkill_and_a_stop() {
    const TOPIC: &str = "wide";
    const PARTITIONS: i32 = 64;
    const EVENTS: usize = 120_000;
    let cluster = cluster(&[(TOPIC, PARTITIONS), ("wide.dlq", 1), ("cxpulse.state", PARTITIONS)]);
    let brokers = cluster.bootstrap_servers();
    let config =
        WorkerConfig::new("g-wide", TOPIC).source_line("checkpoint_interval = \"1s\"").toml();
    let mut a = start_worker("wide-a", &brokers, &config);
    let mut b = start_worker("wide-b", &brokers, &config);
    let c = start_worker("wide-c", &brokers, &config);
    let split = wait_for(Duration::from_secs(60), || {
        (assigned(&a)? + assigned(&b)? + assigned(&c)? == PARTITIONS as f64).then_some(())
    });
    assert!(split.is_some(), "the group never took all partitions");

    let producer = producer(&brokers);
    let chunks = 30;
    let mut killed_at = None;
    let mut stop_took = None;
    // b is stopped once the coordinator has noticed a's death (the session timeout, 6 s):
    // during the rebalance that follows, while the survivors restore a's partitions.
    let stop_b = |killed_at: Option<Instant>, b: &mut WorkerProcess| {
        let started = Instant::now();
        let exit = b.terminate(Duration::from_secs(10)).expect("b stops within 10 s");
        assert!(exit.success(), "log:\n{}", b.log());
        eprintln!("b stopped {:?} after the SIGKILL", killed_at.map(|k: Instant| k.elapsed()));
        Some(started.elapsed())
    };
    for chunk in 0..chunks {
        let messages: Vec<(i32, &str, Vec<u8>)> = (chunk * EVENTS / chunks
            ..(chunk + 1) * EVENTS / chunks)
            .map(|n| ((n % PARTITIONS as usize) as i32, "k", nps_json(&format!("w-{n}"), n)))
            .collect();
        produce(&producer, TOPIC, &messages);
        if chunk == chunks * 2 / 3 {
            a.child.kill().expect("SIGKILL");
            a.child.wait().expect("reaped");
            killed_at = Some(Instant::now());
        }
        if stop_took.is_none() && killed_at.is_some_and(|k| k.elapsed() >= Duration::from_secs(7)) {
            stop_took = stop_b(killed_at, &mut b);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let last_publish = Instant::now();
    if stop_took.is_none() {
        let since_kill = killed_at.map_or(Duration::ZERO, |k| k.elapsed());
        std::thread::sleep(Duration::from_secs(7).saturating_sub(since_kill));
        stop_took = stop_b(killed_at, &mut b);
    }
    let exact = wait_for(Duration::from_secs(120), || {
        (nps_total(&[&c]) == Some(EVENTS as f64)).then(|| last_publish.elapsed())
    });
    let Some(converged) = exact else {
        panic!("never exact: {:?} of {EVENTS}; log:\n{}", nps_total(&[&c]), c.log());
    };
    eprintln!(
        "64x64: exact {converged:?} after the last publish, {:?} after the SIGKILL (session \
         timeout 6 s); SIGTERM mid-rebalance stopped in {stop_took:?}",
        killed_at.map(|k| k.elapsed())
    );
    if std::env::var_os("CXPULSE_TEST_SHOW_LOG").is_some() {
        eprintln!("{}", c.log());
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(nps_total(&[&c]), Some(EVENTS as f64), "stays exact");
    assert_eq!(assigned(&c), Some(PARTITIONS as f64));
}

#[test]
fn a_stop_mid_restore_exits_promptly_and_the_next_owner_stays_exact() {
    const TOPIC: &str = "replaying";
    const EVENTS: usize = 60_000;
    let cluster = cluster(&[(TOPIC, 8), ("replaying.dlq", 1)]);
    let brokers = cluster.bootstrap_servers();
    let messages: Vec<(i32, &str, Vec<u8>)> =
        (0..EVENTS).map(|n| ((n % 8) as i32, "k", nps_json(&format!("m-{n}"), n))).collect();
    produce(&producer(&brokers), TOPIC, &messages);
    // No checkpoints: every assigned partition is rebuilt by replaying up to the commit, which
    // keeps the next worker restoring for a while.
    let config = WorkerConfig::new("g-replaying", TOPIC).source_line("state_topic = \"\"").toml();
    let mut first = start_worker("replaying-a", &brokers, &config);
    let counted = wait_for(Duration::from_secs(120), || {
        (nps_total(&[&first]) == Some(EVENTS as f64)).then_some(())
    });
    assert!(counted.is_some(), "first worker never counted all; log:\n{}", first.log());
    assert!(first.terminate(Duration::from_secs(10)).expect("exits").success());

    let mut second = start_worker("replaying-b", &brokers, &config);
    let restoring = wait_for(Duration::from_secs(60), || {
        second.metrics()?.get("cxpulse_partitions_restoring", &[]).filter(|r| *r > 0.0)
    });
    assert!(restoring.is_some(), "never seen restoring; log:\n{}", second.log());
    let started = Instant::now();
    let exit = second.terminate(Duration::from_secs(10)).expect("stops within 10 s mid-restore");
    eprintln!("SIGTERM mid-restore: exited in {:?}", started.elapsed());
    assert!(exit.success(), "log:\n{}", second.log());

    let third = start_worker("replaying-c", &brokers, &config);
    let exact = wait_for(Duration::from_secs(120), || {
        (nps_total(&[&third]) == Some(EVENTS as f64)).then_some(())
    });
    assert!(exact.is_some(), "{:?} of {EVENTS}; log:\n{}", nps_total(&[&third]), third.log());
}
