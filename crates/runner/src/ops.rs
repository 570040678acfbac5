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
        }),
    )?;
    crieur_dial::session::record_stop(log, "optout done", at)?;
    Ok(())
}
