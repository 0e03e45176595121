//! What a file descriptor of the current task refers to: walks
//! `current->files->fdt->fd[fd]` and the file's inode, flags and socket.

use aya_ebpf::helpers::bpf_get_current_task;
use zcprof_common::{FdInfo, FdKind};

use crate::kernel::{off, read};

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFBLK: u16 = 0o060000;
const S_IFSOCK: u16 = 0o140000;
const S_IFIFO: u16 = 0o010000;
const O_DIRECT: u32 = 0o40000;
const FMODE_WRITE: u32 = 0x2;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Bytes read at once from a `struct fdtable` or a `struct file`: one helper call for all the
/// fields instead of one per field (the loader checks that they fit).
const WINDOW: usize = zcprof_common::globals::WINDOW_BYTES as usize;

/// A `u64`/`u32`/`u16` field at byte `off` of a window.
#[inline(always)]
fn field<T: Copy + Default>(win: &[u8; WINDOW], off: u64) -> T {
    let size = core::mem::size_of::<T>();
    // Bounds the verifier can see: off + size <= WINDOW.
    let off = (off as usize) & (WINDOW - 1);
    if off + size > WINDOW {
        return T::default();
    }
    // SAFETY: in bounds (checked above); read_unaligned has no alignment requirement.
    unsafe { core::ptr::read_unaligned(win.as_ptr().add(off) as *const T) }
}

/// The current task's `struct fdtable *` (`current->files->fdt`).
#[inline(always)]
fn current_fdt() -> Option<u64> {
    if !off::have_btf() {
        return None;
    }
    // SAFETY: the helper only returns the current task pointer.
    let task = unsafe { bpf_get_current_task() };
    let files = read::<u64>(task, off::task_files()).ok()?;
    read::<u64>(files, off::files_fdt()).ok()
}

/// The `struct file *` behind descriptor `fd` of the current task, or 0.
#[inline(always)]
pub fn current_file(fd: u64) -> u64 {
    let Some(fdt) = current_fdt() else {
        return 0;
    };
    let Ok(win) = read::<[u8; WINDOW]>(fdt, off::fdt_window()) else {
        return 0;
    };
    let max_fds: u32 = field(&win, off::fdt_max_fds() - off::fdt_window());
    if fd >= max_fds as u64 {
        return 0;
    }
    let fd_array: u64 = field(&win, off::fdt_fd() - off::fdt_window());
    read::<u64>(fd_array, fd * 8).unwrap_or(0)
}

/// As [`current_file`], reading the file table's fields one by one: slower, but without a
/// window on the stack, for functions that have little of it.
#[inline(always)]
pub fn small_current_file(fd: u64) -> u64 {
    let Some(fdt) = current_fdt() else {
        return 0;
    };
    match read::<u32>(fdt, off::fdt_max_fds()) {
        Ok(max) if fd < max as u64 => {}
        _ => return 0,
    }
    let fd_array = read::<u64>(fdt, off::fdt_fd()).unwrap_or(0);
    read::<u64>(fd_array, fd * 8).unwrap_or(0)
}

/// What the kernel tells of the open file at `file` (a `struct file *`).
#[inline(always)]
pub fn file_info(file: u64) -> FdInfo {
    if file == 0 {
        return FdInfo::UNKNOWN;
    }
    let start = off::file_window();
    let Ok(win) = read::<[u8; WINDOW]>(file, start) else {
        return FdInfo::UNKNOWN;
    };
    let inode: u64 = field(&win, off::file_inode() - start);
    let Ok(mode) = read::<u16>(inode, off::inode_mode()) else {
        return FdInfo::UNKNOWN;
    };
    let flags: u32 = field(&win, off::file_flags() - start);
    let fmode: u32 = field(&win, off::file_mode() - start);
    let kind = kind_of(mode);
    let (so_zerocopy, local_peer) = if kind == FdKind::Socket {
        // `private_data` is in the window on recent kernels; older ones keep it ~170 bytes
        // after `f_inode` (the loader decides; the verifier drops the other branch).
        let private = off::file_private();
        let socket = if file_private_in_window() {
            field(&win, private - start)
        } else {
            read::<u64>(file, private).unwrap_or(0)
        };
        socket_zerocopy(socket)
    } else {
        (false, false)
    };
    FdInfo {
        kind,
        direct: kind == FdKind::Regular && flags & O_DIRECT != 0,
        writable: fmode & FMODE_WRITE != 0,
        so_zerocopy,
        local_peer,
    }
}

/// The kind of file an inode's `i_mode` says it is.
#[inline(always)]
pub fn kind_of(mode: u16) -> FdKind {
    match mode & S_IFMT {
        S_IFREG | S_IFBLK => FdKind::Regular,
        S_IFSOCK => FdKind::Socket,
        S_IFIFO => FdKind::Pipe,
        _ => FdKind::Other,
    }
}

/// The current task's descriptor `fd`, described.
#[inline(always)]
pub fn fd_info(fd: u64) -> FdInfo {
    file_info(current_file(fd))
}

/// For a `struct socket *`: (SO_ZEROCOPY is set, the peer is on this host). Only loopback peers are
/// recognised as local: the kernel copies zero-copy skbs it delivers locally.
#[inline(always)]
fn socket_zerocopy(socket: u64) -> (bool, bool) {
    let Ok(sk) = read::<u64>(socket, off::socket_sk()) else {
        return (false, false);
    };
    let sk_flags = read::<u64>(sk, off::sock_flags()).unwrap_or(0);
    let so_zerocopy = sk_flags & (1u64 << (off::sock_zerocopy_bit() & 63)) != 0;
    let family = read::<u16>(sk, off::sock_family()).unwrap_or(0);
    let local = match family {
        AF_INET => {
            let daddr = read::<u32>(sk, off::sock_daddr()).unwrap_or(0);
            // Network byte order: the first octet is the low byte on little-endian.
            daddr & 0xff == 127
        }
        AF_INET6 => match read::<[u32; 4]>(sk, off::sock_v6_daddr()) {
            Ok(v6) => {
                let loopback = v6[0] == 0 && v6[1] == 0 && v6[2] == 0 && v6[3] == 1u32.to_be();
                let mapped = v6[0] == 0 && v6[1] == 0 && v6[2] == 0xffff_u32.to_be();
                loopback || (mapped && v6[3] & 0xff == 127)
            }
            Err(_) => false,
        },
        // AF_UNIX and others never leave the host.
        _ => true,
    };
    (so_zerocopy, local)
}

/// Whether `file.private_data` lies inside the window read at `OFF_FILE_WINDOW` (recent
/// kernels); older layouts keep it farther away and it is read on its own.
#[inline(always)]
fn file_private_in_window() -> bool {
    let (start, private) = (off::file_window(), off::file_private());
    private >= start && private + 8 <= start + WINDOW as u64
}
