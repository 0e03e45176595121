//! `cargo xtask …`: developer and CI tasks for zcprof.
//!
//! Every command other than `setup` runs `setup` first, so `cargo xtask test` and
//! `cargo xtask run-workloads` work on a bare Debian 12 machine.

mod bench;
mod cargo;
mod dist;
mod fuzz;
mod kernel_matrix;
mod private_apt;
mod process;
mod setup;
mod test;
mod workloads;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer and CI tasks for zcprof")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks to build and test zcprof (idempotent).
    Setup,
    /// Run setup, build and run all tests serially (needs root).
    Test {
        /// Extra arguments for `cargo test`; arguments after a further `--` go to the
        /// test binaries (e.g. `cargo xtask test -- -p tests -- some_test_name`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run setup, build zcprof in release mode, profile every workload strategy with
    /// `zcprof attach` and compare the copy model, the workload's tally and zcprof's
    /// measurements (needs root; fails on any mismatch).
    RunWorkloads {
        #[command(flatten)]
        args: workloads::Args,
    },
    /// Run setup, build zcprof in release mode and measure what it costs: one-byte syscalls
    /// against a floor, bpftrace and perf; workload throughput; the daemon's memory and
    /// scrape latency; attach latency. Prints a table, writes JSON and BENCHMARKS.md (needs
    /// root; exits 0 when targets are missed, fails only if a measurement could not be made).
    Bench {
        #[command(flatten)]
        args: bench::Args,
    },
    /// Run setup, build zcprof in release mode, boot each kernel (5.10, 6.1, 6.12, 7.2: Debian's
    /// packages, in a qemu VM; `host`: this machine's, directly) and run zcprof's checks on it:
    /// exact counts (dd, cp, sendfile, a fork/thread churn), serve, every workload strategy.
    /// Prints one table; fails unless every kernel passes or degrades as zcprof declares
    /// (needs root).
    KernelMatrix {
        #[command(flatten)]
        args: kernel_matrix::Args,
    },
    /// Run setup (with cargo-deb), build zcprof in release mode and package it in target/dist:
    /// the stripped binary and a .deb (binary, man page, completions, systemd unit).
    /// --verify then installs the .deb, checks it and removes it (needs root).
    Dist {
        #[command(flatten)]
        args: dist::Args,
    },
    /// Run setup, then the fuzz harnesses that `cargo xtask test` runs briefly (the HTTP front
    /// end, the BTF reader), each for --seconds with a random seed; prints executions, time and
    /// any failure with its minimal input and seed.
    Fuzz {
        #[command(flatten)]
        args: fuzz::Args,
    },
    /// Inside a kernel-matrix VM: run the checks, write results into --out.
    #[command(hide = true)]
    KernelMatrixGuest {
        #[command(flatten)]
        args: kernel_matrix::guest::Args,
    },
    /// The fork/exit churn that kernel-matrix's churn check profiles.
    #[command(hide = true)]
    KernelMatrixChurn {
        #[command(flatten)]
        args: kernel_matrix::churn::Args,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Setup => setup::run_with_vm_tools(false),
        Command::Test { args } => test::run(&args),
        Command::RunWorkloads { args } => {
            process::require_root("cargo xtask run-workloads")?;
            setup::run()?;
            cargo::run(cargo::command().args(["build", "--release", "-p", "zcprof"]))?;
            let zcprof = cargo::built_binary("release", "zcprof")?;
            workloads::run_workloads(&zcprof, &args)
        }
        Command::Bench { args } => {
            process::require_root("cargo xtask bench")?;
            setup::run()?;
            cargo::run(cargo::command().args(["build", "--release", "-p", "zcprof"]))?;
            let zcprof = cargo::built_binary("release", "zcprof")?;
            bench::run(&zcprof, &args)
        }
        Command::KernelMatrix { args } => kernel_matrix::run(&args),
        Command::Dist { args } => dist::run(&args),
        Command::Fuzz { args } => fuzz::run(&args),
        Command::KernelMatrixGuest { args } => kernel_matrix::guest::run(&args),
        Command::KernelMatrixChurn { args } => kernel_matrix::churn::run(&args),
    }
}
