//! The command line: what users type, parsed by clap. Each command's module owns its options
//! (`serve`, `top`, `doctor`, `workload`), as do the option groups several commands share
//! (`privileges`, `loader`); `run` and `attach` keep theirs here.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    attribution::AttributionArgs, doctor::DoctorArgs, duration::parse_duration, loader::ProbeArgs,
    privileges::PrivilegeArgs, serve::ServeArgs, top::TopArgs, workload::WorkloadArgs,
};

/// Where do my bytes get copied? Per process: bytes copied by the CPU across the user/kernel
/// boundary, bytes moved without a user copy, mode switches, context switches, page faults.
#[derive(Parser, Debug)]
#[command(name = "zcprof", version, about, long_about = None)]
pub struct Cli {
    /// Show the kernel programs' log lines and more detail (-vv: debug)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command under the profiler and print a summary when it exits
    Run(RunArgs),
    /// Profile running processes from now on
    Attach(AttachArgs),
    /// Move a file with one data-moving strategy and print what was done, as JSON
    Workload(WorkloadArgs),
    /// Run as a daemon that serves Prometheus metrics for every process (or a chosen few)
    Serve(ServeArgs),
    /// A live table of processes by the bytes the CPU copies for them, like top
    ///
    /// Redrawn every --interval: per process (or command, or cgroup with --by), syscalls/s,
    /// CPU-copied, zero-copy and DMA + fault-in bytes/s, the zero-copy share, context switches
    /// and page faults/s. Keys: s/S or arrows sort, / filters, Enter shows a row's ledger by
    /// syscall and its threads, p pauses, ? lists the keys, q quits. Needs a terminal.
    Top(TopArgs),
    /// Check whether zcprof can run on this host, and how well
    ///
    /// Checks the kernel, its BTF, zcprof's privileges, RLIMIT_MEMLOCK, every hook and BPF
    /// feature zcprof uses, loads and attaches its programs for a moment (root only; nothing is
    /// watched) and reports each capability, with what to do about every problem. Exits 0 when
    /// zcprof can run here (even degraded), 1 when it cannot.
    Doctor(DoctorArgs),
    /// Print a shell completion script (bash, zsh or fish)
    ///
    /// For example: zcprof completions bash > /usr/share/bash-completion/completions/zcprof
    Completions(crate::completions::CompletionsArgs),
    /// Print the manual page, zcprof(1), in roff (packaging)
    #[command(hide = true)]
    Manpage,
}

/// Options of `zcprof run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Processes shown in the summary, by CPU-copied bytes (the total counts them all)
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// Print one JSON document instead of tables
    #[arg(long)]
    pub json: bool,
    /// Write the report to FILE instead of standard output
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace raw tracepoint FROM with TO when attaching (testing aid)
    #[arg(long, hide = true, value_name = "FROM=TO")]
    pub tracepoint_override: Option<String>,
    #[command(flatten)]
    pub privileges: PrivilegeArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub attribution: AttributionArgs,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Options of `zcprof attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Processes shown per interval and in the summary, by CPU-copied bytes (the total line
    /// counts them all)
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// Process to watch (repeat for several)
    #[arg(
        long = "pid",
        short = 'p',
        required_unless_present_any = ["comm", "cgroup"],
        value_name = "PID"
    )]
    pub pids: Vec<u32>,
    /// Also watch the processes' children, existing and future
    #[arg(long)]
    pub children: bool,
    /// Watch every process whose command name (or one of whose threads' names) matches
    /// REGEX (anchored), from now on, including processes started later
    #[arg(long, value_name = "REGEX")]
    pub comm: Option<String>,
    /// Watch every process in this cgroup v2 directory or below it, including processes
    /// started later
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// The host's cgroup v2 mount (default: /sys/fs/cgroup, else the first cgroup2 mount)
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// Print per-interval deltas this often (e.g. 1s, 500ms)
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Stop after this long (default: until Ctrl-C or until the processes exit)
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print one JSON document at the end instead of tables
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub privileges: PrivilegeArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub attribution: AttributionArgs,
}
