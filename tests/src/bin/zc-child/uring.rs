//! io_uring: one operation in flight at a time (read, write, send), each submitted and waited
//! for with one io_uring_enter.

use std::path::Path;

use crate::{
    Job,
    args::{direct_sizes, n_chunk},
    direct::{aligned_buf, open_direct},
    endpoints::{big_buffers, make_file, open, pattern, tcp_pair},
    errstr, job,
    tally::Shared,
    transfer::{chunks, drain_recv},
};

/// A 4-entry io_uring, made in the worker. Its setup (io_uring_setup, the ring's mmaps) is
/// done inside the io-uring crate, so the worker's syscalls are no longer all tallied.
fn new_ring(t: &mut Shared) -> Result<io_uring::IoUring, String> {
    t.untracked = true;
    io_uring::IoUring::new(4).map_err(|e| format!("io_uring_setup: {e}"))
}

/// Submits one io_uring operation and waits for its completion, tallying the io_uring_enter
/// syscall and the operation as `name` (`io_uring:OP`) with its result.
///
/// # Safety
///
/// The memory `e` refers to must be valid until this returns (it waits for the completion).
unsafe fn uring_op(
    t: &mut Shared,
    ring: &mut io_uring::IoUring,
    e: &io_uring::squeue::Entry,
    name: &'static str,
) -> Result<usize, String> {
    // SAFETY: the caller keeps e's buffers alive until the operation completes, below.
    unsafe { ring.submission().push(e) }.map_err(|_| "SQ full".to_string())?;
    let r = ring.submit_and_wait(1);
    t.call("io_uring_enter", if r.is_ok() { 0 } else { -1 })?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| "no completion".to_string())?;
    let res = cqe.result();
    let c = t.cell(name)?;
    c.calls += 1;
    if res < 0 {
        c.errors += 1;
        return Err(format!("{name}: {}", errstr(-res)));
    }
    c.bytes += res as u64;
    Ok(res as usize)
}

/// `io-uring N [CHUNK]`: IORING_OP_READ of a file of N bytes.
pub fn read(rest: &[String], dir: &Path) -> Result<Job, String> {
    // The ring's own setup (io_uring_setup, its mmaps) happens inside the io-uring crate:
    // untracked.
    let (n, chunk) = n_chunk(rest)?;
    let fd = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
    let mut buf = vec![0u8; chunk];
    job(move |t| {
        let mut ring = new_ring(t)?;
        chunks(n, chunk, |off, len| {
            let e =
                io_uring::opcode::Read::new(io_uring::types::Fd(fd), buf.as_mut_ptr(), len as u32)
                    .offset(off as u64)
                    .build()
                    .user_data(7);
            // SAFETY: buf outlives the call, which waits for the operation.
            unsafe { uring_op(t, &mut ring, &e, "io_uring:read") }
        })
    })
}

/// `io-uring-write N [CHUNK]`: IORING_OP_WRITE of N bytes to a new file, buffered.
pub fn write(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    let fd = open(&dir.join("out"), flags)?;
    let buf = Vec::leak(pattern(chunk)) as &mut [u8];
    write_job(n, chunk, fd, buf)
}

/// `io-uring-write-direct N CHUNK`: IORING_OP_WRITE of N bytes to a new O_DIRECT file from a
/// page-aligned buffer.
pub fn write_direct(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    direct_sizes("io-uring-write-direct", n, chunk)?;
    let fd = open_direct(&dir.join("out"), flags)?;
    let buf = aligned_buf(chunk)?;
    write_job(n, chunk, fd, buf)
}

/// IORING_OP_WRITE of N bytes from `buf` to `fd`, CHUNK at a time. Ring setup is untracked,
/// as in `io-uring`.
fn write_job(n: usize, chunk: usize, fd: i32, buf: &'static mut [u8]) -> Result<Job, String> {
    job(move |t| {
        let mut ring = new_ring(t)?;
        chunks(n, chunk, |off, len| {
            let e = io_uring::opcode::Write::new(io_uring::types::Fd(fd), buf.as_ptr(), len as u32)
                .offset(off as u64)
                .build()
                .user_data(8);
            // SAFETY: buf outlives the call, which waits for the operation.
            unsafe { uring_op(t, &mut ring, &e, "io_uring:write") }
        })
    })
}

/// `io-uring-send N [CHUNK]`: IORING_OP_SEND on a TCP loopback socket, the peer drained with
/// recv() after each operation. Ring setup is untracked, as in `io-uring`.
pub fn send(rest: &[String]) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    let (c, s) = tcp_pair()?;
    big_buffers(c);
    big_buffers(s);
    let wbuf = pattern(chunk);
    let mut rbuf = vec![0u8; chunk];
    job(move |t| {
        let mut ring = new_ring(t)?;
        chunks(n, chunk, |_, len| {
            let e = io_uring::opcode::Send::new(io_uring::types::Fd(c), wbuf.as_ptr(), len as u32)
                .build()
                .user_data(9);
            // SAFETY: wbuf outlives the call, which waits for the operation.
            let got = unsafe { uring_op(t, &mut ring, &e, "io_uring:send") }?;
            drain_recv(t, s, &mut rbuf, got)?;
            Ok(got)
        })
    })
}
