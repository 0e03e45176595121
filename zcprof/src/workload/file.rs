//! The source file: generated once with pseudo-random content, then read once so that it sits in
//! the page cache when the measured transfer starts.
//!
//! Pseudo-random rather than zeros so that nothing along the way (a filesystem, a future
//! compressing transport) can take a shortcut that real data would not get.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::WorkloadError;

/// Chunk used to write and to warm the file (1 MiB, large enough to make this quick).
const CHUNK: usize = 1 << 20;

/// `$TMPDIR/zcprof-workload-<size>.dat` (size in bytes).
pub(crate) fn default_path(size: u64) -> PathBuf {
    std::env::temp_dir().join(format!("zcprof-workload-{size}.dat"))
}

/// Make sure `path` is a regular file of exactly `size` bytes (generating it if it is missing or
/// of another size), then read it once to pull it into the page cache.
pub(crate) fn prepare(path: &Path, size: u64) -> Result<(), WorkloadError> {
    let err = |what, source| WorkloadError::SourceFile {
        path: path.to_owned(),
        what,
        source,
    };
    match fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(err(
                "exists but is not a regular file",
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
        Ok(m) if m.len() == size => {}
        Ok(_) => generate(path, size)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(path, size)?,
        Err(e) => return Err(err("stat", e)),
    }
    warm(path, size)
}

/// Write `size` pseudo-random bytes to a temporary file beside `path`, then rename it into place.
///
/// The rename makes generation atomic: a concurrent run (parallel tests share the default path)
/// either sees the old file or a complete new one, never a half-written one. The content
/// depends only on `size`, so concurrent generators produce identical files.
fn generate(path: &Path, size: u64) -> Result<(), WorkloadError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let err = |what, source| WorkloadError::SourceFile {
        path: path.to_owned(),
        what,
        source,
    };
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);

    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| err("create temporary file", e))?;
        let mut rng = XorShift64Star::new(0x7a63_7072_6f66_0001 ^ size);
        let mut chunk = vec![0u8; CHUNK];
        let mut left = size;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            rng.fill(&mut chunk[..n]);
            f.write_all(&chunk[..n]).map_err(|e| err("write", e))?;
            left -= n as u64;
        }
        fs::rename(&tmp, path).map_err(|e| err("rename temporary file into place", e))
    })();
    if result.is_err() {
        // Best effort: the error being reported is the one that matters.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Read the whole file once so that its pages are in the page cache.
fn warm(path: &Path, size: u64) -> Result<(), WorkloadError> {
    let err = |what, source| WorkloadError::SourceFile {
        path: path.to_owned(),
        what,
        source,
    };
    let mut f = File::open(path).map_err(|e| err("open to warm the page cache", e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| err("read to warm the page cache", e))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    if total != size {
        return Err(err(
            "changed size while being read",
            std::io::Error::other(format!("read {total} bytes, expected {size}")),
        ));
    }
    Ok(())
}

/// xorshift64* (Vigna): fast, good enough to defeat any compression or deduplication.
struct XorShift64Star(u64);

impl XorShift64Star {
    fn new(seed: u64) -> Self {
        // The state must never be zero.
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
    }
}
