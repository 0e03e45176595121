//! Kernel images for the matrix: Debian's packaged kernels, downloaded with a private apt
//! configuration and unpacked (never installed) into the cache, one directory per kernel.
//!
//! A kernel is fetched once: its directory holds a `kernel.json` stamp (written last) that
//! names the packages and the image. While every wanted kernel is cached, nothing touches the
//! network; delete a kernel's directory to fetch the newest package again.
//!
//! Package names carry the kernel's ABI number (`linux-image-6.1.0-57-amd64-unsigned`), which
//! moves with every Debian point release, so a kernel is a pattern: the newest package whose
//! name matches it (by the numbers in the name) among those apt knows.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::{
    private_apt::{self, KEYRING},
    process,
};

/// Suites the images come from. The configuration is used for downloads only (`apt-get
/// download`, `dpkg -x`), never to install, so newer suites than the host's are harmless.
const SUITES: &[(&str, &str)] = &[
    ("http://deb.debian.org/debian", "bullseye"),
    ("http://deb.debian.org/debian-security", "bullseye-security"),
    ("http://deb.debian.org/debian", "bookworm"),
    ("http://deb.debian.org/debian-security", "bookworm-security"),
    ("http://deb.debian.org/debian", "bookworm-backports"),
    ("http://deb.debian.org/debian", "trixie"),
    ("http://deb.debian.org/debian", "sid"),
];

/// One kernel of the matrix, as Debian packages it.
pub struct Spec {
    /// The name on the command line and in the table (`5.10`).
    pub name: &'static str,
    /// A regular expression (`apt-cache search --names-only`) for the package that holds the
    /// kernel image; the newest match is taken.
    pub image: &'static str,
    /// Further packages of the same kernel, as prefixes to which the image package's
    /// version part (`7.2.13+deb14-amd64`) is appended.
    pub siblings: &'static [&'static str],
    /// The prefix of the image package's name before its version part.
    pub image_prefix: &'static str,
}

/// The kernels the matrix knows (besides `host`).
pub const SPECS: &[Spec] = &[
    Spec {
        name: "5.10",
        image: r"^linux-image-5\.10\.0-[0-9]+-amd64-unsigned$",
        siblings: &[],
        image_prefix: "linux-image-",
    },
    Spec {
        name: "6.1",
        image: r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
        siblings: &[],
        image_prefix: "linux-image-",
    },
    Spec {
        name: "6.12",
        image: r"^linux-image-6\.12\.[0-9]+\+deb13-amd64-unsigned$",
        siblings: &[],
        image_prefix: "linux-image-",
    },
    // sid splits the kernel into linux-binary (the image) and linux-modules.
    Spec {
        name: "7.2",
        image: r"^linux-binary-7\.2\.[0-9]+\+deb14-amd64$",
        siblings: &["linux-modules-"],
        image_prefix: "linux-binary-",
    },
];

pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// A kernel ready to boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Image {
    /// The packages it was unpacked from.
    pub packages: Vec<String>,
    /// The kernel image (absolute).
    pub vmlinuz: PathBuf,
    /// `uname -r` of that kernel (the image's file or module directory name).
    pub release: String,
}

const STAMP: &str = "kernel.json";

/// The cached image of `spec`, fetched first if it is not cached.
pub fn ensure(cache: &Path, spec: &Spec, apt: &mut Option<Apt>) -> Result<Image> {
    let dir = cache.join("images").join(spec.name);
    if let Some(image) = cached(&dir) {
        return Ok(image);
    }
    if apt.is_none() {
        *apt = Some(Apt::updated(&cache.join("images").join("apt"))?);
    }
    let apt = apt.as_ref().expect("set above");
    fetch(apt, spec, &dir, &cache.join("images").join("debs"))
        .with_context(|| format!("fetching the {} kernel", spec.name))
}

fn cached(dir: &Path) -> Option<Image> {
    let text = fs::read_to_string(dir.join(STAMP)).ok()?;
    let image: Image = serde_json::from_str(&text).ok()?;
    image.vmlinuz.is_file().then_some(image)
}

fn fetch(apt: &Apt, spec: &Spec, dir: &Path, debs: &Path) -> Result<Image> {
    let image_package = apt.newest(spec.image)?;
    let version = image_package
        .strip_prefix(spec.image_prefix)
        .and_then(|v| v.strip_suffix("-unsigned").or(Some(v)))
        .with_context(|| format!("{image_package} does not start with {}", spec.image_prefix))?;
    let mut packages = vec![image_package.clone()];
    packages.extend(spec.siblings.iter().map(|p| format!("{p}{version}")));

    fs::create_dir_all(debs).with_context(|| format!("creating {}", debs.display()))?;
    // A half-unpacked directory from an interrupted run: start over.
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let root = dir.join("root");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    for package in &packages {
        let deb = apt.download(package, debs)?;
        let mut cmd = process::command("dpkg");
        cmd.arg("-x").arg(&deb).arg(&root);
        process::stdout_of(&mut cmd)?;
    }

    let (vmlinuz, release) = find_vmlinuz(&root)?;
    let image = Image {
        packages,
        vmlinuz,
        release,
    };
    let stamp = dir.join(STAMP);
    let text = serde_json::to_string_pretty(&image)?;
    fs::write(&stamp, text + "\n").with_context(|| format!("writing {}", stamp.display()))?;
    Ok(image)
}

/// `boot/vmlinuz-<release>` (linux-image-*), else `usr/lib/modules/<release>/vmlinuz`
/// (sid's linux-binary-*).
fn find_vmlinuz(root: &Path) -> Result<(PathBuf, String)> {
    if let Ok(entries) = fs::read_dir(root.join("boot")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(release) = name.strip_prefix("vmlinuz-") {
                return Ok((e.path(), release.to_owned()));
            }
        }
    }
    for modules in ["usr/lib/modules", "lib/modules"] {
        if let Ok(entries) = fs::read_dir(root.join(modules)) {
            for e in entries.flatten() {
                let path = e.path().join("vmlinuz");
                if path.is_file() {
                    return Ok((path, e.file_name().to_string_lossy().into_owned()));
                }
            }
        }
    }
    bail!(
        "no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz in {}",
        root.display()
    )
}

/// apt with a configuration of its own: its own sources, lists and download cache; the
/// host's dpkg status (read only: nothing is installed through it).
pub struct Apt {
    config: PathBuf,
}

impl Apt {
    /// Writes the configuration under `dir` and runs `apt-get update` with it.
    fn updated(dir: &Path) -> Result<Self> {
        ensure!(
            Path::new(KEYRING).is_file(),
            "{KEYRING} is missing: install debian-archive-keyring"
        );
        let config = private_apt::configure(dir, SUITES, true)
            .with_context(|| format!("writing an apt configuration in {}", dir.display()))?;
        let apt = Self { config };
        println!(
            "kernel-matrix: apt-get update (kernel image lists, {})",
            dir.display()
        );
        process::stdout_of(apt.command("apt-get").args(["-qq", "update"]))?;
        Ok(apt)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = process::command(program);
        cmd.env("APT_CONFIG", &self.config)
            // As root, apt downloads as the `_apt` user, which cannot write into a cache
            // under /root; the files are only unpacked, never installed.
            .args(["-o", "APT::Sandbox::User=root"]);
        cmd
    }

    /// The newest package whose name matches `pattern`: the largest sequence of the numbers
    /// in its name (`6.12.117` > `6.12.74`), which is deterministic for a given archive state.
    fn newest(&self, pattern: &str) -> Result<String> {
        let mut cmd = self.command("apt-cache");
        cmd.args(["search", "--names-only", pattern]);
        let out = process::stdout_of(&mut cmd)?;
        out.lines()
            .filter_map(|l| l.split(" - ").next())
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .max_by_key(|n| numbers(n))
            .map(str::to_owned)
            .with_context(|| format!("no package matches {pattern} in {SUITES:?}"))
    }

    /// Downloads `package` into `debs` (unless it is there) and returns the .deb's path.
    fn download(&self, package: &str, debs: &Path) -> Result<PathBuf> {
        let find = || -> Option<PathBuf> {
            fs::read_dir(debs)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&format!("{package}_")) && n.ends_with(".deb")
                    })
                })
        };
        if let Some(deb) = find() {
            return Ok(deb);
        }
        println!("kernel-matrix: downloading {package}");
        let mut cmd = self.command("apt-get");
        cmd.args(["-q", "download", package]).current_dir(debs);
        process::stdout_of(&mut cmd)?;
        find().with_context(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                debs.display()
            )
        })
    }
}

/// The numbers in a package name, in order, for comparing versions.
fn numbers(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_by_numbers() {
        let names = [
            "linux-image-6.12.74+deb13-amd64-unsigned",
            "linux-image-6.12.117+deb13-amd64-unsigned",
            "linux-image-6.12.9+deb13-amd64-unsigned",
        ];
        let newest = names.iter().max_by_key(|n| numbers(n)).unwrap();
        assert_eq!(*newest, "linux-image-6.12.117+deb13-amd64-unsigned");
    }
}
