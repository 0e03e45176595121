//! msg-zerocopy: `read(file)` into a user buffer, `sendmsg(socket, buf, MSG_ZEROCOPY)`, and
//! completions read from the socket's error queue with `recvmsg(MSG_ERRQUEUE)`.
//!
//! With MSG_ZEROCOPY the kernel pins the user pages and attaches them to the skbs instead of
//! copying them into the socket buffer; it tells us when it no longer needs them through a
//! notification on the error queue (`sock_extended_err` with origin SO_EE_ORIGIN_ZEROCOPY and a
//! range of send ids). Until then the buffer must not be written: we cycle through a ring of
//! buffers and wait for a buffer's completions before reading the next chunk into it.
//!
//! Over loopback the kernel always falls back to a copy (the receiving socket must not keep
//! references to the sender's pages) and says so with SO_EE_CODE_ZEROCOPY_COPIED: expect
//! `copied: true`. The read is a CPU copy as in read-write.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::{Ctx, Sent, stalled};
use crate::workload::error::{WorkloadError, check};
use crate::workload::sys;
use crate::workload::tally::Counters;

/// `SO_EE_ORIGIN_ZEROCOPY` from `<linux/errqueue.h>` (not exported by the libc crate).
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
/// `SO_EE_CODE_ZEROCOPY_COPIED` from `<linux/errqueue.h>` (not exported by the libc crate).
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

/// Keep at least this many bytes of buffers in flight, so that waiting for completions rarely
/// stalls the sender (about the default maximum TCP send buffer).
const IN_FLIGHT_BYTES: usize = 4 << 20;
const MIN_SLOTS: usize = 4;
const MAX_SLOTS: usize = 64;

/// How long to wait for a completion before declaring the kernel stuck.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn send(
    ctx: &Ctx<'_>,
    sock: BorrowedFd<'_>,
    c: &mut Counters,
) -> Result<Sent, WorkloadError> {
    let file = ctx.open()?;
    enable_zerocopy(sock)?;
    let len = ctx.buffer_len();
    let nslots = IN_FLIGHT_BYTES.div_ceil(len).clamp(MIN_SLOTS, MAX_SLOTS);
    let mut slots: Vec<Slot> = (0..nslots)
        .map(|_| Slot {
            buf: ctx.buffer(),
            last_id: None,
        })
        .collect();
    let mut zc = Completions::default();
    // Make the zero-copy counters appear even if nothing is sent.
    c.zerocopy();

    let meter = ctx.start(c)?;
    let mut sent = 0u64;
    let mut chunk_no = 0usize;
    while sent < ctx.size {
        let slot = &mut slots[chunk_no % nslots];
        // The kernel may still reference this buffer: wait until all its sends completed.
        if let Some(last) = slot.last_id {
            zc.wait_until(c, sock, |z| z.all_done_through(last))?;
        }
        let n = ctx.chunk(sent);
        sys::read_full(c, file.as_fd(), &mut slot.buf[..n], "file", sent, ctx.size)?;
        let mut off = 0;
        while off < n {
            match sys::sendmsg(
                c,
                sock,
                &slot.buf[off..n],
                libc::MSG_ZEROCOPY | libc::MSG_NOSIGNAL,
            ) {
                Ok(0) => {
                    return Err(stalled(
                        "sendmsg",
                        "socket, MSG_ZEROCOPY",
                        sent + off as u64,
                    ));
                }
                Ok(m) => {
                    // Every successful zero-copy sendmsg gets the next id (see msg_zerocopy.rst).
                    let id = zc.issue();
                    c.zerocopy().sends += 1;
                    slot.last_id = Some(id);
                    off += m;
                }
                // Too much memory pinned by outstanding zero-copy sends (optmem or locked
                // memory limits): wait for some completions, then try again.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) && zc.outstanding() > 0 => {
                    let before = zc.completed;
                    zc.wait_until(c, sock, |z| z.completed > before)?;
                }
                Err(e) => return Err(WorkloadError::syscall("sendmsg", "socket, MSG_ZEROCOPY", e)),
            }
        }
        sent += n as u64;
        chunk_no += 1;
    }
    // The buffers are freed when we return: every send must have completed first.
    zc.wait_until(c, sock, |z| z.outstanding() == 0)?;
    Ok(Sent::new(meter, sent))
}

/// `setsockopt(SO_ZEROCOPY, 1)`: without it, MSG_ZEROCOPY is silently ignored (plain copy).
fn enable_zerocopy(sock: BorrowedFd<'_>) -> Result<(), WorkloadError> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid int for the duration of the call and its size is passed.
    let ret = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ZEROCOPY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(ret, "setsockopt", "socket, SO_ZEROCOPY").map(drop)
}

struct Slot {
    buf: Vec<u8>,
    /// Id of the last zero-copy send made from this buffer, if any.
    last_id: Option<u32>,
}

/// Bookkeeping of send ids and their completions.
#[derive(Default)]
struct Completions {
    /// Ids issued so far (the next id).
    issued: u32,
    /// `done[id]`: the completion for send `id` arrived.
    done: Vec<bool>,
    /// Every id below this one is done.
    low: u32,
    /// Number of ids done.
    completed: u64,
}

impl Completions {
    fn issue(&mut self) -> u32 {
        let id = self.issued;
        self.issued += 1;
        self.done.push(false);
        id
    }

    fn outstanding(&self) -> u64 {
        u64::from(self.issued) - self.completed
    }

    fn all_done_through(&self, id: u32) -> bool {
        self.low > id
    }

    /// Record a notification for ids `lo..=hi`.
    fn complete(&mut self, lo: u32, hi: u32) -> Result<u64, WorkloadError> {
        if lo > hi || hi >= self.issued {
            return Err(WorkloadError::Protocol(format!(
                "zero-copy completion for ids {lo}..={hi}, but only {} sends were made",
                self.issued
            )));
        }
        for id in lo..=hi {
            let slot = &mut self.done[id as usize];
            if *slot {
                return Err(WorkloadError::Protocol(format!(
                    "zero-copy send {id} completed twice"
                )));
            }
            *slot = true;
        }
        while self.low < self.issued && self.done[self.low as usize] {
            self.low += 1;
        }
        let n = u64::from(hi - lo) + 1;
        self.completed += n;
        Ok(n)
    }

    /// Drain the error queue until `ready` holds, waiting (poll for POLLERR) when it is empty.
    fn wait_until(
        &mut self,
        c: &mut Counters,
        sock: BorrowedFd<'_>,
        ready: impl Fn(&Self) -> bool,
    ) -> Result<(), WorkloadError> {
        let mut last_progress = Instant::now();
        while !ready(self) {
            if self.drain(c, sock)? > 0 {
                last_progress = Instant::now();
                continue;
            }
            if last_progress.elapsed() > COMPLETION_TIMEOUT {
                return Err(WorkloadError::Protocol(format!(
                    "no zero-copy completion for {COMPLETION_TIMEOUT:?} ({} sends outstanding)",
                    self.outstanding()
                )));
            }
            // A pending error-queue message makes poll report POLLERR whatever `events` asks.
            sys::poll_one(c, sock, 0, 100, "socket error queue")?;
        }
        Ok(())
    }

    /// Read every notification queued now (`recvmsg(MSG_ERRQUEUE)` until EAGAIN). Returns the
    /// number of sends newly completed.
    fn drain(&mut self, c: &mut Counters, sock: BorrowedFd<'_>) -> Result<u64, WorkloadError> {
        let mut newly = 0;
        loop {
            // u64 for the alignment cmsghdr needs; 64 bytes fit a cmsghdr, a sock_extended_err
            // and the offender address that follows it.
            let mut control = [0u64; 16];
            // SAFETY: msghdr is plain old data; all-zero means no name and no data buffers.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            // SAFETY: `msg` only points at `control`, writable for the stated length and alive
            // for the call; there are no iovecs (the error queue carries no payload here).
            match unsafe { sys::recvmsg(c, sock, &mut msg, libc::MSG_ERRQUEUE) } {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(newly),
                Err(e) => return Err(WorkloadError::syscall("recvmsg", "socket error queue", e)),
            }
            if msg.msg_flags & libc::MSG_CTRUNC != 0 {
                return Err(WorkloadError::Protocol(
                    "error-queue control message truncated".into(),
                ));
            }
            newly += self.parse(c, &msg)?;
        }
    }

    /// Handle the control messages of one error-queue message.
    fn parse(&mut self, c: &mut Counters, msg: &libc::msghdr) -> Result<u64, WorkloadError> {
        let mut newly = 0;
        let mut seen = false;
        // SAFETY: `msg` was filled by a successful recvmsg; CMSG_FIRSTHDR/NXTHDR only walk the
        // control buffer within `msg_controllen`.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
        while !cmsg.is_null() {
            // SAFETY: non-null cmsg pointers from CMSG_FIRSTHDR/NXTHDR point at a complete header
            // inside the control buffer.
            let hdr = unsafe { &*cmsg };
            let is_recverr = (hdr.cmsg_level == libc::SOL_IP && hdr.cmsg_type == libc::IP_RECVERR)
                || (hdr.cmsg_level == libc::SOL_IPV6 && hdr.cmsg_type == libc::IPV6_RECVERR);
            // SAFETY: CMSG_LEN is a pure computation.
            let needed =
                unsafe { libc::CMSG_LEN(std::mem::size_of::<libc::sock_extended_err>() as u32) }
                    as usize;
            if is_recverr && hdr.cmsg_len >= needed {
                // SAFETY: the header says the data holds at least a sock_extended_err;
                // read_unaligned because CMSG_DATA guarantees no alignment for the payload type.
                let ee: libc::sock_extended_err = unsafe {
                    std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>(),
                    )
                };
                if ee.ee_errno != 0 || ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY {
                    return Err(WorkloadError::Protocol(format!(
                        "error queue: not a zero-copy completion (errno {}, origin {})",
                        ee.ee_errno, ee.ee_origin
                    )));
                }
                let n = self.complete(ee.ee_info, ee.ee_data)?;
                let zc = c.zerocopy();
                zc.completions += n;
                if ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                    zc.copied = true;
                }
                newly += n;
                seen = true;
            }
            // SAFETY: as for CMSG_FIRSTHDR above.
            cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
        }
        if !seen {
            return Err(WorkloadError::Protocol(
                "error-queue message without a sock_extended_err".into(),
            ));
        }
        Ok(newly)
    }
}
