//! Giving up root once the probes are attached: zcprof keeps only the file descriptors it
//! opened (programs, links, maps, pidfds, the daemon's stats fd and listening socket), which go
//! on working without privileges, and becomes an unprivileged user with no capabilities.

use std::{
    ffi::{CStr, CString},
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// The user run, attach and serve become by default (`--user`).
pub const DEFAULT_USER: &str = "nobody";

/// Who zcprof becomes once it needs no privilege any more (run, attach, serve).
#[derive(clap::Args, Debug, Clone)]
pub struct PrivilegeArgs {
    /// Unprivileged user zcprof becomes once its probes are attached (for run: once the
    /// command is started; the command keeps zcprof's starting identity)
    #[arg(long, default_value = DEFAULT_USER, value_name = "USER")]
    pub user: String,
    /// Keep zcprof's own privileges and capabilities (debugging only)
    #[arg(long)]
    pub no_drop_privileges: bool,
}

/// Errors dropping privileges.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// No such user.
    #[error("no user named `{0}` to run as after loading; create it or choose one with --user")]
    NoUser(String),
    /// The target user is root, which would keep every capability.
    #[error(
        "--user {0} is root and would keep every capability; choose an unprivileged user \
         (or --no-drop-privileges to stay root deliberately)"
    )]
    Root(String),
    /// A credential syscall failed.
    #[error("cannot drop privileges to {user}: {call} failed: {err}")]
    Syscall {
        user: String,
        call: &'static str,
        err: std::io::Error,
    },
    /// Something is left after the drop.
    #[error(
        "privileges not fully dropped ({what}); refusing to go on with them: run zcprof as \
         root so that it can change user"
    )]
    Left { what: String },
}

/// `struct __user_cap_header_struct` (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`: one of two 32-bit halves of the sets.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// An unprivileged identity.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name as given.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// Looks `user` up (a name from the user database, or `UID[:GID]`).
pub fn lookup(user: &str) -> Result<Target, PrivError> {
    if let Some((u, g)) = user.split_once(':')
        && let (Ok(uid), Ok(gid)) = (u.parse(), g.parse())
    {
        return check(user, uid, gid);
    }
    if let Ok(uid) = user.parse::<u32>() {
        return check(user, uid, uid);
    }
    let name = CString::new(user).map_err(|_| PrivError::NoUser(user.into()))?;
    // SAFETY: getpwnam_r writes into our passwd struct and buffer, whose sizes we pass.
    let (uid, gid) = unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0u8; 16 << 10];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        );
        if rc != 0 || out.is_null() {
            return Err(PrivError::NoUser(user.into()));
        }
        (pw.pw_uid, pw.pw_gid)
    };
    check(user, uid, gid)
}

fn check(name: &str, uid: u32, gid: u32) -> Result<Target, PrivError> {
    if uid == 0 {
        return Err(PrivError::Root(name.into()));
    }
    Ok(Target {
        name: name.into(),
        uid,
        gid,
    })
}

fn os(user: &str, call: &'static str, rc: libc::c_int) -> Result<(), PrivError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(PrivError::Syscall {
            user: user.into(),
            call,
            err: std::io::Error::last_os_error(),
        })
    }
}

/// `/proc/self/status` lines the drop is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved, fs uids.
    pub uids: Vec<u32>,
    /// Real, effective, saved, fs gids.
    pub gids: Vec<u32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// (name, value) of CapInh, CapPrm, CapEff and CapAmb. CapBnd only limits what could be
    /// gained, and no_new_privs closes that door.
    pub caps: Vec<(String, u64)>,
}

/// The calling process's credentials as the kernel reports them.
pub fn current() -> Creds {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let nums = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let caps = ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"]
        .iter()
        .map(|k| {
            let v = status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(u64::MAX);
            (k.trim_end_matches(':').to_string(), v)
        })
        .collect();
    Creds {
        uids: nums("Uid:"),
        gids: nums("Gid:"),
        groups: nums("Groups:"),
        caps,
    }
}

/// The identity zcprof will drop to, or `None` when asked to keep its privileges. Only root
/// can change user: unless `strict`, a zcprof started without root (with capabilities alone)
/// keeps them; `strict` (the daemon) makes that an error at the drop instead.
pub fn planned(args: &PrivilegeArgs, strict: bool) -> Result<Option<Target>, PrivError> {
    // SAFETY: geteuid has no preconditions.
    if args.no_drop_privileges || (!strict && unsafe { libc::geteuid() } != 0) {
        return Ok(None);
    }
    lookup(&args.user).map(Some)
}

/// CAP_BPF (linux/capability.h): what an older kernel asks of every bpf() call.
const CAP_BPF: u32 = 39;

/// Whether a process that became `target` could still use the BPF map `map` it holds. Linux
/// 6.5 and later let it; older kernels refuse every bpf() call of a process without CAP_BPF
/// while `kernel.unprivileged_bpf_disabled` is set. Found out by trying, in a child that drops
/// to `target` and reads the map, because the kernel version is no guide (distributions
/// backport).
pub fn bpf_fds_work_unprivileged(target: &Target, map: BorrowedFd<'_>) -> bool {
    // bpf(BPF_MAP_GET_NEXT_KEY, { map_fd, key = NULL, next_key }).
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    #[repr(C)]
    struct NextKeyAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
        _flags: u64,
    }
    let mut next = [0u8; 64];
    let attr = NextKeyAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: 0,
        next_key: next.as_mut_ptr() as u64,
        _flags: 0,
    };
    // SAFETY: the child makes raw syscalls only (async-signal-safe after fork in a process
    // that may have threads) and leaves with _exit; the parent only waits for it.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let ok = libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) == 0
                && libc::syscall(libc::SYS_setresgid, target.gid, target.gid, target.gid) == 0
                && libc::syscall(libc::SYS_setresuid, target.uid, target.uid, target.uid) == 0
                && libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_GET_NEXT_KEY,
                    &attr,
                    std::mem::size_of::<NextKeyAttr>(),
                ) == 0;
            libc::_exit(if ok { 0 } else { 1 });
        }
        if pid < 0 {
            return false;
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0) == pid
            && libc::WIFEXITED(status)
            && libc::WEXITSTATUS(status) == 0
    }
}

/// Becomes `target` with no capabilities and no way to regain any, then checks with the
/// kernel that it is so. Where the kernel would refuse the BPF objects (`map` stands for them
/// all) to a process without CAP_BPF, it keeps CAP_BPF alone and says so.
pub fn drop_to(target: &Target, map: BorrowedFd<'_>) -> Result<Creds, PrivError> {
    let keep_bpf = !bpf_fds_work_unprivileged(target, map);
    if keep_bpf {
        eprintln!(
            "zcprof: note: this kernel refuses BPF objects to processes without CAP_BPF \
             (kernel.unprivileged_bpf_disabled is set, Linux before 6.5): zcprof becomes {} \
             keeping CAP_BPF alone",
            target.name
        );
    }
    drop_keeping(target, if keep_bpf { Some(CAP_BPF) } else { None })
}

/// Becomes `target` with no capability but `keep`, and checks with the kernel that it is so.
fn drop_keeping(target: &Target, keep: Option<u32>) -> Result<Creds, PrivError> {
    let user = &target.name;
    let kept: u64 = keep.map_or(0, |c| 1u64 << c);
    // SAFETY: plain credential syscalls with valid arguments. glibc applies set*id to every
    // thread of the process (there is only one at this point anyway).
    unsafe {
        os(user, "setgroups", libc::setgroups(0, std::ptr::null()))?;
        os(
            user,
            "setresgid",
            libc::setresgid(target.gid, target.gid, target.gid),
        )?;
        if keep.is_some() {
            // Keep the permitted set across the uid change; it is cut down to `keep` below.
            os(
                user,
                "prctl(PR_SET_KEEPCAPS)",
                libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0),
            )?;
        }
        // Changing every uid away from 0 clears the permitted, effective and ambient
        // capability sets (capabilities(7), "Effect of user ID changes").
        os(
            user,
            "setresuid",
            libc::setresuid(target.uid, target.uid, target.uid),
        )?;
        // The inheritable set survives a uid change; empty every set explicitly.
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let half = |shift: u32| CapData {
            effective: (kept >> shift) as u32,
            permitted: (kept >> shift) as u32,
            inheritable: 0,
        };
        let data = [half(0), half(32)];
        os(
            user,
            "capset",
            libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as libc::c_int,
        )?;
        os(
            user,
            "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
        )?;
        // Nothing exec'd from here could gain privileges either (zcprof execs nothing).
        os(
            user,
            "prctl(PR_SET_NO_NEW_PRIVS)",
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        )?;
    }
    let creds = current();
    let mut left = Vec::new();
    if creds.uids.iter().any(|&u| u != target.uid) || creds.uids.len() != 4 {
        left.push(format!("uids {:?}", creds.uids));
    }
    if creds.gids.iter().any(|&g| g != target.gid) || creds.gids.len() != 4 {
        left.push(format!("gids {:?}", creds.gids));
    }
    if !creds.groups.is_empty() {
        left.push(format!("groups {:?}", creds.groups));
    }
    for (name, v) in &creds.caps {
        let allowed = if name == "CapPrm" || name == "CapEff" {
            kept
        } else {
            0
        };
        if *v != allowed {
            left.push(format!("{name} {v:#x}"));
        }
    }
    if !left.is_empty() {
        return Err(PrivError::Left {
            what: left.join(", "),
        });
    }
    Ok(creds)
}

/// The user's name for a uid, for messages.
pub fn user_name(uid: u32) -> String {
    // SAFETY: getpwuid_r writes into our struct and buffer, whose sizes we pass.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0u8; 16 << 10];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) == 0
            && !out.is_null()
        {
            return CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned();
        }
    }
    uid.to_string()
}
