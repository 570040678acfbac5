//! Load generator: N concurrent calls with playback through a SIP UAS (sipp), reporting CPU
//! per concurrent call and RTP send-time lateness. Driven by `scripts/bench/media-load`.
//!
//! Usage: load <uas host:port> <calls> <calls per second> <message seconds> [SIP socket buffer bytes]
//!
//! With a 0 s message each call is signalling only (INVITE, 180, 200, ACK, BYE): S1.

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

// The allocator of the `crieur` binary, so the figures are the shipped program's: rsipstack
// allocates a great deal per transaction, and glibc's malloc was a third of S1's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crieur_media::audio::Message;
use crieur_media::uac::{CallRequest, OptOutFuture, Trunk, Uac};

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (clock ticks of 1/100 s on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 && args.len() != 6 {
        eprintln!("usage: load <uas host:port> <calls> <cps> <message seconds> [sip buffer bytes]");
        std::process::exit(2);
    }
    let uas = args[1]
        .parse()
        .unwrap_or_else(|e| panic!("uas address: {e}"));
    let calls: usize = args[2].parse().unwrap_or_else(|e| panic!("calls: {e}"));
    let cps: f64 = args[3].parse().unwrap_or_else(|e| panic!("cps: {e}"));
    let secs: f32 = args[4].parse().unwrap_or_else(|e| panic!("seconds: {e}"));
    let buffer: usize = args
        .get(5)
        .map(|b| b.parse().unwrap_or_else(|e| panic!("buffer: {e}")))
        .unwrap_or(crieur_media::uac::SIP_SOCKET_BUFFER);
    let samples: Vec<f32> = (0..(8000.0 * secs) as usize)
        .map(|n| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * n as f32 / 8000.0).sin())
        .collect();
    let message = Arc::new(Message::from_samples(&samples));
    let confirmation = Arc::new(Message::from_samples(&samples[..samples.len().min(8000)]));
    let uac = Arc::new(
        Uac::start_with_buffer(
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            "crieur-load/0",
            buffer,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let trunk = Arc::new(Trunk {
        address: uas,
        domain: None,
        from_user: "+33100000000".into(),
        from_domain: "load.test".into(),
        credentials: None,
        ring_timeout: Duration::from_secs(15),
        max_call_length: Duration::from_secs(f64::from(secs) as u64 + 60),
    });
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(calls);
    for i in 0..calls {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            t0 + Duration::from_secs_f64(i as f64 / cps),
        ))
        .await;
        let (uac, trunk, message, confirmation) = (
            uac.clone(),
            trunk.clone(),
            message.clone(),
            confirmation.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let req = CallRequest {
                number: format!("+3361{:07}", i),
                message,
                confirmation,
                opt_out_key: '9',
                not_interested_key: None,
                keep_received_audio: false,
                stop: None,
            };
            uac.call(&trunk, req, |_, _| -> OptOutFuture {
                Box::pin(async { Ok(()) })
            })
            .await
        }));
    }
    let mut worst = Vec::new();
    let (mut ok, mut failed, mut a2a, mut send_errors) = (0usize, 0usize, Vec::new(), 0u64);
    for t in tasks {
        match t.await {
            Ok(Ok(r)) if r.ending.outcome == crieur_media::call::Outcome::AnsweredCompleted => {
                ok += 1;
                worst.push(r.send_lateness_max_us);
                send_errors += u64::from(r.rtp_send_errors);
                a2a.extend(r.answer_to_first_audio.map(|d| d.as_micros() as u32));
            }
            Ok(Ok(r)) => {
                failed += 1;
                eprintln!(
                    "call ended {}: {}",
                    r.ending.outcome.as_str(),
                    r.ending.reason
                );
            }
            _ => failed += 1,
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    worst.sort_unstable();
    a2a.sort_unstable();
    // Send lateness of every packet, from the pacer's histogram (10 µs buckets).
    let hist = uac.pacer().lateness_histogram();
    let packets: u64 = hist.iter().sum();
    let late_pct = |p: f64| -> u64 {
        let want = (packets as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, c) in hist.iter().enumerate() {
            seen += c;
            if seen >= want.max(1) {
                return i as u64 * crieur_media::pacer::Pacer::LATENESS_BUCKET_US;
            }
        }
        0
    };
    let call_seconds = ok as f64 * f64::from(secs);
    let peak = (cps * f64::from(secs)).min(calls as f64);
    let (rcvbuf, sndbuf) = uac.sip_socket_buffers();
    println!(
        "sip_buffers rcv={rcvbuf} snd={sndbuf} completed_per_s={:.0} cpu_per_call_us={:.1}",
        ok as f64 / wall,
        cpu * 1e6 / (ok + failed).max(1) as f64
    );
    println!(
        "calls={calls} cps={cps} message={secs}s peak_concurrent~{peak:.0} ok={ok} failed={failed} wall={wall:.1}s cpu={cpu:.2}s \
         cpu_per_call_second={:.3}ms packets={packets} send_errors={send_errors} lateness_us p50={} p99={} p99.9={} worst_call_max={} answer_to_audio_us p50={} p99={}",
        if call_seconds > 0.0 { cpu * 1000.0 / call_seconds } else { 0.0 },
        late_pct(0.5),
        late_pct(0.99),
        late_pct(0.999),
        worst.last().copied().unwrap_or(0),
        pct(&a2a, 0.5),
        pct(&a2a, 0.99),
    );
}
