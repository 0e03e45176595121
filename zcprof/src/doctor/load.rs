//! The end-to-end probe: zcprof's real programs loaded, attached and detached.

use std::time::Instant;

use super::findings::{Findings, Load, Verdict};
use crate::{
    loader::{LoadError, LoadOptions, Probes},
    privileges,
};

/// Loads and attaches the real programs (nothing watched: they return at once for every
/// process), then detaches them. The full bodies, not `--empty-programs`: the verifier skips
/// code a read-only global rules out, so only these prove that the kernel accepts them.
pub fn probe(f: &mut Findings) -> (Load, Option<bool>) {
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
            let tried = privileges::lookup(privileges::DEFAULT_USER)
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
            let fix = if matches!(e, LoadError::NotPermitted) {
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
}
