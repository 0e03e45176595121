//! Turns a [`Snapshot`] into what users read: a JSON document or terminal tables.

use comfy_table::{Cell as TCell, CellAlignment, Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value, json};
use zcprof_common::{
    CELL_FIELDS, COUNTERS, Column, CounterSpec, KERNEL_SKIPPED, Lost, ThreadCounts, Transfer, uring,
};

use crate::{
    capability::{self, Capabilities, State},
    duration::show as duration,
    findings,
    snapshot::{Activity, ProcessKey, ProcessView, Snapshot},
};

/// The counters as JSON fields: each under its name, or in its group's object under its
/// member name, as zcprof-common declares them; plus `mode_switches`, two per syscall.
fn counts_json(c: &ThreadCounts) -> Value {
    let mut out = serde_json::Map::new();
    for (spec, v) in COUNTERS.iter().zip(c.values()) {
        match spec.group {
            None => {
                out.insert(spec.name.into(), json!(v));
            }
            Some(g) => {
                let group = out.entry(g.json).or_insert_with(|| json!({}));
                if let Some(group) = group.as_object_mut() {
                    group.insert(spec.member.into(), json!(v));
                }
            }
        }
    }
    out.insert("mode_switches".into(), json!(2 * c.syscalls));
    Value::Object(out)
}

/// A ledger cell as JSON: its fields as zcprof-common declares them, and its size histogram.
fn cell_json(c: &Transfer) -> Value {
    let mut out: serde_json::Map<String, Value> = CELL_FIELDS
        .iter()
        .zip(c.values())
        .map(|(f, v)| (f.name.to_string(), json!(v)))
        .collect();
    out.insert("size_log2".into(), json!(c.size_log2.to_vec()));
    // Only timed cells (--latency) have a duration histogram.
    if c.time_log2.iter().any(|n| *n > 0) {
        out.insert("time_log2".into(), json!(c.time_log2.to_vec()));
    }
    Value::Object(out)
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn process_json(key: ProcessKey, p: &ProcessView) -> Value {
    let ledger: serde_json::Map<String, Value> = p
        .activity
        .ledger()
        .into_iter()
        .map(|(c, b)| (c.name().to_string(), json!(b)))
        .collect();
    let transfers: Vec<Value> = p
        .activity
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
        .activity
        .uring
        .iter()
        .map(|((op, c), cell)| {
            merge(
                json!({"opcode": op, "op": uring::op_name(*op), "column": c.name()}),
                cell_json(cell),
            )
        })
        .collect();
    let threads: Vec<Value> = p
        .threads
        .iter()
        .map(|(tid, t)| {
            let ledger: serde_json::Map<String, Value> = t
                .activity
                .ledger()
                .into_iter()
                .map(|(c, b)| (c.name().to_string(), json!(b)))
                .collect();
            merge(
                json!({"tid": tid, "comm": t.comm, "exited": t.exited, "ledger": ledger}),
                counts_json(&t.activity.counts),
            )
        })
        .collect();
    merge(
        json!({"pid": key.pid, "start_time_ns": key.start, "comm": p.comm, "exited": p.exited,
               "ledger": ledger,
               "transfers": transfers, "io_uring": uring, "threads": threads}),
        counts_json(&p.activity.counts),
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
               "findings": findings::findings(snap),
               "retire_deferred": snap.deferred,
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

/// A counter's value as text: a duration for the counters that count nanoseconds.
fn counter_text(spec: &CounterSpec, v: u64) -> String {
    if spec.ns { duration(v) } else { v.to_string() }
}

fn right(s: impl ToString) -> TCell {
    TCell::new(s.to_string()).set_alignment(CellAlignment::Right)
}

/// The counters in one line, as zcprof-common declares them: the syscalls (and the mode
/// switches they make) always, then every other counter or group that is not all zero,
/// e.g. `12 syscalls = 24 mode switches; context switches: 3 voluntary, 1 involuntary`.
fn counts_text(c: &ThreadCounts) -> String {
    let mut parts: Vec<String> = vec![format!(
        "{} syscalls = {} mode switches",
        c.syscalls,
        2 * c.syscalls
    )];
    let values = c.values();
    let mut shown: Vec<&str> = vec!["syscalls"];
    for (i, spec) in COUNTERS.iter().enumerate() {
        if shown.contains(&spec.name) {
            continue;
        }
        match spec.group {
            None if values[i] > 0 => {
                parts.push(format!("{} {}", counter_text(spec, values[i]), spec.column))
            }
            None => {}
            Some(g) => {
                // Every member of the group (and of groups shown under the same JSON object).
                let members: Vec<(usize, &CounterSpec)> = COUNTERS
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.group.is_some_and(|h| h.json == g.json))
                    .collect();
                shown.extend(members.iter().map(|(_, d)| d.name));
                if members.iter().all(|(k, _)| values[*k] == 0) {
                    continue;
                }
                let list: Vec<String> = members
                    .iter()
                    .map(|(k, d)| format!("{} {}", values[*k], d.member))
                    .collect();
                parts.push(format!("{}: {}", g.json.replace('_', " "), list.join(", ")));
            }
        }
        shown.push(spec.name);
    }
    parts.join("; ")
}

/// The processes of `snap` by CPU-copied bytes, most first (then by syscalls, then pid).
fn by_cpu_copied(snap: &Snapshot) -> Vec<(ProcessKey, &ProcessView)> {
    let mut procs: Vec<(ProcessKey, &ProcessView, u64)> = snap
        .processes
        .iter()
        .map(|(pid, p)| (*pid, p, p.activity.cpu_copied()))
        .collect();
    procs.sort_by(|a, b| {
        (b.2, b.1.activity.counts.syscalls, a.0).cmp(&(a.2, a.1.activity.counts.syscalls, b.0))
    });
    procs.into_iter().map(|(pid, p, _)| (pid, p)).collect()
}

/// Everything watched, summed: the one fold of the processes' activity.
fn total(snap: &Snapshot) -> Activity {
    let mut total = Activity::default();
    for p in snap.processes.values() {
        total.add(&p.activity);
    }
    total
}

/// The ledger table of `a`, or nothing if no byte crossed in any column.
fn ledger_table(a: &Activity) -> Option<String> {
    let ledger = a.ledger();
    let moved: Vec<(&Column, &u64)> = ledger
        .iter()
        .filter(|(col, b)| **col != Column::NotMoved && **b > 0)
        .collect();
    if moved.is_empty() {
        return None;
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(vec!["ledger column", "bytes", ""]);
    for (col, b) in moved {
        t.add_row(vec![TCell::new(col.name()), right(b), right(bytes(*b))]);
    }
    Some(t.to_string())
}

/// The summary: the total of everything watched first, then the processes by CPU-copied bytes
/// (at most `top`), each with its counters and only the tables that have rows.
pub fn to_text(snap: &Snapshot, top: usize) -> String {
    let mut out = String::new();
    if snap.processes.is_empty() {
        out.push_str("no activity recorded\n");
    } else {
        let threads: usize = snap.processes.values().map(|p| p.threads.len()).sum();
        let all = total(snap);
        out.push_str(&format!(
            "\ntotal of {} process(es), {threads} thread(s): {}\n",
            snap.processes.len(),
            counts_text(&all.counts),
        ));
        if let Some(t) = ledger_table(&all) {
            out.push_str(&t);
            out.push('\n');
        }
    }
    let procs = by_cpu_copied(snap);
    for (key, p) in procs.iter().take(top) {
        let a = &p.activity;
        out.push_str(&format!(
            "\npid {} ({}){}: {}\n",
            key.pid,
            p.comm,
            if p.exited { ", exited" } else { "" },
            counts_text(&a.counts),
        ));
        if let Some(t) = ledger_table(a) {
            out.push_str(&t);
            out.push('\n');
        }
        if !a.transfers.is_empty() || !a.uring.is_empty() {
            let timed = a.transfers.values().any(|c| c.time_ns > 0);
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY);
            let mut header = vec!["syscall", "column", "calls", "errors", "bytes", "avg size"];
            if timed {
                header.extend(["time", "avg time"]);
            }
            t.set_header(header);
            for ((s, col), cell) in &a.transfers {
                t.add_row(row(s.name(), *col, cell, timed));
            }
            for ((op, col), cell) in &a.uring {
                t.add_row(row(
                    &format!("io_uring {}", uring::op_name(*op)),
                    *col,
                    cell,
                    false,
                ));
            }
            out.push_str(&t.to_string());
            out.push('\n');
            if timed {
                out.push_str(&time_line(a));
            }
        }
        if p.threads.len() > 1 {
            out.push_str(&threads_table(p));
            out.push('\n');
        }
    }
    if procs.len() > top {
        out.push_str(&format!(
            "\n... and {} more process(es), in the total above (--top N shows more, --json all)\n",
            procs.len() - top
        ));
    }
    let found = findings::findings(snap);
    if !found.is_empty() {
        out.push_str("\nFindings (docs/findings.md says how each is made):\n");
        for f in &found {
            let comm = snap
                .processes
                .get(&ProcessKey::new(f.pid, f.start_time_ns))
                .map_or("", |p| p.comm.as_str());
            out.push_str(&format!(
                "  pid {} ({comm}) {}: {}\n",
                f.pid, f.kind, f.text
            ));
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
        if snap
            .lost
            .get(Lost::ThreadTableFull.name())
            .is_some_and(|&n| n > 0)
        {
            out.push_str("warning: more threads than --max-threads; raise it and run again\n");
        }
    }
    out
}

/// One row per thread, with a column for each counter that is not 0 in every thread.
fn threads_table(p: &ProcessView) -> String {
    let shown: Vec<usize> = (0..COUNTERS.len())
        .filter(|&i| {
            p.threads
                .values()
                .any(|t| t.activity.counts.values()[i] > 0)
        })
        .collect();
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    let mut header = vec!["tid", "comm"];
    header.extend(shown.iter().map(|&i| COUNTERS[i].column));
    t.set_header(header);
    for (tid, th) in &p.threads {
        let values = th.activity.counts.values();
        let mut cells = vec![right(tid), TCell::new(&th.comm)];
        cells.extend(
            shown
                .iter()
                .map(|&i| right(counter_text(&COUNTERS[i], values[i]))),
        );
        t.add_row(cells);
    }
    t.to_string()
}

/// Where the process's syscall time went: data-moving calls against all syscalls (both wall
/// clock inside the calls, waiting included).
fn time_line(a: &Activity) -> String {
    let moving: u64 = a
        .transfers
        .iter()
        .filter(|((_, col), _)| *col != Column::NotMoved)
        .map(|(_, c)| c.time_ns)
        .sum();
    let all = a.counts.syscall_time_ns;
    let share = if all > 0 {
        format!(" ({:.1} %)", 100.0 * moving as f64 / all as f64)
    } else {
        String::new()
    };
    format!(
        "time inside data-moving calls: {}{share} of {} inside all syscalls (wall clock, \
         blocking included)\n",
        duration(moving),
        duration(all),
    )
}

/// One row of the transfers table; `timed` adds the time columns.
fn row(name: &str, col: Column, cell: &Transfer, timed: bool) -> Vec<TCell> {
    let ok = cell.calls - cell.errors;
    let avg = cell.bytes.checked_div(ok).unwrap_or(0);
    let col_name = if col == Column::NotMoved && (name.starts_with("mmap") || name == "munmap") {
        "mapped".to_string()
    } else {
        col.name().to_string()
    };
    let mut cells = vec![
        TCell::new(name),
        TCell::new(col_name),
        right(cell.calls),
        right(cell.errors),
        right(bytes(cell.bytes)),
        right(bytes(avg)),
    ];
    if timed {
        // Faults and io_uring completions are not calls the thread waited in.
        let calls: u64 = cell.time_log2.iter().sum();
        match cell.time_ns.checked_div(calls) {
            Some(avg) => cells.extend([right(duration(cell.time_ns)), right(duration(avg))]),
            None => cells.extend([right("-"), right("-")]),
        }
    }
    cells
}

/// An `attach` interval: a time-stamp line, then one line per process active in the interval
/// (by CPU-copied bytes, at most `top`), then the total of everything watched. Rates are per
/// second; context switches and faults are the interval's.
pub fn interval_lines(snap: &Snapshot, elapsed_s: f64, top: usize) -> String {
    let active: Vec<(ProcessKey, &ProcessView)> = by_cpu_copied(snap)
        .into_iter()
        .filter(|(_, p)| !p.activity.is_empty())
        .collect();
    let mut out = format!(
        "{} ({elapsed_s:.2} s): {} of {} process(es) active\n",
        clock_time(),
        active.len(),
        snap.processes.len()
    );
    for (key, p) in active.iter().take(top) {
        out.push_str(&interval_line(
            &key.pid.to_string(),
            &p.comm,
            &p.activity,
            elapsed_s,
        ));
    }
    let hidden = active.len().saturating_sub(top);
    let label = if hidden > 0 {
        format!("+{hidden} more")
    } else {
        String::new()
    };
    out.push_str(&interval_line("total", &label, &total(snap), elapsed_s));
    out
}

/// One row of [`interval_lines`] (the pid in the first 8 columns, the name in the next 16).
fn interval_line(first: &str, name: &str, a: &Activity, elapsed_s: f64) -> String {
    let per_s = |b: u64| format!("{}/s", bytes((b as f64 / elapsed_s) as u64));
    let l = a.ledger();
    let c = &a.counts;
    format!(
        "{:>8} {:<15} {:>10.0} {:>14} {:>14} {:>14} {:>8} {:>8} {:>8}\n",
        first,
        name,
        c.syscalls as f64 / elapsed_s,
        per_s(a.cpu_copied()),
        per_s(l[&Column::ZeroCopy]),
        per_s(l[&Column::DmaDirect] + l[&Column::MmapFaultIn]),
        c.ctx_voluntary,
        c.ctx_involuntary,
        c.faults_minor + c.faults_major,
    )
}

/// The local wall-clock time, `HH:MM:SS`.
fn clock_time() -> String {
    // SAFETY: time(NULL) has no preconditions; localtime_r writes into the valid `tm`.
    let tm = unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        tm
    };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// Header for [`interval_lines`].
pub const INTERVAL_HEADER: &str = "     pid comm            syscalls/s     cpu copied      zero-copy    dma+mmap-in   vol cs invol cs   faults";
