//! `zc-child`: a purpose-written workload for zcprof's integration tests.
//!
//! Usage: `zc-child <TALLY_PATH> <ACTION> [ARGS…]`
//!
//! The process started by the test (the *supervisor*) prepares everything an action needs
//! (files, pipes, sockets, buffers), then starts a *worker* process (clone with CLONE_VM |
//! CLONE_VFORK, like posix_spawn, on a stack of its own) that performs only the measured
//! syscalls on those inherited descriptors and exits with `_exit`. Every syscall the worker
//! makes is counted at its call site together with the bytes it returned, so the worker's
//! whole life is known: its first syscall event is the return of `clone` in the child, then
//! the counted calls, then `exit_group`. The worker writes its tally into memory it shares
//! with the supervisor (no syscall); the supervisor reaps it with `wait4`, which gives the
//! worker's exact final `rusage` (context switches, page faults), and writes the tally JSON to
//! TALLY_PATH. The worker's parent is the supervisor (find it by ppid in /proc).
//!
//! Tally JSON:
//! `{"action", "args", "supervisor_pid", "worker_pid", "calls": {NAME: {"calls","bytes",
//! "errors","zerocopy_requested"}}, "before": {..}, "wait": {..}, "tracked_syscalls",
//! "worker_fixed_syscalls", "untracked_syscalls", "pages_touched", "file_pages_touched",
//! "rusage": {"nvcsw","nivcsw","minflt","majflt"}, "proc_io": {"rchar","wchar","syscr",
//! "syscw",…}, "worker_exit": {..}, "error"}`. Syscall names are zcprof's transfer
//! names (`read`, `pread64`, `mmap_file`, `mmap_anon`, `munmap`, …) plus plain syscall names
//! for the others (`getpid`, `clock_nanosleep`, `access`, …); io_uring operations are
//! `io_uring:read`.

mod args;
mod direct;
mod endpoints;
mod files;
mod mmap;
mod net;
mod phases;
mod pipes;
mod sched;
mod sendfile;
mod splice;
mod tally;
mod transfer;
mod uring;
mod zerocopy;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::exit,
    time::Duration,
};

use serde_json::{Map, Value, json};

use crate::tally::{BEFORE, Cell, MAIN, PHASES, Shared, WAIT, map_shared};

/// What the worker runs: the measured syscalls of one action, tallied in `Shared`.
type Job = Box<dyn FnOnce(&mut Shared) -> Result<(), String>>;

/// `f` as a [`Job`].
fn job(f: impl FnOnce(&mut Shared) -> Result<(), String> + 'static) -> Result<Job, String> {
    Ok(Box::new(f))
}

/// The calling thread's errno.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The message of errno value `e`.
fn errstr(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// Prints `msg` to stderr and exits with status 1.
fn die(msg: &str) -> ! {
    eprintln!("zc-child: {msg}");
    exit(1)
}

/// Prepares `action` in the supervisor and returns what the worker will run.
fn setup(action: &str, rest: &[String], dir: &Path) -> Result<Job, String> {
    match action {
        "noop" => job(|_| Ok(())),
        "read-file" => files::read_file(rest, dir),
        "pread" => files::pread(rest, dir),
        "readv" => files::readv(rest, dir),
        "preadv" => files::preadv(rest, dir),
        "preadv2" => files::preadv2(rest, dir),
        "write-file" => files::write_file(rest, dir),
        "pwrite" => files::pwrite(rest, dir),
        "writev" => files::writev(rest, dir),
        "pwritev" => files::pwritev(rest, dir),
        "pwritev2" => files::pwritev2(rest, dir),
        "copy-file-range" => files::copy_file_range(rest, dir),
        "odirect-read" => direct::odirect_read(rest, dir),
        "odirect-write" => direct::odirect_write(rest, dir),
        "odirect-pwrite" => direct::odirect_pwrite(rest, dir),
        "fd-reuse" => direct::fd_reuse(rest, dir),
        "pipe-read" | "pipe-write" => pipes::write_read(rest),
        "would-block" => pipes::would_block(rest),
        "pipe-wait" => pipes::wait(rest),
        "tee" => pipes::tee(rest),
        "vmsplice" => pipes::vmsplice(rest),
        "vmsplice-read" => pipes::vmsplice_read(rest),
        "splice-file-pipe" => splice::file_pipe(rest, dir),
        "splice-pipe-file" => splice::pipe_file(rest, dir),
        "splice-socket-pipe" => splice::socket_pipe(rest),
        "splice-pipe-socket" => splice::pipe_socket(rest),
        "splice-dev-pipe" => splice::dev_pipe(rest),
        "splice-pipe-pipe" => splice::pipe_pipe(rest),
        "sendfile-socket" => sendfile::to_socket(rest, dir),
        "sendfile-file" => sendfile::to_file(rest, dir),
        "sendfile-pipe" => sendfile::to_pipe(rest, dir),
        "sendfile-dev" => sendfile::to_dev(rest, dir),
        "sendfile-odirect" => sendfile::to_odirect(rest, dir),
        "socket-send" | "socket-recv" => net::stream_write_read(rest),
        "sendto" | "recvfrom" => net::udp_sendto(rest),
        "sendmsg" | "recvmsg" => net::udp_sendmsg(rest),
        "sendmmsg" | "recvmmsg" => net::mmsg(rest),
        "msg-zerocopy" => zerocopy::msg_zerocopy(rest),
        "mmap-file" => mmap::mmap_file(rest, dir),
        "mmap-anon" => mmap::mmap_anon(rest),
        "faults" => mmap::faults(rest),
        "io-uring" => uring::read(rest, dir),
        "io-uring-write" => uring::write(rest, dir),
        "io-uring-write-direct" => uring::write_direct(rest, dir),
        "io-uring-send" => uring::send(rest),
        "spin" => sched::spin(rest),
        "sleep-switch" => sched::sleep_switch(rest),
        "getpid" => sched::getpid(rest),
        "rename" => sched::rename(rest),
        "threads" => sched::threads(rest),
        "wait-then" => phases::wait_then(rest, dir),
        _ => Err(format!("unknown action {action:?}")),
    }
}

/// What the supervisor hands the worker: its job, and where to tally it.
struct Ctx {
    job: Option<Job>,
    shared: *mut Shared,
}

/// The worker: runs the job on its own stack, records any error in the tally, `_exit`s.
extern "C" fn worker_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: arg is the supervisor's Ctx, untouched while the worker runs.
    let ctx = unsafe { &mut *arg.cast::<Ctx>() };
    // SAFETY: the tally mapping lives as long as the process.
    let shared = unsafe { &mut *ctx.shared };
    let r = match ctx.job.take() {
        Some(job) => job(shared),
        None => Err("no job".into()),
    };
    if let Err(e) = r {
        shared.set_error(&e);
        // SAFETY: terminating the worker.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: terminating the worker.
    unsafe { libc::_exit(0) }
}

/// One phase's cells as `{NAME: {"calls","bytes","errors","zerocopy_requested"}}`.
fn phase_json(cells: &[Cell]) -> Value {
    let mut m = Map::new();
    for c in cells {
        m.insert(
            c.name.to_string(),
            json!({"calls": c.calls, "bytes": c.bytes, "errors": c.errors,
                   "zerocopy_requested": c.zerocopy, "ns": c.ns}),
        );
    }
    Value::Object(m)
}

/// Writes `data` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let r = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(data))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        die(&format!("writing {}: {e}", path.display()));
    }
}

/// Sets up ACTION, runs its worker, writes the tally to TALLY_PATH.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: zc-child <TALLY_PATH> <ACTION> [ARGS…]");
        exit(2);
    }
    let tally_path = PathBuf::from(&args[1]);
    let action = args[2].clone();
    let rest = &args[3..];
    if action == "exit" {
        let code = rest.first().and_then(|s| s.parse().ok()).unwrap_or(0);
        exit(code);
    }
    let base = std::env::var_os("ZC_CHILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let dir = base.join(format!("zc-child-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        die(&format!("mkdir {}: {e}", dir.display()));
    }
    let mut out = json!({
        "action": action, "args": rest, "supervisor_pid": std::process::id(),
        "worker_pid": null, "error": null,
    });
    let shared = map_shared();
    let job = match setup(&action, rest, &dir) {
        Ok(j) => j,
        Err(e) => {
            out["error"] = json!(format!("setup of {action}: {e}"));
            write_atomic(&tally_path, out.to_string().as_bytes());
            let _ = std::fs::remove_dir_all(&dir);
            die(&format!("setup of {action}: {e}"));
        }
    };
    // The worker shares the supervisor's memory (CLONE_VM, like posix_spawn), so that it
    // does not re-fault pages the supervisor already has: with every file-backed mapping
    // populated first, the worker takes no page fault on code or data it did not ask for, and
    // its file faults are only those of its action. The supervisor is suspended until the
    // worker exits (CLONE_VFORK), so the two never run at the same time.
    zcprof_tests::populate_file_mappings();
    let mut stack = vec![1u8; 8 << 20];
    let mut ctx = Ctx {
        job: Some(job),
        shared: shared as *mut Shared,
    };
    // SAFETY: the stack is ours, 8 MiB, pre-touched; its top is 16-byte aligned; ctx outlives
    // the worker (the supervisor is suspended until the worker has exited).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        libc::clone(
            worker_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut ctx as *mut Ctx).cast(),
        )
    };
    if pid < 0 {
        die(&format!("clone: {}", errstr(errno())));
    }
    let shared = ctx.shared;
    // SAFETY: the worker has exited; the tally is ours again.
    let shared = unsafe { &mut *shared };
    drop(stack);
    // Wait for the worker's exit without reaping it, give it time to make its final context
    // switch (the kernel counts it in nvcsw after exit_notify), then reap it with wait4 so its
    // rusage includes that switch.
    // SAFETY: plain waitid/wait4 on our own child.
    let (status, ru, proc_io) = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        if libc::waitid(
            libc::P_PID,
            pid as u32,
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        ) < 0
        {
            die(&format!("waitid: {}", errstr(errno())));
        }
        std::thread::sleep(Duration::from_millis(50));
        // The kernel's own I/O accounting of the worker, readable until it is reaped.
        let proc_io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        let mut status = 0;
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid, &mut status, 0, &mut ru) != pid {
            die(&format!("wait4: {}", errstr(errno())));
        }
        (status, ru, proc_io)
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut error = None;
    if shared.error_len > 0 {
        error = Some(String::from_utf8_lossy(&shared.error[..shared.error_len]).into_owned());
    }
    let worker_exit = if libc::WIFEXITED(status) {
        json!({"code": libc::WEXITSTATUS(status)})
    } else {
        json!({"signal": libc::WTERMSIG(status)})
    };
    if error.is_none() && !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        error = Some(format!("worker ended abnormally: {worker_exit}"));
    }
    let tracked: u64 = (0..PHASES)
        .flat_map(|p| shared.cells[p][..shared.used[p]].iter())
        .map(|c| c.calls)
        .sum::<u64>()
        // io_uring operations are not syscalls.
        - (0..PHASES)
            .flat_map(|p| shared.cells[p][..shared.used[p]].iter())
            .filter(|c| c.name.starts_with("io_uring:"))
            .map(|c| c.calls)
            .sum::<u64>();
    out["worker_pid"] = json!(pid);
    out["calls"] = phase_json(&shared.cells[MAIN][..shared.used[MAIN]]);
    out["before"] = phase_json(&shared.cells[BEFORE][..shared.used[BEFORE]]);
    out["wait"] = phase_json(&shared.cells[WAIT][..shared.used[WAIT]]);
    out["tracked_syscalls"] = json!(tracked);
    // Made by the worker but not at a call site of ours: `_exit` is the exit_group syscall.
    out["worker_fixed_syscalls"] = json!(["exit_group"]);
    out["untracked_syscalls"] = json!(shared.untracked);
    out["pages_touched"] = json!(shared.pages_touched);
    out["file_pages_touched"] = json!(shared.file_pages_touched);
    out["rusage"] = json!({
        "nvcsw": ru.ru_nvcsw, "nivcsw": ru.ru_nivcsw,
        "minflt": ru.ru_minflt, "majflt": ru.ru_majflt,
    });
    // /proc/PID/io counters (rchar, wchar, syscr, syscw, …) as the kernel kept them.
    let io: Map<String, Value> = proc_io
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(k, v)| Some((k.trim().to_string(), json!(v.trim().parse::<u64>().ok()?))))
        .collect();
    out["proc_io"] = Value::Object(io);
    out["worker_exit"] = worker_exit;
    out["error"] = json!(error);
    write_atomic(&tally_path, out.to_string().as_bytes());
    if let Some(e) = error {
        die(&format!("{action}: {e}"));
    }
}
