//! Why the kernel refused zcprof's maps or programs for memory, told as the limit to lift.
//!
//! Linux before 5.11 charges BPF maps and programs to RLIMIT_MEMLOCK (and fails with EPERM
//! past it); later kernels charge the memory cgroup (and fail with ENOMEM past its limit).
//! Either way the kernel's bare errno reads as "not root" or "out of memory", so the error
//! names the limit instead.

use std::{fs, io};

use aya::{EbpfError, maps::MapError, util::KernelVersion};
use zcprof_common::{
    FD_EPOCH_SLOTS, MAP_FD_EPOCH, MAP_FREE_SLOTS, MAP_THREADS, MAP_TID_SLOT, MAP_WATCHED,
    MAX_PROCESSES, ThreadStats, Watch,
};

use super::{LoadError, chain, permission};
use crate::report::bytes;

/// Raises RLIMIT_MEMLOCK to unlimited, which kernels before 5.11 need for zcprof's maps. It
/// fails without CAP_SYS_RESOURCE when the hard limit is lower: loading then says so if the
/// limit is what stops it.
pub fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// The error for a failed `EbpfLoader::load` (which creates the maps); `slots` is the thread
/// table's size.
pub fn load_failed(e: &EbpfError, slots: u32) -> LoadError {
    if let EbpfError::MapError(MapError::CreateError { name, io_error }) = e
        && let Some(refused) = map_refused(name, io_error, slots)
    {
        return refused;
    }
    if permission(e) {
        not_permitted(None)
    } else {
        LoadError::Load(chain(e))
    }
}

/// The error for an EPERM from the kernel: RLIMIT_MEMLOCK where that is what the kernel
/// charges and zcprof already has the privileges, else a lack of privileges. `map` names the
/// map being created, if it was one.
pub fn not_permitted(map: Option<(&str, u32)>) -> LoadError {
    match culprit(libc::EPERM, memlock(), charges_memlock(), privileged()) {
        Culprit::Memlock(limit) => LoadError::Memlock {
            what: match map {
                Some((name, slots)) => format!("cannot create BPF map {name}{}", size(name, slots)),
                None => "cannot load zcprof's BPF programs".to_string(),
            },
            limit: bytes(limit),
        },
        _ => LoadError::NotPermitted,
    }
}

/// The error for map `name` the kernel would not create, if memory is why.
fn map_refused(name: &str, e: &io::Error, slots: u32) -> Option<LoadError> {
    let errno = e.raw_os_error()?;
    match culprit(errno, memlock(), charges_memlock(), privileged()) {
        Culprit::Memlock(_) => Some(not_permitted(Some((name, slots)))),
        Culprit::Memory => Some(LoadError::MapMemory {
            map: name.to_string(),
            size: size(name, slots),
            limit: memory_cgroup_limit()
                .map(|(path, file, limit)| {
                    format!(
                        ": zcprof's memory cgroup {path} allows {} ({file})",
                        bytes(limit)
                    )
                })
                .unwrap_or_default(),
        }),
        Culprit::Other => None,
    }
}

/// What an errno from creating a map or loading a program means.
#[derive(Debug, PartialEq, Eq)]
enum Culprit {
    /// RLIMIT_MEMLOCK (its value in bytes).
    Memlock(u64),
    /// The kernel's memory, or the memory cgroup's share of it.
    Memory,
    /// Something else (privileges, say).
    Other,
}

/// `memlock` is RLIMIT_MEMLOCK's current value (None: unlimited), `charges_memlock` whether
/// this kernel charges BPF memory to it, `privileged` whether zcprof has CAP_SYS_ADMIN or
/// CAP_BPF (without them EPERM means exactly that).
fn culprit(errno: i32, memlock: Option<u64>, charges_memlock: bool, privileged: bool) -> Culprit {
    match (errno, memlock) {
        (libc::EPERM, Some(limit)) if charges_memlock && privileged => Culprit::Memlock(limit),
        (libc::ENOMEM, _) => Culprit::Memory,
        _ => Culprit::Other,
    }
}

/// RLIMIT_MEMLOCK's soft limit now, None if unlimited.
fn memlock() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } != 0 {
        return None;
    }
    (rl.rlim_cur != libc::RLIM_INFINITY).then_some(rl.rlim_cur)
}

/// Whether this kernel charges BPF memory to RLIMIT_MEMLOCK (before 5.11).
fn charges_memlock() -> bool {
    KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(5, 11, 0))
}

/// Whether zcprof may create maps at all: CAP_SYS_ADMIN, or CAP_BPF.
fn privileged() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let eff = crate::privileges::current()
        .caps
        .iter()
        .find(|(n, _)| n == "CapEff")
        .map_or(0, |c| c.1);
    eff & (1 << CAP_SYS_ADMIN | 1 << CAP_BPF) != 0
}

/// `" (N entries, at least SIZE)"` for the maps the kernel allocates in full at creation; the
/// others grow as they fill, and their failure is not about their size.
fn size(name: &str, slots: u32) -> String {
    let u32s = 4;
    let (entries, entry) = match name {
        MAP_THREADS => (slots, size_of::<ThreadStats>()),
        MAP_TID_SLOT => (slots, 2 * u32s),
        MAP_FREE_SLOTS => (slots, u32s),
        MAP_WATCHED => (MAX_PROCESSES, u32s + size_of::<Watch>()),
        MAP_FD_EPOCH => (FD_EPOCH_SLOTS, size_of::<u64>()),
        _ => return String::new(),
    };
    format!(
        " ({entries} entries, at least {})",
        bytes(u64::from(entries) * entry as u64)
    )
}

/// The tightest memory limit on zcprof's own cgroup and its ancestors: (cgroup path, the file
/// that sets it, bytes). cgroup v2 (`memory.max`) or, on a v1 or hybrid host, the memory
/// controller's `memory.limit_in_bytes`. None if unlimited or unreadable.
fn memory_cgroup_limit() -> Option<(String, &'static str, u64)> {
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    let mount_of = |fstype: &str, option: Option<&str>| {
        mounts.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ok = f.len() > 3
                && f[2] == fstype
                && option.is_none_or(|o| f[3].split(',').any(|x| x == o));
            ok.then(|| f[1].to_string())
        })
    };
    // "ID:CONTROLLERS:PATH": the v1 memory controller's line if there is one (on a hybrid host
    // it holds the memory limits), else the v2 line.
    let v1 = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
        ctl.split(',').any(|c| c == "memory").then_some(path)
    });
    let (root, path, file) = match v1 {
        Some(path) => (
            mount_of("cgroup", Some("memory"))?,
            path,
            "memory.limit_in_bytes",
        ),
        None => (
            mount_of("cgroup2", None)?,
            own.lines().find_map(|l| l.strip_prefix("0::"))?,
            "memory.max",
        ),
    };
    let mut best: Option<u64> = None;
    let mut dir = std::path::PathBuf::from(&root).join(path.trim_start_matches('/'));
    while dir.starts_with(&root) {
        let limit = fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            // v1 says "unlimited" with a number near 2^63.
            .filter(|&v| v < 1 << 62);
        best = match (best, limit) {
            (Some(b), Some(l)) => Some(b.min(l)),
            (b, l) => b.or(l),
        };
        if !dir.pop() {
            break;
        }
    }
    Some((path.to_string(), file, best?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_is_memlock_only_where_the_kernel_charges_it_and_zcprof_is_privileged() {
        let k64 = Some(65536);
        assert_eq!(
            culprit(libc::EPERM, k64, true, true),
            Culprit::Memlock(65536)
        );
        assert_eq!(culprit(libc::EPERM, k64, false, true), Culprit::Other);
        assert_eq!(culprit(libc::EPERM, k64, true, false), Culprit::Other);
        assert_eq!(culprit(libc::EPERM, None, true, true), Culprit::Other);
        assert_eq!(culprit(libc::ENOMEM, k64, false, true), Culprit::Memory);
        assert_eq!(culprit(libc::EINVAL, k64, true, true), Culprit::Other);
    }

    #[test]
    fn messages_name_the_limit_and_the_remedy() {
        let m = LoadError::Memlock {
            what: format!("cannot create BPF map THREADS{}", size(MAP_THREADS, 16385)),
            limit: bytes(65536),
        }
        .to_string();
        assert!(m.contains("THREADS (16385 entries, at least "), "{m}");
        assert!(m.contains("RLIMIT_MEMLOCK is 64.0 KiB"), "{m}");
        assert!(m.contains("ulimit -l unlimited") && m.contains("LimitMEMLOCK=infinity"));
        let m = LoadError::MapMemory {
            map: "THREADS".into(),
            size: size(MAP_THREADS, 262_145),
            limit: ": zcprof's memory cgroup /a allows 160.0 MiB (memory.max)".into(),
        }
        .to_string();
        assert!(
            m.contains("memory.max") && m.contains("--max-threads"),
            "{m}"
        );
        assert_eq!(size("TRANSFERS", 1), "");
    }
}
