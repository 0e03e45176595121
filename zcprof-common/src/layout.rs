//! The kernel's layout as the programs need it: struct offsets and tracepoint prototypes,
//! set from the running kernel's BTF before the programs load.

/// What zcprof does when the running kernel's BTF lacks a [`KernelField`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// zcprof cannot run without it (the fork hook reads it).
    Essential,
    /// Without it the programs cannot tell fd types apart and classify transfers by syscall
    /// alone (`HAVE_BTF` is 0).
    Classify,
    /// Without it a rare case is approximate; the global stays 0.
    BestEffort,
}

/// A kernel struct member the programs read: where its offset goes, and how it is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelField {
    /// The `u64` global in zcprof-ebpf that carries the member's byte offset.
    pub global: &'static str,
    /// The struct, as BTF names it.
    pub st: &'static str,
    /// Member paths to try in order (dotted for nested members); the first found wins.
    pub paths: &'static [&'static str],
    /// What happens without it.
    pub need: Need,
}

/// Calls `$then!` with every kernel struct member the programs read, one line each:
/// `accessor = GLOBAL: "struct", ["member path", ...], Need;`. The single table the kernel
/// crate declares its globals and accessors from, and the loader fills them from: adding a
/// field is one line here plus its use.
#[macro_export]
macro_rules! kernel_fields {
    ($then:ident) => {
        $then! {
            task_pid = OFF_TASK_PID: "task_struct", ["pid"], Essential;
            task_tgid = OFF_TASK_TGID: "task_struct", ["tgid"], Essential;
            task_comm = OFF_TASK_COMM: "task_struct", ["comm"], Essential;
            task_nvcsw = OFF_TASK_NVCSW: "task_struct", ["nvcsw"], Essential;
            task_files = OFF_TASK_FILES: "task_struct", ["files"], Classify;
            task_stack = OFF_TASK_STACK: "task_struct", ["stack"], Classify;
            files_fdt = OFF_FILES_FDT: "files_struct", ["fdt"], Classify;
            fdt_max_fds = OFF_FDT_MAX_FDS: "fdtable", ["max_fds"], Classify;
            fdt_fd = OFF_FDT_FD: "fdtable", ["fd"], Classify;
            file_inode = OFF_FILE_INODE: "file", ["f_inode"], Classify;
            file_flags = OFF_FILE_FLAGS: "file", ["f_flags"], Classify;
            file_mode = OFF_FILE_MODE: "file", ["f_mode"], Classify;
            file_private = OFF_FILE_PRIVATE: "file", ["private_data"], Classify;
            inode_mode = OFF_INODE_MODE: "inode", ["i_mode"], Classify;
            socket_sk = OFF_SOCKET_SK: "socket", ["sk"], Classify;
            // `sk_flags` became a #define for `__sk_common.skc_flags` in 6.x.
            sock_flags = OFF_SOCK_FLAGS: "sock", ["sk_flags", "__sk_common.skc_flags"], Classify;
            sock_family = OFF_SOCK_FAMILY: "sock", ["__sk_common.skc_family"], Classify;
            sock_daddr = OFF_SOCK_DADDR: "sock", ["__sk_common.skc_daddr"], Classify;
            sock_v6_daddr = OFF_SOCK_V6_DADDR: "sock", ["__sk_common.skc_v6_daddr"], Classify;
            kiocb_opcode = OFF_KIOCB_OPCODE: "io_kiocb", ["opcode"], Classify;
            kiocb_file = OFF_KIOCB_FILE: "io_kiocb", ["file"], Classify;
            cqe_res = OFF_CQE_RES: "io_uring_cqe", ["res"], Classify;
            cqe_flags = OFF_CQE_FLAGS: "io_uring_cqe", ["flags"], Classify;
            // The syscall number in a task's saved user registers (where on its kernel stack
            // those are, the programs learn from the first syscall they see).
            pt_regs_orig_ax = OFF_PT_REGS_ORIG_AX: "pt_regs", ["orig_ax"], Classify;
            // `state` before 5.14: read for a switch's `prev_state` where `sched_switch` does
            // not pass it (before 5.18).
            task_state = OFF_TASK_STATE: "task_struct", ["__state", "state"], BestEffort;
            task_signal = OFF_TASK_SIGNAL: "task_struct", ["signal"], BestEffort;
            // A process's identity beside its pid: its leader's start time. Without them
            // two processes that share a pid during one run are one row.
            task_group_leader = OFF_TASK_GROUP_LEADER: "task_struct", ["group_leader"], BestEffort;
            task_start_time = OFF_TASK_START_TIME: "task_struct", ["start_time"], BestEffort;
            // The threads of the process not yet exiting: 0 at the exit of its last thread,
            // which is how `group_dead` is known where `sched_process_exit` does not pass it.
            signal_live = OFF_SIGNAL_LIVE: "signal_struct", ["live"], BestEffort;
            // Attribution (`--by-file`, `--by-peer`): an object's identity and name.
            inode_ino = OFF_INODE_INO: "inode", ["i_ino"], BestEffort;
            inode_sb = OFF_INODE_SB: "inode", ["i_sb"], BestEffort;
            sb_dev = OFF_SB_DEV: "super_block", ["s_dev"], BestEffort;
            file_dentry = OFF_FILE_DENTRY: "file", ["f_path.dentry"], BestEffort;
            dentry_name = OFF_DENTRY_NAME: "dentry", ["d_name.name"], BestEffort;
            dentry_parent = OFF_DENTRY_PARENT: "dentry", ["d_parent"], BestEffort;
            // A mapping's file has no `struct file` at a fault: its inode's first dentry.
            inode_dentries = OFF_INODE_DENTRIES: "inode", ["i_dentry"], BestEffort;
            dentry_alias = OFF_DENTRY_ALIAS: "dentry", ["d_u.d_alias"], BestEffort;
            mapping_host = OFF_MAPPING_HOST: "address_space", ["host"], BestEffort;
            sock_type = OFF_SOCK_TYPE: "sock", ["sk_type"], BestEffort;
            sock_num = OFF_SOCK_NUM: "sock", ["__sk_common.skc_num"], BestEffort;
            sock_dport = OFF_SOCK_DPORT: "sock", ["__sk_common.skc_dport"], BestEffort;
            sock_rcv_saddr = OFF_SOCK_RCV_SADDR: "sock", ["__sk_common.skc_rcv_saddr"], BestEffort;
            sock_v6_rcv_saddr = OFF_SOCK_V6_RCV_SADDR: "sock", ["__sk_common.skc_v6_rcv_saddr"], BestEffort;
        }
    };
}

macro_rules! field_table {
    ($( $accessor:ident = $global:ident: $st:literal, [$($path:literal),+], $need:ident; )*) => {
        /// Every kernel struct member the programs read (see [`kernel_fields!`]).
        pub const KERNEL_FIELDS: &[KernelField] = &[
            $( KernelField {
                global: stringify!($global),
                st: $st,
                paths: &[$($path),+],
                need: Need::$need,
            }, )*
        ];
    };
}
kernel_fields!(field_table);

/// Names of the globals the loader sets that are not struct members: values computed from
/// them, flags and modes. Each is a `u64` global in `zcprof-ebpf`.
pub mod globals {
    /// Start of the 64-byte window of `struct fdtable` read at once (holds max_fds and fd).
    pub const FDT_WINDOW: &str = "OFF_FDT_WINDOW";
    /// Start of the 64-byte window of `struct file` read at once (holds f_inode, f_flags,
    /// f_mode, and private_data where it fits; older kernels keep that one farther away).
    pub const FILE_WINDOW: &str = "OFF_FILE_WINDOW";
    /// Bytes in each window.
    pub const WINDOW_BYTES: u64 = 64;
    /// Value of `enum sock_flags` member `SOCK_ZEROCOPY` (a bit number, not an offset).
    pub const SOCK_ZEROCOPY_BIT: &str = "SOCK_ZEROCOPY_BIT";
    /// Set to 1 to count every process on the host (`zcprof serve`): threads are entered by
    /// the kernel programs on their first syscall or fault instead of by `WATCHED`.
    pub const WATCH_ALL: &str = "WATCH_ALL";
    /// Benchmarks only: set to 1 and every program returns at once, which measures the cost
    /// of the hooks themselves (the floor zcprof's own work is compared with).
    pub const EMPTY_BODIES: &str = "EMPTY_BODIES";
    /// Set to 1 when every [`super::Need::Classify`] member came from BTF; 0 makes the
    /// programs fall back to syscall-only classes (no fd types).
    pub const HAVE_BTF: &str = "HAVE_BTF";
    /// Set to 1 to time syscalls (`--latency`): the sys_enter program stamps each watched
    /// thread's entry and sys_exit adds the time spent to its counters and ledger cells.
    pub const LATENCY: &str = "LATENCY";
    /// Set to 1 to aggregate bytes by user stack (`--folded`, `--flamegraph`, `--pprof`):
    /// sys_exit captures the stack of every data-moving call that moved bytes.
    pub const STACKS: &str = "STACKS_ON";
    /// Set to 1 to attribute bytes to the files and sockets they moved through (`--by-file`,
    /// `--by-peer`).
    pub const ATTRIBUTE: &str = "ATTRIBUTE";
    /// Set to 1 when the backstop programs are attached (kernels that preempt BPF programs):
    /// each primary then marks the thread's entry for the backstop after it.
    pub const BACKSTOPS: &str = "BACKSTOPS";
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
