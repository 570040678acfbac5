//! S3 of the performance issue: CPU per RTP packet sent by crieur's `Pacer` (STREAMS calls'
//! streams of 172-byte G.711 packets on their 20 ms schedules, each from its own socket,
//! until about PACKETS are sent; CPU of the pacer's threads, sleeping and waking included)
//! against raw `sendto` loops of the same datagrams on the same box in the same run: from one
//! socket, and round-robin over STREAMS sockets (the pacer's shape). A draining receiver
//! thread takes every datagram; on loopback the kernel's delivery to it is charged to the
//! sender's system call in all three.
//!
//! `cargo run --release -p crieur-media --example packet_cost [PACKETS] [STREAMS]`
//! (default 1 000 000 and 2 000)

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crieur_media::call::Prompt;
use crieur_media::pacer::Pacer;
use crieur_media::rtp::Packetizer;

#[path = "common/cpu.rs"]
mod cpu;
use cpu::thread_cpu;

/// A receiver that drains the sink socket, so the kernel path is the same for both.
fn sink() -> std::net::SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = s.local_addr().unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        while s.recv(&mut b).is_ok() {}
    });
    addr
}

/// CPU time (user + system) of this process's threads whose name starts with `prefix`.
fn threads_cpu(prefix: &str) -> f64 {
    let mut total = 0.0;
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let Some((name, after)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(')'))
        else {
            continue;
        };
        if !name.starts_with(prefix) {
            continue;
        }
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        total += (ticks(11) + ticks(12)) / 100.0;
    }
    total
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map_or(1_000_000, |s| s.parse().unwrap_or_else(|e| panic!("{e}")));
    let streams: usize = args
        .next()
        .map_or(2_000, |s| s.parse().unwrap_or_else(|e| panic!("{e}")));
    let to = sink();
    let pkt = [0x80u8; 172];

    // Raw, one socket: the same 172-byte datagram, sendto in a loop.
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let c0 = thread_cpu();
    for _ in 0..n {
        let _ = raw.send_to(&pkt, to);
    }
    let raw_one = thread_cpu() - c0;

    // Raw, round-robin over as many sockets as the pacer has streams.
    let socks: Vec<UdpSocket> = (0..streams)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let c0 = thread_cpu();
    for i in 0..n {
        let _ = socks[(i % streams as u64) as usize].send_to(&pkt, to);
    }
    let raw_many = thread_cpu() - c0;
    drop(socks);

    // crieur: the pacer playing `streams` streams, spread over one 20 ms period, for as long
    // as it takes to send about `n` packets.
    let pacer = Pacer::per_core().unwrap_or_else(|e| panic!("{e}"));
    let secs = (n as f64 / (streams as f64 * 50.0)).ceil().max(1.0);
    let audio: Arc<[u8]> = vec![0xD5u8; (8000.0 * secs) as usize].into();
    let t0 = Instant::now() + Duration::from_millis(200 + streams as u64 / 10);
    let mut keep = Vec::with_capacity(streams);
    for i in 0..streams {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")));
        sock.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let start = t0 + Duration::from_micros((i as u64 * 20_000) / streams as u64);
        let s = pacer.open(sock, to, Packetizer::new(8, i as u32, 0, 0, start), tx);
        s.play(audio.clone(), Prompt::Message, start);
        keep.push((s, rx));
    }
    let c0 = threads_cpu("rtp-pacer");
    std::thread::sleep(
        t0.saturating_duration_since(Instant::now()) + Duration::from_secs_f64(secs + 0.5),
    );
    let ours = threads_cpu("rtp-pacer") - c0;
    let sent: u64 = keep
        .iter()
        .map(|(s, _)| u64::from(s.counters().sent(Prompt::Message)))
        .sum();

    let per = |cpu: f64, k: u64| cpu * 1e9 / k.max(1) as f64;
    let (one, many, pacer_ns) = (per(raw_one, n), per(raw_many, n), per(ours, sent));
    println!(
        "packets={n} (172 bytes), streams={streams}\n\
         raw sendto, one socket:            {one:.0} ns CPU/packet\n\
         raw sendto, {streams} sockets round-robin: {many:.0} ns CPU/packet\n\
         crieur pacer, {streams} streams ({sent} packets in {secs:.0} s): {pacer_ns:.0} ns CPU/packet\n\
         ratio pacer / raw same shape: {:.2}   (pacer / raw one socket: {:.2})",
        pacer_ns / many.max(1e-9),
        pacer_ns / one.max(1e-9)
    );
}
