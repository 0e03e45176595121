//! `zcprof serve`: the always-on daemon that serves Prometheus metrics.
//!
//! Start-up does everything that needs privileges first, in this order: check the command
//! line, bind the listening socket, load and attach the kernel programs (every process on the
//! host, or `--pid`s and their descendants), open a `BPF_ENABLE_STATS` fd (the kernel keeps
//! the programs' run counts and times while it is open, without touching the global sysctl),
//! then drop to an unprivileged user with no capabilities and check that the maps can still
//! be read. Then two parts run side by side: a collector thread (`engine`, which alone owns
//! the maps) and a small tokio HTTP server (`http`) that asks it for fresh counts at each
//! scrape. SIGTERM or SIGINT stops both, detaches the programs and exits 0.

// `zcprof top` groups and scopes its rows with the same engine, arguments and cgroup lookup.
pub(crate) mod args;
pub(crate) mod cgroup;
pub(crate) mod container;
pub(crate) mod engine;
mod http;
mod labels;
mod metrics;

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use prometheus::{Histogram, HistogramOpts};
use regex::Regex;
use tokio::{signal::unix::SignalKind, sync::watch};
use zcprof_common::{MAX_PROCESSES, MAX_TRANSFERS, MAX_URING};

pub use self::args::ServeArgs;
use self::{
    args::ScopeArgs,
    cgroup::HostFs,
    engine::{Engine, Retire, Scope},
    metrics::{MapFill, Published},
};
use crate::{
    archive::{PRESSURE_EVERY, crowded},
    loader::{LoadOptions, MapReadError, ProbeArgs, Probes},
    privileges,
    watch::{self as watching, WatchError},
};

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours.
    #[error(
        "cannot listen on {addr}: {err}; is another zcprof serve or exporter using it? \
         choose another address with --listen"
    )]
    Listen {
        addr: std::net::SocketAddr,
        err: std::io::Error,
    },
    /// `--comm` is not a regular expression.
    #[error("invalid --comm regex `{regex}`: {reason}")]
    Comm { regex: String, reason: String },
    /// The maps cannot be read once privileges are gone.
    #[error(
        "reading the BPF maps as {user} failed after dropping privileges: {err}; this \
         kernel refuses bpf() on map fds to unprivileged processes \
         (kernel.unprivileged_bpf_disabled = {sysctl}; Linux before 6.5 applies it to every \
         bpf() command): run with --no-drop-privileges, or on Linux 6.5 or later"
    )]
    ReadAfterDrop {
        user: String,
        sysctl: String,
        err: Box<MapReadError>,
    },
}

/// `--comm REGEX`, anchored (serve and top).
pub(crate) fn compile_comm(regex: &str) -> Result<Regex, ServeError> {
    // Anchored, like PromQL's =~: `nginx` does not match `nginx-worker`.
    Regex::new(&format!("^(?:{regex})$")).map_err(|e| {
        // regex's messages draw a caret diagram over several lines; keep the last one.
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid")
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        ServeError::Comm {
            regex: regex.to_string(),
            reason,
        }
    })
}

/// Loads the programs as serve and top use them: counting every process, or `pids` and their
/// children when given.
pub(crate) fn load_scoped(probe_args: &ProbeArgs, pids: &[u32]) -> anyhow::Result<Probes> {
    let mut probes = Probes::load(LoadOptions {
        watch_all: pids.is_empty(),
        ..probe_args.load_options()
    })?;
    probes.warn_degraded();
    for &pid in pids {
        watching::attach(&mut probes, pid, true)?;
    }
    Ok(probes)
}

/// Gives up zcprof's privileges, then checks that the maps are still readable: finds out now,
/// not at the first scrape or screen (serve and top).
pub(crate) fn drop_and_check_maps(
    target: &privileges::Target,
    probes: &Probes,
) -> anyhow::Result<()> {
    privileges::drop_to(target, probes.a_map())?;
    if let Err(err) = probes.check_readable() {
        let sysctl = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        return Err(ServeError::ReadAfterDrop {
            user: target.name.clone(),
            sysctl,
            err: Box::new(err),
        }
        .into());
    }
    Ok(())
}

/// `--comm`, `--cgroup`, `--cgroup-root` and `--pid` as serve and top use them, checked before
/// anything is loaded: everything the command line can get wrong fails here.
pub(crate) struct CheckedScope {
    /// The anchored name pattern.
    pub comm: Option<Regex>,
    /// The cgroup2 mount, when cgroup paths are needed.
    pub cgroup_root: Option<PathBuf>,
    /// `--cgroup` below that mount.
    pub cgroup_scope: Option<String>,
}

/// Checks the scope options; `paths` says whether the grouping needs cgroup paths.
pub(crate) fn check_scope(
    args: &ScopeArgs,
    paths: bool,
    pids: &[u32],
) -> anyhow::Result<CheckedScope> {
    let comm = args.comm.as_deref().map(compile_comm).transpose()?;
    let root = if paths || args.cgroup.is_some() {
        Some(cgroup::mount_point(args.cgroup_root.as_deref())?)
    } else {
        None
    };
    let scope = match (args.cgroup.as_deref(), &root) {
        (Some(path), Some(root)) => Some(cgroup::scope_path(path, root)?),
        _ => None,
    };
    for &pid in pids {
        if !Path::new(&format!("/proc/{pid}/task")).is_dir() {
            return Err(WatchError::NoSuchProcess(pid).into());
        }
    }
    Ok(CheckedScope {
        comm,
        cgroup_root: root,
        cgroup_scope: scope,
    })
}

/// The collector thread's state: it alone touches the maps.
struct Collector {
    probes: Probes,
    engine: Engine,
    host: HostFs,
    publish: watch::Sender<Arc<Published>>,
    collections: u64,
    errors: u64,
    /// Whether the kernel keeps run-time statistics for zcprof (`--program-stats`).
    program_stats: bool,
}

impl Collector {
    fn delete(&mut self, retire: &Retire) {
        for (tgid, tid, cells) in &retire.threads {
            // Gone already is fine: its counts were credited.
            let _ = self
                .probes
                .forget_thread(*tgid, *tid, cells.iter().copied());
        }
        for (tgid, cells) in &retire.uring {
            self.probes.forget_uring(*tgid, cells.iter().copied());
        }
    }

    fn collect(&mut self) {
        let started = Instant::now();
        self.probes.flush_log();
        self.collections += 1;
        let previous = self.publish.borrow().clone();
        let mut maps = previous.maps.clone();
        let mut lost = previous.lost.clone();
        let mut deferred = previous.deferred.clone();
        match self.probes.snapshot(None) {
            Ok(snap) => {
                let probes = &self.probes;
                let is_dead = |tid: u32| probes.thread_is_dead(tid);
                let retire = self.engine.ingest(&snap, &mut self.host, started, &is_dead);
                self.delete(&retire);
                let threads: usize = snap.processes.values().map(|p| p.threads.len()).sum();
                let cells: usize = snap
                    .processes
                    .values()
                    .flat_map(|p| p.threads.values())
                    .map(|t| t.activity.transfers.len())
                    .sum();
                let uring: usize = snap
                    .processes
                    .values()
                    .map(|p| p.activity.uring.len())
                    .sum();
                let watched = self.probes.watched_processes();
                maps = vec![
                    fill("threads", threads, self.probes.thread_capacity()),
                    fill("transfers", cells, MAX_TRANSFERS),
                    fill("uring", uring, MAX_URING),
                    fill("watched", watched, MAX_PROCESSES),
                ];
                lost = snap.lost.iter().map(|(k, v)| (*k, *v)).collect();
                deferred = snap.deferred.iter().map(|(k, v)| (*k, *v)).collect();
            }
            Err(e) => {
                self.errors += 1;
                log::warn!("reading the kernel maps failed: {e}; serving the previous counts");
            }
        }
        // A snapshot of a busy host allocates and frees many MiB; give the freed memory back
        // so that the daemon's RSS follows what it keeps, not its largest collection.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
        let (rss_bytes, cpu_seconds) = metrics::self_usage();
        let published = Published {
            started,
            groups: self.engine.shared_groups(),
            histogram_groups: self.engine.shared_histogram_groups(),
            lost,
            deferred,
            maps,
            programs: if self.program_stats {
                self.probes.program_stats()
            } else {
                Vec::new()
            },
            series_dropped: self.engine.series_dropped,
            threads_retired: self.engine.threads_retired,
            threads_tracked: self.engine.tracked_threads() as u64,
            processes_retired: self.engine.processes_retired,
            collections: self.collections,
            collection_errors: self.errors,
            collection_seconds: started.elapsed().as_secs_f64(),
            btf: self.probes.fd_types_known(),
            capabilities: self.probes.capabilities().clone(),
            rss_bytes,
            cpu_seconds,
            daemon_started: previous.daemon_started,
        };
        self.publish.send_replace(Arc::new(published));
    }

    /// Collects every `interval`, whenever asked, and as soon as dead threads the kernel could
    /// not retire crowd the thread table (see [`Collector::wait`]), until `stop`; then drops the
    /// probes, which detaches every program.
    fn run(mut self, interval: Duration, asks: mpsc::Receiver<()>, stop: Arc<AtomicBool>) {
        loop {
            let last = Instant::now();
            // Read before the collection: a thread left after this read counts towards the
            // next one, even if this one frees it.
            let deferred = self.probes.deferred_total().unwrap_or(0);
            self.collect();
            if !self.wait(last + interval, deferred, &asks, &stop) {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            // A client hammering /metrics cannot make the collector spin: collections start
            // at least MIN_GAP apart, and scrapes that asked meanwhile share the next one.
            if let Some(wait) = MIN_GAP.checked_sub(last.elapsed()) {
                std::thread::sleep(wait);
            }
            while asks.try_recv().is_ok() {}
        }
    }
}

impl Collector {
    /// Waits until `next`, a scrape's ask, or the kernel's count of dead threads left in the
    /// table (its ring buffer to user space was full) growing from `deferred` by an eighth of
    /// the table: in a fork storm the table would otherwise fill between two collections and
    /// lose threads. False once the HTTP side is gone.
    fn wait(
        &self,
        next: Instant,
        deferred: u64,
        asks: &mpsc::Receiver<()>,
        stop: &AtomicBool,
    ) -> bool {
        loop {
            let now = Instant::now();
            if now >= next {
                return true;
            }
            match asks.recv_timeout((next - now).min(PRESSURE_EVERY)) {
                Ok(()) => return true,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            // Unreadable: the interval's collection still comes.
            let left = self
                .probes
                .deferred_total()
                .map_or(0, |d| d.saturating_sub(deferred));
            if stop.load(Ordering::Relaxed) || crowded(left, self.probes.thread_capacity()) {
                return true;
            }
        }
    }
}

/// Shortest time between the starts of two collections.
const MIN_GAP: Duration = Duration::from_millis(20);

fn fill(name: &'static str, entries: usize, capacity: u32) -> MapFill {
    MapFill {
        name,
        entries: entries as u64,
        capacity: u64::from(capacity),
    }
}

fn enable_stats() -> Option<OwnedFd> {
    match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
        Ok(fd) => Some(fd),
        Err(e) => {
            eprintln!(
                "zcprof: warning: cannot enable BPF run-time statistics (BPF_ENABLE_STATS): \
                 {e}; it needs CAP_SYS_ADMIN; zcprof_bpf_program_* will stay 0"
            );
            None
        }
    }
}

/// Allocations from this size up get their own mapping, given back to the system when freed.
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Runs the daemon until SIGTERM or SIGINT.
pub fn serve(args: &ServeArgs) -> anyhow::Result<i32> {
    // A scrape's body is megabytes at 10,000 processes, written by an HTTP thread and freed
    // once sent. glibc raises its mmap threshold past the largest block freed, so without a
    // fixed one every later body came from that thread's heap and stayed resident (as much
    // as the body again) until the next collection's trim.
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    // Everything the command line can get wrong, before loading anything.
    let by = args.group_by();
    let CheckedScope {
        comm,
        cgroup_root,
        cgroup_scope,
    } = check_scope(&args.scope, by.by_cgroup_path(), &args.pids)?;
    let target = privileges::planned(&args.privileges, true)?;

    // Bind before dropping privileges (a port below 1024 needs them) and before loading
    // (a taken port is the commonest mistake and should not cost a load).
    let listener = std::net::TcpListener::bind(args.listen).map_err(|err| ServeError::Listen {
        addr: args.listen,
        err,
    })?;
    listener
        .set_nonblocking(true)
        .context("making the listening socket non-blocking")?;
    let local = listener
        .local_addr()
        .context("reading the listening address")?;

    let probes = load_scoped(&args.probes, &args.pids)?;
    // Run-time statistics cost every program run two clock reads, more than the programs'
    // own work on the hot path: only on request.
    let stats_fd = if args.program_stats {
        enable_stats()
    } else {
        None
    };

    match &target {
        Some(t) => {
            drop_and_check_maps(t, &probes)?;
            eprintln!(
                "zcprof: running as {} (uid {}, gid {}) with no capabilities",
                privileges::user_name(t.uid),
                t.uid,
                t.gid
            );
        }
        None => {
            let c = privileges::current();
            eprintln!(
                "zcprof: warning: --no-drop-privileges: serving as uid {} with its \
                 capabilities",
                c.uids.first().copied().unwrap_or(u32::MAX)
            );
        }
    }

    let scope = Scope {
        by,
        comm,
        cgroup: cgroup_scope,
        max_groups: args.max_series as usize,
    };
    let engine = Engine::new(scope);
    let (publish, latest) = watch::channel(Arc::new(Published::empty()));
    let (ask, asks) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let collector = Collector {
        probes,
        engine,
        host: HostFs::new(cgroup_root),
        publish,
        collections: 0,
        errors: 0,
        program_stats: stats_fd.is_some(),
    };
    let interval = args.collect_interval;
    let thread_stop = stop.clone();
    let collector_thread = std::thread::Builder::new()
        .name("zcprof-collect".into())
        .spawn(move || collector.run(interval, asks, thread_stop))
        .context("starting the collector thread")?;

    let scrape_seconds = Histogram::with_opts(
        HistogramOpts::new(
            "zcprof_scrape_duration_seconds",
            "Time from a scrape's arrival to its encoded response (fresh collection \
             included).",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
    )
    .context("creating the scrape duration histogram")?;
    let shared = Arc::new(http::Shared::new(
        args.histograms,
        scrape_seconds,
        latest,
        ask.clone(),
    ));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let signal = runtime.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("registering the listening socket")?;
        let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
        let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
        eprintln!("zcprof: serving http://{local}/metrics");
        let (tx, rx) = tokio::sync::oneshot::channel::<&'static str>();
        let stopped = async move {
            let name = tokio::select! {
                _ = sigterm.recv() => "SIGTERM",
                _ = sigint.recv() => "SIGINT",
            };
            let _ = tx.send(name);
        };
        http::serve(listener, shared, stopped).await;
        anyhow::Ok(rx.await.unwrap_or("a signal"))
    })?;
    // Connections still open get no more time.
    runtime.shutdown_timeout(Duration::from_millis(200));

    stop.store(true, Ordering::Relaxed);
    let _ = ask.send(());
    if collector_thread.join().is_err() {
        anyhow::bail!("the collector thread panicked; see the message above");
    }
    drop(stats_fd);
    eprintln!("zcprof: {signal}: programs detached, exiting");
    Ok(0)
}
