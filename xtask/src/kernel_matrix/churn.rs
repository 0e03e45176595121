//! `xtask kernel-matrix-churn` (hidden): the fork/exit churn of check (f). It forks all its
//! processes at once; each starts its threads, each thread writes one byte to /dev/null a
//! fixed number of times, and the process leaves with `_exit`. Nothing else in the spawner
//! or its children calls write (no output on success, no stdio flush at `_exit`), so the
//! write calls zcprof sees must be exactly processes × threads × writes.

use std::{fs::File, os::fd::AsRawFd as _};

use anyhow::{Context as _, Result, bail};

/// Arguments of `xtask kernel-matrix-churn`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[arg(long, default_value_t = 20)]
    pub processes: u64,
    #[arg(long, default_value_t = 4)]
    pub threads: u64,
    /// One-byte writes per thread
    #[arg(long, default_value_t = 250)]
    pub writes: u64,
}

pub fn run(args: &Args) -> Result<()> {
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let fd = null.as_raw_fd();
    let mut children = Vec::new();
    for _ in 0..args.processes {
        // SAFETY: this process is single-threaded here (its threads live only in the
        // children), so the child may do anything before it calls _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            bail!("fork failed: {}", std::io::Error::last_os_error());
        }
        if pid == 0 {
            let code = child(fd, args.threads, args.writes);
            // SAFETY: _exit ends the child at once, without flushing or unwinding anything
            // that belongs to the parent.
            unsafe { libc::_exit(code) };
        }
        children.push(pid);
    }
    let mut failed = 0;
    for pid in children {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} of {} churn processes failed", args.processes);
    }
    Ok(())
}

/// One churn process: its threads' writes; the exit code says whether every write wrote.
fn child(fd: i32, threads: u64, writes: u64) -> i32 {
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                (0..writes).all(|_| {
                    // SAFETY: a one-byte write from a live buffer to an open descriptor.
                    unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) == 1 }
                })
            })
        })
        .collect();
    let ok = handles.into_iter().all(|h| h.join().unwrap_or(false));
    if ok { 0 } else { 1 }
}
