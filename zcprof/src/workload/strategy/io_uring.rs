//! io-uring: `IORING_OP_READ` from the file into a buffer, then `IORING_OP_SEND_ZC` (or
//! `IORING_OP_SEND` where the kernel lacks SEND_ZC) to the socket, with a few chunks in flight.
//!
//! The pipeline: [`SLOTS`] buffers; reads (with explicit offsets) run ahead into free buffers;
//! sends go out strictly in file order, one at a time (two sends in flight on one TCP socket
//! could be reordered if the first waits for buffer space). With SEND_ZC the kernel references
//! the buffer until a second completion, the notification (IORING_CQE_F_NOTIF), arrives; a
//! buffer is only reused after that. IORING_SEND_ZC_REPORT_USAGE makes the notification say
//! whether the kernel fell back to copying (always, over loopback).
//!
//! Counted: one `io_uring_enter` per `submit_and_wait` (no SQPOLL, so each is a system call);
//! completed operations by opcode in `io_uring_ops`; SEND_ZC requests and notifications in
//! `zerocopy`. Ring setup and the opcode probe (`io_uring_setup`, `io_uring_register`, `mmap`)
//! happen before the measured window.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};

use super::{Ctx, Sent, eof, stalled};
use crate::workload::error::WorkloadError;
use crate::workload::sys;
use crate::workload::tally::Counters;

/// `IORING_SEND_ZC_REPORT_USAGE` (`<linux/io_uring.h>`, 6.2+; the crate keeps its copy private).
const IORING_SEND_ZC_REPORT_USAGE: u16 = 1 << 3;
/// `IORING_NOTIF_USAGE_ZC_COPIED`: set in a notification's `res` when the data was copied.
const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;

/// Buffers in the pipeline: enough for reads to run ahead of the single in-flight send.
const SLOTS: usize = 4;
/// Submission queue entries (the completion queue gets twice as many): at most SLOTS reads and
/// one send are queued at a time.
const RING_ENTRIES: u32 = 16;

/// `user_data` layout: operation in the high half, slot index in the low half.
const OP_READ: u64 = 1;
const OP_SEND: u64 = 2;

fn user_data(op: u64, slot: usize) -> u64 {
    (op << 32) | slot as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Holds nothing (but see `Slot::notifs`).
    Idle,
    /// Reading chunk `off..off + len`; `filled` bytes are in. `queued`: a READ is in flight.
    Reading {
        off: u64,
        len: usize,
        filled: usize,
        queued: bool,
    },
    /// Chunk `off..off + len` is in the buffer, waiting for its turn to be sent.
    Ready { off: u64, len: usize },
    /// Sending chunk `off..off + len`; `sent` bytes are out. `queued`: a SEND is in flight.
    Sending {
        off: u64,
        len: usize,
        sent: usize,
        queued: bool,
    },
}

struct Slot {
    buf: Vec<u8>,
    state: State,
    /// SEND_ZC notifications still owed for this buffer: it may not be rewritten before 0.
    notifs: u32,
}

impl Slot {
    fn free(&self) -> bool {
        self.state == State::Idle && self.notifs == 0
    }
}

pub(super) fn send(
    ctx: &Ctx<'_>,
    sock: BorrowedFd<'_>,
    c: &mut Counters,
) -> Result<Sent, WorkloadError> {
    let file = ctx.open()?;
    let mut ring = IoUring::new(RING_ENTRIES)
        .map_err(|e| WorkloadError::syscall("io_uring_setup", "ring", e))?;
    let zero_copy = supports_send_zc(&ring)?;
    if zero_copy {
        // Make the zero-copy counters appear even if nothing is sent.
        c.zerocopy();
    }
    let mut slots: Vec<Slot> = (0..SLOTS)
        .map(|_| Slot {
            buf: ctx.buffer(),
            state: State::Idle,
            notifs: 0,
        })
        .collect();

    let mut pipeline = Pipeline {
        ctx,
        file: file.as_fd(),
        sock,
        zero_copy,
        next_read: 0,
        next_send: 0,
        in_flight: 0,
        cqes: Vec::with_capacity(2 * RING_ENTRIES as usize),
    };
    let meter = ctx.start(c)?;
    match pipeline.run(&mut ring, &mut slots, c) {
        Ok(sent) => Ok(Sent::new(meter, sent)),
        Err(e) => {
            if pipeline.in_flight > 0 || slots.iter().any(|s| s.notifs > 0) {
                // The kernel may still write into (reads) or read from (sends) these buffers,
                // even after the ring is closed: leak them rather than free memory the kernel
                // is using. Only on this error path.
                std::mem::forget(slots);
            }
            Err(e)
        }
    }
}

/// Whether the running kernel has IORING_OP_SEND_ZC (6.0+).
fn supports_send_zc(ring: &IoUring) -> Result<bool, WorkloadError> {
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        WorkloadError::syscall("io_uring_register", "ring, IORING_REGISTER_PROBE", e)
    })?;
    Ok(probe.is_supported(opcode::SendZc::CODE))
}

struct Pipeline<'a> {
    ctx: &'a Ctx<'a>,
    file: BorrowedFd<'a>,
    sock: BorrowedFd<'a>,
    zero_copy: bool,
    /// Offset of the next chunk to start reading.
    next_read: u64,
    /// Offset of the next chunk to send (everything before it has been sent).
    next_send: u64,
    /// Submitted operations whose (first) completion has not arrived yet.
    in_flight: u32,
    /// Completions copied out of the ring, reused across iterations.
    cqes: Vec<cqueue::Entry>,
}

impl Pipeline<'_> {
    fn run(
        &mut self,
        ring: &mut IoUring,
        slots: &mut [Slot],
        c: &mut Counters,
    ) -> Result<u64, WorkloadError> {
        loop {
            self.queue(ring, slots)?;
            let notifs_owed = slots.iter().any(|s| s.notifs > 0);
            if self.next_send == self.ctx.size && self.in_flight == 0 && !notifs_owed {
                return Ok(self.next_send);
            }
            if self.in_flight == 0 && !notifs_owed {
                return Err(WorkloadError::Protocol(format!(
                    "io_uring pipeline stalled at offset {} with nothing in flight",
                    self.next_send
                )));
            }
            sys::io_uring_enter(c, ring, 1)?;
            self.cqes.clear();
            self.cqes.extend(ring.completion());
            for i in 0..self.cqes.len() {
                let cqe = self.cqes[i].clone();
                self.complete(&cqe, slots, c)?;
            }
        }
    }

    /// Put every operation that can start now into the submission queue.
    fn queue(&mut self, ring: &mut IoUring, slots: &mut [Slot]) -> Result<(), WorkloadError> {
        let size = self.ctx.size;
        let sending = slots
            .iter()
            .any(|s| matches!(s.state, State::Sending { .. }));
        for (i, slot) in slots.iter_mut().enumerate() {
            // Start a read into a free buffer.
            if slot.free() && self.next_read < size {
                let len = self.ctx.chunk(self.next_read);
                slot.state = State::Reading {
                    off: self.next_read,
                    len,
                    filled: 0,
                    queued: false,
                };
                self.next_read += len as u64;
            }
            // The next chunk in file order is ready and the socket is free: send it.
            if let State::Ready { off, len } = slot.state
                && off == self.next_send
                && !sending
            {
                slot.state = State::Sending {
                    off,
                    len,
                    sent: 0,
                    queued: false,
                };
            }
            match &mut slot.state {
                State::Reading {
                    off,
                    len,
                    filled,
                    queued,
                    ..
                } if !*queued => {
                    let rest = &mut slot.buf[*filled..*len];
                    let entry = opcode::Read::new(
                        types::Fd(self.file.as_raw_fd()),
                        rest.as_mut_ptr(),
                        rest.len() as u32,
                    )
                    .offset(*off + *filled as u64)
                    .build()
                    .user_data(user_data(OP_READ, i));
                    push(ring, &entry)?;
                    *queued = true;
                    self.in_flight += 1;
                }
                State::Sending {
                    len, sent, queued, ..
                } if !*queued => {
                    let rest = &slot.buf[*sent..*len];
                    let fd = types::Fd(self.sock.as_raw_fd());
                    let entry = if self.zero_copy {
                        opcode::SendZc::new(fd, rest.as_ptr(), rest.len() as u32)
                            .flags(libc::MSG_NOSIGNAL)
                            .zc_flags(IORING_SEND_ZC_REPORT_USAGE)
                            .build()
                    } else {
                        opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                            .flags(libc::MSG_NOSIGNAL)
                            .build()
                    };
                    push(ring, &entry.user_data(user_data(OP_SEND, i)))?;
                    *queued = true;
                    self.in_flight += 1;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Handle one completion.
    fn complete(
        &mut self,
        cqe: &cqueue::Entry,
        slots: &mut [Slot],
        c: &mut Counters,
    ) -> Result<(), WorkloadError> {
        let op = cqe.user_data() >> 32;
        let index = (cqe.user_data() & 0xffff_ffff) as usize;
        let Some(slot) = slots.get_mut(index) else {
            return Err(WorkloadError::Protocol(format!(
                "io_uring completion for unknown slot {index}"
            )));
        };
        let res = cqe.result();

        if cqueue::notif(cqe.flags()) {
            // SEND_ZC's second completion: the kernel let go of the buffer.
            if op != OP_SEND || slot.notifs == 0 {
                return Err(WorkloadError::Protocol(
                    "unexpected io_uring notification".into(),
                ));
            }
            slot.notifs -= 1;
            let zc = c.zerocopy();
            zc.completions += 1;
            // `res` is a bit set here, not a count: the COPIED flag is bit 31.
            if (res as u32) & IORING_NOTIF_USAGE_ZC_COPIED != 0 {
                zc.copied = true;
            }
            return Ok(());
        }

        self.in_flight -= 1;
        match (op, &mut slot.state) {
            (
                OP_READ,
                State::Reading {
                    off,
                    len,
                    filled,
                    queued,
                },
            ) => {
                c.io_uring_op("read");
                *queued = false;
                if res < 0 {
                    return Err(WorkloadError::syscall(
                        "io_uring read",
                        "file",
                        io::Error::from_raw_os_error(-res),
                    ));
                }
                if res == 0 {
                    return Err(eof(
                        "io_uring read",
                        "file",
                        *off + *filled as u64,
                        self.ctx.size,
                    ));
                }
                *filled += res as usize;
                if *filled == *len {
                    slot.state = State::Ready {
                        off: *off,
                        len: *len,
                    };
                }
                // Otherwise a short read: `queue` submits a read for the rest.
            }
            (
                OP_SEND,
                State::Sending {
                    off,
                    len,
                    sent,
                    queued,
                },
            ) => {
                let name = if self.zero_copy { "send_zc" } else { "send" };
                c.io_uring_op(name);
                *queued = false;
                if cqueue::more(cqe.flags()) {
                    // A notification will follow for this request.
                    slot.notifs += 1;
                    c.zerocopy().sends += 1;
                }
                if res < 0 {
                    let e = io::Error::from_raw_os_error(-res);
                    return Err(WorkloadError::syscall(
                        if self.zero_copy {
                            "io_uring send_zc"
                        } else {
                            "io_uring send"
                        },
                        "socket",
                        e,
                    ));
                }
                if res == 0 {
                    return Err(stalled(name, "socket", *off + *sent as u64));
                }
                *sent += res as usize;
                if *sent == *len {
                    self.next_send = *off + *len as u64;
                    slot.state = State::Idle;
                }
                // Otherwise a short send: `queue` submits a send for the rest (in order, as no
                // other send can start while this slot is Sending).
            }
            _ => {
                return Err(WorkloadError::Protocol(format!(
                    "io_uring completion (op {op}) for slot {index} in state {:?}",
                    slot.state
                )));
            }
        }
        Ok(())
    }
}

fn push(ring: &mut IoUring, entry: &squeue::Entry) -> Result<(), WorkloadError> {
    // SAFETY: the entry points into a slot buffer that stays alive and untouched until its
    // completion (and, for SEND_ZC, its notification) has been reaped: slots are only rewritten
    // when `Slot::free`, and `send` leaks them if it returns early with operations in flight.
    unsafe { ring.submission().push(entry) }
        .map_err(|_| WorkloadError::Protocol("io_uring submission queue full".into()))
}
