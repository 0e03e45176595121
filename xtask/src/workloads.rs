//! `cargo xtask run-workloads`: profile the reference workloads with a release zcprof.
//!
//! For now this runs a single workload (read/write copying of 8 MiB) under `zcprof run
//! --json` and prints the JSON report.

use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};

use crate::process;

/// Profiles the workloads with the zcprof binary at `zcprof`; `args` are the arguments
/// given to `cargo xtask run-workloads` (none are accepted yet).
pub fn run_workloads(zcprof: &Path, args: &[String]) -> Result<()> {
    ensure!(
        args.is_empty(),
        "cargo xtask run-workloads takes no arguments yet (got: {})",
        args.join(" ")
    );
    let report = profile(
        zcprof,
        &["workload", "--strategy", "read-write", "--size", "8M"],
    )?;
    println!("{report}");
    Ok(())
}

/// Runs `zcprof run --json -- zcprof <workload…>` and returns its JSON report,
/// pretty-printed.
fn profile(zcprof: &Path, workload: &[&str]) -> Result<String> {
    let mut cmd = process::command(zcprof);
    cmd.args(["run", "--json", "--"]).arg(zcprof).args(workload);
    let line = process::describe(&cmd);
    let out = process::capture(&mut cmd)?;
    // zcprof's diagnostics go to stderr; show them whatever the outcome.
    eprint!("{}", out.stderr);
    if !out.status.success() {
        bail!("`{line}` failed ({})", out.status);
    }
    let json: serde_json::Value = serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "`{line}` did not print a JSON report; it printed:\n{}",
            out.stdout
        )
    })?;
    serde_json::to_string_pretty(&json).context("could not format the JSON report")
}
