use std::collections::HashMap;

use zcprof_common::{Column, Syscall, Transfer};

use super::*;

fn cell(calls: u64, bytes: u64) -> Transfer {
    Transfer {
        calls,
        bytes,
        ..Transfer::ZERO
    }
}

/// An activity of `syscalls` reads that copied `copied` bytes.
fn copying(copied: u64, syscalls: u64) -> Activity {
    let mut a = Activity::default();
    a.counts.syscalls = syscalls;
    a.transfers.insert(
        (Syscall::Read, Column::CpuKernelToUser),
        cell(syscalls, copied),
    );
    a
}

fn labels(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rates_per_second_and_zero_copy_share() {
    let mut a = Activity::default();
    a.counts.syscalls = 10;
    a.counts.ctx_voluntary = 4;
    a.counts.ctx_involuntary = 2;
    a.counts.faults_minor = 3;
    a.counts.faults_major = 1;
    let t = &mut a.transfers;
    t.insert((Syscall::Read, Column::CpuKernelToUser), cell(2, 3000));
    t.insert((Syscall::Write, Column::CpuUserToKernel), cell(2, 1000));
    t.insert((Syscall::Sendfile, Column::ZeroCopy), cell(1, 2000));
    t.insert((Syscall::Pread64, Column::DmaDirect), cell(1, 1000));
    t.insert((Syscall::FileFault, Column::MmapFaultIn), cell(1, 500));
    let r = Rates::of(&a, 2.0);
    assert_eq!(r.syscalls, 5.0);
    assert_eq!(r.cpu_copied, 2000.0);
    assert_eq!(r.zero_copy, 1000.0);
    assert_eq!(r.dma_fault_in, 750.0);
    assert_eq!((r.ctx_voluntary, r.ctx_involuntary), (2.0, 1.0));
    assert_eq!(r.faults, 2.0);
    assert_eq!(r.zero_copy_share(), Some(1000.0 / 3000.0));
    assert_eq!(Rates::of(&Activity::default(), 1.0).zero_copy_share(), None);
    // A zero-length interval shows counts, not infinities.
    assert_eq!(Rates::of(&a, 0.0).syscalls, 10.0);
}

#[test]
fn an_interval_is_the_difference_of_two_engine_totals() {
    let before: HashMap<Vec<String>, Activity> = [
        (labels(&["10", "dd"]), copying(1000, 5)),
        (labels(&["11", "cat"]), copying(50, 1)),
    ]
    .into_iter()
    .collect();
    let now = vec![
        (labels(&["10", "dd"]), copying(5000, 9)),
        (labels(&["11", "cat"]), copying(50, 1)),
        // New since the previous collection: everything it did is in the interval.
        (labels(&["12", "sh"]), copying(70, 2)),
        // Lifetime totals of exited processes: no rate, no row.
        (labels(&["[exited]", "[exited]"]), copying(1 << 30, 1)),
    ];
    let line = |pid, tid| ThreadLine {
        pid,
        tid,
        comm: "dd".into(),
        activity: copying(10, 1),
    };
    let threads = vec![
        ("10".to_string(), line(10, 10)),
        ("10".to_string(), line(10, 13)),
        ("99".to_string(), line(99, 99)),
    ];
    let iv = interval(Rows::Process, &now, &before, threads, 2.0);
    assert_eq!(iv.groups.len(), 3);
    let dd = iv.group("10").expect("dd's row");
    assert_eq!((dd.pid, dd.name.as_str()), (Some(10), "dd"));
    assert_eq!(dd.activity.cpu_copied(), 4000);
    assert_eq!(dd.activity.counts.syscalls, 4);
    assert_eq!(
        dd.threads.iter().map(|t| t.tid).collect::<Vec<_>>(),
        [10, 13]
    );
    assert_eq!(iv.group("11").expect("cat").activity.cpu_copied(), 0);
    assert_eq!(iv.group("12").expect("sh").activity.cpu_copied(), 70);

    let rows = rows(&iv, SortKey::CpuCopied, "");
    assert_eq!(rows[0].key, "10");
    assert_eq!(rows[0].rates.cpu_copied, 2000.0);
    assert_eq!(total(&rows).cpu_copied, 2035.0);
}

#[test]
fn groups_are_named_by_their_label() {
    assert_eq!(
        group_identity(Rows::Comm, &labels(&["nginx"])),
        Some(("nginx".into(), None, "nginx".into()))
    );
    assert_eq!(
        group_identity(Rows::Cgroup, &labels(&["/system.slice/a.service"])),
        Some((
            "/system.slice/a.service".into(),
            None,
            "/system.slice/a.service".into()
        ))
    );
    assert_eq!(
        group_identity(Rows::Process, &labels(&["[exited]", "[exited]"])),
        None
    );
    assert_eq!(group_identity(Rows::Comm, &[]), None);
    let docker = labels(&["4c0e6a1f9d2b8e7a3c5f", "", "docker"]);
    assert_eq!(
        group_identity(Rows::Container, &docker),
        Some((
            "4c0e6a1f9d2b8e7a3c5f//docker".into(),
            None,
            "docker 4c0e6a1f9d2b".into()
        ))
    );
}

fn row(pid: u32, name: &str, r: Rates) -> Row {
    Row {
        key: pid.to_string(),
        pid: Some(pid),
        name: name.into(),
        rates: r,
    }
}

#[test]
fn sorting_and_filtering() {
    let r = |cpu: f64, zc: f64, faults: f64| Rates {
        cpu_copied: cpu,
        zero_copy: zc,
        faults,
        ..Rates::default()
    };
    let mut rows = vec![
        row(3, "idle", r(0.0, 0.0, 0.0)),
        row(1, "Nginx", r(100.0, 900.0, 1.0)),
        row(2, "dd", r(5000.0, 0.0, 7.0)),
        row(4, "cat", r(100.0, 0.0, 0.0)),
    ];
    fn order(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(|r| r.key.as_str()).collect()
    }
    sort(&mut rows, SortKey::CpuCopied);
    // Equal rates: by pid.
    assert_eq!(order(&rows), ["2", "1", "4", "3"]);
    sort(&mut rows, SortKey::ZeroCopyShare);
    // No byte moved: below every share, even 0 %.
    assert_eq!(order(&rows), ["1", "2", "4", "3"]);
    sort(&mut rows, SortKey::Faults);
    assert_eq!(order(&rows), ["2", "1", "4", "3"]);
    sort(&mut rows, SortKey::Name);
    assert_eq!(order(&rows), ["1", "2", "3", "4"]);

    assert!(matches(&rows[0], "nGI"));
    assert!(matches(&rows[0], "1"));
    assert!(!matches(&rows[1], "ng"));
    assert!(matches(&rows[1], ""));
}

#[test]
fn sort_keys_cycle_both_ways() {
    let mut k = SortKey::CpuCopied;
    for _ in 0..SortKey::ALL.len() {
        k = k.next();
    }
    assert_eq!(k, SortKey::CpuCopied);
    assert_eq!(SortKey::Name.prev(), SortKey::Faults);
    assert_eq!(SortKey::Faults.next(), SortKey::Name);
    assert_eq!(SortKey::Name.title(Rows::Process), "pid");
    assert_eq!(SortKey::Name.title(Rows::Comm), "name");
}

#[test]
fn ledger_by_syscall_most_bytes_first() {
    let mut a = Activity::default();
    a.transfers
        .insert((Syscall::Read, Column::CpuKernelToUser), cell(100, 409_600));
    a.transfers.insert(
        (Syscall::Write, Column::CpuUserToKernel),
        cell(100, 819_200),
    );
    a.transfers
        .insert((Syscall::MmapFile, Column::NotMoved), cell(4, 0));
    // IORING_OP_READ.
    a.uring.insert((22, Column::CpuKernelToUser), cell(2, 8192));
    let rows = ledger_rows(&a, 2.0);
    let names: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.syscall.as_str(), r.column))
        .collect();
    assert_eq!(
        names,
        [
            ("write", "cpu_user_to_kernel"),
            ("read", "cpu_kernel_to_user"),
            ("io_uring read", "cpu_kernel_to_user"),
            ("mmap_file", "mapped"),
        ]
    );
    assert_eq!((rows[0].calls, rows[0].bytes), (50.0, 409_600.0));
}

#[test]
fn threads_most_copies_first() {
    let line = |tid, copied| ThreadLine {
        pid: 7,
        tid,
        comm: "w".into(),
        activity: copying(copied, 1),
    };
    let g = Group {
        key: "7".into(),
        pid: Some(7),
        name: "w".into(),
        activity: Activity::default(),
        threads: vec![line(7, 10), line(8, 3000), line(9, 10)],
    };
    let t = thread_rows(&g, 1.0);
    assert_eq!(t.iter().map(|t| t.tid).collect::<Vec<_>>(), [8, 7, 9]);
    assert_eq!(t[0].rates.cpu_copied, 3000.0);
}
