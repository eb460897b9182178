//! The per-event path allocates nothing in a warm engine: a heap allocation per event would cost
//! as much as a fifth of the event's whole budget, and under load the allocator's locks and
//! page faults weigh on every other thread of the worker. Tables grow in amortized steps, so a
//! warm engine allocates only now and then; this counts the allocations of the thread doing the
//! counting (a counting global allocator) and holds them far below one per event.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cxpulse_core::synth::{fetch_runs, Synth, SynthConfig};
use cxpulse_core::{Engine, EngineConfig, SourcePartition};

struct CountingAllocator;

thread_local! {
    /// Allocations of this thread while counting is on; `None` while off.
    static COUNTED: Cell<Option<u64>> = const { Cell::new(None) };
}

// SAFETY: every call is passed to `System` unchanged; the count is a thread-local cell.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count_one() {
    // `try_with`: the allocator may run while the thread's locals are torn down.
    let _ = COUNTED.try_with(|counted| {
        if let Some(n) = counted.get() {
            counted.set(Some(n + 1));
        }
    });
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations `f` makes on this thread.
fn allocations_of(f: impl FnOnce()) -> u64 {
    COUNTED.with(|counted| counted.set(Some(0)));
    f();
    COUNTED.with(|counted| counted.replace(None)).unwrap_or(0)
}

const NOW: i64 = 1_795_428_000_000;

#[test]
fn a_warm_engine_counts_gateway_traffic_without_allocating_per_event() {
    const WARM: u64 = 200_000;
    const MEASURED: u64 = 200_000;
    // Answers with response_id and customer_id, corrections, lifecycle events; ten per
    // millisecond over 40 s, checkpoints tracked as a worker with a state topic tracks them.
    let mut synth =
        Synth::new(SynthConfig { dip_brand: None, gateway_shape: true, ..SynthConfig::default() });
    let time_of = |i: u64| NOW - 60_000 + (i / 10) as i64;
    let runs = fetch_runs(&mut synth, WARM + MEASURED, 16, 500, time_of, |i, _| (i % 16) as usize);
    let (warm, measured) = runs.split_at(runs.len() / 2);
    let feed = |engine: &mut Engine, runs: &[cxpulse_core::synth::FetchRun]| {
        for run in runs {
            let payloads = run.payloads();
            let partition = SourcePartition { topic: 0, partition: run.partition };
            engine.process_batch(partition, &payloads, NOW, |_, outcome| {
                std::hint::black_box(outcome);
            });
        }
    };
    let mut engine = Engine::new(EngineConfig::default()).expect("default config");
    feed(&mut engine, warm);
    // After a first checkpoint, every new id and answer is also marked for the next one.
    for partition in 0..16 {
        let batch = engine.checkpoint(SourcePartition { topic: 0, partition }, 1);
        assert!(!batch.records.is_empty(), "partition {partition} has state to checkpoint");
    }
    let payload_lists: u64 = measured.len() as u64;
    let allocations = allocations_of(|| feed(&mut engine, measured));
    let counted = engine.pipeline().counted;
    assert!(counted >= (WARM + MEASURED) * 9 / 10, "counted {counted}");
    // Each run's list of payloads is the caller's one allocation; the engine's own must be rare.
    let engine_allocations = allocations.saturating_sub(payload_lists);
    println!("{allocations} allocations for {MEASURED} events in {payload_lists} runs");
    assert!(
        engine_allocations * 100 <= MEASURED,
        "{engine_allocations} allocations by the engine for {MEASURED} events: more than one in 100"
    );
}
