//! Places received RTP packets on the detector's audio clock by their timestamps.
//!
//! The detector's clock is the audio itself (10 ms per frame fed). Fed packet after packet as
//! they arrive, a lost packet would be spliced out (the audio after it moved 20 ms early: a
//! tone's phase jumps, a pause shortens) and the clock would fall behind the far end's by one
//! packet per loss. Placed by timestamp instead, a lost packet becomes silence of its true
//! length, as a phone's own playout does before concealment (RFC 3550 §5.1: the timestamp is
//! the sampling instant of the first octet, and advances with the samples sent — also across
//! silence suppression, RFC 3551 §4.1). Reordered packets are held briefly and put back in
//! order; a duplicate or a packet older than what was fed is dropped. The packet time does
//! not matter: positions are in samples (8 kHz G.711: one timestamp unit per sample).
//!
//! Written here rather than taken from a jitter-buffer crate: this one needs no playout
//! delay (the detector wants the audio as soon as it is in order, not paced), and shares its
//! position with the detector's wall-clock fill of a stream that stopped.

use std::time::{Duration, Instant};

/// Audio received after a gap that is held for a packet that may still come out of order
/// before the gap is taken as lost: 40 ms (two 20 ms packets). Reordering on the public
/// internet is mostly by one packet (back-to-back packets on parallel paths); waiting for
/// more would delay the beep's end by as much whenever a packet is really lost.
const REORDER_HOLD_SAMPLES: usize = 320;
/// How long a held packet waits for the gap before it when nothing more arrives (the stream
/// stopped right after a loss).
pub const REORDER_WAIT: Duration = Duration::from_millis(60);
/// A timestamp further ahead than this of what was fed is a jump of the sender's clock (a
/// new source, a restarted stream), not a gap: the packet is placed right after what was fed.
/// A stopped stream's silence is filled by the wall clock meanwhile, so a real gap that is
/// left is at most a few hundred ms. 1 s.
const MAX_GAP_SAMPLES: u64 = 8_000;
/// A packet this far behind what was fed is not late but from a clock that jumped back...
const FAR_BEHIND_SAMPLES: u64 = 8_000;
/// ...once this many come in a row: then they are placed anew right after what was fed.
const FAR_BEHIND_RESYNC: u32 = 3;

#[derive(Debug, Clone)]
struct Held {
    ts: u32,
    pos: u64,
    samples: Vec<i16>,
}

/// Packets to positions on the detector's clock (in samples from its start).
#[derive(Debug, Default, Clone)]
pub(crate) struct Playout {
    ssrc: Option<u32>,
    /// The timestamp of the last packet placed, and its position.
    anchor: Option<(u32, u64)>,
    /// Packets after a gap, in order of position.
    held: Vec<Held>,
    held_since: Option<Instant>,
    far_behind: u32,
    /// What to feed now (silence for the gaps, then audio), reused.
    out: Vec<i16>,
}

impl Playout {
    /// A packet of `samples` with RTP `ssrc` and `timestamp`, arrived at `now`, when the
    /// detector has been fed `fed` samples. Returns what to feed it next (may be empty).
    pub(crate) fn place(
        &mut self,
        now: Instant,
        ssrc: u32,
        timestamp: u32,
        samples: &[i16],
        fed: u64,
    ) -> &[i16] {
        self.out.clear();
        if self.ssrc != Some(ssrc) {
            // A new source (RFC 3550 §8.2): its timestamps start anywhere.
            self.ssrc = Some(ssrc);
            self.anchor = None;
            self.held.clear();
            self.held_since = None;
        }
        let len = samples.len() as i64;
        let at = self.position(timestamp, fed);
        let mut pos = u64::try_from(at).unwrap_or(0);
        if at + len <= fed as i64 {
            // Late (its place was taken as lost or filled) or a duplicate.
            if at + (FAR_BEHIND_SAMPLES as i64) <= fed as i64 {
                self.far_behind += 1;
                if self.far_behind < FAR_BEHIND_RESYNC {
                    return &self.out;
                }
                pos = fed;
            } else {
                self.far_behind = 0;
                return &self.out;
            }
        }
        self.far_behind = 0;
        if pos > fed + MAX_GAP_SAMPLES {
            pos = fed;
        }
        if pos > fed {
            // A gap: held until the packet before it comes, or enough after it has.
            if !self.held.iter().any(|h| h.pos == pos) {
                let at = self.held.partition_point(|h| h.pos < pos);
                self.held.insert(
                    at,
                    Held {
                        ts: timestamp,
                        pos,
                        samples: samples.to_vec(),
                    },
                );
            }
            self.held_since.get_or_insert(now);
            if self.held.iter().map(|h| h.samples.len()).sum::<usize>() >= REORDER_HOLD_SAMPLES {
                self.release(fed);
            }
            return &self.out;
        }
        // In order (or partly behind: only its new part).
        let mut end = fed;
        self.append(timestamp, pos, samples, &mut end);
        // The held packets that are now in order follow it.
        while self.held.first().is_some_and(|h| h.pos <= end) {
            let h = self.held.remove(0);
            self.append(h.ts, h.pos, &h.samples, &mut end);
        }
        if self.held.is_empty() {
            self.held_since = None;
        }
        &self.out
    }

    /// When the held packets are due to be released if nothing comes.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.held_since.map(|t| t + REORDER_WAIT)
    }

    /// Releases the held packets if they waited long enough (the gaps before them become
    /// silence). Returns what to feed (may be empty).
    pub(crate) fn handle_timeout(&mut self, now: Instant, fed: u64) -> &[i16] {
        self.out.clear();
        if self.poll_timeout().is_some_and(|t| now >= t) {
            self.release(fed);
        }
        &self.out
    }

    /// Where a packet with `timestamp` goes: relative to the last one placed, or right after
    /// what was fed for the first of a source.
    fn position(&self, timestamp: u32, fed: u64) -> i64 {
        match self.anchor {
            None => fed as i64,
            Some((ts, at)) => {
                // Signed: a reordered packet is a little before the anchor (RFC 3550 A.1's
                // modular arithmetic).
                at as i64 + i64::from(timestamp.wrapping_sub(ts) as i32)
            }
        }
    }

    /// Every held packet in order, the gaps before them as silence.
    fn release(&mut self, fed: u64) {
        let mut end = fed;
        for h in std::mem::take(&mut self.held) {
            if h.pos > end {
                self.out.resize(
                    self.out.len() + usize::try_from(h.pos - end).unwrap_or(0),
                    0,
                );
                end = h.pos;
            }
            self.append(h.ts, h.pos, &h.samples, &mut end);
        }
        self.held_since = None;
    }

    /// Appends the part of a packet at `pos` that is after `end`.
    fn append(&mut self, ts: u32, pos: u64, samples: &[i16], end: &mut u64) {
        let skip = usize::try_from(end.saturating_sub(pos)).unwrap_or(usize::MAX);
        if let Some(new) = samples.get(skip..) {
            self.out.extend_from_slice(new);
            *end = (*end).max(pos + samples.len() as u64);
        }
        self.anchor = Some((ts, pos));
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a fake clock's origin
mod tests {
    use super::*;

    /// Places `(timestamp, samples)` packets in turn at 20 ms intervals, as a detector that
    /// is fed all that comes out would; returns everything fed.
    fn play(p: &mut Playout, ssrc: u32, pkts: &[(u32, Vec<i16>)]) -> Vec<i16> {
        let t0 = Instant::now();
        let mut fed = Vec::new();
        for (i, (ts, s)) in pkts.iter().enumerate() {
            let now = t0 + Duration::from_millis(20 * i as u64);
            let out = p.place(now, ssrc, *ts, s, fed.len() as u64).to_vec();
            fed.extend(out);
        }
        fed
    }

    fn pkt(n: usize, v: i16) -> Vec<i16> {
        vec![v; n]
    }

    #[test]
    fn a_lost_packet_is_silence_of_its_length_at_any_ptime() {
        for n in [80usize, 160, 240] {
            let t = |k: u32| 0xFFFF_FE00u32.wrapping_add(k * n as u32); // across the wrap
            let mut p = Playout::default();
            let fed = play(
                &mut p,
                9,
                &[
                    (t(0), pkt(n, 1)),
                    (t(2), pkt(n, 3)),
                    (t(3), pkt(n, 4)),
                    (t(4), pkt(n, 5)),
                    (t(5), pkt(n, 6)),
                ],
            );
            let want: Vec<i16> = [1, 0, 3, 4, 5, 6].iter().flat_map(|&v| pkt(n, v)).collect();
            assert_eq!(fed, want, "ptime {} ms", n / 8);
        }
    }

    #[test]
    fn reordered_packets_wait_for_the_one_before_and_duplicates_are_dropped() {
        let mut p = Playout::default();
        let fed = play(
            &mut p,
            9,
            &[
                (0, pkt(160, 1)),
                (320, pkt(160, 3)),
                (160, pkt(160, 2)),
                (160, pkt(160, 2)),
                (480, pkt(160, 4)),
            ],
        );
        let want: Vec<i16> = [1, 2, 3, 4].iter().flat_map(|&v| pkt(160, v)).collect();
        assert_eq!(fed, want);
    }

    #[test]
    fn a_held_packet_is_released_when_nothing_more_comes() {
        let t0 = Instant::now();
        let mut p = Playout::default();
        assert_eq!(p.place(t0, 9, 0, &pkt(160, 1), 0).len(), 160);
        assert!(p.place(t0, 9, 320, &pkt(160, 3), 160).is_empty());
        assert_eq!(p.poll_timeout(), Some(t0 + REORDER_WAIT));
        assert!(p
            .handle_timeout(t0 + Duration::from_millis(59), 160)
            .is_empty());
        let out = p.handle_timeout(t0 + REORDER_WAIT, 160).to_vec();
        assert_eq!(out, [pkt(160, 0), pkt(160, 3)].concat());
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn a_new_source_or_a_clock_jump_is_placed_right_after_what_was_fed() {
        let mut p = Playout::default();
        let fed = play(
            &mut p,
            9,
            &[
                (0, pkt(160, 1)),
                (5_000_000, pkt(160, 2)),
                (5_000_160, pkt(160, 3)),
            ],
        );
        assert_eq!(fed, [pkt(160, 1), pkt(160, 2), pkt(160, 3)].concat());
        // Another SSRC: its timestamps start anywhere.
        let t0 = Instant::now();
        assert_eq!(p.place(t0, 10, 77, &pkt(160, 4), 480).len(), 160);
        assert_eq!(p.place(t0, 10, 77 + 160, &pkt(160, 5), 640).len(), 160);
        // A clock that went back a long way: after three such packets, followed.
        let back = |k: u32| 237u32.wrapping_sub(100_000) + 160 * k;
        let mut fed = 800u64;
        for k in 0..3 {
            let n = p.place(t0, 10, back(k), &pkt(160, 6), fed).len();
            assert_eq!(n, if k < 2 { 0 } else { 160 }, "packet {k}");
            fed += n as u64;
        }
        assert_eq!(p.place(t0, 10, back(3), &pkt(160, 6), fed).len(), 160);
    }
}
