//! The campaign's dial loop as a sans-IO core: what to dial and when, the trunk's breaker,
//! the end of each call — with no clock, store, log or socket. A driver feeds it time and
//! results and carries out what it asks (str0m's `handle_input` / `poll_output`, and a
//! `poll_timeout` so an idle campaign sleeps until something is due):
//!
//! * inputs: [`Core::handle_timeout`] (time passed), [`Core::dialled`] / [`Core::not_dialled`]
//!   (the driver's re-check, lease and `invite-sent` of a [`Output::Dial`]),
//!   [`Core::call_ended`], [`Core::stop`];
//! * outputs ([`Core::poll_output`]): [`Output::Dial`] (re-check at the INVITE instant, lease,
//!   record — `crate::protocol`), [`Output::Skip`] (record the planner's skip),
//!   [`Output::Breaker`] (record a breaker transition), [`Output::Commit`] (make them durable,
//!   then send the INVITEs);
//! * [`Core::poll_timeout`]: the next due contact or pacing token, or the breaker's timer.
//!
//! [`crate::session::Session`] carries the outputs out, for any driver: the live one
//! (`crieur-runner`) and the crash tests' simulated one run that same code.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use crieur_engine::{
    AttemptOutcome, BreakerConfig, CallVerdict, Permit, Planner, SkipNote, Transition,
};
use crieur_scheduler::{Contact, ContactId};

use crate::fault::TrunkHealth;

/// What the core asks its driver to do.
#[derive(Debug, Clone)]
pub enum Output {
    /// Dial contact `contact` now: re-check it at the INVITE instant, lease it, record its
    /// INVITE; then answer [`Core::dialled`] or [`Core::not_dialled`]. `attempt`: its number
    /// in this campaign (1-based; trunk faults do not count).
    Dial { contact: usize, attempt: u32 },
    /// The planner skipped `contact` (a cap, or the policy): record the decision.
    Skip { contact: usize, note: SkipNote },
    /// The trunk's breaker changed (after the call `call` ended, if any): record it.
    Breaker {
        transition: Transition,
        call: Option<String>,
    },
    /// Make what the outputs before it recorded durable (one commit, fsync, for the whole
    /// tick), then — only then — send the INVITEs of the `Dial`s before it. The core emits
    /// one after every batch of outputs: the lease → durable `invite-sent` → INVITE order is
    /// the core's, not the driver's.
    Commit,
}

/// How long a contact waits when its number is in another call of this run.
const SAME_NUMBER_WAIT: chrono::Duration = chrono::Duration::seconds(60);

/// The campaign's dial loop, sans I/O.
pub struct Core<'p> {
    planner: Planner<'p>,
    health: TrunkHealth,
    /// Calls in progress: contact → its number.
    in_call: HashMap<usize, String>,
    out: VecDeque<Output>,
    stopping: bool,
}

impl<'p> Core<'p> {
    /// A core over `planner` (its contacts' histories loaded) and a closed breaker.
    pub fn new(planner: Planner<'p>, breaker: BreakerConfig) -> Core<'p> {
        Core {
            planner,
            health: TrunkHealth::new(breaker),
            in_call: HashMap::new(),
            out: VecDeque::new(),
            stopping: false,
        }
    }

    /// The planner (contacts, what remains, what is due).
    pub fn planner(&self) -> &Planner<'p> {
        &self.planner
    }

    /// Takes in a contact read from the store's due index, due at `due`, with its history
    /// (see [`Planner::admit`]); returns its index.
    pub fn admit(
        &mut self,
        contact: Contact,
        attempts: Vec<crieur_engine::Attempt>,
        due: DateTime<Utc>,
    ) -> usize {
        self.planner.admit(contact, attempts, due)
    }

    /// Hands back the contacts that are done or due after `horizon` and not in a call, with
    /// their next due instant (`None`: done), for the driver to write to the store's due
    /// index; the planner forgets them (see [`Planner::settle`]). Nothing while outputs are
    /// pending (they name contacts by index).
    pub fn settle(&mut self, horizon: DateTime<Utc>) -> Vec<(ContactId, Option<DateTime<Utc>>)> {
        if !self.out.is_empty() {
            return Vec::new();
        }
        self.planner
            .settle(horizon)
            .into_iter()
            .map(|(i, at)| (self.planner.contact(i).id().clone(), at))
            .collect()
    }

    /// Changes the planner's pacing (see [`Planner::set_pacing`]).
    pub fn set_pacing(&mut self, pacing: crieur_engine::Pacing) {
        self.planner.set_pacing(pacing);
    }

    /// The trunk's health (its breaker, why dialling stopped).
    pub fn health(&self) -> &TrunkHealth {
        &self.health
    }

    /// The contact at index `i`.
    pub fn contact(&self, i: usize) -> &Contact {
        self.planner.contact(i)
    }

    /// Calls in progress.
    pub fn in_call(&self) -> usize {
        self.in_call.len()
    }

    /// The contact imported again while the campaign runs, if the planner holds it: it takes
    /// the new record ([`Planner::replace`]). Whether it was held.
    pub fn replace_contact(&mut self, contact: Contact, now: DateTime<Utc>) -> bool {
        match self.planner.index_of(contact.id()) {
            Some(i) => {
                self.planner.replace(i, contact, now);
                true
            }
            None => false,
        }
    }

    /// Contacts due at `now` ([`Planner::due_count`]).
    pub fn due_count(&self, now: DateTime<Utc>) -> usize {
        self.planner.due_count(now)
    }

    /// No new calls from now on (the calls in progress still end through [`Core::call_ended`]).
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Time has passed: the breaker's timer, then — unless stopping or the breaker holds
    /// dialling — every contact due at `now` (one probe when half-open).
    pub fn handle_timeout(&mut self, now: DateTime<Utc>) {
        let before = self.out.len();
        self.due(now);
        if self.out.len() > before {
            self.out.push_back(Output::Commit);
        }
    }

    /// [`Core::handle_timeout`] but the commit.
    fn due(&mut self, now: DateTime<Utc>) {
        if let Some(t) = self.health.breaker.poll(now) {
            self.note(t, None);
        }
        let permit = self.health.breaker.permit();
        if self.stopping || matches!(permit, Permit::None { .. }) {
            return;
        }
        let mut orders = self.planner.tick(now);
        if permit == Permit::Probe && orders.len() > 1 {
            // Half-open: one probe call; the others stay due.
            for o in orders.split_off(1) {
                self.planner.cancel(o.contact, Some(now));
            }
        }
        for o in orders {
            let number = self.planner.contact(o.contact).phone().to_string();
            if self.in_call.values().any(|n| *n == number) {
                // The same number under another contact id is being called right now.
                self.planner.cancel(o.contact, Some(now + SAME_NUMBER_WAIT));
                continue;
            }
            // Held until the driver answers: the number is in a call from now.
            self.in_call.insert(o.contact, number);
            self.out.push_back(Output::Dial {
                contact: o.contact,
                attempt: o.attempt,
            });
        }
        for (contact, note) in std::mem::take(&mut self.planner.skipped) {
            self.out.push_back(Output::Skip { contact, note });
        }
    }

    /// The driver placed the call of an [`Output::Dial`] (its INVITE recorded).
    pub fn dialled(&mut self, contact: usize) {
        self.health.breaker.on_call_started();
        debug_assert!(self.in_call.contains_key(&contact));
    }

    /// The driver did not place the call of an [`Output::Dial`] (the re-check refused it,
    /// another process holds its lease, too little validity was left): it comes back at
    /// `retry_at` (never: `None`). No attempt is counted.
    pub fn not_dialled(&mut self, contact: usize, retry_at: Option<DateTime<Utc>>) {
        self.in_call.remove(&contact);
        self.planner.cancel(contact, retry_at);
    }

    /// Whether the trunk fault (if it is one) that ended contact `contact`'s call goes
    /// uncounted — the name the driver records (`crate::fault::recorded_outcome`) depends on
    /// it. Call once per ended call, before [`Core::call_ended`].
    pub fn uncounted(&mut self, contact: usize, verdict: &CallVerdict) -> bool {
        self.health.uncounted(contact, verdict)
    }

    /// A call ended at `ended` with `outcome` (as recorded); `verdict` is what it tells the
    /// breaker. Requeues the contact per the retry rules (a trunk fault: after the breaker's
    /// open period). Returns the breaker's transition, if the call changed it: the driver
    /// records it with the call (as [`Output::Breaker`]).
    pub fn call_ended(
        &mut self,
        contact: usize,
        ended: DateTime<Utc>,
        outcome: AttemptOutcome,
        verdict: CallVerdict,
    ) -> Option<Transition> {
        self.in_call.remove(&contact);
        self.planner.report(contact, ended, outcome);
        if outcome == AttemptOutcome::TrunkFault {
            // Not at once: the trunk gets the breaker's open period to recover (an open
            // breaker holds it longer; the contact is among the first due when dialling
            // resumes).
            self.planner
                .reschedule(contact, ended + self.health.retry_after);
        }
        let t = self.health.breaker.on_call_ended(ended, verdict)?;
        self.learn(&t);
        Some(t)
    }

    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Core::handle_timeout`] next has something to do: the breaker's timer while it
    /// holds dialling, else the planner's next due contact or pacing token. `None`: only an
    /// input can change anything (a call ending), or stopping.
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        if self.stopping {
            return None;
        }
        match self.health.breaker.permit() {
            Permit::None { until } => until,
            _ => self.planner.poll_timeout(),
        }
    }

    fn note(&mut self, transition: Transition, call: Option<String>) {
        self.learn(&transition);
        self.out.push_back(Output::Breaker { transition, call });
    }

    /// What a transition tells the trunk's health: the last fault's code, why dialling
    /// stopped.
    fn learn(&mut self, transition: &Transition) {
        if let crieur_engine::Cause::Fault(f) = &transition.cause {
            self.health.last_fault_code = f.kind.code();
        }
        if transition.to == crieur_engine::BreakerState::Stopped {
            self.health.stopped = Some(match &transition.cause {
                crieur_engine::Cause::Fault(f) => crate::fault::describe(f),
                c => c.code().to_owned(),
            });
        }
    }
}
