//! The contract between zcprof's kernel programs (`zcprof-ebpf`) and user space (`zcprof`).
//!
//! Every map key, map value and enum that crosses the boundary is defined here once,
//! `#[repr(C)]`, so both sides agree on the layout byte for byte (the libbpf-tools `foo.h`).
#![no_std]

/// Name of the map of processes zcprof watches (key: tgid `u32`, value: [`Watch`]).
pub const MAP_WATCHED: &str = "WATCHED";
/// Name of the per-thread counter array (index: a slot handed out from [`MAP_FREE_SLOTS`],
/// value: [`ThreadStats`]). Slot 0 is never handed out: it means "no slot".
pub const MAP_THREADS: &str = "THREADS";
/// Name of the map from a watched thread to its slot in [`MAP_THREADS`] (key: tid `u32`,
/// value: slot `u32`). Consulted when a thread is switched in, not on every event.
pub const MAP_TID_SLOT: &str = "TID_SLOT";
/// Name of the stack of free slots of [`MAP_THREADS`] (value: slot `u32`). User space fills
/// it at load and gives a slot back (zeroed) once it has read a dead thread's counters.
pub const MAP_FREE_SLOTS: &str = "FREE_SLOTS";
/// Name of the per-CPU two-entry cache of the last thread looked up on the CPU (value:
/// [`CpuThread`]): entry 0 keyed by tid, entry 1 (sys_exit's) by the address of the task's
/// saved registers, which the hook has without a helper call.
pub const MAP_CPU_THREAD: &str = "CPU_THREAD";
/// Name of the per-thread transfer ledger (key: [`TransferKey`], value: [`Transfer`]).
pub const MAP_TRANSFERS: &str = "TRANSFERS";
/// Name of the per-process io_uring ledger, per CPU (key: [`UringKey`], value: [`Transfer`]).
pub const MAP_URING: &str = "URING";
/// Name of the array of fd-table epochs (index: tgid % [`FD_EPOCH_SLOTS`], value: `u64`).
pub const MAP_FD_EPOCH: &str = "FD_EPOCH";
/// Slots in [`MAP_FD_EPOCH`]. Processes that share a slot only invalidate each other's fd
/// caches more often; correctness does not depend on the size.
pub const FD_EPOCH_SLOTS: u32 = 4096;
/// Entries in a thread's fd cache ([`ThreadStats::fd_cache`]), direct-mapped by `fd % FD_CACHE`.
pub const FD_CACHE: usize = 4;

/// One remembered file descriptor: what [`FdInfo`] the kernel program found for `fd`, valid
/// while the process's fd-table epoch is still `epoch`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdCacheEntry {
    /// The descriptor plus one; 0 for an empty entry, so that a zeroed thread slot starts with
    /// an empty cache.
    pub fd_plus_one: u32,
    /// [`FdInfo::pack`]ed description.
    pub info: u32,
    /// The process's fd-table epoch when the entry was made.
    pub epoch: u64,
}

impl FdCacheEntry {
    /// An entry that matches no descriptor.
    pub const EMPTY: FdCacheEntry = FdCacheEntry {
        fd_plus_one: 0,
        info: 0,
        epoch: 0,
    };
}

/// Name of the one-slot array holding the watch generation (`u64`), moved on whenever a thread
/// is entered or forgotten, so that no CPU keeps an old word on it ([`CpuThread`]).
pub const MAP_WATCH_GEN: &str = "WATCH_GEN";

/// Value of [`MAP_CPU_THREAD`]: the last thread looked up on this CPU and its slot in
/// [`MAP_THREADS`], so that a thread's next events on the CPU find their counters with array
/// lookups the verifier inlines instead of a hash lookup. Valid while the watch generation is
/// unchanged.
///
/// Not a "running thread" word kept by the context-switch hook: on this platform a thread can
/// be back on a CPU without a `sched_switch` event naming it (measured), so the cache is
/// checked against the current thread (its tid or its registers' address) on every event.
///
/// sys_exit's entry (keyed by registers) is written by programs that the kernel may preempt
/// in the middle (syscall tracepoints may fault since 6.13, and run preemptible under
/// `preempt=lazy` or `full`, the default of 7.x), so two threads can interleave their writes
/// on one CPU. It therefore keeps no (key, slot) pair that could tear: `slot` is trusted only
/// when the entry it names carries the same registers' address ([`ThreadStats::regs`],
/// written by that thread alone), and "not watched" is one word (`key`) holding the
/// registers' page and the watch generation, written with one store.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuThread {
    /// Entry 0: the thread's tid (0: none yet). Entry 1: the registers' page (bits 12-43)
    /// over the low 32 bits of the watch generation of a thread found unwatched.
    pub key: u64,
    /// Entry 0: the thread's slot, 0 if it is not watched. Entry 1: the slot last found.
    pub slot: u32,
    /// Padding, always 0.
    pub _pad: u32,
    /// Entry 0: the watch generation when `slot` was found. Entry 1: unused.
    pub generation: u64,
}

/// Name of the per-CPU array of events the kernel side could not record (index: [`Lost`]).
pub const MAP_LOST: &str = "LOST";

/// Capacity of [`MAP_WATCHED`].
pub const MAX_PROCESSES: u32 = 16_384;
/// Capacity of [`MAP_THREADS`], [`MAP_TID_SLOT`] and [`MAP_FREE_SLOTS`]: threads tracked at
/// once (one slot fewer: slot 0 is unused). The array is allocated in full at load, at
/// `size_of::<ThreadStats>()` (about 1.4 KiB) a slot.
pub const MAX_THREADS: u32 = 16_384;
/// Capacity of [`MAP_TRANSFERS`]: (thread, syscall, column) cells tracked at once.
pub const MAX_TRANSFERS: u32 = 131_072;
/// Capacity of [`MAP_URING`].
pub const MAX_URING: u32 = 16_384;

/// Number of log2 buckets in an I/O size histogram: bucket 0 holds 0-byte transfers, bucket
/// `k` (1..=31) holds sizes in `[2^(k-1), 2^k)`; anything larger lands in bucket 31.
pub const HIST_BUCKETS: usize = 32;

/// [`Watch::flags`]: count this process's own activity.
pub const WATCH_COUNT: u32 = 1;
/// [`Watch::flags`]: processes this one forks are watched too (with both flags).
pub const WATCH_FOLLOW_CHILDREN: u32 = 2;

/// Value of [`MAP_WATCHED`]: why a process is watched.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    /// Bit set of `WATCH_*`. `zcprof run` enters itself with only
    /// [`WATCH_FOLLOW_CHILDREN`], so that the command it spawns is counted from its first
    /// instruction while zcprof itself is not.
    pub flags: u32,
}

/// [`ThreadStats::flags`]: the thread has exited (it may still be switched out on its way).
pub const THREAD_EXITED: u32 = 1;
/// [`ThreadStats::flags`]: the thread's final context switch has happened; its counters are
/// final.
pub const THREAD_DEAD: u32 = 2;
/// [`ThreadStats::last_nvcsw`] before the first context switch of a thread whose
/// voluntary-switch count was unknown when it was entered.
pub const NVCSW_UNKNOWN: u64 = u64::MAX;

/// Value of [`MAP_THREADS`]: everything zcprof counts for one thread, apart from transfers.
///
/// The map is a plain array, not a per-CPU map: a slot is only ever written by the thread it
/// describes (its syscalls, its faults, its own context switch) or, once, by whoever enters
/// it (the parent before the child first runs, or user space) before the thread can find it.
/// So no two CPUs write one entry at the same time, no atomics are needed, and memory does
/// not grow with the number of CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadStats {
    /// The thread (0: a free slot).
    pub tid: u32,
    /// Process (thread group) the thread belongs to.
    pub tgid: u32,
    /// Bit set of `THREAD_*`.
    pub flags: u32,
    /// Padding, always 0.
    pub _pad: u32,
    /// Command name (`comm`), NUL-padded; updated on exec.
    pub comm: [u8; 16],
    /// cgroup v2 id (the cgroup directory's inode number) when the thread was entered; 0 if
    /// entered by user space.
    pub cgroup_id: u64,
    /// State, not a statistic: the address of the thread's saved user registers, written by
    /// the thread's own sys_exit after a lookup. A CPU's cached slot is used only if the
    /// entry it names says it belongs to the registers at hand (see [`CpuThread`]).
    pub regs: u64,
    /// Syscalls that returned to user space, plus exit/exit_group (which never return).
    pub syscalls: u64,
    /// `syscalls` when the thread last called execve: what the process did before it became
    /// the program it is now (for `zcprof run`, the spawning code between fork and exec).
    pub syscalls_before_exec: u64,
    /// Context switches in which the thread gave up the CPU (blocked or slept).
    pub ctx_voluntary: u64,
    /// Context switches in which the thread was preempted while runnable.
    pub ctx_involuntary: u64,
    /// The kernel's `task_struct.nvcsw` at the thread's last context switch; a switch that
    /// raised it was voluntary. Not a statistic: state for the next switch.
    pub last_nvcsw: u64,
    /// Minor page faults (as `ru_minflt` counts them, taken with registers).
    pub faults_minor: u64,
    /// Major page faults (as `ru_majflt`).
    pub faults_major: u64,
    /// Of `faults_minor + faults_major`, those taken while running user code.
    pub faults_user: u64,
    /// Of `faults_minor + faults_major`, those taken in kernel code (e.g. copy_to_user).
    pub faults_kernel: u64,
    /// State, not a statistic: the `struct address_space *` of the file whose pages the
    /// thread's last fault mapped, and the page range already counted for it (so overlapping
    /// fault-around windows are not counted twice). Cleared by munmap.
    pub fault_mapping: u64,
    /// First page index of that range.
    pub fault_first: u64,
    /// Last page index of that range.
    pub fault_last: u64,
    /// MSG_ZEROCOPY sends whose completion the thread read (recvmsg with MSG_ERRQUEUE).
    pub zerocopy_sends_completed: u64,
    /// Of those, the ones the kernel reports it copied after all (SO_EE_CODE_ZEROCOPY_COPIED:
    /// a local peer, or a device without scatter-gather).
    pub zerocopy_sends_copied: u64,
    /// The thread's first few ledger cells that move bytes, kept in its entry so that its
    /// usual transfers need no hash lookup; cells that do not fit, and mmap/munmap cells
    /// (column `NotMoved`), go to [`MAP_TRANSFERS`]. A cell never moves once placed, so a
    /// reader sees each (syscall, column) in exactly one place.
    pub cells: [InlineCell; INLINE_CELLS],
    /// State: the thread's last few descriptors and what they are, so that a data syscall on a
    /// known descriptor does not walk the file table again. Valid while the process's
    /// fd-table epoch ([`MAP_FD_EPOCH`]) is unchanged; every syscall that can change what a
    /// descriptor number refers to, or its flags or peer, moves the epoch on.
    pub fd_cache: [FdCacheEntry; FD_CACHE],
}

impl ThreadStats {
    /// A fresh entry for thread `tid` of `tgid`.
    pub const fn new(tid: u32, tgid: u32, comm: [u8; 16], last_nvcsw: u64) -> Self {
        Self {
            tid,
            tgid,
            flags: 0,
            _pad: 0,
            comm,
            cgroup_id: 0,
            regs: 0,
            syscalls: 0,
            syscalls_before_exec: 0,
            ctx_voluntary: 0,
            ctx_involuntary: 0,
            last_nvcsw,
            faults_minor: 0,
            faults_major: 0,
            faults_user: 0,
            faults_kernel: 0,
            fault_mapping: 0,
            fault_first: 0,
            fault_last: 0,
            zerocopy_sends_completed: 0,
            zerocopy_sends_copied: 0,
            cells: [InlineCell::EMPTY; INLINE_CELLS],
            fd_cache: [FdCacheEntry::EMPTY; FD_CACHE],
        }
    }
}

/// Which syscall (or kernel event) moved the bytes of a [`Transfer`].
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Syscall {
    Read = 0,
    Write,
    Pread64,
    Pwrite64,
    Readv,
    Writev,
    Preadv,
    Preadv2,
    Pwritev,
    Pwritev2,
    Recvfrom,
    Recvmsg,
    Recvmmsg,
    Sendto,
    Sendmsg,
    Sendmmsg,
    Sendfile,
    Splice,
    Tee,
    Vmsplice,
    CopyFileRange,
    /// mmap of a file: bytes mapped (not moved).
    MmapFile,
    /// mmap without a file: bytes mapped.
    MmapAnon,
    /// munmap: bytes unmapped.
    Munmap,
    /// Not a syscall: file pages mapped into the process by page faults
    /// (`filemap:mm_filemap_fault`, `filemap:mm_filemap_map_pages`).
    FileFault,
}

impl Syscall {
    /// Every variant, in discriminant order.
    pub const ALL: [Syscall; 25] = [
        Syscall::Read,
        Syscall::Write,
        Syscall::Pread64,
        Syscall::Pwrite64,
        Syscall::Readv,
        Syscall::Writev,
        Syscall::Preadv,
        Syscall::Preadv2,
        Syscall::Pwritev,
        Syscall::Pwritev2,
        Syscall::Recvfrom,
        Syscall::Recvmsg,
        Syscall::Recvmmsg,
        Syscall::Sendto,
        Syscall::Sendmsg,
        Syscall::Sendmmsg,
        Syscall::Sendfile,
        Syscall::Splice,
        Syscall::Tee,
        Syscall::Vmsplice,
        Syscall::CopyFileRange,
        Syscall::MmapFile,
        Syscall::MmapAnon,
        Syscall::Munmap,
        Syscall::FileFault,
    ];

    /// The variant with discriminant `v`.
    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// Name as users know it (the syscall's name).
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Read => "read",
            Syscall::Write => "write",
            Syscall::Pread64 => "pread64",
            Syscall::Pwrite64 => "pwrite64",
            Syscall::Readv => "readv",
            Syscall::Writev => "writev",
            Syscall::Preadv => "preadv",
            Syscall::Preadv2 => "preadv2",
            Syscall::Pwritev => "pwritev",
            Syscall::Pwritev2 => "pwritev2",
            Syscall::Recvfrom => "recvfrom",
            Syscall::Recvmsg => "recvmsg",
            Syscall::Recvmmsg => "recvmmsg",
            Syscall::Sendto => "sendto",
            Syscall::Sendmsg => "sendmsg",
            Syscall::Sendmmsg => "sendmmsg",
            Syscall::Sendfile => "sendfile",
            Syscall::Splice => "splice",
            Syscall::Tee => "tee",
            Syscall::Vmsplice => "vmsplice",
            Syscall::CopyFileRange => "copy_file_range",
            Syscall::MmapFile => "mmap_file",
            Syscall::MmapAnon => "mmap_anon",
            Syscall::Munmap => "munmap",
            Syscall::FileFault => "file_fault",
        }
    }
}

/// The ledger column: which path the bytes took across the user/kernel boundary.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
    /// The CPU copied the bytes from a user buffer into a kernel buffer (write, send).
    CpuUserToKernel = 0,
    /// The CPU copied the bytes from a kernel buffer into a user buffer (read, recv).
    CpuKernelToUser,
    /// The CPU copied the bytes from one kernel buffer to another, no user buffer involved
    /// (sendfile or copy_file_range into a regular file, splice from a pipe into a file).
    CpuInKernel,
    /// The kernel moved page references, not bytes (sendfile/splice into a socket or pipe,
    /// tee, vmsplice into a pipe, MSG_ZEROCOPY sends the kernel did not copy).
    ZeroCopy,
    /// The device moved the bytes straight to or from user pages (O_DIRECT).
    DmaDirect,
    /// File pages brought into the process through a mapping by page faults.
    MmapFaultIn,
    /// No bytes crossed: mmap/munmap (bytes mapped or unmapped), io_uring operations that
    /// move no data.
    NotMoved,
}

impl Column {
    /// Every variant, in discriminant order.
    pub const ALL: [Column; 7] = [
        Column::CpuUserToKernel,
        Column::CpuKernelToUser,
        Column::CpuInKernel,
        Column::ZeroCopy,
        Column::DmaDirect,
        Column::MmapFaultIn,
        Column::NotMoved,
    ];

    /// The variant with discriminant `v`.
    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.get(v as usize).copied()
    }

    /// The column's name in tables, JSON and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Column::CpuUserToKernel => "cpu_user_to_kernel",
            Column::CpuKernelToUser => "cpu_kernel_to_user",
            Column::CpuInKernel => "cpu_in_kernel",
            Column::ZeroCopy => "zero_copy",
            Column::DmaDirect => "dma_direct",
            Column::MmapFaultIn => "mmap_fault_in",
            Column::NotMoved => "not_moved",
        }
    }
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
    /// The description in 32 bits, for [`FdCacheEntry`].
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

/// Ledger cells kept inside a thread's entry ([`ThreadStats::cells`]).
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

/// Key of [`MAP_TRANSFERS`]: one cell of a thread's ledger.
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

/// Value of [`MAP_TRANSFERS`] and [`MAP_URING`]: calls and bytes of one ledger cell.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    /// Calls (or, for io_uring, completed operations), successful or not.
    pub calls: u64,
    /// Bytes moved by the successful ones.
    pub bytes: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// For the MSG_ZEROCOPY sends in this cell: how many there were (the kernel copies them
    /// when the peer is on this host, and they land in `cpu_user_to_kernel`).
    pub zerocopy_requested: u64,
    /// Log2 histogram of successful calls' byte counts (see [`HIST_BUCKETS`]).
    pub size_log2: [u64; HIST_BUCKETS],
}

impl Transfer {
    /// An empty cell.
    pub const ZERO: Transfer = Transfer {
        calls: 0,
        bytes: 0,
        errors: 0,
        zerocopy_requested: 0,
        size_log2: [0; HIST_BUCKETS],
    };
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

/// Key of [`MAP_URING`]: io_uring operations of one process by opcode and column.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UringKey {
    /// Process that owns the ring.
    pub tgid: u32,
    /// `IORING_OP_*` opcode.
    pub opcode: u16,
    /// [`Column`] discriminant.
    pub column: u16,
}

/// Index into [`MAP_LOST`]: why an event could not be recorded. Must stay 0.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// [`MAP_THREADS`] was full when a watched thread was created.
    ThreadTableFull = 0,
    /// [`MAP_TRANSFERS`] was full.
    TransferTableFull,
    /// [`MAP_WATCHED`] was full when a watched process forked.
    ProcessTableFull,
    /// [`MAP_URING`] was full.
    UringTableFull,
    /// A kernel structure could not be read (a file table or socket changed under us).
    ReadFailed,
}

/// Number of [`Lost`] reasons.
pub const LOST_REASONS: u32 = 5;

/// Names of the kernel-struct offsets zcprof reads, set from the running kernel's BTF before
/// the programs load. Each is a `u64` global in `zcprof-ebpf` (byte offset of the member).
pub mod offsets {
    /// `task_struct.pid`
    pub const TASK_PID: &str = "OFF_TASK_PID";
    /// `task_struct.tgid`
    pub const TASK_TGID: &str = "OFF_TASK_TGID";
    /// `task_struct.comm`
    pub const TASK_COMM: &str = "OFF_TASK_COMM";
    /// `task_struct.nvcsw`
    pub const TASK_NVCSW: &str = "OFF_TASK_NVCSW";
    /// `task_struct.files`
    pub const TASK_FILES: &str = "OFF_TASK_FILES";
    /// `files_struct.fdt`
    pub const FILES_FDT: &str = "OFF_FILES_FDT";
    /// `fdtable.max_fds`
    pub const FDT_MAX_FDS: &str = "OFF_FDT_MAX_FDS";
    /// `fdtable.fd`
    pub const FDT_FD: &str = "OFF_FDT_FD";
    /// Start of the 64-byte window of `struct fdtable` read at once (holds max_fds and fd).
    pub const FDT_WINDOW: &str = "OFF_FDT_WINDOW";
    /// Start of the 64-byte window of `struct file` read at once (holds f_inode, f_flags,
    /// f_mode, and private_data where it fits; older kernels keep that one farther away).
    pub const FILE_WINDOW: &str = "OFF_FILE_WINDOW";
    /// Bytes in each window.
    pub const WINDOW_BYTES: u64 = 64;
    /// `file.f_inode`
    pub const FILE_INODE: &str = "OFF_FILE_INODE";
    /// `file.f_flags`
    pub const FILE_FLAGS: &str = "OFF_FILE_FLAGS";
    /// `file.f_mode`
    pub const FILE_MODE: &str = "OFF_FILE_MODE";
    /// `file.private_data`
    pub const FILE_PRIVATE: &str = "OFF_FILE_PRIVATE";
    /// `inode.i_mode`
    pub const INODE_MODE: &str = "OFF_INODE_MODE";
    /// `socket.sk`
    pub const SOCKET_SK: &str = "OFF_SOCKET_SK";
    /// `sock.sk_flags` (holds `SOCK_ZEROCOPY`)
    pub const SOCK_FLAGS: &str = "OFF_SOCK_FLAGS";
    /// `sock.__sk_common.skc_family`
    pub const SOCK_FAMILY: &str = "OFF_SOCK_FAMILY";
    /// `sock.__sk_common.skc_daddr`
    pub const SOCK_DADDR: &str = "OFF_SOCK_DADDR";
    /// `sock.__sk_common.skc_v6_daddr`
    pub const SOCK_V6_DADDR: &str = "OFF_SOCK_V6_DADDR";
    /// `io_kiocb.opcode`
    pub const KIOCB_OPCODE: &str = "OFF_KIOCB_OPCODE";
    /// `io_kiocb.file`
    pub const KIOCB_FILE: &str = "OFF_KIOCB_FILE";
    /// `io_uring_cqe.res`
    pub const CQE_RES: &str = "OFF_CQE_RES";
    /// `io_uring_cqe.flags`
    pub const CQE_FLAGS: &str = "OFF_CQE_FLAGS";
    /// `task_struct.stack`
    pub const TASK_STACK: &str = "OFF_TASK_STACK";
    /// `pt_regs.orig_ax`: the syscall number in a task's saved user registers (where on its
    /// kernel stack those are, the programs learn from the first syscall they see).
    pub const PT_REGS_ORIG_AX: &str = "OFF_PT_REGS_ORIG_AX";
    /// Value of `enum sock_flags` member `SOCK_ZEROCOPY` (a bit number, not an offset).
    pub const SOCK_ZEROCOPY_BIT: &str = "SOCK_ZEROCOPY_BIT";
    /// Set to 1 to count every process on the host (`zcprof serve`): threads are entered by
    /// the kernel programs on their first syscall or fault instead of by `WATCHED`.
    pub const WATCH_ALL: &str = "WATCH_ALL";
    /// Benchmarks only: set to 1 and every program returns at once, which measures the cost
    /// of the hooks themselves (the floor zcprof's own work is compared with).
    pub const EMPTY_BODIES: &str = "EMPTY_BODIES";
    /// Set to 1 when every offset above came from BTF; 0 makes the programs fall back to
    /// syscall-only classes (no fd types).
    pub const HAVE_BTF: &str = "HAVE_BTF";
    /// `task_struct.__state` (`state` before 5.14): read for a switch's `prev_state` where
    /// `sched_switch` does not pass it (before 5.18).
    pub const TASK_STATE: &str = "OFF_TASK_STATE";
    /// `task_struct.signal`
    pub const TASK_SIGNAL: &str = "OFF_TASK_SIGNAL";
    /// `signal_struct.live`: the threads of the process not yet exiting; 0 at the exit of its
    /// last thread, which is how `group_dead` is known where `sched_process_exit` does not
    /// pass it (6.12 and older).
    pub const SIGNAL_LIVE: &str = "OFF_SIGNAL_LIVE";
}

/// Names of the globals that tell the programs which arguments a tracepoint passes on this
/// kernel (read from its BTF prototype, never guessed from the version: distributions
/// backport). Each is a `u64` global in `zcprof-ebpf`, 1 or 0.
pub mod prototypes {
    /// `sched_switch(bool preempt, prev, next, unsigned int prev_state)`: 1 when the 4th
    /// argument is there (5.18+); else the programs read `prev`'s state.
    pub const SWITCH_PREV_STATE: &str = "PROTO_SWITCH_PREV_STATE";
    /// `sched_process_exit(p, bool group_dead)`: 1 when the 2nd argument is there; else the
    /// programs read `p->signal->live`.
    pub const EXIT_GROUP_DEAD: &str = "PROTO_EXIT_GROUP_DEAD";
    /// `io_uring_complete(ctx, req, struct io_uring_cqe *cqe)`: 1 when the 3rd argument is the
    /// completion (6.18 has it); 0 when the completion comes as arguments
    /// `(ctx, req, u64 user_data, int res, unsigned cflags, ...)` (6.0 to 6.12 at least).
    /// Older kernels pass no request, so the opcode is unknown: not attached there.
    pub const URING_CQE: &str = "PROTO_URING_CQE";
}

/// A byte count as users write it: digits with an optional binary `K`, `M` or `G` suffix,
/// optionally followed by `B` or `iB`, in any case (`4096`, `64K`, `256M`, `1GiB`, `512B`).
/// `None` if malformed or too large. Shared by `zcprof workload` and `cargo xtask`.
pub fn parse_size(s: &str) -> Option<u64> {
    let b = s.trim().as_bytes();
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = core::str::from_utf8(&b[..digits]).ok()?.parse().ok()?;
    let suffix = &b[digits..];
    let (shift, used) = match suffix.first().map(u8::to_ascii_lowercase) {
        Some(b'k') => (10, 1),
        Some(b'm') => (20, 1),
        Some(b'g') => (30, 1),
        _ => (0, 0),
    };
    let tail = &suffix[used..];
    let tail_ok = match tail {
        [] => true,
        [b] => b.eq_ignore_ascii_case(&b'b'),
        [i, b] => used == 1 && i.eq_ignore_ascii_case(&b'i') && b.eq_ignore_ascii_case(&b'b'),
        _ => false,
    };
    if !tail_ok {
        return None;
    }
    n.checked_mul(1u64 << shift)
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all these types are `#[repr(C)]`, `Copy`, and made only of integers and arrays
    // of integers, so every bit pattern is valid and there is no uninitialised padding that
    // the kernel could not write.
    unsafe impl aya::Pod for Watch {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ThreadStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TransferKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Transfer {}
    // SAFETY: as above.
    unsafe impl aya::Pod for UringKey {}
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

    // The expectations are the seed's model (README, "The workloads: the seed's model,
    // measured") and the kernel's documented behaviour, cell by cell, not a copy of `classify`.
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
    fn sizes() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("3MB"), Some(3 << 20));
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size(" 4096 "), Some(4096));
        assert_eq!(parse_size("0"), Some(0));
        for bad in ["", "lots", "-1M", "1.5M", "4iB", "4KiBs", "99999999999G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn enums_round_trip() {
        for (i, s) in Syscall::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(Syscall::from_u16(i as u16), Some(*s));
        }
        for (i, c) in Column::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert_eq!(Syscall::from_u16(Syscall::ALL.len() as u16), None);
    }
}
