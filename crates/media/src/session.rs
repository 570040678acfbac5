//! One answered call's media, between the SIP edge ([`crate::uac`]) and the pacer: whom RTP
//! and RTCP are accepted from and sent to, which payload types carry keys, hold and resume,
//! codec and address changes from a new offer, and RTCP reports both ways.
//!
//! No clock is read here: the caller passes `now` (and the wall-clock time RTCP needs).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dtmf::{DtmfMethod, Rfc4733Receiver, ToneDetector};
use crate::g711::Codec;
use crate::pacer::Stream;
use crate::rtcp::{self, ReceiveStats, ReportBlock, SenderInfo};
use crate::rtp;
use crate::sdp::RemoteSdp;

/// Whom a socket accepts datagrams from: the address the far end's SDP named (RFC 3264 §5:
/// media is sent to and expected from the `c=`/`m=` address), or — with symmetric RTP
/// latching (for a far end behind NAT) — the first source heard, once per negotiated address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerFilter {
    expected: SocketAddr,
    latch: bool,
    latched: bool,
}

/// A datagram's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Accepted, and the filter latched to this new source: send there from now on.
    Latched(SocketAddr),
    Drop,
}

impl PeerFilter {
    pub fn new(expected: SocketAddr, latch: bool) -> Self {
        PeerFilter {
            expected,
            latch,
            latched: false,
        }
    }

    /// The address accepted (and sent to).
    pub fn peer(&self) -> SocketAddr {
        self.expected
    }

    pub fn check(&mut self, from: SocketAddr) -> Verdict {
        if from == self.expected {
            self.latched = true;
            Verdict::Accept
        } else if self.latch && !self.latched {
            self.latched = true;
            self.expected = from;
            Verdict::Latched(from)
        } else {
            Verdict::Drop
        }
    }

    /// A new offer/answer named `to`: accepted from now on (latching again if enabled).
    pub fn moved(&mut self, to: SocketAddr) {
        if to != self.expected {
            self.expected = to;
            self.latched = false;
        }
    }
}

/// RTCP as the call saw it, for the report and the audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtcpSummary {
    /// Compound RTCP packets we sent (SR, or RR while we were not sending; BYE included).
    pub sent: u32,
    /// Report blocks about our stream received from the far end (in its SRs and RRs).
    pub reports_received: u32,
    /// The latest of them: fraction lost (1/256), cumulative lost, jitter (1/8000 s).
    pub last_report: Option<ReportBlock>,
    /// The worst fraction lost any of them showed (1/256).
    pub worst_fraction_lost: u8,
    /// Round-trip time from the latest report that echoed one of our SRs.
    pub round_trip: Option<Duration>,
    /// The far end sent an RTCP BYE.
    pub bye_received: bool,
}

impl RtcpSummary {
    /// The latest fraction lost, 0.0 – 1.0.
    pub fn fraction_lost(&self) -> Option<f64> {
        self.last_report.map(|r| f64::from(r.fraction_lost) / 256.0)
    }
    /// The latest interarrival jitter in milliseconds (G.711's 8 kHz clock).
    pub fn jitter_ms(&self) -> Option<f64> {
        self.last_report.map(|r| f64::from(r.jitter) / 8.0)
    }
}

/// What an RTP datagram carried.
#[derive(Debug, Default)]
pub struct Heard {
    /// Keys completed by this packet.
    pub keys: Vec<(char, DtmfMethod)>,
    /// The audio packet, when it was one (header, payload).
    pub audio: Option<(rtp::RtpHeader, Vec<u8>)>,
    /// The packet was audio (its header: where its samples go in time): [`Media::last_audio`]
    /// holds it decoded.
    pub decoded: Option<rtp::RtpHeader>,
}

/// What applying a new SDP of the far end changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub moved_to: Option<SocketAddr>,
    pub codec: Option<Codec>,
    /// `Some(true)`: the far end stopped receiving (hold); `Some(false)`: it receives again.
    pub held: Option<bool>,
}

/// An answered call's media.
pub struct Media {
    codec: Codec,
    /// Every audio codec this session has sent us in, the current one first. Their payload
    /// types (static: 0 PCMU, 8 PCMA) keep their meaning for the whole session (RFC 3264
    /// §8.3.2, "because of the loose synchronization between signaling exchanges of SDP and
    /// the media stream"): packets the far end sent in the old law before our answer reached
    /// it still arrive after a switch, and are heard in their own law, not dropped.
    heard_codecs: Vec<Codec>,
    event_pts: Vec<u8>,
    stream: Stream,
    rtp_peer: PeerFilter,
    rtcp_peer: PeerFilter,
    rtcp_mux: bool,
    /// The far end receives (its direction is sendrecv or recvonly).
    far_receives: bool,
    ssrc: u32,
    cname: String,
    rfc4733: Rfc4733Receiver,
    tones: ToneDetector,
    pcm: Vec<i16>,
    digits: Vec<char>,
    stats: ReceiveStats,
    next_report: Instant,
    /// Packets sent when each of the last two reports left (RFC 3550 §6.4: a participant that
    /// sent nothing during the last two intervals sends an RR, not an SR).
    packets_at_reports: [u32; 2],
    pub rtcp: RtcpSummary,
}

impl Media {
    /// The media of a call answered with `answer` at `now`; `stream` sends with `ssrc`.
    /// `unit` is a uniform random number in [0, 1) for the first report's delay.
    pub fn new(
        answer: &RemoteSdp,
        stream: Stream,
        ssrc: u32,
        cname: String,
        latch: bool,
        now: Instant,
        unit: f64,
    ) -> Media {
        Media {
            codec: answer.codec,
            heard_codecs: vec![answer.codec],
            event_pts: answer.accepted_event_pts(),
            stream,
            rtp_peer: PeerFilter::new(answer.remote, latch),
            rtcp_peer: PeerFilter::new(answer.rtcp, latch),
            rtcp_mux: answer.rtcp_mux,
            far_receives: true,
            ssrc,
            cname,
            rfc4733: Rfc4733Receiver::default(),
            tones: ToneDetector::default(),
            pcm: Vec::with_capacity(rtp::SAMPLES_PER_PACKET),
            digits: Vec::new(),
            stats: ReceiveStats::new(now),
            next_report: now + rtcp::next_delay(true, unit),
            packets_at_reports: [0; 2],
            rtcp: RtcpSummary::default(),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Whether the far end receives our audio.
    pub fn far_receives(&self) -> bool {
        self.far_receives
    }

    /// RTCP is multiplexed on the RTP port (RFC 5761).
    pub fn rtcp_mux(&self) -> bool {
        self.rtcp_mux
    }

    /// The payload types telephone-events are accepted on.
    pub fn event_pts(&self) -> &[u8] {
        &self.event_pts
    }

    /// Applies the far end's new SDP (its offer in a re-INVITE/UPDATE, or its answer to our
    /// refresh) at `now`. `audio(codec)` gives the prompts encoded with a codec (message,
    /// confirmation, voicemail), for a codec switch. The caller checked it lists a codec we take.
    pub fn apply(
        &mut self,
        sdp: &RemoteSdp,
        now: Instant,
        audio: impl Fn(Codec) -> [Arc<[u8]>; 3],
    ) -> Changes {
        let mut changes = Changes::default();
        let codec = sdp.codec_keeping(self.codec);
        if codec != self.codec {
            self.codec = codec;
            self.stream.set_codec(codec.payload_type(), audio(codec));
            self.heard_codecs.retain(|&c| c != codec);
            self.heard_codecs.insert(0, codec);
            changes.codec = Some(codec);
        }
        // Keys stay accepted on every telephone-event type this session has named, unless
        // the new SDP gives that number to another format: a phone that keeps its old number
        // after a re-INVITE is still heard (a lost opt-out is the worst failure here).
        let mut pts = sdp.accepted_event_pts();
        for &old in &self.event_pts {
            if !pts.contains(&old) && !sdp.other_pts.contains(&old) {
                pts.push(old);
            }
        }
        self.event_pts = pts;
        // 0.0.0.0 (an RFC 2543 hold) is not an address to send to; its direction says hold.
        if !sdp.remote.ip().is_unspecified() {
            if sdp.remote != self.rtp_peer.peer() {
                self.stream.set_remote(sdp.remote);
                changes.moved_to = Some(sdp.remote);
            }
            self.rtp_peer.moved(sdp.remote);
            self.rtcp_peer.moved(sdp.rtcp);
            self.rtcp_mux = sdp.rtcp_mux;
        }
        let receives = sdp.direction.receives();
        if receives != self.far_receives {
            self.far_receives = receives;
            if receives {
                self.stream.resume(now);
            } else {
                self.stream.hold();
            }
            changes.held = Some(!receives);
        }
        changes
    }

    /// One datagram on the RTP socket from `from` at `now`: dropped unless it comes from the
    /// negotiated peer; RTCP when multiplexed; keys (RFC 4733 on any accepted event type,
    /// in-band on audio) and audio otherwise. `keep_audio`: return the audio packet.
    pub fn on_rtp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        wall_ntp: u64,
        keep_audio: bool,
    ) -> Heard {
        let mut heard = Heard::default();
        if rtcp::is_rtcp(datagram) {
            // RFC 5761 §4: RTCP on the RTP port (we offered rtcp-mux).
            self.on_rtcp(now, from, datagram, wall_ntp, true);
            return heard;
        }
        match self.rtp_peer.check(from) {
            Verdict::Accept => {}
            Verdict::Latched(to) => {
                tracing::info!(%to, "symmetric RTP: latched to the first source heard");
                self.stream.set_remote(to);
            }
            Verdict::Drop => {
                tracing::debug!(%from, "dropped RTP from a source that is not the call's peer");
                return heard;
            }
        }
        // Malformed datagrams are dropped (logged at debug), never fatal.
        let Ok((h, payload)) = rtp::parse(datagram) else {
            tracing::debug!("dropped a malformed RTP packet");
            return heard;
        };
        self.stats.on_rtp(now, h.ssrc, h.sequence, h.timestamp);
        if self.event_pts.contains(&h.payload_type) {
            match self.rfc4733.handle(h.timestamp, payload) {
                Ok(Some(d)) => heard.keys.push((d, DtmfMethod::Rfc4733)),
                Ok(None) => {}
                Err(_) => tracing::debug!("dropped a malformed telephone-event"),
            }
        } else if let Some(codec) = self
            .heard_codecs
            .iter()
            .copied()
            .find(|c| c.payload_type() == h.payload_type)
        {
            self.pcm.clear();
            self.pcm.extend(payload.iter().map(|&b| codec.decode(b)));
            self.digits.clear();
            self.tones.feed(&self.pcm, &mut self.digits);
            heard
                .keys
                .extend(self.digits.iter().map(|&d| (d, DtmfMethod::InBand)));
            heard.decoded = Some(h);
            if keep_audio {
                heard.audio = Some((h, payload.to_vec()));
            }
        }
        heard
    }

    /// The last audio packet heard, decoded (linear samples).
    pub fn last_audio(&self) -> &[i16] {
        &self.pcm
    }

    /// One datagram on the RTCP socket (or multiplexed on the RTP socket): accepted only from
    /// the far end's RTCP address; its reports about our stream are recorded.
    pub fn on_rtcp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        arrival_ntp: u64,
        muxed: bool,
    ) {
        let accepted = if muxed {
            // On the RTP port the RTP peer's address is the one to check.
            self.rtp_peer.peer() == from
        } else {
            self.rtcp_peer.check(from) != Verdict::Drop
        };
        if !accepted {
            tracing::debug!(%from, "dropped RTCP from a source that is not the call's peer");
            return;
        }
        let got = match rtcp::parse(datagram) {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(error = ?e, "dropped a malformed RTCP packet");
                return;
            }
        };
        if let Some(mid) = got.sr_ntp_middle {
            self.stats.on_sender_report(now, mid);
        }
        for b in got.blocks.iter().filter(|b| b.ssrc == self.ssrc) {
            self.rtcp.reports_received += 1;
            self.rtcp.worst_fraction_lost = self.rtcp.worst_fraction_lost.max(b.fraction_lost);
            self.rtcp.last_report = Some(*b);
            if let Some(rtt) = rtcp::round_trip(b, arrival_ntp) {
                self.rtcp.round_trip = Some(rtt);
            }
        }
        self.rtcp.bye_received |= got.bye;
    }

    /// When the next RTCP report is due.
    pub fn rtcp_due(&self) -> Instant {
        self.next_report
    }

    /// Sends our RTCP report now (an SR when we sent RTP in the last two intervals, else an
    /// RR; BYE appended when `bye`) from `rtcp_sock` — or the RTP socket when multiplexed —
    /// and schedules the next one. `wall_ntp`: the wall-clock time now in NTP format; `unit`
    /// a uniform random number in [0, 1) for the next delay.
    ///
    /// A BYE when we never sent an RTP or RTCP packet in this session is not sent at all:
    /// "a participant which never sent an RTP or RTCP packet MUST NOT send a BYE packet when
    /// they leave the group" (RFC 3550 §6.3.7) — a call hung up before its first packet, or
    /// one with nothing to play, leaves silently.
    pub fn send_rtcp(
        &mut self,
        now: Instant,
        wall_ntp: u64,
        unit: f64,
        sockets: (&UdpSocket, &UdpSocket),
        bye: bool,
    ) {
        let counters = self.stream.counters();
        let packets = counters.packets();
        if bye && packets == 0 && self.rtcp.sent == 0 {
            return;
        }
        let sending = packets != self.packets_at_reports[0];
        let sender = counters
            .last_packet()
            .filter(|_| sending)
            .map(|(ts, slot_us)| {
                let slot = self.stream.epoch() + Duration::from_micros(slot_us);
                // The RTP clock now: the last packet's timestamp plus the time since its slot.
                let elapsed = now.saturating_duration_since(slot).as_micros() / 125;
                SenderInfo {
                    ntp: wall_ntp,
                    rtp_ts: ts.wrapping_add(elapsed as u32),
                    packets,
                    octets: packets.wrapping_mul(rtp::SAMPLES_PER_PACKET as u32),
                }
            });
        let block = self.stats.report(now);
        let pkt = rtcp::compound(self.ssrc, sender.as_ref(), block.as_ref(), &self.cname, bye);
        let (rtp_sock, rtcp_sock) = sockets;
        let sent = if self.rtcp_mux {
            rtp_sock.send_to(&pkt, self.rtp_peer.peer())
        } else {
            rtcp_sock.send_to(&pkt, self.rtcp_peer.peer())
        };
        match sent {
            Ok(_) => self.rtcp.sent += 1,
            Err(e) => tracing::debug!(error = %e, "RTCP send"),
        }
        self.packets_at_reports = [self.packets_at_reports[1], packets];
        self.next_report = now + rtcp::next_delay(false, unit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn only_the_peer_is_accepted_unless_latching() {
        let mut f = PeerFilter::new(a("10.0.0.1:4000"), false);
        assert_eq!(f.check(a("10.0.0.9:4000")), Verdict::Drop);
        assert_eq!(f.check(a("10.0.0.1:4002")), Verdict::Drop);
        assert_eq!(f.check(a("10.0.0.1:4000")), Verdict::Accept);
        f.moved(a("10.0.0.2:5000"));
        assert_eq!(f.check(a("10.0.0.1:4000")), Verdict::Drop);
        assert_eq!(f.check(a("10.0.0.2:5000")), Verdict::Accept);

        // Latching: the first source wins, once; later strangers are dropped.
        let mut f = PeerFilter::new(a("10.0.0.1:4000"), true);
        assert_eq!(
            f.check(a("198.51.100.7:31000")),
            Verdict::Latched(a("198.51.100.7:31000"))
        );
        assert_eq!(f.check(a("198.51.100.7:31000")), Verdict::Accept);
        assert_eq!(f.check(a("10.0.0.1:4000")), Verdict::Drop);
        assert_eq!(f.check(a("203.0.113.1:4000")), Verdict::Drop);
        // The SDP's own address heard first: latched to it, nothing else.
        let mut f = PeerFilter::new(a("10.0.0.1:4000"), true);
        assert_eq!(f.check(a("10.0.0.1:4000")), Verdict::Accept);
        assert_eq!(f.check(a("198.51.100.7:31000")), Verdict::Drop);
    }

    fn sdp(m: &str, attrs: &str) -> RemoteSdp {
        let body = format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {m}\r\n{attrs}");
        crate::sdp::parse_answer(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The media of a call answered with `answer` at `now` (its stream on a pacer of its own;
    /// the shard lives as long as the stream).
    fn answered(answer: &RemoteSdp, now: Instant) -> Media {
        let pacer = crate::pacer::Pacer::new(1).unwrap_or_else(|e| panic!("{e}"));
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let p = rtp::Packetizer::new(0, 1, 0, 0, now);
        let stream = pacer.open(sock, answer.remote, p, tx);
        Media::new(answer, stream, 1, "x".into(), false, now, 0.5)
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; nothing is timed
    fn a_new_offer_moves_holds_switches_and_keeps_every_event_type() {
        let now = Instant::now();
        let answer = sdp("6000 RTP/AVP 0 96", "a=rtpmap:96 telephone-event/8000\r\n");
        let mut m = answered(&answer, now);
        assert_eq!(m.event_pts(), [96, 101]);
        let audio = |_: Codec| -> [Arc<[u8]>; 3] {
            [
                vec![0u8; 160].into(),
                vec![0u8; 160].into(),
                vec![0u8; 160].into(),
            ]
        };
        // Moved, held, PCMA only, events on 97: all four changes, 96 and 101 still heard.
        let offer = sdp(
            "7000 RTP/AVP 8 97",
            "a=rtpmap:97 telephone-event/8000\r\na=sendonly\r\n",
        );
        let c = m.apply(&offer, now, audio);
        assert_eq!(c.moved_to, Some(a("127.0.0.1:7000")));
        assert_eq!(c.codec, Some(Codec::Pcma));
        assert_eq!(c.held, Some(true));
        assert!(!m.far_receives());
        assert_eq!(m.event_pts(), [97, 101, 96]);
        // Resumed; 96 now names another format: no longer a telephone-event.
        let offer = sdp("7000 RTP/AVP 8 96", "a=rtpmap:96 opus/48000/2\r\n");
        let c = m.apply(&offer, now, audio);
        assert_eq!((c.moved_to, c.codec, c.held), (None, None, Some(false)));
        assert_eq!(m.event_pts(), [101, 97]);
        // Only from the new address.
        let ev = |from: &str, m: &mut Media| {
            let mut pkt = vec![0x80, 101, 0, 1, 0, 0, 0, 9, 0, 0, 0, 2];
            pkt.extend_from_slice(&[9, 0x8A, 0, 160]);
            m.on_rtp(now, a(from), &pkt, 0, false).keys
        };
        assert!(ev("127.0.0.1:6000", &mut m).is_empty());
        assert_eq!(ev("127.0.0.1:7000", &mut m), [('9', DtmfMethod::Rfc4733)]);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; nothing is timed
    fn no_rtcp_bye_from_a_session_that_sent_nothing() {
        let now = Instant::now();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        peer.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
        let port = peer.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        let answer = sdp(&format!("{port} RTP/AVP 0"), "a=rtcp-mux\r\n");
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 1500];
        let received = |buf: &mut [u8]| {
            // Loopback: a datagram sent is there at once.
            std::thread::sleep(Duration::from_millis(20));
            peer.recv_from(buf).ok().map(|(n, _)| n)
        };
        // Nothing sent yet: the BYE is not sent (RFC 3550 §6.3.7).
        let mut m = answered(&answer, now);
        m.send_rtcp(now, 0, 0.5, (&sock, &sock), true);
        assert_eq!(m.rtcp.sent, 0);
        assert_eq!(received(&mut buf), None);
        // After a report: the BYE goes, in a compound of its own.
        let mut m = answered(&answer, now);
        m.send_rtcp(now, 0, 0.5, (&sock, &sock), false);
        assert!(received(&mut buf).is_some());
        m.send_rtcp(now, 0, 0.5, (&sock, &sock), true);
        assert_eq!(m.rtcp.sent, 2);
        let n = received(&mut buf).unwrap_or_else(|| panic!("no RTCP BYE"));
        let got = rtcp::parse(&buf[..n]).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(got.bye);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; nothing is timed
    fn audio_in_the_old_law_arriving_after_a_switch_is_heard_in_that_law() {
        let now = Instant::now();
        let mut m = answered(&sdp("6000 RTP/AVP 0", ""), now);
        let audio =
            |_: Codec| -> [Arc<[u8]>; 3] { [vec![0u8; 160].into(), vec![].into(), vec![].into()] };
        let c = m.apply(&sdp("6000 RTP/AVP 8", ""), now, audio);
        assert_eq!(c.codec, Some(Codec::Pcma));
        let pkt = |pt: u8, seq: u8, byte: u8| {
            let mut p = vec![0x80, pt, 0, seq, 0, 0, 0, 9, 0, 0, 0, 2];
            p.extend_from_slice(&[byte; 160]);
            p
        };
        // A μ-law packet sent before the far end had our answer: kept, decoded as μ-law.
        let h = m.on_rtp(now, a("127.0.0.1:6000"), &pkt(0, 1, 0x80), 0, true);
        assert_eq!(h.decoded.map(|h| (h.sequence, h.timestamp)), Some((1, 9)));
        assert_eq!(h.audio.map(|(h, _)| h.payload_type), Some(0));
        assert_eq!(m.last_audio()[0], Codec::Pcmu.decode(0x80));
        // Then A-law, decoded as A-law.
        let h = m.on_rtp(now, a("127.0.0.1:6000"), &pkt(8, 2, 0x80), 0, true);
        assert!(h.decoded.is_some());
        assert_eq!(m.last_audio()[0], Codec::Pcma.decode(0x80));
        assert_ne!(Codec::Pcmu.decode(0x80), Codec::Pcma.decode(0x80));
        // A format never negotiated is not audio.
        assert!(m
            .on_rtp(now, a("127.0.0.1:6000"), &pkt(3, 3, 0), 0, true)
            .decoded
            .is_none());
    }
}
