//! `zcprof completions SHELL`: prints a completion script for bash, zsh or fish. It is
//! generated from the command line definition (`cli`), so it never falls behind it.

use std::{ffi::OsStr, io::Write as _};

use anyhow::{Context as _, Result};
use clap::{
    ValueEnum,
    builder::{PossibleValue, TypedValueParser},
    error::ErrorKind,
};
use clap_complete::Shell;

/// The shells zcprof ships completions for (the ones Debian has standard directories for).
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Options of `zcprof completions`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish
    #[arg(value_name = "SHELL", value_parser = ShellParser)]
    pub shell: Shell,
}

/// Parses a shell name; its error names the shells on the one line zcprof prints.
#[derive(Clone)]
struct ShellParser;

impl TypedValueParser for ShellParser {
    type Value = Shell;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Shell, clap::Error> {
        let name = value.to_string_lossy();
        SHELLS
            .into_iter()
            .find(|shell| shell.to_string() == name)
            .ok_or_else(|| {
                clap::Error::raw(
                    ErrorKind::InvalidValue,
                    format!("no completions for shell `{name}`: choose bash, zsh or fish\n"),
                )
            })
    }

    // So that the completion scripts themselves complete the shell names.
    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            SHELLS.iter().filter_map(ValueEnum::to_possible_value),
        ))
    }
}

/// Prints the script of command line `cli` on standard output; returns the exit code.
pub fn run(args: &CompletionsArgs, mut cli: clap::Command) -> Result<i32> {
    // Into a buffer first: clap_complete panics on a failed write (e.g. a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "zcprof", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("cannot write the completion script to standard output")?;
    Ok(0)
}
