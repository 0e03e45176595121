//! Activity in phases: some before a start file appears, polling for it, then the measured
//! action (for attaching to a process that is already running).

use std::path::{Path, PathBuf};

use crate::{
    Job,
    endpoints::{cpath, open},
    job,
    sched::clock_nanosleep,
    setup,
    tally::{BEFORE, MAIN, WAIT},
    transfer::{rd, wr},
};

/// `wait-then FILE ACTION [ARGS…]`: 50 writes of 4096 bytes to /dev/null and 50 reads of 4096
/// bytes from /dev/zero, then poll for FILE (access + 10 ms sleep), then run ACTION.
pub fn wait_then(rest: &[String], dir: &Path) -> Result<Job, String> {
    let file = PathBuf::from(rest.first().ok_or("missing FILE")?);
    let inner_action = rest.get(1).ok_or("missing ACTION")?.clone();
    let inner = setup(&inner_action, &rest[2..], dir)?;
    let null = open(Path::new("/dev/null"), libc::O_WRONLY)?;
    let zero = open(Path::new("/dev/zero"), libc::O_RDONLY)?;
    let mut buf = vec![0u8; 4096];
    let cfile = cpath(&file);
    job(move |t| {
        t.phase = BEFORE;
        for _ in 0..50 {
            wr(t, null, &buf, 4096)?;
            rd(t, zero, &mut buf, 4096)?;
        }
        t.phase = WAIT;
        loop {
            // SAFETY: valid C string.
            let r = unsafe { libc::access(cfile.as_ptr(), libc::F_OK) };
            if t.call("access", r as i64).is_ok() {
                break;
            }
            clock_nanosleep(t, 10_000_000)?;
        }
        t.phase = MAIN;
        inner(t)
    })
}
