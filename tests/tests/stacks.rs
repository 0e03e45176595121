//! Byte-weighted user stacks (`--folded`, `--flamegraph`, `--pprof`), from a purpose-written C
//! program (tests/c/stacks.c) whose functions count the bytes they move: each function must
//! appear as the direct caller of its libc wrapper with exactly its bytes, and every output
//! must add up to the JSON ledger of the same run.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;
use zcprof_tests::*;

/// The workload's source.
const PROGRAM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/c/stacks.c");

/// The columns a stack can carry bytes in (the data-moving ones).
const MOVING: [&str; 5] = [
    "cpu_user_to_kernel",
    "cpu_kernel_to_user",
    "cpu_in_kernel",
    "zero_copy",
    "dma_direct",
];

/// Each of the program's counters: (function, syscall) and the column its bytes belong in.
const EXPECTED: [(&str, &str, &str); 4] = [
    ("copy_with_read_write", "read", "cpu_kernel_to_user"),
    ("copy_with_read_write", "write", "cpu_user_to_kernel"),
    ("copy_with_sendfile", "sendfile", "zero_copy"),
    ("drain", "read", "cpu_kernel_to_user"),
];

/// Decodes a gzip'd pprof profile with Python's own gzip and a reading of the protobuf wire
/// format (no code of zcprof's): prints the sample type names, the sum of each value over the
/// samples, and the number of samples, as JSON.
const PPROF_DECODER: &str = r#"
import gzip, json, sys
def varint(b, i):
    v = s = 0
    while True:
        c = b[i]; i += 1; v |= (c & 0x7f) << s; s += 7
        if c < 0x80: return v, i
def fields(b):
    i = 0
    while i < len(b):
        k, i = varint(b, i); f, t = k >> 3, k & 7
        if t == 0: v, i = varint(b, i)
        elif t == 2:
            n, i = varint(b, i); v = b[i:i + n]; i += n
        elif t == 1: v = b[i:i + 8]; i += 8
        elif t == 5: v = b[i:i + 4]; i += 4
        else: raise SystemExit("bad wire type %d" % t)
        yield f, t, v
def ints(t, v):
    if t == 0: return [v]
    out, i = [], 0
    while i < len(v):
        x, i = varint(v, i); out.append(x)
    return out
b = gzip.open(sys.argv[1]).read()
strings, types, samples = [], [], []
for f, t, v in fields(b):
    if f == 6: strings.append(v.decode())
    elif f == 1: types.append(dict((g, x) for g, _, x in fields(v)))
    elif f == 2:
        vals = []
        for g, u, x in fields(v):
            if g == 2: vals += ints(u, x)
        samples.append(vals)
names = [strings[t.get(1, 0)] for t in types]
sums = [sum(s[k] for s in samples if k < len(s)) for k in range(len(names))]
print(json.dumps({"types": names, "sums": sums, "samples": len(samples)}))
"#;

/// What one profiled run of the program left.
struct Profiled {
    dir: PathBuf,
    doc: Value,
    /// The folded lines: frames (comm first, column last) and bytes.
    folded: Vec<(Vec<String>, u64)>,
    /// The program's own counts: (function, syscall) -> bytes.
    tally: BTreeMap<(String, String), u64>,
}

/// Compiles the program as `dir/name` (stripped if `strip`).
fn compile(dir: &Path, name: &str, strip: bool) -> PathBuf {
    let bin = dir.join(name);
    let st = Command::new("gcc")
        .args(["-O0", "-fno-omit-frame-pointer", "-pthread", "-o"])
        .arg(&bin)
        .arg(PROGRAM)
        .status()
        .expect("run gcc");
    assert!(st.success(), "gcc failed on {PROGRAM}");
    if strip {
        let st = Command::new("strip").arg(&bin).status().expect("run strip");
        assert!(st.success(), "strip failed");
    }
    bin
}

/// Writes the program's input, `dir/src`: 3 MiB and a bit.
fn write_source(dir: &Path) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 123)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("src"), &data).unwrap();
}

/// The folded lines of `path`: frames (comm first, column last) and bytes.
fn read_folded(path: &Path) -> Vec<(Vec<String>, u64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let (stack, bytes) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let frames = stack.split(';').map(String::from).collect::<Vec<_>>();
            (frames, bytes.parse::<u64>().expect("bytes"))
        })
        .collect()
}

/// The program's tally: (function, syscall) -> bytes.
fn read_tally(path: &Path) -> BTreeMap<(String, String), u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            ((f[0].to_string(), f[1].to_string()), f[2].parse().unwrap())
        })
        .collect()
}

/// Runs the program (built as `name`) under `zcprof run` with all three outputs: again if the
/// kernel could not file a stack (its stack map files a stack under a hash of its frames, and
/// a new stack whose bucket is taken is not captured: rare, counted in `stack_lost`, and its
/// bytes go to `[unknown stack]`; the other tests check that accounting).
fn profile(tag: &str, name: &str, strip: bool, unlink_self: bool) -> Profiled {
    for _ in 0..2 {
        let run = profile_once(tag, name, strip, unlink_self);
        if u(&run.doc["lost"], "stack_lost") == 0 {
            return run;
        }
        eprintln!("a stack was lost to a stack-map collision; again");
    }
    profile_once(tag, name, strip, unlink_self)
}

fn profile_once(tag: &str, name: &str, strip: bool, unlink_self: bool) -> Profiled {
    let dir = scratch_dir(tag);
    let bin = compile(&dir, name, strip);
    write_source(&dir);
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let (json, folded, svg, pb) = (p("out.json"), p("out.folded"), p("out.svg"), p("out.pb.gz"));
    let (src, dst, tally) = (p("src"), p("dst"), p("tally"));
    let mut args = vec![
        "run",
        "--json",
        "-o",
        &json,
        "--folded",
        &folded,
        "--flamegraph",
        &svg,
        "--pprof",
        &pb,
        "--",
    ];
    let bin = bin.to_str().unwrap().to_string();
    args.extend([bin.as_str(), &src, &dst, &tally]);
    if unlink_self {
        args.push("--unlink-self");
    }
    let out = zcprof(&args);
    assert!(
        out.status.success(),
        "zcprof run failed: {:?}\nstderr:\n{}",
        out.status,
        out.stderr
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let folded = read_folded(Path::new(&folded));
    let tally = read_tally(Path::new(&tally));
    Profiled {
        dir,
        doc,
        folded,
        tally,
    }
}

impl Profiled {
    /// The program's process in the JSON report.
    fn process(&self, comm: &str) -> &Value {
        processes(&self.doc)
            .iter()
            .find(|p| p["comm"] == comm)
            .unwrap_or_else(|| panic!("no process {comm} in the report"))
    }

    /// The JSON ledger's bytes per (syscall, column), data-moving columns, of `comm`.
    fn ledger(&self, comm: &str) -> BTreeMap<(String, String), u64> {
        let mut m = BTreeMap::new();
        for t in self.process(comm)["transfers"].as_array().unwrap() {
            let column = t["column"].as_str().unwrap();
            if MOVING.contains(&column) && u(t, "bytes") > 0 {
                let key = (
                    t["syscall"].as_str().unwrap().to_string(),
                    column.to_string(),
                );
                *m.entry(key).or_default() += u(t, "bytes");
            }
        }
        m
    }

    /// The folded bytes per (syscall, column) of `comm`'s lines.
    fn folded_by_cell(&self, comm: &str) -> BTreeMap<(String, String), u64> {
        let mut m = BTreeMap::new();
        for (f, bytes) in &self.folded {
            if f[0] == comm {
                let n = f.len();
                *m.entry((f[n - 2].clone(), f[n - 1].clone())).or_default() += bytes;
            }
        }
        m
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.dir.join("out.folded")).unwrap()
    }
}

/// Each of the program's functions is the direct caller of its libc wrapper, under its own
/// caller, with exactly the bytes it counted.
fn assert_direct_callers(run: &Profiled, text: &str) {
    for (func, syscall, column) in EXPECTED {
        let want = run.tally[&(func.to_string(), syscall.to_string())];
        assert!(want > 0, "the program moved no bytes with {func}/{syscall}");
        // comm; ...; outer; FUNC; libc wrapper; SYSCALL; COLUMN: FUNC is the wrapper's caller.
        let got: u64 = run
            .folded
            .iter()
            .filter(|(f, _)| {
                let n = f.len();
                n >= 5 && f[n - 4] == func && f[n - 2] == syscall && f[n - 1] == column
            })
            .map(|(_, b)| b)
            .sum();
        assert_eq!(
            got, want,
            "{func} -> {syscall} ({column}): folded bytes vs the program's own count\n{text}"
        );
        // Its own caller is there too, from the frame-pointer chain.
        let outer = if func == "drain" {
            "start_thread"
        } else {
            "main"
        };
        assert!(
            run.folded.iter().any(|(f, _)| {
                let n = f.len();
                f[n - 4] == func && f[n - 5] == outer
            }),
            "{func} is not under {outer}:\n{text}"
        );
    }
}

#[test]
fn each_function_appears_as_the_direct_caller_with_exactly_its_bytes() {
    if !require_root_or_skip() {
        return;
    }
    let run = profile("stacks", "stacks-prog", false, false);
    let text = run.text();
    assert_direct_callers(&run, &text);
    // Every byte the ledger has for the process is in some stack, and no more.
    assert_eq!(
        run.folded_by_cell("stacks-prog"),
        run.ledger("stacks-prog"),
        "folded sums vs the JSON ledger per (syscall, column)\n{text}"
    );
    assert!(
        !text.contains("[other]"),
        "overflow row in a small run:\n{text}"
    );
    for reason in ["stack_lost", "stack_table_full"] {
        assert_eq!(u(&run.doc["lost"], reason), 0, "lost {reason}");
    }

    // The flame graph is well-formed XML (Python's parser) and names the functions.
    let svg = run.dir.join("out.svg");
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1]); print('ok')",
        ])
        .arg(&svg)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "the SVG is not well-formed XML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    for name in ["copy_with_read_write", "copy_with_sendfile", "zero_copy"] {
        assert!(svg_text.contains(name), "{name} not in the flame graph");
    }

    // The pprof profile, decoded without zcprof's code, sums to the ledger.
    let out = Command::new("python3")
        .args(["-c", PPROF_DECODER])
        .arg(run.dir.join("out.pb.gz"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "decoding the pprof profile failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pprof: Value = serde_json::from_slice(&out.stdout).expect("decoder's JSON");
    assert_eq!(
        pprof["types"],
        serde_json::json!([
            "cpu_copied_bytes",
            "zero_copy_bytes",
            "dma_direct_bytes",
            "calls"
        ])
    );
    // Over every process of the run (the ledger's cells, summed by sample type); calls: the
    // calls that moved bytes (not errors, not the 0-byte ones of size bucket 0).
    let (mut cpu, mut zc, mut dma, mut calls) = (0, 0, 0, 0);
    for p in processes(&run.doc) {
        for t in p["transfers"].as_array().unwrap() {
            let column = t["column"].as_str().unwrap();
            if !MOVING.contains(&column) {
                continue;
            }
            let b = u(t, "bytes");
            match column {
                "zero_copy" => zc += b,
                "dma_direct" => dma += b,
                _ => cpu += b,
            }
            calls += u(t, "calls") - u(t, "errors") - t["size_log2"][0].as_u64().unwrap();
        }
    }
    assert_eq!(
        pprof["sums"],
        serde_json::json!([cpu, zc, dma, calls]),
        "pprof sample sums vs the JSON ledger"
    );
}

/// A binary without symbols, or deleted while it ran: its frames are `name+0xOFFSET`, the
/// bytes are all there, and zcprof does not fail.
fn unnamed_frames(tag: &str, name: &str, strip: bool, unlink: bool) {
    if !require_root_or_skip() {
        return;
    }
    let run = profile(tag, name, strip, unlink);
    let text = run.text();
    let prefix = format!("{name}+0x");
    // The program's own functions, by address: per (syscall, column), the bytes of lines
    // whose wrapper's caller is one of them are the program's counts.
    let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (func, syscall, column) in EXPECTED {
        *want
            .entry((syscall.to_string(), column.to_string()))
            .or_default() += run.tally[&(func.to_string(), syscall.to_string())];
    }
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (f, bytes) in &run.folded {
        let n = f.len();
        if f[0] == name && n >= 5 && f[n - 4].starts_with(&prefix) {
            *got.entry((f[n - 2].clone(), f[n - 1].clone())).or_default() += bytes;
        }
    }
    assert_eq!(
        got, want,
        "bytes under {prefix}… frames vs the program's counts\n{text}"
    );
    assert_eq!(
        run.folded_by_cell(name),
        run.ledger(name),
        "folded sums vs the JSON ledger\n{text}"
    );
}

#[test]
fn a_stripped_binary_gets_addresses() {
    unnamed_frames("stacks-strip", "stacks-strip", true, false);
}

#[test]
fn a_deleted_binary_gets_addresses() {
    unnamed_frames("stacks-del", "stacks-del", false, true);
}

#[test]
fn an_unwritable_flamegraph_path_fails_before_loading() {
    if !require_root_or_skip() {
        return;
    }
    let dir = scratch_dir("stacks-bad");
    let marker = dir.join("ran");
    let svg = dir.join("no/such/dir/out.svg");
    let out = zcprof(&[
        "run",
        "--flamegraph",
        svg.to_str().unwrap(),
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "zcprof succeeded with an unwritable --flamegraph"
    );
    assert!(
        out.stderr.contains("--flamegraph") && out.stderr.contains(svg.to_str().unwrap()),
        "the error does not name the option and the path: {}",
        out.stderr
    );
    assert!(
        !marker.exists(),
        "the command ran although the output cannot be written"
    );
    // The first and only error: nothing was tried before it.
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

#[test]
fn attach_writes_the_stacks_of_a_running_process() {
    use std::io::BufRead as _;
    if !require_root_or_skip() {
        return;
    }
    let dir = scratch_dir("stacks-attach");
    let bin = compile(&dir, "stacks-att", false);
    write_source(&dir);
    let p = |f: &str| dir.join(f);
    let mut prog = Command::new(&bin)
        .arg(p("src"))
        .arg(p("dst"))
        .arg(p("tally"))
        .arg("--wait-for")
        .arg(p("go"))
        .spawn()
        .expect("start the program");
    let pid = prog.id().to_string();
    let folded = p("out.folded");
    let mut z = Command::new(zcprof_bin())
        .args(["attach", "--json", "--pid", &pid, "--folded"])
        .arg(&folded)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zcprof attach");
    let mut lines = std::io::BufReader::new(z.stderr.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("zcprof attach ended before attaching")
            .unwrap();
        if line.starts_with("zcprof: attached") {
            break;
        }
    }
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    std::fs::write(p("go"), b"").unwrap();
    assert!(prog.wait().unwrap().success(), "the program failed");
    let out = z.wait_with_output().unwrap();
    let stderr = rest.join().unwrap().join("\n");
    assert!(
        out.status.success(),
        "zcprof attach: {:?}\n{stderr}",
        out.status
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("attach --json");
    let run = Profiled {
        folded: read_folded(&folded),
        tally: read_tally(&p("tally")),
        dir,
        doc,
    };
    let text = run.text();
    assert_direct_callers(&run, &text);
    assert_eq!(
        run.folded_by_cell("stacks-att"),
        run.ledger("stacks-att"),
        "folded sums vs the JSON ledger per (syscall, column)\n{text}"
    );
}

/// Runs tests/java/ZcSender.java (`transfer` or `heap`) under `zcprof run --folded` with frame
/// pointers and a perf map: the folded lines and the bytes the program sent.
fn java_sender(dir: &Path, mode: &str) -> (Vec<(Vec<String>, u64)>, u64) {
    let folded = dir.join(format!("{mode}.folded"));
    let out = zcprof(&[
        "run",
        "-o",
        "/dev/null",
        "--folded",
        folded.to_str().unwrap(),
        "--",
        "java",
        "-XX:+PreserveFramePointer",
        "-XX:+UnlockDiagnosticVMOptions",
        "-XX:+DumpPerfMapAtExit",
        "-cp",
        dir.to_str().unwrap(),
        "ZcSender",
        mode,
        dir.join("src").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "zcprof run java: {:?}\n{}",
        out.status,
        out.stderr
    );
    let sent = out.stdout.trim().parse().expect("the bytes ZcSender sent");
    (read_folded(&folded), sent)
}

/// Java, as the README says to run it: `FileChannel.transferTo` sends with sendfile, under
/// the JDK's `transferTo` native; a heap `ByteBuffer` is copied by `write` under the JDK's
/// `write0` native. Each with exactly the bytes the program sent, in its own column.
#[test]
fn java_transfer_to_is_zero_copy_and_a_heap_buffer_is_copied() {
    if !require_root_or_skip() {
        return;
    }
    let dir = scratch_dir("stacks-java");
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/java/ZcSender.java");
    let st = Command::new("javac")
        .arg("-d")
        .arg(&dir)
        .arg(source)
        .status()
        .expect("run javac (cargo xtask setup installs openjdk-17-jdk-headless)");
    assert!(st.success(), "javac failed on {source}");
    write_source(&dir);
    for (mode, direct_caller, syscall, column) in [
        ("transfer", "transferTo", "sendfile", "zero_copy"),
        ("heap", "write0", "write", "cpu_user_to_kernel"),
    ] {
        // A JVM makes a hundred stacks or so: one of them may find its bucket in the stack
        // map taken (see `profile`); then again.
        let mut attempt = 0;
        let (folded, sent) = loop {
            let (folded, sent) = java_sender(&dir, mode);
            attempt += 1;
            let lost = folded.iter().any(|(f, _)| f[1] == "[unknown stack]");
            if !lost || attempt == 3 {
                break (folded, sent);
            }
        };
        assert_eq!(sent, 3 * 1024 * 1024 + 123);
        let got: u64 = folded
            .iter()
            .filter(|(f, _)| {
                let n = f.len();
                f[0] == "java"
                    && n >= 5
                    && f[n - 4].contains(direct_caller)
                    && f[n - 2] == syscall
                    && f[n - 1] == column
            })
            .map(|(_, b)| b)
            .sum();
        let text: Vec<String> = folded
            .iter()
            .map(|(f, b)| format!("{} {b}", f.join(";")))
            .collect();
        assert_eq!(
            got,
            sent,
            "{mode}: bytes under *{direct_caller}* -> {syscall} ({column}) vs sent\n{}",
            text.join("\n")
        );
    }
}
