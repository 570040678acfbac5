//! Reconciliation on a store several nodes share (PostgreSQL): a node reconciles its own
//! leases with its own log, leaves a live node's leases alone, and recovers a dead node's
//! leases once they are older than the lease timeout — as interrupted attempts that count,
//! their outcome written in its own log under the dead node's call id.
//!
//! Needs PostgreSQL (`.ci/run` starts it; `CRIEUR_SKIP_POSTGRES=1` skips this locally).

use chrono::{DateTime, Duration, Utc};
use crieur_audit::{read_all, AuditLog, Options, Record};
use crieur_dial::{reconcile_node, recover_expired, Node, Recovered};
use crieur_scheduler::{Contact, ContactId, E164};
use crieur_store::{PgStore, Store};
use crieur_test_support::pg::PgDb;

fn number(c: u8) -> E164 {
    format!("+336123456{c:02}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn id(c: u8) -> ContactId {
    ContactId::new(format!("c{c}")).unwrap_or_else(|e| panic!("{e}"))
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap_or_default()
}

fn node(name: &str) -> Node {
    Node {
        id: name.into(),
        lease_timeout: Duration::minutes(10),
    }
}

#[test]
fn a_dead_nodes_leases_are_recovered_by_another_only_after_the_timeout() {
    let Some(db) = PgDb::new() else { return };
    let open = |n: &str| {
        PgStore::open(&db.url, true)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_node(n)
    };
    let (a, b) = (open("node-a"), open("node-b"));
    let contacts: Vec<Contact> = (0..3)
        .map(|c| Contact::new(id(c), number(c), None, Vec::new()))
        .collect();
    a.upsert_contacts("t", &contacts)
        .unwrap_or_else(|e| panic!("{e}"));
    // node-a leases c0 (then dies), and c1 a while later; node-b leases c2.
    let lease = |s: &PgStore, c: u8, at: DateTime<Utc>, call: &str| {
        s.lease("t", &id(c), &number(c), at, call)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    lease(&a, 0, t0(), "a:c0");
    lease(&a, 1, t0() + Duration::minutes(8), "a:c1");
    lease(&b, 2, t0() + Duration::minutes(9), "b:c2");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut log = AuditLog::open(dir.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    // node-b starts at t0 + 11 min: its own lease c2 has no INVITE in its log — released;
    // node-a's c0 is 11 min old — recovered as interrupted; c1 (3 min) is left to node-a.
    let now = t0() + Duration::minutes(11);
    let done =
        reconcile_node(&b, &mut log, &[], now, &node("node-b")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        done,
        vec![
            Recovered::Interrupted {
                campaign: "t".into(),
                contact: "c0".into(),
                call: "a:c0".into()
            },
            Recovered::Released {
                campaign: "t".into(),
                contact: "c2".into(),
                call: "b:c2".into()
            },
        ]
    );
    let left: Vec<String> = b
        .leases()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|l| format!("{}:{}", l.node, l.call))
        .collect();
    assert_eq!(
        left,
        ["node-a:a:c1"],
        "the live node's newer lease is left alone"
    );
    // The dead node's call counts, and node-b's log has its outcome under its call id.
    let att = b.attempts(&number(0)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(att.len(), 1);
    assert_eq!(
        (att[0].outcome.name().as_str(), att[0].call.as_str()),
        ("interrupted", "a:c0")
    );
    assert_eq!((att[0].started, att[0].ended), (t0(), now));
    let outcomes: Vec<(String, String, String)> = read_all(dir.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter_map(|(_, _, e)| match e.record {
            Record::Outcome(o) => Some((o.call, o.outcome.name(), o.number)),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        [(
            "a:c0".to_owned(),
            "interrupted".to_owned(),
            number(0).to_string()
        )]
    );
    // Later, c1 expires too; recovering again changes nothing else.
    let later = t0() + Duration::minutes(19);
    let again =
        recover_expired(&b, &mut log, later, &node("node-b")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.len(), 1);
    assert!(b.leases().unwrap_or_else(|e| panic!("{e}")).is_empty());
    assert!(recover_expired(&b, &mut log, later, &node("node-b"))
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
    assert_eq!(
        b.attempts(&number(1))
            .unwrap_or_else(|e| panic!("{e}"))
            .len(),
        1
    );
    assert!(b
        .attempts(&number(2))
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
}

/// A call longer than the lease timeout on a live node: its node's heartbeat
/// (`node_alive`, every refill) keeps the lease, so another node leaves it alone however old
/// it is; once the heartbeats stop for a timeout, the lease is recovered.
#[test]
fn a_live_nodes_call_longer_than_the_timeout_is_not_taken_over() {
    let Some(db) = PgDb::new() else { return };
    let open = |n: &str| {
        PgStore::open(&db.url, true)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_node(n)
    };
    let (a, b) = (open("node-a"), open("node-b"));
    a.upsert_contacts("t", &[Contact::new(id(0), number(0), None, Vec::new())])
        .unwrap_or_else(|e| panic!("{e}"));
    a.lease("t", &id(0), &number(0), t0(), "a:c0")
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut log = AuditLog::open(dir.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let beat = |at: DateTime<Utc>| {
        a.node_alive("t", "node-a", at, at - Duration::minutes(1))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let recover = |log: &mut AuditLog, at: DateTime<Utc>| {
        recover_expired(&b, log, at, &node("node-b")).unwrap_or_else(|e| panic!("{e}"))
    };
    // The call runs 25 min, node-a beating every few minutes; node-b looks on (timeout 10 min).
    for m in [4, 8, 12, 16, 20, 24] {
        beat(t0() + Duration::minutes(m));
        assert_eq!(recover(&mut log, t0() + Duration::minutes(m + 3)), vec![]);
    }
    assert_eq!(b.leases().map(|l| l.len()).ok(), Some(1));
    // node-a falls silent after 24 min: 10 min later its lease is recovered, not before.
    assert_eq!(recover(&mut log, t0() + Duration::minutes(33)), vec![]);
    assert_eq!(
        recover(&mut log, t0() + Duration::minutes(34)),
        vec![Recovered::Interrupted {
            campaign: "t".into(),
            contact: "c0".into(),
            call: "a:c0".into()
        }]
    );
    assert_eq!(b.leases().map(|l| l.len()).ok(), Some(0));
}
