//! The campaign core, crashed at every one of its output boundaries. The live driver's own
//! effect code (`crieur_dial::session::Session`, which `crieur-runner` runs on tokio) — here
//! in simulated time, against a fake call network — carries out the core's outputs on a real
//! store and a real audit log in a tempdir: every decision
//! recorded, the lease, the `invite-sent` record, the tick's commit, the call placed, the
//! opt-out (store, then log), the end of the call (attempt, records, commit), a breaker
//! transition. After the `k`-th of these effects the process "dies": the core, the store, the
//! log (what it had not committed is lost) and the calls in progress are dropped. The next
//! run opens the store and the log, writes its run header, reconciles them
//! (`crieur_dial::reconcile`), rebuilds the core from the store and carries on until nothing
//! is due. Then: no number was dialled beyond its attempt cap, none after its opt-out, no
//! opt-out the log records is missing from the store, every `invite-sent` has exactly one
//! outcome (linked by call id) and every outcome its INVITE, no lease is left, the chain
//! verifies, and `audit replay` over the whole log (run headers, decisions, calls) reports no
//! violation at all. Deterministic: no clock, no sleeps (but the store's lock release).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use crieur_audit::{AuditLog, Options, Record};
use crieur_dial::session::{Halt, Network, Placement, Plan, Point, Probe, Session};
use crieur_dial::DialRules;
use crieur_engine::{BreakerConfig, CapRules, Pacing, RetryPolicy};
use crieur_media::call::Outcome;
use crieur_media::dtmf::DtmfMethod;
use crieur_media::uac::CallReport;
use crieur_scheduler::{Policy, E164};
use crieur_store::Store;
use proptest::prelude::*;

mod common;
use common::{contacts, open, policy, run_header, t};

const CAMPAIGN: &str = "t";

fn number(n: u8) -> E164 {
    format!("+336123456{n:02}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// How the fake network ends a call.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Answered,
    /// Answered; the callee presses 9 five seconds in.
    OptsOut,
    Busy,
    NoAnswer,
}

impl Ending {
    fn length(self) -> Duration {
        match self {
            Ending::Answered | Ending::OptsOut => Duration::milliseconds(21_250),
            Ending::Busy => Duration::milliseconds(1_500),
            Ending::NoAnswer => Duration::seconds(20),
        }
    }

    /// What the media edge would report.
    fn report(self, call: &str) -> CallReport {
        let (outcome, status) = match self {
            Ending::Answered => (Outcome::AnsweredCompleted, 200),
            Ending::OptsOut => (Outcome::AnsweredOptedOut, 200),
            Ending::Busy => (Outcome::Busy, 486),
            Ending::NoAnswer => (Outcome::NoAnswer, 487),
        };
        let mut r = common::report(call, outcome, status);
        if matches!(self, Ending::OptsOut) {
            r.keys = vec![('9', DtmfMethod::Rfc4733, StdDuration::from_millis(7_000))];
            r.opt_out_recorded = true;
        }
        if matches!(self, Ending::NoAnswer) {
            r.ending.hangup_by = crieur_media::call::HangupBy::Us;
        }
        r
    }
}

/// A campaign: its contacts' numbers, the attempt cap, and how the `k`-th call to each
/// number ends.
#[derive(Debug, Clone)]
struct Campaign {
    numbers: Vec<u8>,
    max_attempts: u32,
    endings: Vec<Ending>,
}

impl Campaign {
    fn ending(&self, contact: usize, k: usize) -> Ending {
        self.endings[(contact * 7 + k) % self.endings.len()]
    }

    fn rules(&self) -> DialRules {
        DialRules {
            campaign: CAMPAIGN.into(),
            caps: CapRules::for_ruleset("none", self.max_attempts),
            retry: RetryPolicy::default(),
        }
    }
}

/// Counts the session's effects; the `kill_at`-th is the last before the crash.
struct Fuse {
    done: usize,
    kill_at: Option<usize>,
}

impl Probe for Fuse {
    /// One more effect happened: halt if the process dies right after it.
    fn after(&mut self, _: Point) -> Result<(), Halt> {
        self.done += 1;
        if self.kill_at == Some(self.done) {
            Err(Halt)
        } else {
            Ok(())
        }
    }
}

/// What happens next on the fake network.
#[derive(Debug, Clone)]
enum Event {
    /// The callee pressed the opt-out key.
    OptOut { number: E164, call: String },
    /// The call ended.
    End { call: String, ending: Ending },
}

/// The fake call network: each call placed ends as the campaign says, the `k`-th call to a
/// contact with its `k`-th ending (counted across restarts).
struct FakeNetwork<'a> {
    campaign: &'a Campaign,
    tries: &'a mut HashMap<usize, usize>,
    events: &'a mut BTreeMap<(DateTime<Utc>, u64), Event>,
    seq: &'a mut u64,
}

impl Network for FakeNetwork<'_> {
    fn place(&mut self, p: Placement) {
        let k = self.tries.entry(p.contact).or_default();
        let ending = self.campaign.ending(p.contact, *k);
        *k += 1;
        if matches!(ending, Ending::OptsOut) {
            *self.seq += 1;
            self.events.insert(
                (p.sent_at + Duration::seconds(7), *self.seq),
                Event::OptOut {
                    number: p.who.phone().clone(),
                    call: p.call.clone(),
                },
            );
        }
        *self.seq += 1;
        self.events.insert(
            (p.sent_at + ending.length(), *self.seq),
            Event::End {
                call: p.call,
                ending,
            },
        );
    }
}

/// Whether `r` is the probe's halt (the process died), else its value.
fn died<T>(r: crieur_dial::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(crieur_dial::Error::Halted(_)) => None,
        Err(e) => panic!("{e}"),
    }
}

/// One process's run, from `start`, until nothing is due (`Ok(end)`) or killed (`Err(at)`:
/// the instant it died). The run is `crieur-runner`'s: the same [`Session`] (start,
/// recovery, ticks, call ends, opt-outs), on a fake network in simulated time.
fn run_once(
    c: &Campaign,
    policy: &Policy,
    sp: &Path,
    lp: &Path,
    start: DateTime<Utc>,
    tries: &mut HashMap<usize, usize>,
    fuse: &mut Fuse,
) -> Result<DateTime<Utc>, DateTime<Utc>> {
    let store = Arc::new(open(sp, false));
    let log = AuditLog::open(lp, Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let entries: Vec<_> = crieur_audit::read_all(lp)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, _, e)| e)
        .collect();
    let contacts = store.contacts(CAMPAIGN).unwrap_or_else(|e| panic!("{e}"));
    let plan = Plan {
        rules: c.rules(),
        policy,
        pacing: Pacing {
            calls_per_second: 2.0,
            max_concurrent: 3,
        },
        breaker: BreakerConfig::default(),
        contacts,
        schedule_history: true,
    };
    // As `crieur run` starts: its header, then the store and the log reconciled from the log.
    let mut steps = Vec::new();
    let (mut session, _) = Session::start(
        plan,
        store,
        log,
        &run_header(
            &c.rules(),
            policy,
            StdDuration::from_secs(20),
            StdDuration::from_secs(30),
        ),
        &entries,
        start,
        &mut steps,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let recorder = session.opt_out_recorder();
    let mut events: BTreeMap<(DateTime<Utc>, u64), Event> = BTreeMap::new();
    let mut seq = 0u64;
    let mut now = start;
    loop {
        let next_event = events.keys().next().map(|(t, _)| *t);
        let next = match (session.core().poll_timeout(), next_event) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(n) => n,
                None => break,
            },
        };
        now = next.max(now);
        // What the network did by now.
        while let Some((&(at, k), _)) = events.iter().next() {
            if at > now {
                break;
            }
            let Some(ev) = events.remove(&(at, k)) else {
                break;
            };
            let mut clock = at;
            let done = match ev {
                // The hook: the store first, then the log, both durable before the
                // confirmation plays.
                Event::OptOut { number, call } => {
                    died(recorder.record(&call, &number, at, "key 9 by rfc4733", fuse))
                }
                Event::End { call, ending } => died(
                    session
                        .call_ended(&call, &Ok(ending.report(&call)), &mut clock, fuse)
                        .map(|_| ()),
                ),
            };
            if done.is_none() {
                return Err(at);
            }
        }
        let mut net = FakeNetwork {
            campaign: c,
            tries,
            events: &mut events,
            seq: &mut seq,
        };
        let mut clock = now;
        if died(session.tick(&mut clock, &mut net, fuse, &mut steps)).is_none() {
            return Err(now);
        }
    }
    session
        .record_stop("every contact is done", now)
        .unwrap_or_else(|e| panic!("{e}"));
    Ok(now)
}

/// Runs `c` from scratch, killed after its `kill_at`-th effect (never: `None`), restarted
/// a second later, to the end. Returns how many effects the run had, and checks every
/// invariant.
fn run_with_crash(c: &Campaign, kill_at: Option<usize>) -> Result<usize, TestCaseError> {
    let policy = policy();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sp, lp) = (dir.path().join("store"), dir.path().join("audit"));
    {
        let store = open(&sp, true);
        store
            .upsert_contacts(CAMPAIGN, &contacts(&c.numbers))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // A sub-second start: instants must survive to the microsecond.
    let start = t("2027-03-10T10:00:00.250123Z");
    let mut tries = HashMap::new();
    let mut fuse = Fuse { done: 0, kill_at };
    let mut at = start;
    let mut runs = 0;
    loop {
        runs += 1;
        prop_assert!(runs <= 2, "killed twice");
        match run_once(c, &policy, &sp, &lp, at, &mut tries, &mut fuse) {
            Ok(_) => break,
            // Dead: every call in progress is gone with it. Restarted a second later.
            Err(died) => at = died + Duration::seconds(1),
        }
    }
    check(c, &sp, &lp)?;
    Ok(fuse.done)
}

/// The invariants, from the store and the whole log.
fn check(c: &Campaign, sp: &Path, lp: &Path) -> Result<(), TestCaseError> {
    let store = open(sp, false);
    let records: Vec<Record> = crieur_audit::read_all(lp)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(_, _, e)| e.record)
        .collect();
    prop_assert!(store.leases().unwrap_or_default().is_empty());
    let mut invites = Vec::new();
    let mut outcomes = Vec::new();
    let mut opt_outs: HashMap<String, DateTime<Utc>> = HashMap::new();
    for r in &records {
        match r {
            Record::InviteSent(i) => invites.push(i.clone()),
            Record::Outcome(o) => outcomes.push(o.clone()),
            Record::OptOutRecorded(o) => {
                opt_outs.entry(o.number.clone()).or_insert(o.at);
            }
            _ => {}
        }
    }
    // Every INVITE has exactly one outcome, linked by call id; every outcome its INVITE.
    for i in &invites {
        let mine: Vec<_> = outcomes.iter().filter(|o| o.call == i.call).collect();
        prop_assert_eq!(mine.len(), 1, "call {}", i.call);
        prop_assert_eq!(mine[0].started, i.sent_at);
    }
    for o in &outcomes {
        prop_assert!(invites.iter().any(|i| i.call == o.call), "{}", o.call);
    }
    // No number dialled beyond the cap (what counts: every outcome but a trunk fault), nor
    // after its opt-out.
    let mut counted: HashMap<&str, u32> = HashMap::new();
    for i in &invites {
        if let Some(at) = opt_outs.get(&i.number) {
            prop_assert!(i.sent_at < *at, "{} dialled after its opt-out", i.number);
        }
        let o = outcomes.iter().find(|o| o.call == i.call);
        if o.is_some_and(|o| o.outcome.counts()) {
            *counted.entry(&i.number).or_default() += 1;
        }
    }
    for (n, k) in &counted {
        prop_assert!(*k <= c.max_attempts, "{} dialled {} times", n, k);
    }
    // No opt-out lost: every one the log records is on the store's list.
    for n in opt_outs.keys() {
        let n: E164 = n.parse().unwrap_or_else(|e| panic!("{e}"));
        prop_assert!(store.is_opted_out(&n).unwrap_or(false), "{} lost", n);
    }
    // The store holds one attempt per INVITE, with the log's outcome.
    let mut attempts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for n in &c.numbers {
        if seen.insert(*n) {
            attempts.extend(store.attempts(&number(*n)).unwrap_or_default());
        }
    }
    prop_assert_eq!(attempts.len(), invites.len());
    // The chain verifies; replay re-derives every decision and finds nothing wrong.
    let v = crieur_audit::verify(lp, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    prop_assert!(v.first_break.is_none(), "{:?}", v.first_break);
    let rep = crieur_audit::replay(lp).unwrap_or_else(|e| panic!("{e}"));
    prop_assert!(rep.violations.is_empty(), "{:?}", rep.violations);
    Ok(())
}

fn sample() -> Campaign {
    Campaign {
        // c1 and c3 share a number.
        numbers: vec![0, 1, 2, 1],
        max_attempts: 3,
        endings: vec![
            Ending::Busy,
            Ending::OptsOut,
            Ending::NoAnswer,
            Ending::Answered,
            Ending::Busy,
        ],
    }
}

/// One campaign, killed after each of its effects in turn.
#[test]
fn a_crash_at_every_output_boundary_is_recovered() {
    let c = sample();
    let total = run_with_crash(&c, None).unwrap_or_else(|e| panic!("no crash: {e}"));
    assert!(total > 20, "{total} effects");
    for k in 1..=total {
        run_with_crash(&c, Some(k)).unwrap_or_else(|e| panic!("killed after effect {k}: {e}"));
    }
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        Just(Ending::Answered),
        Just(Ending::OptsOut),
        Just(Ending::Busy),
        Just(Ending::NoAnswer),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Random campaigns (some contacts sharing a number), random call endings, killed after
    /// a random effect.
    #[test]
    fn random_campaigns_crashed_anywhere_recover(
        numbers in prop::collection::vec(0u8..5, 1..6),
        endings in prop::collection::vec(ending(), 1..8),
        max_attempts in 1u32..4,
        kill in 1usize..200,
    ) {
        let c = Campaign { numbers, max_attempts, endings };
        let total = run_with_crash(&c, None)?;
        run_with_crash(&c, Some(1 + kill % total))?;
    }
}
