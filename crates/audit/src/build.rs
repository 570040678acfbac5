//! Builds records from the scheduler's and the engine's values, so every producer (one call,
//! a campaign run) records decisions the same way.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use crieur_engine::{CapHit, CapRules, RetryPolicy};
use crieur_scheduler::{Contact, Decision, Policy, Reading, SkipReason};

use crate::record::{
    CapsSnapshot, ConsentSnapshot, DecisionRecord, PastAttempt, PolicySnapshot, Reason,
    RetrySnapshot, ZoneReading,
};

/// A wall-clock reading as the log writes it.
fn local(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

impl From<&SkipReason> for Reason {
    fn from(r: &SkipReason) -> Reason {
        match r {
            SkipReason::UnknownZone => Reason::UnknownZone,
            SkipReason::NoConsent => Reason::NoConsent,
            SkipReason::ConsentNotYetGranted {
                consent,
                granted_at,
            } => Reason::ConsentNotYetGranted {
                consent: *consent,
                granted_at: *granted_at,
            },
            SkipReason::ConsentExpired {
                consent,
                expires_at,
            } => Reason::ConsentExpired {
                consent: *consent,
                expires_at: *expires_at,
            },
            SkipReason::ConsentRevoked {
                consent,
                revoked_at,
            } => Reason::ConsentRevoked {
                consent: *consent,
                revoked_at: *revoked_at,
            },
            SkipReason::OutsideConsentWindow { zone, local: l } => Reason::OutsideConsentWindow {
                zone: zone.name().to_owned(),
                local: local(l),
            },
            SkipReason::NoSingleConsentCoversAllZones => Reason::NoSingleConsentCoversAllZones,
            SkipReason::OutsideLegalHours {
                zone,
                local: l,
                ruleset,
            } => Reason::OutsideLegalHours {
                zone: zone.name().to_owned(),
                local: local(l),
                ruleset: (*ruleset).to_owned(),
            },
            SkipReason::PublicHoliday { zone, date, name } => Reason::PublicHoliday {
                zone: zone.name().to_owned(),
                date: date.format("%Y-%m-%d").to_string(),
                name: (*name).to_owned(),
            },
            SkipReason::OutsideCampaignSchedule { zone, local: l } => {
                Reason::OutsideCampaignSchedule {
                    zone: zone.name().to_owned(),
                    local: local(l),
                }
            }
            SkipReason::CallWouldNotFit {
                allowed_until,
                call_duration_secs,
            } => Reason::CallWouldNotFit {
                allowed_until: *allowed_until,
                call_duration_secs: *call_duration_secs,
            },
            // A reason added to the scheduler after this was written: kept, as text.
            other => Reason::Text {
                text: format!("{other:?}"),
            },
        }
    }
}

impl From<&CapHit> for Reason {
    fn from(h: &CapHit) -> Reason {
        match h {
            CapHit::AttemptCap { made, max } => Reason::AttemptCap {
                made: *made,
                max: *max,
            },
            CapHit::RollingCap {
                recent,
                max,
                days,
                until,
            } => Reason::RollingCap {
                recent: *recent,
                max: *max,
                days: *days,
                until: *until,
            },
            CapHit::QuietAfterRefusal {
                refused_at,
                outcome,
                until,
            } => Reason::QuietAfterRefusal {
                refused_at: *refused_at,
                outcome: crate::record::Outcome::Scheduled(*outcome),
                until: *until,
            },
        }
    }
}

/// The policy as replay must rebuild it.
pub fn policy_snapshot(
    policy: &Policy,
    zone: &str,
    ring_timeout: Duration,
    message_length: Duration,
) -> PolicySnapshot {
    PolicySnapshot {
        ruleset: policy.ruleset().name().to_owned(),
        ruleset_version: policy.ruleset().version().to_owned(),
        zone: zone.to_owned(),
        schedule: policy
            .schedule()
            .map(|s| s.exprs().iter().map(|e| e.source().to_owned()).collect())
            .unwrap_or_default(),
        ring_timeout_ms: u64::try_from(ring_timeout.as_millis()).unwrap_or(u64::MAX),
        message_ms: u64::try_from(message_length.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The caps as replay must rebuild them.
pub fn caps_snapshot(caps: &CapRules) -> CapsSnapshot {
    const DAY: u64 = 86_400;
    CapsSnapshot {
        max_attempts: caps.max_attempts,
        rolling_max: caps.rolling.map(|r| r.0),
        rolling_days: caps.rolling.map(|r| r.1.as_secs() / DAY),
        quiet_days_after_refusal: caps.quiet_after_refusal.map(|q| q.as_secs() / DAY),
    }
}

/// The retry rules as a run header records them (replay rebuilds them by outcome name).
pub fn retry_snapshot(p: &RetryPolicy) -> Vec<RetrySnapshot> {
    [
        ("busy", p.busy),
        ("no-answer", p.no_answer),
        ("failed", p.failed),
        ("rejected", p.rejected),
        ("machine", p.machine),
        ("interrupted", p.interrupted),
    ]
    .into_iter()
    .map(|(name, r)| RetrySnapshot {
        outcome: name.into(),
        delay_secs: r.delay.as_secs(),
        max_retries: r.max_retries,
    })
    .collect()
}

fn reading(r: &Reading) -> ZoneReading {
    ZoneReading {
        zone: r.zone.name().to_owned(),
        utc_offset_secs: r.utc_offset,
        local: local(&r.local),
        window: r.window.map(|w| w.to_string()),
    }
}

/// What the caller knew besides the contact when deciding.
pub struct DecisionInputs<'a> {
    pub campaign: &'a str,
    pub now: DateTime<Utc>,
    pub history: Vec<PastAttempt>,
    pub opted_out: bool,
    /// Why the caller refused before the policy (opt-out list, a cap, a damaged history), if
    /// it did.
    pub refused: Option<Reason>,
    pub attempt: u32,
}

/// The decision record: the scheduler's decision (or the caller's refusal) and its inputs.
pub fn decision_record(
    contact: &Contact,
    decision: &Decision,
    inputs: DecisionInputs<'_>,
) -> DecisionRecord {
    let consents = contact
        .consents()
        .iter()
        .map(|c| ConsentSnapshot {
            windows: c.windows.to_string(),
            granted_at: c.granted_at,
            expires_at: c.expires_at,
            revoked_at: c.revoked_at,
            source: c.source.clone(),
            proof: c.proof.clone(),
        })
        .collect();
    let mut rec = DecisionRecord {
        campaign: inputs.campaign.to_owned(),
        contact: contact.id().to_string(),
        number: contact.phone().to_string(),
        now: inputs.now,
        given_zone: contact.given_zone().map(|z| z.name().to_owned()),
        consents,
        consents_sha256: None,
        history: inputs.history,
        opted_out: inputs.opted_out,
        verdict: String::new(),
        consent: None,
        readings: Vec::new(),
        ruleset: String::new(),
        ruleset_version: String::new(),
        valid_until: None,
        reasons: Vec::new(),
        next_eligible: None,
        attempt: inputs.attempt,
    };
    match decision {
        Decision::Dial(d) => {
            rec.verdict = "dial".into();
            rec.consent = Some(d.consent);
            rec.readings = d.readings.iter().map(reading).collect();
            rec.ruleset = d.ruleset.name.to_owned();
            rec.ruleset_version = d.ruleset.version.to_owned();
            rec.valid_until = Some(d.valid_until);
        }
        Decision::Skip(s) => {
            rec.verdict = "skip".into();
            rec.readings = s.readings.iter().map(reading).collect();
            rec.ruleset = s.ruleset.name.to_owned();
            rec.ruleset_version = s.ruleset.version.to_owned();
            rec.reasons = s.reasons.iter().map(Reason::from).collect();
            rec.next_eligible = s.next_eligible;
        }
    }
    if let Some(why) = inputs.refused {
        // Refused before dialling: a skip whatever the policy said (its readings kept).
        rec.verdict = "skip".into();
        rec.reasons.insert(0, why);
        rec.valid_until = None;
    }
    rec
}
