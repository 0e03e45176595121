//! The kernel's layout as the programs need it: struct offsets and tracepoint prototypes,
//! set from the running kernel's BTF before the programs load.

/// Names of the kernel-struct offsets zcprof reads, set from the running kernel's BTF before
/// the programs load. Each is a `u64` global in `zcprof-ebpf` (byte offset of the member).
pub mod offsets {
    /// `task_struct.pid`
    pub const TASK_PID: &str = "OFF_TASK_PID";
    /// `task_struct.tgid`
    pub const TASK_TGID: &str = "OFF_TASK_TGID";
    /// `task_struct.comm`
    pub const TASK_COMM: &str = "OFF_TASK_COMM";
    /// `task_struct.nvcsw`
    pub const TASK_NVCSW: &str = "OFF_TASK_NVCSW";
    /// `task_struct.files`
    pub const TASK_FILES: &str = "OFF_TASK_FILES";
    /// `files_struct.fdt`
    pub const FILES_FDT: &str = "OFF_FILES_FDT";
    /// `fdtable.max_fds`
    pub const FDT_MAX_FDS: &str = "OFF_FDT_MAX_FDS";
    /// `fdtable.fd`
    pub const FDT_FD: &str = "OFF_FDT_FD";
    /// Start of the 64-byte window of `struct fdtable` read at once (holds max_fds and fd).
    pub const FDT_WINDOW: &str = "OFF_FDT_WINDOW";
    /// Start of the 64-byte window of `struct file` read at once (holds f_inode, f_flags,
    /// f_mode, and private_data where it fits; older kernels keep that one farther away).
    pub const FILE_WINDOW: &str = "OFF_FILE_WINDOW";
    /// Bytes in each window.
    pub const WINDOW_BYTES: u64 = 64;
    /// `file.f_inode`
    pub const FILE_INODE: &str = "OFF_FILE_INODE";
    /// `file.f_flags`
    pub const FILE_FLAGS: &str = "OFF_FILE_FLAGS";
    /// `file.f_mode`
    pub const FILE_MODE: &str = "OFF_FILE_MODE";
    /// `file.private_data`
    pub const FILE_PRIVATE: &str = "OFF_FILE_PRIVATE";
    /// `inode.i_mode`
    pub const INODE_MODE: &str = "OFF_INODE_MODE";
    /// `socket.sk`
    pub const SOCKET_SK: &str = "OFF_SOCKET_SK";
    /// `sock.sk_flags` (holds `SOCK_ZEROCOPY`)
    pub const SOCK_FLAGS: &str = "OFF_SOCK_FLAGS";
    /// `sock.__sk_common.skc_family`
    pub const SOCK_FAMILY: &str = "OFF_SOCK_FAMILY";
    /// `sock.__sk_common.skc_daddr`
    pub const SOCK_DADDR: &str = "OFF_SOCK_DADDR";
    /// `sock.__sk_common.skc_v6_daddr`
    pub const SOCK_V6_DADDR: &str = "OFF_SOCK_V6_DADDR";
    /// `io_kiocb.opcode`
    pub const KIOCB_OPCODE: &str = "OFF_KIOCB_OPCODE";
    /// `io_kiocb.file`
    pub const KIOCB_FILE: &str = "OFF_KIOCB_FILE";
    /// `io_uring_cqe.res`
    pub const CQE_RES: &str = "OFF_CQE_RES";
    /// `io_uring_cqe.flags`
    pub const CQE_FLAGS: &str = "OFF_CQE_FLAGS";
    /// `task_struct.stack`
    pub const TASK_STACK: &str = "OFF_TASK_STACK";
    /// `pt_regs.orig_ax`: the syscall number in a task's saved user registers (where on its
    /// kernel stack those are, the programs learn from the first syscall they see).
    pub const PT_REGS_ORIG_AX: &str = "OFF_PT_REGS_ORIG_AX";
    /// Value of `enum sock_flags` member `SOCK_ZEROCOPY` (a bit number, not an offset).
    pub const SOCK_ZEROCOPY_BIT: &str = "SOCK_ZEROCOPY_BIT";
    /// Set to 1 to count every process on the host (`zcprof serve`): threads are entered by
    /// the kernel programs on their first syscall or fault instead of by `WATCHED`.
    pub const WATCH_ALL: &str = "WATCH_ALL";
    /// Benchmarks only: set to 1 and every program returns at once, which measures the cost
    /// of the hooks themselves (the floor zcprof's own work is compared with).
    pub const EMPTY_BODIES: &str = "EMPTY_BODIES";
    /// Set to 1 when every offset above came from BTF; 0 makes the programs fall back to
    /// syscall-only classes (no fd types).
    pub const HAVE_BTF: &str = "HAVE_BTF";
    /// `task_struct.__state` (`state` before 5.14): read for a switch's `prev_state` where
    /// `sched_switch` does not pass it (before 5.18).
    pub const TASK_STATE: &str = "OFF_TASK_STATE";
    /// `task_struct.signal`
    pub const TASK_SIGNAL: &str = "OFF_TASK_SIGNAL";
    /// `signal_struct.live`: the threads of the process not yet exiting; 0 at the exit of its
    /// last thread, which is how `group_dead` is known where `sched_process_exit` does not
    /// pass it (6.12 and older).
    pub const SIGNAL_LIVE: &str = "OFF_SIGNAL_LIVE";
}

/// Names of the globals that tell the programs which arguments a tracepoint passes on this
/// kernel (read from its BTF prototype, never guessed from the version: distributions
/// backport). Each is a `u64` global in `zcprof-ebpf`, 1 or 0.
pub mod prototypes {
    /// `sched_switch(bool preempt, prev, next, unsigned int prev_state)`: 1 when the 4th
    /// argument is there (5.18+); else the programs read `prev`'s state.
    pub const SWITCH_PREV_STATE: &str = "PROTO_SWITCH_PREV_STATE";
    /// `sched_process_exit(p, bool group_dead)`: 1 when the 2nd argument is there; else the
    /// programs read `p->signal->live`.
    pub const EXIT_GROUP_DEAD: &str = "PROTO_EXIT_GROUP_DEAD";
    /// `io_uring_complete(ctx, req, struct io_uring_cqe *cqe)`: 1 when the 3rd argument is the
    /// completion (6.18 has it); 0 when the completion comes as arguments
    /// `(ctx, req, u64 user_data, int res, unsigned cflags, ...)` (6.0 to 6.12 at least).
    /// Older kernels pass no request, so the opcode is unknown: not attached there.
    pub const URING_CQE: &str = "PROTO_URING_CQE";
}
