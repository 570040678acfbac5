//! Data-driven decision table: contact, windows, policy, now → decision.
//!
//! Each row is checked three ways: `decide` gives the expected verdict and reasons, its
//! `next_eligible` is the expected instant, and `windows` agrees with `decide` at `now`.

mod common;
use common::*;
use crieur_scheduler::*;

const PARIS: &str = "+33612345678";
const NEWARK: &str = "+12012345678"; // 201: America/New_York
const ALASKA: &str = "+19075550123"; // 907: America/Adak & America/Anchorage
const ST_JOHNS: &str = "+17095551234"; // 709: America/Halifax & America/St_Johns (libphonenumber 9.0.43)
const REUNION: &str = "+262262123456"; // Indian/Reunion
const TOLL_FREE: &str = "+18005550199"; // all of NANP's zones
const INTL_FREEPHONE: &str = "+80012345678"; // no zone at all
const AU_MOBILE: &str = "+61412345678";

enum Want {
    /// `Dial`, optionally with its `valid_until`.
    Dial(Option<&'static str>),
    /// `Skip` with exactly these reasons (`["*"]` = any), and this `next_eligible`.
    Skip(&'static [&'static str], Option<&'static str>),
}
use Want::*;

struct Case {
    name: &'static str,
    ruleset: &'static str,
    cron: &'static [&'static str],
    cron_zone: &'static str,
    d: u64,
    phone: &'static str,
    zone: Option<&'static str>,
    consents: Vec<Consent<'static>>,
    now: &'static str,
    want: Want,
}

fn base(
    name: &'static str,
    phone: &'static str,
    windows: &'static str,
    now: &'static str,
    want: Want,
) -> Case {
    Case {
        name,
        ruleset: "FR",
        cron: &[],
        cron_zone: "UTC",
        d: 60,
        phone,
        zone: None,
        consents: vec![consent(windows)],
        now,
        want,
    }
}

fn with_ruleset(mut c: Case, r: &'static str) -> Case {
    c.ruleset = r;
    c
}
fn with_d(mut c: Case, d: u64) -> Case {
    c.d = d;
    c
}
fn with_zone(mut c: Case, z: &'static str) -> Case {
    c.zone = Some(z);
    c
}
fn with_cron(mut c: Case, cron: &'static [&'static str], zone: &'static str) -> Case {
    c.cron = cron;
    c.cron_zone = zone;
    c
}
fn with_consents(mut c: Case, consents: Vec<Consent<'static>>) -> Case {
    c.consents = consents;
    c
}

const OCW_PARIS: &str = "OutsideConsentWindow(Europe/Paris)";
const OLH_PARIS: &str = "OutsideLegalHours(Europe/Paris)";
const PH_PARIS: &str = "PublicHoliday(Europe/Paris)";

fn cases() -> Vec<Case> {
    let evening = "mon-fri 18:00-20:00";
    let workday = "mon-fri 10:00-20:00";
    vec![
        // ---- Paris, FR legal hours, window edges -------------------------------------------
        base(
            "paris in window",
            PARIS,
            evening,
            "2027-03-01T17:30:00Z",
            Dial(None),
        ),
        base(
            "paris 1 s before window",
            PARIS,
            evening,
            "2027-03-01T16:59:59Z",
            Skip(&[OCW_PARIS], Some("2027-03-01T17:00:00Z")),
        ),
        base(
            "paris call does not fit before 20:00",
            PARIS,
            evening,
            "2027-03-01T18:59:00Z",
            Skip(&["CallWouldNotFit"], Some("2027-03-02T17:00:00Z")),
        ),
        base(
            "paris last start that fits",
            PARIS,
            evening,
            "2027-03-01T18:58:59Z",
            Dial(Some("2027-03-01T18:59:00Z")),
        ),
        base(
            "paris at 20:00 (half-open)",
            PARIS,
            evening,
            "2027-03-01T19:00:00Z",
            Skip(&[OCW_PARIS, OLH_PARIS], Some("2027-03-02T17:00:00Z")),
        ),
        base(
            "paris saturday",
            PARIS,
            evening,
            "2027-03-06T17:30:00Z",
            Skip(&[OCW_PARIS, OLH_PARIS], Some("2027-03-08T17:00:00Z")),
        ),
        base(
            "paris easter monday 2027 (after DST start)",
            PARIS,
            evening,
            "2027-03-29T16:30:00Z",
            Skip(&[PH_PARIS], Some("2027-03-30T16:00:00Z")),
        ),
        base(
            "paris day after easter monday, CEST",
            PARIS,
            evening,
            "2027-03-30T16:00:00Z",
            Dial(None),
        ),
        base(
            "paris friday before easter, CET",
            PARIS,
            evening,
            "2027-03-26T17:00:00Z",
            Dial(None),
        ),
        base(
            "paris lunch break",
            PARIS,
            "mon-fri 09:00-18:00",
            "2027-03-02T12:30:00Z",
            Skip(&[OLH_PARIS], Some("2027-03-02T13:00:00Z")),
        ),
        base(
            "paris call would run into lunch",
            PARIS,
            "mon-fri 09:00-18:00",
            "2027-03-02T11:59:00Z",
            Skip(&["CallWouldNotFit"], Some("2027-03-02T13:00:00Z")),
        ),
        base(
            "paris before legal opening",
            PARIS,
            "mon-fri 09:00-18:00",
            "2027-03-02T08:30:00Z",
            Skip(&[OLH_PARIS], Some("2027-03-02T09:00:00Z")),
        ),
        // ---- French holidays over several years ------------------------------------------
        base(
            "easter monday 2028",
            PARIS,
            workday,
            "2028-04-17T10:00:00Z",
            Skip(&[PH_PARIS], Some("2028-04-18T08:00:00Z")),
        ),
        base(
            "easter monday 2029",
            PARIS,
            workday,
            "2029-04-02T10:00:00Z",
            Skip(&[PH_PARIS], Some("2029-04-03T08:00:00Z")),
        ),
        base(
            "ascension 2027",
            PARIS,
            workday,
            "2027-05-06T10:00:00Z",
            Skip(&[PH_PARIS], Some("2027-05-07T08:00:00Z")),
        ),
        base(
            "whit monday 2028",
            PARIS,
            workday,
            "2028-06-05T10:00:00Z",
            Skip(&[PH_PARIS], Some("2028-06-06T08:00:00Z")),
        ),
        base(
            "easter monday 2030",
            PARIS,
            workday,
            "2030-04-22T10:00:00Z",
            Skip(&[PH_PARIS], Some("2030-04-23T08:00:00Z")),
        ),
        base(
            "1 may 2027 is a saturday: three reasons",
            PARIS,
            workday,
            "2027-05-01T10:00:00Z",
            Skip(
                &[OCW_PARIS, OLH_PARIS, PH_PARIS],
                Some("2027-05-03T08:00:00Z"),
            ),
        ),
        base(
            "friday after ascension",
            PARIS,
            workday,
            "2027-05-07T10:00:00Z",
            Dial(None),
        ),
        base(
            "christmas 2026 (friday)",
            PARIS,
            workday,
            "2026-12-25T10:00:00Z",
            Skip(&[PH_PARIS], Some("2026-12-28T09:00:00Z")),
        ),
        // ---- holiday of the *local* date ---------------------------------------------------
        base(
            "reunion 14 july local",
            REUNION,
            workday,
            "2027-07-14T06:30:00Z",
            Skip(
                &["PublicHoliday(Indian/Reunion)"],
                Some("2027-07-15T06:00:00Z"),
            ),
        ),
        base(
            "reunion 14 july 00:30 local, 13 july UTC",
            REUNION,
            workday,
            "2027-07-13T20:30:00Z",
            Skip(
                &[
                    "OutsideConsentWindow(Indian/Reunion)",
                    "OutsideLegalHours(Indian/Reunion)",
                    "PublicHoliday(Indian/Reunion)",
                ],
                Some("2027-07-15T06:00:00Z"),
            ),
        ),
        // ---- DST in Europe/Paris (rule set none, to reach the night) -------------------------
        with_ruleset(
            base(
                "paris gap: 01:30 CET",
                PARIS,
                "sun 02:00-04:00",
                "2027-03-28T00:30:00Z",
                Skip(&[OCW_PARIS], Some("2027-03-28T01:00:00Z")),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "paris gap: first instant after is 03:00 CEST",
                PARIS,
                "sun 02:00-04:00",
                "2027-03-28T01:00:00Z",
                Dial(Some("2027-03-28T01:59:00Z")),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "paris gap: window shrank to one hour",
                PARIS,
                "sun 02:00-04:00",
                "2027-03-28T01:59:00Z",
                Skip(&["CallWouldNotFit"], Some("2027-04-04T00:00:00Z")),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "paris fold: first pass",
                PARIS,
                "sun 02:00-03:00",
                "2027-10-31T00:00:00Z",
                Dial(None),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "paris fold: second pass",
                PARIS,
                "sun 02:00-03:00",
                "2027-10-31T01:30:00Z",
                Dial(Some("2027-10-31T01:59:00Z")),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "paris fold: end of second pass",
                PARIS,
                "sun 02:00-03:00",
                "2027-10-31T01:59:00Z",
                Skip(&["CallWouldNotFit"], Some("2027-11-07T01:00:00Z")),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "paris fold: 01:59:59 CEST",
                PARIS,
                "sun 02:00-03:00",
                "2027-10-30T23:59:59Z",
                Skip(&[OCW_PARIS], Some("2027-10-31T00:00:00Z")),
            ),
            "none",
        ),
        // ---- America/New_York, US rules ----------------------------------------------------
        with_ruleset(
            base(
                "new york first sunday of EDT 08:00",
                NEWARK,
                "sun 08:00-09:00",
                "2027-03-14T12:00:00Z",
                Dial(None),
            ),
            "US",
        ),
        with_ruleset(
            base(
                "new york 07:59:59 EDT: window and legal hours",
                NEWARK,
                "sun 08:00-09:00",
                "2027-03-14T11:59:59Z",
                Skip(
                    &[
                        "OutsideConsentWindow(America/New_York)",
                        "OutsideLegalHours(America/New_York)",
                    ],
                    Some("2027-03-14T12:00:00Z"),
                ),
            ),
            "US",
        ),
        with_ruleset(
            base(
                "new york 21:00 legal close",
                NEWARK,
                "daily 20:00-22:00",
                "2027-03-16T01:00:00Z",
                Skip(
                    &["OutsideLegalHours(America/New_York)"],
                    Some("2027-03-17T00:00:00Z"),
                ),
            ),
            "US",
        ),
        with_d(
            with_ruleset(
                base(
                    "new york call past 21:00",
                    NEWARK,
                    "daily 20:00-22:00",
                    "2027-03-16T00:59:00Z",
                    Skip(&["CallWouldNotFit"], Some("2027-03-17T00:00:00Z")),
                ),
                "US",
            ),
            120,
        ),
        with_ruleset(
            base(
                "new york fold: 01:30 EST second pass",
                NEWARK,
                "sun 01:00-02:00",
                "2027-11-07T06:30:00Z",
                Dial(Some("2027-11-07T06:59:00Z")),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "new york fold: 01:00 EDT first pass",
                NEWARK,
                "sun 01:00-02:00",
                "2027-11-07T05:00:00Z",
                Dial(None),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "new york gap: window inside the gap",
                NEWARK,
                "sun 02:00-03:00",
                "2027-03-14T07:00:00Z",
                Skip(
                    &["OutsideConsentWindow(America/New_York)"],
                    Some("2027-03-21T06:00:00Z"),
                ),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "new york gap: 01:59:59 EST",
                NEWARK,
                "sun 02:00-03:00",
                "2027-03-14T06:59:59Z",
                Skip(
                    &["OutsideConsentWindow(America/New_York)"],
                    Some("2027-03-21T06:00:00Z"),
                ),
            ),
            "none",
        ),
        // ---- Australia/Lord_Howe: 30-minute DST ------------------------------------------------
        with_zone(
            with_ruleset(
                base(
                    "lord howe gap: 02:30 +11",
                    AU_MOBILE,
                    "sun 02:00-03:00",
                    "2027-10-02T15:30:00Z",
                    Dial(Some("2027-10-02T15:59:00Z")),
                ),
                "none",
            ),
            "Australia/Lord_Howe",
        ),
        with_zone(
            with_ruleset(
                base(
                    "lord howe gap: 01:59:59 +10:30",
                    AU_MOBILE,
                    "sun 02:00-03:00",
                    "2027-10-02T15:29:59Z",
                    Skip(
                        &["OutsideConsentWindow(Australia/Lord_Howe)"],
                        Some("2027-10-02T15:30:00Z"),
                    ),
                ),
                "none",
            ),
            "Australia/Lord_Howe",
        ),
        with_zone(
            with_ruleset(
                base(
                    "lord howe window wholly in the gap",
                    AU_MOBILE,
                    "sun 02:00-02:30",
                    "2027-10-02T15:30:00Z",
                    Skip(
                        &["OutsideConsentWindow(Australia/Lord_Howe)"],
                        Some("2027-10-09T15:00:00Z"),
                    ),
                ),
                "none",
            ),
            "Australia/Lord_Howe",
        ),
        with_zone(
            with_ruleset(
                base(
                    "lord howe fold: both half-hours count",
                    AU_MOBILE,
                    "sun 01:30-02:00",
                    "2027-04-03T15:10:00Z",
                    Dial(Some("2027-04-03T15:29:00Z")),
                ),
                "none",
            ),
            "Australia/Lord_Howe",
        ),
        with_zone(
            with_ruleset(
                base(
                    "lord howe fold: before first pass",
                    AU_MOBILE,
                    "sun 01:30-02:00",
                    "2027-04-03T14:29:59Z",
                    Skip(
                        &["OutsideConsentWindow(Australia/Lord_Howe)"],
                        Some("2027-04-03T14:30:00Z"),
                    ),
                ),
                "none",
            ),
            "Australia/Lord_Howe",
        ),
        // ---- America/St_Johns: half-hour offset -------------------------------------------------
        with_zone(
            with_ruleset(
                base(
                    "st johns NDT -2:30",
                    ST_JOHNS,
                    "mon 10:00-11:00",
                    "2027-03-15T12:30:00Z",
                    Dial(None),
                ),
                "US",
            ),
            "America/St_Johns",
        ),
        with_zone(
            with_ruleset(
                base(
                    "st johns NST -3:30",
                    ST_JOHNS,
                    "mon 10:00-11:00",
                    "2027-03-08T12:30:00Z",
                    Skip(
                        &["OutsideConsentWindow(America/St_Johns)"],
                        Some("2027-03-08T13:30:00Z"),
                    ),
                ),
                "US",
            ),
            "America/St_Johns",
        ),
        with_zone(
            with_ruleset(
                base(
                    "st johns gap swallows window",
                    ST_JOHNS,
                    "sun 02:00-02:30",
                    "2027-03-14T05:30:00Z",
                    Skip(
                        &["OutsideConsentWindow(America/St_Johns)"],
                        Some("2027-03-21T04:30:00Z"),
                    ),
                ),
                "none",
            ),
            "America/St_Johns",
        ),
        with_ruleset(
            base(
                // libphonenumber 9.0.43 gives 709 Halifax and St John's (9.0.33 had Puerto
                // Rico for Halifax); on 15 March both are on summer time, half an hour apart.
                "709 is ambiguous: halifax too",
                ST_JOHNS,
                "mon 10:00-11:00",
                "2027-03-15T12:30:00Z",
                Skip(
                    &["OutsideConsentWindow(America/Halifax)"],
                    Some("2027-03-15T13:00:00Z"),
                ),
            ),
            "US",
        ),
        // ---- ambiguous +1 area codes ---------------------------------------------------------
        with_ruleset(
            base(
                "907: adak still before its window",
                ALASKA,
                "mon-fri 09:00-17:00",
                "2027-01-11T18:30:00Z",
                Skip(
                    &["OutsideConsentWindow(America/Adak)"],
                    Some("2027-01-11T19:00:00Z"),
                ),
            ),
            "US",
        ),
        with_ruleset(
            base(
                "907: both zones in window",
                ALASKA,
                "mon-fri 09:00-17:00",
                "2027-01-11T19:00:00Z",
                Dial(None),
            ),
            "US",
        ),
        with_ruleset(
            base(
                "907: anchorage closes first",
                ALASKA,
                "mon-fri 09:00-17:00",
                "2027-01-12T01:59:00Z",
                Skip(&["CallWouldNotFit"], Some("2027-01-12T19:00:00Z")),
            ),
            "US",
        ),
        with_zone(
            with_ruleset(
                base(
                    "907 with a given zone",
                    ALASKA,
                    "mon-fri 09:00-17:00",
                    "2027-01-11T18:30:00Z",
                    Dial(None),
                ),
                "US",
            ),
            "America/Anchorage",
        ),
        with_ruleset(
            base(
                "toll-free: all of NANP, never",
                TOLL_FREE,
                "daily 09:00-17:00",
                "2027-01-11T19:00:00Z",
                Skip(&["*"], None),
            ),
            "US",
        ),
        with_ruleset(
            base(
                "no zone for the number",
                INTL_FREEPHONE,
                "daily 00:00-24:00",
                "2027-01-11T19:00:00Z",
                Skip(&["UnknownZone"], None),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "australian mobile: every australian zone",
                AU_MOBILE,
                "mon-fri 09:00-17:00",
                "2027-01-11T02:00:00Z",
                Skip(
                    &["OutsideConsentWindow(Indian/Cocos)"],
                    Some("2027-01-11T02:30:00Z"),
                ),
            ),
            "none",
        ),
        // ---- windows over midnight ------------------------------------------------------------
        with_ruleset(
            base(
                "fri 22-02 on saturday 01:30",
                PARIS,
                "fri 22:00-02:00",
                "2027-03-06T00:30:00Z",
                Dial(Some("2027-03-06T00:59:00Z")),
            ),
            "none",
        ),
        with_ruleset(
            base(
                "fri 22-02 not on friday 01:30",
                PARIS,
                "fri 22:00-02:00",
                "2027-03-05T00:30:00Z",
                Skip(&[OCW_PARIS], Some("2027-03-05T21:00:00Z")),
            ),
            "none",
        ),
        base(
            "fri 19-02 under FR: 20:30 illegal",
            PARIS,
            "fri 19:00-02:00",
            "2027-03-05T19:30:00Z",
            Skip(&[OLH_PARIS], Some("2027-03-12T18:00:00Z")),
        ),
        with_ruleset(
            base(
                "sun 23-01 wraps into monday",
                PARIS,
                "sun 23:00-01:00",
                "2027-02-28T23:30:00Z",
                Dial(Some("2027-02-28T23:59:00Z")),
            ),
            "none",
        ),
        // ---- consent validity inside a window ------------------------------------------------
        with_consents(
            base(
                "expiry: last start that fits",
                PARIS,
                evening,
                "2027-03-01T17:58:59Z",
                Dial(None),
            ),
            vec![Consent {
                expires: Some("2027-03-01T18:00:00Z"),
                ..consent(evening)
            }],
        ),
        with_consents(
            base(
                "expiry: call would outlive consent",
                PARIS,
                evening,
                "2027-03-01T17:59:30Z",
                Skip(&["CallWouldNotFit"], None),
            ),
            vec![Consent {
                expires: Some("2027-03-01T18:00:00Z"),
                ..consent(evening)
            }],
        ),
        with_consents(
            base(
                "expired",
                PARIS,
                evening,
                "2027-03-01T18:00:00Z",
                Skip(&["ConsentExpired"], None),
            ),
            vec![Consent {
                expires: Some("2027-03-01T18:00:00Z"),
                ..consent(evening)
            }],
        ),
        with_consents(
            base(
                "revoked mid-window",
                PARIS,
                evening,
                "2027-03-01T17:50:00Z",
                Skip(&["ConsentRevoked"], None),
            ),
            vec![Consent {
                revoked: Some("2027-03-01T17:45:00Z"),
                ..consent(evening)
            }],
        ),
        with_consents(
            base(
                "granted mid-window",
                PARIS,
                evening,
                "2027-03-01T17:10:00Z",
                Skip(&["ConsentNotYetGranted"], Some("2027-03-01T17:30:00Z")),
            ),
            vec![Consent {
                granted: "2027-03-01T17:30:00Z",
                ..consent(evening)
            }],
        ),
        with_ruleset(
            with_consents(
                base(
                    "revoked record's windows no longer count",
                    PARIS,
                    evening,
                    "2027-03-01T17:30:00Z",
                    Skip(&[OCW_PARIS], Some("2027-03-06T09:00:00Z")),
                ),
                vec![
                    Consent {
                        revoked: Some("2027-02-01T00:00:00Z"),
                        ..consent(evening)
                    },
                    Consent {
                        granted: "2027-02-15T00:00:00Z",
                        ..consent("sat 10:00-12:00")
                    },
                ],
            ),
            "none",
        ),
        with_consents(
            base(
                "no consent record",
                PARIS,
                evening,
                "2027-03-01T17:30:00Z",
                Skip(&["NoConsent"], None),
            ),
            vec![],
        ),
        // ---- campaign schedule in the campaign's zone ------------------------------------------
        with_cron(
            base(
                "cron in new york: 09:30 EDT",
                PARIS,
                "mon-fri 14:00-20:00",
                "2027-03-15T13:30:00Z",
                Dial(None),
            ),
            &["* 9-16 * * 1-5"],
            "America/New_York",
        ),
        with_cron(
            base(
                "cron in new york: 08:30 EST",
                PARIS,
                "mon-fri 14:00-20:00",
                "2027-03-08T13:30:00Z",
                Skip(&["OutsideCampaignSchedule"], Some("2027-03-08T14:00:00Z")),
            ),
            &["* 9-16 * * 1-5"],
            "America/New_York",
        ),
        with_cron(
            with_ruleset(
                base(
                    "cron vixie OR: the 1st (a thursday)",
                    PARIS,
                    "daily 00:00-24:00",
                    "2027-04-01T08:30:00Z",
                    Dial(None),
                ),
                "none",
            ),
            &["* 10-11 1 * mon"],
            "Europe/Paris",
        ),
        with_cron(
            with_ruleset(
                base(
                    "cron vixie OR: neither 1st nor monday",
                    PARIS,
                    "daily 00:00-24:00",
                    "2027-04-02T08:30:00Z",
                    Skip(&["OutsideCampaignSchedule"], Some("2027-04-05T08:00:00Z")),
                ),
                "none",
            ),
            &["* 10-11 1 * mon"],
            "Europe/Paris",
        ),
        with_cron(
            with_ruleset(
                base(
                    "cron minute holds to :59",
                    PARIS,
                    "daily 00:00-24:00",
                    "2027-03-01T09:28:30Z",
                    Dial(Some("2027-03-01T09:29:00Z")),
                ),
                "none",
            ),
            &["0-29 10 * * *"],
            "Europe/Paris",
        ),
        with_cron(
            with_ruleset(
                base(
                    "cron: call would outlast the schedule",
                    PARIS,
                    "daily 00:00-24:00",
                    "2027-03-01T09:29:00Z",
                    Skip(&["CallWouldNotFit"], Some("2027-03-02T09:00:00Z")),
                ),
                "none",
            ),
            &["0-29 10 * * *"],
            "Europe/Paris",
        ),
    ]
}

#[test]
fn decision_table() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let policy = policy(case.ruleset, case.cron, case.cron_zone, case.d);
        let mut c = contact(case.phone, case.zone, &case.consents);
        if case.consents.is_empty() {
            c = Contact::new(c.id().clone(), c.phone().clone(), c.given_zone(), vec![]);
        }
        let now = t(case.now);
        let got = decide(&c, &policy, now);
        let problem = match (&case.want, &got) {
            (Dial(until), Decision::Dial(d)) => until
                .filter(|u| t(u) != d.valid_until)
                .map(|u| format!("valid_until {} != {u}", d.valid_until)),
            (Skip(reasons, next), Decision::Skip(s)) => {
                let kinds: Vec<String> = s.reasons.iter().map(kind).collect();
                let want_next = next.map(t);
                if reasons != &["*"]
                    && kinds != reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>()
                {
                    Some(format!("reasons {kinds:?} != {reasons:?}"))
                } else if s.next_eligible != want_next {
                    Some(format!(
                        "next_eligible {:?} != {want_next:?}",
                        s.next_eligible
                    ))
                } else {
                    None
                }
            }
            (_, got) => Some(format!("got {got:?}")),
        };
        // `windows` must agree with `decide` at `now`.
        let ws = windows(
            &c,
            &policy,
            now - chrono::Duration::days(1),
            now + chrono::Duration::days(1),
        );
        let in_window = ws.iter().any(|w| w.start <= now && now < w.end);
        let agreement = (in_window != got.is_dial()).then(|| {
            format!(
                "windows() says {in_window}, decide() says {}",
                got.is_dial()
            )
        });
        for p in problem.into_iter().chain(agreement) {
            failures.push(format!("{}: {p}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn dial_names_consent_window_zone_offset_and_ruleset() {
    let c = contact(
        ALASKA,
        None,
        &[consent("sat 10:00-11:00"), consent("mon-fri 09:00-17:00")],
    );
    let p = policy("US", &[], "UTC", 60);
    let Decision::Dial(d) = decide(&c, &p, t("2027-01-11T19:00:00Z")) else {
        panic!("expected Dial");
    };
    assert_eq!(d.consent, 1);
    assert_eq!(d.zone_source, ZoneSource::Number);
    assert_eq!(
        (d.ruleset.name, d.ruleset.version),
        ("US", "US-47CFR64.1200c1-1992")
    );
    let got: Vec<(String, i32, String, String)> = d
        .readings
        .iter()
        .map(|r| {
            (
                r.zone.to_string(),
                r.utc_offset,
                r.local.to_string(),
                r.window.map(|w| w.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "America/Adak".into(),
                -36000,
                "2027-01-11 09:00:00".into(),
                "mon-fri 09:00-17:00".into()
            ),
            (
                "America/Anchorage".into(),
                -32400,
                "2027-01-11 10:00:00".into(),
                "mon-fri 09:00-17:00".into()
            ),
        ]
    );
}

#[test]
fn windows_are_exact_over_a_dst_week() {
    // Paris, week of the 2027 spring change; FR hours; D = 60 s.
    let c = contact(PARIS, None, &[consent("mon-sun 09:00-21:00")]);
    let p = policy("FR", &[], "UTC", 60);
    let ws = windows(&c, &p, t("2027-03-24T00:00:00Z"), t("2027-03-31T00:00:00Z"));
    let got: Vec<String> = ws
        .iter()
        .map(|w| format!("{}/{}", w.start.to_rfc3339(), w.end.to_rfc3339()))
        .collect();
    let want = [
        // Wed 24, Thu 25, Fri 26 in CET (UTC+1): 10-13 → 09-12Z, 14-20 → 13-19Z.
        "2027-03-24T09:00:00+00:00/2027-03-24T11:59:00+00:00",
        "2027-03-24T13:00:00+00:00/2027-03-24T18:59:00+00:00",
        "2027-03-25T09:00:00+00:00/2027-03-25T11:59:00+00:00",
        "2027-03-25T13:00:00+00:00/2027-03-25T18:59:00+00:00",
        "2027-03-26T09:00:00+00:00/2027-03-26T11:59:00+00:00",
        "2027-03-26T13:00:00+00:00/2027-03-26T18:59:00+00:00",
        // Sat 27, Sun 28: no legal hours; Mon 29: Easter Monday.
        // Tue 30 in CEST (UTC+2).
        "2027-03-30T08:00:00+00:00/2027-03-30T10:59:00+00:00",
        "2027-03-30T12:00:00+00:00/2027-03-30T17:59:00+00:00",
    ];
    assert_eq!(got, want);
}

#[test]
fn a_fold_is_one_interval_spanning_both_passes() {
    // Paris 2027-10-31: 02:00-03:00 is read twice, 00:00-01:00Z (CEST) and 01:00-02:00Z (CET).
    let p = policy("none", &[], "UTC", 60);
    let c = contact(PARIS, None, &[consent("sun 02:00-03:00")]);
    let ws = windows(&c, &p, t("2027-10-30T12:00:00Z"), t("2027-10-31T12:00:00Z"));
    assert_eq!(
        ws,
        vec![Interval {
            start: t("2027-10-31T00:00:00Z"),
            end: t("2027-10-31T01:59:00Z")
        }]
    );
    // New York 2027-11-07: 01:00-02:00 read at 05:00-06:00Z (EDT) and 06:00-07:00Z (EST).
    let c = contact(NEWARK, None, &[consent("sun 01:00-02:00")]);
    let ws = windows(&c, &p, t("2027-11-06T12:00:00Z"), t("2027-11-07T12:00:00Z"));
    assert_eq!(
        ws,
        vec![Interval {
            start: t("2027-11-07T05:00:00Z"),
            end: t("2027-11-07T06:59:00Z")
        }]
    );
    // A gap yields nothing: Paris 2027-03-28 02:00-03:00 is never read.
    let c = contact(PARIS, None, &[consent("sun 02:00-03:00")]);
    assert!(windows(&c, &p, t("2027-03-27T12:00:00Z"), t("2027-03-28T12:00:00Z")).is_empty());
}
