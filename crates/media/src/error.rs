use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in the media crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A message file cannot be used.
    #[error("cannot use audio file {}: {source}", path.display())]
    Audio {
        path: PathBuf,
        #[source]
        source: crate::audio::AudioError,
    },
    /// The callee's SDP cannot be parsed.
    #[error("unusable SDP answer: {why}")]
    BadSdp { why: String },
    /// The callee accepts neither PCMU nor PCMA.
    #[error("no common codec: the callee answered with formats {answered}")]
    CodecMismatch { answered: String },
    /// Trunk configuration is invalid.
    #[error("invalid trunk configuration: {field}: {why}")]
    Config { field: &'static str, why: String },
    /// The SIP core refused `what` we asked of it (a URI or header that does not parse, a
    /// call it no longer has); its own error is the source.
    #[error("SIP: {what}")]
    Sip {
        what: &'static str,
        #[source]
        source: crieur_sip::Error,
    },
    /// The SIP loop is gone (the `Uac` is shutting down).
    #[error("SIP: the signalling loop stopped")]
    SipStopped,
    /// A socket failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
