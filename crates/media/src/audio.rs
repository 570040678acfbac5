//! Prerecorded messages: any WAV → 8 kHz mono → G.711, once, at load time.

use std::path::Path;
use std::sync::Arc;

use rubato::{FftFixedIn, Resampler};

use crate::g711::Codec;
use crate::Error;

/// The sample rate G.711 carries.
pub const RATE: u32 = 8000;

/// A message ready to play: its audio encoded in both G.711 laws (the callee picks one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pcmu: Arc<[u8]>,
    pcma: Arc<[u8]>,
}

impl Message {
    /// Loads a WAV file (8/16/24/32-bit integer or 32-bit float, mono or multichannel, any
    /// rate): downmixes, resamples to 8 kHz through an anti-aliasing FFT resampler, encodes.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bad = |why: String| Error::Audio {
            path: path.to_owned(),
            why,
        };
        let mut reader = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
        let spec = reader.spec();
        let channels = usize::from(spec.channels);
        if channels == 0 {
            return Err(bad("no channels".into()));
        }
        if !(RATE..=384_000).contains(&spec.sample_rate) {
            return Err(bad(format!(
                "sample rate {} Hz: expected 8000 to 384000 Hz",
                spec.sample_rate
            )));
        }
        let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
            (hound::SampleFormat::Float, 32) => reader.samples::<f32>().collect::<Result<_, _>>(),
            (hound::SampleFormat::Int, bits @ 1..=32) => {
                let scale = 1.0 / (1u64 << (bits - 1)) as f32;
                reader
                    .samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale))
                    .collect::<Result<_, _>>()
            }
            (f, b) => {
                return Err(bad(format!(
                    "unsupported sample format {f:?} with {b} bits"
                )))
            }
        }
        .map_err(|e| bad(e.to_string()))?;
        if interleaved.is_empty() {
            return Err(bad("the file holds no audio".into()));
        }
        let mono: Vec<f32> = interleaved
            .chunks(channels)
            .map(|f| f.iter().sum::<f32>() / channels as f32)
            .collect();
        let at_8k = resample(&mono, spec.sample_rate).map_err(bad)?;
        if at_8k.is_empty() {
            return Err(bad("too short: less than one sample at 8 kHz".into()));
        }
        Ok(Self::from_samples(&at_8k))
    }

    /// A message from 8 kHz samples in [-1, 1].
    pub fn from_samples(samples: &[f32]) -> Self {
        let pcm: Vec<i16> = samples
            .iter()
            // Clamped to the i16 range first, so the cast cannot wrap.
            .map(|s| (s * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        Message {
            pcmu: pcm.iter().map(|&s| Codec::Pcmu.encode(s)).collect(),
            pcma: pcm.iter().map(|&s| Codec::Pcma.encode(s)).collect(),
        }
    }

    /// The encoded audio for `codec`, one byte per sample.
    pub fn encoded(&self, codec: Codec) -> &[u8] {
        match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        }
    }

    /// The encoded samples, shared (for the pacer, which outlives no call but runs on
    /// another thread).
    pub fn encoded_shared(&self, codec: Codec) -> Arc<[u8]> {
        match codec {
            Codec::Pcmu => self.pcmu.clone(),
            Codec::Pcma => self.pcma.clone(),
        }
    }

    /// Samples at 8 kHz.
    pub fn len(&self) -> usize {
        self.pcmu.len()
    }

    /// Whether the message is empty (never, for a loaded one).
    pub fn is_empty(&self) -> bool {
        self.pcmu.is_empty()
    }

    /// Playing time.
    pub fn duration(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.len() as u64 * 125)
    }
}

/// Resamples mono audio from `rate` to 8 kHz (band-limited: rubato's FFT resampler applies a
/// windowed low-pass below the new Nyquist frequency), compensating the resampler's delay.
fn resample(input: &[f32], rate: u32) -> Result<Vec<f32>, String> {
    if rate == RATE {
        return Ok(input.to_vec());
    }
    const CHUNK: usize = 1024;
    let mut r = FftFixedIn::<f32>::new(rate as usize, RATE as usize, CHUNK, 2, 1)
        .map_err(|e| e.to_string())?;
    let delay = r.output_delay();
    let expected = (input.len() as u64 * u64::from(RATE) / u64::from(rate)) as usize;
    let mut out = Vec::with_capacity(expected + delay + CHUNK);
    let mut pos = 0;
    while pos + r.input_frames_next() <= input.len() {
        let n = r.input_frames_next();
        let chunk = r
            .process(&[&input[pos..pos + n]], None)
            .map_err(|e| e.to_string())?;
        out.extend_from_slice(&chunk[0]);
        pos += n;
    }
    // The tail, then zeros to flush the filter's delay.
    let tail = r
        .process_partial(Some(&[&input[pos..]]), None)
        .map_err(|e| e.to_string())?;
    out.extend_from_slice(&tail[0]);
    while out.len() < expected + delay {
        let flush = r
            .process_partial::<&[f32]>(None, None)
            .map_err(|e| e.to_string())?;
        if flush[0].is_empty() {
            break;
        }
        out.extend_from_slice(&flush[0]);
    }
    Ok(out.into_iter().skip(delay).take(expected).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(f: f32, rate: u32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|n| 0.5 * (2.0 * std::f32::consts::PI * f * n as f32 / rate as f32).sin())
            .collect()
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
    }

    /// Passband kept, stopband (what would alias) removed, length and timing preserved.
    #[test]
    fn resampler_response() {
        for rate in [16_000, 22_050, 44_100, 48_000] {
            let pass = resample(&sine(1000.0, rate, 1.0), rate).unwrap_or_default();
            assert!(
                (pass.len() as i64 - 8000).abs() <= 1,
                "{rate}: {} samples",
                pass.len()
            );
            let mid = &pass[1000..7000];
            assert!(
                (rms(mid) - 0.5 / 2f32.sqrt()).abs() < 0.02,
                "{rate}: passband rms {}",
                rms(mid)
            );
            // Phase: the output is the same sine, not delayed.
            let want = sine(1000.0, RATE, 1.0);
            let err: f32 = mid
                .iter()
                .zip(&want[1000..7000])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 0.05, "{rate}: max error {err}");
            // 6 kHz is above 4 kHz Nyquist: must be filtered, not folded to 2 kHz.
            let stop = resample(&sine(6000.0, rate, 1.0), rate).unwrap_or_default();
            assert!(
                rms(&stop[1000..7000]) < 0.005,
                "{rate}: stopband rms {}",
                rms(&stop[1000..7000])
            );
        }
    }

    fn write_wav(path: &Path, spec: hound::WavSpec, frames: &[f32]) {
        let mut w = hound::WavWriter::create(path, spec).unwrap_or_else(|e| panic!("{e}"));
        for &f in frames {
            for _ in 0..spec.channels {
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(f),
                    (_, 8) => w.write_sample((f * 127.0) as i8),
                    (_, 16) => w.write_sample((f * 32767.0) as i16),
                    (_, b) => w.write_sample((f * ((1i64 << (b - 1)) - 1) as f32) as i32),
                }
                .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        w.finalize().unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn loads_every_wav_shape() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for (i, (bits, fmt, ch, rate)) in [
            (8, hound::SampleFormat::Int, 1, 8000),
            (16, hound::SampleFormat::Int, 2, 44_100),
            (24, hound::SampleFormat::Int, 1, 48_000),
            (32, hound::SampleFormat::Int, 2, 16_000),
            (32, hound::SampleFormat::Float, 1, 22_050),
        ]
        .into_iter()
        .enumerate()
        {
            let p = dir.path().join(format!("{i}.wav"));
            let spec = hound::WavSpec {
                channels: ch,
                sample_rate: rate,
                bits_per_sample: bits,
                sample_format: fmt,
            };
            write_wav(&p, spec, &sine(440.0, rate, 0.5));
            let m = Message::load(&p).unwrap_or_else(|e| panic!("{bits}-bit {ch}ch {rate}: {e}"));
            assert!(
                (m.len() as i64 - 4000).abs() <= 1,
                "{bits}-bit: {}",
                m.len()
            );
            let decoded: Vec<f32> = m
                .encoded(Codec::Pcma)
                .iter()
                .map(|&b| f32::from(Codec::Pcma.decode(b)) / 32768.0)
                .collect();
            assert!(
                (rms(&decoded[500..3500]) - 0.354).abs() < 0.03,
                "{bits}-bit {ch}ch: rms {}",
                rms(&decoded[500..3500])
            );
        }
        std::fs::write(dir.path().join("bad.wav"), b"RIFF....WAVEfmt nope")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            Message::load(&dir.path().join("bad.wav")),
            Err(Error::Audio { .. })
        ));
        assert!(matches!(
            Message::load(&dir.path().join("missing.wav")),
            Err(Error::Audio { .. })
        ));
    }
}
