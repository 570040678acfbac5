//! Batched UDP reads and writes for the SIP loop: `recvmmsg(2)` reads every datagram waiting
//! (up to [`BATCH`]) in one system call, `sendmmsg(2)` sends what one loop turn produced in
//! one. No well-kept crate offers both on a tokio socket: `quinn-udp` batches reads but
//! sends one destination per call (GSO, equal-sized segments: not SIP's messages to
//! several peers), `nix`'s wrappers would be a new dependency for two calls; `libc` is
//! already the media crate's, so the two calls are made here, each `unsafe` block saying why
//! it holds.
//!
//! A batch read that comes back short means the kernel's queue ran dry during the call
//! (`recvmmsg` with `MSG_DONTWAIT` stops at the first `EAGAIN`), so the socket's readiness is
//! cleared then — no further empty read to learn it (`strace` of S1 had five of a call's
//! eight `recvfrom` find nothing).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A UDP socket registered with the reactor, whose cached readiness a read or send looks at
/// first: tokio's `UdpSocket`, or a descriptor of one in an `AsyncFd` (the SIP loop's,
/// registered for the one interest it waits on: `uac.rs`, `UdpNet`).
pub trait Registered: AsRawFd {
    /// Runs `f` if the reactor says `interest` may be ready; a `WouldBlock` from it clears
    /// that readiness.
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

impl Registered for UdpSocket {
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        UdpSocket::try_io(self, interest, f)
    }
}

/// A socket not registered with the reactor (the SIP loop's, sent on directly): no
/// readiness is tracked, each call is tried.
impl Registered for std::net::UdpSocket {
    fn try_io<R>(&self, _: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        f()
    }
}

impl Registered for AsyncFd<std::net::UdpSocket> {
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        AsyncFd::try_io(self, interest, |_| f())
    }
}

/// Datagrams read, or sent, per system call.
pub const BATCH: usize = 32;

/// The largest UDP payload: 65,507 bytes over IPv4 (65,535 − 8 − 20), 65,527 over IPv6
/// (65,535 − 8, the IPv6 header being outside the payload length; no jumbograms): a SIP
/// message over UDP is one datagram, so a slot takes the largest of either.
const SLOT: usize = 65_535;

/// The buffers of a batch read: [`BATCH`] datagrams of up to [`SLOT`] bytes, their lengths
/// and sources.
pub struct RecvBatch {
    bufs: Vec<u8>,
    /// Each datagram kept: its slot, length and source.
    got: Vec<(usize, usize, SocketAddr)>,
    /// Datagrams the last read took from the kernel (kept or dropped).
    taken: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![0u8; BATCH * SLOT],
            got: Vec::with_capacity(BATCH),
            taken: 0,
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last read, with their sources.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.got.iter().map(|(i, n, from)| {
            let start = i * SLOT;
            (self.bufs.get(start..start + n).unwrap_or_default(), *from)
        })
    }

    /// Reads what `sock` has waiting, up to [`BATCH`] datagrams, without waiting: `Ok(n)`,
    /// `n` from 0 (nothing waited) to [`BATCH`] (more may wait). Fewer than [`BATCH`] clears
    /// the socket's readiness (the kernel's queue was found empty), so the next
    /// `readable().await` sleeps until a datagram comes.
    pub fn read(&mut self, sock: &impl Registered) -> io::Result<usize> {
        self.got.clear();
        self.taken = 0;
        let r = sock.try_io(Interest::READABLE, || {
            let n = recv_mmsg(sock, &mut self.bufs, &mut self.got)?;
            self.taken = n;
            if n < BATCH {
                // The truth: `recvmmsg` stopped at EAGAIN. Tokio clears the readiness only
                // if no new readiness event came since it was observed.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match r {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(self.taken),
            Err(e) => Err(e),
        }
    }

    /// [`RecvBatch::read`] of a socket not registered for readability: one `recvmmsg`
    /// whatever the reactor knows (nothing: no readiness is tracked for it).
    pub fn read_now(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        self.got.clear();
        self.taken = 0;
        match recv_mmsg(sock, &mut self.bufs, &mut self.got) {
            Ok(n) => {
                self.taken = n;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// One `recvmmsg(2)` into `bufs` (`BATCH` slots of `SLOT` bytes); `got` gets each datagram's
/// slot, length and source; the count taken from the kernel is returned. `Err(WouldBlock)`
/// when nothing waited. A datagram longer than its slot (only an IPv6 jumbogram could be)
/// or from an address of another family is dropped.
fn recv_mmsg(
    sock: &impl AsRawFd,
    bufs: &mut [u8],
    got: &mut Vec<(usize, usize, SocketAddr)>,
) -> io::Result<usize> {
    // SAFETY: all-zero bytes are a valid value of these plain C structures.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut slots = bufs.chunks_exact_mut(SLOT);
    let mut vlen = 0;
    for ((iov, hdr), name) in iovs.iter_mut().zip(hdrs.iter_mut()).zip(names.iter_mut()) {
        let Some(slot) = slots.next() else { break };
        iov.iov_base = slot.as_mut_ptr().cast();
        iov.iov_len = slot.len();
        hdr.msg_hdr.msg_name = std::ptr::from_mut(name).cast();
        hdr.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_hdr.msg_iov = std::ptr::from_mut(iov);
        hdr.msg_hdr.msg_iovlen = 1;
        vlen += 1;
    }
    // SAFETY: `hdrs[..vlen]` each point at one `iovec` over a distinct `SLOT`-byte slot of
    // `bufs` and at one `sockaddr_storage` with its size, all of which outlive the call and
    // are not otherwise borrowed during it; the kernel writes at most that much into each.
    let n = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            vlen as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = usize::try_from(n).unwrap_or(0).min(vlen);
    for (i, (hdr, name)) in hdrs.iter().zip(names.iter()).take(n).enumerate() {
        let len = hdr.msg_len as usize;
        if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            tracing::debug!(len, "SIP: a datagram longer than its buffer, dropped");
            continue;
        }
        match socket_addr(name) {
            Some(from) => got.push((i, len, from)),
            None => tracing::debug!("SIP: a datagram from an unknown address family, dropped"),
        }
    }
    Ok(n)
}

/// A `sockaddr_storage` the kernel filled as a socket address (IPv4 or IPv6).
fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which is smaller than
            // and aligned within a `sockaddr_storage`.
            let a = unsafe { &*std::ptr::from_ref(s).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for `sockaddr_in6`.
            let a = unsafe { &*std::ptr::from_ref(s).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `to` as a `sockaddr_storage` and its length.
fn storage(to: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid `sockaddr_storage`.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        SocketAddr::V4(a) => {
            // SAFETY: a `sockaddr_in` fits, aligned, in a `sockaddr_storage`.
            let sin = unsafe { &mut *std::ptr::from_mut(&mut s).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { &mut *std::ptr::from_mut(&mut s).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as libc::socklen_t)
}

/// Sends `msgs` (destination, payload) on `sock` with as few `sendmmsg(2)` calls as it
/// takes ([`BATCH`] a call), without waiting: `Ok(n)`, the first `n` sent; fewer than all
/// when the socket's send buffer is full (the rest to be sent by waiting, as one would
/// with `send_to`). An error on one datagram (e.g. `EHOSTUNREACH`) is returned if it is the
/// first (`WouldBlock`: the buffer is full); after others, those before it count as sent
/// and the caller goes on with the rest.
pub fn send(sock: &impl Registered, msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let mut done = 0;
    while done < msgs.len() {
        let chunk = msgs.get(done..).unwrap_or_default();
        let chunk = chunk.get(..BATCH.min(chunk.len())).unwrap_or_default();
        match sock.try_io(Interest::WRITABLE, || send_mmsg(sock, chunk)) {
            Ok(n) => {
                done += n;
                if n < chunk.len() {
                    // The kernel took fewer: the send buffer is full, or the next one fails
                    // (its error comes back on the next call).
                    return Ok(done);
                }
            }
            Err(_) if done > 0 => return Ok(done),
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// One `sendmmsg(2)` of up to [`BATCH`] datagrams.
fn send_mmsg(sock: &impl AsRawFd, msgs: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    // SAFETY: all-zero bytes are a valid value of these plain C structures.
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut vlen = 0;
    for ((((to, payload), iov), hdr), name) in msgs
        .iter()
        .zip(iovs.iter_mut())
        .zip(hdrs.iter_mut())
        .zip(names.iter_mut())
    {
        let (s, len) = storage(*to);
        *name = s;
        // The kernel only reads through `iov_base` for a send.
        iov.iov_base = payload.as_ptr().cast_mut().cast();
        iov.iov_len = payload.len();
        hdr.msg_hdr.msg_name = std::ptr::from_mut(name).cast();
        hdr.msg_hdr.msg_namelen = len;
        hdr.msg_hdr.msg_iov = std::ptr::from_mut(iov);
        hdr.msg_hdr.msg_iovlen = 1;
        vlen += 1;
    }
    // SAFETY: `hdrs[..vlen]` each point at one `iovec` over a payload borrowed for the whole
    // call (read, never written, by the kernel for a send) and at one filled-in socket
    // address with its length; all outlive the call.
    let n = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            vlen as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A batch read gets every datagram waiting with its source, in order, and says when
    /// the queue ran dry; a batch send delivers each to its own destination.
    #[tokio::test]
    async fn batches_carry_each_datagram_to_and_from_its_own_address() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (to, to2) = (rx.local_addr().unwrap(), rx2.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..BATCH + 3)
            .map(|i| format!("datagram {i}").repeat(i + 1).into_bytes())
            .collect();
        let mut msgs: Vec<(SocketAddr, &[u8])> =
            payloads.iter().map(|p| (to, p.as_slice())).collect();
        msgs.push((to2, b"elsewhere"));
        // Tokio tries a socket only once its reactor has seen it ready.
        tx.writable().await.unwrap();
        assert_eq!(send(&tx, &msgs).unwrap(), msgs.len());

        let mut b = RecvBatch::default();
        rx.readable().await.unwrap();
        // All were sent before the first read: a full batch, then the rest, short.
        assert_eq!(b.read(&rx).unwrap(), BATCH);
        let first: Vec<(Vec<u8>, SocketAddr)> =
            b.datagrams().map(|(d, f)| (d.to_vec(), f)).collect();
        assert_eq!(b.read(&rx).unwrap(), 3);
        let rest: Vec<(Vec<u8>, SocketAddr)> =
            b.datagrams().map(|(d, f)| (d.to_vec(), f)).collect();
        let from = tx.local_addr().unwrap();
        let got: Vec<_> = first.into_iter().chain(rest).collect();
        assert_eq!(got.len(), payloads.len());
        for (g, p) in got.iter().zip(&payloads) {
            assert_eq!((&g.0, g.1), (p, from));
        }
        // Short: the readiness is cleared (nothing wakes a wait for it).
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), rx.readable())
                .await
                .is_err(),
            "still readable after a short batch"
        );

        rx2.readable().await.unwrap();
        assert_eq!(b.read(&rx2).unwrap(), 1);
        assert_eq!(
            b.datagrams().next().map(|(d, f)| (d.to_vec(), f)),
            Some((b"elsewhere".to_vec(), from))
        );

        // The readiness cleared by a short read comes back with the next datagram.
        tx.send_to(b"later", to).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.readable())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.read(&rx).unwrap(), 1);
    }

    #[test]
    fn socket_addresses_round_trip() {
        for a in ["127.0.0.1:5060", "[::1]:5062", "[fe80::1%2]:7"] {
            let a: SocketAddr = a.parse().unwrap();
            let (s, _) = storage(a);
            assert_eq!(socket_addr(&s), Some(a));
        }
    }
}
