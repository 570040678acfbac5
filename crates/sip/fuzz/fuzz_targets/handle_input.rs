//! The parser entry: one datagram into an endpoint (`Endpoint::handle_input`), as a UAS with
//! nothing going on, and as a UAC with a call ringing (so responses reach the call leg),
//! then every timer fired. Nothing may panic or hang.
#![no_main]

use std::time::{Duration, Instant};

use crieur_sip::{Config, Endpoint, Invite, Timers, Transport};
use libfuzzer_sys::fuzz_target;

fn endpoint(accept_incoming: bool) -> Endpoint {
    Endpoint::new(Config {
        local: "192.0.2.200:5060".parse().unwrap_or_else(|_| unreachable!()),
        transport: Transport::Udp,
        user_agent: "fuzz".into(),
        timers: Timers::default(),
        capabilities: vec![("Allow".into(), "INVITE, ACK, BYE".into())],
        accept_incoming,
    })
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let from = "192.0.2.1:5060".parse().unwrap_or_else(|_| unreachable!());
    let mut uas = endpoint(true);
    uas.handle_input(now, from, data);
    let mut uac = endpoint(false);
    let _ = uac.invite(
        now,
        Invite {
            call_id: "fuzz@192.0.2.200".into(),
            request_uri: "sip:+33100000000@192.0.2.1".into(),
            from: "sip:a@192.0.2.200".into(),
            to: "sip:+33100000000@192.0.2.1".into(),
            contact: "sip:a@192.0.2.200:5060".into(),
            destination: from,
            alternates: Vec::new(),
            headers: vec![],
            content_type: None,
            body: vec![],
            credentials: Some(crieur_sip::auth::Credentials::new("u", "p")),
        },
    );
    uac.handle_input(now, from, data);
    uac.handle_input(now, from, data);
    for ep in [&mut uas, &mut uac] {
        ep.handle_timeout(now + Duration::from_secs(64));
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
});
