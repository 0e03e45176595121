//! A kernel without an optional hook (the `filemap:*` tracepoints before 6.10, an
//! `io_uring_complete` without its request): zcprof still runs, counts the rest exactly, and
//! says what it cannot count, once on stderr and in JSON, instead of reporting a silent zero.
//! The hidden `--tracepoint-override HOOK=no_such_tracepoint` makes the loader look the hook up
//! under a name this kernel lacks, as an older kernel would; the kernel matrix
//! (`cargo xtask kernel-matrix`) checks the real thing on 5.10 and 6.1.

use zcprof_tests::*;

const ONE_BYTE_RECORDS: u64 = 50_000;

fn dd(extra: &[&str]) -> (serde_json::Value, std::process::ExitStatus, String) {
    let count = format!("count={ONE_BYTE_RECORDS}");
    let mut args = vec!["run", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "dd", "if=/dev/zero", "of=/dev/null", "bs=1", &count]);
    run_json(&args)
}

fn capability<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["capabilities"]
        .as_array()
        .expect("capabilities[]")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no capability {name} in {}", doc["capabilities"]))
}

/// dd's one-byte reads and writes: the workload's own count.
fn one_byte_calls(doc: &serde_json::Value, syscall: &str) -> u64 {
    let dd = processes(doc)
        .iter()
        .find(|p| p["comm"] == "dd")
        .expect("dd's process");
    transfers(dd, syscall)
        .iter()
        .map(|t| t["size_log2"][size_bucket(1)].as_u64().unwrap_or(0))
        .sum()
}

fn fault_in_bytes(doc: &serde_json::Value) -> u64 {
    processes(doc)
        .iter()
        .map(|p| p["ledger"]["mmap_fault_in"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn without_filemap_tracepoints_mmap_fault_in_is_unavailable_and_the_rest_exact() {
    if !require_root_or_skip() {
        return;
    }
    // With the hooks: dd maps its libraries, so the column is not 0 (the check below can fail).
    let (full, status, _) = dd(&[]);
    assert!(status.success());
    assert_eq!(capability(&full, "mmap_fault_in")["state"], "exact");
    assert!(fault_in_bytes(&full) > 0, "dd maps libc: {full}");

    let before = zcprof_program_ids();
    let (doc, status, stderr) = dd(&[
        "--tracepoint-override",
        "mm_filemap_fault=no_such_tracepoint",
    ]);
    assert!(
        status.success(),
        "zcprof gave up instead of degrading:\n{stderr}"
    );
    let cap = capability(&doc, "mmap_fault_in");
    assert_eq!(cap["state"], "unavailable", "{cap}");
    assert!(
        cap["why"]
            .as_str()
            .unwrap_or("")
            .contains("mm_filemap_fault"),
        "names the missing tracepoint: {cap}"
    );
    // Neither filemap hook is attached (one alone would count part of the pages).
    assert_eq!(fault_in_bytes(&doc), 0, "{doc}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("zcprof: warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning line:\n{stderr}");
    assert!(warnings[0].contains("mmap_fault_in"), "{stderr}");
    for other in [
        "fd_types",
        "io_uring",
        "exit_syscalls",
        "context_switches",
        "page_faults",
    ] {
        assert_eq!(capability(&doc, other)["state"], "exact", "{other}");
    }
    // dd's records (one more one-byte write: dd's own, as in the run with every hook).
    assert_eq!(one_byte_calls(&doc, "read"), ONE_BYTE_RECORDS);
    assert_eq!(
        one_byte_calls(&doc, "write"),
        one_byte_calls(&full, "write")
    );
    assert!(one_byte_calls(&doc, "write") >= ONE_BYTE_RECORDS);
    assert!(
        doc["lost"]
            .as_object()
            .expect("lost{}")
            .values()
            .all(|n| n == 0),
        "{}",
        doc["lost"]
    );
    assert!(new_zcprof_programs_after(&before, std::time::Duration::from_secs(5)).is_empty());
}

#[test]
fn without_io_uring_complete_the_io_uring_ledger_is_unavailable() {
    if !require_root_or_skip() {
        return;
    }
    let (doc, status, stderr) = dd(&[
        "--tracepoint-override",
        "io_uring_complete=no_such_tracepoint",
    ]);
    assert!(status.success(), "{stderr}");
    let cap = capability(&doc, "io_uring");
    assert_eq!(cap["state"], "unavailable", "{cap}");
    assert!(stderr.contains("io_uring unavailable"), "{stderr}");
    assert_eq!(one_byte_calls(&doc, "read"), ONE_BYTE_RECORDS);
}
