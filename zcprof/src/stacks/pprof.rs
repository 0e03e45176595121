//! The pprof profile (github.com/google/pprof, proto/profile.proto), written with prost: the
//! messages below are profile.proto's, field numbers and types as there, limited to the
//! fields zcprof fills.

use std::{collections::BTreeMap, collections::HashMap, io::Write as _};

use flate2::{Compression, write::GzEncoder};
use prost::Message;
use zcprof_common::Column;

/// `message Profile`.
#[derive(Clone, PartialEq, Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "14")]
    default_sample_type: i64,
}

/// `message ValueType`.
#[derive(Clone, PartialEq, Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

/// `message Sample`.
#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
}

/// `message Location`.
#[derive(Clone, PartialEq, Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

/// `message Line`.
#[derive(Clone, PartialEq, Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
}

/// `message Function`.
#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
}

/// The sample types, in order: which value of a sample a column's bytes go to.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("cpu_copied_bytes", "bytes"),
    ("zero_copy_bytes", "bytes"),
    ("dma_direct_bytes", "bytes"),
    ("calls", "count"),
];

#[derive(Default)]
struct Builder {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    locations: HashMap<String, u64>,
    profile: Profile,
}

impl Builder {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(i) = self.string_ids.get(s) {
            return *i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), i);
        i
    }

    /// One location (and function) per frame name.
    fn location(&mut self, name: &str) -> u64 {
        if let Some(id) = self.locations.get(name) {
            return *id;
        }
        let id = self.locations.len() as u64 + 1;
        let name_id = self.string(name);
        self.profile.function.push(Function { id, name: name_id });
        self.profile.location.push(Location {
            id,
            line: vec![Line { function_id: id }],
        });
        self.locations.insert(name.to_string(), id);
        id
    }
}

/// Writes `stacks` (frame names outermost first, ending in syscall and column: bytes,
/// calls) as a gzip'd profile.
pub fn write(stacks: &BTreeMap<Vec<String>, [u64; 2]>, file: std::fs::File) -> std::io::Result<()> {
    let mut b = Builder::default();
    b.string("");
    for (t, unit) in SAMPLE_TYPES {
        let vt = ValueType {
            r#type: b.string(t),
            unit: b.string(unit),
        };
        b.profile.sample_type.push(vt);
    }
    for (names, [bytes, calls]) in stacks {
        let column = names
            .last()
            .and_then(|c| Column::ALL.iter().find(|x| x.name() == c));
        let slot = match column {
            Some(c) if Column::CPU_COPIES.contains(c) => Some(0),
            Some(Column::ZeroCopy) => Some(1),
            Some(Column::DmaDirect) => Some(2),
            _ => None,
        };
        let mut value = vec![0i64; SAMPLE_TYPES.len()];
        if let Some(s) = slot {
            value[s] = *bytes as i64;
        }
        value[3] = *calls as i64;
        // pprof lists a sample's locations innermost first.
        let location_id = names.iter().rev().map(|n| b.location(n)).collect();
        b.profile.sample.push(Sample { location_id, value });
    }
    b.profile.string_table = std::mem::take(&mut b.strings);
    let mut gz = GzEncoder::new(std::io::BufWriter::new(file), Compression::default());
    gz.write_all(&b.profile.encode_to_vec())?;
    gz.finish()?.flush()
}
