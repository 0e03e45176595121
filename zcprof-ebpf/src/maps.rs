//! The maps shared with user space (which finds each by its name) and the accessors that are
//! nothing but a map operation.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf, Stack},
};
use zcprof_common::{
    CpuThread, DEFERRED_REASONS, Deferred, FD_EPOCH_FDS, FD_EPOCH_SLOTS, FdChange, LOST_REASONS,
    Lost, MAX_PROCESSES, MAX_THREADS, MAX_TRANSFERS, MAX_URING, RETIRED_BYTES, ThreadStats,
    Transfer, TransferKey, UringKey, Watch, fd_epoch_slot,
};

/// BPF_F_NO_PREALLOC: the transfer and io_uring ledgers are sparse, so entries are allocated
/// when first used instead of reserving the whole capacity up front.
const BPF_F_NO_PREALLOC: u32 = 1;

/// The watched processes, by tgid, and why each is watched.
#[map(name = "WATCHED")]
pub(crate) static WATCHED: HashMap<u32, Watch> = HashMap::with_max_entries(MAX_PROCESSES, 0);

/// An array, not a hash keyed by tid: the hot path indexes it with the slot `CPU_THREAD`
/// remembers, a lookup the verifier inlines (a hash lookup is a function call and a hash,
/// about 25 ns here, on every syscall).
#[map(name = "THREADS")]
pub(crate) static THREADS: Array<ThreadStats> = Array::with_max_entries(MAX_THREADS, 0);

/// tid -> slot in `THREADS`, looked up when a CPU's cache (`CPU_THREAD`) does not know the
/// thread.
#[map(name = "TID_SLOT")]
pub(crate) static TID_SLOT: HashMap<u32, u32> = HashMap::with_max_entries(MAX_THREADS, 0);

/// Free slots of `THREADS`, filled by user space at load. A stack, so that slots given back
/// are reused first and the slots in use stay few and low.
#[map(name = "FREE_SLOTS")]
pub(crate) static FREE_SLOTS: Stack<u32> = Stack::with_max_entries(MAX_THREADS, 0);

/// The ledger cells that do not fit in their thread's entry.
#[map(name = "TRANSFERS")]
pub(crate) static TRANSFERS: HashMap<TransferKey, Transfer> =
    HashMap::with_max_entries(MAX_TRANSFERS, BPF_F_NO_PREALLOC);

/// io_uring completions may be posted from any thread of the ring's owner (io-wq workers are
/// created without the fork tracepoint), so this ledger is keyed by process and kept per CPU.
/// Not preallocated: a preallocated per-CPU hash reserves `MAX_URING` cells on every CPU
/// (10 MiB on 2 CPUs, 300 MiB on 64) for a ledger that few processes use.
#[map(name = "URING")]
pub(crate) static URING: PerCpuHashMap<UringKey, Transfer> =
    PerCpuHashMap::with_max_entries(MAX_URING, BPF_F_NO_PREALLOC);

/// An empty cell in read-only data, inserted from there: it is too big to build on the stack
/// next to everything else.
#[unsafe(no_mangle)]
pub(crate) static NEW_CELL: Transfer = Transfer::ZERO;

/// An empty io_uring cell in read-only data (see [`NEW_CELL`]).
#[unsafe(no_mangle)]
pub(crate) static NEW_URING_CELL: Transfer = Transfer::ZERO;

/// Dead threads' final counts, on their way to user space (see `retire`).
#[map(name = "RETIRED")]
pub(crate) static RETIRED: RingBuf = RingBuf::with_byte_size(RETIRED_BYTES, 0);

/// A free thread entry (all zeros) in read-only data, copied over a retired thread's entry.
#[unsafe(no_mangle)]
pub(crate) static FREE_ENTRY: ThreadStats = ThreadStats::new(0, 0, [0; 16], 0);

/// Descriptor epochs, by [`fd_epoch_slot`] (see `ThreadStats::fd_cache`). An array, because
/// its lookup is a few inlined instructions where a hash lookup is a function call.
#[map(name = "FD_EPOCH")]
pub(crate) static FD_EPOCH: Array<u64> = Array::with_max_entries(FD_EPOCH_SLOTS, 0);

/// Moves descriptor `fd`'s epoch on (all of process `tgid`'s for [`FdChange::All`]): what
/// threads cached of it is forgotten. The epoch is the time of the last change, not a counter:
/// BPF has no atomic add in Rust here, and a plain increment from two threads at once could
/// leave an old value; two writes of the clock always leave a new one.
#[inline(always)]
pub(crate) fn fds_changed(tgid: u32, change: FdChange) {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match change {
        FdChange::Nothing => {}
        FdChange::Fd(fd) => set_epoch(fd_epoch_slot(tgid, fd), now),
        FdChange::All => {
            for fd in 0..FD_EPOCH_FDS as u64 {
                set_epoch(fd_epoch_slot(tgid, fd), now);
            }
        }
    }
}

#[inline(always)]
fn set_epoch(slot: u32, now: u64) {
    if let Some(e) = FD_EPOCH.get_ptr_mut(slot) {
        // SAFETY: the slot is a valid, aligned u64 in map memory; an aligned 8-byte store is
        // single-copy atomic.
        unsafe { core::ptr::write_volatile(e, now) };
    }
}

/// Per CPU, how many events could not be recorded, by [`Lost`] reason.
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_REASONS, 0);

/// Counts an event that could not be recorded.
#[inline(always)]
pub(crate) fn lost(reason: Lost) {
    if let Some(n) = LOST.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it, and programs do not nest on a CPU for
        // these hooks.
        unsafe { *n += 1 };
    }
}

/// Per CPU, how many dead threads the kernel left to user space, by [`Deferred`] reason.
#[map(name = "DEFERRED")]
static DEFERRED: PerCpuArray<u64> = PerCpuArray::with_max_entries(DEFERRED_REASONS, 0);

/// Counts a dead thread left to user space.
#[inline(always)]
pub(crate) fn deferred(reason: Deferred) {
    if let Some(n) = DEFERRED.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it, and programs do not nest on a CPU for
        // these hooks.
        unsafe { *n += 1 };
    }
}

/// Per CPU, the last thread looked up and its slot (see [`CpuThread`]).
#[map(name = "CPU_THREAD")]
pub(crate) static CPU_THREAD: PerCpuArray<CpuThread> = PerCpuArray::with_max_entries(2, 0);

/// The watch generation: moved on whenever a thread is entered or forgotten, which makes every
/// CPU forget its cached [`CpuThread`].
#[map(name = "WATCH_GEN")]
static WATCH_GEN: Array<u64> = Array::with_max_entries(1, 0);

/// The current watch generation (see [`WATCH_GEN`]).
#[inline(always)]
pub(crate) fn watch_generation() -> u64 {
    match WATCH_GEN.get(0) {
        Some(g) => *g,
        None => 0,
    }
}

/// Moves the watch generation on (see [`WATCH_GEN`]).
#[inline(always)]
pub(crate) fn watched_set_changed() {
    if let Some(g) = WATCH_GEN.get_ptr_mut(0) {
        // SAFETY: a valid aligned u64 in map memory; the clock only moves forward, so racing
        // writers still leave a new value.
        unsafe { core::ptr::write_volatile(g, bpf_ktime_get_ns()) };
    }
}

/// The slot of thread `tid`, or 0.
#[inline(always)]
pub(crate) fn slot_of(tid: u32) -> u32 {
    // SAFETY: a lookup result is valid for the program's run.
    match unsafe { TID_SLOT.get(tid) } {
        Some(s) => *s,
        None => 0,
    }
}

/// Where a task's saved user registers sit from the base of its kernel stack, learned from
/// the first syscall seen (`regs - task->stack`): the same for every task of a kernel, and
/// what `sched_process_exit` needs to read the number of the exit syscall that never returns.
/// Learned rather than computed from THREAD_SIZE and the stack padding, which depend on the
/// kernel's configuration (KASAN, FRED) that is not always readable.
#[map(name = "STACK_REGS")]
pub(crate) static STACK_REGS: Array<u64> = Array::with_max_entries(1, 0);
