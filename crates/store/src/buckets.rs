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
/// The most buckets a campaign has: 2^20 (bucket numbers above 2^16 take 4 bytes in keys).
pub(crate) const MAX_BUCKETS: usize = 1 << 20;
/// Contacts per bucket [`count_for`] aims at (between this and half of it, above 4,096
/// buckets).
///
/// Why small: sled keeps up to 16 keys in a tree leaf and reads, caches and copies a leaf
/// whole, so reading one contact costs a leaf — 16 buckets. With ~150 contacts a bucket (10 M
/// contacts in 65,536 buckets) that was ~500 KB per due contact, and a tick for 1,000 due
/// contacts read ~500 MB (1 s at 10 M, against 0.07 s at 100 k: profiled). With ~20–30 a
/// bucket, a leaf is ~60–100 KB at any size. An import's cost does not grow with the count:
/// sled copies the leaf on each insert, and there are as many fewer inserts as leaves are
/// smaller.
pub(crate) const PER_BUCKET: usize = 32;

/// The bucket count for a first import of `rows` contacts: a power of two giving at most
/// about [`PER_BUCKET`] contacts per bucket, from [`BUCKETS`] to [`MAX_BUCKETS`].
pub(crate) fn count_for(rows: usize) -> usize {
    (rows / PER_BUCKET)
        .next_power_of_two()
        .clamp(BUCKETS, MAX_BUCKETS)
}

/// A stored bucket count (u32 BE), if it is a valid one.
pub(crate) fn count_from(v: &[u8]) -> Option<usize> {
    let n = u32::from_be_bytes(v.try_into().ok()?) as usize;
    (n.is_power_of_two() && (BUCKETS..=MAX_BUCKETS).contains(&n)).then_some(n)
}

/// The bucket of a contact id among `count` (a power of two, at most [`MAX_BUCKETS`]): FNV-1a
/// (64-bit) of its bytes, masked. Written by hand because the layout must never change with
/// a library or compiler release (std's hasher may).
pub(crate) fn bucket_of(id: &str, count: usize) -> u32 {
    // count is a power of two at most 2^20: the mask keeps the value in range.
    (fnv(id) as usize & (count - 1)) as u32
}

/// The due index's bucket of a contact id (see `dueidx`): the low 16 bits of the same hash
/// (65,536 per campaign whatever its contacts bucket count).
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

/// `campaign · 0x00 · bucket`: u16 BE for a campaign of at most 65,536 buckets (`count`),
/// as every store written before larger counts existed; above, u32 BE of the bucket's
/// [`position`]. One width per campaign.
pub(crate) fn bucket_key(campaign: &str, bucket: u32, count: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + 5);
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    match u16::try_from(bucket) {
        Ok(b) if count <= 1 << 16 => k.extend_from_slice(&b.to_be_bytes()),
        _ => k.extend_from_slice(&position(bucket, count).to_be_bytes()),
    }
    k
}

/// Where a bucket's key sorts among its campaign's: above 65,536 buckets, its number with
/// its bits reversed (over the count's width), so that the buckets of one import part (the
/// same low bits, [`import_part`]) are contiguous in the tree. sled keeps 16 keys a leaf:
/// an import written a part at a time then fills each leaf once, instead of coming back to
/// every leaf in every part after the page cache let it go (read again from the log).
pub(crate) fn position(bucket: u32, count: usize) -> u32 {
    if count <= 1 << 16 {
        return bucket;
    }
    let bits = count.trailing_zeros();
    bucket.reverse_bits() >> (32 - bits)
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
            (0xcbf2_9ce4_8422_2325u64 & 4095) as u32
        );
        assert_eq!(
            bucket_of("", MAX_BUCKETS),
            (0xcbf2_9ce4_8422_2325u64 & 0xf_ffff) as u32
        );
        // Two bytes up to 65,536 buckets (the layout of every earlier store), four above.
        assert_eq!(bucket_key("k", 0x1234, 1 << 16), b"k\0\x12\x34".to_vec());
        // Above, the bits reversed over the count's width: 17 bits of 0x1234.
        assert_eq!(
            bucket_key("k", 0x1234, 1 << 17),
            ((0x1234u32.reverse_bits() >> 15).to_be_bytes().iter()).fold(
                b"k\0".to_vec(),
                |mut k, b| {
                    k.push(*b);
                    k
                }
            )
        );
        assert_eq!(position(1, 1 << 17), 1 << 16);
        // One import part's buckets (the same low bits) are one run of positions.
        let parts = 64;
        let count = 1 << 19;
        let mut of_part: Vec<u32> = (0..count as u32)
            .filter(|b| *b as usize % parts == 5)
            .map(|b| position(b, count))
            .collect();
        of_part.sort_unstable();
        assert_eq!(
            of_part.last().map(|l| l - of_part[0] + 1),
            Some((count / parts) as u32)
        );
        assert_eq!(bucket_of("c1", BUCKETS), bucket_of("c1", BUCKETS));
        let spread: std::collections::HashSet<u32> = (0..20_000)
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
