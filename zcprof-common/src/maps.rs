//! The kernel maps: their names, capacities, keys and values other than the ledger's.

/// Name of the map of processes zcprof watches (key: tgid `u32`, value: [`Watch`]).
pub const MAP_WATCHED: &str = "WATCHED";
/// Name of the per-thread counter array (index: a slot handed out from [`MAP_FREE_SLOTS`],
/// value: [`crate::ThreadStats`]). Slot 0 is never handed out: it means "no slot".
pub const MAP_THREADS: &str = "THREADS";
/// Name of the map from a watched thread to its slot in [`MAP_THREADS`] (key: tid `u32`,
/// value: slot `u32`). Consulted when a thread is switched in, not on every event.
pub const MAP_TID_SLOT: &str = "TID_SLOT";
/// Name of the stack of free slots of [`MAP_THREADS`] (value: slot `u32`). User space fills
/// it at load and gives a slot back (zeroed) once it has read a dead thread's counters.
pub const MAP_FREE_SLOTS: &str = "FREE_SLOTS";
/// Name of the per-CPU two-entry cache of the last thread looked up on the CPU (value:
/// [`CpuThread`]): entry 0 keyed by tid, entry 1 (sys_exit's) by the address of the task's
/// saved registers, which the hook has without a helper call.
pub const MAP_CPU_THREAD: &str = "CPU_THREAD";
/// Name of the per-thread transfer ledger (key: [`crate::TransferKey`], value: [`crate::Transfer`]).
pub const MAP_TRANSFERS: &str = "TRANSFERS";
/// Name of the per-process io_uring ledger, per CPU (key: [`crate::UringKey`], value: [`crate::Transfer`]).
pub const MAP_URING: &str = "URING";
/// Name of the array of descriptor epochs (index: [`fd_epoch_slot`], value: `u64`).
pub const MAP_FD_EPOCH: &str = "FD_EPOCH";
/// Slots in [`MAP_FD_EPOCH`]. Descriptors that share a slot only invalidate each other's
/// cached entries more often; correctness does not depend on the size.
pub const FD_EPOCH_SLOTS: u32 = 1 << 16;
/// Descriptor numbers of one process with an epoch of their own: closing descriptor `fd`
/// forgets what threads cached of the descriptors equal to `fd` modulo this, not of all (a
/// server closes a file after every response while its sockets stay open).
pub const FD_EPOCH_FDS: u32 = 64;

/// The [`MAP_FD_EPOCH`] slot of descriptor `fd` of process `tgid`.
#[inline(always)]
pub const fn fd_epoch_slot(tgid: u32, fd: u64) -> u32 {
    (tgid.wrapping_mul(FD_EPOCH_FDS) | (fd as u32 & (FD_EPOCH_FDS - 1))) & (FD_EPOCH_SLOTS - 1)
}
/// Entries in a thread's fd cache ([`crate::ThreadStats::fd_cache`]), direct-mapped by `fd % FD_CACHE`.
pub const FD_CACHE: usize = 16;

/// One remembered file descriptor: what [`crate::FdInfo`] the kernel program found for `fd`, valid
/// while the descriptor's epoch ([`fd_epoch_slot`]) is still `epoch`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdCacheEntry {
    /// The descriptor plus one; 0 for an empty entry, so that a zeroed thread slot starts with
    /// an empty cache.
    pub fd_plus_one: u32,
    /// [`crate::FdInfo::pack`]ed description.
    pub info: u32,
    /// The descriptor's epoch when the entry was made.
    pub epoch: u64,
}

impl FdCacheEntry {
    /// An entry that matches no descriptor.
    pub const EMPTY: FdCacheEntry = FdCacheEntry {
        fd_plus_one: 0,
        info: 0,
        epoch: 0,
    };
}

/// Name of the one-slot array holding the watch generation (`u64`), moved on whenever a thread
/// is entered or forgotten, so that no CPU keeps an old word on it ([`CpuThread`]).
pub const MAP_WATCH_GEN: &str = "WATCH_GEN";

/// Value of [`MAP_CPU_THREAD`]: the last thread looked up on this CPU and its slot in
/// [`MAP_THREADS`], so that a thread's next events on the CPU find their counters with array
/// lookups the verifier inlines instead of a hash lookup. Valid while the watch generation is
/// unchanged.
///
/// Not a "running thread" word kept by the context-switch hook: on this platform a thread can
/// be back on a CPU without a `sched_switch` event naming it (measured), so the cache is
/// checked against the current thread (its tid or its registers' address) on every event.
///
/// sys_exit's entry (keyed by registers) is written by programs that the kernel may preempt
/// in the middle (syscall tracepoints may fault since 6.13, and run preemptible under
/// `preempt=lazy` or `full`, the default of 7.x), so two threads can interleave their writes
/// on one CPU. It therefore keeps no (key, slot) pair that could tear: `slot` is trusted only
/// when the entry it names carries the same registers' address ([`crate::ThreadStats::regs`],
/// written by that thread alone), and "not watched" is one word (`key`) holding the
/// registers' page and the watch generation, written with one store. The other hooks run
/// preemptibly on those kernels too: the tid-keyed entry keeps tid and slot in one word
/// (`key`), and a slot it gives is trusted only when the entry it names has that tid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuThread {
    /// Entry 0: the thread's tid in the low 32 bits, its slot (0 if it is not watched) in the
    /// high 32 (0: none yet). Entry 1: the registers' page (bits 12-43) over the low 32 bits
    /// of the watch generation of a thread found unwatched.
    pub key: u64,
    /// Entry 0: unused. Entry 1: the slot last found.
    pub slot: u32,
    /// Padding, always 0.
    pub _pad: u32,
    /// Entry 0: the watch generation when `slot` was found. Entry 1: unused.
    pub generation: u64,
}

/// Name of the ring buffer through which the kernel hands user space each dead thread's final
/// counts ([`crate::Retired`]) at its final context switch, and frees its entry at once: the
/// thread table then holds live threads only, however fast threads come and go.
pub const MAP_RETIRED: &str = "RETIRED";
/// Bytes of [`MAP_RETIRED`] (a power of two): about 2,000 records, which user space drains as
/// they come. When it is full the entry stays, flagged dead, and user space collects it from
/// the table instead: slower, not lost.
pub const RETIRED_BYTES: u32 = 8 << 20;

/// Name of the per-CPU array of dead threads the kernel left to user space, by
/// [`crate::Deferred`] reason.
pub const MAP_DEFERRED: &str = "DEFERRED";

/// Name of the per-CPU count of events a backstop program counted because the kernel had
/// skipped the hook's primary program for them (one entry; zcprof-ebpf's `backstop`).
pub const MAP_BACKSTOPPED: &str = "BACKSTOPPED";

/// Name of the per-CPU array of events the kernel side could not record (index: [`crate::Lost`]).
pub const MAP_LOST: &str = "LOST";

/// Capacity of [`MAP_WATCHED`].
pub const MAX_PROCESSES: u32 = 16_384;
/// Capacity of [`MAP_THREADS`], [`MAP_TID_SLOT`] and [`MAP_FREE_SLOTS`]: threads tracked at
/// once (one slot fewer: slot 0 is unused). The array is allocated in full at load, at
/// `size_of::<ThreadStats>()` (about 2.7 KiB) a slot.
pub const MAX_THREADS: u32 = 16_384;
/// Capacity of [`MAP_TRANSFERS`]: (thread, syscall, column) cells tracked at once.
pub const MAX_TRANSFERS: u32 = 131_072;
/// Capacity of [`MAP_URING`].
pub const MAX_URING: u32 = 16_384;

/// [`Watch::flags`]: count this process's own activity.
pub const WATCH_COUNT: u32 = 1;
/// [`Watch::flags`]: processes this one forks are watched too (with both flags).
pub const WATCH_FOLLOW_CHILDREN: u32 = 2;

/// Value of [`MAP_WATCHED`]: why a process is watched.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    /// Bit set of `WATCH_*`. `zcprof run` enters itself with only
    /// [`WATCH_FOLLOW_CHILDREN`], so that the command it spawns is counted from its first
    /// instruction while zcprof itself is not.
    pub flags: u32,
}
