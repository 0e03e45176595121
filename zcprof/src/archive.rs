//! Dead threads of `zcprof run` and `zcprof attach`, moved out of the kernel maps, and when a
//! collection of them is due (serve's collector asks [`crowded`] too).
//!
//! The kernel's thread table has a fixed number of slots (`--max-threads`). A command that
//! creates more threads than that over its life (a build, a shell loop, a server with a thread
//! pool that churns) would fill it, so the kernel hands each dead thread's final counts over
//! and frees its slot at once (see `loader::retired`), and run and attach keep them here. When
//! the kernel could not (its ring buffer was full), they read the dead thread's entry, keep
//! it here and free it themselves. Reports then show the live threads and the archived ones
//! together, exactly as if nothing had moved.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use crate::{
    loader::{MapReadError, Probes},
    snapshot::{ProcessKey, ProcessView, Snapshot},
};

/// How often run and attach collect the dead threads the kernel left in the table, at the
/// least: this also drains the ring buffer of those it retired itself.
pub const ARCHIVE_EVERY: Duration = Duration::from_secs(1);

/// How often run, attach and serve's collector look at how many dead threads the kernel left
/// in the table since the last collection (a read of one small per-CPU map).
pub const PRESSURE_EVERY: Duration = Duration::from_millis(50);

/// A collection is due early once this share of the table holds dead threads left since the
/// last: with the ring buffer full, a fork storm of 4,000 a second filled a table of 8,000
/// between two collections a second apart when a collection was slow (a busy machine).
const DEAD_SHARE: u32 = 8;

/// Final counts of dead threads, by process, and when they were last collected.
#[derive(Debug)]
pub struct Archive {
    processes: BTreeMap<ProcessKey, ProcessView>,
    /// When the last collection began.
    last_sweep: Instant,
    /// The kernel's count of dead threads left in the table, just before that collection.
    deferred_at_sweep: u64,
    /// A collection failed and the user was told (once).
    warned: bool,
}

impl Default for Archive {
    fn default() -> Self {
        Self {
            processes: BTreeMap::new(),
            last_sweep: Instant::now(),
            deferred_at_sweep: 0,
            warned: false,
        }
    }
}

/// Whether a collection is due, `since` the last, with `left` dead threads left in a table
/// of `capacity` slots since then.
fn due(since: Duration, left: u64, capacity: u32) -> bool {
    since >= ARCHIVE_EVERY || crowded(left, capacity)
}

/// Whether `left` dead threads the kernel left in a table of `capacity` slots since the last
/// collection call for one now, whatever its schedule (run, attach, and serve's collector).
pub fn crowded(left: u64, capacity: u32) -> bool {
    left >= u64::from((capacity / DEAD_SHARE).max(1))
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

    /// Collects the dead threads (see [`Archive::take_dead`]) if a collection is due: each
    /// [`ARCHIVE_EVERY`], and sooner when the kernel has left an eighth of the table to it
    /// since the last (call it each [`PRESSURE_EVERY`]). A failure is reported once on
    /// stderr: the dead threads stay in the table, where the final read still finds them.
    pub fn sweep_if_due(
        &mut self,
        probes: &mut Probes,
        keep: impl FnMut(u32, &ProcessView) -> bool,
    ) {
        // Unreadable: the second's collection still comes.
        let deferred = probes.deferred_total().unwrap_or(self.deferred_at_sweep);
        let left = deferred.saturating_sub(self.deferred_at_sweep);
        if !due(self.last_sweep.elapsed(), left, probes.thread_capacity()) {
            return;
        }
        // Read before the collection: a thread left after this read is counted towards the
        // next one, even if this one takes it.
        self.deferred_at_sweep = deferred;
        self.last_sweep = Instant::now();
        if let Err(e) = self.take_dead(probes, keep)
            && !std::mem::replace(&mut self.warned, true)
        {
            eprintln!("zcprof: warning: cannot move dead threads out of the kernel maps: {e}");
        }
    }

    /// Moves every thread that is dead now, and that the kernel could not retire itself,
    /// into the archive and frees its kernel entries (see [`Archive::read`] for `keep`).
    ///
    /// A thread is archived from a second read of the maps, made after the read that found
    /// it dead: a thread that died during the first read could have counted into a cell that
    /// read had already passed.
    fn take_dead(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_collection_is_due_each_period() {
        assert!(!due(Duration::from_millis(950), 0, 8000));
        assert!(due(ARCHIVE_EVERY, 0, 8000));
    }

    #[test]
    fn a_collection_is_due_early_when_an_eighth_of_the_table_is_dead() {
        assert!(!due(Duration::from_millis(100), 999, 8000));
        assert!(due(Duration::from_millis(100), 1000, 8000));
        // A tiny table: every dead thread counts.
        assert!(due(Duration::ZERO, 1, 7));
    }
}
