//! Signalling memory per established call: N calls placed on one `Endpoint` and answered
//! (200 with SDP, ACKed), the heap in use before and after, counted by a wrapping allocator.
//! Then every call hung up (BYE, 200): what an ended call holds until 64·T1 after its 2xx
//! (RFC 6026: the ACK re-sent to a retransmitted 2xx), and after. Also the allocations the
//! endpoint itself makes per call (the example's own — its `Invite`, the far end's
//! responses — left out): placing and answering it (INVITE, 180, 200, ACK), then hanging it
//! up (BYE, its 200, timer K).
//!
//! Usage: cargo run --release -p crieur-sip --example memory [calls]

// A measurement reads no clock for its result; any instant serves as the origin.
#![allow(clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use crieur_sip::{Config, Endpoint, Event, Invite, Timers, Transport};

struct Counting;
static IN_USE: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicIsize = AtomicIsize::new(0);

/// `f`'s result, with the allocations it made added to `count`.
fn counted<T>(count: &mut isize, f: impl FnOnce() -> T) -> T {
    let a = ALLOCS.load(Ordering::Relaxed);
    let r = f();
    *count += ALLOCS.load(Ordering::Relaxed) - a;
    r
}

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        IN_USE.fetch_add(l.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        IN_USE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        IN_USE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let trunk = "10.0.0.2:5060".parse().unwrap_or_else(|_| unreachable!());
    let mut ep = Endpoint::new(Config {
        local: "10.0.0.1:5060".parse().unwrap_or_else(|_| unreachable!()),
        transport: Transport::Udp,
        user_agent: "crieur/mem".into(),
        timers: Timers::default(),
        capabilities: vec![(
            "Allow".into(),
            "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE".into(),
        )],
        accept_incoming: false,
    });
    let offer = SDP.replace("10.0.0.2", "10.0.0.1").into_bytes();
    let t0 = Instant::now();
    let mut refs = Vec::with_capacity(n);
    let before = IN_USE.load(Ordering::Relaxed);
    // Allocations by the endpoint: placing and answering the calls, hanging them up.
    let (mut placing, mut hanging_up) = (0isize, 0isize);
    for i in 0..n {
        let invite = Invite {
            call_id: format!("{i:032x}@10.0.0.1"),
            request_uri: format!("sip:+3361{i:07}@10.0.0.2:5060;user=phone"),
            from: "sip:+33100000000@crieur.example;user=phone".into(),
            to: format!("sip:+3361{i:07}@10.0.0.2:5060;user=phone"),
            contact: "sip:+33100000000@10.0.0.1:5060".into(),
            destination: trunk,
            alternates: Vec::new(),
            headers: vec![
                (
                    "Allow".into(),
                    "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE".into(),
                ),
                ("Supported".into(), "timer".into()),
            ],
            content_type: Some("application/sdp".into()),
            body: offer.clone(),
            credentials: None,
        };
        let r = counted(&mut placing, || ep.invite(t0, invite));
        match r {
            Ok(call) => refs.push(call),
            Err(_) => {
                eprintln!("invite refused");
                return;
            }
        }
        // The far end answers what we sent: 180, then 200 with SDP.
        while let Some(t) = counted(&mut placing, || ep.poll_transmit()) {
            let text = String::from_utf8_lossy(&t.payload).into_owned();
            if !text.starts_with("INVITE ") {
                continue;
            }
            let h = |name: &str| header_line(&text, name);
            for (code, body) in [("180 Ringing", ""), ("200 OK", SDP)] {
                let resp = format!(
                    "SIP/2.0 {code}\r\n{}\r\n{}\r\n{};tag=callee{i}\r\n{}\r\n{}\r\nContact: <sip:callee@10.0.0.2:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                    h("Via:"), h("From:"), h("To:"), h("Call-ID:"), h("CSeq:"), body.len()
                );
                counted(&mut placing, || ep.handle_input(t0, trunk, resp.as_bytes()));
            }
        }
        counted(&mut placing, || {
            while ep.poll_transmit().is_some() {}
            while ep.poll_event().is_some() {}
        });
    }
    let placed = IN_USE.load(Ordering::Relaxed);
    let established = ep.calls();
    // Every call hung up at 1 s: our BYE, the far end's 200 to it.
    let bye_at = t0 + Duration::from_secs(1);
    for &call in &refs {
        if counted(&mut hanging_up, || ep.bye(bye_at, call, &[])).is_err() {
            eprintln!("bye refused");
            return;
        }
    }
    while let Some(t) = counted(&mut hanging_up, || ep.poll_transmit()) {
        let text = String::from_utf8_lossy(&t.payload).into_owned();
        if !text.starts_with("BYE ") {
            continue;
        }
        let h = |name: &str| header_line(&text, name);
        let resp = format!(
            "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{}\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
            h("Via:"),
            h("From:"),
            h("To:"),
            h("Call-ID:"),
            h("CSeq:")
        );
        counted(&mut hanging_up, || {
            ep.handle_input(bye_at, trunk, resp.as_bytes())
        });
    }
    // Timer K (5 s) ends the BYEs' transactions: the calls are forgotten; what RFC 6026 asks
    // for 2xx retransmissions (their ACKs) stays until 64·T1 after the 2xx.
    counted(&mut hanging_up, || {
        ep.handle_timeout(t0 + Duration::from_secs(7));
        while ep.poll_transmit().is_some() {}
    });
    let mut ended = 0;
    while let Some(e) = counted(&mut hanging_up, || ep.poll_event()) {
        if matches!(e, Event::Terminated { .. }) {
            ended += 1;
        }
    }
    let hung_up = IN_USE.load(Ordering::Relaxed);
    ep.handle_timeout(t0 + Duration::from_secs(40));
    let settled = IN_USE.load(Ordering::Relaxed);
    // The maps keep the capacity the established calls needed: what an ended call itself
    // holds is what goes when its 64·T1 is over.
    println!(
        "calls={n} established={established} ended={ended} bytes_per_call: established={} \
         ended_call_within_64_t1={} (maps' capacity kept after: {}); endpoint allocations \
         per call: placing_and_answering={:.1} hanging_up={:.1}",
        (placed - before) / n as isize,
        (hung_up - settled) / n as isize,
        (settled - before) / n as isize,
        placing as f64 / n as f64,
        hanging_up as f64 / n as f64
    );
}

/// The whole line of the header `name` (with its colon) in `text`, or "".
fn header_line(text: &str, name: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(name))
        .map(|l| l.to_owned())
        .unwrap_or_default()
}
