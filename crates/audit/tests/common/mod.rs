//! What the audit tests share: instants, the FR policy, contacts, a run header.

#![allow(dead_code)] // each test file uses its part

use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_audit::build::{caps_snapshot, policy_snapshot};
use crieur_audit::record::*;
use crieur_engine::CapRules;
use crieur_scheduler::{ConsentRecord, Contact, ContactId, Policy, RuleSet};

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// FR rules, no schedule, 20 s ring timeout, 10 s message.
pub fn policy() -> Policy {
    Policy::new(
        RuleSet::by_name("FR").unwrap_or_else(|e| panic!("{e}")),
        None,
        Duration::from_secs(20),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A contact with one consent (granted 2027-01-01) to `windows`.
pub fn contact_with(id: &str, number: &str, windows: &str, source: &str, proof: &str) -> Contact {
    Contact::new(
        ContactId::new(id).unwrap_or_else(|e| panic!("{e}")),
        number.parse().unwrap_or_else(|e| panic!("{e}")),
        None,
        vec![ConsentRecord {
            windows: windows.parse().unwrap_or_else(|e| panic!("{e}")),
            granted_at: t("2027-01-01T00:00:00Z"),
            expires_at: None,
            revoked_at: None,
            source: source.into(),
            proof: proof.into(),
        }],
    )
}

pub fn retry(outcome: &str, delay_secs: u64, max_retries: u32) -> RetrySnapshot {
    RetrySnapshot {
        outcome: outcome.into(),
        delay_secs,
        max_retries,
    }
}

/// The run header of campaign `campaign` under [`policy`] (zone Europe/Paris), FR caps and
/// the engine's default retry rules, as a campaign without `[retry]` records them.
pub fn header(campaign: &str) -> RunHeader {
    RunHeader {
        format: FORMAT_VERSION,
        command: "test".into(),
        node: None,
        software: "crieur-test".into(),
        campaign: Some(campaign.into()),
        campaign_name: None,
        campaign_file: None,
        campaign_sha256: None,
        campaign_toml: Some(format!("name = \"{campaign}\"\n")),
        policy: Some(policy_snapshot(
            &policy(),
            "Europe/Paris",
            Duration::from_secs(20),
            Duration::from_secs(10),
        )),
        caps: Some(caps_snapshot(&CapRules::for_ruleset("FR", 3))),
        retry: vec![
            retry("busy", 1800, 3),
            retry("no-answer", 4 * 3600, 3),
            retry("failed", 900, 2),
            retry("rejected", 86_400, 0),
            retry("machine", 86_400, 1),
            retry("interrupted", 600, 2),
        ],
        opt_out_key: Some('9'),
        audio: vec![],
        tzdb_version: crieur_scheduler::tzdb_version().into(),
        phone_tz_map_version: crieur_scheduler::phone_tz_map_version().into(),
    }
}

/// A recorded outcome by the name a store or a log holds.
pub fn named(name: &str) -> Outcome {
    name.parse().unwrap_or_else(|e| panic!("{e}"))
}

/// A decision of campaign `t` at `now` for `c`, as the scheduler makes it (first attempt, not
/// opted out).
pub fn decision(c: &Contact, now: DateTime<Utc>, history: Vec<PastAttempt>) -> Record {
    let d = crieur_scheduler::decide(c, &policy(), now);
    Record::Decision(Box::new(crieur_audit::build::decision_record(
        c,
        &d,
        crieur_audit::build::DecisionInputs {
            campaign: "t",
            now,
            history,
            opted_out: false,
            refused: None,
            attempt: 1,
        },
    )))
}
