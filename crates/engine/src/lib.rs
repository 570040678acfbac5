//! The dialling loop's scheduling half, sans I/O: which contact to dial next, how fast and how
//! often. [`Planner`] keeps every contact in a **due queue** ordered by the instant it may next
//! be dialled, so a tick costs O(due contacts), not O(all contacts); it applies attempt caps,
//! the rolling cap, the quiet period after a refusal, the retry policy per outcome, and pacing
//! (calls per second as a token bucket, concurrent calls). Time is an input.

mod plan;
mod sim;

pub use plan::{
    Attempt, AttemptOutcome, CapHit, CapRules, DialOrder, Loosening, Pacing, Planner, RetryGate,
    RetryPolicy, RetryRule, SkipNote,
};
pub use sim::{simulate, OutcomeMix, SimConfig, SimEvent};
