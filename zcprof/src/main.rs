//! zcprof: where do my bytes get copied, and what does it cost?
//!
//! From here to the kernel and back: `cli` parses the command line; `run` and `attach` load
//! the kernel programs (`loader`, which reads struct offsets from the kernel's BTF through
//! `btf`), choose what to count (`watch`), read the kernel maps (`loader`'s `Probes`, into a `snapshot`) and print them
//! (`report`). The kernel side is `zcprof-ebpf`; both sides share `zcprof-common`.
//! `workload` is the built-in data mover whose own tally checks the measurements. `serve` is
//! the Prometheus exporter daemon, `top` the live terminal table; `doctor` says whether and how
//! well zcprof can run here.

mod archive;
mod attach;
mod attribution;
mod btf;
mod capability;
mod cli;
mod completions;
mod doctor;
mod duration;
mod findings;
#[cfg(test)]
mod fuzz;
mod loader;
mod manpage;
mod privileges;
mod report;
mod run;
mod serve;
mod snapshot;
mod thread_table;
mod top;
mod watch;
mod workload;

use clap::{CommandFactory as _, Parser as _};

use crate::cli::{Cli, Command};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            // One line, like every other error: clap's first paragraph says what was wrong
            // (a missing argument's name is on the lines after the first).
            let text = e.to_string();
            let what: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let what = what.join(" ");
            let what = what.strip_prefix("error: ").unwrap_or(&what);
            eprintln!("zcprof: error: {what} (see zcprof --help)");
            std::process::exit(2);
        }
    };
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_target(false)
        .init();

    let result = match &cli.command {
        Command::Run(args) => run::run(args),
        Command::Attach(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(attach::attach(args))),
        Command::Serve(args) => serve::serve(args),
        Command::Top(args) => top::top(args),
        Command::Doctor(args) => doctor::doctor(args),
        Command::Completions(args) => completions::run(args, Cli::command()),
        Command::Manpage => manpage::run(Cli::command()),
        Command::Workload(args) => workload::run(args)
            .map_err(anyhow::Error::from)
            .and_then(|tally| Ok(serde_json::to_string_pretty(&tally)?))
            .map(|json| {
                println!("{json}");
                0
            }),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One line: what failed, on what, and (in the innermost cause) what to do. A cause
            // that its error's message already quotes is not repeated.
            let mut line = String::new();
            for cause in e.chain().map(|c| c.to_string()) {
                if line.ends_with(&cause) {
                    continue;
                }
                if !line.is_empty() {
                    line.push_str(": ");
                }
                line.push_str(&cause);
            }
            eprintln!("zcprof: error: {line}");
            std::process::exit(1);
        }
    }
}
