//! The copy ledger, kernel side: turns one data-moving syscall (or file fault, or io_uring
//! completion) into calls and bytes in a ledger cell (thread, syscall, column).

use aya_ebpf::helpers::bpf_probe_read_user;
use zcprof_common::{
    Column, FD_CACHE, FdCacheEntry, FdInfo, FdKind, HIST_BUCKETS, INLINE_CELLS, InlineCell, Lost,
    SPILLED_CELLS, Syscall, THREAD_SPILLED_MANY, ThreadStats, Transfer, TransferKey, UringKey,
    classify, fd_epoch_slot, size_bucket,
    uring::{self, op},
};

use crate::{
    abi::{
        IP_RECVERR, IPV6_RECVERR, MAP_ANONYMOUS, MSG_ERRQUEUE, MSG_ZEROCOPY, PAGE_SIZE,
        SO_EE_CODE_ZEROCOPY_COPIED, SO_EE_ORIGIN_ZEROCOPY, SOL_IP, SOL_IPV6, arg,
    },
    files,
    maps::{FD_EPOCH, NEW_CELL, NEW_URING_CELL, TRANSFERS, URING, lost},
    objects,
};

/// What descriptor `fd` of the current thread is: from the thread's fd cache when the
/// descriptor has not changed since, else from the file table (and cached).
#[inline(always)]
fn fd_info(t: &mut ThreadStats, fd: u64) -> FdInfo {
    let epoch = match FD_EPOCH.get(fd_epoch_slot(t.tgid, fd)) {
        Some(e) => *e,
        None => return files::fd_info(fd),
    };
    let slot = &mut t.fd_cache[(fd as usize) & (FD_CACHE - 1)];
    let fd_plus_one = (fd as u32).wrapping_add(1);
    if slot.fd_plus_one == fd_plus_one && slot.epoch == epoch {
        return FdInfo::unpack(slot.info);
    }
    let info = files::fd_info(fd);
    if info.kind != FdKind::Unknown {
        *slot = FdCacheEntry {
            fd_plus_one,
            info: info.pack(),
            epoch,
        };
    }
    info
}

/// Records one returned data-moving syscall of thread `tid`, which took `took_ns` (0: not
/// timed). Returns the column and the call's result in bytes (or -errno), for the stacks.
#[inline(always)]
pub(crate) fn record_syscall(
    t: &mut ThreadStats,
    tid: u32,
    syscall: Syscall,
    regs: *const u64,
    ret: i64,
    took_ns: u64,
) -> (Column, i64) {
    use Syscall::*;
    // recvmmsg and sendmmsg return a message count: turn it into bytes here, at one place,
    // because the verifier walks every inlined copy of that loop (each costs ~60 ms at load).
    let ret = if syscall == Recvmmsg || syscall == Sendmmsg {
        mmsg_result(arg(regs, 1), ret)
    } else {
        ret
    };
    let call = Call { ret, took_ns };
    let column = match syscall {
        Read | Write | Pread64 | Pwrite64 | Readv | Writev | Preadv | Preadv2 | Pwritev
        | Pwritev2 | Recvfrom | Vmsplice => {
            let fd = fd_info(t, arg(regs, 0));
            let column = record(t, tid, syscall, fd, call, false);
            objects::note(t, [arg(regs, 0), 0], 1);
            column
        }
        Tee => {
            // tee(fd_in, fd_out, len, flags): both pipes.
            let fd = fd_info(t, arg(regs, 0));
            let column = record(t, tid, syscall, fd, call, false);
            objects::note(t, [arg(regs, 0), arg(regs, 1)], 2);
            column
        }
        Recvmsg => {
            // recvmsg(fd, msg, flags)
            if arg(regs, 2) & MSG_ERRQUEUE != 0 && ret >= 0 {
                zerocopy_notification(t, arg(regs, 1));
            }
            {
                let fd = fd_info(t, arg(regs, 0));
                let column = record(t, tid, syscall, fd, call, false);
                objects::note(t, [arg(regs, 0), 0], 1);
                column
            }
        }
        Recvmmsg => {
            let fd = fd_info(t, arg(regs, 0));
            let column = record(t, tid, syscall, fd, call, false);
            objects::note(t, [arg(regs, 0), 0], 1);
            column
        }
        Sendto | Sendmsg | Sendmmsg => {
            // sendto(fd, buf, len, flags, ..), sendmsg(fd, msg, flags), sendmmsg(fd, vec, n, flags)
            let flags = match syscall {
                Sendmsg => arg(regs, 2),
                _ => arg(regs, 3),
            };
            let fd = fd_info(t, arg(regs, 0));
            let column = record(t, tid, syscall, fd, call, flags & MSG_ZEROCOPY != 0);
            objects::note(t, [arg(regs, 0), 0], 1);
            column
        }
        CopyFileRange => {
            // copy_file_range(fd_in, off_in, fd_out, off_out, len, flags): the destination
            // decides the path; both files moved the bytes.
            let fd = fd_info(t, arg(regs, 2));
            let column = record(t, tid, syscall, fd, call, false);
            objects::note(t, [arg(regs, 0), arg(regs, 2)], 2);
            column
        }
        Sendfile => {
            // sendfile(out_fd, in_fd, offset, count): the destination decides the path; the
            // source file and the destination both moved the bytes.
            {
                let fd = fd_info(t, arg(regs, 0));
                let column = record(t, tid, syscall, fd, call, false);
                objects::note(t, [arg(regs, 1), arg(regs, 0)], 2);
                column
            }
        }
        Splice => {
            // splice(fd_in, off_in, fd_out, off_out, len, flags)
            let src = fd_info(t, arg(regs, 0));
            let dst = fd_info(t, arg(regs, 2));
            let column = classify(Splice, dst, src, false);
            add_to(t, tid, syscall, column, call, false);
            objects::note(t, [arg(regs, 0), arg(regs, 2)], 2);
            column
        }
        MmapFile | MmapAnon => {
            // mmap(addr, len, prot, flags, fd, off) returns an address or -errno.
            let kind = if arg(regs, 3) & MAP_ANONYMOUS != 0 {
                MmapAnon
            } else {
                MmapFile
            };
            let ok = !(-4095..0).contains(&ret);
            let ret = if ok {
                page_round(arg(regs, 1)) as i64
            } else {
                ret
            };
            add_to(t, tid, kind, Column::NotMoved, Call { ret, ..call }, false);
            Column::NotMoved
        }
        Munmap => {
            let ret = if ret == 0 {
                page_round(arg(regs, 1)) as i64
            } else {
                ret
            };
            add_to(
                t,
                tid,
                Munmap,
                Column::NotMoved,
                Call { ret, ..call },
                false,
            );
            Column::NotMoved
        }
        FileFault => Column::NotMoved,
    };
    (column, ret)
}

/// Reads a MSG_ZEROCOPY completion that recvmsg(MSG_ERRQUEUE) just returned: the kernel's own
/// word on whether it copied the sends `ee_info..=ee_data` after all.
#[inline(always)]
fn zerocopy_notification(t: &mut ThreadStats, msghdr: u64) {
    // struct msghdr: msg_control at 32, msg_controllen at 40 (x86-64 ABI).
    // SAFETY: probe_read_user never faults; a bad pointer yields an error.
    let Ok(control) = (unsafe { bpf_probe_read_user((msghdr + 32) as *const [u64; 2]) }) else {
        return;
    };
    // struct cmsghdr { u64 len; i32 level; i32 type } then struct sock_extended_err
    // { u32 ee_errno; u8 ee_origin, ee_type, ee_code, ee_pad; u32 ee_info; u32 ee_data }.
    const CMSG_AND_EE: u64 = 16 + 16;
    if control[0] == 0 || control[1] < CMSG_AND_EE {
        return;
    }
    // SAFETY: as above.
    let Ok(c) = (unsafe { bpf_probe_read_user(control[0] as *const [u32; 8]) }) else {
        return;
    };
    let (level, kind) = (c[2], c[3]);
    let ip_recverr =
        (level == SOL_IP && kind == IP_RECVERR) || (level == SOL_IPV6 && kind == IPV6_RECVERR);
    let origin = c[5] & 0xff;
    let code = (c[5] >> 16) & 0xff;
    if !ip_recverr || origin != SO_EE_ORIGIN_ZEROCOPY {
        return;
    }
    let (lo, hi) = (c[6], c[7]);
    let sends = hi.wrapping_sub(lo) as u64 + 1;
    t.counts.zerocopy_sends_completed += sends;
    if code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
        t.counts.zerocopy_sends_copied += sends;
    }
}

/// recvmmsg/sendmmsg return a message count; the bytes are the messages' `msg_len`.
#[inline(always)]
fn mmsg_result(vec: u64, ret: i64) -> i64 {
    if ret <= 0 {
        return ret;
    }
    mmsg_bytes(vec, ret)
}

/// The sum of the `msg_len` of the first `n` of the `struct mmsghdr` at `vec` (user memory).
///
/// A global function, the one call zcprof's programs make: the verifier checks a global
/// function once, on its own, where it checks an inlined loop once for every distinct state
/// that reaches it, and each of up to 1024 iterations on its own (older verifiers give up at a
/// million instructions). The call costs a few nanoseconds on a rare syscall.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn mmsg_bytes(vec: u64, n: i64) -> i64 {
    const MMSGHDR_SIZE: u64 = 64;
    const MSG_LEN_OFFSET: u64 = 56;
    // UIO_MAXIOV: the kernel caps vlen there.
    const MAX_MSGS: i64 = 1024;
    let n = if n > MAX_MSGS { MAX_MSGS } else { n };
    let mut total = 0u64;
    let mut i = 0i64;
    while i < n {
        let p = vec + (i as u64) * MMSGHDR_SIZE + MSG_LEN_OFFSET;
        // SAFETY: probe_read_user never faults; a bad pointer yields an error.
        if let Ok(len) = unsafe { bpf_probe_read_user(p as *const u32) } {
            total += len as u64;
        }
        i += 1;
    }
    total as i64
}

#[inline(always)]
fn page_round(len: u64) -> u64 {
    (len + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// One call as the ledger counts it.
#[derive(Clone, Copy)]
struct Call {
    /// Its result: bytes, or -errno.
    ret: i64,
    /// How long it took, 0 if not timed.
    took_ns: u64,
}

impl Call {
    /// A call that was not timed (a fault, an io_uring completion).
    const fn untimed(ret: i64) -> Call {
        Call { ret, took_ns: 0 }
    }
}

/// Records a transfer on descriptor `fd` classified by the shared rules; returns its column.
#[inline(always)]
fn record(
    t: &mut ThreadStats,
    tid: u32,
    syscall: Syscall,
    fd: FdInfo,
    call: Call,
    zerocopy_flag: bool,
) -> Column {
    let column = classify(syscall, fd, FdInfo::UNKNOWN, zerocopy_flag);
    let zc = zerocopy_flag && fd.so_zerocopy;
    if call.ret >= 0 {
        by_fd_kind(t, column, fd.kind, zc, call.ret as u64);
    }
    add_to(t, tid, syscall, column, call, zc);
    column
}

/// Counts the copies a relay by copy is made of: the ledger's cells do not say what kind of
/// descriptor their bytes came from or went to, and a finding (`file_to_socket_by_copy`)
/// needs it. Sends that asked for zero-copy are left out: `zerocopy_fell_back` speaks of them.
#[inline(always)]
fn by_fd_kind(t: &mut ThreadStats, column: Column, kind: FdKind, zc: bool, bytes: u64) {
    if column == Column::CpuKernelToUser && kind == FdKind::Regular {
        t.counts.file_read_copy_calls += 1;
        t.counts.file_read_copy_bytes += bytes;
    } else if column == Column::CpuUserToKernel && kind == FdKind::Socket && !zc {
        t.counts.socket_write_copy_bytes += bytes;
    }
}

/// Counts the pages `first..=last` of the file behind `mapping` as mapped in, except those the
/// thread's previous faults on the same file already counted: fault-around windows of
/// consecutive faults overlap, and the page a `->fault` handles after fault-around is inside
/// the window just counted. `in_data_call`: the kernel took the fault inside one of the
/// thread's data-moving syscalls (copying from or to a file mapping), not in its own code.
#[inline(always)]
pub(crate) fn file_pages_mapped(
    t: &mut ThreadStats,
    tid: u32,
    mapping: u64,
    first: u64,
    last: u64,
    in_data_call: bool,
) {
    if last < first {
        return;
    }
    let mut pages = last - first + 1;
    let (pf, pl) = (t.fault_first, t.fault_last);
    if t.fault_mapping == mapping {
        let lo = if first > pf { first } else { pf };
        let hi = if last < pl { last } else { pl };
        if hi >= lo {
            pages -= hi - lo + 1;
        }
    }
    if t.fault_mapping == mapping && first <= pl + 1 && last + 1 >= pf {
        // Overlapping or adjacent: remember the union.
        t.fault_first = if first < pf { first } else { pf };
        t.fault_last = if last > pl { last } else { pl };
    } else {
        t.fault_mapping = mapping;
        t.fault_first = first;
        t.fault_last = last;
    }
    if in_data_call {
        t.counts.syscall_file_fault_bytes += pages * PAGE_SIZE;
    }
    let column = record(
        t,
        tid,
        Syscall::FileFault,
        FdInfo::UNKNOWN,
        Call::untimed((pages * PAGE_SIZE) as i64),
        false,
    );
    objects::mapping(t.tgid, mapping, column, pages * PAGE_SIZE);
}

/// Adds `call` to the cell (tid, syscall, column): in
/// the thread's entry if the cell lives there or a slot is free, else in `TRANSFERS`.
/// mmap and munmap move no bytes and are rare, so they never take one of the few inline
/// slots: the dynamic loader's mmaps would otherwise push a program's hot read and write
/// cells out into the hash map.
#[inline(always)]
fn add_to(t: &mut ThreadStats, tid: u32, syscall: Syscall, column: Column, call: Call, zc: bool) {
    let key = InlineCell::key(syscall, column);
    let mut free = INLINE_CELLS;
    for i in 0..INLINE_CELLS {
        if column == Column::NotMoved {
            break;
        }
        if t.cells[i].key == key {
            add(&mut t.cells[i].cell, call, zc);
            return;
        }
        if t.cells[i].key == 0 && free == INLINE_CELLS {
            free = i;
        }
    }
    if free < INLINE_CELLS {
        t.cells[free].key = key;
        add(&mut t.cells[free].cell, call, zc);
        return;
    }
    let cell_key = key;
    let key = TransferKey::of_cell(t.tgid, tid, cell_key);
    let cell = match TRANSFERS.get_ptr_mut(&key) {
        Some(c) => c,
        None => {
            if TRANSFERS.insert(&key, &NEW_CELL, 0).is_err() {
                lost(Lost::TransferTableFull);
                return;
            }
            spilled(t, cell_key);
            match TRANSFERS.get_ptr_mut(&key) {
                Some(c) => c,
                None => return,
            }
        }
    };
    // SAFETY: the cell belongs to thread `tid`, which is the current thread: nobody else
    // writes it (see ThreadStats).
    add(unsafe { &mut *cell }, call, zc);
}

/// Notes that thread `t` has the cell `cell_key` in `TRANSFERS`, so that the cell can be
/// deleted with the thread; past [`SPILLED_CELLS`] the thread is left to user space.
#[inline(always)]
fn spilled(t: &mut ThreadStats, cell_key: u32) {
    for i in 0..SPILLED_CELLS {
        if t.spilled[i] == 0 {
            t.spilled[i] = cell_key;
            return;
        }
    }
    t.flags |= THREAD_SPILLED_MANY;
}

/// Adds io_uring completion `res` of process `tgid` (operation `opcode` on the `struct file`
/// at `file`) to its cell in `URING`.
pub(crate) fn record_uring(tgid: u32, opcode: u8, file: u64, cflags: u32, res: i32) {
    let column = uring_column(opcode, files::file_info(file), cflags);
    objects::file(tgid, file, column, res as i64);
    let key = UringKey {
        tgid,
        opcode: opcode as u16,
        column: column as u16,
    };
    let cell = match URING.get_ptr_mut(&key) {
        Some(c) => c,
        None => {
            if URING.insert(&key, &NEW_URING_CELL, 0).is_err() {
                lost(Lost::UringTableFull);
                return;
            }
            match URING.get_ptr_mut(&key) {
                Some(c) => c,
                None => return,
            }
        }
    };
    // SAFETY: per-CPU value of a successful lookup; this CPU is the only writer.
    let cell = unsafe { &mut *cell };
    add(cell, Call::untimed(res as i64), false);
}

/// Adds `call` to `cell`.
#[inline(always)]
fn add(cell: &mut Transfer, call: Call, zerocopy_requested: bool) {
    cell.calls += 1;
    if call.took_ns != 0 {
        cell.time_ns += call.took_ns;
        // As for the size bucket below.
        let b = size_bucket(call.took_ns);
        // SAFETY: reading a local through a valid reference.
        let b = unsafe { core::ptr::read_volatile(&b) } & (HIST_BUCKETS - 1);
        cell.time_log2[b] += 1;
    }
    let ret = call.ret;
    if ret < 0 {
        cell.errors += 1;
        return;
    }
    let bytes = ret as u64;
    cell.bytes += bytes;
    // LLVM proves the bucket < 32 from leading_zeros and drops any bound check, but the
    // verifier cannot follow that proof; a volatile read hides the value from LLVM so that
    // the mask stays in the code for the verifier to see.
    let b = size_bucket(bytes);
    // SAFETY: reading a local through a valid reference.
    let b = unsafe { core::ptr::read_volatile(&b) } & (HIST_BUCKETS - 1);
    cell.size_log2[b] += 1;
    if zerocopy_requested {
        cell.zerocopy_requested += 1;
    }
}

/// The ledger column of one completed io_uring operation on `file`.
#[inline(always)]
fn uring_column(opcode: u8, file: FdInfo, cflags: u32) -> Column {
    match opcode {
        op::READV | op::READ_FIXED | op::READ | op::READ_MULTISHOT | op::READV_FIXED => {
            classify(Syscall::Read, file, FdInfo::UNKNOWN, false)
        }
        op::WRITEV | op::WRITE_FIXED | op::WRITE | op::WRITEV_FIXED => {
            classify(Syscall::Write, file, FdInfo::UNKNOWN, false)
        }
        op::RECVMSG | op::RECV => Column::CpuKernelToUser,
        op::SENDMSG | op::SEND => Column::CpuUserToKernel,
        op::SEND_ZC | op::SENDMSG_ZC => {
            if cflags & uring::CQE_F_NOTIF != 0 {
                // The notification moves no bytes; the send's own CQE carried them.
                Column::NotMoved
            } else if file.local_peer {
                // io_uring's zero-copy sends need no SO_ZEROCOPY, but a local peer still
                // gets a copy.
                Column::CpuUserToKernel
            } else {
                Column::ZeroCopy
            }
        }
        op::SPLICE | op::TEE => Column::ZeroCopy,
        _ => Column::NotMoved,
    }
}
