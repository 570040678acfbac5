//! crieur's control plane: what the process that owns a store serves while it runs a campaign
//! (`crieur run`), or while it holds a store with no run (`crieur serve`) — an HTTP API to watch and steer it (pause, resume, stop; opt-outs and
//! contact imports while it dials), Prometheus metrics, a server-sent event stream of call
//! events, optional webhooks and a live dashboard page. Specified in `docs/openapi.yaml`
//! (served at `/openapi.yaml`).
//!
//! * [`api`] — the routes, the token check, the bounded work queues.
//! * [`live`] — the API started beside a run, or alone on a store (`crieur serve`): token,
//!   listener, owner file, server.
//! * [`owner`] — `<store>/owner.json`: where the owner of a store listens, so that
//!   `crieur optout …` and `crieur import` go through it instead of failing on the store's
//!   lock.
//! * [`client`] — the blocking client the command line uses.
//! * [`metrics`] — the Prometheus recorder (the driver records through the `metrics` facade).
//! * [`webhook`] — each call's outcome POSTed to a URL, signed (HMAC-SHA-256), retried.
//! * [`events`] — the event stream (server-sent events), sent in batches.
//! * [`feed`] — what the API keeps of the run's events: recent calls behind a cursor, and the
//!   event stream's JSON.

pub mod api;
pub mod client;
pub mod events;
pub mod feed;
pub mod live;
pub mod metrics;
pub mod owner;
pub mod webhook;

pub use api::{router, Ctx, Served};

/// The control plane's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The owner file cannot be read as one.
    #[error("{path}: not an owner file: {why}")]
    OwnerFile { path: String, why: String },
    /// Another live process owns the store (its owner file in `home`).
    #[error("{home} is held by a running crieur (pid {pid}, its control API at http://{address}/): stop it first (SIGINT or SIGTERM), or go through its API")]
    Owned {
        home: String,
        pid: u32,
        address: std::net::SocketAddr,
    },
    /// The audit log could not be written.
    #[error("writing the audit log")]
    Audit(#[source] crieur_dial::Error),
    /// The running owner refused or failed a request.
    #[error("{0}")]
    Api(#[from] client::ApiError),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The wall clock, read at the edge.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    #[allow(clippy::disallowed_methods)]
    chrono::Utc::now()
}

/// An I/O error with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
