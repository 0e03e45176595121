//! One strategy under the profiler, the way a user would do it by hand:
//!
//! 1. `zcprof workload --strategy S --size N --buffer B --start-gate`: it sets everything up
//!    (file in the page cache, receiver forked and connected, buffers touched), says `ready` on
//!    stderr and waits for a line on stdin;
//! 2. `zcprof attach --pid <workload> --children --json --interval 1h`, until it says
//!    `zcprof: attached` on stderr;
//! 3. `go` on the workload's stdin; the workload transfers, prints its tally (JSON) and exits;
//! 4. zcprof attach sees every watched process exit and prints its one JSON document.
//!
//! Every wait has a deadline; on any failure both children (and the workload's receiver, which
//! shares its process group) are killed and reaped.

use std::{
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::process;

/// The workload's line on stderr when it waits at the gate.
const READY: &str = "ready";
/// The start of zcprof attach's line on stderr once its probes count.
const ATTACHED: &str = "zcprof: attached";
/// What releases the gate.
const GO: &[u8] = b"go\n";

/// What one run produced.
pub struct Output {
    /// The workload's stdout: its tally, as JSON.
    pub workload_stdout: String,
    /// zcprof attach's stdout: its report, as JSON.
    pub report_stdout: String,
    /// zcprof attach's stderr (warnings, `attached`, `process N exited`).
    pub attach_stderr: Vec<String>,
}

/// Stages of a run, for the progress display.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Preparing,
    Attaching,
    Transferring,
    Collecting,
}

impl Stage {
    pub fn describe(self) -> &'static str {
        match self {
            Stage::Preparing => "preparing (file, receiver, buffers)",
            Stage::Attaching => "attaching zcprof",
            Stage::Transferring => "transferring",
            Stage::Collecting => "waiting for zcprof's report",
        }
    }
}

/// One strategy's run.
pub struct Run<'a> {
    pub strategy: &'a str,
    /// Bytes it sends.
    pub size: u64,
    /// Its chunk size.
    pub buffer: u64,
    /// How long it may take, setup, transfer and report included.
    pub timeout: Duration,
    /// Where zcprof attach writes the flame graph of the workload's stacks, if anywhere.
    pub flamegraph: Option<&'a Path>,
}

/// Runs a strategy under `zcprof attach`; fails after its timeout overall.
pub fn run(zcprof: &Path, run: &Run<'_>, mut stage: impl FnMut(Stage)) -> Result<Output> {
    let Run {
        strategy,
        size,
        buffer,
        timeout,
        flamegraph,
    } = *run;
    let deadline = Instant::now() + timeout;
    stage(Stage::Preparing);

    let mut cmd = process::command(zcprof);
    cmd.args(["workload", "--strategy", strategy])
        .arg("--size")
        .arg(size.to_string())
        .arg("--buffer")
        .arg(buffer.to_string())
        .arg("--start-gate")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: on failure, one kill reaches the receiver it forks too.
        .process_group(0);
    let mut workload = Spawned::new(&mut cmd, "the workload", true)?;
    let wl_out = read_all(workload.child.stdout.take());
    let wl_err = lines(workload.child.stderr.take());
    let mut wl_log = Vec::new();
    workload
        .wait_line(
            &wl_err,
            &mut wl_log,
            |l| l == READY,
            deadline,
            "say `ready`",
        )
        .with_context(|| format!("workload {strategy}"))?;

    stage(Stage::Attaching);
    let mut cmd = process::command(zcprof);
    cmd.args(["attach", "--pid"])
        .arg(workload.child.id().to_string())
        .args(["--children", "--json", "--interval", "1h"]);
    if let Some(svg) = flamegraph {
        cmd.arg("--flamegraph").arg(svg);
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut attach = Spawned::new(&mut cmd, "zcprof attach", false)?;
    let at_out = read_all(attach.child.stdout.take());
    let at_err = lines(attach.child.stderr.take());
    let mut at_log = Vec::new();
    attach
        .wait_line(
            &at_err,
            &mut at_log,
            |l| l.starts_with(ATTACHED),
            deadline,
            "attach",
        )
        .with_context(|| format!("zcprof attach to the {strategy} workload"))?;

    stage(Stage::Transferring);
    {
        let mut stdin = workload
            .child
            .stdin
            .take()
            .context("the workload's stdin is not a pipe")?;
        stdin
            .write_all(GO)
            .context("could not release the workload's start gate (write to its stdin)")?;
        // Dropped here: closing stdin after the line is harmless (the workload reads one line).
    }
    let status = workload.wait(deadline, "finish its transfer")?;
    drain(&wl_err, &mut wl_log);
    if !status.success() {
        bail!(
            "the {strategy} workload failed ({status}):\n{}",
            stderr_tail(&wl_log)
        );
    }
    let workload_stdout = join(wl_out).context("reading the workload's stdout")?;

    stage(Stage::Collecting);
    let status = attach.wait(deadline, "report after the workload exited")?;
    drain(&at_err, &mut at_log);
    if !status.success() {
        bail!("zcprof attach failed ({status}):\n{}", stderr_tail(&at_log));
    }
    let report_stdout = join(at_out).context("reading zcprof attach's stdout")?;
    Ok(Output {
        workload_stdout,
        report_stdout,
        attach_stderr: at_log,
    })
}

/// A child that is killed and reaped if it is dropped before it was waited for.
struct Spawned {
    child: Child,
    name: &'static str,
    /// The child leads its own process group: kill the group.
    group: bool,
    reaped: bool,
}

impl Spawned {
    fn new(cmd: &mut Command, name: &'static str, group: bool) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start `{}`", process::describe(cmd)))?;
        Ok(Self {
            child,
            name,
            group,
            reaped: false,
        })
    }

    /// Reads `lines` (the child's stderr) into `log` until `found` matches one; fails if the
    /// child closes its stderr (exits) first or the deadline passes.
    fn wait_line(
        &mut self,
        lines: &mpsc::Receiver<String>,
        log: &mut Vec<String>,
        found: impl Fn(&str) -> bool,
        deadline: Instant,
        what: &str,
    ) -> Result<()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = found(line.trim_end());
                    log.push(line);
                    if hit {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    bail!(
                        "{} did not {what} in time (killed it); its stderr:\n{}",
                        self.name,
                        stderr_tail(log)
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Closed stderr: it exited (or is exiting). Collect its status.
                    let status = self
                        .wait(Instant::now() + Duration::from_secs(5), "exit")
                        .map_or_else(|e| format!("{e:#}"), |s| s.to_string());
                    bail!(
                        "{} exited before it could {what} ({status}); its stderr:\n{}",
                        self.name,
                        stderr_tail(log)
                    );
                }
            }
        }
    }

    /// Waits for the child to exit; kills it (and fails) at the deadline.
    fn wait(&mut self, deadline: Instant, what: &str) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?
            {
                self.reaped = true;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(anyhow!("{} did not {what} in time (killed it)", self.name));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL (the whole group for the workload) and reap.
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: plain kill(2); the child is not reaped, so `pid` (and its group, which it
        // leads) cannot have been recycled.
        unsafe {
            libc::kill(if self.group { -pid } else { pid }, libc::SIGKILL);
        }
        // Reaping can only fail if it was reaped already.
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A thread that reads `stream` to its end.
fn read_all(stream: Option<ChildStdout>) -> JoinHandle<std::io::Result<String>> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stream {
            s.read_to_string(&mut text)?;
        }
        Ok(text)
    })
}

fn join(handle: JoinHandle<std::io::Result<String>>) -> Result<String> {
    handle
        .join()
        .map_err(|_| anyhow!("the reader thread panicked"))?
        .map_err(Into::into)
}

/// The last lines a child wrote on stderr, indented, for an error message.
fn stderr_tail(log: &[String]) -> String {
    if log.is_empty() {
        "    (nothing)".to_owned()
    } else {
        process::tail(&log.join("\n"), 20)
    }
}

/// Moves the lines still to come from an exited child's stderr into `log` (the reader thread
/// may be a little behind; a grandchild holding the pipe open must not block us for long).
fn drain(lines: &mpsc::Receiver<String>, log: &mut Vec<String>) {
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) {
        log.push(line);
    }
}

/// A thread that sends every line of `stream` down a channel, which disconnects at its end.
fn lines(stream: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(stream) = stream {
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}
