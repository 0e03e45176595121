//! Choosing what the kernel programs count: enters processes and their threads into the
//! `WATCHED` and `THREADS` maps.

use std::{fs, path::Path};

use aya::maps::MapError;
use zcprof_common::{NVCSW_UNKNOWN, ThreadStats, WATCH_COUNT, WATCH_FOLLOW_CHILDREN};

use crate::loader::Probes;

/// Errors choosing what to watch.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The process does not exist (or is not visible in this PID namespace).
    #[error("no process with pid {0} (is it running, and in this PID namespace?)")]
    NoSuchProcess(u32),
    /// A map was full or refused the entry.
    #[error("cannot watch pid {pid}: {source}")]
    Map { pid: u32, source: MapError },
    /// The thread table was full or refused the entry.
    #[error("cannot watch the threads of pid {pid}: {source}")]
    Threads {
        pid: u32,
        source: crate::thread_table::ThreadTableError,
    },
}

/// Makes the processes the calling process forks from now on watched (with their children),
/// without counting the calling process itself. Undo with [`stop_following_self`].
pub fn follow_children_of_self(probes: &mut Probes) -> Result<(), WatchError> {
    let me = std::process::id();
    probes
        .watch_process(me, WATCH_FOLLOW_CHILDREN)
        .map_err(|source| WatchError::Map { pid: me, source })
}

/// Stops watching the calling process's future children.
pub fn stop_following_self(probes: &mut Probes) {
    // It may be gone already; nothing to undo then.
    probes.unwatch_process(std::process::id());
}

/// Starts counting process `pid` and every thread it has now (and, with `children`, its
/// existing and future descendants). Counting starts at zero: only activity from now on.
pub fn attach(probes: &mut Probes, pid: u32, children: bool) -> Result<Vec<u32>, WatchError> {
    attach_counting(probes, pid, children).map(|a| a.pids)
}

/// What [`attach_counting`] entered.
#[derive(Debug, Default)]
pub struct Attached {
    /// The processes watched: `pid` and, with `children`, its descendants.
    pub pids: Vec<u32>,
    /// Threads listed in /proc that exited before zcprof could enter them (not entered: no
    /// exit of theirs would ever free their slot).
    pub vanished: u32,
}

/// As [`attach`], also counting the threads that exited while they were being entered.
pub fn attach_counting(
    probes: &mut Probes,
    pid: u32,
    children: bool,
) -> Result<Attached, WatchError> {
    let proc_dir = format!("/proc/{pid}");
    if !Path::new(&proc_dir).join("task").is_dir() || is_thread_not_process(pid) {
        return Err(WatchError::NoSuchProcess(pid));
    }
    let mut pids = vec![pid];
    if children {
        pids.extend(descendants(pid));
    }
    let flags = if children {
        WATCH_COUNT | WATCH_FOLLOW_CHILDREN
    } else {
        WATCH_COUNT
    };
    let mut vanished = 0;
    for &p in &pids {
        // The process map first, so that threads created from here on are entered by the
        // fork hook; then the threads that exist now.
        probes
            .watch_process(p, flags)
            .map_err(|source| WatchError::Map { pid: p, source })?;
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // Listed a moment ago, the thread may be gone (or a zombie) by now: its exit has
            // passed, so an entry for it would never be retired.
            let status = match fs::read_to_string(format!("/proc/{p}/task/{tid}/status")) {
                Ok(s) if !exited(&s) => s,
                _ => {
                    vanished += 1;
                    continue;
                }
            };
            let entry = ThreadStats::new(tid, p, comm_of(&status), nvcsw_of(&status));
            // Already entered (by the fork hook) is as good as entered now.
            probes
                .enter_thread(entry)
                .map_err(|source| WatchError::Threads { pid: p, source })?;
        }
    }
    probes
        .watched_set_changed()
        .map_err(|source| WatchError::Map { pid, source })?;
    Ok(Attached { pids, vanished })
}

/// Whether a thread's /proc status says it has exited (zombie or dead).
fn exited(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .is_some_and(|s| matches!(s.trim_start().chars().next(), Some('Z' | 'X')))
}

/// A tid that is not a thread-group leader has /proc/TID but is not a process.
fn is_thread_not_process(pid: u32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|tgid| tgid != pid)
}

fn comm_of(status: &str) -> [u8; 16] {
    let mut comm = [0u8; 16];
    if let Some(name) = status.lines().find_map(|l| l.strip_prefix("Name:")) {
        let name = name.trim().as_bytes();
        let n = name.len().min(15);
        comm[..n].copy_from_slice(&name[..n]);
    }
    comm
}

/// The thread's voluntary switches so far, which the kernel program compares against at the
/// next switch; unknown if the thread vanished meanwhile.
fn nvcsw_of(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(NVCSW_UNKNOWN)
}

/// Every live descendant of `pid`, from /proc/*/stat parent links.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // comm may contain spaces and parentheses: fields resume after the last ')'.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parent_of {
            if ppid == parent && !out.contains(&child) && child != pid {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}
