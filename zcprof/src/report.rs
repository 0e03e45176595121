//! Turns a [`Snapshot`] into what users read: a JSON document or terminal tables.

use comfy_table::{Cell as TCell, CellAlignment, Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value, json};
use zcprof_common::Column;

use crate::{
    capability::{self, Capabilities, State},
    collector::{Cell, Counters, KERNEL_SKIPPED, ProcessView, Snapshot},
};

/// Name of an IORING_OP_* opcode.
pub fn uring_op_name(op: u16) -> &'static str {
    const NAMES: [&str; 63] = [
        "nop",
        "readv",
        "writev",
        "fsync",
        "read_fixed",
        "write_fixed",
        "poll_add",
        "poll_remove",
        "sync_file_range",
        "sendmsg",
        "recvmsg",
        "timeout",
        "timeout_remove",
        "accept",
        "async_cancel",
        "link_timeout",
        "connect",
        "fallocate",
        "openat",
        "close",
        "files_update",
        "statx",
        "read",
        "write",
        "fadvise",
        "madvise",
        "send",
        "recv",
        "openat2",
        "epoll_ctl",
        "splice",
        "provide_buffers",
        "remove_buffers",
        "tee",
        "shutdown",
        "renameat",
        "unlinkat",
        "mkdirat",
        "symlinkat",
        "linkat",
        "msg_ring",
        "fsetxattr",
        "setxattr",
        "fgetxattr",
        "getxattr",
        "socket",
        "uring_cmd",
        "send_zc",
        "sendmsg_zc",
        "read_multishot",
        "waitid",
        "futex_wait",
        "futex_wake",
        "futex_waitv",
        "fixed_fd_install",
        "ftruncate",
        "bind",
        "listen",
        "recv_zc",
        "epoll_wait",
        "readv_fixed",
        "writev_fixed",
        "pipe",
    ];
    NAMES.get(op as usize).copied().unwrap_or("unknown")
}

fn counters_json(c: &Counters) -> Value {
    json!({
        "syscalls": c.syscalls,
        "syscalls_before_exec": c.syscalls_before_exec,
        "mode_switches": 2 * c.syscalls,
        "context_switches": {"voluntary": c.ctx_voluntary, "involuntary": c.ctx_involuntary},
        "page_faults": {
            "minor": c.faults_minor, "major": c.faults_major,
            "user": c.faults_user, "kernel": c.faults_kernel,
        },
        "zerocopy_completions": {
            "sends": c.zerocopy_sends_completed, "copied": c.zerocopy_sends_copied,
        },
    })
}

fn cell_json(c: &Cell) -> Value {
    json!({
        "calls": c.calls, "bytes": c.bytes, "errors": c.errors,
        "zerocopy_requested": c.zerocopy_requested, "size_log2": c.size_log2.to_vec(),
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn process_json(pid: u32, p: &ProcessView) -> Value {
    let ledger: serde_json::Map<String, Value> = p
        .ledger()
        .into_iter()
        .map(|(c, b)| (c.name().to_string(), json!(b)))
        .collect();
    let transfers: Vec<Value> = p
        .transfers
        .iter()
        .map(|((s, c), cell)| {
            merge(
                json!({"syscall": s.name(), "column": c.name()}),
                cell_json(cell),
            )
        })
        .collect();
    let uring: Vec<Value> = p
        .uring
        .iter()
        .map(|((op, c), cell)| {
            json!({"opcode": op, "op": uring_op_name(*op), "column": c.name(),
                   "calls": cell.calls, "bytes": cell.bytes, "errors": cell.errors})
        })
        .collect();
    let threads: Vec<Value> = p
        .threads
        .iter()
        .map(|(tid, t)| {
            let ledger: serde_json::Map<String, Value> = Column::ALL
                .iter()
                .map(|col| {
                    let b: u64 = t
                        .transfers
                        .iter()
                        .filter(|((_, c), _)| c == col)
                        .map(|(_, cell)| cell.bytes)
                        .sum();
                    (col.name().to_string(), json!(b))
                })
                .collect();
            merge(
                json!({"tid": tid, "comm": t.comm, "exited": t.exited, "ledger": ledger}),
                counters_json(&t.counters),
            )
        })
        .collect();
    merge(
        json!({"pid": pid, "comm": p.comm, "exited": p.exited, "ledger": ledger,
               "transfers": transfers, "io_uring": uring, "threads": threads}),
        counters_json(&p.counters),
    )
}

/// The JSON document for a snapshot; `extra` fields (command, exit code…) come first.
pub fn to_json(snap: &Snapshot, capabilities: &Capabilities, extra: Value) -> Value {
    let btf = capabilities.state(capability::FD_TYPES) == State::Exact;
    let processes: Vec<Value> = snap
        .processes
        .iter()
        .map(|(pid, p)| process_json(*pid, p))
        .collect();
    merge(
        extra,
        json!({"btf": btf, "capabilities": capabilities, "lost": snap.lost,
               "processes": processes}),
    )
}

/// Human-readable byte count (binary units), exact below 1 KiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn right(s: impl ToString) -> TCell {
    TCell::new(s.to_string()).set_alignment(CellAlignment::Right)
}

/// The per-process summary tables.
pub fn to_text(snap: &Snapshot) -> String {
    let mut out = String::new();
    if snap.processes.is_empty() {
        out.push_str("no activity recorded\n");
    }
    for (pid, p) in &snap.processes {
        let c = &p.counters;
        out.push_str(&format!(
            "\npid {pid} ({}){}: {} syscalls = {} mode switches; context switches {} voluntary, \
             {} involuntary; page faults {} minor, {} major ({} in user mode, {} in kernel)\n",
            p.comm,
            if p.exited { ", exited" } else { "" },
            c.syscalls,
            2 * c.syscalls,
            c.ctx_voluntary,
            c.ctx_involuntary,
            c.faults_minor,
            c.faults_major,
            c.faults_user,
            c.faults_kernel,
        ));
        let ledger = p.ledger();
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY);
        t.set_header(vec!["ledger column", "bytes", ""]);
        for (col, b) in &ledger {
            if *col == Column::NotMoved {
                continue;
            }
            t.add_row(vec![TCell::new(col.name()), right(b), right(bytes(*b))]);
        }
        out.push_str(&t.to_string());
        out.push('\n');
        if !p.transfers.is_empty() || !p.uring.is_empty() {
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY);
            t.set_header(vec![
                "syscall", "column", "calls", "errors", "bytes", "avg size",
            ]);
            for ((s, col), cell) in &p.transfers {
                t.add_row(row(s.name(), *col, cell));
            }
            for ((op, col), cell) in &p.uring {
                t.add_row(row(&format!("io_uring {}", uring_op_name(*op)), *col, cell));
            }
            out.push_str(&t.to_string());
            out.push('\n');
        }
        if p.threads.len() > 1 {
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY);
            t.set_header(vec![
                "tid", "comm", "syscalls", "vol cs", "invol cs", "faults",
            ]);
            for (tid, th) in &p.threads {
                let c = &th.counters;
                t.add_row(vec![
                    right(tid),
                    TCell::new(&th.comm),
                    right(c.syscalls),
                    right(c.ctx_voluntary),
                    right(c.ctx_involuntary),
                    right(c.faults_minor + c.faults_major),
                ]);
            }
            out.push_str(&t.to_string());
            out.push('\n');
        }
    }
    let skipped = snap.lost.get(KERNEL_SKIPPED).copied().unwrap_or(0);
    if skipped > 0 {
        out.push_str(&format!(
            "warning: the kernel skipped zcprof's programs {skipped} times (a program preempted \
             mid-run holds it on its CPU, and the kernel skips it there for every other task \
             meanwhile: Linux 7.x preempts tracepoint programs); counts can be short by up to \
             that much\n"
        ));
    }
    let lost: u64 = snap
        .lost
        .iter()
        .filter(|(k, _)| **k != KERNEL_SKIPPED)
        .map(|(_, v)| v)
        .sum();
    if lost > 0 {
        out.push_str(&format!(
            "warning: {lost} events could not be recorded (kernel tables full): {:?}\n",
            snap.lost
        ));
        if snap.lost.get("thread_table_full").is_some_and(|&n| n > 0) {
            out.push_str("warning: more threads than --max-threads; raise it and run again\n");
        }
    }
    out
}

fn row(name: &str, col: Column, cell: &Cell) -> Vec<TCell> {
    let ok = cell.calls - cell.errors;
    let avg = cell.bytes.checked_div(ok).unwrap_or(0);
    let col_name = if col == Column::NotMoved && (name.starts_with("mmap") || name == "munmap") {
        "mapped".to_string()
    } else {
        col.name().to_string()
    };
    vec![
        TCell::new(name),
        TCell::new(col_name),
        right(cell.calls),
        right(cell.errors),
        right(bytes(cell.bytes)),
        right(bytes(avg)),
    ]
}

/// One line per process for an `attach` interval: rates over the interval (per second), and
/// the interval's context switches and faults.
pub fn interval_lines(snap: &Snapshot, elapsed_s: f64) -> String {
    let mut out = String::new();
    let per_s = |b: u64| format!("{}/s", bytes((b as f64 / elapsed_s) as u64));
    for (pid, p) in &snap.processes {
        let l = p.ledger();
        let cpu: u64 = [
            Column::CpuUserToKernel,
            Column::CpuKernelToUser,
            Column::CpuInKernel,
        ]
        .iter()
        .map(|c| l[c])
        .sum();
        let c = &p.counters;
        out.push_str(&format!(
            "{:>8} {:<15} {:>10.0} {:>14} {:>14} {:>14} {:>8} {:>8} {:>8}\n",
            pid,
            p.comm,
            c.syscalls as f64 / elapsed_s,
            per_s(cpu),
            per_s(l[&Column::ZeroCopy]),
            per_s(l[&Column::DmaDirect] + l[&Column::MmapFaultIn]),
            c.ctx_voluntary,
            c.ctx_involuntary,
            c.faults_minor + c.faults_major,
        ));
    }
    out
}

/// Header for [`interval_lines`].
pub const INTERVAL_HEADER: &str = "     pid comm            syscalls/s     cpu copied      zero-copy    dma+mmap-in   vol cs invol cs   faults";
