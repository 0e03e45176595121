//! How the programs read the running kernel's structs and tracepoint arguments: offsets and
//! tracepoint prototypes from BTF, handed to the programs as read-only globals.

use zcprof_common::offsets;

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
        Self::from_kernel_with(None)
    }

    /// As [`Self::from_kernel`], with tracepoint `.0` looked up as `.1` (the hidden
    /// `--tracepoint-override`: an optional hook renamed to one that does not exist shows how
    /// zcprof degrades on a kernel without it).
    pub fn from_kernel_with(rename: Option<(&str, &str)>) -> Result<Self, LoadError> {
        let btf = Btf::from_kernel().map_err(LoadError::Btf)?;
        let mut globals = Vec::new();
        use offsets::*;
        for (global, st, path) in [
            (TASK_PID, "task_struct", "pid"),
            (TASK_TGID, "task_struct", "tgid"),
            (TASK_COMM, "task_struct", "comm"),
            (TASK_NVCSW, "task_struct", "nvcsw"),
        ] {
            globals.push((global, btf.offset(st, path).map_err(LoadError::Btf)?));
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
                layout.globals.push((HAVE_BTF, 1));
            }
            Err(e) => {
                layout.globals.push((HAVE_BTF, 0));
                let why = e.to_string();
                let caps = &mut layout.capabilities;
                caps.set(
                    capability::FD_TYPES,
                    State::Degraded,
                    format!("{why}; transfers are classified by syscall only"),
                );
                caps.set(capability::IO_URING, State::Unavailable, why.clone());
                caps.set(capability::EXIT_SYSCALLS, State::Unavailable, why.clone());
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
        // Best effort: without them only the rare cases they serve are approximate.
        let state = btf
            .offset("task_struct", "__state")
            .or_else(|_| btf.offset("task_struct", "state"));
        let signal = btf.offset("task_struct", "signal");
        let live = btf.offset("signal_struct", "live");
        for (global, value) in [
            (offsets::TASK_STATE, &state),
            (offsets::TASK_SIGNAL, &signal),
            (offsets::SIGNAL_LIVE, &live),
        ] {
            self.globals.push((global, *value.as_ref().unwrap_or(&0)));
        }

        let switch_args = args("sched_switch").unwrap_or_default();
        let has_prev_state = switch_args.len() >= 4;
        self.globals
            .push((SWITCH_PREV_STATE, u64::from(has_prev_state)));
        if !has_prev_state && state.is_err() {
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

    fn classification(btf: &Btf) -> Result<Vec<(&'static str, u64)>, BtfError> {
        use offsets::*;
        let members: [(&'static str, &str, &[&str]); 20] = [
            (TASK_FILES, "task_struct", &["files"]),
            (TASK_STACK, "task_struct", &["stack"]),
            (FILES_FDT, "files_struct", &["fdt"]),
            (FDT_MAX_FDS, "fdtable", &["max_fds"]),
            (FDT_FD, "fdtable", &["fd"]),
            (FILE_INODE, "file", &["f_inode"]),
            (FILE_FLAGS, "file", &["f_flags"]),
            (FILE_MODE, "file", &["f_mode"]),
            (FILE_PRIVATE, "file", &["private_data"]),
            (INODE_MODE, "inode", &["i_mode"]),
            (SOCKET_SK, "socket", &["sk"]),
            // `sk_flags` became a #define for `__sk_common.skc_flags` in 6.x.
            (SOCK_FLAGS, "sock", &["sk_flags", "__sk_common.skc_flags"]),
            (SOCK_FAMILY, "sock", &["__sk_common.skc_family"]),
            (SOCK_DADDR, "sock", &["__sk_common.skc_daddr"]),
            (SOCK_V6_DADDR, "sock", &["__sk_common.skc_v6_daddr"]),
            (KIOCB_OPCODE, "io_kiocb", &["opcode"]),
            (KIOCB_FILE, "io_kiocb", &["file"]),
            (CQE_RES, "io_uring_cqe", &["res"]),
            (CQE_FLAGS, "io_uring_cqe", &["flags"]),
            (PT_REGS_ORIG_AX, "pt_regs", &["orig_ax"]),
        ];
        let mut globals = Vec::with_capacity(members.len() + 1);
        for (global, st, paths) in members {
            let mut found = None;
            let mut last_err = None;
            for path in paths {
                match btf.offset(st, path) {
                    Ok(off) => {
                        found = Some(off);
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            match (found, last_err) {
                (Some(off), _) => globals.push((global, off)),
                (None, Some(e)) => return Err(e),
                (None, None) => unreachable!("every member has at least one path"),
            }
        }
        let get = |name: &str| globals.iter().find(|(n, _)| *n == name).map(|g| g.1);
        let fdt = window(&[(get(FDT_MAX_FDS), 4), (get(FDT_FD), 8)], "fdtable")?;
        // `private_data` is read from the window only where it fits (recent kernels); older
        // layouts put it far from the others and the programs read it on its own.
        let file = window(
            &[
                (get(FILE_INODE), 8),
                (get(FILE_FLAGS), 4),
                (get(FILE_MODE), 4),
            ],
            "file",
        )?;
        globals.push((FDT_WINDOW, fdt));
        globals.push((FILE_WINDOW, file));
        globals.push((SOCK_ZEROCOPY_BIT, btf.enumerator("SOCK_ZEROCOPY")? as u64));
        Ok(globals)
    }
}

/// The start of a window of [`offsets::WINDOW_BYTES`] that holds every (offset, size) field,
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
        if off - start + size > offsets::WINDOW_BYTES {
            return Err(unsupported());
        }
    }
    Ok(start)
}
