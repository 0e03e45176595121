//! Struct offsets and constants of the running kernel, set by the loader before load.
//!
//! Rust BPF has no CO-RE relocations, so the loader reads each offset from
//! /sys/kernel/btf/vmlinux and writes it into these globals (`EbpfLoader::override_global`).
//! They live in .rodata, so the verifier sees them as constants.

use aya_ebpf::helpers::bpf_probe_read_kernel;

macro_rules! kernel_globals {
    ($($name:ident),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            static $name: u64 = 0;
        )*
    };
}

kernel_globals!(
    OFF_TASK_PID,
    OFF_TASK_TGID,
    OFF_TASK_COMM,
    OFF_TASK_NVCSW,
    OFF_TASK_FILES,
    OFF_TASK_STACK,
    OFF_FILES_FDT,
    OFF_FDT_MAX_FDS,
    OFF_FDT_FD,
    OFF_FDT_WINDOW,
    OFF_FILE_WINDOW,
    OFF_FILE_INODE,
    OFF_FILE_FLAGS,
    OFF_FILE_MODE,
    OFF_FILE_PRIVATE,
    OFF_INODE_MODE,
    OFF_SOCKET_SK,
    OFF_SOCK_FLAGS,
    OFF_SOCK_FAMILY,
    OFF_SOCK_DADDR,
    OFF_SOCK_V6_DADDR,
    OFF_KIOCB_OPCODE,
    OFF_KIOCB_FILE,
    OFF_CQE_RES,
    OFF_CQE_FLAGS,
    SOCK_ZEROCOPY_BIT,
    OFF_PT_REGS_ORIG_AX,
    HAVE_BTF,
    WATCH_ALL,
    EMPTY_BODIES,
    OFF_TASK_STATE,
    OFF_TASK_SIGNAL,
    OFF_SIGNAL_LIVE,
    PROTO_SWITCH_PREV_STATE,
    PROTO_EXIT_GROUP_DEAD,
    PROTO_URING_CQE,
);

/// Reads a loader-set global. The volatile read keeps the compiler from folding the
/// placeholder 0 into the code.
#[inline(always)]
pub fn global(g: &'static u64) -> u64 {
    // SAFETY: `g` is a valid, aligned static; volatile only defeats constant folding.
    unsafe { core::ptr::read_volatile(g) }
}

/// Offsets by name, for the readers below.
pub mod off {
    use super::*;
    #[inline(always)]
    pub fn task_pid() -> u64 {
        global(&OFF_TASK_PID)
    }
    #[inline(always)]
    pub fn task_tgid() -> u64 {
        global(&OFF_TASK_TGID)
    }
    #[inline(always)]
    pub fn task_comm() -> u64 {
        global(&OFF_TASK_COMM)
    }
    #[inline(always)]
    pub fn task_nvcsw() -> u64 {
        global(&OFF_TASK_NVCSW)
    }
    #[inline(always)]
    pub fn task_files() -> u64 {
        global(&OFF_TASK_FILES)
    }
    #[inline(always)]
    pub fn task_stack() -> u64 {
        global(&OFF_TASK_STACK)
    }
    #[inline(always)]
    pub fn files_fdt() -> u64 {
        global(&OFF_FILES_FDT)
    }
    #[inline(always)]
    pub fn fdt_max_fds() -> u64 {
        global(&OFF_FDT_MAX_FDS)
    }
    #[inline(always)]
    pub fn fdt_fd() -> u64 {
        global(&OFF_FDT_FD)
    }
    #[inline(always)]
    pub fn fdt_window() -> u64 {
        global(&OFF_FDT_WINDOW)
    }
    #[inline(always)]
    pub fn file_window() -> u64 {
        global(&OFF_FILE_WINDOW)
    }
    #[inline(always)]
    pub fn file_inode() -> u64 {
        global(&OFF_FILE_INODE)
    }
    #[inline(always)]
    pub fn file_flags() -> u64 {
        global(&OFF_FILE_FLAGS)
    }
    #[inline(always)]
    pub fn file_mode() -> u64 {
        global(&OFF_FILE_MODE)
    }
    #[inline(always)]
    pub fn file_private() -> u64 {
        global(&OFF_FILE_PRIVATE)
    }
    /// Whether `file.private_data` lies inside the window read at `OFF_FILE_WINDOW`.
    #[inline(always)]
    pub fn file_private_in_window() -> bool {
        let (start, private) = (file_window(), file_private());
        private >= start && private + 8 <= start + crate::files::WINDOW as u64
    }
    #[inline(always)]
    pub fn inode_mode() -> u64 {
        global(&OFF_INODE_MODE)
    }
    #[inline(always)]
    pub fn socket_sk() -> u64 {
        global(&OFF_SOCKET_SK)
    }
    #[inline(always)]
    pub fn sock_flags() -> u64 {
        global(&OFF_SOCK_FLAGS)
    }
    #[inline(always)]
    pub fn sock_family() -> u64 {
        global(&OFF_SOCK_FAMILY)
    }
    #[inline(always)]
    pub fn sock_daddr() -> u64 {
        global(&OFF_SOCK_DADDR)
    }
    #[inline(always)]
    pub fn sock_v6_daddr() -> u64 {
        global(&OFF_SOCK_V6_DADDR)
    }
    #[inline(always)]
    pub fn kiocb_opcode() -> u64 {
        global(&OFF_KIOCB_OPCODE)
    }
    #[inline(always)]
    pub fn kiocb_file() -> u64 {
        global(&OFF_KIOCB_FILE)
    }
    #[inline(always)]
    pub fn cqe_res() -> u64 {
        global(&OFF_CQE_RES)
    }
    #[inline(always)]
    pub fn cqe_flags() -> u64 {
        global(&OFF_CQE_FLAGS)
    }
    #[inline(always)]
    pub fn sock_zerocopy_bit() -> u64 {
        global(&SOCK_ZEROCOPY_BIT)
    }
    #[inline(always)]
    pub fn pt_regs_orig_ax() -> u64 {
        global(&OFF_PT_REGS_ORIG_AX)
    }
    /// Benchmarks only: every program returns at once (the cost floor of the hooks).
    #[inline(always)]
    pub fn empty_bodies() -> bool {
        global(&EMPTY_BODIES) != 0
    }
    #[inline(always)]
    pub fn watch_all() -> bool {
        global(&WATCH_ALL) != 0
    }
    #[inline(always)]
    pub fn have_btf() -> bool {
        global(&HAVE_BTF) != 0
    }
    #[inline(always)]
    pub fn task_state() -> u64 {
        global(&OFF_TASK_STATE)
    }
    #[inline(always)]
    pub fn task_signal() -> u64 {
        global(&OFF_TASK_SIGNAL)
    }
    #[inline(always)]
    pub fn signal_live() -> u64 {
        global(&OFF_SIGNAL_LIVE)
    }
}

/// Which arguments each tracepoint passes on this kernel (see `zcprof_common::prototypes`).
pub mod proto {
    use super::*;
    #[inline(always)]
    pub fn switch_prev_state() -> bool {
        global(&PROTO_SWITCH_PREV_STATE) != 0
    }
    #[inline(always)]
    pub fn exit_group_dead() -> bool {
        global(&PROTO_EXIT_GROUP_DEAD) != 0
    }
    #[inline(always)]
    pub fn uring_cqe() -> bool {
        global(&PROTO_URING_CQE) != 0
    }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, offset: u64) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel never faults: a bad address returns an error.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }.map_err(|e| e as i64)
}
