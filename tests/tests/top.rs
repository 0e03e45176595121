//! `zcprof top` in a real terminal: tmux at 80x24 runs it, `send-keys` types and
//! `capture-pane` reads the screen. The busiest copier on the host (a dd the test starts) is the
//! top row, its drill-down shows its read and write cells, `q` leaves the terminal as it was and
//! detaches every program. Without a terminal, top refuses before loading anything.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use zcprof_tests::*;

/// The prompt of the shell in the pane: how the test sees that top has given the terminal back.
const PROMPT: &str = "top-test$ ";

/// A tmux server of the test's own (its own socket, so that no user session is touched) with
/// one 80x24 session running a shell; killed with the dd when dropped, even on a failure.
struct Pane {
    socket: String,
    busy: Child,
}

impl Pane {
    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend(keys);
        self.tmux(&args);
        // Esc followed at once by another key reads as Alt+key: give each send time to land.
        std::thread::sleep(Duration::from_millis(300));
    }

    fn screen(&self) -> Vec<String> {
        self.tmux(&["capture-pane", "-p", "-t", "top"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits up to `timeout` for a screen that passes `ok`; panics with the last one.
    fn wait(&self, what: &str, timeout: Duration, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}; the screen:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = self.busy.kill();
        let _ = self.busy.wait();
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn tmux_installed() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Ids of the BPF programs process `pid` holds (`prog_id:` in its fds' fdinfo): the programs
/// this zcprof loaded, whatever other zcprof runs on the machine meanwhile.
fn programs_of(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u64>().ok()),
        );
    }
    ids
}

#[test]
fn top_in_a_terminal() {
    if !require_root_or_skip() {
        return;
    }
    if !tmux_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tmux is missing and CI is set: cargo xtask setup installs it"
        );
        eprintln!("skipping: tmux is not installed (cargo xtask setup installs it)");
        return;
    }
    // 64 KiB a call, as fast as a CPU can: tens of GiB/s, far above anything else here.
    let busy = Command::new("dd")
        .args(["if=/dev/zero", "of=/dev/null", "bs=64k"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dd");
    let dd = busy.id();
    let pane = Pane {
        socket: format!("zcprof-top-test-{}", std::process::id()),
        busy,
    };
    pane.tmux(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "80",
        "-y",
        "24",
        "env",
        &format!("PS1={PROMPT}"),
        "bash",
        "--norc",
        "--noprofile",
    ]);
    let size = pane.tmux(&[
        "display-message",
        "-p",
        "-t",
        "top",
        "#{pane_width}x#{pane_height}",
    ]);
    assert_eq!(size.trim(), "80x24", "the pane's size");
    pane.wait("the shell's prompt", Duration::from_secs(10), |s| {
        s.iter().any(|l| l.starts_with(PROMPT.trim_end()))
    });
    let shell: u32 = pane
        .tmux(&["display-message", "-p", "-t", "top", "#{pane_pid}"])
        .trim()
        .parse()
        .expect("pane pid");
    let line = format!(
        "{} top --interval 200ms; echo top-exit=$?",
        zcprof_bin().display()
    );
    pane.keys(&[&line, "Enter"]);

    // The header, then dd on top by CPU-copied bytes/s (the default order).
    let dd_row = format!("{dd:>7} dd ");
    let screen = pane.wait("dd as the top row", Duration::from_secs(30), |s| {
        s.len() > 3 && s[3].starts_with(&dd_row)
    });
    let text = screen.join("\n");
    assert!(
        screen[0].starts_with("zcprof top · all processes"),
        "{text}"
    );
    assert!(screen[0].contains("by CPU-copied/s"), "{text}");
    for col in [
        "PID",
        "COMM",
        "SYSC/s",
        "CPU-CP/s",
        "ZERO-CP/s",
        "DMA+FI/s",
        "ZC%",
        "FLT/s",
    ] {
        assert!(screen[2].contains(col), "no {col} in the header:\n{text}");
    }
    assert!(screen.iter().all(|l| l.chars().count() <= 80), "{text}");
    let top: Vec<u32> = children_of(shell);
    assert_eq!(top.len(), 1, "one zcprof under the pane's shell: {top:?}");
    let top = top[0];
    let loaded = programs_of(top);
    assert!(!loaded.is_empty(), "zcprof top holds no BPF program");

    // Select dd: filter on its pid (rows keep moving at 200 ms), keep the filter, drill in.
    pane.keys(&["/"]);
    pane.keys(&[&dd.to_string()]);
    pane.keys(&["Enter"]);
    pane.wait("the filtered list", Duration::from_secs(10), |s| {
        s.len() > 3 && s[3].starts_with(&dd_row) && s[23].starts_with(&format!("filter: {dd}"))
    });
    pane.keys(&["Enter"]);
    let title = format!("zcprof top · pid {dd} (dd) · 1 thread");
    let screen = pane.wait("dd's read and write cells", Duration::from_secs(10), |s| {
        let starts = |p: &str, col: &str| s.iter().any(|l| l.starts_with(p) && l.contains(col));
        s[0].starts_with(&title)
            && starts("read ", "cpu_kernel_to_user")
            && starts("write ", "cpu_user_to_kernel")
    });
    let text = screen.join("\n");
    assert!(screen[2].starts_with("SYSCALL"), "{text}");
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with(&format!("{dd:>7} dd "))),
        "dd's thread row:\n{text}"
    );

    // Back to the list, then quit: exit status 0 and the shell's prompt on the normal screen.
    pane.keys(&["Escape"]);
    pane.wait("the list again", Duration::from_secs(10), |s| {
        s[0].starts_with("zcprof top · all processes")
    });
    pane.keys(&["q"]);
    let screen = pane.wait("top's exit", Duration::from_secs(10), |s| {
        s.iter().any(|l| l.starts_with("top-exit="))
    });
    let text = screen.join("\n");
    assert!(text.contains("top-exit=0"), "{text}");
    // capture-pane leaves out trailing blanks: the prompt line is the prompt trimmed.
    let last = screen.iter().rev().find(|l| !l.trim().is_empty());
    assert_eq!(
        last.map(|l| l.trim_end()),
        Some(PROMPT.trim_end()),
        "no prompt after top:\n{text}"
    );
    assert!(
        !screen.iter().any(|l| l.contains("CPU-CP/s")),
        "the alternate screen was not left:\n{text}"
    );
    assert!(
        !Path::new(&format!("/proc/{top}")).exists(),
        "zcprof top still runs"
    );

    // Every program it had loaded is gone (the kernel frees them shortly after the last fd).
    let start = Instant::now();
    loop {
        let still: Vec<u64> = zcprof_program_ids()
            .intersection(&loaded)
            .copied()
            .collect();
        if still.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "programs {still:?} of zcprof top still loaded after it exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// On a pipe, top says what to use instead and exits 2, before loading anything (so it needs
/// no privilege either).
#[test]
fn top_without_a_terminal() {
    let before = Instant::now();
    let out = zcprof(&["top"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {out:?}");
    assert!(lines[0].starts_with("zcprof: error: "), "{out:?}");
    assert!(
        lines[0].contains("zcprof attach") && lines[0].contains("zcprof serve"),
        "{out:?}"
    );
    // Loading and attaching the programs takes far longer.
    assert!(before.elapsed() < Duration::from_secs(2));
}
