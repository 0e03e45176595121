//! Foundation: syscall totals, context switches, page faults, process selection, exit codes,
//! checked against strace, the child's own tally and the worker's wait4 rusage.

use std::process::{Command, Stdio};

use serde_json::Value;
use zcprof_tests::*;

const CHILD: &str = env!("CARGO_BIN_EXE_zc-child");

/// What strace says dd does, generalised from a small `count` to any `count` of `bs`-byte
/// records: the data reads/writes are exactly one per record; everything else (the dynamic
/// loader reading libc's ELF header, locale files, the final messages on stderr) is a fixed
/// set of extra calls independent of `count`.
struct DdShape {
    /// read(2) calls other than the data reads: their return values.
    other_reads: Vec<i64>,
    /// write(2) calls other than the data writes: their return values (the stderr messages,
    /// whose lengths depend on count and timing: only their number and the 1-byte "\n" are
    /// fixed).
    other_writes: Vec<i64>,
}

fn dd_args(bs: u64, count: u64) -> Vec<String> {
    vec![
        "dd".into(),
        "if=/dev/zero".into(),
        "of=/dev/null".into(),
        format!("bs={bs}"),
        format!("count={count}"),
    ]
}

fn dd_shape(bs: u64) -> DdShape {
    let small = 1000;
    let args = dd_args(bs, small);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = strace(Some("read,write"), &argv, &[("LC_ALL", "C")]);
    assert!(s.status.success(), "strace dd failed");
    assert_eq!(
        s.fd_calls.len(),
        1,
        "dd is one process: {:?}",
        s.calls.keys()
    );
    let calls = s.fd_calls.values().next().unwrap();
    let data_reads = calls
        .iter()
        .filter(|(n, fd, r)| n == "read" && *fd == 0 && *r == bs as i64)
        .count() as u64;
    let data_writes = calls
        .iter()
        .filter(|(n, fd, r)| n == "write" && *fd == 1 && *r == bs as i64)
        .count() as u64;
    assert_eq!(
        (data_reads, data_writes),
        (small, small),
        "strace: {calls:?}"
    );
    let other_reads = calls
        .iter()
        .filter(|(n, fd, _)| n == "read" && *fd != 0)
        .map(|c| c.2)
        .collect();
    let other_writes = calls
        .iter()
        .filter(|(n, fd, _)| n == "write" && *fd != 1)
        .map(|c| c.2)
        .collect();
    DdShape {
        other_reads,
        other_writes,
    }
}

/// Bytes dd wrote to stderr: its three message lines ("N+0 records in", "N+0 records out",
/// "... copied, ..."), each ending in a newline.
fn dd_stderr_bytes(stderr: &str) -> u64 {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains("records in") || l.contains("records out") || l.contains(" copied, ")
        })
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "dd's messages not found in stderr:\n{stderr}"
    );
    lines.iter().map(|l| l.len() as u64 + 1).sum()
}

fn check_dd(bs: u64, count: u64) {
    let shape = dd_shape(bs);
    let args = dd_args(bs, count);
    let mut zargs: Vec<&str> = vec!["run", "--json", "--"];
    zargs.extend(args.iter().map(String::as_str));
    let out = zcprof_env(&zargs, &[("LC_ALL", "C")]);
    assert!(
        out.status.success(),
        "zcprof run dd: {:?}\n{}",
        out.status,
        out.stderr
    );
    let doc = parse_json(&out);
    let dd = process(&doc, u(&doc, "pid"));

    // read: every call is on /dev/zero, a regular file or a char device: one column.
    let mut hist = [0u64; 32];
    hist[size_bucket(bs).min(31)] += count;
    for &r in &shape.other_reads {
        assert!(r >= 0, "dd's extra read failed under strace: {r}");
        hist[size_bucket(r as u64).min(31)] += 1;
    }
    let extra_read_bytes: i64 = shape.other_reads.iter().sum();
    assert_cell(
        dd,
        "read",
        "cpu_kernel_to_user",
        count + shape.other_reads.len() as u64,
        bs * count + extra_read_bytes as u64,
        0,
    );
    let cell = transfer(dd, "read", "cpu_kernel_to_user").unwrap();
    let got: Vec<u64> = cell["size_log2"]
        .as_array()
        .expect("size_log2")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(
        got,
        hist.to_vec(),
        "read size_log2 histogram (strace-derived expectation)"
    );

    // write: the data writes to /dev/null plus dd's messages to stderr (a pipe here).
    let one_byte_msgs = shape.other_writes.iter().filter(|&&r| r == 1).count() as u64;
    assert_cell(
        dd,
        "write",
        "cpu_user_to_kernel",
        count + shape.other_writes.len() as u64,
        bs * count + dd_stderr_bytes(&out.stderr),
        0,
    );
    let cell = transfer(dd, "write", "cpu_user_to_kernel").unwrap();
    let b = size_bucket(bs).min(31);
    let expect_in_bucket = count
        + if bs == 1 {
            one_byte_msgs
        } else {
            shape
                .other_writes
                .iter()
                .filter(|&&r| size_bucket(r as u64) == b)
                .count() as u64
        };
    if bs == 1 {
        assert_eq!(
            cell["size_log2"][b].as_u64(),
            Some(expect_in_bucket),
            "1-byte writes: the data writes plus dd's final \"\\n\""
        );
    }
    assert_eq!(u(&doc, "exit_code"), 0);
    assert_eq!(doc["command"], serde_json::json!(args));
}

/// The test the project is judged by: 1,000,000 reads and writes of one byte, exactly.
#[test]
fn dd_one_million_one_byte_records() {
    if !require_root_or_skip() {
        return;
    }
    check_dd(1, 1_000_000);
}

/// The same exactness while every CPU also runs a busy loop, so that dd is preempted and
/// moved between CPUs all the time. A thread can be back on a CPU without a `sched_switch`
/// event naming it on this platform; a design that tracked "who runs here" from that hook
/// lost thousands of syscalls in one run out of three to six (zcprof's per-CPU cache is checked
/// against the current tid instead). Four runs, each exact.
#[test]
fn dd_exact_while_every_cpu_is_busy() {
    if !require_root_or_skip() {
        return;
    }
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let spinners: Vec<_> = (0..cpus)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let result = std::panic::catch_unwind(|| {
        for _ in 0..4 {
            check_dd(1, 200_000);
        }
    });
    stop.store(true, Ordering::Relaxed);
    for s in spinners {
        let _ = s.join();
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn dd_4096_byte_records() {
    if !require_root_or_skip() {
        return;
    }
    check_dd(4096, 20_000);
}

/// Total syscalls of the worker, compared with strace and with the child's own count.
///
/// The worker's syscalls are: the return of clone() in the child (a syscall return that
/// `raw_syscalls:sys_exit` sees, but strace prints only in the parent), the counted getpid
/// calls, exit_group (counted by zcprof at exit). strace shows all but the first, so
/// zcprof = strace + 1 = tally + 2.
#[test]
fn syscall_total_matches_strace() {
    if !require_root_or_skip() {
        return;
    }
    let n = "10000";
    let r = run_child(CHILD, &["getpid", n]);
    let w = r.worker();
    let expected = r.tally.tracked_syscalls() + r.tally.fixed_syscalls() + 1;
    assert_eq!(r.tally.cell("getpid").0, 10000);

    let dir = scratch_dir("strace-getpid");
    let tally_path = dir.join("tally.json");
    let s = strace(
        None,
        &[CHILD, tally_path.to_str().unwrap(), "getpid", n],
        &[("ZC_CHILD_DIR", dir.to_str().unwrap())],
    );
    assert!(s.status.success());
    let st = Tally::read(&tally_path);
    let strace_worker = s
        .calls
        .get(&st.worker_pid())
        .expect("worker in strace")
        .len() as u64;
    assert_eq!(
        strace_worker,
        st.tracked_syscalls() + st.fixed_syscalls(),
        "strace vs the child's tally (the child's claim about its own syscalls)"
    );
    assert_eq!(
        u(w, "syscalls"),
        strace_worker + 1,
        "zcprof vs strace + the clone return"
    );
    assert_eq!(u(w, "syscalls"), expected, "zcprof vs tally");
    let threads = w["threads"].as_array().expect("threads");
    assert_eq!(threads.len(), 1);
    assert_eq!(u(&threads[0], "tid"), r.tally.worker_pid());
    assert_eq!(u(&threads[0], "syscalls"), expected);
}

/// The worker's context switches and page faults equal its final rusage, read by the
/// supervisor with wait4 after the worker's last switch (waitid WNOWAIT + 50 ms, then wait4).
/// The worker does nothing that faults through get_user_pages (those faults are in rusage but
/// raise no perf event), so equality is exact.
fn check_rusage(action: &[&str]) -> ChildRun {
    let r = run_child(CHILD, action);
    r.assert_matches_rusage(&format!("{action:?}"));
    r
}

#[test]
fn faults_match_rusage() {
    if !require_root_or_skip() {
        return;
    }
    let r = check_rusage(&["faults", "5000"]);
    let pf = &r.worker()["page_faults"];
    assert!(u(pf, "minor") >= 5000);
    // Each page is first written from user space.
    assert!(u(pf, "user") >= 5000, "{pf}");
}

#[test]
fn voluntary_switches_match_rusage() {
    if !require_root_or_skip() {
        return;
    }
    let r = check_rusage(&["sleep-switch", "200"]);
    assert!(u(&r.worker()["context_switches"], "voluntary") >= 200);
}

#[test]
fn spin_switches_match_rusage() {
    if !require_root_or_skip() {
        return;
    }
    check_rusage(&["spin", "300"]);
}

#[test]
fn getpid_and_read_file_match_rusage() {
    if !require_root_or_skip() {
        return;
    }
    check_rusage(&["getpid", "100000"]);
    check_rusage(&["read-file", "4m", "64k"]);
}

/// Threads are reported separately and add up to the process. Each non-leader thread's last
/// switch (after it is dead) happens after the kernel folded its counters into the process's
/// (release_task runs in exit_notify for an auto-reaped thread), so rusage misses up to one
/// voluntary switch per thread: zcprof's voluntary count is in [nvcsw, nvcsw + T].
#[test]
fn threads_are_counted_separately() {
    if !require_root_or_skip() {
        return;
    }
    let (t, n) = (4u64, 20000u64);
    let r = run_child(CHILD, &["threads", &t.to_string(), &n.to_string()]);
    let w = r.worker();
    let threads = w["threads"].as_array().expect("threads");
    assert_eq!(
        threads.len() as u64,
        t + 1,
        "leader + {t} threads: {threads:?}"
    );
    let wp = r.tally.worker_pid();
    let mut sum_sys = 0;
    let (mut vol, mut invol, mut minor, mut major) = (0, 0, 0, 0);
    for th in threads {
        sum_sys += u(th, "syscalls");
        vol += u(&th["context_switches"], "voluntary");
        invol += u(&th["context_switches"], "involuntary");
        minor += u(&th["page_faults"], "minor");
        major += u(&th["page_faults"], "major");
        assert_eq!(th["exited"], true);
        if u(th, "tid") != wp {
            assert!(
                (n..n + 40).contains(&u(th, "syscalls")),
                "a thread did {n} getpid plus its start/exit: {th}"
            );
        }
    }
    assert_eq!(sum_sys, u(w, "syscalls"));
    let cs = &w["context_switches"];
    let pf = &w["page_faults"];
    assert_eq!((vol, invol), (u(cs, "voluntary"), u(cs, "involuntary")));
    assert_eq!((minor, major), (u(pf, "minor"), u(pf, "major")));
    assert_eq!(
        (minor, major),
        (r.tally.rusage("minflt"), r.tally.rusage("majflt"))
    );
    assert_eq!(invol, r.tally.rusage("nivcsw"));
    let nv = r.tally.rusage("nvcsw");
    assert!(
        (nv..=nv + t).contains(&vol),
        "voluntary {vol} vs rusage {nv} (+ up to {t})"
    );
}

/// Only the command and its descendants are watched.
#[test]
fn unwatched_process_is_absent() {
    if !require_root_or_skip() {
        return;
    }
    let mut busy = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn busy loop");
    let busy_pid = busy.id() as u64;
    let r = run_child(CHILD, &["getpid", "1000"]);
    let _ = busy.kill();
    let _ = busy.wait();
    assert!(
        find_process(&r.doc, busy_pid).is_none(),
        "unrelated pid {busy_pid} reported"
    );
    let mut pids: Vec<u64> = processes(&r.doc).iter().map(|p| u(p, "pid")).collect();
    pids.sort();
    let mut expect = vec![r.tally.supervisor_pid(), r.tally.worker_pid()];
    expect.sort();
    assert_eq!(pids, expect, "exactly zc-child's supervisor and worker");
}

#[test]
fn report_shape() {
    if !require_root_or_skip() {
        return;
    }
    let r = run_child(CHILD, &["noop"]);
    let d = &r.doc;
    assert_eq!(
        u(d, "pid"),
        r.tally.supervisor_pid(),
        "pid is the spawned child"
    );
    assert_eq!(u(d, "exit_code"), 0);
    assert_eq!(d["command"][0], CHILD);
    assert_eq!(d["command"][2], "noop");
    assert_eq!(d["btf"], true, "this kernel has BTF");
    assert!(d["elapsed_s"].as_f64().is_some_and(|e| e > 0.0));
    for (k, v) in d["lost"].as_object().expect("lost") {
        assert_eq!(v.as_u64(), Some(0), "lost.{k}");
    }
    let w = r.worker();
    assert_eq!(w["comm"], "zc-child");
    assert_eq!(w["exited"], true);
    assert_eq!(u(w, "syscalls"), 2, "the clone return and exit_group");
    let ledger = w["ledger"].as_object().expect("ledger");
    for c in COLUMNS {
        assert_eq!(
            ledger.get(*c).and_then(Value::as_u64),
            Some(0),
            "ledger.{c}"
        );
    }
    assert!(w["transfers"].as_array().is_some_and(|a| a.is_empty()));
}

#[test]
fn exit_code_is_propagated() {
    if !require_root_or_skip() {
        return;
    }
    let dir = scratch_dir("exit");
    let tally = dir.join("tally.json");
    let out = zcprof(&[
        "run",
        "--json",
        "--",
        CHILD,
        tally.to_str().unwrap(),
        "exit",
        "7",
    ]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", out.stderr);
    assert_eq!(u(&parse_json(&out), "exit_code"), 7);

    let out = zcprof(&["run", "--json", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(128 + 9), "stderr: {}", out.stderr);
    assert_eq!(u(&parse_json(&out), "exit_code"), 137);

    let out = zcprof(&["run", "--", "false"]);
    assert_eq!(out.status.code(), Some(1));
    let out = zcprof(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr);
    assert!(!out.stdout.is_empty(), "a summary is printed");
}

/// The kernel's own I/O accounting (/proc/PID/io of the worker, read before it is reaped)
/// agrees with zcprof: read calls and bytes are `syscr`/`rchar`, write calls and bytes are
/// `syscw`/`wchar` (the worker makes no other syscall that the kernel accounts there).
#[test]
fn reads_and_writes_match_proc_pid_io() {
    if !require_root_or_skip() {
        return;
    }
    for (action, syscall, calls_key, bytes_key) in [
        ("read-file", "read", "syscr", "rchar"),
        ("write-file", "write", "syscw", "wchar"),
    ] {
        let r = run_child(CHILD, &[action, "1000003", "65536"]);
        let io = &r.tally.0["proc_io"];
        let (calls, bytes) = (u(io, calls_key), u(io, bytes_key));
        assert!(calls > 0, "{action}: /proc/PID/io says no {syscall}: {io}");
        let cells = transfers(r.worker(), syscall);
        let got: (u64, u64) = cells.iter().fold((0, 0), |(c, b), cell| {
            (c + u(cell, "calls"), b + u(cell, "bytes"))
        });
        assert_eq!(
            got,
            (calls, bytes),
            "{action}: zcprof's {syscall} calls and bytes vs /proc/PID/io {calls_key}/{bytes_key}"
        );
    }
}

/// A command that creates far more processes over its life than the thread table holds:
/// `zcprof run` moves dead threads out of the kernel maps (every second) and reuses their
/// slots, and nothing is lost or counted twice. 60 short-lived processes pass through a
/// 30-slot table; each `true` and each `sleep` counts the same syscalls as in a run whose
/// table never fills.
#[test]
fn dead_threads_free_their_slots() {
    if !require_root_or_skip() {
        return;
    }
    let script = "i=0; while [ $i -lt 30 ]; do /bin/true; sleep 0.1; i=$((i+1)); done";
    let per_comm = |max_threads: &str| {
        let out = zcprof(&[
            "run",
            "--json",
            "--max-threads",
            max_threads,
            "--",
            "/bin/sh",
            "-c",
            script,
        ]);
        assert!(out.status.success(), "{}", out.stderr);
        let doc = parse_json(&out);
        for (reason, n) in doc["lost"].as_object().expect("lost") {
            assert_eq!(n, 0, "lost {reason} with --max-threads {max_threads}");
        }
        let mut counts: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for p in doc["processes"].as_array().expect("processes") {
            let comm = p["comm"].as_str().unwrap_or("").to_string();
            counts
                .entry(comm)
                .or_default()
                .push(p["syscalls"].as_u64().unwrap());
        }
        counts
    };
    let small = per_comm("30");
    let large = per_comm("16383");
    assert_eq!(small["true"].len(), 30);
    assert_eq!(small["sleep"].len(), 30);
    for comm in ["true", "sleep"] {
        let mut a = small[comm].clone();
        let mut b = large[comm].clone();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{comm}: syscalls per process, 30 slots vs 16383");
    }
}

/// A thread that renames itself (prctl PR_SET_NAME) and one renamed by another thread
/// (/proc/PID/task/TID/comm) are reported under their new names; the worker keeps its own.
#[test]
fn threads_are_reported_under_their_latest_name() {
    if !require_root_or_skip() {
        return;
    }
    let r = run_child(CHILD, &["rename"]);
    let w = r.worker();
    let names: Vec<(u64, &str)> = w["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .map(|t| (u(t, "tid"), t["comm"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(names.len(), 3, "the worker and its two threads: {names:?}");
    let comms: Vec<&str> = names.iter().map(|n| n.1).collect();
    assert!(comms.contains(&"zc-self-named"), "{names:?}");
    assert!(comms.contains(&"zc-peer-named"), "{names:?}");
    let worker = names.iter().find(|n| n.0 == r.tally.worker_pid());
    assert_eq!(worker.map(|n| n.1), Some("zc-child"), "{names:?}");
}

/// A JVM names its threads after they start (`GC Thread#0`, `C2 CompilerThre`...): they are
/// reported under those names, not all as `java`.
#[test]
fn jvm_threads_keep_the_names_the_jvm_gives_them() {
    if !require_root_or_skip() {
        return;
    }
    if std::process::Command::new("java")
        .arg("-version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no java on this machine (cargo xtask setup installs a JRE)");
        return;
    }
    let (doc, status, stderr) =
        run_json(&["run", "--json", "--", "java", "-Xshare:off", "-version"]);
    assert!(status.success(), "{stderr}");
    let comms: Vec<String> = processes(&doc)
        .iter()
        .flat_map(|p| p["threads"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["comm"].as_str().map(str::to_string))
        .collect();
    assert!(
        comms.iter().any(|c| c.starts_with("GC Thread")),
        "a GC thread by its name: {comms:?}"
    );
    assert!(
        comms
            .iter()
            .any(|c| c.starts_with("C2 CompilerThre") || c.starts_with("C1 CompilerThre")),
        "a JIT compiler thread by its name: {comms:?}"
    );
}
