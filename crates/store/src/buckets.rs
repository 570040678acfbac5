//! The contacts layout: each campaign's contacts are spread over [`BUCKETS`] sled values by a
//! hash of their id, each value holding its contacts sorted by id.
//!
//! Why buckets and not one sled key per contact: sled copies a tree node on every insert,
//! which cost about 10 µs per contact and capped an import near 36 k rows/s; writing a few
//! thousand larger values costs about 1 µs per contact (measured, see BENCHMARKS.md). A
//! lookup reads one bucket and walks its entries without decoding them.
//!
//! A bucket is a sequence of entries, sorted by id, each
//! `id length (u32 LE) · id · record length (u32 LE) · record (postcard StoredContact)`.

use crate::Error;

/// Buckets per campaign unless chosen otherwise before its first import
/// ([`count_for`]); a campaign's count is part of its on-disk layout, fixed once it has
/// contacts. At ten million contacts, 4,096 buckets hold about 2,400 contacts each (some
/// 400 KB: reading one contact read all that).
pub(crate) const BUCKETS: usize = 4096;
/// The most buckets a campaign has (bucket numbers are 16 bits).
pub(crate) const MAX_BUCKETS: usize = 1 << 16;

/// The bucket count for a first import of `rows` contacts: a power of two giving at most
/// about 256 contacts per bucket, from [`BUCKETS`] to [`MAX_BUCKETS`].
pub(crate) fn count_for(rows: usize) -> usize {
    (rows / 256).next_power_of_two().clamp(BUCKETS, MAX_BUCKETS)
}

/// A stored bucket count (u32 BE), if it is a valid one.
pub(crate) fn count_from(v: &[u8]) -> Option<usize> {
    let n = u32::from_be_bytes(v.try_into().ok()?) as usize;
    (n.is_power_of_two() && (BUCKETS..=MAX_BUCKETS).contains(&n)).then_some(n)
}

/// The bucket of a contact id among `count` (a power of two, at most 2^16): FNV-1a (64-bit)
/// of its bytes, masked. Written by hand because the layout must never change with a
/// library or compiler release (std's hasher may).
pub(crate) fn bucket_of(id: &str, count: usize) -> u16 {
    // count is a power of two at most 2^16: the mask keeps the value in range.
    (fnv(id) as usize & (count - 1)) as u16
}

/// The due index's bucket of a contact id (see `dueidx`): the low 16 bits of the same hash,
/// so each contacts bucket splits into 16 of them (smaller values: a change rewrites fewer
/// entries).
pub(crate) fn due_bucket_of(id: &str) -> u16 {
    fnv(id) as u16
}

/// The part of an import split in `parts` (a power of two, at most [`BUCKETS`]) a contact
/// id falls in: the low bits of its bucket, so that every contacts bucket (and due index
/// bucket) of a campaign is in one part only — an import written a part at a time writes
/// each bucket once.
pub fn import_part(id: &str, parts: usize) -> usize {
    // A power of two divides every bucket count: the remainder is the bucket's low bits.
    fnv(id) as usize % parts.clamp(1, BUCKETS)
}

fn fnv(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `campaign · 0x00 · bucket (u16 BE)`.
pub(crate) fn bucket_key(campaign: &str, bucket: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + 3);
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k.extend_from_slice(&bucket.to_be_bytes());
    k
}

/// Appends one entry.
pub(crate) fn push_entry(out: &mut Vec<u8>, id: &[u8], record: &[u8]) -> Result<(), Error> {
    push_entry_with(out, id, |mut buf| {
        buf.extend_from_slice(record);
        Ok(buf)
    })
}

/// Appends one entry whose record `write` appends to the buffer it is given (and returns).
pub(crate) fn push_entry_with(
    out: &mut Vec<u8>,
    id: &[u8],
    write: impl FnOnce(Vec<u8>) -> Result<Vec<u8>, Error>,
) -> Result<(), Error> {
    let len = |n: usize| u32::try_from(n).map_err(|_| Error::RecordTooLarge { len: n });
    out.extend_from_slice(&len(id.len())?.to_le_bytes());
    out.extend_from_slice(id);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    *out = write(std::mem::take(out))?;
    let n = len(out.len() - at - 4)?.to_le_bytes();
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&n);
    }
    Ok(())
}

/// The entries of a bucket, in order: `(id, record)`; a damaged bucket yields an error.
pub(crate) struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Entries<'a> {
    pub(crate) fn new(bucket: &'a [u8]) -> Self {
        Entries { rest: bucket }
    }

    fn take(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        let (field, rest) = rest.split_at_checked(len)?;
        self.rest = rest;
        Some(field)
    }
}

/// A bucket's last entry is cut short (its length fields promise more bytes than are left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated;

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), Truncated>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let entry = self.take().and_then(|id| Some((id, self.take()?)));
        if entry.is_none() {
            self.rest = &[];
        }
        Some(entry.ok_or(Truncated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_bucket_function_is_fixed() {
        // Part of the on-disk format: these values must never change.
        assert_eq!(
            bucket_of("", BUCKETS),
            (0xcbf2_9ce4_8422_2325u64 & 4095) as u16
        );
        assert_eq!(bucket_of("c1", BUCKETS), bucket_of("c1", BUCKETS));
        let spread: std::collections::HashSet<u16> = (0..20_000)
            .map(|i| bucket_of(&format!("c{i}"), BUCKETS))
            .collect();
        assert!(spread.len() > 4000, "{} buckets used", spread.len());
    }

    proptest! {
        #[test]
        fn entries_round_trip_and_damage_is_reported(
            items in prop::collection::vec(("[a-z0-9]{0,12}", prop::collection::vec(any::<u8>(), 0..40)), 0..20),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut b = Vec::new();
            for (id, rec) in &items {
                push_entry(&mut b, id.as_bytes(), rec).unwrap_or_else(|e| panic!("{e}"));
            }
            let back: Vec<(Vec<u8>, Vec<u8>)> = Entries::new(&b)
                .map(|e| e.map(|(i, r)| (i.to_vec(), r.to_vec())))
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{e:?}"));
            let want: Vec<(Vec<u8>, Vec<u8>)> =
                items.iter().map(|(i, r)| (i.as_bytes().to_vec(), r.clone())).collect();
            prop_assert_eq!(back, want);
            if !b.is_empty() {
                // Any cut inside the last entry is reported, never read as data.
                let at = cut.index(b.len());
                let cut_entries: Vec<_> = Entries::new(&b[..at]).collect();
                let whole = cut_entries.iter().filter(|e| e.is_ok()).count();
                prop_assert!(whole <= items.len());
                if let Some(last) = cut_entries.last() {
                    let ends_on_boundary = cut_entries.iter().all(Result::is_ok);
                    prop_assert!(ends_on_boundary || last.is_err());
                }
            }
        }
    }
}
