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
    pub run_median_mib_s: Option<f64>,
    /// (bare − under zcprof run) / bare, in percent, of the medians.
    pub loss_pct: Option<f64>,
    pub error: Option<String>,
}

fn throughput(zcprof: &Path, strategy: &str, size: &str, profiled: bool) -> Result<f64> {
    let mut cmd = process::command(zcprof);
    if profiled {
        cmd.args(["run", "-o", "/dev/null", "--"]).arg(zcprof);
    }
    cmd.args(["workload", "--strategy", strategy, "--size", size]);
    let out = child::run(cmd, RUN_TIMEOUT)?;
    out.ensure_success()?;
    let stdout = out.stdout();
    let tally: Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "the {strategy} workload did not print a JSON tally; it printed:\n{}",
            process::tail(&stdout, 10)
        )
    })?;
    tally["throughput_mib_s"]
        .as_f64()
        .context("the workload's tally has no throughput_mib_s")
}

/// Per strategy: one unmeasured bare run (it makes the source file and fills the page
/// cache), then `config.rounds` rounds of bare and profiled runs, alternating which goes first.
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
            run_median_mib_s: None,
            loss_pct: None,
            error: None,
        })
        .collect();
    for r in &mut results {
        if let Err(e) = throughput(zcprof, r.strategy, size, false) {
            say(format!("bench: (b) {}: FAILED: {e:#}", r.strategy));
            r.error = Some(format!("{e:#}"));
        }
    }
    for round in 0..config.rounds {
        for r in &mut results {
            if r.error.is_some() {
                continue;
            }
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for profiled in order {
                match throughput(zcprof, r.strategy, size, profiled) {
                    Ok(t) => {
                        say(format!(
                            "bench: (b) round {}/{}: {} {}: {t:.0} MiB/s",
                            round + 1,
                            config.rounds,
                            r.strategy,
                            if profiled { "under zcprof run" } else { "bare" }
                        ));
                        if profiled {
                            r.run_mib_s.push(t);
                        } else {
                            r.bare_mib_s.push(t);
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
    for r in &mut results {
        if r.error.is_some() {
            continue;
        }
        r.bare_median_mib_s = median(&r.bare_mib_s);
        r.run_median_mib_s = median(&r.run_mib_s);
        if let (Some(b), Some(p)) = (r.bare_median_mib_s, r.run_median_mib_s)
            && b > 0.0
        {
            r.loss_pct = Some((b - p) / b * 100.0);
        }
    }
    results
}
