//! The results as tables (terminal and Markdown), the targets, and BENCHMARKS.md.

use std::fmt::Write as _;

pub use super::table::{Tab, Target, count, first_line, opt, samples, status};
use super::{
    Results,
    daemon::DaemonCase,
    dd::{self, Case},
    detail, latency, pertask, quartiles, service,
    soak::{self, ServeRun},
    workload,
};

pub fn tables(r: &Results) -> Vec<Tab> {
    let mut tabs = Vec::new();

    if let Some(s) = &r.syscalls {
        tabs.push(table_a(s));
    }
    if let Some(w) = &r.workloads {
        let added_ns = r
            .syscalls
            .as_ref()
            .and_then(|s| s.get(Case::Run))
            .and_then(|c| c.added_ns_per_syscall);
        tabs.push(table_b(w, added_ns));
    }
    if let Some(d) = &r.daemon {
        tabs.push(table_c(d));
    }
    if let Some(l) = &r.attach_latency {
        tabs.push(table_d(l));
    }
    if let Some(s) = &r.soak {
        tabs.extend(tables_e(s));
    }
    if let Some(s) = &r.service {
        tabs.extend(service::tables(s));
    }
    if let Some(s) = &r.per_task {
        tabs.push(pertask::table(s));
    }
    if let Some(s) = &r.detail {
        tabs.extend(detail::tables(s));
    }
    tabs
}

fn table_a(s: &dd::Section) -> Tab {
    let mut rows = Vec::new();
    for c in &s.cases {
        let mut row = vec![c.label.to_owned()];
        match status(&c.error, &c.skipped) {
            Some(st) => {
                row.push(st);
                row.extend(std::iter::repeat_n(String::new(), 5));
            }
            None => {
                row.push(opt(c.median_s, 3));
                row.push(if c.case == Case::Bare {
                    format!(
                        "({:.0} per syscall)",
                        c.median_s.unwrap_or(f64::NAN) / s.syscalls as f64 * 1e9
                    )
                } else {
                    opt(c.added_ns_per_syscall, 1)
                });
                row.push(if c.floor.is_some() {
                    opt(c.vs_floor, 2)
                } else {
                    "—".into()
                });
                row.push(if c.case == Case::Bare || c.case.is_floor() {
                    "—".into()
                } else {
                    opt(c.vs_bpftrace, 3)
                });
                row.push(
                    c.counted_syscalls
                        .map_or_else(|| "—".into(), |n| n.to_string()),
                );
                row.push(samples(&c.samples_s, 3));
            }
        }
        rows.push(row);
    }
    let mut notes = vec![format!(
        "`{}`: {} syscalls; time = dd's own (copy loop only); median of {} interleaved rounds; \
         added = (median − bare median) / {}.",
        s.command, s.syscalls, s.rounds, s.syscalls
    )];
    let floors: Vec<String> = s
        .cases
        .iter()
        .filter_map(|c| {
            Some(format!(
                "{} → {}",
                c.label,
                c.floor?.label().trim_start_matches("floor: ")
            ))
        })
        .collect();
    notes.push(format!("Floors: {}.", floors.join("; ")));
    if s.foreign_hooks_per_round.iter().any(|&n| n > 0) {
        notes.push(format!(
            "Other BPF programs on sys_enter/sys_exit at the start of each round (someone \
             else's tracer, slowing every case of that round): {:?}.",
            s.foreign_hooks_per_round
        ));
    }
    for c in &s.cases {
        if let Some(why) = c.skipped.as_ref().or(c.error.as_ref()) {
            notes.push(format!("{}: {}", c.label, first_line(why)));
        }
    }
    Tab {
        title: "(a) Worst case: one-byte syscalls".into(),
        header: [
            "case",
            "dd time (s)",
            "added ns/syscall",
            "÷ floor's added",
            "÷ bpftrace's added",
            "dd syscalls counted",
            "rounds (s)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes,
    }
}

/// The loss (b) should show if zcprof cost each of the transfer's syscalls what it costs a
/// one-byte syscall in (a): the expectation that the noisy measurement is held against.
fn expected_loss_pct(w: &workload::StrategyResult, added_ns: Option<f64>) -> Option<f64> {
    let secs = w.bare_median_s?;
    let calls = w.syscalls_per_run? as f64;
    let added = added_ns?;
    (secs > 0.0).then(|| calls * added * 1e-9 / secs * 100.0)
}

fn table_b(workloads: &[workload::StrategyResult], added_ns: Option<f64>) -> Tab {
    let mut rows = Vec::new();
    let mut notes = vec![
        "Throughput from the workload's own tally (transfer only). Each round runs the bare \
         and the profiled workload back to back (alternating which goes first); loss = the \
         median over rounds of (bare − profiled) / bare, so that the VM's slow swings, which \
         move single runs by tens of percent, hit both sides of a round alike; negative = \
         noise; the middle half of the rounds' losses (25th to 75th percentile) shows how \
         far a single round strays. The MiB/s columns are medians of the runs. Expected loss = the syscalls \
         zcprof counted in the workload's processes (sender and receiver, start-up included) × \
         zcprof run's added time per syscall in (a) / the bare transfer time: what zcprof's \
         syscall hook costs this workload (its context switches cost a little more), which the \
         measured loss can only show when it is larger than the rounds' spread (n/a without \
         (a))."
            .to_owned(),
    ];
    for w in workloads {
        let mut row = vec![w.strategy.to_owned(), w.size.clone()];
        if let Some(e) = &w.error {
            row.push("NOT MEASURED".into());
            row.extend(std::iter::repeat_n(String::new(), 6));
            notes.push(format!("{}: {}", w.strategy, first_line(e)));
        } else {
            row.push(opt(w.bare_median_mib_s, 0));
            row.push(opt(w.run_median_mib_s, 0));
            row.push(opt(w.loss_pct, 1));
            row.push(
                quartiles(&w.round_loss_pct)
                    .map_or("n/a".into(), |(a, b)| format!("{a:.1} … {b:.1}")),
            );
            row.push(opt(expected_loss_pct(w, added_ns), 2));
            row.push(opt(w.latency_loss_pct, 1));
            row.push(format!(
                "bare {} / run {} / loss % {} / --latency loss % {}",
                samples(&w.bare_mib_s, 0),
                samples(&w.run_mib_s, 0),
                samples(&w.round_loss_pct, 1),
                samples(&w.latency_round_loss_pct, 1)
            ));
        }
        rows.push(row);
    }
    Tab {
        title: "(b) Realistic: zcprof workload, bare vs. under zcprof run".into(),
        header: [
            "strategy",
            "size",
            "bare MiB/s",
            "zcprof run MiB/s",
            "loss %",
            "middle half of round losses %",
            "expected loss %",
            "loss % with --latency",
            "rounds",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes,
    }
}

fn table_c(daemon: &[DaemonCase]) -> Tab {
    let mut rows = Vec::new();
    let mut notes = vec![
        "RSS = VmRSS of the daemon after the scrapes (at start: once it serves, before the \
         processes; peak = VmHWM); scrape = GET /metrics, connect to last byte, 100 ms \
         apart, after one unmeasured scrape; groups = zcprof_groups; series = sample lines."
            .to_owned(),
    ];
    for d in daemon {
        let mut row = vec![d.label.clone(), d.population_text()];
        match status(&d.error, &d.skipped) {
            Some(st) => {
                row.push(st);
                row.extend(std::iter::repeat_n(String::new(), 7));
                if let Some(why) = d.skipped.as_ref().or(d.error.as_ref()) {
                    notes.push(format!("{}: {}", d.label, first_line(why)));
                }
            }
            None => {
                let mib = |k: Option<u64>| opt(k.map(|k| k as f64 / 1024.0), 1);
                row.push(mib(d.rss_start_kib));
                row.push(mib(d.rss_kib));
                row.push(mib(d.hwm_kib));
                row.push(opt(d.scrape_median_ms, 1));
                row.push(opt(d.scrape_max_ms, 1));
                row.push(opt(d.groups, 0));
                row.push(d.series.map_or("n/a".into(), |s| s.to_string()));
                row.push(opt(d.body_bytes.map(|b| b as f64 / 1024.0), 0));
            }
        }
        rows.push(row);
    }
    Tab {
        title: format!(
            "(c) Daemon: zcprof serve with {} processes",
            daemon.first().map_or(0, |d| d.processes)
        ),
        header: [
            "configuration",
            "processes",
            "RSS at start MiB",
            "RSS MiB",
            "peak RSS MiB",
            "scrape median ms",
            "scrape max ms",
            "groups",
            "series",
            "body KiB",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes,
    }
}

fn table_d(l: &latency::Section) -> Tab {
    let row = match &l.error {
        Some(_) => vec![
            l.command.clone(),
            "NOT MEASURED".into(),
            String::new(),
            String::new(),
            String::new(),
        ],
        None => vec![
            l.command.clone(),
            opt(l.median_ms, 0),
            opt(l.max_ms, 0),
            opt(l.attached_median_ms, 0),
            samples(&l.samples_ms, 0),
        ],
    };
    let mut notes = vec![
        "From spawning zcprof attach to its first interval line with the target's syscalls/s \
         > 0 (target: a dd making one-byte syscalls); `attached` = its `zcprof: attached` line."
            .to_owned(),
    ];
    if let Some(e) = &l.error {
        notes.push(first_line(e));
    }
    Tab {
        title: "(d) Attach latency".into(),
        header: [
            "command",
            "median ms",
            "max ms",
            "attached (median ms)",
            "samples (ms)",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![row],
        notes,
    }
}

fn mib(kib: Option<u64>) -> String {
    opt(kib.map(|k| k as f64 / 1024.0), 1)
}

/// The fork-rate ladder and the soak's start/peak/end figures.
fn tables_e(s: &soak::Section) -> Vec<Tab> {
    let mut rate_notes = vec![format!(
        "`zc-storm`: LOOPS threads fork {} short-lived processes in all (each one write of \
         1000 bytes to /dev/null, then exit) while 10 bursts of 200 threads run; forks/s from \
         its own tally. Bare: without zcprof. Under serve: `zcprof serve` at its defaults, \
         the soak first, then the same storms as the bare ones (and twice the most loops) \
         under the same daemon. held = nothing lost and every write counted.",
        count(s.ladder_processes as f64)
    )];
    if let Some(e) = &s.error {
        rate_notes.push(format!("not measured: {}", first_line(e)));
    }
    let mut rows = Vec::new();
    let serve_row = |what: String, r: &ServeRun| -> Vec<String> {
        let bare = s.bare_rate(r.storm.loops);
        let mut row = vec![what, r.storm.loops.to_string()];
        if r.error.is_some() {
            row.push("NOT MEASURED".into());
            row.extend(std::iter::repeat_n(String::new(), 6));
            return row;
        }
        row.push(count(r.storm.processes as f64));
        row.push(bare.map_or("n/a".into(), count));
        row.push(count(r.storm.forks_per_s));
        row.push(opt(bare.map(|b| r.storm.forks_per_s / b), 2));
        row.push(count(r.lost_total()));
        row.push(
            match (r.held(), r.writes_checkable()) {
                (true, true) => "yes",
                (true, false) => "yes (writes ≥ tally: other storm)",
                (false, _) => "NO",
            }
            .into(),
        );
        row
    };
    for b in &s.bare {
        rows.push(vec![
            "bare".into(),
            b.loops.to_string(),
            count(b.processes as f64),
            count(b.forks_per_s),
            "—".into(),
            "—".into(),
            "—".into(),
            "—".into(),
        ]);
    }
    if let Some(r) = &s.soak {
        rows.push(serve_row("serve: soak".into(), r));
    }
    for r in &s.ladder {
        rows.push(serve_row("serve: ladder".into(), r));
        if let Some(e) = &r.error {
            rate_notes.push(format!("ladder storm: {}", first_line(e)));
        }
    }
    for r in s.soak.iter().chain(&s.ladder) {
        if !r.writes_checkable() {
            rate_notes.push(format!(
                "{} loops: other zc-storm processes ran on the host meanwhile (pids {:?}; \
                 another checkout's tests): serve counts the whole host and their children \
                 have the same name, so the writes could only be checked to be at least the \
                 tally (counted {} child writes for {}).",
                r.storm.loops,
                r.foreign_storms,
                count(r.child_writes),
                count(r.storm.processes as f64)
            ));
        }
    }
    if let Some(b) = s.bare_best() {
        rate_notes.push(format!(
            "Highest bare rate: {} forks/s ({} loops).",
            count(b.forks_per_s),
            b.loops
        ));
    }
    match s.highest_held() {
        Some(h) => rate_notes.push(format!(
            "Highest rate zcprof serve held (nothing lost, every write counted): {} forks/s \
             ({} loops, {} processes).",
            count(h.storm.forks_per_s),
            h.storm.loops,
            count(h.storm.processes as f64)
        )),
        None if s.soak.is_some() => {
            rate_notes.push("zcprof serve held none of the storms exactly.".into())
        }
        None => {}
    }
    let rates = Tab {
        title: "(e) Soak: fork rate, bare and under zcprof serve".into(),
        header: [
            "storm",
            "loops",
            "processes",
            "bare forks/s",
            "under serve forks/s",
            "÷ bare",
            "lost",
            "held",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes: rate_notes,
    };
    let mut tabs = vec![rates];
    let Some(r) = &s.soak else { return tabs };
    if let Some(e) = &r.error {
        tabs[0]
            .notes
            .push(format!("soak: not measured: {}", first_line(e)));
        return tabs;
    }
    let entries = |m: &std::collections::BTreeMap<String, f64>, k: &str| m.get(k).copied();
    let change = |a: Option<f64>, b: Option<f64>, d: usize| match (a, b) {
        (Some(a), Some(b)) => format!("{:+.d$}", b - a),
        _ => "n/a".into(),
    };
    let kib_mib = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
    let mut rows = vec![vec![
        "RSS MiB (VmRSS)".to_owned(),
        mib(r.rss_start_kib),
        mib(r.rss_peak_kib),
        mib(r.rss_end_kib),
        change(kib_mib(r.rss_start_kib), kib_mib(r.rss_end_kib), 1),
    ]];
    let maps: Vec<&String> = r.entries_start.keys().chain(r.entries_end.keys()).collect();
    let mut maps: Vec<&String> = maps.into_iter().collect();
    maps.sort();
    maps.dedup();
    for m in maps {
        let (a, b) = (entries(&r.entries_start, m), entries(&r.entries_end, m));
        rows.push(vec![
            format!("map entries: {m}"),
            opt(a, 0),
            if m == "threads" {
                opt(r.thread_entries_peak, 0)
            } else {
                "—".into()
            },
            opt(b, 0),
            change(a, b, 0),
        ]);
    }
    let series = |v: Option<usize>| v.map(|v| v as f64);
    rows.push(vec![
        "groups (zcprof_groups)".into(),
        opt(r.groups_start, 0),
        "—".into(),
        opt(r.groups_end, 0),
        change(r.groups_start, r.groups_end, 0),
    ]);
    rows.push(vec![
        "series (sample lines)".into(),
        opt(series(r.series_start), 0),
        "—".into(),
        opt(series(r.series_end), 0),
        change(series(r.series_start), series(r.series_end), 0),
    ]);
    let host = |v: Option<u64>| v.map(|v| v as f64);
    rows.push(vec![
        "threads on the host".into(),
        opt(host(r.host_threads_start), 0),
        "—".into(),
        opt(host(r.host_threads_end), 0),
        change(host(r.host_threads_start), host(r.host_threads_end), 0),
    ]);
    let lost: Vec<String> = r
        .lost
        .iter()
        .map(|(k, v)| format!("{k} {}", count(*v)))
        .collect();
    let st = &r.storm;
    let notes = vec![
        format!(
            "{} processes ({} loops) and {} burst threads in {:.0} s: {} forks/s; the whole \
             case under the daemon (start scrape to end scrape) {:.0} s, the last counts {:.0} \
             s after the storm ended. RSS sampled every 2 s; peak = the highest sample (VmHWM \
             at the end, start-up included: {} MiB); start = after the daemon's first \
             collection, end = once every write was counted.",
            count(st.processes as f64),
            st.loops,
            count(st.threads as f64),
            st.elapsed_s,
            count(st.forks_per_s),
            r.wall_s.unwrap_or(f64::NAN),
            r.settle_s.unwrap_or(f64::NAN),
            mib(r.hwm_end_kib)
        ),
        format!(
            "Lost over the storm, by reason: {}.",
            if lost.is_empty() {
                "no lost counters exported".to_owned()
            } else {
                lost.join(", ")
            }
        ),
        format!(
            "Counted vs tally: zcstorm-child writes {} of {} ({} of {} bytes); zcstorm-burst \
             writes {} of {} ({} of {} bytes); threads retired {}, processes retired {}.",
            count(r.child_writes),
            count(st.processes as f64),
            count(r.child_bytes),
            count((st.processes * st.bytes) as f64),
            count(r.burst_writes),
            count(st.threads as f64),
            count(r.burst_bytes),
            count((st.threads * st.bytes) as f64),
            count(r.threads_retired),
            count(r.processes_retired)
        ),
        format!(
            "Targets: thread map entries at the end within {} of the start plus the host's \
             own thread growth (other jobs start and end threads meanwhile); RSS at the end \
             within +{} MiB or +{} % of the start, whichever is more (the allocator keeps some \
             freed pages and hash maps grown by the storm do not shrink, a one-off cost; a \
             leak of 11 bytes per process would already exceed 10 MiB).",
            soak::ENTRIES_MARGIN,
            soak::RSS_MARGIN_MIB,
            soak::RSS_MARGIN_PCT
        ),
    ];
    tabs.push(Tab {
        title: format!(
            "(e) Soak: zcprof serve through {} processes",
            count(st.processes as f64)
        ),
        header: ["quantity", "start", "peak", "end", "change"]
            .map(String::from)
            .to_vec(),
        rows,
        notes,
    });
    tabs
}

pub fn targets(r: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    if let Some(s) = &r.syscalls {
        targets_a(s, &mut t);
    }
    for w in r.workloads.iter().flatten() {
        t.push(
            Target::new(
                format!(
                    "(b) {} {}: throughput lost under zcprof run",
                    w.strategy, w.size
                ),
                w.loss_pct,
                2.0,
                "%",
            )
            .because(w.error.as_deref().map(first_line)),
        );
        t.push(
            Target::new(
                format!(
                    "(b) {} {}: throughput lost under zcprof run --latency",
                    w.strategy, w.size
                ),
                w.latency_loss_pct,
                2.0,
                "%",
            )
            .because(w.error.as_deref().map(first_line)),
        );
    }
    for d in r.daemon.iter().flatten() {
        // The growth rows show how cost follows the series; they have no target of their own.
        if d.id.ends_with("-series") {
            continue;
        }
        let why = d
            .error
            .as_ref()
            .or(d.skipped.as_ref())
            .map(|e| first_line(e));
        let what = d.describe();
        // One series per live process is the exposition's worst case, with targets of its
        // own (issue 16): RSS, scrape time and body size.
        let live = d.id == "per-pid-live";
        let (rss, scrape) = if live { (64.0, 100.0) } else { (25.0, 50.0) };
        t.push(
            Target::new(
                format!("(c) {what}: RSS"),
                d.rss_kib.map(|k| k as f64 / 1024.0),
                rss,
                "MiB",
            )
            .because(why.clone()),
        );
        t.push(
            Target::new(
                format!(
                    "(c) {what}: scrape latency (median of {})",
                    r.config.scrapes
                ),
                d.scrape_median_ms,
                scrape,
                "ms",
            )
            .because(why.clone()),
        );
        if live {
            t.push(
                Target::new(
                    format!("(c) {what}: scrape body"),
                    d.body_bytes.map(|b| b as f64 / 1e6),
                    8.0,
                    "MB",
                )
                .because(why),
            );
        }
    }
    if let Some(l) = &r.attach_latency {
        t.push(
            Target::new(
                format!("(d) attach latency (median of {})", r.config.attach_samples),
                l.median_ms,
                300.0,
                "ms",
            )
            .because(l.error.as_deref().map(first_line)),
        );
    }
    if let Some(s) = &r.soak {
        targets_e(s, &mut t);
    }
    if let Some(s) = &r.service {
        service::targets(s, &mut t);
    }
    if let Some(s) = &r.detail {
        detail::targets(s, &mut t);
    }
    t
}

fn targets_e(s: &soak::Section, t: &mut Vec<Target>) {
    let Some(r) = &s.soak else {
        if let Some(e) = &s.error {
            t.push(
                Target::new("(e) soak: events lost".into(), None, 0.0, "events")
                    .because(Some(first_line(e))),
            );
        }
        return;
    };
    let n = count(r.storm.processes as f64);
    let why = r.error.as_deref().map(first_line);
    let ok = r.error.is_none();
    t.push(
        Target::new(
            format!("(e) soak through {n} processes: events lost (every reason)"),
            ok.then(|| r.lost_total()),
            0.0,
            "events",
        )
        .because(why.clone()),
    );
    let uncheckable = (!r.writes_checkable()).then(|| {
        format!(
            "other zc-storm processes ran on the host meanwhile (pids {:?}), whose writes \
             serve counted with ours",
            r.foreign_storms
        )
    });
    t.push(
        Target::new(
            format!("(e) soak through {n} processes: writes (calls and bytes) off the tally"),
            (ok && r.writes_checkable()).then(|| r.writes_off()),
            0.0,
            "writes",
        )
        .because(why.clone().or(uncheckable)),
    );
    t.push(
        Target::new(
            format!(
                "(e) soak through {n} processes: thread map entries, end − start − the host's \
                 thread growth"
            ),
            r.entries_growth().filter(|_| ok),
            soak::ENTRIES_MARGIN,
            "entries",
        )
        .because(why.clone()),
    );
    t.push(
        Target::new(
            format!(
                "(e) soak through {n} processes: RSS, end − start (+{} MiB or +{} %)",
                soak::RSS_MARGIN_MIB,
                soak::RSS_MARGIN_PCT
            ),
            r.rss_growth_mib().filter(|_| ok),
            r.rss_margin_mib(),
            "MiB",
        )
        .because(why),
    );
}

fn targets_a(s: &dd::Section, t: &mut Vec<Target>) {
    let why_a = |c: &dd::CaseResult, other: Option<Case>| {
        let mut reasons = Vec::new();
        for case in std::iter::once(c.case).chain(other) {
            if let Some(x) = s.get(case) {
                if let Some(e) = x.error.as_ref().or(x.skipped.as_ref()) {
                    reasons.push(format!("{}: {}", x.label, first_line(e)));
                } else if x.added_ns_per_syscall.is_some_and(|a| a <= 0.0) {
                    reasons.push(format!("{}: added time ≤ 0 (noise)", x.label));
                }
            }
        }
        if reasons.is_empty() {
            reasons.push("bare dd not measured".into());
        }
        Some(reasons.join("; "))
    };
    for case in [Case::Run, Case::Attach, Case::Serve] {
        let Some(c) = s.get(case) else { continue };
        let name = c.label.split(" (").next().unwrap_or(c.label);
        let floor = c
            .floor
            .map_or("floor".to_owned(), |f| f.label().replace("floor: ", ""));
        t.push(
            Target::new(
                format!("(a) {name}: added time per syscall ÷ that of {floor}"),
                c.vs_floor,
                1.3,
                "×",
            )
            .because(why_a(c, c.floor)),
        );
        t.push(
            Target::new(
                format!("(a) {name}: added time per syscall ÷ bpftrace's"),
                c.vs_bpftrace,
                0.25,
                "×",
            )
            .because(why_a(c, Some(Case::Bpftrace))),
        );
    }
    if let Some(c) = s.get(Case::RunLatency) {
        t.push(
            Target::new(
                "(a) zcprof run --latency: added time per syscall ÷ that of zcprof run".into(),
                c.vs_floor,
                2.0,
                "×",
            )
            .because(why_a(c, c.floor)),
        );
    }
}

pub fn targets_tab(targets: &[Target]) -> Tab {
    Tab {
        title: "Targets".into(),
        header: ["target", "measured", "limit", "verdict"]
            .map(String::from)
            .to_vec(),
        rows: targets
            .iter()
            .map(|t| {
                vec![
                    t.what.clone(),
                    t.measured_text(),
                    t.limit_text(),
                    t.verdict().to_owned(),
                ]
            })
            .collect(),
        notes: targets
            .iter()
            .filter_map(|t| Some(format!("{}: not evaluated: {}", t.what, t.why.as_ref()?)))
            .collect(),
    }
}

/// The whole of BENCHMARKS.md.
pub fn markdown(r: &Results, tabs: &[Tab]) -> String {
    let m = &r.machine;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmarks\n\n\
         Written by `cargo xtask bench{}` on {} ({}); the next run rewrites this file, so do \
         not edit it by hand. The same numbers, every sample included, are in the JSON file \
         the command writes (`target/bench.json` by default).\n",
        if r.quick { " --quick" } else { "" },
        r.date,
        r.git
    );
    let _ = writeln!(
        out,
        "## Machine\n\n\
         - kernel: {} (`uname -r`)\n\
         - CPU: {}, {} logical CPUs (`nproc`)\n\
         - memory: {}\n\
         - tools: {}; {}; {}\n",
        m.kernel, m.cpu_model, m.cpus, m.memory, m.zcprof, m.bpftrace, m.perf
    );
    let _ = writeln!(
        out,
        "## Conditions\n\n\
         - before the first case: {}\n\
         - after the last case: {}\n\n\
         The load average still shows the burst of (c)'s 10,000 processes minutes later; \
         other BPF programs on the syscall hooks (someone else's tracer) slow down every \
         syscall, bare dd's included.\n",
        r.conditions_before.describe(),
        r.conditions_after.describe()
    );
    let bare_ns = r
        .syscalls
        .as_ref()
        .and_then(|s| Some(s.get(Case::Bare)?.median_s? / s.syscalls as f64 * 1e9))
        .map_or_else(String::new, |ns| {
            format!(" (about {ns:.0} ns each in this run)")
        });
    out.push_str(&HOW_TO_READ.replace("{bare}", &bare_ns));
    out.push('\n');
    out.push_str("## Results\n\n");
    for tab in tabs {
        out.push_str(&tab.markdown());
        out.push('\n');
    }
    if !r.not_measured.is_empty() {
        out.push_str("## Not measured\n\n");
        for n in &r.not_measured {
            let _ = writeln!(out, "- {}", first_line(n));
        }
        out.push('\n');
    }
    out
}

const HOW_TO_READ: &str = "## How to read this\n\n\
The machine is a noisy 2-core VM: absolute times move by 20 % and more from one run to the next, so \
every case is run in interleaved rounds (each round runs every case once, in rotated order), \
each figure is the median of its rounds, and every ratio is taken between medians of the same \
run. (a) is the worst case, not a typical one: `dd bs=1` does nothing but one-byte \
syscalls{bare}, so a hook's per-syscall cost is all there is to see; the time is \
dd's own (its copy loop), so no tool's start-up is in it. *Added ns/syscall* is (median − bare \
median) / number of syscalls. A *floor* loads the same hooks with empty program bodies: what \
the kernel charges for running any BPF program at those points, which no profiler built on \
them can go below; zcprof's own work is what it adds above that floor, and bpftrace is the \
cost of doing the same counting with a general-purpose tool. A ratio reads `n/a` when a side \
was not measured or its added time was lost in the noise (≤ 0). (b) is what a real data mover \
loses with 64 KiB chunks (few syscalls per byte), from the workload's own timing of its \
transfer; compare a loss with the spread of the rounds beside it: a loss smaller than \
that spread is noise. (c) is the always-on daemon's memory and the time Prometheus would wait for a scrape; with the default grouping 10,000 \
short-lived processes collapse into a few series, so only `--per-pid` with live processes \
really has 10,000 series. (d) is how long a user waits after `zcprof attach` for the first \
counted line (programs loaded and attached, plus one 10 ms interval). (e) is the daemon through \
a million short-lived processes forked as fast as the machine forks: nothing may be lost, every \
write must be counted, and the kernel's thread table and the daemon's memory must come back to \
where they started; the fork rates say how fast this machine forks without zcprof and with it. \
(f) is a web server: nginx serving a 4 KiB and a 1 MiB file to wrk over keep-alive loopback, \
under each mode, its floor and the peers; the loss in requests/s is taken round by round \
against the bare run of the same round, and the worker's CPU time per request shows the cost \
even where requests/s do not move. (g) is an experiment, not the product: whether hooking only \
the watched tasks (per-task perf events on the syscall tracepoints) spares the others. \
(h) is what the detail options of `zcprof run` cost: `--by-file --by-peer` and `--folded` on \
(a)'s one-byte syscalls (every call of dd's copy loop moves a byte, so `--folded` captures a \
stack for each), and `--folded` on (b)'s read-write workload, beside a plain `zcprof run` in \
the same rounds. \
Each target is printed \
as met or MISSED; the bench is a measurement, not a test.\n";
