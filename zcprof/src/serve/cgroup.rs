//! cgroup v2 ids to paths, and the host facts the engine asks for (see [`Host`]).
//!
//! The kernel programs record a thread's cgroup v2 id, which is the inode number of its
//! directory under the cgroup2 mount: `/sys/fs/cgroup` on a unified host,
//! `/sys/fs/cgroup/unified` on a hybrid one (found in /proc/self/mounts). Ids are resolved by walking the hierarchy once and
//! caching; an id not in the cache (a cgroup created since) triggers one more walk, at most
//! once per collection.

use std::{
    collections::HashMap,
    ffi::CString,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::engine::Host;

/// Where the cgroup v2 hierarchy is mounted on a unified host (examples in messages).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// `statfs.f_type` of cgroup2 (include/uapi/linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// Past this many remembered ids the cache starts afresh (container churn on a long-lived
/// host must not grow it without end).
const MAX_REMEMBERED: usize = 100_000;

/// Errors resolving `--cgroup PATH` or preparing cgroup grouping.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The directory cannot be stat'ed or read.
    #[error(
        "cannot read cgroup directory {path}: {err}; give a directory of the cgroup v2 \
         hierarchy, e.g. {CGROUP_ROOT}/system.slice/ssh.service"
    )]
    Unreadable { path: String, err: std::io::Error },
    /// The path is not in the cgroup v2 hierarchy.
    #[error(
        "{path} is not a directory of the cgroup v2 hierarchy mounted at {root}; give one \
         like {root}/system.slice/ssh.service"
    )]
    NotCgroup { path: String, root: String },
    /// `--cgroup-root` is not a cgroup2 mount.
    #[error(
        "--cgroup-root {path} is not a cgroup v2 file system; give the directory where the \
         host's cgroup2 hierarchy is mounted"
    )]
    NotMount { path: String },
    /// No cgroup2 file system mounted.
    #[error(
        "no cgroup v2 hierarchy is mounted (none in /proc/self/mounts): zcprof groups by \
         cgroup v2 ids; mount one (mount -t cgroup2 none {CGROUP_ROOT}) or boot with \
         systemd.unified_cgroup_hierarchy=1"
    )]
    NoCgroup2,
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

/// Where the cgroup v2 hierarchy is mounted: `given` (`--cgroup-root`), else `/sys/fs/cgroup`
/// if it is there, else the first cgroup2 mount in /proc/self/mounts
/// (`/sys/fs/cgroup/unified` on hybrid hosts).
pub fn mount_point(given: Option<&Path>) -> Result<PathBuf, CgroupError> {
    if let Some(dir) = given {
        return if is_cgroup2(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(CgroupError::NotMount {
                path: dir.display().to_string(),
            })
        };
    }
    if is_cgroup2(Path::new(CGROUP_ROOT)) {
        return Ok(PathBuf::from(CGROUP_ROOT));
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .find(|p| is_cgroup2(p))
        .ok_or(CgroupError::NoCgroup2)
}

/// `--cgroup PATH` as a path below the cgroup root (`/system.slice/x.service`). PATH may be
/// the directory itself (`/sys/fs/cgroup/system.slice/x.service`) or relative to the root.
pub fn scope_path(arg: &Path, root: &Path) -> Result<String, CgroupError> {
    let not_cgroup = |path: String| CgroupError::NotCgroup {
        path,
        root: root.display().to_string(),
    };
    let joined = !arg.starts_with(root);
    let full: PathBuf = if !joined {
        arg.to_path_buf()
    } else {
        let rel = arg.strip_prefix("/").unwrap_or(arg);
        let under = root.join(rel);
        if arg.is_absolute() && arg.exists() && !under.exists() {
            // An existing directory elsewhere: say so rather than look under the root.
            return Err(not_cgroup(arg.display().to_string()));
        }
        under
    };
    let shown = if joined {
        format!("{} (looked for {})", arg.display(), full.display())
    } else {
        full.display().to_string()
    };
    let meta = fs::metadata(&full).map_err(|err| CgroupError::Unreadable {
        path: shown.clone(),
        err,
    })?;
    fs::read_dir(&full).map_err(|err| CgroupError::Unreadable {
        path: shown.clone(),
        err,
    })?;
    if !meta.is_dir() || !is_cgroup2(&full) {
        return Err(not_cgroup(shown));
    }
    let full = full.canonicalize().map_err(|err| CgroupError::Unreadable {
        path: shown.clone(),
        err,
    })?;
    let rel = full.strip_prefix(root).map_err(|_| not_cgroup(shown))?;
    Ok(format!("/{}", rel.display()))
}

/// The real host: the cgroup2 mount and /proc.
#[derive(Debug, Default)]
pub struct HostFs {
    /// The cgroup2 mount, if there is one.
    root: Option<PathBuf>,
    paths: HashMap<u64, String>,
    walked: bool,
}

impl HostFs {
    /// Resolves cgroups under `root` (none: every cgroup is unknown).
    pub fn new(root: Option<PathBuf>) -> Self {
        HostFs {
            root,
            ..Default::default()
        }
    }

    fn walk(&mut self) {
        if self.paths.len() > MAX_REMEMBERED {
            self.paths.clear();
        }
        let Some(root) = self.root.clone() else {
            return;
        };
        let root = root.as_path();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let rel = match dir.strip_prefix(root) {
                Ok(r) if r.as_os_str().is_empty() => "/".to_string(),
                Ok(r) => format!("/{}", r.display()),
                Err(_) => continue,
            };
            self.paths.insert(meta.ino(), rel);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

impl Host for HostFs {
    fn begin_collection(&mut self) {
        self.walked = false;
    }

    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        if !self.walked {
            self.walked = true;
            self.walk();
        }
        self.paths.get(&id).cloned()
    }

    fn cgroup_of_process(&mut self, tgid: u32) -> u64 {
        let Ok(text) = fs::read_to_string(format!("/proc/{tgid}/cgroup")) else {
            return 0;
        };
        let Some(rel) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
            return 0;
        };
        // In a cgroup namespace of its own, zcprof sees other processes' paths relative to
        // it (`/../..`): they name nothing under the root.
        if rel.split('/').any(|c| c == "..") {
            return 0;
        }
        let Some(root) = &self.root else {
            return 0;
        };
        let dir = root.join(rel.trim_start_matches('/'));
        fs::metadata(dir).map(|m| m.ino()).unwrap_or(0)
    }

    fn process_alive(&self, tgid: u32) -> bool {
        Path::new(&format!("/proc/{tgid}")).exists()
    }
}
