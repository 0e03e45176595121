//! Who zcprof runs as and what that allows: its capabilities, RLIMIT_MEMLOCK, and whether it
//! can give up its privileges once the programs are loaded.

use super::findings::{Findings, Memlock, Privileges, Verdict};
use crate::{privileges, report::bytes};

/// Capability bits (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Who zcprof runs as, and whether its capabilities let it load the programs.
pub fn privileges(f: &mut Findings, since_5_11: bool) -> Privileges {
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
pub fn drop_after_load(f: &mut Findings, p: &mut Privileges, tried: Option<bool>, since_6_5: bool) {
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

/// RLIMIT_MEMLOCK, and whether zcprof can raise it where the kernel charges maps to it.
pub fn memlock(f: &mut Findings, since_5_11: bool) -> Memlock {
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
