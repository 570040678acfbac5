//! Digest authentication of our requests (RFC 3261 §22.2–22.4, RFC 7616, RFC 8760): the
//! challenge of a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`) is answered on the
//! request sent again, with MD5 or SHA-256 (the strongest offered), `qop=auth` when offered
//! (a fresh `cnonce`, the nonce count counted per nonce).
//!
//! Every challenge of the response is answered (RFC 3261 §22.3: one `Authorization` /
//! `Proxy-Authorization` per realm challenged, e.g. two proxies on the path each asking in
//! one 407; our one set of credentials is the trunk's, offered to each realm), the strongest
//! algorithm offered per realm.
//!
//! When to stop: credentials are sent once per challenge. A second challenge for a realm we
//! already answered means they were refused — unless it says `stale=true` (RFC 7616 §3.3:
//! the nonce expired, the password is good), which is answered again with the new nonce.

use sipx_sip::auth::{self as digest, Challenge};
use sipx_sip::{Header, HeaderName, Request, Response};

use crate::wire;

pub use sipx_sip::auth::{Algorithm, Credentials};

/// How many times one request is sent again with credentials (stale nonces included).
pub const MAX_ATTEMPTS: u8 = 4;

/// At most this many realms of one response are answered (the first ones, proxies' before
/// the end server's): a path has a proxy or two; a response with hundreds of challenges
/// must not make a request of hundreds of digests.
pub const MAX_REALMS: usize = 4;

/// What one request and its retries with credentials remember between challenges (a later
/// request starts afresh: only the retry of the same request can be refused).
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Realms answered, each with whether a proxy asked (`Proxy-Authenticate`): a proxy's
    /// realm and the end server's are apart, even of the same name (§22.3).
    answered: Vec<(bool, String)>,
    /// The nonces answered and each one's count (one per realm challenged).
    nonces: Vec<(String, u32)>,
    attempts: u8,
}

/// Why a challenge is not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No challenge we can answer (no credentials, no Digest, an unknown algorithm).
    Unanswerable,
    /// We answered this realm already and the nonce was not stale: the credentials are wrong.
    Refused,
    /// Too many rounds.
    TooMany,
}

impl State {
    /// The challenges of `resp` answered on `req` (sent again by the caller with a new branch
    /// and CSeq): an `Authorization` / `Proxy-Authorization` header per realm challenged, to
    /// put on it in place of any earlier one of the same name and realm ([`replaces`]).
    pub fn answer(
        &mut self,
        req: &Request,
        resp: &Response,
        credentials: &Credentials,
        cnonce: &str,
    ) -> Result<Vec<Header>, Refusal> {
        let uri = req.uri.to_string();
        self.answer_to(req.method.as_bytes(), &uri, resp, credentials, cnonce)
    }

    /// [`State::answer`] for a request given by its method and Request-URI (as written in
    /// its request line): what the digest covers (RFC 2617 §3.2.2.2, qop=auth).
    pub fn answer_to(
        &mut self,
        method: &[u8],
        uri: &str,
        resp: &Response,
        credentials: &Credentials,
        cnonce: &str,
    ) -> Result<Vec<Header>, Refusal> {
        // §22.3: each WWW-Authenticate and Proxy-Authenticate of the response (a proxy may
        // pass a 401's challenge up in its 407), grouped by header and realm, the strongest
        // of each group answered.
        let mut groups: Vec<Vec<Challenge>> = Vec::new();
        for (name, proxy) in [
            (HeaderName::ProxyAuthenticate, true),
            (HeaderName::WwwAuthenticate, false),
        ] {
            for ch in resp
                .headers
                .get_all(&name)
                .filter_map(|h| Challenge::parse(&h.value(), proxy))
            {
                match groups.iter_mut().find(|g| {
                    g.first()
                        .is_some_and(|f| f.from_proxy == proxy && f.realm == ch.realm)
                }) {
                    Some(g) => g.push(ch),
                    None => groups.push(vec![ch]),
                }
            }
        }
        let chosen: Vec<Challenge> = groups
            .into_iter()
            .filter_map(digest::strongest)
            .take(MAX_REALMS)
            .collect();
        if chosen.is_empty() {
            return Err(Refusal::Unanswerable);
        }
        if self.attempts >= MAX_ATTEMPTS {
            return Err(Refusal::TooMany);
        }
        if chosen.iter().any(|ch| self.was_answered(ch) && !ch.stale) {
            return Err(Refusal::Refused);
        }
        self.attempts += 1;
        let method = String::from_utf8_lossy(method);
        let mut out = Vec::with_capacity(chosen.len());
        for ch in &chosen {
            if !self.was_answered(ch) {
                self.answered.push((ch.from_proxy, ch.realm.clone()));
            }
            let nc = match self.nonces.iter_mut().find(|(n, _)| *n == ch.nonce) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    // One nonce per realm is current; older ones are never answered again.
                    if self.nonces.len() >= MAX_ATTEMPTS as usize * 2 {
                        self.nonces.remove(0);
                    }
                    self.nonces.push((ch.nonce.clone(), 1));
                    1
                }
            };
            let value = digest::respond(ch, credentials, &method, uri, nc, cnonce);
            out.push(
                wire::header(&ch.response_header(), value).map_err(|_| Refusal::Unanswerable)?,
            );
        }
        Ok(out)
    }

    /// Whether `ch`'s realm, from a proxy or from the end server as `ch` is, was answered.
    fn was_answered(&self, ch: &Challenge) -> bool {
        self.answered
            .iter()
            .any(|(p, r)| *p == ch.from_proxy && *r == ch.realm)
    }
}

/// The realm an `Authorization` / `Proxy-Authorization` header answers (its `realm`
/// parameter; the digest parameters parse as a challenge's do).
fn realm_of(h: &Header) -> Option<String> {
    Challenge::parse(&h.value(), false).map(|c| c.realm)
}

/// Whether the answer `new` takes the place of the credentials header `old` on a request
/// sent again: the same header name and realm (§22.3: an answer to another realm — another
/// proxy on the path — stays).
pub fn replaces(new: &Header, old: &Header) -> bool {
    new.name() == old.name() && realm_of(new) == realm_of(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sipx_sip::Message;

    fn parse(s: &str) -> Message {
        wire::parse(s.replace('\n', "\r\n").as_bytes()).unwrap_or_else(|e| panic!("{e}\n{s}"))
    }

    fn invite() -> Request {
        match parse(
            "INVITE sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\nFrom: <sip:a@x>;tag=1\nTo: <sip:bob@example.com>\nCall-ID: c1\nCSeq: 1 INVITE\nMax-Forwards: 70\nContent-Length: 0\n\n",
        ) {
            Message::Request(r) => r,
            Message::Response(_) => unreachable!(),
        }
    }

    fn challenge(code: u16, header: &str, value: &str) -> Response {
        let reason = if code == 401 {
            "Unauthorized"
        } else {
            "Proxy Authentication Required"
        };
        match parse(&format!(
            "SIP/2.0 {code} {reason}\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\nFrom: <sip:a@x>;tag=1\nTo: <sip:bob@example.com>;tag=2\nCall-ID: c1\nCSeq: 1 INVITE\n{header}: {value}\nContent-Length: 0\n\n"
        )) {
            Message::Response(r) => r,
            Message::Request(_) => unreachable!(),
        }
    }

    fn param(h: &Header, name: &str) -> String {
        let v = String::from_utf8_lossy(&h.value()).into_owned();
        v.split(',')
            .filter_map(|p| p.trim().trim_start_matches("Digest ").split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    }

    /// RFC 7616 §3.9.1's worked example (HTTP, but the digest is the same computation): the
    /// SHA-256 and MD5 responses for Mufasa / "Circle of Life", checked against the values
    /// printed in the RFC.
    #[test]
    fn rfc7616_vectors_sha256_and_md5() {
        let creds = Credentials::new("Mufasa", "Circle of Life");
        for (alg, expected) in [
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ] {
            let ch = Challenge::parse(
                format!(
                    r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={alg}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
                )
                .as_bytes(),
                false,
            )
            .unwrap_or_else(|| panic!("{alg} challenge"));
            let v = digest::respond(
                &ch,
                &creds,
                "GET",
                "/dir/index.html",
                1,
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            );
            assert!(
                v.contains(&format!("response=\"{expected}\"")),
                "{alg}: {v}"
            );
        }
    }

    #[test]
    fn answers_401_and_407_in_the_right_header_with_the_strongest_algorithm() {
        let mut st = State::default();
        let creds = Credentials::new("u", "p");
        let resp = challenge(
            401,
            "WWW-Authenticate",
            r#"Digest realm="r", nonce="n1", algorithm=MD5, qop="auth""#,
        );
        let h = st
            .answer(&invite(), &resp, &creds, "c")
            .unwrap_or_else(|e| panic!("{e:?}"))
            .remove(0);
        assert_eq!(h.name(), &HeaderName::Authorization);
        assert_eq!(param(&h, "uri"), "sip:bob@example.com");
        assert_eq!(param(&h, "nc"), "00000001");
        assert_eq!(param(&h, "algorithm"), "MD5");

        let mut st = State::default();
        let mut resp = challenge(
            407,
            "Proxy-Authenticate",
            r#"Digest realm="r", nonce="n1", algorithm=MD5"#,
        );
        resp.headers.push(
            wire::header(
                &HeaderName::ProxyAuthenticate,
                Bytes::from_static(br#"Digest realm="r", nonce="n1", algorithm=SHA-256"#),
            )
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let h = st
            .answer(&invite(), &resp, &creds, "c")
            .unwrap_or_else(|e| panic!("{e:?}"))
            .remove(0);
        assert_eq!(h.name(), &HeaderName::ProxyAuthorization);
        assert_eq!(param(&h, "algorithm"), "SHA-256");
        // No qop offered: RFC 2069's form, no nc/cnonce.
        assert_eq!(param(&h, "nc"), "");
    }

    /// RFC 3261 §22.2 / RFC 7616 §3.3: a second challenge for an answered realm means the
    /// credentials are refused, unless `stale=true` (then the new nonce is answered).
    #[test]
    fn stale_nonce_is_answered_again_a_plain_rechallenge_is_not() {
        let creds = Credentials::new("u", "p");
        let first = challenge(
            401,
            "WWW-Authenticate",
            r#"Digest realm="r", nonce="n1", qop="auth""#,
        );
        let stale = challenge(
            401,
            "WWW-Authenticate",
            r#"Digest realm="r", nonce="n2", qop="auth", stale=true"#,
        );
        let mut st = State::default();
        assert!(st.answer(&invite(), &first, &creds, "c").is_ok());
        let h = st
            .answer(&invite(), &stale, &creds, "c")
            .unwrap_or_else(|e| panic!("{e:?}"))
            .remove(0);
        assert_eq!(param(&h, "nonce"), "n2");
        assert_eq!(param(&h, "nc"), "00000001");
        assert_eq!(
            st.answer(&invite(), &first, &creds, "c").err(),
            Some(Refusal::Refused)
        );
        // Stale forever: bounded.
        let mut st = State::default();
        let mut n = 0;
        while st.answer(&invite(), &stale, &creds, "c").is_ok() {
            n += 1;
        }
        assert_eq!(n, MAX_ATTEMPTS);
        // The same realm asked by a proxy (407) then by the end server (401): two realms,
        // the second challenge answered, not taken for a refusal.
        let mut st = State::default();
        let proxy = challenge(
            407,
            "Proxy-Authenticate",
            r#"Digest realm="r", nonce="p1", qop="auth""#,
        );
        assert!(st.answer(&invite(), &proxy, &creds, "c").is_ok());
        let h = st
            .answer(&invite(), &first, &creds, "c")
            .unwrap_or_else(|e| panic!("{e:?}"))
            .remove(0);
        assert_eq!(h.name(), &HeaderName::Authorization);
        // Basic is never answered (it would send the password).
        let basic = challenge(401, "WWW-Authenticate", r#"Basic realm="r""#);
        assert_eq!(
            State::default()
                .answer(&invite(), &basic, &creds, "c")
                .err(),
            Some(Refusal::Unanswerable)
        );
    }

    /// A response challenging hundreds of realms gets the first MAX_REALMS answered.
    #[test]
    fn at_most_max_realms_are_answered() {
        let creds = Credentials::new("u", "p");
        let mut s = String::from("SIP/2.0 407 Proxy Authentication Required\n");
        for i in 0..200 {
            s += &format!("Proxy-Authenticate: Digest realm=\"r{i}\", nonce=\"n{i}\"\n");
        }
        s += "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\nFrom: <sip:a@b>;tag=1\nTo: <sip:c@d>;tag=2\nCall-ID: c\nCSeq: 1 INVITE\nContent-Length: 0\n\n";
        let Message::Response(resp) = parse(&s) else {
            panic!("not a response")
        };
        let hs = State::default()
            .answer(&invite(), &resp, &creds, "c")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(hs.len(), MAX_REALMS);
        assert_eq!(param(&hs[0], "realm"), "r0");
    }
}
