//! crieur's durable state: contacts with their consent history, and the global opt-out list.
//!
//! [`Store`] is the interface the engine and the command line use; [`SledStore`] is the
//! embedded default (sled); [`PgStore`] keeps the same state in PostgreSQL, shared by
//! several nodes dialling one campaign (`--store postgres://…`).
//!
//! Durability: every write method returns only once its data is on disk (sled `flush`, an
//! fsync). A contacts import is validated by the caller first (bad input writes nothing), then
//! written in atomic batches of whole hash buckets; re-running the same import after a crash
//! completes it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
pub use crieur_outcome::Outcome;
use crieur_scheduler::{parse_zone, ConsentRecord, Contact, ContactId, WindowsCache, E164};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

mod buckets;
mod due;
mod dueidx;
mod pg;

pub use buckets::import_part;
pub use pg::{redact, PgStore};

/// Everything that can go wrong with the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store cannot be opened: locked by another process, unreadable, or corrupt.
    #[error("cannot open the store at {}: {source} (locked by another crieur process, or damaged; it was not modified)", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// The directory holds something that is not a crieur store.
    #[error("{} is not a crieur store ({why}); refusing to initialise over it", path.display())]
    NotAStore { path: PathBuf, why: String },
    /// The store's directory cannot be listed.
    #[error("cannot read the store directory {}: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No store exists at the path and creation was not asked for.
    #[error("no store at {}: create one with `crieur import`", path.display())]
    Missing { path: PathBuf },
    /// A read or write failed (disk full, I/O error): the batch being written was not applied.
    #[error("store I/O failed, nothing was written: {0}")]
    Io(#[from] sled::Error),
    /// A record cannot be encoded (nothing was written).
    #[error("cannot encode a store record, nothing was written: {0}")]
    Encode(#[from] postcard::Error),
    /// A contact record too large for its bucket's length field (nothing was written).
    #[error("a contact record of {len} bytes is too large to store, nothing was written")]
    RecordTooLarge { len: usize },
    /// An import failed part-way (disk full, I/O error): `written` contacts are in the store,
    /// each whole; the others are not there at all. Re-running the import completes it.
    #[error("store I/O failed after {written} of {total} contacts were written (each whole, the others not at all; re-run the import to complete it): {source}")]
    PartialImport {
        written: usize,
        total: usize,
        /// What failed: sled's or the encoder's error (the store's own otherwise).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The contact is already leased: a call to it is in progress (or was, before a crash
    /// not yet recovered).
    #[error("contact {campaign}/{id} is already being dialled (leased since {since})")]
    Leased {
        campaign: String,
        id: String,
        since: DateTime<Utc>,
    },
    /// A bucket of contact records ends in a cut entry.
    #[error("damaged contacts bucket {key}: its last entry is truncated")]
    TruncatedBucket { key: String },
    /// A stored attempt names an outcome no version of crieur writes: damaged, or written by
    /// a newer version. The attempt is not read as some other outcome.
    #[error("damaged record for {key}: {source}")]
    UnknownOutcome {
        key: String,
        #[source]
        source: crieur_outcome::UnknownOutcome,
    },
    /// A stored record cannot be decoded.
    #[error("damaged record for {key}: {why}")]
    Corrupt { key: String, why: String },
    /// The PostgreSQL database cannot be reached or opened (`target` is the connection
    /// string without its password).
    #[error("cannot open the PostgreSQL store {target}: {source}")]
    OpenDatabase {
        target: String,
        #[source]
        source: Box<Error>,
    },
    /// A PostgreSQL statement failed: the transaction it was part of was rolled back.
    #[error("PostgreSQL: {}", pg_message(.0))]
    Postgres(#[source] postgres::Error),
    /// A lock of this process was poisoned by a panic in another thread.
    #[error("the {what} was poisoned by a panic in another thread")]
    Poisoned { what: &'static str },
}

/// The server's own message (with its SQLSTATE) when there is one: `Display` alone says
/// "db error".
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

type Result<T> = std::result::Result<T, Error>;

/// What an import changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Contacts that were not in the store.
    pub created: usize,
    /// Contacts already there (their consent history kept, new records appended).
    pub updated: usize,
    /// Consent records added.
    pub consents_added: usize,
}

/// One entry of the opt-out list: the number is kept only as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    /// HMAC-SHA-256 of the E.164 number under the store's key, hex.
    pub number_hash: String,
    pub at: DateTime<Utc>,
    /// How it arrived (`key 9 by rfc4733`, `import bloctel-2027-03.txt`, `crieur optout add` …).
    pub source: String,
}

/// An opt-out added through the control API while its audit record is made durable beside
/// the store's commit (the two fsyncs overlap): kept in the store, in the same commit as the
/// opt-out, until the audit record is known durable. After a crash between the two, the
/// owner's start finds it here and writes the audit record the log lacks
/// (`crieur_runner::ops::recover_opt_outs`). The numbers are in clear here — as in the
/// log — for that record; the entry lives for the milliseconds between the two fsyncs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOptOut {
    /// Unique; the audit record carries it (`ticket`).
    pub ticket: String,
    /// Which audit log the record went to (its directory, absolute): a store shared by
    /// nodes holds each node's pending opt-outs, and each node recovers its own.
    pub log: String,
    pub numbers: Vec<String>,
    pub at: DateTime<Utc>,
    pub source: String,
}

/// The store interface.
pub trait Store {
    /// Adds or updates `contacts` of `campaign`, durably. Written in atomic batches: after a
    /// crash mid-call some contacts are stored, each whole, and calling again with the same
    /// contacts completes it (an upsert is idempotent: identical consent records are not
    /// added twice). Callers validate everything first, so bad input never writes anything.
    fn upsert_contacts(&self, campaign: &str, contacts: &[Contact]) -> Result<ImportStats>;
    /// One contact.
    fn contact(&self, campaign: &str, id: &ContactId) -> Result<Option<Contact>>;
    /// Every contact of a campaign, in id order.
    fn contacts(&self, campaign: &str) -> Result<Vec<Contact>>;
    /// The contacts of `campaign`, `batch` at a time (the last batch smaller; in no set
    /// order), to `f`, which returns `false` to stop. Each batch is read on its own: no
    /// lock or connection is held between batches, so that a scan over millions of contacts
    /// (the control API's counts) never holds the run's writes up, and memory stays
    /// O(`batch`) whatever the campaign's size.
    fn scan_contacts(
        &self,
        campaign: &str,
        batch: usize,
        f: &mut dyn FnMut(Vec<Contact>) -> bool,
    ) -> Result<()>;
    /// Whether each of `numbers` is on the opt-out list, in order (one read for them all
    /// where the backend allows it).
    fn opted_out_among(&self, numbers: &[&E164]) -> Result<Vec<bool>> {
        numbers.iter().map(|n| self.is_opted_out(n)).collect()
    }
    /// The ids of the campaigns that have contacts here, in order.
    fn campaigns(&self) -> Result<Vec<String>>;
    /// Records an opt-out; durable when this returns. `Ok(false)` if it was already there.
    fn add_opt_out(&self, number: &E164, at: DateTime<Utc>, source: &str) -> Result<bool>;
    /// Records many opt-outs in one durable batch; returns how many were new.
    fn add_opt_outs(&self, numbers: &[E164], at: DateTime<Utc>, source: &str) -> Result<usize>;
    /// Removes an opt-out (e.g. entered by mistake); durable when this returns.
    fn remove_opt_out(&self, number: &E164) -> Result<bool>;
    /// Whether the number has opted out.
    fn is_opted_out(&self, number: &E164) -> Result<bool>;
    /// The whole list (hashes only).
    fn opt_outs(&self) -> Result<Vec<OptOut>>;
    /// Records `numbers` as [`Store::add_opt_outs`] does (at `pending.at`, from
    /// `pending.source`) and keeps `pending` in the same durable commit; returns how many
    /// were new.
    fn add_opt_outs_pending(&self, numbers: &[E164], pending: &PendingOptOut) -> Result<usize>;
    /// The pending opt-outs of the audit log `log`, oldest first.
    fn pending_opt_outs(&self, log: &str) -> Result<Vec<PendingOptOut>>;
    /// Forgets pending opt-outs (their audit records are durable). Not made durable here (no
    /// fsync of its own): an entry a crash brings back is found with its record at the next
    /// start and forgotten then.
    fn clear_pending_opt_outs(&self, tickets: &[String]) -> Result<()>;

    /// Leases a contact for a call about to be placed: durable before it returns, so a crash
    /// at any later point leaves the evidence that a call may have been placed. Fails with
    /// [`Error::Leased`] if a lease already exists (the contact is being dialled).
    /// `call` is the call's id, as the audit log's `invite-sent` record will name it: after a
    /// crash, recovery links the lease to that record (or finds there is none).
    fn lease(
        &self,
        campaign: &str,
        id: &ContactId,
        number: &E164,
        at: DateTime<Utc>,
        call: &str,
    ) -> Result<()>;
    /// Ends a call: removes *its* lease (the contact's lease naming `attempt.call`) and records
    /// its attempt, atomically and durably. A lease the call no longer holds — recovered
    /// meanwhile by another node that judged this one dead, and perhaps leased again by
    /// another call — is left alone: the call happened all the same and counts once, its
    /// attempt (recorded by that recovery as `interrupted`) given its real outcome and end,
    /// or recorded now if there is none ([`Finished::LeaseLost`]). `attempt.started` is used
    /// only then (otherwise the lease's instant is).
    fn finish_attempt(&self, number: &E164, attempt: &AttemptRecord) -> Result<Finished>;
    /// Every lease held (after a crash: the calls that were being placed), oldest first.
    fn leases(&self) -> Result<Vec<Lease>>;
    /// After a crash, one leftover lease: if its INVITE may have left (`sent`: the audit log
    /// holds its `invite-sent`), it becomes an `interrupted` attempt ending at `now` (it counts
    /// toward the caps), returned; if not, the lease is released and no attempt is recorded
    /// (the INVITE leaves only after its record is durable). Durable when it returns.
    fn recover_lease(
        &self,
        lease: &Lease,
        sent: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<AttemptRecord>>;
    /// Records an attempt that holds no lease (an INVITE the audit log shows that the store
    /// lost); durable when it returns.
    fn record_attempt(&self, number: &E164, attempt: &AttemptRecord) -> Result<()>;
    /// Every recorded attempt to this number, across campaigns, oldest first.
    fn attempts(&self, number: &E164) -> Result<Vec<AttemptRecord>>;

    /// The due index: sets when each contact may next be due (`None`: never again — done),
    /// durably, and releases its claim ([`Store::claim_due`]). An import sets a new contact
    /// due at its earliest consent grant and can only bring a contact's due instant forward
    /// (new consent); the run sets it after each evaluation. Ids not in the store are
    /// ignored.
    fn set_due(&self, campaign: &str, due: &[(ContactId, Option<DateTime<Utc>>)]) -> Result<()>;
    /// A contact's entry in the due index: `None` if the contact is not there,
    /// `Some(None)` if it is done.
    fn due_of(&self, campaign: &str, id: &ContactId) -> Result<Option<Option<DateTime<Utc>>>>;
    /// Takes up to `claim.limit` contacts due at or before `claim.until`, earliest first,
    /// that no other node holds (a claim held by another node until after `claim.now` is
    /// skipped), and marks them held by `claim.node` until `claim.hold_until`. Two nodes
    /// never get the same contact while a claim holds; setting the contact's due instant
    /// releases it.
    fn claim_due(&self, campaign: &str, claim: &Claim<'_>) -> Result<Vec<DueContact>>;
    /// The earliest due instant of the campaign's contacts (claimed or not), if any remain.
    fn next_due(&self, campaign: &str) -> Result<Option<DateTime<Utc>>>;
    /// Records that `node` works on the campaign at `now`, and returns how many nodes did
    /// since `since` (itself included): the campaign's pacing is shared among them. An
    /// embedded store has one process: always 1.
    fn node_alive(
        &self,
        campaign: &str,
        node: &str,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<u32>;
    /// How many contacts of the campaign are remaining (have a due instant) and done, from
    /// counters kept with the due index (no scan of the contacts).
    fn progress(&self, campaign: &str) -> Result<Progress>;
    /// A watch on the opt-outs other processes record in this store while this one runs
    /// (PostgreSQL: each opt-out is NOTIFYed at its commit, and the watch LISTENs); `None`:
    /// nobody else writes the store while a process holds it (the embedded store).
    fn watch_opt_outs(&self) -> Result<Option<Box<dyn OptOutWatch>>> {
        Ok(None)
    }
    /// Told before an import of about `rows` contacts (validated) into `campaign`: a store
    /// may size the campaign's layout for it when it has no contacts yet (the embedded
    /// store: its contacts buckets, so that reading one contact of 10 M reads a value of
    /// some 20–30 contacts, not 2,400). A hint; nothing else depends on it.
    fn expect_contacts(&self, campaign: &str, rows: usize) -> Result<()> {
        let _ = (campaign, rows);
        Ok(())
    }
    /// When `node` last said it works on the campaign ([`Store::node_alive`]: at every
    /// refill, and at least three times per lease timeout), if it ever did: the heartbeat
    /// that keeps its leases, however long its calls run. An embedded store has one
    /// process and no other node's leases: `None`.
    fn node_seen(&self, campaign: &str, node: &str) -> Result<Option<DateTime<Utc>>> {
        let _ = (campaign, node);
        Ok(None)
    }
}

/// Opt-outs recorded by any process sharing a store, as they are committed
/// ([`Store::watch_opt_outs`]).
pub trait OptOutWatch: Send {
    /// Waits at most `wait` for opt-outs committed since the last call, and returns the keyed
    /// hashes of their numbers ([`OptOutWatch::key_of`]). An error: the watch's connection
    /// failed, and opt-outs committed meanwhile may be missed; the next call reconnects.
    fn next(&mut self, wait: std::time::Duration) -> Result<Vec<[u8; 32]>>;
    /// The keyed hash of `number` (E.164 text, as [`E164`] shows it), as `next` gives them.
    fn key_of(&self, number: &str) -> [u8; 32];
}

/// A request to [`Store::claim_due`].
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// Who claims (a node id; one process on an embedded store).
    pub node: &'a str,
    /// Contacts due at or before this instant.
    pub until: DateTime<Utc>,
    /// Now: claims of other nodes that ended before this have lapsed.
    pub now: DateTime<Utc>,
    /// The claim holds until then (a node that dies loses its claims then).
    pub hold_until: DateTime<Utc>,
    /// At most this many contacts.
    pub limit: usize,
}

/// A contact taken from the due index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueContact {
    pub id: ContactId,
    pub due: DateTime<Utc>,
}

/// Remaining (due some day) and done contacts of a campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub remaining: u64,
    pub done: u64,
}

/// One recorded attempt (kept per number, across campaigns, for the rolling caps). Instants
/// are kept to the microsecond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub campaign: String,
    pub contact: String,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub outcome: Outcome,
    /// The call's id in the audit log (empty for an attempt recorded before store format 3).
    pub call: String,
}

/// How [`Store::finish_attempt`] ended a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Its lease closed into its attempt.
    Closed,
    /// Its lease was gone (recovered by another node): `held_by` is the lease the contact
    /// holds now (node, call), left alone; `updated`: the recovery's attempt for this call
    /// was given its real outcome (else the attempt was recorded now).
    LeaseLost {
        held_by: Option<(String, String)>,
        updated: bool,
    },
}

/// A lease: a call being placed (or, after a crash, that was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub campaign: String,
    pub contact: String,
    /// The INVITE's instant (to the microsecond).
    pub at: DateTime<Utc>,
    /// The call's id in the audit log (empty for a lease taken before store format 3).
    pub call: String,
    /// The node that took it, on a shared store (empty on an embedded one: one process).
    pub node: String,
}

/// Version 3: leases and attempts carry their call id and microsecond instants (trees
/// [`LEASES`], [`ATTEMPTS`]).
const FORMAT: &[u8] = b"crieur-store-3";
/// Version 2: contacts in hash buckets (see `buckets`), in the tree [`CONTACTS`]; leases and
/// attempts to the second, without call ids (trees `leases`, `attempts`): migrated on open.
const FORMAT_2: &[u8] = b"crieur-store-2";
const LEASES: &str = "leases-3";
const ATTEMPTS: &str = "attempts-3";
/// Version 1 (one key `campaign \0 id` per contact in the tree `contacts`) is migrated on open.
const FORMAT_1: &[u8] = b"crieur-store-1";
const CONTACTS: &str = "contacts-b";
/// The due index's tree (see `dueidx`), and the meta key saying it is built (a store
/// written before it existed gets it on open, every contact due at its earliest grant).
const DUE: &str = "due-2";
const DUE_MARKER: &str = "due-index-2";
/// sled's page cache (its default is 1 GiB, which a run over 10 M contacts filled with the
/// buckets it read once).
const CACHE_BYTES: u64 = 128 << 20;
/// sled's log segment for a new store. sled writes a page (a tree node with its values)
/// larger than a quarter segment to a file of its own, a "blob": with its default 512 KiB,
/// the nodes holding buckets of ~150 contacts (10 M contacts) were blobs, and reading one
/// contact opened and read a file (profiled: most of a run's time at 3 M contacts).
const SEGMENT_BYTES: usize = 8 << 20;

/// The segment size of the store at `path`: as it was created (sled refuses another), or
/// [`SEGMENT_BYTES`] for a new one.
fn segment_bytes(path: &Path) -> usize {
    std::fs::read(path.join("conf"))
        .ok()
        .and_then(|conf| {
            let text = String::from_utf8_lossy(&conf).into_owned();
            text.lines()
                .find_map(|l| l.strip_prefix("segment_size: "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(SEGMENT_BYTES)
}

/// `meta` key of a campaign's contacts bucket count (u32 BE); absent: [`buckets::BUCKETS`].
fn buckets_key(campaign: &str) -> Vec<u8> {
    let mut k = b"buckets\0".to_vec();
    k.extend_from_slice(campaign.as_bytes());
    k
}

/// Rewrites a version-1 store's contacts into buckets. Crash-safe: the new tree is rebuilt
/// from scratch and flushed before the format marker changes, and the old tree is dropped
/// only after; a crash before the marker changes makes the next open start over.
fn migrate_from_1(db: &sled::Db, meta: &sled::Tree) -> Result<()> {
    let old = db.open_tree("contacts").map_err(io)?;
    let new = db.open_tree(CONTACTS).map_err(io)?;
    new.clear().map_err(io)?;
    let mut buckets: std::collections::BTreeMap<Vec<u8>, Vec<(Vec<u8>, sled::IVec)>> =
        Default::default();
    for kv in old.iter() {
        let (k, v) = kv.map_err(io)?;
        let mut parts = k.splitn(2, |b| *b == 0);
        let campaign = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let id = parts.next().unwrap_or_default().to_vec();
        // Version-1 stores predate per-campaign counts.
        let bucket = buckets::bucket_of(&String::from_utf8_lossy(&id), buckets::BUCKETS);
        buckets
            .entry(buckets::bucket_key(&campaign, bucket, buckets::BUCKETS))
            .or_default()
            .push((id, v));
    }
    for (key, mut entries) in buckets {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut value = Vec::new();
        for (id, record) in &entries {
            buckets::push_entry(&mut value, id, record)?;
        }
        new.insert(key, value).map_err(io)?;
    }
    db.flush().map_err(io)?;
    meta.insert("format", FORMAT_2).map_err(io)?;
    db.flush().map_err(io)?;
    db.drop_tree("contacts").map_err(io)?;
    db.flush().map_err(io)?;
    Ok(())
}

/// A version-2 lease (whole seconds, no call id).
#[derive(Serialize, Deserialize)]
struct StoredLease2 {
    at: i64,
    number_hash: [u8; 32],
}

/// A version-2 attempt (whole seconds, no call id).
#[derive(Serialize, Deserialize)]
struct StoredAttempt2 {
    campaign: String,
    contact: String,
    started: i64,
    ended: i64,
    outcome: String,
}

/// A record rewritten by a migration: (key, value) → (new key, new value).
type Rewrite<'a> = dyn Fn(&[u8], &[u8]) -> Result<(Vec<u8>, Vec<u8>)> + 'a;

/// Rewrites a version-2 store's leases and attempts with microsecond instants (the whole
/// seconds they had) and an empty call id, into the trees [`LEASES`] and [`ATTEMPTS`].
/// Crash-safe like [`migrate_from_1`]: the new trees are rebuilt from scratch and flushed
/// before the marker changes; the old ones are dropped after.
fn migrate_from_2(db: &sled::Db, meta: &sled::Tree) -> Result<()> {
    let corrupt = |k: &[u8], why: String| Error::Corrupt {
        key: hex::encode(k),
        why,
    };
    let us = |s: i64| s.saturating_mul(1_000_000);
    // Every record of tree `from`, rewritten by `f` (new key, new value) into tree `to`.
    let rewrite = |from: &str, to: &str, f: &Rewrite<'_>| -> Result<()> {
        let (old, new) = (
            db.open_tree(from).map_err(io)?,
            db.open_tree(to).map_err(io)?,
        );
        new.clear().map_err(io)?;
        for kv in old.iter() {
            let (k, v) = kv.map_err(io)?;
            let (nk, nv) = f(&k, &v)?;
            new.insert(nk, nv).map_err(io)?;
        }
        Ok(())
    };
    rewrite("leases", LEASES, &|k, v| {
        let l: StoredLease2 = postcard::from_bytes(v).map_err(|e| corrupt(k, e.to_string()))?;
        let new = StoredLease {
            at_us: us(l.at),
            number_hash: l.number_hash,
            call: String::new(),
        };
        Ok((k.to_vec(), postcard::to_allocvec(&new).map_err(io)?))
    })?;
    rewrite("attempts", ATTEMPTS, &|k, v| {
        let a: StoredAttempt2 = postcard::from_bytes(v).map_err(|e| corrupt(k, e.to_string()))?;
        // Key: number hash (32) · start (8) · unique id (8) · campaign 0x00 contact.
        let (Some(hash), Some(rest)) = (k.get(..32), k.get(40..)) else {
            return Err(corrupt(k, "attempt key too short".into()));
        };
        let mut nk = hash.to_vec();
        nk.extend_from_slice(&us(a.started).to_be_bytes());
        nk.extend_from_slice(rest);
        let new = StoredAttempt {
            campaign: a.campaign,
            contact: a.contact,
            started_us: us(a.started),
            ended_us: us(a.ended),
            outcome: a.outcome,
            call: String::new(),
        };
        Ok((nk, postcard::to_allocvec(&new).map_err(io)?))
    })?;
    db.flush().map_err(io)?;
    meta.insert("format", FORMAT).map_err(io)?;
    db.flush().map_err(io)?;
    db.drop_tree("leases").map_err(io)?;
    db.drop_tree("attempts").map_err(io)?;
    db.flush().map_err(io)?;
    Ok(())
}
/// Buckets per atomic, flushed write batch of an import, at least (a campaign of more than
/// 65,536 buckets puts more in a batch: the same contacts per batch, and flushes).
const BUCKETS_PER_BATCH: usize = 256;

/// The sled-backed store.
pub struct SledStore {
    db: sled::Db,
    contacts: sled::Tree,
    optouts: sled::Tree,
    /// [`PendingOptOut`]s by ticket.
    optouts_pending: sled::Tree,
    leases: sled::Tree,
    attempts: sled::Tree,
    /// The due index (see `dueidx`).
    due: sled::Tree,
    /// Serialises the due index's read-modify-writes (a process holds the store alone), and
    /// holds the campaigns' counters once summed ([`Store::progress`]), each write's change
    /// applied as it is written: O(1) after the first.
    due_lock: std::sync::Mutex<std::collections::HashMap<String, Progress>>,
    /// Claims of this process ([`Store::claim_due`]): an embedded store is held by one
    /// process at a time (sled locks it), so they need not outlive it.
    claims: std::sync::Mutex<Claims>,
    key: [u8; 32],
    meta: sled::Tree,
    /// Each campaign's contacts bucket count, once read from `meta` (see
    /// [`Store::expect_contacts`]).
    bucket_counts: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

#[derive(Serialize, Deserialize)]
struct StoredLease {
    at_us: i64,
    number_hash: [u8; 32],
    call: String,
}

#[derive(Serialize, Deserialize)]
struct StoredAttempt {
    campaign: String,
    contact: String,
    started_us: i64,
    ended_us: i64,
    /// The outcome's name ([`Outcome::name`]), parsed when the attempt is read.
    outcome: String,
    call: String,
}

/// An instant as stored: microseconds since the epoch.
fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

#[derive(Serialize, Deserialize, PartialEq)]
struct StoredConsent {
    windows: String,
    granted_at: i64,
    granted_nanos: u32,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    source: String,
    proof: String,
}

#[derive(Serialize, Deserialize)]
struct StoredContact {
    id: String,
    phone: String,
    zone: Option<String>,
    consents: Vec<StoredConsent>,
}

#[derive(Serialize, Deserialize)]
struct StoredOptOut {
    at: i64,
    source: String,
}

#[derive(Serialize, Deserialize)]
struct StoredPending {
    log: String,
    numbers: Vec<String>,
    at_us: i64,
    source: String,
}

/// A sled or encoding error as the store's own (`.map_err(io)`).
fn io(e: impl Into<Error>) -> Error {
    e.into()
}

impl SledStore {
    /// Opens the store at `path`. With `create`, a missing store is created; an existing
    /// directory that is not a crieur store is never initialised over.
    pub fn open(path: &Path, create: bool) -> Result<Self> {
        let exists = path.join("conf").exists() || path.join("db").exists();
        if !exists {
            if !create {
                return Err(Error::Missing {
                    path: path.to_owned(),
                });
            }
            if path.exists()
                && std::fs::read_dir(path)
                    .map_err(|source| Error::Dir {
                        path: path.to_owned(),
                        source,
                    })?
                    .next()
                    .is_some()
            {
                return Err(Error::NotAStore {
                    path: path.to_owned(),
                    why: "the directory is not empty".into(),
                });
            }
        }
        // No periodic background flush: every write flushes before it returns (`durable`),
        // and an idle store then wakes no thread.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .segment_size(segment_bytes(path))
            .flush_every_ms(None)
            .open()
            .map_err(|source| Error::Open {
                path: path.to_owned(),
                source,
            })?;
        let meta = db.open_tree("meta").map_err(io)?;
        let key = match (meta.get("format").map_err(io)?, exists) {
            (Some(f), _) if f.as_ref() == FORMAT => meta.get("optout-key").map_err(io)?,
            (Some(f), _) if f.as_ref() == FORMAT_2 => {
                migrate_from_2(&db, &meta)?;
                meta.get("optout-key").map_err(io)?
            }
            (Some(f), _) if f.as_ref() == FORMAT_1 => {
                migrate_from_1(&db, &meta)?;
                migrate_from_2(&db, &meta)?;
                meta.get("optout-key").map_err(io)?
            }
            (Some(f), _) => {
                return Err(Error::NotAStore {
                    path: path.to_owned(),
                    why: format!("unknown format {:?}", String::from_utf8_lossy(&f)),
                })
            }
            (None, true) => {
                return Err(Error::NotAStore {
                    path: path.to_owned(),
                    why: "no format marker".into(),
                })
            }
            (None, false) => {
                let key: [u8; 32] = rand::random();
                // One batch: a crash cannot leave a key without a marker or the reverse.
                let mut b = sled::Batch::default();
                b.insert("optout-key", &key[..]);
                b.insert("format", FORMAT);
                meta.apply_batch(b).map_err(io)?;
                db.flush().map_err(io)?;
                Some(sled::IVec::from(&key[..]))
            }
        };
        let key: [u8; 32] = key
            .as_deref()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| Error::NotAStore {
                path: path.to_owned(),
                why: "the opt-out key is missing or damaged".into(),
            })?;
        let store = SledStore {
            contacts: db.open_tree(CONTACTS).map_err(io)?,
            optouts: db.open_tree("optouts").map_err(io)?,
            optouts_pending: db.open_tree("optouts-pending").map_err(io)?,
            leases: db.open_tree(LEASES).map_err(io)?,
            attempts: db.open_tree(ATTEMPTS).map_err(io)?,
            due: db.open_tree(DUE).map_err(io)?,
            due_lock: Default::default(),
            claims: Default::default(),
            db,
            key,
            meta: meta.clone(),
            bucket_counts: Default::default(),
        };
        if meta.get(DUE_MARKER).map_err(io)?.is_none() {
            store.build_due_index()?;
            meta.insert(DUE_MARKER, &b"1"[..]).map_err(io)?;
            store.durable()?;
        }
        Ok(store)
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(io)
    }

    fn number_key(&self, number: &E164) -> [u8; 32] {
        keyed_hash(&self.key, number)
    }

    /// Removes the lease at `key` if it is call `call`'s and records its attempt, in one
    /// transaction over both trees; `false` if the contact holds no lease of that call.
    #[allow(clippy::too_many_arguments)]
    fn close_lease(
        &self,
        key: &[u8],
        campaign: &str,
        id: &str,
        call: &str,
        hash: Option<[u8; 32]>,
        outcome: Outcome,
        ended: DateTime<Utc>,
    ) -> Result<bool> {
        // A unique suffix: two attempts in the same second never overwrite each other.
        let uniq = self.db.generate_id().map_err(io)?;
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;
        let r = (&self.leases, &self.attempts).transaction(|(leases, attempts)| {
            let Some(v) = leases.get(key)? else {
                return Ok(false);
            };
            let lease: StoredLease = postcard::from_bytes(&v)
                .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
            if lease.call != call {
                return Ok(false);
            }
            leases.remove(key)?;
            let h = hash.unwrap_or(lease.number_hash);
            // Key: number hash, start instant (big-endian: chronological), campaign, id.
            let mut ak = Vec::with_capacity(32 + 8 + key.len());
            ak.extend_from_slice(&h);
            ak.extend_from_slice(&lease.at_us.to_be_bytes());
            ak.extend_from_slice(&uniq.to_be_bytes());
            ak.extend_from_slice(key);
            let rec = StoredAttempt {
                campaign: campaign.to_owned(),
                contact: id.to_owned(),
                started_us: lease.at_us,
                ended_us: micros(ended),
                outcome: outcome.name(),
                call: lease.call.clone(),
            };
            let bytes = postcard::to_allocvec(&rec)
                .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
            attempts.insert(ak, bytes)?;
            Ok(true)
        });
        match r {
            Ok(closed) => Ok(closed),
            Err(TransactionError::Abort(why)) => Err(Error::Corrupt {
                key: id.to_owned(),
                why,
            }),
            Err(TransactionError::Storage(e)) => Err(io(e)),
        }
    }

    fn durable(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(io)
    }
}

/// HMAC-SHA-256 of the number under the store's opt-out key: how a number is kept (opt-out
/// list, attempts, leases) by every backend.
fn keyed_hash(key: &[u8; 32], number: &E164) -> [u8; 32] {
    keyed_hash_str(key, number.as_str())
}

fn keyed_hash_str(key: &[u8; 32], number: &str) -> [u8; 32] {
    // HMAC accepts keys of any length: new_from_slice cannot fail for 32 bytes.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(number.as_bytes());
    mac.finalize().into_bytes().into()
}

/// `campaign · 0x00 · id`: the key of a contact's lease.
fn lease_key(campaign: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + 1 + id.len());
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn store_consent(c: &ConsentRecord) -> StoredConsent {
    StoredConsent {
        windows: c.windows.as_str().to_owned(),
        granted_at: c.granted_at.timestamp(),
        granted_nanos: c.granted_at.timestamp_subsec_nanos(),
        expires_at: c.expires_at.map(|t| t.timestamp()),
        revoked_at: c.revoked_at.map(|t| t.timestamp()),
        source: c.source.clone(),
        proof: c.proof.clone(),
    }
}

fn decode_contact(
    campaign: &str,
    id: &[u8],
    bytes: &[u8],
    windows: &mut WindowsCache,
) -> Result<Contact> {
    let corrupt = |why: String| Error::Corrupt {
        key: format!("{campaign}/{}", String::from_utf8_lossy(id)),
        why,
    };
    let s: StoredContact = postcard::from_bytes(bytes).map_err(|e| corrupt(e.to_string()))?;
    if s.id.as_bytes() != id {
        return Err(corrupt(format!("entry holds the record of {:?}", s.id)));
    }
    let instant = |t: i64, n: u32| {
        DateTime::from_timestamp(t, n).ok_or_else(|| corrupt(format!("instant {t}")))
    };
    let mut consents = Vec::with_capacity(s.consents.len());
    for c in &s.consents {
        consents.push(ConsentRecord {
            windows: windows
                .parse(&c.windows)
                .map_err(|e| corrupt(e.to_string()))?,
            granted_at: instant(c.granted_at, c.granted_nanos)?,
            expires_at: c.expires_at.map(|t| instant(t, 0)).transpose()?,
            revoked_at: c.revoked_at.map(|t| instant(t, 0)).transpose()?,
            source: c.source.clone(),
            proof: c.proof.clone(),
        });
    }
    Ok(Contact::new(
        ContactId::new(s.id).map_err(|e| corrupt(e.to_string()))?,
        s.phone
            .parse()
            .map_err(|e: crieur_scheduler::Error| corrupt(e.to_string()))?,
        s.zone
            .as_deref()
            .map(parse_zone)
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?,
        consents,
    ))
}

/// A contact encoded as a [`StoredContact`] without copying its fields (same fields, same
/// order, so the same postcard bytes; a test checks it).
#[derive(Serialize)]
struct ContactOut<'a> {
    id: &'a str,
    phone: &'a str,
    zone: Option<&'a str>,
    consents: ConsentsOut<'a>,
}

struct ConsentsOut<'a>(&'a [ConsentRecord]);

#[derive(Serialize)]
struct ConsentOut<'a> {
    windows: &'a str,
    granted_at: i64,
    granted_nanos: u32,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    source: &'a str,
    proof: &'a str,
}

impl Serialize for ConsentsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|c| ConsentOut {
            windows: c.windows.as_str(),
            granted_at: c.granted_at.timestamp(),
            granted_nanos: c.granted_at.timestamp_subsec_nanos(),
            expires_at: c.expires_at.map(|t| t.timestamp()),
            revoked_at: c.revoked_at.map(|t| t.timestamp()),
            source: &c.source,
            proof: &c.proof,
        }))
    }
}

fn contact_out(c: &Contact) -> ContactOut<'_> {
    ContactOut {
        id: c.id().as_str(),
        phone: c.phone().as_str(),
        zone: c.given_zone().map(|z| z.name()),
        consents: ConsentsOut(c.consents()),
    }
}

/// An attempt as stored, checked whole: its instants must be real instants, and its key
/// (number hash · start · unique id · campaign 0x00 contact) must agree with its value. A
/// damaged attempt is an error, never an attempt in 1970 that drops out of the rolling caps:
/// the caller must not dial the number until the history is repaired.
fn decode_attempt(key: &[u8], value: &[u8]) -> Result<AttemptRecord> {
    let corrupt = |why: String| Error::Corrupt {
        key: format!("attempt {}", hex::encode(key)),
        why,
    };
    let a: StoredAttempt = postcard::from_bytes(value).map_err(|e| corrupt(e.to_string()))?;
    let instant = |what: &str, t: i64| {
        DateTime::from_timestamp_micros(t)
            .ok_or_else(|| corrupt(format!("its {what} instant {t} is not a date")))
    };
    // (An end before the start is not damage: the clock may have been stepped back.)
    let (started, ended) = (instant("start", a.started_us)?, instant("end", a.ended_us)?);
    let key_start = key
        .get(32..40)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(i64::from_be_bytes);
    if key_start != Some(a.started_us) {
        return Err(corrupt(format!(
            "its key says it started at {}, its record at {started}",
            key_start.map_or("(none)".into(), |s| s.to_string())
        )));
    }
    if key.get(48..) != Some(&lease_key(&a.campaign, &a.contact)[..]) {
        return Err(corrupt(format!(
            "its key names another contact than its record ({}/{})",
            a.campaign, a.contact
        )));
    }
    Ok(AttemptRecord {
        campaign: a.campaign,
        contact: a.contact,
        started,
        ended,
        outcome: a.outcome.parse().map_err(|source| Error::UnknownOutcome {
            key: format!("attempt {}", hex::encode(key)),
            source,
        })?,
        call: a.call,
    })
}

/// A damaged bucket, named `campaign/<bucket bytes>`.
fn bucket_corrupt(key: &[u8], _: buckets::Truncated) -> Error {
    Error::TruncatedBucket {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
    }
}

fn new_record(c: &Contact) -> StoredContact {
    StoredContact {
        id: c.id().to_string(),
        phone: c.phone().to_string(),
        zone: c.given_zone().map(|z| z.name().to_owned()),
        consents: c.consents().iter().map(store_consent).collect(),
    }
}

/// Applies an imported contact to its stored record: phone and zone replaced, consent
/// records appended unless already there. Returns how many were added and the earliest
/// grant among them.
fn update_record(s: &mut StoredContact, c: &Contact) -> (usize, Option<i64>) {
    s.phone = c.phone().to_string();
    s.zone = c.given_zone().map(|z| z.name().to_owned());
    let mut added = 0;
    let mut earliest: Option<i64> = None;
    for consent in c.consents() {
        let new = store_consent(consent);
        if !s.consents.contains(&new) {
            let g = due::granted_us(&new);
            earliest = Some(earliest.map_or(g, |e| e.min(g)));
            s.consents.push(new);
            added += 1;
        }
    }
    (added, earliest)
}

/// Folds the imported versions of one contact (the same id, in file order) into its stored
/// record (`None`: new), as an import does: returns the record and what it did for the due
/// index. Shared by both backends.
fn fold_import(
    stored: Option<StoredContact>,
    incoming: &[&Contact],
    stats: &mut ImportStats,
) -> Option<(StoredContact, due::Imported)> {
    let (first, rest) = incoming.split_first()?;
    let existed = stored.is_some();
    let (mut record, mut added) = match stored {
        Some(mut r) => {
            stats.updated += 1;
            let (n, e) = update_record(&mut r, first);
            stats.consents_added += n;
            (r, e)
        }
        None => {
            stats.created += 1;
            stats.consents_added += first.consents().len();
            let r = new_record(first);
            let e = due::earliest(&r);
            (r, e)
        }
    };
    for c in rest {
        stats.updated += 1;
        let (n, e) = update_record(&mut record, c);
        stats.consents_added += n;
        added = match (added, e) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let imported = due::Imported {
        id: record.id.clone(),
        existed,
        added,
        all: due::earliest(&record),
    };
    Some((record, imported))
}

impl SledStore {
    /// The new value of one bucket: its stored entries merged with `incoming` (contacts of
    /// this bucket, sorted by id, stable); what the import did to each contact goes to
    /// `imported` (for the due index).
    fn merge_bucket(
        &self,
        campaign: &str,
        key: &[u8],
        incoming: &[&Contact],
        stats: &mut ImportStats,
        imported: &mut Vec<due::Imported>,
    ) -> Result<Vec<u8>> {
        let stored = self.contacts.get(key).map_err(io)?;
        let corrupt = |why| bucket_corrupt(key, why);
        let mut old = buckets::Entries::new(stored.as_deref().unwrap_or_default()).peekable();
        let mut out =
            Vec::with_capacity(stored.as_ref().map_or(0, |b| b.len()) + incoming.len() * 160);
        let encode = |r: &StoredContact| postcard::to_allocvec(r).map_err(io);
        let mut i = 0;
        while i < incoming.len() {
            let id = incoming[i].id().as_str();
            // Stored entries before this id are copied as they are.
            while let Some(e) =
                old.next_if(|e| e.as_ref().map_or(true, |(k, _)| *k < id.as_bytes()))
            {
                let (k, v) = e.map_err(corrupt)?;
                buckets::push_entry(&mut out, k, v)?;
            }
            let first = incoming[i];
            let stored = match old.next_if(|e| matches!(e, Ok((k, _)) if *k == id.as_bytes())) {
                Some(Ok((_, v))) => Some(postcard::from_bytes::<StoredContact>(v).map_err(
                    |e| Error::Corrupt {
                        key: format!("{campaign}/{id}"),
                        why: e.to_string(),
                    },
                )?),
                _ => None,
            };
            // The same id more than once in one import: later ones update the first.
            let same = incoming[i..]
                .iter()
                .take_while(|c| c.id().as_str() == id)
                .count();
            if stored.is_none() && same == 1 {
                // The common case, a new contact: encoded straight from the import.
                stats.created += 1;
                stats.consents_added += first.consents().len();
                let earliest = first
                    .consents()
                    .iter()
                    .map(|c| c.granted_at.timestamp_micros())
                    .min();
                imported.push(due::Imported {
                    id: id.to_owned(),
                    existed: false,
                    added: earliest,
                    all: earliest,
                });
                buckets::push_entry_with(&mut out, id.as_bytes(), |buf| {
                    postcard::to_extend(&contact_out(first), buf).map_err(io)
                })?;
                i += 1;
                continue;
            }
            if let Some((record, imp)) = fold_import(stored, &incoming[i..i + same], stats) {
                buckets::push_entry(&mut out, id.as_bytes(), &encode(&record)?)?;
                imported.push(imp);
            }
            i += same;
        }
        for e in old {
            let (k, v) = e.map_err(corrupt)?;
            buckets::push_entry(&mut out, k, v)?;
        }
        Ok(out)
    }
}

/// Claims held in this process: (campaign, contact) → (node, held until, µs).
type Claims = std::collections::HashMap<(String, String), (String, i64)>;

fn instant_us(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

impl SledStore {
    /// The campaign's contacts bucket count: chosen by [`Store::expect_contacts`] before
    /// its first import, [`buckets::BUCKETS`] otherwise (and for stores written before).
    fn buckets_of(&self, campaign: &str) -> Result<usize> {
        let mut known = self.bucket_counts.lock().map_err(|_| Error::Poisoned {
            what: "bucket counts",
        })?;
        if let Some(n) = known.get(campaign) {
            return Ok(*n);
        }
        let n = match self.meta.get(buckets_key(campaign)).map_err(io)? {
            None => buckets::BUCKETS,
            Some(v) => buckets::count_from(&v).ok_or_else(|| Error::Corrupt {
                key: String::from_utf8_lossy(&buckets_key(campaign)).into_owned(),
                why: format!("not a bucket count: {}", hex::encode(&v)),
            })?,
        };
        known.insert(campaign.to_owned(), n);
        Ok(n)
    }

    fn lock_claims(&self) -> Result<std::sync::MutexGuard<'_, Claims>> {
        self.claims.lock().map_err(|_| Error::Poisoned {
            what: "claims table",
        })
    }

    fn lock_due(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, std::collections::HashMap<String, Progress>>> {
        self.due_lock.lock().map_err(|_| Error::Poisoned {
            what: "due index lock",
        })
    }

    /// The due index's writes for what an import did to some buckets' contacts.
    fn due_batch(
        &self,
        campaign: &str,
        imported: &[(u32, Vec<due::Imported>)],
    ) -> Result<(sled::Batch, dueidx::Delta)> {
        let mut by_bucket: std::collections::BTreeMap<u16, Vec<&due::Imported>> =
            Default::default();
        for imp in imported.iter().flat_map(|(_, imps)| imps) {
            by_bucket
                .entry(buckets::due_bucket_of(&imp.id))
                .or_default()
                .push(imp);
        }
        let mut batch = sled::Batch::default();
        let mut delta = dueidx::Delta::default();
        for (bucket, imps) in by_bucket {
            let mut change = dueidx::BucketChange::load(self, campaign, bucket)?;
            for imp in imps {
                let id = imp.id.as_bytes();
                let before = change.get(id);
                if let Some(after) = imp.due_after(before) {
                    change.set(id, before, after)?;
                }
            }
            delta.add(change.write(&mut batch));
        }
        Ok((batch, delta))
    }

    /// Writes a due index batch and moves the campaign's cached counters with it (`counts`:
    /// the held [`SledStore::lock_due`]).
    fn apply_due(
        &self,
        counts: &mut std::collections::HashMap<String, Progress>,
        campaign: &str,
        (batch, delta): (sled::Batch, dueidx::Delta),
    ) -> Result<()> {
        self.due.apply_batch(batch).map_err(io)?;
        if let Some(p) = counts.get_mut(campaign) {
            delta.apply(p);
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn expect_contacts(&self, campaign: &str, rows: usize) -> Result<()> {
        let mut prefix = campaign.as_bytes().to_vec();
        prefix.push(0);
        if self.meta.get(buckets_key(campaign)).map_err(io)?.is_some()
            || self.contacts.scan_prefix(&prefix).next().is_some()
        {
            // Fixed once the campaign has contacts: they are where its count puts them.
            return Ok(());
        }
        let n = buckets::count_for(rows);
        if n != buckets::BUCKETS {
            self.meta
                .insert(buckets_key(campaign), &(n as u32).to_be_bytes()[..])
                .map_err(io)?;
            self.durable()?;
        }
        if let Ok(mut known) = self.bucket_counts.lock() {
            known.insert(campaign.to_owned(), n);
        }
        Ok(())
    }

    fn upsert_contacts(&self, campaign: &str, contacts: &[Contact]) -> Result<ImportStats> {
        let count = self.buckets_of(campaign)?;
        let mut groups: Vec<Vec<&Contact>> = vec![Vec::new(); count];
        for c in contacts {
            groups[buckets::bucket_of(c.id().as_str(), count) as usize].push(c);
        }
        // Batches of whole buckets, each atomic and flushed, built and written on every core:
        // on failure every contact is either wholly in the store or not at all.
        let mut touched: Vec<(u32, &[&Contact])> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .map(|(b, g)| (b as u32, g.as_slice()))
            .collect();
        // In key order: a batch fills leaves of the tree next to each other.
        touched.sort_unstable_by_key(|(b, _)| buckets::position(*b, count));
        let per_batch = BUCKETS_PER_BATCH.max(count >> 8);
        let batches: Vec<&[(u32, &[&Contact])]> = touched.chunks(per_batch).collect();
        let next = AtomicUsize::new(0);
        let written = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let write_batches = || -> Result<ImportStats> {
            let mut stats = ImportStats::default();
            while !failed.load(Ordering::Relaxed) {
                let Some(batch_groups) = batches.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let mut batch = sled::Batch::default();
                let mut in_batch = 0;
                let mut imported = Vec::new();
                for &(bucket, group) in *batch_groups {
                    let mut group = group.to_vec();
                    // Stable: the same id twice keeps file order.
                    group.sort_by(|a, b| a.id().cmp(b.id()));
                    let key = buckets::bucket_key(campaign, bucket, count);
                    let mut imp = Vec::new();
                    let value = self.merge_bucket(campaign, &key, &group, &mut stats, &mut imp)?;
                    batch.insert(key, value);
                    imported.push((bucket, imp));
                    in_batch += group.len();
                }
                // The contacts, then their due entries (a contact left without its entry by
                // a crash in between gets it when the import is run again).
                self.contacts
                    .apply_batch(batch)
                    .and_then(|()| self.db.flush().map(|_| ()))
                    .map_err(io)?;
                written.fetch_add(in_batch, Ordering::Relaxed);
                {
                    let mut counts = self.lock_due()?;
                    let due = self.due_batch(campaign, &imported)?;
                    self.apply_due(&mut counts, campaign, due)?;
                }
                self.db.flush().map_err(io)?;
            }
            Ok(stats)
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let results: Vec<Result<ImportStats>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let r = write_batches();
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut stats = ImportStats::default();
        for r in results {
            match r {
                Ok(s) => {
                    stats.created += s.created;
                    stats.updated += s.updated;
                    stats.consents_added += s.consents_added;
                }
                Err(e) => {
                    let written = written.load(Ordering::Relaxed);
                    return Err(if written == 0 {
                        e
                    } else {
                        Error::PartialImport {
                            written,
                            total: contacts.len(),
                            source: match e {
                                Error::Io(e) => Box::new(e),
                                Error::Encode(e) => Box::new(e),
                                e => Box::new(e),
                            },
                        }
                    });
                }
            }
        }
        Ok(stats)
    }

    fn contact(&self, campaign: &str, id: &ContactId) -> Result<Option<Contact>> {
        let count = self.buckets_of(campaign)?;
        let key = buckets::bucket_key(campaign, buckets::bucket_of(id.as_str(), count), count);
        let Some(bucket) = self.contacts.get(&key).map_err(io)? else {
            return Ok(None);
        };
        for e in buckets::Entries::new(&bucket) {
            let (k, v) = e.map_err(|why| bucket_corrupt(&key, why))?;
            if k == id.as_str().as_bytes() {
                return decode_contact(campaign, k, v, &mut WindowsCache::default()).map(Some);
            }
        }
        Ok(None)
    }

    fn contacts(&self, campaign: &str) -> Result<Vec<Contact>> {
        let mut out = Vec::new();
        self.scan_contacts(campaign, usize::MAX, &mut |all| {
            out = all;
            true
        })?;
        // Buckets are in hash order; callers get id order.
        out.sort_unstable_by(|a, b| a.id().cmp(b.id()));
        Ok(out)
    }

    fn scan_contacts(
        &self,
        campaign: &str,
        batch: usize,
        f: &mut dyn FnMut(Vec<Contact>) -> bool,
    ) -> Result<()> {
        let batch = batch.max(1);
        let mut prefix = campaign.as_bytes().to_vec();
        prefix.push(0);
        let mut windows = WindowsCache::default();
        let mut out = Vec::new();
        // sled's iterators read one leaf at a time, lock-free: the writers go on.
        for kv in self.contacts.scan_prefix(&prefix) {
            let (key, bucket) = kv.map_err(io)?;
            for e in buckets::Entries::new(&bucket) {
                let (k, v) = e.map_err(|why| bucket_corrupt(&key, why))?;
                out.push(decode_contact(campaign, k, v, &mut windows)?);
            }
            if out.len() >= batch && !f(std::mem::take(&mut out)) {
                return Ok(());
            }
        }
        if !out.is_empty() {
            f(out);
        }
        Ok(())
    }

    fn campaigns(&self) -> Result<Vec<String>> {
        // Keys are `campaign \0 bucket`, in order: after each campaign, skip to the next.
        let mut out = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        loop {
            let Some(kv) = self.contacts.range(from.as_slice()..).next() else {
                break;
            };
            let (key, _) = kv.map_err(io)?;
            let name = key.split(|&b| b == 0).next().unwrap_or_default();
            out.push(String::from_utf8_lossy(name).into_owned());
            // The smallest key after every `name \0 …`.
            from = name.to_vec();
            from.push(1);
        }
        Ok(out)
    }

    fn add_opt_out(&self, number: &E164, at: DateTime<Utc>, source: &str) -> Result<bool> {
        Ok(self.add_opt_outs(std::slice::from_ref(number), at, source)? == 1)
    }

    fn add_opt_outs(&self, numbers: &[E164], at: DateTime<Utc>, source: &str) -> Result<usize> {
        let value = postcard::to_allocvec(&StoredOptOut {
            at: at.timestamp(),
            source: source.to_owned(),
        })
        .map_err(io)?;
        let mut batch = sled::Batch::default();
        let mut new = std::collections::HashSet::new();
        for n in numbers {
            let k = self.number_key(n);
            // The first opt-out of a number is the one kept: its date is the evidence.
            if !self.optouts.contains_key(k).map_err(io)? && new.insert(k) {
                batch.insert(&k[..], value.clone());
            }
        }
        self.optouts.apply_batch(batch).map_err(io)?;
        self.durable()?;
        Ok(new.len())
    }

    fn add_opt_outs_pending(&self, numbers: &[E164], pending: &PendingOptOut) -> Result<usize> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;
        let value = postcard::to_allocvec(&StoredOptOut {
            at: pending.at.timestamp(),
            source: pending.source.clone(),
        })
        .map_err(io)?;
        let kept = postcard::to_allocvec(&StoredPending {
            log: pending.log.clone(),
            numbers: pending.numbers.clone(),
            at_us: micros(pending.at),
            source: pending.source.clone(),
        })
        .map_err(io)?;
        let keys: Vec<[u8; 32]> = numbers.iter().map(|n| self.number_key(n)).collect();
        // Both trees in one transaction: after a crash, the opt-out and its pending entry
        // are there together or not at all.
        let r = (&self.optouts, &self.optouts_pending).transaction(|(optouts, kept_tree)| {
            let mut new = std::collections::HashSet::new();
            for k in &keys {
                // The first opt-out of a number is the one kept: its date is the evidence.
                if optouts.get(k)?.is_none() && new.insert(*k) {
                    optouts.insert(&k[..], value.clone())?;
                }
            }
            kept_tree.insert(pending.ticket.as_bytes(), kept.clone())?;
            Ok::<_, ConflictableTransactionError<String>>(new.len())
        });
        let new = match r {
            Ok(n) => n,
            Err(TransactionError::Abort(why)) => {
                return Err(Error::Corrupt {
                    key: pending.ticket.clone(),
                    why,
                })
            }
            Err(TransactionError::Storage(e)) => return Err(io(e)),
        };
        self.durable()?;
        Ok(new)
    }

    fn pending_opt_outs(&self, log: &str) -> Result<Vec<PendingOptOut>> {
        let mut out = Vec::new();
        for kv in &self.optouts_pending {
            let (k, v) = kv.map_err(io)?;
            let p: StoredPending = postcard::from_bytes(&v).map_err(|e| Error::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                why: e.to_string(),
            })?;
            if p.log == log {
                out.push(PendingOptOut {
                    ticket: String::from_utf8_lossy(&k).into_owned(),
                    log: p.log,
                    numbers: p.numbers,
                    at: instant_us(p.at_us),
                    source: p.source,
                });
            }
        }
        out.sort_by(|a, b| (a.at, &a.ticket).cmp(&(b.at, &b.ticket)));
        Ok(out)
    }

    fn clear_pending_opt_outs(&self, tickets: &[String]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for t in tickets {
            batch.remove(t.as_bytes());
        }
        self.optouts_pending.apply_batch(batch).map_err(io)
    }

    fn remove_opt_out(&self, number: &E164) -> Result<bool> {
        let removed = self
            .optouts
            .remove(self.number_key(number))
            .map_err(io)?
            .is_some();
        self.durable()?;
        Ok(removed)
    }

    fn is_opted_out(&self, number: &E164) -> Result<bool> {
        self.optouts
            .contains_key(self.number_key(number))
            .map_err(io)
    }

    fn opt_outs(&self) -> Result<Vec<OptOut>> {
        self.optouts
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(io)?;
                let s: StoredOptOut = postcard::from_bytes(&v).map_err(|e| Error::Corrupt {
                    key: hex::encode(&k),
                    why: e.to_string(),
                })?;
                Ok(OptOut {
                    number_hash: hex::encode(&k),
                    at: DateTime::from_timestamp(s.at, 0).unwrap_or_default(),
                    source: s.source,
                })
            })
            .collect()
    }

    fn lease(
        &self,
        campaign: &str,
        id: &ContactId,
        number: &E164,
        at: DateTime<Utc>,
        call: &str,
    ) -> Result<()> {
        let key = lease_key(campaign, id.as_str());
        let value = postcard::to_allocvec(&StoredLease {
            at_us: micros(at),
            number_hash: self.number_key(number),
            call: call.to_owned(),
        })
        .map_err(io)?;
        // compare_and_swap from "absent": two dialers can never lease the same contact.
        match self
            .leases
            .compare_and_swap(&key, None as Option<&[u8]>, Some(value))
            .map_err(io)?
        {
            Ok(()) => self.durable(),
            Err(cas) => {
                let since = cas
                    .current
                    .and_then(|v| postcard::from_bytes::<StoredLease>(&v).ok())
                    .and_then(|l| DateTime::from_timestamp_micros(l.at_us))
                    .unwrap_or_default();
                Err(Error::Leased {
                    campaign: campaign.to_owned(),
                    id: id.to_string(),
                    since,
                })
            }
        }
    }

    fn finish_attempt(&self, number: &E164, a: &AttemptRecord) -> Result<Finished> {
        let key = lease_key(&a.campaign, &a.contact);
        let hash = self.number_key(number);
        if self.close_lease(
            &key,
            &a.campaign,
            &a.contact,
            &a.call,
            Some(hash),
            a.outcome,
            a.ended,
        )? {
            self.durable()?;
            return Ok(Finished::Closed);
        }
        let held_by = match self.leases.get(&key).map_err(io)? {
            Some(v) => postcard::from_bytes::<StoredLease>(&v)
                .ok()
                .map(|l| (String::new(), l.call)),
            None => None,
        };
        // The recovery's attempt for this call, if there is one: its real outcome and end.
        let mut found = None;
        for kv in self.attempts.scan_prefix(hash) {
            let (k, v) = kv.map_err(io)?;
            if let Ok(rec) = postcard::from_bytes::<StoredAttempt>(&v) {
                if rec.call == a.call && rec.campaign == a.campaign && rec.contact == a.contact {
                    found = Some((k, rec));
                    break;
                }
            }
        }
        let updated = match found {
            Some((k, mut rec)) => {
                rec.outcome = a.outcome.name();
                rec.ended_us = micros(a.ended);
                self.attempts
                    .insert(k, postcard::to_allocvec(&rec).map_err(io)?)
                    .map_err(io)?;
                self.durable()?;
                true
            }
            None => {
                self.record_attempt(number, a)?;
                false
            }
        };
        Ok(Finished::LeaseLost { held_by, updated })
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        let mut out = Vec::new();
        for kv in self.leases.iter() {
            let (k, v) = kv.map_err(io)?;
            let mut parts = k.splitn(2, |b| *b == 0);
            let campaign = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let contact = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            // A damaged lease still names its contact: it is recovered (as a call that may
            // have left) rather than left to block every later call.
            let (at, call) = match postcard::from_bytes::<StoredLease>(&v) {
                Ok(l) => (
                    DateTime::from_timestamp_micros(l.at_us).unwrap_or_default(),
                    l.call,
                ),
                Err(_) => (DateTime::default(), String::new()),
            };
            out.push(Lease {
                campaign,
                contact,
                at,
                call,
                node: String::new(),
            });
        }
        out.sort_by_key(|l| l.at);
        Ok(out)
    }

    fn recover_lease(
        &self,
        lease: &Lease,
        sent: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<AttemptRecord>> {
        let key = lease_key(&lease.campaign, &lease.contact);
        if !sent {
            // Only this lease (its call): never a newer one of the same contact.
            let current = self.leases.get(&key).map_err(io)?;
            let same = current.as_ref().is_some_and(|v| {
                postcard::from_bytes::<StoredLease>(v).map_or(true, |l| l.call == lease.call)
            });
            if same {
                let _ = self
                    .leases
                    .compare_and_swap(&key, current, None as Option<&[u8]>)
                    .map_err(io)?;
            }
            self.durable()?;
            return Ok(None);
        }
        let closed = match self.close_lease(
            &key,
            &lease.campaign,
            &lease.contact,
            &lease.call,
            None,
            Outcome::Scheduled(crieur_outcome::AttemptOutcome::Interrupted),
            now,
        ) {
            Ok(closed) => closed,
            // A damaged lease must not block every later call: drop it (the caller records
            // the call from the audit log with `record_attempt`).
            Err(Error::Corrupt { .. }) => {
                self.leases.remove(&key).map_err(io)?;
                false
            }
            Err(e) => return Err(e),
        };
        self.durable()?;
        Ok(closed.then(|| AttemptRecord {
            campaign: lease.campaign.clone(),
            contact: lease.contact.clone(),
            started: lease.at,
            ended: now,
            outcome: Outcome::Scheduled(crieur_outcome::AttemptOutcome::Interrupted),
            call: lease.call.clone(),
        }))
    }

    fn record_attempt(&self, number: &E164, a: &AttemptRecord) -> Result<()> {
        let uniq = self.db.generate_id().map_err(io)?;
        let mut ak = self.number_key(number).to_vec();
        ak.extend_from_slice(&micros(a.started).to_be_bytes());
        ak.extend_from_slice(&uniq.to_be_bytes());
        ak.extend_from_slice(&lease_key(&a.campaign, &a.contact));
        let rec = StoredAttempt {
            campaign: a.campaign.clone(),
            contact: a.contact.clone(),
            started_us: micros(a.started),
            ended_us: micros(a.ended),
            outcome: a.outcome.name(),
            call: a.call.clone(),
        };
        self.attempts
            .insert(ak, postcard::to_allocvec(&rec).map_err(io)?)
            .map_err(io)?;
        self.durable()
    }

    fn attempts(&self, number: &E164) -> Result<Vec<AttemptRecord>> {
        self.attempts
            .scan_prefix(self.number_key(number))
            .map(|kv| {
                let (k, v) = kv.map_err(io)?;
                decode_attempt(&k, &v)
            })
            .collect()
    }

    fn set_due(&self, campaign: &str, due: &[(ContactId, Option<DateTime<Utc>>)]) -> Result<()> {
        // By bucket; the last instant given for a contact wins.
        let mut by_bucket: std::collections::BTreeMap<u16, Vec<(&ContactId, Option<i64>)>> =
            Default::default();
        for (id, when) in due {
            by_bucket
                .entry(buckets::due_bucket_of(id.as_str()))
                .or_default()
                .push((id, when.map(micros)));
        }
        {
            let mut counts = self.lock_due()?;
            let mut batch = sled::Batch::default();
            let mut delta = dueidx::Delta::default();
            for (bucket, changes) in by_bucket {
                let mut change = dueidx::BucketChange::load(self, campaign, bucket)?;
                for (id, after) in changes {
                    let idb = id.as_str().as_bytes();
                    // Ids not in the store are ignored.
                    if let Some(before) = change.get(idb) {
                        change.set(idb, Some(before), after)?;
                    }
                }
                delta.add(change.write(&mut batch));
            }
            self.apply_due(&mut counts, campaign, (batch, delta))?;
        }
        self.durable()?;
        let mut claims = self.lock_claims()?;
        for (id, _) in due {
            claims.remove(&(campaign.to_owned(), id.as_str().to_owned()));
        }
        Ok(())
    }

    fn due_of(&self, campaign: &str, id: &ContactId) -> Result<Option<Option<DateTime<Utc>>>> {
        let change =
            dueidx::BucketChange::load(self, campaign, buckets::due_bucket_of(id.as_str()))?;
        Ok(change
            .get(id.as_str().as_bytes())
            .map(|d| d.map(instant_us)))
    }

    fn claim_due(&self, campaign: &str, claim: &Claim<'_>) -> Result<Vec<DueContact>> {
        let now = micros(claim.now);
        let mut claims = self.lock_claims()?;
        let mut out = Vec::new();
        if claim.limit > 0 {
            self.walk_due(campaign, micros(claim.until), |us, id| {
                let id = String::from_utf8_lossy(id).into_owned();
                if let Some((node, hold)) = claims.get(&(campaign.to_owned(), id.clone())) {
                    if node != claim.node && *hold > now {
                        return Ok(true);
                    }
                }
                let cid = ContactId::new(id).map_err(|e| Error::Corrupt {
                    key: format!("due entry of {campaign}"),
                    why: e.to_string(),
                })?;
                out.push(DueContact {
                    id: cid,
                    due: instant_us(us),
                });
                Ok(out.len() < claim.limit)
            })?;
        }
        for d in &out {
            claims.insert(
                (campaign.to_owned(), d.id.as_str().to_owned()),
                (claim.node.to_owned(), micros(claim.hold_until)),
            );
        }
        Ok(out)
    }

    fn next_due(&self, campaign: &str) -> Result<Option<DateTime<Utc>>> {
        let mut first = None;
        self.walk_due(campaign, i64::MAX, |us, _| {
            first = Some(instant_us(us));
            Ok(false)
        })?;
        Ok(first)
    }

    fn progress(&self, campaign: &str) -> Result<Progress> {
        let mut counts = self.lock_due()?;
        if let Some(p) = counts.get(campaign) {
            return Ok(*p);
        }
        // Summed once, under the lock every due index write takes: no write falls between
        // the sum and the first change applied to it.
        let p = self.due_counts(campaign)?;
        counts.insert(campaign.to_owned(), p);
        Ok(p)
    }

    fn node_alive(&self, _: &str, _: &str, _: DateTime<Utc>, _: DateTime<Utc>) -> Result<u32> {
        // sled lets one process hold the store: this one.
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ends call `call` of a contact (its attempt as the dial protocol records it).
    fn finish(
        s: &SledStore,
        campaign: &str,
        id: &ContactId,
        number: &E164,
        call: &str,
        outcome: Outcome,
        ended: DateTime<Utc>,
    ) -> Result<Finished> {
        s.finish_attempt(
            number,
            &AttemptRecord {
                campaign: campaign.into(),
                contact: id.to_string(),
                started: ended,
                ended,
                outcome,
                call: call.into(),
            },
        )
    }

    fn busy() -> Outcome {
        Outcome::call(crieur_outcome::CallOutcome::Busy)
    }

    fn n(s: &str) -> E164 {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn contact(id: &str, phone: &str, windows: &str, granted: i64) -> Contact {
        Contact::new(
            ContactId::new(id).unwrap_or_else(|e| panic!("{e}")),
            n(phone),
            None,
            vec![ConsentRecord {
                windows: windows.parse().unwrap_or_else(|e| panic!("{e}")),
                granted_at: DateTime::from_timestamp(granted, 0).unwrap_or_default(),
                expires_at: None,
                revoked_at: None,
                source: "form".into(),
                proof: format!("p-{id}"),
            }],
        )
    }

    /// Opens, retrying for a while: sled's background thread of a store just dropped can
    /// hold the file lock for a moment.
    fn retrying<T, E: std::fmt::Display>(f: impl Fn() -> std::result::Result<T, E>) -> T {
        let mut tries = 0;
        loop {
            match f() {
                Ok(v) => return v,
                Err(e) if tries < 100 && e.to_string().contains("lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn open(dir: &Path) -> SledStore {
        retrying(|| SledStore::open(dir, true))
    }

    /// The counters `progress` serves from memory after its first sum follow every write of
    /// the due index (imports, new and repeated; evaluations; contacts done): after each,
    /// they equal a fresh sum over the buckets, and the sum of a reopened store.
    #[test]
    fn cached_counters_follow_every_due_index_write() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s");
        let id = |i: usize| ContactId::new(format!("c{i}")).unwrap_or_else(|e| panic!("{e}"));
        let cs: Vec<Contact> = (0..50)
            .map(|i| contact(&format!("c{i}"), "+33612345678", "mon 10:00-11:00", 1))
            .collect();
        let s = open(&path);
        let check = |s: &SledStore, want: (u64, u64)| {
            let p = s.progress("k").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((p.remaining, p.done), want);
            assert_eq!(s.due_counts("k").ok(), Some(p));
        };
        check(&s, (0, 0));
        s.upsert_contacts("k", &cs[..30])
            .unwrap_or_else(|e| panic!("{e}"));
        check(&s, (30, 0));
        let done: Vec<_> = (0..10).map(|i| (id(i), None)).collect();
        s.set_due("k", &done).unwrap_or_else(|e| panic!("{e}"));
        check(&s, (20, 10));
        // Moved, not added; an unknown id is ignored; done again changes nothing.
        let later = DateTime::from_timestamp(2_000_000_000, 0);
        s.set_due("k", &[(id(20), later), (id(99), later), (id(0), None)])
            .unwrap_or_else(|e| panic!("{e}"));
        check(&s, (20, 10));
        // The same contacts again (no new consent), then new ones with some old ones.
        s.upsert_contacts("k", &cs[..30])
            .unwrap_or_else(|e| panic!("{e}"));
        check(&s, (20, 10));
        s.upsert_contacts("k", &cs[25..])
            .unwrap_or_else(|e| panic!("{e}"));
        check(&s, (40, 10));
        // New consent for a done contact: due again.
        let again = contact("c1", "+33612345678", "tue 10:00-11:00", 5);
        s.upsert_contacts("k", &[again])
            .unwrap_or_else(|e| panic!("{e}"));
        check(&s, (41, 9));
        drop(s);
        check(&open(&path), (41, 9));
    }

    /// A campaign announced as large gets more, smaller contacts buckets, kept across
    /// reopening; the count never changes once it has contacts; others keep 4,096.
    #[test]
    fn a_large_first_import_sizes_its_campaigns_buckets() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s");
        let cs: Vec<Contact> = (0..300)
            .map(|i| contact(&format!("c{i}"), "+33612345678", "mon 10:00-11:00", 1))
            .collect();
        {
            let s = open(&path);
            s.expect_contacts("big", 10_000_000)
                .unwrap_or_else(|e| panic!("{e}"));
            s.upsert_contacts("big", &cs)
                .unwrap_or_else(|e| panic!("{e}"));
            s.upsert_contacts("small", &cs)
                .unwrap_or_else(|e| panic!("{e}"));
            // Too late for `small`: it has contacts.
            s.expect_contacts("small", 10_000_000)
                .unwrap_or_else(|e| panic!("{e}"));
            s.durable().unwrap_or_else(|e| panic!("{e}"));
        }
        let s = open(&path);
        assert_eq!(s.buckets_of("big").ok(), Some(1 << 19));
        assert_eq!(s.buckets_of("small").ok(), Some(buckets::BUCKETS));
        let mut prefix = b"big".to_vec();
        prefix.push(0);
        // 300 ids over 524,288 buckets: (nearly) one per bucket.
        assert!(s.contacts.scan_prefix(&prefix).count() > 290);
        for campaign in ["big", "small"] {
            for c in &cs {
                let got = s
                    .contact(campaign, c.id())
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(got.as_ref().map(Contact::id), Some(c.id()));
            }
            assert_eq!(s.contacts(campaign).map(|v| v.len()).ok(), Some(300));
        }
        assert_eq!(buckets::count_for(100_000), buckets::BUCKETS);
        assert_eq!(buckets::count_for(1_000_000), 1 << 15);
        assert_eq!(buckets::count_for(10_000_000), 1 << 19);
        assert_eq!(buckets::count_for(100_000_000), buckets::MAX_BUCKETS);
    }

    #[test]
    fn reimport_keeps_consent_history() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = open(&dir.path().join("s"));
        let st = s.upsert_contacts(
            "c",
            &[contact(
                "a",
                "+33612345678",
                "mon 10:00-11:00",
                1_800_000_000,
            )],
        );
        assert_eq!(
            st.ok(),
            Some(ImportStats {
                created: 1,
                updated: 0,
                consents_added: 1
            })
        );
        // Same id, a new consent and a new number: history kept, number updated.
        let st = s.upsert_contacts(
            "c",
            &[contact(
                "a",
                "+33612345679",
                "sat 10:00-11:00",
                1_810_000_000,
            )],
        );
        assert_eq!(
            st.ok(),
            Some(ImportStats {
                created: 0,
                updated: 1,
                consents_added: 1
            })
        );
        // The identical record again adds nothing.
        let st = s.upsert_contacts(
            "c",
            &[contact(
                "a",
                "+33612345679",
                "sat 10:00-11:00",
                1_810_000_000,
            )],
        );
        assert_eq!(st.ok().map(|s| s.consents_added), Some(0));
        let id = ContactId::new("a").unwrap_or_else(|e| panic!("{e}"));
        let c = s
            .contact("c", &id)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("missing"));
        assert_eq!(c.phone().as_str(), "+33612345679");
        assert_eq!(c.consents().len(), 2);
        assert_eq!(c.consents()[0].windows.to_string(), "mon 10:00-11:00");
        // Campaigns are separate.
        assert!(s.contacts("other").map(|v| v.is_empty()).unwrap_or(false));
    }

    #[test]
    fn a_contact_is_encoded_by_reference_exactly_as_its_stored_record() {
        let mut c = contact("x", "+33612345678", "mon-fri 18:00-20:00", 1_800_000_123);
        c.add_consent(ConsentRecord {
            windows: "sat 10:00-12:00".parse().unwrap_or_else(|e| panic!("{e}")),
            granted_at: DateTime::from_timestamp(1_800_000_000, 5).unwrap_or_default(),
            expires_at: DateTime::from_timestamp(1_900_000_000, 0),
            revoked_at: DateTime::from_timestamp(1_850_000_000, 0),
            source: "list".into(),
            proof: String::new(),
        });
        let by_ref = postcard::to_allocvec(&contact_out(&c)).unwrap_or_else(|e| panic!("{e}"));
        let owned = postcard::to_allocvec(&new_record(&c)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(by_ref, owned);
    }

    /// A contact as read back: id, phone, consent records (windows, granted at).
    type Seen = (String, String, Vec<(String, i64)>);

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Imports in several calls, with ids repeated within and across calls, read back
        /// as a plain map model says: every id once, in id order, phone of the last import,
        /// every distinct consent record in the order first seen.
        #[test]
        fn bucketed_imports_match_a_simple_model(
            imports in proptest::collection::vec(
                proptest::collection::vec((0u32..400, 0u8..3, 0u8..3), 1..300),
                1..4,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let s = open(&dir.path().join("s"));
            let windows = ["mon 10:00-11:00", "sat 09:00-12:00", "mon-sun 18:00-20:00"];
            let mut model: std::collections::BTreeMap<String, (String, Vec<(usize, i64)>)> =
                Default::default();
            for rows in &imports {
                let batch: Vec<Contact> = rows
                    .iter()
                    .map(|&(id, phone, w)| {
                        let id = format!("k{id}");
                        let phone = format!("+3361234{:04}", u32::from(phone) * 7 + 1);
                        let granted = 1_800_000_000 + i64::from(w) * 1000;
                        let e = model.entry(id.clone()).or_default();
                        e.0.clone_from(&phone);
                        if !e.1.contains(&(usize::from(w), granted)) {
                            e.1.push((usize::from(w), granted));
                        }
                        contact(&id, &phone, windows[usize::from(w)], granted)
                    })
                    .collect();
                s.upsert_contacts("camp", &batch).unwrap_or_else(|e| panic!("{e}"));
            }
            let back = s.contacts("camp").unwrap_or_else(|e| panic!("{e}"));
            let got: Vec<Seen> = back
                .iter()
                .map(|c| {
                    (
                        c.id().to_string(),
                        c.phone().to_string(),
                        c.consents()
                            .iter()
                            .map(|r| (r.windows.to_string(), r.granted_at.timestamp()))
                            .collect(),
                    )
                })
                .collect();
            let want: Vec<Seen> = model
                .iter()
                .map(|(id, (phone, cs))| {
                    (
                        id.clone(),
                        phone.clone(),
                        cs.iter().map(|&(w, g)| (windows[w].to_owned(), g)).collect(),
                    )
                })
                .collect();
            proptest::prop_assert_eq!(&got, &want);
            for (id, phone, _) in &want {
                let cid = ContactId::new(id.as_str()).unwrap_or_else(|e| panic!("{e}"));
                let one = s.contact("camp", &cid).unwrap_or_else(|e| panic!("{e}"));
                proptest::prop_assert_eq!(one.map(|c| c.phone().to_string()), Some(phone.clone()));
            }
            let missing = ContactId::new("k-none").unwrap_or_else(|e| panic!("{e}"));
            let none = s.contact("camp", &missing).unwrap_or_else(|e| panic!("{e}"));
            proptest::prop_assert!(none.is_none());
            let other = s.contacts("cam").unwrap_or_else(|e| panic!("{e}"));
            proptest::prop_assert!(other.is_empty());
        }
    }

    #[test]
    fn a_version_1_store_is_migrated_on_open_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s");
        // Build a version-1 store by hand: one key per contact, the old marker.
        let (hash, a, b) = {
            let s = open(&path);
            s.add_opt_out(&n("+33612345670"), DateTime::UNIX_EPOCH, "test")
                .unwrap_or_else(|e| panic!("{e}"));
            let hash = s.number_key(&n("+33612345670"));
            drop(s);
            let db = retrying(|| {
                sled::Config::new()
                    .path(&path)
                    .segment_size(segment_bytes(&path))
                    .open()
            });
            let meta = db.open_tree("meta").unwrap_or_else(|e| panic!("{e}"));
            meta.insert("format", FORMAT_1)
                .unwrap_or_else(|e| panic!("{e}"));
            let old = db.open_tree("contacts").unwrap_or_else(|e| panic!("{e}"));
            let a = contact("a", "+33612345678", "mon 10:00-11:00", 1_800_000_000);
            let b = contact("b", "+33612345679", "sat 10:00-11:00", 1_800_000_000);
            for (campaign, c) in [("c1", &a), ("c1", &b), ("c2", &a)] {
                let key = format!("{campaign}\0{}", c.id());
                let rec = postcard::to_allocvec(&new_record(c)).unwrap_or_else(|e| panic!("{e}"));
                old.insert(key.as_bytes(), rec)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            db.flush().unwrap_or_else(|e| panic!("{e}"));
            (hash, a, b)
        };
        let s = open(&path);
        let ids = |campaign: &str| -> Vec<String> {
            s.contacts(campaign)
                .unwrap_or_else(|e| panic!("{e}"))
                .iter()
                .map(|c| c.id().to_string())
                .collect()
        };
        assert_eq!(ids("c1"), ["a", "b"]);
        assert_eq!(ids("c2"), ["a"]);
        let got = s.contact("c1", b.id()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got.map(|c| c.consents().to_vec()),
            Some(b.consents().to_vec())
        );
        assert_eq!(s.number_key(&n("+33612345670")), hash, "same opt-out key");
        assert!(s.is_opted_out(&n("+33612345670")).unwrap_or(false));
        assert_eq!(
            s.upsert_contacts("c1", &[a]).ok().map(|st| st.updated),
            Some(1)
        );
        drop(s);
        // Opened again: already version 2, nothing to migrate.
        let s = open(&path);
        assert_eq!(s.contacts("c1").map(|v| v.len()).unwrap_or(0), 2);
    }

    #[test]
    fn opt_outs_are_hashed_global_and_durable() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s");
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        {
            let s = open(&path);
            assert!(matches!(
                s.add_opt_out(&n("+33612345678"), at, "key 9 by rfc4733"),
                Ok(true)
            ));
            assert!(matches!(
                s.add_opt_out(&n("+33612345678"), at, "again"),
                Ok(false)
            ));
            assert_eq!(
                s.add_opt_outs(
                    &[n("+33612345678"), n("+12012345678"), n("+12012345678")],
                    at,
                    "import"
                )
                .ok(),
                Some(1)
            );
        }
        // Reopened: still there (durable), listed by hash only.
        let s = open(&path);
        assert!(matches!(s.is_opted_out(&n("+33612345678")), Ok(true)));
        assert!(matches!(s.is_opted_out(&n("+33612345679")), Ok(false)));
        let list = s.opt_outs().unwrap_or_default();
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|o| o.number_hash.len() == 64));
        assert!(list.iter().any(|o| o.source == "key 9 by rfc4733"));
        // The numbers themselves appear nowhere on disk.
        drop(s);
        for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            for needle in [&b"33612345678"[..], &b"12012345678"[..]] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{:?} holds a number",
                    entry.path()
                );
            }
        }
        let s = open(&path);
        assert!(matches!(s.remove_opt_out(&n("+33612345678")), Ok(true)));
        assert!(matches!(s.is_opted_out(&n("+33612345678")), Ok(false)));
    }

    #[test]
    fn leases_recover_as_interrupted_attempts_only_when_their_invite_may_have_left() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s");
        // Sub-second instants are kept to the microsecond.
        let t =
            |ms: i64| DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap_or_default();
        let (a, b) = (
            ContactId::new("a").unwrap_or_else(|e| panic!("{e}")),
            ContactId::new("b").unwrap_or_else(|e| panic!("{e}")),
        );
        let (na, nb) = (n("+33612345678"), n("+33612345679"));
        {
            let s = open(&path);
            assert!(s.lease("c", &a, &na, t(250), "a-1").is_ok());
            // A second lease of the same contact is refused: no double dialling.
            assert!(matches!(
                s.lease("c", &a, &na, t(1_000), "a-2"),
                Err(Error::Leased { .. })
            ));
            assert!(finish(&s, "c", &a, &na, "a-1", busy(), t(30_750)).is_ok());
            assert!(s.lease("c", &a, &na, t(3_600_001), "a-3").is_ok());
            assert!(s.lease("c", &b, &nb, t(3_600_002), "b-1").is_ok());
            // "Crash": the store is dropped with both leases held.
        }
        let s = open(&path);
        let leases = s.leases().unwrap_or_default();
        let calls: Vec<&str> = leases.iter().map(|l| l.call.as_str()).collect();
        assert_eq!(calls, ["a-3", "b-1"]);
        assert_eq!(leases[0].at, t(3_600_001));
        // a-3's INVITE is in the log: an interrupted attempt, linked to its call.
        let rec = s
            .recover_lease(&leases[0], true, t(7_200_000))
            .ok()
            .flatten();
        assert_eq!(rec.as_ref().map(|r| r.call.as_str()), Some("a-3"));
        // b-1's is not: it never left; the lease is released, no attempt used.
        assert_eq!(
            s.recover_lease(&leases[1], false, t(7_200_000)).ok(),
            Some(None)
        );
        assert!(s.leases().unwrap_or_default().is_empty());
        assert!(s.attempts(&nb).unwrap_or_default().is_empty());
        let attempts = s.attempts(&na).unwrap_or_default();
        let got: Vec<(String, &str, DateTime<Utc>, DateTime<Utc>)> = attempts
            .iter()
            .map(|a| (a.outcome.name(), a.call.as_str(), a.started, a.ended))
            .collect();
        assert_eq!(
            got,
            [
                ("busy".to_owned(), "a-1", t(250), t(30_750)),
                ("interrupted".to_owned(), "a-3", t(3_600_001), t(7_200_000))
            ]
        );
        assert!(s.lease("c", &a, &na, t(7_400_000), "a-4").is_ok());
        assert!(s.lease("c", &b, &nb, t(7_400_000), "b-2").is_ok());
        // An attempt the log shows and the store lost is recorded as such.
        let lost = AttemptRecord {
            campaign: "c".into(),
            contact: "b".into(),
            started: t(10),
            ended: t(20),
            outcome: Outcome::Scheduled(crieur_outcome::AttemptOutcome::Interrupted),
            call: "b-0".into(),
        };
        assert!(s.record_attempt(&nb, &lost).is_ok());
        assert_eq!(s.attempts(&nb).ok(), Some(vec![lost]));
    }

    /// A damaged lease is still listed (at the epoch, no call id: the caller counts it if
    /// the log shows a call of that contact) and recovering it removes it, whatever it was.
    #[test]
    fn a_damaged_lease_is_listed_and_removed_on_recovery() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = open(&dir.path().join("s"));
        s.leases
            .insert(lease_key("c", "a"), &[0xff_u8; 3][..])
            .unwrap_or_else(|e| panic!("{e}"));
        let leases = s.leases().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            leases,
            vec![Lease {
                campaign: "c".into(),
                contact: "a".into(),
                at: DateTime::<Utc>::default(),
                call: String::new(),
                node: String::new(),
            }]
        );
        assert_eq!(
            s.recover_lease(&leases[0], true, DateTime::<Utc>::default())
                .ok(),
            Some(None)
        );
        assert_eq!(s.leases().ok(), Some(vec![]));
    }

    /// A version-2 store (whole seconds, no call ids) is rewritten on open: its attempts keep
    /// their instants, in microseconds, and a leftover lease is still there to recover.
    #[test]
    fn a_version_2_store_is_migrated() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s");
        let num = n("+33612345678");
        let hash;
        {
            let s = open(&path);
            hash = s.number_key(&num);
            let old = s.db.open_tree("attempts").unwrap_or_else(|e| panic!("{e}"));
            let leases = s.db.open_tree("leases").unwrap_or_else(|e| panic!("{e}"));
            let rec = StoredAttempt2 {
                campaign: "c".into(),
                contact: "a".into(),
                started: 1_800_000_000,
                ended: 1_800_000_030,
                outcome: "busy".into(),
            };
            let mut k = hash.to_vec();
            k.extend_from_slice(&1_800_000_000_i64.to_be_bytes());
            k.extend_from_slice(&7_u64.to_be_bytes());
            k.extend_from_slice(&lease_key("c", "a"));
            let v = postcard::to_allocvec(&rec).unwrap_or_else(|e| panic!("{e}"));
            old.insert(k, v).unwrap_or_else(|e| panic!("{e}"));
            let l = StoredLease2 {
                at: 1_800_003_600,
                number_hash: hash,
            };
            let v = postcard::to_allocvec(&l).unwrap_or_else(|e| panic!("{e}"));
            leases
                .insert(lease_key("c", "a"), v)
                .unwrap_or_else(|e| panic!("{e}"));
            let meta = s.db.open_tree("meta").unwrap_or_else(|e| panic!("{e}"));
            meta.insert("format", FORMAT_2)
                .unwrap_or_else(|e| panic!("{e}"));
            s.db.flush().unwrap_or_else(|e| panic!("{e}"));
        }
        let s = open(&path);
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or_default();
        let attempts = s.attempts(&num).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            attempts,
            vec![AttemptRecord {
                campaign: "c".into(),
                contact: "a".into(),
                started: at(1_800_000_000),
                ended: at(1_800_000_030),
                outcome: busy(),
                call: String::new(),
            }]
        );
        let leases = s.leases().unwrap_or_default();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].at, at(1_800_003_600));
    }

    #[test]
    fn never_initialises_over_something_else() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let other = dir.path().join("other");
        std::fs::create_dir_all(&other).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(other.join("notes.txt"), "mine").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            SledStore::open(&other, true),
            Err(Error::NotAStore { .. })
        ));
        assert!(matches!(
            SledStore::open(&dir.path().join("missing"), false),
            Err(Error::Missing { .. })
        ));
        // Locked by another opener.
        let path = dir.path().join("s");
        let _held = open(&path);
        assert!(matches!(
            SledStore::open(&path, false),
            Err(Error::Open { .. })
        ));
    }

    /// The outcome is stored by its name, as when it was a `String`: the same bytes, read
    /// back as the typed value; a name no version writes is a damaged record, located by its
    /// key and naming the outcome, never counted as some other outcome.
    #[test]
    fn outcomes_are_stored_by_name_and_an_unknown_name_is_damage() {
        #[derive(Serialize)]
        struct NamedAttempt<'a> {
            campaign: &'a str,
            contact: &'a str,
            started_us: i64,
            ended_us: i64,
            outcome: &'a str,
            call: &'a str,
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = open(&dir.path().join("s"));
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default();
        let id = ContactId::new("a").unwrap_or_else(|e| panic!("{e}"));
        let num = n("+33612345678");
        let refused = Outcome::Call {
            outcome: crieur_outcome::CallOutcome::AuthFailed,
            trunk_fault: true,
        };
        assert!(s.lease("c", &id, &num, t(0), "call-1").is_ok());
        assert!(finish(&s, "c", &id, &num, "call-1", refused, t(30)).is_ok());
        let (key, value) = s
            .attempts
            .scan_prefix(s.number_key(&num))
            .next()
            .and_then(|kv| kv.ok())
            .unwrap_or_else(|| panic!("no attempt stored"));
        let named = |outcome: &str| {
            postcard::to_allocvec(&NamedAttempt {
                campaign: "c",
                contact: "a",
                started_us: micros(t(0)),
                ended_us: micros(t(30)),
                outcome,
                call: "call-1",
            })
            .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(&value[..], &named("trunk-fault:auth-failed")[..]);
        let read = s.attempts(&num).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read.iter().map(|a| a.outcome).collect::<Vec<_>>(),
            [refused]
        );
        s.attempts
            .insert(&key, named("recovered-c/a"))
            .unwrap_or_else(|e| panic!("{e}"));
        match s.attempts(&num) {
            Err(Error::UnknownOutcome { key, source }) => {
                assert!(key.starts_with("attempt "), "{key}");
                assert_eq!(source.name, "recovered-c/a");
            }
            other => panic!("an unknown outcome was read: {other:?}"),
        }
    }

    #[test]
    fn a_damaged_attempt_is_an_error_not_an_attempt_in_1970() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = open(&dir.path().join("s"));
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default();
        let id = ContactId::new("a").unwrap_or_else(|e| panic!("{e}"));
        let num = n("+33612345678");
        for at in [0, 3600] {
            assert!(s.lease("c", &id, &num, t(at), "call").is_ok());
            assert!(finish(&s, "c", &id, &num, "call", busy(), t(at + 30)).is_ok());
        }
        assert_eq!(s.attempts(&num).map(|a| a.len()).ok(), Some(2));
        let (key, value) = s
            .attempts
            .scan_prefix(s.number_key(&num))
            .next()
            .and_then(|kv| kv.ok())
            .unwrap_or_else(|| panic!("no attempt stored"));
        let stored: StoredAttempt = postcard::from_bytes(&value).unwrap_or_else(|e| panic!("{e}"));
        let damaged = |why: &str| match s.attempts(&num) {
            Err(Error::Corrupt { key, why: w }) => {
                assert!(key.starts_with("attempt "), "{key}");
                assert!(w.contains(why), "{w}");
            }
            other => panic!("damage not reported: {other:?}"),
        };
        let put = |k: &[u8], a: &StoredAttempt| {
            let bytes = postcard::to_allocvec(a).unwrap_or_else(|e| panic!("{e}"));
            s.attempts
                .insert(k, bytes)
                .unwrap_or_else(|e| panic!("{e}"));
        };
        let with = |started_us: i64, ended_us: i64| StoredAttempt {
            campaign: stored.campaign.clone(),
            contact: stored.contact.clone(),
            started_us,
            ended_us,
            outcome: stored.outcome.clone(),
            call: stored.call.clone(),
        };
        // A start instant that is no date (it read as 1970 before, and left the cap's window).
        put(&key, &with(i64::MAX, stored.ended_us));
        damaged("start instant");
        put(&key, &with(stored.started_us, i64::MIN));
        damaged("end instant");
        // Bytes that do not decode.
        s.attempts
            .insert(&key, &[0xff_u8; 3][..])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(s.attempts(&num), Err(Error::Corrupt { .. })));
        // A key whose start instant disagrees with its record (a damaged key).
        put(&key, &with(stored.started_us, stored.ended_us));
        assert_eq!(s.attempts(&num).map(|a| a.len()).ok(), Some(2));
        let mut bad_key = key.to_vec();
        bad_key[39] ^= 0x01;
        s.attempts.remove(&key).unwrap_or_else(|e| panic!("{e}"));
        s.attempts
            .insert(bad_key.clone(), value.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        damaged("its key says it started at");
        // A key naming another contact.
        s.attempts
            .remove(&bad_key)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut other = key[..48].to_vec();
        other.extend_from_slice(&lease_key("c", "b"));
        s.attempts
            .insert(other, value)
            .unwrap_or_else(|e| panic!("{e}"));
        damaged("another contact");
    }

    #[test]
    fn campaigns_are_listed_once_each_in_order() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = open(&dir.path().join("s"));
        assert_eq!(s.campaigns().ok(), Some(vec![]));
        // Enough contacts per campaign to fill many buckets; a name that prefixes another.
        for campaign in ["b", "a", "a-2"] {
            let contacts: Vec<Contact> = (0..300)
                .map(|i| {
                    contact(
                        &format!("{campaign}-{i}"),
                        &format!("+336123{i:05}"),
                        "mon 10:00-11:00",
                        1_800_000_000,
                    )
                })
                .collect();
            s.upsert_contacts(campaign, &contacts)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            s.campaigns().ok(),
            Some(vec!["a".to_owned(), "a-2".to_owned(), "b".to_owned()])
        );
    }
}
