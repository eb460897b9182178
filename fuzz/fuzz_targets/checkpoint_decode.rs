//! Arbitrary bytes into `PartitionCheckpoint::decode`: it must never panic, and a checkpoint it
//! accepts must restore (or be refused with `Err`) without panicking, into an engine with the
//! default windows and into one configured with the checkpoint's own windows (so that restore
//! gets past its window check), after which the restored state is read, maintained and
//! checkpointed again.
//!
//! Input layout: the first byte is a mode. Bit 0 clear: the rest goes to `decode` as it is. Bit 0
//! set: the rest is taken as the checkpoint body and gets the magic and a correct CRC put in
//! front, so the fuzzer reaches the postcard decoding and `restore` instead of stopping at the
//! CRC check. Bit 1: event clock instead of the wall clock.
#![no_main]

use std::borrow::Cow;

use cxpulse_core::checkpoint::PartitionCheckpoint;
use cxpulse_core::{ClockMode, Engine, EngineConfig, SourcePartition, WindowSpec};
use libfuzzer_sys::fuzz_target;

const MAGIC: &[u8; 4] = b"CXPS";
/// 2027-01-15T08:00:00Z.
const WALL_MS: i64 = 1_800_000_000_000;
const PARTITION: SourcePartition = SourcePartition { topic: 0, partition: 0 };
const OTHER: SourcePartition = SourcePartition { topic: 0, partition: 1 };

const SIGNUP: &[u8] = br#"{"event_id":"e2","type":"customer_lifecycle","action":"signup","customer_id":"c1","occurred_at":1800000000000,"brand":"acme","segment":"smb"}"#;
const BASE: &[u8] = br#"{"event_id":"e3","type":"customer_base","active_customers":10,"occurred_at":1799999000000,"brand":"acme","segment":"smb"}"#;

fn exercise(config: EngineConfig, checkpoint: &PartitionCheckpoint) {
    let mut engine = Engine::new(config).expect("valid config");
    // Some state on another partition first, so the restore meets existing series and dedup.
    let event = br#"{"event_id":"e1","type":"survey_response","occurred_at":1800000000000,"brand":"acme","segment":"smb","survey":"nps","score":9,"response_id":"r1"}"#;
    engine.process(OTHER, event, WALL_MS);
    if engine.restore(PARTITION, checkpoint).is_err() {
        return;
    }
    engine.snapshot(WALL_MS);
    for event in [&event[..], SIGNUP, BASE] {
        engine.process(PARTITION, event, WALL_MS);
    }
    engine.maintain(WALL_MS + 60_000);
    engine.snapshot(WALL_MS + 60_000);
    let again = engine.checkpoint(PARTITION, checkpoint.offset).encode().expect("a checkpoint encodes");
    PartitionCheckpoint::decode(&again).expect("an encoded checkpoint decodes");
    engine.drop_partition(PARTITION);
    engine.snapshot(WALL_MS + 120_000);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes: Cow<'_, [u8]> = if mode & 1 == 0 {
        Cow::Borrowed(rest)
    } else {
        let mut framed = Vec::with_capacity(rest.len() + 8);
        framed.extend_from_slice(MAGIC);
        framed.extend_from_slice(&crc32fast::hash(rest).to_le_bytes());
        framed.extend_from_slice(rest);
        Cow::Owned(framed)
    };
    let Ok(checkpoint) = PartitionCheckpoint::decode(&bytes) else { return };
    let clock = if mode & 2 == 0 { ClockMode::Wall } else { ClockMode::Event };

    exercise(EngineConfig { clock, ..EngineConfig::default() }, &checkpoint);

    if checkpoint.window_sizes_ms.is_empty() || checkpoint.window_sizes_ms.len() > 8 {
        return;
    }
    let windows: Option<Vec<WindowSpec>> =
        checkpoint.window_sizes_ms.iter().map(|&ms| WindowSpec::new(ms).ok()).collect();
    if let Some(windows) = windows {
        exercise(EngineConfig { windows, clock, ..EngineConfig::default() }, &checkpoint);
    }
});
