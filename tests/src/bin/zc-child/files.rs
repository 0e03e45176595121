//! Buffered file I/O: the read and write syscall families on a regular file, CHUNK bytes per
//! call, and copy_file_range between two files.

use std::path::Path;

use crate::{
    Job,
    args::n_chunk,
    endpoints::{make_file, open, pattern},
    job,
    transfer::{chunks, rd, two_iov},
};

/// For `N [CHUNK]`: N, CHUNK, a file of N pattern bytes open for reading, a CHUNK-byte buffer.
fn input(rest: &[String], dir: &Path) -> Result<(usize, usize, i32, Vec<u8>), String> {
    let (n, chunk) = n_chunk(rest)?;
    let fd = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
    let buf = vec![0u8; chunk];
    Ok((n, chunk, fd, buf))
}

/// For `N [CHUNK]`: N, CHUNK, a new empty file open for writing, CHUNK pattern bytes.
fn output(rest: &[String], dir: &Path) -> Result<(usize, usize, i32, Vec<u8>), String> {
    let (n, chunk) = n_chunk(rest)?;
    let fd = open(
        &dir.join("out"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    )?;
    let buf = pattern(chunk);
    Ok((n, chunk, fd, buf))
}

/// `read-file N [CHUNK]`: read() a file of N bytes.
pub fn read_file(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, mut buf) = input(rest, dir)?;
    job(move |t| chunks(n, chunk, |_, len| rd(t, fd, &mut buf, len)))
}

/// `pread N [CHUNK]`: pread64() a file of N bytes at increasing offsets.
pub fn pread(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, mut buf) = input(rest, dir)?;
    job(move |t| {
        chunks(n, chunk, |off, len| {
            // SAFETY: len <= buf.len().
            let r = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), len, off as i64) };
            t.xfer("pread64", r)
        })
    })
}

/// `readv N [CHUNK]`: readv() a file of N bytes, two iovecs per call.
pub fn readv(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, mut buf) = input(rest, dir)?;
    job(move |t| {
        chunks(n, chunk, |_, len| {
            let iov = two_iov(&mut buf, len);
            // SAFETY: the iovecs cover len bytes of buf.
            t.xfer("readv", unsafe { libc::readv(fd, iov.as_ptr(), 2) })
        })
    })
}

/// `preadv N [CHUNK]`: preadv() a file of N bytes, two iovecs per call.
pub fn preadv(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, mut buf) = input(rest, dir)?;
    job(move |t| {
        chunks(n, chunk, |off, len| {
            let iov = two_iov(&mut buf, len);
            // SAFETY: the iovecs cover len bytes of buf.
            t.xfer("preadv", unsafe {
                libc::preadv(fd, iov.as_ptr(), 2, off as i64)
            })
        })
    })
}

/// `preadv2 N [CHUNK]`: preadv2() (no flags) a file of N bytes, two iovecs per call.
pub fn preadv2(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, mut buf) = input(rest, dir)?;
    job(move |t| {
        chunks(n, chunk, |off, len| {
            let iov = two_iov(&mut buf, len);
            // SAFETY: the iovecs cover len bytes of buf.
            let r =
                unsafe { libc::syscall(libc::SYS_preadv2, fd, iov.as_ptr(), 2, off as i64, 0, 0) };
            t.xfer("preadv2", r as isize)
        })
    })
}

/// `write-file N [CHUNK]`: write() N bytes to a new file.
pub fn write_file(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, buf) = output(rest, dir)?;
    job(move |t| {
        chunks(n, chunk, |_, len| {
            // SAFETY: len <= buf.len().
            t.xfer("write", unsafe {
                libc::write(fd, buf.as_ptr().cast(), len)
            })
        })
    })
}

/// `pwrite N [CHUNK]`: pwrite64() N bytes to a new file at increasing offsets.
pub fn pwrite(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, buf) = output(rest, dir)?;
    job(move |t| {
        chunks(n, chunk, |off, len| {
            // SAFETY: len <= buf.len().
            let r = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), len, off as i64) };
            t.xfer("pwrite64", r)
        })
    })
}

/// `writev N [CHUNK]`: writev() N bytes to a new file, two iovecs per call.
pub fn writev(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, mut buf) = output(rest, dir)?;
    job(move |t| {
        chunks(n, chunk, |_, len| {
            let iov = two_iov(&mut buf, len);
            // SAFETY: the iovecs cover len bytes of buf.
            t.xfer("writev", unsafe { libc::writev(fd, iov.as_ptr(), 2) })
        })
    })
}

/// `pwritev N [CHUNK]`: pwritev() N bytes to a new file, two iovecs per call.
pub fn pwritev(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, mut buf) = output(rest, dir)?;
    job(move |t| {
        chunks(n, chunk, |off, len| {
            let iov = two_iov(&mut buf, len);
            // SAFETY: the iovecs cover len bytes of buf.
            t.xfer("pwritev", unsafe {
                libc::pwritev(fd, iov.as_ptr(), 2, off as i64)
            })
        })
    })
}

/// `pwritev2 N [CHUNK]`: pwritev2() (no flags) N bytes to a new file, two iovecs per call.
pub fn pwritev2(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, mut buf) = output(rest, dir)?;
    job(move |t| {
        chunks(n, chunk, |off, len| {
            let iov = two_iov(&mut buf, len);
            // SAFETY: the iovecs cover len bytes of buf.
            let r =
                unsafe { libc::syscall(libc::SYS_pwritev2, fd, iov.as_ptr(), 2, off as i64, 0, 0) };
            t.xfer("pwritev2", r as isize)
        })
    })
}

/// `copy-file-range N [CHUNK]`: copy_file_range() a file of N bytes into a new file.
pub fn copy_file_range(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    let inf = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
    let out = open(
        &dir.join("out"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    )?;
    let mut off_in: i64 = 0;
    let mut off_out: i64 = 0;
    job(move |t| {
        chunks(n, chunk, |_, len| {
            // SAFETY: offsets point at live i64s.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_copy_file_range,
                    inf,
                    &mut off_in as *mut i64,
                    out,
                    &mut off_out as *mut i64,
                    len,
                    0,
                )
            };
            t.xfer("copy_file_range", r as isize)
        })
    })
}
