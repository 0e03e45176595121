//! `zcprof attach --pid N`: profile running processes from now on, with per-interval deltas.

use std::{
    os::fd::{FromRawFd as _, OwnedFd},
    time::Instant,
};

use anyhow::Context as _;
use serde_json::json;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    archive::{ARCHIVE_EVERY, Archive},
    cli::AttachArgs,
    loader::Probes,
    privileges, report,
    snapshot::Snapshot,
    watch::{self, WatchError},
};

/// A pidfd: readable once the process has exited. Works for processes that are not our
/// children, unlike waitpid.
fn pidfd_open(pid: u32) -> Result<OwnedFd, WatchError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(WatchError::NoSuchProcess(pid));
    }
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches, prints deltas every interval, and prints the summary at the end.
pub async fn attach(args: &AttachArgs) -> anyhow::Result<i32> {
    let target = privileges::planned(&args.privileges, false)?;
    // Check the targets before loading anything: a wrong pid is the commonest mistake.
    let mut exits = Vec::new();
    for &pid in &args.pids {
        let fd = pidfd_open(pid)?;
        // SAFETY: the AsyncFd owns `fd`, an open pidfd that nothing else closes or replaces.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| anyhow::anyhow!("{e}"))?;
        exits.push((pid, fd));
    }
    let mut probes = Probes::load(args.probes.load_options())?;
    probes.warn_degraded();
    let mut watched = Vec::new();
    for &pid in &args.pids {
        watched.extend(watch::attach(&mut probes, pid, args.children)?);
    }
    // Everything that needs privileges is done: the maps and pidfds work without them.
    if let Some(t) = &target {
        privileges::drop_to(t, probes.a_map())?;
    }
    let started = Instant::now();
    eprintln!(
        "zcprof: attached to {} process(es){}; Ctrl-C to stop",
        args.pids.len(),
        if args.children {
            " and their children"
        } else {
            ""
        }
    );

    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(args.interval);
    tick.tick().await;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut previous = Snapshot::default();
    let mut last_tick = Instant::now();
    let mut archive = Archive::default();
    let mut archive_failed = false;
    let mut last_archive = Instant::now();
    if !args.json {
        println!("{}", report::INTERVAL_HEADER);
    }

    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let all_exited = async {
            for (pid, fd) in &exits {
                if let Ok(mut guard) = fd.readable().await {
                    guard.retain_ready();
                }
                eprintln!("zcprof: process {pid} exited");
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                probes.flush_log();
                if last_archive.elapsed() >= ARCHIVE_EVERY {
                    last_archive = Instant::now();
                    if let Err(e) = archive.take_dead(&mut probes)
                        && !std::mem::replace(&mut archive_failed, true)
                    {
                        eprintln!("zcprof: warning: cannot move dead threads out of the kernel maps: {e}");
                    }
                }
                if !args.json {
                    let now = archive.restore(probes.snapshot(None)?);
                    let secs = last_tick.elapsed().as_secs_f64();
                    print!("{}", report::interval_lines(&now.since(&previous), secs, args.top));
                    previous = now;
                    last_tick = Instant::now();
                }
            }
            _ = until_deadline => break,
            _ = all_exited => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    probes.flush_log();
    let snap = archive.restore(probes.snapshot(None).context("reading the final counts")?);
    let elapsed = started.elapsed().as_secs_f64();
    if args.json {
        let doc = report::to_json(
            &snap,
            probes.capabilities(),
            json!({"pids": args.pids, "watched": watched, "elapsed_s": elapsed}),
        );
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("\nzcprof: summary of {elapsed:.3}s since attach");
        print!("{}", report::to_text(&snap, args.top));
    }
    Ok(0)
}
