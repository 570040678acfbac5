//! What a message's body is to us (RFC 3261 §7.4, §20.11; RFC 5621): the session description
//! it holds — the whole body when it is `application/sdp`, the `application/sdp` part of a
//! `multipart/mixed` or `multipart/alternative` body (SIP-I/SIP-T carry ISUP beside the SDP)
//! — or nothing we read: an empty body, or one we cannot read marked
//! `Content-Disposition: …;handling=optional`, which is ignored (§20.11), or one we cannot
//! read at all, which a request is refused for (415).
//!
//! The multipart split is written here: the crates that split MIME (`mailparse`, `multer`)
//! parse mail (RFC 5322 headers, transfer and charset decoding) or an async HTTP stream; a
//! SIP body part's headers are SIP's (RFC 5621 §3) and nothing is decoded, so the split is a
//! bounded scan for the boundary (RFC 2046 §5.1.1) on `memchr`'s search.

use memchr::memmem;
use sipx_sip::headers::misc::ContentType;
use sipx_sip::{HeaderName, Headers, TypedHeader};

/// At most this many parts of a multipart body are looked at (a SIP body carries two or
/// three: SDP, ISUP, a location).
pub const MAX_PARTS: usize = 8;

/// RFC 2046 §5.1.1: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;

/// What a body is to a reader that takes the media types `accepted` (lowercase
/// `type/subtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Nothing to read: no body, or one we cannot read that its sender marked optional.
    Empty,
    /// The body, or the part of it, of an accepted type.
    Take(&'a [u8]),
    /// A body we cannot read and must not ignore: its type is not accepted (`typed` false),
    /// or it is encoded (`coded`: a `Content-Encoding` other than `identity`).
    Refuse {
        /// Its type (or, multipart, one of its parts' type) is one we take.
        typed: bool,
        /// It is encoded.
        coded: bool,
    },
}

/// The session description of a message with `headers` and `body`, if it carries one
/// ([`read`] with `application/sdp`, except that the SDP part of a `multipart/mixed` body is
/// taken even beside a required part we cannot read: a request is refused for that part by
/// the endpoint's check before this is asked, and a response cannot be refused). A body
/// without a `Content-Type` is taken as SDP: a response or ACK is not refused (§7.4.1 names
/// no type; the SDP parser is the judge).
/// An untyped body marked `handling=optional` is ignored (§20.11), not taken as SDP.
pub fn sdp<'a>(headers: &Headers, body: &'a [u8]) -> Option<&'a [u8]> {
    let optional = headers
        .get(&HeaderName::ContentDisposition)
        .is_some_and(|h| handling_optional(&h.value()));
    if !body.is_empty() && headers.get(&HeaderName::ContentType).is_none() && !optional {
        return Some(body);
    }
    take(headers, body, &["application/sdp"])
}

/// The body, or the part of a multipart body, of a type `accepted` (the first of a
/// `multipart/mixed` body, whatever its siblings: as [`sdp`]).
pub fn take<'a>(headers: &Headers, body: &'a [u8], accepted: &[&str]) -> Option<&'a [u8]> {
    match classify(headers, body, accepted, false) {
        Verdict::Take(b) => Some(b),
        Verdict::Empty | Verdict::Refuse { .. } => None,
    }
}

/// What the body of a message with `headers` is to a reader of the types `accepted`. A
/// `multipart/mixed` body is refused if any part is neither accepted nor marked
/// `handling=optional` (RFC 3261 §20.11: `required` is the default; RFC 5621 §9), even when
/// another part is one we read.
pub fn read<'a>(headers: &Headers, body: &'a [u8], accepted: &[&str]) -> Verdict<'a> {
    classify(headers, body, accepted, true)
}

/// [`read`]; `strict` false takes an accepted part of `multipart/mixed` whatever its
/// siblings are.
fn classify<'a>(headers: &Headers, body: &'a [u8], accepted: &[&str], strict: bool) -> Verdict<'a> {
    if body.is_empty() {
        return Verdict::Empty;
    }
    let coded = headers
        .get_all(&HeaderName::ContentEncoding)
        .flat_map(|h| {
            h.value()
                .split(|&b| b == b',')
                .map(|c| c.trim_ascii().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .any(|c| !c.is_empty() && c != b"identity");
    let optional = headers
        .get(&HeaderName::ContentDisposition)
        .is_some_and(|h| handling_optional(&h.value()));
    let ctype = headers
        .get(&HeaderName::ContentType)
        .and_then(|h| ContentType::decode(&h.value()).ok());
    let verdict = match ctype {
        _ if coded => Verdict::Refuse {
            typed: ctype.as_ref().is_some_and(|t| is_accepted(t, accepted)),
            coded,
        },
        Some(t) if is_accepted(&t, accepted) => Verdict::Take(body),
        Some(t)
            if t.media_type == b"multipart"
                && (t.subtype == b"mixed" || t.subtype == b"alternative") =>
        {
            multipart(&t, body, accepted, strict)
        }
        _ => Verdict::Refuse {
            typed: false,
            coded: false,
        },
    };
    match verdict {
        Verdict::Refuse { .. } if optional => Verdict::Empty,
        v => v,
    }
}

fn is_accepted(t: &ContentType, accepted: &[&str]) -> bool {
    accepted
        .iter()
        .any(|a| a.split_once('/').is_some_and(|(m, s)| t.is(m, s)))
}

/// `Content-Disposition: <type>;handling=optional` (§20.11; `required` is the default).
fn handling_optional(v: &[u8]) -> bool {
    v.split(|&b| b == b';').skip(1).any(|p| {
        let mut kv = p.splitn(2, |&b| b == b'=');
        let k = kv.next().unwrap_or_default().trim_ascii();
        let v = kv.next().unwrap_or_default().trim_ascii();
        k.eq_ignore_ascii_case(b"handling") && v.eq_ignore_ascii_case(b"optional")
    })
}

/// A `multipart/mixed` or `multipart/alternative` body (RFC 2046 §5.1): the first part of an
/// accepted type (the last, for `alternative`: its parts go from plainest to richest); if
/// none, Empty when every part is optional, else Refuse. `mixed` and `strict`: refused if
/// any part we do not read is required (every part of a mixed body is meant to be used; an
/// `alternative` body needs one). A body that does not split (no boundary, no delimiter) is
/// refused.
fn multipart<'a>(t: &ContentType, body: &'a [u8], accepted: &[&str], strict: bool) -> Verdict<'a> {
    let refuse = Verdict::Refuse {
        typed: false,
        coded: false,
    };
    let Some(boundary) = t
        .param("boundary")
        .filter(|b| !b.is_empty() && b.len() <= MAX_BOUNDARY)
    else {
        return refuse;
    };
    let Some(parts) = split(body, boundary) else {
        return refuse;
    };
    let mut found = None;
    let mut all_optional = true;
    for part in parts {
        let Some((headers, content)) = part_headers(part) else {
            return refuse;
        };
        let mut ctype = None;
        let mut optional = false;
        let mut coded = false;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case(b"content-type") || name.eq_ignore_ascii_case(b"c") {
                ctype = ContentType::decode(value).ok();
            } else if name.eq_ignore_ascii_case(b"content-disposition") {
                optional = handling_optional(value);
            } else if name.eq_ignore_ascii_case(b"content-encoding")
                || name.eq_ignore_ascii_case(b"e")
            {
                coded |= value.split(|&b| b == b',').any(|c| {
                    !c.trim_ascii().is_empty() && !c.trim_ascii().eq_ignore_ascii_case(b"identity")
                });
            }
        }
        // RFC 2046 §5.1: a part without Content-Type is text/plain.
        if !coded && ctype.as_ref().is_some_and(|t| is_accepted(t, accepted)) {
            if t.subtype != b"mixed" || found.is_none() {
                found = Some(content);
            }
        } else {
            all_optional &= optional;
        }
    }
    let mixed = t.subtype == b"mixed";
    match found {
        Some(_) if mixed && strict && !all_optional => refuse,
        Some(b) => Verdict::Take(b),
        None if all_optional => Verdict::Empty,
        None => refuse,
    }
}

/// The parts of `body` between its `--boundary` delimiters (RFC 2046 §5.1.1: the first may
/// open the body, each other follows a CRLF; the close delimiter is `--boundary--`; a
/// delimiter line may end in whitespace). At most [`MAX_PARTS`]; None if there is no
/// delimiter or no part.
fn split<'a>(body: &'a [u8], boundary: &[u8]) -> Option<Vec<&'a [u8]>> {
    let mut delim = Vec::with_capacity(boundary.len() + 4);
    delim.extend_from_slice(b"\r\n--");
    delim.extend_from_slice(boundary);
    let finder = memmem::Finder::new(&delim);
    // The first delimiter: at the very start (no CRLF before it) or after the preamble.
    let mut at = if body.starts_with(&delim[2..]) {
        delim.len() - 2
    } else {
        finder.find(body)? + delim.len()
    };
    let mut parts = Vec::new();
    loop {
        let rest = body.get(at..)?;
        if rest.starts_with(b"--") {
            break; // the close delimiter
        }
        // The rest of the delimiter line: transport padding, then CRLF.
        let eol = memmem::find(rest, b"\r\n")?;
        if !rest.get(..eol)?.iter().all(|b| *b == b' ' || *b == b'\t') {
            // `--boundary` followed by more of a longer one: not a delimiter.
            return None;
        }
        let start = at + eol + 2;
        let content = body.get(start..)?;
        let Some(end) = finder.find(content) else {
            // No close delimiter: the part runs to the end (RFC 2046 asks for one; a
            // truncated body still gives its whole parts).
            parts.push(content);
            break;
        };
        parts.push(content.get(..end)?);
        if parts.len() >= MAX_PARTS {
            break;
        }
        at = start + end + delim.len();
    }
    (!parts.is_empty()).then_some(parts)
}

/// A body part's header: name, value.
type PartHeader<'a> = (&'a [u8], &'a [u8]);

/// A body part's headers (name, value: folded lines unfolded by joining) and its content,
/// or None if its header block does not end. A part that opens with CRLF has no headers.
fn part_headers(part: &[u8]) -> Option<(Vec<PartHeader<'_>>, &[u8])> {
    if let Some(content) = part.strip_prefix(b"\r\n") {
        return Some((Vec::new(), content));
    }
    let end = memmem::find(part, b"\r\n\r\n")?;
    let (head, content) = (part.get(..end)?, part.get(end + 4..)?);
    let mut headers = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            // A folded continuation (§7.3.1) of a header we read by its first line only.
            continue;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        headers.push((
            line.get(..colon)?.trim_ascii(),
            line.get(colon + 1..)?.trim_ascii(),
        ));
        if headers.len() > 16 {
            return None;
        }
    }
    Some((headers, content))
}

/// Whether a request's body makes it 415 for a reader of the types `accepted` (the
/// endpoint's check, [`read`]): the names to send back in `Accept` / `Accept-Encoding`.
pub fn refused(headers: &Headers, body: &[u8], accepted: &[&str]) -> Option<(bool, bool)> {
    match read(headers, body, accepted) {
        Verdict::Refuse { typed, coded } => Some((typed, coded)),
        Verdict::Empty | Verdict::Take(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;
    use sipx_sip::Headers;

    fn headers(list: &[(HeaderName, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in list {
            h.push(wire::header(n, v.to_string()).unwrap_or_else(|e| panic!("{e}")));
        }
        h
    }

    const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn sipi(boundary: &str, sdp_first: bool) -> Vec<u8> {
        let sdp_part = format!(
            "Content-Type: application/sdp\r\n\r\n{}",
            String::from_utf8_lossy(SDP)
        );
        let isup = "Content-Type: application/ISUP;version=itu-t92+\r\nContent-Disposition: signal;handling=optional\r\n\r\n\x01\x00\x49\x00\x00\x03\x02\x00\x07";
        let (a, b) = if sdp_first {
            (sdp_part.as_str(), isup)
        } else {
            (isup, sdp_part.as_str())
        };
        format!("--{boundary}\r\n{a}\r\n--{boundary}\r\n{b}\r\n--{boundary}--\r\n").into_bytes()
    }

    #[test]
    fn the_sdp_part_of_a_multipart_mixed_body_is_taken() {
        for first in [true, false] {
            let body = sipi("unique-boundary-1", first);
            let h = headers(&[(
                HeaderName::ContentType,
                "multipart/mixed;boundary=\"unique-boundary-1\"",
            )]);
            assert_eq!(
                sdp(&h, &body),
                Some(SDP),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn an_optional_body_we_cannot_read_is_ignored_a_required_one_refused() {
        let isup = b"\x01\x00\x49";
        let opt = headers(&[
            (HeaderName::ContentType, "application/isup"),
            (HeaderName::ContentDisposition, "signal;handling=optional"),
        ]);
        assert_eq!(read(&opt, isup, &["application/sdp"]), Verdict::Empty);
        let req = headers(&[
            (HeaderName::ContentType, "application/isup"),
            (HeaderName::ContentDisposition, "signal;handling=required"),
        ]);
        assert_eq!(
            refused(&req, isup, &["application/sdp"]),
            Some((false, false))
        );
        let plain = headers(&[(HeaderName::ContentType, "application/isup")]);
        assert_eq!(
            refused(&plain, isup, &["application/sdp"]),
            Some((false, false))
        );
        // Multipart without SDP: ignored when every part is optional.
        let body = b"--b\r\nContent-Type: application/isup\r\nContent-Disposition: signal;handling=optional\r\n\r\nx\r\n--b--\r\n";
        let mp = headers(&[(HeaderName::ContentType, "multipart/mixed;boundary=b")]);
        assert_eq!(read(&mp, body, &["application/sdp"]), Verdict::Empty);
        let body = b"--b\r\nContent-Type: application/isup\r\n\r\nx\r\n--b--\r\n";
        assert!(refused(&mp, body, &["application/sdp"]).is_some());
    }

    /// RFC 5621 §9 / RFC 3261 §20.11: a `multipart/mixed` request with an SDP part and a part
    /// we cannot read that is not marked optional (no disposition: `required`) is refused —
    /// its SDP is still what a response's reader takes; `alternative` needs one readable part.
    #[test]
    fn a_required_part_we_cannot_read_beside_the_sdp_is_refused() {
        let isup = "Content-Type: application/isup\r\n\r\n\x01\x00\x49";
        let sdp_part = format!(
            "Content-Type: application/sdp\r\n\r\n{}",
            String::from_utf8_lossy(SDP)
        );
        for (a, b) in [(sdp_part.as_str(), isup), (isup, sdp_part.as_str())] {
            let body = format!("--b\r\n{a}\r\n--b\r\n{b}\r\n--b--\r\n").into_bytes();
            let mixed = headers(&[(HeaderName::ContentType, "multipart/mixed;boundary=b")]);
            assert_eq!(
                refused(&mixed, &body, &["application/sdp"]),
                Some((false, false))
            );
            assert_eq!(sdp(&mixed, &body), Some(SDP));
            let alt = headers(&[(HeaderName::ContentType, "multipart/alternative;boundary=b")]);
            assert_eq!(refused(&alt, &body, &["application/sdp"]), None);
        }
        // An untyped body marked optional is ignored, not taken as SDP (§20.11).
        let opt = headers(&[(HeaderName::ContentDisposition, "session;handling=optional")]);
        assert_eq!(sdp(&opt, SDP), None);
        assert_eq!(sdp(&headers(&[]), SDP), Some(SDP));
        // Marked optional, the same part is ignored.
        let body = sipi("b", true);
        let mixed = headers(&[(HeaderName::ContentType, "multipart/mixed;boundary=b")]);
        assert_eq!(
            read(&mixed, &body, &["application/sdp"]),
            Verdict::Take(SDP)
        );
    }

    #[test]
    fn malformed_multipart_is_refused_not_a_panic() {
        let mp = |b: &str| headers(&[(HeaderName::ContentType, b)]);
        let cases: &[(&str, &[u8])] = &[
            ("multipart/mixed", b"--b\r\n\r\nx\r\n--b--"),
            ("multipart/mixed;boundary=", b"--\r\n\r\nx"),
            ("multipart/mixed;boundary=b", b"no delimiter at all"),
            ("multipart/mixed;boundary=b", b"--b"),
            ("multipart/mixed;boundary=b", b"--b\r\n"),
            ("multipart/mixed;boundary=b", b"--bb\r\n\r\nx"),
            (
                "multipart/mixed;boundary=b",
                b"--b\r\nContent-Type: application/sdp",
            ),
            ("multipart/mixed;boundary=b", b"--b--"),
        ];
        for (ct, body) in cases {
            assert!(
                refused(&mp(ct), body, &["application/sdp"]).is_some(),
                "{ct} {:?}",
                String::from_utf8_lossy(body)
            );
        }
        // A boundary past 70 characters: refused, the body well-formed all the same.
        for n in [70, 71] {
            let b = "b".repeat(n);
            let body =
                format!("--{b}\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--{b}--\r\n");
            let ct = mp(&format!("multipart/mixed;boundary={b}"));
            assert_eq!(
                refused(&ct, body.as_bytes(), &["application/sdp"]).is_some(),
                n > MAX_BOUNDARY,
                "{n}"
            );
        }
        // A truncated last part (no close delimiter) still gives its content.
        let h = mp("multipart/mixed;boundary=b");
        let body = b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n";
        assert_eq!(sdp(&h, body), Some(&b"v=0\r\n"[..]));
        // Many parts: bounded — an SDP part past the eighth is not looked at.
        let optional = "--b\r\nContent-Type: text/plain\r\nContent-Disposition: render;handling=optional\r\n\r\nx\r\n";
        let many = optional.repeat(MAX_PARTS)
            + "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--b--";
        assert_eq!(
            split(many.as_bytes(), b"b").map(|p| p.len()),
            Some(MAX_PARTS)
        );
        assert_eq!(sdp(&h, many.as_bytes()), None);
        let many = optional.repeat(1000) + "--b--";
        assert_eq!(
            split(many.as_bytes(), b"b").map(|p| p.len()),
            Some(MAX_PARTS)
        );
    }
}
