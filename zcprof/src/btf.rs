//! Struct member offsets and enum values from the running kernel's BTF
//! (/sys/kernel/btf/vmlinux).
//!
//! Written here rather than taken from a crate: aya parses BTF but keeps its type walk
//! private, and the one published BTF crate that exposes it is LGPL. The subset needed is
//! small: walk struct/union members (through anonymous ones) and read enum values.

use std::{collections::HashMap, path::Path};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Errors reading or querying BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read kernel BTF at {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not BTF or is truncated.
    #[error("kernel BTF at {path} is malformed: {what}")]
    Malformed { path: String, what: &'static str },
    /// A struct the profiler needs is not in this kernel.
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    /// A member the profiler needs is not in that struct.
    #[error("kernel BTF: struct {0} has no member {1}")]
    NoMember(String, String),
    /// An enum value the profiler needs is not in this kernel.
    #[error("kernel BTF has no enumerator {0}")]
    NoEnumerator(String),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// For modifiers and typedefs: the type referred to.
    ty: u32,
    members: Vec<Member>,
    /// For enums: (name, value).
    enumerators: Vec<(u32, i64)>,
    /// For function prototypes: the parameters' types.
    params: Vec<u32>,
}

/// A parsed BTF blob, enough to answer "offset of member M in struct S".
pub struct Btf {
    strings: Vec<u8>,
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

/// Most levels of anonymous structs and unions searched for a member (the kernel's deepest
/// is a handful; a corrupt file could make one contain itself).
const NESTING: u32 = 16;

/// The anonymous members' types one member lookup has searched, with the depth left then.
///
/// A type searched once without finding the member does not have it, wherever it is met
/// again: searching each type once (again only with more depth left) keeps a lookup to
/// types × [`NESTING`] visits. Without it, a corrupt file whose structs have several anonymous
/// members of their own type made a lookup of a missing member take members ^ [`NESTING`].
struct Searched(HashMap<u32, u32>);

impl Searched {
    fn new() -> Self {
        Searched(HashMap::new())
    }

    /// Whether type `id` was searched already with at least `depth` left; notes it if not.
    fn again(&mut self, id: u32, depth: u32) -> bool {
        match self.0.get(&id) {
            Some(&d) if d >= depth => true,
            _ => {
                self.0.insert(id, depth);
                false
            }
        }
    }
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl Btf {
    /// Parses the running kernel's BTF.
    pub fn from_kernel() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Parses a BTF file (little-endian, as on x86-64).
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data).map_err(|what| BtfError::Malformed {
            path: path.display().to_string(),
            what,
        })
    }

    fn parse(data: &[u8]) -> Result<Self, &'static str> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err("bad magic (not little-endian BTF)");
        }
        let field = |i: usize| u32_at(data, 8 + 4 * i).ok_or("truncated header");
        let hdr_len = u32_at(data, 4).ok_or("truncated header")? as usize;
        let (type_off, type_len, str_off, str_len) = (
            field(0)? as usize,
            field(1)? as usize,
            field(2)? as usize,
            field(3)? as usize,
        );
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or("type section out of bounds")?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or("string section out of bounds")?
            .to_vec();

        // Type id 0 is `void`.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            ty: 0,
            members: Vec::new(),
            enumerators: Vec::new(),
            params: Vec::new(),
        }];
        let mut at = 0usize;
        let rd = |at: usize| u32_at(types_data, at).ok_or("truncated type");
        while at < types_data.len() {
            let name = rd(at)?;
            let info = rd(at + 4)?;
            let size_or_type = rd(at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut t = Type {
                name,
                kind,
                ty: size_or_type,
                members: Vec::new(),
                enumerators: Vec::new(),
                params: Vec::new(),
            };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = rd(at + 8)?;
                        t.members.push(Member {
                            name: rd(at)?,
                            ty: rd(at + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                        at += 12;
                    }
                }
                KIND_ENUM => {
                    for _ in 0..vlen {
                        t.enumerators.push((rd(at)?, rd(at + 4)? as i32 as i64));
                        at += 8;
                    }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let v = (rd(at + 4)? as u64) | ((rd(at + 8)? as u64) << 32);
                        t.enumerators.push((rd(at)?, v as i64));
                        at += 12;
                    }
                }
                KIND_FUNC_PROTO => {
                    for _ in 0..vlen {
                        t.params.push(rd(at + 4)?);
                        at += 8;
                    }
                }
                KIND_DATASEC => at += 12 * vlen,
                0..=KIND_TYPE_TAG => {}
                _ => return Err("unknown type kind"),
            }
            types.push(t);
        }
        let mut btf = Btf {
            strings,
            types,
            structs_by_name: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            // The first definition with members wins over forward declarations.
            if (t.kind == KIND_STRUCT || t.kind == KIND_UNION) && !t.members.is_empty() {
                let name = btf.name(t.name).to_string();
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.ty
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset of `member` in struct or union `ty`, searching anonymous members too (at
    /// most [`NESTING`] deep: a corrupt file may make an anonymous member contain itself).
    fn find_member(&self, ty: &Type, member: &str) -> Option<u32> {
        self.find_member_within(ty, member, NESTING, &mut Searched::new())
    }

    fn find_member_within(
        &self,
        ty: &Type,
        member: &str,
        depth: u32,
        searched: &mut Searched,
    ) -> Option<u32> {
        for m in &ty.members {
            if self.name(m.name) == member {
                return Some(m.bit_offset / 8);
            }
        }
        for m in ty.members.iter().filter(|m| m.name == 0 && depth > 0) {
            if searched.again(m.ty, depth) {
                continue;
            }
            if let Some(inner) = self.resolve(m.ty)
                && let Some(off) = self.find_member_within(inner, member, depth - 1, searched)
            {
                return Some((m.bit_offset / 8).saturating_add(off));
            }
        }
        None
    }

    /// Byte offset of a member path such as `__sk_common.skc_daddr` in struct `name`.
    pub fn offset(&self, name: &str, path: &str) -> Result<u64, BtfError> {
        let id = *self
            .structs_by_name
            .get(name)
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))?;
        let mut ty = &self.types[id as usize];
        let mut total = 0u64;
        let no_member = || BtfError::NoMember(name.to_string(), path.to_string());
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let off = self.find_member(ty, part).ok_or_else(no_member)?;
            total = total.saturating_add(off as u64);
            if parts.peek().is_some() {
                let m = self.member_type(ty, part).ok_or_else(no_member)?;
                ty = m;
            }
        }
        Ok(total)
    }

    fn member_type(&self, ty: &Type, member: &str) -> Option<&Type> {
        self.member_type_within(ty, member, NESTING, &mut Searched::new())
    }

    fn member_type_within(
        &self,
        ty: &Type,
        member: &str,
        depth: u32,
        searched: &mut Searched,
    ) -> Option<&Type> {
        for m in &ty.members {
            if self.name(m.name) == member {
                return self.resolve(m.ty);
            }
        }
        for m in ty.members.iter().filter(|m| m.name == 0 && depth > 0) {
            if searched.again(m.ty, depth) {
                continue;
            }
            if let Some(inner) = self.resolve(m.ty)
                && let Some(t) = self.member_type_within(inner, member, depth - 1, searched)
            {
                return Some(t);
            }
        }
        None
    }

    /// The argument types of tracepoint `name` as the kernel passes them to a raw or BTF
    /// tracepoint program (the tracer's own `void *__data` left out), written as C types
    /// (`struct task_struct *`, `bool`, `u64`); `None` if this kernel has no such tracepoint.
    /// Read from the `btf_trace_<name>` typedef every tracepoint declares, which is what the
    /// kernel checks a program's argument reads against.
    pub fn tracepoint_args(&self, name: &str) -> Option<Vec<String>> {
        let typedef = format!("btf_trace_{name}");
        let t = self
            .types
            .iter()
            .find(|t| t.kind == KIND_TYPEDEF && self.name(t.name) == typedef)?;
        let ptr = self.types.get(t.ty as usize)?;
        let proto = self.resolve(if ptr.kind == KIND_PTR { ptr.ty } else { t.ty })?;
        if proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        Some(
            proto
                .params
                .iter()
                .skip(1)
                .map(|&ty| self.type_name(ty, 0))
                .collect(),
        )
    }

    /// Type `id` written as C (enough to tell tracepoint prototypes apart).
    fn type_name(&self, id: u32, depth: u32) -> String {
        let Some(t) = self.types.get(id as usize) else {
            return "?".into();
        };
        if id == 0 {
            return "void".into();
        }
        if depth > 16 {
            return "?".into();
        }
        match t.kind {
            KIND_PTR => format!("{} *", self.type_name(t.ty, depth + 1)),
            KIND_STRUCT => format!("struct {}", self.name(t.name)),
            KIND_UNION => format!("union {}", self.name(t.name)),
            KIND_ENUM | KIND_ENUM64 => format!("enum {}", self.name(t.name)),
            KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => {
                self.type_name(t.ty, depth + 1)
            }
            _ => self.name(t.name).to_string(),
        }
    }

    /// The value of enumerator `name` in any enum.
    pub fn enumerator(&self, name: &str) -> Result<i64, BtfError> {
        self.types
            .iter()
            .filter(|t| t.kind == KIND_ENUM || t.kind == KIND_ENUM64)
            .flat_map(|t| t.enumerators.iter())
            .find(|(n, _)| self.name(*n) == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| BtfError::NoEnumerator(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // These read the running kernel's BTF: the values are the kernel's, checked against the
    // layouts the kernel documents (uapi structs whose offsets are ABI) and pahole's output.
    #[test]
    fn uapi_offsets_match_their_abi() {
        let Ok(btf) = Btf::from_kernel() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no kernel BTF in CI: {VMLINUX_BTF}"
            );
            return;
        };
        // struct io_uring_cqe { __u64 user_data; __s32 res; __u32 flags; } is uapi.
        assert_eq!(btf.offset("io_uring_cqe", "res").unwrap(), 8);
        assert_eq!(btf.offset("io_uring_cqe", "flags").unwrap(), 12);
        // struct pt_regs on x86-64: orig_ax is the 16th u64.
        assert_eq!(btf.offset("pt_regs", "orig_ax").unwrap(), 120);
        // skc_daddr is the first word of sock_common, reached through an anonymous union.
        assert_eq!(btf.offset("sock", "__sk_common.skc_daddr").unwrap(), 0);
        assert!(btf.offset("task_struct", "nvcsw").unwrap() > 0);
        assert!(matches!(
            btf.offset("task_struct", "no_such_member"),
            Err(BtfError::NoMember(..))
        ));
        assert!(matches!(
            btf.offset("no_such_struct", "x"),
            Err(BtfError::NoStruct(_))
        ));
        assert_eq!(btf.enumerator("SOCK_ZEROCOPY").unwrap(), 18);
    }

    // The prototypes are the kernel's (include/trace/events/sched.h): stable since 4.x.
    #[test]
    fn tracepoint_prototypes_come_from_btf() {
        let Ok(btf) = Btf::from_kernel() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "no kernel BTF in CI: {VMLINUX_BTF}"
            );
            return;
        };
        assert_eq!(
            btf.tracepoint_args("sched_process_fork").unwrap(),
            ["struct task_struct *", "struct task_struct *"]
        );
        let exit = btf.tracepoint_args("sys_exit").unwrap();
        assert_eq!(exit, ["struct pt_regs *", "long int"]);
        assert!(btf.tracepoint_args("no_such_tracepoint").is_none());
    }

    /// A truncated or corrupted file is an error or a usable (if wrong) table, never a panic
    /// or a hang: the real file cut at many points, and with bytes overwritten at many places.
    #[test]
    fn corrupt_files_never_panic() {
        let Ok(data) = std::fs::read(VMLINUX_BTF) else {
            assert!(std::env::var_os("CI").is_none(), "no kernel BTF in CI");
            return;
        };
        let probe = |bytes: &[u8]| {
            if let Ok(btf) = Btf::parse(bytes) {
                let _ = btf.offset("task_struct", "nvcsw");
                let _ = btf.offset("sock", "__sk_common.skc_daddr");
                let _ = btf.enumerator("SOCK_ZEROCOPY");
                let _ = btf.tracepoint_args("sched_switch");
            }
        };
        for cut in [
            0,
            1,
            2,
            23,
            24,
            25,
            31,
            32,
            100,
            4096,
            data.len() / 3,
            data.len() - 1,
        ] {
            probe(&data[..cut.min(data.len())]);
            assert!(Btf::parse(&data[..cut.min(data.len() - 1)]).is_err() || cut > 24);
        }
        // A fixed pseudo-random walk (xorshift) over the header and the type section.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..24 {
            let mut bytes = data.clone();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % bytes.len().min(1 << 20);
                bytes[at] = (x >> 32) as u8;
            }
            probe(&bytes);
        }
    }
}

/// Fuzz runs of the reader: random BTF files built type by type, and the running kernel's file
/// with bytes overwritten, words changed and sections cut. Every file must parse to an error
/// or to a table whose queries return, within a bound, without panicking.
#[cfg(test)]
mod fuzz {
    use std::{
        sync::{
            atomic::{AtomicU64, Ordering},
            mpsc,
        },
        time::Duration,
    };

    use proptest::{prelude::*, sample::Index};

    use super::*;
    use crate::fuzz;

    /// The longest the kernel's file may take to parse and answer the probe's queries (a
    /// debug build takes well under a second).
    const KERNEL_LIMIT: Duration = Duration::from_secs(10);
    /// The same for a generated file of a few hundred bytes.
    const SMALL_LIMIT: Duration = Duration::from_secs(1);

    /// Names the probe asks for, and what a random file's name offsets point at.
    const STRINGS: &[&str] = &[
        "",
        "task_struct",
        "nvcsw",
        "sock",
        "__sk_common",
        "skc_daddr",
        "SOCK_ZEROCOPY",
        "btf_trace_sched_switch",
        "int",
    ];

    /// Queries a parsed file as zcprof does.
    fn query(btf: &Btf) {
        let _ = btf.offset("task_struct", "nvcsw");
        let _ = btf.offset("task_struct", "no_such_member");
        let _ = btf.offset("sock", "__sk_common.skc_daddr");
        let _ = btf.offset("sock", "__sk_common.no_such_member");
        let _ = btf.enumerator("SOCK_ZEROCOPY");
        let _ = btf.tracepoint_args("sched_switch");
    }

    /// Parses and queries `bytes` on a thread of its own: whether it parsed (or was refused as
    /// malformed), or the panic or the run longer than `limit` (a hung thread is left behind;
    /// the test fails anyway).
    fn probe_within(bytes: Vec<u8>, limit: Duration) -> Result<bool, String> {
        let (done, finished) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            let parsed = Btf::parse(&bytes).map(|btf| query(&btf)).is_ok();
            let _ = done.send(parsed);
        });
        match finished.recv_timeout(limit) {
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("no answer within {limit:?}")),
            Ok(parsed) => Ok(parsed),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(worker.join().map_or_else(
                |p| {
                    let what = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    format!("panicked: {what}")
                },
                |()| "ended without an answer".to_string(),
            )),
        }
    }

    /// A BTF file: header, then types, then strings.
    fn file(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for word in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend(word.to_le_bytes());
        }
        b.extend(types);
        b.extend(strings);
        b
    }

    /// [`STRINGS`] as a string section, and where each one starts.
    fn string_section() -> (Vec<u8>, Vec<u32>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for s in STRINGS {
            starts.push(bytes.len() as u32);
            bytes.extend(s.as_bytes());
            bytes.push(0);
        }
        (bytes, starts)
    }

    fn words(out: &mut Vec<u8>, ws: &[u32]) {
        for w in ws {
            out.extend(w.to_le_bytes());
        }
    }

    /// One type of a random file: kind, name, the word after `info`, and the words that
    /// follow (members, enumerators, parameters), with `vlen` free to disagree with them.
    #[derive(Debug, Clone)]
    struct RawType {
        kind: u32,
        kind_flag: bool,
        /// `None` is anonymous (name offset 0).
        name: Option<Index>,
        vlen: Option<u16>,
        size_or_type: u32,
        /// Triples (name, type, offset) for members; pairs are taken as needed.
        items: Vec<(Option<Index>, u32, u32)>,
    }

    fn raw_type() -> impl Strategy<Value = RawType> {
        (
            prop_oneof![
                // Struct and union, the kinds the walk recurses through, most often.
                6 => prop_oneof![Just(KIND_STRUCT), Just(KIND_UNION)],
                4 => prop_oneof![
                    Just(KIND_TYPEDEF),
                    Just(KIND_PTR),
                    Just(KIND_CONST),
                    Just(KIND_FUNC_PROTO),
                    Just(KIND_ENUM),
                    Just(KIND_ENUM64),
                    Just(KIND_INT),
                    Just(KIND_ARRAY),
                    Just(KIND_DATASEC),
                ],
                1 => 0u32..32,
            ],
            any::<bool>(),
            name(),
            prop_oneof![4 => Just(None), 1 => any::<u16>().prop_map(Some)],
            // Type ids mostly among the file's own (a dozen), so that cycles are common.
            prop_oneof![4 => 0u32..14, 1 => any::<u32>()],
            prop::collection::vec(
                (
                    name(),
                    prop_oneof![4 => 0u32..14, 1 => any::<u32>()],
                    any::<u32>(),
                ),
                0..8,
            ),
        )
            .prop_map(
                |(kind, kind_flag, name, vlen, size_or_type, items)| RawType {
                    kind,
                    kind_flag,
                    name,
                    vlen,
                    size_or_type,
                    items,
                },
            )
    }

    /// A name: anonymous members are what the walk recurses into, so a third are.
    fn name() -> impl Strategy<Value = Option<Index>> {
        prop_oneof![1 => Just(None), 2 => any::<Index>().prop_map(Some)]
    }

    fn encode(types: &[RawType], cut: Option<Index>) -> Vec<u8> {
        let (strings, starts) = string_section();
        let mut section = Vec::new();
        for t in types {
            let name =
                |ix: &Option<Index>| ix.as_ref().map_or(0, |ix| starts[ix.index(starts.len())]);
            let vlen = u32::from(t.vlen.unwrap_or(t.items.len() as u16));
            let info = (u32::from(t.kind_flag) << 31) | ((t.kind & 0x1f) << 24) | vlen;
            words(&mut section, &[name(&t.name), info, t.size_or_type]);
            match t.kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => words(&mut section, &[0]),
                KIND_ARRAY => words(&mut section, &[1, 1, 1]),
                KIND_STRUCT | KIND_UNION | KIND_ENUM64 | KIND_DATASEC => {
                    for (n, ty, off) in &t.items {
                        words(&mut section, &[name(n), *ty, *off]);
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => {
                    for (n, ty, _) in &t.items {
                        words(&mut section, &[name(n), *ty]);
                    }
                }
                _ => {}
            }
        }
        let mut bytes = file(&section, &strings);
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len() + 1));
        }
        bytes
    }

    /// A struct whose anonymous members are all itself: every lookup of a missing member
    /// used to search each of them to the nesting limit, `members ^ NESTING` visits.
    #[test]
    fn self_containing_anonymous_members_are_searched_once() {
        let (strings, starts) = string_section();
        let mut section = Vec::new();
        // Type 1: struct task_struct { <12 anonymous members of type 1>; int nvcsw; }.
        words(&mut section, &[starts[1], (KIND_STRUCT << 24) | 13, 8]);
        for _ in 0..12 {
            words(&mut section, &[0, 1, 0]);
        }
        words(&mut section, &[starts[2], 2, 64]);
        // Type 2: int.
        words(&mut section, &[starts[8], KIND_INT << 24, 4, 32]);
        let btf = Btf::parse(&file(&section, &strings)).unwrap();
        assert_eq!(btf.offset("task_struct", "nvcsw").unwrap(), 8);
        let bytes = file(&section, &strings);
        assert!(probe_within(bytes, SMALL_LIMIT).unwrap());
    }

    #[test]
    fn fuzz_btf_generated() {
        let strategy = (
            prop::collection::vec(raw_type(), 1..12),
            prop_oneof![4 => Just(None), 1 => any::<Index>().prop_map(Some)],
        );
        let parsed = AtomicU64::new(0);
        let ran = fuzz::run("btf-generated", 2000, strategy, |(types, cut)| {
            let ok = probe_within(encode(&types, cut), SMALL_LIMIT).map_err(TestCaseError::fail)?;
            parsed.fetch_add(u64::from(ok), Ordering::Relaxed);
            Ok(())
        });
        println!(
            "fuzz btf-generated: {} of {} files parsed",
            parsed.load(Ordering::Relaxed),
            ran.executions
        );
    }

    /// A change to the kernel's file: where in it (header, types or strings, as a fraction
    /// of the section) and what.
    #[derive(Debug, Clone)]
    enum Change {
        /// A header word (0: magic and version, 1: header length, then the section offsets
        /// and lengths).
        Header { word: usize, value: u32 },
        /// An aligned word of the type section, so that ids, lengths and kinds change.
        TypeWord { at: Index, value: u32 },
        /// Any byte.
        Byte { at: Index, value: u8 },
        /// The file cut short.
        Cut { at: Index },
    }

    fn word_value() -> impl Strategy<Value = u32> {
        prop_oneof![
            Just(0u32),
            Just(1),
            Just(u32::MAX),
            Just(0xffff),
            Just(0x8000_0000),
            0u32..200_000,
            any::<u32>(),
        ]
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            1 => (0usize..6, word_value()).prop_map(|(word, value)| Change::Header { word, value }),
            6 => (any::<Index>(), word_value()).prop_map(|(at, value)| Change::TypeWord { at, value }),
            3 => (any::<Index>(), any::<u8>()).prop_map(|(at, value)| Change::Byte { at, value }),
            1 => any::<Index>().prop_map(|at| Change::Cut { at }),
        ]
    }

    fn apply(data: &[u8], changes: &[Change]) -> Vec<u8> {
        let mut bytes = data.to_vec();
        // The type section as the unchanged header places it.
        let hdr = u32_at(data, 4).unwrap_or(24) as usize;
        let types_at = hdr + u32_at(data, 8).unwrap_or(0) as usize;
        let types_len = (u32_at(data, 12).unwrap_or(0) as usize / 4).max(1);
        for c in changes {
            match *c {
                Change::Header { word, value } => {
                    let at = 4 * word;
                    if let Some(w) = bytes.get_mut(at..at + 4) {
                        w.copy_from_slice(&value.to_le_bytes());
                    }
                }
                Change::TypeWord { ref at, value } => {
                    let at = types_at + 4 * at.index(types_len);
                    if let Some(w) = bytes.get_mut(at..at + 4) {
                        w.copy_from_slice(&value.to_le_bytes());
                    }
                }
                Change::Byte { ref at, value } if !bytes.is_empty() => {
                    let at = at.index(bytes.len());
                    bytes[at] = value;
                }
                Change::Cut { ref at } => bytes.truncate(at.index(bytes.len() + 1)),
                Change::Byte { .. } => {}
            }
        }
        bytes
    }

    #[test]
    fn fuzz_btf_kernel_file() {
        let Ok(data) = std::fs::read(VMLINUX_BTF) else {
            assert!(std::env::var_os("CI").is_none(), "no kernel BTF in CI");
            return;
        };
        let strategy = prop::collection::vec(change(), 1..8);
        let parsed = AtomicU64::new(0);
        let ran = fuzz::run("btf-kernel-file", 100, strategy, |changes| {
            let ok =
                probe_within(apply(&data, &changes), KERNEL_LIMIT).map_err(TestCaseError::fail)?;
            parsed.fetch_add(u64::from(ok), Ordering::Relaxed);
            Ok(())
        });
        println!(
            "fuzz btf-kernel-file: {} of {} files parsed",
            parsed.load(Ordering::Relaxed),
            ran.executions
        );
    }
}
