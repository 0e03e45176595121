//! The command line of `zcprof serve`.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::{duration::parse_duration, loader::ProbeArgs, privileges::PrivilegeArgs};

/// Where `zcprof serve` listens by default: loopback only (exposing it is a deliberate
/// choice), on a port outside 9100-9999, Prometheus's exporter port range, which is fully
/// allocated, so that zcprof collides with no registered exporter.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:19977";

/// How `zcprof serve` labels (groups) its series.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// One group per command name (`comm` label)
    Comm,
    /// One group per cgroup v2 directory, i.e. per container or systemd unit (`cgroup` label)
    Cgroup,
    /// One group per container (docker, containerd, CRI-O, podman; with its Kubernetes pod)
    /// or systemd unit, read from the cgroup path (`container_id`, `pod_uid`, `runtime` labels)
    Container,
    /// One group per live process (`pid` and `comm` labels), capped by --max-series
    Pid,
}

impl GroupBy {
    /// Groups follow the threads' cgroup paths.
    pub fn by_cgroup_path(self) -> bool {
        matches!(self, GroupBy::Cgroup | GroupBy::Container)
    }
}

/// How much of the transfer-size histograms `zcprof serve` exports (`--histograms`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistogramMode {
    /// Every kernel bucket: 31 bounds (2^k - 1 bytes) and +Inf per syscall
    Full,
    /// 12 buckets per syscall: 0, 1, 15, 127, 1023, 4095, 16383, 65535, 262143, 1048575,
    /// 16777215 bytes and +Inf (count and sum as with full)
    Coarse,
    /// No size histograms
    Off,
}

/// Which threads count, by name and cgroup (serve and top).
#[derive(Args, Debug, Clone)]
pub struct ScopeArgs {
    /// Only threads whose command name matches REGEX (anchored, like PromQL's =~: `nginx` is
    /// not `nginx-worker`)
    #[arg(long, value_name = "REGEX")]
    pub comm: Option<String>,
    /// Only threads in this cgroup v2 directory or below it
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// The host's cgroup v2 mount (default: /sys/fs/cgroup, else the first cgroup2 mount; in a
    /// container, mount the host's hierarchy and name it here)
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
}

/// Options of `zcprof serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to serve /metrics on (port 0: any free port, printed on stderr)
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Count only these processes and their descendants (repeat for several; default: all)
    #[arg(long = "pid", short = 'p', value_name = "PID")]
    pub pids: Vec<u32>,
    #[command(flatten)]
    pub scope: ScopeArgs,
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
    /// Transfer-size histograms: full (32 log2 buckets per syscall), coarse (12), or off
    #[arg(long, value_enum, default_value_t = HistogramMode::Coarse, value_name = "MODE")]
    pub histograms: HistogramMode,
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
