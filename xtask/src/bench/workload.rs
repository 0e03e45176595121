//! Case (b), realistic: `zcprof workload` with 64 KiB reads and writes, and with sendfile,
//! bare and under `zcprof run`; the throughput is the workload's own (its JSON tally's
//! `throughput_mib_s`, timed around the transfer only).

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde::Serialize;
use serde_json::Value;

use super::{Config, child, median};
use crate::process;

pub const STRATEGIES: [&str; 2] = ["read-write", "sendfile"];

const RUN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Serialize)]
pub struct StrategyResult {
    pub strategy: &'static str,
    pub size: String,
    pub bare_mib_s: Vec<f64>,
    pub run_mib_s: Vec<f64>,
    pub bare_median_mib_s: Option<f64>,
    /// Syscalls of one profiled run, all of the workload's processes (zcprof's count).
    pub syscalls_per_run: Option<u64>,
    /// Seconds of one bare transfer (median).
    pub bare_median_s: Option<f64>,
    pub run_median_mib_s: Option<f64>,
    /// Per round, (bare − under zcprof run) / bare in percent, from the runs of the round
    /// (back to back, so that the VM's slow swings hit both alike).
    pub round_loss_pct: Vec<f64>,
    /// The median of `round_loss_pct`.
    pub loss_pct: Option<f64>,
    /// The same under `zcprof run --latency`.
    pub latency_mib_s: Vec<f64>,
    pub latency_round_loss_pct: Vec<f64>,
    pub latency_loss_pct: Option<f64>,
    pub error: Option<String>,
}

/// One run's throughput (MiB/s) and elapsed seconds, from the workload's tally, and for a
/// profiled run the syscalls zcprof counted in all of the workload's processes (sender and
/// receiver, start-up included).
/// How a run of (b) is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Bare,
    Run,
    /// `zcprof run --latency`.
    RunLatency,
}

impl Profile {
    fn label(self) -> &'static str {
        match self {
            Profile::Bare => "bare",
            Profile::Run => "under zcprof run",
            Profile::RunLatency => "under zcprof run --latency",
        }
    }
}

fn throughput(
    zcprof: &Path,
    strategy: &str,
    size: &str,
    profile: Profile,
) -> Result<(f64, f64, Option<u64>)> {
    let profiled = profile != Profile::Bare;
    let report = std::env::temp_dir().join(format!("zcprof-bench-b-{}.json", std::process::id()));
    let mut cmd = process::command(zcprof);
    if profiled {
        cmd.args(["run", "--json", "-o"]).arg(&report);
        if profile == Profile::RunLatency {
            cmd.arg("--latency");
        }
        cmd.arg("--").arg(zcprof);
    }
    cmd.args(["workload", "--strategy", strategy, "--size", size]);
    let out = child::run(cmd, RUN_TIMEOUT)?;
    out.ensure_success()?;
    let (_, mib_s, elapsed) = tally(&out.stdout(), strategy)?;
    let syscalls = if profiled {
        let text = std::fs::read_to_string(&report)
            .with_context(|| format!("zcprof run wrote no report to {}", report.display()))?;
        let _ = std::fs::remove_file(&report);
        let doc: Value = serde_json::from_str(&text).context("zcprof run's JSON report")?;
        let total = doc["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["syscalls"].as_u64())
            .sum();
        Some(total)
    } else {
        None
    };
    Ok((mib_s, elapsed, syscalls))
}

/// The workload's JSON tally, its throughput (MiB/s) and its elapsed seconds.
pub(super) fn tally(stdout: &str, strategy: &str) -> Result<(Value, f64, f64)> {
    let tally: Value = serde_json::from_str(stdout).with_context(|| {
        format!(
            "the {strategy} workload did not print a JSON tally; it printed:\n{}",
            process::tail(stdout, 10)
        )
    })?;
    let mib_s = tally["throughput_mib_s"]
        .as_f64()
        .context("the workload's tally has no throughput_mib_s")?;
    let elapsed = tally["elapsed_s"]
        .as_f64()
        .context("the workload's tally has no elapsed_s")?;
    Ok((tally, mib_s, elapsed))
}

/// Per strategy: one unmeasured bare run (it makes the source file and fills the page
/// cache), then `config.workload_rounds` rounds of a bare and a profiled run, alternating
/// which goes first.
pub fn run(zcprof: &Path, config: &Config, say: &dyn Fn(String)) -> Vec<StrategyResult> {
    let size = config.workload_size;
    let mut results: Vec<StrategyResult> = STRATEGIES
        .iter()
        .map(|&strategy| StrategyResult {
            strategy,
            size: size.to_owned(),
            bare_mib_s: Vec::new(),
            run_mib_s: Vec::new(),
            bare_median_mib_s: None,
            syscalls_per_run: None,
            bare_median_s: None,
            run_median_mib_s: None,
            round_loss_pct: Vec::new(),
            loss_pct: None,
            latency_mib_s: Vec::new(),
            latency_round_loss_pct: Vec::new(),
            latency_loss_pct: None,
            error: None,
        })
        .collect();
    let mut bare_s: Vec<Vec<f64>> = vec![Vec::new(); results.len()];
    for r in &mut results {
        if let Err(e) = throughput(zcprof, r.strategy, size, Profile::Bare) {
            say(format!("bench: (b) {}: FAILED: {e:#}", r.strategy));
            r.error = Some(format!("{e:#}"));
        }
    }
    for round in 0..config.workload_rounds {
        for (r, bare_s) in results.iter_mut().zip(&mut bare_s) {
            if r.error.is_some() {
                continue;
            }
            // Each profile goes first in turn.
            let mut order = [Profile::Bare, Profile::Run, Profile::RunLatency];
            order.rotate_left(round % 3);
            for profile in order {
                match throughput(zcprof, r.strategy, size, profile) {
                    Ok((t, elapsed, syscalls)) => {
                        say(format!(
                            "bench: (b) round {}/{}: {} {}: {t:.0} MiB/s",
                            round + 1,
                            config.workload_rounds,
                            r.strategy,
                            profile.label()
                        ));
                        match profile {
                            Profile::Run => {
                                r.run_mib_s.push(t);
                                r.syscalls_per_run = syscalls;
                            }
                            Profile::RunLatency => r.latency_mib_s.push(t),
                            Profile::Bare => {
                                r.bare_mib_s.push(t);
                                bare_s.push(elapsed);
                            }
                        }
                    }
                    Err(e) => {
                        say(format!("bench: (b) {}: FAILED: {e:#}", r.strategy));
                        r.error = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
        }
    }
    for (r, bare_s) in results.iter_mut().zip(&bare_s) {
        if r.error.is_some() {
            continue;
        }
        r.bare_median_s = median(bare_s);
        r.bare_median_mib_s = median(&r.bare_mib_s);
        r.run_median_mib_s = median(&r.run_mib_s);
        r.round_loss_pct = losses(&r.bare_mib_s, &r.run_mib_s);
        r.loss_pct = median(&r.round_loss_pct);
        r.latency_round_loss_pct = losses(&r.bare_mib_s, &r.latency_mib_s);
        r.latency_loss_pct = median(&r.latency_round_loss_pct);
    }
    results
}

/// Per round, (bare − profiled) / bare in percent.
pub(super) fn losses(bare: &[f64], profiled: &[f64]) -> Vec<f64> {
    bare.iter()
        .zip(profiled)
        .filter(|(b, _)| **b > 0.0)
        .map(|(b, p)| (b - p) / b * 100.0)
        .collect()
}
