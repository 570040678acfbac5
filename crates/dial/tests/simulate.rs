//! Weeks of simulated dialling: windows, caps, retries, opt-outs and pacing all hold.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use crieur_dial::{simulate, OutcomeMix, SimConfig, SimEvent};
use crieur_engine::*;
use crieur_scheduler::*;
use proptest::prelude::*;

fn contacts(n: usize) -> Vec<Contact> {
    let windows = [
        "mon-fri 18:00-20:00",
        "mon-fri 10:00-12:00; sat 10:00-12:00",
        "tue,thu 14:00-19:00",
    ];
    (0..n)
        .map(|i| {
            Contact::new(
                ContactId::new(format!("c{i}")).unwrap_or_else(|e| panic!("{e}")),
                format!("+336{:08}", 10_000_000 + i)
                    .parse()
                    .unwrap_or_else(|e: Error| panic!("{e}")),
                Some(Tz::Europe__Paris),
                vec![ConsentRecord {
                    windows: windows[i % 3]
                        .parse()
                        .unwrap_or_else(|e: Error| panic!("{e}")),
                    granted_at: Utc
                        .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
                        .single()
                        .unwrap_or_default(),
                    expires_at: None,
                    revoked_at: None,
                    source: "sim".into(),
                    proof: "sim".into(),
                }],
            )
        })
        .collect()
}

fn policy() -> Policy {
    Policy::new(
        RuleSet::by_name("FR").unwrap_or_else(|e| panic!("{e}")),
        None,
        Duration::from_secs(25),
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn cfg(seed: u64) -> SimConfig {
    SimConfig {
        from: Utc
            .with_ymd_and_hms(2027, 3, 1, 0, 0, 0)
            .single()
            .unwrap_or_default(),
        days: 42,
        mix: OutcomeMix::parse("busy=0.3,no-answer=0.4,optout=0.05,failed=0.05")
            .unwrap_or_else(|e| panic!("{e}")),
        seed,
        caps: CapRules::for_ruleset("FR", 8),
        retry: RetryPolicy {
            busy: RetryRule {
                delay: Duration::from_secs(3600),
                max_retries: 5,
            },
            no_answer: RetryRule {
                delay: Duration::from_secs(4 * 3600),
                max_retries: 5,
            },
            ..RetryPolicy::default()
        },
        pacing: Pacing {
            calls_per_second: 2.0,
            max_concurrent: 3,
        },
        ring_timeout: Duration::from_secs(25),
        message_length: Duration::from_secs(15),
    }
}

fn check(seed: u64) -> Result<usize, TestCaseError> {
    let p = policy();
    let cs = contacts(40);
    let c = cfg(seed);
    let events = simulate(cs.clone(), &p, &c);
    prop_assert!(!events.is_empty());
    let mut by_contact: HashMap<usize, Vec<&SimEvent>> = HashMap::new();
    for e in &events {
        // Every dial happens where the policy says Dial (consent window, FR hours, holidays, call fit).
        prop_assert!(
            decide(&cs[e.contact], &p, e.at).is_dial(),
            "{} dialled at {}",
            e.contact,
            e.at
        );
        by_contact.entry(e.contact).or_default().push(e);
    }
    for (c_i, evs) in &by_contact {
        prop_assert!(evs.len() <= 8, "contact {c_i}: {} attempts", evs.len());
        for (k, e) in evs.iter().enumerate() {
            prop_assert_eq!(e.attempt as usize, k + 1);
            // FR: at most 4 attempts in any 30 days.
            let window_start = e.at - chrono::Duration::days(30);
            let in_window = evs
                .iter()
                .filter(|x| x.at > window_start && x.at <= e.at)
                .count();
            prop_assert!(
                in_window <= 4,
                "contact {c_i}: {in_window} attempts in 30 days up to {}",
                e.at
            );
            if k > 0 {
                let prev = evs[k - 1];
                // Nothing after an opt-out; retries wait their delay after the previous call ended.
                prop_assert!(
                    prev.outcome != AttemptOutcome::OptedOut
                        && prev.outcome != AttemptOutcome::Answered
                );
                let delay = match prev.outcome {
                    AttemptOutcome::Busy => 3600,
                    AttemptOutcome::NoAnswer => 4 * 3600,
                    AttemptOutcome::Failed => RetryPolicy::default().failed.delay.as_secs() as i64,
                    _ => 0,
                };
                prop_assert!(
                    (e.at - prev.ended).num_seconds() >= delay,
                    "contact {c_i}: retry {} after {:?} at {}",
                    e.at,
                    prev.outcome,
                    prev.ended
                );
            }
        }
    }
    // Pacing: at most 2 calls started in any second, at most 3 at once.
    let mut per_second: HashMap<DateTime<Utc>, usize> = HashMap::new();
    for e in &events {
        *per_second.entry(e.at).or_default() += 1;
        let concurrent = events
            .iter()
            .filter(|x| x.at <= e.at && e.at < x.ended)
            .count();
        prop_assert!(concurrent <= 3, "{concurrent} calls at {}", e.at);
    }
    prop_assert!(per_second.values().all(|&n| n <= 2));
    Ok(events.len())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn six_weeks_hold_every_rule(seed in any::<u64>()) {
        check(seed)?;
    }
}

#[test]
fn deterministic_per_seed() {
    let p = policy();
    let a = simulate(contacts(10), &p, &cfg(7));
    let b = simulate(contacts(10), &p, &cfg(7));
    assert_eq!(a, b);
    assert!(a.len() >= 10);
}

#[test]
fn tick_cost_follows_the_due_contacts() {
    // With every contact due tomorrow, a tick today looks at nothing.
    let p = policy();
    let start = Utc
        .with_ymd_and_hms(2027, 3, 1, 17, 0, 0)
        .single()
        .unwrap_or_default();
    let mut planner = Planner::new(
        contacts(1000),
        &p,
        CapRules::for_ruleset("FR", 3),
        RetryPolicy::default(),
        Pacing {
            calls_per_second: 1000.0,
            max_concurrent: 1000,
        },
        start,
    );
    let orders = planner.tick(start);
    // Window "mon-fri 18:00-20:00" opens at 17:00 UTC on Monday: a third of them dial now.
    assert_eq!(orders.len(), 334);
    let later = planner.tick(start + chrono::Duration::seconds(1));
    assert!(
        later.is_empty() && planner.skipped.is_empty(),
        "a tick with nothing due must touch nothing"
    );
}

#[test]
fn the_rolling_cap_is_what_holds_attempts_to_four_in_30_days() {
    let p = policy();
    let most_in_30_days = |caps: CapRules| {
        let mut c = cfg(11);
        c.caps = caps;
        let events = simulate(contacts(40), &p, &c);
        let mut most = 0;
        for e in &events {
            let n = events
                .iter()
                .filter(|x| {
                    x.contact == e.contact
                        && x.at > e.at - chrono::Duration::days(30)
                        && x.at <= e.at
                })
                .count();
            most = most.max(n);
        }
        most
    };
    assert_eq!(most_in_30_days(CapRules::for_ruleset("FR", 8)), 4);
    // Without the rule set's rolling cap the same campaign would call some people more often.
    assert!(most_in_30_days(CapRules::for_ruleset("none", 8)) > 4);
}

/// Differential: what `simulate` plans is what the campaign core does when a fake call
/// network gives each call the outcome and length `simulate` drew for it — the same dials
/// (contact, instant, attempt), in the same order. The fake network is driven the way
/// `crieur run` drives the core: ended calls reported first, then time, then each `Dial`
/// answered, then sleep until `poll_timeout` or the next call end.
#[test]
fn simulate_and_the_core_on_a_fake_network_make_the_same_dials() {
    use crieur_dial::core::{Core, Output};
    use std::collections::BTreeMap;
    let cfg = cfg(11);
    let policy = policy();
    let planned = simulate(contacts(60), &policy, &cfg);
    assert!(planned.len() > 100, "{}", planned.len());
    // The network's script: each contact's k-th call, as simulate drew it.
    let script = script_of(&planned);
    let mut core = Core::new(
        Planner::new(
            contacts(60),
            &policy,
            cfg.caps.clone(),
            cfg.retry.clone(),
            cfg.pacing,
            cfg.from,
        ),
        BreakerConfig::default(),
    );
    let end = cfg.from + chrono::Duration::days(i64::from(cfg.days));
    let mut ends: BTreeMap<(DateTime<Utc>, usize), (usize, AttemptOutcome)> = BTreeMap::new();
    let mut calls_of: HashMap<usize, usize> = HashMap::new();
    let mut dials: Vec<(usize, DateTime<Utc>, u32)> = Vec::new();
    let mut now = cfg.from;
    while now < end {
        let mut progressed = false;
        while let Some((&(t, n), &(c, outcome))) = ends.first_key_value() {
            if t > now {
                break;
            }
            ends.remove(&(t, n));
            core.call_ended(c, t, outcome, CallVerdict::Served);
            progressed = true;
        }
        core.handle_timeout(now);
        while let Some(out) = core.poll_output() {
            if let Output::Dial { contact, attempt } = out {
                core.dialled(contact);
                let k = calls_of.entry(contact).or_default();
                let Some(&(outcome, len)) = script.get(&contact).and_then(|s| s.get(*k)) else {
                    panic!("the core dialled {contact} more often than simulate did");
                };
                *k += 1;
                ends.insert((now + len, dials.len()), (contact, outcome));
                dials.push((contact, now, attempt));
                progressed = true;
            }
        }
        let next_end = ends.keys().next().map(|(t, _)| *t);
        match advance(now, [core.poll_timeout(), next_end], progressed) {
            Some(n) => now = n,
            None => break,
        }
    }
    let want: Vec<(usize, DateTime<Utc>, u32)> = planned
        .iter()
        .map(|e| (e.contact, e.at, e.attempt))
        .collect();
    assert_eq!(dials, want);
}

mod common;

/// The network's script: each contact's `k`-th call, as `simulate` drew it (its outcome and
/// length).
fn script_of(planned: &[SimEvent]) -> HashMap<usize, Vec<(AttemptOutcome, chrono::Duration)>> {
    let mut script: HashMap<usize, Vec<(AttemptOutcome, chrono::Duration)>> = HashMap::new();
    for e in planned {
        script
            .entry(e.contact)
            .or_default()
            .push((e.outcome, e.ended - e.at));
    }
    script
}

/// The next instant of a simulated-time loop: the earliest of `next` (none: the loop is
/// done), a second on when nothing moved at an instant already due.
fn advance(
    now: DateTime<Utc>,
    next: [Option<DateTime<Utc>>; 2],
    progressed: bool,
) -> Option<DateTime<Utc>> {
    match next.into_iter().flatten().min()? {
        n if n <= now && !progressed => Some(now + chrono::Duration::seconds(1)),
        n => Some(n.max(now)),
    }
}

/// The differential test, on the live driver's own effect code: `crieur_dial::session::Session`
/// — the re-check at each INVITE instant (the store's history, caps, retry rules, the policy),
/// the lease, the records, the commit — on a real store and audit log, with a fake network
/// that ends each contact's `k`-th call the way `simulate` drew it, on the same clock. It
/// places the same calls, at the same instants, as `simulate` planned: what `simulate`
/// shows is what `crieur run` does.
#[test]
fn simulate_and_the_live_session_on_a_fake_network_make_the_same_dials() {
    use crieur_dial::session::{Network, NoProbe, Placement, Plan, Session};
    use crieur_dial::DialRules;
    use crieur_media::call::Outcome;
    use crieur_store::Store;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    struct Recorder(Vec<Placement>);
    impl Network for Recorder {
        fn place(&mut self, p: Placement) {
            self.0.push(p);
        }
    }
    /// The call's end as the media edge reports it, for each scheduling outcome.
    fn ending(o: AttemptOutcome) -> (Outcome, u16) {
        match o {
            AttemptOutcome::Answered => (Outcome::AnsweredCompleted, 200),
            AttemptOutcome::OptedOut => (Outcome::AnsweredOptedOut, 200),
            AttemptOutcome::NotInterested => (Outcome::AnsweredNotInterested, 200),
            AttemptOutcome::Busy => (Outcome::Busy, 486),
            AttemptOutcome::NoAnswer => (Outcome::NoAnswer, 487),
            AttemptOutcome::Rejected => (Outcome::Rejected, 603),
            AttemptOutcome::Machine => (Outcome::MachineMessageLeft, 200),
            // A failed call the trunk is not blamed for (simulate has no trunk faults).
            _ => (Outcome::MediaRefused, 200),
        }
    }

    let cfg = cfg(11);
    let policy = policy();
    let planned = simulate(contacts(60), &policy, &cfg);
    assert!(planned.len() > 100, "{}", planned.len());
    let script = script_of(&planned);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = common::open(&dir.path().join("store"), true);
    let rules = DialRules {
        campaign: "sim".into(),
        caps: cfg.caps.clone(),
        retry: cfg.retry.clone(),
    };
    store
        .upsert_contacts(&rules.campaign, &contacts(60))
        .unwrap_or_else(|e| panic!("{e}"));
    let log = crieur_audit::AuditLog::open(&dir.path().join("audit"), Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let header = common::run_header(
        &rules,
        &policy,
        Duration::from_secs(25),
        Duration::from_secs(15),
    );
    let plan = Plan {
        rules,
        policy: &policy,
        pacing: cfg.pacing,
        breaker: BreakerConfig::default(),
        contacts: contacts(60),
        schedule_history: true,
    };
    let (mut session, _) = Session::start(
        plan,
        Arc::new(store),
        log,
        &header,
        &[],
        cfg.from,
        &mut Vec::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let end = cfg.from + chrono::Duration::days(i64::from(cfg.days));
    // (end, n) → the call and how it ended.
    let mut ends: BTreeMap<(DateTime<Utc>, usize), (String, AttemptOutcome)> = BTreeMap::new();
    let mut calls_of: HashMap<usize, usize> = HashMap::new();
    let mut dials: Vec<(usize, DateTime<Utc>, u32)> = Vec::new();
    let mut now = cfg.from;
    while now < end {
        let mut progressed = false;
        while let Some((&(t, n), _)) = ends.first_key_value() {
            if t > now {
                break;
            }
            let Some((call, o)) = ends.remove(&(t, n)) else {
                break;
            };
            let (outcome, status) = ending(o);
            let r = common::report(&call, outcome, status);
            let mut at = t;
            session
                .call_ended(&call, &Ok(r), &mut at, &mut NoProbe)
                .unwrap_or_else(|e| panic!("{e}"));
            progressed = true;
        }
        let mut net = Recorder(Vec::new());
        let mut clock = now;
        session
            .tick(&mut clock, &mut net, &mut NoProbe, &mut Vec::new())
            .unwrap_or_else(|e| panic!("{e}"));
        for p in net.0 {
            let k = calls_of.entry(p.contact).or_default();
            let Some(&(outcome, len)) = script.get(&p.contact).and_then(|s| s.get(*k)) else {
                panic!(
                    "the session dialled {} more often than simulate did",
                    p.contact
                );
            };
            *k += 1;
            ends.insert((p.sent_at + len, dials.len()), (p.call, outcome));
            dials.push((p.contact, p.sent_at, *k as u32));
            progressed = true;
        }
        let next_end = ends.keys().next().map(|(t, _)| *t);
        match advance(now, [session.core().poll_timeout(), next_end], progressed) {
            Some(n) => now = n,
            None => break,
        }
    }
    let want: Vec<(usize, DateTime<Utc>, u32)> = planned
        .iter()
        .map(|e| (e.contact, e.at, e.attempt))
        .collect();
    assert_eq!(dials, want);
}
