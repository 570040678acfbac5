//! `crieur run`: the campaign loop, live — store → planner → media → audit.
//!
//! One task (this loop) owns the planner and the audit log's chain; each call is its own
//! task. Every order from the planner is re-checked just before its INVITE (opt-out list,
//! caps across campaigns, the policy), recorded, leased, then placed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use crieur_audit::build::{decision_record, DecisionInputs};
use crieur_audit::record::{InviteSent, OptOutRecorded, OutcomeRecord};
use crieur_audit::{AuditLog, Record};
use crieur_engine::{
    AttemptOutcome, Breaker, BreakerState, CallVerdict, Cause, Permit, Planner, SkipNote,
    Transition,
};
use crieur_media::call::Outcome;
use crieur_media::uac::{CallReport, CallRequest, OptOutFuture, Uac};
use crieur_scheduler::{Contact, Decision, Evaluator};
use crieur_store::{SledStore, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::call::{gate, history, prepare, record_call, to_attempts, Gate, Prepared};
use crate::campaign::Campaign;

/// Options of `crieur run`.
pub struct RunOptions {
    /// On the first SIGINT/SIGTERM, calls in progress get this long before they are hung up.
    pub drain: Duration,
    /// Stop placing calls at this instant (then drain and exit).
    pub until: Option<DateTime<Utc>>,
    /// Stop when nothing is in flight and the next contact is due further away than this
    /// (none: wait, however long).
    pub max_idle: Option<Duration>,
}

/// A call task's result.
struct Finished {
    contact: usize,
    call: String,
    sent_at: DateTime<Utc>,
    report: Result<CallReport, String>,
}

#[derive(Default)]
struct Counters {
    dialled: u64,
    answered: u64,
    opted_out: u64,
    failed: u64,
    /// Calls the trunk refused before anything rang (no attempt used).
    trunk_refused: u64,
    /// The trunk's breaker when the run ended, if it was not closed: why.
    trunk_end: Option<String>,
    by_outcome: BTreeMap<String, u64>,
    recent: std::collections::VecDeque<DateTime<Utc>>,
}

fn now() -> DateTime<Utc> {
    crate::audit::now()
}

/// Runs the campaign until every contact is done, `until`, or a signal.
pub fn run(
    campaign: &Campaign,
    campaign_path: &Path,
    store_path: &Path,
    actx: &crate::audit::Ctx,
    opts: RunOptions,
) -> anyhow::Result<ExitCode> {
    let store = Arc::new(SledStore::open(store_path, false)?);
    let mut log = actx.open(store_path, Some(campaign))?;
    let start = now();
    log.append(
        start,
        &crate::audit::header("run", Some((campaign, campaign_path)))?,
    )?;
    crate::call::recover(&store, &mut log, start)?;
    let contacts = store.contacts(&campaign.id)?;
    if contacts.is_empty() {
        return Err(anyhow!(
            "campaign `{}` has no contacts in {}: import them with `crieur import`",
            campaign.id,
            store_path.display()
        ));
    }
    let prepared = prepare(campaign)?;
    let mut planner = Planner::new(
        contacts,
        &campaign.policy,
        campaign.caps.clone(),
        campaign.retry.policy(),
        campaign.effective_pacing(),
        start,
    );
    for i in 0..planner.len() {
        match history(&*store, planner.contact(i))? {
            Ok(h) => planner.load_history(i, to_attempts(&h, &campaign.id)),
            // A damaged history: the number is not dialled in this run, and the log says why.
            Err(why) => {
                let contact = planner.contact(i);
                let d = Evaluator::new(&campaign.policy).decide(contact, start);
                log.append(
                    start,
                    &Record::Decision(Box::new(decision_record(
                        contact,
                        &d,
                        DecisionInputs {
                            campaign: &campaign.id,
                            now: start,
                            history: Vec::new(),
                            opted_out: false,
                            refused: Some(why),
                            attempt: 0,
                        },
                    ))),
                )?;
                planner.cancel(i, None);
            }
        }
    }
    log.commit()?;
    let log = Arc::new(Mutex::new(log));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(event_loop(
        campaign,
        &store,
        &log,
        &mut planner,
        prepared,
        &opts,
    ));
    let mut log = log
        .lock()
        .map_err(|_| anyhow!("the audit log lock was poisoned"))?;
    let reason = match &result {
        Ok((r, _)) => r.clone(),
        Err(e) => format!("error: {e:#}"),
    };
    // Whatever happened, the log is flushed and checkpointed.
    crate::audit::stop(&mut log, &reason)?;
    let counters = result?.1;
    println!("stopped   {reason}");
    println!("summary   {} calls placed", counters.dialled);
    for (o, n) in &counters.by_outcome {
        println!("  {o:<34} {n:>6}");
    }
    println!(
        "audit     {} (verify: crieur audit verify {0}; replay: crieur audit replay {0})",
        crate::audit::dir_for(store_path, actx.dir.as_deref()).display()
    );
    if let Some(why) = &counters.trunk_end {
        eprintln!("trunk     {why}");
        if counters.trunk_refused > 0 {
            eprintln!(
                "          {} call(s) refused by the trunk before anything rang: no attempt used, dialled again on the next run",
                counters.trunk_refused
            );
        }
        return Ok(ExitCode::from(crate::call::EXIT_TRUNK_FAULT));
    }
    Ok(ExitCode::SUCCESS)
}

/// The trunk's health: its circuit breaker, and each contact's last uncounted trunk fault.
struct TrunkHealth {
    breaker: Breaker,
    /// Contact → the breaker's count of served calls at its last uncounted trunk fault.
    last_fault: HashMap<usize, u64>,
    /// Why dialling was stopped (an authentication fault).
    stopped: Option<String>,
    /// A contact the trunk refused is dialled again no sooner than this (the open period).
    retry_after: chrono::Duration,
    /// The code of the last trunk fault that changed the breaker (for the progress line).
    last_fault_code: &'static str,
}

impl TrunkHealth {
    /// Whether a fault that refused contact `i` before anything rang goes uncounted: yes,
    /// unless the same contact was refused before and the trunk has carried other calls since
    /// (then the refusal is about this number, not the trunk: it counts).
    fn uncounted(&mut self, i: usize, verdict: &CallVerdict) -> bool {
        let served = self.breaker.served();
        match verdict {
            CallVerdict::Fault(_) => self
                .last_fault
                .insert(i, served)
                .is_none_or(|then| served <= then),
            _ => {
                self.last_fault.remove(&i);
                true
            }
        }
    }

    /// The breaker's state in words, for the progress line and the end of the run.
    fn describe(&self) -> Option<String> {
        match self.breaker.state() {
            BreakerState::Closed => None,
            BreakerState::Open { until } => Some(format!(
                "trunk breaker open until {} ({} trunk faults in a row, last {})",
                until.to_rfc3339(),
                self.breaker.consecutive_faults(),
                self.last_fault_code
            )),
            BreakerState::HalfOpen => Some("trunk breaker half-open: one probe call".into()),
            BreakerState::Stopped => Some(format!(
                "dialling stopped: {}",
                self.stopped.as_deref().unwrap_or("trunk fault")
            )),
        }
    }
}

/// A breaker transition: into the audit log (committed with the loop's next commit) and on
/// stderr. An authentication fault also says what to do.
fn note_transition(
    campaign: &Campaign,
    log: &Arc<Mutex<AuditLog>>,
    health: &mut TrunkHealth,
    progress: &Progress,
    t: &Transition,
    call: Option<&str>,
) -> anyhow::Result<()> {
    lock(log)?.append(
        t.at,
        &Record::TrunkBreaker(crate::fault::breaker_record(&campaign.id, t, call)),
    )?;
    let why = match &t.cause {
        Cause::Fault(f) => {
            health.last_fault_code = f.kind.code();
            crate::fault::describe(f)
        }
        c => c.code().to_owned(),
    };
    let line = match t.to {
        BreakerState::Open { until } => format!(
            "breaker   OPEN: dialling paused until {} after {} trunk fault(s) in a row; last: {why}",
            until.to_rfc3339(),
            t.consecutive_faults
        ),
        BreakerState::HalfOpen => format!("breaker   half-open: one probe call ({why})"),
        BreakerState::Closed => format!("breaker   closed: dialling resumes ({why})"),
        BreakerState::Stopped => {
            health.stopped = Some(why.clone());
            format!(
                "breaker   STOPPED: {why}. Dialling stops until an operator fixes the trunk settings and runs again; no contact's attempt was used by this fault"
            )
        }
    };
    progress.warn(&line);
    Ok(())
}

/// A call in progress, by its task.
struct Placed {
    contact: usize,
    call: String,
    sent_at: DateTime<Utc>,
    number: String,
}

/// What the loop shares with call tasks.
struct Shared {
    uac: Arc<Uac>,
    trunk: Arc<crieur_media::uac::Trunk>,
    message: Arc<crieur_media::audio::Message>,
    confirmation: Arc<crieur_media::audio::Message>,
    hangup_all: CancellationToken,
}

/// Starting an INVITE this close to the end of its decision's validity is not done: the
/// INVITE must leave (a few ms after its record is durable) while the decision still holds.
const SEND_MARGIN_MS: i64 = 200;

async fn event_loop(
    campaign: &Campaign,
    store: &Arc<SledStore>,
    log: &Arc<Mutex<AuditLog>>,
    planner: &mut Planner<'_>,
    prepared: Prepared,
    opts: &RunOptions,
) -> anyhow::Result<(String, Counters)> {
    let Prepared {
        trunk,
        local,
        message,
        confirmation,
    } = prepared;
    let shared = Shared {
        uac: Arc::new(Uac::start(local, concat!("crieur/", env!("CARGO_PKG_VERSION"))).await?),
        trunk: Arc::new(trunk),
        message,
        confirmation,
        hangup_all: CancellationToken::new(),
    };
    let mut calls: JoinSet<Result<CallReport, String>> = JoinSet::new();
    let mut placed: HashMap<tokio::task::Id, Placed> = HashMap::new();
    let mut c = Counters::default();
    let breaker = campaign
        .trunk
        .as_ref()
        .map(|t| t.breaker)
        .unwrap_or_default();
    let mut health = TrunkHealth {
        breaker: Breaker::new(breaker),
        last_fault: HashMap::new(),
        stopped: None,
        retry_after: chrono::Duration::from_std(breaker.open_for)
            .unwrap_or(chrono::Duration::seconds(60)),
        last_fault_code: "",
    };
    let progress = Progress::new();
    let r = dial_loop(
        campaign,
        store,
        log,
        planner,
        opts,
        &shared,
        &mut calls,
        &mut placed,
        &mut c,
        &mut health,
        &progress,
    )
    .await;
    if r.is_err() {
        // An error stops dialling, not the calls in progress: hang them up cleanly (an
        // opt-out being recorded is finished first) and record how each ended.
        shared.hangup_all.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !calls.is_empty() {
            match tokio::time::timeout_at(deadline, calls.join_next_with_id()).await {
                Ok(Some(j)) => {
                    if let Some(f) = finished(j, &mut placed) {
                        let _ = finish(
                            campaign,
                            store,
                            log,
                            planner,
                            &mut c,
                            &mut health,
                            &progress,
                            f,
                        );
                    }
                }
                _ => break,
            }
        }
    }
    c.trunk_end = health.describe();
    // Let the BYEs of the last calls be retransmitted for a while before the stack stops.
    shared
        .uac
        .wait_background(crieur_media::uac::EXIT_GRACE)
        .await;
    r.map(|why| (why, c))
}

/// A joined call task → its result (a panicked task is a local error, not a lost call).
fn finished(
    j: Result<(tokio::task::Id, Result<CallReport, String>), tokio::task::JoinError>,
    placed: &mut HashMap<tokio::task::Id, Placed>,
) -> Option<Finished> {
    let (id, report) = match j {
        Ok((id, r)) => (id, r),
        Err(e) => (e.id(), Err(format!("call task failed: {e}"))),
    };
    let p = placed.remove(&id)?;
    Some(Finished {
        contact: p.contact,
        call: p.call,
        sent_at: p.sent_at,
        report,
    })
}

#[allow(clippy::too_many_arguments, clippy::too_many_lines)]
async fn dial_loop(
    campaign: &Campaign,
    store: &Arc<SledStore>,
    log: &Arc<Mutex<AuditLog>>,
    planner: &mut Planner<'_>,
    opts: &RunOptions,
    shared: &Shared,
    calls: &mut JoinSet<Result<CallReport, String>>,
    placed: &mut HashMap<tokio::task::Id, Placed>,
    c: &mut Counters,
    health: &mut TrunkHealth,
    progress: &Progress,
) -> anyhow::Result<String> {
    let mut signals = Signals::new()?;
    let mut stopping: Option<(String, tokio::time::Instant)> = None;
    let mut idle_note: Option<DateTime<Utc>> = None;
    let mut remaining = planner.len() as u64;
    let mut last_count: Option<tokio::time::Instant> = None;
    let mut eval = Evaluator::new(&campaign.policy);
    loop {
        let t = now();
        if stopping.is_none() {
            if let Some(u) = opts.until.filter(|u| t >= *u) {
                stopping = Some((
                    format!("--until {} reached", crate::output::rfc3339(u)),
                    tokio::time::Instant::now() + opts.drain,
                ));
            }
        }
        if let Some(tr) = health.breaker.poll(t) {
            note_transition(campaign, log, health, progress, &tr, None)?;
        }
        if stopping.is_none() {
            if let Some(why) = &health.stopped {
                stopping = Some((
                    format!("trunk fault, dialling stopped: {why}"),
                    tokio::time::Instant::now() + opts.drain,
                ));
            }
        }
        let permit = health.breaker.permit();
        if stopping.is_none() && !matches!(permit, Permit::None { .. }) {
            let mut orders = planner.tick(t);
            if permit == Permit::Probe && orders.len() > 1 {
                // Half-open: one probe call; the others stay due.
                for o in orders.split_off(1) {
                    planner.cancel(o.contact, Some(t));
                }
            }
            let skipped = std::mem::take(&mut planner.skipped);
            // Each order: re-checked at its own instant, recorded, leased, its INVITE
            // recorded; one commit for them all; then the calls leave.
            let mut ready = Vec::new();
            let mut failure = None;
            for o in orders {
                let contact = planner.contact(o.contact).clone();
                let number = contact.phone().to_string();
                if placed.values().any(|p| p.number == number) {
                    // The same number under another contact id is being called right now.
                    planner.cancel(o.contact, Some(now() + chrono::Duration::seconds(60)));
                    continue;
                }
                let (decided_at, valid_until) =
                    match recheck(campaign, store, &mut eval, &contact, log)? {
                        Ok(v) => v,
                        Err(retry_at) => {
                            planner.cancel(o.contact, retry_at);
                            continue;
                        }
                    };
                let sent_at = now();
                if valid_until - sent_at <= chrono::Duration::milliseconds(SEND_MARGIN_MS) {
                    planner.cancel(
                        o.contact,
                        Some(valid_until.max(sent_at) + chrono::Duration::seconds(1)),
                    );
                    continue;
                }
                match store.lease(&campaign.id, contact.id(), contact.phone(), sent_at) {
                    Ok(()) => {}
                    Err(crieur_store::Error::Leased { .. }) => {
                        // Another process is dialling it: not ours to call now.
                        planner.cancel(o.contact, Some(sent_at + chrono::Duration::seconds(60)));
                        continue;
                    }
                    Err(e) => {
                        // The store failed: place what is ready, then stop.
                        planner.cancel(o.contact, None);
                        failure = Some(anyhow::Error::from(e));
                        break;
                    }
                }
                let call = format!("{}-{}", contact.id(), sent_at.timestamp_micros());
                lock(log)?.append(
                    sent_at,
                    &Record::InviteSent(InviteSent {
                        call: call.clone(),
                        campaign: campaign.id.clone(),
                        contact: contact.id().to_string(),
                        number: number.clone(),
                        decided_at,
                        sent_at,
                        recheck: "dial".into(),
                        valid_until,
                    }),
                )?;
                ready.push((o.contact, contact, call, sent_at));
            }
            lock(log)?.commit()?;
            for (i, contact, call, sent_at) in ready {
                health.breaker.on_call_started();
                c.dialled += 1;
                c.recent.push_back(sent_at);
                let number = contact.phone().to_string();
                let handle =
                    calls.spawn(place(shared, campaign, store, log, contact, call.clone()));
                placed.insert(
                    handle.id(),
                    Placed {
                        contact: i,
                        call,
                        sent_at,
                        number,
                    },
                );
            }
            if let Some(e) = failure {
                return Err(e);
            }
            // The planner's skips, each with the inputs it had.
            for (i, note) in &skipped {
                let contact = planner.contact(*i);
                let d = eval.decide(contact, t);
                let opted_out = store.is_opted_out(contact.phone())?;
                let (h, damaged) = match history(&**store, contact)? {
                    Ok(h) => (h, None),
                    Err(why) => (Vec::new(), Some(why)),
                };
                let refused = damaged.or(match note {
                    SkipNote::Cap(hit) => Some(hit.into()),
                    SkipNote::Policy { .. } => None,
                });
                record_decision(log, contact, &d, &campaign.id, t, h, opted_out, refused, 0)?;
            }
        }
        // Calls that ended.
        while let Some(j) = calls.try_join_next_with_id() {
            if let Some(f) = finished(j, placed) {
                finish(campaign, store, log, planner, c, health, progress, f)?;
            }
        }
        lock(log)?.commit()?;
        let t = now();
        while c
            .recent
            .front()
            .is_some_and(|s| t - *s > chrono::Duration::seconds(10))
        {
            c.recent.pop_front();
        }
        let in_flight = calls.len() as u64;
        let next = planner.next_due();
        // Counting what remains is O(contacts): once a second is plenty for a display.
        if last_count.is_none_or(|l: tokio::time::Instant| l.elapsed() >= Duration::from_secs(1)) {
            remaining = planner.remaining() as u64;
            last_count = Some(tokio::time::Instant::now());
        }
        progress.show(
            c,
            remaining,
            in_flight,
            next.filter(|n| *n > t && in_flight == 0),
            health.describe().as_deref(),
        );
        // A contact not done is always queued (or in flight): an empty queue with nothing in
        // flight means every contact is done.
        if stopping.is_none() && in_flight == 0 && next.is_none() {
            return Ok("every contact is done".into());
        }
        if stopping.is_none() && in_flight == 0 {
            if let Some(n) = next.filter(|n| *n > t + chrono::Duration::seconds(1)) {
                if idle_note != Some(n) {
                    idle_note = Some(n);
                    progress.println(&format!(
                        "idle      no contact is dialable now; the next becomes due at {} (in {})",
                        crate::output::rfc3339(n),
                        crate::output::human_duration(n - t)
                    ));
                }
            }
            if let (Some(n), Some(max)) = (next, opts.max_idle) {
                if (n - t).to_std().unwrap_or_default() > max {
                    return Ok(format!(
                        "idle: the next contact is due at {}, beyond --max-idle-secs {}",
                        crate::output::rfc3339(n),
                        max.as_secs()
                    ));
                }
            }
        }
        if let Some((_, deadline)) = &stopping {
            if in_flight == 0 {
                return Ok(stopping.take().map(|s| s.0).unwrap_or_default());
            }
            if tokio::time::Instant::now() >= *deadline {
                shared.hangup_all.cancel();
            }
        }
        // Sleep until something can happen: the next due contact (or the next token), a
        // call ending, a signal.
        let blocked = matches!(health.breaker.permit(), Permit::None { .. });
        let wait = match (&stopping, next) {
            (Some(_), _) => Duration::from_millis(200),
            // The breaker holds dialling: look again soon (it half-opens on its timer).
            (None, _) if blocked => Duration::from_millis(200),
            (None, Some(n)) if n > t => (n - t)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(1)),
            _ => Duration::from_millis(100),
        };
        tokio::select! {
            Some(j) = calls.join_next_with_id(), if !calls.is_empty() => {
                if let Some(f) = finished(j, placed) {
                    finish(campaign, store, log, planner, c, health, progress, f)?;
                }
            }
            _ = tokio::time::sleep(wait.max(Duration::from_millis(20))) => {}
            s = signals.recv() => {
                match stopping {
                    None => {
                        progress.println(&format!(
                            "stopping  {s}: no new calls; {in_flight} in progress get up to {} s (again to hang up now)",
                            opts.drain.as_secs()
                        ));
                        stopping = Some((s.to_string(), tokio::time::Instant::now() + opts.drain));
                    }
                    Some(_) => {
                        progress.println("stopping  now: hanging up every call");
                        shared.hangup_all.cancel();
                        stopping = Some((format!("{s} (twice)"), tokio::time::Instant::now()));
                    }
                }
            }
        }
    }
}

/// One call, as a task: the opt-out hook makes the opt-out durable in the store and in the
/// audit log before the confirmation plays.
fn place(
    shared: &Shared,
    campaign: &Campaign,
    store: &Arc<SledStore>,
    log: &Arc<Mutex<AuditLog>>,
    contact: Contact,
    call: String,
) -> impl std::future::Future<Output = Result<CallReport, String>> + Send + 'static {
    let req = CallRequest {
        number: contact.phone().to_string(),
        message: shared.message.clone(),
        confirmation: shared.confirmation.clone(),
        opt_out_key: campaign.opt_out_key,
        not_interested_key: campaign.not_interested_key,
        keep_received_audio: false,
        stop: Some(shared.hangup_all.child_token()),
        lead_in: campaign.lead_in,
    };
    let (uac, trunk, store, log) = (
        shared.uac.clone(),
        shared.trunk.clone(),
        store.clone(),
        log.clone(),
    );
    async move {
        let phone = contact.phone().clone();
        uac.call(&trunk, req, move |digit, method| -> OptOutFuture {
            Box::pin(async move {
                let how = format!("key {digit} by {}", method.as_str());
                let at = now();
                tokio::task::spawn_blocking(move || {
                    store
                        .add_opt_out(&phone, at, &how)
                        .map_err(|e| e.to_string())?;
                    let mut log = log
                        .lock()
                        .map_err(|_| "audit log lock poisoned".to_owned())?;
                    log.append_durable(
                        at,
                        &Record::OptOutRecorded(OptOutRecorded {
                            call,
                            number: phone.to_string(),
                            at,
                        }),
                    )
                    .map(|_| ())
                    .map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())?
            })
        })
        .await
        // With its sources (the SIP stack's own error): the reason recorded.
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
    }
}

/// Appends a decision record with its inputs.
#[allow(clippy::too_many_arguments)]
fn record_decision(
    log: &Arc<Mutex<AuditLog>>,
    contact: &Contact,
    d: &Decision,
    campaign: &str,
    now: DateTime<Utc>,
    history: Vec<crieur_audit::record::PastAttempt>,
    opted_out: bool,
    refused: Option<crieur_audit::record::Reason>,
    attempt: u32,
) -> anyhow::Result<()> {
    lock(log)?.append(
        now,
        &Record::Decision(Box::new(decision_record(
            contact,
            d,
            DecisionInputs {
                campaign,
                now,
                history,
                opted_out,
                refused,
                attempt,
            },
        ))),
    )?;
    Ok(())
}

fn lock(log: &Arc<Mutex<AuditLog>>) -> anyhow::Result<std::sync::MutexGuard<'_, AuditLog>> {
    log.lock()
        .map_err(|_| anyhow!("the audit log lock was poisoned"))
}

/// The re-check's verdict: `Ok((decided at, valid until))` to dial, `Err(retry at)` not to
/// (none: never).
type Recheck = Result<(DateTime<Utc>, DateTime<Utc>), Option<DateTime<Utc>>>;

/// The re-check just before the INVITE, at its own instant: opt-out list, caps across every
/// campaign of the store (another process may have called meanwhile), this campaign's retry
/// rules, and the policy. Records the decision. `Ok((decided at, valid until))` to dial; `Err(retry_at)`
/// not to (none: never).
fn recheck(
    campaign: &Campaign,
    store: &Arc<SledStore>,
    eval: &mut Evaluator<'_>,
    contact: &Contact,
    log: &Arc<Mutex<AuditLog>>,
) -> anyhow::Result<Recheck> {
    let t = now();
    let Gate {
        history: h,
        opted_out,
        refused,
    } = gate(campaign, &**store, contact, t)?;
    let attempt = crate::call::attempt_number(&h, &campaign.id);
    let d = eval.decide(contact, t);
    let until = refused.as_ref().map(|(_, until)| *until);
    record_decision(
        log,
        contact,
        &d,
        &campaign.id,
        t,
        h,
        opted_out,
        refused.map(|(why, _)| why),
        attempt,
    )?;
    if let Some(until) = until {
        return Ok(Err(until));
    }
    Ok(match d {
        Decision::Dial(d) => Ok((t, d.valid_until)),
        Decision::Skip(s) => Err(s.next_eligible),
    })
}

/// A call ended: store, audit, planner, counters, the trunk's breaker.
#[allow(clippy::too_many_arguments)]
fn finish(
    campaign: &Campaign,
    store: &Arc<SledStore>,
    log: &Arc<Mutex<AuditLog>>,
    planner: &mut Planner<'_>,
    c: &mut Counters,
    health: &mut TrunkHealth,
    progress: &Progress,
    f: Finished,
) -> anyhow::Result<()> {
    let ended = now();
    let contact = planner.contact(f.contact).clone();
    let verdict = crate::fault::verdict(&f.report);
    let uncounted = health.uncounted(f.contact, &verdict);
    let outcome = match &f.report {
        Ok(r) => crate::fault::recorded_outcome(r, uncounted),
        Err(_) => "local-error".to_owned(),
    };
    store
        .finish_attempt(&campaign.id, contact.id(), contact.phone(), &outcome, ended)
        .with_context(|| format!("recording the outcome of {}", contact.id()))?;
    {
        let mut log = lock(log)?;
        match &f.report {
            Ok(r) => record_call(
                &mut log, &f.call, campaign, &contact, r, &outcome, f.sent_at, ended,
            )?,
            Err(e) => {
                tracing::warn!(contact = %contact.id(), error = %e, "call failed locally");
                log.append(
                    ended,
                    &Record::Outcome(OutcomeRecord {
                        call: f.call.clone(),
                        campaign: campaign.id.clone(),
                        contact: contact.id().to_string(),
                        number: contact.phone().to_string(),
                        started: f.sent_at,
                        ended,
                        outcome: outcome.clone(),
                    }),
                )?;
            }
        }
    }
    if let Ok(r) = &f.report {
        match r.ending.outcome {
            Outcome::AnsweredCompleted
            | Outcome::AnsweredNotInterested
            | Outcome::HungUpMidMessage => c.answered += 1,
            Outcome::AnsweredOptedOut => {
                c.answered += 1;
                c.opted_out += 1;
            }
            Outcome::OptOutFailed => {
                c.answered += 1;
                // The person asked: record it now, and say so loudly.
                let source = "opt-out key; recorded after the call";
                let ok = store.add_opt_out(contact.phone(), ended, source).is_ok();
                if ok {
                    lock(log)?.append(
                        ended,
                        &Record::OptOutListChange(crieur_audit::record::OptOutListChange {
                            action: "add".into(),
                            numbers: vec![contact.phone().to_string()],
                            source: source.into(),
                            at: ended,
                        }),
                    )?;
                }
                eprintln!(
                    "ALERT: {} pressed the opt-out key but it could not be recorded during the call; {}",
                    contact.phone(),
                    if ok { "it is now recorded" } else { "it is STILL NOT recorded: add it with `crieur optout add`" }
                );
                if ok {
                    c.opted_out += 1;
                }
            }
            Outcome::Busy | Outcome::NoAnswer => {}
            _ => c.failed += 1,
        }
    } else {
        c.failed += 1;
    }
    *c.by_outcome.entry(outcome.clone()).or_default() += 1;
    let scheduled = AttemptOutcome::from_record(&outcome);
    if scheduled == AttemptOutcome::TrunkFault {
        c.trunk_refused += 1;
    }
    planner.report(f.contact, ended, scheduled);
    if scheduled == AttemptOutcome::TrunkFault {
        // Not at once: the trunk gets the breaker's open period to recover (an open breaker
        // holds it longer; the contact is among the first due when dialling resumes).
        planner.reschedule(f.contact, ended + health.retry_after);
    }
    if let Some(tr) = health.breaker.on_call_ended(ended, verdict) {
        note_transition(campaign, log, health, progress, &tr, Some(&f.call))?;
    }
    Ok(())
}

/// SIGINT and SIGTERM, each one stream registered for the whole run: a signal that arrives
/// while the loop is busy is kept for its next wait, never missed (a fresh `ctrl_c()` per
/// wait would miss it).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// A progress line on a terminal (indicatif), plain log lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_plain: Mutex<Option<std::time::Instant>>,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(250));
            b
        });
        Progress {
            bar,
            last_plain: Mutex::new(None),
        }
    }

    fn line(
        c: &Counters,
        remaining: u64,
        in_flight: u64,
        idle_until: Option<DateTime<Utc>>,
        trunk: Option<&str>,
    ) -> String {
        let cps = c.recent.len() as f64 / 10.0;
        let mut s = format!(
            "dialled {} · answered {} · opted out {} · failed {} · remaining {} · {:.1} calls/s · {} in progress",
            c.dialled, c.answered, c.opted_out, c.failed, remaining, cps, in_flight
        );
        if c.trunk_refused > 0 {
            s.push_str(&format!(" · {} refused by the trunk", c.trunk_refused));
        }
        if let Some(n) = idle_until {
            s.push_str(&format!(" · idle until {}", crate::output::rfc3339(n)));
        }
        if let Some(t) = trunk {
            s.push_str(&format!(" · {t}"));
        }
        s
    }

    fn show(
        &self,
        c: &Counters,
        remaining: u64,
        in_flight: u64,
        idle_until: Option<DateTime<Utc>>,
        trunk: Option<&str>,
    ) {
        let line = Self::line(c, remaining, in_flight, idle_until, trunk);
        match &self.bar {
            Some(b) => b.set_message(line),
            None => {
                let Ok(mut last) = self.last_plain.lock() else {
                    return;
                };
                #[allow(clippy::disallowed_methods)]
                let t = std::time::Instant::now();
                if last.is_none_or(|l| t.duration_since(l) >= Duration::from_secs(10)) {
                    *last = Some(t);
                    println!("progress  {line}");
                }
            }
        }
    }

    fn println(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => println!("{s}"),
        }
    }

    /// A line the operator must see: on stderr (above the progress line on a terminal).
    fn warn(&self, s: &str) {
        match &self.bar {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use crieur_engine::{BreakerConfig, FaultKind, TrunkFault};

    use super::*;

    fn fault() -> CallVerdict {
        CallVerdict::Fault(TrunkFault {
            kind: FaultKind::ServerError,
            sip_status: Some(503),
            detail: String::new(),
        })
    }

    /// A contact refused again while the trunk carried nothing else stays free (the trunk is
    /// down); refused again after the trunk served other calls, it counts (it is this number).
    #[test]
    fn a_repeated_refusal_counts_only_once_the_trunk_served_others_meanwhile() {
        let mut h = TrunkHealth {
            breaker: Breaker::new(BreakerConfig::default()),
            last_fault: HashMap::new(),
            stopped: None,
            retry_after: chrono::Duration::seconds(60),
            last_fault_code: "",
        };
        let t = now();
        assert!(h.uncounted(0, &fault()));
        h.breaker.on_call_ended(t, fault());
        assert!(h.uncounted(1, &fault()));
        h.breaker.on_call_ended(t, fault());
        assert!(
            h.uncounted(0, &fault()),
            "nothing served between: the trunk is down"
        );
        h.breaker.on_call_ended(t, fault());
        assert!(h.uncounted(2, &CallVerdict::Served));
        h.breaker.on_call_ended(t, CallVerdict::Served);
        assert!(
            !h.uncounted(0, &fault()),
            "served meanwhile: this number's own failure"
        );
        assert!(
            h.uncounted(0, &fault()),
            "nothing served since its last refusal"
        );
        assert!(!h.uncounted(1, &fault()));
        assert!(h.uncounted(1, &CallVerdict::Served));
        assert!(
            h.uncounted(1, &fault()),
            "its last call went through: a fresh refusal"
        );
    }
}
