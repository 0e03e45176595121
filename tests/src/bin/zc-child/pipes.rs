//! Pipes: write() and read() back in the same thread, tee() from one pipe into another, and
//! vmsplice() from and into user memory.

use crate::{
    Job,
    args::{arg, check_pipe_chunk, n_chunk},
    endpoints::{pattern, pipe},
    errno, errstr, job,
    transfer::{chunks, drain_read, wr},
};

/// `pipe-read`/`pipe-write N [CHUNK]`: write() into a pipe, read() it back in the same thread.
pub fn write_read(rest: &[String]) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    check_pipe_chunk(chunk)?;
    let (r, w) = pipe()?;
    let wbuf = pattern(chunk);
    let mut rbuf = vec![0u8; chunk];
    job(move |t| {
        chunks(n, chunk, |_, len| {
            wr(t, w, &wbuf, len)?;
            drain_read(t, r, &mut rbuf, len)?;
            Ok(len)
        })
    })
}

/// `tee N [CHUNK]`: write() into pipe 1, tee() pipe 1 -> pipe 2, read() both back.
pub fn tee(rest: &[String]) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    check_pipe_chunk(chunk)?;
    let (r1, w1) = pipe()?;
    let (r2, w2) = pipe()?;
    let wbuf = pattern(chunk);
    let mut rbuf = vec![0u8; chunk];
    job(move |t| {
        chunks(n, chunk, |_, len| {
            wr(t, w1, &wbuf, len)?;
            // SAFETY: plain descriptors.
            let got = t.xfer("tee", unsafe { libc::tee(r1, w2, len, 0) })?;
            if got != len {
                return Err(format!("tee duplicated {got} of {len}"));
            }
            drain_read(t, r2, &mut rbuf, len)?;
            drain_read(t, r1, &mut rbuf, len)?;
            Ok(len)
        })
    })
}

/// `vmsplice N [CHUNK]`: vmsplice() user memory into a pipe, drained with read().
pub fn vmsplice(rest: &[String]) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    check_pipe_chunk(chunk)?;
    let (r, w) = pipe()?;
    let wbuf = pattern(chunk);
    let mut rbuf = vec![0u8; chunk];
    job(move |t| {
        chunks(n, chunk, |_, len| {
            let iov = libc::iovec {
                iov_base: wbuf.as_ptr() as *mut libc::c_void,
                iov_len: len,
            };
            // SAFETY: iov describes len bytes of wbuf.
            let got = t.xfer("vmsplice", unsafe { libc::vmsplice(w, &iov, 1, 0) })?;
            drain_read(t, r, &mut rbuf, got)?;
            Ok(got)
        })
    })
}

/// `vmsplice-read N [CHUNK]`: write() into a pipe, then vmsplice() its read end into user
/// memory.
pub fn vmsplice_read(rest: &[String]) -> Result<Job, String> {
    // vmsplice() on a pipe's READ end: the kernel copies the pipe's contents into the
    // iovec's user memory.
    let (n, chunk) = n_chunk(rest)?;
    check_pipe_chunk(chunk)?;
    let (r, w) = pipe()?;
    let wbuf = pattern(chunk);
    let mut rbuf = vec![0u8; chunk];
    job(move |t| {
        chunks(n, chunk, |_, len| {
            wr(t, w, &wbuf, len)?;
            let mut moved = 0;
            while moved < len {
                let iov = libc::iovec {
                    // SAFETY: moved < len <= rbuf.len().
                    iov_base: unsafe { rbuf.as_mut_ptr().add(moved) }.cast(),
                    iov_len: len - moved,
                };
                // SAFETY: iov describes len - moved writable bytes of rbuf.
                let got = t.xfer("vmsplice", unsafe { libc::vmsplice(r, &iov, 1, 0) })?;
                if got == 0 {
                    return Err("vmsplice moved 0 bytes".into());
                }
                moved += got;
            }
            if rbuf[..len] != wbuf[..len] {
                return Err("vmsplice read back other bytes than were written".into());
            }
            Ok(len)
        })
    })
}

/// `would-block N`: read() N times from an empty non-blocking pipe; each must fail with EAGAIN.
pub fn would_block(rest: &[String]) -> Result<Job, String> {
    let n = arg(rest, 0, "N")?;
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(format!("pipe2: {}", errstr(errno())));
    }
    // The write end stays open (in `fds`) so that a read finds no data rather than the end.
    let mut buf = [0u8; 64];
    job(move |t| {
        for _ in 0..n {
            // SAFETY: `buf` is valid for its length.
            let ret = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            let e = errno();
            match t.xfer("read", ret) {
                Err(_) if e == libc::EAGAIN => {}
                Err(other) => return Err(other),
                Ok(got) => return Err(format!("read {got} bytes from an empty pipe")),
            }
        }
        Ok(())
    })
}

/// The name of `pipe-wait`'s writer process.
pub const WRITER_NAME: &std::ffi::CStr = c"zc-pipe-writer";

/// `pipe-wait MS`: one read() of one byte from a pipe whose writer (a process the supervisor
/// forks, not the worker) sleeps MS milliseconds first, counted from the worker's word that it
/// is about to read (one byte written to a second pipe); the worker times the read itself.
pub fn wait(rest: &[String]) -> Result<Job, String> {
    let ms = arg(rest, 0, "MS")? as u64;
    let (r, w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    // The writer has a name of its own from its first instant (it inherits the supervisor's
    // at fork), so that neither a test looking for the worker among the supervisor's
    // children nor serve's groups by name mistake it for the worker.
    let mut own = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes; PR_SET_NAME reads a NUL-terminated name.
    unsafe {
        libc::prctl(libc::PR_GET_NAME, own.as_mut_ptr());
        libc::prctl(libc::PR_SET_NAME, WRITER_NAME.as_ptr());
    }
    // SAFETY: fork in the single-threaded supervisor; the child only reads, sleeps, writes
    // and _exits.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        // SAFETY: as above; `own` came from PR_GET_NAME, NUL-terminated.
        unsafe { libc::prctl(libc::PR_SET_NAME, own.as_ptr()) };
    }
    match pid {
        -1 => return Err(format!("fork: {}", errstr(errno()))),
        0 => {
            let mut go = [0u8; 1];
            // SAFETY: one byte into a one-byte buffer; _exit never returns.
            unsafe {
                libc::read(go_r, go.as_mut_ptr().cast(), 1);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                libc::write(w, b"x".as_ptr().cast(), 1);
                libc::_exit(0)
            }
        }
        _ => {}
    }
    let mut buf = [0u8; 1];
    job(move |t| {
        wr(t, go_w, b"g", 1)?;
        let start = std::time::Instant::now();
        // SAFETY: one byte into a one-byte buffer.
        let got = unsafe { libc::read(r, buf.as_mut_ptr().cast(), 1) };
        let took = start.elapsed().as_nanos() as u64;
        t.xfer("read", got)?;
        t.cell("read")?.ns += took;
        Ok(())
    })
}
