//! The record format of incremental checkpoints on the compacted state topic.
//!
//! A partition's state is a set of immutable *segments*, each written once under its own key and
//! split into parts that fit Kafka's default message size, plus one *manifest* written last. The
//! manifest names the offset the state reflects and, per group of segments (a dedup bucket, an
//! answer bucket, the current windows generation), how many segments it holds and the XOR of their
//! CRCs. A restore uses only what the manifest names, so a worker killed mid-checkpoint leaves the
//! previous complete checkpoint intact; anything missing, damaged or of another format version is
//! an error and the partition is replayed instead.
//!
//! Keys, below the partition's prefix `group/topic/partition/`:
//! `m` (the manifest) and `{kind}/{group}/{seq}/{part}` with kind `d` (event ids, group = bucket),
//! `a` (correctable answers, group = bucket) or `w` (windows, group = generation). Expired groups
//! get tombstones, so log compaction keeps the topic proportional to the live state.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::buckets::Key;
use crate::drop_evidence::DropDetector;
use crate::window::RingState;

const MAGIC: &[u8; 4] = b"CXP2";
/// Bumped whenever the layout changes; a checkpoint of another version is replayed, never misread.
/// 3: a manifest may name a second group of customer segments (a rebase under way).
/// 4: ids and answer keys are 64-bit hashes (were 128).
pub const FORMAT_VERSION: u32 = 4;

/// The largest record value written. Kafka's defaults bound a record batch at about 1 MB (the
/// broker's `max.message.bytes` is 1,048,588, librdkafka's `message.max.bytes` 1,000,000): this
/// leaves room for the key and the batch framing.
pub const MAX_RECORD_BYTES: usize = 990_000;

/// Bytes of a part record's header: magic, version, seq, part index, part count, segment CRC.
const PART_HEADER: usize = 4 + 4 + 8 + 4 + 4 + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SegmentKind {
    Dedup,
    Answers,
    Windows,
    /// A customer book's segments (`customers::CustomerBook::encode_full` / `encode_changes`).
    Customers,
}

impl SegmentKind {
    fn tag(self) -> char {
        match self {
            SegmentKind::Dedup => 'd',
            SegmentKind::Answers => 'a',
            SegmentKind::Windows => 'w',
            SegmentKind::Customers => 'c',
        }
    }
}

/// A record's key below the partition's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKey {
    Manifest,
    Part { kind: SegmentKind, group: i64, seq: u64, part: u32 },
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKey::Manifest => f.write_str("m"),
            RecordKey::Part { kind, group, seq, part } => {
                write!(f, "{}/{group}/{seq}/{part}", kind.tag())
            }
        }
    }
}

impl RecordKey {
    pub fn parse(text: &str) -> Option<RecordKey> {
        if text == "m" {
            return Some(RecordKey::Manifest);
        }
        let mut fields = text.split('/');
        let kind = match fields.next()? {
            "d" => SegmentKind::Dedup,
            "a" => SegmentKind::Answers,
            "w" => SegmentKind::Windows,
            "c" => SegmentKind::Customers,
            _ => return None,
        };
        let group = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        let part = fields.next()?.parse().ok()?;
        fields.next().is_none().then_some(RecordKey::Part { kind, group, seq, part })
    }

    pub fn seq(&self) -> Option<u64> {
        match self {
            RecordKey::Manifest => None,
            RecordKey::Part { seq, .. } => Some(*seq),
        }
    }
}

/// One group of segments as the manifest names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    pub group: i64,
    pub segments: u32,
    /// XOR of the segments' CRCs: a segment missing or replaced shows.
    pub crc_xor: u32,
}

impl GroupRef {
    pub fn add(&mut self, crc: u32) {
        self.segments += 1;
        self.crc_xor ^= crc;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The checkpoint's sequence number: segments of a later one (a write cut short) are ignored.
    pub seq: u64,
    /// The next source offset to read: the state reflects every message before it.
    pub offset: i64,
    pub clock_ms: Option<i64>,
    /// Window sizes in ms, in configuration order; a restore needs the same windows.
    pub window_sizes_ms: Vec<i64>,
    pub windows: GroupRef,
    pub dedup: Vec<GroupRef>,
    pub answers: Vec<GroupRef>,
}

/// A windows segment: series first seen since the previous one (local number, brand, segment),
/// then the rings that changed (local series number, window index, delta). The first segment of
/// a generation holds every series and every whole ring.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowsSegment {
    pub series: Vec<(u32, String, String)>,
    pub rings: Vec<(u32, u8, RingState)>,
}

/// A correctable answer as checkpointed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerRecord {
    pub key: Key,
    pub occurred_at_ms: i64,
    /// The partition's local series number.
    pub series: u32,
    /// Index into `snapshot::SURVEY_CATEGORIES`.
    pub category: u8,
    pub ces_score: u8,
}

const ID_BYTES: usize = std::mem::size_of::<Key>();
const ANSWER_BYTES: usize = ID_BYTES + 8 + 4 + 1 + 1;

pub fn encode_ids(ids: &[Key]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * ID_BYTES);
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

pub fn decode_ids(bytes: &[u8]) -> Result<Vec<Key>, CheckpointError> {
    if !bytes.len().is_multiple_of(ID_BYTES) {
        return Err(CheckpointError::Malformed("id segment length"));
    }
    Ok(bytes
        .chunks_exact(ID_BYTES)
        .map(|c| Key::from_le_bytes(c.try_into().unwrap_or([0; ID_BYTES])))
        .collect())
}

pub fn encode_answers(answers: &[AnswerRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(answers.len() * ANSWER_BYTES);
    for a in answers {
        out.extend_from_slice(&a.key.to_le_bytes());
        out.extend_from_slice(&a.occurred_at_ms.to_le_bytes());
        out.extend_from_slice(&a.series.to_le_bytes());
        out.push(a.category);
        out.push(a.ces_score);
    }
    out
}

pub fn decode_answers(bytes: &[u8]) -> Result<Vec<AnswerRecord>, CheckpointError> {
    if !bytes.len().is_multiple_of(ANSWER_BYTES) {
        return Err(CheckpointError::Malformed("answer segment length"));
    }
    Ok(bytes
        .chunks_exact(ANSWER_BYTES)
        .map(|c| {
            let (key, rest) = c.split_at(ID_BYTES);
            let (occurred, rest) = rest.split_at(8);
            let (series, rest) = rest.split_at(4);
            AnswerRecord {
                key: Key::from_le_bytes(key.try_into().unwrap_or([0; ID_BYTES])),
                occurred_at_ms: i64::from_le_bytes(occurred.try_into().unwrap_or([0; 8])),
                series: u32::from_le_bytes(series.try_into().unwrap_or([0; 4])),
                category: rest[0],
                ces_score: rest[1],
            }
        })
        .collect())
}

pub fn encode_windows(segment: &WindowsSegment) -> Result<Vec<u8>, CheckpointError> {
    postcard::to_stdvec(segment).map_err(CheckpointError::Encode)
}

pub fn decode_windows(bytes: &[u8]) -> Result<WindowsSegment, CheckpointError> {
    postcard::from_bytes(bytes).map_err(CheckpointError::Undecodable)
}

/// Splits a segment's body into part records of at most [`MAX_RECORD_BYTES`]; returns them with
/// the body's CRC.
pub fn split_parts(seq: u64, body: &[u8]) -> (Vec<Vec<u8>>, u32) {
    let crc = crc32fast::hash(body);
    let chunk = MAX_RECORD_BYTES - PART_HEADER;
    let count = body.len().div_ceil(chunk).max(1);
    let parts = (0..count)
        .map(|i| {
            let piece = &body[(i * chunk).min(body.len())..((i + 1) * chunk).min(body.len())];
            let mut out = Vec::with_capacity(PART_HEADER + piece.len());
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&(i as u32).to_le_bytes());
            out.extend_from_slice(&(count as u32).to_le_bytes());
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(piece);
            out
        })
        .collect();
    (parts, crc)
}

/// A part record's header and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part<'a> {
    pub seq: u64,
    pub index: u32,
    pub count: u32,
    pub crc: u32,
    pub payload: &'a [u8],
}

pub fn parse_part(bytes: &[u8]) -> Result<Part<'_>, CheckpointError> {
    let header = bytes.get(..PART_HEADER).ok_or(CheckpointError::TooShort)?;
    check_magic(header)?;
    let field = |at: usize| -> [u8; 4] { header[at..at + 4].try_into().unwrap_or([0; 4]) };
    let seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
    Ok(Part {
        seq,
        index: u32::from_le_bytes(field(16)),
        count: u32::from_le_bytes(field(20)),
        crc: u32::from_le_bytes(field(24)),
        payload: &bytes[PART_HEADER..],
    })
}

/// Joins a segment's parts (in order, all present) and checks its CRC.
pub fn join_parts(parts: &[Part<'_>]) -> Result<Vec<u8>, CheckpointError> {
    let first = parts.first().ok_or(CheckpointError::Malformed("segment without parts"))?;
    let whole = parts.len() == first.count as usize
        && parts.iter().enumerate().all(|(i, p)| {
            p.index as usize == i
                && p.count == first.count
                && p.crc == first.crc
                && p.seq == first.seq
        });
    if !whole {
        return Err(CheckpointError::MissingPart);
    }
    let body: Vec<u8> = parts.iter().flat_map(|p| p.payload.iter().copied()).collect();
    if crc32fast::hash(&body) != first.crc {
        return Err(CheckpointError::Corrupted);
    }
    Ok(body)
}

fn check_magic(header: &[u8]) -> Result<(), CheckpointError> {
    if header.get(..4) != Some(MAGIC.as_slice()) {
        return Err(CheckpointError::NotACheckpoint);
    }
    let version = u32::from_le_bytes(header[4..8].try_into().unwrap_or([0; 4]));
    if version != FORMAT_VERSION {
        return Err(CheckpointError::Format { found: version });
    }
    Ok(())
}

/// The partition's NPS-drop detectors, by local series number, as a manifest carries them.
pub type Drops = Vec<(u32, DropDetector)>;

/// Largest list of drop detectors a manifest carries; past it (a partition answering for
/// thousands of series) they are left out and learn their baselines again after a restore.
pub const MAX_DROPS_BYTES: usize = 256 * 1024;

/// What a manifest carries after its own fields: the drop detectors, the group of the customer
/// book's segments when the partition has one, and while that book is being rewritten in slices
/// the group of the new generation, whose segments apply after the first group's. They ride in
/// the same body after the manifest's fields, where a reader of the manifest alone does not look:
/// the detectors first (possibly an empty list), then the groups.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManifestTail {
    pub drops: Drops,
    pub customers: Option<GroupRef>,
    /// Only with `customers`.
    pub customers_next: Option<GroupRef>,
}

impl Manifest {
    pub fn encode(&self) -> Result<Vec<u8>, CheckpointError> {
        self.encode_with_tail(&ManifestTail::default())
    }

    /// The manifest followed by `tail`. Drop detectors past [`MAX_DROPS_BYTES`] are left out.
    pub fn encode_with_tail(&self, tail: &ManifestTail) -> Result<Vec<u8>, CheckpointError> {
        let mut body = postcard::to_stdvec(self).map_err(CheckpointError::Encode)?;
        if !tail.drops.is_empty() || tail.customers.is_some() {
            let drops = postcard::to_stdvec(&tail.drops).map_err(CheckpointError::Encode)?;
            if drops.len() <= MAX_DROPS_BYTES {
                body.extend_from_slice(&drops);
            } else {
                body.push(0); // an empty list
            }
        }
        for group in tail.customers.iter().chain(tail.customers.and(tail.customers_next).iter()) {
            body.extend_from_slice(&postcard::to_stdvec(group).map_err(CheckpointError::Encode)?);
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, CheckpointError> {
        Manifest::decode_with_tail(bytes).map(|(manifest, _)| manifest)
    }

    /// The manifest and what follows it (nothing, in a manifest written without).
    pub fn decode_with_tail(bytes: &[u8]) -> Result<(Manifest, ManifestTail), CheckpointError> {
        let header = bytes.get(..12).ok_or(CheckpointError::TooShort)?;
        check_magic(header)?;
        let crc = u32::from_le_bytes(header[8..12].try_into().unwrap_or([0; 4]));
        let body = &bytes[12..];
        if crc32fast::hash(body) != crc {
            return Err(CheckpointError::Corrupted);
        }
        let (manifest, rest) =
            postcard::take_from_bytes(body).map_err(CheckpointError::Undecodable)?;
        let mut tail = ManifestTail::default();
        if !rest.is_empty() {
            let (drops, rest) =
                postcard::take_from_bytes(rest).map_err(CheckpointError::Undecodable)?;
            tail.drops = drops;
            if !rest.is_empty() {
                let (customers, rest) =
                    postcard::take_from_bytes(rest).map_err(CheckpointError::Undecodable)?;
                tail.customers = Some(customers);
                if !rest.is_empty() {
                    tail.customers_next =
                        Some(postcard::from_bytes(rest).map_err(CheckpointError::Undecodable)?);
                }
            }
        }
        Ok((manifest, tail))
    }
}

/// Why a checkpoint could not be encoded or decoded.
#[derive(Debug)]
pub enum CheckpointError {
    Encode(postcard::Error),
    TooShort,
    NotACheckpoint,
    Corrupted,
    Undecodable(postcard::Error),
    Format { found: u32 },
    MissingPart,
    Malformed(&'static str),
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Encode(e) => write!(f, "encode checkpoint: {e}"),
            CheckpointError::TooShort => f.write_str("checkpoint record too short"),
            CheckpointError::NotACheckpoint => f.write_str("not a cxpulse checkpoint record"),
            CheckpointError::Corrupted => f.write_str("checkpoint corrupted (CRC mismatch)"),
            CheckpointError::Undecodable(e) => write!(f, "checkpoint undecodable: {e}"),
            CheckpointError::Format { found } => {
                write!(f, "checkpoint format {found}, expected {FORMAT_VERSION}")
            }
            CheckpointError::MissingPart => f.write_str("checkpoint segment has a part missing"),
            CheckpointError::Malformed(what) => write!(f, "checkpoint malformed: {what}"),
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CheckpointError::Encode(e) | CheckpointError::Undecodable(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_strangers_are_refused() {
        for key in [
            RecordKey::Manifest,
            RecordKey::Part { kind: SegmentKind::Dedup, group: -3, seq: 7, part: 0 },
            RecordKey::Part { kind: SegmentKind::Windows, group: 12, seq: 1 << 40, part: 9 },
            RecordKey::Part { kind: SegmentKind::Customers, group: 5, seq: 2, part: 0 },
        ] {
            assert_eq!(RecordKey::parse(&key.to_string()), Some(key));
        }
        for text in ["", "x/1/2/3", "d/1/2", "d/1/2/3/4", "d/a/2/3", "m/"] {
            assert_eq!(RecordKey::parse(text), None, "{text}");
        }
    }

    #[test]
    fn segments_split_into_parts_that_fit_and_join_back() {
        let ids: Vec<Key> =
            (0..200_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
        let body = encode_ids(&ids);
        let (parts, crc) = split_parts(5, &body);
        assert_eq!(parts.len(), body.len().div_ceil(MAX_RECORD_BYTES - PART_HEADER));
        assert!(parts.iter().all(|p| p.len() <= MAX_RECORD_BYTES));
        let parsed: Vec<Part<'_>> = parts.iter().map(|p| parse_part(p).unwrap()).collect();
        assert!(parsed.iter().all(|p| p.crc == crc && p.seq == 5));
        assert_eq!(decode_ids(&join_parts(&parsed).unwrap()).unwrap(), ids);

        assert!(matches!(join_parts(&parsed[1..]), Err(CheckpointError::MissingPart)));
        let mut damaged = parts[0].clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let mut with_damage = parsed.clone();
        with_damage[0] = parse_part(&damaged).unwrap();
        assert!(matches!(join_parts(&with_damage), Err(CheckpointError::Corrupted)));
        assert!(matches!(parse_part(&parts[0][..10]), Err(CheckpointError::TooShort)));
        let mut old = parts[0].clone();
        old[4] = 1;
        assert!(matches!(parse_part(&old), Err(CheckpointError::Format { found: 1 })));
    }

    #[test]
    fn manifests_and_answers_round_trip_and_damage_is_refused() {
        let manifest = Manifest {
            seq: 3,
            offset: 42,
            clock_ms: Some(7),
            window_sizes_ms: vec![3_600_000],
            windows: GroupRef { group: 1, segments: 2, crc_xor: 9 },
            dedup: vec![GroupRef { group: 4, segments: 1, crc_xor: 1 }],
            answers: vec![],
        };
        let bytes = manifest.encode().unwrap();
        assert_eq!(Manifest::decode(&bytes).unwrap(), manifest);
        // Drop detectors ride after the manifest; a reader of the manifest alone ignores them.
        let mut detector = DropDetector::new();
        let settings = crate::drop_evidence::DropSettings::default();
        for i in 0..500 {
            detector.observe(
                [1, 0, -1, 1][i % 4],
                1_800_000_000_000 + i as i64 * 60_000,
                &settings,
            );
        }
        let drops = vec![(3u32, detector.clone())];
        let tail = ManifestTail { drops: drops.clone(), customers: None, customers_next: None };
        let with = manifest.encode_with_tail(&tail).unwrap();
        assert_eq!(Manifest::decode(&with).unwrap(), manifest);
        assert_eq!(Manifest::decode_with_tail(&with).unwrap(), (manifest.clone(), tail));
        assert_eq!(
            Manifest::decode_with_tail(&bytes).unwrap(),
            (manifest.clone(), ManifestTail::default())
        );
        let many: Drops = (0..10_000).map(|i| (i, detector.clone())).collect();
        let customers = Some(GroupRef { group: 17, segments: 3, crc_xor: 0xdead_beef });
        let capped = manifest
            .encode_with_tail(&ManifestTail { drops: many, customers, customers_next: None })
            .unwrap();
        assert!(capped.len() < MAX_DROPS_BYTES, "too many to carry: left out");
        let expected = ManifestTail { drops: vec![], customers, customers_next: None };
        assert_eq!(Manifest::decode_with_tail(&capped).unwrap(), (manifest.clone(), expected));
        let next = Some(GroupRef { group: 18, segments: 2, crc_xor: 7 });
        let rebasing = ManifestTail { drops: vec![], customers, customers_next: next };
        let encoded = manifest.encode_with_tail(&rebasing).unwrap();
        assert_eq!(Manifest::decode_with_tail(&encoded).unwrap(), (manifest.clone(), rebasing));
        let both = ManifestTail { drops, customers, customers_next: None };
        let with = manifest.encode_with_tail(&both).unwrap();
        assert_eq!(Manifest::decode_with_tail(&with).unwrap(), (manifest.clone(), both));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let error = Manifest::decode(&flipped).unwrap_err();
        assert_eq!(error.to_string(), "checkpoint corrupted (CRC mismatch)");
        assert!(matches!(
            Manifest::decode(b"garbage!garbage!"),
            Err(CheckpointError::NotACheckpoint)
        ));

        let answers = vec![AnswerRecord {
            key: Key::MAX - 5,
            occurred_at_ms: -1,
            series: 3,
            category: 6,
            ces_score: 2,
        }];
        assert_eq!(decode_answers(&encode_answers(&answers)).unwrap(), answers);
        assert!(decode_answers(&[0; 29]).is_err());
        assert!(decode_ids(&[0; 17]).is_err());
    }
}
