//! read-write: `read(file, buf)` then `write(socket, buf)`, chunk by chunk.
//!
//! The copy model's baseline (`docs/model.md`): per chunk, 2 CPU copies (page cache -> user
//! buffer, user buffer -> socket buffer) and 2 system calls (4 mode switches).

use std::os::fd::{AsFd, BorrowedFd};

use super::{Ctx, Sent, eof};
use crate::workload::error::WorkloadError;
use crate::workload::sys;
use crate::workload::tally::Counters;

pub(super) fn send(
    ctx: &Ctx<'_>,
    sock: BorrowedFd<'_>,
    c: &mut Counters,
) -> Result<Sent, WorkloadError> {
    let file = ctx.open()?;
    let mut buf = ctx.buffer();

    let meter = ctx.start(c)?;
    let mut sent = 0u64;
    while sent < ctx.size {
        let want = ctx.chunk(sent);
        // A short read is fine: we write exactly what we got, so read bytes == write bytes.
        let n = sys::read(c, file.as_fd(), &mut buf[..want], "file")?;
        if n == 0 {
            return Err(eof("read", "file", sent, ctx.size));
        }
        sys::write_all(c, sock, &buf[..n], "socket")?;
        sent += n as u64;
    }
    Ok(Sent::new(meter, sent))
}
