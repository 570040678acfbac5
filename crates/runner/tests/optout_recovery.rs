//! The crash windows of an API opt-out's two overlapping writes (the store's commit with its
//! pending entry, the audit record's fsync), closed at the owner's next start by
//! `ops::recover_opt_outs` — on sled and PostgreSQL. Each window is built on disk as a crash
//! would leave it: one of the two writes durable, the other not.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use crieur_audit::record::OptOutListChange;
use crieur_audit::{AuditLog, Entry, Options, Record};
use crieur_runner::ops::{log_id, recover_opt_outs, Recovered};
use crieur_scheduler::E164;
use crieur_store::{PendingOptOut, PgStore, SledStore, Store};

fn n(s: &str) -> E164 {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or_default()
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

const T0: i64 = 1_780_000_000;

fn open_log(dir: &Path) -> Mutex<AuditLog> {
    Mutex::new(ok(AuditLog::open(dir, Options::default())))
}

fn header() -> Record {
    ok(crieur_runner::header::header("serve", None))
}

/// The API's record of an opt-out, as `add_opt_outs` writes it.
fn api_record(numbers: &[&str], ticket: &str, at: i64) -> Record {
    Record::OptOutListChange(OptOutListChange {
        action: "add".into(),
        numbers: numbers.iter().map(|s| (*s).to_owned()).collect(),
        source: "api".into(),
        at: t(at),
        ticket: Some(ticket.into()),
        recovered: None,
    })
}

fn pending(log: &Mutex<AuditLog>, numbers: &[&str], ticket: &str, at: i64) -> PendingOptOut {
    let guard = ok(log.lock());
    let log = log_id(&guard);
    PendingOptOut {
        ticket: ticket.into(),
        log,
        numbers: numbers.iter().map(|s| (*s).to_owned()).collect(),
        at: t(at),
        source: "api".into(),
    }
}

/// Appends `records` durably (a crash after this keeps them).
fn write(log: &Mutex<AuditLog>, at: i64, records: &[Record]) {
    let mut l = ok(log.lock());
    for r in records {
        ok(l.append(t(at), r));
    }
    ok(l.commit());
}

fn changes(dir: &Path) -> Vec<OptOutListChange> {
    ok(crieur_audit::read_all(dir))
        .into_iter()
        .filter_map(|(_, _, e): (String, usize, Entry)| match e.record {
            Record::OptOutListChange(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// The log's chain is whole and replay finds nothing wrong in it.
fn log_is_clean(dir: &Path) {
    let v = ok(crieur_audit::verify(dir, &Default::default()));
    assert!(v.first_break.is_none(), "{:?}", v.first_break);
    let r = ok(crieur_audit::replay(dir));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
}

/// Crash after the store's commit, before the log's fsync: the store holds the opt-out and
/// its pending entry, the log has nothing of it. The start writes the record (`recovered:
/// store`) and forgets the entry; a second start finds nothing to do.
fn store_committed_log_lost(s: &dyn Store, dir: &Path) {
    let log = open_log(dir);
    write(&log, T0, &[header()]);
    let p = pending(&log, &["+33612345678"], "t-1", T0 + 1);
    assert_eq!(
        ok(s.add_opt_outs_pending(&[n("+33612345678")], &p, &mut || {})),
        1
    );
    let r = ok(recover_opt_outs(s, &log, t(T0 + 10)));
    assert_eq!(
        r,
        Recovered {
            audited: vec!["t-1".into()],
            stored: vec![]
        }
    );
    let c = changes(dir);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].numbers, vec!["+33612345678".to_owned()]);
    assert_eq!(
        c[0].at,
        t(T0 + 1),
        "the opt-out's own instant, not the recovery's"
    );
    assert_eq!(c[0].ticket.as_deref(), Some("t-1"));
    assert_eq!(c[0].recovered.as_deref(), Some("store"));
    assert!(ok(s.pending_opt_outs(&p.log)).is_empty());
    assert!(ok(s.is_opted_out(&n("+33612345678"))));
    drop(log);
    log_is_clean(dir);
    let log = open_log(dir);
    assert!(ok(recover_opt_outs(s, &log, t(T0 + 20))).is_empty());
    assert_eq!(changes(dir).len(), 1);
}

/// Crash after the log's fsync, before the store's commit: the log holds the record (its
/// run has no `run-stop`), the store nothing. The start writes the opt-out into the store
/// and a record (`recovered: log`) saying so; a second start finds nothing to do.
fn log_durable_store_lost(s: &dyn Store, dir: &Path) {
    let log = open_log(dir);
    write(
        &log,
        T0,
        &[
            header(),
            api_record(&["+33612345679", "+33612345670"], "t-2", T0),
        ],
    );
    // The other number was listed already (another path).
    ok(s.add_opt_outs(&[n("+33612345670")], t(T0 - 100), "letter"));
    let r = ok(recover_opt_outs(s, &log, t(T0 + 10)));
    assert_eq!(
        r,
        Recovered {
            audited: vec![],
            stored: vec!["t-2".into()]
        }
    );
    assert!(ok(s.is_opted_out(&n("+33612345679"))));
    let listed = ok(s.opt_outs());
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().any(|o| o.at == t(T0) && o.source == "api"),
        "the log's instant and source: {listed:?}"
    );
    let c = changes(dir);
    assert_eq!(c.len(), 2, "{c:?}");
    assert_eq!(
        c[1].numbers,
        vec!["+33612345679".to_owned()],
        "only the missing one"
    );
    assert_eq!(c[1].recovered.as_deref(), Some("log"));
    drop(log);
    log_is_clean(dir);
    let log = open_log(dir);
    assert!(ok(recover_opt_outs(s, &log, t(T0 + 20))).is_empty());
    assert_eq!(changes(dir).len(), 2);
}

/// Both writes durable, the pending entry not yet forgotten (a crash right after the
/// answer): nothing is written; the entry is forgotten. And an opt-out the log adds then
/// removes (the remove durable in the store too) is not brought back; nor is one before the
/// log's last `run-stop` (a run that ended cleanly answered each of its opt-outs).
fn nothing_lost_nothing_written(s: &dyn Store, dir: &Path) {
    let log = open_log(dir);
    write(
        &log,
        T0,
        &[
            header(),
            api_record(&["+33612345601"], "old", T0),
            Record::RunStop(crieur_audit::record::RunStop {
                reason: "done".into(),
            }),
            header(),
            api_record(&["+33612345602"], "t-3", T0 + 1),
            api_record(&["+33612345603"], "t-4", T0 + 2),
            Record::OptOutListChange(OptOutListChange {
                action: "remove".into(),
                numbers: vec!["+33612345603".into()],
                source: "api".into(),
                at: t(T0 + 3),
                ticket: None,
                recovered: None,
            }),
        ],
    );
    let p = pending(&log, &["+33612345602"], "t-3", T0 + 1);
    ok(s.add_opt_outs_pending(&[n("+33612345602")], &p, &mut || {}));
    // Another node's pending entry (a shared store): not this log's to recover.
    let mut other = pending(&log, &["+33612345604"], "t-5", T0 + 1);
    other.log = "/elsewhere/crieur.audit".into();
    ok(s.add_opt_outs_pending(&[n("+33612345604")], &other, &mut || {}));
    assert!(ok(recover_opt_outs(s, &log, t(T0 + 10))).is_empty());
    assert!(ok(s.pending_opt_outs(&p.log)).is_empty());
    assert_eq!(ok(s.pending_opt_outs(&other.log)).len(), 1);
    assert!(!ok(s.is_opted_out(&n("+33612345603"))));
    assert!(!ok(s.is_opted_out(&n("+33612345601"))));
    assert_eq!(changes(dir).len(), 4, "nothing written");
}

/// The store failed an opt-out (both tries) whose record is durable, and the owner then
/// stopped cleanly (its `run-stop` after the record): the note the API left next to the log
/// makes the next start roll it forward, and only it — another ticketed record before the
/// stop, not noted, is left alone. The note is then gone; a second start does nothing.
fn store_failed_then_clean_stop(s: &dyn Store, dir: &Path) {
    let log = open_log(dir);
    write(
        &log,
        T0,
        &[
            header(),
            api_record(&["+33612345611"], "answered", T0),
            api_record(&["+33612345612", "+33612345613"], "t-6", T0 + 1),
            Record::RunStop(crieur_audit::record::RunStop {
                reason: "SIGTERM".into(),
            }),
        ],
    );
    ok(crieur_runner::ops::note_unapplied(dir, "t-6", t(T0 + 1)));
    assert!(dir.join(crieur_runner::ops::UNAPPLIED).exists());
    // A start later on, after other runs that stopped cleanly.
    write(
        &log,
        T0 + 100,
        &[
            header(),
            Record::RunStop(crieur_audit::record::RunStop {
                reason: "done".into(),
            }),
        ],
    );
    let r = ok(recover_opt_outs(s, &log, t(T0 + 200)));
    assert_eq!(
        r,
        Recovered {
            audited: vec![],
            stored: vec!["t-6".into()]
        }
    );
    assert!(ok(s.is_opted_out(&n("+33612345612"))));
    assert!(ok(s.is_opted_out(&n("+33612345613"))));
    assert!(
        !ok(s.is_opted_out(&n("+33612345611"))),
        "a record not noted is not rolled forward past a run-stop"
    );
    let c = changes(dir);
    assert_eq!(c.len(), 3, "{c:?}");
    assert_eq!(c[2].ticket.as_deref(), Some("t-6"));
    assert_eq!(c[2].recovered.as_deref(), Some("log"));
    assert_eq!(c[2].at, t(T0 + 1), "the opt-out's own instant");
    assert!(!dir.join(crieur_runner::ops::UNAPPLIED).exists());
    drop(log);
    log_is_clean(dir);
    let log = open_log(dir);
    assert!(ok(recover_opt_outs(s, &log, t(T0 + 300))).is_empty());
    assert_eq!(changes(dir).len(), 3);
}

macro_rules! backends {
    ($($name:ident),* $(,)?) => {
        mod sled_backend {
            $(
                #[test]
                fn $name() {
                    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                    let s = super::ok(super::SledStore::open(&d.path().join("s"), true));
                    super::$name(&s, &d.path().join("s.audit"));
                }
            )*
        }
        mod pg_backend {
            $(
                #[test]
                fn $name() {
                    let Some(db) = crieur_test_support::pg::PgDb::new() else { return };
                    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                    let s = super::ok(super::PgStore::open(&db.url, true));
                    super::$name(&s, &d.path().join("crieur.audit"));
                }
            )*
        }
    };
}

backends!(
    store_committed_log_lost,
    log_durable_store_lost,
    nothing_lost_nothing_written,
    store_failed_then_clean_stop
);
