//! The checks the guest runs, each against ground truth known without zcprof: what the
//! command does by construction (dd's records, the file's size, the churn's writes) or counts
//! itself (the workloads' tallies).
//!
//! Every check starts zcprof once (the workloads once per strategy): under software emulation
//! each start costs seconds of BPF verification, up to minutes when the verifier runs into
//! its limits.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use super::verdict::{
    self, CheckResult, FD_TYPES, IO_URING, KERNEL, KERNEL_SKIPPED, MMAP_FAULT_IN, Mismatch, Status,
    capabilities, error_line, judge,
};
use crate::{process, workloads};

/// dd's one-byte records (a).
const DD_RECORDS: u64 = 20_000;
/// The file `cp` and `sendfile` move (b, c).
const FILE_SIZE: u64 = 8 << 20;
/// The churn (f): processes × threads × one-byte writes.
pub const CHURN: (u64, u64, u64) = (20, 4, 250);
/// Bytes each workload strategy sends (d), as in `cargo xtask test`.
const WORKLOAD_SIZE: u64 = 4 << 20;
/// One zcprof command, verification under emulation included.
const ZCPROF_TIMEOUT: Duration = Duration::from_secs(600);

/// What the checks need.
pub struct Env {
    pub zcprof: PathBuf,
    /// This binary (the churn runs as `xtask kernel-matrix-churn`).
    pub xtask: PathBuf,
    /// A scratch directory on a writable file system.
    pub scratch: PathBuf,
}

/// A zcprof command that ran to its end (or was killed at the deadline).
struct Ran {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
    elapsed_s: f64,
}

impl Ran {
    /// zcprof's JSON document, or why there is none.
    fn doc(&self) -> Result<Value, String> {
        serde_json::from_str(&self.stdout).map_err(|_| {
            if self.success {
                format!(
                    "zcprof printed no JSON document: {}",
                    error_line(&self.stderr)
                )
            } else {
                format!("{} ({})", error_line(&self.stderr), self.status)
            }
        })
    }

    /// The failure result of a command that gave no document.
    fn failed(&self, check: &str, why: String) -> CheckResult {
        let mut r = CheckResult::new(check, Status::Fail, why);
        r.elapsed_s = self.elapsed_s;
        r.not_started = !self.success
            && self.stdout.trim().is_empty()
            && self.stderr.contains("zcprof: error:");
        r.data = json!({ "status": self.status, "stdout": self.stdout, "stderr": self.stderr });
        r
    }
}

fn run_zcprof(cmd: &mut Command, timeout: Duration) -> Result<Ran> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", process::describe(cmd)))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let status = wait_until(&mut child, started + timeout)?;
    let stdout = out.recv().unwrap_or_default();
    let stderr = err.recv().unwrap_or_default();
    Ok(Ran {
        success: status.as_ref().is_some_and(|s| s.success()),
        status: status.map_or_else(
            || format!("killed after {} s", timeout.as_secs()),
            |s| s.to_string(),
        ),
        stdout,
        stderr,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// The child's status, or None if it was killed at the deadline.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<std::process::ExitStatus>> {
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            // Killing and reaping only fail if it has exited meanwhile.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A thread that reads `stream` to its end and sends the text.
fn reader(stream: Option<impl std::io::Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut s) = stream {
            let _ = s.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// `zcprof run --json -- <command>`, its document and declared capabilities.
fn zcprof_run(env: &Env, check: &str, command: &[&str]) -> Result<(Ran, Value), Box<CheckResult>> {
    zcprof_run_with(env, check, &[], command)
}

/// As [`zcprof_run`], with `options` for `zcprof run`.
fn zcprof_run_with(
    env: &Env,
    check: &str,
    options: &[&str],
    command: &[&str],
) -> Result<(Ran, Value), Box<CheckResult>> {
    let mut cmd = process::command(&env.zcprof);
    cmd.args(["run", "--json"])
        .args(options)
        .arg("--")
        .args(command)
        .env("LC_ALL", "C")
        .current_dir(&env.scratch);
    let ran = run_zcprof(&mut cmd, ZCPROF_TIMEOUT)
        .map_err(|e| Box::new(CheckResult::new(check, Status::Fail, format!("{e:#}"))))?;
    match ran.doc() {
        Ok(doc) => Ok((ran, doc)),
        Err(why) => Err(Box::new(ran.failed(check, why))),
    }
}

// ---------------------------------------------------------------------------------------
// Reading zcprof's document

fn processes(doc: &Value) -> &[Value] {
    doc["processes"].as_array().map_or(&[], Vec::as_slice)
}

fn transfers(p: &Value) -> &[Value] {
    p["transfers"].as_array().map_or(&[], Vec::as_slice)
}

/// `(calls, bytes, size_log2[bucket])` of `syscall` over every process and column.
fn syscall_total(doc: &Value, syscall: &str, bucket: usize) -> (u64, u64, u64) {
    let mut sum = (0, 0, 0);
    for t in processes(doc).iter().flat_map(transfers) {
        if t["syscall"] == syscall {
            sum.0 += t["calls"].as_u64().unwrap_or(0);
            sum.1 += t["bytes"].as_u64().unwrap_or(0);
            sum.2 += t["size_log2"][bucket].as_u64().unwrap_or(0);
        }
    }
    sum
}

/// Bytes in ledger `column`, over every process.
fn column_total(doc: &Value, column: &str) -> u64 {
    processes(doc)
        .iter()
        .map(|p| p["ledger"][column].as_u64().unwrap_or(0))
        .sum()
}

/// Lost events (must be none) and the command's exit code (must be 0).
fn basics(doc: &Value, out: &mut Vec<Mismatch>) {
    if let Some(lost) = doc["lost"].as_object() {
        for (reason, n) in lost {
            // Declared, not lost by zcprof: see `verdict::KERNEL_SKIPPED`.
            if reason != KERNEL_SKIPPED && n.as_u64() != Some(0) {
                out.push(Mismatch::new(format!("lost events ({reason}): {n}"), &[]));
            }
        }
    }
    if doc["exit_code"].as_i64().is_some_and(|c| c != 0) {
        out.push(Mismatch::new(
            format!("the command exited with {}", doc["exit_code"]),
            &[],
        ));
    }
}

fn eq(
    out: &mut Vec<Mismatch>,
    what: &str,
    expected: u64,
    measured: u64,
    feeds: &'static [&'static str],
) {
    if expected != measured {
        let diff = measured as i128 - expected as i128;
        let what = format!("{what}: expected {expected}, measured {measured} ({diff:+})");
        out.push(if measured < expected {
            Mismatch::short(what, feeds)
        } else {
            Mismatch::new(what, feeds)
        });
    }
}

fn finish(
    check: &str,
    ran: &Ran,
    doc: Value,
    mismatches: Vec<Mismatch>,
    pass: &str,
) -> CheckResult {
    let mut r = judge(check, mismatches, capabilities(&doc), pass);
    r.elapsed_s = ran.elapsed_s;
    r.data = json!({ "zcprof": doc, "stderr": ran.stderr });
    r
}

// ---------------------------------------------------------------------------------------
// The checks

/// The checks that are not workload strategies, in the order they run: the single source of
/// the guest's list and the table's columns.
pub const SINGLE: [&str; 8] = [
    "dd",
    "cp",
    "sendfile",
    "churn",
    "serve",
    "latency",
    "attribution",
    "stacks",
];

/// (a) `dd bs=1 count=20000`: exactly 20,000 one-byte reads and writes. `status=none`
/// silences dd's closing statistics (one of which is a one-byte write of "\n"), so that every
/// other read and write of dd (the loader's, the locale's) is larger than one byte.
pub fn dd(env: &Env) -> CheckResult {
    dd_with(env, "dd", &[])
}

/// `dd` again under `--latency` (the sys_enter program loads on this kernel, and timing
/// changes no count): the same exact counts, and every read and write of dd timed once (zcprof
/// watched dd from before its exec, so it saw each call's entry).
pub fn latency(env: &Env) -> CheckResult {
    dd_with(env, "latency", &["--latency"])
}

fn dd_with(env: &Env, check: &str, options: &[&str]) -> CheckResult {
    let count = format!("count={DD_RECORDS}");
    let cmd = [
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=1",
        &count,
        "status=none",
    ];
    let (ran, doc) = match zcprof_run_with(env, check, options, &cmd) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let bucket = zcprof_common::size_bucket(1);
    let mut m = Vec::new();
    basics(&doc, &mut m);
    if !options.is_empty() {
        for syscall in ["read", "write"] {
            let (calls, timed) = processes(&doc)
                .iter()
                .flat_map(transfers)
                .filter(|t| t["syscall"] == syscall)
                .fold((0, 0), |(c, n), t| {
                    let timed: u64 = t["time_log2"]
                        .as_array()
                        .map_or(0, |h| h.iter().filter_map(Value::as_u64).sum());
                    (c + t["calls"].as_u64().unwrap_or(0), n + timed)
                });
            eq(&mut m, &format!("timed {syscall} calls"), calls, timed, &[]);
        }
    }
    for syscall in ["read", "write"] {
        let (_, _, one_byte) = syscall_total(&doc, syscall, bucket);
        eq(
            &mut m,
            &format!("one-byte {syscall} calls"),
            DD_RECORDS,
            one_byte,
            &[],
        );
    }
    // The columns of those calls: /dev/zero and /dev/null are character devices.
    for (syscall, column) in [
        ("read", "cpu_kernel_to_user"),
        ("write", "cpu_user_to_kernel"),
    ] {
        let in_column: u64 = processes(&doc)
            .iter()
            .flat_map(transfers)
            .filter(|t| t["syscall"] == syscall && t["column"] == column)
            .map(|t| t["size_log2"][bucket].as_u64().unwrap_or(0))
            .sum();
        eq(
            &mut m,
            &format!("one-byte {syscall} calls in {column}"),
            DD_RECORDS,
            in_column,
            &[FD_TYPES],
        );
    }
    let timed = if options.is_empty() {
        ""
    } else {
        ", each timed"
    };
    finish(
        check,
        &ran,
        doc,
        m,
        &format!("{DD_RECORDS} one-byte reads and writes{timed}"),
    )
}

/// A file of `FILE_SIZE` bytes in the scratch directory.
fn source_file(env: &Env) -> Result<PathBuf> {
    let path = env.scratch.join("source.bin");
    if fs::metadata(&path).is_ok_and(|m| m.len() == FILE_SIZE) {
        return Ok(path);
    }
    // Not all zeros (a file system could store holes): a repeating byte pattern.
    let block: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let mut f = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    for _ in 0..FILE_SIZE / block.len() as u64 {
        f.write_all(&block)?;
    }
    f.sync_all()?;
    Ok(path)
}

/// (b) `cp` of an 8 MiB file: coreutils' cp moves it with copy_file_range, a copy between
/// kernel buffers: `cpu_in_kernel` holds the file's size.
pub fn cp(env: &Env) -> CheckResult {
    cp_with(env, "cp", &[])
}

/// `cp` again under `--by-file`: the attribution code loads on this kernel, and the source
/// and the copy each have the file's size in `cpu_in_kernel`, under their own paths (the
/// kernel's names for them joined below their mount point).
pub fn attribution(env: &Env) -> CheckResult {
    cp_with(env, "attribution", &["--by-file"])
}

/// `cp` under `--by-file` and `--folded` together: the attributing sys_exit and the stack
/// capture after it load on this kernel side by side, and the folded stacks hold the file's
/// size under copy_file_range in `cpu_in_kernel`, as the ledger and the attribution do.
pub fn stacks(env: &Env) -> CheckResult {
    let folded = env.scratch.join("cp.folded");
    let _ = fs::remove_file(&folded);
    let path = folded.to_string_lossy().into_owned();
    cp_with(env, "stacks", &["--by-file", "--folded", &path])
}

fn cp_with(env: &Env, check: &str, options: &[&str]) -> CheckResult {
    let src = match source_file(env) {
        Ok(p) => p,
        Err(e) => return CheckResult::new(check, Status::Fail, format!("{e:#}")),
    };
    let dst = env.scratch.join("copy.bin");
    let _ = fs::remove_file(&dst);
    let (s, d) = (src.to_string_lossy(), dst.to_string_lossy());
    let (ran, doc) = match zcprof_run_with(env, check, options, &["cp", &s, &d]) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut m = Vec::new();
    basics(&doc, &mut m);
    eq(
        &mut m,
        "copy size",
        FILE_SIZE,
        fs::metadata(&dst).map_or(0, |m| m.len()),
        &[],
    );
    eq(
        &mut m,
        "cpu_in_kernel bytes",
        FILE_SIZE,
        column_total(&doc, "cpu_in_kernel"),
        &[FD_TYPES],
    );
    if !options.is_empty() {
        for path in [&s, &d] {
            let attributed: u64 = doc["files"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .filter(|r| r["column"] == "cpu_in_kernel" && r["path"] == path.as_ref())
                .map(|r| r["bytes"].as_u64().unwrap_or(0))
                .sum();
            eq(
                &mut m,
                &format!("bytes attributed to {path}"),
                FILE_SIZE,
                attributed,
                &[],
            );
        }
    }
    let _ = fs::remove_file(&dst);
    let folded = options
        .iter()
        .position(|o| *o == "--folded")
        .and_then(|i| options.get(i + 1));
    if let Some(folded) = folded {
        // `comm;frames…;copy_file_range;cpu_in_kernel BYTES`
        let in_stacks: u64 = fs::read_to_string(folded)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(frames, _)| frames.ends_with(";copy_file_range;cpu_in_kernel"))
            .filter_map(|(_, n)| n.parse::<u64>().ok())
            .sum();
        eq(
            &mut m,
            "copy_file_range bytes in the folded stacks",
            FILE_SIZE,
            in_stacks,
            &[FD_TYPES],
        );
        let _ = fs::remove_file(folded);
    }
    let what = if folded.is_some() {
        "cpu_in_kernel = file size, by path and in the folded stacks"
    } else if options.is_empty() {
        "cpu_in_kernel = file size"
    } else {
        "cpu_in_kernel = file size, for the source and the copy by path"
    };
    finish(check, &ran, doc, m, what)
}

/// The sender and receiver of (c): one process, the receiver a thread; exits non-zero unless
/// the receiver got every byte.
const SENDFILE_PY: &str = r#"
import os, socket, sys, threading
path = sys.argv[1]
size = os.path.getsize(path)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
got = [0]
def receive():
    c, _ = srv.accept()
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        got[0] += len(b)
t = threading.Thread(target=receive)
t.start()
s = socket.create_connection(srv.getsockname())
fd = os.open(path, os.O_RDONLY)
off = 0
while off < size:
    n = os.sendfile(s.fileno(), fd, off, size - off)
    if n == 0:
        break
    off += n
s.close()
t.join()
if got[0] != size:
    sys.exit("received %d of %d bytes" % (got[0], size))
"#;

/// The system's python3, not a version manager's shim (pyenv's would run a shell script
/// and a dozen processes first).
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// (c) Python's `os.sendfile` of the 8 MiB file into a TCP socket on loopback: page
/// references move, `zero_copy` holds the file's size.
pub fn sendfile(env: &Env) -> CheckResult {
    let src = match source_file(env) {
        Ok(p) => p,
        Err(e) => return CheckResult::new("sendfile", Status::Fail, format!("{e:#}")),
    };
    let s = src.to_string_lossy();
    let (ran, doc) = match zcprof_run(env, "sendfile", &[python(), "-I", "-c", SENDFILE_PY, &s]) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut m = Vec::new();
    basics(&doc, &mut m);
    let (_, sent, _) = syscall_total(&doc, "sendfile", 0);
    eq(&mut m, "sendfile bytes", FILE_SIZE, sent, &[]);
    eq(
        &mut m,
        "zero_copy bytes",
        FILE_SIZE,
        column_total(&doc, "zero_copy"),
        &[FD_TYPES],
    );
    finish("sendfile", &ran, doc, m, "zero_copy = file size")
}

/// (f) Fork/exit churn with threads: `CHURN.0` processes at once, each with `CHURN.1`
/// threads that each write one byte `CHURN.2` times to /dev/null. The spawner and its
/// children write nothing else (see `churn.rs`), so the writes are exactly the product.
pub fn churn(env: &Env) -> CheckResult {
    let (p, t, w) = CHURN;
    let xtask = env.xtask.to_string_lossy();
    let (ps, ts, ws) = (p.to_string(), t.to_string(), w.to_string());
    let cmd = [
        &*xtask,
        "kernel-matrix-churn",
        "--processes",
        &ps,
        "--threads",
        &ts,
        "--writes",
        &ws,
    ];
    let (ran, doc) = match zcprof_run(env, "churn", &cmd) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut m = Vec::new();
    basics(&doc, &mut m);
    let (calls, bytes, _) = syscall_total(&doc, "write", 0);
    eq(&mut m, "write calls", p * t * w, calls, &[]);
    eq(&mut m, "write bytes", p * t * w, bytes, &[]);
    let procs = processes(&doc);
    eq(&mut m, "processes", p + 1, procs.len() as u64, &[]);
    let exited = procs.iter().filter(|p| p["exited"] == true).count() as u64;
    eq(&mut m, "processes seen exiting", p + 1, exited, &[]);
    finish(
        "churn",
        &ran,
        doc,
        m,
        &format!("{} writes in {p} processes × {t} threads", p * t * w),
    )
}

// ---------------------------------------------------------------------------------------
// (e) serve

/// What `zcprof serve` says on stderr once it listens.
const SERVING: &str = "zcprof: serving http://";

/// (e) `zcprof serve --listen 127.0.0.1:0`, one scrape: `zcprof_syscalls_total` present and
/// above 0, `zcprof_events_lost_total` present and 0 in every series.
pub fn serve(env: &Env) -> CheckResult {
    let started = Instant::now();
    let mut r = match serve_inner(env) {
        Ok((mismatches, metrics, stderr)) => {
            let mut r = judge(
                "serve",
                mismatches,
                Vec::new(),
                "scraped: syscalls counted, nothing lost",
            );
            r.data = json!({ "metrics": metrics, "stderr": stderr });
            r
        }
        Err((why, stderr)) => {
            let mut r = CheckResult::new("serve", Status::Fail, why);
            r.not_started = stderr.contains("zcprof: error:");
            r.data = json!({ "stderr": stderr });
            r
        }
    };
    r.elapsed_s = started.elapsed().as_secs_f64();
    r
}

type ServeOutcome = Result<(Vec<Mismatch>, String, String), (String, String)>;

fn serve_inner(env: &Env) -> ServeOutcome {
    let mut cmd = process::command(&env.zcprof);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .current_dir(&env.scratch);
    let mut child = cmd
        .spawn()
        .map_err(|e| (format!("could not start zcprof serve: {e}"), String::new()))?;
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take();
    thread::spawn(move || {
        if let Some(s) = stderr {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        }
    });
    let mut log = String::new();
    let outcome = (|| {
        let deadline = Instant::now() + ZCPROF_TIMEOUT;
        let addr = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    log.push_str(&line);
                    log.push('\n');
                    if let Some(rest) = line.strip_prefix(SERVING) {
                        break rest.trim_end_matches("/metrics").to_owned();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "zcprof serve did not serve within {} s",
                        ZCPROF_TIMEOUT.as_secs()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = wait_until(&mut child, Instant::now() + Duration::from_secs(5))
                        .ok()
                        .flatten()
                        .map_or("still running".to_owned(), |s| s.to_string());
                    return Err(format!("{} ({status})", error_line(&log)));
                }
            }
        };
        // Something to count: zcprof serve counts every process, the scrape included; a few
        // tries while its first collection comes in.
        let mut last = Err("no scrape".to_owned());
        for _ in 0..10 {
            let _ = fs::read_to_string("/proc/self/status");
            last = http_get(&addr, "/metrics");
            if let Ok(body) = &last {
                let samples = parse_metrics(body);
                if samples
                    .get("zcprof_syscalls_total")
                    .is_some_and(|v| v.iter().sum::<f64>() > 0.0)
                {
                    break;
                }
            }
            thread::sleep(Duration::from_millis(500));
        }
        last
    })();
    // SAFETY: kill(2) of our unreaped child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    if wait_until(&mut child, Instant::now() + Duration::from_secs(10))
        .ok()
        .flatten()
        .is_none()
    {
        log.push_str("zcprof serve did not exit within 10 s of SIGTERM (killed)\n");
    }
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        log.push_str(&line);
        log.push('\n');
    }
    let body = outcome.map_err(|e| (e, log.clone()))?;
    let samples = parse_metrics(&body);
    let mut m = Vec::new();
    match samples.get("zcprof_syscalls_total") {
        None => m.push(Mismatch::new("no zcprof_syscalls_total series", &[])),
        Some(v) if v.iter().sum::<f64>() <= 0.0 => {
            m.push(Mismatch::new(
                "zcprof_syscalls_total is 0 in every series",
                &[],
            ));
        }
        Some(_) => {}
    }
    if !samples.contains_key("zcprof_events_lost_total") {
        m.push(Mismatch::new("no zcprof_events_lost_total series", &[]));
    }
    // By reason: the kernel's own skips are a declaration (see `verdict::KERNEL_SKIPPED`),
    // not events zcprof lost; they show in the table's last column.
    let skipped_label = format!("reason=\"{KERNEL_SKIPPED}\"");
    let lost: f64 = body
        .lines()
        .filter(|l| l.starts_with("zcprof_events_lost_total{") && !l.contains(&skipped_label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    if lost != 0.0 {
        m.push(Mismatch::new(
            format!("zcprof_events_lost_total: {lost} events lost"),
            &[],
        ));
    }
    Ok((m, body, log))
}

/// GET `path` from `addr` with a plain HTTP/1.1 request; the body if the status is 200.
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let inner = || -> Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: zcprof\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow!("no HTTP header end"))?;
        let status = head.split_whitespace().nth(1).unwrap_or("?");
        if status != "200" {
            bail!("HTTP status {status}");
        }
        Ok(body.to_owned())
    };
    inner().map_err(|e| format!("GET http://{addr}{path}: {e:#}"))
}

/// Sample values by metric name, from the text exposition format.
fn parse_metrics(text: &str) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<f64>() {
            out.entry(name.to_owned()).or_default().push(v);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// (d) the workloads

/// (d) One workload strategy of `cargo xtask run-workloads`, its checks classified: the
/// workload's own failure with ENOSYS/EINVAL/EOPNOTSUPP means the kernel cannot run the
/// strategy; a mismatch only in a column (or io_uring cell) a non-exact capability feeds is
/// degraded.
pub fn workload(env: &Env, strategy: &'static str) -> CheckResult {
    let check = format!("workload:{strategy}");
    let started = Instant::now();
    let mut args = workloads::Args::reduced(WORKLOAD_SIZE);
    args.timeout = ZCPROF_TIMEOUT.as_secs();
    let mut r = match workloads::run_one(&env.zcprof, strategy, &args) {
        workloads::Outcome::Failed(e) => failed_workload(&check, strategy, &e),
        workloads::Outcome::Measured(m) => {
            let mismatches = m
                .evaluation
                .mismatches()
                .map(|c| {
                    let feeds = feeding(strategy, &c.what, &c.measured);
                    // zcprof's own lost-event check: the kernel's skips are declared, not lost.
                    if c.short || c.what.contains(KERNEL_SKIPPED) {
                        Mismatch::short(c.describe(), feeds)
                    } else {
                        Mismatch::new(c.describe(), feeds)
                    }
                })
                .collect();
            let mut r = judge(
                &check,
                mismatches,
                capabilities(&m.report),
                "every count and column as the tally",
            );
            r.data = json!({ "evaluation": m.evaluation, "tally": m.tally, "zcprof": m.report,
                             "stderr": m.attach_stderr });
            r
        }
    };
    r.elapsed_s = started.elapsed().as_secs_f64();
    r
}

/// The capabilities that feed one of run-workloads' checks (by its description and
/// measured value) for `strategy`.
fn feeding(strategy: &str, what: &str, measured: &str) -> &'static [&'static str] {
    const COLUMNS: &[&str] = &[FD_TYPES];
    // io_uring's bytes reach the columns through its completions, not through syscalls.
    const URING_COLUMNS: &[&str] = &[IO_URING, FD_TYPES];
    if what.starts_with("kernel reported zero-copy") && measured == "no zero-copy sends" {
        // The workload found no SEND_ZC (Linux 6.0+) and sent with plain sends.
        &[KERNEL]
    } else if what.starts_with("io_uring") {
        &[IO_URING]
    } else if what.contains(MMAP_FAULT_IN) {
        &[MMAP_FAULT_IN]
    } else if what.contains("(transfer)")
        || what.starts_with("CPU-copied")
        || what.starts_with("classic:")
        || what.starts_with("receiver cpu_")
        || what.contains("(not in the tally)")
        || what.contains("descriptor types")
    {
        // Column checks: which column a call lands in depends on the descriptor's type.
        if strategy == "io-uring" {
            URING_COLUMNS
        } else {
            COLUMNS
        }
    } else {
        &[]
    }
}

/// Errors a kernel gives for what it does not implement (or not for this file system).
const UNSUPPORTED: &[&str] = &[
    "Function not implemented",
    "Invalid argument",
    "Operation not supported",
    "os error 38",
    "os error 22",
    "os error 95",
];

fn failed_workload(check: &str, strategy: &str, error: &str) -> CheckResult {
    // The runner's message: "workload S: …" / "the S workload failed …" for the workload's
    // own failure, "zcprof attach …" for zcprof's.
    let by_workload = error.starts_with(&format!("workload {strategy}"))
        || error.starts_with(&format!("the {strategy} workload"));
    let status = if by_workload && UNSUPPORTED.iter().any(|u| error.contains(u)) {
        Status::Unsupported
    } else {
        Status::Fail
    };
    let line = error
        .lines()
        .map(|l| l.trim().trim_start_matches("| ").trim())
        .find(|l| l.contains("error:"))
        .map_or_else(
            // No error line (e.g. killed by a signal): the runner's first line, without the
            // announcement of a stderr that is not there.
            || {
                verdict::one_line(error)
                    .trim_end_matches("; its stderr:")
                    .to_owned()
            },
            verdict::one_line,
        );
    let mut r = CheckResult::new(check, status, line);
    r.not_started =
        error.starts_with("zcprof attach") && error.contains("exited before it could attach");
    r.data = json!({ "error": error });
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics() {
        let m = parse_metrics(
            "# HELP x\nzcprof_syscalls_total{comm=\"a b\"} 3\nzcprof_syscalls_total{comm=\"c\"} 4\n\
             zcprof_events_lost_total{reason=\"x\"} 0\n",
        );
        assert_eq!(m["zcprof_syscalls_total"], [3.0, 4.0]);
        assert_eq!(m["zcprof_events_lost_total"], [0.0]);
    }

    #[test]
    fn workload_failures() {
        let r = failed_workload(
            "workload:io-uring",
            "io-uring",
            "the io-uring workload failed (exit status: 1):\n    | zcprof: error: io_uring_setup() failed: Function not implemented (os error 38)",
        );
        assert_eq!(r.status, Status::Unsupported);
        assert_eq!(
            r.detail,
            "zcprof: error: io_uring_setup() failed: Function not implemented (os error 38)"
        );
        let r = failed_workload(
            "workload:splice",
            "splice",
            "zcprof attach to the splice workload: zcprof attach exited before it could attach (exit status: 1); its stderr:\n    | zcprof: error: the kernel refused: Invalid argument",
        );
        assert_eq!(r.status, Status::Fail);
        assert!(r.not_started);
        assert_eq!(
            feeding("splice", "io_uring read completions", "0"),
            [IO_URING]
        );
        assert_eq!(
            feeding("splice", "zero_copy bytes (transfer)", "0"),
            [FD_TYPES]
        );
        assert_eq!(
            feeding("io-uring", "zero_copy bytes (transfer)", "0"),
            [IO_URING, FD_TYPES]
        );
        assert_eq!(feeding("splice", "write calls", "1"), [""; 0]);
        let zc = "kernel reported zero-copy sends copied (loopback)";
        assert_eq!(feeding("io-uring", zc, "no zero-copy sends"), [KERNEL]);
    }
}
