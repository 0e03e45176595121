//! What a workload run reports, and the counters the strategies fill in while they run.
//!
//! The counters are incremented by the code that makes each system call, right at the call site
//! (see `sys.rs`), never estimated afterwards: the profiler's per-process numbers are checked
//! against these.

use std::collections::BTreeMap;
use std::time::Instant;

use super::error::{WorkloadError, check};

/// Calls of one system call and the bytes they moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyscallTally {
    /// Every invocation, including those that failed with `EINTR`/`EAGAIN` and were retried.
    pub calls: u64,
    /// Sum of the successful return values (bytes); for `mmap`/`munmap` the length mapped; 0 for
    /// calls that move no payload themselves (`io_uring_enter`, error-queue `recvmsg`).
    pub bytes: u64,
    /// The invocations that failed (`EINTR`, `EAGAIN`, ...), counted in `calls` too.
    pub errors: u64,
}

impl SyscallTally {
    /// One invocation: `bytes` if it succeeded, `None` if it failed.
    fn add(&mut self, bytes: Option<u64>) {
        self.calls += 1;
        match bytes {
            Some(b) => self.bytes += b,
            None => self.errors += 1,
        }
    }
}

/// Copies made in user space (`memcpy`), which the kernel cannot see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyTally {
    pub calls: u64,
    pub bytes: u64,
}

/// What the kernel said about zero-copy sends (`MSG_ZEROCOPY`, `IORING_OP_SEND_ZC`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ZeroCopyTally {
    /// Zero-copy send requests that the kernel accepted (each one is owed a completion).
    pub sends: u64,
    /// Sends whose completion was reported (the user buffer may be reused). Equals `sends` at the
    /// end of a successful run. For `MSG_ZEROCOPY` one notification may cover a range of sends;
    /// this counts the sends, not the notifications.
    pub completions: u64,
    /// The kernel reported that it fell back to copying (`SO_EE_CODE_ZEROCOPY_COPIED`,
    /// `IORING_NOTIF_USAGE_ZC_COPIED`) for at least one send. Always true over loopback: the
    /// receiving socket must not keep references to the sender's pages.
    pub copied: bool,
}

/// The result of one workload run (serialised as JSON by the CLI).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tally {
    /// The strategy, as spelled on the command line (`read-write`, `io-uring`, ...).
    pub strategy: String,
    /// PID of the sender: the process whose system calls are tallied here (the caller's).
    pub sender_pid: u32,
    /// PID of the receiver process (`None` for copy-file-range, which has no receiver).
    pub receiver_pid: Option<u32>,
    /// The source file that was sent.
    pub file: std::path::PathBuf,
    /// Chunk size used (after rounding for direct-io).
    pub buffer: u64,
    /// Payload bytes delivered to the receiver (or written to the destination file).
    pub bytes: u64,
    /// The data-moving system calls the sender made for the transfer, keyed by syscall name.
    pub syscalls: BTreeMap<String, SyscallTally>,
    /// System calls the sender made inside the measured window that move no payload: the
    /// `shutdown` that ends the stream, the `read` of the receiver's 8-byte count from a pipe,
    /// `poll` while waiting for zero-copy completions; with `--start-gate`, the `read`s of the
    /// go line from stdin just before the window. Listed so that a profiler's per-process totals
    /// can be reconciled exactly.
    pub control_syscalls: BTreeMap<String, SyscallTally>,
    /// io_uring operations completed, by opcode name (`read`, `send`, `send_zc`).
    pub io_uring_ops: BTreeMap<String, u64>,
    /// Copies made in user space (heap-buffer only).
    pub user_space_copies: CopyTally,
    /// Zero-copy sends and their completions (msg-zerocopy, and io-uring when SEND_ZC is used).
    pub zerocopy: Option<ZeroCopyTally>,
    /// Wall time from the first data-moving system call until the receiver reported that it got
    /// the whole stream (for copy-file-range: until the last copy returned).
    pub elapsed_s: f64,
    /// `bytes / 2^20 / elapsed_s`.
    pub throughput_mib_s: f64,
    /// User CPU time of the sending thread over the same window (`getrusage(RUSAGE_THREAD)`).
    pub cpu_user_s: f64,
    /// System CPU time of the sending thread over the same window. Work the kernel does in other
    /// contexts (softirqs charged elsewhere, io_uring worker threads, the receiver) is not here.
    pub cpu_sys_s: f64,
    /// Bytes the receiver counted (or the destination file's size).
    pub receiver_bytes: u64,
}

/// Counters filled in by the strategies while they run (see `sys.rs`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    syscalls: BTreeMap<&'static str, SyscallTally>,
    control: BTreeMap<&'static str, SyscallTally>,
    io_uring_ops: BTreeMap<&'static str, u64>,
    user_copies: CopyTally,
    zerocopy: Option<ZeroCopyTally>,
}

impl Counters {
    /// One invocation of a data-moving system call; `bytes` is its successful result (or the
    /// length mapped for mmap/munmap), `None` if it failed.
    pub(crate) fn syscall(&mut self, name: &'static str, bytes: Option<u64>) {
        self.syscalls.entry(name).or_default().add(bytes);
    }

    /// One invocation of a system call that moves no payload, made inside the measured window.
    pub(crate) fn control(&mut self, name: &'static str, bytes: Option<u64>) {
        self.control.entry(name).or_default().add(bytes);
    }

    /// One completed io_uring operation.
    pub(crate) fn io_uring_op(&mut self, opcode: &'static str) {
        *self.io_uring_ops.entry(opcode).or_default() += 1;
    }

    /// One user-space copy of `bytes` bytes.
    pub(crate) fn user_copy(&mut self, bytes: u64) {
        self.user_copies.calls += 1;
        self.user_copies.bytes += bytes;
    }

    /// The zero-copy counters, created on first use.
    pub(crate) fn zerocopy(&mut self) -> &mut ZeroCopyTally {
        self.zerocopy.get_or_insert_with(ZeroCopyTally::default)
    }

    pub(crate) fn into_parts(self) -> CounterParts {
        fn owned<V>(m: BTreeMap<&'static str, V>) -> BTreeMap<String, V> {
            m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
        }
        CounterParts {
            syscalls: owned(self.syscalls),
            control: owned(self.control),
            io_uring_ops: owned(self.io_uring_ops),
            user_copies: self.user_copies,
            zerocopy: self.zerocopy,
        }
    }
}

/// The counters, with owned keys, ready to go into a [`Tally`].
pub(crate) struct CounterParts {
    pub syscalls: BTreeMap<String, SyscallTally>,
    pub control: BTreeMap<String, SyscallTally>,
    pub io_uring_ops: BTreeMap<String, u64>,
    pub user_copies: CopyTally,
    pub zerocopy: Option<ZeroCopyTally>,
}

/// Wall clock and CPU time of the calling thread, taken at the start of the measured window.
///
/// `RUSAGE_THREAD` rather than `RUSAGE_SELF`: the caller may run other threads (an async runtime,
/// the profiler's own readers) whose CPU time has nothing to do with the transfer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meter {
    wall: Instant,
    user_s: f64,
    sys_s: f64,
}

/// Wall and CPU seconds spent between [`Meter::start`] and [`Meter::stop`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measured {
    pub elapsed_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
}

impl Meter {
    pub(crate) fn start() -> Result<Self, WorkloadError> {
        // Read the CPU times first: the wall clock (vDSO, no system call) is then started after
        // the getrusage system call, as close to the first data-moving call as possible.
        let (user_s, sys_s) = thread_cpu()?;
        Ok(Self {
            wall: Instant::now(),
            user_s,
            sys_s,
        })
    }

    pub(crate) fn stop(&self) -> Result<Measured, WorkloadError> {
        let elapsed_s = self.wall.elapsed().as_secs_f64();
        let (user_s, sys_s) = thread_cpu()?;
        Ok(Measured {
            elapsed_s,
            cpu_user_s: (user_s - self.user_s).max(0.0),
            cpu_sys_s: (sys_s - self.sys_s).max(0.0),
        })
    }
}

/// User and system CPU seconds of the calling thread.
fn thread_cpu() -> Result<(f64, f64), WorkloadError> {
    // SAFETY: rusage is plain old data; all-zero is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    check(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) },
        "getrusage",
        "RUSAGE_THREAD",
    )?;
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    Ok((secs(ru.ru_utime), secs(ru.ru_stime)))
}
