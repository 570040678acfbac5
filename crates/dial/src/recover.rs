//! Crash recovery: the store and the audit log reconciled, from the log.
//!
//! The log decides whether a call may have been placed: the INVITE leaves only after its
//! `invite-sent` record is durable. So, for what a crash left behind:
//!
//! | store | log | what it means | made right |
//! |---|---|---|---|
//! | lease | `invite-sent`, no `outcome` | the call was placed, its end is lost | `interrupted` attempt (it counts) + its `outcome` record |
//! | lease | no `invite-sent` | killed before the INVITE left | lease released, no attempt used |
//! | attempt | `invite-sent`, no `outcome` | the call ended, its `outcome` record was lost | `outcome` written from the attempt |
//! | nothing | `invite-sent`, no `outcome` | the store lost the call | `interrupted` attempt + `outcome` |
//!
//! (An `invite-sent` to a contact this store does not hold is another store's, in an audit
//! directory they share: left alone.)
//!
//! Every `outcome` written here carries the call id of its `invite-sent` and its instant, so
//! replay links the two. Running it again changes nothing (it is idempotent), and a crash
//! during it leaves a state it repairs on the next run.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use crieur_audit::record::{InviteSent, OutcomeRecord};
use crieur_audit::{AuditLog, Entry, Record};
use crieur_outcome::{AttemptOutcome, Outcome};
use crieur_scheduler::{ContactId, E164};
use crieur_store::{AttemptRecord, Lease, Store};

use crate::Result;

/// What recovery did, one line per call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// A call placed before the crash, its end lost: counted as an `interrupted` attempt.
    Interrupted {
        campaign: String,
        contact: String,
        call: String,
    },
    /// A lease whose INVITE never left (no `invite-sent` in the log): released, no attempt.
    Released {
        campaign: String,
        contact: String,
        call: String,
    },
    /// A call the store had finished whose `outcome` record was lost: written from the store.
    OutcomeRestored {
        campaign: String,
        contact: String,
        call: String,
        outcome: Outcome,
    },
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovered::Interrupted {
                campaign,
                contact,
                call,
            } => write!(
                f,
                "an interrupted call to {campaign}/{contact} (call {call}): counted as an attempt"
            ),
            Recovered::Released {
                campaign,
                contact,
                call,
            } => write!(
                f,
                "lease of {campaign}/{contact} ({}) released: its INVITE never left (no attempt used)",
                if call.is_empty() { "no call id" } else { call }
            ),
            Recovered::OutcomeRestored {
                campaign,
                contact,
                call,
                outcome,
            } => write!(
                f,
                "the outcome `{outcome}` of the call to {campaign}/{contact} (call {call}), lost in a crash: written from the store"
            ),
        }
    }
}

/// Whether a legacy outcome (older versions named recovered calls
/// `recovered-<campaign>/<contact>`, with the lease's start to the second) closes `i`.
fn legacy_closes(o: &OutcomeRecord, i: &InviteSent) -> bool {
    o.call == format!("recovered-{}/{}", i.campaign, i.contact)
        && o.started.timestamp() == i.sent_at.timestamp()
}

/// Whether a lease taken before the store kept call ids (empty `call`) is `i`'s: same
/// contact, same second — or any instant when the lease is damaged (read as the epoch): a
/// call that may have left is counted, never released.
fn legacy_lease_is(l: &Lease, i: &InviteSent) -> bool {
    l.call.is_empty()
        && l.campaign == i.campaign
        && l.contact == i.contact
        && (l.at.timestamp() == i.sent_at.timestamp() || l.at == DateTime::<Utc>::default())
}

/// Whether a stored attempt is the one of call `i`.
fn attempt_is(a: &AttemptRecord, i: &InviteSent) -> bool {
    if a.call.is_empty() {
        // Recorded before the store kept call ids: its start, to the second.
        a.campaign == i.campaign
            && a.contact == i.contact
            && a.started.timestamp() == i.sent_at.timestamp()
    } else {
        a.call == i.call
    }
}

/// Reconciles `store` with the log whose records are `entries` (read back from it), appending
/// the missing records to `log` (committed, durable, when this returns). `now` stamps what
/// it writes and ends the interrupted calls.
pub fn reconcile(
    store: &dyn Store,
    log: &mut AuditLog,
    entries: &[Entry],
    now: DateTime<Utc>,
) -> Result<Vec<Recovered>> {
    reconcile_node(store, log, entries, now, &Node::default())
}

/// Which node reconciles, on a store several nodes share: the leases of other nodes are
/// theirs (their calls are in their own logs) until they are older than `lease_timeout` —
/// then their node is presumed dead and they are recovered here ([`recover_expired`]).
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// This node's id (the leases it takes carry it); empty: an embedded store, one process.
    pub id: String,
    /// How long a lease may last on a live node: longer than any call can.
    pub lease_timeout: chrono::Duration,
}

impl Node {
    /// Whether `lease` is another node's.
    fn foreign(&self, lease: &Lease) -> bool {
        !lease.node.is_empty() && lease.node != self.id
    }
}

/// The leases of other nodes older than the lease timeout whose node has not been seen
/// within it either (a live node's heartbeat, [`Store::node_seen`], keeps its leases
/// while its calls run, however long): each call may have left (its `invite-sent` is in
/// the dead node's log), so it becomes an `interrupted` attempt that counts, and this
/// node's log records its `outcome` under the dead node's call id (a merged replay of the
/// nodes' logs pairs it with its INVITE). The other leases of other nodes are left alone.
/// Durable when it returns.
pub fn recover_expired(
    store: &dyn Store,
    log: &mut AuditLog,
    now: DateTime<Utc>,
    node: &Node,
) -> Result<Vec<Recovered>> {
    let mut done = Vec::new();
    for lease in store.leases()? {
        if !node.foreign(&lease) || now - lease.at < node.lease_timeout {
            continue;
        }
        let seen = store.node_seen(&lease.campaign, &lease.node)?;
        if seen.is_some_and(|s| now - s < node.lease_timeout) {
            continue;
        }
        // What justified it, in the process's log: if that node was alive after all (its
        // heartbeat late), its call's end finds the lease gone and counts the call once
        // (`Store::finish_attempt`).
        tracing::warn!(
            campaign = lease.campaign,
            contact = lease.contact,
            call = lease.call,
            node = lease.node,
            lease_age_s = (now - lease.at).num_milliseconds() as f64 / 1000.0,
            heartbeat_age_s = seen.map(|s| (now - s).num_milliseconds() as f64 / 1000.0),
            timeout_s = node.lease_timeout.num_seconds(),
            "recovering another node's lease: older than the timeout, its node not seen within it"
        );
        let Some(a) = store.recover_lease(&lease, true, now)? else {
            // Gone meanwhile: another node recovered it, or its own node finished it.
            continue;
        };
        let number = match ContactId::new(lease.contact.clone()) {
            Ok(id) => store
                .contact(&lease.campaign, &id)?
                .map(|c| c.phone().to_string()),
            Err(_) => None,
        };
        log.append(
            now,
            &Record::Outcome(OutcomeRecord {
                call: a.call.clone(),
                campaign: a.campaign.clone(),
                contact: a.contact.clone(),
                number: number.unwrap_or_default(),
                started: a.started,
                ended: a.ended,
                outcome: a.outcome,
            }),
        )?;
        done.push(Recovered::Interrupted {
            campaign: lease.campaign,
            contact: lease.contact,
            call: lease.call,
        });
    }
    log.commit()?;
    Ok(done)
}

/// [`reconcile`] by `node` on a store other nodes may share: its own leases are reconciled
/// with its log; other nodes' are left to them, or recovered once expired
/// ([`recover_expired`]).
pub fn reconcile_node(
    store: &dyn Store,
    log: &mut AuditLog,
    entries: &[Entry],
    now: DateTime<Utc>,
    node: &Node,
) -> Result<Vec<Recovered>> {
    // Every INVITE of the log, in order, and which ones an outcome closes.
    let mut invites: Vec<&InviteSent> = Vec::new();
    let mut by_call: HashMap<&str, usize> = HashMap::new();
    let mut closed: HashSet<usize> = HashSet::new();
    let mut legacy_outcomes: Vec<&OutcomeRecord> = Vec::new();
    for e in entries {
        match &e.record {
            Record::InviteSent(i) => {
                by_call.insert(i.call.as_str(), invites.len());
                invites.push(i);
            }
            Record::Outcome(o) => match by_call.get(o.call.as_str()) {
                Some(&k) => {
                    closed.insert(k);
                }
                None if o.call.starts_with("recovered-") => legacy_outcomes.push(o),
                None => {}
            },
            _ => {}
        }
    }
    for (k, i) in invites.iter().enumerate() {
        if legacy_outcomes.iter().any(|o| legacy_closes(o, i)) {
            closed.insert(k);
        }
    }
    let mut done = recover_expired(store, log, now, node)?;
    for lease in store.leases()? {
        if node.foreign(&lease) {
            continue;
        }
        let invite = if lease.call.is_empty() {
            invites
                .iter()
                .enumerate()
                .find(|(k, i)| !closed.contains(k) && legacy_lease_is(&lease, i))
                .map(|(k, _)| k)
        } else {
            by_call.get(lease.call.as_str()).copied()
        };
        let Some(k) = invite else {
            store.recover_lease(&lease, false, now)?;
            done.push(Recovered::Released {
                campaign: lease.campaign,
                contact: lease.contact,
                call: lease.call,
            });
            continue;
        };
        let i = invites[k];
        if store.recover_lease(&lease, true, now)?.is_none() {
            // The lease could not become an attempt (it was damaged): the call still counts.
            if let Ok(n) = i.number.parse::<E164>() {
                store.record_attempt(&n, &interrupted(i, now))?;
            }
        }
        if !closed.contains(&k) {
            log.append(now, &outcome(i, INTERRUPTED, now))?;
            closed.insert(k);
        }
        done.push(Recovered::Interrupted {
            campaign: lease.campaign,
            contact: lease.contact,
            call: i.call.clone(),
        });
    }
    // INVITEs still without an outcome: the store finished the call (or lost it).
    for (k, i) in invites.iter().enumerate() {
        if closed.contains(&k) {
            continue;
        }
        let number: Option<E164> = i.number.parse().ok();
        let attempt = match &number {
            Some(n) => store.attempts(n)?.into_iter().find(|a| attempt_is(a, i)),
            None => None,
        };
        match attempt {
            Some(a) => {
                log.append(now, &outcome(i, a.outcome, a.ended))?;
                done.push(Recovered::OutcomeRestored {
                    campaign: i.campaign.clone(),
                    contact: i.contact.clone(),
                    call: i.call.clone(),
                    outcome: a.outcome,
                });
            }
            None => {
                // Not a contact of this store: the call is another store's (an audit
                // directory shared between stores); it is not this store's to account for.
                let ours = ContactId::new(i.contact.clone())
                    .ok()
                    .map(|id| store.contact(&i.campaign, &id))
                    .transpose()?
                    .flatten()
                    .is_some_and(|c| Some(c.phone()) == number.as_ref());
                if !ours {
                    continue;
                }
                // The store has no trace of a call the log shows placed: it counts.
                if let Some(n) = &number {
                    store.record_attempt(n, &interrupted(i, now))?;
                }
                log.append(now, &outcome(i, INTERRUPTED, now))?;
                done.push(Recovered::Interrupted {
                    campaign: i.campaign.clone(),
                    contact: i.contact.clone(),
                    call: i.call.clone(),
                });
            }
        }
    }
    log.commit()?;
    Ok(done)
}

/// How recovery closes a call it cannot finish.
const INTERRUPTED: Outcome = Outcome::Scheduled(AttemptOutcome::Interrupted);

/// The `interrupted` attempt of INVITE `i`, ended at `now`.
fn interrupted(i: &InviteSent, now: DateTime<Utc>) -> AttemptRecord {
    AttemptRecord {
        campaign: i.campaign.clone(),
        contact: i.contact.clone(),
        started: i.sent_at,
        ended: now,
        outcome: INTERRUPTED,
        call: i.call.clone(),
    }
}

/// The `outcome` record closing INVITE `i`.
fn outcome(i: &InviteSent, outcome: Outcome, ended: DateTime<Utc>) -> Record {
    Record::Outcome(OutcomeRecord {
        call: i.call.clone(),
        campaign: i.campaign.clone(),
        contact: i.contact.clone(),
        number: i.number.clone(),
        started: i.sent_at,
        ended,
        outcome,
    })
}
