//! The packaging commands: `zcprof completions SHELL` and the hidden `zcprof manpage`. They
//! load nothing, so they run without root.

use zcprof_tests::*;

#[test]
fn completions_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = zcprof(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", out.stderr);
        for command in ["attach", "serve", "doctor"] {
            assert!(
                out.stdout.contains(command),
                "{shell}: the script does not mention `{command}`:\n{}",
                out.stdout
            );
        }
    }
    let bash = zcprof(&["completions", "bash"]);
    assert!(
        bash.stdout.contains("complete -F _zcprof"),
        "not a bash completion script:\n{}",
        bash.stdout
    );
}

#[test]
fn unknown_shell_is_one_clear_error() {
    let out = zcprof(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "printed a script:\n{}", out.stdout);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one error line:\n{}", out.stderr);
    for needle in ["zcprof: error: ", "tcsh", "bash, zsh or fish"] {
        assert!(lines[0].contains(needle), "no `{needle}` in: {}", lines[0]);
    }
}

#[test]
fn manpage_is_roff_for_every_command() {
    let out = zcprof(&["manpage"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.lines().any(|l| l.starts_with(".TH zcprof 1 ")),
        "no title line:\n{}",
        out.stdout
    );
    for command in [
        "run",
        "attach",
        "workload",
        "serve",
        "doctor",
        "completions",
    ] {
        assert!(
            out.stdout.contains(&format!(".SS \"zcprof {command}\"")),
            "no subsection for `{command}`"
        );
    }
    // Hidden: it is for packaging, not for users.
    let help = zcprof(&["--help"]);
    assert!(!help.stdout.contains("manpage"), "{}", help.stdout);
}
