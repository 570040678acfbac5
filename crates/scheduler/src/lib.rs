//! crieur's calling policy, sans I/O: when may a contact be dialled?
//!
//! A call may start at `t` only if every instant of `[t, t + D]` (D = ring timeout + message
//! length) reads, in **every** candidate zone of the contact, inside a window of one consent
//! record in force, inside the rule set's legal hours and not on a public holiday, while the
//! campaign schedule holds. See `docs/scheduling.md` for the full semantics.
//!
//! Time is an input: nothing here reads a clock.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use crieur_scheduler::*;
//! use std::time::Duration;
//!
//! let policy = Policy::new(RuleSet::by_name("FR")?, None, Duration::from_secs(25), Duration::from_secs(35))?;
//! let consent = ConsentRecord {
//!     windows: "mon-fri 18:00-20:00".parse()?,
//!     granted_at: Utc.with_ymd_and_hms(2027, 1, 10, 9, 0, 0).unwrap(),
//!     expires_at: None,
//!     revoked_at: None,
//!     source: "web form".into(),
//!     proof: "form-42".into(),
//! };
//! let c = Contact::new(ContactId::new("c1")?, "+33612345678".parse()?, None, vec![consent]);
//! // Monday 2027-03-01 18:30 in Paris (UTC+1) is 17:30 UTC.
//! let d = decide(&c, &policy, Utc.with_ymd_and_hms(2027, 3, 1, 17, 30, 0).unwrap());
//! assert!(d.is_dial());
//! # Ok::<(), crieur_scheduler::Error>(())
//! ```

mod contact;
mod decide;
mod error;
mod holidays;
mod interval;
mod phone;
mod policy;
mod ruleset;
mod schedule;
mod time;
mod window;
mod words;
mod zone;

pub use contact::{ConsentRecord, Contact, ContactId, ZoneSource, E164};
pub use decide::{
    decide, windows, Decision, Dial, Evaluator, Interval, Reading, RuleSetRef, Skip, SkipReason,
    NEXT_ELIGIBLE_HORIZON_DAYS,
};
pub use error::{parse_zone, Error};
pub use holidays::Holidays;
pub use policy::{Policy, MAX_CALL_DURATION_SECS};
pub use ruleset::RuleSet;
pub use schedule::{CampaignSchedule, CronExpr};
pub use window::{Window, Windows, WindowsCache};
pub use zone::{phone_tz_map_version, tzdb_version, zones_for};

/// Re-exported so callers name zones with the same type.
pub use chrono_tz::Tz;
