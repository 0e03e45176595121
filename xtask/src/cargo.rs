//! Invoking cargo on this workspace.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde::Deserialize;

use crate::process;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> Result<&'static Path> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask's manifest directory has no parent directory")
}

/// `cargo` (the one that runs xtask, from `$CARGO`), run in the workspace root.
pub fn command() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = process::command(cargo);
    if let Ok(root) = workspace_root() {
        cmd.current_dir(root);
    }
    cmd
}

/// Runs a cargo command with its output shown; fails if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    process::run(cmd)
}

/// The workspace's target directory (absolute), from `cargo metadata`.
pub fn target_dir() -> Result<PathBuf> {
    #[derive(Deserialize)]
    struct Metadata {
        target_directory: PathBuf,
    }
    let mut cmd = command();
    cmd.args(["metadata", "--format-version", "1", "--no-deps"]);
    let out = process::capture(&mut cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            process::describe(&cmd),
            out.status,
            process::tail(&out.stderr, 20)
        );
    }
    let metadata: Metadata =
        serde_json::from_str(&out.stdout).context("could not parse `cargo metadata` output")?;
    Ok(metadata.target_directory)
}

/// `<target dir>/<profile>/<name>`, which must exist (i.e. it was built).
pub fn built_binary(profile: &str, name: &str) -> Result<PathBuf> {
    let path = target_dir()?.join(profile).join(name);
    ensure!(
        path.is_file(),
        "{} does not exist although the build succeeded",
        path.display()
    );
    Ok(path)
}
