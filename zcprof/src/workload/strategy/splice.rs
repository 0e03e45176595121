//! splice: `splice(file -> pipe)` then `splice(pipe -> socket)` until the pipe is drained.
//!
//! The pipe carries references to page cache pages, not bytes: no user buffer and no CPU copy on
//! the sending side (TCP attaches the pages to its skbs).

use std::os::fd::{AsFd, BorrowedFd};

use super::pipe::Pipe;
use super::{Ctx, Sent, eof, stalled};
use crate::workload::error::WorkloadError;
use crate::workload::sys;
use crate::workload::tally::Counters;

pub(super) fn send(
    ctx: &Ctx<'_>,
    sock: BorrowedFd<'_>,
    c: &mut Counters,
) -> Result<Sent, WorkloadError> {
    let file = ctx.open()?;
    let pipe = Pipe::new(ctx.buffer_len())?;
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE;

    let meter = ctx.start(c)?;
    let mut sent = 0u64;
    while sent < ctx.size {
        let want = ctx.chunk(sent);
        // May move less than asked when the pipe is smaller than the chunk.
        let n = sys::splice(
            c,
            file.as_fd(),
            pipe.write.as_fd(),
            want,
            flags,
            "pipe write end <- file",
        )?;
        if n == 0 {
            return Err(eof("splice", "pipe write end <- file", sent, ctx.size));
        }
        drain(c, &pipe, sock, n, sent + n as u64 == ctx.size, sent)?;
        sent += n as u64;
    }
    Ok(Sent::new(meter, sent))
}

/// Splice `len` bytes from the pipe to the socket. SPLICE_F_MORE (like MSG_MORE) tells TCP that
/// more data follows, except for the very end of the stream.
pub(super) fn drain(
    c: &mut Counters,
    pipe: &Pipe,
    sock: BorrowedFd<'_>,
    len: usize,
    last: bool,
    done: u64,
) -> Result<(), WorkloadError> {
    let mut left = len;
    while left > 0 {
        let flags = if last {
            libc::SPLICE_F_MOVE
        } else {
            libc::SPLICE_F_MOVE | libc::SPLICE_F_MORE
        };
        let m = sys::splice(
            c,
            pipe.read.as_fd(),
            sock,
            left,
            flags,
            "socket <- pipe read end",
        )?;
        if m == 0 {
            return Err(stalled(
                "splice",
                "socket <- pipe read end",
                done + (len - left) as u64,
            ));
        }
        left -= m;
    }
    Ok(())
}
