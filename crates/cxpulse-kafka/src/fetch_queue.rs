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
    pub fn error(&self) -> Option<String> {
        if self.raw().err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        // SAFETY: the message is live; the error string is a static C string.
        let text = unsafe { CStr::from_ptr(rd::rd_kafka_err2str(self.raw().err)) };
        Some(text.to_string_lossy().into_owned())
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
