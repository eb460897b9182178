//! The two small helpers every part of the Kafka edge needs: a mutex lock that survives a
//! panicked holder, and the wall clock in epoch milliseconds. They live here, below every other
//! module, so that none of them reaches into the worker or the consumer context for them.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Locks even when another thread panicked while holding the lock: the state is plain data.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Now, in milliseconds since the Unix epoch (0 for a clock set before 1970).
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_still_hands_out_the_data() {
        let mutex = std::sync::Arc::new(Mutex::new(7));
        let held = mutex.clone();
        let panicked = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("holder panics");
        })
        .join();
        assert!(panicked.is_err() && mutex.is_poisoned());
        *lock(&mutex) += 1;
        assert_eq!(*lock(&mutex), 8);
    }

    #[test]
    fn wall_ms_is_after_2020() {
        assert!(wall_ms() > 1_577_836_800_000, "{}", wall_ms());
    }
}
