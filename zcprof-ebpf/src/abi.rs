//! The x86-64 syscall ABI as the programs see it: where a syscall's number and arguments sit
//! in the saved registers, the syscall numbers, and the flags and structures of the syscalls
//! the ledger looks into.

use zcprof_common::Syscall;

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
pub(crate) const NR_EXIT: u64 = 60;
pub(crate) const NR_EXIT_GROUP: u64 = 231;
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

/// What a syscall number means to the programs.
pub(crate) enum SyscallNr {
    /// A syscall the ledger counts, by its ledger name.
    Ledger(Syscall),
    /// A syscall that may change the descriptors: cached ones are no longer to be trusted.
    ChangesFds,
    /// Any other syscall.
    Other,
}

/// What syscall number `nr` means to the programs.
pub(crate) fn syscall(nr: u64) -> SyscallNr {
    SyscallNr::Ledger(match nr {
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
            return SyscallNr::ChangesFds;
        }
        _ => return SyscallNr::Other,
    })
}

/// send*(2) flag: send without copying the buffer, if the socket allows it (SO_ZEROCOPY).
pub(crate) const MSG_ZEROCOPY: u64 = 0x400_0000;
/// recvmsg(2) flag: read the socket's error queue, where zero-copy completions arrive.
pub(crate) const MSG_ERRQUEUE: u64 = 0x2000;
/// mmap(2) flag: no file behind the mapping.
pub(crate) const MAP_ANONYMOUS: u64 = 0x20;
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
