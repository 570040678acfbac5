//! Weekly wall-clock windows and their grammar.
//!
//! ```text
//! windows  := window (";" window)* [";"]
//! window   := days SP range ("," range)*   (spaces also allowed around "," "-" ";")
//! days     := "daily" | dayitem ("," dayitem)*
//! dayitem  := day | day "-" day          (a range may wrap: "sat-mon" = sat, sun, mon)
//! day      := mon | tue | wed | thu | fri | sat | sun   (case-insensitive)
//! range    := time "-" time              (half-open [start, end))
//! time     := HH ":" MM                  (00:00 … 23:59; "24:00" only as an end)
//! ```
//! A range whose end is `<=` its start crosses midnight and belongs to its start day:
//! `fri 22:00-02:00` is Friday 22:00 to Saturday 02:00.

use std::fmt;
use std::sync::Arc;

use chrono::{Datelike, NaiveDateTime, Timelike};
use std::str::FromStr;

use crate::interval::{push, Span};
use crate::time::{day_of, weekday, DAY, MONDAY_EPOCH, WEEK};
use crate::Error;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY: u16 = 24 * 60;

/// One weekly window: a set of start days and a time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// Bit `d` set = the window starts on weekday `d` (Monday = 0).
    days: u8,
    /// Start, minutes after local midnight, `0..1440`.
    start: u16,
    /// End, minutes after local midnight, `0..=1440`; `end <= start` crosses midnight.
    end: u16,
}

impl Window {
    /// Minutes after the start day's midnight at which the window ends (`> start`).
    fn end_offset(&self) -> u16 {
        if self.end > self.start {
            self.end
        } else {
            self.end + MINUTES_PER_DAY
        }
    }

    /// Whether the window contains the wall-clock reading `local`.
    ///
    /// Computed from chrono's calendar fields, independently of the local-seconds arithmetic
    /// the scheduler uses on its hot path; tests and audit replay cross-check the two.
    pub fn contains(&self, local: NaiveDateTime) -> bool {
        let wd = local.weekday().num_days_from_monday();
        let into = local.num_seconds_from_midnight();
        let start = u32::from(self.start) * 60;
        let end = u32::from(self.end_offset()) * 60;
        (self.days & (1 << wd) != 0 && start <= into && into < end)
            || (self.days & (1 << ((wd + 6) % 7)) != 0 && into + 86_400 < end)
    }

    /// Whether the window contains the wall-clock reading `local` (local seconds).
    pub(crate) fn contains_local(&self, local: i64) -> bool {
        let day = day_of(local);
        let into = local - day * DAY;
        let start = i64::from(self.start) * 60;
        let end = i64::from(self.end_offset()) * 60;
        // A window started today, or one started yesterday still running after midnight.
        (self.days & (1 << weekday(day)) != 0 && start <= into && into < end)
            || (self.days & (1 << weekday(day - 1)) != 0 && into + DAY < end)
    }
}

impl fmt::Display for Window {
    /// Canonical text: maximal runs of days as ranges, e.g. `mon-fri,sun 18:00-20:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut d = 0;
        while d < 7 {
            if self.days & (1 << d) == 0 {
                d += 1;
                continue;
            }
            let mut e = d;
            while e + 1 < 7 && self.days & (1 << (e + 1)) != 0 {
                e += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            match e - d {
                0 => f.write_str(DAY_NAMES[d])?,
                _ => write!(f, "{}-{}", DAY_NAMES[d], DAY_NAMES[e])?,
            }
            d = e + 1;
        }
        write!(
            f,
            " {:02}:{:02}-{:02}:{:02}",
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// A set of weekly windows, as written by the user, with its precomputed weekly timeline.
///
/// Immutable and shared: cloning is a reference-count increment, so the millions of
/// contacts of a campaign that consented to the same few windows hold one copy of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Windows(Arc<Parsed>);

#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    windows: Vec<Window>,
    /// The canonical text (`Display`), made once: stores write it for every contact.
    text: Box<str>,
    /// The union of all windows as seconds after Monday 00:00, sorted and merged,
    /// wrapped into `[0, WEEK)`.
    week: Vec<Span>,
}

impl Windows {
    /// The canonical text, as `Display` writes it.
    pub fn as_str(&self) -> &str {
        &self.0.text
    }

    /// The individual windows.
    pub fn iter(&self) -> impl Iterator<Item = &Window> {
        self.0.windows.iter()
    }

    /// Whether there are no windows at all (such a consent allows nothing).
    pub fn is_empty(&self) -> bool {
        self.0.windows.is_empty()
    }

    /// The first window containing the wall-clock reading `local` (see [`Window::contains`]).
    pub fn containing(&self, local: NaiveDateTime) -> Option<&Window> {
        self.0.windows.iter().find(|w| w.contains(local))
    }

    /// The first window containing the wall-clock reading `local`.
    pub(crate) fn find(&self, local: i64) -> Option<&Window> {
        self.0.windows.iter().find(|w| w.contains_local(local))
    }

    /// Appends to `out` the local-seconds intervals of these windows within `[lo, hi)`.
    pub(crate) fn local_spans(&self, lo: i64, hi: i64, out: &mut Vec<Span>) {
        if self.0.week.is_empty() || lo >= hi {
            return;
        }
        let mut base = MONDAY_EPOCH + (lo - MONDAY_EPOCH).div_euclid(WEEK) * WEEK;
        while base < hi {
            for s in &self.0.week {
                let start = (base + s.start).max(lo);
                let end = (base + s.end).min(hi);
                if start < end {
                    push(out, Span::new(start, end));
                }
            }
            base += WEEK;
        }
    }

    fn build(windows: Vec<Window>) -> Self {
        let mut raw = Vec::with_capacity(windows.len() * 7 + 1);
        for w in &windows {
            for d in 0..7i64 {
                if w.days & (1 << d) == 0 {
                    continue;
                }
                let start = d * DAY + i64::from(w.start) * 60;
                let end = d * DAY + i64::from(w.end_offset()) * 60;
                if end > WEEK {
                    raw.push(Span::new(start, WEEK));
                    raw.push(Span::new(0, end - WEEK));
                } else {
                    raw.push(Span::new(start, end));
                }
            }
        }
        raw.sort_by_key(|s| s.start);
        let mut week = Vec::with_capacity(raw.len());
        for s in raw {
            push(&mut week, s);
        }
        let mut text = String::new();
        for (i, w) in windows.iter().enumerate() {
            if i > 0 {
                text.push_str("; ");
            }
            text.push_str(&w.to_string());
        }
        Windows(Arc::new(Parsed {
            windows,
            text: text.into(),
            week,
        }))
    }
}

/// Parses window texts, keeping each distinct one parsed: the contacts of a campaign share a
/// few texts, so a million contacts parse a handful and share one [`Windows`] each. Bounded
/// (a file with a different text on every row gains nothing from it).
#[derive(Debug, Default)]
pub struct WindowsCache(std::collections::HashMap<Box<str>, Windows>);

impl WindowsCache {
    const MAX: usize = 4096;

    /// As `text.parse::<Windows>()`.
    pub fn parse(&mut self, text: &str) -> Result<Windows, Error> {
        if let Some(w) = self.0.get(text) {
            return Ok(w.clone());
        }
        let w = text.parse::<Windows>()?;
        if self.0.len() < Self::MAX {
            self.0.insert(text.into(), w.clone());
        }
        Ok(w)
    }
}

impl fmt::Display for Windows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl FromStr for Windows {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Error> {
        let mut windows = Vec::new();
        let mut offset = 0;
        for part in input.split(';') {
            let here = offset;
            offset += part.len() + 1;
            if part.trim().is_empty() {
                if windows.is_empty() && here + part.len() >= input.len() {
                    break; // empty input: reported below
                }
                if here + part.len() >= input.len() {
                    continue; // trailing ";"
                }
                return Err(window_error(
                    input,
                    here,
                    "a window like `mon-fri 18:00-20:00`",
                ));
            }
            let lead = part.len() - part.trim_start().len();
            let body = part.trim();
            // The days end where the first time starts (day names hold no digits), so spaces
            // may follow the commas between days: `mon, wed 09:00-10:00`.
            let (days_txt, ranges_txt) = match body.find(|c: char| c.is_ascii_digit()) {
                // No days at all: reported by `parse_days` as a missing day.
                Some(0) => ("", body),
                Some(i) if body[..i].ends_with(char::is_whitespace) => {
                    (body[..i].trim_end(), &body[i..])
                }
                found => {
                    // Where the time range should have started: at the digit glued to the
                    // days, or after the days.
                    let at = found.unwrap_or_else(|| {
                        body.find(char::is_whitespace)
                            .map_or(body.len(), |w| w + lead_ws(&body[w..]))
                    });
                    return Err(window_error(
                        input,
                        here + lead + at,
                        "a space then a time range like `18:00-20:00` after the days",
                    ));
                }
            };
            let days = parse_days(days_txt)
                .map_err(|(at, what)| window_error(input, here + lead + at, what))?;
            let ranges_at = here + lead + (body.len() - ranges_txt.len());
            let mut at = ranges_at;
            for range in ranges_txt.split(',') {
                let (start, end) = parse_range(range.trim())
                    .map_err(|(o, what)| window_error(input, at + o + lead_ws(range), what))?;
                windows.push(Window { days, start, end });
                at += range.len() + 1;
            }
        }
        if windows.is_empty() {
            return Err(window_error(
                input,
                0,
                "at least one window like `mon-fri 18:00-20:00`",
            ));
        }
        Ok(Windows::build(windows))
    }
}

fn lead_ws(s: &str) -> usize {
    s.len() - s.trim_start().len()
}

fn window_error(input: &str, at: usize, expected: &'static str) -> Error {
    Error::InvalidWindow {
        input: input.to_owned(),
        // Characters (not bytes) before `at`, so the column is right for non-ASCII input.
        column: input.char_indices().take_while(|(i, _)| *i < at).count() + 1,
        expected,
    }
}

type ParseErr = (usize, &'static str);

fn parse_day(s: &str, at: usize) -> Result<u8, ParseErr> {
    let lower = s.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| *d == lower)
        // position() < 7, so the cast is lossless.
        .map(|p| p as u8)
        .ok_or((at, "a day: mon, tue, wed, thu, fri, sat, sun, or `daily`"))
}

fn parse_days(s: &str) -> Result<u8, ParseErr> {
    if s.eq_ignore_ascii_case("daily") {
        return Ok(0x7f);
    }
    let mut days = 0u8;
    let mut at = 0;
    for raw in s.split(',') {
        // Spaces around `,` and `-` are allowed.
        let item = raw.trim();
        let at_item = at + lead_ws(raw);
        match item.split_once('-') {
            Some((a, b)) => {
                let from = parse_day(a.trim_end(), at_item)?;
                let to = parse_day(b.trim(), at_item + a.len() + 1 + lead_ws(b))?;
                let mut d = from;
                loop {
                    days |= 1 << d;
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days |= 1 << parse_day(item, at_item)?,
        }
        at += raw.len() + 1;
    }
    Ok(days)
}

fn parse_time(s: &str, at: usize, is_end: bool) -> Result<u16, ParseErr> {
    const EXPECTED: &str = "a time HH:MM from 00:00 to 23:59 (24:00 only as an end)";
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' || ![0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit()) {
        return Err((at, EXPECTED));
    }
    let h = u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0');
    let m = u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0');
    match (h, m) {
        (24, 0) if is_end => Ok(MINUTES_PER_DAY),
        (0..=23, 0..=59) => Ok(h * 60 + m),
        _ => Err((at, EXPECTED)),
    }
}

fn parse_range(s: &str) -> Result<(u16, u16), ParseErr> {
    let Some((a, b)) = s.split_once('-') else {
        return Err((0, "a time range HH:MM-HH:MM"));
    };
    let start = parse_time(a.trim(), 0, false)?;
    let end = parse_time(b.trim(), a.len() + 1 + lead_ws(b), true)?;
    // An end of 24:00 (1440) and of 00:00 denote the same midnight; `end_offset` handles both.
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Windows {
        match s.parse() {
            Ok(w) => w,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn parses_and_prints_canonically() {
        assert_eq!(
            w("mon-fri 18:00-20:00; sat 10:00-12:00").to_string(),
            "mon-fri 18:00-20:00; sat 10:00-12:00"
        );
        assert_eq!(
            w("Mon,Wed,FRI 09:00-10:00").to_string(),
            "mon,wed,fri 09:00-10:00"
        );
        assert_eq!(
            w("sat-mon 10:00-11:00").to_string(),
            "mon,sat-sun 10:00-11:00"
        );
        assert_eq!(w("daily 00:00-24:00").to_string(), "mon-sun 00:00-24:00");
        assert_eq!(
            w("tue 08:00-09:00,14:00-15:30;").to_string(),
            "tue 08:00-09:00; tue 14:00-15:30"
        );
        // Spaces around `,` between days and around the `-` of a day range, as documented.
        assert_eq!(w("mon, wed 09:00-10:00").to_string(), "mon,wed 09:00-10:00");
        assert_eq!(
            w("mon - wed ,  fri  09:00 - 10:00 , 11:00-12:00").to_string(),
            "mon-wed,fri 09:00-10:00; mon-wed,fri 11:00-12:00"
        );
    }

    #[test]
    fn midnight_crossing_belongs_to_start_day() {
        let ws = w("fri 22:00-02:00");
        // 1970-01-02 was a Friday (day 1).
        let fri = DAY;
        assert!(ws.find(fri + 22 * 3600).is_some());
        assert!(ws.find(fri + DAY + 3600).is_some()); // Saturday 01:00
        assert!(ws.find(fri + DAY + 2 * 3600).is_none()); // Saturday 02:00 (half-open)
        assert!(ws.find(fri + 3600).is_none()); // Friday 01:00 belongs to Thursday
        let mut out = Vec::new();
        ws.local_spans(0, 2 * WEEK, &mut out);
        assert_eq!(out[0], Span::new(fri + 22 * 3600, fri + DAY + 2 * 3600));
    }

    #[test]
    fn sunday_late_window_wraps_into_monday() {
        let ws = w("sun 23:00-01:00");
        let mut out = Vec::new();
        // Sunday 1970-01-04 is day 3; Monday 1970-01-05 is day 4.
        ws.local_spans(3 * DAY, 5 * DAY, &mut out);
        assert_eq!(out, vec![Span::new(3 * DAY + 23 * 3600, 4 * DAY + 3600)]);
    }

    #[test]
    fn rejects_with_column() {
        for (input, column) in [
            ("mon-fry 10:00-12:00", 5),
            ("mon 10:00-25:00", 11),
            ("mon 24:00-10:00", 5),
            ("mon", 4),
            ("", 1),
            ("mon 10:00-12:00;; tue 10:00-11:00", 17),
            ("mon 10:0012:00", 5),
            ("mon 10:00-12:00, 1:00-2:00", 18),
            ("mon, wdn 09:00-10:00", 6),
            ("mon,wed09:00-10:00", 8),
            ("09:00-10:00", 1),
            ("mon, 09:00-10:00", 5),
        ] {
            match input.parse::<Windows>() {
                Err(Error::InvalidWindow { column: c, .. }) => assert_eq!(c, column, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }
    }
}
