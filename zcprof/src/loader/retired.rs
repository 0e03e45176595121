//! Dead threads' final counts, handed over by the kernel through the `RETIRED` ring buffer at
//! each thread's final context switch (the kernel frees the thread's entry at the same
//! moment). A thread of its own drains the ring as records arrive, woken by the kernel through
//! poll(2), so that a fork storm cannot fill it between two collections; the collectors take
//! what it drained.

use std::{
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use zcprof_common::{InlineCell, Retired};

use super::maps::thread_view;
use crate::snapshot::{ProcessKey, RetiredThread};

/// How long the drainer sleeps in poll(2) before it looks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(200);

struct Inner {
    ring: RingBuf<MapData>,
    drained: Vec<RetiredThread>,
}

impl Inner {
    fn drain(&mut self) {
        while let Some(item) = self.ring.next() {
            if let Some(r) = decode(&item) {
                self.drained.push(r);
            }
        }
    }
}

/// The drainer of `RETIRED` and what it has drained so far.
pub struct RetiredFeed {
    inner: Arc<Mutex<Inner>>,
    stop: Arc<AtomicBool>,
    drainer: Option<JoinHandle<()>>,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic in the drainer leaves plain data behind: still usable.
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RetiredFeed {
    /// Starts draining `ring`.
    pub fn start(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        let fd: RawFd = ring.as_raw_fd();
        let inner = Arc::new(Mutex::new(Inner {
            ring,
            drained: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let drainer = {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::Builder::new()
                .name("zcprof-retired".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let mut pfd = libc::pollfd {
                            fd,
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd; the ring's fd stays open while `inner`
                        // (which this thread holds) lives.
                        let ready =
                            unsafe { libc::poll(&mut pfd, 1, STOP_CHECK.as_millis() as i32) };
                        if ready > 0 {
                            lock(&inner).drain();
                        }
                    }
                })?
        };
        Ok(Self {
            inner,
            stop,
            drainer: Some(drainer),
        })
    }

    /// Every record the kernel has written until now (the ring is drained once more here, so
    /// a record written before this call is never left for the next one).
    pub fn take(&self) -> Vec<RetiredThread> {
        let mut inner = lock(&self.inner);
        inner.drain();
        std::mem::take(&mut inner.drained)
    }
}

impl Drop for RetiredFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.drainer.take() {
            let _ = d.join();
        }
    }
}

/// A record as the kernel wrote it; `None` for one of another size (a build mismatch).
fn decode(bytes: &[u8]) -> Option<RetiredThread> {
    if bytes.len() < size_of::<Retired>() {
        return None;
    }
    // SAFETY: the slice holds at least one `Retired`, a plain-old-data `repr(C)` type that
    // every bit pattern is valid for; read_unaligned makes no alignment assumption.
    let r: Retired = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let mut view = thread_view(&r.stats);
    for (key, cell) in r.stats.spilled.iter().zip(r.cells.iter()) {
        if let Some(k) = InlineCell::decode(*key) {
            view.activity.transfers.entry(k).or_default().add(cell);
        }
    }
    Some(RetiredThread {
        process: ProcessKey::new(r.stats.tgid, r.stats.process_start),
        tid: r.stats.tid,
        view,
    })
}
