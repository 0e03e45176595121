//! CPU and scheduling: a busy loop, sleeps (voluntary context switches), a plain syscall
//! repeated, and threads.

use std::{
    ptr,
    time::{Duration, Instant},
};

use crate::{Job, args::arg, job, tally::Shared};

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
