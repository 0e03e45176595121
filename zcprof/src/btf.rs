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
        self.find_member_within(ty, member, NESTING)
    }

    fn find_member_within(&self, ty: &Type, member: &str, depth: u32) -> Option<u32> {
        for m in &ty.members {
            if self.name(m.name) == member {
                return Some(m.bit_offset / 8);
            }
        }
        for m in ty.members.iter().filter(|m| m.name == 0 && depth > 0) {
            if let Some(inner) = self.resolve(m.ty)
                && let Some(off) = self.find_member_within(inner, member, depth - 1)
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
        self.member_type_within(ty, member, NESTING)
    }

    fn member_type_within(&self, ty: &Type, member: &str, depth: u32) -> Option<&Type> {
        for m in &ty.members {
            if self.name(m.name) == member {
                return self.resolve(m.ty);
            }
        }
        for m in ty.members.iter().filter(|m| m.name == 0 && depth > 0) {
            if let Some(inner) = self.resolve(m.ty)
                && let Some(t) = self.member_type_within(inner, member, depth - 1)
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
