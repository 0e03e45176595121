//! Fuzz run of the HTTP front end: the real [`serve`] accept loop on a loopback port, with the
//! registry and collection hand-off of `zcprof serve` (a thread stands in for the collector and
//! publishes an empty collection whenever asked), fed hostile byte streams.
//!
//! Each case is a request (GET and HEAD of /metrics and /, unknown paths and methods, HTTP/1.0,
//! chunked and 100-continue bodies, an HTTP/2 preface, nothing at all) repeated for pipelining,
//! then changed: bits flipped, bytes set (NUL, CR, LF, colon, non-UTF-8), inserted, deleted or
//! duplicated, headers added (duplicated, absurd values, longer than [`MAX_HEAD_BYTES`]), the
//! stream cut short. It is written in pieces with pauses (a slow writer), optionally while
//! other connections sit idle (up to past [`MAX_CONNECTIONS`]), and the client then closes its
//! side and reads, drops the connection at once, or waits for an answer without closing. For
//! every case: no panic on the server's threads, the server answers or closes within
//! [`CLOSE_BOUND`] once the client has closed its side, an answer is no larger than
//! [`ANSWER_BOUND`], an unchanged request gets its status, and a valid `GET /metrics` on a new
//! connection still gets 200. At the end the process's resident memory must have grown by
//! less than [`RSS_GROWTH_BOUND`] since the first cases.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, Once,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use prometheus::{Histogram, HistogramOpts};
use proptest::{prelude::*, sample::Index};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
    sync::{oneshot, watch},
};

use super::{MAX_CONNECTIONS, MAX_HEAD_BYTES, Shared, serve};
use crate::{
    fuzz,
    serve::{args::HistogramMode, engine::Labels, metrics::Published},
};

/// Longest the server may take to answer and close once the client has closed its side (well
/// under [`super::HEADER_TIMEOUT`], so that it is the end of input that closes, not a timer).
const CLOSE_BOUND: Duration = Duration::from_secs(3);
/// Largest answer to one case (a few pipelined scrapes of a small registry).
const ANSWER_BOUND: usize = 4 << 20;
/// How long a client that keeps its side open waits for an answer.
const WAIT_FOR_ANSWER: Duration = Duration::from_millis(300);
/// Most the process's resident memory may grow from the first cases to the last.
const RSS_GROWTH_BOUND: u64 = 64 << 20;
/// Cases after which the resident memory is taken as the baseline.
const RSS_WARM_UP: u64 = 50;
/// Name of the server runtime's threads, by which a panic there is told from others.
const SERVER_THREADS: &str = "zcprof-fuzz-http";

/// Panics on the server's threads so far (tokio catches a panicking connection task, so the
/// test would not see it otherwise).
static SERVER_PANICS: AtomicU64 = AtomicU64::new(0);

fn count_server_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(SERVER_THREADS))
            {
                SERVER_PANICS.fetch_add(1, Ordering::Relaxed);
            }
            previous(info);
        }));
    });
}

/// `zcprof serve`'s HTTP side on 127.0.0.1, until dropped.
struct Server {
    runtime: Runtime,
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Label names of the published collection (zcprof serve's default grouping).
const LABELS: &[&str] = &["comm"];

fn start() -> Server {
    count_server_panics();
    let (publish, latest) = watch::channel(Arc::new(Published::empty()));
    let (collect_now, asks) = mpsc::channel::<()>();
    // The collector: a fresh (empty) collection at each request, until the server is gone.
    std::thread::spawn(move || {
        let mut collections = 0;
        while asks.recv().is_ok() {
            collections += 1;
            let mut p = Published::empty();
            p.collections = collections;
            let labels = Labels::new(LABELS, vec!["fuzz".to_string()]);
            p.groups = vec![(Arc::new(labels), Default::default())];
            publish.send_replace(Arc::new(p));
        }
    });
    let scrape_seconds = Histogram::with_opts(HistogramOpts::new(
        "zcprof_scrape_duration_seconds",
        "Scrape durations.",
    ))
    .unwrap();
    let shared = Arc::new(Shared::new(
        HistogramMode::Coarse,
        scrape_seconds,
        latest,
        collect_now,
    ));
    // As `zcprof serve` runs it: two workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    runtime.spawn(serve(listener, shared, async {
        let _ = stopped.await;
    }));
    Server {
        runtime,
        addr,
        _stop: stop,
    }
}

/// Requests the cases start from, with the status an unchanged one gets (`None`: not an
/// HTTP/1 request, or one whose answer is not this test's concern).
const REQUESTS: &[(&str, Option<u16>)] = &[
    ("GET /metrics HTTP/1.1\r\nHost: zcprof\r\n\r\n", Some(200)),
    ("HEAD /metrics HTTP/1.1\r\nHost: zcprof\r\n\r\n", Some(200)),
    ("GET / HTTP/1.1\r\nHost: zcprof\r\n\r\n", Some(200)),
    ("GET /metrics HTTP/1.0\r\n\r\n", Some(200)),
    (
        "GET /metrics?x=1 HTTP/1.1\r\nHost: zcprof\r\nConnection: close\r\n\r\n",
        Some(200),
    ),
    (
        "GET http://zcprof/metrics HTTP/1.1\r\nHost: zcprof\r\n\r\n",
        Some(200),
    ),
    ("GET /nothing HTTP/1.1\r\nHost: zcprof\r\n\r\n", Some(404)),
    ("OPTIONS * HTTP/1.1\r\nHost: zcprof\r\n\r\n", Some(404)),
    (
        "POST /metrics HTTP/1.1\r\nHost: zcprof\r\nContent-Length: 5\r\n\r\nhello",
        Some(405),
    ),
    (
        "PUT / HTTP/1.1\r\nHost: zcprof\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Some(405),
    ),
    (
        "POST /metrics HTTP/1.1\r\nHost: zcprof\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n",
        Some(405),
    ),
    (
        "GET /metrics HTTP/1.1\r\nHost: zcprof\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        Some(200),
    ),
    (
        "CONNECT zcprof:443 HTTP/1.1\r\nHost: zcprof:443\r\n\r\n",
        None,
    ),
    ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None),
    ("\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n", None),
    ("", None),
];

/// A change to the request's bytes; positions are fractions of the bytes so far.
#[derive(Debug, Clone)]
enum Change {
    Flip {
        at: Index,
        bit: u8,
    },
    Set {
        at: Index,
        byte: u8,
    },
    Insert {
        at: Index,
        bytes: Vec<u8>,
    },
    Delete {
        at: Index,
        len: usize,
    },
    Duplicate {
        at: Index,
        len: usize,
    },
    /// A header line after the request line.
    Header {
        name: Vec<u8>,
        value: Vec<u8>,
    },
    /// A header line of `len` bytes (past [`MAX_HEAD_BYTES`] at most twice over).
    Huge {
        len: usize,
        byte: u8,
    },
    Cut {
        at: Index,
    },
}

/// How the client ends.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Closes its side, then reads until the server closes.
    HalfClose,
    /// Drops the connection without reading.
    Drop,
    /// Keeps its side open and reads for [`WAIT_FOR_ANSWER`].
    Wait,
}

/// One case: what to send and how.
#[derive(Debug, Clone)]
struct Case {
    request: usize,
    repeat: usize,
    changes: Vec<Change>,
    /// Where to split the stream, and the pause before each piece, in milliseconds.
    pieces: Vec<(Index, u8)>,
    end: End,
    /// Connections opened before and held open during the case, sending nothing.
    idle: usize,
}

impl Case {
    fn bytes(&self) -> Vec<u8> {
        let mut b = REQUESTS[self.request].0.repeat(self.repeat).into_bytes();
        for c in &self.changes {
            let at = |ix: &Index, b: &Vec<u8>| ix.index(b.len() + 1);
            match c {
                Change::Flip { at: ix, bit } if !b.is_empty() => {
                    let i = ix.index(b.len());
                    b[i] ^= 1 << (bit % 8);
                }
                Change::Set { at: ix, byte } if !b.is_empty() => {
                    let i = ix.index(b.len());
                    b[i] = *byte;
                }
                Change::Insert { at: ix, bytes } => {
                    let i = at(ix, &b);
                    b.splice(i..i, bytes.iter().copied());
                }
                Change::Delete { at: ix, len } => {
                    let i = at(ix, &b);
                    let end = (i + len).min(b.len());
                    b.drain(i..end);
                }
                Change::Duplicate { at: ix, len } => {
                    let i = at(ix, &b);
                    let end = (i + len).min(b.len());
                    let copy = b[i..end].to_vec();
                    b.splice(end..end, copy);
                }
                Change::Header { name, value } => {
                    let i = b
                        .windows(2)
                        .position(|w| w == b"\r\n")
                        .map_or(b.len(), |i| i + 2);
                    let line = [name.as_slice(), b": ", value, b"\r\n"].concat();
                    b.splice(i..i, line);
                }
                Change::Huge { len, byte } => {
                    let i = b
                        .windows(2)
                        .position(|w| w == b"\r\n")
                        .map_or(b.len(), |i| i + 2);
                    let mut line = b"X-Huge: ".to_vec();
                    line.resize(*len, *byte);
                    line.extend(b"\r\n");
                    b.splice(i..i, line);
                }
                Change::Cut { at: ix } => {
                    let i = at(ix, &b);
                    b.truncate(i);
                }
                Change::Flip { .. } | Change::Set { .. } => {}
            }
        }
        b
    }

    /// The status an unchanged request must get.
    fn expected(&self) -> Option<u16> {
        if self.changes.is_empty() {
            REQUESTS[self.request].1
        } else {
            None
        }
    }
}

fn header_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "Host",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Expect",
            "Upgrade",
            "Accept-Encoding",
            "Content-Type",
            "Keep-Alive",
            "TE",
            "Trailer",
        ])
        .prop_map(|n| n.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "0",
            "-1",
            "5",
            "18446744073709551616",
            "chunked",
            "gzip, chunked",
            "chunked, gzip",
            "close",
            "keep-alive",
            "Upgrade, close",
            "100-continue",
            "h2c",
            "",
            "\u{e9}t\u{e9}",
        ])
        .prop_map(|v| v.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        1 => Just(0u8),
        1 => Just(b'\r'),
        1 => Just(b'\n'),
        1 => Just(b':'),
        1 => Just(b' '),
        1 => Just(0x80),
        1 => Just(0xff),
        3 => any::<u8>(),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        2 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Change::Flip { at, bit }),
        2 => (any::<Index>(), byte()).prop_map(|(at, byte)| Change::Set { at, byte }),
        2 => (any::<Index>(), prop::collection::vec(byte(), 1..16))
            .prop_map(|(at, bytes)| Change::Insert { at, bytes }),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, len)| Change::Delete { at, len }),
        1 => (any::<Index>(), 1usize..256).prop_map(|(at, len)| Change::Duplicate { at, len }),
        3 => (header_name(), header_value()).prop_map(|(name, value)| Change::Header { name, value }),
        1 => (0usize..2 * MAX_HEAD_BYTES, byte()).prop_map(|(len, byte)| Change::Huge { len, byte }),
        1 => any::<Index>().prop_map(|at| Change::Cut { at }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..REQUESTS.len(),
        prop_oneof![4 => Just(1usize), 1 => 2usize..6],
        prop_oneof![1 => Just(Vec::new()), 4 => prop::collection::vec(change(), 1..6)],
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec((any::<Index>(), prop_oneof![3 => Just(0u8), 1 => 1u8..20]), 1..5),
        ],
        prop_oneof![3 => Just(End::HalfClose), 1 => Just(End::Drop), 2 => Just(End::Wait)],
        prop_oneof![8 => Just(0usize), 1 => 1..MAX_CONNECTIONS + 8],
    )
        .prop_map(|(request, repeat, changes, pieces, end, idle)| Case {
            request,
            repeat,
            changes,
            pieces,
            end,
            idle,
        })
}

/// Reads until the server closes or `wait` has passed (or, with `head`, until a response head
/// has arrived), at most [`ANSWER_BOUND`] bytes: what arrived, and whether the server closed
/// (a reset is a close).
async fn read_for(
    s: &mut TcpStream,
    wait: Duration,
    head: bool,
) -> Result<(Vec<u8>, bool), String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Ok((answer, false)),
            Ok(Ok(0) | Err(_)) => return Ok((answer, true)),
            Ok(Ok(n)) => answer.extend(&buf[..n]),
        }
        if head && answer.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok((answer, false));
        }
        if answer.len() > ANSWER_BOUND {
            return Err(format!("answer longer than {ANSWER_BOUND} bytes"));
        }
    }
}

fn status(answer: &[u8]) -> Option<u16> {
    let rest = answer.strip_prefix(b"HTTP/1.")?.get(2..5)?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

/// Answers seen, by status ("none": closed or silent), to show what the run reached.
static ANSWERS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn note(answer: &[u8]) {
    let key = status(answer).map_or("none".to_string(), |s| s.to_string());
    *ANSWERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
}

/// Sends one case; an error says what the server did wrong.
async fn exchange(addr: SocketAddr, case: &Case) -> Result<(), String> {
    let mut idle = Vec::new();
    for _ in 0..case.idle {
        idle.push(
            TcpStream::connect(addr)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        );
    }
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let bytes = case.bytes();
    let mut cuts: Vec<(usize, u8)> = case
        .pieces
        .iter()
        .map(|(ix, pause)| (ix.index(bytes.len() + 1), *pause))
        .collect();
    cuts.sort();
    let mut from = 0;
    for (to, pause) in cuts.into_iter().chain([(bytes.len(), 0)]) {
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause.into())).await;
        }
        // The server may close before reading everything (a 431, a bad request): fine.
        if s.write_all(&bytes[from..to]).await.is_err() {
            break;
        }
        from = to;
    }
    let answer = match case.end {
        End::Drop => return Ok(()),
        End::HalfClose => {
            let _ = s.shutdown().await;
            let (answer, closed) = read_for(&mut s, CLOSE_BOUND, false).await?;
            if !closed {
                return Err(format!(
                    "neither answered nor closed within {CLOSE_BOUND:?} of the client's close"
                ));
            }
            answer
        }
        // An unchanged request must be answered, however slowly; for the others, a short wait
        // says whether the server answers without the client closing.
        End::Wait if case.expected().is_some() => read_for(&mut s, CLOSE_BOUND, true).await?.0,
        End::Wait => read_for(&mut s, WAIT_FOR_ANSWER, true).await?.0,
    };
    note(&answer);
    drop(idle);
    if let Some(want) = case.expected()
        && !matches!(case.end, End::Drop)
        && status(&answer) != Some(want)
    {
        return Err(format!(
            "an unchanged request got {:?}, not {want}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        ));
    }
    Ok(())
}

/// A scrape on a new connection: the server must still serve.
async fn scrape(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: zcprof\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("sending a scrape: {e}"))?;
    let (answer, _) = read_for(&mut s, CLOSE_BOUND, false).await?;
    let text = String::from_utf8_lossy(&answer);
    if status(&answer) != Some(200) || !text.contains("zcprof_scrape_duration_seconds") {
        return Err(format!(
            "a scrape after the case got {:?}",
            &text[..text.len().min(200)]
        ));
    }
    Ok(())
}

/// A client that closes its side after its request (`printf ... | nc -N`) gets the answer,
/// then the close: the server used to drop the request at that end of input (found by the
/// fuzz run).
#[test]
fn half_closed_client_gets_its_answer() {
    let server = start();
    for request in [
        "GET /metrics HTTP/1.1\r\nHost: zcprof\r\n\r\n",
        "HEAD / HTTP/1.1\r\nHost: zcprof\r\n\r\n",
    ] {
        let (answer, closed) = server
            .runtime
            .block_on(async {
                let mut s = TcpStream::connect(server.addr).await.unwrap();
                s.write_all(request.as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
                read_for(&mut s, CLOSE_BOUND, false).await
            })
            .unwrap();
        assert_eq!(status(&answer), Some(200), "{request:?}");
        assert!(closed, "{request:?}: not closed within {CLOSE_BOUND:?}");
    }
}

/// The process's resident memory in bytes (VmRSS), 0 if unknown.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib << 10)
}

#[test]
fn fuzz_http() {
    let server = start();
    let addr = server.addr;
    let executions = AtomicU64::new(0);
    let baseline = AtomicU64::new(0);
    let ran = fuzz::run("http", 300, case(), |case| {
        let before = SERVER_PANICS.load(Ordering::Relaxed);
        server
            .runtime
            .block_on(async {
                exchange(addr, &case).await?;
                scrape(addr).await
            })
            .map_err(TestCaseError::fail)?;
        if SERVER_PANICS.load(Ordering::Relaxed) != before {
            return Err(TestCaseError::fail("the server panicked (see above)"));
        }
        if executions.fetch_add(1, Ordering::Relaxed) + 1 == RSS_WARM_UP {
            baseline.store(rss_bytes(), Ordering::Relaxed);
        }
        Ok(())
    });
    let (start, end) = (baseline.load(Ordering::Relaxed), rss_bytes());
    println!(
        "fuzz http: answers by status {:?}",
        ANSWERS.lock().unwrap_or_else(|p| p.into_inner())
    );
    println!(
        "fuzz http: resident memory {} MiB after {RSS_WARM_UP} cases, {} MiB after {}",
        start >> 20,
        end >> 20,
        ran.executions
    );
    assert!(
        start == 0 || end < start + RSS_GROWTH_BOUND,
        "resident memory grew from {start} to {end} bytes"
    );
}
