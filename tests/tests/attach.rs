//! `zcprof attach`: counts from the moment of attach, only the given processes.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use zcprof_tests::*;

const CHILD: &str = env!("CARGO_BIN_EXE_zc-child");

fn wait_child(c: &mut Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = c.try_wait().expect("try_wait") {
            return s;
        }
        if start.elapsed() > timeout {
            let _ = c.kill();
            panic!("{what} did not finish in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_error_line(stderr: &str) {
    assert!(
        stderr.lines().any(|l| l.starts_with("zcprof: error: ")),
        "expected a line starting with 'zcprof: error: ', got:\n{stderr}"
    );
}

/// `zcprof attach --json --duration 60s --pid WORKER [extra]` on a `wait-then` worker: lets
/// the worker go once zcprof is attached, and returns zcprof's document, its stderr and the
/// worker's tally once both have ended.
fn attach_to_waiting(
    tag: &str,
    extra: &[&str],
    action: &[&str],
) -> (serde_json::Value, String, Tally) {
    let before = zcprof_program_ids();
    let dir = scratch_dir(tag);
    let tally = dir.join("tally.json");
    let go = dir.join("go");
    let (mut child, worker) = spawn_waiting_child(CHILD, &dir, &tally, &go, action);
    let pid = worker.to_string();
    let mut args = vec!["attach", "--pid", &pid, "--json", "--duration", "60s"];
    args.extend_from_slice(extra);
    let mut z = Command::new(zcprof_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zcprof attach");
    // The worker goes once zcprof says it watches it, not after a guess at how long that takes.
    let stderr = stderr_after_line(&mut z, ATTACHED, Duration::from_secs(60));
    assert!(
        !new_zcprof_programs_after(&before, Duration::ZERO).is_empty(),
        "attached, with no program of zcprof's loaded"
    );
    std::fs::write(&go, b"").unwrap();
    let cs = wait_child(&mut child, Duration::from_secs(60), "zc-child");
    assert!(cs.success(), "zc-child failed");
    let zs = wait_child(&mut z, Duration::from_secs(30), "zcprof attach");
    let out = z.wait_with_output().unwrap();
    let stderr = stderr.join().unwrap_or_default();
    assert!(zs.success(), "zcprof attach: {zs:?}\n{stderr}");
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("attach --json stdout is not JSON ({e})"));
    let t = Tally::read(&tally);
    assert_eq!(t.worker_pid(), worker);
    (doc, stderr, t)
}

/// `attach --latency`: the worker's one blocked read after the attach is timed, within what
/// the worker measured around it; the poll it sat in when zcprof attached is not.
#[test]
fn attach_latency_times_the_calls_after_attaching() {
    if !require_root_or_skip() {
        return;
    }
    let (doc, _, t) = attach_to_waiting("attach-latency", &["--latency"], &["pipe-wait", "200"]);
    let worker = process(&doc, t.worker_pid());
    let read = transfer(worker, "read", "cpu_kernel_to_user").expect("the read");
    let outside = t.0["calls"]["read"]["ns"].as_u64().unwrap();
    let took = u(read, "time_ns");
    assert!(
        took >= 180_000_000 && took <= outside,
        "read took {took} ns by zcprof, {outside} ns by the worker"
    );
    let timed: u64 = read["time_log2"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_u64())
        .sum();
    assert_eq!((u(read, "calls"), timed), (1, 1), "{read}");
    assert!(u(worker, "syscall_time_ns") >= took);
}

/// The worker reads/writes /dev/zero and /dev/null before the attach, polls for a file, then
/// reads a file: only the part after the attach is counted, and it is counted exactly.
#[test]
fn attach_counts_only_after_attach() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_program_ids();
    let (doc, stderr, t) = attach_to_waiting("attach", &[], &["read-file", "1000003", "65536"]);
    let worker = t.worker_pid();
    assert!(
        stderr.contains(&format!("process {worker} exited")),
        "stderr should say the target exited:\n{stderr}"
    );
    let w = process(&doc, worker);
    assert!(
        find_process(&doc, t.supervisor_pid()).is_none(),
        "the supervisor was not attached to"
    );
    // After the attach: exactly the file reads.
    let (calls, bytes, errors) = t.cell("read");
    assert_cell(w, "read", "cpu_kernel_to_user", calls, bytes, errors);
    // Before it: 50 writes to /dev/null and 50 reads of /dev/zero, not counted.
    assert_eq!(t.phase_cell("before", "write").0, 50);
    assert!(
        transfers(w, "write").is_empty(),
        "pre-attach writes were counted: {w}"
    );
    assert_eq!(u(&w["ledger"], "cpu_user_to_kernel"), 0);
    assert_eq!(u(&w["ledger"], "cpu_kernel_to_user"), bytes);
    // Syscalls: the reads, the tail of the polling (access + clock_nanosleep), exit_group.
    let waits = t.phase_cell("wait", "access").0 + t.phase_cell("wait", "clock_nanosleep").0;
    let s = u(w, "syscalls");
    assert!(
        (calls + 2..=calls + 1 + waits).contains(&s),
        "syscalls {s}: reads {calls} + last access + exit_group, + at most {waits} polls"
    );
    assert!(
        new_zcprof_programs_after(&before, std::time::Duration::from_secs(3)).is_empty(),
        "zcprof left programs loaded"
    );
}

#[test]
fn attach_to_nonexistent_pid_fails() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_program_ids();
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = (2..max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let out = zcprof(&["attach", "--pid", &pid.to_string(), "--duration", "2s"]);
    assert!(
        !out.status.success(),
        "attach to missing pid {pid} succeeded"
    );
    assert_error_line(&out.stderr);
    assert!(
        out.stderr.contains(&pid.to_string()),
        "the error names the pid:\n{}",
        out.stderr
    );
    assert!(new_zcprof_programs_after(&before, std::time::Duration::from_secs(3)).is_empty());
}

#[test]
fn bad_interval_is_a_usage_error() {
    if !require_root_or_skip() {
        return;
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() }.to_string();
    for bad in ["0s", "abc"] {
        let out = zcprof(&[
            "attach",
            "--pid",
            &me,
            "--interval",
            bad,
            "--duration",
            "1s",
        ]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--interval {bad}: {}",
            out.stderr
        );
        assert_error_line(&out.stderr);
    }
}

#[test]
fn attach_to_init_for_one_second() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_program_ids();
    let start = Instant::now();
    let out = zcprof(&["attach", "--pid", "1", "--duration", "1s", "--json"]);
    let took = start.elapsed();
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);
    let doc = parse_json(&out);
    for p in processes(&doc) {
        assert_eq!(u(p, "pid"), 1, "without --children only pid 1: {p}");
    }
    assert!(took >= Duration::from_millis(900), "ended after {took:?}");
    assert!(took < Duration::from_secs(30), "ended after {took:?}");
    assert!(
        new_zcprof_programs_after(&before, std::time::Duration::from_secs(3)).is_empty(),
        "zcprof left programs loaded"
    );
}

/// Reads `Uid:` and `CapEff:` of a process from /proc.
fn uid_and_caps(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("CapEff:"))
}

/// Once its probes are attached, zcprof runs as nobody with no capabilities, for `attach`
/// and for `run` (whose command keeps the identity zcprof was started with), and still counts.
#[test]
fn privileges_are_dropped_after_attaching() {
    if !require_root_or_skip() {
        return;
    }
    let mut target = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let tpid = target.id().to_string();
    for args in [
        vec![
            "attach",
            "--pid",
            tpid.as_str(),
            "--duration",
            "4s",
            "--json",
        ],
        vec!["run", "--json", "--", "sh", "-c", "sleep 4; id -u"],
    ] {
        let mut z = Command::new(zcprof_bin())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn zcprof");
        // Privileges go once the programs are attached; how long loading takes is the
        // machine's business (a slow one took more than the 2 s this test once slept).
        let start = Instant::now();
        while uid_and_caps(z.id()).0 != "65534 65534 65534 65534"
            && start.elapsed() < Duration::from_secs(30)
            && z.try_wait().expect("try_wait").is_none()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (uid, caps) = uid_and_caps(z.id());
        assert_eq!(
            uid, "65534 65534 65534 65534",
            "{args:?}: zcprof's uids after attaching"
        );
        assert_eq!(
            caps, "0000000000000000",
            "{args:?}: zcprof's effective capabilities"
        );
        let status = wait_child(&mut z, Duration::from_secs(30), "zcprof");
        let mut out = String::new();
        std::io::Read::read_to_string(z.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert!(status.success(), "{args:?}: {status:?}\n{out}");
        if args[0] == "run" {
            // The command's own output comes first: it ran as root.
            assert!(out.starts_with("0\n"), "the command kept root: {out}");
            let doc: serde_json::Value = serde_json::from_str(&out[2..]).expect("zcprof's JSON");
            assert!(
                u(&processes(&doc)[0], "syscalls") > 0,
                "counted after the drop"
            );
        } else {
            let doc: serde_json::Value = serde_json::from_str(&out).expect("zcprof's JSON");
            assert!(
                processes(&doc)
                    .iter()
                    .all(|p| p["pid"].as_u64() == tpid.parse().ok())
            );
        }
    }
    let _ = target.kill();
    let _ = target.wait();
}

/// One interval block of `zcprof attach`'s output: its rows (first column, counts of vol cs,
/// invol cs, faults) and its total line's.
struct Interval {
    rows: Vec<(String, [u64; 3])>,
    total: [u64; 3],
    total_label: String,
}

/// The interval blocks of attach's stdout: a time-stamp line (`HH:MM:SS (…)`), rows, and a
/// `total` line. The last three columns are plain counts of the interval.
fn intervals(stdout: &str) -> Vec<Interval> {
    let counts = |l: &str| -> [u64; 3] {
        let f: Vec<u64> = l
            .split_whitespace()
            .rev()
            .take(3)
            .map(|v| v.parse().unwrap_or_else(|_| panic!("a count in {l:?}")))
            .collect();
        [f[2], f[1], f[0]]
    };
    let mut out: Vec<Interval> = Vec::new();
    let mut open = false;
    for l in stdout.lines() {
        let stamp = l.len() > 8 && l.as_bytes()[2] == b':' && l.as_bytes()[5] == b':';
        if stamp {
            out.push(Interval {
                rows: Vec::new(),
                total: [0; 3],
                total_label: String::new(),
            });
            open = true;
        } else if open && l.trim_start().starts_with("total") {
            let last = out.last_mut().expect("a block");
            last.total = counts(l);
            last.total_label = l.chars().skip(9).take(15).collect::<String>().trim().into();
            open = false;
        } else if open {
            let first = l.split_whitespace().next().unwrap_or("").to_string();
            out.last_mut()
                .expect("a block")
                .rows
                .push((first, counts(l)));
        }
    }
    out
}

/// A shell loop whose children live about 0.1 s each: every interval lists only the processes
/// active in it (each short child in at most two consecutive intervals, never after), sorted
/// and capped by --top, and its total line is the sum of all active processes, shown or not.
#[test]
fn attach_intervals_list_active_processes_and_a_total() {
    if !require_root_or_skip() {
        return;
    }
    /// Stops the loop however the test ends (it holds the test's stdout open).
    struct Loop(Child);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let tree = Loop(
        Command::new("sh")
            .args([
                "-c",
                "while :; do dd if=/dev/zero of=/dev/null bs=4k count=20000 2>/dev/null; \
                 sleep 0.05; done",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("sh"),
    );
    let pid = tree.0.id().to_string();
    let run = |top: &str| {
        let out = Command::new(zcprof_bin())
            .args(["attach", "--pid", &pid, "--children", "--interval", "300ms"])
            .args(["--duration", "3s", "--top", top, "--no-drop-privileges"])
            .output()
            .expect("zcprof attach");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        intervals(&String::from_utf8_lossy(&out.stdout))
    };
    let all = run("1000");
    let one = run("1");
    drop(tree);

    assert!(all.len() >= 5, "intervals: {}", all.len());
    let mut last_seen: std::collections::HashMap<String, usize> = Default::default();
    for (i, b) in all.iter().enumerate() {
        let mut sum = [0u64; 3];
        for (pid, c) in &b.rows {
            for k in 0..3 {
                sum[k] += c[k];
            }
            if let Some(prev) = last_seen.insert(pid.clone(), i) {
                assert_eq!(
                    prev + 1,
                    i,
                    "pid {pid} came back after an interval without it"
                );
            }
        }
        assert_eq!(
            b.total, sum,
            "interval {i}: total = the rows' sum (all shown)"
        );
        assert!(
            b.total_label.is_empty(),
            "nothing hidden: {:?}",
            b.total_label
        );
    }
    let spans: Vec<usize> = last_seen.values().copied().collect();
    assert!(
        spans.len() >= 5,
        "many short-lived children were seen: {}",
        spans.len()
    );
    assert!(
        one.iter().all(|b| b.rows.len() <= 1),
        "--top 1 shows at most one row per interval"
    );
    assert!(
        one.iter()
            .any(|b| b.total_label.starts_with('+') && b.total_label.ends_with("more")),
        "--top 1 hides some active processes and says how many"
    );
}

/// `attach --comm REGEX` watches every process with a matching name, including ones started
/// after it attached, and reports only those: a child started under a unique name is counted
/// (its getpid calls, as its own tally says), and nothing else is reported.
#[test]
fn attach_by_comm_reports_matching_processes_started_later() {
    if !require_root_or_skip() {
        return;
    }
    let dir = scratch_dir("attach-comm");
    let name = format!("zcsel{}", std::process::id() % 100_000);
    let exe = dir.join(&name);
    let _ = std::fs::remove_file(&exe);
    std::os::unix::fs::symlink(CHILD, &exe).expect("symlink");
    let mut attach = Command::new(zcprof_bin())
        .args(["attach", "--comm", &format!("{name}.*"), "--duration", "4s"])
        .args(["--interval", "200ms", "--json", "--no-drop-privileges"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("zcprof attach");
    let mut err = std::io::BufReader::new(attach.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.starts_with("zcprof: attached") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut err, &mut line).expect("stderr");
        assert!(n > 0, "attach ended before attaching");
    }
    let tally_path = dir.join("tally.json");
    let st = Command::new(&exe)
        .args([tally_path.to_str().unwrap(), "getpid", "5000"])
        .env("ZC_CHILD_DIR", &dir)
        .status()
        .expect("child");
    assert!(st.success());
    let out = attach.wait_with_output().expect("attach output");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("attach --json output");
    let tally = Tally::read(&tally_path);
    assert_eq!(tally.cell("getpid").0, 5000);
    let procs = processes(&doc);
    assert!(
        procs
            .iter()
            .all(|p| p["comm"].as_str().is_some_and(|c| c.starts_with(&name))),
        "only {name}* processes: {procs:?}"
    );
    let worker = process(&doc, tally.worker_pid());
    let syscalls = u(worker, "syscalls");
    assert!(
        (5000..5100).contains(&syscalls),
        "the worker's 5000 getpid and its few others: {syscalls}"
    );
}
