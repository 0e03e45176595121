//! `cargo xtask dist --verify`: installs the .deb on this machine, checks that what it promises
//! is there and works, removes it and checks that none of its files is left. The package is
//! removed even when a check fails, so that a failed run leaves the machine as it found it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{COMPLETIONS, MAN_PAGE};
use crate::process;

const BINARY: &str = "/usr/bin/zcprof";

/// Installs `deb`, checks it (`version` is the one it must report), removes it.
pub fn run(deb: &Path, version: &str) -> Result<()> {
    if let Some(status) = status().filter(|s| s.ends_with(" installed")) {
        println!(
            "dist: verify: zcprof is installed already ({status}): the .deb replaces it and is \
             removed at the end"
        );
    }
    process::stdout_of(process::command("dpkg").arg("-i").arg(deb))
        .context("dpkg cannot install the .deb")?;
    println!("dist: verify: dpkg -i {}: ok", deb.display());

    let files = installed_files();
    let checks = files
        .as_ref()
        .map_err(copy_error)
        .and_then(|f| check(f, version));
    let removal = remove(files.as_deref().unwrap_or_default());
    match (checks, removal) {
        (Ok(()), Ok(())) => {
            println!("dist: verify: ok");
            Ok(())
        }
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e.context("cargo xtask dist --verify failed")),
        (Err(check), Err(removal)) => Err(check.context(format!(
            "cargo xtask dist --verify failed, and so did removing the package: {removal:#}"
        ))),
    }
}

/// The files (not directories) `dpkg -L zcprof` lists.
fn installed_files() -> Result<Vec<PathBuf>> {
    let list = process::stdout_of(process::command("dpkg").args(["-L", "zcprof"]))?;
    Ok(list
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && !p.symlink_metadata().is_ok_and(|m| m.is_dir()))
        .collect())
}

/// The listing error again, for the checks (the removal still runs after it).
fn copy_error(e: &anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// Every check of the installed package; the first that fails is the error.
fn check(files: &[PathBuf], version: &str) -> Result<()> {
    let listed = |path: &str| -> Result<()> {
        ensure!(
            files.iter().any(|f| f == Path::new(path)),
            "the package does not install {path} (dpkg -L zcprof lists {} files)",
            files.len()
        );
        Ok(())
    };

    // The binary, from /usr/bin, not whatever zcprof comes first on PATH.
    listed(BINARY)?;
    let printed = process::stdout_of(process::command(BINARY).arg("--version"))?;
    ensure!(
        printed.trim() == format!("zcprof {version}"),
        "`{BINARY} --version` printed `{}`, not `zcprof {version}`",
        printed.trim()
    );
    println!("dist: verify: {BINARY} --version: {}", printed.trim());

    // It loads and attaches its programs (exit 0: zcprof can run here).
    process::stdout_of(process::command(BINARY).arg("doctor"))
        .context("the installed zcprof's doctor says it cannot run here")?;
    println!("dist: verify: {BINARY} doctor: ok");

    // The man page, where man looks for it.
    listed(MAN_PAGE.1)?;
    let found = process::stdout_of(process::command("man").args(["-w", "zcprof"]))
        .context("man does not find zcprof(1) (a dpkg path-exclude for /usr/share/man?)")?;
    ensure!(
        found.trim() == MAN_PAGE.1,
        "`man -w zcprof` finds {}, not {}",
        found.trim(),
        MAN_PAGE.1
    );
    println!("dist: verify: man -w zcprof: {}", found.trim());

    // The completions, in each shell's standard directory; bash's also parses.
    for (shell, _, path) in COMPLETIONS {
        listed(path)?;
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        ensure!(len > 0, "the {shell} completion script {path} is empty");
        if shell == "bash" {
            process::stdout_of(process::command("bash").arg("-n").arg(path))
                .with_context(|| format!("bash cannot parse {path}"))?;
        }
        println!("dist: verify: {shell} completions: {path} ({len} bytes)");
    }

    // The systemd unit, wherever cargo-deb put it; systemd-analyze accepts it.
    let unit = files
        .iter()
        .find(|f| f.ends_with("systemd/system/zcprof.service"))
        .context("the package installs no systemd/system/zcprof.service")?;
    let out = process::capture(process::command("systemd-analyze").arg("verify").arg(unit))?;
    let complaints = out.combined();
    if !out.status.success() || complaints.contains("zcprof.service") {
        bail!(
            "`systemd-analyze verify {}` does not accept the unit ({}):\n{}",
            unit.display(),
            out.status,
            process::tail(&complaints, 20)
        );
    }
    println!(
        "dist: verify: systemd-analyze verify {}: ok",
        unit.display()
    );
    Ok(())
}

/// `dpkg -r zcprof`, then every file of `files` must be gone. Purges what removal leaves
/// (dpkg's record of the maintainer scripts) so that the machine is as it was.
fn remove(files: &[PathBuf]) -> Result<()> {
    process::stdout_of(process::command("dpkg").args(["-r", "zcprof"]))
        .context("dpkg cannot remove zcprof")?;
    let left: Vec<String> = files
        .iter()
        .filter(|f| f.symlink_metadata().is_ok())
        .map(|f| f.display().to_string())
        .collect();
    ensure!(
        left.is_empty(),
        "dpkg -r zcprof left {} of its files: {}",
        left.len(),
        left.join(" ")
    );
    println!(
        "dist: verify: dpkg -r zcprof: all {} files gone",
        files.len()
    );
    if status().is_some_and(|s| s.ends_with(" config-files")) {
        process::stdout_of(process::command("dpkg").args(["-P", "zcprof"]))
            .context("dpkg cannot purge zcprof")?;
    }
    Ok(())
}

/// zcprof's dpkg status (`install ok installed`, `deinstall ok config-files`), if dpkg knows it.
fn status() -> Option<String> {
    let out =
        process::capture(process::command("dpkg-query").args(["-W", "-f=${Status}", "zcprof"]))
            .ok()?;
    (out.status.success() && !out.stdout.trim().is_empty()).then(|| out.stdout.trim().to_string())
}
