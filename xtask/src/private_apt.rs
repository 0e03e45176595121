//! An apt configuration of zcprof's own (its own sources, lists and cache under a directory),
//! for what the host's apt sources do not reach: qemu from bookworm-backports, kernel images
//! from other Debian releases.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// The archive's signing keys (Debian's `debian-archive-keyring`, on every Debian host).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Writes `dir/sources.list` (one `main` line per (url, suite)) and `dir/apt.conf`, and
/// returns the configuration's path for `APT_CONFIG`. `download_only` adds the host's dpkg
/// status and the architecture, for `apt-get download` of packages never installed.
pub fn configure(dir: &Path, suites: &[(&str, &str)], download_only: bool) -> io::Result<PathBuf> {
    for sub in ["lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let sources: String = suites
        .iter()
        .map(|(url, suite)| format!("deb [signed-by={KEYRING}] {url} {suite} main\n"))
        .collect();
    fs::write(dir.join("sources.list"), sources)?;
    let mut conf = format!(
        "Dir::Etc::SourceList \"{0}/sources.list\";\n\
         Dir::Etc::SourceParts \"/nonexistent\";\n\
         Dir::State::Lists \"{0}/lists\";\n\
         Dir::Cache \"{0}/cache\";\n",
        dir.display()
    );
    if download_only {
        conf.push_str(
            "Dir::State::status \"/var/lib/dpkg/status\";\nAPT::Architecture \"amd64\";\n",
        );
    }
    let config = dir.join("apt.conf");
    fs::write(&config, conf)?;
    Ok(config)
}
