//! A partition's state as bytes, for the compacted state topic: its windows per series, its dedup
//! memory and its correctable answers, with the offset they reflect. A magic prefix, a format
//! version and a CRC guard the decoding: anything unexpected is `Err`, and the caller rebuilds the
//! partition by replay instead.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::window::{Counts, RingState};

const MAGIC: &[u8; 4] = b"CXPS";
/// Bumped whenever the layout below changes; an older checkpoint is then ignored (replayed).
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartitionCheckpoint {
    /// The next source offset to read: the state reflects every message before it.
    pub offset: i64,
    /// Window sizes in ms, in configuration order; a restore needs the same windows.
    pub window_sizes_ms: Vec<i64>,
    pub clock_ms: Option<i64>,
    pub series: Vec<SeriesCheckpoint>,
    /// `(clock when first seen, event-id hash)`, oldest first.
    pub dedup: Vec<(i64, u128)>,
    pub responses: Vec<ResponseCheckpoint>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesCheckpoint {
    pub brand: String,
    pub segment: String,
    pub rings: Vec<RingState>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseCheckpoint {
    pub key: u128,
    pub brand: String,
    pub segment: String,
    pub occurred_at_ms: i64,
    pub counts: Counts,
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
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Encode(e) => write!(f, "encode checkpoint: {e}"),
            CheckpointError::TooShort => f.write_str("checkpoint too short"),
            CheckpointError::NotACheckpoint => f.write_str("not a cxpulse checkpoint"),
            CheckpointError::Corrupted => f.write_str("checkpoint corrupted (CRC mismatch)"),
            CheckpointError::Undecodable(e) => write!(f, "checkpoint undecodable: {e}"),
            CheckpointError::Format { found } => {
                write!(f, "checkpoint format {found}, expected {FORMAT_VERSION}")
            }
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

impl PartitionCheckpoint {
    pub fn encode(&self) -> Result<Vec<u8>, CheckpointError> {
        let body = postcard::to_stdvec(&(FORMAT_VERSION, self)).map_err(CheckpointError::Encode)?;
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<PartitionCheckpoint, CheckpointError> {
        let (magic, rest) = bytes.split_at_checked(4).ok_or(CheckpointError::TooShort)?;
        if magic != MAGIC {
            return Err(CheckpointError::NotACheckpoint);
        }
        let (crc, body) = rest.split_at_checked(4).ok_or(CheckpointError::TooShort)?;
        let crc = u32::from_le_bytes(crc.try_into().map_err(|_| CheckpointError::TooShort)?);
        if crc32fast::hash(body) != crc {
            return Err(CheckpointError::Corrupted);
        }
        let (version, checkpoint): (u32, PartitionCheckpoint) =
            postcard::from_bytes(body).map_err(CheckpointError::Undecodable)?;
        if version != FORMAT_VERSION {
            return Err(CheckpointError::Format { found: version });
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PartitionCheckpoint {
        PartitionCheckpoint {
            offset: 42,
            window_sizes_ms: vec![3_600_000],
            clock_ms: Some(7),
            series: vec![SeriesCheckpoint {
                brand: "acme".into(),
                segment: "all".into(),
                rings: vec![],
            }],
            dedup: vec![(1, 99)],
            responses: vec![],
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let bytes = sample().encode().unwrap();
        assert_eq!(PartitionCheckpoint::decode(&bytes).unwrap(), sample());
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let error = PartitionCheckpoint::decode(&flipped).unwrap_err();
        assert!(matches!(error, CheckpointError::Corrupted), "{error}");
        assert_eq!(error.to_string(), "checkpoint corrupted (CRC mismatch)");
        assert!(matches!(PartitionCheckpoint::decode(&bytes[..6]), Err(CheckpointError::TooShort)));
        let garbage = PartitionCheckpoint::decode(b"garbage!garbage!");
        assert!(matches!(garbage, Err(CheckpointError::NotACheckpoint)));
    }
}
