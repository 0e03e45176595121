//! The worker's tally: calls, bytes and errors per syscall name and phase, kept in memory
//! shared with the supervisor so that recording it costs the worker no syscall.

use std::ptr;

use crate::{die, errno, errstr};

/// Distinct syscall names one phase can hold.
const MAX_CELLS: usize = 48;
/// Phases of the tally: [`BEFORE`], [`WAIT`], [`MAIN`].
pub const PHASES: usize = 3;
/// Activity before the start file appears (`wait-then` only): must NOT be seen by an attach
/// that happens afterwards.
pub const BEFORE: usize = 0;
/// Polling for the start file (`wait-then` only).
pub const WAIT: usize = 1;
/// The measured action.
pub const MAIN: usize = 2;

/// The counts of one syscall name (or io_uring operation) in one phase.
#[derive(Clone, Copy)]
pub struct Cell {
    pub name: &'static str,
    pub calls: u64,
    pub bytes: u64,
    pub errors: u64,
    pub zerocopy: u64,
    /// Nanoseconds the worker measured around the calls (CLOCK_MONOTONIC through the vDSO:
    /// no syscall), for the actions that time them; 0 otherwise.
    pub ns: u64,
}

/// An unused cell.
const EMPTY: Cell = Cell {
    name: "",
    calls: 0,
    bytes: 0,
    errors: 0,
    zerocopy: 0,
    ns: 0,
};

/// The worker's tally, in a `MAP_SHARED` anonymous mapping shared with the supervisor.
pub struct Shared {
    pub cells: [[Cell; MAX_CELLS]; PHASES],
    pub used: [usize; PHASES],
    pub phase: usize,
    pub pages_touched: u64,
    pub file_pages_touched: u64,
    pub untracked: bool,
    pub error_len: usize,
    pub error: [u8; 2048],
}

impl Shared {
    /// The cell of `name` in the current phase, added if new.
    pub fn cell(&mut self, name: &'static str) -> Result<&mut Cell, String> {
        let p = self.phase;
        let used = self.used[p];
        if let Some(i) = self.cells[p][..used].iter().position(|c| c.name == name) {
            return Ok(&mut self.cells[p][i]);
        }
        if used == MAX_CELLS {
            return Err("tally full".into());
        }
        self.used[p] += 1;
        self.cells[p][used] = Cell { name, ..EMPTY };
        Ok(&mut self.cells[p][used])
    }

    /// A data-moving call that returned `ret` (bytes, or -1 with errno).
    pub fn xfer(&mut self, name: &'static str, ret: isize) -> Result<usize, String> {
        let e = errno();
        let c = self.cell(name)?;
        c.calls += 1;
        if ret < 0 {
            c.errors += 1;
            return Err(format!("{name}: {}", errstr(e)));
        }
        c.bytes += ret as u64;
        Ok(ret as usize)
    }

    /// A data-moving call that returned `ret` (< 0: failed) and moved `bytes`.
    pub fn xfer_n(&mut self, name: &'static str, ret: i64, bytes: u64) -> Result<(), String> {
        let e = errno();
        let c = self.cell(name)?;
        c.calls += 1;
        if ret < 0 {
            c.errors += 1;
            return Err(format!("{name}: {}", errstr(e)));
        }
        c.bytes += bytes;
        Ok(())
    }

    /// Any other syscall.
    pub fn call(&mut self, name: &'static str, ret: i64) -> Result<i64, String> {
        let e = errno();
        let c = self.cell(name)?;
        c.calls += 1;
        if ret < 0 {
            c.errors += 1;
            return Err(format!("{name}: {}", errstr(e)));
        }
        Ok(ret)
    }

    /// Records the worker's error message (truncated to fit).
    pub fn set_error(&mut self, msg: &str) {
        let b = msg.as_bytes();
        let n = b.len().min(self.error.len());
        self.error[..n].copy_from_slice(&b[..n]);
        self.error_len = n;
    }
}

/// A fresh, empty tally in a new shared anonymous mapping (the measured phase current).
pub fn map_shared() -> &'static mut Shared {
    let size = std::mem::size_of::<Shared>();
    // SAFETY: plain anonymous shared mapping, checked below.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        die(&format!("mmap shared tally: {}", errstr(errno())));
    }
    let p = p.cast::<Shared>();
    // SAFETY: p is a fresh, writable, suitably aligned mapping of the right size.
    unsafe {
        ptr::write(
            p,
            Shared {
                cells: [[EMPTY; MAX_CELLS]; PHASES],
                used: [0; PHASES],
                phase: MAIN,
                pages_touched: 0,
                file_pages_touched: 0,
                untracked: false,
                error_len: 0,
                error: [0; 2048],
            },
        );
        &mut *p
    }
}
