//! direct-io: `read` the file with `O_DIRECT` into a 4 KiB-aligned buffer, `write` it to the
//! socket.
//!
//! O_DIRECT bypasses the page cache: the device DMAs straight into the user buffer, so the read
//! costs no CPU copy (but real device I/O: this is the one strategy that does not start from a
//! warm cache). The write still copies user buffer -> socket buffer. O_DIRECT needs the buffer
//! address, the file offset and the length to be multiples of the logical block size; `run`
//! rounds `size` and `buffer` up to multiples of 4096 ([`DIRECT_IO_ALIGN`]), which covers every
//! common block size.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{Ctx, Sent, eof, touch};
use crate::workload::DIRECT_IO_ALIGN;
use crate::workload::error::WorkloadError;
use crate::workload::sys;
use crate::workload::tally::Counters;

pub(super) fn send(
    ctx: &Ctx<'_>,
    sock: BorrowedFd<'_>,
    c: &mut Counters,
) -> Result<Sent, WorkloadError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(ctx.path)
        .map_err(|source| WorkloadError::SourceFile {
            path: ctx.path.to_owned(),
            what: "open with O_DIRECT (does the filesystem support it?)",
            source,
        })?;
    // The file was just generated or warmed: write back any dirty pages now, or the kernel would
    // do it inside the measured window (an O_DIRECT read first flushes the range it reads).
    file.sync_data()
        .map_err(|source| WorkloadError::SourceFile {
            path: ctx.path.to_owned(),
            what: "fdatasync before O_DIRECT reads",
            source,
        })?;
    let mut buf = AlignedBuf::new(ctx.buffer_len())?;
    touch(buf.as_mut_slice());

    let meter = ctx.start(c)?;
    let mut sent = 0u64;
    while sent < ctx.size {
        let want = ctx.chunk(sent);
        let n = sys::read(
            c,
            file.as_fd(),
            &mut buf.as_mut_slice()[..want],
            "file (O_DIRECT)",
        )?;
        if n == 0 {
            return Err(eof("read", "file (O_DIRECT)", sent, ctx.size));
        }
        sys::write_all(c, sock, &buf.as_mut_slice()[..n], "socket")?;
        sent += n as u64;
    }
    Ok(Sent::new(meter, sent))
}

/// A zeroed heap buffer aligned to [`DIRECT_IO_ALIGN`].
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> Result<Self, WorkloadError> {
        let layout =
            Layout::from_size_align(len.max(1), DIRECT_IO_ALIGN as usize).map_err(|e| {
                WorkloadError::InvalidArgs(format!("direct-io buffer of {len} bytes: {e}"))
            })?;
        // SAFETY: `layout` has a non-zero size (`len.max(1)`).
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Ok(Self { ptr, layout })
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live, zero-initialised allocation of `layout.size()` bytes owned by
        // `self`, and the returned borrow is tied to `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` was allocated by `alloc_zeroed` with exactly `layout` and not freed yet.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}
