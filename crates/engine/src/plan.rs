//! The planner: due queue, caps, retries, pacing.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
pub use crieur_outcome::{AttemptOutcome, TRUNK_FAULT_PREFIX};
use crieur_scheduler::{Contact, ContactId, Decision, Evaluator, Policy, SkipReason};

/// Retry rule for one outcome: wait at least `delay`, retry at most `max_retries` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryRule {
    pub delay: Duration,
    pub max_retries: u32,
}

/// Retry rules per retryable outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub busy: RetryRule,
    pub no_answer: RetryRule,
    pub failed: RetryRule,
    pub rejected: RetryRule,
    pub machine: RetryRule,
    pub interrupted: RetryRule,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let r = |mins: u64, n: u32| RetryRule {
            delay: Duration::from_secs(mins * 60),
            max_retries: n,
        };
        RetryPolicy {
            busy: r(30, 3),
            no_answer: r(4 * 60, 3),
            failed: r(15, 2),
            rejected: r(24 * 60, 0),
            machine: r(24 * 60, 1),
            interrupted: r(10, 2),
        }
    }
}

impl RetryPolicy {
    /// Whether this campaign may try again, from its own earlier attempts (`this_campaign`;
    /// others are ignored), by the same rules [`Planner::report`] applies: after a final
    /// outcome or a refusal, never; after another, not before the last attempt's instant plus
    /// the outcome's delay, and not once its retries are used up.
    pub fn gate(&self, attempts: &[Attempt]) -> RetryGate {
        let mine = || {
            attempts
                .iter()
                .filter(|a| a.this_campaign && a.outcome.counts())
        };
        let Some(last) = mine().max_by_key(|a| a.at) else {
            return RetryGate::Open;
        };
        let o = last.outcome;
        if o.is_final() || o.is_refusal() {
            return RetryGate::Done;
        }
        let Some(rule) = self.rule(o) else {
            return RetryGate::Done;
        };
        let tries = mine().filter(|a| a.outcome == o).count() as u32;
        if tries > rule.max_retries {
            return RetryGate::Done;
        }
        match chrono::Duration::from_std(rule.delay)
            .ok()
            .and_then(|d| last.at.checked_add_signed(d))
        {
            Some(t) => RetryGate::NotBefore(t),
            None => RetryGate::Done,
        }
    }

    fn rule(&self, o: AttemptOutcome) -> Option<RetryRule> {
        Some(match o {
            AttemptOutcome::Busy => self.busy,
            AttemptOutcome::NoAnswer => self.no_answer,
            AttemptOutcome::Failed => self.failed,
            AttemptOutcome::Rejected => self.rejected,
            AttemptOutcome::Machine => self.machine,
            AttemptOutcome::Interrupted => self.interrupted,
            _ => return None,
        })
    }
}

/// What the retry rules say about calling again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryGate {
    /// No earlier attempt in this campaign.
    Open,
    /// Not before this instant (it may have passed).
    NotBefore(DateTime<Utc>),
    /// Never again in this campaign.
    Done,
}

/// Attempt caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapRules {
    /// Attempts per contact in this campaign.
    pub max_attempts: u32,
    /// At most `.0` attempts in any rolling `.1` (FR: 4 per 30 days; US non-commercial: 3).
    pub rolling: Option<(u32, Duration)>,
    /// After a refusal, no contact for this long (FR: 60 days).
    pub quiet_after_refusal: Option<Duration>,
}

impl CapRules {
    /// The rule set's defaults: FR 4 per 30 days and 60 quiet days after a refusal; US 3 per
    /// 30 days; `none` only the campaign's attempt cap.
    pub fn for_ruleset(name: &str, max_attempts: u32) -> Self {
        const DAY: u64 = 86_400;
        match name {
            "FR" => CapRules {
                max_attempts,
                rolling: Some((4, Duration::from_secs(30 * DAY))),
                quiet_after_refusal: Some(Duration::from_secs(60 * DAY)),
            },
            "US" => CapRules {
                max_attempts,
                rolling: Some((3, Duration::from_secs(30 * DAY))),
                quiet_after_refusal: None,
            },
            _ => CapRules {
                max_attempts,
                rolling: None,
                quiet_after_refusal: None,
            },
        }
    }

    /// Every way these caps are looser than `rules` (a rule set's own, from
    /// [`CapRules::for_ruleset`]); empty when they are at least as strict. A rolling cap is
    /// at least as strict when it allows no more calls over a window at least as long. The
    /// attempt cap is the campaign's own and not compared.
    pub fn looser_than(&self, rules: &CapRules) -> Vec<Loosening> {
        const DAY: u64 = 86_400;
        let days = |d: Duration| d.as_secs() / DAY;
        let mut out = Vec::new();
        if let Some((rm, rw)) = rules.rolling {
            let looser = match self.rolling {
                None => true,
                Some((m, w)) => m > rm || w < rw,
            };
            if looser {
                out.push(Loosening::RollingCap {
                    given: self.rolling.map(|(m, w)| (m, days(w))),
                    required: (rm, days(rw)),
                });
            }
        }
        if let Some(rq) = rules.quiet_after_refusal {
            if self.quiet_after_refusal.is_none_or(|q| q < rq) {
                out.push(Loosening::QuietAfterRefusal {
                    given_days: self.quiet_after_refusal.map(days),
                    required_days: days(rq),
                });
            }
        }
        out
    }
}

/// A way caps are looser than a rule set's own ([`CapRules::looser_than`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loosening {
    /// The rolling cap allows more calls, or counts them over a shorter window, or is absent
    /// (`given: None`). Pairs are (calls, days).
    RollingCap {
        given: Option<(u32, u64)>,
        required: (u32, u64),
    },
    /// The quiet period after a refusal is shorter, or absent (`given_days: None`).
    QuietAfterRefusal {
        given_days: Option<u64>,
        required_days: u64,
    },
}

impl std::fmt::Display for Loosening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loosening::RollingCap {
                given,
                required: (m, d),
            } => {
                match given {
                    Some((gm, gd)) => write!(f, "rolling cap {gm} calls per {gd} days")?,
                    None => write!(f, "no rolling cap")?,
                }
                write!(f, " where the rule set allows at most {m} per {d} days")
            }
            Loosening::QuietAfterRefusal {
                given_days,
                required_days,
            } => {
                match given_days {
                    Some(g) => write!(f, "{g} quiet days after a refusal")?,
                    None => write!(f, "no quiet period after a refusal")?,
                }
                write!(f, " where the rule set requires {required_days}")
            }
        }
    }
}

/// Why the caps hold a contact back now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapHit {
    /// The campaign's attempt cap is reached: done for this campaign.
    AttemptCap { made: u32, max: u32 },
    /// The rolling cap (all campaigns); lifts when the oldest counted attempt leaves the window.
    RollingCap {
        recent: u32,
        max: u32,
        days: u64,
        until: DateTime<Utc>,
    },
    /// A refusal within the quiet period (all campaigns).
    QuietAfterRefusal {
        refused_at: DateTime<Utc>,
        outcome: AttemptOutcome,
        until: DateTime<Utc>,
    },
}

impl CapHit {
    /// When the hold lifts (none: never, for this campaign).
    pub fn until(&self) -> Option<DateTime<Utc>> {
        match self {
            CapHit::AttemptCap { .. } => None,
            CapHit::RollingCap { until, .. } | CapHit::QuietAfterRefusal { until, .. } => {
                Some(*until)
            }
        }
    }
}

impl std::fmt::Display for CapHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapHit::AttemptCap { made, max } => {
                write!(f, "attempt cap: {made} of {max} attempts made in this campaign")
            }
            CapHit::RollingCap {
                recent,
                max,
                days,
                until,
            } => write!(
                f,
                "rolling cap: {recent} attempts in the last {days} days, all campaigns (at most {max}); lifts at {}",
                until.to_rfc3339()
            ),
            CapHit::QuietAfterRefusal {
                refused_at,
                outcome,
                until,
            } => write!(
                f,
                "refused on {} ({}): no contact until {}",
                refused_at.to_rfc3339(),
                outcome.as_str(),
                until.to_rfc3339()
            ),
        }
    }
}

impl CapRules {
    /// Checks `attempts` (every attempt on the number, all campaigns, in any order) against
    /// the caps at `now`. The one place the caps are computed: the planner, the single-call
    /// command and replay all use it. Trunk faults ([`AttemptOutcome::counts`]) are ignored.
    pub fn check(&self, attempts: &[Attempt], now: DateTime<Utc>) -> Option<CapHit> {
        let counted: Vec<Attempt> = attempts
            .iter()
            .filter(|a| a.outcome.counts())
            .copied()
            .collect();
        let attempts = &counted[..];
        let made = attempts.iter().filter(|a| a.this_campaign).count() as u32;
        if made >= self.max_attempts {
            return Some(CapHit::AttemptCap {
                made,
                max: self.max_attempts,
            });
        }
        if let Some(q) = self.quiet_after_refusal {
            let latest = attempts
                .iter()
                .filter(|a| a.outcome.is_refusal() && plus(a.at, q) > now)
                .max_by_key(|a| a.at);
            if let Some(r) = latest {
                return Some(CapHit::QuietAfterRefusal {
                    refused_at: r.at,
                    outcome: r.outcome,
                    until: plus(r.at, q),
                });
            }
        }
        if let Some((max, window)) = self.rolling {
            // Exact instants: an attempt leaves the window when `window` has passed since it.
            let mut recent: Vec<DateTime<Utc>> = attempts
                .iter()
                .map(|a| a.at)
                .filter(|&a| plus(a, window) > now && a <= now)
                .collect();
            if recent.len() as u32 >= max {
                // Lifts when enough of the counted attempts have left the window to leave
                // room for one more.
                recent.sort_unstable();
                let k = recent.len() - max as usize;
                // (`max` 0 allows nothing: held for a whole window from now.)
                let from = recent.get(k).copied().unwrap_or(now);
                return Some(CapHit::RollingCap {
                    recent: recent.len() as u32,
                    max,
                    days: window.as_secs() / 86_400,
                    until: plus(from, window),
                });
            }
        }
        None
    }
}

/// Calls per second (token bucket) and concurrent calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    pub calls_per_second: f64,
    pub max_concurrent: u32,
}

/// One past attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    /// Made by this campaign: counts toward its attempt cap. Every attempt counts toward the
    /// rolling cap and the quiet period.
    pub this_campaign: bool,
}

/// Dial this contact now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialOrder {
    /// Index of the contact in the planner.
    pub contact: usize,
    /// 1-based attempt number.
    pub attempt: u32,
    pub at: DateTime<Utc>,
}

/// Why a due contact was not dialled and when it comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipNote {
    /// The policy said Skip; back at `next` (none: never).
    Policy {
        reasons: Vec<SkipReason>,
        next: Option<DateTime<Utc>>,
    },
    /// A cap holds it ([`CapHit::until`] says until when; never: done for this campaign).
    Cap(CapHit),
}

#[derive(Debug, Default, Clone)]
struct State {
    attempts: Vec<Attempt>,
    in_flight: bool,
    done: bool,
    /// Not before this (retry delay, quiet period), seconds.
    not_before: i64,
    /// Its entry in the due queue, if queued.
    due_at: Option<i64>,
    /// The slot is free: its contact was handed back ([`Planner::settle`]).
    free: bool,
}

/// [`Planner::due_count`] counts no further (a display's figure: "at least").
pub const DUE_COUNT_CAP: usize = 100_000;

/// The scheduling state of one campaign.
pub struct Planner<'p> {
    contacts: Vec<Contact>,
    states: Vec<State>,
    /// (due instant in seconds, contact index).
    due: BTreeSet<(i64, usize)>,
    caps: CapRules,
    retry: RetryPolicy,
    pacing: Pacing,
    tokens: f64,
    last_refill: Option<i64>,
    in_flight: u32,
    eval: Evaluator<'p>,
    /// Skips noted by the last tick (for the audit log and `simulate`).
    pub skipped: Vec<(usize, SkipNote)>,
    /// Slots freed by [`Planner::settle`], reused by [`Planner::admit`].
    free: Vec<usize>,
}

fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// The first whole second at or after `t`: a contact held until `t` is due then, never
/// earlier (rounding down would retry up to a second early).
fn secs_ceil(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

/// `t + d`, exact (saturating far in the future).
fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn utc(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or_default()
}

impl<'p> Planner<'p> {
    /// A planner with every contact due at `start`.
    pub fn new(
        contacts: Vec<Contact>,
        policy: &'p Policy,
        caps: CapRules,
        retry: RetryPolicy,
        pacing: Pacing,
        start: DateTime<Utc>,
    ) -> Self {
        let due = (0..contacts.len()).map(|i| (secs(start), i)).collect();
        let queued = State {
            due_at: Some(secs(start)),
            ..State::default()
        };
        Planner {
            states: vec![queued; contacts.len()],
            contacts,
            due,
            caps,
            retry,
            pacing,
            tokens: pacing.calls_per_second.max(1.0),
            last_refill: None,
            in_flight: 0,
            eval: Evaluator::new(policy),
            skipped: Vec::new(),
            free: Vec::new(),
        }
    }

    /// How many contacts the planner holds (done or not).
    pub fn len(&self) -> usize {
        self.contacts.len()
    }

    /// Whether it holds no contact.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
    }

    /// The contact at `i`.
    pub fn contact(&self, i: usize) -> &Contact {
        &self.contacts[i]
    }

    /// Past attempts of contact `i`.
    pub fn attempts(&self, i: usize) -> &[Attempt] {
        &self.states[i].attempts
    }

    /// The earliest instant anything is due (for sleeping until then), if any.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.due.first().map(|&(t, _)| utc(t))
    }

    /// When [`Planner::tick`] may next hand out a call (for sleeping until then): the next
    /// due contact, or later when pacing holds it — the instant the token bucket has a token
    /// again. `None` when nothing is queued, or every call slot is taken (a call ending is
    /// then what wakes the caller).
    pub fn poll_timeout(&self) -> Option<DateTime<Utc>> {
        let due = self.next_due()?;
        if self.in_flight >= self.pacing.max_concurrent {
            return None;
        }
        if self.tokens >= 1.0 {
            return Some(due);
        }
        let rate = self.pacing.calls_per_second;
        if rate <= 0.0 {
            return None;
        }
        let last = self.last_refill?;
        // Whole milliseconds, rounded up: never before the token is there.
        let wait_ms = ((1.0 - self.tokens) / rate * 1000.0).ceil() as i64;
        let token = DateTime::from_timestamp_millis(last.saturating_add(wait_ms))?;
        Some(due.max(token))
    }

    /// Changes the pacing (e.g. this node's share of a campaign's, as nodes come and go):
    /// the token bucket keeps what it holds, up to the new rate's burst.
    pub fn set_pacing(&mut self, pacing: Pacing) {
        self.tokens = self.tokens.min(pacing.calls_per_second.max(1.0));
        self.pacing = pacing;
    }

    /// Calls in progress.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Contacts still to be dialled or in progress.
    pub fn remaining(&self) -> usize {
        self.states.iter().filter(|s| !s.done && !s.free).count()
    }

    /// Takes in a contact read from the store's due index, due at `due`, with its past
    /// attempts (as [`Planner::load_history`]): queued then, or later if its history holds
    /// it, or done. Reuses a slot [`Planner::settle`] freed. Returns its index.
    pub fn admit(&mut self, contact: Contact, attempts: Vec<Attempt>, due: DateTime<Utc>) -> usize {
        let i = match self.free.pop() {
            Some(i) => {
                self.contacts[i] = contact;
                self.states[i] = State::default();
                i
            }
            None => {
                self.contacts.push(contact);
                self.states.push(State::default());
                self.contacts.len() - 1
            }
        };
        self.load_history(i, attempts);
        if !self.states[i].done {
            self.enqueue(i, secs_ceil(due));
        }
        i
    }

    /// Hands back every contact that is done, or queued after `horizon`, and not in a call:
    /// `(index, next due)` — `None` for done — for the driver to write to the store's due
    /// index. Their slots are freed (the planner then holds only what is due before the
    /// horizon and what is in a call). Costs O(contacts held).
    pub fn settle(&mut self, horizon: DateTime<Utc>) -> Vec<(usize, Option<DateTime<Utc>>)> {
        let h = secs(horizon);
        let mut out = Vec::new();
        let later: Vec<(i64, usize)> = self.due.range((h + 1, 0)..).copied().collect();
        for (t, i) in later {
            if !self.states[i].in_flight {
                self.due.remove(&(t, i));
                self.states[i].due_at = None;
                out.push((i, Some(utc(t))));
            }
        }
        for (i, st) in self.states.iter().enumerate() {
            if st.done && !st.in_flight && !st.free {
                out.push((i, None));
            }
        }
        for &(i, _) in &out {
            self.states[i].free = true;
            self.free.push(i);
        }
        out
    }

    /// Queues contact `i` at `t` (replacing its previous entry): O(log n).
    fn enqueue(&mut self, i: usize, t: i64) {
        if let Some(old) = self.states[i].due_at.replace(t) {
            self.due.remove(&(old, i));
        }
        self.due.insert((t, i));
    }

    /// Token bucket, refilled continuously (milliseconds): calls spread over each second
    /// instead of leaving in a burst at its start.
    fn refill(&mut self, now_ms: i64) {
        let cap = self.pacing.calls_per_second.max(1.0);
        if let Some(last) = self.last_refill {
            let elapsed = (now_ms - last).max(0) as f64 / 1000.0;
            self.tokens = (self.tokens + elapsed * self.pacing.calls_per_second).min(cap);
        }
        self.last_refill = Some(now_ms);
    }

    /// Pops every contact due at or before `now`, decides each, and returns the calls to place
    /// now — at most what pacing allows; the rest stay due. Costs O(due), not O(all).
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<DialOrder> {
        let n = secs(now);
        self.refill(now.timestamp_millis());
        self.skipped.clear();
        let mut orders = Vec::new();
        while let Some(&(t, i)) = self.due.first() {
            if t > n || self.in_flight >= self.pacing.max_concurrent || self.tokens < 1.0 {
                break;
            }
            self.due.pop_first();
            self.states[i].due_at = None;
            let st = &self.states[i];
            if st.done || st.in_flight {
                continue;
            }
            if st.not_before > n {
                let t = st.not_before;
                self.enqueue(i, t);
                continue;
            }
            let made = st
                .attempts
                .iter()
                .filter(|a| a.this_campaign && a.outcome.counts())
                .count() as u32;
            if let Some(hit) = self.caps.check(&st.attempts, now) {
                match hit.until() {
                    Some(until) => self.enqueue(i, secs_ceil(until).max(n + 1)),
                    None => self.states[i].done = true,
                }
                self.skipped.push((i, SkipNote::Cap(hit)));
                continue;
            }
            match self.eval.decide(&self.contacts[i], now) {
                Decision::Dial(_) => {
                    self.tokens -= 1.0;
                    self.in_flight += 1;
                    self.states[i].in_flight = true;
                    orders.push(DialOrder {
                        contact: i,
                        attempt: made + 1,
                        at: now,
                    });
                }
                Decision::Skip(s) => {
                    match s.next_eligible {
                        Some(next) => self.enqueue(i, secs_ceil(next).max(n + 1)),
                        None => self.states[i].done = true,
                    }
                    self.skipped.push((
                        i,
                        SkipNote::Policy {
                            reasons: s.reasons,
                            next: s.next_eligible,
                        },
                    ));
                }
            }
        }
        orders
    }

    /// Makes contact `i` due at `at` (e.g. a lease released after a crash, or a contact whose
    /// consent changed).
    pub fn reschedule(&mut self, i: usize, at: DateTime<Utc>) {
        if i < self.states.len() {
            self.enqueue(i, secs_ceil(at));
        }
    }

    /// Loads contact `i`'s attempts from before this planner (other campaigns, an earlier run):
    /// they count toward the caps, a refusal within the quiet period holds the contact until
    /// it ends, and an opt-out ends it for good.
    pub fn load_history(&mut self, i: usize, attempts: Vec<Attempt>) {
        let Some(st) = self.states.get_mut(i) else {
            return;
        };
        for a in &attempts {
            if let (true, Some(q)) = (a.outcome.is_refusal(), self.caps.quiet_after_refusal) {
                st.not_before = st.not_before.max(secs_ceil(plus(a.at, q)));
            }
        }
        // This campaign's own earlier outcomes: a restarted run goes on where it stopped.
        match self.retry.gate(&attempts) {
            RetryGate::Open => {}
            RetryGate::NotBefore(t) => st.not_before = st.not_before.max(secs_ceil(t)),
            RetryGate::Done => st.done = true,
        }
        st.attempts = attempts;
    }

    /// Contacts due at or before `now` (waiting for pacing or a call slot), counted up to
    /// [`DUE_COUNT_CAP`]: O(min(due, cap)).
    pub fn due_count(&self, now: DateTime<Utc>) -> usize {
        self.due
            .range(..(secs(now) + 1, 0))
            .take(DUE_COUNT_CAP)
            .count()
    }

    /// The index of the contact the planner holds with this id (not a slot
    /// [`Planner::settle`] freed), if any: O(contacts held).
    pub fn index_of(&self, id: &ContactId) -> Option<usize> {
        self.contacts
            .iter()
            .zip(&self.states)
            .position(|(c, st)| !st.free && c.id() == id)
    }

    /// Contact `i` imported again while the campaign runs (new consent records): it takes the
    /// new record and, unless in a call now or done by its retry rules, is looked at again at
    /// `now` (its caps, retry delay and the policy are checked then, as for any due contact).
    pub fn replace(&mut self, i: usize, contact: Contact, now: DateTime<Utc>) {
        if self.states.get(i).is_none_or(|st| st.free) {
            return;
        }
        self.contacts[i] = contact;
        let st = &mut self.states[i];
        if st.in_flight {
            // Its report requeues it.
            return;
        }
        st.done = self.retry.gate(&st.attempts) == RetryGate::Done;
        if !st.done {
            let at = secs_ceil(now).max(st.not_before);
            self.enqueue(i, at);
        }
    }

    /// A dial order from [`Planner::tick`] was not placed after all (the re-check just before
    /// the INVITE refused it, another process holds the contact's lease …): no attempt is
    /// counted; the contact comes back at `retry_at`, or never (`None`).
    pub fn cancel(&mut self, contact: usize, retry_at: Option<DateTime<Utc>>) {
        let Some(st) = self.states.get_mut(contact) else {
            return;
        };
        if st.in_flight {
            st.in_flight = false;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        match retry_at {
            Some(t) => self.enqueue(contact, secs_ceil(t)),
            None => self.states[contact].done = true,
        }
    }

    /// A call placed by [`Planner::tick`] ended at `at` with `outcome`.
    pub fn report(&mut self, contact: usize, at: DateTime<Utc>, outcome: AttemptOutcome) {
        let Some(st) = self.states.get_mut(contact) else {
            return;
        };
        if st.in_flight {
            st.in_flight = false;
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        st.attempts.push(Attempt {
            at,
            outcome,
            this_campaign: true,
        });
        let n = secs(at);
        if outcome == AttemptOutcome::TrunkFault {
            // Not the contact's answer: due again at once; the caller's breaker decides when
            // dialling resumes.
            self.enqueue(contact, n);
            return;
        }
        if outcome.is_refusal() {
            // The quiet period matters across campaigns (the store's rolling view); here the
            // contact is done for this campaign.
            st.done = true;
            return;
        }
        if outcome.is_final() {
            st.done = true;
            return;
        }
        let Some(rule) = self.retry.rule(outcome) else {
            st.done = true;
            return;
        };
        let tries_of_kind = st
            .attempts
            .iter()
            .filter(|a| a.this_campaign && a.outcome == outcome)
            .count() as u32;
        if tries_of_kind > rule.max_retries {
            st.done = true;
            return;
        }
        // From the exact end of the call, rounded up to the planner's second.
        st.not_before = secs_ceil(plus(at, rule.delay));
        let t = st.not_before;
        self.enqueue(contact, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn a(at: &str, outcome: AttemptOutcome, this_campaign: bool) -> Attempt {
        Attempt {
            at: t(at),
            outcome,
            this_campaign,
        }
    }

    #[test]
    fn attempt_cap_counts_this_campaign_only() {
        let caps = CapRules::for_ruleset("none", 2);
        let now = t("2027-03-10T12:00:00Z");
        let other = [
            a("2027-03-01T10:00:00Z", AttemptOutcome::Busy, false),
            a("2027-03-02T10:00:00Z", AttemptOutcome::Busy, false),
        ];
        assert_eq!(caps.check(&other, now), None);
        let mine = [
            a("2027-03-01T10:00:00Z", AttemptOutcome::Busy, true),
            a("2027-03-02T10:00:00Z", AttemptOutcome::NoAnswer, true),
        ];
        assert_eq!(
            caps.check(&mine, now),
            Some(CapHit::AttemptCap { made: 2, max: 2 })
        );
    }

    #[test]
    fn rolling_cap_counts_every_campaign_and_lifts_when_room_is_made() {
        let caps = CapRules::for_ruleset("FR", 10);
        let h = [
            a("2027-03-01T10:00:00Z", AttemptOutcome::Busy, false),
            a("2027-03-05T10:00:00Z", AttemptOutcome::Busy, true),
            a("2027-03-09T10:00:00Z", AttemptOutcome::NoAnswer, false),
            a("2027-03-10T10:00:00Z", AttemptOutcome::Busy, false),
            a("2027-03-11T10:00:00Z", AttemptOutcome::Busy, true),
        ];
        let now = t("2027-03-12T12:00:00Z");
        match caps.check(&h, now) {
            Some(CapHit::RollingCap {
                recent: 5,
                max: 4,
                days: 30,
                until,
            }) => {
                // Two must leave the window: the second oldest (03-05) + 30 days.
                assert_eq!(until, t("2027-04-04T10:00:00Z"));
                assert_eq!(caps.check(&h, until), None);
                assert!(caps
                    .check(&h, until - chrono::Duration::seconds(1))
                    .is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refusal_in_another_campaign_holds_for_sixty_days_under_fr_only() {
        let h = [a(
            "2027-03-01T10:00:00Z",
            AttemptOutcome::NotInterested,
            false,
        )];
        let fr = CapRules::for_ruleset("FR", 3);
        let until = t("2027-04-30T10:00:00Z");
        assert_eq!(
            fr.check(&h, t("2027-03-20T10:00:00Z")),
            Some(CapHit::QuietAfterRefusal {
                refused_at: t("2027-03-01T10:00:00Z"),
                outcome: AttemptOutcome::NotInterested,
                until,
            })
        );
        assert_eq!(fr.check(&h, until), None);
        let us = CapRules::for_ruleset("US", 3);
        assert_eq!(us.check(&h, t("2027-03-20T10:00:00Z")), None);
    }

    #[test]
    fn trunk_faults_use_up_no_attempt_cap_or_retry() {
        use AttemptOutcome as O;
        let caps = CapRules::for_ruleset("FR", 1);
        let now = t("2027-03-12T12:00:00Z");
        let faults: Vec<Attempt> = (1..=9)
            .map(|d| a(&format!("2027-03-0{d}T10:00:00Z"), O::TrunkFault, true))
            .collect();
        assert_eq!(caps.check(&faults, now), None);
        assert_eq!(RetryPolicy::default().gate(&faults), RetryGate::Open);
        // A real attempt among them still counts, and still sets the retry delay.
        let mut h = faults.clone();
        h.insert(0, a("2027-03-01T09:00:00Z", O::Busy, true));
        assert_eq!(
            caps.check(&h, now),
            Some(CapHit::AttemptCap { made: 1, max: 1 })
        );
        assert_eq!(
            RetryPolicy::default().gate(&h),
            RetryGate::NotBefore(t("2027-03-01T09:30:00Z"))
        );
        let rolling = CapRules::for_ruleset("FR", 10);
        let four: Vec<Attempt> = (1..=4)
            .map(|d| a(&format!("2027-03-0{d}T10:00:00Z"), O::Busy, false))
            .collect();
        assert!(rolling.check(&four, now).is_some());
        assert_eq!(rolling.check(&four[..3], now), None);
        let mut three_and_faults = four[..3].to_vec();
        three_and_faults.extend(faults);
        assert_eq!(rolling.check(&three_and_faults, now), None);
    }

    /// A policy without legal hours and a contact with consent at any hour.
    fn anytime() -> (Policy, Contact) {
        use crieur_scheduler::{ConsentRecord, ContactId, RuleSet, Windows};
        let policy = Policy::new(
            RuleSet::by_name("none").unwrap_or_else(|e| panic!("{e}")),
            None,
            Duration::from_secs(20),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let contact = Contact::new(
            ContactId::new("c1").unwrap_or_else(|e| panic!("{e}")),
            "+33612345678".parse().unwrap_or_else(|e| panic!("{e}")),
            Some(crieur_scheduler::parse_zone("Europe/Paris").unwrap_or_else(|e| panic!("{e}"))),
            vec![ConsentRecord {
                windows: "mon-sun 00:00-24:00"
                    .parse::<Windows>()
                    .unwrap_or_else(|e| panic!("{e}")),
                granted_at: t("2027-01-01T00:00:00Z"),
                expires_at: None,
                revoked_at: None,
                source: "test".into(),
                proof: "test".into(),
            }],
        );
        (policy, contact)
    }

    /// Retry delays count from the exact end of the call: a call ending at .995 s is retried
    /// at the next whole second after end + delay, never in the second before it.
    #[test]
    fn a_retry_is_never_due_before_the_exact_end_plus_its_delay() {
        let (policy, contact) = anytime();
        let start = t("2027-03-10T10:00:00Z");
        let mut p = Planner::new(
            vec![contact],
            &policy,
            CapRules::for_ruleset("none", 5),
            RetryPolicy::default(),
            Pacing {
                calls_per_second: 10.0,
                max_concurrent: 1,
            },
            start,
        );
        assert_eq!(p.tick(start).len(), 1);
        let ended = start + chrono::Duration::milliseconds(20_995);
        p.report(0, ended, AttemptOutcome::Busy);
        let earliest = match RetryPolicy::default().gate(&[Attempt {
            at: ended,
            outcome: AttemptOutcome::Busy,
            this_campaign: true,
        }]) {
            RetryGate::NotBefore(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(earliest, ended + chrono::Duration::minutes(30));
        assert_eq!(p.next_due(), Some(t("2027-03-10T10:30:21Z")));
        assert!(p.tick(t("2027-03-10T10:30:20.999Z")).is_empty());
        assert_eq!(p.tick(t("2027-03-10T10:30:21Z")).len(), 1);
    }

    /// A contact imported while the planner runs is due at once (its history applied: one
    /// done with this campaign stays done); one imported again takes its new record and is
    /// due again unless in a call or done; `due_count` counts what is due.
    #[test]
    fn contacts_added_while_running_are_due_at_once_unless_done() {
        let (policy, contact) = anytime();
        let start = t("2027-03-10T10:00:00Z");
        let pacing = Pacing {
            calls_per_second: 10.0,
            max_concurrent: 1,
        };
        let mut p = Planner::new(
            vec![contact.clone()],
            &policy,
            CapRules::for_ruleset("none", 5),
            RetryPolicy::default(),
            pacing,
            start,
        );
        assert_eq!(p.due_count(start), 1);
        assert_eq!(p.tick(start).len(), 1);
        let later = t("2027-03-10T10:05:00Z");
        let other = |id: &str| {
            Contact::new(
                crieur_scheduler::ContactId::new(id).unwrap_or_else(|e| panic!("{e}")),
                "+33612345679".parse().unwrap_or_else(|e| panic!("{e}")),
                contact.given_zone(),
                contact.consents().to_vec(),
            )
        };
        let i = p.admit(other("c2"), Vec::new(), later);
        assert_eq!((i, p.len(), p.remaining()), (1, 2, 2));
        assert_eq!(p.next_due(), Some(later));
        assert_eq!(p.due_count(later), 1);
        // One call at a time: c1 is in its call, c2 waits for the slot.
        assert!(p.tick(later).is_empty());
        // c1 answered: done; imported again, it stays done (its retry rules say so).
        p.report(0, later, AttemptOutcome::Answered);
        p.replace(0, contact.clone(), later);
        assert_eq!(p.remaining(), 1);
        let orders = p.tick(later);
        assert_eq!(orders.iter().map(|o| o.contact).collect::<Vec<_>>(), [1]);
        // c3 imported with an answered call of this campaign already: done at once.
        let done = p.admit(
            other("c3"),
            vec![Attempt {
                at: start,
                outcome: AttemptOutcome::Answered,
                this_campaign: true,
            }],
            later,
        );
        assert_eq!(p.remaining(), 1, "only c2, in its call");
        assert_eq!(p.due_count(later + chrono::Duration::hours(1)), 0);
        // c2 imported again while in its call: not queued twice; its report requeues it.
        p.replace(1, other("c2"), later);
        assert_eq!(p.due_count(later + chrono::Duration::hours(1)), 0);
        p.report(1, later, AttemptOutcome::Busy);
        assert_eq!(p.due_count(later + chrono::Duration::hours(1)), 1);
        assert_eq!(p.contact(done).id().to_string(), "c3");
        assert_eq!(p.index_of(other("c2").id()), Some(1));
        // c3, done, handed back to the store: its slot is free, not replaced, not found.
        assert!(p.settle(later).contains(&(done, None)));
        assert_eq!(p.index_of(other("c3").id()), None);
        let (left, next) = (p.remaining(), p.next_due());
        p.replace(done, other("c3"), later);
        assert_eq!((p.remaining(), p.next_due()), (left, next));
    }

    /// The caps use exact instants too: a refusal at .9 s holds until .9 s of the last day.
    #[test]
    fn caps_hold_to_the_exact_instant() {
        let refused = t("2027-03-01T10:00:00.900Z");
        let h = [Attempt {
            at: refused,
            outcome: AttemptOutcome::NotInterested,
            this_campaign: false,
        }];
        let fr = CapRules::for_ruleset("FR", 3);
        let until = refused + chrono::Duration::days(60);
        assert!(fr
            .check(&h, until - chrono::Duration::milliseconds(1))
            .is_some());
        assert_eq!(fr.check(&h, until), None);
        let rolling = CapRules::for_ruleset("FR", 10);
        let four: Vec<Attempt> = (0..4)
            .map(|k| Attempt {
                at: refused + chrono::Duration::hours(k),
                outcome: AttemptOutcome::Busy,
                this_campaign: false,
            })
            .collect();
        let lifts = refused + chrono::Duration::days(30);
        assert!(rolling
            .check(&four, lifts - chrono::Duration::milliseconds(1))
            .is_some());
        assert_eq!(rolling.check(&four, lifts), None);
    }

    /// The planner's next wake-up: the next due contact; when pacing holds a due contact, the
    /// instant its token is there; none while every call slot is taken or nothing is queued.
    #[test]
    fn poll_timeout_is_the_next_due_contact_or_the_next_token() {
        let (policy, contact) = anytime();
        let other = Contact::new(
            crieur_scheduler::ContactId::new("c2").unwrap_or_else(|e| panic!("{e}")),
            "+33612345679".parse().unwrap_or_else(|e| panic!("{e}")),
            contact.given_zone(),
            contact.consents().to_vec(),
        );
        let start = t("2027-03-10T10:00:00Z");
        let mut p = Planner::new(
            vec![contact, other],
            &policy,
            CapRules::for_ruleset("none", 5),
            RetryPolicy::default(),
            Pacing {
                calls_per_second: 0.5,
                max_concurrent: 2,
            },
            start,
        );
        assert_eq!(p.poll_timeout(), Some(start));
        // One token (the bucket holds at least one): c1 goes, c2 waits 2 s for the next.
        assert_eq!(p.tick(start).len(), 1);
        assert_eq!(p.poll_timeout(), Some(start + chrono::Duration::seconds(2)));
        assert!(p
            .tick(start + chrono::Duration::milliseconds(1_999))
            .is_empty());
        assert_eq!(p.tick(start + chrono::Duration::seconds(2)).len(), 1);
        // Both slots taken: nothing to wake for until a call ends.
        assert_eq!(p.poll_timeout(), None);
        let end = start + chrono::Duration::seconds(30);
        p.report(0, end, AttemptOutcome::Answered);
        p.report(1, end, AttemptOutcome::Busy);
        // c2 is due again after the busy delay (30 min from the exact end).
        assert_eq!(p.poll_timeout(), Some(end + chrono::Duration::minutes(30)));
    }

    #[test]
    fn a_trunk_fault_requeues_the_contact_at_once_with_the_same_attempt_number() {
        let (policy, contact) = anytime();
        let start = t("2027-03-10T10:00:00Z");
        let mut p = Planner::new(
            vec![contact],
            &policy,
            CapRules::for_ruleset("none", 1),
            RetryPolicy::default(),
            Pacing {
                calls_per_second: 10.0,
                max_concurrent: 1,
            },
            start,
        );
        for k in 0..5 {
            let now = start + chrono::Duration::seconds(k);
            let orders = p.tick(now);
            assert_eq!(orders.len(), 1, "tick {k}: {:?}", p.skipped);
            assert_eq!(orders[0].attempt, 1);
            p.report(0, now, AttemptOutcome::TrunkFault);
            assert_eq!(p.next_due(), Some(now));
        }
        let now = start + chrono::Duration::seconds(10);
        assert_eq!(p.tick(now).len(), 1);
        p.report(0, now, AttemptOutcome::NoAnswer);
        // The one real attempt uses the cap of 1.
        assert_eq!(p.tick(now + chrono::Duration::days(1)).len(), 0);
        assert_eq!(p.remaining(), 0);
    }

    #[test]
    fn caps_looser_than_the_rule_set_are_named() {
        const DAY: u64 = 86_400;
        let fr = CapRules::for_ruleset("FR", 3);
        assert_eq!(fr.looser_than(&fr), vec![]);
        let with = |rolling: Option<(u32, u64)>, quiet: Option<u64>| CapRules {
            max_attempts: 3,
            rolling: rolling.map(|(m, d)| (m, Duration::from_secs(d * DAY))),
            quiet_after_refusal: quiet.map(|d| Duration::from_secs(d * DAY)),
        };
        // Stricter: fewer calls, a longer window, a longer quiet period.
        assert_eq!(with(Some((2, 60)), Some(90)).looser_than(&fr), vec![]);
        let rolling = |given| Loosening::RollingCap {
            given,
            required: (4, 30),
        };
        assert_eq!(
            with(Some((100, 30)), Some(60)).looser_than(&fr),
            vec![rolling(Some((100, 30)))]
        );
        assert_eq!(
            with(Some((4, 20)), Some(60)).looser_than(&fr),
            vec![rolling(Some((4, 20)))]
        );
        assert_eq!(
            with(None, None).looser_than(&fr),
            vec![
                rolling(None),
                Loosening::QuietAfterRefusal {
                    given_days: None,
                    required_days: 60
                }
            ]
        );
        assert_eq!(
            with(Some((4, 30)), Some(59)).looser_than(&fr)[0].to_string(),
            "59 quiet days after a refusal where the rule set requires 60"
        );
        // `none` requires nothing.
        assert_eq!(
            with(None, None).looser_than(&CapRules::for_ruleset("none", 3)),
            vec![]
        );
    }

    #[test]
    fn admitted_contacts_are_queued_settled_and_their_slots_reused() {
        let (p, base) = anytime();
        let start = t("2027-03-10T10:00:00Z");
        let mut pl = Planner::new(
            vec![],
            &p,
            CapRules::for_ruleset("none", 3),
            RetryPolicy::default(),
            Pacing {
                calls_per_second: 100.0,
                max_concurrent: 10,
            },
            start,
        );
        let c = |id: &str| {
            Contact::new(
                crieur_scheduler::ContactId::new(id).unwrap_or_else(|e| panic!("{e}")),
                base.phone().clone(),
                base.given_zone(),
                base.consents().to_vec(),
            )
        };
        let later = start + chrono::Duration::hours(5);
        let a = pl.admit(c("a"), vec![], start);
        let b = pl.admit(c("b"), vec![], later);
        assert_eq!((a, b, pl.len(), pl.remaining()), (0, 1, 2, 2));
        // b is due after the horizon: handed back with its instant, its slot freed.
        let horizon = start + chrono::Duration::minutes(10);
        assert_eq!(pl.settle(horizon), vec![(b, Some(later))]);
        assert_eq!(pl.remaining(), 1);
        // a is dialled (in a call: never handed back), then answered: done, handed back.
        assert_eq!(pl.tick(start).len(), 1);
        assert!(pl.settle(horizon).is_empty());
        pl.report(
            a,
            start + chrono::Duration::seconds(30),
            AttemptOutcome::Answered,
        );
        assert_eq!(pl.settle(horizon), vec![(a, None)]);
        assert_eq!(pl.remaining(), 0);
        assert!(pl.settle(horizon).is_empty(), "handed back once");
        // A new contact takes a freed slot: the planner does not grow.
        let d = pl.admit(c("d"), vec![], start);
        assert!(d == a || d == b);
        assert_eq!(pl.len(), 2);
        assert_eq!(pl.contact(d).id().as_str(), "d");
        assert_eq!(pl.next_due(), Some(start));
        // A busy call is retried after its delay: handed back with that instant.
        assert_eq!(pl.tick(start).len(), 1);
        let ended = start + chrono::Duration::seconds(20);
        pl.report(d, ended, AttemptOutcome::Busy);
        let settled = pl.settle(horizon);
        assert_eq!(settled.len(), 1);
        assert!(settled[0].1 > Some(horizon));
    }
}
