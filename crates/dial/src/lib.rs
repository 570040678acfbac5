//! crieur's dial protocol, as a library: what happens around every call so that the store
//! (leases, attempts, opt-outs) and the audit log (`invite-sent`, `outcome`) tell the same
//! story — and, after a crash, are made to ([`recover`]).
//!
//! The order around a call: lease (store, durable) → `invite-sent` (log, durable) → the
//! INVITE → the call → attempt (store) → `outcome` (log). A crash between any two of them
//! leaves one of the states [`recover::reconcile`] repairs from the log when the store and the
//! log are next opened to dial.

pub mod core;
pub mod fault;
pub mod protocol;
pub mod recover;
pub mod session;
pub mod sim;

pub use protocol::{DialRules, Gate};
pub use recover::{reconcile, reconcile_node, recover_expired, Node, Recovered};
pub use sim::{simulate, MixError, OutcomeMix, SimConfig, SimEvent};

/// The dial crate's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crieur_store::Error),
    #[error(transparent)]
    Audit(#[from] crieur_audit::Error),
    /// The session's probe halted it after this effect (the crash tests' process death).
    #[error("halted after {0:?}")]
    Halted(session::Point),
    /// A lock shared with the call tasks was poisoned (a task panicked holding it).
    #[error("the {0} lock was poisoned")]
    Poisoned(&'static str),
}

pub type Result<T> = std::result::Result<T, Error>;

/// `t` to the microsecond (what the store keeps): take instants the store and the log both
/// record through this, so they are the same instant in both.
pub fn to_micros(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}
