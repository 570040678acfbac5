//! crieur's SIP core, sans I/O: no clock, no socket, no task.
//!
//! Datagrams and time are inputs ([`Endpoint::handle_input`], [`Endpoint::handle_timeout`]);
//! datagrams to send, the next deadline and what happened are outputs
//! ([`Endpoint::poll_transmit`], [`Endpoint::poll_timeout`], [`Endpoint::poll_event`]). The
//! I/O edge (crieur-media's `uac.rs`, crieur-sim) owns the sockets and the clock and drives
//! one [`Endpoint`] per loop.
//!
//! Layers:
//! - the message syntax (parse, serialise) and the RFC 3261 §17.2 server transactions (for
//!   the requests we receive) are [`sipx_sip`]'s (ARCHITECTURE.md says why that crate, with
//!   the evidence);
//! - [`client`]: our own client transactions (RFC 3261 §17.1, RFC 6026), named by the branch
//!   we draw, so that a response is matched without an allocation (ARCHITECTURE.md: why);
//! - [`auth`]: digest authentication (RFC 3261 §22, RFC 7616: MD5 and SHA-256, `qop=auth`,
//!   stale nonces);
//! - [`endpoint`]: the call leg (dialog: tags, CSeq, route set and loose routing, ACK for a
//!   2xx, CANCEL, forking, in-dialog requests both ways), rport, and the demultiplexing of
//!   datagrams to transactions and calls;
//! - [`body`]: what a body is to us (the SDP, alone or a multipart's part; an optional body
//!   ignored; one we cannot read refused);
//! - [`wire`]: the few header helpers the rest shares.

pub mod auth;
pub mod body;
pub mod client;
pub mod endpoint;
mod error;
pub mod locate;
pub mod wire;

pub use endpoint::{
    CallRef, Config, Endpoint, Event, Invite, Outcome, RequestRef, ServerRef, Transmit, Transport,
    CLEANUP_GRID,
};
pub use error::Error;
pub use sipx_sip::{Limits, Message, Method, Request, Response, StatusCode, StreamParser, Timers};
