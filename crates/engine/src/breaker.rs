//! The trunk's circuit breaker, sans I/O: a run of trunk faults pauses dialling, an
//! authentication failure stops it.
//!
//! A *trunk fault* is the trunk refusing to carry calls — not a contact's answer: the trunk
//! rejects our credentials (401/407 loop, 403 after credentials), does not answer (timer B,
//! ICMP unreachable, transport error), answers 5xx, or no codec is common (a configuration
//! fault). The caller classifies each finished call as [`CallVerdict::Served`] (the trunk
//! carried it: answered, busy, no answer, refused by the callee …), [`CallVerdict::Fault`] or
//! [`CallVerdict::Neutral`] (a local error or shutdown: says nothing about the trunk).
//!
//! | state | calls | on a fault | on a served call | timer |
//! |---|---|---|---|---|
//! | closed | any | the `open_after`-th in a row: open | resets the run | — |
//! | open | none | — | — | after `open_for`: half-open |
//! | half-open | one probe | open again | closed | — |
//! | stopped | none, for good | — | — | — |
//!
//! An authentication fault stops the breaker from any state: a wrong password does not fix
//! itself, an operator must act. Time is an input (`now`).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// What kind of trunk fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The trunk refused our credentials (401/407 after we answered its challenge, a 403 to
    /// the credentialed INVITE, or a challenge with no credentials configured).
    Auth,
    /// No response at all (timer B), ICMP unreachable, a transport error.
    Unreachable,
    /// A 5xx final response.
    ServerError,
    /// No codec in common (488/606, or a 200 whose answer names none of ours): a
    /// configuration fault.
    CodecMismatch,
}

impl FaultKind {
    /// Stable code (the audit log's `code`).
    pub fn code(self) -> &'static str {
        match self {
            FaultKind::Auth => "trunk-auth-failed",
            FaultKind::Unreachable => "trunk-unreachable",
            FaultKind::ServerError => "trunk-server-error",
            FaultKind::CodecMismatch => "codec-mismatch",
        }
    }

    /// Whether this fault stops dialling at once and for good (until an operator restarts).
    pub fn stops(self) -> bool {
        self == FaultKind::Auth
    }
}

/// One trunk fault, as a finished call showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkFault {
    pub kind: FaultKind,
    /// The INVITE's final SIP status, if one came.
    pub sip_status: Option<u16>,
    /// A short description (the reason phrase, or what the transport said).
    pub detail: String,
}

/// What a finished call says about the trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallVerdict {
    /// The trunk carried the call (whatever the callee did).
    Served,
    /// The trunk refused or failed it.
    Fault(TrunkFault),
    /// Nothing about the trunk (we stopped the call, a local error).
    Neutral,
}

/// Thresholds (the campaign's `[trunk.breaker]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive trunk faults that open the breaker (at least 1).
    pub open_after: u32,
    /// How long it stays open before one probe call is let through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            open_after: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Dialling normally.
    Closed,
    /// No call until `until`.
    Open { until: DateTime<Utc> },
    /// One probe call may go; its result closes or reopens the breaker.
    HalfOpen,
    /// Dialling stopped for good (an authentication fault): an operator must act.
    Stopped,
}

impl BreakerState {
    /// Stable name (the audit log's `state`).
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half-open",
            BreakerState::Stopped => "stopped",
        }
    }
}

/// Why the breaker changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// A trunk fault (the last of the run that opened it, the failed probe, an auth fault).
    Fault(TrunkFault),
    /// The open period ended.
    OpenPeriodElapsed,
    /// A call was served (the probe, or a call placed before the breaker opened).
    CallServed,
}

impl Cause {
    /// Stable code (the audit log's `cause.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Cause::Fault(f) => f.kind.code(),
            Cause::OpenPeriodElapsed => "open-period-elapsed",
            Cause::CallServed => "call-served",
        }
    }
}

/// A change of state, to record and show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub from: BreakerState,
    pub to: BreakerState,
    pub cause: Cause,
    /// Trunk faults in a row when it happened.
    pub consecutive_faults: u32,
}

/// What the breaker lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Any number of calls (pacing still applies).
    Any,
    /// Exactly one probe call.
    Probe,
    /// None; look again at `until` (none: never).
    None { until: Option<DateTime<Utc>> },
}

/// The circuit breaker of one trunk.
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    consecutive: u32,
    probe_in_flight: bool,
    served: u64,
}

impl Breaker {
    /// A closed breaker. `open_after` 0 is taken as 1.
    pub fn new(cfg: BreakerConfig) -> Self {
        Breaker {
            cfg: BreakerConfig {
                open_after: cfg.open_after.max(1),
                ..cfg
            },
            state: BreakerState::Closed,
            consecutive: 0,
            probe_in_flight: false,
            served: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Trunk faults in a row.
    pub fn consecutive_faults(&self) -> u32 {
        self.consecutive
    }

    /// How many calls the trunk has served so far (a counter: a contact refused twice with
    /// calls served in between was refused for its own sake, not because the trunk is down).
    pub fn served(&self) -> u64 {
        self.served
    }

    /// Advances the timer at `now` (open → half-open once `open_for` has passed).
    pub fn poll(&mut self, now: DateTime<Utc>) -> Option<Transition> {
        match self.state {
            BreakerState::Open { until } if now >= until => {
                self.probe_in_flight = false;
                Some(self.go(now, BreakerState::HalfOpen, Cause::OpenPeriodElapsed))
            }
            _ => None,
        }
    }

    /// What may start now (after [`Breaker::poll`]).
    pub fn permit(&self) -> Permit {
        match self.state {
            BreakerState::Closed => Permit::Any,
            BreakerState::HalfOpen if !self.probe_in_flight => Permit::Probe,
            BreakerState::HalfOpen => Permit::None { until: None },
            BreakerState::Open { until } => Permit::None { until: Some(until) },
            BreakerState::Stopped => Permit::None { until: None },
        }
    }

    /// A call started (in half-open: the probe).
    pub fn on_call_started(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.probe_in_flight = true;
        }
    }

    /// A call ended at `now` with `verdict`.
    pub fn on_call_ended(
        &mut self,
        now: DateTime<Utc>,
        verdict: CallVerdict,
    ) -> Option<Transition> {
        match verdict {
            CallVerdict::Neutral => {
                // A probe that ended for a local reason proved nothing: let another go.
                if self.state == BreakerState::HalfOpen {
                    self.probe_in_flight = false;
                }
                None
            }
            CallVerdict::Served => {
                self.served += 1;
                self.consecutive = 0;
                match self.state {
                    // A call placed before the breaker opened that got through is evidence too,
                    // but the open period is kept: the run of faults was real.
                    BreakerState::HalfOpen => {
                        self.probe_in_flight = false;
                        Some(self.go(now, BreakerState::Closed, Cause::CallServed))
                    }
                    _ => None,
                }
            }
            CallVerdict::Fault(f) => {
                if self.state == BreakerState::Stopped {
                    return None;
                }
                self.consecutive = self.consecutive.saturating_add(1);
                if f.kind.stops() {
                    return Some(self.go(now, BreakerState::Stopped, Cause::Fault(f)));
                }
                let reopen = match self.state {
                    BreakerState::Closed => self.consecutive >= self.cfg.open_after,
                    BreakerState::HalfOpen => true,
                    BreakerState::Open { .. } | BreakerState::Stopped => false,
                };
                if !reopen {
                    return None;
                }
                self.probe_in_flight = false;
                let until = chrono::Duration::from_std(self.cfg.open_for)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(now);
                Some(self.go(now, BreakerState::Open { until }, Cause::Fault(f)))
            }
        }
    }

    fn go(&mut self, at: DateTime<Utc>, to: BreakerState, cause: Cause) -> Transition {
        let from = std::mem::replace(&mut self.state, to);
        Transition {
            at,
            from,
            to,
            cause,
            consecutive_faults: self.consecutive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn secs(s: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(s)
    }

    fn fault(kind: FaultKind, status: Option<u16>) -> CallVerdict {
        CallVerdict::Fault(TrunkFault {
            kind,
            sip_status: status,
            detail: String::new(),
        })
    }

    fn cfg(n: u32, open: u64) -> BreakerConfig {
        BreakerConfig {
            open_after: n,
            open_for: Duration::from_secs(open),
        }
    }

    #[test]
    fn five_server_errors_open_then_one_probe_then_close() {
        let mut b = Breaker::new(cfg(5, 30));
        for i in 0..4 {
            b.on_call_started();
            assert_eq!(
                b.on_call_ended(secs(i), fault(FaultKind::ServerError, Some(503))),
                None
            );
            assert_eq!(b.permit(), Permit::Any);
        }
        b.on_call_started();
        let tr = b
            .on_call_ended(secs(4), fault(FaultKind::ServerError, Some(503)))
            .unwrap_or_else(|| panic!("the fifth fault opens"));
        assert_eq!(tr.from, BreakerState::Closed);
        assert_eq!(tr.to, BreakerState::Open { until: secs(34) });
        assert_eq!(tr.cause.code(), "trunk-server-error");
        assert_eq!(tr.consecutive_faults, 5);
        assert_eq!(
            b.permit(),
            Permit::None {
                until: Some(secs(34))
            }
        );
        assert_eq!(b.poll(secs(33)), None);
        let tr = b.poll(secs(34)).unwrap_or_else(|| panic!("half-opens"));
        assert_eq!(
            (tr.to, tr.cause),
            (BreakerState::HalfOpen, Cause::OpenPeriodElapsed)
        );
        assert_eq!(b.permit(), Permit::Probe);
        b.on_call_started();
        assert_eq!(
            b.permit(),
            Permit::None { until: None },
            "one probe at a time"
        );
        let tr = b
            .on_call_ended(secs(35), CallVerdict::Served)
            .unwrap_or_else(|| panic!("closes"));
        assert_eq!((tr.to, tr.cause), (BreakerState::Closed, Cause::CallServed));
        assert_eq!(b.permit(), Permit::Any);
        assert_eq!(b.consecutive_faults(), 0);
    }

    #[test]
    fn a_failed_probe_reopens_for_another_period() {
        let mut b = Breaker::new(cfg(2, 10));
        b.on_call_ended(secs(0), fault(FaultKind::Unreachable, None));
        b.on_call_ended(secs(1), fault(FaultKind::Unreachable, None));
        assert!(b.poll(secs(11)).is_some());
        b.on_call_started();
        let tr = b
            .on_call_ended(secs(12), fault(FaultKind::ServerError, Some(500)))
            .unwrap_or_else(|| panic!("reopens"));
        assert_eq!(tr.from, BreakerState::HalfOpen);
        assert_eq!(tr.to, BreakerState::Open { until: secs(22) });
    }

    #[test]
    fn a_served_call_resets_the_run() {
        let mut b = Breaker::new(cfg(3, 10));
        b.on_call_ended(secs(0), fault(FaultKind::ServerError, Some(503)));
        b.on_call_ended(secs(1), fault(FaultKind::ServerError, Some(503)));
        b.on_call_ended(secs(2), CallVerdict::Served);
        b.on_call_ended(secs(3), fault(FaultKind::ServerError, Some(503)));
        b.on_call_ended(secs(4), CallVerdict::Neutral);
        b.on_call_ended(secs(5), fault(FaultKind::ServerError, Some(503)));
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.consecutive_faults(), 2);
        assert_eq!(b.served(), 1);
    }

    #[test]
    fn an_auth_fault_stops_at_once_and_for_good() {
        let mut b = Breaker::new(cfg(5, 10));
        let tr = b
            .on_call_ended(secs(0), fault(FaultKind::Auth, Some(403)))
            .unwrap_or_else(|| panic!("stops"));
        assert_eq!(
            (tr.from, tr.to),
            (BreakerState::Closed, BreakerState::Stopped)
        );
        assert_eq!(tr.cause.code(), "trunk-auth-failed");
        assert_eq!(b.permit(), Permit::None { until: None });
        assert_eq!(b.poll(secs(1_000_000)), None);
        assert_eq!(b.on_call_ended(secs(2), CallVerdict::Served), None);
        assert_eq!(b.state(), BreakerState::Stopped);
    }

    #[test]
    fn a_neutral_probe_lets_another_probe_go() {
        let mut b = Breaker::new(cfg(1, 5));
        b.on_call_ended(secs(0), fault(FaultKind::CodecMismatch, Some(488)));
        b.poll(secs(5));
        b.on_call_started();
        assert_eq!(b.on_call_ended(secs(6), CallVerdict::Neutral), None);
        assert_eq!(b.permit(), Permit::Probe);
    }

    fn verdict() -> impl Strategy<Value = CallVerdict> {
        prop_oneof![
            4 => Just(CallVerdict::Served),
            1 => Just(CallVerdict::Neutral),
            4 => Just(fault(FaultKind::ServerError, Some(503))),
            2 => Just(fault(FaultKind::Unreachable, None)),
            1 => Just(fault(FaultKind::CodecMismatch, Some(488))),
            1 => Just(fault(FaultKind::Auth, Some(403))),
        ]
    }

    proptest! {
        /// Against a straightforward model: calls start only when permitted, at most one
        /// probe is out in half-open, the breaker opens exactly on the `open_after`-th fault
        /// in a row, stays shut for `open_for`, and only an auth fault stops it — for good.
        #[test]
        fn follows_its_table(
            n in 1u32..6,
            open in 1u64..60,
            steps in proptest::collection::vec((0i64..40, verdict()), 1..200),
        ) {
            let mut b = Breaker::new(cfg(n, open));
            let mut now = secs(0);
            let mut run = 0u32;
            let mut stopped = false;
            for (dt, v) in steps {
                now += chrono::Duration::seconds(dt);
                let before = b.state();
                let tr = b.poll(now);
                if let BreakerState::Open { until } = before {
                    prop_assert_eq!(tr.is_some(), now >= until);
                } else {
                    prop_assert!(tr.is_none());
                }
                let permit = b.permit();
                match b.state() {
                    BreakerState::Closed => prop_assert_eq!(permit, Permit::Any),
                    BreakerState::HalfOpen => prop_assert!(permit == Permit::Probe),
                    BreakerState::Open { until } => {
                        prop_assert!(until > now);
                        prop_assert_eq!(permit, Permit::None { until: Some(until) });
                    }
                    BreakerState::Stopped => {
                        prop_assert!(stopped);
                        prop_assert_eq!(permit, Permit::None { until: None });
                    }
                }
                if matches!(permit, Permit::None { .. }) {
                    continue;
                }
                b.on_call_started();
                let state = b.state();
                let tr = b.on_call_ended(now, v.clone());
                match &v {
                    CallVerdict::Served => {
                        run = 0;
                        prop_assert_eq!(tr.is_some(), state == BreakerState::HalfOpen);
                        prop_assert_eq!(b.state(), BreakerState::Closed);
                    }
                    CallVerdict::Neutral => prop_assert!(tr.is_none()),
                    CallVerdict::Fault(f) => {
                        run += 1;
                        if f.kind == FaultKind::Auth {
                            stopped = true;
                            prop_assert_eq!(b.state(), BreakerState::Stopped);
                        } else if state == BreakerState::HalfOpen || run >= n {
                            let until = now + chrono::Duration::seconds(open as i64);
                            prop_assert_eq!(b.state(), BreakerState::Open { until });
                            prop_assert_eq!(tr.map(|t| t.consecutive_faults), Some(run));
                        } else {
                            prop_assert!(tr.is_none());
                            prop_assert_eq!(b.state(), BreakerState::Closed);
                        }
                    }
                }
                prop_assert_eq!(b.consecutive_faults(), run);
                if stopped {
                    prop_assert_eq!(b.state(), BreakerState::Stopped);
                }
            }
        }
    }
}
