//! Memory mappings: a file mapped and read page by page, anonymous memory mapped and written
//! page by page (each page's first touch is one page fault).

use std::{path::Path, ptr};

use crate::{
    Job,
    args::{PAGE, arg},
    endpoints::{make_file, open},
    job,
};

/// `n` rounded up to whole pages, as the kernel maps it.
fn page_round(n: usize) -> u64 {
    n.div_ceil(PAGE) as u64 * PAGE as u64
}

/// `mmap-file N`: map a file of N bytes, read one byte of every page in order, unmap.
pub fn mmap_file(rest: &[String], dir: &Path) -> Result<Job, String> {
    let n = arg(rest, 0, "N")?;
    let fd = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
    job(move |t| {
        // SAFETY: fresh private read-only mapping of the file, accessed within n bytes.
        unsafe {
            let p = libc::mmap(
                ptr::null_mut(),
                n,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd,
                0,
            );
            let failed = p == libc::MAP_FAILED;
            t.xfer_n("mmap_file", if failed { -1 } else { 0 }, page_round(n))?;
            let mut sum = 0u64;
            let mut pages = 0;
            for off in (0..n).step_by(PAGE) {
                sum += ptr::read_volatile(p.cast::<u8>().add(off)) as u64;
                pages += 1;
            }
            std::hint::black_box(sum);
            t.file_pages_touched += pages;
            let r = libc::munmap(p, n);
            t.xfer_n("munmap", r as i64, page_round(n))?;
        }
        Ok(())
    })
}

/// `mmap-anon N`: map N bytes of anonymous memory, write one byte of every page, unmap.
pub fn mmap_anon(rest: &[String]) -> Result<Job, String> {
    anon(arg(rest, 0, "N")?)
}

/// `faults PAGES`: `mmap-anon` of PAGES pages.
pub fn faults(rest: &[String]) -> Result<Job, String> {
    anon(arg(rest, 0, "PAGES")? * PAGE)
}

/// Maps `n` bytes of anonymous memory, writes one byte of every page, unmaps.
fn anon(n: usize) -> Result<Job, String> {
    job(move |t| {
        // SAFETY: fresh private anonymous mapping, accessed within n bytes.
        unsafe {
            let p = libc::mmap(
                ptr::null_mut(),
                n,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            let failed = p == libc::MAP_FAILED;
            t.xfer_n("mmap_anon", if failed { -1 } else { 0 }, page_round(n))?;
            let mut pages = 0;
            for off in (0..n).step_by(PAGE) {
                ptr::write_volatile(p.cast::<u8>().add(off), 1);
                pages += 1;
            }
            t.pages_touched += pages;
            let r = libc::munmap(p, n);
            t.xfer_n("munmap", r as i64, page_round(n))?;
        }
        Ok(())
    })
}
