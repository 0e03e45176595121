use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Builds the kernel programs (zcprof-ebpf) for the BPF target with the nightly toolchain and
/// bpf-linker; main.rs embeds the result. `cargo xtask setup` installs what this needs.
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "zcprof-ebpf")
        .ok_or_else(|| anyhow!("zcprof-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        root_dir: manifest_path
            .parent()
            .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
            .as_str(),
        ..Default::default()
    };
    // aya-build relays every line the nested cargo prints as a build warning; keep only the
    // ones that matter (errors and warnings), not "Compiling …" for each dependency.
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf([ebpf_package], Toolchain::default())
}
