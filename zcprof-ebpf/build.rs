use which::which;

/// Rebuild the kernel programs when bpf-linker changes: aya-build cannot see it otherwise.
fn main() {
    let bpf_linker = which("bpf-linker")
        .expect("bpf-linker not found on PATH: run `cargo xtask setup` to install it");
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().unwrap_or_default()
    );
}
