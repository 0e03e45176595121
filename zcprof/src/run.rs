//! `zcprof run -- CMD`: profile a command from its first instruction to its exit.

use std::{
    io::Write as _, os::unix::process::ExitStatusExt as _, process::Command,
    sync::mpsc::RecvTimeoutError, time::Instant,
};

use anyhow::{Context as _, anyhow};
use serde_json::json;

use crate::{
    archive::{Archive, PRESSURE_EVERY},
    attribution::Attribution,
    cli::RunArgs,
    loader::{LoadOptions, Probes},
    privileges, report, watch,
};

/// Runs the command, prints the report, and returns the command's exit code.
pub fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let program = &args.command[0];
    let override_tp = match &args.tracepoint_override {
        Some(s) => Some(
            s.split_once('=')
                .ok_or_else(|| anyhow!("--tracepoint-override takes FROM=TO, got `{s}`"))?,
        ),
        None => None,
    };
    // Created before anything is loaded, so that a bad path is the first error.
    let stack_outputs = args.stacks.open()?;
    // Symbolizing reads the profiled processes' memory maps as they run, which a process
    // that gave up its privileges may not.
    let target = match stack_outputs {
        Some(_) => None,
        None => privileges::planned(&args.privileges, false)?,
    };
    // Opened now: once zcprof has given up its privileges it may not be allowed to.
    let mut output = match &args.output {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("creating the report file {}", path.display()))?,
        ),
        None => None,
    };
    let mut probes = Probes::load(LoadOptions {
        tracepoint_override: override_tp,
        stacks: stack_outputs.is_some(),
        objects: args.attribution.objects(),
        ..args.probes.load_options()
    })?;
    probes.warn_degraded();

    // The command is counted from fork on: the fork hook enters every child of zcprof while
    // this entry exists, and zcprof itself is not counted.
    watch::follow_children_of_self(&mut probes)?;
    let started = Instant::now();
    let spawned = Command::new(program).args(&args.command[1..]).spawn();
    watch::stop_following_self(&mut probes);
    let mut child = spawned.with_context(|| format!("cannot run `{program}`"))?;
    let pid = child.id();
    // The command runs as zcprof was started; zcprof itself needs no privilege any more.
    if let Some(t) = &target
        && let Err(e) = privileges::drop_to(t, probes.a_map())
    {
        // The command is running: report it, and keep profiling it rather than abandon it.
        eprintln!("zcprof: warning: {e}");
    }

    // Like `time` and `strace`, survive the terminal's Ctrl-C (the command gets it too) so
    // that the report is still printed.
    // SAFETY: setting a signal disposition to SIG_IGN has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    // The command is waited for on a thread of its own, so that dead threads can be moved out
    // of the kernel's thread table meanwhile (see `archive`).
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let mut archive = Archive::default();
    let mut tracker = crate::stacks::Tracker::default();
    // With stacks, processes' memory maps are read while they live: more often.
    let every = match probes.stack_maps() {
        Some(_) => crate::stacks::POLL_EVERY,
        None => PRESSURE_EVERY,
    };
    let status = loop {
        if let Some(maps) = probes.stack_maps() {
            tracker.poll(maps);
        }
        match exit.recv_timeout(every) {
            Ok(status) => break status.with_context(|| format!("waiting for `{program}`"))?,
            Err(RecvTimeoutError::Timeout) => archive.sweep_if_due(&mut probes, |_, _| true),
            Err(RecvTimeoutError::Disconnected) => {
                anyhow::bail!("lost track of `{program}` (its waiting thread ended)")
            }
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let exit_code = match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    };

    probes.flush_log();
    let snap = archive.read(&probes, |_, _| true)?;
    if let (Some(outputs), Some(maps)) = (stack_outputs, probes.stack_maps()) {
        let comms = crate::stacks::comms(&snap);
        tracker.finish(maps, outputs, &comms, false, &args.command.join(" "))?;
    }
    let attribution = Attribution::new(probes.objects()?, args.attribution);
    let text = if args.json {
        let mut extra = json!({"command": args.command, "exit_code": exit_code, "pid": pid,
                               "elapsed_s": elapsed});
        if let Some(extra) = extra.as_object_mut() {
            extra.extend(attribution.json(args.top));
        }
        let doc = report::to_json(&snap, probes.capabilities(), extra);
        format!("{}\n", serde_json::to_string_pretty(&doc)?)
    } else {
        format!(
            "zcprof: `{}` exited with code {exit_code} after {elapsed:.3}s\n{}{}",
            args.command.join(" "),
            report::to_text(&snap, args.top),
            attribution.text(args.top)
        )
    };
    match (&mut output, &args.output) {
        (Some(file), Some(path)) => file
            .write_all(text.as_bytes())
            .with_context(|| format!("writing the report to {}", path.display()))?,
        _ => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (e.g. `| head`) is not an error worth a message.
            let _ = out.write_all(text.as_bytes());
        }
    }
    Ok(exit_code)
}
