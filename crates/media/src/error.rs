use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in the media crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A message file cannot be used.
    #[error("cannot use audio file {}: {why}", path.display())]
    Audio { path: PathBuf, why: String },
    /// The callee's SDP cannot be parsed.
    #[error("unusable SDP answer: {why}")]
    BadSdp { why: String },
    /// The callee accepts neither PCMU nor PCMA.
    #[error("no common codec: the callee answered with formats {answered}")]
    CodecMismatch { answered: String },
    /// Trunk configuration is invalid.
    #[error("invalid trunk configuration: {field}: {why}")]
    Config { field: &'static str, why: String },
    /// The SIP stack failed.
    #[error("SIP: {0}")]
    Sip(String),
    /// A socket failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}
