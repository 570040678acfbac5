//! Header helpers shared by the call leg and digest auth: reading the few headers the core
//! acts on, building headers from the caller's values, and parsing a datagram without ever
//! panicking (malformed input is an `Err`, dropped and logged by the endpoint).

use bytes::Bytes;
use sipx_sip::headers::{Address, CSeq, Contact, RecordRoute, Via};
use sipx_sip::{Header, HeaderName, Headers, Limits, Message, Method, Uri};

use crate::Error;

/// Parses one datagram (RFC 3261 §18.3: one message per UDP datagram; `Content-Length`
/// checked). Never panics, whatever the input; the error says what is wrong.
pub fn parse(datagram: &[u8]) -> Result<Message, String> {
    sipx_sip::parse_datagram(Bytes::copy_from_slice(datagram), &Limits::datagram())
        .map_err(|e| e.to_string())
}

/// A message's bytes: serialised into `scratch` (cleared first, its capacity kept from one
/// message to the next), then copied out in one allocation of the exact size — where
/// `Message::to_bytes` grows a new vector from empty for each message (some six
/// reallocations for an INVITE).
pub fn encode(scratch: &mut Vec<u8>, m: &Message) -> Bytes {
    scratch.clear();
    m.write_to(scratch);
    Bytes::copy_from_slice(scratch)
}

/// Whether a byte would end a header line early (CR, LF) or truncate it (NUL): what
/// `Header::build` refuses in a value.
pub fn breaks_line(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | 0)
}

/// Appends the header line `name: value` (CRLF-terminated) to `out`; false, with nothing
/// written, if `value` holds a byte that would break the message ([`breaks_line`]).
pub fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) -> bool {
    if value.iter().copied().any(breaks_line) {
        return false;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    true
}

/// A header's (first) value as text, if present and UTF-8.
pub fn value(h: &Headers, name: &HeaderName) -> Option<String> {
    let v = h.value(name)?;
    std::str::from_utf8(&v).ok().map(|s| s.trim().to_owned())
}

/// A header name by its text (compact forms understood).
pub fn name(n: &str) -> HeaderName {
    HeaderName::parse(&Bytes::copy_from_slice(n.as_bytes()))
}

/// A header from the caller's name and value: a value that would break the message (line
/// breaks, NUL) is refused.
pub fn header(n: &HeaderName, v: impl Into<Bytes>) -> Result<Header, Error> {
    Header::build(n.clone(), v).map_err(|e| Error::BadHeader {
        name: String::from_utf8_lossy(n.canonical()).into_owned(),
        why: e.to_string(),
    })
}

/// A URI from text.
pub fn uri(s: &str) -> Result<Uri, Error> {
    Uri::parse(Bytes::copy_from_slice(s.as_bytes())).map_err(|e| Error::BadUri {
        uri: s.to_owned(),
        why: e.to_string(),
    })
}

/// The `CSeq` header's number and method.
pub fn cseq(h: &Headers) -> Option<(u32, Method)> {
    let c: CSeq = h.typed()?.ok()?;
    Some((c.sequence, c.method))
}

/// The `tag` parameter of a `From` or `To` header.
pub fn tag(h: &Headers, which: &HeaderName) -> Option<String> {
    let v = h.value(which)?;
    let t = tag_param(&v)?;
    std::str::from_utf8(t).ok().map(str::to_owned)
}

/// The `tag` parameter of a `From`/`To` value (RFC 3261 §20.20, §20.39), borrowed: the
/// header's parameters follow the `<…>` of a name-addr (a quoted display name skipped), or
/// the first `;` of a bare addr-spec. Read in place, where `Address::parse` built the whole
/// address (URI included) for it: four allocations per response (BENCHMARKS.md S1 step 18).
/// `None` if there is no tag, or the value's brackets or quotes are not closed.
pub fn tag_param(v: &[u8]) -> Option<&[u8]> {
    let mut i = 0;
    let mut params = None;
    while let Some(&b) = v.get(i) {
        match b {
            b'"' => {
                i += 1;
                loop {
                    match v.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'<' => {
                let close = v.get(i..)?.iter().position(|&c| c == b'>')?;
                params = Some(i + close + 1);
                break;
            }
            b';' => {
                params = Some(i);
                break;
            }
            _ => i += 1,
        }
    }
    let rest = v.get(params?..)?;
    // The first `tag` parameter decides, as in the address parser (a valueless one: none).
    let p = rest.split(|&b| b == b';').skip(1).find(|p| {
        let name = p.split(|&b| b == b'=').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(b"tag")
    })?;
    let eq = p.iter().position(|&b| b == b'=')?;
    let value = p.get(eq + 1..)?.trim_ascii();
    (!value.is_empty()).then_some(value)
}

/// The `Call-ID`.
pub fn call_id(h: &Headers) -> Option<String> {
    value(h, &HeaderName::CallId)
}

/// The first `Contact` URI (the remote target, RFC 3261 §12.1.2).
pub fn contact_uri(h: &Headers) -> Option<Uri> {
    let c: Contact = h.typed()?.ok()?;
    Some(c.0.uri)
}

/// Every `Record-Route` value in order, each as `<uri>` with its parameters (RFC 3261 §12.1).
pub fn record_routes(h: &Headers) -> Vec<String> {
    h.typed_all::<RecordRoute>()
        .filter_map(Result::ok)
        .map(|r| route_value(&r.0))
        .collect()
}

/// An address as a route-set entry: `<uri>` and its header parameters.
fn route_value(a: &Address) -> String {
    let mut s = format!("<{}>", a.uri);
    for p in &a.params {
        s.push(';');
        s.push_str(&String::from_utf8_lossy(&p.name));
        if let Some(v) = &p.value {
            s.push('=');
            s.push_str(&String::from_utf8_lossy(v));
        }
    }
    s
}

/// The URI of a route-set entry (`<uri>;params`).
pub fn route_uri(entry: &str) -> Option<Uri> {
    Address::parse(entry.as_bytes(), "Route")
        .ok()
        .map(|a| a.uri)
}

/// Whether a URI has the `lr` parameter (a loose router, RFC 3261 §16.12.1.1).
pub fn is_loose(u: &Uri) -> bool {
    u.params().is_some_and(|p| p.get("lr").is_some())
}

/// The top `Via`.
pub fn top_via(h: &Headers) -> Option<Via> {
    h.typed::<Via>()?.ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The tag read in place is the one a full parse of the address finds, and a bracket
    /// or quote left open gives none.
    #[test]
    fn tag_param_agrees_with_the_address_parser() {
        let cases: [&[u8]; 9] = [
            b"<sip:a@x>;tag=abc",
            b"\"A; tag=no <sip:b>\" <sip:a@x;tag=uri>;foo=1; TAG = t2 ;bar",
            b"sip:a@x;tag=bare",
            b"<sip:a@x>",
            b"Bob <sip:bob@x;transport=udp>;x=y;tag=9",
            b"\"q\\\"t\" <sip:a@x>;tag=esc",
            b"<sip:a@x>;tag=",
            b"\"open <sip:a@x>;tag=1",
            b"<sip:a@x;tag=1",
        ];
        for c in cases {
            let full = Address::parse(c, "From/To")
                .ok()
                .and_then(|a| a.tag().map(<[u8]>::to_vec))
                .filter(|t| !t.is_empty());
            assert_eq!(
                tag_param(c).map(<[u8]>::to_vec),
                full,
                "{}",
                String::from_utf8_lossy(c)
            );
        }
        assert_eq!(tag_param(b"<sip:a@x>;tag=abc"), Some(&b"abc"[..]));
        assert_eq!(tag_param(b"\"open <sip:a@x>;tag=1"), None);
    }

    proptest::proptest! {
        /// On From/To-like values built from the characters that matter (quotes, brackets,
        /// semicolons, escapes), whatever the address parser accepts, the tag read in place is
        /// the one it finds; and it never panics on any bytes.
        #[test]
        fn tag_param_matches_the_parser_on_arbitrary_values(
            v in "[\"<>;=\\\\ a-zA-Z0-9@:.]{0,40}",
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let _ = tag_param(&raw);
            let v = v.as_bytes();
            if let Ok(a) = Address::parse(v, "From/To") {
                let full = a.tag().map(<[u8]>::to_vec).filter(|t| !t.is_empty());
                proptest::prop_assert_eq!(tag_param(v).map(<[u8]>::to_vec), full);
            }
        }

        /// The same on name-addr and addr-spec shaped values (display names quoted or not,
        /// URI parameters, header parameters, `tag` in any case and place).
        #[test]
        fn tag_param_matches_the_parser_on_addresses(
            display in "(\"[a-z ;<>=]{0,6}\" |[a-z]{0,4} ?)",
            uri in "sip:[a-z]{1,4}@[a-z]{1,4}(;(tag|lr|[a-z]{1,3})(=[a-z0-9]{1,3})?){0,2}",
            params in "( ?; ?(tag|TAG|Tag|[a-z]{1,3}) ?(= ?[a-z0-9]{0,3})?){0,3}",
            bracket in proptest::prelude::any::<bool>(),
        ) {
            let v = if bracket {
                format!("{display}<{uri}>{params}")
            } else {
                format!("{uri}{params}")
            };
            if let Ok(a) = Address::parse(v.as_bytes(), "From/To") {
                let full = a.tag().map(<[u8]>::to_vec).filter(|t| !t.is_empty());
                proptest::prop_assert_eq!(tag_param(v.as_bytes()).map(<[u8]>::to_vec), full, "{}", v);
            }
        }
    }
}
