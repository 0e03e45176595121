//! `cargo xtask test`: setup, build the workspace, run all tests serially.

use anyhow::Result;

use crate::{cargo, process, setup};

/// `extra` holds extra `cargo test` arguments; those after a `--` go to the test binaries.
pub fn run(extra: &[String]) -> Result<()> {
    process::require_root("cargo xtask test")?;
    setup::run()?;

    // Default members; zcprof's build.rs builds the kernel programs (aya-build).
    cargo::run(cargo::command().args(["build", "--workspace"]))?;
    let zcprof = cargo::built_binary("debug", "zcprof")?;

    let (cargo_args, test_args) = match extra.iter().position(|a| a == "--") {
        Some(i) => (&extra[..i], &extra[i + 1..]),
        None => (extra, &[][..]),
    };
    let mut cmd = cargo::command();
    cmd.arg("test");
    // `--workspace` would override a package selection given by the caller.
    let selects_package = cargo_args
        .iter()
        .any(|a| a == "-p" || a.starts_with("--package") || (a.starts_with("-p") && a.len() > 2));
    if !selects_package {
        cmd.arg("--workspace");
    }
    // The tests load BPF programs and compare system-wide counters: run them serially.
    cmd.arg("--no-fail-fast")
        .args(cargo_args)
        .args(["--", "--test-threads=1"])
        .args(test_args)
        .env("ZCPROF_BIN", &zcprof);
    cargo::run(&mut cmd)
}
