//! `crieur demo`: a built-in campaign of 100 contacts in five time zones, whose consent
//! windows are open now, dialled live on loopback against the simulated callee network
//! (`crieur-sim`), then the audit log verified and replayed. Needs nothing but this binary.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use crieur_sim::{demo, Network};

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
    demo::write_recordings(&dir).with_context(|| format!("writing into {}", dir.display()))?;
    println!("demo      in {}", dir.display());

    // The simulated network runs on its own runtime (threads), beside the campaign's.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let network = sim_rt.block_on(Network::start("127.0.0.1:0".parse()?, demo::plan(&dir)))?;
    println!(
        "network   simulated callees on {} (most answer; some are busy, do not answer, reject, \
         hang up, press 9 to opt out by RFC 4733 or SIP INFO, or are voicemails: crieur \
         leaves its voicemail message after the beep)",
        network.addr()
    );

    // The signing key as `crieur audit keygen` makes it: the secret mode 0600, the public
    // key next to it.
    let (public, _) = crate::audit::keygen(&dir.join("audit.key"))?;
    std::fs::write(
        dir.join("campaign.toml"),
        demo::campaign_toml(network.addr()),
    )?;
    std::fs::write(
        dir.join("contacts.csv"),
        demo::contacts_csv(crate::audit::now()),
    )?;

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
        &crate::run::ControlArgs::default(),
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
