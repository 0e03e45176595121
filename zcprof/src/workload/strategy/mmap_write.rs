//! mmap-write: map the whole file, `write(socket, map[off..off + buffer])` chunk by chunk.
//!
//! RocketMQ's choice (`docs/model.md`): no page cache -> user copy (the pages are mapped, and
//! already resident since the cache is warm, so there are only minor faults to map them), 1 CPU
//! copy per chunk (page cache -> socket buffer), plus one mmap and one munmap.

use std::os::fd::{AsFd, BorrowedFd};

use super::{Ctx, Sent};
use crate::workload::error::WorkloadError;
use crate::workload::sys;
use crate::workload::tally::Counters;

pub(super) fn send(
    ctx: &Ctx<'_>,
    sock: BorrowedFd<'_>,
    c: &mut Counters,
) -> Result<Sent, WorkloadError> {
    let file = ctx.open()?;
    // `run` checked that the size fits in a usize.
    let len = ctx.size as usize;

    let meter = ctx.start(c)?;
    let map = sys::mmap_shared_ro(c, file.as_fd(), len, "file")?;
    // SAFETY: `map` is a fresh, readable mapping of `len` bytes (mmap succeeded) that lives until
    // the munmap below, after the last use of `data`. The file is our workload file, which is
    // neither written nor truncated while we send (a truncation would raise SIGBUS, not UB in
    // safe code's sense); we only pass the bytes to the kernel and never read them in Rust.
    let data = unsafe { std::slice::from_raw_parts(map.cast_const(), len) };

    let mut sent = 0u64;
    let result = (|| {
        while sent < ctx.size {
            let off = sent as usize;
            let n = ctx.chunk(sent);
            sys::write_all(c, sock, &data[off..off + n], "socket <- file mapping")?;
            sent += n as u64;
        }
        Ok(())
    })();
    // Unmap even if a write failed; report the first error.
    // SAFETY: `data` is not used past this point; `map`/`len` are exactly what mmap returned.
    let unmapped = unsafe { sys::munmap(c, map, len, "file mapping") };
    result?;
    unmapped?;
    Ok(Sent::new(meter, sent))
}
