//! S3 of the performance issue: CPU per RTP packet sent — crieur's send path (the
//! `Packetizer` building each 172-byte G.711 packet on its 20 ms schedule, sent with tokio's
//! `UdpSocket::send_to` as a call task does) against a raw `sendto` loop of the same
//! datagrams, on the same box, in one run. Both measured as the sending thread's CPU time.
//!
//! `cargo run --release -p crieur-media --example packet_cost [PACKETS]` (default 1 000 000)

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::net::UdpSocket;
use std::time::Instant;

use crieur_media::rtp::{Packetizer, Tx};

/// This thread's CPU time (user + system), from /proc (1/100 s ticks).
fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

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

/// `poll_transmit` at `poll_timeout()` is always due; anything else is a bug in the bench.
fn unreachable_not_due() {
    eprintln!("packetizer said not due at its own slot");
    std::process::exit(1);
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |s| s.parse().unwrap_or_else(|e| panic!("{e}")));
    let to = sink();
    // 10 s of PCMU audio (one byte per sample), looped.
    let audio: Vec<u8> = (0..80_000u32).map(|i| (i % 251) as u8).collect();

    // Raw: the same 172-byte datagram, sendto in a loop.
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let pkt = [0x80u8; 172];
    let c0 = thread_cpu();
    let t0 = Instant::now();
    for _ in 0..n {
        let _ = raw.send_to(&pkt, to);
    }
    let raw_wall = t0.elapsed();
    let raw_cpu = thread_cpu() - c0;

    // crieur: the packetizer and tokio's send_to, as a call task sends.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (ours_cpu, ours_wall) = rt.block_on(async {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        let mut p = Packetizer::new(0, 1, 2, 3, start);
        let c0 = thread_cpu();
        let t0 = Instant::now();
        let mut sent = 0u64;
        while sent < n {
            // Each packet is taken exactly at its slot: the schedule (timers) is not what is
            // measured here, the packet path is.
            let due = p.poll_timeout();
            match p.poll_transmit(due, &audio) {
                Tx::Packet(b) => {
                    let _ = sock.send_to(b, to).await;
                    sent += 1;
                }
                Tx::Done => p.restart(due),
                Tx::NotDue => unreachable_not_due(),
            }
        }
        (thread_cpu() - c0, t0.elapsed())
    });
    let per = |cpu: f64| cpu * 1e9 / n as f64;
    println!(
        "packets={n} (172 bytes)\nraw sendto:       {:.0} ns CPU/packet ({:.0} k packets/s wall)\ncrieur send path: {:.0} ns CPU/packet ({:.0} k packets/s wall)\nratio crieur/raw: {:.2}",
        per(raw_cpu),
        n as f64 / raw_wall.as_secs_f64() / 1e3,
        per(ours_cpu),
        n as f64 / ours_wall.as_secs_f64() / 1e3,
        per(ours_cpu) / per(raw_cpu).max(1e-9)
    );
}
