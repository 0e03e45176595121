//! The HTTP side: `GET /metrics` (and a small index page) over HTTP/1.1, hardened against slow
//! and hostile clients.
//!
//! Every connection is its own task and shares no lock with collection or other
//! connections: a scrape asks the collector thread for a fresh collection, waits (bounded)
//! for it to be published, and encodes it into memory (once, straight into the body) before
//! writing a byte, as OpenMetrics if the `Accept` header prefers it, else the classic text. Limits: at most
//! [`MAX_CONNECTIONS`] at once (a new one beyond that closes the *oldest*: a scrape takes
//! milliseconds, so the oldest is the one that stalls, and a client that opens connections
//! and sends nothing cannot lock scrapers out), request heads of at most
//! [`MAX_HEAD_BYTES`] (431 beyond), [`HEADER_TIMEOUT`] to send a request head (which also
//! closes idle keep-alive connections), and a connection lifetime of [`CONN_LIFETIME`] after
//! which it is shut down gracefully, then dropped [`CONN_GRACE`] later whatever it is doing
//! (a client that never reads its response cannot hold a slot longer).

use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Histogram, core::Collector as _};
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
};

use super::{
    args::HistogramMode,
    metrics::{Exposition, Format, Published},
};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request head (request line and headers) read.
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// Time a client has to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time after which a connection is shut down gracefully.
pub const CONN_LIFETIME: Duration = Duration::from_secs(15);
/// Time a connection shut down gracefully has to finish.
pub const CONN_GRACE: Duration = Duration::from_secs(5);
/// Longest a scrape waits for a fresh collection before serving the latest one.
pub const FRESH_WAIT: Duration = Duration::from_secs(5);

/// What every connection shares.
pub struct Shared {
    /// How much of the size histograms to export.
    histograms: HistogramMode,
    /// Scrape durations.
    scrape_seconds: Histogram,
    /// The latest collection.
    latest: watch::Receiver<Arc<Published>>,
    /// Asks the collector thread for a collection.
    collect_now: mpsc::Sender<()>,
    /// Size of the last body, to allocate the next one at once.
    last_body: AtomicUsize,
}

impl Shared {
    /// The state of a server exporting `histograms`, timing scrapes in `scrape_seconds`,
    /// serving `latest` and asking `collect_now` for fresh collections.
    pub fn new(
        histograms: HistogramMode,
        scrape_seconds: Histogram,
        latest: watch::Receiver<Arc<Published>>,
        collect_now: mpsc::Sender<()>,
    ) -> Self {
        Shared {
            histograms,
            scrape_seconds,
            latest,
            collect_now,
            last_body: AtomicUsize::new(64 << 10),
        }
    }
}

const INDEX: &str = "<!doctype html>\n<html><head><title>zcprof</title></head><body>\n\
<h1>zcprof</h1>\n<p>Where do my bytes get copied: per-process syscalls, ledger bytes, context \
switches and page faults, from eBPF.</p>\n<p><a href=\"/metrics\">Metrics</a></p>\n\
</body></html>\n";

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn metrics(shared: &Shared, format: Format) -> Response<Full<Bytes>> {
    let arrived = Instant::now();
    let mut latest = shared.latest.clone();
    // Ask for a collection and wait for one that started after this request arrived, so
    // that the counts are fresh; concurrent scrapes share one collection.
    let _ = shared.collect_now.send(());
    let fresh = tokio::time::timeout(FRESH_WAIT, latest.wait_for(|p| p.started >= arrived))
        .await
        .is_ok_and(|r| r.is_ok());
    if !fresh {
        log::warn!(
            "no fresh collection within {FRESH_WAIT:?}; serving the latest one (is the \
             collector stuck reading the kernel maps?)"
        );
    }
    let p = latest.borrow().clone();
    // A little more than last time: the body grows with the groups between scrapes.
    let capacity = shared.last_body.load(Ordering::Relaxed);
    let mut body = Exposition::new(format, shared.histograms, capacity + capacity / 8);
    body.published(&p);
    // Its own duration is observed before it is written, so that it counts this scrape too.
    shared
        .scrape_seconds
        .observe(arrived.elapsed().as_secs_f64());
    body.proto_histograms(&shared.scrape_seconds.collect(), p.daemon_started);
    let body = body.finish();
    shared.last_body.store(body.len(), Ordering::Relaxed);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(format.content_type()),
    );
    r
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let resp = match req.uri().path() {
        "/metrics" if get => {
            // Unreadable (not ASCII) or several Accept headers: the first readable one, or
            // none, which means the classic text.
            let accept = req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .find_map(|v| v.to_str().ok());
            metrics(&shared, Format::negotiate(accept)).await
        }
        "/" if get => {
            let mut r = Response::new(Full::new(Bytes::from_static(INDEX.as_bytes())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        "/metrics" | "/" => {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "zcprof: only GET and HEAD are served\n",
            );
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            r
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "zcprof: not found; metrics are at /metrics\n",
        ),
    };
    Ok(resp)
}

async fn connection(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    evicted: oneshot::Receiver<()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        // A client that sends its request and closes its side (`printf ... | nc -N`) still
        // gets the answer; hyper's default drops the request at that end of input.
        .half_close(true)
        .keep_alive(true);
    let conn = builder.serve_connection(
        TokioIo::new(stream),
        service_fn(move |req| handle(req, shared.clone())),
    );
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                log::debug!("connection ended: {e}");
            }
        }
        _ = evicted => log::debug!("connection closed to make room for a new one"),
        _ = tokio::time::sleep(CONN_LIFETIME) => {
            conn.as_mut().graceful_shutdown();
            if tokio::time::timeout(CONN_GRACE, conn).await.is_err() {
                log::debug!("connection dropped after its grace period");
            }
        }
    }
}

/// Open connections, oldest first, each with the means to close it.
#[derive(Default)]
struct Open {
    next: u64,
    conns: BTreeMap<u64, oneshot::Sender<()>>,
}

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // Held only to insert or remove one entry, never across an await.
    let open = Arc::new(Mutex::new(Open::default()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, or a connection reset before accept:
                        // back off briefly rather than spin.
                        log::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (close, evicted) = oneshot::channel();
                let id = {
                    let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
                    if o.conns.len() >= MAX_CONNECTIONS
                        && let Some((_, oldest)) = o.conns.pop_first()
                    {
                        let _ = oldest.send(());
                    }
                    let id = o.next;
                    o.next += 1;
                    o.conns.insert(id, close);
                    id
                };
                let shared = shared.clone();
                let open = open.clone();
                tokio::spawn(async move {
                    connection(stream, shared, evicted).await;
                    open.lock().unwrap_or_else(|p| p.into_inner()).conns.remove(&id);
                });
            }
        }
    }
}

#[cfg(test)]
mod fuzz;
