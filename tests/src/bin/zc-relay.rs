//! `zc-relay`: sends a file to a TCP peer over loopback the way a relay would, for the
//! findings tests; each way one of the patterns a finding is about.
//!
//! Usage: `zc-relay <TALLY_PATH> <MODE> <FILE> [CHUNK]`, MODE one of
//! - `copy`: `read(file, buf)` then `write(socket, buf)`, chunk by chunk, to end of file;
//! - `sendfile`: `sendfile(socket, file)` chunk by chunk (the same relay without a copy);
//! - `mmap`: the file mapped, `write(socket, map[off..off + chunk])` chunk by chunk;
//! - `mmap-touch`: the file mapped, each chunk copied by the sender's own code into a buffer,
//!   then `write(socket, buf)`: the file's pages fault in outside the syscalls;
//! - `mmap-populate`: as `mmap`, the file mapped with `MAP_POPULATE`: its pages fault in
//!   inside mmap, which moves nothing, before the writes;
//! - `uring-punt`: the file read chunk by chunk with io_uring `IORING_OP_READ` and
//!   `IOSQE_ASYNC`, which makes the kernel hand every read to an io-wq worker (no socket).
//!
//! The transfer runs on a thread of its own, the *sender*, so that nothing else (the dynamic
//! loader's reads, the receiver) is in its counts; the receiver is another thread that reads
//! and discards. Tally JSON, written to TALLY_PATH after the sender is done: `{"mode",
//! "sender_tid", "file_bytes_read", "file_reads" (successful, the end-of-file read included),
//! "socket_bytes_written", "socket_writes", "sendfile_bytes", "async_reads" (io_uring reads
//! submitted with IOSQE_ASYNC), "received"}`.

use std::{
    fs::File,
    io::Read as _,
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::exit,
};

use io_uring::{IoUring, opcode, squeue, types};
use serde_json::json;

/// What the sender did, counted at each call site.
#[derive(Default)]
struct Tally {
    tid: i64,
    file_bytes_read: u64,
    file_reads: u64,
    socket_bytes_written: u64,
    socket_writes: u64,
    sendfile_bytes: u64,
    async_reads: u64,
}

fn die(msg: &str) -> ! {
    eprintln!("zc-relay: {msg}");
    exit(1)
}

/// The last OS error, as a message about `what`.
fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// `write(fd, buf)` until all of `buf` is out.
fn write_all(t: &mut Tally, fd: i32, mut buf: &[u8]) -> Result<(), String> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(os_err("write to the socket"));
        }
        t.socket_writes += 1;
        t.socket_bytes_written += n as u64;
        buf = &buf[n as usize..];
    }
    Ok(())
}

fn copy(t: &mut Tally, file: &File, sock: i32, chunk: usize) -> Result<(), String> {
    let mut buf = vec![0u8; chunk];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(os_err("read from the file"));
        }
        t.file_reads += 1;
        t.file_bytes_read += n as u64;
        if n == 0 {
            return Ok(());
        }
        write_all(t, sock, &buf[..n as usize])?;
    }
}

fn sendfile(t: &mut Tally, file: &File, sock: i32, chunk: usize) -> Result<(), String> {
    loop {
        // SAFETY: plain descriptors; a null offset uses and moves the file's own.
        let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), std::ptr::null_mut(), chunk) };
        if n < 0 {
            return Err(os_err("sendfile"));
        }
        if n == 0 {
            return Ok(());
        }
        t.sendfile_bytes += n as u64;
    }
}

/// How the sender gets the mapping's pages.
#[derive(Clone, Copy, PartialEq)]
enum Mapped {
    /// `write` faults them in as it copies.
    ByWrite,
    /// The sender's own code copies each chunk out of the mapping before writing it.
    Touched,
    /// mmap maps them all (`MAP_POPULATE`).
    Populated,
}

fn mmap_write(
    t: &mut Tally,
    file: &File,
    sock: i32,
    chunk: usize,
    how: Mapped,
) -> Result<(), String> {
    let len = file.metadata().map_err(|e| format!("stat: {e}"))?.len() as usize;
    // SAFETY: a fresh shared read-only mapping of the whole file; checked below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            if how == Mapped::Populated {
                libc::MAP_SHARED | libc::MAP_POPULATE
            } else {
                libc::MAP_SHARED
            },
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(os_err("mmap"));
    }
    // SAFETY: the mapping is `len` readable bytes until the munmap below; the file is the
    // test's and nobody truncates it meanwhile.
    let data = unsafe { std::slice::from_raw_parts(map.cast::<u8>(), len) };
    let mut result = Ok(());
    let touch = how == Mapped::Touched;
    let mut buf = if touch { vec![0u8; chunk] } else { Vec::new() };
    for piece in data.chunks(chunk) {
        result = if touch {
            let buf = &mut buf[..piece.len()];
            buf.copy_from_slice(piece);
            write_all(t, sock, buf)
        } else {
            write_all(t, sock, piece)
        };
        if result.is_err() {
            break;
        }
    }
    // SAFETY: `data` is not used past this point.
    unsafe { libc::munmap(map, len) };
    result
}

fn uring_punt(t: &mut Tally, file: &File, chunk: usize) -> Result<(), String> {
    const DEPTH: usize = 16;
    let len = file.metadata().map_err(|e| format!("stat: {e}"))?.len();
    let mut ring = IoUring::new(DEPTH as u32).map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut bufs = vec![vec![0u8; chunk]; DEPTH];
    let mut off = 0u64;
    while off < len {
        let mut queued = 0;
        for buf in bufs.iter_mut() {
            if off >= len {
                break;
            }
            let read = opcode::Read::new(
                types::Fd(file.as_raw_fd()),
                buf.as_mut_ptr(),
                buf.len() as u32,
            )
            .offset(off)
            .build()
            .flags(squeue::Flags::ASYNC);
            // SAFETY: the buffer lives until its completion is reaped below.
            unsafe { ring.submission().push(&read) }.map_err(|_| "SQ full".to_string())?;
            off += chunk as u64;
            queued += 1;
        }
        ring.submit_and_wait(queued)
            .map_err(|e| format!("io_uring_enter: {e}"))?;
        t.async_reads += queued as u64;
        for cqe in ring.completion() {
            if cqe.result() < 0 {
                return Err(format!("io_uring read: errno {}", -cqe.result()));
            }
            t.file_bytes_read += cqe.result() as u64;
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, tally_path, mode, path, rest @ ..] = &args[..] else {
        die("usage: zc-relay TALLY_PATH MODE FILE [CHUNK]");
    };
    let chunk: usize = match rest.first() {
        Some(c) => c.parse().unwrap_or_else(|_| die("CHUNK: a byte count")),
        None => 64 << 10,
    };
    let file = File::open(path).unwrap_or_else(|e| die(&format!("open {path}: {e}")));
    // The sender's syscalls then fault in only the file's pages (a constant of ours read by a
    // syscall would fault inside it on a cold page cache).
    zcprof_tests::populate_file_mappings();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| die(&format!("listen on loopback: {e}")));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| die(&e.to_string()));
    let receiver = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let sock = TcpStream::connect(addr).unwrap_or_else(|e| die(&format!("connect: {e}")));
    let mode_name = mode.clone();
    let sender = std::thread::spawn(move || -> Result<Tally, String> {
        let mut t = Tally {
            // SAFETY: gettid has no preconditions.
            tid: unsafe { libc::gettid() } as i64,
            ..Tally::default()
        };
        let fd = sock.as_raw_fd();
        match mode_name.as_str() {
            "copy" => copy(&mut t, &file, fd, chunk)?,
            "sendfile" => sendfile(&mut t, &file, fd, chunk)?,
            "mmap" => mmap_write(&mut t, &file, fd, chunk, Mapped::ByWrite)?,
            "mmap-touch" => mmap_write(&mut t, &file, fd, chunk, Mapped::Touched)?,
            "mmap-populate" => mmap_write(&mut t, &file, fd, chunk, Mapped::Populated)?,
            "uring-punt" => uring_punt(&mut t, &file, chunk)?,
            other => return Err(format!("unknown mode {other}")),
        }
        // Dropping the socket ends the stream: the receiver sees end of file.
        drop(sock);
        Ok(t)
    });
    let t = match sender.join() {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => die(&e),
        Err(_) => die("the sender panicked"),
    };
    let received = match receiver.join() {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => die(&format!("receiver: {e}")),
        Err(_) => die("the receiver panicked"),
    };
    let doc = json!({
        "mode": mode, "sender_tid": t.tid, "file_bytes_read": t.file_bytes_read,
        "file_reads": t.file_reads, "socket_bytes_written": t.socket_bytes_written,
        "socket_writes": t.socket_writes, "sendfile_bytes": t.sendfile_bytes,
        "async_reads": t.async_reads, "received": received,
    });
    std::fs::write(tally_path, doc.to_string())
        .unwrap_or_else(|e| die(&format!("write {tally_path}: {e}")));
}
