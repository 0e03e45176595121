//! Findings in `zcprof run` summaries: each made from a workload whose own parameters say what
//! it must be, and none where nothing is wrong.

use serde_json::Value;
use zcprof_tests::*;

/// The findings of kind `kind` about process `pid` in a JSON document.
fn findings_of<'a>(doc: &'a Value, kind: &str, pid: u64) -> Vec<&'a Value> {
    doc["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings array in the document"))
        .iter()
        .filter(|f| f["kind"] == kind && f["pid"].as_u64() == Some(pid))
        .collect()
}

/// `zcprof run --json -- ARGS`, with the command's pid.
fn run(args: &[&str]) -> (Value, u64) {
    let mut all = vec!["run", "--json", "--"];
    all.extend_from_slice(args);
    let (doc, status, stderr) = run_json(&all);
    assert!(status.success(), "zcprof run failed:\n{stderr}");
    let pid = u(&doc, "pid");
    (doc, pid)
}

#[test]
fn one_byte_calls_are_small_io_and_big_ones_are_not() {
    if !require_root_or_skip() {
        return;
    }
    let n = 20_000u64;
    let count = format!("count={n}");
    let (doc, pid) = run(&[
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=1",
        &count,
        "status=none",
    ]);
    let small = findings_of(&doc, "small_io", pid);
    let write = small
        .iter()
        .find(|f| f["evidence"]["syscall"] == "write")
        .unwrap_or_else(|| panic!("a small_io finding for dd's writes: {small:?}"));
    // dd's own writes, nothing else: n calls of one byte, which one 64 KiB call could carry.
    assert_eq!(u(&write["evidence"], "calls"), n);
    assert_eq!(u(&write["evidence"], "median_bytes_at_most"), 1);
    assert_eq!(u(write, "saving_mode_switches"), 2 * (n - 1));
    assert!(
        small.iter().any(|f| f["evidence"]["syscall"] == "read"),
        "and its reads: {small:?}"
    );

    let (doc, pid) = run(&[
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64k",
        "count=2000",
        "status=none",
    ]);
    let small = findings_of(&doc, "small_io", pid);
    assert!(
        small
            .iter()
            .all(|f| f["evidence"]["syscall"] != "read" && f["evidence"]["syscall"] != "write"),
        "64 KiB reads and writes are not small: {small:?}"
    );
}

#[test]
fn zero_copy_sends_to_a_local_peer_fell_back() {
    if !require_root_or_skip() {
        return;
    }
    let size = 4u64 << 20;
    // The workload prints its own JSON: out of the way of zcprof's, and the same pid (exec).
    let workload = |strategy: &str| {
        let line = format!(
            "exec {} workload --strategy {strategy} --size 4M > /dev/null",
            zcprof_bin().display()
        );
        run(&["sh", "-c", &line])
    };
    // MSG_ZEROCOPY over loopback: the kernel says each send was copied.
    let (doc, pid) = workload("msg-zerocopy");
    let f = findings_of(&doc, "zerocopy_fell_back", pid);
    assert_eq!(f.len(), 1, "one MSG_ZEROCOPY finding: {f:?}");
    let e = &f[0]["evidence"];
    assert_eq!(e["via"], "MSG_ZEROCOPY");
    assert!(u(e, "sends_completed") > 0);
    assert_eq!(u(e, "sends_copied"), u(e, "sends_completed"));

    // io_uring SEND_ZC over loopback: every byte went to a local peer.
    let (doc, pid) = workload("io-uring");
    let f = findings_of(&doc, "zerocopy_fell_back", pid);
    assert_eq!(f.len(), 1, "one SEND_ZC finding: {f:?}");
    assert_eq!(f[0]["evidence"]["via"], "io_uring send_zc");
    assert_eq!(u(&f[0]["evidence"], "bytes"), size);

    // sendfile: nothing to say.
    let (doc, _) = workload("sendfile");
    assert_eq!(
        doc["findings"].as_array().map(Vec::len),
        Some(0),
        "no finding for sendfile: {}",
        doc["findings"]
    );
}
