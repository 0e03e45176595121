//! Attribution (`--by-file`, `--by-peer`): adds a transfer's bytes to the object (file,
//! socket, pipe) it went through, per process and ledger column, and names each object the
//! first time it is seen. Off unless the loader sets `ATTRIBUTE`; the verifier then drops every
//! call.
//!
//! The work is in global functions, which the verifier checks once each on its own, however
//! many call sites the inlined ledger has (see `ledger::mmsg_bytes`).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
};
use zcprof_common::{
    Column, FdKind, Lost, MAX_OBJECTS, NAME_PARTS, ObjectBytes, ObjectId, ObjectKey, ObjectName,
    RECENT_OBJECTS, RecentObject, ThreadStats, fd_epoch_slot, recent_slot,
};

use crate::{
    files,
    kernel::{off, read},
    maps::{FD_EPOCH, lost},
};

/// Bytes per process, object and column. Preallocated: inserted from fault tracepoints too.
#[map(name = "OBJECTS")]
static OBJECTS: PerCpuHashMap<ObjectKey, ObjectBytes> =
    PerCpuHashMap::with_max_entries(MAX_OBJECTS, 0);

/// What did not fit in `OBJECTS`, per column.
#[map(name = "OBJECTS_OTHER")]
static OBJECTS_OTHER: PerCpuArray<ObjectBytes> =
    PerCpuArray::with_max_entries(Column::COUNT as u32, 0);

/// Per CPU, the descriptors bytes were attributed to last, and their bytes not yet in
/// `OBJECTS` (see [`zcprof_common::MAP_OBJECTS_RECENT`]).
#[map(name = "OBJECTS_RECENT")]
static RECENT: PerCpuArray<RecentObject> = PerCpuArray::with_max_entries(RECENT_OBJECTS, 0);

/// Each object's name, read once.
#[map(name = "OBJECT_NAMES")]
static OBJECT_NAMES: HashMap<ObjectId, ObjectName> = HashMap::with_max_entries(MAX_OBJECTS, 0);

/// An empty name in read-only data, inserted from there (too big for the stack).
#[unsafe(no_mangle)]
static NEW_OBJECT_NAME: ObjectName = ObjectName::EMPTY;

/// This CPU's key and first value under construction. Kept in a map, not on the stack: sys_exit
/// already uses most of the 512 bytes of stack that a program and the functions it calls may
/// use together on older kernels (5.10 counts them as one).
#[map(name = "OBJECT_SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// See [`SCRATCH`].
#[repr(C)]
struct Scratch {
    key: ObjectKey,
    first: ObjectBytes,
}

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Leaves, for [`attribute`], that the current call moved its bytes through the first `count`
/// of `fds` (sys_exit then adds the bytes, the column and the syscall).
#[inline(always)]
pub(crate) fn note(t: &mut ThreadStats, fds: [u64; 2], count: u16) {
    if off::attribute() {
        t.pending.fds = [fds[0] as u32, fds[1] as u32];
        t.pending.fd_count = count;
    }
}

/// Attributes the call pending in `t` (see [`PendingObjects`]) to its objects: its descriptors
/// whose recent slot is not theirs (see [`to_recent`]). Reads `t` afresh around each call
/// rather than keep its fields on a stack that has no room to spare (see [`take_slot`]).
#[inline(always)]
pub(crate) fn attribute(t: *const ThreadStats) {
    for i in 0..2 {
        // SAFETY: `t` is the thread's entry in map memory, valid for the program's run; read
        // volatile so that each field is loaded where it is used, not kept across calls.
        let (tgid, p, start) = unsafe {
            (
                core::ptr::read_volatile(&raw const (*t).tgid) as u64,
                core::ptr::read_volatile(&raw const (*t).pending),
                core::ptr::read_volatile(&raw const (*t).process_start),
            )
        };
        if (p.fd_count as usize) <= i {
            return;
        }
        let fd = p.fds[i] as u64;
        if take_slot(tgid, fd, p.column as u64, p.bytes, start) == 1 {
            name_fd(tgid, fd, p.column as u64);
        }
    }
}

/// Adds the call pending in `t` to the recent slots that hold its descriptors, and leaves in
/// `t.pending.fds` only those that are not held (to be walked by [`attribute`]); true if any is
/// left.
#[inline(always)]
pub(crate) fn to_recent(t: &mut ThreadStats) -> bool {
    let p = &mut t.pending;
    let (tgid, start) = (t.tgid as u64, t.process_start);
    let (column, bytes) = (p.column as u64, p.bytes);
    let mut left = 0;
    if p.fd_count > 0 && !add_to_recent(tgid, p.fds[0] as u64, column, bytes, start) {
        left = 1;
    }
    if p.fd_count > 1 && !add_to_recent(tgid, p.fds[1] as u64, column, bytes, start) {
        if left == 0 {
            p.fds[0] = p.fds[1];
        }
        left += 1;
    }
    p.fd_count = left as u16;
    left > 0
}

/// This CPU's recent slot for descriptor `fd` of process `tgid` in `column`, and the
/// descriptor's epoch now.
#[inline(always)]
fn recent(tgid: u64, fd: u64, column: u64) -> Option<(&'static mut RecentObject, u64)> {
    let epoch = *FD_EPOCH.get(fd_epoch_slot(tgid as u32, fd))?;
    let r = RECENT.get_ptr_mut(recent_slot(tgid as u32, fd, column as u16))?;
    // SAFETY: this CPU's slot; programs do not nest on a CPU for these hooks.
    Some((unsafe { &mut *r }, epoch))
}

/// Whether `r` holds the bytes of descriptor `fd` of the process (`tgid`, `start`) in `column`
/// as it is at `epoch`.
#[inline(always)]
fn holds(r: &RecentObject, tgid: u64, fd: u64, column: u64, start: u64, epoch: u64) -> bool {
    r.fd_plus_one == (fd as u32).wrapping_add(1)
        && r.key.tgid == tgid as u32
        && r.key.column == column as u16
        && r.epoch == epoch
        && r.process_start == start
}

/// Adds the call to its recent slot if the slot holds its descriptor; false if not.
#[inline(always)]
fn add_to_recent(tgid: u64, fd: u64, column: u64, bytes: u64, start: u64) -> bool {
    match recent(tgid, fd, column) {
        Some((r, epoch)) if holds(r, tgid, fd, column, start, epoch) => {
            r.pending.bytes += bytes;
            r.pending.calls += 1;
            true
        }
        _ => false,
    }
}

/// Adds `bytes` moved through the open file `file` (a `struct file *`) to its object.
#[inline(always)]
pub(crate) fn file(tgid: u32, file: u64, column: Column, bytes: i64) {
    if off::attribute() && bytes > 0 {
        attribute_file(tgid as u64, file, column as u64, bytes as u64);
    }
}

/// Adds `bytes` of the file behind `mapping` (a `struct address_space *`) to its object.
#[inline(always)]
pub(crate) fn mapping(tgid: u32, mapping: u64, column: Column, bytes: u64) {
    if off::attribute() && bytes > 0 {
        attribute_mapping(tgid as u64, mapping, column as u64, bytes);
    }
}

/// Gives descriptor `fd` of the current task (process `tgid`, started at `start`) this CPU's
/// recent slot for it in `column`, with the call's `bytes`: the slot's bytes go to `OBJECTS`
/// first, and the descriptor's object gets its `OBJECTS` entry. Returns 1 when the slot was
/// taken for a new object, which [`name_fd`] then names, 0 otherwise. The descriptor's file
/// table is read field by field rather than as one window: these functions run after
/// `sys_exit_attrib`'s count, whose stack 5.10 adds to theirs (512 bytes in all), so each keeps
/// its own small; they call no function of their own.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn take_slot(tgid: u64, fd: u64, column: u64, bytes: u64, start: u64) -> i64 {
    let Some((r, epoch)) = recent(tgid, fd, column) else {
        return 0;
    };
    if holds(r, tgid, fd, column, start, epoch) {
        r.pending.bytes += bytes;
        r.pending.calls += 1;
        return 0;
    }
    if r.pending.calls > 0 {
        flush(r);
    }
    r.fd_plus_one = 0;
    let inode = read::<u64>(files::small_current_file(fd), off::file_inode()).unwrap_or(0);
    if inode == 0 {
        return 0;
    }
    r.key = key_of(tgid, inode, column);
    r.other = u32::from(!has_entry(&r.key));
    r.fd_plus_one = (fd as u32).wrapping_add(1);
    r.epoch = epoch;
    r.process_start = start;
    r.pending.bytes = bytes;
    r.pending.calls = 1;
    i64::from(r.other == 0)
}

/// Names the object [`take_slot`] just gave the slot of descriptor `fd` (process `tgid`,
/// `column`), unless it has a name already. See [`take_slot`] for why it is a function of its
/// own.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn name_fd(tgid: u64, fd: u64, column: u64) -> i64 {
    let Some(r) = RECENT.get_ptr_mut(recent_slot(tgid as u32, fd, column as u16)) else {
        return 0;
    };
    // SAFETY: this CPU's slot; programs do not nest on a CPU for these hooks.
    let r = unsafe { &*r };
    let file = files::small_current_file(fd);
    let dentry = read::<u64>(file, off::file_dentry()).unwrap_or(0);
    name(&r.key, dentry, file);
    0
}

/// A zero value in read-only data: a 16-byte zero on the stack or a struct assignment becomes
/// a call to `memset`, a function whose frame 5.10 would add to the callers' (see
/// [`take_slot`]).
#[unsafe(no_mangle)]
static NO_BYTES: ObjectBytes = ObjectBytes { bytes: 0, calls: 0 };

/// Empties a recent slot's bytes, field by field (see [`NO_BYTES`]).
#[inline(always)]
fn empty(r: &mut RecentObject) {
    // SAFETY: valid, aligned fields of a slot in map memory. Volatile: two plain stores of
    // zero are merged into a `memset` call.
    unsafe {
        core::ptr::write_volatile(&raw mut r.pending.bytes, 0);
        core::ptr::write_volatile(&raw mut r.pending.calls, 0);
    }
}

/// Adds a recent slot's bytes to `OBJECTS` (or `[other]`) and empties it.
#[inline(always)]
fn flush(r: &mut RecentObject) {
    if r.other == 0 {
        if let Some(v) = OBJECTS.get_ptr_mut(&r.key) {
            // SAFETY: this CPU's value of a successful lookup; only this CPU writes it.
            let v = unsafe { &mut *v };
            v.bytes += r.pending.bytes;
            v.calls += r.pending.calls;
            empty(r);
            return;
        }
        if OBJECTS
            .insert(&r.key, &r.pending, BPF_NOEXIST as u64)
            .is_ok()
        {
            empty(r);
            return;
        }
        lost(Lost::ObjectTableFull);
    }
    if let Some(v) = OBJECTS_OTHER.get_ptr_mut(r.key.column as u32) {
        // SAFETY: as above.
        let v = unsafe { &mut *v };
        v.bytes += r.pending.bytes;
        v.calls += r.pending.calls;
    }
    empty(r);
}

/// The `OBJECTS` key of process `tgid`'s bytes through `inode` in `column`.
#[inline(always)]
fn key_of(tgid: u64, inode: u64, column: u64) -> ObjectKey {
    let mode = read::<u16>(inode, off::inode_mode()).unwrap_or(0);
    let ino = read::<u64>(inode, off::inode_ino()).unwrap_or(0);
    let dev = read::<u64>(inode, off::inode_sb())
        .and_then(|sb| read::<u32>(sb, off::sb_dev()))
        .unwrap_or(0);
    ObjectKey {
        tgid: tgid as u32,
        column: column as u16,
        kind: files::kind_of(mode) as u8,
        _pad: 0,
        id: ObjectId { dev, _pad: 0, ino },
    }
}

/// Makes sure `key` has its `OBJECTS` entry; false when the table is full (counted lost).
#[inline(always)]
fn has_entry(key: &ObjectKey) -> bool {
    if OBJECTS.get_ptr_mut(key).is_none()
        && OBJECTS.insert(key, &NO_BYTES, BPF_NOEXIST as u64).is_err()
    {
        lost(Lost::ObjectTableFull);
        return false;
    }
    true
}

/// See [`file`].
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn attribute_file(tgid: u64, file: u64, column: u64, bytes: u64) -> i64 {
    add_file(tgid, file, column, bytes)
}

#[inline(always)]
fn add_file(tgid: u64, file: u64, column: u64, bytes: u64) -> i64 {
    if file == 0 {
        return 0;
    }
    let Ok(inode) = read::<u64>(file, off::file_inode()) else {
        return 0;
    };
    let dentry = read::<u64>(file, off::file_dentry()).unwrap_or(0);
    add(tgid, inode, dentry, file, column, bytes)
}

/// See [`mapping`].
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn attribute_mapping(tgid: u64, mapping: u64, column: u64, bytes: u64) -> i64 {
    let Ok(inode) = read::<u64>(mapping, off::mapping_host()) else {
        return 0;
    };
    // The inode's first alias (hlist `i_dentry.first` points at a dentry's `d_u.d_alias`).
    let dentry = match read::<u64>(inode, off::inode_dentries()) {
        Ok(alias) if alias != 0 => alias.wrapping_sub(off::dentry_alias()),
        _ => 0,
    };
    add(tgid, inode, dentry, 0, column, bytes)
}

/// Adds to the object of `inode`; names it from `dentry` (a file) or `file`'s socket.
#[inline(always)]
fn add(tgid: u64, inode: u64, dentry: u64, file: u64, column: u64, bytes: u64) -> i64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch entry; programs do not nest on a CPU for these hooks.
    let scratch = unsafe { &mut *scratch };
    scratch.key = key_of(tgid, inode, column);
    if let Some(v) = OBJECTS.get_ptr_mut(&scratch.key) {
        // SAFETY: this CPU's value of a successful lookup; only this CPU writes it.
        let v = unsafe { &mut *v };
        v.bytes += bytes;
        v.calls += 1;
        return 0;
    }
    scratch.first = ObjectBytes { bytes, calls: 1 };
    if OBJECTS
        .insert(&scratch.key, &scratch.first, BPF_NOEXIST as u64)
        .is_err()
    {
        // Full (or inserted meanwhile by this CPU's... nothing: programs do not nest here).
        lost(Lost::ObjectTableFull);
        if let Some(v) = OBJECTS_OTHER.get_ptr_mut(column as u32) {
            // SAFETY: as above.
            let v = unsafe { &mut *v };
            v.bytes += bytes;
            v.calls += 1;
        }
        return 0;
    }
    name(&scratch.key, dentry, file);
    0
}

/// Names `key`'s object unless it has a name already: from `dentry` (a file) or `file`'s
/// socket.
#[inline(always)]
fn name(key: &ObjectKey, dentry: u64, file: u64) {
    let id = &key.id;
    if OBJECT_NAMES
        .insert(id, &NEW_OBJECT_NAME, BPF_NOEXIST as u64)
        .is_ok()
        && let Some(name) = OBJECT_NAMES.get_ptr_mut(id)
    {
        // SAFETY: the entry this program just inserted; a racing reader sees a name half
        // written for one read at worst.
        let name = unsafe { &mut *name };
        if key.kind == FdKind::Socket as u8 {
            name_socket(name, file);
        } else {
            name_path(name, dentry);
        }
    }
}

/// A file's path components, from its dentry up to its file system's root.
#[inline(always)]
fn name_path(name: &mut ObjectName, dentry: u64) {
    let mut d = dentry;
    for part in name.parts.iter_mut().take(NAME_PARTS) {
        if d == 0 {
            return;
        }
        if let Ok(s) = read::<u64>(d, off::dentry_name()) {
            // SAFETY: probe_read_kernel_str never faults: a bad pointer yields an error.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(s as *const u8, part) };
        }
        let parent = read::<u64>(d, off::dentry_parent()).unwrap_or(0);
        if parent == d {
            return; // The root, whose name is "/".
        }
        d = parent;
    }
}

/// A socket's family, type, addresses and ports.
#[inline(always)]
fn name_socket(name: &mut ObjectName, file: u64) {
    if file == 0 {
        return;
    }
    let Ok(socket) = read::<u64>(file, off::file_private()) else {
        return;
    };
    let Ok(sk) = read::<u64>(socket, off::socket_sk()) else {
        return;
    };
    let family = read::<u16>(sk, off::sock_family()).unwrap_or(0);
    name.family = family;
    name.sock_type = read::<u16>(sk, off::sock_type()).unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    name.local_port = read::<u16>(sk, off::sock_num()).unwrap_or(0);
    name.peer_port = u16::from_be(read::<u16>(sk, off::sock_dport()).unwrap_or(0));
    if family == AF_INET {
        let local = read::<[u8; 4]>(sk, off::sock_rcv_saddr()).unwrap_or([0; 4]);
        let peer = read::<[u8; 4]>(sk, off::sock_daddr()).unwrap_or([0; 4]);
        name.local_addr[..4].copy_from_slice(&local);
        name.peer_addr[..4].copy_from_slice(&peer);
    } else {
        name.local_addr = read::<[u8; 16]>(sk, off::sock_v6_rcv_saddr()).unwrap_or([0; 16]);
        name.peer_addr = read::<[u8; 16]>(sk, off::sock_v6_daddr()).unwrap_or([0; 16]);
    }
}
