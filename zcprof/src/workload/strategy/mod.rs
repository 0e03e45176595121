//! The sending strategies, one file each. Every strategy:
//! 1. prepares what it needs outside the measured window (opens the file, allocates buffers,
//!    creates pipes or rings: setup that a long-running server would do once);
//! 2. touches its buffers (so that their first-touch page faults are not measured), then calls
//!    [`Ctx::start`] right before its first data-moving system call: with `--start-gate` that
//!    says `ready` and waits for the go line (see `gate.rs`), then it starts the [`Meter`];
//! 3. moves exactly `ctx.size` bytes to the socket, making every data-moving call through
//!    `sys.rs` so that it is counted where it is made.
//!
//! The caller (`run`) then shuts the socket down, waits for the receiver's count and stops the
//! meter.

pub(crate) mod copy_file_range;
mod direct_io;
mod heap_buffer;
mod io_uring;
mod mmap_write;
mod msg_zerocopy;
mod pipe;
mod read_write;
mod sendfile;
mod splice;
mod vmsplice;

use std::any::Any;
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::path::Path;

use super::Strategy;
use super::error::WorkloadError;
use super::tally::{Counters, Meter};

/// What every strategy needs to know.
pub(crate) struct Ctx<'a> {
    /// The source file (exactly `size` bytes, in the page cache).
    pub path: &'a Path,
    /// Bytes to send.
    pub size: u64,
    /// Chunk size (at most `MAX_BUFFER`).
    pub buffer: u64,
    /// `--start-gate`: wait for a line on stdin before the first data-moving call.
    pub gate: bool,
}

impl Ctx<'_> {
    /// Open the source file for reading (`O_CLOEXEC`, as std always does).
    pub(crate) fn open(&self) -> Result<File, WorkloadError> {
        File::open(self.path).map_err(|source| WorkloadError::SourceFile {
            path: self.path.to_owned(),
            what: "open for sending",
            source,
        })
    }

    /// Length of the chunk that starts at offset `done`.
    pub(crate) fn chunk(&self, done: u64) -> usize {
        // Fits: `buffer <= MAX_BUFFER`, and `run` checked that `size` fits in a usize.
        self.buffer.min(self.size - done) as usize
    }

    /// Length of a buffer that holds one chunk (never more than the whole file).
    pub(crate) fn buffer_len(&self) -> usize {
        self.buffer.min(self.size) as usize
    }

    /// A zeroed buffer of [`Ctx::buffer_len`] bytes, already touched (see [`touch`]).
    pub(crate) fn buffer(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        touch(&mut buf);
        buf
    }

    /// Start the measured window, right before the first data-moving system call. With
    /// `--start-gate`, first say `ready` on stderr and wait for a line on stdin (see `gate.rs`):
    /// everything the strategy did before this call is setup, outside what a profiler attached
    /// at the gate sees.
    pub(crate) fn start(&self, c: &mut Counters) -> Result<Meter, WorkloadError> {
        if self.gate {
            super::gate::wait(c)?;
        }
        Meter::start()
    }
}

/// Size of the pages [`touch`] writes to (the smallest page size of every Linux target).
const PAGE: usize = 4096;

/// Write one byte of every page of `buf`, so that its pages are allocated now and not by the
/// first `read` into it inside the measured window (a zeroed allocation is usually fresh,
/// untouched memory: `calloc` and the kernel both hand out zero pages lazily).
pub(crate) fn touch(buf: &mut [u8]) {
    for page in buf.chunks_mut(PAGE) {
        page[0] = 1;
    }
}

/// A finished send: the running meter, the bytes the socket accepted, and memory that the
/// kernel may still reference until the receiver has read everything (vmsplice'd pages).
pub(crate) struct Sent {
    pub meter: Meter,
    pub bytes: u64,
    pub keep_alive: Option<Box<dyn Any>>,
}

impl Sent {
    fn new(meter: Meter, bytes: u64) -> Self {
        Self {
            meter,
            bytes,
            keep_alive: None,
        }
    }
}

/// Run the sending side of `strategy` over the connected socket `sock`.
pub(crate) fn send(
    strategy: Strategy,
    ctx: &Ctx<'_>,
    sock: BorrowedFd<'_>,
    c: &mut Counters,
) -> Result<Sent, WorkloadError> {
    match strategy {
        Strategy::ReadWrite => read_write::send(ctx, sock, c),
        Strategy::HeapBuffer => heap_buffer::send(ctx, sock, c),
        Strategy::MmapWrite => mmap_write::send(ctx, sock, c),
        Strategy::Sendfile => sendfile::send(ctx, sock, c),
        Strategy::Splice => splice::send(ctx, sock, c),
        Strategy::Vmsplice => vmsplice::send(ctx, sock, c),
        Strategy::IoUring => io_uring::send(ctx, sock, c),
        Strategy::MsgZerocopy => msg_zerocopy::send(ctx, sock, c),
        Strategy::DirectIo => direct_io::send(ctx, sock, c),
        Strategy::CopyFileRange => Err(WorkloadError::InvalidArgs(
            "copy-file-range copies to a file, not to a socket".into(),
        )),
    }
}

/// The end of file came before `size` bytes.
fn eof(syscall: &'static str, target: &'static str, done: u64, expected: u64) -> WorkloadError {
    WorkloadError::UnexpectedEof {
        syscall,
        target,
        done,
        expected,
    }
}

/// A call that must make progress returned 0.
fn stalled(syscall: &'static str, target: &'static str, done: u64) -> WorkloadError {
    WorkloadError::NoProgress {
        syscall,
        target,
        done,
    }
}

/// The largest count the kernel moves in one read/write/sendfile/splice (`MAX_RW_COUNT`).
const MAX_RW_COUNT: u64 = 0x7fff_f000;
