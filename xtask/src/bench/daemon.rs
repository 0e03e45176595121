//! `zcprof serve` for the bench: start it, scrape it, read its memory, stop it; and case (c),
//! the daemon's resident memory and scrape latency with 10,000 processes tracked, and how
//! both grow with the series exported (about 1,000, 10,000 and 100,000).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::{
    Config,
    child::{Child, Finished, Stream},
    median,
    sleepers::Sleepers,
};
use crate::process;

/// What zcprof serve prints on stderr once it answers scrapes.
const SERVING: &str = "zcprof: serving http://";

/// Pause before each measured scrape.
pub const SCRAPE_GAP: Duration = Duration::from_millis(100);

/// Most a daemon may take to load its programs and say it serves.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `zcprof serve`.
pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
}

/// One GET /metrics.
pub struct Scrape {
    pub elapsed: Duration,
    pub body: String,
}

impl Daemon {
    /// Starts `zcprof serve --listen 127.0.0.1:0 <extra>` and waits until it serves.
    pub fn start(zcprof: &Path, extra: &[&str]) -> Result<Daemon> {
        let mut cmd = process::command(zcprof);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
        let mut child = Child::spawn(cmd, false)?;
        let line = child.wait_for(
            START_TIMEOUT,
            |l| l.stream == Stream::Stderr && l.text.contains(SERVING),
            &format!("`{SERVING}…`"),
        )?;
        let rest = &line.text[line.text.find(SERVING).unwrap_or(0) + SERVING.len()..];
        let addr = rest.split('/').next().unwrap_or_default();
        let addr: SocketAddr = addr
            .parse()
            .with_context(|| format!("zcprof serve said it serves on `{addr}`: not an address"))?;
        Ok(Daemon { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// GET /metrics; fails unless the answer is 200.
    pub fn scrape(&self) -> Result<Scrape> {
        let started = Instant::now();
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))
            .with_context(|| format!("connecting to zcprof serve at {}", self.addr))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .with_context(|| format!("reading the answer of http://{}/metrics", self.addr))?;
        let elapsed = started.elapsed();
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("the answer to GET /metrics has no header/body separator")?;
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            bail!("GET http://{}/metrics answered `{status}`", self.addr);
        }
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let body = if chunked {
            dechunk(body)?
        } else {
            body.to_owned()
        };
        Ok(Scrape { elapsed, body })
    }

    /// (VmRSS, VmHWM) of the daemon, in KiB.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .with_context(|| format!("{path} has no {name}"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, then wait for it to exit.
    pub fn stop(self) -> Result<Finished> {
        self.child.stop(libc::SIGTERM, Duration::from_secs(30))
    }
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut rest: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("truncated chunked body")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size in the answer to GET /metrics")?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = after.get(..size).context("truncated chunk")?;
        out.push_str(chunk);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

/// The value of an unlabelled sample `name` in a Prometheus text body.
pub fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The sum of the samples of `name` whose labels contain `label` (e.g. `comm="dd"`).
pub fn sum_samples(body: &str, name: &str, label: &str) -> f64 {
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once("} ")?;
            labels
                .contains(label)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// Whether `zcprof serve` accepts `args` (clap parses them before `--help`, so an unknown
/// flag fails and known ones print the help; a flag that takes a value needs one).
pub fn serve_accepts(zcprof: &Path, args: &[&str]) -> bool {
    let mut cmd = process::command(zcprof);
    cmd.arg("serve").args(args).arg("--help");
    process::capture(&mut cmd).is_ok_and(|o| o.status.success())
}

/// How the processes of one daemon case are made.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Population {
    /// `/bin/true` run one after the other: each is tracked, exits, and is retired.
    ShortLived,
    /// Processes that stay alive (paused) while the daemon is scraped.
    Live,
}

/// One daemon case.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonCase {
    pub id: String,
    pub label: String,
    pub serve_args: Vec<String>,
    pub population: Population,
    pub processes: usize,
    /// Seconds it took to create the processes (with the daemon counting them).
    pub populate_s: Option<f64>,
    /// VmRSS once the daemon serves, before the processes are made.
    pub rss_start_kib: Option<u64>,
    pub rss_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    pub scrape_ms: Vec<f64>,
    pub scrape_median_ms: Option<f64>,
    pub scrape_max_ms: Option<f64>,
    /// `zcprof_groups` at the last scrape.
    pub groups: Option<f64>,
    /// `zcprof_threads_tracked` at the last scrape.
    pub threads_tracked: Option<f64>,
    /// `zcprof_processes_retired_total` at the last scrape.
    pub processes_retired: Option<f64>,
    /// Sample lines (series) and bytes of the last scrape.
    pub series: Option<usize>,
    pub body_bytes: Option<usize>,
    pub exit_status: Option<String>,
    pub error: Option<String>,
    pub skipped: Option<String>,
}

impl DaemonCase {
    /// `zcprof serve <args>, N <population> processes`.
    pub fn describe(&self) -> String {
        format!(
            "zcprof serve {}, {} processes",
            self.label,
            self.population_text()
        )
    }

    /// `10000 short-lived` or `10000 live`.
    pub fn population_text(&self) -> String {
        match self.population {
            Population::ShortLived => format!("{} short-lived", self.processes),
            Population::Live => format!("{} live", self.processes),
        }
    }

    fn new(
        id: &'static str,
        label: &str,
        serve_args: &[&str],
        population: Population,
        n: usize,
    ) -> Self {
        DaemonCase {
            id: id.to_owned(),
            label: label.to_owned(),
            serve_args: serve_args.iter().map(|s| s.to_string()).collect(),
            population,
            processes: n,
            populate_s: None,
            rss_start_kib: None,
            rss_kib: None,
            hwm_kib: None,
            scrape_ms: Vec::new(),
            scrape_median_ms: None,
            scrape_max_ms: None,
            groups: None,
            threads_tracked: None,
            processes_retired: None,
            series: None,
            body_bytes: None,
            exit_status: None,
            error: None,
            skipped: None,
        }
    }
}

/// Series the growth rows aim at: the exposition's cost is per series, so that is the measure
/// to see it grow by.
const GROWTH_SERIES: [usize; 3] = [1_000, 10_000, 100_000];

/// Most live processes a growth row makes: the host's pid space (32,768 by default) is shared
/// with other jobs, so a row that would need more is measured at this many and says how many
/// series it got.
const GROWTH_MAX_PROCESSES: usize = 20_000;

/// A zcprof binary to measure side by side with the one built (each case with both, back to
/// back, the other's rows marked `[baseline]`): how a change moves these figures on a
/// machine whose load moves them as much.
pub const BASELINE_ENV: &str = "ZCPROF_BENCH_BASELINE";

/// Case (c): the daemon by command name (the default) and one series per process, with
/// 10,000 short-lived processes, one series per process with 10,000 live ones (the target's
/// own case), and then with as many live processes as make about 1,000, 10,000 and 100,000
/// series (sized from the 10,000-process case's series per process).
pub fn run(zcprof: &Path, config: &Config, say: &dyn Fn(String)) -> Vec<DaemonCase> {
    let n = config.daemon_processes;
    let per_pid = serve_accepts(zcprof, &["--per-pid", "--max-series", "2"]);
    let per_pid_case = |id, processes: usize, population, note: &str| {
        let max_series = (2 * processes).to_string();
        let args = ["--per-pid", "--max-series", max_series.as_str()];
        DaemonCase::new(
            id,
            &format!("--per-pid --max-series {max_series}{note}"),
            &args,
            population,
            processes,
        )
    };
    let cases = vec![
        DaemonCase::new(
            "comm-short-lived",
            "--by comm (default)",
            &[],
            Population::ShortLived,
            n,
        ),
        per_pid_case("per-pid-short-lived", n, Population::ShortLived, ""),
        per_pid_case("per-pid-live", n, Population::Live, ""),
    ];
    let baseline = std::env::var_os(BASELINE_ENV).map(std::path::PathBuf::from);
    let mut measured = Vec::new();
    let measure_both = |mut case: DaemonCase, measured: &mut Vec<DaemonCase>| {
        if let Some(before) = &baseline {
            let mut b = case.clone();
            b.id = format!("{}-baseline", case.id);
            b.label = format!("{} [baseline]", case.label);
            run_case(before, config, &mut b, per_pid, say);
            measured.push(b);
        }
        run_case(zcprof, config, &mut case, per_pid, say);
        measured.push(case);
    };
    for case in cases {
        measure_both(case, &mut measured);
    }
    let mut cases = measured;
    // What one idle live process exports, from the 10,000-process case (the daemon's own
    // series are few enough to count in).
    let per_process = cases
        .iter()
        .find(|c| c.id == "per-pid-live")
        .and_then(|c| Some(c.series? as f64 / c.processes as f64))
        .filter(|s| *s > 0.0);
    for (target, id) in GROWTH_SERIES.into_iter().zip([
        "per-pid-live-1k-series",
        "per-pid-live-10k-series",
        "per-pid-live-100k-series",
    ]) {
        let processes = per_process.map_or(target / 10, |s| (target as f64 / s).ceil() as usize);
        let processes = processes.clamp(1, GROWTH_MAX_PROCESSES);
        let note = format!(" (≈{} series)", super::table::count(target as f64));
        let case = per_pid_case(id, processes, Population::Live, &note);
        measure_both(case, &mut cases);
    }
    cases
}

/// Measures `case`, or says why not.
fn run_case(
    zcprof: &Path,
    config: &Config,
    case: &mut DaemonCase,
    per_pid: bool,
    say: &dyn Fn(String),
) {
    if !case.serve_args.is_empty() && !per_pid {
        case.skipped = Some("this zcprof serve has no --per-pid/--max-series".into());
        say(format!("bench: (c) {}: skipped", case.describe()));
        return;
    }
    say(format!("bench: (c) {}…", case.describe()));
    if let Err(e) = measure(zcprof, config, case) {
        say(format!("bench: (c) {}: FAILED: {e:#}", case.describe()));
        case.error = Some(format!("{e:#}"));
    } else {
        say(format!(
            "bench: (c) {}: RSS {:.1} MiB, scrape median {:.1} ms, max {:.1} ms, {} groups, \
             {} series, {:.2} MB",
            case.describe(),
            case.rss_kib.unwrap_or(0) as f64 / 1024.0,
            case.scrape_median_ms.unwrap_or(f64::NAN),
            case.scrape_max_ms.unwrap_or(f64::NAN),
            case.groups.unwrap_or(f64::NAN),
            case.series.unwrap_or(0),
            case.body_bytes.unwrap_or(0) as f64 / 1e6
        ));
    }
}

fn measure(zcprof: &Path, config: &Config, case: &mut DaemonCase) -> Result<()> {
    let args: Vec<&str> = case.serve_args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(zcprof, &args)?;
    case.rss_start_kib = Some(daemon.memory_kib()?.0);
    let n = case.processes;
    let started = Instant::now();
    // Live processes stay until `_sleepers` is dropped, after the scrapes.
    let _sleepers = match case.population {
        Population::ShortLived => {
            let mut cmd = process::command("sh");
            cmd.args([
                "-c",
                "i=0; while [ $i -lt \"$1\" ]; do /bin/true; i=$((i+1)); done",
                "sh",
                &n.to_string(),
            ]);
            super::child::run(cmd, Duration::from_secs(600))?.ensure_success()?;
            None
        }
        Population::Live => {
            let s = Sleepers::spawn(n)?;
            // Wait until the daemon exports a group for (nearly) every one of them.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let groups = sample(&daemon.scrape()?.body, "zcprof_groups").unwrap_or(0.0);
                if groups >= n as f64 || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Some(s)
        }
    };
    case.populate_s = Some(started.elapsed().as_secs_f64());
    // One scrape first, so that the exited processes are credited and retired, then the
    // measured ones.
    daemon.scrape()?;
    let mut last = None;
    for _ in 0..config.scrapes {
        // Apart, as Prometheus scrapes: back to back, a scrape would also wait out the
        // daemon's minimum gap between two collections.
        std::thread::sleep(SCRAPE_GAP);
        let s = daemon.scrape()?;
        case.scrape_ms.push(s.elapsed.as_secs_f64() * 1e3);
        last = Some(s.body);
    }
    let (rss, hwm) = daemon.memory_kib()?;
    case.rss_kib = Some(rss);
    case.hwm_kib = Some(hwm);
    case.scrape_median_ms = median(&case.scrape_ms);
    case.scrape_max_ms = case.scrape_ms.iter().copied().reduce(f64::max);
    if let Some(body) = &last {
        case.groups = sample(body, "zcprof_groups");
        case.threads_tracked = sample(body, "zcprof_threads_tracked");
        case.processes_retired = sample(body, "zcprof_processes_retired_total");
        case.series = Some(
            body.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .count(),
        );
        case.body_bytes = Some(body.len());
    }
    drop(_sleepers);
    let done = daemon.stop()?;
    case.exit_status = Some(done.status.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parsing() {
        let body = "# HELP zcprof_groups x\nzcprof_groups 12\nzcprof_groups_other 3\n\
                    zcprof_syscalls_total{comm=\"dd\"} 4000\n\
                    zcprof_syscalls_total{comm=\"ddx\"} 7\n\
                    zcprof_syscalls_total{comm=\"dd\",x=\"y\"} 1\n";
        assert_eq!(sample(body, "zcprof_groups"), Some(12.0));
        assert_eq!(sample(body, "zcprof_nothing"), None);
        assert_eq!(
            sum_samples(body, "zcprof_syscalls_total", "comm=\"dd\""),
            4001.0
        );
    }

    #[test]
    fn chunked() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap(),
            "hello world"
        );
        assert!(dechunk("5\r\nhel").is_err());
    }
}
