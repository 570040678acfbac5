//! The `Store` contract, run against every backend: sled (a temporary directory) and
//! PostgreSQL (a database of its own per test, on the server `.ci/run` starts; the suite
//! fails when it cannot be reached, unless `CRIEUR_SKIP_POSTGRES=1`).
//!
//! Each test below is one function over `&dyn Store`; `backends!` makes a test of it per
//! backend, so both are held to exactly the same assertions.

use chrono::{DateTime, Duration, Utc};
use crieur_scheduler::{ConsentRecord, Contact, ContactId, E164};
use crieur_store::{
    AttemptRecord, Claim, DueContact, Error, Finished, Lease, PgStore, Progress, SledStore, Store,
};
use crieur_test_support::pg::PgDb;

fn n(s: &str) -> E164 {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn id(s: &str) -> ContactId {
    ContactId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or_default()
}

/// Unwraps a store result, showing the error.
fn ok<T>(r: Result<T, Error>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn consent(windows: &str, granted: i64, proof: &str) -> ConsentRecord {
    ConsentRecord {
        windows: windows.parse().unwrap_or_else(|e| panic!("{e}")),
        granted_at: t(granted),
        expires_at: None,
        revoked_at: None,
        source: "form".into(),
        proof: proof.into(),
    }
}

fn contact(i: &str, phone: &str, consents: Vec<ConsentRecord>) -> Contact {
    Contact::new(id(i), n(phone), None, consents)
}

const T0: i64 = 1_780_000_000;

fn sled_store(dir: &std::path::Path) -> Box<dyn Store> {
    Box::new(ok(SledStore::open(dir, true)))
}

macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        mod sled_backend {
            $(
                #[test]
                fn $name() {
                    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                    super::$name(&*super::sled_store(dir.path()));
                }
            )*
        }
        mod pg_backend {
            $(
                #[test]
                fn $name() {
                    let Some(db) = crieur_test_support::pg::PgDb::new() else { return };
                    let store = super::ok(crieur_store::PgStore::open(&db.url, true));
                    super::$name(&store);
                }
            )*
        }
    };
}

backends!(
    reimport_keeps_consent_history,
    campaigns_are_listed_once_each_in_order,
    a_scan_gives_every_contact_of_its_campaign_once_in_bounded_batches,
    opt_outs_are_hashed_and_global,
    pending_opt_outs_are_kept_with_their_opt_outs_per_log,
    a_call_whose_lease_was_recovered_and_taken_again_leaves_the_new_lease_and_counts_once,
    a_contact_is_leased_once_and_its_attempt_recorded_with_it,
    leases_recover_as_interrupted_only_when_their_invite_may_have_left,
    attempts_are_kept_per_number_across_campaigns_in_order,
    imported_contacts_are_due_at_their_earliest_grant_and_counted,
    new_consent_brings_a_contact_forward_never_back,
    claims_take_the_earliest_due_once_until_they_lapse,
    set_due_moves_counters_and_releases_claims,
    the_due_index_agrees_with_a_model_over_random_operations,
);

const WEEKDAYS: &str = "mon-fri 09:00-18:00";
const MONDAY: &str = "mon 09:00-10:00";

fn reimport_keeps_consent_history(s: &dyn Store) {
    let first = ok(s.upsert_contacts(
        "c1",
        &[
            contact("b", "+33612345678", vec![consent(WEEKDAYS, T0, "p1")]),
            contact("a", "+33612345679", vec![consent(WEEKDAYS, T0, "p2")]),
        ],
    ));
    assert_eq!(
        (first.created, first.updated, first.consents_added),
        (2, 0, 2)
    );
    // Again with one new record for "b" and the same one for "a": nothing lost, one added.
    let again = ok(s.upsert_contacts(
        "c1",
        &[
            contact(
                "b",
                "+33612345670",
                vec![
                    consent(WEEKDAYS, T0, "p1"),
                    consent("sat 10:00-12:00", T0 + 10, "p3"),
                ],
            ),
            contact("a", "+33612345679", vec![consent(WEEKDAYS, T0, "p2")]),
        ],
    ));
    assert_eq!(
        (again.created, again.updated, again.consents_added),
        (0, 2, 1)
    );
    let b = ok(s.contact("c1", &id("b"))).unwrap_or_else(|| panic!("b is stored"));
    assert_eq!(
        b.phone().as_str(),
        "+33612345670",
        "the number is the latest"
    );
    let proofs: Vec<&str> = b.consents().iter().map(|c| c.proof.as_str()).collect();
    assert_eq!(proofs, ["p1", "p3"], "history kept, in import order");
    let all = ok(s.contacts("c1"));
    let ids: Vec<&str> = all.iter().map(|c| c.id().as_str()).collect();
    assert_eq!(ids, ["a", "b"], "id order");
    assert!(ok(s.contact("c1", &id("zz"))).is_none());
    assert!(ok(s.contacts("other")).is_empty());
    // The same id twice in one import: the later row updates the earlier.
    let twice = ok(s.upsert_contacts(
        "c1",
        &[
            contact(
                "d",
                "+33612345671",
                vec![consent("sun 10:00-12:00", T0, "x1")],
            ),
            contact(
                "d",
                "+33612345672",
                vec![consent("sun 10:00-12:00", T0, "x2")],
            ),
        ],
    ));
    assert_eq!(
        (twice.created, twice.updated, twice.consents_added),
        (1, 1, 2)
    );
    let d = ok(s.contact("c1", &id("d"))).unwrap_or_else(|| panic!("d is stored"));
    assert_eq!(d.phone().as_str(), "+33612345672");
    assert_eq!(d.consents().len(), 2);
}

fn campaigns_are_listed_once_each_in_order(s: &dyn Store) {
    let one = |c: &str, i: &str| {
        ok(s.upsert_contacts(
            c,
            &[contact(i, "+33612345678", vec![consent(MONDAY, T0, i)])],
        ));
    };
    one("zeta", "1");
    one("alpha", "1");
    one("alpha", "2");
    one("alpha-2", "1");
    assert_eq!(ok(s.campaigns()), ["alpha", "alpha-2", "zeta"]);
}

fn a_scan_gives_every_contact_of_its_campaign_once_in_bounded_batches(s: &dyn Store) {
    let phone = |k: usize| format!("+336123{k:05}");
    let many: Vec<Contact> = (0..1_000)
        .map(|k| contact(&format!("c{k}"), &phone(k), vec![consent(MONDAY, T0, "p")]))
        .collect();
    ok(s.upsert_contacts("big", &many));
    ok(s.upsert_contacts(
        "other",
        &[contact("x", "+33699999999", vec![consent(MONDAY, T0, "p")])],
    ));
    for batch in [1, 7, 100, 5_000] {
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        ok(s.scan_contacts("big", batch, &mut |page| {
            sizes.push(page.len());
            seen.extend(page);
            true
        }));
        // Every contact, whole, once; no page empty; every page but the last at least
        // `batch` and none much larger (a backend reads whole buckets: at most a bucket more).
        assert_eq!(seen.len(), many.len(), "batch {batch}");
        seen.sort_by(|a, b| a.id().cmp(b.id()));
        let mut want = many.clone();
        want.sort_by(|a, b| a.id().cmp(b.id()));
        assert_eq!(seen, want, "batch {batch}");
        assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");
        let (last, full) = sizes.split_last().unwrap_or_else(|| panic!("no page"));
        assert!(
            full.iter().all(|&n| n >= batch && n < batch + 200),
            "{sizes:?}"
        );
        assert!(*last <= batch + 200, "{sizes:?}");
    }
    // Stopped by the caller after the first page.
    let mut pages = 0;
    ok(s.scan_contacts("big", 10, &mut |_| {
        pages += 1;
        false
    }));
    assert_eq!(pages, 1);
    let mut none = 0;
    ok(s.scan_contacts("nobody", 10, &mut |p| {
        none += p.len();
        true
    }));
    assert_eq!(none, 0);

    // Opted out, one answer per number asked, in order; a number asked twice is answered
    // twice.
    ok(s.add_opt_outs(&[n(&phone(3)), n(&phone(500))], t(T0), "list"));
    let asked = [n(&phone(500)), n(&phone(4)), n(&phone(3)), n(&phone(500))];
    let refs: Vec<&E164> = asked.iter().collect();
    assert_eq!(ok(s.opted_out_among(&refs)), [true, false, true, true]);
    assert_eq!(ok(s.opted_out_among(&[])), Vec::<bool>::new());
}

fn opt_outs_are_hashed_and_global(s: &dyn Store) {
    let (a, b) = (n("+33612345678"), n("+33612345679"));
    assert!(ok(s.add_opt_out(&a, t(T0), "key 9")));
    assert!(!ok(s.add_opt_out(&a, t(T0 + 5), "again")));
    assert_eq!(
        ok(s.add_opt_outs(&[a.clone(), b.clone(), b.clone()], t(T0 + 9), "list")),
        1,
        "only b is new, once"
    );
    assert!(ok(s.is_opted_out(&a)));
    let list = ok(s.opt_outs());
    assert_eq!(list.len(), 2);
    for o in &list {
        assert_eq!(o.number_hash.len(), 64, "a SHA-256 in hex");
    }
    let first = list.iter().find(|o| o.source == "key 9");
    assert_eq!(
        first.map(|o| o.at),
        Some(t(T0)),
        "the first opt-out's date is kept"
    );
    assert!(ok(s.remove_opt_out(&a)));
    assert!(!ok(s.remove_opt_out(&a)));
    assert!(!ok(s.is_opted_out(&a)));
    assert!(ok(s.is_opted_out(&b)));
}

fn pending_opt_outs_are_kept_with_their_opt_outs_per_log(s: &dyn Store) {
    let p = |ticket: &str, log: &str, numbers: &[&str], at: i64| crieur_store::PendingOptOut {
        ticket: ticket.into(),
        log: log.into(),
        numbers: numbers.iter().map(|s| (*s).to_owned()).collect(),
        at: t(at),
        source: "api".into(),
    };
    let a = p("b", "/n1/log", &["+33612345678", "+33612345679"], T0 + 1);
    let b = p("a", "/n1/log", &["+33612345670"], T0);
    let c = p("c", "/n2/log", &["+33612345671"], T0);
    ok(s.add_opt_out(&n("+33612345679"), t(T0 - 5), "letter"));
    assert_eq!(
        ok(s.add_opt_outs_pending(&[n("+33612345678"), n("+33612345679")], &a)),
        1,
        "one new"
    );
    assert_eq!(ok(s.add_opt_outs_pending(&[n("+33612345670")], &b)), 1);
    assert_eq!(ok(s.add_opt_outs_pending(&[n("+33612345671")], &c)), 1);
    for x in [
        "+33612345678",
        "+33612345679",
        "+33612345670",
        "+33612345671",
    ] {
        assert!(ok(s.is_opted_out(&n(x))), "{x}");
    }
    // The first opt-out of a number is the one kept.
    let kept = ok(s.opt_outs());
    assert_eq!(kept.iter().filter(|o| o.source == "letter").count(), 1);
    // Each log's own, oldest first, numbers in clear.
    assert_eq!(
        ok(s.pending_opt_outs("/n1/log")),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(ok(s.pending_opt_outs("/n2/log")), vec![c.clone()]);
    ok(s.clear_pending_opt_outs(&["a".into(), "b".into(), "nope".into()]));
    assert!(ok(s.pending_opt_outs("/n1/log")).is_empty());
    assert_eq!(ok(s.pending_opt_outs("/n2/log")), vec![c]);
    // Forgetting the entry leaves the opt-out.
    assert!(ok(s.is_opted_out(&n("+33612345670"))));
}

fn a_contact_is_leased_once_and_its_attempt_recorded_with_it(s: &dyn Store) {
    let num = n("+33612345678");
    let at = t(T0) + Duration::microseconds(123_456);
    ok(s.lease("c1", &id("a"), &num, at, "call-1"));
    match s.lease("c1", &id("a"), &num, at + Duration::seconds(1), "call-2") {
        Err(Error::Leased { since, .. }) => assert_eq!(since, at),
        other => panic!("a second lease must fail: {other:?}"),
    }
    // Another campaign's contact of the same id is another contact.
    ok(s.lease("c2", &id("a"), &num, at, "call-3"));
    let ended = at + Duration::milliseconds(31_500);
    assert_eq!(
        ok(finish(s, "c1", "a", &num, "call-1", "answered", at, ended)),
        Finished::Closed
    );
    // Finishing it again: no lease of that call; its attempt stays one.
    assert_eq!(
        ok(finish(s, "c1", "a", &num, "call-1", "answered", at, ended)),
        Finished::LeaseLost {
            held_by: None,
            updated: true
        }
    );
    assert_eq!(
        ok(s.leases()),
        [Lease {
            campaign: "c2".into(),
            contact: "a".into(),
            at,
            call: "call-3".into(),
            node: String::new(),
        }]
    );
    let att = ok(s.attempts(&num));
    assert_eq!(att.len(), 1);
    assert_eq!(
        (
            att[0].started,
            att[0].ended,
            att[0].outcome.name().as_str(),
            att[0].call.as_str()
        ),
        (at, ended, "answered", "call-1"),
        "instants to the microsecond, the call id kept"
    );
    // The contact can be leased again.
    ok(s.lease("c1", &id("a"), &num, ended, "call-4"));
}

/// Ends call `call` of contact `contact` as the dial protocol does.
#[allow(clippy::too_many_arguments)]
fn finish(
    s: &dyn Store,
    campaign: &str,
    contact: &str,
    num: &E164,
    call: &str,
    outcome: &str,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
) -> Result<Finished, Error> {
    s.finish_attempt(
        num,
        &AttemptRecord {
            campaign: campaign.into(),
            contact: contact.into(),
            started,
            ended,
            outcome: o(outcome),
            call: call.into(),
        },
    )
}

/// Issue 17's multi-node race: call A's lease is recovered (its node judged dead: a
/// heartbeat late under load) as an `interrupted` attempt, the contact leased again for
/// call B; then A ends. A's end must leave B's lease alone and count A once (the recovered
/// attempt given A's real outcome); B then ends normally: two attempts, two calls.
fn a_call_whose_lease_was_recovered_and_taken_again_leaves_the_new_lease_and_counts_once(
    s: &dyn Store,
) {
    let num = n("+33612345678");
    ok(s.lease("c1", &id("a"), &num, t(T0), "call-A"));
    let lease = ok(s.leases()).remove(0);
    ok(s.recover_lease(&lease, true, t(T0 + 700)));
    ok(s.lease("c1", &id("a"), &num, t(T0 + 701), "call-B"));
    // A late recovery of A's lease (another node's copy of it) touches nothing now.
    assert_eq!(ok(s.recover_lease(&lease, true, t(T0 + 702))), None);
    ok(s.recover_lease(&lease, false, t(T0 + 702)));
    assert_eq!(ok(s.leases()).len(), 1, "B's lease kept");
    match ok(finish(
        s,
        "c1",
        "a",
        &num,
        "call-A",
        "answered",
        t(T0),
        t(T0 + 710),
    )) {
        Finished::LeaseLost {
            held_by: Some((_, call)),
            updated: true,
        } => assert_eq!(call, "call-B"),
        other => panic!("A's lease was lost, B holds the contact: {other:?}"),
    }
    let leases = ok(s.leases());
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].call, "call-B", "B's lease intact");
    let att = ok(s.attempts(&num));
    assert_eq!(att.len(), 1, "A counted once: {att:?}");
    assert_eq!(
        (
            att[0].call.as_str(),
            att[0].outcome.name().as_str(),
            att[0].ended
        ),
        ("call-A", "answered", t(T0 + 710)),
        "the recovered attempt has A's real outcome"
    );
    assert_eq!(
        ok(finish(
            s,
            "c1",
            "a",
            &num,
            "call-B",
            "busy",
            t(T0 + 701),
            t(T0 + 720)
        )),
        Finished::Closed
    );
    assert!(ok(s.leases()).is_empty());
    let att = ok(s.attempts(&num));
    assert_eq!(
        att.iter().map(|a| a.call.as_str()).collect::<Vec<_>>(),
        ["call-A", "call-B"]
    );
    // A call whose lease was released without an attempt (its INVITE thought unsent) still
    // counts when it ends.
    ok(s.lease("c1", &id("b"), &num, t(T0 + 800), "call-C"));
    let lease = ok(s.leases()).remove(0);
    ok(s.recover_lease(&lease, false, t(T0 + 900)));
    assert_eq!(
        ok(finish(
            s,
            "c1",
            "b",
            &num,
            "call-C",
            "busy",
            t(T0 + 800),
            t(T0 + 910)
        )),
        Finished::LeaseLost {
            held_by: None,
            updated: false
        }
    );
    assert_eq!(ok(s.attempts(&num)).len(), 3);
}

fn leases_recover_as_interrupted_only_when_their_invite_may_have_left(s: &dyn Store) {
    let num = n("+33612345678");
    ok(s.lease("c1", &id("a"), &num, t(T0), "sent"));
    ok(s.lease("c1", &id("b"), &num, t(T0 + 1), "unsent"));
    let leases = ok(s.leases());
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0].call, "sent", "oldest first");
    let rec = ok(s.recover_lease(&leases[0], true, t(T0 + 60)))
        .unwrap_or_else(|| panic!("an interrupted attempt"));
    assert_eq!(
        (rec.outcome.name().as_str(), rec.started, rec.ended),
        ("interrupted", t(T0), t(T0 + 60))
    );
    assert_eq!(ok(s.recover_lease(&leases[1], false, t(T0 + 60))), None);
    assert!(ok(s.leases()).is_empty());
    let att = ok(s.attempts(&num));
    assert_eq!(att.len(), 1, "only the call that may have left counts");
    assert_eq!(att[0].call, "sent");
}

fn attempts_are_kept_per_number_across_campaigns_in_order(s: &dyn Store) {
    let (a, b) = (n("+33612345678"), n("+33612345679"));
    let rec = |c: &str, started: i64, call: &str| AttemptRecord {
        campaign: c.into(),
        contact: "x".into(),
        started: t(started),
        ended: t(started + 30),
        outcome: o("no-answer"),
        call: call.into(),
    };
    ok(s.record_attempt(&a, &rec("c2", T0 + 100, "2")));
    ok(s.record_attempt(&a, &rec("c1", T0, "1")));
    // Two at the same instant are both kept.
    ok(s.record_attempt(&a, &rec("c3", T0 + 100, "3")));
    ok(s.record_attempt(&b, &rec("c1", T0, "b")));
    let got = ok(s.attempts(&a));
    assert_eq!(got.len(), 3);
    assert_eq!((got[0].campaign.as_str(), got[0].started), ("c1", t(T0)));
    assert!(got[1..].iter().all(|r| r.started == t(T0 + 100)));
    assert_eq!(ok(s.attempts(&b)).len(), 1);
}

fn imported_contacts_are_due_at_their_earliest_grant_and_counted(s: &dyn Store) {
    ok(s.upsert_contacts(
        "c1",
        &[
            contact(
                "a",
                "+33612345678",
                vec![
                    consent(MONDAY, T0 + 50, "1"),
                    consent("tue 09:00-10:00", T0 + 20, "2"),
                ],
            ),
            contact("b", "+33612345679", vec![consent(MONDAY, T0 + 30, "3")]),
            contact("c", "+33612345670", vec![]),
        ],
    ));
    let due = |i: &str| ok(s.due_of("c1", &id(i)));
    assert_eq!(due("a"), Some(Some(t(T0 + 20))), "the earliest grant");
    assert_eq!(due("b"), Some(Some(t(T0 + 30))));
    assert_eq!(due("c"), Some(None), "no consent: nothing to do");
    assert_eq!(due("zz"), None, "not in the store");
    let counts = Progress {
        remaining: 2,
        done: 1,
    };
    assert_eq!(ok(s.progress("c1")), counts);
    assert_eq!(ok(s.progress("none")), Progress::default());
    assert_eq!(ok(s.next_due("c1")), Some(t(T0 + 20)));
    assert_eq!(ok(s.next_due("none")), None);
    // Re-importing a contact as it was changes nothing.
    ok(s.upsert_contacts(
        "c1",
        &[contact(
            "b",
            "+33612345679",
            vec![consent(MONDAY, T0 + 30, "3")],
        )],
    ));
    assert_eq!(ok(s.progress("c1")), counts);
    assert_eq!(due("b"), Some(Some(t(T0 + 30))));
}

fn new_consent_brings_a_contact_forward_never_back(s: &dyn Store) {
    let import = |grant: i64, proof: &str| {
        ok(s.upsert_contacts(
            "c1",
            &[contact(
                "a",
                "+33612345678",
                vec![consent(MONDAY, grant, proof)],
            )],
        ));
    };
    let due = || ok(s.due_of("c1", &id("a")));
    import(T0, "1");
    ok(s.set_due("c1", &[(id("a"), Some(t(T0 + 1000)))]));
    // A record granted after the due instant does not push it back.
    import(T0 + 5000, "2");
    assert_eq!(due(), Some(Some(t(T0 + 1000))));
    // One granted before it brings it forward (it is evaluated again).
    import(T0 + 500, "3");
    assert_eq!(due(), Some(Some(t(T0 + 500))));
    // Done, then new consent: due again.
    ok(s.set_due("c1", &[(id("a"), None)]));
    assert_eq!(
        ok(s.progress("c1")),
        Progress {
            remaining: 0,
            done: 1
        }
    );
    import(T0 + 9000, "4");
    assert_eq!(due(), Some(Some(t(T0 + 9000))));
    assert_eq!(
        ok(s.progress("c1")),
        Progress {
            remaining: 1,
            done: 0
        }
    );
}

fn ids(v: &[DueContact]) -> Vec<&str> {
    v.iter().map(|d| d.id.as_str()).collect()
}

/// Claims of `node` of what is due by `until`, at `now`, held 300 s.
fn claim(s: &dyn Store, node: &str, until: i64, now: i64, limit: usize) -> Vec<DueContact> {
    ok(s.claim_due(
        "c1",
        &Claim {
            node,
            until: t(until),
            now: t(now),
            hold_until: t(now + 300),
            limit,
        },
    ))
}

fn claims_take_the_earliest_due_once_until_they_lapse(s: &dyn Store) {
    let contacts: Vec<Contact> = (0..6)
        .map(|i| {
            let grant = T0 + 100 - i * 10;
            contact(
                &format!("k{i}"),
                "+33612345678",
                vec![consent(MONDAY, grant, &format!("p{i}"))],
            )
        })
        .collect();
    ok(s.upsert_contacts("c1", &contacts));
    // Due: k5 at T0+50, k4 at +60, … k0 at +100. By T0+70: k5, k4, k3.
    let a = claim(s, "node-a", T0 + 70, T0, 2);
    assert_eq!(ids(&a), ["k5", "k4"], "earliest first, at most the limit");
    assert_eq!(a[0].due, t(T0 + 50));
    let b = claim(s, "node-b", T0 + 70, T0, 10);
    assert_eq!(
        ids(&b),
        ["k3"],
        "another node never gets what a claim holds"
    );
    assert_eq!(
        ids(&claim(s, "node-b", T0 + 70, T0 + 10, 10)),
        ["k3"],
        "its own claim only"
    );
    // The same node may take its own claims again (a restart of that node).
    assert_eq!(ids(&claim(s, "node-a", T0 + 70, T0 + 10, 10)), ["k5", "k4"]);
    // node-a dies: once its claims lapse, node-b takes them.
    assert_eq!(
        ids(&claim(s, "node-b", T0 + 70, T0 + 400, 10)),
        ["k5", "k4", "k3"]
    );
    assert!(
        claim(s, "x", T0 + 49, T0 + 400, 10).is_empty(),
        "nothing due by then"
    );
    let elsewhere = Claim {
        node: "x",
        until: t(T0 + 1000),
        now: t(T0),
        hold_until: t(T0),
        limit: 10,
    };
    assert!(ok(s.claim_due("other", &elsewhere)).is_empty());
}

fn set_due_moves_counters_and_releases_claims(s: &dyn Store) {
    let contacts: Vec<Contact> = (0..4)
        .map(|i| {
            contact(
                &format!("k{i}"),
                "+33612345678",
                vec![consent(MONDAY, T0, &format!("p{i}"))],
            )
        })
        .collect();
    ok(s.upsert_contacts("c1", &contacts));
    assert_eq!(claim(s, "a", T0 + 10_000, T0, 10).len(), 4);
    // Node a evaluated k0 (skipped: eligible later), k1 (done) and k2 (unchanged).
    ok(s.set_due(
        "c1",
        &[
            (id("k0"), Some(t(T0 + 5000))),
            (id("k1"), None),
            (id("k2"), Some(t(T0))),
            (id("nobody"), None),
        ],
    ));
    assert_eq!(
        ok(s.progress("c1")),
        Progress {
            remaining: 3,
            done: 1
        }
    );
    // Released: node b takes k2 (due) and k0 (due by T0+10000); k3 is still a's.
    let b = claim(s, "b", T0 + 10_000, T0, 10);
    assert_eq!(ids(&b), ["k2", "k0"]);
    assert_eq!(b[1].due, t(T0 + 5000));
    // Done contacts are never claimed.
    ok(s.set_due(
        "c1",
        &[(id("k0"), None), (id("k2"), None), (id("k3"), None)],
    ));
    assert!(claim(s, "c", T0 + 10_000, T0 + 1000, 10).is_empty());
    assert_eq!(
        ok(s.progress("c1")),
        Progress {
            remaining: 0,
            done: 4
        }
    );
    // The last instant given for a contact wins.
    ok(s.set_due(
        "c1",
        &[(id("k0"), Some(t(T0 + 1))), (id("k0"), Some(t(T0 + 2)))],
    ));
    assert_eq!(ok(s.due_of("c1", &id("k0"))), Some(Some(t(T0 + 2))));
    assert_eq!(
        ok(s.progress("c1")),
        Progress {
            remaining: 1,
            done: 3
        }
    );
}

/// A small deterministic generator (xorshift), so both backends see the same operations.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn the_due_index_agrees_with_a_model_over_random_operations(s: &dyn Store) {
    use std::collections::BTreeMap;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // The model: id → due instant in seconds (None: done).
    let mut model: BTreeMap<String, Option<i64>> = BTreeMap::new();
    let mut proofs = 0;
    for _round in 0..40 {
        match rng.below(3) {
            0 => {
                // An import of a few contacts, some new, some with one more consent record.
                let batch: Vec<Contact> = (0..rng.below(6) + 1)
                    .map(|_| {
                        let i = format!("m{}", rng.below(30));
                        let grant = T0 + rng.below(10_000) as i64;
                        proofs += 1;
                        let c = consent(MONDAY, grant, &format!("q{proofs}"));
                        contact(&i, "+33612345678", vec![c])
                    })
                    .collect();
                ok(s.upsert_contacts("c1", &batch));
                for c in &batch {
                    let g = c.consents()[0].granted_at.timestamp();
                    let e = model.entry(c.id().as_str().to_owned()).or_insert(Some(g));
                    *e = Some(e.map_or(g, |d| d.min(g)));
                }
            }
            1 => {
                let changes: Vec<(ContactId, Option<DateTime<Utc>>)> = (0..rng.below(5) + 1)
                    .map(|_| {
                        let i = format!("m{}", rng.below(30));
                        let w = (rng.below(4) > 0).then(|| T0 + rng.below(20_000) as i64);
                        (id(&i), w.map(t))
                    })
                    .collect();
                ok(s.set_due("c1", &changes));
                for (i, w) in &changes {
                    if let Some(e) = model.get_mut(i.as_str()) {
                        *e = w.map(|w| w.timestamp());
                    }
                }
            }
            _ => {
                let until = T0 + rng.below(20_000) as i64;
                let got = claim(s, "n", until, T0, 1000);
                let mut want: Vec<(i64, &str)> = model
                    .iter()
                    .filter_map(|(i, d)| d.filter(|d| *d <= until).map(|d| (d, i.as_str())))
                    .collect();
                want.sort();
                let got: Vec<(i64, &str)> = got
                    .iter()
                    .map(|d| (d.due.timestamp(), d.id.as_str()))
                    .collect();
                assert_eq!(got, want, "claim until {until}");
            }
        }
        let next = model.values().flatten().min().copied();
        assert_eq!(ok(s.next_due("c1")), next.map(t));
        let remaining = model.values().filter(|d| d.is_some()).count() as u64;
        assert_eq!(
            ok(s.progress("c1")),
            Progress {
                remaining,
                done: model.len() as u64 - remaining
            }
        );
        for (i, d) in &model {
            assert_eq!(ok(s.due_of("c1", &id(i))), Some(d.map(t)), "{i}");
        }
    }
}

/// A database that holds something else is never initialised over; one without a store and
/// without `create` is missing; nodes opening a new database at once apply the schema once
/// and share one opt-out key.
#[test]
fn postgres_refuses_foreign_databases_and_migrates_once() {
    let Some(db) = PgDb::new() else { return };
    match PgStore::open(&db.url, false) {
        Err(Error::Missing { .. }) => {}
        other => panic!("no store yet: {:?}", other.err()),
    }
    let stores: Vec<PgStore> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..3)
            .map(|_| sc.spawn(|| ok(PgStore::open(&db.url, true))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("opened")))
            .collect()
    });
    // One opt-out key for every node: a number opted out through one is out for all.
    let num = n("+33612345678");
    assert!(ok(stores[0].add_opt_out(&num, t(T0), "key 9")));
    assert!(ok(stores[2].is_opted_out(&num)));
    drop(stores);
    let other = PgDb::new().unwrap_or_else(|| panic!("a second database"));
    let mut c =
        postgres::Client::connect(&other.url, postgres::NoTls).unwrap_or_else(|e| panic!("{e}"));
    c.batch_execute("CREATE TABLE payroll (x int)")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(c);
    match PgStore::open(&other.url, true) {
        Err(Error::NotAStore { .. }) => {}
        other => panic!("must refuse: {:?}", other.err()),
    }
}

/// Two nodes lease from many threads at once: each contact is leased exactly once.
#[test]
fn postgres_nodes_never_lease_a_contact_twice() {
    let Some(db) = PgDb::new() else { return };
    let a = ok(PgStore::open(&db.url, true)).with_node("a");
    let b = ok(PgStore::open(&db.url, true)).with_node("b");
    let num = n("+33612345678");
    let won = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for k in 0..8 {
            let (s, won, num) = (if k % 2 == 0 { &a } else { &b }, &won, &num);
            sc.spawn(move || {
                for i in 0..20 {
                    let call = format!("call-{k}-{i}");
                    match s.lease("c1", &id(&format!("x{i}")), num, t(T0), &call) {
                        Ok(()) => {
                            won.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(Error::Leased { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    assert_eq!(won.into_inner(), 20, "one lease per contact");
    assert_eq!(ok(a.leases()).len(), 20);
}

/// The race of issue 17 between two PostgreSQL nodes: n01's lease is recovered by n02 and
/// the contact leased again by n02; n01's end of its call names n02's lease as the holder
/// and leaves it.
#[test]
fn postgres_a_node_ending_a_call_another_recovered_leaves_that_nodes_lease() {
    let Some(db) = PgDb::new() else { return };
    let a = ok(PgStore::open(&db.url, true)).with_node("n01");
    let b = ok(PgStore::open(&db.url, true)).with_node("n02");
    let num = n("+33612345678");
    ok(a.lease("c1", &id("x"), &num, t(T0), "n01-call"));
    let lease = ok(b.leases()).remove(0);
    assert_eq!(lease.node, "n01");
    ok(b.recover_lease(&lease, true, t(T0 + 700)));
    ok(b.lease("c1", &id("x"), &num, t(T0 + 701), "n02-call"));
    assert_eq!(
        ok(finish(
            &a,
            "c1",
            "x",
            &num,
            "n01-call",
            "answered",
            t(T0),
            t(T0 + 710)
        )),
        Finished::LeaseLost {
            held_by: Some(("n02".into(), "n02-call".into())),
            updated: true
        }
    );
    let leases = ok(a.leases());
    assert_eq!(
        (
            leases.len(),
            leases[0].node.as_str(),
            leases[0].call.as_str()
        ),
        (1, "n02", "n02-call")
    );
    assert_eq!(
        ok(finish(
            &b,
            "c1",
            "x",
            &num,
            "n02-call",
            "busy",
            t(T0 + 701),
            t(T0 + 720)
        )),
        Finished::Closed
    );
    assert_eq!(ok(a.attempts(&num)).len(), 2, "one attempt per call");
}

/// The nodes working on a campaign: each refill says it is alive; the pacing is shared
/// among those seen recently.
#[test]
fn postgres_counts_the_nodes_seen_recently_per_campaign() {
    let Some(db) = PgDb::new() else { return };
    let s = ok(PgStore::open(&db.url, true));
    assert_eq!(ok(s.node_alive("c1", "a", t(T0), t(T0 - 30))), 1);
    assert_eq!(ok(s.node_alive("c1", "b", t(T0 + 5), t(T0 - 25))), 2);
    assert_eq!(
        ok(s.node_alive("c2", "c", t(T0 + 5), t(T0 - 25))),
        1,
        "per campaign"
    );
    // a is not seen again: 30 s later only b counts (and itself).
    assert_eq!(ok(s.node_alive("c1", "b", t(T0 + 40), t(T0 + 10))), 1);
    assert_eq!(ok(s.node_alive("c1", "a", t(T0 + 41), t(T0 + 11))), 2);
}

#[test]
fn an_embedded_store_is_one_node() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let s = sled_store(dir.path());
    assert_eq!(ok(s.node_alive("c1", "a", t(T0), t(T0 - 30))), 1);
    assert_eq!(ok(s.node_alive("c1", "b", t(T0), t(T0 - 30))), 1);
}

/// A recorded outcome by its name.
fn o(name: &str) -> crieur_store::Outcome {
    name.parse().unwrap_or_else(|e| panic!("{e}"))
}
