//! SDP offer/answer (RFC 3264) for one audio stream: G.711 plus telephone-events.

use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};

use crate::g711::Codec;
use crate::Error;

/// Payload type we offer for telephone-event/8000.
pub const OFFER_EVENT_PT: u8 = 101;

/// Our offer: PCMU, PCMA and telephone-event/8000 on `rtp` (the RTP socket's address).
pub fn offer(rtp: SocketAddr, session_id: u64) -> String {
    let ip = rtp.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\n\
         o=crieur {session_id} {session_id} IN {family} {ip}\r\n\
         s=crieur\r\n\
         c=IN {family} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 {OFFER_EVENT_PT}\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:{OFFER_EVENT_PT} telephone-event/8000\r\n\
         a=fmtp:{OFFER_EVENT_PT} 0-15\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n",
        port = rtp.port()
    )
}

/// What the callee chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// Where to send RTP.
    pub remote: SocketAddr,
    /// The audio codec (the first of the answer's formats that we offered).
    pub codec: Codec,
    /// The payload type of telephone-event, if the callee accepted it.
    pub event_pt: Option<u8>,
}

/// Parses the callee's answer. A callee that accepts neither PCMU nor PCMA is
/// [`Error::CodecMismatch`]; an unparsable one [`Error::BadSdp`].
pub fn parse_answer(body: &[u8]) -> Result<Answer, Error> {
    let bad = |why: String| Error::BadSdp { why };
    let sd = sdp::SessionDescription::unmarshal(&mut Cursor::new(body))
        .map_err(|e| bad(e.to_string()))?;
    let media = sd
        .media_descriptions
        .iter()
        .find(|m| m.media_name.media == "audio" && m.media_name.port.value > 0)
        .ok_or_else(|| bad("no active audio stream".into()))?;
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
    // rtpmap lines: "<pt> <name>/<rate>[/<channels>]"
    let rtpmap = |pt: &str| -> Option<String> {
        media.attributes.iter().find_map(|a| {
            let v = a.value.as_deref()?;
            (a.key == "rtpmap" && v.split_whitespace().next() == Some(pt)).then(|| {
                v.split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .to_ascii_lowercase()
            })
        })
    };
    let codec =
        media
            .media_name
            .formats
            .iter()
            .find_map(|f| match (f.as_str(), rtpmap(f).as_deref()) {
                (_, Some("pcmu/8000")) | ("0", None) => Some(Codec::Pcmu),
                (_, Some("pcma/8000")) | ("8", None) => Some(Codec::Pcma),
                _ => None,
            });
    let event_pt = media
        .media_name
        .formats
        .iter()
        .find(|f| rtpmap(f).is_some_and(|m| m == "telephone-event/8000"))
        .and_then(|f| f.parse().ok());
    match codec {
        Some(codec) => Ok(Answer {
            remote: SocketAddr::new(ip, port),
            codec,
            event_pt,
        }),
        None => Err(Error::CodecMismatch {
            answered: media.media_name.formats.join(" "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(m: &str, attrs: &str) -> Result<Answer, Error> {
        let body = format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {m}\r\n{attrs}");
        parse_answer(body.as_bytes())
    }

    #[test]
    fn picks_the_callee_choice() {
        let a = answer(
            "6000 RTP/AVP 8 101",
            "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        assert_eq!(
            a.ok(),
            Some(Answer {
                remote: "127.0.0.1:6000".parse().unwrap_or_else(|_| unreachable!()),
                codec: Codec::Pcma,
                event_pt: Some(101)
            })
        );
        let a = answer("6000 RTP/AVP 0 96", "a=rtpmap:96 telephone-event/8000\r\n");
        assert_eq!(
            a.map(|a| (a.codec, a.event_pt)).ok(),
            Some((Codec::Pcmu, Some(96)))
        );
        let a = answer("6000 RTP/AVP 18 8", "");
        assert_eq!(a.map(|a| a.codec).ok(), Some(Codec::Pcma));
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
    fn offer_lists_both_laws_and_events() {
        let o = offer(
            "127.0.0.1:4000".parse().unwrap_or_else(|_| unreachable!()),
            7,
        );
        assert!(o.contains("m=audio 4000 RTP/AVP 0 8 101\r\n"));
        assert!(o.contains("a=rtpmap:101 telephone-event/8000\r\n"));
    }
}
