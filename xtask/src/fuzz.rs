//! `cargo xtask fuzz`: the fuzz harnesses that `cargo xtask test` runs briefly with a fixed
//! seed (the HTTP front end, the BTF reader on generated files and on the kernel's file),
//! each for a time budget with a random seed.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, process, setup};

/// The harnesses: unit tests of the zcprof binary crate.
const HARNESSES: [&str; 3] = [
    "serve::http::fuzz::fuzz_http",
    "btf::fuzz::fuzz_btf_generated",
    "btf::fuzz::fuzz_btf_kernel_file",
];

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// Seconds each harness runs (in batches of cases, until this much time has passed)
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Cases per batch (default: each harness's own, as in `cargo xtask test`)
    #[arg(long)]
    pub cases: Option<u64>,
    /// Seed of the first batch, to replay a failure (default: random)
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Runs `cargo xtask fuzz`.
pub fn run(args: &Args) -> Result<()> {
    setup::run()?;
    let started = Instant::now();
    let mut cmd = cargo::command();
    cmd.args(["test", "-p", "zcprof", "--bins", "--"])
        .args(HARNESSES)
        .args(["--exact", "--nocapture", "--test-threads=1"])
        .env("ZCPROF_FUZZ_SECONDS", args.seconds.to_string())
        .stdout(Stdio::piped());
    if let Some(cases) = args.cases {
        cmd.env("ZCPROF_FUZZ_CASES", cases.to_string());
    }
    if let Some(seed) = args.seed {
        cmd.env("ZCPROF_FUZZ_SEED", seed.to_string());
    }
    println!("fuzz: {}", process::describe(&cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not run `{}`", process::describe(&cmd)))?;
    // Shown as it comes, and the harnesses' own report lines kept for the summary.
    let mut reports = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test's output")?;
            println!("{line}");
            // The test runner's `test NAME ... ` may precede a report on its line.
            if let Some(at) = line.find("fuzz ") {
                reports.push(line[at..].to_string());
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!(
        "\nfuzz: {} harnesses, {:.0} s in all",
        HARNESSES.len(),
        started.elapsed().as_secs_f64()
    );
    for r in &reports {
        println!("  {r}");
    }
    if !status.success() {
        bail!(
            "a fuzz harness failed ({status}): its minimal failing input and the seed to replay \
             it with (--seed, --cases) are above"
        );
    }
    Ok(())
}
