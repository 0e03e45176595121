//! The daemon's accounting: turns successive snapshots of the kernel maps into per-group totals
//! that never go backwards, and says which exited threads' map entries may now be deleted.
//!
//! Every thread's counters live in its kernel map entry until user space deletes it. The
//! engine remembers, per thread, the counts it has already credited; at each collection it
//! credits the difference to the group the thread belongs to *now* (its command name changes
//! at exec). So a count is credited exactly once, whether the thread is alive, has exited,
//! or its entry has been deleted since: there is no separate "live" and "retired" sum that
//! could count a thread twice or drop it in between.
//!
//! An exited thread can still be preempted on its way out, and its final context switch comes
//! after its exit flag; the kernel programs flag that final switch (`THREAD_DEAD`). So an
//! exited thread's entries are deleted at the collection after the one at whose end its entry
//! was seen dead: that collection's read, which came after, holds its final counts. A thread
//! never seen dead (an entry written before the flag existed) is deleted [`RETIRE_MAX`] after
//! it was seen exited.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use regex::Regex;
use zcprof_common::{Column, Syscall, ThreadCounts};

use super::{
    args::GroupBy,
    container::{Container, container_of},
};
use crate::snapshot::{Activity, ProcessKey, Snapshot, SparseActivity, SparseCell, UringCells};

/// Longest an exited thread's entries stay in the kernel maps if its final switch is never
/// seen.
pub const RETIRE_MAX: Duration = Duration::from_secs(10);

/// A group of series: what one set of group labels stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    /// Threads with this command name.
    Comm(String),
    /// Threads in this cgroup (path below the cgroup root, `/` for the root itself).
    Cgroup(String),
    /// Threads in this container (or systemd unit, or the host), from their cgroup's path.
    Container(Container),
    /// The threads of this live process.
    Pid(ProcessKey),
    /// Groups refused by `--max-series`.
    Other,
    /// `--by pid`: processes that have exited.
    Exited,
}

/// Label value of the group of groups refused by `--max-series`.
pub const OTHER: &str = "[other]";
/// Label value of the group of exited processes (`--by pid`).
pub const EXITED: &str = "[exited]";
/// Label value of a cgroup whose path could not be found (it was removed meanwhile).
pub const UNKNOWN_CGROUP: &str = "[unknown]";

/// What the engine asks of the host: cgroup paths and whether processes still exist. A
/// trait so that the accounting is tested without a kernel.
pub trait Host {
    /// Called once at the start of each collection (caches may refresh once per collection).
    fn begin_collection(&mut self) {}
    /// Path of cgroup `id` below the cgroup root, if known.
    fn cgroup_path(&mut self, id: u64) -> Option<String>;
    /// The cgroup id of process `tgid`, for threads entered by user space (id 0).
    fn cgroup_of_process(&mut self, tgid: u32) -> u64;
    /// The process still exists.
    fn process_alive(&self, tgid: u32) -> bool;
}

/// Which threads count, and how they are grouped.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The grouping.
    pub by: GroupBy,
    /// Only threads whose command name matches (anchored).
    pub comm: Option<Regex>,
    /// Only threads in this cgroup (path below the root) or below it.
    pub cgroup: Option<String>,
    /// Most groups (not counting `[other]` and `[exited]`).
    pub max_groups: usize,
}

/// A thread whose entries may be deleted: (tgid, tid, its ledger cells).
pub type RetiredThread = (u32, u32, Vec<(Syscall, Column)>);

/// Map entries to delete: they belong to threads (and processes) whose counts are final and
/// credited.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Retire {
    /// Threads.
    pub threads: Vec<RetiredThread>,
    /// (tgid, the process's io_uring cells).
    pub uring: Vec<(u32, Vec<(u16, Column)>)>,
}

#[derive(Debug)]
struct ThreadRec {
    process: ProcessKey,
    /// What its entries held at the last collection (already credited).
    last: SparseActivity,
    /// When (and in which collection) the thread was first seen exited.
    exited: Option<(Instant, u64)>,
    /// Its entry was seen dead (final switch done) at the end of an earlier collection.
    dead: bool,
    seen: u64,
}

impl ThreadRec {
    fn new(process: ProcessKey) -> Self {
        ThreadRec {
            process,
            last: SparseActivity::default(),
            exited: None,
            dead: false,
            seen: 0,
        }
    }
}

#[derive(Debug, Default)]
struct ProcRec {
    comm: String,
    /// Its cgroup: from /proc (see `cgroup_current`), else its main thread's kernel id.
    cgroup_id: u64,
    /// `cgroup_id` is what /proc said when the process was first seen or after its last
    /// exec, and overrides the ids the kernel recorded when it entered each thread.
    cgroup_current: bool,
    /// The main thread's `syscalls_before_exec` at that read: when it changes, it exec'd.
    exec_mark: Option<u64>,
    uring_last: UringCells<SparseCell>,
}

/// A group's totals, shared with the collections published from them: a collection holds
/// them until the next, and only a group credited meanwhile is copied (once), so the idle
/// groups of a large host cost nothing per collection.
#[derive(Debug, Default)]
struct Group {
    totals: Arc<SparseActivity>,
    /// Its labels, made once (a `--per-pid` group's again when its process exec'd).
    labels: Option<Arc<Labels>>,
}

pub use super::labels::Labels;

/// Labels and totals of one group, as published.
pub type SharedGroup = (Arc<Labels>, Arc<SparseActivity>);

/// The accounting state.
#[derive(Debug)]
pub struct Engine {
    scope: Scope,
    groups: HashMap<GroupKey, Group>,
    /// With `--by pid`: the ledger cells by process name (size histograms per process would
    /// be most of the exposition; per command they are what dashboards sum them into).
    by_comm: HashMap<GroupKey, Group>,
    threads: HashMap<u32, ThreadRec>,
    procs: HashMap<ProcessKey, ProcRec>,
    /// Threads seen with cells but no entry: (first seen, last collection seen in).
    entryless: HashMap<u32, (Instant, u64)>,
    /// Groups refused by the cap, so that each is counted once in `series_dropped`.
    refused: HashSet<GroupKey>,
    generation: u64,
    /// Groups refused by `--max-series`.
    pub series_dropped: u64,
    /// Exited threads whose entries were deleted.
    pub threads_retired: u64,
    /// Exited processes whose records were dropped.
    pub processes_retired: u64,
}

/// Most refused groups remembered for counting each once; past it a refused group may be
/// counted again (memory stays bounded under unbounded churn of command names).
const REFUSED_MEMORY: usize = 65_536;

impl Engine {
    /// A fresh engine.
    pub fn new(scope: Scope) -> Self {
        Engine {
            scope,
            groups: HashMap::new(),
            by_comm: HashMap::new(),
            threads: HashMap::new(),
            procs: HashMap::new(),
            entryless: HashMap::new(),
            refused: HashSet::new(),
            generation: 0,
            series_dropped: 0,
            threads_retired: 0,
            processes_retired: 0,
        }
    }

    /// The group a thread of `process` with this command name and cgroup belongs to, or
    /// `None` if it is out of scope.
    fn group_of(
        &mut self,
        host: &mut dyn Host,
        process: ProcessKey,
        comm: &str,
        cgroup_id: u64,
    ) -> Option<GroupKey> {
        if let Some(re) = &self.scope.comm
            && !re.is_match(comm)
        {
            return None;
        }
        let path = if self.needs_cgroup() {
            let rec = self.procs.entry(process).or_default();
            let id = if rec.cgroup_current || cgroup_id == 0 {
                if rec.cgroup_id == 0 {
                    rec.cgroup_id = host.cgroup_of_process(process.pid);
                }
                rec.cgroup_id
            } else {
                cgroup_id
            };
            host.cgroup_path(id)
        } else {
            None
        };
        if let Some(root) = &self.scope.cgroup {
            let inside = path.as_deref().is_some_and(|p| is_within(p, root));
            if !inside {
                return None;
            }
        }
        let key = match self.scope.by {
            // A process may call itself "[other]"; its series must not collide with the
            // group of refused groups.
            GroupBy::Comm if comm == OTHER => GroupKey::Other,
            GroupBy::Comm => GroupKey::Comm(comm.to_string()),
            GroupBy::Cgroup => GroupKey::Cgroup(path.unwrap_or_else(|| UNKNOWN_CGROUP.into())),
            GroupBy::Container => GroupKey::Container(match path {
                Some(p) => container_of(&p),
                None => Container {
                    runtime: "",
                    container_id: UNKNOWN_CGROUP.into(),
                    pod_uid: String::new(),
                },
            }),
            GroupBy::Pid => GroupKey::Pid(process),
        };
        Some(self.admit(key))
    }

    /// Threads are grouped or scoped by their cgroup.
    fn needs_cgroup(&self) -> bool {
        self.scope.cgroup.is_some() || self.scope.by.by_cgroup_path()
    }

    /// `key` if it already has series or the cap allows one more group; `[other]` if not.
    fn admit(&mut self, key: GroupKey) -> GroupKey {
        if matches!(key, GroupKey::Other | GroupKey::Exited) || self.groups.contains_key(&key) {
            return key;
        }
        let admitted = self.groups.len()
            - usize::from(self.groups.contains_key(&GroupKey::Other))
            - usize::from(self.groups.contains_key(&GroupKey::Exited));
        if admitted < self.scope.max_groups {
            self.groups.insert(key.clone(), Group::default());
            return key;
        }
        if self.refused.len() >= REFUSED_MEMORY {
            self.refused.clear();
        }
        if self.refused.insert(key) {
            self.series_dropped += 1;
        }
        GroupKey::Other
    }

    /// Credits everything new in `snap` and returns the entries that may be deleted now.
    /// `is_dead(tid)` reads whether the thread's entry is flagged dead *now* (after `snap`
    /// was read).
    pub fn ingest(
        &mut self,
        snap: &Snapshot,
        host: &mut dyn Host,
        now: Instant,
        is_dead: &dyn Fn(u32) -> bool,
    ) -> Retire {
        self.generation += 1;
        let generation = self.generation;
        host.begin_collection();
        let mut retire = Retire::default();
        let needs_cgroup = self.needs_cgroup();

        // Threads the kernel retired, before the live ones: a thread of the snapshot may
        // have reused the tid of one of them.
        for r in &snap.retired {
            // A process that lived between two collections is known by its records alone;
            // its io_uring cells, credited below, need its name.
            let rec = self.procs.entry(r.process).or_default();
            if rec.comm.is_empty() || r.tid == r.process.pid {
                rec.comm.clone_from(&r.view.comm);
            }
            let credited = match self.threads.get(&r.tid) {
                Some(rec) if rec.process == r.process => {
                    self.threads.remove(&r.tid).map(|rec| rec.last)
                }
                _ => None,
            };
            let now = r.view.activity.sparse();
            let delta = match credited {
                Some(last) => now.delta(&last).unwrap_or(now),
                None => now,
            };
            if !delta.is_empty() {
                self.credit(host, r.process, &r.view.comm, r.view.cgroup_id, &delta);
            }
            self.threads_retired += 1;
        }

        for (&key, p) in &snap.processes {
            let tgid = key.pid;
            {
                let rec = self.procs.entry(key).or_default();
                if !p.comm.is_empty() {
                    rec.comm.clone_from(&p.comm);
                }
                // The kernel records a thread's cgroup when it enters the thread (fork or
                // first event), but runtimes move a new process into its cgroup after that
                // and before it execs its program (runc's init into its container, systemd's
                // child into its unit): ask /proc at first sight and after each exec.
                if let Some(main) = p.threads.get(&tgid) {
                    let mark = main.activity.counts.syscalls_before_exec;
                    if needs_cgroup && rec.exec_mark != Some(mark) {
                        rec.exec_mark = Some(mark);
                        let now = host.cgroup_of_process(tgid);
                        if now != 0 {
                            rec.cgroup_id = now;
                            rec.cgroup_current = true;
                        }
                    }
                }
                if !rec.cgroup_current
                    && let Some(t) = p.threads.get(&tgid).or_else(|| p.threads.values().next())
                    && t.cgroup_id != 0
                {
                    rec.cgroup_id = t.cgroup_id;
                }
            }
            for (&tid, t) in &p.threads {
                // A thread without a name or a count: one the kernel is filling in at this
                // very moment (its entry is read next time; crediting now would put it
                // under an empty command name), or, in theory, an entry left behind.
                // Nothing to credit; leftovers are deleted after a while.
                if t.comm.is_empty() && t.activity.counts == ThreadCounts::ZERO {
                    let (first, seen) = self.entryless.entry(tid).or_insert((now, generation));
                    *seen = generation;
                    if now.duration_since(*first) >= RETIRE_MAX {
                        retire.threads.push((
                            tgid,
                            tid,
                            t.activity.transfers.keys().copied().collect(),
                        ));
                        self.entryless.remove(&tid);
                    }
                    continue;
                }
                self.entryless.remove(&tid);
                let exited = t.exited;
                let rec = self
                    .threads
                    .entry(tid)
                    .or_insert_with(|| ThreadRec::new(key));
                if rec.process != key {
                    // A different thread under a reused tid: start from zero.
                    *rec = ThreadRec::new(key);
                }
                rec.seen = generation;
                if exited && rec.exited.is_none() {
                    rec.exited = Some((now, generation));
                }
                // Most threads of a large host did nothing since the last read.
                if rec.last.same_as(&t.activity) {
                    continue;
                }
                // Counts that went down: the entry was replaced behind our back; what it
                // holds now is all new.
                let now = t.activity.sparse();
                let delta = now.delta(&rec.last);
                rec.last = now;
                let delta = delta.unwrap_or_else(|| rec.last.clone());
                if !delta.is_empty() {
                    self.credit(host, key, &t.comm, t.cgroup_id, &delta);
                }
            }
            if !p.activity.uring.is_empty() {
                let last = Activity {
                    uring: self
                        .procs
                        .get(&key)
                        .map(|r| r.uring_last.clone())
                        .unwrap_or_default(),
                    ..Activity::default()
                };
                let uring = p.activity.uring.sparse();
                let now = Activity {
                    uring: uring.clone(),
                    ..Activity::default()
                };
                let delta = now.delta(&last).unwrap_or(now);
                if !delta.is_empty() {
                    let (comm, cgroup_id) = self
                        .procs
                        .get(&key)
                        .map(|r| (r.comm.clone(), r.cgroup_id))
                        .unwrap_or_default();
                    self.credit(host, key, &comm, cgroup_id, &delta);
                }
                if let Some(rec) = self.procs.get_mut(&key) {
                    rec.uring_last = uring;
                }
            }
        }

        // Exited threads seen dead before `snap` was read: their counts are final and
        // credited; delete their entries. Records of entries that vanished are dropped (their
        // counts were credited when they were seen).
        let mut live_per_process: HashMap<ProcessKey, usize> = HashMap::new();
        self.threads.retain(|&tid, rec| {
            if rec.seen != generation {
                return false;
            }
            if let Some((at, seen_in)) = rec.exited
                && seen_in < generation
                && (rec.dead || now.duration_since(at) >= RETIRE_MAX)
            {
                retire.threads.push((
                    rec.process.pid,
                    tid,
                    rec.last.transfers.keys().copied().collect(),
                ));
                return false;
            }
            *live_per_process.entry(rec.process).or_default() += 1;
            true
        });
        self.entryless.retain(|_, (_, seen)| *seen == generation);
        self.threads_retired += retire.threads.len() as u64;
        for (&tid, rec) in self.threads.iter_mut() {
            if rec.exited.is_some() && !rec.dead {
                rec.dead = is_dead(tid);
            }
        }

        // Processes with no thread entry left and gone: from /proc, or replaced by a newer
        // process under the same pid. Their io_uring cells are final too; with --by pid their
        // series fold into `[exited]`.
        let newest: HashMap<u32, u64> = self.procs.keys().fold(HashMap::new(), |mut m, k| {
            let start = m.entry(k.pid).or_insert(k.start);
            *start = (*start).max(k.start);
            m
        });
        let mut gone = Vec::new();
        for (&key, rec) in &self.procs {
            let replaced = newest.get(&key.pid).is_some_and(|&s| s > key.start);
            if live_per_process.contains_key(&key) || (!replaced && host.process_alive(key.pid)) {
                continue;
            }
            if !rec.uring_last.is_empty() {
                retire
                    .uring
                    .push((key.pid, rec.uring_last.keys().copied().collect()));
            }
            gone.push(key);
        }
        for key in gone {
            self.procs.remove(&key);
            self.processes_retired += 1;
            if self.scope.by == GroupBy::Pid {
                let key = GroupKey::Pid(key);
                if let Some(gone) = self.groups.remove(&key) {
                    let exited = self.groups.entry(GroupKey::Exited).or_default();
                    Arc::make_mut(&mut exited.totals).add(&gone.totals);
                }
                self.refused.remove(&key);
            }
        }
        retire
    }

    /// Credits `delta` of a thread of `process` named `comm` to its group, if it is in scope.
    fn credit(
        &mut self,
        host: &mut dyn Host,
        process: ProcessKey,
        comm: &str,
        cgroup_id: u64,
        delta: &SparseActivity,
    ) {
        let Some(group) = self.group_of(host, process, comm, cgroup_id) else {
            return;
        };
        let totals = &mut self.groups.entry(group).or_default().totals;
        Arc::make_mut(totals).add(delta);
        if self.scope.by == GroupBy::Pid && !delta.transfers.is_empty() {
            // By the process's name, as its series are labelled: its threads' own names
            // can be as many as its threads (a compiler's "opt 0dk7d3x03c2"…).
            let comm = self.procs.get(&process).map_or(comm, |r| r.comm.as_str());
            let mut key = match comm {
                OTHER => GroupKey::Other,
                _ => GroupKey::Comm(comm.to_string()),
            };
            if !self.by_comm.contains_key(&key) && self.by_comm.len() >= self.scope.max_groups {
                key = GroupKey::Other;
            }
            let totals = &mut self.by_comm.entry(key).or_default().totals;
            Arc::make_mut(totals).transfers.add_all(&delta.transfers);
        }
    }

    /// Every group's label values, in the order of [`Engine::label_names`], with its totals.
    pub fn groups(&self) -> Vec<(Vec<String>, Activity)> {
        let mut out: Vec<(Vec<String>, Activity)> = self
            .groups
            .iter()
            .map(|(k, g)| (self.labels(k), g.totals.full()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// What [`Engine::groups`] says (in the order of the group keys: by name, by pid),
    /// shared rather than copied: for the daemon, which publishes every group at every
    /// collection.
    pub fn shared_groups(&mut self) -> Vec<SharedGroup> {
        let mut groups = std::mem::take(&mut self.groups);
        let names = self.label_names();
        let out = self.shared(&mut groups, |e, k| Labels::new(names, e.labels(k)));
        self.groups = groups;
        out
    }

    /// With `--by pid`, the ledger cells by command name (labels: `comm`), for the size
    /// histograms; `None` otherwise (they are the groups').
    pub fn shared_histogram_groups(&mut self) -> Option<Vec<SharedGroup>> {
        if self.scope.by != GroupBy::Pid {
            return None;
        }
        let mut groups = std::mem::take(&mut self.by_comm);
        let out = self.shared(&mut groups, |_, k| {
            let name = match k {
                GroupKey::Comm(c) => c.clone(),
                _ => OTHER.to_string(),
            };
            Labels::new(&["comm"], vec![name])
        });
        self.by_comm = groups;
        Some(out)
    }

    fn shared(
        &self,
        groups: &mut HashMap<GroupKey, Group>,
        labels: impl Fn(&Engine, &GroupKey) -> Labels,
    ) -> Vec<SharedGroup> {
        // In the order of the keys, which compare as numbers where the labels would compare
        // as strings (a pid's).
        let mut sorted: Vec<(&GroupKey, &mut Group)> = groups.iter_mut().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        sorted
            .into_iter()
            .map(|(k, g)| {
                // A process's label carries its current name: made again after an exec.
                let stale = match (&g.labels, k) {
                    (None, _) => true,
                    (Some(l), GroupKey::Pid(p)) => self
                        .procs
                        .get(p)
                        .is_some_and(|r| l.get(1).is_none_or(|c| *c != r.comm)),
                    _ => false,
                };
                let l = match &g.labels {
                    Some(l) if !stale => l.clone(),
                    _ => g.labels.insert(Arc::new(labels(self, k))).clone(),
                };
                (l, g.totals.clone())
            })
            .collect()
    }

    /// Names of the group labels.
    pub fn label_names(&self) -> &'static [&'static str] {
        match self.scope.by {
            GroupBy::Comm => &["comm"],
            GroupBy::Cgroup => &["cgroup"],
            GroupBy::Container => &["container_id", "pod_uid", "runtime"],
            GroupBy::Pid => &["pid", "comm"],
        }
    }

    fn labels(&self, k: &GroupKey) -> Vec<String> {
        // The groups of groups carry their marker in every group label.
        let marked = |marker: &str| vec![marker.to_string(); self.label_names().len()];
        match k {
            GroupKey::Comm(c) => vec![c.clone()],
            GroupKey::Cgroup(p) => vec![p.clone()],
            GroupKey::Container(c) => vec![
                c.container_id.clone(),
                c.pod_uid.clone(),
                c.runtime.to_string(),
            ],
            GroupKey::Pid(key) => {
                let comm = self
                    .procs
                    .get(key)
                    .map(|r| r.comm.clone())
                    .unwrap_or_default();
                vec![key.pid.to_string(), comm]
            }
            GroupKey::Other => marked(OTHER),
            GroupKey::Exited => marked(EXITED),
        }
    }

    /// Threads the engine tracks now (for the memory bound).
    pub fn tracked_threads(&self) -> usize {
        self.threads.len()
    }
}

/// Whether cgroup `path` (below the root, `/`-separated) is `scope` or below it.
pub fn is_within(path: &str, scope: &str) -> bool {
    scope == "/"
        || path == scope
        || (path.starts_with(scope) && path.as_bytes().get(scope.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests;
