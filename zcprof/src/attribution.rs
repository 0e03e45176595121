//! `--by-file` and `--by-peer`: which files and which sockets the bytes went through, per
//! process and ledger column, from what the kernel counted and named (`loader::ObjectCounts`).
//! A file's path is its name's components as the kernel read them, below the mount point of
//! its file system (from /proc/self/mountinfo); a socket is its protocol and its local and peer
//! addresses as they were when it first moved bytes.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use comfy_table::{Cell as TCell, CellAlignment, Table, presets::UTF8_BORDERS_ONLY};
use serde_json::{Value, json};
use zcprof_common::{Column, FdKind, NAME_PART_BYTES, ObjectBytes, ObjectId, ObjectName};

use crate::{loader::ObjectCounts, report::bytes as human};

/// What to attribute bytes to (run, attach).
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct AttributionArgs {
    /// Also list the files the bytes were read from or written to, per column (top --top N):
    /// read/write, sendfile/splice sources and destinations, mmap page faults, io_uring
    #[arg(long)]
    pub by_file: bool,
    /// Also list the sockets the bytes went through, per column (top --top N): protocol,
    /// local and peer address and port (AF_UNIX as [unix])
    #[arg(long)]
    pub by_peer: bool,
    /// Objects the kernel attributes bytes to before the rest goes to [other] (tests make it
    /// small)
    #[arg(long, hide = true, value_name = "N", default_value_t = zcprof_common::MAX_OBJECTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_objects: u32,
}

impl AttributionArgs {
    /// Whether the kernel must attribute at all.
    pub fn any(self) -> bool {
        self.by_file || self.by_peer
    }

    /// Entries of the kernel's attribution tables: none unless asked for.
    pub fn objects(self) -> Option<u32> {
        self.any().then_some(self.max_objects)
    }
}

/// One row: a process's bytes through one object in one column.
#[derive(Debug, Clone)]
struct Row {
    pid: u32,
    column: Column,
    counts: ObjectBytes,
    /// The path, or `[socket]`-like text for what is not a file.
    what: What,
}

#[derive(Debug, Clone)]
enum What {
    File {
        path: String,
        id: ObjectId,
    },
    Peer {
        protocol: String,
        local: String,
        peer: String,
    },
}

/// Device numbers as the kernel keeps them in `s_dev`: 12 bits of major above 20 of minor.
fn dev_text(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xf_ffff)
}

/// Mount points by device (`MAJOR << 20 | MINOR`), where the file system's root is mounted
/// (the shortest such mount point when there are several).
fn mount_points() -> BTreeMap<u32, String> {
    let mut out: BTreeMap<u32, String> = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return out;
    };
    for line in text.lines() {
        // id parent major:minor root mount-point options ...
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 5 || f[3] != "/" {
            continue;
        }
        let Some((major, minor)) = f[2].split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            continue;
        };
        let point = f[4].replace("\\040", " ");
        let dev = major << 20 | minor;
        if out.get(&dev).is_none_or(|p| point.len() < p.len()) {
            out.insert(dev, point);
        }
    }
    out
}

fn part(p: &[u8; NAME_PART_BYTES]) -> &str {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    std::str::from_utf8(&p[..end]).unwrap_or("?")
}

/// A file's path from the kernel's name components, or `dev:ino` when it has none.
fn path(id: ObjectId, name: Option<&ObjectName>, mounts: &BTreeMap<u32, String>) -> String {
    let unknown = || format!("{}:{}", dev_text(id.dev), id.ino);
    let Some(name) = name else {
        return unknown();
    };
    let parts: Vec<&str> = name
        .parts
        .iter()
        .map(part)
        .take_while(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return unknown();
    }
    let at_root = parts.last() == Some(&"/");
    let below: Vec<&str> = parts.iter().rev().filter(|p| **p != "/").copied().collect();
    let prefix = match (at_root, mounts.get(&id.dev)) {
        (true, Some(m)) if m != "/" => m.clone(),
        (true, _) => String::new(),
        // Deeper than the kernel names: the start is missing.
        (false, _) => "…".into(),
    };
    format!("{prefix}/{}", below.join("/"))
}

/// `addr:port` of a socket's side.
fn endpoint(family: u16, addr: &[u8; 16], port: u16) -> String {
    match family {
        2 => format!(
            "{}:{port}",
            Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])
        ),
        10 => format!("[{}]:{port}", Ipv6Addr::from(*addr)),
        _ => String::new(),
    }
}

fn protocol(name: &ObjectName) -> String {
    let ty = match name.sock_type {
        1 => "stream",
        2 => "dgram",
        5 => "seqpacket",
        3 => "raw",
        _ => "other",
    };
    match (name.family, name.sock_type) {
        (2, 1) => "tcp".into(),
        (10, 1) => "tcp6".into(),
        (2, 2) => "udp".into(),
        (10, 2) => "udp6".into(),
        (1, _) => format!("unix/{ty}"),
        (f, _) => format!("family {f}/{ty}"),
    }
}

/// The attribution of one run or attach, ready to show.
pub struct Attribution {
    rows: Vec<Row>,
    other: Vec<(Column, ObjectBytes)>,
    args: AttributionArgs,
}

impl Attribution {
    /// Names and sorts what the kernel counted (most bytes first).
    pub fn new(counts: ObjectCounts, args: AttributionArgs) -> Attribution {
        let mounts = mount_points();
        let mut rows: Vec<Row> = counts
            .bytes
            .iter()
            .filter_map(|(key, b)| {
                let column = Column::from_u16(key.column)?;
                let name = counts.names.get(&key.id);
                let what = match key.kind {
                    k if k == FdKind::Regular as u8 && args.by_file => What::File {
                        path: path(key.id, name, &mounts),
                        id: key.id,
                    },
                    k if k == FdKind::Socket as u8 && args.by_peer => match name {
                        Some(n) if n.family == 1 => What::Peer {
                            protocol: protocol(n),
                            local: "[unix]".into(),
                            peer: "[unix]".into(),
                        },
                        Some(n) => What::Peer {
                            protocol: protocol(n),
                            local: endpoint(n.family, &n.local_addr, n.local_port),
                            peer: endpoint(n.family, &n.peer_addr, n.peer_port),
                        },
                        None => What::Peer {
                            protocol: format!("[socket:{}]", key.id.ino),
                            local: String::new(),
                            peer: String::new(),
                        },
                    },
                    _ => return None,
                };
                Some(Row {
                    pid: key.tgid,
                    column,
                    counts: *b,
                    what,
                })
            })
            .collect();
        rows.sort_by(|a, b| (b.counts.bytes, a.pid).cmp(&(a.counts.bytes, b.pid)));
        Attribution {
            rows,
            other: counts.other,
            args,
        }
    }

    /// The rows of one kind, the `top` largest of each column.
    fn top(&self, files: bool, top: usize) -> Vec<&Row> {
        let mut per_column: BTreeMap<Column, usize> = BTreeMap::new();
        self.rows
            .iter()
            .filter(|r| matches!(r.what, What::File { .. }) == files)
            .filter(|r| {
                let n = per_column.entry(r.column).or_default();
                *n += 1;
                *n <= top
            })
            .collect()
    }

    /// `files[]` and `peers[]` for the JSON document (each only when asked for).
    pub fn json(&self, top: usize) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        let other: Vec<Value> = self
            .other
            .iter()
            .map(|(c, b)| {
                json!({"column": c.name(), "other": true, "bytes": b.bytes, "calls": b.calls})
            })
            .collect();
        for (files, key, wanted) in [
            (true, "files", self.args.by_file),
            (false, "peers", self.args.by_peer),
        ] {
            if !wanted {
                continue;
            }
            let mut rows: Vec<Value> = self
                .top(files, top)
                .into_iter()
                .map(|r| {
                    let mut v = json!({"pid": r.pid, "column": r.column.name(),
                                       "bytes": r.counts.bytes, "calls": r.counts.calls});
                    match &r.what {
                        What::File { path, id } => {
                            v["path"] = json!(path);
                            v["dev"] = json!(dev_text(id.dev));
                            v["ino"] = json!(id.ino);
                        }
                        What::Peer {
                            protocol,
                            local,
                            peer,
                        } => {
                            v["protocol"] = json!(protocol);
                            v["local"] = json!(local);
                            v["peer"] = json!(peer);
                        }
                    }
                    v
                })
                .collect();
            // The overflow rows (files and sockets together: the kernel could not tell).
            rows.extend(other.iter().cloned());
            out.insert(key.into(), Value::Array(rows));
        }
        out
    }

    /// The text tables (each only when asked for).
    pub fn text(&self, top: usize) -> String {
        let mut out = String::new();
        let right = |s: String| TCell::new(s).set_alignment(CellAlignment::Right);
        for (files, title, wanted) in [
            (true, "Files", self.args.by_file),
            (false, "Peers", self.args.by_peer),
        ] {
            if !wanted {
                continue;
            }
            let rows = self.top(files, top);
            out.push_str(&format!("\n{title} (top {top} by bytes per column):\n"));
            if rows.is_empty() && self.other.is_empty() {
                out.push_str("  none\n");
                continue;
            }
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY);
            let mut header = vec!["column", "bytes", "calls", "pid"];
            header.extend(if files {
                vec!["path"]
            } else {
                vec!["protocol", "local", "peer"]
            });
            t.set_header(header);
            for r in rows {
                let mut cells = vec![
                    TCell::new(r.column.name()),
                    right(human(r.counts.bytes)),
                    right(r.counts.calls.to_string()),
                    right(r.pid.to_string()),
                ];
                match &r.what {
                    What::File { path, .. } => cells.push(TCell::new(path)),
                    What::Peer {
                        protocol,
                        local,
                        peer,
                    } => cells.extend([TCell::new(protocol), TCell::new(local), TCell::new(peer)]),
                }
                t.add_row(cells);
            }
            for (c, b) in &self.other {
                t.add_row(vec![
                    TCell::new(c.name()),
                    right(human(b.bytes)),
                    right(b.calls.to_string()),
                    TCell::new(""),
                    TCell::new("[other] (the kernel's table was full)"),
                ]);
            }
            out.push_str(&t.to_string());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(parts: &[&str]) -> ObjectName {
        let mut n = ObjectName::EMPTY;
        for (slot, p) in n.parts.iter_mut().zip(parts) {
            slot[..p.len()].copy_from_slice(p.as_bytes());
        }
        n
    }

    #[test]
    fn paths_are_joined_below_their_mount_point() {
        let mut mounts = BTreeMap::new();
        mounts.insert(8 << 20 | 1, "/data".to_string());
        mounts.insert(8 << 20 | 2, "/".to_string());
        let id = |dev| ObjectId {
            dev,
            _pad: 0,
            ino: 12,
        };
        let n = name(&["log.txt", "kafka", "/"]);
        assert_eq!(
            path(id(8 << 20 | 1), Some(&n), &mounts),
            "/data/kafka/log.txt"
        );
        assert_eq!(path(id(8 << 20 | 2), Some(&n), &mounts), "/kafka/log.txt");
        let deep = name(&["f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q"]);
        assert_eq!(
            path(id(8 << 20 | 2), Some(&deep), &mounts),
            "…/q/p/o/n/m/l/k/j/i/h/g/f"
        );
        assert_eq!(path(id(8 << 20 | 2), None, &mounts), "8:2:12");
    }

    #[test]
    fn sockets_show_their_endpoints() {
        let mut n = ObjectName::EMPTY;
        n.family = 2;
        n.sock_type = 1;
        n.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        n.peer_addr[..4].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(protocol(&n), "tcp");
        assert_eq!(endpoint(2, &n.local_addr, 8080), "127.0.0.1:8080");
        assert_eq!(endpoint(10, &[0; 16], 53), "[::]:53");
    }
}
