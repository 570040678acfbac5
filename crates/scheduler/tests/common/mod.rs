//! Helpers shared by the scheduler's integration tests.
#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_scheduler::*;

pub fn t(s: &str) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(s) {
        Ok(d) => d.with_timezone(&Utc),
        Err(e) => panic!("bad test instant {s}: {e}"),
    }
}

pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("test input: {e}"),
    }
}

pub struct Consent<'a> {
    pub windows: &'a str,
    pub granted: &'a str,
    pub expires: Option<&'a str>,
    pub revoked: Option<&'a str>,
}

pub const ALWAYS: Consent<'static> = Consent {
    windows: "daily 00:00-24:00",
    granted: "2020-01-01T00:00:00Z",
    expires: None,
    revoked: None,
};

pub fn consent(windows: &str) -> Consent<'_> {
    Consent { windows, ..ALWAYS }
}

pub fn contact(phone: &str, zone: Option<&str>, consents: &[Consent]) -> Contact {
    let records = consents
        .iter()
        .map(|c| ConsentRecord {
            windows: ok(c.windows.parse()),
            granted_at: t(c.granted),
            expires_at: c.expires.map(t),
            revoked_at: c.revoked.map(t),
            source: "test".into(),
            proof: "test".into(),
        })
        .collect();
    Contact::new(
        ok(ContactId::new("c")),
        ok(phone.parse()),
        zone.map(|z| ok(parse_zone(z))),
        records,
    )
}

pub fn policy(ruleset: &str, cron: &[&str], cron_zone: &str, d_secs: u64) -> Policy {
    let schedule = if cron.is_empty() {
        None
    } else {
        let exprs = cron.iter().map(|c| ok(c.parse())).collect();
        Some(ok(CampaignSchedule::new(exprs, ok(parse_zone(cron_zone)))))
    };
    ok(Policy::new(
        ok(RuleSet::by_name(ruleset)),
        schedule,
        Duration::from_secs(d_secs),
        Duration::ZERO,
    ))
}

/// A short, stable name for a skip reason, with its zone where it has one.
pub fn kind(r: &SkipReason) -> String {
    match r {
        SkipReason::UnknownZone => "UnknownZone".into(),
        SkipReason::NoConsent => "NoConsent".into(),
        SkipReason::ConsentNotYetGranted { .. } => "ConsentNotYetGranted".into(),
        SkipReason::ConsentExpired { .. } => "ConsentExpired".into(),
        SkipReason::ConsentRevoked { .. } => "ConsentRevoked".into(),
        SkipReason::OutsideConsentWindow { zone, .. } => format!("OutsideConsentWindow({zone})"),
        SkipReason::NoSingleConsentCoversAllZones => "NoSingleConsentCoversAllZones".into(),
        SkipReason::OutsideLegalHours { zone, .. } => format!("OutsideLegalHours({zone})"),
        SkipReason::PublicHoliday { zone, .. } => format!("PublicHoliday({zone})"),
        SkipReason::OutsideCampaignSchedule { .. } => "OutsideCampaignSchedule".into(),
        SkipReason::CallWouldNotFit { .. } => "CallWouldNotFit".into(),
        other => format!("{other:?}"),
    }
}
