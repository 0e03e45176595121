//! heap-buffer: read-write with one more copy, in user space, between two buffers.
//!
//! This models Java's heap `ByteBuffer` (`docs/model.md`): the JVM cannot hand the address of a
//! heap array to a system call because the garbage collector may move it in the middle of the
//! call, so `SocketChannel.write(heapBuffer)` first copies the bytes into a temporary off-heap
//! (direct) buffer and writes from that. Buffer A plays the heap array, buffer B the JVM's
//! temporary direct buffer. The kernel cannot see this copy, which is why it is tallied in
//! `user_space_copies` (a profiler built on kernel events must show no difference from
//! read-write except in CPU time). Only the write side is modelled, as in the copy model: one
//! extra copy per chunk, 3 in all (1 in user space).

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
    let mut heap = ctx.buffer();
    let mut direct = ctx.buffer();

    let meter = ctx.start(c)?;
    let mut sent = 0u64;
    while sent < ctx.size {
        let want = ctx.chunk(sent);
        let n = sys::read(c, file.as_fd(), &mut heap[..want], "file")?;
        if n == 0 {
            return Err(eof("read", "file", sent, ctx.size));
        }
        // The JVM's heap -> direct buffer copy (a memcpy).
        direct[..n].copy_from_slice(&heap[..n]);
        c.user_copy(n as u64);
        sys::write_all(c, sock, &direct[..n], "socket")?;
        sent += n as u64;
    }
    Ok(Sent::new(meter, sent))
}
