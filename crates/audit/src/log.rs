//! The writer: segments, the hash chain, group commit, checkpoints, torn-tail detection.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::record::{
    checkpoint_message, snapshot_digest, Checkpoint, ConsentSnapshotRecord, Entry, Record, TornTail,
};
use crate::{Error, Result};

/// `prev` of the first record of a log: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Segment file name for index `i` (1-based): `audit-000001.jsonl`.
pub fn segment_name(i: u32) -> String {
    format!("audit-{i:06}.jsonl")
}

/// The segments of `dir`, in order.
pub fn segments(dir: &Path) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("audit-")
            .and_then(|r| r.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u32>().ok())
        {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Hex SHA-256 of one line (without its newline).
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// Writer options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rotate to a new segment past this size.
    pub segment_bytes: u64,
    /// A checkpoint after this many records …
    pub checkpoint_every: u64,
    /// … or once this much (record) time has passed since the last one.
    pub checkpoint_interval: Duration,
    /// The checkpoint signing key; none: no checkpoints.
    pub signing_key: Option<SigningKey>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            signing_key: None,
        }
    }
}

/// An open audit log. Appends are buffered; [`AuditLog::commit`] writes and fsyncs them
/// (group commit). Not thread-safe by itself: share it behind a mutex — and then commit in
/// two steps, [`AuditLog::write_out`] under the mutex and [`Pending::wait`] (the fsync)
/// after releasing it, so that one writer's fsync never holds up another's appends.
pub struct AuditLog {
    dir: PathBuf,
    opts: Options,
    file: Arc<File>,
    disk: Arc<Disk>,
    seg: u32,
    seg_bytes: u64,
    next_seq: u64,
    last_hash: String,
    buf: Vec<u8>,
    since_checkpoint: u64,
    last_checkpoint_ts: Option<DateTime<Utc>>,
    /// A write failed: the file may end in a partial line; nothing more may be appended.
    poisoned: bool,
    /// The consent snapshots this process already recorded in the chain (their SHA-256), so
    /// that a decision citing one again writes only its hash. Bounded: when full it is
    /// emptied, and a snapshot cited after that is recorded once more (more bytes, never a
    /// dangling citation). Empty at open: each process records what it cites.
    cited: HashSet<[u8; 32]>,
}

/// How many distinct consent snapshots an open log remembers having recorded (32 bytes
/// each, ~8 MiB with the set's overhead).
pub const CITED_MAX: usize = 1 << 17;

/// Reads the tail state of the last segment: (next seq, last hash), or the torn line.
fn tail_state(path: &Path) -> Result<Option<(u64, String)>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Ok(None);
    }
    let torn = |line: usize, why: &str| Error::TornTail {
        segment: path.to_path_buf(),
        line,
        why: why.to_owned(),
    };
    let lines = bytes.split(|&b| b == b'\n').count() - 1;
    if bytes.last() != Some(&b'\n') {
        return Err(torn(lines + 1, "the last line has no newline"));
    }
    let body = &bytes[..bytes.len() - 1];
    let last = body.rsplit(|&b| b == b'\n').next().unwrap_or(body);
    let entry: Entry =
        serde_json::from_slice(last).map_err(|e| torn(lines, &format!("not a record: {e}")))?;
    Ok(Some((entry.seq + 1, line_hash(last))))
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`. A torn last line (a crash mid-write) is an error:
    /// it is never silently dropped or rewritten; [`AuditLog::repair_torn_tail`] sets it
    /// aside and records that it did.
    pub fn open(dir: &Path, opts: Options) -> Result<AuditLog> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let segs = segments(dir)?;
        let mut state = None;
        let mut seg = 1;
        // The last non-empty segment holds the chain's head.
        for (i, p) in segs.iter().rev() {
            if let Some(s) = tail_state(p)? {
                state = Some(s);
                seg = *i;
                break;
            }
        }
        if let Some((last, _)) = segs.last() {
            seg = seg.max(*last);
        }
        let (next_seq, last_hash) = state.unwrap_or((0, GENESIS.to_owned()));
        let path = dir.join(segment_name(seg));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let seg_bytes = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        sync_dir(dir)?;
        let file = Arc::new(file);
        Ok(AuditLog {
            dir: dir.to_path_buf(),
            opts,
            disk: Arc::new(Disk {
                synced: Mutex::new(Synced {
                    file: file.clone(),
                    path,
                    upto: 0,
                }),
                written: AtomicU64::new(0),
                poisoned: AtomicBool::new(false),
            }),
            file,
            seg,
            seg_bytes,
            next_seq,
            last_hash,
            buf: Vec::with_capacity(1 << 16),
            since_checkpoint: 0,
            last_checkpoint_ts: None,
            poisoned: false,
            cited: HashSet::new(),
        })
    }

    /// After a crash tore the last line: moves the torn bytes to `<segment>.torn-<n>`, then
    /// opens the log and appends a `torn-tail` record naming them (size and SHA-256), durably.
    /// Returns what was set aside, or `None` if the log was not torn.
    pub fn repair_torn_tail(
        dir: &Path,
        opts: Options,
        ts: DateTime<Utc>,
    ) -> Result<Option<TornTail>> {
        let segs = segments(dir)?;
        let Some((_, path)) = segs
            .iter()
            .rev()
            .find(|(_, p)| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        else {
            return Ok(None);
        };
        match tail_state(path) {
            Ok(_) => return Ok(None),
            Err(Error::TornTail { .. }) => {}
            Err(e) => return Err(e),
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        // Keep every complete, parsable line; the rest is the torn tail.
        let mut keep = 0;
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                if serde_json::from_slice::<Entry>(&bytes[start..i]).is_err() {
                    break;
                }
                keep = i + 1;
                start = i + 1;
            }
        }
        let torn = &bytes[keep..];
        let mut n = 1;
        let saved = loop {
            let p = PathBuf::from(format!("{}.torn-{n}", path.display()));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        std::fs::write(&saved, torn).map_err(|e| Error::io(&saved, e))?;
        File::open(&saved)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&saved, e))?;
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        f.set_len(keep as u64).map_err(|e| Error::io(path, e))?;
        f.sync_all().map_err(|e| Error::io(path, e))?;
        sync_dir(dir)?;
        let record = TornTail {
            segment: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            bytes: torn.len() as u64,
            sha256: hex::encode(Sha256::digest(torn)),
            saved_as: saved
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let mut log = AuditLog::open(dir, opts)?;
        log.append(ts, &Record::TornTail(record.clone()))?;
        log.commit()?;
        Ok(Some(record))
    }

    /// The seq the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hex hash of the last record (the genesis value for an empty log).
    pub fn head_hash(&self) -> &str {
        &self.last_hash
    }

    /// Appends a record stamped `ts` to the buffer (not yet durable: see
    /// [`AuditLog::commit`]); returns its seq. May append a checkpoint after it.
    pub fn append(&mut self, ts: DateTime<Utc>, record: &Record) -> Result<u64> {
        let seq = self.push(ts, record)?;
        self.after_append(ts)?;
        Ok(seq)
    }

    fn after_append(&mut self, ts: DateTime<Utc>) -> Result<()> {
        self.since_checkpoint += 1;
        let due_by_count = self.since_checkpoint >= self.opts.checkpoint_every;
        let due_by_time = self
            .last_checkpoint_ts
            .is_none_or(|t| (ts - t).to_std().unwrap_or_default() >= self.opts.checkpoint_interval);
        if self.opts.signing_key.is_some() && (due_by_count || due_by_time) {
            self.checkpoint(ts)?;
        }
        Ok(())
    }

    /// Appends and commits: durable when this returns.
    pub fn append_durable(&mut self, ts: DateTime<Utc>, record: &Record) -> Result<u64> {
        let seq = self.append(ts, record)?;
        self.commit()?;
        Ok(seq)
    }

    /// Appends a signed checkpoint over the chain so far (if a key is configured).
    pub fn checkpoint(&mut self, ts: DateTime<Utc>) -> Result<Option<Checkpoint>> {
        let Some(key) = &self.opts.signing_key else {
            return Ok(None);
        };
        if self.next_seq == 0 {
            return Ok(None);
        }
        let upto_seq = self.next_seq - 1;
        let sig = key.sign(&checkpoint_message(upto_seq, &self.last_hash));
        let cp = Checkpoint {
            upto_seq,
            upto_hash: self.last_hash.clone(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            signature: hex::encode(sig.to_bytes()),
        };
        self.push(ts, &Record::Checkpoint(cp.clone()))?;
        self.since_checkpoint = 0;
        self.last_checkpoint_ts = Some(ts);
        Ok(Some(cp))
    }

    fn push(&mut self, ts: DateTime<Utc>, record: &Record) -> Result<u64> {
        self.push_cited(ts, &EncodedRecord::new(record)?)
    }

    /// A decision's consent snapshot first, unless this process already recorded it in the
    /// chain, then the record itself.
    fn push_cited(&mut self, ts: DateTime<Utc>, body: &EncodedRecord) -> Result<u64> {
        if let Some((hash, snapshot)) = &body.snapshot {
            if !self.cited.contains(hash) {
                self.push_encoded(ts, snapshot)?;
                self.after_append(ts)?;
                if self.cited.len() >= CITED_MAX {
                    self.cited.clear();
                }
                self.cited.insert(*hash);
            }
        }
        self.push_encoded(ts, body)
    }

    /// The chain step: envelope + body straight into the group buffer, then its hash.
    fn push_encoded(&mut self, ts: DateTime<Utc>, body: &EncodedRecord) -> Result<u64> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        let seq = self.next_seq;
        let ts = ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let len = body.body.len() + ts.len() + 110;
        if self.seg_bytes > 0
            && self.seg_bytes + (self.buf.len() + len) as u64 > self.opts.segment_bytes
        {
            self.commit()?;
            self.rotate()?;
        }
        let start = self.buf.len();
        let _ = write!(
            self.buf,
            "{{\"seq\":{seq},\"ts\":\"{ts}\",\"prev\":\"{}\",",
            self.last_hash
        );
        // The record is an object starting with `{"type":`.
        self.buf
            .extend_from_slice(body.body.get(1..).unwrap_or_default());
        self.last_hash = line_hash(&self.buf[start..]);
        self.buf.push(b'\n');
        self.next_seq += 1;
        Ok(seq)
    }

    /// Like [`AuditLog::append`], for a record encoded beforehand — on the producer's own
    /// thread, so only the chain step (envelope, hash, copy) is serial.
    pub fn append_encoded(&mut self, ts: DateTime<Utc>, body: &EncodedRecord) -> Result<u64> {
        let seq = self.push_cited(ts, body)?;
        self.after_append(ts)?;
        Ok(seq)
    }

    fn rotate(&mut self) -> Result<()> {
        let path = self.dir.join(segment_name(self.seg + 1));
        let opened = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))
            .and_then(|f| sync_dir(&self.dir).map(|()| f));
        match opened {
            Ok(f) => {
                // Everything written to the old segment is synced (the caller committed):
                // from now on the fsyncs are the new segment's.
                let f = Arc::new(f);
                let mut synced = self.disk.synced.lock().map_err(|_| Error::Poisoned)?;
                synced.file = f.clone();
                synced.path = path;
                drop(synced);
                self.file = f;
                self.seg += 1;
                self.seg_bytes = 0;
                Ok(())
            }
            Err(e) => {
                // No segment may be skipped: nothing more is written in this process.
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// The directory the log is in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the buffered records and fsyncs them (one fsync for the whole group).
    pub fn commit(&mut self) -> Result<()> {
        self.write_out()?.wait()
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned || self.disk.poisoned.load(Ordering::Acquire)
    }

    /// The first half of [`AuditLog::commit`]: writes the buffered records to the segment
    /// (the page cache: no fsync); the returned [`Pending`] makes them — and everything
    /// written before them — durable. Call it under the log's mutex, then release the mutex
    /// and [`Pending::wait`]: appends and writes of other threads go on during the fsync,
    /// and one fsync covers every write made before it started (group commit).
    pub fn write_out(&mut self) -> Result<Pending> {
        if self.is_poisoned() {
            return Err(Error::Poisoned);
        }
        if !self.buf.is_empty() {
            if let Err(e) = (&*self.file).write_all(&self.buf) {
                self.poisoned = true;
                self.disk.poisoned.store(true, Ordering::Release);
                return Err(Error::io(&self.dir.join(segment_name(self.seg)), e));
            }
            self.seg_bytes += self.buf.len() as u64;
            self.disk
                .written
                .fetch_add(self.buf.len() as u64, Ordering::AcqRel);
            self.buf.clear();
        }
        Ok(Pending {
            disk: self.disk.clone(),
            upto: self.disk.written.load(Ordering::Acquire),
        })
    }
}

/// What a log has written and what of it is durable, shared with its [`Pending`] syncs.
struct Disk {
    /// Held across each fsync: one at a time; a sync whose bytes an fsync that started after
    /// they were written already covered returns at once.
    synced: Mutex<Synced>,
    /// Bytes written since the log was opened (all segments).
    written: AtomicU64,
    /// A write or an fsync failed: nothing more is appended in this process.
    poisoned: AtomicBool,
}

struct Synced {
    /// The segment being written (replaced at a rotation, once the old one is synced).
    file: Arc<File>,
    path: PathBuf,
    /// [`Disk::written`] as it was when the last successful fsync started.
    upto: u64,
}

/// Records written by [`AuditLog::write_out`], not yet known to be durable.
#[must_use = "the records are durable only once `wait` returns"]
pub struct Pending {
    disk: Arc<Disk>,
    upto: u64,
}

impl Pending {
    /// Returns once the records (and all written before them) are on disk: an fsync, unless
    /// one that started after they were written has already done it. A failed fsync poisons
    /// the log (its pages may be lost: nothing more is appended).
    pub fn wait(self) -> Result<()> {
        let mut synced = self.disk.synced.lock().map_err(|_| Error::Poisoned)?;
        if self.disk.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        if synced.upto >= self.upto {
            return Ok(());
        }
        let target = self.disk.written.load(Ordering::Acquire);
        if let Err(e) = synced.file.sync_data() {
            self.disk.poisoned.store(true, Ordering::Release);
            return Err(Error::io(&synced.path, e));
        }
        synced.upto = target;
        Ok(())
    }
}

/// A record's own JSON (`{"type":…, …}`), encoded ahead of the chain step. The line is the
/// envelope `{"seq":…,"ts":"…","prev":"…",` followed by this object without its `{`: what
/// `Entry`'s flattened serialization gives, without serde's flatten machinery.
///
/// A decision with its consent records inline is encoded citing them by hash
/// (`consents_sha256`), with the `consent` record that holds them beside it: the log writes
/// that one only the first time its chain needs it.
pub struct EncodedRecord {
    body: Vec<u8>,
    snapshot: Option<([u8; 32], Box<EncodedRecord>)>,
}

impl EncodedRecord {
    pub fn new(record: &Record) -> Result<EncodedRecord> {
        let encode = |r: &Record| serde_json::to_vec(r).map_err(Error::Encode);
        let Record::Decision(d) = record else {
            return Ok(EncodedRecord {
                body: encode(record)?,
                snapshot: None,
            });
        };
        if d.consents_sha256.is_some() {
            return Ok(EncodedRecord {
                body: encode(record)?,
                snapshot: None,
            });
        }
        let digest = snapshot_digest(&d.consents).map_err(Error::Encode)?;
        let sha256 = hex::encode(digest);
        let mut cited = d.clone();
        let consents = std::mem::take(&mut cited.consents);
        cited.consents_sha256 = Some(sha256.clone());
        let snapshot = Record::Consent(ConsentSnapshotRecord { sha256, consents });
        Ok(EncodedRecord {
            body: encode(&Record::Decision(cited))?,
            snapshot: Some((
                digest,
                Box::new(EncodedRecord {
                    body: encode(&snapshot)?,
                    snapshot: None,
                }),
            )),
        })
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RunStop;
    use std::sync::PoisonError;

    fn stop(i: usize) -> Record {
        Record::RunStop(RunStop {
            reason: format!("r{i}"),
        })
    }

    #[test]
    fn a_shared_log_commits_outside_its_lock_and_one_fsync_serves_earlier_writes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let opts = Options {
            // A few records a segment: the writers below rotate while others wait.
            segment_bytes: 600,
            ..Options::default()
        };
        let log = Arc::new(Mutex::new(
            AuditLog::open(dir.path(), opts).unwrap_or_else(|e| panic!("{e}")),
        ));
        let ts = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        // Two writes, the second before the first is synced: its fsync covers both.
        let first = {
            let mut l = log.lock().unwrap_or_else(PoisonError::into_inner);
            l.append(ts, &stop(0)).unwrap_or_else(|e| panic!("{e}"));
            l.write_out().unwrap_or_else(|e| panic!("{e}"))
        };
        let second = {
            let mut l = log.lock().unwrap_or_else(PoisonError::into_inner);
            l.append(ts, &stop(1)).unwrap_or_else(|e| panic!("{e}"));
            l.write_out().unwrap_or_else(|e| panic!("{e}"))
        };
        let disk = first.disk.clone();
        assert!(first.upto < second.upto);
        second.wait().unwrap_or_else(|e| panic!("{e}"));
        let synced = disk.synced.lock().map(|s| s.upto).unwrap_or_default();
        assert!(synced >= disk.written.load(Ordering::Acquire));
        first.wait().unwrap_or_else(|e| panic!("{e}"));
        // Writers on several threads, each append durable, across rotations.
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let pending = {
                            let mut l = log.lock().unwrap_or_else(PoisonError::into_inner);
                            l.append(ts, &stop(100 * t + i))
                                .unwrap_or_else(|e| panic!("{e}"));
                            l.write_out().unwrap_or_else(|e| panic!("{e}"))
                        };
                        pending.wait().unwrap_or_else(|e| panic!("{e}"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap_or_else(|_| panic!("a writer panicked"));
        }
        let synced = disk.synced.lock().map(|s| s.upto).unwrap_or_default();
        assert_eq!(synced, disk.written.load(Ordering::Acquire));
        drop(log);
        let segs = segments(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(segs.len() > 5, "{} segments", segs.len());
        let rep = crate::verify(dir.path(), &crate::VerifyOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rep.records, 102);
        assert!(rep.first_break.is_none(), "{:?}", rep.first_break);
    }
}
