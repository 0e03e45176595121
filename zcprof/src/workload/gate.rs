//! `--start-gate`: hold the transfer until a controller says go.
//!
//! A profiler that attaches to a running process (`zcprof attach --pid`) should see the transfer
//! and nothing of the setup. With the gate, the strategy does all its setup first (source file
//! generated and in the page cache, receiver forked and connected, file opened, pipes, rings and
//! buffers created and touched), then prints `ready` on stderr and blocks reading stdin; the
//! controller attaches the profiler and writes one line (`go\n`). Only then does the measured
//! transfer start.
//!
//! The `read`s of that line return after the profiler attached, so it sees them: they are
//! tallied as control calls (`control_syscalls.read`, with the line's bytes) and the tally stays
//! an exact account of what an attached profiler counts.

use std::io::Write as _;
use std::os::fd::AsFd;

use super::error::WorkloadError;
use super::sys;
use super::tally::Counters;

/// The line printed on stderr when everything is set up and the gate is waiting.
pub(crate) const READY: &str = "ready";

/// Say [`READY`] on stderr, then read stdin until a newline (or fail at end of file).
pub(crate) fn wait(c: &mut Counters) -> Result<(), WorkloadError> {
    map_own_files();
    // One write, made before the controller attaches (so no profiler counts it).
    std::io::stderr()
        .write_all(format!("{READY}\n").as_bytes())
        .map_err(|e| WorkloadError::syscall("write", "stderr (start gate)", e))?;
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let mut line = [0u8; 64];
    loop {
        let n = sys::read_control(c, fd, &mut line, "stdin (start gate)")?;
        if n == 0 {
            return Err(WorkloadError::StartGate(
                "stdin reached end of file before the go line",
            ));
        }
        if line[..n].contains(&b'\n') {
            return Ok(());
        }
    }
}

/// Maps in now every page of the program's own file mappings (its binary, the C library):
/// otherwise the code and constants the transfer runs for the first time fault in during it,
/// into zcprof's `mmap_fault_in` (on a cold page cache, a fresh VM, 64 KiB inside a `statx`
/// of the empty path, a constant). The profiled window then holds only the transfer's faults.
/// Best effort: `MADV_POPULATE_READ` is Linux 5.14+, older kernels leave the faults to the run
/// (and have no filemap tracepoints for zcprof to count them with).
fn map_own_files() {
    /// `MADV_POPULATE_READ` (linux/mman.h; not in every libc crate release).
    const MADV_POPULATE_READ: libc::c_int = 22;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        // ADDRESS PERMS OFFSET DEV INODE PATH
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [range, perms, _, _, _, path, ..] = fields[..] else {
            continue;
        };
        if !path.starts_with('/') || !perms.starts_with('r') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: advice on a mapping of this process that /proc just listed; POPULATE_READ
        // only faults pages in for reading and changes no content. A failure (an old kernel,
        // a range past the end of its file) leaves the faults to later, which is harmless.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end.saturating_sub(start),
                MADV_POPULATE_READ,
            )
        };
    }
}
