//! zcprof's kernel programs.
//!
//! Every program starts by finding the current thread's slot in `THREADS`: the context-switch
//! hook has already written it into a per-CPU array (`CPU_THREAD`), so the hot path costs two
//! array lookups that the verifier inlines, no helper call and no hash lookup. A thread
//! without a slot is not watched and the program returns at once, which is all an unwatched
//! process pays. Watched threads are entered by user space (attach) or by the fork hook
//! (children and new threads), never on the hot path. Counters are aggregated in place in the
//! maps; nothing is sent to user space per event.
//!
//! Every program and its body are `#[inline(always)]`: a call between BPF functions costs a
//! call and a return, and on this kind of CPU (SRSO mitigation) a return is expensive.
#![no_std]
#![no_main]

mod files;
mod kernel;
mod ledger;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_ktime_get_ns,
    },
    macros::{btf_tracepoint, map, perf_event, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, Stack},
    programs::{BtfTracePointContext, PerfEventContext, RawTracePointContext},
};
use aya_log_ebpf::warn;
use zcprof_common::{
    CpuThread, FD_EPOCH_SLOTS, FdInfo, LOST_REASONS, Lost, MAX_PROCESSES, MAX_THREADS,
    MAX_TRANSFERS, MAX_URING, NVCSW_UNKNOWN, Syscall, THREAD_DEAD, THREAD_EXITED, ThreadStats,
    Transfer, TransferKey, UringKey, WATCH_COUNT, WATCH_FOLLOW_CHILDREN, Watch,
};

use crate::{
    files::file_info,
    kernel::{off, proto, read},
};

/// BPF_F_NO_PREALLOC: the transfer and io_uring ledgers are sparse, so entries are allocated
/// when first used instead of reserving the whole capacity up front.
const BPF_F_NO_PREALLOC: u32 = 1;

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
static TID_SLOT: HashMap<u32, u32> = HashMap::with_max_entries(MAX_THREADS, 0);

/// Free slots of `THREADS`, filled by user space at load. A stack, so that slots given back
/// are reused first and the slots in use stay few and low.
#[map(name = "FREE_SLOTS")]
static FREE_SLOTS: Stack<u32> = Stack::with_max_entries(MAX_THREADS, 0);

#[map(name = "TRANSFERS")]
pub(crate) static TRANSFERS: HashMap<TransferKey, Transfer> =
    HashMap::with_max_entries(MAX_TRANSFERS, BPF_F_NO_PREALLOC);

/// io_uring completions may be posted from any thread of the ring's owner (io-wq workers are
/// created without the fork tracepoint), so this ledger is keyed by process and kept per CPU.
/// Not preallocated: a preallocated per-CPU hash reserves `MAX_URING` cells on every CPU
/// (10 MiB on 2 CPUs, 300 MiB on 64) for a ledger that few processes use.
#[map(name = "URING")]
static URING: PerCpuHashMap<UringKey, Transfer> =
    PerCpuHashMap::with_max_entries(MAX_URING, BPF_F_NO_PREALLOC);

/// Per-process fd-table epochs (see `ThreadStats::fd_cache`). An array, because its lookup is
/// a few inlined instructions where a hash lookup is a function call.
#[map(name = "FD_EPOCH")]
pub(crate) static FD_EPOCH: Array<u64> = Array::with_max_entries(FD_EPOCH_SLOTS, 0);

/// Moves process `tgid`'s fd-table epoch on: every thread's cached descriptors are forgotten.
/// The epoch is the time of the last change, not a counter: BPF has no atomic add in Rust
/// here, and a plain increment from two threads at once could leave an old value; two writes
/// of the clock always leave a new one.
#[inline(always)]
pub(crate) fn fd_table_changed(tgid: u32) {
    if let Some(e) = FD_EPOCH.get_ptr_mut(tgid % FD_EPOCH_SLOTS) {
        // SAFETY: the slot is a valid, aligned u64 in map memory; an aligned 8-byte store is
        // single-copy atomic.
        unsafe { core::ptr::write_volatile(e, bpf_ktime_get_ns()) };
    }
}

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

/// Per CPU, the last thread looked up and its slot (see [`CpuThread`]).
#[map(name = "CPU_THREAD")]
static CPU_THREAD: PerCpuArray<CpuThread> = PerCpuArray::with_max_entries(2, 0);

/// The watch generation: moved on whenever a thread is entered or forgotten, which makes every
/// CPU forget its cached [`CpuThread`].
#[map(name = "WATCH_GEN")]
static WATCH_GEN: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
fn watch_generation() -> u64 {
    match WATCH_GEN.get(0) {
        Some(g) => *g,
        None => 0,
    }
}

/// The slot of thread `tid`, or 0.
#[inline(always)]
fn slot_of(tid: u32) -> u32 {
    // SAFETY: a lookup result is valid for the program's run.
    match unsafe { TID_SLOT.get(tid) } {
        Some(s) => *s,
        None => 0,
    }
}

/// Which of this CPU's two [`CpuThread`] caches: one keyed by tid, one by the address of the
/// task's saved registers.
const BY_TID: u32 = 0;
const BY_REGS: u32 = 1;

/// The slot of the current thread, or 0 if it is not watched: from this CPU's cache of the
/// last thread it looked up, which holds while the same thread keeps making syscalls and the
/// watch generation has not moved; else from `TID_SLOT`, and remembered.
#[inline(always)]
fn running_slot() -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let gen_now = watch_generation();
    let Some(cpu) = CPU_THREAD.get_ptr_mut(BY_TID) else {
        return slot_of(tid);
    };
    // SAFETY: this CPU's slot; programs on one CPU do not nest for these hooks.
    let cpu = unsafe { &mut *cpu };
    if cpu.key == tid as u64 && cpu.generation == gen_now {
        return cpu.slot;
    }
    // The generation read *before* the lookup: a thread entered meanwhile moved it on, so
    // this word is already stale and will not hide it.
    let slot = slot_of(tid);
    cpu.key = tid as u64;
    cpu.slot = slot;
    cpu.generation = gen_now;
    slot
}

/// As [`running_entry`], for sys_exit, which knows the current task's `struct pt_regs`
/// address: that address names the task as well as its tid does (it sits at the top of the
/// task's own kernel stack) and costs no helper call. sys_exit may be preempted mid-way, so
/// this CPU's entry is never trusted as a pair (see [`CpuThread`]): a cached slot counts only
/// if its thread's own entry holds these registers and has not exited (a kernel stack is
/// reused only after its task died, and an exited thread's entry is flagged first); "not
/// watched" only if the one-word tag matches these registers and the current generation.
#[inline(always)]
fn entry_by_regs(regs: u64) -> Option<&'static mut ThreadStats> {
    let Some(cpu) = CPU_THREAD.get_ptr_mut(BY_REGS) else {
        return entry(slot_of(bpf_get_current_pid_tgid() as u32));
    };
    let cpu = cpu as *mut CpuThread;
    // SAFETY: this CPU's entry; every access is one aligned load or store of one field, so
    // a preempted writer can leave a stale field but never a torn one.
    let cached = unsafe { core::ptr::read_volatile(&raw const (*cpu).slot) };
    if let Some(t) = entry(cached)
        && t.regs == regs
        && t.flags & THREAD_EXITED == 0
    {
        return Some(t);
    }
    let gen_now = watch_generation();
    let number = regs_number(cpu, regs);
    let tag = unwatched_tag(number, gen_now);
    // SAFETY: as above.
    if unsafe { core::ptr::read_volatile(&raw const (*cpu).key) } == tag {
        return None;
    }
    learn_stack_regs(number);
    // As in `running_slot`: the generation was read before the lookup.
    let slot = slot_of(bpf_get_current_pid_tgid() as u32);
    let found = entry(slot);
    // SAFETY: as above.
    unsafe {
        match found {
            Some(ref t) if t.flags & THREAD_EXITED == 0 => {
                core::ptr::write_volatile(&raw mut (*cpu).slot, slot)
            }
            Some(_) => {}
            None => core::ptr::write_volatile(&raw mut (*cpu).key, tag),
        }
    }
    match found {
        Some(t) => {
            t.regs = regs;
            Some(t)
        }
        None => None,
    }
}

/// The one word that says "the task with these registers is not watched in this watch
/// generation": the registers' page (bits 12-43: kernel stacks are at least 16 KiB apart)
/// over the generation's low 32 bits. A stale word matches a later generation only if the two
/// clock readings differ by a multiple of 2^32 ns exactly.
#[inline(always)]
fn unwatched_tag(regs: u64, generation: u64) -> u64 {
    ((regs >> 12) << 32) | (generation & 0xffff_ffff)
}

/// `regs` as a number the verifier lets the program compute with (it forbids arithmetic on
/// the tracepoint's pointer): stored through this CPU's spare field and read back.
#[inline(always)]
fn regs_number(cpu: *mut CpuThread, regs: u64) -> u64 {
    // SAFETY: this CPU's entry; `generation` is unused in the registers' entry.
    unsafe {
        core::ptr::write_volatile(&raw mut (*cpu).generation, regs);
        core::ptr::read_volatile(&raw const (*cpu).generation)
    }
}

/// Where a task's saved user registers sit from the base of its kernel stack, learned from
/// the first syscall seen (`regs - task->stack`): the same for every task of a kernel, and
/// what `sched_process_exit` needs to read the number of the exit syscall that never returns.
/// Learned rather than computed from THREAD_SIZE and the stack padding, which depend on the
/// kernel's configuration (KASAN, FRED) that is not always readable.
#[map(name = "STACK_REGS")]
static STACK_REGS: Array<u64> = Array::with_max_entries(1, 0);

/// Fills [`STACK_REGS`] once (on a CPU-cache miss of sys_exit, never on the hot path).
#[inline(always)]
fn learn_stack_regs(regs: u64) {
    if !off::have_btf() {
        return;
    }
    let Some(learned) = STACK_REGS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a valid aligned u64 in map memory; racing writers write the same value.
    unsafe {
        if core::ptr::read_volatile(learned) != 0 {
            return;
        }
        let task = bpf_get_current_task();
        if let Ok(stack) = read::<u64>(task, off::task_stack())
            && regs > stack
        {
            core::ptr::write_volatile(learned, regs - stack);
        }
    }
}

/// Moves the watch generation on (see [`WATCH_GEN`]).
#[inline(always)]
fn watched_set_changed() {
    if let Some(g) = WATCH_GEN.get_ptr_mut(0) {
        // SAFETY: a valid aligned u64 in map memory; the clock only moves forward, so racing
        // writers still leave a new value.
        unsafe { core::ptr::write_volatile(g, bpf_ktime_get_ns()) };
    }
}

/// The entry in `slot`.
#[inline(always)]
fn entry(slot: u32) -> Option<&'static mut ThreadStats> {
    if slot == 0 {
        return None;
    }
    // SAFETY: the pointer comes from a successful lookup; only the thread the slot describes
    // writes it (see ThreadStats), so the mutable reference is not aliased by another writer.
    THREADS.get_ptr_mut(slot).map(|t| unsafe { &mut *t })
}

/// The running thread's entry, if it is watched (exited or not).
#[inline(always)]
fn running_entry() -> Option<&'static mut ThreadStats> {
    entry(running_slot())
}

/// The current thread's entry, if it is watched and alive.
#[inline(always)]
fn current_thread() -> Option<(&'static mut ThreadStats, u32)> {
    let t = running_entry()?;
    if t.flags & THREAD_EXITED != 0 {
        return None;
    }
    let tid = t.tid;
    Some((t, tid))
}

/// The current thread's entry (`found`, if it has one); in watch-all mode (`zcprof serve`) a
/// thread not seen before is entered here, on its first syscall or fault (a new task's first
/// event is its return from fork, so nothing is missed). The verifier prunes the branch when
/// the mode is off.
#[inline(always)]
fn current_or_new_thread(
    found: Option<&'static mut ThreadStats>,
) -> Option<(&'static mut ThreadStats, u32)> {
    let t = match found {
        Some(t) => t,
        None if off::watch_all() => {
            let pid_tgid = bpf_get_current_pid_tgid();
            let tid = pid_tgid as u32;
            if tid == 0 {
                return None;
            }
            let comm = bpf_get_current_comm().unwrap_or([0; 16]);
            // SAFETY: the helper has no preconditions.
            let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
            let (t, _) =
                enter_thread(tid, (pid_tgid >> 32) as u32, comm, NVCSW_UNKNOWN, cgroup_id)?;
            t
        }
        None => return None,
    };
    // An exited thread's entry stays until user space has read it; the events it still causes
    // on its way out (a fault in exit_mm, say) are neither counted nor a new thread.
    if t.flags & THREAD_EXITED != 0 {
        return None;
    }
    let tid = t.tid;
    Some((t, tid))
}

/// Enters thread `tid` (unless it is there already) and returns its entry and slot.
#[inline(always)]
fn enter_thread(
    tid: u32,
    tgid: u32,
    comm: [u8; 16],
    last_nvcsw: u64,
    cgroup_id: u64,
) -> Option<(&'static mut ThreadStats, u32)> {
    let slot = match FREE_SLOTS.pop() {
        Ok(Some(s)) => s,
        _ => {
            lost(Lost::ThreadTableFull);
            return None;
        }
    };
    // Claim the tid first: only one of two racing enterers (say, the fork hook and a
    // watch-all thread's first event) gets it.
    if TID_SLOT.insert(tid, slot, BPF_NOEXIST as u64).is_err() {
        let _ = FREE_SLOTS.push(slot, 0);
        let known = slot_of(tid);
        let t = entry(known);
        if let Some(t) = t
            && t.flags & THREAD_EXITED == 0
        {
            // Entered already (by the other racer).
            return Some((t, known));
        }
        // Full, or an exited thread's entry not yet collected holds this tid.
        lost(Lost::ThreadTableFull);
        return None;
    }
    // A free slot is all zeros (user space zeroes it before giving it back).
    let t = entry(slot)?;
    t.tgid = tgid;
    t.comm = comm;
    t.last_nvcsw = last_nvcsw;
    t.cgroup_id = cgroup_id;
    t.tid = tid;
    // Some CPU may remember this tid as unwatched (a thread that had it before, or this one
    // in watch-all mode): make every CPU look again.
    watched_set_changed();
    Some((t, slot))
}

// x86-64 `struct pt_regs`, as u64 words: where the syscall's number and arguments are.
pub(crate) const R10: usize = 7;
pub(crate) const R9: usize = 8;
pub(crate) const R8: usize = 9;
pub(crate) const DX: usize = 12;
pub(crate) const SI: usize = 13;
pub(crate) const DI: usize = 14;
const ORIG_AX_WORD: usize = 15;

// x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl).
const NR_READ: u64 = 0;
const NR_WRITE: u64 = 1;
const NR_MMAP: u64 = 9;
const NR_MUNMAP: u64 = 11;
const NR_PREAD64: u64 = 17;
const NR_PWRITE64: u64 = 18;
const NR_READV: u64 = 19;
const NR_WRITEV: u64 = 20;
const NR_SENDFILE: u64 = 40;
const NR_SENDTO: u64 = 44;
const NR_RECVFROM: u64 = 45;
const NR_SENDMSG: u64 = 46;
const NR_RECVMSG: u64 = 47;
const NR_CLOSE: u64 = 3;
const NR_DUP2: u64 = 33;
const NR_CONNECT: u64 = 42;
const NR_SETSOCKOPT: u64 = 54;
const NR_FCNTL: u64 = 72;
const NR_DUP3: u64 = 292;
const NR_CLOSE_RANGE: u64 = 436;
const NR_EXIT: u64 = 60;
const NR_EXIT_GROUP: u64 = 231;
const NR_SPLICE: u64 = 275;
const NR_TEE: u64 = 276;
const NR_VMSPLICE: u64 = 278;
const NR_PREADV: u64 = 295;
const NR_PWRITEV: u64 = 296;
const NR_RECVMMSG: u64 = 299;
const NR_SENDMMSG: u64 = 307;
const NR_COPY_FILE_RANGE: u64 = 326;
const NR_PREADV2: u64 = 327;
const NR_PWRITEV2: u64 = 328;

pub(crate) const MSG_ZEROCOPY: u64 = 0x400_0000;
pub(crate) const MAP_ANONYMOUS: u64 = 0x20;
const PAGE_SIZE: u64 = 4096;

/// `raw_syscalls:sys_exit`, TP_PROTO(struct pt_regs *regs, long ret).
/// Format (/sys/kernel/tracing/events/raw_syscalls/sys_exit/format):
///   field:long id; offset:8; size:8; signed:1;
///   field:long ret; offset:16; size:8; signed:1;
/// A BTF tracepoint: the program sees the prototype's arguments with their kernel types, so
/// `regs` is read with plain loads the verifier checks against `struct pt_regs` (no helper
/// call). The syscall's number and arguments are still in `regs` (x86-64 leaves them
/// untouched).
#[btf_tracepoint(function = "sys_exit")]
#[inline(always)]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    if off::empty_bodies() {
        return 0;
    }
    match try_sys_exit(&ctx) {
        Ok(r) | Err(r) => r as i32,
    }
}

/// Word `i` of `struct pt_regs` at `regs`.
#[inline(always)]
pub(crate) fn reg(regs: *const u64, i: usize) -> u64 {
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *` and `i` a constant below its 21
    // words; the verifier checks the load against the kernel's BTF.
    unsafe { core::ptr::read_volatile(regs.add(i)) }
}

#[inline(always)]
fn try_sys_exit(ctx: &BtfTracePointContext) -> Result<u32, u32> {
    let regs: *const u64 = ctx.arg(0);
    let Some((thread, tid)) = current_or_new_thread(entry_by_regs(regs as u64)) else {
        return Ok(0);
    };
    thread.counts.syscalls += 1;
    // Only the syscall number now; arguments are read where a syscall needs them.
    let nr = reg(regs, ORIG_AX_WORD);
    let syscall = match nr {
        NR_READ => Syscall::Read,
        NR_WRITE => Syscall::Write,
        NR_PREAD64 => Syscall::Pread64,
        NR_PWRITE64 => Syscall::Pwrite64,
        NR_READV => Syscall::Readv,
        NR_WRITEV => Syscall::Writev,
        NR_PREADV => Syscall::Preadv,
        NR_PREADV2 => Syscall::Preadv2,
        NR_PWRITEV => Syscall::Pwritev,
        NR_PWRITEV2 => Syscall::Pwritev2,
        NR_RECVFROM => Syscall::Recvfrom,
        NR_RECVMSG => Syscall::Recvmsg,
        NR_RECVMMSG => Syscall::Recvmmsg,
        NR_SENDTO => Syscall::Sendto,
        NR_SENDMSG => Syscall::Sendmsg,
        NR_SENDMMSG => Syscall::Sendmmsg,
        NR_SENDFILE => Syscall::Sendfile,
        NR_SPLICE => Syscall::Splice,
        NR_TEE => Syscall::Tee,
        NR_VMSPLICE => Syscall::Vmsplice,
        NR_COPY_FILE_RANGE => Syscall::CopyFileRange,
        NR_MMAP => Syscall::MmapFile,
        NR_MUNMAP => Syscall::Munmap,
        // What a descriptor number refers to, or its flags or peer, may have changed.
        NR_CLOSE | NR_DUP2 | NR_DUP3 | NR_CLOSE_RANGE | NR_FCNTL | NR_SETSOCKOPT | NR_CONNECT => {
            fd_table_changed(thread.tgid);
            return Ok(0);
        }
        _ => return Ok(0),
    };
    let ret: i64 = ctx.arg(1);
    if syscall == Syscall::Munmap {
        thread.fault_mapping = 0;
    }
    ledger::record_syscall(thread, tid, syscall, regs, ret);
    Ok(0)
}

/// `sched:sched_switch`, TP_PROTO(bool preempt, struct task_struct *prev,
/// struct task_struct *next, unsigned int prev_state); before 5.18 without `prev_state`
/// (`proto::switch_prev_state`), which is then read from `prev` itself.
/// Format: field:char prev_comm[16]; offset:8; size:16 / field:pid_t prev_pid; offset:24;
///   size:4 / field:int prev_prio; offset:28; size:4 / field:long prev_state; offset:32;
///   size:8 / field:char next_comm[16]; offset:40; size:16 / field:pid_t next_pid; offset:56;
///   size:4 / field:int next_prio; offset:60; size:4
///
/// The kernel has already counted the switch in `prev->nvcsw` or `prev->nivcsw` when this
/// fires; comparing `nvcsw` with its value at the previous switch tells which, exactly as
/// `ru_nvcsw`/`ru_nivcsw` will report it (`prev_state` alone cannot: a task that finds a
/// signal pending is counted voluntary with state 0).
#[raw_tracepoint(tracepoint = "sched_switch")]
#[inline(always)]
pub fn sched_switch(ctx: RawTracePointContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    match try_sched_switch(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

/// `prev_state` of a task's final switch after exit.
const TASK_DEAD: u64 = 0x80;

#[inline(always)]
fn try_sched_switch(ctx: &RawTracePointContext) -> Result<u32, u32> {
    // `current` is still `prev` here.
    if let Some(t) = running_entry() {
        count_switch(ctx, t);
    }
    Ok(0)
}

/// Counts the switch of watched thread `t` out of the CPU.
#[inline(always)]
fn count_switch(ctx: &RawTracePointContext, t: &mut ThreadStats) {
    let prev: u64 = ctx.arg(1);
    let prev_state: u64 = if proto::switch_prev_state() {
        ctx.arg(3)
    } else {
        // `__state` is an unsigned int, `state` (before 5.14) a long whose low word holds the
        // same bits on little-endian x86-64.
        read::<u32>(prev, off::task_state()).unwrap_or(0) as u64
    };
    // A thread that has exited can still be preempted on its way out, and its final switch
    // (state TASK_DEAD) is the last one: all are in its rusage. Any switch after that under
    // this tid belongs to an unrelated task that reused it.
    if t.flags & THREAD_DEAD != 0 {
        return;
    }
    if prev_state & TASK_DEAD != 0 {
        t.flags |= THREAD_DEAD;
    }
    let voluntary = match read::<u64>(prev, off::task_nvcsw()) {
        Ok(nvcsw) if off::have_btf() && t.last_nvcsw != NVCSW_UNKNOWN => {
            let v = nvcsw != t.last_nvcsw;
            t.last_nvcsw = nvcsw;
            v
        }
        other => {
            // Without a previous value: the scheduler's own rule, right but for the rare
            // signal-pending case.
            if let Ok(nvcsw) = other {
                t.last_nvcsw = nvcsw;
            }
            let preempt: u64 = ctx.arg(0);
            preempt & 0xff == 0 && prev_state != 0
        }
    };
    if voluntary {
        t.counts.ctx_voluntary += 1;
    } else {
        t.counts.ctx_involuntary += 1;
    }
}

/// `sched:sched_process_fork`, TP_PROTO(struct task_struct *parent, struct task_struct *child).
/// Format: field:__data_loc char[] parent_comm; offset:8; size:4 / field:pid_t parent_pid;
///   offset:12; size:4 / field:__data_loc char[] child_comm; offset:16; size:4 /
///   field:pid_t child_pid; offset:20; size:4
///
/// Fires for new processes and new threads, in the parent, before the child first runs: the
/// child's entry exists before it can make a syscall or fault.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
#[inline(always)]
pub fn sched_process_fork(ctx: RawTracePointContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    match try_fork(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_fork(ctx: &RawTracePointContext) -> Result<u32, u32> {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a lookup result is valid for the program's run.
    let Some(watch) = (unsafe { WATCHED.get(parent_tgid) }) else {
        return Ok(0);
    };
    let flags = watch.flags;
    let child: u64 = ctx.arg(1);
    let child_pid: u32 = read(child, off::task_pid()).map_err(|_| 0u32)?;
    let child_tgid: u32 = read(child, off::task_tgid()).map_err(|_| 0u32)?;
    if child_tgid == parent_tgid {
        if flags & WATCH_COUNT == 0 {
            return Ok(0);
        }
    } else {
        if flags & WATCH_FOLLOW_CHILDREN == 0 {
            return Ok(0);
        }
        let w = Watch {
            flags: WATCH_COUNT | WATCH_FOLLOW_CHILDREN,
        };
        if WATCHED.insert(child_tgid, w, 0).is_err() {
            lost(Lost::ProcessTableFull);
            warn!(
                ctx,
                "zcprof: process table full, pid {} not watched", child_tgid
            );
            return Ok(0);
        }
    }
    let comm: [u8; 16] = read(child, off::task_comm()).unwrap_or([0; 16]);
    // A new task starts with nvcsw = 0, in its parent's cgroup.
    // SAFETY: the helper has no preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if enter_thread(child_pid, child_tgid, comm, 0, cgroup_id).is_none() {
        warn!(
            ctx,
            "zcprof: thread table full, tid {} not tracked", child_pid
        );
    }
    Ok(0)
}

/// `sched:sched_process_exec`, TP_PROTO(struct task_struct *p, pid_t old_pid,
/// struct linux_binprm *bprm). Format: field:__data_loc char[] filename; offset:8; size:4 /
///   field:pid_t pid; offset:12; size:4 / field:pid_t old_pid; offset:16; size:4
///
/// Keeps the command name current, and remembers how many syscalls came before the exec
/// (strace, for one, starts counting at the exec).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
#[inline(always)]
pub fn sched_process_exec(_ctx: RawTracePointContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    if let Some((t, _)) = current_thread() {
        // Close-on-exec descriptors are gone.
        fd_table_changed(t.tgid);
        t.counts.syscalls_before_exec = t.counts.syscalls;
        if let Ok(comm) = bpf_get_current_comm() {
            t.comm = comm;
        }
    }
    0
}

/// `sched:sched_process_exit`, TP_PROTO(struct task_struct *p, bool group_dead); 6.12 and
/// older without `group_dead` (`proto::exit_group_dead`), which is then read from
/// `p->signal->live` (do_exit() has already counted this thread out of it).
/// Format: field:char comm[16]; offset:8; size:16 / field:pid_t pid; offset:24; size:4 /
///   field:int prio; offset:28; size:4 / field:bool group_dead; offset:32; size:1
///
/// Marks the thread's counters final. exit and exit_group never return, so sys_exit never
/// sees them: they are counted here, from the syscall number saved at the top of the task's
/// kernel stack.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
#[inline(always)]
pub fn sched_process_exit(ctx: RawTracePointContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    match try_exit(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_exit(ctx: &RawTracePointContext) -> Result<u32, u32> {
    let Some((t, _)) = current_thread() else {
        return Ok(0);
    };
    t.flags |= THREAD_EXITED;
    let regs_at = match STACK_REGS.get(0) {
        Some(r) => *r,
        None => 0,
    };
    if regs_at != 0 {
        let orig_ax_at = regs_at + off::pt_regs_orig_ax();
        // SAFETY: the helper only returns the current task pointer.
        let task = unsafe { bpf_get_current_task() };
        if let Ok(stack) = read::<u64>(task, off::task_stack())
            && let Ok(nr) = read::<u64>(stack, orig_ax_at)
            && (nr == NR_EXIT || nr == NR_EXIT_GROUP)
        {
            t.counts.syscalls += 1;
        }
    }
    let group_dead = if proto::exit_group_dead() {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        let p: u64 = ctx.arg(0);
        read::<u64>(p, off::task_signal())
            .and_then(|signal| read::<i32>(signal, off::signal_live()))
            .is_ok_and(|live| live == 0)
    };
    if group_dead {
        let _ = WATCHED.remove(t.tgid);
    }
    Ok(0)
}

/// Software perf event PERF_COUNT_SW_PAGE_FAULTS_MIN, one per CPU, period 1. The kernel raises
/// it in mm_account_fault() right where it increments `min_flt`, so the count is the one
/// `ru_minflt` reports (except faults taken by get_user_pages on the task's behalf, which
/// carry no registers and raise no perf event).
#[perf_event]
#[inline(always)]
pub fn fault_minor(ctx: PerfEventContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    match try_fault(&ctx, false) {
        Ok(r) | Err(r) => r,
    }
}

/// PERF_COUNT_SW_PAGE_FAULTS_MAJ, as [`fault_minor`] for `maj_flt`.
#[perf_event]
#[inline(always)]
pub fn fault_major(ctx: PerfEventContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    match try_fault(&ctx, true) {
        Ok(r) | Err(r) => r,
    }
}

#[inline(always)]
fn try_fault(ctx: &PerfEventContext, major: bool) -> Result<u32, u32> {
    let Some((t, _)) = current_or_new_thread(running_entry()) else {
        return Ok(0);
    };
    if major {
        t.counts.faults_major += 1;
    } else {
        t.counts.faults_minor += 1;
    }
    // SAFETY: ctx points at the kernel's bpf_perf_event_data for this event.
    let cs = unsafe { (*ctx.ctx).regs.cs };
    if cs & 3 == 3 {
        t.counts.faults_user += 1;
    } else {
        t.counts.faults_kernel += 1;
    }
    Ok(0)
}

/// `filemap:mm_filemap_fault`, TP_PROTO(struct address_space *mapping, pgoff_t index).
/// Format: field:unsigned long i_ino; offset:8; size:8 / field:dev_t s_dev; offset:16;
///   size:4 / field:unsigned long index; offset:24; size:8
///
/// One file page brought into a mapping by a fault.
#[raw_tracepoint(tracepoint = "mm_filemap_fault")]
#[inline(always)]
pub fn mm_filemap_fault(ctx: RawTracePointContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    if let Some((t, tid)) = current_thread() {
        let index: u64 = ctx.arg(1);
        file_pages_mapped(t, tid, ctx.arg(0), index, index);
    }
    0
}

/// Counts the pages `first..=last` of the file behind `mapping` as mapped in, except those the
/// thread's previous faults on the same file already counted: fault-around windows of
/// consecutive faults overlap, and the page a `->fault` handles after fault-around is inside
/// the window just counted.
#[inline(always)]
fn file_pages_mapped(t: &mut ThreadStats, tid: u32, mapping: u64, first: u64, last: u64) {
    if last < first {
        return;
    }
    let mut pages = last - first + 1;
    let (pf, pl) = (t.fault_first, t.fault_last);
    if t.fault_mapping == mapping {
        let lo = if first > pf { first } else { pf };
        let hi = if last < pl { last } else { pl };
        if hi >= lo {
            pages -= hi - lo + 1;
        }
    }
    if t.fault_mapping == mapping && first <= pl + 1 && last + 1 >= pf {
        // Overlapping or adjacent: remember the union.
        t.fault_first = if first < pf { first } else { pf };
        t.fault_last = if last > pl { last } else { pl };
    } else {
        t.fault_mapping = mapping;
        t.fault_first = first;
        t.fault_last = last;
    }
    ledger::record(
        t,
        tid,
        Syscall::FileFault,
        FdInfo::UNKNOWN,
        (pages * PAGE_SIZE) as i64,
        false,
    );
}

/// `filemap:mm_filemap_map_pages`, TP_PROTO(struct address_space *mapping, pgoff_t index,
/// pgoff_t last_index). Format: field:unsigned long i_ino; offset:8; size:8 /
///   field:dev_t s_dev; offset:16; size:4 / field:unsigned long index; offset:24; size:8 /
///   field:unsigned long last_index; offset:32; size:8
///
/// Fault-around: the pages `index..=last_index` of the file, already cached, mapped by one
/// fault.
#[raw_tracepoint(tracepoint = "mm_filemap_map_pages")]
#[inline(always)]
pub fn mm_filemap_map_pages(ctx: RawTracePointContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    if let Some((t, tid)) = current_thread() {
        file_pages_mapped(t, tid, ctx.arg(0), ctx.arg(1), ctx.arg(2));
    }
    0
}

/// `io_uring:io_uring_complete`, TP_PROTO(struct io_ring_ctx *ctx, void *req,
/// struct io_uring_cqe *cqe); on older kernels TP_PROTO(void *ctx, void *req, u64 user_data,
/// int res, unsigned cflags, u64 extra1, u64 extra2) (`proto::uring_cqe`). Format: field:void * ctx; offset:8; size:8 /
///   field:void * req; offset:16; size:8 / field:u64 user_data; offset:24; size:8 /
///   field:int res; offset:32; size:4 / field:unsigned cflags; offset:36; size:4 /
///   field:u64 extra1; offset:40; size:8 / field:u64 extra2; offset:48; size:8
///
/// One completed io_uring operation: its opcode, its result (bytes for data operations).
#[raw_tracepoint(tracepoint = "io_uring_complete")]
#[inline(always)]
pub fn io_uring_complete(ctx: RawTracePointContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    match try_uring(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

/// An empty io_uring cell in read-only data (see `ledger::NEW_CELL`).
#[unsafe(no_mangle)]
static NEW_URING_CELL: Transfer = Transfer::ZERO;

/// IORING_OP_CLOSE closes a descriptor without a close syscall.
const IORING_OP_CLOSE: u8 = 19;

fn try_uring(ctx: &RawTracePointContext) -> Result<u32, u32> {
    if !off::have_btf() {
        return Ok(0);
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !off::watch_all() {
        // SAFETY: a lookup result is valid for the program's run.
        let Some(w) = (unsafe { WATCHED.get(tgid) }) else {
            return Ok(0);
        };
        if w.flags & WATCH_COUNT == 0 {
            return Ok(0);
        }
    }
    let req: u64 = ctx.arg(1);
    if req == 0 {
        return Ok(0);
    }
    let (res, cflags) = if proto::uring_cqe() {
        let cqe: u64 = ctx.arg(2);
        if cqe == 0 {
            return Ok(0);
        }
        let res: i32 = read(cqe, off::cqe_res()).map_err(|_| 0u32)?;
        (res, read::<u32>(cqe, off::cqe_flags()).unwrap_or(0))
    } else {
        (ctx.arg::<u64>(3) as i32, ctx.arg::<u64>(4) as u32)
    };
    let opcode: u8 = read(req, off::kiocb_opcode()).map_err(|_| 0u32)?;
    let file: u64 = read(req, off::kiocb_file()).unwrap_or(0);
    if opcode == IORING_OP_CLOSE {
        fd_table_changed(tgid);
    }
    let column = ledger::uring_column(opcode, file_info(file), cflags);
    let key = UringKey {
        tgid,
        opcode: opcode as u16,
        column: column as u16,
    };
    let cell = match URING.get_ptr_mut(&key) {
        Some(c) => c,
        None => {
            if URING.insert(&key, &NEW_URING_CELL, 0).is_err() {
                lost(Lost::UringTableFull);
                return Ok(0);
            }
            URING.get_ptr_mut(&key).ok_or(0u32)?
        }
    };
    // SAFETY: per-CPU value of a successful lookup; this CPU is the only writer.
    let cell = unsafe { &mut *cell };
    ledger::add(cell, res as i64, false);
    Ok(0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
