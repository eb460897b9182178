//! Checkpoints of a customer book, in the style of the engine's: a full segment, then segments of
//! what changed since the one before (customers changed or forgotten, ring steps changed). A
//! restore applies a full segment and the later ones in order and gives the same counts.
//!
//! A big book is rewritten in slices rather than whole ([`CustomerBook::encode_slice`]): the
//! first slice is a full segment with the rings and one slice of the customers, each later one
//! the changes plus the next slice. Applied after the old segments they change nothing, and once
//! every slice is written they stand alone.
//!
//! A segment is a format byte ([`FORMAT`]) and a postcard body. Series are written as numbers the
//! caller chooses (the engine's local series numbers) and mapped back on restore. Times are
//! written relative to the segment's horizon, so most fit in five bytes.

use serde::{Deserialize, Serialize};

use super::ring::Tally;
use super::table::{Customer, MAX_TIME_MS};
use super::{CustomerBook, SeriesId};
use crate::checkpoint::CheckpointError;
use crate::window::WindowSpec;

/// Bumped whenever the layout changes: a segment of another format is refused, never misread.
pub const FORMAT: u8 = 1;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Segment {
    full: bool,
    window_sizes_ms: Vec<i64>,
    heads: Vec<i64>,
    /// Times below are relative to this.
    base_ms: i64,
    rings: Vec<RingRecord>,
    customers: Vec<Record>,
    /// Customers forgotten since the previous segment: (series number, customer hash).
    forgotten: Vec<(u32, [u8; 8])>,
}

/// A ring's image: (series number, window index, head, steps).
type RingRecord = (u32, u8, i64, Vec<(i64, Tally)>);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    series: u32,
    customer: [u8; 8],
    purchases: [Option<i64>; 2],
    answers: [Option<(i64, u8)>; 2],
    fingerprint: u32,
}

/// Why checkpointed customers cannot be restored (the partition is then replayed instead).
#[derive(Debug)]
pub enum CustomerRestoreError {
    Empty,
    /// The first segment is not a full one.
    NoFullSegment,
    Format {
        found: u8,
    },
    Undecodable(postcard::Error),
    OtherWindows {
        checkpoint_ms: Vec<i64>,
        configured_ms: Vec<i64>,
    },
    /// A series number the caller cannot map back.
    UnknownSeries(u32),
    /// A window index, a time or a category out of range.
    Invalid(&'static str),
}

impl std::fmt::Display for CustomerRestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("no customer checkpoint"),
            Self::NoFullSegment => f.write_str("customer checkpoint does not start whole"),
            Self::Format { found } => {
                write!(f, "customer checkpoint format {found}, expected {FORMAT}")
            }
            Self::Undecodable(e) => write!(f, "customer checkpoint undecodable: {e}"),
            Self::OtherWindows { checkpoint_ms, configured_ms } => write!(
                f,
                "customer checkpoint windows {checkpoint_ms:?} differ from the configured \
                 {configured_ms:?}"
            ),
            Self::UnknownSeries(n) => write!(f, "customer checkpoint names unknown series {n}"),
            Self::Invalid(what) => write!(f, "customer checkpoint invalid: {what}"),
        }
    }
}

impl std::error::Error for CustomerRestoreError {}

/// Which customers a segment holds besides those changed since the last one.
#[derive(Clone, Copy)]
enum Pick {
    All,
    Changed,
    /// Those whose hash falls in `slice` of `slices`.
    Slice {
        slice: u32,
        slices: u32,
    },
}

fn relative(time: Option<i64>, base: i64) -> Option<i64> {
    time.map(|t| t.wrapping_sub(base))
}

impl CustomerBook {
    /// Every customer and ring, numbering series with `number_of` (a series it gives no number
    /// is left out). Later [`CustomerBook::encode_changes`] write only what changes after it.
    pub fn encode_full(
        &mut self,
        number_of: impl Fn(SeriesId) -> Option<u32>,
    ) -> Result<Vec<u8>, CheckpointError> {
        let segment = self.segment(Pick::All, &number_of);
        self.finish(&segment)
    }

    /// Slice `slice` of `slices` of a rewrite: what changed since the last segment, and the
    /// customers of that slice whether they changed or not. The first slice is a full segment
    /// (every ring whole).
    pub fn encode_slice(
        &mut self,
        number_of: impl Fn(SeriesId) -> Option<u32>,
        slice: u32,
        slices: u32,
    ) -> Result<Vec<u8>, CheckpointError> {
        let segment = self.segment(Pick::Slice { slice, slices }, &number_of);
        self.finish(&segment)
    }

    /// What changed since the last segment; `None` when nothing did. Without a full segment
    /// before (or a restore), a full one.
    pub fn encode_changes(
        &mut self,
        number_of: impl Fn(SeriesId) -> Option<u32>,
    ) -> Result<Option<Vec<u8>>, CheckpointError> {
        if !self.tracking {
            return self.encode_full(number_of).map(Some);
        }
        let segment = self.segment(Pick::Changed, &number_of);
        let empty = segment.rings.is_empty()
            && segment.customers.is_empty()
            && segment.forgotten.is_empty();
        if empty {
            return Ok(None);
        }
        self.finish(&segment).map(Some)
    }

    /// The segment's bytes. If it cannot be encoded (what it holds is already marked written),
    /// the next segment is a full one.
    fn finish(&mut self, segment: &Segment) -> Result<Vec<u8>, CheckpointError> {
        let mut out = vec![FORMAT];
        match postcard::to_extend(segment, out) {
            Ok(bytes) => {
                out = bytes;
                Ok(out)
            }
            Err(e) => {
                self.tracking = false;
                Err(CheckpointError::Encode(e))
            }
        }
    }

    /// Builds a segment and marks what it holds as written: one pass over the table.
    fn segment(&mut self, pick: Pick, number_of: &impl Fn(SeriesId) -> Option<u32>) -> Segment {
        self.tracking = true;
        let full = matches!(pick, Pick::All | Pick::Slice { slice: 0, .. });
        let base_ms = self.horizon_ms.max(0);
        let mut segment = Segment {
            full,
            window_sizes_ms: self.windows.iter().map(|w| w.size_ms).collect(),
            heads: self.heads.clone(),
            base_ms,
            ..Segment::default()
        };
        for &series in &self.present {
            let (Some(number), Some(Some(rings))) =
                (number_of(series), self.rings.get_mut(series as usize))
            else {
                continue;
            };
            for (w, (ring, head)) in rings.iter_mut().zip(&self.heads).enumerate() {
                ring.advance(*head);
                let image = if full { Some(ring.export()) } else { ring.take_changes() };
                if let Some((head, steps)) = image {
                    segment.rings.push((number, w as u8, head, steps));
                }
            }
        }
        let records = &mut segment.customers;
        let mut write = |hash: u64, series: SeriesId, customer: &mut Customer| {
            if let Some(number) = number_of(series) {
                records.push(Record {
                    series: number,
                    customer: hash.to_le_bytes(),
                    purchases: customer.purchases.map(|t| relative(t, base_ms)),
                    answers: customer.answers.map(|a| a.map(|(t, c)| (t.wrapping_sub(base_ms), c))),
                    fingerprint: customer.fingerprint,
                });
            }
            customer.persisted = true;
            customer.dirty = false;
        };
        let changed = std::mem::take(&mut self.changed);
        match pick {
            // Only the customers changed since the last segment: no pass over the table. A
            // customer listed twice (forgotten and back) is written once, then no longer dirty.
            Pick::Changed => {
                for (series, hash) in changed {
                    self.table.update(hash, series, |customer| {
                        if customer.dirty {
                            write(hash, series, customer);
                        }
                    });
                }
            }
            // A pass over the table, which clears every dirty flag: the list is no longer needed.
            Pick::All | Pick::Slice { .. } => {
                let picked = |hash: u64| match pick {
                    Pick::Slice { slice, slices } => {
                        (hash >> 40) % u64::from(slices) == u64::from(slice)
                    }
                    _ => true,
                };
                self.table.update_all(|hash, series, customer| {
                    if customer.dirty || picked(hash) {
                        write(hash, series, customer);
                    }
                });
            }
        }
        // A slice applies on top of older segments: it carries the forgettings too.
        let forgotten = std::mem::take(&mut self.forgotten);
        if !matches!(pick, Pick::All) {
            segment.forgotten = forgotten
                .into_iter()
                .filter_map(|(series, hash)| Some((number_of(series)?, hash.to_le_bytes())))
                .collect();
        }
        segment
    }

    /// Rebuilds a book from segments, a full one first and then its changes in the order written,
    /// mapping series numbers back to ids with `id_of`. It has the counts the book that wrote them
    /// had, at the clock of the last segment (a clock move alone writes no segment: set the clock
    /// after).
    pub fn restore<'a>(
        windows: &[WindowSpec],
        future_steps: &[usize],
        segments: impl IntoIterator<Item = &'a [u8]>,
        id_of: impl Fn(u32) -> Option<SeriesId>,
    ) -> Result<CustomerBook, CustomerRestoreError> {
        let mut book: Option<CustomerBook> = None;
        for bytes in segments {
            let segment = decode(bytes)?;
            let configured_ms: Vec<i64> = windows.iter().map(|w| w.size_ms).collect();
            if segment.window_sizes_ms != configured_ms || segment.heads.len() != windows.len() {
                return Err(CustomerRestoreError::OtherWindows {
                    checkpoint_ms: segment.window_sizes_ms,
                    configured_ms,
                });
            }
            let book = match (&mut book, segment.full) {
                (None, true) => {
                    book.insert(CustomerBook::new(windows, future_steps, &segment.heads))
                }
                // The first slice of a rewrite, after the old segments: its rings are whole.
                (Some(book), true) => {
                    book.rings.clear();
                    book.present.clear();
                    book
                }
                (Some(book), false) => book,
                (None, false) => return Err(CustomerRestoreError::NoFullSegment),
            };
            book.merge(&segment, &id_of)?;
        }
        let mut book = book.ok_or(CustomerRestoreError::Empty)?;
        book.tracking = true;
        book.sweep();
        Ok(book)
    }

    fn merge(
        &mut self,
        segment: &Segment,
        id_of: &impl Fn(u32) -> Option<SeriesId>,
    ) -> Result<(), CustomerRestoreError> {
        let series_of = |n: u32| id_of(n).ok_or(CustomerRestoreError::UnknownSeries(n));
        self.set_clock(&segment.heads);
        for (number, window, head, steps) in &segment.rings {
            let series = series_of(*number)?;
            let ring = self
                .rings_of(series)
                .get_mut(usize::from(*window))
                .ok_or(CustomerRestoreError::Invalid("window index"))?;
            ring.merge(&(*head, steps.clone()));
        }
        // Forgettings first: a customer forgotten and then seen again is among the customers too.
        for (number, hash) in &segment.forgotten {
            let (series, hash) = (series_of(*number)?, u64::from_le_bytes(*hash));
            self.table.remove(hash, series);
        }
        let base = segment.base_ms;
        let time = |t: i64| {
            t.checked_add(base)
                .filter(|t| (0..=MAX_TIME_MS).contains(t))
                .ok_or(CustomerRestoreError::Invalid("time"))
        };
        for record in &segment.customers {
            let series = series_of(record.series)?;
            let mut customer = Customer { persisted: true, ..Customer::default() };
            for (slot, t) in customer.purchases.iter_mut().zip(record.purchases) {
                *slot = t.map(time).transpose()?;
            }
            for (slot, a) in customer.answers.iter_mut().zip(record.answers) {
                *slot = match a {
                    Some((_, c)) if c > 2 => return Err(CustomerRestoreError::Invalid("category")),
                    Some((t, c)) => Some((time(t)?, c)),
                    None => None,
                };
            }
            customer.fingerprint = record.fingerprint;
            if customer.newest().is_some() {
                self.table.put(u64::from_le_bytes(record.customer), series, &customer);
            }
        }
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<Segment, CustomerRestoreError> {
    let (&format, body) = bytes.split_first().ok_or(CustomerRestoreError::Empty)?;
    if format != FORMAT {
        return Err(CustomerRestoreError::Format { found: format });
    }
    postcard::from_bytes(body).map_err(CustomerRestoreError::Undecodable)
}
