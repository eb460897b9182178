//! The one owner of a worker's engine. The consume loop counts through it, the rebalance
//! callbacks checkpoint and restore through it, the HTTP handlers take snapshots through it;
//! none of them holds the lock itself, so there is one place that decides what a poisoned lock
//! means.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{Engine, PipelineCounts};
use crate::Snapshot;

/// A worker's engine, shared between its threads.
#[derive(Clone)]
pub struct SharedEngine(Arc<Mutex<Engine>>);

impl SharedEngine {
    pub fn new(engine: Engine) -> SharedEngine {
        SharedEngine(Arc::new(Mutex::new(engine)))
    }

    /// Runs `f` on the engine, holding the lock for as long as `f` runs: keep it short.
    pub fn with<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut self.lock())
    }

    /// The counts right now (`wall_ms` drives the wall clock and the windows' ends).
    pub fn snapshot(&self, wall_ms: i64) -> Snapshot {
        self.lock().snapshot(wall_ms)
    }

    /// [`SharedEngine::snapshot`] with each window's steps, for the scores API and the page.
    pub fn snapshot_with_steps(&self, wall_ms: i64) -> Snapshot {
        self.lock().snapshot_with_steps(wall_ms)
    }

    /// What the pipeline has consumed, counted and rejected so far.
    pub fn pipeline(&self) -> PipelineCounts {
        self.lock().pipeline().clone()
    }

    /// A panic while the lock was held is a bug, and it ends the process's consume loop; the
    /// engine is plain data that every call leaves consistent between events, so readers (the
    /// probes, /metrics) carry on with it rather than panic in turn.
    fn lock(&self) -> MutexGuard<'_, Engine> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;

    #[test]
    fn a_panic_while_locked_leaves_the_engine_readable() {
        let shared = SharedEngine::new(Engine::new(EngineConfig::default()).unwrap());
        let holder = shared.clone();
        let panicked = std::thread::spawn(move || holder.with(|_| panic!("a bug"))).join();
        assert!(panicked.is_err());
        assert_eq!(shared.pipeline().consumed, 0);
        assert_eq!(shared.snapshot(0).pipeline.consumed, 0);
    }
}
