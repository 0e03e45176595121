//! The data-moving syscalls zcprof records, with their x86-64 numbers, in one table.

use crate::enums::named_enum;

/// Declares [`Syscall`] and [`Syscall::from_x86_64`] from one list: each variant with its name
/// and, for real syscalls, its number in arch/x86/entry/syscalls/syscall_64.tbl.
macro_rules! syscall_table {
    ($( $(#[$vmeta:meta])* $variant:ident = $text:literal $(, x86_64 $nr:literal)? ;)*) => {
        named_enum! {
            /// Which syscall (or kernel event) moved the bytes of a [`crate::Transfer`].
            pub enum Syscall: u16 {
                $( $(#[$vmeta])* $variant = $text, )*
            }
        }

        impl Syscall {
            /// The variant for x86-64 syscall number `nr` (mmap is [`Syscall::MmapFile`] until
            /// its flags say otherwise), or `None` if zcprof does not record that syscall.
            #[inline(always)]
            pub const fn from_x86_64(nr: u64) -> Option<Syscall> {
                match nr {
                    $( $( $nr => Some(Syscall::$variant), )? )*
                    _ => None,
                }
            }
        }
    };
}

syscall_table! {
    Read = "read", x86_64 0;
    Write = "write", x86_64 1;
    Pread64 = "pread64", x86_64 17;
    Pwrite64 = "pwrite64", x86_64 18;
    Readv = "readv", x86_64 19;
    Writev = "writev", x86_64 20;
    Preadv = "preadv", x86_64 295;
    Preadv2 = "preadv2", x86_64 327;
    Pwritev = "pwritev", x86_64 296;
    Pwritev2 = "pwritev2", x86_64 328;
    Recvfrom = "recvfrom", x86_64 45;
    Recvmsg = "recvmsg", x86_64 47;
    Recvmmsg = "recvmmsg", x86_64 299;
    Sendto = "sendto", x86_64 44;
    Sendmsg = "sendmsg", x86_64 46;
    Sendmmsg = "sendmmsg", x86_64 307;
    Sendfile = "sendfile", x86_64 40;
    Splice = "splice", x86_64 275;
    Tee = "tee", x86_64 276;
    Vmsplice = "vmsplice", x86_64 278;
    CopyFileRange = "copy_file_range", x86_64 326;
    /// mmap of a file: bytes mapped (not moved).
    MmapFile = "mmap_file", x86_64 9;
    /// mmap without a file: bytes mapped.
    MmapAnon = "mmap_anon";
    /// munmap: bytes unmapped.
    Munmap = "munmap", x86_64 11;
    /// Not a syscall: file pages mapped into the process by page faults
    /// (`filemap:mm_filemap_fault`, `filemap:mm_filemap_map_pages`).
    FileFault = "file_fault";
}

impl Syscall {
    /// The variant with discriminant `v`.
    pub fn from_u16(v: u16) -> Option<Self> {
        Self::from_index(v as usize)
    }
}

/// x86-64 numbers of the other syscalls the kernel programs look at.
pub mod x86_64 {
    /// `exit`: never returns, so it is counted at the thread's exit.
    pub const EXIT: u64 = 60;
    /// `exit_group`: as [`EXIT`].
    pub const EXIT_GROUP: u64 = 231;

    /// `close`
    pub const CLOSE: u64 = 3;
    /// `dup2`
    pub const DUP2: u64 = 33;
    /// `connect`
    pub const CONNECT: u64 = 42;
    /// `setsockopt`
    pub const SETSOCKOPT: u64 = 54;
    /// `fcntl`
    pub const FCNTL: u64 = 72;
    /// `dup3`
    pub const DUP3: u64 = 292;
    /// `close_range`
    pub const CLOSE_RANGE: u64 = 436;

    /// `setsockopt` level of the socket-wide options.
    pub const SOL_SOCKET: u64 = 1;
    /// `setsockopt` option that lets sends skip the copy (what the programs cache of a socket).
    pub const SO_ZEROCOPY: u64 = 60;
    /// `fcntl` command that sets the file status flags (O_DIRECT among them).
    pub const F_SETFL: u64 = 4;

    /// Which of a process's descriptors syscall `nr` (with arguments `arg(0..)`) may have
    /// changed: what the number refers to, its flags (O_DIRECT) or its socket's peer or
    /// SO_ZEROCOPY, the facts the programs cache per descriptor. Descriptors a call only
    /// creates (open, accept, socket, pipe, dup) change nothing cached: their numbers were free,
    /// and freeing a number is a change of its own.
    #[inline(always)]
    pub fn fd_change(nr: u64, arg: impl Fn(usize) -> u64) -> super::FdChange {
        use super::FdChange::*;
        match nr {
            CLOSE | CONNECT => Fd(arg(0)),
            // dup2(old, new), dup3(old, new, flags): `new` now refers to `old`'s file.
            DUP2 | DUP3 => Fd(arg(1)),
            FCNTL if arg(1) == F_SETFL => Fd(arg(0)),
            SETSOCKOPT if arg(1) == SOL_SOCKET && arg(2) == SO_ZEROCOPY => Fd(arg(0)),
            CLOSE_RANGE => All,
            _ => Nothing,
        }
    }
}

/// What a syscall may have changed among its process's descriptors ([`x86_64::fd_change`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdChange {
    /// Nothing the programs cache.
    Nothing,
    /// This descriptor.
    Fd(u64),
    /// Any of them (close_range, exec, an io_uring close).
    All,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_round_trip() {
        for (i, s) in Syscall::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(Syscall::from_u16(i as u16), Some(*s));
        }
        assert_eq!(Syscall::from_u16(Syscall::COUNT as u16), None);
        // A few numbers from syscall_64.tbl, read there rather than from the table above.
        assert_eq!(Syscall::from_x86_64(0), Some(Syscall::Read));
        assert_eq!(Syscall::from_x86_64(40), Some(Syscall::Sendfile));
        assert_eq!(Syscall::from_x86_64(326), Some(Syscall::CopyFileRange));
        assert_eq!(Syscall::from_x86_64(9), Some(Syscall::MmapFile));
        assert_eq!(Syscall::from_x86_64(3), None);
        let args = |a: [u64; 3]| move |i: usize| a[i];
        assert_eq!(x86_64::fd_change(3, args([7, 0, 0])), FdChange::Fd(7));
        assert_eq!(x86_64::fd_change(33, args([7, 9, 0])), FdChange::Fd(9));
        assert_eq!(x86_64::fd_change(0, args([7, 0, 0])), FdChange::Nothing);
        // TCP_CORK (level 6, option 3), as nginx sets it around every response: nothing cached.
        assert_eq!(x86_64::fd_change(54, args([7, 6, 3])), FdChange::Nothing);
        assert_eq!(x86_64::fd_change(54, args([7, 1, 60])), FdChange::Fd(7));
        // F_GETFL (3) reads; F_SETFL (4) may set O_DIRECT.
        assert_eq!(x86_64::fd_change(72, args([7, 3, 0])), FdChange::Nothing);
        assert_eq!(x86_64::fd_change(72, args([7, 4, 0])), FdChange::Fd(7));
        let mut names: [&str; Syscall::COUNT] = [""; Syscall::COUNT];
        for (n, s) in names.iter_mut().zip(Syscall::ALL) {
            *n = s.name();
        }
        names.sort();
        assert!(names.windows(2).all(|w| w[0] != w[1]), "names are unique");
    }
}
