//! Sockets: an AF_UNIX stream read back in the same thread, UDP datagrams over loopback
//! (sendto/recvfrom, sendmsg/recvmsg) and batched AF_UNIX datagrams (sendmmsg/recvmmsg).

use std::{net::UdpSocket, os::fd::IntoRawFd, ptr};

use crate::{
    Job,
    args::{arg, check_pipe_chunk, n_chunk},
    endpoints::{big_buffers, pattern, sockaddr_in, socketpair},
    job,
    transfer::{chunks, drain_read, two_iov, wr},
};

/// `socket-send`/`socket-recv N [CHUNK]`: write() into an AF_UNIX stream socket, read() it
/// from the peer.
pub fn stream_write_read(rest: &[String]) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    check_pipe_chunk(chunk)?;
    let (a, b) = socketpair(libc::SOCK_STREAM)?;
    big_buffers(a);
    big_buffers(b);
    let wbuf = pattern(chunk);
    let mut rbuf = vec![0u8; chunk];
    job(move |t| {
        chunks(n, chunk, |_, len| {
            wr(t, a, &wbuf, len)?;
            drain_read(t, b, &mut rbuf, len)?;
            Ok(len)
        })
    })
}

/// Two UDP loopback sockets and the buffers to move datagrams between them.
struct UdpPair {
    n: usize,
    chunk: usize,
    /// The sending socket.
    s: i32,
    /// The receiving socket.
    r: i32,
    /// The receiver's address.
    addr: libc::sockaddr_in,
    /// CHUNK pattern bytes to send.
    wbuf: Vec<u8>,
    /// CHUNK bytes to receive into.
    rbuf: Vec<u8>,
}

/// For `N [CHUNK]` (CHUNK at most 65000): the sockets and buffers.
fn udp_pair(rest: &[String]) -> Result<UdpPair, String> {
    let (n, chunk) = n_chunk(rest)?;
    if chunk > 65000 {
        return Err("CHUNK must be <= 65000 (UDP)".into());
    }
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let r = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = r.local_addr().map_err(|e| e.to_string())?.port();
    let (s, r) = (s.into_raw_fd(), r.into_raw_fd());
    big_buffers(s);
    big_buffers(r);
    let addr = sockaddr_in(port);
    let wbuf = pattern(chunk);
    let rbuf = vec![0u8; chunk];
    Ok(UdpPair {
        n,
        chunk,
        s,
        r,
        addr,
        wbuf,
        rbuf,
    })
}

/// `sendto`/`recvfrom N [CHUNK]`: one UDP datagram per sendto(), received with recvfrom().
pub fn udp_sendto(rest: &[String]) -> Result<Job, String> {
    let UdpPair {
        n,
        chunk,
        s,
        r,
        addr,
        wbuf,
        mut rbuf,
    } = udp_pair(rest)?;
    job(move |t| {
        chunks(n, chunk, |_, len| {
            let alen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            // SAFETY: buffers and the address outlive the calls.
            unsafe {
                let sent = t.xfer(
                    "sendto",
                    libc::sendto(
                        s,
                        wbuf.as_ptr().cast(),
                        len,
                        0,
                        (&addr as *const libc::sockaddr_in).cast(),
                        alen,
                    ),
                )?;
                let got = t.xfer(
                    "recvfrom",
                    libc::recvfrom(
                        r,
                        rbuf.as_mut_ptr().cast(),
                        rbuf.len(),
                        0,
                        ptr::null_mut(),
                        ptr::null_mut(),
                    ),
                )?;
                if got != sent || sent != len {
                    return Err(format!("datagram {len}: sent {sent}, got {got}"));
                }
            }
            Ok(len)
        })
    })
}

/// `sendmsg`/`recvmsg N [CHUNK]`: one UDP datagram per sendmsg() (two iovecs), received with
/// recvmsg().
pub fn udp_sendmsg(rest: &[String]) -> Result<Job, String> {
    let UdpPair {
        n,
        chunk,
        s,
        r,
        mut addr,
        mut wbuf,
        mut rbuf,
    } = udp_pair(rest)?;
    job(move |t| {
        chunks(n, chunk, |_, len| {
            let alen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            // SAFETY: buffers, iovecs and the address outlive the calls.
            unsafe {
                let mut iov = two_iov(&mut wbuf, len);
                let mut h: libc::msghdr = std::mem::zeroed();
                h.msg_name = (&mut addr as *mut libc::sockaddr_in).cast();
                h.msg_namelen = alen;
                h.msg_iov = iov.as_mut_ptr();
                h.msg_iovlen = 2;
                let sent = t.xfer("sendmsg", libc::sendmsg(s, &h, 0))?;
                let mut riov = [libc::iovec {
                    iov_base: rbuf.as_mut_ptr().cast(),
                    iov_len: rbuf.len(),
                }];
                let mut rh: libc::msghdr = std::mem::zeroed();
                rh.msg_iov = riov.as_mut_ptr();
                rh.msg_iovlen = 1;
                let got = t.xfer("recvmsg", libc::recvmsg(r, &mut rh, 0))?;
                if got != sent || sent != len {
                    return Err(format!("datagram {len}: sent {sent}, got {got}"));
                }
            }
            Ok(len)
        })
    })
}

/// `sendmmsg`/`recvmmsg N [CHUNK [BATCH]]`: AF_UNIX datagram socketpair, BATCH (default 4,
/// max 8) datagrams per call.
pub fn mmsg(rest: &[String]) -> Result<Job, String> {
    let (n, chunk) = n_chunk(rest)?;
    let batch = if rest.len() > 2 {
        arg(rest, 2, "BATCH")?
    } else {
        4
    };
    if !(1..=8).contains(&batch) || chunk > 65536 {
        return Err("BATCH must be 1..=8 and CHUNK <= 65536".into());
    }
    let (a, b) = socketpair(libc::SOCK_DGRAM)?;
    big_buffers(a);
    big_buffers(b);
    let mut wbuf = pattern(chunk * batch);
    let mut rbuf = vec![0u8; chunk * batch];
    job(move |t| {
        let mut done = 0;
        while done < n {
            // SAFETY: all-zero mmsghdr/iovec are valid; pointers set below stay valid.
            let mut iov: [libc::iovec; 8] = unsafe { std::mem::zeroed() };
            let mut msgs: [libc::mmsghdr; 8] = unsafe { std::mem::zeroed() };
            let mut k = 0;
            let mut planned = 0;
            while k < batch && done + planned < n {
                let len = chunk.min(n - done - planned);
                // SAFETY: k * chunk + len <= wbuf.len().
                iov[k].iov_base = unsafe { wbuf.as_mut_ptr().add(k * chunk) }.cast();
                iov[k].iov_len = len;
                msgs[k].msg_hdr.msg_iov = &mut iov[k];
                msgs[k].msg_hdr.msg_iovlen = 1;
                planned += len;
                k += 1;
            }
            // SAFETY: msgs[..k] are valid.
            let r = unsafe { libc::sendmmsg(a, msgs.as_mut_ptr(), k as u32, 0) };
            let sent_msgs = if r > 0 { r as usize } else { 0 };
            let sent: u64 = msgs[..sent_msgs].iter().map(|m| m.msg_len as u64).sum();
            t.xfer_n("sendmmsg", r as i64, sent)?;
            if sent_msgs == 0 {
                return Err("sendmmsg sent nothing".into());
            }
            // Receive them back, as many per call as are queued.
            let mut got_msgs = 0;
            let mut got_bytes = 0u64;
            while got_msgs < sent_msgs {
                // SAFETY: as above.
                let mut riov: [libc::iovec; 8] = unsafe { std::mem::zeroed() };
                let mut rmsgs: [libc::mmsghdr; 8] = unsafe { std::mem::zeroed() };
                let want = sent_msgs - got_msgs;
                for i in 0..want {
                    // SAFETY: i * chunk + chunk <= rbuf.len().
                    riov[i].iov_base = unsafe { rbuf.as_mut_ptr().add(i * chunk) }.cast();
                    riov[i].iov_len = chunk;
                    rmsgs[i].msg_hdr.msg_iov = &mut riov[i];
                    rmsgs[i].msg_hdr.msg_iovlen = 1;
                }
                // SAFETY: rmsgs[..want] are valid.
                let r = unsafe {
                    libc::recvmmsg(
                        b,
                        rmsgs.as_mut_ptr(),
                        want as u32,
                        libc::MSG_WAITFORONE,
                        ptr::null_mut(),
                    )
                };
                let m = if r > 0 { r as usize } else { 0 };
                let bytes: u64 = rmsgs[..m].iter().map(|x| x.msg_len as u64).sum();
                t.xfer_n("recvmmsg", r as i64, bytes)?;
                got_msgs += m;
                got_bytes += bytes;
            }
            if got_bytes != sent {
                return Err(format!("recvmmsg got {got_bytes} of {sent} bytes"));
            }
            done += sent as usize;
        }
        Ok(())
    })
}
