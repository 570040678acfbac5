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
//!
//! Every send is a new request with its own nonce count (RFC 7616 §3.4: `nc` counts the
//! requests sent with that nonce): when a retry answers realm b, the answer to realm a kept
//! from the round before is computed again with its nonce's next count and a fresh `cnonce`
//! — re-sent byte for byte, a nonce-counting proxy would take it for a replay. The counts
//! are the call's ([`Counts`]): a later request of the call challenged with a nonce already
//! used (a BYE after the INVITE) goes on counting, never back to 1.

use sipx_sip::auth::{self as digest, Challenge};
use sipx_sip::{Header, HeaderName, Request, Response};

use crate::wire;

pub use sipx_sip::auth::{Algorithm, Credentials};

/// How many times one request is sent again with credentials (stale nonces included).
pub const MAX_ATTEMPTS: u8 = 4;

/// At most this many realms of one response are answered (the first ones, proxies' before
/// the end server's), and at most this many over a request's rounds: a path has a proxy or
/// two; a response with hundreds of challenges must not make a request of hundreds of
/// digests.
pub const MAX_REALMS: usize = 4;

/// At most this many nonces are counted per call ([`Counts`]); the least recently used is
/// forgotten first (a request answers at most [`MAX_ATTEMPTS`] × [`MAX_REALMS`] of them, the
/// ones it uses the latest).
pub const MAX_NONCES: usize = 32;

/// The nonce count of each nonce a call answered (RFC 7616 §3.4): kept by the call, shared by
/// all its requests, most recently used last.
#[derive(Debug, Default, Clone)]
pub struct Counts(Vec<(String, u32)>);

impl Counts {
    /// The next count of `nonce`: 1 for a nonce never answered.
    fn next(&mut self, nonce: &str) -> u32 {
        let n = match self.0.iter().position(|(x, _)| x == nonce) {
            Some(i) => self.0.remove(i).1.saturating_add(1),
            None => 1,
        };
        if self.0.len() >= MAX_NONCES {
            self.0.remove(0);
        }
        self.0.push((nonce.to_owned(), n));
        n
    }
}

/// What one request and its retries with credentials remember between challenges (a later
/// request starts afresh: only the retry of the same request can be refused).
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Each realm answered, its latest challenge (whether a proxy asked is in it: a proxy's
    /// realm and the end server's are apart, even of the same name, §22.3): every retry
    /// answers them all again, each with its nonce's next count.
    answered: Vec<Challenge>,
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
    /// and CSeq): an `Authorization` / `Proxy-Authorization` header per realm challenged now
    /// or answered on an earlier round of this request (each computed again with its nonce's
    /// next count in `counts`, the call's), to put on it in place of any earlier one of the
    /// same name and realm ([`replaces`]).
    pub fn answer(
        &mut self,
        counts: &mut Counts,
        req: &Request,
        resp: &Response,
        credentials: &Credentials,
        cnonce: &str,
    ) -> Result<Vec<Header>, Refusal> {
        let uri = req.uri.to_string();
        self.answer_to(
            counts,
            req.method.as_bytes(),
            &uri,
            resp,
            credentials,
            cnonce,
        )
    }

    /// [`State::answer`] for a request given by its method and Request-URI (as written in
    /// its request line): what the digest covers (RFC 2617 §3.2.2.2, qop=auth).
    pub fn answer_to(
        &mut self,
        counts: &mut Counts,
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
                match groups
                    .iter_mut()
                    .find(|g| g.first().is_some_and(|f| same_realm(f, &ch)))
                {
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
        if chosen
            .iter()
            .any(|ch| !ch.stale && self.answered.iter().any(|a| same_realm(a, ch)))
        {
            return Err(Refusal::Refused);
        }
        let new = chosen
            .iter()
            .filter(|ch| !self.answered.iter().any(|a| same_realm(a, ch)))
            .count();
        if self.answered.len() + new > MAX_REALMS {
            // More realms over the rounds than a path has proxies: not answered (the request
            // would carry a digest for each).
            return Err(Refusal::TooMany);
        }
        self.attempts += 1;
        for ch in chosen {
            match self.answered.iter_mut().find(|a| same_realm(a, &ch)) {
                Some(a) => *a = ch,
                None => self.answered.push(ch),
            }
        }
        let method = String::from_utf8_lossy(method);
        let mut out = Vec::with_capacity(self.answered.len());
        for ch in &self.answered {
            let nc = counts.next(&ch.nonce);
            let value = digest::respond(ch, credentials, &method, uri, nc, cnonce);
            out.push(
                wire::header(&ch.response_header(), value).map_err(|_| Refusal::Unanswerable)?,
            );
        }
        Ok(out)
    }
}

/// Whether two challenges are of one realm, from a proxy or from the end server alike.
fn same_realm(a: &Challenge, b: &Challenge) -> bool {
    a.from_proxy == b.from_proxy && a.realm == b.realm
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
        let mut counts = Counts::default();
        let mut st = State::default();
        let creds = Credentials::new("u", "p");
        let resp = challenge(
            401,
            "WWW-Authenticate",
            r#"Digest realm="r", nonce="n1", algorithm=MD5, qop="auth""#,
        );
        let h = st
            .answer(&mut counts, &invite(), &resp, &creds, "c")
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
            .answer(&mut counts, &invite(), &resp, &creds, "c")
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
        let mut counts = Counts::default();
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
        assert!(st
            .answer(&mut counts, &invite(), &first, &creds, "c")
            .is_ok());
        let h = st
            .answer(&mut counts, &invite(), &stale, &creds, "c")
            .unwrap_or_else(|e| panic!("{e:?}"))
            .remove(0);
        assert_eq!(param(&h, "nonce"), "n2");
        assert_eq!(param(&h, "nc"), "00000001");
        assert_eq!(
            st.answer(&mut counts, &invite(), &first, &creds, "c").err(),
            Some(Refusal::Refused)
        );
        // Stale forever: bounded.
        let mut st = State::default();
        let mut n = 0;
        while st
            .answer(&mut counts, &invite(), &stale, &creds, "c")
            .is_ok()
        {
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
        assert!(st
            .answer(&mut counts, &invite(), &proxy, &creds, "c")
            .is_ok());
        let hs = st
            .answer(&mut counts, &invite(), &first, &creds, "c")
            .unwrap_or_else(|e| panic!("{e:?}"));
        let names: Vec<_> = hs.iter().map(|h| h.name().clone()).collect();
        assert_eq!(
            names,
            [HeaderName::ProxyAuthorization, HeaderName::Authorization]
        );
        // Basic is never answered (it would send the password).
        let basic = challenge(401, "WWW-Authenticate", r#"Basic realm="r""#);
        assert_eq!(
            State::default()
                .answer(&mut counts, &invite(), &basic, &creds, "c")
                .err(),
            Some(Refusal::Unanswerable)
        );
    }

    /// A response challenging hundreds of realms gets the first MAX_REALMS answered.
    #[test]
    fn at_most_max_realms_are_answered() {
        let mut counts = Counts::default();
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
            .answer(&mut counts, &invite(), &resp, &creds, "c")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(hs.len(), MAX_REALMS);
        assert_eq!(param(&hs[0], "realm"), "r0");
    }

    /// Two proxies, challenging one round each: the second round answers both, proxy a's
    /// again with its nonce's next count and the new cnonce (not the first round's bytes,
    /// a replay to a nonce-counting proxy); a later request of the call challenged with a
    /// nonce already used goes on counting.
    #[test]
    fn each_round_answers_every_realm_with_the_next_count() {
        let mut counts = Counts::default();
        let creds = Credentials::new("u", "p");
        let a = challenge(
            407,
            "Proxy-Authenticate",
            r#"Digest realm="a", nonce="na", qop="auth""#,
        );
        let b = challenge(
            407,
            "Proxy-Authenticate",
            r#"Digest realm="b", nonce="nb", qop="auth""#,
        );
        let mut st = State::default();
        let first = st
            .answer(&mut counts, &invite(), &a, &creds, "c1")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(first.len(), 1);
        assert_eq!(param(&first[0], "nc"), "00000001");
        let second = st
            .answer(&mut counts, &invite(), &b, &creds, "c2")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(second.len(), 2, "{second:?}");
        assert_eq!(param(&second[0], "realm"), "a");
        assert_eq!(param(&second[0], "nc"), "00000002");
        assert_eq!(param(&second[0], "cnonce"), "c2");
        assert_ne!(param(&second[0], "response"), param(&first[0], "response"));
        assert!(replaces(&second[0], &first[0]));
        assert_eq!(param(&second[1], "realm"), "b");
        assert_eq!(param(&second[1], "nc"), "00000001");
        // A new request (a BYE) of the call, challenged with proxy a's nonce again.
        let bye = State::default()
            .answer(&mut counts, &invite(), &a, &creds, "c3")
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(param(&bye[0], "nc"), "00000003");
        // Realms over the rounds are bounded as those of one response are: two rounds of
        // two realms, then a fifth realm is not answered (the attempts are not used up).
        let mut st = State::default();
        for round in 0..2 {
            let mut r = challenge(
                407,
                "Proxy-Authenticate",
                &format!(r#"Digest realm="r{round}", nonce="n{round}""#),
            );
            r.headers.push(
                wire::header(
                    &HeaderName::ProxyAuthenticate,
                    format!(r#"Digest realm="s{round}", nonce="m{round}""#),
                )
                .unwrap_or_else(|e| panic!("{e}")),
            );
            assert!(st.answer(&mut counts, &invite(), &r, &creds, "c").is_ok());
        }
        let r = challenge(
            407,
            "Proxy-Authenticate",
            r#"Digest realm="one-more", nonce="x""#,
        );
        assert_eq!(
            st.answer(&mut counts, &invite(), &r, &creds, "c").err(),
            Some(Refusal::TooMany)
        );
    }
}
