//! `zc-restart`: one `readv` of a pipe that the kernel interrupts and restarts, for the test
//! of how zcprof counts a restarted call.
//!
//! Usage: `zc-restart <SIGNALS>`. A reader thread blocks in one `readv` of an empty pipe; the
//! main thread sends it SIGUSR1 (handler installed with `SA_RESTART`) `SIGNALS` times, each
//! once the reader is blocked in `readv` again, then writes 5 bytes into the pipe. The kernel
//! restarts the `readv` after each handler: the program makes one call and sees one success.
//! `readv` because nothing else in the process uses it (the runtime and the loader `read`).
//! Prints `{"readv_calls": 1, "readv_bytes", "handled"}` (handled: the handler's own count).

use std::{
    process::exit,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde_json::json;

/// Signals the handler ran for.
static HANDLED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// `readv`'s number on x86_64, as `/proc/PID/task/TID/syscall` shows it while blocked.
const SYS_READV: &str = "19";

fn die(what: &str) -> ! {
    eprintln!("zc-restart: {what}: {}", std::io::Error::last_os_error());
    exit(1)
}

/// Waits until thread `tid` is blocked in `readv` (what it is doing, by the kernel's word).
fn wait_blocked_in_readv(tid: libc::pid_t) {
    let path = format!("/proc/self/task/{tid}/syscall");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = std::fs::read_to_string(&path).unwrap_or_default();
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        // State after the command name's closing parenthesis: S = sleeping.
        let sleeping = stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('S'));
        if now.split_whitespace().next() == Some(SYS_READV) && sleeping {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("zc-restart: the reader is not blocked in readv: {now:?}");
            exit(1);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let signals: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: zc-restart <SIGNALS>");
            exit(2)
        });
    // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            die("sigaction");
        }
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    let (r, w) = (fds[0], fds[1]);
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        let _ = tid_tx.send(unsafe { libc::gettid() });
        let mut buf = [0u8; 64];
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `iov` describes `buf`, valid for writes for the call.
        let n = unsafe { libc::readv(r, &iov, 1) };
        if n < 0 {
            die("readv");
        }
        n as u64
    });
    let tid = tid_rx.recv().unwrap_or_else(|_| die("reader thread"));
    for sent in 0..signals {
        wait_blocked_in_readv(tid);
        // SAFETY: tgkill with this process's pid and a live thread's tid.
        if unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR1) } != 0 {
            die("tgkill");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while HANDLED.load(Ordering::SeqCst) <= sent {
            if Instant::now() > deadline {
                eprintln!("zc-restart: signal {sent} not handled");
                exit(1);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    wait_blocked_in_readv(tid);
    // SAFETY: writes 5 bytes from a valid buffer into the pipe's write end.
    if unsafe { libc::write(w, b"hello".as_ptr().cast(), 5) } != 5 {
        die("write");
    }
    let bytes = reader.join().unwrap_or_else(|_| die("reader thread"));
    println!(
        "{}",
        json!({"readv_calls": 1, "readv_bytes": bytes, "handled": HANDLED.load(Ordering::SeqCst)})
    );
}
