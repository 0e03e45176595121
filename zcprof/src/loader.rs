//! Loads zcprof's kernel programs, hands them the running kernel's struct offsets, and
//! attaches them. Dropping [`Probes`] detaches everything (links are file descriptors, so the
//! kernel also detaches them if zcprof dies).

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, Stack},
    programs::{
        BtfTracePoint, PerfEvent, RawTracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use zcprof_common::{
    LOST_REASONS, MAP_FREE_SLOTS, MAP_LOST, MAP_THREADS, MAP_TID_SLOT, MAP_TRANSFERS, MAP_URING,
    MAP_WATCH_GEN, MAP_WATCHED, Transfer, TransferKey, UringKey, Watch, offsets,
};

use crate::{
    btf::{Btf, BtfError},
    capability::{self, Capabilities, State},
    thread_table::ThreadTable,
};

/// The compiled kernel programs, built by build.rs.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/zcprof"));

/// Errors loading or attaching the kernel programs.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not root and without CAP_BPF/CAP_PERFMON.
    #[error(
        "loading BPF programs needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE); \
         run zcprof with sudo"
    )]
    NotPermitted,
    /// The kernel rejected the object or a program.
    #[error("the kernel refused to load zcprof's BPF programs: {0}")]
    Load(String),
    /// A hook point is missing in this kernel.
    #[error(
        "cannot attach to tracepoint {name}: {reason}; this kernel lacks it \
         (zcprof needs raw tracepoints, CONFIG_FTRACE_SYSCALLS and perf software events)"
    )]
    Attach { name: String, reason: String },
    /// The tracepoint exists, but the kernel refused zcprof's program on it (it reads an
    /// argument this kernel's prototype lacks, say).
    #[error(
        "the kernel refused zcprof's program on tracepoint {name}({args}): {reason}; zcprof \
         does not handle this kernel's version of it: please report this line with the \
         output of `zcprof doctor`"
    )]
    Refused {
        name: String,
        args: String,
        reason: String,
    },
    /// The kernel's BTF is missing or lacks a struct member zcprof cannot do without.
    #[error("{0}; zcprof needs a kernel built with CONFIG_DEBUG_INFO_BTF")]
    Btf(BtfError),
    /// A map the programs define is missing (a build mismatch).
    #[error("BPF map {0} missing from the programs: rebuild zcprof")]
    Map(&'static str),
}

/// How the programs read the kernel's structs and tracepoint arguments, and what they can
/// count with them.
#[derive(Debug, Clone)]
pub struct KernelLayout {
    /// (global name, value) pairs for `EbpfLoader::override_global`.
    pub globals: Vec<(&'static str, u64)>,
    /// Why BTF could not be used, if it could not; the programs then classify by syscall only.
    pub btf_missing: Option<String>,
    /// The optional raw tracepoints this kernel lacks (or passes other arguments to than the
    /// programs can read): not attached.
    pub skipped: Vec<&'static str>,
    /// What zcprof can count on this kernel.
    pub capabilities: Capabilities,
    /// Each hook's arguments on this kernel (`None`: no such tracepoint), from BTF.
    pub prototypes: Vec<(&'static str, Option<Vec<String>>)>,
}

impl KernelLayout {
    /// Reads the offsets from the running kernel's BTF. The task offsets are essential (the
    /// fork hook needs them); the file, socket and io_uring ones only refine the ledger, and
    /// without them the programs classify by syscall alone.
    pub fn from_kernel() -> Result<Self, LoadError> {
        Self::from_kernel_with(None)
    }

    /// As [`Self::from_kernel`], with tracepoint `.0` looked up as `.1` (the hidden
    /// `--tracepoint-override`: an optional hook renamed to one that does not exist shows how
    /// zcprof degrades on a kernel without it).
    pub fn from_kernel_with(rename: Option<(&str, &str)>) -> Result<Self, LoadError> {
        let btf = Btf::from_kernel().map_err(LoadError::Btf)?;
        let mut globals = Vec::new();
        use offsets::*;
        for (global, st, path) in [
            (TASK_PID, "task_struct", "pid"),
            (TASK_TGID, "task_struct", "tgid"),
            (TASK_COMM, "task_struct", "comm"),
            (TASK_NVCSW, "task_struct", "nvcsw"),
        ] {
            globals.push((global, btf.offset(st, path).map_err(LoadError::Btf)?));
        }
        let mut layout = KernelLayout {
            globals,
            btf_missing: None,
            skipped: Vec::new(),
            capabilities: Capabilities::default(),
            prototypes: HOOKS
                .iter()
                .filter(|h| !matches!(h.kind, HookKind::PerfEvent(_)))
                .map(|h| (h.target, btf.tracepoint_args(h.target)))
                .collect(),
        };
        match Self::classification(&btf) {
            Ok(more) => {
                layout.globals.extend(more);
                layout.globals.push((HAVE_BTF, 1));
            }
            Err(e) => {
                layout.globals.push((HAVE_BTF, 0));
                let why = e.to_string();
                let caps = &mut layout.capabilities;
                caps.set(
                    capability::FD_TYPES,
                    State::Degraded,
                    format!("{why}; transfers are classified by syscall only"),
                );
                caps.set(capability::IO_URING, State::Unavailable, why.clone());
                caps.set(capability::EXIT_SYSCALLS, State::Unavailable, why.clone());
                caps.set(
                    capability::CONTEXT_SWITCHES,
                    State::Degraded,
                    format!("{why}; voluntary or not is told by the task's state"),
                );
                layout.btf_missing = Some(why);
            }
        }
        layout.prototypes(&btf, rename);
        Ok(layout)
    }

    /// Chooses, from each tracepoint's prototype in BTF, which arguments the programs read,
    /// and which optional tracepoints are left out.
    fn prototypes(&mut self, btf: &Btf, rename: Option<(&str, &str)>) {
        use zcprof_common::prototypes::*;
        let args = |tp: &str| match rename {
            Some((from, to)) if from == tp => btf.tracepoint_args(to),
            _ => btf.tracepoint_args(tp),
        };
        // Best effort: without them only the rare cases they serve are approximate.
        let state = btf
            .offset("task_struct", "__state")
            .or_else(|_| btf.offset("task_struct", "state"));
        let signal = btf.offset("task_struct", "signal");
        let live = btf.offset("signal_struct", "live");
        for (global, value) in [
            (offsets::TASK_STATE, &state),
            (offsets::TASK_SIGNAL, &signal),
            (offsets::SIGNAL_LIVE, &live),
        ] {
            self.globals.push((global, *value.as_ref().unwrap_or(&0)));
        }

        let switch_args = args("sched_switch").unwrap_or_default();
        let has_prev_state = switch_args.len() >= 4;
        self.globals
            .push((SWITCH_PREV_STATE, u64::from(has_prev_state)));
        if !has_prev_state && state.is_err() {
            self.capabilities.set(
                capability::CONTEXT_SWITCHES,
                State::Degraded,
                "sched_switch passes no prev_state and BTF has no task_struct state: \
                 a task's switches after its exit may be counted",
            );
        }

        let exit_args = args("sched_process_exit").unwrap_or_default();
        self.globals
            .push((EXIT_GROUP_DEAD, u64::from(exit_args.len() >= 2)));

        // (ctx, req, cqe) or (ctx, req, user_data, res, cflags, ...); older kernels (5.10) pass no
        // request to read the opcode from.
        match args("io_uring_complete") {
            None => {
                self.skip("io_uring_complete");
                self.capabilities.set(
                    capability::IO_URING,
                    State::Unavailable,
                    "this kernel has no io_uring:io_uring_complete tracepoint",
                );
            }
            Some(a) if a.get(2).is_some_and(|t| t == "struct io_uring_cqe *") => {
                self.globals.push((URING_CQE, 1));
            }
            Some(a) if a.len() >= 5 && a[1].ends_with('*') && !a[2].ends_with('*') => {
                self.globals.push((URING_CQE, 0));
            }
            Some(a) => {
                self.skip("io_uring_complete");
                self.capabilities.set(
                    capability::IO_URING,
                    State::Unavailable,
                    format!(
                        "io_uring_complete passes ({}) on this kernel, without the request \
                         that names the operation",
                        a.join(", ")
                    ),
                );
            }
        }
        if !self.globals.iter().any(|(n, _)| *n == URING_CQE) {
            self.globals.push((URING_CQE, 0));
        }

        // Both or neither: either alone would count part of the pages.
        const FILEMAP: [&str; 2] = ["mm_filemap_fault", "mm_filemap_map_pages"];
        if let Some(tp) = FILEMAP.iter().find(|tp| args(tp).is_none()) {
            self.capabilities.set(
                capability::MMAP_FAULT_IN,
                State::Unavailable,
                format!("this kernel has no filemap:{tp} tracepoint (Linux 6.10+)"),
            );
            for tp in FILEMAP {
                self.skip(tp);
            }
        }
    }

    fn skip(&mut self, tracepoint: &'static str) {
        if !self.skipped.contains(&tracepoint) {
            self.skipped.push(tracepoint);
        }
    }

    fn classification(btf: &Btf) -> Result<Vec<(&'static str, u64)>, BtfError> {
        use offsets::*;
        let members: [(&'static str, &str, &[&str]); 20] = [
            (TASK_FILES, "task_struct", &["files"]),
            (TASK_STACK, "task_struct", &["stack"]),
            (FILES_FDT, "files_struct", &["fdt"]),
            (FDT_MAX_FDS, "fdtable", &["max_fds"]),
            (FDT_FD, "fdtable", &["fd"]),
            (FILE_INODE, "file", &["f_inode"]),
            (FILE_FLAGS, "file", &["f_flags"]),
            (FILE_MODE, "file", &["f_mode"]),
            (FILE_PRIVATE, "file", &["private_data"]),
            (INODE_MODE, "inode", &["i_mode"]),
            (SOCKET_SK, "socket", &["sk"]),
            // `sk_flags` became a #define for `__sk_common.skc_flags` in 6.x.
            (SOCK_FLAGS, "sock", &["sk_flags", "__sk_common.skc_flags"]),
            (SOCK_FAMILY, "sock", &["__sk_common.skc_family"]),
            (SOCK_DADDR, "sock", &["__sk_common.skc_daddr"]),
            (SOCK_V6_DADDR, "sock", &["__sk_common.skc_v6_daddr"]),
            (KIOCB_OPCODE, "io_kiocb", &["opcode"]),
            (KIOCB_FILE, "io_kiocb", &["file"]),
            (CQE_RES, "io_uring_cqe", &["res"]),
            (CQE_FLAGS, "io_uring_cqe", &["flags"]),
            (PT_REGS_ORIG_AX, "pt_regs", &["orig_ax"]),
        ];
        let mut globals = Vec::with_capacity(members.len() + 1);
        for (global, st, paths) in members {
            let mut found = None;
            let mut last_err = None;
            for path in paths {
                match btf.offset(st, path) {
                    Ok(off) => {
                        found = Some(off);
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            match (found, last_err) {
                (Some(off), _) => globals.push((global, off)),
                (None, Some(e)) => return Err(e),
                (None, None) => unreachable!("every member has at least one path"),
            }
        }
        let get = |name: &str| globals.iter().find(|(n, _)| *n == name).map(|g| g.1);
        let fdt = window(&[(get(FDT_MAX_FDS), 4), (get(FDT_FD), 8)], "fdtable")?;
        // `private_data` is read from the window only where it fits (recent kernels); older
        // layouts put it far from the others and the programs read it on its own.
        let file = window(
            &[
                (get(FILE_INODE), 8),
                (get(FILE_FLAGS), 4),
                (get(FILE_MODE), 4),
            ],
            "file",
        )?;
        globals.push((FDT_WINDOW, fdt));
        globals.push((FILE_WINDOW, file));
        globals.push((SOCK_ZEROCOPY_BIT, btf.enumerator("SOCK_ZEROCOPY")? as u64));
        Ok(globals)
    }
}

/// The start of a window of [`offsets::WINDOW_BYTES`] that holds every (offset, size) field,
/// so that the kernel program reads them with one helper call.
fn window(fields: &[(Option<u64>, u64)], st: &str) -> Result<u64, BtfError> {
    let unsupported = || BtfError::NoMember(st.to_string(), "fields within 64 bytes".into());
    let start = fields
        .iter()
        .filter_map(|f| f.0)
        .min()
        .ok_or_else(unsupported)?;
    for (off, size) in fields {
        let off = off.ok_or_else(unsupported)?;
        if off - start + size > offsets::WINDOW_BYTES {
            return Err(unsupported());
        }
    }
    Ok(start)
}

/// The loaded and attached programs, and handles on their maps.
pub struct Probes {
    /// Processes watched (tgid -> flags).
    pub watched: HashMap<MapData, u32, Watch>,
    /// Per-thread counters.
    pub threads: ThreadTable,
    /// Per-thread transfer ledger.
    pub transfers: HashMap<MapData, TransferKey, Transfer>,
    /// Per-process io_uring ledger.
    pub uring: PerCpuHashMap<MapData, UringKey, Transfer>,
    /// Events the kernel side could not record.
    pub lost: PerCpuArray<MapData, u64>,
    /// Why fd types are not known, when they are not.
    pub btf_missing: Option<String>,
    /// What zcprof can count on this kernel.
    pub capabilities: Capabilities,
    /// Kernel log records (aya-log), flushed by the collector.
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// Keeps the programs and their links alive.
    _ebpf: Ebpf,
}

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
}

/// Every hook, in attach order: the single list the loader attaches and `zcprof doctor`
/// probes.
pub const HOOKS: [Hook; 10] = [
    Hook {
        program: "sys_exit",
        target: "sys_exit",
        kind: HookKind::BtfTracepoint,
        required: true,
        feeds: "syscalls and every transfer",
    },
    Hook {
        program: "sched_switch",
        target: "sched_switch",
        kind: HookKind::RawTracepoint,
        required: true,
        feeds: "context_switches",
    },
    Hook {
        program: "sched_process_fork",
        target: "sched_process_fork",
        kind: HookKind::RawTracepoint,
        required: true,
        feeds: "following children and new threads",
    },
    Hook {
        program: "sched_process_exec",
        target: "sched_process_exec",
        kind: HookKind::RawTracepoint,
        required: true,
        feeds: "command names at exec",
    },
    Hook {
        program: "sched_process_exit",
        target: "sched_process_exit",
        kind: HookKind::RawTracepoint,
        required: true,
        feeds: "process exit, exit_syscalls",
    },
    Hook {
        program: "mm_filemap_fault",
        target: "mm_filemap_fault",
        kind: HookKind::RawTracepoint,
        required: false,
        feeds: "mmap_fault_in",
    },
    Hook {
        program: "mm_filemap_map_pages",
        target: "mm_filemap_map_pages",
        kind: HookKind::RawTracepoint,
        required: false,
        feeds: "mmap_fault_in",
    },
    Hook {
        program: "io_uring_complete",
        target: "io_uring_complete",
        kind: HookKind::RawTracepoint,
        required: false,
        feeds: "io_uring",
    },
    Hook {
        program: "fault_minor",
        target: "page-faults-min",
        kind: HookKind::PerfEvent(SoftwareEvent::PageFaultsMin),
        required: true,
        feeds: "page_faults",
    },
    Hook {
        program: "fault_major",
        target: "page-faults-maj",
        kind: HookKind::PerfEvent(SoftwareEvent::PageFaultsMaj),
        required: true,
        feeds: "page_faults",
    },
];

/// The hooks of one kind, as (program, target).
fn hooks_of(kind: fn(HookKind) -> bool) -> impl Iterator<Item = (&'static str, &'static str)> {
    HOOKS
        .iter()
        .filter(move |h| kind(h.kind))
        .map(|h| (h.program, h.target))
}

fn permission(e: &dyn std::error::Error) -> bool {
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let s = err.to_string();
        if s.contains("Operation not permitted") || s.contains("Permission denied") {
            return true;
        }
        cur = err.source();
    }
    false
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}

/// What to load the programs for.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// Count every process on the host, not just the watched ones (`zcprof serve`).
    pub watch_all: bool,
    /// Benchmarks only: programs with empty bodies on the same hooks (the cost floor).
    pub empty_bodies: bool,
    /// Attach raw tracepoint program `.0` to tracepoint `.1` instead of its own (a hidden
    /// option that tests the error path of a kernel without a hook).
    pub tracepoint_override: Option<(&'a str, &'a str)>,
    /// Threads tracked at once (default: `MAX_THREADS - 1`).
    pub max_threads: Option<u32>,
}

/// Run statistics of one of zcprof's own kernel programs (kept by the kernel while some
/// process holds a `BPF_ENABLE_STATS` fd).
#[derive(Debug, Clone)]
pub struct ProgramStats {
    /// Program name.
    pub name: String,
    /// Times it ran.
    pub run_count: u64,
    /// Total time it ran, in nanoseconds.
    pub run_time_ns: u64,
}

impl Probes {
    /// Says on stderr what zcprof cannot do on this kernel (call once, after loading).
    pub fn warn_degraded(&self) {
        self.capabilities.warn();
    }

    /// One of the programs' maps, to find out whether the kernel lets zcprof use them once it
    /// has given up its privileges.
    pub fn a_map(&self) -> std::os::fd::BorrowedFd<'_> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        self.lost.map().fd().as_fd()
    }

    /// Tells the kernel programs that threads were entered from user space, so that no CPU
    /// keeps its old word on which thread it runs (`CPU_THREAD`).
    pub fn watched_set_changed(&mut self) -> Result<(), aya::maps::MapError> {
        self.threads.generation_moved()
    }

    /// Run counts and times of zcprof's programs. Works without privileges once loaded: it
    /// asks the kernel about program fds zcprof already holds.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self._ebpf
            .programs()
            .filter_map(|(name, p)| {
                let info = p.info().ok()?;
                Some(ProgramStats {
                    name: name.to_string(),
                    run_count: info.run_count(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                })
            })
            .collect()
    }

    /// How many times the kernel did not run one of zcprof's programs for an event, because
    /// the same program was already running on that CPU (the kernel's recursion guard; its
    /// `recursion_misses`). It happens where the kernel may preempt a BPF program mid-run
    /// (tracepoints are preemptible on Linux 7.x): while one task sits preempted inside a
    /// program, every other task's event on that CPU is skipped. Host-wide: some of those
    /// events may belong to processes zcprof does not watch. 0 on kernels before 5.12, which
    /// do not report it (nor preempt these programs).
    pub fn kernel_skipped(&self) -> u64 {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        self._ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .map(|fd| recursion_misses(fd.as_fd().as_raw_fd()))
            .sum()
    }

    /// Loads and attaches every program.
    pub fn load(options: LoadOptions<'_>) -> Result<Self, LoadError> {
        let tracepoint_override = options.tracepoint_override;
        // Older kernels charge BPF maps to RLIMIT_MEMLOCK.
        let rlim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit reads a valid, initialised struct.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };

        let layout = KernelLayout::from_kernel_with(tracepoint_override)?;
        let mut loader = EbpfLoader::new();
        if let Some(n) = options.max_threads {
            // One more slot than threads: slot 0 means "none".
            let slots = n.saturating_add(1);
            for map in [MAP_THREADS, MAP_TID_SLOT, MAP_FREE_SLOTS] {
                loader.map_max_entries(map, slots);
            }
        }
        for (name, value) in &layout.globals {
            loader.override_global(name, value, true);
        }
        let watch_all = u64::from(options.watch_all);
        loader.override_global(offsets::WATCH_ALL, &watch_all, true);
        let empty_bodies = u64::from(options.empty_bodies);
        loader.override_global(offsets::EMPTY_BODIES, &empty_bodies, true);
        let mut ebpf = loader.load(PROGRAMS).map_err(|e| {
            if permission(&e) {
                LoadError::NotPermitted
            } else {
                LoadError::Load(chain(&e))
            }
        })?;
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
        // Before anything is attached: in watch-all mode the first events already need free
        // slots.
        let threads = {
            let mut take = |name| ebpf.take_map(name).ok_or(LoadError::Map(name));
            let slots = Array::try_from(take(MAP_THREADS)?);
            let tid_slot = HashMap::try_from(take(MAP_TID_SLOT)?);
            let free = Stack::try_from(take(MAP_FREE_SLOTS)?);
            let generation = Array::try_from(take(MAP_WATCH_GEN)?);
            let (slots, tid_slot, free, generation) = (
                slots.map_err(|e| LoadError::Load(chain(&e)))?,
                tid_slot.map_err(|e| LoadError::Load(chain(&e)))?,
                free.map_err(|e| LoadError::Load(chain(&e)))?,
                generation.map_err(|e| LoadError::Load(chain(&e)))?,
            );
            ThreadTable::new(slots, tid_slot, free, generation)
                .map_err(|e| LoadError::Load(chain(&e)))?
        };

        let btf = aya::Btf::from_sys_fs().map_err(|e| LoadError::Load(chain(&e)))?;
        for (prog, tp) in hooks_of(|k| matches!(k, HookKind::BtfTracepoint)) {
            let tp = match tracepoint_override {
                Some((from, to)) if from == tp => to,
                _ => tp,
            };
            let program: &mut BtfTracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| LoadError::Load(format!("program {prog} missing")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| LoadError::Load(chain(&e)))?;
            // Loading names the hook: a kernel without it fails here.
            program.load(tp, &btf).map_err(|e| {
                let reason = chain(&e);
                if permission(&e) {
                    LoadError::NotPermitted
                } else if reason.to_lowercase().contains("unknown btf type")
                    || reason.contains("not found")
                {
                    LoadError::Attach {
                        name: tp.to_string(),
                        reason,
                    }
                } else {
                    LoadError::Load(format!("{prog}: {reason}"))
                }
            })?;
            program.attach().map_err(|e| LoadError::Attach {
                name: tp.to_string(),
                reason: chain(&e),
            })?;
        }
        drop(btf);
        for (prog, tp) in hooks_of(|k| matches!(k, HookKind::RawTracepoint)) {
            if layout.skipped.contains(&tp) {
                continue;
            }
            let tp = match tracepoint_override {
                Some((from, to)) if from == tp => to,
                _ => tp,
            };
            let program: &mut RawTracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| LoadError::Load(format!("program {prog} missing")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| LoadError::Load(chain(&e)))?;
            program.load().map_err(|e| {
                if permission(&e) {
                    LoadError::NotPermitted
                } else {
                    LoadError::Load(format!("{prog}: {}", chain(&e)))
                }
            })?;
            program.attach(tp).map_err(|e| {
                match layout.prototypes.iter().find(|(name, _)| *name == tp) {
                    Some((_, Some(args))) => LoadError::Refused {
                        name: tp.to_string(),
                        args: args.join(", "),
                        reason: chain(&e),
                    },
                    _ => LoadError::Attach {
                        name: tp.to_string(),
                        reason: chain(&e),
                    },
                }
            })?;
        }

        let cpus = aya::util::online_cpus()
            .map_err(|(what, e)| LoadError::Load(format!("{what}: {e}")))?;
        for (prog, event) in HOOKS.iter().filter_map(|h| match h.kind {
            HookKind::PerfEvent(event) => Some((h.program, event)),
            _ => None,
        }) {
            let program: &mut PerfEvent = ebpf
                .program_mut(prog)
                .ok_or_else(|| LoadError::Load(format!("program {prog} missing")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| LoadError::Load(chain(&e)))?;
            program
                .load()
                .map_err(|e| LoadError::Load(format!("{prog}: {}", chain(&e))))?;
            for &cpu in &cpus {
                program
                    .attach(
                        PerfEventConfig::Software(event),
                        PerfEventScope::AllProcessesOneCpu { cpu },
                        SamplePolicy::Period(1),
                        false,
                    )
                    .map_err(|e| LoadError::Attach {
                        name: format!("perf software event {event:?} on cpu {cpu}"),
                        reason: chain(&e),
                    })?;
            }
        }

        let watched = HashMap::try_from(
            ebpf.take_map(MAP_WATCHED)
                .ok_or(LoadError::Map(MAP_WATCHED))?,
        )
        .map_err(|e| LoadError::Load(chain(&e)))?;
        let transfers = HashMap::try_from(
            ebpf.take_map(MAP_TRANSFERS)
                .ok_or(LoadError::Map(MAP_TRANSFERS))?,
        )
        .map_err(|e| LoadError::Load(chain(&e)))?;
        let uring =
            PerCpuHashMap::try_from(ebpf.take_map(MAP_URING).ok_or(LoadError::Map(MAP_URING))?)
                .map_err(|e| LoadError::Load(chain(&e)))?;
        let lost = PerCpuArray::try_from(ebpf.take_map(MAP_LOST).ok_or(LoadError::Map(MAP_LOST))?)
            .map_err(|e| LoadError::Load(chain(&e)))?;
        debug_assert_eq!(LOST_REASONS, 5);
        // Parsing the kernel's BTF (twice: for the offsets and for the BTF tracepoint) peaks at
        // tens of MiB that are free again now; hand them back to the system so a long-running
        // zcprof does not keep them resident.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
        Ok(Probes {
            watched,
            threads,
            transfers,
            uring,
            lost,
            btf_missing: layout.btf_missing,
            capabilities: layout.capabilities,
            logger,
            _ebpf: ebpf,
        })
    }
}

/// `recursion_misses` of the program behind `fd`, from `BPF_OBJ_GET_INFO_BY_FD` (aya does not
/// expose the field). 0 if the kernel's `struct bpf_prog_info` is too old to have it.
fn recursion_misses(fd: std::os::fd::RawFd) -> u64 {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // Offset of `recursion_misses` in `struct bpf_prog_info` (include/uapi/linux/bpf.h, 5.12+).
    const RECURSION_MISSES: usize = 208;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = [0u8; 256];
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: the kernel writes at most `info_len` bytes into `info`, which outlives the call,
    // and updates `info_len` in `attr`, which is valid and writable.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 || (attr.info_len as usize) < RECURSION_MISSES + 8 {
        return 0;
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&info[RECURSION_MISSES..RECURSION_MISSES + 8]);
    u64::from_ne_bytes(word)
}
