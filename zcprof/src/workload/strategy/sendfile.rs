//! sendfile: `sendfile(socket, file, NULL, remaining)` until done.
//!
//! The copy model's zero-copy send (`docs/model.md`): no user buffer, 2 mode switches per call;
//! with scatter-gather the page cache pages go to the device by reference. Over loopback TCP the
//! pages are attached to the skbs, and the CPU copy happens when the receiver reads them out of
//! its socket.

use std::os::fd::{AsFd, BorrowedFd};

use super::{Ctx, MAX_RW_COUNT, Sent, eof};
use crate::workload::error::WorkloadError;
use crate::workload::sys;
use crate::workload::tally::Counters;

pub(super) fn send(
    ctx: &Ctx<'_>,
    sock: BorrowedFd<'_>,
    c: &mut Counters,
) -> Result<Sent, WorkloadError> {
    let file = ctx.open()?;

    let meter = ctx.start(c)?;
    let mut sent = 0u64;
    while sent < ctx.size {
        // The whole remainder: the kernel moves what fits and returns the count.
        let want = (ctx.size - sent).min(MAX_RW_COUNT) as usize;
        let n = sys::sendfile(c, sock, file.as_fd(), want, "socket <- file")?;
        if n == 0 {
            return Err(eof("sendfile", "socket <- file", sent, ctx.size));
        }
        sent += n as u64;
    }
    Ok(Sent::new(meter, sent))
}
