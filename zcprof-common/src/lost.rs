//! Why an event could not be recorded: every reason zcprof reports, declared once.

use crate::enums::named_enum;

named_enum! {
    /// Index into [`crate::MAP_LOST`]: why a kernel program could not record an event. Must
    /// stay 0.
    pub enum Lost: u32 {
        /// [`crate::MAP_THREADS`] was full when a watched thread was created.
        ThreadTableFull = "thread_table_full",
        /// [`crate::MAP_TRANSFERS`] was full.
        TransferTableFull = "transfer_table_full",
        /// [`crate::MAP_WATCHED`] was full when a watched process forked.
        ProcessTableFull = "process_table_full",
        /// [`crate::MAP_URING`] was full.
        UringTableFull = "uring_table_full",
        /// A kernel structure could not be read (a file table or socket changed under us).
        ReadFailed = "read_failed",
        /// [`crate::MAP_OBJECTS`] was full (`--by-file`, `--by-peer`): the bytes went to the
        /// `[other]` rows.
        ObjectTableFull = "object_table_full",
    }
}

/// Number of [`Lost`] reasons: the size of [`crate::MAP_LOST`].
pub const LOST_REASONS: u32 = Lost::COUNT as u32;

named_enum! {
    /// Index into [`crate::MAP_DEFERRED`]: why the kernel could not retire a dead thread at its
    /// final switch and left its entry, flagged dead, for user space to collect from the table.
    /// Nothing is lost; the entry only stays longer.
    pub enum Deferred: u32 {
        /// [`crate::MAP_RETIRED`] was full.
        RingFull = "ring_full",
        /// The thread had more cells outside its entry than it can name
        /// ([`crate::SPILLED_CELLS`]).
        ManyCells = "many_cells",
        /// A map operation failed.
        Failed = "failed",
    }
}

/// Number of [`Deferred`] reasons: the size of [`crate::MAP_DEFERRED`].
pub const DEFERRED_REASONS: u32 = Deferred::COUNT as u32;

/// The reason the kernel itself reports, beside the [`Lost`] ones: events for which it did not
/// run zcprof's programs (a program preempted mid-run holds its CPU's recursion guard).
/// Counted by the kernel per program, not in [`crate::MAP_LOST`].
pub const KERNEL_SKIPPED: &str = "kernel_skipped";
