//! Case (a), the worst case: `dd if=/dev/zero of=/dev/null bs=1 count=N` makes 2N one-byte
//! syscalls and nothing else, so whatever a tracer adds per syscall dominates its wall time.
//!
//! The time is dd's own: GNU dd reads the clock after opening its files and again after its
//! copy loop, and prints the difference (`… copied, 0.661 s, …`). So a tool's start-up (loading
//! programs, bpftrace's compilation) and dd's exec and dynamic loading are never in it, for
//! every case alike. Each tool's count of dd's syscalls is checked, so a tool that did not
//! watch dd cannot pass for a cheap one.

use std::{
    io::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde::Serialize;
use serde_json::Value;

use super::{
    Config,
    child::{self, Child, Stream},
    daemon::{self, Daemon},
    median,
};
use crate::process;

/// Longest one dd run may take, tool start-up included.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest a tool may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The ways dd is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    Bare,
    RunFloor,
    Run,
    RunLatency,
    RunBackstops,
    AttachFloor,
    Attach,
    Bystander,
    ServeFloor,
    Serve,
    Bpftrace,
    PerfStat,
}

pub const CASES: [Case; 12] = [
    Case::Bare,
    Case::RunFloor,
    Case::Run,
    Case::RunLatency,
    Case::RunBackstops,
    Case::AttachFloor,
    Case::Attach,
    Case::Bystander,
    Case::ServeFloor,
    Case::Serve,
    Case::Bpftrace,
    Case::PerfStat,
];

impl Case {
    pub fn label(self) -> &'static str {
        match self {
            Case::Bare => "bare dd",
            Case::RunFloor => "floor: zcprof run --empty-programs",
            Case::Run => "zcprof run",
            Case::RunLatency => "zcprof run --latency",
            Case::RunBackstops => "zcprof run --backstops on",
            Case::AttachFloor => "floor: zcprof attach --empty-programs",
            Case::Attach => "zcprof attach",
            Case::Bystander => "unwatched dd, zcprof attach on another process",
            Case::ServeFloor => "floor: zcprof serve --empty-programs",
            Case::Serve => "zcprof serve (system-wide)",
            Case::Bpftrace => "bpftrace (per-pid syscalls, read/write bytes)",
            Case::PerfStat => "perf stat (3 syscall tracepoints)",
        }
    }

    /// The floor this case's added time is compared with.
    pub fn floor(self) -> Option<Case> {
        match self {
            Case::Run => Some(Case::RunFloor),
            // --latency's budget is against zcprof run without it, not against a floor.
            Case::RunLatency => Some(Case::Run),
            // What the backstops cost where the kernel preempts programs (Linux 7.x): against
            // zcprof run without them.
            Case::RunBackstops => Some(Case::Run),
            Case::Attach | Case::Bystander => Some(Case::AttachFloor),
            Case::Serve => Some(Case::ServeFloor),
            _ => None,
        }
    }

    pub fn is_floor(self) -> bool {
        matches!(self, Case::RunFloor | Case::AttachFloor | Case::ServeFloor)
    }
}

/// One case's results.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: Case,
    pub label: &'static str,
    /// dd's own elapsed time, one per round, in round order.
    pub samples_s: Vec<f64>,
    pub median_s: Option<f64>,
    /// (median − bare median) / (2 × count), in ns.
    pub added_ns_per_syscall: Option<f64>,
    /// The floor this case is compared with, and what it was really compared with.
    pub floor: Option<Case>,
    pub vs_floor: Option<f64>,
    pub vs_bpftrace: Option<f64>,
    /// The smallest count of dd's syscalls the tool reported over the rounds.
    pub counted_syscalls: Option<u64>,
    pub error: Option<String>,
    pub skipped: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub command: String,
    pub count: u64,
    pub syscalls: u64,
    pub rounds: usize,
    pub cases: Vec<CaseResult>,
    /// Other BPF programs on sys_enter/sys_exit at the start of each round (see
    /// `Conditions`): rounds where this is not 0 are slower for every case.
    pub foreign_hooks_per_round: Vec<usize>,
}

impl Section {
    pub fn get(&self, case: Case) -> Option<&CaseResult> {
        self.cases.iter().find(|c| c.case == case)
    }
}

/// One dd run.
struct Sample {
    seconds: f64,
    /// dd's syscalls as the tool counted them (None for bare dd and the floors).
    counted: Option<u64>,
}

pub(super) fn dd_args(count: u64) -> Vec<String> {
    vec![
        "if=/dev/zero".into(),
        "of=/dev/null".into(),
        "bs=1".into(),
        format!("count={count}"),
    ]
}

/// dd's own elapsed time from its last line (`N bytes (…) copied, 0.661 s, 3.0 MB/s`); checks
/// that it copied `count` bytes.
pub fn dd_seconds(stderr: &str, count: u64) -> Result<f64> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains(" copied, "))
        .with_context(|| {
            format!(
                "dd printed no `copied` line; stderr was:\n{}",
                process::tail(stderr, 10)
            )
        })?;
    let bytes: u64 = line
        .split_whitespace()
        .next()
        .and_then(|b| b.parse().ok())
        .with_context(|| format!("cannot read the byte count in dd's `{line}`"))?;
    ensure!(
        bytes == count,
        "dd copied {bytes} bytes, not {count}: `{line}`"
    );
    let after = &line[line.find(" copied, ").unwrap_or(0) + " copied, ".len()..];
    after
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .with_context(|| format!("cannot read the time in dd's `{line}`"))
}

/// The `syscalls` of the process named dd in a zcprof JSON report.
pub(super) fn zcprof_count(report: &str) -> Result<u64> {
    let doc: Value = serde_json::from_str(report).with_context(|| {
        format!(
            "zcprof did not print a JSON report; it printed:\n{}",
            process::tail(report, 10)
        )
    })?;
    doc["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["comm"] == "dd")
        .filter_map(|p| p["syscalls"].as_u64())
        .max()
        .context("zcprof's report has no process named dd")
}

/// `sh -c 'read go && exec dd …'`: dd starts when a line arrives on stdin, with the shell's
/// pid, so that a tool can be attached to that pid first.
pub(super) fn gated_dd(count: u64) -> Result<Child> {
    let mut cmd = process::command("sh");
    cmd.args(["-c", "read go && exec dd \"$@\"", "sh"])
        .args(dd_args(count));
    Child::spawn(cmd, true)
}

pub(super) fn release(gate: &mut Child) -> Result<()> {
    let stdin = gate.stdin.as_mut().context("the gate has no stdin")?;
    stdin.write_all(b"go\n").context("releasing dd")?;
    gate.close_stdin();
    Ok(())
}

/// The bpftrace program of the comparison: what zcprof gives at least, per process.
pub fn bpftrace_program(pid: u32) -> String {
    format!(
        "BEGIN {{ printf(\"zcprof-bench: ready\\n\"); }}\n\
         tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @syscalls[pid] = count(); }}\n\
         tracepoint:syscalls:sys_exit_read /pid == {pid} && args->ret > 0/ \
         {{ @read_bytes[pid] = sum(args->ret); }}\n\
         tracepoint:syscalls:sys_exit_write /pid == {pid} && args->ret > 0/ \
         {{ @write_bytes[pid] = sum(args->ret); }}\n"
    )
}

/// `zcprof attach --json --pid PID` (with empty programs for a floor), once it says it is
/// attached.
pub(super) fn attached(zcprof: &Path, pid: u32, empty_programs: bool) -> Result<Child> {
    let mut cmd = process::command(zcprof);
    cmd.args(["attach", "--json", "--pid", &pid.to_string()]);
    if empty_programs {
        cmd.arg("--empty-programs");
    }
    let mut attach = Child::spawn(cmd, false)?;
    attach.wait_for(
        READY_TIMEOUT,
        |l| l.stream == Stream::Stderr && l.text.starts_with("zcprof: attached"),
        "`zcprof: attached …`",
    )?;
    Ok(attach)
}

fn sample(zcprof: &Path, case: Case, count: u64) -> Result<Sample> {
    match case {
        Case::Bare => {
            let mut cmd = process::command("dd");
            cmd.args(dd_args(count));
            let out = child::run(cmd, RUN_TIMEOUT)?;
            out.ensure_success()?;
            Ok(Sample {
                seconds: dd_seconds(&out.stderr(), count)?,
                counted: None,
            })
        }
        Case::Run | Case::RunFloor | Case::RunLatency | Case::RunBackstops => {
            let mut cmd = process::command(zcprof);
            cmd.args(["run", "--json"]);
            match case {
                Case::RunFloor => cmd.arg("--empty-programs"),
                Case::RunLatency => cmd.arg("--latency"),
                Case::RunBackstops => cmd.args(["--backstops", "on"]),
                _ => &mut cmd,
            };
            cmd.args(["--", "dd"]).args(dd_args(count));
            let out = child::run(cmd, RUN_TIMEOUT)?;
            out.ensure_success()?;
            let counted = (case != Case::RunFloor)
                .then(|| zcprof_count(&out.stdout()))
                .transpose()?;
            Ok(Sample {
                seconds: dd_seconds(&out.stderr(), count)?,
                counted,
            })
        }
        Case::Attach | Case::AttachFloor => {
            let mut gate = gated_dd(count)?;
            let attach = attached(zcprof, gate.pid(), case == Case::AttachFloor)?;
            release(&mut gate)?;
            let dd = gate.finish(RUN_TIMEOUT)?;
            dd.ensure_success()?;
            let report = attach.finish(Duration::from_secs(30))?;
            report.ensure_success()?;
            let counted = (case == Case::Attach)
                .then(|| zcprof_count(&report.stdout()))
                .transpose()?;
            Ok(Sample {
                seconds: dd_seconds(&dd.stderr(), count)?,
                counted,
            })
        }
        Case::Bystander => {
            // What profiling one process costs the rest of the host: dd is not watched, so
            // every syscall of it stops at the programs' early exit.
            let mut sleeper = process::command("sleep");
            sleeper.arg("600");
            let sleeper = Child::spawn(sleeper, false)?;
            let attach = attached(zcprof, sleeper.pid(), false)?;
            let mut dd = process::command("dd");
            dd.args(dd_args(count));
            let out = child::run(dd, RUN_TIMEOUT);
            sleeper.stop(libc::SIGKILL, Duration::from_secs(30))?;
            let report = attach.finish(Duration::from_secs(30))?;
            report.ensure_success()?;
            let out = out?;
            out.ensure_success()?;
            ensure!(
                zcprof_count(&report.stdout()).is_err(),
                "zcprof attach counted the unwatched dd"
            );
            Ok(Sample {
                seconds: dd_seconds(&out.stderr(), count)?,
                counted: None,
            })
        }
        Case::Serve | Case::ServeFloor => {
            let extra: &[&str] = if case == Case::ServeFloor {
                &["--empty-programs"]
            } else {
                &[]
            };
            let daemon = Daemon::start(zcprof, extra)?;
            let mut cmd = process::command("dd");
            cmd.args(dd_args(count));
            let out = child::run(cmd, RUN_TIMEOUT);
            let counted = if case == Case::Serve {
                let body = daemon.scrape()?.body;
                Some(daemon::sum_samples(&body, "zcprof_syscalls_total", "comm=\"dd\"") as u64)
            } else {
                None
            };
            let stopped = daemon.stop()?;
            if !stopped.status.success() {
                bail!(
                    "zcprof serve did not exit 0 on SIGTERM ({}):\n{}",
                    stopped.status,
                    process::tail(&stopped.stderr(), 10)
                );
            }
            let out = out?;
            out.ensure_success()?;
            Ok(Sample {
                seconds: dd_seconds(&out.stderr(), count)?,
                counted,
            })
        }
        Case::Bpftrace => {
            let mut gate = gated_dd(count)?;
            let mut cmd = process::command("bpftrace");
            cmd.arg("-e").arg(bpftrace_program(gate.pid()));
            let mut bt = Child::spawn(cmd, false)?;
            bt.wait_for(
                READY_TIMEOUT,
                |l| l.text.contains("zcprof-bench: ready"),
                "its BEGIN line",
            )?;
            release(&mut gate)?;
            let dd = gate.finish(RUN_TIMEOUT)?;
            dd.ensure_success()?;
            let out = bt.stop(libc::SIGINT, Duration::from_secs(30))?;
            let key = format!("@syscalls[{}]:", dd_pid(&out.stdout())?);
            let counted = out
                .stdout()
                .lines()
                .find_map(|l| l.trim().strip_prefix(key.as_str())?.trim().parse().ok())
                .with_context(|| {
                    format!(
                        "bpftrace printed no {key} count:\n{}",
                        process::tail(&out.stdout(), 10)
                    )
                })?;
            Ok(Sample {
                seconds: dd_seconds(&dd.stderr(), count)?,
                counted: Some(counted),
            })
        }
        Case::PerfStat => {
            let mut cmd = process::command("perf");
            cmd.args([
                "stat",
                "-x,",
                "-e",
                "syscalls:sys_enter_read,syscalls:sys_enter_write,raw_syscalls:sys_enter",
                "--",
                "dd",
            ])
            .args(dd_args(count));
            let out = child::run(cmd, RUN_TIMEOUT)?;
            out.ensure_success()?;
            let stderr = out.stderr();
            let counted = stderr
                .lines()
                .find_map(|l| {
                    let mut f = l.split(',');
                    let v = f.next()?.trim().parse::<u64>().ok()?;
                    f.nth(1)
                        .is_some_and(|e| e == "raw_syscalls:sys_enter")
                        .then_some(v)
                })
                .with_context(|| {
                    format!(
                        "perf stat printed no raw_syscalls:sys_enter count:\n{}",
                        process::tail(&stderr, 10)
                    )
                })?;
            Ok(Sample {
                seconds: dd_seconds(&stderr, count)?,
                counted: Some(counted),
            })
        }
    }
}

/// The one key of bpftrace's @syscalls map: dd's pid (the gate's: exec keeps it).
fn dd_pid(bpftrace_stdout: &str) -> Result<u32> {
    let pids: Vec<u32> = bpftrace_stdout
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("@syscalls[")?
                .split(']')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    match pids.as_slice() {
        [pid] => Ok(*pid),
        _ => bail!(
            "bpftrace's @syscalls map should have one entry (dd's pid); it printed:\n{}",
            process::tail(bpftrace_stdout, 10)
        ),
    }
}

/// Runs every case `config.rounds` times, interleaved (each round runs every case once, the
/// order rotated by one each round), and derives the per-syscall costs and ratios.
pub fn run(zcprof: &Path, config: &Config, say: &dyn Fn(String)) -> Section {
    let count = config.dd_count;
    let syscalls = 2 * count;
    let mut results: Vec<CaseResult> = CASES
        .iter()
        .map(|&case| CaseResult {
            case,
            label: case.label(),
            samples_s: Vec::new(),
            median_s: None,
            added_ns_per_syscall: None,
            floor: case.floor(),
            vs_floor: None,
            vs_bpftrace: None,
            counted_syscalls: None,
            error: None,
            skipped: None,
        })
        .collect();
    if let Some(r) = results.iter_mut().find(|r| r.case == Case::ServeFloor)
        && !daemon::serve_accepts(zcprof, &["--empty-programs"])
    {
        r.skipped = Some(
            "this zcprof serve has no --empty-programs; zcprof serve is compared with the \
             zcprof run floor (the same hooks)"
                .into(),
        );
        if let Some(s) = results.iter_mut().find(|r| r.case == Case::Serve) {
            s.floor = Some(Case::RunFloor);
        }
    }
    for (name, case) in [("bpftrace", Case::Bpftrace), ("perf", Case::PerfStat)] {
        if which(name).is_none()
            && let Some(r) = results.iter_mut().find(|r| r.case == case)
        {
            r.error = Some(format!(
                "`{name}` is not installed (cargo xtask setup installs it)"
            ));
        }
    }

    let mut foreign_hooks_per_round = Vec::new();
    for round in 0..config.rounds {
        let foreign = super::conditions().foreign_syscall_hooks.len();
        if foreign > 0 {
            say(format!(
                "bench: (a) round {}: {foreign} other BPF programs on the syscall hooks \
                 (someone else's tracer): every case of this round is slowed down",
                round + 1
            ));
        }
        foreign_hooks_per_round.push(foreign);
        let n = results.len();
        for k in 0..n {
            let i = (round + k) % n;
            let r = &mut results[i];
            if r.error.is_some() || r.skipped.is_some() {
                continue;
            }
            let started = Instant::now();
            match sample(zcprof, r.case, count) {
                Ok(s) => {
                    say(format!(
                        "bench: (a) round {}/{}: {:<46} {:.3} s (dd), {:.1} s in all",
                        round + 1,
                        config.rounds,
                        r.label,
                        s.seconds,
                        started.elapsed().as_secs_f64()
                    ));
                    r.samples_s.push(s.seconds);
                    if let Some(c) = s.counted {
                        check_counted(&mut r.counted_syscalls, &mut r.error, r.label, c, syscalls);
                    }
                }
                Err(e) => {
                    say(format!("bench: (a) {}: FAILED: {e:#}", r.label));
                    r.error = Some(format!("{e:#}"));
                }
            }
        }
    }

    for r in &mut results {
        if r.error.is_none() && r.skipped.is_none() {
            r.median_s = median(&r.samples_s);
        }
    }
    let bare = results
        .iter()
        .find(|r| r.case == Case::Bare)
        .and_then(|r| r.median_s);
    let added = |r: &CaseResult| Some((r.median_s? - bare?) / syscalls as f64 * 1e9);
    let added_of = |results: &[CaseResult], case: Case| {
        results.iter().find(|r| r.case == case).and_then(added)
    };
    let bpftrace = added_of(&results, Case::Bpftrace);
    let floors: Vec<(Case, Option<f64>)> =
        CASES.iter().map(|&c| (c, added_of(&results, c))).collect();
    for r in &mut results {
        if r.case == Case::Bare {
            continue;
        }
        r.added_ns_per_syscall = added(r);
        let floor = r
            .floor
            .and_then(|f| floors.iter().find(|(c, _)| *c == f).and_then(|(_, a)| *a));
        r.vs_floor = ratio(r.added_ns_per_syscall, floor);
        if !r.case.is_floor() {
            r.vs_bpftrace = ratio(r.added_ns_per_syscall, bpftrace);
        }
    }
    let mut dd = vec!["dd".to_owned()];
    dd.extend(dd_args(count));
    Section {
        command: dd.join(" "),
        count,
        syscalls,
        rounds: config.rounds,
        cases: results,
        foreign_hooks_per_round,
    }
}

/// a / b, if both are known and b is a positive cost (a ratio to a cost lost in the noise
/// would mean nothing).
pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b > 0.0).then(|| a / b)
}

pub(super) fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Keeps in `counted` the smallest count of dd's syscalls a tool reported (`c`), and sets
/// `error` when it saw fewer than the `syscalls` dd made: it did not watch all of dd.
pub(super) fn check_counted(
    counted: &mut Option<u64>,
    error: &mut Option<String>,
    label: &str,
    c: u64,
    syscalls: u64,
) {
    *counted = Some(counted.map_or(c, |m| m.min(c)));
    if c < syscalls {
        *error = Some(format!(
            "{label} counted {c} syscalls of dd, fewer than its {syscalls}: it did not watch \
             all of dd"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dd() {
        let err = "2000000+0 records in\n2000000+0 records out\n\
                   2000000 bytes (2.0 MB, 1.9 MiB) copied, 0.661234 s, 3.0 MB/s\n";
        assert_eq!(dd_seconds(err, 2_000_000).unwrap(), 0.661234);
        assert!(dd_seconds(err, 5).is_err());
        assert!(dd_seconds("nothing", 5).is_err());
    }

    #[test]
    fn counts_from_reports() {
        let r = r#"{"processes":[{"comm":"sh","syscalls":3},{"comm":"dd","syscalls":4000260}]}"#;
        assert_eq!(zcprof_count(r).unwrap(), 4_000_260);
        assert!(zcprof_count(r#"{"processes":[]}"#).is_err());
        let out = "Attaching 4 probes...\nzcprof-bench: ready\n\n\n@syscalls[4242]: 4000123\n";
        assert_eq!(dd_pid(out).unwrap(), 4242);
        assert!(dd_pid("@syscalls[1]: 2\n@syscalls[3]: 4\n").is_err());
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(2.0), Some(4.0)), Some(0.5));
        assert_eq!(ratio(Some(2.0), Some(-1.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
    }
}
