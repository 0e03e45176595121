//! zcprof's kernel programs.
//!
//! Every program starts by finding the current thread's slot in `THREADS`: a per-CPU cache
//! (`CPU_THREAD`) remembers the last thread looked up on the CPU and its slot, so the hot path
//! costs two array lookups that the verifier inlines, no helper call and no hash lookup. A thread
//! without a slot is not watched and the program returns at once, which is all an unwatched
//! process pays. Watched threads are entered by user space (attach) or by the fork hook
//! (children and new threads), never on the hot path. Counters are aggregated in place in the
//! maps; nothing is sent to user space per event.
//!
//! Every program and its body are `#[inline(always)]`: a call between BPF functions costs a
//! call and a return, and on this kind of CPU (SRSO mitigation) a return is expensive.
//!
//! This file holds the programs; what they share has a module of its own: `maps` (the maps
//! user space reads), `thread` (finding, entering and renaming threads), `switches` (voluntary
//! or not), `retire` (dead threads leaving the table), `ledger` (the copy ledger), `abi` (the
//! x86-64 syscall ABI), `files` (what a descriptor refers to) and `kernel` (the running
//! kernel's offsets, set at load).
#![no_std]
#![no_main]

mod abi;
mod backstop;
mod files;
mod kernel;
mod ledger;
mod maps;
mod objects;
mod retire;
mod stacks;
mod switches;
mod thread;

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::{btf_tracepoint, perf_event, raw_tracepoint},
    programs::{BtfTracePointContext, PerfEventContext, RawTracePointContext},
};
use aya_log_ebpf::warn;
use zcprof_common::{
    Column, FdChange, Lost, PendingObjects, Syscall, THREAD_EXITED, WATCH_COUNT,
    WATCH_FOLLOW_CHILDREN, Watch, uring, x86_64,
};

use crate::{
    abi::{EAGAIN, ORIG_AX_WORD, SyscallNr, reg},
    backstop::Hook,
    kernel::{off, proto, read},
    maps::{WATCHED, fds_changed, lost},
    thread::{
        NewThread, current_or_new_thread, current_syscall, current_thread, enter_thread,
        entry_by_regs, process_start, running_entry,
    },
};

/// The backstop of a primary program (see `backstop`): attached right after it on the same
/// tracepoint where the kernel may preempt BPF programs, it runs the primary's body for the
/// events the kernel skipped the primary for. `$entry` finds the current thread's entry.
macro_rules! backstop {
    ($(#[$attr:meta])* $name:ident($ctx:ident: $Ctx:ty) -> $R:ty, $hook:expr, $entry:expr,
     $body:expr) => {
        /// The backstop of its hook's primary program (see `backstop`).
        $(#[$attr])*
        #[inline(always)]
        pub fn $name($ctx: $Ctx) -> $R {
            if off::empty_bodies() || !backstop::primary_skipped($hook, || $entry) {
                return 0;
            }
            $body
        }
    };
}

/// The current thread's entry, alive or exited, for the backstops of hooks other than the
/// syscall ones.
#[inline(always)]
fn running() -> Option<&'static mut zcprof_common::ThreadStats> {
    running_entry().map(|(t, _)| t)
}

/// sys_exit's and sys_enter's way to the current thread's entry (see `entry_by_regs`).
#[inline(always)]
fn by_regs(ctx: &BtfTracePointContext) -> Option<&'static mut zcprof_common::ThreadStats> {
    let regs: *const u64 = ctx.arg(0);
    entry_by_regs(regs as u64)
}

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
    let r = sys_exit_body(&ctx);
    backstop::ran(Hook::SysExit, || by_regs(&ctx));
    r
}

backstop!(
    #[btf_tracepoint(function = "sys_exit")]
    sys_exit_backstop(ctx: BtfTracePointContext) -> i32,
    Hook::SysExit,
    by_regs(&ctx),
    sys_exit_body(&ctx)
);

#[inline(always)]
fn sys_exit_body(ctx: &BtfTracePointContext) -> i32 {
    match try_sys_exit(ctx) {
        Ok(r) | Err(r) => r as i32,
    }
}

/// `raw_syscalls:sys_exit` in place of [`sys_exit`] with `--by-file` or `--by-peer`: counts the
/// call as sys_exit does, adding its bytes to the recent slots of the descriptors they went
/// through as it goes (`objects::to_recent`); descriptors whose slot is not theirs are walked
/// here, after the count, by two small functions. One program does both because a second one
/// on the event would cost as much again as the attribution itself (its dispatch is an
/// indirect call), and the count is inline because a BPF-to-BPF return is dear on CPUs with
/// return-thunk mitigations. 5.10 adds the stacks of a program and the functions it calls:
/// this program's ~392 bytes (rounded up to 416) plus `take_slot`'s 64 or `name_fd`'s 40 and
/// the `memset` it calls (32) must stay within 512, so those functions keep no window of the
/// file table on their stack. Format: as [`sys_exit`].
#[btf_tracepoint(function = "sys_exit")]
#[inline(always)]
pub fn sys_exit_attrib(ctx: BtfTracePointContext) -> i32 {
    if off::empty_bodies() {
        return 0;
    }
    sys_exit_attrib_body(&ctx);
    backstop::ran(Hook::SysExit, || by_regs(&ctx));
    0
}

backstop!(
    #[btf_tracepoint(function = "sys_exit")]
    sys_exit_attrib_backstop(ctx: BtfTracePointContext) -> i32,
    Hook::SysExit,
    by_regs(&ctx),
    {
        sys_exit_attrib_body(&ctx);
        0
    }
);

#[inline(always)]
fn sys_exit_attrib_body(ctx: &BtfTracePointContext) {
    // Ok(1): descriptors are left to walk (see `objects::to_recent`).
    if try_sys_exit(ctx) != Ok(1) {
        return;
    }
    let Some(thread) = by_regs(ctx) else {
        return;
    };
    objects::attribute(thread);
    // The stack options' program comes next and takes what is pending.
    if !off::stacks() {
        thread.pending = PendingObjects::NONE;
    }
}

#[inline(always)]
fn try_sys_exit(ctx: &BtfTracePointContext) -> Result<u32, u32> {
    let regs: *const u64 = ctx.arg(0);
    let Some((thread, tid)) = current_or_new_thread::<true>(entry_by_regs(regs as u64)) else {
        return Ok(0);
    };
    thread.counts.syscalls += 1;
    // 0: not timed. The verifier drops this branch when the mode is off.
    let mut took_ns = 0;
    if off::latency() && thread.entered_ns != 0 {
        // SAFETY: the helper has no preconditions.
        let now = unsafe { bpf_ktime_get_ns() };
        took_ns = now.saturating_sub(thread.entered_ns);
        thread.entered_ns = 0;
        thread.counts.syscall_time_ns += took_ns;
    }
    // Only the syscall number now; arguments are read where a syscall needs them.
    let nr = reg(regs, ORIG_AX_WORD);
    let syscall = match abi::syscall(nr, regs) {
        SyscallNr::Ledger(syscall) => syscall,
        SyscallNr::Other(FdChange::Nothing) => return Ok(0),
        SyscallNr::Other(change) => {
            fds_changed(thread.tgid, change);
            return Ok(0);
        }
    };
    let ret: i64 = ctx.arg(1);
    if ret == -EAGAIN {
        thread.counts.would_block += 1;
    }
    if syscall == Syscall::Munmap {
        thread.fault_mapping = 0;
    }
    let (column, moved) = ledger::record_syscall(thread, tid, syscall, regs, ret, took_ns);
    // For the attribution and `sys_exit_detail`. The verifier drops this when neither option
    // is on.
    if (off::stacks() || off::attribute()) && moved > 0 && column != Column::NotMoved {
        thread.pending.bytes = moved as u64;
        thread.pending.column = column as u16;
        thread.pending.syscall = syscall as u16;
        // The usual case here, where the thread's entry is at hand: descriptors whose recent
        // slot is theirs take the bytes; the others are left for `sys_exit_attrib` to walk.
        if off::attribute() {
            let walk = objects::to_recent(thread);
            if !walk && !off::stacks() {
                thread.pending = PendingObjects::NONE;
            }
            return Ok(u32::from(walk));
        }
    }
    Ok(0)
}

/// `raw_syscalls:sys_exit` again, attached after [`sys_exit`] (or [`sys_exit_attrib`]) only
/// with the stack options (`--folded`, `--flamegraph`, `--pprof`): takes the call sys_exit
/// just counted (`ThreadStats::pending`) and attributes its bytes to the user stack that made
/// it (`stacks`), with a stack of its own: sys_exit leaves too little of the 512 bytes 5.10
/// allows a program and the functions it calls together. Format: as [`sys_exit`].
#[btf_tracepoint(function = "sys_exit")]
#[inline(always)]
pub fn sys_exit_detail(ctx: BtfTracePointContext) -> i32 {
    if off::empty_bodies() {
        return 0;
    }
    sys_exit_detail_body(&ctx);
    backstop::ran(Hook::SysExitDetail, || by_regs(&ctx));
    0
}

backstop!(
    #[btf_tracepoint(function = "sys_exit")]
    sys_exit_detail_backstop(ctx: BtfTracePointContext) -> i32,
    Hook::SysExitDetail,
    by_regs(&ctx),
    {
        sys_exit_detail_body(&ctx);
        0
    }
);

#[inline(always)]
fn sys_exit_detail_body(ctx: &BtfTracePointContext) {
    let regs: *const u64 = ctx.arg(0);
    let Some(thread) = entry_by_regs(regs as u64) else {
        return;
    };
    let p = thread.pending;
    if p.bytes == 0 {
        return;
    }
    thread.pending = PendingObjects::NONE;
    if off::stacks()
        && let Some(column) = Column::from_u16(p.column)
    {
        stacks::record(
            ctx,
            thread.tgid,
            thread.tid,
            regs,
            p.syscall,
            column,
            p.bytes,
        );
    }
}

/// `raw_syscalls:sys_enter`, TP_PROTO(struct pt_regs *regs, long id), attached only with
/// `--latency`. Format (/sys/kernel/tracing/events/raw_syscalls/sys_enter/format):
///   field:long id; offset:8; size:8; signed:1;
///   field:unsigned long args[6]; offset:16; size:48; signed:0;
/// Stamps the watched thread's entry with the time it entered the syscall; sys_exit takes the
/// stamp. Threads not entered yet (a thread `serve` has not met) are not timed until their
/// next syscall.
#[btf_tracepoint(function = "sys_enter")]
#[inline(always)]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    if off::empty_bodies() {
        return 0;
    }
    let r = sys_enter_body(&ctx);
    backstop::ran(Hook::SysEnter, || by_regs(&ctx));
    r
}

backstop!(
    #[btf_tracepoint(function = "sys_enter")]
    sys_enter_backstop(ctx: BtfTracePointContext) -> i32,
    Hook::SysEnter,
    by_regs(&ctx),
    sys_enter_body(&ctx)
);

#[inline(always)]
fn sys_enter_body(ctx: &BtfTracePointContext) -> i32 {
    match try_sys_enter(ctx) {
        Ok(r) | Err(r) => r as i32,
    }
}

#[inline(always)]
fn try_sys_enter(ctx: &BtfTracePointContext) -> Result<u32, u32> {
    let regs: *const u64 = ctx.arg(0);
    let Some(thread) = entry_by_regs(regs as u64) else {
        return Ok(0);
    };
    if thread.flags & THREAD_EXITED == 0 {
        // SAFETY: the helper has no preconditions.
        thread.entered_ns = unsafe { bpf_ktime_get_ns() };
    }
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

#[inline(always)]
fn try_sched_switch(ctx: &RawTracePointContext) -> Result<u32, u32> {
    // `current` is still `prev` here.
    if let Some((t, slot)) = running_entry()
        && switches::count(ctx, t)
    {
        retire::final_switch(t, slot);
    }
    Ok(0)
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
    let r = fork_body(&ctx);
    backstop::ran(Hook::Fork, running);
    r
}

backstop!(
    #[raw_tracepoint(tracepoint = "sched_process_fork")]
    sched_process_fork_backstop(ctx: RawTracePointContext) -> u32,
    Hook::Fork,
    running(),
    fork_body(&ctx)
);

#[inline(always)]
fn fork_body(ctx: &RawTracePointContext) -> u32 {
    match try_fork(ctx) {
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
    // A new thread belongs to its creator's process, under the identity the creator's entry
    // has (0 for a process that ran before zcprof entered it).
    let start = match running_entry() {
        Some((parent, _)) if child_tgid == parent_tgid => parent.process_start,
        _ => process_start(child),
    };
    let new = NewThread {
        tid: child_pid,
        tgid: child_tgid,
        comm,
        last_nvcsw: 0,
        cgroup_id,
        process_start: start,
        task: child,
    };
    if enter_thread::<true>(new).is_none() {
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
/// Keeps the command name and cgroup current, and remembers how many syscalls came before the
/// exec (strace, for one, starts counting at the exec).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
#[inline(always)]
pub fn sched_process_exec(_ctx: RawTracePointContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    exec_body();
    backstop::ran(Hook::Exec, running);
    0
}

backstop!(
    #[raw_tracepoint(tracepoint = "sched_process_exec")]
    sched_process_exec_backstop(_ctx: RawTracePointContext) -> u32,
    Hook::Exec,
    running(),
    {
        exec_body();
        0
    }
);

#[inline(always)]
fn exec_body() {
    if let Some((t, _)) = current_thread() {
        // Close-on-exec descriptors are gone.
        fds_changed(t.tgid, FdChange::All);
        t.counts.syscalls_before_exec = t.counts.syscalls;
        if let Ok(comm) = bpf_get_current_comm() {
            t.comm = comm;
        }
        // A container runtime moves its first process into the container's cgroup, then
        // execs the program: the cgroup at exec is the one its work belongs to.
        // SAFETY: the helper has no preconditions.
        t.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    }
}

/// `task:task_rename`, TP_PROTO(struct task_struct *task, const char *comm). Format:
///   field:pid_t pid; offset:8; size:4 / field:char oldcomm[16]; offset:12; size:16 /
///   field:char newcomm[16]; offset:28; size:16 / field:short oom_score_adj; offset:44; size:2
///
/// A thread renamed itself (prctl PR_SET_NAME) or was renamed (/proc/PID/task/TID/comm):
/// reports and serve's groups follow its latest name.
#[raw_tracepoint(tracepoint = "task_rename")]
#[inline(always)]
pub fn task_rename(ctx: RawTracePointContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    rename_body(&ctx);
    backstop::ran(Hook::Rename, running);
    0
}

backstop!(
    #[raw_tracepoint(tracepoint = "task_rename")]
    task_rename_backstop(ctx: RawTracePointContext) -> u32,
    Hook::Rename,
    running(),
    {
        rename_body(&ctx);
        0
    }
);

#[inline(always)]
fn rename_body(ctx: &RawTracePointContext) {
    let task: u64 = ctx.arg(0);
    if let Ok(tid) = read::<u32>(task, off::task_pid()) {
        thread::rename(tid, ctx.arg(1));
    }
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
    let r = exit_body(&ctx);
    backstop::ran(Hook::Exit, running);
    r
}

backstop!(
    #[raw_tracepoint(tracepoint = "sched_process_exit")]
    sched_process_exit_backstop(ctx: RawTracePointContext) -> u32,
    Hook::Exit,
    running(),
    exit_body(&ctx)
);

#[inline(always)]
fn exit_body(ctx: &RawTracePointContext) -> u32 {
    match try_exit(ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_exit(ctx: &RawTracePointContext) -> Result<u32, u32> {
    let Some((t, _)) = current_thread() else {
        return Ok(0);
    };
    t.flags |= THREAD_EXITED;
    if let Some(nr) = current_syscall()
        && (nr == x86_64::EXIT || nr == x86_64::EXIT_GROUP)
    {
        t.counts.syscalls += 1;
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
    let Some((t, _)) = current_or_new_thread::<false>(running_entry().map(|(t, _)| t)) else {
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
    filemap_fault_body(&ctx);
    backstop::ran(Hook::FilemapFault, running);
    0
}

backstop!(
    #[raw_tracepoint(tracepoint = "mm_filemap_fault")]
    mm_filemap_fault_backstop(ctx: RawTracePointContext) -> u32,
    Hook::FilemapFault,
    running(),
    {
        filemap_fault_body(&ctx);
        0
    }
);

#[inline(always)]
fn filemap_fault_body(ctx: &RawTracePointContext) {
    if let Some((t, tid)) = current_thread() {
        let index: u64 = ctx.arg(1);
        ledger::file_pages_mapped(t, tid, ctx.arg(0), index, index, in_data_call());
    }
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
    filemap_map_pages_body(&ctx);
    backstop::ran(Hook::FilemapMapPages, running);
    0
}

backstop!(
    #[raw_tracepoint(tracepoint = "mm_filemap_map_pages")]
    mm_filemap_map_pages_backstop(ctx: RawTracePointContext) -> u32,
    Hook::FilemapMapPages,
    running(),
    {
        filemap_map_pages_body(&ctx);
        0
    }
);

#[inline(always)]
fn filemap_map_pages_body(ctx: &RawTracePointContext) {
    if let Some((t, tid)) = current_thread() {
        ledger::file_pages_mapped(t, tid, ctx.arg(0), ctx.arg(1), ctx.arg(2), in_data_call());
    }
}

/// Whether the current fault was taken inside one of the data-moving syscalls zcprof records
/// (a `write` copying from a file mapping, say): the registers the task saved on entering the
/// kernel hold the syscall's number in `orig_ax`; a fault of user code saves -1 there
/// (x86-64's exception entry writes it: "no syscall to restart"). mmap and munmap do not count:
/// `MAP_POPULATE` maps pages in without moving them, as do `mlockall` and `madvise`, which
/// are not recorded. Unknown (no syscall has shown where the registers are yet) counts as not.
#[inline(always)]
fn in_data_call() -> bool {
    match thread::current_syscall().and_then(Syscall::from_x86_64) {
        Some(Syscall::MmapFile | Syscall::Munmap) | None => false,
        Some(_) => true,
    }
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
    if opcode == uring::op::CLOSE {
        fds_changed(tgid, FdChange::All); // A descriptor closed without a close syscall.
    }
    ledger::record_uring(tgid, opcode, file, cflags, res);
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

/// `io_uring:io_uring_queue_async_work`, TP_PROTO(struct io_kiocb *req, int rw) (5.18+);
/// TP_PROTO(void *ctx, int rw, void *req, struct io_wq_work *work, unsigned int flags) before.
/// Format (6.18): field:void * ctx; offset:8; size:8 / field:void * req; offset:16; size:8 /
///   field:u64 user_data; offset:24; size:8 / field:u8 opcode; offset:32; size:1 /
///   field:unsigned long long flags; offset:40; size:8 / field:struct io_wq_work * work;
///   offset:48; size:8 / field:int rw; offset:56; size:4 / field:__data_loc char[] op_str;
///   offset:60; size:4
///
/// A request io_uring hands to an io-wq worker thread instead of running it inline ("punted"):
/// fires in the task that queues it, the submitter (or its task work). Only counted, so the
/// arguments, whose layout changed, are not read.
#[raw_tracepoint(tracepoint = "io_uring_queue_async_work")]
#[inline(always)]
pub fn io_uring_queue_async_work(_ctx: RawTracePointContext) -> u32 {
    if off::empty_bodies() {
        return 0;
    }
    uring_queue_body();
    backstop::ran(Hook::UringQueue, running);
    0
}

backstop!(
    #[raw_tracepoint(tracepoint = "io_uring_queue_async_work")]
    io_uring_queue_async_work_backstop(_ctx: RawTracePointContext) -> u32,
    Hook::UringQueue,
    running(),
    {
        uring_queue_body();
        0
    }
);

#[inline(always)]
fn uring_queue_body() {
    if let Some((t, _)) = current_thread() {
        t.counts.io_uring_punted += 1;
    }
}
