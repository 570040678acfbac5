//! The run's event loop on tokio: the core's outputs carried out by
//! `crieur_dial::session::Session` (the same code the crash tests run in simulated time),
//! its INVITEs placed as tasks on one shared `Uac`, their ends recorded, control orders
//! obeyed, events sent.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_audit::record::Reason;
use crieur_audit::{AuditLog, Record};
use crieur_config::campaign::Campaign;
use crieur_dial::fault::{CallEnd, LocalFailure, Recorded};
use crieur_dial::session::{
    Clock, Ended, Halt, Network, OptOutRecorder, Placement, Plan, Point, Probe, Session, Step,
};
use crieur_media::call::Outcome;
use crieur_media::uac::{CallRequest, OptOutError, OptOutFuture, Uac};
use crieur_scheduler::{Contact, Decision};
use crieur_store::{Claim, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::control::{Control, ControlReceiver, Counters, Event, ProgressGate};
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

/// The audit log, shared by the run, its call tasks and whoever else writes to it while the
/// run holds it (the control API's opt-outs and imports).
pub type SharedLog = Arc<Mutex<AuditLog>>;

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
    pub log: SharedLog,
    /// The log's directory: read back for crash recovery.
    pub audit_dir: PathBuf,
    /// What places the calls.
    pub prepared: Prepared,
}

/// A call that ended, kept for a one-contact run's report.
pub struct Done {
    /// The re-check that let it go.
    pub decision: Decision,
    pub report: CallEnd,
    /// As recorded (store and log).
    pub outcome: Recorded,
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

/// The wall clock (the driver is the edge that reads it).
struct WallClock;

impl Clock for WallClock {
    fn instant(&mut self) -> DateTime<Utc> {
        now()
    }
}

/// The SIGKILL tests' pause points (`CRIEUR_TEST_PAUSE_AT=<point>`): the run stops there for
/// 30 s so the test can kill the process exactly there. Pausing weakens nothing; it never
/// halts the session.
struct TestPause;

/// The live probe: the SIGKILL tests' pause points, and the latency of the session's store
/// and audit work between its effect boundaries (histograms; `mark` starts each batch).
struct Timed {
    last: std::time::Instant,
}

impl Timed {
    fn new() -> Timed {
        #[allow(clippy::disallowed_methods)]
        let last = std::time::Instant::now();
        Timed { last }
    }

    /// A batch of the session's work begins (a tick, a call's end).
    fn mark(&mut self) {
        *self = Timed::new();
    }
}

impl Probe for Timed {
    fn after(&mut self, point: Point) -> std::result::Result<(), Halt> {
        #[allow(clippy::disallowed_methods)]
        let t = std::time::Instant::now();
        let took = t.saturating_duration_since(self.last).as_secs_f64();
        match point {
            Point::Decided => {
                metrics::histogram!("crieur_store_seconds", "op" => "recheck").record(took)
            }
            Point::Leased => {
                metrics::histogram!("crieur_store_seconds", "op" => "lease").record(took)
            }
            Point::AttemptStored => {
                metrics::histogram!("crieur_store_seconds", "op" => "attempt").record(took);
            }
            Point::Committed { .. } | Point::CallCommitted => {
                metrics::histogram!("crieur_audit_commit_seconds").record(took);
            }
            _ => {}
        }
        TestPause.after(point)?;
        #[allow(clippy::disallowed_methods)]
        let after = std::time::Instant::now();
        self.last = after;
        Ok(())
    }
}

impl Probe for TestPause {
    fn after(&mut self, point: Point) -> std::result::Result<(), Halt> {
        match point {
            Point::Leased => test_pause("after-lease-before-record"),
            Point::Committed { invites } if invites > 0 => test_pause("after-lease"),
            Point::OptOutStored => test_pause("after-opt-out"),
            Point::AttemptStored => test_pause("after-attempt"),
            _ => {}
        }
        Ok(())
    }
}

/// What the loop shares with call tasks.
struct Shared {
    uac: Arc<Uac>,
    trunk: Arc<crieur_media::uac::Trunk>,
    message: Arc<crieur_media::audio::Message>,
    confirmation: Arc<crieur_media::audio::Message>,
    amd: Option<crieur_media::uac::AmdRequest>,
    hangup_all: CancellationToken,
    opt_out_key: char,
    not_interested_key: Option<char>,
    lead_in: Duration,
    recorder: OptOutRecorder,
    store: Arc<dyn Store + Send + Sync>,
    in_progress: Arc<crate::control::InProgress>,
}

/// The calls in progress: a task each on the shared `Uac`.
struct Calls {
    tasks: JoinSet<(String, CallEnd)>,
    /// Task → call id (a task that panics returns no id of its own).
    ids: HashMap<tokio::task::Id, String>,
}

/// The live network: an INVITE placed is a task on the shared `Uac`.
struct LiveNetwork<'a> {
    shared: &'a Shared,
    calls: &'a mut Calls,
    placed: Vec<Placement>,
}

impl Network for LiveNetwork<'_> {
    fn place(&mut self, p: Placement) {
        let stop = self.shared.hangup_all.child_token();
        let number = p.who.phone().clone();
        let store = &self.shared.store;
        // An opt-out that the control API made durable after this contact's re-check hangs
        // this call up (here, or through the registry once it is in it).
        // A store that cannot say is taken as an opt-out (the call is not begun), and said so.
        let mut unreadable = false;
        self.shared
            .in_progress
            .register(&number.to_string(), stop.clone(), || {
                store.is_opted_out(&number).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "opt-out status unreadable: the call is hung up");
                    unreadable = true;
                    true
                })
            });
        let why = if unreadable {
            "number's opt-out status unreadable at dial time"
        } else {
            "number opted out during the call"
        };
        let handle = self.calls.tasks.spawn(place(
            self.shared,
            p.who.clone(),
            p.call.clone(),
            (stop, why),
        ));
        self.calls.ids.insert(handle.id(), p.call.clone());
        self.placed.push(p);
    }
}

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
    /// When the counters go out as a `progress` event.
    progress: ProgressGate,
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

/// How often a campaign run refills from the due index, writes back what it settled,
/// renews its claims and recovers the leases of dead nodes.
fn refill_every() -> chrono::Duration {
    chrono::Duration::seconds(10)
}

/// The most contacts a run holds at once (due before the horizon, or in a call).
const MAX_HELD: usize = 100_000;

/// One node's share of a campaign's pacing among `nodes`: the rate divided, the concurrent
/// calls divided (rounded down, at least one each).
fn share(p: crieur_engine::Pacing, nodes: u32) -> crieur_engine::Pacing {
    let n = nodes.max(1);
    crieur_engine::Pacing {
        calls_per_second: p.calls_per_second / f64::from(n),
        max_concurrent: (p.max_concurrent / n).max(1),
    }
}

/// The limits a run shares with others: its campaign's pacing (among the campaign's live
/// nodes) and its trunk's own limits (among every live run on that trunk: any campaign, any
/// node).
#[derive(Debug, Clone)]
struct Limits {
    campaign: crieur_engine::Pacing,
    /// The trunk's identity (host, port, user) and its limits, when it has any.
    trunk: Option<(String, crieur_engine::Pacing)>,
}

impl Limits {
    fn of(c: &Campaign) -> Limits {
        let campaign = crieur_engine::Pacing {
            calls_per_second: c.pacing.calls_per_second,
            max_concurrent: c.pacing.max_concurrent_calls,
        };
        let trunk = c.trunk.as_ref().and_then(|t| {
            if t.calls_per_second.is_none() && t.max_concurrent_calls.is_none() {
                return None;
            }
            let key = format!(
                "trunk {}:{} {}",
                t.host.to_ascii_lowercase(),
                t.port,
                t.username.as_deref().unwrap_or_default()
            );
            let limits = crieur_engine::Pacing {
                calls_per_second: t.calls_per_second.unwrap_or(f64::INFINITY),
                max_concurrent: t.max_concurrent_calls.unwrap_or(u32::MAX),
            };
            Some((key, limits))
        });
        Limits { campaign, trunk }
    }

    /// This run's pacing at `t`, from the heartbeats of the runs seen since `since` (this
    /// one's recorded now): its share of the campaign's pacing ([`share`]) and, under it,
    /// its share of the trunk's — the trunk's rate and channels divided by the live runs on
    /// the trunk (rounded down: the shares never add up to more than the trunk allows, even
    /// if a run gets no channel while more runs than channels are live).
    fn pacing(
        &self,
        store: &dyn Store,
        campaign: &str,
        node: &str,
        t: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<crieur_engine::Pacing> {
        let live = store.node_alive(campaign, node, t, since)?;
        let mut p = share(self.campaign, live);
        if let Some((key, trunk)) = &self.trunk {
            let runs = store
                .node_alive(key, &format!("{node} {campaign}"), t, since)?
                .max(1);
            p.calls_per_second = p
                .calls_per_second
                .min(trunk.calls_per_second / f64::from(runs));
            p.max_concurrent = p.max_concurrent.min(trunk.max_concurrent / runs);
        }
        Ok(p)
    }
}

/// A campaign run's window on the store's due index: the planner holds only what is due
/// before the horizon (and the calls in progress); what it settles goes back to the store.
struct DueFeed {
    campaign: String,
    node: crieur_dial::Node,
    limits: Limits,
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
    /// The campaign's contacts (remaining and done), as the store counts them then.
    total: u64,
}

impl DueFeed {
    /// Writes back what the planner settled, recovers the expired leases of other nodes,
    /// takes this node's share of the pacing, and takes in what is due before the horizon
    /// (renewing this node's claims on what it holds).
    fn refill(
        &mut self,
        session: &mut Session<'_>,
        st: &mut State<'_>,
        t: DateTime<Utc>,
    ) -> Result<()> {
        let store = session.store().clone();
        let settled = session.settle(t + horizon());
        if !settled.is_empty() {
            for (id, _) in &settled {
                self.held.remove(id.as_str());
            }
            store.set_due(&self.campaign, &settled)?;
        }
        for r in session.recover_expired(t, &self.node)? {
            st.emit(Event::Recovered(r));
        }
        // The campaign's pacing is shared among its nodes seen within the last three
        // refills, the trunk's among the runs on it (every campaign): each takes its share.
        let since = t - refill_every() * 3;
        let pacing = self
            .limits
            .pacing(&*store, &self.campaign, &self.node.id, t, since)?;
        session.set_pacing(pacing);
        let claim = Claim {
            node: &self.node.id,
            until: t + horizon(),
            now: t,
            hold_until: t + self.node.lease_timeout,
            limit: (self.held.len() + self.per_refill).min(MAX_HELD),
        };
        for d in store.claim_due(&self.campaign, &claim)? {
            if self.held.contains(d.id.as_str()) {
                continue;
            }
            let Some(contact) = store.contact(&self.campaign, &d.id)? else {
                store.set_due(&self.campaign, &[(d.id, None)])?;
                continue;
            };
            if session.admit(contact, d.due, t)?.is_some() {
                self.held.insert(d.id.as_str().to_owned());
            }
        }
        self.store_next = store.next_due(&self.campaign)?;
        let p = store.progress(&self.campaign)?;
        self.remaining = p.remaining;
        self.total = p.remaining + p.done;
        let soon = |n: &DateTime<Utc>| *n <= t + horizon();
        self.next_refill = t + match (session.core().planner().next_due(), self.store_next) {
            (Some(_), _) => refill_every(),
            // Due soon but held by other nodes: their claims may lapse.
            (None, Some(n)) if soon(&n) => refill_every(),
            _ => chrono::Duration::seconds(60),
        }
        // The refill is the node's heartbeat (`node_alive`): three per lease timeout at
        // least, so that a call longer than the timeout keeps its lease.
        .min(self.node.lease_timeout / 3)
        .max(chrono::Duration::seconds(1));
        Ok(())
    }

    /// At the end of the run: everything the planner holds and is not in a call goes back
    /// to the store with its next due instant (a restart re-evaluates nothing early).
    fn write_back(&mut self, session: &mut Session<'_>) -> Result<()> {
        let all = session.settle(DateTime::<Utc>::MIN_UTC);
        for (id, _) in &all {
            self.held.remove(id.as_str());
        }
        session.store().set_due(&self.campaign, &all)?;
        Ok(())
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

    /// The counters: in the watch channel at every turn (when they changed), as a
    /// `progress` event when [`ProgressGate`] says so (`last`: the end of the run, any change
    /// goes out).
    fn publish(&mut self, last: bool) {
        let c = &self.counters;
        self.control.counters.send_if_modified(|w| {
            let changed = w != c;
            if changed {
                w.clone_from(c);
            }
            changed
        });
        if self
            .progress
            .take(&self.counters, tokio::time::Instant::now(), last)
        {
            self.emit(Event::Progress(self.counters.clone()));
        }
    }

    /// What the session did, as events (and a one-contact run's refusals).
    fn steps(&mut self, session: &Session<'_>, steps: &mut Vec<Step>) {
        for s in steps.drain(..) {
            match s {
                Step::Decided {
                    contact,
                    at,
                    decision,
                    refused,
                    dialled,
                } => {
                    let (verdict, reason) = match (&decision, &refused) {
                        (_, Some(r)) => ("refused", r.code()),
                        (Decision::Dial(_), None) => ("dial", ""),
                        (Decision::Skip(s), None) => (
                            "skip",
                            s.reasons.first().map_or("", |r| Reason::from(r).code()),
                        ),
                    };
                    metrics::counter!("crieur_decisions_total", "verdict" => verdict, "reason" => reason)
                        .increment(1);
                    if self.keep && !dialled {
                        self.refusals.push(Refusal {
                            at,
                            decision: decision.clone(),
                            refused: refused.clone(),
                        });
                    }
                    self.emit(Event::Decided {
                        contact: session.core().contact(contact).id().to_string(),
                        at,
                        decision,
                        refused,
                    });
                }
                Step::Breaker { transition, .. } => {
                    breaker_gauge(&transition);
                    self.emit(Event::Breaker(Arc::new(transition)));
                }
            }
        }
    }

    fn placed(&mut self, p: &Placement) {
        self.counters.dialled += 1;
        self.recent.push_back(p.sent_at);
        self.emit(Event::Placed {
            call: p.call.clone(),
            contact: p.who.id().to_string(),
            number: p.who.phone().to_string(),
            at: p.sent_at,
        });
    }

    /// A call ended and recorded: counters, events, a one-contact run's report.
    fn ended(&mut self, e: Ended, end: CallEnd) {
        self.control.in_progress.remove(&e.who.phone().to_string());
        if let Ok(r) = &end {
            if let Some(d) = r.answer_to_first_audio {
                metrics::histogram!("crieur_answer_to_first_audio_seconds").record(d.as_secs_f64());
            }
            if r.rtp_sent > 0 {
                metrics::histogram!("crieur_rtp_send_lateness_seconds")
                    .record(f64::from(r.send_lateness_max_us) / 1e6);
            }
        }
        let c = &mut self.counters;
        match e.recorded {
            Recorded::Call { outcome, .. } => match outcome {
                Outcome::AnsweredCompleted
                | Outcome::AnsweredNotInterested
                | Outcome::HungUpMidMessage => c.answered += 1,
                Outcome::AnsweredOptedOut => {
                    c.answered += 1;
                    c.opted_out += 1;
                }
                Outcome::OptOutFailed => {
                    c.answered += 1;
                    if e.late_opt_out == Some(true) {
                        c.opted_out += 1;
                    }
                }
                Outcome::Busy | Outcome::NoAnswer => {}
                _ => c.failed += 1,
            },
            // A local error (scheduling outcomes are only recorded by recovery).
            _ => c.failed += 1,
        }
        let outcome = e.recorded;
        let name = outcome.name();
        *c.by_outcome.entry(name.clone()).or_default() += 1;
        metrics::counter!("crieur_calls_total", "outcome" => name.clone()).increment(1);
        if e.recorded.scheduled() == crieur_engine::AttemptOutcome::TrunkFault {
            c.trunk_refused += 1;
            metrics::counter!("crieur_trunk_faults_total", "fault" => name).increment(1);
        }
        self.emit(Event::Ended {
            call: e.call.clone(),
            contact: e.who.id().to_string(),
            number: e.who.phone().to_string(),
            outcome,
            at: e.ended,
        });
        if let Some(recorded) = e.late_opt_out {
            self.emit(Event::LateOptOut {
                number: e.who.phone().to_string(),
                recorded,
            });
        }
        if let Some(t) = e.breaker {
            breaker_gauge(&t);
            self.emit(Event::Breaker(Arc::new(t)));
        }
        if self.keep {
            self.calls.push(Done {
                decision: e.decision,
                report: end,
                outcome,
                late_opt_out: e.late_opt_out,
            });
        }
    }
}

/// The breaker's state as a gauge: 0 closed, 1 half-open, 2 open, 3 stopped.
fn breaker_gauge(t: &crieur_engine::Transition) {
    metrics::gauge!("crieur_breaker_state").set(match t.to {
        crieur_engine::BreakerState::Closed => 0.0,
        crieur_engine::BreakerState::HalfOpen => 1.0,
        crieur_engine::BreakerState::Open { .. } => 2.0,
        crieur_engine::BreakerState::Stopped => 3.0,
    });
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
        log,
        audit_dir,
        prepared,
    } = setup;
    let one = matches!(opts.scope, Scope::One(_));
    let mut st = State {
        control,
        listening: true,
        observer,
        counters: Counters::default(),
        progress: ProgressGate::default(),
        recent: VecDeque::new(),
        keep: one,
        calls: Vec::new(),
        refusals: Vec::new(),
        feed: None,
    };
    let node = crieur_dial::Node {
        id: crate::header::node_id(),
        lease_timeout: chrono::Duration::from_std(opts.node_timeout)
            .unwrap_or(chrono::Duration::MAX),
    };
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
                campaign: campaign.id.clone(),
                node: node.clone(),
                limits: Limits::of(&campaign),
                per_refill: per_refill.max(1),
                held: Default::default(),
                next_refill: now(),
                store_next: None,
                remaining: p.remaining,
                total: p.remaining + p.done,
            });
            Vec::new()
        }
        Scope::One(c) => vec![(**c).clone()],
    };
    let entries: Vec<crieur_audit::Entry> = match crieur_audit::read_all(&audit_dir) {
        Ok(e) => e.into_iter().map(|(_, _, e)| e).collect(),
        Err(crieur_audit::Error::Empty(_)) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let plan = Plan {
        rules: rules(&campaign),
        policy: &campaign.policy,
        pacing: campaign.effective_pacing(),
        breaker: campaign
            .trunk
            .as_ref()
            .map(|t| t.breaker)
            .unwrap_or_default(),
        contacts,
        schedule_history: !one,
    };
    let mut steps = Vec::new();
    let start = now();
    let (mut session, recovered) = Session::start_node(
        plan,
        store.clone(),
        log,
        &header,
        &entries,
        start,
        &mut steps,
        &node,
    )?;
    for r in recovered {
        st.emit(Event::Recovered(r));
    }
    st.steps(&session, &mut steps);
    with_feed(&mut st, |feed, st| feed.refill(&mut session, st, start))?;
    let mut result = event_loop(&campaign, &mut session, store, prepared, &opts, &mut st).await;
    if let Err(e) = with_feed(&mut st, |feed, _| feed.write_back(&mut session)) {
        if result.is_ok() {
            result = Err(e);
        }
    }
    let reason = match &result {
        Ok(r) => r.clone(),
        Err(e) => format!("error: {}", chain(e)),
    };
    // Whatever happened, the log is flushed and checkpointed.
    session.record_stop(&reason, now())?;
    let reason = result?;
    Ok(Summary {
        reason,
        counters: st.counters,
        trunk_end: session.core().health().describe(),
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

async fn event_loop(
    campaign: &Campaign,
    session: &mut Session<'_>,
    store: Arc<dyn Store + Send + Sync>,
    prepared: Prepared,
    opts: &RunOptions,
    st: &mut State<'_>,
) -> Result<String> {
    let Prepared {
        trunk,
        local,
        transport,
        tls,
        message,
        confirmation,
        amd,
    } = prepared;
    let shared = Shared {
        uac: Arc::new({
            use crieur_config::campaign::TrunkTransport;
            let ua = concat!("crieur/", env!("CARGO_PKG_VERSION"));
            match transport {
                TrunkTransport::Udp => Uac::start(local, ua).await?,
                TrunkTransport::Tcp => Uac::start_tcp(local, ua).await?,
                TrunkTransport::Tls => Uac::start_tls(local, ua, &tls).await?,
            }
        }),
        trunk: Arc::new(trunk),
        message,
        confirmation,
        amd,
        hangup_all: CancellationToken::new(),
        opt_out_key: campaign.opt_out_key,
        not_interested_key: campaign.not_interested_key,
        lead_in: campaign.lead_in,
        recorder: session.opt_out_recorder(),
        store,
        in_progress: st.control.in_progress.clone(),
    };
    let mut calls = Calls {
        tasks: JoinSet::new(),
        ids: HashMap::new(),
    };
    // Opted out by another node, its API or the command line: hung up here too.
    let _watch =
        crate::control::OptOutWatcher::start(shared.store.clone(), shared.in_progress.clone());
    let r = dial_loop(session, opts, &shared, &mut calls, st).await;
    if r.is_err() {
        // An error stops dialling, not the calls in progress: hang them up cleanly (an
        // opt-out being recorded is finished first) and record how each ended.
        shared.hangup_all.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !calls.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, calls.tasks.join_next_with_id()).await {
                Ok(Some(j)) => {
                    if let Some((call, end)) = joined(j, &mut calls.ids) {
                        let _ = finish(session, st, &call, end);
                    }
                }
                _ => break,
            }
        }
    }
    // The last counters, whatever the last turn held back.
    st.counters.in_flight = calls.tasks.len() as u64;
    st.publish(true);
    // Let the BYEs of the last calls be retransmitted for a while before the stack stops.
    shared
        .uac
        .wait_background(crieur_media::uac::EXIT_GRACE)
        .await;
    r
}

/// A joined call task → its call and end (a panicked task is a local failure, not a lost
/// call).
fn joined(
    j: std::result::Result<(tokio::task::Id, (String, CallEnd)), tokio::task::JoinError>,
    ids: &mut HashMap<tokio::task::Id, String>,
) -> Option<(String, CallEnd)> {
    match j {
        Ok((id, r)) => {
            ids.remove(&id);
            Some(r)
        }
        Err(e) => Some((
            ids.remove(&e.id())?,
            Err(LocalFailure {
                why: format!("call task failed: {e}"),
            }),
        )),
    }
}

/// A call ended: recorded by the session, then counted and told.
fn finish(session: &mut Session<'_>, st: &mut State<'_>, call: &str, end: CallEnd) -> Result<()> {
    if let Err(e) = &end {
        tracing::warn!(call, error = %e, "call failed locally");
    }
    let mut probe = Timed::new();
    match session.call_ended(call, &end, &mut WallClock, &mut probe) {
        Ok(Some(e)) => st.ended(e, end),
        Ok(None) => tracing::warn!(call, "a call ended that the session does not know"),
        Err(source) => {
            return Err(Error::Finish {
                call: call.to_owned(),
                source,
            })
        }
    }
    Ok(())
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

#[allow(clippy::too_many_lines)]
async fn dial_loop(
    session: &mut Session<'_>,
    opts: &RunOptions,
    shared: &Shared,
    calls: &mut Calls,
    st: &mut State<'_>,
) -> Result<String> {
    let mut stopping: Stopping = None;
    let mut paused = false;
    let mut idle_note: Option<DateTime<Utc>> = None;
    let mut last_count: Option<DateTime<Utc>> = None;
    let mut steps = Vec::new();
    let mut added: Vec<Contact> = Vec::new();
    let mut probe = Timed::new();
    let in_progress_gauge = metrics::gauge!("crieur_calls_in_progress");
    // Whether the planner changed since the due index was last refilled (a tick, a call's
    // end): what it settled may need writing back.
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
                    session,
                    shared,
                    opts,
                    &mut added,
                ),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => st.listening = false,
            }
        }
        let t = now();
        // `--until`, or a trunk that refuses our credentials: no new calls, drain.
        let why = match (
            opts.until.filter(|u| t >= *u),
            &session.core().health().stopped,
        ) {
            (Some(u), _) => Some(format!(
                "--until {} reached",
                u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            (None, Some(why)) => Some(format!("trunk fault, dialling stopped: {why}")),
            (None, None) => None,
        };
        if let Some(why) = why {
            let in_flight = session.in_flight();
            begin_stop(&mut stopping, st, why, opts.drain, in_flight, false);
        }
        if stopping.is_some() {
            session.stop();
        }
        if !added.is_empty() {
            // Imported while the run runs (the store put them in its due index): those the
            // planner holds take their new consent records now; the others come in from the
            // due index at once (claimed, as any due contact, when nodes share the store).
            session.renew_contacts(std::mem::take(&mut added), t);
            if let Some(feed) = &mut st.feed {
                feed.next_refill = t;
            }
        }
        if !paused {
            // The session re-checks, records, leases, commits, then hands the INVITEs over.
            let mut net = LiveNetwork {
                shared,
                calls,
                placed: Vec::new(),
            };
            probe.mark();
            let r = session.tick(&mut WallClock, &mut net, &mut probe, &mut steps);
            dirty |= !steps.is_empty();
            let placed = std::mem::take(&mut net.placed);
            st.steps(session, &mut steps);
            for p in &placed {
                st.placed(p);
            }
            r?;
        }
        if st.keep && stopping.is_none() {
            // One contact, once: whatever this pass did not dial is not dialled.
            session.stop();
            stopping = Some(("call done".into(), tokio::time::Instant::now() + opts.drain));
        }
        // Calls that ended.
        while let Some(j) = calls.tasks.try_join_next_with_id() {
            if let Some((call, end)) = joined(j, &mut calls.ids) {
                settle_for_pause(shared).await;
                dirty = true;
                finish(session, st, &call, end)?;
            }
        }
        // The due index: what was settled goes back, what is due soon comes in; also when
        // the planner runs dry after a change, before concluding that every contact is done.
        let t = now();
        let dry = session.core().planner().next_due().is_none() && calls.tasks.is_empty();
        with_feed(st, |feed, st| {
            if t >= feed.next_refill || (dry && dirty) {
                feed.refill(session, st, t)?;
                dirty = false;
            }
            Ok(())
        })?;
        let t = now();
        while st
            .recent
            .front()
            .is_some_and(|s| t - *s > chrono::Duration::seconds(10))
        {
            st.recent.pop_front();
        }
        let in_flight = calls.tasks.len() as u64;
        // What the planner holds, else what the store says is due next (a campaign run).
        let next = session
            .core()
            .planner()
            .next_due()
            .or_else(|| st.feed.as_ref().and_then(|f| f.store_next));
        // Counting what remains is O(contacts): once a second is plenty for a display.
        if last_count.is_none_or(|l| t - l >= chrono::Duration::seconds(1)) {
            st.counters.remaining = match &st.feed {
                Some(f) => f.remaining,
                None => session.core().planner().remaining() as u64,
            };
            st.counters.due_now = session.core().due_count(t) as u64;
            st.counters.contacts = match &st.feed {
                Some(f) => f.total,
                None => session.core().planner().len() as u64,
            };
            last_count = Some(t);
        }
        st.counters.next_due = next;
        st.counters.in_flight = in_flight;
        in_progress_gauge.set(in_flight as f64);
        st.counters.calls_per_second = st.recent.len() as f64 / 10.0;
        st.counters.idle_until = next.filter(|n| *n > t && in_flight == 0);
        st.counters.trunk = session.core().health().describe();
        st.counters.paused = paused;
        st.publish(false);
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
                session.core().poll_timeout(),
                opts.until,
                st.feed.as_ref().map(|f| f.next_refill),
            ]
            .into_iter()
            .flatten()
            .min()
            .map_or(MAX_SLEEP, |at| (at - t).to_std().unwrap_or_default()),
        }
        .min(MAX_SLEEP);
        // Counters held back from the event stream go out within a second, even if nothing
        // else happens (the run then idles with its last counters published).
        let wait = match st.progress.due(&st.counters) {
            Some(at) => wait.min(at.saturating_duration_since(tokio::time::Instant::now())),
            None => wait,
        };
        tokio::select! {
            Some(j) = calls.tasks.join_next_with_id(), if !calls.tasks.is_empty() => {
                if let Some((call, end)) = joined(j, &mut calls.ids) {
                    settle_for_pause(shared).await;
                    finish(session, st, &call, end)?;
                }
            }
            _ = tokio::time::sleep(wait.max(Duration::from_millis(20))) => {}
            c = st.control.rx.recv(), if st.listening => match c {
                Some(c) => obey(c, &mut paused, &mut stopping, st, session, shared, opts, &mut added),
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
    session: &mut Session<'_>,
    shared: &Shared,
    opts: &RunOptions,
    added: &mut Vec<Contact>,
) {
    match c {
        Control::AddContacts(cs) => added.extend(cs),
        Control::Pause | Control::Resume => {
            let pause = c == Control::Pause;
            if *paused != pause {
                *paused = pause;
                st.counters.paused = pause;
                st.emit(if pause { Event::Paused } else { Event::Resumed });
            }
        }
        Control::Stop { reason, drain } if stopping.is_none() => {
            let drain = drain.unwrap_or(opts.drain);
            begin_stop(stopping, st, reason, drain, session.in_flight(), true);
            session.stop();
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
            session.stop();
            *stopping = Some((why, tokio::time::Instant::now()));
        }
    }
}

/// One call, as a task: the opt-out hook makes the opt-out durable in the store and in the
/// audit log before the confirmation plays. Returns the call's id and how it ended.
fn place(
    shared: &Shared,
    contact: Contact,
    call: String,
    (stop, opted_out_why): (CancellationToken, &'static str),
) -> impl std::future::Future<Output = (String, CallEnd)> + Send + 'static {
    // Who stopped the call, if it ends `local-shutdown`: the run (a stop or hang-up-all
    // cancels `hangup_all`, whose child `stop` is) or, alone, an opt-out of its number made
    // durable meanwhile — the API's, another node's, the command line's (`InProgress` is the
    // only other holder of `stop`, and cancels it only for an opt-out).
    let (own_stop, run_stop) = (stop.clone(), shared.hangup_all.clone());
    let req = CallRequest {
        number: contact.phone().to_string(),
        message: shared.message.clone(),
        confirmation: shared.confirmation.clone(),
        opt_out_key: shared.opt_out_key,
        not_interested_key: shared.not_interested_key,
        keep_received_audio: false,
        stop: Some(stop),
        lead_in: shared.lead_in,
        amd: shared.amd.clone(),
    };
    let (uac, trunk, recorder) = (
        shared.uac.clone(),
        shared.trunk.clone(),
        shared.recorder.clone(),
    );
    async move {
        let phone = contact.phone().clone();
        let id = call.clone();
        let report = uac
            .call(&trunk, req, move |digit, method| -> OptOutFuture {
                Box::pin(async move {
                    let how = format!("key {digit} by {}", method.as_str());
                    let at = now();
                    tokio::task::spawn_blocking(move || {
                        #[allow(clippy::disallowed_methods)]
                        let t0 = std::time::Instant::now();
                        let r = recorder.record(&id, &phone, at, &how, &mut TestPause);
                        #[allow(clippy::disallowed_methods)]
                        let took = t0.elapsed();
                        metrics::histogram!("crieur_optout_durable_seconds", "via" => "key")
                            .record(took.as_secs_f64());
                        r
                    })
                    .await
                    .map_err(|e| -> OptOutError { Box::new(e) })?
                    .map_err(|e| -> OptOutError { Box::new(e) })
                })
            })
            .await
            // With its sources (the SIP stack's own error): the reason recorded.
            .map_err(|e| LocalFailure { why: chain(&e) })
            .map(|mut r| {
                if r.ending.outcome == Outcome::LocalShutdown
                    && own_stop.is_cancelled()
                    && !run_stop.is_cancelled()
                {
                    // The audit log says why we hung up: not a shutdown of the run.
                    r.ending.reason = format!("{opted_out_why} ({})", r.ending.reason);
                }
                r
            });
        if pausing_at("after-call") {
            // The crash test's point: the call over, its BYE's transaction done, nothing of
            // its end recorded yet.
            uac.wait_background(crieur_media::uac::EXIT_GRACE).await;
            test_pause("after-call");
        }
        (call, report)
    }
}

/// The SIGKILL test that stops after a call's attempt is stored wants the call over on the
/// wire first: its BYE's transaction done (the pause blocks this thread, and a task queued
/// behind it would wait).
async fn settle_for_pause(shared: &Shared) {
    if pausing_at("after-attempt") {
        shared
            .uac
            .wait_background(crieur_media::uac::EXIT_GRACE)
            .await;
    }
}

/// Whether the crash tests asked to stop at `point`.
fn pausing_at(point: &str) -> bool {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    AT.get_or_init(|| std::env::var("CRIEUR_TEST_PAUSE_AT").ok())
        .as_deref()
        == Some(point)
}

/// With `CRIEUR_TEST_PAUSE_AT=<point>`, stop at that point for 30 s so the SIGKILL tests can
/// kill the process exactly there.
fn test_pause(point: &str) {
    if pausing_at(point) {
        println!("paused    at {point}");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::thread::sleep(std::time::Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::{share, Limits};
    use chrono::{DateTime, Duration, Utc};
    use crieur_engine::Pacing;
    use crieur_store::PgStore;

    fn pace(calls_per_second: f64, max_concurrent: u32) -> Pacing {
        Pacing {
            calls_per_second,
            max_concurrent,
        }
    }

    /// Campaigns on one trunk share its rate and channels, whichever node runs them (here
    /// two runs of different campaigns on one node, and a third on another), through the
    /// runs' heartbeats in one PostgreSQL store; another trunk's runs do not count, and a
    /// run that stops beating stops counting.
    #[test]
    fn campaigns_on_one_trunk_share_its_limits_across_runs_and_nodes() {
        let Some(db) = crieur_test_support::pg::PgDb::new() else {
            return;
        };
        let store = PgStore::open(&db.url, true).unwrap_or_else(|e| panic!("{e}"));
        let on = |trunk: &str| Limits {
            campaign: pace(10.0, 10),
            trunk: Some((trunk.into(), pace(6.0, 4))),
        };
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let at = |s: i64| t0 + Duration::seconds(s);
        let pacing = |l: &Limits, campaign: &str, node: &str, t: DateTime<Utc>| {
            l.pacing(&store, campaign, node, t, t - Duration::seconds(30))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let (x, y) = (
            on("trunk sip.example:5060 u"),
            on("trunk other.example:5060 u"),
        );
        // Alone on the trunk: the trunk's limits bind (tighter than the campaign's).
        assert_eq!(pacing(&x, "a", "n1", at(0)), pace(6.0, 4));
        // Campaign b on the same node and trunk: half each.
        assert_eq!(pacing(&x, "b", "n1", at(1)), pace(3.0, 2));
        assert_eq!(pacing(&x, "a", "n1", at(2)), pace(3.0, 2));
        // Campaign b on a second node too: a third of the rate each; channels rounded down
        // (1 each: 3 in all, within the trunk's 4).
        assert_eq!(pacing(&x, "b", "n2", at(3)), pace(2.0, 1));
        // b's two nodes also share b's own pacing (10 / 2 = 5, looser than the trunk's 2).
        assert_eq!(pacing(&x, "b", "n1", at(4)), pace(2.0, 1));
        // A campaign on another trunk is alone on its trunk.
        assert_eq!(pacing(&y, "c", "n1", at(5)), pace(6.0, 4));
        // n2 and b stop: 40 s later only a's run is live on the trunk.
        assert_eq!(pacing(&x, "a", "n1", at(45)), pace(6.0, 4));
        // No trunk limits: only the campaign's pacing.
        let free = Limits {
            campaign: pace(10.0, 10),
            trunk: None,
        };
        assert_eq!(pacing(&free, "a", "n1", at(46)), pace(10.0, 10));
    }

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
