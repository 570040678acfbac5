//! Plays a labelled corpus (`scripts/amd-corpus`) to the answering-machine detector, sans
//! I/O: each G.711 µ-law file is decoded and fed in 20 ms packets on a simulated clock from
//! the answer, as `uac.rs` feeds it. Prints the confusion matrix, time to verdict, the drop
//! point against the labelled beep (or greeting) end, the CPU per analysed call-second (each
//! file fed until the detector is done, as the UAC feeds it; `AMD_FEED_ALL` feeds it whole),
//! and every misjudged file.
//!
//! `cargo run --release -p crieur-media --example amd_corpus -- DIR [--asterisk N] [--echo E]`
//! (`--asterisk N`: Asterisk's `amd.conf` defaults with `maximum_number_of_words` N instead
//! of crieur's, Asterisk's `MACHINE` on initial silence counted as `machine`; `--echo E`: our
//! message `audio/rappel-fr.wav`, from 300 ms after the answer as the UAC plays it, is the
//! detector's echo reference, and with E a number comes back on the line too — through a
//! short dispersive hybrid response at E dB of echo return loss, 20–250 ms late (varying per
//! file) — before G.711; `--echo none`: the reference only, no echo on the line, as on the
//! whole path with the simulated callee). With `--echo`, the call runs as the UAC runs it in
//! `voicemail-drop` mode: our message stops at the first `machine` verdict (its echo with it,
//! but for what was sent before, which comes back for the path's delay) and the voicemail
//! message `audio/voicemail-fr.wav` starts at each drop point after that, as the reference
//! and (with E) as echo; with `--plays-on` as well, our message plays on whatever the verdict
//! (`detect` mode, and these figures before 2026-12-02's evening). With `AMD_TRACE` set, every misjudged file or
//! missed beep gets a line of the echo canceller's state (the echo's true delay, when and
//! where the path was found, at the labelled end whether the filter subtracts, its ERLE and
//! the residual bound, the beeps voided by voice after them, the best lag every 500 ms);
//! with `AMD_TRACE_FRAMES` also every packet's far-end, residual and echo-estimate levels (use
//! with `--only NAME`).
//! With `AMD_ALL` set, every file is listed, not only those (to diff two builds' verdicts).
//! Files the labels mark a SIT (recipe h: text `SIT …`, noise `sit/…`) count as machines judged
//! right when a SIT is heard (the call hangs up on the announcement); the SITs heard and the
//! voicemail drops into an announcement are counted.

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::path::Path;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crieur_media::amd::{AmdEvent, AmdParams, Detector, DropCause, EchoReference, Features, Kind};
use crieur_media::audio::Message;
use crieur_media::g711::Codec;

#[path = "common/cpu.rs"]
mod cpu;
use cpu::thread_cpu;

struct Result {
    file: String,
    class: String,
    beep: String,
    first: Option<(Kind, &'static str, Duration)>,
    machine_at: Option<(Duration, &'static str)>,
    drop: Option<(Duration, &'static str)>,
    /// A special information tone heard: when (its third tone's end) and its type.
    sit: Option<(Duration, &'static str)>,
    /// The labels say the file starts with a SIT (recipe h's `sit` style: its text starts
    /// `SIT`, its noise column `sit/`).
    sit_file: bool,
    label_end: Duration,
    trace: String,
    /// The first verdict's features (for `AMD_FEATURES`).
    features: Option<Features>,
    /// The file's 10 ms frames' levels, dBFS (for `AMD_FEATURES`).
    levels: Vec<f32>,
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(args.first().ok_or("usage: amd_corpus DIR [--asterisk]")?);
    let asterisk = args
        .iter()
        .position(|a| a == "--asterisk")
        .map(|i| args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(2));
    let params = asterisk.map_or_else(AmdParams::default, AmdParams::asterisk);
    let echo = args
        .iter()
        .position(|a| a == "--echo")
        .and_then(|i| args.get(i + 1))
        .map(|e| e.parse::<f32>().ok());
    let ours_message = match echo {
        Some(_) => Some(Message::load(Path::new("audio/rappel-fr.wav"))?),
        None => None,
    };
    // `voicemail-drop` as the UAC runs it (see the module documentation), unless `--plays-on`.
    let drop_mode = echo.is_some() && !args.iter().any(|a| a == "--plays-on");
    let voicemail_message = match drop_mode {
        true => Some(Message::load(Path::new("audio/voicemail-fr.wav"))?),
        false => None,
    };
    let voicemail: Vec<i16> = voicemail_message.as_ref().map_or_else(Vec::new, |m| {
        m.encoded(Codec::Pcmu)
            .iter()
            .map(|&b| Codec::Pcmu.decode(b))
            .collect()
    });
    let references = |m: &Option<Message>| m.as_ref().map(|m| m.echo_reference(Codec::Pcmu));
    let (message_ref, voicemail_ref) = (references(&ours_message), references(&voicemail_message));
    let ours: Vec<i16> = ours_message.as_ref().map_or_else(Vec::new, |m| {
        m.encoded(Codec::Pcmu)
            .iter()
            .map(|&b| Codec::Pcmu.decode(b))
            .collect()
    });
    let labels = std::fs::read_to_string(dir.join("labels.tsv"))?;
    let mut results = Vec::new();
    let mut audio_s = 0f64;
    // The audio the detector analysed (fed until done): the CPU figure's denominator.
    let mut analysed_s = 0f64;
    let feed_all = std::env::var_os("AMD_FEED_ALL").is_some();
    let mut cpu_s = 0f64;
    let t0 = Instant::now();
    // `--only NAME`: just that file, with the echo delay it has in the whole corpus.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    for (index, line) in labels.lines().skip(1).enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, class, beep, end, ..] = cols[..] else {
            continue;
        };
        let sit_file = cols.get(8).is_some_and(|n| n.starts_with("sit/"))
            || cols.last().is_some_and(|t| t.starts_with("SIT "));
        if only.is_some_and(|o| !file.contains(o.as_str())) {
            continue;
        }
        let msg = Message::load(&dir.join(file))?;
        let mut pcm: Vec<i16> = msg
            .encoded(Codec::Pcmu)
            .iter()
            .map(|&b| Codec::Pcmu.decode(b))
            .collect();
        let echo_delay = 160 + 8 * ((index * 37) % 230);
        let tracing = std::env::var_os("AMD_TRACE").is_some();
        // What the UAC does on the detector's events, and when (far-end sample indices), as
        // the simulation before the timed runs found it.
        let mut simulated = None;
        if let Some(Some(erl)) = echo {
            pcm = if drop_mode {
                let sim = Sim {
                    message: &ours,
                    voicemail: &voicemail,
                    message_ref: message_ref.clone(),
                    voicemail_ref: voicemail_ref.clone(),
                };
                let (line, calls) =
                    sim.line(&pcm, erl, echo_delay, t0, params, feed_all || tracing);
                simulated = Some(calls);
                line
            } else {
                with_echo(&pcm, &ours, erl, echo_delay, LEAD_IN)
            };
        }
        let features = std::env::var_os("AMD_FEATURES").is_some();
        let (mut found_at, mut at_end, mut filtering_frames, mut frames) = (None, None, 0, 0);
        let mut searches = String::new();
        let c0 = thread_cpu();
        let mut d = Detector::new(t0, params);
        let mut r = Result {
            file: file.to_string(),
            class: class.to_string(),
            beep: beep.to_string(),
            first: None,
            machine_at: None,
            drop: None,
            sit: None,
            sit_file,
            label_end: Duration::from_millis(end.parse().unwrap_or(0)),
            trace: String::new(),
            features: None,
            levels: Vec::new(),
        };
        if features {
            r.levels = frame_levels(&pcm);
        }
        // Repeated: the CPU figure over more audio (less spread between runs).
        let repeat: usize = std::env::var("AMD_REPEAT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        for rep in 0..repeat {
            let mut d2 = Detector::new(t0, params);
            let det = if rep == 0 { &mut d } else { &mut d2 };
            // The message prepared once as the reference, shared by every call (as the UAC
            // does).
            if let Some(m) = &message_ref {
                det.set_shared_reference(
                    t0 + Duration::from_micros(LEAD_IN as u64 * 125),
                    m.clone(),
                );
            }
            let mut calls = Calls::default();
            for (i, pkt) in pcm.chunks(160).enumerate() {
                // Fed until nothing more can come of it, as the UAC feeds it (it stops at
                // `is_done`), unless `AMD_FEED_ALL` (the whole file, as before 2026-12-02)
                // or a trace wants the rest.
                if det.is_done() && !feed_all && !tracing {
                    break;
                }
                // By RTP timestamp, as the UAC feeds it (the corpus's lost packets are zeros).
                det.feed_packet(
                    t0 + Duration::from_millis(20 * (i as u64 + 1)),
                    1,
                    (i * 160) as u32,
                    pkt,
                );
                if tracing && rep == 0 {
                    let t = det.echo_trace();
                    let now = Duration::from_millis(20 * (i as u64 + 1));
                    if std::env::var_os("AMD_TRACE_FRAMES").is_some() {
                        println!(
                            "{:.2}s far {:.1} res {:.1} est {:.1} ceiling {:.1} erle {:.1} filtering {} mu-state {:?}",
                            now.as_secs_f32(),
                            t.levels.0,
                            t.levels.1,
                            t.levels.2,
                            t.ceiling_dbfs,
                            t.erle_db,
                            t.filtering,
                            t.delay
                        );
                    }
                    if found_at.is_none() {
                        found_at = t.delay.map(|d| (now, d));
                    }
                    if now <= r.label_end {
                        frames += 1;
                        filtering_frames += usize::from(t.filtering);
                        at_end = Some(t);
                        if i % 25 == 24 {
                            searches.push_str(&format!(
                                " {:.1}s:{}/{:.2}/{:.2}",
                                now.as_secs_f32(),
                                t.best.0,
                                t.best.1,
                                t.best.2
                            ));
                        }
                    }
                }
                while let Some(e) = det.poll_event() {
                    if drop_mode {
                        let now = t0 + Duration::from_millis(20 * (i as u64 + 1));
                        let act = calls.on(&e, (i + 1) * 160);
                        act.apply(det, now, &voicemail_ref);
                    }
                    if rep > 0 {
                        continue;
                    }
                    match e {
                        AmdEvent::Verdict(v) => {
                            if r.first.is_none() {
                                r.first = Some((v.kind, v.cause.as_str(), v.at));
                                r.features = Some(v.features);
                            }
                            // Asterisk's AMD() says MACHINE on initial silence.
                            let machine = v.kind == Kind::Machine
                                || (asterisk.is_some() && v.cause.as_str() == "initial-silence");
                            if machine && r.machine_at.is_none() {
                                r.machine_at = Some((v.at, v.cause.as_str()));
                            }
                        }
                        AmdEvent::Drop(p) => {
                            let at = match p.cause {
                                // Where the detector says the beep ended, and when it knew.
                                DropCause::Beep(_) => p.at,
                                _ => p.at,
                            };
                            r.drop = Some((at, p.cause.as_str()));
                        }
                        AmdEvent::Beep(_) => {}
                        AmdEvent::Sit(s) => {
                            r.sit = Some((s.segments[2].end, s.kind.as_str()));
                        }
                    }
                }
            }
            analysed_s += det.analysed().as_secs_f64();
            // The line was made for the UAC's actions the simulation found: the same
            // detector on the same audio takes them at the same samples.
            if let Some(sim) = &simulated {
                if !sim.agrees(&calls) {
                    return Err(format!(
                        "{file}: the run's actions {calls:?} differ from the simulation's {sim:?}"
                    )
                    .into());
                }
            }
        }
        if tracing {
            let t = d.echo_trace();
            r.trace = format!(
                "echo delay {echo_delay}; found {found_at:?}; at the label end {at_end:?}; filtering {filtering_frames}/{frames} packets; voided beeps {}; last beep kept from overriding (Hz, dB over the floor, spread) {:?}; best lag (delay/rho/other):{searches}",
                t.voided_beeps,
                t.declined_beep
            );
        }
        cpu_s += thread_cpu() - c0;
        audio_s += repeat as f64 * pcm.len() as f64 / 8000.0;
        results.push(r);
    }

    let humans: Vec<&Result> = results.iter().filter(|r| r.class == "human").collect();
    let machines: Vec<&Result> = results.iter().filter(|r| r.class == "machine").collect();
    // A SIT is a machine-side outcome: the call hangs up on the network's announcement (on a
    // person's answer it would cut them off like a machine verdict).
    let is_machine = |r: &&&Result| r.machine_at.is_some() || r.sit.is_some();
    let h_as_m = humans.iter().filter(is_machine).count();
    let m_as_m = machines.iter().filter(is_machine).count();
    let first_kind = |rs: &[&Result], k: Kind| {
        rs.iter()
            .filter(|r| r.first.map(|f| f.0) == Some(k))
            .count()
    };
    println!(
        "corpus {} ({} human, {} machine), params: {}",
        dir.display(),
        humans.len(),
        machines.len(),
        match (asterisk, echo) {
            (Some(n), _) => format!("Asterisk amd.conf defaults, maximum_number_of_words {n}"),
            (None, Some(Some(erl))) => format!(
                "crieur defaults, our message as the echo reference and on the line at {erl} dB of echo return loss, {}",
                if drop_mode { VOICEMAIL_DROP } else { PLAYS_ON }
            ),
            (None, Some(None)) => format!(
                "crieur defaults, our message as the echo reference, no echo on the line, {}",
                if drop_mode { VOICEMAIL_DROP } else { PLAYS_ON }
            ),
            (None, None) => "crieur defaults".to_owned(),
        }
    );
    println!();
    println!("| labelled \\ judged | human / not-sure | machine |");
    println!("|---|---|---|");
    println!(
        "| human ({}) | {} ({:.1} %) | {} ({:.1} %) |",
        humans.len(),
        humans.len() - h_as_m,
        pct(humans.len() - h_as_m, humans.len()),
        h_as_m,
        pct(h_as_m, humans.len())
    );
    println!(
        "| machine ({}) | {} ({:.1} %) | {} ({:.1} %) |",
        machines.len(),
        machines.len() - m_as_m,
        pct(machines.len() - m_as_m, machines.len()),
        m_as_m,
        pct(m_as_m, machines.len())
    );
    println!();
    println!("first verdicts: humans {} human / {} not-sure / {} machine; machines {} human / {} not-sure / {} machine",
        first_kind(&humans, Kind::Human), first_kind(&humans, Kind::NotSure), first_kind(&humans, Kind::Machine),
        first_kind(&machines, Kind::Human), first_kind(&machines, Kind::NotSure), first_kind(&machines, Kind::Machine));
    let mut t_h: Vec<f64> = humans
        .iter()
        .filter_map(|r| r.first.map(|f| f.2.as_secs_f64() * 1000.0))
        .collect();
    let mut t_m: Vec<f64> = machines
        .iter()
        .filter_map(|r| r.machine_at.map(|m| m.0.as_secs_f64() * 1000.0))
        .collect();
    println!(
        "time from answer to first verdict, humans: median {:.0} ms, p95 {:.0} ms",
        quantile(&mut t_h.clone(), 0.5),
        quantile(&mut t_h, 0.95)
    );
    println!(
        "time from answer to machine verdict, machines: median {:.0} ms, p95 {:.0} ms",
        quantile(&mut t_m.clone(), 0.5),
        quantile(&mut t_m, 0.95)
    );
    // Drop point against the label: beep files by the beep's end, others by the greeting's.
    let mut beep_lat = Vec::new();
    let (mut early, mut beep_missed, mut beep_files) = (0, 0, 0);
    let mut nobeep_lat = Vec::new();
    for r in &machines {
        let Some((at, cause)) = r.drop else {
            if r.beep != "none" {
                beep_missed += 1;
                beep_files += 1;
            }
            continue;
        };
        let lat = at.as_secs_f64() * 1000.0 - r.label_end.as_secs_f64() * 1000.0;
        if r.beep != "none" {
            beep_files += 1;
            if cause != "beep" {
                beep_missed += 1;
            }
            if lat < -5.0 {
                early += 1;
            } else if cause == "beep" {
                beep_lat.push(lat);
            }
        } else {
            nobeep_lat.push(lat);
            if lat < -5.0 {
                early += 1;
            }
        }
    }
    println!("beep files {beep_files}: drop on the beep in {} ({} missed or dropped otherwise); drop before the labelled end (too early) in {early} machine files",
        beep_files - beep_missed, beep_missed);
    println!(
        "beep end → drop decided (audio time): median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        quantile(&mut beep_lat.clone(), 0.5),
        quantile(&mut beep_lat.clone(), 0.95),
        quantile(&mut beep_lat, 1.0)
    );
    println!(
        "no beep: greeting end → drop decided: median {:.0} ms, p95 {:.0} ms",
        quantile(&mut nobeep_lat.clone(), 0.5),
        quantile(&mut nobeep_lat, 0.95)
    );
    let sit_files: Vec<&&Result> = machines.iter().filter(|r| r.sit_file).collect();
    let mut kinds: Vec<&str> = sit_files
        .iter()
        .filter_map(|r| r.sit.map(|s| s.1))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    println!(
        "SIT files {}: SIT heard in {} (types {}), voicemail dropped into the announcement in {}; SIT heard in other files: {} ({} human)",
        sit_files.len(),
        sit_files.iter().filter(|r| r.sit.is_some()).count(),
        kinds.join(" "),
        sit_files.iter().filter(|r| r.drop.is_some()).count(),
        results.iter().filter(|r| !r.sit_file && r.sit.is_some()).count(),
        humans.iter().filter(|r| r.sit.is_some()).count()
    );
    println!(
        "CPU: {:.4} ms per analysed call-second ({:.0} s analysed, of {:.0} s of audio{}, in {:.2} s CPU)",
        1000.0 * cpu_s / analysed_s.max(1e-9),
        analysed_s,
        audio_s,
        if feed_all { " all fed" } else { " fed until done" },
        cpu_s
    );
    println!();
    // `AMD_ALL` lists every file (to diff two builds' verdicts file by file).
    let all = std::env::var_os("AMD_ALL").is_some();
    println!("misjudged, dropped early, or dropped late (over 300 ms after the beep):");
    for r in &results {
        let wrong = (r.class == "human") == (r.machine_at.is_some() || r.sit.is_some());
        let early = r.class == "machine"
            && r.drop
                .map(|(at, _)| at + Duration::from_millis(5) < r.label_end)
                .unwrap_or(false);
        let missed_beep =
            r.class == "machine" && r.beep != "none" && r.drop.map(|d| d.1) != Some("beep");
        // A drop on the beep more than the 300 ms target after the labelled beep end.
        let late = r.class == "machine"
            && r.beep != "none"
            && r.drop.is_some_and(|(at, cause)| {
                cause == "beep" && at > r.label_end + Duration::from_millis(300)
            });
        if wrong || early || missed_beep || late || all {
            println!(
                "  {} {} beep={} first={:?} machine={:?} drop={:?} label_end={:?}{}{}{}",
                r.file,
                r.class,
                r.beep,
                r.first,
                r.machine_at,
                r.drop,
                r.label_end,
                match (r.sit_file, r.sit) {
                    (_, Some((at, k))) => format!(" sit={k}@{at:?}"),
                    (true, None) => " SIT-MISSED".to_owned(),
                    (false, None) => String::new(),
                },
                if early {
                    " EARLY"
                } else if late {
                    " LATE"
                } else {
                    ""
                },
                if missed_beep { " BEEP-MISSED" } else { "" }
            );
            if !r.trace.is_empty() {
                println!("    {}", r.trace);
            }
        }
    }
    if std::env::var_os("AMD_FEATURES").is_some() {
        print_features(dir, &results);
    }
    Ok(())
}

/// Each 10 ms frame's level, dBFS (−96 for digital silence).
fn frame_levels(pcm: &[i16]) -> Vec<f32> {
    pcm.chunks(80)
        .map(|c| {
            let e = c.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / c.len() as f64;
            (10.0 * (e / (32768.0 * 32768.0)).max(1e-10).log10()).max(-96.0) as f32
        })
        .collect()
}

/// `AMD_FEATURES`: one line per file whose first verdict is `human` on the silence after
/// the talk (the people, and the machines missed that way), with what the verdict saw —
/// for `scripts/amd-features`, which pools corpora and compares people with missed machines.
/// Columns: corpus, file, class, judged (`machine` when the file ended as one), first
/// verdict's time, initial silence, voice, words, longest word (ms), the talk's span (first
/// word to the verdict's silence, ms), the 10th percentile of the frames' levels within the
/// talk and over the verdict's silence and the 1.5 s after it (dBFS: a played greeting's noise
/// bed stops at its end, a person's room goes on).
fn print_features(dir: &Path, results: &[Result]) {
    let corpus = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let p10 = |v: &[f32]| -> f32 {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(((v.len().saturating_sub(1)) as f64 * 0.1).round() as usize)
            .copied()
            .unwrap_or(f32::NAN)
    };
    for r in results {
        let (Some((Kind::Human, "after-greeting-silence", at)), Some(f)) = (r.first, r.features)
        else {
            continue;
        };
        let at_frame = (at.as_millis() / 10) as usize;
        let talk_end = at_frame.saturating_sub((f.silence_ms / 10) as usize);
        let init = (f.initial_silence_ms / 10) as usize;
        let talk = r
            .levels
            .get(init..talk_end.max(init + 1))
            .unwrap_or_default();
        let after = r
            .levels
            .get(talk_end..(at_frame + 150).min(r.levels.len()))
            .unwrap_or_default();
        let judged = if r.machine_at.is_some() || r.sit.is_some() {
            "machine"
        } else {
            "human"
        };
        println!(
            "feature\t{corpus}\t{}\t{}\t{judged}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.1}\t{:.1}",
            r.file,
            r.class,
            at.as_millis(),
            f.initial_silence_ms,
            f.voice_ms,
            f.words,
            f.longest_word_ms,
            (talk_end - init.min(talk_end)) * 10,
            p10(talk),
            p10(after)
        );
    }
}

/// Our message starts after the UAC's 300 ms lead-in (samples).
const LEAD_IN: usize = 2400;

const VOICEMAIL_DROP: &str =
    "voicemail-drop (our message stops at the machine verdict, the voicemail message plays from each drop point)";
const PLAYS_ON: &str = "our message plays on (detect)";

/// A short dispersive hybrid response (2 ms).
const HYBRID: [f32; 7] = [0.7, -0.45, 0.3, -0.2, 0.12, -0.06, 0.03];

/// The hybrid's gain for `erl_db` of echo return loss.
fn echo_gain(erl_db: f32) -> f32 {
    let norm = HYBRID.iter().map(|h| h * h).sum::<f32>().sqrt();
    10f32.powf(-erl_db / 20.0) / norm
}

/// Far-end sample `n` (`far`) with the echo of what we sent (`sent(m)`: our sample sent at
/// far-end index `m`, `None` for none) through [`HYBRID`] at `gain`, `delay` samples late,
/// then through G.711 µ-law again (the far end encodes what its line carries).
fn echoed(far: i16, n: usize, sent: impl Fn(usize) -> Option<i16>, gain: f32, delay: usize) -> i16 {
    let e: f32 = HYBRID
        .iter()
        .enumerate()
        .filter_map(|(k, h)| Some(h * f32::from(sent(n.checked_sub(delay + k)?)?)))
        .sum();
    let s = (f32::from(far) + gain * e).clamp(-32768.0, 32767.0) as i16;
    Codec::Pcmu.decode(Codec::Pcmu.encode(s))
}

/// The far end's audio with our message's echo added, `ours` from sample `start` on for
/// good (`--plays-on`).
fn with_echo(far: &[i16], ours: &[i16], erl_db: f32, delay: usize, start: usize) -> Vec<i16> {
    let gain = echo_gain(erl_db);
    let sent = |m: usize| ours.get(m.checked_sub(start)?).copied();
    far.iter()
        .enumerate()
        .map(|(n, &v)| echoed(v, n, sent, gain, delay))
        .collect()
}

/// What the UAC does in `voicemail-drop` mode on the detector's events (`call.rs`): our
/// message stops at the first `machine` verdict; the voicemail message starts at a drop point
/// after it, again from its start at a later one. When, in far-end sample indices.
#[derive(Debug, Default, Clone, PartialEq)]
struct Calls {
    stopped: Option<usize>,
    drops: Vec<usize>,
}

/// One of those actions.
enum Act {
    None,
    Stop,
    Voicemail,
}

impl Calls {
    /// The action on event `e`, polled when `at` samples had been fed.
    fn on(&mut self, e: &AmdEvent, at: usize) -> Act {
        match e {
            AmdEvent::Verdict(v) if v.kind == Kind::Machine && self.stopped.is_none() => {
                self.stopped = Some(at);
                Act::Stop
            }
            AmdEvent::Drop(_) if self.stopped.is_some() => {
                self.drops.push(at);
                Act::Voicemail
            }
            _ => Act::None,
        }
    }

    /// Our sample sent at far-end index `m`: the voicemail message from the last drop point
    /// before it, or our message until it stopped.
    fn sent(&self, m: usize, message: &[i16], voicemail: &[i16]) -> Option<i16> {
        if let Some(&d) = self.drops.iter().rev().find(|&&d| d <= m) {
            return voicemail.get(m - d).copied();
        }
        if self.stopped.is_some_and(|s| m >= s) {
            return None;
        }
        message.get(m.checked_sub(LEAD_IN)?).copied()
    }

    /// Whether a timed run took the simulation's actions (as far as it was fed).
    fn agrees(&self, run: &Calls) -> bool {
        self.stopped == run.stopped && self.drops.starts_with(&run.drops)
    }
}

impl Act {
    /// What the UAC does to the detector for it at `now`.
    fn apply(self, det: &mut Detector, now: Instant, voicemail: &Option<Arc<EchoReference>>) {
        match self {
            Act::None => {}
            Act::Stop => det.stop_reference(now),
            Act::Voicemail => {
                if let Some(v) = voicemail {
                    det.set_shared_reference(now, v.clone());
                }
            }
        }
    }
}

/// A call in `voicemail-drop` mode, simulated before the timed runs: the line's audio depends
/// on when our message stops and the voicemail message starts, which depends on the
/// detector's verdicts on that audio.
struct Sim<'a> {
    message: &'a [i16],
    voicemail: &'a [i16],
    message_ref: Option<Arc<EchoReference>>,
    voicemail_ref: Option<Arc<EchoReference>>,
}

impl Sim<'_> {
    /// The far end `far` with the echo of what the call sent, packet by packet as the
    /// detector's events change it, and the actions taken (until the detector is done,
    /// unless `whole`; the rest with the echo of what was sent by then).
    fn line(
        &self,
        far: &[i16],
        erl_db: f32,
        delay: usize,
        t0: Instant,
        params: AmdParams,
        whole: bool,
    ) -> (Vec<i16>, Calls) {
        let gain = echo_gain(erl_db);
        let mut det = Detector::new(t0, params);
        if let Some(m) = &self.message_ref {
            det.set_shared_reference(t0 + Duration::from_micros(LEAD_IN as u64 * 125), m.clone());
        }
        let mut calls = Calls::default();
        let mut line = Vec::with_capacity(far.len());
        let mut done = false;
        for (i, pkt) in far.chunks(160).enumerate() {
            let start = i * 160;
            for (k, &v) in pkt.iter().enumerate() {
                let sent = |m| calls.sent(m, self.message, self.voicemail);
                line.push(echoed(v, start + k, sent, gain, delay));
            }
            done |= det.is_done() && !whole;
            if done {
                continue;
            }
            let now = t0 + Duration::from_millis(20 * (i as u64 + 1));
            det.feed_packet(now, 1, start as u32, &line[start..]);
            while let Some(e) = det.poll_event() {
                calls
                    .on(&e, start + 160)
                    .apply(&mut det, now, &self.voicemail_ref);
            }
        }
        (line, calls)
    }
}
