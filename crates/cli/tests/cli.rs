//! The `crieur` binary: output formats, the shipped examples, and located errors with exit
//! code 2 on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crieur(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args(args)
        .current_dir(root())
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run crieur: {e}"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const HEADER: &str = "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n";
const GOOD_ROW: &str = "c1,+33612345678,,mon-fri 18:00-20:00,2027-01-10T09:00:00Z,,,form,proof-1\n";

/// A scratch directory with a campaign (whose body is `campaign`) and a contacts file.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(campaign: &str, contacts: &str) -> Scratch {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let wav = root().join("audio/rappel-fr.wav");
        let body = campaign.replace("@WAV@", &wav.display().to_string());
        for (name, data) in [("campaign.toml", body.as_str()), ("contacts.csv", contacts)] {
            if let Err(e) = std::fs::write(dir.path().join(name), data) {
                panic!("write {name}: {e}");
            }
        }
        if let Err(e) = std::fs::write(dir.path().join("not-a-wav.wav"), b"RIFF\0\0\0\0nope") {
            panic!("write: {e}");
        }
        Scratch { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn run(&self, cmd: &str) -> Output {
        let (c, k) = (self.path("campaign.toml"), self.path("contacts.csv"));
        match cmd {
            "check" => crieur(&["check", "--campaign", &c, "--contacts", &k]),
            _ => crieur(&[
                "windows",
                "--campaign",
                &c,
                "--contacts",
                &k,
                "--from",
                "2027-03-01T00:00:00Z",
                "--until",
                "2027-03-08T00:00:00Z",
                "--format",
                "jsonl",
            ]),
        }
    }
}

const CAMPAIGN: &str = "name = \"t\"\nruleset = \"FR\"\nzone = \"Europe/Paris\"\nring_timeout_secs = 20\nmessage = \"@WAV@\"\n";

#[test]
fn windows_jsonl_over_the_dst_week_of_the_example() {
    let o = crieur(&[
        "windows",
        "--campaign",
        "examples/campaign-fr.toml",
        "--contacts",
        "examples/contacts-fr.csv",
        "--from",
        "2027-03-24T00:00:00Z",
        "--until",
        "2027-03-31T00:00:00Z",
        "--format",
        "jsonl",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let paris1: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("\"fr-paris-1\""))
        .collect();
    // D = 25 s ring + 14.2 s message → 40 s. CET until Sunday 28, then CEST; Monday 29 is
    // Easter Monday.
    assert_eq!(
        paris1,
        [
            r#"{"contact":"fr-paris-1","start":"2027-03-24T17:00:00Z","end":"2027-03-24T18:59:20Z"}"#,
            r#"{"contact":"fr-paris-1","start":"2027-03-25T17:00:00Z","end":"2027-03-25T18:59:20Z"}"#,
            r#"{"contact":"fr-paris-1","start":"2027-03-26T17:00:00Z","end":"2027-03-26T18:59:20Z"}"#,
            r#"{"contact":"fr-paris-1","start":"2027-03-30T16:00:00Z","end":"2027-03-30T17:59:20Z"}"#,
        ]
    );
    // Every line is JSON with exactly the three fields.
    for line in out.lines() {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => panic!("{line}: {e}"),
        };
        assert_eq!(v.as_object().map(|o| o.len()), Some(3), "{line}");
    }
}

#[test]
fn examples_pass_check() {
    for (c, k) in [
        ("campaign-fr", "contacts-fr"),
        ("campaign-us", "contacts-us"),
    ] {
        let o = crieur(&[
            "check",
            "--campaign",
            &format!("examples/{c}.toml"),
            "--contacts",
            &format!("examples/{k}.csv"),
        ]);
        assert!(o.status.success(), "{c}: {}", text(&o.stderr));
        assert!(text(&o.stdout).contains(": ok:"), "{}", text(&o.stdout));
    }
}

#[test]
fn explain_lists_reasons_and_next_eligible() {
    let o = crieur(&[
        "explain",
        "--campaign",
        "examples/campaign-fr.toml",
        "--contacts",
        "examples/contacts-fr.csv",
        "--contact",
        "fr-paris-1",
        "--at",
        "2027-03-29T16:30:00Z",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("decision  SKIP"), "{out}");
    assert!(
        out.contains(
            "PublicHoliday: 2027-03-29 in Europe/Paris is a public holiday (Lundi de Pâques)"
        ),
        "{out}"
    );
    assert!(out.contains("Mon 2027-03-29 18:30:00 (UTC+02:00)"), "{out}");
    assert!(out.contains("next    2027-03-30T16:00:00Z"), "{out}");

    let o = crieur(&[
        "explain",
        "--campaign",
        "examples/campaign-fr.toml",
        "--contacts",
        "examples/contacts-fr.csv",
        "--contact",
        "fr-paris-1",
        "--at",
        "2027-03-30T16:00:00Z",
    ]);
    let out = text(&o.stdout);
    assert!(out.contains("decision  DIAL"), "{out}");
    assert!(out.contains("consent #0: `mon-fri 18:00-20:00`"), "{out}");
    assert!(
        out.contains("a call may start until 2027-03-30T17:59:20Z"),
        "{out}"
    );
}

/// Runs `cmd` on a scratch campaign/contacts pair; expects exit 2, no stdout, and each
/// `want` fragment in stderr.
fn rejects(campaign: &str, contacts: &str, cmd: &str, want: &[&str]) {
    let s = Scratch::new(campaign, contacts);
    let o = s.run(cmd);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(2), "stdout: {out}\nstderr: {err}");
    if cmd == "windows" {
        assert!(out.is_empty(), "partial output on bad input: {out}");
    }
    for w in want {
        let w = w.replace("@DIR@", &s.dir.path().display().to_string());
        assert!(err.contains(&w), "missing `{w}` in:\n{err}");
    }
}

#[test]
fn bad_phone_number_is_located() {
    let rows = format!(
        "{HEADER}{GOOD_ROW}c2,+3361234,,mon-fri 18:00-20:00,2027-01-10T09:00:00Z,,,form,p\n"
    );
    rejects(
        CAMPAIGN,
        &rows,
        "windows",
        &["@DIR@/contacts.csv:3:2: field `phone`: bad value `+3361234`: expected an E.164 number"],
    );
}

#[test]
fn unknown_zone_is_located() {
    let rows = format!(
        "{HEADER}c2,+33612345678,Europe/Pariss,mon-fri 18:00-20:00,2027-01-10T09:00:00Z,,,form,p\n"
    );
    rejects(CAMPAIGN, &rows, "check", &["contacts.csv:2:3: field `zone`: bad value `Europe/Pariss`: expected an IANA time-zone name"]);
}

#[test]
fn malformed_window_is_located_to_the_character() {
    let rows =
        format!("{HEADER}c2,+33612345678,,mon-fry 18:00-20:00,2027-01-10T09:00:00Z,,,form,p\n");
    rejects(CAMPAIGN, &rows, "windows", &[
        "contacts.csv:2:4: field `windows`: bad value `mon-fry 18:00-20:00`: at character 5 of the field: expected a day",
    ]);
    let rows = format!("{HEADER}c2,+33612345678,,mon 18:00-25:00,2027-01-10T09:00:00Z,,,form,p\n");
    rejects(
        CAMPAIGN,
        &rows,
        "windows",
        &["at character 11 of the field: expected a time HH:MM"],
    );
}

#[test]
fn bad_instants_and_missing_fields_are_located() {
    let rows = format!(
        "{HEADER}c2,+33612345678,,mon 18:00-20:00,yesterday,,,form,p\nc3,+33612345678,,mon 18:00-20:00,2027-01-10T09:00:00Z,2026-01-01T00:00:00Z,,form,p\nc4,+33612345678,,mon 18:00-20:00,2027-01-10T09:00:00Z,,,,p\n"
    );
    rejects(CAMPAIGN, &rows, "check", &[
        "contacts.csv:2:5: field `granted_at`: bad value `yesterday`: expected an RFC 3339 instant",
        "contacts.csv:3:6: field `expires_at`: bad value `2026-01-01T00:00:00Z`: expected an instant after granted_at",
        "contacts.csv:4:8: field `source`: required, but empty",
        "3 problem(s); nothing was done.",
    ]);
}

#[test]
fn missing_and_unknown_columns() {
    rejects(
        CAMPAIGN,
        "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,prof\n",
        "check",
        &[
            "contacts.csv:1:9: bad value `prof`: unknown column",
            "contacts.csv:1: missing column `proof`",
        ],
    );
}

#[test]
fn conflicting_duplicate_contact() {
    let rows = format!(
        "{HEADER}{GOOD_ROW}c1,+33612345679,,mon 10:00-11:00,2027-01-10T09:00:00Z,,,form,p\n"
    );
    rejects(CAMPAIGN, &rows, "check", &["contacts.csv:3:2: field `phone`: bad value `+33612345679`: contact `c1` has another phone on line 2"]);
}

#[test]
fn bad_cron_is_located() {
    let campaign = format!("{CAMPAIGN}schedule = [\"* 9-17 * * mon-fri\", \"* 25 * * *\"]\n");
    rejects(&campaign, &format!("{HEADER}{GOOD_ROW}"), "windows", &[
        "campaign.toml:6:35: field `schedule`: bad value `* 25 * * *`: expected a 5-field cron expression",
    ]);
    let campaign = format!("{CAMPAIGN}schedule = [\"* 9-17 * *\"]\n");
    rejects(
        &campaign,
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &["found 4"],
    );
}

#[test]
fn unknown_ruleset_and_zone_in_campaign() {
    let campaign = CAMPAIGN
        .replace("\"FR\"", "\"DE\"")
        .replace("Europe/Paris", "Mars/Olympus");
    rejects(&campaign, &format!("{HEADER}{GOOD_ROW}"), "check", &[
        "campaign.toml:2:11: field `ruleset`: bad value `DE`: unknown rule set `DE`: expected one of FR, US, none",
        "campaign.toml:3:8: field `zone`: bad value `Mars/Olympus`: expected an IANA time-zone name",
    ]);
}

#[test]
fn unreadable_wav_and_short_ring_timeout() {
    let s = Scratch::new("", "");
    let campaign = CAMPAIGN
        .replace("@WAV@", &s.path("not-a-wav.wav"))
        .replace("ring_timeout_secs = 20", "ring_timeout_secs = 10");
    rejects(&campaign, &format!("{HEADER}{GOOD_ROW}"), "check", &[
        "campaign.toml:4:21: field `ring_timeout_secs`: bad value `10`: expected at least 15 seconds",
        "campaign.toml:5:11: field `message`",
        "expected a readable WAV file",
    ]);
    rejects(
        &CAMPAIGN.replace("@WAV@", "/nonexistent.wav"),
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &["expected a readable WAV file"],
    );
}

#[test]
fn bad_trunk_local_address_and_p_asserted_identity_are_located() {
    let campaign = format!(
        "{CAMPAIGN}[trunk]\nuri = \"sip:127.0.0.1:5060\"\nfrom = \"sip:+33100000000@x.test\"\n\
         local_address = \"0.0.0.0:5060\"\np_asserted_identity = \"+33100000000\"\n"
    );
    rejects(&campaign, &format!("{HEADER}{GOOD_ROW}"), "check", &[
        "field `trunk.local_address`: bad value `0.0.0.0:5060`: expected <IP>:<port> of this host",
        "field `trunk.p_asserted_identity`: bad value `+33100000000`: expected a sip:, sips: or tel: URI",
    ]);
}

#[test]
fn toml_syntax_and_unknown_keys() {
    rejects(
        &format!("{CAMPAIGN}ringtimeout = 3\n"),
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &["campaign.toml:6:1: unknown field `ringtimeout`"],
    );
    rejects(
        "name = \n",
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &["campaign.toml:1:"],
    );
}

#[test]
fn bad_arguments_exit_2() {
    let o = crieur(&[
        "windows",
        "--campaign",
        "x",
        "--contacts",
        "y",
        "--from",
        "monday",
        "--until",
        "2027-01-01T00:00:00Z",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("expected an RFC 3339 instant"));
    let o = crieur(&[
        "explain",
        "--campaign",
        "examples/campaign-fr.toml",
        "--contacts",
        "examples/contacts-fr.csv",
        "--contact",
        "nobody",
        "--at",
        "2027-03-29T16:30:00Z",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("field `id`: bad value `nobody`: no contact with this id"));
}

#[test]
fn bom_and_crlf_are_accepted() {
    let rows = format!("\u{feff}{HEADER}{GOOD_ROW}").replace('\n', "\r\n");
    let s = Scratch::new(CAMPAIGN, &rows);
    let o = s.run("windows");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).lines().count(), 5, "{}", text(&o.stdout));
}

#[test]
fn never_holding_schedule_is_a_warning() {
    let campaign = format!("{CAMPAIGN}schedule = [\"* * 31 2 *\"]\n");
    let s = Scratch::new(&campaign, &format!("{HEADER}{GOOD_ROW}"));
    let o = s.run("check");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("schedule expression `* * 31 2 *` never holds"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn instants_after_2099_are_refused() {
    let o = crieur(&[
        "explain",
        "--campaign",
        "examples/campaign-fr.toml",
        "--contacts",
        "examples/contacts-fr.csv",
        "--contact",
        "fr-paris-1",
        "--at",
        "2100-07-01T10:00:00Z",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("expected an instant before 2100"),
        "{}",
        text(&o.stderr)
    );
}

/// Rows are validated in blocks of 8 192 on several threads: errors far apart in a large file
/// keep their own lines and file order, a duplicate id across blocks is still caught, a field
/// with bad UTF-8 is located, and spaces around fields are trimmed.
#[test]
fn errors_across_validation_blocks_keep_their_lines_and_order() {
    let mut rows = String::from(HEADER);
    for i in 0..20_000 {
        let line = i + 2;
        let row = match line {
            3 => "c1,+33612340003,,mon 10:00-11:00,2027-01-10T09:00:00Z,,,form,p\n".to_owned(),
            9_000 => format!("d{i},+3361234,,mon 10:00-11:00,2027-01-10T09:00:00Z,,,form,p\n"),
            17_000 => {
                "c1 , +33612345679 ,,mon 10:00-11:00,2027-01-10T09:00:00Z,,,form,p\n".to_owned()
            }
            19_000 => {
                format!("d{i},+33612345678,,mon 10:00-11:00,2027-01-10T09:00:00Z,,,form,\u{0}\n")
            }
            _ => format!(
                " d{i} , +336{:08} ,, mon 10:00-11:00 ,2027-01-10T09:00:00Z,,,form,p\n",
                10_000_000 + i
            ),
        };
        rows.push_str(&row);
    }
    let mut bytes = rows.into_bytes();
    // Line 19 000's proof becomes an invalid UTF-8 byte.
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        bytes[at] = 0xff;
    }
    let s = Scratch::new(CAMPAIGN, "");
    std::fs::write(s.dir.path().join("contacts.csv"), &bytes).unwrap_or_else(|e| panic!("{e}"));
    let o = s.run("check");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let want = [
        "contacts.csv:9000:2: field `phone`: bad value `+3361234`",
        "contacts.csv:17000:2: field `phone`: bad value `+33612345679`: contact `c1` has another phone on line 3",
        "contacts.csv:19000:9: field `proof`: malformed CSV: invalid UTF-8",
        "3 problem(s); nothing was done.",
    ];
    let mut from = 0;
    for w in want {
        let at = err[from..]
            .find(w)
            .unwrap_or_else(|| panic!("missing (or out of order) `{w}` in:\n{err}"));
        from += at + w.len();
    }
}

#[test]
fn crlf_line_numbers() {
    let rows =
        format!("{HEADER}{GOOD_ROW}c2,+3361234,,mon 10:00-11:00,2027-01-10T09:00:00Z,,,form,p\n")
            .replace('\n', "\r\n");
    rejects(
        CAMPAIGN,
        &rows,
        "check",
        &["contacts.csv:3:2: field `phone`"],
    );
}

#[test]
fn non_ascii_window_error_column_counts_characters() {
    let rows = format!(
        "{HEADER}c2,+33612345678,,lundi-vendredi 18:00-20:00; été,2027-01-10T09:00:00Z,,,form,p\n"
    );
    rejects(
        CAMPAIGN,
        &rows,
        "check",
        &["at character 1 of the field: expected a day"],
    );
    let rows = format!(
        "{HEADER}c2,+33612345678,,mon 18:00-20:00; été 10:00-11:00,2027-01-10T09:00:00Z,,,form,p\n"
    );
    rejects(
        CAMPAIGN,
        &rows,
        "check",
        &["at character 18 of the field: expected a day"],
    );
}

#[test]
fn simulate_prints_a_deterministic_plan_and_a_daily_summary() {
    let run = || {
        crieur(&[
            "simulate",
            "--campaign",
            "examples/campaign-fr.toml",
            "--contacts",
            "examples/contacts-fr.csv",
            "--from",
            "2027-03-22T00:00:00Z",
            "--days",
            "14",
            "--seed",
            "3",
        ])
    };
    let (a, b) = (run(), run());
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let plan = text(&a.stdout);
    assert!(!plan.is_empty());
    for line in plan.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        for k in ["contact", "instant", "attempt", "outcome"] {
            assert!(v.get(k).is_some(), "{line}");
        }
        // Never the revoked contact after its revocation (2027-03-24T12:00Z).
        if v["contact"] == "fr-revoked" {
            assert!(
                v["instant"].as_str().unwrap_or("") < "2027-03-24T12:00:00Z",
                "{line}"
            );
        }
    }
    assert!(text(&a.stderr).contains("day (UTC)"), "{}", text(&a.stderr));
    let o = crieur(&[
        "simulate",
        "--campaign",
        "examples/campaign-fr.toml",
        "--contacts",
        "examples/contacts-fr.csv",
        "--from",
        "2027-03-22T00:00:00Z",
        "--outcomes",
        "busy=0.9,answered=0.5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("add up to more than 1"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn retry_rules_per_outcome_come_from_the_campaign() {
    let campaign = format!(
        "{CAMPAIGN}[retry]\nmax_attempts = 5\n[retry.busy]\ndelay_secs = 7200\nmax_retries = 1\n"
    );
    let s = Scratch::new(&campaign, &format!("{HEADER}{GOOD_ROW}"));
    let o = crieur(&[
        "simulate",
        "--campaign",
        &s.path("campaign.toml"),
        "--contacts",
        &s.path("contacts.csv"),
        "--from",
        "2027-03-01T00:00:00Z",
        "--days",
        "7",
        "--outcomes",
        "busy=1.0",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let plan: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let got: Vec<(String, u64)> = plan
        .iter()
        .map(|v| {
            (
                v["instant"].as_str().unwrap_or("").to_owned(),
                v["attempt"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    // One retry after busy, at least 2 h later: the window (18–20 h Paris) has closed, so the
    // next evening.
    assert_eq!(
        got,
        [
            ("2027-03-01T17:00:00Z".to_owned(), 1),
            ("2027-03-02T17:00:00Z".to_owned(), 2)
        ]
    );
}

#[test]
fn caps_may_only_be_tightened_and_keys_must_differ() {
    let campaign = format!(
        "{CAMPAIGN}not_interested_key = \"9\"\n[caps]\nrolling_max = 6\nrolling_days = 30\nquiet_days_after_refusal = 10\n"
    );
    rejects(&campaign, &format!("{HEADER}{GOOD_ROW}"), "check", &[
        "campaign.toml:6:22: field `not_interested_key`: bad value `9`: must differ from the opt-out key `9`",
        "field `caps.rolling_max`: bad value `6 per 30 days`: FR allows at most 4 calls per 30 days; an override may only be stricter",
        "field `caps.quiet_days_after_refusal`: bad value `10`: FR requires at least 60 days",
    ]);
    // Stricter is accepted.
    let s = Scratch::new(
        &format!("{CAMPAIGN}not_interested_key = \"2\"\n[caps]\nrolling_max = 2\nquiet_days_after_refusal = 90\n"),
        &format!("{HEADER}{GOOD_ROW}"),
    );
    let o = s.run("check");
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn trunk_breaker_thresholds_are_checked_and_located() {
    let campaign = format!(
        "{CAMPAIGN}[trunk]\nuri = \"sip:127.0.0.1:5060\"\nfrom = \"sip:+33100000000@crieur.test\"\n\
         [trunk.breaker]\nconsecutive_faults = 0\nopen_secs = 90000\n"
    );
    rejects(
        &campaign,
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &[
            "campaign.toml:10:22",
            "trunk.breaker.consecutive_faults",
            "expected 1 to 1000 trunk faults in a row",
            "campaign.toml:11:13",
            "trunk.breaker.open_secs",
            "expected 1 to 86400 seconds",
        ],
    );
    let ok = campaign
        .replace("consecutive_faults = 0", "consecutive_faults = 3")
        .replace("open_secs = 90000", "open_secs = 30");
    let s = Scratch::new(&ok, &format!("{HEADER}{GOOD_ROW}"));
    let o = s.run("check");
    assert!(o.status.success(), "{}", text(&o.stderr));
}
