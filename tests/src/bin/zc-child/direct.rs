//! O_DIRECT: reads and writes that bypass the page cache (page-aligned buffers, CHUNK a
//! multiple of the page size), and one descriptor number that switches between a direct and
//! a buffered file.

use std::{path::Path, ptr};

use crate::{
    Job,
    args::{PAGE, direct_sizes, n_chunk},
    endpoints::{cpath, make_file, pattern},
    errno, errstr, job,
    tally::Shared,
    transfer::{chunks, rd, wr},
};

/// Opens `p` with O_DIRECT added to `flags`, saying why when the filesystem refuses it.
pub fn open_direct(p: &Path, flags: i32) -> Result<i32, String> {
    let c = cpath(p);
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_DIRECT | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        let e = errno();
        let why = if e == libc::EINVAL {
            " (the filesystem does not support O_DIRECT; tmpfs does not)"
        } else {
            ""
        };
        return Err(format!(
            "O_DIRECT open of {} failed: {}{why}",
            p.display(),
            errstr(e)
        ));
    }
    Ok(fd)
}

/// A page-aligned buffer of `len` bytes (as O_DIRECT needs) holding the test pattern; it
/// lives as long as the process.
pub fn aligned_buf(len: usize) -> Result<&'static mut [u8], String> {
    // SAFETY: plain anonymous mapping, checked.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap: {}", errstr(errno())));
    }
    // SAFETY: the mapping is len bytes long, never unmapped, and only reachable through this
    // slice.
    let buf = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
    buf.copy_from_slice(&pattern(len));
    Ok(buf)
}

/// For `N CHUNK` of `action`: N, CHUNK, a new empty O_DIRECT file open for writing, and an
/// aligned CHUNK-byte buffer.
fn direct_output(
    action: &str,
    rest: &[String],
    dir: &Path,
) -> Result<(usize, usize, i32, &'static mut [u8]), String> {
    let (n, chunk) = n_chunk(rest)?;
    direct_sizes(action, n, chunk)?;
    let fd = open_direct(
        &dir.join("out"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    )?;
    let buf = aligned_buf(chunk)?;
    Ok((n, chunk, fd, buf))
}

/// `odirect-read N CHUNK`: read() an O_DIRECT file of N bytes into a page-aligned buffer.
pub fn odirect_read(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    direct_sizes("odirect-read", n, chunk)?;
    let fd = open_direct(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
    let buf = aligned_buf(chunk)?;
    job(move |t| chunks(n, chunk, |_, len| rd(t, fd, buf, len)))
}

/// `odirect-write N CHUNK`: write() N bytes to a new O_DIRECT file from a page-aligned buffer.
pub fn odirect_write(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, buf) = direct_output("odirect-write", rest, dir)?;
    job(move |t| chunks(n, chunk, |_, len| wr(t, fd, buf, len)))
}

/// `odirect-pwrite N CHUNK`: pwrite64() N bytes to a new O_DIRECT file from a page-aligned
/// buffer.
pub fn odirect_pwrite(rest: &[String], dir: &Path) -> Result<Job, String> {
    let (n, chunk, fd, buf) = direct_output("odirect-pwrite", rest, dir)?;
    job(move |t| {
        chunks(n, chunk, |off, len| {
            // SAFETY: len <= buf.len().
            let r = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), len, off as i64) };
            t.xfer("pwrite64", r)
        })
    })
}

/// `fd-reuse N`: one descriptor number read as an O_DIRECT file, then (after dup2) as a
/// buffered file, then (after fcntl) direct again; tallied as `read-direct`/`read-buffered`.
pub fn fd_reuse(rest: &[String], dir: &Path) -> Result<Job, String> {
    // One descriptor number that changes what it refers to, twice: the ledger must follow
    // (the kernel side caches descriptors per thread).
    let n: usize = rest
        .first()
        .ok_or("fd-reuse N")?
        .parse()
        .map_err(|e| format!("N: {e}"))?;
    if !n.is_multiple_of(PAGE) {
        return Err("fd-reuse: N must be a multiple of 4096".into());
    }
    let direct = cpath(&make_file(dir, "direct", n)?);
    let buffered = cpath(&make_file(dir, "buffered", 2 * n)?);
    // SAFETY: valid C strings.
    let a = unsafe { libc::open(direct.as_ptr(), libc::O_RDONLY | libc::O_DIRECT) };
    // SAFETY: as above.
    let b = unsafe { libc::open(buffered.as_ptr(), libc::O_RDONLY) };
    if a < 0 || b < 0 {
        return Err(format!("open: {}", errstr(errno())));
    }
    // SAFETY: plain anonymous mapping (page-aligned, as O_DIRECT needs), checked.
    let buf = unsafe {
        libc::mmap(
            ptr::null_mut(),
            n,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if buf == libc::MAP_FAILED {
        return Err(format!("mmap: {}", errstr(errno())));
    }
    // SAFETY: the mapping is n bytes long.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n) };
    buf.fill(1);
    job(move |t| {
        let read_all = |t: &mut Shared, name: &'static str, buf: &mut [u8]| {
            // SAFETY: n == buf.len().
            let r = unsafe { libc::read(a, buf.as_mut_ptr().cast(), n) };
            match t.xfer(name, r)? {
                got if got == n => Ok(()),
                got => Err(format!("{name}: short read {got} of {n}")),
            }
        };
        read_all(t, "read-direct", buf)?;
        // `a` now names the buffered file.
        // SAFETY: both are open descriptors.
        if unsafe { libc::dup2(b, a) } < 0 {
            return Err(format!("dup2: {}", errstr(errno())));
        }
        read_all(t, "read-buffered", buf)?;
        // And now it bypasses the page cache.
        // SAFETY: `a` is open; F_SETFL takes an int.
        if unsafe { libc::fcntl(a, libc::F_SETFL, libc::O_DIRECT) } < 0 {
            return Err(format!("fcntl(O_DIRECT): {}", errstr(errno())));
        }
        read_all(t, "read-direct", buf)?;
        // Closed, and the number given to a buffered file again: close forgets it too.
        // SAFETY: `a` is open; the path is a valid C string.
        let again = unsafe {
            libc::close(a);
            libc::open(buffered.as_ptr(), libc::O_RDONLY)
        };
        if again != a {
            return Err(format!("reopen: got descriptor {again}, wanted {a}"));
        }
        read_all(t, "read-buffered", buf)
    })
}
