//! Crash at every boundary of the dial protocol, then recover: the store and the audit log
//! must tell the same story. Each call goes lease (store) → `invite-sent` (log, durable) →
//! [opt-out (store) → `opt-out-recorded` (log)] → attempt (store) → `outcome` (log); the
//! process is "killed" after any step (everything not yet durable is lost), the store and the
//! log reopened and reconciled. Deterministic: instants are arguments, no sleeps.

use chrono::{DateTime, Duration, Utc};
use crieur_audit::record::{InviteSent, OptOutRecorded, OutcomeRecord};
use crieur_audit::{AuditLog, Options, Record};
use crieur_dial::{reconcile, Recovered};
use crieur_scheduler::{Contact, ContactId, E164};
use crieur_store::{SledStore, Store};
use proptest::prelude::*;

mod common;
use common::open;

/// One call of a scenario: which contact, and how it ends.
#[derive(Debug, Clone, Copy)]
struct Call {
    contact: u8,
    opts_out: bool,
}

/// The protocol's durable steps for one call.
fn steps(c: Call) -> usize {
    if c.opts_out {
        6
    } else {
        4
    }
}

fn t0() -> DateTime<Utc> {
    // A sub-second start: instants must survive to the microsecond.
    DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap_or_default()
}

/// The store's contacts: c0 … c3, each with its number.
fn import(store: &SledStore) {
    let contacts: Vec<Contact> = (0..4)
        .map(|c| {
            Contact::new(
                ContactId::new(format!("c{c}")).unwrap_or_else(|e| panic!("{e}")),
                number(c),
                None,
                Vec::new(),
            )
        })
        .collect();
    store
        .upsert_contacts("t", &contacts)
        .unwrap_or_else(|e| panic!("{e}"));
}

fn number(c: u8) -> E164 {
    format!("+336123456{c:02}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `calls` through the protocol, stopping (the crash) after `crash_after` steps.
fn run_until(store: &SledStore, log: &mut AuditLog, calls: &[Call], crash_after: usize) {
    let mut done = 0;
    let mut step = |f: &mut dyn FnMut()| {
        if done < crash_after {
            f();
            done += 1;
        }
    };
    for (k, c) in calls.iter().enumerate() {
        let id = ContactId::new(format!("c{}", c.contact)).unwrap_or_else(|e| panic!("{e}"));
        let n = number(c.contact);
        let sent = crieur_dial::to_micros(t0() + Duration::milliseconds(k as i64 * 61_001));
        let ended = sent + Duration::milliseconds(20_995);
        let call = format!("{id}-{}", sent.timestamp_micros());
        let ok = |r: Result<(), String>| r.unwrap_or_else(|e| panic!("{e}"));
        step(&mut || {
            ok(store
                .lease("t", &id, &n, sent, &call)
                .map_err(|e| e.to_string()))
        });
        let invite = Record::InviteSent(InviteSent {
            call: call.clone(),
            campaign: "t".into(),
            contact: id.to_string(),
            number: n.to_string(),
            decided_at: sent,
            sent_at: sent,
            recheck: "dial".into(),
            valid_until: sent + Duration::hours(1),
        });
        step(&mut || {
            ok(log
                .append_durable(sent, &invite)
                .map(|_| ())
                .map_err(|e| e.to_string()))
        });
        if c.opts_out {
            let at = sent + Duration::seconds(5);
            step(&mut || {
                ok(store
                    .add_opt_out(&n, at, "key 9")
                    .map(|_| ())
                    .map_err(|e| e.to_string()))
            });
            let rec = Record::OptOutRecorded(OptOutRecorded {
                call: call.clone(),
                number: n.to_string(),
                at,
            });
            step(&mut || {
                ok(log
                    .append_durable(at, &rec)
                    .map(|_| ())
                    .map_err(|e| e.to_string()))
            });
        }
        let outcome = common::named(if c.opts_out {
            "answered-opted-out"
        } else {
            "busy"
        });
        step(&mut || {
            ok(store
                .finish_attempt(
                    &n,
                    &crieur_store::AttemptRecord {
                        campaign: "t".into(),
                        contact: id.to_string(),
                        started: sent,
                        ended,
                        outcome,
                        call: call.clone(),
                    },
                )
                .map(|_| ())
                .map_err(|e| e.to_string()))
        });
        let rec = Record::Outcome(OutcomeRecord {
            call: call.clone(),
            campaign: "t".into(),
            contact: id.to_string(),
            number: n.to_string(),
            started: sent,
            ended,
            outcome,
        });
        step(&mut || {
            ok(log
                .append(ended, &rec)
                .and_then(|_| log.commit())
                .map_err(|e| e.to_string()))
        });
    }
}

/// Reads the log back: its INVITEs, outcomes and opt-outs.
fn read(dir: &std::path::Path) -> Vec<Record> {
    crieur_audit::read_all(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(_, _, e)| e.record)
        .collect()
}

/// Crashes after `crash_after` steps, recovers, and checks every invariant.
fn crash_and_recover(calls: &[Call], crash_after: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sp, lp) = (dir.path().join("store"), dir.path().join("audit"));
    {
        let store = open(&sp, true);
        import(&store);
        let mut log = AuditLog::open(&lp, Options::default()).unwrap_or_else(|e| panic!("{e}"));
        run_until(&store, &mut log, calls, crash_after);
        // Killed: nothing more is written (every step above was durable when it returned).
    }
    let store = open(&sp, false);
    let now = t0() + Duration::days(1);
    let recovered = {
        let mut log = AuditLog::open(&lp, Options::default()).unwrap_or_else(|e| panic!("{e}"));
        let entries: Vec<_> = crieur_audit::read_all(&lp)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, _, e)| e)
            .collect();
        reconcile(&store, &mut log, &entries, now).unwrap_or_else(|e| panic!("{e}"))
    };
    let records = read(&lp);
    // No lease is left: nothing blocks the next run.
    prop_assert!(store.leases().unwrap_or_default().is_empty());
    let invites: Vec<&InviteSent> = records
        .iter()
        .filter_map(|r| match r {
            Record::InviteSent(i) => Some(i),
            _ => None,
        })
        .collect();
    let outcomes: Vec<&OutcomeRecord> = records
        .iter()
        .filter_map(|r| match r {
            Record::Outcome(o) => Some(o),
            _ => None,
        })
        .collect();
    // Every INVITE has exactly one outcome, linked by its call id and its instant; every
    // outcome has its INVITE.
    for i in &invites {
        let mine: Vec<_> = outcomes.iter().filter(|o| o.call == i.call).collect();
        prop_assert_eq!(mine.len(), 1, "call {}: {:?}", i.call, recovered);
        prop_assert_eq!(mine[0].started, i.sent_at);
    }
    for o in &outcomes {
        prop_assert!(invites.iter().any(|i| i.call == o.call), "{}", o.call);
    }
    // The store counts exactly the calls placed: one attempt per INVITE, with its call id and
    // its instant to the microsecond; none for a lease whose INVITE never left.
    let mut attempts = Vec::new();
    for c in 0..4 {
        attempts.extend(store.attempts(&number(c)).unwrap_or_default());
    }
    prop_assert_eq!(attempts.len(), invites.len(), "{:?}", recovered);
    for i in &invites {
        let a = attempts.iter().find(|a| a.call == i.call);
        prop_assert_eq!(a.map(|a| a.started), Some(i.sent_at));
        // The recorded outcome is the store's (the call's real end when the store had it).
        let o = outcomes.iter().find(|o| o.call == i.call);
        prop_assert_eq!(
            a.map(|a| (a.outcome, a.ended)),
            o.map(|o| (o.outcome, o.ended))
        );
    }
    // No opt-out lost: every one the log records is on the store's list.
    for r in &records {
        if let Record::OptOutRecorded(o) = r {
            let n: E164 = o.number.parse().unwrap_or_else(|e| panic!("{e}"));
            prop_assert!(store.is_opted_out(&n).unwrap_or(false));
        }
    }
    // The chain verifies, and replay finds no INVITE without an outcome nor the reverse.
    let v = crieur_audit::verify(&lp, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
    prop_assert!(v.first_break.is_none(), "{:?}", v.first_break);
    let rep = crieur_audit::replay(&lp).unwrap_or_else(|e| panic!("{e}"));
    let unpaired: Vec<_> = rep
        .violations
        .iter()
        .filter(|v| v.kind == "outcome-without-invite" || v.kind == "invite-without-outcome")
        .collect();
    prop_assert!(unpaired.is_empty(), "{:?}", unpaired);
    // Recovering again changes nothing.
    let mut log = AuditLog::open(&lp, Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let entries: Vec<_> = crieur_audit::read_all(&lp)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, _, e)| e)
        .collect();
    let again = reconcile(&store, &mut log, &entries, now + Duration::hours(1))
        .unwrap_or_else(|e| panic!("{e}"));
    prop_assert_eq!(again, Vec::<Recovered>::new());
    Ok(())
}

/// One scenario, crashed after every one of its steps in turn.
#[test]
fn a_crash_at_every_step_is_recovered() {
    let calls = [
        Call {
            contact: 0,
            opts_out: false,
        },
        Call {
            contact: 1,
            opts_out: true,
        },
        Call {
            contact: 0,
            opts_out: false,
        },
    ];
    let total: usize = calls.iter().map(|c| steps(*c)).sum();
    for k in 0..=total {
        crash_and_recover(&calls, k).unwrap_or_else(|e| panic!("crash after step {k}: {e}"));
    }
}

/// Each kind of leftover is named for what it was.
#[test]
fn recovery_says_what_each_leftover_was() {
    let one = |opts_out| {
        [Call {
            contact: 2,
            opts_out,
        }]
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let what = |calls: &[Call], k: usize, name: &str| -> Vec<Recovered> {
        let (sp, lp) = (
            dir.path().join(name),
            dir.path().join(format!("{name}.audit")),
        );
        {
            let store = open(&sp, true);
            let mut log = AuditLog::open(&lp, Options::default()).unwrap_or_else(|e| panic!("{e}"));
            run_until(&store, &mut log, calls, k);
        }
        let store = open(&sp, false);
        let mut log = AuditLog::open(&lp, Options::default()).unwrap_or_else(|e| panic!("{e}"));
        let entries: Vec<_> = crieur_audit::read_all(&lp)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, _, e)| e)
            .collect();
        reconcile(&store, &mut log, &entries, t0() + Duration::days(1))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let kind = |r: &[Recovered]| match r {
        [Recovered::Released { .. }] => "released",
        [Recovered::Interrupted { .. }] => "interrupted",
        [Recovered::OutcomeRestored { outcome, .. }] if outcome.name() == "answered-opted-out" => {
            "restored"
        }
        [] => "nothing",
        _ => "other",
    };
    // Leased, killed before the INVITE's record was durable: released, no attempt.
    assert_eq!(kind(&what(&one(false), 1, "a")), "released");
    // INVITE recorded, killed mid-call: interrupted.
    assert_eq!(kind(&what(&one(true), 3, "b")), "interrupted");
    // The store closed the call, killed before its outcome record: restored from the store.
    assert_eq!(kind(&what(&one(true), 5, "c")), "restored");
    // Everything written: nothing to do.
    assert_eq!(kind(&what(&one(true), 6, "d")), "nothing");
}

fn calls() -> impl Strategy<Value = Vec<Call>> {
    prop::collection::vec(
        (0u8..4, any::<bool>()).prop_map(|(contact, opts_out)| Call { contact, opts_out }),
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random calls, crashed at a random step.
    #[test]
    fn random_calls_crashed_anywhere_recover(calls in calls(), at in 0usize..40) {
        let total: usize = calls.iter().map(|c| steps(*c)).sum();
        crash_and_recover(&calls, at % (total + 1))?;
    }
}

/// The store lost a call the log shows placed (its lease and attempt are gone): recovery
/// counts it (an `interrupted` attempt in the store, an outcome in the log). An INVITE to a
/// contact the store does not hold is another store's (a shared audit directory): left alone.
#[test]
fn a_call_the_store_lost_counts_and_another_stores_call_is_left_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sp, lp) = (dir.path().join("store"), dir.path().join("audit"));
    let store = open(&sp, true);
    import(&store);
    let mut log = AuditLog::open(&lp, Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let sent = t0();
    let invite = |contact: &str, number: &str, call: &str| {
        Record::InviteSent(InviteSent {
            call: call.into(),
            campaign: "t".into(),
            contact: contact.into(),
            number: number.into(),
            decided_at: sent,
            sent_at: sent,
            recheck: "dial".into(),
            valid_until: sent + Duration::hours(1),
        })
    };
    for r in [
        invite("c1", &number(1).to_string(), "lost-1"),
        invite("x9", "+33612345699", "other-store-1"),
    ] {
        log.append_durable(sent, &r)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let entries: Vec<_> = crieur_audit::read_all(&lp)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, _, e)| e)
        .collect();
    let now = t0() + Duration::hours(2);
    let done = reconcile(&store, &mut log, &entries, now).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        done,
        vec![Recovered::Interrupted {
            campaign: "t".into(),
            contact: "c1".into(),
            call: "lost-1".into(),
        }]
    );
    let a = store.attempts(&number(1)).unwrap_or_default();
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0].call.as_str(), a[0].outcome.name().as_str()),
        ("lost-1", "interrupted")
    );
    let outcomes: Vec<String> = read(&lp)
        .into_iter()
        .filter_map(|r| match r {
            Record::Outcome(o) => Some(o.call),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, ["lost-1"]);
}
