//! Fork storms: tens of thousands of short-lived processes and bursts of short threads, under
//! `zcprof run` and `zcprof attach --children`. Nothing may be lost, every process is its own
//! row (pids are reused: this machine's `pid_max` is far below the number of processes), and
//! the totals equal the storm's own tally. (`serve` under the same storm: serve.rs.)

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use zcprof_tests::*;

const STORM: &str = env!("CARGO_BIN_EXE_zc-storm");

/// The sum of calls and bytes of every `write` cell of `p`.
fn writes(p: &Value) -> (u64, u64) {
    transfers(p, "write")
        .iter()
        .fold((0, 0), |(c, b), t| (c + u(t, "calls"), b + u(t, "bytes")))
}

/// The storm reused pids: else it proves nothing about telling processes apart.
fn assert_pids_reused(tally: &Value) {
    assert!(
        u(tally, "distinct_pids") < u(tally, "processes"),
        "pids were reused: {tally}"
    );
}

/// Checks a run or attach report of the storm against its tally.
fn check_report(doc: &Value, tally: &Value, how: &str) {
    let n = u(tally, "processes");
    let threads = u(tally, "threads");
    let bytes = u(tally, "bytes");
    let lost: u64 = doc["lost"]
        .as_object()
        .expect("lost object")
        .iter()
        .filter(|(k, _)| k.as_str() != "kernel_skipped")
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum();
    let children: Vec<&Value> = processes(doc)
        .iter()
        .filter(|p| p["comm"] == "zcstorm-child" && p["pid"] != tally["main_pid"])
        .collect();
    let exact = children
        .iter()
        .filter(|p| writes(p) == (1, bytes) && u(p, "syscalls") == u(tally, "child_syscalls"))
        .count() as u64;
    let burster = process(doc, u(tally, "burster_pid"));
    eprintln!(
        "{how}: storm of {n} processes ({} distinct pids) and {threads} threads in {:.1} s \
         ({:.0} forks/s); report: {} child rows, {exact} exact; burster writes {:?}; lost \
         {lost} (by reason {}); dead threads left to user space: {}",
        u(tally, "distinct_pids"),
        tally["elapsed_s"].as_f64().unwrap_or(0.0),
        tally["forks_per_s"].as_f64().unwrap_or(0.0),
        children.len(),
        writes(burster),
        doc["lost"],
        doc["retire_deferred"]
    );
    assert_eq!(lost, 0, "{how}: nothing lost");
    assert_eq!(children.len() as u64, n, "{how}: one row per process");
    assert_eq!(
        exact, n,
        "{how}: every child: one write of {bytes} B, 2 syscalls"
    );
    assert_eq!(
        writes(burster),
        (threads, threads * bytes),
        "{how}: every burst thread's write"
    );
}

#[test]
fn fork_storm_under_run() {
    if !require_root_or_skip() {
        return;
    }
    let dir = scratch_dir("storm-run");
    let tally_path = dir.join("tally.json");
    let mut args = vec!["run", "--json", "--", STORM, tally_path.to_str().unwrap()];
    args.extend_from_slice(STORM_ARGS);
    let out = zcprof(&args);
    assert!(out.status.success(), "zcprof run failed:\n{}", out.stderr);
    let tally = storm_tally(&tally_path);
    assert_pids_reused(&tally);
    check_report(&parse_json(&out), &tally, "run");
}

/// Runs `zc-storm` with `storm` arguments under `zcprof attach --json --children` with
/// `extra` arguments, attached before the storm begins; returns attach's report and the tally.
fn attach_to_storm(name: &str, extra: &[&str], storm: &[&str]) -> (Value, Value) {
    let dir = scratch_dir(name);
    let tally_path = dir.join("tally.json");
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let mut storm = Command::new(STORM)
        .arg(&tally_path)
        .args(storm)
        .args(["--start-after", go.to_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn zc-storm");
    let pid = storm.id().to_string();
    let mut attach = Command::new(zcprof_bin())
        .args(["attach", "--json", "--children", "--pid", &pid])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zcprof attach");
    // Attached once it says so; its stderr is read to the end on a thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = attach.stderr.take().expect("stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if line.starts_with("zcprof: attached to") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = storm.kill();
        let _ = attach.kill();
        panic!(
            "attach did not attach:\n{}",
            stderr_reader.join().unwrap_or_default()
        );
    }
    std::fs::write(&go, b"").expect("start the storm");
    let status = storm.wait().expect("wait for zc-storm");
    assert!(status.success(), "zc-storm failed: {status}");
    let out = attach.wait_with_output().expect("attach output");
    let stderr = stderr_reader.join().unwrap_or_default();
    assert!(out.status.success(), "zcprof attach failed:\n{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("attach JSON: {e}\nstderr:\n{stderr}"));
    (doc, storm_tally(&tally_path))
}

#[test]
fn fork_storm_under_attach_children() {
    if !require_root_or_skip() {
        return;
    }
    let (doc, tally) = attach_to_storm("storm-attach", &[], STORM_ARGS);
    assert_pids_reused(&tally);
    check_report(&doc, &tally, "attach --children");
}

/// With a ring buffer too small for any record, every dead thread takes the way round: its
/// entry stays, flagged dead, and `run` collects it from the table. Slower, but still exact,
/// and more threads die than the table holds, so slots must come back that way too. The
/// table (4,000) fills in about a second of this storm: collecting once a second lost
/// hundreds of threads; run must collect when the table fills, not by the clock.
#[test]
fn a_full_ring_buffer_loses_nothing() {
    if !require_root_or_skip() {
        return;
    }
    let dir = scratch_dir("storm-full-ring");
    let tally_path = dir.join("tally.json");
    let mut args = vec![
        "run",
        "--json",
        "--max-threads",
        "4000",
        "--retired-ring-bytes",
        "4096",
        "--",
        STORM,
        tally_path.to_str().unwrap(),
    ];
    args.extend_from_slice(FULL_RING_STORM);
    let out = zcprof(&args);
    assert!(out.status.success(), "zcprof run failed:\n{}", out.stderr);
    let tally = storm_tally(&tally_path);
    let doc = parse_json(&out);
    check_report(&doc, &tally, "run with a full ring buffer");
    assert!(
        u(&doc["retire_deferred"], "ring_full") > 0,
        "the ring was full for some: {}",
        doc["retire_deferred"]
    );
}

/// The same under `attach --children`, reporting every 10 s: the dead threads must be
/// collected as the table fills, not at the report's interval.
#[test]
fn a_full_ring_buffer_loses_nothing_under_attach() {
    if !require_root_or_skip() {
        return;
    }
    let extra = [
        "--interval",
        "10s",
        "--max-threads",
        "4000",
        "--retired-ring-bytes",
        "4096",
    ];
    let (doc, tally) = attach_to_storm("storm-attach-full-ring", &extra, FULL_RING_STORM);
    check_report(&doc, &tally, "attach with a full ring buffer");
    assert!(
        u(&doc["retire_deferred"], "ring_full") > 0,
        "the ring was full for some: {}",
        doc["retire_deferred"]
    );
}
