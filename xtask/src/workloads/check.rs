//! The comparison of one run: the workload's tally and the model against zcprof's report.
//!
//! Exact checks (any difference is a mismatch):
//! - every system call of the tally (data and control) that zcprof itemises: calls and bytes
//!   summed over columns, plus the workload's own output (its tally printed on stdout, after the
//!   transfer, which zcprof also sees);
//! - no other data-moving cell in the sender's ledger;
//! - io_uring operations by opcode (and the SEND_ZC notifications, zcprof's `nop` completions);
//! - each byte-moving ledger column of the sender (control calls and output removed) against the
//!   model's multiple of the bytes sent, and the CPU-copied total against the model's copies;
//! - the receiver's `cpu_kernel_to_user` against the bytes it counted;
//! - zero-copy facts the kernel reported (copied over loopback; zerocopy_requested);
//! - zcprof's findings: the sender's exactly those the strategy must give (`findings.rs`).
//!
//! - the sender's `mmap_fault_in` and the part of it inside its syscalls
//!   (`syscall_file_fault_bytes`), and the receiver's part inside its syscalls: mmap-write's
//!   writes fault in the whole file, nothing else maps a file (the workload maps its own code in
//!   before the start gate), where the kernel has the filemap tracepoints;
//!
//! Shown but not checked: page faults, context
//! switches. Mode switches against the model's classic counts are notes: their unit (a chunk, a
//! call) is not always the workload's (`docs/model.md`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::data::{Count, Process, Report, Tally};
use super::model::{
    self, CHECKED_COLUMNS, CPU_COLUMNS, CPU_KERNEL_TO_USER, CPU_USER_TO_KERNEL, MMAP_FAULT_IN,
    Model, NOT_MOVED,
};

pub const MIB: f64 = (1u64 << 20) as f64;

/// One comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub what: String,
    pub expected: String,
    pub measured: String,
    pub ok: bool,
    /// zcprof measured less than expected (a count below, something absent): what events the
    /// kernel skipped could explain, where nothing else could.
    #[serde(skip)]
    pub short: bool,
}

impl Check {
    fn eq(what: impl Into<String>, expected: u64, measured: u64) -> Self {
        Self {
            what: what.into(),
            expected: expected.to_string(),
            measured: measured.to_string(),
            ok: expected == measured,
            short: measured < expected,
        }
    }

    fn at_least(what: impl Into<String>, minimum: u64, measured: u64) -> Self {
        Self {
            what: what.into(),
            expected: format!(">= {minimum}"),
            measured: measured.to_string(),
            ok: measured >= minimum,
            short: measured < minimum,
        }
    }

    /// Whether a process zcprof should have seen is in its report (absent: short).
    fn present(what: impl Into<String>, present: bool) -> Self {
        Self {
            short: !present,
            ..Self::fact(what, true, present)
        }
    }

    fn fact(what: impl Into<String>, expected: impl ToString, measured: impl ToString) -> Self {
        let (expected, measured) = (expected.to_string(), measured.to_string());
        Self {
            what: what.into(),
            ok: expected == measured,
            expected,
            measured,
            short: false,
        }
    }

    /// `what: expected E, zcprof M (M - E)`, for the mismatch list.
    pub fn describe(&self) -> String {
        let diff = match (self.expected.parse::<i128>(), self.measured.parse::<i128>()) {
            (Ok(e), Ok(m)) => format!(" ({:+})", m - e),
            _ => String::new(),
        };
        format!(
            "{}: expected {}, measured {}{diff}",
            self.what, self.expected, self.measured
        )
    }
}

/// Numbers derived from a run, for the table, the chart and `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Derived {
    /// Bytes sent (the tally's, after direct-io's rounding).
    pub bytes: u64,
    pub buffer: u64,
    pub chunks: u64,
    /// The transfer's data-moving system calls (the tally's).
    pub data_syscalls: u64,
    /// 2 × data syscalls / chunks.
    pub mode_switches_per_chunk: f64,
    pub mode_switches_per_mib: f64,
    /// What the workload did after the transfer (zcprof sees it, the tally cannot list it).
    pub epilogue: Epilogue,
    /// The sender's ledger columns less the control calls' and the output's bytes.
    pub columns: BTreeMap<String, u64>,
    /// Bytes the kernel copied for the sender (the CPU columns of `columns`).
    pub kernel_copied: u64,
    /// Bytes copied in user space (the tally's).
    pub user_copied: u64,
    /// (kernel + user copied) / bytes.
    pub copies_per_byte: f64,
    /// (kernel + user copied) / MiB sent.
    pub copied_per_mib: f64,
    /// The receiver's cpu_kernel_to_user (its reads of the socket).
    pub receiver_kernel_to_user: Option<u64>,
    pub sender_syscalls: u64,
    pub context_switches: (u64, u64),
    pub page_faults: (u64, u64),
    pub throughput_mib_s: f64,
    pub cpu_s: f64,
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub derived: Derived,
    pub checks: Vec<Check>,
    /// System calls of the tally that zcprof counts but does not itemise.
    pub not_itemised: Vec<String>,
    /// Differences from the model's classic counts that are not errors, with the reason.
    pub notes: Vec<String>,
    /// zcprof's findings about the run, one line each (kind, thread, saving, evidence).
    pub findings: Vec<String>,
}

impl Evaluation {
    pub fn mismatches(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
}

/// What the workload process does after its transfer that zcprof itemises and the tally cannot
/// contain: printing the tally, and exiting.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Epilogue {
    /// `write`s of the tally to stdout.
    pub output: Count,
    /// The `munmap` of the main thread's alternate signal stack by Rust's runtime at exit.
    pub exit_munmap: Count,
}

impl Epilogue {
    /// The epilogue of a workload that printed `stdout`, on this machine.
    pub fn of(stdout: &str) -> Self {
        Self {
            output: output_writes(stdout),
            exit_munmap: exit_munmap(),
        }
    }
}

/// Calls and bytes of `println!("{json}")` for a pretty-printed JSON document `out` (with the
/// final newline): std's line-buffered stdout writes everything up to the document's last
/// newline in one `write`, then buffers the closing `}` until the final newline: 2 writes (1 if
/// the document is a single line).
pub fn output_writes(out: &str) -> Count {
    let body = out.strip_suffix('\n').unwrap_or(out);
    let calls = if out.is_empty() {
        0
    } else if body.contains('\n') {
        2
    } else {
        1
    };
    Count {
        calls,
        bytes: out.len() as u64,
        errors: 0,
    }
}

/// `AT_MINSIGSTKSZ` (`<linux/auxvec.h>`; not in the libc crate).
const AT_MINSIGSTKSZ: libc::c_ulong = 51;

/// Rust's runtime gives the main thread an alternate signal stack for its stack-overflow
/// handler: one mapping of max(`SIGSTKSZ`, the kernel's `AT_MINSIGSTKSZ`) bytes plus a guard
/// page, unmapped by `std::process::exit` (one `munmap`, after the tally is printed). The
/// workload is the zcprof binary on this machine, so the sizes are this process's.
pub fn exit_munmap() -> Count {
    // SAFETY: sysconf and getauxval have no preconditions (getauxval returns 0 if absent).
    let (page, min) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE).max(4096) as u64,
            libc::getauxval(AT_MINSIGSTKSZ),
        )
    };
    let stack = (libc::SIGSTKSZ as u64).max(min);
    Count {
        calls: 1,
        bytes: (stack + page).next_multiple_of(page),
        errors: 0,
    }
}

/// The failed calls zcprof counted beyond the workload's own failed calls, when that explains
/// every call beyond the workload's and no byte differs: calls the kernel interrupted and
/// restarted (`-ERESTARTSYS` at the syscall's exit), which the workload cannot see and zcprof,
/// like strace, counts as failed calls. 0 otherwise, so that the check of calls still fails.
fn restarted_calls(expected: Count, measured: Count) -> u64 {
    let extra_calls = measured.calls.saturating_sub(expected.calls);
    let extra_errors = measured.errors.saturating_sub(expected.errors);
    if extra_calls > 0 && extra_calls == extra_errors && measured.bytes == expected.bytes {
        extra_calls
    } else {
        0
    }
}

pub fn evaluate(model: &Model, tally: &Tally, report: &Report, epilogue: Epilogue) -> Evaluation {
    let mut checks = Vec::new();
    let mut notes = Vec::new();
    let size = tally.bytes;

    for (reason, n) in &report.lost {
        checks.push(Check::eq(format!("zcprof lost events ({reason})"), 0, *n));
    }
    checks.push(Check::fact(
        "zcprof saw descriptor types (BTF)",
        true,
        report.btf,
    ));
    checks.push(Check::eq(
        "bytes the receiver counted",
        size,
        tally.receiver_bytes,
    ));

    let empty = Process {
        pid: 0,
        syscalls: 0,
        context_switches: super::data::ContextSwitches {
            voluntary: 0,
            involuntary: 0,
        },
        page_faults: super::data::PageFaults { minor: 0, major: 0 },
        ledger: BTreeMap::new(),
        transfers: Vec::new(),
        io_uring: Vec::new(),
        syscall_file_fault_bytes: 0,
    };
    let sender = report.processes.iter().find(|p| p.pid == tally.sender_pid);
    checks.push(Check::present(
        format!("sender (pid {}) in zcprof's report", tally.sender_pid),
        sender.is_some(),
    ));
    let sender = sender.unwrap_or(&empty);

    // 1. System calls, exactly.
    let output = epilogue.output;
    let mut names: BTreeSet<&str> = tally
        .syscalls
        .keys()
        .chain(tally.control_syscalls.keys())
        .map(String::as_str)
        .collect();
    names.insert("write"); // the output, whatever the strategy
    let mut not_itemised = Vec::new();
    let mut itemised = BTreeSet::new();
    let mut expected_calls = output.calls + epilogue.exit_munmap.calls;
    for name in names {
        let mut expected = Count::default();
        for map in [&tally.syscalls, &tally.control_syscalls] {
            if let Some(c) = map.get(name) {
                expected += *c;
            }
        }
        let Some(zname) = model::zcprof_syscall(name) else {
            not_itemised.push(name.to_owned());
            expected_calls += expected.calls;
            continue;
        };
        let mut extra = Count::default();
        if zname == "write" {
            extra = output;
        }
        if zname == "munmap" {
            extra = epilogue.exit_munmap;
        }
        expected_calls += expected.calls;
        expected += extra;
        itemised.insert(zname);
        let measured = sender.syscall(zname);
        let label = if zname == name {
            name.to_owned()
        } else {
            format!("{name} ({zname})")
        };
        let restarted = restarted_calls(expected, measured);
        if restarted > 0 {
            notes.push(format!(
                "{label}: {restarted} failed call(s) the workload never saw, not counted as its \
                 calls: the kernel interrupted a blocking call (for a signal, or for work it \
                 queued on the task, as io_uring does) and restarted it"
            ));
        }
        checks.push(Check::eq(
            format!("{label} calls"),
            expected.calls,
            measured.calls - restarted,
        ));
        checks.push(Check::eq(
            format!("{label} bytes"),
            expected.bytes,
            measured.bytes,
        ));
    }
    checks.push(Check::at_least(
        "sender syscalls (the tally's data, control and output calls, at least)",
        expected_calls,
        sender.syscalls,
    ));
    for t in &sender.transfers {
        let moves_data = t.column != NOT_MOVED && t.column != MMAP_FAULT_IN;
        if moves_data && !itemised.contains(t.syscall.as_str()) && t.calls > 0 {
            checks.push(Check::fact(
                format!("{} in {} (not in the tally)", t.syscall, t.column),
                "none",
                format!("{} calls, {} bytes", t.calls, t.bytes),
            ));
        }
    }

    // 2. io_uring operations.
    for (op, n) in &tally.io_uring_ops {
        let measured = sender.uring_op(op);
        checks.push(Check::eq(
            format!("io_uring {op} completions"),
            *n,
            measured.calls,
        ));
        if matches!(op.as_str(), "read" | "send" | "send_zc") {
            checks.push(Check::eq(
                format!("io_uring {op} bytes"),
                size,
                measured.bytes,
            ));
        }
    }
    if !tally.io_uring_ops.is_empty() {
        // SEND_ZC's notification CQEs: zcprof shows them as `nop` completions that move nothing.
        let notifications = tally.zerocopy.map_or(0, |z| z.completions);
        checks.push(Check::eq(
            "io_uring SEND_ZC notifications (nop completions)",
            notifications,
            sender.uring_op("nop").calls,
        ));
    }
    for cell in &sender.io_uring {
        if cell.op != "nop" && !tally.io_uring_ops.contains_key(&cell.op) {
            checks.push(Check::fact(
                format!("io_uring {} in {} (not in the tally)", cell.op, cell.column),
                "none",
                format!("{} completions, {} bytes", cell.calls, cell.bytes),
            ));
        }
    }

    // 3. Ledger columns against the model.
    let control_bytes: u64 = tally.control_syscalls.values().map(|c| c.bytes).sum();
    let mut columns = BTreeMap::new();
    for column in CHECKED_COLUMNS.into_iter().chain([MMAP_FAULT_IN]) {
        let mut bytes = sender.column(column);
        if column == CPU_KERNEL_TO_USER {
            // The control reads (the receiver's count, the start gate's line).
            bytes = bytes.saturating_sub(control_bytes);
        }
        if column == CPU_USER_TO_KERNEL {
            bytes = bytes.saturating_sub(output.bytes);
        }
        columns.insert(column.to_owned(), bytes);
    }
    for column in CHECKED_COLUMNS {
        checks.push(Check::eq(
            format!("{column} bytes (transfer)"),
            model.expected(column, size),
            columns[column],
        ));
    }
    // The workload maps its own code in before the start gate: the faults the window holds
    // are the transfer's.
    if report.available(MMAP_FAULT_IN) {
        let mapped = model.mapped_by_faults * size;
        checks.push(Check::eq(
            format!("{MMAP_FAULT_IN} bytes (transfer)"),
            mapped,
            columns[MMAP_FAULT_IN],
        ));
        checks.push(Check::eq(
            format!("{MMAP_FAULT_IN} inside the sender's syscalls (syscall_file_fault_bytes)"),
            mapped,
            sender.syscall_file_fault_bytes,
        ));
    } else {
        notes.push(format!(
            "syscall_file_fault_bytes not checked: {MMAP_FAULT_IN} is unavailable on this kernel"
        ));
    }
    let kernel_copied: u64 = CPU_COLUMNS.iter().map(|c| columns[*c]).sum();
    checks.push(Check::eq(
        format!("CPU-copied bytes ({} per byte sent)", model.kernel_copies()),
        model.kernel_copies() * size,
        kernel_copied,
    ));
    let user_copied = tally.user_space_copies.bytes;
    checks.push(Check::eq(
        "user-space copied bytes (tally)",
        model.user_copies * size,
        user_copied,
    ));
    if let Some(copied) = model.zerocopy_copied {
        checks.push(Check::fact(
            "kernel reported zero-copy sends copied (loopback)",
            copied,
            tally
                .zerocopy
                .map_or_else(|| "no zero-copy sends".to_owned(), |z| z.copied.to_string()),
        ));
    }
    if let Some(zc) = tally
        .zerocopy
        .filter(|_| tally.syscalls.contains_key("sendmsg"))
    {
        let requested: u64 = sender
            .transfers
            .iter()
            .filter(|t| t.syscall == "sendmsg")
            .map(|t| t.zerocopy_requested)
            .sum();
        checks.push(Check::eq(
            "sendmsg MSG_ZEROCOPY sends (zerocopy_requested)",
            zc.sends,
            requested,
        ));
    }

    // 4. The receiver.
    let receiver_kernel_to_user = tally.receiver_pid.map(|pid| {
        let r = report.processes.iter().find(|p| p.pid == pid);
        checks.push(Check::present(
            format!("receiver (pid {pid}) in zcprof's report"),
            r.is_some(),
        ));
        if report.available(MMAP_FAULT_IN) {
            checks.push(Check::eq(
                format!(
                    "{MMAP_FAULT_IN} inside the receiver's syscalls (syscall_file_fault_bytes)"
                ),
                0,
                r.map_or(0, |r| r.syscall_file_fault_bytes),
            ));
        }
        let bytes = r.map_or(0, |r| r.column(CPU_KERNEL_TO_USER));
        checks.push(Check::eq(
            "receiver cpu_kernel_to_user bytes",
            tally.receiver_bytes,
            bytes,
        ));
        bytes
    });

    // 5. The copy model's classic counts.
    let mib = size as f64 / MIB;
    let chunks = tally.chunks();
    let data_syscalls = tally.data_syscalls();
    let mode_switches_per_chunk = 2.0 * data_syscalls as f64 / chunks as f64;
    let copies_per_byte = (kernel_copied + user_copied) as f64 / size.max(1) as f64;
    if let Some(classic) = model.classic {
        checks.push(Check::eq(
            format!(
                "classic: {} CPU copies per chunk (bytes copied)",
                classic.copies
            ),
            classic.copies_per_byte * size,
            kernel_copied + user_copied,
        ));
        if let Some(per_chunk) = classic.mode_switches_per_chunk {
            let measured = 2 * data_syscalls;
            if measured != per_chunk * chunks {
                notes.push(format!(
                    "mode switches: the classic count is {} per chunk, the workload made {:.3} \
                     per chunk ({measured} for {chunks} chunks){}",
                    classic.mode_switches,
                    mode_switches_per_chunk,
                    classic
                        .mode_switch_note
                        .map_or_else(String::new, |n| format!(": {n}")),
                ));
            }
        }
    }

    // 6. zcprof's findings against those the strategy must give.
    let (finding_facts, finding_notes) = super::findings::check(tally, report);
    checks.extend(
        finding_facts
            .into_iter()
            .map(|(what, expected, found)| Check::fact(what, expected, found)),
    );
    notes.extend(finding_notes);

    Evaluation {
        findings: super::findings::describe(tally, report),
        derived: Derived {
            bytes: size,
            buffer: tally.buffer,
            chunks,
            data_syscalls,
            mode_switches_per_chunk,
            mode_switches_per_mib: 2.0 * data_syscalls as f64 / mib,
            epilogue,
            columns,
            kernel_copied,
            user_copied,
            copies_per_byte,
            copied_per_mib: (kernel_copied + user_copied) as f64 / mib,
            receiver_kernel_to_user,
            sender_syscalls: sender.syscalls,
            context_switches: (
                sender.context_switches.voluntary,
                sender.context_switches.involuntary,
            ),
            page_faults: (sender.page_faults.minor, sender.page_faults.major),
            throughput_mib_s: tally.throughput_mib_s,
            cpu_s: tally.cpu_user_s + tally.cpu_sys_s,
        },
        checks,
        not_itemised,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_call_is_a_failed_call_the_workload_never_saw() {
        let tally = Count {
            calls: 2,
            bytes: 11,
            errors: 0,
        };
        let restarted = Count {
            calls: 3,
            bytes: 11,
            errors: 1,
        };
        assert_eq!(restarted_calls(tally, restarted), 1);
        // An extra call that moved bytes, or one that did not fail, is not a restart.
        let moved = Count {
            bytes: 12,
            ..restarted
        };
        assert_eq!(restarted_calls(tally, moved), 0);
        let succeeded = Count {
            errors: 0,
            ..restarted
        };
        assert_eq!(restarted_calls(tally, succeeded), 0);
        // Failures the workload saw itself (EINTR, retried) are its calls.
        let seen = Count {
            calls: 3,
            bytes: 11,
            errors: 1,
        };
        assert_eq!(restarted_calls(seen, seen), 0);
    }

    #[test]
    fn output_write_count() {
        assert_eq!(
            output_writes("{\n  \"a\": 1\n}\n"),
            Count {
                calls: 2,
                bytes: 13,
                errors: 0
            }
        );
        assert_eq!(
            output_writes("{}\n"),
            Count {
                calls: 1,
                bytes: 3,
                errors: 0
            }
        );
        assert_eq!(output_writes(""), Count::default());
    }

    #[test]
    fn exit_munmap_is_the_signal_stack() {
        let m = exit_munmap();
        assert_eq!(m.calls, 1);
        // At least SIGSTKSZ and a guard page, in whole pages.
        assert!(m.bytes >= 8192 + 4096);
        assert_eq!(m.bytes % 4096, 0);
    }

    #[test]
    fn a_shortfall_of_every_kind_is_short() {
        // The kernel matrix degrades a check short by skipped events instead of failing it:
        // CI failed 7.2's splice on the at-least form, whose expected value is not a number.
        assert!(Check::eq("write calls", 10, 9).short);
        assert!(!Check::eq("write calls", 10, 11).short);
        assert!(Check::at_least("syscalls", 134, 131).short);
        assert!(!Check::at_least("syscalls", 134, 140).short);
        assert!(Check::present("sender in the report", false).short);
        assert!(!Check::present("sender in the report", true).short);
        assert!(!Check::fact("btf", true, false).short);
    }

    #[test]
    fn describe_shows_the_difference() {
        let c = Check::eq("read calls", 10, 12);
        assert!(!c.ok);
        assert_eq!(c.describe(), "read calls: expected 10, measured 12 (+2)");
    }
}
