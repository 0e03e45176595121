//! Dead threads of `zcprof run` and `zcprof attach`, moved out of the kernel maps.
//!
//! The kernel's thread table has a fixed number of slots (`--max-threads`). A command that
//! creates more threads than that over its life (a build, a shell loop, a server with a thread
//! pool that churns) would fill it, so the kernel hands each dead thread's final counts over
//! and frees its slot at once (see `loader::retired`), and run and attach keep them here. When
//! the kernel could not (its ring buffer was full), they read the dead thread's entry, keep
//! it here and free it themselves. Reports then show the live threads and the archived ones
//! together, exactly as if nothing had moved.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    loader::{MapReadError, Probes},
    snapshot::{ProcessKey, ProcessView, Snapshot},
};

/// How often run and attach collect the dead threads the kernel left in the table: often
/// enough that a burst the ring buffer could not take does not fill the default table, rarely
/// enough that reading every map twice stays cheap.
pub const ARCHIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Final counts of dead threads, by process.
#[derive(Debug, Default)]
pub struct Archive {
    processes: BTreeMap<ProcessKey, ProcessView>,
}

impl Archive {
    /// Reads the maps: a snapshot with every archived thread added back in. The threads the
    /// kernel retired since the last read join the archive first; those of processes `keep`
    /// refuses (watched by no one: `attach --comm` counts every process and reports a few) are
    /// dropped.
    pub fn read(
        &mut self,
        probes: &Probes,
        mut keep: impl FnMut(u32, &ProcessView) -> bool,
    ) -> Result<Snapshot, MapReadError> {
        let mut snap = probes.snapshot(None)?;
        self.absorb(&mut snap, &mut keep);
        Ok(self.restore(snap))
    }

    /// Moves the retired threads of `snap` into the archive.
    fn absorb(&mut self, snap: &mut Snapshot, keep: &mut impl FnMut(u32, &ProcessView) -> bool) {
        for r in std::mem::take(&mut snap.retired) {
            // Judged as the whole process, not this thread alone: a selection by name must
            // keep a worker thread named otherwise.
            let pid = r.process.pid;
            let mut process = snap
                .processes
                .get(&r.process)
                .or_else(|| self.processes.get(&r.process))
                .cloned()
                .unwrap_or_default();
            process.add_thread(pid, r.tid, r.view.clone());
            if keep(pid, &process) {
                self.processes
                    .entry(r.process)
                    .or_default()
                    .add_thread(pid, r.tid, r.view);
            }
        }
    }

    /// Moves every thread that is dead now, and that the kernel could not retire itself,
    /// into the archive and frees its kernel entries (see [`Archive::read`] for `keep`).
    ///
    /// A thread is archived from a second read of the maps, made after the read that found
    /// it dead: a thread that died during the first read could have counted into a cell that
    /// read had already passed.
    pub fn take_dead(
        &mut self,
        probes: &mut Probes,
        mut keep: impl FnMut(u32, &ProcessView) -> bool,
    ) -> Result<usize, MapReadError> {
        let mut first = probes.snapshot(None)?;
        self.absorb(&mut first, &mut keep);
        let dead: BTreeSet<(ProcessKey, u32)> = first
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
        let mut second = probes.snapshot(None)?;
        self.absorb(&mut second, &mut keep);
        for &(key, tid) in &dead {
            let Some(p) = second.processes.get(&key) else {
                continue;
            };
            let Some(t) = p.threads.get(&tid) else {
                continue;
            };
            probes.forget_thread(key.pid, tid, t.activity.transfers.keys().copied())?;
            if keep(key.pid, p) {
                let archived = self.processes.entry(key).or_default();
                archived.add_thread(key.pid, tid, t.clone());
            }
        }
        Ok(dead.len())
    }

    /// `snap` with the archived threads added back in.
    fn restore(&self, mut snap: Snapshot) -> Snapshot {
        for (&key, archived) in &self.processes {
            let p = snap.processes.entry(key).or_default();
            for (&tid, t) in &archived.threads {
                p.add_thread(key.pid, tid, t.clone());
            }
        }
        snap
    }
}
