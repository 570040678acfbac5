//! The dialling loop's scheduling half, sans I/O: which contact to dial next, how fast and how
//! often. [`Planner`] keeps every contact in a **due queue** ordered by the instant it may next
//! be dialled, so a tick costs O(due contacts), not O(all contacts); it applies attempt caps,
//! the rolling cap, the quiet period after a refusal, the retry policy per outcome, and pacing
//! (calls per second as a token bucket, concurrent calls). [`Breaker`] is the trunk's circuit
//! breaker: a run of trunk faults pauses dialling, an authentication failure stops it.
//! Time is an input.

mod breaker;
mod plan;

pub use breaker::{
    Breaker, BreakerConfig, BreakerState, CallVerdict, Cause, FaultKind, Permit, Transition,
    TrunkFault,
};
pub use plan::{
    Attempt, AttemptOutcome, CapHit, CapRules, DialOrder, Loosening, Pacing, Planner, RetryGate,
    RetryPolicy, RetryRule, SkipNote, TRUNK_FAULT_PREFIX,
};
