//! copy-file-range: `copy_file_range(file -> new file)` in the same directory, no socket.
//!
//! The kernel copies (or, on filesystems that support it, shares extents: a reflink) without the
//! data ever entering user space. There is no receiver process: the destination file plays that
//! role, and its size is the "received" count. It is deleted at the end.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Ctx, MAX_RW_COUNT, eof};
use crate::workload::error::WorkloadError;
use crate::workload::sys;
use crate::workload::tally::{Counters, Measured};

/// The outcome of a copy.
pub(crate) struct Copied {
    /// Bytes copy_file_range reported.
    pub bytes: u64,
    /// Size of the destination file afterwards.
    pub destination_bytes: u64,
    pub measured: Measured,
}

pub(crate) fn copy(ctx: &Ctx<'_>, c: &mut Counters) -> Result<Copied, WorkloadError> {
    let input = ctx.open()?;
    let dest = Destination::create(ctx)?;

    let meter = ctx.start(c)?;
    let mut copied = 0u64;
    while copied < ctx.size {
        let want = (ctx.size - copied).min(MAX_RW_COUNT) as usize;
        let n = sys::copy_file_range(
            c,
            input.as_fd(),
            dest.file.as_fd(),
            want,
            "destination file <- file",
        )?;
        if n == 0 {
            return Err(eof(
                "copy_file_range",
                "destination file <- file",
                copied,
                ctx.size,
            ));
        }
        copied += n as u64;
    }
    let measured = meter.stop()?;

    let destination_bytes = dest
        .file
        .metadata()
        .map_err(|source| WorkloadError::SourceFile {
            path: dest.path.clone(),
            what: "stat the destination file",
            source,
        })?
        .len();
    Ok(Copied {
        bytes: copied,
        destination_bytes,
        measured,
    })
}

/// The destination file, removed when dropped (on success and on error alike).
struct Destination {
    path: PathBuf,
    file: File,
}

impl Destination {
    /// `<source>.copy-<pid>-<n>`: unique per process and call, created exclusively.
    fn create(ctx: &Ctx<'_>) -> Result<Self, WorkloadError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut name = ctx
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(format!(
            ".copy-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let path = ctx.path.with_file_name(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| WorkloadError::SourceFile {
                path: path.clone(),
                what: "create the destination file",
                source,
            })?;
        Ok(Self { path, file })
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        // Best effort: a leftover copy in $TMPDIR is not worth failing a finished run for.
        let _ = std::fs::remove_file(&self.path);
    }
}
