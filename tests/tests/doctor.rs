//! `zcprof doctor`, and the capabilities every report carries: checked against what the kernel
//! says through other tools (uname, tracefs, bpftool's own BTF parser and feature probes,
//! /proc/self/status), as root and as nobody, and that nothing stays loaded.

use std::{collections::BTreeMap, path::Path, process::Command};

use serde_json::Value;
use zcprof_tests::*;

/// zcprof's tracepoints and their tracefs event group.
const TRACEPOINTS: [(&str, &str); 8] = [
    ("sys_exit", "raw_syscalls"),
    ("sched_switch", "sched"),
    ("sched_process_fork", "sched"),
    ("sched_process_exec", "sched"),
    ("sched_process_exit", "sched"),
    ("mm_filemap_fault", "filemap"),
    ("mm_filemap_map_pages", "filemap"),
    ("io_uring_complete", "io_uring"),
];

fn doctor_json() -> (Value, std::process::ExitStatus, String) {
    run_json(&["doctor", "--json"])
}

fn hook<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["hooks"]
        .as_array()
        .expect("hooks array")
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no hook {name} in {}", doc["hooks"]))
}

/// tracefs, mounted if it is not (the test's ground truth, not zcprof's need).
fn tracefs() -> &'static Path {
    let dir = Path::new("/sys/kernel/tracing");
    if !dir.join("events").exists() {
        let st = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status()
            .expect("run mount");
        assert!(st.success(), "cannot mount tracefs");
    }
    dir
}

/// Tracepoint prototypes from bpftool's parse of the kernel's BTF: name -> argument types,
/// written as zcprof writes them (`struct task_struct *`, `bool`, `long int`).
fn bpftool_prototypes(names: &[&str]) -> BTreeMap<String, Vec<String>> {
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"])
        .output()
        .expect("run bpftool");
    assert!(out.status.success(), "bpftool btf dump failed");
    let text = String::from_utf8_lossy(&out.stdout);
    // id -> (kind, name, type_id, parameter type ids).
    let mut types: BTreeMap<u64, (String, String, u64, Vec<u64>)> = BTreeMap::new();
    let mut last = None;
    let type_id = |s: &str| -> u64 {
        s.split_whitespace()
            .find_map(|w| w.strip_prefix("type_id="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('[') {
            let (id, rest) = rest.split_once("] ").expect("[id] KIND");
            let id: u64 = id.parse().expect("type id");
            let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = rest.split('\'').nth(1).unwrap_or("").to_string();
            types.insert(id, (kind.to_string(), name, type_id(rest), Vec::new()));
            last = Some(id);
        } else if line.starts_with('\t')
            && let Some(id) = last
            && types[&id].0 == "FUNC_PROTO"
        {
            types.get_mut(&id).unwrap().3.push(type_id(line));
        }
    }
    fn c_name(types: &BTreeMap<u64, (String, String, u64, Vec<u64>)>, id: u64) -> String {
        if id == 0 {
            return "void".into();
        }
        let (kind, name, ty, _) = &types[&id];
        match kind.as_str() {
            "PTR" => format!("{} *", c_name(types, *ty)),
            "STRUCT" => format!("struct {name}"),
            "UNION" => format!("union {name}"),
            "ENUM" | "ENUM64" => format!("enum {name}"),
            "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => c_name(types, *ty),
            _ => name.clone(),
        }
    }
    let mut found = BTreeMap::new();
    for (kind, name, ty, _) in types.values() {
        let Some(tp) = name.strip_prefix("btf_trace_") else {
            continue;
        };
        if kind != "TYPEDEF" || !names.contains(&tp) {
            continue;
        }
        let proto = match types.get(ty) {
            Some((k, _, target, _)) if k == "PTR" => *target,
            _ => *ty,
        };
        let params = &types[&proto].3;
        // The first parameter is the tracer's own `void *__data`.
        let args = params.iter().skip(1).map(|&p| c_name(&types, p)).collect();
        found.insert(tp.to_string(), args);
    }
    found
}

/// `bpftool feature probe kernel`'s verdict on a map or program type.
fn bpftool_features() -> Value {
    let out = Command::new("bpftool")
        .args(["feature", "probe", "kernel", "-j"])
        .output()
        .expect("run bpftool");
    serde_json::from_slice(&out.stdout).expect("bpftool feature probe JSON")
}

/// The effective capability set of this (root) test process.
fn cap_eff() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff");
    u64::from_str_radix(v.trim(), 16).unwrap()
}

/// On this host (6.18, root): zcprof can run, every capability is exact, and every hook,
/// prototype and BPF type doctor reports is what the kernel says through other tools.
#[test]
fn doctor_reports_this_host() {
    if !require_root_or_skip() {
        return;
    }
    let (doc, status, stderr) = doctor_json();
    assert!(status.success(), "doctor exited {status:?}:\n{stderr}");
    assert_eq!(doc["can_run"], true, "{doc:#}");
    let problems = doc["problems"].as_array().expect("problems");
    assert!(problems.is_empty(), "problems on this host: {problems:#?}");

    let uname = Command::new("uname").arg("-r").output().expect("uname");
    let release = String::from_utf8_lossy(&uname.stdout).trim().to_string();
    assert_eq!(doc["kernel"], release.as_str());
    assert_eq!(doc["arch"], "x86_64");
    assert_eq!(doc["btf"]["verdict"], "ok");
    assert_eq!(doc["load"]["verdict"], "ok", "{}", doc["load"]);

    // Privileges: what this process (doctor's parent, same credentials) lacks.
    let eff = cap_eff();
    let mut lacks = Vec::new();
    for (bit, name) in [
        (39, "CAP_BPF"),
        (38, "CAP_PERFMON"),
        (24, "CAP_SYS_RESOURCE"),
    ] {
        if eff & (1 << bit) == 0 {
            lacks.push(name);
        }
    }
    assert_eq!(doc["privileges"]["root"], true);
    assert_eq!(doc["privileges"]["missing"], serde_json::json!(lacks));
    assert_eq!(doc["privileges"]["verdict"], "ok");
    // Linux 6.5+: the BPF fds stay usable after the drop.
    assert_eq!(doc["privileges"]["can_drop"], true);
    assert_eq!(doc["privileges"]["drop_tried"], true, "found out by trying");

    // Every capability, exact.
    let caps = doc["capabilities"].as_array().expect("capabilities");
    let names: Vec<&str> = caps.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, CAPABILITIES);
    for c in caps {
        assert_eq!(c["state"], "exact", "{c}");
    }

    // Each tracepoint: present as tracefs says, with the prototype bpftool reads from BTF.
    let events = tracefs().join("events");
    let names: Vec<&str> = TRACEPOINTS.iter().map(|t| t.0).collect();
    let protos = bpftool_prototypes(&names);
    for (name, group) in TRACEPOINTS {
        let h = hook(&doc, name);
        let exists = events.join(group).join(name).exists();
        assert_eq!(h["present"], exists, "{name}: doctor vs tracefs");
        assert!(exists, "{name}: this kernel has every hook");
        let want = protos
            .get(name)
            .unwrap_or_else(|| panic!("bpftool finds no btf_trace_{name}"));
        assert_eq!(h["prototype"], serde_json::json!(want), "{name}: prototype");
        assert_eq!(h["verdict"], "ok");
    }
    for name in ["page-faults-min", "page-faults-maj"] {
        let h = hook(&doc, name);
        assert_eq!(h["kind"], "perf_event");
        assert_eq!(h["present"], true, "{h}");
    }

    // BPF map and program types: as bpftool's own probes say.
    let features = bpftool_features();
    for (list, group) in [
        ("map_types", "map_types"),
        ("program_types", "program_types"),
    ] {
        let entries = doc[list].as_array().expect(list);
        assert!(!entries.is_empty());
        for e in entries {
            let name = e["name"].as_str().unwrap();
            let suffix = if list == "map_types" {
                "map_type"
            } else {
                "prog_type"
            };
            let key = format!("have_{name}_{suffix}");
            assert_eq!(
                e["supported"], features[group][&key],
                "{name}: doctor vs bpftool {key}"
            );
            assert_eq!(e["supported"], true, "{name}");
        }
    }

    // tracefs: reported, and never zcprof's need.
    assert_eq!(doc["tracefs"]["mounted"], true);
    assert_eq!(doc["tracefs"]["needed_by_zcprof"], false);

    // The text report says the same.
    let text = zcprof(&["doctor"]);
    assert!(text.status.success(), "{}", text.stderr);
    assert!(
        text.stdout
            .contains("zcprof can run here, and counts everything exactly."),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains(&release), "names the kernel");
}

/// As nobody: doctor still reports (no error line), exits 1, names the missing capabilities
/// and says that it could not probe loading.
#[test]
fn doctor_as_nobody_names_what_is_missing() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_program_ids();
    let out = zcprof_as_nobody("doctor-nobody", &["doctor", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{stderr}");
    assert!(!stderr.contains("zcprof: error"), "not an error:\n{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["can_run"], false);
    let p = &doc["privileges"];
    assert_eq!(p["root"], false);
    assert_eq!(p["uid"], 65534);
    assert_eq!(p["verdict"], "missing");
    assert_eq!(
        p["missing"],
        serde_json::json!(["CAP_BPF", "CAP_PERFMON", "CAP_SYS_RESOURCE"])
    );
    assert_eq!(doc["load"]["verdict"], "unknown");
    assert!(
        doc["load"]["detail"]
            .as_str()
            .unwrap()
            .contains("needs root to probe loading"),
        "{}",
        doc["load"]
    );
    let problems = doc["problems"].as_array().expect("problems");
    let privilege = problems
        .iter()
        .find(|p| p["what"].as_str().unwrap().contains("not privileged"))
        .unwrap_or_else(|| panic!("no privilege problem in {problems:#?}"));
    for cap in ["CAP_BPF", "CAP_PERFMON"] {
        assert!(
            privilege["what"].as_str().unwrap().contains(cap),
            "{privilege}"
        );
    }
    assert!(privilege["fix"].as_str().unwrap().contains("root"));
    // What needs no privilege is still reported: BTF, hooks, capabilities.
    assert_eq!(doc["btf"]["verdict"], "ok");
    assert_eq!(hook(&doc, "sched_switch")["present"], true);
    assert_eq!(doc["capabilities"].as_array().unwrap().len(), 6);

    let text = zcprof_as_nobody("doctor-nobody", &["doctor"]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(1));
    assert!(stdout.contains("zcprof cannot run here:"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("problem: ") && l.contains("CAP_BPF") && l.contains("fix: ")),
        "one line with the problem and its fix:\n{stdout}"
    );
    assert!(stdout.contains("needs root to probe loading"), "{stdout}");
    let left = new_zcprof_programs_after(&before, std::time::Duration::from_secs(3));
    assert!(left.is_empty(), "programs loaded: {left:?}");
}

/// Doctor loads zcprof's programs for a moment: none is left loaded afterwards.
#[test]
fn doctor_leaves_no_program_loaded() {
    if !require_root_or_skip() {
        return;
    }
    let before = zcprof_program_ids();
    let (doc, status, stderr) = doctor_json();
    assert!(status.success(), "{stderr}");
    // It did load them (else this test proves nothing).
    assert_eq!(doc["load"]["verdict"], "ok", "{}", doc["load"]);
    let left = new_zcprof_programs_after(&before, std::time::Duration::from_secs(3));
    assert!(left.is_empty(), "zcprof programs left loaded: {left:?}");
}

/// `zcprof run --json` reports every capability, each exact on this host.
#[test]
fn run_json_reports_every_capability_exact() {
    if !require_root_or_skip() {
        return;
    }
    let (doc, status, stderr) = run_json(&["run", "--json", "--", "true"]);
    assert!(status.success(), "{stderr}");
    let caps = doc["capabilities"].as_array().expect("capabilities array");
    let names: Vec<&str> = caps.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, CAPABILITIES);
    for c in caps {
        assert_eq!(c["state"], "exact", "{c}");
        assert_eq!(c["why"], "", "{c}");
    }
    assert!(
        !stderr.contains("warning"),
        "no capability warning on this host:\n{stderr}"
    );
}
