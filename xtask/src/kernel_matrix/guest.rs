//! `xtask kernel-matrix-guest` (hidden): the side of the matrix that runs on the kernel under
//! test, inside the VM (or on the host for the host's kernel). It completes the bare guest
//! environment, runs the checks one after the other and writes each result as a JSON file
//! into the result directory, which the host reads: `started` first (the host times the boot
//! by it), `env.json`, `<check>.json`, and `done` last.

use std::{
    ffi::CString,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{
    checks::{self, Env},
    verdict::{CheckResult, Status},
    vm::{DONE, STARTED},
};
use crate::workloads;

/// Arguments of `xtask kernel-matrix-guest`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The zcprof binary (absolute: the guest sees the host's file system)
    #[arg(long, value_name = "PATH")]
    pub zcprof: PathBuf,
    /// Where to write the results (read-write in the VM)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Running in a kernel-matrix VM: the guest may change its (throwaway) mounts
    #[arg(long)]
    pub vm: bool,
}

/// The checks in the order they run; `workload:*` expands to every strategy.
pub fn check_names() -> Vec<String> {
    let mut names: Vec<String> = checks::SINGLE.map(str::to_owned).to_vec();
    names.extend(
        workloads::STRATEGIES
            .iter()
            .map(|s| format!("workload:{s}")),
    );
    names
}

/// The file a check's result is written to.
pub fn result_file(out: &Path, check: &str) -> PathBuf {
    out.join(format!("{}.json", check.replace(':', "-")))
}

/// What the guest found and changed in its environment before the checks.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct GuestEnv {
    pub release: String,
    /// Seconds since the kernel booted when the guest started.
    pub uptime_s: f64,
    pub btf: bool,
    /// What was set up, or could not be (one line each).
    pub actions: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let out = &args.out;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    fs::write(out.join(STARTED), "").context("writing the started file")?;
    let env = prepare(args.vm).context("preparing the guest")?;
    write_json(&out.join("env.json"), &env)?;

    let scratch = std::env::temp_dir().join(format!("zcprof-kernel-matrix-{}", std::process::id()));
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let env = Env {
        zcprof: args.zcprof.clone(),
        xtask: std::env::current_exe().context("this binary's path")?,
        scratch: scratch.clone(),
    };

    let mut not_started: Option<String> = None;
    for name in check_names() {
        let result = match &not_started {
            Some(first) => CheckResult::new(
                &name,
                Status::Skipped,
                format!("not run: zcprof could not start in the {first} check"),
            ),
            None => {
                let started = Instant::now();
                let mut r = run_check(&env, &name);
                if r.elapsed_s == 0.0 {
                    r.elapsed_s = started.elapsed().as_secs_f64();
                }
                r
            }
        };
        // Say it on the console too (the VM's log, or the host's terminal).
        println!(
            "kernel-matrix-guest: {name}: {:?} ({:.1}s) {}",
            result.status, result.elapsed_s, result.detail
        );
        // Only dd can tell (by its output file) that zcprof failed before the command ran.
        if name == "dd" && result.not_started {
            not_started = Some(name.clone());
        }
        write_json(&result_file(out, &name), &result)?;
    }
    let _ = fs::remove_dir_all(&scratch);
    fs::write(out.join(DONE), "").context("writing the done file")?;
    Ok(())
}

fn run_check(env: &Env, name: &str) -> CheckResult {
    match name {
        "dd" => checks::dd(env),
        "cp" => checks::cp(env),
        "sendfile" => checks::sendfile(env),
        "churn" => checks::churn(env),
        "serve" => checks::serve(env),
        "latency" => checks::latency(env),
        "attribution" => checks::attribution(env),
        "stacks" => checks::stacks(env),
        _ => match name
            .strip_prefix("workload:")
            .and_then(|s| workloads::STRATEGIES.iter().find(|k| **k == s))
        {
            Some(strategy) => checks::workload(env, strategy),
            None => CheckResult::new(name, Status::Fail, "unknown check"),
        },
    }
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    // Through 9p to the host: complete before the rename makes it visible.
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

// ---------------------------------------------------------------------------------------
// The guest environment

/// Completes what a bare virtme-ng guest may lack, only where it is missing (on the host
/// every step finds things in place): tracefs (bpftrace-like tools and some kernels' tracepoint
/// lookups), bpffs, a writable temporary directory (the checks' files, the workloads'
/// source files), and the loopback interface (sendfile, serve and the workloads use TCP on
/// 127.0.0.1).
///
/// In a VM, TMPDIR is always a fresh tmpfs: virtme-ng's /tmp is an overlay whose lower layer is
/// the host's /tmp over 9p, so a workload's source file left there by a host run would be
/// reused from 9p (copy_file_range into the overlay then fails with EXDEV, and the page cache
/// is not the guest's). Before Linux 6.6 tmpfs has no O_DIRECT: direct-io is then unsupported.
/// The guest's scratch directory in a VM (its TMPDIR): /run is the guest's own tmpfs.
const VM_TMPDIR: &str = "/run/zcprof-kernel-matrix";

fn prepare(vm: bool) -> Result<GuestEnv> {
    let mut env = GuestEnv {
        release: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        uptime_s: fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|u| u.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0),
        btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
        actions: Vec::new(),
    };
    for (fstype, target) in [("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf")] {
        if !mounted(target, fstype) && Path::new(target).is_dir() {
            env.actions.push(match mount(fstype, target) {
                Ok(()) => format!("mounted {fstype} on {target}"),
                Err(e) => format!("could not mount {fstype} on {target}: {e}"),
            });
        }
    }
    if vm {
        // Not on /tmp itself: the workspace (zcprof, this binary, the results) may live under
        // the host's /tmp, and a tmpfs there would hide it.
        let dir = Path::new(VM_TMPDIR);
        let mounted = fs::create_dir_all(dir).and_then(|()| mount("tmpfs", VM_TMPDIR));
        env.actions.push(match mounted {
            Ok(()) => {
                // SAFETY: the guest is single-threaded here; everything it starts inherits it.
                unsafe { std::env::set_var("TMPDIR", dir) };
                format!("mounted a fresh tmpfs on {VM_TMPDIR} (TMPDIR)")
            }
            Err(e) => format!("could not mount tmpfs on {VM_TMPDIR}: {e}"),
        });
    }
    let tmp = std::env::temp_dir();
    if !writable(&tmp) {
        env.actions
            .push(match mount("tmpfs", &tmp.to_string_lossy()) {
                Ok(()) => format!("mounted tmpfs on {}", tmp.display()),
                Err(e) => format!(
                    "{} is not writable and tmpfs could not be mounted: {e}",
                    tmp.display()
                ),
            });
    }
    match loopback_up() {
        Ok(true) => env.actions.push("brought lo up".to_owned()),
        Ok(false) => {}
        Err(e) => env.actions.push(format!("could not bring lo up: {e}")),
    }
    Ok(env)
}

fn mounted(target: &str, fstype: &str) -> bool {
    fs::read_to_string("/proc/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace().skip(1);
            f.next() == Some(target) && f.next() == Some(fstype)
        })
    })
}

fn mount(fstype: &str, target: &str) -> std::io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(std::io::Error::other);
    let (source, target, fstype) = (c(fstype)?, c(target)?, c(fstype)?);
    // SAFETY: NUL-terminated strings that outlive the call; no mount data.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(
        ".zcprof-kernel-matrix-probe-{}",
        std::process::id()
    ));
    let ok = fs::write(&probe, b"x").is_ok();
    let _ = fs::remove_file(&probe);
    ok
}

/// Sets IFF_UP on `lo` if it is down; whether it had to.
fn loopback_up() -> std::io::Result<bool> {
    // SAFETY: a plain datagram socket, closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    let result = (|| {
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a valid ifreq naming lo.
        unsafe {
            if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = req.ifr_ifru.ifru_flags;
            if flags & libc::IFF_UP as libc::c_short != 0 {
                return Ok(false);
            }
            req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(true)
    })();
    // SAFETY: our own descriptor.
    unsafe { libc::close(sock) };
    result
}
