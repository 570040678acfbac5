//! The sans-IO campaign core driven in simulated time against a fake call network (after
//! quinn-proto's `Pair::drive`): the driver jumps from one `poll_timeout` or call end to the
//! next — no sleeps, no clock — and the network ends each call after a scripted time with a
//! scripted outcome. Checked: a number is never in two calls at once, no contact is dialled
//! beyond its attempt cap, the breaker holds dialling while open and lets one probe through,
//! the run ends with nothing due, and the core wakes only when something is due.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use crieur_dial::core::{Core, Output};
use crieur_engine::{
    AttemptOutcome, BreakerConfig, CallVerdict, CapRules, FaultKind, Pacing, Planner, RetryPolicy,
    TrunkFault,
};
use crieur_scheduler::Policy;
use proptest::prelude::*;

mod common;
use common::{contacts, policy, t};

/// How the fake network ends a call: after how long, with what.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Answered,
    Busy,
    NoAnswer,
    /// The trunk refused it before anything rang (503).
    Fault,
}

impl Ending {
    fn outcome(self, uncounted: bool) -> AttemptOutcome {
        match self {
            Ending::Answered => AttemptOutcome::Answered,
            Ending::Busy => AttemptOutcome::Busy,
            Ending::NoAnswer => AttemptOutcome::NoAnswer,
            Ending::Fault if uncounted => AttemptOutcome::TrunkFault,
            Ending::Fault => AttemptOutcome::Failed,
        }
    }

    fn verdict(self) -> CallVerdict {
        match self {
            Ending::Fault => CallVerdict::Fault(TrunkFault {
                kind: FaultKind::ServerError,
                sip_status: Some(503),
                detail: String::new(),
            }),
            _ => CallVerdict::Served,
        }
    }

    fn length(self) -> chrono::Duration {
        match self {
            Ending::Answered => chrono::Duration::milliseconds(21_250),
            Ending::Busy => chrono::Duration::milliseconds(1_500),
            Ending::NoAnswer => chrono::Duration::seconds(20),
            Ending::Fault => chrono::Duration::milliseconds(40),
        }
    }
}

/// What a drive saw.
#[derive(Debug, Default)]
struct Drive {
    /// Every dial: (instant, contact, how it ended).
    dials: Vec<(DateTime<Utc>, usize, Ending)>,
    /// Instants the core was woken at (its `poll_timeout`s, and call ends).
    wakes: usize,
    breaker: Vec<String>,
    /// Dials placed while the breaker was open.
    dialled_while_open: usize,
}

/// Drives `core` until nothing is due and no call is in progress (or `limit` wakes), the
/// `k`-th call of each contact ending as `script(contact, k)`.
fn drive(
    core: &mut Core<'_>,
    start: DateTime<Utc>,
    script: &dyn Fn(usize, usize) -> Ending,
    limit: usize,
) -> Drive {
    let mut d = Drive::default();
    // Calls in progress: end instant → (contact, ending), and the numbers in a call.
    let mut ends: BTreeMap<(DateTime<Utc>, usize), Ending> = BTreeMap::new();
    let mut busy_numbers: HashMap<String, usize> = HashMap::new();
    let mut tries: HashMap<usize, usize> = HashMap::new();
    let mut now = start;
    while d.wakes < limit {
        let next_end = ends.keys().next().map(|(t, _)| *t);
        let next = match (core.poll_timeout(), next_end) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(n) => n,
                None => break,
            },
        };
        // (Due "at or before": a due instant may be behind the clock.)
        now = next.max(now);
        d.wakes += 1;
        // Calls that end now.
        while let Some((&(at, i), &ending)) = ends.iter().next() {
            if at > now {
                break;
            }
            ends.remove(&(at, i));
            let number = core.contact(i).phone().to_string();
            busy_numbers.remove(&number);
            let verdict = ending.verdict();
            let uncounted = core.uncounted(i, &verdict);
            if let Some(tr) = core.call_ended(i, at, ending.outcome(uncounted), verdict) {
                d.breaker.push(format!("{:?}", tr.to));
            }
        }
        core.handle_timeout(now);
        // Every batch of outputs ends with a commit (nothing leaves before it is durable).
        let mut uncommitted = 0;
        while let Some(out) = core.poll_output() {
            uncommitted += 1;
            match out {
                Output::Commit => uncommitted = 0,
                Output::Dial { contact: i, .. } => {
                    let number = core.contact(i).phone().to_string();
                    assert!(
                        !busy_numbers.contains_key(&number),
                        "{number} dialled while in a call"
                    );
                    if matches!(
                        core.health().breaker.state(),
                        crieur_engine::BreakerState::Open { .. }
                    ) {
                        d.dialled_while_open += 1;
                    }
                    core.dialled(i);
                    busy_numbers.insert(number, i);
                    let k = tries.entry(i).or_default();
                    let ending = script(i, *k);
                    *k += 1;
                    d.dials.push((now, i, ending));
                    ends.insert((now + ending.length(), i), ending);
                }
                Output::Skip { .. } => {}
                Output::Breaker { transition, .. } => {
                    d.breaker.push(format!("{:?}", transition.to));
                }
            }
        }
        assert_eq!(uncommitted, 0, "outputs with no commit after them");
    }
    d
}

fn planner<'p>(
    policy: &'p Policy,
    numbers: &[u8],
    max_attempts: u32,
    start: DateTime<Utc>,
) -> Planner<'p> {
    Planner::new(
        contacts(numbers),
        policy,
        CapRules::for_ruleset("none", max_attempts),
        RetryPolicy::default(),
        Pacing {
            calls_per_second: 2.0,
            max_concurrent: 3,
        },
        start,
    )
}

/// Five trunk faults in a row open the breaker: nothing is dialled while it is open, one
/// probe goes when it half-opens, a served probe closes it; the refused contacts are dialled
/// again and every contact ends answered; the core woke only for due work.
#[test]
fn the_breaker_holds_dialling_and_the_campaign_completes() {
    let policy = policy();
    let start = t("2027-03-10T10:00:00.250Z");
    let numbers: Vec<u8> = (0..8).collect();
    let mut core = Core::new(
        planner(&policy, &numbers, 3, start),
        BreakerConfig::default(),
    );
    // The first five calls fail at the trunk; every later one is answered.
    let count = std::cell::Cell::new(0);
    let script = |_: usize, _: usize| {
        count.set(count.get() + 1);
        if count.get() <= 5 {
            Ending::Fault
        } else {
            Ending::Answered
        }
    };
    let d = drive(&mut core, start, &script, 10_000);
    assert_eq!(
        d.breaker.first().map(String::as_str).map(|s| &s[..4]),
        Some("Open")
    );
    assert!(d.breaker.iter().any(|s| s == "HalfOpen"), "{:?}", d.breaker);
    assert_eq!(d.breaker.last().map(String::as_str), Some("Closed"));
    assert_eq!(d.dialled_while_open, 0);
    assert_eq!(core.planner().remaining(), 0);
    assert_eq!(core.in_call(), 0);
    assert_eq!(core.poll_timeout(), None);
    // 5 refused + 8 answered; a trunk fault uses no attempt, so the cap of 3 is not in play.
    assert_eq!(d.dials.len(), 13, "{:?}", d.dials);
    // Woken only for due work: at most one wake per dial, per call end and per breaker timer.
    assert!(d.wakes <= 2 * d.dials.len() + 2, "{} wakes", d.wakes);
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        Just(Ending::Answered),
        Just(Ending::Busy),
        Just(Ending::NoAnswer),
        Just(Ending::Fault),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random campaigns (some contacts sharing a number) and random call endings: a number is
    /// never in two calls at once, nobody is dialled beyond the attempt cap (trunk faults
    /// aside), and the run ends with nothing due.
    #[test]
    fn random_campaigns_respect_the_caps_and_end(
        numbers in prop::collection::vec(0u8..6, 1..8),
        endings in prop::collection::vec(ending(), 1..40),
        max_attempts in 1u32..4,
    ) {
        let policy = policy();
        let start = t("2027-03-10T10:00:00.750Z");
        let mut core = Core::new(
            planner(&policy, &numbers, max_attempts, start),
            BreakerConfig::default(),
        );
        // The trunk recovers after 12 faults (a trunk down for good is probed for ever, by
        // design: its refusals use up no attempt).
        let faults = std::cell::Cell::new(0);
        let script = |i: usize, k: usize| match endings[(i * 7 + k) % endings.len()] {
            Ending::Fault if faults.get() >= 12 => Ending::Busy,
            Ending::Fault => {
                faults.set(faults.get() + 1);
                Ending::Fault
            }
            e => e,
        };
        let d = drive(&mut core, start, &script, 100_000);
        // It ended (no spinning on something due that never goes).
        prop_assert!(d.wakes < 100_000);
        prop_assert_eq!(core.in_call(), 0);
        prop_assert_eq!(core.poll_timeout(), None, "{} wakes", d.wakes);
        prop_assert_eq!(d.dialled_while_open, 0);
        let mut per: HashMap<usize, Vec<Ending>> = HashMap::new();
        for (_, i, e) in &d.dials {
            per.entry(*i).or_default().push(*e);
        }
        for (i, calls) in &per {
            // Faults may go uncounted; every other ending counts.
            let counted = calls.iter().filter(|e| !matches!(e, Ending::Fault)).count();
            prop_assert!(counted as u32 <= max_attempts, "contact {}: {:?}", i, calls);
        }
    }
}
