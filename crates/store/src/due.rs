//! The due index, shared rules of both backends: when an import makes a contact due, and
//! how a change of due instant moves the remaining/done counters.
//!
//! A contact's due instant is the next instant it may be due for a decision (its evaluation
//! by the planner): `Some(µs)` — remaining, `None` — done (never due again unless an import
//! adds consent). Imports set it; the run sets it after each evaluation (a skip's
//! `next_eligible`, a retry's not-before instant, `None` when nothing is left to do).

use crate::{Progress, StoredConsent, StoredContact};

/// A consent record's grant instant, in microseconds.
pub(crate) fn granted_us(c: &StoredConsent) -> i64 {
    c.granted_at
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(c.granted_nanos / 1000))
}

/// The earliest grant among a contact's consent records: no contact can be dialled before
/// its consent was granted, so an imported contact is first due then. `None`: no record.
pub(crate) fn earliest(s: &StoredContact) -> Option<i64> {
    s.consents.iter().map(granted_us).min()
}

/// What one import did to one contact, for the due index.
#[derive(Debug, Clone)]
pub(crate) struct Imported {
    pub id: String,
    /// The contact was in the store before this import.
    pub existed: bool,
    /// The earliest grant among the consent records this import added (`None`: none added).
    pub added: Option<i64>,
    /// The earliest grant among all its consent records after the import.
    pub all: Option<i64>,
}

impl Imported {
    /// The contact's due instant after the import, given the one it had (`None`: no entry —
    /// a new contact, or one whose entry a crash mid-import lost), or `None` if unchanged.
    /// New consent can only make a contact due sooner (a re-evaluation), never later.
    pub fn due_after(&self, before: Option<Option<i64>>) -> Option<Option<i64>> {
        let after = match (self.existed, before) {
            (false, _) | (true, None) => self.all,
            (true, Some(Some(d))) => Some(self.added.map_or(d, |a| a.min(d))),
            (true, Some(None)) => self.added,
        };
        (before != Some(after)).then_some(after)
    }
}

/// Applies a change of one contact's due instant (`before`: `None` if it had no entry) to
/// the counters.
pub(crate) fn count(p: &mut Progress, before: Option<Option<i64>>, after: Option<i64>) {
    match before {
        Some(Some(_)) => p.remaining = p.remaining.saturating_sub(1),
        Some(None) => p.done = p.done.saturating_sub(1),
        None => {}
    }
    match after {
        Some(_) => p.remaining += 1,
        None => p.done += 1,
    }
}

/// Signed microseconds as 8 bytes that sort like the numbers (sign bit flipped, big-endian).
pub(crate) fn ord(us: i64) -> [u8; 8] {
    ((us as u64) ^ (1 << 63)).to_be_bytes()
}

/// The inverse of [`ord`].
pub(crate) fn unord(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ord_sorts_like_the_numbers_and_round_trips() {
        let xs = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000_000, i64::MAX];
        for w in xs.windows(2) {
            assert!(ord(w[0]) < ord(w[1]), "{} < {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(unord(ord(x)), x);
        }
    }

    #[test]
    fn new_consent_makes_a_contact_due_sooner_never_later() {
        let imp = |existed, added, all| Imported {
            id: "a".into(),
            existed,
            added,
            all,
        };
        // New contact: due at its earliest grant; none → done.
        assert_eq!(imp(false, Some(5), Some(5)).due_after(None), Some(Some(5)));
        assert_eq!(imp(false, None, None).due_after(None), Some(None));
        // Existing, due at 10: a record granted at 5 brings it forward, one at 20 does not.
        assert_eq!(
            imp(true, Some(5), Some(1)).due_after(Some(Some(10))),
            Some(Some(5))
        );
        assert_eq!(imp(true, Some(20), Some(1)).due_after(Some(Some(10))), None);
        // Done, then new consent: due again at its grant.
        assert_eq!(
            imp(true, Some(20), Some(1)).due_after(Some(None)),
            Some(Some(20))
        );
        // Done and nothing added: unchanged.
        assert_eq!(imp(true, None, Some(1)).due_after(Some(None)), None);
        // Existing without an entry (lost by a crash mid-import): repaired from all records.
        assert_eq!(imp(true, None, Some(1)).due_after(None), Some(Some(1)));
    }

    #[test]
    fn counters_move_with_the_due_instant() {
        let mut p = Progress::default();
        count(&mut p, None, Some(1));
        count(&mut p, None, Some(2));
        count(&mut p, Some(Some(1)), None);
        assert_eq!(
            p,
            Progress {
                remaining: 1,
                done: 1
            }
        );
        count(&mut p, Some(None), Some(3));
        assert_eq!(
            p,
            Progress {
                remaining: 2,
                done: 0
            }
        );
    }
}
