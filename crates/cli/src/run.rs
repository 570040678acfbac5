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
use crieur_audit::record::OptOutRecorded;
use crieur_audit::{AuditLog, Record};
use crieur_dial::core::{Core, Output};
use crieur_dial::protocol::{
    finish_call, history, lease_and_record_invite, recheck, record_late_opt_out, record_skip,
    to_attempts, CallRef, Rechecked,
};
use crieur_engine::{AttemptOutcome, BreakerState, Cause, Planner, Transition};
use crieur_media::call::Outcome;
use crieur_media::uac::{CallReport, CallRequest, OptOutFuture, Uac};
use crieur_scheduler::{Contact, Decision, Evaluator};
use crieur_store::{SledStore, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::call::{prepare, rules, Prepared};
use crate::campaign::Campaign;

/// Which contacts a run dials.
pub enum Scope {
    /// Every contact of the campaign, until each is done (`crieur run`).
    Campaign,
    /// One contact, once — what the re-check at the INVITE instant allows now — then the run
    /// waits for its call to end (`crieur call`). Its caps and retry rules are the re-check's
    /// to apply (the planner is given no history: there is nothing to schedule).
    One(Box<Contact>),
}

/// Options of `crieur run` (and `crieur call`: a run of one contact).
pub struct RunOptions {
    /// On the first SIGINT/SIGTERM, calls in progress get this long before they are hung up.
    pub drain: Duration,
    /// Stop placing calls at this instant (then drain and exit).
    pub until: Option<DateTime<Utc>>,
    /// Stop when nothing is in flight and the next contact is due further away than this
    /// (none: wait, however long).
    pub max_idle: Option<Duration>,
    pub scope: Scope,
}

/// A call that ended, kept for a one-contact run's report.
pub struct Done {
    /// The re-check that let it go.
    pub decision: Decision,
    pub report: Result<CallReport, String>,
    /// As recorded (store and log).
    pub outcome: String,
    /// The opt-out key was pressed but could not be recorded during the call: whether it is
    /// recorded now.
    pub late_opt_out: Option<bool>,
}

/// A contact not dialled, kept for a one-contact run's report: the decision as recorded.
pub struct Refusal {
    pub at: DateTime<Utc>,
    pub decision: Decision,
    /// Why the opt-out list, the history, a cap or the retry rules refused it first.
    pub refused: Option<crieur_audit::record::Reason>,
}

/// A call task's result.
struct Finished {
    contact: usize,
    call: String,
    sent_at: DateTime<Utc>,
    decision: Decision,
    report: Result<CallReport, String>,
}

#[derive(Default)]
pub struct Counters {
    /// Keep every call's report and every refusal (a one-contact run).
    keep: bool,
    pub calls: Vec<Done>,
    pub refusals: Vec<Refusal>,
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
    let (reason, counters) = drive(campaign, campaign_path, store, store_path, actx, opts)?;
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

/// The run itself: its header, crash recovery, the planner and the core, the event loop, its
/// stop record. Returns why it stopped and what it did.
pub fn drive(
    campaign: &Campaign,
    campaign_path: &Path,
    store: Arc<SledStore>,
    store_path: &Path,
    actx: &crate::audit::Ctx,
    opts: RunOptions,
) -> anyhow::Result<(String, Counters)> {
    let one = matches!(opts.scope, Scope::One(_));
    let mut log = actx.open(store_path, Some(campaign))?;
    let start = now();
    log.append(
        start,
        &crate::audit::header(
            if one { "call" } else { "run" },
            Some((campaign, campaign_path)),
        )?,
    )?;
    crate::call::recover(
        &store,
        &mut log,
        &crate::audit::dir_for(store_path, actx.dir.as_deref()),
        start,
    )?;
    let contacts = match &opts.scope {
        Scope::Campaign => store.contacts(&campaign.id)?,
        Scope::One(c) => vec![(**c).clone()],
    };
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
    let mut c = Counters {
        keep: one,
        ..Counters::default()
    };
    for i in (0..planner.len()).filter(|_| !one) {
        match history(&*store, planner.contact(i))? {
            Ok(h) => planner.load_history(i, to_attempts(&h, &campaign.id)),
            // A damaged history: the number is not dialled in this run, and the log says why.
            Err(_) => {
                let (d, why) = record_skip(
                    &rules(campaign),
                    &*store,
                    &mut Evaluator::new(&campaign.policy),
                    planner.contact(i),
                    &mut log,
                    start,
                    None,
                )?;
                c.keep_refusal(start, &d, why.as_ref());
                planner.cancel(i, None);
            }
        }
    }
    log.commit()?;
    let log = Arc::new(Mutex::new(log));
    let breaker = campaign
        .trunk
        .as_ref()
        .map(|t| t.breaker)
        .unwrap_or_default();
    let mut core = Core::new(planner, breaker);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(event_loop(
        campaign, &store, &log, &mut core, prepared, &opts, c,
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
    result
}

/// A breaker transition: into the audit log (committed with the loop's next commit) and on
/// stderr. An authentication fault also says what to do.
fn note_transition(
    campaign: &Campaign,
    log: &Arc<Mutex<AuditLog>>,
    progress: &Progress,
    t: &Transition,
    call: Option<&str>,
) -> anyhow::Result<()> {
    lock(log)?.append(
        t.at,
        &Record::TrunkBreaker(crate::fault::breaker_record(&campaign.id, t, call)),
    )?;
    let why = match &t.cause {
        Cause::Fault(f) => crate::fault::describe(f),
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
    decision: Decision,
}

/// What the loop shares with call tasks.
struct Shared {
    uac: Arc<Uac>,
    trunk: Arc<crieur_media::uac::Trunk>,
    message: Arc<crieur_media::audio::Message>,
    confirmation: Arc<crieur_media::audio::Message>,
    amd: Option<crieur_media::uac::AmdRequest>,
    hangup_all: CancellationToken,
}

/// Starting an INVITE this close to the end of its decision's validity is not done: the
/// INVITE must leave (a few ms after its record is durable) while the decision still holds.
const SEND_MARGIN_MS: i64 = 200;

/// The longest the loop sleeps when nothing is due sooner (wall-clock steps are followed
/// within this).
const MAX_SLEEP: Duration = Duration::from_secs(60);

async fn event_loop(
    campaign: &Campaign,
    store: &Arc<SledStore>,
    log: &Arc<Mutex<AuditLog>>,
    core: &mut Core<'_>,
    prepared: Prepared,
    opts: &RunOptions,
    mut c: Counters,
) -> anyhow::Result<(String, Counters)> {
    let Prepared {
        trunk,
        local,
        message,
        confirmation,
        amd,
    } = prepared;
    let shared = Shared {
        uac: Arc::new(Uac::start(local, concat!("crieur/", env!("CARGO_PKG_VERSION"))).await?),
        trunk: Arc::new(trunk),
        message,
        confirmation,
        amd,
        hangup_all: CancellationToken::new(),
    };
    let mut calls: JoinSet<Result<CallReport, String>> = JoinSet::new();
    let mut placed: HashMap<tokio::task::Id, Placed> = HashMap::new();
    let progress = Progress::new(c.keep);
    let r = dial_loop(
        campaign,
        store,
        log,
        core,
        opts,
        &shared,
        &mut calls,
        &mut placed,
        &mut c,
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
                        let _ = finish(campaign, store, log, core, &mut c, &progress, f);
                    }
                }
                _ => break,
            }
        }
    }
    c.trunk_end = core.health().describe();
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
        decision: p.decision,
        report,
    })
}

#[allow(clippy::too_many_arguments, clippy::too_many_lines)]
async fn dial_loop(
    campaign: &Campaign,
    store: &Arc<SledStore>,
    log: &Arc<Mutex<AuditLog>>,
    core: &mut Core<'_>,
    opts: &RunOptions,
    shared: &Shared,
    calls: &mut JoinSet<Result<CallReport, String>>,
    placed: &mut HashMap<tokio::task::Id, Placed>,
    c: &mut Counters,
    progress: &Progress,
) -> anyhow::Result<String> {
    let mut signals = Signals::new()?;
    let mut stopping: Option<(String, tokio::time::Instant)> = None;
    let mut idle_note: Option<DateTime<Utc>> = None;
    let mut remaining = core.planner().len() as u64;
    let mut last_count: Option<tokio::time::Instant> = None;
    let mut eval = Evaluator::new(&campaign.policy);
    let dial = rules(campaign);
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
        if stopping.is_none() {
            if let Some(why) = &core.health().stopped {
                stopping = Some((
                    format!("trunk fault, dialling stopped: {why}"),
                    tokio::time::Instant::now() + opts.drain,
                ));
            }
        }
        if stopping.is_some() {
            core.stop();
        }
        core.handle_timeout(t);
        // What the core asks: each dial re-checked at its own instant, recorded, leased, its
        // INVITE recorded; one commit for them all; then the calls leave.
        let mut ready = Vec::new();
        let mut failure = None;
        while let Some(out) = core.poll_output() {
            match out {
                Output::Breaker { transition, call } => {
                    note_transition(campaign, log, progress, &transition, call.as_deref())?;
                }
                Output::Skip { contact: i, note } => {
                    // The planner's skip, with the inputs it had.
                    let (d, why) = record_skip(
                        &dial,
                        &**store,
                        &mut eval,
                        core.contact(i),
                        &mut *lock(log)?,
                        t,
                        Some(&note),
                    )?;
                    c.keep_refusal(t, &d, why.as_ref());
                }
                Output::Dial { contact: i, .. } if failure.is_some() => core.not_dialled(i, None),
                Output::Dial { contact: i, .. } => {
                    let contact = core.contact(i).clone();
                    let (checked, dialled) = dial_one(store, log, &dial, &mut eval, &contact)?;
                    match dialled {
                        Ok((call, sent_at)) => {
                            core.dialled(i);
                            ready.push((i, contact, call, sent_at, checked.decision));
                        }
                        Err(Ok(retry_at)) => {
                            let why = checked.refused.as_ref().map(|(why, _)| why);
                            c.keep_refusal(checked.at, &checked.decision, why);
                            core.not_dialled(i, retry_at);
                        }
                        Err(Err(e)) => {
                            // The store failed: place what is ready, then stop.
                            core.not_dialled(i, None);
                            failure = Some(e);
                        }
                    }
                }
            }
        }
        lock(log)?.commit()?;
        if !ready.is_empty() {
            test_pause("after-lease");
        }
        for (i, contact, call, sent_at, decision) in ready {
            c.dialled += 1;
            c.recent.push_back(sent_at);
            let handle = calls.spawn(place(shared, campaign, store, log, contact, call.clone()));
            placed.insert(
                handle.id(),
                Placed {
                    contact: i,
                    call,
                    sent_at,
                    decision,
                },
            );
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if c.keep && stopping.is_none() {
            // One contact, once: whatever this pass did not dial is not dialled.
            core.stop();
            stopping = Some(("call done".into(), tokio::time::Instant::now() + opts.drain));
        }
        // Calls that ended.
        while let Some(j) = calls.try_join_next_with_id() {
            if let Some(f) = finished(j, placed) {
                finish(campaign, store, log, core, c, progress, f)?;
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
        let next = core.planner().next_due();
        // Counting what remains is O(contacts): once a second is plenty for a display.
        if last_count.is_none_or(|l: tokio::time::Instant| l.elapsed() >= Duration::from_secs(1)) {
            remaining = core.planner().remaining() as u64;
            last_count = Some(tokio::time::Instant::now());
        }
        progress.show(
            c,
            remaining,
            in_flight,
            next.filter(|n| *n > t && in_flight == 0),
            core.health().describe().as_deref(),
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
        // Sleep until something is due: the planner's next contact or pacing token, the
        // breaker's timer, `--until`, the drain deadline; a call ending or a signal wakes the
        // loop too. Nothing polls: an idle campaign wakes only then (at least every
        // MAX_SLEEP, to follow the wall clock if it is stepped).
        let wait = match &stopping {
            Some((_, deadline)) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                // Past the deadline the calls are being hung up: look again soon.
                if left.is_zero() {
                    Duration::from_millis(200)
                } else {
                    left
                }
            }
            None => [core.poll_timeout(), opts.until]
                .into_iter()
                .flatten()
                .min()
                .map_or(MAX_SLEEP, |at| (at - t).to_std().unwrap_or_default()),
        }
        .min(MAX_SLEEP);
        tokio::select! {
            Some(j) = calls.join_next_with_id(), if !calls.is_empty() => {
                if let Some(f) = finished(j, placed) {
                    finish(campaign, store, log, core, c, progress, f)?;
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

/// What became of one dial order (after its re-check): `Ok((call, sent_at))` to place it
/// (leased, its INVITE recorded); `Err(Ok(retry_at))` not placed, back at `retry_at` (never:
/// `None`); `Err(Err(e))` the store failed.
type Dialled = Result<(String, DateTime<Utc>), Result<Option<DateTime<Utc>>, anyhow::Error>>;

/// One dial order at the INVITE instant: re-checked and recorded, then — with 200 ms of the
/// decision's validity left — leased and its INVITE recorded (durable with the tick's
/// commit, before the INVITE leaves).
fn dial_one(
    store: &Arc<SledStore>,
    log: &Arc<Mutex<AuditLog>>,
    dial: &crieur_dial::DialRules,
    eval: &mut Evaluator<'_>,
    contact: &Contact,
) -> anyhow::Result<(Rechecked, Dialled)> {
    let decided_at = now();
    let checked = recheck(dial, &**store, eval, contact, &mut *lock(log)?, decided_at)?;
    let valid_until = match checked.verdict() {
        Ok(v) => v,
        Err(retry_at) => return Ok((checked, Err(Ok(retry_at)))),
    };
    let sent_at = crieur_dial::to_micros(now());
    if valid_until - sent_at <= chrono::Duration::milliseconds(SEND_MARGIN_MS) {
        let retry_at = valid_until.max(sent_at) + chrono::Duration::seconds(1);
        return Ok((checked, Err(Ok(Some(retry_at)))));
    }
    let dialled = match lease_and_record_invite(
        &**store,
        &mut *lock(log)?,
        dial,
        contact,
        decided_at,
        valid_until,
        sent_at,
        false,
        || test_pause("after-lease-before-record"),
    ) {
        Ok(call) => Ok((call, sent_at)),
        // Another process is dialling it: not ours to call now.
        Err(crieur_dial::Error::Store(crieur_store::Error::Leased { .. })) => {
            Err(Ok(Some(sent_at + chrono::Duration::seconds(60))))
        }
        Err(crieur_dial::Error::Store(e)) => Err(Err(e.into())),
        Err(e) => return Err(e.into()),
    };
    Ok((checked, dialled))
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
        amd: shared.amd.clone(),
    };
    let (uac, trunk, store, log) = (
        shared.uac.clone(),
        shared.trunk.clone(),
        store.clone(),
        log.clone(),
    );
    async move {
        let phone = contact.phone().clone();
        let report = uac
            .call(&trunk, req, move |digit, method| -> OptOutFuture {
                Box::pin(async move {
                    let how = format!("key {digit} by {}", method.as_str());
                    let at = now();
                    tokio::task::spawn_blocking(move || {
                        store
                            .add_opt_out(&phone, at, &how)
                            .map_err(|e| e.to_string())?;
                        test_pause("after-opt-out");
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
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)));
        if pausing_at("after-call") {
            // The crash test's point: the call over, its BYE's transaction done, nothing of
            // its end recorded yet.
            uac.wait_background(crieur_media::uac::EXIT_GRACE).await;
            test_pause("after-call");
        }
        report
    }
}

fn lock(log: &Arc<Mutex<AuditLog>>) -> anyhow::Result<std::sync::MutexGuard<'_, AuditLog>> {
    log.lock()
        .map_err(|_| anyhow!("the audit log lock was poisoned"))
}

/// A call ended: store, audit, planner, counters, the trunk's breaker.
#[allow(clippy::too_many_arguments)]
fn finish(
    campaign: &Campaign,
    store: &Arc<SledStore>,
    log: &Arc<Mutex<AuditLog>>,
    core: &mut Core<'_>,
    c: &mut Counters,
    progress: &Progress,
    f: Finished,
) -> anyhow::Result<()> {
    let ended = crieur_dial::to_micros(now());
    let contact = core.contact(f.contact).clone();
    let verdict = crate::fault::verdict(&f.report);
    let uncounted = core.uncounted(f.contact, &verdict);
    let outcome = match &f.report {
        Ok(r) => crate::fault::recorded_outcome(r, uncounted),
        Err(_) => "local-error".to_owned(),
    };
    if let Err(e) = &f.report {
        tracing::warn!(contact = %contact.id(), error = %e, "call failed locally");
    }
    let call = CallRef {
        call: &f.call,
        campaign: &campaign.id,
        contact: &contact,
        sent_at: f.sent_at,
        ended,
    };
    finish_call(
        &**store,
        &mut *lock(log)?,
        &call,
        f.report.as_ref().map_err(String::as_str),
        &outcome,
        now(),
        || test_pause("after-attempt"),
    )
    .with_context(|| format!("recording the outcome of {}", contact.id()))?;
    let mut late_opt_out = None;
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
                let ok = record_late_opt_out(&**store, &mut *lock(log)?, contact.phone(), now())?;
                late_opt_out = Some(ok);
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
    if let Some(tr) = core.call_ended(f.contact, ended, scheduled, verdict) {
        note_transition(campaign, log, progress, &tr, Some(&f.call))?;
    }
    if c.keep {
        c.calls.push(Done {
            decision: f.decision,
            report: f.report,
            outcome,
            late_opt_out,
        });
    }
    Ok(())
}

impl Counters {
    /// A contact not dialled, for a one-contact run's report.
    fn keep_refusal(
        &mut self,
        at: DateTime<Utc>,
        decision: &Decision,
        refused: Option<&crieur_audit::record::Reason>,
    ) {
        if self.keep {
            self.refusals.push(Refusal {
                at,
                decision: decision.clone(),
                refused: refused.cloned(),
            });
        }
    }
}

/// Whether the crash tests asked to stop at `point`.
fn pausing_at(point: &str) -> bool {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    AT.get_or_init(|| std::env::var("CRIEUR_TEST_PAUSE_AT").ok())
        .as_deref()
        == Some(point)
}

/// Test hook: with `CRIEUR_TEST_PAUSE_AT=<point>`, stop at that point for 30 s so the crash
/// tests can SIGKILL the process exactly there. Pausing weakens nothing.
fn test_pause(point: &str) {
    if pausing_at(point) {
        println!("paused    at {point}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::thread::sleep(std::time::Duration::from_secs(30));
    }
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
    /// No progress line (a one-contact run reports its call itself).
    quiet: bool,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let bar = (!quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(250));
            b
        });
        Progress {
            bar,
            last_plain: Mutex::new(None),
            quiet,
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
        if self.quiet {
            return;
        }
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
