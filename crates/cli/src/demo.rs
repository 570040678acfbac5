//! `crieur demo`: a built-in campaign of 100 contacts in five time zones, whose consent
//! windows are open now, dialled live on loopback against the simulated callee network
//! (`crieur-sim`), then the audit log verified and replayed. Needs nothing but this binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::Timelike;
use crieur_sim::{Behaviour, KeyMethod, Network, Plan};

// The demo's recordings travel inside the binary (made by scripts/gen-audio with espeak-ng).
const MESSAGE: &[u8] = include_bytes!("../../../audio/rappel-fr.wav");
const MESSAGE_TXT: &str = include_str!("../../../audio/rappel-fr.txt");
const CONFIRM: &[u8] = include_bytes!("../../../audio/optout-fr.wav");
const CONFIRM_TXT: &str = include_str!("../../../audio/optout-fr.txt");
// The voicemail message crieur leaves, and the greeting the simulated voicemails play.
const VOICEMAIL: &[u8] = include_bytes!("../../../audio/voicemail-fr.wav");
const VOICEMAIL_TXT: &str = include_str!("../../../audio/voicemail-fr.txt");
const GREETING: &[u8] = include_bytes!("../../../audio/greeting-fr.wav");

const ZONES: [&str; 5] = [
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "Indian/Reunion",
    "America/Guadeloupe",
];

/// What callee `i` does: mostly answer and listen; a few of everything else, voicemails
/// (greeting in `dir`) with and without a beep among them.
fn behaviour(i: usize, dir: &Path) -> Behaviour {
    match i % 20 {
        9 | 10 => Behaviour::Voicemail {
            after_ms: 1500,
            greeting: dir.join("greeting-fr.wav"),
            beep_hz: if i % 20 == 9 { 1000.0 } else { 0.0 },
            beep_ms: 500,
        },
        3 => Behaviour::Busy,
        4 => Behaviour::NoAnswer,
        5 => Behaviour::PressKey {
            after_ms: 1000,
            key: '9',
            key_after_ms: 3000,
            method: KeyMethod::Rfc4733,
        },
        6 => Behaviour::PressKey {
            after_ms: 1500,
            key: '9',
            key_after_ms: 2500,
            method: KeyMethod::SipInfo,
        },
        7 => Behaviour::HangUp {
            after_ms: 1000,
            hangup_after_ms: 4000,
        },
        8 => Behaviour::Reject { code: 503 },
        k => Behaviour::Answer {
            after_ms: 500 + 150 * k as u64,
        },
    }
}

fn number(i: usize) -> String {
    format!("+3361{i:07}")
}

/// A daily window from an hour ago to two hours ahead, in `zone`'s wall-clock time.
fn window_open_now(zone: chrono_tz::Tz) -> String {
    let h = crate::audit::now().with_timezone(&zone).hour();
    let from = (h + 23) % 24;
    let to = (h + 2) % 24;
    let to = if to == 0 {
        "24:00".to_owned()
    } else {
        format!("{to:02}:00")
    };
    format!("daily {from:02}:00-{to}")
}

pub fn run(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!(
            "crieur-demo-{}",
            crate::audit::now().format("%Y%m%dT%H%M%S")
        )),
    };
    if dir.join("store").exists() {
        anyhow::bail!(
            "{} already holds a demo; give another --dir or remove it",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let w = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes).with_context(|| format!("writing {name}"))
    };
    w("rappel-fr.wav", MESSAGE)?;
    w("rappel-fr.txt", MESSAGE_TXT.as_bytes())?;
    w("optout-fr.wav", CONFIRM)?;
    w("optout-fr.txt", CONFIRM_TXT.as_bytes())?;
    w("voicemail-fr.wav", VOICEMAIL)?;
    w("voicemail-fr.txt", VOICEMAIL_TXT.as_bytes())?;
    w("greeting-fr.wav", GREETING)?;
    println!("demo      in {}", dir.display());

    // The simulated network runs on its own runtime (threads), beside the campaign's.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut plan = Plan {
        default: Behaviour::Answer { after_ms: 1000 },
        numbers: Default::default(),
    };
    for i in 0..100 {
        plan.numbers.insert(number(i), behaviour(i, &dir));
    }
    let network = sim_rt.block_on(Network::start("127.0.0.1:0".parse()?, plan))?;
    println!(
        "network   simulated callees on {} (most answer; some are busy, do not answer, reject, \
         hang up, press 9 to opt out by RFC 4733 or SIP INFO, or are voicemails: crieur \
         leaves its voicemail message after the beep)",
        network.addr()
    );

    // The signing key as `crieur audit keygen` makes it: the secret mode 0600, the public
    // key next to it.
    let (public, _) = crate::audit::keygen(&dir.join("audit.key"))?;
    let campaign = format!(
        "# The demo campaign: rule set `none` so that it runs at any hour (FR or US would wait\n\
         # for legal calling hours); every contact's own consent window is open now.\n\
         id = \"demo\"\nname = \"crieur demo\"\nruleset = \"none\"\nzone = \"Europe/Paris\"\nring_timeout_secs = 15\n\
         message = \"rappel-fr.wav\"\nconfirmation = \"optout-fr.wav\"\nopt_out_key = \"9\"\n\
         [pacing]\ncalls_per_second = 10\nmax_concurrent_calls = 40\n\
         [retry]\nmax_attempts = 2\n[retry.busy]\ndelay_secs = 10\nmax_retries = 1\n\
         [retry.no-answer]\ndelay_secs = 10\nmax_retries = 0\n[retry.failed]\ndelay_secs = 10\nmax_retries = 0\n\
         [retry.machine]\ndelay_secs = 10\nmax_retries = 0\n\
         [amd]\nmode = \"voicemail-drop\"\nvoicemail_message = \"voicemail-fr.wav\"\n\
         [audit]\nsigning_key_file = \"audit.key\"\n\
         [trunk]\nuri = \"sip:{}\"\nfrom = \"sip:+33100000000@crieur.demo\"\nmax_call_secs = 60\n",
        network.addr()
    );
    std::fs::write(dir.join("campaign.toml"), campaign)?;
    let mut csv =
        String::from("id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n");
    for i in 0..100 {
        let zone = ZONES[i % ZONES.len()];
        let tz = crieur_scheduler::parse_zone(zone)?;
        let _ = writeln!(
            csv,
            "demo-{i:03},{},{zone},{},2026-01-01T00:00:00Z,,,demo form,demo-proof-{i:03}",
            number(i),
            window_open_now(tz)
        );
    }
    std::fs::write(dir.join("contacts.csv"), csv)?;

    let campaign_path = dir.join("campaign.toml");
    let store = dir.join("store");
    let actx = crate::audit::Ctx::default();
    crate::storecmd::import(
        &campaign_path,
        &dir.join("contacts.csv"),
        &Default::default(),
        &store,
        false,
        &dir.join("rejects.csv"),
        &actx,
    )?;
    let c = crate::campaign::load(&campaign_path)?;
    crate::run::run(
        &c,
        &campaign_path,
        &store,
        &actx,
        crieur_runner::RunOptions {
            drain: Duration::from_secs(30),
            until: None,
            max_idle: Some(Duration::from_secs(60)),
            scope: crieur_runner::Scope::Campaign,
            node_timeout: crieur_runner::NODE_TIMEOUT,
        },
    )?;
    drop(network);
    drop(sim_rt);

    let audit = crate::audit::dir_for(&store, None);
    let verified = crieur_audit::verify(
        &audit,
        &crieur_audit::VerifyOptions {
            public_key: Some(public),
            anchor: None,
        },
    )?;
    match &verified.first_break {
        None => println!(
            "verify    OK: {} records, {} signed checkpoints, chain intact",
            verified.records, verified.checkpoints
        ),
        Some(b) => println!("verify    BROKEN: {b}"),
    }
    let replay = crieur_audit::replay(&audit)?;
    println!(
        "replay    {} decisions re-derived ({} dial, {} skip): {} violations",
        replay.decisions,
        replay.dials,
        replay.skips,
        replay.violations.len()
    );
    for v in &replay.violations {
        println!(
            "  {} {} {}",
            v.kind,
            v.contact.as_deref().unwrap_or("-"),
            v.detail
        );
    }
    let shown = |p: &Path| p.display().to_string();
    println!("store     {}", shown(&store));
    println!("audit log {}", shown(&audit));
    println!(
        "keys      {} (secret, 0600), {} (public: audit verify --pubkey)",
        shown(&dir.join("audit.key")),
        shown(&dir.join("audit.pub"))
    );
    println!(
        "next      crieur audit report {} --html report.html   (a page for a reviewer)",
        shown(&audit)
    );
    Ok(
        if verified.first_break.is_none() && replay.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(crate::audit::EXIT_FINDINGS)
        },
    )
}
