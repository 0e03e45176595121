//! Backstops: the events the kernel skipped a preempted program for, counted all the same.
//!
//! The kernel runs a program on a tracepoint only if that program is not already running on
//! the CPU (its recursion guard). Kernels that run tracepoint programs preemptibly (Debian's
//! 7.2 under `preempt=lazy`) can preempt a task inside one of zcprof's programs; until that
//! task runs again, often a whole time slice, the guard stays taken and the kernel skips the
//! program for every other task's event on that CPU (its `recursion_misses`): in a 2-vCPU VM,
//! 18 % of a fork churn's writes.
//!
//! There each hook's program (the primary) gets a backstop: a second program on the same
//! tracepoint, attached right after it, with a guard of its own. The primary, once its body
//! has run, sets its hook's bit in the current thread's entry (`ThreadStats::ran`); the
//! backstop, which the kernel runs next for the same event in the same task, clears the bit
//! if it is set and returns. If it is not set, the primary did not run for this event, and
//! the backstop runs the same body. A thread without an entry gets the body again only where
//! the body has work for it (`Hook::works_without_entry`), work that comes to the same whether
//! done once or twice (entering a thread, a name). The decision is per thread, so no
//! preemption or migration between the two programs can make an event count twice.
//!
//! An event is lost only if the backstop too is skipped (another task preempted inside it on
//! that CPU). User space reports the primaries' skips less the events backstops counted
//! (`BACKSTOPPED`) as `lost.kernel_skipped`.
//!
//! The global `BACKSTOPS` (set by the loader) gates the bits: where the backstops are not
//! attached the verifier drops this code.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use zcprof_common::ThreadStats;

use crate::kernel::off;

/// A hook whose program has a backstop: its bit in `ThreadStats::ran`.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Hook {
    SysExit,
    SysExitDetail,
    SysEnter,
    Fork,
    Exec,
    Rename,
    Exit,
    FilemapFault,
    FilemapMapPages,
    UringQueue,
}

impl Hook {
    #[inline(always)]
    fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Whether the body has work for a thread without an entry: the fork hook enters the
    /// children of watched processes whichever thread forks, the rename hook renames another
    /// thread, sys_exit enters new threads in watch-all mode. The other bodies only find that
    /// such a thread is not watched, which the backstop need not find again (it would be held,
    /// and its guard taken, for every unwatched task's event).
    #[inline(always)]
    fn works_without_entry(self) -> bool {
        match self {
            Hook::Fork | Hook::Rename => true,
            Hook::SysExit => off::watch_all(),
            _ => false,
        }
    }
}

/// Per CPU, the events a backstop counted because the kernel had skipped the primary.
#[map(name = "BACKSTOPPED")]
static BACKSTOPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// In a primary, after its body: the current thread's entry (`entry`, if it has one) records
/// that the primary ran for this event. `entry` is called only when backstops are on.
#[inline(always)]
pub fn ran(hook: Hook, entry: impl FnOnce() -> Option<&'static mut ThreadStats>) {
    if off::backstops()
        && let Some(t) = entry()
    {
        t.ran |= hook.bit();
    }
}

/// In a backstop: whether the kernel skipped the primary for the current event, so that the
/// backstop must run the body. Clears the primary's bit for the next event.
#[inline(always)]
pub fn primary_skipped(
    hook: Hook,
    entry: impl FnOnce() -> Option<&'static mut ThreadStats>,
) -> bool {
    if !off::backstops() {
        return false;
    }
    let Some(t) = entry() else {
        return hook.works_without_entry();
    };
    if t.ran & hook.bit() != 0 {
        t.ran &= !hook.bit();
        return false;
    }
    if let Some(n) = BACKSTOPPED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot. A task preempted between the load and the store here
        // overwrites what others counted meanwhile (BPF's atomic add is not in Rust's core
        // for this target): the count can come out low, which makes `kernel_skipped` high,
        // never low.
        unsafe { *n += 1 };
    }
    true
}
