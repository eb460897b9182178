//! The consume loop: poll a batch, count it under one engine lock, hand the rejects to the
//! dead-letter outbox and the detractor answers to the feed's, then store the offsets that are
//! safe to commit (each partition's stops at its first record still pending in either). Nothing
//! in the loop waits on one message; only a checkpoint waits, up to half a second, for the
//! records in flight. Runs on its own thread until `stop` is set, then stops within
//! `STOP_LIMIT`: dead letters, checkpoints, the commit, leaving the group and closing each get a
//! share of it; what misses its deadline is read again by the next owner.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cxpulse_core::health::Health;
use cxpulse_core::{Engine, Outcome, SharedEngine, SourcePartition};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::client_log::{self, ClientLog};
use crate::config::{consumer_config, producer_config, KafkaSettings, SourceConfig};
use crate::context::WorkerContext;
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::feed::{FeedConfig, FeedMessage};
use crate::fetch_queue::{FetchQueue, Fetched};
use crate::metrics::PipelineMetrics;
use crate::outbox::{merged_floors, Outbox, Outgoing};
use crate::partitions::{Partitions, Topics};
use crate::state_store::StateStore;
use crate::util::{lock, wall_ms};

/// Everything the worker shares with the rest of the process.
#[derive(Clone)]
pub struct Worker {
    pub engine: SharedEngine,
    pub health: Arc<Health>,
    pub metrics: PipelineMetrics,
    /// Where every Kafka client of the worker reports.
    pub client_log: ClientLog,
}

impl Worker {
    /// A worker around `engine`, with fresh health and pipeline metrics.
    pub fn new(engine: Engine) -> Worker {
        Worker {
            engine: SharedEngine::new(engine),
            health: Arc::new(Health::default()),
            metrics: PipelineMetrics::new(),
            client_log: ClientLog::default(),
        }
    }
}

const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest a periodic checkpoint may hold up the loop.
const IO_SHARE: Duration = Duration::from_secs(5);
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);
/// The whole stop, well inside Kubernetes' default 30 s grace period and the 10 s we promise.
pub const STOP_LIMIT: Duration = Duration::from_secs(8);
const SETTLE_SHARE: Duration = Duration::from_secs(2);
const CHECKPOINT_SHARE: Duration = Duration::from_secs(2);
const COMMIT_SHARE: Duration = Duration::from_secs(2);

/// Runs the worker until `stop` is set. Errors only for a configuration librdkafka refuses.
pub fn run_worker(
    worker: &Worker,
    settings: &KafkaSettings,
    source: &SourceConfig,
    feed: &FeedConfig,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    worker.health.set_stall_limit_ms(source.stall_timeout.ms().max(1000));
    let checkpoint_every = source.checkpoint_interval.get().max(Duration::from_millis(100));
    let store = match source.state_topic.as_str() {
        "" => None,
        topic => Some(
            StateStore::new(
                producer_config(settings),
                consumer_config(settings),
                topic.to_string(),
                worker.client_log.clone(),
            )
            .map_err(|e| anyhow::anyhow!("cannot create the state-topic clients: {e}"))?,
        ),
    };
    let context = WorkerContext {
        engine: worker.engine.clone(),
        health: worker.health.clone(),
        metrics: worker.metrics.clone(),
        client_log: worker.client_log.clone(),
        topics: Topics::new(&source.topics),
        group: consumer_config(settings).get("group.id").unwrap_or("cxpulse").to_string(),
        partitions: Mutex::new(Partitions::default()),
        revocations: AtomicU64::new(0),
        store: Mutex::new(store),
        closing: AtomicBool::new(false),
        stop: stop.clone(),
    };
    let consumer: BaseConsumer<WorkerContext> = consumer_config(settings)
        .create_with_context(context)
        .map_err(|e| anyhow::anyhow!("cannot create the Kafka consumer: {e}"))?;
    let topics: Vec<&str> = source.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|e| anyhow::anyhow!("cannot subscribe to {topics:?}: {e}"))?;
    let mut fetched = FetchQueue::new(&consumer);
    if fetched.is_none() {
        warn!("cannot create a fetch queue; reading message by message");
    }
    let mut dead_letters = match source.dead_letter_topic() {
        Some(topic) => Some(
            DeadLetters::new(
                &producer_config(settings),
                topic,
                worker.metrics.clone(),
                source.dead_letter_max_bytes,
                worker.client_log.clone(),
            )
            .map_err(|e| anyhow::anyhow!("cannot create the dead-letter producer: {e}"))?,
        ),
        None => None,
    };
    let mut feed_outbox = match feed.topic() {
        Some(topic) => Some(
            crate::feed::outbox(
                &producer_config(settings),
                topic,
                worker.metrics.clone(),
                worker.client_log.clone(),
            )
            .map_err(|e| anyhow::anyhow!("cannot create the detractor feed producer: {e}"))?,
        ),
        None => None,
    };
    let consumed: Vec<_> = source
        .topics
        .iter()
        .map(|t| worker.metrics.consumed.with_label_values(&[t.as_str()]))
        .collect();
    info!(topics = ?source.topics, dead_letter_topic = ?source.dead_letter_topic(), state_topic = %source.state_topic, feed_topic = ?feed.topic(), "worker started");

    let mut last_maintain = Instant::now();
    let mut last_checkpoint = Instant::now();
    let batch_size = source.batch_size.max(1);
    let mut revocations_seen = 0;
    let mut paused_for_letters = TopicPartitionList::new();
    while !stop.load(Ordering::Relaxed) {
        worker.health.heartbeat(wall_ms());
        let context = consumer.context();
        let revocations = context.revocations.load(Ordering::Relaxed);
        let batch = poll_batch(&consumer, fetched.as_mut(), batch_size);
        if last_maintain.elapsed() >= MAINTAIN_EVERY {
            worker.engine.with(|engine| engine.maintain(wall_ms()));
            if let Some(fetched) = fetched.as_ref() {
                consumer.context().route_processing(fetched);
            }
            last_maintain = Instant::now();
        }
        if !batch.is_empty() {
            worker.health.set_broker_up(true);
            worker.client_log.connectivity_restored();
            // A revoke inside a poll may leave messages of partitions no longer ours in the
            // batch: their new owner counts them from the committed offset.
            // Partitions awaiting their restore were paused; what was fetched before is read
            // again from where the restored state ends.
            let batch: Vec<_> = {
                let partitions = lock(&context.partitions);
                if context.revocations.load(Ordering::Relaxed) == revocations
                    && partitions.restoring() == 0
                {
                    batch
                } else {
                    batch
                        .into_iter()
                        .filter(|m| {
                            partitions.accepts(&context.topics.source(m.topic(), m.partition()))
                        })
                        .collect()
                }
            };
            let (letters, feed_messages) =
                process_batch(worker, context, &batch, dead_letters.is_some(), &consumed);
            if let Some(producer) = dead_letters.as_mut() {
                producer.submit(letters);
            }
            if let Some(outbox) = feed_outbox.as_mut() {
                outbox.submit(feed_messages.into_iter().map(|m| Box::new(m) as Box<dyn Outgoing>));
            }
        }
        let revocations = context.revocations.load(Ordering::Relaxed);
        let mut outboxes = outboxes_mut(&mut dead_letters, &mut feed_outbox);
        if revocations != revocations_seen && !outboxes.is_empty() {
            let partitions = lock(&context.partitions);
            let gone: BTreeSet<_> = merged_floors(outboxes.iter().map(|o| &**o))
                .into_keys()
                .filter(|k| !partitions.is_assigned(k))
                .collect();
            drop(partitions);
            outboxes.iter_mut().for_each(|o| o.forget(&gone));
        }
        outboxes.iter_mut().for_each(|o| o.service());
        bound_pending_records(&consumer, &outboxes, &mut paused_for_letters);
        revocations_seen = revocations;
        context.restore_awaiting(&consumer, fetched.as_ref());
        store_safe_offsets(worker, context, &consumer, &outboxes);
        if last_checkpoint.elapsed() >= checkpoint_every {
            await_held_back(worker, context, &consumer, &mut outboxes);
            context.checkpoint(None, Instant::now() + IO_SHARE);
            last_checkpoint = Instant::now();
        }
    }

    let stop_deadline = Instant::now() + STOP_LIMIT;
    worker.health.set_stopping();
    info!("stopping: settling dead letters, checkpointing and committing processed offsets, leaving the group");
    let context = consumer.context();
    context.closing.store(true, Ordering::Relaxed);
    // Fetched messages would queue ahead of the commit's answer; paused partitions drop them.
    if let Ok(assignment) = consumer.assignment() {
        if let Err(e) = consumer.pause(&assignment) {
            warn!(error = %e, "cannot pause before stopping");
        }
    }
    let settle_by = Instant::now() + SETTLE_SHARE;
    let mut outboxes = outboxes_mut(&mut dead_letters, &mut feed_outbox);
    outboxes.iter_mut().for_each(|o| o.settle(settle_by));
    store_safe_offsets(worker, context, &consumer, &outboxes);
    context.checkpoint(None, Instant::now() + CHECKPOINT_SHARE);
    context.commit_before(&consumer, Instant::now() + COMMIT_SHARE);
    consumer.unsubscribe();
    drain_until_unassigned(&consumer, stop_deadline.saturating_duration_since(Instant::now()) / 2);
    drop(dead_letters);
    drop(feed_outbox);
    // Before the consumer: the queue is the client's.
    drop(fetched);
    close_within(consumer, stop_deadline.saturating_duration_since(Instant::now()));
    let pipeline = worker.engine.pipeline();
    let rejected: u64 = pipeline.rejected.iter().sum();
    info!(
        consumed = pipeline.consumed,
        counted = pipeline.counted,
        duplicates = pipeline.duplicates,
        rejected,
        replayed = pipeline.replayed,
        "worker stopped"
    );
    Ok(())
}

/// Counts one batch under one engine lock; records how far each partition was read and returns
/// the batch's dead letters and detractor feed messages.
fn process_batch(
    worker: &Worker,
    context: &WorkerContext,
    batch: &[Fetched<'_>],
    dead_lettering: bool,
    consumed: &[prometheus::IntCounter],
) -> (Vec<DeadLetter>, Vec<FeedMessage>) {
    let now = wall_ms();
    let mut letters = Vec::new();
    let mut feed = Vec::new();
    let mut consumed_by_topic = vec![0u64; consumed.len()];
    let runs = {
        let replay_until: HashMap<SourcePartition, i64> =
            lock(&context.partitions).replaying().map(|(source, until)| (*source, until)).collect();
        worker.engine.with(|engine| {
            count_batch(
                engine,
                context,
                batch,
                &replay_until,
                now,
                dead_lettering,
                &mut letters,
                &mut feed,
                &mut consumed_by_topic,
            )
        })
    };
    for (counter, count) in consumed.iter().zip(consumed_by_topic) {
        counter.inc_by(count);
    }
    {
        let mut partitions = lock(&context.partitions);
        for run in runs {
            if partitions.read(&run.source, run.last_offset + 1) {
                info!(topic = %run.topic, partition = run.source.partition, "partition rebuilt: caught up with the previous owner");
            }
        }
    }
    context.publish_restoring();
    (letters, feed)
}

/// Records a failing topic holds back (dead letters, feed messages) are kept in memory up to this;
/// past it, the partitions they come from are paused until the backlog halves (the others go on).
const MAX_PENDING_LETTER_BYTES: usize = 256 * 1024 * 1024;

fn bound_pending_records(
    consumer: &BaseConsumer<WorkerContext>,
    outboxes: &[&mut Outbox],
    paused: &mut TopicPartitionList,
) {
    let bytes: usize = outboxes.iter().map(|o| o.pending_bytes()).sum();
    if paused.count() == 0 && bytes > MAX_PENDING_LETTER_BYTES {
        for source in merged_floors(outboxes.iter().map(|o| &**o)).into_keys() {
            paused.add_partition(consumer.context().topics.name(source), source.partition);
        }
        warn!(
            partitions = paused.count(),
            pending_bytes = bytes,
            "dead letters or feed messages pile up; pausing the partitions they come from until the backlog halves"
        );
        if let Err(e) = consumer.pause(paused) {
            warn!(error = %e, "cannot pause");
        }
    } else if paused.count() > 0 && bytes <= MAX_PENDING_LETTER_BYTES / 2 {
        // Partitions revoked meanwhile are not ours to resume; librdkafka ignores them.
        let _ = consumer.resume(paused);
        info!(partitions = paused.count(), "backlog halved; partitions resumed");
        *paused = TopicPartitionList::new();
    }
}

/// Longest a checkpoint waits for the records its partitions' offsets wait on.
const CHECKPOINT_DRAIN: Duration = Duration::from_millis(500);

/// Before a checkpoint: without reading on, waits up to `CHECKPOINT_DRAIN` for the records
/// pending in the outboxes, storing offsets as they are acknowledged. A partition is
/// checkpointed only where everything read is stored, and under steady traffic nearly every
/// batch leaves a dead letter or a feed message in flight: without this pause such a partition
/// would never be checkpointed.
fn await_held_back(
    worker: &Worker,
    context: &WorkerContext,
    consumer: &BaseConsumer<WorkerContext>,
    outboxes: &mut [&mut Outbox],
) {
    let deadline = Instant::now() + CHECKPOINT_DRAIN;
    while !lock(&context.partitions).held_back().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
        outboxes.iter_mut().for_each(|o| o.service());
        store_safe_offsets(worker, context, consumer, outboxes);
    }
}

/// The outboxes in use, dead letters first.
fn outboxes_mut<'a>(
    dead_letters: &'a mut Option<DeadLetters>,
    feed: &'a mut Option<Outbox>,
) -> Vec<&'a mut Outbox> {
    dead_letters.as_mut().map(|d| &mut d.outbox).into_iter().chain(feed.as_mut()).collect()
}

/// Stores, for every partition read, the offset that is safe to commit, where it moved; publishes
/// the blocked partitions.
fn store_safe_offsets(
    worker: &Worker,
    context: &WorkerContext,
    consumer: &BaseConsumer<WorkerContext>,
    outboxes: &[&mut Outbox],
) {
    let floors = merged_floors(outboxes.iter().map(|o| &**o));
    let blocked: BTreeSet<SourcePartition> = outboxes.iter().flat_map(|o| o.blocked()).collect();
    let (moved, blocked) = {
        let mut partitions = lock(&context.partitions);
        let blocked = blocked.iter().filter(|k| partitions.is_assigned(k)).count();
        (partitions.offsets_to_store(&floors), blocked)
    };
    worker.health.set_blocked(blocked);
    worker.metrics.partitions_blocked.set(blocked as i64);
    let mut store = TopicPartitionList::new();
    for (source, offset) in moved {
        let (topic, partition) = (context.topics.name(source), source.partition);
        if let Err(e) = store.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            warn!(%topic, partition, error = %e, "cannot record offset");
        }
    }
    if store.count() > 0 {
        if let Err(e) = consumer.store_offsets(&store) {
            warn!(error = %e, "cannot store offsets; they are committed on revoke and shutdown");
        }
    }
}

/// Consecutive messages of one partition in a batch.
struct Run<'a> {
    topic: &'a str,
    source: SourcePartition,
    last_offset: i64,
}

/// Counts a batch under the engine lock as runs of one partition (librdkafka hands fetched
/// messages out partition by partition), each run in one engine call; returns the runs, for the
/// offsets to store. A message's topic name costs a strlen and a UTF-8 check, so it is read once
/// per run, and not at all to tell runs apart when only one topic is subscribed.
#[allow(clippy::too_many_arguments)]
fn count_batch<'a>(
    engine: &mut Engine,
    context: &WorkerContext,
    batch: &'a [Fetched<'_>],
    replay_until: &HashMap<SourcePartition, i64>,
    now: i64,
    dead_lettering: bool,
    letters: &mut Vec<DeadLetter>,
    feed: &mut Vec<FeedMessage>,
    consumed_by_topic: &mut [u64],
) -> Vec<Run<'a>> {
    let single_topic = context.topics.names().len() == 1;
    let mut runs = Vec::new();
    let mut start = 0;
    while let Some(first) = batch.get(start) {
        let (topic, partition) = (first.topic(), first.partition());
        let end = start
            + batch[start..]
                .iter()
                .position(|m| m.partition() != partition || (!single_topic && m.topic() != topic))
                .unwrap_or(batch.len() - start);
        let run = &batch[start..end];
        let source = context.topics.source(topic, partition);
        // Messages a previous owner already handled go back into the windows only.
        let until = replay_until.get(&source).copied();
        let replayed = |m: &Fetched<'_>| until.is_some_and(|until| m.offset() < until);
        let mut from = 0;
        while let Some(head) = run.get(from) {
            let replaying = replayed(head);
            let to = from
                + run[from..]
                    .iter()
                    .position(|m| replayed(m) != replaying)
                    .unwrap_or(run.len() - from);
            let part = &run[from..to];
            let payloads: Vec<&[u8]> =
                part.iter().map(|m| m.payload().unwrap_or_default()).collect();
            if replaying {
                engine.replay_batch(source, &payloads, now);
            } else {
                if let Some(count) = consumed_by_topic.get_mut(source.topic as usize) {
                    *count += part.len() as u64;
                }
                engine.process_batch(source, &payloads, now, |i, outcome| {
                    if let (Outcome::Rejected(rejection), Some(message), true) =
                        (outcome, part.get(i), dead_lettering)
                    {
                        letters.push(dead_letter_of(message, source, rejection));
                    }
                });
                feed.extend(engine.take_feed().into_iter().filter_map(|item| {
                    let source_offset = part.get(item.index)?.offset();
                    Some(FeedMessage { source, source_offset, item })
                }));
            }
            from = to;
        }
        if let Some(last) = run.last() {
            runs.push(Run { topic, source, last_offset: last.offset() });
        }
        start = end;
    }
    runs
}

/// Serves the revocation that `unsubscribe` starts before the consumer closes, so the close finds
/// no rebalance under way. Messages polled meanwhile are left unprocessed: their offsets were
/// never stored, so the next owner reads them.
fn drain_until_unassigned(consumer: &BaseConsumer<WorkerContext>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if consumer.assignment().is_ok_and(|assignment| assignment.count() == 0) {
            return;
        }
        let _ = consumer.poll(POLL_TIMEOUT);
    }
    warn!("partitions still assigned after unsubscribing; closing anyway");
}

/// Closes the consumer (leaving the group) on a thread of its own, waiting at most `limit`: a
/// close that cannot reach the coordinator would otherwise wait out the session timeout.
fn close_within(consumer: BaseConsumer<WorkerContext>, limit: Duration) {
    let (done, closed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(consumer);
        let _ = done.send(());
    });
    if closed.recv_timeout(limit).is_err() {
        warn!("the consumer did not close in time; exiting without waiting (the group notices within the session timeout)");
    }
}

/// Takes what the consumer's queue holds, without waiting, then reads the worker's own queue,
/// waiting up to `POLL_TIMEOUT` if nothing came yet: a rebalance waits at most that long.
fn poll_batch<'c>(
    consumer: &'c BaseConsumer<WorkerContext>,
    fetched: Option<&mut FetchQueue>,
    batch_size: usize,
) -> Vec<Fetched<'c>> {
    let mut batch = Vec::new();
    // The consumer's queue first: rebalances and errors, and messages fetched before their
    // partition was routed to `fetched`, which come before anything routed there.
    let mut timeout = if fetched.is_some() { Duration::ZERO } else { POLL_TIMEOUT };
    while batch.len() < batch_size {
        match consumer.poll(timeout) {
            Some(Ok(message)) => batch.push(Fetched::Polled(message)),
            Some(Err(e)) => {
                report_consume_error(consumer, &e);
                break;
            }
            None => break,
        }
        timeout = Duration::ZERO;
    }
    if let Some(fetched) = fetched {
        let wait = if batch.is_empty() { POLL_TIMEOUT } else { Duration::ZERO };
        for message in fetched.read(wait, batch_size - batch.len()) {
            match message.error() {
                None => batch.push(Fetched::Read(message)),
                Some(e) => report_consume_error(consumer, &e),
            }
        }
    }
    batch
}

/// An error in place of a message, by either path: connectivity goes to the rate-limited client
/// log, anything else is a warning.
fn report_consume_error(consumer: &BaseConsumer<WorkerContext>, e: &rdkafka::error::KafkaError) {
    if client_log::is_connectivity_error(e) {
        consumer.context().client_log.connectivity(&e.to_string());
    } else {
        warn!(error = %e, "poll error");
    }
}

fn dead_letter_of(
    message: &Fetched<'_>,
    source: SourcePartition,
    rejection: cxpulse_core::Rejection,
) -> DeadLetter {
    DeadLetter {
        source_topic: message.topic().to_string(),
        source,
        source_offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        reason: rejection.reason.as_str(),
        detail: rejection.detail,
    }
}
