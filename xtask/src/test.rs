//! `cargo xtask test`: setup, build the default members, run all their tests serially.

use anyhow::Result;

use crate::{cargo, process, setup, workloads};

/// Bytes each strategy sends in the reduced run-workloads that follows the tests.
const WORKLOADS_SIZE: &str = "4M";

/// `extra` holds extra `cargo test` arguments; those after a `--` go to the test binaries.
pub fn run(extra: &[String]) -> Result<()> {
    process::require_root("cargo xtask test")?;
    setup::run()?;

    // The default members, not `--workspace`: zcprof-ebpf only builds for the BPF target, and
    // zcprof's build.rs builds it (aya-build).
    cargo::run(cargo::command().arg("build"))?;
    let zcprof = cargo::built_binary("debug", "zcprof")?;

    let (cargo_args, test_args) = match extra.iter().position(|a| a == "--") {
        Some(i) => (&extra[..i], &extra[i + 1..]),
        None => (extra, &[][..]),
    };
    let mut cmd = cargo::command();
    cmd.arg("test");
    // The tests load BPF programs and compare system-wide counters: run them serially.
    cmd.arg("--no-fail-fast")
        .args(cargo_args)
        .args(["--", "--test-threads=1"])
        .args(test_args)
        .env("ZCPROF_BIN", &zcprof);
    let tests = cargo::run(&mut cmd);

    // Then every workload strategy, small, under `zcprof attach`: run-workloads' checks.
    println!("test: run-workloads --size {WORKLOADS_SIZE}");
    let size = workloads::parse_size(WORKLOADS_SIZE).map_err(anyhow::Error::msg)?;
    let workloads = workloads::run_workloads(&zcprof, &workloads::Args::reduced(size));
    match (tests, workloads) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
        (Err(t), Err(w)) => Err(t.context(format!("and {w:#}"))),
    }
}
