//! Byte-weighted user stacks: the bytes and calls of data-moving syscalls, aggregated in the
//! kernel by (process, user stack, caller, syscall, column). On only with `STACKS_ON`; the
//! verifier drops all of it otherwise.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_probe_read_user,
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap, StackTrace},
};
use zcprof_common::{
    Column, LEAF_WORDS, Lost, MAX_STACK_ROWS, MAX_STACKS, NO_STACK, StackBytes, StackKey,
};

use crate::{abi::reg, maps::lost};

/// BPF_F_USER_STACK: the stack of the user code that made the syscall.
const BPF_F_USER_STACK: u64 = 1 << 8;
/// BPF_F_NO_PREALLOC: rows are allocated as they come (see `maps::TRANSFERS`).
const BPF_F_NO_PREALLOC: u32 = 1;
/// `struct pt_regs` word of the user stack pointer.
const SP_WORD: usize = 19;

/// The user stacks, by id.
#[map(name = "STACKS")]
static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);

/// Bytes and calls by stack, per CPU (no atomic add needed, and no lost update between CPUs).
#[map(name = "STACK_BYTES")]
static STACK_BYTES: PerCpuHashMap<StackKey, StackBytes> =
    PerCpuHashMap::with_max_entries(MAX_STACK_ROWS, BPF_F_NO_PREALLOC);

/// What did not fit in `STACK_BYTES`, by column: the `[other]` row.
#[map(name = "STACK_OVERFLOW")]
static STACK_OVERFLOW: PerCpuArray<StackBytes> =
    PerCpuArray::with_max_entries(Column::COUNT as u32, 0);

/// Records `bytes` moved by one call of `syscall` into `column` under the current user stack.
/// Only the stack capture is inlined (the helper needs the context); the rest is a global
/// function the verifier checks once.
#[inline(always)]
pub(crate) fn record<C: EbpfContext + aya_ebpf::programs::tracing::StackIdContext>(
    ctx: &C,
    tgid: u32,
    regs: *const u64,
    syscall: u16,
    column: Column,
    bytes: u64,
) {
    let stack_id = match ctx.get_stackid(&STACKS, BPF_F_USER_STACK) {
        Ok(id) => id as u32,
        Err(_) => NO_STACK,
    };
    let what = (syscall as u64) << 16 | column as u64;
    stack_bytes(tgid, stack_id, reg(regs, SP_WORD), what, bytes);
}

/// Adds one call of `bytes` to the row (tgid, stack_id, caller, syscall, column), where
/// `what` is `syscall << 16 | column` and `sp` the user stack pointer at the syscall.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn stack_bytes(tgid: u32, stack_id: u32, sp: u64, what: u64, bytes: u64) -> i64 {
    if stack_id == NO_STACK {
        lost(Lost::StackLost);
    }
    let key = StackKey {
        tgid,
        stack_id,
        syscall: (what >> 16) as u16,
        column: what as u16,
        _pad: 0,
        callers: return_addresses(sp),
    };
    let row = match STACK_BYTES.get_ptr_mut(&key) {
        Some(r) => r,
        None => {
            let new = StackBytes { bytes, calls: 1 };
            if STACK_BYTES.insert(&key, &new, 0).is_ok() {
                return 0;
            }
            lost(Lost::StackTableFull);
            match STACK_OVERFLOW.get_ptr_mut((what & 0xffff) as u32) {
                Some(r) => r,
                None => return 0,
            }
        }
    };
    // SAFETY: a per-CPU value of a successful lookup; this CPU is its only writer.
    let row = unsafe { &mut *row };
    row.bytes += bytes;
    row.calls += 1;
    0
}

/// The top words of the user stack at `sp` that may be return addresses: the instruction
/// before each is a call (`e8 rel32`, `ff 15 disp32`, `ff /2` through a register or through
/// `[reg + disp8]`). The others are 0.
#[inline(always)]
fn return_addresses(sp: u64) -> [u64; LEAF_WORDS] {
    // SAFETY: probe_read_user never faults; a bad pointer yields an error.
    let Ok(mut words) = (unsafe { bpf_probe_read_user(sp as *const [u64; LEAF_WORDS]) }) else {
        return [0; LEAF_WORDS];
    };
    for w in words.iter_mut() {
        if *w < 8 {
            *w = 0;
            continue;
        }
        // SAFETY: as above.
        let call = match unsafe { bpf_probe_read_user((*w - 8) as *const [u8; 8]) } {
            Ok(b) => {
                b[3] == 0xe8
                    || (b[2] == 0xff && b[3] == 0x15)
                    || (b[6] == 0xff && b[7] & 0xf8 == 0xd0)
                    || (b[5] == 0xff && b[6] & 0xf8 == 0x50)
            }
            Err(_) => false,
        };
        if !call {
            *w = 0;
        }
    }
    words
}
