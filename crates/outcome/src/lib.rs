//! One outcome value from a call's end to the planner. [`CallOutcome`] is how a call ended
//! (the media layer's answer); [`Outcome`] is what the store keeps with each attempt and the
//! audit log's `outcome` record carries — a call's outcome, marked a trunk fault when it uses
//! up no attempt, a local error, or a scheduling outcome recorded as such (recovery's
//! `interrupted`, logs built from a simulation); [`AttemptOutcome`] is what the planner makes
//! of it ([`Outcome::scheduled`]).
//!
//! On disk an [`Outcome`] is its name ([`Outcome::name`]), exactly as before this type
//! existed, so stores and logs written earlier read the same (and hash the same). A name
//! is parsed once, where a store entry or a log line is read; a name this crate does not know
//! is an error ([`UnknownOutcome`]) there, not a guess: the audit log is evidence, and
//! counting an unknown outcome as some known one would make replay's verdict on caps and
//! retries up to this crate's guess.
//!
//! This crate depends on no crate of ours, so media, the store, the engine and the audit
//! log all share it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// Answered, the whole message played.
    AnsweredCompleted,
    /// Answered, the opt-out key pressed and recorded.
    AnsweredOptedOut,
    /// Answered, the "not interested" key pressed: a refusal for this campaign (not an
    /// opt-out); the call ends at once.
    AnsweredNotInterested,
    /// Answered, the callee hung up before the message ended.
    HungUpMidMessage,
    /// 486 Busy Here / 600 Busy Everywhere.
    Busy,
    /// Ring timeout (CANCEL), 408 or 480.
    NoAnswer,
    /// 403, 603 and other refusals.
    Rejected,
    /// 404 / 484.
    NotFound,
    /// 5xx, timer B, transport error.
    TrunkFailure,
    /// The trunk refused our credentials: it kept challenging them (401/407), or answered
    /// 403 to the INVITE that carried them.
    AuthFailed,
    /// The callee accepts none of our codecs (488/606, or an answer without PCMU/PCMA).
    CodecMismatch,
    /// Answered, but the answer said the callee will not receive audio (`a=sendonly` or
    /// `a=inactive`, RFC 3264 §6.1): nothing was played, the call was hung up at once. Not a
    /// delivered message; retried like a failed call (the next attempt may be answered
    /// normally — a phone that answers on hold, an SBC's early state).
    MediaRefused,
    /// We stopped the call (shutdown).
    LocalShutdown,
    /// The opt-out key was pressed but could not be recorded durably: no confirmation was
    /// played. (The caller must treat the number as opted out and alert an operator.)
    OptOutFailed,
    /// Answered by a machine (`voicemail-drop`): the voicemail message played to its end after
    /// the beep (or the greeting's end).
    MachineMessageLeft,
    /// Answered by a machine and no voicemail message left: we hung up on it
    /// (`hang-up-on-machine`), or it hung up before the voicemail message ended.
    MachineHungUp,
    /// Answered by the network's announcement after a Special Information Tone saying the
    /// number cannot be reached as dialled (intercept, vacant code, ineffective other): the
    /// message stopped, no voicemail message, hung up. Not retried, like `not-found`.
    Intercepted,
    /// Answered by the network's announcement after a Special Information Tone saying the
    /// network could not complete the call now (reorder, no circuit): hung up; retried like a
    /// failed call (a temporary condition).
    InterceptedCongestion,
}

impl CallOutcome {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::AnsweredCompleted => "answered-completed",
            CallOutcome::AnsweredOptedOut => "answered-opted-out",
            CallOutcome::AnsweredNotInterested => "answered-not-interested",
            CallOutcome::HungUpMidMessage => "hung-up-mid-message",
            CallOutcome::Busy => "busy",
            CallOutcome::NoAnswer => "no-answer",
            CallOutcome::Rejected => "rejected",
            CallOutcome::NotFound => "not-found",
            CallOutcome::TrunkFailure => "trunk-failure",
            CallOutcome::AuthFailed => "auth-failed",
            CallOutcome::CodecMismatch => "codec-mismatch",
            CallOutcome::MediaRefused => "media-refused",
            CallOutcome::LocalShutdown => "local-shutdown",
            CallOutcome::OptOutFailed => "opt-out-failed",
            CallOutcome::MachineMessageLeft => "machine-message-left",
            CallOutcome::MachineHungUp => "machine-hung-up",
            CallOutcome::Intercepted => "intercepted",
            CallOutcome::InterceptedCongestion => "intercepted-congestion",
        }
    }

    /// The outcome of a final non-2xx response to the INVITE. `cancelled`: we had sent CANCEL
    /// after the ring timeout (so 487 means no answer).
    pub fn of_status(code: u16, cancelled: bool) -> CallOutcome {
        match code {
            487 if cancelled => CallOutcome::NoAnswer,
            486 | 600 => CallOutcome::Busy,
            408 | 480 => CallOutcome::NoAnswer,
            404 | 484 => CallOutcome::NotFound,
            401 | 407 => CallOutcome::AuthFailed,
            488 | 606 => CallOutcome::CodecMismatch,
            500..=599 => CallOutcome::TrunkFailure,
            _ => CallOutcome::Rejected,
        }
    }
}

impl fmt::Display for CallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CallOutcome {
    /// Every call outcome, in declaration order.
    pub const ALL: [CallOutcome; 18] = [
        CallOutcome::AnsweredCompleted,
        CallOutcome::AnsweredOptedOut,
        CallOutcome::AnsweredNotInterested,
        CallOutcome::HungUpMidMessage,
        CallOutcome::Busy,
        CallOutcome::NoAnswer,
        CallOutcome::Rejected,
        CallOutcome::NotFound,
        CallOutcome::TrunkFailure,
        CallOutcome::AuthFailed,
        CallOutcome::CodecMismatch,
        CallOutcome::MediaRefused,
        CallOutcome::LocalShutdown,
        CallOutcome::OptOutFailed,
        CallOutcome::MachineMessageLeft,
        CallOutcome::MachineHungUp,
        CallOutcome::Intercepted,
        CallOutcome::InterceptedCongestion,
    ];

    /// The outcome this name stands for ([`CallOutcome::as_str`]'s inverse).
    pub fn from_name(name: &str) -> Option<CallOutcome> {
        CallOutcome::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// The scheduling meaning of a call's outcome.
    pub fn scheduled(self) -> AttemptOutcome {
        match self {
            CallOutcome::AnsweredCompleted | CallOutcome::HungUpMidMessage => {
                AttemptOutcome::Answered
            }
            // A failed opt-out write is still the person's refusal.
            CallOutcome::AnsweredOptedOut | CallOutcome::OptOutFailed => AttemptOutcome::OptedOut,
            CallOutcome::AnsweredNotInterested => AttemptOutcome::NotInterested,
            CallOutcome::Busy => AttemptOutcome::Busy,
            CallOutcome::NoAnswer => AttemptOutcome::NoAnswer,
            // A number the network says cannot be reached as dialled is not dialled again.
            CallOutcome::Rejected | CallOutcome::NotFound | CallOutcome::Intercepted => {
                AttemptOutcome::Rejected
            }
            CallOutcome::MachineMessageLeft | CallOutcome::MachineHungUp => AttemptOutcome::Machine,
            CallOutcome::LocalShutdown => AttemptOutcome::Interrupted,
            CallOutcome::TrunkFailure
            | CallOutcome::AuthFailed
            | CallOutcome::CodecMismatch
            | CallOutcome::MediaRefused
            | CallOutcome::InterceptedCongestion => AttemptOutcome::Failed,
        }
    }
}

/// How an attempt ended, as far as scheduling is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// Answered; the message played (done).
    Answered,
    /// The opt-out key (done, for good).
    OptedOut,
    /// The configurable "not interested" key: a refusal (done; quiet period applies).
    NotInterested,
    Busy,
    NoAnswer,
    /// Trunk failure, codec mismatch …
    Failed,
    Rejected,
    /// Answered by a machine.
    Machine,
    /// The process stopped mid-call (crash recovery closes the call as this).
    Interrupted,
    /// The trunk refused the call before anything rang (auth failure, 5xx, timer B, no
    /// common codec): a trunk fault, not the contact's answer. Recorded as evidence, but it
    /// uses up none of the contact's attempts or caps; the contact is retried when dialling
    /// resumes. Recorded as `trunk-fault:<the call's outcome>` ([`TRUNK_FAULT_PREFIX`]).
    TrunkFault,
}

/// The recorded outcome of an attempt the trunk refused before anything rang starts with this
/// (e.g. `trunk-fault:auth-failed`, `trunk-fault:trunk-failure`).
pub const TRUNK_FAULT_PREFIX: &str = "trunk-fault:";

impl AttemptOutcome {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Answered => "answered",
            AttemptOutcome::OptedOut => "opted-out",
            AttemptOutcome::NotInterested => "not-interested",
            AttemptOutcome::Busy => "busy",
            AttemptOutcome::NoAnswer => "no-answer",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Rejected => "rejected",
            AttemptOutcome::Machine => "machine",
            AttemptOutcome::Interrupted => "interrupted",
            AttemptOutcome::TrunkFault => "trunk-fault",
        }
    }
    /// Answered, opted out or not interested: the campaign is done with the contact.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            AttemptOutcome::Answered | AttemptOutcome::OptedOut | AttemptOutcome::NotInterested
        )
    }
    /// Whether it uses up an attempt: counts toward the attempt cap, the rolling cap and the
    /// retry rules. Every outcome does but a trunk fault.
    pub fn counts(self) -> bool {
        self != AttemptOutcome::TrunkFault
    }

    /// The opt-out key or the not-interested key.
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            AttemptOutcome::OptedOut | AttemptOutcome::NotInterested
        )
    }
}

impl AttemptOutcome {
    /// Every scheduling outcome, in declaration order.
    pub const ALL: [AttemptOutcome; 10] = [
        AttemptOutcome::Answered,
        AttemptOutcome::OptedOut,
        AttemptOutcome::NotInterested,
        AttemptOutcome::Busy,
        AttemptOutcome::NoAnswer,
        AttemptOutcome::Failed,
        AttemptOutcome::Rejected,
        AttemptOutcome::Machine,
        AttemptOutcome::Interrupted,
        AttemptOutcome::TrunkFault,
    ];
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempt's outcome as the store and the audit log record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A call that ended; `trunk_fault`: the trunk refused it before anything rang and it uses
    /// up no attempt (recorded `trunk-fault:<outcome>`).
    Call {
        outcome: CallOutcome,
        trunk_fault: bool,
    },
    /// The call could not be placed: a local error (`local-error`).
    LocalError,
    /// A scheduling outcome recorded by its own name: recovery closes a call it cannot finish
    /// as `interrupted`; a log built from a simulation records what the planner was told.
    /// (`busy`, `no-answer` and `rejected` are also call outcomes' names: they read back as
    /// [`Outcome::Call`], with the same scheduling meaning.)
    Scheduled(AttemptOutcome),
}

impl Outcome {
    /// A counted call outcome.
    pub fn call(outcome: CallOutcome) -> Outcome {
        Outcome::Call {
            outcome,
            trunk_fault: false,
        }
    }

    /// The name recorded in the store and the audit log: `trunk-fault:<outcome>` for an
    /// uncounted trunk fault, `local-error`, the call's own outcome, or the scheduling
    /// outcome's name.
    pub fn name(self) -> String {
        self.to_string()
    }

    /// What the planner makes of it (retry rules, caps).
    pub fn scheduled(self) -> AttemptOutcome {
        match self {
            Outcome::Call {
                trunk_fault: true, ..
            } => AttemptOutcome::TrunkFault,
            Outcome::Call { outcome, .. } => outcome.scheduled(),
            Outcome::LocalError => AttemptOutcome::Failed,
            Outcome::Scheduled(o) => o,
        }
    }

    /// Whether it uses up an attempt ([`AttemptOutcome::counts`]).
    pub fn counts(self) -> bool {
        self.scheduled().counts()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Call {
                outcome,
                trunk_fault: true,
            } => write!(f, "{TRUNK_FAULT_PREFIX}{outcome}"),
            Outcome::Call { outcome, .. } => f.write_str(outcome.as_str()),
            Outcome::LocalError => f.write_str(LOCAL_ERROR),
            Outcome::Scheduled(o) => f.write_str(o.as_str()),
        }
    }
}

const LOCAL_ERROR: &str = "local-error";

/// A recorded outcome name no version of crieur writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown outcome {name:?}")]
#[non_exhaustive]
pub struct UnknownOutcome {
    /// The name as read.
    pub name: String,
}

impl FromStr for Outcome {
    type Err = UnknownOutcome;

    fn from_str(name: &str) -> Result<Outcome, UnknownOutcome> {
        if name == LOCAL_ERROR {
            return Ok(Outcome::LocalError);
        }
        if let Some(rest) = name.strip_prefix(TRUNK_FAULT_PREFIX) {
            return CallOutcome::from_name(rest)
                .map(|outcome| Outcome::Call {
                    outcome,
                    trunk_fault: true,
                })
                .ok_or_else(|| UnknownOutcome { name: name.into() });
        }
        if let Some(outcome) = CallOutcome::from_name(name) {
            return Ok(Outcome::call(outcome));
        }
        AttemptOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == name)
            .map(Outcome::Scheduled)
            .ok_or_else(|| UnknownOutcome { name: name.into() })
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Outcome, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_outcome() -> Vec<Outcome> {
        let mut all = vec![Outcome::LocalError];
        for o in CallOutcome::ALL {
            all.push(Outcome::call(o));
            all.push(Outcome::Call {
                outcome: o,
                trunk_fault: true,
            });
        }
        all.extend(AttemptOutcome::ALL.map(Outcome::Scheduled));
        all
    }

    /// Every name reads back as a value with the same name and the same scheduling meaning
    /// (the three scheduling names a call outcome shares read back as that call outcome).
    #[test]
    fn names_round_trip() {
        for o in every_outcome() {
            let back: Outcome = o.name().parse().unwrap_or_else(|e| panic!("{o:?}: {e}"));
            assert_eq!(back.name(), o.name());
            assert_eq!(back.scheduled(), o.scheduled(), "{o:?}");
            let json = serde_json::to_string(&o).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(json, format!("\"{}\"", o.name()));
            let de: Outcome = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(de, back);
        }
    }

    /// The names stores and logs hold today, and what the planner makes of them (the table the
    /// string mapping `from_record` used to apply).
    #[test]
    fn recorded_names_keep_their_meaning() {
        use AttemptOutcome as A;
        for (name, o) in [
            ("answered", A::Answered),
            ("answered-completed", A::Answered),
            ("hung-up-mid-message", A::Answered),
            ("opted-out", A::OptedOut),
            ("answered-opted-out", A::OptedOut),
            ("opt-out-failed", A::OptedOut),
            ("not-interested", A::NotInterested),
            ("answered-not-interested", A::NotInterested),
            ("busy", A::Busy),
            ("no-answer", A::NoAnswer),
            ("rejected", A::Rejected),
            ("not-found", A::Rejected),
            ("machine", A::Machine),
            ("machine-message-left", A::Machine),
            ("machine-hung-up", A::Machine),
            ("interrupted", A::Interrupted),
            ("local-shutdown", A::Interrupted),
            ("failed", A::Failed),
            ("trunk-failure", A::Failed),
            ("auth-failed", A::Failed),
            ("codec-mismatch", A::Failed),
            ("media-refused", A::Failed),
            ("intercepted", A::Rejected),
            ("intercepted-congestion", A::Failed),
            ("local-error", A::Failed),
            ("trunk-fault", A::TrunkFault),
            ("trunk-fault:auth-failed", A::TrunkFault),
            ("trunk-fault:trunk-failure", A::TrunkFault),
        ] {
            let parsed: Outcome = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parsed.scheduled(), o, "{name}");
            assert_eq!(parsed.name(), name);
        }
    }

    /// An unknown name is an error naming it, from `FromStr` and from serde alike.
    #[test]
    fn unknown_names_are_errors() {
        for name in [
            "",
            "Answered",
            "trunk-fault:",
            "trunk-fault:busy-ish",
            "recovered-x",
        ] {
            assert_eq!(
                name.parse::<Outcome>(),
                Err(UnknownOutcome { name: name.into() })
            );
            let e = serde_json::from_str::<Outcome>(&format!("\"{name}\""))
                .err()
                .map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains(&format!("{name:?}"))),
                "{name}: {e:?}"
            );
        }
    }
}
