//! Byte-weighted user stacks (`--folded`, `--flamegraph`, `--pprof`): reads what the kernel
//! aggregated by stack, remembers the memory maps of the processes while they live, and
//! writes the profiles.
//!
//! The kernel unwinds user stacks by frame pointers. A libc wrapper (`write`, `sendfile`)
//! pushes no frame, so the unwound stack goes from the wrapper straight to its caller's
//! caller. The kernel also keeps the words at the top of the user stack that may be return
//! addresses ([`zcprof_common::StackKey::callers`]); the call frame information of the
//! wrapper's code tells which one is its return address, which is put back here.

mod cfi;
mod pprof;
mod symbols;

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::Write as _,
    path::PathBuf,
};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, StackTraceMap};
use zcprof_common::{Column, NO_STACK, StackBytes, StackKey, Syscall};

pub use self::symbols::ProcessMaps;

/// The kernel's stack maps (see `zcprof_common::MAP_STACKS`).
pub struct StackMaps {
    /// Stack id -> instruction pointers.
    pub traces: StackTraceMap<MapData>,
    /// Bytes and calls by (process, stack, callers, syscall, column), per CPU.
    pub rows: PerCpuHashMap<MapData, StackKey, StackBytes>,
    /// The `[other]` row by column, per CPU.
    pub overflow: PerCpuArray<MapData, StackBytes>,
    /// Rows added, per CPU.
    pub added: PerCpuArray<MapData, u64>,
}

/// One aggregated row, summed over CPUs.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its key.
    pub key: StackKey,
    /// Bytes moved.
    pub bytes: u64,
    /// Calls.
    pub calls: u64,
}

/// The `[other]` row's bytes and calls by column.
pub type Overflow = Vec<(Column, StackBytes)>;

impl StackMaps {
    /// Every row (summed over CPUs) and the `[other]` bytes and calls by column.
    pub fn rows(&self) -> anyhow::Result<(Vec<Row>, Overflow)> {
        let mut rows = Vec::new();
        for item in self.rows.iter() {
            let (key, per_cpu) = item.context("reading the kernel's STACK_BYTES map")?;
            let (bytes, calls) = per_cpu
                .iter()
                .fold((0, 0), |(b, c), v| (b + v.bytes, c + v.calls));
            rows.push(Row { key, bytes, calls });
        }
        let mut other = Vec::new();
        for column in Column::ALL {
            let per_cpu = self
                .overflow
                .get(&(column as u32), 0)
                .context("reading the kernel's STACK_OVERFLOW map")?;
            let (bytes, calls) = per_cpu
                .iter()
                .fold((0, 0), |(b, c), v| (b + v.bytes, c + v.calls));
            if calls > 0 {
                other.push((column, StackBytes { bytes, calls }));
            }
        }
        Ok((rows, other))
    }

    /// The user stack `id`, innermost first.
    fn frames(&self, id: u32) -> Vec<u64> {
        match self.traces.get(&id, 0) {
            Ok(trace) => trace.frames().iter().map(|f| f.ip).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The flame graph of a run in which no data-moving call moved bytes.
const EMPTY_SVG: &str = "<?xml version=\"1.0\" standalone=\"no\"?>\n\
<svg version=\"1.1\" width=\"600\" height=\"40\" xmlns=\"http://www.w3.org/2000/svg\">\
<text x=\"10\" y=\"24\">zcprof: no data-moving call moved bytes</text></svg>\n";

/// How often the memory maps of processes with new stacks are read.
pub const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// The names of the processes of `snap`, by pid.
pub fn comms(snap: &crate::snapshot::Snapshot) -> HashMap<u32, String> {
    snap.processes
        .iter()
        .map(|(k, p)| (k.pid, p.comm.clone()))
        .collect()
}

/// `--folded`, `--flamegraph` and `--pprof` on run and attach.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StackArgs {
    /// Write the user stacks of the calls that moved bytes, weighted by bytes, in the folded
    /// format of flamegraph.pl and inferno: `comm;outer;…;inner;SYSCALL;COLUMN BYTES`.
    /// Keeps zcprof's privileges (it reads the profiled processes' memory maps as they run)
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,
    /// Write the same stacks as an interactive flame graph (SVG), bytes as width
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<PathBuf>,
    /// Write the same stacks as a gzip'd pprof profile (go tool pprof, Pyroscope, Parca) with
    /// the sample types cpu_copied_bytes, zero_copy_bytes, dma_direct_bytes and calls
    #[arg(long, value_name = "FILE.pb.gz")]
    pub pprof: Option<PathBuf>,
}

/// The output files, created before anything is loaded so that a bad path fails first.
pub struct StackOutputs {
    folded: Option<(PathBuf, File)>,
    flamegraph: Option<(PathBuf, File)>,
    pprof: Option<(PathBuf, File)>,
}

impl StackArgs {
    /// Whether any stack output was asked for.
    pub fn any(&self) -> bool {
        self.folded.is_some() || self.flamegraph.is_some() || self.pprof.is_some()
    }

    /// Creates the output files (None when no output was asked for).
    pub fn open(&self) -> anyhow::Result<Option<StackOutputs>> {
        if !self.any() {
            return Ok(None);
        }
        let create = |p: &Option<PathBuf>, what: &str| -> anyhow::Result<_> {
            p.as_ref()
                .map(|p| {
                    File::create(p)
                        .map(|f| (p.clone(), f))
                        .with_context(|| format!("cannot create the {what} file {}", p.display()))
                })
                .transpose()
        };
        Ok(Some(StackOutputs {
            folded: create(&self.folded, "--folded")?,
            flamegraph: create(&self.flamegraph, "--flamegraph")?,
            pprof: create(&self.pprof, "--pprof")?,
        }))
    }
}

/// Remembers, while the profiled processes live, what symbolizing their stacks needs: their
/// memory maps and names.
#[derive(Default)]
pub struct Tracker {
    procs: HashMap<u32, ProcessMaps>,
    /// Rows seen per process at the last look: new rows make its maps be read again (a
    /// library loaded since).
    rows_seen: HashMap<u32, usize>,
    /// The kernel's count of rows added at the last look.
    added: u64,
}

impl Tracker {
    /// Reads the memory maps of the processes with new rows in the kernel's table.
    pub fn poll(&mut self, maps: &StackMaps) {
        let added = maps
            .added
            .get(&0, 0)
            .map_or(u64::MAX, |per_cpu| per_cpu.iter().sum());
        if added == self.added {
            return;
        }
        self.added = added;
        let mut per_process: HashMap<u32, usize> = HashMap::new();
        for key in maps.rows.keys().flatten() {
            *per_process.entry(key.tgid).or_default() += 1;
        }
        for (tgid, n) in per_process {
            if self.rows_seen.get(&tgid) == Some(&n) {
                continue;
            }
            if let Some(m) = ProcessMaps::read(tgid) {
                log::debug!(
                    "stacks: process {tgid}: {n} rows, its memory maps read ({} mappings)",
                    m.len()
                );
                self.rows_seen.insert(tgid, n);
                let m = match self.procs.remove(&tgid) {
                    Some(older) => m.merge(older),
                    None => m,
                };
                self.procs.insert(tgid, m);
            }
        }
    }

    /// Reads the kernel's rows, symbolizes them and writes the outputs. `comms` names the
    /// processes the report knows (with `only`, the only ones written); `title` is the flame
    /// graph's.
    pub fn finish(
        mut self,
        maps: &StackMaps,
        outputs: StackOutputs,
        comms: &HashMap<u32, String>,
        only: bool,
        title: &str,
    ) -> anyhow::Result<()> {
        self.poll(maps);
        let (mut rows, other) = maps.rows()?;
        if only {
            rows.retain(|r| comms.contains_key(&r.key.tgid));
        }
        let mut symbolizer = symbols::Symbolizer::new();
        let mut stacks: BTreeMap<Vec<String>, [u64; 2]> = BTreeMap::new();
        let mut frames_of: HashMap<u32, Vec<u64>> = HashMap::new();
        for row in &rows {
            let k = row.key;
            let comm = comms
                .get(&k.tgid)
                .cloned()
                .or_else(|| self.procs.get(&k.tgid).map(|p| p.comm.clone()))
                .unwrap_or_else(|| format!("pid {}", k.tgid));
            let mut names = vec![comm];
            if k.stack_id == NO_STACK {
                names.push("[unknown stack]".into());
            } else {
                let ips = frames_of
                    .entry(k.stack_id)
                    .or_insert_with(|| maps.frames(k.stack_id))
                    .clone();
                let procs = self.procs.get(&k.tgid);
                let leaf = match ips.first() {
                    Some(ip) => symbolizer.leaf(procs, *ip),
                    None => cfi::Leaf::Unknown,
                };
                let ips = with_caller(&ips, &k.callers, leaf);
                let mut inner_first = Vec::with_capacity(ips.len());
                for (i, ip) in ips.iter().enumerate() {
                    // A return address's call is the instruction before it.
                    let lookup = if i == 0 { *ip } else { ip.saturating_sub(1) };
                    inner_first.push(symbolizer.name(k.tgid, procs, lookup));
                }
                names.extend(inner_first.into_iter().rev());
            }
            names.push(syscall_name(k.syscall));
            names.push(column_name(k.column));
            let e = stacks.entry(names).or_default();
            e[0] += row.bytes;
            e[1] += row.calls;
        }
        for (column, b) in other {
            let names = vec!["[other]".into(), "[other]".into(), column.name().into()];
            let e = stacks.entry(names).or_default();
            e[0] += b.bytes;
            e[1] += b.calls;
        }
        let folded: Vec<String> = stacks
            .iter()
            .filter(|(_, v)| v[0] > 0)
            .map(|(names, v)| format!("{} {}", names.join(";"), v[0]))
            .collect();
        if let Some((path, mut file)) = outputs.folded {
            let mut text = folded.join("\n");
            text.push('\n');
            file.write_all(text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some((path, mut file)) = outputs.flamegraph {
            let written = if folded.is_empty() {
                // inferno refuses an empty profile: say so in an SVG of our own.
                file.write_all(EMPTY_SVG.as_bytes())
            } else {
                let mut palette = column_colours();
                let mut opt = inferno::flamegraph::Options::default();
                opt.palette_map = Some(&mut palette);
                opt.title = format!("zcprof: {title}");
                opt.subtitle = Some(totals(&stacks));
                opt.count_name = "bytes".into();
                let lines = folded.iter().map(String::as_str);
                inferno::flamegraph::from_lines(&mut opt, lines, std::io::BufWriter::new(file))
            };
            written.with_context(|| format!("writing the flame graph {}", path.display()))?;
        }
        if let Some((path, file)) = outputs.pprof {
            pprof::write(&stacks, file).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// `ips` (innermost first) with the return address into the innermost function's caller put
/// back after it: the candidate word `leaf` names, or without CFI the first candidate;
/// unless the innermost function has a frame, or the unwound stack already has it.
fn with_caller(ips: &[u64], callers: &[u64], leaf: cfi::Leaf) -> Vec<u64> {
    let mut out = ips.to_vec();
    let caller = match leaf {
        cfi::Leaf::Word(n) => callers.get(n).copied().unwrap_or(0),
        cfi::Leaf::Framed => 0,
        cfi::Leaf::Unknown => callers.iter().copied().find(|&w| w != 0).unwrap_or(0),
    };
    if caller != 0 && !ips.is_empty() && ips.get(1) != Some(&caller) {
        out.insert(1, caller);
    }
    log::debug!("leaf {leaf:?}, candidates {callers:x?}: caller {caller:#x}");
    out
}

fn syscall_name(v: u16) -> String {
    Syscall::from_u16(v).map_or_else(|| format!("syscall {v}"), |s| s.name().into())
}

fn column_name(v: u16) -> String {
    Column::from_u16(v).map_or_else(|| format!("column {v}"), |c| c.name().into())
}

/// The columns' frames in colours of their own: the CPU's copies red, zero copy green, DMA
/// blue.
fn column_colours() -> inferno::flamegraph::color::PaletteMap {
    use inferno::flamegraph::color::Color;
    let mut map = inferno::flamegraph::color::PaletteMap::default();
    for column in Column::ALL {
        let colour = match column {
            Column::ZeroCopy => Color {
                r: 26,
                g: 152,
                b: 80,
            },
            Column::DmaDirect => Color {
                r: 69,
                g: 117,
                b: 180,
            },
            c if Column::CPU_COPIES.contains(&c) => Color {
                r: 215,
                g: 48,
                b: 39,
            },
            _ => continue,
        };
        map.insert(column.name(), colour);
    }
    map
}

/// The totals by column, for the flame graph's subtitle.
fn totals(stacks: &BTreeMap<Vec<String>, [u64; 2]>) -> String {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for (names, v) in stacks {
        if let Some(c) = names.last() {
            *by.entry(c.as_str()).or_default() += v[0];
        }
    }
    by.iter()
        .map(|(c, b)| format!("{c}: {b} bytes"))
        .collect::<Vec<_>>()
        .join(", ")
}
