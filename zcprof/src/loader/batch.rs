//! Reading a whole map in a few system calls (`BPF_MAP_LOOKUP_BATCH`, Linux 5.6+, for hash
//! and array maps), where aya reads it one key at a time: two calls per entry (next key, then
//! lookup). At 10,000 threads that was 30,000 calls per collection, most of the daemon's
//! scrape time. aya 0.14 has no batch operation (nor does any crate built on aya; libbpf-rs
//! has one, but it would be a second loader for the same maps), so this is the one raw
//! `bpf(2)` call of zcprof.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use aya::{Pod, maps::MapError, sys::SyscallError};

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h, `enum bpf_cmd`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Where a batch read stopped: the kernel's cursor (a bucket index for a hash map, the last
/// index for an array; at most a key's size, and our keys are at most 16 bytes).
type Cursor = [u8; 16];

/// Reads map `fd` (keys `K`, values `V`) `chunk` entries at a time, calling `each` for every
/// entry; `more(last_key)` says whether to go on after a chunk (an array is read only as far
/// as it needs to be). Returns `Ok(false)` without calling `each` if the kernel has no batch
/// lookups for this map (then the caller reads it key by key).
pub fn lookup_batch<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    chunk: usize,
    mut more: impl FnMut(&K) -> bool,
    mut each: impl FnMut(&K, &V),
) -> Result<bool, MapError> {
    let chunk = chunk.max(1);
    let mut keys: Vec<K> = Vec::with_capacity(chunk);
    let mut values: Vec<V> = Vec::with_capacity(chunk);
    let mut cursor: Cursor = [0; 16];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cursor.as_ptr() as u64 },
            out_batch: cursor.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` for the map behind `fd`; the kernel
        // writes at most `count` keys of the map's key size (`K`) into `keys` and as many
        // values of its value size (`V`) into `values`, both with room for `chunk`, and at
        // most a key (or a u32 bucket index) into `cursor`, 16 bytes; it reads `cursor` the
        // same way. `in_batch` is the previous call's `out_batch` (an in-place read is fine:
        // the kernel copies it in before it writes it out).
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let errno = (r < 0).then(std::io::Error::last_os_error);
        let n = (attr.count as usize).min(chunk);
        match errno.as_ref().and_then(|e| e.raw_os_error()) {
            // ENOENT: the end of the map, with the last entries in this batch.
            None | Some(libc::ENOENT) => {}
            // No batch operations for this map type or kernel (EINVAL before 5.6,
            // ENOTSUPP = 524 inside the kernel).
            Some(libc::EINVAL | libc::EOPNOTSUPP | 524) if first => return Ok(false),
            Some(_) => {
                return Err(MapError::SyscallError(SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error: errno.unwrap_or_else(std::io::Error::last_os_error),
                }));
            }
        }
        // SAFETY: the kernel wrote `n` entries of each, and `K` and `V` are plain data.
        unsafe {
            keys.set_len(n);
            values.set_len(n);
        }
        for (k, v) in keys.iter().zip(&values) {
            each(k, v);
        }
        let go_on = errno.is_none() && n > 0 && keys.last().is_some_and(&mut more);
        // SAFETY: plain data, nothing to drop: forget them before the next batch overwrites.
        unsafe {
            keys.set_len(0);
            values.set_len(0);
        }
        if !go_on {
            return Ok(true);
        }
        first = false;
    }
}
