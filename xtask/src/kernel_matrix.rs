//! `cargo xtask kernel-matrix`: zcprof's checks on other kernels. Each packaged kernel boots
//! in a virtme-ng VM (software emulation, 2 vCPUs, 2 GiB) that shares the host's root file
//! system, and this very binary runs the checks inside it (`kernel-matrix-guest`); the host's
//! own kernel runs them directly, without a VM (no /boot image of it is needed). Kernels run
//! one after the other; the results come back as files and make one table.
//!
//! Files: `images.rs` (fetching and caching Debian's kernel packages), `vm.rs` (booting one,
//! or running on the host; the deadline), `guest.rs` (the guest's environment and the order
//! of the checks), `checks.rs` (the checks), `churn.rs` (the fork/exit churn the churn check
//! profiles), `verdict.rs` (pass / degraded / unsupported / fail), `table.rs`.
//!
//! Cache: `$ZCPROF_KERNEL_CACHE`, else `<target>/kernel-matrix`: `images/` (the apt lists,
//! the .debs and one unpacked directory per kernel), `tools/` (the apt configuration that
//! installs qemu, the virtme-ng venv), `results/<kernel>/` (the last run's files and console
//! log).

mod checks;
pub mod churn;
pub mod guest;
mod images;
mod table;
mod verdict;
mod vm;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::builder::PossibleValuesParser;
use serde::Serialize;
use serde_json::json;

use crate::{cargo, process, setup};
use guest::GuestEnv;
use verdict::{CheckResult, Status};

/// The kernel that runs on this machine: checked directly, without a VM.
const HOST: &str = "host";

/// Every kernel the matrix knows, in the default order.
const KERNELS: [&str; 5] = ["5.10", "6.1", "6.12", "7.2", HOST];

/// Arguments of `cargo xtask kernel-matrix`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Kernels to check, in this order (repeat the flag or list several; default: all)
    #[arg(long = "kernel", value_name = "VERSION", num_args = 1..,
          value_parser = PossibleValuesParser::new(KERNELS))]
    pub kernels: Vec<String>,
    /// Write every kernel's results (zcprof's documents included) to FILE as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Seconds one kernel may take, boot and every check included; the VM is killed then
    #[arg(long, default_value_t = 900, value_name = "SECS")]
    pub timeout: u64,
    /// Write the table into README.md's support table (between its kernel-matrix markers)
    #[arg(long)]
    pub readme: bool,
}

/// README.md's support table lies between these lines.
const README_BEGIN: &str = "<!-- kernel-matrix: begin (cargo xtask kernel-matrix --readme) -->";
const README_END: &str = "<!-- kernel-matrix: end -->";

/// Replaces README.md's support table with `table`.
fn write_readme(table: &str) -> Result<()> {
    let path = cargo::workspace_root()?.join("README.md");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(begin), Some(end)) = (text.find(README_BEGIN), text.find(README_END)) else {
        bail!(
            "{} has no support table markers ({README_BEGIN} … {README_END})",
            path.display()
        );
    };
    let updated = format!(
        "{}{README_BEGIN}\n{table}\n{}",
        &text[..begin],
        &text[end..]
    );
    std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))
}

/// One kernel's run, as the table and `--json` show it.
#[derive(Debug, Serialize)]
pub struct KernelRun {
    pub kernel: String,
    /// `uname -r` of the kernel the checks ran on.
    pub release: Option<String>,
    /// Booted in a VM (false: the host's kernel, directly).
    pub vm: bool,
    pub packages: Vec<String>,
    pub boot_s: Option<f64>,
    pub total_s: Option<f64>,
    pub end: Option<vm::End>,
    /// Why the kernel could not be checked (fetch, boot or guest failure).
    pub error: Option<String>,
    pub env: Option<GuestEnv>,
    pub results: Vec<CheckResult>,
    pub console_log: Option<PathBuf>,
}

impl KernelRun {
    fn new(kernel: &str) -> Self {
        Self {
            kernel: kernel.to_owned(),
            release: None,
            vm: kernel != HOST,
            packages: Vec::new(),
            boot_s: None,
            total_s: None,
            end: None,
            error: None,
            env: None,
            results: Vec::new(),
            console_log: None,
        }
    }

    /// Every check passed, degraded or could not run on this kernel.
    pub fn ok(&self) -> bool {
        self.error.is_none()
            && !self.results.is_empty()
            && self.results.iter().all(|r| r.status.acceptable())
    }
}

pub fn run(args: &Args) -> Result<()> {
    process::require_root("cargo xtask kernel-matrix")?;
    let started = Instant::now();
    let mut kernels: Vec<&str> = Vec::new();
    for k in &args.kernels {
        let k = KERNELS
            .into_iter()
            .find(|n| n == k)
            .with_context(|| format!("unknown kernel {k}"))?;
        if !kernels.contains(&k) {
            kernels.push(k);
        }
    }
    if kernels.is_empty() {
        kernels = KERNELS.to_vec();
    }
    let need_vm = kernels.iter().any(|k| *k != HOST);
    if need_vm {
        setup::run_with_vm_tools(true)?;
    } else {
        setup::run()?;
    }

    cargo::run(cargo::command().args(["build", "--release", "-p", "zcprof"]))?;
    let zcprof = cargo::built_binary("release", "zcprof")?;
    // The guest is this binary (`cargo xtask` just built it).
    let xtask = std::env::current_exe().context("this binary's path")?;
    let cache = setup::vm_tools::cache_dir()?;
    let timeout = Duration::from_secs(args.timeout.max(10));

    let mut runs: Vec<KernelRun> = kernels.iter().map(|k| KernelRun::new(k)).collect();

    // Fetch every image before the first boot: a network problem shows in seconds.
    let mut apt = None;
    let mut vmlinuz: Vec<Option<PathBuf>> = Vec::new();
    for run in &mut runs {
        if !run.vm {
            vmlinuz.push(None);
            continue;
        }
        let spec = images::spec(&run.kernel).expect("KERNELS and SPECS agree");
        match images::ensure(&cache, spec, &mut apt) {
            Ok(image) => {
                println!(
                    "kernel-matrix: {}: {} ({})",
                    run.kernel,
                    image.release,
                    image.vmlinuz.display()
                );
                run.packages = image.packages;
                run.release = Some(image.release);
                vmlinuz.push(Some(image.vmlinuz));
            }
            Err(e) => {
                println!("kernel-matrix: {}: FAILED to fetch: {e:#}", run.kernel);
                run.error = Some(verdict::one_line(&format!("{e:#}")));
                vmlinuz.push(None);
            }
        }
    }

    let vng = setup::vm_tools::venv_dir(&cache).join("bin").join("vng");
    for (run, vmlinuz) in runs.iter_mut().zip(vmlinuz) {
        if run.error.is_some() {
            continue;
        }
        let out = cache.join("results").join(&run.kernel);
        if out.exists() {
            fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
        }
        fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let guest_line = format!(
            "{} kernel-matrix-guest --vm --zcprof {} --out {}",
            vm::shell_quote(&xtask.to_string_lossy()),
            vm::shell_quote(&zcprof.to_string_lossy()),
            vm::shell_quote(&out.to_string_lossy()),
        );
        // A guest that never started is booted once more: TCG qemu here has died, rarely,
        // on an internal assertion before the guest's first instruction, which says nothing
        // about zcprof. A kernel that cannot boot fails twice.
        let mut attempt = 1;
        let supervised = loop {
            let cmd = match &vmlinuz {
                Some(vmlinuz) => {
                    println!(
                        "kernel-matrix: {}: booting (TCG, timeout {} s)",
                        run.kernel,
                        timeout.as_secs()
                    );
                    vm::vng_command(&vng, vmlinuz, &out, &guest_line)
                }
                None => {
                    println!(
                        "kernel-matrix: {}: running on this machine's kernel",
                        run.kernel
                    );
                    let mut cmd = process::command(&xtask);
                    cmd.arg("kernel-matrix-guest")
                        .arg("--zcprof")
                        .arg(&zcprof)
                        .arg("--out")
                        .arg(&out);
                    cmd
                }
            };
            let console = cache
                .join("results")
                .join(format!("{}.console.log", run.kernel));
            let mut shown = BTreeSet::new();
            let kernel = run.kernel.clone();
            let supervised = vm::supervise(cmd, &out, &console, timeout, || {
                for r in read_results(&out) {
                    if shown.insert(r.check.clone()) {
                        println!(
                            "kernel-matrix: {kernel}: {}: {:?} ({:.1}s) {}",
                            r.check, r.status, r.elapsed_s, r.detail
                        );
                    }
                }
            });
            let never_started = matches!(
                &supervised,
                Ok(s) if s.end == vm::End::Exited && s.boot_s.is_none()
            );
            if !(never_started && vmlinuz.is_some() && attempt == 1) {
                break supervised;
            }
            println!(
                "kernel-matrix: {}: the guest never started; booting once more ({})",
                run.kernel,
                vm::console_tail(&console, 1).trim()
            );
            attempt += 1;
        };
        collect(run, &out, supervised);
    }

    println!("{}", table::render(&runs));
    if args.readme {
        write_readme(&table::markdown(&runs))?;
        println!("kernel-matrix: README.md's support table written");
    }
    let total_s = started.elapsed().as_secs_f64();
    println!("kernel-matrix: total {total_s:.0}s");
    if let Some(path) = &args.json {
        let doc = json!({
            "total_s": total_s,
            "ok": runs.iter().all(KernelRun::ok),
            "zcprof": zcprof,
            "kernels": runs,
        });
        let text = serde_json::to_string_pretty(&doc).context("formatting the JSON")?;
        fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("JSON: {}", path.display());
    }
    let bad: Vec<&str> = runs
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.kernel.as_str())
        .collect();
    if !bad.is_empty() {
        bail!("kernel-matrix: {} failed (see the table)", bad.join(", "));
    }
    println!("kernel-matrix: every kernel passed (or degraded as zcprof declared)");
    Ok(())
}

/// The results the guest has written so far, in check order.
fn read_results(out: &Path) -> Vec<CheckResult> {
    guest::check_names()
        .iter()
        .filter_map(|c| fs::read_to_string(guest::result_file(out, c)).ok())
        .filter_map(|t| serde_json::from_str(&t).ok())
        .collect()
}

/// Fills `run` from the guest's files and how the run ended; checks without a result file
/// are skipped with the reason.
fn collect(run: &mut KernelRun, out: &Path, supervised: Result<vm::Supervised>) {
    let supervised = match supervised {
        Ok(s) => s,
        Err(e) => {
            run.error = Some(verdict::one_line(&format!("{e:#}")));
            return;
        }
    };
    run.boot_s = supervised.boot_s;
    run.total_s = Some(supervised.total_s);
    run.end = Some(supervised.end);
    run.console_log = Some(supervised.console_log.clone());
    run.env = fs::read_to_string(out.join("env.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if let Some(env) = &run.env {
        run.release = Some(env.release.clone());
    }
    let found = read_results(out);
    let missing_why = match supervised.end {
        vm::End::Finished => "the guest wrote no result".to_owned(),
        vm::End::TimedOut => format!(
            "not reached: the kernel's run was killed after {:.0} s",
            supervised.total_s
        ),
        vm::End::Exited if supervised.boot_s.is_none() => "the guest never started".to_owned(),
        vm::End::Exited => "not reached: the guest exited early".to_owned(),
    };
    for name in guest::check_names() {
        match found.iter().find(|r| r.check == name) {
            Some(r) => run.results.push(r.clone()),
            None => run
                .results
                .push(CheckResult::new(&name, Status::Skipped, &missing_why)),
        }
    }
    if supervised.end != vm::End::Finished {
        let tail = vm::console_tail(&supervised.console_log, 15);
        let what = match (supervised.end, supervised.boot_s) {
            (vm::End::TimedOut, _) => format!("timed out after {:.0} s", supervised.total_s),
            (_, None) => "the guest never started (boot failed?)".to_owned(),
            _ => "the guest exited before it was done".to_owned(),
        };
        println!(
            "kernel-matrix: {}: {what}; console log {}:\n{tail}",
            run.kernel,
            supervised.console_log.display()
        );
        run.error = Some(format!(
            "{what} (console log: {})",
            supervised.console_log.display()
        ));
    }
}
