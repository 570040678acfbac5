//! `crieur call`: one call placed the way a campaign places it — the policy decides first.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use crieur_media::audio::Message;
use crieur_media::call::Outcome;
use crieur_media::uac::{CallRequest, Credentials, OptOutFuture, Trunk, Uac};
use crieur_scheduler::{Decision, Evaluator};
use crieur_store::{SledStore, Store};

use crate::campaign::Campaign;
use crate::input::{InputError, InputErrors};

/// Exit code when the policy refuses the call (a `Skip`, or an opted-out number).
pub const EXIT_REFUSED: u8 = 3;
/// Exit code when the call was placed but not answered (busy, no answer, failure …).
pub const EXIT_NOT_ANSWERED: u8 = 4;
/// Exit code when the opt-out key was pressed but could not be recorded during the call.
pub const EXIT_OPT_OUT_FAILED: u8 = 5;

/// The local address that routes to `trunk` (so Via/Contact/SDP carry a reachable address).
fn local_ip_towards(trunk: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let s = UdpSocket::bind(if trunk.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    s.connect(trunk)?;
    Ok(s.local_addr()?.ip())
}

pub fn run(
    campaign: &Campaign,
    contact_id: &str,
    now: DateTime<Utc>,
    store_path: &Path,
) -> anyhow::Result<ExitCode> {
    // An existing store only: a mistyped path must not silently mean "no opt-outs".
    let store = Arc::new(SledStore::open(store_path, false)?);
    let id = crieur_scheduler::ContactId::new(contact_id)
        .map_err(|e| InputErrors(vec![InputError::new(Path::new("--contact"), e.to_string())]))?;
    let Some(contact) = store.contact(&campaign.name, &id)? else {
        return Err(InputErrors(vec![InputError::new(
            store_path,
            format!(
                "no contact `{contact_id}` in campaign `{}` of this store: import it with `crieur import`",
                campaign.name
            ),
        )
        .field("--contact")])
        .into());
    };
    let contact = &contact;
    println!("call      {} {}", contact.id(), contact.phone());
    let number = contact.phone().to_string();
    // A crash left calls leased: close them as interrupted attempts (they count toward caps).
    for (c, id) in store.recover_interrupted(now)? {
        println!("recovered an interrupted call to {c}/{id} (counted as an attempt)");
    }
    if store.is_opted_out(contact.phone())? {
        println!("refused   {number} is on the opt-out list");
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    if let Some(why) = cap_reached(campaign, contact, &*store, now)? {
        println!("refused   {why}");
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    match Evaluator::new(&campaign.policy).decide(contact, now) {
        Decision::Skip(s) => {
            println!("refused   the policy says SKIP at {}:", now.to_rfc3339());
            for r in &s.reasons {
                println!("  reason  {}", crate::reason_line(r));
            }
            if let Some(n) = s.next_eligible {
                println!("  next    {}", n.to_rfc3339());
            }
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        Decision::Dial(d) => println!(
            "policy    DIAL under consent #{} ({} {}), until {}",
            d.consent,
            d.ruleset.name,
            d.ruleset.version,
            d.valid_until.to_rfc3339()
        ),
    }
    let cfg_err = |field: &str, msg: &str| -> anyhow::Error {
        InputErrors(vec![
            InputError::new(Path::new("campaign"), msg.to_owned()).field(field)
        ])
        .into()
    };
    let Some(t) = &campaign.trunk else {
        return Err(cfg_err(
            "trunk",
            "a [trunk] section is needed to place calls",
        ));
    };
    let Some(confirmation) = &campaign.confirmation else {
        return Err(cfg_err(
            "confirmation",
            "an opt-out confirmation recording is needed to place calls",
        ));
    };
    let address = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving the trunk {}", t.uri))?
        .next()
        .ok_or_else(|| anyhow!("the trunk {} resolves to no address", t.uri))?;
    let password = t
        .read_password()
        .map_err(|e| cfg_err("trunk.password", &e))?;
    let trunk = Trunk {
        address,
        domain: Some(format!("{}:{}", t.host, t.port)),
        from_user: t.from_user.clone(),
        from_domain: t.from_domain.clone(),
        credentials: match (&t.username, password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: p,
            }),
            _ => None,
        },
        ring_timeout: campaign.ring_timeout,
        max_call_length: t.max_call_length,
    };
    let message = Arc::new(Message::load(&campaign.message)?);
    let confirmation = Arc::new(Message::load(confirmation)?);
    let local = SocketAddr::new(local_ip_towards(address)?, 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let phone = contact.phone().clone();
    let hook_store = store.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    // Re-check just before the INVITE (setting up took time): the decision must still hold.
    #[allow(clippy::disallowed_methods)]
    let now = Utc::now();
    if let Decision::Skip(s) = Evaluator::new(&campaign.policy).decide(contact, now) {
        println!(
            "refused   the policy says SKIP at the INVITE ({}):",
            now.to_rfc3339()
        );
        for r in &s.reasons {
            println!("  reason  {}", crate::reason_line(r));
        }
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    // Leased (durably) before the INVITE: after a crash from here on, the call counts.
    let id = contact.id().clone();
    store.lease(&campaign.name, &id, contact.phone(), now)?;
    test_pause("after-lease");
    let result = rt.block_on(async {
        let uac = Uac::start(local, concat!("crieur/", env!("CARGO_PKG_VERSION"))).await?;
        let req = CallRequest {
            number: number.clone(),
            message,
            confirmation,
            opt_out_key: campaign.opt_out_key,
            not_interested_key: campaign.not_interested_key,
            keep_received_audio: false,
            stop: Some(stop.clone()),
        };
        // Ctrl-C / SIGTERM end the call cleanly (an opt-out in progress is recorded first);
        // a second Ctrl-C exits at once.
        let on_signal = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping the call (Ctrl-C again to quit at once)");
                on_signal.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });

        uac.call(&trunk, req, move |digit, method| -> OptOutFuture {
            Box::pin(async move {
                let how = format!("key {digit} by {}", method.as_str());
                // Clock read at the edge: the opt-out's own timestamp.
                #[allow(clippy::disallowed_methods)]
                let at = Utc::now();
                // Durable (flushed to disk) when add_opt_out returns.
                tokio::task::spawn_blocking(move || {
                    let r = hook_store.add_opt_out(&phone, at, &how).map(|_| ());
                    test_pause("after-opt-out");
                    r
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
            })
        })
        .await
        .map_err(anyhow::Error::from)
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            // The call may or may not have left: close the lease as an attempt, then fail.
            #[allow(clippy::disallowed_methods)]
            let at = Utc::now();
            let _ = store.finish_attempt(&campaign.name, &id, contact.phone(), "local-error", at);
            return Err(e);
        }
    };
    test_pause("after-call");
    // The binary reads the clock: when the call ended.
    #[allow(clippy::disallowed_methods)]
    let ended = Utc::now();
    store.finish_attempt(
        &campaign.name,
        &id,
        contact.phone(),
        report.ending.outcome.as_str(),
        ended,
    )?;
    for (at, what) in &report.timeline {
        println!("{:>9.3}s {what}", at.as_secs_f64());
    }
    println!(
        "codec     {}",
        report.codec.map_or("-".to_owned(), |c| c.name().to_owned())
    );
    println!(
        "audio     answer → first audio {}; {} RTP packets sent",
        report
            .answer_to_first_audio
            .map_or("-".to_owned(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1000.0
            )),
        report.rtp_sent
    );
    let keys: Vec<String> = report
        .keys
        .iter()
        .map(|(d, m, at)| format!("{d} by {} at {:.3}s", m.as_str(), at.as_secs_f64()))
        .collect();
    println!(
        "keys      {}",
        if keys.is_empty() {
            "none".to_owned()
        } else {
            keys.join(", ")
        }
    );
    println!(
        "opt-out   {}",
        if report.opt_out_recorded {
            "recorded"
        } else {
            "not recorded"
        }
    );
    let e = &report.ending;
    println!(
        "outcome   {} (SIP {}, {})",
        e.outcome.as_str(),
        e.sip_status.map_or("-".to_owned(), |s| s.to_string()),
        e.reason
    );
    if e.outcome == Outcome::OptOutFailed {
        // The person asked to opt out: keep trying to record it, and say so loudly.
        let mut recorded = false;
        for _ in 0..3 {
            #[allow(clippy::disallowed_methods)]
            let at = Utc::now();
            if store
                .add_opt_out(contact.phone(), at, "opt-out key; recorded after the call")
                .is_ok()
            {
                recorded = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        eprintln!(
            "ALERT: {number} pressed the opt-out key but it could not be recorded during the call; {}",
            if recorded { "it is now recorded" } else { "it is STILL NOT recorded: add it with `crieur optout add`" }
        );
        return Ok(ExitCode::from(EXIT_OPT_OUT_FAILED));
    }
    Ok(match e.outcome {
        Outcome::AnsweredCompleted | Outcome::AnsweredOptedOut | Outcome::AnsweredNotInterested => {
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(EXIT_NOT_ANSWERED),
    })
}

/// The caps a call must respect, from the attempts the store recorded for this number across
/// campaigns: the campaign's attempt cap, the rule set's rolling cap, the quiet period after a
/// refusal. `Some(reason)` if one is reached.
fn cap_reached(
    campaign: &Campaign,
    contact: &crieur_scheduler::Contact,
    store: &dyn Store,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<String>> {
    let caps = &campaign.caps;
    let attempts: Vec<crieur_engine::Attempt> = store
        .attempts(contact.phone())?
        .iter()
        .map(|a| crieur_engine::Attempt {
            at: a.started,
            outcome: crieur_engine::AttemptOutcome::from_record(&a.outcome),
            this_campaign: a.campaign == campaign.name,
        })
        .collect();
    Ok(caps.check(&attempts, now).map(|hit| hit.to_string()))
}

/// Test hook: with `CRIEUR_TEST_PAUSE_AT=<point>`, stop at that point for 30 s so the crash
/// tests can SIGKILL the process exactly there. Pausing weakens nothing.
fn test_pause(point: &str) {
    if std::env::var("CRIEUR_TEST_PAUSE_AT").is_ok_and(|p| p == point) {
        println!("paused    at {point}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::thread::sleep(std::time::Duration::from_secs(30));
    }
}
