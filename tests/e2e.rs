//! End-to-end: `crieur run` against sipp (an independent SIP implementation), on loopback.
//!
//! Built as a test of the `crieur` package (see `crates/cli/Cargo.toml`), so Cargo hands it
//! the built binary.
#![allow(clippy::disallowed_methods)] // a test bounds its children with the wall clock

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crieur_test_support::scenario::*;
use crieur_test_support::{free_port, text, tone_wav, CampaignToml, Sipp};

/// The callee, chosen by the number's last digit:
/// 0 1 2 9 answer and listen to the whole message (we hang up); 3 busy (486);
/// 4 ring without answering (we CANCEL after the ring timeout; 487);
/// 5 answer, then the opt-out key by RFC 4733; 6 answer, then the opt-out key by SIP INFO;
/// 7 answer, then hang up mid-message; 8 503.
fn mixed() -> String {
    let bye_200 = BYE_200.replacen("<send>", "<send next=\"end\">", 1);
    format!(
        r#"{}  <nop next="busy" test="busy"/>
  <nop next="noanswer" test="noanswer"/>
  <nop next="unavailable" test="unavailable"/>
{}{}{ACK}  <nop next="rfc4733" test="rfc4733"/>
  <nop next="info" test="info"/>
  <nop next="hangup" test="hangup"/>
{bye_200}
  <label id="rfc4733"/>
  <pause milliseconds="400"/>
  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_9.pcap"/></action></nop>
{bye_200}
  <label id="info"/>
  <pause milliseconds="400"/>
{}{bye_200}
  <label id="hangup"/>
  <pause milliseconds="500"/>
{}
  <label id="busy"/>
{}  <recv request="ACK" next="end"/>

  <label id="unavailable"/>
{}  <recv request="ACK" next="end"/>

  <label id="noanswer"/>
{}  <recv request="CANCEL"/>
{CANCEL_200_487}  <recv request="ACK"/>

  <label id="end"/>
{TAIL}"#,
        head_dialog_with(
            r#"      <ereg regexp="INVITE sip:\+[0-9]*3@" search_in="msg" assign_to="busy"/>
      <ereg regexp="INVITE sip:\+[0-9]*4@" search_in="msg" assign_to="noanswer"/>
      <ereg regexp="INVITE sip:\+[0-9]*5@" search_in="msg" assign_to="rfc4733"/>
      <ereg regexp="INVITE sip:\+[0-9]*6@" search_in="msg" assign_to="info"/>
      <ereg regexp="INVITE sip:\+[0-9]*7@" search_in="msg" assign_to="hangup"/>
      <ereg regexp="INVITE sip:\+[0-9]*8@" search_in="msg" assign_to="unavailable"/>
"#
        ),
        ringing(),
        response("200 OK", "", Some("0 101")),
        info_key(2, '9'),
        uas_request("BYE", 3, None, "").replace(
            r#"<recv response="200"/>"#,
            r#"<recv response="200" next="end"/>"#
        ),
        response("486 Busy Here", "", None),
        response("503 Service Unavailable", "", None),
        ringing(),
    )
}

/// A trunk that challenges every INVITE (401) and refuses the credentialed one (403): a
/// wrong password.
fn wrong_password() -> String {
    format!(
        r#"{HEAD}{}{ACK}  <recv request="INVITE">
    <action>
      <ereg regexp="Digest" search_in="hdr" header="Authorization:" check_it="true" assign_to="creds"/>
      <log message="credentials: [$creds]"/>
    </action>
  </recv>
{}{ACK}{TAIL}"#,
        response(
            "401 Unauthorized",
            "WWW-Authenticate: Digest realm=\"crieur.test\", nonce=\"[pid]n[call_number]\", algorithm=MD5, qop=\"auth\"\n",
            None
        ),
        response("403 Forbidden", "", None).replace("SIPpTag01", "SIPpTag02")
    )
}

/// sipp playing [`mixed`] for `calls` calls on the campaign's `port`, from `dir`.
fn start_mixed(dir: &Path, port: u16, calls: usize) -> Sipp {
    start_sipp(dir, port, calls, "mixed", &mixed())
}

/// sipp playing `scenario` (saved as `<name>-<port>.xml` in `dir`) for `calls` calls on the
/// campaign's `port`; killed on drop.
fn start_sipp(dir: &Path, port: u16, calls: usize, name: &str, scenario: &str) -> Sipp {
    Sipp::scenario(scenario)
        .in_dir(dir, name)
        .port(port)
        .calls(calls)
        .timeout_secs(120)
        .start()
}

fn crieur(dir: &Path, args: &[&str]) -> Output {
    // Bounded: a run that does not end is a failure, not a hung test.
    let mut child = Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            panic!(
                "crieur {args:?} did not end in 150 s:\n{}{}",
                text(&o.stdout),
                text(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn campaign(name: &str, port: u16, extra: &str) -> String {
    CampaignToml::new(name, port)
        .ring_timeout_secs(15)
        .extra(extra)
        .pacing(20, 60)
        .build()
}

fn number(i: usize) -> String {
    format!("+336120000{i:02}")
}

/// Outcome name → count, from `crieur audit export --csv`.
fn outcomes(dir: &Path) -> std::collections::BTreeMap<String, usize> {
    let o = crieur(dir, &["audit", "export", "--csv", "store.audit"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut r = csv::Reader::from_reader(o.stdout.as_slice());
    let headers = r.headers().cloned().unwrap_or_default();
    let col = headers
        .iter()
        .position(|h| h == "outcome")
        .unwrap_or(usize::MAX);
    let mut m = std::collections::BTreeMap::new();
    for rec in r.records().map_while(Result::ok) {
        *m.entry(rec.get(col).unwrap_or("").to_owned()).or_default() += 1;
    }
    m
}

fn called_numbers(dir: &Path, campaign: &str) -> std::collections::BTreeSet<String> {
    let o = crieur(dir, &["audit", "export", "--csv", "store.audit"]);
    let mut r = csv::Reader::from_reader(o.stdout.as_slice());
    let h = r.headers().cloned().unwrap_or_default();
    let (c, n) = (
        h.iter().position(|x| x == "campaign").unwrap_or(usize::MAX),
        h.iter().position(|x| x == "number").unwrap_or(usize::MAX),
    );
    r.records()
        .map_while(Result::ok)
        .filter(|rec| rec.get(c) == Some(campaign))
        .filter_map(|rec| rec.get(n).map(str::to_owned))
        .collect()
}

#[test]
fn a_fifty_call_campaign_against_sipp_with_mixed_outcomes_then_a_second_run() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    tone_wav(&d.join("msg.wav"), 2.0);
    tone_wav(&d.join("confirm.wav"), 0.5);
    let mut csv =
        String::from("id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n");
    for i in 0..50 {
        csv.push_str(&format!(
            "c{i:02},{},,daily 00:00-24:00,2020-01-01T00:00:00Z,,,test,p{i}\n",
            number(i)
        ));
    }
    std::fs::write(d.join("contacts.csv"), csv).unwrap_or_else(|e| panic!("{e}"));
    // Run 1: busy numbers are retried once after 1 s; nothing else is retried.
    let port = free_port();
    let retry = "[retry]\nmax_attempts = 2\n[retry.busy]\ndelay_secs = 1\nmax_retries = 1\n\
                 [retry.no-answer]\ndelay_secs = 1\nmax_retries = 0\n\
                 [retry.failed]\ndelay_secs = 1\nmax_retries = 0\n";
    // The 503s are trunk faults: the first of each contact is retried after 1 s and not
    // counted; the second, after the trunk served other calls meanwhile, counts.
    let breaker = "[trunk.breaker]\nopen_secs = 1\n";
    std::fs::write(d.join("c1.toml"), campaign("first", port, retry) + breaker)
        .unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(
        d,
        &[
            "import",
            "--campaign",
            "c1.toml",
            "--store",
            "store",
            "--contacts",
            "contacts.csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // 50 calls + 5 busy retries + 5 retries after a trunk fault.
    let sipp = start_mixed(d, port, 60);
    let o = crieur(d, &["run", "--campaign", "c1.toml", "--store", "store"]);
    drop(sipp);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains("stopped   every contact is done"), "{out}");
    let got = outcomes(d);
    let want: std::collections::BTreeMap<String, usize> = [
        ("answered-completed", 20),
        ("busy", 10),
        ("no-answer", 5),
        ("answered-opted-out", 10),
        ("hung-up-mid-message", 5),
        ("trunk-fault:trunk-failure", 5),
        ("trunk-failure", 5),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(got, want, "{out}");
    // The opt-outs are in the store, by both methods.
    for i in [5, 16, 25, 46] {
        let o = crieur(d, &["optout", "--store", "store", "check", &number(i)]);
        assert_eq!(text(&o.stdout).trim(), "opted out", "{}", number(i));
    }
    let o = crieur(d, &["optout", "--store", "store", "check", &number(0)]);
    assert_eq!(text(&o.stdout).trim(), "not opted out");
    let o = crieur(d, &["audit", "verify", "store.audit"]);
    assert!(o.status.success(), "{}", text(&o.stdout));
    let o = crieur(d, &["audit", "replay", "store.audit"]);
    assert!(
        o.status.success() && text(&o.stdout).contains("; 0 violations"),
        "{}",
        text(&o.stdout)
    );

    // The same campaign run again (a restart): everyone is done — answered, opted out,
    // busy twice (the attempt cap), or out of retries — so nobody is dialled again.
    let o = crieur(
        d,
        &[
            "run",
            "--campaign",
            "c1.toml",
            "--store",
            "store",
            "--max-idle-secs",
            "5",
        ],
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains("summary   0 calls placed"), "{out}");
    assert_eq!(outcomes(d).values().sum::<usize>(), 60);

    // Run 2, another campaign on the same store, allowing 2 calls per number per 30 days:
    // nobody who opted out, nobody who already had 2 calls (the busy ones).
    let port = free_port();
    std::fs::write(
        d.join("c2.toml"),
        campaign(
            "second",
            port,
            "[retry]\nmax_attempts = 1\n[caps]\nrolling_max = 2\nrolling_days = 30\n",
        ) + breaker,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(
        d,
        &[
            "import",
            "--campaign",
            "c2.toml",
            "--store",
            "store",
            "--contacts",
            "contacts.csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // 35 numbers, the 5 refused by a 503 twice.
    let sipp = start_mixed(d, port, 40);
    let o = crieur(
        d,
        &[
            "run",
            "--campaign",
            "c2.toml",
            "--store",
            "store",
            "--max-idle-secs",
            "60",
        ],
    );
    drop(sipp);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    // The capped numbers come back in 30 days: the run says so and stops, as asked.
    assert!(out.contains("beyond --max-idle-secs 60"), "{out}");
    let second = called_numbers(d, "second");
    let expected: std::collections::BTreeSet<String> = (0..50)
        .filter(|i| ![3, 5, 6].contains(&(i % 10)))
        .map(number)
        .collect();
    assert_eq!(second, expected, "{out}");
    let o = crieur(d, &["audit", "replay", "store.audit"]);
    assert!(
        o.status.success() && text(&o.stdout).contains("; 0 violations"),
        "{}",
        text(&o.stdout)
    );
    let log = std::fs::read_to_string(d.join("store.audit/audit-000001.jsonl")).unwrap_or_default();
    assert!(
        log.contains(r#"{"code":"opted-out"}"#) && log.contains(r#""code":"rolling-cap""#),
        "the refusals are recorded with their reasons"
    );
}

/// A campaign whose consent window closes mid-run stops dialling at the right instant — the
/// last start that leaves room for the whole call (ring timeout + message) — within 1 s, and
/// says why.
#[test]
fn dialling_stops_when_the_window_closes_and_says_why() {
    use chrono::{Duration as CD, Timelike, Utc};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    tone_wav(&d.join("msg.wav"), 1.0);
    tone_wav(&d.join("confirm.wav"), 0.5);
    // The window ends at the first minute boundary at least 30 s from now.
    let now = Utc::now();
    let end = (now + CD::seconds(90))
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or_else(|| panic!("time"));
    let end = if end - now > CD::seconds(90) {
        end - CD::minutes(1)
    } else {
        end
    };
    let start = end - CD::minutes(30);
    let window = format!(
        "daily {:02}:{:02}-{:02}:{:02}",
        start.hour(),
        start.minute(),
        end.hour(),
        end.minute()
    );
    let mut csv =
        String::from("id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n");
    for i in 0..300 {
        csv.push_str(&format!(
            "w{i:03},+3361300{i:03}0,Etc/UTC,{window},2020-01-01T00:00:00Z,,,test,p{i}\n"
        ));
    }
    std::fs::write(d.join("contacts.csv"), csv).unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let c = campaign("window", port, "").replace("calls_per_second = 20", "calls_per_second = 3");
    std::fs::write(d.join("c.toml"), c).unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(
        d,
        &[
            "import",
            "--campaign",
            "c.toml",
            "--store",
            "store",
            "--contacts",
            "contacts.csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    // Numbers ending in 0: every call is answered and hears the whole message.
    let sipp = start_mixed(d, port, 1000);
    let o = crieur(
        d,
        &[
            "run",
            "--campaign",
            "c.toml",
            "--store",
            "store",
            "--max-idle-secs",
            "30",
        ],
    );
    drop(sipp);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    let exp = crieur(d, &["audit", "export", "--csv", "store.audit"]);
    let mut r = csv::Reader::from_reader(exp.stdout.as_slice());
    let h = r.headers().cloned().unwrap_or_default();
    let col = h
        .iter()
        .position(|x| x == "start_utc")
        .unwrap_or(usize::MAX);
    let invites: Vec<chrono::DateTime<Utc>> = r
        .records()
        .map_while(Result::ok)
        .filter_map(|rec| rec.get(col).and_then(|s| s.parse().ok()))
        .collect();
    // D = 15 s ring timeout + 1 s message: the last start that fits is end − 16 s.
    let last_fit = end - CD::seconds(16);
    let last = invites
        .iter()
        .max()
        .copied()
        .unwrap_or_else(|| panic!("no call: {out}"));
    assert!(
        last <= last_fit,
        "an INVITE at {last}, after the last start that fits ({last_fit})"
    );
    assert!(
        last_fit - last <= CD::seconds(1),
        "dialling stopped at {last}, more than 1 s before {last_fit}: {out}"
    );
    assert!(
        invites.len() < 300,
        "everyone was dialled; the window did not cut the run"
    );
    // It says why it stopped dialling, and when it would resume.
    assert!(
        out.contains("no contact is dialable now; the next becomes due at"),
        "{out}"
    );
    assert!(out.contains("beyond --max-idle-secs 30"), "{out}");
    let o = crieur(d, &["audit", "replay", "store.audit"]);
    assert!(o.status.success(), "{}", text(&o.stdout));
    let log = std::fs::read_to_string(d.join("store.audit/audit-000001.jsonl")).unwrap_or_default();
    assert!(
        log.contains(r#""code":"call-would-not-fit""#)
            || log.contains(r#""code":"outside-consent-window""#),
        "the skips say why"
    );
}

/// SIGINT stops placing calls and lets calls in progress finish; a second SIGINT hangs them
/// up at once (BYE). Either way the audit log is flushed, checkpointed and intact, exit 0.
#[test]
fn sigint_drains_then_a_second_sigint_hangs_up_at_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    tone_wav(&d.join("msg.wav"), 20.0);
    tone_wav(&d.join("confirm.wav"), 0.5);
    let mut csv =
        String::from("id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n");
    for i in 0..100 {
        csv.push_str(&format!(
            "s{i:03},+3361400{i:03}0,,daily 00:00-24:00,2020-01-01T00:00:00Z,,,test,p{i}\n"
        ));
    }
    std::fs::write(d.join("contacts.csv"), csv).unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let c = campaign("sigint", port, "").replace("calls_per_second = 20", "calls_per_second = 4");
    std::fs::write(d.join("c.toml"), c).unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(
        d,
        &[
            "import",
            "--campaign",
            "c.toml",
            "--store",
            "store",
            "--contacts",
            "contacts.csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    std::fs::write(d.join("key"), "42".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
    let sipp = start_mixed(d, port, 1000);
    let child = Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args([
            "run",
            "--audit-key",
            "key",
            "--campaign",
            "c.toml",
            "--store",
            "store",
        ])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = child.id().to_string();
    std::thread::sleep(Duration::from_secs(3));
    let int = || {
        let ok = Command::new("kill").args(["-INT", &pid]).status();
        assert!(ok.is_ok_and(|s| s.success()));
    };
    int();
    std::thread::sleep(Duration::from_millis(1500));
    int();
    let signalled = std::time::Instant::now();
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let took = signalled.elapsed();
    drop(sipp);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    // The 20 s messages were cut: the second signal hung up at once.
    assert!(
        took < Duration::from_secs(10),
        "took {took:?} after the second SIGINT: {out}"
    );
    assert!(out.contains("stopping  SIGINT: no new calls"), "{out}");
    assert!(out.contains("stopped   SIGINT (twice)"), "{out}");
    assert!(out.contains("local-shutdown"), "{out}");
    // No call was placed after the first signal (about 3 s × 4 calls/s).
    let placed: usize = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary   ")
                .and_then(|r| r.split(' ').next()?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no summary: {out}"));
    assert!((1..=16).contains(&placed), "{placed} calls placed: {out}");
    let o = crieur(d, &["audit", "verify", "store.audit"]);
    assert!(o.status.success(), "{}", text(&o.stdout));
    let log = std::fs::read_to_string(d.join("store.audit/audit-000001.jsonl")).unwrap_or_default();
    let last: Vec<&str> = log.lines().rev().take(2).collect();
    assert!(
        last[0].contains("\"type\":\"checkpoint\"") && last[1].contains("\"type\":\"run-stop\""),
        "{last:?}"
    );
    let o = crieur(d, &["audit", "replay", "store.audit"]);
    assert!(o.status.success(), "{}", text(&o.stdout));
}

/// `crieur demo` needs nothing else, ends with an intact, violation-free audit log, and says
/// where everything is.
#[test]
fn the_demo_runs_on_its_simulated_network_and_its_log_verifies_and_replays() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let demo = dir.path().join("demo");
    let o = crieur(dir.path(), &["demo", "--dir", &demo.display().to_string()]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    for want in [
        "stopped   every contact is done",
        "answered-completed",
        "answered-opted-out",
        "busy",
        "machine-message-left",
        "no-answer",
        "verify    OK",
        "0 violations",
        "audit log ",
        "keys      ",
    ] {
        assert!(out.contains(want), "missing {want:?} in {out}");
    }
    // The demo's signing key as `audit keygen` makes it: secret 0600, public key beside it,
    // and the log verifies against that public key.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(demo.join("audit.key")).map_or(0, |m| m.permissions().mode());
    assert_eq!(mode & 0o777, 0o600);
    let o = crieur(
        dir.path(),
        &[
            "audit",
            "verify",
            "--store",
            &demo.join("store").display().to_string(),
            "--pubkey",
            &demo.join("audit.pub").display().to_string(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

/// Contacts `t0`, `t1`, `t2` (numbers ending 0, 1, 2: the mixed scenario answers them) and a
/// campaign that places one call at a time and allows one attempt per contact, with `extra`
/// in its `[trunk]` (credentials, `[trunk.breaker]` after it).
fn trunk_fault_setup(d: &Path, port: u16, trunk_extra: &str) {
    tone_wav(&d.join("msg.wav"), 1.0);
    tone_wav(&d.join("confirm.wav"), 0.5);
    let mut csv =
        String::from("id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n");
    for i in 0..3 {
        csv.push_str(&format!(
            "t{i},{},,daily 00:00-24:00,2020-01-01T00:00:00Z,,,test,p{i}\n",
            number(i)
        ));
    }
    std::fs::write(d.join("contacts.csv"), csv).unwrap_or_else(|e| panic!("{e}"));
    let c = campaign("trunk", port, "[retry]\nmax_attempts = 1\n")
        .replace("max_concurrent_calls = 60", "max_concurrent_calls = 1");
    std::fs::write(d.join("c.toml"), format!("{c}{trunk_extra}")).unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(
        d,
        &[
            "import",
            "--campaign",
            "c.toml",
            "--store",
            "store",
            "--contacts",
            "contacts.csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// The audit log's records of one type, as JSON.
fn records(d: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(d.join("store.audit/audit-000001.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == kind)
        .collect()
}

/// A wrong trunk password: the trunk challenges (401), crieur answers with its credentials,
/// the trunk refuses them (403). Dialling stops at once with the reason on stderr and in the
/// audit log, exit code 6, and no contact's attempt is used: the same campaign, allowing one
/// attempt per contact, then calls all three once the trunk accepts the calls.
#[test]
fn a_wrong_trunk_password_stops_dialling_and_uses_up_no_attempt() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let port = free_port();
    std::fs::write(d.join("password"), "wrong\n").unwrap_or_else(|e| panic!("{e}"));
    trunk_fault_setup(
        d,
        port,
        "username = \"crieur\"\npassword_file = \"password\"\n",
    );
    let sipp = start_sipp(d, port, 3, "wrong-password", &wrong_password());
    let o = crieur(d, &["run", "--campaign", "c.toml", "--store", "store"]);
    drop(sipp);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(6), "{out}{err}");
    assert!(
        err.contains("breaker   STOPPED: trunk-auth-failed") && err.contains("SIP 403"),
        "{err}"
    );
    assert!(err.contains("dialling stopped"), "{err}");
    assert!(!out.contains("every contact is done"), "{out}");
    // One call left (one at a time), then nothing: dialling stopped at once.
    assert_eq!(records(d, "invite-sent").len(), 1, "{out}{err}");
    let responses: Vec<u64> = records(d, "sip-response")
        .iter()
        .filter_map(|r| r["status"].as_u64())
        .collect();
    assert_eq!(responses, [403]);
    let outcomes: Vec<String> = records(d, "outcome")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(outcomes, ["trunk-fault:auth-failed"]);
    let b = records(d, "trunk-breaker");
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0]["state"], "stopped");
    assert_eq!(b[0]["cause"]["code"], "trunk-auth-failed");
    assert_eq!(b[0]["cause"]["sip_status"], 403);
    let o = crieur(d, &["audit", "verify", "store.audit"]);
    assert!(o.status.success(), "{}", text(&o.stdout));
    let o = crieur(d, &["audit", "replay", "store.audit"]);
    assert!(
        o.status.success() && text(&o.stdout).contains("; 0 violations"),
        "{}",
        text(&o.stdout)
    );
    // The operator fixes the trunk: the refused attempt used up nothing, so with one attempt
    // allowed per contact all three are called and answered.
    let sipp = start_mixed(d, port, 3);
    let o = crieur(d, &["run", "--campaign", "c.toml", "--store", "store"]);
    drop(sipp);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains("every contact is done"), "{out}");
    let got = outcomes_of(d);
    assert_eq!(got.get("answered-completed"), Some(&3), "{got:?}");
    // Each decision of the second run saw the refused attempt in its history and still dialled
    // it as attempt 1.
    let dials: Vec<serde_json::Value> = records(d, "decision")
        .into_iter()
        .filter(|r| r["verdict"] == "dial")
        .collect();
    assert!(dials.iter().all(|r| r["attempt"] == 1), "{dials:?}");
}

/// Outcome name → count, from the `outcome` records (every attempt, not one row per call id).
fn outcomes_of(d: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in records(d, "outcome") {
        *m.entry(r["outcome"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    m
}

/// Five 503s in a row open the breaker; after `open_secs` it half-opens and lets one probe
/// call through; the trunk works again by then, so the probe closes it and the campaign ends
/// with every contact answered — the five refused attempts used up none of the one attempt
/// each contact is allowed.
#[test]
fn five_503s_open_the_breaker_then_one_probe_closes_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let port = free_port();
    trunk_fault_setup(
        d,
        port,
        "[trunk.breaker]\nconsecutive_faults = 5\nopen_secs = 3\n",
    );
    // The failing trunk takes exactly five calls, then the working one takes its place
    // (while the breaker is open: no INVITE meets a closed port).
    let failing = start_sipp(
        d,
        port,
        5,
        "unavailable",
        &rejecting("503 Service Unavailable"),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args(["run", "--campaign", "c.toml", "--store", "store"])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut failing = failing;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while failing.running() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the failing trunk never got its five calls");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let working = start_mixed(d, port, 3);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the run did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    drop(working);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("every contact is done"), "{out}");
    assert!(
        err.contains("breaker   OPEN: dialling paused until"),
        "{err}"
    );
    assert!(err.contains("after 5 trunk fault(s) in a row"), "{err}");
    assert!(err.contains("breaker   half-open: one probe call"), "{err}");
    assert!(err.contains("breaker   closed: dialling resumes"), "{err}");
    let b = records(d, "trunk-breaker");
    let states: Vec<(&str, &str)> = b
        .iter()
        .map(|r| {
            (
                r["state"].as_str().unwrap_or_default(),
                r["cause"]["code"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("open", "trunk-server-error"),
            ("half-open", "open-period-elapsed"),
            ("closed", "call-served")
        ],
        "{b:?}"
    );
    assert_eq!(b[0]["consecutive_faults"], 5);
    assert_eq!(b[0]["cause"]["sip_status"], 503);
    // Open for 3 s: the probe's INVITE left no sooner.
    let ts = |v: &serde_json::Value, k: &str| -> chrono::DateTime<chrono::Utc> {
        v[k].as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {v}"))
    };
    let opened = ts(&b[0], "ts");
    let until = ts(&b[0], "until");
    assert_eq!((until - opened).num_seconds(), 3);
    let invites: Vec<chrono::DateTime<chrono::Utc>> = records(d, "invite-sent")
        .iter()
        .map(|r| ts(r, "sent_at"))
        .collect();
    assert_eq!(invites.len(), 8, "5 refused + the probe + 2: {out}{err}");
    assert!(
        invites[5] >= until,
        "the probe left at {} before {until}",
        invites[5]
    );
    assert!(
        invites[4] < opened,
        "no call left while the breaker was open"
    );
    let got = outcomes_of(d);
    let want: std::collections::BTreeMap<String, usize> =
        [("trunk-fault:trunk-failure", 5), ("answered-completed", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    assert_eq!(got, want);
    let o = crieur(d, &["audit", "replay", "store.audit"]);
    assert!(
        o.status.success() && text(&o.stdout).contains("; 0 violations"),
        "{}",
        text(&o.stdout)
    );
}
