//! splice(): between a pipe and a file, a socket, a character device or another pipe.

use std::{path::Path, ptr};

use crate::{
    Job,
    args::{check_pipe_chunk, n_chunk},
    endpoints::{big_buffers, make_file, open, pattern, pipe, socketpair},
    job,
    tally::Shared,
    transfer::{chunks, drain_read, wr},
};

/// One counted splice() of at most `len` bytes from `fin` (at `*offin` unless NULL) to `fout`.
fn splice(
    t: &mut Shared,
    fin: i32,
    offin: *mut i64,
    fout: i32,
    len: usize,
) -> Result<usize, String> {
    // SAFETY: offsets are NULL or point at a live i64.
    let r = unsafe { libc::splice(fin, offin, fout, ptr::null_mut(), len, 0) };
    t.xfer("splice", r)
}

/// What every splice between a pipe and a file or socket starts from.
struct PipeAndBuffers {
    n: usize,
    chunk: usize,
    /// The pipe's read end.
    pr: i32,
    /// The pipe's write end.
    pw: i32,
    /// CHUNK pattern bytes to write.
    wbuf: Vec<u8>,
    /// CHUNK bytes to read into.
    rbuf: Vec<u8>,
}

/// For `N [CHUNK]`: a pipe and both buffers. Every splice between a pipe and a file or
/// socket makes all of them, whether it uses both buffers or not.
fn pipe_and_buffers(rest: &[String]) -> Result<PipeAndBuffers, String> {
    let (n, chunk) = n_chunk(rest)?;
    check_pipe_chunk(chunk)?;
    let (pr, pw) = pipe()?;
    let wbuf = pattern(chunk);
    let rbuf = vec![0u8; chunk];
    Ok(PipeAndBuffers {
        n,
        chunk,
        pr,
        pw,
        wbuf,
        rbuf,
    })
}

/// `splice-file-pipe N [CHUNK]`: splice() a file into a pipe, drained with read().
pub fn file_pipe(rest: &[String], dir: &Path) -> Result<Job, String> {
    let PipeAndBuffers {
        n,
        chunk,
        pr,
        pw,
        wbuf: _unused,
        mut rbuf,
    } = pipe_and_buffers(rest)?;
    let f = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
    let mut off: i64 = 0;
    job(move |t| {
        chunks(n, chunk, |_, len| {
            let got = splice(t, f, &mut off, pw, len)?;
            drain_read(t, pr, &mut rbuf, got)?;
            Ok(got)
        })
    })
}

/// `splice-pipe-file N [CHUNK]`: write() into a pipe, splice() it into a new file.
pub fn pipe_file(rest: &[String], dir: &Path) -> Result<Job, String> {
    let PipeAndBuffers {
        n,
        chunk,
        pr,
        pw,
        wbuf,
        rbuf: _unused,
    } = pipe_and_buffers(rest)?;
    let f = open(
        &dir.join("out"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    )?;
    job(move |t| {
        chunks(n, chunk, |_, len| {
            wr(t, pw, &wbuf, len)?;
            let mut moved = 0;
            while moved < len {
                let got = splice(t, pr, ptr::null_mut(), f, len - moved)?;
                if got == 0 {
                    return Err("splice moved 0 bytes".into());
                }
                moved += got;
            }
            Ok(len)
        })
    })
}

/// `splice-socket-pipe N [CHUNK]`: write() into an AF_UNIX stream socket, splice() the peer
/// into a pipe, drained with read().
pub fn socket_pipe(rest: &[String]) -> Result<Job, String> {
    let PipeAndBuffers {
        n,
        chunk,
        pr,
        pw,
        wbuf,
        mut rbuf,
    } = pipe_and_buffers(rest)?;
    let (a, b) = socketpair(libc::SOCK_STREAM)?;
    big_buffers(a);
    big_buffers(b);
    job(move |t| {
        chunks(n, chunk, |_, len| {
            wr(t, a, &wbuf, len)?;
            let mut moved = 0;
            while moved < len {
                let got = splice(t, b, ptr::null_mut(), pw, len - moved)?;
                if got == 0 {
                    return Err("splice moved 0 bytes".into());
                }
                drain_read(t, pr, &mut rbuf, got)?;
                moved += got;
            }
            Ok(len)
        })
    })
}

/// `splice-pipe-socket N [CHUNK]`: write() into a pipe, splice() it into an AF_UNIX stream
/// socket, the peer drained with read().
pub fn pipe_socket(rest: &[String]) -> Result<Job, String> {
    let PipeAndBuffers {
        n,
        chunk,
        pr,
        pw,
        wbuf,
        mut rbuf,
    } = pipe_and_buffers(rest)?;
    let (a, b) = socketpair(libc::SOCK_STREAM)?;
    big_buffers(a);
    big_buffers(b);
    job(move |t| {
        chunks(n, chunk, |_, len| {
            wr(t, pw, &wbuf, len)?;
            let mut moved = 0;
            while moved < len {
                let got = splice(t, pr, ptr::null_mut(), a, len - moved)?;
                if got == 0 {
                    return Err("splice moved 0 bytes".into());
                }
                drain_read(t, b, &mut rbuf, got)?;
                moved += got;
            }
            Ok(len)
        })
    })
}

/// `splice-dev-pipe N [CHUNK]`: splice() from /dev/zero (a character device) into a pipe,
/// drained with read().
pub fn dev_pipe(rest: &[String]) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    check_pipe_chunk(chunk)?;
    let zero = open(Path::new("/dev/zero"), libc::O_RDONLY)?;
    let (r, w) = pipe()?;
    let mut rbuf = vec![0u8; chunk];
    job(move |t| {
        chunks(n, chunk, |_, len| {
            let got = splice(t, zero, ptr::null_mut(), w, len)?;
            drain_read(t, r, &mut rbuf, got)?;
            Ok(got)
        })
    })
}

/// `splice-pipe-pipe N [CHUNK]`: write() into pipe A, splice() A's read end -> B's write end,
/// read() B.
pub fn pipe_pipe(rest: &[String]) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    check_pipe_chunk(chunk)?;
    let (ar, aw) = pipe()?;
    let (br, bw) = pipe()?;
    let wbuf = pattern(chunk);
    let mut rbuf = vec![0u8; chunk];
    job(move |t| {
        chunks(n, chunk, |_, len| {
            wr(t, aw, &wbuf, len)?;
            let mut moved = 0;
            while moved < len {
                let got = splice(t, ar, ptr::null_mut(), bw, len - moved)?;
                if got == 0 {
                    return Err("splice moved 0 bytes".into());
                }
                drain_read(t, br, &mut rbuf, got)?;
                moved += got;
            }
            Ok(len)
        })
    })
}
