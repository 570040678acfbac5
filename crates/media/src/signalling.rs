//! What our INVITE says about us, and one correction to what rsipstack sends: the headers a
//! trunk checks (`Allow`, `Supported`, `P-Asserted-Identity`), `user=phone` on telephone
//! numbers, and the Via of the ACK to a non-2xx final response.

// The I/O edge (the ACK-Via memory ages its entries by the clock).
#![allow(clippy::disallowed_methods)]

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rsipstack::sip::{Header, Method, SipMessage};
use rsipstack::transaction::endpoint::MessageInspector;
use rsipstack::transport::SipAddr;

/// The methods we handle (RFC 3261 §20.5): INVITE (we place calls; one outside a dialog
/// gets 603; a re-INVITE in the dialog is answered), ACK, CANCEL, BYE, OPTIONS (200), INFO
/// (keys) and UPDATE (RFC 3311: a new offer or a session refresh). Any other method outside a
/// dialog gets 405 with `Allow` (RFC 3261 §8.2.1).
pub const ALLOWED: [Method; 7] = [
    Method::Invite,
    Method::Ack,
    Method::Cancel,
    Method::Bye,
    Method::Options,
    Method::Info,
    Method::Update,
];

/// The `Allow` header's value: [`ALLOWED`], comma-separated.
pub fn allow() -> String {
    ALLOWED
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What we can do, for a 200 to OPTIONS (RFC 3261 §11.2: `Allow`, `Accept`, `Supported`)
/// and a 405 (`Allow`, §8.2.1).
pub fn capabilities() -> Vec<Header> {
    let mut h = vec![
        Header::Allow(allow().into()),
        Header::Accept("application/sdp".into()),
    ];
    if !SUPPORTED.is_empty() {
        h.push(Header::Supported(SUPPORTED.join(", ").into()));
    }
    h
}

/// The option tags we support (RFC 3261 §20.37): `timer` (RFC 4028 session timers: we refresh
/// when made the refresher, and end a session the far end stops refreshing). `100rel` is not.
pub const SUPPORTED: &[&str] = &["timer"];

/// Whether `user` is a telephone-subscriber (RFC 3966 §3): a global number (`+` and digits,
/// visual separators `-` `.` allowed) or a local one with its `phone-context`.
pub fn is_telephone_number(user: &str) -> bool {
    let digits = |s: &str, extra: &str| {
        s.chars().any(|c| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_digit() || "-.".contains(c) || extra.contains(c))
    };
    match user.split_once(";phone-context=") {
        Some((local, ctx)) => !ctx.is_empty() && digits(local, "*#ABCDabcd"),
        None => user.strip_prefix('+').is_some_and(|g| digits(g, "")),
    }
}

/// `sip:<user>@<host>`, with `;user=phone` when the user part is a telephone number (RFC 3261
/// §19.1.1: trunks route `sip:+33…@host;user=phone` as a number, not as a user name).
pub fn sip_uri(user: &str, host: &str) -> String {
    if is_telephone_number(user) {
        format!("sip:{user}@{host};user=phone")
    } else {
        format!("sip:{user}@{host}")
    }
}

/// A `P-Asserted-Identity` value (RFC 3325 §9.1) from a configured `sip:`, `sips:` or `tel:`
/// URI: a SIP URI whose user part is a telephone number gets `;user=phone` unless it names
/// a `user` parameter already. `None` when it is not such a URI.
pub fn p_asserted_identity(uri: &str) -> Option<String> {
    let uri = uri.trim();
    let (scheme, rest) = uri.split_once(':')?;
    let valid = |s: &str| !s.is_empty() && !s.contains(['<', '>', '"', ',', ' ']);
    if !valid(rest) {
        return None;
    }
    match scheme.to_ascii_lowercase().as_str() {
        "tel" => Some(format!("<{uri}>")),
        "sip" | "sips" => {
            let (user, host) = rest.split_once('@')?;
            if user.is_empty() || host.is_empty() {
                return None;
            }
            let has_user_param = host
                .split(';')
                .skip(1)
                .any(|p| p.to_ascii_lowercase().starts_with("user="));
            if is_telephone_number(user) && !has_user_param {
                Some(format!("<{uri};user=phone>"))
            } else {
                Some(format!("<{uri}>"))
            }
        }
        _ => None,
    }
}

/// The headers our INVITE carries beyond what rsipstack adds.
pub fn invite_headers(p_asserted_identity: Option<&str>) -> Vec<Header> {
    let mut h = vec![Header::Allow(allow().into())];
    if !SUPPORTED.is_empty() {
        h.push(Header::Supported(SUPPORTED.join(", ").into()));
    }
    if let Some(pai) = p_asserted_identity {
        h.push(Header::PAssertedIdentity(pai.into()));
    }
    h
}

/// How long an INVITE's Via is remembered: longer than any INVITE transaction we run (the
/// campaign's ring timeout is at most 300 s, then 32 s for the final response after CANCEL,
/// then timer D's 32 s of ACK retransmissions).
const INVITE_VIA_TTL: Duration = Duration::from_secs(600);

/// Puts the INVITE's own top Via on the ACK of a non-2xx final response.
///
/// RFC 3261 §17.1.1.3: that ACK "MUST contain a single Via header field, and this MUST be
/// equal to the top Via header field of the original request". rsipstack 0.7.14's
/// `make_ack` builds it from the *response's* headers, so it carries the Via as the trunk
/// echoed it, with the `received=` and `rport=<port>` it added (RFC 3581) — a trunk that
/// matches the ACK to its transaction byte for byte, or an SBC that checks it, drops it and
/// retransmits its final response until timer H. The stack offers no option for this, so it
/// is corrected here, in the one hook it has for outgoing messages: the Via of each INVITE
/// is remembered by branch, and an ACK with the same branch (only the ACK of a non-2xx
/// shares its INVITE's branch; a 2xx's ACK has its own) gets that Via back, alone.
#[derive(Default)]
pub struct AckViaFix {
    invites: Mutex<Vias>,
}

#[derive(Default)]
struct Vias {
    by_branch: HashMap<String, Header>,
    /// Insertion order, for expiry.
    order: VecDeque<(Instant, String)>,
}

/// The `branch` parameter of a Via value's first entry.
fn branch(via: &str) -> Option<String> {
    let first = via.split(',').next()?;
    first.split(';').skip(1).find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("branch")
            .then(|| value.trim().to_owned())
    })
}

impl AckViaFix {
    fn remember(&self, via: &Header, now: Instant) {
        let Header::Via(v) = via else { return };
        let Some(b) = branch(v.value()) else { return };
        let Ok(mut m) = self.invites.lock() else {
            return;
        };
        while m
            .order
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > INVITE_VIA_TTL)
        {
            if let Some((_, old)) = m.order.pop_front() {
                m.by_branch.remove(&old);
            }
        }
        // INVITE retransmissions pass here too: remembered once.
        if m.by_branch.insert(b.clone(), via.clone()).is_none() {
            m.order.push_back((now, b));
        }
    }

    fn invite_via(&self, ack_via: &Header) -> Option<Header> {
        let Header::Via(v) = ack_via else { return None };
        let b = branch(v.value())?;
        self.invites.lock().ok()?.by_branch.get(&b).cloned()
    }
}

impl MessageInspector for AckViaFix {
    fn before_send(&self, msg: SipMessage, _dest: Option<&SipAddr>) -> SipMessage {
        let SipMessage::Request(mut req) = msg else {
            return msg;
        };
        let top = req
            .headers
            .iter()
            .find(|h| matches!(h, Header::Via(_)))
            .cloned();
        match (req.method, top) {
            (Method::Invite, Some(via)) => self.remember(&via, Instant::now()),
            (Method::Ack, Some(via)) => {
                if let Some(original) = self.invite_via(&via) {
                    // Exactly one Via: the INVITE's, where the first one was.
                    let mut first = true;
                    req.headers.0.retain_mut(|h| {
                        if !matches!(h, Header::Via(_)) {
                            return true;
                        }
                        let keep = first;
                        first = false;
                        if keep {
                            *h = original.clone();
                        }
                        keep
                    });
                }
            }
            _ => {}
        }
        SipMessage::Request(req)
    }

    fn after_received(&self, msg: SipMessage, _from: Option<&SipAddr>) -> SipMessage {
        msg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telephone_numbers_get_user_phone() {
        assert!(is_telephone_number("+33612345678"));
        assert!(is_telephone_number("+1-202-555-0100"));
        assert!(is_telephone_number("1234;phone-context=example.com"));
        assert!(!is_telephone_number("0612345678")); // local, without its context
        assert!(!is_telephone_number("alice"));
        assert!(!is_telephone_number("+"));
        assert!(!is_telephone_number("+33a"));
        assert_eq!(
            sip_uri("+33612345678", "trunk.example:5060"),
            "sip:+33612345678@trunk.example:5060;user=phone"
        );
        assert_eq!(sip_uri("alice", "h"), "sip:alice@h");
    }

    #[test]
    fn p_asserted_identity_values() {
        assert_eq!(
            p_asserted_identity("sip:+33100000000@example.fr").as_deref(),
            Some("<sip:+33100000000@example.fr;user=phone>")
        );
        assert_eq!(
            p_asserted_identity("sip:+33100000000@example.fr;user=phone").as_deref(),
            Some("<sip:+33100000000@example.fr;user=phone>")
        );
        assert_eq!(
            p_asserted_identity("tel:+33100000000").as_deref(),
            Some("<tel:+33100000000>")
        );
        assert_eq!(
            p_asserted_identity("sip:ops@example.fr").as_deref(),
            Some("<sip:ops@example.fr>")
        );
        for bad in [
            "",
            "+33100000000",
            "http://x",
            "sip:@x",
            "sip:a@",
            "sip:a b@x",
        ] {
            assert_eq!(p_asserted_identity(bad), None, "{bad}");
        }
    }

    fn request(method: Method, vias: &[&str]) -> rsipstack::sip::Request {
        let mut headers: Vec<Header> = vias.iter().map(|v| Header::Via((*v).into())).collect();
        headers.push(Header::CallId("c@h".into()));
        rsipstack::sip::Request {
            method,
            uri: rsipstack::sip::Uri::try_from("sip:+33612345678@127.0.0.1:5060")
                .unwrap_or_else(|e| panic!("{e}")),
            headers: headers.into(),
            version: rsipstack::sip::Version::V2,
            body: vec![],
        }
    }

    fn vias(m: &SipMessage) -> Vec<String> {
        match m {
            SipMessage::Request(r) => r
                .headers
                .iter()
                .filter_map(|h| match h {
                    Header::Via(v) => Some(v.value().to_owned()),
                    _ => None,
                })
                .collect(),
            SipMessage::Response(_) => vec![],
        }
    }

    #[test]
    fn the_ack_of_a_non_2xx_carries_the_invite_via_exactly() {
        let fix = AckViaFix::default();
        let invite = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc;rport";
        fix.before_send(request(Method::Invite, &[invite]).into(), None);
        // As rsipstack builds it from a 486: the trunk's received/rport values.
        let ack = request(
            Method::Ack,
            &[
                "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc;rport=5070;received=10.0.0.1",
                "SIP/2.0/UDP stray;branch=z9hG4bKzzz",
            ],
        );
        let out = fix.before_send(ack.into(), None);
        assert_eq!(vias(&out), vec![invite.to_owned()]);
        // A 2xx's ACK has its own branch: left alone.
        let ack2xx = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnew";
        let out = fix.before_send(request(Method::Ack, &[ack2xx]).into(), None);
        assert_eq!(vias(&out), vec![ack2xx.to_owned()]);
        // Other requests are untouched.
        let bye = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc;rport=1";
        let out = fix.before_send(request(Method::Bye, &[bye]).into(), None);
        assert_eq!(vias(&out), vec![bye.to_owned()]);
    }

    #[test]
    fn remembered_vias_expire() {
        let fix = AckViaFix::default();
        let t0 = Instant::now();
        let via = |b: &str| Header::Via(format!("SIP/2.0/UDP h:1;branch={b}").into());
        fix.remember(&via("old"), t0);
        fix.remember(&via("old"), t0); // a retransmission
        fix.remember(&via("new"), t0 + INVITE_VIA_TTL + Duration::from_secs(1));
        let m = fix.invites.lock().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.by_branch.len(), 1);
        assert_eq!(m.order.len(), 1);
        assert!(m.by_branch.contains_key("new"));
    }
}
