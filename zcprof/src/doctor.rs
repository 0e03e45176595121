//! `zcprof doctor`: can zcprof run on this host, and how well? Checks the kernel, its BTF,
//! zcprof's privileges, RLIMIT_MEMLOCK, every hook and BPF feature zcprof uses, loads and
//! attaches the real programs for a moment (root only) and reports each capability, with what
//! to do about every problem. Each check asks the kernel itself (BTF, `bpf()`,
//! `perf_event_open()`), not a table of kernel versions.

use std::{io, time::Instant};

use aya::{
    maps::MapType,
    programs::{ProgramError, ProgramType, perf_event::SoftwareEvent},
    sys::{SyscallError, is_map_supported, is_program_supported},
    util::KernelVersion,
};
use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use serde::Serialize;

use crate::{
    btf::{Btf, VMLINUX_BTF},
    capability::{Capabilities, KINDS, State},
    cli::DoctorArgs,
    loader::{HOOKS, HookKind, KernelLayout, LoadOptions, Probes},
    privileges,
    report::bytes,
};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As zcprof needs it.
    Ok,
    /// zcprof runs, but something is counted less well or a safety measure is off.
    Degraded,
    /// Not there.
    Missing,
    /// Not probed: the probe itself needs privileges zcprof does not have.
    Unknown,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Degraded => "degraded",
            Verdict::Missing => "missing",
            Verdict::Unknown => "unknown",
        }
    }
}

/// A check with a verdict and what was found.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub verdict: Verdict,
    pub detail: String,
}

/// The end-to-end probe: zcprof's real programs loaded, attached and detached.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub verdict: Verdict,
    /// What happened; for a failure, the error with the verifier's log cut to its verdict.
    pub detail: String,
    /// The whole error, verifier log included, when loading failed.
    pub error: Option<String>,
}

/// Who zcprof runs as, and whether that is enough.
#[derive(Debug, Clone, Serialize)]
pub struct Privileges {
    pub verdict: Verdict,
    /// Effective uid.
    pub uid: u32,
    pub root: bool,
    /// The effective capability set (CapEff), hex.
    pub cap_eff: String,
    /// Which of CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE the effective set lacks.
    pub missing: Vec<&'static str>,
    /// Whether zcprof gives up every capability after loading (false: it keeps CAP_BPF,
    /// because the kernel refuses BPF fds to processes without it; `None`: not root, so it
    /// does not change user at all).
    pub can_drop: Option<bool>,
    /// `can_drop` was found out by trying (as zcprof does at the drop), not from the kernel
    /// version.
    pub drop_tried: bool,
    /// `kernel.unprivileged_bpf_disabled`, if readable.
    pub unprivileged_bpf_disabled: Option<u32>,
    pub detail: String,
}

/// RLIMIT_MEMLOCK as zcprof found it (it raises it before loading).
#[derive(Debug, Clone, Serialize)]
pub struct Memlock {
    pub verdict: Verdict,
    /// Soft limit in bytes (`None`: unlimited).
    pub current: Option<u64>,
    /// Hard limit in bytes (`None`: unlimited).
    pub max: Option<u64>,
    pub detail: String,
}

/// One hook zcprof attaches to.
#[derive(Debug, Clone, Serialize)]
pub struct Hook {
    pub name: &'static str,
    /// `btf_tracepoint`, `raw_tracepoint` or `perf_event`.
    pub kind: &'static str,
    /// Whether this kernel has it (`None`: could not be probed without privileges).
    pub present: Option<bool>,
    /// The tracepoint's arguments from BTF (`btf_trace_<name>`), as C types.
    pub prototype: Option<Vec<String>>,
    /// zcprof cannot run without it (the others only feed one capability).
    pub required: bool,
    pub verdict: Verdict,
    pub detail: String,
}

/// Whether the kernel supports one BPF map or program type.
#[derive(Debug, Clone, Serialize)]
pub struct Support {
    pub name: &'static str,
    /// `None`: could not be probed without privileges.
    pub supported: Option<bool>,
    pub verdict: Verdict,
    pub detail: String,
}

/// tracefs: not used by zcprof, reported for bpftrace and perf users.
#[derive(Debug, Clone, Serialize)]
pub struct Tracefs {
    pub mounted: bool,
    /// Where it is mounted.
    pub path: Option<String>,
    /// Always false: zcprof attaches through BTF and raw tracepoints.
    pub needed_by_zcprof: bool,
    pub detail: String,
}

/// Something that keeps zcprof from running, or from counting exactly, and what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

/// The whole report (`--json` prints it as it is).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    /// `uname -m`.
    pub arch: String,
    pub btf: Item,
    pub privileges: Privileges,
    pub memlock: Memlock,
    pub hooks: Vec<Hook>,
    pub map_types: Vec<Support>,
    pub program_types: Vec<Support>,
    /// Loading and attaching the real programs, then detaching them.
    pub load: Load,
    /// The same as `zcprof run --json`'s `capabilities`.
    pub capabilities: Capabilities,
    pub tracefs: Tracefs,
    /// zcprof can run here (perhaps degraded).
    pub can_run: bool,
    pub problems: Vec<Problem>,
}

/// `zcprof doctor`: prints the report; 0 when zcprof can run here, 1 when it cannot.
pub fn doctor(args: &DoctorArgs) -> anyhow::Result<i32> {
    let report = examine();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(if report.can_run { 0 } else { 1 })
}

/// The user run, attach and serve become by default (`--user`).
const DEFAULT_USER: &str = "nobody";

/// Capability bits (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Collects the findings; `fatal` once something keeps zcprof from running.
#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    fatal: bool,
}

impl Findings {
    fn problem(&mut self, fatal: bool, what: impl Into<String>, fix: impl Into<String>) {
        self.fatal |= fatal;
        self.problems.push(Problem {
            what: what.into(),
            fix: fix.into(),
        });
    }
}

/// Runs every check.
pub fn examine() -> Report {
    let mut f = Findings::default();
    let (kernel, arch) = uname();
    let version = KernelVersion::current().ok();
    let at_least = |major, minor| version.is_some_and(|v| v >= KernelVersion::new(major, minor, 0));
    if arch != "x86_64" {
        f.problem(
            true,
            format!("architecture {arch}: zcprof supports x86-64 only"),
            "run zcprof on an x86-64 host",
        );
    }

    // Read before the load probe below raises it.
    let memlock = memlock(&mut f, at_least(5, 11));
    let mut privileges = privileges(&mut f, at_least(5, 11));

    let (btf_item, btf) = btf(&mut f);
    let hooks = hooks(&mut f, btf.as_ref());
    drop(btf);
    let probe_priv = privileges.missing.iter().all(|&m| m == "CAP_SYS_RESOURCE");
    let map_types = map_types(&mut f);
    let program_types = program_types(&mut f);

    let capabilities = match KernelLayout::from_kernel() {
        Ok(layout) => layout.capabilities,
        Err(e) => {
            if btf_item.verdict == Verdict::Ok {
                // BTF parses but lacks what zcprof cannot do without.
                f.problem(
                    true,
                    format!("zcprof cannot read this kernel's layout: {e}"),
                    "report this line with the output of `zcprof doctor --json`",
                );
            }
            let mut caps = Capabilities::default();
            for k in KINDS {
                caps.set(k, State::Unavailable, e.to_string());
            }
            caps
        }
    };
    for c in capabilities.impaired() {
        let kind = KINDS.iter().find(|k| k.name == c.name);
        f.problem(
            false,
            format!(
                "capability {} {}: {}; affects {}",
                c.name,
                c.state.as_str(),
                c.why,
                kind.map_or("", |k| k.feeds)
            ),
            format!(
                "counting it exactly needs {}",
                kind.map_or("a newer kernel", |k| k.needs)
            ),
        );
    }

    let (load, drop_tried) = if probe_priv {
        load(&mut f)
    } else {
        let load = Load {
            verdict: Verdict::Unknown,
            detail: "not probed: needs root to probe loading".into(),
            error: None,
        };
        (load, None)
    };
    drop_after_load(&mut f, &mut privileges, drop_tried, at_least(6, 5));
    let tracefs = tracefs();
    Report {
        kernel,
        arch,
        btf: btf_item,
        privileges,
        memlock,
        hooks,
        map_types,
        program_types,
        load,
        capabilities,
        tracefs,
        can_run: !f.fatal,
        problems: f.problems,
    }
}

/// (release, machine) from uname(2).
fn uname() -> (String, String) {
    // SAFETY: uname fills the struct we pass; its fields are NUL-terminated strings.
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return ("unknown".into(), "unknown".into());
        }
        let s = |f: &[libc::c_char]| {
            std::ffi::CStr::from_ptr(f.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        (s(&u.release), s(&u.machine))
    }
}

fn btf(f: &mut Findings) -> (Item, Option<Btf>) {
    let size = std::fs::metadata(VMLINUX_BTF).map(|m| m.len()).ok();
    let start = Instant::now();
    match Btf::from_kernel() {
        Ok(btf) => (
            Item {
                verdict: Verdict::Ok,
                detail: format!(
                    "{VMLINUX_BTF}: {}, parsed in {} ms",
                    bytes(size.unwrap_or(0)),
                    start.elapsed().as_millis()
                ),
            },
            Some(btf),
        ),
        Err(e) => {
            f.problem(
                true,
                format!("no usable kernel BTF: {e}"),
                "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (zcprof reads struct layouts \
                 and tracepoint prototypes from it)",
            );
            (
                Item {
                    verdict: Verdict::Missing,
                    detail: e.to_string(),
                },
                None,
            )
        }
    }
}

fn privileges(f: &mut Findings, since_5_11: bool) -> Privileges {
    let creds = privileges::current();
    let uid = creds.uids.get(1).copied().unwrap_or(u32::MAX);
    let eff = creds
        .caps
        .iter()
        .find(|(n, _)| n == "CapEff")
        .map_or(0, |c| c.1);
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (and is all there is before 5.8).
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_SYS_RESOURCE) {
        missing.push("CAP_SYS_RESOURCE");
    }
    let essential: Vec<_> = missing
        .iter()
        .copied()
        .filter(|&m| m != "CAP_SYS_RESOURCE")
        .collect();
    let root = uid == 0;
    let who = if root {
        "root".to_string()
    } else {
        format!("{} (uid {uid})", privileges::user_name(uid))
    };
    let mut verdict = Verdict::Ok;
    let mut detail = if missing.is_empty() {
        format!("{who}: CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE")
    } else {
        format!("{who}: lacks {}", missing.join(", "))
    };
    if !essential.is_empty() {
        verdict = Verdict::Missing;
        let mut needed = vec!["CAP_BPF", "CAP_PERFMON"];
        if !since_5_11 {
            needed.push("CAP_SYS_RESOURCE");
        }
        let lacks: Vec<_> = missing
            .iter()
            .filter(|m| needed.contains(m))
            .copied()
            .collect();
        let setcap: Vec<_> = needed.iter().map(|c| c.to_lowercase()).collect();
        f.problem(
            true,
            format!(
                "not privileged to load BPF programs: {who} lacks {}",
                lacks.join(", ")
            ),
            format!(
                "run zcprof as root (sudo), or give it {} (setcap {}+ep zcprof)",
                needed.join(" and "),
                setcap.join(",")
            ),
        );
    } else if missing.contains(&"CAP_SYS_RESOURCE") {
        if since_5_11 {
            detail.push_str(" (not needed on Linux 5.11+)");
        } else {
            verdict = Verdict::Degraded;
            // The memlock check says what it means for this host's limit.
            detail.push_str(" (needed before Linux 5.11: see memlock)");
        }
    }

    let sysctl = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if !root {
        detail.push_str(
            "; keeps its capabilities after loading (only root changes user; serve needs \
             --no-drop-privileges)",
        );
    }
    Privileges {
        verdict,
        uid,
        root,
        cap_eff: format!("{eff:016x}"),
        missing,
        can_drop: None,
        drop_tried: false,
        unprivileged_bpf_disabled: sysctl,
        detail,
    }
}

/// Whether root zcprof can give up every capability once loaded, as `privileges::drop_to`
/// decides it: `tried` is the answer of its own test (a child that became the default --user
/// read one of the loaded maps), when the programs could be loaded; otherwise the kernel
/// version and `kernel.unprivileged_bpf_disabled` tell.
fn drop_after_load(f: &mut Findings, p: &mut Privileges, tried: Option<bool>, since_6_5: bool) {
    if !p.root {
        return;
    }
    let sysctl = p
        .unprivileged_bpf_disabled
        .map_or("unreadable".to_string(), |v| v.to_string());
    let can = tried.unwrap_or(since_6_5 || p.unprivileged_bpf_disabled == Some(0));
    p.can_drop = Some(can);
    p.drop_tried = tried.is_some();
    let how = match (tried, since_6_5) {
        (Some(_), _) => "tried: nobody read a loaded map".to_string(),
        (None, true) => "Linux 6.5+".to_string(),
        (None, false) => format!("kernel.unprivileged_bpf_disabled = {sysctl}"),
    };
    if can {
        p.detail.push_str(&format!(
            "; gives up every capability after loading ({how})"
        ));
        return;
    }
    if p.verdict == Verdict::Ok {
        p.verdict = Verdict::Degraded;
    }
    p.detail.push_str(&format!(
        "; keeps CAP_BPF after loading: the kernel refuses BPF fds to processes without it \
         ({how})"
    ));
    f.problem(
        false,
        format!(
            "zcprof keeps CAP_BPF after loading: this kernel refuses the BPF fds zcprof holds \
             to a process without it (kernel.unprivileged_bpf_disabled = {sysctl}, which \
             Linux before 6.5 applies to every bpf() call)"
        ),
        "to give up every capability, set kernel.unprivileged_bpf_disabled = 0 where it is 2 \
         (1 lasts until reboot), or use Linux 6.5+",
    );
}

fn memlock(f: &mut Findings, since_5_11: bool) -> Memlock {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    let lim = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    let (current, max) = (lim(rl.rlim_cur), lim(rl.rlim_max));
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), bytes);
    let limits = format!("{} (max {})", show(current), show(max));
    let mut verdict = Verdict::Ok;
    let detail = if since_5_11 {
        format!("{limits}; unused by BPF maps since Linux 5.11 (memory cgroup)")
    } else if current.is_none() {
        format!("{limits}; this kernel charges BPF maps to it")
    } else {
        let eff = privileges::current()
            .caps
            .iter()
            .find(|(n, _)| n == "CapEff")
            .map_or(0, |c| c.1);
        if max.is_none() || eff & (1u64 << CAP_SYS_RESOURCE) != 0 {
            format!("{limits}; this kernel charges BPF maps to it; zcprof raises it to unlimited")
        } else {
            verdict = Verdict::Degraded;
            f.problem(
                false,
                format!(
                    "RLIMIT_MEMLOCK is {limits} and cannot be raised without CAP_SYS_RESOURCE: \
                     this kernel charges BPF maps to it (~27 MiB at the default --max-threads)"
                ),
                "raise it (ulimit -l unlimited, LimitMEMLOCK=infinity in a systemd unit) or give \
                 zcprof CAP_SYS_RESOURCE; a smaller --max-threads needs less",
            );
            format!("{limits}; this kernel charges BPF maps to it and zcprof cannot raise it")
        }
    };
    Memlock {
        verdict,
        current,
        max,
        detail,
    }
}

fn hooks(f: &mut Findings, btf: Option<&Btf>) -> Vec<Hook> {
    HOOKS
        .iter()
        .map(|hook| {
            let (name, kind, required, feeds) =
                (hook.target, hook.kind.as_str(), hook.required, hook.feeds);
            let (present, prototype, how) = if let HookKind::PerfEvent(event) = hook.kind {
                let config = match event {
                    SoftwareEvent::PageFaultsMaj => PERF_COUNT_SW_PAGE_FAULTS_MAJ,
                    _ => PERF_COUNT_SW_PAGE_FAULTS_MIN,
                };
                let (present, how) = perf_software_event(config);
                (present, None, how)
            } else {
                match btf {
                    None => (None, None, "not probed: no BTF".to_string()),
                    Some(btf) => match btf.tracepoint_args(name) {
                        Some(args) => {
                            let how = format!("({})", args.join(", "));
                            (Some(true), Some(args), how)
                        }
                        None => (Some(false), None, format!("BTF has no btf_trace_{name}")),
                    },
                }
            };
            let verdict = match (present, required) {
                (Some(true), _) => Verdict::Ok,
                (None, _) => Verdict::Unknown,
                (Some(false), true) => Verdict::Missing,
                (Some(false), false) => Verdict::Degraded,
            };
            if present == Some(false) && required {
                let fix = match kind {
                    "btf_tracepoint" => {
                        "zcprof needs BTF tracepoints (Linux 5.5+) and CONFIG_FTRACE_SYSCALLS=y"
                    }
                    "perf_event" => "zcprof needs CONFIG_PERF_EVENTS=y (perf software events)",
                    _ => "zcprof needs raw tracepoints (Linux 4.17+) on the sched tracepoints",
                };
                f.problem(
                    true,
                    format!("this kernel has no {} {name}", kind.replace('_', " ")),
                    fix,
                );
            }
            // A missing optional hook is one capability's problem, reported there.
            Hook {
                name,
                kind,
                present,
                prototype,
                required,
                verdict,
                detail: format!("{how}; feeds {feeds}"),
            }
        })
        .collect()
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_PAGE_FAULTS_MIN: u64 = 5;
const PERF_COUNT_SW_PAGE_FAULTS_MAJ: u64 = 6;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// The first 64 bytes of `struct perf_event_attr` (PERF_ATTR_SIZE_VER0).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// Bit 0 `disabled`, bit 5 `exclude_kernel`, …
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

fn perf_open(config: u64, pid: i32, cpu: i32, exclude_kernel: bool) -> io::Result<()> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        // Disabled: it never counts; it exists for the moment it takes to close it.
        flags: 1 | if exclude_kernel { 1 << 5 } else { 0 },
        ..Default::default()
    };
    // SAFETY: perf_event_open reads a valid attr of the size it states; the fd it returns is
    // closed at once.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            pid,
            cpu,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is the descriptor perf_event_open just returned.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Opens (and closes) the software event as zcprof does (every process, CPU 0); without
/// CAP_PERFMON, for this process only, which proves that the event exists.
fn perf_software_event(config: u64) -> (Option<bool>, String) {
    let denied = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM));
    match perf_open(config, -1, 0, false) {
        Ok(()) => (
            Some(true),
            "opened on CPU 0 for all processes, closed".into(),
        ),
        Err(e) if denied(&e) => match perf_open(config, 0, -1, true) {
            Ok(()) => (
                Some(true),
                "opened for this process (all processes need CAP_PERFMON), closed".into(),
            ),
            Err(e) if denied(&e) => (None, format!("not probed: needs CAP_PERFMON ({e})")),
            Err(e) => (Some(false), format!("perf_event_open: {e}")),
        },
        Err(e) => (Some(false), format!("perf_event_open: {e}")),
    }
}

fn denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

fn support(
    f: &mut Findings,
    name: &'static str,
    what: &str,
    result: Result<bool, io::Error>,
) -> Support {
    let (supported, verdict, detail) = match result {
        Ok(true) => (Some(true), Verdict::Ok, "created, closed".to_string()),
        Ok(false) => {
            f.problem(
                true,
                format!("this kernel does not support BPF {what} {name}"),
                "zcprof needs Linux 5.8+ (BPF ring buffer, CAP_BPF) with CONFIG_BPF_SYSCALL=y",
            );
            (Some(false), Verdict::Missing, "not supported".to_string())
        }
        Err(e) if denied(&e) => (
            None,
            Verdict::Unknown,
            format!("not probed: needs CAP_BPF ({e})"),
        ),
        Err(e) => {
            f.problem(
                true,
                format!("probing BPF {what} {name} failed: {e}"),
                "zcprof needs CONFIG_BPF_SYSCALL=y",
            );
            (Some(false), Verdict::Missing, e.to_string())
        }
    };
    Support {
        name,
        supported,
        verdict,
        detail,
    }
}

fn map_types(f: &mut Findings) -> Vec<Support> {
    [
        ("array", MapType::Array),
        ("hash", MapType::Hash),
        ("percpu_array", MapType::PerCpuArray),
        ("percpu_hash", MapType::PerCpuHash),
        ("stack", MapType::Stack),
        ("ringbuf", MapType::RingBuf),
    ]
    .into_iter()
    .map(|(name, t)| {
        let r = is_map_supported(t).map_err(|e: SyscallError| e.io_error);
        support(f, name, "map type", r)
    })
    .collect()
}

fn program_types(f: &mut Findings) -> Vec<Support> {
    // zcprof's BTF tracepoint is a tracing program, but aya probes that type with an fentry
    // attachment zcprof does not use (refused on kernels without trampolines): the load probe
    // covers it.
    [
        ("raw_tracepoint", ProgramType::RawTracePoint),
        ("perf_event", ProgramType::PerfEvent),
    ]
    .into_iter()
    .map(|(name, t)| {
        let r = is_program_supported(t).map_err(|e| match e {
            ProgramError::SyscallError(s) => s.io_error,
            other => io::Error::other(other.to_string()),
        });
        let mut s = support(f, name, "program type", r);
        if s.verdict == Verdict::Ok {
            s.detail = "loaded, closed".into();
        }
        s
    })
    .collect()
}

/// Loads and attaches the real programs (nothing watched: they return at once for every
/// process), then detaches them. The full bodies, not `--empty-programs`: the verifier skips
/// code a read-only global rules out, so only these prove that the kernel accepts them.
fn load(f: &mut Findings) -> (Load, Option<bool>) {
    let start = Instant::now();
    let probes = Probes::load(LoadOptions {
        // The smallest thread table: the programs are the same, the maps tiny.
        max_threads: Some(1),
        ..Default::default()
    });
    match probes {
        Ok(p) => {
            let ms = start.elapsed().as_millis();
            // The drop's own test, on the default --user (when it exists).
            let tried = privileges::lookup(DEFAULT_USER)
                .ok()
                .map(|t| privileges::bpf_fds_work_unprivileged(&t, p.a_map()));
            drop(p);
            let load = Load {
                verdict: Verdict::Ok,
                detail: format!(
                    "loaded and attached every program in {ms} ms, then detached them \
                     (nothing watched)"
                ),
                error: None,
            };
            (load, tried)
        }
        Err(e) => {
            let full = e.to_string();
            let line = condense(&full);
            let fix = if matches!(e, crate::loader::LoadError::NotPermitted) {
                "run zcprof as root"
            } else {
                "report this line with the output of `zcprof doctor --json`"
            };
            f.problem(
                true,
                format!("loading zcprof's programs failed: {line}"),
                fix,
            );
            let load = Load {
                verdict: Verdict::Missing,
                detail: line,
                error: Some(full),
            };
            (load, None)
        }
    }
}

/// A load error on one line: a verifier log is cut to the message before it and the
/// verifier's last word (the line that says why it refused).
fn condense(error: &str) -> String {
    let Some((head, log)) = error.split_once("Verifier output:") else {
        return error.split_whitespace().collect::<Vec<_>>().join(" ");
    };
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    // The log ends with statistics (verification time, stack depth, processed insns) and the
    // error's own tail (": Invalid argument (os error 22)").
    let stats = |l: &str| {
        l.is_empty()
            || l.starts_with("verification time")
            || l.starts_with("stack depth")
            || l.starts_with("processed ")
            || l.starts_with(": ")
    };
    let why = lines
        .iter()
        .rev()
        .find(|l| !stats(l))
        .copied()
        .unwrap_or("");
    let tail = lines
        .iter()
        .rev()
        .find(|l| l.starts_with(": "))
        .copied()
        .unwrap_or("");
    format!(
        "{} verifier: {why}{tail}",
        head.trim_end().trim_end_matches('.')
    )
}

fn tracefs() -> Tracefs {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let paths: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_, dir, kind) = (w.next()?, w.next()?, w.next()?);
            (kind == "tracefs").then_some(dir)
        })
        .collect();
    let path = paths
        .iter()
        .find(|&&p| p == "/sys/kernel/tracing")
        .or(paths.first())
        .map(|p| p.to_string());
    let detail = match &path {
        Some(p) => format!("mounted at {p} (not needed by zcprof; bpftrace and perf use it)"),
        None => "not mounted (not needed by zcprof; for bpftrace and perf: mount -t tracefs \
                 tracefs /sys/kernel/tracing)"
            .into(),
    };
    Tracefs {
        mounted: path.is_some(),
        path,
        needed_by_zcprof: false,
        detail,
    }
}

/// The report as a table, then one line per problem with its fix.
pub fn text(r: &Report) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["verdict", "check", "detail"]);
    if t.width().is_none() {
        // Not a terminal: wrap the details at a width that reads well in a file or a mail.
        t.set_width(120);
    }
    let arch = if r.arch == "x86_64" {
        Verdict::Ok
    } else {
        Verdict::Missing
    };
    let mut row = |v: Verdict, check: String, detail: &str| {
        t.add_row([v.as_str().to_string(), check, detail.to_string()]);
    };
    row(Verdict::Ok, "kernel".into(), &r.kernel);
    row(arch, "architecture".into(), &r.arch);
    row(r.btf.verdict, "btf".into(), &r.btf.detail);
    row(
        r.privileges.verdict,
        "privileges".into(),
        &r.privileges.detail,
    );
    row(r.memlock.verdict, "memlock".into(), &r.memlock.detail);
    for h in &r.hooks {
        let kind = h.kind.replace('_', " ");
        row(h.verdict, format!("{kind} {}", h.name), &h.detail);
    }
    for s in &r.map_types {
        row(s.verdict, format!("map type {}", s.name), &s.detail);
    }
    for s in &r.program_types {
        row(s.verdict, format!("program type {}", s.name), &s.detail);
    }
    row(r.load.verdict, "load programs".into(), &r.load.detail);
    for c in r.capabilities.iter() {
        let v = match c.state {
            State::Exact => Verdict::Ok,
            State::Degraded => Verdict::Degraded,
            State::Unavailable => Verdict::Missing,
        };
        let feeds = KINDS
            .iter()
            .find(|k| k.name == c.name)
            .map_or("", |k| k.feeds);
        let detail = if c.why.is_empty() {
            format!("{}; feeds {feeds}", c.state.as_str())
        } else {
            format!("{}: {}; feeds {feeds}", c.state.as_str(), c.why)
        };
        row(v, format!("capability {}", c.name), &detail);
    }
    let tracefs = if r.tracefs.mounted {
        Verdict::Ok
    } else {
        Verdict::Missing
    };
    row(tracefs, "tracefs".into(), &r.tracefs.detail);

    let mut out = format!("{t}\n");
    if r.can_run && r.problems.is_empty() {
        out.push_str("zcprof can run here, and counts everything exactly.\n");
    } else if r.can_run {
        out.push_str("zcprof can run here, with these problems:\n");
    } else {
        out.push_str("zcprof cannot run here:\n");
    }
    for p in &r.problems {
        out.push_str(&format!("problem: {}; fix: {}\n", p.what, p.fix));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_log_is_cut_to_its_verdict() {
        let error = "the kernel refused to load zcprof's BPF programs: sys_exit: the \
                     BPF_PROG_LOAD syscall returned Invalid argument (os error 22). Verifier \
                     output: 0: R1=ctx() R10=fp0\n76: (bf) r2 = r9 ; R2=trusted_ptr_pt_regs()\n\
                     77: (1f) r2 -= r1\nmath between trusted_ptr_ pointer and register with \
                     unbounded min value is not allowed\nverification time 319986 usec\n\
                     stack depth 328+0+0\nprocessed 58477 insns (limit 1000000)\n\
                     : Invalid argument (os error 22)";
        assert_eq!(
            condense(error),
            "the kernel refused to load zcprof's BPF programs: sys_exit: the BPF_PROG_LOAD \
             syscall returned Invalid argument (os error 22) verifier: math between \
             trusted_ptr_ pointer and register with unbounded min value is not allowed: \
             Invalid argument (os error 22)"
        );
        assert_eq!(condense("no such\n  thing"), "no such thing");
    }

    #[test]
    fn the_text_ends_with_one_line_per_problem() {
        let mut r = examine_offline();
        r.can_run = false;
        r.problems = vec![Problem {
            what: "no usable kernel BTF".into(),
            fix: "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y".into(),
        }];
        let t = text(&r);
        assert!(t.contains("zcprof cannot run here:\n"));
        assert!(t.ends_with(
            "problem: no usable kernel BTF; fix: boot a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y\n"
        ));
    }

    /// A report with no probes run (they need the kernel and privileges).
    fn examine_offline() -> Report {
        let item = |v| Item {
            verdict: v,
            detail: String::new(),
        };
        Report {
            kernel: "6.18.0".into(),
            arch: "x86_64".into(),
            btf: item(Verdict::Missing),
            privileges: Privileges {
                verdict: Verdict::Ok,
                uid: 0,
                root: true,
                cap_eff: String::new(),
                missing: vec![],
                can_drop: Some(true),
                drop_tried: true,
                unprivileged_bpf_disabled: Some(2),
                detail: String::new(),
            },
            memlock: Memlock {
                verdict: Verdict::Ok,
                current: None,
                max: None,
                detail: String::new(),
            },
            hooks: vec![],
            map_types: vec![],
            program_types: vec![],
            load: Load {
                verdict: Verdict::Unknown,
                detail: String::new(),
                error: None,
            },
            capabilities: Capabilities::default(),
            tracefs: tracefs(),
            can_run: true,
            problems: vec![],
        }
    }
}
