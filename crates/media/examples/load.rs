//! Load generator for the performance scenarios (`scripts/bench/`): calls through a SIP UAS
//! (sipp) at a steady rate, each playing a message, with the process's CPU, RTP send
//! lateness, answer → first audio and — when asked — key detection and a periodic gauge.
//!
//! Usage: load <uas host:port> <calls> <calls per second> <message seconds> [SIP socket buffer bytes]
//!
//! - A 0 s message makes each call signalling only (INVITE, 180, 200, ACK, BYE): S1.
//! - `KEY_END_MS=<ms>`: the UAS sends a key whose RFC 4733 end packet leaves that long after
//!   the answer; reports how many calls heard it and the detection time against the end packet
//!   (negative: heard before the end packet, from the event's first packet): S4.
//! - `REPORT_EVERY_S=<s>`: prints the resident memory, calls in flight and the pacer's open
//!   streams every so often, and once more after the last call: S5.
//! - `SIP_LOOPS=<n>`: SIP loop threads (default: one per core, as a campaign's UAC).
//! - `LEAD_IN_MS=<ms>`: silence before each message (default 0: the pacer's own delay);
//!   answer → first audio is then reported beyond the lead-in, with its worst total.
//! - `AHEAD_MS=<ms>`: hands the calls to the UAC this far ahead of their start
//!   (`Uac::call_at`), in batches: the harness wakes once per this, not once per call, and
//!   each call's loop thread places it from its own timer; the reports are taken at the
//!   harness's own wake-ups too (each call's future polled then, not woken by its report).
//!   Default 0: each call handed at its start with `Uac::call`, a task each (S2, S4, S5);
//!   S1's scripts set 10.
//! - `RUNNER=1` (`AHEAD_MS` then ignored): the calls placed as `crieur-runner`'s driver places
//!   them — its loop sleeps until the next call is due but at least 20 ms, or until a call
//!   ends, then hands every call due to `Uac::call`, a task each — rather than each at its
//!   own instant (the harness woken once per call).
//! - `S1_STOP=1`: each call carries a stop token (a child of one token for the run, never
//!   cancelled), as a campaign's calls do (`crieur-runner`'s `place`: a child of its
//!   hang-up-all token).

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

// The allocator of the `crieur` binary, so the figures are the shipped program's: the SIP stack
// allocates a great deal per transaction, and glibc's malloc was a third of S1's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crieur_media::audio::Message;
use crieur_media::call::Outcome;
use crieur_media::uac::{CallReport, CallRequest, OptOutFuture, Trunk, Uac};

fn cpu_seconds() -> f64 {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// A CPU-time clock (`CLOCK_PROCESS_CPUTIME_ID`: every thread of this process, utime + stime
/// to the nanosecond; `CLOCK_THREAD_CPUTIME_ID`: the calling thread's), in seconds.
fn cpu_clock(clock: libc::clockid_t) -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through a valid pointer and nothing else.
    if unsafe { libc::clock_gettime(clock, &mut t) } != 0 {
        return 0.0;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of this process now.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn pct<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn env_num(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// `LEAD_IN_MS`, as the call sends it: whole 20 ms packets.
fn lead_in() -> Duration {
    Duration::from_millis(env_num("LEAD_IN_MS").unwrap_or(0.0) as u64)
}

fn lead_in_packets_us() -> u32 {
    (lead_in().as_micros().div_ceil(20_000) * 20_000) as u32
}

/// Counts per 10 µs up to 100 ms (the last bucket holds the rest) — the pacer's lateness
/// histogram has the same shape: a soak of any length keeps the same few kilobytes (a vector
/// per call made the soak's own memory grow).
struct Histogram(Vec<u64>);

const BUCKET_US: u64 = crieur_media::pacer::Pacer::LATENESS_BUCKET_US;

impl Default for Histogram {
    fn default() -> Self {
        Histogram(vec![0; 10_000])
    }
}

impl Histogram {
    fn add(&mut self, us: u32) {
        let i = (u64::from(us) / BUCKET_US) as usize;
        let i = i.min(self.0.len() - 1);
        self.0[i] += 1;
    }
    /// The lower edge of the bucket holding the `p` quantile, µs.
    fn pct(&self, p: f64) -> u64 {
        let total: u64 = self.0.iter().sum();
        let want = ((total as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.0.iter().enumerate() {
            seen += c;
            if seen >= want {
                return i as u64 * BUCKET_US;
            }
        }
        0
    }
}

#[derive(Default)]
struct Tally {
    ok: usize,
    failed: usize,
    worst: u32,
    a2a: Histogram,
    /// The worst answer → first message audio, lead-in included, µs.
    a2a_max_us: u32,
    send_errors: u64,
    calls_with_key: usize,
    key_delay_ms: Vec<i64>,
}

impl Tally {
    fn add(&mut self, r: Result<Result<CallReport, crieur_media::Error>, tokio::task::JoinError>) {
        match r {
            Ok(Ok(r)) if r.ending.outcome == Outcome::AnsweredCompleted => {
                self.ok += 1;
                self.worst = self.worst.max(r.send_lateness_max_us);
                self.send_errors += u64::from(r.rtp_send_errors);
                if let Some(d) = r.answer_to_first_audio {
                    let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
                    self.a2a_max_us = self.a2a_max_us.max(us);
                    self.a2a.add(us.saturating_sub(lead_in_packets_us()));
                }
                if let (Some(end), Some(answered), Some(key)) =
                    (env_num("KEY_END_MS"), r.answered_at, r.keys.first())
                {
                    self.calls_with_key += 1;
                    let delay = key.2.as_secs_f64() - answered.as_secs_f64() - end / 1000.0;
                    self.key_delay_ms.push((delay * 1000.0).round() as i64);
                }
            }
            Ok(Ok(r)) => {
                self.failed += 1;
                eprintln!(
                    "call ended {}: {}",
                    r.ending.outcome.as_str(),
                    r.ending.reason
                );
            }
            Ok(Err(e)) => {
                self.failed += 1;
                eprintln!("call error: {e}");
            }
            Err(e) => {
                self.failed += 1;
                eprintln!("call task: {e}");
            }
        }
    }
}

/// A call handed ahead (`AHEAD_MS`): its future, polled at the harness's wake-ups.
type Handed = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<CallReport, crieur_media::Error>> + Send>,
>;

/// Polls the handed calls from `from` on with a waker that does nothing (their reports are
/// taken at the harness's next wake-up, which comes every `AHEAD_MS` anyway — a report does
/// not wake it), and tallies those that ended.
fn drain_from(handed: &mut Vec<Handed>, from: usize, tally: &mut Tally) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut i = from;
    while i < handed.len() {
        match handed[i].as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => {
                tally.add(Ok(r));
                drop(handed.swap_remove(i));
            }
            std::task::Poll::Pending => i += 1,
        }
    }
}

fn drain(handed: &mut Vec<Handed>, tally: &mut Tally) {
    drain_from(handed, 0, tally);
}

// One thread places the calls and collects their reports, as sipp's UAC is one thread: each
// call runs on a UAC loop thread, and only its report comes back here. With tokio's default
// two workers, every call's waiting task hopped to an idle worker and back (4.8 thread
// switches per call at 1,000 calls/s, BENCHMARKS.md S1): the harness's cost, not the UAC's.
#[tokio::main(flavor = "current_thread")]
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
        Uac::start_udp(
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            "crieur-load/0",
            buffer,
            // As `Uac::start`: one loop thread per core unless told.
            env_num("SIP_LOOPS").map_or_else(Uac::loops_per_core, |n| n as usize),
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
        symmetric_rtp: false,
        p_asserted_identity: None,
        min_session_expires: std::time::Duration::from_secs(crieur_media::uac::MIN_SESSION_EXPIRES),
        servers: Vec::new(),
    });
    let in_flight = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let gauge = |label: &str| {
        println!(
            "gauge t={:.0}s {label} rss_kib={} calls_in_flight={} pacer_open_streams={}",
            t0.elapsed().as_secs_f64(),
            rss_kib(),
            in_flight.load(Ordering::Relaxed),
            uac.pacer().open_streams()
        );
    };
    let report_every = env_num("REPORT_EVERY_S").map(Duration::from_secs_f64);
    let mut next_report = report_every.map(|e| t0 + e);
    // The peak of open descriptors, beside the run (a thread of its own: the harness's
    // runtime is busy placing calls). Every 50 ms it reads the RTP socket pairs open (the
    // pool's counters: two atomics); `/proc/self/fd` only when those reached a new peak: 32
    // pairs or more above the most listed at yet, and every 5 s — listing it costs ~5 ms of
    // kernel time at 4,000 descriptors: read every 10 ms it was a third of the process's CPU
    // at 4,000 calls/s, every 500 ms still 3 % (the harness's, counted in S1's CPU per call;
    // the descriptors follow the pairs, two each). Waking every 10 ms, the thread alone was
    // 0.5 thread switches and ~7 µs per call at 200 calls/s (`perf stat --per-thread`,
    // BENCHMARKS.md S1): the harness's, not the UAC's. A peak less than 32 pairs above the
    // last listed one may be missed: the thread also gives an upper estimate, the listing at
    // the highest pairs plus two descriptors for each pair open past it at the peak.
    // The thread measures the harness, not the UAC: its own CPU (its thread's clock, kept in
    // `sampler_ns` after each round) is taken off the process's in `cpu` below — 0.4–2 ms a
    // second of run (0.5 µs a call at 4,000 calls/s, 7 % of the harness's), BENCHMARKS.md S1.
    let fds_max = Arc::new(AtomicUsize::new(open_fds()));
    let pairs_max = Arc::new(AtomicUsize::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler_ns = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (fds_max, pairs_max, sampling, sampler_ns, uac) = (
            fds_max.clone(),
            pairs_max.clone(),
            sampling.clone(),
            sampler_ns.clone(),
            uac.clone(),
        );
        let thread = std::thread::Builder::new().name("load-sampler".into());
        thread.spawn(move || {
            let mut n = 0u64;
            // The most pairs open at a listing, and the descriptors then.
            let (mut listed_peak, mut fds_at_peak) = (0u64, 0usize);
            let mut peak = 0u64;
            while sampling.load(Ordering::Relaxed) {
                let p = uac.rtp_pairs_open();
                peak = peak.max(p);
                pairs_max.fetch_max(p as usize, Ordering::Relaxed);
                if p >= listed_peak + 32 || n.is_multiple_of(100) {
                    let fds = open_fds();
                    fds_max.fetch_max(fds, Ordering::Relaxed);
                    if p >= listed_peak {
                        (listed_peak, fds_at_peak) = (p, fds);
                    }
                }
                n += 1;
                let ns = cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID) * 1e9;
                sampler_ns.store(ns as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
            fds_at_peak + 2 * peak.saturating_sub(listed_peak) as usize
        })
    }
    .unwrap_or_else(|e| panic!("sampler thread: {e}"));
    let sampler_cpu = || sampler_ns.load(Ordering::Relaxed) as f64 / 1e9;
    // As a campaign's: one token for the run, a child per call.
    let run_stop = (env_num("S1_STOP") == Some(1.0)).then(tokio_util::sync::CancellationToken::new);
    // The UAC's and the calls' placing: the process's CPU less the sampler thread's.
    let (cpu0, sampler0) = (cpu_seconds(), sampler_cpu());
    let waits0 = uac.sip_loop_waits();
    let mut set = tokio::task::JoinSet::new();
    let mut tally = Tally::default();
    // `RUNNER=1`: as `crieur-runner`'s driver places calls (its loop in `driver.rs`), each by
    // `Uac::call` when due.
    let runner = env_num("RUNNER") == Some(1.0);
    let ahead = match runner {
        true => Duration::ZERO,
        false => Duration::from_millis(env_num("AHEAD_MS").unwrap_or(0.0) as u64),
    };
    // Calls starting before this have been handed to the UAC.
    let mut handed_until = t0;
    // With `AHEAD_MS`, the calls handed and not yet reported.
    let mut handed: Vec<Handed> = Vec::new();
    for i in 0..calls {
        let at = t0 + Duration::from_secs_f64(i as f64 / cps);
        if runner {
            // The driver's loop: it sleeps until the next call is due but at least 20 ms, or
            // until a call of its `JoinSet` ends; then places every call due, each a task
            // calling `Uac::call`.
            while Instant::now() < at {
                let wait = at
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(20));
                tokio::select! {
                    Some(r) = set.join_next(), if !set.is_empty() => tally.add(r),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        } else if at >= handed_until {
            // The next batch: the calls of the window [at, at + ahead), handed `ahead` before
            // the first of them starts.
            let wake = at.checked_sub(ahead).unwrap_or(at);
            tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
            handed_until = at + ahead;
            // The reports that came since the last batch.
            drain(&mut handed, &mut tally);
        }
        // Results are taken as calls end, so a long soak holds no finished call.
        while let Some(r) = set.try_join_next() {
            tally.add(r);
        }
        if let (Some(at), Some(every)) = (next_report, report_every) {
            if Instant::now() >= at {
                gauge("running");
                next_report = Some(at + every);
            }
        }
        let stop = run_stop.as_ref().map(|t| t.child_token());
        let (uac, trunk, message, confirmation, in_flight) = (
            uac.clone(),
            trunk.clone(),
            message.clone(),
            confirmation.clone(),
            in_flight.clone(),
        );
        let call = async move {
            in_flight.fetch_add(1, Ordering::Relaxed);
            let req = CallRequest {
                number: format!("+3361{:07}", i),
                message,
                confirmation,
                opt_out_key: '9',
                not_interested_key: None,
                keep_received_audio: false,
                stop,
                // 0 unless LEAD_IN_MS: the pacer's own answer-to-audio.
                lead_in: lead_in(),
                amd: None,
            };
            let hook = |_, _| -> OptOutFuture { Box::pin(async { Ok(()) }) };
            let r = if ahead.is_zero() {
                uac.call(&trunk, req, hook).await
            } else {
                uac.call_at(&trunk, req, at, hook).await
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            r
        };
        if ahead.is_zero() {
            set.spawn(call);
        } else {
            // Polled once now (which hands the call over), then at the harness's own
            // wake-ups, not woken by its report.
            handed.push(Box::pin(call));
            let last = handed.len() - 1;
            drain_from(&mut handed, last, &mut tally);
        }
    }
    while let Some(r) = set.join_next().await {
        tally.add(r);
    }
    while !handed.is_empty() {
        tokio::time::sleep(ahead).await;
        drain(&mut handed, &mut tally);
    }
    let wall = t0.elapsed().as_secs_f64();
    let sampler_spent = sampler_cpu() - sampler0;
    let cpu = cpu_seconds() - cpu0 - sampler_spent;
    sampling.store(false, Ordering::Relaxed);
    let fds_upper = sampler.join().unwrap_or(0);
    let pairs = uac.rtp_pairs();
    println!(
        "rtp_pairs bound={} reused={} closed={} idle={} bound_per_call={:.3} open_max={} fds_max={} fds_max_upper={} fds_limit={}",
        pairs.bound,
        pairs.reused,
        pairs.closed,
        pairs.idle,
        pairs.bound as f64 / calls.max(1) as f64,
        pairs_max.load(Ordering::Relaxed),
        fds_max.load(Ordering::Relaxed),
        fds_upper.max(fds_max.load(Ordering::Relaxed)),
        std::fs::read_to_string("/proc/self/limits")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .unwrap_or_default(),
    );
    if report_every.is_some() {
        // The streams close on the pacer's threads just after the calls end.
        tokio::time::sleep(Duration::from_millis(200)).await;
        gauge("after-last-call");
    }
    let Tally {
        ok,
        failed,
        worst,
        a2a,
        a2a_max_us,
        send_errors,
        calls_with_key,
        mut key_delay_ms,
    } = tally;
    key_delay_ms.sort_unstable();
    // Send lateness of every packet, from the pacer's histogram (10 µs buckets).
    let late = Histogram(uac.pacer().lateness_histogram());
    let packets: u64 = late.0.iter().sum();
    let call_seconds = ok as f64 * f64::from(secs);
    let peak = (cps * f64::from(secs)).min(calls as f64);
    let (rcvbuf, sndbuf) = uac.sip_socket_buffers();
    println!(
        "sip_buffers rcv={rcvbuf} snd={sndbuf} ahead_ms={} runner={runner} sip_waits_per_call={:.2} completed_per_s={:.0} cpu_per_call_us={:.1}",
        ahead.as_millis(),
        (uac.sip_loop_waits() - waits0) as f64 / (ok + failed).max(1) as f64,
        ok as f64 / wall,
        cpu * 1e6 / (ok + failed).max(1) as f64
    );
    if lead_in() > Duration::ZERO {
        println!(
            "lead_in={}ms answer_to_first_message_audio_ms p50={:.1} p99={:.1} max={:.1}",
            lead_in_packets_us() / 1000,
            f64::from(lead_in_packets_us() + a2a.pct(0.5) as u32) / 1000.0,
            f64::from(lead_in_packets_us() + a2a.pct(0.99) as u32) / 1000.0,
            f64::from(a2a_max_us) / 1000.0,
        );
    }
    if env_num("KEY_END_MS").is_some() {
        println!(
            "keys calls_ok={ok} calls_with_key={calls_with_key} delay_vs_end_packet_ms p50={} p99={} max={}",
            pct(&key_delay_ms, 0.5),
            pct(&key_delay_ms, 0.99),
            key_delay_ms.last().copied().unwrap_or(0)
        );
    }
    println!(
        "calls={calls} cps={cps} message={secs}s peak_concurrent~{peak:.0} ok={ok} failed={failed} wall={wall:.1}s cpu={cpu:.2}s \
         sampler_cpu_taken_off={:.3}s cpu_per_call_second={:.3}ms packets={packets} send_errors={send_errors} lateness_us p50={} p99={} p99.9={} worst_call_max={} answer_to_audio_us p50={} p99={}",
        sampler_spent,
        if call_seconds > 0.0 { cpu * 1000.0 / call_seconds } else { 0.0 },
        late.pct(0.5),
        late.pct(0.99),
        late.pct(0.999),
        worst,
        a2a.pct(0.5),
        a2a.pct(0.99),
    );
}
