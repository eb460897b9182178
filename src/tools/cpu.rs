//! CPU time of this process's threads, from `/proc/self/task`, for the benchmark's CPU per event.
//! A phase counts the threads started while it ran (a consumer's, a worker's and their
//! librdkafka threads) and the thread that drives it, and not the embedded broker's threads,
//! which were running before it and serve every phase alike.

use std::collections::HashMap;

/// `/proc` counts CPU time in ticks of 1/100 s on Linux, whatever the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time taken since [`PhaseCpu::start`] by the threads started since and by the caller's.
pub struct PhaseCpu {
    before: HashMap<u32, u64>,
    driver: Option<u32>,
}

impl PhaseCpu {
    pub fn start() -> PhaseCpu {
        PhaseCpu { before: thread_ticks(), driver: current_thread() }
    }

    /// Seconds of CPU so far; read it before the phase's threads end (an ended thread's time is
    /// gone from `/proc`).
    pub fn seconds(&self) -> f64 {
        let now = thread_ticks();
        let started_since: u64 = now
            .iter()
            .filter(|(tid, _)| !self.before.contains_key(tid))
            .map(|(_, ticks)| ticks)
            .sum();
        let driver = self.driver.map_or(0, |tid| {
            now.get(&tid)
                .copied()
                .unwrap_or(0)
                .saturating_sub(self.before.get(&tid).copied().unwrap_or(0))
        });
        (started_since + driver) as f64 / TICKS_PER_SECOND
    }
}

/// User plus system ticks of every thread of this process, by thread id.
fn thread_ticks() -> HashMap<u32, u64> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return HashMap::new() };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            Some((tid, ticks_of(&stat)?))
        })
        .collect()
}

/// utime + stime of a `stat` line: fields 14 and 15, counted after the command name, which is in
/// parentheses and may hold spaces.
fn ticks_of(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

fn current_thread() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_user_plus_system_ticks() {
        let line = "4242 (rdk:broker 1) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 9 0";
        assert_eq!(ticks_of(line), Some(280));
        assert_eq!(ticks_of("garbage"), None);
    }

    /// Spins until this thread has used `ticks` of CPU (by its own account, whatever the load).
    fn spin_for_ticks(ticks: u64) {
        let own =
            || std::fs::read_to_string("/proc/thread-self/stat").ok().and_then(|s| ticks_of(&s));
        let start = own().unwrap_or(0);
        while own().unwrap_or(u64::MAX) < start + ticks {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn the_threads_started_in_a_phase_are_counted_and_the_older_ones_are_not() {
        // A thread that used half a second of CPU before the phase, and lives on through it.
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let (ready, older_ready) = std::sync::mpsc::channel();
        let older = std::thread::spawn(move || {
            spin_for_ticks(50);
            let _ = ready.send(());
            let _ = wait.recv();
        });
        let _ = older_ready.recv();
        let phase = PhaseCpu::start();
        // Read while the new thread lives: an ended thread's time is gone from /proc.
        let lives = std::thread::spawn(|| {
            spin_for_ticks(30);
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        let seconds = loop {
            let seconds = phase.seconds();
            if seconds >= 0.3 || lives.is_finished() {
                break seconds;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let _ = lives.join();
        let _ = done.send(());
        let _ = older.join();
        assert!(seconds >= 0.3, "the live thread's 0.3 s: {seconds}");
        assert!(seconds < 0.75, "not the older thread's 0.5 s: {seconds}");
    }
}
