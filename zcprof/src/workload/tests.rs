//! Every strategy end to end at 4 MiB (real receiver process, real loopback socket), checking
//! that the receiver got every byte and that the tally is self-consistent.

use super::tally::{CopyTally, SyscallTally};
use super::*;
use clap::ValueEnum;

const MIB4: u64 = 4 << 20;

fn args(strategy: Strategy, size: u64, buffer: u64, file: Option<PathBuf>) -> WorkloadArgs {
    WorkloadArgs {
        strategy,
        size,
        buffer,
        file,
        start_gate: false,
    }
}

fn run_ok(strategy: Strategy, size: u64, buffer: u64, file: Option<PathBuf>) -> Tally {
    match run(&args(strategy, size, buffer, file)) {
        Ok(t) => t,
        Err(e) => panic!("{strategy} failed: {e}"),
    }
}

/// Common checks, then the tally of `name`.
fn check_common(t: &Tally, strategy: Strategy, size: u64) {
    assert_eq!(t.strategy, strategy.name());
    assert_eq!(t.bytes, size, "{strategy}: bytes");
    assert_eq!(t.receiver_bytes, size, "{strategy}: receiver_bytes");
    assert!(t.elapsed_s > 0.0, "{strategy}: elapsed");
    assert!(t.throughput_mib_s > 0.0, "{strategy}: throughput");
    assert!(t.cpu_user_s >= 0.0 && t.cpu_sys_s >= 0.0);
    assert_eq!(t.sender_pid, std::process::id());
    if strategy == Strategy::CopyFileRange {
        assert_eq!(t.receiver_pid, None);
        assert!(t.control_syscalls.is_empty());
    } else {
        let pid = t.receiver_pid.expect("a receiver process");
        assert_ne!(
            pid, t.sender_pid,
            "{strategy}: receiver must be another process"
        );
        // The stream end and the receiver's report.
        assert_eq!(t.control_syscalls["shutdown"].calls, 1);
        assert_eq!(t.control_syscalls["read"].bytes, 8);
    }
    for (name, s) in &t.syscalls {
        assert!(s.calls > 0, "{strategy}: {name} listed with no calls");
    }
    if strategy != Strategy::HeapBuffer {
        assert_eq!(
            t.user_space_copies,
            CopyTally::default(),
            "{strategy}: user copies"
        );
    }
    if !matches!(strategy, Strategy::IoUring | Strategy::MsgZerocopy) {
        assert!(t.zerocopy.is_none(), "{strategy}: zerocopy");
    }
    if strategy != Strategy::IoUring {
        assert!(t.io_uring_ops.is_empty(), "{strategy}: io_uring ops");
    }
}

fn keys(t: &Tally) -> Vec<&str> {
    t.syscalls.keys().map(String::as_str).collect()
}

fn sc(t: &Tally, name: &str) -> SyscallTally {
    t.syscalls.get(name).copied().unwrap_or_default()
}

/// Read and write both moved exactly `size` bytes, and nothing else was called.
fn check_read_write(t: &Tally, size: u64) {
    assert_eq!(keys(t), ["read", "write"]);
    assert_eq!(sc(t, "read").bytes, size);
    assert_eq!(sc(t, "write").bytes, size);
    // Reads from the page cache are never short here: one per chunk.
    assert_eq!(sc(t, "read").calls, size.div_ceil(t.buffer));
}

#[test]
fn read_write() {
    let t = run_ok(Strategy::ReadWrite, MIB4, 64 << 10, None);
    check_common(&t, Strategy::ReadWrite, MIB4);
    check_read_write(&t, MIB4);
}

#[test]
fn heap_buffer() {
    let t = run_ok(Strategy::HeapBuffer, MIB4, 64 << 10, None);
    check_common(&t, Strategy::HeapBuffer, MIB4);
    check_read_write(&t, MIB4);
    assert_eq!(t.user_space_copies.bytes, MIB4);
    assert_eq!(t.user_space_copies.calls, sc(&t, "read").calls);
}

#[test]
fn mmap_write() {
    let t = run_ok(Strategy::MmapWrite, MIB4, 64 << 10, None);
    check_common(&t, Strategy::MmapWrite, MIB4);
    assert_eq!(keys(&t), ["mmap", "munmap", "write"]);
    assert_eq!(
        sc(&t, "mmap"),
        SyscallTally {
            calls: 1,
            bytes: MIB4,
            errors: 0
        }
    );
    assert_eq!(
        sc(&t, "munmap"),
        SyscallTally {
            calls: 1,
            bytes: MIB4,
            errors: 0
        }
    );
    assert_eq!(sc(&t, "write").bytes, MIB4);
}

#[test]
fn sendfile() {
    let t = run_ok(Strategy::Sendfile, MIB4, 64 << 10, None);
    check_common(&t, Strategy::Sendfile, MIB4);
    assert_eq!(keys(&t), ["sendfile"]);
    assert_eq!(sc(&t, "sendfile").bytes, MIB4);
}

#[test]
fn splice() {
    let t = run_ok(Strategy::Splice, MIB4, 64 << 10, None);
    check_common(&t, Strategy::Splice, MIB4);
    assert_eq!(keys(&t), ["splice"]);
    // Every byte is spliced twice: file -> pipe, pipe -> socket.
    assert_eq!(sc(&t, "splice").bytes, 2 * MIB4);
}

#[test]
fn vmsplice() {
    let t = run_ok(Strategy::Vmsplice, MIB4, 64 << 10, None);
    check_common(&t, Strategy::Vmsplice, MIB4);
    assert_eq!(keys(&t), ["read", "splice", "vmsplice"]);
    assert_eq!(sc(&t, "read").bytes, MIB4);
    assert_eq!(sc(&t, "vmsplice").bytes, MIB4);
    assert_eq!(sc(&t, "splice").bytes, MIB4);
}

#[test]
fn io_uring() {
    let t = run_ok(Strategy::IoUring, MIB4, 64 << 10, None);
    check_common(&t, Strategy::IoUring, MIB4);
    assert_eq!(keys(&t), ["io_uring_enter"]);
    let chunks = MIB4.div_ceil(t.buffer);
    assert!(sc(&t, "io_uring_enter").calls >= 1);
    assert!(t.io_uring_ops["read"] >= chunks);
    match t.zerocopy {
        Some(zc) => {
            assert!(t.io_uring_ops["send_zc"] >= chunks);
            assert!(!t.io_uring_ops.contains_key("send"));
            assert!(zc.sends >= 1 && zc.sends <= t.io_uring_ops["send_zc"]);
            assert_eq!(zc.completions, zc.sends);
            assert!(zc.copied, "loopback always copies");
        }
        None => assert!(t.io_uring_ops["send"] >= chunks),
    }
}

#[test]
fn msg_zerocopy() {
    let t = run_ok(Strategy::MsgZerocopy, MIB4, 64 << 10, None);
    check_common(&t, Strategy::MsgZerocopy, MIB4);
    assert_eq!(keys(&t), ["read", "recvmsg", "sendmsg"]);
    assert_eq!(sc(&t, "read").bytes, MIB4);
    assert_eq!(sc(&t, "sendmsg").bytes, MIB4);
    // The error queue carries no payload.
    assert_eq!(sc(&t, "recvmsg").bytes, 0);
    let zc = t.zerocopy.expect("zero-copy counters");
    assert_eq!(zc.sends, sc(&t, "sendmsg").calls);
    assert_eq!(zc.completions, zc.sends);
    assert!(zc.copied, "loopback always copies");
}

#[test]
fn direct_io() {
    let t = run_ok(Strategy::DirectIo, MIB4, 64 << 10, None);
    check_common(&t, Strategy::DirectIo, MIB4);
    check_read_write(&t, MIB4);
}

#[test]
fn copy_file_range() {
    let t = run_ok(Strategy::CopyFileRange, MIB4, 64 << 10, None);
    check_common(&t, Strategy::CopyFileRange, MIB4);
    assert_eq!(keys(&t), ["copy_file_range"]);
    assert_eq!(sc(&t, "copy_file_range").bytes, MIB4);
    // The destination file is gone.
    let dir = t.file.parent().expect("a directory");
    let prefix = format!(
        "{}.copy-{}-",
        t.file.file_name().expect("a name").to_string_lossy(),
        std::process::id()
    );
    let leftovers = std::fs::read_dir(dir)
        .expect("read temp dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count();
    assert_eq!(leftovers, 0);
}

/// Sizes that are not a multiple of the buffer, an explicit `--file` that has the wrong size
/// (regenerated), and buffers larger than a pipe.
#[test]
fn odd_sizes_and_explicit_file() {
    let path =
        std::env::temp_dir().join(format!("zcprof-workload-test-{}.dat", std::process::id()));
    std::fs::write(&path, b"wrong size").expect("write a small file");
    let size = 1_000_003;
    for &strategy in Strategy::value_variants() {
        if strategy == Strategy::DirectIo {
            continue;
        }
        for buffer in [4000, 256 << 10] {
            let t = run_ok(strategy, size, buffer, Some(path.clone()));
            check_common(&t, strategy, size);
            assert_eq!(t.file, path);
        }
    }
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), size);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn direct_io_rounds_up_to_blocks() {
    let t = run_ok(Strategy::DirectIo, MIB4 + 1, 5000, None);
    check_common(&t, Strategy::DirectIo, MIB4 + 4096);
    assert_eq!(t.buffer, 8192);
    check_read_write(&t, MIB4 + 4096);
    let _ = std::fs::remove_file(&t.file);
}

#[test]
fn invalid_args() {
    for (size, buffer) in [(0, 64 << 10), (MIB4, 0), (MIB4, MAX_BUFFER + 1)] {
        let r = run(&args(Strategy::ReadWrite, size, buffer, None));
        assert!(
            matches!(r, Err(WorkloadError::InvalidArgs(_))),
            "{size}/{buffer}: {r:?}"
        );
    }
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("256M"), Ok(268_435_456));
    assert_eq!(parse_size("64K"), Ok(65_536));
    assert_eq!(parse_size("64k"), Ok(65_536));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    assert_eq!(parse_size("4kib"), Ok(4096));
    assert_eq!(parse_size("3MB"), Ok(3 << 20));
    assert_eq!(parse_size("12345"), Ok(12_345));
    assert_eq!(parse_size("512B"), Ok(512));
    assert_eq!(parse_size(" 7 "), Ok(7));
    for bad in ["", "M", "1.5M", "-1", "1T", "1iB", "K1", "1 0"] {
        assert!(parse_size(bad).is_err(), "{bad:?} should not parse");
    }
    assert!(parse_size("99999999999G").is_err(), "overflow");
}

#[test]
fn strategy_names_match_the_cli() {
    for &s in Strategy::value_variants() {
        let v = s.to_possible_value().expect("visible");
        assert_eq!(v.get_name(), s.name());
        assert_eq!(serde_json::to_value(s).expect("serialise"), s.name());
    }
    assert_eq!(Strategy::value_variants().len(), 10);
}

#[test]
fn args_parse_with_clap() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        w: WorkloadArgs,
    }
    let cli = Cli::try_parse_from(["x", "--strategy", "msg-zerocopy"]).expect("parse");
    assert_eq!(cli.w.strategy, Strategy::MsgZerocopy);
    assert_eq!(cli.w.size, 256 << 20);
    assert_eq!(cli.w.buffer, 64 << 10);
    assert!(cli.w.file.is_none());
    let cli = Cli::try_parse_from([
        "x",
        "--strategy",
        "io-uring",
        "--size",
        "4M",
        "--buffer",
        "1m",
        "--file",
        "/tmp/f",
    ])
    .expect("parse");
    assert_eq!((cli.w.size, cli.w.buffer), (4 << 20, 1 << 20));
    assert!(Cli::try_parse_from(["x", "--strategy", "io-uring", "--size", "4X"]).is_err());
}

#[test]
fn tally_serialises() {
    let t = run_ok(Strategy::Sendfile, 1 << 20, 64 << 10, None);
    let v = serde_json::to_value(&t).expect("serialise");
    assert_eq!(v["strategy"], "sendfile");
    assert_eq!(v["syscalls"]["sendfile"]["bytes"], 1 << 20);
    assert_eq!(v["user_space_copies"]["calls"], 0);
    assert!(v["zerocopy"].is_null());
}

#[test]
fn source_must_be_a_regular_file() {
    let dir = std::env::temp_dir();
    let r = run(&args(Strategy::ReadWrite, MIB4, 64 << 10, Some(dir)));
    match r {
        Err(e @ WorkloadError::SourceFile { .. }) => {
            assert!(e.to_string().contains("not a regular file"), "{e}")
        }
        other => panic!("expected a source file error, got {other:?}"),
    }
}

#[test]
fn dropped_receiver_is_killed_and_reaped() {
    let (receiver, sock) = receiver::Receiver::spawn().expect("spawn the receiver");
    let pid = receiver.pid() as libc::pid_t;
    // An error path: the sender gives up without shutting the stream down.
    drop(receiver);
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    assert!(
        !exists,
        "receiver {pid} still exists (or is an unreaped zombie)"
    );
    drop(sock);
}

#[test]
fn syscall_errors_name_the_call_and_the_descriptor() {
    let e = WorkloadError::syscall(
        "splice",
        "socket <- pipe read end",
        std::io::Error::from_raw_os_error(libc::EPIPE),
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("splice(socket <- pipe read end) failed: "),
        "{msg}"
    );
}
