//! The parser entry: one datagram into an endpoint (`Endpoint::handle_input`), as a UAS with
//! nothing going on, as a UAC with a call ringing (so responses reach the call leg), and as a
//! UAC whose call was answered (so in-dialog requests and 2xx retransmissions, matched after
//! the INVITE transaction ended, reach the dialog), then every timer fired; and the body
//! reader (`crieur_sip::body`, multipart split) on the message's body. Nothing may panic or
//! hang.
#![no_main]

use std::time::{Duration, Instant};

use crieur_sip::{Config, Endpoint, Invite, Timers, Transport};
use libfuzzer_sys::fuzz_target;

fn endpoint(accept_incoming: bool) -> Endpoint {
    Endpoint::new(Config {
        local: "192.0.2.200:5060"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
        transport: Transport::Udp,
        user_agent: "fuzz".into(),
        timers: Timers::default(),
        capabilities: vec![("Allow".into(), "INVITE, ACK, BYE".into())],
        accept_incoming,
    })
}

fuzz_target!(|data: &[u8]| {
    // The body reader on any message's body and headers (the endpoint reaches it only for
    // the requests it takes).
    if let Ok(m) = crieur_sip::wire::parse(data) {
        let (headers, body) = match &m {
            crieur_sip::Message::Request(r) => (&r.headers, r.body()),
            crieur_sip::Message::Response(r) => (&r.headers, r.body()),
        };
        let _ = crieur_sip::body::sdp(headers, body);
        let _ = crieur_sip::body::read(headers, body, &["application/dtmf-relay"]);
    }
    let now = Instant::now();
    let from = "192.0.2.1:5060".parse().unwrap_or_else(|_| unreachable!());
    let mut uas = endpoint(true);
    uas.handle_input(now, from, data);
    let mut uac = endpoint(false);
    place(&mut uac, now, from);
    uac.handle_input(now, from, data);
    uac.handle_input(now, from, data);
    let mut answered = endpoint(false);
    if let Some(ok) = place(&mut answered, now, from).and_then(|invite| answer(&invite)) {
        answered.handle_input(now, from, ok.as_bytes());
        // The harness's own check: the call really is answered (else this part fuzzes nothing).
        let events: Vec<_> = std::iter::from_fn(|| answered.poll_event()).collect();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, crieur_sip::Event::Answered { .. })),
            "the harness's 200 OK did not answer the call: {events:?}"
        );
        while answered.poll_transmit().is_some() {}
        answered.handle_input(now, from, data);
        answered.handle_input(now + Duration::from_secs(1), from, data);
    }
    for ep in [&mut uas, &mut uac, &mut answered] {
        ep.handle_timeout(now + Duration::from_secs(64));
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
});

/// Places the fuzz call on `ep`; the INVITE it sends.
fn place(ep: &mut Endpoint, now: Instant, to: std::net::SocketAddr) -> Option<String> {
    let _ = ep.invite(
        now,
        Invite {
            call_id: "fuzz@192.0.2.200".into(),
            request_uri: "sip:+33100000000@192.0.2.1".into(),
            from: "sip:a@192.0.2.200".into(),
            to: "sip:+33100000000@192.0.2.1".into(),
            contact: "sip:a@192.0.2.200:5060".into(),
            destination: to,
            alternates: Vec::new(),
            headers: vec![],
            content_type: None,
            body: vec![],
            credentials: Some(crieur_sip::auth::Credentials::new("u", "p")),
        },
    );
    let sent = ep.poll_transmit()?;
    String::from_utf8(sent.payload.to_vec()).ok()
}

/// A 200 OK answering `invite` (its Via, From, Call-ID and CSeq, a To tag and a Contact).
fn answer(invite: &str) -> Option<String> {
    let header = |name: &str| {
        invite
            .lines()
            .find(|l| l.len() > name.len() && l[..name.len()].eq_ignore_ascii_case(name))
    };
    Some(format!(
        "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=fuzz\r\n{}\r\n{}\r\nContact: <sip:callee@192.0.2.1:5060>\r\nContent-Length: 0\r\n\r\n",
        header("Via:")?,
        header("From:")?,
        header("To:")?,
        header("Call-ID:")?,
        header("CSeq:")?,
    ))
}
