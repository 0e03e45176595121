//! `cargo xtask setup`: installs what a fresh Debian 12 machine lacks to build and test
//! zcprof. Idempotent; prints one line per step:
//! `setup: <step>: already present` / `installed (<secs>s)` / `FAILED: <what>; <remedy>`.

use std::{fs, io::Write as _, path::Path, process::Command, time::Instant};

use anyhow::{Result, bail};

use crate::{cargo, process};

pub mod vm_tools;

/// Debian packages the tests and benchmarks use (prometheus provides promtool).
const TEST_PACKAGES: &[&str] = &[
    "bpftool",
    "strace",
    "linux-perf",
    "bpftrace",
    "prometheus",
    // A JVM names its threads after they start: the thread-name test runs one.
    "openjdk-17-jre-headless",
    // tests/tests/top.rs drives `zcprof top` in a terminal.
    "tmux",
    // tests/tests/findings.rs profiles `python3 -m http.server` serving a file to curl.
    "python3",
    "curl",
    // The bench's service case (f): nginx serves files to wrk. The bench runs its own nginx
    // from a private prefix; a system nginx the package may start is left alone.
    "nginx",
    "wrk",
];

/// Debian packages `cargo xtask dist` uses: objdump and strip (binutils); for `--verify`, man
/// (man-db) and systemd-analyze (systemd).
const DIST_PACKAGES: &[&str] = &["binutils", "man-db", "systemd"];

const TRACEFS: &str = "/sys/kernel/tracing";
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Lines of a failed command's output shown under its `FAILED` line.
const FAILURE_TAIL_LINES: usize = 30;

/// The steps every command needs (build, test, profile).
pub fn run() -> Result<()> {
    run_steps(None, false)
}

/// [`run`] plus what `cargo xtask dist` needs: cargo-deb and the tools that inspect and check
/// the package. Only dist asks for them: cargo-deb takes minutes to compile.
pub fn run_with_dist_tools() -> Result<()> {
    run_steps(None, true)
}

/// [`run`] plus the VM tools of `cargo xtask kernel-matrix`: a required step for it, an
/// optional one for `cargo xtask setup` (nothing else boots VMs).
pub fn run_with_vm_tools(required: bool) -> Result<()> {
    run_steps(
        Some(if required {
            Need::Required
        } else {
            Need::Optional
        }),
        false,
    )
}

fn run_steps(vm: Option<Need>, dist: bool) -> Result<()> {
    let started = Instant::now();
    let mut report = Report::default();

    // a. Refresh the apt lists only if some apt package is missing. The LLVM packages
    // depend on the nightly's LLVM, unknown until nightly is installed: then refresh too.
    let llvm_before = nightly_installed()
        .is_ok_and(|installed| installed)
        .then(|| nightly_llvm_major().ok())
        .flatten();
    let mut wanted: Vec<String> = TEST_PACKAGES.iter().map(|p| p.to_string()).collect();
    if let Some(major) = llvm_before {
        wanted.extend(llvm_packages(major));
    }
    if dist {
        wanted.extend(DIST_PACKAGES.iter().map(|p| p.to_string()));
    }
    let need_update = llvm_before.is_none() || !missing_packages(&wanted).is_empty();
    report.step("apt package lists", Need::Optional, || {
        if need_update {
            apt_update()
        } else {
            Ok(Done::Present)
        }
    });

    // b. Nightly toolchain (the kernel programs need -Z build-std=core).
    let nightly_ok = report.step("nightly toolchain", Need::Required, nightly_toolchain);

    // c. rust-src for nightly.
    report.step("rust-src (nightly)", Need::Required, || {
        if !nightly_ok {
            return Err(Failure::after_failed("nightly toolchain"));
        }
        rust_src()
    });

    // d. LLVM development packages matching the nightly's LLVM major version.
    let major = if nightly_ok {
        nightly_llvm_major()
    } else {
        Err(Failure::after_failed("nightly toolchain"))
    };
    let llvm_name = match &major {
        Ok(m) => format!("LLVM {m} dev packages"),
        Err(_) => "LLVM dev packages".to_string(),
    };
    let llvm_ok = report.step(&llvm_name, Need::Required, || {
        let major = major.clone()?;
        install_packages(&llvm_packages(major), &llvm_remedy(major))
    });

    // e. bpf-linker built against that LLVM.
    let linker_name = match &major {
        Ok(m) => format!("bpf-linker (LLVM {m})"),
        Err(_) => "bpf-linker".to_string(),
    };
    report.step(&linker_name, Need::Required, || {
        let major = major.clone()?;
        bpf_linker(major, llvm_ok)
    });

    // f. Packages the tests and benchmarks run.
    let test_name = format!("test packages ({})", TEST_PACKAGES.join(" "));
    report.step(&test_name, Need::Optional, || {
        let packages: Vec<String> = TEST_PACKAGES.iter().map(|p| p.to_string()).collect();
        install_packages(
            &packages,
            "install them with apt-get; the tests that use them will fail",
        )
    });

    // g. tracefs (only a warning: zcprof uses raw tracepoints and mounts it itself).
    report.step(&format!("tracefs at {TRACEFS}"), Need::Optional, tracefs);

    // h. Kernel BTF and privileges.
    report.step(&format!("kernel BTF ({VMLINUX_BTF})"), Need::Optional, || {
        if Path::new(VMLINUX_BTF).exists() {
            Ok(Done::Present)
        } else {
            Err(Failure::new(
                format!("{VMLINUX_BTF} does not exist"),
                "use a kernel built with CONFIG_DEBUG_INFO_BTF=y; zcprof cannot load without BTF",
            ))
        }
    });
    report.step("root privileges", Need::Optional, || {
        if process::is_root() {
            Ok(Done::Present)
        } else {
            Err(Failure::new(
                "not running as root",
                "tests load BPF programs and need root or CAP_BPF+CAP_PERFMON (sudo -E cargo xtask …)",
            ))
        }
    });

    // i. qemu, virtme-ng and what they need to boot a kernel (kernel-matrix only).
    if let Some(need) = vm {
        report.step(
            "VM tools (qemu-system-x86, busybox-static, kmod, virtme-ng)",
            need,
            vm_tools::install,
        );
    }

    // j. cargo-deb and the package tools (dist only).
    if dist {
        let dist_name = format!("dist packages ({})", DIST_PACKAGES.join(" "));
        report.step(&dist_name, Need::Required, || {
            let packages: Vec<String> = DIST_PACKAGES.iter().map(|p| p.to_string()).collect();
            install_packages(
                &packages,
                "install them with apt-get: dist needs objdump and strip, --verify man and \
                 systemd-analyze",
            )
        });
        report.step("cargo-deb", Need::Required, cargo_deb);
    }

    println!("setup: done in {:.1}s", started.elapsed().as_secs_f64());
    if !report.required_failed.is_empty() {
        bail!(
            "setup failed: {} (see the FAILED lines above)",
            report.required_failed.join(", ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reporting

enum Done {
    Present,
    Installed,
}

/// A failed step: what went wrong, what the user can do, and optionally the output of
/// the command that failed.
#[derive(Clone)]
struct Failure {
    what: String,
    remedy: String,
    detail: Option<String>,
}

impl Failure {
    fn new(what: impl Into<String>, remedy: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            remedy: remedy.into(),
            detail: None,
        }
    }

    fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn after_failed(step: &str) -> Self {
        Self::new(
            format!("skipped because step '{step}' failed"),
            format!("fix '{step}' first"),
        )
    }

    /// A command could not be started.
    fn spawn(err: anyhow::Error, remedy: impl Into<String>) -> Self {
        Self::new(format!("{err:#}"), remedy)
    }
}

#[derive(PartialEq)]
enum Need {
    Required,
    Optional,
}

#[derive(Default)]
struct Report {
    required_failed: Vec<String>,
}

impl Report {
    /// Runs one step and prints its line; returns whether it succeeded.
    fn step(&mut self, name: &str, need: Need, f: impl FnOnce() -> Result<Done, Failure>) -> bool {
        print!("setup: {name}: ");
        // Only progress display; a failed flush is not worth failing setup for.
        let _ = std::io::stdout().flush();
        let started = Instant::now();
        match f() {
            Ok(Done::Present) => {
                println!("already present");
                true
            }
            Ok(Done::Installed) => {
                println!("installed ({:.1}s)", started.elapsed().as_secs_f64());
                true
            }
            Err(failure) => {
                println!("FAILED: {}; {}", failure.what, failure.remedy);
                if let Some(detail) = failure.detail.filter(|d| !d.trim().is_empty()) {
                    println!("{detail}");
                }
                if need == Need::Required {
                    self.required_failed.push(name.to_string());
                }
                false
            }
        }
    }
}

/// Runs a command with captured output; `Ok(())` if it succeeded, else a failure whose
/// detail is the tail of its output.
fn run_quietly(cmd: &mut Command, remedy: &str) -> Result<(), Failure> {
    let out = process::capture(cmd).map_err(|e| Failure::spawn(e, remedy))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Failure::new(
        format!("`{}` failed ({})", process::describe(cmd), out.status),
        remedy,
    )
    .with_detail(process::tail(&out.combined(), FAILURE_TAIL_LINES)))
}

// ---------------------------------------------------------------------------------------
// Rust toolchain

fn rustup() -> Command {
    process::command("rustup")
}

const RUSTUP_REMEDY: &str = "install rustup from https://rustup.rs and re-run";

/// Whether `rustup toolchain list` has an (undated) nightly toolchain.
fn nightly_installed() -> Result<bool, Failure> {
    let mut cmd = rustup();
    cmd.args(["toolchain", "list"]);
    let out = process::capture(&mut cmd).map_err(|e| Failure::spawn(e, RUSTUP_REMEDY))?;
    if !out.status.success() {
        return Err(Failure::new(
            format!("`rustup toolchain list` failed ({})", out.status),
            RUSTUP_REMEDY,
        )
        .with_detail(process::tail(&out.combined(), FAILURE_TAIL_LINES)));
    }
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|name| {
            // "nightly" or "nightly-<host>", but not a dated "nightly-2026-05-19-<host>".
            name == "nightly"
                || name
                    .strip_prefix("nightly-")
                    .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
        }))
}

fn nightly_toolchain() -> Result<Done, Failure> {
    if nightly_installed()? {
        return Ok(Done::Present);
    }
    run_quietly(
        rustup().args(["toolchain", "install", "nightly", "--profile", "minimal"]),
        "check the network, then run `rustup toolchain install nightly --profile minimal`",
    )?;
    Ok(Done::Installed)
}

fn rust_src() -> Result<Done, Failure> {
    let mut cmd = rustup();
    cmd.args(["component", "list", "--toolchain", "nightly", "--installed"]);
    let out = process::capture(&mut cmd).map_err(|e| Failure::spawn(e, RUSTUP_REMEDY))?;
    if out.status.success() && out.stdout.lines().any(|l| l.trim().starts_with("rust-src")) {
        return Ok(Done::Present);
    }
    run_quietly(
        rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        "check the network, then run `rustup component add rust-src --toolchain nightly`",
    )?;
    Ok(Done::Installed)
}

/// The LLVM major version of the nightly rustc (`LLVM version: 22.1.4` → 22).
fn nightly_llvm_major() -> Result<u32, Failure> {
    let remedy = "check that `rustc +nightly -vV` works";
    let mut cmd = process::command("rustc");
    cmd.args(["+nightly", "-vV"]);
    let out = process::capture(&mut cmd).map_err(|e| Failure::spawn(e, remedy))?;
    if !out.status.success() {
        return Err(Failure::new(
            format!("`rustc +nightly -vV` failed ({})", out.status),
            remedy,
        )
        .with_detail(process::tail(&out.combined(), FAILURE_TAIL_LINES)));
    }
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .ok_or_else(|| {
            Failure::new(
                "`rustc +nightly -vV` printed no parsable `LLVM version:` line",
                remedy,
            )
            .with_detail(process::tail(&out.stdout, FAILURE_TAIL_LINES))
        })
}

fn llvm_packages(major: u32) -> Vec<String> {
    vec![
        format!("llvm-{major}-dev"),
        format!("libpolly-{major}-dev"),
        "zlib1g-dev".to_string(),
        "libzstd-dev".to_string(),
    ]
}

fn llvm_remedy(major: u32) -> String {
    format!(
        "bpf-linker needs the LLVM {major} the nightly uses: check `apt-cache policy llvm-{major}-dev` \
         (Debian 12 ships llvm-22-dev in bookworm-security; other majors come from https://apt.llvm.org)"
    )
}

// ---------------------------------------------------------------------------------------
// bpf-linker

fn bpf_linker(major: u32, llvm_ok: bool) -> Result<Done, Failure> {
    let stamp = process::cargo_home().join("bpf-linker.llvm-major");
    let runs = || {
        process::capture(process::command("bpf-linker").arg("--version"))
            .is_ok_and(|out| out.status.success())
    };
    let stamp_matches = fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == major.to_string());
    if stamp_matches && runs() {
        return Ok(Done::Present);
    }
    if !llvm_ok {
        return Err(Failure::after_failed(&format!("LLVM {major} dev packages")));
    }

    let prefix = format!("/usr/lib/llvm-{major}");
    let command_line = format!(
        "LLVM_PREFIX={prefix} cargo install bpf-linker --no-default-features --features llvm-{major} --force"
    );
    let remedy = format!("run `{command_line}` and read its errors");
    let mut cmd = cargo::command();
    cmd.args([
        "install",
        "bpf-linker",
        "--no-default-features",
        "--features",
    ])
    .arg(format!("llvm-{major}"))
    .arg("--force")
    .env("LLVM_PREFIX", &prefix)
    // Not in the workspace, so that its .cargo/config.toml does not apply.
    .current_dir(std::env::temp_dir());
    run_quietly(&mut cmd, &remedy)?;

    if !runs() {
        return Err(Failure::new(
            "bpf-linker was installed but `bpf-linker --version` does not run",
            format!(
                "add {} to PATH",
                process::cargo_home().join("bin").display()
            ),
        ));
    }
    fs::write(&stamp, format!("{major}\n")).map_err(|e| {
        Failure::new(
            format!("could not write {}: {e}", stamp.display()),
            "make the cargo home directory writable",
        )
    })?;
    Ok(Done::Installed)
}

// ---------------------------------------------------------------------------------------
// cargo-deb

fn cargo_deb() -> Result<Done, Failure> {
    let runs = || {
        process::capture(cargo::command().args(["deb", "--version"]))
            .is_ok_and(|out| out.status.success())
    };
    if runs() {
        return Ok(Done::Present);
    }
    let mut cmd = cargo::command();
    cmd.args(["install", "cargo-deb", "--locked"])
        // Not in the workspace, so that its .cargo/config.toml does not apply.
        .current_dir(std::env::temp_dir());
    run_quietly(
        &mut cmd,
        "cannot install cargo-deb, which builds the .deb: run `cargo install cargo-deb --locked` \
         (it needs crates.io) and read its errors",
    )?;
    if !runs() {
        return Err(Failure::new(
            "cargo-deb was installed but `cargo deb --version` does not run",
            format!(
                "add {} to PATH",
                process::cargo_home().join("bin").display()
            ),
        ));
    }
    Ok(Done::Installed)
}

// ---------------------------------------------------------------------------------------
// apt

fn is_installed(package: &str) -> bool {
    process::capture(process::command("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|out| out.status.success() && out.stdout.contains("install ok installed"))
}

fn missing_packages(packages: &[String]) -> Vec<String> {
    packages
        .iter()
        .filter(|p| !is_installed(p))
        .cloned()
        .collect()
}

fn apt_get() -> Command {
    let mut cmd = process::command("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        // Wait for another apt/dpkg run instead of failing at once.
        .args(["-o", "DPkg::Lock::Timeout=300"]);
    cmd
}

fn apt_update() -> Result<Done, Failure> {
    if !process::is_root() {
        return Err(Failure::new(
            "not root, cannot run apt-get update",
            "run `sudo -E cargo xtask setup`",
        ));
    }
    run_quietly(
        apt_get().args(["-qq", "update"]),
        "check the network and /etc/apt/sources.list*",
    )?;
    Ok(Done::Installed)
}

/// Installs those of `packages` that are missing, in one apt-get call. If that fails,
/// tries them one by one to report which ones fail.
fn install_packages(packages: &[String], remedy: &str) -> Result<Done, Failure> {
    let missing = missing_packages(packages);
    if missing.is_empty() {
        return Ok(Done::Present);
    }
    let list = missing.join(" ");
    if !process::is_root() {
        return Err(Failure::new(
            format!("missing {list} and not root"),
            format!("run `sudo -E cargo xtask setup` or `sudo apt-get install {list}`"),
        ));
    }
    let install = || {
        let mut cmd = apt_get();
        cmd.args(["install", "-y", "-q", "--no-install-recommends"]);
        cmd
    };
    let Err(batch) = run_quietly(install().args(&missing), remedy) else {
        return Ok(Done::Installed);
    };

    // Find out which packages fail.
    let mut failed = Vec::new();
    let mut details = Vec::new();
    for package in &missing {
        let out = process::capture(install().arg(package));
        let ok = out.as_ref().is_ok_and(|o| o.status.success()) && is_installed(package);
        if !ok {
            failed.push(package.as_str());
            let reason = match out {
                Ok(out) => out
                    .combined()
                    .lines()
                    .filter(|l| l.starts_with("E:"))
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(e) => format!("{e:#}"),
            };
            details.push(format!("    | {package}: {reason}"));
        }
    }
    if failed.is_empty() {
        // Each one installed on its own; the batch failure was transient.
        return Ok(Done::Installed);
    }
    Err(Failure::new(
        format!("apt-get install failed for {}", failed.join(" ")),
        remedy,
    )
    .with_detail(if details.is_empty() {
        batch.detail.unwrap_or_default()
    } else {
        details.join("\n")
    }))
}

// ---------------------------------------------------------------------------------------
// Kernel

fn tracefs_mounted() -> bool {
    fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|l| {
            let mut fields = l.split_whitespace().skip(1);
            fields.next() == Some(TRACEFS) && fields.next() == Some("tracefs")
        })
    })
}

fn tracefs() -> Result<Done, Failure> {
    if tracefs_mounted() {
        return Ok(Done::Present);
    }
    let remedy = "only a warning: zcprof attaches raw tracepoints, which do not need tracefs; \
                  tools like bpftrace and perf need `mount -t tracefs tracefs /sys/kernel/tracing`";
    run_quietly(
        process::command("mount").args(["-t", "tracefs", "tracefs", TRACEFS]),
        remedy,
    )?;
    if !tracefs_mounted() {
        return Err(Failure::new(
            format!("mount succeeded but {TRACEFS} is not in /proc/mounts"),
            remedy,
        ));
    }
    Ok(Done::Installed)
}
