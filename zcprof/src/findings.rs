//! Findings: what a summary's counts say the user could change, each with its evidence and
//! its estimated saving, computed from a [`Snapshot`] alone. Every rule, its threshold and how
//! its saving is computed is in docs/findings.md; a rule speaks only above its threshold.

use serde::Serialize;
use serde_json::{Value, json};
use zcprof_common::{Column, HIST_BUCKETS, Transfer, uring};

use crate::snapshot::{ProcessKey, ProcessView, Snapshot};

/// `small_io`: successful calls of one cell before the rule speaks.
pub const SMALL_IO_MIN_CALLS: u64 = 1000;
/// `small_io`: the median transfer must be below this many bytes.
pub const SMALL_IO_BELOW: u64 = 4096;
/// `small_io`: the transfer size its saving assumes instead (a common buffer size).
pub const BATCHED_BYTES: u64 = 64 << 10;

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The rule (`small_io`, `zerocopy_fell_back`).
    pub kind: &'static str,
    /// The process.
    pub pid: u32,
    /// Its start time (see [`ProcessKey`]).
    pub start_time_ns: u64,
    /// The numbers the finding rests on.
    pub evidence: Value,
    /// Bytes that would no longer be copied by the CPU.
    pub saving_bytes: u64,
    /// Mode switches that would no longer happen.
    pub saving_mode_switches: u64,
    /// The finding in one sentence, for the text summary.
    #[serde(skip)]
    pub text: String,
}

/// Every finding of `snap`, by process (pid order), then by rule.
pub fn findings(snap: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    for (&key, p) in &snap.processes {
        small_io(key, p, &mut out);
        zerocopy_fell_back(key, p, &mut out);
    }
    out
}

/// The upper bound of the bucket that holds the median of the successful calls counted in
/// `cell.size_log2` (bucket b holds sizes of b significant bits: at most 2^b - 1 bytes).
fn median_at_most(cell: &Transfer) -> Option<u64> {
    let calls: u64 = cell.size_log2.iter().sum();
    if calls == 0 {
        return None;
    }
    let mut seen = 0;
    for (b, n) in cell.size_log2.iter().enumerate().take(HIST_BUCKETS) {
        seen += n;
        if seen * 2 >= calls {
            return Some((1u64 << b) - 1);
        }
    }
    None
}

/// A cell of many calls whose median moves less than [`SMALL_IO_BELOW`]: its mode switches
/// dominate what it costs.
fn small_io(key: ProcessKey, p: &ProcessView, out: &mut Vec<Finding>) {
    for (&(syscall, column), cell) in &p.activity.transfers {
        // Faults and mappings are not calls a buffer size changes.
        if matches!(column, Column::NotMoved | Column::MmapFaultIn) {
            continue;
        }
        let ok_calls: u64 = cell.size_log2.iter().sum();
        let Some(median) = median_at_most(cell) else {
            continue;
        };
        if ok_calls < SMALL_IO_MIN_CALLS || median >= SMALL_IO_BELOW {
            continue;
        }
        let batched = cell.bytes.div_ceil(BATCHED_BYTES);
        let saving = 2 * ok_calls.saturating_sub(batched);
        out.push(Finding {
            kind: "small_io",
            pid: key.pid,
            start_time_ns: key.start,
            evidence: json!({
                "syscall": syscall.name(), "column": column.name(), "calls": ok_calls,
                "bytes": cell.bytes, "median_bytes_at_most": median,
            }),
            saving_bytes: 0,
            saving_mode_switches: saving,
            text: format!(
                "{}: {ok_calls} calls with a median of at most {median} B; calls of {} KiB \
                 (bigger buffers, readv/writev, io_uring batching) would save {saving} mode \
                 switches",
                syscall.name(),
                BATCHED_BYTES >> 10
            ),
        });
    }
}

/// Zero-copy sends that the kernel completed as copies (MSG_ZEROCOPY to a local peer, or an
/// io_uring SEND_ZC that zcprof classed as copied): the zero-copy request bought nothing.
fn zerocopy_fell_back(key: ProcessKey, p: &ProcessView, out: &mut Vec<Finding>) {
    let c = &p.activity.counts;
    // The kernel's own verdict on MSG_ZEROCOPY sends: at least half copied.
    if c.zerocopy_sends_copied > 0 && c.zerocopy_sends_copied * 2 >= c.zerocopy_sends_completed {
        out.push(Finding {
            kind: "zerocopy_fell_back",
            pid: key.pid,
            start_time_ns: key.start,
            evidence: json!({
                "via": "MSG_ZEROCOPY", "sends_completed": c.zerocopy_sends_completed,
                "sends_copied": c.zerocopy_sends_copied,
            }),
            saving_bytes: 0,
            saving_mode_switches: 0,
            text: format!(
                "MSG_ZEROCOPY: the kernel copied {} of {} completed sends (a local peer or a \
                 device without scatter-gather): the request bought nothing but completions to \
                 read",
                c.zerocopy_sends_copied, c.zerocopy_sends_completed
            ),
        });
    }
    for (&(opcode, column), cell) in &p.activity.uring {
        let zc = [uring::op::SEND_ZC, uring::op::SENDMSG_ZC].contains(&(opcode as u8));
        if !zc || column != Column::CpuUserToKernel || cell.bytes == 0 {
            continue;
        }
        out.push(Finding {
            kind: "zerocopy_fell_back",
            pid: key.pid,
            start_time_ns: key.start,
            evidence: json!({
                "via": format!("io_uring {}", uring::op_name(opcode)), "calls": cell.calls,
                "bytes": cell.bytes,
            }),
            saving_bytes: 0,
            saving_mode_switches: 0,
            text: format!(
                "io_uring {}: {} B sent to a local peer, which gets a copy all the same",
                uring::op_name(opcode),
                cell.bytes
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zcprof_common::{Syscall, size_bucket};

    fn cell(calls: u64, size: u64) -> Transfer {
        let mut t = Transfer {
            calls,
            bytes: calls * size,
            ..Transfer::ZERO
        };
        t.size_log2[size_bucket(size)] = calls;
        t
    }

    fn process(cells: &[(Syscall, Column, Transfer)]) -> Snapshot {
        let mut snap = Snapshot::default();
        let p = snap.processes.entry(ProcessKey::new(7, 1)).or_default();
        for (s, c, t) in cells {
            p.activity.transfers.insert((*s, *c), *t);
        }
        snap
    }

    #[test]
    fn small_io_speaks_above_its_thresholds_only() {
        let snap = process(&[
            (Syscall::Read, Column::CpuKernelToUser, cell(100_000, 1)),
            (Syscall::Write, Column::CpuUserToKernel, cell(999, 1)),
            (Syscall::Pread64, Column::CpuKernelToUser, cell(5_000, 4096)),
            (
                Syscall::Pwrite64,
                Column::CpuUserToKernel,
                cell(5_000, 4095),
            ),
        ]);
        let f = findings(&snap);
        let found: Vec<(&str, u64)> = f
            .iter()
            .map(|f| {
                (
                    f.evidence["syscall"].as_str().unwrap(),
                    f.saving_mode_switches,
                )
            })
            .collect();
        // 100,000 one-byte reads fit in two 64 KiB calls: 2 × 99,998 switches saved; 5,000
        // writes of 4,095 B in 313 calls: 2 × 4,687.
        assert_eq!(found, vec![("read", 199_996), ("pwrite64", 9_374)]);
    }

    #[test]
    fn zerocopy_fell_back_needs_the_kernel_s_verdict() {
        let mut snap = process(&[]);
        let p = snap.processes.values_mut().next().unwrap();
        p.activity.counts.zerocopy_sends_completed = 10;
        p.activity.counts.zerocopy_sends_copied = 4;
        assert!(findings(&snap).is_empty(), "fewer than half copied");
        let p = snap.processes.values_mut().next().unwrap();
        p.activity.counts.zerocopy_sends_copied = 5;
        let f = findings(&snap);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["sends_copied"], 5);
    }
}
