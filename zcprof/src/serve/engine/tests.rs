//! The engine's accounting, tested on made-up snapshots and a fake host.

use super::*;
use zcprof_common::Transfer;

use crate::snapshot::{LedgerCell as _, ProcessView, RetiredThread, ThreadView};

#[derive(Default)]
struct FakeHost {
    alive: HashSet<u32>,
    cgroups: HashMap<u64, String>,
    /// What /proc says each process's cgroup is now (absent: the process is gone).
    proc_cgroup: HashMap<u32, u64>,
    /// How many times /proc was asked.
    proc_reads: u32,
}

impl Host for FakeHost {
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        self.cgroups.get(&id).cloned()
    }
    fn cgroup_of_process(&mut self, tgid: u32) -> u64 {
        self.proc_reads += 1;
        self.proc_cgroup.get(&tgid).copied().unwrap_or(0)
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
            .entry(ProcessKey::new(*tgid, 0))
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

const DOCKER_ID: &str = "4c0e6a1f9d2b8e7a3c5f1d0b9a8e7c6d5b4a39281706f5e4d3c2b1a09f8e7d6c";

fn labels_of(e: &Engine) -> Vec<(Vec<String>, u64)> {
    e.groups()
        .into_iter()
        .map(|(l, t)| (l, t.counts.syscalls))
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn by_container_labels_each_group_and_marks_other_in_every_label() {
    let mut e = Engine::new(scope(GroupBy::Container, 2));
    assert_eq!(e.label_names(), ["container_id", "pod_uid", "runtime"]);
    let mut host = FakeHost::default();
    host.cgroups
        .insert(1, format!("/system.slice/docker-{DOCKER_ID}.scope"));
    host.cgroups.insert(2, "/system.slice/ssh.service".into());
    host.cgroups.insert(3, format!("/docker/{DOCKER_ID}"));
    host.cgroups.insert(4, "/user.slice".into());
    let mut ts = Vec::new();
    for (pid, id, n) in [(1, 1, 1), (2, 2, 2), (3, 3, 4), (4, 4, 8), (5, 9, 16)] {
        let mut t = thread("x", n, 0, false);
        t.cgroup_id = id;
        ts.push((pid, pid, t));
    }
    e.ingest_all(&snap(&ts), &mut host, Instant::now());
    // Both docker layouts are one container; the cap refuses the host and the unknown.
    assert_eq!(
        labels_of(&e),
        vec![
            (strings(&[DOCKER_ID, "", "docker"]), 5),
            (strings(&[OTHER, OTHER, OTHER]), 24),
            (strings(&["ssh.service", "", "systemd"]), 2),
        ]
    );
    let mut e = Engine::new(scope(GroupBy::Container, 10));
    e.ingest_all(&snap(&ts), &mut host, Instant::now());
    let groups = labels_of(&e);
    assert!(groups.contains(&(strings(&["[host]", "", ""]), 8)));
    assert!(groups.contains(&(strings(&[UNKNOWN_CGROUP, "", ""]), 16)));
}

#[test]
fn a_process_moved_before_exec_counts_in_its_new_cgroup() {
    let mut e = Engine::new(scope(GroupBy::Container, 10));
    let mut host = FakeHost::default();
    host.cgroups
        .insert(1, "/system.slice/containerd.service".into());
    host.cgroups.insert(2, format!("/docker/{DOCKER_ID}"));
    host.cgroups.insert(3, "/system.slice/other.service".into());
    // The kernel entered the thread in the runtime's cgroup; /proc says it is in the
    // container now.
    host.proc_cgroup.insert(10, 2);
    let t0 = Instant::now();
    let at = |syscalls: u64, before_exec: u64| {
        let mut t = thread("app", syscalls, 0, false);
        t.cgroup_id = 1;
        t.activity.counts.syscalls_before_exec = before_exec;
        snap(&[(10, 10, t)])
    };
    e.ingest_all(&at(5, 0), &mut host, t0);
    assert_eq!(
        labels_of(&e),
        vec![(strings(&[DOCKER_ID, "", "docker"]), 5)]
    );
    // No exec: /proc is not asked again.
    host.proc_cgroup.insert(10, 3);
    e.ingest_all(&at(7, 0), &mut host, t0);
    assert_eq!(host.proc_reads, 1);
    assert_eq!(
        labels_of(&e),
        vec![(strings(&[DOCKER_ID, "", "docker"]), 7)]
    );
    // After an exec it is.
    e.ingest_all(&at(10, 8), &mut host, t0);
    assert_eq!(host.proc_reads, 2);
    assert_eq!(
        labels_of(&e),
        vec![
            (strings(&[DOCKER_ID, "", "docker"]), 7),
            (strings(&["other.service", "", "systemd"]), 3),
        ]
    );
    // A process gone before it was first seen keeps the kernel's id.
    let mut t = thread("short", 4, 0, true);
    t.cgroup_id = 1;
    e.ingest_all(&snap(&[(11, 11, t)]), &mut host, t0);
    assert!(labels_of(&e).contains(&(strings(&["containerd.service", "", "systemd"]), 4)));
}

/// A thread the kernel retired, as a record.
fn retired(pid: u32, start: u64, tid: u32, t: ThreadView) -> RetiredThread {
    RetiredThread {
        process: ProcessKey::new(pid, start),
        tid,
        view: t,
    }
}

#[test]
fn retired_threads_are_credited_what_the_last_collection_did_not() {
    let mut e = Engine::new(scope(GroupBy::Comm, 10));
    let mut host = FakeHost::default();
    let t0 = Instant::now();
    e.ingest_all(
        &snap(&[(10, 10, thread("a", 5, 100, false))]),
        &mut host,
        t0,
    );
    // Retired since: 3 more syscalls and a second write of 50 bytes; and one that lived
    // between two collections, never seen live.
    let mut last = thread("a", 8, 150, true);
    for c in last.activity.transfers.values_mut() {
        c.calls = 2;
    }
    let mut s = snap(&[]);
    s.retired = vec![
        retired(10, 0, 10, last),
        retired(11, 0, 11, thread("a", 2, 7, true)),
    ];
    let r = e.ingest_all(&s, &mut host, t0);
    assert!(r.threads.is_empty(), "the kernel freed their entries");
    let a = total(&e, "a");
    assert_eq!(a.counts.syscalls, 10);
    assert_eq!(a.transfers.values().map(|c| c.bytes).sum::<u64>(), 157);
    assert_eq!(e.threads_retired, 2);
    assert_eq!(e.tracked_threads(), 0);
}

#[test]
fn a_reused_pid_is_a_new_series_and_the_old_one_folds_into_exited() {
    let mut e = Engine::new(scope(GroupBy::Pid, 10));
    let mut host = FakeHost::default();
    host.alive.insert(7);
    let t0 = Instant::now();
    let mut s = Snapshot::default();
    s.processes
        .entry(ProcessKey::new(7, 100))
        .or_default()
        .add_thread(7, 7, thread("old", 3, 0, false));
    e.ingest_all(&s, &mut host, t0);
    // The old process died (its record arrives) and a new one got its pid, alive in /proc.
    let mut s = Snapshot::default();
    s.processes
        .entry(ProcessKey::new(7, 200))
        .or_default()
        .add_thread(7, 7, thread("new", 5, 0, false));
    s.retired = vec![retired(7, 100, 7, thread("old", 4, 0, true))];
    e.ingest_all(&s, &mut host, t0);
    let groups = e.groups();
    let rows: Vec<(Vec<String>, u64)> = groups
        .iter()
        .map(|(l, t)| (l.clone(), t.counts.syscalls))
        .collect();
    assert_eq!(
        rows,
        vec![
            (vec!["7".to_string(), "new".to_string()], 5),
            (vec![EXITED.to_string(), EXITED.to_string()], 4),
        ]
    );
}

/// With `--per-pid`, the ledger cells are also kept by command name (for the size
/// histograms): they add up the processes of that name, live and exited, and never go down
/// when a process's series fold into `[exited]`; the published groups are shared, and a
/// process's label follows its exec.
#[test]
fn per_pid_keeps_cells_by_comm_that_only_grow() {
    let mut e = Engine::new(scope(GroupBy::Pid, 10));
    let mut host = FakeHost::default();
    host.alive.extend([1, 2]);
    let t0 = Instant::now();
    e.ingest_all(
        &snap(&[
            (1, 1, thread("a", 1, 100, false)),
            (2, 2, thread("a", 1, 50, false)),
            (3, 3, thread("b", 1, 7, false)),
        ]),
        &mut host,
        t0,
    );
    let cells = |e: &mut Engine| -> Vec<(String, u64, u64)> {
        let write = (Syscall::Write, Column::CpuUserToKernel);
        e.shared_histogram_groups()
            .expect("by comm with --per-pid")
            .iter()
            .map(|(l, t)| {
                let c = t.transfers.get(&write).cloned().unwrap_or_default();
                (l[0].clone(), c.calls(), c.bytes())
            })
            .collect()
    };
    assert_eq!(cells(&mut e), [("a".into(), 2, 150), ("b".into(), 1, 7)]);
    // Process 3 is gone and folds into [exited]; process 1 execs as "c" and writes more.
    let shared = e.shared_groups();
    let mut c = thread("c", 2, 0, false);
    c.activity.transfers = thread("a", 1, 130, false).activity.transfers;
    c.activity
        .transfers
        .entry((Syscall::Write, Column::CpuUserToKernel))
        .or_default()
        .calls = 2;
    e.ingest_all(
        &snap(&[(1, 1, c), (2, 2, thread("a", 1, 50, false))]),
        &mut host,
        t0,
    );
    assert_eq!(
        cells(&mut e),
        [
            ("a".into(), 2, 150),
            ("b".into(), 1, 7),
            ("c".into(), 1, 30)
        ]
    );
    let now = e.shared_groups();
    let labels: Vec<Vec<String>> = now.iter().map(|(l, _)| l.to_vec()).collect();
    assert_eq!(
        labels,
        [
            strings(&["1", "c"]),
            strings(&["2", "a"]),
            strings(&[EXITED, EXITED])
        ]
    );
    // Process 2 did nothing new: its totals are the very ones published before.
    let before = shared.iter().find(|(l, _)| l[0] == "2").expect("pid 2");
    let after = now.iter().find(|(l, _)| l[0] == "2").expect("pid 2");
    assert!(Arc::ptr_eq(&before.1, &after.1));
    // Without --per-pid the histograms are the groups'.
    assert!(
        Engine::new(scope(GroupBy::Comm, 10))
            .shared_histogram_groups()
            .is_none()
    );
}

/// The per-comm cells of `--per-pid` go by the process's name, as its series are labelled,
/// not by its threads' own names (which can be one per thread).
#[test]
fn per_pid_histogram_cells_go_by_process_name() {
    let mut e = Engine::new(scope(GroupBy::Pid, 10));
    let mut host = FakeHost::default();
    host.alive.insert(1);
    e.ingest_all(
        &snap(&[
            (1, 1, thread("rustc", 1, 0, false)),
            (1, 2, thread("opt 0dk7d3x03c2", 1, 64, false)),
        ]),
        &mut host,
        Instant::now(),
    );
    let g = e.shared_histogram_groups().expect("by comm with --per-pid");
    assert_eq!(g.len(), 1);
    assert_eq!(&**g[0].0, ["rustc"]);
    assert_eq!(
        g[0].1.transfers.values().map(|c| c.bytes()).sum::<u64>(),
        64
    );
}
