//! A dead thread leaves the thread table at its final context switch: its final counts go to
//! user space through the `RETIRED` ring buffer, and its slot, tid and cells are freed at
//! once. The table then holds live threads only, so a fork storm cannot fill it with the dead
//! waiting for user space's next collection.
//!
//! When the kernel cannot do it all (the ring buffer is full, or the thread has more cells in
//! `TRANSFERS` than its entry names), the entry stays, flagged dead, and user space collects
//! it from the table as it did before: slower, never lost.

use aya_ebpf::{cty::c_void, helpers::generated::bpf_probe_read_kernel};
use zcprof_common::{
    Deferred, Retired, SPILLED_CELLS, THREAD_DEAD, THREAD_RETIRING, THREAD_SPILLED_MANY,
    ThreadStats, Transfer, TransferKey,
};

use crate::maps::{
    FREE_ENTRY, FREE_SLOTS, RETIRED, THREADS, TID_SLOT, TRANSFERS, deferred, watched_set_changed,
};

/// Marks thread `t` (in `slot`) dead at its final context switch, and retires it if the
/// kernel can.
#[inline(always)]
pub(crate) fn final_switch(t: &mut ThreadStats, slot: u32) {
    if t.flags & THREAD_SPILLED_MANY != 0 {
        t.flags |= THREAD_DEAD;
        deferred(Deferred::ManyCells);
        return;
    }
    // One store: a reader sees the entry either live or dead and on its way out, never dead
    // and waiting for user space while the kernel frees it.
    t.flags |= THREAD_DEAD | THREAD_RETIRING;
    let r = retire(slot);
    if r != 0 {
        // Nothing was freed: the entry is user space's to collect.
        t.flags &= !THREAD_RETIRING;
        deferred(if r == RING_FULL {
            Deferred::RingFull
        } else {
            Deferred::Failed
        });
    }
}

/// What [`retire`] returns when the ring buffer had no room for the record.
const RING_FULL: i64 = 2;

/// Copies `size` bytes of kernel memory (map values) from `src` to `dst`; false if it failed.
#[inline(always)]
fn copy(dst: *mut c_void, src: *const c_void, size: usize) -> bool {
    // SAFETY: both pointers are valid for `size` bytes (a map value and a ring buffer record
    // of the same type); probe_read_kernel never faults.
    unsafe { bpf_probe_read_kernel(dst, size as u32, src) == 0 }
}

/// Writes the record of the dead thread in `slot` and frees its entry, tid and cells. Returns
/// 0 once the record is written and the slot freed, non-zero (and changes nothing) otherwise.
///
/// A global function: the verifier checks it once, on its own, rather than inside
/// `sched_switch` for every state that reaches its call; the call happens once per thread.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn retire(slot: u32) -> i64 {
    let Some(t) = THREADS.get_ptr_mut(slot) else {
        return 1;
    };
    let Some(mut record) = RETIRED.reserve::<Retired>(0) else {
        return RING_FULL;
    };
    let r = record.as_mut_ptr();
    // SAFETY: `r` is the reserved record, `t` a map value; both are valid and only this
    // program writes the record until it is submitted.
    unsafe {
        if !copy(
            (&raw mut (*r).stats).cast(),
            t.cast_const().cast(),
            size_of::<ThreadStats>(),
        ) {
            record.discard(0);
            return 3;
        }
        let (tgid, tid) = ((*t).tgid, (*t).tid);
        for i in 0..SPILLED_CELLS {
            let key = (*t).spilled[i];
            if key == 0 {
                continue;
            }
            let copied = match TRANSFERS.get_ptr(&TransferKey::of_cell(tgid, tid, key)) {
                Some(cell) => copy(
                    (&raw mut (*r).cells[i]).cast(),
                    cell.cast(),
                    size_of::<Transfer>(),
                ),
                None => false,
            };
            if !copied {
                (*r).stats.spilled[i] = 0;
            }
        }
        // The tid first: from here on no lookup finds the entry.
        if TID_SLOT.remove(&tid).is_err() {
            record.discard(0);
            return 4;
        }
        record.submit(0);
        for i in 0..SPILLED_CELLS {
            let key = (*t).spilled[i];
            if key != 0 {
                let _ = TRANSFERS.remove(&TransferKey::of_cell(tgid, tid, key));
            }
        }
        // A free slot is all zeros: `enter_thread` fills in only what it knows.
        copy(
            t.cast(),
            (&raw const FREE_ENTRY).cast(),
            size_of::<ThreadStats>(),
        );
    }
    // Cannot fail: the stack holds every slot, and this one is not in it.
    let _ = FREE_SLOTS.push(slot, 0);
    // A CPU may still remember the tid's slot.
    watched_set_changed();
    0
}
