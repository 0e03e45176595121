//! Findings: what a summary's counts say the user could change, each with its evidence and
//! its estimated saving, computed from a [`Snapshot`] alone. Every rule, its threshold and how
//! its saving is computed is in docs/findings.md; a rule speaks only above its threshold.

use serde::Serialize;
use serde_json::{Value, json};
use zcprof_common::{Column, HIST_BUCKETS, Syscall, Transfer, uring};

use crate::snapshot::{Activity, ProcessKey, ProcessView, Snapshot};

/// `small_io`: successful calls of one cell before the rule speaks.
pub const SMALL_IO_MIN_CALLS: u64 = 1000;
/// `small_io`: the median transfer must be below this many bytes.
pub const SMALL_IO_BELOW: u64 = 4096;
/// `small_io`: the transfer size its saving assumes instead (a common buffer size).
pub const BATCHED_BYTES: u64 = 64 << 10;
/// `file_to_socket_by_copy`, `mmap_write_to_socket`: bytes that must have gone to sockets by
/// copy (and, for the first, come from files by copy) before the rules speak.
pub const RELAY_MIN_BYTES: u64 = 1 << 20;
/// `mmap_write_to_socket`: the bytes read from files by copy may be at most
/// 1/`FEW_FILE_READS` of the bytes written to sockets.
pub const FEW_FILE_READS: u64 = 8;
/// `io_uring_punted`: requests punted to io-wq workers before the rule speaks.
pub const PUNTED_MIN: u64 = 64;
/// `io_uring_punted`: and at least 1/`PUNTED_SHARE` of the process's io_uring completions.
pub const PUNTED_SHARE: u64 = 10;

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The rule (`small_io`, `zerocopy_fell_back`, `file_to_socket_by_copy`,
    /// `mmap_write_to_socket`, `io_uring_punted`).
    pub kind: &'static str,
    /// The process.
    pub pid: u32,
    /// The thread, for the rules that look at one thread at a time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    /// Its start time (see [`ProcessKey`]).
    pub start_time_ns: u64,
    /// The numbers the finding rests on.
    pub evidence: Value,
    /// Bytes that would no longer be copied by the CPU.
    pub saving_bytes: u64,
    /// Mode switches that would no longer happen.
    pub saving_mode_switches: u64,
    /// With `--latency`: the time the calls that would go took (at their measured average),
    /// in seconds; absent where the calls were not timed or the rule saves no calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saving_seconds: Option<f64>,
    /// The finding in one sentence, for the text summary.
    #[serde(skip)]
    pub text: String,
}

impl Finding {
    /// A finding of rule `kind` about process `key` (thread `tid`), saving
    /// nothing until [`Finding::saving`] says what. Every finding is made here: a field all of
    /// them get (another estimate of the saving, say) is added in this one place.
    fn new(kind: &'static str, key: ProcessKey, tid: Option<u32>, evidence: Value) -> Self {
        Finding {
            kind,
            pid: key.pid,
            tid,
            start_time_ns: key.start,
            evidence,
            saving_bytes: 0,
            saving_mode_switches: 0,
            saving_seconds: None,
            text: String::new(),
        }
    }

    /// The estimated saving.
    fn saving(mut self, bytes: u64, mode_switches: u64) -> Self {
        self.saving_bytes = bytes;
        self.saving_mode_switches = mode_switches;
        self
    }

    /// The time saved: `calls` calls at the measured average of `cells` (none if untimed).
    fn saving_time<'a>(
        mut self,
        calls: u64,
        cells: impl IntoIterator<Item = &'a Transfer>,
    ) -> Self {
        let (mut ns, mut timed) = (0u64, 0u64);
        for c in cells {
            ns += c.time_ns;
            timed += c.time_log2.iter().sum::<u64>();
        }
        if timed > 0 && calls > 0 {
            let seconds = mul_div(ns, calls.min(timed), timed) as f64 / 1e9;
            self.saving_seconds = Some(seconds);
            self.text.push_str(&format!(
                " (about {} of time in those calls)",
                duration(seconds)
            ));
        }
        self
    }

    /// The sentence of the text summary.
    fn text(mut self, text: String) -> Self {
        self.text = text;
        self
    }
}

/// Seconds as the text summary writes durations.
fn duration(seconds: f64) -> String {
    crate::duration::show((seconds * 1e9) as u64)
}

/// Every finding of `snap`, by process (pid order), then by rule.
pub fn findings(snap: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    for (&key, p) in &snap.processes {
        small_io(key, p, &mut out);
        zerocopy_fell_back(key, p, &mut out);
        per_thread(key, p, "file_to_socket_by_copy", relay_by_copy, &mut out);
        per_thread(key, p, "mmap_write_to_socket", send_from_mappings, &mut out);
        io_uring_punted(key, p, &mut out);
    }
    out
}

/// What a per-thread rule finds in one thread's (or a process's) activity: the evidence, the
/// saving in bytes and in mode switches, the sentence (after the thread's name), and the calls
/// that would go with the syscalls whose `cpu_kernel_to_user` cells time them.
type Verdict = (Value, u64, u64, String, SavedCalls);

/// Calls a rule's change removes, and the syscalls of the cells whose average time they take.
type SavedCalls = (u64, &'static [Syscall]);

/// The syscalls that read from a file into user memory.
const FILE_READS: &[Syscall] = &[
    Syscall::Read,
    Syscall::Pread64,
    Syscall::Readv,
    Syscall::Preadv,
    Syscall::Preadv2,
];

/// The cells of `a` that `saved` names.
fn saved_cells(a: &Activity, saved: SavedCalls) -> impl Iterator<Item = &Transfer> {
    a.transfers
        .iter()
        .filter(move |((s, c), _)| saved.1.contains(s) && *c == Column::CpuKernelToUser)
        .map(|(_, t)| t)
}

/// Rule `kind` (`rule`) on each thread of `p`; if it finds nothing in any thread, on the
/// process as a whole (the work may be split between threads: one reads, another writes).
fn per_thread(
    key: ProcessKey,
    p: &ProcessView,
    kind: &'static str,
    rule: fn(&Activity) -> Option<Verdict>,
    out: &mut Vec<Finding>,
) {
    let mut found = false;
    for (&tid, t) in &p.threads {
        if let Some((evidence, bytes, switches, text, saved)) = rule(&t.activity) {
            out.push(
                Finding::new(kind, key, Some(tid), evidence)
                    .saving(bytes, switches)
                    .text(format!("thread {tid} {text}"))
                    .saving_time(saved.0, saved_cells(&t.activity, saved)),
            );
            found = true;
        }
    }
    if !found
        && p.threads.len() > 1
        && let Some((evidence, bytes, switches, text, saved)) = rule(&p.activity)
    {
        out.push(
            Finding::new(kind, key, None, evidence)
                .saving(bytes, switches)
                .text(format!("its threads together {text}"))
                .saving_time(saved.0, saved_cells(&p.activity, saved)),
        );
    }
}

/// `a * b / c` without overflow (0 when `c` is 0).
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return 0;
    }
    (a as u128 * b as u128 / c as u128) as u64
}

/// `file_to_socket_by_copy`: regular files read into user memory and comparable amounts
/// written to sockets by copy; sendfile or splice would move those bytes without either copy.
fn relay_by_copy(a: &Activity) -> Option<Verdict> {
    let c = &a.counts;
    let (read, calls, written) = (
        c.file_read_copy_bytes,
        c.file_read_copy_calls,
        c.socket_write_copy_bytes,
    );
    let relayed = read.min(written);
    if relayed < RELAY_MIN_BYTES || 2 * relayed < read.max(written) {
        return None;
    }
    // With sendfile the reads go, and each write becomes one call that moves as much or more.
    let reads_saved = mul_div(calls, relayed, read);
    let evidence = json!({
        "file_read_bytes": read, "file_read_calls": calls, "socket_write_bytes": written,
        "relayed_bytes": relayed,
    });
    let text = format!(
        "read {read} B from regular files into user memory ({calls} reads) and wrote {written} \
         B to sockets by copy: sendfile or splice would move {relayed} B without copying them \
         twice ({} B fewer copied, {reads_saved} reads fewer)",
        2 * relayed
    );
    Some((
        evidence,
        2 * relayed,
        2 * reads_saved,
        text,
        (reads_saved, FILE_READS),
    ))
}

/// `mmap_write_to_socket`: bytes written to sockets by copy that were not read from files by
/// copy, while its data-moving syscalls faulted in file pages in comparable amounts: sent from
/// file mappings; sendfile would avoid the copy that remains, and the faults. Faults of the
/// thread's own code (its binary's text, loaded as it runs) do not count: a short run of a
/// large binary faults in megabytes of it.
fn send_from_mappings(a: &Activity) -> Option<Verdict> {
    let c = &a.counts;
    let (written, read) = (c.socket_write_copy_bytes, c.file_read_copy_bytes);
    let faulted_in = c.syscall_file_fault_bytes;
    if written < RELAY_MIN_BYTES || 2 * faulted_in < written || read * FEW_FILE_READS > written {
        return None;
    }
    let from_mappings = written.min(faulted_in);
    let evidence = json!({
        "socket_write_bytes": written, "syscall_file_fault_bytes": faulted_in,
        "file_read_bytes": read, "from_mappings_bytes": from_mappings,
    });
    let text = format!(
        "wrote {written} B to sockets by copy but read only {read} B from files, while \
         {faulted_in} B of file pages were faulted in by its data-moving syscalls: it sends \
         from file mappings; sendfile would skip the copy of about {from_mappings} B, and \
         the page faults"
    );
    Some((evidence, from_mappings, 0, text, (0, &[])))
}

/// `io_uring_punted`: a thread whose io_uring requests the kernel handed to io-wq worker
/// threads instead of running them inline.
fn io_uring_punted(key: ProcessKey, p: &ProcessView, out: &mut Vec<Finding>) {
    // Completions are kept per process: what the threads' requests came to.
    let completions: u64 = p
        .activity
        .uring
        .iter()
        .filter(|((_, col), _)| *col != Column::NotMoved)
        .map(|(_, t)| t.calls)
        .sum();
    for (&tid, t) in &p.threads {
        let punted = t.activity.counts.io_uring_punted;
        if punted < PUNTED_MIN || (completions > 0 && punted * PUNTED_SHARE < completions) {
            continue;
        }
        let evidence = json!({"punted": punted, "process_data_completions": completions});
        out.push(
            Finding::new("io_uring_punted", key, Some(tid), evidence).text(format!(
                "thread {tid}: {punted} io_uring requests were handed to io-wq worker threads \
                 instead of running inline (the process's data-moving completions: \
                 {completions}); each costs a worker's wake-up and two context switches \
                 (IOSQE_ASYNC, or a file that cannot do non-blocking I/O)"
            )),
        );
    }
}

/// The upper bound of the bucket that holds the median of the successful calls counted in
/// `cell.size_log2` (bucket b holds sizes of b significant bits: at most 2^b - 1 bytes).
fn median_at_most(cell: &Transfer) -> Option<u64> {
    let calls: u64 = cell.size_log2.iter().sum();
    if calls == 0 {
        return None;
    }
    let mut seen = 0;
    for (b, n) in cell.size_log2.iter().enumerate().take(HIST_BUCKETS) {
        seen += n;
        if seen * 2 >= calls {
            return Some((1u64 << b) - 1);
        }
    }
    None
}

/// A cell of many calls whose median moves less than [`SMALL_IO_BELOW`]: its mode switches
/// dominate what it costs.
fn small_io(key: ProcessKey, p: &ProcessView, out: &mut Vec<Finding>) {
    for (&(syscall, column), cell) in &p.activity.transfers {
        // Faults and mappings are not calls a buffer size changes.
        if matches!(column, Column::NotMoved | Column::MmapFaultIn) {
            continue;
        }
        let ok_calls: u64 = cell.size_log2.iter().sum();
        let Some(median) = median_at_most(cell) else {
            continue;
        };
        if ok_calls < SMALL_IO_MIN_CALLS || median >= SMALL_IO_BELOW {
            continue;
        }
        let batched = cell.bytes.div_ceil(BATCHED_BYTES);
        let saving = 2 * ok_calls.saturating_sub(batched);
        let evidence = json!({
            "syscall": syscall.name(), "column": column.name(), "calls": ok_calls,
            "bytes": cell.bytes, "median_bytes_at_most": median,
        });
        out.push(
            Finding::new("small_io", key, None, evidence)
                .saving(0, saving)
                .text(format!(
                    "{}: {ok_calls} calls with a median of at most {median} B; calls of {} KiB \
                     (bigger buffers, readv/writev, io_uring batching) would save {saving} mode \
                     switches",
                    syscall.name(),
                    BATCHED_BYTES >> 10
                ))
                .saving_time(saving / 2, [cell]),
        );
    }
}

/// Zero-copy sends that the kernel completed as copies (MSG_ZEROCOPY to a local peer, or an
/// io_uring SEND_ZC that zcprof classed as copied): the zero-copy request bought nothing.
fn zerocopy_fell_back(key: ProcessKey, p: &ProcessView, out: &mut Vec<Finding>) {
    let c = &p.activity.counts;
    // The kernel's own verdict on MSG_ZEROCOPY sends: at least half copied.
    if c.zerocopy_sends_copied > 0 && c.zerocopy_sends_copied * 2 >= c.zerocopy_sends_completed {
        let evidence = json!({
            "via": "MSG_ZEROCOPY", "sends_completed": c.zerocopy_sends_completed,
            "sends_copied": c.zerocopy_sends_copied,
        });
        out.push(
            Finding::new("zerocopy_fell_back", key, None, evidence).text(format!(
                "MSG_ZEROCOPY: the kernel copied {} of {} completed sends (a local peer or a \
             device without scatter-gather): the request bought nothing but completions to \
             read",
                c.zerocopy_sends_copied, c.zerocopy_sends_completed
            )),
        );
    }
    for (&(opcode, column), cell) in &p.activity.uring {
        let zc = [uring::op::SEND_ZC, uring::op::SENDMSG_ZC].contains(&(opcode as u8));
        if !zc || column != Column::CpuUserToKernel || cell.bytes == 0 {
            continue;
        }
        let evidence = json!({
            "via": format!("io_uring {}", uring::op_name(opcode)), "calls": cell.calls,
            "bytes": cell.bytes,
        });
        out.push(
            Finding::new("zerocopy_fell_back", key, None, evidence).text(format!(
                "io_uring {}: {} B sent to a local peer, which gets a copy all the same",
                uring::op_name(opcode),
                cell.bytes
            )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zcprof_common::size_bucket;

    fn cell(calls: u64, size: u64) -> Transfer {
        let mut t = Transfer {
            calls,
            bytes: calls * size,
            ..Transfer::ZERO
        };
        t.size_log2[size_bucket(size)] = calls;
        t
    }

    fn process(cells: &[(Syscall, Column, Transfer)]) -> Snapshot {
        let mut snap = Snapshot::default();
        let p = snap.processes.entry(ProcessKey::new(7, 1)).or_default();
        for (s, c, t) in cells {
            p.activity.transfers.insert((*s, *c), *t);
        }
        snap
    }

    #[test]
    fn small_io_speaks_above_its_thresholds_only() {
        let snap = process(&[
            (Syscall::Read, Column::CpuKernelToUser, cell(100_000, 1)),
            (Syscall::Write, Column::CpuUserToKernel, cell(999, 1)),
            (Syscall::Pread64, Column::CpuKernelToUser, cell(5_000, 4096)),
            (
                Syscall::Pwrite64,
                Column::CpuUserToKernel,
                cell(5_000, 4095),
            ),
        ]);
        let f = findings(&snap);
        let found: Vec<(&str, u64)> = f
            .iter()
            .map(|f| {
                (
                    f.evidence["syscall"].as_str().unwrap(),
                    f.saving_mode_switches,
                )
            })
            .collect();
        // 100,000 one-byte reads fit in two 64 KiB calls: 2 × 99,998 switches saved; 5,000
        // writes of 4,095 B in 313 calls: 2 × 4,687.
        assert_eq!(found, vec![("read", 199_996), ("pwrite64", 9_374)]);
        assert!(f.iter().all(|f| f.saving_seconds.is_none()), "untimed");
    }

    #[test]
    fn timed_calls_say_what_the_saved_calls_took() {
        // 100,000 one-byte reads that took 300 ns each: the 99,998 calls that bigger buffers
        // remove took 99,998 × 300 ns.
        let mut read = cell(100_000, 1);
        read.time_ns = 100_000 * 300;
        read.time_log2[size_bucket(300)] = 100_000;
        let snap = process(&[(Syscall::Read, Column::CpuKernelToUser, read)]);
        let f = findings(&snap);
        assert_eq!(f.len(), 1);
        let s = f[0].saving_seconds.expect("timed");
        assert!((s - 99_998.0 * 300e-9).abs() < 1e-9, "{s}");
        assert!(f[0].text.contains("30.0 ms of time"), "{}", f[0].text);
    }

    #[test]
    fn zerocopy_fell_back_needs_the_kernel_s_verdict() {
        let mut snap = process(&[]);
        let p = snap.processes.values_mut().next().unwrap();
        p.activity.counts.zerocopy_sends_completed = 10;
        p.activity.counts.zerocopy_sends_copied = 4;
        assert!(findings(&snap).is_empty(), "fewer than half copied");
        let p = snap.processes.values_mut().next().unwrap();
        p.activity.counts.zerocopy_sends_copied = 5;
        let f = findings(&snap);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["sends_copied"], 5);
    }

    /// A process of threads `tid -> (file bytes read by copy, their calls, socket bytes
    /// written by copy, file bytes faulted in, io_uring punts)`.
    fn threads(threads: &[(u32, [u64; 5])]) -> Snapshot {
        let mut snap = Snapshot::default();
        let p = snap.processes.entry(ProcessKey::new(7, 1)).or_default();
        for &(tid, [read, calls, written, faulted, punted]) in threads {
            let mut t = crate::snapshot::ThreadView::default();
            let c = &mut t.activity.counts;
            (c.file_read_copy_bytes, c.file_read_copy_calls) = (read, calls);
            (c.socket_write_copy_bytes, c.io_uring_punted) = (written, punted);
            c.syscall_file_fault_bytes = faulted;
            p.add_thread(7, tid, t);
        }
        snap
    }

    fn kinds(f: &[Finding]) -> Vec<(&str, Option<u32>)> {
        f.iter().map(|f| (f.kind, f.tid)).collect()
    }

    #[test]
    fn a_relay_by_copy_is_found_per_thread_with_comparable_amounts_only() {
        const MIB: u64 = 1 << 20;
        let snap = threads(&[
            // 8 MiB in 129 reads (the last one at end of file), 8 MiB and headers out.
            (10, [8 * MIB, 129, 8 * MIB + 200, 0, 0]),
            // Not comparable: 8 MiB read, 3 MiB written.
            (11, [8 * MIB, 128, 3 * MIB, 0, 0]),
            // Below the threshold.
            (12, [MIB - 1, 16, MIB - 1, 0, 0]),
        ]);
        let f = findings(&snap);
        assert_eq!(kinds(&f), vec![("file_to_socket_by_copy", Some(10))]);
        assert_eq!(f[0].saving_bytes, 16 * MIB);
        assert_eq!(f[0].saving_mode_switches, 2 * 129);
        assert_eq!(f[0].evidence["relayed_bytes"], 8 * MIB);

        // One thread reads, another writes: the process as a whole.
        let snap = threads(&[(10, [4 * MIB, 64, 0, 0, 0]), (11, [0, 0, 4 * MIB, 0, 0])]);
        let f = findings(&snap);
        assert_eq!(kinds(&f), vec![("file_to_socket_by_copy", None)]);
        let json = serde_json::to_value(&f[0]).unwrap();
        assert!(json.get("tid").is_none(), "{json}");
    }

    #[test]
    fn sending_from_mappings_needs_faults_and_few_file_reads() {
        const MIB: u64 = 1 << 20;
        let snap = threads(&[
            (10, [4096, 2, 4 * MIB, 4 * MIB + 65536, 0]),
            // Reads what it sends: a relay by copy, not a mapping.
            (11, [4 * MIB, 64, 4 * MIB, 4 * MIB, 0]),
            // Sends what it did not map (few faults).
            (12, [0, 0, 4 * MIB, MIB, 0]),
        ]);
        let f = findings(&snap);
        assert_eq!(
            kinds(&f),
            vec![
                ("file_to_socket_by_copy", Some(11)),
                ("mmap_write_to_socket", Some(10))
            ]
        );
        assert_eq!(f[1].saving_bytes, 4 * MIB);
    }

    #[test]
    fn punted_requests_need_a_count_and_a_share() {
        let mut snap = threads(&[(10, [0, 0, 0, 0, 100]), (11, [0, 0, 0, 0, 63])]);
        assert_eq!(kinds(&findings(&snap)), vec![("io_uring_punted", Some(10))]);
        // 100 punted of 1,001 completions is under a tenth.
        let p = snap.processes.values_mut().next().unwrap();
        let done = Transfer {
            calls: 1001,
            ..Transfer::ZERO
        };
        p.activity
            .uring
            .insert((uring::op::READ as u16, Column::CpuKernelToUser), done);
        assert!(findings(&snap).is_empty());
    }
}
