//! Running the guest side (`cargo xtask kernel-matrix-guest`) on one kernel: in a virtme-ng
//! VM for a packaged kernel, or directly on the host for the host's kernel.
//!
//! The VM shares the host's root file system read-only (9p) plus the result directory
//! read-write, so the guest runs the host's xtask and zcprof binaries unchanged and reports
//! through files: `started` when its first instruction runs, one JSON file per check, `done`
//! at the end. vng's exit status means nothing here (it exits 255 on this machine even when
//! the guest did all its work), so only those files count.
//!
//! Always software emulation (TCG): on this machine /dev/kvm exists but stock kernels do not
//! boot under it, and telling a working KVM from a broken one costs a boot attempt.

use std::{
    fs::{self, File},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::process;

/// Files the guest writes into its result directory.
pub const STARTED: &str = "started";
pub const DONE: &str = "done";

/// How long the guest may take to power the VM off after it wrote `done`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// What the VM is given.
const CPUS: &str = "2";
const MEMORY: &str = "2G";

/// How a guest run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The guest wrote `done`.
    Finished,
    /// The VM (or the guest process) exited without `done`: it did not boot, or the guest
    /// crashed. The console log says which.
    Exited,
    /// Killed at the deadline.
    TimedOut,
}

/// One guest run, as the host saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Supervised {
    pub end: End,
    /// Seconds from start to the guest's `started` file (None: it never started).
    pub boot_s: Option<f64>,
    pub total_s: f64,
    /// Everything the VM (or the guest process) printed.
    pub console_log: PathBuf,
}

/// The `vng` command that boots `vmlinuz` and runs `guest` (a shell command line) in it.
pub fn vng_command(vng: &Path, vmlinuz: &Path, out: &Path, guest: &str) -> Command {
    let mut cmd = process::command(vng);
    // vng execs virtme-run from its own bin directory.
    if let Some(bin) = vng.parent() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(dirs) {
            cmd.env("PATH", joined);
        }
    }
    cmd.arg("--run")
        .arg(vmlinuz)
        .args([
            "--disable-kvm",
            "--cpus",
            CPUS,
            "--memory",
            MEMORY,
            "--user",
            "root",
        ])
        .arg("--rwdir")
        .arg(out)
        .arg("--exec")
        .arg(guest);
    cmd
}

/// Runs `cmd` (a VM or the guest itself) until the guest is done, with its output in
/// `console_log`; kills it (and everything in its process group, qemu included) at
/// `timeout`. `progress` is called about every second while it runs (to report the results
/// that have appeared).
pub fn supervise(
    mut cmd: Command,
    out: &Path,
    console_log: &Path,
    timeout: Duration,
    mut progress: impl FnMut(),
) -> Result<Supervised> {
    let log =
        File::create(console_log).with_context(|| format!("creating {}", console_log.display()))?;
    let log2 = log.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        // Its own process group: one kill reaches qemu and whatever vng started.
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", process::describe(&cmd)))?;
    let pgid = child.id() as libc::pid_t;
    let kill = |child: &mut std::process::Child| {
        // SAFETY: kill(2) of the group our unreaped child leads; the pid cannot be reused.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    };

    let mut boot_s = None;
    let mut done_at: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let end = loop {
        if boot_s.is_none() && out.join(STARTED).exists() {
            boot_s = Some(started.elapsed().as_secs_f64());
        }
        let done = out.join(DONE).exists();
        if done && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            progress();
            last_progress = Instant::now();
        }
        if child.try_wait().context("waiting for the guest")?.is_some() {
            // The group may still hold qemu if vng died first.
            // SAFETY: as in `kill`; the leader is reaped but the group id is still ours
            // until its last member exits, and a kill of an empty group is harmless.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            break if out.join(DONE).exists() {
                End::Finished
            } else {
                End::Exited
            };
        }
        if done_at.is_some_and(|t| t.elapsed() > SHUTDOWN_GRACE) {
            // Every result is in; the VM just does not power off.
            kill(&mut child);
            break End::Finished;
        }
        if started.elapsed() > timeout {
            kill(&mut child);
            break End::TimedOut;
        }
        thread::sleep(Duration::from_millis(200));
    };
    progress();
    Ok(Supervised {
        end,
        boot_s,
        total_s: started.elapsed().as_secs_f64(),
        console_log: console_log.to_path_buf(),
    })
}

/// The last `n` lines of the console log, for a failure message.
pub fn console_tail(path: &Path, n: usize) -> String {
    let text = fs::read(path).unwrap_or_default();
    process::tail(&String::from_utf8_lossy(&text), n)
}

/// Quotes `s` for the guest's shell (`vng --exec` runs its argument with sh -c).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
