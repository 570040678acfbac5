//! crieur's media: everything between "dial this number now" and "this is how the call ended".
//!
//! Sans-IO cores — [`call::CallScript`] (the per-call state machine), [`rtp::Packetizer`]
//! (RTP on an absolute 20 ms schedule), [`g711`], [`dtmf`] (RFC 4733, SIP INFO, Goertzel),
//! [`sdp`] (offer/answer), [`rtcp`] (reports) and [`audio::Message`] (WAV → 8 kHz G.711 at load time) — take
//! `now` and inputs and return actions. The I/O edge ([`uac`]) drives them with crieur-sip's
//! sans-IO endpoint on a UDP socket ([`signalling`]: what the INVITE says about us) and one
//! [`session::Media`] per answered call; every call's RTP leaves through the shared [`pacer`].

pub mod amd;
pub mod audio;
pub mod call;
pub mod dtmf;
mod error;
pub mod g711;
mod inbox;
pub mod listen;
mod mmsg;
pub mod pacer;
mod relay;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod session;
pub mod signalling;
pub mod uac;

pub use error::Error;
