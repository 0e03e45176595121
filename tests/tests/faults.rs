//! Faults (issue 14): two zcprof instances at once, a tiny RLIMIT_MEMLOCK, a memory cgroup too
//! small for the maps, and targets whose /proc entries vanish mid-read. Each checks with
//! bpftool afterwards that no zcprof program or map is left loaded.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use zcprof_tests::*;

const CHILD: &str = env!("CARGO_BIN_EXE_zc-child");

fn assert_one_error_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    assert!(
        lines[0].starts_with("zcprof: error: "),
        "expected 'zcprof: error: ...', got:\n{stderr}"
    );
}

/// Waits for `c` (killing it after `timeout`) and returns (status, stdout, stderr).
fn finish(
    mut c: Child,
    timeout: Duration,
    what: &str,
) -> (std::process::ExitStatus, String, String) {
    let start = Instant::now();
    while c.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > timeout {
            let _ = c.kill();
            panic!("{what} did not finish in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = c.wait_with_output().expect("wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of zc-child named `name` (the command name its processes get), so that a host-wide
/// `zcprof serve` can tell its counts from everyone else's.
fn named_child(dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(CHILD, &dst).expect("copy zc-child");
    dst
}

/// A running `zcprof serve` on a free loopback port.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start() -> Serve {
        let mut child = Command::new(zcprof_bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("zcprof serve");
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("zcprof: serving http://") {
                    let _ = tx.send(Ok(rest.trim_end_matches("/metrics").to_string()));
                } else {
                    let _ = tx.send(Err(line));
                }
            }
        });
        let mut said = String::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Ok(addr)) => return Serve { child, addr },
                Ok(Err(line)) => said.push_str(&format!("{line}\n")),
                Err(_) => panic!("zcprof serve did not start serving:\n{said}"),
            }
        }
    }

    /// GET /metrics.
    fn scrape(&self) -> String {
        let mut s = TcpStream::connect(&self.addr).expect("connect to zcprof serve");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: z\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read the scrape");
        assert!(text.starts_with("HTTP/1.1 200"), "scrape: {text}");
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap()
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "serve did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sum of the samples of metric `name` whose labels include every `key="value"` of `want`.
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            let all = want
                .iter()
                .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")));
            (n == name && all).then(|| value.parse::<f64>().expect("sample value") as u64)
        })
        .sum()
}

/// `zcprof run` of a workload while `zcprof serve` counts the whole host: the run's report
/// equals the workload's own tally, and so do serve's metrics for the workload's command name.
/// Two instances' programs on the same hooks do not disturb each other.
#[test]
fn run_and_serve_at_once_are_both_exact() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_objects();
    let serve = Serve::start();
    let dir = scratch_dir("faults-run-serve");
    let exe = named_child(&dir, "zcflt-both");
    let (n, chunk) = (1_000_000u64, 4096u64);
    let run = run_child(
        exe.to_str().unwrap(),
        &["pwrite", &n.to_string(), &chunk.to_string()],
    );
    let (calls, bytes, errors) = run.tally.cell("pwrite64");
    assert_eq!((bytes, errors), (n, 0));
    // zcprof run: the worker's cell and ledger are the tally's.
    let w = run.worker();
    assert_cell(w, "pwrite64", "cpu_user_to_kernel", calls, bytes, errors);
    assert_eq!(u(&w["ledger"], "cpu_user_to_kernel"), bytes);
    // zcprof serve, at the same time: the same numbers under the command name.
    let text = serve.scrape();
    let g = [("comm", "zcflt-both"), ("syscall", "pwrite64")];
    let served = (
        metric(&text, "zcprof_transfer_calls_total", &g),
        metric(&text, "zcprof_ledger_bytes_total", &g),
        metric(&text, "zcprof_transfer_errors_total", &g),
    );
    eprintln!(
        "tally: pwrite64 calls {calls} bytes {bytes} errors {errors}; run: calls {} bytes {}; \
         serve: calls {} bytes {} errors {}",
        u(
            transfer(w, "pwrite64", "cpu_user_to_kernel").unwrap(),
            "calls"
        ),
        u(&w["ledger"], "cpu_user_to_kernel"),
        served.0,
        served.1,
        served.2
    );
    assert_eq!(served, (calls, bytes, errors), "serve vs the tally");
    for reason in ["thread_table_full", "transfer_table_full", "read_failed"] {
        assert_eq!(
            metric(&text, "zcprof_events_lost_total", &[("reason", reason)]),
            0,
            "serve lost events ({reason})"
        );
        assert_eq!(run.doc["lost"][reason], 0, "run lost events ({reason})");
    }
    let status = serve.stop();
    assert!(status.success(), "zcprof serve: {status}");
    assert_nothing_left(&before, "after run and serve");
}

/// Starts `zcprof attach --pid PID --json` with stderr in `err` (to see when it attached).
fn spawn_attach(pid: u64, err: &Path) -> Child {
    Command::new(zcprof_bin())
        .args(["attach", "--pid", &pid.to_string(), "--json"])
        .args(["--duration", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .expect("zcprof attach")
}

/// Two `zcprof attach --pid` of the same process at once: each counts the reads made after
/// both attached, exactly, and neither counts the writes made before.
#[test]
fn two_attaches_of_one_process_are_both_exact() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_objects();
    let dir = scratch_dir("faults-attach2");
    let tally = dir.join("tally.json");
    let go = dir.join("go");
    let (mut child, worker) =
        spawn_waiting_child(CHILD, &dir, &tally, &go, &["read-file", "1000003", "65536"]);
    let errs = [dir.join("a.err"), dir.join("b.err")];
    let zs: Vec<Child> = errs.iter().map(|e| spawn_attach(worker, e)).collect();
    for e in &errs {
        wait_for("both attaches", Duration::from_secs(60), || {
            std::fs::read_to_string(e).is_ok_and(|s| s.contains("zcprof: attached to"))
        });
    }
    std::fs::write(&go, b"").unwrap();
    assert!(child.wait().unwrap().success(), "zc-child failed");
    let t = Tally::read(&tally);
    assert_eq!(t.worker_pid(), worker);
    let (calls, bytes, errors) = t.cell("read");
    assert_eq!(bytes, 1_000_003);
    for (z, e) in zs.into_iter().zip(&errs) {
        let (status, stdout, _) = finish(z, Duration::from_secs(30), "zcprof attach");
        let stderr = std::fs::read_to_string(e).unwrap();
        assert!(status.success(), "zcprof attach: {status}\n{stderr}");
        let doc: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|err| panic!("attach --json is not JSON ({err}):\n{stdout}"));
        let w = process(&doc, worker);
        eprintln!(
            "tally: read calls {calls} bytes {bytes}; attach: {}",
            transfer(w, "read", "cpu_kernel_to_user").unwrap()
        );
        assert_cell(w, "read", "cpu_kernel_to_user", calls, bytes, errors);
        assert_eq!(u(&w["ledger"], "cpu_kernel_to_user"), bytes);
        assert!(
            transfers(w, "write").is_empty(),
            "writes before the attach counted: {w}"
        );
        assert_eq!(doc["lost"]["thread_table_full"], 0);
    }
    assert_nothing_left(&before, "after two attaches");
}

/// Whether this kernel charges BPF memory to RLIMIT_MEMLOCK (Linux before 5.11).
fn kernel_charges_memlock() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (5, 11)
}

/// A 64 KiB RLIMIT_MEMLOCK that zcprof cannot raise (hard limit 64 KiB, CAP_SYS_RESOURCE
/// dropped from the bounding set, so that root loses it at exec): on a kernel that charges BPF
/// memory to the limit, one error line naming RLIMIT_MEMLOCK, its value and the remedy; on
/// later kernels (memory cgroup accounting) the run works. With CAP_SYS_RESOURCE zcprof raises
/// the limit and works on every kernel.
#[test]
fn tiny_memlock_works_or_names_the_limit() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_objects();
    let bin = zcprof_bin();
    let bin = bin.to_str().unwrap();
    let no_sys_resource = [
        "--inh-caps=-sys_resource",
        "--bounding-set=-sys_resource",
        "--",
    ];
    let caps = Command::new("prlimit")
        .args(["--memlock=65536:65536", "setpriv"])
        .args(no_sys_resource)
        .args(["sh", "-c", "ulimit -l; grep CapEff /proc/self/status"])
        .output()
        .expect("prlimit/setpriv");
    let caps = String::from_utf8_lossy(&caps.stdout).into_owned();
    let eff = caps
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no CapEff in {caps}"));
    assert_eq!(eff & (1 << 24), 0, "CAP_SYS_RESOURCE is dropped: {caps}");
    assert!(caps.starts_with("64\n"), "ulimit -l is 64 KiB: {caps}");

    let out = Command::new("prlimit")
        .args(["--memlock=65536:65536", "setpriv"])
        .args(no_sys_resource)
        .args([bin, "run", "--", "true"])
        .output()
        .expect("prlimit");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "memlock 64 KiB, no CAP_SYS_RESOURCE: {}\n{stderr}",
        out.status
    );
    if kernel_charges_memlock() {
        assert!(!out.status.success(), "ran with 64 KiB of memlock");
        assert_one_error_line(&stderr);
        assert!(
            stderr.contains("RLIMIT_MEMLOCK is 64.0 KiB")
                && stderr.contains("ulimit -l unlimited")
                && stderr.contains("LimitMEMLOCK=infinity"),
            "names the limit, its value and the remedy:\n{stderr}"
        );
    } else {
        assert!(
            out.status.success(),
            "this kernel charges the memory cgroup, not RLIMIT_MEMLOCK: the run must work\n\
             {stderr}"
        );
    }
    let out = Command::new("prlimit")
        .args(["--memlock=65536:65536", bin, "run", "--", "true"])
        .output()
        .expect("prlimit");
    assert!(
        out.status.success(),
        "with CAP_SYS_RESOURCE zcprof raises the limit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left(&before, "after the memlock runs");
}

/// A memory cgroup of our own (v1 memory controller on a hybrid host, else cgroup v2) with
/// `limit` bytes: (its directory, the file that sets the limit). Removed by the caller.
fn memory_cgroup(limit: u64) -> (PathBuf, &'static str) {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let mount = |fstype: &str, option: Option<&str>| {
        mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| {
                f.len() > 3
                    && f[2] == fstype
                    && option.is_none_or(|o| f[3].split(',').any(|x| x == o))
            })
            .map(|f| PathBuf::from(f[1]))
    };
    let name = format!("zcprof-faults-{}", std::process::id());
    let v1 = own.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
        ctl.split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    });
    let (dir, file) = match v1 {
        Some(path) => (
            mount("cgroup", Some("memory"))
                .expect("the v1 memory controller's mount")
                .join(path.trim_start_matches('/'))
                .join(name),
            "memory.limit_in_bytes",
        ),
        None => {
            let root = mount("cgroup2", None).expect("a cgroup2 mount");
            // Children of the root may use the memory controller once it is enabled there.
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
            (root.join(name), "memory.max")
        }
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    std::fs::write(dir.join(file), limit.to_string())
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()));
    (dir, file)
}

/// A memory cgroup too small for the thread table (160 MiB for `--max-threads 262144`, about
/// 350 MiB): one error line naming the map, its size, that memory is limited and the cgroup's
/// limit. Limits of a few MiB do not reach map creation: the kernel's OOM killer ends zcprof
/// first (it peaks at about 76 MiB at the defaults, the kernel's BTF parsed and its maps).
#[test]
fn memory_cgroup_too_small_names_the_map_and_the_limit() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_objects();
    let (dir, file) = memory_cgroup(160 << 20);
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} run --max-threads 262144 -- true",
        dir.display(),
        zcprof_bin().display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = std::fs::remove_dir(&dir);
    eprintln!("{}: {stderr}", out.status);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_one_error_line(&stderr);
    for part in [
        "cannot create BPF map THREADS (262145 entries, at least ",
        "out of memory",
        &format!("allows 160.0 MiB ({file})"),
        "MemoryMax=",
        "--max-threads",
    ] {
        assert!(stderr.contains(part), "says {part:?}:\n{stderr}");
    }
    assert_nothing_left(&before, "after the refused map");
}

/// A C program whose threads are born and die in a tight loop (two loops of 16 at a time), so
/// that /proc/PID/task lists threads that are gone by the time their status is read.
fn thread_churner(dir: &Path) -> PathBuf {
    let src = dir.join("churn.c");
    let exe = dir.join("zcflt-churn");
    std::fs::write(
        &src,
        r#"
#include <pthread.h>
static void *nothing(void *arg) { return arg; }
static void *churn(void *arg) {
    for (;;) {
        pthread_t t[16];
        for (int i = 0; i < 16; i++) pthread_create(&t[i], 0, nothing, 0);
        for (int i = 0; i < 16; i++) pthread_join(t[i], 0);
    }
    return arg;
}
int main(void) {
    pthread_t a;
    pthread_create(&a, 0, churn, 0);
    churn(0);
}
"#,
    )
    .unwrap();
    let status = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("cc (the thread churner is a C program)");
    assert!(status.success(), "cc failed");
    exe
}

/// `zcprof attach --pid` of a process whose threads come and go faster than /proc can be
/// read, twelve times: never an error, never a panic, the report parses, and threads that
/// vanished between the listing and the read are reported as a note, not entered.
#[test]
fn attach_survives_threads_vanishing_mid_read() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_objects();
    let dir = scratch_dir("faults-churn");
    let exe = thread_churner(&dir);
    let mut churn = Command::new(&exe)
        .stdin(Stdio::null())
        .spawn()
        .expect("churner");
    let pid = churn.id().to_string();
    let mut vanished = 0u64;
    for i in 0..12 {
        let out = zcprof(&["attach", "--pid", &pid, "--json", "--duration", "300ms"]);
        assert!(
            out.status.success(),
            "attach #{i}: {}\n{}",
            out.status,
            out.stderr
        );
        assert!(
            !out.stderr.contains("error") && !out.stderr.contains("panicked"),
            "attach #{i}:\n{}",
            out.stderr
        );
        let doc = parse_json(&out);
        assert!(
            find_process(&doc, u64::from(churn.id())).is_some(),
            "#{i}: {doc}"
        );
        vanished += out
            .stderr
            .lines()
            .filter_map(|l| l.strip_prefix("zcprof: note: "))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    eprintln!("threads that vanished mid-read over 12 attaches: {vanished}");
    let _ = churn.kill();
    let _ = churn.wait();
    assert_nothing_left(&before, "after the attaches");
}

/// `zcprof attach --pid` of processes that exit (and are reaped) while zcprof starts, at
/// delays from before the programs load to after the attach: either the summary with
/// "process N exited" and status 0, or one error line saying the process exited before zcprof
/// could attach. Never an error about /proc, never a panic.
#[test]
fn attach_to_a_process_that_exits_during_start_up() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_objects();
    let mut outcomes = Vec::new();
    for delay_ms in [0u64, 50, 200, 400, 800, 1500, 3000] {
        let mut target = Command::new("sleep")
            .arg(format!("{}", delay_ms as f64 / 1000.0))
            .spawn()
            .expect("sleep");
        let pid = target.id().to_string();
        let z = Command::new(zcprof_bin())
            .args(["attach", "--pid", &pid, "--json", "--duration", "20s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("zcprof attach");
        // Reaped as soon as it exits: its /proc entries vanish.
        let _ = target.wait();
        let (status, stdout, stderr) = finish(z, Duration::from_secs(60), "zcprof attach");
        assert!(!stderr.contains("panicked"), "{delay_ms} ms:\n{stderr}");
        if status.success() {
            assert!(
                stderr.contains(&format!("process {pid} exited")),
                "{delay_ms} ms: says the process exited:\n{stderr}"
            );
            let _: serde_json::Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{delay_ms} ms: not JSON ({e}):\n{stdout}"));
            outcomes.push(format!("{delay_ms} ms: attached, then exited"));
        } else {
            assert_eq!(status.code(), Some(1), "{delay_ms} ms:\n{stderr}");
            assert_one_error_line(&stderr);
            // Reaped before zcprof looked for it at all: the pid names no process.
            assert!(
                stderr.contains(&format!("process {pid} exited while zcprof was starting"))
                    || stderr.contains(&format!("no process with pid {pid}")),
                "{delay_ms} ms: says the process exited during start-up:\n{stderr}"
            );
            outcomes.push(format!("{delay_ms} ms: exited during start-up"));
        }
    }
    eprintln!("{outcomes:#?}");
    assert_nothing_left(&before, "after the attaches");
}
