//! The copy ledger: every data-moving syscall of the worker lands in the expected column with
//! exactly the calls, bytes and errors the child counted at its call sites. The worker does
//! nothing else, so its ledger totals are exact too.

use serde_json::Value;
use zcprof_tests::*;

const CHILD: &str = env!("CARGO_BIN_EXE_zc-child");

const U2K: &str = "cpu_user_to_kernel";
const K2U: &str = "cpu_kernel_to_user";
const IN_KERNEL: &str = "cpu_in_kernel";
const ZERO_COPY: &str = "zero_copy";
const DMA: &str = "dma_direct";
const NOT_MOVED: &str = "not_moved";
const FAULT_IN: &str = "mmap_fault_in";

/// Runs `action` and checks each (syscall, column) against the tally, that the worker has no
/// other transfer cells (except `file_fault` when `file_fault_bytes` is given), and that its
/// ledger equals the sum of its cells per column.
fn check(action: &[&str], expect: &[(&str, &str)], file_fault_bytes: Option<u64>) -> ChildRun {
    let r = run_child(CHILD, action);
    let w = r.worker();
    let mut columns: std::collections::BTreeMap<&str, u64> = Default::default();
    for &(syscall, column) in expect {
        let (calls, bytes, errors) = r.tally.cell(syscall);
        assert!(
            calls > 0,
            "{action:?}: the child made no {syscall} call: {:?}",
            r.tally.0
        );
        assert_cell(w, syscall, column, calls, bytes, errors);
        *columns.entry(column).or_default() += bytes;
    }
    let mut allowed: Vec<&str> = expect.iter().map(|e| e.0).collect();
    if let Some(b) = file_fault_bytes {
        let cells = transfers(w, "file_fault");
        assert_eq!(cells.len(), 1, "one file_fault cell: {cells:?}");
        assert_eq!(cells[0]["column"], FAULT_IN);
        assert_eq!(
            u(cells[0], "bytes"),
            b,
            "file pages mapped by faults, in bytes: each of the file's pages is mapped exactly once \
             (the kernel's mm_filemap_map_pages range is the fault-around window, which can \
             include pages an earlier fault already mapped)"
        );
        assert!(u(cells[0], "calls") >= 1);
        *columns.entry(FAULT_IN).or_default() += b;
        allowed.push("file_fault");
    }
    for t in w["transfers"].as_array().expect("transfers") {
        let s = t["syscall"].as_str().unwrap_or("?");
        assert!(
            allowed.contains(&s),
            "{action:?}: unexpected transfer cell {t} (the worker made no such call)"
        );
    }
    for c in COLUMNS {
        assert_eq!(
            w["ledger"][*c].as_u64(),
            Some(columns.get(c).copied().unwrap_or(0)),
            "{action:?}: ledger.{c}"
        );
    }
    for t in w["transfers"].as_array().unwrap() {
        let hist: u64 = t["size_log2"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        assert_eq!(
            hist,
            u(t, "calls") - u(t, "errors"),
            "{action:?}: size_log2 counts every successful call once: {t}"
        );
    }
    r
}

macro_rules! ledger_test {
    ($name:ident, [$($a:expr),*], [$(($s:expr, $c:expr)),*]) => {
        #[test]
        fn $name() {
            if !require_root_or_skip() {
                return;
            }
            check(&[$($a),*], &[$(($s, $c)),*], None);
        }
    };
}

ledger_test!(
    read_file,
    ["read-file", "1000003", "65536"],
    [("read", K2U)]
);
ledger_test!(
    write_file,
    ["write-file", "1000003", "65536"],
    [("write", U2K)]
);
ledger_test!(pread, ["pread", "1000003", "65536"], [("pread64", K2U)]);
ledger_test!(pwrite, ["pwrite", "1000003", "65536"], [("pwrite64", U2K)]);
ledger_test!(readv, ["readv", "1000003", "65536"], [("readv", K2U)]);
ledger_test!(writev, ["writev", "1000003", "65536"], [("writev", U2K)]);
ledger_test!(preadv, ["preadv", "1000003", "65536"], [("preadv", K2U)]);
ledger_test!(preadv2, ["preadv2", "1000003", "65536"], [("preadv2", K2U)]);
ledger_test!(pwritev, ["pwritev", "1000003", "65536"], [("pwritev", U2K)]);
ledger_test!(
    pwritev2,
    ["pwritev2", "1000003", "65536"],
    [("pwritev2", U2K)]
);
ledger_test!(
    pipe,
    ["pipe-read", "1000003", "65536"],
    [("write", U2K), ("read", K2U)]
);
ledger_test!(
    unix_stream_socket,
    ["socket-send", "1000003", "65536"],
    [("write", U2K), ("read", K2U)]
);
ledger_test!(
    udp_sendto_recvfrom,
    ["sendto", "1000003", "32768"],
    [("sendto", U2K), ("recvfrom", K2U)]
);
ledger_test!(
    udp_sendmsg_recvmsg,
    ["sendmsg", "1000003", "32768"],
    [("sendmsg", U2K), ("recvmsg", K2U)]
);
ledger_test!(
    sendmmsg_recvmmsg,
    ["sendmmsg", "1000003", "8192", "4"],
    [("sendmmsg", U2K), ("recvmmsg", K2U)]
);
ledger_test!(
    sendfile_to_socket,
    ["sendfile-socket", "1000003", "65536"],
    [("sendfile", ZERO_COPY), ("recvfrom", K2U)]
);
ledger_test!(
    sendfile_to_file,
    ["sendfile-file", "1000003", "65536"],
    [("sendfile", IN_KERNEL)]
);
ledger_test!(
    splice_file_to_pipe,
    ["splice-file-pipe", "1000003", "65536"],
    [("splice", ZERO_COPY), ("read", K2U)]
);
ledger_test!(
    splice_pipe_to_file,
    ["splice-pipe-file", "1000003", "65536"],
    [("write", U2K), ("splice", IN_KERNEL)]
);
ledger_test!(
    splice_socket_to_pipe,
    ["splice-socket-pipe", "1000003", "65536"],
    [("write", U2K), ("splice", ZERO_COPY), ("read", K2U)]
);
ledger_test!(
    splice_pipe_to_socket,
    ["splice-pipe-socket", "1000003", "65536"],
    [("write", U2K), ("splice", ZERO_COPY), ("read", K2U)]
);
ledger_test!(
    tee,
    ["tee", "1000003", "65536"],
    [("write", U2K), ("tee", ZERO_COPY), ("read", K2U)]
);
ledger_test!(
    vmsplice,
    ["vmsplice", "1000003", "65536"],
    [("vmsplice", ZERO_COPY), ("read", K2U)]
);
ledger_test!(
    copy_file_range,
    ["copy-file-range", "1000003", "65536"],
    [("copy_file_range", IN_KERNEL)]
);
ledger_test!(
    mmap_anon,
    ["mmap-anon", "1000003"],
    [("mmap_anon", NOT_MOVED), ("munmap", NOT_MOVED)]
);
ledger_test!(
    odirect_read,
    ["odirect-read", "1048576", "65536"],
    [("read", DMA)]
);
ledger_test!(
    odirect_write,
    ["odirect-write", "1048576", "65536"],
    [("write", DMA)]
);
ledger_test!(
    odirect_pwrite,
    ["odirect-pwrite", "1048576", "65536"],
    [("pwrite64", DMA)]
);
ledger_test!(
    sendfile_to_pipe,
    ["sendfile-pipe", "1000003", "65536"],
    [("sendfile", ZERO_COPY), ("read", K2U)]
);
ledger_test!(
    sendfile_to_char_device,
    ["sendfile-dev", "1000003", "65536"],
    [("sendfile", IN_KERNEL)]
);
ledger_test!(
    sendfile_to_odirect_file,
    ["sendfile-odirect", "1048576", "65536"],
    [("sendfile", DMA)]
);
ledger_test!(
    splice_pipe_to_pipe,
    ["splice-pipe-pipe", "1000003", "65536"],
    [("write", U2K), ("splice", ZERO_COPY), ("read", K2U)]
);
ledger_test!(
    splice_device_to_pipe,
    ["splice-dev-pipe", "1000003", "65536"],
    [("splice", IN_KERNEL), ("read", K2U)]
);
ledger_test!(
    vmsplice_from_read_end,
    ["vmsplice-read", "1000003", "65536"],
    [("write", U2K), ("vmsplice", K2U)]
);

/// A file mapped and read page by page: the mapping and unmapping move nothing; the file's
/// pages come in by faults (fault-around maps several cached pages per fault), each page once.
#[test]
fn mmap_file() {
    if !require_root_or_skip() {
        return;
    }
    let n = 1 << 20;
    let pages = (n as u64).div_ceil(4096);
    let r = check(
        &["mmap-file", &n.to_string()],
        &[("mmap_file", NOT_MOVED), ("munmap", NOT_MOVED)],
        Some(pages * 4096),
    );
    assert_eq!(r.tally.get("file_pages_touched"), pages);
}

/// MSG_ZEROCOPY over loopback: the kernel falls back to a copy, so the bytes are CPU copies;
/// the requests are still counted.
#[test]
fn msg_zerocopy_over_loopback() {
    if !require_root_or_skip() {
        return;
    }
    let r = check(
        &["msg-zerocopy", "1000003", "65536"],
        &[("sendto", U2K), ("recvfrom", K2U), ("recvmsg", K2U)],
        None,
    );
    let cell = transfer(r.worker(), "sendto", U2K).unwrap();
    assert_eq!(
        u(cell, "zerocopy_requested"),
        r.tally.zerocopy_requested("sendto"),
        "every send asked for MSG_ZEROCOPY"
    );
    assert_eq!(
        r.tally.zerocopy_requested("sendto"),
        r.tally.cell("sendto").0
    );
    // The kernel's own word, read back from the completions: every send was copied.
    let completed = r.tally.cell("zerocopy-completed").0;
    assert_eq!(completed, r.tally.cell("sendto").0, "every send completed");
    assert_eq!(
        r.worker()["zerocopy_completions"],
        serde_json::json!({"sends": completed, "copied": r.tally.cell("zerocopy-copied").0}),
        "zcprof reads the same completions"
    );
    assert_eq!(
        r.tally.cell("zerocopy-copied").0,
        completed,
        "loopback: all copied"
    );
}

/// Runs an io_uring `action` and checks its operations against the tally: exactly one
/// io_uring cell, operation `op` (`opcode`) in `column`, with the child's calls, bytes and
/// errors; the syscalls in `expect` as in [`check`]; no other transfer cells but the ring's own
/// mapping (`mmap_file`/`munmap`, made inside the io-uring crate: `not_moved`); and a ledger
/// that is exactly the sum of those cells.
fn check_uring(
    action: &[&str],
    op: &str,
    opcode: u64,
    column: &str,
    expect: &[(&str, &str)],
) -> ChildRun {
    let r = run_child(CHILD, action);
    let w = r.worker();
    let mut columns: std::collections::BTreeMap<&str, u64> = Default::default();
    let (calls, bytes, errors) = r.tally.cell(&format!("io_uring:{op}"));
    assert!(
        calls > 0,
        "{action:?}: the child made no {op}: {:?}",
        r.tally.0
    );
    let ops = w["io_uring"].as_array().expect("io_uring array");
    assert_eq!(
        ops.len(),
        1,
        "{action:?}: one io_uring cell ({op}): {ops:?}"
    );
    let c = &ops[0];
    assert_eq!(c["op"], op, "{action:?}: io_uring op: {c}");
    assert_eq!(u(c, "opcode"), opcode, "{action:?}: IORING_OP_ of {op}");
    assert_eq!(
        c["column"], column,
        "{action:?}: io_uring {op}: wrong column"
    );
    assert_eq!(
        (u(c, "calls"), u(c, "bytes"), u(c, "errors")),
        (calls, bytes, errors),
        "{action:?}: io_uring {op}/{column}: (calls, bytes, errors) zcprof vs child's tally"
    );
    *columns.entry(column).or_default() += bytes;
    for &(syscall, col) in expect {
        let (calls, bytes, errors) = r.tally.cell(syscall);
        assert!(calls > 0, "{action:?}: the child made no {syscall} call");
        assert_cell(w, syscall, col, calls, bytes, errors);
        *columns.entry(col).or_default() += bytes;
    }
    for t in w["transfers"].as_array().expect("transfers") {
        let s = t["syscall"].as_str().unwrap_or("?");
        if expect.iter().any(|e| e.0 == s) {
            continue;
        }
        assert!(
            matches!(s, "mmap_file" | "munmap") && t["column"] == NOT_MOVED,
            "{action:?}: unexpected transfer cell {t} (only the ring's mapping is not tallied)"
        );
        *columns.entry(NOT_MOVED).or_default() += u(t, "bytes");
    }
    for col in COLUMNS {
        assert_eq!(
            w["ledger"][*col].as_u64(),
            Some(columns.get(col).copied().unwrap_or(0)),
            "{action:?}: ledger.{col}"
        );
    }
    r
}

/// io_uring READ operations are in the io_uring ledger (opcode 22), not in the syscall one.
#[test]
fn io_uring_read() {
    if !require_root_or_skip() {
        return;
    }
    let r = check_uring(&["io-uring", "1000003", "65536"], "read", 22, K2U, &[]);
    assert!(
        transfers(r.worker(), "read").is_empty(),
        "no read(2) was made"
    );
}

/// IORING_OP_WRITE to a regular file: a CPU copy into the page cache, like write(2).
#[test]
fn io_uring_write() {
    if !require_root_or_skip() {
        return;
    }
    let r = check_uring(
        &["io-uring-write", "1000003", "65536"],
        "write",
        23,
        U2K,
        &[],
    );
    assert!(
        transfers(r.worker(), "write").is_empty(),
        "no write(2) was made"
    );
}

/// IORING_OP_WRITE to an O_DIRECT file: the device reads the user pages.
#[test]
fn io_uring_write_odirect() {
    if !require_root_or_skip() {
        return;
    }
    check_uring(
        &["io-uring-write-direct", "1048576", "65536"],
        "write",
        23,
        DMA,
        &[],
    );
}

/// IORING_OP_SEND on a TCP loopback socket: a CPU copy into the socket buffer, like send(2);
/// the peer's recv() is the other copy.
#[test]
fn io_uring_send() {
    if !require_root_or_skip() {
        return;
    }
    let r = check_uring(
        &["io-uring-send", "1000003", "65536"],
        "send",
        26,
        U2K,
        &[("recvfrom", K2U)],
    );
    assert!(
        transfers(r.worker(), "sendto").is_empty(),
        "no send(2) was made"
    );
}

/// One descriptor number re-pointed by dup2, switched to O_DIRECT by fcntl, then closed and
/// opened again on a buffered file: each read lands in the column of what the descriptor was
/// at that moment, although the kernel side caches what it learnt of each descriptor.
#[test]
fn reused_descriptor_is_reclassified() {
    if !require_root_or_skip() {
        return;
    }
    let r = run_child(CHILD, &["fd-reuse", "65536"]);
    let w = r.worker();
    let cells: Vec<(String, u64, u64, u64)> = transfers(w, "read")
        .iter()
        .map(|c| {
            let col = c["column"].as_str().unwrap_or("?").to_string();
            (col, u(c, "calls"), u(c, "bytes"), u(c, "errors"))
        })
        .collect();
    let direct = r.tally.cell("read-direct");
    let buffered = r.tally.cell("read-buffered");
    assert_eq!(direct, (2, 2 * 65536, 0), "the child's own tally");
    assert_eq!(buffered, (2, 2 * 65536, 0), "the child's own tally");
    assert_eq!(
        cells,
        vec![
            (K2U.to_string(), buffered.0, buffered.1, buffered.2),
            (DMA.to_string(), direct.0, direct.1, direct.2),
        ],
        "read cells by column"
    );
}

/// A read() of an empty non-blocking pipe fails with EAGAIN: each is a call and an error of the
/// read cell, and one `would_block`, exactly as many as the child counted.
#[test]
fn eagain_counts_as_would_block() {
    if !require_root_or_skip() {
        return;
    }
    let r = check(&["would-block", "5000"], &[("read", K2U)], None);
    assert_eq!(r.tally.cell("read"), (5000, 0, 5000));
    assert_eq!(u(r.worker(), "would_block"), 5000, "{}", r.worker());
}
