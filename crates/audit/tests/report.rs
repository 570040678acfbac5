//! The regulator's report rendered in a real browser (headless Chromium, Debian package
//! `chromium`; CI installs it): every section is there, hostile names and proofs stay text,
//! the figures are the log's, the page's own script runs under its Content-Security-Policy
//! and the call table sorts when its column titles are clicked.
//!
//! Chromium is found at `$CHROMIUM`, else `chromium` or `chromium-browser` on the PATH. When
//! none is installed the test fails and says how to install it: it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_audit::build::{decision_record, DecisionInputs};
use crieur_audit::export::CallRow;
use crieur_audit::record::*;
use crieur_audit::report::{html_report, key_fingerprint};
use crieur_audit::{AuditLog, Options, VerifyOptions};
use crieur_scheduler::{decide, Contact, Decision, RuleSet};
use sha2::{Digest, Sha256};

mod common;
use common::{policy, t};

fn contact(id: &str, number: &str, windows: &str, source: &str, proof: &str) -> Contact {
    common::contact_with(id, number, windows, source, proof)
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

const HOSTILE_PROOF: &str = "<img src=x onerror=\"document.title='pwned'\">";
const CAMPAIGN: &str = "Rappel <b>vaccin</b> & \"co\"";
const TOML: &str =
    "name = \"Rappel <b>vaccin</b>\"\n# </pre><script>document.title='pwned'</script>\n";

fn header() -> Record {
    let mut h = common::header(CAMPAIGN);
    h.command = "run".into();
    h.campaign_name = Some("Rappel <i>vaccin</i> 2027".into());
    h.campaign_file = Some("campaigns/rappel.toml".into());
    h.campaign_sha256 = Some(hex::encode(Sha256::digest(TOML)));
    h.campaign_toml = Some(TOML.into());
    h.audio = vec![AudioSnapshot {
        role: "message".into(),
        path: "audio/rappel.wav".into(),
        sha256: "ab".repeat(32),
        length_ms: 10_000,
        transcript: Some("Bonjour <script>document.title='pwned'</script>".into()),
    }];
    Record::RunStart(Box::new(h))
}

/// The scheduler's decision for `c` at `now`, as the run records it; `dial` must be what the
/// scheduler says.
fn decision(c: &Contact, now: DateTime<Utc>, dial: bool) -> Record {
    let d = decide(c, &policy(), now);
    assert_eq!(matches!(d, Decision::Dial(_)), dial, "{d:?}");
    Record::Decision(Box::new(decision_record(
        c,
        &d,
        DecisionInputs {
            campaign: CAMPAIGN,
            now,
            history: vec![],
            opted_out: false,
            refused: None,
            attempt: 1,
        },
    )))
}

fn invite(c: &Contact, call: &str, decided: DateTime<Utc>) -> Record {
    Record::InviteSent(InviteSent {
        call: call.into(),
        campaign: CAMPAIGN.into(),
        contact: c.id().to_string(),
        number: c.phone().to_string(),
        decided_at: decided,
        sent_at: decided + ms(3),
        recheck: "dial".into(),
        valid_until: decided + chrono::Duration::minutes(30),
    })
}

fn outcome(c: &Contact, call: &str, started: DateTime<Utc>, secs: i64, o: &str) -> Record {
    Record::Outcome(OutcomeRecord {
        call: call.into(),
        campaign: CAMPAIGN.into(),
        contact: c.id().to_string(),
        number: c.phone().to_string(),
        started,
        ended: started + chrono::Duration::seconds(secs),
        outcome: common::named(o),
    })
}

/// What the test knows about the log it wrote.
struct Written {
    opt_out_decision_seq: u64,
    slow_audio_seq: u64,
    orphan_invite_seq: u64,
    unproven: u64,
    public_key: String,
}

/// A run: a skip, four calls (rang then completed; opted out after a slow first audio packet; busy;
/// an INVITE without a decision), a signed checkpoint, then two unproven records.
fn write_log(dir: &Path) -> Written {
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    let public_key = hex::encode(key.verifying_key().to_bytes());
    let mut log = AuditLog::open(
        dir,
        Options {
            checkpoint_every: 1_000_000,
            checkpoint_interval: Duration::from_secs(86_400),
            signing_key: Some(key),
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut ts = t("2027-03-03T17:00:00Z");
    let mut put = |r: Record| {
        ts += chrono::Duration::seconds(1);
        log.append(ts, &r).unwrap_or_else(|e| panic!("{e}"))
    };
    let evening = "mon-fri 18:00-20:00";
    let c1 = contact("c1", "+33612345678", evening, "form", HOSTILE_PROOF);
    let c2 = contact("c2", "+33612345679", evening, "web \"A&B\"", "sig-2");
    let c3 = contact(
        "c3",
        "+12125550123",
        "daily 09:00-20:00",
        "call-center",
        "rec-3",
    );
    let c4 = contact("c4", "+33612345670", evening, "form", "p-4");
    put(header());
    put(decision(&c1, t("2027-03-03T10:00:00Z"), false)); // 11:00 Paris: outside consent
                                                          // c1: answered after 4 s, message at once, completed.
    let d1 = t("2027-03-03T17:30:00Z"); // 18:30 Paris
    put(decision(&c1, d1, true));
    put(invite(&c1, "call-1", d1));
    for (status, at_ms) in [(180, 1500), (200, 4000)] {
        put(Record::SipResponse(SipResponse {
            call: "call-1".into(),
            status,
            at_ms,
        }));
    }
    put(Record::Answered(CallEvent {
        call: "call-1".into(),
        at_ms: 4000,
    }));
    put(Record::FirstAudio(FirstAudio {
        call: "call-1".into(),
        at_ms: 4120,
        answer_to_audio_ms: 120,
    }));
    put(Record::Rtcp(RtcpRecord {
        call: "call-1".into(),
        reports_sent: 4,
        reports_received: 3,
        fraction_lost_256: Some(0),
        worst_fraction_lost_256: 64,
        cumulative_lost: Some(2),
        jitter_us: Some(1_250),
        round_trip_ms: Some(40),
    }));
    put(outcome(&c1, "call-1", d1, 20, "answered-completed"));
    // c2: answered after 12 s, first audio 2.5 s later (a violation), opt-out key at 15 s,
    // durable 350 ms later.
    let d2 = t("2027-03-03T17:31:00Z");
    let opt_out_decision_seq = put(decision(&c2, d2, true));
    put(invite(&c2, "call-2", d2));
    put(Record::Answered(CallEvent {
        call: "call-2".into(),
        at_ms: 12_000,
    }));
    let slow_audio_seq = put(Record::FirstAudio(FirstAudio {
        call: "call-2".into(),
        at_ms: 14_500,
        answer_to_audio_ms: 2_500,
    }));
    // As crieur logs them: the opt-out durably during the call, the keys when it ends.
    put(Record::OptOutRecorded(OptOutRecorded {
        call: "call-2".into(),
        number: c2.phone().to_string(),
        at: d2 + ms(3 + 15_000 + 350),
    }));
    put(Record::Dtmf(Dtmf {
        call: "call-2".into(),
        at_ms: 15_000,
        digit: '9',
        method: "rfc4733".into(),
    }));
    put(outcome(&c2, "call-2", d2, 25, "answered-opted-out"));
    // c3 (New York, 12:32 there): busy after 900 ms.
    let d3 = t("2027-03-03T17:32:00Z");
    put(decision(&c3, d3, true));
    put(invite(&c3, "call-3", d3));
    put(Record::SipResponse(SipResponse {
        call: "call-3".into(),
        status: 486,
        at_ms: 900,
    }));
    put(outcome(&c3, "call-3", d3, 1, "busy"));
    // c4: an INVITE no decision precedes (a violation), no answer.
    let d4 = t("2027-03-03T17:33:00Z");
    let orphan_invite_seq = put(invite(&c4, "call-4", d4));
    put(Record::SipResponse(SipResponse {
        call: "call-4".into(),
        status: 487,
        at_ms: 15_000,
    }));
    put(outcome(&c4, "call-4", d4, 16, "no-answer"));
    put(Record::TrunkBreaker(TrunkBreaker {
        campaign: CAMPAIGN.into(),
        from: "closed".into(),
        state: "open".into(),
        cause: BreakerCause {
            code: "trunk-server-error".into(),
            call: Some("call-4".into()),
            sip_status: Some(503),
            detail: "<503 Service Unavailable>".into(),
        },
        consecutive_faults: 5,
        until: Some(t("2027-03-03T17:35:00Z")),
    }));
    let cp = log
        .checkpoint(t("2027-03-03T18:00:00Z"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cp.is_some());
    let mut ts = t("2027-03-03T18:00:01Z");
    let mut put = |r: Record| {
        ts += chrono::Duration::seconds(1);
        log.append(ts, &r).unwrap_or_else(|e| panic!("{e}"))
    };
    put(Record::OptOutListChange(OptOutListChange {
        action: "add".into(),
        numbers: vec!["+33612345699".into()],
        source: "letter <2027-03-01>".into(),
        at: t("2027-03-03T18:00:02Z"),
        ticket: None,
        recovered: None,
    }));
    put(Record::RunStop(RunStop {
        reason: "done".into(),
    }));
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    Written {
        opt_out_decision_seq,
        slow_audio_seq,
        orphan_invite_seq,
        unproven: 2,
        public_key,
    }
}

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser"] {
        if let Some(p) = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        }) {
            return p;
        }
    }
    panic!(
        "this test renders the report in headless Chromium, which is not installed: \
         `apt-get install chromium` (Debian), or set CHROMIUM to its path"
    );
}

/// Runs headless Chromium on `page` with `args` (`--dump-dom`, `--screenshot=…`); its
/// stdout. Bounded: killed after 90 s.
fn run_chromium(page: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out_path = profile.path().join("stdout");
    let out = std::fs::File::create(&out_path).unwrap_or_else(|e| panic!("{e}"));
    let err_path = profile.path().join("stderr");
    let err = std::fs::File::create(&err_path).unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-quic",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting chromium: {e}"));
    // Polled every 50 ms, at most 1 800 times (90 s): no clock read.
    for _ in 0..1_800 {
        match child.try_wait() {
            Ok(Some(status)) => {
                assert!(
                    status.success(),
                    "chromium exited with {status}: {}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
                return std::fs::read_to_string(&out_path).unwrap_or_else(|e| panic!("{e}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{e}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("chromium did not finish within 90 s");
}

/// The text of an HTML fragment: tags dropped, the serializer's entities decoded.
fn text(fragment: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in fragment.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The rendered table `id`: its column titles and its body rows' cell texts.
fn table(dom: &str, id: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let start = dom
        .find(&format!("<table id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table #{id}"));
    let t = &dom[start..];
    let t = &t[..t.find("</table>").unwrap_or(t.len())];
    let (head, body) = t.split_at(t.find("<tbody").unwrap_or(t.len()));
    let heads = head
        .split("<th")
        .skip(1)
        .filter(|c| !c.starts_with("ead"))
        .map(|c| text(&format!("<th{}", &c[..c.find("</th>").unwrap_or(c.len())])))
        .collect();
    let rows = body
        .split("<tr")
        .skip(1)
        .map(|r| {
            r.split("<td")
                .skip(1)
                .map(|c| text(&format!("<td{}", &c[..c.find("</td>").unwrap_or(c.len())])))
                .collect()
        })
        .collect();
    (heads, rows)
}

fn column(dom: &str, id: &str, title: &str) -> Vec<String> {
    let (heads, rows) = table(dom, id);
    let k = heads
        .iter()
        .position(|h| h == title)
        .unwrap_or_else(|| panic!("#{id} has no column {title:?}: {heads:?}"));
    rows.iter().map(|r| r[k].clone()).collect()
}

fn section<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<section id=\"{id}\""))
        .unwrap_or_else(|| panic!("no section #{id}"));
    let s = &dom[start..];
    &s[..s.find("</section>").unwrap_or(s.len())]
}

/// Writes the report of a fresh log; (tempdir, page, what was written, page source).
fn report() -> (tempfile::TempDir, PathBuf, Written, String) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = tmp.path().join("store.audit");
    let w = write_log(&log);
    let opts = VerifyOptions {
        public_key: Some(
            crieur_audit::verifying_key_from_hex(&w.public_key).unwrap_or_else(|e| panic!("{e}")),
        ),
        anchor: None,
    };
    let rep = html_report(&log, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(rep.intact);
    assert_eq!((rep.calls, rep.violations), (4, 2));
    let page = tmp.path().join("report.html");
    std::fs::write(&page, &rep.html).unwrap_or_else(|e| panic!("{e}"));
    (tmp, page, w, rep.html)
}

#[test]
fn the_report_renders_every_section_with_the_log_s_figures_and_no_injected_markup() {
    let (_tmp, page, w, source) = report();
    let dom = run_chromium(&page, &["--dump-dom"]);
    // Self-contained: no element loads anything, the style imports nothing.
    for tag in dom
        .split('<')
        .skip(1)
        .map(|t| &t[..t.find('>').unwrap_or(t.len())])
    {
        for attr in [" src=", " href=", " srcset=", " data=", " xlink:href="] {
            assert!(!tag.contains(attr), "<{tag}> loads something");
        }
        assert!(
            !tag.starts_with("link") && !tag.starts_with("iframe"),
            "<{tag}>"
        );
    }
    assert!(!source.contains("@import") && !source.contains("url("));
    for id in [
        "breaker",
        "summary",
        "campaign",
        "period",
        "verification",
        "hours",
        "zones",
        "outcomes",
        "latency",
        "amd",
        "violations",
        "skips",
        "imports",
        "calls",
    ] {
        section(&dom, id);
    }
    // The page's own script ran (its hash is the one the Content-Security-Policy allows) ...
    assert!(
        dom.contains("class=\"sortable sort-ready\""),
        "the sort script did not run"
    );
    // ... and nothing from the log became markup or script.
    assert_eq!(dom.matches("<script").count(), 1, "{dom}");
    assert!(!dom.contains("<img") && !dom.contains("<b>vaccin"), "{dom}");
    assert!(!dom.contains("pwned</title>"));
    assert!(dom.contains("&lt;img src=x onerror=\"document.title='pwned'\"&gt;"));
    // Campaign identity and rules.
    let campaign = text(section(&dom, "campaign"));
    assert!(
        campaign.contains(&format!("Rappel <i>vaccin</i> 2027 (id {CAMPAIGN})")),
        "{campaign}"
    );
    assert!(campaign.contains(&hex::encode(Sha256::digest(TOML))));
    assert!(campaign.contains("matches the file recorded below"));
    assert!(campaign.contains("campaigns/rappel.toml"));
    assert!(campaign.contains("Bonjour <script>document.title='pwned'</script>"));
    assert!(campaign.contains(&"ab".repeat(32)));
    let fr = RuleSet::by_name("FR").unwrap_or_else(|e| panic!("{e}"));
    assert!(campaign.contains(&format!("FR version {}", fr.version())));
    assert!(campaign.contains(fr.source()));
    // Period, local and UTC.
    let period = text(section(&dom, "period"));
    assert!(
        period
            .contains("2027-03-03T17:30:00.003Z UTC = 2027-03-03T18:30:00.003+01:00 Europe/Paris"),
        "{period}"
    );
    // Verification: pinned key, its fingerprint, the unproven tail.
    let verification = text(section(&dom, "verification"));
    assert!(verification.contains("Chain intact"), "{verification}");
    let fp = hex::encode(Sha256::digest(
        hex::decode(&w.public_key).unwrap_or_default(),
    ))[..16]
        .to_owned();
    assert_eq!(key_fingerprint(&w.public_key), fp);
    assert!(verification.contains(&format!("fingerprint {fp}")));
    assert!(verification.contains(&w.public_key));
    assert!(
        dom.contains(&format!("id=\"unproven\">{}<", w.unproven)),
        "{verification}"
    );
    // Calls per local hour: two in Paris at 18 h, one in New York at 12 h; axes labelled.
    let hours = section(&dom, "hours");
    for (hour, n) in [("18", 2), ("12", 1), ("11", 0)] {
        assert!(
            hours.contains(&format!(
                "data-series=\"calls started\" data-category=\"{hour}\" data-value=\"{n}\""
            )),
            "{hour} h: {hours}"
        );
    }
    assert!(hours.contains("hour of the callee's local time"));
    assert!(hours.contains("class=\"axis-label y\""));
    assert!(hours.contains("class=\"tick y\""));
    // Zones and outcomes.
    assert_eq!(
        column(&dom, "zones-table", "zone"),
        ["(unknown)", "America/New_York", "Europe/Paris"]
    );
    assert_eq!(column(&dom, "zones-table", "calls"), ["1", "1", "2"]);
    assert_eq!(
        column(&dom, "outcomes-table", "outcome"),
        [
            "answered-completed",
            "answered-opted-out",
            "busy",
            "no-answer"
        ]
    );
    // The 2 s rule: one of two first packets late; the opt-out durable in 350 ms.
    assert_eq!(column(&dom, "answer-to-audio-summary", "measured"), ["2"]);
    assert_eq!(
        column(&dom, "answer-to-audio-summary", "over 2 000 ms"),
        ["1"]
    );
    assert_eq!(column(&dom, "optout-to-durable-summary", "max ms"), ["350"]);
    assert!(section(&dom, "latency").contains("2 s rule"));
    // No campaign of this log has `[amd]`: the section says so, the call table's AMD columns
    // are empty.
    assert!(text(section(&dom, "amd")).contains("No call in this log ran"));
    assert_eq!(column(&dom, "calls-table", "AMD verdict"), ["", "", "", ""]);
    // The breaker opened.
    assert_eq!(column(&dom, "breaker-table", "change"), ["closed → open"]);
    assert_eq!(
        column(&dom, "breaker-table", "cause"),
        ["trunk-server-error"]
    );
    assert_eq!(
        column(&dom, "breaker-table", "detail"),
        ["<503 Service Unavailable>"]
    );
    // Every violation with its record's seq.
    let mut seqs = column(&dom, "violations-table", "seq");
    seqs.sort();
    let mut want = vec![
        w.slow_audio_seq.to_string(),
        w.orphan_invite_seq.to_string(),
    ];
    want.sort();
    assert_eq!(seqs, want);
    let mut kinds = column(&dom, "violations-table", "kind");
    kinds.sort();
    assert_eq!(kinds, ["invite-without-decision", "slow-first-audio"]);
    // The skip, the opt-out list change.
    assert_eq!(column(&dom, "skips-table", "decisions"), ["1"]);
    assert_eq!(
        column(&dom, "skips-table", "reason"),
        ["outside-consent-window"]
    );
    // Each violation's evidence, as replay codes it.
    let evidence = column(&dom, "violations-table", "evidence").join(" ");
    assert!(evidence.contains("2500"), "{evidence}");
    assert!(text(section(&dom, "imports")).contains("letter <2027-03-01>"));
    // Every call, with its consent's source and proof.
    assert_eq!(
        column(&dom, "calls-table", "call"),
        ["call-1", "call-2", "call-3", "call-4"]
    );
    assert_eq!(
        column(&dom, "calls-table", "consent proof"),
        [HOSTILE_PROOF, "sig-2", "rec-3", ""]
    );
    assert_eq!(
        column(&dom, "calls-table", "consent source"),
        ["form", "web \"A&B\"", "call-center", ""]
    );
    assert_eq!(
        column(&dom, "calls-table", "start (local)"),
        [
            "2027-03-03T18:30:00.003+01:00",
            "2027-03-03T18:31:00.003+01:00",
            "2027-03-03T12:32:00.003-05:00",
            ""
        ]
    );
    assert_eq!(
        column(&dom, "calls-table", "worst loss %"),
        ["25.0", "", "", ""]
    );
    assert_eq!(
        column(&dom, "calls-table", "violations"),
        ["0", "0", "0", "1"]
    );
}

/// Clicks the call table's column titles in the browser (a script appended to the page; the
/// page's policy is dropped for it) and reads the rows' order back.
fn sorted_by(page: &Path, source: &str, clicks: &[&str]) -> String {
    let policy_start = source
        .find("<meta http-equiv=\"Content-Security-Policy\"")
        .unwrap_or_else(|| panic!("no Content-Security-Policy"));
    let policy_end = policy_start + source[policy_start..].find('>').unwrap_or(0) + 1;
    let mut js = String::new();
    for title in clicks {
        js.push_str(&format!(
            "Array.prototype.find.call(document.querySelectorAll('#calls-table th'), \
             function (t) {{ return t.textContent === '{title}'; }}).click();"
        ));
    }
    let page_text = format!(
        "{}{}",
        &source[..policy_start],
        source[policy_end..].replace("</body>", &format!("<script>{js}</script></body>"))
    );
    let clicked = page.with_file_name("clicked.html");
    std::fs::write(&clicked, page_text).unwrap_or_else(|e| panic!("{e}"));
    run_chromium(&clicked, &["--dump-dom"])
}

#[test]
fn the_call_table_sorts_when_its_column_titles_are_clicked() {
    let (_tmp, page, _w, source) = report();
    // Numbers sort as numbers (900 < 4000 < 12000 < 15000), not as text.
    let dom = sorted_by(&page, &source, &["ring ms"]);
    assert_eq!(
        column(&dom, "calls-table", "ring ms"),
        ["900", "4000", "12000", "15000"]
    );
    assert!(dom.contains("aria-sort=\"ascending\""));
    // A second click reverses; empty cells stay last.
    let dom = sorted_by(&page, &source, &["talk ms", "talk ms"]);
    assert_eq!(
        column(&dom, "calls-table", "talk ms"),
        ["15997", "12997", "", ""]
    );
    let dom = sorted_by(&page, &source, &["number"]);
    assert_eq!(
        column(&dom, "calls-table", "number"),
        [
            "+12125550123",
            "+33612345670",
            "+33612345678",
            "+33612345679"
        ]
    );
}

/// A screenshot renders (the page lays out in a real browser without error).
#[test]
fn the_report_renders_to_a_screenshot() {
    let (tmp, page, _w, _) = report();
    let shot = tmp.path().join("shot.png");
    run_chromium(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000",
        ],
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{e}"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
}

/// The export: one row per call in INVITE order, each column from its record.
#[test]
fn the_export_row_of_a_call_says_who_when_how_long_under_which_consent_and_decision() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let w = write_log(tmp.path());
    let rows = crieur_audit::export::calls(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 4);
    let fr = RuleSet::by_name("FR").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rows[1],
        CallRow {
            call: "call-2".into(),
            campaign: CAMPAIGN.into(),
            contact: "c2".into(),
            number: "+33612345679".into(),
            zone: "Europe/Paris".into(),
            start_local: "2027-03-03T18:31:00.003+01:00".into(),
            start_utc: "2027-03-03T17:31:00.003Z".into(),
            ring_ms: Some(12_000),
            answered_at: "2027-03-03T17:31:12.003Z".into(),
            talk_ms: Some(12_997),
            outcome: "answered-opted-out".into(),
            keys: "9(rfc4733)".into(),
            optout_durable_at: "2027-03-03T17:31:15.353Z".into(),
            consent_source: "web \"A&B\"".into(),
            consent_proof: "sig-2".into(),
            decision_seq: Some(w.opt_out_decision_seq),
            ruleset: format!("FR {}", fr.version()),
            sip_status: None,
            alerting_ms: None,
            answer_to_audio_ms: Some(2_500),
            optout_durable_ms: Some(350),
            hangup_by: String::new(),
            hangup_reason: String::new(),
            ended_utc: "2027-03-03T17:31:25.000Z".into(),
        }
    );
    // Rang at 1.5 s, answered at 4 s: the 180 is not the final status.
    assert_eq!(
        (rows[0].alerting_ms, rows[0].ring_ms, rows[0].sip_status),
        (Some(1_500), Some(4_000), Some(200))
    );
    // Busy: the final response ends the ringing; no answer, no talk.
    assert_eq!(
        (rows[2].ring_ms, rows[2].sip_status, rows[2].talk_ms),
        (Some(900), Some(486), None)
    );
    assert_eq!(rows[2].start_local, "2027-03-03T12:32:00.003-05:00");
    // An INVITE without a decision: no zone, no consent, no decision seq.
    assert_eq!(
        (
            rows[3].zone.as_str(),
            rows[3].consent_proof.as_str(),
            rows[3].decision_seq
        ),
        ("", "", None)
    );
}

/// A damaged log still gets a report: the break, and what can be read before it.
#[test]
fn a_damaged_log_is_reported_as_far_as_it_can_be_read() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(tmp.path());
    let seg = tmp.path().join("audit-000001.jsonl");
    let mut bytes = std::fs::read(&seg).unwrap_or_else(|e| panic!("{e}"));
    bytes.extend_from_slice(b"{\"seq\":99,\"not\":\"a record\"}\n");
    std::fs::write(&seg, bytes).unwrap_or_else(|e| panic!("{e}"));
    let rep = html_report(tmp.path(), &VerifyOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!rep.intact);
    assert_eq!(rep.calls, 4);
    assert!(
        rep.html.contains("Chain BROKEN at audit-000001.jsonl:"),
        "{}",
        rep.html
    );
    assert!(
        rep.html.contains("Violations (not replayed)"),
        "{}",
        rep.html
    );
    assert!(rep.html.contains("<h2>Calls (4)</h2>"), "{}", rep.html);
}

/// The `amd` record of an answered call in `voicemail-drop` mode.
fn amd_record(call: &str, verdict: &str, cause: &str, first: Option<&str>, at: u64) -> AmdRecord {
    AmdRecord {
        call: call.into(),
        mode: "voicemail-drop".into(),
        verdict: verdict.into(),
        cause: Some(cause.into()),
        first_verdict: first.map(Into::into),
        answer_to_verdict_ms: Some(at),
        features: Some(AmdFeatures {
            initial_silence_ms: 300,
            voice_ms: 900,
            words: 2,
            longest_word_ms: 400,
            silence_ms: 800,
            analysed_ms: u32::try_from(at).unwrap_or(u32::MAX),
            noise_floor_dbfs: -70,
        }),
        beep: None,
        drop: None,
        beep_to_voicemail_ms: None,
        voicemail_at_ms: None,
        voicemail_sha256: None,
        voicemail_played_ms: 0,
        sit: None,
    }
}

/// A run with `[amd]` in `voicemail-drop` mode: a person (`human` after 1.85 s, the message
/// plays on), a greeting judged `machine` whose beep started the voicemail message 104 ms
/// after it ended, and a short greeting first judged `human` that its beep overturned, the
/// voicemail message starting 350 ms after the beep.
fn write_amd_log(dir: &Path) {
    let mut log = AuditLog::open(dir, Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut ts = t("2027-03-03T17:00:00Z");
    let mut put = |r: Record| {
        ts += chrono::Duration::seconds(1);
        log.append(ts, &r).unwrap_or_else(|e| panic!("{e}"))
    };
    let voicemail = "cd".repeat(32);
    let Record::RunStart(mut h) = header() else {
        unreachable!()
    };
    h.audio.push(AudioSnapshot {
        role: "voicemail".into(),
        path: "audio/voicemail.wav".into(),
        sha256: voicemail.clone(),
        length_ms: 12_000,
        transcript: None,
    });
    put(Record::RunStart(h));
    let evening = "mon-fri 18:00-20:00";
    let mut d = t("2027-03-03T17:30:00Z");
    let calls = [
        (
            "+33612345601",
            amd_record("call-h", "human", "after-greeting-silence", None, 1_850),
            "answered-completed",
        ),
        (
            "+33612345602",
            AmdRecord {
                beep: Some(AmdBeep {
                    freq_hz: 1_000,
                    length_ms: 400,
                    end_ms: 9_000,
                }),
                drop: Some("beep".into()),
                beep_to_voicemail_ms: Some(104),
                voicemail_at_ms: Some(14_104),
                voicemail_sha256: Some(voicemail.clone()),
                voicemail_played_ms: 12_000,
                sit: None,
                ..amd_record("call-m", "machine", "long-greeting", None, 4_410)
            },
            "machine-message-left",
        ),
        (
            "+33612345603",
            AmdRecord {
                beep: Some(AmdBeep {
                    freq_hz: 850,
                    length_ms: 200,
                    end_ms: 3_900,
                }),
                drop: Some("beep".into()),
                beep_to_voicemail_ms: Some(350),
                voicemail_at_ms: Some(9_250),
                voicemail_sha256: Some(voicemail.clone()),
                voicemail_played_ms: 12_000,
                sit: None,
                ..amd_record("call-b", "machine", "beep", Some("human"), 3_920)
            },
            "machine-message-left",
        ),
    ];
    for (i, (number, amd, out)) in calls.into_iter().enumerate() {
        let c = contact(&format!("a{i}"), number, evening, "form", "p");
        put(decision(&c, d, true));
        put(invite(&c, &amd.call, d));
        put(Record::Answered(CallEvent {
            call: amd.call.clone(),
            at_ms: 5_000,
        }));
        put(Record::FirstAudio(FirstAudio {
            call: amd.call.clone(),
            at_ms: 5_100,
            answer_to_audio_ms: 100,
        }));
        let call = amd.call.clone();
        put(Record::Amd(amd));
        put(outcome(&c, &call, d, 30, out));
        d += chrono::Duration::minutes(1);
    }
    put(Record::RunStop(RunStop {
        reason: "done".into(),
    }));
    log.commit().unwrap_or_else(|e| panic!("{e}"));
}

/// The AMD section and the call table's AMD columns, rendered in Chromium, are the `amd`
/// records': each call's verdict (with the one a beep overturned), cause, answer → verdict
/// and beep → voicemail; the summary counts verdicts, overturns and voicemail messages, and
/// flags a beep → voicemail delay over the 300 ms target.
#[test]
fn the_amd_section_and_columns_show_each_call_s_verdict_and_timings() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = tmp.path().join("store.audit");
    write_amd_log(&log);
    let rep = html_report(&log, &VerifyOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((rep.calls, rep.violations), (3, 0), "{}", rep.html);
    let page = tmp.path().join("report.html");
    std::fs::write(&page, &rep.html).unwrap_or_else(|e| panic!("{e}"));
    let dom = run_chromium(&page, &["--dump-dom"]);
    let amd = text(section(&dom, "amd"));
    assert!(amd.contains("calls analysed3 (3 voicemail-drop)"), "{amd}");
    assert!(
        amd.contains(
            "judged a machine2, of which 1 first judged a person and overturned by a beep"
        ),
        "{amd}"
    );
    assert!(
        amd.contains("voicemail messages started2 (after: 2 beep)"),
        "{amd}"
    );
    assert!(amd.contains("machines hung up on0"), "{amd}");
    assert_eq!(
        column(&dom, "amd-verdicts", "verdict"),
        ["human", "machine", "machine"]
    );
    assert_eq!(
        column(&dom, "amd-verdicts", "cause"),
        ["after-greeting-silence", "beep", "long-greeting"]
    );
    assert_eq!(column(&dom, "amd-verdicts", "calls"), ["1", "1", "1"]);
    assert_eq!(column(&dom, "amd-verdict-time", "measured"), ["3"]);
    assert_eq!(column(&dom, "amd-verdict-time", "median ms"), ["3920"]);
    assert_eq!(column(&dom, "amd-verdict-time", "max ms"), ["4410"]);
    assert_eq!(column(&dom, "amd-beep-to-voicemail", "measured"), ["2"]);
    assert_eq!(column(&dom, "amd-beep-to-voicemail", "min ms"), ["104"]);
    assert_eq!(column(&dom, "amd-beep-to-voicemail", "over 300 ms"), ["1"]);
    assert!(
        section(&dom, "amd").contains("<tr class=\"bad\">"),
        "a delay over 300 ms is flagged"
    );
    assert_eq!(
        column(&dom, "calls-table", "call"),
        ["call-h", "call-m", "call-b"]
    );
    assert_eq!(
        column(&dom, "calls-table", "AMD verdict"),
        ["human", "machine", "machine (first human)"]
    );
    assert_eq!(
        column(&dom, "calls-table", "AMD cause"),
        ["after-greeting-silence", "long-greeting", "beep"]
    );
    assert_eq!(
        column(&dom, "calls-table", "answer→verdict ms"),
        ["1850", "4410", "3920"]
    );
    assert_eq!(
        column(&dom, "calls-table", "beep→voicemail ms"),
        ["", "104", "350"]
    );
    assert_eq!(
        column(&dom, "outcomes-table", "outcome"),
        ["answered-completed", "machine-message-left"]
    );
}
