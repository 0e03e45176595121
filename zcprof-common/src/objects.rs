//! Attribution to files and peers (`--by-file`, `--by-peer`): the bytes each process moved
//! through each open object (a file, socket or pipe, known by its device and inode), by ledger
//! column, and each object's name as the kernel saw it the first time (a file's path
//! components, a socket's addresses), so that objects closed or processes gone by the time
//! user space reads still have a name.

/// Name of the per-CPU map of bytes per object (key: [`ObjectKey`], value: [`ObjectBytes`]).
pub const MAP_OBJECTS: &str = "OBJECTS";
/// Name of the map of object names (key: [`ObjectId`], value: [`ObjectName`]).
pub const MAP_OBJECT_NAMES: &str = "OBJECT_NAMES";
/// Name of the per-CPU array of what did not fit in [`MAP_OBJECTS`] (index: [`crate::Column`]
/// discriminant, value: [`ObjectBytes`]): the `[other]` rows.
pub const MAP_OBJECTS_OTHER: &str = "OBJECTS_OTHER";
/// Name of the per-CPU array of the descriptors bytes were attributed to last (index:
/// [`recent_slot`], value: [`RecentObject`]): their bytes are added up there and go to
/// [`MAP_OBJECTS`] when another descriptor takes the slot, so that a call on a descriptor seen
/// a moment ago costs no hash lookup and no walk of the file table. User space adds what is
/// still there to what it reads from [`MAP_OBJECTS`].
pub const MAP_OBJECTS_RECENT: &str = "OBJECTS_RECENT";
/// Slots of [`MAP_OBJECTS_RECENT`] per CPU.
pub const RECENT_OBJECTS: u32 = 64;

/// The [`MAP_OBJECTS_RECENT`] slot of descriptor `fd` of process `tgid` in ledger column `column`.
#[inline(always)]
pub const fn recent_slot(tgid: u32, fd: u64, column: u16) -> u32 {
    (tgid.wrapping_mul(0x9e37_79b1) ^ (fd as u32).wrapping_mul(8) ^ column as u32)
        & (RECENT_OBJECTS - 1)
}

/// Entries of [`MAP_OBJECTS`] and [`MAP_OBJECT_NAMES`] (the loader shrinks both to one entry
/// when attribution is off).
pub const MAX_OBJECTS: u32 = 8192;
/// Path components kept per file name (its own name first, then its parents').
pub const NAME_PARTS: usize = 12;
/// Bytes per path component (NUL-terminated; longer names are cut).
pub const NAME_PART_BYTES: usize = 32;

/// An object: the device (`super_block.s_dev`, the kernel's `MAJOR << 20 | MINOR`) and inode
/// number of what a descriptor or a mapping refers to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// Device of the object's file system.
    pub dev: u32,
    /// Padding, always 0.
    pub _pad: u32,
    /// Inode number.
    pub ino: u64,
}

/// Key of [`MAP_OBJECTS`]: one process's bytes through one object in one ledger column.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// Process.
    pub tgid: u32,
    /// [`crate::Column`] discriminant.
    pub column: u16,
    /// [`crate::FdKind`] discriminant: what the inode's mode says the object is.
    pub kind: u8,
    /// Padding, always 0.
    pub _pad: u8,
    /// The object.
    pub id: ObjectId,
}

/// Value of [`MAP_OBJECTS`] and [`MAP_OBJECTS_OTHER`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectBytes {
    /// Bytes moved.
    pub bytes: u64,
    /// Calls (or faults, or io_uring completions) that moved them.
    pub calls: u64,
}

/// Value of [`MAP_OBJECTS_RECENT`]: the bytes one process moved through one descriptor in one
/// column, on this CPU, since the slot was taken.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecentObject {
    /// Where the bytes belong (`key.column`: the column; `key.tgid`: the process).
    pub key: ObjectKey,
    /// The descriptor plus one; 0 for a free slot.
    pub fd_plus_one: u32,
    /// 1 when [`MAP_OBJECTS`] was full when the slot was taken: the bytes belong to the
    /// `[other]` row of the column ([`MAP_OBJECTS_OTHER`]), not to `key`.
    pub other: u32,
    /// The descriptor's epoch ([`crate::MAP_FD_EPOCH`]) when the slot was taken: once it moves
    /// on, the number may name another object.
    pub epoch: u64,
    /// The process's start ([`crate::ThreadStats::process_start`]): a new process with a reused
    /// pid does not inherit the slot.
    pub process_start: u64,
    /// Bytes and calls not yet added to [`MAP_OBJECTS`].
    pub pending: ObjectBytes,
}

/// Value of [`MAP_OBJECT_NAMES`]: what the kernel read of an object the first time a process
/// moved bytes through it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectName {
    /// For a socket: its address family (`AF_INET` 2, `AF_INET6` 10, `AF_UNIX` 1); 0 for
    /// anything else.
    pub family: u16,
    /// For a socket: its type (`SOCK_STREAM` 1, `SOCK_DGRAM` 2, ...).
    pub sock_type: u16,
    /// For an AF_INET/AF_INET6 socket: local port (host order).
    pub local_port: u16,
    /// For an AF_INET/AF_INET6 socket: peer port (host order), 0 if not connected.
    pub peer_port: u16,
    /// Local address: IPv4 in the first 4 bytes, or IPv6 (network order).
    pub local_addr: [u8; 16],
    /// Peer address, as `local_addr`.
    pub peer_addr: [u8; 16],
    /// For a file: up to [`NAME_PARTS`] path components, its own name first, then its parents'
    /// up to the root of its file system (`/`), each NUL-terminated; empty after the root. A
    /// path deeper than that ends without a `/` part.
    pub parts: [[u8; NAME_PART_BYTES]; NAME_PARTS],
}

impl ObjectName {
    /// Nothing read yet.
    pub const EMPTY: ObjectName = ObjectName {
        family: 0,
        sock_type: 0,
        local_port: 0,
        peer_port: 0,
        local_addr: [0; 16],
        peer_addr: [0; 16],
        parts: [[0; NAME_PART_BYTES]; NAME_PARTS],
    };
}

/// What the count leaves in a thread's entry for the attribution (`sys_exit_attrib`, after its
/// count, with `--by-file`/`--by-peer`) and for the program that runs after sys_exit on the same
/// event with the stack options (`sys_exit_detail`): the call just counted. The stack capture
/// is a program of its own because sys_exit has no stack to spare for it (5.10 allows 512
/// bytes for a program and the functions it calls together).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingObjects {
    /// Bytes moved, 0 when nothing is pending.
    pub bytes: u64,
    /// The descriptors the bytes went through (`fd_count` of them; 0 without attribution);
    /// after the count, those whose recent slot was not theirs.
    pub fds: [u32; 2],
    /// [`crate::Column`] discriminant.
    pub column: u16,
    /// 0, 1 or 2.
    pub fd_count: u16,
    /// [`crate::Syscall`] discriminant.
    pub syscall: u16,
    /// Padding, always 0.
    pub _pad: u16,
}

impl PendingObjects {
    /// Nothing pending.
    pub const NONE: PendingObjects = PendingObjects {
        bytes: 0,
        fds: [0; 2],
        column: 0,
        fd_count: 0,
        syscall: 0,
        _pad: 0,
    };
}
