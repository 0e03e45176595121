//! Names for user instruction pointers: the process's memory maps (read while it lived), the
//! mapped file's ELF symbols and DWARF (blazesym), and perf map files for JIT code.

use std::{collections::HashMap, path::PathBuf};

use super::cfi::{Cfi, Leaf};
use blazesym::symbolize::{
    Input, Symbolized,
    source::{Elf, Source},
};

/// One file-backed mapping of a process.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    /// File offset of `start`.
    offset: u64,
    /// The file; " (deleted)" stripped, `deleted` set instead.
    path: PathBuf,
    deleted: bool,
}

/// What zcprof read of a process while it lived.
#[derive(Debug, Clone)]
pub struct ProcessMaps {
    /// Its name (`/proc/PID/comm`).
    pub comm: String,
    maps: Vec<Mapping>,
}

impl ProcessMaps {
    /// Reads `/proc/PID/maps` and `comm`; None if the process is gone.
    pub fn read(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_default();
        let maps = text.lines().filter_map(parse_line).collect();
        Some(ProcessMaps { comm, maps })
    }

    /// Keeps the mappings of `older` that `self` lacks, after its own: a process that is
    /// exiting shows fewer mappings, and a library unloaded since still named the code that
    /// ran there.
    pub fn merge(mut self, older: ProcessMaps) -> ProcessMaps {
        for m in older.maps {
            if !self
                .maps
                .iter()
                .any(|n| n.start == m.start && n.end == m.end && n.path == m.path)
            {
                self.maps.push(m);
            }
        }
        if self.comm.is_empty() {
            self.comm = older.comm;
        }
        self
    }

    /// File-backed mappings.
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    fn find(&self, ip: u64) -> Option<&Mapping> {
        self.maps.iter().find(|m| m.start <= ip && ip < m.end)
    }
}

/// `start-end perms offset dev inode path` for a mapping of a file.
fn parse_line(line: &str) -> Option<Mapping> {
    let mut f = line.split_ascii_whitespace();
    let (range, _perms, offset, _dev, _inode) =
        (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let rest: Vec<&str> = f.collect();
    let path = rest.join(" ");
    if !path.starts_with('/') {
        return None;
    }
    let (path, deleted) = match path.strip_suffix(" (deleted)") {
        Some(p) => (p.to_string(), true),
        None => (path, false),
    };
    let (start, end) = range.split_once('-')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset: u64::from_str_radix(offset, 16).ok()?,
        path: path.into(),
        deleted,
    })
}

/// Names addresses, caching per (file, offset) and per process perf map.
pub struct Symbolizer {
    inner: blazesym::symbolize::Symbolizer,
    cache: HashMap<(PathBuf, u64), String>,
    perf_maps: HashMap<u32, Vec<(u64, u64, String)>>,
    cfi: Cfi,
}

impl Symbolizer {
    /// A symbolizer with an empty cache.
    pub fn new() -> Self {
        Symbolizer {
            inner: blazesym::symbolize::Symbolizer::new(),
            cache: HashMap::new(),
            perf_maps: HashMap::new(),
            cfi: Cfi::default(),
        }
    }

    /// Where the return address of the innermost frame at `ip` is, from the CFI of the file
    /// mapped there (while the process lived).
    pub fn leaf(&mut self, maps: Option<&ProcessMaps>, ip: u64) -> Leaf {
        match maps.and_then(|p| p.find(ip)) {
            Some(m) if !m.deleted => self.cfi.leaf(&m.path, ip - m.start + m.offset),
            _ => Leaf::Unknown,
        }
    }

    /// The name of the code at `ip` in process `pid`: `function`, else `file+0xOFFSET`, else
    /// the JIT symbol of `/tmp/perf-PID.map`, else `[unknown]`.
    pub fn name(&mut self, pid: u32, maps: Option<&ProcessMaps>, ip: u64) -> String {
        if let Some(m) = maps.and_then(|p| p.find(ip)) {
            let off = ip - m.start + m.offset;
            let key = (m.path.clone(), off);
            if let Some(n) = self.cache.get(&key) {
                return n.clone();
            }
            let name = (!m.deleted)
                .then(|| self.elf_name(&m.path, off))
                .flatten()
                .unwrap_or_else(|| {
                    let base = m.path.file_name().unwrap_or_default().to_string_lossy();
                    format!("{base}+{off:#x}")
                });
            self.cache.insert(key, name.clone());
            return name;
        }
        let jit = self
            .perf_maps
            .entry(pid)
            .or_insert_with(|| read_perf_map(pid));
        jit.iter()
            .find(|(start, size, _)| *start <= ip && ip < start + size)
            .map_or_else(|| "[unknown]".into(), |(_, _, n)| n.clone())
    }

    fn elf_name(&self, path: &std::path::Path, off: u64) -> Option<String> {
        let src = Source::Elf(Elf::new(path));
        match self.inner.symbolize_single(&src, Input::FileOffset(off)) {
            Ok(Symbolized::Sym(sym)) => Some(sym.name.to_string()),
            _ => None,
        }
    }
}

/// `/tmp/perf-PID.map`: `START SIZE name` per line, hexadecimal, written by JITs (Java with
/// `-XX:+DumpPerfMapAtExit` or `jcmd PID Compiler.perfmap`, node `--perf-basic-prof`).
fn read_perf_map(pid: u32) -> Vec<(u64, u64, String)> {
    let Ok(text) = std::fs::read_to_string(format!("/tmp/perf-{pid}.map")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            let start = u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
            let size = u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
            Some((start, size, f.next()?.to_string()))
        })
        .collect()
}
