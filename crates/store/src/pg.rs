//! The PostgreSQL backend: the same [`Store`] as the sled one, in one database that several
//! nodes share (`--store postgres://…`). Schema: `crates/store/migrations/*.sql`, applied
//! in order on open (recorded in `crieur_migrations`, under an advisory lock).
//!
//! Why the synchronous `postgres` client: the [`Store`] trait is synchronous (the sled
//! backend blocks its caller on fsync; the dial protocol and the crash tests call it from
//! plain code), and every store call of a run is one short transaction whose latency is the
//! round trip, so an async trait would change every caller for nothing. The `postgres`
//! crate drives `tokio-postgres` on a runtime of its own, and a tokio runtime cannot be
//! entered from a thread that is already running one (`crieur run` calls the store from its
//! tokio tasks, as it does sled): so each call runs on a short-lived thread of its own (a
//! scoped thread, tens of microseconds, borrowing its arguments), holding one connection of
//! a small pool. Connections are opened on demand and kept (at most [`POOL`] idle).
//!
//! Transactions are what make several nodes safe: a lease is an `INSERT … ON CONFLICT DO
//! NOTHING` on the contact's key (two nodes cannot both lease it); finishing a call deletes
//! the lease and inserts the attempt in one transaction; due contacts are taken with
//! `FOR UPDATE SKIP LOCKED` and marked as claimed by the node until a deadline; the opt-out
//! list is one table every node reads at each re-check.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use crieur_scheduler::{Contact, ContactId, WindowsCache, E164};
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls, Transaction};

use crate::{
    decode_contact, due, fold_import, instant_us, micros, AttemptRecord, Claim, DueContact, Error,
    Finished, ImportStats, Lease, OptOut, Outcome, PendingOptOut, Progress, Result, Store,
    StoredContact,
};

/// The migrations, in order: (version, SQL). Never edit one that has shipped: add the next.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_nodes.sql")),
    (3, include_str!("../migrations/0003_optout_pending.sql")),
];

/// The schema's format marker (table `crieur_meta`).
const FORMAT: &[u8] = b"crieur-pg-1";

/// Idle connections kept.
const POOL: usize = 8;

/// Contacts per import transaction.
const IMPORT_CHUNK: usize = 5000;

/// The advisory lock key that serialises migrations (and the first key's creation).
const MIGRATION_LOCK: i64 = 0x6372_6965_7572_0001;

/// The PostgreSQL-backed store.
pub struct PgStore {
    /// The connection string, as given (it may hold a password: never shown).
    url: String,
    /// What is shown of it: without a password.
    shown: String,
    idle: Mutex<Vec<Client>>,
    key: [u8; 32],
    /// This process's node id, written on its leases.
    node: String,
}

fn pg_err(e: postgres::Error) -> Error {
    Error::Postgres(e)
}

/// The connection string without its password (`postgres://user:secret@host` →
/// `postgres://user:***@host`; `password=secret` → `password=***`).
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some(("password", _)) => "password=***".to_owned(),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `f` on a thread of its own (see the module's doc: the `postgres` client cannot run
/// on a thread that is driving a tokio runtime).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl PgStore {
    /// Whether `spec` names a PostgreSQL database rather than a directory.
    pub fn is_url(spec: &str) -> bool {
        spec.starts_with("postgres://") || spec.starts_with("postgresql://")
    }

    /// Connects to the database at `url`. With `create`, the schema is created (or
    /// migrated) if needed; without it, a database that holds no crieur store is
    /// [`Error::Missing`]. A database holding other tables and no crieur store is never
    /// initialised over ([`Error::NotAStore`]).
    pub fn open(url: &str, create: bool) -> Result<Self> {
        let shown = redact(url);
        let open_err = |e: Error| Error::OpenDatabase {
            target: shown.clone(),
            source: Box::new(e),
        };
        let mut client =
            off_runtime(|| Client::connect(url, NoTls)).map_err(|e| open_err(pg_err(e)))?;
        let key = off_runtime(|| migrate(&mut client, &shown, create))?;
        Ok(PgStore {
            url: url.to_owned(),
            shown,
            idle: Mutex::new(vec![client]),
            key,
            node: String::new(),
        })
    }

    /// Runs `f` with a connection of the pool, off any tokio runtime.
    fn with<T: Send>(&self, f: impl FnOnce(&mut Client) -> Result<T> + Send) -> Result<T> {
        let pooled = self
            .idle
            .lock()
            .map_err(|_| Error::Poisoned {
                what: "connection pool",
            })?
            .pop();
        let url = &self.url;
        let (client, r) = off_runtime(move || {
            let mut client = match pooled {
                Some(c) if !c.is_closed() => c,
                _ => match Client::connect(url, NoTls) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(pg_err(e))),
                },
            };
            let r = f(&mut client);
            (Some(client), r)
        });
        if let Some(c) = client {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < POOL && !c.is_closed() {
                    idle.push(c);
                    return r;
                }
            }
            // Dropped here: the client's runtime must not be dropped on a tokio thread.
            off_runtime(move || drop(c));
        }
        r
    }

    /// Runs `f` in one transaction (committed when it returns `Ok`).
    fn tx<T: Send>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T> + Send) -> Result<T> {
        self.with(|c| {
            let mut t = c.transaction().map_err(pg_err)?;
            let r = f(&mut t)?;
            t.commit().map_err(pg_err)?;
            Ok(r)
        })
    }

    fn number_key(&self, number: &E164) -> Vec<u8> {
        crate::keyed_hash(&self.key, number).to_vec()
    }

    /// Names the node this process is: written on the leases it takes.
    pub fn with_node(mut self, node: &str) -> Self {
        self.node = node.to_owned();
        self
    }

    /// The connection string as shown (without its password).
    pub fn name(&self) -> &str {
        &self.shown
    }
}

/// The channel each opt-out is NOTIFYed on (its keyed hash, hex), at its commit.
const OPT_OUT_CHANNEL: &str = "crieur_optouts";

/// A [`crate::OptOutWatch`] on PostgreSQL: a connection of its own that LISTENs on
/// [`OPT_OUT_CHANNEL`] (made again after a failure). Used from a thread of its own, never a
/// tokio one (the client runs a runtime).
struct PgWatch {
    url: String,
    key: [u8; 32],
    client: Option<Client>,
}

impl crate::OptOutWatch for PgWatch {
    fn next(&mut self, wait: std::time::Duration) -> Result<Vec<[u8; 32]>> {
        let client = match &mut self.client {
            Some(c) => c,
            None => {
                let mut c = Client::connect(&self.url, NoTls).map_err(pg_err)?;
                c.batch_execute(&format!("LISTEN {OPT_OUT_CHANNEL}"))
                    .map_err(pg_err)?;
                self.client.insert(c)
            }
        };
        let mut out = Vec::new();
        let mut heard = |n: &postgres::Notification| {
            let mut h = [0u8; 32];
            match hex::decode_to_slice(n.payload(), &mut h) {
                Ok(()) => out.push(h),
                Err(e) => {
                    tracing::warn!(payload = n.payload(), error = %e, "not an opt-out's hash: dropped")
                }
            }
        };
        let r = (|| -> std::result::Result<(), postgres::Error> {
            let mut notes = client.notifications();
            {
                let mut first = notes.timeout_iter(wait);
                if let Some(n) = first.next()? {
                    heard(&n);
                }
            }
            // And whatever else came meanwhile, without waiting.
            let mut rest = notes.iter();
            while let Some(n) = rest.next()? {
                heard(&n);
            }
            Ok(())
        })();
        if let Err(e) = r {
            self.client = None;
            return Err(pg_err(e));
        }
        Ok(out)
    }

    fn key_of(&self, number: &str) -> [u8; 32] {
        crate::keyed_hash_str(&self.key, number)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Each client owns a runtime, which cannot be dropped on a tokio thread.
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        off_runtime(move || drop(idle));
    }
}

/// Applies the migrations not yet applied (under an advisory lock: nodes opening a new
/// database at once apply each once), checks the format marker, and returns the opt-out
/// key (created with the schema).
fn migrate(client: &mut Client, shown: &str, create: bool) -> Result<[u8; 32]> {
    let not_a_store = |why: String| Error::NotAStore {
        path: shown.into(),
        why,
    };
    let has = |c: &mut Client, table: &str| -> Result<bool> {
        c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .map(|r| r.get::<_, bool>(0))
            .map_err(pg_err)
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg_err)?;
    let r = (|| {
        // Under the lock: a node that finds no store may be racing one that creates it.
        if !has(client, "crieur_migrations")? {
            if !create {
                return Err(Error::Missing { path: shown.into() });
            }
            let others: i64 = client
                .query_one(
                    "SELECT count(*) FROM information_schema.tables \
                     WHERE table_schema = current_schema()",
                    &[],
                )
                .map_err(pg_err)?
                .get(0);
            if others > 0 {
                return Err(not_a_store(format!(
                    "the database holds {others} other tables and no crieur store"
                )));
            }
        }
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS crieur_migrations (version integer PRIMARY KEY)",
            )
            .map_err(pg_err)?;
        for (version, sql) in MIGRATIONS {
            let mut t = client.transaction().map_err(pg_err)?;
            let done = t
                .query_opt(
                    "SELECT 1 FROM crieur_migrations WHERE version = $1",
                    &[version],
                )
                .map_err(pg_err)?
                .is_some();
            if !done {
                t.batch_execute(sql).map_err(pg_err)?;
                t.execute(
                    "INSERT INTO crieur_migrations (version) VALUES ($1)",
                    &[version],
                )
                .map_err(pg_err)?;
                if *version == 1 {
                    let key: [u8; 32] = rand::random();
                    t.execute(
                        "INSERT INTO crieur_meta (name, value) VALUES ('format', $1), ('optout-key', $2)",
                        &[&FORMAT, &&key[..]],
                    )
                    .map_err(pg_err)?;
                }
            }
            t.commit().map_err(pg_err)?;
        }
        let rows = client
            .query("SELECT name, value FROM crieur_meta", &[])
            .map_err(pg_err)?;
        let get = |n: &str| {
            rows.iter()
                .find(|r| r.get::<_, &str>(0) == n)
                .map(|r| r.get::<_, Vec<u8>>(1))
        };
        if get("format").as_deref() != Some(FORMAT) {
            return Err(not_a_store(format!(
                "unknown format {:?}",
                get("format").map(|f| String::from_utf8_lossy(&f).into_owned())
            )));
        }
        get("optout-key")
            .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
            .ok_or_else(|| not_a_store("the opt-out key is missing or damaged".into()))
    })();
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .map_err(pg_err);
    let key = r?;
    unlock?;
    Ok(key)
}

fn corrupt(key: String) -> impl Fn(String) -> Error {
    move |why| Error::Corrupt {
        key: key.clone(),
        why,
    }
}

/// Applies due-index changes `(before, after)` to a campaign's counters.
fn add_progress(
    t: &mut Transaction<'_>,
    campaign: &str,
    p: Progress,
    less: Progress,
) -> Result<()> {
    let d = |a: u64, b: u64| (a as i64).saturating_sub(b as i64);
    t.execute(
        "INSERT INTO crieur_progress (campaign, remaining, done) VALUES ($1, $2, $3) \
         ON CONFLICT (campaign) DO UPDATE SET \
         remaining = crieur_progress.remaining + EXCLUDED.remaining, \
         done = crieur_progress.done + EXCLUDED.done",
        &[
            &campaign,
            &d(p.remaining, less.remaining),
            &d(p.done, less.done),
        ],
    )
    .map_err(pg_err)?;
    Ok(())
}

/// What the counters lose and gain from a contact's due change.
fn tally(
    gain: &mut Progress,
    loss: &mut Progress,
    before: Option<Option<i64>>,
    after: Option<i64>,
) {
    match before {
        Some(Some(_)) => loss.remaining += 1,
        Some(None) => loss.done += 1,
        None => {}
    }
    due::count(gain, None, after);
}

impl PgStore {
    /// One import transaction: the contacts of `chunk` (sorted by id, stable) merged with
    /// what is stored, their due entries, the counters.
    fn import_chunk(&self, campaign: &str, chunk: &[&Contact]) -> Result<ImportStats> {
        self.tx(|t| {
            // Imports into one campaign are serialised (a contact merged by two at once
            // would lose one's consent records).
            t.execute(
                "SELECT pg_advisory_xact_lock(hashtext('crieur-import:' || $1))",
                &[&campaign],
            )
            .map_err(pg_err)?;
            let ids: Vec<&str> = chunk.iter().map(|c| c.id().as_str()).collect();
            let rows = t
                .query(
                    "SELECT id, record, due_us FROM crieur_contacts \
                     WHERE campaign = $1 AND id = ANY($2) FOR UPDATE",
                    &[&campaign, &ids],
                )
                .map_err(pg_err)?;
            let mut stored: std::collections::HashMap<String, (StoredContact, Option<i64>)> =
                Default::default();
            for r in &rows {
                let id: String = r.get(0);
                let rec: Vec<u8> = r.get(1);
                let s: StoredContact = postcard::from_bytes(&rec)
                    .map_err(|e| corrupt(format!("{campaign}/{id}"))(e.to_string()))?;
                stored.insert(id, (s, r.get(2)));
            }
            let mut stats = ImportStats::default();
            let (mut gain, mut loss) = (Progress::default(), Progress::default());
            let (mut out_ids, mut out_recs, mut out_due) = (Vec::new(), Vec::new(), Vec::new());
            let mut i = 0;
            while i < chunk.len() {
                let id = chunk[i].id().as_str();
                let same = chunk[i..]
                    .iter()
                    .take_while(|c| c.id().as_str() == id)
                    .count();
                let (old, before) = match stored.remove(id) {
                    Some((s, d)) => (Some(s), Some(d)),
                    None => (None, None),
                };
                if let Some((record, imp)) = fold_import(old, &chunk[i..i + same], &mut stats) {
                    let after = imp.due_after(before).unwrap_or_else(|| before.flatten());
                    if imp.due_after(before).is_some() {
                        tally(&mut gain, &mut loss, before, after);
                    }
                    out_ids.push(id.to_owned());
                    out_recs.push(postcard::to_allocvec(&record).map_err(crate::io)?);
                    out_due.push(after);
                }
                i += same;
            }
            t.execute(
                "INSERT INTO crieur_contacts (campaign, id, record, due_us) \
                 SELECT $1, u.id, u.record, u.due \
                 FROM unnest($2::text[], $3::bytea[], $4::int8[]) AS u(id, record, due) \
                 ON CONFLICT (campaign, id) DO UPDATE SET \
                 record = EXCLUDED.record, due_us = EXCLUDED.due_us",
                &[&campaign, &out_ids, &out_recs, &out_due],
            )
            .map_err(pg_err)?;
            add_progress(t, campaign, gain, loss)?;
            Ok(stats)
        })
    }
}

impl PgStore {
    /// The opt-outs of `numbers` (the first of each number is kept: its date is the
    /// evidence), with `pending` kept in the same transaction; NOTIFYed to every node.
    fn insert_opt_outs(
        &self,
        numbers: &[E164],
        at: DateTime<Utc>,
        source: &str,
        pending: Option<&PendingOptOut>,
    ) -> Result<usize> {
        let mut hashes: Vec<Vec<u8>> = numbers.iter().map(|n| self.number_key(n)).collect();
        hashes.sort();
        hashes.dedup();
        self.tx(|t| {
            // The first opt-out of a number is the one kept: its date is the evidence.
            let n = t
                .execute(
                    "INSERT INTO crieur_optouts (number_hash, at_s, source) \
                     SELECT h, $2, $3 FROM unnest($1::bytea[]) AS h \
                     ON CONFLICT (number_hash) DO NOTHING",
                    &[&hashes, &at.timestamp(), &source],
                )
                .map_err(pg_err)?;
            if let Some(p) = pending {
                t.execute(
                    "INSERT INTO crieur_optouts_pending (ticket, log, numbers, at_us, source) \
                     VALUES ($1, $2, $3, $4, $5)",
                    &[&p.ticket, &p.log, &p.numbers, &micros(p.at), &p.source],
                )
                .map_err(pg_err)?;
            }
            // Every node's watch hears of each at the commit (a number already listed too:
            // a call to it in progress anywhere ends all the same).
            t.execute(
                &format!(
                    "SELECT pg_notify('{OPT_OUT_CHANNEL}', encode(h, 'hex')) \
                     FROM unnest($1::bytea[]) AS h"
                ),
                &[&hashes],
            )
            .map_err(pg_err)?;
            Ok(n as usize)
        })
    }
}

impl Store for PgStore {
    fn upsert_contacts(&self, campaign: &str, contacts: &[Contact]) -> Result<ImportStats> {
        let mut sorted: Vec<&Contact> = contacts.iter().collect();
        // Stable: the same id twice keeps file order.
        sorted.sort_by(|a, b| a.id().cmp(b.id()));
        let mut stats = ImportStats::default();
        let mut written = 0;
        let mut rest = sorted.as_slice();
        while !rest.is_empty() {
            // A chunk never splits one id's rows.
            let mut n = rest.len().min(IMPORT_CHUNK);
            while n < rest.len() && rest[n].id() == rest[n - 1].id() {
                n += 1;
            }
            let (chunk, tail) = rest.split_at(n);
            match self.import_chunk(campaign, chunk) {
                Ok(s) => {
                    stats.created += s.created;
                    stats.updated += s.updated;
                    stats.consents_added += s.consents_added;
                }
                Err(e) if written == 0 => return Err(e),
                Err(e) => {
                    return Err(Error::PartialImport {
                        written,
                        total: contacts.len(),
                        source: Box::new(e),
                    })
                }
            }
            written += chunk.len();
            rest = tail;
        }
        Ok(stats)
    }

    fn contact(&self, campaign: &str, id: &ContactId) -> Result<Option<Contact>> {
        let rec: Option<Vec<u8>> = self.with(|c| {
            c.query_opt(
                "SELECT record FROM crieur_contacts WHERE campaign = $1 AND id = $2",
                &[&campaign, &id.as_str()],
            )
            .map(|r| r.map(|r| r.get(0)))
            .map_err(pg_err)
        })?;
        rec.map(|r| {
            decode_contact(
                campaign,
                id.as_str().as_bytes(),
                &r,
                &mut WindowsCache::default(),
            )
        })
        .transpose()
    }

    fn contacts(&self, campaign: &str) -> Result<Vec<Contact>> {
        let rows = self.with(|c| {
            c.query(
                "SELECT id, record FROM crieur_contacts WHERE campaign = $1 ORDER BY id",
                &[&campaign],
            )
            .map_err(pg_err)
        })?;
        let mut windows = WindowsCache::default();
        rows.iter()
            .map(|r| {
                let id: &str = r.get(0);
                decode_contact(campaign, id.as_bytes(), r.get(1), &mut windows)
            })
            .collect()
    }

    fn scan_contacts(
        &self,
        campaign: &str,
        batch: usize,
        f: &mut dyn FnMut(Vec<Contact>) -> bool,
    ) -> Result<()> {
        let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        let mut windows = WindowsCache::default();
        let mut after = String::new();
        loop {
            // One page per query, by id (keyset: each page an index range scan), the
            // connection back in the pool between pages.
            let rows = self.with(|c| {
                c.query(
                    "SELECT id, record FROM crieur_contacts WHERE campaign = $1 AND id > $2 \
                     ORDER BY id LIMIT $3",
                    &[&campaign, &after, &limit],
                )
                .map_err(pg_err)
            })?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.get::<_, &str>(0).to_owned();
            let full = rows.len() as i64 == limit;
            let page = rows
                .iter()
                .map(|r| {
                    let id: &str = r.get(0);
                    decode_contact(campaign, id.as_bytes(), r.get(1), &mut windows)
                })
                .collect::<Result<Vec<_>>>()?;
            if !f(page) || !full {
                return Ok(());
            }
        }
    }

    fn opted_out_among(&self, numbers: &[&E164]) -> Result<Vec<bool>> {
        let keys: Vec<Vec<u8>> = numbers.iter().map(|n| self.number_key(n)).collect();
        let found: std::collections::HashSet<Vec<u8>> = self.with(|c| {
            c.query(
                "SELECT number_hash FROM crieur_optouts WHERE number_hash = ANY($1)",
                &[&keys],
            )
            .map(|rows| rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect())
            .map_err(pg_err)
        })?;
        Ok(keys.iter().map(|k| found.contains(k)).collect())
    }

    fn campaigns(&self) -> Result<Vec<String>> {
        self.with(|c| {
            // A campaign has a counters row from its first import on.
            c.query(
                "SELECT campaign FROM crieur_progress WHERE remaining + done > 0 ORDER BY campaign",
                &[],
            )
            .map(|rows| rows.iter().map(|r| r.get(0)).collect())
            .map_err(pg_err)
        })
    }

    fn add_opt_out(&self, number: &E164, at: DateTime<Utc>, source: &str) -> Result<bool> {
        Ok(self.add_opt_outs(std::slice::from_ref(number), at, source)? == 1)
    }

    fn watch_opt_outs(&self) -> Result<Option<Box<dyn crate::OptOutWatch>>> {
        Ok(Some(Box::new(PgWatch {
            url: self.url.clone(),
            key: self.key,
            client: None,
        })))
    }

    fn add_opt_outs(&self, numbers: &[E164], at: DateTime<Utc>, source: &str) -> Result<usize> {
        self.insert_opt_outs(numbers, at, source, None)
    }

    fn add_opt_outs_pending(&self, numbers: &[E164], pending: &PendingOptOut) -> Result<usize> {
        self.insert_opt_outs(numbers, pending.at, &pending.source, Some(pending))
    }

    fn pending_opt_outs(&self, log: &str) -> Result<Vec<PendingOptOut>> {
        let rows = self.with(|c| {
            c.query(
                "SELECT ticket, numbers, at_us, source FROM crieur_optouts_pending \
                 WHERE log = $1 ORDER BY at_us, ticket",
                &[&log],
            )
            .map_err(pg_err)
        })?;
        Ok(rows
            .iter()
            .map(|r| PendingOptOut {
                ticket: r.get(0),
                log: log.to_owned(),
                numbers: r.get(1),
                at: instant_us(r.get(2)),
                source: r.get(3),
            })
            .collect())
    }

    fn clear_pending_opt_outs(&self, tickets: &[String]) -> Result<()> {
        self.tx(|t| {
            // No wait for the WAL's flush: see the trait.
            t.batch_execute("SET LOCAL synchronous_commit = off")
                .map_err(pg_err)?;
            t.execute(
                "DELETE FROM crieur_optouts_pending WHERE ticket = ANY($1)",
                &[&tickets],
            )
            .map(|_| ())
            .map_err(pg_err)
        })
    }

    fn remove_opt_out(&self, number: &E164) -> Result<bool> {
        let h = self.number_key(number);
        self.with(|c| {
            c.execute("DELETE FROM crieur_optouts WHERE number_hash = $1", &[&h])
                .map(|n| n > 0)
                .map_err(pg_err)
        })
    }

    fn is_opted_out(&self, number: &E164) -> Result<bool> {
        let h = self.number_key(number);
        self.with(|c| {
            c.query_opt("SELECT 1 FROM crieur_optouts WHERE number_hash = $1", &[&h])
                .map(|r| r.is_some())
                .map_err(pg_err)
        })
    }

    fn opt_outs(&self) -> Result<Vec<OptOut>> {
        self.with(|c| {
            c.query(
                "SELECT number_hash, at_s, source FROM crieur_optouts ORDER BY number_hash",
                &[],
            )
            .map_err(pg_err)
        })?
        .iter()
        .map(|r| {
            let h: Vec<u8> = r.get(0);
            Ok(OptOut {
                number_hash: hex::encode(h),
                at: DateTime::from_timestamp(r.get(1), 0).unwrap_or_default(),
                source: r.get(2),
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
        let h = self.number_key(number);
        let node = self.node.as_str();
        self.with(|c| {
            // The primary key makes this atomic across nodes: one lease per contact.
            let n = c
                .execute(
                    "INSERT INTO crieur_leases (campaign, contact, at_us, number_hash, call, node) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    &[&campaign, &id.as_str(), &micros(at), &h, &call, &node],
                )
                .map_err(pg_err)?;
            if n == 1 {
                return Ok(());
            }
            let since: Option<i64> = c
                .query_opt(
                    "SELECT at_us FROM crieur_leases WHERE campaign = $1 AND contact = $2",
                    &[&campaign, &id.as_str()],
                )
                .map_err(pg_err)?
                .map(|r| r.get(0));
            Err(Error::Leased {
                campaign: campaign.to_owned(),
                id: id.to_string(),
                since: since.map(instant_us).unwrap_or_default(),
            })
        })
    }

    fn finish_attempt(&self, number: &E164, a: &AttemptRecord) -> Result<Finished> {
        let h = self.number_key(number);
        self.tx(|t| {
            // Only the call's own lease: one another node took since (after recovering this
            // one) is left alone.
            if close_lease(
                t,
                &a.campaign,
                &a.contact,
                Some(&a.call),
                Some(&h),
                a.outcome,
                micros(a.ended),
            )?
            .is_some()
            {
                return Ok(Finished::Closed);
            }
            let held_by = t
                .query_opt(
                    "SELECT node, call FROM crieur_leases WHERE campaign = $1 AND contact = $2",
                    &[&a.campaign, &a.contact],
                )
                .map_err(pg_err)?
                .map(|r| (r.get(0), r.get(1)));
            // The recovery's attempt for this call: its real outcome and end.
            let updated = t
                .execute(
                    "UPDATE crieur_attempts SET outcome = $1, ended_us = $2 \
                     WHERE number_hash = $3 AND call = $4 AND campaign = $5 AND contact = $6",
                    &[
                        &a.outcome.name(),
                        &micros(a.ended),
                        &h,
                        &a.call,
                        &a.campaign,
                        &a.contact,
                    ],
                )
                .map_err(pg_err)?
                > 0;
            if !updated {
                insert_attempt(t, &h, a)?;
            }
            Ok(Finished::LeaseLost { held_by, updated })
        })
    }

    fn leases(&self) -> Result<Vec<Lease>> {
        let rows = self.with(|c| {
            c.query(
                "SELECT campaign, contact, at_us, call, node FROM crieur_leases \
                 ORDER BY at_us, campaign, contact",
                &[],
            )
            .map_err(pg_err)
        })?;
        Ok(rows
            .iter()
            .map(|r| Lease {
                campaign: r.get(0),
                contact: r.get(1),
                at: instant_us(r.get(2)),
                call: r.get(3),
                node: r.get(4),
            })
            .collect())
    }

    fn recover_lease(
        &self,
        lease: &Lease,
        sent: bool,
        now: DateTime<Utc>,
    ) -> Result<Option<AttemptRecord>> {
        // Only this lease (its call id): a node recovering an expired lease never removes
        // a newer one another node took meanwhile.
        self.tx(|t| {
            if !sent {
                t.execute(
                    "DELETE FROM crieur_leases WHERE campaign = $1 AND contact = $2 AND call = $3",
                    &[&lease.campaign, &lease.contact, &lease.call],
                )
                .map_err(pg_err)?;
                return Ok(None);
            }
            close_lease(
                t,
                &lease.campaign,
                &lease.contact,
                Some(&lease.call),
                None,
                Outcome::Scheduled(crieur_outcome::AttemptOutcome::Interrupted),
                micros(now),
            )
        })
    }

    fn record_attempt(&self, number: &E164, a: &AttemptRecord) -> Result<()> {
        let h = self.number_key(number);
        self.with(|c| insert_attempt(c, &h, a).map(|_| ()))
    }

    fn attempts(&self, number: &E164) -> Result<Vec<AttemptRecord>> {
        let h = self.number_key(number);
        let rows = self.with(|c| {
            c.query(
                "SELECT campaign, contact, started_us, ended_us, outcome, call \
                 FROM crieur_attempts WHERE number_hash = $1 ORDER BY started_us, seq",
                &[&h],
            )
            .map_err(pg_err)
        })?;
        rows.iter()
            .map(|r| {
                let at = |i: usize| {
                    let us: i64 = r.get(i);
                    DateTime::from_timestamp_micros(us).ok_or_else(|| Error::Corrupt {
                        key: format!("attempt of {}/{}", r.get::<_, &str>(0), r.get::<_, &str>(1)),
                        why: format!("instant {us} is not a date"),
                    })
                };
                let name: &str = r.get(4);
                Ok(AttemptRecord {
                    campaign: r.get(0),
                    contact: r.get(1),
                    started: at(2)?,
                    ended: at(3)?,
                    outcome: name.parse().map_err(|source| Error::UnknownOutcome {
                        key: format!("attempt of {}/{}", r.get::<_, &str>(0), r.get::<_, &str>(1)),
                        source,
                    })?,
                    call: r.get(5),
                })
            })
            .collect()
    }

    fn set_due(&self, campaign: &str, due: &[(ContactId, Option<DateTime<Utc>>)]) -> Result<()> {
        let ids: Vec<&str> = due.iter().map(|(id, _)| id.as_str()).collect();
        let when: Vec<Option<i64>> = due.iter().map(|(_, w)| w.map(micros)).collect();
        self.tx(|t| {
            // Locks the rows (in id order: no deadlock between nodes) and reads what they
            // were, for the counters.
            let rows = t
                .query(
                    "SELECT id, due_us FROM crieur_contacts WHERE campaign = $1 AND id = ANY($2) \
                     ORDER BY id FOR UPDATE",
                    &[&campaign, &ids],
                )
                .map_err(pg_err)?;
            let before: std::collections::HashMap<&str, Option<i64>> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let (mut gain, mut loss) = (Progress::default(), Progress::default());
            let mut seen = std::collections::HashSet::new();
            // The last instant given for an id wins (as it would applied one by one).
            for (id, w) in ids.iter().zip(&when).rev() {
                if !seen.insert(*id) {
                    continue;
                }
                if let Some(b) = before.get(id) {
                    if b != w {
                        tally(&mut gain, &mut loss, Some(*b), *w);
                    }
                }
            }
            let (last_ids, last_when): (Vec<&str>, Vec<Option<i64>>) = {
                let mut seen = std::collections::HashSet::new();
                ids.iter()
                    .zip(&when)
                    .rev()
                    .filter(|(id, _)| seen.insert(**id))
                    .map(|(id, w)| (*id, *w))
                    .unzip()
            };
            t.execute(
                "UPDATE crieur_contacts c SET due_us = u.due, claimed_by = NULL, claim_until_us = NULL \
                 FROM unnest($2::text[], $3::int8[]) AS u(id, due) \
                 WHERE c.campaign = $1 AND c.id = u.id",
                &[&campaign, &last_ids, &last_when],
            )
            .map_err(pg_err)?;
            add_progress(t, campaign, gain, loss)
        })
    }

    fn due_of(&self, campaign: &str, id: &ContactId) -> Result<Option<Option<DateTime<Utc>>>> {
        let r: Option<Option<i64>> = self.with(|c| {
            c.query_opt(
                "SELECT due_us FROM crieur_contacts WHERE campaign = $1 AND id = $2",
                &[&campaign, &id.as_str()],
            )
            .map(|r| r.map(|r| r.get(0)))
            .map_err(pg_err)
        })?;
        Ok(r.map(|d| d.map(instant_us)))
    }

    fn claim_due(&self, campaign: &str, claim: &Claim<'_>) -> Result<Vec<DueContact>> {
        let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
        let (until, now, hold) = (
            micros(claim.until),
            micros(claim.now),
            micros(claim.hold_until),
        );
        let rows = self.tx(|t| {
            // SKIP LOCKED: rows another node is claiming right now are passed over, not
            // waited for; a lapsed claim (its node died) can be taken again.
            t.query(
                "WITH c AS ( \
                   SELECT id FROM crieur_contacts \
                   WHERE campaign = $1 AND due_us <= $2 \
                     AND (claimed_by IS NULL OR claimed_by = $3 OR claim_until_us <= $4) \
                   ORDER BY due_us LIMIT $5 FOR UPDATE SKIP LOCKED) \
                 UPDATE crieur_contacts t SET claimed_by = $3, claim_until_us = $6 \
                 FROM c WHERE t.campaign = $1 AND t.id = c.id \
                 RETURNING t.id, t.due_us",
                &[&campaign, &until, &claim.node, &now, &limit, &hold],
            )
            .map_err(pg_err)
        })?;
        let mut out = rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                let due: i64 = r.get(1);
                ContactId::new(id.clone())
                    .map(|id| DueContact {
                        id,
                        due: instant_us(due),
                    })
                    .map_err(|e| corrupt(format!("{campaign}/{id}"))(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| (a.due, &a.id).cmp(&(b.due, &b.id)));
        Ok(out)
    }

    fn next_due(&self, campaign: &str) -> Result<Option<DateTime<Utc>>> {
        let r: Option<i64> = self.with(|c| {
            c.query_one(
                "SELECT min(due_us) FROM crieur_contacts WHERE campaign = $1 AND due_us IS NOT NULL",
                &[&campaign],
            )
            .map(|r| r.get(0))
            .map_err(pg_err)
        })?;
        Ok(r.map(instant_us))
    }

    fn node_alive(
        &self,
        campaign: &str,
        node: &str,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<u32> {
        let (now, since) = (micros(now), micros(since));
        let n: i64 = self.tx(|t| {
            t.execute(
                "INSERT INTO crieur_nodes (campaign, node, seen_us) VALUES ($1, $2, $3) \
                 ON CONFLICT (campaign, node) DO UPDATE SET seen_us = EXCLUDED.seen_us",
                &[&campaign, &node, &now],
            )
            .map_err(pg_err)?;
            t.query_one(
                "SELECT count(*) FROM crieur_nodes WHERE campaign = $1 AND (seen_us >= $2 OR node = $3)",
                &[&campaign, &since, &node],
            )
            .map(|r| r.get(0))
            .map_err(pg_err)
        })?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX).max(1))
    }

    fn node_seen(&self, campaign: &str, node: &str) -> Result<Option<DateTime<Utc>>> {
        let r = self.with(|c| {
            c.query_opt(
                "SELECT seen_us FROM crieur_nodes WHERE campaign = $1 AND node = $2",
                &[&campaign, &node],
            )
            .map_err(pg_err)
        })?;
        r.map(|r| {
            let us: i64 = r.get(0);
            DateTime::from_timestamp_micros(us).ok_or_else(|| Error::Corrupt {
                key: format!("node {node} of campaign {campaign}"),
                why: format!("instant {us} is not a date"),
            })
        })
        .transpose()
    }

    fn progress(&self, campaign: &str) -> Result<Progress> {
        let r = self.with(|c| {
            c.query_opt(
                "SELECT remaining, done FROM crieur_progress WHERE campaign = $1",
                &[&campaign],
            )
            .map_err(pg_err)
        })?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(r.map_or(Progress::default(), |r| Progress {
            remaining: n(r.get(0)),
            done: n(r.get(1)),
        }))
    }
}

/// Removes a lease (only the one of call `call`, if given) and records its attempt, in the
/// caller's transaction. `None` if there was no such lease.
fn close_lease(
    t: &mut Transaction<'_>,
    campaign: &str,
    contact: &str,
    call: Option<&str>,
    hash: Option<&[u8]>,
    outcome: Outcome,
    ended_us: i64,
) -> Result<Option<AttemptRecord>> {
    let row = t
        .query_opt(
            "DELETE FROM crieur_leases WHERE campaign = $1 AND contact = $2 \
             AND ($3::text IS NULL OR call = $3) \
             RETURNING at_us, number_hash, call",
            &[&campaign, &contact, &call],
        )
        .map_err(pg_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let stored_hash: Vec<u8> = row.get(1);
    let a = AttemptRecord {
        campaign: campaign.to_owned(),
        contact: contact.to_owned(),
        started: instant_us(row.get(0)),
        ended: instant_us(ended_us),
        outcome,
        call: row.get(2),
    };
    insert_attempt(t, hash.unwrap_or(&stored_hash), &a)?;
    Ok(Some(a))
}

fn insert_attempt(
    c: &mut impl postgres::GenericClient,
    hash: &[u8],
    a: &AttemptRecord,
) -> Result<u64> {
    c.execute(
        "INSERT INTO crieur_attempts \
         (number_hash, started_us, ended_us, campaign, contact, outcome, call) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &hash,
            &micros(a.started),
            &micros(a.ended),
            &a.campaign,
            &a.contact,
            &a.outcome.name(),
            &a.call,
        ],
    )
    .map_err(pg_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(
            redact("postgres://crieur:s3cret@db.example:5432/crieur"),
            "postgres://crieur:***@db.example:5432/crieur"
        );
        assert_eq!(
            redact("postgres://crieur@db/crieur"),
            "postgres://crieur@db/crieur"
        );
        assert_eq!(
            redact("host=db user=crieur password=s3cret dbname=x"),
            "host=db user=crieur password=*** dbname=x"
        );
    }
}
