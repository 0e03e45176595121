//! The per-thread counters, declared once.
//!
//! Each counter is one entry of the `counters!` table below: its field name (what the kernel
//! increments and the JSON key), its unit, its help text, and where it is shown. Everything
//! else is derived from the table: the [`ThreadCounts`] layout the kernel writes, its
//! arithmetic in user space, the JSON keys, the text columns and the Prometheus families. Adding
//! a counter is one entry here plus its increment in a kernel program.

/// A set of counters shown together: one JSON object and one Prometheus family with a label
/// that tells its members apart (`zcprof_context_switches_total{kind="voluntary"}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterGroup {
    /// Key of the JSON object that holds the members.
    pub json: &'static str,
    /// Prometheus family, without the `zcprof_` prefix and `_total` suffix.
    pub metric: &'static str,
    /// Name of the label whose value is each member's `member`.
    pub label: &'static str,
    /// Help text of the family.
    pub help: &'static str,
}

/// How one counter is named and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterSpec {
    /// Field name in [`ThreadCounts`]; the JSON key and the metric family stem when the counter
    /// belongs to no group.
    pub name: &'static str,
    /// What one unit of the count is (plural), as text reports say it.
    pub unit: &'static str,
    /// One line on what is counted (the metric's help when the counter has no group).
    pub help: &'static str,
    /// The group it is shown in, if any.
    pub group: Option<CounterGroup>,
    /// Its key in the group's JSON object and its label value in the group's family.
    pub member: &'static str,
    /// Short header of its column in text tables.
    pub column: &'static str,
    /// The counter counts nanoseconds: exported in seconds (its metric's name ends in
    /// `_seconds` where the counter's ends in `_ns`), shown as a duration.
    pub ns: bool,
}

impl CounterSpec {
    /// Defaults for the fields an entry of the table leaves out.
    const UNGROUPED: CounterSpec = CounterSpec {
        name: "",
        unit: "",
        help: "",
        group: None,
        member: "",
        column: "",
        ns: false,
    };
}

/// Context switches, by kind.
pub const CONTEXT_SWITCHES: CounterGroup = CounterGroup {
    json: "context_switches",
    metric: "context_switches",
    label: "kind",
    help: "Context switches by kind: voluntary (blocked or slept) or involuntary (preempted), \
           as ru_nvcsw/ru_nivcsw count them.",
};

/// Page faults, by kind.
pub const PAGE_FAULTS: CounterGroup = CounterGroup {
    json: "page_faults",
    metric: "page_faults",
    label: "kind",
    help: "Page faults by kind (minor or major), as ru_minflt/ru_majflt count them.",
};

/// The same page faults, by the mode they were taken in.
pub const PAGE_FAULTS_BY_MODE: CounterGroup = CounterGroup {
    json: "page_faults",
    metric: "page_faults_by_mode",
    label: "mode",
    help: "The same page faults by the mode they were taken in (user or kernel code); sums to \
           zcprof_page_faults_total.",
};

/// MSG_ZEROCOPY completions, by what the kernel reported.
pub const ZEROCOPY_COMPLETIONS: CounterGroup = CounterGroup {
    json: "zerocopy_completions",
    metric: "zerocopy_completions",
    label: "kind",
    help: "MSG_ZEROCOPY sends whose completion the process read (kind=\"sends\"), and of those \
           the ones the kernel reports it copied after all (kind=\"copied\").",
};

/// Bytes copied between user space and a descriptor of a given kind, by kind.
pub const COPIED_BY_FD_KIND: CounterGroup = CounterGroup {
    json: "copied_bytes_by_fd_kind",
    metric: "copied_by_fd_kind_bytes",
    label: "kind",
    help: "Bytes the CPU copied from regular files into user memory (kind=\"file_read\"), and \
           from user memory to sockets by calls that did not ask for zero-copy \
           (kind=\"socket_write\"): the two halves of a relay by copy.",
};

/// Calls that copied from a descriptor of a given kind, by kind.
pub const COPY_CALLS_BY_FD_KIND: CounterGroup = CounterGroup {
    json: "copy_calls_by_fd_kind",
    metric: "copy_calls_by_fd_kind",
    label: "kind",
    help: "Successful read calls that copied from regular files into user memory \
           (kind=\"file_read\").",
};

macro_rules! counters {
    ($( $(#[$doc:meta])* $field:ident { $($key:ident: $value:expr),* $(,)? } )*) => {
        /// Everything zcprof counts for one thread apart from transfers, one `u64` a counter,
        /// in the order of [`COUNTERS`].
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct ThreadCounts {
            $( $(#[$doc])* pub $field: u64, )*
        }

        /// How each counter of [`ThreadCounts`] is named and shown, in field order.
        // Entries that set every field make the `..UNGROUPED` default redundant.
        #[allow(clippy::needless_update)]
        pub const COUNTERS: &[CounterSpec] = &[
            $( CounterSpec { name: stringify!($field), $($key: $value,)* ..CounterSpec::UNGROUPED }, )*
        ];

        impl ThreadCounts {
            /// All zero.
            pub const ZERO: ThreadCounts = ThreadCounts { $( $field: 0, )* };

            /// The counts in the order of [`COUNTERS`].
            pub const fn values(&self) -> [u64; COUNTERS.len()] {
                [$( self.$field, )*]
            }

            /// The counts in the order of [`COUNTERS`], to change them.
            pub fn values_mut(&mut self) -> [&mut u64; COUNTERS.len()] {
                [$( &mut self.$field, )*]
            }
        }
    };
}

counters! {
    /// Syscalls that returned to user space, plus exit/exit_group (which never return).
    syscalls {
        unit: "syscalls",
        help: "Syscalls made (each is two mode switches), including exit and exit_group.",
        column: "syscalls",
    }
    /// `syscalls` when the thread last called execve: what the process did before it became
    /// the program it is now (for `zcprof run`, the spawning code between fork and exec).
    syscalls_before_exec {
        unit: "syscalls",
        help: "Of the syscalls, those made before the thread's last execve.",
        column: "before exec",
    }
    /// Context switches in which the thread gave up the CPU (blocked or slept).
    ctx_voluntary {
        unit: "switches",
        help: "Context switches in which the thread gave up the CPU (blocked or slept).",
        group: Some(CONTEXT_SWITCHES),
        member: "voluntary",
        column: "vol cs",
    }
    /// Context switches in which the thread was preempted while runnable.
    ctx_involuntary {
        unit: "switches",
        help: "Context switches in which the thread was preempted while runnable.",
        group: Some(CONTEXT_SWITCHES),
        member: "involuntary",
        column: "invol cs",
    }
    /// Minor page faults (as `ru_minflt` counts them, taken with registers).
    faults_minor {
        unit: "faults",
        help: "Minor page faults (no I/O), as ru_minflt counts them.",
        group: Some(PAGE_FAULTS),
        member: "minor",
        column: "minor flt",
    }
    /// Major page faults (as `ru_majflt`).
    faults_major {
        unit: "faults",
        help: "Major page faults (the page was read from storage), as ru_majflt counts them.",
        group: Some(PAGE_FAULTS),
        member: "major",
        column: "major flt",
    }
    /// Of `faults_minor + faults_major`, those taken while running user code.
    faults_user {
        unit: "faults",
        help: "Page faults taken while running user code.",
        group: Some(PAGE_FAULTS_BY_MODE),
        member: "user",
        column: "user flt",
    }
    /// Of `faults_minor + faults_major`, those taken in kernel code (e.g. copy_to_user).
    faults_kernel {
        unit: "faults",
        help: "Page faults taken in kernel code (copy_to_user, say).",
        group: Some(PAGE_FAULTS_BY_MODE),
        member: "kernel",
        column: "kernel flt",
    }
    /// MSG_ZEROCOPY sends whose completion the thread read (recvmsg with MSG_ERRQUEUE).
    zerocopy_sends_completed {
        unit: "sends",
        help: "MSG_ZEROCOPY sends whose completion the thread read.",
        group: Some(ZEROCOPY_COMPLETIONS),
        member: "sends",
        column: "zc sends",
    }
    /// Of those, the ones the kernel reports it copied after all (SO_EE_CODE_ZEROCOPY_COPIED:
    /// a local peer, or a device without scatter-gather).
    zerocopy_sends_copied {
        unit: "sends",
        help: "Of the completed MSG_ZEROCOPY sends, those the kernel copied after all.",
        group: Some(ZEROCOPY_COMPLETIONS),
        member: "copied",
        column: "zc copied",
    }
    /// Data-moving calls that failed with EAGAIN: a non-blocking descriptor was not ready.
    would_block {
        unit: "calls",
        help: "Data-moving calls that failed with EAGAIN (a non-blocking descriptor was not \
               ready): two mode switches that moved nothing.",
        column: "EAGAIN",
    }
    /// Nanoseconds spent inside syscalls, from entry to return (blocking included); only
    /// with `--latency`, and only for calls whose entry the thread was watched at.
    syscall_time_ns {
        unit: "ns",
        help: "Time spent inside syscalls (wall clock, from entry to return, blocking \
               included); only with --latency.",
        column: "sys time",
        ns: true,
    }
    /// Bytes read into user memory by CPU copy from regular files (read, pread64, readv,
    /// preadv, preadv2 on a file not opened O_DIRECT): what a relay by copy reads.
    file_read_copy_bytes {
        unit: "bytes",
        help: "Bytes read into user memory by CPU copy from regular files.",
        group: Some(COPIED_BY_FD_KIND),
        member: "file_read",
        column: "file rd copy B",
    }
    /// The successful calls that read those bytes (end-of-file reads included).
    file_read_copy_calls {
        unit: "calls",
        help: "Successful reads from regular files by CPU copy.",
        group: Some(COPY_CALLS_BY_FD_KIND),
        member: "file_read",
        column: "file rd copy",
    }
    /// Bytes written to sockets by CPU copy (write, writev, sendto, sendmsg, sendmmsg) by calls
    /// that did not ask for zero-copy (MSG_ZEROCOPY on an SO_ZEROCOPY socket): what a relay by
    /// copy writes.
    socket_write_copy_bytes {
        unit: "bytes",
        help: "Bytes written to sockets by CPU copy, zero-copy not asked for.",
        group: Some(COPIED_BY_FD_KIND),
        member: "socket_write",
        column: "sock wr copy B",
    }
    /// Of the file pages mapped in by faults (`mmap_fault_in`), the bytes of those the kernel
    /// faulted in while it ran one of the thread's data-moving syscalls: a syscall copying from
    /// or to a file mapping (`write(socket, mapping)`, say), where the thread's own code (its
    /// binary's text) faults outside of them, and `MAP_POPULATE` or `mlockall` map pages in
    /// without moving them.
    syscall_file_fault_bytes {
        unit: "bytes",
        help: "Bytes of file pages mapped in by faults taken inside the thread's data-moving \
               syscalls (a write copying from a file mapping, say).",
        column: "sys file flt B",
    }
    /// io_uring requests the thread submitted that the kernel handed to an io-wq worker
    /// thread instead of running them inline (`io_uring:io_uring_queue_async_work`).
    io_uring_punted {
        unit: "requests",
        help: "io_uring requests handed to io-wq worker threads instead of run inline.",
        column: "uring punted",
    }
}

impl ThreadCounts {
    /// Adds `other`, counter by counter.
    pub fn add(&mut self, other: &ThreadCounts) {
        for (a, b) in self.values_mut().into_iter().zip(other.values()) {
            *a += b;
        }
    }

    /// `self - earlier`, counter by counter, 0 where a counter went down.
    pub fn saturating_sub(&self, earlier: &ThreadCounts) -> ThreadCounts {
        let mut out = *self;
        for (a, b) in out.values_mut().into_iter().zip(earlier.values()) {
            *a = a.saturating_sub(b);
        }
        out
    }

    /// The count of the counter named `name` in [`COUNTERS`].
    pub fn get(&self, name: &str) -> Option<u64> {
        let i = COUNTERS.iter().position(|c| c.name == name)?;
        Some(self.values()[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_named_once_and_shown() {
        for (i, c) in COUNTERS.iter().enumerate() {
            assert!(
                !c.help.is_empty() && !c.unit.is_empty() && !c.column.is_empty(),
                "{c:?}"
            );
            assert_eq!(c.group.is_some(), !c.member.is_empty(), "{c:?}");
            for d in &COUNTERS[i + 1..] {
                assert_ne!(c.name, d.name);
                assert_ne!(c.column, d.column);
                if c.group.is_some() && c.group == d.group {
                    assert_ne!(c.member, d.member);
                }
            }
        }
        assert_eq!(
            core::mem::size_of::<ThreadCounts>(),
            8 * COUNTERS.len(),
            "one u64 per declared counter"
        );
    }

    #[test]
    fn values_follow_the_declaration_order() {
        let mut t = ThreadCounts::ZERO;
        for (i, v) in t.values_mut().into_iter().enumerate() {
            *v = i as u64 + 1;
        }
        assert_eq!(t.syscalls, 1);
        assert_eq!(t.get("ctx_voluntary"), Some(3));
        let mut sum = t;
        sum.add(&t);
        assert_eq!(sum.zerocopy_sends_copied, 2 * t.zerocopy_sends_copied);
        assert_eq!(t.saturating_sub(&sum), ThreadCounts::ZERO);
        assert_eq!(sum.saturating_sub(&t), t);
    }
}
