//! Answering-machine detection over the whole call path: a subset of the labelled corpus
//! (`scripts/amd-corpus`) is played by the simulated callee network as each callee's audio
//! (RTP over loopback, 20 ms packets on the sim's clock) to crieur's UAC placing real SIP
//! calls with `[amd] mode = voicemail-drop`. Prints the confusion matrix, answer → verdict,
//! and the beep's end (as labelled) → the voicemail message's first RTP packet.
//!
//! `cargo run --release -p crieur-sim --example amd_e2e -- DIR [PER_CLASS] [CONCURRENT]`
//! (default 25 human + 25 machine files, 6 calls at once)

#![allow(clippy::disallowed_methods)] // an I/O edge: it reads the clock

use std::sync::Arc;
use std::time::Duration;

use crieur_media::amd::{AmdParams, Kind};
use crieur_media::audio::Message;
use crieur_media::call::{AmdMode, Outcome};
use crieur_media::uac::{AmdRequest, CallRequest, OptOutFuture, Trunk, Uac, DEFAULT_LEAD_IN};
use crieur_sim::{Behaviour, Network, Plan};

struct Row {
    file: String,
    class: String,
    beep: bool,
    label_end: Duration,
}

fn tone(hz: f32, secs: f32) -> Message {
    let s: Vec<f32> = (0..(8000.0 * secs) as usize)
        .map(|n| 0.3 * (2.0 * std::f32::consts::PI * hz * n as f32 / 8000.0).sin())
        .collect();
    Message::from_samples(&s)
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::path::PathBuf::from(
        args.first()
            .ok_or("usage: amd_e2e DIR [PER_CLASS] [CONCURRENT]")?,
    );
    let per_class: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(25);
    let concurrent: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(6);
    let labels = std::fs::read_to_string(dir.join("labels.tsv"))?;
    let mut rows = Vec::new();
    let (mut h, mut m) = (0, 0);
    for line in labels.lines().skip(1) {
        let c: Vec<&str> = line.split('\t').collect();
        let [file, class, beep, end, ..] = c[..] else {
            continue;
        };
        let n = if class == "human" { &mut h } else { &mut m };
        if *n >= per_class {
            continue;
        }
        *n += 1;
        rows.push(Row {
            file: file.into(),
            class: class.into(),
            beep: beep != "none",
            label_end: Duration::from_millis(end.parse().unwrap_or(0)),
        });
    }
    let mut plan = Plan {
        default: Behaviour::Busy,
        numbers: Default::default(),
    };
    for (i, r) in rows.iter().enumerate() {
        plan.numbers.insert(
            format!("+3399{i:06}"),
            Behaviour::Speak {
                after_ms: 0,
                audio: dir.join(&r.file),
            },
        );
    }
    let net = Network::start("127.0.0.1:0".parse()?, plan).await?;
    let uac = Arc::new(Uac::start("127.0.0.1:0".parse()?, "crieur-amd-e2e").await?);
    let trunk = Arc::new(Trunk {
        address: net.addr(),
        domain: None,
        from_user: "+33100000000".into(),
        from_domain: "crieur.test".into(),
        credentials: None,
        ring_timeout: Duration::from_secs(15),
        max_call_length: Duration::from_secs(90),
        symmetric_rtp: false,
        p_asserted_identity: None,
        min_session_expires: std::time::Duration::from_secs(crieur_media::uac::MIN_SESSION_EXPIRES),
        servers: Vec::new(),
    });
    // The project's own message (speech, 14 s): what the detector takes as its echo reference.
    let message = Arc::new(Message::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../audio/rappel-fr.wav"),
    )?);
    let confirmation = Arc::new(tone(660.0, 1.0));
    let voicemail = Arc::new(tone(880.0, 2.0));
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrent));
    let mut set = tokio::task::JoinSet::new();
    for (i, _) in rows.iter().enumerate() {
        let (uac, trunk, sem) = (uac.clone(), trunk.clone(), sem.clone());
        let req = CallRequest {
            number: format!("+3399{i:06}"),
            message: message.clone(),
            confirmation: confirmation.clone(),
            opt_out_key: '9',
            not_interested_key: None,
            keep_received_audio: false,
            stop: None,
            lead_in: DEFAULT_LEAD_IN,
            amd: Some(AmdRequest {
                mode: AmdMode::VoicemailDrop,
                params: AmdParams::default(),
                voicemail: Some(voicemail.clone()),
                voicemail_sha256: None,
            }),
        };
        set.spawn(async move {
            let _permit = sem.acquire().await;
            let r = uac
                .call(&trunk, req, |_, _| -> OptOutFuture {
                    Box::pin(async { Ok(()) })
                })
                .await;
            (i, r)
        });
    }
    let mut confusion = [[0usize; 2]; 2];
    let mut verdict_ms = Vec::new();
    let mut beep_to_vm = Vec::new();
    let mut beep_vm_missing = 0;
    let mut early = 0;
    while let Some(j) = set.join_next().await {
        let (i, r) = j?;
        let row = &rows[i];
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                println!("{}: call failed: {e}", row.file);
                continue;
            }
        };
        let a = r.amd.clone().unwrap_or_default();
        let answered = r.answered_at.unwrap_or_default();
        let machine = a.verdicts.iter().any(|(_, v)| v.kind == Kind::Machine);
        confusion[usize::from(row.class == "machine")][usize::from(machine)] += 1;
        if let Some((at, _)) = a.verdicts.first() {
            verdict_ms.push(at.saturating_sub(answered).as_secs_f64() * 1000.0);
        }
        let wrong = (row.class == "machine") != machine;
        if row.class == "machine" && row.beep {
            match a.voicemail_started_at {
                Some(vm) => {
                    let d = vm.as_secs_f64() - (answered + row.label_end).as_secs_f64();
                    if d < 0.0 {
                        early += 1;
                    }
                    beep_to_vm.push(d * 1000.0);
                }
                None => beep_vm_missing += 1,
            }
        }
        if wrong || (row.class == "human" && r.ending.outcome != Outcome::AnsweredCompleted) {
            println!(
                "{} {}: outcome {} verdicts {:?}",
                row.file,
                row.class,
                r.ending.outcome.as_str(),
                a.verdicts
                    .iter()
                    .map(|(t, v)| (t.saturating_sub(answered), v.kind, v.cause))
                    .collect::<Vec<_>>()
            );
        }
    }
    let pct = |a: usize, b: usize| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    let (hh, hm) = (confusion[0][0], confusion[0][1]);
    let (mh, mm) = (confusion[1][0], confusion[1][1]);
    println!("\n{} calls through SIP + RTP on loopback ({} human, {} machine), voicemail-drop, crieur defaults\n", rows.len(), hh + hm, mh + mm);
    println!("| labelled \\ judged | human / not-sure | machine |\n|---|---|---|");
    println!(
        "| human ({}) | {hh} ({:.1} %) | {hm} ({:.1} %) |",
        hh + hm,
        pct(hh, hh + hm),
        pct(hm, hh + hm)
    );
    println!(
        "| machine ({}) | {mh} ({:.1} %) | {mm} ({:.1} %) |",
        mh + mm,
        pct(mh, mh + mm),
        pct(mm, mh + mm)
    );
    println!(
        "\nanswer → first verdict: median {:.0} ms, p95 {:.0} ms",
        quantile(&mut verdict_ms.clone(), 0.5),
        quantile(&mut verdict_ms, 0.95)
    );
    println!(
        "labelled beep end → voicemail's first RTP packet ({} beep files, {} without a voicemail, {} early): median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        beep_to_vm.len() + beep_vm_missing,
        beep_vm_missing,
        early,
        quantile(&mut beep_to_vm.clone(), 0.5),
        quantile(&mut beep_to_vm.clone(), 0.95),
        quantile(&mut beep_to_vm, 1.0)
    );
    uac.wait_background(crieur_media::uac::EXIT_GRACE).await;
    Ok(())
}
