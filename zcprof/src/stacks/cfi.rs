//! Where a frameless function keeps its return address: the call frame information
//! (`.eh_frame`) of the code at an address tells the CFA (the caller's stack pointer before
//! the call) as `rsp + N`, so the return address is the word at `rsp + N - 8`.

use std::{collections::HashMap, path::Path, sync::Arc};

use gimli::{BaseAddresses, CfaRule, EhFrame, LittleEndian, UnwindContext, UnwindSection as _};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

/// x86-64's DWARF register number of rsp.
const RSP: gimli::Register = gimli::Register(7);

/// What the CFI says of the innermost frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// The return address is word `n` above the stack pointer.
    Word(usize),
    /// The function has a frame pointer (CFA from rbp): frame-pointer unwinding found its
    /// caller already.
    Framed,
    /// No CFI for the address (or the file is unreadable).
    Unknown,
}

/// One file's `.eh_frame` and what finding an address in it needs.
struct File {
    data: Arc<Vec<u8>>,
    eh_frame: (usize, usize),
    bases: BaseAddresses,
    /// Loadable segments: (file offset, size in the file, virtual address).
    segments: Vec<(u64, u64, u64)>,
}

/// Reads and caches the CFI of files.
#[derive(Default)]
pub struct Cfi {
    files: HashMap<std::path::PathBuf, Option<File>>,
    leaves: HashMap<(std::path::PathBuf, u64), Leaf>,
}

impl Cfi {
    /// Where the return address is when the code at `file_offset` of `path` runs.
    pub fn leaf(&mut self, path: &Path, file_offset: u64) -> Leaf {
        let key = (path.to_path_buf(), file_offset);
        if let Some(l) = self.leaves.get(&key) {
            return *l;
        }
        let file = self
            .files
            .entry(path.to_path_buf())
            .or_insert_with(|| File::read(path));
        let leaf = file.as_ref().map_or(Leaf::Unknown, |f| f.leaf(file_offset));
        self.leaves.insert(key, leaf);
        leaf
    }
}

impl File {
    fn read(path: &Path) -> Option<File> {
        let data = Arc::new(std::fs::read(path).ok()?);
        let obj = object::File::parse(data.as_slice()).ok()?;
        let section = obj.section_by_name(".eh_frame")?;
        let (start, size) = section.file_range()?;
        let mut bases = BaseAddresses::default().set_eh_frame(section.address());
        if let Some(text) = obj.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = obj.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        let segments = obj
            .segments()
            .filter_map(|s| {
                let (off, size) = s.file_range();
                (size > 0).then_some((off, size, s.address()))
            })
            .collect();
        Some(File {
            eh_frame: (start as usize, size as usize),
            bases,
            segments,
            data,
        })
    }

    fn leaf(&self, file_offset: u64) -> Leaf {
        let Some(vaddr) = self
            .segments
            .iter()
            .find(|(off, size, _)| *off <= file_offset && file_offset < off + size)
            .map(|(off, _, addr)| file_offset - off + addr)
        else {
            return Leaf::Unknown;
        };
        let (start, size) = self.eh_frame;
        let Some(bytes) = self.data.get(start..start + size) else {
            return Leaf::Unknown;
        };
        let eh = EhFrame::new(bytes, LittleEndian);
        let mut ctx = Box::new(UnwindContext::new());
        let Ok(row) =
            eh.unwind_info_for_address(&self.bases, &mut ctx, vaddr, EhFrame::cie_from_offset)
        else {
            return Leaf::Unknown;
        };
        match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } if *register == RSP => {
                match usize::try_from(offset - 8) {
                    Ok(b) if b % 8 == 0 => Leaf::Word(b / 8),
                    _ => Leaf::Unknown,
                }
            }
            _ => Leaf::Framed,
        }
    }
}
