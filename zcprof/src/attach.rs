//! `zcprof attach --pid N`: profile running processes from now on, with per-interval deltas.

use std::{
    os::fd::{FromRawFd as _, OwnedFd},
    time::Instant,
};

use anyhow::Context as _;
use regex::Regex;
use serde_json::json;
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    archive::{Archive, PRESSURE_EVERY},
    attribution::Attribution,
    cli::AttachArgs,
    loader::Probes,
    privileges, report,
    serve::{
        cgroup::{self, HostFs},
        compile_comm,
        engine::{self, Host as _},
    },
    snapshot::{ProcessView, Snapshot},
    watch::{self, WatchError},
};

/// `--comm` and `--cgroup`: the programs count every process, and attach reports those that
/// match (besides the `--pid` ones).
struct Selection {
    pids: Vec<u32>,
    comm: Option<Regex>,
    /// The host's cgroup paths, and the scope below the cgroup root.
    cgroup: Option<(HostFs, String)>,
}

impl Selection {
    /// The selection `args` asks for, if any.
    fn from_args(args: &AttachArgs) -> anyhow::Result<Option<Self>> {
        if args.comm.is_none() && args.cgroup.is_none() {
            return Ok(None);
        }
        let comm = args.comm.as_deref().map(compile_comm).transpose()?;
        let cgroup = match &args.cgroup {
            Some(dir) => {
                let root = cgroup::mount_point(args.cgroup_root.as_deref())?;
                let scope = cgroup::scope_path(dir, &root)?;
                Some((HostFs::new(Some(root)), scope))
            }
            None => None,
        };
        Ok(Some(Selection {
            pids: Vec::new(),
            comm,
            cgroup,
        }))
    }

    /// Whether process `pid` is reported: one of `--pid`'s, or it matches both `--comm` and
    /// `--cgroup` (those given) by its name or any of its threads'.
    fn keeps(&mut self, pid: u32, p: &ProcessView) -> bool {
        if self.pids.contains(&pid) {
            return true;
        }
        let named =
            |re: &Regex| re.is_match(&p.comm) || p.threads.values().any(|t| re.is_match(&t.comm));
        if self.comm.as_ref().is_some_and(|re| !named(re)) {
            return false;
        }
        let Some((host, scope)) = &mut self.cgroup else {
            return true;
        };
        p.threads.values().any(|t| {
            let id = match t.cgroup_id {
                0 => host.cgroup_of_process(pid),
                id => id,
            };
            host.cgroup_path(id)
                .is_some_and(|path| engine::is_within(&path, scope))
        })
    }

    /// `snap` without the processes not reported.
    fn retain(&mut self, mut snap: Snapshot) -> Snapshot {
        self.cgroup_refresh();
        snap.processes.retain(|key, p| self.keeps(key.pid, p));
        snap
    }

    /// Lets the cgroup cache look again for cgroups created since the last read.
    fn cgroup_refresh(&mut self) {
        if let Some((host, _)) = &mut self.cgroup {
            host.begin_collection();
        }
    }
}

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

/// Whether process `pid`, whose pidfd is in `exits`, has exited (its pidfd is readable).
fn has_exited(exits: &[(u32, AsyncFd<OwnedFd>)], pid: u32) -> bool {
    use std::os::fd::AsRawFd as _;
    exits.iter().filter(|(p, _)| *p == pid).any(|(_, fd)| {
        let mut poll = libc::pollfd {
            fd: fd.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes one valid pollfd for an fd we own; timeout 0.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready == 1
    })
}

/// `snap` as attach reports it: with a selection, only the processes it keeps.
fn reported(selection: &mut Option<Selection>, snap: Snapshot) -> Snapshot {
    match selection {
        Some(s) => s.retain(snap),
        None => snap,
    }
}

/// Attaches, prints deltas every interval, and prints the summary at the end.
pub async fn attach(args: &AttachArgs) -> anyhow::Result<i32> {
    // Created before anything is loaded, so that a bad path is the first error.
    let stack_outputs = args.stacks.open()?;
    // Symbolizing reads the watched processes' memory maps as they run, which a process
    // that gave up its privileges may not.
    let target = match stack_outputs {
        Some(_) => None,
        None => privileges::planned(&args.privileges, false)?,
    };
    // Check the targets before loading anything: a wrong pid is the commonest mistake.
    let mut exits = Vec::new();
    for &pid in &args.pids {
        let fd = pidfd_open(pid)?;
        // SAFETY: the AsyncFd owns `fd`, an open pidfd that nothing else closes or replaces.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| anyhow::anyhow!("{e}"))?;
        exits.push((pid, fd));
    }
    let mut selection = Selection::from_args(args)?;
    let mut options = args.probes.load_options();
    options.watch_all = selection.is_some();
    options.stacks = stack_outputs.is_some();
    options.objects = args.attribution.objects();
    let mut probes = Probes::load(options)?;
    probes.warn_degraded();
    let mut watched = Vec::new();
    let mut gone = Vec::new();
    for &pid in &args.pids {
        match watch::attach_counting(&mut probes, pid, args.children) {
            Ok(a) => {
                if a.vanished > 0 {
                    eprintln!(
                        "zcprof: note: {} thread(s) of process {pid} exited while zcprof was \
                         attaching; they are not counted",
                        a.vanished
                    );
                }
                watched.extend(a.pids);
            }
            // It existed when its pidfd was opened: it exited while the programs loaded.
            Err(WatchError::NoSuchProcess(_)) if has_exited(&exits, pid) => {
                exits.retain(|(p, _)| *p != pid);
                gone.push(pid.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !gone.is_empty() {
        let gone = gone.join(", ");
        if exits.is_empty() && selection.is_none() {
            anyhow::bail!(
                "process {gone} exited while zcprof was starting, before it could attach: \
                 nothing to count; to count a short-lived command from its start, use zcprof run"
            );
        }
        eprintln!("zcprof: process {gone} exited while zcprof was starting; not counted");
    }
    if let Some(s) = &mut selection {
        s.pids.clone_from(&watched);
    }

    // Everything that needs privileges is done: the maps and pidfds work without them.
    if let Some(t) = &target {
        privileges::drop_to(t, probes.a_map())?;
    }
    let started = Instant::now();
    let matching = match (&args.comm, &args.cgroup) {
        (Some(re), Some(dir)) => format!(", and every process named {re} in {}", dir.display()),
        (Some(re), None) => format!(", and every process named {re}"),
        (None, Some(dir)) => format!(", and every process in {}", dir.display()),
        (None, None) => String::new(),
    };
    eprintln!(
        "zcprof: attached to {} process(es){}{matching}; Ctrl-C to stop",
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
    let mut pressure_tick = tokio::time::interval(PRESSURE_EVERY);
    let mut tracker = crate::stacks::Tracker::default();
    let mut stack_tick = tokio::time::interval(crate::stacks::POLL_EVERY);
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
            if exits.is_empty() {
                // --comm/--cgroup alone: processes come and go; only the deadline or a
                // signal ends the watch.
                std::future::pending::<()>().await;
            }
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
                if !args.json {
                    let snap = archive.read(&probes, |pid, p| {
                        selection.as_mut().is_none_or(|s| s.keeps(pid, p))
                    })?;
                    let now = reported(&mut selection, snap);
                    let secs = last_tick.elapsed().as_secs_f64();
                    print!("{}", report::interval_lines(&now.since(&previous), secs, args.top));
                    previous = now;
                    last_tick = Instant::now();
                }
            }
            // Apart from the report's interval, which may be long (see `archive`).
            _ = pressure_tick.tick() => {
                archive.sweep_if_due(&mut probes, |pid, p| {
                    selection.as_mut().is_none_or(|s| s.keeps(pid, p))
                });
            }
            _ = stack_tick.tick(), if probes.stack_maps().is_some() => {
                if let Some(maps) = probes.stack_maps() {
                    tracker.poll(maps);
                }
            }
            _ = until_deadline => break,
            _ = all_exited => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    probes.flush_log();
    let snap = archive
        .read(&probes, |pid, p| {
            selection.as_mut().is_none_or(|s| s.keeps(pid, p))
        })
        .context("reading the final counts")?;
    let snap = reported(&mut selection, snap);
    let elapsed = started.elapsed().as_secs_f64();
    if let (Some(outputs), Some(maps)) = (stack_outputs, probes.stack_maps()) {
        let comms = crate::stacks::comms(&snap);
        let title = format!(
            "attach to {}",
            watched
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        tracker.finish(maps, outputs, &comms, selection.is_some(), &title)?;
    }
    let attribution = Attribution::new(
        probes.objects().context("reading the attribution")?,
        args.attribution,
    );
    if args.json {
        let mut extra = json!({"pids": args.pids, "watched": watched, "elapsed_s": elapsed});
        if let Some(extra) = extra.as_object_mut() {
            extra.extend(attribution.json(args.top));
        }
        let doc = report::to_json(&snap, probes.capabilities(), extra);
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("\nzcprof: summary of {elapsed:.3}s since attach");
        print!("{}", report::to_text(&snap, args.top));
        print!("{}", attribution.text(args.top));
    }
    Ok(0)
}
