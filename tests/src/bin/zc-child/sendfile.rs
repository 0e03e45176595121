//! sendfile(): from a file into a TCP socket, another file, a pipe, a character device or an
//! O_DIRECT file.

use std::{path::Path, ptr};

use crate::{
    Job,
    args::{check_pipe_chunk, direct_sizes, n_chunk},
    direct::open_direct,
    endpoints::{big_buffers, make_file, open, pipe, tcp_pair},
    job,
    transfer::{chunks, drain_read, drain_recv},
};

/// `sendfile-socket N [CHUNK]`: sendfile() a file into a TCP loopback socket, the peer
/// drained with recv().
pub fn to_socket(rest: &[String], dir: &Path) -> Result<Job, String> {
    to_socket_or_file(rest, dir, true)
}

/// `sendfile-file N [CHUNK]`: sendfile() a file into a new file.
pub fn to_file(rest: &[String], dir: &Path) -> Result<Job, String> {
    to_socket_or_file(rest, dir, false)
}

/// `sendfile-socket` (`to_socket`) or `sendfile-file`. One job for both: the file case also
/// makes (and its worker frees) the receive buffer, as it always has.
fn to_socket_or_file(rest: &[String], dir: &Path, to_socket: bool) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    let inf = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
    let (out, peer) = if to_socket {
        let (c, s) = tcp_pair()?;
        big_buffers(c);
        big_buffers(s);
        (c, s)
    } else {
        (
            open(
                &dir.join("out"),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            )?,
            -1,
        )
    };
    let mut rbuf = vec![0u8; chunk.max(1)];
    job(move |t| {
        chunks(n, chunk, |_, len| {
            // SAFETY: plain descriptors, NULL offset (use the file position).
            let r = unsafe { libc::sendfile(out, inf, ptr::null_mut(), len) };
            let got = t.xfer("sendfile", r)?;
            if to_socket {
                drain_recv(t, peer, &mut rbuf, got)?;
            }
            Ok(got)
        })
    })
}

/// `sendfile-pipe N [CHUNK]`: sendfile() from a file into a pipe's write end, drained with
/// read().
pub fn to_pipe(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    check_pipe_chunk(chunk)?;
    let inf = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
    let (r, w) = pipe()?;
    let mut rbuf = vec![0u8; chunk];
    job(move |t| {
        chunks(n, chunk, |_, len| {
            // SAFETY: plain descriptors, NULL offset (use the file position).
            let got = t.xfer("sendfile", unsafe {
                libc::sendfile(w, inf, ptr::null_mut(), len)
            })?;
            drain_read(t, r, &mut rbuf, got)?;
            Ok(got)
        })
    })
}

/// `sendfile-dev N [CHUNK]`: sendfile() from a file into /dev/null (a character device).
pub fn to_dev(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    let inf = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
    let out = open(Path::new("/dev/null"), libc::O_WRONLY)?;
    file_to(n, chunk, inf, out)
}

/// `sendfile-odirect N CHUNK`: sendfile() from a file into a new O_DIRECT file (CHUNK a
/// multiple of 4096 dividing N).
pub fn to_odirect(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    let inf = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
    direct_sizes("sendfile-odirect", n, chunk)?;
    let out = open_direct(
        &dir.join("out"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    )?;
    file_to(n, chunk, inf, out)
}

/// sendfile() N bytes from `inf` to `out`, CHUNK at a time, with nothing to drain.
fn file_to(n: usize, chunk: usize, inf: i32, out: i32) -> Result<Job, String> {
    job(move |t| {
        chunks(n, chunk, |_, len| {
            // SAFETY: plain descriptors, NULL offset (use the file position).
            let r = unsafe { libc::sendfile(out, inf, ptr::null_mut(), len) };
            t.xfer("sendfile", r)
        })
    })
}
