//! A campaign's calling policy: the inputs of every decision that are not about the contact.

use std::time::Duration;

use crate::ruleset::RuleSet;
use crate::schedule::CampaignSchedule;
use crate::Error;

/// The longest call the policy accepts to fit into windows: 3 hours of ringing and message.
pub const MAX_CALL_DURATION_SECS: u64 = 3 * 3600;

/// Everything besides the contact and `now` that decides whether a call may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    ruleset: RuleSet,
    schedule: Option<CampaignSchedule>,
    /// D = ring timeout + message length, whole seconds rounded up.
    call_duration: i64,
}

impl Policy {
    /// A policy. `schedule = None` means the campaign may call at any time its rule set and
    /// the contacts' consent allow. The call-fit duration D is `ring_timeout + message_length`
    /// rounded up to whole seconds; it may not exceed [`MAX_CALL_DURATION_SECS`].
    pub fn new(
        ruleset: RuleSet,
        schedule: Option<CampaignSchedule>,
        ring_timeout: Duration,
        message_length: Duration,
    ) -> Result<Self, Error> {
        let d = ring_timeout.saturating_add(message_length);
        let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
        if secs > MAX_CALL_DURATION_SECS {
            return Err(Error::CallTooLong { secs });
        }
        Ok(Policy {
            ruleset,
            schedule,
            // secs <= MAX_CALL_DURATION_SECS, far below i64::MAX.
            call_duration: i64::try_from(secs).unwrap_or(0),
        })
    }

    /// The jurisdiction's rules.
    pub fn ruleset(&self) -> &RuleSet {
        &self.ruleset
    }
    /// The campaign schedule, if any.
    pub fn schedule(&self) -> Option<&CampaignSchedule> {
        self.schedule.as_ref()
    }
    /// D: how long a call may take from INVITE to the end of the message; a call starts only
    /// if every instant of `[t, t + D]` is allowed.
    pub fn call_duration(&self) -> Duration {
        // call_duration is non-negative by construction.
        Duration::from_secs(self.call_duration.unsigned_abs())
    }
    pub(crate) fn call_duration_secs(&self) -> i64 {
        self.call_duration
    }
}
