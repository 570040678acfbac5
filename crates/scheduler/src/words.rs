//! Decisions in words, for people: why a contact is skipped, what the clock reads in a zone,
//! which zones a contact is called in. The CLI prints these; an API can return them.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::{phone_tz_map_version, Contact, Reading, SkipReason, ZoneSource};

fn instant(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `Code: what it means`, e.g. `ConsentExpired: consent #0 expired at 2027-01-01T00:00:00Z`.
impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::UnknownZone => f.write_str("UnknownZone: no time zone is known for this number; give one in the `zone` column"),
            SkipReason::NoConsent => f.write_str("NoConsent: the contact has no consent record"),
            SkipReason::ConsentNotYetGranted { consent, granted_at } => write!(
                f,
                "ConsentNotYetGranted: consent #{consent} is granted only from {}",
                instant(granted_at)
            ),
            SkipReason::ConsentExpired { consent, expires_at } => write!(
                f,
                "ConsentExpired: consent #{consent} expired at {}",
                instant(expires_at)
            ),
            SkipReason::ConsentRevoked { consent, revoked_at } => write!(
                f,
                "ConsentRevoked: consent #{consent} was revoked at {}",
                instant(revoked_at)
            ),
            SkipReason::OutsideConsentWindow { zone, local } => {
                write!(f, "OutsideConsentWindow: {local} in {zone} is in no consented window")
            }
            SkipReason::NoSingleConsentCoversAllZones => f.write_str("NoSingleConsentCoversAllZones: no one consent record in force covers the time in every zone"),
            SkipReason::OutsideLegalHours { zone, local, ruleset } => write!(
                f,
                "OutsideLegalHours: {local} in {zone} is outside the {ruleset} legal hours"
            ),
            SkipReason::PublicHoliday { zone, date, name } => {
                write!(f, "PublicHoliday: {date} in {zone} is a public holiday ({name})")
            }
            SkipReason::OutsideCampaignSchedule { zone, local } => write!(
                f,
                "OutsideCampaignSchedule: the campaign schedule does not hold at {local} ({zone})"
            ),
            SkipReason::CallWouldNotFit { allowed_until, call_duration_secs } => write!(
                f,
                "CallWouldNotFit: calling is allowed until {}, less than the {call_duration_secs} s a call may take",
                instant(allowed_until)
            ),
        }
    }
}

/// `Europe/Paris: Mon 2027-03-08 10:00:00 (UTC+01:00), in window `mon-fri 09:00-12:00``.
impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let off = self.utc_offset;
        let sign = if off < 0 { '-' } else { '+' };
        let abs = off.unsigned_abs();
        write!(
            f,
            "{}: {} {} (UTC{sign}{:02}:{:02})",
            self.zone,
            self.local.format("%a"),
            self.local.format("%Y-%m-%d %H:%M:%S"),
            abs / 3600,
            abs % 3600 / 60,
        )?;
        match self.window {
            Some(w) => write!(f, ", in window `{w}`"),
            None => Ok(()),
        }
    }
}

impl Contact {
    /// What `check` warns about a contact's zones: none known (never called), or several
    /// (called only when all allow it).
    pub fn zone_warning(&self) -> Option<String> {
        match self.zones().0.len() {
            0 => Some("no time zone known for its number: it will never be called; give a zone".into()),
            1 => None,
            n => Some(format!("its number may be in {n} zones; calls only when allowed in every one (give a zone to lift this)")),
        }
    }

    /// The zones the contact is called in, and where they come from.
    pub fn describe_zones(&self) -> String {
        let (zones, source) = self.zones();
        let names: Vec<String> = zones.iter().map(|z| z.to_string()).collect();
        match source {
            ZoneSource::Given => format!("{} (given)", names.join(", ")),
            ZoneSource::Number if zones.is_empty() => format!(
                "unknown (no zone for this number in libphonenumber {})",
                phone_tz_map_version()
            ),
            ZoneSource::Number => format!(
                "{} (from the number, libphonenumber {}{})",
                names.join(", "),
                phone_tz_map_version(),
                if zones.len() > 1 {
                    "; calls only when allowed in every one"
                } else {
                    ""
                }
            ),
        }
    }
}
