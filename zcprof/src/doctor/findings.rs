//! What `zcprof doctor` found: the report (`--json` prints it as it is) and the problems
//! gathered on the way.

use serde::Serialize;

use crate::capability::Capabilities;

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
    /// The word for it in the table.
    pub fn as_str(self) -> &'static str {
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
    /// Whether run, attach and serve attach the backstop programs here (`--backstops auto`).
    pub backstops: Item,
    /// The same as `zcprof run --json`'s `capabilities`.
    pub capabilities: Capabilities,
    pub tracefs: Tracefs,
    /// zcprof can run here (perhaps degraded).
    pub can_run: bool,
    pub problems: Vec<Problem>,
}

/// Collects the findings; `fatal` once something keeps zcprof from running.
#[derive(Default)]
pub struct Findings {
    /// What is wrong, with what to do about it.
    pub problems: Vec<Problem>,
    /// Something keeps zcprof from running.
    pub fatal: bool,
}

impl Findings {
    /// Adds a problem and its fix; `fatal`: it keeps zcprof from running.
    pub fn problem(&mut self, fatal: bool, what: impl Into<String>, fix: impl Into<String>) {
        self.fatal |= fatal;
        self.problems.push(Problem {
            what: what.into(),
            fix: fix.into(),
        });
    }
}
