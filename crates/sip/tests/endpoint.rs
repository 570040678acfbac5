//! The endpoint against a scripted far end, one RFC rule per test: what leaves (parsed
//! back), when, and what the caller is told.

// Any instant serves as the origin: nothing here waits, time is an input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crieur_sip::auth::Credentials;
use crieur_sip::wire;
use crieur_sip::{
    Config, Endpoint, Event, Invite, Message, Method, Request, Timers, Transport, CLEANUP_GRID,
};
use sipx_sip::HeaderName;

const ME: &str = "10.0.0.1:5060";
const TRUNK: &str = "10.0.0.2:5060";

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn cfg(accept_incoming: bool) -> Config {
    Config {
        local: a(ME),
        transport: Transport::Udp,
        user_agent: "crieur-test".into(),
        timers: Timers::default(),
        capabilities: vec![(
            "Allow".into(),
            "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE".into(),
        )],
        accept_incoming,
    }
}

/// An endpoint on TCP.
fn tcp_endpoint(accept_incoming: bool) -> Endpoint {
    let mut c = cfg(accept_incoming);
    c.transport = Transport::Tcp;
    Endpoint::new(c)
}

fn invite(creds: Option<Credentials>) -> Invite {
    Invite {
        call_id: "call-1@10.0.0.1".into(),
        request_uri: "sip:+33612345678@10.0.0.2:5060;user=phone".into(),
        from: "sip:+33100000000@example.fr".into(),
        to: "sip:+33612345678@10.0.0.2:5060;user=phone".into(),
        contact: "sip:crieur@10.0.0.1:5060".into(),
        destination: a(TRUNK),
        alternates: Vec::new(),
        headers: vec![("Allow".into(), "INVITE, ACK".into())],
        content_type: Some("application/sdp".into()),
        body: b"v=0\r\n".to_vec(),
        credentials: creds,
    }
}

/// Everything sent so far, parsed back, with where it went.
fn sent(ep: &mut Endpoint) -> Vec<(SocketAddr, Message)> {
    std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| (t.destination, wire::parse(&t.payload).unwrap()))
        .collect()
}

fn events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

fn req(m: &Message) -> &Request {
    m.as_request().expect("a request")
}

fn h(m: &Message, n: HeaderName) -> String {
    wire::value(m.headers(), &n).unwrap_or_default()
}

fn all(m: &Message, n: HeaderName) -> Vec<String> {
    m.headers()
        .get_all(&n)
        .map(|h| String::from_utf8_lossy(&h.value()).into_owned())
        .collect()
}

/// A response to `r` as the far end writes it (Vias echoed, To tag added).
fn response(r: &Message, code: u16, to_tag: Option<&str>, extra: &str) -> Vec<u8> {
    let reason = match code {
        100 => "Trying",
        180 => "Ringing",
        200 => "OK",
        401 => "Unauthorized",
        407 => "Proxy Authentication Required",
        486 => "Busy Here",
        487 => "Request Terminated",
        _ => "Whatever",
    };
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for v in all(r, HeaderName::Via) {
        s += &format!("Via: {v};received=10.0.0.1\r\n");
    }
    s += &format!("From: {}\r\n", h(r, HeaderName::From));
    match to_tag {
        Some(t) => s += &format!("To: {};tag={t}\r\n", h(r, HeaderName::To)),
        None => s += &format!("To: {}\r\n", h(r, HeaderName::To)),
    }
    s += &format!(
        "Call-ID: {}\r\nCSeq: {}\r\n",
        h(r, HeaderName::CallId),
        h(r, HeaderName::CSeq)
    );
    s += extra;
    s += "Content-Length: 0\r\n\r\n";
    s.into_bytes()
}

fn start(creds: Option<Credentials>) -> (Endpoint, Instant, crieur_sip::CallRef, Message) {
    let mut ep = Endpoint::new(cfg(false));
    let t0 = Instant::now();
    let call = ep.invite(t0, invite(creds)).unwrap();
    let mut out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    let (dest, inv) = out.remove(0);
    assert_eq!(dest, a(TRUNK));
    (ep, t0, call, inv)
}

#[test]
fn the_invite_carries_what_8_1_1_requires_and_rport() {
    let (_, _, _, inv) = start(None);
    let r = req(&inv);
    assert_eq!(r.method, Method::Invite);
    let via = h(&inv, HeaderName::Via);
    assert!(
        via.starts_with("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK"),
        "{via}"
    );
    assert!(via.ends_with(";rport"), "{via}");
    assert!(h(&inv, HeaderName::From).contains(";tag="));
    assert!(!h(&inv, HeaderName::To).contains("tag="));
    assert_eq!(h(&inv, HeaderName::CSeq), "1 INVITE");
    assert_eq!(h(&inv, HeaderName::MaxForwards), "70");
    assert_eq!(h(&inv, HeaderName::CallId), "call-1@10.0.0.1");
    assert_eq!(h(&inv, HeaderName::Contact), "<sip:crieur@10.0.0.1:5060>");
    assert_eq!(&r.body()[..], b"v=0\r\n");
}

/// §17.1.1.2: timer A doubles from T1; timer B ends the transaction at 64·T1.
#[test]
fn timer_a_retransmits_and_timer_b_gives_up() {
    let (mut ep, t0, call, inv) = start(None);
    let mut at = Vec::new();
    let mut t = t0;
    while let Some(due) = ep.poll_timeout() {
        if due > t0 + Duration::from_secs(40) {
            break;
        }
        t = due;
        ep.handle_timeout(t);
        for (_, m) in sent(&mut ep) {
            assert_eq!(h(&m, HeaderName::Via), h(&inv, HeaderName::Via));
            at.push((t - t0).as_millis());
        }
        if !events(&mut ep).is_empty() {
            break;
        }
    }
    assert_eq!(at, [500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(t - t0, Duration::from_secs(32));
    let _ = call;
}

#[test]
fn timer_b_is_reported() {
    let (mut ep, t0, call, _) = start(None);
    ep.handle_timeout(t0 + Duration::from_secs(33));
    // Catch up every timer due by then.
    while ep
        .poll_timeout()
        .is_some_and(|d| d <= t0 + Duration::from_secs(33))
    {
        ep.handle_timeout(t0 + Duration::from_secs(33));
    }
    let ev = events(&mut ep);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::InviteFailed { call: c, timeout: true } if *c == call)),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| matches!(e, Event::Terminated { .. })),
        "{ev:?}"
    );
    assert_eq!(ep.calls(), 0);
}

/// §9.1: no CANCEL before a provisional response; then one with the INVITE's Via, Request-URI,
/// Call-ID, From, To and CSeq number; the 487 is ACKed with the INVITE's Via (§17.1.1.3).
#[test]
fn cancel_waits_for_a_provisional_and_matches_the_invite() {
    let (mut ep, t0, call, inv) = start(None);
    ep.cancel(t0, call);
    assert!(
        sent(&mut ep).is_empty(),
        "no CANCEL before a provisional response"
    );
    ep.handle_input(t0, a(TRUNK), &response(&inv, 180, Some("callee"), ""));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    let cancel = &out[0].1;
    assert_eq!(req(cancel).method, Method::Cancel);
    assert_eq!(req(cancel).uri.to_string(), req(&inv).uri.to_string());
    for n in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
    ] {
        assert_eq!(h(cancel, n.clone()), h(&inv, n));
    }
    assert_eq!(all(cancel, HeaderName::Via).len(), 1);
    assert_eq!(h(cancel, HeaderName::CSeq), "1 CANCEL");
    // The CANCEL's 200, then the INVITE's 487.
    ep.handle_input(t0, a(TRUNK), &response(cancel, 200, Some("callee"), ""));
    ep.handle_input(t0, a(TRUNK), &response(&inv, 487, Some("callee"), ""));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    let ack = &out[0].1;
    assert_eq!(req(ack).method, Method::Ack);
    assert_eq!(all(ack, HeaderName::Via), vec![h(&inv, HeaderName::Via)]);
    assert_eq!(h(ack, HeaderName::CSeq), "1 ACK");
    assert!(h(ack, HeaderName::To).contains("tag=callee"));
    let ev = events(&mut ep);
    assert!(
        ev.iter().any(
            |e| matches!(e, Event::Rejected { response, .. } if response.status.code() == 487)
        ),
        "{ev:?}"
    );
}

/// The CANCEL of a credentialed INVITE and the ACK of its non-2xx final carry the INVITE's
/// credentials as they are (the same transaction: no nonce count of their own); the ACK of
/// the 407 that asked for them carries none (that INVITE had none).
#[test]
fn cancel_and_a_non_2xx_ack_carry_the_invites_credentials() {
    let (mut ep, t0, call, inv) = start(Some(Credentials::new("alice", "secret")));
    let pa = "Proxy-Authenticate: Digest realm=\"p\", nonce=\"n1\", qop=\"auth\"\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv, 407, Some("t"), pa));
    let mut out = sent(&mut ep);
    assert_eq!(out.len(), 2, "{out:?}");
    let inv2 = out.remove(1).1;
    let ack407 = &out[0].1;
    assert_eq!(req(ack407).method, Method::Ack);
    assert!(all(ack407, HeaderName::ProxyAuthorization).is_empty());
    let creds = all(&inv2, HeaderName::ProxyAuthorization);
    assert_eq!(creds.len(), 1, "{creds:?}");
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 180, Some("callee"), ""));
    ep.cancel(t0, call);
    let cancel = sent(&mut ep).remove(0).1;
    assert_eq!(req(&cancel).method, Method::Cancel);
    assert_eq!(all(&cancel, HeaderName::ProxyAuthorization), creds);
    ep.handle_input(t0, a(TRUNK), &response(&cancel, 200, Some("callee"), ""));
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 487, Some("callee"), ""));
    let ack = sent(&mut ep).remove(0).1;
    assert_eq!(req(&ack).method, Method::Ack);
    assert_eq!(all(&ack, HeaderName::ProxyAuthorization), creds);
}

/// §13.2.2.4: the 2xx's ACK has a new branch, the INVITE's CSeq number, goes to the Contact;
/// a retransmitted 2xx gets the same ACK again and no new event.
#[test]
fn a_2xx_is_acked_and_its_retransmission_acked_again() {
    let (mut ep, t0, call, inv) = start(None);
    let ok = response(
        &inv,
        200,
        Some("b1"),
        "Contact: <sip:callee@10.0.0.3:5062>\r\n",
    );
    ep.handle_input(t0, a(TRUNK), &ok);
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    let (dest, ack) = &out[0];
    assert_eq!(*dest, a("10.0.0.3:5062"));
    assert_eq!(req(ack).method, Method::Ack);
    assert_eq!(req(ack).uri.to_string(), "sip:callee@10.0.0.3:5062");
    assert_ne!(h(ack, HeaderName::Via), h(&inv, HeaderName::Via));
    assert_eq!(h(ack, HeaderName::CSeq), "1 ACK");
    let ev = events(&mut ep);
    assert!(
        matches!(&ev[..], [Event::Answered { call: c, after_cancel: false, .. }] if *c == call),
        "{ev:?}"
    );
    ep.handle_input(t0 + Duration::from_millis(500), a(TRUNK), &ok);
    let again = sent(&mut ep);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1.to_bytes(), ack.to_bytes());
    assert!(events(&mut ep).is_empty());
    // BYE: next CSeq, the dialog's tags, to the remote target.
    ep.bye(t0, call, &[("Reason".into(), "SIP;cause=200".into())])
        .unwrap();
    let out = sent(&mut ep);
    let (dest, bye) = &out[0];
    assert_eq!(*dest, a("10.0.0.3:5062"));
    assert_eq!(h(bye, HeaderName::CSeq), "2 BYE");
    assert!(h(bye, HeaderName::To).ends_with(";tag=b1"));
    assert_eq!(h(bye, HeaderName::From), h(&inv, HeaderName::From));
    assert_eq!(
        wire::value(bye.headers(), &wire::name("Reason")).as_deref(),
        Some("SIP;cause=200")
    );
}

/// Forking (§13.2.2.4): the first 2xx wins; another fork's 2xx is ACKed and sent a BYE in its
/// own dialog (its To tag); the caller hears of the first only.
#[test]
fn forking_first_2xx_wins_the_other_is_acked_and_byed() {
    let (mut ep, t0, call, inv) = start(None);
    ep.handle_input(t0, a(TRUNK), &response(&inv, 180, Some("f1"), ""));
    ep.handle_input(t0, a(TRUNK), &response(&inv, 180, Some("f2"), ""));
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv,
            200,
            Some("f1"),
            "Contact: <sip:one@10.0.0.2:5060>\r\n",
        ),
    );
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv,
            200,
            Some("f2"),
            "Contact: <sip:two@10.0.0.2:5060>\r\n",
        ),
    );
    let out = sent(&mut ep);
    let kinds: Vec<(String, String)> = out
        .iter()
        .map(|(_, m)| {
            (
                String::from_utf8_lossy(req(m).method.as_bytes()).into_owned(),
                h(m, HeaderName::To),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(kinds[0].0 == "ACK" && kinds[0].1.ends_with("tag=f1"));
    assert!(kinds[1].0 == "ACK" && kinds[1].1.ends_with("tag=f2"));
    assert!(kinds[2].0 == "BYE" && kinds[2].1.ends_with("tag=f2"));
    assert_eq!(req(&out[2].1).uri.to_string(), "sip:two@10.0.0.2:5060");
    let ev = events(&mut ep);
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::Answered { .. }))
            .count(),
        1
    );
    // The winner's dialog is intact: our BYE goes to f1.
    ep.bye(t0, call, &[]).unwrap();
    let out = sent(&mut ep);
    assert!(h(&out[0].1, HeaderName::To).ends_with("tag=f1"));
    assert_eq!(req(&out[0].1).uri.to_string(), "sip:one@10.0.0.2:5060");
}

/// A 2xx crossing our CANCEL: ACKed, then a BYE; the caller is told `after_cancel`.
#[test]
fn a_2xx_crossing_cancel_is_acked_and_byed() {
    let (mut ep, t0, call, inv) = start(None);
    ep.handle_input(t0, a(TRUNK), &response(&inv, 180, Some("x"), ""));
    ep.cancel(t0, call);
    let cancel = sent(&mut ep).remove(0).1;
    assert_eq!(req(&cancel).method, Method::Cancel);
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(&inv, 200, Some("x"), "Contact: <sip:x@10.0.0.2:5060>\r\n"),
    );
    ep.handle_input(t0, a(TRUNK), &response(&cancel, 481, Some("x"), ""));
    let methods: Vec<Method> = sent(&mut ep)
        .iter()
        .map(|(_, m)| req(m).method.clone())
        .collect();
    assert_eq!(methods, [Method::Ack, Method::Bye]);
    let ev = events(&mut ep);
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Event::Answered {
                after_cancel: true,
                ..
            }
        )),
        "{ev:?}"
    );
}

/// §12.1.2 and §12.2.1.1: the route set is the 2xx's Record-Route reversed; with a loose
/// router first, the Request-URI is the remote target and the request goes to that router.
#[test]
fn record_route_makes_the_route_set_loose_routing() {
    let (mut ep, t0, call, inv) = start(None);
    let ok = response(
        &inv,
        200,
        Some("rr"),
        "Record-Route: <sip:10.0.0.8:5070;lr>, <sip:10.0.0.9:5080;lr>\r\nContact: <sip:callee@10.0.0.3:5062>\r\n",
    );
    ep.handle_input(t0, a(TRUNK), &ok);
    let (dest, ack) = sent(&mut ep).remove(0);
    assert_eq!(dest, a("10.0.0.9:5080"));
    assert_eq!(
        all(&ack, HeaderName::Route),
        ["<sip:10.0.0.9:5080;lr>", "<sip:10.0.0.8:5070;lr>"]
    );
    assert_eq!(req(&ack).uri.to_string(), "sip:callee@10.0.0.3:5062");
    ep.bye(t0, call, &[]).unwrap();
    let (dest, bye) = sent(&mut ep).remove(0);
    assert_eq!(dest, a("10.0.0.9:5080"));
    assert_eq!(all(&bye, HeaderName::Route).len(), 2);
}

/// §12.2.1.1 strict routing: the first route (no `lr`) becomes the Request-URI, the remote
/// target the last Route.
#[test]
fn a_strict_router_gets_the_request_uri() {
    let (mut ep, t0, call, inv) = start(None);
    let ok = response(
        &inv,
        200,
        Some("s"),
        "Record-Route: <sip:10.0.0.8:5070>\r\nContact: <sip:callee@10.0.0.3:5062>\r\n",
    );
    ep.handle_input(t0, a(TRUNK), &ok);
    // The ACK (serialised without a `Request`) is routed as any request of the dialog.
    let (dest, ack) = sent(&mut ep).remove(0);
    assert_eq!(dest, a("10.0.0.8:5070"));
    assert_eq!(req(&ack).method, Method::Ack);
    assert_eq!(req(&ack).uri.to_string(), "sip:10.0.0.8:5070");
    assert_eq!(all(&ack, HeaderName::Route), ["<sip:callee@10.0.0.3:5062>"]);
    ep.bye(t0, call, &[]).unwrap();
    let (dest, bye) = sent(&mut ep).remove(0);
    assert_eq!(dest, a("10.0.0.8:5070"));
    assert_eq!(req(&bye).uri.to_string(), "sip:10.0.0.8:5070");
    assert_eq!(all(&bye, HeaderName::Route), ["<sip:callee@10.0.0.3:5062>"]);
}

/// §22.2: a 401 is answered on a new INVITE (next CSeq, new branch, Authorization); a stale
/// 407 again; a plain re-challenge is the trunk refusing the credentials.
#[test]
fn digest_challenge_stale_nonce_and_refusal() {
    let (mut ep, t0, call, inv) = start(Some(Credentials::new("alice", "secret")));
    ep.handle_input(t0, a(TRUNK), &response(&inv, 401, Some("t"), "WWW-Authenticate: Digest realm=\"trunk\", nonce=\"n1\", qop=\"auth\", algorithm=SHA-256\r\n"));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 2, "the 401's ACK, then the new INVITE");
    assert_eq!(req(&out[0].1).method, Method::Ack);
    let inv2 = &out[1].1;
    assert_eq!(h(inv2, HeaderName::CSeq), "2 INVITE");
    assert_ne!(h(inv2, HeaderName::Via), h(&inv, HeaderName::Via));
    assert_eq!(h(inv2, HeaderName::CallId), h(&inv, HeaderName::CallId));
    assert_eq!(h(inv2, HeaderName::From), h(&inv, HeaderName::From));
    let auth = h(inv2, HeaderName::Authorization);
    assert!(
        auth.contains("algorithm=SHA-256")
            && auth.contains("nonce=\"n1\"")
            && auth.contains("qop=auth"),
        "{auth}"
    );
    // Stale: answered again with the new nonce.
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            inv2,
            407,
            Some("t"),
            "Proxy-Authenticate: Digest realm=\"trunk\", nonce=\"n2\", stale=true\r\n",
        ),
    );
    let out = sent(&mut ep);
    let inv3 = &out[1].1;
    assert_eq!(h(inv3, HeaderName::CSeq), "3 INVITE");
    assert!(h(inv3, HeaderName::ProxyAuthorization).contains("nonce=\"n2\""));
    // Not stale: refused.
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            inv3,
            407,
            Some("t"),
            "Proxy-Authenticate: Digest realm=\"trunk\", nonce=\"n3\"\r\n",
        ),
    );
    assert_eq!(sent(&mut ep).len(), 1, "only the ACK");
    let ev = events(&mut ep);
    assert!(ev.iter().any(|e| matches!(e, Event::Rejected { call: c, credentials_sent: true, response } if *c == call && response.status.code() == 407)), "{ev:?}");
}

/// §13.2.2.4: the ACK of a 2xx carries the credentials of the INVITE it answers, the
/// dialog's From, To (with the remote tag), Call-ID and the INVITE's CSeq number, one Via of
/// its own, Max-Forwards and an empty body; each a single, well-formed header.
#[test]
fn the_2xx_ack_carries_the_invites_credentials_and_the_dialog() {
    let (mut ep, t0, _call, inv) = start(Some(Credentials::new("alice", "secret")));
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv,
            401,
            Some("t"),
            "WWW-Authenticate: Digest realm=\"trunk\", nonce=\"n1\", qop=\"auth\"\r\n",
        ),
    );
    let out = sent(&mut ep);
    let inv2 = out[1].1.clone();
    let ok = response(
        &inv2,
        200,
        Some("b7"),
        "Record-Route: <sip:10.0.0.8:5070;lr>\r\nContact: <sip:callee@10.0.0.3:5062>\r\n",
    );
    ep.handle_input(t0, a(TRUNK), &ok);
    let (dest, ack) = sent(&mut ep).remove(0);
    assert_eq!(dest, a("10.0.0.8:5070"));
    assert_eq!(req(&ack).method, Method::Ack);
    assert_eq!(req(&ack).uri.to_string(), "sip:callee@10.0.0.3:5062");
    assert_eq!(
        h(&ack, HeaderName::Authorization),
        h(&inv2, HeaderName::Authorization)
    );
    assert_eq!(h(&ack, HeaderName::CSeq), "2 ACK");
    assert_eq!(h(&ack, HeaderName::From), h(&inv2, HeaderName::From));
    assert_eq!(h(&ack, HeaderName::CallId), h(&inv2, HeaderName::CallId));
    assert!(h(&ack, HeaderName::To).ends_with(";tag=b7"));
    assert_eq!(all(&ack, HeaderName::Route), ["<sip:10.0.0.8:5070;lr>"]);
    assert_eq!(all(&ack, HeaderName::Via).len(), 1);
    assert_ne!(h(&ack, HeaderName::Via), h(&inv2, HeaderName::Via));
    assert!(h(&ack, HeaderName::Via).contains(";branch=z9hG4bK"));
    assert_eq!(h(&ack, HeaderName::MaxForwards), "70");
    assert_eq!(h(&ack, HeaderName::ContentLength), "0");
    assert!(req(&ack).body().is_empty());
}

fn established() -> (Endpoint, Instant, crieur_sip::CallRef, Message) {
    established_with(None)
}

fn established_with(
    creds: Option<Credentials>,
) -> (Endpoint, Instant, crieur_sip::CallRef, Message) {
    let (mut ep, t0, call, inv) = start(creds);
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv,
            200,
            Some("far"),
            "Contact: <sip:callee@10.0.0.2:5060>\r\n",
        ),
    );
    let _ = sent(&mut ep);
    let _ = events(&mut ep);
    (ep, t0, call, inv)
}

/// A request from the far end in our dialog (its From is our To and vice versa).
fn far_request(inv: &Message, method: &str, cseq: u32, extra: &str) -> Vec<u8> {
    far_request_from(inv, "far", method, cseq, extra)
}

/// [`far_request`] from the far end's dialog tagged `tag` (a fork, or a forged tag).
fn far_request_from(inv: &Message, tag: &str, method: &str, cseq: u32, extra: &str) -> Vec<u8> {
    let from = h(inv, HeaderName::From);
    let to = h(inv, HeaderName::To);
    format!(
        "{method} sip:crieur@10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK{tag}{method}{cseq};rport\r\nFrom: {to};tag={tag}\r\nTo: {from}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n",
        h(inv, HeaderName::CallId)
    )
    .into_bytes()
}

fn code(m: &Message) -> u16 {
    m.as_response().expect("a response").status.code()
}

/// Server transactions: BYE, INFO, OPTIONS answered by the endpoint; re-INVITE and UPDATE
/// handed to the caller; RFC 3581: the response goes to the source port, Via stamped.
#[test]
fn in_dialog_requests_are_answered() {
    let (mut ep, t0, call, inv) = established();
    let src = a("10.0.0.2:40000");
    ep.handle_input(
        t0,
        src,
        &far_request(&inv, "INFO", 5, "Content-Type: application/dtmf-relay\r\n"),
    );
    let (dest, r) = sent(&mut ep).remove(0);
    assert_eq!(dest, src, "rport: back to the source port");
    assert_eq!(code(&r), 200);
    assert!(h(&r, HeaderName::Via).contains("rport=40000"));
    ep.handle_input(t0, src, &far_request(&inv, "OPTIONS", 6, ""));
    let (_, r) = sent(&mut ep).remove(0);
    assert_eq!(code(&r), 200);
    assert!(h(&r, HeaderName::Allow).contains("INVITE"));
    // A CSeq below the last: 500 (§12.2.2).
    ep.handle_input(t0, src, &far_request(&inv, "UPDATE", 4, ""));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 500);
    ep.handle_input(t0, src, &far_request(&inv, "UPDATE", 7, ""));
    assert!(sent(&mut ep).is_empty());
    let server = events(&mut ep)
        .into_iter()
        .find_map(|e| match e {
            Event::Request {
                server, request, ..
            } => {
                assert_eq!(request.method, Method::Update);
                Some(server)
            }
            _ => None,
        })
        .expect("the UPDATE is the caller's to answer");
    ep.respond(t0, server, 200, &[], None, Vec::new()).unwrap();
    assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    // A method we do not implement: 405 with Allow (§8.2.1).
    ep.handle_input(t0, src, &far_request(&inv, "MESSAGE", 8, ""));
    let (_, r) = sent(&mut ep).remove(0);
    assert_eq!(code(&r), 405);
    assert!(h(&r, HeaderName::Allow).contains("BYE"));
    ep.handle_input(t0, src, &far_request(&inv, "BYE", 9, ""));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    let ev = events(&mut ep);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Bye { call: c } if *c == call)),
        "{ev:?}"
    );
    // The BYE retransmitted: answered again by its transaction, no second event.
    ep.handle_input(t0, src, &far_request(&inv, "BYE", 9, ""));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    assert!(!events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Bye { .. })));
}

#[test]
fn requests_outside_any_dialog() {
    let mut ep = Endpoint::new(cfg(false));
    let t0 = Instant::now();
    let r = |m: &str, to_tag: &str| {
        format!("{m} sip:x@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK{m}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@10.0.0.1>{to_tag}\r\nCall-ID: nope\r\nCSeq: 1 {m}\r\nContent-Length: 0\r\n\r\n").into_bytes()
    };
    for (m, tag, expected) in [
        ("BYE", ";tag=zz", 481),
        ("INVITE", "", 603),
        ("OPTIONS", "", 200),
        ("SUBSCRIBE", "", 405),
        ("INFO", ";tag=q", 481),
    ] {
        ep.handle_input(t0, a("10.0.0.7:5060"), &r(m, tag));
        let out = sent(&mut ep);
        let codes: Vec<u16> = out.iter().map(|(_, m)| code(m)).collect();
        assert_eq!(codes, [expected], "{m}");
        // No rport asked: to the Via's sent-by.
        assert_eq!(out[0].0, a("10.0.0.7:5060"));
    }
}

/// The UAS side (the simulator): an INVITE handed out, our 2xx retransmitted from T1 until
/// the ACK (§13.3.1.4); a CANCEL before the answer: 200, then 487 to the INVITE (§9.2).
#[test]
fn uas_2xx_retransmitted_until_ack_and_cancel() {
    let mut ep = Endpoint::new(cfg(true));
    let t0 = Instant::now();
    let caller = a("10.0.0.5:5070");
    let invite = |branch: &str, call_id: &str| {
        format!("INVITE sip:+336@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK{branch};rport\r\nFrom: <sip:c@10.0.0.5>;tag=c1\r\nTo: <sip:+336@10.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@10.0.0.5:5070>\r\nContent-Length: 0\r\n\r\n").into_bytes()
    };
    ep.handle_input(t0, caller, &invite("i1", "uas-1"));
    let Some(Event::Incoming { server, call, .. }) = ep.poll_event() else {
        panic!("no Incoming")
    };
    ep.respond(t0, server, 180, &[], None, Vec::new()).unwrap();
    ep.respond(
        t0,
        server,
        200,
        &[],
        Some("application/sdp"),
        b"v=0\r\n".to_vec(),
    )
    .unwrap();
    let out = sent(&mut ep);
    assert_eq!(
        out.iter().map(|(_, m)| code(m)).collect::<Vec<_>>(),
        [180, 200]
    );
    let ok = out[1].1.clone();
    assert!(h(&ok, HeaderName::To).contains(";tag="));
    assert_eq!(h(&ok, HeaderName::Contact), "<sip:10.0.0.1:5060>");
    ep.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    ep.handle_timeout(t0 + Duration::from_millis(1500));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    let ack = format!("ACK sip:10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKack\r\nFrom: <sip:c@10.0.0.5>;tag=c1\r\nTo: {}\r\nCall-ID: uas-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n", h(&ok, HeaderName::To));
    ep.handle_input(t0 + Duration::from_millis(1600), caller, ack.as_bytes());
    assert!(matches!(ep.poll_event(), Some(Event::Acked { call: c, .. }) if c == call));
    ep.handle_timeout(t0 + Duration::from_millis(3500));
    assert!(sent(&mut ep).is_empty(), "no retransmission after the ACK");

    ep.handle_input(t0, caller, &invite("i2", "uas-2"));
    let Some(Event::Incoming { server, .. }) = ep.poll_event() else {
        panic!("no Incoming")
    };
    ep.respond(t0, server, 180, &[], None, Vec::new()).unwrap();
    let _ = sent(&mut ep);
    let cancel = "CANCEL sip:+336@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKi2;rport\r\nFrom: <sip:c@10.0.0.5>;tag=c1\r\nTo: <sip:+336@10.0.0.1>\r\nCall-ID: uas-2\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    ep.handle_input(t0, caller, cancel.as_bytes());
    let out = sent(&mut ep);
    let got: Vec<(u16, String)> = out
        .iter()
        .map(|(_, m)| (code(m), h(m, HeaderName::CSeq)))
        .collect();
    assert_eq!(
        got,
        [(200, "1 CANCEL".to_string()), (487, "1 INVITE".to_string())]
    );
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Cancelled { .. })));
}

/// Glare (RFC 3261 §14.2, RFC 3311 §5.2): an offer from the far end while ours is pending gets
/// 491; a second one before we answered the first gets 500 with a Retry-After of 0–10 s; and
/// we send no offer while one is pending.
#[test]
fn glare_491_and_a_second_offer_500() {
    let (mut ep, t0, call, inv) = established();
    let src = a("10.0.0.2:5060");
    let sdp = "Content-Type: application/sdp\r\n";
    ep.request(
        t0,
        call,
        Method::Invite,
        &[],
        Some("application/sdp"),
        b"v=0\r\n".to_vec(),
    )
    .unwrap();
    let ours = sent(&mut ep).remove(0).1;
    assert!(ep
        .request(
            t0,
            call,
            Method::Update,
            &[],
            Some("application/sdp"),
            b"v=0\r\n".to_vec()
        )
        .is_err());
    // Their re-INVITE (with a body, so an offer) crosses ours: 491.
    let mut theirs = far_request(&inv, "INVITE", 10, sdp);
    theirs.truncate(theirs.len() - "Content-Length: 0\r\n\r\n".len());
    theirs.extend_from_slice(b"Content-Length: 5\r\n\r\nv=0\r\n");
    ep.handle_input(t0, src, &theirs);
    assert_eq!(code(&sent(&mut ep).remove(0).1), 491);
    // Ours is answered: offers may come again; theirs now is handed over, a second one gets 500.
    ep.handle_input(t0, src, &response(&ours, 200, Some("far"), ""));
    let _ = sent(&mut ep);
    let _ = events(&mut ep);
    let again = String::from_utf8(theirs.clone())
        .unwrap()
        .replace("CSeq: 10 INVITE", "CSeq: 11 INVITE")
        .replace("farINVITE10", "farINVITE11");
    ep.handle_input(t0, src, again.as_bytes());
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Request { .. })));
    let second = again
        .replace("CSeq: 11 INVITE", "CSeq: 12 INVITE")
        .replace("farINVITE11", "farINVITE12");
    ep.handle_input(t0, src, second.as_bytes());
    let (_, r) = sent(&mut ep).remove(0);
    assert_eq!(code(&r), 500);
    let after: u8 = h(&r, HeaderName::RetryAfter).parse().unwrap();
    assert!(after <= 10);
}

/// An ended call is forgotten as soon as its BYE is answered: not after RFC 6026's 32 s of
/// the INVITE transaction (which absorbs 2xx retransmissions by itself), nor after timer K
/// (T4, 5 s on UDP), which keeps only the BYE's transaction to absorb retransmissions of its
/// response — one of those still matches it and is not taken for a new message.
#[test]
fn an_ended_call_is_forgotten_when_its_bye_is_answered() {
    let (mut ep, t0, call, _inv) = established();
    ep.bye(t0, call, &[]).unwrap();
    let bye = sent(&mut ep).remove(0).1;
    assert_eq!(ep.background(), 1);
    assert_eq!(ep.calls(), 1);
    let t1 = t0 + Duration::from_millis(10);
    ep.handle_input(t1, a(TRUNK), &response(&bye, 200, None, ""));
    let ev = events(&mut ep);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Terminated { call: c } if *c == call)),
        "{ev:?}"
    );
    assert_eq!(ep.calls(), 0);
    // Answered, the BYE is nothing an exiting process must wait for (not until timer K)...
    assert_eq!(ep.background(), 0);
    // ...though its transaction lives on until timer K: a retransmitted 200 is absorbed.
    let (clients, _) = ep.transactions();
    ep.handle_input(t1, a(TRUNK), &response(&bye, 200, None, ""));
    assert!(sent(&mut ep).is_empty());
    assert!(events(&mut ep).is_empty());
    assert_eq!(ep.background(), 0);
    ep.handle_timeout(t0 + Duration::from_secs(6));
    assert!(events(&mut ep).is_empty());
    assert_eq!(ep.transactions().0, clients - 1);
}

/// A timer cleared by a response (A and B at the INVITE's answer, E and F at the BYE's 200)
/// is not reported as due: `poll_timeout` names the next timer still armed — timer K of
/// the answered BYE (T4 = 5 s, on the cleanup grid: at most `CLEANUP_GRID` later) — so the
/// caller's loop is not woken for nothing.
#[test]
fn cleared_timers_are_not_reported_due() {
    let (mut ep, t0, call, _inv) = established();
    // No INVITE timer is left after the 2xx (the endpoint's Accepted state needs none).
    assert!(
        ep.poll_timeout()
            .is_none_or(|t| t >= t0 + Duration::from_secs(32)),
        "{:?}",
        ep.poll_timeout().map(|t| t - t0)
    );
    ep.bye(t0, call, &[]).unwrap();
    let bye = sent(&mut ep).remove(0).1;
    // Timer E: the BYE's first retransmission at T1.
    assert_eq!(ep.poll_timeout(), Some(t0 + Duration::from_millis(500)));
    let t1 = t0 + Duration::from_millis(10);
    ep.handle_input(t1, a(TRUNK), &response(&bye, 200, None, ""));
    let k = ep.poll_timeout().unwrap();
    assert!(
        k >= t1 + Duration::from_secs(5) && k <= t1 + Duration::from_secs(5) + CLEANUP_GRID,
        "{:?}",
        k - t1
    );
    ep.handle_timeout(k);
    assert_eq!(ep.background(), 0);
    assert!(
        ep.poll_timeout()
            .is_none_or(|t| t >= t0 + Duration::from_secs(32)),
        "{:?}",
        ep.poll_timeout().map(|t| t - t0)
    );
}

/// The timers that only end a transaction — here timer K of two answered BYEs — are
/// reported due on the cleanup grid: the second BYE answered later than the first, but
/// whose T4 ends on the grid step the first's was moved up to, shares its wake-up (the
/// step derived from the first one's: whatever the grid's phase); neither is served before
/// its T4; an exiting process waits for neither once answered.
#[test]
fn cleanup_timers_share_a_wake_up_on_the_grid() {
    let (mut ep, t0, first, _) = established();
    let mut inv = invite(None);
    inv.call_id = "call-2@10.0.0.1".into();
    let second = ep.invite(t0, inv).unwrap();
    let inv2 = sent(&mut ep).remove(0).1;
    let contact = "Contact: <sip:callee@10.0.0.2:5060>\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 200, Some("far2"), contact));
    let _ = sent(&mut ep);
    let _ = events(&mut ep);
    ep.bye(t0, first, &[]).unwrap();
    let bye = sent(&mut ep).remove(0).1;
    let t4 = Duration::from_secs(5);
    let t1 = t0 + Duration::from_millis(10);
    ep.handle_input(t1, a(TRUNK), &response(&bye, 200, None, ""));
    // The first's timer K, moved up to the grid step at or after its T4.
    let step = ep.poll_timeout().unwrap();
    assert!(
        step >= t1 + t4 && step < t1 + t4 + CLEANUP_GRID,
        "{:?}",
        step - t1
    );
    // The second answered as late as still ends on that step (up to a grid step after
    // the first: the two answers apart whatever the grid's phase, but for a phase that puts
    // t1 + T4 on the grid itself).
    let t2 = step - t4;
    ep.bye(t2, second, &[]).unwrap();
    let bye = sent(&mut ep).remove(0).1;
    ep.handle_input(t2, a(TRUNK), &response(&bye, 200, None, ""));
    assert_eq!(ep.background(), 0);
    assert_eq!(ep.poll_timeout(), Some(step));
    // Not served before their time, both served at the grid's instant (nothing left due
    // then but the INVITEs' own, 32 s on).
    ep.handle_timeout(step - Duration::from_millis(1));
    assert_eq!(ep.poll_timeout(), Some(step));
    ep.handle_timeout(step);
    assert!(
        ep.poll_timeout()
            .is_none_or(|t| t >= t0 + Duration::from_secs(32)),
        "{:?}",
        ep.poll_timeout().map(|t| t - step)
    );
    assert!(sent(&mut ep).is_empty());
}

/// A BYE challenged with 401 is sent again with credentials: the call is kept for that
/// retry (the first BYE's answer does not end it) and forgotten at the retry's 200.
#[test]
fn a_challenged_bye_keeps_its_call_until_the_retry_is_answered() {
    let creds = Credentials::new("alice", "secret");
    let (mut ep, t0, call, _) = established_with(Some(creds));
    ep.bye(t0, call, &[]).unwrap();
    let bye = sent(&mut ep).remove(0).1;
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &bye,
            401,
            None,
            "WWW-Authenticate: Digest realm=\"t\", nonce=\"n1\", qop=\"auth\"\r\n",
        ),
    );
    let again = sent(&mut ep);
    assert_eq!(again.len(), 1, "{again:?}");
    let retry = &again[0].1;
    assert_eq!(req(retry).method, Method::Bye);
    assert!(!h(retry, HeaderName::Authorization).is_empty());
    assert_eq!(ep.calls(), 1, "the call is kept for the retried BYE");
    assert!(!events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Terminated { .. })));
    ep.handle_input(t0, a(TRUNK), &response(retry, 200, None, ""));
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Terminated { call: c } if *c == call)));
    assert_eq!(ep.calls(), 0);
}

/// RFC 3263 §4.3 with three servers: the first answers 503 (after a 100), the second is
/// unreachable (a transport error), the third rings: the same INVITE went to each in turn —
/// same Call-ID and From tag, a new branch and the next CSeq each time — and the caller heard
/// of the provisional responses, never of the failures.
#[test]
fn an_invite_fails_over_on_503_and_transport_error_to_the_next_server() {
    let (s2, s3) = (a("10.0.0.3:5060"), a("10.0.0.4:5070"));
    let mut ep = Endpoint::new(cfg(false));
    let t0 = Instant::now();
    let call = ep
        .invite(
            t0,
            Invite {
                alternates: vec![s2, s3],
                ..invite(None)
            },
        )
        .unwrap();
    let (_, first) = sent(&mut ep).remove(0);
    ep.handle_input(t0, a(TRUNK), &response(&first, 100, None, ""));
    ep.handle_input(t0, a(TRUNK), &response(&first, 503, Some("busy-proxy"), ""));
    let out = sent(&mut ep);
    // The 503's ACK to the first server, then the INVITE to the second.
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].0, a(TRUNK));
    assert_eq!(req(&out[0].1).method, Method::Ack);
    let (dest, second) = (out[1].0, out[1].1.clone());
    assert_eq!(dest, s2);
    assert_eq!(req(&second).method, Method::Invite);
    for n in [HeaderName::CallId, HeaderName::From, HeaderName::To] {
        assert_eq!(h(&second, n.clone()), h(&first, n));
    }
    assert_eq!(h(&second, HeaderName::CSeq), "2 INVITE");
    assert_ne!(
        h(&second, HeaderName::Via),
        h(&first, HeaderName::Via),
        "a new branch"
    );
    // Told of the 100 (a provisional), not of the 503.
    let ev = events(&mut ep);
    assert!(
        ev.iter().all(|e| matches!(e, Event::Provisional { .. })),
        "{ev:?}"
    );
    // The second server cannot be reached: on to the third.
    ep.transport_error(t0, s2);
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, s3);
    let third = out[0].1.clone();
    assert_eq!(h(&third, HeaderName::CSeq), "3 INVITE");
    assert!(events(&mut ep).is_empty());
    ep.handle_input(t0, s3, &response(&third, 180, Some("callee"), ""));
    let ev = events(&mut ep);
    assert!(
        matches!(ev.as_slice(), [Event::Provisional { call: c, .. }] if *c == call),
        "{ev:?}"
    );
}

/// A call placed with `alternates` (RFC 3263 fail-over servers); its first INVITE.
fn start_with_alternates(
    t0: Instant,
    alternates: Vec<SocketAddr>,
) -> (Endpoint, crieur_sip::CallRef, Message) {
    let mut ep = Endpoint::new(cfg(false));
    let call = ep
        .invite(
            t0,
            Invite {
                alternates,
                ..invite(None)
            },
        )
        .unwrap();
    let (_, first) = sent(&mut ep).remove(0);
    (ep, call, first)
}

/// Time run in 500 ms steps from `t0` until the INVITE goes to `s2` (timer B at the first
/// server): then, and that INVITE.
fn until_failed_over(ep: &mut Endpoint, t0: Instant, s2: SocketAddr) -> (Instant, Message) {
    let mut t = t0;
    while t < t0 + Duration::from_secs(40) {
        t += Duration::from_millis(500);
        ep.handle_timeout(t);
        if let Some((_, m)) = sent(ep).into_iter().find(|(d, _)| *d == s2) {
            return (t, m);
        }
    }
    panic!("no INVITE to the second server after timer B")
}

/// No failover once something rang (a 503 after a 180 is the call's answer), nor when no
/// server is left: the caller is told, as without alternates. A timeout fails over.
#[test]
fn an_invite_does_not_fail_over_after_a_ring_or_past_its_last_server() {
    let s2 = a("10.0.0.3:5060");
    let t0 = Instant::now();
    let (mut ep, call, first) = start_with_alternates(t0, vec![s2]);
    ep.handle_input(t0, a(TRUNK), &response(&first, 180, Some("x"), ""));
    ep.handle_input(t0, a(TRUNK), &response(&first, 503, Some("x"), ""));
    let out = sent(&mut ep);
    assert!(out.iter().all(|(d, _)| *d == a(TRUNK)), "{out:?}");
    let ev = events(&mut ep);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Rejected { call: c, response, .. }
            if *c == call && response.status.code() == 503)),
        "{ev:?}"
    );

    // Timer B at the first server: on to the second, whose 503 then stands.
    let mut ep = Endpoint::new(cfg(false));
    let call = ep
        .invite(
            t0,
            Invite {
                alternates: vec![s2],
                ..invite(None)
            },
        )
        .unwrap();
    let _ = sent(&mut ep);
    let (t, second) = until_failed_over(&mut ep, t0, s2);
    assert!(
        t >= t0 + Duration::from_secs(32),
        "failed over before timer B: {t:?}"
    );
    assert!(events(&mut ep).is_empty());
    ep.handle_input(t, s2, &response(&second, 503, Some("y"), ""));
    let ev = events(&mut ep);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Rejected { call: c, response, .. }
            if *c == call && response.status.code() == 503)),
        "{ev:?}"
    );
}

/// RFC 6026's Accepted state done from the dialog: the INVITE's transaction ends with its 2xx
/// (nothing holds the INVITE 64·T1), yet a retransmitted 2xx is ACKed again — while the call
/// lives, after it is forgotten (its BYE answered), and not past 64·T1 after the 2xx.
#[test]
fn a_2xx_retransmitted_after_the_invite_transaction_is_acked_until_64_t1() {
    let (mut ep, t0, call, inv) = start(None);
    let ok = response(
        &inv,
        200,
        Some("b1"),
        "Contact: <sip:callee@10.0.0.3:5062>\r\n",
    );
    ep.handle_input(t0, a(TRUNK), &ok);
    let ack = sent(&mut ep).remove(0);
    assert_eq!(req(&ack.1).method, Method::Ack);
    assert_eq!(
        ep.transactions(),
        (0, 0),
        "the INVITE's transaction ended with its 2xx"
    );
    let _ = events(&mut ep);
    ep.handle_input(t0 + Duration::from_secs(1), a(TRUNK), &ok);
    let again = sent(&mut ep);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, ack.0);
    assert_eq!(again[0].1.to_bytes(), ack.1.to_bytes());
    assert!(events(&mut ep).is_empty());
    // Hung up; the BYE answered; timer K: the call is forgotten.
    ep.bye(t0 + Duration::from_secs(2), call, &[]).unwrap();
    let bye = sent(&mut ep).remove(0).1;
    ep.handle_input(
        t0 + Duration::from_secs(2),
        a(TRUNK),
        &response(&bye, 200, Some("b1"), ""),
    );
    ep.handle_timeout(t0 + Duration::from_secs(8));
    assert_eq!(ep.calls(), 0);
    assert_eq!(ep.transactions(), (0, 0));
    let _ = events(&mut ep);
    // Within 64·T1 of the 2xx: the same ACK again.
    ep.handle_input(t0 + Duration::from_secs(20), a(TRUNK), &ok);
    let late = sent(&mut ep);
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].1.to_bytes(), ack.1.to_bytes());
    // Past 64·T1 after the 2xx nothing is kept.
    ep.handle_timeout(t0 + Duration::from_secs(33));
    ep.handle_input(t0 + Duration::from_secs(33), a(TRUNK), &ok);
    assert!(sent(&mut ep).is_empty());
}

/// Over a reliable transport timer K is zero (RFC 3261 §17.1.2.2): the BYE's transaction
/// ends at the next grid step after its 200 — not at a step later on the grid because its
/// origin (the first timer armed: the INVITE's timer B, 32 s on) lies after it.
#[test]
fn over_tcp_a_byes_transaction_ends_within_a_grid_step_of_its_200() {
    let mut ep = tcp_endpoint(false);
    let t0 = Instant::now();
    let call = ep.invite(t0, invite(None)).unwrap();
    let inv = sent(&mut ep).remove(0).1;
    let contact = "Contact: <sip:callee@10.0.0.2:5060>\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv, 200, Some("far"), contact));
    let _ = sent(&mut ep);
    let _ = events(&mut ep);
    let t1 = t0 + Duration::from_millis(700);
    ep.bye(t1, call, &[]).unwrap();
    let bye = sent(&mut ep).remove(0).1;
    ep.handle_input(t1, a(TRUNK), &response(&bye, 200, None, ""));
    assert_eq!(ep.background(), 0);
    let (clients, _) = ep.transactions();
    let due = ep.poll_timeout().unwrap();
    assert!(due >= t1 && due <= t1 + CLEANUP_GRID, "{:?}", due - t1);
    ep.handle_timeout(due);
    assert_eq!(ep.transactions().0, clients - 1);
}

/// §22.1, §13.2.2.4: the ACK of a 2xx carries the credentials of the INVITE it acknowledges.
/// A re-INVITE sent without credentials (while the initial INVITE carried some) is ACKed
/// without them; a re-INVITE challenged and sent again with credentials is ACKed with the
/// retry's, not the initial INVITE's.
#[test]
fn a_re_invites_2xx_is_acked_with_the_re_invites_own_credentials() {
    let (mut ep, t0, call, inv) = start(Some(Credentials::new("alice", "secret")));
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv,
            401,
            Some("t"),
            "WWW-Authenticate: Digest realm=\"trunk\", nonce=\"n1\", qop=\"auth\"\r\n",
        ),
    );
    let inv2 = sent(&mut ep).remove(1).1;
    assert!(!h(&inv2, HeaderName::Authorization).is_empty());
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv2,
            200,
            Some("b7"),
            "Contact: <sip:callee@10.0.0.2:5060>\r\n",
        ),
    );
    let ack = sent(&mut ep).remove(0).1;
    assert_eq!(
        h(&ack, HeaderName::Authorization),
        h(&inv2, HeaderName::Authorization)
    );
    let _ = events(&mut ep);

    // A re-INVITE without credentials: its ACK has none.
    ep.request(
        t0,
        call,
        Method::Invite,
        &[],
        Some("application/sdp"),
        b"v=0\r\n".to_vec(),
    )
    .unwrap();
    let reinv = sent(&mut ep).remove(0).1;
    assert_eq!(req(&reinv).method, Method::Invite);
    assert!(all(&reinv, HeaderName::Authorization).is_empty());
    ep.handle_input(t0, a(TRUNK), &response(&reinv, 200, Some("b7"), ""));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1, "{out:?}");
    let ack = &out[0].1;
    assert_eq!(req(ack).method, Method::Ack);
    assert_eq!(
        h(ack, HeaderName::CSeq),
        format!(
            "{} ACK",
            h(&reinv, HeaderName::CSeq).split(' ').next().unwrap()
        )
    );
    assert!(
        all(ack, HeaderName::Authorization).is_empty()
            && all(ack, HeaderName::ProxyAuthorization).is_empty(),
        "the initial INVITE's credentials on the re-INVITE's ACK: {ack:?}"
    );
    let _ = events(&mut ep);

    // A re-INVITE challenged (407), sent again with credentials: its ACK has the retry's.
    ep.request(
        t0,
        call,
        Method::Invite,
        &[],
        Some("application/sdp"),
        b"v=0\r\n".to_vec(),
    )
    .unwrap();
    let reinv = sent(&mut ep).remove(0).1;
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &reinv,
            407,
            Some("b7"),
            "Proxy-Authenticate: Digest realm=\"proxy\", nonce=\"p1\", qop=\"auth\"\r\n",
        ),
    );
    let out = sent(&mut ep);
    let retry = &out.last().unwrap().1;
    assert_eq!(req(retry).method, Method::Invite);
    let pauth = h(retry, HeaderName::ProxyAuthorization);
    assert!(pauth.contains("nonce=\"p1\""), "{pauth}");
    ep.handle_input(t0, a(TRUNK), &response(retry, 200, Some("b7"), ""));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1, "{out:?}");
    let ack = &out[0].1;
    assert_eq!(req(ack).method, Method::Ack);
    assert_eq!(all(ack, HeaderName::ProxyAuthorization), [pauth]);
    assert!(
        all(ack, HeaderName::Authorization).is_empty(),
        "the initial INVITE's credentials on the re-INVITE's ACK: {ack:?}"
    );
}

/// §13.2.2.4: every 2xx is ACKed. A 2xx whose route set holds a value that cannot go on an
/// ACK (a NUL, legal in a quoted-pair, refused by the writer) must not leave the call
/// answered and un-ACKed: the caller is told the call failed (not that it was answered), the
/// call is ended and forgotten, and a retransmission of that 2xx brings nothing back.
#[test]
fn a_2xx_that_cannot_be_acked_ends_the_call_and_is_reported() {
    let (mut ep, t0, call, inv) = start(None);
    let ok = response(
        &inv,
        200,
        Some("b7"),
        "Record-Route: <sip:10.0.0.8:5070;lr>;x=\"a\\\0b\"\r\nContact: <sip:callee@10.0.0.3:5062>\r\n",
    );
    ep.handle_input(t0, a(TRUNK), &ok);
    // Neither the ACK nor a BYE can be written (the BYE takes the same route set): nothing
    // leaves, and the call is given up at once.
    let out = sent(&mut ep);
    assert!(out.is_empty(), "{out:?}");
    let ev = events(&mut ep);
    assert!(
        matches!(
            &ev[..],
            [Event::AckFailed { call: c, response }, Event::Terminated { call: t }]
                if *c == call && response.status.code() == 200 && *t == call
        ),
        "{ev:?}"
    );
    assert_eq!(ep.calls(), 0);
    ep.handle_input(t0 + Duration::from_millis(500), a(TRUNK), &ok);
    assert!(sent(&mut ep).is_empty());
    assert!(events(&mut ep).is_empty());
}

/// RFC 6026 passes each 2xx to a re-INVITE up from Accepted; RFC 3261 §13.2.2.4 has each
/// retransmission ACKed again. The caller is told the re-INVITE's outcome once: a
/// retransmitted 2xx is ACKed (the same ACK), with no second `Done`.
#[test]
fn a_re_invites_retransmitted_2xx_is_acked_again_and_done_once() {
    let (mut ep, t0, call, inv) = start(None);
    let contact = "Contact: <sip:callee@10.0.0.2:5060>\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv, 200, Some("far"), contact));
    let _ = sent(&mut ep);
    let _ = events(&mut ep);
    ep.request(
        t0,
        call,
        Method::Invite,
        &[],
        Some("application/sdp"),
        b"v=0\r\n".to_vec(),
    )
    .unwrap();
    let reinv = sent(&mut ep).remove(0).1;
    assert_eq!(req(&reinv).method, Method::Invite);
    let ok = response(&reinv, 200, Some("far"), contact);
    let mut acks = Vec::new();
    let mut done = 0;
    for i in 0..3u64 {
        let t = t0 + Duration::from_millis(500 * i);
        ep.handle_input(t, a(TRUNK), &ok);
        let out = sent(&mut ep);
        assert_eq!(out.len(), 1, "2xx #{i}: {out:?}");
        assert_eq!(req(&out[0].1).method, Method::Ack);
        // The same ACK but its Via's branch (an ACK to a 2xx is a transaction of its own).
        acks.push((h(&out[0].1, HeaderName::CSeq), h(&out[0].1, HeaderName::To)));
        for e in events(&mut ep) {
            match e {
                Event::Done { .. } => done += 1,
                Event::AckFailed { .. } => panic!("AckFailed"),
                _ => {}
            }
        }
    }
    assert_eq!(done, 1);
    assert!(acks.iter().all(|x| *x == acks[0]), "{acks:?}");
}

/// §12, §12.2.2: a request with the call's Call-ID and our tag but another From tag than the
/// far end's (a fork that lost, a stale or forged request) is in no dialog of ours: 481; the
/// call is not ended, not handed the request, and its CSeq state is not moved by it.
#[test]
fn a_request_from_another_remote_tag_gets_481_and_leaves_the_dialog_alone() {
    let (mut ep, t0, call, inv) = established();
    let src = a(TRUNK);
    for m in ["BYE", "INVITE", "UPDATE", "INFO"] {
        ep.handle_input(t0, src, &far_request_from(&inv, "WRONG", m, 50, ""));
        assert_eq!(code(&sent(&mut ep).remove(0).1), 481, "{m}");
    }
    assert!(events(&mut ep).is_empty());
    // The ACK of a 2xx from another tag is nobody's either (and answered by nothing).
    ep.handle_input(t0, src, &far_request_from(&inv, "WRONG", "ACK", 51, ""));
    assert!(sent(&mut ep).is_empty());
    assert!(events(&mut ep).is_empty());
    // The real far end's requests, with a CSeq below the forged ones': in order.
    ep.handle_input(t0, src, &far_request(&inv, "INFO", 3, ""));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    ep.handle_input(t0, src, &far_request(&inv, "BYE", 4, ""));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    let ev = events(&mut ep);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::Bye { call: c } if *c == call)),
        "{ev:?}"
    );
}

/// §12.2.2 per dialog: two forks' early dialogs (RFC 3261 §12.1.2, one per To tag of a 1xx)
/// each count their own CSeq — one fork's UPDATE does not make the other's out of order —,
/// and once a fork's 2xx wins, the other's requests get 481.
#[test]
fn early_dialogs_of_two_forks_count_their_own_cseq() {
    let (mut ep, t0, call, inv) = start(None);
    let src = a(TRUNK);
    for tag in ["fa", "fb"] {
        let contact = format!("Contact: <sip:{tag}@10.0.0.2:5060>\r\n");
        ep.handle_input(t0, src, &response(&inv, 180, Some(tag), &contact));
    }
    let _ = events(&mut ep);
    for (tag, seq) in [("fa", 10), ("fb", 5), ("fa", 11)] {
        ep.handle_input(t0, src, &far_request_from(&inv, tag, "UPDATE", seq, ""));
        assert!(sent(&mut ep).is_empty(), "{tag} {seq}: not refused");
        let server = events(&mut ep)
            .into_iter()
            .find_map(|e| match e {
                Event::Request { server, .. } => Some(server),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{tag} {seq}: the UPDATE is the caller's"));
        ep.respond(t0, server, 200, &[], None, Vec::new()).unwrap();
        assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    }
    ep.handle_input(
        t0,
        src,
        &response(&inv, 200, Some("fa"), "Contact: <sip:fa@10.0.0.2:5060>\r\n"),
    );
    let _ = sent(&mut ep);
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Answered { call: c, .. } if *c == call)));
    ep.handle_input(t0, src, &far_request_from(&inv, "fb", "BYE", 6, ""));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 481);
    assert!(events(&mut ep).is_empty());
}

/// §12.2.2: only a CSeq *lower* than the last one is out of order (500); an equal one (a new
/// request reusing the number, not a retransmission: another branch) is taken.
#[test]
fn an_equal_cseq_is_not_out_of_order() {
    let (mut ep, t0, _, inv) = established();
    let src = a(TRUNK);
    ep.handle_input(t0, src, &far_request(&inv, "INFO", 7, ""));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    ep.handle_input(t0, src, &far_request(&inv, "OPTIONS", 7, ""));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    ep.handle_input(t0, src, &far_request(&inv, "OPTIONS", 6, ""));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 500);
}

/// The Request-URI and destination of the BYE the endpoint sends now.
fn bye_target(ep: &mut Endpoint, t: Instant, call: crieur_sip::CallRef) -> (SocketAddr, String) {
    ep.bye(t, call, &[]).unwrap();
    let (dest, bye) = sent(ep).remove(0);
    assert_eq!(req(&bye).method, Method::Bye);
    (dest, req(&bye).uri.to_string())
}

/// §12.2.2, RFC 3311 §5.2: the far end's re-INVITE or UPDATE is a target refresh — once we
/// accept it (2xx), our next request goes to its Contact —, and our 2xx to it carries our
/// Contact (an UPDATE's too).
#[test]
fn a_received_target_refresh_moves_the_remote_target() {
    for method in ["INVITE", "UPDATE"] {
        let (mut ep, t0, call, inv) = established();
        let src = a(TRUNK);
        let contact = "Contact: <sip:x@10.0.0.9:5070>\r\n";
        ep.handle_input(t0, src, &far_request(&inv, method, 5, contact));
        let server = events(&mut ep)
            .into_iter()
            .find_map(|e| match e {
                Event::Request { server, .. } => Some(server),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{method}: handed to the caller"));
        ep.respond(t0, server, 200, &[], None, Vec::new()).unwrap();
        let (_, ok) = sent(&mut ep).remove(0);
        assert_eq!(code(&ok), 200, "{method}");
        assert_eq!(
            h(&ok, HeaderName::Contact),
            "<sip:crieur@10.0.0.1:5060>",
            "{method}: our Contact in the 2xx"
        );
        if method == "INVITE" {
            ep.handle_input(t0, src, &far_request(&inv, "ACK", 5, ""));
            let _ = events(&mut ep);
        }
        let (dest, ruri) = bye_target(&mut ep, t0, call);
        assert_eq!(ruri, "sip:x@10.0.0.9:5070", "{method}");
        assert_eq!(dest, a("10.0.0.9:5070"), "{method}");
    }
}

/// A refresh we refuse changes nothing (RFC 6141 §3.4).
#[test]
fn a_refused_target_refresh_keeps_the_remote_target() {
    let (mut ep, t0, call, inv) = established();
    let contact = "Contact: <sip:x@10.0.0.9:5070>\r\n";
    ep.handle_input(t0, a(TRUNK), &far_request(&inv, "UPDATE", 5, contact));
    let server = events(&mut ep)
        .into_iter()
        .find_map(|e| match e {
            Event::Request { server, .. } => Some(server),
            _ => None,
        })
        .unwrap();
    ep.respond(t0, server, 488, &[], None, Vec::new()).unwrap();
    let _ = sent(&mut ep);
    let (dest, ruri) = bye_target(&mut ep, t0, call);
    assert_eq!(ruri, "sip:callee@10.0.0.2:5060");
    assert_eq!(dest, a(TRUNK));
}

/// §12.2.1.2: the Contact of the 2xx to our own re-INVITE or UPDATE is the new remote target
/// (the re-INVITE's ACK already goes there).
#[test]
fn the_2xx_to_our_target_refresh_moves_the_remote_target() {
    for method in [Method::Invite, Method::Update] {
        let (mut ep, t0, call, _) = established();
        ep.request(t0, call, method.clone(), &[], None, Vec::new())
            .unwrap();
        let (_, r) = sent(&mut ep).remove(0);
        let contact = "Contact: <sip:y@10.0.0.8:5080>\r\n";
        ep.handle_input(t0, a(TRUNK), &response(&r, 200, Some("far"), contact));
        let out = sent(&mut ep);
        if method == Method::Invite {
            let (dest, ack) = &out[0];
            assert_eq!(req(ack).method, Method::Ack);
            assert_eq!(req(ack).uri.to_string(), "sip:y@10.0.0.8:5080");
            assert_eq!(*dest, a("10.0.0.8:5080"));
        }
        let (dest, ruri) = bye_target(&mut ep, t0, call);
        assert_eq!(ruri, "sip:y@10.0.0.8:5080", "{method:?}");
        assert_eq!(dest, a("10.0.0.8:5080"), "{method:?}");
    }
}

/// §22.2/§22.3: the digest state is each request's. After a challenged INVITE (realm
/// "trunk"), the BYE challenged by the same realm with a fresh nonce is answered (not taken
/// for a refusal of the INVITE's credentials); its own retry challenged again (not stale)
/// is refused.
#[test]
fn a_later_request_answers_its_own_challenge_after_a_challenged_invite() {
    let (mut ep, t0, call, inv) = start(Some(Credentials::new("alice", "secret")));
    let www = |n: &str| {
        format!("WWW-Authenticate: Digest realm=\"trunk\", nonce=\"{n}\", qop=\"auth\"\r\n")
    };
    ep.handle_input(t0, a(TRUNK), &response(&inv, 401, Some("t"), &www("n1")));
    let inv2 = sent(&mut ep).remove(1).1;
    assert!(h(&inv2, HeaderName::Authorization).contains("nonce=\"n1\""));
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv2,
            200,
            Some("far"),
            "Contact: <sip:callee@10.0.0.2:5060>\r\n",
        ),
    );
    let _ = sent(&mut ep);
    let _ = events(&mut ep);
    ep.bye(t0, call, &[]).unwrap();
    let bye = sent(&mut ep).remove(0).1;
    ep.handle_input(t0, a(TRUNK), &response(&bye, 401, None, &www("n2")));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1, "the BYE again, answered: {out:?}");
    let bye2 = &out[0].1;
    assert_eq!(req(bye2).method, Method::Bye);
    let auth = h(bye2, HeaderName::Authorization);
    assert!(
        auth.contains("nonce=\"n2\"") && auth.contains("nc=00000001"),
        "{auth}"
    );
    // The retried BYE challenged again, not stale: the credentials are refused.
    ep.handle_input(t0, a(TRUNK), &response(bye2, 401, None, &www("n3")));
    assert!(sent(&mut ep).is_empty(), "not sent a third time");
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Terminated { call: c } if *c == call)));
}

/// The same for a refresh (re-INVITE) after a challenged INVITE: answered with its nonce.
#[test]
fn a_refresh_answers_its_own_challenge_after_a_challenged_invite() {
    let (mut ep, t0, call, inv) = start(Some(Credentials::new("alice", "secret")));
    let pa = |n: &str| format!("Proxy-Authenticate: Digest realm=\"trunk\", nonce=\"{n}\"\r\n");
    ep.handle_input(t0, a(TRUNK), &response(&inv, 407, Some("t"), &pa("n1")));
    let inv2 = sent(&mut ep).remove(1).1;
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv2,
            200,
            Some("far"),
            "Contact: <sip:callee@10.0.0.2:5060>\r\n",
        ),
    );
    let _ = sent(&mut ep);
    let _ = events(&mut ep);
    let r = ep
        .request(t0, call, Method::Invite, &[], None, Vec::new())
        .unwrap();
    let reinv = sent(&mut ep).remove(0).1;
    ep.handle_input(t0, a(TRUNK), &response(&reinv, 407, Some("far"), &pa("n2")));
    let out = sent(&mut ep);
    let again = out
        .iter()
        .find(|(_, m)| m.as_request().is_some_and(|q| q.method == Method::Invite))
        .expect("the re-INVITE again");
    assert!(h(&again.1, HeaderName::ProxyAuthorization).contains("nonce=\"n2\""));
    assert!(!events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Done { request, .. } if *request == r)));
}

/// §8.2.2.3: a request requiring an extension we do not support gets 420 with `Unsupported`
/// naming it (and nothing else happens: the BYE ends nothing, the re-INVITE is nobody's); one
/// requiring only what our `Supported` says (tags compared case-insensitively) is served.
#[test]
fn a_required_extension_we_lack_gets_420_with_unsupported() {
    let mut c = cfg(false);
    c.capabilities.push(("Supported".into(), "timer".into()));
    let mut ep = Endpoint::new(c);
    let t0 = Instant::now();
    let call = ep.invite(t0, invite(None)).unwrap();
    let inv = sent(&mut ep).remove(0).1;
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv,
            200,
            Some("far"),
            "Contact: <sip:callee@10.0.0.2:5060>\r\n",
        ),
    );
    let _ = sent(&mut ep);
    let _ = events(&mut ep);
    let src = a(TRUNK);
    for (i, m) in ["OPTIONS", "INFO", "BYE", "INVITE", "UPDATE"]
        .iter()
        .enumerate()
    {
        let seq = 10 + u32::try_from(i).unwrap();
        ep.handle_input(
            t0,
            src,
            &far_request(&inv, m, seq, "Require: Timer, foo\r\nRequire: 100rel\r\n"),
        );
        let (_, r) = sent(&mut ep).remove(0);
        assert_eq!(code(&r), 420, "{m}");
        assert_eq!(h(&r, HeaderName::Unsupported), "foo, 100rel", "{m}");
        assert!(events(&mut ep).is_empty(), "{m}");
    }
    ep.handle_input(
        t0,
        src,
        &far_request(&inv, "UPDATE", 20, "Require: TIMER\r\n"),
    );
    assert!(sent(&mut ep).is_empty());
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Request { call: c, .. } if *c == call)));
    // Outside any dialog too: an INVITE requiring 100rel is not offered to the UAS.
    let mut uas = Endpoint::new(cfg(true));
    let inv = "INVITE sip:+336@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKr1\r\nFrom: <sip:c@10.0.0.5>;tag=c1\r\nTo: <sip:+336@10.0.0.1>\r\nCall-ID: req-1\r\nCSeq: 1 INVITE\r\nRequire: 100rel\r\nContact: <sip:c@10.0.0.5:5070>\r\nContent-Length: 0\r\n\r\n";
    uas.handle_input(t0, a("10.0.0.5:5070"), inv.as_bytes());
    let (_, r) = sent(&mut uas).remove(0);
    assert_eq!(code(&r), 420);
    assert_eq!(h(&r, HeaderName::Unsupported), "100rel");
    assert!(h(&r, HeaderName::To).contains(";tag="));
    assert!(events(&mut uas).is_empty());
}

/// §13.3.1.4: our 2xx to an INVITE is retransmitted, T1 doubling to T2, until its ACK "even
/// if the transport at the UAS is reliable" (over TCP: a UDP hop behind the far end may have
/// lost it) — and given up at 64·T1 with [`Event::NoAck`].
#[test]
fn over_tcp_our_2xx_is_retransmitted_until_the_ack_too() {
    let mut ep = tcp_endpoint(true);
    let t0 = Instant::now();
    let caller = a("10.0.0.5:5070");
    let invite = |call_id: &str| {
        format!("INVITE sip:+336@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5070;branch=z9hG4bK{call_id}\r\nFrom: <sip:c@10.0.0.5>;tag=c1\r\nTo: <sip:+336@10.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@10.0.0.5:5070;transport=tcp>\r\nContent-Length: 0\r\n\r\n")
    };
    // The first ACKed after two retransmissions.
    ep.handle_input(t0, caller, invite("tcp-1").as_bytes());
    let Some(Event::Incoming { server, call, .. }) = ep.poll_event() else {
        panic!("no Incoming")
    };
    ep.respond(t0, server, 200, &[], None, Vec::new()).unwrap();
    let ok = sent(&mut ep).remove(0).1;
    let mut at = Vec::new();
    while let Some(due) = ep.poll_timeout() {
        if due > t0 + Duration::from_millis(2000) {
            break;
        }
        ep.handle_timeout(due);
        for (dest, m) in sent(&mut ep) {
            assert_eq!(dest, caller);
            assert_eq!(code(&m), 200);
            at.push((due - t0).as_millis());
        }
    }
    assert_eq!(at, [500, 1500]);
    let ack = format!("ACK sip:10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.5:5070;branch=z9hG4bKack\r\nFrom: <sip:c@10.0.0.5>;tag=c1\r\nTo: {}\r\nCall-ID: tcp-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n", h(&ok, HeaderName::To));
    ep.handle_input(t0 + Duration::from_millis(1600), caller, ack.as_bytes());
    assert!(matches!(ep.poll_event(), Some(Event::Acked { call: c, .. }) if c == call));
    ep.handle_timeout(t0 + Duration::from_millis(3500));
    assert!(sent(&mut ep).is_empty(), "no retransmission after the ACK");
    // The second never ACKed: re-sent up to T2 apart, then NoAck at 64·T1.
    let t1 = t0 + Duration::from_secs(10);
    ep.handle_input(t1, caller, invite("tcp-2").as_bytes());
    let Some(Event::Incoming { server, call, .. }) = ep.poll_event() else {
        panic!("no Incoming")
    };
    ep.respond(t1, server, 200, &[], None, Vec::new()).unwrap();
    let _ = sent(&mut ep);
    let mut n = 0;
    let mut no_ack = false;
    while let Some(due) = ep.poll_timeout() {
        if due > t1 + Duration::from_secs(40) {
            break;
        }
        ep.handle_timeout(due);
        n += sent(&mut ep).len();
        no_ack |= events(&mut ep)
            .iter()
            .any(|e| matches!(e, Event::NoAck { call: c } if *c == call));
        if no_ack {
            assert_eq!(due - t1, Duration::from_secs(32));
            break;
        }
    }
    assert!(no_ack);
    // 0.5, 1.5, 3.5, 7.5, then every 4 s to 31.5.
    assert_eq!(n, 4 + 6);
}

/// §9.1: a CANCEL answered 200 but the INVITE never answered (no 487): 64·T1 after the
/// CANCEL the INVITE's transaction is destroyed, the caller told (as for timer B) and the
/// call forgotten — not kept forever (timer B stopped at the provisional).
#[test]
fn an_invite_never_answered_after_our_cancel_is_given_up_at_64_t1() {
    let (mut ep, t0, call, inv) = start(None);
    ep.handle_input(t0, a(TRUNK), &response(&inv, 180, Some("t"), ""));
    let t1 = t0 + Duration::from_secs(3);
    ep.cancel(t1, call);
    let cancel = sent(&mut ep).remove(0).1;
    assert_eq!(req(&cancel).method, Method::Cancel);
    ep.handle_input(t1, a(TRUNK), &response(&cancel, 200, Some("t"), ""));
    let _ = events(&mut ep);
    let mut failed_at = None;
    while let Some(due) = ep.poll_timeout() {
        if due > t1 + Duration::from_secs(60) {
            break;
        }
        ep.handle_timeout(due);
        for e in events(&mut ep) {
            match e {
                Event::InviteFailed {
                    call: c,
                    timeout: true,
                } if c == call => {
                    failed_at = Some(due - t1);
                }
                Event::Terminated { call: c } if c == call => {
                    assert!(failed_at.is_some(), "told before it is forgotten");
                }
                _ => {}
            }
        }
    }
    let at = failed_at.expect("the INVITE given up");
    assert!(
        at >= Duration::from_secs(32) && at <= Duration::from_secs(32) + CLEANUP_GRID,
        "{at:?}"
    );
    assert_eq!(ep.calls(), 0);
    assert_eq!(ep.transactions(), (0, 0));
    // What is left (the memory of the call for a late 2xx, §13.2.2.4) goes within 64·T1.
    let end = t1 + Duration::from_secs(100);
    while let Some(due) = ep.poll_timeout().filter(|d| *d <= end) {
        ep.handle_timeout(due);
    }
    assert!(ep.poll_timeout().is_none(), "nothing left armed");
}

/// A request from 10.0.0.7 (its Via's sent-by port 5060, rport asked) with `line` as its
/// request line and `extra` headers.
fn raw_request(line: &str, method: &str, extra: &str) -> Vec<u8> {
    format!("{line}\r\nVia: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bKbad;rport\r\nFrom: <sip:a@10.0.0.7>;tag=1\r\nTo: <sip:x@10.0.0.1>\r\nCall-ID: bad-1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}").into_bytes()
}

/// §18.3, RFC 4475 §3.1.2, §8.2.6.2, RFC 3581 §4: a request that does not parse but whose
/// request line and Via can be read gets 400 (a Request-URI in `<>` or with whitespace,
/// extra spaces in the request line, a Content-Length past the datagram's end), and so do
/// the requests refused statelessly (416, 505): each with a To tag, its Via stamped with
/// `received` and `rport`, sent to the source port. A malformed ACK or response: nothing.
#[test]
fn malformed_requests_get_a_stateless_400_with_to_tag_and_rport() {
    let mut ep = Endpoint::new(cfg(false));
    let t0 = Instant::now();
    let src = a("10.0.0.7:40000");
    let cases: [(Vec<u8>, u16); 6] = [
        (
            raw_request(
                "INVITE <sip:x@10.0.0.1> SIP/2.0",
                "INVITE",
                "Content-Length: 0\r\n\r\n",
            ),
            400,
        ),
        (
            raw_request(
                "OPTIONS sip:x@10.0.0.1;lr=a b SIP/2.0",
                "OPTIONS",
                "Content-Length: 0\r\n\r\n",
            ),
            400,
        ),
        (
            raw_request(
                "OPTIONS  sip:x@10.0.0.1  SIP/2.0",
                "OPTIONS",
                "Content-Length: 0\r\n\r\n",
            ),
            400,
        ),
        (
            raw_request(
                "INFO sip:x@10.0.0.1 SIP/2.0",
                "INFO",
                "Content-Length: 900\r\n\r\nshort",
            ),
            400,
        ),
        (
            raw_request(
                "OPTIONS http://10.0.0.1/ SIP/2.0",
                "OPTIONS",
                "Content-Length: 0\r\n\r\n",
            ),
            416,
        ),
        (
            raw_request(
                "OPTIONS sip:x@10.0.0.1 SIP/7.0",
                "OPTIONS",
                "Content-Length: 0\r\n\r\n",
            ),
            505,
        ),
    ];
    for (bytes, expected) in cases {
        let what = String::from_utf8_lossy(&bytes[..40]).into_owned();
        ep.handle_input(t0, src, &bytes);
        let out = sent(&mut ep);
        assert_eq!(out.len(), 1, "{what}: {out:?}");
        let (dest, r) = &out[0];
        assert_eq!(code(r), expected, "{what}");
        assert_eq!(*dest, src, "{what}: rport: to the source port");
        let via = h(r, HeaderName::Via);
        assert!(
            via.contains("rport=40000") && via.contains("received=10.0.0.7"),
            "{what}: {via}"
        );
        assert!(h(r, HeaderName::To).contains(";tag="), "{what}");
        assert_eq!(h(r, HeaderName::CallId), "bad-1", "{what}");
        assert!(events(&mut ep).is_empty());
    }
    // Nothing to answer: a malformed ACK, a malformed response, a request without a Via.
    let ack = raw_request(
        "ACK <sip:x@10.0.0.1> SIP/2.0",
        "ACK",
        "Content-Length: 0\r\n\r\n",
    );
    let resp = b"SIP/2.0 200  OK OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nContent-Length: 9\r\n\r\n";
    let no_via = b"OPTIONS <sip:x@10.0.0.1> SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@c>\r\nCall-ID: q\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    for bytes in [&ack[..], &resp[..], &no_via[..]] {
        ep.handle_input(t0, src, bytes);
        assert!(
            sent(&mut ep).is_empty(),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// §21.5.2 vs §8.2.1: a method we do not recognise gets 501, in a dialog or outside; a known
/// one we do not implement (MESSAGE, SUBSCRIBE) 405 with Allow.
#[test]
fn an_unrecognised_method_gets_501_a_known_unimplemented_one_405() {
    let (mut ep, t0, _, inv) = established();
    ep.handle_input(t0, a(TRUNK), &far_request(&inv, "FROBNICATE", 5, ""));
    assert_eq!(code(&sent(&mut ep).remove(0).1), 501);
    ep.handle_input(t0, a(TRUNK), &far_request(&inv, "MESSAGE", 6, ""));
    let (_, r) = sent(&mut ep).remove(0);
    assert_eq!(code(&r), 405);
    assert!(h(&r, HeaderName::Allow).contains("INVITE"));
    let out = b"FROBNICATE sip:x@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bKfrob\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@10.0.0.1>\r\nCall-ID: frob\r\nCSeq: 1 FROBNICATE\r\nContent-Length: 0\r\n\r\n";
    ep.handle_input(t0, a("10.0.0.7:5060"), out);
    assert_eq!(code(&sent(&mut ep).remove(0).1), 501);
}

/// What a late 2xx got: the methods sent, in order, and where.
fn methods(out: &[(SocketAddr, Message)]) -> Vec<(Method, SocketAddr)> {
    out.iter()
        .map(|(d, m)| (req(m).method.clone(), *d))
        .collect()
}

/// §13.2.2.4: a 2xx to our INVITE whose call is over — another fork's after our non-2xx
/// final, one after timer B, another fork's after the answered call was forgotten — is
/// ACKed and sent a BYE (to its Contact); its retransmission is ACKed again, not BYEd twice.
#[test]
fn a_late_2xx_after_the_call_is_over_is_acked_and_byed() {
    let contact = "Contact: <sip:late@10.0.0.9:5070>\r\n";
    let late = a("10.0.0.9:5070");
    let check = |ep: &mut Endpoint, t: Instant, inv: &Message, tag: &str| {
        let ok = response(inv, 200, Some(tag), contact);
        ep.handle_input(t, a(TRUNK), &ok);
        let out = sent(ep);
        assert_eq!(
            methods(&out),
            [(Method::Ack, late), (Method::Bye, late)],
            "{tag}"
        );
        let bye = out[1].1.clone();
        assert!(h(&bye, HeaderName::To).ends_with(&format!(";tag={tag}")));
        assert_eq!(h(&bye, HeaderName::From), h(inv, HeaderName::From));
        // The 2xx again: its ACK again, no second BYE.
        ep.handle_input(t, a(TRUNK), &ok);
        assert_eq!(methods(&sent(ep)), [(Method::Ack, late)], "{tag}");
        // The BYE answered: nothing is left of it but its timer K.
        ep.handle_input(t, late, &response(&bye, 200, None, ""));
        assert_eq!(ep.calls(), 0);
        assert_eq!(ep.background(), 0);
    };
    // After our non-2xx final (486 from one fork, then another fork's 200).
    let (mut ep, t0, call, inv) = start(None);
    ep.handle_input(t0, a(TRUNK), &response(&inv, 486, Some("busy"), ""));
    let _ = sent(&mut ep);
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Rejected { call: c, .. } if *c == call)));
    check(&mut ep, t0 + Duration::from_secs(1), &inv, "fork2");
    // After timer B.
    let (mut ep, t0, _, inv) = start(None);
    let t = t0 + Duration::from_secs(33);
    while ep.poll_timeout().is_some_and(|d| d <= t) {
        ep.handle_timeout(t);
    }
    let _ = sent(&mut ep);
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::InviteFailed { timeout: true, .. })));
    check(&mut ep, t, &inv, "slow");
    // Another fork's 2xx after the answered call ended and was forgotten.
    let (mut ep, t0, call, inv) = established();
    ep.bye(t0, call, &[]).unwrap();
    let bye = sent(&mut ep).remove(0).1;
    ep.handle_input(t0, a(TRUNK), &response(&bye, 200, None, ""));
    assert_eq!(ep.calls(), 0);
    check(&mut ep, t0 + Duration::from_secs(2), &inv, "other");
}

/// A late 2xx to a challenged INVITE whose call is over: its ACK carries the INVITE's
/// credentials (§13.2.2.4), as the live call's ACK does.
#[test]
fn a_late_2xx_to_a_challenged_invite_is_acked_with_its_credentials() {
    let (mut ep, t0, call, inv) = start(Some(Credentials::new("alice", "secret")));
    let pa = "Proxy-Authenticate: Digest realm=\"trunk\", nonce=\"n1\"\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv, 407, Some("t"), pa));
    let inv2 = sent(&mut ep).remove(1).1;
    let creds = h(&inv2, HeaderName::ProxyAuthorization);
    assert!(creds.starts_with("Digest "), "{creds}");
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 486, Some("busy"), ""));
    let _ = sent(&mut ep);
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Rejected { call: c, .. } if *c == call)));
    // The call kept for timer D, then forgotten: the late fork's 2xx after both.
    for t in [t0 + Duration::from_secs(1), t0 + Duration::from_secs(40)] {
        let t_end = t;
        while ep.poll_timeout().is_some_and(|d| d <= t_end) {
            ep.handle_timeout(t_end);
        }
        let _ = sent(&mut ep);
        let tag = format!("late{}", t.duration_since(t0).as_secs());
        let ok = response(
            &inv2,
            200,
            Some(&tag),
            "Contact: <sip:late@10.0.0.9:5070>\r\n",
        );
        ep.handle_input(t, a(TRUNK), &ok);
        let out = sent(&mut ep);
        assert_eq!(req(&out[0].1).method, Method::Ack, "{tag}");
        assert_eq!(h(&out[0].1, HeaderName::ProxyAuthorization), creds, "{tag}");
    }
}

/// Past [`MAX_FORK_ACKS`](8) 2xx of one INVITE (each a new To tag), a further one is dropped:
/// no ACK, no BYE, nothing kept — a forged 2xx per To tag cannot grow a call without bound.
#[test]
fn forks_past_eight_are_not_acked_or_kept() {
    let (mut ep, t0, _call, inv) = established();
    // The winner's ACK is the first kept; seven more forks are ACKed and BYEd.
    for i in 0..7 {
        let tag = format!("fork{i}");
        let ok = response(&inv, 200, Some(&tag), "Contact: <sip:f@10.0.0.9:5070>\r\n");
        ep.handle_input(t0, a(TRUNK), &ok);
        let out = sent(&mut ep);
        assert_eq!(out.len(), 2, "{tag}: ACK and BYE");
    }
    let ok = response(
        &inv,
        200,
        Some("fork7"),
        "Contact: <sip:f@10.0.0.9:5070>\r\n",
    );
    ep.handle_input(t0, a(TRUNK), &ok);
    assert!(sent(&mut ep).is_empty(), "the ninth 2xx is dropped");
}

/// Over TCP a message framed but malformed (`wire::Framer` hands it out) is answered 400 on
/// its connection (the source address, §18.2.2), with a To tag.
#[test]
fn over_tcp_a_framed_malformed_request_gets_400_on_its_connection() {
    let mut ep = tcp_endpoint(false);
    let t0 = Instant::now();
    let conn = a("10.0.0.7:43210");
    let bad = raw_request(
        "INVITE <sip:x@10.0.0.1> SIP/2.0",
        "INVITE",
        "Content-Length: 0\r\n\r\n",
    );
    let mut f = wire::Framer::new();
    let framed = f.push(&bad).unwrap();
    let [wire::Framed::Malformed(bytes)] = &framed[..] else {
        panic!("{framed:?}")
    };
    ep.handle_input(t0, conn, bytes);
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, conn);
    assert_eq!(code(&out[0].1), 400);
    assert!(h(&out[0].1, HeaderName::To).contains(";tag="));
}

/// RFC 3261 §13.2.2.4 after a failure: one fork rejects (486, ACKed by the transaction with
/// its To tag), then another answers 200: that 2xx is ACKed (a new branch, its own To tag,
/// to its Contact) and its dialog sent a BYE; a retransmission of it gets the same ACK and no
/// second BYE; the caller hears of the rejection only, and the call is forgotten once the
/// BYE is answered and timer D is over.
#[test]
fn a_forks_2xx_after_our_non_2xx_final_is_acked_and_byed() {
    let (mut ep, t0, call, inv) = start(None);
    ep.handle_input(t0, a(TRUNK), &response(&inv, 486, Some("f1"), ""));
    let out = sent(&mut ep);
    assert_eq!(out.len(), 1);
    assert!(
        req(&out[0].1).method == Method::Ack && h(&out[0].1, HeaderName::To).ends_with("tag=f1")
    );
    let ok = response(
        &inv,
        200,
        Some("f2"),
        "Contact: <sip:two@10.0.0.3:5062>\r\n",
    );
    ep.handle_input(t0, a(TRUNK), &ok);
    let out = sent(&mut ep);
    assert_eq!(out.len(), 2, "{out:?}");
    let (ack_dest, ack) = &out[0];
    assert_eq!(req(ack).method, Method::Ack);
    assert_eq!(*ack_dest, a("10.0.0.3:5062"));
    assert!(h(ack, HeaderName::To).ends_with("tag=f2"));
    assert_eq!(h(ack, HeaderName::CSeq), "1 ACK");
    assert_ne!(h(ack, HeaderName::Via), h(&inv, HeaderName::Via));
    let bye = &out[1].1;
    assert_eq!(req(bye).method, Method::Bye);
    assert_eq!(req(bye).uri.to_string(), "sip:two@10.0.0.3:5062");
    assert!(h(bye, HeaderName::To).ends_with("tag=f2"));
    assert_eq!(h(bye, HeaderName::From), h(&inv, HeaderName::From));
    // The 2xx again: the same ACK, nothing else.
    ep.handle_input(t0, a(TRUNK), &ok);
    let again = sent(&mut ep);
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(h(&again[0].1, HeaderName::Via), h(ack, HeaderName::Via));
    let ev = events(&mut ep);
    assert!(
        ev.iter().any(|e| matches!(e, Event::Rejected { call: c, response, .. } if *c == call && response.status.code() == 486)),
        "{ev:?}"
    );
    assert!(
        !ev.iter().any(|e| matches!(e, Event::Answered { .. })),
        "{ev:?}"
    );
    ep.handle_input(t0, a(TRUNK), &response(bye, 200, None, ""));
    let t = t0 + Duration::from_secs(40);
    while ep.poll_timeout().is_some_and(|d| d <= t) {
        ep.handle_timeout(t);
    }
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Terminated { call: c } if *c == call)));
    assert_eq!(ep.calls(), 0);
}

/// The requests the endpoint writes straight into its buffer (no `Request` built) are what
/// RFC 3261 asks and nothing else: each well formed for sipx-sip's validator (§8.1.1's
/// headers, one Content-Length equal to the body's); the INVITE re-sent to a 401 then a 407
/// carries one answer of each header (the second challenge's added, the first's kept, §22.2),
/// a new branch and the next CSeq, and a caller's Route and Content-Length do not break it;
/// its CANCEL (§9.1) is the last INVITE's: same branch, Request-URI, From, To, Call-ID, CSeq
/// number and Route, no body, no credentials; and a BYE in the dialog is well formed too.
#[test]
fn requests_written_straight_are_well_formed_and_the_cancel_matches_the_last_invite() {
    let mut ep = Endpoint::new(cfg(false));
    let t0 = Instant::now();
    let mut inv0 = invite(Some(Credentials::new("alice", "secret")));
    inv0.headers = vec![
        ("Route".into(), "<sip:10.0.0.9;lr>".into()),
        ("Content-Length".into(), "999".into()),
        (
            "P-Asserted-Identity".into(),
            "<sip:+33100000000@example.fr>".into(),
        ),
    ];
    let call = ep.invite(t0, inv0).unwrap();
    let well_formed = |m: &Message| {
        let failures = sipx_sip::validate_request(req(m));
        assert!(failures.is_empty(), "{failures:?}\n{m:?}");
        assert_eq!(
            all(m, HeaderName::ContentLength),
            [req(m).body().len().to_string()]
        );
        assert_eq!(all(m, HeaderName::Via).len(), 1);
        assert_eq!(h(m, HeaderName::MaxForwards), "70");
    };
    let inv = sent(&mut ep).remove(0).1;
    well_formed(&inv);
    assert_eq!(all(&inv, HeaderName::Route), ["<sip:10.0.0.9;lr>"]);
    assert_eq!(h(&inv, HeaderName::UserAgent), "crieur-test");
    assert_eq!(h(&inv, HeaderName::ContentType), "application/sdp");
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv,
            401,
            Some("t"),
            "WWW-Authenticate: Digest realm=\"a\", nonce=\"n1\", qop=\"auth\"\r\n",
        ),
    );
    let inv2 = sent(&mut ep).remove(1).1;
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv2,
            407,
            Some("t"),
            "Proxy-Authenticate: Digest realm=\"b\", nonce=\"n2\", qop=\"auth\"\r\n",
        ),
    );
    let inv3 = sent(&mut ep).remove(1).1;
    for (m, seq) in [(&inv2, 2), (&inv3, 3)] {
        well_formed(m);
        assert_eq!(h(m, HeaderName::CSeq), format!("{seq} INVITE"));
        assert_eq!(req(m).uri.to_string(), req(&inv).uri.to_string());
        assert_eq!(&req(m).body()[..], b"v=0\r\n");
        for n in [
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::Contact,
        ] {
            assert_eq!(h(m, n.clone()), h(&inv, n));
        }
        assert_eq!(all(m, HeaderName::Route), ["<sip:10.0.0.9;lr>"]);
    }
    assert_ne!(h(&inv2, HeaderName::Via), h(&inv3, HeaderName::Via));
    // Realm a's answer again, with its nonce's next count (a new request).
    let au = all(&inv3, HeaderName::Authorization);
    assert!(
        au.len() == 1 && au[0].contains("nonce=\"n1\"") && au[0].contains("nc=00000002"),
        "{au:?}"
    );
    let pa = all(&inv3, HeaderName::ProxyAuthorization);
    assert!(pa.len() == 1 && pa[0].contains("nonce=\"n2\""), "{pa:?}");
    assert!(
        pa[0].contains("uri=\"sip:+33612345678@10.0.0.2:5060;user=phone\""),
        "{pa:?}"
    );
    ep.handle_input(t0, a(TRUNK), &response(&inv3, 180, Some("t"), ""));
    ep.cancel(t0, call);
    let cancel = sent(&mut ep).remove(0).1;
    well_formed(&cancel);
    assert_eq!(req(&cancel).method, Method::Cancel);
    assert_eq!(req(&cancel).uri.to_string(), req(&inv3).uri.to_string());
    for n in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
    ] {
        assert_eq!(h(&cancel, n.clone()), h(&inv3, n));
    }
    assert_eq!(h(&cancel, HeaderName::CSeq), "3 CANCEL");
    assert_eq!(all(&cancel, HeaderName::Route), ["<sip:10.0.0.9;lr>"]);
    assert_eq!(all(&cancel, HeaderName::ProxyAuthorization), pa);
    assert_eq!(all(&cancel, HeaderName::Authorization), au);
    assert!(req(&cancel).body().is_empty());
    // The 2xx crossing the CANCEL: ACKed and sent a BYE, both well formed.
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &inv3,
            200,
            Some("t"),
            "Contact: <sip:callee@10.0.0.3>\r\nRecord-Route: <sip:10.0.0.7;lr>\r\n",
        ),
    );
    let out = sent(&mut ep);
    let bye = out
        .iter()
        .find(|(_, m)| req(m).method == Method::Bye)
        .unwrap();
    well_formed(&bye.1);
    assert_eq!(bye.0, a("10.0.0.7:5060"));
    assert_eq!(req(&bye.1).uri.to_string(), "sip:callee@10.0.0.3");
    assert_eq!(h(&bye.1, HeaderName::CSeq), "4 BYE");
    assert_eq!(all(&bye.1, HeaderName::Route), ["<sip:10.0.0.7;lr>"]);
    assert!(h(&bye.1, HeaderName::To).ends_with(";tag=t"));
}

/// §13.2.2.4, §17.1.1.3, RFC 6026: while the call lives, a 2xx to an *earlier* INVITE of it
/// — the one challenged before our credentials, or the one a server answered late after we
/// failed over — is ACKed at once (its own CSeq and credentials), and BYEd when it made
/// another dialog; not left un-ACKed until the call is forgotten.
#[test]
fn a_2xx_to_an_earlier_invite_of_a_live_call_is_acked_at_once() {
    // After a credentials retry, the call answered by the retry.
    let (mut ep, t0, call, inv) = start(Some(Credentials::new("alice", "secret")));
    let pa = "Proxy-Authenticate: Digest realm=\"trunk\", nonce=\"n1\"\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv, 407, Some("t"), pa));
    let inv2 = sent(&mut ep).remove(1).1;
    assert_eq!(h(&inv2, HeaderName::CSeq), "2 INVITE");
    let contact = "Contact: <sip:callee@10.0.0.2:5060>\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 200, Some("far"), contact));
    let _ = sent(&mut ep);
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Answered { call: c, .. } if *c == call)));
    // The first INVITE's 2xx from the same dialog: ACKed (CSeq 1, no credentials: that
    // INVITE had none), no BYE; again on its retransmission.
    let same = response(&inv, 200, Some("far"), contact);
    for _ in 0..2 {
        ep.handle_input(t0, a(TRUNK), &same);
        let out = sent(&mut ep);
        assert_eq!(methods(&out), [(Method::Ack, a(TRUNK))]);
        assert_eq!(h(&out[0].1, HeaderName::CSeq), "1 ACK");
        assert!(h(&out[0].1, HeaderName::To).ends_with(";tag=far"));
        assert_eq!(h(&out[0].1, HeaderName::ProxyAuthorization), "");
    }
    // From another dialog: ACKed and BYEd; the call goes on.
    let other = response(
        &inv,
        200,
        Some("other"),
        "Contact: <sip:o@10.0.0.9:5070>\r\n",
    );
    ep.handle_input(t0, a(TRUNK), &other);
    let out = sent(&mut ep);
    let o = a("10.0.0.9:5070");
    assert_eq!(methods(&out), [(Method::Ack, o), (Method::Bye, o)]);
    assert_eq!(h(&out[0].1, HeaderName::CSeq), "1 ACK");
    assert!(h(&out[1].1, HeaderName::To).ends_with(";tag=other"));
    ep.handle_input(t0, o, &response(&out[1].1, 200, None, ""));
    let _ = sent(&mut ep);
    assert_eq!(ep.calls(), 1, "the call lives on");
    assert!(events(&mut ep).is_empty());
    assert!(ep.bye(t0, call, &[]).is_ok());

    // After a fail-over, while the second server's INVITE rings: the first server's late 2xx
    // is ACKed and BYEd there; the second server's 2xx then answers the call.
    let s2 = a("10.0.0.3:5060");
    let (mut ep, call, first) = start_with_alternates(t0, vec![s2]);
    ep.handle_input(t0, a(TRUNK), &response(&first, 503, Some("p"), ""));
    let second = sent(&mut ep).remove(1).1;
    ep.handle_input(t0, s2, &response(&second, 180, Some("x"), ""));
    let _ = events(&mut ep);
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(&first, 200, Some("x"), "Contact: <sip:x@10.0.0.2:5060>\r\n"),
    );
    let out = sent(&mut ep);
    assert_eq!(
        methods(&out),
        [(Method::Ack, a(TRUNK)), (Method::Bye, a(TRUNK))]
    );
    assert_eq!(h(&out[0].1, HeaderName::CSeq), "1 ACK");
    assert!(events(&mut ep).is_empty(), "the call is not answered by it");
    // The current INVITE's 2xx (the same To tag as it happens) answers the call.
    ep.handle_input(
        t0,
        s2,
        &response(
            &second,
            200,
            Some("x"),
            "Contact: <sip:x@10.0.0.3:5060>\r\n",
        ),
    );
    let out = sent(&mut ep);
    assert_eq!(methods(&out), [(Method::Ack, s2)]);
    assert_eq!(h(&out[0].1, HeaderName::CSeq), "2 ACK");
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Answered { call: c, .. } if *c == call)));
}

/// An earlier INVITE's 2xx with the current dialog's To tag. (1) Same server, the call not
/// answered yet: that 2xx is ACKed and BYEd; the current INVITE's 2xx then comes in the same
/// dialog — one we ended: ACKed, no second BYE, the call not answered (`AckFailed`). (2) After
/// a fail-over, the call answered by the second server with tag x: the first server's late
/// 2xx with tag x is another dialog (another server), ACKed and BYEd there — not taken for
/// the call's and ACKed along its route.
#[test]
fn an_earlier_invites_2xx_in_the_current_dialogs_tag_is_not_the_call() {
    let (mut ep, t0, call, inv) = start(Some(Credentials::new("alice", "secret")));
    let www = "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", qop=\"auth\"\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv, 401, Some("u"), www));
    let inv2 = sent(&mut ep).remove(1).1;
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 180, Some("x"), ""));
    let _ = events(&mut ep);
    let contact = "Contact: <sip:x@10.0.0.2:5060>\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv, 200, Some("x"), contact));
    let out = sent(&mut ep);
    let far = a("10.0.0.2:5060");
    assert_eq!(methods(&out), [(Method::Ack, far), (Method::Bye, far)]);
    assert!(events(&mut ep).is_empty());
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 200, Some("x"), contact));
    let out = sent(&mut ep);
    assert_eq!(methods(&out), [(Method::Ack, far)], "ACKed, not BYEd twice");
    assert_eq!(h(&out[0].1, HeaderName::CSeq), "2 ACK");
    let ev = events(&mut ep);
    assert!(
        ev.iter()
            .any(|e| matches!(e, Event::AckFailed { call: c, .. } if *c == call))
            && !ev.iter().any(|e| matches!(e, Event::Answered { .. })),
        "{ev:?}"
    );

    let s2 = a("10.0.0.3:5060");
    let (mut ep, call, first) = start_with_alternates(t0, vec![s2]);
    ep.handle_input(t0, a(TRUNK), &response(&first, 503, Some("p"), ""));
    let second = sent(&mut ep).remove(1).1;
    ep.handle_input(
        t0,
        s2,
        &response(
            &second,
            200,
            Some("x"),
            "Contact: <sip:x@10.0.0.3:5060>\r\n",
        ),
    );
    let _ = sent(&mut ep);
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Answered { call: c, .. } if *c == call)));
    // The first server's late 2xx, the same tag, its Contact a host name: ACK and BYE there.
    ep.handle_input(
        t0,
        a(TRUNK),
        &response(
            &first,
            200,
            Some("x"),
            "Contact: <sip:x@far.example.net>\r\n",
        ),
    );
    let out = sent(&mut ep);
    assert_eq!(
        methods(&out),
        [(Method::Ack, a(TRUNK)), (Method::Bye, a(TRUNK))]
    );
    assert_eq!(h(&out[0].1, HeaderName::CSeq), "1 ACK");
    assert_eq!(ep.calls(), 1, "the call lives on");
}

/// §8.1.3.3: a response with more than one Via value (on two lines, or two values on one)
/// is discarded by the UAC: not ACKed, not reported; the one with ours alone then is.
#[test]
fn a_response_with_more_than_one_via_is_discarded() {
    let (mut ep, t0, call, inv) = start(None);
    let via = h(&inv, HeaderName::Via);
    let ok = String::from_utf8(response(&inv, 200, Some("far"), "")).unwrap();
    let ours = format!("Via: {via};received=10.0.0.1\r\n");
    let two_lines = ok.replacen(
        &ours,
        &format!("{ours}Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bKproxy\r\n"),
        1,
    );
    let one_line = ok.replacen(
        &ours,
        &format!("Via: {via};received=10.0.0.1, SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKp2\r\n"),
        1,
    );
    let ringing = String::from_utf8(response(&inv, 180, Some("far"), ""))
        .unwrap()
        .replacen(&ours, &format!("Via: {via}, SIP/2.0/UDP 10.0.0.7\r\n"), 1);
    for bad in [&two_lines, &one_line, &ringing] {
        assert_ne!(bad, &ok);
        ep.handle_input(t0, a(TRUNK), bad.as_bytes());
        assert!(sent(&mut ep).is_empty(), "{bad}");
        assert!(events(&mut ep).is_empty(), "{bad}");
    }
    ep.handle_input(t0, a(TRUNK), ok.as_bytes());
    assert_eq!(methods(&sent(&mut ep)), [(Method::Ack, a(TRUNK))]);
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Answered { call: c, .. } if *c == call)));
}

/// [`far_request`] with `body` (and `extra` header lines, e.g. its Content-Type).
fn far_request_with(inv: &Message, method: &str, cseq: u32, extra: &str, body: &str) -> Vec<u8> {
    let mut r = far_request(inv, method, cseq, extra);
    r.truncate(r.len() - "Content-Length: 0\r\n\r\n".len());
    r.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    r
}

/// §8.2.3: a body we cannot take gets 415 naming what we take (`Accept` for its type,
/// `Accept-Encoding` for a coding), and the caller is not handed the request: INFO takes
/// dtmf-relay and dtmf, re-INVITE and UPDATE take SDP; a body without a type is refused too.
/// What we take still goes through, and the call goes on.
#[test]
fn a_body_we_cannot_take_gets_415_with_accept() {
    let (mut ep, t0, call, inv) = established();
    let src = a(TRUNK);
    let sdp = "v=0\r\n";
    let cases = [
        (
            "INFO",
            "Content-Type: text/plain\r\n",
            "hello",
            HeaderName::Accept,
            "application/dtmf-relay, application/dtmf",
        ),
        (
            "INFO",
            "",
            "Signal=5\r\n",
            HeaderName::Accept,
            "application/dtmf-relay, application/dtmf",
        ),
        (
            "INVITE",
            "Content-Type: application/isup\r\n",
            "xx",
            HeaderName::Accept,
            "application/sdp, multipart/mixed, multipart/alternative",
        ),
        (
            "UPDATE",
            "Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n",
            sdp,
            HeaderName::AcceptEncoding,
            "identity",
        ),
    ];
    let mut cseq = 10;
    for (method, extra, body, name, accept) in cases {
        cseq += 1;
        ep.handle_input(t0, src, &far_request_with(&inv, method, cseq, extra, body));
        let out = sent(&mut ep);
        assert_eq!(out.len(), 1, "{method} {extra}");
        assert_eq!(code(&out[0].1), 415, "{method} {extra}");
        assert_eq!(h(&out[0].1, name), accept, "{method} {extra}");
        assert!(events(&mut ep).is_empty(), "{method} {extra}");
    }
    // An unknown coding of an unknown type: both named.
    let ct = "Content-Type: application/isup\r\nContent-Encoding: gzip\r\n";
    ep.handle_input(t0, src, &far_request_with(&inv, "UPDATE", 19, ct, "xx"));
    let out = sent(&mut ep);
    assert_eq!(code(&out[0].1), 415);
    assert_eq!(
        h(&out[0].1, HeaderName::Accept),
        "application/sdp, multipart/mixed, multipart/alternative"
    );
    assert_eq!(h(&out[0].1, HeaderName::AcceptEncoding), "identity");
    assert!(events(&mut ep).is_empty());
    // What we take: a dtmf-relay INFO (its parameters ignored), an SDP re-INVITE.
    let ct = "Content-Type: Application/DTMF-Relay; charset=x\r\n";
    ep.handle_input(
        t0,
        src,
        &far_request_with(&inv, "INFO", 20, ct, "Signal=5\r\n"),
    );
    assert_eq!(code(&sent(&mut ep).remove(0).1), 200);
    assert!(matches!(events(&mut ep).as_slice(), [Event::Info { call: c, .. }] if *c == call));
    let ct = "Content-Type: application/sdp\r\n";
    ep.handle_input(t0, src, &far_request_with(&inv, "INVITE", 21, ct, sdp));
    assert!(matches!(events(&mut ep).as_slice(), [Event::Request { call: c, .. }] if *c == call));
}

/// §20.11: a body we cannot read marked `handling=optional` is ignored, not refused (the
/// request is handed up, its body no SDP: `crieur_sip::body::sdp` is None); RFC 5621: a
/// `multipart/mixed` re-INVITE holding SDP and ISUP (SIP-I) is handed up, its SDP part read.
#[test]
fn an_optional_body_is_ignored_and_a_multipart_sdp_part_read() {
    let (mut ep, t0, call, inv) = established();
    let src = a(TRUNK);
    let ct = "Content-Type: application/isup\r\nContent-Disposition: signal;handling=optional\r\n";
    ep.handle_input(
        t0,
        src,
        &far_request_with(&inv, "UPDATE", 11, ct, "\x01\x02"),
    );
    assert!(sent(&mut ep).is_empty(), "no 415: the caller answers");
    let ev = events(&mut ep);
    let [Event::Request {
        call: c, request, ..
    }] = ev.as_slice()
    else {
        panic!("{ev:?}")
    };
    assert_eq!(*c, call);
    assert_eq!(
        crieur_sip::body::sdp(&request.headers, request.body()),
        None
    );
    let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\n";
    let body = format!(
        "--sep\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--sep\r\nContent-Type: application/isup;version=itu-t92+\r\nContent-Disposition: signal;handling=optional\r\n\r\n\x01\x02\r\n--sep--\r\n"
    );
    let ct = "Content-Type: multipart/mixed;boundary=sep\r\n";
    ep.handle_input(t0, src, &far_request_with(&inv, "INVITE", 12, ct, &body));
    assert!(sent(&mut ep).is_empty(), "no 415: the caller answers");
    let ev = events(&mut ep);
    let [Event::Request { request, .. }] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(
        crieur_sip::body::sdp(&request.headers, request.body()),
        Some(sdp.as_bytes())
    );
}

/// §22.3: a 407 with two proxies' challenges (two realms) is answered for each realm; a
/// later challenge of one realm (stale) replaces that realm's answer only, the other's kept.
#[test]
fn every_realm_of_a_407_is_answered() {
    let (mut ep, t0, _call, inv) = start(Some(Credentials::new("alice", "secret")));
    let pa = "Proxy-Authenticate: Digest realm=\"proxy-a\", nonce=\"na\"\r\nProxy-Authenticate: Digest realm=\"proxy-b\", nonce=\"nb\", algorithm=SHA-256\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv, 407, Some("t"), pa));
    let inv2 = sent(&mut ep).remove(1).1;
    let creds = all(&inv2, HeaderName::ProxyAuthorization);
    assert_eq!(creds.len(), 2, "{creds:?}");
    assert!(creds[0].contains("realm=\"proxy-a\"") && creds[0].contains("nonce=\"na\""));
    assert!(creds[1].contains("realm=\"proxy-b\"") && creds[1].contains("algorithm=SHA-256"));
    let stale = "Proxy-Authenticate: Digest realm=\"proxy-b\", nonce=\"nb2\", stale=true\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 407, Some("t"), stale));
    let inv3 = sent(&mut ep).remove(1).1;
    let again = all(&inv3, HeaderName::ProxyAuthorization);
    assert_eq!(again.len(), 2, "{again:?}");
    // proxy-a offered no qop: RFC 2069's form, no count, the same digest.
    assert_eq!(again[0], creds[0], "proxy-a's answer kept");
    assert!(again[1].contains("realm=\"proxy-b\"") && again[1].contains("nonce=\"nb2\""));
}

/// Two proxies on the path counting nonces (qop=auth): INVITE → 407 from proxy a → INVITE
/// with a's answer → 407 from proxy b → INVITE with both, a's with nc=2 and a fresh cnonce.
#[test]
fn a_realm_answered_before_is_answered_again_with_the_next_nonce_count() {
    let (mut ep, t0, _call, inv) = start(Some(Credentials::new("alice", "secret")));
    let pa = |r: &str| {
        format!("Proxy-Authenticate: Digest realm=\"{r}\", nonce=\"n-{r}\", qop=\"auth\"\r\n")
    };
    ep.handle_input(t0, a(TRUNK), &response(&inv, 407, Some("t"), &pa("a")));
    let inv2 = sent(&mut ep).remove(1).1;
    let first = all(&inv2, HeaderName::ProxyAuthorization);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].contains("nc=00000001"), "{}", first[0]);
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 407, Some("t"), &pa("b")));
    let inv3 = sent(&mut ep).remove(1).1;
    let both = all(&inv3, HeaderName::ProxyAuthorization);
    assert_eq!(both.len(), 2, "{both:?}");
    let of = |realm: &str| {
        both.iter()
            .find(|h| h.contains(&format!("realm=\"{realm}\"")))
            .cloned()
            .unwrap_or_else(|| panic!("no answer to {realm}: {both:?}"))
    };
    let cnonce = |h: &str| {
        h.split(',')
            .find_map(|p| p.trim().strip_prefix("cnonce="))
            .map(str::to_owned)
    };
    assert!(of("a").contains("nc=00000002"), "{}", of("a"));
    assert_ne!(cnonce(&of("a")), cnonce(&first[0]));
    assert!(of("b").contains("nc=00000001"), "{}", of("b"));
}

/// After a fail-over on timer B, the first server's late 2xx (its Contact a host name, no
/// Record-Route: no address in it) is ACKed and sent a BYE at the first server — where its
/// INVITE went — not at the server failed over to; the same once the call is over.
#[test]
fn an_earlier_invites_2xx_is_acked_and_byed_where_that_invite_went() {
    let s2 = a("10.0.0.3:5060");
    let t0 = Instant::now();
    let contact = "Contact: <sip:late@far.example.net>\r\n";
    for call_over in [false, true] {
        let (mut ep, call, first) = start_with_alternates(t0, vec![s2]);
        let (mut t, second) = until_failed_over(&mut ep, t0, s2);
        if call_over {
            ep.handle_input(t, s2, &response(&second, 486, Some("busy"), ""));
            let _ = sent(&mut ep);
            assert!(events(&mut ep)
                .iter()
                .any(|e| matches!(e, Event::Rejected { call: c, .. } if *c == call)));
            // Forgotten (its INVITE transaction over): the ended-call memory answers.
            let end = t + Duration::from_secs(33);
            while ep.poll_timeout().is_some_and(|d| d <= end) {
                ep.handle_timeout(end);
            }
            t = end;
            let _ = sent(&mut ep);
            assert_eq!(ep.calls(), 0);
        }
        ep.handle_input(t, a(TRUNK), &response(&first, 200, Some("late"), contact));
        let out = sent(&mut ep);
        assert_eq!(
            methods(&out),
            [(Method::Ack, a(TRUNK)), (Method::Bye, a(TRUNK))],
            "call over: {call_over}"
        );
        assert_eq!(h(&out[0].1, HeaderName::CSeq), "1 ACK");
    }
}

/// An earlier INVITE that carried credentials: INVITE 1 → 407 realm a, INVITE 2 (a's
/// answer) → 407 realm b, INVITE 3 (both). A 2xx to INVITE 2 is ACKed with INVITE 2's
/// credentials (a's answer alone, §13.2.2.4) — while the call lives and after it is forgotten.
#[test]
fn a_2xx_to_an_earlier_credentialed_invite_is_acked_with_its_credentials() {
    let (mut ep, t0, call, inv) = start(Some(Credentials::new("alice", "secret")));
    let pa = "Proxy-Authenticate: Digest realm=\"a\", nonce=\"na\"\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv, 407, Some("t"), pa));
    let inv2 = sent(&mut ep).remove(1).1;
    let creds2 = all(&inv2, HeaderName::ProxyAuthorization);
    assert_eq!(creds2.len(), 1, "{creds2:?}");
    let pb = "Proxy-Authenticate: Digest realm=\"b\", nonce=\"nb\"\r\n";
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 407, Some("t"), pb));
    let inv3 = sent(&mut ep).remove(1).1;
    assert_eq!(all(&inv3, HeaderName::ProxyAuthorization).len(), 2);
    let contact = "Contact: <sip:late@10.0.0.9:5070>\r\n";
    // Live: the call still waits on INVITE 3.
    ep.handle_input(t0, a(TRUNK), &response(&inv2, 200, Some("x1"), contact));
    let out = sent(&mut ep);
    assert_eq!(req(&out[0].1).method, Method::Ack);
    assert_eq!(h(&out[0].1, HeaderName::CSeq), "2 ACK");
    assert_eq!(all(&out[0].1, HeaderName::ProxyAuthorization), creds2);
    // INVITE 3 refused, the call forgotten: another fork's 2xx to INVITE 2.
    ep.handle_input(t0, a(TRUNK), &response(&inv3, 486, Some("busy"), ""));
    let _ = sent(&mut ep);
    assert!(events(&mut ep)
        .iter()
        .any(|e| matches!(e, Event::Rejected { call: c, .. } if *c == call)));
    let t = t0 + Duration::from_secs(40);
    while ep.poll_timeout().is_some_and(|d| d <= t) {
        ep.handle_timeout(t);
    }
    let _ = sent(&mut ep);
    assert_eq!(ep.calls(), 0);
    ep.handle_input(t, a(TRUNK), &response(&inv2, 200, Some("x2"), contact));
    let out = sent(&mut ep);
    assert_eq!(req(&out[0].1).method, Method::Ack);
    assert_eq!(all(&out[0].1, HeaderName::ProxyAuthorization), creds2);
}

/// The value of `key=` in `msg` up to the next `;`, `>` or line end (a branch or tag drawn
/// at random), for comparing a message byte for byte with that value put back.
fn param_after<'a>(msg: &'a str, key: &str) -> &'a str {
    let at = msg.find(key).map_or(msg.len(), |i| i + key.len());
    let rest = &msg[at..];
    &rest[..rest.find([';', '>', '\r']).unwrap_or(rest.len())]
}

/// The INVITE and its 2xx's ACK as they go on the wire, byte for byte (only the random
/// branches and From tag substituted): what building them into one buffer must not change.
#[test]
fn the_invite_and_its_ack_byte_for_byte() {
    let mut ep = Endpoint::new(cfg(false));
    let t0 = Instant::now();
    ep.invite(t0, invite(None)).unwrap();
    let t = ep.poll_transmit().unwrap();
    assert!(ep.poll_transmit().is_none());
    let got = String::from_utf8(t.payload.to_vec()).unwrap();
    let branch = param_after(&got, "branch=z9hG4bK");
    let tag = param_after(&got, ";tag=");
    assert_eq!(branch.len(), 16, "{got}");
    assert!(
        tag.len() == 16
            && tag
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{got}"
    );
    assert_eq!(
        got,
        format!(
            "INVITE sip:+33612345678@10.0.0.2:5060;user=phone SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:+33100000000@example.fr>;tag={tag}\r\n\
             To: <sip:+33612345678@10.0.0.2:5060;user=phone>\r\n\
             Call-ID: call-1@10.0.0.1\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:crieur@10.0.0.1:5060>\r\n\
             User-Agent: crieur-test\r\n\
             Allow: INVITE, ACK\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: 5\r\n\r\n\
             v=0\r\n"
        )
    );
    let inv = wire::parse(&t.payload).unwrap();
    let ok = response(
        &inv,
        200,
        Some("b1"),
        "Contact: <sip:callee@10.0.0.3:5062>\r\n",
    );
    ep.handle_input(t0, a(TRUNK), &ok);
    let t = ep.poll_transmit().unwrap();
    let ack = String::from_utf8(t.payload.to_vec()).unwrap();
    let ack_branch = param_after(&ack, "branch=z9hG4bK");
    assert_eq!(
        ack,
        format!(
            "ACK sip:callee@10.0.0.3:5062 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK{ack_branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:+33100000000@example.fr>;tag={tag}\r\n\
             To: <sip:+33612345678@10.0.0.2:5060;user=phone>;tag=b1\r\n\
             Call-ID: call-1@10.0.0.1\r\n\
             CSeq: 1 ACK\r\n\
             Contact: <sip:crieur@10.0.0.1:5060>\r\n\
             User-Agent: crieur-test\r\n\
             Content-Length: 0\r\n\r\n"
        )
    );
    // A second call with the same Contact: the header is the same (made once, shared).
    let mut second = invite(None);
    second.call_id = "call-2@10.0.0.1".into();
    ep.invite(t0, second).unwrap();
    let t = ep.poll_transmit().unwrap();
    let got = String::from_utf8(t.payload.to_vec()).unwrap();
    assert!(
        got.contains("\r\nContact: <sip:crieur@10.0.0.1:5060>\r\n"),
        "{got}"
    );
    assert_ne!(param_after(&got, ";tag="), tag);
    // Another Contact: its own header, not the cached one.
    let mut third = invite(None);
    third.call_id = "call-3@10.0.0.1".into();
    third.contact = "sip:other@10.0.0.1:5060".into();
    ep.invite(t0, third).unwrap();
    let t = ep.poll_transmit().unwrap();
    let got = String::from_utf8(t.payload.to_vec()).unwrap();
    assert!(
        got.contains("\r\nContact: <sip:other@10.0.0.1:5060>\r\n"),
        "{got}"
    );
}
