//! What a scrape shows: the latest collection ([`Published`]) as Prometheus metric families,
//! in the classic text format or OpenMetrics ([`Format`]).
//!
//! The totals are zcprof's own monotonic sums, so the families are written at scrape time
//! from a catalogue rather than kept in the `prometheus` crate's counters (which only go up by
//! increments), and straight into the body ([`Exposition`]).

use std::{borrow::Cow, collections::BTreeMap, sync::LazyLock, time::Instant};

use prometheus::proto::{MetricFamily, MetricType};
use zcprof_common::{
    CELL_FIELDS, COUNTERS, Column, CounterSpec, HIST_BUCKETS, Syscall, ThreadCounts, Transfer,
    uring::op_name,
};

use super::args::HistogramMode;
use super::engine::SharedGroup;
use super::labels::push_label;
use crate::{
    capability::Capabilities,
    loader::ProgramStats,
    snapshot::{LedgerCell as _, SparseActivity},
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
    /// Label values and totals of every group.
    pub groups: Vec<SharedGroup>,
    /// With `--per-pid`: the ledger cells by command name (label `comm`), which the size
    /// histograms are exported by; `None`: by the groups.
    pub histogram_groups: Option<Vec<SharedGroup>>,
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
    /// When the daemon started, in unix seconds: its own counters count from then
    /// (OpenMetrics' `_created`).
    pub daemon_started: f64,
}

impl Published {
    /// Before the first collection (made at the daemon's start).
    pub fn empty() -> Self {
        Published {
            started: Instant::now(),
            groups: Vec::new(),
            histogram_groups: None,
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
            daemon_started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

/// The kernel's log2 buckets as a Prometheus histogram's cumulative buckets, calling
/// `bucket(le, cumulative)` for each kernel bucket in `kept` (ascending). Kernel bucket 0 holds
/// 0-byte calls and bucket k holds sizes in [2^(k-1), 2^k), so its largest member is 2^k - 1:
/// that is its upper bound (`le`), exactly (an `le` of 2^k would wrongly leave out the very
/// common sizes that are powers of two, which are in the next bucket). The last kernel bucket
/// is open-ended and is only in +Inf (the count). Merging buckets is exact: a kept bound's
/// cumulative count is the sum of every kernel bucket up to it, whichever are kept.
pub fn size_buckets(cell: &Transfer, kept: &[usize], bucket: impl FnMut(f64, u64)) {
    log2_buckets(&cell.size_log2, kept, 1.0, bucket)
}

/// As [`size_buckets`] for any of the kernel's log2 histograms, its bounds multiplied by
/// `unit` (1e-9 turns the duration histogram's nanoseconds into seconds).
fn log2_buckets(
    hist: &[u64; HIST_BUCKETS],
    kept: &[usize],
    unit: f64,
    mut bucket: impl FnMut(f64, u64),
) {
    let mut cumulative = 0u64;
    let mut next = kept.iter().peekable();
    for (k, n) in hist.iter().enumerate().take(HIST_BUCKETS - 1) {
        cumulative += n;
        if next.next_if(|&&want| want == k).is_some() {
            bucket(((1u64 << k) - 1) as f64 * unit, cumulative);
        }
    }
}

/// Seconds in one nanosecond: the kernel counts time in ns, Prometheus in seconds.
const NS: f64 = 1e-9;

/// Every finite kernel bucket: `--histograms full`.
const FULL_BUCKETS: [usize; HIST_BUCKETS - 1] = {
    let mut all = [0; HIST_BUCKETS - 1];
    let mut k = 0;
    while k < all.len() {
        all[k] = k;
        k += 1;
    }
    all
};

/// The kernel buckets `--histograms coarse` keeps, by upper bound: 0 (end of file, empty
/// reads), 1 (byte-at-a-time, the costliest per byte), then one bound per factor of 8 up to
/// 1 KiB (15, 127, 1023) and per factor of 4 from the page to 1 MiB, where I/O buffer sizes
/// live (4095: a page; 16383: a TLS record; 65535: a socket or pipe chunk; 262143; 1048575),
/// then 16 MiB - 1 and +Inf: 12 buckets instead of 32, about 1.5 per decade.
pub const COARSE_BUCKETS: [usize; 11] = [0, 1, 4, 7, 10, 12, 14, 16, 18, 20, 24];

/// The kernel buckets of the duration histogram `--histograms coarse` keeps, by upper bound:
/// 127 ns (a syscall that did almost nothing), 1 µs, 4 µs, 16 µs, 131 µs, 1 ms, 16.8 ms,
/// 134 ms, 1.07 s, then +Inf: about one and a half per decade, where syscalls take their time.
pub const COARSE_TIME_BUCKETS: [usize; 9] = [7, 10, 12, 14, 17, 20, 24, 27, 30];

impl HistogramMode {
    /// The kernel buckets (indices into `size_log2`) this mode exports; empty: no histograms.
    pub fn buckets(self) -> &'static [usize] {
        match self {
            HistogramMode::Full => &FULL_BUCKETS,
            HistogramMode::Coarse => &COARSE_BUCKETS,
            HistogramMode::Off => &[],
        }
    }

    /// The same for the duration histogram (indices into `time_log2`).
    pub fn time_buckets(self) -> &'static [usize] {
        match self {
            HistogramMode::Full => &FULL_BUCKETS,
            HistogramMode::Coarse => &COARSE_TIME_BUCKETS,
            HistogramMode::Off => &[],
        }
    }
}

/// A sample's own labels (after its group's): names are fixed, values come from the data.
type Labels<'a> = &'a [(&'static str, &'a str)];

/// Receives a family's samples.
type Emit<'a> = &'a mut dyn FnMut(Labels<'_>, Sample);

/// Computes a family's samples in one group.
type GroupSamples = Box<dyn Fn(&SparseActivity, Emit<'_>) + Send + Sync>;

/// Where a family's samples come from.
enum Source {
    /// Samples of each group, from the group's totals; their labels follow the group's own.
    /// Zero samples are left out (see [`Exposition::published`]).
    Group(GroupSamples),
    /// Histogram samples of each group, or with `--per-pid` of each command name
    /// ([`Published::histogram_groups`]): a histogram per process would be most of the
    /// exposition, and the per-process count and sum are the cell counters already.
    Histograms(GroupSamples),
    /// Samples of the daemon itself.
    Daemon(fn(&Published, Emit<'_>)),
    /// One unlabelled sample of the daemon itself.
    Scalar(fn(&Published) -> f64),
}

/// One sample's value.
enum Sample {
    Value(f64),
    /// A ledger cell's size histogram: its buckets, its count (successful calls) and its sum
    /// (their bytes).
    Sizes(Box<Transfer>),
    /// A ledger cell's duration histogram (`--latency`): its buckets, its count (timed calls)
    /// and its sum (their time), in seconds.
    Durations(Box<Transfer>),
}

impl Sample {
    /// Nothing happened: a zero value, or a histogram without a call.
    fn is_zero(&self) -> bool {
        match self {
            Sample::Value(v) => *v == 0.0,
            Sample::Sizes(cell) => cell.size_log2.iter().all(|n| *n == 0),
            Sample::Durations(cell) => cell.time_log2.iter().all(|n| *n == 0),
        }
    }
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
            emit(&[], Sample::Value((2 * t.counts.syscalls) as f64))
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
                let l = [("opcode", op_name(*op)), ("column", col.name())];
                emit(&l, Sample::Value(cell.calls() as f64));
            }
        })),
    ));
    out.push(Family::new(
        "zcprof_io_size_bytes",
        "Sizes of successful data-moving calls, by syscall. Bucket bounds are 2^k-1 bytes: \
         a call of exactly 2^k bytes is in the next bucket.",
        HISTOGRAM,
        Source::Histograms(Box::new(|t, emit| {
            for (sc, cell) in per_syscall(t) {
                emit(&[("syscall", sc.name())], Sample::Sizes(Box::new(cell)));
            }
        })),
    ));
    out.push(Family::new(
        "zcprof_transfer_duration_seconds",
        "Time spent inside data-moving syscalls, by syscall (wall clock, blocking included); \
         only with --latency. Bucket bounds are (2^k-1) ns.",
        HISTOGRAM,
        Source::Histograms(Box::new(|t, emit| {
            for (sc, cell) in per_syscall(t) {
                emit(&[("syscall", sc.name())], Sample::Durations(Box::new(cell)));
            }
        })),
    ));
    out.push(Family::new(
        "zcprof_build_info",
        "zcprof's version, and whether the kernel's BTF let it tell fd types apart \
         (otherwise transfers are classified by syscall only). Always 1.",
        GAUGE,
        Source::Daemon(|p, emit| {
            let btf = if p.btf { "true" } else { "false" };
            let l = [("version", env!("CARGO_PKG_VERSION")), ("btf", btf)];
            emit(&l, Sample::Value(1.0));
        }),
    ));
    out.push(Family::new(
        "zcprof_capability",
        "1 when zcprof can count what the capability feeds on this kernel (exactly, or \
         degraded as state says), 0 when it cannot and those counters stay 0.",
        GAUGE,
        Source::Daemon(|p, emit| {
            for c in p.capabilities.iter() {
                let l = [("name", c.name), ("state", c.state.as_str())];
                emit(&l, Sample::Value(f64::from(u8::from(c.state.available()))));
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
                emit(&[("reason", reason)], Sample::Value(*n as f64));
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
                emit(&[("reason", reason)], Sample::Value(*n as f64));
            }
        }),
    ));
    out.push(Family::new(
        "zcprof_map_entries",
        "Entries in each of zcprof's kernel maps.",
        GAUGE,
        Source::Daemon(|p, emit| {
            for m in &p.maps {
                emit(&[("map", m.name)], Sample::Value(m.entries as f64));
            }
        }),
    ));
    out.push(Family::new(
        "zcprof_map_capacity",
        "Most entries each of zcprof's kernel maps can hold.",
        GAUGE,
        Source::Daemon(|p, emit| {
            for m in &p.maps {
                emit(&[("map", m.name)], Sample::Value(m.capacity as f64));
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
                    &[("program", s.name.as_str())],
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
                emit(&[("program", s.name.as_str())], Sample::Value(seconds));
            }
        }),
    ));
    for (name, help, kind, value) in DAEMON {
        out.push(Family::new(name, help, kind, Source::Scalar(value)));
    }
    out
}

/// A group's ledger cells summed per syscall, over the columns, in the kernel's form (for
/// their histograms).
fn per_syscall(t: &SparseActivity) -> Vec<(Syscall, Transfer)> {
    let mut out: Vec<(Syscall, Transfer)> = Vec::new();
    for ((sc, _), cell) in &t.transfers {
        match out.last_mut() {
            Some((s, acc)) if s == sc => cell.add_to(acc),
            _ => out.push((*sc, cell.to_transfer())),
        }
    }
    out
}

/// The family stem of counter `spec`: its group's, or its own name; a counter of nanoseconds
/// is exported in seconds, and named so (`syscall_time_ns` is `syscall_time_seconds`).
fn counter_stem(spec: &CounterSpec) -> Cow<'static, str> {
    match spec.group {
        Some(g) => Cow::Borrowed(g.metric),
        None if spec.ns => {
            let stem = spec.name.strip_suffix("_ns").unwrap_or(spec.name);
            Cow::Owned(format!("{stem}_seconds"))
        }
        None => Cow::Borrowed(spec.name),
    }
}

/// A counter's value in its metric's unit.
fn counter_value(spec: &CounterSpec, v: u64) -> f64 {
    if spec.ns { v as f64 * NS } else { v as f64 }
}

/// The samples of the counter family `stem` in one group: one per counter declared in it.
fn counter_samples(stem: Cow<'static, str>) -> Source {
    // Its counters' positions, found once rather than by name in every group.
    let members: Vec<usize> = (0..COUNTERS.len())
        .filter(|&i| counter_stem(&COUNTERS[i]) == stem)
        .collect();
    Source::Group(Box::new(move |t, emit| {
        let values = t.counts.values();
        for &i in &members {
            let spec = &COUNTERS[i];
            let v = Sample::Value(counter_value(spec, values[i]));
            match spec.group {
                Some(g) => emit(&[(g.label, spec.member)], v),
                None => emit(&[], v),
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
                let l = [("syscall", sc.name()), ("column", col.name())];
                let v = if field.ns { v as f64 * NS } else { v as f64 };
                emit(&l, Sample::Value(v));
            }
        }
        if field.with_uring {
            let mut per_column: BTreeMap<Column, u64> = BTreeMap::new();
            for ((_, col), cell) in &t.uring {
                *per_column.entry(*col).or_default() += cell.values()[i];
            }
            for (col, v) in per_column {
                let l = [("syscall", "io_uring"), ("column", col.name())];
                emit(&l, Sample::Value(v as f64));
            }
        }
    }))
}

/// The catalogue, built once.
static CATALOGUE: LazyLock<Vec<Family>> = LazyLock::new(catalogue);

/// The exposition formats a scrape can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format, version 0.0.4.
    Text,
    /// OpenMetrics text, version 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics if it accepts
    /// `application/openmetrics-text` at least as much as anything else (Prometheus prefers
    /// it that way), the classic text otherwise, including when the header is absent or
    /// unreadable.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let (mut om, mut other) = (0.0f64, 0.0f64);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f64>().ok())
                .filter(|q| q.is_finite())
                .unwrap_or(1.0);
            if media == "application/openmetrics-text" {
                om = om.max(q);
            } else {
                other = other.max(q);
            }
        }
        if om > 0.0 && om >= other {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The answer's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A scrape's body, written family by family straight into one buffer (no intermediate
/// metric objects: at 10,000 processes those cost more memory and time than the text).
pub struct Exposition {
    out: String,
    format: Format,
    histograms: HistogramMode,
}

impl Exposition {
    /// An empty body of `format` with room for `capacity` bytes (the previous scrape's size
    /// spares the regrowth copies of a large body).
    pub fn new(format: Format, histograms: HistogramMode, capacity: usize) -> Self {
        Exposition {
            out: String::with_capacity(capacity),
            format,
            histograms,
        }
    }

    /// Every family of one collection. In each group, samples that are zero are left out:
    /// the totals only grow, so a zero means that it never happened in that group (an idle
    /// group exports nothing), and most of a process's possible series are such zeros. The
    /// cost: a series first appears with its first non-zero value, which rate() over the
    /// scrape where it appears does not see as an increase.
    pub fn published(&mut self, p: &Published) {
        let groups = prefixes(&p.groups);
        let by_comm = p.histogram_groups.as_deref().map(prefixes);
        let histogram_groups = by_comm.as_ref().unwrap_or(&groups);
        let created = p.daemon_started;
        for f in CATALOGUE.iter() {
            if f.kind == MetricType::HISTOGRAM && self.histograms.buckets().is_empty() {
                continue;
            }
            self.head(&f.name, &f.help, f.kind);
            match &f.source {
                Source::Group(of_group) | Source::Histograms(of_group) => {
                    let groups = match &f.source {
                        Source::Histograms(_) => histogram_groups,
                        _ => &groups,
                    };
                    for (prefix, totals) in groups {
                        of_group(totals, &mut |labels, sample| {
                            if !sample.is_zero() {
                                self.sample(&f.name, f.kind, prefix, labels, &sample, None);
                            }
                        });
                    }
                }
                Source::Daemon(of_daemon) => of_daemon(p, &mut |labels, sample| {
                    self.sample(&f.name, f.kind, "", labels, &sample, Some(created));
                }),
                Source::Scalar(value) => {
                    let sample = Sample::Value(value(p));
                    self.sample(&f.name, f.kind, "", &[], &sample, Some(created));
                }
            }
        }
    }

    /// A histogram family the `prometheus` crate keeps (the scrape durations), whose samples
    /// count since `created` (unix seconds).
    pub fn proto_histograms(&mut self, families: &[MetricFamily], created: f64) {
        for f in families {
            let name = f.name();
            self.head(name, f.help(), MetricType::HISTOGRAM);
            for m in f.get_metric() {
                let mut prefix = String::new();
                for (i, l) in m.get_label().iter().enumerate() {
                    if i > 0 {
                        prefix.push(',');
                    }
                    push_label(&mut prefix, l.name(), l.value());
                }
                let h = m.get_histogram();
                for b in h.get_bucket() {
                    let (le, n) = (b.upper_bound(), b.cumulative_count());
                    self.bucket(name, &prefix, &[], le, n);
                }
                let (n, sum) = (h.get_sample_count(), h.get_sample_sum());
                self.histogram_tail(name, &prefix, &[], n, sum);
                self.created(name, &prefix, &[], created);
            }
        }
    }

    /// The body, finished (OpenMetrics ends with `# EOF`).
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }

    /// `# HELP`, `# TYPE` and, in OpenMetrics, `# UNIT` of family `name`.
    fn head(&mut self, name: &str, help: &str, kind: MetricType) {
        let om = self.format == Format::OpenMetrics;
        // OpenMetrics names a counter family without its samples' `_total`.
        let family = match kind {
            MetricType::COUNTER if om => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let kind = match kind {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            _ => "untyped",
        };
        self.out.push_str("# HELP ");
        self.out.push_str(family);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '"' if om => self.out.push_str("\\\""),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(family);
        self.out.push(' ');
        self.out.push_str(kind);
        self.out.push('\n');
        if om && let Some(unit) = unit(family) {
            self.out.push_str("# UNIT ");
            self.out.push_str(family);
            self.out.push(' ');
            self.out.push_str(unit);
            self.out.push('\n');
        }
    }

    /// One sample (a histogram's several lines), with `_created` in OpenMetrics if `created`
    /// says since when a counter or histogram counts.
    fn sample(
        &mut self,
        name: &str,
        kind: MetricType,
        prefix: &str,
        labels: Labels<'_>,
        sample: &Sample,
        created: Option<f64>,
    ) {
        match sample {
            Sample::Value(v) => self.line(name, "", prefix, labels, None, *v),
            Sample::Sizes(cell) => {
                size_buckets(cell, self.histograms.buckets(), |le, cumulative| {
                    self.bucket(name, prefix, labels, le, cumulative)
                });
                let count: u64 = cell.size_log2.iter().sum();
                self.histogram_tail(name, prefix, labels, count, cell.bytes as f64);
            }
            Sample::Durations(cell) => {
                let kept = self.histograms.time_buckets();
                log2_buckets(&cell.time_log2, kept, NS, |le, cumulative| {
                    self.bucket(name, prefix, labels, le, cumulative)
                });
                let count: u64 = cell.time_log2.iter().sum();
                self.histogram_tail(name, prefix, labels, count, cell.time_ns as f64 * NS);
            }
        }
        if let Some(created) = created
            && kind != MetricType::GAUGE
        {
            let base = name.strip_suffix("_total").unwrap_or(name);
            self.created(base, prefix, labels, created);
        }
    }

    /// One `_bucket` line.
    fn bucket(&mut self, name: &str, prefix: &str, labels: Labels<'_>, le: f64, n: u64) {
        self.line(name, "_bucket", prefix, labels, Some(le), n as f64);
    }

    /// A histogram's +Inf bucket, `_count` and `_sum`.
    fn histogram_tail(&mut self, name: &str, prefix: &str, labels: Labels<'_>, n: u64, sum: f64) {
        self.line(
            name,
            "_bucket",
            prefix,
            labels,
            Some(f64::INFINITY),
            n as f64,
        );
        self.line(name, "_count", prefix, labels, None, n as f64);
        self.line(name, "_sum", prefix, labels, None, sum);
    }

    /// `<base>_created`, OpenMetrics only: when the counter started at 0, in unix seconds.
    fn created(&mut self, base: &str, prefix: &str, labels: Labels<'_>, created: f64) {
        if self.format == Format::OpenMetrics {
            self.line(base, "_created", prefix, labels, None, created);
        }
    }

    /// `name+suffix{prefix,labels,le="…"} value`.
    fn line(
        &mut self,
        name: &str,
        suffix: &str,
        prefix: &str,
        labels: Labels<'_>,
        le: Option<f64>,
        value: f64,
    ) {
        let out = &mut self.out;
        out.push_str(name);
        out.push_str(suffix);
        if !prefix.is_empty() || !labels.is_empty() || le.is_some() {
            out.push('{');
            out.push_str(prefix);
            let mut first = prefix.is_empty();
            for (n, v) in labels {
                if !first {
                    out.push(',');
                }
                first = false;
                push_label(out, n, v);
            }
            if let Some(le) = le {
                if !first {
                    out.push(',');
                }
                out.push_str("le=\"");
                // OpenMetrics wants le in a float's canonical form (`4095.0`), the classic
                // text as the Go client writes it (`4095`).
                push_number(out, le, self.format == Format::OpenMetrics);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        push_number(out, value, false);
        out.push('\n');
    }
}

/// The groups that have something to export, each with its labels as written.
fn prefixes(groups: &[SharedGroup]) -> Vec<(&str, &SparseActivity)> {
    groups
        .iter()
        .filter(|(_, totals)| !is_idle(totals))
        .map(|(labels, totals)| (labels.rendered.as_str(), &**totals))
        .collect()
}

/// Whether a group's totals are all zero (nothing of it would be exported).
fn is_idle(t: &SparseActivity) -> bool {
    t.counts == ThreadCounts::ZERO
        && t.transfers.values().all(|c| c.is_zero())
        && t.uring.values().all(|c| c.is_zero())
}

/// The OpenMetrics unit of a family, from its name's base-unit suffix.
fn unit(family: &str) -> Option<&'static str> {
    ["bytes", "seconds"].into_iter().find(|u| {
        family
            .strip_suffix(u)
            .is_some_and(|rest| rest.ends_with('_'))
    })
}

/// A sample value or bound: integers without a fraction (with `.0` if `float_form`), others
/// as Rust's shortest round-trip form, and the special values as Prometheus spells them.
fn push_number(out: &mut String, v: f64, float_form: bool) {
    use std::fmt::Write as _;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Exactly an integer: no exponent, no fraction (1e15 keeps every digit exact).
        let _ = write!(out, "{}", v as i64);
        if float_form {
            out.push_str(".0");
        }
    } else {
        let _ = write!(out, "{v}");
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
    use std::sync::Arc;

    use super::*;
    use crate::serve::engine::Labels;

    /// 3 calls of 0 bytes, 2 of 1 byte, 1 of 4096 bytes, 1 of 4 GiB.
    fn cell() -> Transfer {
        let mut cell = Transfer::ZERO;
        cell.size_log2[0] = 3;
        cell.size_log2[1] = 2;
        cell.size_log2[zcprof_common::size_bucket(4096)] = 1;
        cell.size_log2[zcprof_common::size_bucket(4 << 30)] = 1;
        cell.bytes = 2 + 4096 + (4 << 30);
        cell.calls = 7;
        cell
    }

    fn buckets(mode: HistogramMode) -> Vec<(f64, u64)> {
        let mut b = Vec::new();
        size_buckets(&cell(), mode.buckets(), |le, n| b.push((le, n)));
        b
    }

    #[test]
    fn histogram_bounds_are_exact_and_cumulative() {
        let b = buckets(HistogramMode::Full);
        assert_eq!(b.len(), 31);
        assert_eq!(b[0], (0.0, 3));
        assert_eq!(b[1], (1.0, 5));
        // 4096 is not <= 4095 ...
        assert_eq!(b[12], (4095.0, 5));
        // ... but is <= 8191.
        assert_eq!(b[13], (8191.0, 6));
        // The 4 GiB call is only in +Inf, i.e. in the count.
        assert_eq!(b[30], (((1u64 << 30) - 1) as f64, 6));
    }

    #[test]
    fn coarse_buckets_merge_exactly() {
        let full = buckets(HistogramMode::Full);
        let coarse = buckets(HistogramMode::Coarse);
        let bounds: Vec<f64> = coarse.iter().map(|b| b.0).collect();
        assert_eq!(
            bounds,
            [
                0.0, 1.0, 15.0, 127.0, 1023.0, 4095.0, 16383.0, 65535.0, 262143.0, 1048575.0,
                16777215.0
            ]
        );
        // Every coarse bucket is the full one with the same bound.
        for b in &coarse {
            assert!(full.contains(b), "{b:?}");
        }
        assert!(buckets(HistogramMode::Off).is_empty());
    }

    #[test]
    fn accept_header_picks_the_format() {
        use Format::*;
        assert_eq!(Format::negotiate(None), Text);
        assert_eq!(Format::negotiate(Some("*/*")), Text);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4")), Text);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            OpenMetrics
        );
        // Prometheus 2.x's header.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), OpenMetrics);
        let prefers_text = "application/openmetrics-text;q=0.3,text/plain;q=0.9";
        assert_eq!(Format::negotiate(Some(prefers_text)), Text);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Text
        );
        assert_eq!(Format::negotiate(Some(";;,q=x,\u{0}")), Text);
    }

    fn labels(values: &[&str]) -> Arc<Labels> {
        let values = values.iter().map(|v| v.to_string()).collect();
        Arc::new(Labels::new(&["comm"], values))
    }

    fn body(format: Format, mode: HistogramMode) -> String {
        let mut p = Published::empty();
        let mut busy = crate::snapshot::Activity::default();
        busy.counts.syscalls = 9;
        busy.transfers
            .insert((Syscall::ALL[0], Column::ALL[0]), cell());
        p.groups = vec![
            (labels(&["busy \"x\""]), Arc::new(busy.sparse())),
            (labels(&["idle"]), Arc::default()),
        ];
        p.lost = vec![("read_failed", 0)];
        let mut e = Exposition::new(format, mode, 0);
        e.published(&p);
        e.finish()
    }

    #[test]
    fn idle_groups_and_zero_series_are_left_out() {
        let text = body(Format::Text, HistogramMode::Coarse);
        assert!(!text.contains("idle"), "{text}");
        assert!(text.contains("zcprof_syscalls_total{comm=\"busy \\\"x\\\"\"} 9\n"));
        // A zero of a group is left out, a zero of the daemon is not.
        assert!(!text.contains("zcprof_page_faults_total{"), "{text}");
        assert!(text.contains("zcprof_events_lost_total{reason=\"read_failed\"} 0\n"));
        assert!(text.contains("le=\"4095\"} 5\n"));
        assert!(text.contains("le=\"+Inf\"} 7\n"));
        assert!(!text.contains("le=\"8191\""));
        assert!(!text.contains("# EOF"));
        assert!(body(Format::Text, HistogramMode::Full).contains("le=\"8191\"} 6\n"));
        assert!(!body(Format::Text, HistogramMode::Off).contains("_bucket"));
    }

    #[test]
    fn openmetrics_names_units_and_eof() {
        let om = body(Format::OpenMetrics, HistogramMode::Coarse);
        assert!(om.ends_with("\n# EOF\n"));
        assert_eq!(om.matches("# EOF").count(), 1);
        assert!(om.contains("# TYPE zcprof_syscalls counter\n"));
        assert!(
            om.contains("# TYPE zcprof_ledger_bytes counter\n# UNIT zcprof_ledger_bytes bytes\n")
        );
        assert!(om.contains("# UNIT zcprof_io_size_bytes bytes\n"));
        assert!(om.contains("# UNIT process_cpu_seconds seconds\n"));
        assert!(om.contains("le=\"4095.0\"} 5\n"));
        // _created for the daemon's own counters only.
        assert!(om.contains("zcprof_collections_created "));
        assert!(!om.contains("zcprof_syscalls_created"));
        // Every counter family's samples are <family>_total or <family>_created.
        let mut counter = None;
        for line in om.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                counter = (kind == "counter").then(|| name.to_string());
            } else if !line.starts_with('#')
                && let Some(c) = &counter
            {
                assert!(
                    line.starts_with(&format!("{c}_total"))
                        || line.starts_with(&format!("{c}_created")),
                    "{line}"
                );
            }
        }
    }

    /// The values of the samples whose line starts with `prefix`, in order.
    fn values(text: &str, prefix: &str) -> Vec<f64> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    }

    /// What the daemon keeps (sparse cells) is exposed as the kernel's cells it came from:
    /// every line below is computed here from those cells, bucket by bucket.
    #[test]
    fn sparse_cells_expose_the_kernels_counts() {
        let (a_col, b_col) = (Column::ALL[0], Column::ALL[1]);
        let mut read_a = Transfer {
            calls: 9,
            bytes: 70_000,
            errors: 2,
            time_ns: 3_000_000_000,
            ..Transfer::ZERO
        };
        for (k, n) in [(0, 1), (3, 2), (12, 3), (31, 1)] {
            read_a.size_log2[k] = n;
        }
        for (k, n) in [(10, 4), (20, 2), (31, 1)] {
            read_a.time_log2[k] = n;
        }
        let mut read_b = Transfer {
            calls: 2,
            bytes: 10,
            time_ns: 500,
            ..Transfer::ZERO
        };
        read_b.size_log2[3] = 2;
        read_b.time_log2[9] = 2;
        let mut kept = crate::snapshot::Activity::default();
        kept.counts.syscalls = 11;
        kept.transfers.insert((Syscall::Read, a_col), read_a);
        kept.transfers.insert((Syscall::Read, b_col), read_b);
        let mut p = Published::empty();
        p.groups = vec![(labels(&["g"]), Arc::new(kept.sparse()))];
        let mut e = Exposition::new(Format::Text, HistogramMode::Full, 0);
        e.published(&p);
        let text = e.finish();

        for (col, cell) in [(a_col, &read_a), (b_col, &read_b)] {
            let l = format!("{{comm=\"g\",syscall=\"read\",column=\"{}\"}}", col.name());
            assert!(text.contains(&format!("zcprof_transfer_calls_total{l} {}\n", cell.calls)));
            assert!(text.contains(&format!("zcprof_ledger_bytes_total{l} {}\n", cell.bytes)));
            let errors = format!("zcprof_transfer_errors_total{l} {}\n", cell.errors);
            assert_eq!(text.contains(&errors), cell.errors > 0, "{text}");
        }
        let g = "{comm=\"g\",syscall=\"read\"";
        // Sizes: bucket k of both cells, cumulative; the last kernel bucket only in +Inf.
        // Bucket k of both cells, cumulative, the last kernel bucket left to +Inf (9 calls).
        let cumulative = |bucket: &dyn Fn(usize) -> u64| -> Vec<f64> {
            let mut out: Vec<f64> = (0..HIST_BUCKETS - 1)
                .scan(0, |sum, k| {
                    *sum += bucket(k);
                    Some(*sum as f64)
                })
                .collect();
            out.push(9.0);
            out
        };
        let sizes = cumulative(&|k| read_a.size_log2[k] + read_b.size_log2[k]);
        assert_eq!(
            values(&text, &format!("zcprof_io_size_bytes_bucket{g}")),
            sizes
        );
        assert!(text.contains(&format!("zcprof_io_size_bytes_bucket{g},le=\"4095\"}} 8\n")));
        assert_eq!(
            values(&text, &format!("zcprof_io_size_bytes_count{g}")),
            [9.0]
        );
        assert_eq!(
            values(&text, &format!("zcprof_io_size_bytes_sum{g}")),
            [70_010.0]
        );
        let times = cumulative(&|k| read_a.time_log2[k] + read_b.time_log2[k]);
        let name = "zcprof_transfer_duration_seconds";
        assert_eq!(values(&text, &format!("{name}_bucket{g}")), times);
        assert_eq!(values(&text, &format!("{name}_count{g}")), [9.0]);
        assert_eq!(
            values(&text, &format!("{name}_sum{g}")),
            [3_000_000_500.0 * 1e-9]
        );
    }

    #[test]
    fn every_counter_is_named_total() {
        for f in CATALOGUE.iter() {
            assert_eq!(
                f.kind == MetricType::COUNTER,
                f.name.ends_with("_total"),
                "{}",
                f.name
            );
        }
    }
}
