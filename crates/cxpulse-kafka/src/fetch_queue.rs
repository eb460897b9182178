//! Reading fetched messages in batches: one librdkafka call and one queue lock for up to a batch
//! of messages, where rust-rdkafka's `poll` takes a call, a lock, clock reads and an allocation
//! per message (about half the consume loop's own cost, docs/performance.md).
//!
//! A batch call on the consumer's queue would serve rebalances itself (unassigning, past the
//! worker's revoke and assign handling), so the worker reads batches from a queue of its own
//! instead: once a partition is restored and about to be resumed, its fetch queue is forwarded
//! here ([`FetchQueue::route`]; librdkafka keeps an application's forward across fetch restarts),
//! while `poll` on the consumer's queue goes on serving rebalances, errors and whatever was
//! fetched before the forward. Seeks and revokes make older fetched messages outdated, and
//! librdkafka drops those in either path.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};

/// The worker's own queue of fetched messages.
pub(crate) struct FetchQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    client: NonNull<rd::rd_kafka_t>,
    buffer: Vec<*mut rd::rd_kafka_message_t>,
}

impl FetchQueue {
    /// A new queue on `consumer`'s client. Drop it before the consumer.
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<FetchQueue> {
        let client = NonNull::new(consumer.client().native_ptr())?;
        // SAFETY: `client` is the consumer's live handle; the queue is destroyed in `drop`,
        // which the worker runs before it closes the consumer.
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(client.as_ptr()) })?;
        Some(FetchQueue { queue, client, buffer: Vec::new() })
    }

    /// Forwards the fetched messages of `topic`/`partition` (assigned to this consumer) here.
    /// Messages already waiting in its fetch queue move along; those already handed to the
    /// consumer's queue stay there, for `poll`.
    pub fn route(&self, topic: &str, partition: i32) -> bool {
        let Ok(topic) = CString::new(topic) else { return false };
        // SAFETY: the client is live (see `new`); the partition's queue handle is released right
        // after the forward, which the partition's fetch queue keeps on its own.
        unsafe {
            let source =
                rd::rd_kafka_queue_get_partition(self.client.as_ptr(), topic.as_ptr(), partition);
            if source.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(source, self.queue.as_ptr());
            rd::rd_kafka_queue_destroy(source);
        }
        true
    }

    /// Up to `max` messages, waiting up to `timeout` for a first one.
    pub fn read(&mut self, timeout: Duration, max: usize) -> Vec<ReadMessage> {
        self.buffer.clear();
        self.buffer.resize(max, std::ptr::null_mut());
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the queue is live and the buffer holds `max` slots for the call to fill.
        let count = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout_ms,
                self.buffer.as_mut_ptr(),
                max,
            )
        };
        let count = usize::try_from(count).unwrap_or(0).min(max);
        self.buffer[..count].iter().filter_map(|&m| NonNull::new(m).map(ReadMessage)).collect()
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: the handle was made by `rd_kafka_queue_new` and is released once. Partitions
        // still forwarding here keep the queue object alive; librdkafka drops what they send.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// A message read from a [`FetchQueue`], owned until dropped.
pub(crate) struct ReadMessage(NonNull<rd::rd_kafka_message_t>);

impl ReadMessage {
    fn raw(&self) -> &rd::rd_kafka_message_t {
        // SAFETY: librdkafka handed the message over and it lives until `drop`.
        unsafe { self.0.as_ref() }
    }

    /// The error a fetch reported in place of a message, if it is one.
    pub fn error(&self) -> Option<KafkaError> {
        let err = self.raw().err;
        (err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| KafkaError::MessageConsumption(err.into()))
    }

    /// The `len` bytes at `pointer` (a payload or key of this message), if not null.
    fn bytes(&self, pointer: *mut std::ffi::c_void, len: usize) -> Option<&[u8]> {
        // SAFETY: librdkafka gives a payload or key as a pointer to `len` bytes, or null; they
        // live as long as the message, which the returned slice borrows.
        (!pointer.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(pointer as *const u8, len) })
    }
}

impl Drop for ReadMessage {
    fn drop(&mut self) {
        // SAFETY: each message is destroyed once, here.
        unsafe { rd::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}

/// A fetched message by either path: `poll` on the consumer's queue, or a batch read.
pub(crate) enum Fetched<'c> {
    Polled(BorrowedMessage<'c>),
    Read(ReadMessage),
}

impl Fetched<'_> {
    pub fn topic(&self) -> &str {
        match self {
            Fetched::Polled(m) => m.topic(),
            Fetched::Read(m) => {
                // SAFETY: a fetched message's topic handle lives as long as the message.
                let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(m.raw().rkt)) };
                name.to_str().unwrap_or_default()
            }
        }
    }

    pub fn partition(&self) -> i32 {
        match self {
            Fetched::Polled(m) => m.partition(),
            Fetched::Read(m) => m.raw().partition,
        }
    }

    pub fn offset(&self) -> i64 {
        match self {
            Fetched::Polled(m) => m.offset(),
            Fetched::Read(m) => m.raw().offset,
        }
    }

    pub fn payload(&self) -> Option<&[u8]> {
        match self {
            Fetched::Polled(m) => m.payload(),
            Fetched::Read(m) => m.bytes(m.raw().payload, m.raw().len),
        }
    }

    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Fetched::Polled(m) => m.key(),
            Fetched::Read(m) => m.bytes(m.raw().key, m.raw().key_len),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rdkafka::config::ClientConfig;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{Offset, TopicPartitionList};

    use super::*;

    const TOPIC: &str = "routed";

    /// Polls the consumer's queue and reads the fetch queue for `wait`, or until `want` messages
    /// came: the payloads read by each path.
    fn take(
        consumer: &BaseConsumer,
        queue: &mut FetchQueue,
        want: usize,
        wait: Duration,
    ) -> (Vec<String>, Vec<String>) {
        let (mut polled, mut read) = (Vec::new(), Vec::new());
        let text =
            |m: &Fetched<'_>| String::from_utf8_lossy(m.payload().unwrap_or_default()).into();
        let deadline = Instant::now() + wait;
        while polled.len() + read.len() < want && Instant::now() < deadline {
            while let Some(Ok(m)) = consumer.poll(Duration::ZERO) {
                polled.push(text(&Fetched::Polled(m)));
            }
            for m in queue.read(Duration::from_millis(50), 100) {
                assert!(m.error().is_none());
                read.push(text(&Fetched::Read(m)));
            }
        }
        (polled, read)
    }

    fn assign_from_start(consumer: &BaseConsumer) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(TOPIC, 0, Offset::Beginning).expect("partition");
        consumer.assign(&tpl).expect("assign");
    }

    /// A routed partition's messages are read in batches, in order. A reassignment stops the
    /// partition's fetcher, which drops the forward, and librdkafka does not forward it again
    /// (the application's forward stands in its way): its messages then wait where neither
    /// `poll` nor a read finds them, until the partition is routed again. The worker routes on
    /// every restore and again every maintenance round (`WorkerContext::route_processing`).
    #[test]
    fn routed_messages_are_read_in_batches_and_a_lost_forward_comes_back_by_routing_again() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic(TOPIC, 1, 1).expect("topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .expect("producer");
        let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        for payload in &sent {
            producer.send(BaseRecord::<(), _>::to(TOPIC).payload(payload)).expect("queued");
        }
        producer.flush(Duration::from_secs(10)).expect("flushed");
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "routed")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut queue = FetchQueue::new(&consumer).expect("fetch queue");

        assign_from_start(&consumer);
        assert!(queue.route(TOPIC, 0));
        let (polled, read) = take(&consumer, &mut queue, sent.len(), Duration::from_secs(20));
        assert_eq!([polled, read].concat(), sent, "every message once, in order");

        consumer.unassign().expect("unassign");
        assign_from_start(&consumer);
        let (polled, read) = take(&consumer, &mut queue, 1, Duration::from_secs(3));
        assert!(polled.is_empty() && read.is_empty(), "nothing comes: {polled:?} {read:?}");

        assert!(queue.route(TOPIC, 0));
        let (polled, read) = take(&consumer, &mut queue, sent.len(), Duration::from_secs(20));
        assert!(polled.is_empty(), "all by the fetch queue: {polled:?}");
        assert_eq!(read, sent, "every message once more, in order, after routing again");
    }
}
