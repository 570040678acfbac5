//! SDP offer/answer (RFC 3264) for one audio stream: G.711 plus telephone-events, with the
//! stream's direction (RFC 3264 §5.1, §6.1), RTCP address (RFC 3605, RFC 3550 §11) and
//! `rtcp-mux` (RFC 5761).

use std::net::{IpAddr, SocketAddr};

use crate::g711::Codec;
use crate::Error;

/// Payload type we offer for telephone-event/8000.
pub const OFFER_EVENT_PT: u8 = 101;

/// A stream's direction, as the side that wrote the SDP sees it (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The SDP attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether the side that wrote it receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Whether the side that wrote it sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Our direction in an answer to an offer with this direction, for a side that wants to
    /// send and receive (RFC 3264 §6.1): sendonly → recvonly, recvonly → sendonly.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    fn parse(s: &str) -> Option<Direction> {
        Some(match s {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

/// Our side of the session description: one audio stream on `rtp` (RTCP on the next port,
/// RFC 3550 §11), offering PCMU, PCMA and telephone-event/8000 and `rtcp-mux`.
///
/// The `o=` version (RFC 3264 §8) stays the same while what we send is the same and goes up
/// by one when it changes (a hold's `recvonly`, `rtcp-mux` dropped by a new offer, …).
#[derive(Debug, Clone)]
pub struct LocalSdp {
    rtp: SocketAddr,
    session_id: u64,
    version: u64,
    direction: Direction,
    rtcp_mux: bool,
    /// The far end's last offer's `m=` lines other than ours (rejected with port 0 in our
    /// answer), as (index, line).
    rejected: Vec<(usize, String)>,
    /// The last body sent, without its `o=` line.
    last: Option<String>,
}

impl LocalSdp {
    /// Our session description for an RTP socket at `rtp`.
    pub fn new(rtp: SocketAddr, session_id: u64) -> LocalSdp {
        LocalSdp {
            rtp,
            session_id,
            version: session_id,
            direction: Direction::SendRecv,
            rtcp_mux: true,
            rejected: Vec::new(),
            last: None,
        }
    }

    /// The `o=` line's version of the last body built.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Our offer (the INVITE's body, or a refresh's).
    pub fn offer(&mut self) -> String {
        self.render()
    }

    /// Our answer to the far end's offer `to` (a re-INVITE or UPDATE): the direction that
    /// complements the offer's (RFC 3264 §6.1) and `rtcp-mux` only if offered (RFC 5761 §5.1.1).
    /// The formats stay the ones we offered: they include the codec in use (the caller checks
    /// the offer names one we take), and an unchanged offer gets back the same SDP, version
    /// included (RFC 3264 §8).
    ///
    /// The answer has the offer's `m=` lines in their order: ours where the offer's audio
    /// stream is, the others (video, a second audio …) rejected with port 0 (RFC 3264 §6).
    pub fn answer(&mut self, to: &RemoteSdp) -> String {
        self.direction = to.direction.answer();
        self.rtcp_mux = to.rtcp_mux;
        self.rejected = to
            .m_lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != to.audio_index)
            .map(|(i, (media, proto, fmt))| (i, format!("m={media} 0 {proto} {fmt}\r\n")))
            .collect();
        self.render()
    }

    /// The body, written piece by piece into two strings sized for it (issue 19, S1 step
    /// 36: `format!` of it was 2.4 % of the `load` process's samples at 4,000/s).
    fn render(&mut self) -> String {
        use std::fmt::Write as _;
        let ip = self.rtp.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        // The rejected lines before ours keep their index below our audio line's.
        let audio_at = self
            .rejected
            .iter()
            .enumerate()
            .take_while(|(k, (i, _))| k == i)
            .count();
        let (before, after) = self.rejected.split_at(audio_at);
        let rejected: usize = self.rejected.iter().map(|(_, l)| l.len()).sum();
        let mut rest = String::with_capacity(REST_LEN + rejected);
        rest.push_str("s=crieur\r\nc=IN ");
        rest.push_str(family);
        rest.push(' ');
        // Writing into a String cannot fail.
        let _ = write!(rest, "{ip}");
        rest.push_str("\r\nt=0 0\r\n");
        before.iter().for_each(|(_, l)| rest.push_str(l));
        rest.push_str("m=audio ");
        let _ = write!(rest, "{}", self.rtp.port());
        rest.push_str(OFFER_MEDIA);
        if self.rtcp_mux {
            rest.push_str("a=rtcp-mux\r\n");
        }
        rest.push_str("a=");
        rest.push_str(self.direction.as_str());
        rest.push_str("\r\n");
        after.iter().for_each(|(_, l)| rest.push_str(l));
        if self.last.as_ref().is_some_and(|l| *l != rest) {
            self.version = self.version.wrapping_add(1);
        }
        // `v=` and the longest `o=`: two 20-digit numbers and a 39-character IPv6 address.
        let mut body = String::with_capacity(rest.len() + 104);
        let _ = write!(
            body,
            "v=0\r\no=crieur {} {} IN {family} {ip}\r\n",
            self.session_id, self.version
        );
        body.push_str(&rest);
        self.last = Some(rest);
        body
    }
}

/// The offer's lines after the `m=` line's port (its formats, their maps, the packet time),
/// the same for every call.
const OFFER_MEDIA: &str = concat!(
    " RTP/AVP 0 8 101\r\n",
    "a=rtpmap:0 PCMU/8000\r\n",
    "a=rtpmap:8 PCMA/8000\r\n",
    "a=rtpmap:101 telephone-event/8000\r\n",
    "a=fmtp:101 0-15\r\n",
    "a=ptime:20\r\n",
);

// OFFER_MEDIA names our telephone-event type.
const _: () = assert!(OFFER_EVENT_PT == 101);

/// The length of the body after `o=` with the longest address and no rejected line.
const REST_LEN: usize = 64 + OFFER_MEDIA.len() + 40;

/// Our offer: PCMU, PCMA and telephone-event/8000 on `rtp` (the RTP socket's address).
pub fn offer(rtp: SocketAddr, session_id: u64) -> String {
    LocalSdp::new(rtp, session_id).offer()
}

/// The far end's audio stream, from its answer or its offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSdp {
    /// Where to send RTP (and the source RTP is accepted from).
    pub remote: SocketAddr,
    /// Where to send RTCP: `a=rtcp` (RFC 3605), else the RTP port + 1; the RTP address when
    /// `rtcp_mux`.
    pub rtcp: SocketAddr,
    /// The far end multiplexes RTP and RTCP on one port (`a=rtcp-mux`, RFC 5761).
    pub rtcp_mux: bool,
    /// The preferred codec: the first of its formats that is PCMU or PCMA.
    pub codec: Codec,
    /// Every G.711 law it lists, in its order.
    pub codecs: Vec<Codec>,
    /// The first telephone-event/8000 payload type, if any.
    pub event_pt: Option<u8>,
    /// Every telephone-event/8000 payload type it lists.
    pub event_pts: Vec<u8>,
    /// Dynamic payload types it maps to something else than telephone-event.
    pub other_pts: Vec<u8>,
    /// Its direction (media level, else session level, else sendrecv). A connection address
    /// of 0.0.0.0 (the RFC 2543 hold, RFC 3264 §8.4) counts as not receiving.
    pub direction: Direction,
    /// Every `m=` line in order, as `(media, protocol, first format)`, and which one is the
    /// audio stream used: an answer has as many, in the same order, the others rejected with
    /// port 0 (RFC 3264 §6).
    pub m_lines: Vec<(String, String, String)>,
    pub audio_index: usize,
}

impl RemoteSdp {
    /// The codec to use: `current` if still listed, else the far end's preferred one.
    pub fn codec_keeping(&self, current: Codec) -> Codec {
        if self.codecs.contains(&current) {
            current
        } else {
            self.codec
        }
    }

    /// The payload types telephone-events are accepted on after an offer/answer in which we
    /// offered [`OFFER_EVENT_PT`] and the far end wrote `self`: every telephone-event type it
    /// listed, and ours unless it mapped ours to another format (RFC 3264 §5.1: we receive on
    /// the types of our offer; §6.1: an answerer may still use its own numbers).
    pub fn accepted_event_pts(&self) -> Vec<u8> {
        let mut pts = self.event_pts.clone();
        if !self.other_pts.contains(&OFFER_EVENT_PT) && !pts.contains(&OFFER_EVENT_PT) {
            pts.push(OFFER_EVENT_PT);
        }
        pts
    }
}

/// What the callee chose (the older name of [`RemoteSdp`]).
pub type Answer = RemoteSdp;

/// Whether an `a=rtpmap` encoding (`<name>/<rate>[/<channels>]`, RFC 8866 §6.6) is `name` at
/// 8,000 Hz, mono: the channel count may be left out or written `/1`, as some UAs do.
fn encoding_is(encoding: &str, name: &str) -> bool {
    let mut parts = encoding.split('/');
    parts.next().is_some_and(|n| n.eq_ignore_ascii_case(name))
        && parts.next() == Some("8000")
        && matches!(parts.next(), None | Some("1"))
        && parts.next().is_none()
}

/// The direction in effect: the media's last direction attribute, else the session's, else
/// `sendrecv`; a connection address of `0.0.0.0`/`::` (the old hold) receives nothing.
fn direction_of(media: Option<Direction>, session: Option<Direction>, ip: IpAddr) -> Direction {
    let direction = media.or(session).unwrap_or(Direction::SendRecv);
    match (ip.is_unspecified(), direction.sends()) {
        (false, _) => direction,
        (true, true) => Direction::SendOnly,
        (true, false) => Direction::Inactive,
    }
}

/// Where the far end takes RTCP: its RTP address when muxed (RFC 5761), else `a=rtcp`'s
/// (`attr`, RFC 3605), else the next port (RFC 3550 §11) — an RTP port of 65535 leaves none.
fn rtcp_address(
    remote: SocketAddr,
    rtcp_mux: bool,
    attr: Option<&str>,
) -> Result<SocketAddr, String> {
    if rtcp_mux {
        return Ok(remote);
    }
    match attr.and_then(|v| rtcp_attribute(v, remote.ip())) {
        Some(a) => Ok(a),
        None => remote
            .port()
            .checked_add(1)
            .map(|p| SocketAddr::new(remote.ip(), p))
            .ok_or_else(|| "RTP port 65535 leaves no port for RTCP (RFC 3550 §11)".to_owned()),
    }
}

/// `a=rtcp:<port> [IN IP4|IP6 <address>]` (RFC 3605). The address may be a host name (the RFC
/// allows it; we resolve none in the call path): then RTCP goes to `ip`, the media's, at the
/// port given. `None` when the port is not a port.
fn rtcp_attribute(value: &str, ip: IpAddr) -> Option<SocketAddr> {
    let mut w = value.split_whitespace();
    let port: u16 = w.next()?.parse().ok()?;
    let ip = match (w.next(), w.next(), w.next()) {
        (Some("IN"), Some(_), Some(a)) => a.parse().unwrap_or(ip),
        _ => ip,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses the callee's answer (or a re-INVITE's offer). A description with neither PCMU nor
/// PCMA is [`Error::CodecMismatch`]; an unparsable one [`Error::BadSdp`].
///
/// Read by hand rather than with the `sdp` crate (issue 19, BENCHMARKS.md S1 step 35): its
/// full parse built a `String` for every field of every line and a `Vec` per line group —
/// 8.3 % of the `load` process's samples at 4,000 calls/s — for the few fields read here. This reads
/// the body once, borrowing, and still checks it as that crate did (RFC 4566 §5): `v=0`,
/// `o=`, `s=` first, the session-level lines in their order, a `t=` before the media, the
/// `o=`, `c=`, `t=`, `r=`, `z=`, `b=` and `m=` lines' fields. It does not check what no
/// field read here depends on and the crate did: a `u=` line's URL syntax.
pub fn parse_answer(body: &[u8]) -> Result<RemoteSdp, Error> {
    let bad = |why: String| Error::BadSdp { why };
    let sd = Lines::read(body).map_err(bad)?;
    let (audio_index, media) = sd
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.media == "audio" && m.port > 0)
        .ok_or_else(|| bad("no active audio stream".into()))?;
    let m_lines = sd
        .media
        .iter()
        .map(|m| {
            (
                m.media.to_owned(),
                m.proto.to_owned(),
                m.formats().next().unwrap_or("0").to_owned(),
            )
        })
        .collect();
    let conn = match media.connection {
        Some(c) => c,
        None => sd.connection.flatten(),
    }
    .ok_or_else(|| bad("no connection address".into()))?;
    let ip: IpAddr = conn
        .split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| bad(format!("connection address `{conn}` is not an IP address")))?;
    let port = media.port;
    let attrs = sd.attrs.get(media.attrs.clone()).unwrap_or_default();
    let attr = |key: &'static str| {
        attrs
            .iter()
            .filter(move |(k, _)| *k == key)
            .map(|(_, v)| v.unwrap_or(""))
    };
    // rtpmap lines: "<pt> <name>/<rate>[/<channels>]"
    let rtpmap = |pt: &str| -> Option<&str> {
        attr("rtpmap").find_map(|v| {
            let mut w = v.split_whitespace();
            (w.next() == Some(pt)).then(|| w.next().unwrap_or(""))
        })
    };
    let law = |f: &str| match (f, rtpmap(f)) {
        (_, Some(m)) if encoding_is(m, "PCMU") => Some(Codec::Pcmu),
        (_, Some(m)) if encoding_is(m, "PCMA") => Some(Codec::Pcma),
        ("0", None) => Some(Codec::Pcmu),
        ("8", None) => Some(Codec::Pcma),
        _ => None,
    };
    let codecs: Vec<Codec> = media.formats().filter_map(law).collect();
    let mut event_pts = Vec::new();
    let mut other_pts = Vec::new();
    for f in media.formats() {
        let Ok(pt) = f.parse::<u8>() else { continue };
        match rtpmap(f) {
            Some(m) if encoding_is(m, "telephone-event") => event_pts.push(pt),
            Some(_) if pt >= 96 => other_pts.push(pt),
            _ => {}
        }
    }
    let direction_in =
        |attrs: &[(&str, Option<&str>)]| attrs.iter().rev().find_map(|(k, _)| Direction::parse(k));
    let direction = direction_of(
        direction_in(attrs),
        direction_in(sd.attrs.get(..sd.session_attrs).unwrap_or_default()),
        ip,
    );
    let rtcp_mux = attr("rtcp-mux").next().is_some();
    let remote = SocketAddr::new(ip, port);
    let rtcp = rtcp_address(remote, rtcp_mux, attr("rtcp").next()).map_err(bad)?;
    match codecs.first() {
        Some(&codec) => Ok(RemoteSdp {
            remote,
            rtcp,
            rtcp_mux,
            codec,
            codecs,
            event_pt: event_pts.first().copied(),
            event_pts,
            other_pts,
            direction,
            m_lines,
            audio_index,
        }),
        None => Err(Error::CodecMismatch {
            answered: media.formats().collect::<Vec<_>>().join(" "),
        }),
    }
}

/// One `m=` section of a session description, borrowed from it.
#[derive(Debug)]
struct MediaLines<'a> {
    media: &'a str,
    port: u16,
    proto: &'a str,
    /// The `m=` line's value (its formats are its fourth field on).
    line: &'a str,
    /// Its last `c=` line's address: `Some(None)` for a `c=` line without one.
    connection: Option<Option<&'a str>>,
    /// Its attributes: a range of [`Lines::attrs`].
    attrs: std::ops::Range<usize>,
}

impl<'a> MediaLines<'a> {
    fn formats(&self) -> impl Iterator<Item = &'a str> {
        self.line.split_whitespace().skip(3)
    }
}

/// What [`parse_answer`] reads of a session description, checked as the `sdp` crate (0.8)
/// did: the lines in RFC 4566 §5's order, the fields of those whose syntax it checked.
#[derive(Debug, Default)]
struct Lines<'a> {
    /// The session-level `c=` line's address (`Some(None)`: a `c=` line without one).
    connection: Option<Option<&'a str>>,
    /// Every `a=` line as (name, value after the first `:`): the session's first, then
    /// each media section's ([`MediaLines::attrs`]).
    attrs: Vec<(&'a str, Option<&'a str>)>,
    session_attrs: usize,
    media: Vec<MediaLines<'a>>,
}

/// The session-level line types in their order (RFC 4566 §5), as the rank each has; `r=`
/// shares `t=`'s (repeat times follow their time description).
fn session_rank(key: u8) -> Option<u8> {
    Some(match key {
        b'v' => 0,
        b'o' => 1,
        b's' => 2,
        b'i' => 3,
        b'u' => 4,
        b'e' => 5,
        b'p' => 6,
        b'c' => 7,
        b'b' => 8,
        b't' | b'r' => 9,
        b'z' => 10,
        b'k' => 11,
        b'a' => 12,
        _ => return None,
    })
}

const T_RANK: u8 = 9;

impl<'a> Lines<'a> {
    /// `body` need not be UTF-8 as a whole: the text of `s=`, `i=`, `e=`, `p=` and `k=`
    /// may be in another charset (RFC 4566 §5 and `a=charset`, §6: a Latin-1 `s=Café`) and
    /// is not read; an `a=` line that is not UTF-8 is an attribute of such text (`keywds`),
    /// none read here, and is skipped. Any other line must be UTF-8.
    fn read(body: &'a [u8]) -> Result<Lines<'a>, String> {
        // Sized for a usual answer: no reallocation while reading it.
        let mut sd = Lines {
            attrs: Vec::with_capacity(16),
            media: Vec::with_capacity(2),
            ..Lines::default()
        };
        // The rank of the last session-level line (`None` before `v=`).
        let mut rank: Option<u8> = None;
        for (n, raw) in body.split(|&b| b == b'\n').enumerate() {
            let start = raw.iter().take_while(|&&b| b == b'\r').count();
            let line = raw.get(start..).unwrap_or_default();
            if line.is_empty() {
                continue;
            }
            let (key, value) = match line {
                [k, b'=', rest @ ..] => match (std::str::from_utf8(rest), *k) {
                    (Ok(v), k) => (k, v.trim()),
                    (Err(_), b's' | b'i' | b'e' | b'p' | b'k') => (*k, ""),
                    (Err(_), b'a') => continue,
                    (Err(e), k) => {
                        return Err(format!("line {} (`{}=`): {e}", n + 1, k as char));
                    }
                },
                _ => {
                    return Err(format!(
                        "`{}` is not a `<type>=<value>` line",
                        String::from_utf8_lossy(line)
                    ))
                }
            };
            if let Some(m) = sd.media.last_mut() {
                match key {
                    b'a' => {
                        sd.attrs.push(attribute(value));
                        m.attrs.end = sd.attrs.len();
                    }
                    b'c' => m.connection = Some(connection(value)?),
                    b'b' => bandwidth(value)?,
                    b'i' | b'k' => {}
                    b'm' => {
                        let next = media(value, sd.attrs.len())?;
                        sd.media.push(next);
                    }
                    _ => return Err(format!("`{}=` in a media description", key as char)),
                }
                continue;
            }
            if key == b'm' {
                if rank.is_none_or(|r| r < T_RANK) {
                    return Err("`m=` before a `t=` line".into());
                }
                sd.session_attrs = sd.attrs.len();
                let m = media(value, sd.attrs.len())?;
                sd.media.push(m);
                continue;
            }
            let r = session_rank(key)
                .ok_or_else(|| format!("`{}=` at the session level", key as char))?;
            // Each in its order, once, but for `b=`, `t=`/`r=` and `a=` (repeated), and the
            // first three exactly `v=`, `o=`, `s=`; `r=` only after a `t=`.
            let in_order = match rank {
                None => r == 0,
                Some(cur) if cur < 2 => r == cur + 1,
                Some(cur) => {
                    r > cur && key != b'r' && (r <= T_RANK || cur >= T_RANK)
                        || r == cur && matches!(key, b'b' | b't' | b'r' | b'a')
                }
            };
            if !in_order {
                return Err(format!("`{}=` out of order", key as char));
            }
            rank = Some(r);
            match key {
                b'v' => match value.parse::<u32>() {
                    Ok(0) => {}
                    Ok(_) => return Err(format!("`v={value}`: not version 0")),
                    Err(e) => return Err(format!("`v={value}`: {e}")),
                },
                b'o' => origin(value)?,
                b'c' => sd.connection = Some(connection(value)?),
                b'b' => bandwidth(value)?,
                b't' => {
                    let mut f = value.split_whitespace();
                    match (f.next(), f.next()) {
                        (Some(a), Some(b))
                            if a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok() => {}
                        _ => return Err(format!("`t={value}`")),
                    }
                }
                b'r' => {
                    let f: Vec<&str> = value.split_whitespace().collect();
                    if f.len() < 3 || !f.iter().all(|u| time_units(u).is_some()) {
                        return Err(format!("`r={value}`"));
                    }
                }
                b'z' => {
                    let f: Vec<&str> = value.split_whitespace().collect();
                    let pairs_ok = f.chunks(2).all(|p| match p {
                        [t, o] => t.parse::<u64>().is_ok() && time_units(o).is_some(),
                        _ => false,
                    });
                    if !pairs_ok {
                        return Err(format!("`z={value}`"));
                    }
                }
                b'a' => sd.attrs.push(attribute(value)),
                _ => {}
            }
        }
        // A description ends after its time description (or in a media description).
        if sd.media.is_empty() && rank.is_none_or(|r| r < T_RANK) {
            return Err("no `t=` line".into());
        }
        if sd.media.is_empty() {
            sd.session_attrs = sd.attrs.len();
        }
        Ok(sd)
    }
}

/// An `a=` line's value as (name, value after the first `:`).
fn attribute(value: &str) -> (&str, Option<&str>) {
    match value.split_once(':') {
        Some((k, v)) => (k, Some(v)),
        None => (value, None),
    }
}

/// A `c=` line's address (`IN IP4|IP6 [address]`).
fn connection(value: &str) -> Result<Option<&str>, String> {
    let mut f = value.split_whitespace();
    match (f.next(), f.next()) {
        (Some("IN"), Some("IP4" | "IP6")) => Ok(f.next()),
        _ => Err(format!("`c={value}`")),
    }
}

/// An `o=` line: six fields, numeric session id and version, `IN`, `IP4` or `IP6`.
fn origin(value: &str) -> Result<(), String> {
    let mut f = value.split_whitespace();
    let _user = f.next();
    let numeric = |x: Option<&str>| x.is_some_and(|x| x.parse::<u64>().is_ok());
    let ok = numeric(f.next())
        && numeric(f.next())
        && f.next() == Some("IN")
        && matches!(f.next(), Some("IP4" | "IP6"))
        && f.next().is_some()
        && f.next().is_none();
    if ok {
        Ok(())
    } else {
        Err(format!("`o={value}`"))
    }
}

/// A `b=` line: `<type>:<number>`, the type `CT`, `AS`, `TIAS` or `X-…`.
fn bandwidth(value: &str) -> Result<(), String> {
    let mut parts = value.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(n), None)
            if (t.starts_with("X-") || matches!(t, "CT" | "AS" | "TIAS"))
                && n.parse::<u64>().is_ok() =>
        {
            Ok(())
        }
        _ => Err(format!("`b={value}`")),
    }
}

/// A time with an optional unit (`d`, `h`, `m`, `s`), in seconds (`r=`, `z=` lines).
fn time_units(value: &str) -> Option<i64> {
    let (num, factor) = match value.as_bytes().last() {
        Some(b'd') => (value.get(..value.len() - 1)?, 86_400),
        Some(b'h') => (value.get(..value.len() - 1)?, 3_600),
        Some(b'm') => (value.get(..value.len() - 1)?, 60),
        Some(b's') => (value.get(..value.len() - 1)?, 1),
        _ => (value, 1),
    };
    num.parse::<i64>().ok()?.checked_mul(factor)
}

/// An `m=` line: `<media> <port>[/<count>] <proto> <format>…`, the media and each part of
/// the protocol among those the `sdp` crate knew.
fn media(value: &str, attrs_at: usize) -> Result<MediaLines<'_>, String> {
    let bad = || format!("`m={value}`");
    let mut f = value.split_whitespace();
    let (Some(media), Some(port), Some(proto), Some(_)) = (f.next(), f.next(), f.next(), f.next())
    else {
        return Err(bad());
    };
    if !matches!(
        media,
        "audio" | "video" | "text" | "application" | "message" | "image"
    ) {
        return Err(bad());
    }
    let mut port_parts = port.split('/');
    let port: u16 = port_parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| bad())?;
    if let Some(count) = port_parts.next() {
        count.parse::<i32>().map_err(|_| bad())?;
    }
    let known = |p: &str| {
        matches!(
            p,
            "UDP" | "RTP" | "AVP" | "SAVP" | "SAVPF" | "TLS" | "DTLS" | "SCTP" | "AVPF" | "udptl"
        )
    };
    if !proto.split('/').all(known) {
        return Err(bad());
    }
    Ok(MediaLines {
        media,
        port,
        proto,
        line: value,
        connection: None,
        attrs: attrs_at..attrs_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn answer(m: &str, attrs: &str) -> Result<RemoteSdp, Error> {
        let body = format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {m}\r\n{attrs}");
        parse_answer(body.as_bytes())
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn picks_the_callee_choice() {
        let a = answer(
            "6000 RTP/AVP 8 101",
            "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.remote, addr("127.0.0.1:6000"));
        assert_eq!(a.rtcp, addr("127.0.0.1:6001"));
        assert_eq!((a.codec, a.event_pt), (Codec::Pcma, Some(101)));
        assert_eq!(a.direction, Direction::SendRecv);
        assert!(!a.rtcp_mux);
        let a = answer("6000 RTP/AVP 0 96", "a=rtpmap:96 telephone-event/8000\r\n");
        assert_eq!(
            a.map(|a| (a.codec, a.event_pt)).ok(),
            Some((Codec::Pcmu, Some(96)))
        );
        let a = answer("6000 RTP/AVP 18 8", "");
        assert_eq!(a.map(|a| a.codec).ok(), Some(Codec::Pcma));
    }

    #[test]
    fn events_accepted_on_the_answer_types_and_ours() {
        // Answer 96: keys on 96 (its type) and on 101 (ours, RFC 3264 §5.1) are both accepted.
        let a = answer(
            "6000 RTP/AVP 0 96",
            "a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.accepted_event_pts(), vec![96, 101]);
        // An answer that reuses 101 for another format: 101 is not a telephone-event.
        let a = answer(
            "6000 RTP/AVP 0 101 96",
            "a=rtpmap:101 opus/48000/2\r\na=rtpmap:96 telephone-event/8000\r\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.accepted_event_pts(), vec![96]);
        // No telephone-event in the answer: still ours (the far end may send what we offered).
        let a = answer("6000 RTP/AVP 0", "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.accepted_event_pts(), vec![101]);
    }

    #[test]
    fn direction_mux_and_rtcp_address() {
        let d = |attrs: &str| answer("6000 RTP/AVP 0", attrs).map(|a| a.direction).ok();
        assert_eq!(d("a=sendonly\r\n"), Some(Direction::SendOnly));
        assert_eq!(d("a=inactive\r\n"), Some(Direction::Inactive));
        assert_eq!(d("a=recvonly\r\n"), Some(Direction::RecvOnly));
        // Session-level direction applies when the media has none.
        let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=sendonly\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert_eq!(
            parse_answer(body.as_bytes()).map(|a| a.direction).ok(),
            Some(Direction::SendOnly)
        );
        // RFC 2543 hold: c=0.0.0.0.
        let body = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";
        assert_eq!(
            parse_answer(body.as_bytes()).map(|a| a.direction).ok(),
            Some(Direction::SendOnly)
        );
        let a = answer("6000 RTP/AVP 0", "a=rtcp-mux\r\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(a.rtcp_mux);
        assert_eq!(a.rtcp, addr("127.0.0.1:6000"));
        let a = answer("6000 RTP/AVP 0", "a=rtcp:7001 IN IP4 127.0.0.2\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.rtcp, addr("127.0.0.2:7001"));
        let a = answer("6000 RTP/AVP 0", "a=rtcp:7001\r\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.rtcp, addr("127.0.0.1:7001"));
    }

    #[test]
    fn no_common_codec_and_garbage() {
        assert!(matches!(
            answer("6000 RTP/AVP 18 9", "a=rtpmap:18 G729/8000\r\n"),
            Err(Error::CodecMismatch { .. })
        ));
        assert!(matches!(
            answer("0 RTP/AVP 0", ""),
            Err(Error::BadSdp { .. })
        ));
        assert!(matches!(parse_answer(b"hello"), Err(Error::BadSdp { .. })));
        // Text in another charset (RFC 4566 §5, `a=charset`) is not read: a Latin-1 session
        // name, information and keywords parse; a line that is read must be UTF-8.
        let latin1 = |c: &[u8]| {
            let mut b = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=Caf\xe9\r\ni=\xe9t\xe9\r\n".to_vec();
            b.extend_from_slice(c);
            b.extend_from_slice(b"t=0 0\r\na=keywds:caf\xe9\r\nm=audio 6000 RTP/AVP 8\r\n");
            parse_answer(&b)
        };
        let a = latin1(b"c=IN IP4 10.0.0.9\r\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.remote, addr("10.0.0.9:6000"));
        assert_eq!(a.codec, Codec::Pcma);
        assert!(matches!(
            latin1(b"c=IN IP4 10.0.0.9\xe9\r\n"),
            Err(Error::BadSdp { .. })
        ));
        assert!(matches!(
            parse_answer(&[0xff, 0xfe, 0x00]),
            Err(Error::BadSdp { .. })
        ));
    }

    #[test]
    fn offer_lists_both_laws_events_and_mux() {
        let o = offer(addr("127.0.0.1:4000"), 7);
        assert!(o.contains("m=audio 4000 RTP/AVP 0 8 101\r\n"));
        assert!(o.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(o.contains("a=rtcp-mux\r\n"));
        assert!(o.contains("a=sendrecv\r\n"));
    }

    #[test]
    fn the_offer_and_an_answer_byte_for_byte() {
        let o = LocalSdp::new(addr("[2001:db8::1]:4000"), 7).offer();
        assert_eq!(
            o,
            "v=0\r\no=crieur 7 7 IN IP6 2001:db8::1\r\ns=crieur\r\nc=IN IP6 2001:db8::1\r\n\
             t=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
             a=ptime:20\r\na=rtcp-mux\r\na=sendrecv\r\n"
        );
        let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                    m=video 7000 RTP/AVP 31\r\nm=audio 6000 RTP/AVP 0\r\na=sendonly\r\n\
                    m=image 9 udptl t38\r\n";
        let offer = parse_answer(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let a = LocalSdp::new(addr("10.0.0.1:4002"), 9).answer(&offer);
        assert_eq!(
            a,
            "v=0\r\no=crieur 9 9 IN IP4 10.0.0.1\r\ns=crieur\r\nc=IN IP4 10.0.0.1\r\n\
             t=0 0\r\nm=video 0 RTP/AVP 31\r\nm=audio 4002 RTP/AVP 0 8 101\r\n\
             a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=fmtp:101 0-15\r\na=ptime:20\r\na=recvonly\r\nm=image 0 udptl t38\r\n"
        );
    }

    #[test]
    fn version_moves_only_when_our_sdp_changes() {
        let mut l = LocalSdp::new(addr("127.0.0.1:4000"), 7);
        let first = l.offer();
        assert!(first.contains("o=crieur 7 7 IN IP4 127.0.0.1\r\n"));
        let same = answer("6000 RTP/AVP 0 101", "a=rtcp-mux\r\na=sendrecv\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.answer(&same), first);
        let hold = answer("6000 RTP/AVP 0 101", "a=rtcp-mux\r\na=sendonly\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let held = l.answer(&hold);
        assert!(held.contains("o=crieur 7 8 IN IP4"), "{held}");
        assert!(held.contains("a=recvonly\r\n"));
        assert_eq!(l.answer(&hold), held);
        let resumed = l.answer(&same);
        assert!(resumed.contains("o=crieur 7 9 IN IP4"), "{resumed}");
        assert!(resumed.contains("a=sendrecv\r\n"));
        let inactive = answer("6000 RTP/AVP 0", "a=inactive\r\n").unwrap_or_else(|e| panic!("{e}"));
        let off = l.answer(&inactive);
        assert!(
            off.contains("a=inactive\r\n") && !off.contains("rtcp-mux"),
            "{off}"
        );
        assert_eq!(l.version(), 10);
    }

    #[test]
    fn an_answer_mirrors_the_offers_m_lines_rejecting_all_but_audio() {
        let body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                    m=video 7000 RTP/AVP 31\r\n\
                    m=audio 6000 RTP/AVP 0\r\n\
                    m=image 9 udptl t38\r\n";
        let offer = parse_answer(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(offer.audio_index, 1);
        let mut l = LocalSdp::new(addr("127.0.0.1:4000"), 7);
        let a = l.answer(&offer);
        let m: Vec<&str> = a.lines().filter(|x| x.starts_with("m=")).collect();
        assert_eq!(
            m,
            [
                "m=video 0 RTP/AVP 31",
                "m=audio 4000 RTP/AVP 0 8 101",
                "m=image 0 udptl t38"
            ],
            "{a}"
        );
        // Parsable, and the same offer gets the same answer, version included.
        assert!(parse_answer(a.as_bytes()).is_ok());
        assert_eq!(l.answer(&offer), a);
    }

    /// What `parse_answer` was before it read the body by hand (the `sdp` crate's parse,
    /// then the same reading of its fields): the reference the reader is checked against.
    /// The fields' meaning (`encoding_is`, `direction_of`, `rtcp_address`) is shared with
    /// `parse_answer`, so this checks the line reader; the meaning has fixed-value tests
    /// (`channel_counts_host_names_and_the_last_port`).
    fn crate_parse(body: &[u8]) -> Result<RemoteSdp, Error> {
        let bad = |why: String| Error::BadSdp { why };
        let sd = sdp::SessionDescription::unmarshal(&mut std::io::Cursor::new(body))
            .map_err(|e| bad(e.to_string()))?;
        let (audio_index, media) = sd
            .media_descriptions
            .iter()
            .enumerate()
            .find(|(_, m)| m.media_name.media == "audio" && m.media_name.port.value > 0)
            .ok_or_else(|| bad("no active audio stream".into()))?;
        let m_lines = sd
            .media_descriptions
            .iter()
            .map(|m| {
                let n = &m.media_name;
                (
                    n.media.clone(),
                    n.protos.join("/"),
                    n.formats.first().cloned().unwrap_or_else(|| "0".into()),
                )
            })
            .collect();
        let conn = media
            .connection_information
            .as_ref()
            .or(sd.connection_information.as_ref())
            .and_then(|c| c.address.as_ref())
            .ok_or_else(|| bad("no connection address".into()))?;
        let ip: IpAddr = conn
            .address
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| bad("not an IP address".into()))?;
        let port = u16::try_from(media.media_name.port.value)
            .map_err(|_| bad("port out of range".into()))?;
        let attr = |key: &'static str| {
            media
                .attributes
                .iter()
                .filter(move |a| a.key == key)
                .map(|a| a.value.as_deref().unwrap_or(""))
        };
        let rtpmap = |pt: &str| -> Option<String> {
            attr("rtpmap").find_map(|v| {
                let mut w = v.split_whitespace();
                (w.next() == Some(pt)).then(|| w.next().unwrap_or("").to_ascii_lowercase())
            })
        };
        let formats = &media.media_name.formats;
        let codecs: Vec<Codec> = formats
            .iter()
            .filter_map(|f| match (f.as_str(), rtpmap(f).as_deref()) {
                (_, Some(m)) if encoding_is(m, "PCMU") => Some(Codec::Pcmu),
                (_, Some(m)) if encoding_is(m, "PCMA") => Some(Codec::Pcma),
                ("0", None) => Some(Codec::Pcmu),
                ("8", None) => Some(Codec::Pcma),
                _ => None,
            })
            .collect();
        let mut event_pts = Vec::new();
        let mut other_pts = Vec::new();
        for f in formats {
            let Ok(pt) = f.parse::<u8>() else { continue };
            match rtpmap(f) {
                Some(m) if encoding_is(&m, "telephone-event") => event_pts.push(pt),
                Some(_) if pt >= 96 => other_pts.push(pt),
                _ => {}
            }
        }
        let direction_in = |attrs: &[sdp::description::common::Attribute]| {
            attrs
                .iter()
                .rev()
                .find_map(|a| Direction::parse(a.key.as_str()))
        };
        let direction = direction_of(
            direction_in(&media.attributes),
            direction_in(&sd.attributes),
            ip,
        );
        let rtcp_mux = attr("rtcp-mux").next().is_some();
        let remote = SocketAddr::new(ip, port);
        let rtcp = rtcp_address(remote, rtcp_mux, attr("rtcp").next()).map_err(bad)?;
        match codecs.first() {
            Some(&codec) => Ok(RemoteSdp {
                remote,
                rtcp,
                rtcp_mux,
                codec,
                codecs,
                event_pt: event_pts.first().copied(),
                event_pts,
                other_pts,
                direction,
                m_lines,
                audio_index,
            }),
            None => Err(Error::CodecMismatch {
                answered: formats.join(" "),
            }),
        }
    }

    /// The two parses' results side by side: equal when both parse, the same error kind
    /// (and the same formats named in a codec mismatch) when neither does.
    /// A body that is not UTF-8 is compared with the crate's parse of it as read (the crate
    /// takes UTF-8 only): the text lines that are not UTF-8 as `-`, the `a=` lines that are
    /// not dropped (see `Lines::read`).
    fn agree(body: &[u8]) -> Result<(), String> {
        let as_read: Vec<u8> = if std::str::from_utf8(body).is_ok() {
            body.to_vec()
        } else {
            let mut out = Vec::new();
            for line in body.split_inclusive(|&b| b == b'\n') {
                let text = line.trim_ascii_end();
                match (text, std::str::from_utf8(text)) {
                    (_, Ok(_)) | ([_], _) | ([_, _], _) => out.extend_from_slice(line),
                    ([k @ (b's' | b'i' | b'e' | b'p' | b'k'), b'=', ..], Err(_)) => {
                        out.extend_from_slice(&[*k, b'=', b'-', b'\r', b'\n'])
                    }
                    ([b'a', b'=', ..], Err(_)) => {}
                    (_, Err(_)) => out.extend_from_slice(line),
                }
            }
            out
        };
        match (parse_answer(body), crate_parse(&as_read)) {
            (Ok(a), Ok(b)) if a == b => Ok(()),
            (Err(Error::BadSdp { .. }), Err(Error::BadSdp { .. })) => Ok(()),
            (
                Err(Error::CodecMismatch { answered: a }),
                Err(Error::CodecMismatch { answered: b }),
            ) if a == b => Ok(()),
            (ours, theirs) => Err(format!(
                "{:?}\nours:   {ours:?}\ntheirs: {theirs:?}",
                String::from_utf8_lossy(body)
            )),
        }
    }

    #[test]
    fn the_reader_agrees_with_the_sdp_crate_on_known_bodies() {
        let good = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";
        let bodies = [
            // sipp's uas answer, a carrier's with session attributes and bandwidth, the
            // order rules (RFC 4566 §5), and what each line's fields must be.
            format!("{good}m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"),
            "v=0\r\no=x 1 2 IN IP6 ::1\r\ns=x\r\ni=info\r\ne=a@b\r\np=+1\r\nc=IN IP6 ::1\r\nb=AS:64\r\nb=X-YZ:1\r\nt=0 0\r\nr=7d 1h 0 25h\r\nt=1 2\r\nz=2882844526 -1h 2898848070 0\r\nk=clear:x\r\na=sendonly\r\na=tool:x\r\nm=video 0 RTP/AVP 31\r\nm=audio 6000/2 RTP/SAVP 8 101\r\ni=t\r\nc=IN IP6 ::2\r\nb=TIAS:64000\r\nk=prompt\r\na=rtpmap:101 Telephone-Event/8000\r\na=rtcp:6001 IN IP6 ::3\r\n".into(),
            format!("{good}m=audio 6000 RTP/AVP 18\r\n"),
            format!("{good}m=audio 6000 RTP/AVP 0\r\nc=IN IP4\r\n"),
            format!("{good}m=audio 6000 RTP/AVP 0\r\nx=1\r\n"),
            format!("{good}m=audio 6000 XRTP/AVP 0\r\n"),
            format!("{good}m=audio 6000 RTP/AVP\r\n"),
            format!("{good}m=audio +6000 RTP/AVP 0\r\n"),
            format!("{good}m=audio 70000 RTP/AVP 0\r\n"),
            format!("{good}m=audio 6000/x RTP/AVP 0\r\n"),
            format!("{good}m=fax 6000 RTP/AVP 0\r\n"),
            format!("{good}a=x\r\nm=audio 6000 RTP/AVP 0\r\n\r\n\n"),
            format!("{good}m=audio 6000 RTP/AVP 0\r\n  "),
            format!("{good}m=audio 6000 RTP/AVP 0\r\nab"),
            format!("{good}m=audio 6000 RTP/AVP 0\r\nb=AS\r\n"),
            format!("{good}m=audio 6000 RTP/AVP 0\ra=x\r\n"),
            format!("{good}r=1 2\r\nm=audio 6000 RTP/AVP 0\r\n"),
            format!("{good}z=1\r\nm=audio 6000 RTP/AVP 0\r\n"),
            format!("{good}k=x\r\nz=1 1\r\nm=audio 6000 RTP/AVP 0\r\n"),
            format!("{good}t=x 0\r\nm=audio 6000 RTP/AVP 0\r\n"),
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 6000 RTP/AVP 0\r\n".into(),
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n".into(),
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nb=AS:1\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n".into(),
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\ne=a\r\ne=b\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n".into(),
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\ne=a\r\np=b\r\nc=IN IP4 1.1.1.1\r\nb=AS:1\r\nb=CT:2\r\nt=0 0\r\nr=1 2 3\r\nt=1 1\r\nk=x\r\na=x\r\na=y\r\nm=audio 1 RTP/AVP 0\r\n".into(),
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nr=1 2 3\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n".into(),
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nz=1 1\r\nz=2 2\r\nm=audio 1 RTP/AVP 0\r\n".into(),
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nk=x\r\nk=y\r\nm=audio 1 RTP/AVP 0\r\n".into(),
            "v=1\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n".into(),
            "v=0\r\no=- x 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n".into(),
            "v=0\r\no=- 1 1 IN IP4\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n".into(),
            "v=0\r\ns=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n".into(),
            format!("{good}m=audio 6000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"),
            format!("{good}m=audio 6000 RTP/AVP 8 0\r\na=rtpmap:8 G729/8000\r\na=rtpmap:0 PCMU/8000\r\n"),
            "\r\n\nv=0\no=- 1 1 IN IP4 1.2.3.4\ns=-\nt=0 0\nm=audio 5 RTP/AVP 8\n".into(),
            String::new(),
            "hello".into(),
        ];
        for b in &bodies {
            agree(b.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        }
        agree(&[0xff, 0xfe, 0x00]).unwrap_or_else(|e| panic!("{e}"));
        // Not UTF-8: an attribute (skipped), a session name (not read), a connection line
        // (refused).
        for (head, tail) in [
            (format!("{good}m=audio 6000 RTP/AVP 0\r\na=x"), ""),
            (
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=Caf".to_string(),
                "\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
            ),
            (
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 1.1.1.1".to_string(),
                "\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n",
            ),
        ] {
            let mut invalid = head.into_bytes();
            invalid.push(0xe9);
            invalid.extend_from_slice(tail.as_bytes());
            agree(&invalid).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Values for each line type, good and bad.
    const LINES: &[(&str, &[&str])] = &[
        ("v", &["0", "1", "x", "00"]),
        (
            "o",
            &[
                "- 1 1 IN IP4 127.0.0.1",
                "- 2 3 IN IP6 ::1",
                "- x 1 IN IP4 a",
                "- 1 1 IN IP4",
                "- 1 1 XX IP4 a",
            ],
        ),
        ("s", &["-", ""]),
        ("i", &["x"]),
        ("e", &["a@b"]),
        ("p", &["+1"]),
        ("k", &["clear:x"]),
        (
            "c",
            &[
                "IN IP4 127.0.0.2",
                "IN IP4 0.0.0.0",
                "IN IP6 ::1",
                "IN IP4",
                "IN IP5 1.1.1.1",
                "IN IP4 1.1.1.1/127",
                "IN IP4 host",
            ],
        ),
        ("b", &["AS:64", "X-Y:1", "AS", "ZZ:1", "TIAS:x", "CT:1:2"]),
        ("t", &["0 0", "1 2", "0", "x 0"]),
        ("r", &["7d 1h 0 25h", "1 2", "1 2 3", "x 1 2"]),
        ("z", &["1 -1h", "1", "", "1 x"]),
        (
            "a",
            &[
                "rtpmap:0 PCMU/8000",
                "rtpmap:8 pcma/8000",
                "rtpmap:8 PCMA/8000",
                "rtpmap:0 G729/8000",
                "rtpmap:101 telephone-event/8000",
                "rtpmap:101 Telephone-Event/8000",
                "rtpmap:96 telephone-event/8000",
                "rtpmap:96 opus/48000/2",
                "rtpmap:101 opus/48000/2",
                "rtpmap:0 PCMU/8000/1",
                "rtpmap:101 telephone-event/8000/1",
                "rtpmap:8 PCMA/8000/2",
                "fmtp:101 0-15",
                "sendrecv",
                "sendonly",
                "recvonly",
                "inactive",
                "rtcp-mux",
                "rtcp:7001",
                "rtcp:7001 IN IP4 127.0.0.3",
                "rtcp:7001 IN IP4 rtcp.example.net",
                "rtcp:x",
                "x",
            ],
        ),
        (
            "m",
            &[
                "audio 6000 RTP/AVP 0 8 101",
                "audio 0 RTP/AVP 0",
                "audio 6002 RTP/AVP 8 96",
                "audio 6000 RTP/AVP 18 101",
                "video 7000 RTP/AVP 31",
                "image 9 udptl t38",
                "audio 6000/2 RTP/SAVP 101 0",
                "audio x RTP/AVP 0",
                "audio 6000 RTP/XX 0",
                "audio 6000 RTP/AVP",
                "fax 1 RTP/AVP 0",
                "audio +6004 RTP/AVP 0",
            ],
        ),
        ("x", &["1"]),
    ];

    /// One line of a description: a type and a value among those real descriptions hold,
    /// broken ones, and a few words of any of them; spaces around it, CRLF or LF after it.
    fn line() -> impl Strategy<Value = String> {
        let words: Vec<&str> = LINES
            .iter()
            .flat_map(|(_, vs)| vs.iter().flat_map(|v| v.split(' ')))
            .collect();
        let value = prop_oneof![
            4 => (0..LINES.len(), any::<prop::sample::Index>()).prop_map(|(k, i)| {
                let (key, vs) = LINES[k];
                format!("{key}={}", i.get(vs))
            }),
            1 => (0..LINES.len(), prop::collection::vec(prop::sample::select(words), 0..6)).prop_map(|(k, ws)| {
                format!("{}={}", LINES[k].0, ws.join(" "))
            }),
            1 => prop::sample::select(vec!["", " ", "hello", "=x", "a", "\r"]).prop_map(str::to_owned),
        ];
        (value, any::<bool>(), any::<bool>()).prop_map(|(v, pad, lf)| {
            let v = if pad {
                v.replacen('=', "= ", 1) + " "
            } else {
                v
            };
            format!("{v}{}", if lf { "\n" } else { "\r\n" })
        })
    }

    fn base() -> Vec<String> {
        [
            "v=0",
            "o=- 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            "m=audio 6000 RTP/AVP 0 8 101",
            "a=rtpmap:101 telephone-event/8000",
        ]
        .iter()
        .map(|l| format!("{l}\r\n"))
        .collect()
    }

    /// The values of `LINES` for one line type.
    fn values(key: &str) -> Vec<&'static str> {
        LINES
            .iter()
            .find(|(k, _)| *k == key)
            .map_or_else(Vec::new, |(_, vs)| vs.to_vec())
    }

    /// A description in a valid order: its `c=` and `m=` values and its session- and
    /// media-level attributes drawn from `LINES` (most of these both sides accept, so
    /// their reading is compared, not just their rejection).
    fn ordered() -> impl Strategy<Value = String> {
        let a = || prop::collection::vec(prop::sample::select(values("a")), 0..4);
        (
            // The `c=` values that are addresses (a bad one rejects the whole body).
            prop::sample::select(
                values("c")
                    .into_iter()
                    .filter(|c| c.split(' ').count() == 3 && !c.contains("IP5"))
                    .collect::<Vec<_>>(),
            ),
            prop::sample::select(values("m")),
            a(),
            a(),
            any::<bool>(),
        )
            .prop_map(|(c, m, session, media, lf)| {
                let end = if lf { "\n" } else { "\r\n" };
                let mut body =
                    format!("v=0{end}o=- 1 1 IN IP4 127.0.0.1{end}s=-{end}c={c}{end}t=0 0{end}");
                for a in session {
                    body += &format!("a={a}{end}");
                }
                body += &format!("m={m}{end}");
                for a in media {
                    body += &format!("a={a}{end}");
                }
                body
            })
    }

    type Edit = (usize, usize, usize, String);

    /// Up to four lines inserted, replaced, swapped, repeated or dropped.
    fn edits() -> impl Strategy<Value = Vec<Edit>> {
        prop::collection::vec((0usize..5, 0usize..12, 0usize..12, line()), 0..5)
    }

    /// [`base`] with `edits` applied, as one body.
    fn edited(edits: Vec<Edit>) -> String {
        let mut lines = base();
        for (op, i, j, l) in edits {
            let n = lines.len();
            match op {
                0 => lines.insert(i % (n + 1), l),
                1 if n > 0 => lines[i % n] = l,
                2 if n > 0 => lines.swap(i % n, j % n),
                3 if n > 0 => {
                    let l = lines[i % n].clone();
                    lines.insert(i % n, l);
                }
                _ if n > 0 => {
                    lines.remove(i % n);
                }
                _ => {}
            }
        }
        lines.concat()
    }

    /// The properties below compare what both sides read only where both accept: a share of
    /// their bodies must be accepted (a reader and an oracle that reject everything would
    /// agree) — of the edited ones, which mostly test the order rules, some not the untouched
    /// base; of the ordered ones, which test the reading, a quarter read (accepted, or a codec
    /// mismatch, whose formats are compared).
    #[test]
    fn the_edited_bodies_are_often_accepted_by_both() {
        use proptest::strategy::ValueTree;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut both, mut edited_both, mut cases) = (0, 0, 0);
        let base = base().concat();
        for _ in 0..2_000 {
            let tree = edits()
                .new_tree(&mut runner)
                .unwrap_or_else(|e| panic!("{e}"));
            let body = edited(tree.current());
            cases += 1;
            if parse_answer(body.as_bytes()).is_ok() && crate_parse(body.as_bytes()).is_ok() {
                both += 1;
                edited_both += usize::from(body != base);
            }
        }
        assert!(both * 5 >= cases, "{both} of {cases} accepted by both");
        assert!(
            edited_both * 50 >= cases,
            "{edited_both} edited of {cases} accepted by both"
        );
        let both = (0..2_000)
            .filter(|_| {
                let body = ordered()
                    .new_tree(&mut runner)
                    .unwrap_or_else(|e| panic!("{e}"))
                    .current();
                // Read, by both: accepted, or a codec mismatch naming the formats.
                let read = |r: Result<RemoteSdp, Error>| {
                    matches!(r, Ok(_) | Err(Error::CodecMismatch { .. }))
                };
                read(parse_answer(body.as_bytes())) && read(crate_parse(body.as_bytes()))
            })
            .count();
        assert!(
            both * 4 >= 2_000,
            "{both} of 2,000 ordered bodies read by both"
        );
    }

    /// What the reader's fields mean, against fixed values (the oracle above shares this
    /// reading, so it cannot check it): an rtpmap's channel count of 1 is mono (RFC 8866
    /// §6.6), 2 is not ours; `a=rtcp` naming a host keeps its port; port 65535 leaves no
    /// port for RTCP unless it is muxed.
    #[test]
    fn channel_counts_host_names_and_the_last_port() {
        let good = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n";
        let read = |media: &str| parse_answer(format!("{good}{media}").as_bytes());
        let a = read("m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000/1\r\na=rtpmap:101 telephone-event/8000/1\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.codec, Codec::Pcmu);
        assert_eq!(a.event_pts, vec![101]);
        let a = read("m=audio 6000 RTP/AVP 8\r\na=rtpmap:8 pcma/8000\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.codec, Codec::Pcma);
        assert!(matches!(
            read("m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000/2\r\n"),
            Err(Error::CodecMismatch { .. })
        ));
        assert!(matches!(
            read("m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/16000\r\n"),
            Err(Error::CodecMismatch { .. })
        ));
        let a = read("m=audio 6000 RTP/AVP 0\r\na=rtcp:7001 IN IP4 rtcp.example.net\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.rtcp, SocketAddr::from(([127, 0, 0, 1], 7001)));
        let a = read("m=audio 6000 RTP/AVP 0\r\na=rtcp:7001 IN IP4 127.0.0.3\r\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.rtcp, SocketAddr::from(([127, 0, 0, 3], 7001)));
        assert!(matches!(
            read("m=audio 65535 RTP/AVP 0\r\n"),
            Err(Error::BadSdp { .. })
        ));
        let a = read("m=audio 65535 RTP/AVP 0\r\na=rtcp-mux\r\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.rtcp, a.remote);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        /// A valid description with lines inserted, replaced, swapped or dropped: the reader
        /// and the `sdp` crate accept the same and read the same.
        #[test]
        fn the_reader_agrees_with_the_sdp_crate(
            edits in edits(),
        ) {
            let body = edited(edits);
            prop_assert!(agree(body.as_bytes()).is_ok(), "{}", agree(body.as_bytes()).err().unwrap_or_default());
        }

        /// A description in a valid order with drawn values: both accept the same and read
        /// the same.
        #[test]
        fn the_reader_agrees_with_the_sdp_crate_on_ordered_bodies(body in ordered()) {
            prop_assert!(agree(body.as_bytes()).is_ok(), "{}", agree(body.as_bytes()).err().unwrap_or_default());
        }
    }
}
