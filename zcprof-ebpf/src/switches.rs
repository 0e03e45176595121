//! Context switches: counting a watched thread's switch out of the CPU as voluntary or not,
//! exactly as `ru_nvcsw`/`ru_nivcsw` will report it, and noticing its final switch.

use aya_ebpf::programs::RawTracePointContext;
use zcprof_common::{NVCSW_UNKNOWN, THREAD_DEAD, ThreadStats};

use crate::kernel::{off, proto, read};

/// `prev_state` of a task's final switch after exit.
const TASK_DEAD: u64 = 0x80;

/// Counts the switch of watched thread `t` out of the CPU; true if it was the thread's
/// final one (its counts are final).
#[inline(always)]
pub(crate) fn count(ctx: &RawTracePointContext, t: &mut ThreadStats) -> bool {
    let prev: u64 = ctx.arg(1);
    // A thread reaped before its final switch may have lost its tid, and so this entry, to a
    // new task already.
    if t.task != 0 && t.task != prev {
        return false;
    }
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
        return false;
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
    prev_state & TASK_DEAD != 0
}
