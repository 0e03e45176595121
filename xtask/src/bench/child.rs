//! Child processes for the bench: output read line by line (each line time-stamped as it
//! arrives), waits with deadlines, signals, and a kill on drop so that nothing is left running
//! when a measurement fails.

use std::{
    io::{BufRead as _, BufReader, Read},
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::process;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a child's output and when it arrived.
#[derive(Debug, Clone)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
    pub at: Instant,
}

/// A running child whose stdout and stderr are read by two threads.
pub struct Child {
    what: String,
    inner: Option<std::process::Child>,
    /// The child's stdin, if it was spawned with one (else /dev/null).
    pub stdin: Option<std::process::ChildStdin>,
    rx: mpsc::Receiver<Line>,
    /// Every line received so far.
    lines: Vec<Line>,
    /// Just before the spawn.
    pub started: Instant,
}

/// A child that has exited, with all it printed.
pub struct Finished {
    pub what: String,
    pub status: ExitStatus,
    pub lines: Vec<Line>,
}

impl Finished {
    pub fn stdout(&self) -> String {
        join(&self.lines, Some(Stream::Stdout))
    }

    pub fn stderr(&self) -> String {
        join(&self.lines, Some(Stream::Stderr))
    }

    /// Fails unless the child exited with status 0.
    pub fn ensure_success(&self) -> Result<&Self> {
        if !self.status.success() {
            bail!(
                "`{}` failed ({}):\n{}",
                self.what,
                self.status,
                process::tail(&join(&self.lines, None), 15)
            );
        }
        Ok(self)
    }
}

fn join(lines: &[Line], stream: Option<Stream>) -> String {
    let mut out = String::new();
    for l in lines
        .iter()
        .filter(|l| stream.is_none_or(|s| s == l.stream))
    {
        out.push_str(&l.text);
        out.push('\n');
    }
    out
}

fn reader(stream: Stream, pipe: impl Read + Send + 'static, tx: mpsc::Sender<Line>) {
    thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match pipe.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_owned();
                    let line = Line {
                        stream,
                        text,
                        at: Instant::now(),
                    };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

impl Child {
    /// Spawns `cmd` (from [`process::command`]) with stdout and stderr piped, stdin piped if
    /// `with_stdin`, and `LC_ALL=C` (dd's and perf's number formats).
    pub fn spawn(mut cmd: Command, with_stdin: bool) -> Result<Child> {
        let what = process::describe(&cmd);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C");
        if with_stdin {
            cmd.stdin(Stdio::piped());
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not run `{what}`"))?;
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            reader(Stream::Stdout, out, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            reader(Stream::Stderr, err, tx);
        }
        Ok(Child {
            what,
            stdin: child.stdin.take(),
            inner: Some(child),
            rx,
            lines: Vec::new(),
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.inner.as_ref().map_or(0, |c| c.id())
    }

    /// Waits until a line satisfies `pred` and returns it; fails on timeout or if the child
    /// closes its output first.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Line) -> bool,
        expected: &str,
    ) -> Result<Line> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.lines.push(line.clone());
                    if hit {
                        return Ok(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "`{}` did not print {expected} within {timeout:?}; it printed:\n{}",
                    self.what,
                    process::tail(&join(&self.lines, None), 15)
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self
                        .inner
                        .as_mut()
                        .and_then(|c| c.wait().ok())
                        .map_or_else(|| "unknown status".to_owned(), |s| s.to_string());
                    bail!(
                        "`{}` ended ({status}) without printing {expected}; it printed:\n{}",
                        self.what,
                        process::tail(&join(&self.lines, None), 15)
                    )
                }
            }
        }
    }

    /// The lines read so far.
    pub fn lines_so_far(&self) -> &[Line] {
        &self.lines
    }

    /// Sends `signal` to the child unless it has already been reaped.
    pub fn signal(&mut self, signal: i32) {
        if let Some(c) = self.inner.as_mut()
            && matches!(c.try_wait(), Ok(None))
        {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, signal);
            }
        }
    }

    /// Closes the child's stdin (if it has one).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the child to exit (killing it after `timeout`, which is an error) and for the
    /// rest of its output.
    pub fn finish(mut self, timeout: Duration) -> Result<Finished> {
        self.stdin = None;
        let mut child = self.inner.take().context("child already reaped")?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for `{}`", self.what))?
            {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`{}` did not finish within {timeout:?} (killed); it printed:\n{}",
                    self.what,
                    process::tail(&join(&self.lines, None), 15)
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        // The pipes close when the child exits, unless a descendant holds them: then give up
        // on what it would still print after a while.
        let drain_until = Instant::now() + Duration::from_secs(5);
        loop {
            let left = drain_until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.lines.push(line),
                Err(_) => break,
            }
        }
        Ok(Finished {
            what: std::mem::take(&mut self.what),
            status,
            lines: std::mem::take(&mut self.lines),
        })
    }

    /// Sends `signal`, then [`finish`](Self::finish)es.
    pub fn stop(mut self, signal: i32, timeout: Duration) -> Result<Finished> {
        self.signal(signal);
        self.finish(timeout)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut c) = self.inner.take()
            && matches!(c.try_wait(), Ok(None))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to completion (killed after `timeout`) with its output captured.
pub fn run(cmd: Command, timeout: Duration) -> Result<Finished> {
    Child::spawn(cmd, false)?.finish(timeout)
}
