//! SDP offer/answer (RFC 3264) for one audio stream: G.711 plus telephone-events, with the
//! stream's direction (RFC 3264 §5.1, §6.1), RTCP address (RFC 3605, RFC 3550 §11) and
//! `rtcp-mux` (RFC 5761).

use std::io::Cursor;
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

    fn render(&mut self) -> String {
        let ip = self.rtp.ip();
        let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
        let mux = if self.rtcp_mux { "a=rtcp-mux\r\n" } else { "" };
        // The rejected lines before ours keep their index below our audio line's.
        let audio_at = self
            .rejected
            .iter()
            .enumerate()
            .take_while(|(k, (i, _))| k == i)
            .count();
        let (before, after) = self.rejected.split_at(audio_at);
        let lines = |ls: &[(usize, String)]| ls.iter().map(|(_, l)| l.as_str()).collect::<String>();
        let rest = format!(
            "s=crieur\r\n\
             c=IN {family} {ip}\r\n\
             t=0 0\r\n\
             {before}\
             m=audio {port} RTP/AVP 0 8 {OFFER_EVENT_PT}\r\n\
             a=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:{OFFER_EVENT_PT} telephone-event/8000\r\n\
             a=fmtp:{OFFER_EVENT_PT} 0-15\r\n\
             a=ptime:20\r\n\
             {mux}a={dir}\r\n\
             {after}",
            before = lines(before),
            after = lines(after),
            port = self.rtp.port(),
            dir = self.direction.as_str(),
        );
        if self.last.as_ref().is_some_and(|l| *l != rest) {
            self.version = self.version.wrapping_add(1);
        }
        let body = format!(
            "v=0\r\no=crieur {} {} IN {family} {ip}\r\n{rest}",
            self.session_id, self.version
        );
        self.last = Some(rest);
        body
    }
}

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

/// Parses the callee's answer (or a re-INVITE's offer). A description with neither PCMU nor
/// PCMA is [`Error::CodecMismatch`]; an unparsable one [`Error::BadSdp`].
pub fn parse_answer(body: &[u8]) -> Result<RemoteSdp, Error> {
    let bad = |why: String| Error::BadSdp { why };
    let sd = sdp::SessionDescription::unmarshal(&mut Cursor::new(body))
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
        .map_err(|_| {
            bad(format!(
                "connection address `{}` is not an IP address",
                conn.address
            ))
        })?;
    let port =
        u16::try_from(media.media_name.port.value).map_err(|_| bad("port out of range".into()))?;
    let attr = |key: &'static str| {
        media
            .attributes
            .iter()
            .filter(move |a| a.key == key)
            .map(|a| a.value.as_deref().unwrap_or(""))
    };
    // rtpmap lines: "<pt> <name>/<rate>[/<channels>]"
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
            (_, Some("pcmu/8000")) | ("0", None) => Some(Codec::Pcmu),
            (_, Some("pcma/8000")) | ("8", None) => Some(Codec::Pcma),
            _ => None,
        })
        .collect();
    let mut event_pts = Vec::new();
    let mut other_pts = Vec::new();
    for f in formats {
        let Ok(pt) = f.parse::<u8>() else { continue };
        match rtpmap(f) {
            Some(m) if m == "telephone-event/8000" => event_pts.push(pt),
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
    let mut direction = direction_in(&media.attributes)
        .or_else(|| direction_in(&sd.attributes))
        .unwrap_or(Direction::SendRecv);
    if ip.is_unspecified() {
        direction = if direction.sends() {
            Direction::SendOnly
        } else {
            Direction::Inactive
        };
    }
    let rtcp_mux = attr("rtcp-mux").next().is_some();
    let remote = SocketAddr::new(ip, port);
    // a=rtcp:<port> [IN IP4 <address>] (RFC 3605)
    let rtcp = if rtcp_mux {
        remote
    } else {
        attr("rtcp")
            .next()
            .and_then(|v| {
                let mut w = v.split_whitespace();
                let port: u16 = w.next()?.parse().ok()?;
                let ip = match (w.next(), w.next(), w.next()) {
                    (Some("IN"), Some(_), Some(a)) => a.parse().ok()?,
                    _ => ip,
                };
                Some(SocketAddr::new(ip, port))
            })
            .unwrap_or_else(|| SocketAddr::new(ip, port.wrapping_add(1)))
    };
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
