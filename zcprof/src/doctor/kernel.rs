//! The running kernel itself: its release and architecture, its BTF, and tracefs.

use std::time::Instant;

use super::findings::{Findings, Item, Tracefs, Verdict};
use crate::{
    btf::{Btf, VMLINUX_BTF},
    report::bytes,
};

/// (release, machine) from uname(2).
pub fn uname() -> (String, String) {
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

/// Parses the kernel's BTF as zcprof does, and times it.
pub fn btf(f: &mut Findings) -> (Item, Option<Btf>) {
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

/// Where tracefs is mounted, if anywhere.
pub fn tracefs() -> Tracefs {
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
