//! The x86-64 syscall ABI as the programs see it: where a syscall's number and arguments sit
//! in the saved registers, the syscall numbers, and the flags and structures of the syscalls
//! the ledger looks into.

use zcprof_common::{FdChange, Syscall, x86_64};

// x86-64 `struct pt_regs`, as u64 words: where the syscall's number and arguments are.
pub(crate) const R10: usize = 7;
pub(crate) const R9: usize = 8;
pub(crate) const R8: usize = 9;
pub(crate) const DX: usize = 12;
pub(crate) const SI: usize = 13;
pub(crate) const DI: usize = 14;
pub(crate) const ORIG_AX_WORD: usize = 15;

/// Word `i` of `struct pt_regs` at `regs`.
#[inline(always)]
pub(crate) fn reg(regs: *const u64, i: usize) -> u64 {
    // SAFETY: `regs` is the tracepoint's `struct pt_regs *` and `i` a constant below its 21
    // words; the verifier checks the load against the kernel's BTF.
    unsafe { core::ptr::read_volatile(regs.add(i)) }
}

/// Syscall argument `n` (0..=5), read from the task's saved registers at `regs`.
#[inline(always)]
pub(crate) fn arg(regs: *const u64, n: usize) -> u64 {
    reg(
        regs,
        match n {
            0 => DI,
            1 => SI,
            2 => DX,
            3 => R10,
            4 => R8,
            _ => R9,
        },
    )
}

/// What a syscall number means to the programs.
pub(crate) enum SyscallNr {
    /// A syscall the ledger counts, by its ledger name.
    Ledger(Syscall),
    /// Any other syscall, and what it may have changed among the descriptors.
    Other(FdChange),
}

/// What syscall number `nr`, called with the arguments in `regs`, means to the programs (the
/// numbers are zcprof-common's, beside the names).
#[inline(always)]
pub(crate) fn syscall(nr: u64, regs: *const u64) -> SyscallNr {
    match Syscall::from_x86_64(nr) {
        Some(syscall) => SyscallNr::Ledger(syscall),
        None => SyscallNr::Other(x86_64::fd_change(nr, |i| arg(regs, i))),
    }
}

/// send*(2) flag: send without copying the buffer, if the socket allows it (SO_ZEROCOPY).
pub(crate) const MSG_ZEROCOPY: u64 = 0x400_0000;
/// recvmsg(2) flag: read the socket's error queue, where zero-copy completions arrive.
pub(crate) const MSG_ERRQUEUE: u64 = 0x2000;
/// mmap(2) flag: no file behind the mapping.
pub(crate) const MAP_ANONYMOUS: u64 = 0x20;
/// errno of a call on a non-blocking descriptor that is not ready.
pub(crate) const EAGAIN: i64 = 11;
/// The base page size: mmap(2) lengths round up to it, and a file page is this big.
pub(crate) const PAGE_SIZE: u64 = 4096;

// The `struct cmsghdr` level and type of an error-queue message, and what a zero-copy
// completion's `struct sock_extended_err` says (include/uapi/linux/errqueue.h).
pub(crate) const SOL_IP: u32 = 0;
pub(crate) const IP_RECVERR: u32 = 11;
pub(crate) const SOL_IPV6: u32 = 41;
pub(crate) const IPV6_RECVERR: u32 = 25;
pub(crate) const SO_EE_ORIGIN_ZEROCOPY: u32 = 5;
pub(crate) const SO_EE_CODE_ZEROCOPY_COPIED: u32 = 1;
