//! RTP (RFC 3550) packets and the send schedule.
//!
//! The 12-byte header is built and parsed here directly: on the send path it is written into
//! a reused buffer (no allocation per packet, which the general-purpose RTP crates do).

use std::time::{Duration, Instant};

/// Samples per 20 ms packet at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
/// Packet interval.
pub const PTIME: Duration = Duration::from_millis(20);
/// Size of an RTP header without CSRCs or extension.
pub const HEADER_LEN: usize = 12;

/// A received RTP packet's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
}

/// Why a datagram is not an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpParseError {
    TooShort,
    BadVersion,
    BadLength,
}

/// Parses an RTP packet; returns the header and the payload (padding and extensions skipped).
pub fn parse(buf: &[u8]) -> Result<(RtpHeader, &[u8]), RtpParseError> {
    if buf.len() < HEADER_LEN {
        return Err(RtpParseError::TooShort);
    }
    if buf[0] >> 6 != 2 {
        return Err(RtpParseError::BadVersion);
    }
    let cc = usize::from(buf[0] & 0x0F);
    let mut start = HEADER_LEN + 4 * cc;
    if buf[0] & 0x10 != 0 {
        let ext = buf
            .get(start + 2..start + 4)
            .ok_or(RtpParseError::BadLength)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
    }
    let mut end = buf.len();
    if buf[0] & 0x20 != 0 {
        let pad = usize::from(*buf.last().ok_or(RtpParseError::BadLength)?);
        end = end.checked_sub(pad).ok_or(RtpParseError::BadLength)?;
    }
    if start > end {
        return Err(RtpParseError::BadLength);
    }
    let h = RtpHeader {
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7F,
        sequence: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
    };
    Ok((h, &buf[start..end]))
}

/// Writes a 12-byte header into `out[..12]`.
pub fn write_header(out: &mut [u8; HEADER_LEN], h: &RtpHeader) {
    out[0] = 0x80;
    out[1] = (u8::from(h.marker) << 7) | (h.payload_type & 0x7F);
    out[2..4].copy_from_slice(&h.sequence.to_be_bytes());
    out[4..8].copy_from_slice(&h.timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
}

/// What [`Packetizer::poll_transmit`] has to send.
#[derive(Debug, PartialEq, Eq)]
pub enum Tx<'a> {
    /// The next packet is not due yet.
    NotDue,
    /// Send this packet now.
    Packet(&'a [u8]),
    /// The prompt has been played to its end.
    Done,
}

/// Plays encoded audio as 20 ms RTP packets on an absolute schedule: packet *n* is due at
/// `start + n × 20 ms`, so sleep overshoot never accumulates into drift.
///
/// Sans-IO: ask [`Packetizer::poll_timeout`] when the next packet is due and
/// [`Packetizer::poll_transmit`] for it once `now` has reached that time.
#[derive(Debug)]
pub struct Packetizer {
    payload_type: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
    /// Start of the current prompt's schedule.
    start: Instant,
    /// Index of the next packet in the current prompt.
    n: u32,
    /// Start of the next talkspurt: set the marker bit.
    marker: bool,
    /// Packets of silence before the prompt's audio (the lead-in).
    lead_in: u32,
    /// Packets of the prompt already played before a pause ([`Packetizer::resume`]).
    skip: u32,
    buf: Vec<u8>,
}

impl Packetizer {
    /// A packetizer with a random-looking initial sequence and timestamp chosen by the caller.
    pub fn new(
        payload_type: u8,
        ssrc: u32,
        initial_seq: u16,
        initial_ts: u32,
        start: Instant,
    ) -> Self {
        Packetizer {
            payload_type,
            ssrc,
            seq: initial_seq,
            ts: initial_ts,
            start,
            n: 0,
            marker: true,
            lead_in: 0,
            skip: 0,
            buf: Vec::with_capacity(HEADER_LEN + SAMPLES_PER_PACKET),
        }
    }

    /// Starts a new prompt at `start`: the first packet carries the marker bit, and the RTP
    /// timestamp jumps by the wall-clock gap since the last packet's slot.
    pub fn restart(&mut self, start: Instant) {
        self.restart_with_lead_in(start, 0);
    }

    /// As [`Packetizer::restart`], with `lead_in` packets of silence before the prompt's
    /// first sample: packet *n* is still due at `start + n × 20 ms`.
    pub fn restart_with_lead_in(&mut self, start: Instant, lead_in: u32) {
        self.new_talkspurt(start);
        self.lead_in = lead_in;
        self.skip = 0;
    }

    /// Resumes the current prompt where it stopped (after a hold), on a new schedule from
    /// `start`; a lead-in not yet played is not replayed.
    pub fn resume(&mut self, start: Instant) {
        let played = self.n.saturating_sub(self.lead_in);
        self.lead_in = self.lead_in.saturating_sub(self.n);
        self.skip += played;
        self.new_talkspurt(start);
    }

    fn new_talkspurt(&mut self, start: Instant) {
        let slot_end = self.start + PTIME * self.n;
        let gap = start.saturating_duration_since(slot_end);
        // 8 samples per millisecond; wrapping is RTP's arithmetic.
        self.ts = self.ts.wrapping_add((gap.as_micros() / 125) as u32);
        self.start = start;
        self.n = 0;
        self.marker = true;
    }

    /// Switches the payload type (a re-INVITE changed the codec).
    pub fn set_payload_type(&mut self, payload_type: u8) {
        self.payload_type = payload_type;
    }

    /// The RTP timestamp of the next packet, and the instant it is due: the sampling clock
    /// a sender report maps to wall-clock time (RFC 3550 §6.4.1).
    pub fn clock(&self) -> (u32, Instant) {
        (self.ts, self.poll_timeout())
    }

    /// Whether the next packet is the prompt's first audio (after its lead-in).
    pub fn at_first_audio(&self) -> bool {
        self.skip == 0 && self.n == self.lead_in
    }

    /// When the next packet is due.
    pub fn poll_timeout(&self) -> Instant {
        self.start + PTIME * self.n
    }

    /// The next packet, built from `audio` (the whole prompt, one byte per sample), if it is
    /// due at `now`; [`Tx::Done`] once the prompt has no audio left.
    pub fn poll_transmit(&mut self, now: Instant, audio: &[u8]) -> Tx<'_> {
        if now < self.poll_timeout() {
            return Tx::NotDue;
        }
        // A short last chunk, and the lead-in, are silence, so every packet is 20 ms.
        let silence = if self.payload_type == 8 { 0xD5 } else { 0xFF };
        let chunk = match self.n.checked_sub(self.lead_in) {
            None => &[][..],
            Some(k) => {
                let from = (self.skip + k) as usize * SAMPLES_PER_PACKET;
                match audio.get(from..) {
                    Some(c) if !c.is_empty() => &c[..c.len().min(SAMPLES_PER_PACKET)],
                    _ => return Tx::Done,
                }
            }
        };
        let mut header = [0u8; HEADER_LEN];
        write_header(
            &mut header,
            &RtpHeader {
                marker: self.marker,
                payload_type: self.payload_type,
                sequence: self.seq,
                timestamp: self.ts,
                ssrc: self.ssrc,
            },
        );
        self.buf.clear();
        self.buf.extend_from_slice(&header);
        self.buf.extend_from_slice(chunk);
        self.buf.resize(HEADER_LEN + SAMPLES_PER_PACKET, silence);
        self.marker = false;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(SAMPLES_PER_PACKET as u32);
        self.n += 1;
        Tx::Packet(&self.buf)
    }

    /// Packets of the current prompt's audio sent so far (the lead-in not counted; the
    /// packets before a pause counted).
    pub fn sent_in_prompt(&self) -> u32 {
        self.skip + self.n.saturating_sub(self.lead_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; nothing depends on its value
    fn schedule_is_absolute_and_fields_advance() {
        let t0 = Instant::now();
        let audio = vec![0x55u8; 400]; // 2.5 packets
        let mut p = Packetizer::new(8, 0xdead_beef, 65_535, u32::MAX - 100, t0);
        assert_eq!(
            p.poll_transmit(t0 - Duration::from_millis(1), &audio),
            Tx::NotDue
        );
        let mut got = Vec::new();
        // A late poll (5 ms overshoot) does not shift later slots.
        for k in 0..3u32 {
            let now = t0 + PTIME * k + Duration::from_millis(5);
            let pkt = match p.poll_transmit(now, &audio) {
                Tx::Packet(b) => Some(b.to_vec()),
                _ => None,
            };
            assert!(pkt.is_some(), "packet {k}");
            assert_eq!(p.poll_timeout(), t0 + PTIME * (k + 1));
            got.extend(pkt);
        }
        assert_eq!(p.poll_transmit(t0 + PTIME * 10, &audio), Tx::Done);
        let hs: Vec<RtpHeader> = got
            .iter()
            .filter_map(|b| parse(b).ok().map(|(h, _)| h))
            .collect();
        assert_eq!(
            hs.iter().map(|h| h.sequence).collect::<Vec<_>>(),
            [65_535, 0, 1]
        );
        assert_eq!(hs[1].timestamp, hs[0].timestamp.wrapping_add(160));
        assert_eq!(
            hs.iter().map(|h| h.marker).collect::<Vec<_>>(),
            [true, false, false]
        );
        assert!(got.iter().all(|b| b.len() == 172));
        assert_eq!(got[2][12 + 80], 0xD5); // padded with A-law silence
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; nothing depends on its value
    fn lead_in_is_silence_on_the_same_schedule_and_resume_continues() {
        let t0 = Instant::now();
        let audio: Vec<u8> = (0..160 * 4).map(|i| (i / 160) as u8 + 1).collect();
        let mut p = Packetizer::new(0, 1, 0, 0, t0);
        p.restart_with_lead_in(t0, 2);
        let take = |p: &mut Packetizer, now: Instant| match p.poll_transmit(now, &audio) {
            Tx::Packet(b) => parse(b).map(|(h, pl)| (h, pl[0], pl[159])).ok(),
            _ => None,
        };
        assert!(!p.at_first_audio());
        let a = take(&mut p, t0);
        let b = take(&mut p, t0 + PTIME);
        assert_eq!(a.map(|x| (x.1, x.2)), Some((0xFF, 0xFF)));
        assert_eq!(b.map(|x| (x.1, x.2)), Some((0xFF, 0xFF)));
        assert!(p.at_first_audio());
        assert_eq!(p.poll_timeout(), t0 + PTIME * 2);
        let c = take(&mut p, t0 + PTIME * 2);
        assert_eq!(c.map(|x| x.1), Some(1));
        // Paused after the first audio packet; resumed 1 s later with the second.
        let t1 = t0 + Duration::from_secs(1);
        p.resume(t1);
        assert_eq!(p.poll_timeout(), t1);
        assert!(!p.at_first_audio());
        let d = take(&mut p, t1);
        assert_eq!(d.map(|x| (x.0.marker, x.1)), Some((true, 2)));
        // The timestamp followed the wall clock across the pause.
        let (ts_c, ts_d) = (c.map(|x| x.0.timestamp), d.map(|x| x.0.timestamp));
        assert_eq!((ts_c, ts_d), (Some(320), Some(8000)));
        assert_eq!(p.sent_in_prompt(), 2);
        let e = take(&mut p, t1 + PTIME);
        let f = take(&mut p, t1 + PTIME * 2);
        assert_eq!((e.map(|x| x.1), f.map(|x| x.1)), (Some(3), Some(4)));
        assert_eq!(p.poll_transmit(t1 + PTIME * 3, &audio), Tx::Done);
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(parse(&[0x80; 5]), Err(RtpParseError::TooShort));
        assert_eq!(parse(&[0x40; 12]).err(), Some(RtpParseError::BadVersion));
        let mut p = [0u8; 12];
        p[0] = 0x8F; // 15 CSRCs, none present
        assert_eq!(parse(&p).err(), Some(RtpParseError::BadLength));
        let mut p = [0u8; 13];
        p[0] = 0xA0; // padding of 255 bytes
        p[12] = 255;
        assert_eq!(parse(&p).err(), Some(RtpParseError::BadLength));
    }
}
