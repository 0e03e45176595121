//! Ledger cells as the daemon keeps them: the kernel's [`Transfer`] is two 32-bucket
//! histograms beside five counters (552 bytes), and most of those 64 buckets are 0 (the
//! duration histogram is all 0 without `--latency`). `zcprof serve` holds a cell per live
//! thread and per group, so at 10,000 processes the zeros were most of its memory.

use zcprof_common::{CELL_FIELDS, HIST_BUCKETS, Transfer};

use super::LedgerCell;

// Both histograms' buckets are bits of one u64.
const _: () = assert!(HIST_BUCKETS <= 32);

/// Bit of the duration histogram's bucket 0 in [`SparseCell`]'s mask.
const TIME_BIT: u32 = 32;

/// Position of the one field `probe` sets in [`Transfer::values`]: the fields are declared
/// once, in zcprof-common, and found here by name at compile time.
const fn position(probe: Transfer) -> usize {
    let v = probe.values();
    let mut i = 0;
    while i < v.len() {
        if v[i] != 0 {
            return i;
        }
        i += 1;
    }
    panic!("the probe sets no scalar field");
}

const CALLS: usize = position(Transfer {
    calls: 1,
    ..Transfer::ZERO
});
const BYTES: usize = position(Transfer {
    bytes: 1,
    ..Transfer::ZERO
});

/// A ledger cell with only its non-zero histogram buckets: 64 bytes, plus 8 per non-zero
/// bucket. Converted from the kernel's [`Transfer`] once, and back only to show a histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SparseCell {
    /// The scalar fields, in the order of [`CELL_FIELDS`].
    values: [u64; CELL_FIELDS.len()],
    /// Bit k: size bucket k is not 0; bit 32 + k: duration bucket k is not 0.
    mask: u64,
    /// The buckets that are not 0, in the order of `mask`'s bits (no zero is ever stored, so
    /// that equal cells are equal field by field).
    buckets: Box<[u64]>,
}

/// The mask of `t`'s non-zero buckets: a loop without branches, since the daemon compares
/// every thread's cells with what it kept at every collection.
fn mask_of(t: &Transfer) -> u64 {
    let mut mask = 0u64;
    for (k, n) in t.size_log2.iter().enumerate() {
        mask |= u64::from(*n != 0) << k;
    }
    for (k, n) in t.time_log2.iter().enumerate() {
        mask |= u64::from(*n != 0) << (TIME_BIT as usize + k);
    }
    mask
}

/// `t`'s bucket of bit `bit` of [`SparseCell::mask`].
fn kernel_bucket(t: &Transfer, bit: u32) -> u64 {
    match bit.checked_sub(TIME_BIT) {
        Some(k) => t.time_log2[k as usize],
        None => t.size_log2[bit as usize],
    }
}

/// The bits of `mask`, lowest first.
fn bits(mut mask: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        (mask != 0).then(|| {
            let bit = mask.trailing_zeros();
            mask &= mask - 1;
            bit
        })
    })
}

impl SparseCell {
    /// The kernel's cell, without its zero buckets.
    pub fn from_transfer(t: &Transfer) -> SparseCell {
        let mask = mask_of(t);
        let mut buckets = Vec::with_capacity(mask.count_ones() as usize);
        buckets.extend(bits(mask).map(|bit| kernel_bucket(t, bit)));
        SparseCell {
            values: t.values(),
            mask,
            buckets: buckets.into_boxed_slice(),
        }
    }

    /// The kernel's form of the cell.
    pub fn to_transfer(&self) -> Transfer {
        let mut t = Transfer::ZERO;
        self.add_to(&mut t);
        t
    }

    /// Adds the cell to `t`, field by field and bucket by bucket.
    pub fn add_to(&self, t: &mut Transfer) {
        for (a, b) in t.values_mut().into_iter().zip(self.values) {
            *a += b;
        }
        for (bit, n) in bits(self.mask).zip(self.buckets.iter()) {
            match bit.checked_sub(TIME_BIT) {
                Some(k) => t.time_log2[k as usize] += n,
                None => t.size_log2[bit as usize] += n,
            }
        }
    }

    /// The scalar fields in the order of [`CELL_FIELDS`].
    pub fn values(&self) -> [u64; CELL_FIELDS.len()] {
        self.values
    }

    /// The same counts as the kernel's cell `t`.
    pub fn same_as(&self, t: &Transfer) -> bool {
        self.values == t.values()
            && self.mask == mask_of(t)
            && bits(self.mask)
                .zip(self.buckets.iter())
                .all(|(bit, n)| kernel_bucket(t, bit) == *n)
    }

    /// Bucket `bit`'s count (0 if not stored).
    fn bucket(&self, bit: u32) -> u64 {
        if self.mask & 1 << bit == 0 {
            return 0;
        }
        let below = (self.mask & ((1u64 << bit) - 1)).count_ones() as usize;
        self.buckets[below]
    }
}

impl LedgerCell for SparseCell {
    fn add(&mut self, other: &SparseCell) {
        for (a, b) in self.values.iter_mut().zip(other.values) {
            *a += b;
        }
        if other.mask & !self.mask == 0 {
            // The common case (a group credited again in buckets it has): in place. A sum of
            // non-zero counts is not zero, so no zero gets stored.
            for (bit, n) in bits(other.mask).zip(other.buckets.iter()) {
                let at = (self.mask & ((1u64 << bit) - 1)).count_ones() as usize;
                self.buckets[at] += n;
            }
            return;
        }
        let mask = self.mask | other.mask;
        let mut buckets = Vec::with_capacity(mask.count_ones() as usize);
        buckets.extend(bits(mask).map(|bit| self.bucket(bit) + other.bucket(bit)));
        self.mask = mask;
        self.buckets = buckets.into_boxed_slice();
    }

    fn saturating_sub(&self, earlier: &SparseCell) -> SparseCell {
        let mut values = self.values;
        for (a, b) in values.iter_mut().zip(earlier.values) {
            *a = a.saturating_sub(b);
        }
        let left = || {
            bits(self.mask)
                .zip(self.buckets.iter())
                .map(|(bit, n)| (bit, n.saturating_sub(earlier.bucket(bit))))
                .filter(|(_, n)| *n != 0)
        };
        let mask = left().fold(0u64, |m, (bit, _)| m | 1 << bit);
        let mut buckets = Vec::with_capacity(mask.count_ones() as usize);
        buckets.extend(left().map(|(_, n)| n));
        SparseCell {
            values,
            mask,
            buckets: buckets.into_boxed_slice(),
        }
    }

    fn calls(&self) -> u64 {
        self.values[CALLS]
    }

    fn bytes(&self) -> u64 {
        self.values[BYTES]
    }

    fn is_zero(&self) -> bool {
        self.mask == 0 && self.values.iter().all(|v| *v == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bucket of `t`'s two histograms with its bit in [`SparseCell::mask`].
    fn all_buckets(t: &Transfer) -> impl Iterator<Item = (u32, u64)> + '_ {
        let size = t.size_log2.iter().enumerate().map(|(k, n)| (k as u32, *n));
        let time = t.time_log2.iter().enumerate();
        size.chain(time.map(|(k, n)| (TIME_BIT + k as u32, *n)))
    }

    /// A cell with every scalar field and the buckets given set, built field by field.
    fn cell(seed: u64, size: &[(usize, u64)], time: &[(usize, u64)]) -> Transfer {
        let mut t = Transfer {
            calls: seed,
            bytes: seed * 1000,
            errors: seed % 3,
            zerocopy_requested: seed / 2,
            time_ns: seed * 77,
            ..Transfer::ZERO
        };
        for &(k, n) in size {
            t.size_log2[k] = n;
        }
        for &(k, n) in time {
            t.time_log2[k] = n;
        }
        t
    }

    fn cases() -> Vec<Transfer> {
        vec![
            Transfer::ZERO,
            cell(1, &[(12, 1)], &[]),
            cell(5, &[(0, 2), (31, 3)], &[(0, 4), (31, 1)]),
            cell(9, &[(3, 9)], &[(20, 9)]),
            cell(7, &[(3, 2), (12, 5)], &[]),
            cell(2, &[], &[(5, 2)]),
        ]
    }

    #[test]
    fn round_trip_keeps_every_count() {
        for t in cases() {
            let s = SparseCell::from_transfer(&t);
            assert_eq!(s.to_transfer(), t);
            assert!(s.same_as(&t));
            assert_eq!(s.calls(), t.calls);
            assert_eq!(s.bytes(), t.bytes);
            assert_eq!(s.is_zero(), t == Transfer::ZERO);
            let nonzero = all_buckets(&t).filter(|(_, n)| *n != 0).count();
            assert_eq!(s.buckets.len(), nonzero, "only non-zero buckets are stored");
        }
        let a = cell(5, &[(3, 2)], &[]);
        let b = cell(5, &[(3, 2)], &[(1, 1)]);
        assert!(!SparseCell::from_transfer(&a).same_as(&b));
        assert!(!SparseCell::from_transfer(&b).same_as(&a));
        assert!(!SparseCell::from_transfer(&a).same_as(&cell(6, &[(3, 2)], &[])));
        assert!(!SparseCell::from_transfer(&a).same_as(&cell(5, &[(3, 3)], &[])));
        assert!(!SparseCell::from_transfer(&a).same_as(&cell(5, &[(4, 2)], &[])));
    }

    #[test]
    fn sums_and_differences_match_the_kernels_cell() {
        for a in cases() {
            for b in cases() {
                let (sa, sb) = (SparseCell::from_transfer(&a), SparseCell::from_transfer(&b));
                let mut sum = a;
                sum.add(&b);
                let mut ssum = sa.clone();
                LedgerCell::add(&mut ssum, &sb);
                assert_eq!(ssum.to_transfer(), sum);
                assert_eq!(ssum, SparseCell::from_transfer(&sum), "canonical after add");
                let diff = a.saturating_sub(&b);
                let sdiff = LedgerCell::saturating_sub(&sa, &sb);
                assert_eq!(sdiff.to_transfer(), diff);
                assert_eq!(
                    sdiff,
                    SparseCell::from_transfer(&diff),
                    "canonical after sub"
                );
            }
        }
    }

    #[test]
    fn a_cell_with_one_bucket_is_small() {
        assert_eq!(std::mem::size_of::<SparseCell>(), 64);
        assert!(std::mem::size_of::<Transfer>() > 500);
    }
}
