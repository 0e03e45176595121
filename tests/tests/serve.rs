//! `zcprof serve`: the Prometheus exporter, against a known workload, a real Prometheus
//! server, promtool, 20,000 short-lived processes, hostile clients and bad command lines.
//!
//! Each test starts its own daemon on a free loopback port (`--listen 127.0.0.1:0`; the
//! daemon prints the address it got). Workloads run under a command name of their own (a copy
//! of the binary with that name), so their group's counts are theirs alone.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use zcprof_tests::*;

const CHILD: &str = env!("CARGO_BIN_EXE_zc-child");
const STORM: &str = env!("CARGO_BIN_EXE_zc-storm");

/// A running `zcprof serve`.
struct Daemon {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

/// Starts `zcprof serve --listen 127.0.0.1:0 ARGS` and waits until it serves.
fn start_daemon(args: &[&str]) -> Daemon {
    let bin = zcprof_bin();
    let mut child = Command::new(&bin)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let pipe = child.stderr.take().expect("stderr");
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("zcprof: serving http://") {
                let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
            }
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let start = Instant::now();
    loop {
        if let Ok(addr) = rx.recv_timeout(Duration::from_millis(100)) {
            return Daemon {
                child,
                addr,
                stderr,
            };
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "zcprof serve exited ({status}) before serving:\n{}",
                stderr.lock().unwrap()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "zcprof serve did not start serving within 60 s:\n{}",
            stderr.lock().unwrap()
        );
    }
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET /metrics; panics unless 200.
    fn scrape(&self) -> String {
        let (status, body) = http_get(&self.addr, "/metrics");
        assert_eq!(status, 200, "scrape failed: {body}");
        body
    }

    /// Sends `signal` and waits (10 s at most) for the exit.
    fn stop_with(mut self, signal: i32) -> (ExitStatus, String) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "zcprof serve did not exit within 10 s of signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(100));
        let stderr = self.stderr.lock().unwrap().clone();
        (status, stderr)
    }

    fn stop(self) -> (ExitStatus, String) {
        self.stop_with(libc::SIGTERM)
    }

    /// The daemon's resident memory from /proc, bytes.
    fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `request` as is and reads the whole response (the server closes after it):
/// (status code, body). Status 0 if the server closed without answering.
fn http_raw(addr: &str, request: &[u8], timeout: Duration) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: zcprof\r\nConnection: close\r\n\r\n");
    http_raw(addr, req.as_bytes(), Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// One sample of the exposition: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (comments skipped, label values unescaped).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, mut rest) = match series.find('{') {
            Some(i) => (&series[..i], &series[i + 1..]),
            None => (series, ""),
        };
        let mut labels = BTreeMap::new();
        while let Some(eq) = rest.find("=\"") {
            let key = rest[..eq].trim_start_matches(',').to_string();
            let mut val = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let mut end = 0;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => val.push('\n'),
                        Some((_, c)) => val.push(c),
                        None => {}
                    },
                    '"' => {
                        end = eq + 2 + i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            labels.insert(key, val);
            rest = &rest[end..];
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// Sum of the samples of `name` that carry every label in `want`.
fn sum(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn series_key(s: &Sample) -> String {
    format!("{}{:?}", s.name, s.labels)
}

fn is_counter(name: &str) -> bool {
    name.ends_with("_total")
        || name.ends_with("_bucket")
        || name.ends_with("_count")
        || name.ends_with("_sum")
}

/// The `reason` label values of `zcprof_events_lost_total`, written out here rather than taken
/// from zcprof: one per kernel table that can fill up (threads, transfers, processes, io_uring,
/// stacks) or be unreadable, and the kernel's own skips of zcprof's programs (`kernel_skipped`, the
/// README's "How exact it is"). A reason added or renamed in zcprof must show up here.
const LOST_REASONS: &[&str] = &[
    "kernel_skipped",
    "object_table_full",
    "process_table_full",
    "read_failed",
    "stack_lost",
    "stack_table_full",
    "thread_table_full",
    "transfer_table_full",
    "uring_table_full",
];

fn assert_nothing_lost(samples: &[Sample]) {
    let lost: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "zcprof_events_lost_total")
        .collect();
    // Exactly one series per reason, each reason once.
    let mut reasons: Vec<&str> = lost
        .iter()
        .map(|s| s.labels.get("reason").map_or("", String::as_str))
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons, LOST_REASONS,
        "one lost counter per reason: {lost:?}"
    );
    for s in lost {
        assert_eq!(s.value, 0.0, "events lost: {s:?}");
    }
}

/// `promtool check metrics` finds nothing to say about `text` (`what` names the scrape).
fn promtool_accepts(text: &str, what: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics ({what}): {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of `src` named `name` (the command name its processes get) in `dir`.
fn named_copy(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    dst
}

/// Runs zc-child (under command name `name`) doing `action`, and returns its tally.
fn run_named_child(dir: &Path, name: &str, action: &[&str]) -> Tally {
    let exe = named_copy(Path::new(CHILD), dir, name);
    let tally = dir.join(format!("{name}.json"));
    let status = Command::new(&exe)
        .arg(&tally)
        .args(action)
        .env("ZC_CHILD_DIR", dir)
        .stdin(Stdio::null())
        .status()
        .expect("run zc-child");
    let t = Tally::read(&tally);
    assert!(status.success(), "{name} {action:?} failed: {status}");
    t
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn assert_one_error_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    assert!(
        lines[0].starts_with("zcprof: error: "),
        "expected 'zcprof: error: ...', got:\n{stderr}"
    );
}

/// Ids of the zcprof programs loaded now (by anyone: other zcprof processes may run on the
/// machine, so tests compare sets rather than expect none).
fn program_ids() -> std::collections::BTreeSet<u64> {
    bpftool_zcprof_programs()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// None of `ids` is loaded any more, 3 s at most after the daemon exited (the kernel frees
/// programs asynchronously).
fn assert_unloaded(ids: &std::collections::BTreeSet<u64>, when: &str) {
    let start = Instant::now();
    loop {
        let left: Vec<u64> = program_ids().intersection(ids).copied().collect();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{when}: the daemon's programs {left:?} are still loaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The zcprof programs loaded now that were not in `before`.
fn new_programs(before: &std::collections::BTreeSet<u64>) -> std::collections::BTreeSet<u64> {
    program_ids().difference(before).copied().collect()
}

/// pwrite64 of 1,000,000 bytes in 4096-byte chunks: the scrape shows exactly the calls,
/// bytes and sizes the child counted at its call sites, as an unprivileged daemon.
#[test]
fn scrape_equals_the_workload_tally() {
    if !require_root_or_skip() {
        return;
    }
    let before = program_ids();
    // Full histograms: the bucket checks below are at log2 resolution (coarse is the default).
    let d = start_daemon(&["--program-stats", "--histograms", "full"]);
    let ours = new_programs(&before);
    assert!(!ours.is_empty(), "the daemon's programs are loaded");
    let dir = scratch_dir("serve-known");
    let (n, chunk) = (1_000_000u64, 4096u64);
    let t = run_named_child(
        &dir,
        "zcsrv-known",
        &["pwrite", &n.to_string(), &chunk.to_string()],
    );
    let (calls, bytes, errors) = t.cell("pwrite64");
    assert_eq!(bytes, n);
    let s = parse(&d.scrape());
    let g = [("comm", "zcsrv-known"), ("syscall", "pwrite64")];
    let got = |name: &str| sum(&s, name, &g) as u64;
    eprintln!(
        "tally: pwrite64 calls {calls} bytes {bytes} errors {errors}; scrape: calls {} bytes \
         {} errors {}",
        got("zcprof_transfer_calls_total"),
        got("zcprof_ledger_bytes_total"),
        got("zcprof_transfer_errors_total")
    );
    assert_eq!(got("zcprof_transfer_calls_total"), calls);
    assert_eq!(got("zcprof_transfer_errors_total"), errors);
    assert_eq!(got("zcprof_ledger_bytes_total"), bytes);
    assert_eq!(
        sum(
            &s,
            "zcprof_ledger_bytes_total",
            &[
                ("comm", "zcsrv-known"),
                ("syscall", "pwrite64"),
                ("column", "cpu_user_to_kernel")
            ]
        ) as u64,
        bytes,
        "a file write is a CPU copy from user to kernel"
    );
    // The size histogram: 244 calls of 4096 bytes (<= 8191, not <= 4095) and one of 576.
    let ok_calls = calls - errors;
    assert_eq!(got("zcprof_io_size_bytes_count"), ok_calls);
    assert_eq!(got("zcprof_io_size_bytes_sum"), bytes);
    let le = |b: &str| {
        sum(
            &s,
            "zcprof_io_size_bytes_bucket",
            &[("comm", "zcsrv-known"), ("syscall", "pwrite64"), ("le", b)],
        ) as u64
    };
    let partial = u64::from(n % chunk != 0);
    assert_eq!(le("511"), 0);
    assert_eq!(le("1023"), partial);
    assert_eq!(le("4095"), partial);
    assert_eq!(le("8191"), ok_calls);
    assert_eq!(le("+Inf"), ok_calls);
    // Syscalls: at least every call the worker made, and two mode switches each.
    let syscalls = sum(&s, "zcprof_syscalls_total", &[("comm", "zcsrv-known")]) as u64;
    assert!(syscalls >= t.tracked_syscalls() + t.fixed_syscalls());
    assert_eq!(
        sum(&s, "zcprof_mode_switches_total", &[("comm", "zcsrv-known")]) as u64,
        2 * syscalls
    );
    assert_nothing_lost(&s);
    // zcprof's own cost is measured (--program-stats: the stats fd works) and its build is
    // described.
    assert!(
        sum(
            &s,
            "zcprof_bpf_program_runs_total",
            &[("program", "sys_exit")]
        ) > 0.0
    );
    assert!(
        sum(
            &s,
            "zcprof_bpf_program_run_seconds_total",
            &[("program", "sys_exit")]
        ) > 0.0
    );
    assert_eq!(sum(&s, "zcprof_build_info", &[]), 1.0);

    // It serves as nobody, without capabilities, and the maps still read.
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(field("Uid:"), "65534 65534 65534 65534");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapPrm:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    let (status, stderr) = d.stop();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert_unloaded(&ours, "after SIGTERM");
}

/// `promtool check metrics` accepts a live scrape in every grouping.
#[test]
fn promtool_accepts_live_scrapes() {
    if !require_root_or_skip() {
        return;
    }
    for args in [
        &[][..],
        &["--by", "cgroup"][..],
        &["--by", "container"][..],
        &["--per-pid"][..],
    ] {
        let d = start_daemon(args);
        let dir = scratch_dir("serve-promtool");
        run_named_child(&dir, "zcsrv-promtool", &["pwrite", "100000", "4096"]);
        let text = d.scrape();
        promtool_accepts(&text, &format!("{args:?}"));
        let s = parse(&text);
        // Without --program-stats the kernel keeps no run-time statistics for zcprof, and
        // no zero-valued self-cost series pretend it does.
        assert!(
            !s.iter().any(|x| x.name.starts_with("zcprof_bpf_program_")),
            "program statistics exported without --program-stats ({args:?})"
        );
        let group_label = match args {
            ["--by", "cgroup"] => "cgroup",
            ["--by", "container"] => "container_id",
            ["--per-pid"] => "pid",
            _ => "comm",
        };
        assert!(
            s.iter()
                .any(|x| x.name == "zcprof_syscalls_total" && x.labels.contains_key(group_label)),
            "no {group_label} label in {args:?}"
        );
        eprintln!("promtool: {args:?}: {} samples, ok", s.len(),);
        let (status, _) = d.stop();
        assert_eq!(status.code(), Some(0));
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The instant-query value of `query` (one series), if Prometheus has one.
fn prom_query(addr: &str, query: &str) -> Option<f64> {
    let req = format!(
        "GET /api/v1/query?query={} HTTP/1.1\r\nHost: prometheus\r\nConnection: close\r\n\r\n",
        urlencode(query)
    );
    // Not listening yet while Prometheus starts.
    let (status, body) = http_raw(addr, req.as_bytes(), Duration::from_secs(10)).ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let r = v["data"]["result"].as_array()?;
    if r.len() != 1 {
        return None;
    }
    r[0]["value"][1].as_str()?.parse().ok()
}

/// A real Prometheus server (the Debian package), scraping the daemon every second, answers
/// queries with the workload's totals.
#[test]
fn prometheus_scrapes_the_daemon() {
    if !require_root_or_skip() {
        return;
    }
    let d = start_daemon(&["--comm", "zcsrv-prom"]);
    let dir = scratch_dir("serve-prom");
    let t = run_named_child(&dir, "zcsrv-prom", &["pwrite", "1000000", "4096"]);
    let (calls, bytes, _) = t.cell("pwrite64");

    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: zcprof\n    static_configs:\n      - targets: ['{}']\n",
            d.addr
        ),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run prometheus"),
    );
    let calls_q = "sum(zcprof_transfer_calls_total{job=\"zcprof\",comm=\"zcsrv-prom\",\
                   syscall=\"pwrite64\"})";
    let bytes_q = "sum(zcprof_ledger_bytes_total{job=\"zcprof\",comm=\"zcsrv-prom\",\
                   syscall=\"pwrite64\",column=\"cpu_user_to_kernel\"})";
    let up_q = "up{job=\"zcprof\"}";
    let start = Instant::now();
    let (got_calls, got_bytes) = loop {
        if let (Some(c), Some(b), Some(1.0)) = (
            prom_query(&web, calls_q),
            prom_query(&web, bytes_q),
            prom_query(&web, up_q),
        ) {
            break (c, b);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus never had the daemon's series; its log:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("prometheus: {calls_q} = {got_calls} (tally {calls})");
    eprintln!("prometheus: {bytes_q} = {got_bytes} (tally {bytes})");
    let (_, raw) = http_get(&web, &format!("/api/v1/query?query={}", urlencode(calls_q)));
    eprintln!("prometheus: raw answer: {raw}");
    assert_eq!(got_calls as u64, calls);
    assert_eq!(got_bytes as u64, bytes);
    let lost = prom_query(&web, "sum(zcprof_events_lost_total{job=\"zcprof\"})");
    assert_eq!(lost, Some(0.0));
    drop(prom);
    let (status, _) = d.stop();
    assert_eq!(status.code(), Some(0));
}

/// 20,000 processes start and exit while the daemon is scraped every 100 ms: no counter ever
/// decreases, the churning command's ledger ends exactly at 20,000 times one process's
/// (from strace), and the daemon's memory stays bounded.
#[test]
fn churn_keeps_counters_monotonic_and_exact() {
    if !require_root_or_skip() {
        return;
    }
    const PROCESSES: u64 = 20_000;
    const SPAWNERS: u64 = 2;
    /// A bound far above what the daemon needs (~30 MiB, most of it the kernel's BTF parsed
    /// at start) but far below what unbounded per-thread state for 20,000 processes would
    /// take once multiplied by a long-running host's churn.
    const RSS_LIMIT: u64 = 64 << 20;
    let dir = scratch_dir("serve-churn");
    let truth = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("a `true` binary");
    let exe = named_copy(truth, &dir, "zcchurn");

    // One process's reads, from strace: the dynamic loader reading libc's headers.
    let st = strace(Some("read,pread64"), &[exe.to_str().unwrap()], &[]);
    assert!(st.status.success());
    let calls: Vec<&(String, i64, i64)> = st.fd_calls.values().flatten().collect();
    let per = |name: &str| -> (u64, u64) {
        let c: Vec<_> = calls.iter().filter(|c| c.0 == name).collect();
        (c.len() as u64, c.iter().map(|c| c.2.max(0) as u64).sum())
    };
    let (read_calls, read_bytes) = per("read");
    let (pread_calls, pread_bytes) = per("pread64");
    assert!(
        read_calls + pread_calls > 0,
        "strace saw no reads: {calls:?}"
    );

    let d = start_daemon(&[]);
    let addr = d.addr.clone();
    let pid = d.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut previous: BTreeMap<String, f64> = BTreeMap::new();
            let mut violations = Vec::new();
            let mut times = Vec::new();
            let mut max_rss = 0u64;
            let mut max_reported_rss = 0f64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let (status, body) = http_get(&addr, "/metrics");
                times.push(t0.elapsed());
                assert_eq!(status, 200);
                let samples = parse(&body);
                for s in &samples {
                    if !is_counter(&s.name) {
                        continue;
                    }
                    let key = series_key(s);
                    if let Some(&p) = previous.get(&key)
                        && s.value < p
                    {
                        violations.push(format!("{key}: {p} -> {}", s.value));
                    }
                    previous.insert(key, s.value);
                }
                max_reported_rss =
                    max_reported_rss.max(sum(&samples, "process_resident_memory_bytes", &[]));
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let rss = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024;
                max_rss = max_rss.max(rss);
                if let Some(left) = Duration::from_millis(100).checked_sub(t0.elapsed()) {
                    std::thread::sleep(left);
                }
            }
            (violations, times, max_rss, max_reported_rss)
        })
    };

    let started = Instant::now();
    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|_| {
            let exe = exe.clone();
            std::thread::spawn(move || {
                for _ in 0..PROCESSES / SPAWNERS {
                    let s = Command::new(&exe)
                        .stdin(Stdio::null())
                        .status()
                        .expect("spawn zcchurn");
                    assert!(s.success());
                }
            })
        })
        .collect();
    for s in spawners {
        s.join().expect("spawner");
    }
    let churn_time = started.elapsed();
    // Two more collections: the last processes' threads are seen dead, then retired.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (violations, mut times, max_rss, max_reported_rss) = scraper.join().expect("scraper");
    let end = parse(&d.scrape());
    std::thread::sleep(Duration::from_millis(200));
    let end = {
        let again = parse(&d.scrape());
        // The retire pass of the previous scrape's collection is visible now.
        if again.is_empty() { end } else { again }
    };
    let g = |sc: &str| {
        (
            sum(
                &end,
                "zcprof_transfer_calls_total",
                &[("comm", "zcchurn"), ("syscall", sc)],
            ) as u64,
            sum(
                &end,
                "zcprof_ledger_bytes_total",
                &[("comm", "zcchurn"), ("syscall", sc)],
            ) as u64,
        )
    };
    times.sort();
    let median = times[times.len() / 2];
    let max = *times.last().unwrap();
    eprintln!(
        "churn: {PROCESSES} processes in {churn_time:.1?}; {} scrapes, scrape time median \
         {median:.1?} max {max:.1?}; daemon RSS max {:.1} MiB (/proc), {:.1} MiB (reported); \
         threads retired {}, threads tracked at end {}, map entries at end {}",
        times.len(),
        max_rss as f64 / (1 << 20) as f64,
        max_reported_rss / (1 << 20) as f64,
        sum(&end, "zcprof_threads_retired_total", &[]),
        sum(&end, "zcprof_threads_tracked", &[]),
        sum(&end, "zcprof_map_entries", &[("map", "threads")]),
    );
    eprintln!(
        "churn: zcchurn read {:?} (expected {:?}), pread64 {:?} (expected {:?})",
        g("read"),
        (PROCESSES * read_calls, PROCESSES * read_bytes),
        g("pread64"),
        (PROCESSES * pread_calls, PROCESSES * pread_bytes)
    );
    assert!(
        violations.is_empty(),
        "{} counter decreases, e.g. {:?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
    assert_eq!(g("read"), (PROCESSES * read_calls, PROCESSES * read_bytes));
    assert_eq!(
        g("pread64"),
        (PROCESSES * pread_calls, PROCESSES * pread_bytes)
    );
    assert_nothing_lost(&end);
    assert!(
        max_rss < RSS_LIMIT,
        "daemon RSS reached {max_rss} bytes (limit {RSS_LIMIT})"
    );
    assert!(
        sum(&end, "zcprof_threads_retired_total", &[]) >= PROCESSES as f64,
        "the churn's threads were retired"
    );
    // Entries do not pile up: what is left is about the host's live threads.
    assert!(sum(&end, "zcprof_map_entries", &[("map", "threads")]) < 5000.0);
    assert!(
        max < Duration::from_secs(2),
        "a scrape took {max:?} during the churn"
    );
    let rss_end = d.rss();
    let (status, _) = d.stop();
    assert_eq!(status.code(), Some(0));
    eprintln!(
        "churn: daemon RSS at end {:.1} MiB",
        rss_end as f64 / (1 << 20) as f64
    );
}

/// The fork storm of storm.rs at the daemon's defaults: nothing lost, every child and burst
/// thread counted, and the thread table back to where it was.
#[test]
fn fork_storm_loses_nothing() {
    if !require_root_or_skip() {
        return;
    }
    let d = start_daemon(&[]);
    storm_under(&d, "serve-storm", STORM_ARGS);
}

/// With a ring buffer too small for any record, every dead thread stays in the table for the
/// collector (4,000 slots; the storm fills that in about a second): it must collect as the
/// table fills, not once per `--collect-interval` (10 s here).
#[test]
fn a_full_ring_buffer_loses_nothing_under_serve() {
    if !require_root_or_skip() {
        return;
    }
    let d = start_daemon(&[
        "--max-threads",
        "4000",
        "--retired-ring-bytes",
        "4096",
        "--collect-interval",
        "10s",
    ]);
    storm_under(&d, "serve-storm-full-ring", FULL_RING_STORM);
    let s = parse(&d.scrape());
    let deferred = sum(
        &s,
        "zcprof_threads_deferred_total",
        &[("reason", "ring_full")],
    );
    assert!(deferred > 0.0, "the ring was full for some");
}

/// Runs zc-storm with `args` while `d` serves, and checks the scrape after it: nothing lost,
/// each child's and burst thread's write counted once, the thread table back to its level.
fn storm_under(d: &Daemon, tag: &str, args: &[&str]) {
    let entries = |s: &[Sample]| sum(s, "zcprof_map_entries", &[("map", "threads")]);
    let retired = |s: &[Sample]| sum(s, "zcprof_threads_retired_total", &[]);
    let before = parse(&d.scrape());
    let dir = scratch_dir(tag);
    let tally_path = dir.join("tally.json");
    let status = Command::new(STORM)
        .arg(&tally_path)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .expect("run zc-storm");
    assert!(status.success(), "zc-storm failed: {status}");
    let t = storm_tally(&tally_path);
    let (n, threads, bytes) = (u(&t, "processes"), u(&t, "threads"), u(&t, "bytes"));
    let s = parse(&d.scrape());
    let got = |comm: &str| {
        let g = [("comm", comm), ("syscall", "write")];
        (
            sum(&s, "zcprof_transfer_calls_total", &g) as u64,
            sum(&s, "zcprof_ledger_bytes_total", &g) as u64,
        )
    };
    eprintln!(
        "storm: {n} processes and {threads} threads in {:.1} s ({:.0} forks/s); children's \
         writes {:?}, burst threads' writes {:?}; thread entries {} before, {} after; {} \
         threads retired",
        t["elapsed_s"].as_f64().unwrap_or(0.0),
        t["forks_per_s"].as_f64().unwrap_or(0.0),
        got("zcstorm-child"),
        got("zcstorm-burst"),
        entries(&before),
        entries(&s),
        retired(&s) - retired(&before),
    );
    assert_nothing_lost(&s);
    assert_eq!(got("zcstorm-child"), (n, n * bytes), "every child's write");
    assert_eq!(
        got("zcstorm-burst"),
        (threads, threads * bytes),
        "every burst thread's write"
    );
    // The storm's threads are all gone; what is left is the host's own churn. Dead threads the
    // kernel left in the table (its ring was full) leave it at the collection after the one
    // that saw them dead: each scrape asks for one.
    let mut after = entries(&s);
    let start = Instant::now();
    while after > entries(&before) + 50.0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        after = entries(&parse(&d.scrape()));
    }
    assert!(
        after <= entries(&before) + 50.0,
        "thread entries back to their level: {} before, {after} after",
        entries(&before),
    );
}

/// With --per-pid and --max-series 3, five live processes make three pid series and one
/// [other]; once they exit their counts fold into [exited] and no total goes down.
#[test]
fn per_pid_series_are_capped_and_fold_on_exit() {
    if !require_root_or_skip() {
        return;
    }
    let d = start_daemon(&["--per-pid", "--max-series", "3", "--comm", "zcsrv-sleep"]);
    let dir = scratch_dir("serve-pid");
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("a `sleep` binary");
    let exe = named_copy(sleep, &dir, "zcsrv-sleep");
    let mut kids: Vec<Child> = (0..5)
        .map(|_| {
            Command::new(&exe)
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep")
        })
        .collect();
    // Wait until all five have made their start-up syscalls and sleep.
    std::thread::sleep(Duration::from_millis(500));
    let s = parse(&d.scrape());
    let series: Vec<&Sample> = s
        .iter()
        .filter(|x| x.name == "zcprof_syscalls_total")
        .collect();
    let pids = series
        .iter()
        .filter(|x| x.labels["pid"].parse::<u32>().is_ok())
        .count();
    eprintln!("per-pid: {series:?}");
    assert_eq!(pids, 3, "three pid series: {series:?}");
    assert!(series.iter().any(|x| x.labels["pid"] == "[other]"));
    assert_eq!(sum(&s, "zcprof_series_dropped_total", &[]), 2.0);
    let before = sum(&s, "zcprof_syscalls_total", &[]);
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    // Seen dead, retired, folded: a few collections.
    let start = Instant::now();
    let after = loop {
        let s = parse(&d.scrape());
        let total = sum(&s, "zcprof_syscalls_total", &[]);
        assert!(total >= before, "the total went down: {before} -> {total}");
        let pids_left = s
            .iter()
            .filter(|x| x.name == "zcprof_syscalls_total")
            .filter(|x| x.labels["pid"].parse::<u32>().is_ok())
            .count();
        if pids_left == 0 {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "pid series still there after exit"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(sum(&after, "zcprof_syscalls_total", &[("pid", "[exited]")]) > 0.0);
    let (status, _) = d.stop();
    assert_eq!(status.code(), Some(0));
}

/// Garbage, a 1 MB header, a slowloris connection and a flood of idle connections: the daemon
/// answers or drops each, and keeps serving scrapes promptly meanwhile.
#[test]
fn hostile_clients_do_not_stall_scrapes() {
    if !require_root_or_skip() {
        return;
    }
    let d = start_daemon(&[]);
    let quick = Duration::from_secs(2);
    let timed_scrape = |what: &str| {
        let t0 = Instant::now();
        d.scrape();
        let took = t0.elapsed();
        assert!(took < quick, "a scrape during {what} took {took:?}");
        took
    };

    // Routing.
    assert_eq!(http_get(&d.addr, "/").0, 200);
    assert_eq!(http_get(&d.addr, "/nope").0, 404);
    let (status, _) = http_raw(
        &d.addr,
        b"POST /metrics HTTP/1.1\r\nHost: z\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        quick,
    )
    .unwrap();
    assert_eq!(status, 405);

    // Garbage: 400, or closed without an answer.
    let (status, _) = http_raw(&d.addr, b"\x00\x01\x02 garbage \xff\r\n\r\n", quick)
        .unwrap_or((0, String::new()));
    assert!(status == 400 || status == 0, "garbage got {status}");
    timed_scrape("garbage");

    // A 1 MB header: 431, or closed.
    let mut big = b"GET /metrics HTTP/1.1\r\nHost: z\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    big.extend_from_slice(b"\r\n\r\n");
    let status = http_raw(&d.addr, &big, quick).map(|r| r.0).unwrap_or(0);
    assert!(status == 431 || status == 0, "1 MB header got {status}");
    timed_scrape("a 1 MB header");

    // Slowloris: a header trickling in one byte every 300 ms.
    let mut slow = TcpStream::connect(&d.addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let slow_start = Instant::now();
    let mut closed_after = None;
    while slow_start.elapsed() < Duration::from_secs(12) {
        timed_scrape("a slowloris connection");
        if slow.write_all(b"a").is_err() {
            closed_after = Some(slow_start.elapsed());
            break;
        }
        // A closed socket shows on the next write or read.
        slow.set_nonblocking(true).unwrap();
        let mut b = [0u8; 256];
        match slow.read(&mut b) {
            Ok(0) => {
                closed_after = Some(slow_start.elapsed());
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                closed_after = Some(slow_start.elapsed());
                break;
            }
        }
        slow.set_nonblocking(false).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let closed_after = closed_after.expect("the slowloris connection was never closed");
    eprintln!("hostile: slowloris connection closed by the daemon after {closed_after:.1?}");
    assert!(closed_after < Duration::from_secs(8));

    // 200 idle connections, more than the daemon serves at once: scrapes still get through.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&d.addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let took = timed_scrape("200 idle connections");
    eprintln!("hostile: scrape with 200 idle connections open took {took:.1?}");
    drop(idle);

    let (status, _) = d.stop();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn occupied_port_is_a_clear_error() {
    if !require_root_or_skip() {
        return;
    }
    let before = program_ids();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = zcprof(&["serve", "--listen", &addr]);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", out.stderr);
    assert_one_error_line(&out.stderr);
    assert!(
        out.stderr.contains(&format!("cannot listen on {addr}")) && out.stderr.contains("--listen"),
        "{}",
        out.stderr
    );
    // The port is checked before anything is loaded.
    assert!(new_programs(&before).is_empty());
}

#[test]
fn bad_scopes_are_clear_errors() {
    if !require_root_or_skip() {
        return;
    }
    let before = program_ids();
    for (args, says) in [
        (
            &["--cgroup", "/nonexistent-zcprof-cgroup"][..],
            "cannot read cgroup directory /nonexistent-zcprof-cgroup",
        ),
        (
            &["--cgroup", "/etc"][..],
            "/etc is not a directory of the cgroup v2 hierarchy",
        ),
        (
            &["--comm", "(unclosed"][..],
            "invalid --comm regex `(unclosed`",
        ),
        (
            &["--user", "no-such-user-zc"][..],
            "no user named `no-such-user-zc`",
        ),
        (&["--user", "root"][..], "--user root is root"),
        (&["--pid", "999999999"][..], "no process with pid 999999999"),
        (&["--max-series", "0"][..], "--max-series"),
    ] {
        let mut a = vec!["serve", "--listen", "127.0.0.1:0"];
        a.extend_from_slice(args);
        let out = zcprof(&a);
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?}: {:?}\n{}",
            out.status,
            out.stderr
        );
        assert_one_error_line(&out.stderr);
        assert!(
            out.stderr.contains(says),
            "{args:?}: expected {says:?} in:\n{}",
            out.stderr
        );
        eprintln!("{args:?}: {}", out.stderr.trim());
    }
    // Every one is caught before anything is loaded.
    assert!(new_programs(&before).is_empty());
}

/// SIGTERM and SIGINT: exit 0, every program detached.
#[test]
fn signals_detach_and_exit_zero() {
    if !require_root_or_skip() {
        return;
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let before = program_ids();
        let d = start_daemon(&[]);
        d.scrape();
        let ours = new_programs(&before);
        assert!(!ours.is_empty(), "the daemon's programs are loaded");
        let (status, stderr) = d.stop_with(signal);
        assert_eq!(status.code(), Some(0), "signal {signal}: stderr:\n{stderr}");
        assert_unloaded(&ours, &format!("after signal {signal}"));
        eprintln!("signal {signal}: exit 0, programs {ours:?} unloaded");
    }
}

/// `zcprof_capability`: one series per capability, each exact (1) on this host, and nothing
/// else under that name.
#[test]
fn capabilities_are_exported() {
    if !require_root_or_skip() {
        return;
    }
    let d = start_daemon(&[]);
    let samples = parse(&d.scrape());
    let caps: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "zcprof_capability")
        .collect();
    let names = CAPABILITIES;
    assert_eq!(
        caps.len(),
        names.len(),
        "one series per capability: {caps:?}"
    );
    for name in names {
        let want = [("name", name), ("state", "exact")];
        let found: Vec<_> = caps
            .iter()
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "zcprof_capability{{name=\"{name}\",state=\"exact\"}}: {caps:?}"
        );
        assert_eq!(found[0].value, 1.0, "{name}");
    }
    let (status, stderr) = d.stop();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// The coarse size histogram's bucket bounds (README, `zcprof serve --help`).
const COARSE_LE: &[&str] = &[
    "0", "1", "15", "127", "1023", "4095", "16383", "65535", "262143", "1048575", "16777215",
    "+Inf",
];

/// Whether `s` belongs to a group (carries a group label) rather than to the daemon.
fn is_group_sample(s: &Sample) -> bool {
    s.labels.contains_key("comm")
}

/// `--histograms full|coarse|off` on one workload: coarse has exactly the documented bounds,
/// each equal to full's bucket of the same bound, and full's `_count` and `_sum`; off has no
/// size histogram at all. In every mode, a group exports no zero-valued series (buckets of a
/// histogram aside), so an idle group, all zeros, exports nothing.
#[test]
fn histogram_modes_agree_and_zero_series_are_left_out() {
    if !require_root_or_skip() {
        return;
    }
    let modes = ["full", "coarse", "off"];
    let daemons: Vec<Daemon> = modes
        .iter()
        .map(|m| start_daemon(&["--comm", "zcsrv-hist", "--histograms", m]))
        .collect();
    let dir = scratch_dir("serve-hist");
    run_named_child(&dir, "zcsrv-hist", &["pwrite", "1000000", "4096"]);
    let scrapes: Vec<Vec<Sample>> = daemons.iter().map(|d| parse(&d.scrape())).collect();
    let [full, coarse, off] = &scrapes[..] else {
        unreachable!()
    };
    let hist = |s: &[Sample], suffix: &str| -> BTreeMap<String, f64> {
        s.iter()
            .filter(|x| x.name == format!("zcprof_io_size_bytes{suffix}"))
            .map(|x| (series_key(x), x.value))
            .collect()
    };
    assert!(
        !off.iter()
            .any(|s| s.name.starts_with("zcprof_io_size_bytes")),
        "--histograms off exports size histograms"
    );
    assert!(
        !off.iter()
            .any(|s| s.name.ends_with("_bucket")
                && s.name != "zcprof_scrape_duration_seconds_bucket"),
        "--histograms off exports buckets"
    );
    assert!(
        !hist(full, "_count").is_empty(),
        "no size histogram in full"
    );
    assert_eq!(hist(coarse, "_count"), hist(full, "_count"));
    assert_eq!(hist(coarse, "_sum"), hist(full, "_sum"));
    // Every coarse histogram has exactly the documented bounds, each one full's bucket.
    let full_buckets = hist(full, "_bucket");
    let mut bounds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in coarse
        .iter()
        .filter(|s| s.name == "zcprof_io_size_bytes_bucket")
    {
        assert_eq!(
            full_buckets.get(&series_key(s)),
            Some(&s.value),
            "coarse bucket {s:?} differs from full's"
        );
        let mut histogram = s.labels.clone();
        let le = histogram.remove("le").expect("le label");
        bounds.entry(format!("{histogram:?}")).or_default().push(le);
    }
    assert!(!bounds.is_empty());
    for (h, les) in &bounds {
        assert_eq!(les, COARSE_LE, "bounds of {h}");
    }
    let ok = sum(
        full,
        "zcprof_io_size_bytes_count",
        &[("comm", "zcsrv-hist"), ("syscall", "pwrite64")],
    );
    assert_eq!(ok, 245.0, "244 calls of 4096 bytes and one of 576");
    // The 4096-byte calls are above 4095 and within 16383 in coarse.
    let le = |b: &str| {
        sum(
            coarse,
            "zcprof_io_size_bytes_bucket",
            &[("comm", "zcsrv-hist"), ("syscall", "pwrite64"), ("le", b)],
        )
    };
    assert_eq!((le("4095"), le("16383")), (1.0, 245.0));
    for (mode, s) in modes.iter().zip(&scrapes) {
        let zeros: Vec<&Sample> = s
            .iter()
            .filter(|x| is_group_sample(x) && x.value == 0.0 && !x.name.ends_with("_bucket"))
            .collect();
        assert!(
            zeros.is_empty(),
            "--histograms {mode}: zero series {zeros:?}"
        );
        // Every group exported has something to show; zcprof_groups counts them all.
        let exported: std::collections::BTreeSet<&str> = s
            .iter()
            .filter_map(|x| x.labels.get("comm").map(String::as_str))
            .collect();
        assert!(exported.len() as f64 <= sum(s, "zcprof_groups", &[]));
        assert!(exported.contains("zcsrv-hist"));
    }
    for d in daemons {
        let (status, _) = d.stop();
        assert_eq!(status.code(), Some(0));
    }
}

/// GET /metrics with `accept`: (status, head, body).
fn get_with_accept(addr: &str, accept: &str) -> (u16, String, String) {
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: zcprof\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8(buf).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// The value of header `name` (lower case) in `head`.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        (n.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
    })
}

/// Checks the OpenMetrics text format's structure (promtool 2.42 reads only the classic text):
/// metadata before samples, one block per family, counter samples `_total`/`_created`,
/// histogram samples `_bucket` (ascending canonical-float `le`, non-decreasing counts, ending
/// at +Inf equal to `_count`), `_count`, `_sum`, `_created`, units as name suffixes, one final
/// `# EOF`.
fn check_openmetrics(body: &str) {
    assert!(body.ends_with("# EOF\n"), "no final # EOF");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("# EOF")).count(),
        1,
        "# EOF more than once"
    );
    let mut seen = std::collections::BTreeSet::new();
    let mut family: Option<(String, String)> = None;
    let mut samples_started = false;
    // Per histogram series (labels but le): last le, last count.
    let mut buckets: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut inf: BTreeMap<String, f64> = BTreeMap::new();
    for line in &lines[..lines.len() - 1] {
        assert!(!line.is_empty(), "empty line");
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap(), parts.next().expect("a name"));
            let arg = parts.next().unwrap_or("");
            if family.as_ref().is_none_or(|(f, _)| f != name) {
                assert!(seen.insert(name.to_string()), "family {name} split");
                family = Some((name.to_string(), String::new()));
                samples_started = false;
            }
            assert!(!samples_started, "metadata after samples: {line}");
            let f = family.as_mut().unwrap();
            match kw {
                "HELP" => {}
                "TYPE" => {
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "stateset",
                            "unknown"
                        ]
                        .contains(&arg),
                        "{line}"
                    );
                    f.1 = arg.to_string();
                }
                "UNIT" => assert!(name.ends_with(&format!("_{arg}")), "{line}"),
                _ => panic!("unknown metadata: {line}"),
            }
            continue;
        }
        samples_started = true;
        let (fam, kind) = family.as_ref().expect("sample before any TYPE");
        let s = &parse(line)[0];
        let suffix = s.name.strip_prefix(fam.as_str()).unwrap_or_else(|| {
            panic!("sample {line} outside its family {fam}");
        });
        let allowed: &[&str] = match kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "gauge" => &[""],
            k => panic!("unexpected type {k}"),
        };
        assert!(allowed.contains(&suffix), "{line}: not a {kind} sample");
        if suffix == "_bucket" {
            let le_text = s.labels.get("le").expect("le");
            assert!(
                le_text == "+Inf" || le_text.contains('.') || le_text.contains('e'),
                "le not a canonical float: {line}"
            );
            let mut key = s.labels.clone();
            key.remove("le");
            let key = format!("{}{key:?}", fam);
            let le: f64 = if le_text == "+Inf" {
                f64::INFINITY
            } else {
                le_text.parse().unwrap()
            };
            if let Some((last_le, last_n)) = buckets.get(&key) {
                assert!(
                    le > *last_le && s.value >= *last_n,
                    "{line}: buckets out of order"
                );
            }
            buckets.insert(key.clone(), (le, s.value));
            if le.is_infinite() {
                inf.insert(key, s.value);
            }
        } else if suffix == "_count" {
            let key = format!("{}{:?}", fam, s.labels);
            assert_eq!(
                inf.get(&key),
                Some(&s.value),
                "{line}: +Inf bucket != count"
            );
        }
    }
    assert!(seen.len() > 10, "too few families: {seen:?}");
}

/// `Accept: application/openmetrics-text` gets OpenMetrics (its content type, `# EOF`, a valid
/// structure, the same counts); any other Accept the classic text, which promtool accepts.
#[test]
fn openmetrics_when_accepted_classic_text_otherwise() {
    if !require_root_or_skip() {
        return;
    }
    let d = start_daemon(&["--comm", "zcsrv-om"]);
    let dir = scratch_dir("serve-om");
    run_named_child(&dir, "zcsrv-om", &["pwrite", "100000", "4096"]);
    let (status, head, om) = get_with_accept(
        &d.addr,
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert_eq!(status, 200);
    assert_eq!(
        header_value(&head, "content-type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    check_openmetrics(&om);
    assert!(om.contains("# TYPE zcprof_ledger_bytes counter\n# UNIT zcprof_ledger_bytes bytes\n"));
    assert!(om.contains("\nzcprof_collections_created "));
    let (status, head, text) = get_with_accept(&d.addr, "text/plain;version=0.0.4");
    assert_eq!(status, 200);
    assert_eq!(
        header_value(&head, "content-type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    promtool_accepts(&text, "classic text");
    // The workload's counts are the same in both formats (it has finished).
    let (o, t) = (parse(&om), parse(&text));
    for name in [
        "zcprof_transfer_calls_total",
        "zcprof_ledger_bytes_total",
        "zcprof_io_size_bytes_count",
        "zcprof_io_size_bytes_sum",
    ] {
        let g = [("comm", "zcsrv-om"), ("syscall", "pwrite64")];
        assert_eq!(sum(&o, name, &g), sum(&t, name, &g), "{name}");
        assert!(sum(&t, name, &g) > 0.0, "{name}");
    }
    let (status, _) = d.stop();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn latency_is_exported_in_seconds() {
    if !require_root_or_skip() {
        return;
    }
    let d = start_daemon(&["--latency"]);
    let dir = scratch_dir("serve-latency");
    let t = run_named_child(&dir, "zcsrv-lat", &["pipe-wait", "200"]);
    // The worker timed its one blocked read from user space, around the syscall.
    let outside = t.0["calls"]["read"]["ns"].as_u64().unwrap() as f64 * 1e-9;
    let s = parse(&d.scrape());
    let read = [("comm", "zcsrv-lat"), ("syscall", "read")];
    let seconds = sum(&s, "zcprof_transfer_seconds_total", &read);
    // Inside the kernel, so a little less than the worker measured around the call; the
    // supervisor's other reads (of /proc) take microseconds. (The writer renames itself.)
    assert!(
        (0.18..=outside + 0.005).contains(&seconds),
        "read time {seconds} s exported, the worker measured {outside} s around its read"
    );
    let le = |b: &str| {
        let mut want = read.to_vec();
        want.push(("le", b));
        sum(&s, "zcprof_transfer_duration_seconds_bucket", &want)
    };
    // Coarse bounds (the default): the 200 ms read is the one read above 134 ms.
    assert_eq!(
        le("1.073741823") - le("0.134217727"),
        1.0,
        "one read between 134 ms and 1.07 s"
    );
    assert!(
        sum(
            &s,
            "zcprof_syscall_time_seconds_total",
            &[("comm", "zcsrv-lat")]
        ) >= seconds
    );
    // A daemon without --latency exports no time at all.
    drop(d);
    let plain = start_daemon(&[]);
    run_named_child(&dir, "zcsrv-lat", &["pipe-wait", "1"]);
    let s = parse(&plain.scrape());
    for name in [
        "zcprof_transfer_seconds_total",
        "zcprof_transfer_duration_seconds_count",
        "zcprof_syscall_time_seconds_total",
    ] {
        assert!(
            s.iter().all(|x| x.name != name),
            "{name} exported without --latency"
        );
    }
}
