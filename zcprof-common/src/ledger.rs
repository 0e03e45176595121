//! The copy ledger: the columns bytes land in, the rules that choose the column, and the
//! cells (calls, bytes, errors, sizes) the kernel keeps per (thread, syscall, column).

use crate::{Syscall, enums::named_enum};

/// Number of log2 buckets in an I/O size histogram: bucket 0 holds 0-byte transfers, bucket
/// `k` (1..=31) holds sizes in `[2^(k-1), 2^k)`; anything larger lands in bucket 31.
pub const HIST_BUCKETS: usize = 32;

named_enum! {
    /// The ledger column: which path the bytes took across the user/kernel boundary.
    pub enum Column: u16 {
        /// The CPU copied the bytes from a user buffer into a kernel buffer (write, send).
        CpuUserToKernel = "cpu_user_to_kernel",
        /// The CPU copied the bytes from a kernel buffer into a user buffer (read, recv).
        CpuKernelToUser = "cpu_kernel_to_user",
        /// The CPU copied the bytes from one kernel buffer to another, no user buffer involved
        /// (sendfile or copy_file_range into a regular file, splice from a pipe into a file).
        CpuInKernel = "cpu_in_kernel",
        /// The kernel moved page references, not bytes (sendfile/splice into a socket or pipe,
        /// tee, vmsplice into a pipe, MSG_ZEROCOPY sends the kernel did not copy).
        ZeroCopy = "zero_copy",
        /// The device moved the bytes straight to or from user pages (O_DIRECT).
        DmaDirect = "dma_direct",
        /// File pages brought into the process through a mapping by page faults.
        MmapFaultIn = "mmap_fault_in",
        /// No bytes crossed: mmap/munmap (bytes mapped or unmapped), io_uring operations that
        /// move no data.
        NotMoved = "not_moved",
    }
}

impl Column {
    /// The variant with discriminant `v`.
    pub fn from_u16(v: u16) -> Option<Self> {
        Self::from_index(v as usize)
    }

    /// The columns in which the CPU copied the bytes.
    pub const CPU_COPIES: [Column; 3] = [
        Column::CpuUserToKernel,
        Column::CpuKernelToUser,
        Column::CpuInKernel,
    ];
}

/// What kind of file a descriptor refers to, as the kernel program sees it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// Not known: no BTF, a bad fd, or the file table could not be read.
    Unknown = 0,
    /// A regular file or block device (goes through the page cache unless O_DIRECT).
    Regular,
    /// A socket.
    Socket,
    /// A pipe or FIFO.
    Pipe,
    /// Anything else: character devices (`/dev/null`, `/dev/zero`), eventfd, ...
    Other,
}

/// What the kernel program learnt of one file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdInfo {
    /// Kind of file.
    pub kind: FdKind,
    /// The file was opened with O_DIRECT.
    pub direct: bool,
    /// The file is open for writing (`FMODE_WRITE`); tells vmsplice's direction.
    pub writable: bool,
    /// For a socket: MSG_ZEROCOPY is enabled on it (SO_ZEROCOPY).
    pub so_zerocopy: bool,
    /// For a socket: its peer is on this host (a loopback address). The kernel copies
    /// zero-copy sends delivered locally (skb_orphan_frags_rx), so they are CPU copies.
    pub local_peer: bool,
}

impl FdInfo {
    /// The description in 32 bits, for [`crate::FdCacheEntry`].
    #[inline(always)]
    pub const fn pack(self) -> u32 {
        (self.kind as u32)
            | (self.direct as u32) << 8
            | (self.writable as u32) << 9
            | (self.so_zerocopy as u32) << 10
            | (self.local_peer as u32) << 11
    }

    /// The description [`FdInfo::pack`] made.
    #[inline(always)]
    pub const fn unpack(v: u32) -> FdInfo {
        let kind = match v & 0xff {
            1 => FdKind::Regular,
            2 => FdKind::Socket,
            3 => FdKind::Pipe,
            4 => FdKind::Other,
            _ => FdKind::Unknown,
        };
        FdInfo {
            kind,
            direct: v & 1 << 8 != 0,
            writable: v & 1 << 9 != 0,
            so_zerocopy: v & 1 << 10 != 0,
            local_peer: v & 1 << 11 != 0,
        }
    }

    /// Nothing known about the descriptor.
    pub const UNKNOWN: FdInfo = FdInfo {
        kind: FdKind::Unknown,
        direct: false,
        writable: false,
        so_zerocopy: false,
        local_peer: false,
    };
}

/// The ledger column of one call of `syscall`.
///
/// `fd` is the descriptor the data is read from or written to (for sendfile, splice and
/// copy_file_range: the destination), `src` the source of sendfile/splice, `zerocopy_flag` whether the call
/// passed MSG_ZEROCOPY. Shared by the kernel program and the tests so that the rules exist once.
#[inline(always)]
pub fn classify(syscall: Syscall, fd: FdInfo, src: FdInfo, zerocopy_flag: bool) -> Column {
    use Syscall::*;
    match syscall {
        Read | Pread64 | Readv | Preadv | Preadv2 => {
            if fd.direct {
                Column::DmaDirect
            } else {
                Column::CpuKernelToUser
            }
        }
        Write | Pwrite64 | Writev | Pwritev | Pwritev2 => {
            if fd.direct {
                Column::DmaDirect
            } else {
                Column::CpuUserToKernel
            }
        }
        Recvfrom | Recvmsg | Recvmmsg => Column::CpuKernelToUser,
        Sendto | Sendmsg | Sendmmsg => {
            if zerocopy_flag && fd.so_zerocopy && !fd.local_peer {
                Column::ZeroCopy
            } else {
                Column::CpuUserToKernel
            }
        }
        // sendfile is splice from the file into an internal pipe, then out of it: page
        // references into a socket or pipe, page-cache pages handed to the device for an
        // O_DIRECT file, a page-cache copy into anything else.
        Sendfile => match fd.kind {
            FdKind::Socket | FdKind::Pipe | FdKind::Unknown => Column::ZeroCopy,
            FdKind::Regular if fd.direct => Column::DmaDirect,
            _ => Column::CpuInKernel,
        },
        Splice => match (src.kind, fd.kind) {
            // Into a pipe: files and sockets lend their pages, pipes move buffers.
            (FdKind::Regular | FdKind::Socket | FdKind::Pipe | FdKind::Unknown, FdKind::Pipe) => {
                Column::ZeroCopy
            }
            // Out of a pipe into a socket: pages go to the socket by reference.
            (FdKind::Pipe | FdKind::Unknown, FdKind::Socket | FdKind::Unknown) => Column::ZeroCopy,
            // Pipe into an O_DIRECT file: the device reads the pipe's pages.
            (_, FdKind::Regular) if fd.direct => Column::DmaDirect,
            // Pipe into a file, or device reads into a pipe: the kernel copies the bytes.
            _ => Column::CpuInKernel,
        },
        Tee => Column::ZeroCopy,
        // vmsplice into a pipe maps the user pages in; out of a pipe it copies to user memory.
        Vmsplice => {
            if fd.kind == FdKind::Pipe && !fd.writable {
                Column::CpuKernelToUser
            } else {
                Column::ZeroCopy
            }
        }
        // Without reflink, copy_file_range splices page-cache pages into the destination.
        CopyFileRange => {
            if fd.direct {
                Column::DmaDirect
            } else {
                Column::CpuInKernel
            }
        }
        MmapFile | MmapAnon | Munmap => Column::NotMoved,
        FileFault => Column::MmapFaultIn,
    }
}

/// Ledger cells kept inside a thread's entry ([`crate::ThreadStats::cells`]).
pub const INLINE_CELLS: usize = 4;

/// A ledger cell kept inside a thread's entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct InlineCell {
    /// [`InlineCell::key`] of its (syscall, column), or 0 while the slot is free.
    pub key: u32,
    /// Padding, always 0.
    pub _pad: u32,
    /// The cell.
    pub cell: Transfer,
}

impl InlineCell {
    /// A free slot.
    pub const EMPTY: InlineCell = InlineCell {
        key: 0,
        _pad: 0,
        cell: Transfer::ZERO,
    };

    /// The slot key of (syscall, column): never 0.
    #[inline(always)]
    pub const fn key(syscall: Syscall, column: Column) -> u32 {
        1 << 31 | (syscall as u32) << 16 | column as u32
    }

    /// The (syscall, column) of a used slot.
    pub fn decode(key: u32) -> Option<(Syscall, Column)> {
        if key & 1 << 31 == 0 {
            return None;
        }
        Some((
            Syscall::from_u16(((key >> 16) & 0x7fff) as u16)?,
            Column::from_u16((key & 0xffff) as u16)?,
        ))
    }
}

/// Key of [`crate::MAP_TRANSFERS`]: one cell of a thread's ledger.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransferKey {
    /// Process of the thread.
    pub tgid: u32,
    /// Thread that issued the syscall.
    pub tid: u32,
    /// [`Syscall`] discriminant.
    pub syscall: u16,
    /// [`Column`] discriminant.
    pub column: u16,
}

impl TransferKey {
    /// The key of thread `tid`'s cell named by `cell_key` (an [`InlineCell::key`]).
    #[inline(always)]
    pub const fn of_cell(tgid: u32, tid: u32, cell_key: u32) -> TransferKey {
        TransferKey {
            tgid,
            tid,
            syscall: ((cell_key >> 16) & 0x7fff) as u16,
            column: (cell_key & 0xffff) as u16,
        }
    }
}

/// How one scalar field of a ledger cell is named and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CellFieldSpec {
    /// Field name in [`Transfer`]; its JSON key.
    pub name: &'static str,
    /// Prometheus family (labels: syscall, column), without `zcprof_` and `_total`.
    pub metric: &'static str,
    /// Help text of that family.
    pub help: &'static str,
    /// Exported only for cells where it is not 0 (it is rare, and 0 for most syscalls).
    pub sparse: bool,
    /// The family also carries the io_uring cells, summed per column, as
    /// `syscall="io_uring"` (io_uring operations have a family of their own otherwise).
    pub with_uring: bool,
    /// The field counts nanoseconds: exported in seconds, Prometheus's base unit.
    pub ns: bool,
}

/// Declares [`Transfer`]'s scalar fields once, with how each is shown ([`CELL_FIELDS`]).
macro_rules! cell_fields {
    ($( $(#[$doc:meta])* $field:ident { metric: $metric:literal, help: $help:literal, sparse: $sparse:literal, with_uring: $uring:literal, ns: $ns:literal $(,)? } )*) => {
        /// Value of [`crate::MAP_TRANSFERS`] and [`crate::MAP_URING`], and of a thread's inline
        /// cells: calls and bytes of one ledger cell.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct Transfer {
            $( $(#[$doc])* pub $field: u64, )*
            /// Log2 histogram of successful calls' byte counts (see [`HIST_BUCKETS`]).
            pub size_log2: [u64; HIST_BUCKETS],
            /// Log2 histogram of the timed calls' durations in nanoseconds, failed ones
            /// included (bucket `k` holds `[2^(k-1), 2^k)` ns; the last one, 2^30 ns and
            /// more); all zero unless `--latency`.
            pub time_log2: [u64; HIST_BUCKETS],
        }

        /// How each scalar field of [`Transfer`] is named and shown, in field order.
        pub const CELL_FIELDS: &[CellFieldSpec] = &[
            $( CellFieldSpec {
                name: stringify!($field),
                metric: $metric,
                help: $help,
                sparse: $sparse,
                with_uring: $uring,
                ns: $ns,
            }, )*
        ];

        impl Transfer {
            /// An empty cell.
            pub const ZERO: Transfer = Transfer {
                $( $field: 0, )*
                size_log2: [0; HIST_BUCKETS],
                time_log2: [0; HIST_BUCKETS],
            };

            /// The scalar fields in the order of [`CELL_FIELDS`].
            pub const fn values(&self) -> [u64; CELL_FIELDS.len()] {
                [$( self.$field, )*]
            }

            /// The scalar fields in the order of [`CELL_FIELDS`], to change them.
            pub fn values_mut(&mut self) -> [&mut u64; CELL_FIELDS.len()] {
                [$( &mut self.$field, )*]
            }
        }
    };
}

cell_fields! {
    /// Calls (or, for io_uring, completed operations), successful or not.
    calls {
        metric: "transfer_calls",
        help: "Calls of data-moving syscalls by syscall and ledger column, failed ones included.",
        sparse: false,
        with_uring: false,
        ns: false,
    }
    /// Bytes moved by the successful ones.
    bytes {
        metric: "ledger_bytes",
        help: "Bytes by ledger column (how they crossed the user/kernel boundary) and syscall; \
               io_uring operations are syscall=\"io_uring\". See docs/ledger.md.",
        sparse: false,
        with_uring: true,
        ns: false,
    }
    /// Calls that returned an error.
    errors {
        metric: "transfer_errors",
        help: "Failed calls of data-moving syscalls by syscall and ledger column.",
        sparse: false,
        with_uring: false,
        ns: false,
    }
    /// For the MSG_ZEROCOPY sends in this cell: how many there were (the kernel copies them
    /// when the peer is on this host, and they land in `cpu_user_to_kernel`).
    zerocopy_requested {
        metric: "zerocopy_requested",
        help: "Sends that asked for MSG_ZEROCOPY, by syscall and the column they landed in.",
        sparse: true,
        with_uring: false,
        ns: false,
    }
    /// Nanoseconds spent inside the timed calls, from entry to return (waiting included),
    /// failed ones too; 0 unless `--latency`.
    time_ns {
        metric: "transfer_seconds",
        help: "Time spent inside data-moving syscalls (wall clock, from entry to return, \
               blocking included), by syscall and ledger column; only with --latency.",
        sparse: true,
        with_uring: false,
        ns: true,
    }
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer::ZERO
    }
}

impl Transfer {
    /// Adds `other`, field by field and bucket by bucket.
    pub fn add(&mut self, other: &Transfer) {
        for (a, b) in self.values_mut().into_iter().zip(other.values()) {
            *a += b;
        }
        for (a, b) in self.size_log2.iter_mut().zip(other.size_log2.iter()) {
            *a += b;
        }
        for (a, b) in self.time_log2.iter_mut().zip(other.time_log2.iter()) {
            *a += b;
        }
    }

    /// `self - earlier`, field by field and bucket by bucket, 0 where one went down.
    pub fn saturating_sub(&self, earlier: &Transfer) -> Transfer {
        let mut out = *self;
        for (a, b) in out.values_mut().into_iter().zip(earlier.values()) {
            *a = a.saturating_sub(b);
        }
        for (a, b) in out.size_log2.iter_mut().zip(earlier.size_log2.iter()) {
            *a = a.saturating_sub(*b);
        }
        for (a, b) in out.time_log2.iter_mut().zip(earlier.time_log2.iter()) {
            *a = a.saturating_sub(*b);
        }
        out
    }
}

/// The histogram bucket of a transfer of `bytes` bytes.
#[inline(always)]
pub const fn size_bucket(bytes: u64) -> usize {
    let b = (64 - bytes.leading_zeros()) as usize;
    if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(kind: FdKind) -> FdInfo {
        FdInfo {
            kind,
            ..FdInfo::UNKNOWN
        }
    }

    // The expectations are the copy model (docs/model.md) and the kernel's documented
    // behaviour, cell by cell, not a copy of `classify`.
    #[test]
    fn traditional_io_is_two_cpu_copies() {
        let file = fd(FdKind::Regular);
        let sock = fd(FdKind::Socket);
        assert_eq!(
            classify(Syscall::Read, file, FdInfo::UNKNOWN, false),
            Column::CpuKernelToUser
        );
        assert_eq!(
            classify(Syscall::Write, sock, FdInfo::UNKNOWN, false),
            Column::CpuUserToKernel
        );
        assert_eq!(
            classify(Syscall::Recvmsg, sock, FdInfo::UNKNOWN, false),
            Column::CpuKernelToUser
        );
    }

    #[test]
    fn o_direct_is_dma() {
        let direct = FdInfo {
            direct: true,
            ..fd(FdKind::Regular)
        };
        assert_eq!(
            classify(Syscall::Pread64, direct, FdInfo::UNKNOWN, false),
            Column::DmaDirect
        );
        assert_eq!(
            classify(Syscall::Pwritev2, direct, FdInfo::UNKNOWN, false),
            Column::DmaDirect
        );
    }

    #[test]
    fn sendfile_depends_on_destination() {
        let file = fd(FdKind::Regular);
        assert_eq!(
            classify(Syscall::Sendfile, fd(FdKind::Socket), file, false),
            Column::ZeroCopy
        );
        assert_eq!(
            classify(Syscall::Sendfile, fd(FdKind::Pipe), file, false),
            Column::ZeroCopy
        );
        assert_eq!(
            classify(Syscall::Sendfile, file, file, false),
            Column::CpuInKernel
        );
    }

    #[test]
    fn splice_moves_pages_except_into_files() {
        let (file, pipe, sock, dev) = (
            fd(FdKind::Regular),
            fd(FdKind::Pipe),
            fd(FdKind::Socket),
            fd(FdKind::Other),
        );
        assert_eq!(
            classify(Syscall::Splice, pipe, file, false),
            Column::ZeroCopy
        );
        assert_eq!(
            classify(Syscall::Splice, sock, pipe, false),
            Column::ZeroCopy
        );
        assert_eq!(
            classify(Syscall::Splice, pipe, sock, false),
            Column::ZeroCopy
        );
        assert_eq!(
            classify(Syscall::Splice, pipe, pipe, false),
            Column::ZeroCopy
        );
        assert_eq!(
            classify(Syscall::Splice, file, pipe, false),
            Column::CpuInKernel
        );
        assert_eq!(
            classify(Syscall::Splice, pipe, dev, false),
            Column::CpuInKernel
        );
    }

    #[test]
    fn vmsplice_direction_follows_the_pipe_end() {
        let write_end = FdInfo {
            writable: true,
            ..fd(FdKind::Pipe)
        };
        let read_end = fd(FdKind::Pipe);
        assert_eq!(
            classify(Syscall::Vmsplice, write_end, FdInfo::UNKNOWN, false),
            Column::ZeroCopy
        );
        assert_eq!(
            classify(Syscall::Vmsplice, read_end, FdInfo::UNKNOWN, false),
            Column::CpuKernelToUser
        );
    }

    #[test]
    fn msg_zerocopy_to_a_local_peer_is_a_copy() {
        let remote = FdInfo {
            so_zerocopy: true,
            ..fd(FdKind::Socket)
        };
        let local = FdInfo {
            local_peer: true,
            ..remote
        };
        let not_enabled = fd(FdKind::Socket);
        assert_eq!(
            classify(Syscall::Sendmsg, remote, FdInfo::UNKNOWN, true),
            Column::ZeroCopy
        );
        assert_eq!(
            classify(Syscall::Sendmsg, local, FdInfo::UNKNOWN, true),
            Column::CpuUserToKernel
        );
        assert_eq!(
            classify(Syscall::Sendto, not_enabled, FdInfo::UNKNOWN, true),
            Column::CpuUserToKernel
        );
        assert_eq!(
            classify(Syscall::Sendmsg, remote, FdInfo::UNKNOWN, false),
            Column::CpuUserToKernel
        );
    }

    #[test]
    fn fd_info_packs_losslessly() {
        for kind in [
            FdKind::Unknown,
            FdKind::Regular,
            FdKind::Socket,
            FdKind::Pipe,
            FdKind::Other,
        ] {
            for bits in 0..16u32 {
                let info = FdInfo {
                    kind,
                    direct: bits & 1 != 0,
                    writable: bits & 2 != 0,
                    so_zerocopy: bits & 4 != 0,
                    local_peer: bits & 8 != 0,
                };
                assert_eq!(FdInfo::unpack(info.pack()), info);
            }
        }
    }

    #[test]
    fn inline_cell_keys_round_trip() {
        for s in Syscall::ALL {
            for c in Column::ALL {
                let k = InlineCell::key(s, c);
                assert_ne!(k, 0);
                assert_eq!(InlineCell::decode(k), Some((s, c)));
            }
        }
        assert_eq!(InlineCell::decode(0), None);
    }

    #[test]
    fn histogram_buckets_are_log2() {
        assert_eq!(size_bucket(0), 0);
        assert_eq!(size_bucket(1), 1);
        assert_eq!(size_bucket(2), 2);
        assert_eq!(size_bucket(3), 2);
        assert_eq!(size_bucket(4096), 13);
        assert_eq!(size_bucket(65535), 16);
        assert_eq!(size_bucket(u64::MAX), HIST_BUCKETS - 1);
    }

    #[test]
    fn cells_add_and_subtract_every_field() {
        let mut a = Transfer::ZERO;
        for (i, v) in a.values_mut().into_iter().enumerate() {
            *v = 10 * (i as u64 + 1);
        }
        a.size_log2[3] = 7;
        a.time_log2[9] = 5;
        let mut b = a;
        b.add(&a);
        assert_eq!((b.calls, b.bytes, b.size_log2[3]), (20, 40, 14));
        assert_eq!(b.time_log2[9], 10);
        assert_eq!(b.saturating_sub(&a), a);
        assert_eq!(a.saturating_sub(&b), Transfer::ZERO);
    }
}
