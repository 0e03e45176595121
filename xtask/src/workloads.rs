//! `cargo xtask run-workloads`: every strategy of `zcprof workload`, profiled by `zcprof attach`
//! exactly as a user would, and three accounts of each side by side: what the copy model
//! (`docs/model.md`) predicts, what the workload knows it did (its tally), and what zcprof
//! measured. Every disagreement is listed, and makes the command fail.
//!
//! Files: `runner.rs` (one run: the workload behind its start gate, zcprof attach, the go),
//! `data.rs` (the two JSON documents), `model.rs` (the model's expected ledger columns and its
//! classic counts), `check.rs` (the comparison), `findings.rs` (the findings each strategy must
//! give), `table.rs`, `chart.rs` (`--chart`).

mod chart;
mod check;
mod data;
mod findings;
mod model;
mod runner;
mod table;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::builder::PossibleValuesParser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use check::{Evaluation, MIB};
pub use model::STRATEGIES;

/// Arguments of `cargo xtask run-workloads`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Bytes each strategy sends (K, M, G: binary multiples)
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub size: u64,
    /// Strategies to run, in this order (repeat the flag or list several; default: all)
    #[arg(long = "strategy", value_name = "NAME", num_args = 1..,
          value_parser = PossibleValuesParser::new(STRATEGIES))]
    pub strategies: Vec<String>,
    /// Chunk size of the strategies that move the file chunk by chunk
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    pub buffer: u64,
    /// Write everything (tallies, zcprof's reports, checks) to FILE as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw CPU copies, mode switches and throughput per strategy to FILE.svg
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
    /// Seconds one strategy may take, setup, transfer and report included
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Write one flame graph per strategy into DIR (`DIR/<strategy>.svg`): the user stacks of
    /// the workload's data-moving calls, bytes as width (zcprof attach --flamegraph)
    #[arg(long, value_name = "DIR")]
    pub flamegraph: Option<PathBuf>,
}

impl Args {
    /// The reduced run of `cargo xtask test`: every strategy, `size` bytes, no files.
    pub fn reduced(size: u64) -> Self {
        Self {
            size,
            strategies: Vec::new(),
            buffer: 64 << 10,
            json: None,
            chart: None,
            flamegraph: None,
            timeout: 120,
        }
    }
}

/// One strategy's run.
pub struct Run {
    pub strategy: &'static str,
    pub outcome: Outcome,
}

pub enum Outcome {
    Measured(Box<Measured>),
    /// The run itself failed (the message says where and why).
    Failed(String),
}

pub struct Measured {
    pub tally: Value,
    pub report: Value,
    pub attach_stderr: Vec<String>,
    pub evaluation: Evaluation,
}

/// Runs the workloads with the zcprof binary at `zcprof`.
pub fn run_workloads(zcprof: &Path, args: &Args) -> Result<()> {
    if let Some(dir) = &args.flamegraph {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the flame graph directory {}", dir.display()))?;
    }
    let mut strategies: Vec<&'static str> = Vec::new();
    for s in &args.strategies {
        let s = STRATEGIES
            .into_iter()
            .find(|k| k == s)
            .with_context(|| format!("unknown strategy {s}"))?;
        if !strategies.contains(&s) {
            strategies.push(s);
        }
    }
    if strategies.is_empty() {
        strategies = STRATEGIES.to_vec();
    }
    let timeout = Duration::from_secs(args.timeout.max(1));

    let bar = ProgressBar::new(strategies.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    say(format!(
        "run-workloads: {} strategies, {} bytes each ({} MiB), buffer {}",
        strategies.len(),
        args.size,
        table::mib(args.size),
        args.buffer
    ));

    let mut runs = Vec::new();
    for strategy in strategies {
        let outcome = match measure(zcprof, strategy, args, timeout, &bar) {
            Ok(m) => {
                let n = m.evaluation.mismatches().count();
                let d = &m.evaluation.derived;
                say(format!(
                    "{strategy}: {} ({:.0} MiB/s, {} CPU copies per byte)",
                    if n == 0 {
                        "ok".to_owned()
                    } else {
                        format!("{n} mismatches")
                    },
                    d.throughput_mib_s,
                    d.copies_per_byte
                ));
                Outcome::Measured(Box::new(m))
            }
            Err(e) => {
                say(format!("{strategy}: run failed: {e:#}"));
                Outcome::Failed(format!("{e:#}"))
            }
        };
        runs.push(Run { strategy, outcome });
        bar.inc(1);
    }
    bar.finish_and_clear();

    println!("{}", table::render(&runs));
    let (failed_runs, mismatches) = print_findings(&runs);

    if let Some(path) = &args.json {
        write_json(path, args, &runs)?;
        println!("JSON: {}", path.display());
    }
    if let Some(path) = &args.chart {
        draw_chart(path, args, &runs)?;
        println!("chart: {}", path.display());
    }
    if failed_runs + mismatches > 0 {
        bail!("run-workloads: {mismatches} mismatches, {failed_runs} failed runs (listed above)");
    }
    println!("run-workloads: every check passed");
    Ok(())
}

/// One strategy, measured and compared, without progress display or table: for
/// `cargo xtask kernel-matrix`, which judges the outcome itself.
pub fn run_one(zcprof: &Path, strategy: &'static str, args: &Args) -> Outcome {
    let timeout = Duration::from_secs(args.timeout.max(1));
    match measure(zcprof, strategy, args, timeout, &ProgressBar::hidden()) {
        Ok(m) => Outcome::Measured(Box::new(m)),
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}

/// One strategy: run it, parse both documents, compare.
fn measure(
    zcprof: &Path,
    strategy: &'static str,
    args: &Args,
    timeout: Duration,
    bar: &ProgressBar,
) -> Result<Measured> {
    let flamegraph = args
        .flamegraph
        .as_ref()
        .map(|dir| dir.join(format!("{strategy}.svg")));
    let run = runner::Run {
        strategy,
        size: args.size,
        buffer: args.buffer,
        timeout,
        flamegraph: flamegraph.as_deref(),
    };
    let out = runner::run(zcprof, &run, |stage| {
        bar.set_message(format!("{strategy}: {}", stage.describe()));
    })?;
    let tally_raw: Value = serde_json::from_str(&out.workload_stdout).with_context(|| {
        format!(
            "the {strategy} workload did not print a JSON tally; it printed:\n{}",
            out.workload_stdout
        )
    })?;
    let report_raw: Value = serde_json::from_str(&out.report_stdout).with_context(|| {
        format!(
            "zcprof attach did not print one JSON document; it printed:\n{}",
            out.report_stdout
        )
    })?;
    let tally: data::Tally = serde_json::from_value(tally_raw.clone())
        .context("the workload's tally lacks a field run-workloads needs")?;
    let report: data::Report = serde_json::from_value(report_raw.clone())
        .context("zcprof's JSON report lacks a field run-workloads needs")?;
    if tally.strategy != strategy {
        bail!("asked for {strategy}, the workload ran {}", tally.strategy);
    }
    let model = model::model(strategy).with_context(|| format!("no model for {strategy}"))?;
    let epilogue = check::Epilogue::of(&out.workload_stdout);
    let evaluation = check::evaluate(&model, &tally, &report, epilogue);
    Ok(Measured {
        tally: tally_raw,
        report: report_raw,
        attach_stderr: out.attach_stderr,
        evaluation,
    })
}

/// Prints every mismatch and note under the table; returns (failed runs, mismatches).
fn print_findings(runs: &[Run]) -> (usize, usize) {
    let (mut failures, mut mismatches) = (Vec::new(), Vec::new());
    let mut notes = Vec::new();
    let mut not_itemised = std::collections::BTreeSet::new();
    for run in runs {
        match &run.outcome {
            Outcome::Failed(e) => failures.push(format!("  {}: {e}", run.strategy)),
            Outcome::Measured(m) => {
                for c in m.evaluation.mismatches() {
                    mismatches.push(format!("  {}: {}", run.strategy, c.describe()));
                }
                for n in &m.evaluation.notes {
                    notes.push(format!("  {}: {n}", run.strategy));
                }
                not_itemised.extend(m.evaluation.not_itemised.iter().cloned());
            }
        }
    }
    println!("Findings (zcprof's, docs/findings.md):");
    for run in runs {
        if let Outcome::Measured(m) = &run.outcome {
            if m.evaluation.findings.is_empty() {
                println!("  {}: none", run.strategy);
            }
            for f in &m.evaluation.findings {
                println!("  {}: {f}", run.strategy);
            }
        }
    }
    if !failures.is_empty() {
        println!("Failed runs ({}):", failures.len());
        for l in &failures {
            println!("{l}");
        }
    }
    if mismatches.is_empty() {
        println!("Mismatches: none.");
    } else {
        println!("Mismatches ({}):", mismatches.len());
        for l in &mismatches {
            println!("{l}");
        }
    }
    println!("Notes:");
    for line in [
        "MiB columns: the sender's ledger less the control reads (the receiver's count, the \
         start gate's line) and the workload's output (its tally on stdout);",
        "`measured copies/byte` adds the tally's user-space copies to zcprof's CPU columns; \
         `measured mode sw./chunk` is 2 × the tally's data syscalls / chunks;",
        "the workload's epilogue (its tally on stdout: 2 writes; Rust's exit: 1 munmap of the \
         signal stack) is added to the expected write and munmap cells;",
        "fault-in is checked where the kernel counts it: the workload maps its own code in \
         before the start gate, so the window holds only the transfer's faults.",
    ] {
        println!("  {line}");
    }
    if !not_itemised.is_empty() {
        println!(
            "  not itemised by zcprof (checked only within its syscall total): {}",
            not_itemised.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    for n in notes {
        println!("{n}");
    }
    (failures.len(), mismatches.len())
}

fn write_json(path: &Path, args: &Args, runs: &[Run]) -> Result<()> {
    let runs: Vec<Value> = runs
        .iter()
        .map(|run| match &run.outcome {
            Outcome::Measured(m) => json!({
                "strategy": run.strategy,
                "ok": m.evaluation.mismatches().next().is_none(),
                "model": model::model(run.strategy).map(|m| json!({
                    "classic": m.classic.map(|s| json!({
                        "copies": s.copies,
                        "mode_switches": s.mode_switches,
                    })),
                    "columns_per_byte": model::CHECKED_COLUMNS.iter().zip(m.columns)
                        .map(|(c, n)| (c.to_string(), json!(n)))
                        .collect::<serde_json::Map<_, _>>(),
                    "user_copies_per_byte": m.user_copies,
                    "how": m.how,
                })),
                "evaluation": m.evaluation,
                "tally": m.tally,
                "zcprof": m.report,
                "zcprof_stderr": m.attach_stderr,
            }),
            Outcome::Failed(e) => json!({
                "strategy": run.strategy,
                "ok": false,
                "error": e,
            }),
        })
        .collect();
    let doc = json!({
        "size": args.size,
        "buffer": args.buffer,
        "runs": runs,
    });
    let text = serde_json::to_string_pretty(&doc).context("formatting the JSON")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn draw_chart(path: &Path, args: &Args, runs: &[Run]) -> Result<()> {
    let bars: Vec<chart::Bar> = runs
        .iter()
        .filter_map(|run| match &run.outcome {
            Outcome::Measured(m) => {
                let d = &m.evaluation.derived;
                let mib = d.bytes as f64 / MIB;
                Some(chart::Bar {
                    strategy: run.strategy.to_owned(),
                    kernel_copied_per_mib: d.kernel_copied as f64 / mib,
                    user_copied_per_mib: d.user_copied as f64 / mib,
                    mode_switches_per_mib: d.mode_switches_per_mib,
                    throughput_mib_s: d.throughput_mib_s,
                })
            }
            Outcome::Failed(_) => None,
        })
        .collect();
    let title = format!(
        "zcprof run-workloads: {} MiB per strategy, {} KiB chunks",
        table::mib(args.size),
        args.buffer / 1024
    );
    chart::draw(path, &title, &bars)
}

/// A byte count: a number with an optional binary K, M or G suffix (`256M`, `64K`, `1G`,
/// `4096`), optionally followed by `B` or `iB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    match zcprof_common::parse_size(s) {
        None => Err(format!(
            "invalid size {s:?}: expected e.g. 4096, 64K, 256M or 1G"
        )),
        Some(0) => Err(format!("size {s:?} must be at least 1 byte")),
        Some(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1M").is_err());
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
        assert_eq!(cli.args.size, 256 << 20);
        assert_eq!(cli.args.buffer, 64 << 10);
        assert!(cli.args.strategies.is_empty());
        let cli = Cli::try_parse_from([
            "x",
            "--size",
            "16M",
            "--strategy",
            "sendfile",
            "splice",
            "--strategy",
            "read-write",
            "--chart",
            "/tmp/w.svg",
        ])
        .unwrap();
        assert_eq!(cli.args.size, 16 << 20);
        assert_eq!(cli.args.strategies, ["sendfile", "splice", "read-write"]);
        assert!(Cli::try_parse_from(["x", "--strategy", "carrier-pigeon"]).is_err());
    }
}
