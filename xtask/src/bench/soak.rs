//! Case (e), the soak: `zcprof serve` at its defaults through a million short-lived processes
//! (`zc-storm`, whose tally says exactly what zcprof must count). Lost events must stay 0, the
//! kernel's thread table and the daemon's memory must come back to where they started, and the
//! fork rate it holds is set against the machine's own (the same storm without zcprof).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use super::{
    Config,
    daemon::{Daemon, sample},
};
use crate::{cargo, process};

/// Loop counts (threads forking one child after another) of the bare ladder; twice the CPUs
/// is added if it is not among them.
const BARE_LOOPS: [usize; 4] = [1, 2, 4, 8];

/// Between two samples of the daemon's RSS and map entries during a storm.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Longest wait, after a storm, for the daemon to credit its last processes: a few
/// collections (one a second at the default `--collect-interval`) are plenty; longer means
/// counts are missing for good.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Growth of the kernel's thread table allowed beyond the host's own thread growth: the other
/// jobs on the host start and end threads all the time, and a thread that is born between
/// the two counts is in one and not yet in the other (the same margin as the serve test).
pub const ENTRIES_MARGIN: f64 = 50.0;

/// RSS growth allowed from start to end, in MiB, or [`RSS_MARGIN_PCT`] of the start if more:
/// the allocator keeps some freed pages and the first storm grows hash maps that never shrink
/// (a one-off cost), while a leak of one entry per process (≥ 11 bytes each through a million
/// processes) would exceed it.
pub const RSS_MARGIN_MIB: f64 = 10.0;

/// See [`RSS_MARGIN_MIB`].
pub const RSS_MARGIN_PCT: f64 = 10.0;

/// One `zc-storm` run, as its tally reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Storm {
    pub loops: usize,
    pub processes: u64,
    pub threads: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub forks_per_s: f64,
    pub children_failed: u64,
    pub burster_ok: bool,
    pub main_pid: u32,
}

/// One sample taken during a storm under the daemon.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the storm started.
    pub t_s: f64,
    pub rss_kib: u64,
    /// `zcprof_map_entries{map="threads"}`.
    pub thread_entries: f64,
}

/// A storm under `zcprof serve`, and what the daemon counted of it (deltas over the storm).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServeRun {
    pub storm: Storm,
    /// VmRSS of the daemon before the storm, the most sampled during it, and after it.
    pub rss_start_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// VmHWM at the end (the peak since the daemon started, start-up included).
    pub hwm_end_kib: Option<u64>,
    /// `zcprof_map_entries` by map, before and after; the thread map's sampled peak.
    pub entries_start: BTreeMap<String, f64>,
    pub entries_end: BTreeMap<String, f64>,
    pub thread_entries_peak: Option<f64>,
    /// `zcprof_groups` and sample lines (series), before and after: the daemon keeps a group
    /// for every command name it has seen on the host, so other jobs grow its memory too.
    pub groups_start: Option<f64>,
    pub groups_end: Option<f64>,
    pub series_start: Option<usize>,
    pub series_end: Option<usize>,
    /// Threads on the host (/proc/*/task), before and after: the host's own churn.
    pub host_threads_start: Option<u64>,
    pub host_threads_end: Option<u64>,
    /// `zcprof_events_lost_total` by reason, over the storm.
    pub lost: BTreeMap<String, f64>,
    /// `write` calls and bytes counted for `zcstorm-child` and for `zcstorm-burst`.
    pub child_writes: f64,
    pub child_bytes: f64,
    pub burst_writes: f64,
    pub burst_bytes: f64,
    pub threads_retired: f64,
    pub processes_retired: f64,
    /// From the end of the storm to the scrape that counted everything (or gave up).
    pub settle_s: Option<f64>,
    /// Other `zc-storm` processes seen on the host during the storm (another checkout's
    /// tests): serve watches the whole host and their children have the same name, so their
    /// writes are counted with ours and the tally cannot be checked exactly.
    pub foreign_storms: Vec<u32>,
    /// From the start scrape to the end scrape.
    pub wall_s: Option<f64>,
    pub samples: Vec<Sample>,
    pub error: Option<String>,
}

impl ServeRun {
    /// Events lost over the storm, every reason.
    pub fn lost_total(&self) -> f64 {
        self.lost.values().sum()
    }

    /// Writes (calls and bytes, children's and burst threads') not counted, or counted too
    /// often: 0 when zcprof's counts equal the tally.
    pub fn writes_off(&self) -> f64 {
        let s = &self.storm;
        let want = [
            s.processes as f64,
            (s.processes * s.bytes) as f64,
            s.threads as f64,
            (s.threads * s.bytes) as f64,
        ];
        let got = [
            self.child_writes,
            self.child_bytes,
            self.burst_writes,
            self.burst_bytes,
        ];
        want.iter().zip(got).map(|(w, g)| (w - g).abs()).sum()
    }

    /// Thread map entries at the end minus at the start, less the host's own thread growth.
    pub fn entries_growth(&self) -> Option<f64> {
        let start = self.entries_start.get("threads")?;
        let end = self.entries_end.get("threads")?;
        let host = self.host_threads_end? as f64 - self.host_threads_start? as f64;
        Some(end - start - host.max(0.0))
    }

    /// RSS at the end minus at the start, in MiB.
    pub fn rss_growth_mib(&self) -> Option<f64> {
        Some((self.rss_end_kib? as f64 - self.rss_start_kib? as f64) / 1024.0)
    }

    /// The RSS growth allowed for this run's start, in MiB.
    pub fn rss_margin_mib(&self) -> f64 {
        let start = self.rss_start_kib.unwrap_or(0) as f64 / 1024.0;
        RSS_MARGIN_MIB.max(start * RSS_MARGIN_PCT / 100.0)
    }

    /// Whether every write of the tally was counted, at least: all that can be checked when
    /// another storm's writes were counted with ours.
    fn writes_at_least(&self) -> bool {
        let s = &self.storm;
        self.child_writes >= s.processes as f64
            && self.child_bytes >= (s.processes * s.bytes) as f64
            && self.burst_writes >= s.threads as f64
            && self.burst_bytes >= (s.threads * s.bytes) as f64
    }

    /// Whether the writes could be checked against the tally: no other storm ran, or the
    /// counts are exact anyway.
    pub fn writes_checkable(&self) -> bool {
        self.foreign_storms.is_empty() || self.writes_off() == 0.0
    }

    /// Whether the daemon held this storm: nothing lost, and every write counted (exactly;
    /// or at least, when another storm's writes were counted with ours).
    pub fn held(&self) -> bool {
        self.error.is_none()
            && self.lost_total() == 0.0
            && (self.writes_off() == 0.0 || (!self.writes_checkable() && self.writes_at_least()))
    }
}

/// Case (e).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Section {
    /// Processes of the soak, and of each ladder storm.
    pub processes: usize,
    pub ladder_processes: usize,
    /// Bare storms, one per loop count.
    pub bare: Vec<Storm>,
    /// The loop count of the highest bare rate: the soak's.
    pub best_loops: Option<usize>,
    /// The soak itself.
    pub soak: Option<ServeRun>,
    /// Ladder storms under the same daemon after the soak (the bare loop counts and one
    /// more), for the highest rate it holds.
    pub ladder: Vec<ServeRun>,
    /// Why the case could not run at all.
    pub error: Option<String>,
}

impl Section {
    /// The bare rate at `loops`, if measured.
    pub fn bare_rate(&self, loops: usize) -> Option<f64> {
        self.bare
            .iter()
            .find(|b| b.loops == loops)
            .map(|b| b.forks_per_s)
    }

    /// The highest bare rate measured.
    pub fn bare_best(&self) -> Option<&Storm> {
        self.bare
            .iter()
            .max_by(|a, b| a.forks_per_s.total_cmp(&b.forks_per_s))
    }

    /// The fastest storm under serve (soak or ladder) that lost nothing and counted every
    /// write.
    pub fn highest_held(&self) -> Option<&ServeRun> {
        self.soak
            .iter()
            .chain(&self.ladder)
            .filter(|r| r.held())
            .max_by(|a, b| a.storm.forks_per_s.total_cmp(&b.storm.forks_per_s))
    }
}

/// Runs case (e).
pub fn run(zcprof: &Path, config: &Config, say: &dyn Fn(String)) -> Section {
    let mut section = Section {
        processes: config.soak_processes,
        ladder_processes: config.soak_ladder_processes,
        ..Section::default()
    };
    if let Err(e) = measure(zcprof, config, &mut section, say) {
        say(format!("bench: (e) soak: FAILED: {e:#}"));
        section.error = Some(format!("{e:#}"));
    }
    section
}

fn measure(
    zcprof: &Path,
    config: &Config,
    section: &mut Section,
    say: &dyn Fn(String),
) -> Result<()> {
    cargo::run(cargo::command().args([
        "build",
        "--release",
        "-p",
        "zcprof-tests",
        "--bin",
        "zc-storm",
    ]))?;
    let storm_bin = cargo::built_binary("release", "zc-storm")?;
    let dir = cargo::target_dir()?.join("bench-soak");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let storm = Storms {
        bin: storm_bin,
        dir,
    };

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut loops: Vec<usize> = BARE_LOOPS.to_vec();
    loops.push(2 * cpus);
    loops.sort_unstable();
    loops.dedup();
    for &l in &loops {
        let s = storm.run(l, config.soak_ladder_processes, "bare")?;
        say(format!(
            "bench: (e) bare storm, {l} loops: {} processes in {:.1} s, {:.0} forks/s",
            s.processes, s.elapsed_s, s.forks_per_s
        ));
        section.bare.push(s);
    }
    let best = section.bare_best().map_or(2 * cpus, |b| b.loops);
    section.best_loops = Some(best);

    let daemon = Daemon::start(zcprof, &[])?;
    // Its first collection reads every thread already on the host; the start figures are
    // taken after it.
    daemon.scrape()?;
    std::thread::sleep(SAMPLE_EVERY);
    say(format!(
        "bench: (e) soak: zcprof serve through {} processes, {best} loops…",
        config.soak_processes
    ));
    let soak = storm.under(&daemon, best, config.soak_processes, "soak");
    say(format!("bench: (e) soak: {}", soak.describe()));
    section.soak = Some(soak);

    // Then a ladder under the same daemon: the bare loop counts and twice the most, for the
    // highest rate it holds without loss.
    let mut ladder = loops.clone();
    ladder.push(2 * loops.last().copied().unwrap_or(1));
    for &l in &ladder {
        let r = storm.under(&daemon, l, config.soak_ladder_processes, "ladder");
        say(format!("bench: (e) ladder, {l} loops: {}", r.describe()));
        section.ladder.push(r);
    }
    let done = daemon.stop()?;
    if !done.status.success() {
        bail!("zcprof serve ended with {} after the soak", done.status);
    }
    Ok(())
}

impl ServeRun {
    fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("FAILED: {e}");
        }
        let foreign = if self.foreign_storms.is_empty() {
            String::new()
        } else {
            format!(
                " (other zc-storm processes ran meanwhile: {:?}, their writes counted with ours)",
                self.foreign_storms
            )
        };
        let mib = |k: Option<u64>| k.map_or(f64::NAN, |k| k as f64 / 1024.0);
        let entries = |m: &BTreeMap<String, f64>| m.get("threads").copied().unwrap_or(f64::NAN);
        format!(
            "{} processes in {:.1} s ({:.0} forks/s); lost {}; writes off by {}{foreign}; RSS {:.1} → \
             peak {:.1} → {:.1} MiB; thread entries {} → peak {} → {}; {} threads retired",
            self.storm.processes,
            self.storm.elapsed_s,
            self.storm.forks_per_s,
            self.lost_total(),
            self.writes_off(),
            mib(self.rss_start_kib),
            mib(self.rss_peak_kib),
            mib(self.rss_end_kib),
            entries(&self.entries_start),
            self.thread_entries_peak.unwrap_or(f64::NAN),
            entries(&self.entries_end),
            self.threads_retired
        )
    }
}

/// Where zc-storm is and where its tallies go.
struct Storms {
    bin: PathBuf,
    dir: PathBuf,
}

impl Storms {
    fn command(&self, loops: usize, processes: usize, tally: &Path) -> std::process::Command {
        let mut cmd = process::command(&self.bin);
        cmd.arg(tally)
            .args(["--loops", &loops.to_string()])
            .args(["--processes", &processes.to_string()]);
        cmd
    }

    /// A storm's deadline: at 200 forks/s, far below any machine's, it is stuck.
    fn timeout(processes: usize) -> Duration {
        Duration::from_secs(60 + processes as u64 / 200)
    }

    /// Runs a storm to its end and reads its tally.
    fn run(&self, loops: usize, processes: usize, tag: &str) -> Result<Storm> {
        let tally = self.dir.join(format!("{tag}-{loops}.json"));
        let _ = std::fs::remove_file(&tally);
        let cmd = self.command(loops, processes, &tally);
        super::child::run(cmd, Self::timeout(processes))?.ensure_success()?;
        read_tally(&tally)
    }

    /// Runs a storm under `daemon`, sampling it every [`SAMPLE_EVERY`], then waits for it to
    /// count everything.
    fn under(&self, daemon: &Daemon, loops: usize, processes: usize, tag: &str) -> ServeRun {
        let mut r = ServeRun::default();
        if let Err(e) = self.measure_under(daemon, loops, processes, tag, &mut r) {
            r.error = Some(format!("{e:#}"));
        }
        r
    }

    fn measure_under(
        &self,
        daemon: &Daemon,
        loops: usize,
        processes: usize,
        tag: &str,
        r: &mut ServeRun,
    ) -> Result<()> {
        let wall = Instant::now();
        let before = daemon.scrape()?.body;
        r.rss_start_kib = Some(daemon.memory_kib()?.0);
        r.entries_start = map_entries(&before);
        r.groups_start = sample(&before, "zcprof_groups");
        r.series_start = Some(series(&before));
        r.host_threads_start = Some(host_threads());

        let tally = self.dir.join(format!("{tag}-{loops}.json"));
        let _ = std::fs::remove_file(&tally);
        let cmd = self.command(loops, processes, &tally);
        let timeout = Self::timeout(processes);
        let started = Instant::now();
        // The storm is waited for on its own thread, so that this one can sample the daemon
        // (which stays here: its output channel may not be shared).
        let waiter = std::thread::spawn(move || super::child::run(cmd, timeout));
        let mut peak_rss = r.rss_start_kib.unwrap_or(0);
        let mut peak_entries = r.entries_start.get("threads").copied().unwrap_or(0.0);
        let mut next = started + SAMPLE_EVERY;
        let mut storms = BTreeSet::new();
        let mut next_scan = started;
        while !waiter.is_finished() {
            // Often enough to catch another storm of a few seconds.
            if Instant::now() >= next_scan {
                storms.extend(storm_pids());
                next_scan += Duration::from_millis(500);
            }
            if Instant::now() < next {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            next += SAMPLE_EVERY;
            let rss = daemon.memory_kib()?.0;
            let entries = map_entries(&daemon.scrape()?.body)
                .get("threads")
                .copied()
                .unwrap_or(0.0);
            peak_rss = peak_rss.max(rss);
            peak_entries = peak_entries.max(entries);
            r.samples.push(Sample {
                t_s: started.elapsed().as_secs_f64(),
                rss_kib: rss,
                thread_entries: entries,
            });
        }
        let finished = waiter
            .join()
            .map_err(|_| anyhow::anyhow!("the thread waiting for zc-storm panicked"))??;
        finished.ensure_success()?;
        r.storm = read_tally(&tally)?;
        if r.storm.children_failed > 0 || !r.storm.burster_ok {
            bail!(
                "zc-storm: {} children failed, burster ok: {}",
                r.storm.children_failed,
                r.storm.burster_ok
            );
        }

        // Each scrape collects: scrape until every write is counted, or the counts stop
        // moving (then what is missing is lost), or the timeout.
        let ended = Instant::now();
        let (child_w0, child_b0) = writes(&before, "zcstorm-child");
        let (burst_w0, burst_b0) = writes(&before, "zcstorm-burst");
        let mut last = None;
        let mut still = 0;
        let after = loop {
            std::thread::sleep(Duration::from_millis(1000));
            storms.extend(storm_pids());
            let body = daemon.scrape()?.body;
            let counts = (
                writes(&body, "zcstorm-child"),
                writes(&body, "zcstorm-burst"),
            );
            r.child_writes = counts.0.0 - child_w0;
            r.child_bytes = counts.0.1 - child_b0;
            r.burst_writes = counts.1.0 - burst_w0;
            r.burst_bytes = counts.1.1 - burst_b0;
            still = if last == Some(counts) { still + 1 } else { 0 };
            last = Some(counts);
            if r.writes_off() == 0.0 || still >= 3 || ended.elapsed() >= SETTLE_TIMEOUT {
                break body;
            }
        };
        r.settle_s = Some(ended.elapsed().as_secs_f64());
        storms.remove(&r.storm.main_pid);
        r.foreign_storms = storms.into_iter().collect();
        let (rss, hwm) = daemon.memory_kib()?;
        r.rss_end_kib = Some(rss);
        r.hwm_end_kib = Some(hwm);
        r.rss_peak_kib = Some(peak_rss.max(rss));
        r.entries_end = map_entries(&after);
        r.groups_end = sample(&after, "zcprof_groups");
        r.series_end = Some(series(&after));
        r.thread_entries_peak =
            Some(peak_entries.max(r.entries_end.get("threads").copied().unwrap_or(0.0)));
        r.host_threads_end = Some(host_threads());
        let (lost0, lost1) = (lost(&before), lost(&after));
        r.lost = lost1
            .iter()
            .map(|(k, v)| (k.clone(), v - lost0.get(k).copied().unwrap_or(0.0)))
            .collect();
        let delta =
            |name: &str| sample(&after, name).unwrap_or(0.0) - sample(&before, name).unwrap_or(0.0);
        r.threads_retired = delta("zcprof_threads_retired_total");
        r.processes_retired = delta("zcprof_processes_retired_total");
        r.wall_s = Some(wall.elapsed().as_secs_f64());
        Ok(())
    }
}

fn read_tally(path: &Path) -> Result<Storm> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading zc-storm's tally {}", path.display()))?;
    let t: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let u = |k: &str| t[k].as_u64().unwrap_or(0);
    let f = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
    Ok(Storm {
        loops: u("loops") as usize,
        processes: u("processes"),
        threads: u("threads"),
        bytes: u("bytes"),
        elapsed_s: f("elapsed_s"),
        forks_per_s: f("forks_per_s"),
        children_failed: u("children_failed"),
        burster_ok: t["burster_ok"].as_bool().unwrap_or(false),
        main_pid: u("main_pid") as u32,
    })
}

/// Pids of the `zc-storm` processes on the host now (their main thread keeps the binary's
/// name; the burster and the children rename themselves).
fn storm_pids() -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "zc-storm")
        })
        .collect()
}

/// Threads on the host now.
fn host_threads() -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_dir(e.path().join("task")).ok())
        .map(|tasks| tasks.count() as u64)
        .sum()
}

/// `name{labels} value` lines of a Prometheus body, as (labels, value).
fn labelled<'a>(body: &'a str, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    body.lines().filter_map(move |l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.split_once("} ")?;
        Some((labels, value.trim().parse().ok()?))
    })
}

/// The value of label `key` in a `k="v",…` label list.
fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// Sums of a labelled family by the value of `key`.
fn by_label(body: &str, name: &str, key: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, v) in labelled(body, name) {
        if let Some(k) = label(labels, key) {
            *out.entry(k.to_owned()).or_insert(0.0) += v;
        }
    }
    out
}

/// Sample lines of a Prometheus body.
fn series(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

fn map_entries(body: &str) -> BTreeMap<String, f64> {
    by_label(body, "zcprof_map_entries", "map")
}

fn lost(body: &str) -> BTreeMap<String, f64> {
    by_label(body, "zcprof_events_lost_total", "reason")
}

/// `write` calls and bytes counted for `comm`.
fn writes(body: &str, comm: &str) -> (f64, f64) {
    let sum = |name: &str| {
        labelled(body, name)
            .filter(|(l, _)| label(l, "comm") == Some(comm) && label(l, "syscall") == Some("write"))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    (
        sum("zcprof_transfer_calls_total"),
        sum("zcprof_ledger_bytes_total"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# HELP x\n\
        zcprof_map_entries{map=\"threads\"} 120\n\
        zcprof_map_entries{map=\"uring\"} 0\n\
        zcprof_events_lost_total{reason=\"thread_table_full\"} 3\n\
        zcprof_events_lost_total{reason=\"read_failed\"} 0\n\
        zcprof_transfer_calls_total{comm=\"zcstorm-child\",syscall=\"write\",column=\"a\"} 5\n\
        zcprof_transfer_calls_total{comm=\"zcstorm-child\",syscall=\"write\",column=\"b\"} 2\n\
        zcprof_transfer_calls_total{comm=\"zcstorm-child\",syscall=\"read\",column=\"a\"} 9\n\
        zcprof_transfer_calls_total{comm=\"zcstorm-childx\",syscall=\"write\",column=\"a\"} 9\n\
        zcprof_ledger_bytes_total{comm=\"zcstorm-child\",syscall=\"write\",column=\"a\"} 7000\n";

    #[test]
    fn parses_the_families() {
        assert_eq!(map_entries(BODY)["threads"], 120.0);
        assert_eq!(map_entries(BODY)["uring"], 0.0);
        assert_eq!(lost(BODY).values().sum::<f64>(), 3.0);
        assert_eq!(writes(BODY, "zcstorm-child"), (7.0, 7000.0));
        assert_eq!(writes(BODY, "zcstorm-burst"), (0.0, 0.0));
    }

    #[test]
    fn verdicts() {
        let mut r = ServeRun {
            storm: Storm {
                processes: 10,
                threads: 2,
                bytes: 100,
                ..Storm::default()
            },
            child_writes: 10.0,
            child_bytes: 1000.0,
            burst_writes: 2.0,
            burst_bytes: 200.0,
            rss_start_kib: Some(200 * 1024),
            rss_end_kib: Some(210 * 1024),
            host_threads_start: Some(500),
            host_threads_end: Some(480),
            ..ServeRun::default()
        };
        r.entries_start.insert("threads".into(), 100.0);
        r.entries_end.insert("threads".into(), 110.0);
        assert!(r.held());
        assert_eq!(r.entries_growth(), Some(10.0));
        assert_eq!(r.rss_growth_mib(), Some(10.0));
        assert_eq!(r.rss_margin_mib(), 20.0);
        r.child_writes = 9.0;
        assert!(!r.held());
        // Another storm's writes counted with ours: at least the tally is all that is asked.
        r.child_writes = 15.0;
        assert!(!r.held());
        r.foreign_storms.push(42);
        assert!(r.held() && !r.writes_checkable());
        r.child_writes = 9.0;
        assert!(!r.held());
        r.child_writes = 10.0;
        r.lost.insert("thread_table_full".into(), 1.0);
        assert!(!r.held());
    }
}
