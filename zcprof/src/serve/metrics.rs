//! What a scrape shows: the latest collection ([`Published`]) as Prometheus metric families.
//!
//! The totals are zcprof's own monotonic sums, so the families are built at scrape time by a
//! custom [`Collector`] rather than kept in the `prometheus` crate's counters (which only go
//! up by increments).

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
    time::Instant,
};

use prometheus::{
    core::{Collector, Desc},
    proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType},
};
use tokio::sync::watch;
use zcprof_common::{
    CELL_FIELDS, COUNTERS, Column, CounterSpec, HIST_BUCKETS, Syscall, Transfer, uring::op_name,
};

use crate::{capability::Capabilities, loader::ProgramStats, snapshot::Activity};

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
    pub groups: Vec<(Vec<String>, Activity)>,
    /// Events the kernel side could not record, by reason.
    pub lost: Vec<(&'static str, u64)>,
    /// Dead threads the kernel left to user space to collect, by reason.
    pub deferred: Vec<(&'static str, u64)>,
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
            deferred: Vec::new(),
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

/// The kernel's log2 buckets as a Prometheus histogram. Kernel bucket 0 holds 0-byte calls and
/// bucket k holds sizes in [2^(k-1), 2^k), so its largest member is 2^k - 1: that is its
/// upper bound (`le`), exactly (an `le` of 2^k would wrongly leave out the very common
/// sizes that are powers of two, which are in the next bucket). The last kernel bucket is
/// open-ended and becomes +Inf. Buckets are cumulative; `_count` is the successful calls,
/// `_sum` their bytes.
pub fn size_histogram(cell: &Transfer) -> Histogram {
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

/// A sample's labels: names are fixed, values come from the data.
type Labels = Vec<(&'static str, String)>;

/// Receives a family's samples.
type Emit<'a> = &'a mut dyn FnMut(Labels, Sample);

/// Computes a family's samples in one group.
type GroupSamples = Box<dyn Fn(&Activity, Emit<'_>) + Send + Sync>;

/// Where a family's samples come from.
enum Source {
    /// Samples of each group, from the group's totals; their labels follow the group's own.
    Group(GroupSamples),
    /// Samples of the daemon itself.
    Daemon(fn(&Published, Emit<'_>)),
    /// One unlabelled sample of the daemon itself.
    Scalar(fn(&Published) -> f64),
}

/// One sample's value.
enum Sample {
    Value(f64),
    Histogram(Histogram),
}

/// A metric family, declared once: name, help, type, and how its samples are computed.
struct Family {
    name: String,
    help: String,
    kind: MetricType,
    source: Source,
}

impl Family {
    fn new(name: impl Into<String>, help: &str, kind: MetricType, source: Source) -> Self {
        Family {
            name: name.into(),
            help: help.to_string(),
            kind,
            source,
        }
    }
}

/// A daemon metric without labels: one entry of [`DAEMON`].
type Scalar = (
    &'static str,
    &'static str,
    MetricType,
    fn(&Published) -> f64,
);

/// The daemon's own metrics without labels (its health and cost).
const DAEMON: [Scalar; 10] = [
    (
        "zcprof_series_dropped_total",
        "Groups refused by --max-series; their activity is counted in the [other] group.",
        MetricType::COUNTER,
        |p| p.series_dropped as f64,
    ),
    (
        "zcprof_groups",
        "Groups (label sets) exported, [other] and [exited] included.",
        MetricType::GAUGE,
        |p| p.groups.len() as f64,
    ),
    (
        "zcprof_threads_retired_total",
        "Exited threads whose final counts were credited and whose map entries were deleted.",
        MetricType::COUNTER,
        |p| p.threads_retired as f64,
    ),
    (
        "zcprof_threads_tracked",
        "Threads whose counts zcprof remembers (alive, or exited and not yet retired).",
        MetricType::GAUGE,
        |p| p.threads_tracked as f64,
    ),
    (
        "zcprof_processes_retired_total",
        "Exited processes whose records were dropped.",
        MetricType::COUNTER,
        |p| p.processes_retired as f64,
    ),
    (
        "zcprof_collections_total",
        "Reads of the kernel maps (every --collect-interval and at each scrape).",
        MetricType::COUNTER,
        |p| p.collections as f64,
    ),
    (
        "zcprof_collection_errors_total",
        "Reads of the kernel maps that failed (the previous counts were served).",
        MetricType::COUNTER,
        |p| p.collection_errors as f64,
    ),
    (
        "zcprof_collection_duration_seconds",
        "Time the last read of the kernel maps took.",
        MetricType::GAUGE,
        |p| p.collection_seconds,
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory size of zcprof, in bytes.",
        MetricType::GAUGE,
        |p| p.rss_bytes as f64,
    ),
    (
        "process_cpu_seconds_total",
        "User and system CPU time zcprof spent, in seconds.",
        MetricType::COUNTER,
        |p| p.cpu_seconds,
    ),
];

/// Every family, in exposition order: the per-thread counters and the ledger cell fields as
/// zcprof-common declares them, then what is computed from them, then the daemon's own.
fn catalogue() -> Vec<Family> {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let mut out: Vec<Family> = Vec::new();
    // One family per counter group (or ungrouped counter), in declaration order.
    for spec in COUNTERS {
        let stem = counter_stem(spec);
        let name = format!("zcprof_{stem}_total");
        if out.iter().all(|f| f.name != name) {
            let help = spec.group.map_or(spec.help, |g| g.help);
            out.push(Family::new(name, help, COUNTER, counter_samples(stem)));
        }
    }
    out.push(Family::new(
        "zcprof_mode_switches_total",
        "Switches between user and kernel mode caused by syscalls (two per syscall).",
        COUNTER,
        Source::Group(Box::new(|t, emit| {
            emit(Vec::new(), Sample::Value((2 * t.counts.syscalls) as f64))
        })),
    ));
    for (i, field) in CELL_FIELDS.iter().enumerate() {
        out.push(Family::new(
            format!("zcprof_{}_total", field.metric),
            field.help,
            COUNTER,
            cell_samples(i),
        ));
    }
    out.push(Family::new(
        "zcprof_io_uring_operations_total",
        "Completed io_uring operations by opcode and ledger column.",
        COUNTER,
        Source::Group(Box::new(|t, emit| {
            for ((op, col), cell) in &t.uring {
                let l = vec![
                    ("opcode", op_name(*op).into()),
                    ("column", col.name().into()),
                ];
                emit(l, Sample::Value(cell.calls as f64));
            }
        })),
    ));
    out.push(Family::new(
        "zcprof_io_size_bytes",
        "Sizes of successful data-moving calls, by syscall. Bucket bounds are 2^k-1 bytes: \
         a call of exactly 2^k bytes is in the next bucket.",
        HISTOGRAM,
        Source::Group(Box::new(|t, emit| {
            let mut per_syscall: Vec<(Syscall, Transfer)> = Vec::new();
            for ((sc, _), cell) in &t.transfers {
                match per_syscall.last_mut() {
                    Some((s, acc)) if s == sc => acc.add(cell),
                    _ => per_syscall.push((*sc, *cell)),
                }
            }
            for (sc, cell) in per_syscall {
                let h = size_histogram(&cell);
                emit(vec![("syscall", sc.name().into())], Sample::Histogram(h));
            }
        })),
    ));
    out.push(Family::new(
        "zcprof_build_info",
        "zcprof's version, and whether the kernel's BTF let it tell fd types apart \
         (otherwise transfers are classified by syscall only). Always 1.",
        GAUGE,
        Source::Daemon(|p, emit| {
            let l = vec![
                ("version", env!("CARGO_PKG_VERSION").into()),
                ("btf", p.btf.to_string()),
            ];
            emit(l, Sample::Value(1.0));
        }),
    ));
    out.push(Family::new(
        "zcprof_capability",
        "1 when zcprof can count what the capability feeds on this kernel (exactly, or \
         degraded as state says), 0 when it cannot and those counters stay 0.",
        GAUGE,
        Source::Daemon(|p, emit| {
            for c in p.capabilities.iter() {
                let l = vec![("name", c.name.into()), ("state", c.state.as_str().into())];
                emit(l, Sample::Value(f64::from(u8::from(c.state.available()))));
            }
        }),
    ));
    out.push(Family::new(
        "zcprof_threads_deferred_total",
        "Dead threads the kernel could not hand over at their final switch, by reason; the \
         daemon collected them from the thread table instead (nothing lost, only slower).",
        COUNTER,
        Source::Daemon(|p, emit| {
            for (reason, n) in &p.deferred {
                emit(
                    vec![("reason", reason.to_string())],
                    Sample::Value(*n as f64),
                );
            }
        }),
    ));
    out.push(Family::new(
        "zcprof_events_lost_total",
        "Events the kernel programs could not record, by reason. Must stay 0; if not, the \
         counts above are short by that much.",
        COUNTER,
        Source::Daemon(|p, emit| {
            for (reason, n) in &p.lost {
                emit(
                    vec![("reason", reason.to_string())],
                    Sample::Value(*n as f64),
                );
            }
        }),
    ));
    out.push(Family::new(
        "zcprof_map_entries",
        "Entries in each of zcprof's kernel maps.",
        GAUGE,
        Source::Daemon(|p, emit| {
            for m in &p.maps {
                emit(
                    vec![("map", m.name.into())],
                    Sample::Value(m.entries as f64),
                );
            }
        }),
    ));
    out.push(Family::new(
        "zcprof_map_capacity",
        "Most entries each of zcprof's kernel maps can hold.",
        GAUGE,
        Source::Daemon(|p, emit| {
            for m in &p.maps {
                emit(
                    vec![("map", m.name.into())],
                    Sample::Value(m.capacity as f64),
                );
            }
        }),
    ));
    out.push(Family::new(
        "zcprof_bpf_program_runs_total",
        "Times each of zcprof's BPF programs ran (zcprof's own cost).",
        COUNTER,
        Source::Daemon(|p, emit| {
            for s in &p.programs {
                emit(
                    vec![("program", s.name.clone())],
                    Sample::Value(s.run_count as f64),
                );
            }
        }),
    ));
    out.push(Family::new(
        "zcprof_bpf_program_run_seconds_total",
        "Time each of zcprof's BPF programs ran (zcprof's own cost).",
        COUNTER,
        Source::Daemon(|p, emit| {
            for s in &p.programs {
                let seconds = s.run_time_ns as f64 / 1e9;
                emit(vec![("program", s.name.clone())], Sample::Value(seconds));
            }
        }),
    ));
    for (name, help, kind, value) in DAEMON {
        out.push(Family::new(name, help, kind, Source::Scalar(value)));
    }
    out
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

/// The family stem of counter `spec`: its group's, or its own name.
fn counter_stem(spec: &CounterSpec) -> &'static str {
    spec.group.map_or(spec.name, |g| g.metric)
}

/// The samples of the counter family `stem` in one group: one per counter declared in it.
fn counter_samples(stem: &'static str) -> Source {
    Source::Group(Box::new(move |t, emit| {
        for (spec, value) in COUNTERS.iter().zip(t.counts.values()) {
            if counter_stem(spec) == stem {
                let labels = match spec.group {
                    Some(g) => vec![(g.label, spec.member.to_string())],
                    None => Vec::new(),
                };
                emit(labels, Sample::Value(value as f64));
            }
        }
    }))
}

/// The samples of ledger cell field `i` of [`CELL_FIELDS`] in one group: one per (syscall,
/// column), and io_uring's summed per column where the field says so.
fn cell_samples(i: usize) -> Source {
    Source::Group(Box::new(move |t, emit| {
        let field = &CELL_FIELDS[i];
        for ((sc, col), cell) in &t.transfers {
            let v = cell.values()[i];
            if !field.sparse || v > 0 {
                let l = vec![("syscall", sc.name().into()), ("column", col.name().into())];
                emit(l, Sample::Value(v as f64));
            }
        }
        if field.with_uring {
            let mut per_column: BTreeMap<Column, u64> = BTreeMap::new();
            for ((_, col), cell) in &t.uring {
                *per_column.entry(*col).or_default() += cell.values()[i];
            }
            for (col, v) in per_column {
                let l = vec![
                    ("syscall", "io_uring".into()),
                    ("column", col.name().into()),
                ];
                emit(l, Sample::Value(v as f64));
            }
        }
    }))
}

/// The catalogue, built once.
static CATALOGUE: LazyLock<Vec<Family>> = LazyLock::new(catalogue);

/// Every metric family of one collection.
pub fn families(p: &Published) -> Vec<MetricFamily> {
    CATALOGUE
        .iter()
        .map(|f| {
            let mut out = MetricFamily::default();
            out.set_name(f.name.clone());
            out.set_help(f.help.clone());
            out.set_field_type(f.kind);
            let kind = f.kind;
            let mut push = |labels: Vec<(&str, &str)>, sample: Sample| {
                let mut m = Metric::default();
                m.set_label(label_pairs(&labels));
                match sample {
                    Sample::Histogram(h) => m.set_histogram(h),
                    Sample::Value(v) if kind == MetricType::GAUGE => {
                        let mut g = Gauge::default();
                        g.set_value(v);
                        m.set_gauge(g);
                    }
                    Sample::Value(v) => {
                        let mut c = Counter::default();
                        c.set_value(v);
                        m.set_counter(c);
                    }
                }
                out.mut_metric().push(m);
            };
            match &f.source {
                Source::Group(of_group) => {
                    for (values, totals) in &p.groups {
                        let group: Vec<(&str, &str)> = p
                            .label_names
                            .iter()
                            .zip(values.iter())
                            .map(|(n, v)| (*n, v.as_str()))
                            .collect();
                        of_group(totals, &mut |extra, sample| {
                            let mut l = group.clone();
                            l.extend(extra.iter().map(|(n, v)| (*n, v.as_str())));
                            push(l, sample);
                        });
                    }
                }
                Source::Daemon(of_daemon) => of_daemon(p, &mut |l, sample| {
                    push(l.iter().map(|(n, v)| (*n, v.as_str())).collect(), sample)
                }),
                Source::Scalar(value) => push(Vec::new(), Sample::Value(value(p))),
            }
            out
        })
        .collect()
}
/// The registry's view of the latest collection.
pub struct LatestFamilies {
    latest: watch::Receiver<Arc<Published>>,
}

impl LatestFamilies {
    /// Reads from `latest`.
    pub fn new(latest: watch::Receiver<Arc<Published>>) -> Self {
        LatestFamilies { latest }
    }
}

impl Collector for LatestFamilies {
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
        let mut cell = Transfer::ZERO;
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
