//! CPU time of this process's threads, from `/proc/self`, for the benchmark's CPU per event.
//! A phase counts the threads started while it ran (a consumer's, a worker's and their
//! librdkafka threads, including those that ended) and the thread that drives it, and not the
//! embedded broker's threads, which were running before it and serve every phase alike.

use std::collections::HashMap;

/// `/proc` counts CPU time in ticks of 1/100 s on Linux, whatever the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time taken since [`PhaseCpu::start`] by the threads started since and by the caller's.
pub struct PhaseCpu {
    before: HashMap<u32, u64>,
    process_before: u64,
    driver: Option<u32>,
}

impl PhaseCpu {
    pub fn start() -> PhaseCpu {
        PhaseCpu {
            before: thread_ticks(),
            process_before: process_ticks().unwrap_or(0),
            driver: current_thread(),
        }
    }

    /// Seconds of CPU so far.
    pub fn seconds(&self) -> f64 {
        self.ticks(&thread_names_and_ticks()) as f64 / TICKS_PER_SECOND
    }

    /// Ticks so far, given the live threads: the whole process's (which keeps the time of threads
    /// that ended), less what the threads older than the phase, other than the driver, took
    /// meanwhile.
    fn ticks(&self, threads: &[(u32, u64, String)]) -> u64 {
        let process = process_ticks().unwrap_or(0).saturating_sub(self.process_before);
        let older: u64 = threads
            .iter()
            .filter(|(tid, _, _)| Some(*tid) != self.driver)
            .filter_map(|(tid, ticks, _)| Some(ticks.saturating_sub(*self.before.get(tid)?)))
            .sum();
        process.saturating_sub(older)
    }

    /// [`seconds`](Self::seconds) split by thread name (librdkafka names its threads `rdk:...`):
    /// the threads started in the phase that still run, the driver as `driver`, and what the
    /// threads that ended took as `ended threads`. Largest first.
    pub fn by_thread(&self) -> Vec<(String, f64)> {
        let threads = thread_names_and_ticks();
        let total = self.ticks(&threads);
        let mut names: HashMap<String, u64> = HashMap::new();
        let mut named = 0;
        for (tid, ticks, name) in threads {
            let ticks = match self.before.get(&tid) {
                None => ticks,
                Some(before) if Some(tid) == self.driver => ticks.saturating_sub(*before),
                Some(_) => continue,
            };
            let name = if Some(tid) == self.driver { "driver".to_string() } else { name };
            *names.entry(name).or_default() += ticks;
            named += ticks;
        }
        names.insert("ended threads".into(), total.saturating_sub(named));
        let mut list: Vec<(String, f64)> = names
            .into_iter()
            .filter(|(_, ticks)| *ticks > 0)
            .map(|(name, ticks)| (name, ticks as f64 / TICKS_PER_SECOND))
            .collect();
        list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list
    }
}

/// Every live thread's id, user plus system ticks and name.
fn thread_names_and_ticks() -> Vec<(u32, u64, String)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_string();
            Some((tid, ticks_of(&stat)?, name))
        })
        .collect()
}

/// User plus system ticks of the whole process, ended threads included.
fn process_ticks() -> Option<u64> {
    ticks_of(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// CPU seconds (user plus system) another process of ours has spent so far, ended threads
/// included; `None` once it is gone.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ticks_of(&stat)? as f64 / TICKS_PER_SECOND)
}

/// User plus system ticks of every thread of this process, by thread id.
fn thread_ticks() -> HashMap<u32, u64> {
    thread_names_and_ticks().into_iter().map(|(tid, ticks, _)| (tid, ticks)).collect()
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
    fn the_threads_started_in_a_phase_are_counted_even_when_ended_and_the_older_ones_are_not() {
        let _alone = ONE_PHASE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
        // One thread that ends before the reading, one that lives on.
        let ended = std::thread::spawn(|| spin_for_ticks(20));
        let _ = ended.join();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let lives = std::thread::spawn(move || {
            spin_for_ticks(20);
            let _ = stopped.recv();
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let seconds = loop {
            let seconds = phase.seconds();
            if seconds >= 0.4 || std::time::Instant::now() > deadline {
                break seconds;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let _ = stop.send(());
        let _ = lives.join();
        let _ = done.send(());
        let _ = older.join();
        assert!(seconds >= 0.4, "the ended and the live thread's 0.2 s each: {seconds}");
        assert!(seconds < 0.85, "not the older thread's 0.5 s: {seconds}");
    }

    /// The phase tests count every thread the process starts: one at a time.
    static ONE_PHASE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn by_thread_names_the_live_threads_and_sums_the_ended_ones() {
        let _alone = ONE_PHASE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let phase = PhaseCpu::start();
        let _ = std::thread::spawn(|| spin_for_ticks(20)).join();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let named = std::thread::Builder::new()
            .name("cpu-test-spin".into())
            .spawn(move || {
                spin_for_ticks(20);
                let _ = stopped.recv();
            })
            .expect("spawn");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let seconds_of = |threads: &[(String, f64)], name: &str| {
            threads.iter().find(|(n, _)| n == name).map_or(0.0, |(_, s)| *s)
        };
        let threads = loop {
            let threads = phase.by_thread();
            if seconds_of(&threads, "cpu-test-spin") >= 0.2 || std::time::Instant::now() > deadline
            {
                break threads;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let _ = stop.send(());
        let _ = named.join();
        assert!(seconds_of(&threads, "cpu-test-spin") >= 0.2, "{threads:?}");
        assert!(seconds_of(&threads, "ended threads") >= 0.2, "{threads:?}");
    }
}
