//! The engine's accounting, tested on made-up snapshots and a fake host.

use super::*;
use zcprof_common::Transfer;

use crate::snapshot::{ProcessView, ThreadView};

#[derive(Default)]
struct FakeHost {
    alive: HashSet<u32>,
    cgroups: HashMap<u64, String>,
}

impl Host for FakeHost {
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        self.cgroups.get(&id).cloned()
    }
    fn cgroup_of_process(&mut self, _tgid: u32) -> u64 {
        0
    }
    fn process_alive(&self, tgid: u32) -> bool {
        self.alive.contains(&tgid)
    }
}

fn scope(by: GroupBy, max: usize) -> Scope {
    Scope {
        by,
        comm: None,
        cgroup: None,
        max_groups: max,
    }
}

fn thread(comm: &str, syscalls: u64, write_bytes: u64, exited: bool) -> ThreadView {
    let mut t = ThreadView {
        comm: comm.into(),
        cgroup_id: 7,
        exited,
        dead: exited,
        ..Default::default()
    };
    t.activity.counts.syscalls = syscalls;
    if write_bytes > 0 {
        t.activity.transfers.insert(
            (Syscall::Write, Column::CpuUserToKernel),
            Transfer {
                calls: 1,
                bytes: write_bytes,
                ..Transfer::ZERO
            },
        );
    }
    t
}

fn snap(threads: &[(u32, u32, ThreadView)]) -> Snapshot {
    let mut s = Snapshot::default();
    for (tgid, tid, t) in threads {
        let p = s
            .processes
            .entry(*tgid)
            .or_insert_with(ProcessView::default);
        if tid == tgid {
            p.comm = t.comm.clone();
        }
        p.threads.insert(*tid, t.clone());
    }
    s
}

impl Engine {
    /// Every thread is dead as soon as it is looked at.
    fn ingest_all(&mut self, s: &Snapshot, host: &mut FakeHost, now: Instant) -> Retire {
        self.ingest(s, host, now, &|_| true)
    }
}

fn total(e: &Engine, label: &str) -> Activity {
    e.groups()
        .into_iter()
        .find(|(l, _)| l[0] == label)
        .map(|(_, t)| t)
        .unwrap_or_default()
}

#[test]
fn exited_threads_are_credited_once_and_retired_a_collection_later() {
    let mut e = Engine::new(scope(GroupBy::Comm, 10));
    let mut host = FakeHost::default();
    let t0 = Instant::now();
    let r = e.ingest_all(
        &snap(&[(10, 10, thread("a", 5, 100, false))]),
        &mut host,
        t0,
    );
    assert!(r.threads.is_empty());
    assert_eq!(total(&e, "a").counts.syscalls, 5);
    // Exits with 2 more syscalls: credited, not yet retired.
    let r = e.ingest_all(&snap(&[(10, 10, thread("a", 7, 100, true))]), &mut host, t0);
    assert!(r.threads.is_empty());
    assert_eq!(total(&e, "a").counts.syscalls, 7);
    // Seen dead at the end of the previous collection: retired now, nothing credited
    // twice.
    let later = t0;
    let r = e.ingest_all(
        &snap(&[(10, 10, thread("a", 8, 100, true))]),
        &mut host,
        later,
    );
    assert_eq!(
        r.threads,
        vec![(10, 10, vec![(Syscall::Write, Column::CpuUserToKernel)])]
    );
    assert_eq!(total(&e, "a").counts.syscalls, 8);
    assert_eq!(
        total(&e, "a")
            .transfers
            .values()
            .map(|c| c.bytes)
            .sum::<u64>(),
        100
    );
    // Entries deleted; the totals stay.
    let r = e.ingest_all(&snap(&[]), &mut host, later);
    assert!(r.threads.is_empty());
    assert_eq!(total(&e, "a").counts.syscalls, 8);
    assert_eq!(e.tracked_threads(), 0);
    // The tid comes back as a new thread: counted from zero on top.
    e.ingest_all(
        &snap(&[(10, 10, thread("a", 3, 0, false))]),
        &mut host,
        later,
    );
    assert_eq!(total(&e, "a").counts.syscalls, 11);
}

#[test]
fn cells_read_before_their_thread_entry_wait_for_it() {
    let mut e = Engine::new(scope(GroupBy::Comm, 10));
    let mut host = FakeHost::default();
    let t0 = Instant::now();
    // The cell map was read after the thread entered, the thread map before.
    let mut early = thread("", 0, 100, false);
    early.cgroup_id = 0;
    e.ingest_all(&snap(&[(10, 10, early)]), &mut host, t0);
    assert!(e.groups().is_empty());
    e.ingest_all(
        &snap(&[(10, 10, thread("a", 5, 100, false))]),
        &mut host,
        t0,
    );
    let a = total(&e, "a");
    assert_eq!(a.counts.syscalls, 5);
    assert_eq!(a.transfers.values().map(|c| c.bytes).sum::<u64>(), 100);
    assert_eq!(e.groups().len(), 1);
}

#[test]
fn exec_moves_new_counts_to_the_new_comm_without_taking_old_ones_back() {
    let mut e = Engine::new(scope(GroupBy::Comm, 10));
    let mut host = FakeHost::default();
    let t0 = Instant::now();
    e.ingest_all(&snap(&[(10, 10, thread("sh", 5, 0, false))]), &mut host, t0);
    e.ingest_all(
        &snap(&[(10, 10, thread("true", 9, 0, false))]),
        &mut host,
        t0,
    );
    assert_eq!(total(&e, "sh").counts.syscalls, 5);
    assert_eq!(total(&e, "true").counts.syscalls, 4);
}

#[test]
fn the_cap_sends_new_groups_to_other_and_counts_them_once() {
    let mut e = Engine::new(scope(GroupBy::Comm, 1));
    let mut host = FakeHost::default();
    let t0 = Instant::now();
    let s = snap(&[
        (1, 1, thread("a", 1, 0, false)),
        (2, 2, thread("b", 2, 0, false)),
        (3, 3, thread("c", 4, 0, false)),
    ]);
    e.ingest_all(&s, &mut host, t0);
    let s = snap(&[
        (1, 1, thread("a", 2, 0, false)),
        (2, 2, thread("b", 4, 0, false)),
        (3, 3, thread("c", 8, 0, false)),
    ]);
    e.ingest_all(&s, &mut host, t0);
    assert_eq!(total(&e, "a").counts.syscalls, 2);
    assert_eq!(total(&e, OTHER).counts.syscalls, 12);
    assert_eq!(e.series_dropped, 2);
}

#[test]
fn per_pid_series_fold_into_exited_when_the_process_is_gone() {
    let mut e = Engine::new(scope(GroupBy::Pid, 10));
    let mut host = FakeHost::default();
    host.alive.insert(1);
    let t0 = Instant::now();
    e.ingest_all(
        &snap(&[
            (1, 1, thread("a", 3, 0, false)),
            (2, 2, thread("b", 5, 0, true)),
        ]),
        &mut host,
        t0,
    );
    let later = t0;
    let r = e.ingest_all(
        &snap(&[
            (1, 1, thread("a", 3, 0, false)),
            (2, 2, thread("b", 5, 0, true)),
        ]),
        &mut host,
        later,
    );
    assert_eq!(r.threads.len(), 1);
    let groups = e.groups();
    let labels: Vec<&Vec<String>> = groups.iter().map(|(l, _)| l).collect();
    assert_eq!(
        labels,
        vec![
            &vec!["1".to_string(), "a".to_string()],
            &vec![EXITED.to_string(), EXITED.to_string()]
        ]
    );
    let sum: u64 = groups.iter().map(|(_, t)| t.counts.syscalls).sum();
    assert_eq!(sum, 8);
}

#[test]
fn cgroup_scope_keeps_the_directory_and_below() {
    let mut s = scope(GroupBy::Cgroup, 10);
    s.cgroup = Some("/a".into());
    let mut e = Engine::new(s);
    let mut host = FakeHost::default();
    host.cgroups.insert(1, "/a".into());
    host.cgroups.insert(2, "/a/b".into());
    host.cgroups.insert(3, "/ab".into());
    let mut t1 = thread("x", 1, 0, false);
    t1.cgroup_id = 1;
    let mut t2 = thread("x", 2, 0, false);
    t2.cgroup_id = 2;
    let mut t3 = thread("x", 4, 0, false);
    t3.cgroup_id = 3;
    e.ingest_all(
        &snap(&[(1, 1, t1), (2, 2, t2), (3, 3, t3)]),
        &mut host,
        Instant::now(),
    );
    let g = e.groups();
    assert_eq!(g.len(), 2);
    assert_eq!(total(&e, "/a").counts.syscalls, 1);
    assert_eq!(total(&e, "/a/b").counts.syscalls, 2);
}

#[test]
fn a_comm_filter_drops_other_threads() {
    let mut s = scope(GroupBy::Comm, 10);
    s.comm = Some(Regex::new("^(?:ng.*)$").unwrap());
    let mut e = Engine::new(s);
    let mut host = FakeHost::default();
    e.ingest_all(
        &snap(&[
            (1, 1, thread("nginx", 1, 0, false)),
            (2, 2, thread("xnginx", 2, 0, false)),
        ]),
        &mut host,
        Instant::now(),
    );
    assert_eq!(e.groups().len(), 1);
    assert_eq!(total(&e, "nginx").counts.syscalls, 1);
}
