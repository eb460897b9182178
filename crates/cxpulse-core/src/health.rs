//! Liveness and readiness as the worker reports them and the HTTP edge reads them: plain atomics,
//! written on the consume loop, read by probes. Times are passed in by the caller.
//!
//! Live: the consume loop went round within the stall limit (it never waits on one message: a
//! dead letter that is not acknowledged holds back its partition's offsets, not the loop).
//! Ready: live, joined, a broker reachable, nothing restoring, no partition blocked, not stopping.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

/// How long the consume loop may go without a heartbeat before `/healthz` fails, by default.
pub const HEARTBEAT_TIMEOUT_MS: i64 = 30_000;

#[derive(Debug)]
pub struct Health {
    heartbeat_ms: AtomicI64,
    stall_limit_ms: AtomicI64,
    blocked: AtomicUsize,
    joined: AtomicBool,
    broker_up: AtomicBool,
    assigned: AtomicUsize,
    restoring: AtomicUsize,
    stopping: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            heartbeat_ms: AtomicI64::new(0),
            stall_limit_ms: AtomicI64::new(HEARTBEAT_TIMEOUT_MS),
            blocked: AtomicUsize::new(0),
            joined: AtomicBool::new(false),
            broker_up: AtomicBool::new(false),
            assigned: AtomicUsize::new(0),
            restoring: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// How long the consume loop may make no progress before `/healthz` fails.
    pub fn set_stall_limit_ms(&self, limit_ms: i64) {
        self.stall_limit_ms.store(limit_ms.max(1), Ordering::Relaxed);
    }

    /// Partitions whose offsets cannot advance (a dead letter pending too long).
    pub fn set_blocked(&self, partitions: usize) {
        self.blocked.store(partitions, Ordering::Relaxed);
    }

    pub fn blocked(&self) -> usize {
        self.blocked.load(Ordering::Relaxed)
    }

    pub fn heartbeat(&self, now_ms: i64) {
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn set_joined(&self, joined: bool) {
        self.joined.store(joined, Ordering::Relaxed);
    }

    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.store(up, Ordering::Relaxed);
    }

    pub fn set_assigned(&self, partitions: usize) {
        self.assigned.store(partitions, Ordering::Relaxed);
    }

    pub fn set_restoring(&self, partitions: usize) {
        self.restoring.store(partitions, Ordering::Relaxed);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn assigned(&self) -> usize {
        self.assigned.load(Ordering::Relaxed)
    }

    pub fn restoring(&self) -> usize {
        self.restoring.load(Ordering::Relaxed)
    }

    pub fn broker_up(&self) -> bool {
        self.broker_up.load(Ordering::Relaxed)
    }

    /// The process and its consume loop are alive.
    pub fn is_live(&self, now_ms: i64) -> bool {
        let beat = self.heartbeat_ms.load(Ordering::Relaxed);
        beat > 0 && now_ms - beat < self.stall_limit_ms.load(Ordering::Relaxed)
    }

    /// Joined the group, reaching a broker, every assigned partition restored, none blocked, not
    /// shutting down.
    pub fn is_ready(&self, now_ms: i64) -> bool {
        self.is_live(now_ms)
            && self.joined.load(Ordering::Relaxed)
            && self.broker_up()
            && self.restoring() == 0
            && self.blocked() == 0
            && !self.stopping.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_condition() {
        let health = Health::default();
        assert!(!health.is_live(1_000));
        health.heartbeat(1_000);
        health.set_joined(true);
        health.set_broker_up(true);
        assert!(health.is_ready(2_000));
        assert!(!health.is_live(1_000 + HEARTBEAT_TIMEOUT_MS));
        health.set_restoring(1);
        assert!(!health.is_ready(2_000));
        health.set_restoring(0);
        health.set_broker_up(false);
        assert!(!health.is_ready(2_000));
    }

    #[test]
    fn a_blocked_partition_is_not_ready_and_a_stall_is_not_live() {
        let health = Health::default();
        health.heartbeat(1_000);
        health.set_joined(true);
        health.set_broker_up(true);
        health.set_blocked(1);
        assert!(!health.is_ready(2_000));
        assert!(health.is_live(2_000), "a blocked partition does not stop the loop");
        health.set_blocked(0);
        assert!(health.is_ready(2_000));
        health.set_stall_limit_ms(5_000);
        assert!(health.is_live(5_999));
        assert!(!health.is_live(6_000));
    }
}
