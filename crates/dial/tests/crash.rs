//! The campaign core, crashed at every one of its output boundaries. A driver like
//! `crieur run`'s — but in simulated time, against a fake call network — carries out the
//! core's outputs on a real store and a real audit log in a tempdir: every decision
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
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use crieur_audit::build::{caps_snapshot, policy_snapshot, retry_snapshot};
use crieur_audit::record::{OptOutRecorded, RunHeader, RunStop};
use crieur_audit::{AuditLog, Options, Record};
use crieur_dial::core::{Core, Output};
use crieur_dial::protocol::{
    finish_call, history, lease_and_record_invite, recheck, to_attempts, CallRef,
};
use crieur_dial::{reconcile, DialRules};
use crieur_engine::{AttemptOutcome, BreakerConfig, CapRules, Pacing, Planner, RetryPolicy};
use crieur_media::call::{Ending as CallEnding, HangupBy, Outcome};
use crieur_media::dtmf::DtmfMethod;
use crieur_media::uac::CallReport;
use crieur_scheduler::{Evaluator, Policy, E164};
use crieur_store::Store;
use proptest::prelude::*;

mod common;
use common::{contacts, open, policy, t};

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
        let s = StdDuration::from_millis;
        let answered = matches!(self, Ending::Answered | Ending::OptsOut);
        let (outcome, status, by, reason) = match self {
            Ending::Answered => (
                Outcome::AnsweredCompleted,
                200,
                HangupBy::Us,
                "message played",
            ),
            Ending::OptsOut => (Outcome::AnsweredOptedOut, 200, HangupBy::Us, "opted out"),
            Ending::Busy => (Outcome::Busy, 486, HangupBy::Nobody, "Busy Here"),
            Ending::NoAnswer => (Outcome::NoAnswer, 487, HangupBy::Us, "ring timeout"),
        };
        CallReport {
            call_id: call.to_owned(),
            ending: CallEnding {
                outcome,
                sip_status: Some(status),
                reason: reason.into(),
                hangup_by: by,
            },
            timeline: Vec::new(),
            keys: if matches!(self, Ending::OptsOut) {
                vec![('9', DtmfMethod::Rfc4733, s(7_000))]
            } else {
                Vec::new()
            },
            opt_out_recorded: matches!(self, Ending::OptsOut),
            answer_to_first_audio: answered.then(|| s(80)),
            final_response: Some((status, s(if answered { 2_000 } else { 1_400 }))),
            first_18x: (!matches!(self, Ending::Busy)).then(|| (180, s(300))),
            credentials_sent: false,
            answered_at: answered.then(|| s(2_000)),
            first_audio_at: answered.then(|| s(2_080)),
            message_packets: if answered { 900 } else { 0 },
            codec: None,
            rtp_sent: if answered { 900 } else { 0 },
            send_lateness_max_us: 0,
            rtp_send_errors: 0,
            rtp_received: Vec::new(),
            rtp_local: None,
            rtcp: Default::default(),
            amd: None,
        }
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

/// The run header `crieur run` writes: the policy, caps and retry rules replay re-derives
/// every decision with.
fn header(c: &Campaign, policy: &Policy) -> Record {
    let rules = c.rules();
    Record::RunStart(Box::new(RunHeader {
        format: crieur_audit::record::FORMAT_VERSION,
        command: "run".into(),
        node: None,
        software: "crash test".into(),
        campaign: Some(CAMPAIGN.into()),
        campaign_name: None,
        campaign_file: None,
        campaign_sha256: None,
        campaign_toml: None,
        policy: Some(policy_snapshot(
            policy,
            "Europe/Paris",
            StdDuration::from_secs(20),
            StdDuration::from_secs(30),
        )),
        caps: Some(caps_snapshot(&rules.caps)),
        retry: retry_snapshot(&rules.retry),
        opt_out_key: Some('9'),
        audio: Vec::new(),
        tzdb_version: crieur_scheduler::tzdb_version().into(),
        phone_tz_map_version: crieur_scheduler::phone_tz_map_version().into(),
    }))
}

/// The process died.
#[derive(Debug)]
struct Killed;

/// Counts the driver's effects; the `kill_at`-th is the last before the crash.
struct Fuse {
    done: usize,
    kill_at: Option<usize>,
}

impl Fuse {
    /// One more effect happened: `Err(Killed)` if the process dies right after it.
    fn tick(&mut self) -> Result<(), Killed> {
        self.done += 1;
        if self.kill_at == Some(self.done) {
            Err(Killed)
        } else {
            Ok(())
        }
    }
}

/// What happens next on the fake network.
#[derive(Debug, Clone)]
enum Event {
    /// The callee pressed the opt-out key.
    OptOut { contact: usize, call: String },
    /// The call ended.
    End {
        contact: usize,
        call: String,
        sent_at: DateTime<Utc>,
        ending: Ending,
    },
}

/// One process's run, from `start`, until nothing is due (`Ok(end)`) or killed (`Err(at)`:
/// the instant it died).
fn run_once(
    c: &Campaign,
    policy: &Policy,
    sp: &Path,
    lp: &Path,
    start: DateTime<Utc>,
    tries: &mut HashMap<usize, usize>,
    fuse: &mut Fuse,
) -> Result<DateTime<Utc>, DateTime<Utc>> {
    let store = open(sp, false);
    let rules = c.rules();
    let ok = |r: Result<(), String>| r.unwrap_or_else(|e| panic!("{e}"));
    let mut log = AuditLog::open(lp, Options::default()).unwrap_or_else(|e| panic!("{e}"));
    // As `crieur run` starts: its header, then the store and the log reconciled from the log.
    ok(log
        .append(start, &header(c, policy))
        .map(|_| ())
        .map_err(|e| e.to_string()));
    let entries: Vec<_> = crieur_audit::read_all(lp)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, _, e)| e)
        .collect();
    reconcile(&store, &mut log, &entries, start).unwrap_or_else(|e| panic!("{e}"));
    let contacts = store.contacts(CAMPAIGN).unwrap_or_else(|e| panic!("{e}"));
    let mut planner = Planner::new(
        contacts,
        policy,
        rules.caps.clone(),
        rules.retry.clone(),
        Pacing {
            calls_per_second: 2.0,
            max_concurrent: 3,
        },
        start,
    );
    for i in 0..planner.len() {
        let h = history(&store, planner.contact(i))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        planner.load_history(i, to_attempts(&h, CAMPAIGN));
    }
    ok(log.commit().map_err(|e| e.to_string()));
    let mut core = Core::new(planner, BreakerConfig::default());
    let mut eval = Evaluator::new(policy);
    let mut events: BTreeMap<(DateTime<Utc>, u64), Event> = BTreeMap::new();
    let mut seq = 0u64;
    let mut now = start;
    let killed = |now| Err(now);
    loop {
        let next_event = events.keys().next().map(|(t, _)| *t);
        let next = match (core.poll_timeout(), next_event) {
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
            match ev {
                Event::OptOut { contact, call } => {
                    // The hook: the store first, then the log, both durable before the
                    // confirmation plays.
                    let phone = core.contact(contact).phone().clone();
                    ok(store
                        .add_opt_out(&phone, at, "key 9 by rfc4733")
                        .map(|_| ())
                        .map_err(|e| e.to_string()));
                    if fuse.tick().is_err() {
                        return killed(at);
                    }
                    let rec = Record::OptOutRecorded(OptOutRecorded {
                        call,
                        number: phone.to_string(),
                        at,
                    });
                    ok(log
                        .append_durable(at, &rec)
                        .map(|_| ())
                        .map_err(|e| e.to_string()));
                    if fuse.tick().is_err() {
                        return killed(at);
                    }
                }
                Event::End {
                    contact,
                    call,
                    sent_at,
                    ending,
                } => {
                    let who = core.contact(contact).clone();
                    let report = ending.report(&call);
                    let verdict = crieur_dial::fault::verdict(&Ok(report.clone()));
                    let uncounted = core.uncounted(contact, &verdict);
                    let outcome = crieur_dial::fault::recorded_outcome(&report, uncounted);
                    let cr = CallRef {
                        call: &call,
                        campaign: CAMPAIGN,
                        contact: &who,
                        sent_at,
                        ended: at,
                    };
                    let mut died = false;
                    finish_call(&store, &mut log, &cr, Ok(&report), &outcome, at, || {
                        died = fuse.tick().is_err();
                    })
                    .unwrap_or_else(|e| panic!("{e}"));
                    if died {
                        return killed(at);
                    }
                    if fuse.tick().is_err() {
                        return killed(at);
                    }
                    ok(log.commit().map_err(|e| e.to_string()));
                    if fuse.tick().is_err() {
                        return killed(at);
                    }
                    let scheduled = AttemptOutcome::from_record(&outcome);
                    if let Some(tr) = core.call_ended(contact, at, scheduled, verdict) {
                        let rec = Record::TrunkBreaker(crieur_dial::fault::breaker_record(
                            CAMPAIGN,
                            &tr,
                            Some(&call),
                        ));
                        ok(log
                            .append(tr.at, &rec)
                            .map(|_| ())
                            .map_err(|e| e.to_string()));
                        if fuse.tick().is_err() {
                            return killed(at);
                        }
                    }
                }
            }
        }
        core.handle_timeout(now);
        let mut ready = Vec::new();
        while let Some(out) = core.poll_output() {
            match out {
                Output::Breaker { transition, call } => {
                    let rec = Record::TrunkBreaker(crieur_dial::fault::breaker_record(
                        CAMPAIGN,
                        &transition,
                        call.as_deref(),
                    ));
                    ok(log
                        .append(transition.at, &rec)
                        .map(|_| ())
                        .map_err(|e| e.to_string()));
                    if fuse.tick().is_err() {
                        return killed(now);
                    }
                }
                Output::Skip { contact: i, note } => {
                    crieur_dial::protocol::record_skip(
                        &rules,
                        &store,
                        &mut eval,
                        core.contact(i),
                        &mut log,
                        now,
                        Some(&note),
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                    if fuse.tick().is_err() {
                        return killed(now);
                    }
                }
                Output::Dial { contact: i, .. } => {
                    let contact = core.contact(i).clone();
                    let checked = recheck(&rules, &store, &mut eval, &contact, &mut log, now)
                        .unwrap_or_else(|e| panic!("{e}"));
                    if fuse.tick().is_err() {
                        return killed(now);
                    }
                    let valid_until = match checked.verdict() {
                        Ok(v) => v,
                        Err(retry_at) => {
                            core.not_dialled(i, retry_at);
                            continue;
                        }
                    };
                    let sent_at = crieur_dial::to_micros(now);
                    let mut died = false;
                    let call = lease_and_record_invite(
                        &store,
                        &mut log,
                        &rules,
                        &contact,
                        now,
                        valid_until,
                        sent_at,
                        false,
                        || died = fuse.tick().is_err(),
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                    if died || fuse.tick().is_err() {
                        return killed(now);
                    }
                    core.dialled(i);
                    ready.push((i, call, sent_at));
                }
            }
        }
        // One commit for the tick, before any INVITE leaves.
        ok(log.commit().map_err(|e| e.to_string()));
        if fuse.tick().is_err() {
            return killed(now);
        }
        for (i, call, sent_at) in ready {
            // Placed: the network has it.
            let k = tries.entry(i).or_default();
            let ending = c.ending(i, *k);
            *k += 1;
            if matches!(ending, Ending::OptsOut) {
                seq += 1;
                events.insert(
                    (sent_at + Duration::seconds(7), seq),
                    Event::OptOut {
                        contact: i,
                        call: call.clone(),
                    },
                );
            }
            seq += 1;
            events.insert(
                (sent_at + ending.length(), seq),
                Event::End {
                    contact: i,
                    call,
                    sent_at,
                    ending,
                },
            );
            if fuse.tick().is_err() {
                return killed(now);
            }
        }
    }
    ok(log
        .append_durable(
            now,
            &Record::RunStop(RunStop {
                reason: "every contact is done".into(),
            }),
        )
        .map(|_| ())
        .map_err(|e| e.to_string()));
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
        if o.is_some_and(|o| AttemptOutcome::from_record(&o.outcome).counts()) {
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
