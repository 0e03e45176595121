//! Struct offsets and constants of the running kernel, set by the loader before load.
//!
//! Rust BPF has no CO-RE relocations, so the loader reads each offset from
//! /sys/kernel/btf/vmlinux and writes it into these globals (`EbpfLoader::override_global`).
//! They live in .rodata, so the verifier sees them as constants.

use aya_ebpf::helpers::bpf_probe_read_kernel;

/// Declares, for each kernel struct member of `zcprof_common::kernel_fields!`, the `u64`
/// global the loader sets to its offset, and an accessor in [`off`] named for it.
macro_rules! offset_globals {
    ($( $accessor:ident = $global:ident: $st:literal, [$($path:literal),+], $need:ident; )*) => {
        $(
            #[unsafe(no_mangle)]
            static $global: u64 = 0;
        )*

        /// Struct member offsets by name (see `zcprof_common::KERNEL_FIELDS`).
        pub mod off {
            $(
                #[doc = concat!("`", $st, ".", $($path, " / ",)+ "` (`", stringify!($global), "`)")]
                #[inline(always)]
                pub fn $accessor() -> u64 {
                    super::global(&super::$global)
                }
            )*
            pub use super::flags::*;
        }
    };
}
zcprof_common::kernel_fields!(offset_globals);

/// Declares the loader-set globals that are not struct members (`zcprof_common::globals`,
/// `zcprof_common::prototypes`).
macro_rules! kernel_globals {
    ($($name:ident),* $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            static $name: u64 = 0;
        )*
    };
}

kernel_globals!(
    OFF_FDT_WINDOW,
    OFF_FILE_WINDOW,
    SOCK_ZEROCOPY_BIT,
    HAVE_BTF,
    WATCH_ALL,
    EMPTY_BODIES,
    LATENCY,
    STACKS_ON,
    ATTRIBUTE,
    BACKSTOPS,
    PROTO_SWITCH_PREV_STATE,
    PROTO_EXIT_GROUP_DEAD,
    PROTO_URING_CQE,
);

/// Reads a loader-set global. The volatile read keeps the compiler from folding the
/// placeholder 0 into the code.
#[inline(always)]
pub fn global(g: &'static u64) -> u64 {
    // SAFETY: `g` is a valid, aligned static; volatile only defeats constant folding.
    unsafe { core::ptr::read_volatile(g) }
}

/// The values computed from struct members, and the modes, by name.
pub mod flags {
    use super::*;
    /// Start of the window of `struct fdtable` read at once.
    #[inline(always)]
    pub fn fdt_window() -> u64 {
        global(&OFF_FDT_WINDOW)
    }
    /// Start of the window of `struct file` read at once.
    #[inline(always)]
    pub fn file_window() -> u64 {
        global(&OFF_FILE_WINDOW)
    }
    /// The bit of `SOCK_ZEROCOPY` in `sock.sk_flags`.
    #[inline(always)]
    pub fn sock_zerocopy_bit() -> u64 {
        global(&SOCK_ZEROCOPY_BIT)
    }
    /// Benchmarks only: every program returns at once (the cost floor of the hooks).
    #[inline(always)]
    pub fn empty_bodies() -> bool {
        global(&EMPTY_BODIES) != 0
    }
    /// Every process is counted (`zcprof serve`).
    #[inline(always)]
    pub fn watch_all() -> bool {
        global(&WATCH_ALL) != 0
    }
    /// Syscalls are timed (`--latency`).
    #[inline(always)]
    pub fn latency() -> bool {
        global(&LATENCY) != 0
    }
    /// Bytes are aggregated by user stack (`--folded`, `--flamegraph`, `--pprof`).
    #[inline(always)]
    pub fn stacks() -> bool {
        global(&STACKS_ON) != 0
    }
    /// Bytes are attributed to files and peers (`--by-file`, `--by-peer`).
    #[inline(always)]
    pub fn attribute() -> bool {
        global(&ATTRIBUTE) != 0
    }
    /// The backstop programs are attached (see `backstop`).
    #[inline(always)]
    pub fn backstops() -> bool {
        global(&BACKSTOPS) != 0
    }
    /// Every struct member that tells fd types apart came from BTF.
    #[inline(always)]
    pub fn have_btf() -> bool {
        global(&HAVE_BTF) != 0
    }
}

/// Which arguments each tracepoint passes on this kernel (see `zcprof_common::prototypes`).
pub mod proto {
    use super::*;
    #[inline(always)]
    pub fn switch_prev_state() -> bool {
        global(&PROTO_SWITCH_PREV_STATE) != 0
    }
    #[inline(always)]
    pub fn exit_group_dead() -> bool {
        global(&PROTO_EXIT_GROUP_DEAD) != 0
    }
    #[inline(always)]
    pub fn uring_cqe() -> bool {
        global(&PROTO_URING_CQE) != 0
    }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, offset: u64) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel never faults: a bad address returns an error.
    unsafe { bpf_probe_read_kernel((base + offset) as *const T) }.map_err(|e| e as i64)
}
