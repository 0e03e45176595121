//! `zcprof workload`: a built-in, known workload to profile.
//!
//! Sends a file to a TCP receiver on 127.0.0.1 (or copies it to another file) with one of ten
//! strategies, from plain `read`+`write` to `sendfile`, `splice`, io_uring `SEND_ZC` and
//! `MSG_ZEROCOPY`, and reports exactly which data-moving system calls the sending process made,
//! how many bytes each moved, and how long it took. The profiler's per-process numbers for the
//! sender can be checked against this tally.
//!
//! Process layout (the profiler counts per PID):
//! - the **sender** is the calling process, on the calling thread: its syscalls are the tally;
//! - the **receiver** is a separate process forked before the transfer (see `receiver.rs`): it
//!   reads into a 1 MiB buffer, discards, and reports its byte count through a pipe.
//!
//! Files: `args`/`run` here; `tally.rs` (the report and the counters), `sys.rs` (counted system
//! calls), `file.rs` (source file), `receiver.rs`, `gate.rs` (`--start-gate`), `strategy/` (one
//! file per strategy), `error.rs`, `tests.rs`.

mod error;
mod file;
mod gate;
mod receiver;
mod strategy;
mod sys;
/// The report types ([`Tally`] and the types of its fields).
pub mod tally;
#[cfg(test)]
mod tests;

use std::os::fd::AsFd;
use std::path::PathBuf;

pub use error::WorkloadError;
pub use tally::Tally;

use receiver::Receiver;
use strategy::Ctx;
use tally::{Counters, Measured};

/// Alignment (and size granularity) that `O_DIRECT` needs for buffers, offsets and lengths.
pub const DIRECT_IO_ALIGN: u64 = 4096;

/// Largest chunk (`--buffer`) accepted: 1 GiB. Single reads and writes are capped by the kernel at
/// a little under 2 GiB anyway, and io_uring lengths are 32-bit.
pub const MAX_BUFFER: u64 = 1 << 30;

/// Parsed options of `zcprof workload` (derive clap::Args so that the CLI can flatten it).
#[derive(clap::Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Strategy to run
    #[arg(long, value_enum)]
    pub strategy: Strategy,
    /// Bytes to send, with K/M/G suffixes (binary: 1M = 1048576). Default 256M.
    /// direct-io rounds it up to a multiple of 4096 (O_DIRECT transfers whole blocks).
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub size: u64,
    /// Buffer size for read-write/heap-buffer/direct-io/vmsplice chunks. Default 64K.
    /// Also the chunk of mmap-write, splice, io-uring and msg-zerocopy; direct-io rounds it up
    /// to a multiple of 4096.
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    pub buffer: u64,
    /// Source file; generated (pseudo-random content, exactly `size` bytes) if absent or of another size. Default: $TMPDIR/zcprof-workload-<size>.dat
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Wait for a line on stdin before transferring, after printing `ready` on stderr once
    /// everything else is set up (file, receiver, connection, buffers): attach a profiler, then
    /// send the line. The reads of that line are tallied in control_syscalls.
    #[arg(long)]
    pub start_gate: bool,
}

/// How the sender moves the file to the receiver.
#[derive(
    clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// read(file) into a buffer, write(socket) from it: 2 CPU copies per chunk.
    ReadWrite,
    /// read-write plus a user-space copy between two buffers, like Java's heap ByteBuffer.
    HeapBuffer,
    /// mmap the file, write(socket) from the mapping: 1 CPU copy (page cache -> socket).
    MmapWrite,
    /// sendfile(socket, file): no user buffer at all.
    Sendfile,
    /// splice(file -> pipe), splice(pipe -> socket): page references through a pipe.
    Splice,
    /// read(file) into user memory, vmsplice(pipe) it by reference, splice(pipe -> socket).
    Vmsplice,
    /// io_uring READ then SEND_ZC (or SEND where SEND_ZC is not supported).
    IoUring,
    /// read(file), then sendmsg(MSG_ZEROCOPY) with completions from the socket's error queue.
    MsgZerocopy,
    /// read(file) with O_DIRECT (DMA straight into user memory, no page cache), write(socket).
    DirectIo,
    /// copy_file_range(file -> new file in the same directory): in-kernel, no socket.
    CopyFileRange,
}

impl Strategy {
    /// The name used on the command line and in the tally (`read-write`, `io-uring`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::ReadWrite => "read-write",
            Strategy::HeapBuffer => "heap-buffer",
            Strategy::MmapWrite => "mmap-write",
            Strategy::Sendfile => "sendfile",
            Strategy::Splice => "splice",
            Strategy::Vmsplice => "vmsplice",
            Strategy::IoUring => "io-uring",
            Strategy::MsgZerocopy => "msg-zerocopy",
            Strategy::DirectIo => "direct-io",
            Strategy::CopyFileRange => "copy-file-range",
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parse a byte count: a plain number, or a number with a binary suffix K, M or G
/// (case-insensitive, optionally followed by `iB` or `B`): `"256M"` is 268435456, `"4KiB"` 4096,
/// `"1g"` 1073741824, `"512B"` 512.
pub fn parse_size(s: &str) -> Result<u64, String> {
    zcprof_common::parse_size(s).ok_or_else(|| {
        format!("invalid size {s:?}: expected a number with an optional K, M or G suffix")
    })
}

/// Run the workload described by `args` in the calling process and report what it did.
///
/// The source file is generated (if needed) and read once into the page cache, and the receiver
/// is forked, before the measured transfer starts. Forking happens here, so call this early in a
/// process that has few threads; the child only makes raw system calls, so other threads are not
/// a safety problem, merely wasteful.
pub fn run(args: &WorkloadArgs) -> Result<Tally, WorkloadError> {
    let strategy = args.strategy;
    if args.size == 0 {
        return Err(WorkloadError::InvalidArgs(
            "--size must be at least 1 byte".into(),
        ));
    }
    if args.buffer == 0 || args.buffer > MAX_BUFFER {
        return Err(WorkloadError::InvalidArgs(format!(
            "--buffer must be between 1 byte and {MAX_BUFFER} bytes, got {}",
            args.buffer
        )));
    }
    // O_DIRECT needs block-aligned offsets and lengths: round both up to whole 4 KiB blocks, so
    // that every read is aligned (the generated file then has the rounded size).
    let (size, buffer) = if strategy == Strategy::DirectIo {
        (
            round_up(args.size, DIRECT_IO_ALIGN)?,
            round_up(args.buffer, DIRECT_IO_ALIGN)?,
        )
    } else {
        (args.size, args.buffer)
    };
    if usize::try_from(size).is_err() {
        return Err(WorkloadError::InvalidArgs(format!(
            "--size {size} does not fit in memory addresses"
        )));
    }
    let path: PathBuf = args
        .file
        .clone()
        .unwrap_or_else(|| file::default_path(size));
    file::prepare(&path, size)?;

    let ctx = Ctx {
        path: &path,
        size,
        buffer,
        gate: args.start_gate,
    };
    let mut counters = Counters::default();

    let (bytes, received, measured, receiver_pid) = if strategy == Strategy::CopyFileRange {
        // No socket, so no receiver: the "receiver" is the destination file.
        let copied = strategy::copy_file_range::copy(&ctx, &mut counters)?;
        (
            copied.bytes,
            copied.destination_bytes,
            copied.measured,
            None,
        )
    } else {
        let (mut receiver, sock) = Receiver::spawn()?;
        let sent = strategy::send(strategy, &ctx, sock.as_fd(), &mut counters)?;
        // End of stream: the receiver reads EOF and reports its count. Only then is the last
        // byte known to be delivered, so the window closes after that report.
        sys::shutdown_write(&mut counters, sock.as_fd())?;
        let received = receiver.wait_count(&mut counters)?;
        let measured = sent.meter.stop()?;
        // The receiver has read everything: no socket buffer references our pages any more.
        drop(sent.keep_alive);
        drop(sock);
        let pid = receiver.pid();
        receiver.reap()?;
        (sent.bytes, received, measured, Some(pid))
    };

    if received != bytes {
        return Err(WorkloadError::Mismatch {
            sent: bytes,
            received,
        });
    }
    Ok(build_tally(
        strategy,
        &ctx,
        counters,
        bytes,
        received,
        measured,
        receiver_pid,
    ))
}

fn build_tally(
    strategy: Strategy,
    ctx: &Ctx<'_>,
    counters: Counters,
    bytes: u64,
    receiver_bytes: u64,
    m: Measured,
    receiver_pid: Option<u32>,
) -> Tally {
    let parts = counters.into_parts();
    let throughput_mib_s = if m.elapsed_s > 0.0 {
        bytes as f64 / (1u64 << 20) as f64 / m.elapsed_s
    } else {
        0.0
    };
    Tally {
        strategy: strategy.name().to_owned(),
        sender_pid: std::process::id(),
        receiver_pid,
        file: ctx.path.to_owned(),
        buffer: ctx.buffer,
        bytes,
        syscalls: parts.syscalls,
        control_syscalls: parts.control,
        io_uring_ops: parts.io_uring_ops,
        user_space_copies: parts.user_copies,
        zerocopy: parts.zerocopy,
        elapsed_s: m.elapsed_s,
        throughput_mib_s,
        cpu_user_s: m.cpu_user_s,
        cpu_sys_s: m.cpu_sys_s,
        receiver_bytes,
    }
}

fn round_up(n: u64, align: u64) -> Result<u64, WorkloadError> {
    n.checked_next_multiple_of(align).ok_or_else(|| {
        WorkloadError::InvalidArgs(format!("{n} cannot be rounded up to a multiple of {align}"))
    })
}
