//! Trunk faults seen from a finished call: what the breaker is told, and the outcome name the
//! store and the audit log record (a `trunk-fault:` name uses up no attempt).

use crieur_audit::record::{BreakerCause, TrunkBreaker};
use crieur_engine::{CallVerdict, Cause, FaultKind, Transition, TrunkFault, TRUNK_FAULT_PREFIX};
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

/// What a finished call (or its task's failure) tells the breaker.
pub fn verdict(r: &Result<CallReport, String>) -> CallVerdict {
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

/// The outcome name recorded in the store and the audit log: `trunk-fault:<outcome>` when the
/// trunk refused the call before anything rang and `uncounted` (it then uses up no attempt),
/// the call's own outcome otherwise.
pub fn recorded_outcome(r: &CallReport, uncounted: bool) -> String {
    let name = r.ending.outcome.as_str();
    if uncounted && refused_before_ringing(r) {
        format!("{TRUNK_FAULT_PREFIX}{name}")
    } else {
        name.to_owned()
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
