//! RTCP (RFC 3550 §6), sans I/O: the compound packets a sender sends (SR or RR, SDES CNAME,
//! BYE), the far end's reception reports parsed, the statistics our own report block on the
//! far end's stream is made of (RFC 3550 A.1, A.3, A.8) and the report interval.
//!
//! Written here rather than taken from a crate: four fixed packet layouts, and the
//! well-kept `rtcp` crate (webrtc-rs) brings `webrtc-util` and its dependency tree for them.

use std::time::{Duration, Instant};

/// RTCP packet types.
const SR: u8 = 200;
const RR: u8 = 201;
const SDES: u8 = 202;
const BYE: u8 = 203;
/// The nominal report interval (RFC 3550 §6.2 minimum).
pub const INTERVAL: Duration = Duration::from_secs(5);

/// One reception report block (RFC 3550 §6.4.1), about the stream of `ssrc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Packets lost since the stream began (24-bit signed: duplicates can make it negative).
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    /// Interarrival jitter, in RTP timestamp units (1/8000 s for G.711).
    pub jitter: u32,
    /// The middle 32 bits of the NTP timestamp of the last SR the reporter got from us.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// What our sender report says about what we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Wall-clock time of the report (NTP format, RFC 3550 §4).
    pub ntp: u64,
    /// The same instant on the RTP clock.
    pub rtp_ts: u32,
    pub packets: u32,
    /// Payload octets sent.
    pub octets: u32,
}

/// Why a datagram is not a usable RTCP compound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpParseError {
    TooShort,
    BadVersion,
    BadLength,
}

/// What one received compound packet said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// The SSRC of the reporter (of its SR or RR).
    pub from: Option<u32>,
    /// The middle 32 bits of its SR's NTP timestamp (for our LSR), when it sent an SR.
    pub sr_ntp_middle: Option<u32>,
    /// Every report block it carried (in SRs and RRs).
    pub blocks: Vec<ReportBlock>,
    /// It said BYE.
    pub bye: bool,
}

/// Whether a datagram on a multiplexed RTP/RTCP port is RTCP (RFC 5761 §4: the second byte,
/// marker bit included, is 192–223 for RTCP; RTP payload types 64–95 are avoided for it).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// Parses a compound RTCP packet (RFC 3550 §6.1). Unknown packet types are skipped.
pub fn parse(buf: &[u8]) -> Result<Received, RtcpParseError> {
    let mut out = Received::default();
    let mut rest = buf;
    if rest.len() < 4 {
        return Err(RtcpParseError::TooShort);
    }
    while !rest.is_empty() {
        let head = rest.get(..4).ok_or(RtcpParseError::TooShort)?;
        if head[0] >> 6 != 2 {
            return Err(RtcpParseError::BadVersion);
        }
        let count = usize::from(head[0] & 0x1F);
        let pt = head[1];
        let len = 4 * (usize::from(u16::from_be_bytes([head[2], head[3]])) + 1);
        let pkt = rest.get(..len).ok_or(RtcpParseError::BadLength)?;
        rest = &rest[len..];
        let word = |at: usize| -> Result<u32, RtcpParseError> {
            pkt.get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(RtcpParseError::BadLength)
        };
        let blocks_at = match pt {
            SR => {
                out.from = Some(word(4)?);
                let (hi, lo) = (word(8)?, word(12)?);
                out.sr_ntp_middle = Some((hi << 16) | (lo >> 16));
                28
            }
            RR => {
                out.from = Some(word(4)?);
                8
            }
            BYE => {
                out.bye = true;
                continue;
            }
            _ => continue,
        };
        for k in 0..count {
            let at = blocks_at + 24 * k;
            let lost = word(at + 4)?;
            // 24-bit two's complement.
            let cumulative = ((lost & 0x00FF_FFFF) << 8) as i32 >> 8;
            out.blocks.push(ReportBlock {
                ssrc: word(at)?,
                fraction_lost: (lost >> 24) as u8,
                cumulative_lost: cumulative,
                highest_seq: word(at + 8)?,
                jitter: word(at + 12)?,
                lsr: word(at + 16)?,
                dlsr: word(at + 20)?,
            });
        }
    }
    Ok(out)
}

fn push_header(out: &mut Vec<u8>, count: u8, pt: u8, words_after_header: usize) {
    out.push(0x80 | (count & 0x1F));
    out.push(pt);
    out.extend_from_slice(&(words_after_header as u16).to_be_bytes());
}

fn push_block(out: &mut Vec<u8>, b: &ReportBlock) {
    out.extend_from_slice(&b.ssrc.to_be_bytes());
    let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
    out.extend_from_slice(&((u32::from(b.fraction_lost) << 24) | lost).to_be_bytes());
    for w in [b.highest_seq, b.jitter, b.lsr, b.dlsr] {
        out.extend_from_slice(&w.to_be_bytes());
    }
}

/// A compound packet: an SR (with `sender`) or an RR (without), up to one report block,
/// SDES with our CNAME (RFC 3550 §6.1 requires it in every compound packet), and a BYE
/// when `bye`.
pub fn compound(
    ssrc: u32,
    sender: Option<&SenderInfo>,
    block: Option<&ReportBlock>,
    cname: &str,
    bye: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let rc = u8::from(block.is_some());
    match sender {
        Some(s) => {
            push_header(&mut out, rc, SR, 6 + 6 * usize::from(rc));
            out.extend_from_slice(&ssrc.to_be_bytes());
            out.extend_from_slice(&s.ntp.to_be_bytes());
            for w in [s.rtp_ts, s.packets, s.octets] {
                out.extend_from_slice(&w.to_be_bytes());
            }
        }
        None => {
            push_header(&mut out, rc, RR, 1 + 6 * usize::from(rc));
            out.extend_from_slice(&ssrc.to_be_bytes());
        }
    }
    if let Some(b) = block {
        push_block(&mut out, b);
    }
    // SDES: one chunk, CNAME item, then a null item and padding to a 32-bit boundary.
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let chunk = 4 + 2 + cname.len() + 1;
    let padded = chunk.div_ceil(4) * 4;
    push_header(&mut out, 1, SDES, padded / 4);
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(cname.len() as u8);
    out.extend_from_slice(cname);
    out.resize(out.len() + padded - chunk + 1, 0);
    if bye {
        push_header(&mut out, 1, BYE, 1);
        out.extend_from_slice(&ssrc.to_be_bytes());
    }
    out
}

/// NTP time (RFC 3550 §4: seconds since 1900 in the high 32 bits, fraction in the low 32) of
/// a time given as the duration since the Unix epoch.
pub fn ntp(since_unix_epoch: Duration) -> u64 {
    const UNIX_TO_NTP: u64 = 2_208_988_800;
    let secs = since_unix_epoch.as_secs().wrapping_add(UNIX_TO_NTP);
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (the unit of LSR and of round-trip times).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// The round-trip time a report block shows (RFC 3550 §6.4.1): arrival − LSR − DLSR, when the
/// reporter had an SR of ours (`lsr` ≠ 0).
pub fn round_trip(block: &ReportBlock, arrival_ntp: u64) -> Option<Duration> {
    if block.lsr == 0 {
        return None;
    }
    let rtt = ntp_middle(arrival_ntp)
        .wrapping_sub(block.lsr)
        .wrapping_sub(block.dlsr);
    // A negative (wrapped) value is clock trouble on one side: no figure.
    (rtt < 0x8000_0000).then(|| Duration::from_micros(u64::from(rtt) * 1_000_000 / 65_536))
}

/// The next report's delay (RFC 3550 §6.3.1): the interval times a factor drawn uniformly in
/// [0.5, 1.5] (`unit` in [0, 1)), so that reports of many senders do not synchronise. The
/// first report comes after half the interval (§6.2's "initial" delay).
pub fn next_delay(first: bool, unit: f64) -> Duration {
    let base = if first { INTERVAL / 2 } else { INTERVAL };
    base.mul_f64(0.5 + unit.clamp(0.0, 1.0))
}

/// Reception statistics of the far end's stream (RFC 3550 A.1, A.3, A.8), for our report
/// block about it.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    epoch: Instant,
    source: Option<Source>,
    /// The middle bits of the far end's last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

#[derive(Debug, Clone)]
struct Source {
    ssrc: u32,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    last_transit: Option<i64>,
    /// Jitter × 16 (A.8's integer form).
    jitter_q4: u32,
}

/// Packets a sequence number may jump forward and still be in order (A.1's MAX_DROPOUT).
const MAX_DROPOUT: u16 = 3000;

impl ReceiveStats {
    /// Statistics whose arrival clock starts at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        ReceiveStats {
            epoch,
            source: None,
            last_sr: None,
        }
    }

    /// One RTP packet from the far end arrived at `now`. A new SSRC restarts the statistics.
    pub fn on_rtp(&mut self, now: Instant, ssrc: u32, seq: u16, ts: u32) {
        // Arrival time in RTP units (8 kHz).
        let arrival = (now.saturating_duration_since(self.epoch).as_micros() / 125) as i64;
        let s = match self.source.as_mut() {
            Some(s) if s.ssrc == ssrc => s,
            _ => self.source.insert(Source {
                ssrc,
                base_seq: u32::from(seq),
                max_seq: seq.wrapping_sub(1),
                cycles: 0,
                received: 0,
                expected_prior: 0,
                received_prior: 0,
                last_transit: None,
                jitter_q4: 0,
            }),
        };
        let delta = seq.wrapping_sub(s.max_seq);
        if delta == 0 {
            return; // a duplicate
        }
        if delta < MAX_DROPOUT {
            if seq < s.max_seq {
                s.cycles = s.cycles.wrapping_add(1 << 16);
            }
            s.max_seq = seq;
        } else if delta <= u16::MAX - 100 {
            // A big jump (the sender restarted): start over from this packet.
            s.base_seq = u32::from(seq);
            s.max_seq = seq;
            s.cycles = 0;
            s.received = 0;
            s.expected_prior = 0;
            s.received_prior = 0;
        }
        // Otherwise a late or reordered packet: counted, the highest sequence unchanged.
        s.received = s.received.wrapping_add(1);
        let transit = arrival - i64::from(ts);
        if let Some(last) = s.last_transit {
            let d = (transit - last).unsigned_abs().min(u64::from(u32::MAX)) as u32;
            s.jitter_q4 = s
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((s.jitter_q4.wrapping_add(8)) >> 4);
        }
        s.last_transit = Some(transit);
    }

    /// The far end's SR arrived at `now` (its NTP timestamp's middle bits).
    pub fn on_sender_report(&mut self, now: Instant, ntp_middle: u32) {
        self.last_sr = Some((ntp_middle, now));
    }

    /// Our report block about the far end's stream at `now`, if it sent any RTP; each call
    /// starts a new interval for the fraction lost.
    pub fn report(&mut self, now: Instant) -> Option<ReportBlock> {
        let s = self.source.as_mut()?;
        let ext_max = s.cycles.wrapping_add(u32::from(s.max_seq));
        let expected = ext_max.wrapping_sub(s.base_seq).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(s.received);
        let expected_interval = expected.wrapping_sub(s.expected_prior);
        let received_interval = s.received.wrapping_sub(s.received_prior);
        s.expected_prior = expected;
        s.received_prior = s.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((mid, at)) => {
                let d = now.saturating_duration_since(at);
                (mid, (d.as_micros() * 65_536 / 1_000_000) as u32)
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: s.ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7F_FFFF) as i32,
            highest_seq: ext_max,
            jitter: s.jitter_q4 >> 4,
            lsr,
            dlsr,
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // an arbitrary origin for the fake clock
mod tests {
    use super::*;

    #[test]
    fn sender_report_round_trips_through_the_parser() {
        let block = ReportBlock {
            ssrc: 0xABCD,
            fraction_lost: 64,
            cumulative_lost: -3,
            highest_seq: 70_000,
            jitter: 40,
            lsr: 0x1234_5678,
            dlsr: 65_536,
        };
        let info = SenderInfo {
            ntp: 0x0102_0304_0506_0708,
            rtp_ts: 99,
            packets: 10,
            octets: 1600,
        };
        let pkt = compound(7, Some(&info), Some(&block), "crieur@127.0.0.1", true);
        assert_eq!(pkt.len() % 4, 0);
        assert_eq!(pkt[1], SR);
        assert!(is_rtcp(&pkt));
        let got = parse(&pkt).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(got.from, Some(7));
        assert_eq!(got.sr_ntp_middle, Some(0x0304_0506));
        assert_eq!(got.blocks, vec![block]);
        assert!(got.bye);
        let rr = compound(9, None, None, "x", false);
        assert_eq!(rr[1], RR);
        let got = parse(&rr).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((got.from, got.blocks.len(), got.bye), (Some(9), 0, false));
    }

    #[test]
    fn malformed_compounds_are_errors_and_rtp_is_not_rtcp() {
        assert_eq!(parse(&[0x80, 201]), Err(RtcpParseError::TooShort));
        assert_eq!(
            parse(&[0x40, 201, 0, 1, 0, 0, 0, 0]),
            Err(RtcpParseError::BadVersion)
        );
        // RC = 1 but no block.
        assert_eq!(
            parse(&[0x81, 201, 0, 1, 0, 0, 0, 7]),
            Err(RtcpParseError::BadLength)
        );
        // Length beyond the datagram.
        assert_eq!(
            parse(&[0x80, 201, 0, 9, 0, 0, 0, 7]),
            Err(RtcpParseError::BadLength)
        );
        let rtp = [0x80, 0x80 | 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(!is_rtcp(&rtp));
        let rtp = [0x80, 101, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(!is_rtcp(&rtp));
    }

    #[test]
    fn statistics_count_loss_and_jitter() {
        let t0 = Instant::now();
        let mut st = ReceiveStats::new(t0);
        assert_eq!(st.report(t0), None);
        // 10 packets, 20 ms apart, #4 and #5 lost, across the 16-bit wrap.
        for k in 0u16..10 {
            if k == 4 || k == 5 {
                continue;
            }
            let seq = 65_530u16.wrapping_add(k);
            st.on_rtp(
                t0 + Duration::from_millis(20 * u64::from(k)),
                5,
                seq,
                1000 + 160 * u32::from(k),
            );
        }
        let r = st.report(t0 + Duration::from_millis(200));
        let r = r.unwrap_or_else(|| panic!("no report"));
        assert_eq!(r.ssrc, 5);
        assert_eq!(r.cumulative_lost, 2);
        assert_eq!(r.fraction_lost, (2 * 256 / 10) as u8);
        assert_eq!(r.highest_seq, 65_536 + 3);
        assert_eq!(r.jitter, 0); // perfectly paced
                                 // Nothing new: no loss in the interval.
        let r = st.report(t0 + Duration::from_millis(300));
        assert_eq!(r.map(|r| r.fraction_lost), Some(0));
        // An SR from them is echoed as LSR with the delay since.
        st.on_sender_report(t0, 0xDEAD_BEEF);
        let r = st.report(t0 + Duration::from_millis(500));
        assert_eq!(r.map(|r| (r.lsr, r.dlsr)), Some((0xDEAD_BEEF, 32_768)));
        // Jitter grows when arrival spacing varies.
        for k in 10u16..20 {
            let wobble = if k % 2 == 0 { 8 } else { 0 };
            st.on_rtp(
                t0 + Duration::from_millis(20 * u64::from(k) + wobble),
                5,
                65_530u16.wrapping_add(k),
                1000 + 160 * u32::from(k),
            );
        }
        assert!(st
            .report(t0 + Duration::from_secs(1))
            .is_some_and(|r| r.jitter > 10));
    }

    #[test]
    fn ntp_rtt_and_interval() {
        let n = ntp(Duration::from_millis(1500));
        assert_eq!(n >> 32, 2_208_988_801);
        assert_eq!(n as u32, 1 << 31);
        let sent = ntp(Duration::from_secs(100));
        let arrival = ntp(Duration::from_millis(100_250));
        let b = ReportBlock {
            lsr: ntp_middle(sent),
            dlsr: 65_536 / 10, // 100 ms held by the far end
            ..Default::default()
        };
        let rtt = round_trip(&b, arrival).unwrap_or_default();
        assert!(
            rtt > Duration::from_millis(149) && rtt < Duration::from_millis(151),
            "{rtt:?}"
        );
        assert_eq!(round_trip(&ReportBlock::default(), arrival), None);
        assert_eq!(next_delay(true, 0.0), Duration::from_millis(1250));
        assert_eq!(next_delay(false, 1.0), Duration::from_millis(7500));
    }
}
