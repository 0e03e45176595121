//! The command line: what users type, parsed by clap.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

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
    Workload(crate::workload::WorkloadArgs),
    /// Run as a daemon that serves Prometheus metrics for every process (or a chosen few)
    Serve(ServeArgs),
    /// Check whether zcprof can run on this host, and how well
    ///
    /// Checks the kernel, its BTF, zcprof's privileges, RLIMIT_MEMLOCK, every hook and BPF
    /// feature zcprof uses, loads and attaches its programs for a moment (root only; nothing is
    /// watched) and reports each capability, with what to do about every problem. Exits 0 when
    /// zcprof can run here (even degraded), 1 when it cannot.
    Doctor(DoctorArgs),
}

/// Options of `zcprof doctor`.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print one JSON document instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Options of `zcprof run`.
#[derive(Args, Debug)]
pub struct RunArgs {
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
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Who zcprof becomes once it needs no privilege any more (run, attach, serve).
#[derive(Args, Debug, Clone)]
pub struct PrivilegeArgs {
    /// Unprivileged user zcprof becomes once its probes are attached (for run: once the
    /// command is started; the command keeps zcprof's starting identity)
    #[arg(long, default_value = "nobody", value_name = "USER")]
    pub user: String,
    /// Keep zcprof's own privileges and capabilities (debugging only)
    #[arg(long)]
    pub no_drop_privileges: bool,
}

/// How the kernel programs are loaded (run, attach, serve).
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Load the programs with empty bodies: the hooks' own cost (benchmark aid)
    #[arg(long, hide = true)]
    pub empty_programs: bool,
    /// Threads tracked at once (alive, or dead for less than a second). The kernel allocates
    /// their counters up front, about 1.4 KiB each (at most 262144: 350 MiB)
    #[arg(long, default_value_t = zcprof_common::MAX_THREADS - 1,
          value_parser = clap::value_parser!(u32).range(1..=262_144), value_name = "N")]
    pub max_threads: u32,
}

impl ProbeArgs {
    /// The loader's options for these arguments (watch-all and test aids left at default).
    pub fn load_options(&self) -> crate::loader::LoadOptions<'static> {
        crate::loader::LoadOptions {
            empty_bodies: self.empty_programs,
            max_threads: Some(self.max_threads),
            ..Default::default()
        }
    }
}

/// Options of `zcprof attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Process to watch (repeat for several)
    #[arg(long = "pid", short = 'p', required = true, value_name = "PID")]
    pub pids: Vec<u32>,
    /// Also watch the processes' children, existing and future
    #[arg(long)]
    pub children: bool,
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
}

/// How `zcprof serve` labels (groups) its series.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// One group per command name (`comm` label)
    Comm,
    /// One group per cgroup v2 directory, i.e. per container or systemd unit (`cgroup` label)
    Cgroup,
    /// One group per live process (`pid` and `comm` labels), capped by --max-series
    Pid,
}

/// Options of `zcprof serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to serve /metrics on (port 0: any free port, printed on stderr)
    #[arg(long, default_value = crate::serve::DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Count only these processes and their descendants (repeat for several; default: all)
    #[arg(long = "pid", short = 'p', value_name = "PID")]
    pub pids: Vec<u32>,
    /// Count only threads whose command name matches REGEX (anchored, like PromQL's =~)
    #[arg(long, value_name = "REGEX")]
    pub comm: Option<String>,
    /// Count only threads in this cgroup v2 directory or below it
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// The host's cgroup v2 mount (default: /sys/fs/cgroup, else the first cgroup2 mount; in a
    /// container, mount the host's hierarchy and name it here)
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// What one group of series is
    #[arg(long, value_enum, default_value_t = GroupBy::Comm)]
    pub by: GroupBy,
    /// One group per live process: the same as --by pid
    #[arg(long, conflicts_with = "by")]
    pub per_pid: bool,
    /// Most groups to export; activity of further groups is added to the `[other]` group
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_series: u32,
    /// Read the kernel maps this often, besides at every scrape
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub collect_interval: Duration,
    #[command(flatten)]
    pub privileges: PrivilegeArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
    /// Keep the kernel's BPF run-time statistics on and export zcprof's own cost as
    /// zcprof_bpf_program_*: two clock reads more per program run, about 70 ns per syscall
    /// here (more than zcprof's own work), so it is off unless asked for
    #[arg(long)]
    pub program_stats: bool,
}

impl ServeArgs {
    /// The grouping in force (--per-pid is --by pid).
    pub fn group_by(&self) -> GroupBy {
        if self.per_pid { GroupBy::Pid } else { self.by }
    }
}

/// Parses `500ms`, `1s`, `2m`, `1h` or a plain number of seconds; must be positive.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 500ms, 1s, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    if secs.is_nan() || secs <= 0.0 || !secs.is_finite() {
        return Err(format!("`{s}`: must be more than zero"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
