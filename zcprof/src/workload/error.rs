//! The error type of the workload and the helpers that turn a libc return value into it.

use std::io;

/// Everything that can make `zcprof workload` fail.
///
/// A failing system call always names the call and the kind of descriptor it was made on
/// (`socket`, `file`, `pipe write end`, ...), because the same call (`read`, `splice`) is made on
/// several kinds of descriptor by the different strategies.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The options make no sense (zero size, zero buffer, ...).
    #[error("invalid workload options: {0}")]
    InvalidArgs(String),

    /// A system call failed.
    #[error("{syscall}({target}) failed: {source}")]
    Syscall {
        /// The system call, as the kernel names it (`sendfile`, `io_uring_enter`, ...).
        syscall: &'static str,
        /// What it was made on, e.g. `socket <- file` or `pipe write end`.
        target: &'static str,
        #[source]
        source: io::Error,
    },

    /// Preparing the source file (create, write, rename, warm the page cache) failed.
    #[error("source file {path}: {what}: {source}")]
    SourceFile {
        path: std::path::PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },

    /// A read of the source file (or a splice/sendfile from it) reached its end before `size`
    /// bytes were transferred: someone truncated the file under us.
    #[error("{syscall}({target}) hit end of file after {done} of {expected} bytes")]
    UnexpectedEof {
        syscall: &'static str,
        target: &'static str,
        done: u64,
        expected: u64,
    },

    /// A call that must make progress returned 0 (e.g. a write to a socket).
    #[error("{syscall}({target}) made no progress (returned 0) after {done} bytes")]
    NoProgress {
        syscall: &'static str,
        target: &'static str,
        done: u64,
    },

    /// The kernel answered with something the protocol does not allow (a malformed error-queue
    /// message, an io_uring completion nobody asked for, ...).
    #[error("unexpected kernel answer: {0}")]
    Protocol(String),

    /// `--start-gate`: the go line never came.
    #[error("start gate: {0}")]
    StartGate(&'static str),

    /// The receiver process died or could not report its byte count.
    #[error("receiver process: {0}")]
    Receiver(String),

    /// The receiver (or the destination file) got a different number of bytes than were sent.
    #[error("byte count mismatch: sender delivered {sent} bytes but the receiver got {received}")]
    Mismatch { sent: u64, received: u64 },
}

impl WorkloadError {
    /// A failed system call, with `errno` taken from the calling thread.
    pub(crate) fn last_os(syscall: &'static str, target: &'static str) -> Self {
        Self::Syscall {
            syscall,
            target,
            source: io::Error::last_os_error(),
        }
    }

    /// A failed system call with an explicit error (io_uring reports `-errno` in its completions,
    /// the io-uring crate returns `io::Error`).
    pub(crate) fn syscall(syscall: &'static str, target: &'static str, source: io::Error) -> Self {
        Self::Syscall {
            syscall,
            target,
            source,
        }
    }
}

/// Whether the last failed libc call failed with `EINTR` (and so should be retried).
pub(crate) fn interrupted() -> bool {
    io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
}

/// Check the return value of a libc call that returns `-1` on failure and something
/// non-negative otherwise.
pub(crate) fn check(
    ret: libc::c_int,
    syscall: &'static str,
    target: &'static str,
) -> Result<libc::c_int, WorkloadError> {
    if ret < 0 {
        Err(WorkloadError::last_os(syscall, target))
    } else {
        Ok(ret)
    }
}
