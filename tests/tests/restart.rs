//! A blocking call that the kernel interrupts for a signal and restarts by itself: the program
//! makes one call and sees one result; the kernel returned `-ERESTARTSYS` at the syscall's exit
//! once per signal and entered the call again. zcprof counts each of those as a failed call, as
//! `strace -c` does (the workload checks rely on it: see `restarted_calls` in xtask).

use zcprof_tests::*;

const RESTART: &str = env!("CARGO_BIN_EXE_zc-restart");

#[test]
fn a_restarted_readv_is_one_failed_call_per_signal() {
    if !require_root_or_skip() {
        return;
    }
    let signals = 3;
    let out = zcprof(&["run", "--json", "--", RESTART, &signals.to_string()]);
    assert!(out.status.success(), "zcprof run failed:\n{}", out.stderr);
    // The program's line comes first on stdout, then zcprof's document.
    let (line, doc) = out
        .stdout
        .split_once('\n')
        .unwrap_or_else(|| panic!("no program line in:\n{}", out.stdout));
    let tally: serde_json::Value = serde_json::from_str(line).expect("zc-restart's line");
    let doc: serde_json::Value = serde_json::from_str(doc).expect("zcprof's document");
    assert_eq!(
        u(&tally, "handled"),
        signals,
        "every signal was handled: {tally}"
    );
    let p = process(&doc, u(&doc, "pid"));
    let cells = transfers(p, "readv");
    assert_eq!(cells.len(), 1, "one readv cell (a pipe): {cells:?}");
    let cell = cells[0];
    assert_eq!(
        (u(cell, "calls"), u(cell, "bytes"), u(cell, "errors")),
        (
            u(&tally, "readv_calls") + signals,
            u(&tally, "readv_bytes"),
            signals
        ),
        "the program's one readv, plus one failed call per restart: {cell}"
    );
}
