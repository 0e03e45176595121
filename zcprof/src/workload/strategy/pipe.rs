//! The pipe that splice and vmsplice move page references through.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::workload::error::{WorkloadError, check};

pub(super) struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
}

impl Pipe {
    /// A pipe (`O_CLOEXEC`) that can hold at least `capacity` bytes if the kernel allows it.
    ///
    /// A pipe holds 16 pages (64 KiB) by default; with a larger `--buffer` we ask for more so that
    /// one chunk fits, which keeps the number of splice calls per chunk at one each way. If the
    /// kernel refuses (above `/proc/sys/fs/pipe-max-size` without CAP_SYS_RESOURCE) the default
    /// stays and the strategies simply loop over partial splices: that failure is deliberately
    /// not an error, and the tally shows the extra calls.
    pub(super) fn new(capacity: usize) -> Result<Self, WorkloadError> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        check(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
            "pipe2",
            "splice pipe",
        )?;
        // SAFETY: pipe2 succeeded: both descriptors are open and owned by nobody else.
        let pipe = unsafe {
            Self {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        if capacity > 1 << 16 {
            let want = libc::c_int::try_from(capacity).unwrap_or(libc::c_int::MAX);
            // SAFETY: F_SETPIPE_SZ on a pipe we own takes an int argument and touches no memory.
            // Result deliberately ignored: see above.
            unsafe { libc::fcntl(pipe.write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        }
        Ok(pipe)
    }
}
