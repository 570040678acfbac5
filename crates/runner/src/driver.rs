//! The run's event loop on tokio: the core's outputs carried out (re-check, lease, records,
//! the tick's commit, then the INVITEs), calls as tasks on one shared `Uac`, their ends
//! recorded, control orders, events.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_audit::record::{OptOutRecorded, Reason};
use crieur_audit::{AuditLog, Record};
use crieur_config::campaign::Campaign;
use crieur_dial::core::{Core, Output};
use crieur_dial::protocol::{
    finish_call, history, lease_and_record_invite, recheck, record_late_opt_out, record_skip,
    to_attempts, CallRef, Rechecked,
};
use crieur_engine::{AttemptOutcome, Planner, Transition};
use crieur_media::call::Outcome;
use crieur_media::uac::{CallReport, CallRequest, OptOutFuture, Uac};
use crieur_scheduler::{Contact, Decision, Evaluator};
use crieur_store::{Claim, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::control::{Control, ControlReceiver, Counters, Event};
use crate::prepare::{rules, Prepared};
use crate::{now, Error, Result};

/// Which contacts a run dials.
pub enum Scope {
    /// Every contact of the campaign, until each is done (`crieur run`).
    Campaign,
    /// One contact, once — what the re-check at the INVITE instant allows now — then the run
    /// waits for its call to end (`crieur call`). Its caps and retry rules are the re-check's
    /// to apply (the planner is given no history: there is nothing to schedule).
    One(Box<Contact>),
}

/// How a run runs.
pub struct RunOptions {
    /// On a stop (the first SIGINT/SIGTERM), calls in progress get this long before they are
    /// hung up.
    pub drain: Duration,
    /// Stop placing calls at this instant (then drain and return).
    pub until: Option<DateTime<Utc>>,
    /// Stop when nothing is in flight and the next contact is due further away than this
    /// (none: wait, however long).
    pub max_idle: Option<Duration>,
    pub scope: Scope,
    /// On a store several nodes share: how long after its last renewal a node is presumed
    /// dead — its claims on due contacts lapse (renewed every 10 s while it lives) and its
    /// leases are recovered by the others as interrupted attempts. Must be longer than any
    /// call (a lease lasts its whole call). [`NODE_TIMEOUT`] by default.
    pub node_timeout: Duration,
}

/// The default [`RunOptions::node_timeout`]: ten minutes.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(600);

/// What a run works on. The caller opens the store and the log (the log's options — its
/// signing key, checkpoint cadence — are the caller's) and builds the header
/// ([`crate::header::header`]).
pub struct Setup {
    pub campaign: Arc<Campaign>,
    /// The run's first record.
    pub header: Record,
    pub store: Arc<dyn Store + Send + Sync>,
    pub log: AuditLog,
    /// The log's directory: read back for crash recovery.
    pub audit_dir: PathBuf,
    /// What places the calls.
    pub prepared: Prepared,
}

/// A call that ended, kept for a one-contact run's report.
pub struct Done {
    /// The re-check that let it go.
    pub decision: Decision,
    pub report: std::result::Result<CallReport, String>,
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
    pub refused: Option<Reason>,
}

/// How a run ended.
pub struct Summary {
    /// Why it stopped (also in its stop record).
    pub reason: String,
    pub counters: Counters,
    /// The trunk's breaker when the run ended, if it was not closed: why.
    pub trunk_end: Option<String>,
    /// A one-contact run: its call, if placed, and its refusals.
    pub calls: Vec<Done>,
    pub refusals: Vec<Refusal>,
}

/// A call task's result.
struct Finished {
    contact: usize,
    call: String,
    sent_at: DateTime<Utc>,
    decision: Decision,
    report: std::result::Result<CallReport, String>,
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

/// The run's state the loop, its events and its report share.
struct State<'o> {
    control: ControlReceiver,
    /// The control channel is open (some handle is alive).
    listening: bool,
    observer: &'o mut (dyn FnMut(&Event) + Send),
    counters: Counters,
    /// When each of the last 10 s's calls was placed.
    recent: VecDeque<DateTime<Utc>>,
    /// Keep every call's report and every refusal (a one-contact run).
    keep: bool,
    calls: Vec<Done>,
    refusals: Vec<Refusal>,
    /// A campaign run's feed from the store's due index (none for one contact).
    feed: Option<DueFeed>,
}

/// How far ahead a campaign run takes contacts from the store's due index.
fn horizon() -> chrono::Duration {
    chrono::Duration::minutes(10)
}

/// How often a campaign run refills from the due index, writes back what it settled and
/// recovers the leases of dead nodes.
fn refill_every() -> chrono::Duration {
    chrono::Duration::seconds(10)
}

/// The most contacts a run holds at once (due before the horizon, or in a call).
const MAX_HELD: usize = 100_000;

/// A campaign run's window on the store's due index: the planner holds only what is due
/// before the horizon (and the calls in progress); what it settles goes back to the store.
struct DueFeed {
    node: crieur_dial::Node,
    /// Contacts taken per refill: what this node can dial until the next one (twice over),
    /// so that nodes share the due contacts instead of the first taking them all.
    per_refill: usize,
    /// The contacts the planner holds.
    held: std::collections::HashSet<String>,
    next_refill: DateTime<Utc>,
    /// The store's earliest due instant, as of the last refill.
    store_next: Option<DateTime<Utc>>,
    /// Remaining contacts, as the store counts them at the last refill.
    remaining: u64,
}

impl DueFeed {
    /// Writes back what the core settled, recovers the expired leases of other nodes, takes
    /// in what is due before the horizon (renewing this node's claims on what it holds).
    #[allow(clippy::too_many_arguments)]
    fn refill(
        &mut self,
        campaign: &Campaign,
        store: &Arc<dyn Store + Send + Sync>,
        core: &mut Core<'_>,
        log: &mut AuditLog,
        eval: &mut Evaluator<'_>,
        dial: &crieur_dial::DialRules,
        st: &mut State<'_>,
        t: DateTime<Utc>,
    ) -> Result<()> {
        let settled = core.settle(t + horizon());
        if !settled.is_empty() {
            for (id, _) in &settled {
                self.held.remove(id.as_str());
            }
            store.set_due(&campaign.id, &settled)?;
        }
        for r in crieur_dial::recover_expired(&**store, log, t, &self.node)? {
            st.emit(Event::Recovered(r.to_string()));
        }
        // The campaign's pacing (and the trunk's) is shared among the nodes seen within
        // the last three refills: each takes its share.
        let live = store.node_alive(&campaign.id, &self.node.id, t, t - refill_every() * 3)?;
        core.set_pacing(share(campaign.effective_pacing(), live));
        let claim = Claim {
            node: &self.node.id,
            until: t + horizon(),
            now: t,
            hold_until: t + self.node.lease_timeout,
            limit: (self.held.len() + self.per_refill).min(MAX_HELD),
        };
        for d in store.claim_due(&campaign.id, &claim)? {
            if self.held.contains(d.id.as_str()) {
                continue;
            }
            let Some(contact) = store.contact(&campaign.id, &d.id)? else {
                store.set_due(&campaign.id, &[(d.id, None)])?;
                continue;
            };
            match history(&**store, &contact)? {
                Ok(h) => {
                    self.held.insert(d.id.as_str().to_owned());
                    core.admit(contact, to_attempts(&h, &campaign.id), d.due);
                }
                // A damaged history: not dialled now, the log says why; looked at again in
                // an hour.
                Err(_) => {
                    let (dec, why) = record_skip(dial, &**store, eval, &contact, log, t, None)?;
                    st.decided(&contact, t, &dec, why.as_ref(), false);
                    let later = t + chrono::Duration::hours(1);
                    store.set_due(&campaign.id, &[(d.id, Some(later))])?;
                }
            }
        }
        self.store_next = store.next_due(&campaign.id)?;
        self.remaining = store.progress(&campaign.id)?.remaining;
        // With nothing held, nothing needs writing back soon: look again less often (an
        // idle campaign barely wakes).
        let soon = |n: &DateTime<Utc>| *n <= t + horizon();
        self.next_refill = t + match (core.planner().next_due(), self.store_next) {
            (Some(_), _) => refill_every(),
            // Due soon but held by other nodes: their claims may lapse.
            (None, Some(n)) if soon(&n) => refill_every(),
            _ => chrono::Duration::seconds(60),
        };
        Ok(())
    }

    /// At the end of the run: everything the planner holds and is not in a call goes back
    /// to the store with its next due instant (a restart re-evaluates nothing early).
    fn write_back(
        &mut self,
        campaign: &Campaign,
        store: &dyn Store,
        core: &mut Core<'_>,
    ) -> Result<()> {
        let all = core.settle(DateTime::<Utc>::MIN_UTC);
        for (id, _) in &all {
            self.held.remove(id.as_str());
        }
        store.set_due(&campaign.id, &all)?;
        Ok(())
    }
}

/// One node's share of a campaign's pacing among `nodes`: the rate divided, the concurrent
/// calls divided (rounded down, at least one each).
fn share(p: crieur_engine::Pacing, nodes: u32) -> crieur_engine::Pacing {
    let n = nodes.max(1);
    crieur_engine::Pacing {
        calls_per_second: p.calls_per_second / f64::from(n),
        max_concurrent: (p.max_concurrent / n).max(1),
    }
}

/// Runs `f` with the state's due feed, if any.
fn with_feed<T>(
    st: &mut State<'_>,
    f: impl FnOnce(&mut DueFeed, &mut State<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let Some(mut feed) = st.feed.take() else {
        return Ok(None);
    };
    let r = f(&mut feed, st);
    st.feed = Some(feed);
    r.map(Some)
}

impl State<'_> {
    fn emit(&mut self, e: Event) {
        (self.observer)(&e);
        // No subscriber is not an error.
        let _ = self.control.events.send(e);
    }

    fn publish(&mut self) {
        let c = self.counters.clone();
        self.control.counters.send_replace(c.clone());
        self.emit(Event::Progress(c));
    }

    /// A decision recorded: an event, and kept for a one-contact run's report when it refused.
    fn decided(
        &mut self,
        contact: &Contact,
        at: DateTime<Utc>,
        decision: &Decision,
        refused: Option<&Reason>,
        dialled: bool,
    ) {
        self.emit(Event::Decided {
            contact: contact.id().to_string(),
            at,
            decision: decision.clone(),
            refused: refused.cloned(),
        });
        if self.keep && !dialled {
            self.refusals.push(Refusal {
                at,
                decision: decision.clone(),
                refused: refused.cloned(),
            });
        }
    }
}

/// Runs the campaign until every contact is done, `until`, `max_idle`, or a stop: its
/// header, crash recovery from the log, the planner and the core, the event loop, its stop
/// record (written whatever happened). `observer` gets every event, in order.
pub async fn run(
    setup: Setup,
    opts: RunOptions,
    control: ControlReceiver,
    observer: &mut (dyn FnMut(&Event) + Send),
) -> Result<Summary> {
    let Setup {
        campaign,
        header,
        store,
        mut log,
        audit_dir,
        prepared,
    } = setup;
    let one = matches!(opts.scope, Scope::One(_));
    let mut st = State {
        control,
        listening: true,
        observer,
        counters: Counters::default(),
        recent: VecDeque::new(),
        keep: one,
        calls: Vec::new(),
        refusals: Vec::new(),
        feed: None,
    };
    let start = now();
    log.append(start, &header)?;
    let entries = match crieur_audit::read_all(&audit_dir) {
        Ok(e) => e.into_iter().map(|(_, _, e)| e).collect(),
        Err(crieur_audit::Error::Empty(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let node = crieur_dial::Node {
        id: crate::header::node_id(),
        lease_timeout: chrono::Duration::from_std(opts.node_timeout)
            .unwrap_or(chrono::Duration::MAX),
    };
    for r in crieur_dial::reconcile_node(&*store, &mut log, &entries, start, &node)? {
        st.emit(Event::Recovered(r.to_string()));
    }
    // A campaign run reads only what the store's due index says is due soon; one contact
    // is that contact.
    let contacts = match &opts.scope {
        Scope::Campaign => {
            let p = store.progress(&campaign.id)?;
            if p.remaining + p.done == 0 {
                return Err(Error::NoContacts {
                    campaign: campaign.id.clone(),
                });
            }
            let pacing = campaign.effective_pacing();
            let per_refill = (pacing.calls_per_second * refill_every().num_seconds() as f64 * 2.0)
                .ceil()
                .max(f64::from(pacing.max_concurrent.min(10_000)))
                .min(MAX_HELD as f64) as usize;
            st.feed = Some(DueFeed {
                node,
                per_refill: per_refill.max(1),
                held: Default::default(),
                next_refill: start,
                store_next: None,
                remaining: p.remaining,
            });
            Vec::new()
        }
        Scope::One(c) => vec![(**c).clone()],
    };
    let dial = rules(&campaign);
    let planner = Planner::new(
        contacts,
        &campaign.policy,
        campaign.caps.clone(),
        campaign.retry.policy(),
        campaign.effective_pacing(),
        start,
    );
    let breaker = campaign
        .trunk
        .as_ref()
        .map(|t| t.breaker)
        .unwrap_or_default();
    let mut core = Core::new(planner, breaker);
    let mut eval = Evaluator::new(&campaign.policy);
    with_feed(&mut st, |feed, st| {
        feed.refill(
            &campaign, &store, &mut core, &mut log, &mut eval, &dial, st, start,
        )
    })?;
    log.commit()?;
    let log = Arc::new(Mutex::new(log));
    let mut result = event_loop(&campaign, &store, &log, &mut core, prepared, &opts, &mut st).await;
    if let Err(e) = with_feed(&mut st, |feed, _| {
        feed.write_back(&campaign, &*store, &mut core)
    }) {
        if result.is_ok() {
            result = Err(e);
        }
    }
    let mut log = lock(&log)?;
    let reason = match &result {
        Ok(r) => r.clone(),
        Err(e) => format!("error: {}", chain(e)),
    };
    // Whatever happened, the log is flushed and checkpointed.
    crate::header::stop(&mut log, &reason, now())?;
    let reason = result?;
    Ok(Summary {
        reason,
        counters: st.counters,
        trunk_end: core.health().describe(),
        calls: st.calls,
        refusals: st.refusals,
    })
}

/// An error with its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(&format!(": {c}"));
        source = c.source();
    }
    s
}

/// A breaker transition: into the audit log (committed with the loop's next commit) and
/// out as an event.
fn note_transition(
    campaign: &Campaign,
    log: &Arc<Mutex<AuditLog>>,
    st: &mut State<'_>,
    t: Transition,
    call: Option<&str>,
) -> Result<()> {
    lock(log)?.append(
        t.at,
        &Record::TrunkBreaker(crieur_dial::fault::breaker_record(&campaign.id, &t, call)),
    )?;
    st.emit(Event::Breaker(Arc::new(t)));
    Ok(())
}

async fn event_loop(
    campaign: &Campaign,
    store: &Arc<dyn Store + Send + Sync>,
    log: &Arc<Mutex<AuditLog>>,
    core: &mut Core<'_>,
    prepared: Prepared,
    opts: &RunOptions,
    st: &mut State<'_>,
) -> Result<String> {
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
    let mut calls: JoinSet<std::result::Result<CallReport, String>> = JoinSet::new();
    let mut placed: HashMap<tokio::task::Id, Placed> = HashMap::new();
    let r = dial_loop(
        campaign,
        store,
        log,
        core,
        opts,
        &shared,
        &mut calls,
        &mut placed,
        st,
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
                        let _ = finish(campaign, store, log, core, st, f);
                    }
                }
                _ => break,
            }
        }
    }
    // Let the BYEs of the last calls be retransmitted for a while before the stack stops.
    shared
        .uac
        .wait_background(crieur_media::uac::EXIT_GRACE)
        .await;
    r
}

/// A joined call task → its result (a panicked task is a local error, not a lost call).
fn finished(
    j: std::result::Result<
        (tokio::task::Id, std::result::Result<CallReport, String>),
        tokio::task::JoinError,
    >,
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

/// Stopping: why, and when the calls in progress are hung up.
type Stopping = Option<(String, tokio::time::Instant)>;

/// Starts stopping (unless already): no new calls; the calls in progress get `drain`.
fn begin_stop(
    stopping: &mut Stopping,
    st: &mut State<'_>,
    reason: String,
    drain: Duration,
    in_flight: usize,
    ordered: bool,
) {
    if stopping.is_some() {
        return;
    }
    st.emit(Event::Stopping {
        reason: reason.clone(),
        in_flight: in_flight as u64,
        drain,
        ordered,
    });
    st.counters.stopping = true;
    *stopping = Some((reason, tokio::time::Instant::now() + drain));
}

#[allow(clippy::too_many_arguments, clippy::too_many_lines)]
async fn dial_loop(
    campaign: &Campaign,
    store: &Arc<dyn Store + Send + Sync>,
    log: &Arc<Mutex<AuditLog>>,
    core: &mut Core<'_>,
    opts: &RunOptions,
    shared: &Shared,
    calls: &mut JoinSet<std::result::Result<CallReport, String>>,
    placed: &mut HashMap<tokio::task::Id, Placed>,
    st: &mut State<'_>,
) -> Result<String> {
    let mut stopping: Stopping = None;
    let mut paused = false;
    let mut idle_note: Option<DateTime<Utc>> = None;
    let mut last_count: Option<DateTime<Utc>> = None;
    let mut eval = Evaluator::new(&campaign.policy);
    let dial = rules(campaign);
    // Whether the planner changed since the due index was last refilled (a skip, a dial, a
    // call's end): what it settled may need writing back.
    let mut dirty = false;
    loop {
        // Orders first: a pause sent before the run started holds its first tick.
        while st.listening {
            match st.control.rx.try_recv() {
                Ok(c) => obey(
                    c,
                    &mut paused,
                    &mut stopping,
                    st,
                    core,
                    shared,
                    opts,
                    calls.len(),
                ),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => st.listening = false,
            }
        }
        let t = now();
        if let Some(u) = opts.until.filter(|u| t >= *u) {
            let why = format!(
                "--until {} reached",
                u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            begin_stop(&mut stopping, st, why, opts.drain, calls.len(), false);
        }
        if let Some(why) = &core.health().stopped {
            let why = format!("trunk fault, dialling stopped: {why}");
            begin_stop(&mut stopping, st, why, opts.drain, calls.len(), false);
        }
        if stopping.is_some() {
            core.stop();
        }
        if !paused {
            core.handle_timeout(t);
        }
        // What the core asks: each dial re-checked at its own instant, recorded, leased, its
        // INVITE recorded; one commit for them all; then the calls leave.
        let mut ready = Vec::new();
        let mut failure = None;
        while let Some(out) = core.poll_output() {
            dirty = true;
            match out {
                Output::Breaker { transition, call } => {
                    note_transition(campaign, log, st, transition, call.as_deref())?;
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
                    st.decided(core.contact(i), t, &d, why.as_ref(), false);
                }
                Output::Dial { contact: i, .. } if failure.is_some() => core.not_dialled(i, None),
                Output::Dial { contact: i, .. } => {
                    let contact = core.contact(i).clone();
                    let (checked, dialled) = dial_one(store, log, &dial, &mut eval, &contact)?;
                    let why = checked.refused.as_ref().map(|(why, _)| why);
                    st.decided(
                        &contact,
                        checked.at,
                        &checked.decision,
                        why,
                        dialled.is_ok(),
                    );
                    match dialled {
                        Ok((call, sent_at)) => {
                            core.dialled(i);
                            ready.push((i, contact, call, sent_at, checked.decision));
                        }
                        Err(Ok(retry_at)) => core.not_dialled(i, retry_at),
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
            st.counters.dialled += 1;
            st.recent.push_back(sent_at);
            st.emit(Event::Placed {
                call: call.clone(),
                contact: contact.id().to_string(),
                number: contact.phone().to_string(),
                at: sent_at,
            });
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
            return Err(e.into());
        }
        if st.keep && stopping.is_none() {
            // One contact, once: whatever this pass did not dial is not dialled.
            core.stop();
            stopping = Some(("call done".into(), tokio::time::Instant::now() + opts.drain));
        }
        // Calls that ended.
        while let Some(j) = calls.try_join_next_with_id() {
            if let Some(f) = finished(j, placed) {
                dirty = true;
                finish(campaign, store, log, core, st, f)?;
            }
        }
        // The due index: what was settled goes back, what is due soon comes in. Also when
        // the planner runs dry, before concluding that every contact is done.
        let t = now();
        let dry = core.planner().next_due().is_none() && calls.is_empty();
        with_feed(st, |feed, st| {
            if t >= feed.next_refill || (dry && dirty) {
                feed.refill(
                    campaign,
                    store,
                    core,
                    &mut *lock(log)?,
                    &mut eval,
                    &dial,
                    st,
                    t,
                )?;
                dirty = false;
            }
            Ok(())
        })?;
        lock(log)?.commit()?;
        let t = now();
        while st
            .recent
            .front()
            .is_some_and(|s| t - *s > chrono::Duration::seconds(10))
        {
            st.recent.pop_front();
        }
        let in_flight = calls.len() as u64;
        // What the planner holds, else what the store says is due next (a campaign run).
        let next = core
            .planner()
            .next_due()
            .or_else(|| st.feed.as_ref().and_then(|f| f.store_next));
        // Counting what remains is O(contacts): once a second is plenty for a display.
        if last_count.is_none_or(|l| t - l >= chrono::Duration::seconds(1)) {
            st.counters.remaining = match &st.feed {
                Some(f) => f.remaining,
                None => core.planner().remaining() as u64,
            };
            last_count = Some(t);
        }
        st.counters.in_flight = in_flight;
        st.counters.calls_per_second = st.recent.len() as f64 / 10.0;
        st.counters.idle_until = next.filter(|n| *n > t && in_flight == 0);
        st.counters.trunk = core.health().describe();
        st.counters.paused = paused;
        st.publish();
        // A contact not done is always queued (or in flight): an empty queue with nothing in
        // flight means every contact is done.
        if stopping.is_none() && in_flight == 0 && next.is_none() {
            return Ok("every contact is done".into());
        }
        if stopping.is_none() && in_flight == 0 && !paused {
            if let Some(n) = next.filter(|n| *n > t + chrono::Duration::seconds(1)) {
                if idle_note != Some(n) {
                    idle_note = Some(n);
                    st.emit(Event::Idle { next_due: n });
                }
            }
            if let (Some(n), Some(max)) = (next, opts.max_idle) {
                if (n - t).to_std().unwrap_or_default() > max {
                    return Ok(format!(
                        "idle: the next contact is due at {}, beyond --max-idle-secs {}",
                        n.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        max.as_secs()
                    ));
                }
            }
        }
        if let Some((_, deadline)) = &stopping {
            if in_flight == 0 {
                return Ok(stopping.take().map(|s| s.0).unwrap_or_default());
            }
            if tokio::time::Instant::now() >= *deadline && !shared.hangup_all.is_cancelled() {
                st.emit(Event::HangingUp { ordered: false });
                shared.hangup_all.cancel();
            }
        }
        // Sleep until something is due: the planner's next contact or pacing token, the
        // breaker's timer, `--until`, the drain deadline; a call ending or a control order
        // wakes the loop too. Nothing polls: an idle campaign wakes only then (at least every
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
            None if paused => MAX_SLEEP,
            None => [
                core.poll_timeout(),
                opts.until,
                st.feed.as_ref().map(|f| f.next_refill),
            ]
            .into_iter()
            .flatten()
            .min()
            .map_or(MAX_SLEEP, |at| (at - t).to_std().unwrap_or_default()),
        }
        .min(MAX_SLEEP);
        tokio::select! {
            Some(j) = calls.join_next_with_id(), if !calls.is_empty() => {
                if let Some(f) = finished(j, placed) {
                    dirty = true;
                    finish(campaign, store, log, core, st, f)?;
                }
            }
            _ = tokio::time::sleep(wait.max(Duration::from_millis(20))) => {}
            c = st.control.rx.recv(), if st.listening => match c {
                Some(c) => obey(c, &mut paused, &mut stopping, st, core, shared, opts, calls.len()),
                // Every handle dropped: the run goes on, unattended.
                None => st.listening = false,
            },
        }
    }
}

/// A control order, carried out.
#[allow(clippy::too_many_arguments)]
fn obey(
    c: Control,
    paused: &mut bool,
    stopping: &mut Stopping,
    st: &mut State<'_>,
    core: &mut Core<'_>,
    shared: &Shared,
    opts: &RunOptions,
    in_flight: usize,
) {
    match c {
        Control::Pause => {
            if !*paused {
                *paused = true;
                st.counters.paused = true;
                st.emit(Event::Paused);
            }
        }
        Control::Resume => {
            if *paused {
                *paused = false;
                st.counters.paused = false;
                st.emit(Event::Resumed);
            }
        }
        Control::Stop { reason, drain } if stopping.is_none() => {
            let drain = drain.unwrap_or(opts.drain);
            begin_stop(stopping, st, reason, drain, in_flight, true);
            core.stop();
        }
        Control::Stop { reason, .. } | Control::HangUpNow { reason } => {
            st.emit(Event::HangingUp { ordered: true });
            shared.hangup_all.cancel();
            let why = match stopping.take() {
                Some((first, _)) if first == reason => format!("{first} (twice)"),
                Some((first, _)) => format!("{first}, then {reason}"),
                None => reason,
            };
            st.counters.stopping = true;
            core.stop();
            *stopping = Some((why, tokio::time::Instant::now()));
        }
    }
}

/// What became of one dial order (after its re-check): `Ok((call, sent_at))` to place it
/// (leased, its INVITE recorded); `Err(Ok(retry_at))` not placed, back at `retry_at` (never:
/// `None`); `Err(Err(e))` the store failed.
type Dialled = std::result::Result<
    (String, DateTime<Utc>),
    std::result::Result<Option<DateTime<Utc>>, crieur_store::Error>,
>;

/// One dial order at the INVITE instant: re-checked and recorded, then — with 200 ms of the
/// decision's validity left — leased and its INVITE recorded (durable with the tick's
/// commit, before the INVITE leaves).
fn dial_one(
    store: &Arc<dyn Store + Send + Sync>,
    log: &Arc<Mutex<AuditLog>>,
    dial: &crieur_dial::DialRules,
    eval: &mut Evaluator<'_>,
    contact: &Contact,
) -> Result<(Rechecked, Dialled)> {
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
        Err(crieur_dial::Error::Store(e)) => Err(Err(e)),
        Err(e) => return Err(e.into()),
    };
    Ok((checked, dialled))
}

/// One call, as a task: the opt-out hook makes the opt-out durable in the store and in the
/// audit log before the confirmation plays.
fn place(
    shared: &Shared,
    campaign: &Campaign,
    store: &Arc<dyn Store + Send + Sync>,
    log: &Arc<Mutex<AuditLog>>,
    contact: Contact,
    call: String,
) -> impl std::future::Future<Output = std::result::Result<CallReport, String>> + Send + 'static {
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
            .map_err(|e| chain(&e));
        if pausing_at("after-call") {
            // The crash test's point: the call over, its BYE's transaction done, nothing of
            // its end recorded yet.
            uac.wait_background(crieur_media::uac::EXIT_GRACE).await;
            test_pause("after-call");
        }
        report
    }
}

fn lock(log: &Arc<Mutex<AuditLog>>) -> Result<std::sync::MutexGuard<'_, AuditLog>> {
    log.lock().map_err(|_| Error::Poisoned("audit log"))
}

/// A call ended: store, audit, planner, counters, the trunk's breaker.
fn finish(
    campaign: &Campaign,
    store: &Arc<dyn Store + Send + Sync>,
    log: &Arc<Mutex<AuditLog>>,
    core: &mut Core<'_>,
    st: &mut State<'_>,
    f: Finished,
) -> Result<()> {
    let ended = crieur_dial::to_micros(now());
    let contact = core.contact(f.contact).clone();
    let verdict = crieur_dial::fault::verdict(&f.report);
    let uncounted = core.uncounted(f.contact, &verdict);
    let outcome = match &f.report {
        Ok(r) => crieur_dial::fault::recorded_outcome(r, uncounted),
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
    .map_err(|source| Error::Finish {
        contact: contact.id().to_string(),
        source,
    })?;
    let c = &mut st.counters;
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
                // The person asked: record it now (and say so loudly: the event).
                let ok = record_late_opt_out(&**store, &mut *lock(log)?, contact.phone(), now())?;
                late_opt_out = Some(ok);
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
    st.emit(Event::Ended {
        call: f.call.clone(),
        contact: contact.id().to_string(),
        number: contact.phone().to_string(),
        outcome: outcome.clone(),
        at: ended,
    });
    if let Some(recorded) = late_opt_out {
        st.emit(Event::LateOptOut {
            number: contact.phone().to_string(),
            recorded,
        });
    }
    if let Some(tr) = core.call_ended(f.contact, ended, scheduled, verdict) {
        note_transition(campaign, log, st, tr, Some(&f.call))?;
    }
    if st.keep {
        st.calls.push(Done {
            decision: f.decision,
            report: f.report,
            outcome,
            late_opt_out,
        });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::share;
    use crieur_engine::Pacing;

    #[test]
    fn each_node_takes_its_share_of_the_pacing() {
        let p = Pacing {
            calls_per_second: 6.0,
            max_concurrent: 10,
        };
        assert_eq!(share(p, 1), p);
        assert_eq!(
            share(p, 3),
            Pacing {
                calls_per_second: 2.0,
                max_concurrent: 3
            }
        );
        // Never below one call at a time; never a division by zero.
        assert_eq!(share(p, 20).max_concurrent, 1);
        assert_eq!(share(p, 0), p);
    }
}
