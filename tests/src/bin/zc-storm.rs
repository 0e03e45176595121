//! `zc-storm`: a fork storm with a known tally, for zcprof's tests of lossless counting.
//!
//! Usage: `zc-storm <TALLY_PATH> [--loops N] [--processes N] [--bursts N] [--burst-threads N]
//! [--bytes N] [--start-after PATH]`
//!
//! - `--loops` threads (named `zcstorm-child`) fork `--processes` processes in all, one after
//!   the other per loop. Each child inherits the name, makes `write(/dev/null, BYTES)` and
//!   `exit_group`, and is reaped with `wait4`: with the return from fork, which zcprof counts
//!   as the child's first syscall exit, three syscalls (`child_syscalls` in the tally).
//! - Meanwhile one process (named `zcstorm-burst`, forked before any thread exists) starts
//!   `--bursts` bursts of `--burst-threads` threads (named `zcstorm-burst`), each of which
//!   makes one `write(/dev/null, BYTES)` and ends; then it `_exit`s.
//! - With `--start-after PATH`, nothing starts before PATH exists (so that a profiler can
//!   attach first).
//!
//! The tally JSON written to TALLY_PATH at the end: `{"main_pid", "burster_pid", "loops",
//! "processes", "distinct_pids", "children_failed", "child_syscalls", "bytes", "bursts",
//! "burst_threads",
//! "threads", "elapsed_s", "forks_per_s"}`.

use std::{
    collections::BTreeSet,
    ffi::CString,
    os::fd::RawFd,
    path::Path,
    time::{Duration, Instant},
};

use serde_json::json;

/// Syscall exits of each forked child: the return from fork, `write`, and `exit_group` (seen
/// at its exit, since it never returns).
const CHILD_SYSCALLS: u64 = 3;

struct Args {
    tally: String,
    loops: usize,
    processes: usize,
    bursts: usize,
    burst_threads: usize,
    bytes: usize,
    start_after: Option<String>,
}

fn die(msg: &str) -> ! {
    eprintln!("zc-storm: {msg}");
    std::process::exit(1)
}

fn parse() -> Args {
    let mut it = std::env::args().skip(1);
    let tally = it
        .next()
        .unwrap_or_else(|| die("usage: zc-storm TALLY_PATH [OPTIONS]"));
    let mut a = Args {
        tally,
        loops: 4,
        processes: 80_000,
        bursts: 10,
        burst_threads: 200,
        bytes: 1000,
        start_after: None,
    };
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| die(&format!("{flag} needs a value")));
        let number = || {
            value
                .parse::<usize>()
                .unwrap_or_else(|_| die(&format!("{flag}: not a number: {value}")))
        };
        match flag.as_str() {
            "--loops" => a.loops = number().max(1),
            "--processes" => a.processes = number(),
            "--bursts" => a.bursts = number(),
            "--burst-threads" => a.burst_threads = number(),
            "--bytes" => a.bytes = number(),
            "--start-after" => a.start_after = Some(value),
            _ => die(&format!("unknown option {flag}")),
        }
    }
    a
}

/// Names the calling thread (what a child it forks inherits).
fn name_thread(name: &str) {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// Forks one child that writes `len` bytes of `buf` to `fd` and exits; returns its pid and
/// whether it did so (exit status 0).
fn fork_one(fd: RawFd, buf: &[u8]) -> (i32, bool) {
    // The fork syscall itself, not glibc's fork(), whose child makes a syscall of its own
    // (set_robust_list) before returning: the child's syscalls are then exactly the three of
    // `CHILD_SYSCALLS`.
    // SAFETY: the child makes only async-signal-safe calls (write, _exit) on memory that
    // fork copied; it touches no lock another thread could hold.
    let pid = unsafe { libc::syscall(libc::SYS_fork) } as i32;
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            let n = libc::write(fd, buf.as_ptr().cast(), buf.len());
            libc::_exit(if n == buf.len() as isize { 0 } else { 1 });
        }
    }
    if pid < 0 {
        return (pid, false);
    }
    let mut status = 0;
    // SAFETY: waits for our own child into a valid int.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    (
        pid,
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    )
}

fn main() {
    let a = parse();
    if let Some(path) = &a.start_after {
        while !Path::new(path).exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let devnull = CString::new("/dev/null").unwrap_or_default();
    // SAFETY: opens a NUL-terminated path.
    let fd = unsafe { libc::open(devnull.as_ptr(), libc::O_WRONLY) };
    if fd < 0 {
        die("cannot open /dev/null");
    }
    let buf = vec![b'z'; a.bytes];
    let started = Instant::now();

    // The burster first, while this process has one thread: a child of a threaded process
    // may only make async-signal-safe calls, and the burster starts threads.
    // SAFETY: the child is single-threaded like its parent at this point.
    let burster = unsafe { libc::fork() };
    if burster == 0 {
        name_thread("zcstorm-burst");
        for _ in 0..a.bursts {
            let threads: Vec<_> = (0..a.burst_threads)
                .map(|_| {
                    let buf = buf.clone();
                    std::thread::Builder::new()
                        .name("zcstorm-burst".into())
                        .spawn(move || {
                            // SAFETY: writes from a valid buffer to an open fd.
                            unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
                        })
                        .unwrap_or_else(|e| die(&format!("thread: {e}")))
                })
                .collect();
            for t in threads {
                let _ = t.join();
            }
        }
        // SAFETY: ends the burster without running anything else.
        unsafe { libc::_exit(0) };
    }
    if burster < 0 {
        die("fork of the burster failed");
    }

    let per_loop = a.processes / a.loops;
    let extra = a.processes % a.loops;
    let loops: Vec<_> = (0..a.loops)
        .map(|i| {
            let n = per_loop + usize::from(i < extra);
            let buf = buf.clone();
            std::thread::Builder::new()
                .name("zcstorm-child".into())
                .spawn(move || {
                    let mut pids = Vec::with_capacity(n);
                    let mut failed = 0usize;
                    for _ in 0..n {
                        let (pid, ok) = fork_one(fd, &buf);
                        if ok {
                            pids.push(pid);
                        } else {
                            failed += 1;
                        }
                    }
                    (pids, failed)
                })
                .unwrap_or_else(|e| die(&format!("thread: {e}")))
        })
        .collect();
    let mut pids = BTreeSet::new();
    let mut processes = 0usize;
    let mut failed = 0usize;
    for l in loops {
        let (p, f) = l.join().unwrap_or_default();
        processes += p.len();
        failed += f;
        pids.extend(p);
    }
    let mut status = 0;
    // SAFETY: waits for our own child into a valid int.
    unsafe { libc::waitpid(burster, &mut status, 0) };
    let elapsed = started.elapsed().as_secs_f64();
    let tally = json!({
        "main_pid": std::process::id(),
        "burster_pid": burster,
        "burster_ok": libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "loops": a.loops,
        "processes": processes,
        "distinct_pids": pids.len(),
        "children_failed": failed,
        "child_syscalls": CHILD_SYSCALLS,
        "bytes": a.bytes,
        "bursts": a.bursts,
        "burst_threads": a.burst_threads,
        "threads": a.bursts * a.burst_threads,
        "elapsed_s": elapsed,
        "forks_per_s": processes as f64 / elapsed,
    });
    if let Err(e) = std::fs::write(&a.tally, tally.to_string()) {
        die(&format!("writing {}: {e}", a.tally));
    }
}
