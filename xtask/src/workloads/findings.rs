//! The findings zcprof made about a run (`findings[]` of its report) against those the
//! strategy must give (docs/findings.md): the sender's exactly, the receiver's none but
//! `small_io` (its reads are as small as the sender's writes make them, which no tally says).

use std::collections::BTreeMap;

use super::data::{Finding, Report, Tally};
use super::model::zcprof_syscall;

/// docs/findings.md's thresholds (zcprof/src/findings.rs holds them; restated here as the
/// expectation's side of the comparison).
const RELAY_MIN_BYTES: u64 = 1 << 20;
const SMALL_IO_MIN_CALLS: u64 = 1000;
const SMALL_IO_BELOW: u64 = 4096;

/// What the findings about a run must be.
#[derive(Debug, Default)]
pub struct Expected {
    /// About the sender, exactly (a finding's key: its kind, `small_io(SYSCALL)`).
    pub sender: Vec<String>,
    /// About the sender, allowed but not required, with why.
    pub optional: BTreeMap<String, &'static str>,
}

/// The key a finding is compared by: its kind, and for `small_io` the syscall it is about.
pub fn key(f: &Finding) -> String {
    match f.evidence.get("syscall").and_then(|s| s.as_str()) {
        Some(s) if f.kind == "small_io" => format!("small_io({s})"),
        _ => f.kind.clone(),
    }
}

/// The findings strategy `tally.strategy` must give, on the kernel `report` describes.
pub fn expected(tally: &Tally, report: &Report) -> Expected {
    let mut e = Expected::default();
    let available = |name: &str| report.available(name);
    let big = tally.bytes >= RELAY_MIN_BYTES;
    match tally.strategy.as_str() {
        // Descriptor kinds need BTF (`btf`): without it no file or socket is told apart.
        "read-write" | "heap-buffer" if big && report.btf => {
            e.sender.push("file_to_socket_by_copy".into());
        }
        "mmap-write" if big && report.btf && available("mmap_fault_in") => {
            e.sender.push("mmap_write_to_socket".into());
        }
        "msg-zerocopy" if tally.zerocopy.is_some_and(|z| z.copied) => {
            e.sender.push("zerocopy_fell_back".into());
        }
        "io-uring" => {
            if tally.io_uring_ops.contains_key("send_zc") && available("io_uring") {
                e.sender.push("zerocopy_fell_back".into());
            }
            e.optional.insert(
                "io_uring_punted".into(),
                "whether the kernel punts the file reads depends on the file system",
            );
        }
        _ => {}
    }
    // small_io: a data syscall of many calls, each of at most one chunk, when chunks are under
    // 4 KiB (with bigger chunks the median call is a whole chunk). Counted over the syscall's
    // control calls too, which share its cell when they share its column.
    let mut by_syscall: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (name, c) in tally.syscalls.iter().chain(&tally.control_syscalls) {
        let Some(z) = zcprof_syscall(name) else {
            continue;
        };
        if matches!(z, "mmap_file" | "mmap_anon" | "munmap") || !tally.syscalls.contains_key(name) {
            continue;
        }
        let s = by_syscall.entry(z).or_default();
        s.0 += c.calls;
        s.1 += c.bytes;
    }
    for (name, (calls, bytes)) in by_syscall {
        if calls < SMALL_IO_MIN_CALLS || tally.buffer >= SMALL_IO_BELOW {
            continue;
        }
        let key = format!("small_io({name})");
        if bytes == 0 {
            // Calls that move nothing (error-queue recvmsg) include the ones that failed with
            // EAGAIN, which zcprof's median leaves out: the count may be under the threshold.
            e.optional
                .insert(key, "its calls move no payload and some fail");
        } else {
            e.sender.push(key);
        }
    }
    e.sender.sort();
    e
}

/// `keys` as a list, `none` when empty.
fn list(keys: &[String]) -> String {
    if keys.is_empty() {
        "none".into()
    } else {
        keys.join(", ")
    }
}

/// A comparison of findings: what, expected, found (the caller makes it a check).
pub type Fact = (&'static str, String, String);

/// The comparisons of a run's findings, and notes on those allowed.
pub fn check(tally: &Tally, report: &Report) -> (Vec<Fact>, Vec<String>) {
    let e = expected(tally, report);
    let mut notes = Vec::new();
    let mut sender: Vec<String> = Vec::new();
    for f in report.findings.iter().filter(|f| f.pid == tally.sender_pid) {
        let k = key(f);
        match e.optional.get(&k) {
            Some(why) => notes.push(format!("finding {k} about the sender (allowed: {why})")),
            None => sender.push(k),
        }
    }
    sender.sort();
    let mut checks = vec![("findings about the sender", list(&e.sender), list(&sender))];
    if let Some(pid) = tally.receiver_pid {
        let receiver: Vec<String> = report
            .findings
            .iter()
            .filter(|f| f.pid == pid && f.kind != "small_io")
            .map(key)
            .collect();
        checks.push((
            "findings about the receiver (other than small_io)",
            "none".into(),
            list(&receiver),
        ));
    }
    let others: Vec<String> = report
        .findings
        .iter()
        .filter(|f| f.pid != tally.sender_pid && Some(f.pid) != tally.receiver_pid)
        .map(|f| format!("{} about pid {}", key(f), f.pid))
        .collect();
    if !others.is_empty() {
        checks.push((
            "findings about other processes",
            "none".into(),
            others.join(", "),
        ));
    }
    (checks, notes)
}

/// One line per finding about the sender or the receiver: kind, thread, saving.
pub fn describe(tally: &Tally, report: &Report) -> Vec<String> {
    report
        .findings
        .iter()
        .map(|f| {
            let who = if f.pid == tally.sender_pid {
                "sender"
            } else if Some(f.pid) == tally.receiver_pid {
                "receiver"
            } else {
                "other"
            };
            let tid = f.tid.map_or_else(String::new, |t| format!(" tid {t}"));
            format!(
                "{} ({who}{tid}): saving {} B copied, {} mode switches; {}",
                key(f),
                f.saving_bytes,
                f.saving_mode_switches,
                f.evidence
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tally(strategy: &str, buffer: u64, syscalls: serde_json::Value) -> Tally {
        serde_json::from_value(json!({
            "strategy": strategy, "sender_pid": 10, "receiver_pid": 11, "buffer": buffer,
            "bytes": 4u64 << 20, "syscalls": syscalls,
            "control_syscalls": {"read": {"calls": 2, "bytes": 9}}, "io_uring_ops": {},
            "user_space_copies": {"calls": 0, "bytes": 0}, "zerocopy": null,
            "throughput_mib_s": 1.0, "cpu_user_s": 0.0, "cpu_sys_s": 0.0,
            "receiver_bytes": 4u64 << 20,
        }))
        .unwrap()
    }

    fn report(mmap_fault_in: &str, findings: serde_json::Value) -> Report {
        serde_json::from_value(json!({
            "processes": [], "lost": {}, "btf": true,
            "capabilities": [{"name": "mmap_fault_in", "state": mmap_fault_in}],
            "findings": findings,
        }))
        .unwrap()
    }

    #[test]
    fn each_strategy_expects_its_findings() {
        let rw = json!({"read": {"calls": 64, "bytes": 4u64 << 20},
                        "write": {"calls": 64, "bytes": 4u64 << 20}});
        let e = expected(
            &tally("read-write", 65536, rw.clone()),
            &report("exact", json!([])),
        );
        assert_eq!(e.sender, ["file_to_socket_by_copy"]);
        let mmap = json!({"write": {"calls": 64, "bytes": 4u64 << 20}});
        let t = tally("mmap-write", 65536, mmap);
        assert_eq!(
            expected(&t, &report("exact", json!([]))).sender,
            ["mmap_write_to_socket"]
        );
        assert!(
            expected(&t, &report("unavailable", json!([])))
                .sender
                .is_empty()
        );
        let small = json!({"read": {"calls": 4096, "bytes": 4u64 << 20},
                           "write": {"calls": 4096, "bytes": 4u64 << 20}});
        let e = expected(
            &tally("read-write", 1024, small),
            &report("exact", json!([])),
        );
        assert_eq!(
            e.sender,
            [
                "file_to_socket_by_copy",
                "small_io(read)",
                "small_io(write)"
            ]
        );
    }

    #[test]
    fn a_missing_or_extra_finding_is_a_mismatch() {
        let rw = json!({"read": {"calls": 64, "bytes": 4u64 << 20}});
        let t = tally("read-write", 65536, rw);
        let finding = |kind: &str, pid: u32| {
            json!({"kind": kind, "pid": pid, "evidence": {}, "saving_bytes": 0,
                   "saving_mode_switches": 0})
        };
        let ok = |r: &Report| {
            check(&t, r)
                .0
                .iter()
                .all(|(_, expected, found)| expected == found)
        };
        assert!(ok(&report(
            "exact",
            json!([
                finding("file_to_socket_by_copy", 10),
                finding("small_io", 11)
            ])
        )));
        assert!(!ok(&report("exact", json!([]))), "missing");
        assert!(
            !ok(&report(
                "exact",
                json!([
                    finding("file_to_socket_by_copy", 10),
                    finding("io_uring_punted", 10)
                ])
            )),
            "extra"
        );
        assert!(
            !ok(&report(
                "exact",
                json!([
                    finding("file_to_socket_by_copy", 10),
                    finding("io_uring_punted", 11)
                ])
            )),
            "the receiver's"
        );
    }
}
