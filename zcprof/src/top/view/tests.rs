use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::{Terminal, backend::TestBackend};
use zcprof_common::{Column, Syscall, Transfer};

use super::*;
use crate::{
    snapshot::Activity,
    top::model::{Group, Interval, ThreadLine},
};

fn activity(read: u64, write: u64) -> Activity {
    let mut a = Activity::default();
    a.counts.syscalls = 2 * 1000;
    a.counts.ctx_voluntary = 3;
    a.counts.ctx_involuntary = 12_345;
    a.counts.faults_minor = 7;
    let cell = |bytes| Transfer {
        calls: 1000,
        bytes,
        ..Transfer::ZERO
    };
    a.transfers
        .insert((Syscall::Read, Column::CpuKernelToUser), cell(read));
    a.transfers
        .insert((Syscall::Write, Column::CpuUserToKernel), cell(write));
    a
}

fn app(rows_by: Rows) -> App {
    let group = |pid: u32, name: &str, bytes: u64| Group {
        key: if rows_by == Rows::Process {
            pid.to_string()
        } else {
            name.to_string()
        },
        pid: (rows_by == Rows::Process).then_some(pid),
        name: name.into(),
        activity: activity(bytes, bytes),
        threads: vec![ThreadLine {
            pid,
            tid: pid,
            comm: name.into(),
            activity: activity(bytes, bytes),
        }],
    };
    let mut app = App::new(rows_by, "all processes".into(), Duration::from_secs(1));
    app.collected(Interval {
        secs: 1.0,
        groups: vec![
            group(4242, "dd", 3 << 30),
            group(17, "a-very-long-command-name", 1 << 20),
            group(1, "systemd", 0),
        ],
        lost: 0,
    });
    app
}

/// The screen as text, one string per line.
fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut term = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    let mut table = TableState::default();
    term.draw(|f| draw(f, app, &mut table)).expect("draw");
    let buf = term.backend().buffer().clone();
    (0..height)
        .map(|y| {
            (0..width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect()
}

#[test]
fn the_list_fits_80_by_24() {
    let lines = screen(&app(Rows::Process), 80, 24);
    let text = lines.join("\n");
    assert!(lines[0].starts_with("zcprof top · all processes"), "{text}");
    assert!(lines[1].starts_with("CPU-copied 6.0G/s"), "{text}");
    let header = &lines[2];
    for col in [
        "PID",
        "COMM",
        "SYSC/s",
        "CPU-CP/s",
        "ZERO-CP/s",
        "DMA+FI/s",
        "ZC%",
        "CSW v/i",
    ] {
        assert!(header.contains(col), "{col} missing from {header:?}");
    }
    // The last column is whole: nothing was cut at the right edge.
    assert!(header.ends_with("FLT/s"), "{header:?}");
    let dd = &lines[3];
    assert!(dd.contains("4242 dd"), "{text}");
    assert!(dd.contains("6.0G") && dd.contains("3/12k"), "{dd:?}");
    assert!(dd.ends_with('7'), "{dd:?}");
    // The long name is cut to its column, and its row still ends with its faults.
    assert!(
        lines[4].contains("a-very-long-com") && lines[4].ends_with('7'),
        "{text}"
    );
    assert!(
        lines[5].contains("systemd") && lines[5].contains(" -"),
        "{text}"
    );
    assert!(lines[23].starts_with("q quit"), "{text}");
}

#[test]
fn a_wide_screen_has_full_units() {
    let lines = screen(&app(Rows::Process), 140, 10);
    let text = lines.join("\n");
    assert!(
        lines[2].contains("CPU-COPIED/s") && lines[2].contains("DMA+FAULT-IN/s"),
        "{text}"
    );
    assert!(lines[3].contains("6.0 GiB"), "{text}");
}

#[test]
fn the_drill_down_shows_the_ledger_and_threads() {
    let mut app = app(Rows::Process);
    app.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    let lines = screen(&app, 80, 24);
    let text = lines.join("\n");
    assert!(lines[0].contains("pid 4242 (dd) · 1 thread"), "{text}");
    let at = |what: &str| lines.iter().position(|l| l.starts_with(what));
    let (read, write) = (at("read "), at("write "));
    assert!(read.is_some() && write.is_some(), "{text}");
    assert!(
        lines[read.unwrap()].contains("cpu_kernel_to_user"),
        "{text}"
    );
    assert!(lines[read.unwrap()].contains("1000"), "{text}");
    let threads = at("    TID").expect("threads header");
    assert!(lines[threads + 1].contains("4242 dd"), "{text}");
    assert!(lines[23].starts_with("Esc back"), "{text}");
}

#[test]
fn groups_have_no_pid_column_and_keep_a_path_s_end() {
    let mut app = app(Rows::Cgroup);
    app.shown.groups[1].name = "/system.slice/docker-0123456789abcdef.scope".into();
    let lines = screen(&app, 80, 24);
    let text = lines.join("\n");
    assert!(lines[2].starts_with("CGROUP"), "{text}");
    assert!(text.contains("…"), "{text}");
    assert!(text.contains("abcdef.scope"), "{text}");
}

#[test]
fn help_and_filter_prompt() {
    let mut app = app(Rows::Process);
    app.help = true;
    let text = screen(&app, 80, 24).join("\n");
    assert!(
        text.contains(" keys ") && text.contains("zero-copy / (zero-copy"),
        "{text}"
    );
    app.help = false;
    app.editing = true;
    app.filter = "d".into();
    let lines = screen(&app, 80, 24);
    assert!(lines[23].starts_with("filter: d_"), "{lines:?}");
    app.filter = "nothing".into();
    let lines = screen(&app, 80, 24);
    assert!(lines[3].contains("no row matches"), "{lines:?}");
}

#[test]
fn numbers_fit_their_columns() {
    assert_eq!(count(812.4), "812");
    assert_eq!(count(12_499.0), "12.5k");
    assert_eq!(count(3_100_000.0), "3.1M");
    assert_eq!(short(12_345.0), "12k");
    assert_eq!(bytes(1536.0, false), "1.5K");
    assert_eq!(bytes(512.0, false), "512B");
    assert_eq!(bytes(1536.0, true), "1.5 KiB");
    assert_eq!(fit("abcdef", 4, false), "abcd");
    assert_eq!(fit("/a/b/c.scope", 8, true), "…c.scope");
    assert_eq!(fit("short", 8, true), "short");
}
