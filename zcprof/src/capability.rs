//! What zcprof can count on this kernel, and how well: one entry per capability, decided at
//! load from the running kernel's BTF (which hooks exist, with which arguments, and which
//! struct members). Reported once on stderr, in the JSON document (`capabilities`), in
//! `/metrics` (`zcprof_capability`) and by `zcprof doctor`, so that a counter the kernel
//! cannot feed is never a silent zero.

use serde::Serialize;

/// How well zcprof can count one thing on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Counted exactly, as documented.
    Exact,
    /// Counted, but less precisely than documented (the reason says how).
    Degraded,
    /// Not counted at all on this kernel: the counters it feeds stay 0.
    Unavailable,
}

impl State {
    /// The value of `zcprof_capability`: 1 when counted (even degraded), 0 when not.
    pub fn available(self) -> bool {
        self != State::Unavailable
    }

    /// The word used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Exact => "exact",
            State::Degraded => "degraded",
            State::Unavailable => "unavailable",
        }
    }
}

/// One capability: what it is, what it feeds and what it needs. The list [`KINDS`] is the
/// single source of the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// Name in JSON, metrics and messages.
    pub name: &'static str,
    /// The counters or columns that depend on it.
    pub feeds: &'static str,
    /// What the kernel must provide.
    pub needs: &'static str,
}

/// Transfers classified by what each descriptor is (file, socket, pipe, O_DIRECT, peer).
pub const FD_TYPES: Kind = Kind {
    name: "fd_types",
    feeds: "the ledger columns of every transfer (without it: by syscall only)",
    needs: "BTF members of task_struct, files_struct, fdtable, file, inode, socket and sock",
};
/// File pages mapped in by faults (`mmap_fault_in`).
pub const MMAP_FAULT_IN: Kind = Kind {
    name: "mmap_fault_in",
    feeds: "ledger column mmap_fault_in (file_fault transfers), syscall_file_fault_bytes",
    needs: "tracepoints filemap:mm_filemap_fault and mm_filemap_map_pages (Linux 6.10+)",
};
/// io_uring operations by opcode and column.
pub const IO_URING: Kind = Kind {
    name: "io_uring",
    feeds: "the io_uring ledger (io_uring[] in JSON, syscall=\"io_uring\" in metrics)",
    needs: "tracepoint io_uring:io_uring_complete with its request argument (6.1 has it, 5.10 not) \
            and BTF of struct io_kiocb",
};
/// exit and exit_group, which never return, counted at process exit.
pub const EXIT_SYSCALLS: Kind = Kind {
    name: "exit_syscalls",
    feeds: "syscalls and mode switches: the final exit/exit_group of each thread",
    needs: "BTF of task_struct.stack and pt_regs.orig_ax",
};
/// Voluntary and involuntary context switches, by the kernel's own rule.
pub const CONTEXT_SWITCHES: Kind = Kind {
    name: "context_switches",
    feeds: "context_switches{voluntary,involuntary}",
    needs: "tracepoint sched:sched_switch and BTF of task_struct.nvcsw",
};
/// Page faults, minor and major, user and kernel.
pub const PAGE_FAULTS: Kind = Kind {
    name: "page_faults",
    feeds: "page_faults{minor,major,user,kernel}",
    needs: "perf software events page-faults-min and page-faults-maj",
};

/// Every capability, in report order.
pub const KINDS: [Kind; 6] = [
    FD_TYPES,
    MMAP_FAULT_IN,
    IO_URING,
    EXIT_SYSCALLS,
    CONTEXT_SWITCHES,
    PAGE_FAULTS,
];

/// One capability's state on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capability {
    /// [`Kind::name`].
    pub name: &'static str,
    /// How well it is counted.
    pub state: State,
    /// Why it is not exact (empty when it is).
    pub why: String,
}

/// The state of every capability in [`KINDS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Capabilities(Vec<Capability>);

impl Default for Capabilities {
    /// Everything exact (until told otherwise).
    fn default() -> Self {
        Capabilities(
            KINDS
                .iter()
                .map(|k| Capability {
                    name: k.name,
                    state: State::Exact,
                    why: String::new(),
                })
                .collect(),
        )
    }
}

impl Capabilities {
    /// Records that `kind` is `state` on this kernel, because of `why`.
    pub fn set(&mut self, kind: Kind, state: State, why: impl Into<String>) {
        if let Some(c) = self.0.iter_mut().find(|c| c.name == kind.name) {
            c.state = state;
            c.why = why.into();
        }
    }

    /// The state of `kind`.
    pub fn state(&self, kind: Kind) -> State {
        self.0
            .iter()
            .find(|c| c.name == kind.name)
            .map_or(State::Exact, |c| c.state)
    }

    /// Every capability, in [`KINDS`] order.
    pub fn iter(&self) -> impl Iterator<Item = &Capability> {
        self.0.iter()
    }

    /// The capabilities that are not exact.
    pub fn impaired(&self) -> impl Iterator<Item = &Capability> {
        self.0.iter().filter(|c| c.state != State::Exact)
    }

    /// Says on stderr, one line each, what this kernel does not let zcprof count exactly.
    pub fn warn(&self) {
        for c in self.impaired() {
            let feeds = KINDS
                .iter()
                .find(|k| k.name == c.name)
                .map_or("", |k| k.feeds);
            eprintln!(
                "zcprof: warning: {} {} on this kernel: {}; affects {}",
                c.name,
                c.state.as_str(),
                c.why,
                feeds
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_default_is_exact() {
        let caps = Capabilities::default();
        let mut names: Vec<_> = caps.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), KINDS.len());
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        assert!(caps.impaired().next().is_none());
    }

    #[test]
    fn set_changes_one_capability() {
        let mut caps = Capabilities::default();
        caps.set(MMAP_FAULT_IN, State::Unavailable, "no filemap tracepoints");
        assert_eq!(caps.state(MMAP_FAULT_IN), State::Unavailable);
        assert_eq!(caps.state(IO_URING), State::Exact);
        let json = serde_json::to_value(&caps).unwrap();
        assert_eq!(json[1]["name"], "mmap_fault_in");
        assert_eq!(json[1]["state"], "unavailable");
        assert_eq!(json[1]["why"], "no filemap tracepoints");
    }
}
