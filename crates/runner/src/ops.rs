//! What an operator does to a store outside a run, with its audit records: importing
//! contacts, changing the opt-out list. Each is its own run in the log (header, record,
//! stop), durable when it returns.

use std::path::Path;

use chrono::{DateTime, Utc};
use crieur_audit::record::{ImportRecord, OptOutListChange};
use crieur_audit::{AuditLog, Record};
use crieur_config::contacts::Loaded;
use crieur_config::split::Split;
use crieur_scheduler::E164;
use crieur_store::{ImportStats, Store};

use crate::Result;

/// The contacts an import writes.
pub enum Source<'a> {
    /// Loaded whole, `rejected` rows left out.
    Loaded { loaded: &'a Loaded, rejected: usize },
    /// A file split by contact id, every part validated beforehand ([`Split::validate`]):
    /// written a part at a time (memory: one part, whatever the file's size). Each part is
    /// written in atomic batches as any import; a failure mid-way (I/O) leaves the parts
    /// before it written, and running the import again completes it.
    Split(&'a Split),
}

impl<'a> Source<'a> {
    /// The split file if there is one, else the loaded contacts.
    pub fn of(split: Option<&'a Split>, loaded: &'a Loaded, rejected: usize) -> Source<'a> {
        match split {
            Some(s) => Source::Split(s),
            None => Source::Loaded { loaded, rejected },
        }
    }
}

/// `crieur import`'s all-or-nothing read of `path`: split by contact id into parts under
/// the temp directory (one per 32 MiB of file, aligned with the store's buckets), every
/// part validated — its never-callable contacts into `never` — before anything is written.
pub fn split_contacts(
    path: &Path,
    opts: &crieur_config::contacts::Options,
    campaign: &crieur_config::campaign::Campaign,
    now: DateTime<Utc>,
    progress: Option<&dyn crieur_config::contacts::Progress>,
    never: &mut crieur_config::text::NeverWarnings,
) -> std::result::Result<Split, crieur_config::input::InputErrors> {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let parts = ((size >> 25) as usize + 1).next_power_of_two();
    let dir = std::env::temp_dir().join(format!(
        "crieur-import-{}-{}",
        std::process::id(),
        now.timestamp_micros()
    ));
    let part = |id: &str| crieur_store::import_part(id, parts);
    let split = crieur_config::split::split(path, opts, parts, &part, &dir, progress)?;
    split.validate(|l| never.add(campaign, &l.contacts, now))?;
    Ok(split)
}

/// The contacts of `source`, read from `file`, written into campaign `campaign` of
/// `store`, and said so in `log` after `header`.
pub fn import_contacts(
    store: &dyn Store,
    log: &mut AuditLog,
    header: &Record,
    campaign: &str,
    file: &Path,
    source: Source<'_>,
    now: DateTime<Utc>,
) -> Result<ImportStats> {
    log.append(now, header)?;
    let (stats, rows, rejected, sha256) = match source {
        Source::Loaded { loaded, rejected } => {
            store.expect_contacts(campaign, loaded.contacts.len())?;
            let stats = store.upsert_contacts(campaign, &loaded.contacts)?;
            (stats, loaded.rows, rejected, loaded.sha256)
        }
        Source::Split(split) => {
            store.expect_contacts(campaign, split.rows)?;
            let mut stats = ImportStats::default();
            let mut failed = None;
            // Each part written while the next ones are parsed on the other cores.
            split.each_loaded(|_, part| {
                match part
                    .map_err(crate::Error::from)
                    .and_then(|l| Ok(store.upsert_contacts(campaign, &l.contacts)?))
                {
                    Ok(s) => {
                        stats.created += s.created;
                        stats.updated += s.updated;
                        stats.consents_added += s.consents_added;
                        true
                    }
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            (stats, split.rows, 0, split.sha256)
        }
    };
    log.append(
        now,
        &Record::Import(ImportRecord {
            campaign: campaign.to_owned(),
            file: file.display().to_string(),
            sha256: hex::encode(sha256),
            rows: rows + rejected,
            created: stats.created,
            updated: stats.updated,
            consents_added: stats.consents_added,
            rejected,
        }),
    )?;
    crieur_dial::session::record_stop(log, "import done", now)?;
    Ok(stats)
}

/// A change of the opt-out list (`action`: `add` or `remove`; the store already changed) in
/// `log`, after `header`.
pub fn record_opt_out_change(
    log: &mut AuditLog,
    header: &Record,
    action: &str,
    numbers: &[E164],
    source: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    log.append(at, header)?;
    log.append(
        at,
        &Record::OptOutListChange(OptOutListChange {
            action: action.into(),
            numbers: numbers.iter().map(ToString::to_string).collect(),
            source: source.into(),
            at,
            ticket: None,
            recovered: None,
        }),
    )?;
    crieur_dial::session::record_stop(log, "optout done", at)?;
    Ok(())
}

/// How a store names an audit log in its pending opt-outs ([`crieur_store::PendingOptOut`]):
/// the log's directory, absolute.
pub fn log_id(log: &AuditLog) -> String {
    std::path::absolute(log.dir())
        .unwrap_or_else(|_| log.dir().to_path_buf())
        .display()
        .to_string()
}

/// What [`recover_opt_outs`] did at an owner's start (tickets).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Opt-outs the store held and the log lacked: their audit records written now.
    pub audited: Vec<String>,
    /// Opt-outs the log held and the store lacked: written into the store now.
    pub stored: Vec<String>,
}

impl Recovered {
    /// Nothing was recovered.
    pub fn is_empty(&self) -> bool {
        self.audited.is_empty() && self.stored.is_empty()
    }
}

/// Bytes at a record line's start that hold its `type` (after `seq`, `ts` and `prev`).
const LINE_HEAD: usize = 192;

/// How far before its store entry's instant an opt-out's audit record is looked for.
const RECOVERY_MARGIN_SECS: i64 = 60;

/// The file, in the audit log's directory, naming the API opt-outs whose audit record is
/// durable but which the store failed (both tries; the API answered 500): one JSON line
/// each, `{"ticket": …, "at": …}`, written durably before that answer. [`recover_opt_outs`]
/// rolls them forward at the owner's next start — after a clean stop too, when the record is
/// older than the log's last `run-stop` — then removes the file.
pub const UNAPPLIED: &str = "optouts-unapplied.jsonl";

/// One line of [`UNAPPLIED`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Unapplied {
    ticket: String,
    at: DateTime<Utc>,
}

/// Notes, durably, in [`UNAPPLIED`] in the log directory `dir`, that the opt-out of the audit
/// record `ticket` (appended at `at`) is not in the store.
pub fn note_unapplied(dir: &Path, ticket: &str, at: DateTime<Utc>) -> Result<()> {
    use std::io::Write as _;
    let path = dir.join(UNAPPLIED);
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| crate::Error::Io { what, source }
    };
    let mut line = serde_json::to_vec(&Unapplied {
        ticket: ticket.to_owned(),
        at,
    })
    .map_err(|e| crate::Error::Io {
        what: format!("encoding a line of {}", path.display()),
        source: std::io::Error::other(e),
    })?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io("opening"))?;
    f.write_all(&line).map_err(io("writing"))?;
    f.sync_all().map_err(io("syncing"))?;
    // The file's name, durable in its directory.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing the directory of"))?;
    Ok(())
}

/// The lines of [`UNAPPLIED`] in `dir` (none when there is no such file; a malformed line —
/// a crash in its write — is skipped).
fn unapplied(dir: &Path) -> Result<Vec<Unapplied>> {
    let path = dir.join(UNAPPLIED);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(crate::Error::Io {
                what: format!("reading {}", path.display()),
                source,
            })
        }
    };
    Ok(bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| match serde_json::from_slice(l) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::warn!(error = %e, file = %path.display(), "a malformed line skipped");
                None
            }
        })
        .collect())
}

/// At an owner's start, before it serves: closes the window a crash leaves between the two
/// overlapping writes of an API opt-out (the store's commit, with a [`PendingOptOut`]
/// entry, and the audit record's fsync; the answer waits for both), and rolls forward the
/// opt-outs the store failed while the log holds them ([`UNAPPLIED`]).
///
/// - The store holds a pending entry of this log whose record (its `ticket`) the log lacks:
///   the record is written now, `recovered: store`. Then the entry is forgotten.
/// - The log holds an API opt-out (a record with a `ticket`) written since its last
///   `run-stop` (a crash ends a run without one) whose numbers the store lacks (and that no
///   later record of the log removed): they are written into the store now, and a record
///   `recovered: log` says so. The audit log is the proof; the store follows it. The same
///   for a record named in [`UNAPPLIED`], wherever it is in the log's tail.
///
/// Records are written as their own run (header, records, stop), durable when it returns.
/// Reads the log backwards from its end only as far as it must: to its last `run-stop`,
/// and to a minute before the oldest pending entry or unapplied opt-out.
///
/// [`PendingOptOut`]: crieur_store::PendingOptOut
pub fn recover_opt_outs(
    store: &dyn Store,
    log: &std::sync::Mutex<AuditLog>,
    now: DateTime<Utc>,
) -> Result<Recovered> {
    let (id, dir) = {
        let l = log
            .lock()
            .map_err(|_| crate::Error::Poisoned("audit log"))?;
        (log_id(&l), l.dir().to_path_buf())
    };
    let pending = store.pending_opt_outs(&id)?;
    let unapplied = unapplied(&dir)?;
    let cutoff = pending
        .iter()
        .map(|p| p.at)
        .chain(unapplied.iter().map(|u| u.at))
        .min()
        .map(|t| t - chrono::Duration::seconds(RECOVERY_MARGIN_SECS));
    let tail = tail_changes(&dir, cutoff)?;
    let mut out = Recovered::default();
    let mut records = Vec::new();
    for p in &pending {
        if !tail
            .iter()
            .any(|(_, c)| c.ticket.as_ref() == Some(&p.ticket))
        {
            out.audited.push(p.ticket.clone());
            records.push(OptOutListChange {
                action: "add".into(),
                numbers: p.numbers.clone(),
                source: p.source.clone(),
                at: p.at,
                ticket: Some(p.ticket.clone()),
                recovered: Some("store".into()),
            });
        }
    }
    for (i, (after_stop, c)) in tail.iter().enumerate() {
        let (Some(ticket), None, "add") = (&c.ticket, &c.recovered, c.action.as_str()) else {
            continue;
        };
        if !after_stop && !unapplied.iter().any(|u| &u.ticket == ticket) {
            continue;
        }
        let removed_later = |n: &String| {
            tail[i + 1..]
                .iter()
                .any(|(_, l)| l.action == "remove" && l.numbers.contains(n))
        };
        let mut missing = Vec::new();
        for n in c.numbers.iter().filter(|n| !removed_later(n)) {
            let Ok(e) = n.parse::<E164>() else { continue };
            if !store.is_opted_out(&e)? {
                missing.push(e);
            }
        }
        if missing.is_empty() {
            continue;
        }
        store.add_opt_outs(&missing, c.at, &c.source)?;
        out.stored.push(ticket.clone());
        records.push(OptOutListChange {
            action: "add".into(),
            numbers: missing.iter().map(ToString::to_string).collect(),
            source: c.source.clone(),
            at: c.at,
            ticket: Some(ticket.clone()),
            recovered: Some("log".into()),
        });
    }
    if !records.is_empty() {
        let header = crate::header::header("optout-recovery", None)?;
        let mut l = log
            .lock()
            .map_err(|_| crate::Error::Poisoned("audit log"))?;
        l.append(now, &header)?;
        for r in records {
            l.append(now, &Record::OptOutListChange(r))?;
        }
        crieur_dial::session::record_stop(&mut l, "optout recovery done", now)?;
    }
    if !pending.is_empty() {
        let tickets: Vec<String> = pending.into_iter().map(|p| p.ticket).collect();
        store.clear_pending_opt_outs(&tickets)?;
    }
    if !unapplied.is_empty() {
        // Rolled forward, durably: lost, this removal only makes the next start look again.
        let path = dir.join(UNAPPLIED);
        std::fs::remove_file(&path).map_err(|source| crate::Error::Io {
            what: format!("removing {}", path.display()),
            source,
        })?;
    }
    Ok(out)
}

/// The opt-out list changes at the end of the log in `dir`, in log order, each with whether
/// it is after the log's last `run-stop`: those that are and, with a `cutoff`, every one at
/// or after it too.
fn tail_changes(
    dir: &Path,
    cutoff: Option<DateTime<Utc>>,
) -> Result<Vec<(bool, OptOutListChange)>> {
    #[derive(serde::Deserialize)]
    struct Ts {
        ts: DateTime<Utc>,
    }
    let mut found = Vec::new();
    let mut stopped = false;
    'segments: for (_, path) in crieur_audit::log::segments(dir)?.iter().rev() {
        let bytes = std::fs::read(path).map_err(|source| crate::Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        for line in bytes.split(|&b| b == b'\n').rev().filter(|l| !l.is_empty()) {
            // The type follows `seq`, `ts` and `prev` at the line's start.
            let head = &line[..line.len().min(LINE_HEAD)];
            let has = |s: &[u8]| head.windows(s.len()).any(|w| w == s);
            if stopped {
                let before = match cutoff {
                    None => true,
                    Some(c) => serde_json::from_slice::<Ts>(line).map_or(true, |t| t.ts < c),
                };
                if before {
                    break 'segments;
                }
            }
            if has(br#""type":"run-stop""#) {
                stopped = true;
            } else if has(br#""type":"opt-out-list-change""#) {
                if let Ok(crieur_audit::Entry {
                    record: Record::OptOutListChange(c),
                    ..
                }) = serde_json::from_slice(line)
                {
                    found.push((!stopped, c));
                }
            }
        }
    }
    found.reverse();
    Ok(found)
}
