//! `--latency`: the time spent inside data-moving calls, checked against the time the
//! workload measured around the same calls and against what must hold between the counters.

use serde_json::Value;
use zcprof_tests::*;

const CHILD: &str = env!("CARGO_BIN_EXE_zc-child");

/// The cell `syscall`/`column` of `proc`, which must exist.
fn cell<'a>(proc: &'a Value, syscall: &str, column: &str) -> &'a Value {
    transfer(proc, syscall, column)
        .unwrap_or_else(|| panic!("no {syscall}/{column} cell in {proc}"))
}

/// The sum of a cell's duration histogram.
fn timed_calls(cell: &Value) -> u64 {
    cell["time_log2"]
        .as_array()
        .unwrap_or_else(|| panic!("no time_log2 in {cell}"))
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[test]
fn a_blocked_read_takes_as_long_as_its_writer_waited() {
    if !require_root_or_skip() {
        return;
    }
    let r = run_child_with(CHILD, &["--latency"], &["pipe-wait", "200"]);
    let read = cell(r.worker(), "read", "cpu_kernel_to_user");
    assert_eq!((u(read, "calls"), u(read, "bytes")), (1, 1), "{read}");
    let took = u(read, "time_ns");
    // The worker timed the call from user space, around the syscall: zcprof's time, from
    // entry to return inside the kernel, is a little less, never more.
    let outside = r.tally.0["calls"]["read"]["ns"].as_u64().unwrap();
    assert!(
        (180_000_000..=220_000_000).contains(&took),
        "a read whose writer slept 200 ms took {took} ns by zcprof (±10 %)"
    );
    assert!(
        took <= outside && outside - took < 5_000_000,
        "zcprof {took} ns inside, the worker {outside} ns around the call"
    );
    // One timed call, in the bucket [2^27, 2^28) ns = [134, 268) ms.
    assert_eq!(timed_calls(read), 1);
    assert_eq!(read["time_log2"][28].as_u64(), Some(1), "{read}");
    assert!(
        u(r.worker(), "syscall_time_ns") >= took,
        "the process's time in syscalls includes the read's"
    );
}

#[test]
fn every_one_byte_read_is_timed_and_the_process_total_covers_its_cells() {
    if !require_root_or_skip() {
        return;
    }
    let n = 1_000u64;
    let count = format!("count={n}");
    let dd = [
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=1",
        &count,
        "status=none",
    ];
    let mut args = vec!["run", "--json", "--latency", "--"];
    args.extend_from_slice(&dd);
    let (doc, status, stderr) = run_json(&args);
    assert!(status.success(), "zcprof run failed:\n{stderr}");
    let dd_proc = process(&doc, u(&doc, "pid"));
    let read = cell(dd_proc, "read", "cpu_kernel_to_user");
    let calls = u(read, "calls");
    // dd's n reads of /dev/zero, plus the dynamic loader's few reads of library headers.
    assert!((n..n + 10).contains(&calls), "{read}");
    // zcprof watched dd from before its exec: every call's entry was seen, so every call timed.
    assert_eq!(timed_calls(read), calls, "{read}");
    let per_call = u(read, "time_ns") / calls;
    assert!(
        (30..100_000).contains(&per_call),
        "a one-byte read of /dev/zero took {per_call} ns on average"
    );
    let cells: u64 = dd_proc["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| u(c, "time_ns"))
        .sum();
    let total = u(dd_proc, "syscall_time_ns");
    assert!(
        total >= cells && cells > 0,
        "time in all syscalls {total} ns < time in the data-moving cells {cells} ns"
    );

    // The small_io finding on those reads says what the calls it would remove took: at most
    // the reads' whole time.
    let saved = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "small_io" && f["evidence"]["syscall"] == "read")
        .and_then(|f| f["saving_seconds"].as_f64())
        .expect("a timed small_io finding for dd's reads");
    let read_s = u(read, "time_ns") as f64 / 1e9;
    assert!(
        saved > 0.0 && saved <= read_s,
        "saving {saved} s of {read_s} s"
    );

    // The same run without --latency: no time anywhere, and the counts unchanged.
    let mut args = vec!["run", "--json", "--"];
    args.extend_from_slice(&dd);
    let (doc, status, stderr) = run_json(&args);
    assert!(status.success(), "zcprof run failed:\n{stderr}");
    let plain = process(&doc, u(&doc, "pid"));
    assert_eq!(u(plain, "syscall_time_ns"), 0);
    for c in plain["transfers"].as_array().unwrap() {
        assert_eq!(u(c, "time_ns"), 0, "{c}");
        assert!(c.get("time_log2").is_none(), "{c}");
    }
    let plain_read = cell(plain, "read", "cpu_kernel_to_user");
    assert_eq!(
        (u(plain_read, "calls"), u(plain_read, "bytes")),
        (calls, u(read, "bytes")),
        "timing changes no count"
    );
}
