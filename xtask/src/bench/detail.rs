//! Case (h): what the detail options of issue 12 cost, side by side in interleaved rounds.
//!
//! On `dd bs=1` (the worst case, as (a)): bare, under `zcprof run`, `zcprof run --by-file
//! --by-peer` and `zcprof run --folded FILE`, each one's added time per syscall, the
//! by-file+by-peer ÷ plain ratio, and what each captured stack costs. On (b)'s read-write
//! workload: bare, under `zcprof run` and under `zcprof run --folded FILE`, the throughput loss
//! of each against the bare run of the same round.
//!
//! Every profiled run is checked against a ground truth the workload keeps, so that an option
//! that did not do its work cannot pass for a cheap one: zcprof's count of dd's syscalls, the
//! folded stacks of dd's copy loop against the bytes dd says it copied, and the folded bytes of
//! the workload against its own tally.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use serde::Serialize;
use serde_json::Value;

use super::{
    Config, child, dd, median, quartiles,
    table::{self, Tab, Target},
    workload,
};
use crate::process;

/// Longest one run may take, zcprof's start-up included.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// The workload of the second part: (b)'s two CPU copies per 64 KiB chunk.
const STRATEGY: &str = "read-write";
/// Issue 12's budgets.
const BY_OBJECT_LIMIT: f64 = 1.3;
const FOLDED_LOSS_LIMIT_PCT: f64 = 3.0;

/// How dd is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DdCase {
    Bare,
    Run,
    ByFilePeer,
    Folded,
}

const DD_CASES: [DdCase; 4] = [
    DdCase::Bare,
    DdCase::Run,
    DdCase::ByFilePeer,
    DdCase::Folded,
];

impl DdCase {
    fn label(self) -> &'static str {
        match self {
            DdCase::Bare => "bare dd",
            DdCase::Run => "zcprof run",
            DdCase::ByFilePeer => "zcprof run --by-file --by-peer",
            DdCase::Folded => "zcprof run --folded FILE",
        }
    }

    /// zcprof run's options for this case (None: dd runs bare).
    fn options(self, folded: &Path) -> Option<Vec<String>> {
        match self {
            DdCase::Bare => None,
            DdCase::Run => Some(Vec::new()),
            DdCase::ByFilePeer => Some(vec!["--by-file".into(), "--by-peer".into()]),
            DdCase::Folded => Some(vec![
                "--folded".into(),
                folded.to_string_lossy().into_owned(),
            ]),
        }
    }
}

/// One dd case's results.
#[derive(Debug, Clone, Serialize)]
pub struct DdResult {
    pub case: DdCase,
    pub label: &'static str,
    /// dd's own elapsed time, one per round, in round order.
    pub samples_s: Vec<f64>,
    pub median_s: Option<f64>,
    /// (median − bare median) / dd's syscalls, in ns.
    pub added_ns_per_syscall: Option<f64>,
    /// The smallest count of dd's syscalls zcprof reported over the rounds.
    pub counted_syscalls: Option<u64>,
    /// --folded: the bytes of all of dd's folded lines (its start-up's reads and its messages
    /// included), in the last round.
    pub folded_bytes: Option<u64>,
    pub error: Option<String>,
}

/// How the workload is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Bare,
    Run,
    Folded,
}

impl Profile {
    fn label(self) -> &'static str {
        match self {
            Profile::Bare => "bare",
            Profile::Run => "under zcprof run",
            Profile::Folded => "under zcprof run --folded FILE",
        }
    }
}

/// The read-write workload, bare, under zcprof run and under zcprof run --folded.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    pub strategy: &'static str,
    pub size: String,
    pub bare_mib_s: Vec<f64>,
    pub run_mib_s: Vec<f64>,
    pub folded_mib_s: Vec<f64>,
    pub bare_median_mib_s: Option<f64>,
    pub run_median_mib_s: Option<f64>,
    pub folded_median_mib_s: Option<f64>,
    /// Per round, (bare − profiled) / bare in percent, against the bare run of the round.
    pub run_round_loss_pct: Vec<f64>,
    pub folded_round_loss_pct: Vec<f64>,
    /// Medians of the rounds' losses.
    pub run_loss_pct: Option<f64>,
    pub folded_loss_pct: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub command: String,
    pub count: u64,
    pub syscalls: u64,
    pub rounds: usize,
    pub dd: Vec<DdResult>,
    /// by-file+by-peer's added time per syscall ÷ plain zcprof run's.
    pub by_object_vs_run: Option<f64>,
    /// The stacks --folded captured in dd's copy loop per run: one per call, 2 × count (each
    /// call moves one byte, and the copy loop's folded lines are checked to carry exactly the
    /// bytes dd copied).
    pub stacks_captured: u64,
    /// (--folded median − zcprof run median) / stacks captured, in ns.
    pub folded_ns_per_stack: Option<f64>,
    pub workload_rounds: usize,
    pub workload: WorkloadResult,
}

impl Section {
    fn get(&self, case: DdCase) -> Option<&DdResult> {
        self.dd.iter().find(|c| c.case == case)
    }
}

/// One line of a folded file, `comm;outer;…;inner;SYSCALL;COLUMN BYTES`.
#[derive(Debug, PartialEq, Eq)]
struct FoldedLine<'a> {
    comm: &'a str,
    syscall: &'a str,
    column: &'a str,
    bytes: u64,
}

fn parse_folded(text: &str) -> Result<Vec<FoldedLine<'_>>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            // Frames may hold spaces (`<File as Write>::write`); the weight is the last word.
            let (stack, bytes) = line
                .rsplit_once(' ')
                .with_context(|| format!("folded line without a weight: `{line}`"))?;
            let bytes = bytes
                .parse()
                .with_context(|| format!("folded line with a weight that is no count: `{line}`"))?;
            let frames: Vec<&str> = stack.split(';').collect();
            ensure!(
                frames.len() >= 3,
                "folded line without comm, syscall and column: `{line}`"
            );
            Ok(FoldedLine {
                comm: frames[0],
                syscall: frames[frames.len() - 2],
                column: frames[frames.len() - 1],
                bytes,
            })
        })
        .collect()
}

/// Checks dd's folded lines against what dd says it copied, and returns the bytes of all of
/// dd's lines. Every read of dd's copy loop comes from one call site, and so does every write:
/// its heaviest read line (CPU copy to user space) and its heaviest write line (CPU copy from
/// user space) must each carry exactly the `count` bytes dd copied; the other lines are its
/// start-up's (the dynamic loader's reads) and its closing messages.
fn check_dd_folded(text: &str, count: u64) -> Result<u64> {
    let lines = parse_folded(text)?;
    let dd: Vec<&FoldedLine> = lines.iter().filter(|l| l.comm == "dd").collect();
    let heaviest = |syscall: &str, column: &str| {
        dd.iter()
            .filter(|l| l.syscall == syscall && l.column == column)
            .map(|l| l.bytes)
            .max()
            .unwrap_or(0)
    };
    let read = heaviest("read", "cpu_kernel_to_user");
    let write = heaviest("write", "cpu_user_to_kernel");
    ensure!(
        read == count && write == count,
        "dd copied {count} bytes one at a time, but the folded output's copy-loop stacks carry \
         {read} bytes read and {write} written; the folded output was:\n{}",
        process::tail(text, 20)
    );
    Ok(dd.iter().map(|l| l.bytes).sum())
}

/// Checks the workload's folded lines against its tally: at least the bytes its sender read
/// and its receiver read under `read` (CPU copy to user space), at least the bytes its sender
/// wrote under `write` (CPU copy from user space).
fn check_workload_folded(text: &str, tally: &Value) -> Result<()> {
    let lines = parse_folded(text)?;
    let sum = |syscall: &str, column: &str| -> u64 {
        lines
            .iter()
            .filter(|l| l.syscall == syscall && l.column == column)
            .map(|l| l.bytes)
            .sum()
    };
    let field = |v: &Value, what: &str| {
        v.as_u64()
            .with_context(|| format!("the workload's tally has no {what}"))
    };
    let read = field(&tally["syscalls"]["read"]["bytes"], "syscalls.read.bytes")?
        + field(&tally["receiver_bytes"], "receiver_bytes")?;
    let written = field(&tally["syscalls"]["write"]["bytes"], "syscalls.write.bytes")?;
    let (folded_read, folded_written) = (
        sum("read", "cpu_kernel_to_user"),
        sum("write", "cpu_user_to_kernel"),
    );
    ensure!(
        folded_read >= read && folded_written >= written,
        "the workload read {read} bytes (sender and receiver) and wrote {written}, but the folded \
         output has {folded_read} read and {folded_written} written"
    );
    Ok(())
}

/// A fresh path for a folded file of this bench run.
fn folded_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "zcprof-bench-h-{what}-{}.folded",
        std::process::id()
    ))
}

/// One dd run: dd's seconds, zcprof's count of its syscalls, dd's folded bytes.
struct DdSample {
    seconds: f64,
    counted: Option<u64>,
    folded_bytes: Option<u64>,
}

fn dd_sample(zcprof: &Path, case: DdCase, count: u64) -> Result<DdSample> {
    let folded = folded_path("dd");
    let Some(options) = case.options(&folded) else {
        let mut cmd = process::command("dd");
        cmd.args(dd::dd_args(count));
        let out = child::run(cmd, RUN_TIMEOUT)?;
        out.ensure_success()?;
        return Ok(DdSample {
            seconds: dd::dd_seconds(&out.stderr(), count)?,
            counted: None,
            folded_bytes: None,
        });
    };
    let mut cmd = process::command(zcprof);
    cmd.args(["run", "--json"])
        .args(options)
        .args(["--", "dd"])
        .args(dd::dd_args(count));
    let out = child::run(cmd, RUN_TIMEOUT);
    let text = (case == DdCase::Folded).then(|| std::fs::read_to_string(&folded));
    let _ = std::fs::remove_file(&folded);
    let out = out?;
    out.ensure_success()?;
    let folded_bytes = text
        .map(|t| {
            let t = t.with_context(|| format!("zcprof run wrote no {}", folded.display()))?;
            check_dd_folded(&t, count)
        })
        .transpose()?;
    Ok(DdSample {
        seconds: dd::dd_seconds(&out.stderr(), count)?,
        counted: Some(dd::zcprof_count(&out.stdout())?),
        folded_bytes,
    })
}

/// One workload run's throughput (MiB/s), from its tally.
fn throughput(zcprof: &Path, size: &str, profile: Profile) -> Result<f64> {
    let folded = folded_path("workload");
    let mut cmd = process::command(zcprof);
    match profile {
        Profile::Bare => {}
        Profile::Run => {
            cmd.args(["run", "-o", "/dev/null", "--"]).arg(zcprof);
        }
        Profile::Folded => {
            cmd.args(["run", "-o", "/dev/null", "--folded"])
                .arg(&folded)
                .arg("--")
                .arg(zcprof);
        }
    }
    cmd.args(["workload", "--strategy", STRATEGY, "--size", size]);
    let out = child::run(cmd, RUN_TIMEOUT);
    let text = (profile == Profile::Folded).then(|| std::fs::read_to_string(&folded));
    let _ = std::fs::remove_file(&folded);
    let out = out?;
    out.ensure_success()?;
    let (tally, mib_s, _) = workload::tally(&out.stdout(), STRATEGY)?;
    if let Some(text) = text {
        let text = text.with_context(|| format!("zcprof run wrote no {}", folded.display()))?;
        check_workload_folded(&text, &tally)?;
    }
    Ok(mib_s)
}

/// Runs both parts: dd's four cases in `config.rounds` interleaved rounds (the order rotated
/// each round), then the workload's three profiles in `config.workload_rounds` rounds after
/// one unmeasured bare run (it makes the source file and fills the page cache).
pub fn run(zcprof: &Path, config: &Config, say: &dyn Fn(String)) -> Section {
    let count = config.dd_count;
    let syscalls = 2 * count;
    let mut results: Vec<DdResult> = DD_CASES
        .iter()
        .map(|&case| DdResult {
            case,
            label: case.label(),
            samples_s: Vec::new(),
            median_s: None,
            added_ns_per_syscall: None,
            counted_syscalls: None,
            folded_bytes: None,
            error: None,
        })
        .collect();
    for round in 0..config.rounds {
        let n = results.len();
        for k in 0..n {
            let r = &mut results[(round + k) % n];
            if r.error.is_some() {
                continue;
            }
            let started = Instant::now();
            match dd_sample(zcprof, r.case, count) {
                Ok(s) => {
                    say(format!(
                        "bench: (h) round {}/{}: {:<32} {:.3} s (dd), {:.1} s in all",
                        round + 1,
                        config.rounds,
                        r.label,
                        s.seconds,
                        started.elapsed().as_secs_f64()
                    ));
                    r.samples_s.push(s.seconds);
                    r.folded_bytes = s.folded_bytes.or(r.folded_bytes);
                    if let Some(c) = s.counted {
                        dd::check_counted(
                            &mut r.counted_syscalls,
                            &mut r.error,
                            r.label,
                            c,
                            syscalls,
                        );
                    }
                }
                Err(e) => {
                    say(format!("bench: (h) {}: FAILED: {e:#}", r.label));
                    r.error = Some(format!("{e:#}"));
                }
            }
        }
    }
    for r in &mut results {
        if r.error.is_none() {
            r.median_s = median(&r.samples_s);
        }
    }
    let median_of =
        |case: DdCase| -> Option<f64> { results.iter().find(|r| r.case == case)?.median_s };
    let (bare, run_median, folded_median) = (
        median_of(DdCase::Bare),
        median_of(DdCase::Run),
        median_of(DdCase::Folded),
    );
    for r in &mut results {
        if r.case != DdCase::Bare {
            r.added_ns_per_syscall = r
                .median_s
                .zip(bare)
                .map(|(m, b)| (m - b) / syscalls as f64 * 1e9);
        }
    }
    let added = |case: DdCase| {
        results
            .iter()
            .find(|r| r.case == case)?
            .added_ns_per_syscall
    };
    let by_object_vs_run = dd::ratio(added(DdCase::ByFilePeer), added(DdCase::Run));
    let stacks_captured = syscalls;
    let folded_ns_per_stack = run_median
        .zip(folded_median)
        .map(|(run, folded)| (folded - run) / stacks_captured as f64 * 1e9);

    let workload = run_workload(zcprof, config, say);
    let mut command = vec!["dd".to_owned()];
    command.extend(dd::dd_args(count));
    Section {
        command: command.join(" "),
        count,
        syscalls,
        rounds: config.rounds,
        dd: results,
        by_object_vs_run,
        stacks_captured,
        folded_ns_per_stack,
        workload_rounds: config.workload_rounds,
        workload,
    }
}

fn run_workload(zcprof: &Path, config: &Config, say: &dyn Fn(String)) -> WorkloadResult {
    let size = config.workload_size;
    let mut w = WorkloadResult {
        strategy: STRATEGY,
        size: size.to_owned(),
        bare_mib_s: Vec::new(),
        run_mib_s: Vec::new(),
        folded_mib_s: Vec::new(),
        bare_median_mib_s: None,
        run_median_mib_s: None,
        folded_median_mib_s: None,
        run_round_loss_pct: Vec::new(),
        folded_round_loss_pct: Vec::new(),
        run_loss_pct: None,
        folded_loss_pct: None,
        error: None,
    };
    let measure = |profile: Profile, round: Option<usize>| match throughput(zcprof, size, profile) {
        Ok(t) => {
            if let Some(round) = round {
                say(format!(
                    "bench: (h) round {}/{}: {STRATEGY} {size} {}: {t:.0} MiB/s",
                    round + 1,
                    config.workload_rounds,
                    profile.label()
                ));
            }
            Ok(t)
        }
        Err(e) => {
            say(format!(
                "bench: (h) {STRATEGY} {size} {}: FAILED: {e:#}",
                profile.label()
            ));
            Err(format!("{}: {e:#}", profile.label()))
        }
    };
    if let Err(e) = measure(Profile::Bare, None) {
        w.error = Some(e);
        return w;
    }
    'rounds: for round in 0..config.workload_rounds {
        // Each profile goes first in turn.
        let mut order = [Profile::Bare, Profile::Run, Profile::Folded];
        order.rotate_left(round % 3);
        for profile in order {
            match measure(profile, Some(round)) {
                Ok(t) => match profile {
                    Profile::Bare => w.bare_mib_s.push(t),
                    Profile::Run => w.run_mib_s.push(t),
                    Profile::Folded => w.folded_mib_s.push(t),
                },
                Err(e) => {
                    w.error = Some(e);
                    break 'rounds;
                }
            }
        }
    }
    if w.error.is_none() {
        w.bare_median_mib_s = median(&w.bare_mib_s);
        w.run_median_mib_s = median(&w.run_mib_s);
        w.folded_median_mib_s = median(&w.folded_mib_s);
        w.run_round_loss_pct = workload::losses(&w.bare_mib_s, &w.run_mib_s);
        w.folded_round_loss_pct = workload::losses(&w.bare_mib_s, &w.folded_mib_s);
        w.run_loss_pct = median(&w.run_round_loss_pct);
        w.folded_loss_pct = median(&w.folded_round_loss_pct);
    }
    w
}

/// Measurements that could not be made, for `Results::not_measured`.
pub fn not_measured(s: &Section) -> Vec<String> {
    let dd =
        s.dd.iter()
            .filter_map(|c| Some(format!("(h) {}: {}", c.label, c.error.as_ref()?)));
    let w = &s.workload;
    dd.chain(
        w.error
            .as_ref()
            .map(|e| format!("(h) {} {}: {e}", w.strategy, w.size)),
    )
    .collect()
}

fn spread(losses: &[f64]) -> String {
    quartiles(losses).map_or("n/a".into(), |(a, b)| format!("{a:.1} … {b:.1}"))
}

/// The two tables: dd's cases, and the workload's.
pub fn tables(s: &Section) -> Vec<Tab> {
    let mut rows = Vec::new();
    let mut notes = vec![format!(
        "`{}`: {} syscalls; time = dd's own (copy loop only); median of {} interleaved rounds; \
         added = (median − bare median) / {}. ÷ zcprof run = this case's added time ÷ plain \
         zcprof run's (by-file+by-peer's budget: ≤ {BY_OBJECT_LIMIT}×). Stacks captured = \
         dd's copy-loop calls, one byte each: each round checks that the folded output's \
         copy-loop read and write stacks carry exactly the bytes dd copied; cost per stack = \
         (--folded median − zcprof run median) / stacks captured. Folded bytes = all of dd's \
         folded lines (its start-up's reads and closing messages too).",
        s.command, s.syscalls, s.rounds, s.syscalls
    )];
    let run_added = s.get(DdCase::Run).and_then(|c| c.added_ns_per_syscall);
    for c in &s.dd {
        let mut row = vec![c.label.to_owned()];
        if let Some(e) = &c.error {
            row.push("NOT MEASURED".into());
            row.extend(std::iter::repeat_n(String::new(), 6));
            notes.push(format!("{}: {}", c.label, table::first_line(e)));
            rows.push(row);
            continue;
        }
        let dash = || "—".to_owned();
        let folded = c.case == DdCase::Folded;
        row.push(table::opt(c.median_s, 3));
        row.push(if c.case == DdCase::Bare {
            format!(
                "({:.0} per syscall)",
                c.median_s.unwrap_or(f64::NAN) / s.syscalls as f64 * 1e9
            )
        } else {
            table::opt(c.added_ns_per_syscall, 1)
        });
        row.push(match c.case {
            DdCase::Bare | DdCase::Run => dash(),
            _ => table::opt(dd::ratio(c.added_ns_per_syscall, run_added), 2),
        });
        row.push(c.counted_syscalls.map_or_else(dash, |n| n.to_string()));
        row.push(if folded {
            format!(
                "{} stacks, {} ns each; {} bytes",
                table::count(s.stacks_captured as f64),
                table::opt(s.folded_ns_per_stack, 1),
                c.folded_bytes
                    .map_or_else(|| "n/a".into(), |b| table::count(b as f64))
            )
        } else {
            dash()
        });
        row.push(table::samples(&c.samples_s, 3));
        rows.push(row);
    }
    let dd_tab = Tab {
        title: "(h) Detail options on one-byte syscalls: --by-file --by-peer, --folded".into(),
        header: [
            "case",
            "dd time (s)",
            "added ns/syscall",
            "÷ zcprof run's added",
            "dd syscalls counted",
            "--folded: stacks captured, cost per stack, folded bytes",
            "rounds (s)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes,
    };

    let w = &s.workload;
    let mut notes = vec![format!(
        "zcprof workload --strategy {} --size {} (64 KiB chunks): throughput from the \
         workload's own tally (transfer only); {} rounds after one unmeasured bare run, each \
         running bare, under zcprof run and under zcprof run --folded FILE back to back \
         (rotating which goes first); loss = the median over rounds of (bare − profiled) / \
         bare; the middle half of the rounds' losses (25th to 75th percentile) shows the \
         noise. Each --folded run is checked: its folded read and write bytes at least the \
         workload's tally. --folded's budget: ≤ {FOLDED_LOSS_LIMIT_PCT} %.",
        w.strategy, w.size, s.workload_rounds
    )];
    let mut rows = Vec::new();
    // Label, runs (MiB/s), their median, the rounds' losses, their median.
    type Profiled<'a> = (&'a str, &'a [f64], Option<f64>, &'a [f64], Option<f64>);
    let profiles: [Profiled; 3] = [
        ("bare", &w.bare_mib_s, w.bare_median_mib_s, &[], None),
        (
            "zcprof run",
            &w.run_mib_s,
            w.run_median_mib_s,
            &w.run_round_loss_pct,
            w.run_loss_pct,
        ),
        (
            "zcprof run --folded FILE",
            &w.folded_mib_s,
            w.folded_median_mib_s,
            &w.folded_round_loss_pct,
            w.folded_loss_pct,
        ),
    ];
    for (label, runs, median_mib_s, losses, loss) in profiles {
        let mut row = vec![label.to_owned()];
        if w.error.is_some() {
            row.push("NOT MEASURED".into());
            row.extend(std::iter::repeat_n(String::new(), 4));
        } else if label == "bare" {
            row.extend([
                table::opt(median_mib_s, 0),
                "—".into(),
                "—".into(),
                table::samples(runs, 0),
            ]);
        } else {
            row.extend([
                table::opt(median_mib_s, 0),
                table::opt(loss, 1),
                spread(losses),
                format!(
                    "{} / loss % {}",
                    table::samples(runs, 0),
                    table::samples(losses, 1)
                ),
            ]);
        }
        rows.push(row);
    }
    if let Some(e) = &w.error {
        notes.push(format!("{}: {}", w.strategy, table::first_line(e)));
    }
    let w_tab = Tab {
        title: format!(
            "(h) Detail options on a data mover: {} {}, --folded",
            w.strategy, w.size
        ),
        header: [
            "profile",
            "MiB/s",
            "loss %",
            "middle half of round losses %",
            "rounds (MiB/s / loss %)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes,
    };
    vec![dd_tab, w_tab]
}

/// Issue 12's budgets.
pub fn targets(s: &Section, t: &mut Vec<Target>) {
    let why_dd = || {
        let reasons: Vec<String> = [DdCase::Bare, DdCase::Run, DdCase::ByFilePeer]
            .iter()
            .filter_map(|&case| {
                let c = s.get(case)?;
                if let Some(e) = &c.error {
                    Some(format!("{}: {}", c.label, table::first_line(e)))
                } else if c.added_ns_per_syscall.is_some_and(|a| a <= 0.0) {
                    Some(format!("{}: added time ≤ 0 (noise)", c.label))
                } else {
                    None
                }
            })
            .collect();
        Some(if reasons.is_empty() {
            "not measured".to_owned()
        } else {
            reasons.join("; ")
        })
    };
    t.push(
        Target::new(
            "(h) zcprof run --by-file --by-peer: added time per syscall ÷ that of zcprof run"
                .into(),
            s.by_object_vs_run,
            BY_OBJECT_LIMIT,
            "×",
        )
        .because(why_dd()),
    );
    let w = &s.workload;
    t.push(
        Target::new(
            format!(
                "(h) {} {}: throughput lost under zcprof run --folded",
                w.strategy, w.size
            ),
            w.folded_loss_pct,
            FOLDED_LOSS_LIMIT_PCT,
            "%",
        )
        .because(w.error.as_deref().map(table::first_line)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const DD_FOLDED: &str = "\
dd;[unknown];_IO_new_file_write;__GI___libc_write;write;cpu_user_to_kernel 100
dd;_IO_new_file_underflow;__GI___read_nocancel;read;cpu_kernel_to_user 2996
dd;dd+0x593b;__GI___libc_read;read;cpu_kernel_to_user 100000
dd;dd+0x5b7b;__GI___libc_write;write;cpu_user_to_kernel 100000
dd;ld-linux-x86-64.so.2+0x348a7;_dl_map_object;open_verify;__GI___read_nocancel;read;cpu_kernel_to_user 832
";

    #[test]
    fn folded_lines() {
        let lines =
            parse_folded("zcprof;<File as Write>::write;write;cpu_user_to_kernel 8\n\n").unwrap();
        assert_eq!(
            lines,
            [FoldedLine {
                comm: "zcprof",
                syscall: "write",
                column: "cpu_user_to_kernel",
                bytes: 8
            }]
        );
        assert!(parse_folded("dd;read;cpu_kernel_to_user\n").is_err());
        assert!(parse_folded("dd;cpu_kernel_to_user 5\n").is_err());
    }

    #[test]
    fn dd_folded_against_dd() {
        assert_eq!(check_dd_folded(DD_FOLDED, 100_000).unwrap(), 203_928);
        assert!(check_dd_folded(DD_FOLDED, 100_001).is_err());
        let only_reads: String = DD_FOLDED
            .lines()
            .filter(|l| !l.contains("dd+0x5b7b"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(check_dd_folded(&only_reads, 100_000).is_err());
        assert!(check_dd_folded(&DD_FOLDED.replace("dd;", "sh;"), 100_000).is_err());
    }

    #[test]
    fn workload_folded_against_tally() {
        let tally: Value = serde_json::from_str(
            r#"{"syscalls":{"read":{"bytes":1000},"write":{"bytes":1000}},"receiver_bytes":1000}"#,
        )
        .unwrap();
        let folded = "zcprof;sys::read;read;cpu_kernel_to_user 1000\n\
                      zcprof;receiver_main;read;cpu_kernel_to_user 1000\n\
                      zcprof;sys::write_all;write;cpu_user_to_kernel 1000\n";
        check_workload_folded(folded, &tally).unwrap();
        let short = folded.replace("receiver_main;read;cpu_kernel_to_user 1000", "x;read;y 1");
        assert!(check_workload_folded(&short, &tally).is_err());
    }
}
