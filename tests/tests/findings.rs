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

/// A file of `n` bytes in a fresh scratch directory, written 64 KiB at a time: one big write
/// can leave the page cache with 2 MiB folios, which a fault maps whole without the filemap
/// tracepoints seeing the pages (docs/findings.md, `mmap_write_to_socket`).
fn data_file(tag: &str, n: usize) -> std::path::PathBuf {
    use std::io::Write as _;
    let dir = scratch_dir(tag);
    let path = dir.join("blob");
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let mut f = std::fs::File::create(&path).expect("create the data file");
    for chunk in data.chunks(64 << 10) {
        f.write_all(chunk).expect("write the data file");
    }
    path
}

/// `zcprof run --json -- zc-relay TALLY MODE FILE`: zcprof's document and zc-relay's tally.
fn relay(mode: &str, file: &std::path::Path) -> (Value, u64, Value) {
    let tally = file.with_extension(format!("{mode}.json"));
    let (doc, pid) = run(&[
        env!("CARGO_BIN_EXE_zc-relay"),
        tally.to_str().expect("utf-8 path"),
        mode,
        file.to_str().expect("utf-8 path"),
    ]);
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&tally).expect("the tally"))
        .expect("the tally is JSON");
    (doc, pid, t)
}

/// The state of capability `name` in a document.
fn capability(doc: &Value, name: &str) -> String {
    doc["capabilities"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .and_then(|c| c["state"].as_str())
        .unwrap_or_else(|| panic!("no capability {name}: {}", doc["capabilities"]))
        .to_owned()
}

#[test]
fn a_relay_by_copy_is_found_and_the_same_relay_by_sendfile_is_not() {
    if !require_root_or_skip() {
        return;
    }
    let size = 8usize << 20;
    let file = data_file("relay", size);
    let (doc, pid, t) = relay("copy", &file);
    assert_eq!(u(&t, "received"), size as u64);
    let f = findings_of(&doc, "file_to_socket_by_copy", pid);
    assert_eq!(f.len(), 1, "one relay finding: {}", doc["findings"]);
    let f = f[0];
    // The sender thread, nothing else: its own counts, call by call.
    assert_eq!(u(f, "tid"), u(&t, "sender_tid"), "{f}");
    let e = &f["evidence"];
    assert_eq!(u(e, "file_read_bytes"), u(&t, "file_bytes_read"));
    assert_eq!(u(e, "file_read_calls"), u(&t, "file_reads"));
    assert_eq!(u(e, "socket_write_bytes"), u(&t, "socket_bytes_written"));
    assert_eq!(u(e, "relayed_bytes"), size as u64);
    assert_eq!(u(f, "saving_bytes"), 2 * size as u64);
    // 128 reads of 64 KiB and the end-of-file read: all of them go with sendfile.
    assert_eq!(u(f, "saving_mode_switches"), 2 * u(&t, "file_reads"));
    assert!(
        findings_of(&doc, "mmap_write_to_socket", pid).is_empty(),
        "{}",
        doc["findings"]
    );

    let (doc, pid, t) = relay("sendfile", &file);
    assert_eq!(u(&t, "sendfile_bytes"), size as u64);
    assert_eq!(u(&t, "received"), size as u64);
    let copies: Vec<&Value> = doc["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["pid"].as_u64() == Some(pid) && f["kind"] != "small_io")
        .collect();
    assert!(copies.is_empty(), "sendfile: no copy finding: {copies:?}");
    let _ = std::fs::remove_dir_all(file.parent().expect("scratch dir"));
}

#[test]
fn sending_from_a_file_mapping_is_found_where_faults_are_counted() {
    if !require_root_or_skip() {
        return;
    }
    let size = 8usize << 20;
    let file = data_file("mmap-send", size);
    let (doc, pid, t) = relay("mmap", &file);
    assert_eq!(u(&t, "received"), size as u64);
    let f = findings_of(&doc, "mmap_write_to_socket", pid);
    if capability(&doc, "mmap_fault_in") == "unavailable" {
        // Without the filemap tracepoints the faults are not counted: no finding can be made.
        assert!(f.is_empty(), "{f:?}");
        return;
    }
    assert_eq!(f.len(), 1, "one finding: {}", doc["findings"]);
    let f = f[0];
    assert_eq!(u(f, "tid"), u(&t, "sender_tid"));
    let e = &f["evidence"];
    assert_eq!(u(e, "socket_write_bytes"), u(&t, "socket_bytes_written"));
    assert_eq!(u(e, "file_read_bytes"), 0, "the sender read no file: {e}");
    // Every page of the file was mapped in by the writes' faults, and nothing else inside a
    // syscall of the thread.
    assert_eq!(u(e, "syscall_file_fault_bytes"), size as u64, "{e}");
    assert_eq!(u(e, "from_mappings_bytes"), size as u64);
    assert_eq!(u(f, "saving_bytes"), size as u64);
    assert!(
        findings_of(&doc, "file_to_socket_by_copy", pid).is_empty(),
        "{}",
        doc["findings"]
    );
    let _ = std::fs::remove_dir_all(file.parent().expect("scratch dir"));
}

/// The sender's own code reads the mapping (a copy into a buffer), then writes the buffer: the
/// file's pages fault in outside its syscalls, as a large binary's text does, and the writes
/// do not send from a mapping. Before the faults were split by where the kernel took them,
/// this made `mmap_write_to_socket`.
#[test]
fn faults_of_the_thread_s_own_code_are_not_sends_from_a_mapping() {
    faults_outside_data_calls("mmap-touch");
}

/// `MAP_POPULATE` maps the whole file inside mmap, a syscall that moves nothing (as
/// `mlockall` maps a binary): not pages a data-moving call faulted in.
#[test]
fn pages_mapped_by_map_populate_are_not_faulted_in_by_a_data_call() {
    faults_outside_data_calls("mmap-populate");
}

/// zc-relay in `mode` sends the file from a mapping whose pages fault in outside its
/// data-moving syscalls: all of them in `mmap_fault_in`, none in `syscall_file_fault_bytes`,
/// and no `mmap_write_to_socket`.
fn faults_outside_data_calls(mode: &str) {
    if !require_root_or_skip() {
        return;
    }
    let size = 8usize << 20;
    let file = data_file(mode, size);
    let (doc, pid, t) = relay(mode, &file);
    assert_eq!(u(&t, "received"), size as u64);
    assert_eq!(u(&t, "socket_bytes_written"), size as u64);
    let process = doc["processes"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["pid"].as_u64() == Some(pid)))
        .expect("the relay in the report");
    let sender = process["threads"]
        .as_array()
        .and_then(|ts| ts.iter().find(|th| th["tid"] == t["sender_tid"]))
        .expect("the sender thread in the report");
    assert_eq!(u(sender, "syscall_file_fault_bytes"), 0, "{sender}");
    let f = findings_of(&doc, "mmap_write_to_socket", pid);
    assert!(f.is_empty(), "{f:?}");
    if capability(&doc, "mmap_fault_in") != "unavailable" {
        // The pages were faulted in, by the thread's own code.
        assert!(
            u(&sender["ledger"], "mmap_fault_in") >= size as u64,
            "{}",
            sender["ledger"]
        );
    }
    let _ = std::fs::remove_dir_all(file.parent().expect("scratch dir"));
}

#[test]
fn io_uring_reads_forced_async_are_punted() {
    if !require_root_or_skip() {
        return;
    }
    // 256 reads of 16 KiB, each submitted with IOSQE_ASYNC.
    let size = 4usize << 20;
    let file = data_file("punt", size);
    let tally = file.with_extension("json");
    let (doc, pid) = run(&[
        env!("CARGO_BIN_EXE_zc-relay"),
        tally.to_str().expect("utf-8 path"),
        "uring-punt",
        file.to_str().expect("utf-8 path"),
        "16384",
    ]);
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&tally).expect("the tally"))
        .expect("the tally is JSON");
    assert_eq!(u(&t, "file_bytes_read"), size as u64);
    assert_eq!(u(&t, "async_reads"), 256);
    let f = findings_of(&doc, "io_uring_punted", pid);
    assert_eq!(f.len(), 1, "one finding: {}", doc["findings"]);
    assert_eq!(u(f[0], "tid"), u(&t, "sender_tid"));
    // Every forced-async request is queued to io-wq once.
    assert_eq!(u(&f[0]["evidence"], "punted"), 256, "{}", f[0]);
    let sender = process(&doc, pid)["threads"]
        .as_array()
        .expect("threads")
        .iter()
        .find(|th| th["tid"] == t["sender_tid"])
        .cloned()
        .expect("the sender thread");
    assert_eq!(u(&sender, "io_uring_punted"), 256);
    let _ = std::fs::remove_dir_all(file.parent().expect("scratch dir"));
}

/// What strace saw one thread do: bytes and successful calls of `read`s from regular files,
/// bytes written to sockets (`write`, `sendto`, `sendmsg`), bytes `sendfile` sent.
#[derive(Debug, Default)]
struct StracedThread {
    file_read_bytes: u64,
    file_reads: u64,
    socket_write_bytes: u64,
    sendfile_bytes: u64,
}

/// Parses `strace -f -y -s 0` output: per tid, what [`StracedThread`] holds.
fn straced(text: &str) -> std::collections::BTreeMap<u64, StracedThread> {
    let mut out: std::collections::BTreeMap<u64, StracedThread> = Default::default();
    // Calls interrupted by another thread's line: tid -> the call's opening, until resumed.
    let mut pending: std::collections::BTreeMap<u64, String> = Default::default();
    for line in text.lines() {
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(tid) = tid.parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let call = if let Some(opening) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(tid, opening.to_owned());
            continue;
        } else if rest.starts_with("<... ") {
            match pending.remove(&tid) {
                Some(opening) => format!("{opening} {rest}"),
                None => continue,
            }
        } else {
            rest.to_owned()
        };
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        let ret: i64 = call
            .rsplit_once(" = ")
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|r| r.parse().ok())
            .unwrap_or(-1);
        if ret < 0 {
            continue;
        }
        // The first argument's annotation: `5</path/to/file>` or `4<socket:[1234]>`.
        let what = |arg: &str| -> String {
            arg.split_once('<')
                .and_then(|(_, a)| a.rsplit_once('>'))
                .map_or_else(String::new, |(a, _)| a.to_owned())
        };
        let first = what(args.split(", ").next().unwrap_or(""));
        let regular = first.starts_with('/') && std::path::Path::new(&first).is_file();
        let t = out.entry(tid).or_default();
        match name {
            "read" if regular => {
                t.file_read_bytes += ret as u64;
                t.file_reads += 1;
            }
            "write" | "sendto" | "sendmsg" if first.starts_with("socket:") => {
                t.socket_write_bytes += ret as u64;
            }
            "sendfile" if first.starts_with("socket:") => t.sendfile_bytes += ret as u64,
            _ => {}
        }
    }
    out
}

/// A real program nobody here wrote: `python3 -m http.server` serving a file to `curl`, traced
/// by strace inside zcprof's run. Whether Python relays by copy or by sendfile depends on its
/// version; the finding must say what strace saw it do, thread by thread.
#[test]
fn python_http_server_findings_match_strace() {
    if !require_root_or_skip() {
        return;
    }
    let size = 8usize << 20;
    let file = data_file("http", size);
    let dir = file.parent().expect("scratch dir").to_owned();
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (trace, pidfile) = (dir.join("strace.txt"), dir.join("python.pid"));
    let script = format!(
        "strace -f -y -qq -s 0 -o {trace} -e trace=read,write,sendto,sendmsg,sendfile -- \
           sh -c 'echo $$ > {pidfile}; exec python3 -m http.server {port} --bind 127.0.0.1 \
           --directory {dir} > {dir}/python.log 2>&1' & \
         for i in $(seq 400); do \
           curl -sf -o {dir}/got http://127.0.0.1:{port}/blob && break; sleep 0.05; \
         done; \
         kill $(cat {pidfile}); wait; exit 0",
        trace = trace.display(),
        pidfile = pidfile.display(),
        dir = dir.display(),
    );
    let (doc, _) = run(&["sh", "-c", &script]);
    let got = std::fs::metadata(dir.join("got")).map_or(0, |m| m.len());
    assert_eq!(got, size as u64, "curl fetched the file");
    let python: u64 = std::fs::read_to_string(&pidfile)
        .expect("python's pid")
        .trim()
        .parse()
        .expect("a pid");
    let threads = straced(&std::fs::read_to_string(&trace).expect("strace's output"));
    // The handler: the thread that read the file (its reads, and any sendfile of it).
    let (&handler, seen) = threads
        .iter()
        .filter(|(_, t)| t.file_read_bytes >= size as u64 || t.sendfile_bytes >= size as u64)
        .max_by_key(|(_, t)| t.file_read_bytes + t.sendfile_bytes)
        .unwrap_or_else(|| panic!("strace saw no thread send the file: {threads:?}"));
    eprintln!("python {python}, handler thread {handler} as strace saw it: {seen:?}");
    let found = findings_of(&doc, "file_to_socket_by_copy", python);
    if seen.sendfile_bytes >= size as u64 {
        assert!(found.is_empty(), "Python used sendfile: {found:?}");
        return;
    }
    assert_eq!(found.len(), 1, "{}", doc["findings"]);
    let f = found[0];
    eprintln!("zcprof's finding: {f}");
    assert_eq!(u(f, "tid"), handler, "the handler thread");
    let e = &f["evidence"];
    assert_eq!(u(e, "file_read_bytes"), seen.file_read_bytes, "{e}");
    assert_eq!(u(e, "file_read_calls"), seen.file_reads, "{e}");
    assert_eq!(u(e, "socket_write_bytes"), seen.socket_write_bytes, "{e}");
    assert_eq!(
        u(e, "relayed_bytes"),
        seen.file_read_bytes.min(seen.socket_write_bytes)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_the_punt_tracepoint_punts_are_not_counted_and_io_uring_says_so() {
    if !require_root_or_skip() {
        return;
    }
    let size = 1usize << 20;
    let file = data_file("no-punt", size);
    let tally = file.with_extension("json");
    let (doc, status, stderr) = run_json(&[
        "run",
        "--json",
        "--tracepoint-override",
        "io_uring_queue_async_work=no_such_tracepoint",
        "--",
        env!("CARGO_BIN_EXE_zc-relay"),
        tally.to_str().expect("utf-8 path"),
        "uring-punt",
        file.to_str().expect("utf-8 path"),
        "16384",
    ]);
    assert!(status.success(), "{stderr}");
    assert_eq!(capability(&doc, "io_uring"), "degraded", "{stderr}");
    assert!(
        stderr.contains("io_uring_punted is not counted"),
        "{stderr}"
    );
    let pid = u(&doc, "pid");
    assert!(findings_of(&doc, "io_uring_punted", pid).is_empty());
    // The reads themselves are still counted, one completion each.
    let reads: u64 = uring_cells(process(&doc, pid), "read")
        .iter()
        .map(|c| u(c, "calls"))
        .sum();
    assert_eq!(reads, 64);
    let _ = std::fs::remove_dir_all(file.parent().expect("scratch dir"));
}
