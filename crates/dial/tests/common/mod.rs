//! What the dial tests share: instants, a policy with no legal-hours limit, contacts with
//! consent at any hour, and opening a store just dropped in this process.
#![allow(dead_code)] // Each test file uses some of it.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_scheduler::{parse_zone, ConsentRecord, Contact, ContactId, Policy, RuleSet, Windows};
use crieur_store::SledStore;

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Rule set `none`, 20 s of ringing, a 30 s message.
pub fn policy() -> Policy {
    Policy::new(
        RuleSet::by_name("none").unwrap_or_else(|e| panic!("{e}")),
        None,
        Duration::from_secs(20),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Contact `c<k>` has number `+336123456<numbers[k]>` (entries may repeat: two contacts, one
/// number) and consent at any hour.
pub fn contacts(numbers: &[u8]) -> Vec<Contact> {
    numbers
        .iter()
        .enumerate()
        .map(|(k, n)| {
            Contact::new(
                ContactId::new(format!("c{k}")).unwrap_or_else(|e| panic!("{e}")),
                format!("+336123456{n:02}")
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
                Some(parse_zone("Europe/Paris").unwrap_or_else(|e| panic!("{e}"))),
                vec![ConsentRecord {
                    windows: "mon-sun 00:00-24:00"
                        .parse::<Windows>()
                        .unwrap_or_else(|e| panic!("{e}")),
                    granted_at: t("2027-01-01T00:00:00Z"),
                    expires_at: None,
                    revoked_at: None,
                    source: "test".into(),
                    proof: "test".into(),
                }],
            )
        })
        .collect()
}

/// Opens the store at `path`. A store just dropped in this process may keep its file lock a
/// moment (sled releases it from a background thread): the open is retried while that lock
/// is held, and only then (the store's own tests do the same).
pub fn open(path: &Path, create: bool) -> SledStore {
    for _ in 0..500 {
        match SledStore::open(path, create) {
            Ok(s) => return s,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{}: still locked after 5 s", path.display())
}
