//! `crieur call`: one call placed the way a campaign places it — a run of one contact
//! through the same core and driver as `crieur run` (`crate::run`); this module only reports it.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use crieur_dial::DialRules;
use crieur_media::audio::Message;
use crieur_media::call::Outcome;
use crieur_media::uac::{CallReport, Credentials, Trunk};
use crieur_scheduler::Decision;
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

/// `crieur call`: a run of one contact ([`crate::run::drive`], [`crate::run::Scope::One`]) —
/// the same core, re-check, lease, records, opt-out hook and end of call as `crieur run` —
/// reported call by call, with its exit code.
pub fn run(
    campaign: &Campaign,
    campaign_path: &Path,
    contact_id: &str,
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
    println!("call      {} {}", contact.id(), contact.phone());
    let number = contact.phone().to_string();
    let (_, ran) = crate::run::drive(
        campaign,
        campaign_path,
        store,
        store_path,
        actx,
        crate::run::RunOptions {
            // The call runs to its end (the trunk's maximum call length bounds it); Ctrl-C
            // hangs it up cleanly (an opt-out in progress is recorded first).
            drain: std::time::Duration::from_secs(86_400),
            until: None,
            max_idle: None,
            scope: crate::run::Scope::One(Box::new(contact)),
        },
    )?;
    let Some(done) = ran.calls.into_iter().next() else {
        for r in &ran.refusals {
            refused(&number, r);
        }
        if ran.refusals.is_empty() {
            println!("refused   {number}: not dialled");
        }
        return Ok(ExitCode::from(EXIT_REFUSED));
    };
    if let Decision::Dial(d) = &done.decision {
        println!(
            "policy    DIAL under consent #{} ({} {}), until {}",
            d.consent,
            d.ruleset.name,
            d.ruleset.version,
            crate::output::rfc3339(d.valid_until)
        );
    }
    let report = done.report.map_err(|e| anyhow!(e))?;
    print_report(&report);
    let e = &report.ending;
    if let Some(recorded) = done.late_opt_out {
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
            if done.outcome != e.outcome.as_str() {
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

/// Why the contact was not dialled, as the decision recorded it.
fn refused(number: &str, r: &crate::run::Refusal) {
    if let Some(why) = &r.refused {
        println!("refused   {number}: {why}");
        return;
    }
    match &r.decision {
        Decision::Skip(s) => {
            println!(
                "refused   the policy says SKIP at {}:",
                crate::output::rfc3339(r.at)
            );
            for reason in &s.reasons {
                println!("  reason  {}", crate::reason_line(reason));
            }
            if let Some(n) = s.next_eligible {
                println!("  next    {}", crate::output::rfc3339(n));
            }
        }
        Decision::Dial(d) => println!(
            "refused   the decision at {} held only until {}: too close to send the INVITE",
            crate::output::rfc3339(r.at),
            crate::output::rfc3339(d.valid_until)
        ),
    }
}

/// The call as the operator reads it: its timeline, codec, audio, RTCP, keys, opt-out and
/// outcome.
fn print_report(report: &CallReport) {
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
