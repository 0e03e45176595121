//! The contract between zcprof's kernel programs (`zcprof-ebpf`) and user space (`zcprof`).
//!
//! Every map key, map value and enum that crosses the boundary is defined here once,
//! `#[repr(C)]`, so both sides agree on the layout byte for byte (the libbpf-tools `foo.h`).
//! Lists that name things users see (counters, ledger cell fields, syscalls, columns, lost-event
//! reasons, io_uring opcodes) are declared once here, with their names, and everything else is
//! derived from them.
#![no_std]

mod counters;
mod enums;
mod layout;
mod ledger;
mod lost;
mod maps;
mod objects;
mod size;
mod stacks;
mod syscall;
mod thread;
pub mod uring;

pub use counters::*;
pub use layout::{KERNEL_FIELDS, KernelField, Need, globals, prototypes};
pub use ledger::*;
pub use lost::*;
pub use maps::*;
pub use objects::*;
pub use size::parse_size;
pub use stacks::*;
pub use syscall::*;
pub use thread::*;
pub use uring::UringKey;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all these types are `#[repr(C)]`, `Copy`, and made only of integers and arrays
    // of integers, so every bit pattern is valid and there is no uninitialised padding that
    // the kernel could not write.
    unsafe impl aya::Pod for Watch {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ThreadStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TransferKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Transfer {}
    // SAFETY: as above.
    unsafe impl aya::Pod for UringKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StackKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for StackBytes {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ObjectKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RecentObject {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ObjectId {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ObjectBytes {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ObjectName {}
}
