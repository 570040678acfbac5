//! Places received RTP packets on the detector's audio clock by their timestamps.
//!
//! The detector's clock is the audio itself (10 ms per frame fed). Fed packet after packet as
//! they arrive, a lost packet would be spliced out (the audio after it moved 20 ms early: a
//! tone's phase jumps, a pause shortens) and the clock would fall behind the far end's by one
//! packet per loss. Placed by timestamp instead, a lost packet becomes silence of its true
//! length, as a phone's own playout does before concealment (RFC 3550 §5.1: the timestamp is
//! the sampling instant of the first octet, and advances with the samples sent — also across
//! silence suppression, RFC 3551 §4.1). Reordered packets are held briefly and put back in
//! order; a duplicate or a packet older than what was fed is dropped. A packet whose
//! timestamp disagrees with its arrival time (a sender's clock that jumped, a new source)
//! is placed anew where the wall clock says. The packet time does
//! not matter: positions are in samples (8 kHz G.711: one timestamp unit per sample).
//!
//! Written here rather than taken from a jitter-buffer crate: this one needs no playout
//! delay (the detector wants the audio as soon as it is in order, not paced), and shares its
//! position with the detector's wall-clock fill of a stream that stopped.

use std::time::{Duration, Instant};

/// Audio received after a gap that is held for a packet that may still come out of order
/// before the gap is taken as lost: 40 ms, and two packets at least (at ptime 40 ms or more,
/// one packet is already 320 samples). Reordering on the public
/// internet is mostly by one packet (back-to-back packets on parallel paths); waiting for
/// more would delay the beep's end by as much whenever a packet is really lost.
const REORDER_HOLD_SAMPLES: usize = 320;
/// How long a held packet waits for the gap before it when nothing more arrives (the stream
/// stopped right after a loss).
pub const REORDER_WAIT: Duration = Duration::from_millis(60);
/// A timestamp further ahead than this of what was fed is a jump of the sender's clock (a
/// new source, a restarted stream), not a gap: the packet is placed anew (see
/// [`Playout::reanchor`]). A stopped stream's silence is filled by the wall clock meanwhile,
/// so a real gap that is left is at most a few hundred ms. 1 s.
const MAX_GAP_SAMPLES: u64 = 8_000;
/// A packet whose timestamp moved further ahead of the last one accepted than the time
/// between their arrivals plus this is from a clock that jumped forward (an SBC or B2BUA
/// that switched source and kept the SSRC), not after lost packets: their time would have
/// passed on the wall clock too. 100 ms (jitter).
const AHEAD_SLACK_SAMPLES: i64 = 800;
/// A packet whose timestamp is further behind the last one accepted than this is from a
/// clock that jumped back, not reordered (a reordered packet is at most the
/// [`REORDER_WAIT`]'s few packets behind)... 100 ms.
const BEHIND_SAMPLES: i64 = 800;
/// ...once this many come in a row (a single stray packet is dropped): then they are
/// placed anew.
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
    /// When the last packet accepted (placed or held) arrived, and its end's position (or the
    /// detector's start and 0 before the first).
    last: Option<(Instant, u64)>,
    /// Gaps are silence at once, nothing held (see [`Playout::set_no_hold`]).
    no_hold: bool,
    /// What to feed now (silence for the gaps, then audio), reused.
    out: Vec<i16>,
}

impl Playout {
    /// Positions counted from the detector's start at `start` (the answer): the first packet's
    /// arrival after it is time too.
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            last: Some((start, 0)),
            ..Self::default()
        }
    }

    /// While `on`, a packet after a gap is not held for the one before it: the gap is silence
    /// at once. The detector sets it while a beep awaits its settle wait: there a packet lost
    /// late in the wait would otherwise hold the next one for the one after it (20–40 ms
    /// added to the drop against a 300 ms bar), and loss is far more common than reordering
    /// (which here would cost only a late packet of what should be silence).
    pub(crate) fn set_no_hold(&mut self, on: bool) {
        self.no_hold = on;
    }

    /// A packet of `samples` with RTP `ssrc` and `timestamp`, arrived at `now`, when the
    /// detector has been fed `fed` samples. Returns what to feed it next (may be empty), or
    /// `None` if the packet was dropped (late, a duplicate, a stray).
    pub(crate) fn place(
        &mut self,
        now: Instant,
        ssrc: u32,
        timestamp: u32,
        samples: &[i16],
        fed: u64,
    ) -> Option<&[i16]> {
        self.out.clear();
        let len = samples.len() as i64;
        // Samples of wall time since the last packet accepted arrived.
        let since = self.last.map_or(0, |(t, _)| {
            i64::try_from(now.saturating_duration_since(t).as_micros() / 125).unwrap_or(i64::MAX)
        });
        if self.ssrc != Some(ssrc) {
            // A new source (RFC 3550 §8.2): its timestamps start anywhere.
            self.ssrc = Some(ssrc);
            return Some(self.reanchor(now, timestamp, samples, fed, since));
        }
        let Some((ts, at)) = self.anchor else {
            return Some(self.reanchor(now, timestamp, samples, fed, since));
        };
        // Signed: a reordered packet is a little before the anchor (RFC 3550 A.1's modular
        // arithmetic).
        let at = at as i64 + i64::from(timestamp.wrapping_sub(ts) as i32);
        // How far its end moved from the last accepted one's, against the wall clock.
        let moved = self.last.map_or(0, |(_, end)| at + len - end as i64);
        if moved > since.saturating_add(AHEAD_SLACK_SAMPLES) || at > (fed + MAX_GAP_SAMPLES) as i64
        {
            // The sender's clock jumped ahead.
            return Some(self.reanchor(now, timestamp, samples, fed, since));
        }
        if moved < -BEHIND_SAMPLES {
            self.far_behind += 1;
            if self.far_behind < FAR_BEHIND_RESYNC {
                return None;
            }
            // The sender's clock jumped back.
            return Some(self.reanchor(now, timestamp, samples, fed, since));
        }
        self.far_behind = 0;
        if at + len <= fed as i64 {
            // Late (its place was taken as lost or filled) or a duplicate.
            return None;
        }
        let pos = u64::try_from(at).unwrap_or(0);
        self.last = Some((
            now,
            (pos + samples.len() as u64).max(self.last.map_or(0, |l| l.1)),
        ));
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
            // Two packets at least: one of ptime 40 ms or more is already 320 samples, and
            // released alone it would leave no time for the one before it.
            if self.no_hold
                || (self.held.len() >= 2
                    && self.held.iter().map(|h| h.samples.len()).sum::<usize>()
                        >= REORDER_HOLD_SAMPLES)
            {
                self.release(fed);
            }
            return Some(&self.out);
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
        Some(&self.out)
    }

    /// The first packet of a source or of a clock that jumped: what was held from before is
    /// fed first (its gaps as silence), then the packet where the wall clock says it ends —
    /// `since` samples after the last accepted packet's end, less its own length — or right
    /// after what was fed if that is later. So the time between the two streams is not lost
    /// (the detector's clock stays with the wall clock: verdict deadlines and the 2-second
    /// rule count on it). At most [`MAX_GAP_SAMPLES`] of silence.
    fn reanchor(
        &mut self,
        now: Instant,
        timestamp: u32,
        samples: &[i16],
        fed: u64,
        since: i64,
    ) -> &[i16] {
        self.release(fed);
        self.far_behind = 0;
        let fed = fed + self.out.len() as u64;
        let wall = self.last.map_or(0, |(_, end)| {
            end as i64 + since.saturating_sub(samples.len() as i64)
        });
        let pos = u64::try_from(wall)
            .unwrap_or(0)
            .clamp(fed, fed + MAX_GAP_SAMPLES);
        self.out
            .resize(self.out.len() + usize::try_from(pos - fed).unwrap_or(0), 0);
        let mut end = pos;
        self.append(timestamp, pos, samples, &mut end);
        self.last = Some((now, pos + samples.len() as u64));
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
            let out = p
                .place(now, ssrc, *ts, s, fed.len() as u64)
                .unwrap_or_default()
                .to_vec();
            fed.extend(out);
        }
        fed
    }

    fn pkt(n: usize, v: i16) -> Vec<i16> {
        vec![v; n]
    }

    #[test]
    fn without_hold_a_gap_is_silence_at_once() {
        // Packet 1 lost: held, packet 2 waits for it (nothing fed); without hold, the gap is
        // silence and packet 2 follows at once.
        for (no_hold, fed_after_2) in [(false, 160), (true, 480)] {
            let mut p = Playout::default();
            p.set_no_hold(no_hold);
            let fed = play(&mut p, 9, &[(0, pkt(160, 1)), (320, pkt(160, 3))]);
            assert_eq!(fed.len(), fed_after_2, "no_hold {no_hold}");
            if no_hold {
                assert!(fed[160..320].iter().all(|&v| v == 0));
                assert!(fed[320..].iter().all(|&v| v == 3));
                assert_eq!(p.poll_timeout(), None);
            }
        }
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
        assert_eq!(
            p.place(t0, 9, 0, &pkt(160, 1), 0).map(<[i16]>::len),
            Some(160)
        );
        assert_eq!(p.place(t0, 9, 320, &pkt(160, 3), 160), Some(&[][..]));
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
        let n = |o: Option<&[i16]>| o.map_or(0, <[i16]>::len);
        assert_eq!(n(p.place(t0, 10, 77, &pkt(160, 4), 480)), 160);
        assert_eq!(n(p.place(t0, 10, 77 + 160, &pkt(160, 5), 640)), 160);
        // A clock that went back a long way: after three such packets, followed.
        let back = |k: u32| 237u32.wrapping_sub(100_000) + 160 * k;
        let mut fed = 800u64;
        for k in 0..3 {
            let got = n(p.place(t0, 10, back(k), &pkt(160, 6), fed));
            assert_eq!(got, if k < 2 { 0 } else { 160 }, "packet {k}");
            fed += got as u64;
        }
        assert_eq!(n(p.place(t0, 10, back(3), &pkt(160, 6), fed)), 160);
    }

    /// Places `(arrival ms, timestamp, samples)` packets of one SSRC from a detector started
    /// at the clock's origin; returns everything fed.
    fn play_at(pkts: &[(u64, u32, Vec<i16>)]) -> Vec<i16> {
        let t0 = Instant::now();
        let mut p = Playout::new(t0);
        let mut fed = Vec::new();
        for (ms, ts, s) in pkts {
            let now = t0 + Duration::from_millis(*ms);
            let out = p.place(now, 9, *ts, s, fed.len() as u64);
            fed.extend_from_slice(out.unwrap_or_default());
        }
        fed
    }

    /// Review-miss2 finding 2: the same SSRC's clock jumping less than 1 s, back or ahead,
    /// while packets keep coming every 20 ms: the audio is neither dropped as late nor put
    /// after a made-up pause — the detector's clock stays with the wall clock.
    #[test]
    fn a_same_ssrc_clock_jump_under_a_second_follows_the_wall_clock() {
        for jump in [-4000i64, -1600, 1600, 4000] {
            let pkts: Vec<(u64, u32, Vec<i16>)> = (0..40u32)
                .map(|i| {
                    let ts = i64::from(160 * i) + if i >= 20 { jump } else { 0 };
                    (
                        20 * u64::from(i + 1),
                        (ts + 100_000) as u32,
                        pkt(160, 1 + i as i16),
                    )
                })
                .collect();
            let fed = play_at(&pkts);
            // 40 packets came in 800 ms: 6,400 samples, give or take the two a backward jump
            // needs to be believed (made up as silence).
            assert_eq!(fed.len(), 6400, "jump {jump}");
            assert_eq!(fed[6400 - 1], 40, "jump {jump}");
            assert_eq!(
                fed[..3200],
                (1..=20).flat_map(|v| pkt(160, v)).collect::<Vec<_>>()[..]
            );
        }
    }

    /// Review-miss2 finding 3: a new SSRC after 300 ms with nothing (less than the detector's
    /// fill) is placed where the wall clock says, not right after what was fed; so is the
    /// first packet after the answer.
    #[test]
    fn a_new_source_keeps_the_time_since_the_last_packet() {
        let t0 = Instant::now();
        let mut p = Playout::new(t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        // The first packet comes 100 ms after the answer: 80 ms of silence before it.
        let out = p.place(at(100), 9, 5, &pkt(160, 1), 0).map(<[i16]>::to_vec);
        assert_eq!(out, Some([pkt(640, 0), pkt(160, 1)].concat()));
        let out = p
            .place(at(120), 9, 165, &pkt(160, 2), 800)
            .map(<[i16]>::to_vec);
        assert_eq!(out, Some(pkt(160, 2)));
        // Another source 180 ms later (160 ms of nothing in between).
        let out = p
            .place(at(300), 10, 7, &pkt(160, 3), 960)
            .map(<[i16]>::to_vec);
        assert_eq!(out, Some([pkt(1280, 0), pkt(160, 3)].concat()));
    }

    /// Review-miss2 finding 4: at ptime 40 and 60 ms, one held packet is already 320
    /// samples; reordered by one, the packets are still put back in order.
    #[test]
    fn reordering_is_undone_at_ptime_40_and_60() {
        for ms in [40u64, 60] {
            let n = ms as usize * 8;
            let ts = |k: u32| 7 + k * n as u32;
            let fed = play_at(&[
                (ms, ts(0), pkt(n, 1)),
                (2 * ms, ts(2), pkt(n, 3)),
                (2 * ms + 5, ts(1), pkt(n, 2)),
                (3 * ms, ts(3), pkt(n, 4)),
            ]);
            let want: Vec<i16> = [1, 2, 3, 4].iter().flat_map(|&v| pkt(n, v)).collect();
            assert_eq!(fed, want, "ptime {ms} ms");
        }
    }

    /// Review-miss2 findings 6 and 7: audio held after a gap is fed (the gap as silence)
    /// before a new source's or a jumped clock's first packet, not thrown away or left at
    /// its old clock's positions.
    #[test]
    fn held_audio_is_fed_before_a_new_source_or_a_clock_jump() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        for (ssrc, ts) in [(10u32, 5u32), (9, 900_000)] {
            let mut p = Playout::new(t0);
            assert_eq!(
                p.place(at(20), 9, 0, &pkt(160, 1), 0).map(<[i16]>::len),
                Some(160)
            );
            assert_eq!(p.place(at(60), 9, 320, &pkt(160, 3), 160), Some(&[][..]));
            let out = p
                .place(at(80), ssrc, ts, &pkt(160, 4), 160)
                .map(<[i16]>::to_vec);
            assert_eq!(
                out,
                Some([pkt(160, 0), pkt(160, 3), pkt(160, 4)].concat()),
                "ssrc {ssrc}"
            );
            assert_eq!(p.poll_timeout(), None);
        }
    }
}
