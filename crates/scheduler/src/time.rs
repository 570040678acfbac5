//! Integer civil-time arithmetic on whole seconds.
//!
//! Internally every instant is an `i64` count of seconds since 1970-01-01T00:00:00Z, and every
//! wall-clock reading is an `i64` count of "local seconds": the same count taken as if the
//! local calendar were UTC. This keeps the hot path free of allocation and of calendar types;
//! `chrono` is used only at the API boundary.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Seconds in a civil day.
pub(crate) const DAY: i64 = 86_400;
/// Seconds in a civil week.
pub(crate) const WEEK: i64 = 7 * DAY;
/// Local second of Monday 1969-12-29T00:00, the Monday on or before the epoch.
pub(crate) const MONDAY_EPOCH: i64 = -3 * DAY;

/// Day number (days since 1970-01-01) of a local second.
pub(crate) fn day_of(local: i64) -> i64 {
    local.div_euclid(DAY)
}

/// Weekday of a day number, Monday = 0 … Sunday = 6.
pub(crate) fn weekday(day: i64) -> u32 {
    // 1970-01-01 was a Thursday (3). rem_euclid(7) is in 0..7, so the cast is lossless.
    (day + 3).rem_euclid(7) as u32
}

/// Proleptic Gregorian (year, month 1..=12, day 1..=31) of a day number.
///
/// Howard Hinnant's `civil_from_days`; exact for every i64 day number we can meet.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Day number of a proleptic Gregorian date (inverse of [`civil_from_days`]).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whole seconds of a UTC instant, rounded down.
pub(crate) fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// Whole seconds of a UTC instant, rounded up (used for the start of a validity period,
/// so rounding never widens it).
pub(crate) fn secs_ceil(t: DateTime<Utc>) -> i64 {
    let s = t.timestamp();
    if t.timestamp_subsec_nanos() > 0 {
        s.saturating_add(1)
    } else {
        s
    }
}

/// A UTC instant from whole seconds, saturating at chrono's representable range.
pub(crate) fn utc(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(s, 0).unwrap_or(if s < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// A wall-clock reading from local seconds.
pub(crate) fn naive(local: i64) -> NaiveDateTime {
    utc(local).naive_utc()
}

/// The calendar date of a day number.
pub(crate) fn date(day: i64) -> NaiveDate {
    naive(day.saturating_mul(DAY)).date()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn civil_round_trip_matches_chrono(day in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(day);
            prop_assert_eq!(days_from_civil(y, m, d), day);
            let c = Utc.timestamp_opt(day * DAY, 0).single();
            prop_assert!(c.is_some());
            let c = c.map(|c| c.date_naive()).unwrap_or_default();
            prop_assert_eq!((c.year() as i64, c.month(), c.day()), (y, m, d));
            prop_assert_eq!(weekday(day), c.weekday().num_days_from_monday());
        }
    }
}
