//! The sled store's due index, in a layout of few large values (as the contacts: sled copies
//! a tree node per insert, so one key per contact would cost an import ten times more).
//!
//! One tree (`due-2`), three kinds of keys, all written in one atomic batch per change:
//! Buckets here are the due buckets (`buckets::due_bucket_of`: 65,536 per campaign, whatever
//! its contacts bucket count), so that a change rewrites about 150 entries at 10 M contacts.
//! * `o campaign 0x00 bucket` — the due entries of one bucket: `id length (u32 LE) ·
//!   id · tag (0 done, 1 due) · due µs (i64 BE)`, sorted by id; the contact's own entry;
//! * `c campaign 0x00 bucket` — that bucket's counters: remaining, done (u64 LE each);
//! * `s campaign 0x00 ord(hour) bucket` — the contacts of that bucket due within that hour:
//!   `due µs (i64 BE) · id length (u32 LE) · id`, sorted; ordered by hour, the index
//!   `claim_due` and `next_due` walk.
//!
//! An import writes the contacts first, then this batch: after a crash between the two, a
//! contact may lack its entry — re-running the import gives it one (`due::Imported`).

use std::collections::BTreeMap;

use crate::{buckets, due, io, Error, Progress, Result, SledStore};

/// Microseconds per slot of the ordered index: an hour.
const SLOT_US: i64 = 3_600_000_000;

fn slot_of(us: i64) -> i64 {
    us.div_euclid(SLOT_US)
}

fn key(kind: u8, campaign: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + 12);
    k.push(kind);
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k
}

pub(crate) fn entries_key(campaign: &str, bucket: u16) -> Vec<u8> {
    let mut k = key(b'o', campaign);
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

fn counts_key(campaign: &str, bucket: u16) -> Vec<u8> {
    let mut k = key(b'c', campaign);
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

fn slot_key(campaign: &str, slot: i64, bucket: u16) -> Vec<u8> {
    let mut k = key(b's', campaign);
    k.extend_from_slice(&due::ord(slot));
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

fn corrupt(k: &[u8], why: &str) -> Error {
    Error::Corrupt {
        key: String::from_utf8_lossy(k).replace('\0', "/"),
        why: why.to_owned(),
    }
}

/// A little-endian u32 length, then that many bytes.
fn take<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let v = b.get(4..4 + n)?;
    *b = &b[4 + n..];
    Some(v)
}

fn i64_at(b: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

fn push_id(out: &mut Vec<u8>, id: &[u8]) {
    out.extend_from_slice(&(id.len() as u32).to_le_bytes());
    out.extend_from_slice(id);
}

/// A bucket's due entries: id → due µs (`None`: done).
pub(crate) type Entries = BTreeMap<Vec<u8>, Option<i64>>;

fn decode_entries(k: &[u8], mut v: &[u8]) -> Result<Entries> {
    let mut out = Entries::new();
    while !v.is_empty() {
        let id = take(&mut v).ok_or_else(|| corrupt(k, "a truncated due entry"))?;
        let (tag, due) = match (v.first(), i64_at(v.get(1..).unwrap_or_default())) {
            (Some(t), Some(d)) => (*t, d),
            _ => return Err(corrupt(k, "a truncated due entry")),
        };
        v = &v[9..];
        out.insert(id.to_vec(), (tag == 1).then_some(due));
    }
    Ok(out)
}

fn encode_entries(e: &Entries) -> Vec<u8> {
    let mut out = Vec::with_capacity(e.len() * 24);
    for (id, d) in e {
        push_id(&mut out, id);
        out.push(u8::from(d.is_some()));
        out.extend_from_slice(&d.unwrap_or(0).to_be_bytes());
    }
    out
}

/// A slot's entries: (due µs, id), sorted.
type Slot = std::collections::BTreeSet<(i64, Vec<u8>)>;

fn decode_slot(k: &[u8], mut v: &[u8]) -> Result<Slot> {
    let mut out = Slot::new();
    while !v.is_empty() {
        let d = i64_at(v).ok_or_else(|| corrupt(k, "a truncated slot entry"))?;
        v = &v[8..];
        let id = take(&mut v).ok_or_else(|| corrupt(k, "a truncated slot entry"))?;
        out.insert((d, id.to_vec()));
    }
    Ok(out)
}

/// The slot entry at `at` in a slot value: (due, id, where the next one starts).
fn slot_entry<'v>(k: &[u8], v: &'v [u8], at: usize) -> Result<Option<(i64, &'v [u8], usize)>> {
    let Some(mut rest) = v.get(at..).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let d = i64_at(rest).ok_or_else(|| corrupt(k, "a truncated slot entry"))?;
    rest = &rest[8..];
    let before = rest.len();
    let id = take(&mut rest).ok_or_else(|| corrupt(k, "a truncated slot entry"))?;
    Ok(Some((d, id, at + 8 + (before - rest.len()))))
}

fn encode_slot(s: &Slot) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() * 20);
    for (d, id) in s {
        out.extend_from_slice(&d.to_be_bytes());
        push_id(&mut out, id);
    }
    out
}

fn encode_counts(p: Progress) -> [u8; 16] {
    let mut b = [0; 16];
    b[..8].copy_from_slice(&p.remaining.to_le_bytes());
    b[8..].copy_from_slice(&p.done.to_le_bytes());
    b
}

fn decode_counts(k: &[u8], v: &[u8]) -> Result<Progress> {
    let half = |r: std::ops::Range<usize>| {
        v.get(r)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    match (v.len(), half(0..8), half(8..16)) {
        (16, Some(remaining), Some(done)) => Ok(Progress { remaining, done }),
        _ => Err(corrupt(k, "counters of the wrong size")),
    }
}

/// The changes to one contacts bucket's due entries, gathered before they are written.
pub(crate) struct BucketChange<'s> {
    store: &'s SledStore,
    campaign: &'s str,
    bucket: u16,
    entries: Entries,
    /// The bucket's counters as read, and as changed.
    counts_before: Progress,
    counts: Progress,
    slots: BTreeMap<i64, Slot>,
}

/// How a write moves a campaign's counters (summed over its buckets' changes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    pub remaining: i64,
    pub done: i64,
}

impl Delta {
    pub(crate) fn add(&mut self, other: Delta) {
        self.remaining += other.remaining;
        self.done += other.done;
    }

    /// `p` moved by this change.
    pub(crate) fn apply(self, p: &mut Progress) {
        let moved = |n: u64, d: i64| n.saturating_add_signed(d);
        p.remaining = moved(p.remaining, self.remaining);
        p.done = moved(p.done, self.done);
    }
}

impl<'s> BucketChange<'s> {
    pub(crate) fn load(store: &'s SledStore, campaign: &'s str, bucket: u16) -> Result<Self> {
        let ek = entries_key(campaign, bucket);
        let entries = match store.due.get(&ek).map_err(io)? {
            Some(v) => decode_entries(&ek, &v)?,
            None => Entries::new(),
        };
        let ck = counts_key(campaign, bucket);
        let counts = match store.due.get(&ck).map_err(io)? {
            Some(v) => decode_counts(&ck, &v)?,
            None => Progress::default(),
        };
        Ok(BucketChange {
            store,
            campaign,
            bucket,
            entries,
            counts_before: counts,
            counts,
            slots: BTreeMap::new(),
        })
    }

    /// The contact's entry: `None` if it has none.
    pub(crate) fn get(&self, id: &[u8]) -> Option<Option<i64>> {
        self.entries.get(id).copied()
    }

    fn slot(&mut self, slot: i64) -> Result<&mut Slot> {
        if let std::collections::btree_map::Entry::Vacant(e) = self.slots.entry(slot) {
            let k = slot_key(self.campaign, slot, self.bucket);
            let s = match self.store.due.get(&k).map_err(io)? {
                Some(v) => decode_slot(&k, &v)?,
                None => Slot::new(),
            };
            e.insert(s);
        }
        self.slots.get_mut(&slot).ok_or_else(|| Error::Corrupt {
            key: "due index".into(),
            why: "a due slot vanished".into(),
        })
    }

    /// Sets the contact's due instant (`before`: its entry as [`BucketChange::get`] gave it).
    pub(crate) fn set(
        &mut self,
        id: &[u8],
        before: Option<Option<i64>>,
        after: Option<i64>,
    ) -> Result<()> {
        if before == Some(after) {
            return Ok(());
        }
        due::count(&mut self.counts, before, after);
        if let Some(Some(b)) = before {
            self.slot(slot_of(b))?.remove(&(b, id.to_vec()));
        }
        if let Some(a) = after {
            self.slot(slot_of(a))?.insert((a, id.to_vec()));
        }
        self.entries.insert(id.to_vec(), after);
        Ok(())
    }

    /// Adds the bucket's new values to `batch`; returns how they move the counters.
    pub(crate) fn write(self, batch: &mut sled::Batch) -> Delta {
        batch.insert(
            entries_key(self.campaign, self.bucket),
            encode_entries(&self.entries),
        );
        batch.insert(
            counts_key(self.campaign, self.bucket),
            &encode_counts(self.counts)[..],
        );
        for (slot, s) in &self.slots {
            let k = slot_key(self.campaign, *slot, self.bucket);
            if s.is_empty() {
                batch.remove(k);
            } else {
                batch.insert(k, encode_slot(s));
            }
        }
        let d = |after: u64, before: u64| after as i64 - before as i64;
        Delta {
            remaining: d(self.counts.remaining, self.counts_before.remaining),
            done: d(self.counts.done, self.counts_before.done),
        }
    }
}

impl SledStore {
    /// Every entry due at or before `until_us`, earliest first, while `more` says to go on.
    /// Slot by slot; within a slot, a lazy merge of its buckets' sorted values: the cost is
    /// the entries yielded (and one read per bucket of each slot reached), not the slot's
    /// size.
    pub(crate) fn walk_due(
        &self,
        campaign: &str,
        until_us: i64,
        mut more: impl FnMut(i64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        use std::cmp::Reverse;
        let start = key(b's', campaign);
        let mut end = key(b's', campaign);
        end.extend_from_slice(&due::ord(slot_of(until_us).saturating_add(1)));
        let slot_from = |k: &[u8]| {
            k.get(start.len()..start.len() + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(due::unord)
                .ok_or_else(|| corrupt(k, "a slot key too short"))
        };
        let mut iter = self.due.range(start.clone()..end).peekable();
        while let Some(kv) = iter.next() {
            let (k, v) = kv.map_err(io)?;
            let slot = slot_from(&k)?;
            let mut values = vec![(k, v)];
            while let Some(Ok((k2, _))) = iter.peek() {
                if slot_from(k2)? != slot {
                    break;
                }
                if let Some(kv) = iter.next() {
                    values.push(kv.map_err(io)?);
                }
            }
            let mut heap = std::collections::BinaryHeap::new();
            for (i, (k, v)) in values.iter().enumerate() {
                if let Some(e) = slot_entry(k, v, 0)? {
                    heap.push(Reverse((e.0, e.1.to_vec(), i, e.2)));
                }
            }
            while let Some(Reverse((d, id, i, next))) = heap.pop() {
                if d > until_us || !more(d, &id)? {
                    return Ok(());
                }
                let (k, v) = &values[i];
                if let Some(e) = slot_entry(k, v, next)? {
                    heap.push(Reverse((e.0, e.1.to_vec(), i, e.2)));
                }
            }
        }
        Ok(())
    }

    /// A campaign's counters, summed over its buckets (a scan of its up to 65,536 counter
    /// keys: [`crate::Store::progress`] does it once per campaign and process, then keeps the
    /// sum up to date with each write's [`Delta`]).
    pub(crate) fn due_counts(&self, campaign: &str) -> Result<Progress> {
        let mut total = Progress::default();
        for kv in self.due.scan_prefix(key(b'c', campaign)) {
            let (k, v) = kv.map_err(io)?;
            let p = decode_counts(&k, &v)?;
            total.remaining += p.remaining;
            total.done += p.done;
        }
        Ok(total)
    }

    /// Builds the due index of a store written before it existed: every contact due at its
    /// earliest consent grant. From scratch (a crash before the marker is set starts over).
    pub(crate) fn build_due_index(&self) -> Result<()> {
        self.due.clear().map_err(io)?;
        for kv in self.contacts.iter() {
            let (k, bucket) = kv.map_err(io)?;
            let Some(sep) = k.iter().position(|&c| c == 0) else {
                return Err(corrupt(&k, "not a bucket key"));
            };
            let campaign = String::from_utf8_lossy(&k[..sep]).into_owned();
            let mut changes: BTreeMap<u16, BucketChange<'_>> = BTreeMap::new();
            for e in buckets::Entries::new(&bucket) {
                let (id, v) = e.map_err(|t| crate::bucket_corrupt(&k, t))?;
                let s: crate::StoredContact =
                    postcard::from_bytes(v).map_err(|e| corrupt(&k, &e.to_string()))?;
                let b = buckets::due_bucket_of(&String::from_utf8_lossy(id));
                if let std::collections::btree_map::Entry::Vacant(e) = changes.entry(b) {
                    e.insert(BucketChange::load(self, &campaign, b)?);
                }
                if let Some(change) = changes.get_mut(&b) {
                    let before = change.get(id);
                    change.set(id, before, due::earliest(&s))?;
                }
            }
            let mut batch = sled::Batch::default();
            for change in changes.into_values() {
                change.write(&mut batch);
            }
            // Before any counter is cached (the store is being opened).
            self.due.apply_batch(batch).map_err(io)?;
        }
        self.durable()
    }
}
