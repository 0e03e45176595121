//! `--by-file` and `--by-peer`: bytes attributed to the files and sockets they went through,
//! checked against what a purpose-written program (a Python script, below) moved through each.

use std::{path::Path, process::Command};

use serde_json::Value;
use zcprof_tests::*;

/// Reads file A with read(), maps file B and touches every page, sendfile()s file C into a
/// socket pair (drained by a thread), and has two TCP clients on loopback send known amounts
/// to a server in the same process. Prints what it did as JSON.
const MOVER: &str = r#"
import json, mmap, os, socket, sys, threading
a, b, c = sys.argv[1:4]
fd = os.open(a, os.O_RDONLY)
while os.read(fd, 65536):
    pass
os.close(fd)
fd = os.open(b, os.O_RDONLY)
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
touched = sum(m[i] for i in range(0, len(m), 4096))
m.close(); os.close(fd)
tx, rx = socket.socketpair()
size_c = os.path.getsize(c)
def drain(s, n):
    got = 0
    while got < n:
        got += len(s.recv(min(65536, n - got)))
t = threading.Thread(target=drain, args=(rx, size_c)); t.start()
fd = os.open(c, os.O_RDONLY)
off = 0
while off < size_c:
    off += os.sendfile(tx.fileno(), fd, off, size_c - off)
t.join(); os.close(fd)
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(2)
port = srv.getsockname()[1]
clients = []
for n in (100000, 200000):
    cl = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    t = threading.Thread(target=drain, args=(conn, n)); t.start()
    cl.sendall(b"z" * n)
    t.join()
    clients.append({"bytes": n, "client_port": cl.getsockname()[1]})
print(json.dumps({"server_port": port, "clients": clients}))
"#;

fn file_of(dir: &Path, name: &str, size: usize) -> String {
    let p = dir.join(name);
    std::fs::write(&p, vec![7u8; size]).unwrap();
    p.to_str().unwrap().to_string()
}

/// The rows of `list` (files[] or peers[]) in `column` matching `pick`.
fn rows<'a>(
    doc: &'a Value,
    list: &str,
    column: &str,
    pick: impl Fn(&Value) -> bool,
) -> Vec<&'a Value> {
    doc[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list}[] in the document"))
        .iter()
        .filter(|r| r["column"] == column && pick(r))
        .collect()
}

#[test]
fn bytes_go_to_the_files_and_peers_they_went_through() {
    if !require_root_or_skip() {
        return;
    }
    let dir = scratch_dir("attribution");
    let (size_a, size_b, size_c) = (1_000_003usize, 1 << 20, 777_777usize);
    let a = file_of(&dir, "read.bin", size_a);
    let b = file_of(&dir, "mapped.bin", size_b);
    let c = file_of(&dir, "sent.bin", size_c);
    let script = dir.join("mover.py");
    std::fs::write(&script, MOVER).unwrap();
    let out_path = dir.join("mover.json");
    let cmd = format!(
        "python3 {} {a} {b} {c} > {}",
        script.display(),
        out_path.display()
    );
    let (doc, status, stderr) = run_json(&[
        "run",
        "--json",
        "--by-file",
        "--by-peer",
        "--top",
        "100",
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    assert!(status.success(), "zcprof run failed:\n{stderr}");
    let said: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    let one = |list: &str, column: &str, pick: &dyn Fn(&Value) -> bool| -> u64 {
        let found = rows(&doc, list, column, pick);
        assert_eq!(found.len(), 1, "{list} {column}: {found:?}");
        u(found[0], "bytes")
    };
    let path_is = |p: &str| {
        let p = p.to_string();
        move |r: &Value| r["path"] == p.as_str()
    };
    assert_eq!(
        one("files", "cpu_kernel_to_user", &path_is(&a)),
        size_a as u64
    );
    assert_eq!(one("files", "zero_copy", &path_is(&c)), size_c as u64);
    assert!(
        rows(&doc, "files", "cpu_kernel_to_user", path_is(&c)).is_empty(),
        "the sent file was never read into user space"
    );
    // Faults map the file in only where the kernel has the filemap tracepoints.
    let mmap_exact = doc["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "mmap_fault_in" && c["state"] == "exact");
    if mmap_exact {
        assert_eq!(one("files", "mmap_fault_in", &path_is(&b)), size_b as u64);
    }
    // The socket pair: the file's bytes went in by reference and out by copy.
    let unix = |r: &Value| r["protocol"] == "unix/stream";
    assert_eq!(one("peers", "zero_copy", &unix), size_c as u64);
    assert!(
        rows(&doc, "peers", "cpu_kernel_to_user", unix)
            .iter()
            .any(|r| u(r, "bytes") == size_c as u64)
    );
    // Two TCP connections on loopback, each side with exactly its bytes.
    let server = format!("127.0.0.1:{}", said["server_port"]);
    for client in said["clients"].as_array().unwrap() {
        let n = u(client, "bytes");
        let me = format!("127.0.0.1:{}", client["client_port"]);
        let sent = one("peers", "cpu_user_to_kernel", &|r: &Value| {
            r["protocol"] == "tcp" && r["local"] == me.as_str() && r["peer"] == server.as_str()
        });
        assert_eq!(sent, n, "client {me} -> {server}");
        let received = one("peers", "cpu_kernel_to_user", &|r: &Value| {
            r["protocol"] == "tcp" && r["local"] == server.as_str() && r["peer"] == me.as_str()
        });
        assert_eq!(received, n, "server {server} <- {me}");
    }
    assert_eq!(u(&doc["lost"], "object_table_full"), 0);
}

#[test]
fn without_the_options_there_is_no_attribution() {
    if !require_root_or_skip() {
        return;
    }
    let cat = ["sh", "-c", "cat /etc/hostname > /dev/null"];
    let (doc, status, stderr) = run_json(&["run", "--json", "--", cat[0], cat[1], cat[2]]);
    assert!(status.success(), "{stderr}");
    assert!(doc.get("files").is_none() && doc.get("peers").is_none());
    let out = Command::new(zcprof_bin())
        .args(["run", "--by-file", "--"])
        .args(cat)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/etc/hostname"), "{text}");
    assert!(!text.contains("Peers"), "{text}");
}

#[test]
fn a_full_table_goes_to_other_and_is_counted_lost() {
    if !require_root_or_skip() {
        return;
    }
    // Three files and a table of two: the third file's bytes go to [other], counted.
    let dir = scratch_dir("attribution-full");
    let files: Vec<String> = (0..3)
        .map(|i| file_of(&dir, &format!("f{i}"), 10_000))
        .collect();
    let cmd = format!("cat {} > /dev/null", files.join(" "));
    let (doc, status, stderr) = run_json(&[
        "run",
        "--json",
        "--by-file",
        "--max-objects",
        "2",
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    assert!(status.success(), "zcprof run failed:\n{stderr}");
    let total: u64 = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["column"] == "cpu_kernel_to_user")
        .map(|r| u(r, "bytes"))
        .sum();
    let other: u64 = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["other"] == true)
        .map(|r| u(r, "bytes"))
        .sum();
    assert!(other > 0, "an [other] row: {}", doc["files"]);
    assert!(u(&doc["lost"], "object_table_full") > 0);
    // Every byte read (cat's and the dynamic loader's, all from files) is in a row or in
    // [other], none twice.
    let read: u64 = processes(&doc)
        .iter()
        .map(|p| u(&p["ledger"], "cpu_kernel_to_user"))
        .sum();
    assert_eq!(total, read, "attributed {total} of {read} read bytes");
}

/// Opens 200 files of different sizes at once and reads them in three interleaved passes (a
/// third of each file per pass), then closes them and reads 50 more files through the
/// same descriptor numbers, while moving itself from CPU to CPU: more descriptors than a CPU's
/// recent slots, so slots change hands (their bytes go to the table) and hold a reused number
/// after its close, and each file's bytes are spread over CPUs. Prints each file's size as
/// JSON.
const ROUND_ROBIN: &str = r#"
import json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
cpus = sorted(os.sched_getaffinity(0))
paths = [os.path.join(d, "f%03d" % i) for i in range(n + 50)]
for i, p in enumerate(paths):
    with open(p, "wb") as f:
        f.write(b"x" * (3000 + 17 * i))
fds = [os.open(p, os.O_RDONLY) for p in paths[:n]]
for k in range(3):
    for i, fd in enumerate(fds):
        os.sched_setaffinity(0, {cpus[(i + k) % len(cpus)]})
        size = 3000 + 17 * i
        os.read(fd, size // 3 if k < 2 else size)
for fd in fds:
    os.close(fd)
for p in paths[n:]:
    fd = os.open(p, os.O_RDONLY)
    while os.read(fd, 1000):
        pass
    os.close(fd)
print(json.dumps({p: os.path.getsize(p) for p in paths}))
"#;

#[test]
fn every_file_gets_its_bytes_when_descriptors_outnumber_the_slots() {
    if !require_root_or_skip() {
        return;
    }
    let dir = scratch_dir("attribution-slots");
    let script = dir.join("round_robin.py");
    std::fs::write(&script, ROUND_ROBIN).unwrap();
    let out_path = dir.join("sizes.json");
    let cmd = format!(
        "python3 {} {} 200 > {}",
        script.display(),
        dir.display(),
        out_path.display()
    );
    let (doc, status, stderr) = run_json(&[
        "run",
        "--json",
        "--by-file",
        "--top",
        "1000",
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    assert!(status.success(), "zcprof run failed:\n{stderr}");
    let sizes: Value = serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap();
    let sizes = sizes.as_object().unwrap();
    assert_eq!(sizes.len(), 250);
    for (path, size) in sizes {
        let found = rows(&doc, "files", "cpu_kernel_to_user", |r| {
            r["path"] == path.as_str()
        });
        assert_eq!(found.len(), 1, "{path}: {found:?}");
        assert_eq!(u(found[0], "bytes"), size.as_u64().unwrap(), "{path}");
    }
    assert_eq!(u(&doc["lost"], "object_table_full"), 0);
}
