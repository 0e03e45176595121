//! `cargo xtask bench`: what zcprof costs, measured against a floor and against peers, with
//! interleaved runs (A B C … A B C …, medians), as a table, as JSON, and into BENCHMARKS.md
//! with the machine's description.
//!
//! Cases: (a) the worst case, one-byte syscalls (`dd.rs`); (b) realistic transfers
//! (`workload.rs`); (c) the daemon's memory and scrape latency (`daemon.rs`); (d) attach
//! latency (`latency.rs`); (e) the soak, `zcprof serve` through a million short-lived processes
//! (`soak.rs`); (f) a service, nginx serving files to wrk under each mode and peer
//! (`service.rs`); (g) an experiment, per-task hooks on the syscall tracepoints
//! (`pertask.rs`); (h) the detail options (`--by-file --by-peer`, `--folded`) on one-byte
//! syscalls and on a data mover (`detail.rs`). `child.rs` runs processes with deadlines, `sleepers.rs` makes many
//! live processes, `report.rs` renders the tables, the targets and BENCHMARKS.md.
//!
//! The bench is a measurement, not a test: it exits 0 when targets are missed (they are
//! printed as MISSED), and fails only when a measurement could not be made.

mod child;
mod daemon;
mod dd;
mod detail;
mod latency;
mod pertask;
mod report;
mod service;
mod sleepers;
mod soak;
mod table;
mod workload;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::{cargo, process};

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Fewer rounds (3) and smaller runs (dd of 500,000 bytes, 64M workloads)
    #[arg(long)]
    pub quick: bool,
    /// Write every result and sample as JSON to FILE [default: <target dir>/bench.json]
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run only these cases (a: syscalls, b: workloads, c: daemon, d: attach latency,
    /// e: soak, f: service, g: per-task hooks experiment, h: detail options); BENCHMARKS.md is
    /// then left as it is
    #[arg(long, value_name = "CASE", value_delimiter = ',', num_args = 1..,
          value_parser = clap::builder::PossibleValuesParser::new(
              ["a", "b", "c", "d", "e", "f", "g", "h"]))]
    pub only: Vec<String>,
    /// Seconds of each wrk run of the service (f), one per file and case [default: 2]
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u32).range(1..))]
    pub service_seconds: Option<u32>,
    /// Interleaved rounds of the service (f) [default: 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub service_rounds: Option<u64>,
    /// Processes of the soak (e) [default: 1,000,000; 100,000 with --quick]
    #[arg(long, value_name = "N")]
    pub soak_processes: Option<usize>,
}

impl Args {
    fn selected(&self, case: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|c| c == case)
    }
}

/// Sizes and repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// dd's count (bs=1): 2 × count syscalls.
    pub dd_count: u64,
    /// Interleaved rounds of (a): nine, because the floors alone move by 10 ns per syscall
    /// from one round to the next here, as much as zcprof adds to them.
    pub rounds: usize,
    /// Rounds of (b): more than (a)'s, since a data mover's throughput on this VM moves by
    /// tens of percent from run to run and (b) looks for a loss of a few.
    pub workload_rounds: usize,
    /// `zcprof workload --size`.
    pub workload_size: &'static str,
    /// Processes tracked by the daemon in (c).
    pub daemon_processes: usize,
    /// Measured scrapes per daemon case.
    pub scrapes: usize,
    /// Samples of (d).
    pub attach_samples: usize,
    /// Processes of the soak (e) under `zcprof serve`.
    pub soak_processes: usize,
    /// Processes of each storm of (e)'s fork-rate ladders (bare, and under serve after the
    /// soak): enough for a rate that a second of noise does not move much.
    pub soak_ladder_processes: usize,
    /// Seconds of each wrk run of (f): short by default, so that (f)'s ten cases × two files
    /// × three rounds take about three minutes; `--service-seconds` for steadier figures.
    pub service_seconds: u32,
    /// Rounds of (f) (`--service-rounds`).
    pub service_rounds: usize,
}

impl Config {
    fn new(
        quick: bool,
        soak_processes: Option<usize>,
        service_seconds: Option<u32>,
        service_rounds: Option<u64>,
    ) -> Config {
        Config {
            dd_count: if quick { 500_000 } else { 2_000_000 },
            rounds: if quick { 3 } else { 9 },
            workload_rounds: if quick { 5 } else { 15 },
            workload_size: if quick { "64M" } else { "256M" },
            daemon_processes: 10_000,
            scrapes: 20,
            attach_samples: 5,
            soak_processes: soak_processes.unwrap_or(if quick { 100_000 } else { 1_000_000 }),
            soak_ladder_processes: if quick { 20_000 } else { 100_000 },
            service_seconds: service_seconds.unwrap_or(2),
            service_rounds: service_rounds.map_or(3, |n| n as usize),
        }
    }
}

/// What the machine is.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory: String,
    pub zcprof: String,
    pub bpftrace: String,
    pub perf: String,
}

/// What else ran: the load, and other BPF programs on the syscall hooks (each slows down every
/// syscall on the machine, bare dd's included, which inflates the bare times and hides part
/// of every tool's added cost).
#[derive(Debug, Clone, Serialize)]
pub struct Conditions {
    /// /proc/loadavg.
    pub loadavg: String,
    /// Raw tracepoint programs on sys_enter/sys_exit not started by the bench.
    pub foreign_syscall_hooks: Vec<Hook>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hook {
    pub tracepoint: String,
    pub prog_id: u64,
    pub prog_name: String,
    /// Average run time per call, if the kernel keeps BPF statistics.
    pub avg_ns: Option<f64>,
}

impl Conditions {
    pub fn describe(&self) -> String {
        let mut text = format!("load average {}", self.loadavg);
        if self.foreign_syscall_hooks.is_empty() {
            text.push_str("; no other BPF programs on sys_enter/sys_exit");
        } else {
            let hooks: Vec<String> = self
                .foreign_syscall_hooks
                .iter()
                .map(|h| {
                    let avg = h
                        .avg_ns
                        .map_or_else(String::new, |a| format!(", {a:.0} ns per call"));
                    format!(
                        "{} (prog {} `{}`{avg})",
                        h.tracepoint, h.prog_id, h.prog_name
                    )
                })
                .collect();
            let _ = write!(
                text,
                "; {} other BPF programs on the syscall hooks, which every syscall of every \
                 case (bare dd's too) went through: {}",
                hooks.len(),
                hooks.join(", ")
            );
        }
        text
    }
}

fn bpftool_json(args: &[&str]) -> Option<serde_json::Value> {
    let mut cmd = process::command("bpftool");
    cmd.arg("-j").args(args);
    let out = process::capture(&mut cmd).ok()?;
    out.status
        .success()
        .then(|| serde_json::from_str(&out.stdout).ok())?
}

pub fn conditions() -> Conditions {
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let mut hooks = Vec::new();
    let links = bpftool_json(&["link", "list"]).unwrap_or_default();
    for link in links.as_array().into_iter().flatten() {
        let tp = link["tp_name"].as_str().unwrap_or_default();
        if link["type"] != "raw_tracepoint" || !matches!(tp, "sys_enter" | "sys_exit") {
            continue;
        }
        let Some(prog_id) = link["prog_id"].as_u64() else {
            continue;
        };
        let prog = bpftool_json(&["prog", "show", "id", &prog_id.to_string()]).unwrap_or_default();
        let (time, count) = (prog["run_time_ns"].as_f64(), prog["run_cnt"].as_f64());
        hooks.push(Hook {
            tracepoint: tp.to_owned(),
            prog_id,
            prog_name: prog["name"].as_str().unwrap_or("?").to_owned(),
            avg_ns: match (time, count) {
                (Some(t), Some(c)) if c > 0.0 => Some(t / c),
                _ => None,
            },
        });
    }
    Conditions {
        loadavg,
        foreign_syscall_hooks: hooks,
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub quick: bool,
    pub date: String,
    pub git: String,
    pub machine: Machine,
    /// Before the first case and after the last.
    pub conditions_before: Conditions,
    pub conditions_after: Conditions,
    pub config: Config,
    /// (a); None if not selected (`--only`), and so on.
    pub syscalls: Option<dd::Section>,
    pub workloads: Option<Vec<workload::StrategyResult>>,
    pub daemon: Option<Vec<daemon::DaemonCase>>,
    pub attach_latency: Option<latency::Section>,
    pub soak: Option<soak::Section>,
    pub service: Option<service::Section>,
    pub per_task: Option<pertask::Section>,
    pub detail: Option<detail::Section>,
    pub targets: Vec<report::Target>,
    /// Measurements that could not be made, and why.
    pub not_measured: Vec<String>,
    /// Optional cases this zcprof cannot run, and why.
    pub skipped: Vec<String>,
}

/// The median (mean of the middle two for an even count); None if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The 25th and 75th percentiles of `v` (nearest rank).
pub fn quartiles(v: &[f64]) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some((at(0.25), at(0.75)))
}

/// First line of a command's stdout (or stderr), or `unknown`.
fn first_output_line(program: &str, args: &[&str]) -> String {
    let mut cmd = process::command(program);
    cmd.args(args);
    match process::capture(&mut cmd) {
        Ok(out) if out.status.success() => out
            .stdout
            .lines()
            .chain(out.stderr.lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("unknown")
            .to_owned(),
        _ => format!("{program}: not available"),
    }
}

fn machine(zcprof: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)),
        );
    Machine {
        kernel: first_output_line("uname", &["-r"]),
        cpu_model,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory,
        zcprof: first_output_line(&zcprof.to_string_lossy(), &["--version"]),
        bpftrace: first_output_line("bpftrace", &["--version"]),
        perf: first_output_line("perf", &["--version"]),
    }
}

/// `abc1234` or `abc1234 + uncommitted changes`.
fn git_state() -> String {
    let root = cargo::workspace_root()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut head = process::command("git");
    head.arg("-C")
        .arg(&root)
        .args(["rev-parse", "--short", "HEAD"]);
    let mut dirty = process::command("git");
    dirty.arg("-C").arg(&root).args(["status", "--porcelain"]);
    match (process::capture(&mut head), process::capture(&mut dirty)) {
        (Ok(h), Ok(d)) if h.status.success() => {
            let commit = format!("git {}", h.stdout.trim());
            if d.stdout.trim().is_empty() {
                commit
            } else {
                format!("{commit} + uncommitted changes")
            }
        }
        _ => "git state unknown".into(),
    }
}

fn now_utc() -> String {
    first_output_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

/// Runs every case with the zcprof binary at `zcprof`.
pub fn run(zcprof: &Path, args: &Args) -> Result<()> {
    let config = Config::new(
        args.quick,
        args.soak_processes,
        args.service_seconds,
        args.service_rounds,
    );
    let json_path = match &args.json {
        Some(p) => p.clone(),
        None => cargo::target_dir()?.join("bench.json"),
    };
    let say = |line: String| eprintln!("{line}");
    say(format!(
        "bench: {} run: dd count={}, {} rounds, workloads {}, {} daemon processes, soak of {} \
         processes, service {} rounds of {} s",
        if args.quick { "quick" } else { "full" },
        config.dd_count,
        config.rounds,
        config.workload_size,
        config.daemon_processes,
        config.soak_processes,
        config.service_rounds,
        config.service_seconds
    ));
    let machine = machine(zcprof);
    let date = now_utc();
    let git = git_state();
    let conditions_before = conditions();
    say(format!("bench: before: {}", conditions_before.describe()));

    let syscalls = args.selected("a").then(|| dd::run(zcprof, &config, &say));
    let workloads = args
        .selected("b")
        .then(|| workload::run(zcprof, &config, &say));
    let daemon = args
        .selected("c")
        .then(|| daemon::run(zcprof, &config, &say));
    let attach_latency = args
        .selected("d")
        .then(|| latency::run(zcprof, &config, &say));
    let soak = args.selected("e").then(|| soak::run(zcprof, &config, &say));
    let service = args
        .selected("f")
        .then(|| service::run(zcprof, &config, &say));
    let per_task = args
        .selected("g")
        .then(|| pertask::run(zcprof, &config, &say));
    let detail = args
        .selected("h")
        .then(|| detail::run(zcprof, &config, &say));
    let conditions_after = conditions();

    let mut not_measured = Vec::new();
    let mut skipped = Vec::new();
    for c in syscalls.iter().flat_map(|s| &s.cases) {
        if let Some(e) = &c.error {
            not_measured.push(format!("(a) {}: {e}", c.label));
        }
        if let Some(s) = &c.skipped {
            skipped.push(format!("(a) {}: {s}", c.label));
        }
    }
    for w in workloads.iter().flatten() {
        if let Some(e) = &w.error {
            not_measured.push(format!("(b) {}: {e}", w.strategy));
        }
    }
    for d in daemon.iter().flatten() {
        if let Some(e) = &d.error {
            not_measured.push(format!("(c) {}: {e}", d.label));
        }
        if let Some(s) = &d.skipped {
            skipped.push(format!("(c) {}: {s}", d.label));
        }
    }
    if let Some(e) = attach_latency.as_ref().and_then(|l| l.error.as_ref()) {
        not_measured.push(format!("(d) attach latency: {e}"));
    }
    if let Some(s) = &soak {
        if let Some(e) = &s.error {
            not_measured.push(format!("(e) soak: {e}"));
        }
        for (what, r) in s
            .soak
            .iter()
            .map(|r| ("soak", r))
            .chain(s.ladder.iter().map(|r| ("ladder", r)))
        {
            if let Some(e) = &r.error {
                not_measured.push(format!("(e) {what} storm: {e}"));
            }
        }
    }

    for c in service.iter().flat_map(|s| &s.cases) {
        if let Some(e) = &c.error {
            not_measured.push(format!("(f) {}: {e}", c.label));
        }
        if let Some(s) = &c.skipped {
            skipped.push(format!("(f) {}: {s}", c.label));
        }
    }
    for w in per_task.iter().flat_map(|s| &s.ways) {
        if let Some(e) = &w.error {
            not_measured.push(format!("(g) {}: {e}", w.label));
        }
    }
    not_measured.extend(detail.iter().flat_map(detail::not_measured));

    let mut results = Results {
        quick: args.quick,
        date,
        git,
        machine,
        conditions_before,
        conditions_after,
        config,
        syscalls,
        workloads,
        daemon,
        attach_latency,
        soak,
        service,
        per_task,
        detail,
        targets: Vec::new(),
        not_measured,
        skipped,
    };
    results.targets = report::targets(&results);

    let mut tabs = report::tables(&results);
    tabs.insert(0, report::targets_tab(&results.targets));
    println!();
    for tab in &tabs {
        println!("{}", tab.terminal());
    }

    let json = serde_json::to_string_pretty(&results).context("formatting the JSON")?;
    if let Some(dir) = json_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("JSON: {}", json_path.display());
    let md_path = cargo::workspace_root()?.join("BENCHMARKS.md");
    if args.only.is_empty() {
        std::fs::write(&md_path, report::markdown(&results, &tabs))
            .with_context(|| format!("writing {}", md_path.display()))?;
        println!("Markdown: {}", md_path.display());
    } else {
        // The selected cases' tables beside the JSON, to paste into BENCHMARKS.md.
        let part = json_path.with_extension("md");
        let text: String = tabs.iter().map(|t| t.markdown() + "\n").collect();
        std::fs::write(&part, text).with_context(|| format!("writing {}", part.display()))?;
        println!(
            "Markdown: {} left as it was (--only); these cases' tables: {}",
            md_path.display(),
            part.display()
        );
    }
    println!(
        "conditions before: {}",
        results.conditions_before.describe()
    );
    println!("conditions after: {}", results.conditions_after.describe());

    for s in &results.skipped {
        println!("skipped: {s}");
    }
    let missed = results
        .targets
        .iter()
        .filter(|t| t.met == Some(false))
        .count();
    let met = results
        .targets
        .iter()
        .filter(|t| t.met == Some(true))
        .count();
    println!(
        "bench: {met} targets met, {missed} missed, {} not evaluated",
        results.targets.len() - met - missed
    );
    if !results.not_measured.is_empty() {
        println!("Not measured:");
        for n in &results.not_measured {
            println!("  {}", n.replace('\n', "\n    "));
        }
        bail!(
            "bench: {} measurements could not be made (listed above)",
            results.not_measured.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn args_parse() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert!(!cli.args.quick && cli.args.json.is_none());
        assert!(cli.args.selected("c"));
        let cli = Cli::try_parse_from(["x", "--quick", "--json", "/tmp/b.json", "--only", "a,c"])
            .unwrap();
        assert!(cli.args.quick);
        assert!(cli.args.selected("a") && cli.args.selected("c") && !cli.args.selected("b"));
        assert!(cli.args.soak_processes.is_none());
        assert_eq!(cli.args.json.as_deref(), Some(Path::new("/tmp/b.json")));
        let cli = Cli::try_parse_from(["x", "--only", "e", "--soak-processes", "5000"]).unwrap();
        assert!(cli.args.selected("e") && !cli.args.selected("a"));
        assert_eq!(
            Config::new(false, cli.args.soak_processes, None, None).soak_processes,
            5000
        );
        assert_eq!(Config::new(true, None, None, None).soak_processes, 100_000);
        assert!(Cli::try_parse_from(["x", "--only", "i"]).is_err());
        let cli = Cli::try_parse_from(["x", "--only", "f", "--service-seconds", "10"]).unwrap();
        assert!(cli.args.selected("f") && !cli.args.selected("a"));
        let config = Config::new(false, None, cli.args.service_seconds, None);
        assert_eq!((config.service_seconds, config.service_rounds), (10, 3));
        assert!(Cli::try_parse_from(["x", "--service-seconds", "0"]).is_err());
    }

    #[test]
    fn args_parse_detail() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let cli = Cli::try_parse_from(["x", "--only", "h", "--quick"]).unwrap();
        assert!(cli.args.quick && cli.args.selected("h"));
        assert!(!cli.args.selected("a") && !cli.args.selected("b") && !cli.args.selected("g"));
        let cli = Cli::try_parse_from(["x", "--only", "a,h"]).unwrap();
        assert!(cli.args.selected("a") && cli.args.selected("h") && !cli.args.selected("b"));
        assert!(Cli::try_parse_from(["x"]).unwrap().args.selected("h"));
        // (h) runs dd and the workload at (a)'s and (b)'s sizes.
        let quick = Config::new(true, None, None, None);
        assert_eq!((quick.dd_count, quick.workload_size), (500_000, "64M"));
        let full = Config::new(false, None, None, None);
        assert_eq!((full.dd_count, full.workload_size), (2_000_000, "256M"));
    }
}
