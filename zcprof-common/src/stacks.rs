//! Byte-weighted user stacks (`--folded`, `--flamegraph`, `--pprof`): the maps the kernel
//! aggregates them in, their keys and values.

/// Name of the stack-trace map (`BPF_MAP_TYPE_STACK_TRACE`, key: stack id `u32`, value: up
/// to 127 user instruction pointers, innermost first, zero-terminated).
pub const MAP_STACKS: &str = "STACKS";
/// Name of the per-CPU hash of bytes and calls by stack (key: [`StackKey`], value:
/// [`StackBytes`]).
pub const MAP_STACK_BYTES: &str = "STACK_BYTES";
/// Name of the per-CPU array of what did not fit in [`MAP_STACK_BYTES`] (index: the
/// [`crate::Column`], value: [`StackBytes`]): the `[other]` row.
pub const MAP_STACK_OVERFLOW: &str = "STACK_OVERFLOW";

/// Name of the per-CPU count of rows added to [`MAP_STACK_BYTES`] (index 0, `u64`): user space
/// reads the memory maps of the processes with new rows while they live, and looks for new
/// rows only when this moves.
pub const MAP_STACK_ROWS_ADDED: &str = "STACK_ROWS_ADDED";

/// Capacity of [`MAP_STACKS`]: distinct user stacks (each 127 × 8 bytes: 16 MiB in all). The
/// kernel files a stack under a hash of its frames; a new stack whose bucket holds another is
/// not captured (counted as `stack_lost`), so the map is kept much larger than the stacks
/// expected.
pub const MAX_STACKS: u32 = 16_384;
/// Capacity of [`MAP_STACK_BYTES`]: (process, stack, callers, syscall, column) rows at once.
pub const MAX_STACK_ROWS: u32 = 16_384;
/// [`StackKey::stack_id`] of a call whose stack could not be captured (a hash collision in a
/// full [`MAP_STACKS`], or an unreadable user stack): its bytes still count, under
/// `[unknown stack]`.
pub const NO_STACK: u32 = u32::MAX;
/// Words at the top of the user stack searched for the return address into the libc
/// wrapper's caller: glibc's wrappers adjust the stack by at most 0x28 bytes before
/// `syscall` (Debian 12's `write`, multi-threaded path), so the address is one of the first
/// six words.
pub const LEAF_WORDS: usize = 6;

/// Name of the per-CPU one-entry array of the last stack captured on the CPU (value:
/// [`StackCache`]).
pub const MAP_STACK_CACHE: &str = "STACK_CACHE";

/// Value of [`MAP_STACK_CACHE`]: the last user stack captured on this CPU and what identifies
/// it cheaply. Capturing a user stack (`bpf_get_stackid`) costs microseconds; a thread that
/// loops over `read`/`write` makes its calls from the same stack, which the same thread,
/// instruction pointer, stack and frame pointers, the first two return addresses of the
/// frame-pointer chain and the return-address words at the top of the stack identify. Calls
/// from stacks that differ only deeper, at the same depth, are counted under the first one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCache {
    /// The thread (0: none).
    pub tid: u32,
    /// 1 once `stack_id` is set for this signature.
    pub valid: u32,
    /// User instruction pointer, stack pointer and frame pointer at the syscall.
    pub ip: u64,
    /// See `ip`.
    pub sp: u64,
    /// See `ip`.
    pub bp: u64,
    /// The first two return addresses of the frame-pointer chain.
    pub ret: [u64; 2],
    /// The stack's id in [`MAP_STACKS`] (or [`NO_STACK`]).
    pub stack_id: u32,
    /// Padding, always 0.
    pub _pad: u32,
    /// The return-address words at the top of the stack ([`StackKey::callers`]).
    pub callers: [u64; LEAF_WORDS],
}

/// Key of [`MAP_STACK_BYTES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackKey {
    /// The process.
    pub tgid: u32,
    /// Its user stack in [`MAP_STACKS`] (frame-pointer unwound), or [`NO_STACK`].
    pub stack_id: u32,
    /// The [`crate::Syscall`].
    pub syscall: u16,
    /// The [`crate::Column`].
    pub column: u16,
    /// Padding, always 0.
    pub _pad: u32,
    /// The top [`LEAF_WORDS`] words of the user stack, each kept only if it may be a return
    /// address (the bytes before it are a call instruction), else 0: one of them is the return
    /// address into the function that called a libc wrapper, which frame-pointer unwinding
    /// skips because the wrapper pushes no frame. User space tells which from the call
    /// frame information (CFI) of the wrapper's code, and puts it below the wrapper's frame.
    /// Words that are not code addresses are zeroed so that rows aggregate.
    pub callers: [u64; LEAF_WORDS],
}

/// Value of [`MAP_STACK_BYTES`] and [`MAP_STACK_OVERFLOW`], per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackBytes {
    /// Bytes the calls moved.
    pub bytes: u64,
    /// Calls that moved bytes.
    pub calls: u64,
}
