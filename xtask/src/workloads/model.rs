//! What each strategy should show under the copy model (`docs/model.md`): the ledger columns the
//! transfer must fill, in multiples of the bytes sent, and the model's classic counts where it
//! gives them.
//!
//! The classic counts are per chunk: read-write "2 CPU copies, 4 mode switches"; heap-buffer
//! "3 copies (1 in user space)"; mmap + write "1 CPU copy, 4 mode switches, plus the page
//! faults"; gather sendfile "0 CPU copies, 2 mode switches per call".
//! They say nothing about the other strategies. The column expectations follow the ledger's rules
//! (`docs/ledger.md`) for what the sender's system calls do over loopback TCP.

/// The ledger columns that carry transfer bytes, in display order (`mmap_fault_in` is checked
/// apart, where the kernel can count it: [`Model::mapped_by_faults`]).
pub const CPU_USER_TO_KERNEL: &str = "cpu_user_to_kernel";
pub const CPU_KERNEL_TO_USER: &str = "cpu_kernel_to_user";
pub const CPU_IN_KERNEL: &str = "cpu_in_kernel";
pub const ZERO_COPY: &str = "zero_copy";
pub const DMA_DIRECT: &str = "dma_direct";
pub const MMAP_FAULT_IN: &str = "mmap_fault_in";
pub const NOT_MOVED: &str = "not_moved";

/// Columns whose bytes are checked exactly, with the CPU-copy columns first.
pub const CHECKED_COLUMNS: [&str; 5] = [
    CPU_USER_TO_KERNEL,
    CPU_KERNEL_TO_USER,
    CPU_IN_KERNEL,
    ZERO_COPY,
    DMA_DIRECT,
];

/// Columns in which the CPU copies bytes.
pub const CPU_COLUMNS: [&str; 3] = [CPU_USER_TO_KERNEL, CPU_KERNEL_TO_USER, CPU_IN_KERNEL];

/// Every strategy of `zcprof workload`, in the order they are run and shown.
pub const STRATEGIES: [&str; 10] = [
    "read-write",
    "heap-buffer",
    "mmap-write",
    "sendfile",
    "splice",
    "vmsplice",
    "io-uring",
    "msg-zerocopy",
    "direct-io",
    "copy-file-range",
];

/// The copy model's classic counts for one strategy, per chunk (`docs/model.md`).
#[derive(Debug, Clone, Copy)]
pub struct ClassicCounts {
    /// CPU copies, as the classic count states it.
    pub copies: &'static str,
    /// CPU copies per byte, kernel and user space together.
    pub copies_per_byte: u64,
    /// Mode switches, as the classic count states it.
    pub mode_switches: &'static str,
    /// Mode switches per chunk, where the classic count gives a number per chunk.
    pub mode_switches_per_chunk: Option<u64>,
    /// Why the workload's count can legitimately differ from the classic one (shown as a note).
    pub mode_switch_note: Option<&'static str>,
}

/// What one strategy must show.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    /// The classic per-chunk counts, for the strategies they cover.
    pub classic: Option<ClassicCounts>,
    /// Expected bytes of each of [`CHECKED_COLUMNS`] for the sender, in multiples of the bytes
    /// sent (splice and vmsplice count the pipe's way in and way out: 2).
    pub columns: [u64; 5],
    /// Copies made in user space (invisible to the kernel), per byte sent.
    pub user_copies: u64,
    /// Whether the kernel must report that it copied the zero-copy sends (true over loopback).
    pub zerocopy_copied: Option<bool>,
    /// File bytes the sender's page faults map in (`mmap_fault_in`), in multiples of the bytes
    /// sent, every one of them inside its syscalls (`syscall_file_fault_bytes`): mmap-write's
    /// writes copy from a mapping its own code never touches, 1; every other strategy maps no
    /// file, 0 (the workload maps its own code in before the start gate).
    pub mapped_by_faults: u64,
    /// How the copies come about, for the notes.
    pub how: &'static str,
}

impl Model {
    /// CPU copies per byte the kernel makes for the sender (the CPU columns).
    pub fn kernel_copies(&self) -> u64 {
        self.columns[..CPU_COLUMNS.len()].iter().sum()
    }

    /// Expected bytes of `column` for `size` bytes sent (0 for columns not checked).
    pub fn expected(&self, column: &str, size: u64) -> u64 {
        CHECKED_COLUMNS
            .iter()
            .position(|c| *c == column)
            .map_or(0, |i| self.columns[i] * size)
    }
}

/// The model of `strategy` (one of [`STRATEGIES`]).
pub fn model(strategy: &str) -> Option<Model> {
    // [cpu_user_to_kernel, cpu_kernel_to_user, cpu_in_kernel, zero_copy, dma_direct]
    let (classic, columns, user_copies, zerocopy_copied, how) = match strategy {
        "read-write" => (
            Some(ClassicCounts {
                copies: "2",
                copies_per_byte: 2,
                mode_switches: "4",
                mode_switches_per_chunk: Some(4),
                mode_switch_note: None,
            }),
            [1, 1, 0, 0, 0],
            0,
            None,
            "read copies page cache -> buffer, write copies buffer -> socket",
        ),
        "heap-buffer" => (
            Some(ClassicCounts {
                copies: "3 (1 user)",
                copies_per_byte: 3,
                mode_switches: "4",
                mode_switches_per_chunk: Some(4),
                mode_switch_note: None,
            }),
            [1, 1, 0, 0, 0],
            1,
            None,
            "read-write plus a memcpy between two user buffers, which the kernel cannot see",
        ),
        "mmap-write" => (
            Some(ClassicCounts {
                copies: "1",
                copies_per_byte: 1,
                mode_switches: "4 + faults",
                mode_switches_per_chunk: Some(4),
                mode_switch_note: Some(
                    "the classic count has one mmap and one write per chunk (4 mode switches); the \
                     workload maps the file once and writes it chunk by chunk: 2 per chunk, plus \
                     4 for the one mmap and munmap",
                ),
            }),
            [1, 0, 0, 0, 0],
            0,
            None,
            "write copies the mapped page cache -> socket; pages arrive by (minor) faults",
        ),
        "sendfile" => (
            Some(ClassicCounts {
                copies: "0",
                copies_per_byte: 0,
                mode_switches: "2 per call",
                mode_switches_per_chunk: None,
                mode_switch_note: None,
            }),
            [0, 0, 0, 1, 0],
            0,
            None,
            "page references into the socket; the receiver's read is the copy",
        ),
        "splice" => (
            None,
            [0, 0, 0, 2, 0],
            0,
            None,
            "file -> pipe and pipe -> socket move page references",
        ),
        "vmsplice" => (
            None,
            [0, 1, 0, 2, 0],
            0,
            None,
            "read copies into user memory, vmsplice and splice move references",
        ),
        "io-uring" => (
            None,
            [1, 1, 0, 0, 0],
            0,
            Some(true),
            "READ copies into user memory; SEND_ZC to a local peer is copied by the kernel",
        ),
        "msg-zerocopy" => (
            None,
            [1, 1, 0, 0, 0],
            0,
            Some(true),
            "read copies into user memory; MSG_ZEROCOPY to a local peer is copied by the kernel",
        ),
        "direct-io" => (
            None,
            [1, 0, 0, 0, 1],
            0,
            None,
            "O_DIRECT read is DMA into user memory; write copies buffer -> socket",
        ),
        "copy-file-range" => (
            None,
            [0, 0, 1, 0, 0],
            0,
            None,
            "the kernel copies page cache -> page cache (no reflink on this filesystem)",
        ),
        _ => return None,
    };
    Some(Model {
        classic,
        columns,
        user_copies,
        zerocopy_copied,
        mapped_by_faults: u64::from(strategy == "mmap-write"),
        how,
    })
}

/// zcprof's name for a system call the tally names `name` (the tally says `mmap` for the file
/// mapping, zcprof `mmap_file`), or `None` if zcprof does not keep per-call ledger cells for it
/// (it counts every system call, but itemises only those that can move data).
pub fn zcprof_syscall(name: &str) -> Option<&'static str> {
    const ITEMISED: [&str; 24] = [
        "read",
        "write",
        "pread64",
        "pwrite64",
        "readv",
        "writev",
        "preadv",
        "preadv2",
        "pwritev",
        "pwritev2",
        "recvfrom",
        "recvmsg",
        "recvmmsg",
        "sendto",
        "sendmsg",
        "sendmmsg",
        "sendfile",
        "splice",
        "tee",
        "vmsplice",
        "copy_file_range",
        "mmap_file",
        "mmap_anon",
        "munmap",
    ];
    let name = if name == "mmap" { "mmap_file" } else { name };
    ITEMISED.into_iter().find(|s| *s == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_has_a_model() {
        for s in STRATEGIES {
            let m = model(s).expect(s);
            if let Some(classic) = m.classic {
                assert_eq!(
                    classic.copies_per_byte,
                    m.kernel_copies() + m.user_copies,
                    "{s}"
                );
            }
        }
        assert!(model("nope").is_none());
    }

    #[test]
    fn kernel_copies_per_strategy() {
        let copies: Vec<u64> = STRATEGIES
            .iter()
            .map(|s| model(s).unwrap().kernel_copies())
            .collect();
        assert_eq!(copies, [2, 2, 1, 0, 0, 1, 2, 2, 1, 1]);
    }

    #[test]
    fn syscall_names() {
        assert_eq!(zcprof_syscall("mmap"), Some("mmap_file"));
        assert_eq!(zcprof_syscall("read"), Some("read"));
        assert_eq!(zcprof_syscall("io_uring_enter"), None);
        assert_eq!(zcprof_syscall("shutdown"), None);
    }
}
