//! `zcprof serve --by container`: each runtime's cgroup layout, made for real under the host's
//! cgroup2 mount, with a workload inside, scraped for its `container_id`, `pod_uid`,
//! `runtime` and its exact bytes.
//!
//! The directories are the runtimes' own names (`/system.slice/docker-<id>.scope`,
//! `/kubepods/besteffort/pod<uid>/<id>`, ...) with fresh random ids; a guard removes every
//! directory a test created, moving out any process a failed test left in one. Expected
//! labels are written from the layouts here, not computed by zcprof's parser.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant, SystemTime},
};

use zcprof_tests::*;

const CHILD: &str = env!("CARGO_BIN_EXE_zc-child");

/// The cgroup2 mount zcprof uses by default: /sys/fs/cgroup on a unified host, else the
/// first cgroup2 mount (/sys/fs/cgroup/unified on a hybrid one).
fn cgroup2_root() -> PathBuf {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    let found: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then_some(f[1])
        })
        .collect();
    let root = found
        .iter()
        .find(|m| **m == "/sys/fs/cgroup")
        .or(found.first())
        .unwrap_or_else(|| panic!("no cgroup2 file system in /proc/self/mounts"));
    PathBuf::from(root)
}

/// Cgroup directories made by a test, removed (deepest first) when it ends, even on failure.
struct Cgroups {
    root: PathBuf,
    made: Vec<PathBuf>,
}

impl Cgroups {
    fn new() -> Self {
        Cgroups {
            root: cgroup2_root(),
            made: Vec::new(),
        }
    }

    /// Makes `rel` (a path below the root) and any missing parent; returns its directory.
    fn make(&mut self, rel: &str) -> PathBuf {
        let mut dir = self.root.clone();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => self.made.push(dir.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!(
                    "cannot create cgroup directory {} under the cgroup2 mount {}: {e}",
                    dir.display(),
                    self.root.display()
                ),
            }
        }
        dir
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            // A process a failed test left behind goes back to the root so that the
            // directory can go.
            for pid in fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                let _ = fs::write(self.root.join("cgroup.procs"), pid);
            }
            // A reaped process may keep its cgroup populated for a moment.
            let start = Instant::now();
            while let Err(e) = fs::remove_dir(dir) {
                if e.raw_os_error() != Some(libc::EBUSY) || start.elapsed() > Duration::from_secs(3)
                {
                    eprintln!("warning: cannot remove cgroup {}: {e}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A running `zcprof serve --by container --listen 127.0.0.1:0 ARGS`.
struct Daemon {
    child: Child,
    addr: String,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let mut child = Command::new(zcprof_bin())
            .args(["serve", "--by", "container", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run zcprof serve");
        let (tx, rx) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("serve: {line}");
                if let Some(rest) = line.strip_prefix("zcprof: serving http://") {
                    let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("zcprof serve did not start serving within 60 s (its stderr is above)");
        Daemon { child, addr }
    }

    /// The samples of one GET /metrics.
    fn scrape(&self) -> Vec<Sample> {
        let mut s = TcpStream::connect(&self.addr).expect("connect to zcprof serve");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: zcprof\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read the scrape");
        assert!(text.starts_with("HTTP/1.1 200"), "scrape failed: {text}");
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        body.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(parse_sample)
            .collect()
    }

    /// SIGTERM; the daemon must exit 0.
    fn stop(mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for zcprof serve");
        assert_eq!(status.code(), Some(0), "zcprof serve exited with {status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One sample of the exposition: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
    let (name, mut rest) = series.split_once('{').unwrap_or((series, ""));
    let mut labels = BTreeMap::new();
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = after.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => val.extend(chars.next()),
                '"' => break,
                c => val.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), val);
        rest = chars.as_str();
    }
    Sample {
        name: name.to_string(),
        labels,
        value: value.parse().unwrap_or(f64::NAN),
    }
}

/// One group's labels: (container_id, pod_uid, runtime).
type Group = (String, String, String);

fn group_of(s: &Sample) -> Group {
    let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
    (l("container_id"), l("pod_uid"), l("runtime"))
}

/// Sum of `name` per group, over the samples that carry every label in `want`.
fn per_group(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> BTreeMap<Group, u64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        if want
            .iter()
            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        {
            *out.entry(group_of(s)).or_default() += s.value as u64;
        }
    }
    out
}

/// 64 random bits, the same for the same `n` within one test run (splitmix64 of the start
/// time, the pid and `n`): ids no runtime has.
fn random(n: u64) -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        t ^ (u64::from(std::process::id()) << 32)
    });
    let mut z = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A container id: 64 hex digits.
fn container_id(n: u64) -> String {
    (0..4)
        .map(|i| format!("{:016x}", random(n * 8 + i)))
        .collect()
}

/// A pod uid (a UUID).
fn pod_uid(n: u64) -> String {
    let (a, b) = (random(n * 8 + 5), random(n * 8 + 6));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// A cgroup layout and the labels its threads must get.
struct Layout {
    what: &'static str,
    path: String,
    want: Group,
}

fn layout(what: &'static str, path: String, id: &str, uid: &str, runtime: &str) -> Layout {
    Layout {
        what,
        path,
        want: (id.to_string(), uid.to_string(), runtime.to_string()),
    }
}

/// Runs the zc-child copy `exe` doing `action`, forked by a shell that first moved itself
/// into `leaf`: the child is born in the cgroup, as a container's processes are.
fn run_in(leaf: &Path, exe: &Path, dir: &Path, action: &[&str]) -> Tally {
    let tally = dir.join(format!(
        "{}.json",
        exe.file_name().unwrap().to_string_lossy()
    ));
    let mut sh = Command::new("sh")
        // Not `exec "$@"`: the child must be forked after the move.
        .args([
            "-c",
            r#"echo $$ > "$0/cgroup.procs" || exit 97; "$@"; exit $?"#,
        ])
        .arg(leaf)
        .arg(exe)
        .arg(&tally)
        .args(action)
        .env("ZC_CHILD_DIR", dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("run sh");
    let sh_pid = u64::from(sh.id());
    let status = sh.wait().expect("wait for sh");
    assert!(
        status.success(),
        "{} {action:?} in {}: {status}",
        exe.display(),
        leaf.display()
    );
    let t = Tally::read(&tally);
    assert_ne!(
        t.supervisor_pid(),
        sh_pid,
        "the shell exec'd instead of forking"
    );
    t
}

/// A copy of zc-child whose processes are called `name`.
fn named_child(dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    fs::copy(CHILD, &exe).expect("copy zc-child");
    exe
}

/// One process in each layout, each writing its own number of bytes: every layout is one
/// group with the labels the layout names, holding exactly that process's bytes.
#[test]
fn every_layout_gets_its_labels_and_its_counts() {
    if !require_root_or_skip() {
        return;
    }
    let (h, u) = (container_id, pod_uid);
    let user = 4_100_000_000 + u64::from(std::process::id()) % 1_000_000;
    let (u3, u4, u5, u6) = (u(3), u(4), u(5), u(6));
    let layouts = vec![
        layout(
            "docker, systemd driver",
            format!("/system.slice/docker-{}.scope", h(1)),
            &h(1),
            "",
            "docker",
        ),
        layout(
            "docker, cgroupfs driver",
            format!("/docker/{}", h(2)),
            &h(2),
            "",
            "docker",
        ),
        layout(
            "containerd in Kubernetes, systemd driver, burstable",
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/\
                 cri-containerd-{}.scope",
                u3.replace('-', "_"),
                h(3)
            ),
            &h(3),
            &u3,
            "containerd",
        ),
        layout(
            "Kubernetes, cgroupfs driver, besteffort",
            format!("/kubepods/besteffort/pod{u4}/{}", h(4)),
            &h(4),
            &u4,
            "cri",
        ),
        layout(
            "CRI-O, systemd driver, guaranteed",
            format!(
                "/kubepods.slice/kubepods-pod{}.slice/crio-{}.scope",
                u5.replace('-', "_"),
                h(5)
            ),
            &h(5),
            &u5,
            "cri-o",
        ),
        layout(
            "CRI-O, cgroupfs driver",
            format!("/kubepods/burstable/pod{u6}/crio-{}", h(6)),
            &h(6),
            &u6,
            "cri-o",
        ),
        layout(
            "podman",
            format!("/machine.slice/libpod-{}.scope", h(7)),
            &h(7),
            "",
            "podman",
        ),
        layout(
            "podman, rootless",
            format!(
                "/user.slice/user-{user}.slice/user@{user}.service/user.slice/libpod-{}.scope",
                h(8)
            ),
            &h(8),
            "",
            "podman",
        ),
        layout(
            "a systemd session scope",
            format!("/user.slice/user-{user}.slice/session-{user}.scope"),
            &format!("session-{user}.scope"),
            "",
            "systemd",
        ),
        layout(
            "no container",
            format!("/zcprof-test-{}/plain", std::process::id()),
            "[host]",
            "",
            "",
        ),
    ];
    let mut cgroups = Cgroups::new();
    let leaves: Vec<PathBuf> = layouts.iter().map(|l| cgroups.make(&l.path)).collect();
    let d = Daemon::start(&["--comm", "zcct-[0-9]+"]);
    let dir = scratch_dir("containers");
    let mut expected = BTreeMap::new();
    let mut worker_syscalls = BTreeMap::new();
    for (i, (l, leaf)) in layouts.iter().zip(&leaves).enumerate() {
        let exe = named_child(&dir, &format!("zcct-{i}"));
        let bytes = 100_000 + 1000 * i as u64;
        let t = run_in(leaf, &exe, &dir, &["pwrite", &bytes.to_string(), "4096"]);
        let (calls, got, _) = t.cell("pwrite64");
        assert_eq!(got, bytes);
        eprintln!(
            "{}: {} -> {:?}: pwrite64 {calls} calls {bytes} bytes",
            l.what, l.path, l.want
        );
        expected.insert(l.want.clone(), (calls, bytes));
        worker_syscalls.insert(
            l.want.clone(),
            t.tracked_syscalls() + t.fixed_syscalls() + 1,
        );
    }
    let s = d.scrape();
    for line in s.iter().filter(|x| {
        x.name == "zcprof_ledger_bytes_total"
            && x.labels.get("syscall").map(String::as_str) == Some("pwrite64")
    }) {
        eprintln!("{}{:?} {}", line.name, line.labels, line.value);
    }
    let pw = [("syscall", "pwrite64")];
    let calls = per_group(&s, "zcprof_transfer_calls_total", &pw);
    let bytes = per_group(&s, "zcprof_ledger_bytes_total", &pw);
    let got: BTreeMap<Group, (u64, u64)> = bytes
        .iter()
        .map(|(g, b)| (g.clone(), (calls.get(g).copied().unwrap_or(0), *b)))
        .collect();
    assert_eq!(got, expected, "pwrite64 (calls, bytes) per group");
    // Every zcct thread was born in its leaf: no other group, and each group has at least
    // its worker's syscalls (the supervisor's come on top).
    let syscalls = per_group(&s, "zcprof_syscalls_total", &[]);
    assert_eq!(
        syscalls.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "groups with syscalls"
    );
    for (g, n) in &syscalls {
        assert!(
            n >= &worker_syscalls[g],
            "{g:?}: {n} syscalls, fewer than its worker's"
        );
    }
    d.stop();
}

/// How runc starts a container: its init process is moved into the container's cgroup by
/// its parent, then execs the container's program. The kernel entered the process before
/// the move, so zcprof must find its cgroup again after the exec. `--cgroup` and `--comm`
/// still scope the groups.
#[test]
fn a_process_moved_in_then_exec_d_counts_in_its_container_and_scopes_combine() {
    if !require_root_or_skip() {
        return;
    }
    let (id, uid, other_id) = (container_id(11), pod_uid(11), container_id(12));
    let pod_path = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/\
         cri-containerd-{id}.scope",
        uid.replace('-', "_")
    );
    let docker_path = format!("/system.slice/docker-{other_id}.scope");
    let mut cgroups = Cgroups::new();
    let pod = cgroups.make(&pod_path);
    let docker = cgroups.make(&docker_path);
    let all = Daemon::start(&["--comm", "zcct-r.*"]);
    let scoped = Daemon::start(&["--comm", "zcct-r.*", "--cgroup", "/kubepods.slice"]);
    let dir = scratch_dir("containers-runc");

    // The init: started here, moved by us, then exec'ing the program (which waits for GO).
    let exe = named_child(&dir, "zcct-run");
    let (tally, go) = (dir.join("run.json"), dir.join("go"));
    let mut init = Command::new("sh")
        .args(["-c", r#"read line; exec "$@""#, "sh"])
        .arg(&exe)
        .arg(&tally)
        .args([
            "wait-then",
            go.to_str().unwrap(),
            "pwrite",
            "300000",
            "4096",
        ])
        .env("ZC_CHILD_DIR", &dir)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run sh");
    let pid = init.id();
    fs::write(pod.join("cgroup.procs"), pid.to_string()).expect("move the init into its cgroup");
    init.stdin.take().unwrap().write_all(b"go\n").unwrap();
    // Its worker exists once the program runs; both daemons see it running, then it works.
    let children = format!("/proc/{pid}/task/{pid}/children");
    let start = Instant::now();
    while fs::read_to_string(&children)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no worker after 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    all.scrape();
    scoped.scrape();
    fs::write(&go, "").unwrap();
    let status = init.wait().expect("wait for the init");
    assert!(status.success(), "zcct-run: {status}");
    let t = Tally::read(&tally);
    let (calls, bytes, _) = t.cell("pwrite64");
    assert_eq!(bytes, 300_000);

    // Out of scope: another container (for --cgroup), another command name (for --comm).
    let other = run_in(
        &docker,
        &named_child(&dir, "zcct-rout"),
        &dir,
        &["pwrite", "70000", "4096"],
    );
    run_in(
        &pod,
        &named_child(&dir, "zcct-other"),
        &dir,
        &["pwrite", "90000", "4096"],
    );

    let in_pod: Group = (id.clone(), uid.clone(), "containerd".into());
    let in_docker: Group = (other_id.clone(), String::new(), "docker".into());
    let pw = [("syscall", "pwrite64")];
    for (d, want) in [
        (
            &all,
            vec![
                (in_docker, (other.cell("pwrite64").0, 70_000)),
                (in_pod.clone(), (calls, bytes)),
            ],
        ),
        (&scoped, vec![(in_pod.clone(), (calls, bytes))]),
    ] {
        let s = d.scrape();
        let c = per_group(&s, "zcprof_transfer_calls_total", &pw);
        let b = per_group(&s, "zcprof_ledger_bytes_total", &pw);
        let got: Vec<(Group, (u64, u64))> = b
            .iter()
            .map(|(g, b)| (g.clone(), (c.get(g).copied().unwrap_or(0), *b)))
            .collect();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "pwrite64 (calls, bytes) per group");
        // The init's own syscalls, from before the exec'd program forked its worker, are
        // the container's too: no other group has any.
        let groups: Vec<Group> = per_group(&s, "zcprof_syscalls_total", &[])
            .into_keys()
            .collect();
        assert_eq!(
            groups,
            want.iter().map(|(g, _)| g.clone()).collect::<Vec<_>>()
        );
        let n = per_group(&s, "zcprof_syscalls_total", &[])[&in_pod];
        assert!(
            n > t.tracked_syscalls() + t.fixed_syscalls() + 1,
            "{n} syscalls: the init's are missing"
        );
    }
    all.stop();
    scoped.stop();
}
