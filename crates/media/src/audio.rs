//! Prerecorded messages: any WAV → 8 kHz mono → G.711, once, at load time.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rubato::{FftFixedIn, Resampler};

use crate::amd::EchoReference;
use crate::g711::Codec;
use crate::Error;

/// The sample rate G.711 carries.
pub const RATE: u32 = 8000;

/// Why a message file cannot be used (the source of [`Error::Audio`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("not a WAV file (no RIFF/WAVE header)")]
    NotWav,
    #[error("the `fmt ` chunk is too short")]
    FmtTooShort,
    #[error("the `data` chunk comes before the `fmt ` chunk")]
    DataBeforeFmt,
    #[error("no `fmt ` chunk")]
    NoFmt,
    #[error("no `data` chunk: the file holds no audio")]
    NoData,
    /// A truncated copy: the `data` chunk holds fewer bytes than its header announces.
    #[error("truncated: the header announces {announced} bytes of audio ({announced_secs:.1} s), the file holds {held} ({held_secs:.1} s)")]
    Truncated {
        announced: usize,
        held: usize,
        announced_secs: f64,
        held_secs: f64,
    },
    #[error("no channels")]
    NoChannels,
    #[error("sample rate {rate} Hz: expected 8000 to 384000 Hz")]
    Rate { rate: u32 },
    #[error("G.711 with {bits} bits per sample: expected 8")]
    G711Bits { bits: u16 },
    #[error("unsupported sample format {format:?} with {bits} bits")]
    Unsupported {
        format: hound::SampleFormat,
        bits: u16,
    },
    /// hound cannot decode the samples.
    #[error(transparent)]
    Decode(#[from] hound::Error),
    #[error("cannot resample it: {0}")]
    Resampler(#[from] rubato::ResamplerConstructionError),
    #[error("cannot resample it: {0}")]
    Resample(#[from] rubato::ResampleError),
    #[error("the file holds no audio")]
    NoAudio,
    #[error("too short: less than one sample at 8 kHz")]
    TooShort,
}

/// A message ready to play: its audio encoded in both G.711 laws (the callee picks one).
#[derive(Debug, Clone)]
pub struct Message {
    pcmu: Arc<[u8]>,
    pcma: Arc<[u8]>,
    /// The answering-machine detector's echo reference per law (µ, A), prepared on first
    /// use and shared by every call (and clone) that plays the message.
    echo: Arc<[OnceLock<Arc<EchoReference>>; 2]>,
}

/// Messages are equal by their audio (the prepared references follow from it).
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.pcmu == other.pcmu && self.pcma == other.pcma
    }
}

impl Eq for Message {}

impl Message {
    /// Loads a WAV file (8/16/24/32-bit integer, 32-bit float, or 8-bit G.711 µ-law /
    /// A-law; mono or multichannel, any rate): downmixes, resamples to 8 kHz through an
    /// anti-aliasing FFT resampler, encodes. A file whose `data` chunk is shorter than its
    /// header says (a truncated copy) is refused, not played short.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bad = |source: AudioError| Error::Audio {
            path: path.to_owned(),
            source,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(AudioError::Read(e)))?;
        let wave = Wave::parse(&bytes).map_err(bad)?;
        let channels = usize::from(wave.channels);
        if channels == 0 {
            return Err(bad(AudioError::NoChannels));
        }
        if !(RATE..=384_000).contains(&wave.rate) {
            return Err(bad(AudioError::Rate { rate: wave.rate }));
        }
        let interleaved: Vec<f32> = match (wave.format, wave.bits) {
            // hound reads PCM and float only; G.711 WAVs (the usual telephony prompt
            // format) are one byte per sample through the G.711 tables.
            (FORMAT_MULAW, 8) => g711_samples(wave.data, Codec::Pcmu),
            (FORMAT_ALAW, 8) => g711_samples(wave.data, Codec::Pcma),
            (FORMAT_MULAW | FORMAT_ALAW, b) => return Err(bad(AudioError::G711Bits { bits: b })),
            _ => hound_samples(&bytes).map_err(bad)?,
        };
        if interleaved.is_empty() {
            return Err(bad(AudioError::NoAudio));
        }
        let mono: Vec<f32> = interleaved
            .chunks(channels)
            .map(|f| f.iter().sum::<f32>() / channels as f32)
            .collect();
        let at_8k = resample(&mono, wave.rate).map_err(bad)?;
        if at_8k.is_empty() {
            return Err(bad(AudioError::TooShort));
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
            echo: Arc::default(),
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

    /// The message as the answering-machine detector's echo reference when played in
    /// `codec` (its decoded samples: what goes on the line), prepared once and shared
    /// ([`crate::amd::Detector::set_shared_reference`]).
    pub fn echo_reference(&self, codec: Codec) -> Arc<EchoReference> {
        let at = match codec {
            Codec::Pcmu => 0,
            Codec::Pcma => 1,
        };
        self.echo[at]
            .get_or_init(|| {
                let pcm: Vec<i16> = self
                    .encoded(codec)
                    .iter()
                    .map(|&b| codec.decode(b))
                    .collect();
                Arc::new(EchoReference::new(&pcm))
            })
            .clone()
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

/// WAVE format tags (RFC 2361): PCM, IEEE float, A-law, µ-law, extensible.
const FORMAT_ALAW: u16 = 6;
const FORMAT_MULAW: u16 = 7;
const FORMAT_EXTENSIBLE: u16 = 0xfffe;

/// What a RIFF/WAVE file says about its audio, and the audio bytes.
struct Wave<'a> {
    /// The format tag (an extensible file's sub-format).
    format: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    data: &'a [u8],
}

impl<'a> Wave<'a> {
    /// Walks the RIFF chunks for `fmt ` and `data`; checks that the `data` chunk holds as
    /// many bytes as its header announces.
    fn parse(bytes: &'a [u8]) -> Result<Self, AudioError> {
        let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
        let u32_at = |b: &[u8], i: usize| {
            b.get(i..i + 4)
                .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        };
        if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
            return Err(AudioError::NotWav);
        }
        let mut fmt: Option<(u16, u16, u32, u16, u16)> = None;
        let mut pos = 12;
        while let (Some(id), Some(size)) = (bytes.get(pos..pos + 4), u32_at(bytes, pos + 4)) {
            let body = pos + 8;
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            match id {
                b"fmt " => {
                    let f = bytes
                        .get(body..body.saturating_add(size).min(bytes.len()))
                        .unwrap_or_default();
                    let (Some(tag), Some(ch), Some(rate), Some(align), Some(bits)) = (
                        u16_at(f, 0),
                        u16_at(f, 2),
                        u32_at(f, 4),
                        u16_at(f, 12),
                        u16_at(f, 14),
                    ) else {
                        return Err(AudioError::FmtTooShort);
                    };
                    // WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID.
                    let tag = match (tag, u16_at(f, 24)) {
                        (FORMAT_EXTENSIBLE, Some(sub)) => sub,
                        (t, _) => t,
                    };
                    fmt = Some((tag, ch, rate, align, bits));
                }
                b"data" => {
                    let Some((format, channels, rate, align, bits)) = fmt else {
                        return Err(AudioError::DataBeforeFmt);
                    };
                    let held = bytes.len().saturating_sub(body);
                    if size > held {
                        let per_sec = f64::from(rate) * f64::from(align.max(1));
                        return Err(AudioError::Truncated {
                            announced: size,
                            held,
                            announced_secs: size as f64 / per_sec.max(1.0),
                            held_secs: held as f64 / per_sec.max(1.0),
                        });
                    }
                    return Ok(Wave {
                        format,
                        channels,
                        rate,
                        bits,
                        data: &bytes[body..body + size],
                    });
                }
                _ => {}
            }
            // Chunks are padded to an even length.
            pos = body.saturating_add(size).saturating_add(size & 1);
        }
        Err(match fmt {
            None => AudioError::NoFmt,
            Some(_) => AudioError::NoData,
        })
    }
}

/// G.711 bytes (interleaved) as samples in [-1, 1].
fn g711_samples(data: &[u8], law: Codec) -> Vec<f32> {
    data.iter()
        .map(|&b| f32::from(law.decode(b)) / 32768.0)
        .collect()
}

/// PCM or float samples (interleaved) in [-1, 1], read by hound.
fn hound_samples(bytes: &[u8]) -> Result<Vec<f32>, AudioError> {
    let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes))?;
    let spec = reader.spec();
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader.samples::<f32>().collect::<Result<_, _>>(),
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
        }
        (format, bits) => return Err(AudioError::Unsupported { format, bits }),
    }
    .map_err(AudioError::Decode)
}

/// Resamples mono audio from `rate` to 8 kHz (band-limited: rubato's FFT resampler applies a
/// windowed low-pass below the new Nyquist frequency), compensating the resampler's delay.
fn resample(input: &[f32], rate: u32) -> Result<Vec<f32>, AudioError> {
    if rate == RATE {
        return Ok(input.to_vec());
    }
    const CHUNK: usize = 1024;
    let mut r = FftFixedIn::<f32>::new(rate as usize, RATE as usize, CHUNK, 2, 1)?;
    let delay = r.output_delay();
    let expected = (input.len() as u64 * u64::from(RATE) / u64::from(rate)) as usize;
    let mut out = Vec::with_capacity(expected + delay + CHUNK);
    let mut pos = 0;
    while pos + r.input_frames_next() <= input.len() {
        let n = r.input_frames_next();
        let chunk = r.process(&[&input[pos..pos + n]], None)?;
        out.extend_from_slice(&chunk[0]);
        pos += n;
    }
    // The tail, then zeros to flush the filter's delay.
    let tail = r.process_partial(Some(&[&input[pos..]]), None)?;
    out.extend_from_slice(&tail[0]);
    while out.len() < expected + delay {
        let flush = r.process_partial::<&[f32]>(None, None)?;
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

    /// The detector's echo reference is prepared once per law and shared by every clone of
    /// the message (a campaign's calls), and is the message as decoded in that law.
    #[test]
    fn the_echo_reference_is_prepared_once_and_shared() {
        let m = Message::from_samples(&sine(440.0, 8000, 0.5));
        let a = m.echo_reference(Codec::Pcmu);
        let b = m.clone().echo_reference(Codec::Pcmu);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.len(), m.len());
        let decoded =
            |c: Codec| -> Vec<i16> { m.encoded(c).iter().map(|&x| c.decode(x)).collect() };
        assert_eq!(*a, EchoReference::new(&decoded(Codec::Pcmu)));
        let alaw = m.echo_reference(Codec::Pcma);
        assert!(!Arc::ptr_eq(&a, &alaw));
        assert_eq!(*alaw, EchoReference::new(&decoded(Codec::Pcma)));
    }

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

    /// A WAV file with a G.711 `fmt ` chunk (tag 6 or 7) whose `data` header announces
    /// `announced` bytes.
    fn g711_wav(tag: u16, channels: u16, rate: u32, data: &[u8], announced: usize) -> Vec<u8> {
        let mut w = Vec::new();
        w.extend_from_slice(b"RIFF");
        w.extend_from_slice(&(4 + 26 + 8 + announced as u32).to_le_bytes());
        w.extend_from_slice(b"WAVEfmt ");
        w.extend_from_slice(&18u32.to_le_bytes());
        w.extend_from_slice(&tag.to_le_bytes());
        w.extend_from_slice(&channels.to_le_bytes());
        w.extend_from_slice(&rate.to_le_bytes());
        w.extend_from_slice(&(rate * u32::from(channels)).to_le_bytes());
        w.extend_from_slice(&channels.to_le_bytes()); // block align
        w.extend_from_slice(&8u16.to_le_bytes());
        w.extend_from_slice(&0u16.to_le_bytes()); // cbSize
        w.extend_from_slice(b"data");
        w.extend_from_slice(&(announced as u32).to_le_bytes());
        w.extend_from_slice(data);
        w
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
        // G.711 WAVs, µ-law (tag 7) and A-law (tag 6), mono and stereo, 8 and 16 kHz.
        for (i, (tag, law, ch, rate)) in [
            (FORMAT_MULAW, Codec::Pcmu, 1, 8000),
            (FORMAT_ALAW, Codec::Pcma, 1, 8000),
            (FORMAT_MULAW, Codec::Pcmu, 2, 16_000),
        ]
        .into_iter()
        .enumerate()
        {
            let p = dir.path().join(format!("g711-{i}.wav"));
            let frames = sine(440.0, rate, 0.5);
            let data: Vec<u8> = frames
                .iter()
                .flat_map(|&f| std::iter::repeat_n(law.encode((f * 32767.0) as i16), ch))
                .collect();
            std::fs::write(&p, g711_wav(tag, ch as u16, rate, &data, data.len()))
                .unwrap_or_else(|e| panic!("{e}"));
            let m = Message::load(&p).unwrap_or_else(|e| panic!("g711 {tag} {ch}ch: {e}"));
            assert!(
                (m.len() as i64 - 4000).abs() <= 1,
                "g711 {tag}: {}",
                m.len()
            );
            let decoded: Vec<f32> = m
                .encoded(Codec::Pcmu)
                .iter()
                .map(|&b| f32::from(Codec::Pcmu.decode(b)) / 32768.0)
                .collect();
            assert!(
                (rms(&decoded[500..3500]) - 0.354).abs() < 0.03,
                "g711 {tag} {ch}ch: rms {}",
                rms(&decoded[500..3500])
            );
            // 8 kHz mono µ-law plays byte for byte as it was recorded.
            if rate == RATE && ch == 1 && tag == FORMAT_MULAW {
                assert_eq!(m.encoded(Codec::Pcmu), &data[..]);
            }
        }
        // A truncated copy: the header announces 10 s, the file holds 1 s.
        let p = dir.path().join("truncated.wav");
        std::fs::write(&p, g711_wav(FORMAT_MULAW, 1, 8000, &[0xff; 8000], 80_000))
            .unwrap_or_else(|e| panic!("{e}"));
        match Message::load(&p) {
            Err(Error::Audio {
                source:
                    AudioError::Truncated {
                        announced, held, ..
                    },
                ..
            }) => assert_eq!((announced, held), (80_000, 8000)),
            other => panic!("truncated file loaded: {other:?}"),
        }
        // The same for a PCM file written by hound, cut short.
        let p = dir.path().join("pcm.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        write_wav(&p, spec, &sine(440.0, 8000, 10.0));
        let whole = std::fs::read(&p).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&p, &whole[..44 + 16_000]).unwrap_or_else(|e| panic!("{e}"));
        match Message::load(&p) {
            Err(e @ Error::Audio { .. }) => {
                let why = e.to_string();
                assert!(
                    why.contains("truncated: the header announces 16000")
                        && why.contains("(10.0 s)")
                        && why.contains("(1.0 s)"),
                    "{why}"
                )
            }
            other => panic!("truncated file loaded: {other:?}"),
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
