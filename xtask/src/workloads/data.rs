//! Typed views of the two JSON documents a run produces: the workload's tally (`zcprof workload`
//! on stdout) and zcprof's report (`zcprof attach --json` on stdout). Only the fields the
//! comparison reads are typed; the raw documents are kept for `--json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Calls of one system call, the bytes they moved, and how many of them failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Count {
    pub calls: u64,
    pub bytes: u64,
    /// Failed calls (counted in `calls` too); absent from a user-space copy tally.
    #[serde(default)]
    pub errors: u64,
}

impl std::ops::AddAssign for Count {
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.bytes += other.bytes;
        self.errors += other.errors;
    }
}

/// What the workload says it did (`zcprof/src/workload/tally.rs`).
#[derive(Debug, Clone, Deserialize)]
pub struct Tally {
    pub strategy: String,
    pub sender_pid: u32,
    pub receiver_pid: Option<u32>,
    /// Chunk size actually used (direct-io rounds it up to 4 KiB).
    pub buffer: u64,
    /// Payload bytes delivered (direct-io rounds the size up to 4 KiB).
    pub bytes: u64,
    pub syscalls: BTreeMap<String, Count>,
    pub control_syscalls: BTreeMap<String, Count>,
    pub io_uring_ops: BTreeMap<String, u64>,
    pub user_space_copies: Count,
    pub zerocopy: Option<ZeroCopy>,
    pub throughput_mib_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub receiver_bytes: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ZeroCopy {
    pub sends: u64,
    pub completions: u64,
    pub copied: bool,
}

impl Tally {
    /// Data-moving system calls of the transfer (every key of `syscalls`, including mmap,
    /// munmap and io_uring_enter).
    pub fn data_syscalls(&self) -> u64 {
        self.syscalls.values().map(|c| c.calls).sum()
    }

    /// Chunks of `buffer` bytes in the transfer.
    pub fn chunks(&self) -> u64 {
        self.bytes.div_ceil(self.buffer.max(1)).max(1)
    }
}

/// `zcprof attach --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    pub processes: Vec<Process>,
    /// Events the kernel tables could not hold, by reason: all must be 0.
    pub lost: BTreeMap<String, u64>,
    /// Whether the kernel's BTF let zcprof see descriptor types.
    pub btf: bool,
    /// What zcprof can count on this kernel.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// What zcprof found (docs/findings.md).
    #[serde(default)]
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether zcprof can count what capability `name` feeds on the kernel of the run (a
    /// report without the capability predates it: available).
    pub fn available(&self, name: &str) -> bool {
        self.capabilities
            .iter()
            .find(|c| c.name == name)
            .is_none_or(|c| c.state != "unavailable")
    }
}

/// One capability of zcprof on the kernel of the run.
#[derive(Debug, Clone, Deserialize)]
pub struct Capability {
    pub name: String,
    /// `exact`, `degraded` or `unavailable`.
    pub state: String,
}

/// One finding of zcprof's report.
#[derive(Debug, Clone, Deserialize)]
pub struct Finding {
    pub kind: String,
    pub pid: u32,
    pub tid: Option<u32>,
    pub evidence: serde_json::Value,
    pub saving_bytes: u64,
    pub saving_mode_switches: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub syscalls: u64,
    pub context_switches: ContextSwitches,
    pub page_faults: PageFaults,
    pub ledger: BTreeMap<String, u64>,
    pub transfers: Vec<Transfer>,
    pub io_uring: Vec<UringCell>,
    /// File bytes the kernel faulted in inside the process's syscalls (of `mmap_fault_in`).
    #[serde(default)]
    pub syscall_file_fault_bytes: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ContextSwitches {
    pub voluntary: u64,
    pub involuntary: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct PageFaults {
    pub minor: u64,
    pub major: u64,
}

/// One ledger cell: a system call's calls and bytes in one column.
#[derive(Debug, Clone, Deserialize)]
pub struct Transfer {
    pub syscall: String,
    pub column: String,
    pub calls: u64,
    pub bytes: u64,
    pub errors: u64,
    pub zerocopy_requested: u64,
}

/// One io_uring ledger cell: an opcode's completions and bytes in one column.
#[derive(Debug, Clone, Deserialize)]
pub struct UringCell {
    pub op: String,
    pub column: String,
    pub calls: u64,
    pub bytes: u64,
}

impl Process {
    /// Calls and bytes of `syscall`, summed over columns.
    pub fn syscall(&self, syscall: &str) -> Count {
        let mut total = Count::default();
        for t in self.transfers.iter().filter(|t| t.syscall == syscall) {
            total += Count {
                calls: t.calls,
                bytes: t.bytes,
                errors: t.errors,
            };
        }
        total
    }

    /// Completions and bytes of io_uring opcode `op`, summed over columns.
    pub fn uring_op(&self, op: &str) -> Count {
        let mut total = Count::default();
        for t in self.io_uring.iter().filter(|t| t.op == op) {
            total += Count {
                calls: t.calls,
                bytes: t.bytes,
                ..Count::default()
            };
        }
        total
    }

    /// Bytes of one ledger column (0 if absent).
    pub fn column(&self, column: &str) -> u64 {
        self.ledger.get(column).copied().unwrap_or(0)
    }
}
