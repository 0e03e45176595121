//! Bad input and hostile environments: one clear error line, a non-zero exit, and no BPF
//! program left behind.

use zcprof_tests::*;

fn assert_one_error_line(stderr: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one error line, got:\n{stderr}"
    );
    assert!(
        lines[0].starts_with("zcprof: error: "),
        "expected 'zcprof: error: ...', got:\n{stderr}"
    );
}

/// No zcprof program that was not loaded at `before` is left.
fn assert_no_new_programs(before: &std::collections::BTreeSet<u64>) {
    let left = new_zcprof_programs_after(before, std::time::Duration::from_secs(3));
    assert!(left.is_empty(), "zcprof programs left loaded: {left:?}");
}

#[test]
fn nonexistent_command() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_program_ids();
    let out = zcprof(&["run", "--", "/nonexistent/zc-no-such-command"]);
    assert!(!out.status.success());
    assert_one_error_line(&out.stderr);
    assert!(
        out.stderr.contains("zc-no-such-command"),
        "names the command:\n{}",
        out.stderr
    );
    assert_no_new_programs(&before);
}

#[test]
fn not_root() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_program_ids();
    let out = zcprof_as_nobody("nonroot", &["run", "--", "true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "unprivileged run succeeded");
    assert_one_error_line(&stderr);
    assert_no_new_programs(&before);
}

#[test]
fn missing_tracepoint() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_program_ids();
    let out = zcprof(&[
        "run",
        "--tracepoint-override",
        "sys_exit=no_such_tracepoint",
        "--",
        "true",
    ]);
    assert!(!out.status.success(), "ran without the sys_exit hook");
    assert_one_error_line(&out.stderr);
    assert!(
        out.stderr.contains("no_such_tracepoint"),
        "names the tracepoint:\n{}",
        out.stderr
    );
    assert_no_new_programs(&before);
}

#[test]
fn usage_errors_exit_2() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_program_ids();
    for args in [
        &["run"][..],
        &["attach", "--pid", "1", "--no-such-option"],
        &["no-such-command"],
    ] {
        let out = zcprof(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("error"),
            "{args:?}: an error message:\n{}",
            out.stderr
        );
    }
    assert_no_new_programs(&before);
}

/// A thread table too small for the command: the threads that did not fit are counted as
/// lost, one per thread, and the summary says which option to raise. Nothing is silently
/// missing and the command still runs to its end.
#[test]
fn full_thread_table_is_reported() {
    if !require_root_or_skip() {
        return;
    }
    // The shell and its five children, alive at once, need six slots; two are given. (Run
    // one after the other, they would fit: a dead thread's slot is free at once.)
    let script = "for i in 1 2 3 4 5; do sleep 1 & done; wait";
    let out = zcprof(&["run", "--max-threads", "2", "--", "/bin/sh", "-c", script]);
    assert!(out.status.success(), "{}", out.stderr);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("\"thread_table_full\": 4"),
        "four threads lost:\n{text}"
    );
    assert!(text.contains("raise it"), "names the remedy:\n{text}");
    let json = zcprof(&[
        "run",
        "--json",
        "--max-threads",
        "2",
        "--",
        "/bin/sh",
        "-c",
        script,
    ]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(doc["lost"]["thread_table_full"], 4);
}

/// A truncated or corrupted kernel BTF (`--btf PATH`, hidden, for this test): one clear line
/// naming the file and what is wrong with it, never a panic, nothing loaded.
#[test]
fn corrupt_btf_is_one_clear_error() {
    if !require_root_or_skip() {
        return;
    }
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("the kernel's BTF");
    let dir = scratch_dir("corrupt-btf");
    let truncated = dir.join("truncated.btf");
    std::fs::write(&truncated, &btf[..btf.len() / 2]).unwrap();
    let mut flipped = btf.clone();
    // The header's type-section length, made larger than the file.
    flipped[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let corrupted = dir.join("corrupted.btf");
    std::fs::write(&corrupted, &flipped).unwrap();
    let not_btf = dir.join("not.btf");
    std::fs::write(&not_btf, b"this is not BTF at all, only text").unwrap();
    let before = zcprof_program_ids();
    for file in [&truncated, &corrupted, &not_btf] {
        let path = file.to_str().unwrap();
        let out = zcprof(&["run", "--btf", path, "--", "true"]);
        assert!(!out.status.success(), "{path}: {}", out.stderr);
        assert_one_error_line(&out.stderr);
        assert!(
            out.stderr.contains(path) && out.stderr.contains("malformed"),
            "names the file and says it is malformed:\n{}",
            out.stderr
        );
    }
    assert_no_new_programs(&before);
}

/// zcprof killed with SIGKILL while loading, while attached and while serving leaves no
/// program and no map behind (its links and maps are file descriptors the kernel closes), and
/// the next start works.
#[test]
fn sigkill_leaves_nothing_behind() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_objects();
    let me = std::process::id().to_string();
    let serve = ["serve", "--listen", "127.0.0.1:0"];
    let attach = ["attach", "--pid", &me, "--interval", "100ms"];
    for (args, after) in [
        (&serve[..], 20u64),
        (&serve[..], 150),
        (&serve[..], 3000),
        (&attach[..], 3000),
    ] {
        let mut z = std::process::Command::new(zcprof_bin())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("zcprof");
        std::thread::sleep(std::time::Duration::from_millis(after));
        z.kill().expect("SIGKILL");
        let _ = z.wait();
        assert_nothing_left(&before, &format!("{args:?} killed after {after} ms"));
    }
    let out = zcprof(&["run", "--", "true"]);
    assert!(out.status.success(), "the next start: {}", out.stderr);
}
