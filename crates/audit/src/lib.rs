//! crieur's audit log: append-only JSON Lines in size-rotated segments, each record chained to
//! the previous one by SHA-256, Ed25519-signed checkpoints, and the tools a regulator uses on
//! it: `verify` (integrity) and `replay` (re-derive every dial decision and list violations).
//!
//! The format is specified for outsiders in `docs/audit-format.md`. The writer takes record
//! timestamps as arguments: it never reads a clock.

use std::path::{Path, PathBuf};

pub mod build;
pub mod export;
pub mod log;
pub mod record;
pub mod replay;
pub mod report;
pub mod verify;

pub use log::{AuditLog, EncodedRecord, Options, Pending, GENESIS};
pub use record::{Entry, Record};
pub use replay::{replay, ReplayReport, Violation};
pub use verify::{latest_checkpoint, verify, Break, Unproven, VerifyOptions, VerifyReport};

/// The audit crate's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The last line of the log is incomplete (a crash mid-write). It is not dropped:
    /// `crieur audit repair` sets it aside and records that it did.
    #[error("{}:{line}: torn audit record ({why}); run `crieur audit repair` to set it aside (it is kept and recorded)", segment.display())]
    TornTail {
        segment: PathBuf,
        line: usize,
        why: String,
    },
    /// An earlier write failed; the log accepts nothing more in this process.
    #[error("an earlier audit write failed; the log accepts no more records in this process")]
    Poisoned,
    #[error("cannot encode an audit record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("{}: no audit log here (no audit-*.jsonl segment)", .0.display())]
    Empty(PathBuf),
    /// A record cannot be read back (replay needs every record intact: run `verify` first).
    #[error("{segment}:{line}: unreadable record: {source}")]
    Unreadable {
        segment: String,
        line: usize,
        source: serde_json::Error,
    },
    /// A key is not hexadecimal.
    #[error("bad key: {0}")]
    KeyHex(#[source] hex::FromHexError),
    /// A key is not 32 bytes long.
    #[error("bad key: expected 32 bytes (64 hex characters), got {len} bytes")]
    KeyLength { len: usize },
    /// The bytes are no Ed25519 public key.
    #[error("bad key: {0}")]
    KeyInvalid(#[source] ed25519_dalek::SignatureError),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

/// Reads an Ed25519 signing key: 64 hex characters (the 32-byte seed), surrounding
/// whitespace ignored.
pub fn signing_key_from_hex(text: &str) -> Result<ed25519_dalek::SigningKey> {
    let bytes = hex::decode(text.trim()).map_err(Error::KeyHex)?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| Error::KeyLength { len: b.len() })?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// Reads an Ed25519 public key: 64 hex characters.
pub fn verifying_key_from_hex(text: &str) -> Result<ed25519_dalek::VerifyingKey> {
    let bytes = hex::decode(text.trim()).map_err(Error::KeyHex)?;
    let b: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| Error::KeyLength { len: b.len() })?;
    ed25519_dalek::VerifyingKey::from_bytes(&b).map_err(Error::KeyInvalid)
}

/// The consent snapshots a log has recorded so far (its `consent` records whose hash holds),
/// to resolve the decisions that cite them.
#[derive(Debug, Default)]
pub struct Snapshots(std::collections::HashMap<String, Vec<record::ConsentSnapshot>>);

impl Snapshots {
    /// Learns a `consent` record; false (and not learnt) when its `sha256` is not the hash
    /// of its `consents`.
    pub fn learn(&mut self, c: &record::ConsentSnapshotRecord) -> bool {
        let holds = record::snapshot_sha256(&c.consents).is_ok_and(|h| h == c.sha256);
        if holds {
            self.0.insert(c.sha256.clone(), c.consents.clone());
        }
        holds
    }

    /// A decision's consent records: inline, or the snapshot it cites if this log recorded
    /// it (none: an unknown citation).
    pub fn of<'a>(
        &'a self,
        d: &'a record::DecisionRecord,
    ) -> Option<&'a [record::ConsentSnapshot]> {
        match &d.consents_sha256 {
            None => Some(&d.consents),
            Some(h) => self.0.get(h).map(Vec::as_slice),
        }
    }
}

/// Fills in the consent records of each decision of one log that cites them by hash, from
/// the `consent` records before it whose hash holds (what export and report read); a
/// citation that does not resolve is left empty (replay reports it).
pub fn resolve_consents(entries: &mut [Located]) {
    let mut known = Snapshots::default();
    for (_, _, e) in entries {
        match &mut e.record {
            Record::Consent(c) => {
                known.learn(c);
            }
            Record::Decision(d) if d.consents_sha256.is_some() => {
                if let Some(c) = known.of(d) {
                    d.consents = c.to_vec();
                }
            }
            _ => {}
        }
    }
}

/// A record as read back: its segment's file name, its line there (1-based), the record.
pub type Located = (String, usize, Entry);

/// Reads every record of the log in order, with its segment and line (for replay, export,
/// report). Integrity is `verify`'s job; this only needs each line to parse.
pub fn read_all(dir: &Path) -> Result<Vec<Located>> {
    match read_readable(dir)? {
        (entries, None) => Ok(entries),
        (_, Some(e)) => Err(e),
    }
}

/// The records up to the first line that cannot be read, and that line's error if there is
/// one (the report shows what can be read of a damaged log).
pub fn read_readable(dir: &Path) -> Result<(Vec<Located>, Option<Error>)> {
    let mut out = Vec::new();
    for (_, path) in log::segments(dir)? {
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice(line) {
                Ok(e) => out.push((name.clone(), i + 1, e)),
                Err(e) => {
                    let err = Error::Unreadable {
                        segment: name,
                        line: i + 1,
                        source: e,
                    };
                    return Ok((out, Some(err)));
                }
            }
        }
    }
    Ok((out, None))
}
