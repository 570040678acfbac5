//! The campaign core's outputs carried out against the store and the audit log — the one
//! implementation of the dial protocol's effects, for every driver. The live driver
//! (`crieur-runner`, on tokio, calls on a SIP user agent) and the crash tests (simulated
//! time, a fake call network) run this same code; they differ only in their [`Clock`], their
//! [`Network`] and their [`Probe`].
//!
//! The order, around every call (the core says when to commit: [`Output::Commit`]):
//! re-check at the INVITE instant, recorded → lease (store, durable) → `invite-sent` appended
//! → the tick's commit (fsync) → the INVITE ([`Network::place`]) → … → the call's end: the
//! attempt (store, durable) → the call's records and outcome → commit. The opt-out, during the
//! call: the store, then the log, both durable before the confirmation plays
//! ([`OptOutRecorder`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use crieur_audit::record::{OptOutRecorded, Reason};
use crieur_audit::{AuditLog, Entry, Record};
use crieur_engine::{BreakerConfig, Pacing, Planner, Transition};
use crieur_media::call::Outcome;
use crieur_scheduler::{Contact, ContactId, Decision, Evaluator, Policy, E164};
use crieur_store::Store;

use crate::core::{Core, Output};
use crate::fault::{recorded_outcome, verdict, CallEnd, Recorded};
use crate::protocol::{
    finish_call, history, lease_and_record_invite, recheck, record_late_opt_out, record_skip,
    to_attempts, CallRef, DialRules,
};
use crate::recover::{reconcile_node, recover_expired, Node, Recovered};
use crate::{Error, Result};

/// Where the driver's instants come from — the wall clock live, simulated time in tests:
/// time stays an input of the session.
pub trait Clock {
    fn instant(&mut self) -> DateTime<Utc>;
}

/// A fixed instant (simulated time: the test moves it between steps).
impl Clock for DateTime<Utc> {
    fn instant(&mut self) -> DateTime<Utc> {
        *self
    }
}

/// What carries calls: the SIP user agent live, a fake network in tests.
pub trait Network {
    /// Send the INVITE of `call` (its lease and `invite-sent` record are durable). Its end
    /// comes back through [`Session::call_ended`].
    fn place(&mut self, call: Placement);
}

/// A call to place.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The contact's index in the core.
    pub contact: usize,
    pub who: Contact,
    /// The call's id (in the lease, the `invite-sent` record and every record of the call).
    pub call: String,
    /// The INVITE's instant, to the microsecond.
    pub sent_at: DateTime<Utc>,
}

/// The boundaries between the session's effects: after each, its [`Probe`] is asked whether
/// to go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Point {
    /// A re-check's decision appended.
    Decided,
    /// A planner's skip appended.
    Skipped,
    /// A breaker transition appended.
    Breaker,
    /// A contact leased (store, durable).
    Leased,
    /// Its `invite-sent` record appended.
    InviteAppended,
    /// The tick's commit done, before the INVITEs (`invites`: how many follow).
    Committed { invites: usize },
    /// One INVITE handed to the network.
    Placed,
    /// An opt-out in the store (durable), before the log.
    OptOutStored,
    /// An opt-out in the log (durable).
    OptOutLogged,
    /// A finished call's attempt in the store (durable), before its records.
    AttemptStored,
    /// Its records appended.
    CallRecorded,
    /// The commit after a call's end.
    CallCommitted,
}

/// The session stops right after the effect its probe halts at (the crash tests' "the process
/// dies here").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Halt;

/// Watches the session's effect boundaries: the crash tests stop it at one; the live driver
/// may pause there (its SIGKILL tests).
pub trait Probe {
    fn after(&mut self, point: Point) -> std::result::Result<(), Halt>;
}

/// No probe: never halts.
pub struct NoProbe;

impl Probe for NoProbe {
    fn after(&mut self, _: Point) -> std::result::Result<(), Halt> {
        Ok(())
    }
}

fn step(probe: &mut dyn Probe, point: Point) -> Result<()> {
    probe.after(point).map_err(|Halt| Error::Halted(point))
}

/// What the session did, for the driver's events and reports.
#[derive(Debug, Clone)]
pub enum Step {
    /// A contact was decided on (re-checked, or skipped by the planner) and the decision
    /// recorded; `dialled`: its call was placed.
    Decided {
        contact: usize,
        at: DateTime<Utc>,
        decision: Decision,
        refused: Option<Reason>,
        dialled: bool,
    },
    /// The trunk's breaker changed (recorded).
    Breaker {
        transition: Transition,
        call: Option<String>,
    },
}

/// A call in progress.
struct InCall {
    contact: usize,
    sent_at: DateTime<Utc>,
    decision: Decision,
}

/// A call that ended and was recorded.
#[derive(Debug, Clone)]
pub struct Ended {
    pub contact: usize,
    pub who: Contact,
    pub call: String,
    pub sent_at: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    /// The re-check that let it go.
    pub decision: Decision,
    /// As recorded (store and log) and as the planner took it.
    pub recorded: Recorded,
    /// The opt-out key was pressed but could not be recorded during the call: whether it is
    /// recorded now.
    pub late_opt_out: Option<bool>,
    /// The breaker's transition this call caused (recorded).
    pub breaker: Option<Transition>,
}

/// Starting an INVITE this close to the end of its decision's validity is not done: the
/// INVITE must leave (a few ms after its record is durable) while the decision still holds.
pub const SEND_MARGIN: chrono::Duration = chrono::Duration::milliseconds(200);

/// How long a contact another process holds the lease of waits.
const LEASED_ELSEWHERE_WAIT: chrono::Duration = chrono::Duration::seconds(60);

/// What a session dials: the campaign's rules, its contacts, how fast.
pub struct Plan<'p> {
    pub rules: DialRules,
    pub policy: &'p Policy,
    pub pacing: Pacing,
    pub breaker: BreakerConfig,
    pub contacts: Vec<Contact>,
    /// Load each contact's history into the planner (a campaign run). `false`: a run of one
    /// contact, whose re-check at the INVITE instant applies the caps and retry rules.
    pub schedule_history: bool,
}

/// The core and what its outputs are carried out against.
pub struct Session<'p> {
    core: Core<'p>,
    store: Arc<dyn Store + Send + Sync>,
    log: Arc<Mutex<AuditLog>>,
    rules: DialRules,
    eval: Evaluator<'p>,
    calls: HashMap<String, InCall>,
}

impl<'p> Session<'p> {
    /// A run begins: its `header` appended, the store and the log reconciled from the log's
    /// `entries` (every call of an earlier run closed, [`crate::reconcile`]), the planner
    /// loaded (a contact whose history cannot be read is not dialled, and the log says why:
    /// in `steps`), all durable.
    pub fn start(
        plan: Plan<'p>,
        store: Arc<dyn Store + Send + Sync>,
        log: AuditLog,
        header: &Record,
        entries: &[Entry],
        now: DateTime<Utc>,
        steps: &mut Vec<Step>,
    ) -> Result<(Session<'p>, Vec<Recovered>)> {
        Self::start_node(
            plan,
            store,
            Arc::new(Mutex::new(log)),
            header,
            entries,
            now,
            steps,
            &Node::default(),
        )
    }

    /// [`Session::start`] by `node` on a store other nodes may share (its own leases are
    /// reconciled with its log, other nodes' left to them until they expire:
    /// [`crate::reconcile_node`]), on a log others write to as well while the session runs
    /// (a control API's opt-outs and imports: each append takes its lock).
    #[allow(clippy::too_many_arguments)]
    pub fn start_node(
        plan: Plan<'p>,
        store: Arc<dyn Store + Send + Sync>,
        shared: Arc<Mutex<AuditLog>>,
        header: &Record,
        entries: &[Entry],
        now: DateTime<Utc>,
        steps: &mut Vec<Step>,
        node: &Node,
    ) -> Result<(Session<'p>, Vec<Recovered>)> {
        let mut guard = shared.lock().map_err(|_| Error::Poisoned("audit log"))?;
        let log = &mut *guard;
        log.append(now, header)?;
        let recovered = reconcile_node(&*store, log, entries, now, node)?;
        let Plan {
            rules,
            policy,
            pacing,
            breaker,
            contacts,
            schedule_history,
        } = plan;
        let mut planner = Planner::new(
            contacts,
            policy,
            rules.caps.clone(),
            rules.retry.clone(),
            pacing,
            now,
        );
        let mut eval = Evaluator::new(policy);
        for i in (0..planner.len()).filter(|_| schedule_history) {
            match history(&*store, planner.contact(i))? {
                Ok(h) => planner.load_history(i, to_attempts(&h, &rules.campaign)),
                // A damaged history: the number is not dialled in this run, and the log says why.
                Err(_) => {
                    let (decision, refused) = record_skip(
                        &rules,
                        &*store,
                        &mut eval,
                        planner.contact(i),
                        log,
                        now,
                        None,
                    )?;
                    steps.push(Step::Decided {
                        contact: i,
                        at: now,
                        decision,
                        refused,
                        dialled: false,
                    });
                    planner.cancel(i, None);
                }
            }
        }
        log.commit()?;
        drop(guard);
        let session = Session {
            core: Core::new(planner, breaker),
            store,
            log: shared,
            rules,
            eval,
            calls: HashMap::new(),
        };
        Ok((session, recovered))
    }

    pub fn core(&self) -> &Core<'p> {
        &self.core
    }

    /// The store the session works on.
    pub fn store(&self) -> &Arc<dyn Store + Send + Sync> {
        &self.store
    }

    /// Takes in a contact read from the store's due index, due at `due`, with its history; a
    /// contact whose history cannot be read is not taken: its skip is recorded in the log
    /// and it is due again in an hour. Returns its index in the planner, if taken.
    pub fn admit(
        &mut self,
        contact: Contact,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<usize>> {
        match history(&*self.store, &contact)? {
            Ok(h) => {
                let attempts = to_attempts(&h, &self.rules.campaign);
                Ok(Some(self.core.admit(contact, attempts, due)))
            }
            Err(_) => {
                let mut log = self.log.lock().map_err(|_| Error::Poisoned("audit log"))?;
                record_skip(
                    &self.rules,
                    &*self.store,
                    &mut self.eval,
                    &contact,
                    &mut log,
                    now,
                    None,
                )?;
                log.commit()?;
                drop(log);
                self.store.set_due(
                    &self.rules.campaign,
                    &[(contact.id().clone(), Some(now + chrono::Duration::hours(1)))],
                )?;
                Ok(None)
            }
        }
    }

    /// Hands back what the planner settled (see [`Core::settle`]).
    pub fn settle(&mut self, horizon: DateTime<Utc>) -> Vec<(ContactId, Option<DateTime<Utc>>)> {
        self.core.settle(horizon)
    }

    /// This node's share of the pacing (see [`Core::set_pacing`]).
    pub fn set_pacing(&mut self, pacing: Pacing) {
        self.core.set_pacing(pacing);
    }

    /// Recovers the expired leases of other nodes ([`crate::recover_expired`]), in this
    /// session's log.
    pub fn recover_expired(&mut self, now: DateTime<Utc>, node: &Node) -> Result<Vec<Recovered>> {
        let mut log = self.log.lock().map_err(|_| Error::Poisoned("audit log"))?;
        recover_expired(&*self.store, &mut log, now, node)
    }

    /// No new calls from now on.
    pub fn stop(&mut self) {
        self.core.stop();
    }

    /// Calls placed and not ended.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Contacts imported into the running campaign (already in the store, and in its due
    /// index): each one the planner holds takes its new consent records
    /// ([`Core::replace_contact`]). Returns how many it held; the others come in from the
    /// due index ([`Session::admit`]).
    pub fn renew_contacts(&mut self, contacts: Vec<Contact>, now: DateTime<Utc>) -> usize {
        contacts
            .into_iter()
            .map(|c| self.core.replace_contact(c, now))
            .filter(|held| *held)
            .count()
    }

    /// What the opt-out hook of a call records with.
    pub fn opt_out_recorder(&self) -> OptOutRecorder {
        OptOutRecorder {
            store: self.store.clone(),
            log: self.log.clone(),
        }
    }

    fn log(&self) -> Result<MutexGuard<'_, AuditLog>> {
        self.log.lock().map_err(|_| Error::Poisoned("audit log"))
    }

    /// Time has passed: the core's outputs carried out — each dial re-checked at its own
    /// instant and recorded, leased, its `invite-sent` appended; each skip and breaker
    /// transition recorded; at the core's commit, everything durable, then the INVITEs handed
    /// to `net`. A store that fails while leasing stops the dials after it (not dialled); the
    /// ones already leased still leave, then the error is returned.
    pub fn tick(
        &mut self,
        clock: &mut dyn Clock,
        net: &mut dyn Network,
        probe: &mut dyn Probe,
        steps: &mut Vec<Step>,
    ) -> Result<()> {
        let now = clock.instant();
        self.core.handle_timeout(now);
        let mut ready: Vec<Placement> = Vec::new();
        let mut failure: Option<Error> = None;
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Breaker { transition, call } => {
                    self.record_breaker(&transition, call.as_deref())?;
                    steps.push(Step::Breaker { transition, call });
                    step(probe, Point::Breaker)?;
                }
                Output::Skip { contact, note } => {
                    let (decision, refused) = record_skip(
                        &self.rules,
                        &*self.store,
                        &mut self.eval,
                        self.core.contact(contact),
                        &mut *self.log.lock().map_err(|_| Error::Poisoned("audit log"))?,
                        now,
                        Some(&note),
                    )?;
                    steps.push(Step::Decided {
                        contact,
                        at: now,
                        decision,
                        refused,
                        dialled: false,
                    });
                    step(probe, Point::Skipped)?;
                }
                Output::Dial { contact, .. } if failure.is_some() => {
                    self.core.not_dialled(contact, None);
                }
                Output::Dial { contact, .. } => match self.dial(contact, clock, probe, steps) {
                    Ok(Some(p)) => ready.push(p),
                    Ok(None) => {}
                    Err(Error::Store(e)) => {
                        self.core.not_dialled(contact, None);
                        failure = Some(Error::Store(e));
                    }
                    Err(e) => return Err(e),
                },
                Output::Commit => self.commit_and_place(&mut ready, net, probe)?,
            }
        }
        // The core ends every batch with a commit: nothing is left. (Were a dial left, it would
        // be committed before it leaves all the same.)
        if !ready.is_empty() {
            self.commit_and_place(&mut ready, net, probe)?;
        }
        failure.map_or(Ok(()), Err)
    }

    /// The tick's commit, then its INVITEs.
    fn commit_and_place(
        &mut self,
        ready: &mut Vec<Placement>,
        net: &mut dyn Network,
        probe: &mut dyn Probe,
    ) -> Result<()> {
        commit_shared(&self.log)?;
        step(
            probe,
            Point::Committed {
                invites: ready.len(),
            },
        )?;
        for p in ready.drain(..) {
            self.core.dialled(p.contact);
            net.place(p);
            step(probe, Point::Placed)?;
        }
        Ok(())
    }

    /// One dial order at the INVITE instant: re-checked and recorded, then — with
    /// [`SEND_MARGIN`] of the decision's validity left — leased and its INVITE appended
    /// (durable at the tick's commit, before the INVITE leaves). `None`: not dialled (back in
    /// the planner when the re-check says).
    fn dial(
        &mut self,
        i: usize,
        clock: &mut dyn Clock,
        probe: &mut dyn Probe,
        steps: &mut Vec<Step>,
    ) -> Result<Option<Placement>> {
        let who = self.core.contact(i).clone();
        let decided_at = clock.instant();
        // The log's lock is held from the re-check to the `invite-sent` record: an opt-out
        // recorded in the log (the control API writes its record once the store shows it)
        // is then either seen by the re-check or recorded after the INVITE, never between.
        let mut log = self.log.lock().map_err(|_| Error::Poisoned("audit log"))?;
        let checked = recheck(
            &self.rules,
            &*self.store,
            &mut self.eval,
            &who,
            &mut log,
            decided_at,
        )?;
        let refused = checked.refused.as_ref().map(|(why, _)| why.clone());
        let decided = |steps: &mut Vec<Step>, dialled: bool| {
            steps.push(Step::Decided {
                contact: i,
                at: decided_at,
                decision: checked.decision.clone(),
                refused: refused.clone(),
                dialled,
            })
        };
        let valid_until = match checked.verdict() {
            Ok(v) => v,
            Err(retry_at) => {
                decided(steps, false);
                step(probe, Point::Decided)?;
                self.core.not_dialled(i, retry_at);
                return Ok(None);
            }
        };
        step(probe, Point::Decided)?;
        let sent_at = crate::to_micros(clock.instant());
        if valid_until - sent_at <= SEND_MARGIN {
            decided(steps, false);
            let retry_at = valid_until.max(sent_at) + chrono::Duration::seconds(1);
            self.core.not_dialled(i, Some(retry_at));
            return Ok(None);
        }
        let mut halted = None;
        let leased = lease_and_record_invite(
            &*self.store,
            &mut log,
            &self.rules,
            &who,
            decided_at,
            valid_until,
            sent_at,
            false,
            || halted = probe.after(Point::Leased).err(),
        );
        drop(log);
        if halted.is_some() {
            return Err(Error::Halted(Point::Leased));
        }
        let call = match leased {
            Ok(call) => call,
            // Another process is dialling it: not ours to call now.
            Err(Error::Store(crieur_store::Error::Leased { .. })) => {
                decided(steps, false);
                self.core
                    .not_dialled(i, Some(sent_at + LEASED_ELSEWHERE_WAIT));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        decided(steps, true);
        step(probe, Point::InviteAppended)?;
        self.calls.insert(
            call.clone(),
            InCall {
                contact: i,
                sent_at,
                decision: checked.decision.clone(),
            },
        );
        Ok(Some(Placement {
            contact: i,
            who,
            call,
            sent_at,
        }))
    }

    fn record_breaker(&mut self, t: &Transition, call: Option<&str>) -> Result<()> {
        let record = crate::fault::breaker_record(&self.rules.campaign, t, call);
        self.log()?.append(t.at, &Record::TrunkBreaker(record))?;
        Ok(())
    }

    /// Call `call` ended with `end`: its attempt into the store, its records and outcome into
    /// the log (a late opt-out recorded now), the planner and the breaker told, all durable.
    /// `None`: no such call in progress.
    pub fn call_ended(
        &mut self,
        call: &str,
        end: &CallEnd,
        clock: &mut dyn Clock,
        probe: &mut dyn Probe,
    ) -> Result<Option<Ended>> {
        let Some(c) = self.calls.remove(call) else {
            return Ok(None);
        };
        let ended = crate::to_micros(clock.instant());
        let who = self.core.contact(c.contact).clone();
        let verdict = verdict(end);
        let uncounted = self.core.uncounted(c.contact, &verdict);
        let recorded = recorded_outcome(end, uncounted);
        let r = CallRef {
            call,
            campaign: &self.rules.campaign,
            contact: &who,
            sent_at: c.sent_at,
            ended,
        };
        let mut halted = None;
        finish_call(
            &*self.store,
            &mut *self.log.lock().map_err(|_| Error::Poisoned("audit log"))?,
            &r,
            end.as_ref().map_err(|e| e.why.as_str()),
            recorded,
            clock.instant(),
            || halted = probe.after(Point::AttemptStored).err(),
        )?;
        if halted.is_some() {
            return Err(Error::Halted(Point::AttemptStored));
        }
        step(probe, Point::CallRecorded)?;
        let late_opt_out = match end {
            // The person asked: record it now.
            Ok(r) if r.ending.outcome == Outcome::OptOutFailed => Some(record_late_opt_out(
                &*self.store,
                &mut *self.log()?,
                who.phone(),
                clock.instant(),
            )?),
            _ => None,
        };
        let breaker = self
            .core
            .call_ended(c.contact, ended, recorded.scheduled(), verdict);
        if let Some(t) = &breaker {
            self.record_breaker(t, Some(call))?;
            step(probe, Point::Breaker)?;
        }
        commit_shared(&self.log)?;
        step(probe, Point::CallCommitted)?;
        Ok(Some(Ended {
            contact: c.contact,
            who,
            call: call.to_owned(),
            sent_at: c.sent_at,
            ended,
            decision: c.decision,
            recorded,
            late_opt_out,
            breaker,
        }))
    }
}

/// Records the opt-out key pressed during a call: the store first, then the log — both
/// durable when it returns, before the confirmation plays. Cloneable, `Send`: the call's hook
/// holds one.
#[derive(Clone)]
pub struct OptOutRecorder {
    store: Arc<dyn Store + Send + Sync>,
    log: Arc<Mutex<AuditLog>>,
}

impl OptOutRecorder {
    /// `number` opted out during call `call` at `at` (`how`: the key and its method).
    pub fn record(
        &self,
        call: &str,
        number: &E164,
        at: DateTime<Utc>,
        how: &str,
        probe: &mut dyn Probe,
    ) -> Result<()> {
        self.store.add_opt_out(number, at, how)?;
        step(probe, Point::OptOutStored)?;
        append_durable_shared(
            &self.log,
            at,
            &Record::OptOutRecorded(OptOutRecorded {
                call: call.to_owned(),
                number: number.to_string(),
                at,
            }),
        )?;
        step(probe, Point::OptOutLogged)
    }
}

/// Commits a log other threads write to as well: what is buffered is written under its lock,
/// then synced after the lock is released — so that the others' appends (an opt-out, the
/// dial loop's records) never wait behind this fsync, and one fsync serves every write made
/// before it (group commit).
pub fn commit_shared(log: &Mutex<AuditLog>) -> Result<()> {
    let pending = log
        .lock()
        .map_err(|_| Error::Poisoned("audit log"))?
        .write_out()?;
    pending.wait()?;
    Ok(())
}

/// Appends `record` to a shared log and returns once it is durable ([`commit_shared`]); its
/// seq.
pub fn append_durable_shared(
    log: &Mutex<AuditLog>,
    at: DateTime<Utc>,
    record: &Record,
) -> Result<u64> {
    let (seq, pending) = {
        let mut log = log.lock().map_err(|_| Error::Poisoned("audit log"))?;
        let seq = log.append(at, record)?;
        (seq, log.write_out()?)
    };
    pending.wait()?;
    Ok(seq)
}

/// A run's stop record, durable (appended at `now`, checkpointed, committed).
pub fn record_stop(log: &mut AuditLog, reason: &str, now: DateTime<Utc>) -> Result<()> {
    log.append(
        now,
        &Record::RunStop(crieur_audit::record::RunStop {
            reason: reason.into(),
        }),
    )?;
    log.checkpoint(now)?;
    log.commit()?;
    Ok(())
}

impl Session<'_> {
    /// The run's stop record, durable.
    pub fn record_stop(&self, reason: &str, now: DateTime<Utc>) -> Result<()> {
        record_stop(&mut *self.log()?, reason, now)
    }
}
