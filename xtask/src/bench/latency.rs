//! Case (d), attach latency: from spawning `zcprof attach --pid P --interval 10ms` to its
//! first interval line in which P's syscalls/s is above zero, P being a dd that makes
//! syscalls without pause. The lines are time-stamped as they arrive (zcprof's stdout is
//! line-buffered), so the figure is what a user watching the terminal would see.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{
    Config,
    child::{Child, Line, Stream},
    median,
};
use crate::process;

pub const INTERVAL: &str = "10ms";

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub command: String,
    /// Spawn to first counted interval line, per sample.
    pub samples_ms: Vec<f64>,
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Spawn to `zcprof: attached` on stderr (programs loaded and attached), per sample.
    pub attached_ms: Vec<f64>,
    pub attached_median_ms: Option<f64>,
    pub error: Option<String>,
}

/// The syscalls/s column of an interval line for `pid` (`{pid:>8} {comm:<15} {rate:>10} …`).
pub fn interval_rate(line: &str, pid: u32) -> Option<f64> {
    let first: u32 = line.split_whitespace().next()?.parse().ok()?;
    if first != pid {
        return None;
    }
    // The command name may hold spaces: skip the fixed-width pid and comm columns.
    let rest: String = line.chars().skip(8 + 1 + 15).collect();
    rest.split_whitespace().next()?.parse().ok()
}

pub fn run(zcprof: &Path, config: &Config, say: &dyn Fn(String)) -> Section {
    let mut section = Section {
        command: format!("zcprof attach --pid P --interval {INTERVAL}"),
        samples_ms: Vec::new(),
        median_ms: None,
        max_ms: None,
        attached_ms: Vec::new(),
        attached_median_ms: None,
        error: None,
    };
    if let Err(e) = measure(zcprof, config, &mut section, say) {
        say(format!("bench: (d) FAILED: {e:#}"));
        section.error = Some(format!("{e:#}"));
    }
    section.median_ms = median(&section.samples_ms);
    section.max_ms = section.samples_ms.iter().copied().reduce(f64::max);
    section.attached_median_ms = median(&section.attached_ms);
    section
}

fn measure(
    zcprof: &Path,
    config: &Config,
    section: &mut Section,
    say: &dyn Fn(String),
) -> Result<()> {
    // About 30 s of one-byte syscalls at the bare rate: more than the samples need. It is
    // killed when `target` is dropped.
    let mut cmd = process::command("dd");
    cmd.args(["if=/dev/zero", "of=/dev/null", "bs=1", "count=100000000"]);
    let target = Child::spawn(cmd, false)?;
    let pid = target.pid();
    std::thread::sleep(Duration::from_millis(100));
    for i in 0..config.attach_samples {
        let mut cmd = process::command(zcprof);
        cmd.args(["attach", "--pid", &pid.to_string(), "--interval", INTERVAL]);
        let mut attach = Child::spawn(cmd, false)?;
        let first = attach.wait_for(
            Duration::from_secs(60),
            |l| l.stream == Stream::Stdout && interval_rate(&l.text, pid).is_some_and(|r| r > 0.0),
            &format!("an interval line with syscalls/s > 0 for pid {pid}"),
        )?;
        let latency = first.at.duration_since(attach.started).as_secs_f64() * 1e3;
        // `zcprof: attached` (stderr) comes before that line, but is read by another thread.
        let is_attached =
            |l: &Line| l.stream == Stream::Stderr && l.text.starts_with("zcprof: attached");
        let attached_line = match attach.lines_so_far().iter().find(|l| is_attached(l)) {
            Some(l) => Some(l.clone()),
            None => attach
                .wait_for(Duration::from_secs(5), is_attached, "`zcprof: attached`")
                .ok(),
        };
        let attached_at =
            attached_line.map(|l| l.at.duration_since(attach.started).as_secs_f64() * 1e3);
        let done = attach.stop(libc::SIGTERM, Duration::from_secs(30))?;
        done.ensure_success()
            .context("zcprof attach did not exit 0 on SIGTERM")?;
        say(format!(
            "bench: (d) sample {}/{}: first counted line after {latency:.0} ms (attached after \
             {} ms)",
            i + 1,
            config.attach_samples,
            attached_at.map_or_else(|| "?".to_owned(), |a| format!("{a:.0}"))
        ));
        section.samples_ms.push(latency);
        if let Some(a) = attached_at {
            section.attached_ms.push(a);
        }
    }
    drop(target);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_lines() {
        let l = format!(
            "{:>8} {:<15} {:>10.0} {:>12}",
            4242, "dd", 1234567.0, "1.2 MiB"
        );
        assert_eq!(interval_rate(&l, 4242), Some(1234567.0));
        assert_eq!(interval_rate(&l, 4243), None);
        let l = format!("{:>8} {:<15} {:>10.0} {:>12}", 7, "Web Content", 0.0, "0 B");
        assert_eq!(interval_rate(&l, 7), Some(0.0));
        assert_eq!(
            interval_rate("     pid comm            syscalls/s   cpu copied", 4242),
            None
        );
    }
}
