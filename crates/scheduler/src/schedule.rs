//! The campaign schedule: 5-field cron expressions read as sets of minutes, in the
//! campaign's zone.
//!
//! Each expression is parsed and validated by the `cron` crate (as `0 <expr>` with the
//! day-of-week field translated, see below), then its field sets are copied into bit masks so
//! that "which minutes of this local day does the schedule hold" costs a few bit tests.
//!
//! * A minute matches when its minute, hour, month and day match; the schedule *holds*
//!   during every second of a matching minute, so `* 9-17 * * mon-fri` holds from 09:00:00
//!   to 17:59:59 on weekdays.
//! * Day-of-week uses crontab(5) numbering: 0 or 7 = Sunday, 1 = Monday … 6 = Saturday
//!   (the `cron` crate numbers Sunday = 1, so numbers are translated, never passed through).
//! * Day-of-month and day-of-week combine as in Vixie cron: when both are restricted (neither
//!   covers every value), a day matches if **either** matches; otherwise both must.

use std::str::FromStr;

use chrono_tz::Tz;
use cron::TimeUnitSpec;

use crate::interval::{push, Span};
use crate::time::{civil_from_days, day_of, weekday, DAY};
use crate::Error;

/// One 5-field cron expression compiled to bit masks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpr {
    source: String,
    /// Bit `m` = month `m` (1..=12).
    months: u16,
    /// Bit `d` = day of month `d` (1..=31).
    dom: u32,
    /// Bit `d` = weekday `d`, Monday = 0.
    dow: u8,
    dom_restricted: bool,
    dow_restricted: bool,
    /// Seconds-of-day intervals where hour and minute match, sorted and merged.
    day_pattern: Vec<Span>,
}

impl CronExpr {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression holds at some minute in 2020–2035 (a 16-year span covers
    /// every month/day/weekday combination, leap days included).
    pub fn holds_ever(&self) -> bool {
        let first = crate::time::days_from_civil(2020, 1, 1);
        let last = crate::time::days_from_civil(2036, 1, 1);
        !self.day_pattern.is_empty() && (first..last).any(|d| self.day_matches(d))
    }

    fn day_matches(&self, day: i64) -> bool {
        let (_, m, d) = civil_from_days(day);
        if self.months & (1 << m) == 0 {
            return false;
        }
        let dom = self.dom & (1 << d) != 0;
        let dow = self.dow & (1 << weekday(day)) != 0;
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }
}

const DOW_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parses a crontab(5) day-of-week field into a set of Unix weekdays (bit 0 = Sunday).
fn unix_dow(field: &str) -> Result<u8, &'static str> {
    const EXPECTED: &str = "0-7 or sun-sat, with lists, ranges and steps";
    let value = |s: &str| -> Result<u32, &'static str> {
        if let Ok(n) = s.parse::<u32>() {
            return if n <= 7 { Ok(n) } else { Err(EXPECTED) };
        }
        let lower = s.to_ascii_lowercase();
        DOW_NAMES
            .iter()
            .position(|d| *d == lower)
            // position() < 7: lossless.
            .map(|p| p as u32)
            .ok_or(EXPECTED)
    };
    let mut set = 0u8;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| EXPECTED)?),
            None => (item, 1),
        };
        if step == 0 {
            return Err(EXPECTED);
        }
        let (lo, hi) = match range {
            "*" | "?" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if step > 1 => (value(r)?, 7),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        // `fri-sun`, `5-0`: a range may end on Sunday written as 0.
        let hi = if hi == 0 && lo > 0 { 7 } else { hi };
        if lo > hi {
            return Err(EXPECTED);
        }
        let mut d = lo;
        while d <= hi {
            set |= 1 << (d % 7);
            d += step;
        }
    }
    Ok(set)
}

impl FromStr for CronExpr {
    type Err = Error;

    fn from_str(expr: &str) -> Result<Self, Error> {
        let err = |reason: String| Error::InvalidCron {
            expr: expr.to_owned(),
            reason,
        };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            )));
        }
        let unix = unix_dow(fields[4])
            .map_err(|e| err(format!("day-of-week `{}`: expected {e}", fields[4])))?;
        // Validate field by field with the `cron` crate, so the error names the field.
        const NAMES: [(&str, &str); 4] = [
            ("minute", "0-59"),
            ("hour", "0-23"),
            ("day-of-month", "1-31"),
            ("month", "1-12 or jan-dec"),
        ];
        for (i, (name, range)) in NAMES.iter().enumerate() {
            let mut probe = ["*"; 4];
            probe[i] = fields[i];
            let six = format!("0 {} {} {} {} *", probe[0], probe[1], probe[2], probe[3]);
            if cron::Schedule::from_str(&six).is_err() {
                return Err(err(format!(
                    "{name} `{}`: expected {range}, with lists, ranges and steps",
                    fields[i]
                )));
            }
        }
        // Unix weekday u (0 = Sunday) is the cron crate's ordinal u + 1.
        let crate_dow = if unix == 0x7f {
            "*".to_owned()
        } else {
            (0..7)
                .filter(|d| unix & (1 << d) != 0)
                .map(|d| (d + 1).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let six = format!(
            "0 {} {} {} {} {}",
            fields[0], fields[1], fields[2], fields[3], crate_dow
        );
        let s = cron::Schedule::from_str(&six).map_err(|e| err(e.to_string()))?;

        let minutes: u64 = s.minutes().iter().fold(0, |acc, m| acc | 1 << m);
        let hours: u32 = s.hours().iter().fold(0, |acc, h| acc | 1 << h);
        let mut day_pattern = Vec::new();
        for h in 0..24i64 {
            if hours & (1 << h) == 0 {
                continue;
            }
            for m in 0..60i64 {
                if minutes & (1 << m) != 0 {
                    let start = h * 3600 + m * 60;
                    push(&mut day_pattern, Span::new(start, start + 60));
                }
            }
        }
        // Unix bit 0 = Sunday → our bit 6; Unix bit d (1..=6) → our bit d − 1.
        let dow = (0..7)
            .filter(|d| unix & (1 << d) != 0)
            .fold(0u8, |acc, d| acc | 1 << ((d + 6) % 7));
        Ok(CronExpr {
            source: expr.to_owned(),
            months: s.months().iter().fold(0, |acc, m| acc | 1 << m),
            dom: s.days_of_month().iter().fold(0, |acc, d| acc | 1 << d),
            dow,
            // Vixie cron: a day field is unrestricted iff it starts with `*` (or is `?`).
            dom_restricted: !(fields[2].starts_with('*') || fields[2] == "?"),
            dow_restricted: !(fields[4].starts_with('*') || fields[4] == "?"),
            day_pattern,
        })
    }
}

/// A campaign's schedule: calls only while at least one expression holds, read in `zone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignSchedule {
    exprs: Vec<CronExpr>,
    zone: Tz,
}

impl CampaignSchedule {
    /// A schedule of one or more expressions in `zone`. An empty list is an error: a
    /// campaign without a schedule has `None` instead.
    pub fn new(exprs: Vec<CronExpr>, zone: Tz) -> Result<Self, Error> {
        if exprs.is_empty() {
            return Err(Error::EmptySchedule);
        }
        Ok(CampaignSchedule { exprs, zone })
    }

    /// The expressions.
    pub fn exprs(&self) -> &[CronExpr] {
        &self.exprs
    }

    /// The zone the expressions are read in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Whether the schedule holds at the wall-clock reading `local`.
    pub(crate) fn holds_local(&self, local: i64) -> bool {
        let day = day_of(local);
        let into = local - day * DAY;
        self.exprs
            .iter()
            .any(|e| e.day_matches(day) && e.day_pattern.iter().any(|s| s.contains(into)))
    }

    /// Appends to `out` the local-seconds intervals within `[lo, hi)` where the schedule holds.
    pub(crate) fn local_spans(&self, lo: i64, hi: i64, out: &mut Vec<Span>) {
        let (mut day, last) = (day_of(lo), day_of(hi - 1));
        let mut todays = Vec::new();
        while day <= last {
            todays.clear();
            for e in self.exprs.iter().filter(|e| e.day_matches(day)) {
                todays.extend(e.day_pattern.iter().copied());
            }
            if self.exprs.len() > 1 {
                todays.sort_by_key(|s| s.start);
            }
            let base = day * DAY;
            for s in &todays {
                let start = (base + s.start).max(lo);
                let end = (base + s.end).min(hi);
                if start < end {
                    push(out, Span::new(start, end));
                }
            }
            day += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::days_from_civil;
    use chrono::{Datelike, Timelike};
    use proptest::prelude::*;

    fn c(s: &str) -> CronExpr {
        match s.parse() {
            Ok(c) => c,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn unix_day_of_week_numbering() {
        let mon_fri = c("* * * * 1-5");
        assert_eq!(mon_fri.dow, 0b0011111);
        assert_eq!(c("* * * * 0").dow, 0b1000000);
        assert_eq!(c("* * * * 7").dow, 0b1000000);
        assert_eq!(c("* * * * 5-7").dow, 0b1110000);
        assert_eq!(c("* * * * sat,sun").dow, 0b1100000);
        assert_eq!(c("* * * * */2").dow, 0b1101010); // sun, tue, thu, sat
        assert_eq!(c("* * * * fri-sun").dow, 0b1110000);
        assert_eq!(c("* * * * 5-0").dow, 0b1110000);
    }

    #[test]
    fn vixie_day_semantics() {
        // 1st of the month OR a Monday.
        let e = c("* * 1 * mon");
        assert!(e.day_matches(days_from_civil(2027, 3, 1))); // Monday the 1st
        assert!(e.day_matches(days_from_civil(2027, 3, 8))); // Monday
        assert!(e.day_matches(days_from_civil(2027, 4, 1))); // Thursday the 1st
        assert!(!e.day_matches(days_from_civil(2027, 4, 2)));
        // Only day-of-week restricted: AND with "every day of month".
        let e = c("* * * * mon");
        assert!(!e.day_matches(days_from_civil(2027, 4, 1)));
    }

    #[test]
    fn vixie_star_rule() {
        // `*/2` starts with `*`: unrestricted, so AND with day-of-week.
        let e = c("* * */2 * mon");
        assert!(!e.day_matches(days_from_civil(2027, 4, 1))); // Thursday the 1st
        assert!(e.day_matches(days_from_civil(2027, 3, 1))); // Monday the 1st
                                                             // `1-31` does not start with `*`: restricted, so OR.
        assert!(c("* * 1-31 * mon").day_matches(days_from_civil(2027, 4, 1)));
    }

    #[test]
    fn never_holding_expressions() {
        assert!(!c("* * 31 2 *").holds_ever());
        assert!(c("* * 29 2 *").holds_ever());
        assert!(c("* 9-17 * * mon-fri").holds_ever());
    }

    #[test]
    fn errors_name_the_field() {
        let reason = |s: &str| match s.parse::<CronExpr>() {
            Err(Error::InvalidCron { reason, .. }) => reason,
            other => panic!("{s}: {other:?}"),
        };
        assert!(reason("* 25 * * *").starts_with("hour `25`: expected 0-23"));
        assert!(reason("61 * * * *").starts_with("minute `61`"));
        assert!(reason("* * 0 * *").starts_with("day-of-month `0`"));
        assert!(reason("* * * 13 *").starts_with("month `13`"));
        assert!(reason("* * * * 8").starts_with("day-of-week `8`"));
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in [
            "* * * *",
            "61 * * * *",
            "* 9-17 * * 8",
            "* * * * mon-",
            "* * 32 * *",
            "x * * * *",
        ] {
            assert!(
                matches!(bad.parse::<CronExpr>(), Err(Error::InvalidCron { .. })),
                "{bad}"
            );
        }
    }

    proptest! {
        /// Our bit-mask evaluation agrees with the `cron` crate's own `includes` whenever the
        /// two semantics coincide (at most one of day-of-month / day-of-week restricted).
        #[test]
        fn agrees_with_cron_crate(
            minute in prop::sample::select(vec!["*", "0", "*/15", "5-10", "0,30"]),
            hour in prop::sample::select(vec!["*", "9-17", "0", "20-23", "*/3"]),
            dom_dow in prop::sample::select(vec![("*", "*"), ("1-15", "*"), ("*", "mon-fri"), ("*", "0"), ("*/2", "*")]),
            month in prop::sample::select(vec!["*", "3-10", "1,12"]),
            t in 0i64..4_000_000_000,
        ) {
            let expr = format!("{minute} {hour} {} {month} {}", dom_dow.0, dom_dow.1);
            let ours = c(&expr);
            let crate_dow = match dom_dow.1 { "0" => "1", "mon-fri" => "2-6", other => other };
            let six = format!("0 {minute} {hour} {} {month} {crate_dow}", dom_dow.0);
            let theirs = cron::Schedule::from_str(&six);
            prop_assert!(theirs.is_ok());
            let theirs = theirs.map_err(|_| TestCaseError::fail("parse"))?;
            let at = crate::time::utc(t);
            let minute_start = at.with_second(0).unwrap_or(at);
            let sched = CampaignSchedule::new(vec![ours], chrono_tz::UTC);
            prop_assert!(sched.is_ok());
            let sched = sched.map_err(|_| TestCaseError::fail("schedule"))?;
            prop_assert_eq!(sched.holds_local(t), theirs.includes(minute_start), "{} at {}", expr, at);
            let _ = at.year();
        }
    }
}
