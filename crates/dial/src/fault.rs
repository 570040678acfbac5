//! Trunk faults seen from a finished call: what the breaker is told, and the outcome name the
//! store and the audit log record (a `trunk-fault:` name uses up no attempt).

use std::collections::HashMap;

use crieur_audit::record::{BreakerCause, TrunkBreaker};
use crieur_engine::{
    Breaker, BreakerConfig, BreakerState, CallVerdict, Cause, FaultKind, Transition, TrunkFault,
};
use crieur_media::call::Outcome;
use crieur_media::uac::CallReport;

/// The trunk fault a call ended with, if any: the trunk refused our credentials, did not
/// answer, failed (5xx), or no codec is common.
pub fn fault_of(r: &CallReport) -> Option<TrunkFault> {
    let status = r.ending.sip_status;
    let kind = match r.ending.outcome {
        Outcome::AuthFailed => FaultKind::Auth,
        Outcome::TrunkFailure if status.is_some_and(|s| (500..600).contains(&s)) => {
            FaultKind::ServerError
        }
        Outcome::TrunkFailure => FaultKind::Unreachable,
        Outcome::CodecMismatch => FaultKind::CodecMismatch,
        _ => return None,
    };
    Some(TrunkFault {
        kind,
        sip_status: status,
        detail: r.ending.reason.clone(),
    })
}

/// A call's task failed on our side (it panicked, or the SIP stack failed before the call
/// had an outcome): recorded as `local-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct LocalFailure {
    /// What failed, with its sources.
    pub why: String,
}

/// How a call ended, as the network reports it: its report, or why it failed on our side.
pub type CallEnd = Result<CallReport, LocalFailure>;

/// What a finished call (or its task's failure) tells the breaker.
pub fn verdict(r: &CallEnd) -> CallVerdict {
    match r {
        Err(_) => CallVerdict::Neutral,
        Ok(r) => match (fault_of(r), r.ending.outcome) {
            (Some(f), _) => CallVerdict::Fault(f),
            (None, Outcome::LocalShutdown) => CallVerdict::Neutral,
            (None, _) => CallVerdict::Served,
        },
    }
}

/// Whether the trunk refused the call before anything rang: a trunk fault with no 18x and no
/// answer. Such an attempt is not the contact's answer.
pub fn refused_before_ringing(r: &CallReport) -> bool {
    fault_of(r).is_some()
        && r.first_18x.is_none()
        && r.answered_at.is_none()
        && !r
            .final_response
            .is_some_and(|(s, _)| (200..300).contains(&s))
}

/// A finished call's outcome as recorded: the shared [`Outcome`] — the media layer's own
/// call outcome, marked a trunk fault when the trunk refused it before anything rang and it
/// goes uncounted — or a local error. One value from the call's end to the store, the log and
/// the planner ([`Outcome::scheduled`]), with no name parsed back on the way.
pub type Recorded = crieur_outcome::Outcome;

/// The recorded outcome of a finished call (`uncounted`: [`TrunkHealth::uncounted`]'s answer).
pub fn recorded_outcome(r: &CallEnd, uncounted: bool) -> Recorded {
    match r {
        Ok(r) => Recorded::Call {
            outcome: r.ending.outcome,
            trunk_fault: uncounted && refused_before_ringing(r),
        },
        Err(_) => Recorded::LocalError,
    }
}

/// A breaker transition as an audit record.
pub fn breaker_record(campaign: &str, t: &Transition, call: Option<&str>) -> TrunkBreaker {
    let (sip_status, detail) = match &t.cause {
        Cause::Fault(f) => (f.sip_status, f.detail.clone()),
        Cause::OpenPeriodElapsed => (None, "the open period ended: one probe call".into()),
        Cause::CallServed => (None, "the trunk carried a call".into()),
    };
    TrunkBreaker {
        campaign: campaign.to_owned(),
        from: t.from.as_str().into(),
        state: t.to.as_str().into(),
        cause: BreakerCause {
            code: t.cause.code().into(),
            call: match t.cause {
                Cause::OpenPeriodElapsed => None,
                _ => call.map(str::to_owned),
            },
            sip_status,
            detail,
        },
        consecutive_faults: t.consecutive_faults,
        until: match t.to {
            crieur_engine::BreakerState::Open { until } => Some(until),
            _ => None,
        },
    }
}

/// One line for the operator: what the fault was.
pub fn describe(f: &TrunkFault) -> String {
    let what = match f.kind {
        FaultKind::Auth => {
            "the trunk refused our credentials (check trunk.username and the password)"
        }
        FaultKind::Unreachable => "the trunk did not answer",
        FaultKind::ServerError => "the trunk failed",
        FaultKind::CodecMismatch => "no codec in common with the far end (a configuration fault)",
    };
    match f.sip_status {
        Some(s) => format!("{} — {what}: SIP {s} {}", f.kind.code(), f.detail),
        None => format!("{} — {what}: {}", f.kind.code(), f.detail),
    }
}

/// The trunk's health: its circuit breaker, and each contact's last uncounted trunk fault.
pub struct TrunkHealth {
    pub breaker: Breaker,
    /// Contact → the breaker's count of served calls at its last uncounted trunk fault.
    pub last_fault: HashMap<usize, u64>,
    /// Why dialling was stopped (an authentication fault).
    pub stopped: Option<String>,
    /// A contact the trunk refused is dialled again no sooner than this (the open period).
    pub retry_after: chrono::Duration,
    /// The code of the last trunk fault that changed the breaker (for the progress line).
    pub last_fault_code: &'static str,
}

impl TrunkHealth {
    /// A closed breaker with `config`; a refused contact is retried after its open period.
    pub fn new(config: BreakerConfig) -> TrunkHealth {
        TrunkHealth {
            breaker: Breaker::new(config),
            last_fault: HashMap::new(),
            stopped: None,
            retry_after: chrono::Duration::from_std(config.open_for)
                .unwrap_or(chrono::Duration::seconds(60)),
            last_fault_code: "",
        }
    }

    /// Whether a fault that refused contact `i` before anything rang goes uncounted: yes,
    /// unless the same contact was refused before and the trunk has carried other calls since
    /// (then the refusal is about this number, not the trunk: it counts).
    pub fn uncounted(&mut self, i: usize, verdict: &CallVerdict) -> bool {
        let served = self.breaker.served();
        match verdict {
            CallVerdict::Fault(_) => self
                .last_fault
                .insert(i, served)
                .is_none_or(|then| served <= then),
            _ => {
                self.last_fault.remove(&i);
                true
            }
        }
    }

    /// The breaker's state in words, for the progress line and the end of the run.
    pub fn describe(&self) -> Option<String> {
        match self.breaker.state() {
            BreakerState::Closed => None,
            BreakerState::Open { until } => Some(format!(
                "trunk breaker open until {} ({} trunk faults in a row, last {})",
                until.to_rfc3339(),
                self.breaker.consecutive_faults(),
                self.last_fault_code
            )),
            BreakerState::HalfOpen => Some("trunk breaker half-open: one probe call".into()),
            BreakerState::Stopped => Some(format!(
                "dialling stopped: {}",
                self.stopped.as_deref().unwrap_or("trunk fault")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crieur_media::call::{Ending, HangupBy};

    use super::*;

    fn report(outcome: Outcome, status: Option<u16>, first_18x: Option<u16>) -> CallReport {
        let ms = Duration::from_millis;
        CallReport {
            call_id: "x".into(),
            ending: Ending {
                outcome,
                sip_status: status,
                reason: "why".into(),
                hangup_by: HangupBy::Nobody,
            },
            timeline: vec![],
            keys: vec![],
            opt_out_recorded: false,
            answer_to_first_audio: None,
            final_response: status.map(|s| (s, ms(50))),
            first_18x: first_18x.map(|s| (s, ms(10))),
            credentials_sent: false,
            answered_at: None,
            first_audio_at: None,
            message_packets: 0,
            codec: None,
            rtp_sent: 0,
            send_lateness_max_us: 0,
            rtp_send_errors: 0,
            rtp_received: vec![],
            rtp_local: None,
            amd: None,
            rtcp: Default::default(),
        }
    }

    #[test]
    fn a_trunk_refusal_before_ringing_is_free_after_ringing_it_counts() {
        let r = report(Outcome::TrunkFailure, Some(503), None);
        assert_eq!(
            recorded_outcome(&Ok(r.clone()), true).name(),
            "trunk-fault:trunk-failure"
        );
        assert_eq!(
            recorded_outcome(&Ok(r.clone()), false).name(),
            "trunk-failure"
        );
        let rang = report(Outcome::TrunkFailure, Some(503), Some(180));
        assert_eq!(
            recorded_outcome(&Ok(rang.clone()), true).name(),
            "trunk-failure"
        );
        // Timer B: no status at all.
        let silent = report(Outcome::TrunkFailure, None, None);
        assert_eq!(
            recorded_outcome(&Ok(silent.clone()), true).name(),
            "trunk-fault:trunk-failure"
        );
        assert!(matches!(
            verdict(&Ok(silent)),
            CallVerdict::Fault(TrunkFault {
                kind: FaultKind::Unreachable,
                ..
            })
        ));
        // A 200 with no common codec: a configuration fault for the breaker, but the phone
        // was answered — it counts.
        let mismatch = report(Outcome::CodecMismatch, Some(200), Some(180));
        assert_eq!(
            recorded_outcome(&Ok(mismatch.clone()), true).name(),
            "codec-mismatch"
        );
        assert!(matches!(
            verdict(&Ok(mismatch)),
            CallVerdict::Fault(TrunkFault {
                kind: FaultKind::CodecMismatch,
                ..
            })
        ));
        let auth = report(Outcome::AuthFailed, Some(403), None);
        assert_eq!(
            recorded_outcome(&Ok(auth.clone()), true).name(),
            "trunk-fault:auth-failed"
        );
        assert!(matches!(
            verdict(&Ok(auth)),
            CallVerdict::Fault(TrunkFault {
                kind: FaultKind::Auth,
                sip_status: Some(403),
                ..
            })
        ));
    }

    #[test]
    fn the_callees_answers_are_served_and_local_ends_neutral() {
        for o in [
            Outcome::Busy,
            Outcome::NoAnswer,
            Outcome::Rejected,
            Outcome::NotFound,
            Outcome::AnsweredCompleted,
            Outcome::HungUpMidMessage,
        ] {
            let r = report(o, Some(486), None);
            assert_eq!(verdict(&Ok(r.clone())), CallVerdict::Served, "{o:?}");
            assert_eq!(recorded_outcome(&Ok(r.clone()), true).name(), o.as_str());
        }
        let r = report(Outcome::LocalShutdown, None, None);
        assert_eq!(verdict(&Ok(r)), CallVerdict::Neutral);
        assert_eq!(
            verdict(&Err(LocalFailure {
                why: "task failed".into()
            })),
            CallVerdict::Neutral
        );
    }

    fn fault() -> CallVerdict {
        CallVerdict::Fault(TrunkFault {
            kind: FaultKind::ServerError,
            sip_status: Some(503),
            detail: String::new(),
        })
    }

    /// A contact refused again while the trunk carried nothing else stays free (the trunk is
    /// down); refused again after the trunk served other calls, it counts (it is this number).
    #[test]
    fn a_repeated_refusal_counts_only_once_the_trunk_served_others_meanwhile() {
        let mut h = TrunkHealth::new(BreakerConfig::default());
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        assert!(h.uncounted(0, &fault()));
        h.breaker.on_call_ended(t, fault());
        assert!(h.uncounted(1, &fault()));
        h.breaker.on_call_ended(t, fault());
        assert!(
            h.uncounted(0, &fault()),
            "nothing served between: the trunk is down"
        );
        h.breaker.on_call_ended(t, fault());
        assert!(h.uncounted(2, &CallVerdict::Served));
        h.breaker.on_call_ended(t, CallVerdict::Served);
        assert!(
            !h.uncounted(0, &fault()),
            "served meanwhile: this number's own failure"
        );
        assert!(
            h.uncounted(0, &fault()),
            "nothing served since its last refusal"
        );
        assert!(!h.uncounted(1, &fault()));
        assert!(h.uncounted(1, &CallVerdict::Served));
        assert!(
            h.uncounted(1, &fault()),
            "its last call went through: a fresh refusal"
        );
    }
}
