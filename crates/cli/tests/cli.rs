//! The `crieur` binary: output formats, the shipped examples, and located errors with exit
//! code 2 on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crieur_test_support::text;

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

const HEADER: &str = "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n";
const GOOD_ROW: &str = "c1,+33612345678,,mon-fri 18:00-20:00,2027-01-10T09:00:00Z,,,form,proof-1\n";

/// A scratch directory with a campaign (whose body is `campaign`, `@WAV@` standing for the
/// example recording), a contacts file, and `not-a-wav.wav`.
struct Scratch {
    dir: crieur_test_support::Scratch,
}

impl Scratch {
    fn new(campaign: &str, contacts: &str) -> Scratch {
        let dir = crieur_test_support::Scratch::new();
        let wav = root().join("audio/rappel-fr.wav");
        dir.write(
            "campaign.toml",
            campaign.replace("@WAV@", &wav.display().to_string()),
        );
        dir.write("contacts.csv", contacts);
        dir.write("not-a-wav.wav", b"RIFF\0\0\0\0nope");
        Scratch { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.file(name)
    }
    fn write(&self, name: &str, data: impl AsRef<[u8]>) {
        self.dir.write(name, data);
    }
    fn exists(&self, name: &str) -> bool {
        self.dir.exists(name)
    }
    /// `check`, or `windows` over the DST week, on the campaign and contacts.
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
    assert!(
        out.contains(
            "next    2027-03-30T16:00:00Z (in 23 h 30 min; Tue 2027-03-30 18:00:00 Europe/Paris)"
        ),
        "{out}"
    );

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
         local_address = \"0.0.0.0:5060\"\np_asserted_identity = \"+33100000000\"\ntransport = \"sctp\"\n\
         dns_server = \"resolver.example\"\n"
    );
    rejects(&campaign, &format!("{HEADER}{GOOD_ROW}"), "check", &[
        "field `trunk.local_address`: bad value `0.0.0.0:5060`: expected <IP>:<port> of this host",
        "field `trunk.p_asserted_identity`: bad value `+33100000000`: expected a sip:, sips: or tel: URI",
        "field `trunk.transport`: bad value `sctp`: expected `udp`, `tcp` or `tls`",
        "campaign.toml:12:14: field `trunk.dns_server`: bad value `resolver.example`: expected <IP>:<port> of a DNS server",
    ]);
}

/// `tls_cert_file` / `tls_key_file` (our TLS listener): both or neither, only over TLS, each
/// a PEM file holding what it names; every problem located.
#[test]
fn bad_trunk_tls_listener_files_are_located() {
    let trunk = |uri: &str, keys: &str| {
        format!("{CAMPAIGN}[trunk]\nuri = \"{uri}\"\nfrom = \"sip:+33100000000@x.test\"\n{keys}")
    };
    rejects(
        &trunk("sips:127.0.0.1:5061", "tls_cert_file = \"/nonexistent/cert.pem\"\ntls_key_file = \"@WAV@\"\n"),
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &[
            "campaign.toml:9:17: field `trunk.tls_cert_file`: bad value `/nonexistent/cert.pem`: expected a readable PEM file of our certificate chain",
            "campaign.toml:10:16: field `trunk.tls_key_file`",
            "expected a readable PEM file of our private key",
        ],
    );
    rejects(
        &trunk("sips:127.0.0.1:5061", "tls_key_file = \"key.pem\"\n"),
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &["campaign.toml:9:16: field `trunk.tls_cert_file`: tls_cert_file and tls_key_file go together"],
    );
    rejects(
        &trunk("sip:127.0.0.1:5060", "tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n"),
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &["campaign.toml:9:17: field `trunk.tls_cert_file`: bad value `c.pem`: only with transport = \"tls\""],
    );
}

#[test]
fn a_lead_in_longer_than_the_identity_rule_allows_is_located() {
    let campaign = CAMPAIGN.replace(
        "ring_timeout_secs = 20\n",
        "ring_timeout_secs = 20\nlead_in_ms = 1600\n",
    );
    rejects(
        &campaign,
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &["campaign.toml:5:14: field `lead_in_ms`: bad value `1600`: expected at most 1500"],
    );
    // At the limit, with symmetric RTP on the trunk: accepted.
    let campaign = format!(
        "{}[trunk]\nuri = \"sip:127.0.0.1:5060\"\nfrom = \"sip:+33100000000@x.test\"\nsymmetric_rtp = true\n",
        CAMPAIGN.replace("ring_timeout_secs = 20\n", "ring_timeout_secs = 20\nlead_in_ms = 1500\n")
    );
    let s = Scratch::new(&campaign, &format!("{HEADER}{GOOD_ROW}"));
    let o = s.run("check");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
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

/// A G.711 WAV (format tag 7 µ-law or 6 A-law, 8 kHz mono) whose `data` header announces
/// `announced` bytes and which holds `held` (silence).
fn g711_wav(tag: u16, announced: u32, held: usize) -> Vec<u8> {
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(4 + 26 + 8 + announced).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&18u32.to_le_bytes());
    w.extend_from_slice(&tag.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8u16.to_le_bytes());
    w.extend_from_slice(&0u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&announced.to_le_bytes());
    w.extend(std::iter::repeat_n(
        if tag == 7 { 0xff } else { 0xd5 },
        held,
    ));
    w
}

/// Two columns of one name (whatever their case) are an error naming both: the second must
/// not silently win (the consent would be attached to the wrong number).
#[test]
fn duplicate_columns_are_an_error_naming_both() {
    let rows = "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof,Phone\nc1,+33612345678,,mon 18:00-20:00,2027-01-10T09:00:00Z,,,form,p,+33612345679\n";
    rejects(
        CAMPAIGN,
        rows,
        "check",
        &["contacts.csv:1:10: bad value `Phone`: column 2 and column 10 are both `phone`; expected each column once"],
    );
}

#[test]
fn headers_are_case_insensitive_and_another_separator_is_named() {
    let s = Scratch::new(CAMPAIGN, &format!("{}{GOOD_ROW}", HEADER.to_uppercase()));
    let o = s.run("check");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let semi = format!("{HEADER}{GOOD_ROW}").replace(',', ";");
    rejects(
        CAMPAIGN,
        &semi,
        "check",
        &[
            "contacts.csv:1: this file looks `;`-separated; give --delimiter ';'",
            "1 problem(s)",
        ],
    );
}

/// `[audit] signing_key_file` naming a missing (or malformed) key fails `check`; `import`
/// then stops before creating the store — and so with a bad `--audit-key`.
#[test]
fn a_missing_signing_key_fails_check_and_import_creates_nothing() {
    let campaign = format!("{CAMPAIGN}[audit]\nsigning_key_file = \"nope.key\"\n");
    rejects(&campaign, &format!("{HEADER}{GOOD_ROW}"), "check", &[
        "campaign.toml:7:20: field `audit.signing_key_file`: bad value `nope.key`: cannot read the signing key",
    ]);
    let s = Scratch::new(&campaign, &format!("{HEADER}{GOOD_ROW}"));
    s.write("bad.key", b"not hex\n");
    let import = |extra: &[&str]| {
        let mut a = vec![
            "import",
            "--campaign",
            &s.path("campaign.toml")[..],
            "--contacts",
            &s.path("contacts.csv")[..],
        ]
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
        a.extend(["--store".to_owned(), s.path("store")]);
        a.extend(extra.iter().map(|x| (*x).to_owned()));
        crieur(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = import(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(!s.exists("store") && !s.exists("store.audit"));
    // A good campaign, a bad --audit-key: still nothing created.
    std::fs::write(
        s.dir.path().join("campaign.toml"),
        CAMPAIGN.replace(
            "@WAV@",
            &root().join("audio/rappel-fr.wav").display().to_string(),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = import(&["--audit-key", &s.path("bad.key")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("--audit-key: "),
        "{}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stderr).contains("not a signing key"),
        "{}",
        text(&o.stderr)
    );
    assert!(!s.exists("store") && !s.exists("store.audit"));
    let o = import(&[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(s.exists("store"));
}

/// A WAV whose header announces 10 s but which holds 1 s fails `check`; µ-law and A-law
/// WAVs (tags 7 and 6) are accepted, with their length.
#[test]
fn truncated_wav_fails_check_and_g711_wavs_are_accepted() {
    let s = Scratch::new("", "");
    s.write("cut.wav", g711_wav(7, 80_000, 8_000));
    rejects(
        &CAMPAIGN.replace("@WAV@", &s.path("cut.wav")),
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &["campaign.toml:5:11: field `message`", "truncated: the header announces 80000 bytes of audio (10.0 s), the file holds 8000 (1.0 s)"],
    );
    for (tag, name) in [(7, "mulaw.wav"), (6, "alaw.wav")] {
        s.write(name, g711_wav(tag, 24_000, 24_000));
        s.write(
            "campaign.toml",
            CAMPAIGN.replace("@WAV@", &s.path(name)).as_bytes(),
        );
        s.write("contacts.csv", format!("{HEADER}{GOOD_ROW}").as_bytes());
        let o = s.run("check");
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        assert!(
            text(&o.stdout).contains("D = 23 s (ring 20 s + message 3.0 s)"),
            "{name}: {}",
            text(&o.stdout)
        );
    }
}

/// A megabyte field is echoed as its first 80 characters and its size.
#[test]
fn huge_values_are_not_echoed_whole() {
    let big = "x".repeat(1 << 20);
    let rows = format!("{HEADER}c2,+33612345678,,{big},2027-01-10T09:00:00Z,,,form,p\n");
    let s = Scratch::new(CAMPAIGN, &rows);
    let o = s.run("check");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", &err[..err.len().min(2000)]);
    assert!(err.len() < 1000, "{} bytes of errors", err.len());
    assert!(
        err.contains(&format!("bad value `{}… (1048576 bytes)`", "x".repeat(80))),
        "{err}"
    );
    // In a campaign file: a bad value, and a parser's message quoting the input.
    let campaign = CAMPAIGN
        .replace("Europe/Paris", &big)
        .replace("= 20", &format!("= \"{big}\""));
    let s = Scratch::new(&campaign, &format!("{HEADER}{GOOD_ROW}"));
    let o = s.run("check");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", &err[..err.len().min(2000)]);
    assert!(err.len() < 2000, "{} bytes of errors", err.len());
    assert!(err.contains("bytes)"), "{err}");
    // In an opt-out list.
    s.write("list.txt", format!("+{}\n", "1".repeat(1 << 20)).as_bytes());
    let o = crieur(&[
        "optout",
        "import",
        &s.path("list.txt"),
        "--store",
        &s.path("st"),
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.len() < 1000, "{} bytes of errors", err.len());
    assert!(err.contains("… (1048577 bytes)"), "{err}");
}

/// Spaces after the commas between days, as the grammar allows.
#[test]
fn spaces_between_days_are_accepted() {
    let rows = format!(
        "{HEADER}c1,+33612345678,,\"mon, wed 10:00-11:00\",2027-01-10T09:00:00Z,,,form,p\n"
    );
    let s = Scratch::new(CAMPAIGN, &rows);
    let o = s.run("windows");
    assert!(o.status.success(), "{}", text(&o.stderr));
    // 2027-03-01 is a Monday: Monday and Wednesday, 10:00-11:00 Paris (UTC+1).
    let out = text(&o.stdout);
    assert!(out.contains(r#""start":"2027-03-01T09:00:00Z""#), "{out}");
    assert!(out.contains(r#""start":"2027-03-03T09:00:00Z""#), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
}

/// A campaign file saved with a byte-order mark is read; one that is not UTF-8 is an error
/// at the line and column of the first bad byte.
#[test]
fn toml_bom_is_accepted_and_non_utf8_is_located() {
    let s = Scratch::new(
        &format!("\u{feff}{CAMPAIGN}"),
        &format!("{HEADER}{GOOD_ROW}"),
    );
    let o = s.run("check");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut latin1 = b"name = \"caf".to_vec();
    latin1.push(0xe9);
    latin1.extend_from_slice(b"\"\nruleset = \"FR\"\n");
    s.write("campaign.toml", &latin1);
    let o = s.run("check");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("campaign.toml:1:12: not UTF-8 text: byte 0xe9"),
        "{}",
        text(&o.stderr)
    );
}

/// Every problem of a campaign file at once, each at its line and column: unknown keys, a
/// value of the wrong type, and the checks that follow.
#[test]
fn toml_errors_are_all_reported_at_once() {
    let campaign = format!(
        "{CAMPAIGN}ringtimeout = 3\nopt_out_key = 9\n[pacing]\ncalls_per_second = \"fast\"\nmax_concurent_calls = 3\n"
    );
    rejects(
        &campaign,
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &[
            "campaign.toml:6:1: unknown field `ringtimeout`",
            "campaign.toml:7:15: invalid type: integer `9`, expected a string",
            "campaign.toml:9:20: invalid type: string \"fast\"",
            "campaign.toml:10:1: unknown field `max_concurent_calls`",
            "4 problem(s)",
        ],
    );
}

/// Opt-out lists: a byte-order mark is accepted; a byte that is not UTF-8 is located.
#[test]
fn optout_list_bom_and_non_utf8() {
    let s = Scratch::new("", "");
    s.write(
        "bom.txt",
        "\u{feff}+33612345678\n# comment\n+33612345679\n".as_bytes(),
    );
    let o = crieur(&[
        "optout",
        "import",
        &s.path("bom.txt"),
        "--store",
        &s.path("st"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("2 numbers"), "{}", text(&o.stdout));
    s.write("latin1.txt", b"+33612345678\n# r\xe9sili\xe9s\n");
    let o = crieur(&[
        "optout",
        "import",
        &s.path("latin1.txt"),
        "--store",
        &s.path("st"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("latin1.txt:2:4: not UTF-8 text: byte 0xe9"),
        "{}",
        text(&o.stderr)
    );
}

/// `crieur` with `args` (owned strings).
fn crieur_s(args: &[String]) -> Output {
    crieur(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A campaign under rule set `none` (any hour), with an id.
const CAMPAIGN_NONE: &str = "id = \"c-1\"\nname = \"First name\"\nruleset = \"none\"\nzone = \"Europe/Paris\"\nring_timeout_secs = 20\nmessage = \"@WAV@\"\n";

/// `import --contacts`, `--store` after the subcommand (also after the optout subcommand),
/// not before it; `campaigns` lists the store's campaigns by id; `optout check` exits 0 when
/// listed and 1 when not; the positional contacts file still works, with a warning.
#[test]
fn one_command_line_store_contacts_campaigns_optout_check() {
    let s = Scratch::new(CAMPAIGN_NONE, &format!("{HEADER}{GOOD_ROW}"));
    let (c, k, st) = (
        s.path("campaign.toml"),
        s.path("contacts.csv"),
        s.path("st"),
    );
    let o = crieur(&["import", "--campaign", &c, "--contacts", &k, "--store", &st]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("(campaign `c-1`)"),
        "{}",
        text(&o.stdout)
    );
    // The deprecated positional form.
    let o = crieur(&["import", "--campaign", &c, "--store", &st, &k]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("deprecated; use --contacts"),
        "{}",
        text(&o.stderr)
    );
    // `--store` is not a global option any more: only where it is used.
    let o = crieur(&["--store", &st, "campaigns"]);
    assert_eq!(o.status.code(), Some(2));
    let o = crieur(&["check", "--campaign", &c, "--store", &st]);
    assert_eq!(o.status.code(), Some(2), "check has no store");
    // Each option is shown where it is used, and only there.
    let help = |args: &[&str]| text(&crieur(&[args, &["--help"]].concat()).stdout);
    for (cmd, store, audit_key) in [
        (&["check"][..], false, false),
        (&["windows"][..], false, false),
        (&["import"][..], true, true),
        (&["run"][..], true, true),
        (&["campaigns"][..], true, false),
        (&["optout", "check"][..], true, false),
        (&["optout", "list"][..], true, false),
        (&["optout", "add"][..], true, true),
        (&["audit", "keygen"][..], false, false),
    ] {
        let h = help(cmd);
        assert_eq!(h.contains("--store"), store, "{cmd:?}: {h}");
        assert_eq!(h.contains("--audit-key"), audit_key, "{cmd:?}: {h}");
    }
    let o = crieur(&["campaigns", "--store", &st, "--format", "csv"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // From the store's counters: the contact is due (remaining), none done.
    assert_eq!(
        text(&o.stdout),
        "campaign,contacts,remaining,done\nc-1,1,1,0\n"
    );
    let o = crieur(&["optout", "add", "+33612345678", "--store", &st]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = crieur(&["optout", "check", "+33612345678", "--store", &st]);
    assert_eq!(
        (o.status.code(), text(&o.stdout).trim()),
        (Some(0), "opted out")
    );
    let o = crieur(&["optout", "--store", &st, "check", "+33612345679"]);
    assert_eq!(
        (o.status.code(), text(&o.stdout).trim()),
        (Some(1), "not opted out")
    );
    let o = crieur(&["optout", "list", "--store", &st, "--format", "jsonl"]);
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap_or_default();
    assert_eq!(v["source"], "crieur optout add", "{}", text(&o.stdout));
    // Whole seconds, UTC, `Z`.
    let at = v["at"].as_str().unwrap_or_default();
    assert!(at.len() == 20 && at.ends_with('Z'), "{at}");
    // The audit commands find `<store>.audit` from --store alone.
    for cmd in ["verify", "replay"] {
        let o = crieur(&["audit", cmd, "--store", &st]);
        assert!(
            o.status.success(),
            "{cmd}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
    let o = crieur(&["audit", "export", "--store", &st, "--format", "jsonl"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = crieur(&[
        "audit",
        "checkpoint",
        "--store",
        &st,
        "--export",
        &s.path("cp.json"),
    ]);
    // No signing key was given: no checkpoint, and it says why.
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no checkpoint yet"),
        "{}",
        text(&o.stderr)
    );
    assert!(!s.exists("cp.json"));
}

/// `--format` means the same everywhere: a CSV header even without rows, one JSON array.
#[test]
fn formats_for_windows_and_simulate() {
    let s = Scratch::new(CAMPAIGN, &format!("{HEADER}{GOOD_ROW}"));
    let args = |format: &str, until: &str| {
        vec![
            "windows".to_owned(),
            "--campaign".into(),
            s.path("campaign.toml"),
            "--contacts".into(),
            s.path("contacts.csv"),
            "--from".into(),
            "2027-03-01T00:00:00Z".into(),
            "--until".into(),
            until.into(),
            "--format".into(),
            format.into(),
        ]
    };
    let o = crieur_s(&args("csv", "2027-03-03T00:00:00Z"));
    assert_eq!(
        text(&o.stdout),
        "contact,start,end\nc1,2027-03-01T17:00:00Z,2027-03-01T18:59:25Z\nc1,2027-03-02T17:00:00Z,2027-03-02T18:59:25Z\n"
    );
    let o = crieur_s(&args("csv", "2027-03-01T00:00:00Z"));
    assert_eq!(o.status.code(), Some(2), "--until must be after --from");
    // A Sunday: no window, the header alone.
    let mut a = args("csv", "2027-02-28T23:00:00Z");
    a[6] = "2027-02-28T00:00:00Z".into();
    let o = crieur_s(&a);
    assert_eq!(text(&o.stdout), "contact,start,end\n");
    let o = crieur_s(&args("json", "2027-03-03T00:00:00Z"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
    assert_eq!(v[1]["end"], "2027-03-02T18:59:25Z");
    let o = crieur_s(&args("table", "2027-03-03T00:00:00Z"));
    assert!(text(&o.stdout).contains("1h59m25s"), "{}", text(&o.stdout));
    let o = crieur(&[
        "simulate",
        "--campaign",
        &s.path("campaign.toml"),
        "--contacts",
        &s.path("contacts.csv"),
        "--from",
        "2027-03-01T00:00:00Z",
        "--days",
        "1",
        "--outcomes",
        "busy=0,no-answer=0,optout=0",
        "--format",
        "csv",
    ]);
    assert_eq!(
        text(&o.stdout),
        "contact,instant,attempt,outcome\nc1,2027-03-01T17:00:00Z,1,answered\n"
    );
}

/// A `;`-separated file of national numbers: `--delimiter ';' --default-region FR`.
#[test]
fn delimiter_and_default_region() {
    let rows =
        format!("{HEADER}c1,06 12 34 56 78,,mon 18:00-20:00,2027-01-10T09:00:00Z,,,form,p\n")
            .replace(',', ";");
    let s = Scratch::new(CAMPAIGN, &rows);
    let (c, k) = (s.path("campaign.toml"), s.path("contacts.csv"));
    let o = crieur(&[
        "check",
        "--campaign",
        &c,
        "--contacts",
        &k,
        "--delimiter",
        ";",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("bad value `06 12 34 56 78`: expected an E.164 number"),
        "{}",
        text(&o.stderr)
    );
    let o = crieur(&[
        "explain",
        "--campaign",
        &c,
        "--contacts",
        &k,
        "--delimiter",
        ";",
        "--default-region",
        "fr",
        "--contact",
        "c1",
        "--at",
        "2027-03-01T17:00:00Z",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("contact   c1 +33612345678"),
        "{}",
        text(&o.stdout)
    );
    let o = crieur(&[
        "check",
        "--campaign",
        &c,
        "--contacts",
        &k,
        "--default-region",
        "XX",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("expected a region code"),
        "{}",
        text(&o.stderr)
    );
}

/// `optout import --skip-invalid --rejects F`: the valid numbers in, the others in F with
/// their line and reason.
#[test]
fn optout_import_skip_invalid_writes_rejects() {
    let s = Scratch::new("", "");
    s.write(
        "list.txt",
        b"+33612345678\nnot-a-number\n\n+33612345679\n+3361\n",
    );
    let st = s.path("st");
    let o = crieur(&["optout", "import", &s.path("list.txt"), "--store", &st]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!s.exists("st"), "nothing imported on bad input");
    let o = crieur(&[
        "optout",
        "import",
        &s.path("list.txt"),
        "--store",
        &st,
        "--skip-invalid",
        "--rejects",
        &s.path("rej.csv"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("2 lines rejected"),
        "{}",
        text(&o.stdout)
    );
    assert!(
        text(&o.stdout).contains("2 numbers, 2 new opt-outs"),
        "{}",
        text(&o.stdout)
    );
    let rej = std::fs::read_to_string(s.path("rej.csv")).unwrap_or_default();
    let lines: Vec<&str> = rej.lines().collect();
    assert_eq!(lines[0], "line,number,reject_reason");
    assert!(lines[1].starts_with("2,not-a-number,"), "{rej}");
    assert!(lines[2].starts_with("5,+3361,"), "{rej}");
    assert_eq!(lines.len(), 3, "{rej}");
    let o = crieur(&["optout", "check", "+33612345679", "--store", &st]);
    assert_eq!(o.status.code(), Some(0));
}

/// The campaign's `id` is what the store knows it by: renaming the campaign keeps its
/// contacts; a bad id is located; without an id, `check` says the name is used.
#[test]
fn campaign_id_is_stable_and_checked() {
    let s = Scratch::new(CAMPAIGN_NONE, &format!("{HEADER}{GOOD_ROW}"));
    let (c, k, st) = (
        s.path("campaign.toml"),
        s.path("contacts.csv"),
        s.path("st"),
    );
    let o = crieur(&["import", "--campaign", &c, "--contacts", &k, "--store", &st]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let body = std::fs::read_to_string(&c).unwrap_or_default();
    s.write(
        "campaign.toml",
        body.replace("First name", "Renamed").as_bytes(),
    );
    let o = crieur(&[
        "status",
        "--campaign",
        &c,
        "--store",
        &st,
        "--at",
        "2027-03-01T12:00:00Z",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("campaign  c-1 (`Renamed`)"),
        "{}",
        text(&o.stdout)
    );
    assert!(
        text(&o.stdout).contains("contacts  1"),
        "{}",
        text(&o.stdout)
    );
    rejects(
        &CAMPAIGN_NONE.replace("c-1", "bad id/"),
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &["campaign.toml:1:6: field `id`: bad value `bad id/`: expected 1 to 64 ASCII letters"],
    );
    let s = Scratch::new(CAMPAIGN, &format!("{HEADER}{GOOD_ROW}"));
    let o = s.run("check");
    assert!(o.status.success());
    assert!(
        text(&o.stdout).contains("warning: ")
            && text(&o.stdout).contains("no `id`: the name `t` is the campaign's id"),
        "{}",
        text(&o.stdout)
    );
}

/// `status`: contacts, done, due now, next due (in human units), and the contacts that can
/// never be called in the next 400 days with why; `check` and `import` warn about those.
#[test]
fn status_and_never_callable_warnings() {
    let rows = format!(
        "{HEADER}\
         due,+33612345670,,daily 00:00-24:00,2027-01-01T00:00:00Z,,,form,p\n\
         later,+33612345671,,daily 00:00-24:00,2027-04-12T12:00:00Z,,,form,p\n\
         expired,+33612345672,,daily 00:00-24:00,2026-01-01T00:00:00Z,2026-06-01T00:00:00Z,,form,p\n\
         optedout,+33612345673,,daily 00:00-24:00,2027-01-01T00:00:00Z,,,form,p\n"
    );
    let s = Scratch::new(CAMPAIGN_NONE, &rows);
    let (c, k, st) = (
        s.path("campaign.toml"),
        s.path("contacts.csv"),
        s.path("st"),
    );
    let o = s.run("check");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout)
            .contains("warning: contact `expired`: cannot be called in the next 400 days"),
        "{}",
        text(&o.stdout)
    );
    let o = crieur(&["import", "--campaign", &c, "--contacts", &k, "--store", &st]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("warning: contact `expired`"),
        "{}",
        text(&o.stdout)
    );
    let o = crieur(&["optout", "add", "+33612345673", "--store", &st]);
    assert!(o.status.success());
    let at = "2027-03-01T12:00:00Z";
    // Without --contacts: the store's counters and due index, no contact evaluated (the
    // opt-out is not seen until a run decides the contact).
    let o = crieur(&["status", "--campaign", &c, "--store", &st, "--at", at]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for want in [
        "contacts  4\n",
        "remaining 4 ",
        "done      0 ",
        "next due  2026-01-01T00:00:00Z (due now)",
        "from the store's counters",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    // No contact evaluated: no "never" line.
    assert!(!out.contains("\nnever "), "{out}");
    let o = crieur(&[
        "status",
        "--campaign",
        &c,
        "--store",
        &st,
        "--at",
        at,
        "--contacts",
    ]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for want in [
        "contacts  4",
        "done      1 ",
        "due now   1",
        "next due  2027-04-12T12:00:00Z (in 42 days; 1 contacts waiting)",
        "never     1 ",
        "  expired              ConsentExpired: consent #0 expired at 2026-06-01T00:00:00Z",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    let o = crieur(&[
        "status",
        "--campaign",
        &c,
        "--store",
        &st,
        "--at",
        at,
        "--format",
        "jsonl",
    ]);
    let states: Vec<(String, String)> = text(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["contact"].as_str().unwrap_or_default().to_owned(),
                v["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want = [
        ("due", "due"),
        ("expired", "never"),
        ("later", "waiting"),
        ("optedout", "done"),
    ];
    assert_eq!(
        states,
        want.map(|(a, b)| (a.to_owned(), b.to_owned())).to_vec()
    );
}

/// A wrong type in an optional key does not hide the checks that follow it; a wrong type in
/// a required key is reported once (not again as missing).
#[test]
fn toml_type_errors_and_checks_together() {
    let campaign =
        CAMPAIGN.replace("ring_timeout_secs = 20", "ring_timeout_secs = 10") + "opt_out_key = 9\n";
    rejects(&campaign, &format!("{HEADER}{GOOD_ROW}"), "check", &[
        "campaign.toml:6:15: invalid type: integer `9`, expected a string",
        "campaign.toml:4:21: field `ring_timeout_secs`: bad value `10`: expected at least 15 seconds",
        "2 problem(s)",
    ]);
    let s = Scratch::new(
        &CAMPAIGN.replace("name = \"t\"", "name = 5"),
        &format!("{HEADER}{GOOD_ROW}"),
    );
    let o = s.run("check");
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("campaign.toml:1:8: invalid type: integer `5`, expected a string"),
        "{err}"
    );
    assert!(!err.contains("missing field"), "{err}");
}

/// A byte-order mark does not shift the line numbers of `import --skip-invalid`'s rejects.
#[test]
fn skip_invalid_lines_are_right_after_a_bom() {
    let rows = format!(
        "\u{feff}{HEADER}{GOOD_ROW}c2,+3361234,,mon 18:00-20:00,2027-01-10T09:00:00Z,,,form,p\nc3,+33612345679,,mon 18:00-20:00,2027-01-10T09:00:00Z,,,form,p\n"
    );
    let s = Scratch::new(CAMPAIGN_NONE, &rows);
    let o = crieur(&[
        "import",
        "--campaign",
        &s.path("campaign.toml"),
        "--contacts",
        &s.path("contacts.csv"),
        "--store",
        &s.path("st"),
        "--skip-invalid",
        "--rejects",
        &s.path("rej.csv"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("2 new contacts"),
        "{}",
        text(&o.stdout)
    );
    let rej = std::fs::read_to_string(s.path("rej.csv")).unwrap_or_default();
    let last = rej.lines().nth(1).unwrap_or_default();
    assert!(
        last.starts_with("c2,+3361234,") && last.contains(",3,"),
        "{rej}"
    );
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

/// `[amd]`: an unknown mode, `voicemail-drop` without a voicemail message, and an
/// out-of-range parameter are each located; a well-formed section passes `check`.
#[test]
fn amd_section_is_checked() {
    let bad = format!("{CAMPAIGN}\n[amd]\nmode = \"voicemail\"\n");
    rejects(&bad, &format!("{HEADER}{GOOD_ROW}"), "check", &[
        "campaign.toml:8:8: field `amd.mode`: bad value `voicemail`: expected off, detect, voicemail-drop or hang-up-on-machine",
    ]);
    let bad = format!("{CAMPAIGN}\n[amd]\nmode = \"voicemail-drop\"\ngreeting_ms = 5\n");
    rejects(
        &bad,
        &format!("{HEADER}{GOOD_ROW}"),
        "check",
        &[
            "field `amd.greeting_ms`: bad value `5`: expected 10 to 120000 milliseconds",
            "field `amd.voicemail_message`: voicemail-drop needs a voicemail message",
        ],
    );
    let good = format!(
        "{CAMPAIGN}\n[amd]\nmode = \"voicemail-drop\"\nvoicemail_message = \"@WAV@\"\ngreeting_ms = 3000\n"
    );
    let s = Scratch::new(&good, &format!("{HEADER}{GOOD_ROW}"));
    let o = s.run("check");
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// The binary raises its soft open-file limit to the hard one at start (each call in
/// progress holds two RTP sockets, and the UAC's pool of ended calls' pairs half the soft
/// limit): started with a soft limit of 256, the running `crieur sim` has the hard limit.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a valid pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let hard = lim.rlim_max;
    assert!(
        hard > 256,
        "the test needs a hard open-file limit above 256"
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crieur"));
    cmd.args([
        "sim",
        "--plan",
        "examples/sim-plan.toml",
        "--bind",
        "127.0.0.1:0",
    ])
    .current_dir(root())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    // SAFETY: between fork and exec only `setrlimit` runs (async-signal-safe), on a local.
    unsafe {
        cmd.pre_exec(move || {
            let low = libc::rlimit {
                rlim_cur: 256,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &low) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run crieur: {e}"));
    // Running once it prints its address (the limit is raised before anything else).
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .map(|o| BufReader::new(o).read_line(&mut line));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        matches!(read, Some(Ok(n)) if n > 0) && line.contains("simulated callees"),
        "crieur sim did not start: {line:?}"
    );
    let limits = limits.unwrap_or_else(|e| panic!("/proc/PID/limits: {e}"));
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-file limit in {limits}"));
    let soft: Vec<&str> = files.split_whitespace().collect();
    assert_eq!(
        soft.get(3).copied(),
        Some(hard.to_string().as_str()),
        "{files}"
    );
}
