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

/// How many `Via` values `h` holds: each `Via` header line, and each comma outside a quoted
/// string in one (§7.3.1: values may be combined on a line), counts; in a quoted string a
/// backslash escapes the next byte (§25.1 `quoted-pair`: `\"` does not end it).
pub fn via_count(h: &Headers) -> usize {
    h.get_all(&HeaderName::Via)
        .map(|v| {
            let (mut quoted, mut escaped) = (false, false);
            let mut n = 1;
            for b in v.value().iter() {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' if quoted => escaped = true,
                    b'"' => quoted = !quoted,
                    b',' if !quoted => n += 1,
                    _ => {}
                }
            }
            n
        })
        .sum()
}

/// One message framed off a stream (TCP, TLS) by [`Framer`].
// The common case is the message, as before `Framer` (not boxed: no allocation added).
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Framed {
    Message(Message),
    /// A message whose `Content-Length` framed it but which does not parse: its bytes, for
    /// [`crate::Endpoint::handle_input`] to answer 400 if it can (RFC 3261 §18.3). The
    /// stream goes on with the next message.
    Malformed(Bytes),
}

/// Frames SIP messages off a stream (RFC 3261 §18.3): CRLFs between messages skipped
/// (RFC 5626 keep-alives), the header section up to its blank line, then `Content-Length`
/// bytes of body. Unlike sipx-sip's `StreamParser`, a message that frames but does not parse
/// (a bad Request-URI, a malformed header) costs only itself, not the connection: only a
/// head without a readable `Content-Length`, or one past the size limit, loses the framing
/// (an `Err`: the connection must be closed).
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// How far the buffer was searched for the end of the head (not searched again: a head
    /// dripped in byte by byte costs linear time, not quadratic).
    scanned: usize,
}

/// The largest message a stream may carry (sipx-sip's stream limit).
const MAX_STREAM_MESSAGE: usize = 1024 * 1024;

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Appends `chunk`; every message it completed, in order. `Err`: the stream cannot be
    /// framed any more (what it says is why).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Framed>, String> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            let skip = self
                .buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.buf.drain(..skip);
            self.scanned = self.scanned.saturating_sub(skip);
            let from = self.scanned.saturating_sub(3);
            let found = self
                .buf
                .get(from..)
                .and_then(|b| b.windows(4).position(|w| w == b"\r\n\r\n"));
            let Some(head_end) = found.map(|i| i + from) else {
                self.scanned = self.buf.len();
                if self.buf.len() > MAX_STREAM_MESSAGE {
                    return Err("a header section past the size limit".into());
                }
                return Ok(out);
            };
            let head = self.buf.get(..head_end).unwrap_or_default();
            let Some(len) = content_length(head) else {
                return Err("no readable Content-Length: the stream cannot be framed".into());
            };
            let total = head_end.saturating_add(4).saturating_add(len);
            if total > MAX_STREAM_MESSAGE {
                return Err("a message past the size limit".into());
            }
            if self.buf.len() < total {
                return Ok(out);
            }
            let bytes = Bytes::copy_from_slice(self.buf.get(..total).unwrap_or_default());
            self.buf.drain(..total);
            self.scanned = 0;
            let limits = Limits {
                max_message_bytes: MAX_STREAM_MESSAGE,
                ..Limits::stream()
            };
            out.push(match sipx_sip::parse_datagram(bytes.clone(), &limits) {
                Ok(m) => Framed::Message(m),
                Err(_) => Framed::Malformed(bytes),
            });
        }
    }
}

/// The `Content-Length` (or `l`) of a header section, read line by line; `None` if absent,
/// repeated with another value, or not a number.
fn content_length(head: &[u8]) -> Option<usize> {
    let mut found = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let name = name.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = std::str::from_utf8(value.get(1..)?).ok()?.trim();
            let n: usize = v.parse().ok()?;
            if found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A comma after an escaped quote in a quoted string (§25.1 quoted-pair) separates two
    /// Via values; one inside the string does not.
    #[test]
    fn via_count_reads_escaped_quotes() {
        let count = |via: &str| {
            let m = parse(format!("SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
            via_count(m.headers())
        };
        assert_eq!(
            count(r#"SIP/2.0/UDP a;branch=z9hG4bK1;x="q\"z", SIP/2.0/UDP b;branch=z9hG4bK2"#),
            2
        );
        assert_eq!(count(r#"SIP/2.0/UDP a;branch=z9hG4bK1;x="q\", z""#), 1);
        assert_eq!(
            count(r#"SIP/2.0/UDP a;branch=z9hG4bK1;x="a\\", SIP/2.0/UDP b;branch=z9hG4bK2"#),
            2
        );
    }

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

#[cfg(test)]
mod framer_tests {
    use super::*;

    /// §18.3 on a stream: a message that frames but does not parse is handed out as
    /// malformed and the stream goes on with the next; CRLF keep-alives are skipped; a
    /// message split across reads is completed; a head without Content-Length loses the
    /// framing.
    #[test]
    fn a_malformed_message_costs_only_itself() {
        let bad = "OPTIONS <sip:x@10.0.0.1> SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.7:5060;branch=z9hG4bK1\r\nContent-Length: 4\r\n\r\nbody";
        let good = "OPTIONS sip:x@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.7:5060;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@c>\r\nCall-ID: q\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
        let stream = format!("\r\n\r\n{bad}{good}\r\n");
        let mut f = Framer::new();
        let (a, b) = stream.as_bytes().split_at(50);
        assert!(f.push(a).unwrap_or_default().is_empty());
        let out = f.push(b).unwrap_or_default();
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(&out[0], Framed::Malformed(m) if &m[..] == bad.as_bytes()));
        assert!(matches!(&out[1], Framed::Message(Message::Request(_))));
        assert!(f.push(b"INFO sip:x SIP/2.0\r\nVia: x\r\n\r\n").is_err());
    }
}

#[cfg(test)]
mod framer_props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Cut anywhere, the same stream frames into the same messages (the head's end is
        /// found across reads), and arbitrary bytes never panic.
        #[test]
        fn split_reads_frame_the_same(cut in 0usize..400, junk in proptest::collection::vec(any::<u8>(), 0..512)) {
            let good = "OPTIONS sip:x@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.7:5060;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@c>\r\nCall-ID: q\r\nCSeq: 1 OPTIONS\r\nContent-Length: 3\r\n\r\nabc";
            let stream = format!("{good}\r\n{good}");
            let (a, b) = stream.as_bytes().split_at(cut.min(stream.len()));
            let mut f = Framer::new();
            let mut n = f.push(a).map(|v| v.len()).unwrap_or(99);
            n += f.push(b).map(|v| v.len()).unwrap_or(99);
            prop_assert_eq!(n, 2);
            let _ = Framer::new().push(&junk);
        }
    }
}
