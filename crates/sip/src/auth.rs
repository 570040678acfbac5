//! Digest authentication of our requests (RFC 3261 §22.2–22.4, RFC 7616, RFC 8760): the
//! challenge of a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`) is answered on the
//! request sent again, with MD5 or SHA-256 (the strongest offered), `qop=auth` when offered
//! (a fresh `cnonce`, the nonce count counted per nonce).
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

/// What one request and its retries with credentials remember between challenges (a later
/// request starts afresh: only the retry of the same request can be refused).
#[derive(Debug, Default, Clone)]
pub struct State {
    /// Realms answered, with whether the nonce answered was stale-refreshed since.
    answered: Vec<String>,
    /// The last nonce answered and its count.
    nonce: Option<(String, u32)>,
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
    /// The challenge of `resp` answered on `req` (sent again by the caller with a new branch
    /// and CSeq): the `Authorization` / `Proxy-Authorization` header to put on it, replacing
    /// any earlier one of the same name.
    pub fn answer(
        &mut self,
        req: &Request,
        resp: &Response,
        credentials: &Credentials,
        cnonce: &str,
    ) -> Result<Header, Refusal> {
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
    ) -> Result<Header, Refusal> {
        let from_proxy = resp.status.code() == 407;
        let name = if from_proxy {
            HeaderName::ProxyAuthenticate
        } else {
            HeaderName::WwwAuthenticate
        };
        let challenges: Vec<Challenge> = resp
            .headers
            .get_all(&name)
            .filter_map(|h| Challenge::parse(&h.value(), from_proxy))
            .collect();
        let Some(ch) = digest::strongest(challenges) else {
            return Err(Refusal::Unanswerable);
        };
        if self.attempts >= MAX_ATTEMPTS {
            return Err(Refusal::TooMany);
        }
        if self.answered.contains(&ch.realm) && !ch.stale {
            return Err(Refusal::Refused);
        }
        self.attempts += 1;
        if !self.answered.contains(&ch.realm) {
            self.answered.push(ch.realm.clone());
        }
        let nc = match &mut self.nonce {
            Some((n, count)) if *n == ch.nonce => {
                *count += 1;
                *count
            }
            _ => {
                self.nonce = Some((ch.nonce.clone(), 1));
                1
            }
        };
        let value = digest::respond(
            &ch,
            credentials,
            &String::from_utf8_lossy(method),
            uri,
            nc,
            cnonce,
        );
        wire::header(&ch.response_header(), value).map_err(|_| Refusal::Unanswerable)
    }
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
            .unwrap_or_else(|e| panic!("{e:?}"));
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
            .unwrap_or_else(|e| panic!("{e:?}"));
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
            .unwrap_or_else(|e| panic!("{e:?}"));
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
        // Basic is never answered (it would send the password).
        let basic = challenge(401, "WWW-Authenticate", r#"Basic realm="r""#);
        assert_eq!(
            State::default()
                .answer(&invite(), &basic, &creds, "c")
                .err(),
            Some(Refusal::Unanswerable)
        );
    }
}
