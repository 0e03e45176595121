//! Whether to attach the backstop programs: on kernels that may preempt a BPF program in the
//! middle of a tracepoint, where the kernel then skips that program for every other task on
//! the CPU (zcprof-ebpf's `backstop` explains how the backstops count those events anyway).

use std::{fs, io::Read as _};

/// `--backstops`: attach the backstop programs or not.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backstops {
    /// Where the kernel may preempt zcprof's programs: Linux 6.13 or later with a preemptible
    /// model (full, lazy, RT; a boot-time choice that cannot be read counts as preemptible)
    #[default]
    Auto,
    /// Always (each hook then costs a second program run per event)
    On,
    /// Never: events the kernel skips are reported as `lost.kernel_skipped`
    Off,
    /// Tests only: the backstops without their primaries, so that every event goes through
    /// the backstops' way (a kernel that never skips a program cannot show it otherwise)
    #[value(hide = true)]
    Only,
}

impl Backstops {
    /// Whether the backstops are attached on this kernel.
    pub fn wanted(self) -> bool {
        self.decide().0
    }

    /// Whether the backstops are attached on this kernel, and why (for `zcprof doctor`).
    pub fn decide(self) -> (bool, String) {
        match self {
            Backstops::On | Backstops::Only => (true, "asked for (--backstops on)".into()),
            Backstops::Off => (false, "asked not to (--backstops off)".into()),
            Backstops::Auto => {
                let release = read("/proc/sys/kernel/osrelease").unwrap_or_default();
                let release = release.trim();
                // Before 6.13 every tracepoint ran its programs with preemption disabled.
                if !release_at_least(release, (6, 13)) {
                    return (
                        false,
                        format!("Linux {release} runs tracepoint programs with preemption off"),
                    );
                }
                let (preempts, model) = preemption_model(release);
                let verb = if preempts { "may" } else { "does not" };
                (
                    preempts,
                    format!("Linux {release}, preemption model {model}: it {verb} preempt them"),
                )
            }
        }
    }
}

/// Whether `release` ("7.2.13+deb14-amd64") is `min` (major, minor) or later.
fn release_at_least(release: &str, min: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

/// Whether the running kernel's preemption model preempts kernel code, and the model with
/// where it was read: from the first of these that says: debugfs's `sched/preempt` (the
/// current model in parentheses), the boot command line's `preempt=`, the kernel's config
/// (the model a `PREEMPT_DYNAMIC` kernel boots with), and last `uname -v`, where
/// `PREEMPT_DYNAMIC` alone counts as preemptible.
fn preemption_model(release: &str) -> (bool, String) {
    if let Some(current) = read("/sys/kernel/debug/sched/preempt")
        .as_deref()
        .and_then(current_model)
    {
        return (model_preempts(current), format!("{current} (debugfs)"));
    }
    let cmdline = read("/proc/cmdline").unwrap_or_default();
    if let Some(model) = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("preempt="))
    {
        return (model_preempts(model), format!("{model} (preempt=)"));
    }
    if let Some(config) = kernel_config(release)
        && let Some((preempts, option)) = config_model(&config)
    {
        return (preempts, format!("{option} (kernel config)"));
    }
    let version = read("/proc/sys/kernel/version").unwrap_or_default();
    (
        version.contains("PREEMPT"),
        format!("unknown (uname -v: {})", version.trim()),
    )
}

/// The model in parentheses in debugfs's `sched/preempt` ("none voluntary (full) lazy").
fn current_model(text: &str) -> Option<&str> {
    let start = text.find('(')? + 1;
    let end = start + text[start..].find(')')?;
    Some(&text[start..end])
}

/// Whether a model named as `preempt=` names it preempts kernel code.
fn model_preempts(model: &str) -> bool {
    !matches!(model.trim(), "none" | "voluntary")
}

/// The default model from a kernel config's text, and its option; None if it names none.
fn config_model(config: &str) -> Option<(bool, &str)> {
    config.lines().map(str::trim).find_map(|line| match line {
        "CONFIG_PREEMPT_NONE=y" | "CONFIG_PREEMPT_VOLUNTARY=y" => Some((false, line)),
        "CONFIG_PREEMPT=y" | "CONFIG_PREEMPT_LAZY=y" | "CONFIG_PREEMPT_RT=y" => Some((true, line)),
        _ => None,
    })
}

/// The running kernel's config: /proc/config.gz, else /boot/config-RELEASE.
fn kernel_config(release: &str) -> Option<String> {
    if let Ok(file) = fs::File::open("/proc/config.gz") {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some(text);
        }
    }
    read(&format!("/boot/config-{}", release.trim()))
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases() {
        assert!(release_at_least("7.2.13+deb14-amd64", (6, 13)));
        assert!(release_at_least("6.13.0", (6, 13)));
        assert!(!release_at_least("6.12.117+deb13-amd64", (6, 13)));
        assert!(!release_at_least("5.10.0-46-amd64", (6, 13)));
        assert!(!release_at_least("", (6, 13)));
    }

    #[test]
    fn models() {
        assert_eq!(current_model("none voluntary (full) lazy\n"), Some("full"));
        assert_eq!(current_model("garbage"), None);
        assert!(model_preempts("full"));
        assert!(model_preempts("lazy"));
        assert!(!model_preempts("none"));
        assert!(!model_preempts("voluntary"));
        let config =
            "# CONFIG_PREEMPT is not set\nCONFIG_PREEMPT_NONE=y\nCONFIG_PREEMPT_DYNAMIC=y\n";
        assert_eq!(config_model(config), Some((false, "CONFIG_PREEMPT_NONE=y")));
        assert_eq!(
            config_model("CONFIG_PREEMPT_LAZY=y\n").map(|m| m.0),
            Some(true)
        );
        assert_eq!(config_model("CONFIG_PREEMPT_DYNAMIC=y\n"), None);
    }
}
