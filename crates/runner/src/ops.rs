//! What an operator does to a store outside a run, with its audit records: importing
//! contacts, changing the opt-out list. Each is its own run in the log (header, record,
//! stop), durable when it returns.

use std::path::Path;

use chrono::{DateTime, Utc};
use crieur_audit::record::{ImportRecord, OptOutListChange};
use crieur_audit::{AuditLog, Record};
use crieur_config::contacts::Loaded;
use crieur_scheduler::E164;
use crieur_store::{ImportStats, Store};

use crate::Result;

/// The contacts `loaded` from `file` (`rejected` rows left out) written into campaign
/// `campaign` of `store`, and said so in `log` after `header`.
#[allow(clippy::too_many_arguments)]
pub fn import_contacts(
    store: &dyn Store,
    log: &mut AuditLog,
    header: &Record,
    campaign: &str,
    file: &Path,
    loaded: &Loaded,
    rejected: usize,
    now: DateTime<Utc>,
) -> Result<ImportStats> {
    log.append(now, header)?;
    store.expect_contacts(campaign, loaded.contacts.len())?;
    let stats = store.upsert_contacts(campaign, &loaded.contacts)?;
    log.append(
        now,
        &Record::Import(ImportRecord {
            campaign: campaign.to_owned(),
            file: file.display().to_string(),
            sha256: hex::encode(loaded.sha256),
            rows: loaded.rows + rejected,
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
