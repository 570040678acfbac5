use thiserror::Error;

/// Everything that can be wrong with the scheduler's inputs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// A consent-window or legal-hours expression does not follow the grammar.
    #[error("invalid window `{input}` at column {column}: expected {expected}")]
    InvalidWindow {
        input: String,
        /// 1-based character column within `input`.
        column: usize,
        expected: &'static str,
    },
    /// A phone number is not a valid E.164 number.
    #[error("invalid phone number `{input}`: {reason}")]
    InvalidPhone { input: String, reason: &'static str },
    /// A zone name is not in the IANA time-zone database.
    #[error("unknown time zone `{input}`: expected an IANA zone name such as Europe/Paris")]
    UnknownZoneName { input: String },
    /// A campaign cron expression is malformed.
    #[error("invalid cron expression `{expr}`: {reason}")]
    InvalidCron { expr: String, reason: String },
    /// A schedule was given with no expression in it.
    #[error("empty campaign schedule: give at least one cron expression, or none at all")]
    EmptySchedule,
    /// No rule set has this name.
    #[error("unknown rule set `{name}`: expected one of FR, US, none")]
    UnknownRuleSet { name: String },
    /// Ring timeout + message length is longer than the policy accepts.
    #[error(
        "ring timeout + message length is {secs} s; at most {} s is accepted",
        crate::policy::MAX_CALL_DURATION_SECS
    )]
    CallTooLong { secs: u64 },
    /// A contact identifier is empty.
    #[error("empty contact id")]
    EmptyContactId,
}

/// Parses an IANA zone name.
pub fn parse_zone(s: &str) -> Result<chrono_tz::Tz, Error> {
    s.parse().map_err(|_| Error::UnknownZoneName {
        input: s.to_owned(),
    })
}
