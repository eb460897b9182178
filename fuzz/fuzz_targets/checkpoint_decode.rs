//! Arbitrary records into `Engine::restore`, as a worker finds them on its state topic (a damaged
//! checkpoint, another version's, a write cut short, a stranger's records): nothing may panic. A
//! restore is tried into an engine with the default windows and, when the manifest decodes, into
//! one configured with the manifest's own windows (so that restore gets past its window check).
//! A refused restore must leave its first checkpoint deleting every record it could not use; an
//! accepted one returns the manifest's offset, and the state is then read, fed events,
//! maintained and checkpointed again, and that checkpoint, written over the records, must restore
//! into a fresh engine.
//!
//! Input layout: the first byte is a mode: bit 0, event clock instead of the wall clock; bit 1,
//! the manifest (if it decodes) is made to name the segments present, with their true counts and
//! CRCs, so that restore gets past its completeness check to decoding and validating the state;
//! bit 2, a state memory budget small enough to evict restored buckets. The rest is a sequence of
//! chunks `[tag][length: u16 LE][value]` (the last one cut short by the end of the input). The
//! tag's low four bits pick the key among `keys()`; bit 4 set, the value is the body only and gets
//! a correct header: for the manifest, magic, version and CRC; for a part, magic, version, the
//! seq and part index of its key, the count of framed parts of its segment and the CRC of their
//! payloads joined, so that the fuzzer reaches the decoding instead of stopping at the CRC check.
//! A key written twice keeps its last value, as log compaction does.
//!
//! The seeds in `fuzz/seeds/checkpoint_decode` are real engine checkpoints (two, the second
//! incremental, written over the first) in this layout. With `CXPULSE_FUZZ_TRACE=1`, an input's
//! records and each restore's result are printed to stderr.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use cxpulse_core::buckets::span_of;
use cxpulse_core::checkpoint::{self, GroupRef, Manifest, Part, RecordKey, SegmentKind};
use cxpulse_core::{ClockMode, Engine, EngineConfig, SourcePartition, WindowSpec};
use libfuzzer_sys::fuzz_target;

/// 2027-01-15T08:00:00Z.
const WALL_MS: i64 = 1_800_000_000_000;
const PARTITION: SourcePartition = SourcePartition { topic: 0, partition: 0 };
const OTHER: SourcePartition = SourcePartition { topic: 0, partition: 1 };

const NPS: &[u8] = br#"{"event_id":"e1","type":"survey_response","occurred_at":1800000000000,"brand":"acme","segment":"smb","survey":"nps","score":9,"response_id":"r1"}"#;
const SIGNUP: &[u8] = br#"{"event_id":"e2","type":"customer_lifecycle","action":"signup","customer_id":"c1","occurred_at":1800000000000,"brand":"acme","segment":"smb"}"#;
const BASE: &[u8] = br#"{"event_id":"e3","type":"customer_base","active_customers":10,"occurred_at":1799999000000,"brand":"acme","segment":"smb"}"#;

/// The keys a chunk can be written under. Buckets are numbered by time, so the plausible ones are
/// around the default horizons' bucket at `WALL_MS` (where a checkpoint written at that time puts
/// its ids and answers); windows groups are numbered by seq. Also a bucket long expired, one
/// ahead of the clock, a generation numbered from a wall-clock seq floor, a segment in two
/// parts, and a key that is no checkpoint key at all.
fn keys() -> &'static [String; 16] {
    static KEYS: OnceLock<[String; 16]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let config = EngineConfig::default();
        let d = WALL_MS.div_euclid(span_of(config.dedup_horizon_ms));
        let a = WALL_MS.div_euclid(span_of(config.correction_horizon_ms));
        let far = WALL_MS;
        [
            "m".to_string(),
            format!("d/{d}/1/0"),
            format!("d/{d}/1/1"),
            format!("d/{d}/2/0"),
            format!("d/{}/2/0", d - 1),
            format!("d/{}/3/0", d + 1),
            "d/0/1/0".to_string(),
            format!("a/{a}/1/0"),
            format!("a/{a}/2/0"),
            format!("a/{}/1/0", a - 1),
            "w/1/1/0".to_string(),
            "w/1/1/1".to_string(),
            "w/1/2/0".to_string(),
            "w/3/3/0".to_string(),
            format!("w/{far}/{far}/0"),
            "m/".to_string(),
        ]
    })
}

const FRAMED: u8 = 0x10;

/// The input's records, latest value per key, framed where the tag asks for it.
fn records(mut rest: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut latest: BTreeMap<&str, (bool, &[u8])> = BTreeMap::new();
    while let Some((&tag, tail)) = rest.split_first() {
        let (length, tail) = match tail {
            [lo, hi, tail @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), tail),
            _ => (0, &[][..]),
        };
        let (value, tail) = tail.split_at(length.min(tail.len()));
        latest.insert(&keys()[usize::from(tag & 0x0f)], (tag & FRAMED != 0, value));
        rest = tail;
    }

    // Magic and version, as the engine writes them.
    let (empty, _) = checkpoint::split_parts(0, &[]);
    let prefix = &empty[0][..8];

    // Each framed segment's part count and CRC, over its framed parts in index order.
    let mut segments: BTreeMap<(SegmentKind, i64, u64), BTreeMap<u32, &[u8]>> = BTreeMap::new();
    for (key, &(framed, value)) in &latest {
        if let (true, Some(RecordKey::Part { kind, group, seq, part })) =
            (framed, RecordKey::parse(key))
        {
            segments.entry((kind, group, seq)).or_default().insert(part, value);
        }
    }
    let framing = |kind, group, seq| -> (u32, u32) {
        let parts = &segments[&(kind, group, seq)];
        let joined: Vec<u8> = parts.values().flat_map(|p| p.iter().copied()).collect();
        (parts.len() as u32, crc32fast::hash(&joined))
    };

    latest
        .into_iter()
        .map(|(key, (framed, value))| {
            let framed = match (framed, RecordKey::parse(key)) {
                (false, _) | (true, None) => value.to_vec(),
                (true, Some(RecordKey::Manifest)) => {
                    [prefix, &crc32fast::hash(value).to_le_bytes(), value].concat()
                }
                (true, Some(RecordKey::Part { kind, group, seq, part })) => {
                    let (count, crc) = framing(kind, group, seq);
                    [
                        prefix,
                        &seq.to_le_bytes(),
                        &part.to_le_bytes(),
                        &count.to_le_bytes(),
                        &crc.to_le_bytes(),
                        value,
                    ]
                    .concat()
                }
            };
            (key.to_string(), framed)
        })
        .collect()
}

/// Makes the manifest name exactly the segments that join, with their counts and CRCs, and a seq
/// that covers them all: what a matching complete checkpoint would have written.
fn name_segments_present(manifest: &mut Manifest, records: &BTreeMap<String, Vec<u8>>) {
    let mut segments: BTreeMap<(SegmentKind, i64, u64), Vec<Part<'_>>> = BTreeMap::new();
    for (key, value) in records {
        let Some(RecordKey::Part { kind, group, seq, .. }) = RecordKey::parse(key) else {
            continue;
        };
        if let Ok(part) = checkpoint::parse_part(value) {
            segments.entry((kind, group, seq)).or_default().push(part);
        }
    }
    let mut groups: BTreeMap<(SegmentKind, i64), GroupRef> = BTreeMap::new();
    for ((kind, group, seq), mut parts) in segments {
        parts.sort_by_key(|p| p.index);
        if let Ok(body) = checkpoint::join_parts(&parts) {
            let reference =
                groups.entry((kind, group)).or_insert(GroupRef { group, ..GroupRef::default() });
            reference.add(crc32fast::hash(&body));
            manifest.seq = manifest.seq.max(seq);
        }
    }
    let of =
        |kind: SegmentKind| groups.iter().filter(move |((k, _), _)| *k == kind).map(|(_, r)| *r);
    manifest.windows = of(SegmentKind::Windows)
        .find(|r| r.group == manifest.windows.group)
        .or_else(|| of(SegmentKind::Windows).next())
        .unwrap_or(GroupRef { group: manifest.windows.group, ..GroupRef::default() });
    manifest.dedup = of(SegmentKind::Dedup).collect();
    manifest.answers = of(SegmentKind::Answers).collect();
}

fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CXPULSE_FUZZ_TRACE").is_some())
}

fn exercise(config: EngineConfig, records: &[(String, Vec<u8>)], manifest: Option<&Manifest>) {
    let mut engine = Engine::new(config.clone()).expect("valid config");
    // State on another partition first, so the restore meets existing series.
    engine.process(OTHER, NPS, WALL_MS);
    let restored = engine.restore(PARTITION, records, 0);
    if tracing() {
        let windows: Vec<&str> = engine.config().windows.iter().map(|w| w.name.as_str()).collect();
        eprintln!("restore with windows {windows:?}: {restored:?}");
    }
    let offset = match restored {
        Ok(offset) => offset,
        Err(_) => {
            let batch = engine.checkpoint(PARTITION, 0);
            for (key, _) in records {
                if let Some(key @ RecordKey::Part { .. }) = RecordKey::parse(key) {
                    assert!(batch.tombstones.contains(&key), "{key} refused but not deleted");
                }
            }
            return;
        }
    };
    assert_eq!(Some(offset), manifest.map(|m| m.offset), "the offset restored is the manifest's");
    engine.snapshot(WALL_MS);
    for event in [NPS, SIGNUP, BASE] {
        engine.process(PARTITION, event, WALL_MS);
    }
    engine.maintain(WALL_MS + 60_000);
    engine.snapshot(WALL_MS + 60_000);

    // The next checkpoint builds on the segments restored, so it is written over them.
    let batch = engine.checkpoint(PARTITION, offset);
    let mut topic: BTreeMap<String, Vec<u8>> = records.iter().cloned().collect();
    for (key, value) in &batch.records {
        topic.insert(key.to_string(), value.clone());
    }
    for key in &batch.tombstones {
        topic.remove(&key.to_string());
    }
    let topic: Vec<(String, Vec<u8>)> = topic.into_iter().collect();
    let mut fresh = Engine::new(config).expect("valid config");
    let again = fresh.restore(PARTITION, &topic, 0);
    assert_eq!(again, Ok(offset), "the checkpoint after a restore restores");

    engine.drop_partition(PARTITION);
    engine.snapshot(WALL_MS + 120_000);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let clock = if mode & 1 == 0 { ClockMode::Wall } else { ClockMode::Event };
    let state_memory_bytes = (mode & 4 != 0).then_some(4096);
    let mut records = records(rest);
    let manifest_key = RecordKey::Manifest.to_string();
    let mut manifest = records.get(&manifest_key).and_then(|bytes| Manifest::decode(bytes).ok());
    if let (true, Some(manifest)) = (mode & 2 != 0, manifest.as_mut()) {
        name_segments_present(manifest, &records);
        if let Ok(bytes) = manifest.encode() {
            records.insert(manifest_key, bytes);
        }
    }
    let records: Vec<(String, Vec<u8>)> = records.into_iter().collect();
    if tracing() {
        for (key, value) in &records {
            eprintln!("{key}: {} bytes", value.len());
        }
        eprintln!("manifest: {manifest:?}");
    }

    let config = EngineConfig { clock, state_memory_bytes, ..EngineConfig::default() };
    let default_sizes: Vec<i64> = config.windows.iter().map(|w| w.size_ms).collect();
    exercise(config, &records, manifest.as_ref());

    let Some(manifest) = manifest else { return };
    let sizes = &manifest.window_sizes_ms;
    if sizes.is_empty() || sizes.len() > 8 || *sizes == default_sizes {
        return;
    }
    let windows: Option<Vec<WindowSpec>> =
        sizes.iter().map(|&ms| WindowSpec::new(ms).ok()).collect();
    if let Some(windows) = windows {
        let config = EngineConfig { windows, clock, state_memory_bytes, ..EngineConfig::default() };
        exercise(config, &records, Some(&manifest));
    }
});
