//! CPU and scheduling: a busy loop, sleeps (voluntary context switches), a plain syscall
//! repeated, threads, and threads renamed.

use std::{
    ptr,
    time::{Duration, Instant},
};

use crate::{Job, args::arg, errno, errstr, job, tally::Shared};

/// One counted clock_nanosleep of `ns` nanoseconds (less than a second) on CLOCK_MONOTONIC.
pub fn clock_nanosleep(t: &mut Shared, ns: i64) -> Result<(), String> {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: ns,
    };
    // SAFETY: ts is valid, no remainder requested.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clock_nanosleep,
            libc::CLOCK_MONOTONIC,
            0,
            &ts as *const libc::timespec,
            ptr::null_mut::<libc::timespec>(),
        )
    };
    t.call("clock_nanosleep", r).map(|_| ())
}

/// `spin MS`: a busy loop of MS milliseconds, without a syscall.
pub fn spin(rest: &[String]) -> Result<Job, String> {
    let ms = arg(rest, 0, "MS")?;
    job(move |_| {
        // Instant::now() uses the vDSO: no syscalls.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(ms as u64) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        Ok(())
    })
}

/// `sleep-switch N`: N sleeps of 1 ms, each a voluntary context switch.
pub fn sleep_switch(rest: &[String]) -> Result<Job, String> {
    let n = arg(rest, 0, "N")?;
    job(move |t| {
        for _ in 0..n {
            clock_nanosleep(t, 1_000_000)?;
        }
        Ok(())
    })
}

/// `getpid N`: N getpid syscalls.
pub fn getpid(rest: &[String]) -> Result<Job, String> {
    let n = arg(rest, 0, "N")?;
    job(move |t| {
        for _ in 0..n {
            // SAFETY: getpid has no arguments.
            t.call("getpid", unsafe { libc::syscall(libc::SYS_getpid) })?;
        }
        Ok(())
    })
}

/// `threads T N`: T threads doing N getpid each.
pub fn threads(rest: &[String]) -> Result<Job, String> {
    // Thread creation and exit are done by std: untracked syscalls.
    let nthreads = arg(rest, 0, "T")?;
    let n = arg(rest, 1, "N")?;
    job(move |t| {
        t.untracked = true;
        let hs: Vec<_> = (0..nthreads)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..n {
                        // SAFETY: getpid has no arguments.
                        if unsafe { libc::syscall(libc::SYS_getpid) } < 0 {
                            return Err("getpid failed".to_string());
                        }
                    }
                    Ok(n as u64)
                })
            })
            .collect();
        let mut total = 0;
        for h in hs {
            total += h.join().map_err(|_| "thread panicked".to_string())??;
        }
        t.cell("getpid")?.calls += total;
        Ok(())
    })
}

/// `rename`: one thread names itself `zc-self-named` (prctl PR_SET_NAME); another is named
/// `zc-peer-named` by the worker, through /proc/self/task/TID/comm (the kernel renames a task
/// that is not the one running). The worker's own name stays.
pub fn rename(_rest: &[String]) -> Result<Job, String> {
    job(move |t| {
        // Thread creation and the /proc write are done by std: untracked syscalls.
        t.untracked = true;
        let own = std::thread::spawn(|| {
            let name = c"zc-self-named";
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
                return Err(format!("prctl(PR_SET_NAME): {}", errstr(errno())));
            }
            Ok(())
        });
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            // SAFETY: gettid has no arguments.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            // Alive until the worker has renamed it.
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().map_err(|_| "peer thread gone".to_string())?;
        std::fs::write(format!("/proc/self/task/{tid}/comm"), "zc-peer-named")
            .map_err(|e| format!("renaming thread {tid}: {e}"))?;
        let _ = done_tx.send(());
        own.join().map_err(|_| "thread panicked".to_string())??;
        peer.join().map_err(|_| "thread panicked".to_string())?;
        Ok(())
    })
}
