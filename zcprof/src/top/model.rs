//! What `zcprof top` shows, computed without a terminal: one row per process or group with its
//! rates over the last interval, the sort orders, the name filter, and a row's drill-down (its
//! ledger by syscall and column, its threads).
//!
//! The counts come from the serve engine's group totals, which never go backwards even as dead
//! threads' kernel entries are deleted; an interval is the difference of two of them, so a
//! row's rate is exactly what its threads did between two collections.

use std::collections::HashMap;

use zcprof_common::{Column, uring};

use super::Rows;
use crate::{serve::engine::EXITED, snapshot::Activity};

/// Per-second rates of one row (or thread) over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Syscalls.
    pub syscalls: f64,
    /// Bytes the CPU copied (`Activity::cpu_copied`).
    pub cpu_copied: f64,
    /// Bytes in the `zero_copy` column.
    pub zero_copy: f64,
    /// Bytes the device moved (`dma_direct`) plus file pages mapped in (`mmap_fault_in`).
    pub dma_fault_in: f64,
    /// Voluntary context switches.
    pub ctx_voluntary: f64,
    /// Involuntary context switches.
    pub ctx_involuntary: f64,
    /// Page faults, minor and major.
    pub faults: f64,
}

impl Rates {
    /// The rates of `a`, done in `secs` seconds.
    pub fn of(a: &Activity, secs: f64) -> Rates {
        // A zero or negative interval cannot happen between two collections; guard the
        // division all the same rather than show infinities.
        let secs = if secs > 0.0 { secs } else { 1.0 };
        let per_s = |n: u64| n as f64 / secs;
        let ledger = a.ledger();
        let c = &a.counts;
        Rates {
            syscalls: per_s(c.syscalls),
            cpu_copied: per_s(a.cpu_copied()),
            zero_copy: per_s(ledger[&Column::ZeroCopy]),
            dma_fault_in: per_s(ledger[&Column::DmaDirect] + ledger[&Column::MmapFaultIn]),
            ctx_voluntary: per_s(c.ctx_voluntary),
            ctx_involuntary: per_s(c.ctx_involuntary),
            faults: per_s(c.faults_minor + c.faults_major),
        }
    }

    /// zero-copy / (zero-copy + CPU-copied); `None` when neither moved a byte.
    pub fn zero_copy_share(&self) -> Option<f64> {
        let moved = self.zero_copy + self.cpu_copied;
        (moved > 0.0).then(|| self.zero_copy / moved)
    }
}

/// One thread's part of an interval.
#[derive(Debug, Clone, Default)]
pub struct ThreadLine {
    /// Its process.
    pub pid: u32,
    /// Its tid.
    pub tid: u32,
    /// Its command name.
    pub comm: String,
    /// What it did in the interval.
    pub activity: Activity,
}

/// One row's part of an interval: a process, or a group of threads.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// What identifies the row across intervals: the pid, the command name or the cgroup path.
    pub key: String,
    /// The process, when rows are processes.
    pub pid: Option<u32>,
    /// What the row is called: the command name, or the cgroup path.
    pub name: String,
    /// What its threads did in the interval.
    pub activity: Activity,
    /// Its threads that did something in the interval.
    pub threads: Vec<ThreadLine>,
}

/// Everything one screen is drawn from: the groups of one interval.
#[derive(Debug, Clone, Default)]
pub struct Interval {
    /// Its length.
    pub secs: f64,
    /// Every row, in no particular order.
    pub groups: Vec<Group>,
    /// Events the kernel could not record in the interval.
    pub lost: u64,
}

impl Interval {
    /// The group with this key.
    pub fn group(&self, key: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.key == key)
    }
}

/// The key of an engine group's labels (see `Engine::label_names`), its pid and its name, or
/// `None` for the engine's own bookkeeping groups, which are no process.
pub fn group_identity(rows: Rows, labels: &[String]) -> Option<(String, Option<u32>, String)> {
    let first = labels.first()?;
    // `[exited]` holds the lifetime totals of processes that are gone: added to it all at
    // once, it has no meaningful rate.
    if first == EXITED {
        return None;
    }
    match rows {
        Rows::Process => {
            let pid = first.parse().ok();
            let name = labels.get(1).cloned().unwrap_or_default();
            Some((first.clone(), pid, name))
        }
        Rows::Comm | Rows::Cgroup => Some((first.clone(), None, first.clone())),
        // Labels container_id, pod_uid, runtime: the runtime and a short id name the row.
        Rows::Container => {
            let runtime = labels.get(2).map(String::as_str).unwrap_or("");
            let id: String = first.chars().take(12).collect();
            let name = if runtime.is_empty() {
                id
            } else {
                format!("{runtime} {id}")
            };
            Some((labels.join("/"), None, name))
        }
    }
}

/// The interval between the engine's totals `before` (by labels) and `now`, with each group's
/// threads (`threads`: group key and the thread's own interval).
pub fn interval(
    rows: Rows,
    now: &[(Vec<String>, Activity)],
    before: &HashMap<Vec<String>, Activity>,
    threads: Vec<(String, ThreadLine)>,
    secs: f64,
) -> Interval {
    let mut groups: Vec<Group> = now
        .iter()
        .filter_map(|(labels, total)| {
            let (key, pid, name) = group_identity(rows, labels)?;
            let activity = match before.get(labels) {
                Some(b) => total.since(b),
                None => total.clone(),
            };
            Some(Group {
                key,
                pid,
                name,
                activity,
                threads: Vec::new(),
            })
        })
        .collect();
    let index: HashMap<String, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| (g.key.clone(), i))
        .collect();
    for (key, line) in threads {
        if let Some(&i) = index.get(&key) {
            groups[i].threads.push(line);
        }
    }
    Interval {
        secs,
        groups,
        lost: 0,
    }
}

/// What rows are sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// The pid (processes) or the name (groups), ascending.
    Name,
    /// Syscalls/s.
    Syscalls,
    /// CPU-copied bytes/s (the default: what zcprof is about).
    CpuCopied,
    /// Zero-copy bytes/s.
    ZeroCopy,
    /// DMA + fault-in bytes/s.
    DmaFaultIn,
    /// Zero-copy share.
    ZeroCopyShare,
    /// Context switches/s, both kinds.
    ContextSwitches,
    /// Page faults/s.
    Faults,
}

impl SortKey {
    /// In the order of the table's columns (`s` goes right, `S` left).
    pub const ALL: [SortKey; 8] = [
        SortKey::Name,
        SortKey::Syscalls,
        SortKey::CpuCopied,
        SortKey::ZeroCopy,
        SortKey::DmaFaultIn,
        SortKey::ZeroCopyShare,
        SortKey::ContextSwitches,
        SortKey::Faults,
    ];

    fn position(self) -> usize {
        Self::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// The next column to the right (wrapping).
    pub fn next(self) -> SortKey {
        Self::ALL[(self.position() + 1) % Self::ALL.len()]
    }

    /// The next column to the left (wrapping).
    pub fn prev(self) -> SortKey {
        Self::ALL[(self.position() + Self::ALL.len() - 1) % Self::ALL.len()]
    }

    /// How the title line names it.
    pub fn title(self, rows: Rows) -> &'static str {
        match self {
            SortKey::Name if rows == Rows::Process => "pid",
            SortKey::Name => "name",
            SortKey::Syscalls => "syscalls/s",
            SortKey::CpuCopied => "CPU-copied/s",
            SortKey::ZeroCopy => "zero-copy/s",
            SortKey::DmaFaultIn => "DMA+fault-in/s",
            SortKey::ZeroCopyShare => "zero-copy share",
            SortKey::ContextSwitches => "context switches/s",
            SortKey::Faults => "faults/s",
        }
    }

    fn value(self, r: &Rates) -> f64 {
        match self {
            SortKey::Name => 0.0,
            SortKey::Syscalls => r.syscalls,
            SortKey::CpuCopied => r.cpu_copied,
            SortKey::ZeroCopy => r.zero_copy,
            SortKey::DmaFaultIn => r.dma_fault_in,
            SortKey::ZeroCopyShare => r.zero_copy_share().unwrap_or(-1.0),
            SortKey::ContextSwitches => r.ctx_voluntary + r.ctx_involuntary,
            SortKey::Faults => r.faults,
        }
    }
}

/// One line of the main table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The group's key (see [`Group::key`]).
    pub key: String,
    /// The process, when rows are processes.
    pub pid: Option<u32>,
    /// Command name or cgroup path.
    pub name: String,
    /// Its rates.
    pub rates: Rates,
}

/// Whether a row passes the `/` filter: its name contains it (ignoring case), or its pid
/// starts with it.
pub fn matches(row: &Row, filter: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let f = filter.to_lowercase();
    row.name.to_lowercase().contains(&f) || row.pid.is_some_and(|p| p.to_string().starts_with(&f))
}

/// The rows of an interval that pass `filter`, sorted by `key` (numbers largest first, ties
/// by CPU-copied bytes then by name, so that the order is stable from one screen to the next).
pub fn rows(interval: &Interval, key: SortKey, filter: &str) -> Vec<Row> {
    let mut out: Vec<Row> = interval
        .groups
        .iter()
        .map(|g| Row {
            key: g.key.clone(),
            pid: g.pid,
            name: g.name.clone(),
            rates: Rates::of(&g.activity, interval.secs),
        })
        .filter(|r| matches(r, filter))
        .collect();
    sort(&mut out, key);
    out
}

/// Sorts rows by `key` (see [`rows`]).
pub fn sort(rows: &mut [Row], key: SortKey) {
    let by_name = |a: &Row, b: &Row| {
        a.pid
            .cmp(&b.pid)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.key.cmp(&b.key))
    };
    rows.sort_by(|a, b| {
        if key == SortKey::Name {
            return by_name(a, b);
        }
        key.value(&b.rates)
            .total_cmp(&key.value(&a.rates))
            .then_with(|| b.rates.cpu_copied.total_cmp(&a.rates.cpu_copied))
            .then_with(|| by_name(a, b))
    });
}

/// The totals of the rows shown (the title's second line).
pub fn total(rows: &[Row]) -> Rates {
    let mut t = Rates::default();
    for r in rows.iter().map(|r| &r.rates) {
        t.syscalls += r.syscalls;
        t.cpu_copied += r.cpu_copied;
        t.zero_copy += r.zero_copy;
        t.dma_fault_in += r.dma_fault_in;
        t.ctx_voluntary += r.ctx_voluntary;
        t.ctx_involuntary += r.ctx_involuntary;
        t.faults += r.faults;
    }
    t
}

/// One (syscall or io_uring operation, column) cell of a drill-down.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    /// The syscall, or `io_uring OP`.
    pub syscall: String,
    /// The ledger column.
    pub column: &'static str,
    /// Calls/s.
    pub calls: f64,
    /// Bytes/s.
    pub bytes: f64,
}

/// A group's ledger by syscall and column, most bytes first.
pub fn ledger_rows(a: &Activity, secs: f64) -> Vec<LedgerRow> {
    let secs = if secs > 0.0 { secs } else { 1.0 };
    let row = |syscall: String, col: Column, calls: u64, bytes: u64| {
        // As the run report says it: a mapping moves nothing, it maps.
        let mapped =
            col == Column::NotMoved && (syscall.starts_with("mmap") || syscall == "munmap");
        LedgerRow {
            column: if mapped { "mapped" } else { col.name() },
            syscall,
            calls: calls as f64 / secs,
            bytes: bytes as f64 / secs,
        }
    };
    let mut out: Vec<LedgerRow> = a
        .transfers
        .iter()
        .map(|((s, col), c)| row(s.name().to_string(), *col, c.calls, c.bytes))
        .chain(a.uring.iter().map(|((op, col), c)| {
            row(
                format!("io_uring {}", uring::op_name(*op)),
                *col,
                c.calls,
                c.bytes,
            )
        }))
        .collect();
    out.sort_by(|a, b| {
        b.bytes
            .total_cmp(&a.bytes)
            .then_with(|| b.calls.total_cmp(&a.calls))
            .then_with(|| a.syscall.cmp(&b.syscall))
    });
    out
}

/// One thread of a drill-down.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadRow {
    /// Its process.
    pub pid: u32,
    /// Its tid.
    pub tid: u32,
    /// Its command name.
    pub comm: String,
    /// Its rates.
    pub rates: Rates,
}

/// A group's threads, most CPU-copied bytes first.
pub fn thread_rows(g: &Group, secs: f64) -> Vec<ThreadRow> {
    let mut out: Vec<ThreadRow> = g
        .threads
        .iter()
        .map(|t| ThreadRow {
            pid: t.pid,
            tid: t.tid,
            comm: t.comm.clone(),
            rates: Rates::of(&t.activity, secs),
        })
        .collect();
    out.sort_by(|a, b| {
        b.rates
            .cpu_copied
            .total_cmp(&a.rates.cpu_copied)
            .then_with(|| b.rates.syscalls.total_cmp(&a.rates.syscalls))
            .then_with(|| a.tid.cmp(&b.tid))
    });
    out
}

#[cfg(test)]
mod tests;
