//! `zcprof top`: a live table of processes (or commands, or cgroups) by the bytes the CPU
//! copies for them, redrawn every interval, like top or iotop.
//!
//! Start-up is serve's without the HTTP side: check the command line before loading anything,
//! load the programs (every process, or the `--pid`s and their descendants), then drop to an
//! unprivileged user. Every interval, serve's engine (`serve/engine`) credits what each thread
//! did to its row, applies `--comm` and `--cgroup`, and says which dead threads' map entries
//! to delete; a row's rates are the difference of two of its totals (`model`). `state` is what
//! the keys do, `view` draws. The terminal is restored however top ends: `q`, an error, a
//! panic (a hook), SIGTERM, SIGHUP or SIGINT; the programs are detached when [`Probes`] is
//! dropped, before top returns.

mod model;
mod state;
mod view;

use std::{
    collections::HashMap,
    io::{IsTerminal as _, Stdout},
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;
use crossterm::{
    cursor::{Hide, Show},
    event::{self, Event, KeyEventKind},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use ratatui::{Terminal, backend::CrosstermBackend, widgets::TableState};
use regex::Regex;
use zcprof_common::KERNEL_SKIPPED;

use self::{
    model::{Interval, ThreadLine},
    state::App,
};
use crate::{
    duration::parse_duration,
    loader::{MapReadError, ProbeArgs, Probes},
    privileges::{self, PrivilegeArgs},
    serve::{
        CheckedScope,
        args::{GroupBy, ScopeArgs},
        cgroup::HostFs,
        check_scope,
        container::container_of,
        drop_and_check_maps,
        engine::{self, Engine, Host as _, Retire, Scope, UNKNOWN_CGROUP},
        load_scoped,
    },
    snapshot::{Activity, Snapshot},
};

/// What one row of `zcprof top` is.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// One row per process
    #[value(alias = "pid")]
    Process,
    /// One row per command name
    Comm,
    /// One row per cgroup v2 directory (container, systemd unit)
    Cgroup,
    /// One row per container (docker, containerd, CRI-O, podman) or systemd unit
    Container,
}

impl Rows {
    /// serve's grouping that makes these rows.
    fn group_by(self) -> GroupBy {
        match self {
            Rows::Process => GroupBy::Pid,
            Rows::Comm => GroupBy::Comm,
            Rows::Cgroup => GroupBy::Cgroup,
            Rows::Container => GroupBy::Container,
        }
    }
}

/// Options of `zcprof top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// Show only these processes and their descendants (repeat for several; default: all)
    #[arg(long = "pid", short = 'p', value_name = "PID")]
    pub pids: Vec<u32>,
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// What one row is
    #[arg(long, value_enum, default_value_t = Rows::Process)]
    pub by: Rows,
    /// Redraw with new rates this often (e.g. 500ms, 2s)
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,
    #[command(flatten)]
    pub privileges: PrivilegeArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// Exit code when standard output is not a terminal (as for a command-line mistake).
const NOT_A_TERMINAL: i32 = 2;

/// Runs `zcprof top` until `q`.
pub fn top(args: &TopArgs) -> anyhow::Result<i32> {
    if !std::io::stdout().is_terminal() {
        eprintln!(
            "zcprof: error: top draws a live table and needs a terminal on standard output; for a \
             pipe or a file use `zcprof attach --pid PID` (a line per process per interval) \
             or `zcprof serve` (Prometheus metrics)"
        );
        return Ok(NOT_A_TERMINAL);
    }
    // Everything the command line can get wrong, before loading anything.
    let CheckedScope {
        comm,
        cgroup_root,
        cgroup_scope,
    } = check_scope(
        &args.scope,
        matches!(args.by, Rows::Cgroup | Rows::Container),
        &args.pids,
    )?;
    let target = privileges::planned(&args.privileges, true)?;

    let probes = load_scoped(&args.probes, &args.pids)?;
    if let Some(t) = &target {
        drop_and_check_maps(t, &probes)?;
    }

    let scope_text = scope_text(args, cgroup_scope.as_deref());
    let engine = Engine::new(Scope {
        by: args.by.group_by(),
        comm: comm.clone(),
        cgroup: cgroup_scope.clone(),
        // Every process is a row: top shows them all, scrolled.
        max_groups: usize::MAX,
    });
    let mut source = Source {
        probes,
        engine,
        host: HostFs::new(cgroup_root),
        rows: args.by,
        comm,
        cgroup: cgroup_scope,
        before: HashMap::new(),
        last: Snapshot::default(),
        lost: 0,
        at: Instant::now(),
    };
    // The first interval starts now: what was counted while loading is no rate.
    source.collect()?;
    let mut app = App::new(args.by, scope_text, args.interval);
    catch_signals();
    let result = match Screen::enter() {
        Ok(mut screen) => screen.run(&mut app, &mut source, args.interval),
        Err(e) => Err(anyhow::Error::from(e).context("setting up the terminal")),
    };
    // The screen is restored (dropped at the end of its match arm); now detach the programs.
    drop(source);
    result.map(|()| 0)
}

fn scope_text(args: &TopArgs, cgroup: Option<&str>) -> String {
    let mut parts = Vec::new();
    if !args.pids.is_empty() {
        let pids: Vec<String> = args.pids.iter().map(u32::to_string).collect();
        parts.push(format!("pid {} +children", pids.join(",")));
    }
    if let Some(c) = &args.scope.comm {
        parts.push(format!("comm ~ {c}"));
    }
    if let Some(c) = cgroup {
        parts.push(format!("cgroup {c}"));
    }
    if parts.is_empty() {
        "all processes".into()
    } else {
        parts.join(", ")
    }
}

/// The counts' side: the programs and the engine that turns their maps into rows.
struct Source {
    probes: Probes,
    engine: Engine,
    host: HostFs,
    rows: Rows,
    comm: Option<Regex>,
    cgroup: Option<String>,
    /// The engine's totals at the previous collection, by group labels.
    before: HashMap<Vec<String>, Activity>,
    /// The previous snapshot, for the threads' own intervals.
    last: Snapshot,
    /// Events lost until the previous collection.
    lost: u64,
    /// When the previous collection was made.
    at: Instant,
}

impl Source {
    /// Reads the maps and returns the interval since the previous collection. Kernel log
    /// records (`-v`) are not flushed: they would be written over the table.
    fn collect(&mut self) -> Result<Interval, MapReadError> {
        let now = Instant::now();
        let snap = self.probes.snapshot(None)?;
        let probes = &self.probes;
        let is_dead = |tid: u32| probes.thread_is_dead(tid);
        let retire = self.engine.ingest(&snap, &mut self.host, now, &is_dead);
        forget(&mut self.probes, &retire);
        let totals = self.engine.groups();
        let threads = self.threads(&snap);
        let secs = now.duration_since(self.at).as_secs_f64();
        let mut interval = model::interval(self.rows, &totals, &self.before, threads, secs);
        let lost: u64 = snap
            .lost
            .iter()
            .filter(|(k, _)| **k != KERNEL_SKIPPED)
            .map(|(_, v)| v)
            .sum();
        interval.lost = lost.saturating_sub(self.lost);
        self.lost = lost;
        self.before = totals.into_iter().collect();
        self.last = snap;
        self.at = now;
        Ok(interval)
    }

    /// Every thread's interval with the key of the row it belongs to, by the engine's rules
    /// (`--comm`, `--cgroup`, the grouping); threads that exited and did nothing are left out.
    fn threads(&mut self, snap: &Snapshot) -> Vec<(String, ThreadLine)> {
        let diff = snap.since(&self.last);
        let needs_cgroup =
            matches!(self.rows, Rows::Cgroup | Rows::Container) || self.cgroup.is_some();
        let mut of_process: HashMap<u32, u64> = HashMap::new();
        let mut out = Vec::new();
        for (&key, p) in &diff.processes {
            let pid = key.pid;
            for (&tid, t) in &p.threads {
                if t.exited && t.activity.is_empty() {
                    continue;
                }
                let comm = if t.comm.is_empty() { &p.comm } else { &t.comm };
                if comm.is_empty() || self.comm.as_ref().is_some_and(|re| !re.is_match(comm)) {
                    continue;
                }
                let path = if needs_cgroup {
                    let id = match t.cgroup_id {
                        0 => *of_process
                            .entry(pid)
                            .or_insert_with(|| self.host.cgroup_of_process(pid)),
                        id => id,
                    };
                    self.host.cgroup_path(id)
                } else {
                    None
                };
                if let Some(root) = &self.cgroup
                    && !path.as_deref().is_some_and(|p| engine::is_within(p, root))
                {
                    continue;
                }
                let key = match self.rows {
                    Rows::Process => pid.to_string(),
                    Rows::Comm => comm.clone(),
                    Rows::Cgroup => path.unwrap_or_else(|| UNKNOWN_CGROUP.into()),
                    // The same labels the engine gives the container's group, joined as
                    // `model::group_identity` joins them.
                    Rows::Container => {
                        let c = container_of(path.as_deref().unwrap_or(""));
                        format!("{}/{}/{}", c.container_id, c.pod_uid, c.runtime)
                    }
                };
                let line = ThreadLine {
                    pid,
                    tid,
                    comm: comm.clone(),
                    activity: t.activity.clone(),
                };
                out.push((key, line));
            }
        }
        out
    }
}

/// Deletes the map entries the engine has credited for good.
fn forget(probes: &mut Probes, retire: &Retire) {
    for (tgid, tid, cells) in &retire.threads {
        // Gone already is fine: its counts were credited.
        let _ = probes.forget_thread(*tgid, *tid, cells.iter().copied());
    }
    for (tgid, cells) in &retire.uring {
        probes.forget_uring(*tgid, cells.iter().copied());
    }
}

/// Set by SIGTERM, SIGHUP or SIGINT: leave as after `q`, restoring the terminal.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn catch_signals() {
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Longest wait for a key between two looks at `STOP`.
const POLL: Duration = Duration::from_millis(200);

/// The terminal in raw mode on the alternate screen, restored when dropped.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

/// Raw mode off, the alternate screen left, the cursor shown; errors are of no use here (the
/// terminal may be gone).
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(std::io::stdout(), LeaveAlternateScreen, Show);
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            // A panic's message must land on the normal screen, readable after exit.
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        enable_raw_mode()?;
        let terminal = execute!(std::io::stdout(), EnterAlternateScreen, Hide)
            .and_then(|()| Terminal::new(CrosstermBackend::new(std::io::stdout())));
        match terminal {
            Ok(terminal) => Ok(Screen { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Draws, reads keys and collects every `interval` until `q` or a signal.
    fn run(
        &mut self,
        app: &mut App,
        source: &mut Source,
        interval: Duration,
    ) -> anyhow::Result<()> {
        let mut table = TableState::default();
        let mut next = Instant::now() + interval;
        loop {
            let size = self.terminal.size()?;
            // Title, totals, table header and footer take five lines.
            app.page = usize::from(size.height).saturating_sub(5).max(1);
            self.terminal.draw(|f| view::draw(f, app, &mut table))?;
            if event::poll(next.saturating_duration_since(Instant::now()).min(POLL))? {
                // Every pending event before the next drawing.
                loop {
                    if let Event::Key(k) = event::read()?
                        && k.kind == KeyEventKind::Press
                    {
                        app.key(k);
                    }
                    if app.quit || !event::poll(Duration::ZERO)? {
                        break;
                    }
                }
            }
            if app.quit || STOP.load(Ordering::Relaxed) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= next {
                match source.collect() {
                    Ok(counts) => app.collected(counts),
                    // A failed read leaves the last screen up and says why.
                    Err(e) => app.error = Some(e.to_string()),
                }
                next += interval;
                if next <= now {
                    next = now + interval;
                }
            }
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}
