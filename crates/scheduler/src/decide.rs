//! The decision: may this contact be dialled now, and when may they be dialled at all.
//!
//! Everything here is a pure function of (contact, policy, instants). The core is
//! [`Evaluator::allowed`], which computes the exact set of allowed UTC seconds over a range:
//!
//! 1. per consent record, its validity `[granted_at, min(expires_at, revoked_at))`;
//! 2. per candidate zone, the wall-clock set *consent windows ∩ legal hours − holidays* on the
//!    local timeline, mapped back to UTC as a **preimage** through the zone's offset segments
//!    (the UTC instants whose reading falls in the set: a DST gap maps to nothing, a fold maps
//!    to both passes), intersected over every candidate zone;
//! 3. the union over consent records, intersected with the campaign schedule.
//!
//! Dialable starts are then `[a, b − D)` for each maximal allowed interval `[a, b)`.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;

use crate::contact::{ConsentRecord, Contact, ZoneSource};
use crate::interval::{clip, intersect, push, union, Span};
use crate::policy::Policy;
use crate::time::{date, day_of, naive, secs, secs_ceil, utc, DAY};
use crate::window::{Window, Windows};
use crate::zone::{offset_at, segments, Segment};

/// How far past `now + D` a `Dial` decision looks to report `valid_until` (one hour).
const LOOKAHEAD: i64 = 3600;
/// How far ahead `next_eligible` is searched.
pub const NEXT_ELIGIBLE_HORIZON_DAYS: i64 = 400;
/// Search step for `next_eligible`.
const SEARCH_CHUNK: i64 = 7 * DAY;

/// A dialable interval `[start, end)`: a call may *start* at any instant in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// First instant a call may start.
    pub start: DateTime<Utc>,
    /// End (exclusive) of the starts.
    pub end: DateTime<Utc>,
}

/// The wall-clock reading of an instant in one candidate zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The zone.
    pub zone: Tz,
    /// Its UTC offset at that instant, seconds (local − UTC).
    pub utc_offset: i32,
    /// The wall-clock time there.
    pub local: NaiveDateTime,
    /// The consent window containing the reading, if any (for a `Dial`: the one that allowed it).
    pub window: Option<Window>,
}

/// The rule set a decision applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSetRef {
    /// e.g. `FR`.
    pub name: &'static str,
    /// e.g. `FR-2023-03-01`.
    pub version: &'static str,
}

/// A call may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// Index (in [`Contact::consents`]) of the consent record that allows the call.
    pub consent: usize,
    /// The reading in every candidate zone, with the window that allowed it.
    pub readings: Vec<Reading>,
    /// Where the zones came from.
    pub zone_source: ZoneSource,
    /// The rule set applied.
    pub ruleset: RuleSetRef,
    /// D, seconds: ring timeout + message length.
    pub call_duration_secs: u64,
    /// Every start in `[now, valid_until)` is also allowed. Exact when the dialable interval
    /// ends within an hour; otherwise the lower bound `now + 1 h`.
    pub valid_until: DateTime<Utc>,
}

/// Why a contact may not be dialled now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// No candidate time zone: the number's zone is unknown.
    UnknownZone,
    /// The contact has no consent record at all.
    NoConsent,
    /// A consent record is not yet in force (listed only when no record is in force).
    ConsentNotYetGranted {
        consent: usize,
        granted_at: DateTime<Utc>,
    },
    /// A consent record has expired (listed only when no record is in force).
    ConsentExpired {
        consent: usize,
        expires_at: DateTime<Utc>,
    },
    /// A consent record was revoked (listed only when no record is in force).
    ConsentRevoked {
        consent: usize,
        revoked_at: DateTime<Utc>,
    },
    /// The reading in this zone is in no consent window.
    OutsideConsentWindow { zone: Tz, local: NaiveDateTime },
    /// Every zone's reading is in some consent window, but no single record in force
    /// covers all of them.
    NoSingleConsentCoversAllZones,
    /// The reading in this zone is outside the rule set's legal hours.
    OutsideLegalHours {
        zone: Tz,
        local: NaiveDateTime,
        ruleset: &'static str,
    },
    /// The local date in this zone is a public holiday.
    PublicHoliday {
        zone: Tz,
        date: NaiveDate,
        name: &'static str,
    },
    /// The campaign schedule does not hold now (reading in the campaign zone).
    OutsideCampaignSchedule { zone: Tz, local: NaiveDateTime },
    /// Calling is allowed now, but not for the whole call: it would still be ringing or
    /// playing when the allowed interval closes at `allowed_until`.
    CallWouldNotFit {
        allowed_until: DateTime<Utc>,
        call_duration_secs: u64,
    },
}

/// The contact may not be dialled now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// Every reason that applies.
    pub reasons: Vec<SkipReason>,
    /// The reading in every candidate zone.
    pub readings: Vec<Reading>,
    /// The rule set applied.
    pub ruleset: RuleSetRef,
    /// The earliest instant at or after `now` that decides `Dial`, searched
    /// [`NEXT_ELIGIBLE_HORIZON_DAYS`] ahead; `None` if there is none within that horizon.
    pub next_eligible: Option<DateTime<Utc>>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start the call now.
    Dial(Dial),
    /// Do not call now.
    Skip(Skip),
}

impl Decision {
    /// Whether this is a `Dial`.
    pub fn is_dial(&self) -> bool {
        matches!(self, Decision::Dial(_))
    }
}

/// Decides whether `contact` may be dialled at `now` under `policy`.
pub fn decide(contact: &Contact, policy: &Policy, now: DateTime<Utc>) -> Decision {
    Evaluator::with_thread_scratch(policy, |ev| ev.decide(contact, now))
}

/// The exact dialable intervals of `contact` within `[from, until)`.
pub fn windows(
    contact: &Contact,
    policy: &Policy,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<Interval> {
    Evaluator::with_thread_scratch(policy, |ev| ev.windows(contact, from, until))
}

/// Reusable evaluation state: scratch buffers and, for batch use, memoised zone offsets and
/// campaign-schedule intervals. Results never depend on what is cached.
pub struct Evaluator<'p> {
    policy: &'p Policy,
    /// Offset segments per zone, with the UTC range they cover (batch mode only).
    seg_cache: Option<HashMap<Tz, (Span, Vec<Segment>)>>,
    /// Campaign-schedule UTC intervals with the range they cover.
    sched_cache: Option<(Span, Vec<Span>)>,
    s: Scratch,
}

/// Scratch buffers, kept between calls so that a decision allocates only its result.
#[derive(Default)]
struct Scratch {
    segs: Vec<Segment>,
    local: Vec<Span>,
    legal: Vec<Span>,
    tmp: Vec<Span>,
    zone_set: Vec<Span>,
    record_set: Vec<Span>,
    acc: Vec<Span>,
    allowed: Vec<Span>,
    offsets: Vec<i64>,
}

thread_local! {
    /// Scratch for the free functions [`decide`] and [`windows`]: plain memory reuse, no state
    /// that could change a result.
    static SCRATCH: std::cell::Cell<Scratch> = std::cell::Cell::new(Scratch::default());
}

impl<'p> Evaluator<'p> {
    /// An evaluator for one-off decisions.
    pub fn new(policy: &'p Policy) -> Self {
        Evaluator {
            policy,
            seg_cache: None,
            sched_cache: None,
            s: Scratch::default(),
        }
    }

    fn with_thread_scratch<T>(policy: &'p Policy, f: impl FnOnce(&mut Self) -> T) -> T {
        let mut ev = Evaluator {
            policy,
            seg_cache: None,
            sched_cache: None,
            s: SCRATCH.take(),
        };
        let out = f(&mut ev);
        SCRATCH.set(ev.s);
        out
    }

    /// An evaluator that memoises per-zone offsets and the campaign schedule, for computing
    /// the windows of many contacts over the same range.
    pub fn batch(policy: &'p Policy) -> Self {
        let mut e = Self::new(policy);
        e.seg_cache = Some(HashMap::new());
        e
    }

    /// See [`windows`].
    pub fn windows(
        &mut self,
        contact: &Contact,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Vec<Interval> {
        let (lo, hi) = (secs_ceil(from), secs_ceil(until));
        let mut out = Vec::new();
        self.dialable(contact, lo, hi, &mut out);
        out.iter()
            .map(|s| Interval {
                start: utc(s.start),
                end: utc(s.end),
            })
            .collect()
    }

    /// The end (exclusive) of the dialable interval holding `at` (to the second), searched
    /// up to `days` ahead: `(end, true)` when it reaches that horizon (it ends at least
    /// then); `None` when `at` is not dialable.
    pub fn dialable_until(
        &mut self,
        contact: &Contact,
        at: DateTime<Utc>,
        days: i64,
    ) -> Option<(DateTime<Utc>, bool)> {
        let at = utc(secs(at));
        let horizon = at + chrono::Duration::days(days);
        self.windows(contact, at, horizon)
            .into_iter()
            .find(|w| w.start <= at)
            .map(|w| (w.end, w.end >= horizon))
    }

    /// See [`decide`].
    pub fn decide(&mut self, contact: &Contact, now: DateTime<Utc>) -> Decision {
        let lo = secs(now);
        let d = self.policy.call_duration_secs();
        let mut allowed = std::mem::take(&mut self.s.allowed);
        self.allowed(contact, lo, lo.saturating_add(d + LOOKAHEAD), &mut allowed);
        let current = allowed.first().filter(|s| s.contains(lo)).copied();
        self.s.allowed = allowed;
        if let Some(span) = current {
            if span.end - d > lo {
                if let Some(dial) = self.dial(contact, lo, span.end - d) {
                    return Decision::Dial(dial);
                }
            }
        }
        Decision::Skip(self.skip(contact, lo, current))
    }

    fn dial(&mut self, contact: &Contact, lo: i64, valid_until: i64) -> Option<Dial> {
        let (zones, zone_source) = contact.zones();
        self.s.offsets.clear();
        self.s
            .offsets
            .extend(zones.iter().map(|z| offset_at(*z, lo)));
        let offsets = &self.s.offsets;
        let consent = contact.consents().iter().position(|r| {
            in_force(r, lo) && offsets.iter().all(|off| r.windows.find(lo + off).is_some())
        })?;
        let windows = &contact.consents()[consent].windows;
        let rs = self.policy.ruleset();
        Some(Dial {
            consent,
            readings: zones
                .iter()
                .zip(offsets)
                .map(|(&zone, &off)| reading(zone, lo, off, Some(windows)))
                .collect(),
            zone_source,
            ruleset: RuleSetRef {
                name: rs.name(),
                version: rs.version(),
            },
            call_duration_secs: self.policy.call_duration().as_secs(),
            valid_until: utc(valid_until),
        })
    }

    fn skip(&mut self, contact: &Contact, lo: i64, current: Option<Span>) -> Skip {
        let (zones, _) = contact.zones();
        let records = contact.consents();
        let rs = self.policy.ruleset();
        let mut reasons = Vec::new();
        if zones.is_empty() {
            reasons.push(SkipReason::UnknownZone);
        }
        if records.is_empty() {
            reasons.push(SkipReason::NoConsent);
        }
        let in_force_now: Vec<&ConsentRecord> =
            records.iter().filter(|r| in_force(r, lo)).collect();
        if in_force_now.is_empty() {
            for (i, r) in records.iter().enumerate() {
                if secs_ceil(r.granted_at) > lo {
                    reasons.push(SkipReason::ConsentNotYetGranted {
                        consent: i,
                        granted_at: r.granted_at,
                    });
                }
                if let Some(e) = r.expires_at.filter(|e| secs(*e) <= lo) {
                    reasons.push(SkipReason::ConsentExpired {
                        consent: i,
                        expires_at: e,
                    });
                }
                if let Some(rv) = r.revoked_at.filter(|rv| secs(*rv) <= lo) {
                    reasons.push(SkipReason::ConsentRevoked {
                        consent: i,
                        revoked_at: rv,
                    });
                }
            }
        }
        let candidates: Vec<&ConsentRecord> = if in_force_now.is_empty() {
            records.iter().collect()
        } else {
            in_force_now
        };
        let mut readings = Vec::with_capacity(zones.len());
        for &zone in zones {
            let off = offset_at(zone, lo);
            let local = lo + off;
            let window = candidates
                .iter()
                .find_map(|r| r.windows.find(local))
                .copied();
            if window.is_none() && !records.is_empty() {
                reasons.push(SkipReason::OutsideConsentWindow {
                    zone,
                    local: naive(local),
                });
            }
            if rs.hours().is_some_and(|h| h.find(local).is_none()) {
                reasons.push(SkipReason::OutsideLegalHours {
                    zone,
                    local: naive(local),
                    ruleset: rs.name(),
                });
            }
            if let Some(name) = rs.holidays().on_day(day_of(local)) {
                reasons.push(SkipReason::PublicHoliday {
                    zone,
                    date: date(day_of(local)),
                    name,
                });
            }
            let mut r = reading(zone, lo, off, None);
            r.window = window;
            readings.push(r);
        }
        if let Some(s) = self.policy.schedule() {
            let local = lo + offset_at(s.zone(), lo);
            if !s.holds_local(local) {
                reasons.push(SkipReason::OutsideCampaignSchedule {
                    zone: s.zone(),
                    local: naive(local),
                });
            }
        }
        if reasons.is_empty() {
            reasons.push(match current {
                Some(span) => SkipReason::CallWouldNotFit {
                    allowed_until: utc(span.end),
                    call_duration_secs: self.policy.call_duration().as_secs(),
                },
                None => SkipReason::NoSingleConsentCoversAllZones,
            });
        }
        Skip {
            reasons,
            readings,
            ruleset: RuleSetRef {
                name: rs.name(),
                version: rs.version(),
            },
            next_eligible: self.next_eligible(contact, lo),
        }
    }

    fn next_eligible(&mut self, contact: &Contact, lo: i64) -> Option<DateTime<Utc>> {
        let records = contact.consents();
        // Nothing can be eligible before the earliest grant or after the latest end.
        let first = records
            .iter()
            .map(|r| secs_ceil(r.granted_at))
            .min()?
            .max(lo);
        let last = records
            .iter()
            .map(|r| r.valid_until().map_or(i64::MAX, secs))
            .max()?;
        let horizon = lo
            .saturating_add(NEXT_ELIGIBLE_HORIZON_DAYS * DAY)
            .min(last);
        let mut c = first;
        let mut found = Vec::new();
        while c < horizon {
            let end = (c + SEARCH_CHUNK).min(horizon);
            self.dialable(contact, c, end, &mut found);
            if let Some(s) = found.first() {
                return Some(utc(s.start));
            }
            c = end;
        }
        None
    }

    /// Dialable starts within `[lo, hi)`.
    fn dialable(&mut self, contact: &Contact, lo: i64, hi: i64, out: &mut Vec<Span>) {
        out.clear();
        if lo >= hi {
            return;
        }
        let d = self.policy.call_duration_secs();
        let mut allowed = std::mem::take(&mut self.s.acc);
        self.allowed(contact, lo, hi.saturating_add(d), &mut allowed);
        for s in &allowed {
            // [t, t + D] ⊆ [a, b) ⇔ a ≤ t < b − D.
            push(out, Span::new(s.start, s.end - d));
        }
        self.s.acc = allowed;
        clip(out, lo, hi);
    }

    /// The allowed UTC seconds within `[lo, hi)`, into `out`.
    fn allowed(&mut self, contact: &Contact, lo: i64, hi: i64, out: &mut Vec<Span>) {
        out.clear();
        let (zones, _) = contact.zones();
        if zones.is_empty() || lo >= hi {
            return;
        }
        for record in contact.consents() {
            let v_lo = lo.max(secs_ceil(record.granted_at));
            let v_hi = hi.min(record.valid_until().map_or(i64::MAX, secs));
            if v_lo >= v_hi {
                continue;
            }
            let mut record_set = std::mem::take(&mut self.s.record_set);
            record_set.clear();
            record_set.push(Span::new(v_lo, v_hi));
            for &zone in zones {
                let mut zone_set = std::mem::take(&mut self.s.zone_set);
                self.zone_allowed(&record.windows, zone, v_lo, v_hi, &mut zone_set);
                intersect(&record_set, &zone_set, &mut self.s.tmp);
                std::mem::swap(&mut record_set, &mut self.s.tmp);
                self.s.zone_set = zone_set;
                if record_set.is_empty() {
                    break;
                }
            }
            if !record_set.is_empty() {
                if out.is_empty() {
                    out.extend_from_slice(&record_set);
                } else {
                    union(out, &record_set, &mut self.s.tmp);
                    std::mem::swap(out, &mut self.s.tmp);
                }
            }
            self.s.record_set = record_set;
        }
        if out.is_empty() || self.policy.schedule().is_none() {
            return;
        }
        let mut sched = std::mem::take(&mut self.s.zone_set);
        self.schedule_spans(lo, hi, &mut sched);
        intersect(out, &sched, &mut self.s.tmp);
        std::mem::swap(out, &mut self.s.tmp);
        self.s.zone_set = sched;
    }

    /// Offset segments of `zone` over `[lo, hi)` into `self.s.segs`.
    fn load_segments(&mut self, zone: Tz, lo: i64, hi: i64) {
        if let Some(cache) = &mut self.seg_cache {
            let entry = cache
                .entry(zone)
                .or_insert_with(|| (Span::new(0, 0), Vec::new()));
            if !(entry.0.start <= lo && hi <= entry.0.end) {
                // Cache a generous range around the request so neighbours hit it.
                let (c_lo, c_hi) = (lo - 2 * DAY, hi + 2 * DAY);
                segments(zone, c_lo, c_hi, &mut entry.1);
                entry.0 = Span::new(c_lo, c_hi);
            }
            self.s.segs.clear();
            self.s.segs.extend(
                entry
                    .1
                    .iter()
                    .filter(|s| s.span.end > lo && s.span.start < hi)
                    .map(|s| Segment {
                        span: Span::new(s.span.start.max(lo), s.span.end.min(hi)),
                        offset: s.offset,
                    }),
            );
        } else {
            segments(zone, lo, hi, &mut self.s.segs);
        }
    }

    /// UTC seconds within `[lo, hi)` whose reading in `zone` is inside `windows`, inside the
    /// legal hours and not on a public holiday.
    fn zone_allowed(&mut self, windows: &Windows, zone: Tz, lo: i64, hi: i64, out: &mut Vec<Span>) {
        out.clear();
        self.load_segments(zone, lo, hi);
        let (l_lo, l_hi) = local_range(&self.s.segs);
        self.s.local.clear();
        windows.local_spans(l_lo, l_hi, &mut self.s.local);
        let rs = self.policy.ruleset();
        if let Some(hours) = rs.hours() {
            self.s.legal.clear();
            hours.local_spans(l_lo, l_hi, &mut self.s.legal);
            intersect(&self.s.local, &self.s.legal, &mut self.s.tmp);
            std::mem::swap(&mut self.s.local, &mut self.s.tmp);
        }
        let holidays = rs.holidays();
        if holidays != crate::holidays::Holidays::None && !self.s.local.is_empty() {
            // Keep only the non-holiday days of the local range.
            self.s.legal.clear();
            let mut day = day_of(l_lo);
            while day <= day_of(l_hi - 1) {
                if holidays.on_day(day).is_none() {
                    push(&mut self.s.legal, Span::new(day * DAY, (day + 1) * DAY));
                }
                day += 1;
            }
            intersect(&self.s.local, &self.s.legal, &mut self.s.tmp);
            std::mem::swap(&mut self.s.local, &mut self.s.tmp);
        }
        preimage(&self.s.local, &self.s.segs, out);
    }

    /// Campaign-schedule UTC intervals within `[lo, hi)`.
    fn schedule_spans(&mut self, lo: i64, hi: i64, out: &mut Vec<Span>) {
        out.clear();
        let Some(schedule) = self.policy.schedule() else {
            return;
        };
        let cached = self
            .sched_cache
            .as_ref()
            .filter(|(range, _)| range.start <= lo && hi <= range.end);
        if let Some((_, spans)) = cached {
            out.extend(spans.iter().filter(|s| s.end > lo && s.start < hi));
            clip(out, lo, hi);
            return;
        }
        let batch = self.seg_cache.is_some();
        let (c_lo, c_hi) = if batch {
            (lo - 2 * DAY, hi + 2 * DAY)
        } else {
            (lo, hi)
        };
        self.load_segments(schedule.zone(), c_lo, c_hi);
        let (l_lo, l_hi) = local_range(&self.s.segs);
        self.s.local.clear();
        schedule.local_spans(l_lo, l_hi, &mut self.s.local);
        preimage(&self.s.local, &self.s.segs, out);
        if batch {
            self.sched_cache = Some((Span::new(c_lo, c_hi), out.clone()));
            clip(out, lo, hi);
        }
    }
}

fn in_force(r: &ConsentRecord, t: i64) -> bool {
    secs_ceil(r.granted_at) <= t && r.valid_until().is_none_or(|u| t < secs(u))
}

fn reading(zone: Tz, lo: i64, off: i64, windows: Option<&Windows>) -> Reading {
    Reading {
        zone,
        // UTC offsets are within ±26 h, so they fit in i32.
        utc_offset: i32::try_from(off).unwrap_or(0),
        local: naive(lo + off),
        window: windows.and_then(|w| w.find(lo + off)).copied(),
    }
}

/// The local-seconds range read by the UTC range that `segs` partitions.
fn local_range(segs: &[Segment]) -> (i64, i64) {
    let lo = segs
        .iter()
        .map(|s| s.span.start + s.offset)
        .min()
        .unwrap_or(0);
    let hi = segs
        .iter()
        .map(|s| s.span.end + s.offset)
        .max()
        .unwrap_or(0);
    (lo, hi)
}

/// The UTC seconds, within the segments, whose wall-clock reading is in `local`.
fn preimage(local: &[Span], segs: &[Segment], out: &mut Vec<Span>) {
    out.clear();
    for seg in segs {
        let (l_lo, l_hi) = (seg.span.start + seg.offset, seg.span.end + seg.offset);
        let first = local.partition_point(|s| s.end <= l_lo);
        for s in local[first..].iter().take_while(|s| s.start < l_hi) {
            let start = (s.start - seg.offset).max(seg.span.start);
            let end = (s.end - seg.offset).min(seg.span.end);
            push(out, Span::new(start, end));
        }
    }
}
