//! `verify`: the chain, seq continuity, checkpoints and their signatures, and an exported
//! checkpoint (anchor) that shows whether the newest records were cut.

use std::path::Path;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use sha2::{Digest, Sha256};

use crate::log::segments;
use crate::record::{checkpoint_message, Checkpoint, Entry, Record};
use crate::{Error, Result};

/// What to check besides the chain.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Checkpoints must be signed by this key (otherwise each is checked against the key it
    /// names, which proves only that the chain was not changed after it was signed by that key).
    pub public_key: Option<VerifyingKey>,
    /// A checkpoint exported earlier and kept outside the system: the log must still contain
    /// its record with that hash.
    pub anchor: Option<Checkpoint>,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub segment: String,
    /// 1-based line in the segment (0: the segment as a whole).
    pub line: usize,
    pub seq: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.line)?;
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// Records no checkpoint covers yet: the chain shows they were not changed *inside* the log,
/// but nothing signed shows they are the operator's (a forger can re-chain a log, and with
/// every checkpoint removed the chain alone looks intact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unproven {
    pub records: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// The result of a verification.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub segments: usize,
    pub records: u64,
    pub bytes: u64,
    pub checkpoints: u64,
    /// Seq and hash of the last good record.
    pub head: Option<(u64, String)>,
    /// Seq of the last valid checkpoint.
    pub last_checkpoint: Option<u64>,
    /// The records after the last valid checkpoint (or the exported one, if later), or every
    /// record when there is none. With a pinned key, a log without any checkpoint fails
    /// (`first_break`): nothing in it is proven.
    pub unproven: Option<Unproven>,
    /// The first break; verification stops there (what follows cannot be trusted).
    pub first_break: Option<Break>,
}

/// Reads `seq` and `prev` from the canonical start of a line:
/// `{"seq":<n>,"ts":"<…>","prev":"<64 hex>",`. Lines not in that form are parsed fully.
fn fast_header(line: &[u8]) -> Option<(u64, &[u8], usize)> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let seq: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b",\"ts\":\"")?;
    let q = rest.iter().position(|&b| b == b'"')?;
    let rest = rest[q + 1..].strip_prefix(b",\"prev\":\"")?;
    let prev = rest.get(..64)?;
    let after = rest.get(64..66)?;
    if after != b"\"," {
        return None;
    }
    let type_at = line.len() - rest.len() + 66;
    Some((seq, prev, type_at))
}

/// Verifies the log in `dir`.
pub fn verify(dir: &Path, opts: &VerifyOptions) -> Result<VerifyReport> {
    let mut rep = VerifyReport::default();
    let segs = segments(dir)?;
    if segs.is_empty() {
        return Err(Error::Empty(dir.to_path_buf()));
    }
    rep.segments = segs.len();
    let mut expect_seq = 0u64;
    let mut prev_hash: String;
    // The previous line's digest, compared in binary (hex only when reported).
    let mut prev_digest = [0u8; 32];
    let mut anchor_seen = false;
    'outer: for (idx, (n, path)) in segs.iter().enumerate() {
        let name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let brk = |line: usize, seq: Option<u64>, what: String| Break {
            segment: name.clone(),
            line,
            seq,
            what,
        };
        if idx > 0 && *n != segs[idx - 1].0 + 1 {
            rep.first_break = Some(brk(
                0,
                Some(expect_seq),
                format!(
                    "segment {} is missing",
                    crate::log::segment_name(segs[idx - 1].0 + 1)
                ),
            ));
            break;
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        rep.bytes += bytes.len() as u64;
        let mut start = 0usize;
        let mut line_no = 0usize;
        while start < bytes.len() {
            line_no += 1;
            let Some(len) = memchr::memchr(b'\n', &bytes[start..]) else {
                rep.first_break = Some(brk(
                    line_no,
                    Some(expect_seq),
                    format!(
                        "torn last line ({} bytes without a newline): a write was cut short",
                        bytes.len() - start
                    ),
                ));
                break 'outer;
            };
            let line = &bytes[start..start + len];
            start += len + 1;
            let (seq, prev, type_at) = match fast_header(line) {
                Some(h) => h,
                None => {
                    rep.first_break = Some(brk(
                        line_no,
                        Some(expect_seq),
                        "not a record in canonical form ({\"seq\":…,\"ts\":…,\"prev\":…, first)"
                            .into(),
                    ));
                    break 'outer;
                }
            };
            if seq != expect_seq {
                rep.first_break = Some(brk(
                    line_no,
                    Some(seq),
                    format!("seq {seq} where {expect_seq} was expected (a record is missing, duplicated or moved)"),
                ));
                break 'outer;
            }
            let mut claimed = [0u8; 32];
            let prev_ok =
                hex::decode_to_slice(prev, &mut claimed).is_ok() && claimed == prev_digest;
            if !prev_ok {
                prev_hash = hex::encode(prev_digest);
                rep.first_break = Some(brk(
                    line_no,
                    Some(seq),
                    format!(
                        "prev {} is not the hash of the previous record ({prev_hash}): it was changed",
                        String::from_utf8_lossy(prev)
                    ),
                ));
                break 'outer;
            }
            if line[type_at..].starts_with(b"\"type\":\"checkpoint\"") {
                prev_hash = hex::encode(prev_digest);
                match check_checkpoint(line, seq, &prev_hash, opts) {
                    Ok(()) => {
                        rep.checkpoints += 1;
                        rep.last_checkpoint = Some(seq);
                    }
                    Err(why) => {
                        rep.first_break = Some(brk(line_no, Some(seq), why.to_string()));
                        break 'outer;
                    }
                }
            }
            prev_digest = Sha256::digest(line).into();
            if let Some(a) = &opts.anchor {
                if a.upto_seq == seq {
                    prev_hash = hex::encode(prev_digest);
                    if a.upto_hash != prev_hash {
                        rep.first_break = Some(brk(
                            line_no,
                            Some(seq),
                            format!(
                                "the exported checkpoint says record {seq} hashes to {}, the log has {prev_hash}",
                                a.upto_hash
                            ),
                        ));
                        break 'outer;
                    }
                    anchor_seen = true;
                }
            }
            rep.head = Some((seq, String::new()));
            rep.records += 1;
            expect_seq += 1;
        }
    }
    if let Some(h) = &mut rep.head {
        // The last good record (verification stops before a bad one).
        h.1 = hex::encode(prev_digest);
    }
    let last_segment = segs
        .last()
        .and_then(|(_, p)| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut anchor_proven = None;
    if let (Some(a), None) = (&opts.anchor, &rep.first_break) {
        if let Err(why) = check_signature(a, opts) {
            rep.first_break = Some(Break {
                segment: "(exported checkpoint)".into(),
                line: 0,
                seq: Some(a.upto_seq),
                what: why.to_string(),
            });
        } else if !anchor_seen {
            rep.first_break = Some(Break {
                segment: last_segment.clone(),
                line: 0,
                seq: Some(a.upto_seq),
                what: format!(
                    "the log ends at seq {} but the exported checkpoint covers seq {}: its newest records were cut",
                    rep.head.as_ref().map_or("none".into(), |h| h.0.to_string()),
                    a.upto_seq
                ),
            });
        } else {
            anchor_proven = Some(a.upto_seq);
        }
    }
    if let Some((head, _)) = &rep.head {
        // A checkpoint record is covered by its own signature; the exported checkpoint
        // proves up to the record it names.
        let proven = rep.last_checkpoint.max(anchor_proven);
        let first_seq = proven.map_or(0, |p| p + 1);
        if first_seq <= *head {
            rep.unproven = Some(Unproven {
                records: head - first_seq + 1,
                first_seq,
                last_seq: *head,
            });
        }
    }
    if opts.public_key.is_some()
        && rep.first_break.is_none()
        && rep.last_checkpoint.is_none()
        && anchor_proven.is_none()
    {
        rep.first_break = Some(Break {
            segment: last_segment,
            line: 0,
            seq: None,
            what: format!(
                "no checkpoint signed by the given key: none of the {} records is proven (a log \
                 re-chained with its checkpoints removed looks the same)",
                rep.records
            ),
        });
    }
    Ok(rep)
}

/// Why a checkpoint does not hold (a break in the report).
#[derive(Debug, thiserror::Error)]
enum CheckpointFault {
    #[error("checkpoint names a malformed public key")]
    MalformedKey,
    #[error("checkpoint signed by key {named}, not the given public key {given}")]
    OtherKey { named: String, given: String },
    #[error("checkpoint signature is malformed")]
    MalformedSignature,
    #[error("checkpoint signature does not verify")]
    BadSignature(#[source] ed25519_dalek::SignatureError),
    #[error("malformed checkpoint: {0}")]
    Unparsable(#[source] serde_json::Error),
    #[error("malformed checkpoint")]
    NotACheckpoint,
    #[error(
        "checkpoint covers seq {upto_seq} / {upto_hash} but follows seq {prev_seq} / {prev_hash}"
    )]
    Misplaced {
        upto_seq: u64,
        upto_hash: String,
        prev_seq: u64,
        prev_hash: String,
    },
}

fn check_signature(
    cp: &Checkpoint,
    opts: &VerifyOptions,
) -> std::result::Result<(), CheckpointFault> {
    let named = hex::decode(&cp.public_key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
        .ok_or(CheckpointFault::MalformedKey)?;
    let key = match opts.public_key {
        Some(k) if k != named => {
            return Err(CheckpointFault::OtherKey {
                named: cp.public_key.clone(),
                given: hex::encode(k.to_bytes()),
            })
        }
        Some(k) => k,
        None => named,
    };
    let sig = hex::decode(&cp.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or(CheckpointFault::MalformedSignature)?;
    key.verify(&checkpoint_message(cp.upto_seq, &cp.upto_hash), &sig)
        .map_err(CheckpointFault::BadSignature)
}

fn check_checkpoint(
    line: &[u8],
    seq: u64,
    prev_hash: &str,
    opts: &VerifyOptions,
) -> std::result::Result<(), CheckpointFault> {
    let entry: Entry = serde_json::from_slice(line).map_err(CheckpointFault::Unparsable)?;
    let Record::Checkpoint(cp) = entry.record else {
        return Err(CheckpointFault::NotACheckpoint);
    };
    if cp.upto_seq.checked_add(1) != Some(seq) || cp.upto_hash != prev_hash {
        return Err(CheckpointFault::Misplaced {
            upto_seq: cp.upto_seq,
            upto_hash: cp.upto_hash.clone(),
            prev_seq: seq.saturating_sub(1),
            prev_hash: prev_hash.to_owned(),
        });
    }
    check_signature(&cp, opts)
}

/// The latest checkpoint of the log (for `audit checkpoint --export`).
pub fn latest_checkpoint(dir: &Path) -> Result<Option<Checkpoint>> {
    let mut latest = None;
    for (_, path) in segments(dir)? {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        for line in bytes.split(|&b| b == b'\n') {
            if let Some((_, _, at)) = fast_header(line) {
                if line[at..].starts_with(b"\"type\":\"checkpoint\"") {
                    if let Ok(Entry {
                        record: Record::Checkpoint(cp),
                        ..
                    }) = serde_json::from_slice(line)
                    {
                        latest = Some(cp);
                    }
                }
            }
        }
    }
    Ok(latest)
}

impl VerifyReport {
    /// The report as `crieur audit verify` prints it, up to the verdict on the chain:
    /// sizes, how signatures were checked (`pinned`: against a given public key), the head,
    /// the records no signature covers yet.
    pub fn describe(&self, dir: &Path, pinned: bool) -> String {
        let mut s = format!(
            "{}: {} segments, {} records, {} bytes, {} checkpoints{}\n",
            dir.display(),
            self.segments,
            self.records,
            self.bytes,
            self.checkpoints,
            if pinned {
                " (signatures checked against the given key)"
            } else {
                " (signatures checked against the key each checkpoint names; pin it with --pubkey)"
            }
        );
        if let Some((seq, hash)) = &self.head {
            s.push_str(&format!("head      seq {seq} {hash}\n"));
        }
        if let Some(u) = &self.unproven {
            s.push_str(&format!(
                "UNPROVEN  {} records (seq {}-{}): {}\n",
                u.records,
                u.first_seq,
                u.last_seq,
                match self.last_checkpoint {
                    Some(c) =>
                        format!("after the last checkpoint (seq {c}), no signature covers them yet"),
                    None => "no checkpoint at all: no signature covers them".into(),
                }
            ));
        }
        s
    }
}
