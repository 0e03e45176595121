//! vmsplice: `read(file)` into user memory, `vmsplice(pipe, iov)` it by reference, then
//! `splice(pipe -> socket)`.
//!
//! One CPU copy (page cache -> user buffer, by the read); the vmsplice puts references to the
//! user pages in the pipe (no SPLICE_F_GIFT: the pages stay ours), and the splice hands those
//! references on to TCP's skbs. Consequence: the kernel still points at our pages after both
//! calls return, until the receiver has read the bytes, so a chunk's memory must not be written
//! again before that. Reusing a small ring of buffers would only be safe with a ring larger than
//! everything that can be in flight (both socket buffers), which is not a fixed number; instead
//! every chunk gets its own region of one allocation of `size` bytes, kept alive until the
//! receiver has reported (see `Sent::keep_alive`). Memory cost: `size` bytes.

use std::os::fd::{AsFd, BorrowedFd};

use super::pipe::Pipe;
use super::{Ctx, Sent, splice::drain, stalled};
use crate::workload::error::WorkloadError;
use crate::workload::sys;
use crate::workload::tally::Counters;

/// Page size for pre-faulting (touching one byte per 4 KiB is enough on every Linux target).
const PAGE: usize = 4096;

pub(super) fn send(
    ctx: &Ctx<'_>,
    sock: BorrowedFd<'_>,
    c: &mut Counters,
) -> Result<Sent, WorkloadError> {
    let file = ctx.open()?;
    let pipe = Pipe::new(ctx.buffer_len())?;
    // `run` checked that the size fits in a usize; one extra page to align the start.
    let size = ctx.size as usize;
    let mut storage = vec![0u8; size.saturating_add(PAGE)];
    // Chunks start on page boundaries (with a page-multiple buffer), so a 64 KiB chunk is 16
    // whole pages and fits a default pipe in one vmsplice instead of spanning 17 pages.
    let start = storage.as_ptr().align_offset(PAGE).min(PAGE);
    let region = &mut storage[start..start + size];
    // Fault the region in before the window: the other strategies reuse one warm buffer, and
    // the first-touch page faults of a fresh `size`-byte allocation are not what we measure.
    for page in region.chunks_mut(PAGE) {
        page[0] = 1;
    }

    let meter = ctx.start(c)?;
    let mut sent = 0u64;
    while sent < ctx.size {
        let off = sent as usize;
        let len = ctx.chunk(sent);
        sys::read_full(
            c,
            file.as_fd(),
            &mut region[off..off + len],
            "file",
            sent,
            ctx.size,
        )?;
        let mut done = 0;
        while done < len {
            let piece = &region[off + done..off + len];
            // SAFETY: this part of `region` is never written again (later chunks use later
            // offsets; sharing a page with a later chunk is fine, since the kernel only reads the
            // byte range it was given), and `region` outlives every reference the kernel holds:
            // its `storage` is returned as `keep_alive`, dropped only after the receiver read everything.
            let n = unsafe {
                sys::vmsplice(
                    c,
                    pipe.write.as_fd(),
                    piece,
                    0,
                    "pipe write end <- user memory",
                )
            }?;
            if n == 0 {
                return Err(stalled(
                    "vmsplice",
                    "pipe write end <- user memory",
                    sent + done as u64,
                ));
            }
            let last = sent + (done + n) as u64 == ctx.size;
            drain(c, &pipe, sock, n, last, sent + done as u64)?;
            done += n;
        }
        sent += len as u64;
    }
    Ok(Sent {
        meter,
        bytes: sent,
        keep_alive: Some(Box::new(storage)),
    })
}
