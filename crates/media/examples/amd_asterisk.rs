//! Asterisk's `AMD()` on a labelled corpus (`scripts/amd-corpus`): **our re-implementation of
//! its documented algorithm, not Asterisk itself** (Asterisk has no Debian package on this
//! host: `apt-cache policy asterisk` gives no candidate). Fed exactly what
//! `examples/amd_corpus.rs` feeds crieur's detector (each file decoded, through G.711 µ-law,
//! in 20 ms packets from the answer), it prints the same confusion table, so the two can be
//! set side by side.
//!
//! `cargo run --release -p crieur-media --example amd_asterisk -- DIR [--words N] [--legacy]`
//!
//! What was followed (read, not copied): the `AMD` application's documentation and the
//! `isAnsweringMachine` loop of Asterisk's `apps/app_amd.c`, its `configs/samples/
//! amd.conf.sample`, and the silence detector it calls (`ast_dsp_silence`, in
//! `main/dsp.c`). Their behaviour, restated:
//!
//! * **Silence detector**: a frame is silent when the mean magnitude of its samples
//!   (Σ|s|/n, integer division) is under `silenceThreshold` (default 256, on a 0–32,767
//!   scale); the detector keeps the running length of consecutive silent frames (ms), reset
//!   to 0 by any frame that is not silent.
//! * **The loop**, per 20 ms voice frame: the total time grows by the frame's length, and at
//!   `totalAnalysisTime` (5,000 ms) the result is `NOTSURE` (`TOOLONG`). Then, on a silent
//!   frame: the silence so far is the detector's running length; once it reaches
//!   `betweenWordsSilence` (50 ms) the state is "in silence" and the current word's length
//!   is reset; if no word has started the greeting yet and the silence reaches
//!   `initialSilence` (2,500 ms), `MACHINE` (`INITIALSILENCE`); if the greeting has started
//!   and the silence reaches `afterGreetingSilence` (800 ms), `HUMAN`. On a frame that is not
//!   silent: the current word's length and the total voice grow by the frame; a word is
//!   counted when the current run reaches `minimumWordLength` (100 ms) *and the state was
//!   "in silence"* (the state starts "in word": a person who speaks from the very first frame
//!   has that first word uncounted); a run reaching `maximumWordLength` (5,000 ms) is
//!   `MACHINE` (`MAXWORDLENGTH`); too many words are `MACHINE` (`MAXWORDS`); once the
//!   greeting has started, total voice reaching `greeting` (1,500 ms) is `MACHINE`
//!   (`LONGGREETING`); total voice reaching `minimumWordLength` resets the silence; the first
//!   run reaching `minimumWordLength` starts the greeting (and ends the initial silence).
//! * **Too many words**: the current `app_amd.c` tests `words > maximumNumberOfWords` with a
//!   compiled-in default of 2 — `MACHINE` on the third word (the default here). An older
//!   version (the one indexed with `ASTERISK_REGISTER_FILE`) tested `words >=
//!   maximumNumberOfWords` with a compiled-in 3 — also the third word — while the sample
//!   `amd.conf` it shipped set 2, so an installation using that file said `MACHINE` on the
//!   second word (`--legacy`, with `--words 2`).
//! * Not modelled: wall-clock timeouts and `CNG`/`NULL` frames (a corpus file is a
//!   continuous voice stream), `HANGUP`. `AMD()` detects no beep: a dialplan waits for the
//!   end of the greeting itself (e.g. `WaitForSilence`), so there is no drop point to time.

use std::path::Path;

use crieur_media::audio::Message;
use crieur_media::g711::Codec;

/// Samples per frame: Asterisk reads 20 ms voice frames from an 8 kHz channel.
const FRAME: usize = 160;

/// `AMD()`'s parameters (names as in `amd.conf`; defaults as compiled in and in the sample).
#[derive(Clone, Copy, Debug)]
struct Params {
    initial_silence: u32,
    greeting: u32,
    after_greeting_silence: u32,
    total_analysis_time: u32,
    min_word_length: u32,
    between_words_silence: u32,
    maximum_number_of_words: u32,
    silence_threshold: u32,
    maximum_word_length: u32,
    /// `words >= maximumNumberOfWords` (older `app_amd.c`) instead of `>`.
    legacy_word_test: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            initial_silence: 2500,
            greeting: 1500,
            after_greeting_silence: 800,
            total_analysis_time: 5000,
            min_word_length: 100,
            between_words_silence: 50,
            maximum_number_of_words: 2,
            silence_threshold: 256,
            maximum_word_length: 5000,
            legacy_word_test: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Machine,
    Human,
    NotSure,
}

/// `AMDCAUSE`'s first word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    TooLong,
    InitialSilence,
    Human,
    LongGreeting,
    MaxWordLength,
    MaxWords,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::TooLong => "TOOLONG",
            Cause::InitialSilence => "INITIALSILENCE",
            Cause::Human => "HUMAN",
            Cause::LongGreeting => "LONGGREETING",
            Cause::MaxWordLength => "MAXWORDLENGTH",
            Cause::MaxWords => "MAXWORDS",
        }
    }
}

/// The `AMD()` state for one call.
struct Amd {
    p: Params,
    /// The silence detector's running length of silent frames, ms.
    dsp_silence: u32,
    in_initial_silence: bool,
    in_greeting: bool,
    in_word: bool,
    voice: u32,
    silence: u32,
    total: u32,
    words: u32,
    consecutive_voice: u32,
}

impl Amd {
    fn new(p: Params) -> Self {
        Amd {
            p,
            dsp_silence: 0,
            in_initial_silence: true,
            in_greeting: false,
            // `currentState` starts as "in word".
            in_word: true,
            voice: 0,
            silence: 0,
            total: 0,
            words: 0,
            consecutive_voice: 0,
        }
    }

    /// One 20 ms frame; the verdict when this frame decides.
    fn frame(&mut self, s: &[i16]) -> Option<(Status, Cause)> {
        let p = self.p;
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        let ms = len / 8;
        self.total += ms;
        if self.total >= p.total_analysis_time {
            return Some((Status::NotSure, Cause::TooLong));
        }
        // The silence detector: mean magnitude under the threshold.
        let mean = s.iter().map(|&v| u32::from(v.unsigned_abs())).sum::<u32>() / len.max(1);
        if mean < p.silence_threshold {
            self.dsp_silence += ms;
        } else {
            self.dsp_silence = 0;
        }
        if self.dsp_silence > 0 {
            self.silence = self.dsp_silence;
            if self.silence >= p.between_words_silence {
                self.in_word = false;
                self.consecutive_voice = 0;
            }
            if self.in_initial_silence && self.silence >= p.initial_silence {
                return Some((Status::Machine, Cause::InitialSilence));
            }
            if self.in_greeting && self.silence >= p.after_greeting_silence {
                return Some((Status::Human, Cause::Human));
            }
            return None;
        }
        self.consecutive_voice += ms;
        self.voice += ms;
        if self.consecutive_voice >= p.min_word_length && !self.in_word {
            self.words += 1;
            self.in_word = true;
        }
        if self.consecutive_voice >= p.maximum_word_length {
            return Some((Status::Machine, Cause::MaxWordLength));
        }
        let too_many = if p.legacy_word_test {
            self.words >= p.maximum_number_of_words
        } else {
            self.words > p.maximum_number_of_words
        };
        if too_many {
            return Some((Status::Machine, Cause::MaxWords));
        }
        if self.in_greeting && self.voice >= p.greeting {
            return Some((Status::Machine, Cause::LongGreeting));
        }
        if self.voice >= p.min_word_length {
            self.silence = 0;
        }
        if self.consecutive_voice >= p.min_word_length && !self.in_greeting {
            self.in_initial_silence = false;
            self.in_greeting = true;
        }
        None
    }
}

/// A file's verdict: status, cause and the audio time it was reached at (ms). A file that
/// ends first is `NOTSURE` (`TOOLONG`) at its end, as a stream that stops sending would be.
fn judge(p: Params, pcm: &[i16]) -> (Status, Cause, u32) {
    let mut amd = Amd::new(p);
    for frame in pcm.chunks(FRAME) {
        if let Some((s, c)) = amd.frame(frame) {
            return (s, c, amd.total);
        }
    }
    (Status::NotSure, Cause::TooLong, amd.total)
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

fn median(mut v: Vec<u32>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    f64::from(v[(v.len() - 1) / 2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(
        args.first()
            .ok_or("usage: amd_asterisk DIR [--words N] [--legacy]")?,
    );
    let mut p = Params {
        legacy_word_test: args.iter().any(|a| a == "--legacy"),
        ..Params::default()
    };
    if let Some(n) = args
        .iter()
        .position(|a| a == "--words")
        .and_then(|i| args.get(i + 1))
    {
        p.maximum_number_of_words = n.parse()?;
    }
    let labels = std::fs::read_to_string(dir.join("labels.tsv"))?;
    // (class, file, status, cause, at)
    let mut results = Vec::new();
    for line in labels.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, class, ..] = cols[..] else {
            continue;
        };
        // Decoded and through µ-law, exactly as `amd_corpus` feeds crieur's detector.
        let msg = Message::load(&dir.join(file))?;
        let pcm: Vec<i16> = msg
            .encoded(Codec::Pcmu)
            .iter()
            .map(|&b| Codec::Pcmu.decode(b))
            .collect();
        let (status, cause, at) = judge(p, &pcm);
        results.push((class.to_owned(), file.to_owned(), status, cause, at));
    }
    let of = |class: &str| -> Vec<&(String, String, Status, Cause, u32)> {
        results.iter().filter(|r| r.0 == class).collect()
    };
    let (humans, machines) = (of("human"), of("machine"));
    let count = |rs: &[&(String, String, Status, Cause, u32)], s: Status| {
        rs.iter().filter(|r| r.2 == s).count()
    };
    let (h_m, m_m) = (
        count(&humans, Status::Machine),
        count(&machines, Status::Machine),
    );
    println!(
        "corpus {} ({} human, {} machine), Asterisk AMD() re-implemented: initialSilence {} \
         greeting {} afterGreetingSilence {} totalAnalysisTime {} minimumWordLength {} \
         betweenWordsSilence {} maximumNumberOfWords {} ({}) silenceThreshold {} \
         maximumWordLength {}",
        dir.display(),
        humans.len(),
        machines.len(),
        p.initial_silence,
        p.greeting,
        p.after_greeting_silence,
        p.total_analysis_time,
        p.min_word_length,
        p.between_words_silence,
        p.maximum_number_of_words,
        if p.legacy_word_test {
            "MACHINE at that many words: older app_amd.c"
        } else {
            "MACHINE at more words: current app_amd.c"
        },
        p.silence_threshold,
        p.maximum_word_length
    );
    println!();
    println!("| labelled \\ judged | human / not-sure | machine |");
    println!("|---|---|---|");
    for (name, rs, m) in [("human", &humans, h_m), ("machine", &machines, m_m)] {
        println!(
            "| {name} ({}) | {} ({:.1} %) | {} ({:.1} %) |",
            rs.len(),
            rs.len() - m,
            pct(rs.len() - m, rs.len()),
            m,
            pct(m, rs.len())
        );
    }
    println!();
    for (name, rs) in [("humans", &humans), ("machines", &machines)] {
        let causes = [
            Cause::Human,
            Cause::TooLong,
            Cause::InitialSilence,
            Cause::LongGreeting,
            Cause::MaxWords,
            Cause::MaxWordLength,
        ]
        .iter()
        .map(|&c| {
            let n = rs.iter().filter(|r| r.3 == c).count();
            format!("{} {n}", c.as_str())
        })
        .collect::<Vec<_>>()
        .join(", ");
        println!(
            "{name}: HUMAN {} / NOTSURE {} / MACHINE {} (causes: {causes})",
            count(rs, Status::Human),
            count(rs, Status::NotSure),
            count(rs, Status::Machine)
        );
    }
    let at = |rs: &[&(String, String, Status, Cause, u32)], s: Option<Status>| {
        rs.iter()
            .filter(|r| s.is_none_or(|s| r.2 == s))
            .map(|r| r.4)
            .collect::<Vec<_>>()
    };
    println!(
        "time from answer to verdict, humans: median {:.0} ms; to MACHINE, machines: median {:.0} ms",
        median(at(&humans, None)),
        median(at(&machines, Some(Status::Machine)))
    );
    println!();
    println!("misjudged:");
    for r in &results {
        if (r.0 == "human") == (r.2 == Status::Machine) {
            println!("  {} {} {:?} {} at {} ms", r.1, r.0, r.2, r.3.as_str(), r.4);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u32, amp: f64) -> Vec<i16> {
        (0..ms * 8)
            .map(|n| (amp * (f64::from(n) * 0.3).sin()) as i16)
            .collect()
    }

    fn quiet(ms: u32) -> Vec<i16> {
        vec![0; (ms * 8) as usize]
    }

    #[test]
    fn one_word_then_silence_is_human_and_a_long_greeting_a_machine() {
        // 100 ms of silence first, so the word is counted (the state starts "in word").
        let hello = [quiet(100), tone(400, 3000.0), quiet(1000)].concat();
        let (s, c, at) = judge(Params::default(), &hello);
        assert_eq!((s, c), (Status::Human, Cause::Human));
        assert_eq!(at, 100 + 400 + 800);
        let word = [quiet(100), tone(300, 3000.0), quiet(100)].concat();
        let greeting = word.repeat(4);
        let (s, c, _) = judge(Params::default(), &greeting);
        // The third word is one too many (current rule, maximum 2).
        assert_eq!((s, c), (Status::Machine, Cause::MaxWords));
        let legacy = Params {
            legacy_word_test: true,
            ..Params::default()
        };
        let (s, c, at) = judge(legacy, &greeting);
        assert_eq!((s, c), (Status::Machine, Cause::MaxWords));
        // the second word's 100th ms: 100 + 300 + 100 + 100 + 100
        assert_eq!(at, 700);
    }

    #[test]
    fn quiet_speech_is_silence_and_the_initial_silence_a_machine() {
        // Mean magnitude ~ 0.64 × 300 = 191 < 256: silence to AMD().
        let (s, c, at) = judge(Params::default(), &tone(4000, 300.0));
        assert_eq!((s, c, at), (Status::Machine, Cause::InitialSilence, 2500));
    }
}
