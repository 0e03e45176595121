//! The report as a table for people.

use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};

use super::findings::{Report, Verdict};
use crate::capability::{KINDS, State};

/// The report as a table, then one line per problem with its fix.
pub fn text(r: &Report) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["verdict", "check", "detail"]);
    if t.width().is_none() {
        // Not a terminal: wrap the details at a width that reads well in a file or a mail.
        t.set_width(120);
    }
    let arch = if r.arch == "x86_64" {
        Verdict::Ok
    } else {
        Verdict::Missing
    };
    let mut row = |v: Verdict, check: String, detail: &str| {
        t.add_row([v.as_str().to_string(), check, detail.to_string()]);
    };
    row(Verdict::Ok, "kernel".into(), &r.kernel);
    row(arch, "architecture".into(), &r.arch);
    row(r.btf.verdict, "btf".into(), &r.btf.detail);
    row(
        r.privileges.verdict,
        "privileges".into(),
        &r.privileges.detail,
    );
    row(r.memlock.verdict, "memlock".into(), &r.memlock.detail);
    for h in &r.hooks {
        let kind = h.kind.replace('_', " ");
        row(h.verdict, format!("{kind} {}", h.name), &h.detail);
    }
    for s in &r.map_types {
        row(s.verdict, format!("map type {}", s.name), &s.detail);
    }
    for s in &r.program_types {
        row(s.verdict, format!("program type {}", s.name), &s.detail);
    }
    row(r.load.verdict, "load programs".into(), &r.load.detail);
    row(r.backstops.verdict, "backstops".into(), &r.backstops.detail);
    for c in r.capabilities.iter() {
        let v = match c.state {
            State::Exact => Verdict::Ok,
            State::Degraded => Verdict::Degraded,
            State::Unavailable => Verdict::Missing,
        };
        let feeds = KINDS
            .iter()
            .find(|k| k.name == c.name)
            .map_or("", |k| k.feeds);
        let detail = if c.why.is_empty() {
            format!("{}; feeds {feeds}", c.state.as_str())
        } else {
            format!("{}: {}; feeds {feeds}", c.state.as_str(), c.why)
        };
        row(v, format!("capability {}", c.name), &detail);
    }
    let tracefs = if r.tracefs.mounted {
        Verdict::Ok
    } else {
        Verdict::Missing
    };
    row(tracefs, "tracefs".into(), &r.tracefs.detail);

    let mut out = format!("{t}\n");
    if r.can_run && r.problems.is_empty() {
        out.push_str("zcprof can run here, and counts everything exactly.\n");
    } else if r.can_run {
        out.push_str("zcprof can run here, with these problems:\n");
    } else {
        out.push_str("zcprof cannot run here:\n");
    }
    for p in &r.problems {
        out.push_str(&format!("problem: {}; fix: {}\n", p.what, p.fix));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        capability::Capabilities,
        doctor::{
            findings::{Item, Load, Memlock, Privileges, Problem},
            kernel::tracefs,
        },
    };

    #[test]
    fn the_text_ends_with_one_line_per_problem() {
        let mut r = examine_offline();
        r.can_run = false;
        r.problems = vec![Problem {
            what: "no usable kernel BTF".into(),
            fix: "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y".into(),
        }];
        let t = text(&r);
        assert!(t.contains("zcprof cannot run here:\n"));
        assert!(t.ends_with(
            "problem: no usable kernel BTF; fix: boot a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y\n"
        ));
    }

    /// A report with no probes run (they need the kernel and privileges).
    fn examine_offline() -> Report {
        let item = |v| Item {
            verdict: v,
            detail: String::new(),
        };
        Report {
            kernel: "6.18.0".into(),
            arch: "x86_64".into(),
            btf: item(Verdict::Missing),
            privileges: Privileges {
                verdict: Verdict::Ok,
                uid: 0,
                root: true,
                cap_eff: String::new(),
                missing: vec![],
                can_drop: Some(true),
                drop_tried: true,
                unprivileged_bpf_disabled: Some(2),
                detail: String::new(),
            },
            memlock: Memlock {
                verdict: Verdict::Ok,
                current: None,
                max: None,
                detail: String::new(),
            },
            hooks: vec![],
            map_types: vec![],
            program_types: vec![],
            load: Load {
                verdict: Verdict::Unknown,
                detail: String::new(),
                error: None,
            },
            backstops: Item {
                verdict: Verdict::Ok,
                detail: String::new(),
            },
            capabilities: Capabilities::default(),
            tracefs: tracefs(),
            can_run: true,
            problems: vec![],
        }
    }
}
