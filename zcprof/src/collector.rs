//! Reads the kernel maps into a [`Snapshot`]: per process, per thread, per ledger cell.
//! Snapshots subtract, which gives `attach`'s per-interval deltas.

use std::collections::BTreeMap;

use aya::maps::MapError;
use zcprof_common::{
    Column, HIST_BUCKETS, InlineCell, Lost, Syscall, THREAD_DEAD, THREAD_EXITED, Transfer,
};

use crate::loader::Probes;

/// Errors reading the kernel maps.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A map read failed.
    #[error("reading BPF map {map}: {source}")]
    Map { map: &'static str, source: MapError },
}

/// Counters of a thread or, summed, a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Syscalls made (each is two mode switches).
    pub syscalls: u64,
    /// Of those, the ones made before the last execve.
    pub syscalls_before_exec: u64,
    /// Voluntary context switches.
    pub ctx_voluntary: u64,
    /// Involuntary context switches.
    pub ctx_involuntary: u64,
    /// Minor page faults.
    pub faults_minor: u64,
    /// Major page faults.
    pub faults_major: u64,
    /// Faults taken in user mode.
    pub faults_user: u64,
    /// Faults taken in kernel mode.
    pub faults_kernel: u64,
    /// MSG_ZEROCOPY sends whose completion was read.
    pub zerocopy_sends_completed: u64,
    /// Of those, sends the kernel reported it copied.
    pub zerocopy_sends_copied: u64,
}

impl Counters {
    pub(crate) fn add(&mut self, o: &Counters) {
        self.syscalls += o.syscalls;
        self.syscalls_before_exec += o.syscalls_before_exec;
        self.ctx_voluntary += o.ctx_voluntary;
        self.ctx_involuntary += o.ctx_involuntary;
        self.faults_minor += o.faults_minor;
        self.faults_major += o.faults_major;
        self.faults_user += o.faults_user;
        self.faults_kernel += o.faults_kernel;
        self.zerocopy_sends_completed += o.zerocopy_sends_completed;
        self.zerocopy_sends_copied += o.zerocopy_sends_copied;
    }

    pub(crate) fn sub(&self, o: &Counters) -> Counters {
        Counters {
            syscalls: self.syscalls.saturating_sub(o.syscalls),
            syscalls_before_exec: self
                .syscalls_before_exec
                .saturating_sub(o.syscalls_before_exec),
            ctx_voluntary: self.ctx_voluntary.saturating_sub(o.ctx_voluntary),
            ctx_involuntary: self.ctx_involuntary.saturating_sub(o.ctx_involuntary),
            faults_minor: self.faults_minor.saturating_sub(o.faults_minor),
            faults_major: self.faults_major.saturating_sub(o.faults_major),
            faults_user: self.faults_user.saturating_sub(o.faults_user),
            faults_kernel: self.faults_kernel.saturating_sub(o.faults_kernel),
            zerocopy_sends_completed: self
                .zerocopy_sends_completed
                .saturating_sub(o.zerocopy_sends_completed),
            zerocopy_sends_copied: self
                .zerocopy_sends_copied
                .saturating_sub(o.zerocopy_sends_copied),
        }
    }
}

/// One ledger cell: calls and bytes of one syscall (or io_uring opcode) in one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Calls made.
    pub calls: u64,
    /// Bytes moved by successful calls.
    pub bytes: u64,
    /// Calls that failed.
    pub errors: u64,
    /// MSG_ZEROCOPY sends among the calls.
    pub zerocopy_requested: u64,
    /// Log2 histogram of successful calls' sizes.
    pub size_log2: [u64; HIST_BUCKETS],
}

impl Default for Cell {
    fn default() -> Self {
        Cell {
            calls: 0,
            bytes: 0,
            errors: 0,
            zerocopy_requested: 0,
            size_log2: [0; HIST_BUCKETS],
        }
    }
}

impl Cell {
    pub(crate) fn add(&mut self, t: &Cell) {
        self.calls += t.calls;
        self.bytes += t.bytes;
        self.errors += t.errors;
        self.zerocopy_requested += t.zerocopy_requested;
        for (a, b) in self.size_log2.iter_mut().zip(t.size_log2.iter()) {
            *a += b;
        }
    }

    pub(crate) fn sub(&self, o: &Cell) -> Cell {
        let mut c = Cell {
            calls: self.calls.saturating_sub(o.calls),
            bytes: self.bytes.saturating_sub(o.bytes),
            errors: self.errors.saturating_sub(o.errors),
            zerocopy_requested: self.zerocopy_requested.saturating_sub(o.zerocopy_requested),
            size_log2: self.size_log2,
        };
        for (a, b) in c.size_log2.iter_mut().zip(o.size_log2.iter()) {
            *a = a.saturating_sub(*b);
        }
        c
    }

    fn is_zero(&self) -> bool {
        self.calls == 0
    }
}

impl From<&Transfer> for Cell {
    fn from(t: &Transfer) -> Self {
        Cell {
            calls: t.calls,
            bytes: t.bytes,
            errors: t.errors,
            zerocopy_requested: t.zerocopy_requested,
            size_log2: t.size_log2,
        }
    }
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
    /// Its counters.
    pub counters: Counters,
    /// Its ledger cells.
    pub transfers: BTreeMap<(Syscall, Column), Cell>,
}

/// One process's view: sums over its threads, plus io_uring operations.
#[derive(Debug, Clone, Default)]
pub struct ProcessView {
    /// Command name (of the main thread when known).
    pub comm: String,
    /// Every thread seen has exited.
    pub exited: bool,
    /// Summed counters.
    pub counters: Counters,
    /// Summed ledger cells.
    pub transfers: BTreeMap<(Syscall, Column), Cell>,
    /// io_uring completions by (opcode, column).
    pub uring: BTreeMap<(u16, Column), Cell>,
    /// Threads by tid.
    pub threads: BTreeMap<u32, ThreadView>,
}

impl ProcessView {
    /// Bytes per ledger column, syscalls and io_uring together.
    pub fn ledger(&self) -> BTreeMap<Column, u64> {
        let mut out: BTreeMap<Column, u64> = Column::ALL.iter().map(|c| (*c, 0)).collect();
        for ((_, col), cell) in self.transfers.iter() {
            *out.entry(*col).or_default() += cell.bytes;
        }
        for ((_, col), cell) in self.uring.iter() {
            *out.entry(*col).or_default() += cell.bytes;
        }
        out
    }
}

/// Everything the kernel side counted, at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Processes by pid (tgid).
    pub processes: BTreeMap<u32, ProcessView>,
    /// Events not recorded, by reason.
    pub lost: BTreeMap<&'static str, u64>,
}

/// The lost-event reason the kernel itself reports: events it did not run zcprof's programs
/// for ([`Probes::kernel_skipped`]).
pub const KERNEL_SKIPPED: &str = "kernel_skipped";

/// Name of a [`Lost`] reason in reports.
pub fn lost_name(l: Lost) -> &'static str {
    match l {
        Lost::ThreadTableFull => "thread_table_full",
        Lost::TransferTableFull => "transfer_table_full",
        Lost::ProcessTableFull => "process_table_full",
        Lost::UringTableFull => "uring_table_full",
        Lost::ReadFailed => "read_failed",
    }
}

const LOST_ALL: [Lost; 5] = [
    Lost::ThreadTableFull,
    Lost::TransferTableFull,
    Lost::ProcessTableFull,
    Lost::UringTableFull,
    Lost::ReadFailed,
];

fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Reads every map. Only processes in `only` are kept when it is given.
pub fn snapshot(probes: &Probes, only: Option<&[u32]>) -> Result<Snapshot, CollectError> {
    let keep = |tgid: u32| only.is_none_or(|p| p.contains(&tgid));
    let mut snap = Snapshot::default();
    let map_err = |map| move |source| CollectError::Map { map, source };

    // The cell maps first, the thread map after: every cell's thread entry is then read
    // after the cell (threads are entered before their first cell, and only zcprof deletes
    // entries), so no cell is seen without its entry, nor under the command name its thread
    // had before an exec that preceded the cell (`zcprof serve` credits cells by name).
    let mut cells = Vec::new();
    for entry in probes.transfers.iter() {
        let (k, v) = entry.map_err(map_err("TRANSFERS"))?;
        if keep(k.tgid) {
            cells.push((k, Cell::from(&v)));
        }
    }
    let mut uring = Vec::new();
    for entry in probes.uring.iter() {
        let (k, per_cpu) = entry.map_err(map_err("URING"))?;
        if keep(k.tgid) {
            let mut cell = Cell::default();
            for v in per_cpu.iter() {
                cell.add(&Cell::from(v));
            }
            uring.push((k, cell));
        }
    }

    for entry in probes.threads.iter() {
        let (tid, t) = entry.map_err(map_err("THREADS"))?;
        if !keep(t.tgid) {
            continue;
        }
        let p = snap.processes.entry(t.tgid).or_default();
        let counters = Counters {
            syscalls: t.syscalls,
            syscalls_before_exec: t.syscalls_before_exec,
            ctx_voluntary: t.ctx_voluntary,
            ctx_involuntary: t.ctx_involuntary,
            faults_minor: t.faults_minor,
            faults_major: t.faults_major,
            faults_user: t.faults_user,
            faults_kernel: t.faults_kernel,
            zerocopy_sends_completed: t.zerocopy_sends_completed,
            zerocopy_sends_copied: t.zerocopy_sends_copied,
        };
        let view = ThreadView {
            comm: comm_str(&t.comm),
            cgroup_id: t.cgroup_id,
            exited: t.flags & THREAD_EXITED != 0,
            dead: t.flags & THREAD_DEAD != 0,
            counters,
            transfers: BTreeMap::new(),
        };
        let mut view = view;
        for c in t.cells.iter() {
            if let Some(k) = InlineCell::decode(c.key) {
                view.transfers
                    .entry(k)
                    .or_default()
                    .add(&Cell::from(&c.cell));
            }
        }
        if tid == t.tgid || p.comm.is_empty() {
            p.comm = view.comm.clone();
        }
        p.threads.insert(tid, view);
    }
    for (k, v) in cells {
        let (Some(sc), Some(col)) = (Syscall::from_u16(k.syscall), Column::from_u16(k.column))
        else {
            continue;
        };
        let p = snap.processes.entry(k.tgid).or_default();
        let t = p.threads.entry(k.tid).or_default();
        t.transfers.entry((sc, col)).or_default().add(&v);
    }
    for (k, v) in uring {
        let Some(col) = Column::from_u16(k.column) else {
            continue;
        };
        let p = snap.processes.entry(k.tgid).or_default();
        p.uring.entry((k.opcode, col)).or_default().add(&v);
    }
    for p in snap.processes.values_mut() {
        p.exited = !p.threads.is_empty() && p.threads.values().all(|t| t.exited);
        for t in p.threads.values() {
            p.counters.add(&t.counters);
            for (k, c) in &t.transfers {
                p.transfers.entry(*k).or_default().add(c);
            }
        }
    }
    for l in LOST_ALL {
        let per_cpu = probes.lost.get(&(l as u32), 0).map_err(map_err("LOST"))?;
        snap.lost.insert(lost_name(l), per_cpu.iter().sum());
    }
    snap.lost.insert(KERNEL_SKIPPED, probes.kernel_skipped());
    Ok(snap)
}

impl Snapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut out = Snapshot {
            processes: BTreeMap::new(),
            lost: self
                .lost
                .iter()
                .map(|(k, v)| (*k, v.saturating_sub(*earlier.lost.get(k).unwrap_or(&0))))
                .collect(),
        };
        for (pid, p) in &self.processes {
            let empty = ProcessView::default();
            let e = earlier.processes.get(pid).unwrap_or(&empty);
            let mut d = ProcessView {
                comm: p.comm.clone(),
                exited: p.exited,
                counters: p.counters.sub(&e.counters),
                ..Default::default()
            };
            for (k, c) in &p.transfers {
                let dc = c.sub(e.transfers.get(k).unwrap_or(&Cell::default()));
                if !dc.is_zero() {
                    d.transfers.insert(*k, dc);
                }
            }
            for (k, c) in &p.uring {
                let dc = c.sub(e.uring.get(k).unwrap_or(&Cell::default()));
                if !dc.is_zero() {
                    d.uring.insert(*k, dc);
                }
            }
            for (tid, t) in &p.threads {
                let et = e.threads.get(tid).cloned().unwrap_or_default();
                let mut dt = ThreadView {
                    comm: t.comm.clone(),
                    cgroup_id: t.cgroup_id,
                    exited: t.exited,
                    dead: t.dead,
                    counters: t.counters.sub(&et.counters),
                    transfers: BTreeMap::new(),
                };
                for (k, c) in &t.transfers {
                    let dc = c.sub(et.transfers.get(k).unwrap_or(&Cell::default()));
                    if !dc.is_zero() {
                        dt.transfers.insert(*k, dc);
                    }
                }
                d.threads.insert(*tid, dt);
            }
            out.processes.insert(*pid, d);
        }
        out
    }
}
