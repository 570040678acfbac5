//! The dial protocol's steps that `crieur call` and `crieur run` share: the re-check at the
//! INVITE instant (opt-out list, the number's history, caps across campaigns, this campaign's
//! retry rules), and a finished call's records. One implementation: the single call and the
//! campaign loop cannot disagree on what they check or what they record.

use chrono::{DateTime, Utc};
use crieur_audit::build::{decision_record, DecisionInputs};
use crieur_audit::record::{
    AmdBeep, AmdFeatures, AmdRecord, AmdSit, CallEvent, Dtmf, FirstAudio, Hangup, InviteSent,
    OptOutListChange, OutcomeRecord, PastAttempt, Reason, RtcpRecord, SipResponse,
};
use crieur_audit::{AuditLog, Record};
use crieur_engine::{Attempt, CapRules, RetryGate, RetryPolicy, SkipNote};
use crieur_media::call::HangupBy;
use crieur_media::uac::CallReport;
use crieur_outcome::Outcome;
use crieur_scheduler::{Contact, Decision, Evaluator, E164};
use crieur_store::{AttemptRecord, Finished, Store};

use crate::Result;

/// What the protocol needs of a campaign: plain values the caller fills from its own
/// campaign type (the CLI from its TOML, an API from its JSON).
#[derive(Debug, Clone)]
pub struct DialRules {
    /// The campaign's stable id (store keys, audit records).
    pub campaign: String,
    pub caps: CapRules,
    pub retry: RetryPolicy,
}

/// The number the next attempt of `campaign` would have (1-based): its earlier attempts that
/// count (a trunk fault does not).
pub fn attempt_number(history: &[PastAttempt], campaign: &str) -> u32 {
    1 + history
        .iter()
        .filter(|h| h.campaign == campaign && h.outcome.counts())
        .count() as u32
}

/// Earlier attempts (as decisions record them) as the engine counts them: from when they
/// ended — retry delays count from there, and caps are never looser that way.
pub fn to_attempts(history: &[PastAttempt], campaign: &str) -> Vec<Attempt> {
    history
        .iter()
        .map(|a| Attempt {
            at: a.ended.unwrap_or(a.at).max(a.at),
            outcome: a.outcome.scheduled(),
            this_campaign: a.campaign == campaign,
        })
        .collect()
}

/// Whether the caps (all campaigns of the store) or this campaign's retry rules hold the
/// contact at `now`, from the number's `history`: why, and until when (`None`: for good).
pub fn held(
    rules: &DialRules,
    history: &[PastAttempt],
    now: DateTime<Utc>,
) -> Option<(Reason, Option<DateTime<Utc>>)> {
    let attempts = to_attempts(history, &rules.campaign);
    if let Some(hit) = rules.caps.check(&attempts, now) {
        return Some((Reason::from(&hit), hit.until()));
    }
    match rules.retry.gate(&attempts) {
        RetryGate::Open => None,
        RetryGate::NotBefore(t) if t <= now => None,
        RetryGate::NotBefore(t) => Some((Reason::RetryDelay { not_before: t }, Some(t))),
        RetryGate::Done => Some((Reason::CampaignDone, None)),
    }
}

/// What the caller checks before the policy, at one instant.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The number's attempts (all campaigns); empty when they cannot be read.
    pub history: Vec<PastAttempt>,
    pub opted_out: bool,
    /// Why not to dial, and until when (`None`: not in this run).
    pub refused: Option<(Reason, Option<DateTime<Utc>>)>,
}

/// Every earlier attempt on the number (all campaigns), as decisions record it; or — when a
/// stored attempt is damaged — the reason not to dial it (never a shorter history: it could
/// hide an attempt that counts toward a cap). Other store failures are errors.
pub fn history(
    store: &dyn Store,
    contact: &Contact,
) -> Result<std::result::Result<Vec<PastAttempt>, Reason>> {
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
        Err(
            e @ (crieur_store::Error::Corrupt { .. } | crieur_store::Error::UnknownOutcome { .. }),
        ) => Ok(Err(Reason::HistoryUnreadable { why: e.to_string() })),
        Err(e) => Err(e.into()),
    }
}

/// The opt-out list, the number's history (a damaged one refuses the number), the caps across
/// campaigns and this campaign's retry rules, read from `store` at `now`.
pub fn gate(
    rules: &DialRules,
    store: &dyn Store,
    contact: &Contact,
    now: DateTime<Utc>,
) -> Result<Gate> {
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
        held(rules, &history, now)
    };
    Ok(Gate {
        history,
        opted_out,
        refused,
    })
}

/// How many times an opt-out that could not be recorded during its call is tried again
/// after it, before the operator is told it is still missing.
pub const LATE_OPT_OUT_TRIES: u32 = 3;

/// The callee pressed the opt-out key but it could not be recorded during the call: record it
/// now (up to [`LATE_OPT_OUT_TRIES`] times), and when it is, say so in the audit log (an
/// `opt-out-list-change` by the opt-out key). Returns whether it is recorded. The one policy
/// for `crieur call` and `crieur run`.
pub fn record_late_opt_out(
    store: &dyn Store,
    log: &mut AuditLog,
    number: &E164,
    at: DateTime<Utc>,
) -> Result<bool> {
    let source = "opt-out key; recorded after the call";
    let recorded = (0..LATE_OPT_OUT_TRIES).any(|_| store.add_opt_out(number, at, source).is_ok());
    if recorded {
        log.append_durable(
            at,
            &Record::OptOutListChange(OptOutListChange {
                action: "add".into(),
                numbers: vec![number.to_string()],
                source: source.into(),
                at,
                ticket: None,
                recovered: None,
            }),
        )?;
    }
    Ok(recorded)
}

/// The opt-out prompt is in the first 2 s of the message (the rules ask for it there): a
/// message that played this far reached it.
const OPT_OUT_PROMPT_MS: u64 = 2_000;

/// A finished call: which, to whom, when.
pub struct CallRef<'a> {
    pub call: &'a str,
    pub campaign: &'a str,
    pub contact: &'a Contact,
    pub sent_at: DateTime<Utc>,
    pub ended: DateTime<Utc>,
}

/// The call's events, in order, then its outcome (`outcome`: the name recorded in the store
/// too, [`crate::fault::recorded_outcome`]), into the audit log (committed by the caller).
/// `written` stamps the records (`ts`); each event's own time is its `at_ms` after the INVITE.
pub fn record_call(
    log: &mut AuditLog,
    c: &CallRef<'_>,
    r: &CallReport,
    outcome: Outcome,
    written: DateTime<Utc>,
) -> Result<()> {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let call = || c.call.to_owned();
    // The first 18x: evidence that something rang (replay checks trunk faults against it).
    for (status, when) in r.first_18x.into_iter().chain(r.final_response) {
        log.append(
            written,
            &Record::SipResponse(SipResponse {
                call: call(),
                status,
                at_ms: ms(when),
            }),
        )?;
    }
    if let Some(when) = r.answered_at {
        log.append(
            written,
            &Record::Answered(CallEvent {
                call: call(),
                at_ms: ms(when),
            }),
        )?;
    }
    if let (Some(when), Some(delay)) = (r.first_audio_at, r.answer_to_first_audio) {
        log.append(
            written,
            &Record::FirstAudio(FirstAudio {
                call: call(),
                at_ms: ms(when),
                answer_to_audio_ms: ms(delay),
            }),
        )?;
        if r.message_packets * 20 >= OPT_OUT_PROMPT_MS {
            let when = when + std::time::Duration::from_millis(OPT_OUT_PROMPT_MS);
            log.append(
                written,
                &Record::OptOutPromptReached(CallEvent {
                    call: call(),
                    at_ms: ms(when),
                }),
            )?;
        }
    }
    for (digit, method, when) in &r.keys {
        log.append(
            written,
            &Record::Dtmf(Dtmf {
                call: call(),
                at_ms: ms(*when),
                digit: *digit,
                method: method.as_str().into(),
            }),
        )?;
    }
    if let (Some(a), Some(answered)) = (&r.amd, r.answered_at) {
        log.append(written, &Record::Amd(amd_record(c.call, a, answered)))?;
    }
    if r.answered_at.is_some() && r.rtcp.sent > 0 {
        log.append(written, &Record::Rtcp(rtcp_record(c.call, &r.rtcp)))?;
    }
    log.append(
        written,
        &Record::Hangup(Hangup {
            call: call(),
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
    log.append(written, &outcome_record(c, outcome))?;
    Ok(())
}

/// The call's answering-machine detection for the audit log (times from the answer).
fn amd_record(
    call: &str,
    a: &crieur_media::uac::AmdReport,
    answered: std::time::Duration,
) -> AmdRecord {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let last = a.verdicts.last();
    // The beep the drop waited for, else the last one heard.
    let beep = match a.drop.map(|(_, p)| p.cause) {
        Some(crieur_media::amd::DropCause::Beep(b)) => Some(b),
        _ => a.beeps.last().map(|(_, b)| *b),
    };
    let by_beep = matches!(
        a.drop.map(|(_, p)| p.cause),
        Some(crieur_media::amd::DropCause::Beep(_))
    );
    AmdRecord {
        call: call.to_owned(),
        mode: a.mode.as_str().into(),
        verdict: last.map_or("none", |(_, v)| v.kind.as_str()).into(),
        cause: last.map(|(_, v)| v.cause.as_str().into()),
        first_verdict: (a.verdicts.len() > 1)
            .then(|| a.verdicts.first().map(|(_, v)| v.kind.as_str().into()))
            .flatten(),
        answer_to_verdict_ms: last.map(|(at, _)| ms(at.saturating_sub(answered))),
        features: last.map(|(_, v)| {
            let f = v.features;
            AmdFeatures {
                initial_silence_ms: f.initial_silence_ms,
                voice_ms: f.voice_ms,
                words: f.words,
                longest_word_ms: f.longest_word_ms,
                silence_ms: f.silence_ms,
                analysed_ms: f.analysed_ms,
                noise_floor_dbfs: f.noise_floor_dbfs.round() as i32,
            }
        }),
        beep: beep.map(|b| AmdBeep {
            freq_hz: b.freq_hz.round() as u32,
            length_ms: ms(b.end.saturating_sub(b.start)),
            end_ms: ms(b.end),
        }),
        drop: a.drop.map(|(_, p)| p.cause.as_str().into()),
        beep_to_voicemail_ms: match (beep, a.voicemail_started_at) {
            (Some(b), Some(vm)) if by_beep => Some(ms(vm.saturating_sub(answered + b.end))),
            _ => None,
        },
        voicemail_at_ms: a.voicemail_started_at.map(ms),
        voicemail_sha256: (a.voicemail_packets > 0)
            .then(|| a.voicemail_sha256.clone())
            .flatten(),
        voicemail_played_ms: a.voicemail_packets * 20,
        sit: a.sit.map(|(_, s)| AmdSit {
            code: s.kind.as_str().into(),
            freq_hz: s.segments.map(|g| g.freq_hz.round() as u32),
            length_ms: s.segments.map(|g| ms(g.end.saturating_sub(g.start))),
            start_ms: ms(s.segments[0].start),
            end_ms: ms(s.segments[2].end),
        }),
    }
}

/// The `outcome` record of a call (also for a call whose task failed: `local-error`).
pub fn outcome_record(c: &CallRef<'_>, outcome: Outcome) -> Record {
    Record::Outcome(OutcomeRecord {
        call: c.call.to_owned(),
        campaign: c.campaign.to_owned(),
        contact: c.contact.id().to_string(),
        number: c.contact.phone().to_string(),
        started: c.sent_at,
        ended: c.ended,
        outcome,
    })
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

/// The re-check at the INVITE instant, as recorded.
#[derive(Debug, Clone)]
pub struct Rechecked {
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// The policy's decision at that instant.
    pub decision: Decision,
    /// Why the opt-out list, the history, a cap or the retry rules refused it first, and until
    /// when (`None`: for good).
    pub refused: Option<(Reason, Option<DateTime<Utc>>)>,
}

impl Rechecked {
    /// `Ok(valid_until)` to dial; `Err(retry_at)` not to (`None`: never).
    pub fn verdict(&self) -> std::result::Result<DateTime<Utc>, Option<DateTime<Utc>>> {
        if let Some((_, until)) = &self.refused {
            return Err(*until);
        }
        match &self.decision {
            Decision::Dial(d) => Ok(d.valid_until),
            Decision::Skip(s) => Err(s.next_eligible),
        }
    }
}

/// Re-checks `contact` at `now` — the opt-out list, its history, the caps across campaigns,
/// this campaign's retry rules ([`gate`]), then the policy — and records the decision with
/// every input replay needs (appended to `log`; the caller commits).
pub fn recheck(
    rules: &DialRules,
    store: &dyn Store,
    eval: &mut Evaluator<'_>,
    contact: &Contact,
    log: &mut AuditLog,
    now: DateTime<Utc>,
) -> Result<Rechecked> {
    let Gate {
        history,
        opted_out,
        refused,
    } = gate(rules, store, contact, now)?;
    let attempt = attempt_number(&history, &rules.campaign);
    let decision = eval.decide(contact, now);
    let inputs = DecisionInputs {
        campaign: &rules.campaign,
        now,
        history,
        opted_out,
        refused: refused.as_ref().map(|(why, _)| why.clone()),
        attempt,
    };
    append_decision(log, contact, &decision, inputs)?;
    Ok(Rechecked {
        at: now,
        decision,
        refused,
    })
}

/// A contact not dialled and not re-checked — the planner skipped it (`note`: a cap, or the
/// policy), or its history could not be read (`unreadable`) — recorded with the inputs it had:
/// the policy's decision at `now`, the opt-out list, the number's history (a damaged one is the
/// reason), the cap hit (appended to `log`; the caller commits). Returns the decision and the
/// reason recorded.
pub fn record_skip(
    rules: &DialRules,
    store: &dyn Store,
    eval: &mut Evaluator<'_>,
    contact: &Contact,
    log: &mut AuditLog,
    now: DateTime<Utc>,
    note: Option<&SkipNote>,
) -> Result<(Decision, Option<Reason>)> {
    let decision = eval.decide(contact, now);
    let opted_out = store.is_opted_out(contact.phone())?;
    let (history, damaged) = match history(store, contact)? {
        Ok(h) => (h, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    let refused = damaged.or(match note {
        Some(SkipNote::Cap(hit)) => Some(hit.into()),
        Some(SkipNote::Policy { .. }) | None => None,
    });
    let inputs = DecisionInputs {
        campaign: &rules.campaign,
        now,
        history,
        opted_out,
        refused: refused.clone(),
        attempt: 0,
    };
    append_decision(log, contact, &decision, inputs)?;
    Ok((decision, refused))
}

/// A decision record, with its inputs, appended to `log` (stamped with the decision's instant).
fn append_decision(
    log: &mut AuditLog,
    contact: &Contact,
    decision: &Decision,
    inputs: DecisionInputs<'_>,
) -> Result<()> {
    let now = inputs.now;
    log.append(
        now,
        &Record::Decision(Box::new(decision_record(contact, decision, inputs))),
    )?;
    Ok(())
}

/// A call's id: the contact's id and the INVITE's instant in microseconds.
pub fn call_id(contact: &Contact, sent_at: DateTime<Utc>) -> String {
    format!("{}-{}", contact.id(), sent_at.timestamp_micros())
}

/// Before an INVITE: the contact is leased in the store (durable, naming the call), then its
/// `invite-sent` record appended — made durable here when `durable`, else by the caller's
/// next commit, which must come before the INVITE leaves. `after_lease` runs between the two
/// (a test hook). Returns the call's id; a contact already leased is
/// `Error::Store(crieur_store::Error::Leased)`, and nothing is recorded.
#[allow(clippy::too_many_arguments)]
pub fn lease_and_record_invite(
    store: &dyn Store,
    log: &mut AuditLog,
    rules: &DialRules,
    contact: &Contact,
    decided_at: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    sent_at: DateTime<Utc>,
    durable: bool,
    after_lease: impl FnOnce(),
) -> Result<String> {
    let call = call_id(contact, sent_at);
    store.lease(
        &rules.campaign,
        contact.id(),
        contact.phone(),
        sent_at,
        &call,
    )?;
    after_lease();
    let record = Record::InviteSent(InviteSent {
        call: call.clone(),
        campaign: rules.campaign.clone(),
        contact: contact.id().to_string(),
        number: contact.phone().to_string(),
        decided_at,
        sent_at,
        recheck: "dial".into(),
        valid_until,
    });
    if durable {
        log.append_durable(sent_at, &record)?;
    } else {
        log.append(sent_at, &record)?;
    }
    Ok(call)
}

/// After a call: the lease closed into its attempt (store, durable), then the call's records
/// — its events and outcome, or only the outcome when its task failed (`report` an error) —
/// appended to `log` (the caller commits). The store first, the log second: a crash between
/// them is repaired by [`crate::reconcile`] from the store. `after_store` runs between the two
/// (a test hook).
#[allow(clippy::too_many_arguments)]
pub fn finish_call(
    store: &dyn Store,
    log: &mut AuditLog,
    c: &CallRef<'_>,
    report: std::result::Result<&CallReport, &str>,
    outcome: Outcome,
    written: DateTime<Utc>,
    after_store: impl FnOnce(),
) -> Result<()> {
    let finished = store.finish_attempt(
        c.contact.phone(),
        &AttemptRecord {
            campaign: c.campaign.to_owned(),
            contact: c.contact.id().to_string(),
            started: c.sent_at,
            ended: c.ended,
            outcome,
            call: c.call.to_owned(),
        },
    )?;
    if let Finished::LeaseLost { held_by, updated } = &finished {
        // Another node recovered this call's lease (it judged this node dead: a heartbeat
        // late under load?). The call counts once all the same; the lease the contact holds
        // now (another call's) is left alone.
        tracing::warn!(
            call = c.call,
            campaign = c.campaign,
            contact = %c.contact.id(),
            held_now_by = ?held_by,
            recovered_attempt_updated = updated,
            "a call ended whose lease another node had recovered: its attempt recorded once, the contact's current lease left alone"
        );
    }
    after_store();
    match report {
        Ok(r) => record_call(log, c, r, outcome, written),
        Err(_) => {
            log.append(written, &outcome_record(c, outcome))?;
            Ok(())
        }
    }
}

/// Where one contact of a campaign stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Nothing more to do — opted out, a final outcome, out of attempts, or a damaged
    /// history — and why (as a decision would record it).
    Done(Reason),
    Due,
    /// Due at this instant (a retry delay, a cap, or its next window).
    Waiting(DateTime<Utc>),
    /// No instant within the next-eligible horizon: the policy's reasons now.
    Never(Vec<crieur_scheduler::SkipReason>),
}

/// Where `contact` stands at `now`: the opt-out list, its history (caps across campaigns,
/// this campaign's retry rules), then the policy from the first instant they allow.
pub fn standing(
    rules: &DialRules,
    store: &dyn Store,
    ev: &mut Evaluator<'_>,
    contact: &Contact,
    now: DateTime<Utc>,
) -> Result<Standing> {
    if store.is_opted_out(contact.phone())? {
        return Ok(Standing::Done(Reason::OptedOut));
    }
    // A damaged history: not dialled until the store is repaired (never a shorter history).
    let history = match history(store, contact)? {
        Ok(h) => h,
        Err(why) => return Ok(Standing::Done(why)),
    };
    let from = match held(rules, &history, now) {
        Some((why, None)) => return Ok(Standing::Done(why)),
        Some((_, Some(until))) => until,
        None => now,
    };
    Ok(match ev.decide(contact, from) {
        Decision::Dial(_) if from == now => Standing::Due,
        Decision::Dial(_) => Standing::Waiting(from),
        Decision::Skip(s) => match s.next_eligible {
            Some(t) => Standing::Waiting(t),
            None => Standing::Never(s.reasons),
        },
    })
}
