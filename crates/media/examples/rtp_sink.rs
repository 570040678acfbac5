//! RTP receiver for the playback benchmark: every stream's inter-arrival gaps, taken from
//! kernel receive timestamps (`SO_TIMESTAMPNS`), so this process's own scheduling does not
//! enter the figures. One socket for all streams, told apart by source port and SSRC (sipp's
//! pcap playback sends every call with the capture's SSRC).
//!
//! Usage: rtp_sink <port> [idle seconds before reporting, default 3]
//! Prints one line: streams, packets, lost (sequence gaps), |gap − 20 ms| p50/p99/p99.9/max.
//!
//! `KEY_AFTER_MS=<ms>`: that long after a source's first packet, the sink presses the key 5
//! back to it by RFC 4733 (payload type 101) from its own socket — the address the UAS's SDP
//! named, the only one a call accepts keys from: event packets every 20 ms, the first at 0 ms,
//! the three end packets from 140 ms (the shape of sipp's `dtmf_2833_5.pcap`). S4.

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock
#![allow(unsafe_code)] // recvmsg with control messages has no safe std equivalent

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Track {
    last: Option<(i128, u16)>,
    lost: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args
        .get(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("usage: rtp_sink <port> [idle seconds]"));
    let idle = Duration::from_secs(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3));
    let sock = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind: {e}"));
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap_or_else(|e| panic!("{e}"));
    let fd = sock.as_raw_fd();
    let on: libc::c_int = 1;
    // 64 MiB receive buffer (forced: we run as root in the bench), kernel timestamps.
    let size: libc::c_int = 64 << 20;
    // SAFETY: plain setsockopt calls on a socket we own, with correctly sized values.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let mut tracks: HashMap<(u16, u32), Track> = HashMap::new();
    let key_after = std::env::var("KEY_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    // (due, source port, packet index) of the key presses to send back.
    let mut keys: BinaryHeap<Reverse<(Instant, u16, u16)>> = BinaryHeap::new();
    let mut pressed: std::collections::HashSet<u16> = std::collections::HashSet::new();
    // |gap − 20 ms| in µs, 1 µs buckets up to 100 ms.
    let mut hist = vec![0u64; 100_001];
    let (mut packets, mut max_dev) = (0u64, 0u64);
    let mut last_rx = Instant::now();
    let mut buf = [0u8; 2048];
    let mut control = [0u8; 256];
    // SAFETY: sockaddr_in is plain data.
    let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    loop {
        let now = Instant::now();
        while let Some(&Reverse((due, port, k))) = keys.peek() {
            if due > now {
                break;
            }
            keys.pop();
            let _ = sock.send_to(&key_packet(port, k), ("127.0.0.1", port));
            if k < 9 {
                keys.push(Reverse((due + Duration::from_millis(20), port, k + 1)));
            }
        }
        let wait = keys
            .peek()
            .map_or(Duration::from_millis(200), |Reverse((due, _, _))| {
                due.saturating_duration_since(now)
                    .clamp(Duration::from_micros(500), Duration::from_millis(200))
            });
        let _ = sock.set_read_timeout(Some(wait));
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; every pointer in it refers to live local buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
        // SAFETY: fd is open; msg points at valid buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
        if n < 0 {
            if packets > 0 && keys.is_empty() && last_rx.elapsed() >= idle {
                break;
            }
            continue;
        }
        last_rx = Instant::now();
        let n = n as usize;
        if n < 12 || buf[0] >> 6 != 2 {
            continue;
        }
        let mut ts: Option<i128> = None;
        // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let t = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::timespec);
                    ts = Some(i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let Some(ts) = ts else { continue };
        packets += 1;
        let source = u16::from_be(from.sin_port);
        if let Some(after) = key_after.filter(|_| pressed.insert(source)) {
            keys.push(Reverse((last_rx + after, source, 0)));
        }
        let marker = buf[1] & 0x80 != 0;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let t = tracks
            .entry((u16::from_be(from.sin_port), ssrc))
            .or_default();
        if let Some((prev_ts, prev_seq)) = t.last {
            let step = seq.wrapping_sub(prev_seq);
            if step > 1 && step < 1000 {
                t.lost += u64::from(step - 1);
            }
            // A marker starts a new prompt: its gap is not a pacing gap.
            if step == 1 && !marker {
                let dev = ((ts - prev_ts) - 20_000_000).unsigned_abs() / 1000;
                let dev = u64::try_from(dev).unwrap_or(u64::MAX);
                max_dev = max_dev.max(dev);
                hist[dev.min(100_000) as usize] += 1;
            }
        }
        t.last = Some((ts, seq));
    }
    let gaps: u64 = hist.iter().sum();
    if key_after.is_some() {
        println!("keys pressed={}", pressed.len());
    }
    let pct = |p: f64| -> usize {
        let want = ((gaps as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in hist.iter().enumerate() {
            seen += c;
            if seen >= want {
                return i;
            }
        }
        0
    };
    let lost: u64 = tracks.values().map(|t| t.lost).sum();
    println!(
        "sink streams={} packets={packets} lost={lost} gap_dev_us p50={} p99={} p99.9={} max={max_dev}",
        tracks.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
    );
}

/// Packet `k` (0–9) of the key 5 sent back to the stream from `port`: 7 event packets, then
/// the end packet three times; one timestamp per press, one SSRC per destination.
fn key_packet(port: u16, k: u16) -> [u8; 16] {
    let end = k >= 7;
    let duration = 160 * (k.min(7) + 1);
    let mut p = [0u8; 16];
    p[0] = 0x80;
    p[1] = if k == 0 { 0x80 | 101 } else { 101 };
    p[2..4].copy_from_slice(&k.to_be_bytes());
    p[4..8].copy_from_slice(&0x1000u32.to_be_bytes());
    p[8..12].copy_from_slice(&(0x5EED_0000 | u32::from(port)).to_be_bytes());
    p[12] = 5;
    p[13] = if end { 0x80 | 10 } else { 10 };
    p[14..16].copy_from_slice(&duration.to_be_bytes());
    p
}
