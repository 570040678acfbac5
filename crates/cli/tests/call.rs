//! `crieur call` end to end: the policy decides first, then a real call to a sipp UAS.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crieur_test_support::scenario::*;
use crieur_test_support::{free_port, text, tone_wav, CampaignToml, Scratch, Sipp};
use sha2::Digest as _;

/// A UAS that answers (PCMU, telephone-event 101) and waits for our BYE.
fn uas() -> String {
    answer_scenario("0 101", BYE_200)
}

struct Setup {
    dir: Scratch,
}

impl Setup {
    fn new(sip_port: u16, windows: &str, expires: &str) -> Setup {
        Self::with_extra(sip_port, windows, expires, "")
    }

    fn with_extra(sip_port: u16, windows: &str, expires: &str, extra_toml: &str) -> Setup {
        let dir = Scratch::new();
        dir.recordings(1.0);
        dir.write(
            "c.toml",
            CampaignToml::new("t", sip_port).extra(extra_toml).build(),
        );
        dir.write(
            "k.csv",
            format!(
                "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\nc1,+33612345678,,{windows},2020-01-01T00:00:00Z,{expires},,test,p\n"
            ),
        );
        let s = Setup { dir };
        s.import();
        s
    }

    /// `crieur call` needs an existing store: `import` creates it (as ops do).
    fn import(&self) {
        let p = |n: &str| self.dir.path().join(n).display().to_string();
        let o = Command::new(env!("CARGO_BIN_EXE_crieur"))
            .args([
                "import",
                "--campaign",
                &p("c.toml"),
                "--store",
                &p("store"),
                "--contacts",
                &p("k.csv"),
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(o.status.success(), "import: {}", text(&o.stderr));
    }

    fn call(&self) -> Output {
        let p = |n: &str| self.dir.path().join(n).display().to_string();
        Command::new(env!("CARGO_BIN_EXE_crieur"))
            .args([
                "call",
                "--campaign",
                &p("c.toml"),
                "--contact",
                "c1",
                "--store",
                &p("store"),
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[test]
fn a_skip_is_refused_with_its_reasons_and_nothing_is_sent() {
    // Nothing listens on this port: a call attempt would time out, a refusal is immediate.
    let s = Setup::new(free_port(), "daily 00:00-24:00", "2021-01-01T00:00:00Z");
    let o = s.call();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let out = text(&o.stdout);
    assert!(out.contains("refused   the policy says SKIP"), "{out}");
    assert!(out.contains("ConsentExpired"), "{out}");
    assert!(!out.contains("INVITE"), "{out}");
}

#[test]
fn an_opted_out_number_is_refused() {
    let s = Setup::new(free_port(), "daily 00:00-24:00", "");
    let store = s.dir.path().join("store").display().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args(["optout", "--store", &store, "add", "+33 6 12 34 56 78"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = s.call();
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o.stdout).contains("is on the opt-out list"),
        "{}",
        text(&o.stdout)
    );
}

/// A stored attempt that cannot be read back whole (here its key no longer agrees with its
/// record) must stop dialling the number: before, an undecodable instant became 1970 and the
/// attempt dropped out of the rolling cap.
#[test]
fn a_damaged_call_history_refuses_the_number_and_says_why() {
    use crieur_store::Store;
    // Nothing listens on this port: a call attempt would time out, a refusal is immediate.
    let s = Setup::new(free_port(), "daily 00:00-24:00", "");
    let store = s.dir.path().join("store");
    {
        let st = crieur_store::SledStore::open(&store, false).unwrap_or_else(|e| panic!("{e}"));
        let id = crieur_scheduler::ContactId::new("c1").unwrap_or_else(|e| panic!("{e}"));
        let num: crieur_scheduler::E164 = "+33612345678".parse().unwrap_or_else(|e| panic!("{e}"));
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        st.lease("t", &id, &num, at, "c1-1")
            .unwrap_or_else(|e| panic!("{e}"));
        st.finish_attempt(
            &num,
            &crieur_store::AttemptRecord {
                campaign: "t".into(),
                contact: id.to_string(),
                started: at,
                ended: at + chrono::Duration::seconds(20),
                outcome: "busy".parse().unwrap_or_else(|e| panic!("{e}")),
                call: "c1-1".into(),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    // Damage the attempt's key (its start instant), the way a bad sector or a bug would.
    let mut tries = 0;
    let db = loop {
        // The segment size crieur creates its stores with (sled refuses another).
        match sled::Config::new()
            .path(&store)
            .segment_size(8 << 20)
            .open()
        {
            Ok(db) => break db,
            // sled's thread of the store just closed may hold the lock a moment.
            Err(_) if tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{e}"),
        }
    };
    // The store's attempts tree (format 3).
    let attempts = db.open_tree("attempts-3").unwrap_or_else(|e| panic!("{e}"));
    let (k, v) = attempts
        .iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no attempt stored"));
    let mut bad = k.to_vec();
    bad[39] ^= 0x40;
    attempts.remove(&k).unwrap_or_else(|e| panic!("{e}"));
    attempts.insert(bad, v).unwrap_or_else(|e| panic!("{e}"));
    db.flush().unwrap_or_else(|e| panic!("{e}"));
    drop((attempts, db));
    std::thread::sleep(Duration::from_millis(200));
    let o = s.call();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}{}", text(&o.stderr));
    assert!(out.contains("call history is damaged"), "{out}");
    assert!(!out.contains("INVITE"), "{out}");
    let log = std::fs::read_to_string(s.dir.path().join("store.audit/audit-000001.jsonl"))
        .unwrap_or_default();
    assert!(
        log.contains(
            r#""reasons":[{"code":"history-unreadable","why":"damaged record for attempt "#
        ),
        "{log}"
    );
}

#[test]
fn a_dial_places_the_call_and_prints_its_timeline() {
    let port = free_port();
    let s = Setup::new(port, "daily 00:00-24:00", "");
    let mut sipp = Sipp::scenario(&uas())
        .port(port)
        .timeout_secs(30)
        .timeout_error()
        .start();
    let o = s.call();
    let sipp_ok = sipp.succeeded();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("policy    DIAL under consent #0"), "{out}");
    assert!(
        out.contains("180 Ringing") && out.contains("200 OK"),
        "{out}"
    );
    assert!(out.contains("codec     PCMU"), "{out}");
    assert!(out.contains("answer → first audio"), "{out}");
    assert!(out.contains("outcome   answered-completed"), "{out}");
    assert!(out.contains("rtcp      "), "{out}");
    assert!(sipp_ok, "sipp did not count the call successful");
}

fn crieur(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A log without any signed checkpoint (here: written without a signing key) proves nothing:
/// with the operator's key pinned, `audit verify` fails it; without, it says what is unproven.
#[test]
fn audit_verify_with_a_pinned_key_fails_a_log_without_checkpoints() {
    let s = Setup::new(free_port(), "daily 00:00-24:00", "");
    let p = |n: &str| s.dir.path().join(n).display().to_string();
    let o = crieur(&["audit", "keygen", "--out", &p("audit.key")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    std::fs::write(p("audit.pub"), text(&o.stdout)).unwrap_or_else(|e| panic!("{e}"));
    let audit = p("store.audit");
    let o = crieur(&["audit", "verify", &audit]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("OK        the chain is intact"), "{out}");
    assert!(
        out.contains("UNPROVEN  3 records (seq 0-2): no checkpoint at all"),
        "{out}"
    );
    let o = crieur(&["audit", "verify", &audit, "--pubkey", &p("audit.pub")]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("BROKEN") && out.contains("no checkpoint signed by the given key"),
        "{out}"
    );
}

#[test]
fn import_is_all_or_nothing_or_skips_invalid_rows_into_a_rejects_file() {
    let s = Setup::new(free_port(), "daily 00:00-24:00", "");
    let p = |n: &str| s.dir.path().join(n).display().to_string();
    let rows = "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n\
                a,+33612345678,,mon 10:00-11:00,2027-01-01T00:00:00Z,,,form,p1\n\
                b,+3361234,,mon 10:00-11:00,2027-01-01T00:00:00Z,,,form,p2\n\
                c,+33612345679,,mon 10:00-11:00,2027-01-01T00:00:00Z,,,form,p3\n";
    std::fs::write(p("in.csv"), rows).unwrap_or_else(|e| panic!("{e}"));
    // All-or-nothing: one bad row, nothing imported, located error, exit 2.
    let o = crieur(&[
        "import",
        "--campaign",
        &p("c.toml"),
        "--store",
        &p("st"),
        "--contacts",
        &p("in.csv"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("in.csv:3:2: field `phone`"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        !s.dir.path().join("st").exists(),
        "a failed import must not create a store"
    );
    // --skip-invalid: two imported, one rejected with its reason.
    let o = crieur(&[
        "import",
        "--campaign",
        &p("c.toml"),
        "--store",
        &p("st"),
        "--skip-invalid",
        "--rejects",
        &p("rej.csv"),
        "--contacts",
        &p("in.csv"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("2 new contacts"),
        "{}",
        text(&o.stdout)
    );
    let rej = std::fs::read_to_string(p("rej.csv")).unwrap_or_default();
    assert!(rej.starts_with("id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof,line,reject_reason\n"), "{rej}");
    assert!(
        rej.contains("b,+3361234,")
            && rej.contains(",3,")
            && rej.contains("expected an E.164 number"),
        "{rej}"
    );
    // Re-import: updates, keeps history.
    let again = "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\na,+33612345678,,sat 10:00-11:00,2027-02-01T00:00:00Z,,,desk,p9\n";
    std::fs::write(p("again.csv"), again).unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(&[
        "import",
        "--campaign",
        &p("c.toml"),
        "--store",
        &p("st"),
        "--contacts",
        &p("again.csv"),
    ]);
    assert!(
        text(&o.stdout).contains("0 new contacts, 1 updated, 1 consent records added"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn optout_list_import_and_check() {
    let s = Setup::new(free_port(), "daily 00:00-24:00", "");
    let p = |n: &str| s.dir.path().join(n).display().to_string();
    std::fs::write(
        p("bloctel.txt"),
        "# opposition list\n+33612345678\n\n+33612345679\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(&["optout", "--store", &p("st"), "import", &p("bloctel.txt")]);
    assert!(
        text(&o.stdout).contains("2 numbers, 2 new opt-outs"),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let o = crieur(&["optout", "--store", &p("st"), "check", "+33612345679"]);
    assert_eq!(text(&o.stdout).trim(), "opted out");
    let o = crieur(&["optout", "--store", &p("st"), "list"]);
    let out = text(&o.stdout);
    assert!(
        out.starts_with("2 opt-outs")
            && out.contains("import bloctel.txt")
            && !out.contains("612345678"),
        "{out}"
    );
    std::fs::write(p("bad.txt"), "+33612345678\nnot-a-number\n").unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(&["optout", "--store", &p("st"), "import", &p("bad.txt")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("bad.txt:2:1: bad value `not-a-number`"),
        "{}",
        text(&o.stderr)
    );
}

/// Answers, then the callee presses 9 by SIP INFO and waits for our BYE.
/// A UAS that answers (PCMA), sends the opt-out key 9 by SIP INFO 800 ms later — inside the
/// message, well after its 300 ms lead-in (a key at 300 ms raced the message's first packet,
/// and the call then had no answer → first audio to report) — and waits for our BYE.
fn uas_opt_out() -> String {
    format!(
        "{HEAD_DIALOG}{}{ACK}  <pause milliseconds=\"800\"/>\n{}{BYE_200}{TAIL}",
        response("200 OK", "", Some("8")),
        info_key(2, '9')
    )
}

#[test]
fn an_opt_out_during_a_call_is_in_the_store_and_blocks_the_next_call() {
    let port = free_port();
    let s = Setup::new(port, "daily 00:00-24:00", "");
    let mut sipp = Sipp::scenario(&uas_opt_out())
        .port(port)
        .timeout_secs(30)
        .timeout_error()
        .start();
    let o = s.call();
    let sipp_ok = sipp.succeeded();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("keys      9 by sip-info"), "{out}");
    assert!(out.contains("opt-out   recorded"), "{out}");
    assert!(out.contains("outcome   answered-opted-out"), "{out}");
    assert!(sipp_ok, "sipp did not count the call successful");
    let store = s.dir.path().join("store").display().to_string();
    let o = crieur(&["optout", "--store", &store, "check", "+33612345678"]);
    assert_eq!(text(&o.stdout).trim(), "opted out");
    // Nothing listens any more: the next call must be refused before any INVITE.
    let o = s.call();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stdout));
    // The audit log holds both calls' decisions and the first call's events, intact.
    let audit = format!("{store}.audit");
    let o = crieur(&["audit", "verify", &audit]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let o = crieur(&["audit", "replay", &audit]);
    assert!(
        text(&o.stdout).contains("; 0 violations"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(o.status.code(), Some(0));
    let log = std::fs::read_to_string(format!("{audit}/audit-000001.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"));
    let pos = |t: &str| {
        log.find(&format!("\"type\":\"{t}\""))
            .unwrap_or_else(|| panic!("no {t} record in {log}"))
    };
    assert!(pos("decision") < pos("invite-sent"));
    assert!(pos("invite-sent") < pos("opt-out-recorded"));
    assert!(pos("opt-out-recorded") < pos("hangup"));
    // The call's RTCP (at least the closing report with BYE; sipp sends no reports).
    assert!(pos("rtcp") < pos("hangup"));
    assert!(log.contains("\"reports_received\":0"), "{log}");
    assert!(log.contains("\"method\":\"sip-info\""), "{log}");
    // The second call was refused: recorded as a skip because of the opt-out list.
    assert!(log.contains(r#"{"code":"opted-out"}"#), "{log}");
    let o = crieur(&["audit", "export", "--csv", &audit]);
    let csv = text(&o.stdout);
    assert!(
        csv.lines().count() == 2 && csv.contains("answered-opted-out"),
        "{csv}"
    );
    // The export's row: who, when (local and UTC), how long, what was pressed, when the
    // opt-out was durable, under which consent and decision.
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let head = r.headers().cloned().unwrap_or_default();
    assert_eq!(
        head.iter().collect::<Vec<_>>(),
        crieur_audit::export::COLUMNS
    );
    let row = r
        .records()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("{csv}"));
    let col = |name: &str| {
        head.iter()
            .position(|h| h == name)
            .and_then(|k| row.get(k))
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(col("number"), "+33612345678");
    assert_eq!(col("zone"), "Europe/Paris");
    assert_eq!(
        (col("consent_source"), col("consent_proof")),
        ("test".into(), "p".into())
    );
    assert_eq!(col("keys"), "9(sip-info)");
    assert!(col("start_utc").ends_with('Z'), "{csv}");
    assert!(
        col("start_local").ends_with("+01:00") || col("start_local").ends_with("+02:00"),
        "{csv}"
    );
    for n in [
        "ring_ms",
        "talk_ms",
        "decision_seq",
        "optout_durable_ms",
        "answer_to_audio_ms",
    ] {
        assert!(col(n).parse::<u64>().is_ok(), "{n}: {csv}");
    }
    assert!(
        !col("answered_at").is_empty() && !col("optout_durable_at").is_empty(),
        "{csv}"
    );
    // The run header names the campaign file by its SHA-256.
    let toml = std::fs::read(s.dir.path().join("c.toml")).unwrap_or_else(|e| panic!("{e}"));
    let sha = hex::encode(sha2::Sha256::digest(&toml));
    assert!(
        log.contains(&format!("\"campaign_sha256\":\"{sha}\"")),
        "{log}"
    );
    // The report shows the call, its opt-out timing and the campaign's hash.
    let page = s.dir.path().join("report.html");
    let o = crieur(&[
        "audit",
        "report",
        &audit,
        "--html",
        &page.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let html = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(
        html.contains(&sha) && html.contains("answered-opted-out"),
        "{html}"
    );
    assert!(html.contains("id=\"optout-to-durable-summary\""), "{html}");
    // The same rows in every format.
    let o = crieur(&["audit", "export", &audit, "--format", "jsonl"]);
    let row: serde_json::Value = serde_json::from_str(text(&o.stdout).trim()).unwrap_or_default();
    assert!(row.to_string().contains("answered-opted-out"), "{row}");
    let o = crieur(&["audit", "export", &audit, "--format", "table"]);
    let table = text(&o.stdout);
    let (head, first) = (
        table.lines().next().unwrap_or_default(),
        table.lines().nth(1).unwrap_or_default(),
    );
    assert!(
        table.lines().count() == 2 && !head.contains(',') && first.contains("answered-opted-out"),
        "{table}"
    );
}

#[test]
fn the_not_interested_key_is_a_refusal_that_holds_the_number_across_campaigns() {
    let port = free_port();
    let s = Setup::with_extra(
        port,
        "daily 00:00-24:00",
        "",
        "not_interested_key = \"2\"\n[caps]\nquiet_days_after_refusal = 60\n",
    );
    // The not-interested key hangs up at once: our BYE may overtake our 200 to the INFO
    // (two independent transactions), so the scenario accepts either order.
    let scenario = uas_opt_out().replace("Signal=9", "Signal=2").replace(
        "<recv response=\"200\"/>\n  <recv request=\"BYE\"/>",
        "<recv response=\"200\" optional=\"true\"/>\n  <recv request=\"BYE\"/>",
    );
    assert!(scenario.contains("optional"), "scenario not adapted");
    let mut uas = sipp(&s, port, &scenario);
    let o = s.call();
    let sipp_ok = uas.succeeded();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("keys      2 by sip-info"), "{out}");
    assert!(out.contains("outcome   answered-not-interested"), "{out}");
    assert!(!out.contains("opt-out   recorded"), "{out}");
    assert!(sipp_ok, "sipp did not count the call successful");
    // Not an opt-out …
    let store = s.dir.path().join("store").display().to_string();
    let o = crieur(&["optout", "--store", &store, "check", "+33612345678"]);
    assert_eq!(text(&o.stdout).trim(), "not opted out");
    // … but another campaign of the same store must not call for 60 days.
    let other = std::fs::read_to_string(s.dir.path().join("c.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
        .replace("name = \"t\"", "name = \"other\"");
    std::fs::write(s.dir.path().join("c.toml"), other).unwrap_or_else(|e| panic!("{e}"));
    s.import();
    let o = s.call();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("(not-interested): no contact until"), "{out}");
}

#[test]
fn a_callee_hanging_up_mid_message_was_answered_exit_0() {
    let port = free_port();
    let s = Setup::new(port, "daily 00:00-24:00", "");
    // Answers, then hangs up 300 ms into the 1 s message.
    let opt_out = uas_opt_out();
    let cut = opt_out
        .find("  <send><![CDATA[\nINFO")
        .unwrap_or_else(|| panic!("scenario changed"));
    let scenario = format!(
        "{}{}{TAIL}",
        &opt_out[..cut],
        uas_request("BYE", 2, None, "")
    );
    let mut uas = sipp(&s, port, &scenario);
    let o = s.call();
    let sipp_ok = uas.succeeded();
    let out = text(&o.stdout);
    assert!(out.contains("outcome   hung-up-mid-message"), "{out}");
    // Answered: not exit 4 ("placed but not answered").
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(sipp_ok, "sipp did not count the call successful");
}

#[test]
fn trunk_local_address_and_p_asserted_identity_are_used() {
    let port = free_port();
    let local = free_port();
    let s = Setup::new(port, "daily 00:00-24:00", "");
    // [trunk] is the file's last section.
    let toml = s.dir.path().join("c.toml");
    let mut c = std::fs::read_to_string(&toml).unwrap_or_else(|e| panic!("{e}"));
    c.push_str(&format!(
        "local_address = \"127.0.0.1:{local}\"\np_asserted_identity = \"tel:+33100000000\"\n"
    ));
    std::fs::write(&toml, c).unwrap_or_else(|e| panic!("{e}"));
    // The INVITE comes from that port and says so in Via and Contact; PAI as configured.
    let scenario = uas().replacen(
        r#"<recv request="INVITE" crlf="true"/>"#,
        &format!(
            r#"<recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="^ *SIP/2\.0/UDP 127\.0\.0\.1:{local};" search_in="hdr" header="Via:" check_it="true" assign_to="via"/>
      <ereg regexp="@127\.0\.0\.1:{local}&gt;" search_in="hdr" header="Contact:" check_it="true" assign_to="contact"/>
      <ereg regexp="^ *&lt;tel:\+33100000000&gt; *$" search_in="hdr" header="P-Asserted-Identity:" check_it="true" assign_to="pai"/>
    </action>
  </recv>
  <Reference variables="via,contact,pai"/>"#
        ),
        1,
    );
    assert!(
        scenario.contains("P-Asserted-Identity"),
        "scenario not adapted"
    );
    let mut uas = sipp(&s, port, &scenario);
    let o = s.call();
    let sipp_ok = uas.succeeded();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(
        sipp_ok,
        "the INVITE did not come from local_address or lacked the PAI"
    );
}

/// Starts a sipp UAS with `scenario` on `port` (the campaign's trunk), for one call in at
/// most 30 s, the scenario and sipp's logs in the setup's directory.
fn sipp(s: &Setup, port: u16, scenario: &str) -> Sipp {
    Sipp::scenario(scenario)
        .in_dir(s.dir.path(), "uas")
        .port(port)
        .timeout_secs(30)
        .start()
}

/// Runs `crieur call` and SIGKILLs it once it prints `paused    at <point>` (or after
/// `after` if no pause point is given).
fn call_and_kill(s: &Setup, pause: Option<&str>, after: Duration) {
    use std::io::BufRead;
    let p = |n: &str| s.dir.path().join(n).display().to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crieur"));
    cmd.args([
        "call",
        "--campaign",
        &p("c.toml"),
        "--contact",
        "c1",
        "--store",
        &p("store"),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(point) = pause {
        cmd.env("CRIEUR_TEST_PAUSE_AT", point);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    match (pause, child.stdout.take()) {
        (Some(point), Some(out)) => {
            let want = format!("paused    at {point}");
            let seen = std::io::BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .any(|l| l == want);
            assert!(seen, "crieur never reached {point}");
        }
        _ => std::thread::sleep(after),
    }
    // Child::kill is SIGKILL on Unix: no destructor, no flush, no cleanup runs.
    child.kill().unwrap_or_else(|e| panic!("kill: {e}"));
    let _ = child.wait();
}

/// After the kill, the next `crieur call` recovers the leased call as an interrupted attempt;
/// with one attempt allowed, it must then refuse (never a second dial beyond policy).
fn assert_recovered_and_capped(s: &Setup) -> String {
    let o = s.call();
    let out = text(&o.stdout);
    assert!(
        out.contains("recovered an interrupted call to t/c1"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(3), "{out}");
    out
}

const ONE_ATTEMPT: &str = "[retry]\nmax_attempts = 1\n";

#[test]
fn sigkill_after_the_lease_before_the_invite() {
    let s = Setup::with_extra(free_port(), "daily 00:00-24:00", "", ONE_ATTEMPT);
    call_and_kill(&s, Some("after-lease"), Duration::ZERO);
    let out = assert_recovered_and_capped(&s);
    assert!(out.contains("attempt cap: 1 of 1"), "{out}");
}

#[test]
fn sigkill_mid_call() {
    let port = free_port();
    let s = Setup::with_extra(port, "daily 00:00-24:00", "", ONE_ATTEMPT);
    tone_wav(&s.dir.path().join("msg.wav"), 10.0); // long enough to be killed while playing
    let mut uas = sipp(&s, port, &uas());
    call_and_kill(&s, None, Duration::from_millis(2500));
    uas.kill();
    assert_recovered_and_capped(&s);
}

#[test]
fn sigkill_after_the_call_before_its_outcome_is_written() {
    let port = free_port();
    let s = Setup::with_extra(port, "daily 00:00-24:00", "", ONE_ATTEMPT);
    let mut uas = sipp(&s, port, &uas());
    call_and_kill(&s, Some("after-call"), Duration::ZERO);
    let _ = uas.succeeded();
    // The call completed, but its outcome was never written: it counts as interrupted.
    assert_recovered_and_capped(&s);
}

/// Killed after the lease but before the INVITE's record was durable: the INVITE cannot have
/// left, so the next command releases the lease and uses up no attempt — with one attempt
/// allowed, the call is placed.
#[test]
fn sigkill_after_the_lease_before_its_invite_record_uses_no_attempt() {
    let port = free_port();
    let s = Setup::with_extra(port, "daily 00:00-24:00", "", ONE_ATTEMPT);
    call_and_kill(&s, Some("after-lease-before-record"), Duration::ZERO);
    let mut uas = sipp(&s, port, &uas());
    let o = s.call();
    let _ = uas.wait();
    let out = text(&o.stdout);
    assert!(
        out.contains("recovered lease of t/c1 (c1-") && out.contains("its INVITE never left"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    let audit = s.dir.path().join("store.audit").display().to_string();
    let o = crieur(&["audit", "replay", &audit]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

/// Killed after the store recorded the call's end but before its outcome record: the next
/// command writes that outcome from the store, under the call's own id, and replay finds every
/// INVITE with its outcome.
#[test]
fn sigkill_after_the_store_recorded_the_outcome_before_the_log() {
    let port = free_port();
    let s = Setup::with_extra(port, "daily 00:00-24:00", "", ONE_ATTEMPT);
    let mut uas = sipp(&s, port, &uas());
    call_and_kill(&s, Some("after-attempt"), Duration::ZERO);
    let _ = uas.wait();
    let o = s.call();
    let out = text(&o.stdout);
    assert!(
        out.contains("recovered the outcome `answered-completed` of the call to t/c1 (call c1-"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(3), "{out}");
    let audit = s.dir.path().join("store.audit").display().to_string();
    let o = crieur(&["audit", "replay", &audit]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
}

#[test]
fn sigkill_right_after_an_opt_out_loses_nothing() {
    let port = free_port();
    let s = Setup::with_extra(port, "daily 00:00-24:00", "", "");
    let mut uas = sipp(&s, port, &uas_opt_out());
    call_and_kill(&s, Some("after-opt-out"), Duration::ZERO);
    uas.kill();
    let store = s.dir.path().join("store").display().to_string();
    let o = crieur(&["optout", "--store", &store, "check", "+33612345678"]);
    assert_eq!(text(&o.stdout).trim(), "opted out", "the opt-out was lost");
    let o = s.call();
    let out = text(&o.stdout);
    assert!(
        out.contains("recovered an interrupted call to t/c1")
            && out.contains("is on the opt-out list"),
        "{out}"
    );
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn call_refuses_a_store_that_does_not_exist() {
    let s = Setup::new(free_port(), "daily 00:00-24:00", "");
    let p = |n: &str| s.dir.path().join(n).display().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args([
            "call",
            "--campaign",
            &p("c.toml"),
            "--contact",
            "c1",
            "--store",
            &p("typo"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no store at"),
        "{}",
        text(&o.stderr)
    );
    assert!(!s.dir.path().join("typo").exists());
    // A contact that was never imported is not called.
    let o = Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args([
            "call",
            "--campaign",
            &p("c.toml"),
            "--contact",
            "c2",
            "--store",
            &p("store"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no contact `c2` in campaign `t` of this store"),
        "{}",
        text(&o.stderr)
    );
}

/// Disk full while writing (RLIMIT_FSIZE makes writes past the limit fail with EFBIG, as a
/// full disk fails them with ENOSPC): the import fails cleanly, says exactly how many contacts
/// were written (whole batches of buckets, each contact whole), loses no opt-out, and a re-run
/// without the limit completes it.
#[test]
fn disk_full_during_an_import_fails_cleanly_and_loses_nothing() {
    let s = Setup::new(free_port(), "daily 00:00-24:00", "");
    let store = s.dir.path().join("store").display().to_string();
    let o = crieur(&["optout", "--store", &store, "add", "+33612345679"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut csv =
        String::from("id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n");
    let rows = 25_000;
    for i in 0..rows {
        csv.push_str(&format!(
            "b{i},+3361{:07},,mon-fri 18:00-20:00,2027-01-01T00:00:00Z,,,bench,p{i}\n",
            i
        ));
    }
    let big = s.dir.path().join("big.csv");
    std::fs::write(&big, csv).unwrap_or_else(|e| panic!("{e}"));
    let campaign = s.dir.path().join("c.toml").display().to_string();
    let import = format!(
        "{} import --campaign {campaign} --store {store} {}",
        env!("CARGO_BIN_EXE_crieur"),
        big.display()
    );
    let base = s.dir.path().join("base").display().to_string();
    let cp = |from: &str, to: &str| {
        let _ = std::fs::remove_dir_all(to);
        let ok = Command::new("cp").args(["-a", from, to]).status();
        assert!(ok.is_ok_and(|s| s.success()), "cp {from} {to}");
    };
    cp(&store, &base);
    // sled's file grows in steps, so the limit that leaves room for the first batches but not
    // for all of them is found by trying, each time from the same store.
    // Limits are tried upward from the size of the store's file before the import.
    let before =
        std::fs::metadata(s.dir.path().join("base").join("db")).map_or(0, |m| m.len()) / 1024;
    let mut found = None;
    for kib in (1..=40).map(|k| before + k * 256) {
        cp(&base, &store);
        let o = Command::new("bash")
            .args([
                "-c",
                &format!("trap '' XFSZ; ulimit -f {kib}; exec {import}"),
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let err = text(&o.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            o.status.success() || err.contains("File too large"),
            "{}{err}",
            text(&o.stdout)
        );
        assert!(!o.status.success(), "all fitted under {kib} KiB: {err}");
        assert_eq!(o.status.code(), Some(1), "{err}");
        if err.contains("nothing was written") {
            continue;
        }
        let written: usize = err
            .split("store I/O failed after ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count of written contacts in: {err}"));
        found = Some(written);
        break;
    }
    let written = found.unwrap_or_else(|| panic!("no limit gave a partial import"));
    assert!(written > 0 && written < rows, "{written}");
    // The opt-out made before is intact; the store opens and works.
    let o = crieur(&["optout", "--store", &store, "check", "+33612345679"]);
    assert_eq!(text(&o.stdout).trim(), "opted out", "{}", text(&o.stderr));
    // Re-run without the limit: exactly the reported number of contacts was there.
    let o = Command::new("bash")
        .args(["-c", &import])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(
        out.contains(&format!(
            "{} new contacts, {written} updated",
            rows - written
        )),
        "{out}"
    );
}

/// The audit commands end to end on a log written by `call` and `optout` with a signing key:
/// keygen, verify (pinned key, exported checkpoint), replay, export, report; a cut tail and a
/// foreign key are caught.
#[test]
fn audit_commands_verify_replay_export_report_and_catch_a_cut_tail() {
    let s = Setup::new(free_port(), "daily 00:00-24:00", "2020-06-01T00:00:00Z");
    let p = |n: &str| s.dir.path().join(n).display().to_string();
    let o = crieur(&["audit", "keygen", "--out", &p("audit.key")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The public key is written next to the secret (and printed); the secret is 0600.
    assert_eq!(
        std::fs::read_to_string(p("audit.pub")).unwrap_or_default(),
        text(&o.stdout)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p("audit.key")).map_or(0, |m| m.permissions().mode());
    assert_eq!(mode & 0o777, 0o600);
    // A second keygen over the same files is refused.
    let o = crieur(&["audit", "keygen", "--out", &p("audit.key")]);
    assert_eq!(o.status.code(), Some(1));
    let with_key = |args: &[&str]| {
        // `--audit-key` after the (sub)command that writes the log, where it is used.
        let mut a: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        a.extend(["--audit-key".to_owned(), p("audit.key")]);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        crieur(&a)
    };
    // The consent expired: the call is refused, and the refusal is recorded with its inputs.
    let o = with_key(&[
        "call",
        "--campaign",
        &p("c.toml"),
        "--contact",
        "c1",
        "--store",
        &p("store"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let o = with_key(&["optout", "--store", &p("store"), "add", "+33612345670"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let audit = p("store.audit");
    let o = crieur(&["audit", "verify", &audit, "--pubkey", &p("audit.pub")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("checked against the given key"));
    let o = crieur(&["audit", "checkpoint", &audit, "--export", &p("cp.json")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = crieur(&["audit", "replay", &audit, "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(rep["decisions"], 1, "{rep}");
    assert_eq!(rep["skips"], 1, "{rep}");
    let o = crieur(&[
        "audit",
        "report",
        &audit,
        "--html",
        &p("report.html"),
        "--pubkey",
        &p("audit.pub"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("0 calls, 0 violations, chain intact"));
    let html = std::fs::read_to_string(p("report.html")).unwrap_or_default();
    assert!(
        html.contains("<svg") && html.contains("Violations (0)"),
        "{html}"
    );
    let public = std::fs::read_to_string(p("audit.pub")).unwrap_or_default();
    assert!(
        html.contains(&format!(
            "fingerprint <code class=\"fingerprint\">{}</code>",
            crieur_audit::report::key_fingerprint(&public)
        )),
        "{html}"
    );
    assert!(html.contains("id=\"unproven\">0<"), "{html}");
    // No call: the exports are empty, the CSV still has its header row.
    let o = crieur(&["audit", "export", "--json", &audit]);
    assert_eq!(text(&o.stdout).trim(), "[]");
    let o = crieur(&["audit", "export", "--csv", &audit]);
    assert_eq!(
        text(&o.stdout),
        format!("{}\n", crieur_audit::export::COLUMNS.join(","))
    );
    let log = std::fs::read_to_string(format!("{audit}/audit-000001.jsonl")).unwrap_or_default();
    assert!(log.contains(r#""code":"consent-expired""#), "{log}");
    // A skip names its rule set too.
    assert!(
        log.contains(r#""ruleset":"none","ruleset_version":"none-1""#),
        "{log}"
    );
    assert!(log.contains("\"type\":\"opt-out-list-change\""), "{log}");
    // Cut the newest records (the last checkpoint and the record it covers): only the
    // exported checkpoint shows it.
    let cut: String = log
        .lines()
        .take(log.lines().count() - 2)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(format!("{audit}/audit-000001.jsonl"), cut).unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(&["audit", "verify", &audit, "--pubkey", &p("audit.pub")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let o = crieur(&[
        "audit",
        "verify",
        &audit,
        "--pubkey",
        &p("audit.pub"),
        "--checkpoint",
        &p("cp.json"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert!(
        text(&o.stdout).contains("newest records were cut"),
        "{}",
        text(&o.stdout)
    );
    // Another key: the checkpoints are not its.
    let o = crieur(&["audit", "keygen", "--out", &p("other.key")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = crieur(&["audit", "verify", &audit, "--pubkey", &p("other.pub")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert!(
        text(&o.stdout).contains("not the given public key"),
        "{}",
        text(&o.stdout)
    );
}

/// A UAS answering the INVITE with `code`, after a 180 Ringing if `ring`.
fn refusing(code: &str, ring: bool) -> String {
    if ring {
        format!("{HEAD}{}{}{ACK}{TAIL}", ringing(), response(code, "", None))
    } else {
        rejecting(code)
    }
}

/// `crieur call` on a trunk fault: exit 6. A 503 before anything rang uses up no attempt (the
/// campaign allows one); a 503 after a 180 does — the next call is refused by the cap.
#[test]
fn a_trunk_fault_exits_6_and_uses_up_an_attempt_only_if_something_rang() {
    let port = free_port();
    let s = Setup::with_extra(port, "daily 00:00-24:00", "", ONE_ATTEMPT);
    let mut uas = sipp(&s, port, &refusing("503 Service Unavailable", false));
    let o = s.call();
    let _ = uas.succeeded();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(6), "{out}{err}");
    assert!(err.contains("trunk     trunk-server-error"), "{err}");
    assert!(err.contains("no attempt used"), "{err}");
    let mut uas = sipp(&s, port, &refusing("503 Service Unavailable", true));
    let o = s.call();
    let _ = uas.succeeded();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(6), "{out}{err}");
    assert!(err.contains("it counts as an attempt"), "{err}");
    let o = s.call();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("attempt cap: 1 of 1"), "{out}");
    let log = std::fs::read_to_string(s.dir.path().join("store.audit/audit-000001.jsonl"))
        .unwrap_or_default();
    assert!(
        log.contains("\"outcome\":\"trunk-fault:trunk-failure\""),
        "{log}"
    );
    assert!(
        log.contains("\"status\":180"),
        "the 18x is evidence in the log"
    );
}
