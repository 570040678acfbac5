//! The pacer alone: N streams of 20 ms packets to one local socket for S seconds, no SIP.
//! Prints the send lateness percentiles. Usage: pacer_probe <streams> <seconds> <shards>
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crieur_media::call::Prompt;
use crieur_media::pacer::Pacer;
use crieur_media::rtp::Packetizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let (n, secs, shards) = (
        a.first().copied().unwrap_or(500),
        a.get(1).copied().unwrap_or(10),
        a.get(2).copied().unwrap_or(2),
    );
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let remote = sink.local_addr()?;
    std::thread::spawn(move || {
        let mut b = [0u8; 2048];
        while sink.recv(&mut b).is_ok() {}
    });
    let pacer = Pacer::new(shards)?;
    let audio: Arc<[u8]> = vec![0xD5u8; 8000 * secs].into();
    // Streams start once all are open, spread over one 20 ms period.
    let t0 = Instant::now() + Duration::from_millis(200 + n as u64 / 10);
    let mut keep = Vec::new();
    for i in 0..n {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0")?);
        sock.set_nonblocking(true)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let start = t0 + Duration::from_micros((i as u64 * 20_000) / n as u64);
        let s = pacer.open(sock, remote, Packetizer::new(8, i as u32, 0, 0, start), tx);
        s.play(audio.clone(), Prompt::Message, start);
        keep.push((s, rx));
    }
    std::thread::sleep(
        t0.saturating_duration_since(Instant::now()) + Duration::from_secs(secs as u64 + 1),
    );
    let h = pacer.lateness_histogram();
    let total: u64 = h.iter().sum();
    let pct = |p: f64| {
        let want = (total as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, c) in h.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                return i * 10;
            }
        }
        0
    };
    println!(
        "streams={n} shards={shards} packets={total} lateness_us p50={} p99={} p99.9={} max~{}",
        pct(0.5),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    Ok(())
}
