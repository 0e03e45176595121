//! The table of watched threads, user side: the `THREADS` array of per-thread counters, the
//! `TID_SLOT` map that says which slot a thread has, the `FREE_SLOTS` stack that slots are
//! handed out from (by the kernel's fork hook, or here at attach) and given back to, and the
//! `WATCH_GEN` generation that tells every CPU's cache of tid -> slot when to look again.
//!
//! Slots instead of a hash keyed by tid: the kernel's hot path then finds a thread's counters
//! with array lookups it inlines (see `CPU_THREAD` in the kernel crate).

use std::os::fd::AsFd as _;

use aya::maps::{Array, HashMap, IterableMap as _, MapData, MapError, Stack};
use zcprof_common::{THREAD_RETIRING, ThreadStats};

use crate::loader::batch::lookup_batch;

/// BPF_NOEXIST: a tid is claimed by whoever inserts it first.
const BPF_NOEXIST: u64 = 1;

/// Errors entering a thread.
#[derive(Debug, thiserror::Error)]
pub enum ThreadTableError {
    /// Every slot is in use.
    #[error("the thread table is full ({0} threads); raise --max-threads")]
    Full(u32),
    /// A map operation failed.
    #[error(transparent)]
    Map(#[from] MapError),
}

/// The watched threads and their counters.
pub struct ThreadTable {
    slots: Array<MapData, ThreadStats>,
    tid_slot: HashMap<MapData, u32, u32>,
    free: Stack<MapData, u32>,
    generation: Array<MapData, u64>,
}

/// A free slot: all zeros, which is also what the kernel expects to fill in.
const FREE_SLOT: ThreadStats = ThreadStats::new(0, 0, [0; 16], 0);

impl ThreadTable {
    /// Takes the maps of a fresh load and hands every slot but 0 to the free stack.
    pub fn new(
        slots: Array<MapData, ThreadStats>,
        tid_slot: HashMap<MapData, u32, u32>,
        mut free: Stack<MapData, u32>,
        generation: Array<MapData, u64>,
    ) -> Result<Self, MapError> {
        // Pushed from the top down, so that slot 1 is the first handed out.
        for slot in (1..slots.len()).rev() {
            free.push(slot, 0)?;
        }
        Ok(Self {
            slots,
            tid_slot,
            free,
            generation,
        })
    }

    /// Moves the watch generation on: every CPU forgets which thread it last looked up (call
    /// after entering threads that may be running, so that no CPU keeps them as unwatched).
    pub fn generation_moved(&mut self) -> Result<(), MapError> {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        // The kernel side writes bpf_ktime_get_ns(), the same clock: the value only grows.
        let ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        let old = self.generation.get(&0, 0)?;
        self.generation.set(0, ns.max(old + 1), 0)
    }

    /// Slots, slot 0 (never used) included.
    pub fn capacity(&self) -> u32 {
        self.slots.len()
    }

    /// Every entered thread and its counters, by tid. A thread whose entry the kernel is
    /// filling in at this very moment shows up at the next read; one the kernel is retiring
    /// is left out (its record carries it).
    pub fn iter(&self) -> impl Iterator<Item = Result<(u32, ThreadStats), MapError>> + '_ {
        self.tid_slot.iter().filter_map(move |entry| {
            let (tid, slot) = match entry {
                Ok(e) => e,
                Err(e) => return Some(Err(e)),
            };
            match self.slots.get(&slot, 0) {
                Ok(t) if t.tid == tid && t.flags & THREAD_RETIRING == 0 => Some(Ok((tid, t))),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        })
    }

    /// What [`ThreadTable::iter`] yields, read in batches: every tid and slot first, then the
    /// slots up to the highest one in use (a few dozen calls where `iter` makes three per
    /// thread).
    pub fn for_each(&self, each: impl FnMut(u32, &ThreadStats)) -> Result<(), MapError> {
        self.for_each_and_retiring(each, |_, _| {})
    }

    /// As [`ThreadTable::for_each`], and `retiring` gets each thread the kernel was retiring
    /// as its entry was read: its record may not be in the ring buffer yet (the kernel marks
    /// the entry before it writes the record).
    pub fn for_each_and_retiring(
        &self,
        mut each: impl FnMut(u32, &ThreadStats),
        mut retiring: impl FnMut(u32, &ThreadStats),
    ) -> Result<(), MapError> {
        let mut visit = |tid: u32, t: &ThreadStats| {
            if t.tid != tid {
                return;
            }
            if t.flags & THREAD_RETIRING == 0 {
                each(tid, t);
            } else {
                retiring(tid, t);
            }
        };
        // (slot, tid), sorted by slot as the array is read.
        let mut slots: Vec<(u32, u32)> = Vec::new();
        let tid_slot = self.tid_slot.map().fd().as_fd();
        if !lookup_batch(
            tid_slot,
            4096,
            |_| true,
            |&tid, &slot| slots.push((slot, tid)),
        )? {
            for entry in self.tid_slot.iter() {
                let (tid, slot) = entry?;
                visit(tid, &self.slots.get(&slot, 0)?);
            }
            return Ok(());
        }
        slots.sort_unstable();
        let Some(&(highest, _)) = slots.last() else {
            return Ok(());
        };
        let mut next = slots.iter().peekable();
        let array = self.slots.map().fd().as_fd();
        let batched = lookup_batch(
            array,
            256,
            |&last: &u32| last < highest,
            |&slot: &u32, t: &ThreadStats| {
                while next.next_if(|(s, _)| *s < slot).is_some() {}
                while let Some((_, tid)) = next.next_if(|(s, _)| *s == slot) {
                    visit(*tid, t);
                }
            },
        )?;
        if !batched {
            for &(slot, tid) in &slots {
                visit(tid, &self.slots.get(&slot, 0)?);
            }
        }
        Ok(())
    }

    /// The counters of thread `tid`, if it has a slot.
    pub fn get(&self, tid: u32) -> Option<ThreadStats> {
        let slot = self.tid_slot.get(&tid, 0).ok()?;
        self.slots
            .get(&slot, 0)
            .ok()
            .filter(|t| t.tid == tid && t.flags & THREAD_RETIRING == 0)
    }

    /// Enters `entry` (for thread `entry.tid`) unless the thread has a slot already (the
    /// fork hook may have been first).
    pub fn enter(&mut self, entry: ThreadStats) -> Result<(), ThreadTableError> {
        if self.tid_slot.get(&entry.tid, 0).is_ok() {
            return Ok(());
        }
        let slot = match self.free.pop(0) {
            Ok(s) => s,
            Err(MapError::ElementNotFound) => {
                return Err(ThreadTableError::Full(self.capacity() - 1));
            }
            Err(e) => return Err(e.into()),
        };
        // Filled before it is claimed: until then no program can reach the slot.
        self.slots.set(slot, entry, 0)?;
        match self.tid_slot.insert(entry.tid, slot, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.release(slot)?;
                match e {
                    MapError::SyscallError(ref s)
                        if s.io_error.raw_os_error() == Some(libc::EEXIST) =>
                    {
                        Ok(())
                    }
                    e => Err(e.into()),
                }
            }
        }
    }

    /// Forgets thread `tid` and frees its slot. Only for a thread that is dead (its final
    /// context switch done): a running thread could still be counting into the slot.
    pub fn remove(&mut self, tid: u32) -> Result<(), MapError> {
        let slot = self.tid_slot.get(&tid, 0)?;
        self.tid_slot.remove(&tid)?;
        // A CPU may still map the tid to the slot; a new task that reuses the tid would count
        // into a freed (or reassigned) slot.
        self.generation_moved()?;
        self.release(slot)
    }

    fn release(&mut self, slot: u32) -> Result<(), MapError> {
        self.slots.set(slot, FREE_SLOT, 0)?;
        self.free.push(slot, 0)
    }
}
