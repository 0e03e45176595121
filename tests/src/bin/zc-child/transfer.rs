//! The worker's counted transfers that several actions share: the chunk loop, read() and
//! write() of a buffer, draining a descriptor, and a buffer split into two iovecs.

use crate::tally::Shared;

/// Runs `f(offset, len)` over `n` bytes in chunks of at most `chunk`; `f` returns how many
/// bytes it moved.
pub fn chunks(
    n: usize,
    chunk: usize,
    mut f: impl FnMut(usize, usize) -> Result<usize, String>,
) -> Result<(), String> {
    let mut done = 0;
    while done < n {
        let len = chunk.min(n - done);
        let got = f(done, len)?;
        if got == 0 {
            return Err(format!("unexpected 0-byte transfer at offset {done}"));
        }
        done += got;
    }
    Ok(())
}

/// One read() of at most `len` bytes into `buf`.
pub fn rd(t: &mut Shared, fd: i32, buf: &mut [u8], len: usize) -> Result<usize, String> {
    // SAFETY: len <= buf.len().
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len.min(buf.len())) };
    t.xfer("read", r)
}

/// One write() of `len` bytes of `buf`; a short write is an error.
pub fn wr(t: &mut Shared, fd: i32, buf: &[u8], len: usize) -> Result<usize, String> {
    // SAFETY: len <= buf.len().
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), len.min(buf.len())) };
    let got = t.xfer("write", r)?;
    if got != len {
        return Err(format!("short write: {got} of {len}"));
    }
    Ok(got)
}

/// Reads exactly `want` bytes with read().
pub fn drain_read(t: &mut Shared, fd: i32, buf: &mut [u8], mut want: usize) -> Result<(), String> {
    while want > 0 {
        let got = rd(t, fd, buf, want)?;
        if got == 0 {
            return Err("unexpected EOF while draining".into());
        }
        want -= got;
    }
    Ok(())
}

/// Receives exactly `want` bytes with recv() (the recvfrom syscall).
pub fn drain_recv(t: &mut Shared, fd: i32, buf: &mut [u8], mut want: usize) -> Result<(), String> {
    while want > 0 {
        let len = want.min(buf.len());
        // SAFETY: len <= buf.len().
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), len, 0) };
        let got = t.xfer("recvfrom", r)?;
        if got == 0 {
            return Err("unexpected EOF while draining socket".into());
        }
        want -= got;
    }
    Ok(())
}

/// The first `len` bytes of `buf` as two iovecs (halves).
pub fn two_iov(buf: &mut [u8], len: usize) -> [libc::iovec; 2] {
    let a = len / 2;
    let p = buf.as_mut_ptr();
    [
        libc::iovec {
            iov_base: p.cast(),
            iov_len: a,
        },
        libc::iovec {
            // SAFETY: a <= len <= buf.len().
            iov_base: unsafe { p.add(a) }.cast(),
            iov_len: len - a,
        },
    ]
}
