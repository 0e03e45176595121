//! `--backstops`: where the kernel may preempt BPF programs, a second program on each hook
//! counts the events the kernel skipped the first for (zcprof-ebpf's `backstop`).
//!
//! This host's kernel never preempts them (the kernel matrix's 7.2 does, and runs with them),
//! so these tests take each of the two ways an event can go, on the real kernel: through the
//! backstops alone (`--backstops only`, a test aid that leaves the primaries out, as if the
//! kernel had skipped every one of them) and through both (`on`: each backstop must find that
//! its primary ran and count nothing). Either way every count must equal the kernel's own
//! (wait4 rusage) and the worker's tally, and nothing may be reported skipped.

use zcprof_tests::*;

const CHILD: &str = env!("CARGO_BIN_EXE_zc-child");

const U2K: &str = "cpu_user_to_kernel";
const K2U: &str = "cpu_kernel_to_user";

/// Runs `action` under `--backstops mode` and checks the worker against rusage and the tally
/// (`ChildRun::assert_matches_rusage`), the `cells` it names, and the file pages faults mapped
/// in (`fault_in`, when the action maps a file).
fn check(mode: &str, action: &[&str], cells: &[(&str, &str)], fault_in: Option<u64>) {
    let r = run_child_with(CHILD, &["--backstops", mode], action);
    let what = format!("--backstops {mode}, {action:?}");
    r.assert_matches_rusage(&what);
    let (w, t) = (r.worker(), &r.tally);
    for &(syscall, column) in cells {
        let (calls, bytes, errors) = t.cell(syscall);
        assert!(calls > 0, "{what}: the worker made no {syscall} call");
        assert_cell(w, syscall, column, calls, bytes, errors);
    }
    if let Some(bytes) = fault_in {
        assert_eq!(
            u(&w["ledger"], "mmap_fault_in"),
            bytes,
            "{what}: file pages mapped by faults, each page once"
        );
    }
    assert_eq!(
        u(&r.doc["lost"], "kernel_skipped"),
        0,
        "{what}: nothing skipped on this kernel"
    );
}

/// The syscall hooks (sys_exit's ledger cells) and the exit hook, each way.
#[test]
fn a_file_read_and_written_counts_the_same_through_the_backstops() {
    if !require_root_or_skip() {
        return;
    }
    for mode in ["only", "on"] {
        check(mode, &["read-file", "4m", "64k"], &[("read", K2U)], None);
        check(
            mode,
            &["write-file", "1000003", "65536"],
            &[("write", U2K)],
            None,
        );
    }
}

/// The page-fault hooks (mm_filemap_fault, mm_filemap_map_pages).
#[test]
fn file_pages_faulted_in_count_the_same_through_the_backstops() {
    if !require_root_or_skip() {
        return;
    }
    let n = 1u64 << 20;
    for mode in ["only", "on"] {
        check(mode, &["mmap-file", &n.to_string()], &[], Some(n));
    }
}

/// The fork hook (each new thread is entered there) and the exit hook, for threads that
/// make a known number of syscalls.
#[test]
fn threads_are_entered_and_counted_the_same_through_the_backstops() {
    if !require_root_or_skip() {
        return;
    }
    let (threads, n) = (4u64, 20000u64);
    for mode in ["only", "on"] {
        let r = run_child_with(
            CHILD,
            &["--backstops", mode],
            &["threads", &threads.to_string(), &n.to_string()],
        );
        let w = r.worker();
        let entries = w["threads"].as_array().expect("threads");
        assert_eq!(entries.len() as u64, threads + 1, "{mode}: {entries:?}");
        let mut sum = 0;
        for th in entries {
            sum += u(th, "syscalls");
            assert_eq!(th["exited"], true, "{mode}: {th}");
            if u(th, "tid") != r.tally.worker_pid() {
                assert!(
                    (n..n + 40).contains(&u(th, "syscalls")),
                    "{mode}: a thread did {n} getpid plus its start and exit: {th}"
                );
            }
        }
        assert_eq!(
            sum,
            u(w, "syscalls"),
            "{mode}: threads add up to the process"
        );
        let pf = &w["page_faults"];
        assert_eq!(
            (u(pf, "minor"), u(pf, "major")),
            (r.tally.rusage("minflt"), r.tally.rusage("majflt")),
            "{mode}: page faults"
        );
    }
}

/// Which programs each mode attaches: `on` adds each hook's backstop to its primary, `only`
/// leaves out the primaries that have one, `off` attaches no backstop.
#[test]
fn each_mode_attaches_the_programs_it_says() {
    use std::io::BufRead as _;
    if !require_root_or_skip() {
        return;
    }
    for (mode, primaries, backstops) in [
        ("on", true, true),
        ("only", false, true),
        ("off", true, false),
    ] {
        let before = zcprof_program_ids();
        // zcprof starts the command once every program is attached.
        let mut child = std::process::Command::new(zcprof_bin())
            .args([
                "run",
                "--backstops",
                mode,
                "--",
                "sh",
                "-c",
                "echo started; sleep 2",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start zcprof");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the command's output");
        assert_eq!(line.trim(), "started", "{mode}");
        let seen: Vec<String> = bpftool_zcprof_programs()
            .iter()
            .filter(|p| p["id"].as_u64().is_some_and(|id| !before.contains(&id)))
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        // The kernel keeps 15 characters of a name; bpftool shows the whole name from BTF.
        let has = |name: &str| {
            seen.iter()
                .any(|n| n == name || (n.len() == 15 && name.starts_with(n.as_str())))
        };
        for (name, expected) in [
            ("sys_exit", primaries),
            ("mm_filemap_fault", primaries),
            ("sys_exit_backstop", backstops),
            ("mm_filemap_fault_backstop", backstops),
            ("sched_process_fork_backstop", backstops),
            ("sched_process_exit_backstop", backstops),
            // Hooks without a backstop keep their program in every mode.
            ("sched_switch", true),
            ("fault_minor", true),
        ] {
            assert_eq!(
                has(name),
                expected,
                "--backstops {mode}: {name} among {seen:?}"
            );
        }
        let status = child.wait().expect("wait for zcprof");
        assert!(status.success(), "--backstops {mode}: zcprof run failed");
    }
}
