//! Many live processes, cheaply: a helper process forks `n` children that only `pause()`.
//! Dropping [`Sleepers`] closes the helper's control pipe; the helper then kills and reaps its
//! children and exits, and is reaped in turn. Nothing is left behind, and nothing relies on
//! the machine's init to reap orphans.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use anyhow::{Result, bail};

pub struct Sleepers {
    helper: libc::pid_t,
    /// Closing it tells the helper to finish.
    control: Option<OwnedFd>,
    pub count: usize,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are new descriptors that only we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Sleepers {
    /// Forks the helper and its `n` paused children; returns once they all exist.
    pub fn spawn(n: usize) -> Result<Sleepers> {
        let (ready_r, ready_w) = pipe()?;
        let (control_r, control_w) = pipe()?;
        // Allocated before forking: the helper must not allocate (the parent has threads).
        let mut pids: Vec<libc::pid_t> = Vec::with_capacity(n);
        // SAFETY: fork has no preconditions; the child below only makes async-signal-safe
        // calls (fork, pause, write, read, kill, waitpid, _exit) and pushes within capacity.
        let helper = unsafe { libc::fork() };
        if helper < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if helper == 0 {
            // SAFETY: see above; this never returns.
            unsafe {
                libc::close(control_w.as_raw_fd());
                libc::close(ready_r.as_raw_fd());
                for _ in 0..n {
                    let pid = libc::fork();
                    if pid == 0 {
                        loop {
                            libc::pause();
                        }
                    }
                    if pid < 0 {
                        break;
                    }
                    pids.push(pid);
                }
                let made = pids.len() as u64;
                libc::write(
                    ready_w.as_raw_fd(),
                    (&made as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                );
                let mut byte = 0u8;
                loop {
                    let r = libc::read(control_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                    if r == 0 || (r < 0 && *libc::__errno_location() != libc::EINTR) {
                        break;
                    }
                }
                for &pid in &pids {
                    libc::kill(pid, libc::SIGKILL);
                }
                for &pid in &pids {
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                libc::_exit(0);
            }
        }
        drop(ready_w);
        drop(control_r);
        let mut sleepers = Sleepers {
            helper,
            control: Some(control_w),
            count: 0,
        };
        // Forking n processes takes about n × 0.1 ms; allow plenty.
        let timeout = Duration::from_secs(120);
        let mut pfd = libc::pollfd {
            fd: ready_r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let polled = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if polled <= 0 {
            bail!("the helper did not fork {n} processes within {timeout:?}");
        }
        let mut made = 0u64;
        // SAFETY: reading 8 bytes into a u64.
        let r = unsafe {
            libc::read(
                ready_r.as_raw_fd(),
                (&mut made as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if r != std::mem::size_of::<u64>() as isize {
            bail!("the helper that forks the processes died");
        }
        sleepers.count = made as usize;
        if sleepers.count < n {
            bail!(
                "could fork only {} of {n} processes (pid or memory limits?)",
                sleepers.count
            );
        }
        Ok(sleepers)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        self.control = None;
        // SAFETY: `helper` is our child; waiting for it reaps it.
        unsafe {
            libc::waitpid(self.helper, std::ptr::null_mut(), 0);
        }
    }
}
