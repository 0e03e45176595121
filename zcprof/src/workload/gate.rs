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
