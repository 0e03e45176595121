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
    Column, LEAF_WORDS, Lost, MAX_STACK_ROWS, MAX_STACKS, NO_STACK, StackBytes, StackCache,
    StackKey,
};

use crate::{abi::reg, maps::lost};

/// BPF_F_USER_STACK: the stack of the user code that made the syscall.
const BPF_F_USER_STACK: u64 = 1 << 8;
/// BPF_F_NO_PREALLOC: rows are allocated as they come (see `maps::TRANSFERS`).
const BPF_F_NO_PREALLOC: u32 = 1;
/// `struct pt_regs` words of the user frame pointer, instruction pointer and stack pointer.
const BP_WORD: usize = 4;
const IP_WORD: usize = 16;
const SP_WORD: usize = 19;
/// [`stack_bytes`]'s `what`: the stack id is new, remember it.
const NEW_STACK: u64 = 1 << 63;
/// Entries of `STACK_CACHE` per CPU, chosen by instruction pointer and thread: a loop that
/// alternates `read` and `write` keeps one for each.
const CACHE_SLOTS: u64 = 16;
/// Farthest a frame pointer is followed from the stack pointer or the previous frame.
const MAX_FRAME: u64 = 8 << 20;
/// Lowest and highest user addresses a return address can have (mmap_min_addr's default;
/// the top of the 47-bit user address space): other words are not read as code.
const USER_CODE: core::ops::Range<u64> = 0x10000..0x8000_0000_0000;

/// The user stacks, by id.
#[map(name = "STACKS")]
static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);

/// Bytes and calls by stack, per CPU (no atomic add needed, and no lost update between CPUs).
#[map(name = "STACK_BYTES")]
static STACK_BYTES: PerCpuHashMap<StackKey, StackBytes> =
    PerCpuHashMap::with_max_entries(MAX_STACK_ROWS, BPF_F_NO_PREALLOC);

/// The last stack captured on each CPU (see `StackCache`).
#[map(name = "STACK_CACHE")]
static STACK_CACHE: PerCpuArray<StackCache> = PerCpuArray::with_max_entries(CACHE_SLOTS as u32, 0);

/// Rows added to `STACK_BYTES`, per CPU: user space looks for new rows when it moves.
#[map(name = "STACK_ROWS_ADDED")]
static STACK_ROWS_ADDED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// What did not fit in `STACK_BYTES`, by column: the `[other]` row.
#[map(name = "STACK_OVERFLOW")]
static STACK_OVERFLOW: PerCpuArray<StackBytes> =
    PerCpuArray::with_max_entries(Column::COUNT as u32, 0);

/// Records `bytes` moved by one call of `syscall` into `column` by thread `tid` under the
/// current user stack. Only the stack capture is inlined (the helper needs the context), and
/// only when the CPU's last stack is not this one; the rest are global functions the verifier
/// checks once.
#[inline(always)]
pub(crate) fn record<C: EbpfContext + aya_ebpf::programs::tracing::StackIdContext>(
    ctx: &C,
    tgid: u32,
    tid: u32,
    regs: *const u64,
    syscall: u16,
    column: Column,
    bytes: u64,
) {
    let ip = reg(regs, IP_WORD);
    // Two processes looping on the same libc wrapper (a sender and its receiver) share an
    // instruction pointer: the thread picks the slot too.
    let slot = (ip ^ ip >> 12 ^ tid as u64) % CACHE_SLOTS;
    let what = slot << 56 | (tid as u64) << 32 | (syscall as u64) << 16 | column as u64;
    let cached = same_stack(
        slot << 32 | tid as u64,
        ip,
        reg(regs, SP_WORD),
        reg(regs, BP_WORD),
    );
    let (stack_id, what) = if cached >= 0 {
        (cached as u32, what)
    } else {
        let id = match ctx.get_stackid(&STACKS, BPF_F_USER_STACK) {
            Ok(id) => id as u32,
            Err(_) => NO_STACK,
        };
        (id, what | NEW_STACK)
    };
    stack_bytes(tgid, stack_id, reg(regs, SP_WORD), what, bytes);
}

/// The id of the stack in the CPU's cache entry `slot_tid >> 32` if thread
/// `slot_tid as u32` is in it again (the signature of `StackCache` matches), else -1, with the
/// entry set to this stack's signature and its return-address words, for [`stack_bytes`] to
/// complete.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn same_stack(slot_tid: u64, ip: u64, sp: u64, bp: u64) -> i64 {
    let tid = slot_tid as u32;
    let Some(e) = STACK_CACHE.get_ptr_mut(((slot_tid >> 32) % CACHE_SLOTS) as u32) else {
        return -1;
    };
    // SAFETY: this CPU's entry; programs on one CPU do not interleave between here and
    // stack_bytes except by preemption, which stack_bytes detects by the thread id.
    let e = unsafe { &mut *e };
    // Only frames on the stack are read: code built without frame pointers keeps anything in
    // rbp, and reading a bad address costs a page fault (microseconds). The kernel's own walk
    // gives up on such a frame pointer too.
    let on_stack = |p: u64, above: u64| p >= above && p - above < MAX_FRAME;
    let (bp, frame) = if on_stack(bp, sp) {
        // SAFETY: probe_read_user never faults; a bad pointer yields an error.
        (
            bp,
            unsafe { bpf_probe_read_user(bp as *const [u64; 2]) }.unwrap_or([0; 2]),
        )
    } else {
        (0, [0; 2])
    };
    let outer = if bp != 0 && on_stack(frame[0], bp + 16) {
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(frame[0] as *const [u64; 2]) }.unwrap_or([0; 2])
    } else {
        [0; 2]
    };
    let ret = [frame[1], outer[1]];
    // SAFETY: as above.
    let words = unsafe { bpf_probe_read_user(sp as *const [u64; LEAF_WORDS]) };
    let words = words.unwrap_or([0; LEAF_WORDS]);
    let mut hit = e.valid == 1
        && e.tid == tid
        && e.ip == ip
        && e.sp == sp
        && e.bp == bp
        && e.ret[0] == ret[0]
        && e.ret[1] == ret[1];
    for i in 0..LEAF_WORDS {
        if e.callers[i] != 0 && e.callers[i] != words[i] {
            hit = false;
        }
    }
    if hit {
        return e.stack_id as i64;
    }
    e.tid = tid;
    e.valid = 0;
    e.ip = ip;
    e.sp = sp;
    e.bp = bp;
    e.ret = ret;
    e.callers = return_addresses(words);
    -1
}

/// Adds one call of `bytes` to the row (tgid, stack_id, return-address words, syscall,
/// column), where `what` is `slot << 56 | tid << 32 | syscall << 16 | column`, plus
/// [`NEW_STACK`] when `stack_id` was just captured (the CPU's `StackCache` entry `slot` then
/// takes it); `sp` is the user stack pointer.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn stack_bytes(tgid: u32, stack_id: u32, sp: u64, what: u64, bytes: u64) -> i64 {
    if stack_id == NO_STACK {
        lost(Lost::StackLost);
    }
    // pid_max is at most 2^22.
    let tid = ((what >> 32) & 0xff_ffff) as u32;
    let slot = ((what >> 56) & 0x7f) % CACHE_SLOTS;
    let mut callers = [0; LEAF_WORDS];
    if let Some(e) = STACK_CACHE.get_ptr_mut(slot as u32) {
        // SAFETY: this CPU's entry (see same_stack).
        let e = unsafe { &mut *e };
        if e.tid == tid {
            callers = e.callers;
            // A failed capture is not remembered: the next call tries again.
            if what & NEW_STACK != 0 && stack_id != NO_STACK {
                e.stack_id = stack_id;
                e.valid = 1;
            }
        } else {
            // Another thread's signature: this one was preempted in between (syscall
            // tracepoints are preemptible on recent kernels); read its own words again.
            // SAFETY: probe_read_user never faults; a bad pointer yields an error.
            let words = unsafe { bpf_probe_read_user(sp as *const [u64; LEAF_WORDS]) };
            callers = return_addresses(words.unwrap_or([0; LEAF_WORDS]));
        }
    }
    let key = StackKey {
        tgid,
        stack_id,
        syscall: (what >> 16) as u16,
        column: what as u16,
        _pad: 0,
        callers,
    };
    let row = match STACK_BYTES.get_ptr_mut(&key) {
        Some(r) => r,
        None => {
            let new = StackBytes { bytes, calls: 1 };
            if STACK_BYTES.insert(&key, &new, 0).is_ok() {
                if let Some(n) = STACK_ROWS_ADDED.get_ptr_mut(0) {
                    // SAFETY: this CPU's slot; a lost increment only delays a look.
                    unsafe { *n += 1 };
                }
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

/// Of the top words of the user stack, those that may be return addresses: the instruction
/// before each is a call (`e8 rel32`, `ff 15 disp32`, `ff /2` through a register or through
/// `[reg + disp8]`). The others are 0.
#[inline(always)]
fn return_addresses(mut words: [u64; LEAF_WORDS]) -> [u64; LEAF_WORDS] {
    for w in words.iter_mut() {
        if !USER_CODE.contains(w) {
            *w = 0;
            continue;
        }
        // SAFETY: probe_read_user never faults; a bad pointer yields an error.
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
