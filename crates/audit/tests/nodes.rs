//! Several nodes, one campaign: each node writes its own chain (its node id in its run
//! header); `replay_logs` reads them merged in time order, so what one node recorded (an
//! attempt, an opt-out, the outcome of a call another node placed before dying) holds for
//! every node's decisions.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use crieur_audit::record::*;
use crieur_audit::replay::{merged, replay_logs};
use crieur_audit::{replay, verify, AuditLog, Options, VerifyOptions};
use crieur_scheduler::Contact;

mod common;
use common::{decision, t};

fn header(node: &str) -> Record {
    let mut h = common::header("t");
    h.node = Some(node.into());
    Record::RunStart(Box::new(h))
}

fn contact(id: &str, number: &str) -> Contact {
    common::contact_with(id, number, "mon-fri 18:00-20:00", "form", "p-1")
}

fn invite(c: &Contact, call: &str, at: DateTime<Utc>) -> Record {
    Record::InviteSent(InviteSent {
        call: call.into(),
        campaign: "t".into(),
        contact: c.id().to_string(),
        number: c.phone().to_string(),
        decided_at: at,
        sent_at: at + Duration::milliseconds(3),
        recheck: "dial".into(),
        valid_until: at + Duration::minutes(30),
    })
}

fn outcome(c: &Contact, call: &str, at: DateTime<Utc>, what: &str, secs: i64) -> Record {
    Record::Outcome(OutcomeRecord {
        call: call.into(),
        campaign: "t".into(),
        contact: c.id().to_string(),
        number: c.phone().to_string(),
        started: at,
        ended: at + Duration::seconds(secs),
        outcome: common::named(what),
    })
}

/// Writes `records` (each with its timestamp) as one node's log.
fn write(dir: &Path, records: &[(DateTime<Utc>, Record)]) {
    let mut log = AuditLog::open(dir, Options::default()).unwrap_or_else(|e| panic!("{e}"));
    for (at, r) in records {
        log.append(*at, r).unwrap_or_else(|e| panic!("{e}"));
    }
    log.commit().unwrap_or_else(|e| panic!("{e}"));
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

/// `n` seconds into the two-node tests' afternoon.
fn s(n: i64) -> DateTime<Utc> {
    t("2027-03-03T17:30:00Z") + Duration::seconds(n)
}

fn kinds(r: &crieur_audit::ReplayReport) -> Vec<&str> {
    r.violations.iter().map(|v| v.kind.as_str()).collect()
}

fn replay_both(a: &Path, b: &Path) -> crieur_audit::ReplayReport {
    replay_logs(&[a, b]).unwrap_or_else(|e| panic!("{e}"))
}

/// Node A dies mid-call; node B recovers its lease after the timeout and records the call's
/// `interrupted` outcome in its own log. Each log alone has an unpaired call; together they
/// account for every call.
#[test]
fn a_call_placed_by_a_dead_node_is_closed_by_another_nodes_log() {
    let (a, b) = (dir(), dir());
    let (c1, c2) = (contact("c1", "+33612345678"), contact("c2", "+33612345679"));
    write(
        a.path(),
        &[
            (s(0), header("node-a")),
            (s(1), decision(&c1, s(1), vec![])),
            (s(1), invite(&c1, "a:call-1", s(1))),
            // SIGKILL: nothing more from node A.
        ],
    );
    write(
        b.path(),
        &[
            (s(0), header("node-b")),
            (s(2), decision(&c2, s(2), vec![])),
            (s(2), invite(&c2, "b:call-1", s(2))),
            (s(20), outcome(&c2, "b:call-1", s(2), "busy", 18)),
            // The lease timeout passed: node B recovers node A's call.
            (s(200), outcome(&c1, "a:call-1", s(1), "interrupted", 199)),
        ],
    );
    assert_eq!(
        kinds(&replay(a.path()).unwrap_or_else(|e| panic!("{e}"))),
        ["invite-without-outcome"]
    );
    assert_eq!(
        kinds(&replay(b.path()).unwrap_or_else(|e| panic!("{e}"))),
        ["outcome-without-invite"]
    );
    let both = replay_both(a.path(), b.path());
    assert!(both.violations.is_empty(), "{:?}", both.violations);
    assert_eq!((both.runs, both.invites, both.dials), (2, 2, 2));
    // Each chain verifies on its own.
    for d in [a.path(), b.path()] {
        let v = verify(d, &VerifyOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        assert!(v.first_break.is_none(), "{:?}", v.first_break);
    }
    // Merged in time order, each log's own order kept, its records named by directory.
    let m = merged(&[a.path(), b.path()]).unwrap_or_else(|e| panic!("{e}"));
    assert!(m.windows(2).all(|w| w[0].1 .2.ts <= w[1].1 .2.ts));
    let last = m.last().unwrap_or_else(|| panic!("records"));
    assert_eq!(last.0, 1);
    assert!(last.1 .0.starts_with(&b.path().display().to_string()));
}

/// Node A dies between its dial decision and its INVITE (its lease taken, nothing sent);
/// node B recovers the lease and closes the call `interrupted` (it cannot know whether the
/// INVITE left): a counted attempt and no call, not an outcome without an INVITE. Any other
/// outcome, or one with no dial decision before it, still is.
#[test]
fn a_dead_nodes_decision_without_its_invite_may_be_closed_interrupted_by_another_node() {
    let (a, b) = (dir(), dir());
    let (c1, c2, c3) = (
        contact("c1", "+33612345678"),
        contact("c2", "+33612345679"),
        contact("c3", "+33612345670"),
    );
    write(
        a.path(),
        &[
            (s(0), header("node-a")),
            (s(1), decision(&c1, s(1), vec![])),
            (s(1), decision(&c3, s(1), vec![])),
            // SIGKILL before either INVITE.
        ],
    );
    write(
        b.path(),
        &[
            (s(0), header("node-b")),
            (s(200), outcome(&c1, "a:call-1", s(1), "interrupted", 199)),
            // No decision for c2 anywhere; c3's decided call closed as if it had rung.
            (s(201), outcome(&c2, "a:call-2", s(1), "interrupted", 199)),
            (s(202), outcome(&c3, "a:call-3", s(1), "busy", 199)),
        ],
    );
    let both = replay_both(a.path(), b.path());
    let calls: Vec<&str> = both
        .violations
        .iter()
        .map(|v| v.fields["call"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        kinds(&both),
        ["outcome-without-invite", "outcome-without-invite"]
    );
    assert_eq!(calls, ["a:call-2", "a:call-3"], "{:?}", both.violations);
}

/// The caps hold across nodes: node B's decision must count the attempts node A recorded
/// for the same number; one that leaves them out is caught only when both logs are read.
#[test]
fn attempts_and_opt_outs_of_one_node_bind_the_others() {
    let (a, b) = (dir(), dir());
    let c1 = contact("c1", "+33612345678");
    let c2 = contact("c2", "+33612345679");
    let day = |d: i64| t("2027-03-01T17:30:00Z") + Duration::days(d);
    let past = |at: DateTime<Utc>| PastAttempt {
        at,
        ended: Some(at + Duration::seconds(20)),
        outcome: common::named("busy"),
        campaign: "t".into(),
    };
    // Node A: three busy attempts to c1 on three days (each decision with its history), and
    // c2 opts out on a call of node A.
    let mut ra = vec![(day(0) - Duration::hours(1), header("node-a"))];
    let mut history = vec![];
    for d in 0..3 {
        let call = format!("a:{d}");
        ra.push((day(d), decision(&c1, day(d), history.clone())));
        ra.push((day(d), invite(&c1, &call, day(d))));
        ra.push((
            day(d) + Duration::seconds(20),
            outcome(&c1, &call, day(d), "busy", 20),
        ));
        history.push(past(day(d)));
    }
    ra.push((day(3), decision(&c2, day(3), vec![])));
    ra.push((day(3), invite(&c2, "a:c2", day(3))));
    ra.push((
        day(3) + Duration::seconds(10),
        Record::OptOutRecorded(OptOutRecorded {
            call: "a:c2".into(),
            number: c2.phone().to_string(),
            at: day(3) + Duration::seconds(10),
        }),
    ));
    ra.push((
        day(3) + Duration::seconds(15),
        outcome(&c2, "a:c2", day(3), "opted-out", 15),
    ));
    write(a.path(), &ra);
    // Node B, later: dials c1 a fourth time as if it had never been called, and dials c2
    // after its opt-out.
    let rb = vec![
        (day(0) - Duration::hours(1), header("node-b")),
        (day(4), decision(&c1, day(4), vec![])),
        (day(4), invite(&c1, "b:1", day(4))),
        (
            day(4) + Duration::seconds(20),
            outcome(&c1, "b:1", day(4), "busy", 20),
        ),
        (
            day(4) + Duration::minutes(1),
            decision(&c2, day(4) + Duration::minutes(1), vec![]),
        ),
        (
            day(4) + Duration::minutes(1),
            invite(&c2, "b:2", day(4) + Duration::minutes(1)),
        ),
        (
            day(4) + Duration::minutes(2),
            outcome(&c2, "b:2", day(4) + Duration::minutes(1), "busy", 20),
        ),
    ];
    write(b.path(), &rb);
    let alone = replay(b.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        alone.violations.is_empty(),
        "node B alone looks clean: {:?}",
        alone.violations
    );
    assert!(replay(a.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .violations
        .is_empty());
    let both = replay_both(a.path(), b.path());
    let k = kinds(&both);
    for want in ["history-omitted", "cap-exceeded", "dial-after-opt-out"] {
        assert!(k.contains(&want), "{want} missing from {k:?}");
    }
    // Every violation is node B's, named by its directory.
    let bdir = b.path().display().to_string();
    assert!(
        both.violations.iter().all(|v| v.segment.starts_with(&bdir)),
        "{:?}",
        both.violations
    );
    // The order the logs are given in does not change what is found.
    let swapped = replay_logs(&[b.path(), a.path()]).unwrap_or_else(|e| panic!("{e}"));
    let mut k2 = kinds(&swapped);
    let mut k1 = k.clone();
    k1.sort_unstable();
    k2.sort_unstable();
    assert_eq!(k1, k2);
}
