//! Property tests: `windows` and `decide` agree exactly, and a `Dial` never widens consent.

mod common;
use chrono::{DateTime, Duration, Utc};
use common::*;
use crieur_scheduler::*;
use proptest::prelude::*;

const ZONED: &[(&str, Option<&str>)] = &[
    ("+33612345678", None),                        // Europe/Paris
    ("+12012345678", None),                        // America/New_York
    ("+19075550123", None),                        // America/Adak & America/Anchorage
    ("+17095551234", None),                        // America/Halifax & America/St_Johns
    ("+61412345678", Some("Australia/Lord_Howe")), // 30-minute DST
    ("+17095551234", Some("America/St_Johns")),    // half-hour offset
    ("+262262123456", None),                       // Indian/Reunion
];
const DAYS: &[&str] = &[
    "mon-fri", "sat", "sun", "daily", "fri,sun", "sat-mon", "mon,wed",
];

fn window_text() -> impl Strategy<Value = String> {
    let one = (prop::sample::select(DAYS), 0u16..24 * 4, 1u16..24 * 4).prop_map(|(d, s, len)| {
        let (s, e) = (s * 15, (s * 15 + len * 15) % 1440);
        format!(
            "{d} {:02}:{:02}-{:02}:{:02}",
            s / 60,
            s % 60,
            e / 60,
            e % 60
        )
    });
    prop::collection::vec(one, 1..3).prop_map(|v| v.join("; "))
}

fn instant(lo: i64, hi: i64) -> impl Strategy<Value = DateTime<Utc>> {
    (lo..hi).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap_or_default())
}

#[derive(Debug, Clone)]
struct Setup {
    phone: &'static str,
    zone: Option<&'static str>,
    windows: String,
    ruleset: &'static str,
    cron: Option<&'static str>,
    d: u64,
    granted: DateTime<Utc>,
    ends: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
}

fn setup() -> impl Strategy<Value = Setup> {
    // 2026-01-01 .. 2030-01-01, around both DST changes of every year.
    let (lo, hi) = (1_767_225_600i64, 1_893_456_000i64);
    (
        prop::sample::select(ZONED),
        window_text(),
        prop::sample::select(&["FR", "US", "none"][..]),
        prop::sample::select(&[None, Some("* 8-18 * * 1-5"), Some("0-44 * * * *")][..]),
        prop_oneof![Just(0u64), 1u64..120, 120u64..4000],
        instant(lo, hi),
        prop::option::of(0i64..30 * 86_400),
        instant(lo, hi),
    )
        .prop_map(
            |((phone, zone), windows, ruleset, cron, d, granted, ends, now)| Setup {
                phone,
                zone,
                windows,
                ruleset,
                cron,
                d,
                granted: granted.min(now),
                ends: ends.map(|e| now + Duration::seconds(e)),
                now,
            },
        )
}

fn build(s: &Setup) -> (Contact, Policy) {
    let mut c = contact(s.phone, s.zone, &[consent(&s.windows)]);
    let mut rec = c.consents()[0].clone();
    rec.granted_at = s.granted;
    rec.expires_at = s.ends;
    c = Contact::new(c.id().clone(), c.phone().clone(), c.given_zone(), vec![rec]);
    let cron: &[&str] = match &s.cron {
        Some(cr) => std::slice::from_ref(cr),
        None => &[],
    };
    (c, policy(s.ruleset, cron, "Europe/Paris", s.d))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Inside a returned interval: Dial (first, last and a middle second). Just outside: Skip.
    #[test]
    fn windows_and_decide_agree(s in setup(), frac in 0.0f64..1.0) {
        let (c, p) = build(&s);
        let (from, until) = (s.now, s.now + Duration::days(3));
        let ws = windows(&c, &p, from, until);
        for w in &ws {
            prop_assert!(w.start < w.end);
            let len = (w.end - w.start).num_seconds();
            let mid = w.start + Duration::seconds(((len - 1) as f64 * frac) as i64);
            for at in [w.start, w.end - Duration::seconds(1), mid] {
                prop_assert!(decide(&c, &p, at).is_dial(), "{at} in {w:?} but Skip: {:?}", decide(&c, &p, at));
            }
            if w.end < until {
                prop_assert!(!decide(&c, &p, w.end).is_dial(), "end {} of {w:?} decides Dial", w.end);
            }
            if w.start > from {
                let before = w.start - Duration::seconds(1);
                prop_assert!(!decide(&c, &p, before).is_dial(), "{before} before {w:?} decides Dial");
            }
        }
        // Intervals are sorted, disjoint and non-adjacent.
        for pair in ws.windows(2) {
            prop_assert!(pair[0].end < pair[1].start);
        }
    }

    /// `next_eligible` decides Dial, and nothing between `now` and it does.
    #[test]
    fn next_eligible_is_the_first_dial(s in setup(), frac in 0.0f64..1.0) {
        let (c, p) = build(&s);
        match decide(&c, &p, s.now) {
            Decision::Dial(d) => {
                prop_assert!(d.valid_until > s.now);
                let last = d.valid_until - Duration::seconds(1);
                prop_assert!(decide(&c, &p, last).is_dial());
            }
            Decision::Skip(skip) => {
                prop_assert!(!skip.reasons.is_empty());
                if let Some(next) = skip.next_eligible {
                    prop_assert!(next > s.now);
                    prop_assert!(decide(&c, &p, next).is_dial(), "next_eligible {next} decides Skip");
                    prop_assert!(windows(&c, &p, s.now, next).is_empty());
                    let gap = (next - s.now).num_seconds();
                    let between = s.now + Duration::seconds((gap as f64 * frac) as i64);
                    prop_assert!(!decide(&c, &p, between).is_dial(), "{between} before next {next} decides Dial");
                } else {
                    let horizon = s.now + Duration::days(NEXT_ELIGIBLE_HORIZON_DAYS);
                    prop_assert!(windows(&c, &p, s.now, s.now + Duration::days(60)).is_empty());
                    prop_assert!(!decide(&c, &p, horizon - Duration::days(1)).is_dial()
                        || s.ends.is_none(), "Dial after a `None` next_eligible");
                }
            }
        }
    }

    /// A Dial never widens consent: at every second of [now, now + D] sampled, the reading in
    /// every candidate zone is in the named window and in legal hours, off public holidays,
    /// with the consent in force.
    #[test]
    fn dial_never_widens(s in setup(), frac in 0.0f64..1.0) {
        let (c, p) = build(&s);
        if let Decision::Dial(d) = decide(&c, &p, s.now) {
            let rec = &c.consents()[d.consent];
            let span = p.call_duration().as_secs() as i64;
            for at in [s.now, s.now + Duration::seconds((span as f64 * frac) as i64), s.now + Duration::seconds(span)] {
                prop_assert!(rec.granted_at <= at && rec.valid_until().is_none_or(|u| at < u));
                let (zones, _) = c.zones();
                for z in zones {
                    let local = at.with_timezone(z).naive_local();
                    prop_assert!(rec.windows.containing(local).is_some(), "{at}: {local} in {z} outside windows");
                    prop_assert!(p.ruleset().permits(local), "{at}: {local} in {z} not permitted by {}", p.ruleset());
                }
            }
        }
    }
}
