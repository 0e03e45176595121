//! Whether the kernel supports every BPF map and program type zcprof uses.

use std::io;

use aya::{
    maps::MapType,
    programs::{ProgramError, ProgramType},
    sys::{SyscallError, is_map_supported, is_program_supported},
};

use super::findings::{Findings, Support, Verdict};

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

/// Creates (and closes) a map of every type zcprof uses.
pub fn map_types(f: &mut Findings) -> Vec<Support> {
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

/// Loads (and closes) a trivial program of every type the load probe does not cover.
pub fn program_types(f: &mut Findings) -> Vec<Support> {
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
