//! `zc-child`: a purpose-written workload for zcprof's integration tests.
//!
//! Usage: `zc-child <TALLY_PATH> <ACTION> [ARGS…]`
//!
//! The process started by the test (the *supervisor*) prepares everything an action needs
//! (files, pipes, sockets, buffers), then starts a *worker* process (clone with CLONE_VM |
//! CLONE_VFORK, like posix_spawn, on a stack of its own) that performs only the measured
//! syscalls on those inherited descriptors and exits with `_exit`. Every syscall the worker
//! makes is counted at its call site together with the bytes it returned, so the worker's
//! whole life is known: its first syscall event is the return of `clone` in the child, then
//! the counted calls, then `exit_group`. The worker writes its tally into memory it shares
//! with the supervisor (no syscall); the supervisor reaps it with `wait4`, which gives the
//! worker's exact final `rusage` (context switches, page faults), and writes the tally JSON to
//! TALLY_PATH. The worker's parent is the supervisor (find it by ppid in /proc).
//!
//! Tally JSON:
//! `{"action", "args", "supervisor_pid", "worker_pid", "calls": {NAME: {"calls","bytes",
//! "errors","zerocopy_requested"}}, "before": {..}, "wait": {..}, "tracked_syscalls",
//! "worker_fixed_syscalls", "untracked_syscalls", "pages_touched", "file_pages_touched",
//! "rusage": {"nvcsw","nivcsw","minflt","majflt"}, "proc_io": {"rchar","wchar","syscr",
//! "syscw",…}, "worker_exit": {..}, "error"}`. Syscall names are zcprof's transfer
//! names (`read`, `pread64`, `mmap_file`, `mmap_anon`, `munmap`, …) plus plain syscall names
//! for the others (`getpid`, `clock_nanosleep`, `access`, …); io_uring operations are
//! `io_uring:read`.

use std::{
    ffi::CString,
    io::Write as _,
    net::{TcpListener, TcpStream, UdpSocket},
    os::fd::IntoRawFd,
    path::{Path, PathBuf},
    process::exit,
    ptr,
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};

const MAX_CELLS: usize = 48;
const PHASES: usize = 3;
/// Activity before the start file appears (`wait-then` only): must NOT be seen by an attach
/// that happens afterwards.
const BEFORE: usize = 0;
/// Polling for the start file (`wait-then` only).
const WAIT: usize = 1;
/// The measured action.
const MAIN: usize = 2;
const PAGE: usize = 4096;

#[derive(Clone, Copy)]
struct Cell {
    name: &'static str,
    calls: u64,
    bytes: u64,
    errors: u64,
    zerocopy: u64,
}

const EMPTY: Cell = Cell {
    name: "",
    calls: 0,
    bytes: 0,
    errors: 0,
    zerocopy: 0,
};

/// The worker's tally, in a `MAP_SHARED` anonymous mapping shared with the supervisor.
struct Shared {
    cells: [[Cell; MAX_CELLS]; PHASES],
    used: [usize; PHASES],
    phase: usize,
    pages_touched: u64,
    file_pages_touched: u64,
    untracked: bool,
    error_len: usize,
    error: [u8; 2048],
}

type Job = Box<dyn FnOnce(&mut Shared) -> Result<(), String>>;

/// linux/errqueue.h: a MSG_ZEROCOPY completion, and its "the kernel copied" flag (not in libc).
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errstr(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

impl Shared {
    fn cell(&mut self, name: &'static str) -> Result<&mut Cell, String> {
        let p = self.phase;
        let used = self.used[p];
        if let Some(i) = self.cells[p][..used].iter().position(|c| c.name == name) {
            return Ok(&mut self.cells[p][i]);
        }
        if used == MAX_CELLS {
            return Err("tally full".into());
        }
        self.used[p] += 1;
        self.cells[p][used] = Cell { name, ..EMPTY };
        Ok(&mut self.cells[p][used])
    }

    /// A data-moving call that returned `ret` (bytes, or -1 with errno).
    fn xfer(&mut self, name: &'static str, ret: isize) -> Result<usize, String> {
        let e = errno();
        let c = self.cell(name)?;
        c.calls += 1;
        if ret < 0 {
            c.errors += 1;
            return Err(format!("{name}: {}", errstr(e)));
        }
        c.bytes += ret as u64;
        Ok(ret as usize)
    }

    /// A data-moving call that returned `ret` (< 0: failed) and moved `bytes`.
    fn xfer_n(&mut self, name: &'static str, ret: i64, bytes: u64) -> Result<(), String> {
        let e = errno();
        let c = self.cell(name)?;
        c.calls += 1;
        if ret < 0 {
            c.errors += 1;
            return Err(format!("{name}: {}", errstr(e)));
        }
        c.bytes += bytes;
        Ok(())
    }

    /// Any other syscall.
    fn call(&mut self, name: &'static str, ret: i64) -> Result<i64, String> {
        let e = errno();
        let c = self.cell(name)?;
        c.calls += 1;
        if ret < 0 {
            c.errors += 1;
            return Err(format!("{name}: {}", errstr(e)));
        }
        Ok(ret)
    }

    fn set_error(&mut self, msg: &str) {
        let b = msg.as_bytes();
        let n = b.len().min(self.error.len());
        self.error[..n].copy_from_slice(&b[..n]);
        self.error_len = n;
    }
}

fn map_shared() -> &'static mut Shared {
    let size = std::mem::size_of::<Shared>();
    // SAFETY: plain anonymous shared mapping, checked below.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        die(&format!("mmap shared tally: {}", errstr(errno())));
    }
    let p = p.cast::<Shared>();
    // SAFETY: p is a fresh, writable, suitably aligned mapping of the right size.
    unsafe {
        ptr::write(
            p,
            Shared {
                cells: [[EMPTY; MAX_CELLS]; PHASES],
                used: [0; PHASES],
                phase: MAIN,
                pages_touched: 0,
                file_pages_touched: 0,
                untracked: false,
                error_len: 0,
                error: [0; 2048],
            },
        );
        &mut *p
    }
}

fn die(msg: &str) -> ! {
    eprintln!("zc-child: {msg}");
    exit(1)
}

fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mul) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .map(|n| n * mul)
        .map_err(|_| format!("bad number {s:?}"))
}

fn arg(rest: &[String], i: usize, what: &str) -> Result<usize, String> {
    rest.get(i)
        .ok_or_else(|| format!("missing argument {what}"))
        .and_then(|s| parse_size(s))
}

/// `N [CHUNK]` (CHUNK defaults to 4096).
fn n_chunk(rest: &[String]) -> Result<(usize, usize), String> {
    let n = arg(rest, 0, "N")?;
    let chunk = if rest.len() > 1 {
        arg(rest, 1, "CHUNK")?
    } else {
        4096
    };
    if chunk == 0 {
        return Err("CHUNK must be > 0".into());
    }
    Ok((n, chunk))
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

fn open(p: &Path, flags: i32) -> Result<i32, String> {
    let c = cpath(p);
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(format!("open {}: {}", p.display(), errstr(errno())));
    }
    Ok(fd)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn make_file(dir: &Path, name: &str, n: usize) -> Result<PathBuf, String> {
    let p = dir.join(name);
    std::fs::write(&p, pattern(n)).map_err(|e| format!("write {}: {e}", p.display()))?;
    Ok(p)
}

fn pipe() -> Result<(i32, i32), String> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe2: {}", errstr(errno())));
    }
    Ok((fds[0], fds[1]))
}

fn socketpair(ty: i32) -> Result<(i32, i32), String> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } < 0
    {
        return Err(format!("socketpair: {}", errstr(errno())));
    }
    Ok((fds[0], fds[1]))
}

/// Connected TCP loopback pair: (client, accepted server side).
fn tcp_pair() -> Result<(i32, i32), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    Ok((c.into_raw_fd(), s.into_raw_fd()))
}

fn setsockopt_int(fd: i32, level: i32, opt: i32, val: i32) -> Result<(), String> {
    // SAFETY: pointer and length describe an i32.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r < 0 {
        return Err(format!("setsockopt({level},{opt}): {}", errstr(errno())));
    }
    Ok(())
}

fn big_buffers(fd: i32) {
    // Best effort: roomy socket buffers so that a same-thread send never blocks.
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20)
        .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20));
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20)
        .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20));
}

fn sockaddr_in(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    }
}

/// Runs `f(offset, len)` over `n` bytes in chunks of at most `chunk`; `f` returns how many
/// bytes it moved.
fn chunks(
    n: usize,
    chunk: usize,
    mut f: impl FnMut(usize, usize) -> Result<usize, String>,
) -> Result<(), String> {
    let mut done = 0;
    while done < n {
        let len = chunk.min(n - done);
        let got = f(done, len)?;
        if got == 0 {
            return Err(format!("unexpected 0-byte transfer at offset {done}"));
        }
        done += got;
    }
    Ok(())
}

fn rd(t: &mut Shared, fd: i32, buf: &mut [u8], len: usize) -> Result<usize, String> {
    // SAFETY: len <= buf.len().
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len.min(buf.len())) };
    t.xfer("read", r)
}

fn wr(t: &mut Shared, fd: i32, buf: &[u8], len: usize) -> Result<usize, String> {
    // SAFETY: len <= buf.len().
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), len.min(buf.len())) };
    let got = t.xfer("write", r)?;
    if got != len {
        return Err(format!("short write: {got} of {len}"));
    }
    Ok(got)
}

/// Reads exactly `want` bytes with read().
fn drain_read(t: &mut Shared, fd: i32, buf: &mut [u8], mut want: usize) -> Result<(), String> {
    while want > 0 {
        let got = rd(t, fd, buf, want)?;
        if got == 0 {
            return Err("unexpected EOF while draining".into());
        }
        want -= got;
    }
    Ok(())
}

/// Receives exactly `want` bytes with recv() (the recvfrom syscall).
fn drain_recv(t: &mut Shared, fd: i32, buf: &mut [u8], mut want: usize) -> Result<(), String> {
    while want > 0 {
        let len = want.min(buf.len());
        // SAFETY: len <= buf.len().
        let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), len, 0) };
        let got = t.xfer("recvfrom", r)?;
        if got == 0 {
            return Err("unexpected EOF while draining socket".into());
        }
        want -= got;
    }
    Ok(())
}

fn two_iov(buf: &mut [u8], len: usize) -> [libc::iovec; 2] {
    let a = len / 2;
    let p = buf.as_mut_ptr();
    [
        libc::iovec {
            iov_base: p.cast(),
            iov_len: a,
        },
        libc::iovec {
            // SAFETY: a <= len <= buf.len().
            iov_base: unsafe { p.add(a) }.cast(),
            iov_len: len - a,
        },
    ]
}

fn page_round(n: usize) -> u64 {
    n.div_ceil(PAGE) as u64 * PAGE as u64
}

fn check_pipe_chunk(chunk: usize) -> Result<(), String> {
    if chunk > 65536 {
        return Err("CHUNK must be <= 65536 (pipe capacity)".into());
    }
    Ok(())
}

/// O_DIRECT transfers: CHUNK a multiple of the page size that divides N.
fn direct_sizes(action: &str, n: usize, chunk: usize) -> Result<(), String> {
    if !chunk.is_multiple_of(PAGE) || !n.is_multiple_of(chunk) {
        return Err(format!(
            "{action}: CHUNK must be a multiple of 4096 and divide N"
        ));
    }
    Ok(())
}

/// Opens `p` with O_DIRECT added to `flags`, saying why when the filesystem refuses it.
fn open_direct(p: &Path, flags: i32) -> Result<i32, String> {
    let c = cpath(p);
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_DIRECT | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        let e = errno();
        let why = if e == libc::EINVAL {
            " (the filesystem does not support O_DIRECT; tmpfs does not)"
        } else {
            ""
        };
        return Err(format!(
            "O_DIRECT open of {} failed: {}{why}",
            p.display(),
            errstr(e)
        ));
    }
    Ok(fd)
}

/// A page-aligned buffer of `len` bytes (as O_DIRECT needs) holding the test pattern; it
/// lives as long as the process.
fn aligned_buf(len: usize) -> Result<&'static mut [u8], String> {
    // SAFETY: plain anonymous mapping, checked.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap: {}", errstr(errno())));
    }
    // SAFETY: the mapping is len bytes long, never unmapped, and only reachable through this
    // slice.
    let buf = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) };
    buf.copy_from_slice(&pattern(len));
    Ok(buf)
}

/// A 4-entry io_uring, made in the worker. Its setup (io_uring_setup, the ring's mmaps) is
/// done inside the io-uring crate, so the worker's syscalls are no longer all tallied.
fn new_ring(t: &mut Shared) -> Result<io_uring::IoUring, String> {
    t.untracked = true;
    io_uring::IoUring::new(4).map_err(|e| format!("io_uring_setup: {e}"))
}

/// Submits one io_uring operation and waits for its completion, tallying the io_uring_enter
/// syscall and the operation as `name` (`io_uring:OP`) with its result.
///
/// # Safety
///
/// The memory `e` refers to must be valid until this returns (it waits for the completion).
unsafe fn uring_op(
    t: &mut Shared,
    ring: &mut io_uring::IoUring,
    e: &io_uring::squeue::Entry,
    name: &'static str,
) -> Result<usize, String> {
    // SAFETY: the caller keeps e's buffers alive until the operation completes, below.
    unsafe { ring.submission().push(e) }.map_err(|_| "SQ full".to_string())?;
    let r = ring.submit_and_wait(1);
    t.call("io_uring_enter", if r.is_ok() { 0 } else { -1 })?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| "no completion".to_string())?;
    let res = cqe.result();
    let c = t.cell(name)?;
    c.calls += 1;
    if res < 0 {
        c.errors += 1;
        return Err(format!("{name}: {}", errstr(-res)));
    }
    c.bytes += res as u64;
    Ok(res as usize)
}

fn job(f: impl FnOnce(&mut Shared) -> Result<(), String> + 'static) -> Result<Job, String> {
    Ok(Box::new(f))
}

/// Prepares `action` in the supervisor and returns what the worker will run.
fn setup(action: &str, rest: &[String], dir: &Path) -> Result<Job, String> {
    match action {
        "noop" => job(|_| Ok(())),
        "read-file" | "pread" | "readv" | "preadv" | "preadv2" => {
            let (n, chunk) = n_chunk(rest)?;
            let fd = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
            let mut buf = vec![0u8; chunk];
            let action = action.to_string();
            job(move |t| {
                chunks(n, chunk, |off, len| {
                    let off64 = off as i64;
                    // SAFETY: buffers and iovecs cover len bytes of buf.
                    unsafe {
                        match action.as_str() {
                            "read-file" => rd(t, fd, &mut buf, len),
                            "pread" => t.xfer(
                                "pread64",
                                libc::pread(fd, buf.as_mut_ptr().cast(), len, off64),
                            ),
                            "readv" => {
                                let iov = two_iov(&mut buf, len);
                                t.xfer("readv", libc::readv(fd, iov.as_ptr(), 2))
                            }
                            "preadv" => {
                                let iov = two_iov(&mut buf, len);
                                t.xfer("preadv", libc::preadv(fd, iov.as_ptr(), 2, off64))
                            }
                            _ => {
                                let iov = two_iov(&mut buf, len);
                                let r = libc::syscall(
                                    libc::SYS_preadv2,
                                    fd,
                                    iov.as_ptr(),
                                    2,
                                    off64,
                                    0,
                                    0,
                                );
                                t.xfer("preadv2", r as isize)
                            }
                        }
                    }
                })
            })
        }
        "write-file" | "pwrite" | "writev" | "pwritev" | "pwritev2" => {
            let (n, chunk) = n_chunk(rest)?;
            let fd = open(
                &dir.join("out"),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            )?;
            let mut buf = pattern(chunk);
            let action = action.to_string();
            job(move |t| {
                chunks(n, chunk, |off, len| {
                    let off64 = off as i64;
                    // SAFETY: buffers and iovecs cover len bytes of buf.
                    unsafe {
                        match action.as_str() {
                            "write-file" => {
                                t.xfer("write", libc::write(fd, buf.as_ptr().cast(), len))
                            }
                            "pwrite" => t.xfer(
                                "pwrite64",
                                libc::pwrite(fd, buf.as_ptr().cast(), len, off64),
                            ),
                            "writev" => {
                                let iov = two_iov(&mut buf, len);
                                t.xfer("writev", libc::writev(fd, iov.as_ptr(), 2))
                            }
                            "pwritev" => {
                                let iov = two_iov(&mut buf, len);
                                t.xfer("pwritev", libc::pwritev(fd, iov.as_ptr(), 2, off64))
                            }
                            _ => {
                                let iov = two_iov(&mut buf, len);
                                let r = libc::syscall(
                                    libc::SYS_pwritev2,
                                    fd,
                                    iov.as_ptr(),
                                    2,
                                    off64,
                                    0,
                                    0,
                                );
                                t.xfer("pwritev2", r as isize)
                            }
                        }
                    }
                })
            })
        }
        "pipe-read" | "pipe-write" => {
            // write() into a pipe, read() it back in the same thread.
            let (n, chunk) = n_chunk(rest)?;
            check_pipe_chunk(chunk)?;
            let (r, w) = pipe()?;
            let wbuf = pattern(chunk);
            let mut rbuf = vec![0u8; chunk];
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    wr(t, w, &wbuf, len)?;
                    drain_read(t, r, &mut rbuf, len)?;
                    Ok(len)
                })
            })
        }
        "socket-send" | "socket-recv" => {
            // write() into an AF_UNIX stream socket, read() it from the peer.
            let (n, chunk) = n_chunk(rest)?;
            check_pipe_chunk(chunk)?;
            let (a, b) = socketpair(libc::SOCK_STREAM)?;
            big_buffers(a);
            big_buffers(b);
            let wbuf = pattern(chunk);
            let mut rbuf = vec![0u8; chunk];
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    wr(t, a, &wbuf, len)?;
                    drain_read(t, b, &mut rbuf, len)?;
                    Ok(len)
                })
            })
        }
        "sendto" | "recvfrom" | "sendmsg" | "recvmsg" => {
            // UDP over loopback, one datagram per call.
            let (n, chunk) = n_chunk(rest)?;
            if chunk > 65000 {
                return Err("CHUNK must be <= 65000 (UDP)".into());
            }
            let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let r = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            let port = r.local_addr().map_err(|e| e.to_string())?.port();
            let (s, r) = (s.into_raw_fd(), r.into_raw_fd());
            big_buffers(s);
            big_buffers(r);
            let mut addr = sockaddr_in(port);
            let mut wbuf = pattern(chunk);
            let mut rbuf = vec![0u8; chunk];
            let msg = action.starts_with("sendmsg") || action.starts_with("recvmsg");
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    let alen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                    // SAFETY: buffers, iovecs and the address outlive the calls.
                    unsafe {
                        if msg {
                            let mut iov = two_iov(&mut wbuf, len);
                            let mut h: libc::msghdr = std::mem::zeroed();
                            h.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
                            h.msg_namelen = alen;
                            h.msg_iov = iov.as_mut_ptr();
                            h.msg_iovlen = 2;
                            let sent = t.xfer("sendmsg", libc::sendmsg(s, &h, 0))?;
                            let mut riov = [libc::iovec {
                                iov_base: rbuf.as_mut_ptr().cast(),
                                iov_len: rbuf.len(),
                            }];
                            let mut rh: libc::msghdr = std::mem::zeroed();
                            rh.msg_iov = riov.as_mut_ptr();
                            rh.msg_iovlen = 1;
                            let got = t.xfer("recvmsg", libc::recvmsg(r, &mut rh, 0))?;
                            if got != sent || sent != len {
                                return Err(format!("datagram {len}: sent {sent}, got {got}"));
                            }
                        } else {
                            let sent = t.xfer(
                                "sendto",
                                libc::sendto(
                                    s,
                                    wbuf.as_ptr().cast(),
                                    len,
                                    0,
                                    (&addr as *const libc::sockaddr_in).cast(),
                                    alen,
                                ),
                            )?;
                            let got = t.xfer(
                                "recvfrom",
                                libc::recvfrom(
                                    r,
                                    rbuf.as_mut_ptr().cast(),
                                    rbuf.len(),
                                    0,
                                    ptr::null_mut(),
                                    ptr::null_mut(),
                                ),
                            )?;
                            if got != sent || sent != len {
                                return Err(format!("datagram {len}: sent {sent}, got {got}"));
                            }
                        }
                    }
                    Ok(len)
                })
            })
        }
        "sendmmsg" | "recvmmsg" => {
            // AF_UNIX datagram socketpair, BATCH (default 4, max 8) datagrams per call.
            let (n, chunk) = n_chunk(rest)?;
            let batch = if rest.len() > 2 {
                arg(rest, 2, "BATCH")?
            } else {
                4
            };
            if !(1..=8).contains(&batch) || chunk > 65536 {
                return Err("BATCH must be 1..=8 and CHUNK <= 65536".into());
            }
            let (a, b) = socketpair(libc::SOCK_DGRAM)?;
            big_buffers(a);
            big_buffers(b);
            let mut wbuf = pattern(chunk * batch);
            let mut rbuf = vec![0u8; chunk * batch];
            job(move |t| {
                let mut done = 0;
                while done < n {
                    // SAFETY: all-zero mmsghdr/iovec are valid; pointers set below stay valid.
                    let mut iov: [libc::iovec; 8] = unsafe { std::mem::zeroed() };
                    let mut msgs: [libc::mmsghdr; 8] = unsafe { std::mem::zeroed() };
                    let mut k = 0;
                    let mut planned = 0;
                    while k < batch && done + planned < n {
                        let len = chunk.min(n - done - planned);
                        // SAFETY: k * chunk + len <= wbuf.len().
                        iov[k].iov_base = unsafe { wbuf.as_mut_ptr().add(k * chunk) }.cast();
                        iov[k].iov_len = len;
                        msgs[k].msg_hdr.msg_iov = &mut iov[k];
                        msgs[k].msg_hdr.msg_iovlen = 1;
                        planned += len;
                        k += 1;
                    }
                    // SAFETY: msgs[..k] are valid.
                    let r = unsafe { libc::sendmmsg(a, msgs.as_mut_ptr(), k as u32, 0) };
                    let sent_msgs = if r > 0 { r as usize } else { 0 };
                    let sent: u64 = msgs[..sent_msgs].iter().map(|m| m.msg_len as u64).sum();
                    t.xfer_n("sendmmsg", r as i64, sent)?;
                    if sent_msgs == 0 {
                        return Err("sendmmsg sent nothing".into());
                    }
                    // Receive them back, as many per call as are queued.
                    let mut got_msgs = 0;
                    let mut got_bytes = 0u64;
                    while got_msgs < sent_msgs {
                        // SAFETY: as above.
                        let mut riov: [libc::iovec; 8] = unsafe { std::mem::zeroed() };
                        let mut rmsgs: [libc::mmsghdr; 8] = unsafe { std::mem::zeroed() };
                        let want = sent_msgs - got_msgs;
                        for i in 0..want {
                            // SAFETY: i * chunk + chunk <= rbuf.len().
                            riov[i].iov_base = unsafe { rbuf.as_mut_ptr().add(i * chunk) }.cast();
                            riov[i].iov_len = chunk;
                            rmsgs[i].msg_hdr.msg_iov = &mut riov[i];
                            rmsgs[i].msg_hdr.msg_iovlen = 1;
                        }
                        // SAFETY: rmsgs[..want] are valid.
                        let r = unsafe {
                            libc::recvmmsg(
                                b,
                                rmsgs.as_mut_ptr(),
                                want as u32,
                                libc::MSG_WAITFORONE,
                                ptr::null_mut(),
                            )
                        };
                        let m = if r > 0 { r as usize } else { 0 };
                        let bytes: u64 = rmsgs[..m].iter().map(|x| x.msg_len as u64).sum();
                        t.xfer_n("recvmmsg", r as i64, bytes)?;
                        got_msgs += m;
                        got_bytes += bytes;
                    }
                    if got_bytes != sent {
                        return Err(format!("recvmmsg got {got_bytes} of {sent} bytes"));
                    }
                    done += sent as usize;
                }
                Ok(())
            })
        }
        "sendfile-socket" | "sendfile-file" => {
            let (n, chunk) = n_chunk(rest)?;
            let inf = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
            let to_socket = action == "sendfile-socket";
            let (out, peer) = if to_socket {
                let (c, s) = tcp_pair()?;
                big_buffers(c);
                big_buffers(s);
                (c, s)
            } else {
                (
                    open(
                        &dir.join("out"),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    )?,
                    -1,
                )
            };
            let mut rbuf = vec![0u8; chunk.max(1)];
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    // SAFETY: plain descriptors, NULL offset (use the file position).
                    let r = unsafe { libc::sendfile(out, inf, ptr::null_mut(), len) };
                    let got = t.xfer("sendfile", r)?;
                    if to_socket {
                        drain_recv(t, peer, &mut rbuf, got)?;
                    }
                    Ok(got)
                })
            })
        }
        "splice-file-pipe" | "splice-pipe-file" | "splice-socket-pipe" | "splice-pipe-socket" => {
            let (n, chunk) = n_chunk(rest)?;
            check_pipe_chunk(chunk)?;
            let (pr, pw) = pipe()?;
            let wbuf = pattern(chunk);
            let mut rbuf = vec![0u8; chunk];
            let splice = |t: &mut Shared, fin: i32, offin: *mut i64, fout: i32, len: usize| {
                // SAFETY: offsets are NULL or point at a live i64.
                let r = unsafe { libc::splice(fin, offin, fout, ptr::null_mut(), len, 0) };
                t.xfer("splice", r)
            };
            match action {
                "splice-file-pipe" => {
                    let f = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
                    let mut off: i64 = 0;
                    job(move |t| {
                        chunks(n, chunk, |_, len| {
                            let got = splice(t, f, &mut off, pw, len)?;
                            drain_read(t, pr, &mut rbuf, got)?;
                            Ok(got)
                        })
                    })
                }
                "splice-pipe-file" => {
                    let f = open(
                        &dir.join("out"),
                        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    )?;
                    job(move |t| {
                        chunks(n, chunk, |_, len| {
                            wr(t, pw, &wbuf, len)?;
                            let mut moved = 0;
                            while moved < len {
                                let got = splice(t, pr, ptr::null_mut(), f, len - moved)?;
                                if got == 0 {
                                    return Err("splice moved 0 bytes".into());
                                }
                                moved += got;
                            }
                            Ok(len)
                        })
                    })
                }
                "splice-socket-pipe" => {
                    let (a, b) = socketpair(libc::SOCK_STREAM)?;
                    big_buffers(a);
                    big_buffers(b);
                    job(move |t| {
                        chunks(n, chunk, |_, len| {
                            wr(t, a, &wbuf, len)?;
                            let mut moved = 0;
                            while moved < len {
                                let got = splice(t, b, ptr::null_mut(), pw, len - moved)?;
                                if got == 0 {
                                    return Err("splice moved 0 bytes".into());
                                }
                                drain_read(t, pr, &mut rbuf, got)?;
                                moved += got;
                            }
                            Ok(len)
                        })
                    })
                }
                _ => {
                    let (a, b) = socketpair(libc::SOCK_STREAM)?;
                    big_buffers(a);
                    big_buffers(b);
                    job(move |t| {
                        chunks(n, chunk, |_, len| {
                            wr(t, pw, &wbuf, len)?;
                            let mut moved = 0;
                            while moved < len {
                                let got = splice(t, pr, ptr::null_mut(), a, len - moved)?;
                                if got == 0 {
                                    return Err("splice moved 0 bytes".into());
                                }
                                drain_read(t, b, &mut rbuf, got)?;
                                moved += got;
                            }
                            Ok(len)
                        })
                    })
                }
            }
        }
        "tee" => {
            // write() into pipe 1, tee() pipe 1 -> pipe 2, read() both back.
            let (n, chunk) = n_chunk(rest)?;
            check_pipe_chunk(chunk)?;
            let (r1, w1) = pipe()?;
            let (r2, w2) = pipe()?;
            let wbuf = pattern(chunk);
            let mut rbuf = vec![0u8; chunk];
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    wr(t, w1, &wbuf, len)?;
                    // SAFETY: plain descriptors.
                    let got = t.xfer("tee", unsafe { libc::tee(r1, w2, len, 0) })?;
                    if got != len {
                        return Err(format!("tee duplicated {got} of {len}"));
                    }
                    drain_read(t, r2, &mut rbuf, len)?;
                    drain_read(t, r1, &mut rbuf, len)?;
                    Ok(len)
                })
            })
        }
        "vmsplice" => {
            let (n, chunk) = n_chunk(rest)?;
            check_pipe_chunk(chunk)?;
            let (r, w) = pipe()?;
            let wbuf = pattern(chunk);
            let mut rbuf = vec![0u8; chunk];
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    let iov = libc::iovec {
                        iov_base: wbuf.as_ptr() as *mut libc::c_void,
                        iov_len: len,
                    };
                    // SAFETY: iov describes len bytes of wbuf.
                    let got = t.xfer("vmsplice", unsafe { libc::vmsplice(w, &iov, 1, 0) })?;
                    drain_read(t, r, &mut rbuf, got)?;
                    Ok(got)
                })
            })
        }
        "vmsplice-read" => {
            // write() into a pipe, then vmsplice() on its READ end: the kernel copies the
            // pipe's contents into the iovec's user memory.
            let (n, chunk) = n_chunk(rest)?;
            check_pipe_chunk(chunk)?;
            let (r, w) = pipe()?;
            let wbuf = pattern(chunk);
            let mut rbuf = vec![0u8; chunk];
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    wr(t, w, &wbuf, len)?;
                    let mut moved = 0;
                    while moved < len {
                        let iov = libc::iovec {
                            // SAFETY: moved < len <= rbuf.len().
                            iov_base: unsafe { rbuf.as_mut_ptr().add(moved) }.cast(),
                            iov_len: len - moved,
                        };
                        // SAFETY: iov describes len - moved writable bytes of rbuf.
                        let got = t.xfer("vmsplice", unsafe { libc::vmsplice(r, &iov, 1, 0) })?;
                        if got == 0 {
                            return Err("vmsplice moved 0 bytes".into());
                        }
                        moved += got;
                    }
                    if rbuf[..len] != wbuf[..len] {
                        return Err("vmsplice read back other bytes than were written".into());
                    }
                    Ok(len)
                })
            })
        }
        "sendfile-pipe" => {
            // sendfile() from a file into a pipe's write end, drained with read().
            let (n, chunk) = n_chunk(rest)?;
            check_pipe_chunk(chunk)?;
            let inf = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
            let (r, w) = pipe()?;
            let mut rbuf = vec![0u8; chunk];
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    // SAFETY: plain descriptors, NULL offset (use the file position).
                    let got = t.xfer("sendfile", unsafe {
                        libc::sendfile(w, inf, ptr::null_mut(), len)
                    })?;
                    drain_read(t, r, &mut rbuf, got)?;
                    Ok(got)
                })
            })
        }
        "sendfile-dev" | "sendfile-odirect" => {
            // sendfile() from a file into /dev/null (a character device), or into an O_DIRECT
            // file (CHUNK a multiple of 4096 dividing N).
            let (n, chunk) = n_chunk(rest)?;
            let inf = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
            let out = if action == "sendfile-dev" {
                open(Path::new("/dev/null"), libc::O_WRONLY)?
            } else {
                direct_sizes(action, n, chunk)?;
                open_direct(
                    &dir.join("out"),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                )?
            };
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    // SAFETY: plain descriptors, NULL offset (use the file position).
                    let r = unsafe { libc::sendfile(out, inf, ptr::null_mut(), len) };
                    t.xfer("sendfile", r)
                })
            })
        }
        "splice-dev-pipe" => {
            // splice() from /dev/zero (a character device) into a pipe, drained with read().
            let (n, chunk) = n_chunk(rest)?;
            check_pipe_chunk(chunk)?;
            let zero = open(Path::new("/dev/zero"), libc::O_RDONLY)?;
            let (r, w) = pipe()?;
            let mut rbuf = vec![0u8; chunk];
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    // SAFETY: plain descriptors, no offsets.
                    let got = t.xfer("splice", unsafe {
                        libc::splice(zero, ptr::null_mut(), w, ptr::null_mut(), len, 0)
                    })?;
                    drain_read(t, r, &mut rbuf, got)?;
                    Ok(got)
                })
            })
        }
        "splice-pipe-pipe" => {
            // write() into pipe A, splice() A's read end -> B's write end, read() B.
            let (n, chunk) = n_chunk(rest)?;
            check_pipe_chunk(chunk)?;
            let (ar, aw) = pipe()?;
            let (br, bw) = pipe()?;
            let wbuf = pattern(chunk);
            let mut rbuf = vec![0u8; chunk];
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    wr(t, aw, &wbuf, len)?;
                    let mut moved = 0;
                    while moved < len {
                        // SAFETY: plain descriptors, no offsets (pipes).
                        let r = unsafe {
                            libc::splice(ar, ptr::null_mut(), bw, ptr::null_mut(), len - moved, 0)
                        };
                        let got = t.xfer("splice", r)?;
                        if got == 0 {
                            return Err("splice moved 0 bytes".into());
                        }
                        drain_read(t, br, &mut rbuf, got)?;
                        moved += got;
                    }
                    Ok(len)
                })
            })
        }
        "copy-file-range" => {
            let (n, chunk) = n_chunk(rest)?;
            let inf = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
            let out = open(
                &dir.join("out"),
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            )?;
            let mut off_in: i64 = 0;
            let mut off_out: i64 = 0;
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    // SAFETY: offsets point at live i64s.
                    let r = unsafe {
                        libc::syscall(
                            libc::SYS_copy_file_range,
                            inf,
                            &mut off_in as *mut i64,
                            out,
                            &mut off_out as *mut i64,
                            len,
                            0,
                        )
                    };
                    t.xfer("copy_file_range", r as isize)
                })
            })
        }
        "mmap-file" => {
            // Map a file, read one byte of every page in order, unmap.
            let n = arg(rest, 0, "N")?;
            let fd = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
            job(move |t| {
                // SAFETY: fresh private read-only mapping of the file, accessed within n bytes.
                unsafe {
                    let p = libc::mmap(
                        ptr::null_mut(),
                        n,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE,
                        fd,
                        0,
                    );
                    let failed = p == libc::MAP_FAILED;
                    t.xfer_n("mmap_file", if failed { -1 } else { 0 }, page_round(n))?;
                    let mut sum = 0u64;
                    let mut pages = 0;
                    for off in (0..n).step_by(PAGE) {
                        sum += ptr::read_volatile(p.cast::<u8>().add(off)) as u64;
                        pages += 1;
                    }
                    std::hint::black_box(sum);
                    t.file_pages_touched += pages;
                    let r = libc::munmap(p, n);
                    t.xfer_n("munmap", r as i64, page_round(n))?;
                }
                Ok(())
            })
        }
        "mmap-anon" | "faults" => {
            // Map anonymous memory, write one byte of every page, unmap.
            let n = if action == "faults" {
                arg(rest, 0, "PAGES")? * PAGE
            } else {
                arg(rest, 0, "N")?
            };
            job(move |t| {
                // SAFETY: fresh private anonymous mapping, accessed within n bytes.
                unsafe {
                    let p = libc::mmap(
                        ptr::null_mut(),
                        n,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    );
                    let failed = p == libc::MAP_FAILED;
                    t.xfer_n("mmap_anon", if failed { -1 } else { 0 }, page_round(n))?;
                    let mut pages = 0;
                    for off in (0..n).step_by(PAGE) {
                        ptr::write_volatile(p.cast::<u8>().add(off), 1);
                        pages += 1;
                    }
                    t.pages_touched += pages;
                    let r = libc::munmap(p, n);
                    t.xfer_n("munmap", r as i64, page_round(n))?;
                }
                Ok(())
            })
        }
        "msg-zerocopy" => {
            // send(MSG_ZEROCOPY) on a TCP loopback socket with SO_ZEROCOPY, drain the peer
            // with recv(), then read the completion notifications until EAGAIN.
            let (n, chunk) = n_chunk(rest)?;
            let (c, s) = tcp_pair()?;
            big_buffers(c);
            big_buffers(s);
            setsockopt_int(c, libc::SOL_SOCKET, libc::SO_ZEROCOPY, 1)?;
            let wbuf = pattern(chunk);
            let mut rbuf = vec![0u8; chunk];
            let mut control = vec![0u8; 256];
            job(move |t| {
                chunks(n, chunk, |_, len| {
                    // SAFETY: len <= wbuf.len().
                    let r = unsafe { libc::send(c, wbuf.as_ptr().cast(), len, libc::MSG_ZEROCOPY) };
                    let got = t.xfer("sendto", r)?;
                    t.cell("sendto")?.zerocopy += 1;
                    drain_recv(t, s, &mut rbuf, got)?;
                    loop {
                        // SAFETY: an all-zero msghdr is valid.
                        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                        h.msg_control = control.as_mut_ptr().cast();
                        h.msg_controllen = control.len();
                        // SAFETY: the control buffer outlives the call.
                        let r = unsafe {
                            libc::recvmsg(c, &mut h, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT)
                        };
                        match t.xfer("recvmsg", r) {
                            Ok(_) => {}
                            Err(_) if errno() == libc::EAGAIN => break,
                            Err(e) => return Err(e),
                        }
                        // The completion: sends ee_info..=ee_data, copied or not.
                        // SAFETY: the kernel filled h and its control buffer.
                        let cm = unsafe { libc::CMSG_FIRSTHDR(&h) };
                        if cm.is_null() {
                            return Err("zerocopy completion without a control message".into());
                        }
                        // SAFETY: cm points into `control`; CMSG_DATA is its payload.
                        let ee = unsafe {
                            std::ptr::read_unaligned(
                                libc::CMSG_DATA(cm) as *const libc::sock_extended_err
                            )
                        };
                        if ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY {
                            return Err(format!("unexpected error-queue origin {}", ee.ee_origin));
                        }
                        let sends = ee.ee_data.wrapping_sub(ee.ee_info) as u64 + 1;
                        t.cell("zerocopy-completed")?.calls += sends;
                        if ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                            t.cell("zerocopy-copied")?.calls += sends;
                        }
                    }
                    Ok(got)
                })
            })
        }
        "fd-reuse" => {
            // One descriptor number that changes what it refers to, twice: the ledger must
            // follow (the kernel side caches descriptors per thread).
            let n: usize = rest
                .first()
                .ok_or("fd-reuse N")?
                .parse()
                .map_err(|e| format!("N: {e}"))?;
            if !n.is_multiple_of(PAGE) {
                return Err("fd-reuse: N must be a multiple of 4096".into());
            }
            let direct = cpath(&make_file(dir, "direct", n)?);
            let buffered = cpath(&make_file(dir, "buffered", 2 * n)?);
            // SAFETY: valid C strings.
            let a = unsafe { libc::open(direct.as_ptr(), libc::O_RDONLY | libc::O_DIRECT) };
            // SAFETY: as above.
            let b = unsafe { libc::open(buffered.as_ptr(), libc::O_RDONLY) };
            if a < 0 || b < 0 {
                return Err(format!("open: {}", errstr(errno())));
            }
            // SAFETY: plain anonymous mapping (page-aligned, as O_DIRECT needs), checked.
            let buf = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    n,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if buf == libc::MAP_FAILED {
                return Err(format!("mmap: {}", errstr(errno())));
            }
            // SAFETY: the mapping is n bytes long.
            let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), n) };
            buf.fill(1);
            job(move |t| {
                let read_all = |t: &mut Shared, name: &'static str, buf: &mut [u8]| {
                    // SAFETY: n == buf.len().
                    let r = unsafe { libc::read(a, buf.as_mut_ptr().cast(), n) };
                    match t.xfer(name, r)? {
                        got if got == n => Ok(()),
                        got => Err(format!("{name}: short read {got} of {n}")),
                    }
                };
                read_all(t, "read-direct", buf)?;
                // `a` now names the buffered file.
                // SAFETY: both are open descriptors.
                if unsafe { libc::dup2(b, a) } < 0 {
                    return Err(format!("dup2: {}", errstr(errno())));
                }
                read_all(t, "read-buffered", buf)?;
                // And now it bypasses the page cache.
                // SAFETY: `a` is open; F_SETFL takes an int.
                if unsafe { libc::fcntl(a, libc::F_SETFL, libc::O_DIRECT) } < 0 {
                    return Err(format!("fcntl(O_DIRECT): {}", errstr(errno())));
                }
                read_all(t, "read-direct", buf)
            })
        }
        "odirect-read" | "odirect-write" | "odirect-pwrite" => {
            // read/write/pwrite64 on an O_DIRECT file, from a page-aligned buffer.
            let (n, chunk) = n_chunk(rest)?;
            direct_sizes(action, n, chunk)?;
            let fd = if action == "odirect-read" {
                open_direct(&make_file(dir, "in", n)?, libc::O_RDONLY)?
            } else {
                open_direct(
                    &dir.join("out"),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                )?
            };
            let buf = aligned_buf(chunk)?;
            let action = action.to_string();
            job(move |t| {
                chunks(n, chunk, |off, len| match action.as_str() {
                    "odirect-read" => rd(t, fd, buf, len),
                    "odirect-write" => wr(t, fd, buf, len),
                    _ => {
                        // SAFETY: len <= buf.len().
                        let r = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), len, off as i64) };
                        t.xfer("pwrite64", r)
                    }
                })
            })
        }
        "io-uring" => {
            // IORING_OP_READ of a file, one operation in flight at a time. The ring's own
            // setup (io_uring_setup, its mmaps) happens inside the io-uring crate: untracked.
            let (n, chunk) = n_chunk(rest)?;
            let fd = open(&make_file(dir, "in", n)?, libc::O_RDONLY)?;
            let mut buf = vec![0u8; chunk];
            job(move |t| {
                let mut ring = new_ring(t)?;
                chunks(n, chunk, |off, len| {
                    let e = io_uring::opcode::Read::new(
                        io_uring::types::Fd(fd),
                        buf.as_mut_ptr(),
                        len as u32,
                    )
                    .offset(off as u64)
                    .build()
                    .user_data(7);
                    // SAFETY: buf outlives the call, which waits for the operation.
                    unsafe { uring_op(t, &mut ring, &e, "io_uring:read") }
                })
            })
        }
        "io-uring-write" | "io-uring-write-direct" => {
            // IORING_OP_WRITE to a regular file (buffered, or O_DIRECT from a page-aligned
            // buffer), one operation in flight at a time. Ring setup is untracked, as above.
            let (n, chunk) = n_chunk(rest)?;
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
            let (fd, buf): (i32, &'static mut [u8]) = if action == "io-uring-write-direct" {
                direct_sizes(action, n, chunk)?;
                (open_direct(&dir.join("out"), flags)?, aligned_buf(chunk)?)
            } else {
                (
                    open(&dir.join("out"), flags)?,
                    Vec::leak(pattern(chunk)) as &mut [u8],
                )
            };
            job(move |t| {
                let mut ring = new_ring(t)?;
                chunks(n, chunk, |off, len| {
                    let e = io_uring::opcode::Write::new(
                        io_uring::types::Fd(fd),
                        buf.as_ptr(),
                        len as u32,
                    )
                    .offset(off as u64)
                    .build()
                    .user_data(8);
                    // SAFETY: buf outlives the call, which waits for the operation.
                    unsafe { uring_op(t, &mut ring, &e, "io_uring:write") }
                })
            })
        }
        "io-uring-send" => {
            // IORING_OP_SEND on a TCP loopback socket, the peer drained with recv() after
            // each operation. Ring setup is untracked, as above.
            let (n, chunk) = n_chunk(rest)?;
            let (c, s) = tcp_pair()?;
            big_buffers(c);
            big_buffers(s);
            let wbuf = pattern(chunk);
            let mut rbuf = vec![0u8; chunk];
            job(move |t| {
                let mut ring = new_ring(t)?;
                chunks(n, chunk, |_, len| {
                    let e = io_uring::opcode::Send::new(
                        io_uring::types::Fd(c),
                        wbuf.as_ptr(),
                        len as u32,
                    )
                    .build()
                    .user_data(9);
                    // SAFETY: wbuf outlives the call, which waits for the operation.
                    let got = unsafe { uring_op(t, &mut ring, &e, "io_uring:send") }?;
                    drain_recv(t, s, &mut rbuf, got)?;
                    Ok(got)
                })
            })
        }
        "spin" => {
            let ms = arg(rest, 0, "MS")?;
            job(move |_| {
                // Instant::now() uses the vDSO: no syscalls.
                let start = Instant::now();
                let mut x = 0u64;
                while start.elapsed() < Duration::from_millis(ms as u64) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
                Ok(())
            })
        }
        "sleep-switch" => {
            let n = arg(rest, 0, "N")?;
            job(move |t| {
                for _ in 0..n {
                    sleep_1ms(t, 1_000_000)?;
                }
                Ok(())
            })
        }
        "getpid" => {
            let n = arg(rest, 0, "N")?;
            job(move |t| {
                for _ in 0..n {
                    // SAFETY: getpid has no arguments.
                    t.call("getpid", unsafe { libc::syscall(libc::SYS_getpid) })?;
                }
                Ok(())
            })
        }
        "threads" => {
            // T threads doing N getpid each. Thread creation and exit are done by std:
            // untracked syscalls.
            let nthreads = arg(rest, 0, "T")?;
            let n = arg(rest, 1, "N")?;
            job(move |t| {
                t.untracked = true;
                let hs: Vec<_> = (0..nthreads)
                    .map(|_| {
                        std::thread::spawn(move || {
                            for _ in 0..n {
                                // SAFETY: getpid has no arguments.
                                if unsafe { libc::syscall(libc::SYS_getpid) } < 0 {
                                    return Err("getpid failed".to_string());
                                }
                            }
                            Ok(n as u64)
                        })
                    })
                    .collect();
                let mut total = 0;
                for h in hs {
                    total += h.join().map_err(|_| "thread panicked".to_string())??;
                }
                t.cell("getpid")?.calls += total;
                Ok(())
            })
        }
        "wait-then" => {
            // Before: 50 writes of 4096 bytes to /dev/null and 50 reads of 4096 bytes from
            // /dev/zero. Then poll for FILE (access + 10 ms sleep). Then run ACTION.
            let file = PathBuf::from(rest.first().ok_or("missing FILE")?);
            let inner_action = rest.get(1).ok_or("missing ACTION")?.clone();
            let inner = setup(&inner_action, &rest[2..], dir)?;
            let null = open(Path::new("/dev/null"), libc::O_WRONLY)?;
            let zero = open(Path::new("/dev/zero"), libc::O_RDONLY)?;
            let mut buf = vec![0u8; 4096];
            let cfile = cpath(&file);
            job(move |t| {
                t.phase = BEFORE;
                for _ in 0..50 {
                    wr(t, null, &buf, 4096)?;
                    rd(t, zero, &mut buf, 4096)?;
                }
                t.phase = WAIT;
                loop {
                    // SAFETY: valid C string.
                    let r = unsafe { libc::access(cfile.as_ptr(), libc::F_OK) };
                    if t.call("access", r as i64).is_ok() {
                        break;
                    }
                    sleep_1ms(t, 10_000_000)?;
                }
                t.phase = MAIN;
                inner(t)
            })
        }
        _ => Err(format!("unknown action {action:?}")),
    }
}

fn sleep_1ms(t: &mut Shared, ns: i64) -> Result<(), String> {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: ns,
    };
    // SAFETY: ts is valid, no remainder requested.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clock_nanosleep,
            libc::CLOCK_MONOTONIC,
            0,
            &ts as *const libc::timespec,
            ptr::null_mut::<libc::timespec>(),
        )
    };
    t.call("clock_nanosleep", r).map(|_| ())
}

struct Ctx {
    job: Option<Job>,
    shared: *mut Shared,
}

extern "C" fn worker_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the supervisor's Ctx, untouched while the worker runs.
    let ctx = unsafe { &mut *arg.cast::<Ctx>() };
    // SAFETY: the tally mapping lives as long as the process.
    let shared = unsafe { &mut *ctx.shared };
    let r = match ctx.job.take() {
        Some(job) => job(shared),
        None => Err("no job".into()),
    };
    if let Err(e) = r {
        shared.set_error(&e);
        // SAFETY: terminating the worker.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: terminating the worker.
    unsafe { libc::_exit(0) }
}

/// Maps every page of every file-backed mapping (MADV_POPULATE_READ), so that the worker,
/// which shares this address space, never faults on them.
fn populate_file_mappings() {
    const MADV_POPULATE_READ: i32 = 22;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[5].starts_with('/') || !f[1].starts_with('r') {
            continue;
        }
        let Some((a, b)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        // SAFETY: advice on our own mapping; failure is harmless.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, MADV_POPULATE_READ) };
    }
}

fn phase_json(cells: &[Cell]) -> Value {
    let mut m = Map::new();
    for c in cells {
        m.insert(
            c.name.to_string(),
            json!({"calls": c.calls, "bytes": c.bytes, "errors": c.errors,
                   "zerocopy_requested": c.zerocopy}),
        );
    }
    Value::Object(m)
}

fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let r = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(data))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        die(&format!("writing {}: {e}", path.display()));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: zc-child <TALLY_PATH> <ACTION> [ARGS…]");
        exit(2);
    }
    let tally_path = PathBuf::from(&args[1]);
    let action = args[2].clone();
    let rest = &args[3..];
    if action == "exit" {
        let code = rest.first().and_then(|s| s.parse().ok()).unwrap_or(0);
        exit(code);
    }
    let base = std::env::var_os("ZC_CHILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dir = base.join(format!("zc-child-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        die(&format!("mkdir {}: {e}", dir.display()));
    }
    let mut out = json!({
        "action": action, "args": rest, "supervisor_pid": std::process::id(),
        "worker_pid": null, "error": null,
    });
    let shared = map_shared();
    let job = match setup(&action, rest, &dir) {
        Ok(j) => j,
        Err(e) => {
            out["error"] = json!(format!("setup of {action}: {e}"));
            write_atomic(&tally_path, out.to_string().as_bytes());
            let _ = std::fs::remove_dir_all(&dir);
            die(&format!("setup of {action}: {e}"));
        }
    };
    // The worker shares the supervisor's memory (CLONE_VM, like posix_spawn), so that it
    // does not re-fault pages the supervisor already has: with every file-backed mapping
    // populated first, the worker takes no page fault on code or data it did not ask for, and
    // its file faults are only those of its action. The supervisor is suspended until the
    // worker exits (CLONE_VFORK), so the two never run at the same time.
    populate_file_mappings();
    let mut stack = vec![1u8; 8 << 20];
    let mut ctx = Ctx {
        job: Some(job),
        shared: shared as *mut Shared,
    };
    // SAFETY: the stack is ours, 8 MiB, pre-touched; its top is 16-byte aligned; ctx outlives
    // the worker (the supervisor is suspended until the worker has exited).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        libc::clone(
            worker_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut ctx as *mut Ctx).cast(),
        )
    };
    if pid < 0 {
        die(&format!("clone: {}", errstr(errno())));
    }
    let shared = ctx.shared;
    // SAFETY: the worker has exited; the tally is ours again.
    let shared = unsafe { &mut *shared };
    drop(stack);
    // Wait for the worker's exit without reaping it, give it time to make its final context
    // switch (the kernel counts it in nvcsw after exit_notify), then reap it with wait4 so its
    // rusage includes that switch.
    // SAFETY: plain waitid/wait4 on our own child.
    let (status, ru, proc_io) = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        if libc::waitid(
            libc::P_PID,
            pid as u32,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        ) < 0
        {
            die(&format!("waitid: {}", errstr(errno())));
        }
        std::thread::sleep(Duration::from_millis(50));
        // The kernel's own I/O accounting of the worker, readable until it is reaped.
        let proc_io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let mut status = 0;
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid, &mut status, 0, &mut ru) != pid {
            die(&format!("wait4: {}", errstr(errno())));
        }
        (status, ru, proc_io)
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut error = None;
    if shared.error_len > 0 {
        error = Some(String::from_utf8_lossy(&shared.error[..shared.error_len]).into_owned());
    }
    let worker_exit = if libc::WIFEXITED(status) {
        json!({"code": libc::WEXITSTATUS(status)})
    } else {
        json!({"signal": libc::WTERMSIG(status)})
    };
    if error.is_none() && !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        error = Some(format!("worker ended abnormally: {worker_exit}"));
    }
    let tracked: u64 = (0..PHASES)
        .flat_map(|p| shared.cells[p][..shared.used[p]].iter())
        .map(|c| c.calls)
        .sum::<u64>()
        // io_uring operations are not syscalls.
        - (0..PHASES)
            .flat_map(|p| shared.cells[p][..shared.used[p]].iter())
            .filter(|c| c.name.starts_with("io_uring:"))
            .map(|c| c.calls)
            .sum::<u64>();
    out["worker_pid"] = json!(pid);
    out["calls"] = phase_json(&shared.cells[MAIN][..shared.used[MAIN]]);
    out["before"] = phase_json(&shared.cells[BEFORE][..shared.used[BEFORE]]);
    out["wait"] = phase_json(&shared.cells[WAIT][..shared.used[WAIT]]);
    out["tracked_syscalls"] = json!(tracked);
    // Made by the worker but not at a call site of ours: `_exit` is the exit_group syscall.
    out["worker_fixed_syscalls"] = json!(["exit_group"]);
    out["untracked_syscalls"] = json!(shared.untracked);
    out["pages_touched"] = json!(shared.pages_touched);
    out["file_pages_touched"] = json!(shared.file_pages_touched);
    out["rusage"] = json!({
        "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw,
        "minflt": ru.ru_minflt, "majflt": ru.ru_majflt,
    });
    // /proc/PID/io counters (rchar, wchar, syscr, syscw, …) as the kernel kept them.
    let io: Map<String, Value> = proc_io
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| Some((k.trim().to_string(), json!(v.trim().parse::<u64>().ok()?))))
        .collect();
    out["proc_io"] = Value::Object(io);
    out["worker_exit"] = worker_exit;
    out["error"] = json!(error);
    write_atomic(&tally_path, out.to_string().as_bytes());
    if let Some(e) = error {
        die(&format!("{action}: {e}"));
    }
}
