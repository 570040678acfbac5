//! Public-holiday calendars, computed (no tables to go stale).

use crate::time::civil_from_days;

/// A public-holiday calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holidays {
    /// No public holidays.
    None,
    /// France, Code du travail L.3133-1 (the eleven national holidays).
    France,
}

/// Day of year-relative offsets are computed from Easter Sunday (Gregorian computus).
pub(crate) fn easter_sunday(year: i64) -> (u32, u32) {
    // Anonymous Gregorian algorithm (Meeus/Jones/Butcher).
    let a = year.rem_euclid(19);
    let b = year.div_euclid(100);
    let c = year.rem_euclid(100);
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    // month is 3 or 4 and day 1..=31 by construction.
    (month as u32, day as u32)
}

impl Holidays {
    /// The holiday falling on day number `day` (days since 1970-01-01), if any.
    pub fn on_day(&self, day: i64) -> Option<&'static str> {
        match self {
            Holidays::None => None,
            Holidays::France => france(day),
        }
    }
}

fn france(day: i64) -> Option<&'static str> {
    let (y, m, d) = civil_from_days(day);
    let fixed = match (m, d) {
        (1, 1) => Some("Jour de l'an"),
        (5, 1) => Some("Fête du Travail"),
        (5, 8) => Some("Victoire 1945"),
        (7, 14) => Some("Fête nationale"),
        (8, 15) => Some("Assomption"),
        (11, 1) => Some("Toussaint"),
        (11, 11) => Some("Armistice 1918"),
        (12, 25) => Some("Noël"),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    // Easter-based holidays fall between 23 March and 14 June.
    if !(3..=6).contains(&m) {
        return None;
    }
    let (em, ed) = easter_sunday(y);
    let easter = crate::time::days_from_civil(y, em, ed);
    match day - easter {
        1 => Some("Lundi de Pâques"),
        39 => Some("Ascension"),
        50 => Some("Lundi de Pentecôte"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::days_from_civil;

    #[test]
    fn easter_known_years() {
        // Published Gregorian Easter dates.
        for (y, m, d) in [
            (1961, 4, 2),
            (2000, 4, 23),
            (2008, 3, 23),
            (2011, 4, 24),
            (2019, 4, 21),
            (2024, 3, 31),
            (2025, 4, 20),
            (2026, 4, 5),
            (2027, 3, 28),
            (2028, 4, 16),
            (2038, 4, 25),
            (2285, 3, 22),
        ] {
            assert_eq!(easter_sunday(y), (m, d), "{y}");
        }
    }

    #[test]
    fn french_holidays_2027() {
        let named = |y, m, d| Holidays::France.on_day(days_from_civil(y, m, d));
        assert_eq!(named(2027, 3, 29), Some("Lundi de Pâques"));
        assert_eq!(named(2027, 5, 6), Some("Ascension"));
        assert_eq!(named(2027, 5, 17), Some("Lundi de Pentecôte"));
        assert_eq!(named(2027, 7, 14), Some("Fête nationale"));
        assert_eq!(named(2027, 3, 28), None); // Easter Sunday itself is a Sunday, not listed
        assert_eq!(named(2027, 3, 30), None);
        let count = (0..365)
            .filter(|i| {
                Holidays::France
                    .on_day(days_from_civil(2027, 1, 1) + i)
                    .is_some()
            })
            .count();
        assert_eq!(count, 11);
    }
}
