//! MSG_ZEROCOPY: sends that pin user pages instead of copying them, and the completion
//! notifications the kernel queues for them on the socket's error queue.

use crate::{
    Job,
    args::n_chunk,
    endpoints::{big_buffers, pattern, setsockopt_int, tcp_pair},
    errno, job,
    transfer::{chunks, drain_recv},
};

/// linux/errqueue.h: a MSG_ZEROCOPY completion, and its "the kernel copied" flag (not in libc).
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

/// `msg-zerocopy N [CHUNK]`: send(MSG_ZEROCOPY) on a TCP loopback socket, the peer drained
/// with recv(), then the completions read until EAGAIN (`zerocopy-completed`/`-copied`).
pub fn msg_zerocopy(rest: &[String]) -> Result<Job, String> {
    // The socket has SO_ZEROCOPY set, as MSG_ZEROCOPY requires.
    let (n, chunk) = n_chunk(rest)?;
    let (c, s) = tcp_pair()?;
    big_buffers(c);
    big_buffers(s);
    setsockopt_int(c, libc::SOL_SOCKET, libc::SO_ZEROCOPY, 1)?;
    let wbuf = pattern(chunk);
    let mut rbuf = vec![0u8; chunk];
    let mut control = vec![0u8; 256];
    job(move |t| {
        chunks(n, chunk, |_, len| {
            // SAFETY: len <= wbuf.len().
            let r = unsafe { libc::send(c, wbuf.as_ptr().cast(), len, libc::MSG_ZEROCOPY) };
            let got = t.xfer("sendto", r)?;
            t.cell("sendto")?.zerocopy += 1;
            drain_recv(t, s, &mut rbuf, got)?;
            loop {
                // SAFETY: an all-zero msghdr is valid.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_control = control.as_mut_ptr().cast();
                h.msg_controllen = control.len();
                // SAFETY: the control buffer outlives the call.
                let r =
                    unsafe { libc::recvmsg(c, &mut h, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
                match t.xfer("recvmsg", r) {
                    Ok(_) => {}
                    Err(_) if errno() == libc::EAGAIN => break,
                    Err(e) => return Err(e),
                }
                // The completion: sends ee_info..=ee_data, copied or not.
                // SAFETY: the kernel filled h and its control buffer.
                let cm = unsafe { libc::CMSG_FIRSTHDR(&h) };
                if cm.is_null() {
                    return Err("zerocopy completion without a control message".into());
                }
                // SAFETY: cm points into `control`; CMSG_DATA is its payload.
                let ee = unsafe {
                    std::ptr::read_unaligned(libc::CMSG_DATA(cm) as *const libc::sock_extended_err)
                };
                if ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY {
                    return Err(format!("unexpected error-queue origin {}", ee.ee_origin));
                }
                let sends = ee.ee_data.wrapping_sub(ee.ee_info) as u64 + 1;
                t.cell("zerocopy-completed")?.calls += sends;
                if ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0 {
                    t.cell("zerocopy-copied")?.calls += sends;
                }
            }
            Ok(got)
        })
    })
}
