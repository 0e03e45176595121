//! Dead threads of `zcprof run` and `zcprof attach`, moved out of the kernel maps.
//!
//! The kernel's thread table has a fixed number of slots (`--max-threads`). A command that
//! creates more threads than that over its life (a build, a shell loop, a server with a thread
//! pool that churns) would fill it, so run and attach read each dead thread's final counts
//! once, keep them here, and give its slot and ledger cells back. Reports then show the live
//! threads and the archived ones together, exactly as if nothing had moved.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    loader::{MapReadError, Probes},
    snapshot::{ProcessView, Snapshot},
};

/// How often run and attach move dead threads out: often enough that a command creating
/// thousands of short-lived threads a second does not fill the default table, rarely enough
/// that reading every map twice stays cheap.
pub const ARCHIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Final counts of dead threads, by process.
#[derive(Debug, Default)]
pub struct Archive {
    processes: BTreeMap<u32, ProcessView>,
}

impl Archive {
    /// Moves every thread that is dead now into the archive and frees its kernel entries;
    /// those of processes `keep` refuses (watched by no one: `attach --comm` counts every
    /// process and reports a few) are freed without being kept.
    ///
    /// A thread is archived from a second read of the maps, made after the read that found
    /// it dead: a thread that died during the first read could have counted into a cell that
    /// read had already passed.
    pub fn take_dead(
        &mut self,
        probes: &mut Probes,
        mut keep: impl FnMut(u32, &ProcessView) -> bool,
    ) -> Result<usize, MapReadError> {
        let first = probes.snapshot(None)?;
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
        let second = probes.snapshot(None)?;
        for &(pid, tid) in &dead {
            let Some(p) = second.processes.get(&pid) else {
                continue;
            };
            let Some(t) = p.threads.get(&tid) else {
                continue;
            };
            probes.forget_thread(pid, tid, t.activity.transfers.keys().copied())?;
            if keep(pid, p) {
                let archived = self.processes.entry(pid).or_default();
                archived.add_thread(pid, tid, t.clone());
            }
        }
        Ok(dead.len())
    }

    /// `snap` with the archived threads added back in.
    pub fn restore(&self, mut snap: Snapshot) -> Snapshot {
        for (&pid, archived) in &self.processes {
            let p = snap.processes.entry(pid).or_default();
            for (&tid, t) in &archived.threads {
                p.add_thread(pid, tid, t.clone());
            }
        }
        snap
    }
}
