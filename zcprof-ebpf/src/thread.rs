//! The current thread's entry in `THREADS`: found through this CPU's cache of the last
//! thread it looked up, so the hot path costs two array lookups that the verifier inlines, no
//! helper call and no hash lookup; and entered, by the fork hook or in watch-all mode.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_probe_read_kernel_str_bytes,
    },
};
use zcprof_common::{
    CpuThread, Lost, NVCSW_UNKNOWN, THREAD_DEAD, THREAD_EXITED, THREAD_RETIRING, ThreadStats,
};

use crate::{
    kernel::{off, read},
    maps::{
        CPU_THREAD, FREE_SLOTS, STACK_REGS, THREADS, TID_SLOT, lost, slot_of, watch_generation,
        watched_set_changed,
    },
    retire::retire,
};

/// Which of this CPU's two [`CpuThread`] caches: one keyed by tid, one by the address of the
/// task's saved registers.
const BY_TID: u32 = 0;
const BY_REGS: u32 = 1;

/// The slot of the current thread (`tid`), or 0 if it is not watched: from this CPU's cache
/// of the last thread it looked up, which holds while the same thread keeps making syscalls
/// and the watch generation has not moved; else from `TID_SLOT`, and remembered. Tid and slot
/// are one word, read and written with one access each: a program preempted between two
/// stores (Linux 7.x) cannot leave one thread's tid beside another's slot.
#[inline(always)]
fn running_slot(tid: u32) -> u32 {
    let gen_now = watch_generation();
    let Some(cpu) = CPU_THREAD.get_ptr_mut(BY_TID) else {
        return slot_of(tid);
    };
    let cpu = cpu as *mut CpuThread;
    // SAFETY: this CPU's entry; each access is one aligned load or store of one field.
    unsafe {
        let word = core::ptr::read_volatile(&raw const (*cpu).key);
        if word as u32 == tid && core::ptr::read_volatile(&raw const (*cpu).generation) == gen_now {
            return (word >> 32) as u32;
        }
    }
    // The generation read *before* the lookup: a thread entered meanwhile moved it on, so
    // this word is already stale and will not hide it.
    let slot = slot_of(tid);
    // SAFETY: as above.
    unsafe {
        core::ptr::write_volatile(&raw mut (*cpu).key, tid as u64 | (slot as u64) << 32);
        core::ptr::write_volatile(&raw mut (*cpu).generation, gen_now);
    }
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
pub(crate) fn entry_by_regs(regs: u64) -> Option<&'static mut ThreadStats> {
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

/// The number of the syscall the current task is in, read from its saved registers, once
/// [`STACK_REGS`] knows where they are: how `sched_process_exit` sees an exit syscall.
pub(crate) fn current_syscall() -> Option<u64> {
    let regs_at = match STACK_REGS.get(0) {
        Some(r) => *r,
        None => 0,
    };
    if regs_at == 0 {
        return None;
    }
    let orig_ax_at = regs_at + off::pt_regs_orig_ax();
    // SAFETY: the helper only returns the current task pointer.
    let task = unsafe { bpf_get_current_task() };
    let stack = read::<u64>(task, off::task_stack()).ok()?;
    read::<u64>(stack, orig_ax_at).ok()
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

/// The running thread's entry and slot, if it is watched (exited or not). A cached slot whose
/// entry names another thread (the word was written at another watch generation by a
/// preempted program) is looked up again rather than trusted.
#[inline(always)]
pub(crate) fn running_entry() -> Option<(&'static mut ThreadStats, u32)> {
    let tid = bpf_get_current_pid_tgid() as u32;
    let slot = running_slot(tid);
    let t = entry(slot)?;
    if t.tid == tid {
        return Some((t, slot));
    }
    let slot = slot_of(tid);
    entry(slot).map(|t| (t, slot))
}

/// The current thread's entry, if it is watched and alive.
#[inline(always)]
pub(crate) fn current_thread() -> Option<(&'static mut ThreadStats, u32)> {
    let (t, _) = running_entry()?;
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
///
/// `RETIRE`: whether the calling program may retire an exited thread that holds the current
/// tid (see [`enter_thread`]). perf_event programs may not: that deletes cells from
/// `TRANSFERS`, a hash map allocated at run time, which 5.10's verifier refuses them.
#[inline(always)]
pub(crate) fn current_or_new_thread<const RETIRE: bool>(
    found: Option<&'static mut ThreadStats>,
) -> Option<(&'static mut ThreadStats, u32)> {
    let t = match found {
        Some(t) => t,
        None if off::watch_all() => return enter_current::<RETIRE>(),
        None => return None,
    };
    if t.flags & THREAD_EXITED != 0 {
        // In watch-all mode, a new task whose tid an exited one still holds (reaped, but not
        // yet through its final switch) takes the tid over. Otherwise these are the exited
        // thread's own last events (a fault in exit_mm, say): neither counted nor a new
        // thread.
        if !RETIRE || !off::watch_all() {
            return None;
        }
        // SAFETY: the helper only returns the current task pointer.
        let task = unsafe { bpf_get_current_task() };
        if t.task == 0 || t.task == task {
            return None;
        }
        return enter_current::<RETIRE>();
    }
    let tid = t.tid;
    Some((t, tid))
}

/// Enters the current thread (watch-all mode).
#[inline(always)]
fn enter_current<const RETIRE: bool>() -> Option<(&'static mut ThreadStats, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if tid == 0 {
        return None;
    }
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // SAFETY: the helper has no preconditions.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the helper only returns the current task pointer.
    let task = unsafe { bpf_get_current_task() };
    let new = NewThread {
        tid,
        tgid: (pid_tgid >> 32) as u32,
        comm,
        last_nvcsw: NVCSW_UNKNOWN,
        cgroup_id,
        process_start: process_start(task),
        task,
    };
    enter_thread::<RETIRE>(new)
}

/// When the process of `task` started (its group leader's `start_time`), or 0 where the
/// kernel's BTF did not say where that is.
#[inline(always)]
pub(crate) fn process_start(task: u64) -> u64 {
    let (leader_at, start_at) = (off::task_group_leader(), off::task_start_time());
    if leader_at == 0 || start_at == 0 {
        return 0;
    }
    read::<u64>(task, leader_at)
        .and_then(|leader| read::<u64>(leader, start_at))
        .unwrap_or(0)
}

/// What the kernel knows of a thread it enters.
pub(crate) struct NewThread {
    pub(crate) tid: u32,
    pub(crate) tgid: u32,
    pub(crate) comm: [u8; 16],
    /// Its `nvcsw` now (0 for a new task), or [`NVCSW_UNKNOWN`].
    pub(crate) last_nvcsw: u64,
    pub(crate) cgroup_id: u64,
    /// See [`ThreadStats::process_start`].
    pub(crate) process_start: u64,
    /// Its `task_struct`.
    pub(crate) task: u64,
}

/// Enters thread `new.tid` (unless it is there already) and returns its entry and slot. An
/// exited thread that still holds the tid is retired first when `RETIRE` (see
/// [`current_or_new_thread`]).
#[inline(always)]
pub(crate) fn enter_thread<const RETIRE: bool>(
    new: NewThread,
) -> Option<(&'static mut ThreadStats, u32)> {
    let tid = new.tid;
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
        let known = slot_of(tid);
        let taken_over = match entry(known) {
            Some(t) if t.flags & THREAD_EXITED == 0 => {
                // Entered already (by the other racer).
                let _ = FREE_SLOTS.push(slot, 0);
                return Some((t, known));
            }
            // An exited thread holds the tid: it was reaped, and its tid given to this new
            // task, before its final switch. Its counts are final but for that switch (which
            // its parent's wait4 did not see either): retire it now.
            Some(old) if RETIRE => {
                old.flags |= THREAD_DEAD | THREAD_RETIRING;
                if retire(known) == 0 {
                    TID_SLOT.insert(tid, slot, BPF_NOEXIST as u64).is_ok()
                } else {
                    old.flags &= !THREAD_RETIRING;
                    false
                }
            }
            _ => false,
        };
        if !taken_over {
            let _ = FREE_SLOTS.push(slot, 0);
            // Full, or an exited thread's entry the kernel could not retire holds this tid.
            lost(Lost::ThreadTableFull);
            return None;
        }
    }
    // A free slot is all zeros (user space zeroes it before giving it back).
    let t = entry(slot)?;
    t.tgid = new.tgid;
    t.comm = new.comm;
    t.last_nvcsw = new.last_nvcsw;
    t.cgroup_id = new.cgroup_id;
    t.process_start = new.process_start;
    t.task = new.task;
    t.tid = tid;
    // Some CPU may remember this tid as unwatched (a thread that had it before, or this one
    // in watch-all mode): make every CPU look again.
    watched_set_changed();
    Some((t, slot))
}

/// Gives thread `tid`'s entry the name at `comm` (kernel memory), if it is watched and alive.
/// The renamed thread may be another than the current one (a write to
/// /proc/PID/task/TID/comm): the one write to an entry by another thread, of a name only, so
/// a reader may see a name half-written for one collection but never a wrong count.
#[inline(always)]
pub(crate) fn rename(tid: u32, comm: u64) {
    let Some(t) = entry(slot_of(tid)) else {
        return;
    };
    if t.tid != tid || t.flags & THREAD_EXITED != 0 {
        return;
    }
    let mut name = [0u8; 16];
    // SAFETY: probe_read_kernel_str never faults: a bad pointer yields an error.
    if unsafe { bpf_probe_read_kernel_str_bytes(comm as *const u8, &mut name) }.is_ok() {
        t.comm = name;
    }
}
