use thiserror::Error;

/// Everything the SIP core refuses. Malformed input from the network is never an error
/// returned to the caller: it is dropped and logged ([`crate::Endpoint::handle_input`]).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A URI the caller gave does not parse.
    #[error("bad SIP URI {uri}: {why}")]
    BadUri { uri: String, why: String },
    /// A header the caller gave cannot be put on the wire (a line break in its value …).
    #[error("bad header {name}: {why}")]
    BadHeader { name: String, why: String },
    /// The call is unknown or already over.
    #[error("no such call")]
    NoCall,
    /// The request cannot be sent in the call's state (no dialog yet, or it ended).
    #[error("cannot send {what}: {why}")]
    NotNow {
        what: &'static str,
        why: &'static str,
    },
}
