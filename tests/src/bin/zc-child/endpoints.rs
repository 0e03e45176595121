//! What the supervisor prepares for the worker to move data between: files, pipes, sockets
//! and the test pattern.

use std::{
    ffi::CString,
    net::{TcpListener, TcpStream},
    os::fd::IntoRawFd,
    path::{Path, PathBuf},
};

use crate::{errno, errstr};

/// `p` as a C string.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL")
}

/// Opens `p` (close-on-exec, mode 0644 when created).
pub fn open(p: &Path, flags: i32) -> Result<i32, String> {
    let c = cpath(p);
    // SAFETY: valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(format!("open {}: {}", p.display(), errstr(errno())));
    }
    Ok(fd)
}

/// `n` bytes of the test pattern (0, 1, …, 250, 0, …).
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Writes `n` bytes of the test pattern to `dir/name`.
pub fn make_file(dir: &Path, name: &str, n: usize) -> Result<PathBuf, String> {
    let p = dir.join(name);
    std::fs::write(&p, pattern(n)).map_err(|e| format!("write {}: {e}", p.display()))?;
    Ok(p)
}

/// A pipe: (read end, write end).
pub fn pipe() -> Result<(i32, i32), String> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(format!("pipe2: {}", errstr(errno())));
    }
    Ok((fds[0], fds[1]))
}

/// A connected AF_UNIX socket pair of type `ty`.
pub fn socketpair(ty: i32) -> Result<(i32, i32), String> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } < 0
    {
        return Err(format!("socketpair: {}", errstr(errno())));
    }
    Ok((fds[0], fds[1]))
}

/// Connected TCP loopback pair: (client, accepted server side).
pub fn tcp_pair() -> Result<(i32, i32), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let c = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    Ok((c.into_raw_fd(), s.into_raw_fd()))
}

/// setsockopt() of an int option.
pub fn setsockopt_int(fd: i32, level: i32, opt: i32, val: i32) -> Result<(), String> {
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

/// 8 MiB send and receive buffers on `fd`, as far as the kernel allows.
pub fn big_buffers(fd: i32) {
    // Best effort: roomy socket buffers so that a same-thread send never blocks.
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20)
        .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20));
    let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20)
        .or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 8 << 20));
}

/// 127.0.0.1:`port`.
pub fn sockaddr_in(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    }
}
