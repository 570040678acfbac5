//! `crieur call`: one call placed the way a campaign places it — the policy decides first.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use crieur_audit::record::OptOutRecorded;
use crieur_audit::Record;
use crieur_dial::protocol::{
    finish_call, lease_and_record_invite, recheck, record_late_opt_out, CallRef, Rechecked,
};
use crieur_dial::DialRules;
use crieur_media::audio::Message;
use crieur_media::call::Outcome;
use crieur_media::uac::{CallRequest, Credentials, OptOutFuture, Trunk, Uac};
use crieur_scheduler::{Decision, Evaluator};
use crieur_store::{SledStore, Store};

use crate::campaign::Campaign;
use crate::input::{InputError, InputErrors};

/// Exit code when the policy refuses the call (a `Skip`, or an opted-out number).
pub const EXIT_REFUSED: u8 = 3;
/// Exit code when the call was placed but not answered (busy, no answer, rejected, trunk or
/// auth failure, codec mismatch, shutdown before the answer). A call answered then hung up by
/// the callee mid-message was answered: exit 0.
pub const EXIT_NOT_ANSWERED: u8 = 4;
/// Exit code when the opt-out key was pressed but could not be recorded during the call.
pub const EXIT_OPT_OUT_FAILED: u8 = 5;
/// Exit code on a trunk fault: `call` — the trunk refused the call (credentials refused, no
/// response, 5xx, no common codec), not the contact's answer; `run` — dialling was stopped
/// (credentials refused) or the run ended with the trunk's breaker open.
pub const EXIT_TRUNK_FAULT: u8 = 6;

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
    campaign_path: &Path,
    contact_id: &str,
    now: DateTime<Utc>,
    store_path: &Path,
    actx: &crate::audit::Ctx,
) -> anyhow::Result<ExitCode> {
    // An existing store only: a mistyped path must not silently mean "no opt-outs".
    let store = Arc::new(SledStore::open(store_path, false)?);
    let id = crieur_scheduler::ContactId::new(contact_id)
        .map_err(|e| InputErrors(vec![InputError::new(Path::new("--contact"), e.to_string())]))?;
    let Some(contact) = store.contact(&campaign.id, &id)? else {
        return Err(InputErrors(vec![InputError::new(
            store_path,
            format!(
                "no contact `{contact_id}` in campaign `{}` of this store: import it with `crieur import`",
                campaign.id
            ),
        )
        .field("--contact")])
        .into());
    };
    let contact = &contact;
    println!("call      {} {}", contact.id(), contact.phone());
    let number = contact.phone().to_string();
    // The audit log first: a torn tail (crash mid-write) stops here, before anything happens.
    let mut log = actx.open(store_path, Some(campaign))?;
    log.append(
        now,
        &crate::audit::header("call", Some((campaign, campaign_path)))?,
    )?;
    recover(
        &store,
        &mut log,
        &crate::audit::dir_for(store_path, actx.dir.as_deref()),
        now,
    )?;
    let dial = rules(campaign);
    let mut eval = Evaluator::new(&campaign.policy);
    let Rechecked {
        decision, refused, ..
    } = recheck(&dial, &*store, &mut eval, contact, &mut log, now)?;
    if let Some((why, _)) = refused {
        crate::audit::stop(&mut log, "refused")?;
        println!("refused   {number}: {why}");
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    match decision {
        Decision::Skip(s) => {
            crate::audit::stop(&mut log, "refused by the policy")?;
            println!(
                "refused   the policy says SKIP at {}:",
                crate::output::rfc3339(now)
            );
            for r in &s.reasons {
                println!("  reason  {}", crate::reason_line(r));
            }
            if let Some(n) = s.next_eligible {
                println!("  next    {}", crate::output::rfc3339(n));
            }
            return Ok(ExitCode::from(EXIT_REFUSED));
        }
        Decision::Dial(d) => println!(
            "policy    DIAL under consent #{} ({} {}), until {}",
            d.consent,
            d.ruleset.name,
            d.ruleset.version,
            crate::output::rfc3339(d.valid_until)
        ),
    }
    let Prepared {
        trunk,
        local,
        message,
        confirmation,
        amd,
    } = prepare(campaign)?;
    log.commit()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let phone = contact.phone().clone();
    let hook_store = store.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    // Re-check just before the INVITE (setting up took time): the decision must still hold.
    #[allow(clippy::disallowed_methods)]
    let now = Utc::now();
    // Everything again: the opt-out list and the caps may have changed meanwhile.
    let again = recheck(&dial, &*store, &mut eval, contact, &mut log, now)?;
    if let Some((why, _)) = &again.refused {
        crate::audit::stop(&mut log, "refused at the INVITE")?;
        println!("refused   {number}: {why}");
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    if let Decision::Skip(s) = &again.decision {
        crate::audit::stop(&mut log, "refused by the policy at the INVITE")?;
        println!(
            "refused   the policy says SKIP at the INVITE ({}):",
            crate::output::rfc3339(now)
        );
        for r in &s.reasons {
            println!("  reason  {}", crate::reason_line(r));
        }
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    let valid_until = again.verdict().unwrap_or(now);
    // To the microsecond, as the store keeps it: the log and the store name the same instant.
    #[allow(clippy::disallowed_methods)]
    let sent_at = crieur_dial::to_micros(Utc::now());
    // Leased (durably) before the INVITE, its record durable before the INVITE leaves: after
    // a crash from here on, the call counts.
    let call_id = lease_and_record_invite(
        &*store,
        &mut log,
        &dial,
        contact,
        now,
        valid_until,
        sent_at,
        true,
        || test_pause("after-lease-before-record"),
    )?;
    let log = Arc::new(std::sync::Mutex::new(log));
    let hook_log = log.clone();
    let hook_call = call_id.clone();
    let hook_number = number.clone();
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
            lead_in: campaign.lead_in,
            amd,
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

        let report = uac
            .call(&trunk, req, move |digit, method| -> OptOutFuture {
                Box::pin(async move {
                    let how = format!("key {digit} by {}", method.as_str());
                    // Clock read at the edge: the opt-out's own timestamp.
                    #[allow(clippy::disallowed_methods)]
                    let at = Utc::now();
                    // Durable (flushed to disk) when add_opt_out returns.
                    let (log, call, number) =
                        (hook_log.clone(), hook_call.clone(), hook_number.clone());
                    tokio::task::spawn_blocking(move || {
                        hook_store
                            .add_opt_out(&phone, at, &how)
                            .map_err(|e| e.to_string())?;
                        test_pause("after-opt-out");
                        // The audit record is durable too before the confirmation plays.
                        let mut log = log
                            .lock()
                            .map_err(|_| "audit log lock poisoned".to_owned())?;
                        log.append_durable(
                            at,
                            &Record::OptOutRecorded(OptOutRecorded { call, number, at }),
                        )
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string())?
                })
            })
            .await?;
        // The call ended when it returned (its BYE, if we hung up, left then); the BYE may
        // still be retransmitting: let it, for a while, before the stack stops.
        #[allow(clippy::disallowed_methods)]
        let ended = crieur_dial::to_micros(Utc::now());
        uac.wait_background(crieur_media::uac::EXIT_GRACE).await;
        Ok::<_, anyhow::Error>((report, ended))
    });
    let (report, ended) = match result {
        Ok(r) => r,
        Err(e) => {
            // The call may or may not have left: close the lease as an attempt, then fail.
            #[allow(clippy::disallowed_methods)]
            let at = crieur_dial::to_micros(Utc::now());
            if let Ok(mut log) = log.lock() {
                let c = CallRef {
                    call: &call_id,
                    campaign: &campaign.id,
                    contact,
                    sent_at,
                    ended: at,
                };
                let why = e.to_string();
                let _ = finish_call(&*store, &mut log, &c, Err(&why), "local-error", at, || {});
                let _ = crate::audit::stop(&mut log, &format!("local error: {e}"));
            }
            return Err(e);
        }
    };
    test_pause("after-call");
    // Refused by the trunk before anything rang: recorded, but no attempt used.
    let outcome = crate::fault::recorded_outcome(&report, true);
    let mut late_opt_out = None;
    {
        let mut log = log
            .lock()
            .map_err(|_| anyhow!("the audit log lock was poisoned"))?;
        let c = CallRef {
            call: &call_id,
            campaign: &campaign.id,
            contact,
            sent_at,
            ended,
        };
        finish_call(
            &*store,
            &mut log,
            &c,
            Ok(&report),
            &outcome,
            crate::audit::now(),
            || test_pause("after-attempt"),
        )?;
        // The person asked to opt out but it could not be recorded during the call.
        if report.ending.outcome == Outcome::OptOutFailed {
            late_opt_out = Some(record_late_opt_out(
                &*store,
                &mut log,
                contact.phone(),
                crate::audit::now(),
            )?);
        }
        crate::audit::stop(&mut log, "call done")?;
    }
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
    if report.rtcp.sent > 0 {
        let q = &report.rtcp;
        println!(
            "rtcp      {} reports sent; far end: {}",
            q.sent,
            match (q.fraction_lost(), q.jitter_ms()) {
                (Some(loss), Some(jitter)) => format!(
                    "{:.1} % lost ({} packets), jitter {jitter:.1} ms{}",
                    loss * 100.0,
                    q.last_report.map_or(0, |b| b.cumulative_lost),
                    q.round_trip.map_or(String::new(), |d| format!(
                        ", round trip {} ms",
                        d.as_millis()
                    ))
                ),
                _ => "no report".to_owned(),
            }
        );
    }
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
    if let Some(recorded) = late_opt_out {
        eprintln!(
            "ALERT: {number} pressed the opt-out key but it could not be recorded during the call; {}",
            if recorded { "it is now recorded" } else { "it is STILL NOT recorded: add it with `crieur optout add`" }
        );
        return Ok(ExitCode::from(EXIT_OPT_OUT_FAILED));
    }
    if let Some(f) = crate::fault::fault_of(&report) {
        eprintln!("trunk     {}", crate::fault::describe(&f));
        eprintln!(
            "          {}",
            if outcome != e.outcome.as_str() {
                "refused before anything rang: not the contact's answer, no attempt used"
            } else {
                "something rang first: it counts as an attempt"
            }
        );
        return Ok(ExitCode::from(EXIT_TRUNK_FAULT));
    }
    Ok(match e.outcome {
        Outcome::AnsweredCompleted
        | Outcome::AnsweredOptedOut
        | Outcome::AnsweredNotInterested
        | Outcome::HungUpMidMessage => ExitCode::SUCCESS,
        _ => ExitCode::from(EXIT_NOT_ANSWERED),
    })
}

/// The dial protocol's rules of `campaign`, as plain values.
pub(crate) fn rules(campaign: &Campaign) -> DialRules {
    DialRules {
        campaign: campaign.id.clone(),
        caps: campaign.caps.clone(),
        retry: campaign.retry.policy(),
    }
}

/// What placing calls needs from a campaign: the trunk, the local address that reaches it,
/// and both recordings loaded (G.711, 8 kHz).
pub struct Prepared {
    pub trunk: Trunk,
    pub local: SocketAddr,
    pub message: Arc<Message>,
    pub confirmation: Arc<Message>,
    /// Answering-machine detection (`[amd]`), the voicemail message loaded.
    pub amd: Option<crieur_media::uac::AmdRequest>,
}

pub fn prepare(campaign: &Campaign) -> anyhow::Result<Prepared> {
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
        .map_err(|e| cfg_err("trunk.password", &format!("{:#}", anyhow::Error::from(e))))?;
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
        symmetric_rtp: t.symmetric_rtp,
        p_asserted_identity: t.p_asserted_identity.clone(),
    };
    let message = Arc::new(Message::load(&campaign.message)?);
    let confirmation = Arc::new(Message::load(confirmation)?);
    // The configured SIP address (trunks whitelist IP:port), else the address that routes to
    // the trunk on a port the system picks.
    let local = match t.local_address {
        Some(a) => a,
        None => SocketAddr::new(local_ip_towards(address)?, 0),
    };
    let amd = match &campaign.amd {
        Some(a) => Some(crieur_media::uac::AmdRequest {
            mode: a.mode,
            params: a.params,
            voicemail: match &a.voicemail {
                Some(v) => Some(Arc::new(Message::load(v)?)),
                None => None,
            },
            voicemail_sha256: a.voicemail_sha256.clone(),
        }),
        None => None,
    };
    Ok(Prepared {
        trunk,
        local,
        message,
        confirmation,
        amd,
    })
}

/// After a crash: the store and the audit log in `dir` reconciled from the log
/// ([`crieur_dial::reconcile`]): every placed call gets its outcome, linked to its call id;
/// a lease whose INVITE never left is released. Durable when it returns.
pub(crate) fn recover(
    store: &SledStore,
    log: &mut crieur_audit::AuditLog,
    dir: &Path,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let entries = match crieur_audit::read_all(dir) {
        Ok(e) => e,
        Err(crieur_audit::Error::Empty(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let entries: Vec<crieur_audit::Entry> = entries.into_iter().map(|(_, _, e)| e).collect();
    for r in crieur_dial::reconcile(store, log, &entries, now)? {
        println!("recovered {r}");
    }
    Ok(())
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
