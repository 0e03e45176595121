//! Case (g), an experiment outside the product: can a profiler hook only the tasks it
//! watches, so that the rest of the host stops paying for its syscall hooks?
//!
//! zcprof attaches raw tracepoint programs to sys_enter and sys_exit: the kernel runs them on
//! every syscall of every task, and an unwatched task pays the programs' early exit (case
//! (a)'s "unwatched dd"). The candidate is a perf event per watched task on the
//! raw_syscalls tracepoints (`perf_event_open` with pid = the task, inherit for its children)
//! with a BPF program on it, which aya offers as `PerfEvent::attach(PerfEventConfig::TracePoint
//! { .. }, PerfEventScope::OneProcess { .. }, .., inherit)` for `perf_event` programs, while its
//! `TracePoint::attach` opens the event for all processes only.
//!
//! The experiment builds the same tiny program (count the call in a per-CPU array) by hand,
//! without aya or the product's programs, loads it through the bpf syscall, hooks it in each
//! way, and measures `dd bs=1` unwatched and watched: its CPU time (the hooks run in its
//! context; unlike its elapsed time, which (a) uses, it does not grow while other jobs hold
//! the CPUs) and its own elapsed time, with the program's own count of the calls it ran for:
//! a program that counts an unwatched dd's syscalls ran for them, whatever the perf event's
//! pid says.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde::Serialize;

use super::{
    Config,
    child::Child,
    dd, median,
    table::{self, Tab},
};
use crate::process;

/// dd's count: 2 × this many one-byte syscalls per run.
const COUNT: u64 = 500_000;
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const BPF_PROG_TYPE_PERF_EVENT: u32 = 7;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// `_IOW('$', 8, __u32)` and `_IO('$', 0)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// perf_event_attr's size in its fifth version (kernel 4.1 on).
const PERF_ATTR_SIZE: u32 = 112;

/// How dd is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Way {
    Bare,
    /// zcprof attach on a sleeper (today's unwatched cost).
    ZcprofUnwatched,
    /// The counting program on raw tracepoints sys_enter/sys_exit, dd not watched.
    RawTpUnwatched,
    /// The counting program on per-task perf events (pid = a sleeper, inherit).
    PerTaskBpfUnwatched,
    /// The same with pid = dd: the watched task's cost.
    PerTaskBpfWatched,
    /// Per-task perf events on the tracepoints without a program (pid = a sleeper): what
    /// the enabled tracepoints alone cost an unwatched task.
    PerTaskNoBpfUnwatched,
    /// The same with pid = dd: perf's own counting of the watched task.
    PerTaskNoBpfWatched,
}

/// Every way, in the order of the table.
pub const WAYS: [Way; 7] = [
    Way::Bare,
    Way::ZcprofUnwatched,
    Way::RawTpUnwatched,
    Way::PerTaskBpfUnwatched,
    Way::PerTaskBpfWatched,
    Way::PerTaskNoBpfUnwatched,
    Way::PerTaskNoBpfWatched,
];

impl Way {
    /// The way's row label.
    pub fn label(self) -> &'static str {
        match self {
            Way::Bare => "bare dd",
            Way::ZcprofUnwatched => "unwatched dd, zcprof attach on a sleeper",
            Way::RawTpUnwatched => "unwatched dd, counting program on raw tracepoints",
            Way::PerTaskBpfUnwatched => {
                "unwatched dd, counting program on per-task perf events of a sleeper"
            }
            Way::PerTaskBpfWatched => "watched dd, counting program on per-task perf events",
            Way::PerTaskNoBpfUnwatched => "unwatched dd, per-task perf events, no program",
            Way::PerTaskNoBpfWatched => "watched dd, per-task perf events, no program",
        }
    }
}

/// One way's results.
#[derive(Debug, Clone, Serialize)]
pub struct WayResult {
    pub way: Way,
    pub label: &'static str,
    /// dd's own elapsed time, per round.
    pub samples_s: Vec<f64>,
    /// dd's CPU time (user + system), per round.
    pub cpu_s: Vec<f64>,
    pub median_s: Option<f64>,
    pub cpu_median_s: Option<f64>,
    /// From the elapsed times, and from the CPU times.
    pub added_ns_per_syscall: Option<f64>,
    pub cpu_added_ns_per_syscall: Option<f64>,
    /// The calls the counting program ran for during the dd run (smallest over rounds):
    /// at least 2 per dd syscall (entry and exit) when it ran for dd.
    pub program_runs: Option<u64>,
    pub error: Option<String>,
}

/// Case (g)'s results.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub syscalls: u64,
    pub rounds: usize,
    pub ways: Vec<WayResult>,
    /// What the kernel answered when a `perf_event` program (aya's `PerfEvent`) was put on
    /// a per-task tracepoint event.
    pub perf_event_program_on_tracepoint: String,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub error: Option<String>,
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i32> {
    // SAFETY: attr is a zero-initialised 128-byte bpf_attr laid out for `cmd`; the kernel
    // reads and writes at most that many bytes; any pointers in it outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128usize) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// One BPF instruction.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst | (src << 4)) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// `counter[0] += 1` in a per-CPU array, or (without a map) just `return 0`.
fn program(map_fd: Option<i32>) -> Vec<u64> {
    let Some(fd) = map_fd else {
        return vec![insn(0xb7, 0, 0, 0, 0), insn(0x95, 0, 0, 0, 0)];
    };
    vec![
        insn(0x62, 10, 0, -4, 0), // *(u32 *)(r10 - 4) = 0
        insn(0xbf, 2, 10, 0, 0),  // r2 = r10
        insn(0x07, 2, 0, 0, -4),  // r2 += -4
        insn(0x18, 1, 1, 0, fd),  // r1 = map (pseudo map fd)
        0,                        //   (second half of the 64-bit load)
        insn(0x85, 0, 0, 0, 1),   // call bpf_map_lookup_elem
        insn(0x15, 0, 0, 3, 0),   // if r0 == 0 goto exit
        insn(0x79, 1, 0, 0, 0),   // r1 = *(u64 *)(r0 + 0)
        insn(0x07, 1, 0, 0, 1),   // r1 += 1
        insn(0x7b, 0, 1, 0, 0),   // *(u64 *)(r0 + 0) = r1
        insn(0xb7, 0, 0, 0, 0),   // exit: r0 = 0
        insn(0x95, 0, 0, 0, 0),   // exit
    ]
}

fn possible_cpus() -> usize {
    // "0-1" or "0,2-3".
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .split(',')
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => Some(b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1),
                    None => r.parse::<usize>().ok().map(|_| 1),
                })
                .sum::<Option<usize>>()
        })
        .unwrap_or(1)
}

/// A loaded counting program and its per-CPU counter.
struct Counter {
    map: OwnedFd,
    prog: OwnedFd,
}

impl Counter {
    fn load(prog_type: u32, with_map: bool) -> Result<Counter> {
        let mut attr = [0u64; 16];
        // map_type, key_size | value_size, max_entries.
        attr[0] = u64::from(BPF_MAP_TYPE_PERCPU_ARRAY) | 4 << 32;
        attr[1] = 8 | 1 << 32;
        let map = owned(bpf(BPF_MAP_CREATE, &mut attr).context("creating a per-CPU array")?);
        let insns = program(with_map.then(|| map.as_raw_fd()));
        let license = CString::new("GPL").unwrap_or_default();
        let mut log = vec![0u8; 64 * 1024];
        let mut attr = [0u64; 16];
        attr[0] = u64::from(prog_type) | (insns.len() as u64) << 32;
        attr[1] = insns.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        attr[3] = 1 | (log.len() as u64) << 32; // log_level 1, log_size
        attr[4] = log.as_mut_ptr() as u64;
        let prog = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
            let text = String::from_utf8_lossy(&log);
            anyhow::anyhow!(
                "loading a {prog_type}-type program: {e}; verifier: {}",
                text.trim_end_matches('\0')
            )
        })?;
        Ok(Counter {
            map,
            prog: owned(prog),
        })
    }

    /// The counter summed over CPUs.
    fn total(&self) -> Result<u64> {
        let key = 0u32;
        let mut values = vec![0u64; possible_cpus()];
        let mut attr = [0u64; 16];
        attr[0] = self.map.as_raw_fd() as u64;
        attr[1] = &key as *const u32 as u64;
        attr[2] = values.as_mut_ptr() as u64;
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).context("reading the per-CPU counter")?;
        Ok(values.iter().sum())
    }
}

/// The tracefs id of raw_syscalls:NAME.
fn tracepoint_id(name: &str) -> Result<u64> {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let path = format!("{root}/events/raw_syscalls/{name}/id");
        if let Ok(id) = std::fs::read_to_string(&path) {
            return id
                .trim()
                .parse()
                .with_context(|| format!("{path} holds no number"));
        }
    }
    bail!("no tracefs with raw_syscalls:{name} (cargo xtask setup mounts /sys/kernel/tracing)")
}

/// A counting perf event on raw_syscalls:NAME for `pid` (and, inherited, its children).
fn perf_event(name: &str, pid: u32) -> Result<OwnedFd> {
    let mut attr = [0u64; 16];
    attr[0] = u64::from(PERF_TYPE_TRACEPOINT) | u64::from(PERF_ATTR_SIZE) << 32;
    attr[1] = tracepoint_id(name)?;
    attr[5] = 1 << 1; // inherit
    // SAFETY: attr is a zeroed perf_event_attr of PERF_ATTR_SIZE bytes (the buffer is
    // larger), valid for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            pid as libc::pid_t,
            -1i32,
            -1i32,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    ensure!(
        fd >= 0,
        "perf_event_open(raw_syscalls:{name}, pid {pid}): {}",
        std::io::Error::last_os_error()
    );
    Ok(owned(fd as i32))
}

fn ioctl(fd: &OwnedFd, request: libc::c_ulong, arg: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: a perf event fd and a request that takes an integer argument.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Hooks in place while dd runs; dropping them detaches everything.
struct Hooks {
    counter: Option<Counter>,
    _fds: Vec<OwnedFd>,
}

/// Per-task perf events on sys_enter and sys_exit for `pid`, with the counting program
/// on them if `with_program`.
fn per_task(pid: u32, with_program: bool) -> Result<Hooks> {
    let counter = with_program
        .then(|| Counter::load(BPF_PROG_TYPE_TRACEPOINT, true))
        .transpose()?;
    let mut fds = Vec::new();
    for name in ["sys_enter", "sys_exit"] {
        let fd = perf_event(name, pid)?;
        if let Some(c) = &counter {
            ioctl(
                &fd,
                PERF_EVENT_IOC_SET_BPF,
                c.prog.as_raw_fd() as libc::c_ulong,
            )
            .with_context(|| format!("PERF_EVENT_IOC_SET_BPF on raw_syscalls:{name}"))?;
        }
        ioctl(&fd, PERF_EVENT_IOC_ENABLE, 0).context("PERF_EVENT_IOC_ENABLE")?;
        fds.push(fd);
    }
    Ok(Hooks { counter, _fds: fds })
}

/// The counting program on the raw tracepoints sys_enter and sys_exit (as zcprof hooks).
fn raw_tracepoints() -> Result<Hooks> {
    let counter = Counter::load(BPF_PROG_TYPE_RAW_TRACEPOINT, true)?;
    let mut fds = Vec::new();
    for name in ["sys_enter", "sys_exit"] {
        let cname = CString::new(name).unwrap_or_default();
        let mut attr = [0u64; 16];
        attr[0] = cname.as_ptr() as u64;
        attr[1] = counter.prog.as_raw_fd() as u64;
        fds.push(owned(
            bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
                .with_context(|| format!("attaching to raw tracepoint {name}"))?,
        ));
    }
    Ok(Hooks {
        counter: Some(counter),
        _fds: fds,
    })
}

/// What the kernel says to a `perf_event` program on a per-task tracepoint event.
fn perf_event_program_on_tracepoint() -> String {
    let outcome = (|| -> Result<String> {
        let c = Counter::load(BPF_PROG_TYPE_PERF_EVENT, false)?;
        let fd = perf_event("sys_enter", std::process::id())?;
        Ok(
            match ioctl(
                &fd,
                PERF_EVENT_IOC_SET_BPF,
                c.prog.as_raw_fd() as libc::c_ulong,
            ) {
                Ok(()) => "accepted".into(),
                Err(e) => format!("refused: {e}"),
            },
        )
    })();
    outcome.unwrap_or_else(|e| format!("not tried: {e:#}"))
}

fn dd_args() -> Vec<String> {
    vec![
        "if=/dev/zero".into(),
        "of=/dev/null".into(),
        "bs=1".into(),
        format!("count={COUNT}"),
    ]
}

/// One dd run: its own elapsed time, its CPU time, and the program's runs over it.
struct Sample {
    seconds: f64,
    cpu_s: f64,
    runs: Option<u64>,
}

/// Waits for `dd` to exit without reaping it, reads its run time (user + system, ns, from
/// /proc/PID/schedstat: unlike its elapsed time, not stretched by waiting for a CPU that
/// other jobs hold), then reaps it and reads its own elapsed time.
fn finish_dd(dd: Child) -> Result<(f64, f64)> {
    let pid = dd.pid();
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our unreaped child; info is valid for writes.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    ensure!(
        r == 0,
        "waiting for dd: {}",
        std::io::Error::last_os_error()
    );
    let path = format!("/proc/{pid}/schedstat");
    let ns: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("reading {path} of the exited dd"))?;
    let out = dd.finish(RUN_TIMEOUT)?;
    out.ensure_success()?;
    Ok((dd::dd_seconds(&out.stderr(), COUNT)?, ns as f64 * 1e-9))
}

/// Runs dd (gated: started once the hooks are on its pid, if it is watched) with the hooks
/// of `way` in place.
fn sample(zcprof: &Path, way: Way) -> Result<Sample> {
    let plain_dd = || -> Result<(f64, f64)> {
        let mut cmd = process::command("dd");
        cmd.args(dd_args());
        finish_dd(Child::spawn(cmd, false)?)
    };
    let sleeper = || -> Result<Child> {
        let mut cmd = process::command("sleep");
        cmd.arg("600");
        Child::spawn(cmd, false)
    };
    let runs = |hooks: &Hooks, before: u64| -> Result<Option<u64>> {
        hooks
            .counter
            .as_ref()
            .map(|c| Ok(c.total()? - before))
            .transpose()
    };
    let before = |hooks: &Hooks| hooks.counter.as_ref().map_or(Ok(0), Counter::total);
    let done = |(seconds, cpu_s): (f64, f64), runs| {
        Ok(Sample {
            seconds,
            cpu_s,
            runs,
        })
    };
    match way {
        Way::Bare => done(plain_dd()?, None),
        Way::ZcprofUnwatched => {
            let sleeper = sleeper()?;
            let attach = dd::attached(zcprof, sleeper.pid(), false)?;
            let t = plain_dd();
            sleeper.stop(libc::SIGKILL, RUN_TIMEOUT)?;
            attach.finish(RUN_TIMEOUT)?.ensure_success()?;
            done(t?, None)
        }
        Way::RawTpUnwatched => {
            let hooks = raw_tracepoints()?;
            let b = before(&hooks)?;
            let t = plain_dd()?;
            done(t, runs(&hooks, b)?)
        }
        Way::PerTaskBpfUnwatched | Way::PerTaskNoBpfUnwatched => {
            let sleeper = sleeper()?;
            let hooks = per_task(sleeper.pid(), way == Way::PerTaskBpfUnwatched)?;
            let b = before(&hooks)?;
            let t = plain_dd();
            let r = runs(&hooks, b);
            sleeper.stop(libc::SIGKILL, RUN_TIMEOUT)?;
            done(t?, r?)
        }
        Way::PerTaskBpfWatched | Way::PerTaskNoBpfWatched => {
            let mut gate = dd::gated_dd(COUNT)?;
            let hooks = per_task(gate.pid(), way == Way::PerTaskBpfWatched)?;
            let b = before(&hooks)?;
            dd::release(&mut gate)?;
            let t = finish_dd(gate)?;
            done(t, runs(&hooks, b)?)
        }
    }
}

/// Runs every way `config.rounds` times, interleaved (the order rotated by one each round).
pub fn run(zcprof: &Path, config: &Config, say: &dyn Fn(String)) -> Section {
    let syscalls = 2 * COUNT;
    let mut section = Section {
        syscalls,
        rounds: config.rounds,
        ways: WAYS
            .iter()
            .map(|&way| WayResult {
                way,
                label: way.label(),
                samples_s: Vec::new(),
                cpu_s: Vec::new(),
                median_s: None,
                cpu_median_s: None,
                added_ns_per_syscall: None,
                cpu_added_ns_per_syscall: None,
                program_runs: None,
                error: None,
            })
            .collect(),
        perf_event_program_on_tracepoint: perf_event_program_on_tracepoint(),
        loadavg_before: super::conditions().loadavg,
        loadavg_after: String::new(),
        error: None,
    };
    say(format!(
        "bench: (g) a perf_event program on a per-task tracepoint event: {}",
        section.perf_event_program_on_tracepoint
    ));
    let n = section.ways.len();
    for round in 0..config.rounds {
        for k in 0..n {
            let w = &mut section.ways[(round + k) % n];
            if w.error.is_some() {
                continue;
            }
            match sample(zcprof, w.way) {
                Ok(x) => {
                    say(format!(
                        "bench: (g) round {}/{}: {:<70} {:.3} s, {:.3} s CPU{}",
                        round + 1,
                        config.rounds,
                        w.label,
                        x.seconds,
                        x.cpu_s,
                        x.runs
                            .map_or_else(String::new, |r| format!(", program ran {r} times"))
                    ));
                    w.samples_s.push(x.seconds);
                    w.cpu_s.push(x.cpu_s);
                    if let Some(r) = x.runs {
                        w.program_runs = Some(w.program_runs.map_or(r, |m| m.min(r)));
                    }
                }
                Err(e) => {
                    say(format!("bench: (g) {}: FAILED: {e:#}", w.label));
                    w.error = Some(format!("{e:#}"));
                }
            }
        }
    }
    section.loadavg_after = super::conditions().loadavg;
    for w in &mut section.ways {
        w.median_s = median(&w.samples_s);
        w.cpu_median_s = median(&w.cpu_s);
    }
    let (bare, bare_cpu) = (section.ways[0].median_s, section.ways[0].cpu_median_s);
    let added = |m: Option<f64>, b: Option<f64>| Some((m? - b?) / syscalls as f64 * 1e9);
    for w in &mut section.ways[1..] {
        w.added_ns_per_syscall = added(w.median_s, bare);
        w.cpu_added_ns_per_syscall = added(w.cpu_median_s, bare_cpu);
    }
    section
}

/// The experiment's table.
pub fn table(s: &Section) -> Tab {
    let rows = s
        .ways
        .iter()
        .map(|w| {
            let mut row = vec![w.label.to_owned()];
            if w.error.is_some() {
                row.push("NOT MEASURED".into());
                row.extend(std::iter::repeat_n(String::new(), 5));
                return row;
            }
            let per_syscall = |v: Option<f64>| {
                format!(
                    "({:.0} per syscall)",
                    v.unwrap_or(f64::NAN) / s.syscalls as f64 * 1e9
                )
            };
            row.push(table::opt(w.cpu_median_s, 3));
            row.push(if w.way == Way::Bare {
                per_syscall(w.cpu_median_s)
            } else {
                table::opt(w.cpu_added_ns_per_syscall, 1)
            });
            row.push(table::opt(w.median_s, 3));
            row.push(if w.way == Way::Bare {
                per_syscall(w.median_s)
            } else {
                table::opt(w.added_ns_per_syscall, 1)
            });
            row.push(w.program_runs.map_or("—".into(), |r| r.to_string()));
            row.push(table::samples(&w.cpu_s, 3));
            row
        })
        .collect();
    let mut notes = vec![
        format!(
            "`dd if=/dev/zero of=/dev/null bs=1 count={COUNT}`: {} syscalls; CPU = dd's user + \
             system time (/proc/PID/schedstat once it exited, before it was reaped: the hooks \
             run in dd's context, and unlike the elapsed time it does not grow while other \
             jobs hold the CPUs); time = dd's own elapsed time; medians of {} interleaved \
             rounds; added = (median − bare median) / {}. The \
             counting program (a per-CPU counter, built by hand, not zcprof's) is the same in \
             every hooked row; program runs = its count over the dd run (the host's other \
             syscalls included), one run at entry and one at exit: at least {} when it ran for \
             dd.",
            s.syscalls,
            s.rounds,
            s.syscalls,
            2 * s.syscalls
        ),
        format!(
            "A `perf_event` program (aya's `PerfEvent`) on a per-task tracepoint event: {}.",
            s.perf_event_program_on_tracepoint
        ),
        format!(
            "Load average before: {}; after: {}.",
            s.loadavg_before, s.loadavg_after
        ),
    ];
    for w in &s.ways {
        if let Some(e) = &w.error {
            notes.push(format!("{}: {}", w.label, table::first_line(e)));
        }
    }
    Tab {
        title: "(g) Experiment: per-task hooks on the syscall tracepoints".into(),
        header: [
            "way",
            "dd CPU (s)",
            "added CPU ns/syscall",
            "dd time (s)",
            "added ns/syscall (time)",
            "program runs",
            "rounds, CPU (s)",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_instructions() {
        // `r0 = 0` and `exit`, as the kernel's headers lay them out.
        assert_eq!(insn(0xb7, 0, 0, 0, 0), 0xb7);
        assert_eq!(insn(0x95, 0, 0, 0, 0), 0x95);
        // `*(u32 *)(r10 - 4) = 0`: dst 10, off -4.
        assert_eq!(insn(0x62, 10, 0, -4, 0), 0x0000_0000_fffc_0a62);
        // `r2 += -4`.
        assert_eq!(insn(0x07, 2, 0, 0, -4), 0xffff_fffc_0000_0207);
        // `r1 = map fd 7` (src 1: pseudo map fd).
        assert_eq!(insn(0x18, 1, 1, 0, 7), 0x0000_0007_0000_1118);
        let p = program(Some(7));
        // The jump over the increment lands on `r0 = 0`.
        let jump = p.iter().position(|&i| i & 0xff == 0x15).unwrap();
        assert_eq!(p[jump + 1 + 3], insn(0xb7, 0, 0, 0, 0));
    }
}
