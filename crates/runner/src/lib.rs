//! crieur's campaign driver, live: the sans-IO campaign core (`crieur_dial::core::Core`) run
//! on tokio against the store, the audit log and the SIP user agent (`crieur_media::uac::Uac`).
//! `crieur run` and `crieur call` (a run of one contact) are this driver; so is any embedder
//! (the control API): it owns no terminal.
//!
//! * [`run`] — the run: its header, crash recovery from the log, the planner and the core,
//!   the event loop, its stop record; returns a [`Summary`].
//! * [`RunHandle`] / [`control`] — a bounded control channel: pause, resume, stop (drain the
//!   calls in progress), hang up now; an [`Event`] stream (tokio broadcast) and a
//!   [`Counters`] snapshot.
//! * An observer callback gets every [`Event`] in order, synchronously (the CLI's progress
//!   line and summaries); the broadcast stream may skip events a slow subscriber lags behind.
//! * [`prepare`] — what placing calls needs from a campaign (trunk, local address,
//!   recordings); [`header`] — the run header and stop records.

pub mod control;
mod driver;
pub mod header;
pub mod locate;
pub mod log;
pub mod ops;
pub mod prepare;
pub mod text;

pub use control::{
    control, Control, ControlReceiver, Counters, Ended, Event, InProgress, Refused, RunHandle,
    EVENT_BUFFER, PROGRESS_EVERY,
};
pub use driver::{run, Done, Refusal, RunOptions, Scope, Setup, SharedLog, Summary, NODE_TIMEOUT};
pub use prepare::{prepare, rules, Prepared};

use crieur_config::input::InputErrors;

/// The runner's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The campaign cannot place calls as written (located, like any input problem).
    #[error(transparent)]
    Input(#[from] InputErrors),
    #[error(transparent)]
    Config(#[from] crieur_config::Error),
    #[error(transparent)]
    Dial(#[from] crieur_dial::Error),
    #[error(transparent)]
    Store(#[from] crieur_store::Error),
    #[error(transparent)]
    Audit(#[from] crieur_audit::Error),
    #[error(transparent)]
    Media(#[from] crieur_media::Error),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The audit signing key file does not hold a key.
    #[error("the audit signing key {}", path.display())]
    Key {
        path: std::path::PathBuf,
        #[source]
        source: crieur_audit::Error,
    },
    /// A signing key cannot be made there.
    #[error("{}: {why}", path.display())]
    KeyFile {
        path: std::path::PathBuf,
        why: &'static str,
    },
    /// The trunk's name resolves to no address.
    #[error("the trunk {uri} resolves to no address")]
    NoAddress { uri: String },
    /// The campaign has no contacts in the store.
    #[error(
        "campaign `{campaign}` has no contacts in the store: import them with `crieur import`"
    )]
    NoContacts { campaign: String },
    /// A lock shared with the call tasks was poisoned (a task panicked holding it).
    #[error("the {0} lock was poisoned")]
    Poisoned(&'static str),
    /// Recording the end of a call failed.
    #[error("recording the outcome of call {call}")]
    Finish {
        call: String,
        #[source]
        source: crieur_dial::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The wall clock, read at the edge (records are stamped by the driver).
pub fn now() -> chrono::DateTime<chrono::Utc> {
    #[allow(clippy::disallowed_methods)]
    chrono::Utc::now()
}
