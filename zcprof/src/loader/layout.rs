//! How the programs read the running kernel's structs and tracepoint arguments: offsets and
//! tracepoint prototypes from BTF, handed to the programs as read-only globals.

use std::path::Path;

use zcprof_common::{KERNEL_FIELDS, KernelField, Need, globals};

use super::{
    LoadError,
    hooks::{HOOKS, HookKind},
};
use crate::{
    btf::{Btf, BtfError},
    capability::{self, Capabilities, State},
};

/// How the programs read the kernel's structs and tracepoint arguments, and what they can
/// count with them.
#[derive(Debug, Clone)]
pub struct KernelLayout {
    /// (global name, value) pairs for `EbpfLoader::override_global`.
    pub globals: Vec<(&'static str, u64)>,
    /// Why BTF could not be used, if it could not; the programs then classify by syscall only.
    pub btf_missing: Option<String>,
    /// The optional raw tracepoints this kernel lacks (or passes other arguments to than the
    /// programs can read): not attached.
    pub skipped: Vec<&'static str>,
    /// What zcprof can count on this kernel.
    pub capabilities: Capabilities,
    /// Each hook's arguments on this kernel (`None`: no such tracepoint), from BTF.
    pub prototypes: Vec<(&'static str, Option<Vec<String>>)>,
}

impl KernelLayout {
    /// Reads the offsets from the running kernel's BTF. The task offsets are essential (the
    /// fork hook needs them); the file, socket and io_uring ones only refine the ledger, and
    /// without them the programs classify by syscall alone.
    pub fn from_kernel() -> Result<Self, LoadError> {
        Self::from_kernel_with(None, None)
    }

    /// As [`Self::from_kernel`], with tracepoint `.0` looked up as `.1` (the hidden
    /// `--tracepoint-override`: an optional hook renamed to one that does not exist shows how
    /// zcprof degrades on a kernel without it), and the BTF read from `btf_file` if given.
    pub fn from_kernel_with(
        rename: Option<(&str, &str)>,
        btf_file: Option<&Path>,
    ) -> Result<Self, LoadError> {
        let btf = match btf_file {
            Some(path) => Btf::from_file(path),
            None => Btf::from_kernel(),
        }
        .map_err(LoadError::Btf)?;
        let mut globals = Vec::new();
        for f in fields(Need::Essential) {
            globals.push((f.global, offset(&btf, f).map_err(LoadError::Btf)?));
        }
        // Best effort: without them only the rare cases they serve are approximate.
        for f in fields(Need::BestEffort) {
            globals.push((f.global, offset(&btf, f).unwrap_or(0)));
        }
        let mut layout = KernelLayout {
            globals,
            btf_missing: None,
            skipped: Vec::new(),
            capabilities: Capabilities::default(),
            prototypes: HOOKS
                .iter()
                .filter(|h| !matches!(h.kind, HookKind::PerfEvent(_)))
                .map(|h| (h.target, btf.tracepoint_args(h.target)))
                .collect(),
        };
        match Self::classification(&btf) {
            Ok(more) => {
                layout.globals.extend(more);
                layout.globals.push((globals::HAVE_BTF, 1));
            }
            Err(e) => {
                layout.globals.push((globals::HAVE_BTF, 0));
                let why = e.to_string();
                let caps = &mut layout.capabilities;
                caps.set(
                    capability::FD_TYPES,
                    State::Degraded,
                    format!("{why}; transfers are classified by syscall only"),
                );
                caps.set(capability::IO_URING, State::Unavailable, why.clone());
                caps.set(capability::EXIT_SYSCALLS, State::Unavailable, why.clone());
                // Where a fault was taken is read from the registers exit_syscalls reads.
                caps.set(
                    capability::MMAP_FAULT_IN,
                    State::Degraded,
                    format!("{why}; syscall_file_fault_bytes stays 0"),
                );
                caps.set(
                    capability::CONTEXT_SWITCHES,
                    State::Degraded,
                    format!("{why}; voluntary or not is told by the task's state"),
                );
                layout.btf_missing = Some(why);
            }
        }
        layout.prototypes(&btf, rename);
        Ok(layout)
    }

    /// Chooses, from each tracepoint's prototype in BTF, which arguments the programs read,
    /// and which optional tracepoints are left out.
    fn prototypes(&mut self, btf: &Btf, rename: Option<(&str, &str)>) {
        use zcprof_common::prototypes::*;
        let args = |tp: &str| match rename {
            Some((from, to)) if from == tp => btf.tracepoint_args(to),
            _ => btf.tracepoint_args(tp),
        };
        let state_known = self.global("OFF_TASK_STATE").is_some_and(|off| off != 0);
        let switch_args = args("sched_switch").unwrap_or_default();
        let has_prev_state = switch_args.len() >= 4;
        self.globals
            .push((SWITCH_PREV_STATE, u64::from(has_prev_state)));
        if !has_prev_state && !state_known {
            self.capabilities.set(
                capability::CONTEXT_SWITCHES,
                State::Degraded,
                "sched_switch passes no prev_state and BTF has no task_struct state: \
                 a task's switches after its exit may be counted",
            );
        }

        let exit_args = args("sched_process_exit").unwrap_or_default();
        self.globals
            .push((EXIT_GROUP_DEAD, u64::from(exit_args.len() >= 2)));

        // (ctx, req, cqe) or (ctx, req, user_data, res, cflags, ...); older kernels (5.10) pass no
        // request to read the opcode from.
        match args("io_uring_complete") {
            None => {
                self.skip("io_uring_complete");
                self.capabilities.set(
                    capability::IO_URING,
                    State::Unavailable,
                    "this kernel has no io_uring:io_uring_complete tracepoint",
                );
            }
            Some(a) if a.get(2).is_some_and(|t| t == "struct io_uring_cqe *") => {
                self.globals.push((URING_CQE, 1));
            }
            Some(a) if a.len() >= 5 && a[1].ends_with('*') && !a[2].ends_with('*') => {
                self.globals.push((URING_CQE, 0));
            }
            Some(a) => {
                self.skip("io_uring_complete");
                self.capabilities.set(
                    capability::IO_URING,
                    State::Unavailable,
                    format!(
                        "io_uring_complete passes ({}) on this kernel, without the request \
                         that names the operation",
                        a.join(", ")
                    ),
                );
            }
        }
        if !self.globals.iter().any(|(n, _)| *n == URING_CQE) {
            self.globals.push((URING_CQE, 0));
        }

        // Punts are counted where the tracepoint exists (every kernel with io_uring has it).
        if args("io_uring_queue_async_work").is_none() {
            self.skip("io_uring_queue_async_work");
            if self.capabilities.state(capability::IO_URING) == State::Exact {
                self.capabilities.set(
                    capability::IO_URING,
                    State::Degraded,
                    "this kernel has no io_uring:io_uring_queue_async_work tracepoint: \
                     io_uring_punted is not counted",
                );
            }
        }

        // Both or neither: either alone would count part of the pages.
        const FILEMAP: [&str; 2] = ["mm_filemap_fault", "mm_filemap_map_pages"];
        if let Some(tp) = FILEMAP.iter().find(|tp| args(tp).is_none()) {
            self.capabilities.set(
                capability::MMAP_FAULT_IN,
                State::Unavailable,
                format!("this kernel has no filemap:{tp} tracepoint (Linux 6.10+)"),
            );
            for tp in FILEMAP {
                self.skip(tp);
            }
        }
    }

    fn skip(&mut self, tracepoint: &'static str) {
        if !self.skipped.contains(&tracepoint) {
            self.skipped.push(tracepoint);
        }
    }

    /// The value of global `name`, if set.
    fn global(&self, name: &str) -> Option<u64> {
        self.globals.iter().find(|(n, _)| *n == name).map(|g| g.1)
    }

    /// The members that tell fd types apart, and the values computed from them; an error if
    /// one is missing.
    fn classification(btf: &Btf) -> Result<Vec<(&'static str, u64)>, BtfError> {
        let mut found = Vec::new();
        for f in fields(Need::Classify) {
            found.push((f.global, offset(btf, f)?));
        }
        let get = |name: &str| found.iter().find(|(n, _)| *n == name).map(|g| g.1);
        let fdt = window(
            &[(get("OFF_FDT_MAX_FDS"), 4), (get("OFF_FDT_FD"), 8)],
            "fdtable",
        )?;
        // `private_data` is read from the window only where it fits (recent kernels); older
        // layouts put it far from the others and the programs read it on its own.
        let file = window(
            &[
                (get("OFF_FILE_INODE"), 8),
                (get("OFF_FILE_FLAGS"), 4),
                (get("OFF_FILE_MODE"), 4),
            ],
            "file",
        )?;
        found.push((globals::FDT_WINDOW, fdt));
        found.push((globals::FILE_WINDOW, file));
        let zerocopy_bit = btf.enumerator("SOCK_ZEROCOPY")? as u64;
        found.push((globals::SOCK_ZEROCOPY_BIT, zerocopy_bit));
        Ok(found)
    }
}

/// The members of [`KERNEL_FIELDS`] with need `need`.
fn fields(need: Need) -> impl Iterator<Item = &'static KernelField> {
    KERNEL_FIELDS.iter().filter(move |f| f.need == need)
}

/// The offset of member `f`: its first path the kernel's BTF has.
fn offset(btf: &Btf, f: &KernelField) -> Result<u64, BtfError> {
    let mut last_err = None;
    for path in f.paths {
        match btf.offset(f.st, path) {
            Ok(off) => return Ok(off),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| BtfError::NoMember(f.st.to_string(), f.global.to_string())))
}

/// The start of a window of [`globals::WINDOW_BYTES`] that holds every (offset, size) field,
/// so that the kernel program reads them with one helper call.
fn window(fields: &[(Option<u64>, u64)], st: &str) -> Result<u64, BtfError> {
    let unsupported = || BtfError::NoMember(st.to_string(), "fields within 64 bytes".into());
    let start = fields
        .iter()
        .filter_map(|f| f.0)
        .min()
        .ok_or_else(unsupported)?;
    for (off, size) in fields {
        let off = off.ok_or_else(unsupported)?;
        if off - start + size > globals::WINDOW_BYTES {
            return Err(unsupported());
        }
    }
    Ok(start)
}
