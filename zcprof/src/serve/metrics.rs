//! What a scrape shows: the latest collection ([`Published`]) as Prometheus metric families.
//!
//! The totals are zcprof's own monotonic sums, so the families are built at scrape time by a
//! custom [`Collector`] rather than kept in the `prometheus` crate's counters (which only go
//! up by increments).

use std::{sync::Arc, time::Instant};

use prometheus::{
    core::{Collector, Desc},
    proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType},
};
use tokio::sync::watch;
use zcprof_common::{Column, HIST_BUCKETS, Syscall};

use super::engine::Totals;
use crate::{
    capability::Capabilities, collector::Cell, loader::ProgramStats, report::uring_op_name,
};

/// Fill of one kernel map.
#[derive(Debug, Clone)]
pub struct MapFill {
    /// Map name.
    pub name: &'static str,
    /// Entries now.
    pub entries: u64,
    /// Most entries it can hold.
    pub capacity: u64,
}

/// One collection's results, handed from the collector thread to the scrapes.
#[derive(Debug, Clone)]
pub struct Published {
    /// When the collection started: a scrape that arrived before it sees fresh counts.
    pub started: Instant,
    /// Names of the group labels.
    pub label_names: &'static [&'static str],
    /// Label values and totals of every group.
    pub groups: Vec<(Vec<String>, Totals)>,
    /// Events the kernel side could not record, by reason.
    pub lost: Vec<(&'static str, u64)>,
    /// Map fill.
    pub maps: Vec<MapFill>,
    /// zcprof's own BPF programs' run counts and times.
    pub programs: Vec<ProgramStats>,
    /// Groups refused by --max-series.
    pub series_dropped: u64,
    /// Exited threads whose entries were deleted.
    pub threads_retired: u64,
    /// Threads zcprof holds a record of (its memory grows with them).
    pub threads_tracked: u64,
    /// Exited processes dropped.
    pub processes_retired: u64,
    /// Collections done.
    pub collections: u64,
    /// Collections that failed (map read errors).
    pub collection_errors: u64,
    /// Duration of the last collection.
    pub collection_seconds: f64,
    /// Whether fd types are known (kernel BTF).
    pub btf: bool,
    /// What zcprof can count on this kernel.
    pub capabilities: Capabilities,
    /// zcprof's resident memory, bytes.
    pub rss_bytes: u64,
    /// zcprof's CPU time (user + system), seconds.
    pub cpu_seconds: f64,
}

impl Published {
    /// Before the first collection.
    pub fn empty(label_names: &'static [&'static str]) -> Self {
        Published {
            started: Instant::now(),
            label_names,
            groups: Vec::new(),
            lost: Vec::new(),
            maps: Vec::new(),
            programs: Vec::new(),
            series_dropped: 0,
            threads_retired: 0,
            threads_tracked: 0,
            processes_retired: 0,
            collections: 0,
            collection_errors: 0,
            collection_seconds: 0.0,
            btf: false,
            capabilities: Capabilities::default(),
            rss_bytes: 0,
            cpu_seconds: 0.0,
        }
    }
}

fn family(name: &str, help: &str, t: MetricType) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(t);
    f
}

fn label_pairs(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name(n.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

fn push_counter(f: &mut MetricFamily, labels: &[(&str, &str)], v: f64) {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::default();
    m.set_label(label_pairs(labels));
    m.set_counter(c);
    f.mut_metric().push(m);
}

fn push_gauge(f: &mut MetricFamily, labels: &[(&str, &str)], v: f64) {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::default();
    m.set_label(label_pairs(labels));
    m.set_gauge(g);
    f.mut_metric().push(m);
}

/// The kernel's log2 buckets as a Prometheus histogram. Kernel bucket 0 holds 0-byte calls and
/// bucket k holds sizes in [2^(k-1), 2^k), so its largest member is 2^k - 1: that is its
/// upper bound (`le`), exactly (an `le` of 2^k would wrongly leave out the very common
/// sizes that are powers of two, which are in the next bucket). The last kernel bucket is
/// open-ended and becomes +Inf. Buckets are cumulative; `_count` is the successful calls,
/// `_sum` their bytes.
pub fn size_histogram(cell: &Cell) -> Histogram {
    let mut buckets = Vec::with_capacity(HIST_BUCKETS - 1);
    let mut cumulative = 0u64;
    for (k, n) in cell.size_log2.iter().enumerate().take(HIST_BUCKETS - 1) {
        cumulative += n;
        let mut b = Bucket::default();
        b.set_upper_bound(((1u64 << k) - 1) as f64);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    let count: u64 = cell.size_log2.iter().sum();
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_count(count);
    h.set_sample_sum(cell.bytes as f64);
    h
}

/// Every metric family of one collection.
pub fn families(p: &Published) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let mut syscalls = family(
        "zcprof_syscalls_total",
        "Syscalls made (each is two mode switches), including exit and exit_group.",
        COUNTER,
    );
    let mut mode = family(
        "zcprof_mode_switches_total",
        "Switches between user and kernel mode caused by syscalls (two per syscall).",
        COUNTER,
    );
    let mut ctx = family(
        "zcprof_context_switches_total",
        "Context switches by kind: voluntary (blocked or slept) or involuntary (preempted), \
         as ru_nvcsw/ru_nivcsw count them.",
        COUNTER,
    );
    let mut faults = family(
        "zcprof_page_faults_total",
        "Page faults by kind (minor or major), as ru_minflt/ru_majflt count them.",
        COUNTER,
    );
    let mut faults_mode = family(
        "zcprof_page_faults_by_mode_total",
        "The same page faults by the mode they were taken in (user or kernel code); sums to \
         zcprof_page_faults_total.",
        COUNTER,
    );
    let mut ledger = family(
        "zcprof_ledger_bytes_total",
        "Bytes by ledger column (how they crossed the user/kernel boundary) and syscall; \
         io_uring operations are syscall=\"io_uring\". See docs/ledger.md.",
        COUNTER,
    );
    let mut calls = family(
        "zcprof_transfer_calls_total",
        "Calls of data-moving syscalls by syscall and ledger column, failed ones included.",
        COUNTER,
    );
    let mut errors = family(
        "zcprof_transfer_errors_total",
        "Failed calls of data-moving syscalls by syscall and ledger column.",
        COUNTER,
    );
    let mut zc = family(
        "zcprof_zerocopy_requested_total",
        "Sends that asked for MSG_ZEROCOPY, by syscall and the column they landed in.",
        COUNTER,
    );
    let mut uring = family(
        "zcprof_io_uring_operations_total",
        "Completed io_uring operations by opcode and ledger column.",
        COUNTER,
    );
    let mut sizes = family(
        "zcprof_io_size_bytes",
        "Sizes of successful data-moving calls, by syscall. Bucket bounds are 2^k-1 bytes: \
         a call of exactly 2^k bytes is in the next bucket.",
        HISTOGRAM,
    );

    for (values, t) in &p.groups {
        let g: Vec<(&str, &str)> = p
            .label_names
            .iter()
            .zip(values.iter())
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
            let mut l = g.clone();
            l.extend_from_slice(extra);
            l
        };
        let c = &t.counters;
        push_counter(&mut syscalls, &g, c.syscalls as f64);
        push_counter(&mut mode, &g, (2 * c.syscalls) as f64);
        push_counter(
            &mut ctx,
            &with(&[("kind", "voluntary")]),
            c.ctx_voluntary as f64,
        );
        push_counter(
            &mut ctx,
            &with(&[("kind", "involuntary")]),
            c.ctx_involuntary as f64,
        );
        push_counter(
            &mut faults,
            &with(&[("kind", "minor")]),
            c.faults_minor as f64,
        );
        push_counter(
            &mut faults,
            &with(&[("kind", "major")]),
            c.faults_major as f64,
        );
        push_counter(
            &mut faults_mode,
            &with(&[("mode", "user")]),
            c.faults_user as f64,
        );
        push_counter(
            &mut faults_mode,
            &with(&[("mode", "kernel")]),
            c.faults_kernel as f64,
        );
        let mut per_syscall: Vec<(Syscall, Cell)> = Vec::new();
        for ((sc, col), cell) in &t.cells {
            let l = with(&[("syscall", sc.name()), ("column", col.name())]);
            push_counter(&mut ledger, &l, cell.bytes as f64);
            push_counter(&mut calls, &l, cell.calls as f64);
            push_counter(&mut errors, &l, cell.errors as f64);
            if cell.zerocopy_requested > 0 {
                push_counter(&mut zc, &l, cell.zerocopy_requested as f64);
            }
            match per_syscall.last_mut() {
                Some((s, acc)) if s == sc => acc.add(cell),
                _ => per_syscall.push((*sc, *cell)),
            }
        }
        let mut uring_bytes: Vec<(Column, u64)> = Vec::new();
        for ((op, col), cell) in &t.uring {
            let l = with(&[("opcode", uring_op_name(*op)), ("column", col.name())]);
            push_counter(&mut uring, &l, cell.calls as f64);
            match uring_bytes.iter_mut().find(|(c, _)| c == col) {
                Some((_, b)) => *b += cell.bytes,
                None => uring_bytes.push((*col, cell.bytes)),
            }
        }
        uring_bytes.sort();
        for (col, b) in uring_bytes {
            let l = with(&[("syscall", "io_uring"), ("column", col.name())]);
            push_counter(&mut ledger, &l, b as f64);
        }
        for (sc, cell) in per_syscall {
            let mut m = Metric::default();
            m.set_label(label_pairs(&with(&[("syscall", sc.name())])));
            m.set_histogram(size_histogram(&cell));
            sizes.mut_metric().push(m);
        }
    }

    let mut build = family(
        "zcprof_build_info",
        "zcprof's version, and whether the kernel's BTF let it tell fd types apart \
         (otherwise transfers are classified by syscall only). Always 1.",
        GAUGE,
    );
    push_gauge(
        &mut build,
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("btf", if p.btf { "true" } else { "false" }),
        ],
        1.0,
    );
    let mut capability = family(
        "zcprof_capability",
        "1 when zcprof can count what the capability feeds on this kernel (exactly, or \
         degraded as state says), 0 when it cannot and those counters stay 0.",
        GAUGE,
    );
    for c in p.capabilities.iter() {
        push_gauge(
            &mut capability,
            &[("name", c.name), ("state", c.state.as_str())],
            if c.state.available() { 1.0 } else { 0.0 },
        );
    }
    let mut lost = family(
        "zcprof_events_lost_total",
        "Events the kernel programs could not record, by reason. Must stay 0; if not, the \
         counts above are short by that much.",
        COUNTER,
    );
    for (reason, n) in &p.lost {
        push_counter(&mut lost, &[("reason", reason)], *n as f64);
    }
    let mut entries = family(
        "zcprof_map_entries",
        "Entries in each of zcprof's kernel maps.",
        GAUGE,
    );
    let mut capacity = family(
        "zcprof_map_capacity",
        "Most entries each of zcprof's kernel maps can hold.",
        GAUGE,
    );
    for m in &p.maps {
        push_gauge(&mut entries, &[("map", m.name)], m.entries as f64);
        push_gauge(&mut capacity, &[("map", m.name)], m.capacity as f64);
    }
    let mut runs = family(
        "zcprof_bpf_program_runs_total",
        "Times each of zcprof's BPF programs ran (zcprof's own cost).",
        COUNTER,
    );
    let mut run_time = family(
        "zcprof_bpf_program_run_seconds_total",
        "Time each of zcprof's BPF programs ran (zcprof's own cost).",
        COUNTER,
    );
    for s in &p.programs {
        push_counter(&mut runs, &[("program", &s.name)], s.run_count as f64);
        push_counter(
            &mut run_time,
            &[("program", &s.name)],
            s.run_time_ns as f64 / 1e9,
        );
    }
    let mut dropped = family(
        "zcprof_series_dropped_total",
        "Groups refused by --max-series; their activity is counted in the [other] group.",
        COUNTER,
    );
    push_counter(&mut dropped, &[], p.series_dropped as f64);
    let mut groups = family(
        "zcprof_groups",
        "Groups (label sets) exported, [other] and [exited] included.",
        GAUGE,
    );
    push_gauge(&mut groups, &[], p.groups.len() as f64);
    let mut threads_retired = family(
        "zcprof_threads_retired_total",
        "Exited threads whose final counts were credited and whose map entries were deleted.",
        COUNTER,
    );
    push_counter(&mut threads_retired, &[], p.threads_retired as f64);
    let mut tracked = family(
        "zcprof_threads_tracked",
        "Threads whose counts zcprof remembers (alive, or exited and not yet retired).",
        GAUGE,
    );
    push_gauge(&mut tracked, &[], p.threads_tracked as f64);
    let mut procs_retired = family(
        "zcprof_processes_retired_total",
        "Exited processes whose records were dropped.",
        COUNTER,
    );
    push_counter(&mut procs_retired, &[], p.processes_retired as f64);
    let mut collections = family(
        "zcprof_collections_total",
        "Reads of the kernel maps (every --collect-interval and at each scrape).",
        COUNTER,
    );
    push_counter(&mut collections, &[], p.collections as f64);
    let mut collection_errors = family(
        "zcprof_collection_errors_total",
        "Reads of the kernel maps that failed (the previous counts were served).",
        COUNTER,
    );
    push_counter(&mut collection_errors, &[], p.collection_errors as f64);
    let mut collection_seconds = family(
        "zcprof_collection_duration_seconds",
        "Time the last read of the kernel maps took.",
        GAUGE,
    );
    push_gauge(&mut collection_seconds, &[], p.collection_seconds);
    let mut rss = family(
        "process_resident_memory_bytes",
        "Resident memory size of zcprof, in bytes.",
        GAUGE,
    );
    push_gauge(&mut rss, &[], p.rss_bytes as f64);
    let mut cpu = family(
        "process_cpu_seconds_total",
        "User and system CPU time zcprof spent, in seconds.",
        COUNTER,
    );
    push_counter(&mut cpu, &[], p.cpu_seconds);

    vec![
        syscalls,
        mode,
        ctx,
        faults,
        faults_mode,
        ledger,
        calls,
        errors,
        zc,
        uring,
        sizes,
        build,
        capability,
        lost,
        entries,
        capacity,
        runs,
        run_time,
        dropped,
        groups,
        threads_retired,
        tracked,
        procs_retired,
        collections,
        collection_errors,
        collection_seconds,
        rss,
        cpu,
    ]
}

/// The registry's view of the latest collection.
pub struct LatestCollector {
    latest: watch::Receiver<Arc<Published>>,
}

impl LatestCollector {
    /// Reads from `latest`.
    pub fn new(latest: watch::Receiver<Arc<Published>>) -> Self {
        LatestCollector { latest }
    }
}

impl Collector for LatestCollector {
    fn desc(&self) -> Vec<&Desc> {
        // An unchecked collector: which label names the families have depends on the
        // grouping chosen at start, and nothing else is registered under these names.
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let p = self.latest.borrow().clone();
        families(&p)
    }
}

/// zcprof's resident memory (bytes) and CPU time (seconds), from /proc/self. Both files stay
/// readable after the privilege drop (mode 0444 even for a non-dumpable process).
pub fn self_usage() -> (u64, f64) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    // SAFETY: as above.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page)
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields resume after the command name's closing parenthesis; utime and stime
            // are fields 14 and 15 (11 and 12 after it).
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((ut + st) / ticks)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_exact_and_cumulative() {
        let mut cell = Cell::default();
        // 3 calls of 0 bytes, 2 of 1 byte, 1 of 4096 bytes, 1 of 4 GiB.
        cell.size_log2[0] = 3;
        cell.size_log2[1] = 2;
        cell.size_log2[zcprof_common::size_bucket(4096)] = 1;
        cell.size_log2[zcprof_common::size_bucket(4 << 30)] = 1;
        cell.bytes = 2 + 4096 + (4 << 30);
        let h = size_histogram(&cell);
        let b = h.get_bucket();
        assert_eq!(b.len(), 31);
        assert_eq!((b[0].upper_bound(), b[0].cumulative_count()), (0.0, 3));
        assert_eq!((b[1].upper_bound(), b[1].cumulative_count()), (1.0, 5));
        // 4096 is not <= 4095 ...
        assert_eq!((b[12].upper_bound(), b[12].cumulative_count()), (4095.0, 5));
        // ... but is <= 8191.
        assert_eq!((b[13].upper_bound(), b[13].cumulative_count()), (8191.0, 6));
        assert_eq!(b[30].upper_bound(), ((1u64 << 30) - 1) as f64);
        assert_eq!(b[30].cumulative_count(), 6);
        // The 4 GiB call is only in +Inf, i.e. in the count.
        assert_eq!(h.get_sample_count(), 7);
        assert_eq!(h.get_sample_sum(), cell.bytes as f64);
    }
}
