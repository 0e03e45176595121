//! The receiver: a separate process that accepts one TCP connection on 127.0.0.1, reads and
//! discards everything, and reports the byte count to the sender through a pipe.
//!
//! Why a process and not a thread: the profiler counts per PID, and the receiver's `read`s (one
//! more CPU copy, socket buffer -> user) must not be charged to the sender.
//!
//! Why `fork()` and not `Command`: the workload is a library function; re-executing the current
//! binary would need a hidden CLI entry point in main.rs. `fork()` is only safe if the child
//! restricts itself to async-signal-safe operations (other threads may have held locks, e.g. the
//! allocator's, at the moment of the fork), so the child below only makes raw system calls on
//! descriptors and memory prepared by the parent before the fork, and leaves with `_exit`.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::error::{WorkloadError, check};
use super::sys;
use super::tally::Counters;

/// Size of the receiver's read buffer.
const RECV_BUF: usize = 1 << 20;

/// Exit codes of the receiver process (besides 0, success).
const EXIT_ACCEPT: i32 = 10;
const EXIT_READ: i32 = 11;
const EXIT_REPORT: i32 = 12;

/// The forked receiver process, as seen by the sender.
///
/// Dropping it without [`Receiver::reap`] (an error path) kills and reaps the child, so that a
/// failed run leaves neither a process blocked in `accept` nor a zombie behind.
pub(crate) struct Receiver {
    pid: libc::pid_t,
    /// Read end of the pipe on which the child writes its byte count (8 bytes, little endian).
    count_pipe: OwnedFd,
    reaped: bool,
}

impl Receiver {
    /// Listen on an ephemeral port of 127.0.0.1, fork the receiver, connect to it.
    /// Returns the receiver and the sender's connected socket.
    pub(crate) fn spawn() -> Result<(Self, TcpStream), WorkloadError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| {
            WorkloadError::syscall("socket/bind/listen", "receiver listening socket", e)
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| WorkloadError::syscall("getsockname", "receiver listening socket", e))?;

        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        check(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
            "pipe2",
            "receiver count pipe",
        )?;
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (count_r, count_w) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

        // Allocated before the fork: the child must not call the allocator.
        let mut buf = vec![0u8; RECV_BUF];

        // SAFETY: fork has no memory-safety preconditions of its own; what makes it sound here is
        // that the child (pid 0 branch) only runs `receiver_main`, which makes raw system calls
        // on the descriptors and buffer prepared above and never returns (it calls `_exit`).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(WorkloadError::last_os("fork", "receiver process"));
        }
        if pid == 0 {
            receiver_main(
                listener.as_raw_fd(),
                count_w.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }

        // Parent. The child has its own copies of these; ours would only keep the listening
        // socket and the pipe's write end alive (and hide the child's death from `read`).
        drop(listener);
        drop(count_w);
        drop(buf);
        let receiver = Self {
            pid,
            count_pipe: count_r,
            reaped: false,
        };
        let sock = TcpStream::connect(addr)
            .map_err(|e| WorkloadError::syscall("connect", "socket to receiver", e))?;
        Ok((receiver, sock))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Wait for the receiver's byte count (it writes it after reading end-of-stream, so the
    /// sender must have shut down its side of the connection first).
    pub(crate) fn wait_count(&mut self, c: &mut Counters) -> Result<u64, WorkloadError> {
        let mut bytes = [0u8; 8];
        let mut got = 0;
        while got < bytes.len() {
            let n = sys::read_control(
                c,
                self.count_pipe.as_fd(),
                &mut bytes[got..],
                "receiver count pipe",
            )?;
            if n == 0 {
                let status = self.reap_status()?;
                return Err(WorkloadError::Receiver(format!(
                    "exited without reporting its byte count ({})",
                    describe_status(status)
                )));
            }
            got += n;
        }
        Ok(u64::from_le_bytes(bytes))
    }

    /// Wait for the receiver to exit and check that it succeeded.
    pub(crate) fn reap(mut self) -> Result<(), WorkloadError> {
        let status = self.reap_status()?;
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(())
        } else {
            Err(WorkloadError::Receiver(describe_status(status)))
        }
    }

    fn reap_status(&mut self) -> Result<libc::c_int, WorkloadError> {
        let mut status = 0;
        loop {
            // SAFETY: `status` is a valid int to write; `pid` is our own, not yet reaped child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r >= 0 {
                self.reaped = true;
                return Ok(status);
            }
            if !super::error::interrupted() {
                return Err(WorkloadError::last_os("waitpid", "receiver process"));
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // Error path: the child may be blocked in accept or read. Kill and reap it; failures here
        // cannot be reported (we are already unwinding an error) and leave at worst a zombie.
        // SAFETY: `pid` is our own child, not yet reaped, so it cannot have been recycled.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(self.pid, &mut status, 0) < 0 && super::error::interrupted() {}
        }
    }
}

fn describe_status(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        let code = libc::WEXITSTATUS(status);
        let why = match code {
            0 => "success",
            EXIT_ACCEPT => "accept failed",
            EXIT_READ => "read from the socket failed",
            EXIT_REPORT => "writing the count to the pipe failed",
            _ => "unknown exit code",
        };
        format!("exit code {code}: {why}")
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// The child process: accept, read until end of stream, report the count, `_exit`.
///
/// Only raw system calls: no allocation, no locks, no panics (wrapping arithmetic), no return.
fn receiver_main(listener: RawFd, count_w: RawFd, buf: *mut u8, buf_len: usize) -> ! {
    close_other_fds(listener, count_w);

    let conn = loop {
        // SAFETY: null address pointers are allowed (we do not want the peer's address).
        let fd = unsafe { libc::accept(listener, std::ptr::null_mut(), std::ptr::null_mut()) };
        if fd >= 0 {
            break fd;
        }
        if !super::error::interrupted() {
            exit(EXIT_ACCEPT);
        }
    };
    // SAFETY: `listener` is our copy of the listening socket; nothing else uses it in the child.
    unsafe { libc::close(listener) };

    let mut count: u64 = 0;
    loop {
        // SAFETY: `buf` points to `buf_len` writable bytes allocated by the parent before the fork
        // (the child has its own copy-on-write copy of that memory).
        let n = unsafe { libc::read(conn, buf.cast(), buf_len) };
        if n > 0 {
            count = count.wrapping_add(n as u64);
        } else if n == 0 {
            break;
        } else if !super::error::interrupted() {
            exit(EXIT_READ);
        }
    }

    let bytes = count.to_le_bytes();
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: `bytes[off..]` is a valid readable range; `count_w` is the pipe's write end.
        let n = unsafe { libc::write(count_w, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if n > 0 {
            off += n as usize;
        } else if n == 0 || !super::error::interrupted() {
            exit(EXIT_REPORT);
        }
    }
    exit(0)
}

/// Close every descriptor the child inherited except stdio and the two it needs.
///
/// Hygiene, not correctness: inherited copies of the parent's other descriptors (another
/// concurrent run's sockets or pipes, a profiler's perf or BPF descriptors) would otherwise stay
/// open as long as the receiver lives. Failure (a kernel without close_range, 5.9+) is harmless.
fn close_other_fds(a: RawFd, b: RawFd) {
    let (lo, hi) = if a < b {
        (a as u32, b as u32)
    } else {
        (b as u32, a as u32)
    };
    let ranges = [
        (3, lo.checked_sub(1)),
        (lo + 1, hi.checked_sub(1)),
        (hi + 1, Some(u32::MAX)),
    ];
    for (first, last) in ranges {
        // Never close stdio: diagnostics of a crashing child should still go somewhere.
        let first = first.max(3);
        if let Some(last) = last
            && first <= last
        {
            // SAFETY: closing descriptors that no Rust object in the child will ever use (the
            // child only runs this function and `receiver_main`).
            unsafe { libc::close_range(first, last, 0) };
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: `_exit` ends the process immediately without running atexit handlers or Rust
    // destructors, which belong to the parent's state.
    unsafe { libc::_exit(code) }
}
