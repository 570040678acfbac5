//! Store throughput of several nodes on one PostgreSQL database: what one dial costs the
//! shared store — take due contacts (`claim_due`, FOR UPDATE SKIP LOCKED), read the
//! re-check's inputs (the contact and its consent history, the opt-out list, the number's
//! attempts across campaigns), lease, finish the (simulated, zero-length) call with its
//! attempt, and write the contact's next due instant. Run by `scripts/bench/pg-nodes`.
//!
//! Usage:
//!   pg_nodes setup URL CONTACTS            import CONTACTS contacts, all due now
//!   pg_nodes node URL NODE SECONDS WORKERS one node (WORKERS threads, i.e. calls at once)
//!                                          for SECONDS; prints `node=… dials=… secs=…`

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use crieur_scheduler::{ConsentRecord, Contact, ContactId};
use crieur_store::{Claim, Error, PgStore, Store};

const CAMPAIGN: &str = "bench";

/// What a node's workers counted.
#[derive(Default)]
struct Counts {
    /// Contacts taken and re-checked.
    dials: AtomicU64,
    /// Leases asked for.
    calls: AtomicU64,
    /// Leases refused: another holder (never expected here).
    leased_already: AtomicU64,
}

fn setup(url: &str, n: usize) {
    let store = PgStore::open(url, true).unwrap_or_else(|e| panic!("{e}"));
    let granted = Utc::now() - chrono::Duration::days(1);
    let windows: crieur_scheduler::Windows = "daily 00:00-23:59"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let contacts: Vec<Contact> = (0..n)
        .map(|i| {
            Contact::new(
                ContactId::new(format!("c{i}")).unwrap_or_else(|e| panic!("{e}")),
                format!("+336{:08}", 10_000_000 + i)
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
                None,
                vec![ConsentRecord {
                    windows: windows.clone(),
                    granted_at: granted,
                    expires_at: None,
                    revoked_at: None,
                    source: "bench".into(),
                    proof: format!("p{i}"),
                }],
            )
        })
        .collect();
    let t = Instant::now();
    let stats = store
        .upsert_contacts(CAMPAIGN, &contacts)
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "setup contacts={} secs={:.2}",
        stats.created,
        t.elapsed().as_secs_f64()
    );
}

/// One worker: takes a few due contacts at a time and dials each once. Each worker claims
/// under a name of its own (`node/k`): a node's claims are its planner's, and a node's
/// workers here stand for concurrent calls of one planner, which never takes a contact it
/// already holds.
fn worker(store: &PgStore, node: &str, deadline: Instant, counts: &Counts) {
    let Counts {
        dials,
        calls,
        leased_already,
    } = counts;
    while Instant::now() < deadline {
        let now = Utc::now();
        let due = store
            .claim_due(
                CAMPAIGN,
                &Claim {
                    node,
                    until: now,
                    now,
                    hold_until: now + chrono::Duration::seconds(60),
                    limit: 8,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        if due.is_empty() {
            return;
        }
        for d in due {
            // The re-check's reads: the contact, the opt-out list, the number's attempts.
            let Some(c) = store
                .contact(CAMPAIGN, &d.id)
                .unwrap_or_else(|e| panic!("{e}"))
            else {
                continue;
            };
            let out = store
                .is_opted_out(c.phone())
                .unwrap_or_else(|e| panic!("{e}"));
            let _history = store.attempts(c.phone()).unwrap_or_else(|e| panic!("{e}"));
            dials.fetch_add(1, Ordering::Relaxed);
            if out {
                store
                    .set_due(CAMPAIGN, &[(d.id.clone(), None)])
                    .unwrap_or_else(|e| panic!("{e}"));
                continue;
            }
            let call = format!("{node}:{}", calls.fetch_add(1, Ordering::Relaxed));
            match store.lease(CAMPAIGN, &d.id, c.phone(), Utc::now(), &call) {
                Ok(()) => {}
                Err(Error::Leased { .. }) => {
                    leased_already.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => panic!("{e}"),
            }
            store
                .finish_attempt(
                    c.phone(),
                    &crieur_store::AttemptRecord {
                        campaign: CAMPAIGN.into(),
                        contact: d.id.to_string(),
                        started: Utc::now(),
                        ended: Utc::now(),
                        outcome: crieur_store::Outcome::call(
                            crieur_outcome::CallOutcome::AnsweredCompleted,
                        ),
                        call: call.clone(),
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"));
            store
                .set_due(CAMPAIGN, &[(d.id, None)])
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

fn node(url: &str, node: &str, secs: u64, workers: usize) {
    let store = PgStore::open(url, false)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_node(node);
    let counts = Counts::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    std::thread::scope(|s| {
        for k in 0..workers {
            let (store, counts) = (&store, &counts);
            s.spawn(move || worker(store, &format!("{node}/{k}"), deadline, counts));
        }
    });
    println!(
        "node={node} dials={} leases={} refused={} secs={:.2}",
        counts.dials.load(Ordering::Relaxed),
        counts.calls.load(Ordering::Relaxed),
        counts.leased_already.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    match arg(0) {
        "setup" => setup(arg(1), arg(2).parse().unwrap_or(100_000)),
        "node" => node(
            arg(1),
            arg(2),
            arg(3).parse().unwrap_or(20),
            arg(4).parse().unwrap_or(8),
        ),
        _ => eprintln!("usage: pg_nodes setup URL CONTACTS | node URL NODE SECONDS WORKERS"),
    }
}
