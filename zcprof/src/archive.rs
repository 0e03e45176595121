//! Dead threads of `zcprof run` and `zcprof attach`, moved out of the kernel maps.
//!
//! The kernel's thread table has a fixed number of slots (`--max-threads`). A command that
//! creates more threads than that over its life (a build, a shell loop, a server with a thread
//! pool that churns) would fill it, so run and attach read each dead thread's final counts
//! once, keep them here, and give its slot and ledger cells back. Reports then show the live
//! threads and the archived ones together, exactly as if nothing had moved.

use std::collections::{BTreeMap, BTreeSet, btree_map::Entry};

use zcprof_common::TransferKey;

use crate::{
    collector::{self, CollectError, Snapshot, ThreadView},
    loader::Probes,
};

/// How often run and attach move dead threads out: often enough that a command creating
/// thousands of short-lived threads a second does not fill the default table, rarely enough
/// that reading every map twice stays cheap.
pub const ARCHIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Final counts of dead threads, by process and tid.
#[derive(Debug, Default)]
pub struct Archive {
    processes: BTreeMap<u32, BTreeMap<u32, ThreadView>>,
    /// Process names, for processes whose threads are all archived.
    comms: BTreeMap<u32, String>,
}

impl Archive {
    /// Moves every thread that is dead now into the archive and frees its kernel entries.
    ///
    /// A thread is archived from a second read of the maps, made after the read that found
    /// it dead: a thread that died during the first read could have counted into a cell that
    /// read had already passed.
    pub fn take_dead(&mut self, probes: &mut Probes) -> Result<usize, CollectError> {
        let first = collector::snapshot(probes, None)?;
        let dead: BTreeSet<(u32, u32)> = first
            .processes
            .iter()
            .flat_map(|(&pid, p)| {
                p.threads
                    .iter()
                    .filter(|(_, t)| t.dead)
                    .map(move |(&tid, _)| (pid, tid))
            })
            .collect();
        if dead.is_empty() {
            return Ok(0);
        }
        let second = collector::snapshot(probes, None)?;
        for &(pid, tid) in &dead {
            let Some(p) = second.processes.get(&pid) else {
                continue;
            };
            let Some(t) = p.threads.get(&tid) else {
                continue;
            };
            // Cells first: while the thread's slot is held its tid cannot be entered again,
            // so no new thread's cell can be deleted with the old ones.
            for &(sc, col) in t.transfers.keys() {
                let key = TransferKey {
                    tgid: pid,
                    tid,
                    syscall: sc as u16,
                    column: col as u16,
                };
                // Inline cells have no TRANSFERS entry: nothing to delete.
                let _ = probes.transfers.remove(&key);
            }
            probes
                .threads
                .remove(tid)
                .map_err(|source| CollectError::Map {
                    map: "THREADS",
                    source,
                })?;
            if tid == pid || !self.comms.contains_key(&pid) {
                self.comms.insert(pid, t.comm.clone());
            }
            merge_thread(self.processes.entry(pid).or_default().entry(tid), t);
        }
        Ok(dead.len())
    }

    /// `snap` with the archived threads added back in.
    pub fn restore(&self, mut snap: Snapshot) -> Snapshot {
        for (&pid, threads) in &self.processes {
            let p = snap.processes.entry(pid).or_default();
            for (&tid, t) in threads {
                p.counters.add(&t.counters);
                for (k, c) in &t.transfers {
                    p.transfers.entry(*k).or_default().add(c);
                }
                merge_thread(p.threads.entry(tid), t);
            }
            if p.comm.is_empty()
                && let Some(c) = self.comms.get(&pid)
            {
                p.comm = c.clone();
            }
            p.exited = !p.threads.is_empty() && p.threads.values().all(|t| t.exited);
        }
        snap
    }
}

/// Adds thread `t` at `slot`. A tid the kernel reused for another thread of the process is
/// shown as one thread (the newer one's state), with both threads' counts; the process's sums
/// are right either way.
fn merge_thread(slot: Entry<'_, u32, ThreadView>, t: &ThreadView) {
    match slot {
        Entry::Vacant(v) => {
            v.insert(t.clone());
        }
        Entry::Occupied(mut o) => {
            let into = o.get_mut();
            into.counters.add(&t.counters);
            for (k, c) in &t.transfers {
                into.transfers.entry(*k).or_default().add(c);
            }
        }
    }
}
