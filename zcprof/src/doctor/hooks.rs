//! Whether this kernel has every hook zcprof attaches to: tracepoints from BTF, perf software
//! events by opening them.

use std::io;

use aya::programs::perf_event::SoftwareEvent;

use super::findings::{Findings, Hook, Verdict};
use crate::{
    btf::Btf,
    loader::hooks::{HOOKS, HookKind},
};

/// Probes every hook of the loader's table (tracepoints in `btf`, when there is one).
pub fn probe(f: &mut Findings, btf: Option<&Btf>) -> Vec<Hook> {
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
