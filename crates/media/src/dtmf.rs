//! Key presses: RFC 4733 telephone-events, SIP INFO bodies, and in-band tones (Goertzel).

/// How a key press was heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfMethod {
    /// RTP telephone-event (RFC 4733).
    Rfc4733,
    /// SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    SipInfo,
    /// Tones in the audio, found by the Goertzel detector.
    InBand,
}

impl DtmfMethod {
    /// Stable name for logs and the audit record.
    pub fn as_str(self) -> &'static str {
        match self {
            DtmfMethod::Rfc4733 => "rfc4733",
            DtmfMethod::SipInfo => "sip-info",
            DtmfMethod::InBand => "in-band",
        }
    }
}

const DIGITS: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '#', 'A', 'B', 'C', 'D',
];

/// An RFC 4733 event packet's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

/// Why a telephone-event payload is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventParseError {
    TooShort,
}

/// Parses an RFC 4733 payload (the first 4-byte event block; redundant blocks are ignored).
pub fn parse_telephone_event(payload: &[u8]) -> Result<TelephoneEvent, EventParseError> {
    let [event, flags, d0, d1, ..] = *payload else {
        return Err(EventParseError::TooShort);
    };
    Ok(TelephoneEvent {
        event,
        end: flags & 0x80 != 0,
        volume: flags & 0x3F,
        duration: u16::from_be_bytes([d0, d1]),
    })
}

/// Turns RFC 4733 packets into key presses: one per event (its RTP timestamp), reported on the
/// first packet that arrives for it — key down, so a press at the very end of the message still
/// counts — and every later packet of the event, the retransmitted end packets included
/// (RFC 4733 §2.5.1.4: three), is dropped.
#[derive(Debug, Default)]
pub struct Rfc4733Receiver {
    last_reported: Option<u32>,
}

impl Rfc4733Receiver {
    /// Feeds one packet (its RTP timestamp and payload). Returns the digit once per event.
    pub fn handle(
        &mut self,
        rtp_timestamp: u32,
        payload: &[u8],
    ) -> Result<Option<char>, EventParseError> {
        let ev = parse_telephone_event(payload)?;
        let Some(&digit) = DIGITS.get(usize::from(ev.event)) else {
            return Ok(None); // not a DTMF event (e.g. a fax tone): ignored
        };
        if self.last_reported == Some(rtp_timestamp) {
            return Ok(None);
        }
        self.last_reported = Some(rtp_timestamp);
        Ok(Some(digit))
    }
}

/// Reads the digit from a SIP INFO body: `application/dtmf-relay` (`Signal=9`,
/// `Duration=160`) or `application/dtmf` (`9`). `None` if the body carries no digit.
pub fn parse_sip_info(content_type: &str, body: &str) -> Option<char> {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let raw = match ct.as_str() {
        "application/dtmf-relay" => body.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?,
        "application/dtmf" => body.trim(),
        _ => return None,
    };
    match raw {
        "10" => Some('*'),
        "11" => Some('#'),
        s if s.chars().count() == 1 => {
            let c = s.chars().next()?.to_ascii_uppercase();
            DIGITS.contains(&c).then_some(c)
        }
        _ => None,
    }
}

const LOW: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const HIGH: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// Goertzel block: 205 samples at 8 kHz (25.6 ms), the classic DTMF choice.
const BLOCK: usize = 205;

/// In-band DTMF detector (Goertzel on the eight DTMF frequencies).
///
/// A block counts as digit *d* when: the signal is above a floor level; the strongest low and
/// high tones carry most of the block's energy (speech spreads its energy; a tone pair does
/// not); each beats the others of its group by 6 dB; and the twist is within limits (the high group up to
/// 8 dB louder — lines attenuate it, so senders pre-emphasise it — and the low group up to 4 dB
/// louder, as common detectors allow). A digit is reported once it holds for two consecutive
/// 25.6 ms blocks (so after 51–77 ms of tone; ITU-T Q.24 requires accepting 40 ms), and again
/// only after a block without it.
#[derive(Debug)]
pub struct ToneDetector {
    coeffs: [f32; 8],
    buf: Vec<f32>,
    candidate: Option<char>,
    held: u32,
    reported: Option<char>,
}

impl Default for ToneDetector {
    fn default() -> Self {
        let mut coeffs = [0.0; 8];
        for (i, f) in LOW.iter().chain(HIGH.iter()).enumerate() {
            coeffs[i] = 2.0 * (2.0 * std::f32::consts::PI * f / 8000.0).cos();
        }
        ToneDetector {
            coeffs,
            buf: Vec::with_capacity(BLOCK),
            candidate: None,
            held: 0,
            reported: None,
        }
    }
}

impl ToneDetector {
    /// Feeds linear samples; returns the digits completed in them.
    pub fn feed(&mut self, samples: &[i16], out: &mut Vec<char>) {
        for &s in samples {
            self.buf.push(f32::from(s));
            if self.buf.len() == BLOCK {
                let d = self.classify();
                self.buf.clear();
                self.step(d, out);
            }
        }
    }

    fn step(&mut self, d: Option<char>, out: &mut Vec<char>) {
        if d.is_some() && d == self.candidate {
            self.held += 1;
        } else {
            self.candidate = d;
            self.held = u32::from(d.is_some());
        }
        if d.is_none() {
            self.reported = None;
        }
        if let Some(c) = d {
            if self.held >= 2 && self.reported != Some(c) {
                self.reported = Some(c);
                out.push(c);
            }
        }
    }

    fn classify(&self) -> Option<char> {
        let energy: f32 = self.buf.iter().map(|x| x * x).sum();
        // Floor: mean square of an amplitude-300 sine (about −40 dBm0).
        if energy / (BLOCK as f32) < 300.0 * 300.0 / 2.0 {
            return None;
        }
        let mut p = [0f32; 8];
        for (k, c) in self.coeffs.iter().enumerate() {
            let (mut s1, mut s2) = (0f32, 0f32);
            for &x in &self.buf {
                let s = x + c * s1 - s2;
                s2 = s1;
                s1 = s;
            }
            p[k] = s1 * s1 + s2 * s2 - c * s1 * s2;
        }
        let best = |g: &[f32]| {
            let (i, &m) = g
                .iter()
                .enumerate()
                .fold((0, &0f32), |a, b| if b.1 > a.1 { b } else { a });
            let others = g
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .all(|(_, &v)| v * 4.0 < m);
            (i, m, others)
        };
        let (li, lp, l_ok) = best(&p[..4]);
        let (hi, hp, h_ok) = best(&p[4..]);
        // For a pure tone pair, lp + hp ≈ energy · BLOCK / 2.
        let share = (lp + hp) / (energy * BLOCK as f32 / 2.0);
        let twist_db = 10.0 * (hp / lp.max(f32::MIN_POSITIVE)).log10();
        (l_ok && h_ok && share > 0.6 && (-4.0..=8.0).contains(&twist_db)).then(|| KEYPAD[li][hi])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tone(freqs: &[(f32, f32)], ms: usize, phase: usize) -> Vec<i16> {
        (0..ms * 8)
            .map(|n| {
                let t = (n + phase) as f32 / 8000.0;
                let v: f32 = freqs
                    .iter()
                    .map(|(f, a)| a * (2.0 * std::f32::consts::PI * f * t).sin())
                    .sum();
                v.clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    fn detect(samples: &[i16]) -> Vec<char> {
        let mut d = ToneDetector::default();
        let mut out = Vec::new();
        // Fed in 20 ms packets, as from RTP.
        for chunk in samples.chunks(160) {
            d.feed(chunk, &mut out);
        }
        out
    }

    #[test]
    fn every_key_is_detected_once() {
        for (r, row) in KEYPAD.iter().enumerate() {
            for (c, &key) in row.iter().enumerate() {
                let mut s = tone(&[(LOW[r], 6000.0), (HIGH[c], 7000.0)], 80, 0);
                s.extend(vec![0; 400]);
                assert_eq!(detect(&s), vec![key], "key {key}");
            }
        }
    }

    #[test]
    fn two_presses_with_a_gap_are_two_digits_and_short_blips_none() {
        let mut s = tone(&[(852.0, 8000.0), (1477.0, 8000.0)], 60, 0);
        s.extend(vec![0; 8 * 60]);
        s.extend(tone(&[(852.0, 8000.0), (1477.0, 8000.0)], 60, 0));
        assert_eq!(detect(&s), vec!['9', '9']);
        assert!(detect(&tone(&[(852.0, 8000.0), (1477.0, 8000.0)], 25, 0)).is_empty());
    }

    #[test]
    fn excessive_twist_and_single_tones_are_rejected() {
        assert!(detect(&tone(&[(852.0, 1500.0), (1477.0, 12000.0)], 100, 0)).is_empty()); // +18 dB
        assert!(detect(&tone(&[(852.0, 12000.0), (1477.0, 4000.0)], 100, 0)).is_empty()); // low +9.5 dB
        assert_eq!(
            detect(&tone(&[(852.0, 4000.0), (1477.0, 9000.0)], 100, 0)),
            vec!['9']
        ); // high +7 dB
        assert!(detect(&tone(&[(852.0, 12000.0)], 100, 0)).is_empty());
    }

    proptest! {
        /// Speech-like signals — several harmonics of a voice pitch with noise — never make a
        /// digit, unless their two strongest harmonics are themselves a DTMF pair within
        /// ITU-T Q.24's ±3.5 % (where a detector may accept: e.g. 241.2 Hz × 4 and × 5 = 965
        /// and 1,206 Hz, 20 dB over the rest — a '*' 2.5 % off; found by CI's proptest).
        #[test]
        fn speech_like_noise_is_not_a_digit(f0 in 90f32..300.0, amps in prop::collection::vec(500f32..6000.0, 6), seed in any::<u64>()) {
            let mut order: Vec<usize> = (0..amps.len()).collect();
            order.sort_by(|&a, &b| amps[b].total_cmp(&amps[a]));
            let near = |f: f32, group: &[f32; 4]| group.iter().any(|g| (f - g).abs() <= 0.035 * g);
            let (h1, h2) = (f0 * (order[0] + 1) as f32, f0 * (order[1] + 1) as f32);
            prop_assume!(!((near(h1, &LOW) && near(h2, &HIGH)) || (near(h2, &LOW) && near(h1, &HIGH))));
            let mut x = seed | 1;
            let mut noise = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x % 2001) as f32 - 1000.0 };
            let harmonics: Vec<(f32, f32)> = amps.iter().enumerate().map(|(k, a)| (f0 * (k + 1) as f32, *a)).collect();
            let s: Vec<i16> = tone(&harmonics, 500, 0).into_iter().map(|v| (f32::from(v) + noise()) as i16).collect();
            prop_assert!(detect(&s).is_empty());
        }
    }

    #[test]
    fn rfc4733_reports_once_per_event() {
        let mut r = Rfc4733Receiver::default();
        let start = [9u8, 0x0A, 0x00, 0xA0];
        let end = [9u8, 0x8A, 0x03, 0x20];
        assert_eq!(r.handle(1000, &start), Ok(Some('9')));
        assert_eq!(r.handle(1000, &end), Ok(None));
        assert_eq!(r.handle(1000, &end), Ok(None));
        assert_eq!(r.handle(1000, &end), Ok(None));
        assert_eq!(r.handle(5000, &[11u8, 0x8A, 0, 0]), Ok(Some('#')));
        assert_eq!(r.handle(9000, &[32u8, 0x8A, 0, 0]), Ok(None)); // fax CED: not DTMF
        assert_eq!(r.handle(9000, &[9u8, 0x8A]), Err(EventParseError::TooShort));
        assert_eq!(r.handle(9000, &[]), Err(EventParseError::TooShort));
    }

    #[test]
    fn sip_info_bodies() {
        assert_eq!(
            parse_sip_info("application/dtmf-relay", "Signal=9\r\nDuration=160\r\n"),
            Some('9')
        );
        assert_eq!(
            parse_sip_info("Application/DTMF-Relay; charset=x", "Signal= #\r\n"),
            Some('#')
        );
        assert_eq!(
            parse_sip_info("application/dtmf-relay", "Signal=10\r\n"),
            Some('*')
        );
        assert_eq!(parse_sip_info("application/dtmf", "5"), Some('5'));
        assert_eq!(parse_sip_info("application/dtmf", "55"), None);
        assert_eq!(parse_sip_info("text/plain", "9"), None);
        assert_eq!(
            parse_sip_info("application/dtmf-relay", "Duration=160"),
            None
        );
    }
}
