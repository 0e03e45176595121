//! Case (f), a service: nginx serving a 4 KiB and a 1 MiB file to wrk over keep-alive
//! loopback, bare, under each zcprof mode and its empty-program floor, and under the peers
//! (bpftrace doing less, `perf stat` counting one tracepoint), in interleaved rounds.
//!
//! nginx runs from a private prefix in a temporary directory (one worker, no access log,
//! `sendfile on` and `tcp_nopush on` as Debian ships them, `daemon off` so that `zcprof run`
//! can start it). Requests/s are wrk's own; CPU time per request is the nginx worker's
//! (utime + stime from /proc/PID/stat, before and after each wrk run) and wrk's (its rusage
//! from wait4): a hook's cost lands in the worker's system time, so it shows there even when
//! the CPUs are not saturated and requests/s do not move. Each tool's count of the worker's
//! syscalls is checked against the requests served, so a tool that did not watch nginx
//! cannot pass for a cheap one.

use std::{
    fmt::Write as _,
    io::Read as _,
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde::Serialize;
use serde_json::Value;

use super::{
    Config,
    child::{Child, Stream},
    daemon::{self, Daemon},
    dd::{self, Case},
    median,
    table::{self, Tab, Target},
};
use crate::process;

/// The files served: name and size.
pub const FILES: [(&str, usize); 2] = [("4k.bin", 4096), ("1m.bin", 1 << 20)];

/// wrk's threads and connections (one thread: the other core is nginx's worker's).
const WRK_THREADS: u32 = 1;
const WRK_CONNECTIONS: u32 = 8;

/// Longest a tool or nginx may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a stopped tool or nginx may take to exit and print its report.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The cases of (f), in the order of its tables: (a)'s, less `--latency` (its budget is
/// measured in (a) and (b)).
pub const CASES: [Case; 10] = [
    Case::Bare,
    Case::RunFloor,
    Case::Run,
    Case::AttachFloor,
    Case::Attach,
    Case::Bystander,
    Case::ServeFloor,
    Case::Serve,
    Case::Bpftrace,
    Case::PerfStat,
];

/// How each case is labelled in this case's tables.
pub fn label(case: Case) -> &'static str {
    match case {
        Case::Bare => "bare nginx",
        Case::RunFloor => "floor: zcprof run --empty-programs",
        Case::Run => "zcprof run -- nginx",
        Case::RunLatency => "zcprof run --latency -- nginx",
        Case::RunBackstops => "zcprof run --backstops on -- nginx",
        Case::AttachFloor => "floor: zcprof attach --empty-programs",
        Case::Attach => "zcprof attach --pid WORKER",
        Case::Bystander => "unwatched nginx, zcprof attach on another process",
        Case::ServeFloor => "floor: zcprof serve --empty-programs",
        Case::Serve => "zcprof serve (system-wide)",
        Case::Bpftrace => "bpftrace (worker's syscalls, read bytes)",
        Case::PerfStat => "perf stat -e raw_syscalls:sys_enter -p WORKER",
    }
}

/// One case's figures for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileResult {
    pub file: &'static str,
    pub bytes: usize,
    /// wrk's requests/s, one per round.
    pub rps: Vec<f64>,
    /// nginx worker's CPU time per request (µs), one per round.
    pub worker_us_per_req: Vec<f64>,
    /// wrk's CPU time per request (µs), one per round.
    pub wrk_us_per_req: Vec<f64>,
    pub rps_median: Option<f64>,
    pub worker_us_median: Option<f64>,
    pub wrk_us_median: Option<f64>,
    /// Per round, (bare − this case) / bare requests/s, in percent.
    pub round_loss_pct: Vec<f64>,
    /// The median of `round_loss_pct`.
    pub loss_pct: Option<f64>,
    /// The worker's CPU per request above bare nginx's (medians), in µs.
    pub worker_added_us: Option<f64>,
    /// This loss ÷ the floor's loss, and ÷ bpftrace's.
    pub loss_vs_floor: Option<f64>,
    pub loss_vs_bpftrace: Option<f64>,
    /// The worker's added CPU per request ÷ the floor's, and ÷ bpftrace's.
    pub cpu_vs_floor: Option<f64>,
    pub cpu_vs_bpftrace: Option<f64>,
}

/// One case's results.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: Case,
    pub label: &'static str,
    pub floor: Option<Case>,
    pub files: Vec<FileResult>,
    /// The smallest count of nginx's syscalls the tool reported in a round (both files), and
    /// the requests of that round: a tool that watched nginx counts at least one per request.
    pub counted_syscalls: Option<u64>,
    pub error: Option<String>,
    /// Why the case could not run here (perf without the tracepoint, say): not a failure.
    pub skipped: Option<String>,
}

/// Case (f)'s results.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// `nginx -v`.
    pub nginx: String,
    /// wrk's command line, with PORT and FILE for what varies.
    pub wrk: String,
    /// Seconds of each wrk run, and rounds.
    pub seconds: u32,
    pub rounds: usize,
    pub cases: Vec<CaseResult>,
    /// /proc/loadavg before the first round and after the last.
    pub loadavg_before: String,
    pub loadavg_after: String,
    /// Other BPF programs on sys_enter/sys_exit at the start of each round.
    pub foreign_hooks_per_round: Vec<usize>,
    /// How long the whole case took.
    pub wall_s: f64,
}

impl Section {
    /// The results of `case`.
    pub fn get(&self, case: Case) -> Option<&CaseResult> {
        self.cases.iter().find(|c| c.case == case)
    }
}

/// The private nginx prefix: config, files, logs; removed on drop.
struct Prefix {
    dir: PathBuf,
}

impl Prefix {
    fn new() -> Result<Prefix> {
        let dir = std::env::temp_dir().join(format!("zcprof-bench-f-{}", std::process::id()));
        for sub in ["conf", "html", "logs", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        // The worker runs as nobody: it must be able to reach and read the files.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} readable", dir.display()))?;
        for (name, size) in FILES {
            let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
            std::fs::write(dir.join("html").join(name), body)
                .with_context(|| format!("writing {name}"))?;
        }
        Ok(Prefix { dir })
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("logs/nginx.pid")
    }

    /// nginx.conf for a server on 127.0.0.1:`port`.
    fn configure(&self, port: u16) -> Result<()> {
        let d = self.dir.display();
        let conf = format!(
            "worker_processes 1;\n\
             error_log {d}/logs/error.log warn;\n\
             pid {d}/logs/nginx.pid;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20 access_log off;\n\
             \x20 sendfile on;\n\
             \x20 tcp_nopush on;\n\
             \x20 types_hash_max_size 2048;\n\
             \x20 client_body_temp_path {d}/tmp/body;\n\
             \x20 proxy_temp_path {d}/tmp/proxy;\n\
             \x20 fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20 uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20 scgi_temp_path {d}/tmp/scgi;\n\
             \x20 server {{ listen 127.0.0.1:{port}; root {d}/html; }}\n\
             }}\n"
        );
        let path = self.dir.join("conf/nginx.conf");
        std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))
    }

    /// `nginx -p PREFIX -c conf/nginx.conf -g 'daemon off;'`.
    fn nginx_args(&self) -> Vec<String> {
        vec![
            "nginx".into(),
            "-p".into(),
            self.dir.display().to_string(),
            "-c".into(),
            "conf/nginx.conf".into(),
            "-g".into(),
            "daemon off;".into(),
        ]
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running nginx: its process (or the tool that started it), its master and worker.
struct Nginx {
    /// nginx's master, or `zcprof run` whose child the master is; None once stopped.
    child: Option<Child>,
    master: u32,
    worker: u32,
    port: u16,
}

/// A free port on 127.0.0.1 (the listener is closed at once; nginx binds it with
/// SO_REUSEADDR).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// (ppid, comm, utime + stime in clock ticks) from /proc/PID/stat.
fn proc_stat(pid: u32) -> Option<(u32, String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // After the comm: state(0) ppid(1) … utime(11) stime(12).
    let ppid = f.get(1)?.parse().ok()?;
    let cpu = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((ppid, comm, cpu))
}

/// The state letter of a process (`R`, `S`, `Z`, …), None once it is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

/// A process's CPU time (user + system) in seconds: the scheduler's run time from
/// /proc/PID/schedstat, in ns, which utime + stime of /proc/PID/stat add up to in 10 ms
/// ticks (too coarse for the 100 ms or so a worker spends on a run of big files); the
/// ticks if schedstat is missing.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok();
    if let Some(ns) = schedstat.and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok()) {
        return Ok(ns as f64 * 1e-9);
    }
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (_, _, cpu) =
        proc_stat(pid).with_context(|| format!("reading /proc/{pid}/stat (nginx's worker)"))?;
    Ok(cpu as f64 / ticks)
}

/// The children of `pid` named `comm`.
fn children_named(pid: u32, comm: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| proc_stat(p).is_some_and(|(ppid, c, _)| ppid == pid && c == comm))
        .collect()
}

impl Nginx {
    /// Starts nginx from `prefix` on a fresh port, after `wrapper` (e.g. `zcprof run --`) if
    /// any, and waits until it answers and has its one worker.
    fn start(prefix: &Prefix, wrapper: &[String]) -> Result<Nginx> {
        let port = free_port()?;
        prefix.configure(port)?;
        let _ = std::fs::remove_file(prefix.pid_file());
        let args: Vec<String> = wrapper.iter().cloned().chain(prefix.nginx_args()).collect();
        let mut cmd = process::command(&args[0]);
        cmd.args(&args[1..]);
        let child = Child::spawn(cmd, false)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            let master = std::fs::read_to_string(prefix.pid_file())
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(master) = master {
                let workers = children_named(master, "nginx");
                if workers.len() == 1
                    && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                {
                    return Ok(Nginx {
                        child: Some(child),
                        master,
                        worker: workers[0],
                        port,
                    });
                }
            }
            if Instant::now() >= deadline {
                if let Some(master) = master {
                    kill_nginx(master);
                }
                let out = child.stop(libc::SIGKILL, STOP_TIMEOUT)?;
                bail!(
                    "`{}` did not serve on 127.0.0.1:{port} with one worker within \
                     {READY_TIMEOUT:?}; it printed:\n{}",
                    args.join(" "),
                    process::tail(&format!("{}{}", out.stdout(), out.stderr()), 15)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the master (fast shutdown); waits for the child (nginx or the tool
    /// around it) and returns what it printed.
    fn stop(mut self) -> Result<super::child::Finished> {
        // SAFETY: kill has no memory-safety preconditions; the master is nginx's, ours.
        unsafe {
            libc::kill(self.master as libc::pid_t, libc::SIGTERM);
        }
        let child = self.child.take().context("nginx already stopped")?;
        let out = child.finish(STOP_TIMEOUT)?;
        out.ensure_success()?;
        Ok(out)
    }
}

/// SIGKILL to nginx's workers and master: a worker outlives a killed master (and keeps the
/// port), and a master outlives a killed `zcprof run`.
fn kill_nginx(master: u32) {
    for pid in children_named(master, "nginx")
        .into_iter()
        .chain(std::iter::once(master))
    {
        // SAFETY: kill has no memory-safety preconditions; these are nginx processes we
        // started, still alive when listed.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

impl Drop for Nginx {
    /// A measurement that failed half-way leaves no nginx behind.
    fn drop(&mut self) {
        if self.child.is_some() {
            kill_nginx(self.master);
        }
    }
}

/// One wrk run against one file.
#[derive(Debug, Clone, Copy)]
struct Load {
    rps: f64,
    requests: u64,
    worker_cpu_s: f64,
    wrk_cpu_s: f64,
}

/// wrk's `N requests in 2.00s, …` and `Requests/sec: R`; fails on non-2xx answers or socket
/// errors.
fn parse_wrk(out: &str) -> Result<(u64, f64)> {
    let requests = out
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.parse::<u64>().ok())
        .with_context(|| format!("wrk printed no `N requests in` line:\n{out}"))?;
    let rps = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Requests/sec:")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .with_context(|| format!("wrk printed no `Requests/sec:` line:\n{out}"))?;
    if let Some(l) = out
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        bail!("wrk saw failed requests (`{}`):\n{out}", l.trim());
    }
    ensure!(requests > 0, "wrk made no request:\n{out}");
    Ok((requests, rps))
}

/// Runs wrk for `seconds` against `file` and reads the worker's CPU time around it.
fn load(nginx: &Nginx, file: &str, seconds: u32) -> Result<Load> {
    let url = format!("http://127.0.0.1:{}/{file}", nginx.port);
    let mut cmd = process::command("wrk");
    cmd.args([
        format!("-t{WRK_THREADS}"),
        format!("-c{WRK_CONNECTIONS}"),
        format!("-d{seconds}s"),
        // wrk's default of 2 s counts a 1 MiB answer delayed by other jobs as an error.
        "--timeout".into(),
        "30s".into(),
        url,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let worker_before = cpu_seconds(nginx.worker)?;
    let mut wrk = cmd
        .spawn()
        .context("could not run wrk (cargo xtask setup installs it)")?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut s) = wrk.stdout.take() {
        s.read_to_string(&mut stdout)
            .context("reading wrk's output")?;
    }
    if let Some(mut s) = wrk.stderr.take() {
        s.read_to_string(&mut stderr)
            .context("reading wrk's errors")?;
    }
    // wait4 rather than Child::wait: it also gives wrk's own CPU time.
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our unreaped child; status and usage are valid for writes.
    let reaped = unsafe { libc::wait4(wrk.id() as libc::pid_t, &mut status, 0, &mut usage) };
    ensure!(
        reaped == wrk.id() as libc::pid_t,
        "waiting for wrk: {}",
        std::io::Error::last_os_error()
    );
    let worker_after = cpu_seconds(nginx.worker)?;
    let status = ExitStatus::from_raw(status);
    ensure!(status.success(), "wrk failed ({status}):\n{stdout}{stderr}");
    let (requests, rps) = parse_wrk(&stdout)?;
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Ok(Load {
        rps,
        requests,
        worker_cpu_s: worker_after - worker_before,
        wrk_cpu_s: tv(usage.ru_utime) + tv(usage.ru_stime),
    })
}

/// One case's run: a load per file, and the tool's count of nginx's syscalls.
struct Sample {
    loads: Vec<Load>,
    counted: Option<u64>,
}

impl Sample {
    fn requests(&self) -> u64 {
        self.loads.iter().map(|l| l.requests).sum()
    }
}

fn loads(nginx: &Nginx, seconds: u32) -> Result<Vec<Load>> {
    FILES
        .iter()
        .map(|(file, _)| load(nginx, file, seconds))
        .collect()
}

/// The syscalls of the processes named nginx in a zcprof JSON report.
fn zcprof_nginx_syscalls(report: &str) -> Result<u64> {
    let doc: Value = serde_json::from_str(report).with_context(|| {
        format!(
            "zcprof did not print a JSON report; it printed:\n{}",
            process::tail(report, 10)
        )
    })?;
    let counts: Vec<u64> = doc["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["comm"] == "nginx")
        .filter_map(|p| p["syscalls"].as_u64())
        .collect();
    ensure!(
        !counts.is_empty(),
        "zcprof's report has no process named nginx"
    );
    Ok(counts.iter().sum())
}

/// `zcprof attach --json --pid PID [--empty-programs]`, once it says it is attached.
fn attach(zcprof: &Path, pid: u32, empty_programs: bool) -> Result<Child> {
    let mut cmd = process::command(zcprof);
    cmd.args(["attach", "--json", "--pid", &pid.to_string()]);
    if empty_programs {
        cmd.arg("--empty-programs");
    }
    let mut child = Child::spawn(cmd, false)?;
    child.wait_for(
        READY_TIMEOUT,
        |l| l.stream == Stream::Stderr && l.text.starts_with("zcprof: attached"),
        "`zcprof: attached …`",
    )?;
    Ok(child)
}

/// The bpftrace program of the comparison: less than zcprof does (the worker's syscalls
/// by pid, and its read bytes).
fn bpftrace_program(pid: u32) -> String {
    format!(
        "BEGIN {{ printf(\"zcprof-bench: ready\\n\"); }}\n\
         tracepoint:raw_syscalls:sys_enter /pid == {pid}/ {{ @syscalls[pid] = count(); }}\n\
         tracepoint:syscalls:sys_exit_read /pid == {pid} && args->ret > 0/ \
         {{ @read_bytes[pid] = sum(args->ret); }}\n"
    )
}

/// The outcome of a case that may not be available here.
enum Outcome {
    Done(Sample),
    Unavailable(String),
}

fn sample(zcprof: &Path, prefix: &Prefix, case: Case, seconds: u32) -> Result<Outcome> {
    let zc = zcprof.display().to_string();
    let done = |loads, counted| Ok(Outcome::Done(Sample { loads, counted }));
    match case {
        Case::Bare => {
            let nginx = Nginx::start(prefix, &[])?;
            let loads = loads(&nginx, seconds);
            nginx.stop()?;
            done(loads?, None)
        }
        Case::Run | Case::RunFloor | Case::RunLatency | Case::RunBackstops => {
            let mut wrapper = vec![zc, "run".into(), "--json".into()];
            match case {
                Case::RunFloor => wrapper.push("--empty-programs".into()),
                Case::RunLatency => wrapper.push("--latency".into()),
                Case::RunBackstops => wrapper.extend(["--backstops".into(), "on".into()]),
                _ => {}
            }
            wrapper.push("--".into());
            let nginx = Nginx::start(prefix, &wrapper)?;
            let loads = loads(&nginx, seconds);
            let report = nginx.stop()?;
            let counted = (case != Case::RunFloor)
                .then(|| zcprof_nginx_syscalls(&report.stdout()))
                .transpose()?;
            done(loads?, counted)
        }
        Case::Attach | Case::AttachFloor => {
            let nginx = Nginx::start(prefix, &[])?;
            let tool = attach(zcprof, nginx.worker, case == Case::AttachFloor)?;
            let loads = loads(&nginx, seconds);
            let report = tool.stop(libc::SIGINT, STOP_TIMEOUT)?;
            nginx.stop()?;
            report.ensure_success()?;
            let counted = (case == Case::Attach)
                .then(|| zcprof_nginx_syscalls(&report.stdout()))
                .transpose()?;
            done(loads?, counted)
        }
        Case::Bystander => {
            // What profiling one process costs the rest of the host: nginx is not watched,
            // so each of its syscalls stops at the programs' early exit.
            let mut sleeper = process::command("sleep");
            sleeper.arg("600");
            let sleeper = Child::spawn(sleeper, false)?;
            let tool = attach(zcprof, sleeper.pid(), false)?;
            let nginx = Nginx::start(prefix, &[])?;
            let loads = loads(&nginx, seconds);
            nginx.stop()?;
            sleeper.stop(libc::SIGKILL, STOP_TIMEOUT)?;
            let report = tool.finish(STOP_TIMEOUT)?;
            report.ensure_success()?;
            ensure!(
                zcprof_nginx_syscalls(&report.stdout()).is_err(),
                "zcprof attach counted the unwatched nginx"
            );
            done(loads?, None)
        }
        Case::Serve | Case::ServeFloor => {
            let extra: &[&str] = if case == Case::ServeFloor {
                &["--empty-programs"]
            } else {
                &[]
            };
            let serve = Daemon::start(zcprof, extra)?;
            let nginx = Nginx::start(prefix, &[])?;
            let loads = loads(&nginx, seconds);
            nginx.stop()?;
            let counted = if case == Case::Serve {
                let body = serve.scrape()?.body;
                Some(daemon::sum_samples(&body, "zcprof_syscalls_total", "comm=\"nginx\"") as u64)
            } else {
                None
            };
            let stopped = serve.stop()?;
            ensure!(
                stopped.status.success(),
                "zcprof serve did not exit 0 on SIGTERM ({}):\n{}",
                stopped.status,
                process::tail(&stopped.stderr(), 10)
            );
            done(loads?, counted)
        }
        Case::Bpftrace => {
            let nginx = Nginx::start(prefix, &[])?;
            let mut cmd = process::command("bpftrace");
            cmd.arg("-e").arg(bpftrace_program(nginx.worker));
            let mut bt = Child::spawn(cmd, false)?;
            bt.wait_for(
                READY_TIMEOUT,
                |l| l.text.contains("zcprof-bench: ready"),
                "its BEGIN line",
            )?;
            let loads = loads(&nginx, seconds);
            let out = bt.stop(libc::SIGINT, STOP_TIMEOUT)?;
            let worker = nginx.worker;
            nginx.stop()?;
            let key = format!("@syscalls[{worker}]:");
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
            done(loads?, Some(counted))
        }
        Case::PerfStat => {
            let nginx = Nginx::start(prefix, &[])?;
            let mut cmd = process::command("perf");
            // -I 100: the first interval line says the counter is open.
            cmd.args([
                "stat",
                "-x,",
                "-I",
                "100",
                "-e",
                "raw_syscalls:sys_enter",
                "-p",
            ])
            .arg(nginx.worker.to_string());
            let mut perf = Child::spawn(cmd, false)?;
            // `<not counted>` only says the idle worker did not run in that interval.
            let ready = perf.wait_for(
                READY_TIMEOUT,
                |l| l.text.contains(",raw_syscalls:sys_enter,"),
                "an interval line",
            );
            if let Ok(line) = &ready
                && line.text.contains("<not supported>")
            {
                perf.stop(libc::SIGINT, STOP_TIMEOUT)?;
                nginx.stop()?;
                return Ok(Outcome::Unavailable(format!(
                    "perf stat says raw_syscalls:sys_enter is not supported here: `{}`",
                    line.text.trim()
                )));
            }
            if let Err(e) = ready {
                // perf that exited on its own could not open the event: the case is not
                // available on this kernel; perf still running is a failure to report.
                let exited = proc_state(perf.pid()).is_none_or(|s| s == 'Z');
                let out = perf.stop(libc::SIGINT, STOP_TIMEOUT)?;
                nginx.stop()?;
                if !exited {
                    return Err(e);
                }
                return Ok(Outcome::Unavailable(format!(
                    "perf stat could not count raw_syscalls:sys_enter on the worker: {}",
                    table::first_line(process::tail(&out.stderr(), 3).trim())
                )));
            }
            let loads = loads(&nginx, seconds);
            let out = perf.stop(libc::SIGINT, STOP_TIMEOUT)?;
            nginx.stop()?;
            let counted = out.stderr().lines().filter_map(perf_interval).sum();
            done(loads?, Some(counted))
        }
    }
}

/// The count of a `perf stat -x, -I` line (`time,count,unit,event,…`), if it is one.
fn perf_interval(line: &str) -> Option<u64> {
    let f: Vec<&str> = line.split(',').collect();
    if f.get(3).map(|e| e.trim()) != Some("raw_syscalls:sys_enter") {
        return None;
    }
    f.get(1)?.trim().parse().ok()
}

/// Runs every case `config.service_rounds` times, interleaved (the order rotated by one each
/// round), and derives the losses, the CPU per request and the ratios.
pub fn run(zcprof: &Path, config: &Config, say: &dyn Fn(String)) -> Section {
    let started = Instant::now();
    let seconds = config.service_seconds;
    let rounds = config.service_rounds;
    let loadavg_before = super::conditions().loadavg;
    let mut results: Vec<CaseResult> = CASES
        .iter()
        .map(|&case| CaseResult {
            case,
            label: label(case),
            floor: case.floor(),
            files: FILES
                .iter()
                .map(|&(file, bytes)| FileResult {
                    file,
                    bytes,
                    rps: Vec::new(),
                    worker_us_per_req: Vec::new(),
                    wrk_us_per_req: Vec::new(),
                    rps_median: None,
                    worker_us_median: None,
                    wrk_us_median: None,
                    round_loss_pct: Vec::new(),
                    loss_pct: None,
                    worker_added_us: None,
                    loss_vs_floor: None,
                    loss_vs_bpftrace: None,
                    cpu_vs_floor: None,
                    cpu_vs_bpftrace: None,
                })
                .collect(),
            counted_syscalls: None,
            error: None,
            skipped: None,
        })
        .collect();
    for (name, case) in [
        ("nginx", None),
        ("wrk", None),
        ("bpftrace", Some(Case::Bpftrace)),
        ("perf", Some(Case::PerfStat)),
    ] {
        if dd::which(name).is_some() {
            continue;
        }
        let why = format!("`{name}` is not installed (cargo xtask setup installs it)");
        for r in results
            .iter_mut()
            .filter(|r| case.is_none_or(|c| c == r.case))
        {
            r.error = Some(why.clone());
        }
    }
    let prefix = match Prefix::new() {
        Ok(p) => Some(p),
        Err(e) => {
            for r in &mut results {
                r.error = Some(format!("{e:#}"));
            }
            None
        }
    };

    let mut foreign_hooks_per_round = Vec::new();
    for round in 0..rounds {
        let Some(prefix) = &prefix else { break };
        let foreign = super::conditions().foreign_syscall_hooks.len();
        if foreign > 0 {
            say(format!(
                "bench: (f) round {}: {foreign} other BPF programs on the syscall hooks \
                 (someone else's tracer): every case of this round is slowed down",
                round + 1
            ));
        }
        foreign_hooks_per_round.push(foreign);
        let n = results.len();
        for k in 0..n {
            let r = &mut results[(round + k) % n];
            if r.error.is_some() || r.skipped.is_some() {
                continue;
            }
            let t = Instant::now();
            match sample(zcprof, prefix, r.case, seconds) {
                Ok(Outcome::Done(s)) => {
                    let mut line =
                        format!("bench: (f) round {}/{rounds}: {:<50}", round + 1, r.label);
                    for (f, l) in r.files.iter_mut().zip(&s.loads) {
                        let per_req = |cpu: f64| cpu / l.requests as f64 * 1e6;
                        f.rps.push(l.rps);
                        f.worker_us_per_req.push(per_req(l.worker_cpu_s));
                        f.wrk_us_per_req.push(per_req(l.wrk_cpu_s));
                        let _ = write!(
                            line,
                            " {} {:.0} req/s ({:.1} µs worker CPU/req);",
                            f.file,
                            l.rps,
                            per_req(l.worker_cpu_s)
                        );
                    }
                    let _ = write!(line, " {:.1} s in all", t.elapsed().as_secs_f64());
                    say(line);
                    if let Some(c) = s.counted {
                        r.counted_syscalls = Some(r.counted_syscalls.map_or(c, |m| m.min(c)));
                        if c < s.requests() {
                            r.error = Some(format!(
                                "{} counted {c} syscalls of nginx for {} requests: it did not \
                                 watch nginx's worker",
                                r.label,
                                s.requests()
                            ));
                        }
                    }
                }
                Ok(Outcome::Unavailable(why)) => {
                    say(format!("bench: (f) {}: unavailable: {why}", r.label));
                    r.skipped = Some(why);
                }
                Err(e) => {
                    say(format!("bench: (f) {}: FAILED: {e:#}", r.label));
                    r.error = Some(format!("{e:#}"));
                }
            }
        }
    }
    derive(&mut results);
    Section {
        nginx: super::first_output_line("nginx", &["-v"]),
        wrk: format!(
            "wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s http://127.0.0.1:PORT/FILE"
        ),
        seconds,
        rounds,
        cases: results,
        loadavg_before,
        loadavg_after: super::conditions().loadavg,
        foreign_hooks_per_round,
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// a / b when both are positive costs: a loss or an added time at or below zero is lost in
/// the noise, and a ratio of it would read as a target met.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    dd::ratio(a.filter(|a| *a > 0.0), b)
}

/// Medians, per-round losses against the bare run of the same round, and the ratios.
fn derive(results: &mut [CaseResult]) {
    for r in results.iter_mut() {
        if r.error.is_some() || r.skipped.is_some() {
            continue;
        }
        for f in &mut r.files {
            f.rps_median = median(&f.rps);
            f.worker_us_median = median(&f.worker_us_per_req);
            f.wrk_us_median = median(&f.wrk_us_per_req);
        }
    }
    let Some(bare) = results
        .iter()
        .find(|r| r.case == Case::Bare && r.error.is_none())
        .cloned()
    else {
        return;
    };
    for r in results.iter_mut() {
        if r.case == Case::Bare || r.error.is_some() || r.skipped.is_some() {
            continue;
        }
        for (f, b) in r.files.iter_mut().zip(&bare.files) {
            f.round_loss_pct = b
                .rps
                .iter()
                .zip(&f.rps)
                .filter(|(b, _)| **b > 0.0)
                .map(|(b, x)| (b - x) / b * 100.0)
                .collect();
            f.loss_pct = median(&f.round_loss_pct);
            f.worker_added_us = f
                .worker_us_median
                .zip(b.worker_us_median)
                .map(|(x, b)| x - b);
        }
    }
    let snapshot: Vec<CaseResult> = results.to_vec();
    let file_of = |case: Case, i: usize| {
        snapshot
            .iter()
            .find(|r| r.case == case && r.error.is_none() && r.skipped.is_none())
            .map(|r| r.files[i].clone())
    };
    for r in results.iter_mut() {
        if r.case == Case::Bare || r.case.is_floor() {
            continue;
        }
        for (i, f) in r.files.iter_mut().enumerate() {
            let floor = r.floor.and_then(|c| file_of(c, i));
            let bpftrace = file_of(Case::Bpftrace, i);
            f.loss_vs_floor = ratio(f.loss_pct, floor.as_ref().and_then(|x| x.loss_pct));
            f.cpu_vs_floor = ratio(
                f.worker_added_us,
                floor.as_ref().and_then(|x| x.worker_added_us),
            );
            if r.case != Case::Bpftrace {
                f.loss_vs_bpftrace = ratio(f.loss_pct, bpftrace.as_ref().and_then(|x| x.loss_pct));
                f.cpu_vs_bpftrace = ratio(
                    f.worker_added_us,
                    bpftrace.as_ref().and_then(|x| x.worker_added_us),
                );
            }
        }
    }
}

fn size_text(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// One table per file.
pub fn tables(s: &Section) -> Vec<Tab> {
    let mut tabs = Vec::new();
    for (i, &(file, bytes)) in FILES.iter().enumerate() {
        let mut rows = Vec::new();
        for c in &s.cases {
            let f = &c.files[i];
            let mut row = vec![c.label.to_owned()];
            if let Some(st) = table::status(&c.error, &c.skipped) {
                row.push(st);
                row.extend(std::iter::repeat_n(String::new(), 8));
                rows.push(row);
                continue;
            }
            let is_bare = c.case == Case::Bare;
            let dash = || "—".to_owned();
            row.push(table::opt(f.rps_median, 0));
            row.push(if is_bare {
                dash()
            } else {
                table::opt(f.loss_pct, 1)
            });
            row.push(if is_bare {
                dash()
            } else {
                spread(&f.round_loss_pct)
            });
            row.push(if c.floor.is_some() {
                table::opt(f.loss_vs_floor, 2)
            } else {
                dash()
            });
            row.push(
                if is_bare || c.case.is_floor() || c.case == Case::Bpftrace {
                    dash()
                } else {
                    table::opt(f.loss_vs_bpftrace, 2)
                },
            );
            row.push(table::opt(f.worker_us_median, 1));
            row.push(if is_bare {
                dash()
            } else {
                let mut ratios = Vec::new();
                if let (Some(_), Some(v)) = (c.floor, f.cpu_vs_floor) {
                    ratios.push(format!("{v:.2}× floor's"));
                }
                if let Some(v) = f.cpu_vs_bpftrace {
                    ratios.push(format!("{v:.2}× bpftrace's"));
                }
                let added = table::opt(f.worker_added_us, 1);
                if ratios.is_empty() {
                    added
                } else {
                    format!("{added} ({})", ratios.join(", "))
                }
            });
            row.push(table::opt(f.wrk_us_median, 1));
            row.push(table::samples(&f.rps, 0));
            rows.push(row);
        }
        let mut notes = vec![format!(
            "`{}` against nginx ({}) serving a {} file, 1 worker, keep-alive; {} interleaved \
             rounds, each starting nginx (and the tool) afresh per case; req/s = wrk's; loss = \
             median over rounds of (bare − case) / bare of the same round, with the lowest and \
             highest round; CPU = user + system time per request, the nginx worker's from \
             /proc/PID/schedstat around each wrk run (the run time that utime + stime of \
             /proc/PID/stat add up to, in ns rather than ticks), wrk's from its rusage; added = the worker's \
             median CPU per request − bare nginx's.",
            s.wrk.replace("FILE", file),
            s.nginx,
            size_text(bytes),
            s.rounds
        )];
        if i == 0 {
            let counted: Vec<String> = s
                .cases
                .iter()
                .filter_map(|c| Some(format!("{} {}", c.label, c.counted_syscalls?)))
                .collect();
            if !counted.is_empty() {
                notes.push(format!(
                    "nginx syscalls each tool counted (smallest round, both files): {}.",
                    counted.join("; ")
                ));
            }
            notes.push(format!(
                "Load average before the case: {}; after: {}; the case took {:.0} s.",
                s.loadavg_before, s.loadavg_after, s.wall_s
            ));
            if s.foreign_hooks_per_round.iter().any(|&n| n > 0) {
                notes.push(format!(
                    "Other BPF programs on sys_enter/sys_exit at the start of each round: {:?}.",
                    s.foreign_hooks_per_round
                ));
            }
            for c in &s.cases {
                if let Some(why) = c.skipped.as_ref().or(c.error.as_ref()) {
                    notes.push(format!("{}: {}", c.label, table::first_line(why)));
                }
            }
        }
        tabs.push(Tab {
            title: format!(
                "(f) Service: nginx serving {}, wrk over loopback",
                size_text(bytes)
            ),
            header: [
                "case",
                "req/s",
                "loss %",
                "round losses % (min … max)",
                "÷ floor's loss",
                "÷ bpftrace's loss",
                "worker µs CPU/req",
                "worker µs added",
                "wrk µs CPU/req",
                "rounds (req/s)",
            ]
            .map(String::from)
            .to_vec(),
            rows,
            notes,
        });
    }
    tabs
}

/// `min … max` of the rounds' losses.
fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().reduce(f64::min);
    let hi = v.iter().copied().reduce(f64::max);
    match (lo, hi) {
        (Some(lo), Some(hi)) => format!("{lo:.1} … {hi:.1}"),
        _ => "n/a".into(),
    }
}

/// The issue's targets: in every mode and for both files, zcprof's loss ≤ 1.3× its floor's
/// and ≤ 0.3× bpftrace's; each on requests/s (the issue's measure) and on the worker's CPU per
/// request (which shows a cost where requests/s are lost in the noise of a busy machine).
pub fn targets(s: &Section, t: &mut Vec<Target>) {
    type Measure = fn(&FileResult) -> Option<f64>;
    let views: [(&str, &str, Measure, Measure, Measure); 2] = [
        (
            "req/s loss",
            "loss",
            |f| f.loss_pct,
            |f| f.loss_vs_floor,
            |f| f.loss_vs_bpftrace,
        ),
        (
            "worker's added CPU per request",
            "added CPU",
            |f| f.worker_added_us,
            |f| f.cpu_vs_floor,
            |f| f.cpu_vs_bpftrace,
        ),
    ];
    for (what, short, measure, vs_floor, vs_bpftrace) in views {
        for case in [Case::Run, Case::Attach, Case::Serve] {
            let Some(c) = s.get(case) else { continue };
            for (i, f) in c.files.iter().enumerate() {
                let why = |other: Option<Case>| {
                    let mut reasons = Vec::new();
                    for x in std::iter::once(c).chain(other.and_then(|o| s.get(o))) {
                        if let Some(e) = x.error.as_ref().or(x.skipped.as_ref()) {
                            reasons.push(format!("{}: {}", x.label, table::first_line(e)));
                        } else if x.files.get(i).and_then(measure).is_some_and(|l| l <= 0.0) {
                            reasons.push(format!("{}: {short} ≤ 0 (noise)", x.label));
                        }
                    }
                    if reasons.is_empty() {
                        reasons.push("bare nginx not measured".into());
                    }
                    Some(reasons.join("; "))
                };
                let name = c.label;
                let size = size_text(f.bytes);
                t.push(
                    Target::new(
                        format!("(f) {name}, {size}: {what} ÷ its floor's"),
                        vs_floor(f),
                        1.3,
                        "×",
                    )
                    .because(why(c.floor)),
                );
                t.push(
                    Target::new(
                        format!("(f) {name}, {size}: {what} ÷ bpftrace's"),
                        vs_bpftrace(f),
                        0.3,
                        "×",
                    )
                    .because(why(Some(Case::Bpftrace))),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk() {
        let out = "Running 2s test @ http://127.0.0.1:18080/4k.bin\n  1 threads and 8 \
                   connections\n  29423 requests in 2.02s, 121.70MB read\nRequests/sec:  \
                   14590.80\nTransfer/sec:     60.35MB\n";
        assert_eq!(parse_wrk(out).unwrap(), (29423, 14590.80));
        let bad = format!("{out}  Non-2xx or 3xx responses: 12\n");
        assert!(parse_wrk(&bad).is_err());
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn parses_perf_intervals() {
        assert_eq!(
            perf_interval("     0.100391,12345,,raw_syscalls:sys_enter,100272,100.00,,"),
            Some(12345)
        );
        assert_eq!(
            perf_interval("0.1,<not counted>,,raw_syscalls:sys_enter,0,100.00,,"),
            None
        );
        assert_eq!(perf_interval("0.1,5,,cycles,1,100.00,,"), None);
    }

    #[test]
    fn counts_nginx_in_reports() {
        let r = r#"{"processes":[{"comm":"nginx","syscalls":3},{"comm":"nginx","syscalls":40},
                   {"comm":"sh","syscalls":9}]}"#;
        assert_eq!(zcprof_nginx_syscalls(r).unwrap(), 43);
        assert!(zcprof_nginx_syscalls(r#"{"processes":[]}"#).is_err());
    }

    #[test]
    fn losses_are_per_round() {
        let case = |case: Case, rps: [f64; 3], cpu: [f64; 3]| CaseResult {
            case,
            label: label(case),
            floor: case.floor(),
            files: vec![FileResult {
                file: "4k.bin",
                bytes: 4096,
                rps: rps.to_vec(),
                worker_us_per_req: cpu.to_vec(),
                wrk_us_per_req: vec![1.0; 3],
                rps_median: None,
                worker_us_median: None,
                wrk_us_median: None,
                round_loss_pct: Vec::new(),
                loss_pct: None,
                worker_added_us: None,
                loss_vs_floor: None,
                loss_vs_bpftrace: None,
                cpu_vs_floor: None,
                cpu_vs_bpftrace: None,
            }],
            counted_syscalls: None,
            error: None,
            skipped: None,
        };
        let mut r = vec![
            case(Case::Bare, [100.0, 200.0, 100.0], [10.0, 10.0, 10.0]),
            case(Case::AttachFloor, [90.0, 180.0, 95.0], [12.0, 12.0, 12.0]),
            case(Case::Attach, [80.0, 180.0, 90.0], [13.0, 13.0, 13.0]),
            case(Case::Bpftrace, [50.0, 100.0, 50.0], [30.0, 30.0, 30.0]),
        ];
        derive(&mut r);
        let a = &r[2].files[0];
        assert_eq!(a.round_loss_pct, vec![20.0, 10.0, 10.0]);
        assert_eq!(a.loss_pct, Some(10.0));
        assert_eq!(r[1].files[0].loss_pct, Some(10.0));
        assert_eq!(a.loss_vs_floor, Some(1.0));
        assert_eq!(a.loss_vs_bpftrace, Some(0.2));
        assert_eq!(a.worker_added_us, Some(3.0));
        assert_eq!(a.cpu_vs_floor, Some(1.5));
        assert_eq!(a.cpu_vs_bpftrace, Some(0.15));
        assert_eq!(spread(&a.round_loss_pct), "10.0 … 20.0");
        let section = Section {
            nginx: String::new(),
            wrk: String::new(),
            seconds: 1,
            rounds: 3,
            cases: r.clone(),
            loadavg_before: String::new(),
            loadavg_after: String::new(),
            foreign_hooks_per_round: Vec::new(),
            wall_s: 0.0,
        };
        let mut t = Vec::new();
        targets(&section, &mut t);
        let verdict = |what: &str| {
            t.iter()
                .find(|x| x.what == format!("(f) zcprof attach --pid WORKER, 4 KiB: {what}"))
                .map(|x| (x.measured, x.met))
        };
        assert_eq!(
            verdict("req/s loss ÷ its floor's"),
            Some((Some(1.0), Some(true)))
        );
        assert_eq!(
            verdict("req/s loss ÷ bpftrace's"),
            Some((Some(0.2), Some(true)))
        );
        assert_eq!(
            verdict("worker's added CPU per request ÷ its floor's"),
            Some((Some(1.5), Some(false)))
        );
        // Attach is the only mode here: two targets per view, four in all.
        assert_eq!(t.len(), 4);
        // A loss lost in the noise has no ratio (it would read as a target met).
        assert_eq!(ratio(Some(-3.0), Some(2.0)), None);
        assert_eq!(ratio(Some(3.0), Some(-2.0)), None);
    }
}
