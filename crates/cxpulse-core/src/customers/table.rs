//! The remembered customers: one 40-byte slot each in a flat open-addressing table (linear
//! probing, backward-shift deletion), kept between 2/3 and 4/5 full so that a customer costs at
//! most 60 bytes of table. A small table (under [`FAST_GROWTH_BELOW`] slots) doubles instead, so
//! that a fresh worker's books fill without a rebuild every fifth; the sweep brings a table left
//! under 2/3 full back within.
//!
//! A slot holds the key (customer hash and series), the newest two purchase times, the newest two
//! NPS answers (time and category; the newest also with a fingerprint of its `response_id`) and
//! two checkpoint flags. Times are milliseconds since 1970 plus one, in 47 bits (0: none): four of
//! them and four flag bits pack into three words.

/// Times from 0 up to this (about the year 6429) are representable.
pub(crate) const MAX_TIME_MS: i64 = (1 << 47) - 2;

/// The highest load before the table grows, and the lowest the sweep leaves it at.
const MAX_LOAD_PERCENT: usize = 80;
const MIN_LOAD_PERCENT: usize = 67;
/// Growth by a fifth: from 80 % full to 2/3 full.
const GROWTH_PERCENT: usize = 120;
/// Tables with fewer slots (640 KiB) double: growing by a fifth from 16 slots up, a customer was
/// moved five times on average, and a fresh table's pages faulted in each time.
const FAST_GROWTH_BELOW: usize = 1 << 14;
const MIN_CAPACITY: usize = 16;

/// One customer of one series, unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Customer {
    /// Newest first; `None` where there is none.
    pub purchases: [Option<i64>; 2],
    /// Newest first: time and category (0 promoter, 1 passive, 2 detractor).
    pub answers: [Option<(i64, u8)>; 2],
    /// A fingerprint of the newest answer's `response_id` (0: it had none).
    pub fingerprint: u32,
    /// Changed since the last checkpoint took it.
    pub dirty: bool,
    /// Written by some checkpoint: its forgetting must be written too.
    pub persisted: bool,
}

impl Customer {
    /// The newest event remembered: the customer is forgotten when it leaves the windows.
    pub fn newest(&self) -> Option<i64> {
        self.purchases[0].max(self.answers[0].map(|(t, _)| t))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The customer's hash; 0 marks an empty slot (a hash of 0 is stored as 1).
    key: u64,
    /// Four 48-bit fields: the times p1, p2, a1, a2 in bits 0..47 and a flag in bit 47 (dirty,
    /// persisted, and the two bits of a2's category).
    words: [u64; 3],
    series: u32,
    /// The newest answer's fingerprint (30 bits) and category (2 bits).
    tag: u32,
}

const TIME_BITS: u32 = 47;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

fn encode_time(time: Option<i64>) -> u64 {
    // Callers keep times within 0..=MAX_TIME_MS.
    time.map_or(0, |t| (t as u64 + 1) & TIME_MASK)
}

fn decode_time(field: u64) -> Option<i64> {
    let t = field & TIME_MASK;
    (t != 0).then(|| t as i64 - 1)
}

impl Slot {
    /// The four 48-bit fields.
    fn fields(&self) -> [u64; 4] {
        let [w0, w1, w2] = self.words;
        let mask = (1u64 << 48) - 1;
        [w0 & mask, (w0 >> 48 | w1 << 16) & mask, (w1 >> 32 | w2 << 32) & mask, w2 >> 16]
    }

    fn set_fields(&mut self, [f0, f1, f2, f3]: [u64; 4]) {
        self.words = [f0 | f1 << 48, f1 >> 16 | f2 << 32, f2 >> 32 | f3 << 16];
    }

    pub fn is_empty(&self) -> bool {
        self.key == 0
    }

    pub fn customer(&self) -> Customer {
        let fields = self.fields();
        let flag = |i: usize| fields[i] >> TIME_BITS & 1;
        let a2_category = (flag(2) | flag(3) << 1) as u8;
        Customer {
            purchases: [decode_time(fields[0]), decode_time(fields[1])],
            answers: [
                decode_time(fields[2]).map(|t| (t, (self.tag & 0b11) as u8)),
                decode_time(fields[3]).map(|t| (t, a2_category)),
            ],
            fingerprint: self.tag >> 2,
            dirty: flag(0) == 1,
            persisted: flag(1) == 1,
        }
    }

    pub fn set_customer(&mut self, customer: &Customer) {
        let a2_category = customer.answers[1].map_or(0, |(_, c)| u64::from(c & 0b11));
        let flags = [
            u64::from(customer.dirty),
            u64::from(customer.persisted),
            a2_category & 1,
            a2_category >> 1,
        ];
        let times = [
            customer.purchases[0],
            customer.purchases[1],
            customer.answers[0].map(|(t, _)| t),
            customer.answers[1].map(|(t, _)| t),
        ];
        let mut fields = [0; 4];
        for ((field, time), flag) in fields.iter_mut().zip(times).zip(flags) {
            *field = encode_time(time) | flag << TIME_BITS;
        }
        self.set_fields(fields);
        let category = customer.answers[0].map_or(0, |(_, c)| u32::from(c & 0b11));
        self.tag = (customer.fingerprint & (u32::MAX >> 2)) << 2 | category;
    }
}

/// The open-addressing table of customers.
#[derive(Clone, Debug)]
pub(crate) struct CustomerTable {
    slots: Box<[Slot]>,
    len: usize,
}

impl Default for CustomerTable {
    fn default() -> Self {
        CustomerTable::with_capacity(MIN_CAPACITY)
    }
}

/// What the allocator takes for a block of `bytes`.
pub(crate) fn allocated(bytes: usize) -> usize {
    if bytes >= 128 * 1024 {
        bytes.next_multiple_of(4096)
    } else {
        bytes.next_multiple_of(16)
    }
}

fn stored(hash: u64) -> u64 {
    hash.max(1)
}

impl CustomerTable {
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(MIN_CAPACITY);
        CustomerTable { slots: vec![Slot::default(); capacity].into_boxed_slice(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes of the slots, as the allocator hands them out: glibc maps a block of 128 KiB
    /// or more in whole pages, and rounds a smaller one to 16 bytes.
    pub fn bytes(&self) -> usize {
        allocated(std::mem::size_of_val(&*self.slots))
    }

    fn home(&self, hash: u64, series: u32) -> usize {
        // Mixed so that the series moves a customer's slot too, then spread by a multiply.
        let mixed = (hash ^ u64::from(series).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_mul(0xff51_afd7_ed55_8ccd);
        ((u128::from(mixed) * self.slots.len() as u128) >> 64) as usize
    }

    fn next(&self, index: usize) -> usize {
        if index + 1 == self.slots.len() {
            0
        } else {
            index + 1
        }
    }

    /// The slot of the key, else the empty slot where it would go.
    fn probe(&self, hash: u64, series: u32) -> Result<usize, usize> {
        let hash = stored(hash);
        let mut index = self.home(hash, series);
        loop {
            let slot = &self.slots[index];
            if slot.is_empty() {
                return Err(index);
            }
            if slot.key == hash && slot.series == series {
                return Ok(index);
            }
            index = self.next(index);
        }
    }

    /// Starts loading the customer's home slot into the cache: a hint with no effect on
    /// behaviour.
    #[inline]
    pub fn prefetch(&self, hash: u64, series: u32) {
        if let Some(slot) = self.slots.get(self.home(stored(hash), series)) {
            crate::buckets::prefetch(slot);
        }
    }

    pub fn get(&self, hash: u64, series: u32) -> Option<Customer> {
        self.probe(hash, series).ok().map(|index| self.slots[index].customer())
    }

    /// Stores the customer; returns whether the table grew.
    pub fn put(&mut self, hash: u64, series: u32, customer: &Customer) -> bool {
        let grew = (self.len + 1) * 100 > self.slots.len() * MAX_LOAD_PERCENT;
        if grew {
            let capacity = self.slots.len();
            self.rebuild(if capacity < FAST_GROWTH_BELOW {
                capacity * 2
            } else {
                capacity * GROWTH_PERCENT / 100 + 1
            });
        }
        let index = match self.probe(hash, series) {
            Ok(index) => index,
            Err(index) => {
                self.slots[index].key = stored(hash);
                self.slots[index].series = series;
                self.len += 1;
                index
            }
        };
        self.slots[index].set_customer(customer);
        grew
    }

    fn rebuild(&mut self, capacity: usize) {
        let mut next = CustomerTable::with_capacity(capacity);
        for slot in self.slots.iter().filter(|s| !s.is_empty()) {
            if let Err(index) = next.probe(slot.key, slot.series) {
                next.slots[index] = *slot;
            }
        }
        next.len = self.len;
        *self = next;
    }

    /// Forgets the customer, if remembered.
    pub fn remove(&mut self, hash: u64, series: u32) {
        if let Ok(index) = self.probe(hash, series) {
            self.remove_at(index);
        }
    }

    /// Removes the slot at `index` and shifts the rest of its cluster back over the hole, so
    /// that no probe sequence is cut.
    fn remove_at(&mut self, mut hole: usize) {
        self.slots[hole] = Slot::default();
        self.len -= 1;
        let mut index = self.next(hole);
        while !self.slots[index].is_empty() {
            let home = self.home(self.slots[index].key, self.slots[index].series);
            // The slot may move back to the hole if its home is not in (hole, index].
            let distance =
                |from: usize, to: usize| (to + self.slots.len() - from) % self.slots.len();
            if distance(home, index) >= distance(hole, index) {
                self.slots[hole] = self.slots[index];
                self.slots[index] = Slot::default();
                hole = index;
            }
            index = self.next(index);
        }
    }

    /// Removes every customer for which `forget` says so (reporting each to `forgotten`), then
    /// shrinks the table if that left it less than 2/3 full. One pass over the slots.
    pub fn sweep(
        &mut self,
        mut forget: impl FnMut(&Customer) -> bool,
        mut forgotten: impl FnMut(u64, u32, &Customer),
    ) {
        let mut index = 0;
        while index < self.slots.len() {
            let slot = self.slots[index];
            if !slot.is_empty() {
                let customer = slot.customer();
                if forget(&customer) {
                    forgotten(slot.key, slot.series, &customer);
                    // Shifting may bring an unvisited slot into this one: look at it again. A slot
                    // shifted back across the end is visited twice, to no effect.
                    self.remove_at(index);
                    continue;
                }
            }
            index += 1;
        }
        let capacity = self.slots.len();
        if capacity > MIN_CAPACITY && self.len * 100 < capacity * MIN_LOAD_PERCENT {
            self.rebuild((self.len * 100).div_ceil(MAX_LOAD_PERCENT) + 1);
        }
    }

    /// Every customer, with its key: `(hash, series, customer)`.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u64, u32, Customer)> + '_ {
        self.slots.iter().filter(|s| !s.is_empty()).map(|s| (s.key, s.series, s.customer()))
    }

    /// Rewrites the customer through `update`, if remembered.
    pub fn update(&mut self, hash: u64, series: u32, update: impl FnOnce(&mut Customer)) {
        if let Ok(index) = self.probe(hash, series) {
            let slot = &mut self.slots[index];
            let mut customer = slot.customer();
            let before = customer;
            update(&mut customer);
            if customer != before {
                slot.set_customer(&customer);
            }
        }
    }

    /// Rewrites every customer through `update` (clearing flags after a checkpoint).
    pub fn update_all(&mut self, mut update: impl FnMut(u64, u32, &mut Customer)) {
        for slot in self.slots.iter_mut().filter(|s| !s.is_empty()) {
            let mut customer = slot.customer();
            let before = customer;
            update(slot.key, slot.series, &mut customer);
            if customer != before {
                slot.set_customer(&customer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_forty_bytes_and_keeps_every_field() {
        assert_eq!(std::mem::size_of::<Slot>(), 40);
        let customer = Customer {
            purchases: [Some(MAX_TIME_MS), Some(0)],
            answers: [Some((1_800_000_000_123, 2)), Some((5, 3))],
            fingerprint: (1 << 30) - 1,
            dirty: true,
            persisted: false,
        };
        let mut slot = Slot::default();
        slot.set_customer(&customer);
        assert_eq!(slot.customer(), customer);
        let other = Customer { dirty: false, persisted: true, answers: [None, None], ..customer };
        slot.set_customer(&other);
        assert_eq!(slot.customer(), other);
    }

    #[test]
    fn the_table_finds_what_it_holds_through_growth_sweeps_and_shrinking() {
        let mut table = CustomerTable::default();
        let hash = |i: u64| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
        let at = |i: u64| Customer { purchases: [Some(i as i64), None], ..Customer::default() };
        for i in 0..5_000u64 {
            table.put(hash(i), (i % 3) as u32, &at(i));
        }
        table.put(0, 0, &at(7)); // hash 0 is stored too
        assert_eq!(table.len(), 5_001);
        assert!(table.len() * 100 <= table.slots.len() * MAX_LOAD_PERCENT);
        let mut forgotten = 0;
        table.sweep(|c| c.newest().is_some_and(|t| t % 4 != 0), |_, _, _| forgotten += 1);
        assert_eq!(forgotten, 3_751);
        assert!(table.len() * 100 >= table.slots.len() * MIN_LOAD_PERCENT);
        for i in 0..5_000u64 {
            let want = (i % 4 == 0).then(|| at(i));
            assert_eq!(table.get(hash(i), (i % 3) as u32), want, "{i}");
            assert_eq!(table.get(hash(i), (i % 3 + 1) as u32), None);
        }
        assert_eq!(table.get(0, 0), None);
        assert_eq!(table.iter().count(), table.len());
    }
}
