//! The setup step for `cargo xtask kernel-matrix`: qemu, the static busybox and kmod that
//! virtme-ng puts into its guests, and virtme-ng itself (from PyPI, in a venv of its own in
//! the kernel-matrix cache).
//!
//! On Debian 12, bookworm's qemu (7.2) is too old for virtme-ng's guests; the one from
//! bookworm-backports is used, installed through a private apt configuration that lists only
//! bookworm's suites, so that the host's sources stay as they are and nothing from a newer
//! release (a new libc) can be pulled in.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{Done, Failure, apt_get, install_packages, is_installed, run_quietly};
use crate::{cargo, private_apt, process};

/// Debian packages virtme-ng needs besides qemu (python3-venv: for the venv).
const PACKAGES: &[&str] = &["busybox-static", "kmod", "python3-venv"];
const QEMU: &str = "qemu-system-x86";
/// The virtme-ng release the matrix was developed with.
const VIRTME_NG: &str = "virtme-ng==1.42";
/// The venv's record of what it holds.
const VENV_STAMP: &str = "zcprof-virtme-ng";
/// The suites qemu may come from on bookworm (never a newer release's).
const BOOKWORM_SOURCES: &[(&str, &str)] = &[
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian", "bookworm-updates"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
    ("http://deb.debian.org/debian", "bookworm-backports"),
];

pub(super) fn install() -> Result<Done, Failure> {
    let cache = cache_dir().map_err(|e| {
        Failure::new(
            format!("no cache directory: {e:#}"),
            "set ZCPROF_KERNEL_CACHE to a writable directory",
        )
    })?;
    let mut installed = false;

    let packages: Vec<String> = PACKAGES.iter().map(|p| p.to_string()).collect();
    let remedy = format!("apt-get install {}", PACKAGES.join(" "));
    installed |= matches!(install_packages(&packages, &remedy)?, Done::Installed);

    if !is_installed(QEMU) {
        install_qemu(&cache.join("tools").join("apt"))?;
        installed = true;
    }

    let venv = venv_dir(&cache);
    let stamp_ok = fs::read_to_string(venv.join(VENV_STAMP)).is_ok_and(|s| s.trim() == VIRTME_NG);
    if !(stamp_ok && venv.join("bin/vng").is_file()) {
        install_virtme_ng(&venv)?;
        installed = true;
    }
    Ok(if installed {
        Done::Installed
    } else {
        Done::Present
    })
}

fn is_bookworm() -> bool {
    fs::read_to_string("/etc/os-release")
        .is_ok_and(|t| t.lines().any(|l| l == "VERSION_CODENAME=bookworm"))
}

fn install_qemu(apt_dir: &Path) -> Result<(), Failure> {
    if !process::is_root() {
        return Err(Failure::new(
            format!("{QEMU} is missing and not root"),
            "run `sudo -E cargo xtask setup`",
        ));
    }
    if !is_bookworm() {
        let packages = [QEMU.to_owned()];
        install_packages(&packages, &format!("apt-get install {QEMU}"))?;
        return Ok(());
    }
    let remedy = format!(
        "install {QEMU} from bookworm-backports: `apt-get install -t bookworm-backports {QEMU}` \
         (with bookworm-backports in the apt sources)"
    );
    let io = |what: &str, e: std::io::Error| {
        Failure::new(
            format!("{what}: {e}"),
            "make the kernel-matrix cache writable",
        )
    };
    let config = private_apt::configure(apt_dir, BOOKWORM_SOURCES, false)
        .map_err(|e| io("writing the apt configuration", e))?;
    run_quietly(
        apt_get().env("APT_CONFIG", &config).args(["-qq", "update"]),
        &remedy,
    )?;
    run_quietly(
        apt_get().env("APT_CONFIG", &config).args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
            QEMU,
        ]),
        &remedy,
    )?;
    if !is_installed(QEMU) {
        return Err(Failure::new(
            format!("apt-get installed nothing named {QEMU}"),
            remedy,
        ));
    }
    Ok(())
}

fn install_virtme_ng(venv: &Path) -> Result<(), Failure> {
    // The system's python (its venv module is python3-venv, installed above), not a version
    // manager's shim that may change under the venv.
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let remedy = format!(
        "check the network, then `{python} -m venv {0} && {0}/bin/pip install {VIRTME_NG}`",
        venv.display()
    );
    if venv.exists() {
        // A venv from an interrupted run or another virtme-ng: start over.
        fs::remove_dir_all(venv).map_err(|e| {
            Failure::new(format!("removing {}: {e}", venv.display()), remedy.clone())
        })?;
    }
    run_quietly(
        process::command(python).args(["-m", "venv"]).arg(venv),
        &remedy,
    )?;
    run_quietly(
        process::command(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            VIRTME_NG,
        ]),
        &remedy,
    )?;
    fs::write(venv.join(VENV_STAMP), format!("{VIRTME_NG}\n"))
        .map_err(|e| Failure::new(format!("writing the venv's stamp: {e}"), remedy.clone()))?;
    Ok(())
}

/// The cache directory: `$ZCPROF_KERNEL_CACHE`, else `<target>/kernel-matrix`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("ZCPROF_KERNEL_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    Ok(cargo::target_dir()?.join("kernel-matrix"))
}

/// The virtme-ng venv (installed by `cargo xtask setup`).
pub fn venv_dir(cache: &Path) -> PathBuf {
    cache.join("tools").join("venv")
}
