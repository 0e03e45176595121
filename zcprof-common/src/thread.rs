//! One thread's entry in the thread table: its counters and the state the programs keep.

use crate::{FD_CACHE, FdCacheEntry, INLINE_CELLS, InlineCell, ThreadCounts, Transfer};

/// [`ThreadStats::flags`]: the thread has exited (it may still be switched out on its way).
pub const THREAD_EXITED: u32 = 1;
/// [`ThreadStats::flags`]: the thread's final context switch has happened; its counters are
/// final.
pub const THREAD_DEAD: u32 = 2;
/// [`ThreadStats::flags`]: the kernel is moving the thread's final counts out through
/// [`crate::MAP_RETIRED`] and freeing its entry; readers of the table skip it (the record
/// carries it). Set together with [`THREAD_DEAD`], in one store, and cleared again if the
/// record could not be written, which leaves the entry to user space.
pub const THREAD_RETIRING: u32 = 4;
/// [`ThreadStats::flags`]: the thread has more cells in [`crate::MAP_TRANSFERS`] than
/// [`ThreadStats::spilled`] can name, so the kernel cannot free them all: user space retires it.
pub const THREAD_SPILLED_MANY: u32 = 8;
/// Cells of one thread in [`crate::MAP_TRANSFERS`] that its entry can name
/// ([`ThreadStats::spilled`]) and its [`Retired`] record can carry. A typical process needs
/// three (mmap of a file, of anonymous memory, munmap); more than this is rare.
pub const SPILLED_CELLS: usize = 8;
/// [`ThreadStats::last_nvcsw`] before the first context switch of a thread whose
/// voluntary-switch count was unknown when it was entered.
pub const NVCSW_UNKNOWN: u64 = u64::MAX;

/// Value of [`crate::MAP_THREADS`]: everything zcprof counts for one thread, apart from transfers.
///
/// The map is a plain array, not a per-CPU map: a slot is only ever written by the thread it
/// describes (its syscalls, its faults, its own context switch) or, once, by whoever enters
/// it (the parent before the child first runs, or user space) before the thread can find it.
/// So no two CPUs write one entry at the same time, no atomics are needed, and memory does
/// not grow with the number of CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadStats {
    /// The thread (0: a free slot).
    pub tid: u32,
    /// Process (thread group) the thread belongs to.
    pub tgid: u32,
    /// Bit set of `THREAD_*`.
    pub flags: u32,
    /// State, not a statistic: bit set of the hooks whose primary program ran for the
    /// thread's current event, each cleared by that hook's backstop (kernels that preempt BPF
    /// programs; see zcprof-ebpf's `backstop`). 0 without backstops.
    pub ran: u32,
    /// Command name (`comm`), NUL-padded; updated on exec.
    pub comm: [u8; 16],
    /// cgroup v2 id (the cgroup directory's inode number) when the thread was entered, and
    /// again at each exec; 0 if entered by user space and not exec'd since.
    pub cgroup_id: u64,
    /// State, not a statistic: the address of the thread's saved user registers, written by
    /// the thread's own sys_exit after a lookup. A CPU's cached slot is used only if the
    /// entry it names says it belongs to the registers at hand (see [`crate::CpuThread`]).
    pub regs: u64,
    /// The kernel's `task_struct.nvcsw` at the thread's last context switch; a switch that
    /// raised it was voluntary. Not a statistic: state for the next switch.
    pub last_nvcsw: u64,
    /// State, not a statistic: the `struct address_space *` of the file whose pages the
    /// thread's last fault mapped, and the page range already counted for it (so overlapping
    /// fault-around windows are not counted twice; `fault_first`, `fault_last`). Cleared by
    /// munmap.
    pub fault_mapping: u64,
    /// State, not a statistic: when the thread entered the syscall it is in (ns since boot,
    /// `bpf_ktime_get_ns`), 0 when it is in none or was not timed (`--latency` only). Set at
    /// sys_enter, taken at sys_exit.
    pub entered_ns: u64,
    /// The thread's counters (see [`crate::COUNTERS`]). The fields around them are ordered so
    /// that those the hottest programs touch lie within 128 bytes of the entry's start, where
    /// the JIT encodes their offsets in one byte.
    pub counts: ThreadCounts,
    /// First page index of the range of `fault_mapping` already counted.
    pub fault_first: u64,
    /// Last page index of that range.
    pub fault_last: u64,
    /// The thread's first few ledger cells that move bytes, kept in its entry so that its
    /// usual transfers need no hash lookup; cells that do not fit, and mmap/munmap cells
    /// (column `NotMoved`), go to [`crate::MAP_TRANSFERS`]. A cell never moves once placed, so a
    /// reader sees each (syscall, column) in exactly one place.
    pub cells: [InlineCell; INLINE_CELLS],
    /// State: the thread's last few descriptors and what they are, so that a data syscall on a
    /// known descriptor does not walk the file table again. Valid while the process's
    /// descriptor's epoch ([`crate::MAP_FD_EPOCH`]) is unchanged; every syscall that can change what
    /// a descriptor number refers to, or its flags or peer, moves it on ([`crate::FdChange`]).
    pub fd_cache: [FdCacheEntry; FD_CACHE],
    /// When the thread's process started (the group leader's `start_time`, ns of
    /// CLOCK_MONOTONIC): with `tgid`, what tells apart two processes that had the same pid.
    /// 0 for processes that were running before zcprof entered them.
    pub process_start: u64,
    /// [`crate::InlineCell::key`]s of the thread's cells in [`crate::MAP_TRANSFERS`], 0 for
    /// none, so that the kernel can delete them when the thread dies (a BPF program cannot
    /// walk a hash map on every kernel zcprof supports).
    pub spilled: [u32; SPILLED_CELLS],
    /// The address of the thread's `task_struct` (0 when entered by user space): a thread
    /// that exits can be reaped, and its tid given to a new thread, before its final context
    /// switch, which must then not be counted as the new thread's.
    pub task: u64,
    /// State: the attribution sys_exit leaves for `sys_exit_objects` (`--by-file`,
    /// `--by-peer`).
    pub pending: crate::PendingObjects,
}

/// A record of [`crate::MAP_RETIRED`]: a dead thread's entry as its final context switch left
/// it, and its cells from [`crate::MAP_TRANSFERS`] (`cells[i]` belongs to
/// `stats.spilled[i]`, and is meaningless where that is 0).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Retired {
    /// The entry.
    pub stats: ThreadStats,
    /// The cells named by `stats.spilled`.
    pub cells: [Transfer; SPILLED_CELLS],
}

impl ThreadStats {
    /// A fresh entry for thread `tid` of `tgid`.
    pub const fn new(tid: u32, tgid: u32, comm: [u8; 16], last_nvcsw: u64) -> Self {
        Self {
            tid,
            tgid,
            flags: 0,
            ran: 0,
            comm,
            cgroup_id: 0,
            regs: 0,
            last_nvcsw,
            fault_mapping: 0,
            entered_ns: 0,
            counts: ThreadCounts::ZERO,
            fault_first: 0,
            fault_last: 0,
            cells: [InlineCell::EMPTY; INLINE_CELLS],
            fd_cache: [FdCacheEntry::EMPTY; FD_CACHE],
            process_start: 0,
            spilled: [0; SPILLED_CELLS],
            task: 0,
            pending: crate::PendingObjects::NONE,
        }
    }
}
