//! Loads zcprof's kernel programs, hands them the running kernel's struct globals, and
//! attaches them. Dropping [`Probes`] detaches everything (links are file descriptors, so the
//! kernel also detaches them if zcprof dies).

pub mod backstops;
pub(crate) mod batch;
pub mod hooks;
pub mod layout;
mod limits;
mod maps;
pub use objects::ObjectCounts;
mod objects;
pub mod retired;

pub use self::maps::MapReadError;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf, Stack, StackTraceMap},
    programs::{
        BtfTracePoint, PerfEvent, Program, ProgramError, RawTracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use zcprof_common::{
    MAP_BACKSTOPPED, MAP_DEFERRED, MAP_FREE_SLOTS, MAP_LOST, MAP_OBJECT_NAMES, MAP_OBJECTS,
    MAP_OBJECTS_OTHER, MAP_OBJECTS_RECENT, MAP_RETIRED, MAP_STACK_BYTES, MAP_STACK_OVERFLOW,
    MAP_STACK_ROWS_ADDED, MAP_STACKS, MAP_THREADS, MAP_TID_SLOT, MAP_TRANSFERS, MAP_URING,
    MAP_WATCH_GEN, MAP_WATCHED, Transfer, TransferKey, UringKey, Watch, globals,
};

pub use self::backstops::Backstops;
use self::{
    hooks::{HOOKS, HookKind, When},
    layout::KernelLayout,
    retired::RetiredFeed,
};
use crate::{btf::BtfError, capability::Capabilities, thread_table::ThreadTable};

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
    /// RLIMIT_MEMLOCK is too low on a kernel that charges BPF memory to it, and zcprof cannot
    /// raise it.
    #[error(
        "{what}: RLIMIT_MEMLOCK is {limit} and zcprof cannot raise it (it lacks \
         CAP_SYS_RESOURCE), and Linux before 5.11 charges BPF maps and programs to it: run \
         `ulimit -l unlimited` before zcprof, or set LimitMEMLOCK=infinity in its systemd unit"
    )]
    Memlock { what: String, limit: String },
    /// The kernel had no memory for a map (a memory cgroup's limit, usually).
    #[error(
        "cannot create BPF map {map}{size}: out of memory{limit}; raise the cgroup's memory \
         limit (MemoryMax= in a systemd unit) or lower --max-threads"
    )]
    MapMemory {
        map: String,
        size: String,
        limit: String,
    },
    /// A map the programs define is missing (a build mismatch).
    #[error("BPF map {0} missing from the programs: rebuild zcprof")]
    Map(&'static str),
}

/// The loaded and attached programs, and handles on their maps.
pub struct Probes {
    /// Processes watched (tgid -> flags).
    watched: HashMap<MapData, u32, Watch>,
    /// Per-thread counters.
    threads: ThreadTable,
    /// Per-thread transfer ledger.
    transfers: HashMap<MapData, TransferKey, Transfer>,
    /// Per-process io_uring ledger.
    uring: PerCpuHashMap<MapData, UringKey, Transfer>,
    /// Events the kernel side could not record.
    lost: PerCpuArray<MapData, u64>,
    /// Dead threads' final counts, drained as the kernel writes them.
    retired: RetiredFeed,
    /// Dead threads the kernel left to user space, by reason.
    deferred: PerCpuArray<MapData, u64>,
    /// Events backstop programs counted for a skipped primary (one entry).
    backstopped: PerCpuArray<MapData, u64>,
    /// Bytes per file and socket (`--by-file`, `--by-peer`), when asked for.
    objects: Option<objects::ObjectMaps>,
    /// The process start each pid with io_uring cells was last seen with (`URING` is keyed by
    /// pid alone).
    uring_starts: std::sync::Mutex<std::collections::HashMap<u32, u64>>,
    /// Why fd types are not known, when they are not.
    btf_missing: Option<String>,
    /// What zcprof can count on this kernel.
    capabilities: Capabilities,
    /// Kernel log records (aya-log), flushed by the collector.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The stacks' maps, when stacks are captured.
    stacks: Option<crate::stacks::StackMaps>,
    /// Keeps the programs and their links alive.
    _ebpf: Ebpf,
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
    /// Read the kernel's BTF from this file instead of the running kernel's (a hidden option
    /// that tests the error path of a corrupt or truncated BTF).
    pub btf: Option<&'a Path>,
    /// Bytes of the ring buffer of dead threads (default: `RETIRED_BYTES`); a hidden option
    /// that tests the way round it when it is full.
    pub retired_bytes: Option<u32>,
    /// Time syscalls (`--latency`): attach sys_enter too.
    pub latency: bool,
    /// Aggregate bytes by user stack (`--folded`, `--flamegraph`, `--pprof`).
    pub stacks: bool,
    /// Attribute bytes to files and sockets (`--by-file`, `--by-peer`) in tables of this
    /// many entries.
    pub objects: Option<u32>,
    /// Attach the backstop programs (`--backstops`).
    pub backstops: Backstops,
}

/// How the kernel programs are loaded (run, attach, serve).
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Load the programs with empty bodies: the hooks' own cost (benchmark aid)
    #[arg(long, hide = true)]
    pub empty_programs: bool,
    /// Threads tracked at once (alive ones: a dead thread leaves at once). The kernel allocates
    /// their counters up front, about 2.5 KiB each (at most 262144: 634 MiB)
    #[arg(long, default_value_t = zcprof_common::MAX_THREADS - 1,
          value_parser = clap::value_parser!(u32).range(1..=262_144), value_name = "N")]
    pub max_threads: u32,
    /// Read the kernel's struct layout from this BTF file instead of /sys/kernel/btf/vmlinux
    /// (tests: a corrupt file must give a clear error)
    #[arg(long, hide = true, value_name = "PATH")]
    pub btf: Option<PathBuf>,
    /// Bytes of the kernel's ring buffer of dead threads (a power of two, at least a page):
    /// tests make it too small for any record, so that every dead thread takes the way round
    #[arg(long, hide = true, value_name = "BYTES")]
    pub retired_ring_bytes: Option<u32>,
    /// Time syscalls: the time spent inside each ledger cell's calls (sum and log2
    /// histogram) and in all syscalls per process. Adds a program on every syscall's entry
    #[arg(long)]
    pub latency: bool,
    /// Second programs that count the events the kernel skipped zcprof's programs for, on
    /// kernels that preempt BPF programs (Linux 7.x under preempt=lazy or full)
    #[arg(long, value_enum, default_value_t = Backstops::Auto, value_name = "WHEN")]
    pub backstops: Backstops,
}

impl ProbeArgs {
    /// The loader's options for these arguments (watch-all and test aids left at default).
    pub fn load_options(&self) -> LoadOptions<'_> {
        LoadOptions {
            empty_bodies: self.empty_programs,
            max_threads: Some(self.max_threads),
            btf: self.btf.as_deref(),
            retired_bytes: self.retired_ring_bytes,
            latency: self.latency,
            backstops: self.backstops,
            ..Default::default()
        }
    }
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
    /// The stacks' maps, when loaded with [`LoadOptions::stacks`].
    pub fn stack_maps(&self) -> Option<&crate::stacks::StackMaps> {
        self.stacks.as_ref()
    }

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
    /// `recursion_misses`), less the events a backstop counted instead (`--backstops`). It
    /// happens where the kernel may preempt a BPF program mid-run (tracepoints are
    /// preemptible on Linux 7.x): while one task sits preempted inside a program, every other
    /// task's event on that CPU is skipped. Host-wide: some of those events may belong to
    /// processes zcprof does not watch. 0 on kernels before 5.12, which do not report it (nor
    /// preempt these programs). A backstop's own misses are not counted: the kernel skips it
    /// mostly for events its primary ran for; where it skipped both, the primary's count has
    /// the event.
    pub fn kernel_skipped(&self) -> u64 {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let is_backstop = |name: &str| HOOKS.iter().any(|h| h.backstop == Some(name));
        let misses: u64 = self
            ._ebpf
            .programs()
            .filter(|(name, _)| !is_backstop(name))
            .filter_map(|(_, p)| p.fd().ok())
            .map(|fd| recursion_misses(fd.as_fd().as_raw_fd()))
            .sum();
        let covered: u64 = self
            .backstopped
            .get(&0, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum());
        misses.saturating_sub(covered)
    }

    /// Loads and attaches every program.
    pub fn load(options: LoadOptions<'_>) -> Result<Self, LoadError> {
        let tracepoint_override = options.tracepoint_override;
        limits::raise_memlock();

        let layout = KernelLayout::from_kernel_with(tracepoint_override, options.btf)?;
        let mut loader = EbpfLoader::new();
        if let Some(n) = options.max_threads {
            // One more slot than threads: slot 0 means "none".
            let slots = n.saturating_add(1);
            for map in [MAP_THREADS, MAP_TID_SLOT, MAP_FREE_SLOTS] {
                loader.map_max_entries(map, slots);
            }
        }
        if let Some(bytes) = options.retired_bytes {
            loader.map_max_entries(MAP_RETIRED, bytes);
        }
        // Without attribution the maps must still exist for the programs to load; they stay
        // empty.
        for map in [MAP_OBJECTS, MAP_OBJECT_NAMES] {
            loader.map_max_entries(map, options.objects.unwrap_or(1));
        }
        for (name, value) in &layout.globals {
            loader.override_global(name, value, true);
        }
        let watch_all = u64::from(options.watch_all);
        loader.override_global(globals::WATCH_ALL, &watch_all, true);
        let empty_bodies = u64::from(options.empty_bodies);
        loader.override_global(globals::EMPTY_BODIES, &empty_bodies, true);
        let latency = u64::from(options.latency);
        loader.override_global(globals::LATENCY, &latency, true);
        let stacks = u64::from(options.stacks);
        loader.override_global(globals::STACKS, &stacks, true);
        if !options.stacks {
            // Unused then: not worth their 16 MiB.
            for map in [MAP_STACKS, MAP_STACK_BYTES] {
                loader.map_max_entries(map, 1);
            }
        }
        let attribute = u64::from(options.objects.is_some());
        loader.override_global(globals::ATTRIBUTE, &attribute, true);
        let backstops = options.backstops.wanted() && !options.empty_bodies;
        let backstops_on = u64::from(backstops);
        loader.override_global(globals::BACKSTOPS, &backstops_on, true);
        let slots = options
            .max_threads
            .unwrap_or(zcprof_common::MAX_THREADS - 1)
            .saturating_add(1);
        let mut ebpf = loader
            .load(PROGRAMS)
            .map_err(|e| limits::load_failed(&e, slots))?;
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
        // Drained from before the first hook is attached: dead threads leave the table
        // through it from then on.
        let retired = RingBuf::try_from(
            ebpf.take_map(MAP_RETIRED)
                .ok_or(LoadError::Map(MAP_RETIRED))?,
        )
        .map_err(|e| LoadError::Load(chain(&e)))?;
        let retired = RetiredFeed::start(retired).map_err(|e| {
            LoadError::Load(format!("starting the thread that reads {MAP_RETIRED}: {e}"))
        })?;

        // aya's own parse of the kernel's BTF, which loading a BTF tracepoint program needs:
        // parsed once for every hook and freed as soon as they are attached.
        let btf = aya::Btf::from_sys_fs().map_err(|e| LoadError::Load(chain(&e)))?;
        let cpus = aya::util::online_cpus()
            .map_err(|(what, e)| LoadError::Load(format!("{what}: {e}")))?;
        for hook in &HOOKS {
            let wanted = match hook.when {
                When::Always => true,
                When::Latency => options.latency,
                When::NotAttributing => options.objects.is_none(),
                When::Attributing => options.objects.is_some(),
                When::Stacks => options.stacks,
            };
            if layout.skipped.contains(&hook.target) || !wanted {
                continue;
            }
            let tp = match tracepoint_override {
                Some((from, to)) if from == hook.target => to,
                _ => hook.target,
            };
            // The backstop right after its primary: the kernel runs a tracepoint's programs
            // in the order they were attached, and the backstop reads what the primary left.
            let backstop = hook.backstop.filter(|_| backstops);
            let primary = Some(hook.program)
                .filter(|_| backstop.is_none() || options.backstops != Backstops::Only);
            for program in primary.into_iter().chain(backstop) {
                match hook.kind {
                    HookKind::BtfTracepoint => attach_btf_tracepoint(&mut ebpf, program, tp, &btf)?,
                    HookKind::RawTracepoint => {
                        attach_raw_tracepoint(&mut ebpf, program, tp, &layout.prototypes)?
                    }
                    HookKind::PerfEvent(event) => {
                        attach_perf_event(&mut ebpf, program, event, &cpus)?
                    }
                }
            }
        }
        drop(btf);

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
        let deferred = PerCpuArray::try_from(
            ebpf.take_map(MAP_DEFERRED)
                .ok_or(LoadError::Map(MAP_DEFERRED))?,
        )
        .map_err(|e| LoadError::Load(chain(&e)))?;
        let backstopped = PerCpuArray::try_from(
            ebpf.take_map(MAP_BACKSTOPPED)
                .ok_or(LoadError::Map(MAP_BACKSTOPPED))?,
        )
        .map_err(|e| LoadError::Load(chain(&e)))?;
        let stacks = if options.stacks {
            let mut take = |name| ebpf.take_map(name).ok_or(LoadError::Map(name));
            let traces = StackTraceMap::try_from(take(MAP_STACKS)?);
            let rows = PerCpuHashMap::try_from(take(MAP_STACK_BYTES)?);
            let overflow = PerCpuArray::try_from(take(MAP_STACK_OVERFLOW)?);
            let added = PerCpuArray::try_from(take(MAP_STACK_ROWS_ADDED)?);
            Some(crate::stacks::StackMaps {
                traces: traces.map_err(|e| LoadError::Load(chain(&e)))?,
                rows: rows.map_err(|e| LoadError::Load(chain(&e)))?,
                overflow: overflow.map_err(|e| LoadError::Load(chain(&e)))?,
                added: added.map_err(|e| LoadError::Load(chain(&e)))?,
            })
        } else {
            None
        };
        let objects = if options.objects.is_some() {
            let mut take = |name| ebpf.take_map(name).ok_or(LoadError::Map(name));
            let (bytes, names, other, recent) = (
                take(MAP_OBJECTS)?,
                take(MAP_OBJECT_NAMES)?,
                take(MAP_OBJECTS_OTHER)?,
                take(MAP_OBJECTS_RECENT)?,
            );
            Some(objects::ObjectMaps {
                bytes: PerCpuHashMap::try_from(bytes).map_err(|e| LoadError::Load(chain(&e)))?,
                names: HashMap::try_from(names).map_err(|e| LoadError::Load(chain(&e)))?,
                other: PerCpuArray::try_from(other).map_err(|e| LoadError::Load(chain(&e)))?,
                recent: PerCpuArray::try_from(recent).map_err(|e| LoadError::Load(chain(&e)))?,
            })
        } else {
            None
        };
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
            retired,
            deferred,
            backstopped,
            objects,
            uring_starts: Default::default(),
            btf_missing: layout.btf_missing,
            capabilities: layout.capabilities,
            logger,
            stacks,
            _ebpf: ebpf,
        })
    }
}

/// Program `name` of the loaded object, as the program type its hook needs.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| LoadError::Load(format!("program {name} missing")))?
        .try_into()
        .map_err(|e: ProgramError| LoadError::Load(chain(&e)))
}

/// Loads BTF tracepoint program `prog` for tracepoint `tp` and attaches it.
fn attach_btf_tracepoint(
    ebpf: &mut Ebpf,
    prog: &str,
    tp: &str,
    btf: &aya::Btf,
) -> Result<(), LoadError> {
    let program: &mut BtfTracePoint = program(ebpf, prog)?;
    // Loading names the hook: a kernel without it fails here.
    program.load(tp, btf).map_err(|e| {
        let reason = chain(&e);
        if permission(&e) {
            limits::not_permitted(None)
        } else if reason.to_lowercase().contains("unknown btf type") || reason.contains("not found")
        {
            LoadError::Attach {
                name: tp.to_string(),
                reason,
            }
        } else {
            refused(prog, &e)
        }
    })?;
    program.attach().map_err(|e| LoadError::Attach {
        name: tp.to_string(),
        reason: chain(&e),
    })?;
    Ok(())
}

/// Loads raw tracepoint program `prog` and attaches it to `tp`; `prototypes` (from BTF) tell a
/// tracepoint the kernel lacks from one whose arguments the kernel refused.
fn attach_raw_tracepoint(
    ebpf: &mut Ebpf,
    prog: &str,
    tp: &str,
    prototypes: &[(&'static str, Option<Vec<String>>)],
) -> Result<(), LoadError> {
    let program: &mut RawTracePoint = program(ebpf, prog)?;
    program.load().map_err(|e| {
        if permission(&e) {
            limits::not_permitted(None)
        } else {
            refused(prog, &e)
        }
    })?;
    program
        .attach(tp)
        .map_err(|e| match prototypes.iter().find(|(name, _)| *name == tp) {
            Some((_, Some(args))) => LoadError::Refused {
                name: tp.to_string(),
                args: args.join(", "),
                reason: chain(&e),
            },
            _ => LoadError::Attach {
                name: tp.to_string(),
                reason: chain(&e),
            },
        })?;
    Ok(())
}

/// Loads perf event program `prog` and attaches it to software event `event` on every CPU.
fn attach_perf_event(
    ebpf: &mut Ebpf,
    prog: &str,
    event: SoftwareEvent,
    cpus: &[u32],
) -> Result<(), LoadError> {
    let program: &mut PerfEvent = program(ebpf, prog)?;
    program.load().map_err(|e| refused(prog, &e))?;
    for &cpu in cpus {
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
    Ok(())
}

fn permission(e: &dyn std::error::Error) -> bool {
    // The verifier refuses a program with EACCES too; a load that got as far as its log failed
    // on the program, not on privileges.
    if verifier_log(&chain(e)).is_some() {
        return false;
    }
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

/// The verifier's log in an error's text, if it has one.
fn verifier_log(text: &str) -> Option<&str> {
    let (_, log) = text.split_once("Verifier output:")?;
    let log = log.trim();
    (!log.is_empty()).then_some(log)
}

/// Why program `prog` did not load: the error, and of a verifier's log its last lines (where
/// it says what it refused; the whole log runs to thousands of lines).
fn refused(prog: &str, e: &dyn std::error::Error) -> LoadError {
    const TAIL: usize = 30;
    let text = chain(e);
    match verifier_log(&text) {
        Some(log) => {
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(TAIL)..].join("\n");
            LoadError::Load(format!(
                "the kernel's verifier refused program {prog}; the end of its log:\n{tail}"
            ))
        }
        None => LoadError::Load(format!("{prog}: {text}")),
    }
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
