//! What user space does with the maps of loaded [`Probes`]: choose what the programs watch,
//! read a [`Snapshot`] of everything counted, and forget threads (and io_uring cells) whose
//! counts are final and credited. The maps are private to `Probes`; these methods are the only
//! way in.

use std::{
    collections::BTreeMap,
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use aya::maps::{IterableMap as _, MapError};
use zcprof_common::{
    Column, Deferred, InlineCell, KERNEL_SKIPPED, Lost, Syscall, THREAD_DEAD, THREAD_EXITED,
    ThreadStats, Transfer, TransferKey, UringKey, Watch,
};

use super::{Probes, batch::lookup_batch};
use crate::{
    capability::Capabilities,
    snapshot::{ProcessKey, ProcessView, RetiredThread, Snapshot, ThreadView},
    thread_table::ThreadTableError,
};

/// Longest wait for the record of a thread the kernel was retiring as a snapshot read it.
const RETIRING_WAIT: Duration = Duration::from_millis(100);

/// Errors reading or pruning the kernel maps.
#[derive(Debug, thiserror::Error)]
#[error("reading BPF map {map}: {source}")]
pub struct MapReadError {
    /// The map.
    pub map: &'static str,
    /// What failed.
    pub source: MapError,
}

fn map_err(map: &'static str) -> impl Fn(MapError) -> MapReadError {
    move |source| MapReadError { map, source }
}

fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// What thread entry `t` says, its cells in `TRANSFERS` aside.
pub(super) fn thread_view(t: &ThreadStats) -> ThreadView {
    let mut view = ThreadView {
        comm: comm_str(&t.comm),
        cgroup_id: t.cgroup_id,
        exited: t.flags & THREAD_EXITED != 0,
        dead: t.flags & THREAD_DEAD != 0,
        ..Default::default()
    };
    view.activity.counts = t.counts;
    for c in t.cells.iter() {
        if let Some(k) = InlineCell::decode(c.key) {
            view.activity.transfers.entry(k).or_default().add(&c.cell);
        }
    }
    view
}

impl Probes {
    /// Watches process `tgid` with `flags` (`WATCH_*`): threads it creates from now on are
    /// entered by the fork hook.
    pub fn watch_process(&mut self, tgid: u32, flags: u32) -> Result<(), MapError> {
        self.watched.insert(tgid, Watch { flags }, 0)
    }

    /// Stops watching process `tgid` (gone already is fine).
    pub fn unwatch_process(&mut self, tgid: u32) {
        let _ = self.watched.remove(&tgid);
    }

    /// Processes watched now.
    pub fn watched_processes(&self) -> usize {
        self.watched.keys().count()
    }

    /// Enters a thread that exists already (unless the fork hook was first). Call
    /// [`Probes::watched_set_changed`] once the threads are in.
    pub fn enter_thread(&mut self, entry: ThreadStats) -> Result<(), ThreadTableError> {
        self.threads.enter(entry)
    }

    /// Threads the thread table can hold.
    pub fn thread_capacity(&self) -> u32 {
        self.threads.capacity() - 1
    }

    /// Whether thread `tid`'s entry says its final context switch is done.
    pub fn thread_is_dead(&self, tid: u32) -> bool {
        self.threads
            .get(tid)
            .is_some_and(|t| t.flags & THREAD_DEAD != 0)
    }

    /// What zcprof can count on this kernel.
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// Whether the kernel's BTF let the programs tell fd types apart.
    pub fn fd_types_known(&self) -> bool {
        self.btf_missing.is_none()
    }

    /// Writes out the programs' pending log records (aya-log).
    pub fn flush_log(&mut self) {
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
    }

    /// Whether the maps can be read (after privileges are dropped), reading every kind of map
    /// the collectors read but taking none of the dead threads' records that
    /// [`Probes::snapshot`] would.
    pub fn check_readable(&self) -> Result<(), MapReadError> {
        self.lost.get(&0, 0).map_err(map_err("LOST"))?;
        if let Some(entry) = self.threads.iter().next() {
            entry.map_err(map_err("THREADS"))?;
        }
        // The batch reads the collections make.
        self.threads
            .for_each(|_, _| {})
            .map_err(map_err("THREADS"))?;
        if let Some(entry) = self.transfers.iter().next() {
            entry.map_err(map_err("TRANSFERS"))?;
        }
        Ok(())
    }

    /// Reads every map, and takes the records of the threads the kernel retired since the last
    /// read (see [`super::retired`]). Only processes in `only` are kept when it is given.
    pub fn snapshot(&self, only: Option<&[u32]>) -> Result<Snapshot, MapReadError> {
        let keep = |tgid: u32| only.is_none_or(|p| p.contains(&tgid));

        // The cell maps first, the thread map after: every cell's thread entry is then read
        // after the cell (threads are entered before their first cell, and only zcprof
        // deletes entries), so no cell is seen without its entry, nor under the command name
        // its thread had before an exec that preceded the cell (`zcprof serve` credits cells
        // by name).
        let mut cells = Vec::new();
        let transfers = self.transfers.map().fd().as_fd();
        let batched = lookup_batch(
            transfers,
            1024,
            |_| true,
            |k: &TransferKey, v: &Transfer| {
                if keep(k.tgid) {
                    cells.push((*k, *v));
                }
            },
        )
        .map_err(map_err("TRANSFERS"))?;
        if !batched {
            for entry in self.transfers.iter() {
                let (k, v) = entry.map_err(map_err("TRANSFERS"))?;
                if keep(k.tgid) {
                    cells.push((k, v));
                }
            }
        }
        let mut uring = Vec::new();
        for entry in self.uring.iter() {
            let (k, per_cpu) = entry.map_err(map_err("URING"))?;
            if keep(k.tgid) {
                let mut cell = Transfer::ZERO;
                for v in per_cpu.iter() {
                    cell.add(v);
                }
                uring.push((k, cell));
            }
        }
        // By (tgid, tid), the key of the cells; each with its process's start.
        let mut threads: BTreeMap<(u32, u32), (u64, ThreadView)> = BTreeMap::new();
        let mut retiring: Vec<(u32, u32, u64)> = Vec::new();
        self.threads
            .for_each_and_retiring(
                |tid, t| {
                    if keep(t.tgid) {
                        threads.insert((t.tgid, tid), (t.process_start, thread_view(t)));
                    }
                },
                |tid, t| {
                    if keep(t.tgid) {
                        retiring.push((t.tgid, tid, t.process_start));
                    }
                },
            )
            .map_err(map_err("THREADS"))?;
        // Taken after the thread entries were read: a thread both read and retired died in
        // between, and its record is its final word.
        let mut retired: Vec<RetiredThread> = self
            .retired
            .take()
            .into_iter()
            .filter(|r| keep(r.process.pid))
            .collect();
        self.await_retiring(&retiring, &mut retired, &mut threads, &keep);
        for r in &retired {
            let key = (r.process.pid, r.tid);
            if threads
                .get(&key)
                .is_some_and(|(start, _)| *start == r.process.start)
            {
                threads.remove(&key);
            }
        }
        for (k, v) in cells {
            let (Some(sc), Some(col)) = (Syscall::from_u16(k.syscall), Column::from_u16(k.column))
            else {
                continue;
            };
            // A cell whose thread has no entry any more: the kernel retired the thread after
            // the cells were read, and its record carries the cell.
            let Some((_, t)) = threads.get_mut(&(k.tgid, k.tid)) else {
                continue;
            };
            t.activity.transfers.entry((sc, col)).or_default().add(&v);
        }

        let mut snap = Snapshot {
            retired,
            ..Snapshot::default()
        };
        for ((tgid, tid), (start, view)) in threads {
            let p = snap
                .processes
                .entry(ProcessKey::new(tgid, start))
                .or_default();
            p.add_thread(tgid, tid, view);
        }
        // io_uring cells are keyed by pid alone: they belong to the newest process of that pid
        // that this read or an earlier one saw (its threads may all have died since).
        let mut uring_starts = self
            .uring_starts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut starts_now = std::collections::HashMap::new();
        for (k, v) in uring {
            let Some(col) = Column::from_u16(k.column) else {
                continue;
            };
            let all = ProcessKey::new(k.tgid, 0)..=ProcessKey::new(k.tgid, u64::MAX);
            let start = snap
                .processes
                .range(all)
                .map(|(key, _)| key.start)
                .chain(
                    snap.retired
                        .iter()
                        .filter(|r| r.process.pid == k.tgid)
                        .map(|r| r.process.start),
                )
                .max()
                .or_else(|| uring_starts.get(&k.tgid).copied())
                .unwrap_or(0);
            starts_now.insert(k.tgid, start);
            let p: &mut ProcessView = snap
                .processes
                .entry(ProcessKey::new(k.tgid, start))
                .or_default();
            p.activity.uring.entry((k.opcode, col)).or_default().add(&v);
        }
        // Only pids that still have cells: bounded by the map's size.
        *uring_starts = starts_now;
        drop(uring_starts);
        for l in Lost::ALL {
            let per_cpu = self.lost.get(&(l as u32), 0).map_err(map_err("LOST"))?;
            snap.lost.insert(l.name(), per_cpu.iter().sum());
        }
        snap.lost.insert(KERNEL_SKIPPED, self.kernel_skipped());
        for d in Deferred::ALL {
            snap.deferred.insert(d.name(), self.deferred(d)?);
        }
        Ok(snap)
    }

    /// Waits for the records of the threads the kernel was retiring while the table was read
    /// (`retiring`: tgid, tid, process start): it marks an entry before it writes the record,
    /// so the ring may not have held it yet. Without the wait, the read after a process's exit
    /// (run's and attach's last) could miss the process: the kernel retires a thread at its
    /// final context switch, just after its parent or pidfd learn it exited. A retirement that
    /// failed leaves the entry in the table, unmarked: it is read from there. Microseconds in
    /// practice; after [`RETIRING_WAIT`] the thread is left to the next read.
    fn await_retiring(
        &self,
        retiring: &[(u32, u32, u64)],
        retired: &mut Vec<RetiredThread>,
        threads: &mut BTreeMap<(u32, u32), (u64, ThreadView)>,
        keep: &impl Fn(u32) -> bool,
    ) {
        let deadline = Instant::now() + RETIRING_WAIT;
        loop {
            let missing: Vec<&(u32, u32, u64)> = retiring
                .iter()
                .filter(|(pid, tid, start)| {
                    !threads.contains_key(&(*pid, *tid))
                        && !retired.iter().any(|r| {
                            r.tid == *tid && r.process.pid == *pid && r.process.start == *start
                        })
                })
                .collect();
            if missing.is_empty() || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
            retired.extend(
                self.retired
                    .take()
                    .into_iter()
                    .filter(|r| keep(r.process.pid)),
            );
            for &&(pid, tid, start) in &missing {
                if let Some(t) = self.threads.get(tid)
                    && t.tgid == pid
                    && t.process_start == start
                {
                    threads.insert((pid, tid), (start, thread_view(&t)));
                }
            }
        }
    }

    /// Dead threads the kernel left in the table for user space, for reason `d`, since load.
    fn deferred(&self, d: Deferred) -> Result<u64, MapReadError> {
        let per_cpu = self
            .deferred
            .get(&(d as u32), 0)
            .map_err(map_err("DEFERRED"))?;
        Ok(per_cpu.iter().sum())
    }

    /// Dead threads the kernel left in the table for user space, for any reason, since load.
    pub fn deferred_total(&self) -> Result<u64, MapReadError> {
        Deferred::ALL.iter().map(|&d| self.deferred(d)).sum()
    }

    /// Deletes thread `tid`'s ledger cells, then its slot. Only for a thread whose counts are
    /// final and read: cells first, because while its slot is held its tid cannot be entered
    /// again, so no new thread's cell can be deleted with the old ones.
    pub fn forget_thread(
        &mut self,
        tgid: u32,
        tid: u32,
        cells: impl IntoIterator<Item = (Syscall, Column)>,
    ) -> Result<(), MapReadError> {
        for (sc, col) in cells {
            let key = TransferKey {
                tgid,
                tid,
                syscall: sc as u16,
                column: col as u16,
            };
            // Inline cells have no TRANSFERS entry: nothing to delete.
            let _ = self.transfers.remove(&key);
        }
        self.threads.remove(tid).map_err(map_err("THREADS"))
    }

    /// Deletes process `tgid`'s io_uring cells (the process is gone and they are credited).
    pub fn forget_uring(&mut self, tgid: u32, cells: impl IntoIterator<Item = (u16, Column)>) {
        for (opcode, col) in cells {
            let key = UringKey {
                tgid,
                opcode,
                column: col as u16,
            };
            // Already gone is fine: nothing is lost.
            let _ = self.uring.remove(&key);
        }
    }
}
