//! Counted system calls: every data-moving call the sender makes goes through one of these
//! wrappers, which records the call (and its result) in the [`Counters`] right where the call is
//! made. A call interrupted by a signal (`EINTR`) is counted and retried, since the profiler sees
//! it too.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::error::WorkloadError;
use super::tally::Counters;

/// Make one system call that returns `ssize_t`, retrying on `EINTR`; record every attempt under
/// `name` in the data-moving (`control == false`) or control tally.
fn counted(
    c: &mut Counters,
    name: &'static str,
    control: bool,
    mut call: impl FnMut() -> isize,
) -> io::Result<u64> {
    loop {
        let ret = call();
        // Take errno before anything else can overwrite it (the tally may allocate).
        let result = if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as u64)
        };
        let bytes = result.as_ref().ok().copied();
        if control {
            c.control(name, bytes);
        } else {
            c.syscall(name, bytes);
        }
        match result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `read(fd, buf)`.
pub(crate) fn read(
    c: &mut Counters,
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    target: &'static str,
) -> Result<usize, WorkloadError> {
    let (ptr, len) = (buf.as_mut_ptr(), buf.len());
    counted(c, "read", false, || {
        // SAFETY: `ptr` is valid for writes of `len` bytes for the duration of the call (it comes
        // from a live `&mut [u8]`), and `fd` is an open descriptor borrowed for the call.
        unsafe { libc::read(fd.as_raw_fd(), ptr.cast(), len) }
    })
    .map(|n| n as usize)
    .map_err(|e| WorkloadError::syscall("read", target, e))
}

/// Fill `buf` completely with `read`s (regular files may return short counts, e.g. on signals).
/// `done`/`expected` only serve the error message if the file ends early.
pub(crate) fn read_full(
    c: &mut Counters,
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    target: &'static str,
    done: u64,
    expected: u64,
) -> Result<(), WorkloadError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = read(c, fd, &mut buf[filled..], target)?;
        if n == 0 {
            return Err(WorkloadError::UnexpectedEof {
                syscall: "read",
                target,
                done: done + filled as u64,
                expected,
            });
        }
        filled += n;
    }
    Ok(())
}

/// `write(fd, buf)`.
pub(crate) fn write(
    c: &mut Counters,
    fd: BorrowedFd<'_>,
    buf: &[u8],
    target: &'static str,
) -> Result<usize, WorkloadError> {
    let (ptr, len) = (buf.as_ptr(), buf.len());
    counted(c, "write", false, || {
        // SAFETY: `ptr` is valid for reads of `len` bytes (from a live `&[u8]`); `fd` is open.
        unsafe { libc::write(fd.as_raw_fd(), ptr.cast(), len) }
    })
    .map(|n| n as usize)
    .map_err(|e| WorkloadError::syscall("write", target, e))
}

/// `write` until all of `buf` is written (a blocking socket may still accept less than asked
/// when interrupted).
pub(crate) fn write_all(
    c: &mut Counters,
    fd: BorrowedFd<'_>,
    buf: &[u8],
    target: &'static str,
) -> Result<(), WorkloadError> {
    let mut off = 0;
    while off < buf.len() {
        let n = write(c, fd, &buf[off..], target)?;
        if n == 0 {
            return Err(WorkloadError::NoProgress {
                syscall: "write",
                target,
                done: off as u64,
            });
        }
        off += n;
    }
    Ok(())
}

/// `sendfile(out, in, NULL, count)`: from the file's current position.
pub(crate) fn sendfile(
    c: &mut Counters,
    out: BorrowedFd<'_>,
    input: BorrowedFd<'_>,
    count: usize,
    target: &'static str,
) -> Result<usize, WorkloadError> {
    counted(c, "sendfile", false, || {
        // SAFETY: both descriptors are open for the call; a null offset makes the kernel use and
        // advance the input file's position, so no pointer is dereferenced.
        unsafe {
            libc::sendfile(
                out.as_raw_fd(),
                input.as_raw_fd(),
                std::ptr::null_mut(),
                count,
            )
        }
    })
    .map(|n| n as usize)
    .map_err(|e| WorkloadError::syscall("sendfile", target, e))
}

/// `splice(in, NULL, out, NULL, len, flags)`: both ends use their own positions (a pipe and a
/// socket have none; a file uses and advances its current position).
pub(crate) fn splice(
    c: &mut Counters,
    input: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    len: usize,
    flags: libc::c_uint,
    target: &'static str,
) -> Result<usize, WorkloadError> {
    counted(c, "splice", false, || {
        // SAFETY: both descriptors are open for the call; null offsets are allowed and mean "use
        // the descriptor's position", so no pointer is dereferenced.
        unsafe {
            libc::splice(
                input.as_raw_fd(),
                std::ptr::null_mut(),
                out.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                flags,
            )
        }
    })
    .map(|n| n as usize)
    .map_err(|e| WorkloadError::syscall("splice", target, e))
}

/// `vmsplice(pipe, [iov(buf)], 1, flags)`: maps the pages of `buf` into the pipe by reference.
///
/// # Safety
/// The kernel keeps references to the pages of `buf` after the call returns (in the pipe, then in
/// whatever the pipe is spliced to): the caller must neither write to nor free `buf` until every
/// consumer is done with those bytes.
pub(crate) unsafe fn vmsplice(
    c: &mut Counters,
    pipe: BorrowedFd<'_>,
    buf: &[u8],
    flags: libc::c_uint,
    target: &'static str,
) -> Result<usize, WorkloadError> {
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    counted(c, "vmsplice", false, || {
        // SAFETY: `iov` describes the live slice `buf` and outlives the call; without
        // SPLICE_F_GIFT the kernel only reads (references) those pages. Keeping the pages
        // untouched afterwards is this function's contract with its caller.
        unsafe { libc::vmsplice(pipe.as_raw_fd(), &iov, 1, flags) }
    })
    .map(|n| n as usize)
    .map_err(|e| WorkloadError::syscall("vmsplice", target, e))
}

/// `mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0)`, counted with the length mapped.
pub(crate) fn mmap_shared_ro(
    c: &mut Counters,
    fd: BorrowedFd<'_>,
    len: usize,
    target: &'static str,
) -> Result<*mut u8, WorkloadError> {
    loop {
        // SAFETY: a fresh mapping chosen by the kernel (null hint, no MAP_FIXED) cannot alias any
        // existing Rust object; `fd` is open for the call.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            c.syscall("mmap", None);
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(WorkloadError::syscall("mmap", target, e));
        }
        c.syscall("mmap", Some(len as u64));
        return Ok(p.cast());
    }
}

/// `munmap(addr, len)`, counted with the length unmapped.
///
/// # Safety
/// `addr..addr+len` must be a mapping made by [`mmap_shared_ro`] that nothing references any more.
pub(crate) unsafe fn munmap(
    c: &mut Counters,
    addr: *mut u8,
    len: usize,
    target: &'static str,
) -> Result<(), WorkloadError> {
    // SAFETY: the caller guarantees the range is our own mapping and is no longer borrowed.
    let ret = unsafe { libc::munmap(addr.cast(), len) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        c.syscall("munmap", None);
        return Err(WorkloadError::syscall("munmap", target, e));
    }
    c.syscall("munmap", Some(len as u64));
    Ok(())
}

/// `sendmsg(fd, {iov(buf)}, flags)`. Returns the raw `io::Error` so that callers can react to
/// `ENOBUFS` (zero-copy sends over the locked-memory / optmem limit).
pub(crate) fn sendmsg(
    c: &mut Counters,
    fd: BorrowedFd<'_>,
    buf: &[u8],
    flags: libc::c_int,
) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero means no name, no control data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    counted(c, "sendmsg", false, || {
        // SAFETY: `msg` points at `iov`, which describes the live slice `buf`; both outlive the
        // call. With MSG_ZEROCOPY the kernel keeps referencing `buf` after the call: the caller
        // must keep it untouched until the completion arrives (msg_zerocopy.rs does).
        unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags) }
    })
    .map(|n| n as usize)
}

/// `recvmsg(fd, msg, flags)` into a caller-prepared header (used for `MSG_ERRQUEUE`).
/// Returns the raw `io::Error` so that callers can treat `EAGAIN` (queue empty) as normal.
///
/// # Safety
/// Every buffer `msg` points to (iovecs, control buffer) must be valid for writes of the lengths
/// it states for the duration of the call.
pub(crate) unsafe fn recvmsg(
    c: &mut Counters,
    fd: BorrowedFd<'_>,
    msg: &mut libc::msghdr,
    flags: libc::c_int,
) -> io::Result<usize> {
    counted(c, "recvmsg", false, || {
        // SAFETY: guaranteed by this function's caller (see above).
        unsafe { libc::recvmsg(fd.as_raw_fd(), msg, flags) }
    })
    .map(|n| n as usize)
}

/// `copy_file_range(in, NULL, out, NULL, len, 0)`: both files use and advance their positions.
pub(crate) fn copy_file_range(
    c: &mut Counters,
    input: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    len: usize,
    target: &'static str,
) -> Result<usize, WorkloadError> {
    counted(c, "copy_file_range", false, || {
        // SAFETY: both descriptors are open for the call; null offsets mean "use the file
        // positions", so no pointer is dereferenced.
        unsafe {
            libc::copy_file_range(
                input.as_raw_fd(),
                std::ptr::null_mut(),
                out.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                0,
            ) as isize
        }
    })
    .map(|n| n as usize)
    .map_err(|e| WorkloadError::syscall("copy_file_range", target, e))
}

/// `io_uring_enter` through the io-uring crate's `submit_and_wait(want)`: submits everything
/// queued and waits for at least `want` completions. Without SQPOLL (we never set it up) the
/// crate makes exactly one `io_uring_enter` system call per `submit_and_wait`. Its return value
/// counts submitted entries, not bytes, so no bytes are recorded for it.
pub(crate) fn io_uring_enter(
    c: &mut Counters,
    ring: &io_uring::IoUring,
    want: usize,
) -> Result<usize, WorkloadError> {
    loop {
        let r = ring.submit_and_wait(want);
        c.syscall("io_uring_enter", None);
        match r {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EBUSY: the completion queue is full and must be reaped first; the caller always
            // drains it before entering again, so this is a genuine failure here too.
            Err(e) => return Err(WorkloadError::syscall("io_uring_enter", "ring", e)),
        }
    }
}

/// `shutdown(fd, SHUT_WR)`: tells the receiver the stream is complete (control call).
pub(crate) fn shutdown_write(c: &mut Counters, fd: BorrowedFd<'_>) -> Result<(), WorkloadError> {
    // SAFETY: `fd` is an open socket borrowed for the call.
    let ret = unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
    let result = if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    c.control("shutdown", None);
    result.map_err(|e| WorkloadError::syscall("shutdown", "socket", e))
}

/// `poll([fd, events], 1, timeout_ms)`: returns the `revents` (0 on timeout). Control call.
pub(crate) fn poll_one(
    c: &mut Counters,
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout_ms: libc::c_int,
    target: &'static str,
) -> Result<libc::c_short, WorkloadError> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid, writable pollfd for the duration of the call.
        let ret = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        let result = if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        };
        // poll returns a number of ready descriptors, not bytes: record no bytes.
        c.control("poll", None);
        match result {
            Ok(()) => return Ok(pfd.revents),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WorkloadError::syscall("poll", target, e)),
        }
    }
}

/// `read` on a descriptor that carries no payload (the receiver's count pipe). Control call.
pub(crate) fn read_control(
    c: &mut Counters,
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    target: &'static str,
) -> Result<usize, WorkloadError> {
    let (ptr, len) = (buf.as_mut_ptr(), buf.len());
    counted(c, "read", true, || {
        // SAFETY: `ptr` is valid for writes of `len` bytes (from a live `&mut [u8]`); `fd` is open.
        unsafe { libc::read(fd.as_raw_fd(), ptr.cast(), len) }
    })
    .map(|n| n as usize)
    .map_err(|e| WorkloadError::syscall("read", target, e))
}
