//! Special Information Tones (SIT), sans I/O: the three rising tones a network plays before
//! an announcement ("the number you have dialled is not in service"), and which of them.
//!
//! The encoding is Telcordia's (GR-1162-CORE, carried into ANSI T1.401 and listed in ITU-T
//! E.180 Supplement 2 for North America): three successive tone segments,
//!
//! * the first 913.8 Hz (low) or 985.2 Hz (high),
//! * the second 1,370.6 Hz (low) or 1,428.5 Hz (high),
//! * the third always 1,776.7 Hz,
//!
//! each 274 ms (short) or 380 ms (long; the third is always long), with at most a few ms
//! between them (ITU-T: a silent interval of up to 30 ms; segments 330 ± 70 ms within
//! 950 ± 50, 1,400 ± 50 and 1,800 ± 50 Hz). The first two segments' lengths and frequencies
//! say why the call failed:
//!
//! | code | 1st | 2nd | meaning |
//! |---|---|---|---|
//! | IC  | 913.8 short | 1,370.6 short | operator intercept (number changed, not in service) |
//! | VC  | 985.2 long  | 1,370.6 short | vacant code (no such number) |
//! | RO′ | 913.8 short | 1,428.5 long  | reorder, intra-LATA (switching blockage) |
//! | RO″ | 985.2 short | 1,370.6 long  | reorder, inter-LATA |
//! | NC′ | 985.2 long  | 1,428.5 long  | no circuit, intra-LATA (all trunks busy) |
//! | NC″ | 913.8 long  | 1,370.6 long  | no circuit, inter-LATA |
//! | IO  | 913.8 long  | 1,428.5 short | ineffective other (call cannot be completed as dialled) |
//! | —   | 985.2 short | 1,428.5 short | reserved for future use |
//!
//! The other eight combinations are unassigned ([`SitKind::Unknown`]); ITU-T E.180's
//! 950/1,400/1,800 Hz SIT of 330 ms segments, read through this table, may land on any of
//! them (330 ms is just past the short/long split). Unknown and reserved codes are treated
//! like the temporary ones ([`SitKind::is_temporary`]): calling again is the safer error.
//!
//! Detection: the audio is cut in 10 ms blocks; in each, a Goertzel filter at each nominal
//! frequency says how much of the block's energy that one sinusoid holds (a 10 ms window is
//! 100 Hz wide: each band's two nominal frequencies fall in it). A run of blocks held by one
//! band is a segment; when it ends, its frequency is measured over the whole segment (a
//! Goertzel scan in 2 Hz steps, resolution ≈ 1/length) and must lie within ±5 % of one of
//! its band's nominal frequencies (the standard asks ±0.2 % of the sender; the margin is for
//! the line), its length within 220–440 ms: Telcordia's 274 and 380 ms with a margin for
//! the line and the 10 ms blocks, and ITU-T's 330 ± 70 ms (260–400 ms). Three such segments in band order, each starting within 40 ms of
//! the previous one's end, are a SIT; the short/long split is at 327 ms, half way.
//!
//! A lone tone (a voicemail beep at 1,776 Hz, say) is never a SIT; neither are two tones
//! without the third, nor a tune whose notes are not these. The detector also says when a
//! tone under way *could be* part of a SIT ([`SitDetector::pending`]): the beep detector's
//! verdict on it waits until this resolves (the third tone alone looks like a beep).

use std::time::Duration;

/// Samples per block (10 ms at 8 kHz).
const BLOCK: usize = 80;
const BLOCK_MS: u64 = 10;
/// Nominal frequencies (Hz) by band: the first segment's low and high, the second's, the
/// third's.
const BANDS: [&[f32]; 3] = [&[913.8, 985.2], &[1370.6, 1428.5], &[1776.7]];
/// Share of a block's energy the band's best nominal sinusoid must hold for the block to be
/// that band's. A clean tone holds ≥ 0.64 even 0.36 bin off the filter's centre (the far
/// nominal frequency of the band); speech and music rarely hold half in one 100 Hz band.
const BLOCK_SHARE: f32 = 0.5;
/// Blocks missing inside a segment that do not end it (noise, a transition).
const MAX_HOLE_BLOCKS: u64 = 2;
/// The longest silence between two segments of a SIT, in blocks (ITU-T allows 30 ms; the
/// transition block may be counted as a hole).
const MAX_GAP_BLOCKS: u64 = 4;
/// Accepted segment lengths (ms), measured to a block: Telcordia's short 274 and long 380
/// with a margin, and ITU-T's 330 ± 70.
const MIN_SEGMENT_MS: u64 = 220;
const MAX_SEGMENT_MS: u64 = 440;
/// Short below, long from.
const SHORT_LONG_SPLIT_MS: u64 = 327;
/// Frequency tolerance around a nominal frequency.
const FREQ_TOLERANCE: f32 = 0.05;
/// Step of the frequency scan over a finished segment, Hz.
const SCAN_STEP_HZ: f32 = 2.0;
/// Samples kept to measure a finished segment (the longest accepted, and more).
const HISTORY: usize = 8 * 600;

/// What a SIT says about the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SitKind {
    /// IC: operator intercept (number changed or not in service).
    Intercept,
    /// VC: vacant code.
    VacantCode,
    /// RO′: reorder, intra-LATA.
    ReorderIntra,
    /// RO″: reorder, inter-LATA.
    ReorderInter,
    /// NC′: no circuit, intra-LATA.
    NoCircuitIntra,
    /// NC″: no circuit, inter-LATA.
    NoCircuitInter,
    /// IO: ineffective other.
    IneffectiveOther,
    /// The code reserved for future use (high short, high short).
    Reserved,
    /// A combination the table does not assign (e.g. low long then high long; ITU-T E.180's
    /// 330 ms tones may read as one).
    Unknown,
}

impl SitKind {
    /// The type from the first two segments: (high frequency?, long?) each.
    fn of(first: (bool, bool), second: (bool, bool)) -> SitKind {
        match (first, second) {
            ((false, false), (false, false)) => SitKind::Intercept,
            ((true, true), (false, false)) => SitKind::VacantCode,
            ((false, false), (true, true)) => SitKind::ReorderIntra,
            ((true, false), (false, true)) => SitKind::ReorderInter,
            ((true, true), (true, true)) => SitKind::NoCircuitIntra,
            ((false, true), (false, true)) => SitKind::NoCircuitInter,
            ((false, true), (true, false)) => SitKind::IneffectiveOther,
            ((true, false), (true, false)) => SitKind::Reserved,
            _ => SitKind::Unknown,
        }
    }

    /// The name used in reports and the audit log (the table's code, lower-cased).
    pub fn as_str(self) -> &'static str {
        match self {
            SitKind::Intercept => "ic",
            SitKind::VacantCode => "vc",
            SitKind::ReorderIntra => "ro-intra",
            SitKind::ReorderInter => "ro-inter",
            SitKind::NoCircuitIntra => "nc-intra",
            SitKind::NoCircuitInter => "nc-inter",
            SitKind::IneffectiveOther => "io",
            SitKind::Reserved => "reserved",
            SitKind::Unknown => "unknown",
        }
    }

    /// Worth calling again later: a temporary network condition (reorder, no circuit), or a
    /// code that does not say the number is unreachable (reserved, unassigned) — redialling
    /// is the safer error there. The others say the number cannot be reached as dialled.
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            SitKind::ReorderIntra
                | SitKind::ReorderInter
                | SitKind::NoCircuitIntra
                | SitKind::NoCircuitInter
                | SitKind::Reserved
                | SitKind::Unknown
        )
    }

    /// Every type.
    pub const ALL: [SitKind; 9] = [
        SitKind::Intercept,
        SitKind::VacantCode,
        SitKind::ReorderIntra,
        SitKind::ReorderInter,
        SitKind::NoCircuitIntra,
        SitKind::NoCircuitInter,
        SitKind::IneffectiveOther,
        SitKind::Reserved,
        SitKind::Unknown,
    ];
}

/// One measured tone segment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    /// Offset of its start and end from the detector's start.
    pub start: Duration,
    pub end: Duration,
    /// Its frequency, measured over the segment, Hz.
    pub freq_hz: f32,
}

/// A SIT heard: its type and its three segments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sit {
    pub kind: SitKind,
    pub segments: [Segment; 3],
}

/// A run of blocks held by one band.
#[derive(Clone, Copy, Debug)]
struct Run {
    band: usize,
    first: u64,
    last: u64,
}

/// A finished segment that fits a band.
#[derive(Clone, Copy, Debug)]
struct Fit {
    band: usize,
    first: u64,
    last: u64,
    high: bool,
    long: bool,
    freq_hz: f32,
}

/// The SIT detector (see the module documentation). Fed linear 8 kHz samples; its clock is
/// the audio (10 ms per block), resynchronised after a gap ([`SitDetector::gap`]).
#[derive(Debug, Clone)]
pub struct SitDetector {
    /// Index of the block being filled.
    block: u64,
    buf: Vec<f32>,
    /// The last [`HISTORY`] samples (ring), indexed by absolute sample number.
    history: Vec<f32>,
    run: Option<Run>,
    /// The segments that fit, most recent last (at most two are needed).
    fits: Vec<Fit>,
    found: Option<Sit>,
    reported: bool,
    /// `cos(ωn)` and `sin(ωn)` over a block for each nominal frequency, in [`BANDS`] order:
    /// a block's DFT at those frequencies as dot products (no recurrence to wait on).
    basis: Box<[[f32; BLOCK]; 2 * NOMINALS]>,
}

/// The quietest block considered: −52 dBFS as a mean square (10^(−52/10) of full scale), a
/// −40 dBFS tone with margin for G.711 and a fade.
const MIN_SQUARE: f32 = 32768.0 * 32768.0 * 6.31e-6;
/// Zero crossings in a block a candidate tone can have (see [`block_band`]).
const ZC_RANGE: std::ops::RangeInclusive<usize> = 10..=50;
/// How many nominal frequencies [`BANDS`] holds.
const NOMINALS: usize = 5;

impl Default for SitDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl SitDetector {
    pub fn new() -> Self {
        SitDetector {
            block: 0,
            buf: Vec::with_capacity(BLOCK),
            history: vec![0.0; HISTORY],
            run: None,
            fits: Vec::new(),
            found: None,
            reported: false,
            basis: {
                let mut b = Box::new([[0.0; BLOCK]; 2 * NOMINALS]);
                let freqs = BANDS.iter().flat_map(|b| b.iter());
                for (k, f) in freqs.enumerate() {
                    let w = 2.0 * std::f32::consts::PI * f / 8000.0;
                    for n in 0..BLOCK {
                        b[2 * k][n] = (w * n as f32).cos();
                        b[2 * k + 1][n] = (w * n as f32).sin();
                    }
                }
                b
            },
        }
    }

    /// Feeds samples (any count).
    #[inline(always)]
    pub fn feed(&mut self, samples: &[i16]) {
        if self.found.is_some() {
            return;
        }
        let mut rest = samples;
        while !rest.is_empty() {
            let (part, later) = rest.split_at((BLOCK - self.buf.len()).min(rest.len()));
            rest = later;
            self.buf.extend(part.iter().map(|&s| f32::from(s)));
            if self.buf.len() == BLOCK {
                // [`HISTORY`] is a whole number of blocks: each block has its slot.
                let at = (self.block % (HISTORY / BLOCK) as u64) as usize * BLOCK;
                if let Some(slot) = self.history.get_mut(at..at + BLOCK) {
                    slot.copy_from_slice(&self.buf);
                }
                let band = block_band(&self.buf, &self.basis);
                self.buf.clear();
                self.step(band);
                self.block += 1;
            }
        }
    }

    /// The audio stopped and resumes at `at` (from the detector's start): a tone under way
    /// ended, and nothing before the gap is part of what follows.
    pub fn gap(&mut self, at: Duration) {
        if self.found.is_some() {
            return;
        }
        if let Some(r) = self.run.take() {
            self.finish(r);
        }
        self.fits.clear();
        self.buf.clear();
        self.block = self
            .block
            .max(u64::try_from(at.as_millis()).unwrap_or(u64::MAX) / BLOCK_MS);
    }

    /// Whether the tone under way (or one that just ended) may be part of a SIT still to be
    /// completed: what it would take for a beep is not yet known.
    pub fn pending(&self) -> bool {
        if self.found.is_some() {
            return !self.reported;
        }
        let fits_before = |band: usize, from: u64| self.chain_ok(band, from);
        match self.run {
            Some(r) => {
                (r.last + 1 - r.first) * BLOCK_MS <= MAX_SEGMENT_MS && fits_before(r.band, r.first)
            }
            None => match self.fits.last() {
                Some(f) if f.band < 2 => self.block <= f.last + MAX_GAP_BLOCKS + 1,
                _ => false,
            },
        }
    }

    /// The SIT, once, when it has been heard.
    pub fn poll(&mut self) -> Option<Sit> {
        if self.reported {
            return None;
        }
        let s = self.found?;
        self.reported = true;
        Some(s)
    }

    /// Whether a SIT was heard.
    pub fn found(&self) -> Option<Sit> {
        self.found
    }

    /// Whether a segment of `band` starting at block `first` would follow the segments
    /// before it as a SIT's: the first band needs nothing before it; the others need the
    /// previous band's segment, ended at most [`MAX_GAP_BLOCKS`] before.
    fn chain_ok(&self, band: usize, first: u64) -> bool {
        if band == 0 {
            return true;
        }
        let n = self.fits.len();
        if n < band {
            return false;
        }
        let chain = &self.fits[n - band..];
        chain.iter().enumerate().all(|(i, f)| f.band == i)
            && chain
                .windows(2)
                .all(|w| w[1].first <= w[0].last + MAX_GAP_BLOCKS + 1)
            && chain
                .last()
                .is_some_and(|f| first <= f.last + MAX_GAP_BLOCKS + 1)
    }

    fn step(&mut self, band: Option<usize>) {
        let b = self.block;
        match (self.run, band) {
            (Some(mut r), Some(k)) if k == r.band => {
                r.last = b;
                self.run = Some(r);
            }
            (Some(r), Some(k)) => {
                self.finish(r);
                self.run = Some(Run {
                    band: k,
                    first: b,
                    last: b,
                });
            }
            (Some(r), None) => {
                if b > r.last + MAX_HOLE_BLOCKS {
                    self.run = None;
                    self.finish(r);
                }
            }
            (None, Some(k)) => {
                self.run = Some(Run {
                    band: k,
                    first: b,
                    last: b,
                })
            }
            (None, None) => {}
        }
    }

    /// A run ended: measure it, keep it if it fits its band, and see whether it completes a
    /// SIT.
    fn finish(&mut self, r: Run) {
        let Some(fit) = self.measure(r) else {
            self.fits.clear();
            return;
        };
        if !self.chain_ok(fit.band, fit.first) {
            self.fits.clear();
            if fit.band != 0 {
                return;
            }
        }
        self.fits.push(fit);
        if self.fits.len() > 3 {
            self.fits.remove(0);
        }
        if fit.band == 2 {
            let tail = self
                .fits
                .len()
                .checked_sub(3)
                .and_then(|i| self.fits.get(i..));
            if let Some(&[a, b, c]) = tail {
                let seg = |f: Fit| Segment {
                    start: Duration::from_millis(f.first * BLOCK_MS),
                    end: Duration::from_millis((f.last + 1) * BLOCK_MS),
                    freq_hz: f.freq_hz,
                };
                self.found = Some(Sit {
                    kind: SitKind::of((a.high, a.long), (b.high, b.long)),
                    segments: [seg(a), seg(b), seg(c)],
                });
            }
        }
    }

    /// A run's length and frequency checked against its band.
    fn measure(&self, r: Run) -> Option<Fit> {
        let ms = (r.last + 1 - r.first) * BLOCK_MS;
        if !(MIN_SEGMENT_MS..=MAX_SEGMENT_MS).contains(&ms) {
            return None;
        }
        let nominal = BANDS.get(r.band)?;
        // The segment's samples, its edge blocks left out (a tone may start mid-block).
        let from = (r.first + 1) * BLOCK as u64;
        let to = r.last * BLOCK as u64;
        let samples: Vec<f32> = (from..to)
            .filter_map(|n| self.history.get((n % HISTORY as u64) as usize).copied())
            .collect();
        let lo = nominal.first()? * (1.0 - FREQ_TOLERANCE);
        let hi = nominal.last()? * (1.0 + FREQ_TOLERANCE);
        let mut best = (0.0f32, lo);
        let mut f = lo;
        while f <= hi {
            let p = goertzel(&samples, f);
            if p > best.0 {
                best = (p, f);
            }
            f += SCAN_STEP_HZ;
        }
        let freq = best.1;
        // Nearest nominal frequency, within the tolerance.
        let (i, nom) = nominal
            .iter()
            .enumerate()
            .min_by(|a, b| (a.1 - freq).abs().total_cmp(&(b.1 - freq).abs()))?;
        if (freq - nom).abs() > nom * FREQ_TOLERANCE {
            return None;
        }
        Some(Fit {
            band: r.band,
            first: r.first,
            last: r.last,
            high: i == 1,
            long: ms >= SHORT_LONG_SPLIT_MS,
            freq_hz: freq,
        })
    }
}

/// The band whose nominal sinusoid holds at least [`BLOCK_SHARE`] of the block's energy
/// (the five Goertzel filters and the energy in one pass).
#[inline(always)]
fn block_band(block: &[f32], basis: &[[f32; BLOCK]; 2 * NOMINALS]) -> Option<usize> {
    let n = block.len() as f32;
    let energy = dot(block, block);
    // Full scale: a square wave at 32,768 (a full-scale sine is −3 dBFS).
    if energy < n * MIN_SQUARE {
        return None;
    }
    // A sinusoid crosses zero twice a cycle: 17–37 times in 80 samples for 868–1,866 Hz.
    // While it holds half the energy or more, an interferer weaker than it (hum, an offset,
    // noise) does not take that outside [`ZC_RANGE`]; much voiced speech is under it.
    let crossings = block
        .windows(2)
        .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
        .count();
    if !ZC_RANGE.contains(&crossings) {
        return None;
    }
    // |X(ω)|² = (Σ x cos ωn)² + (Σ x sin ωn)²; a sinusoid at ω holding all the energy
    // gives N·E/2.
    let share = |k: usize| {
        let re = dot(block, &basis[2 * k]);
        let im = dot(block, &basis[2 * k + 1]);
        2.0 * (re * re + im * im) / (n * energy) >= BLOCK_SHARE
    };
    // [`BANDS`] flattened: 0–1 the first band, 2–3 the second, 4 the third.
    if share(0) || share(1) {
        Some(0)
    } else if share(2) || share(3) {
        Some(1)
    } else if share(4) {
        Some(2)
    } else {
        None
    }
}

/// Σ a·b, in eight lanes (so it vectorises).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Goertzel's `2·cos(ω)` for `f` Hz at 8 kHz.
fn goertzel_coef(f: f32) -> f32 {
    2.0 * (2.0 * std::f32::consts::PI * f / 8000.0).cos()
}

/// |X(f)|² of `x` by Goertzel's recurrence (8 kHz).
#[inline(always)]
fn goertzel(x: &[f32], f: f32) -> f32 {
    let c = goertzel_coef(f);
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s = v + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a fake clock's origin
mod tests {
    use super::*;
    use crate::g711::Codec;

    /// A SIT by the table: first and second segments (high?, long?), the third 1,776.7 Hz
    /// long; `gap_ms` of silence between segments; at `dbfs` (sine RMS re full-scale square).
    fn sit(first: (bool, bool), second: (bool, bool), dbfs: f32, gap_ms: usize) -> Vec<f32> {
        let amp = 32768.0 * 10f32.powf(dbfs / 20.0) * std::f32::consts::SQRT_2;
        let len = |long: bool| if long { 380 } else { 274 };
        let segs = [
            (if first.0 { 985.2 } else { 913.8 }, len(first.1)),
            (if second.0 { 1428.5 } else { 1370.6 }, len(second.1)),
            (1776.7, 380),
        ];
        let mut out = vec![0.0; 8 * 137];
        for (i, (f, ms)) in segs.into_iter().enumerate() {
            if i > 0 {
                out.extend(std::iter::repeat_n(0.0, 8 * gap_ms));
            }
            out.extend((0..8 * ms).map(|n| {
                amp * (2.0 * std::f32::consts::PI * f * n as f32 / 8000.0 + i as f32).sin()
            }));
        }
        out
    }

    fn tone(f: f32, ms: usize, dbfs: f32) -> Vec<f32> {
        let amp = 32768.0 * 10f32.powf(dbfs / 20.0) * std::f32::consts::SQRT_2;
        (0..8 * ms)
            .map(|n| amp * (2.0 * std::f32::consts::PI * f * n as f32 / 8000.0).sin())
            .collect()
    }

    /// Deterministic white noise at `dbfs` RMS.
    fn noise(len: usize, dbfs: f32, seed: u64) -> Vec<f32> {
        let rms = 32768.0 * 10f32.powf(dbfs / 20.0);
        let mut s = seed | 1;
        (0..len)
            .map(|_| {
                // Sum of 4 uniforms: roughly Gaussian, variance 4/12.
                let mut acc = 0.0;
                for _ in 0..4 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                }
                acc * rms * 3f32.sqrt()
            })
            .collect()
    }

    /// Through µ-law and back, fed in 20 ms packets.
    fn run(audio: &[f32]) -> (SitDetector, Option<Sit>, bool) {
        let pcm: Vec<i16> = audio
            .iter()
            .map(|&x| Codec::Pcmu.decode(Codec::Pcmu.encode(x.clamp(-32768.0, 32767.0) as i16)))
            .collect();
        let mut d = SitDetector::new();
        let mut ever_pending = false;
        let mut got = None;
        for p in pcm.chunks(160) {
            d.feed(p);
            ever_pending |= d.pending();
            if let Some(s) = d.poll() {
                got = Some(s);
            }
        }
        (d, got, ever_pending)
    }

    fn with_tail(mut a: Vec<f32>) -> Vec<f32> {
        a.extend(std::iter::repeat_n(0.0, 8 * 500));
        a
    }

    fn mix(a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter()
            .zip(b.iter().chain(std::iter::repeat(&0.0)))
            .map(|(x, y)| x + y)
            .collect()
    }

    /// A segment: (high frequency?, long?).
    type Seg = (bool, bool);

    const TABLE: [(Seg, Seg, SitKind); 8] = [
        ((false, false), (false, false), SitKind::Intercept),
        ((true, true), (false, false), SitKind::VacantCode),
        ((false, false), (true, true), SitKind::ReorderIntra),
        ((true, false), (false, true), SitKind::ReorderInter),
        ((true, true), (true, true), SitKind::NoCircuitIntra),
        ((false, true), (false, true), SitKind::NoCircuitInter),
        ((false, true), (true, false), SitKind::IneffectiveOther),
        ((true, false), (true, false), SitKind::Reserved),
    ];

    #[test]
    fn every_type_by_the_table_is_heard_and_named() {
        for (first, second, kind) in TABLE {
            for gap in [0, 4, 25] {
                let (_, got, _) = run(&with_tail(sit(first, second, -20.0, gap)));
                let s = got.unwrap_or_else(|| panic!("{kind:?} gap {gap}: not heard"));
                assert_eq!(s.kind, kind, "gap {gap}");
                let [a, b, c] = s.segments;
                assert!(
                    (a.freq_hz - if first.0 { 985.2 } else { 913.8 }).abs() < 6.0,
                    "{a:?}"
                );
                assert!(
                    (b.freq_hz - if second.0 { 1428.5 } else { 1370.6 }).abs() < 6.0,
                    "{b:?}"
                );
                assert!((c.freq_hz - 1776.7).abs() < 6.0, "{c:?}");
                // Where it was: the SIT starts after 137 ms of silence.
                assert!(a.start.as_millis().abs_diff(137) <= 10, "{a:?}");
            }
        }
    }

    #[test]
    fn quiet_sits_in_line_noise_through_mu_law() {
        for (i, (first, second, kind)) in TABLE.into_iter().enumerate() {
            for dbfs in [-10.0, -35.0, -40.0] {
                let clean = with_tail(sit(first, second, dbfs, 2));
                // Line noise 20 dB under the tones at -35 dBFS, 15 dB at -40.
                let a = mix(&clean, &noise(clean.len(), -55.0, i as u64 + 7));
                let (_, got, _) = run(&a);
                assert_eq!(got.map(|s| s.kind), Some(kind), "{dbfs} dBFS");
            }
        }
    }

    #[test]
    fn a_sit_over_mains_hum_and_an_offset() {
        for (i, (first, second, kind)) in TABLE.into_iter().enumerate() {
            let clean = with_tail(sit(first, second, -30.0, 0));
            // 50 Hz hum 6 dB under the tones with its 3rd harmonic, and a DC offset.
            let amp = 32768.0 * 10f32.powf(-36.0 / 20.0) * std::f32::consts::SQRT_2;
            let a: Vec<f32> = clean
                .iter()
                .enumerate()
                .map(|(n, x)| {
                    let t = n as f32 / 8000.0 + i as f32;
                    let w = 2.0 * std::f32::consts::PI * 50.0 * t;
                    x + amp * (w.sin() + 0.3 * (3.0 * w).sin()) + 150.0
                })
                .collect();
            assert_eq!(run(&a).1.map(|s| s.kind), Some(kind));
        }
    }

    #[test]
    fn a_sit_followed_by_its_announcement_at_once() {
        // The announcement (here a loud 200–3,000 Hz noise burst standing for speech) starts
        // right after the third tone: the tone still ends there.
        let s = sit((true, true), (false, false), -24.0, 0);
        let mut a = s.clone();
        a.extend(noise(8 * 1500, -18.0, 3));
        let (_, got, _) = run(&a);
        assert_eq!(got.map(|s| s.kind), Some(SitKind::VacantCode));
    }

    #[test]
    fn a_single_1776_hz_beep_is_not_a_sit() {
        for ms in [100, 380, 500, 1000] {
            let (d, got, _) = run(&with_tail(tone(1776.7, ms, -20.0)));
            assert_eq!(got, None, "{ms} ms");
            assert!(!d.pending(), "{ms} ms");
        }
    }

    #[test]
    fn two_tones_then_silence_is_not_a_sit_and_stops_pending() {
        let mut a = tone(913.8, 274, -20.0);
        a.extend(tone(1370.6, 274, -20.0));
        let (d, got, ever) = run(&with_tail(a));
        assert_eq!(got, None);
        assert!(ever, "the two tones were a possible SIT while they lasted");
        assert!(!d.pending(), "silence after them: no SIT coming");
    }

    #[test]
    fn the_third_tone_alone_after_two_tones_is_pending_until_the_sit_is_heard() {
        let a = with_tail(sit((false, false), (false, false), -20.0, 0));
        let pcm: Vec<i16> = a.iter().map(|&x| x as i16).collect();
        let mut d = SitDetector::new();
        // Half way through the third tone (137 + 274 + 274 + 190 ms).
        let mid = 8 * (137 + 274 + 274 + 190);
        d.feed(&pcm[..mid]);
        assert!(d.pending());
        assert!(d.poll().is_none());
        d.feed(&pcm[mid..]);
        assert!(d.poll().is_some());
        assert!(!d.pending());
    }

    #[test]
    fn wrong_lengths_order_or_frequencies_are_not_a_sit() {
        // Segments too short (150 ms): a tune of three quick notes.
        let mut a = tone(913.8, 150, -20.0);
        a.extend(tone(1370.6, 150, -20.0));
        a.extend(tone(1776.7, 150, -20.0));
        assert_eq!(run(&with_tail(a)).1, None);
        // Falling instead of rising.
        let mut a = tone(1776.7, 380, -20.0);
        a.extend(tone(1370.6, 274, -20.0));
        a.extend(tone(913.8, 274, -20.0));
        assert_eq!(run(&with_tail(a)).1, None);
        // 100 ms of silence between segments.
        let mut a = tone(913.8, 274, -20.0);
        a.extend(vec![0.0; 800]);
        a.extend(tone(1370.6, 274, -20.0));
        a.extend(vec![0.0; 800]);
        a.extend(tone(1776.7, 380, -20.0));
        assert_eq!(run(&with_tail(a)).1, None);
        // Frequencies 10 % off (820, 1230, 1600 Hz).
        let mut a = tone(820.0, 274, -20.0);
        a.extend(tone(1230.0, 274, -20.0));
        a.extend(tone(1600.0, 380, -20.0));
        assert_eq!(run(&with_tail(a)).1, None);
    }

    #[test]
    fn noise_and_chords_are_not_a_sit() {
        let (_, got, ever) = run(&noise(8 * 3000, -20.0, 11));
        assert_eq!(got, None);
        assert!(!ever);
        // Chords of the three frequencies at once, then each pair.
        let c = mix(
            &mix(&tone(950.0, 400, -26.0), &tone(1400.0, 400, -26.0)),
            &tone(1776.7, 400, -26.0),
        );
        let (_, got, _) = run(&with_tail(c));
        assert_eq!(got, None);
    }

    #[test]
    fn a_gap_in_the_audio_breaks_a_sequence() {
        let a = sit((false, false), (false, false), -20.0, 0);
        let pcm: Vec<i16> = a.iter().map(|&x| x as i16).collect();
        let mut d = SitDetector::new();
        let cut = 8 * (137 + 274 + 274);
        d.feed(&pcm[..cut]);
        d.gap(Duration::from_millis(2000));
        d.feed(&pcm[cut..]);
        d.feed(&[0; 8 * 500]);
        assert!(d.poll().is_none());
    }

    /// The answering-machine detector holds its events while a tone may be a SIT's: a SIT
    /// before an announcement is reported as such, and its third tone never as a beep (nor a
    /// machine's drop point); a greeting's 1,776.7 Hz beep alone is still a beep.
    #[test]
    fn the_amd_detector_reports_the_sit_and_not_a_beep() {
        use crate::amd::{AmdEvent, AmdParams, Detector};
        // With the default `beep_settle` (260 ms) and with a short one (20 ms): the beep
        // detector confirms a tone's end after 50 ms of lower level, the SIT detector after
        // 30 ms, so the SIT is complete before a beep on its third tone could be reported
        // (what the SIT's tones queued is dropped when it is).
        let events = |audio: &[f32], settle_ms: u64| {
            let t0 = std::time::Instant::now();
            let p = AmdParams {
                beep_settle: Duration::from_millis(settle_ms),
                ..AmdParams::default()
            };
            let mut d = Detector::new(t0, p);
            let mut ev = Vec::new();
            for (i, p) in audio.chunks(160).enumerate() {
                let pcm: Vec<i16> = p.iter().map(|&x| x as i16).collect();
                d.feed(t0 + Duration::from_millis(20 * (i as u64 + 1)), &pcm);
                ev.extend(std::iter::from_fn(|| d.poll_event()));
            }
            ev
        };
        for ((first, second, kind), settle) in TABLE.into_iter().flat_map(|t| [(t, 260), (t, 20)]) {
            let mut a = sit(first, second, -24.0, 0);
            a.extend(vec![0.0; 8 * 300]);
            a.extend(noise(8 * 3000, -22.0, 5));
            a.extend(vec![0.0; 8 * 3000]);
            let ev = events(&a, settle);
            assert!(
                matches!(ev.last(), Some(AmdEvent::Sit(s)) if s.kind == kind),
                "{kind:?} settle {settle}: {ev:?}"
            );
            assert!(
                !ev.iter()
                    .any(|e| matches!(e, AmdEvent::Beep(_) | AmdEvent::Drop(_))),
                "{kind:?}: {ev:?}"
            );
        }
        // Speech-like noise for 3 s, then the same third tone alone: a beep.
        let mut a = noise(8 * 3000, -22.0, 9);
        a.extend(vec![0.0; 8 * 400]);
        a.extend(tone(1776.7, 380, -24.0));
        a.extend(vec![0.0; 8 * 3000]);
        let ev = events(&a, 260);
        assert!(ev.iter().any(|e| matches!(e, AmdEvent::Beep(_))), "{ev:?}");
        assert!(!ev.iter().any(|e| matches!(e, AmdEvent::Sit(_))), "{ev:?}");
    }

    #[test]
    fn temporary_types() {
        let temporary: Vec<_> = SitKind::ALL
            .into_iter()
            .filter(|k| k.is_temporary())
            .collect();
        assert_eq!(
            temporary,
            [
                SitKind::ReorderIntra,
                SitKind::ReorderInter,
                SitKind::NoCircuitIntra,
                SitKind::NoCircuitInter,
                SitKind::Reserved,
                SitKind::Unknown,
            ]
        );
    }

    /// The codes as the standard writes them (Telcordia GR-1162 / ANSI T1.401, first and
    /// second segment as Hz and ms), not from `TABLE`: a swap in the code's table fails here.
    #[test]
    fn each_code_as_the_standard_writes_it() {
        /// A segment as the standard gives it: Hz, ms.
        type Tone = (f32, usize);
        const STANDARD: [(&str, Tone, Tone); 8] = [
            ("ic", (913.8, 274), (1370.6, 274)),
            ("vc", (985.2, 380), (1370.6, 274)),
            ("ro-intra", (913.8, 274), (1428.5, 380)),
            ("ro-inter", (985.2, 274), (1370.6, 380)),
            ("nc-intra", (985.2, 380), (1428.5, 380)),
            ("nc-inter", (913.8, 380), (1370.6, 380)),
            ("io", (913.8, 380), (1428.5, 274)),
            ("reserved", (985.2, 274), (1428.5, 274)),
        ];
        for (name, (f1, l1), (f2, l2)) in STANDARD {
            let mut a = vec![0.0; 8 * 100];
            a.extend(tone(f1, l1, -20.0));
            a.extend(tone(f2, l2, -20.0));
            a.extend(tone(1776.7, 380, -20.0));
            let got = run(&with_tail(a)).1.map(|s| s.kind.as_str());
            assert_eq!(got, Some(name), "{f1}/{l1} {f2}/{l2}");
        }
    }

    #[test]
    fn unassigned_combinations_are_unknown_and_retried() {
        let assigned: Vec<_> = TABLE.iter().map(|&(a, b, _)| (a, b)).collect();
        let mut unknown = 0;
        for first in [(false, false), (false, true), (true, false), (true, true)] {
            for second in [(false, false), (false, true), (true, false), (true, true)] {
                if assigned.contains(&(first, second)) {
                    continue;
                }
                unknown += 1;
                let (_, got, _) = run(&with_tail(sit(first, second, -20.0, 0)));
                let kind = got.map(|s| s.kind);
                assert_eq!(kind, Some(SitKind::Unknown), "{first:?} {second:?}");
                assert!(SitKind::Unknown.is_temporary());
            }
        }
        assert_eq!(unknown, 8);
        assert_eq!(SitKind::Unknown.as_str(), "unknown");
    }
}
