//! `cargo xtask dist`: setup, the release build, then in `target/dist/` the stripped binary and
//! a .deb made with cargo-deb; `--verify` (CI) then installs the .deb on this machine, checks
//! what it installed and removes it again (`verify`).
//!
//! The man page and the completion scripts come from the freshly built binary (`zcprof
//! manpage`, `zcprof completions SHELL`): they go to `target/dist/assets`, where
//! `[package.metadata.deb]` in zcprof/Cargo.toml takes them from. The .deb's Depends is written
//! there too; dist checks it against what the binary links and the glibc symbols it uses.

mod verify;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde::Deserialize;

use crate::{cargo, process, setup};

/// Options of `cargo xtask dist`.
#[derive(clap::Args)]
pub struct Args {
    /// Then install the .deb with dpkg, check every file and command it provides, remove it
    /// and check that nothing is left (needs root; for CI)
    #[arg(long)]
    pub verify: bool,
}

/// The man page, as generated into the assets and installed.
const MAN_PAGE: (&str, &str) = ("zcprof.1.gz", "/usr/share/man/man1/zcprof.1.gz");

/// Per shell: the asset file and where the .deb installs it (Debian's standard directories).
const COMPLETIONS: [(&str, &str, &str); 3] = [
    (
        "bash",
        "zcprof.bash",
        "/usr/share/bash-completion/completions/zcprof",
    ),
    (
        "zsh",
        "_zcprof",
        "/usr/share/zsh/vendor-completions/_zcprof",
    ),
    (
        "fish",
        "zcprof.fish",
        "/usr/share/fish/vendor_completions.d/zcprof.fish",
    ),
];

/// The shared libraries a Rust binary may link, and the Debian package of each.
const LIBRARY_PACKAGES: &[(&str, &str)] = &[
    ("libc.so.6", "libc6"),
    ("libm.so.6", "libc6"),
    ("libpthread.so.0", "libc6"),
    ("libdl.so.2", "libc6"),
    ("librt.so.1", "libc6"),
    ("ld-linux-x86-64.so.2", "libc6"),
    ("libgcc_s.so.1", "libgcc-s1"),
];

/// Runs `cargo xtask dist [--verify]`.
pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    if args.verify && !process::is_root() {
        bail!(
            "cargo xtask dist --verify installs and removes the .deb with dpkg: run it as root \
             (sudo -E cargo xtask dist --verify)"
        );
    }
    setup::run_with_dist_tools()?;
    cargo::run(cargo::command().args(["build", "--release", "-p", "zcprof"]))?;
    let built = cargo::built_binary("release", "zcprof")?;
    let package = zcprof_package()?;

    // [package.metadata.deb] names the assets relative to zcprof/: ../target/dist/assets.
    let dist = cargo::target_dir()?.join("dist");
    let expected = cargo::workspace_root()?.join("target").join("dist");
    ensure!(
        dist == expected,
        "cargo xtask dist needs the target directory at {} (zcprof/Cargo.toml's \
         [package.metadata.deb] assets are there), not {}: unset CARGO_TARGET_DIR",
        expected.display(),
        dist.parent().unwrap_or(&dist).display()
    );
    // Fresh every time: no .deb or asset of an earlier version is left to be picked up.
    if dist.exists() {
        fs::remove_dir_all(&dist).with_context(|| format!("cannot remove {}", dist.display()))?;
    }
    let assets = dist.join("assets");
    fs::create_dir_all(&assets).with_context(|| format!("cannot create {}", assets.display()))?;

    check_version(&built, &package.version)?;
    check_linkage(&built, &package.deb_depends)?;
    generate_assets(&built, &assets)?;

    // The bare binary, stripped as cargo-deb strips the packaged one.
    let binary = dist.join("zcprof");
    process::stdout_of(
        process::command("strip")
            .arg("--strip-unneeded")
            .arg("-o")
            .arg(&binary)
            .arg(&built),
    )?;
    check_version(&binary, &package.version)?;

    cargo_deb(&dist)?;
    let deb = find_deb(&dist)?;
    show_deb(&deb)?;
    println!(
        "dist: {} ({}), {} ({})",
        binary.display(),
        size(&binary)?,
        deb.display(),
        size(&deb)?
    );

    if args.verify {
        verify::run(&deb, &package.version)?;
    }
    println!("dist: done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// What dist needs from zcprof's manifest.
struct Package {
    version: String,
    /// `[package.metadata.deb] depends`.
    deb_depends: String,
}

/// zcprof's version and .deb Depends, from `cargo metadata`.
fn zcprof_package() -> Result<Package> {
    #[derive(Deserialize)]
    struct Metadata {
        packages: Vec<PackageMetadata>,
    }
    #[derive(Deserialize)]
    struct PackageMetadata {
        name: String,
        version: String,
        metadata: Option<serde_json::Value>,
    }
    let mut cmd = cargo::command();
    cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
    let out = process::stdout_of(&mut cmd)?;
    let metadata: Metadata =
        serde_json::from_str(&out).context("cannot parse `cargo metadata` output")?;
    let zcprof = metadata
        .packages
        .into_iter()
        .find(|p| p.name == "zcprof")
        .context("`cargo metadata` lists no package zcprof")?;
    let deb_depends = zcprof
        .metadata
        .as_ref()
        .and_then(|m| m.pointer("/deb/depends"))
        .and_then(|d| d.as_str())
        .context("zcprof/Cargo.toml has no [package.metadata.deb] depends")?
        .to_string();
    Ok(Package {
        version: zcprof.version,
        deb_depends,
    })
}

/// `binary --version` runs and prints `zcprof VERSION`.
fn check_version(binary: &Path, version: &str) -> Result<()> {
    let out = process::stdout_of(process::command(binary).arg("--version"))?;
    let expected = format!("zcprof {version}");
    ensure!(
        out.trim() == expected,
        "`{} --version` printed `{}`, not `{expected}`",
        binary.display(),
        out.trim()
    );
    Ok(())
}

/// Every library the binary links comes from a package in `depends`, and its libc6 version is
/// the newest glibc symbol version the binary uses: Depends says exactly what it needs.
fn check_linkage(binary: &Path, depends: &str) -> Result<()> {
    let dynamic = process::stdout_of(process::command("objdump").arg("-p").arg(binary))?;
    let libraries = needed_libraries(&dynamic);
    for library in &libraries {
        let Some((_, package)) = LIBRARY_PACKAGES.iter().find(|(l, _)| l == library) else {
            bail!(
                "the binary links {library}, which no package of the .deb's Depends provides: \
                 add its package to depends in zcprof/Cargo.toml's [package.metadata.deb] and \
                 to LIBRARY_PACKAGES in xtask/src/dist.rs"
            );
        };
        ensure!(
            depends_names(depends).any(|name| name == *package),
            "the binary links {library} from {package}, which zcprof/Cargo.toml's \
             [package.metadata.deb] depends (`{depends}`) does not name: add it"
        );
    }

    let symbols = process::stdout_of(process::command("objdump").arg("-T").arg(binary))?;
    let needed = newest_glibc(&symbols).context("the binary uses no versioned glibc symbol")?;
    let declared = libc6_minimum(depends).with_context(|| {
        format!("zcprof/Cargo.toml's [package.metadata.deb] depends (`{depends}`) has no `libc6 (>= VERSION)`")
    })?;
    ensure!(
        declared == needed,
        "the binary's newest glibc symbol is GLIBC_{}, but zcprof/Cargo.toml's \
         [package.metadata.deb] depends says libc6 (>= {}): make it libc6 (>= {})",
        dotted(&needed),
        dotted(&declared),
        dotted(&needed)
    );
    println!(
        "dist: the binary links {}; it needs glibc {} or later (its newest symbol is GLIBC_{})",
        libraries.join(" "),
        dotted(&needed),
        dotted(&needed)
    );
    Ok(())
}

/// The man page (gzipped, as Debian installs them) and the completion scripts.
fn generate_assets(binary: &Path, assets: &Path) -> Result<()> {
    let roff = process::stdout_of(process::command(binary).arg("manpage"))?;
    ensure!(
        roff.lines().any(|l| l.starts_with(".TH zcprof 1 ")),
        "`zcprof manpage` printed no man page"
    );
    let page = assets.join(MAN_PAGE.0.trim_end_matches(".gz"));
    write(&page, &roff)?;
    // -n: no name or time stamp in the header, so that the same page gives the same bytes.
    process::stdout_of(process::command("gzip").args(["-9", "-n", "-f"]).arg(&page))?;

    for (shell, file, _) in COMPLETIONS {
        let script = process::stdout_of(process::command(binary).args(["completions", shell]))?;
        ensure!(
            script.contains("attach") && script.contains("serve"),
            "`zcprof completions {shell}` printed no completions for zcprof's commands"
        );
        write(&assets.join(file), &script)?;
    }
    println!(
        "dist: generated {} and the {} completion scripts in {}",
        MAN_PAGE.0,
        COMPLETIONS.map(|(shell, _, _)| shell).join(", "),
        assets.display()
    );
    Ok(())
}

/// `cargo deb` with its output shown, less its warning that our generated assets are not in
/// `target/release/` (they are not meant to be built by cargo).
fn cargo_deb(dist: &Path) -> Result<()> {
    let mut cmd = cargo::command();
    cmd.args(["deb", "-p", "zcprof", "--no-build", "--output"])
        .arg(dist);
    let out = process::capture(&mut cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            process::describe(&cmd),
            out.status,
            process::tail(&out.combined(), 30)
        );
    }
    for line in out.combined().lines() {
        let generated_asset = line.starts_with("warning: Only source paths starting with exactly")
            && line.contains("../target/dist/assets/");
        if !generated_asset && !line.trim().is_empty() {
            println!("{line}");
        }
    }
    Ok(())
}

/// The one .deb cargo-deb wrote into `dist`.
fn find_deb(dist: &Path) -> Result<PathBuf> {
    let debs: Vec<PathBuf> = fs::read_dir(dist)
        .with_context(|| format!("cannot read {}", dist.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    match debs.as_slice() {
        [deb] => Ok(deb.clone()),
        _ => bail!(
            "expected one .deb in {} after cargo deb, found {}",
            dist.display(),
            debs.len()
        ),
    }
}

/// Prints the .deb's control fields that matter and its file list.
fn show_deb(deb: &Path) -> Result<()> {
    let fields = process::stdout_of(process::command("dpkg-deb").arg("-f").arg(deb).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
        "Section",
        "Installed-Size",
    ]))?;
    println!("dist: {}:", deb.display());
    for line in fields.lines() {
        println!("    {line}");
    }
    let contents = process::stdout_of(process::command("dpkg-deb").arg("-c").arg(deb))?;
    for line in contents.lines() {
        println!("    {line}");
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// A file's size, for messages (`2.9 MiB`).
fn size(path: &Path) -> Result<String> {
    let bytes = fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    Ok(format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64))
}

/// The `NEEDED` entries of `objdump -p`.
fn needed_libraries(objdump_p: &str) -> Vec<String> {
    objdump_p
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            (fields.next() == Some("NEEDED"))
                .then(|| fields.next())
                .flatten()
        })
        .map(str::to_string)
        .collect()
}

/// The newest `GLIBC_x.y[.z]` version among `objdump -T`'s symbols.
fn newest_glibc(objdump_t: &str) -> Option<Vec<u32>> {
    objdump_t
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|v| v.split('.').map(|n| n.parse().ok()).collect())
        .max()
}

/// The package names of a Depends field (`libc6 (>= 2.34), libgcc-s1` → libc6, libgcc-s1).
fn depends_names(depends: &str) -> impl Iterator<Item = &str> {
    depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
}

/// `VERSION` of `libc6 (>= VERSION)` in a Depends field.
fn libc6_minimum(depends: &str) -> Option<Vec<u32>> {
    depends.split(',').find_map(|d| {
        let d = d.trim();
        let rest = d.strip_prefix("libc6")?.trim_start();
        let version = rest.strip_prefix("(>=")?.strip_suffix(')')?.trim();
        version.split('.').map(|n| n.parse().ok()).collect()
    })
}

fn dotted(version: &[u32]) -> String {
    version
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_needed_libraries() {
        let p = "Dynamic Section:\n  NEEDED               libgcc_s.so.1\n  NEEDED               \
                 libc.so.6\n  SONAME  x\n";
        assert_eq!(needed_libraries(p), ["libgcc_s.so.1", "libc.so.6"]);
    }

    #[test]
    fn finds_the_newest_glibc_version_numerically() {
        let t = "0 DF *UND* 0 (GLIBC_2.9) a\n0 DF *UND* 0 (GLIBC_2.34) b\n\
                 0 DF *UND* 0 (GLIBC_2.3.4) c\n0 DF *UND* 0 (GLIBC_PRIVATE) d\n\
                 0 w DF *UND* 0 GLIBC_2.30 e\n";
        assert_eq!(newest_glibc(t), Some(vec![2, 34]));
        assert_eq!(newest_glibc("no versions"), None);
    }

    #[test]
    fn parses_depends() {
        let d = "libc6 (>= 2.34), libgcc-s1";
        assert_eq!(libc6_minimum(d), Some(vec![2, 34]));
        assert_eq!(depends_names(d).collect::<Vec<_>>(), ["libc6", "libgcc-s1"]);
        assert_eq!(libc6_minimum("libc6, libgcc-s1"), None);
        assert_eq!(libc6_minimum("libc6-dev (>= 2.34)"), None);
    }
}
