//! `zcprof manpage` (hidden): prints zcprof(1) in roff, generated from the command line
//! definition (`cli`). `cargo xtask dist` runs it to package the page.
//!
//! One page for all commands, each with its synopsis, description and options, rather than
//! clap_mangen's page per subcommand: `man zcprof` is where people look.

use std::io::Write as _;

use anyhow::{Context as _, Result};
use clap_mangen::{
    Man,
    roff::{Roff, roman},
};

/// Prints the page of command line `cli` on standard output; returns the exit code.
pub fn run(cli: clap::Command) -> Result<i32> {
    let page = render(cli).context("cannot render the manual page")?;
    std::io::stdout()
        .write_all(&page)
        .context("cannot write the manual page to standard output")?;
    Ok(0)
}

/// What zcprof is, for DESCRIPTION (the command line's own about is one line).
const DESCRIPTION: &str = "zcprof counts, per process and per thread, how many bytes cross \
    the user/kernel boundary by CPU copy and how many move without a user copy (sendfile, \
    splice, tee, vmsplice, copy_file_range, mmap, io_uring, MSG_ZEROCOPY, O_DIRECT), beside \
    mode switches (syscalls), context switches and page faults. eBPF programs attached to raw \
    tracepoints and perf software events aggregate the counts in the kernel.";

/// What a machine needs, for REQUIREMENTS.
const REQUIREMENTS: &str = "Linux 5.10 or later on x86-64 with BTF \
    (/sys/kernel/btf/vmlinux), syscall tracepoints and perf software events; root, or \
    CAP_BPF and CAP_PERFMON. zcprof doctor says whether and how well zcprof can run here. \
    Once its programs are attached, run, attach and serve drop to --user (nobody) with no \
    capabilities.";

/// zcprof(1): the top-level sections, then one subsection per visible command.
fn render(cli: clap::Command) -> std::io::Result<Vec<u8>> {
    let mut cmd = cli.disable_help_subcommand(true);
    // Gives every subcommand its full name ("zcprof serve") for the synopses.
    cmd.build();
    let man = Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    let mut roff = Roff::default();
    roff.control("SH", ["DESCRIPTION"])
        .text([roman(DESCRIPTION)])
        .control("SH", ["REQUIREMENTS"])
        .text([roman(REQUIREMENTS)]);
    roff.to_writer(&mut page)?;
    // Not clap_mangen's SUBCOMMANDS list: it points at zcprof-run(1) and the like, which
    // do not exist; the commands are described in full below instead.
    man.render_options_section(&mut page)?;

    let mut heading = Roff::default();
    heading.control("SH", ["COMMANDS"]).text([roman(
        "Every command also takes the options above. zcprof COMMAND --help prints the same text.",
    )]);
    heading.to_writer(&mut page)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_bin_name().unwrap_or_else(|| sub.get_name());
        let mut title = Roff::default();
        title.control("SS", [name]);
        title.to_writer(&mut page)?;
        let man = Man::new(sub.clone());
        let mut body = Vec::new();
        man.render_synopsis_section(&mut body)?;
        man.render_description_section(&mut body)?;
        if sub.get_arguments().any(|a| !a.is_hide_set()) {
            man.render_options_section(&mut body)?;
        }
        page.extend_from_slice(&demote_sections(&body));
    }
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// A command's sections, nested under its subsection: the synopsis comes first with no
/// heading, a paragraph break before the description, "Options:" before the options, and any
/// other `.SH` (a help heading) becomes a paragraph in bold.
fn demote_sections(roff: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(roff);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line.strip_prefix(".SH ") {
            Some("SYNOPSIS") => {}
            Some("DESCRIPTION") => out.push_str(".PP\n"),
            Some("OPTIONS") => out.push_str(".PP\nOptions:\n"),
            Some(other) => {
                out.push_str(".PP\n.B ");
                out.push_str(other);
                out.push('\n');
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn page_documents_every_visible_command() {
        let page = String::from_utf8(render(crate::cli::Cli::command()).unwrap()).unwrap();
        assert!(
            page.lines().any(|l| l.starts_with(".TH zcprof 1 ")),
            "no title"
        );
        for name in [
            "run",
            "attach",
            "workload",
            "serve",
            "doctor",
            "completions",
        ] {
            assert!(
                page.contains(&format!(".SS \"zcprof {name}\"")),
                "no {name}"
            );
        }
        assert!(
            !page.contains("zcprof manpage"),
            "the hidden command is documented"
        );
        assert!(page.contains("\\-\\-listen"), "serve's options are missing");
    }
}
