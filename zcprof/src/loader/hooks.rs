//! The hooks zcprof attaches its programs to: the single table the loader attaches and
//! `zcprof doctor` probes.

use aya::programs::perf_event::SoftwareEvent;

/// How a hook is attached.
#[derive(Debug, Clone, Copy)]
pub enum HookKind {
    /// A BTF tracepoint: the program reads its arguments with plain loads instead of helper
    /// calls (the hottest hook).
    BtfTracepoint,
    /// A raw tracepoint.
    RawTracepoint,
    /// A perf software event, one per CPU, period 1.
    PerfEvent(SoftwareEvent),
}

impl HookKind {
    /// The word used in messages and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::BtfTracepoint => "btf_tracepoint",
            HookKind::RawTracepoint => "raw_tracepoint",
            HookKind::PerfEvent(_) => "perf_event",
        }
    }
}

/// One hook zcprof attaches a program to.
#[derive(Debug, Clone, Copy)]
pub struct Hook {
    /// The program in zcprof-ebpf.
    pub program: &'static str,
    /// The tracepoint, or the perf event's name.
    pub target: &'static str,
    /// How it is attached.
    pub kind: HookKind,
    /// zcprof cannot run without it; an optional hook the kernel lacks is left out and the
    /// capability it feeds marked unavailable.
    pub required: bool,
    /// What it counts.
    pub feeds: &'static str,
    /// When it is attached: hooks that serve an option only with it (they would cost every
    /// syscall of the host otherwise).
    pub when: When,
    /// The program attached right after it on the same hook where the kernel may preempt BPF
    /// programs (`--backstops`): it counts the events the kernel skipped this one for. None
    /// where the kernel runs the program with preemption off (sched_switch, perf events), and
    /// for io_uring_complete, which may run for a thread that has no entry of its own (an
    /// io-wq worker) and then cannot tell whether its primary ran.
    pub backstop: Option<&'static str>,
}

/// When a hook is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Always.
    Always,
    /// With `--latency`.
    Latency,
    /// Without `--by-file` and `--by-peer`.
    NotAttributing,
    /// With `--by-file` or `--by-peer` (in place of the `NotAttributing` hook on the same event).
    Attributing,
    /// With a stack option (`--folded`, `--flamegraph`, `--pprof`).
    Stacks,
}

/// Every hook, in attach order: the single list the loader attaches and `zcprof doctor`
/// probes.
pub const HOOKS: [Hook; 15] = [
    Hook {
        program: "sys_exit",
        target: "sys_exit",
        kind: HookKind::BtfTracepoint,
        required: true,
        feeds: "syscalls and every transfer",
        when: When::NotAttributing,
        backstop: Some("sys_exit_backstop"),
    },
    Hook {
        program: "sys_exit_attrib",
        target: "sys_exit",
        kind: HookKind::BtfTracepoint,
        required: true,
        feeds: "syscalls and every transfer, files and peers (--by-file, --by-peer)",
        when: When::Attributing,
        backstop: Some("sys_exit_attrib_backstop"),
    },
    Hook {
        program: "sys_enter",
        target: "sys_enter",
        kind: HookKind::BtfTracepoint,
        required: false,
        feeds: "syscall time (--latency)",
        when: When::Latency,
        backstop: Some("sys_enter_backstop"),
    },
    Hook {
        program: "sys_exit_detail",
        target: "sys_exit",
        kind: HookKind::BtfTracepoint,
        required: false,
        feeds: "stacks (--folded, --flamegraph, --pprof)",
        when: When::Stacks,
        backstop: Some("sys_exit_detail_backstop"),
    },
    Hook {
        program: "sched_switch",
        target: "sched_switch",
        kind: HookKind::RawTracepoint,
        required: true,
        feeds: "context_switches",
        when: When::Always,
        backstop: None,
    },
    Hook {
        program: "sched_process_fork",
        target: "sched_process_fork",
        kind: HookKind::RawTracepoint,
        required: true,
        feeds: "following children and new threads",
        when: When::Always,
        backstop: Some("sched_process_fork_backstop"),
    },
    Hook {
        program: "sched_process_exec",
        target: "sched_process_exec",
        kind: HookKind::RawTracepoint,
        required: true,
        feeds: "command names at exec",
        when: When::Always,
        backstop: Some("sched_process_exec_backstop"),
    },
    Hook {
        program: "task_rename",
        target: "task_rename",
        kind: HookKind::RawTracepoint,
        required: true,
        feeds: "thread names after a rename",
        when: When::Always,
        backstop: Some("task_rename_backstop"),
    },
    Hook {
        program: "sched_process_exit",
        target: "sched_process_exit",
        kind: HookKind::RawTracepoint,
        required: true,
        feeds: "process exit, exit_syscalls",
        when: When::Always,
        backstop: Some("sched_process_exit_backstop"),
    },
    Hook {
        program: "mm_filemap_fault",
        target: "mm_filemap_fault",
        kind: HookKind::RawTracepoint,
        required: false,
        feeds: "mmap_fault_in",
        when: When::Always,
        backstop: Some("mm_filemap_fault_backstop"),
    },
    Hook {
        program: "mm_filemap_map_pages",
        target: "mm_filemap_map_pages",
        kind: HookKind::RawTracepoint,
        required: false,
        feeds: "mmap_fault_in",
        when: When::Always,
        backstop: Some("mm_filemap_map_pages_backstop"),
    },
    Hook {
        program: "io_uring_complete",
        target: "io_uring_complete",
        kind: HookKind::RawTracepoint,
        required: false,
        feeds: "io_uring",
        when: When::Always,
        backstop: None,
    },
    Hook {
        program: "fault_minor",
        target: "page-faults-min",
        kind: HookKind::PerfEvent(SoftwareEvent::PageFaultsMin),
        required: true,
        feeds: "page_faults",
        when: When::Always,
        backstop: None,
    },
    Hook {
        program: "fault_major",
        target: "page-faults-maj",
        kind: HookKind::PerfEvent(SoftwareEvent::PageFaultsMaj),
        required: true,
        feeds: "page_faults",
        when: When::Always,
        backstop: None,
    },
    Hook {
        program: "io_uring_queue_async_work",
        target: "io_uring_queue_async_work",
        kind: HookKind::RawTracepoint,
        required: false,
        feeds: "io_uring_punted",
        when: When::Always,
        backstop: Some("io_uring_queue_async_work_backstop"),
    },
];
