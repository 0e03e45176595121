//! Test harness for zcprof's integration tests: runs the real `zcprof` binary (real BPF
//! programs in the real kernel) and compares what it reports with ground truth: the tally of
//! the purpose-written child `zc-child` (every syscall counted at its call site, the worker's
//! final `rusage` from `wait4`), `strace`, and `bpftool`.
//!
//! The zcprof binary is `$ZCPROF_BIN`, or `<workspace>/target/debug/zcprof`. The child binary
//! is only known to this package's integration tests (`env!("CARGO_BIN_EXE_zc-child")`), so
//! they pass it in.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use serde_json::Value;

/// The kernel's names (at most 15 characters) of zcprof's BPF programs.
pub const PROGRAM_NAMES: &[&str] = &[
    "sys_exit",
    "sys_exit_attrib",
    "sys_exit_detail",
    "sys_enter",
    "sched_switch",
    "sched_process_fork",
    "sched_process_exec",
    "task_rename",
    "sched_process_exit",
    "fault_minor",
    "fault_major",
    "mm_filemap_fault",
    "mm_filemap_map_pages",
    "io_uring_complete",
    "io_uring_queue_async_work",
    "sys_exit_backstop",
    "sys_exit_attrib_backstop",
    "sys_exit_detail_backstop",
    "sys_enter_backstop",
    "sched_process_fork_backstop",
    "sched_process_exec_backstop",
    "task_rename_backstop",
    "sched_process_exit_backstop",
    "mm_filemap_fault_backstop",
    "mm_filemap_map_pages_backstop",
    "io_uring_queue_async_work_backstop",
];

/// The ledger columns, in zcprof's JSON spelling.
pub const COLUMNS: &[&str] = &[
    "cpu_user_to_kernel",
    "cpu_kernel_to_user",
    "cpu_in_kernel",
    "zero_copy",
    "dma_direct",
    "mmap_fault_in",
    "not_moved",
];

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `$ZCPROF_BIN`, else `<workspace>/target/debug/zcprof`.
pub fn zcprof_bin() -> PathBuf {
    match std::env::var_os("ZCPROF_BIN") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join("target/debug/zcprof"),
    }
}

/// True if the tests can run. Not root: skipped (with a message) outside CI; a panic in CI,
/// which must never skip.
pub fn require_root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("these tests need root and CI is set: CI must never skip them");
    }
    eprintln!("skipping: not root");
    false
}

/// Result of one zcprof invocation.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs zcprof with `args` (stdin closed, stdout and stderr captured).
pub fn zcprof(args: &[&str]) -> Output {
    zcprof_env(args, &[])
}

/// As [`zcprof`], with extra environment variables.
pub fn zcprof_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = zcprof_bin();
    let mut cmd = Command::new(&bin);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Parses zcprof's stdout as exactly one JSON document.
pub fn parse_json(out: &Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "zcprof's stdout is not one JSON document ({e}); status {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status, out.stdout, out.stderr
        )
    })
}

/// Runs zcprof with `args` (which must include `--json`): (JSON, exit status, stderr).
pub fn run_json(args: &[&str]) -> (Value, ExitStatus, String) {
    let out = zcprof(args);
    let v = parse_json(&out);
    (v, out.status, out.stderr)
}

/// `v[key]` as u64, with a readable panic.
pub fn u(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no unsigned {key:?} in {v}"))
}

/// The processes array of a zcprof JSON document.
pub fn processes(doc: &Value) -> &Vec<Value> {
    doc["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("no processes array in {doc}"))
}

/// The process with `pid` in a zcprof JSON document.
pub fn find_process(doc: &Value, pid: u64) -> Option<&Value> {
    processes(doc)
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
}

/// As [`find_process`], panicking with the list of pids present.
pub fn process(doc: &Value, pid: u64) -> &Value {
    find_process(doc, pid).unwrap_or_else(|| {
        let pids: Vec<_> = processes(doc)
            .iter()
            .map(|p| format!("{}({})", p["pid"], p["comm"]))
            .collect();
        panic!("pid {pid} not in zcprof's report; processes: {pids:?}")
    })
}

/// All transfer cells of `proc` for `syscall`.
pub fn transfers<'a>(proc: &'a Value, syscall: &str) -> Vec<&'a Value> {
    proc["transfers"]
        .as_array()
        .map(|a| a.iter().filter(|t| t["syscall"] == syscall).collect())
        .unwrap_or_default()
}

/// The transfer cell (syscall, column) of `proc`.
pub fn transfer<'a>(proc: &'a Value, syscall: &str, column: &str) -> Option<&'a Value> {
    transfers(proc, syscall)
        .into_iter()
        .find(|t| t["column"] == column)
}

/// The io_uring cells of `proc` for operation `op`.
pub fn uring_cells<'a>(proc: &'a Value, op: &str) -> Vec<&'a Value> {
    proc["io_uring"]
        .as_array()
        .map(|a| a.iter().filter(|t| t["op"] == op).collect())
        .unwrap_or_default()
}

/// Asserts that `proc` has exactly one transfer cell for `syscall`, in `column`, with exactly
/// `calls` calls, `bytes` bytes and `errors` errors.
pub fn assert_cell(proc: &Value, syscall: &str, column: &str, calls: u64, bytes: u64, errors: u64) {
    let cells = transfers(proc, syscall);
    let summary: Vec<String> = cells
        .iter()
        .map(|c| {
            format!(
                "{}: calls {} bytes {} errors {}",
                c["column"], c["calls"], c["bytes"], c["errors"]
            )
        })
        .collect();
    assert_eq!(
        cells.len(),
        1,
        "{syscall}: expected exactly one cell (column {column}), zcprof has {summary:?}"
    );
    let c = cells[0];
    assert_eq!(
        c["column"], column,
        "{syscall}: wrong column; zcprof has {summary:?}"
    );
    assert_eq!(
        (u(c, "calls"), u(c, "bytes"), u(c, "errors")),
        (calls, bytes, errors),
        "{syscall}/{column}: (calls, bytes, errors) zcprof vs child's tally"
    );
}

/// The loaded BPF programs (bpftool's JSON objects) whose name is one of zcprof's.
pub fn bpftool_zcprof_programs() -> Vec<Value> {
    let out = Command::new("bpftool")
        .args(["prog", "list", "-j"])
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool prog list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    // The kernel keeps 15 characters of a program's name; bpftool shows the full name when
    // the program has BTF: accept both.
    let matches = |n: &str| {
        PROGRAM_NAMES
            .iter()
            .any(|full| *full == n || full.chars().take(15).eq(n.chars()))
    };
    v.as_array()
        .expect("bpftool prog list -j is an array")
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(matches))
        .cloned()
        .collect()
}

/// A fresh scratch directory under /var/tmp (ext4 here: O_DIRECT works; tmpfs would not).
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = PathBuf::from("/var/tmp/zcprof-tests").join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// The zc-child's tally.
#[derive(Debug, Clone)]
pub struct Tally(pub Value);

impl Tally {
    pub fn read(path: &Path) -> Tally {
        let s = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("no tally at {}: {e}", path.display()));
        let v: Value = serde_json::from_str(&s).expect("tally JSON");
        if let Some(e) = v["error"].as_str() {
            panic!("zc-child reported an error: {e}");
        }
        Tally(v)
    }

    pub fn worker_pid(&self) -> u64 {
        u(&self.0, "worker_pid")
    }

    pub fn supervisor_pid(&self) -> u64 {
        u(&self.0, "supervisor_pid")
    }

    /// (calls, bytes, errors) of `name` in phase `phase` ("calls", "before" or "wait").
    pub fn phase_cell(&self, phase: &str, name: &str) -> (u64, u64, u64) {
        match self.0[phase].get(name) {
            Some(c) => (u(c, "calls"), u(c, "bytes"), u(c, "errors")),
            None => (0, 0, 0),
        }
    }

    /// (calls, bytes, errors) of `name` in the measured action.
    pub fn cell(&self, name: &str) -> (u64, u64, u64) {
        self.phase_cell("calls", name)
    }

    pub fn zerocopy_requested(&self, name: &str) -> u64 {
        self.0["calls"]
            .get(name)
            .map(|c| u(c, "zerocopy_requested"))
            .unwrap_or(0)
    }

    /// Every name in the measured action's tally.
    pub fn names(&self) -> Vec<String> {
        self.0["calls"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn tracked_syscalls(&self) -> u64 {
        u(&self.0, "tracked_syscalls")
    }

    /// Syscalls the worker makes besides the tracked ones (`_exit`: exit_group).
    pub fn fixed_syscalls(&self) -> u64 {
        self.0["worker_fixed_syscalls"]
            .as_array()
            .map(|a| a.len() as u64)
            .expect("worker_fixed_syscalls")
    }

    pub fn rusage(&self, key: &str) -> u64 {
        u(&self.0["rusage"], key)
    }

    pub fn get(&self, key: &str) -> u64 {
        u(&self.0, key)
    }
}

/// One `zcprof run --json -- zc-child TALLY ACTION ARGS…`.
pub struct ChildRun {
    pub doc: Value,
    pub status: ExitStatus,
    pub stderr: String,
    pub tally: Tally,
    pub dir: PathBuf,
}

impl ChildRun {
    /// The worker's process entry in zcprof's report.
    pub fn worker(&self) -> &Value {
        process(&self.doc, self.tally.worker_pid())
    }

    /// The worker's context switches, page faults and syscalls equal its final rusage (read
    /// by the supervisor with wait4 after the worker's last switch) and its tally, and its
    /// exit was seen. `what` names the run in messages.
    pub fn assert_matches_rusage(&self, what: &str) {
        let (w, t) = (self.worker(), &self.tally);
        let (cs, pf) = (&w["context_switches"], &w["page_faults"]);
        assert_eq!(
            (u(cs, "voluntary"), u(cs, "involuntary")),
            (t.rusage("nvcsw"), t.rusage("nivcsw")),
            "{what}: context switches (voluntary, involuntary) zcprof vs wait4 rusage"
        );
        assert_eq!(
            (u(pf, "minor"), u(pf, "major")),
            (t.rusage("minflt"), t.rusage("majflt")),
            "{what}: page faults (minor, major) zcprof vs wait4 rusage"
        );
        assert_eq!(
            u(pf, "user") + u(pf, "kernel"),
            u(pf, "minor") + u(pf, "major"),
            "{what}: user + kernel faults = minor + major"
        );
        assert_eq!(
            u(w, "syscalls"),
            t.tracked_syscalls() + t.fixed_syscalls() + 1,
            "{what}: syscalls"
        );
        assert_eq!(w["exited"], true, "{what}: the worker's exit was seen");
    }
}

/// Runs `zcprof run --json [extra] -- <child> TALLY <action…>` and checks that it succeeded.
pub fn run_child(child: &str, action: &[&str]) -> ChildRun {
    run_child_with(child, &[], action)
}

pub fn run_child_with(child: &str, zcprof_args: &[&str], action: &[&str]) -> ChildRun {
    let dir = scratch_dir(action.first().copied().unwrap_or("child"));
    let tally_path = dir.join("tally.json");
    let tally_s = tally_path.to_str().unwrap().to_string();
    let mut args: Vec<&str> = vec!["run", "--json"];
    args.extend_from_slice(zcprof_args);
    args.push("--");
    args.push(child);
    args.push(&tally_s);
    args.extend_from_slice(action);
    let out = zcprof_env(&args, &[("ZC_CHILD_DIR", dir.to_str().unwrap())]);
    // A child failure is reported by the tally's error (e.g. O_DIRECT unsupported).
    let tally = Tally::read(&tally_path);
    assert!(
        out.status.success(),
        "zcprof run failed: {:?}\nstderr:\n{}",
        out.status,
        out.stderr
    );
    let doc = parse_json(&out);
    ChildRun {
        doc,
        status: out.status,
        stderr: out.stderr,
        tally,
        dir,
    }
}

/// strace of a command: per-pid syscall lines (`strace -f -o FILE`).
pub struct Strace {
    /// pid -> syscall names in order (an interrupted call counts once).
    pub calls: BTreeMap<u64, Vec<String>>,
    /// pid -> (syscall, fd, return value) for calls whose first argument is a number.
    pub fd_calls: BTreeMap<u64, Vec<(String, i64, i64)>>,
    pub status: ExitStatus,
}

/// Runs `strace -f -qq -o FILE [-e trace=...] -- cmd…` with `env`.
pub fn strace(trace: Option<&str>, cmd: &[&str], env: &[(&str, &str)]) -> Strace {
    let dir = scratch_dir("strace");
    let file = dir.join("strace.txt");
    let mut c = Command::new("strace");
    c.args(["-f", "-qq", "-o"]).arg(&file);
    if let Some(t) = trace {
        c.arg("-e").arg(format!("trace={t}"));
    }
    c.arg("--").args(cmd).stdin(Stdio::null());
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run strace");
    let text = std::fs::read_to_string(&file).expect("strace output");
    let mut calls: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut fd_calls: BTreeMap<u64, Vec<(String, i64, i64)>> = BTreeMap::new();
    // Unfinished calls: pid -> (name, fd); completed by the matching "<... name resumed>".
    let mut pending: BTreeMap<u64, (String, i64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        let ret = |s: &str| -> i64 {
            s.rsplit_once(" = ")
                .and_then(|(_, r)| r.split_whitespace().next())
                .and_then(|r| r.parse().ok())
                .unwrap_or(i64::MIN)
        };
        if let Some(r) = rest.strip_prefix("<... ") {
            if let Some((name, fd)) = pending.remove(&pid) {
                debug_assert!(r.starts_with(&name));
                fd_calls.entry(pid).or_default().push((name, fd, ret(rest)));
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        let name = name.to_string();
        let fd = args
            .split([',', ')'])
            .next()
            .and_then(|a| a.parse::<i64>().ok())
            .unwrap_or(-1);
        calls.entry(pid).or_default().push(name.clone());
        if rest.ends_with("<unfinished ...>") {
            pending.insert(pid, (name, fd));
        } else {
            fd_calls.entry(pid).or_default().push((name, fd, ret(rest)));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Strace {
        calls,
        fd_calls,
        status: out.status,
    }
}

/// Bit length of `n`: zcprof's size_log2 bucket index (bucket k holds [2^(k-1), 2^k)).
pub fn size_bucket(n: u64) -> usize {
    (64 - n.leading_zeros()) as usize
}

/// zcprof's programs still loaded once up to `timeout` has passed: the kernel frees a
/// program asynchronously after its last reference is dropped, so a program can still be
/// listed for a moment after zcprof has exited.
/// Ids of the zcprof programs loaded right now (by any zcprof process).
pub fn zcprof_program_ids() -> std::collections::BTreeSet<u64> {
    bpftool_zcprof_programs()
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// Waits up to `timeout` for every zcprof program that was not loaded at `before` to be gone
/// (the kernel frees programs shortly after the last fd closes) and returns those still there.
/// Relative to `before`, so that another zcprof running on the machine does not count.
pub fn new_zcprof_programs_after(
    before: &std::collections::BTreeSet<u64>,
    timeout: std::time::Duration,
) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let left: Vec<Value> = bpftool_zcprof_programs()
            .into_iter()
            .filter(|p| p["id"].as_u64().is_some_and(|id| !before.contains(&id)))
            .collect();
        if left.is_empty() || start.elapsed() >= timeout {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Every capability zcprof reports (`capabilities[]`, `zcprof_capability`), in its order.
pub const CAPABILITIES: [&str; 6] = [
    "fd_types",
    "mmap_fault_in",
    "io_uring",
    "exit_syscalls",
    "context_switches",
    "page_faults",
];

/// Runs a copy of zcprof that anyone can execute as nobody (`setpriv`), from `/`, with
/// `args`; `tag` names its scratch directory.
pub fn zcprof_as_nobody(tag: &str, args: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    // A copy nobody can execute regardless of the checkout's permissions.
    let dir = scratch_dir(tag);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        "/var/tmp/zcprof-tests",
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let bin = dir.join("zcprof");
    std::fs::copy(zcprof_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(args)
        .current_dir("/")
        .output()
        .expect("run setpriv");
    let _ = std::fs::remove_dir_all(&dir);
    out
}

/// The fork storm of the tests (`zc-storm`'s options): the 4 loops and 80,000 processes of a
/// busy build host, and 10 bursts of 200 short threads.
pub const STORM_ARGS: &[&str] = &[
    "--loops",
    "4",
    "--processes",
    "80000",
    "--bursts",
    "10",
    "--burst-threads",
    "200",
    "--bytes",
    "1000",
];

/// The storm of the full-ring tests (storm.rs, serve.rs): 12,000 processes, a few thousand a
/// second, each one thread.
pub const FULL_RING_STORM: &[&str] = &[
    "--loops",
    "1",
    "--processes",
    "12000",
    "--bursts",
    "2",
    "--burst-threads",
    "100",
    "--bytes",
    "1000",
];

/// The tally `zc-storm` wrote at `path`, checked to say that every child and thread did its
/// write.
pub fn storm_tally(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no storm tally at {}: {e}", path.display()));
    let t: Value = serde_json::from_str(&text).expect("storm tally is JSON");
    assert_eq!(t["children_failed"], 0, "every child wrote and exited: {t}");
    assert_eq!(t["burster_ok"], true, "the burster ended well: {t}");
    t
}

/// Ids of the maps zcprof creates that are loaded now (by any process; the kernel keeps 15
/// bytes of a map's name, enough for all of zcprof's).
pub fn zcprof_map_ids() -> std::collections::BTreeSet<u64> {
    const NAMES: [&str; 13] = [
        "WATCHED",
        "THREADS",
        "TID_SLOT",
        "FREE_SLOTS",
        "CPU_THREAD",
        "TRANSFERS",
        "URING",
        "FD_EPOCH",
        "WATCH_GEN",
        "LOST",
        "STACK_REGS",
        "RETIRED",
        "DEFERRED",
    ];
    let out = Command::new("bpftool")
        .args(["map", "list", "-j"])
        .output()
        .expect("bpftool");
    let maps: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    maps.as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["name"].as_str().is_some_and(|n| NAMES.contains(&n)))
        .filter_map(|m| m["id"].as_u64())
        .collect()
}

/// zcprof's programs and maps loaded at some moment (bpftool's ids).
#[derive(Debug, Clone)]
pub struct ZcprofObjects {
    pub programs: std::collections::BTreeSet<u64>,
    pub maps: std::collections::BTreeSet<u64>,
}

/// The zcprof programs and maps loaded now, to compare against once zcprof has exited.
pub fn zcprof_objects() -> ZcprofObjects {
    ZcprofObjects {
        programs: zcprof_program_ids(),
        maps: zcprof_map_ids(),
    }
}

/// Ids of the BPF programs and maps that some live process holds an fd of (from
/// /proc/*/fdinfo: `prog_id:` and `map_id:` lines).
pub fn bpf_objects_held() -> ZcprofObjects {
    let mut held = ZcprofObjects {
        programs: Default::default(),
        maps: Default::default(),
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return held;
    };
    for p in procs.flatten() {
        // Processes and fds come and go while they are listed: a vanished one holds nothing.
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            for line in info.lines() {
                let id = |v: &str| v.trim().parse::<u64>().ok();
                if let Some(v) = line.strip_prefix("prog_id:").and_then(id) {
                    held.programs.insert(v);
                } else if let Some(v) = line.strip_prefix("map_id:").and_then(id) {
                    held.maps.insert(v);
                }
            }
        }
    }
    held
}

/// Asserts that bpftool lists no zcprof program or map that `before` did not and that no live
/// process holds, waiting up to 3 s: the kernel frees them asynchronously once the last fd
/// closes. Other zcprof processes may run on the machine (other checkouts' tests): their
/// objects are new too, but held by them; one that zcprof left behind is held by nobody.
pub fn assert_nothing_left(before: &ZcprofObjects, when: &str) {
    let timeout = std::time::Duration::from_secs(3);
    let start = std::time::Instant::now();
    loop {
        let now = zcprof_objects();
        let held = bpf_objects_held();
        let orphans = |now: &std::collections::BTreeSet<u64>,
                       before: &std::collections::BTreeSet<u64>,
                       held: &std::collections::BTreeSet<u64>| {
            now.iter()
                .filter(|id| !before.contains(id) && !held.contains(id))
                .copied()
                .collect::<Vec<u64>>()
        };
        let programs = orphans(&now.programs, &before.programs, &held.programs);
        let maps = orphans(&now.maps, &before.maps, &held.maps);
        if programs.is_empty() && maps.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{when}: zcprof left programs {programs:?} and maps {maps:?} loaded, held by no \
             process"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Polls `f` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Pids whose parent is `ppid`.
pub fn children_of(ppid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
        let ppid_field = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid_field == Some(ppid) {
            v.push(pid);
        }
    }
    v
}

/// Starts `zc-child` (at `child`) with `TALLY wait-then GO ACTION…` in `dir`: its worker makes
/// its pre-attach syscalls, then polls for the file `go` before the measured ones. Returns the
/// supervisor and the worker's pid once the worker is polling.
pub fn spawn_waiting_child(
    child: &str,
    dir: &Path,
    tally: &Path,
    go: &Path,
    action: &[&str],
) -> (std::process::Child, u64) {
    let sup = Command::new(child)
        .arg(tally)
        .arg("wait-then")
        .arg(go)
        .args(action)
        .env("ZC_CHILD_DIR", dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn zc-child");
    // The worker is the supervisor's child (`pipe-wait` adds a writer, named so from birth).
    let mut worker = 0u64;
    wait_for("the worker", std::time::Duration::from_secs(10), || {
        worker = children_of(sup.id())
            .into_iter()
            .find(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim_end() != "zc-pipe-writer")
            })
            .map_or(0, u64::from);
        worker != 0
    });
    // Its pre-attach activity is done once it polls (10 ms a poll).
    std::thread::sleep(std::time::Duration::from_millis(300));
    (sup, worker)
}

/// Maps every page of every file-backed mapping of this process (MADV_POPULATE_READ), so
/// that what runs next (zc-child's worker, zc-relay's sender) never faults on its own code and
/// constants: only the faults it is there to make are counted.
pub fn populate_file_mappings() {
    const MADV_POPULATE_READ: i32 = 22;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || !f[5].starts_with('/') || !f[1].starts_with('r') {
            continue;
        }
        let Some((a, b)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        // SAFETY: advice on our own mapping; failure is harmless.
        unsafe { libc::madvise(a as *mut libc::c_void, b - a, MADV_POPULATE_READ) };
    }
}

/// What `zcprof attach` says on stderr once its programs are attached and it watches.
pub const ATTACHED: &str = "zcprof: attached to";

/// Reads `child`'s stderr on a thread, to its end, and returns once a line starts with
/// `prefix`; the handle gives everything it said. Kills the child and panics with what it
/// said if no such line came within `timeout`.
pub fn stderr_after_line(
    child: &mut std::process::Child,
    prefix: &'static str,
    timeout: std::time::Duration,
) -> std::thread::JoinHandle<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().expect("the child's stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if line.starts_with(prefix) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if rx.recv_timeout(timeout).is_err() {
        let _ = child.kill();
        let said = reader.join().unwrap_or_default();
        panic!("no line starting with {prefix:?} in {timeout:?}; it said:\n{said}");
    }
    reader
}
