//! `zcprof doctor`: can zcprof run on this host, and how well? Checks the kernel, its BTF,
//! zcprof's privileges, RLIMIT_MEMLOCK, every hook and BPF feature zcprof uses, loads and
//! attaches the real programs for a moment (root only) and reports each capability, with what
//! to do about every problem. Each check asks the kernel itself (BTF, `bpf()`,
//! `perf_event_open()`), not a table of kernel versions.

mod bpf_types;
mod credentials;
mod findings;
mod hooks;
mod kernel;
mod load;
mod text;

use aya::util::KernelVersion;

use self::{
    findings::{Findings, Item, Load, Report, Verdict},
    text::text,
};
use crate::{
    capability::{Capabilities, KINDS, State},
    loader::{Backstops, layout::KernelLayout},
};

/// Options of `zcprof doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Print one JSON document instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `zcprof doctor`: prints the report; 0 when zcprof can run here, 1 when it cannot.
pub fn doctor(args: &DoctorArgs) -> anyhow::Result<i32> {
    let report = examine();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(if report.can_run { 0 } else { 1 })
}

/// Runs every check.
pub fn examine() -> Report {
    let mut f = Findings::default();
    let (kernel, arch) = kernel::uname();
    let version = KernelVersion::current().ok();
    let at_least = |major, minor| version.is_some_and(|v| v >= KernelVersion::new(major, minor, 0));
    if arch != "x86_64" {
        f.problem(
            true,
            format!("architecture {arch}: zcprof supports x86-64 only"),
            "run zcprof on an x86-64 host",
        );
    }

    // Read before the load probe below raises it.
    let memlock = credentials::memlock(&mut f, at_least(5, 11));
    let mut privileges = credentials::privileges(&mut f, at_least(5, 11));

    let (btf_item, btf) = kernel::btf(&mut f);
    let hooks = hooks::probe(&mut f, btf.as_ref());
    drop(btf);
    let probe_priv = privileges.missing.iter().all(|&m| m == "CAP_SYS_RESOURCE");
    let map_types = bpf_types::map_types(&mut f);
    let program_types = bpf_types::program_types(&mut f);

    let capabilities = match KernelLayout::from_kernel() {
        Ok(layout) => layout.capabilities,
        Err(e) => {
            if btf_item.verdict == Verdict::Ok {
                // BTF parses but lacks what zcprof cannot do without.
                f.problem(
                    true,
                    format!("zcprof cannot read this kernel's layout: {e}"),
                    "report this line with the output of `zcprof doctor --json`",
                );
            }
            let mut caps = Capabilities::default();
            for k in KINDS {
                caps.set(k, State::Unavailable, e.to_string());
            }
            caps
        }
    };
    for c in capabilities.impaired() {
        let kind = KINDS.iter().find(|k| k.name == c.name);
        f.problem(
            false,
            format!(
                "capability {} {}: {}; affects {}",
                c.name,
                c.state.as_str(),
                c.why,
                kind.map_or("", |k| k.feeds)
            ),
            format!(
                "counting it exactly needs {}",
                kind.map_or("a newer kernel", |k| k.needs)
            ),
        );
    }

    let (load, drop_tried) = if probe_priv {
        load::probe(&mut f)
    } else {
        let load = Load {
            verdict: Verdict::Unknown,
            detail: "not probed: needs root to probe loading".into(),
            error: None,
        };
        (load, None)
    };
    credentials::drop_after_load(&mut f, &mut privileges, drop_tried, at_least(6, 5));
    let tracefs = kernel::tracefs();
    let (on, why) = Backstops::Auto.decide();
    let backstops = Item {
        verdict: Verdict::Ok,
        detail: format!("{}: {why}", if on { "attached" } else { "not attached" }),
    };
    Report {
        kernel,
        arch,
        btf: btf_item,
        privileges,
        memlock,
        hooks,
        map_types,
        program_types,
        load,
        backstops,
        capabilities,
        tracefs,
        can_run: !f.fatal,
        problems: f.problems,
    }
}
