//! `crieur call`: one call placed the way a campaign places it — the policy decides first.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use crieur_audit::build::{decision_record, DecisionInputs};
use crieur_audit::record::{
    CallEvent, Dtmf, FirstAudio, Hangup, InviteSent, OptOutRecorded, OutcomeRecord, PastAttempt,
    Reason, RtcpRecord, SipResponse,
};
use crieur_audit::Record;
use crieur_media::audio::Message;
use crieur_media::call::Outcome;
use crieur_media::uac::{CallRequest, Credentials, OptOutFuture, Trunk, Uac};
use crieur_scheduler::{ContactId, Decision, Evaluator};
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
    recover(&store, &mut log, now)?;
    let Gate {
        history,
        opted_out,
        refused,
    } = gate(campaign, &*store, contact, now)?;
    let refused = refused.map(|(why, _)| why);
    let attempt = attempt_number(&history, &campaign.id);
    let decision = Evaluator::new(&campaign.policy).decide(contact, now);
    log.append(
        now,
        &Record::Decision(Box::new(decision_record(
            contact,
            &decision,
            DecisionInputs {
                campaign: &campaign.id,
                now,
                history: history.clone(),
                opted_out,
                refused: refused.clone(),
                attempt,
            },
        ))),
    )?;
    if let Some(why) = refused {
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
    let Gate {
        history,
        opted_out,
        refused,
    } = gate(campaign, &*store, contact, now)?;
    let refused = refused.map(|(why, _)| why);
    let recheck = Evaluator::new(&campaign.policy).decide(contact, now);
    log.append(
        now,
        &Record::Decision(Box::new(decision_record(
            contact,
            &recheck,
            DecisionInputs {
                campaign: &campaign.id,
                now,
                history,
                opted_out,
                refused: refused.clone(),
                attempt,
            },
        ))),
    )?;
    if let Some(why) = refused {
        crate::audit::stop(&mut log, "refused at the INVITE")?;
        println!("refused   {number}: {why}");
        return Ok(ExitCode::from(EXIT_REFUSED));
    }
    if let Decision::Skip(s) = recheck {
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
    let valid_until = match &recheck {
        Decision::Dial(d) => d.valid_until,
        Decision::Skip(_) => now,
    };
    // Leased (durably) before the INVITE: after a crash from here on, the call counts.
    let id = contact.id().clone();
    #[allow(clippy::disallowed_methods)]
    let sent_at = Utc::now();
    // The lease and the attempt it becomes carry the INVITE's instant.
    store.lease(&campaign.id, &id, contact.phone(), sent_at)?;
    let call_id = format!("{}-{}", contact.id(), sent_at.timestamp_micros());
    // Durable before the INVITE leaves: the log never lacks a call that happened.
    log.append_durable(
        sent_at,
        &Record::InviteSent(InviteSent {
            call: call_id.clone(),
            campaign: campaign.id.clone(),
            contact: contact.id().to_string(),
            number: number.clone(),
            decided_at: now,
            sent_at,
            recheck: "dial".into(),
            valid_until,
        }),
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
        let ended = Utc::now();
        uac.wait_background(crieur_media::uac::EXIT_GRACE).await;
        Ok::<_, anyhow::Error>((report, ended))
    });
    let (report, ended) = match result {
        Ok(r) => r,
        Err(e) => {
            // The call may or may not have left: close the lease as an attempt, then fail.
            #[allow(clippy::disallowed_methods)]
            let at = Utc::now();
            let _ = store.finish_attempt(&campaign.id, &id, contact.phone(), "local-error", at);
            if let Ok(mut log) = log.lock() {
                let _ = log.append(
                    at,
                    &Record::Outcome(OutcomeRecord {
                        call: call_id.clone(),
                        campaign: campaign.id.clone(),
                        contact: contact.id().to_string(),
                        number: number.clone(),
                        started: sent_at,
                        ended: at,
                        outcome: "local-error".into(),
                    }),
                );
                let _ = crate::audit::stop(&mut log, &format!("local error: {e}"));
            }
            return Err(e);
        }
    };
    test_pause("after-call");
    // Refused by the trunk before anything rang: recorded, but no attempt used.
    let outcome = crate::fault::recorded_outcome(&report, true);
    store.finish_attempt(&campaign.id, &id, contact.phone(), &outcome, ended)?;
    {
        let mut log = log
            .lock()
            .map_err(|_| anyhow!("the audit log lock was poisoned"))?;
        record_call(
            &mut log, &call_id, campaign, contact, &report, &outcome, sent_at, ended,
        )?;
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

/// The number the next attempt of `campaign` would have (1-based): its earlier attempts that
/// count (a trunk fault does not).
pub(crate) fn attempt_number(history: &[PastAttempt], campaign: &str) -> u32 {
    1 + history
        .iter()
        .filter(|h| {
            h.campaign == campaign
                && crieur_engine::AttemptOutcome::from_record(&h.outcome).counts()
        })
        .count() as u32
}

/// Earlier attempts (as decisions record them) as the engine counts them: from when they
/// ended — retry delays count from there, and caps are never looser that way.
pub(crate) fn to_attempts(history: &[PastAttempt], campaign: &str) -> Vec<crieur_engine::Attempt> {
    history
        .iter()
        .map(|a| crieur_engine::Attempt {
            at: a.ended.unwrap_or(a.at).max(a.at),
            outcome: crieur_engine::AttemptOutcome::from_record(&a.outcome),
            this_campaign: a.campaign == campaign,
        })
        .collect()
}

/// Whether the caps (all campaigns of the store) or this campaign's retry rules hold the
/// contact at `now`, from the number's `history`: why, and until when (`None`: for good).
pub(crate) fn held(
    campaign: &Campaign,
    history: &[PastAttempt],
    now: DateTime<Utc>,
) -> Option<(Reason, Option<DateTime<Utc>>)> {
    let attempts = to_attempts(history, &campaign.id);
    if let Some(hit) = campaign.caps.check(&attempts, now) {
        return Some((Reason::from(&hit), hit.until()));
    }
    use crieur_engine::RetryGate;
    match campaign.retry.policy().gate(&attempts) {
        RetryGate::Open => None,
        RetryGate::NotBefore(t) if t <= now => None,
        RetryGate::NotBefore(t) => Some((Reason::RetryDelay { not_before: t }, Some(t))),
        RetryGate::Done => Some((Reason::CampaignDone, None)),
    }
}

/// What the caller checks before the policy, at one instant.
pub(crate) struct Gate {
    /// The number's attempts (all campaigns); empty when they cannot be read.
    pub history: Vec<PastAttempt>,
    pub opted_out: bool,
    /// Why not to dial, and until when (`None`: not in this run).
    pub refused: Option<(Reason, Option<DateTime<Utc>>)>,
}

/// The opt-out list, the number's history (a damaged one refuses the number: a shorter
/// history could hide an attempt that counts toward a cap), the caps across campaigns and
/// this campaign's retry rules.
pub(crate) fn gate(
    campaign: &Campaign,
    store: &dyn Store,
    contact: &crieur_scheduler::Contact,
    now: DateTime<Utc>,
) -> anyhow::Result<Gate> {
    let opted_out = store.is_opted_out(contact.phone())?;
    let (history, damaged) = match history(store, contact)? {
        Ok(h) => (h, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    let refused = if opted_out {
        Some((Reason::OptedOut, None))
    } else if let Some(why) = damaged {
        Some((why, None))
    } else {
        held(campaign, &history, now)
    };
    Ok(Gate {
        history,
        opted_out,
        refused,
    })
}

/// What placing calls needs from a campaign: the trunk, the local address that reaches it,
/// and both recordings loaded (G.711, 8 kHz).
pub struct Prepared {
    pub trunk: Trunk,
    pub local: SocketAddr,
    pub message: Arc<Message>,
    pub confirmation: Arc<Message>,
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
    Ok(Prepared {
        trunk,
        local,
        message,
        confirmation,
    })
}

/// Closes the calls a crash left leased as `interrupted` attempts (they count toward the
/// caps) and records each, with the start its lease had, durably.
pub(crate) fn recover(
    store: &SledStore,
    log: &mut crieur_audit::AuditLog,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    for (c, id) in store.recover_interrupted(now)? {
        println!("recovered an interrupted call to {c}/{id} (counted as an attempt)");
        let contact = ContactId::new(id.clone())
            .ok()
            .and_then(|i| store.contact(&c, &i).ok().flatten());
        let number = contact
            .as_ref()
            .map(|k| k.phone().to_string())
            .unwrap_or_default();
        // The attempt the store just wrote, for its start instant.
        let started = contact
            .and_then(|k| store.attempts(k.phone()).ok())
            .and_then(|a| {
                a.into_iter()
                    .filter(|a| a.campaign == c && a.contact == id && a.outcome == "interrupted")
                    .map(|a| a.started)
                    .max()
            })
            .unwrap_or(now);
        log.append(
            now,
            &Record::Outcome(OutcomeRecord {
                call: format!("recovered-{c}/{id}"),
                campaign: c,
                contact: id,
                number,
                started,
                ended: now,
                outcome: "interrupted".into(),
            }),
        )?;
    }
    log.commit()?;
    Ok(())
}

/// Every earlier attempt on the number (all campaigns), as decisions record it.
/// The number's attempts, or — when a stored attempt is damaged — the reason not to dial it
/// (never a shorter history). Other store failures are errors.
pub(crate) fn history(
    store: &dyn Store,
    contact: &crieur_scheduler::Contact,
) -> anyhow::Result<Result<Vec<PastAttempt>, Reason>> {
    match store.attempts(contact.phone()) {
        Ok(a) => Ok(Ok(a
            .into_iter()
            .map(|a| PastAttempt {
                at: a.started,
                ended: Some(a.ended),
                outcome: a.outcome,
                campaign: a.campaign,
            })
            .collect())),
        Err(e @ crieur_store::Error::Corrupt { .. }) => {
            Ok(Err(Reason::HistoryUnreadable { why: e.to_string() }))
        }
        Err(e) => Err(e.into()),
    }
}

/// The opt-out prompt is in the first 2 s of the message (the rules ask for it there):
/// a message that played this far reached it.
const OPT_OUT_PROMPT_MS: u64 = 2_000;

/// The call's events, in order, into the audit log (then committed by the caller's stop);
/// `outcome` is the name recorded in the store too ([`crate::fault::recorded_outcome`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_call(
    log: &mut crieur_audit::AuditLog,
    call: &str,
    campaign: &Campaign,
    contact: &crieur_scheduler::Contact,
    r: &crieur_media::uac::CallReport,
    outcome: &str,
    sent_at: DateTime<Utc>,
    ended: DateTime<Utc>,
) -> anyhow::Result<()> {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    // `ts` is when a record is written; each event's own time is its `at_ms` after the INVITE.
    let written = crate::audit::now();
    let at = |_: std::time::Duration| written;
    let c = || call.to_owned();
    // The first 18x: evidence that something rang (replay checks trunk faults against it).
    if let Some((status, when)) = r.first_18x {
        log.append(
            at(when),
            &Record::SipResponse(SipResponse {
                call: c(),
                status,
                at_ms: ms(when),
            }),
        )?;
    }
    if let Some((status, when)) = r.final_response {
        log.append(
            at(when),
            &Record::SipResponse(SipResponse {
                call: c(),
                status,
                at_ms: ms(when),
            }),
        )?;
    }
    if let Some(when) = r.answered_at {
        log.append(
            at(when),
            &Record::Answered(CallEvent {
                call: c(),
                at_ms: ms(when),
            }),
        )?;
    }
    if let (Some(when), Some(delay)) = (r.first_audio_at, r.answer_to_first_audio) {
        log.append(
            at(when),
            &Record::FirstAudio(FirstAudio {
                call: c(),
                at_ms: ms(when),
                answer_to_audio_ms: ms(delay),
            }),
        )?;
        if r.message_packets * 20 >= OPT_OUT_PROMPT_MS {
            let when = when + std::time::Duration::from_millis(OPT_OUT_PROMPT_MS);
            log.append(
                at(when),
                &Record::OptOutPromptReached(CallEvent {
                    call: c(),
                    at_ms: ms(when),
                }),
            )?;
        }
    }
    for (digit, method, when) in &r.keys {
        log.append(
            at(*when),
            &Record::Dtmf(Dtmf {
                call: c(),
                at_ms: ms(*when),
                digit: *digit,
                method: method.as_str().into(),
            }),
        )?;
    }
    if r.answered_at.is_some() && r.rtcp.sent > 0 {
        log.append(written, &Record::Rtcp(rtcp_record(call, &r.rtcp)))?;
    }
    use crieur_media::call::HangupBy;
    log.append(
        written,
        &Record::Hangup(Hangup {
            call: c(),
            by: match r.ending.hangup_by {
                HangupBy::Us => "us",
                HangupBy::Callee => "callee",
                HangupBy::Nobody => "nobody",
            }
            .into(),
            reason: r.ending.reason.clone(),
            sip_status: r.ending.sip_status,
        }),
    )?;
    log.append(
        written,
        &Record::Outcome(OutcomeRecord {
            call: c(),
            campaign: campaign.id.clone(),
            contact: contact.id().to_string(),
            number: contact.phone().to_string(),
            started: sent_at,
            ended,
            outcome: outcome.into(),
        }),
    )?;
    Ok(())
}

/// The call's RTCP for the audit log.
fn rtcp_record(call: &str, r: &crieur_media::session::RtcpSummary) -> RtcpRecord {
    RtcpRecord {
        call: call.to_owned(),
        reports_sent: r.sent,
        reports_received: r.reports_received,
        fraction_lost_256: r.last_report.map(|b| b.fraction_lost),
        worst_fraction_lost_256: r.worst_fraction_lost,
        cumulative_lost: r.last_report.map(|b| b.cumulative_lost),
        // 8 kHz clock: one unit is 125 µs.
        jitter_us: r.last_report.map(|b| u64::from(b.jitter) * 125),
        round_trip_ms: r
            .round_trip
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
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
