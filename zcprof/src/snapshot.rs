//! What the kernel counted, as user space holds it: per thread, per process, per group, and
//! the one fold that sums them.
//!
//! Every count is an [`Activity`]: the thread counters ([`ThreadCounts`], declared in
//! zcprof-common), the ledger cells by (syscall, column) and the io_uring cells by (opcode,
//! column). Threads fold into their process, and processes (or threads) into a daemon group,
//! with the same [`Activity::add`]; intervals and daemon deltas are [`Activity::since`] and
//! [`Activity::delta`]. `run`, `attach`, the archive of dead threads and `serve` all go
//! through these, so a new counter or cell field is summed, subtracted and reported everywhere
//! without another edit.

use std::collections::BTreeMap;

use zcprof_common::{Column, Syscall, ThreadCounts, Transfer};

mod sparse;

pub use sparse::SparseCell;

/// Ledger cells keyed by (syscall, column).
pub type Transfers<C = Transfer> = Cells<(Syscall, Column), C>;
/// io_uring cells keyed by (opcode, column).
pub type UringCells<C = Transfer> = Cells<(u16, Column), C>;

/// Ledger cells by key.
pub type Cells<K, C = Transfer> = SortedMap<K, C>;

/// What the fold needs of a ledger cell: the kernel's [`Transfer`], or the [`SparseCell`]
/// the daemon keeps.
pub trait LedgerCell: Clone + Default + PartialEq + std::fmt::Debug {
    /// Adds `other`, field by field and bucket by bucket.
    fn add(&mut self, other: &Self);
    /// `self - earlier`, field by field and bucket by bucket, 0 where one went down.
    fn saturating_sub(&self, earlier: &Self) -> Self;
    /// Calls, successful or not.
    fn calls(&self) -> u64;
    /// Bytes moved by the successful calls.
    fn bytes(&self) -> u64;
    /// Every field and bucket is 0.
    fn is_zero(&self) -> bool;
}

impl LedgerCell for Transfer {
    fn add(&mut self, other: &Self) {
        Transfer::add(self, other);
    }

    fn saturating_sub(&self, earlier: &Self) -> Self {
        Transfer::saturating_sub(self, earlier)
    }

    fn calls(&self) -> u64 {
        self.calls
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn is_zero(&self) -> bool {
        *self == Transfer::ZERO
    }
}

/// A map kept as a vector sorted by key, grown a quarter at a time: a `BTreeMap` node holds
/// 11 entries even for the one cell (about 300 bytes) most threads have, or the one thread
/// most processes have, and the daemon holds several such maps per process (10,000
/// processes made that 3.3 KiB each, five times over, plus 2.7 KiB per process and read).
/// The methods are `BTreeMap`'s.
#[derive(Debug, PartialEq, Eq)]
pub struct SortedMap<K, V>(Vec<(K, V)>);

impl<K: Clone, V: Clone> Clone for SortedMap<K, V> {
    fn clone(&self) -> Self {
        SortedMap(self.0.clone())
    }

    /// Into the memory `self` has (the daemon does this for every thread at every read).
    fn clone_from(&mut self, source: &Self) {
        self.0.clone_from(&source.0);
    }
}

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap(Vec::new())
    }
}

impl<K: Ord + Copy, V> SortedMap<K, V> {
    fn find(&self, k: &K) -> Result<usize, usize> {
        self.0.binary_search_by(|(key, _)| key.cmp(k))
    }

    fn insert_at(&mut self, i: usize, k: K, v: V) {
        if self.0.len() == self.0.capacity() {
            // A quarter more (at least one): most maps stay at one or two entries.
            self.0.reserve_exact(1 + self.0.len() / 4);
        }
        self.0.insert(i, (k, v));
    }

    /// The value of `k`.
    pub fn get(&self, k: &K) -> Option<&V> {
        self.find(k).ok().map(|i| &self.0[i].1)
    }

    /// The value of `k`, to change.
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.find(k).ok().map(|i| &mut self.0[i].1)
    }

    /// Whether `k` has a value.
    pub fn contains_key(&self, k: &K) -> bool {
        self.find(k).is_ok()
    }

    /// Sets the value of `k`, returning the one it replaces.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        match self.find(&k) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, v)),
            Err(i) => {
                self.insert_at(i, k, v);
                None
            }
        }
    }

    /// The value of `k`, to fill in or change.
    pub fn entry(&mut self, k: K) -> MapEntry<'_, K, V> {
        MapEntry { map: self, key: k }
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&K, &V)> + ExactSizeIterator {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }

    /// The values in key order, to change.
    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut V> + ExactSizeIterator {
        self.0.iter_mut().map(|(_, v)| v)
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Ord + Copy, C: LedgerCell> Cells<K, C> {
    /// Adds every cell of `other`, cell by cell.
    pub fn add_all(&mut self, other: &Cells<K, C>) {
        add_cells(self, other);
    }
}

impl<K: Ord + Copy, V> std::ops::Index<&K> for SortedMap<K, V> {
    type Output = V;

    /// The value of `k`; panics if there is none, as a map's index does.
    fn index(&self, k: &K) -> &V {
        self.get(k).expect("no entry for this key")
    }
}

/// [`SortedMap::entry`].
pub struct MapEntry<'a, K, V> {
    map: &'a mut SortedMap<K, V>,
    key: K,
}

impl<'a, K: Ord + Copy, V: Default> MapEntry<'a, K, V> {
    /// The value, inserted as the default if it was not there.
    pub fn or_default(self) -> &'a mut V {
        let i = match self.map.find(&self.key) {
            Ok(i) => i,
            Err(i) => {
                self.map.insert_at(i, self.key, V::default());
                i
            }
        };
        &mut self.map.0[i].1
    }
}

impl<'a, K, V> IntoIterator for &'a SortedMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&'a (K, V)) -> (&'a K, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<K: Ord + Copy, V> FromIterator<(K, V)> for SortedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut v: Vec<(K, V)> = iter.into_iter().collect();
        v.sort_by_key(|e| e.0);
        // The last of equal keys wins, as in a map.
        v.reverse();
        v.dedup_by(|later, kept| later.0 == kept.0);
        v.reverse();
        v.shrink_to_fit();
        SortedMap(v)
    }
}

/// What a thread, a process or a group did; its ledger cells are the kernel's [`Transfer`]s,
/// or [`SparseCell`]s in what the daemon keeps ([`SparseActivity`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Activity<C = Transfer> {
    /// Syscalls, context switches, page faults, zero-copy completions.
    pub counts: ThreadCounts,
    /// Ledger cells of syscalls and file faults.
    pub transfers: Transfers<C>,
    /// io_uring completions (kept per process by the kernel: threads have none).
    pub uring: UringCells<C>,
}

/// An [`Activity`] with sparse histograms: what the daemon keeps per thread and per group.
pub type SparseActivity = Activity<SparseCell>;

impl<C: Clone> Clone for Activity<C> {
    fn clone(&self) -> Self {
        Activity {
            counts: self.counts,
            transfers: self.transfers.clone(),
            uring: self.uring.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.counts = source.counts;
        self.transfers.clone_from(&source.transfers);
        self.uring.clone_from(&source.uring);
    }
}

impl<C: LedgerCell> Activity<C> {
    /// The fold: adds `other` to `self`, counter by counter and cell by cell.
    pub fn add(&mut self, other: &Activity<C>) {
        self.counts.add(&other.counts);
        add_cells(&mut self.transfers, &other.transfers);
        add_cells(&mut self.uring, &other.uring);
    }

    /// What happened between `earlier` and `self` (counts that went down count 0; cells with
    /// no new call are left out).
    pub fn since(&self, earlier: &Activity<C>) -> Activity<C> {
        Activity {
            counts: self.counts.saturating_sub(&earlier.counts),
            transfers: cells_since(&self.transfers, &earlier.transfers),
            uring: cells_since(&self.uring, &earlier.uring),
        }
    }

    /// `self - last`, or `None` if anything went down or a cell vanished: then these are not
    /// the entries `last` was read from (a tid reused, an entry replaced).
    pub fn delta(&self, last: &Activity<C>) -> Option<Activity<C>> {
        (last.counts.saturating_sub(&self.counts) == ThreadCounts::ZERO).then_some(())?;
        Some(Activity {
            counts: self.counts.saturating_sub(&last.counts),
            transfers: cells_delta(&self.transfers, &last.transfers)?,
            uring: cells_delta(&self.uring, &last.uring)?,
        })
    }

    /// Nothing counted.
    pub fn is_empty(&self) -> bool {
        self.counts == ThreadCounts::ZERO && self.transfers.is_empty() && self.uring.is_empty()
    }

    /// Bytes per ledger column, syscalls and io_uring together, every column present.
    pub fn ledger(&self) -> BTreeMap<Column, u64> {
        let mut out: BTreeMap<Column, u64> = Column::ALL.iter().map(|c| (*c, 0)).collect();
        let cells = self.transfers.iter().map(|((_, c), t)| (c, t));
        for (col, cell) in cells.chain(self.uring.iter().map(|((_, c), t)| (c, t))) {
            *out.entry(*col).or_default() += cell.bytes();
        }
        out
    }

    /// Bytes the CPU copied (the three CPU columns).
    pub fn cpu_copied(&self) -> u64 {
        let ledger = self.ledger();
        Column::CPU_COPIES.iter().map(|c| ledger[c]).sum()
    }
}

impl<K: Ord + Copy> Cells<K> {
    /// The same cells with sparse histograms.
    pub fn sparse(&self) -> Cells<K, SparseCell> {
        SortedMap(
            self.iter()
                .map(|(k, t)| (*k, SparseCell::from_transfer(t)))
                .collect(),
        )
    }
}

impl<K: Ord + Copy> Cells<K, SparseCell> {
    /// The same cells in the kernel's form.
    pub fn full(&self) -> Cells<K> {
        SortedMap(self.iter().map(|(k, s)| (*k, s.to_transfer())).collect())
    }
}

impl Activity {
    /// The same counts with sparse histograms, as the daemon keeps them.
    pub fn sparse(&self) -> SparseActivity {
        Activity {
            counts: self.counts,
            transfers: self.transfers.sparse(),
            uring: self.uring.sparse(),
        }
    }
}

impl SparseActivity {
    /// The same counts with the kernel's cells.
    pub fn full(&self) -> Activity {
        Activity {
            counts: self.counts,
            transfers: self.transfers.full(),
            uring: self.uring.full(),
        }
    }

    /// Whether `full` holds the same counts (without converting it).
    pub fn same_as(&self, full: &Activity) -> bool {
        fn cells<K: Ord + Copy>(s: &Cells<K, SparseCell>, f: &Cells<K>) -> bool {
            s.len() == f.len()
                && s.iter()
                    .zip(f.iter())
                    .all(|((ks, s), (kf, f))| ks == kf && s.same_as(f))
        }
        self.counts == full.counts
            && cells(&self.transfers, &full.transfers)
            && cells(&self.uring, &full.uring)
    }
}

fn add_cells<K: Ord + Copy, C: LedgerCell>(into: &mut Cells<K, C>, from: &Cells<K, C>) {
    for (k, c) in from {
        LedgerCell::add(into.entry(*k).or_default(), c);
    }
}

fn cells_since<K: Ord + Copy, C: LedgerCell>(
    now: &Cells<K, C>,
    earlier: &Cells<K, C>,
) -> Cells<K, C> {
    let zero = C::default();
    now.iter()
        .map(|(k, c)| (*k, c.saturating_sub(earlier.get(k).unwrap_or(&zero))))
        .filter(|(_, c)| c.calls() != 0)
        .collect()
}

/// `now - last` cell by cell; `None` if a cell went down or vanished.
fn cells_delta<K: Ord + Copy, C: LedgerCell>(
    now: &Cells<K, C>,
    last: &Cells<K, C>,
) -> Option<Cells<K, C>> {
    if last.keys().any(|k| !now.contains_key(k)) {
        return None;
    }
    let mut out = Vec::new();
    for (k, c) in now {
        let d = match last.get(k) {
            Some(l) if !l.saturating_sub(c).is_zero() => return None,
            Some(l) => c.saturating_sub(l),
            None => c.clone(),
        };
        if d.calls() != 0 {
            out.push((*k, d));
        }
    }
    out.shrink_to_fit();
    Some(SortedMap(out))
}

/// One thread's view.
#[derive(Debug, Clone, Default)]
pub struct ThreadView {
    /// Command name.
    pub comm: String,
    /// cgroup v2 id when the kernel entered the thread (0 if unknown).
    pub cgroup_id: u64,
    /// The thread has exited.
    pub exited: bool,
    /// Its final context switch is done: its counters will not change any more.
    pub dead: bool,
    /// What it did (no io_uring cells: those are the process's).
    pub activity: Activity,
}

/// How zcprof tells processes apart: a pid, and when the process started, since the kernel
/// gives a pid to a new process once the old one is gone (within seconds on a busy host).
/// Ordered by pid, then start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcessKey {
    /// The process id (tgid).
    pub pid: u32,
    /// When it started (ns since boot, CLOCK_MONOTONIC); 0 for a process that was running
    /// before zcprof watched it.
    pub start: u64,
}

impl ProcessKey {
    /// The process `pid` that started at `start`.
    pub fn new(pid: u32, start: u64) -> Self {
        Self { pid, start }
    }
}

/// One dead thread's final counts, as the kernel handed them over when it freed the thread's
/// entry.
#[derive(Debug, Clone)]
pub struct RetiredThread {
    /// Its process.
    pub process: ProcessKey,
    /// The thread.
    pub tid: u32,
    /// Its counts and cells, final.
    pub view: ThreadView,
}

/// One process's view: its threads, and their sum plus its io_uring operations.
#[derive(Debug, Clone, Default)]
pub struct ProcessView {
    /// Command name (of the main thread when known).
    pub comm: String,
    /// Every thread seen has exited.
    pub exited: bool,
    /// The sum of its threads, plus its io_uring cells.
    pub activity: Activity,
    /// Threads by tid.
    pub threads: SortedMap<u32, ThreadView>,
}

impl ProcessView {
    /// Folds thread `tid` into the process. A tid seen twice (the kernel reused it for another
    /// thread of the process) stays one thread with both threads' counts and the newer
    /// thread's state; the process's sums are right either way.
    pub fn add_thread(&mut self, tgid: u32, tid: u32, thread: ThreadView) {
        self.activity.add(&thread.activity);
        if (tid == tgid || self.comm.is_empty()) && !thread.comm.is_empty() {
            self.comm.clone_from(&thread.comm);
        }
        match self.threads.get_mut(&tid) {
            Some(t) => t.activity.add(&thread.activity),
            None => {
                self.threads.insert(tid, thread);
            }
        }
        self.exited = self.threads.values().all(|t| t.exited);
    }
}

/// Everything the kernel side counted, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Processes by pid and start time.
    pub processes: BTreeMap<ProcessKey, ProcessView>,
    /// Events not recorded, by reason (the [`zcprof_common::Lost`] names and
    /// [`zcprof_common::KERNEL_SKIPPED`]).
    pub lost: BTreeMap<&'static str, u64>,
    /// Dead threads the kernel left to user space to collect, by reason (the
    /// [`zcprof_common::Deferred`] names): not lost, only slower.
    pub deferred: BTreeMap<&'static str, u64>,
    /// Threads that died since the previous read, with their final counts: not in
    /// `processes`. Whoever keeps totals must fold them in, or they are lost.
    pub retired: Vec<RetiredThread>,
}

impl Snapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let since = |now: &BTreeMap<&'static str, u64>, then: &BTreeMap<&'static str, u64>| {
            now.iter()
                .map(|(k, v)| (*k, v.saturating_sub(*then.get(k).unwrap_or(&0))))
                .collect()
        };
        let lost = since(&self.lost, &earlier.lost);
        let deferred = since(&self.deferred, &earlier.deferred);
        let empty = ProcessView::default();
        let processes = self
            .processes
            .iter()
            .map(|(pid, p)| {
                let e = earlier.processes.get(pid).unwrap_or(&empty);
                let threads = p
                    .threads
                    .iter()
                    .map(|(tid, t)| {
                        let before = e.threads.get(tid).map(|t| &t.activity);
                        let activity = t.activity.since(before.unwrap_or(&Activity::default()));
                        (
                            *tid,
                            ThreadView {
                                activity,
                                ..t.clone()
                            },
                        )
                    })
                    .collect();
                let view = ProcessView {
                    comm: p.comm.clone(),
                    exited: p.exited,
                    activity: p.activity.since(&e.activity),
                    threads,
                };
                (*pid, view)
            })
            .collect();
        Snapshot {
            processes,
            lost,
            deferred,
            retired: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(calls: u64, bytes: u64) -> Transfer {
        Transfer {
            calls,
            bytes,
            ..Transfer::ZERO
        }
    }

    fn thread(syscalls: u64, read_bytes: u64) -> ThreadView {
        let mut a = Activity::default();
        a.counts.syscalls = syscalls;
        a.transfers.insert(
            (Syscall::Read, Column::CpuKernelToUser),
            cell(1, read_bytes),
        );
        ThreadView {
            comm: "t".into(),
            activity: a,
            ..Default::default()
        }
    }

    #[test]
    fn threads_fold_into_their_process() {
        let mut p = ProcessView::default();
        p.add_thread(10, 10, thread(3, 100));
        p.add_thread(10, 11, thread(4, 50));
        // A reused tid adds its counts to the same row.
        p.add_thread(10, 11, thread(1, 5));
        assert_eq!(p.activity.counts.syscalls, 8);
        assert_eq!(p.activity.ledger()[&Column::CpuKernelToUser], 155);
        assert_eq!(p.threads[&11].activity.counts.syscalls, 5);
        assert_eq!(p.activity.cpu_copied(), 155);
    }

    #[test]
    fn delta_refuses_counts_that_went_down() {
        let a = thread(5, 100).activity;
        let mut b = thread(7, 300).activity;
        let read = (Syscall::Read, Column::CpuKernelToUser);
        b.transfers.get_mut(&read).expect("a read cell").calls = 2;
        let d = b.delta(&a).expect("grew");
        assert_eq!(d.counts.syscalls, 2);
        assert_eq!(
            (d.transfers[&read].calls, d.transfers[&read].bytes),
            (1, 200)
        );
        assert_eq!(a.delta(&b), None);
        assert_eq!(b.since(&a), d);
        // A cell that vanished: not the same entries.
        assert_eq!(Activity::default().delta(&a), None);
    }
}
