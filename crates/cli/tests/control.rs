//! Operating a live `crieur run` against sipp (a real SIP peer on 127.0.0.1) through its
//! control API, the command line and the dashboard in headless Chromium:
//!
//! * an opt-out added mid-run (API) hangs its call in progress up at once, and one added
//!   through `crieur optout add` (which finds the running owner and goes through its API
//!   instead of failing on the store's lock) is never dialled: refused at the INVITE instant;
//! * contacts imported mid-run with `crieur import` are dialled by the running campaign; a
//!   bad file is refused with the located errors and writes nothing;
//! * a pause stops new INVITEs within a second, a resume restarts them, a stop ends the run
//!   cleanly (its owner file removed, the log verifies and replays clean);
//! * the dashboard loads during a run, its counters change, its pause button stops dialling;
//! * SIGKILLed again and again while opt-outs come in (after a 200, mid-request, between
//!   requests) and started again each time, the run loses no opt-out answered 200 nor its
//!   audit record, and dials no number after its 200 nor beyond its one attempt.
//!
//! Every endpoint and error of the OpenAPI file is exercised in
//! `crates/control/tests/contract.rs`.
#![allow(clippy::disallowed_methods)] // a test bounds its waits with the wall clock

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crieur_test_support::cdp::Browser;
use crieur_test_support::scenario::{answer_scenario, BYE_200};
use crieur_test_support::{free_port, text, tone_wav, CampaignToml, Sipp, CONTACTS_HEADER};
use serde_json::Value;

fn number(i: usize) -> String {
    format!("+33615{i:06}")
}

fn csv(from: usize, to: usize) -> String {
    let mut s = CONTACTS_HEADER.to_owned();
    for i in from..to {
        s.push_str(&format!(
            "k{i:03},{},,daily 00:00-24:00,2020-01-01T00:00:00Z,,,test,p\n",
            number(i)
        ));
    }
    s
}

fn crieur(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("crieur {args:?} did not end in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The owner file of `dir/store` once written (20 s at most; else `err`, the owner's
/// stderr, says why).
fn wait_owner(dir: &Path, err: &str) -> Value {
    wait_owner_of(dir, err, None)
}

/// [`wait_owner`], the file of the process `pid` when given (not one a killed owner left).
fn wait_owner_of(dir: &Path, err: &str, pid: Option<u32>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = std::fs::read_to_string(dir.join("store/owner.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .filter(|v| pid.is_none_or(|p| v["pid"].as_u64() == Some(u64::from(p))))
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no owner file: {}",
            std::fs::read_to_string(dir.join(err)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `crieur run` against sipp, with its control API.
struct Live {
    dir: tempfile::TempDir,
    child: Option<Child>,
    _sipp: Sipp,
    base: String,
    token: String,
    agent: ureq::Agent,
    campaign: String,
}

impl Live {
    /// `contacts` imported, then a run at `cps` calls per second, `max` at once, each call a
    /// `message_secs` message sipp listens to until we hang up.
    fn start(contacts: usize, cps: u32, max: u32, message_secs: f32) -> Live {
        Live::start_with(contacts, cps, max, message_secs, "", &[])
    }

    /// [`Live::start`], with `extra` campaign TOML (`[retry]` …) and more sipp arguments.
    fn start_with(
        contacts: usize,
        cps: u32,
        max: u32,
        message_secs: f32,
        extra: &str,
        sipp_args: &[&str],
    ) -> Live {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        tone_wav(&d.join("msg.wav"), message_secs);
        tone_wav(&d.join("confirm.wav"), 0.5);
        // sipp first, on the ports it finds free (tried again elsewhere when one is taken in
        // between: tests run side by side), then the campaign naming its port.
        let sipp = Sipp::scenario(&answer_scenario("0 101", BYE_200))
            .in_dir(d, "uas")
            .calls(10_000)
            .timeout_secs(150)
            .args(sipp_args)
            .start();
        std::fs::write(
            d.join("c.toml"),
            CampaignToml::new("live", sipp.port())
                .ring_timeout_secs(15)
                .extra(extra)
                .pacing(cps, max)
                .build(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.join("k.csv"), csv(0, contacts)).unwrap_or_else(|e| panic!("{e}"));
        let o = crieur(
            d,
            &[
                "import",
                "--campaign",
                "c.toml",
                "--store",
                "store",
                "--contacts",
                "k.csv",
            ],
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
        let mut live = Live {
            base: String::new(),
            token: String::new(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .into(),
            campaign: String::new(),
            dir,
            child: None,
            _sipp: sipp,
        };
        live.run();
        live
    }

    /// Starts `crieur run` on the store (its output appended to `run.out` and `run.err`) and
    /// waits for its control API.
    fn run(&mut self) {
        let d = self.dir.path();
        let append = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join(name))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let child = Command::new(env!("CARGO_BIN_EXE_crieur"))
            .args(["run", "--campaign", "c.toml", "--store", "store"])
            .current_dir(d)
            .stdout(append("run.out"))
            .stderr(append("run.err"))
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let owner = wait_owner_of(d, "run.err", Some(child.id()));
        self.child = Some(child);
        let token_file = PathBuf::from(owner["token_file"].as_str().unwrap_or_default());
        self.token = std::fs::read_to_string(&token_file)
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_owned();
        assert!(
            !owner.to_string().contains(&self.token),
            "the owner file holds the token"
        );
        self.base = format!("http://{}", owner["address"].as_str().unwrap_or_default());
        self.campaign = owner["campaigns"][0]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    }

    /// SIGKILLs the run: no destructor, no flush, no cleanup runs.
    fn kill(&mut self) {
        let mut c = self.child.take().unwrap_or_else(|| panic!("no run"));
        c.kill().unwrap_or_else(|e| panic!("kill: {e}"));
        let _ = c.wait();
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn get(&self, url: &str) -> Value {
        let mut r = self
            .agent
            .get(format!("{}{url}", self.base))
            .call()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(r.status(), 200, "{url}");
        serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// POST `body` (JSON) to `url` with the token: (status, answer).
    fn post(&self, url: &str, body: &str, token: bool) -> (u16, Value) {
        let mut req = self
            .agent
            .post(format!("{}{url}", self.base))
            .header("Content-Type", "application/json");
        if token {
            req = req.header("Authorization", format!("Bearer {}", self.token));
        }
        let mut r = req.send(body).unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = r.status().as_u16();
        let v = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or(Value::Null);
        (status, v)
    }

    fn state(&self) -> Value {
        self.get(&format!("/api/campaigns/{}", self.campaign))
    }

    /// Every call event so far.
    fn calls(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut since = 0;
        loop {
            let p = self.get(&format!(
                "/api/campaigns/{}/calls?since={since}&limit=1000",
                self.campaign
            ));
            let page = p["calls"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return out;
            }
            since = p["next"].as_u64().unwrap_or(0);
            out.extend(page);
        }
    }

    fn wait_state(&self, what: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.state();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}: still {s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the run to end (60 s at most): its exit status and output.
    fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap_or_else(|| panic!("no run"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "the run did not end: {}{}",
                    std::fs::read_to_string(self.path().join("run.out")).unwrap_or_default(),
                    std::fs::read_to_string(self.path().join("run.err")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(self.path().join("run.out")).unwrap_or_default()
            + &std::fs::read_to_string(self.path().join("run.err")).unwrap_or_default();
        (status, out)
    }

    /// Stops the run through the API and checks it ended cleanly: exit 0, its owner file
    /// removed, its audit log verified and replayed without a violation. The run's output.
    fn stop(&mut self) -> String {
        let (s, v) = self.post(
            &format!("/api/campaigns/{}/stop", self.campaign),
            "{\"drain_secs\": 0}",
            true,
        );
        assert_eq!(s, 202, "{v}");
        let (status, out) = self.wait();
        assert!(status.success(), "{out}");
        self.check_ended(&out);
        out
    }

    fn check_ended(&self, out: &str) {
        let d = self.path();
        assert!(!d.join("store/owner.json").exists(), "owner file left");
        assert!(!d.join("store/control.token").exists(), "token file left");
        for cmd in ["verify", "replay"] {
            let o = crieur(d, &["audit", cmd, "store.audit"]);
            assert!(
                o.status.success(),
                "audit {cmd}: {}{}\n{out}",
                text(&o.stdout),
                text(&o.stderr)
            );
        }
    }

    /// Records of `kind` in the audit log.
    fn records(&self, kind: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path().join("store.audit"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        for f in files {
            for l in std::fs::read_to_string(f).unwrap_or_default().lines() {
                if let Ok(v) = serde_json::from_str::<Value>(l) {
                    if v["type"] == kind {
                        out.push(v);
                    }
                }
            }
        }
        out
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn at(v: &Value) -> DateTime<Utc> {
    v["at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("no instant in {v}"))
}

#[test]
fn opt_outs_and_imports_mid_run_go_through_the_running_owner() {
    // Six contacts, two calls at a time, 12 s messages: k000 and k001 are in their calls
    // while k002.. wait.
    let mut live = Live::start(6, 4, 2, 12.0);
    let d = live.path().to_path_buf();
    let s = live.wait_state("two calls in progress", Duration::from_secs(20), |s| {
        s["in_progress"] == 2
    });
    assert_eq!(s["running"], true);
    // Changes need the token; an unknown campaign is 404.
    let (st, _) = live.post(
        &format!("/api/campaigns/{}/pause", live.campaign),
        "",
        false,
    );
    assert_eq!(st, 401);
    let (st, _) = live.post("/api/campaigns/nope/pause", "", true);
    assert_eq!(st, 404);
    let in_call: Vec<Value> = live
        .calls()
        .into_iter()
        .filter(|c| c["type"] == "placed")
        .collect();
    let first = in_call[0]["number"].as_str().unwrap_or_default().to_owned();

    // Through the API: the number in a call now. Durable, and its call hung up at once.
    let (st, v) = live.post(
        "/api/optouts",
        &format!("{{\"number\": \"{first}\", \"source\": \"letter\"}}"),
        true,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["new"].clone(), v["hung_up"].clone()),
        (true.into(), 1.into())
    );
    let answered = Utc::now();
    let deadline = Instant::now() + Duration::from_secs(5);
    let ended = loop {
        if let Some(e) = live
            .calls()
            .into_iter()
            .find(|c| c["type"] == "ended" && c["number"] == first.as_str())
        {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "the opted-out call was not hung up"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Its 12 s message was cut: it ended within 2 s of the answer.
    assert!(
        at(&ended) - answered < chrono::Duration::seconds(2),
        "ended {ended} after the opt-out at {answered}"
    );
    // And the audit log says why we hung up: the opt-out, not a shutdown of the run.
    let hangup = live
        .records("hangup")
        .into_iter()
        .find(|h| h["call"] == ended["call"])
        .unwrap_or_else(|| panic!("no hangup record for {ended}"));
    assert_eq!(hangup["by"], "us", "{hangup}");
    assert!(
        hangup["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("number opted out during the call")),
        "{hangup}"
    );

    // Through the command line, which finds the owner: a number not dialled yet.
    let last = number(5);
    let o = crieur(&d, &["optout", "add", &last, "--store", "store"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        text(&o.stdout).contains("opt-out recorded (durable)"),
        "{}",
        text(&o.stdout)
    );
    assert!(text(&o.stderr).contains("going through its control API"));
    let o = crieur(&d, &["optout", "check", &last, "--store", "store"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    let o = crieur(&d, &["optout", "check", &number(4), "--store", "store"]);
    assert_eq!(o.status.code(), Some(1));
    // A bad opt-out list: located, exit 2, nothing added.
    std::fs::write(d.join("list.txt"), format!("{}\nnot-a-number\n", number(3)))
        .unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(&d, &["optout", "import", "list.txt", "--store", "store"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("list.txt:2"),
        "{}",
        text(&o.stderr)
    );
    let o = crieur(&d, &["optout", "check", &number(3), "--store", "store"]);
    assert_eq!(o.status.code(), Some(1));

    // Contacts imported mid-run with `crieur import`: a bad file first (nothing written),
    // then a good one, dialled by the running campaign.
    std::fs::write(
        d.join("more.csv"),
        csv(6, 8) + "k099,0000,,daily 00:00-24:00,2020-01-01T00:00:00Z,,,test,p\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let args = [
        "import",
        "--campaign",
        "c.toml",
        "--store",
        "store",
        "--contacts",
        "more.csv",
    ];
    let o = crieur(&d, &args);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        text(&o.stderr).contains("more.csv:4"),
        "{}",
        text(&o.stderr)
    );
    std::fs::write(d.join("more.csv"), csv(6, 8)).unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(&d, &args);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        text(&o.stdout).contains("2 new contacts"),
        "{}",
        text(&o.stdout)
    );

    // Every contact but the opted-out ones gets its call; then the run is stopped.
    let deadline = Instant::now() + Duration::from_secs(60);
    let wanted = [number(2), number(3), number(4), number(6), number(7)];
    loop {
        let calls = live.calls();
        let ended = |n: &str| {
            calls
                .iter()
                .any(|c| c["type"] == "ended" && c["number"] == n)
        };
        if wanted.iter().all(|n| ended(n)) {
            break;
        }
        assert!(Instant::now() < deadline, "not every call ended: {calls:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The refusal of the opted-out contact is recorded when it comes due (at once: two call
    // slots and calls ending).
    std::thread::sleep(Duration::from_secs(1));
    live.stop();
    let invited: Vec<String> = live
        .records("invite-sent")
        .iter()
        .map(|r| r["number"].as_str().unwrap_or_default().to_owned())
        .collect();
    // The imported contacts were dialled; the opted-out ones never again / never.
    for n in [number(6), number(7), number(2), number(3), number(4)] {
        assert!(invited.contains(&n), "{n} not dialled: {invited:?}");
    }
    assert_eq!(
        invited.iter().filter(|n| **n == first).count(),
        1,
        "{invited:?}"
    );
    assert!(!invited.contains(&last), "{last} dialled after its opt-out");
    // It was due, and refused at the INVITE instant for its opt-out.
    assert!(
        live.records("decision")
            .iter()
            .any(|r| r["number"] == last.as_str()
                && r["opted_out"] == true
                && r["verdict"] == "skip"),
        "no refusal recorded for {last}"
    );
    // Both opt-outs are in the log, with their sources.
    let changes = live.records("opt-out-list-change");
    assert!(changes
        .iter()
        .any(|r| r["source"] == "api: letter" && r["numbers"][0] == first.as_str()));
    assert!(changes
        .iter()
        .any(|r| r["source"] == "api: crieur optout add" && r["numbers"][0] == last.as_str()));
    // The store is free again: the command line works on it directly.
    let o = crieur(&d, &["optout", "check", &first, "--store", "store"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!text(&o.stderr).contains("control API"));
}

#[test]
fn pause_stops_new_invites_within_a_second_and_resume_restarts_them() {
    let mut live = Live::start(200, 5, 20, 1.0);
    live.wait_state("three calls placed", Duration::from_secs(20), |s| {
        s["dialled"].as_u64().unwrap_or(0) >= 3
    });
    let (st, _) = live.post(&format!("/api/campaigns/{}/pause", live.campaign), "", true);
    let paused_at = Utc::now();
    assert_eq!(st, 202);
    live.wait_state("paused", Duration::from_secs(1), |s| s["paused"] == true);
    std::thread::sleep(Duration::from_secs(3));
    let placed: Vec<Value> = live
        .calls()
        .into_iter()
        .filter(|c| c["type"] == "placed")
        .collect();
    let late: Vec<&Value> = placed
        .iter()
        .filter(|c| at(c) > paused_at + chrono::Duration::seconds(1))
        .collect();
    assert!(
        late.is_empty(),
        "INVITEs more than 1 s after the pause: {late:?}"
    );
    let count = placed.len();
    let s = live.state();
    assert_eq!(s["dialled"].as_u64(), Some(count as u64));
    assert!(s["due_now"].as_u64().unwrap_or(0) > 0, "{s}");
    let (st, _) = live.post(
        &format!("/api/campaigns/{}/resume", live.campaign),
        "",
        true,
    );
    assert_eq!(st, 202);
    live.wait_state("dialling again", Duration::from_secs(3), |s| {
        s["paused"] == false && s["dialled"].as_u64().unwrap_or(0) > count as u64
    });
    // The metrics say what the run did.
    let mut r = live
        .agent
        .get(format!("{}/metrics", live.base))
        .call()
        .unwrap_or_else(|e| panic!("{e}"));
    let metrics = r.body_mut().read_to_string().unwrap_or_default();
    for m in [
        "crieur_calls_total{outcome=\"answered-completed\"}",
        "crieur_decisions_total{verdict=\"dial\",reason=\"\"}",
        "crieur_calls_in_progress ",
        "crieur_audit_commit_seconds_bucket",
        "crieur_store_seconds_bucket{op=\"lease\"",
        "crieur_store_seconds_bucket{op=\"attempt\"",
        "crieur_answer_to_first_audio_seconds_bucket",
        "crieur_rtp_send_lateness_seconds_bucket",
        "crieur_api_requests_total{status=\"202\"}",
    ] {
        assert!(metrics.contains(m), "no {m} in:\n{metrics}");
    }
    let out = live.stop();
    assert!(out.contains("stopped through the API"), "{out}");
}

#[test]
fn the_dashboard_shows_a_live_run_and_its_pause_button_stops_dialling() {
    let mut live = Live::start(200, 4, 20, 1.0);
    let mut browser = Browser::start();
    let page = browser.open(&format!("{}/#token={}", live.base, live.token));
    let card = format!("document.getElementById('campaign-{}')", live.campaign);
    let dialled = format!("({card} ? Number({card}.querySelector('.dialled').textContent) : null)");
    // It loads, shows the run's counters, and they change.
    let first = browser.wait_for(&page, &dialled, Duration::from_secs(20), |v| {
        v.as_f64().is_some_and(|n| n >= 1.0)
    });
    let first = first.as_f64().unwrap_or(0.0);
    browser.wait_for(&page, &dialled, Duration::from_secs(20), |v| {
        v.as_f64().is_some_and(|n| n > first)
    });
    let state = format!("{card}.querySelector('.state').textContent");
    assert_eq!(browser.eval(&page, &state), "running");
    // The token came in the URL's fragment; the page dropped it from its address.
    assert_eq!(browser.eval(&page, "location.hash"), "");
    let calls_rows = format!("{card}.querySelectorAll('.calls tbody tr').length");
    browser.wait_for(&page, &calls_rows, Duration::from_secs(5), |v| {
        v.as_u64().is_some_and(|n| n > 0)
    });
    // Pause, by its button.
    browser.eval(&page, &format!("{card}.querySelector('.pause').click()"));
    let clicked = Utc::now();
    browser.wait_for(&page, &state, Duration::from_secs(5), |v| v == "paused");
    std::thread::sleep(Duration::from_secs(3));
    let placed: Vec<Value> = live
        .calls()
        .into_iter()
        .filter(|c| c["type"] == "placed")
        .collect();
    assert!(
        placed
            .iter()
            .all(|c| at(c) <= clicked + chrono::Duration::seconds(1)),
        "dialled after the pause"
    );
    // The page shows what the run says, and it no longer moves.
    let api_dialled = live.state()["dialled"].as_f64();
    browser.wait_for(&page, &dialled, Duration::from_secs(3), |v| {
        v.as_f64() == api_dialled
    });
    assert_eq!(api_dialled, Some(placed.len() as f64));
    // Resume, by its button: dialling again.
    browser.eval(&page, &format!("{card}.querySelector('.resume').click()"));
    let before = api_dialled.unwrap_or(0.0);
    browser.wait_for(&page, &dialled, Duration::from_secs(5), |v| {
        v.as_f64().is_some_and(|n| n > before)
    });
    drop(browser);
    live.stop();
}

/// The event stream's events (`event:` name, `data:` JSON), read until the stream ends (the
/// run's process exits) or 90 s pass. `connected` is told once the stream is open.
fn read_events(
    url: String,
    connected: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<(String, Value)>> {
    use std::io::BufRead;
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(90)))
            .build()
            .into();
        let r = agent.get(&url).call().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        assert!(r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")));
        let _ = connected.send(());
        let mut out = Vec::new();
        let mut name = String::new();
        let reader = std::io::BufReader::new(r.into_body().into_reader());
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                let v: Value = serde_json::from_str(d.trim())
                    .unwrap_or_else(|e| panic!("an event's data is not JSON: {e}: {line}"));
                out.push((std::mem::take(&mut name), v));
            }
        }
        out
    })
}

#[test]
fn the_event_stream_tells_each_call_placed_and_its_outcome_as_recorded() {
    // Eight contacts, 1 s messages; paused at once, so that what the stream must tell is
    // exactly what is dialled after it is open.
    let mut live = Live::start(8, 4, 4, 1.0);
    let (st, _) = live.post(&format!("/api/campaigns/{}/pause", live.campaign), "", true);
    assert_eq!(st, 202);
    live.wait_state(
        "paused, nothing in progress",
        Duration::from_secs(20),
        |s| s["paused"] == true && s["in_progress"] == 0,
    );
    let before: Vec<String> = live
        .calls()
        .into_iter()
        .filter(|c| c["type"] == "placed")
        .filter_map(|c| c["number"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        live.state()["dialled"].as_u64(),
        Some(before.len() as u64),
        "{before:?}"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = read_events(
        format!("{}/api/events?campaign={}", live.base, live.campaign),
        tx,
    );
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("the event stream did not open: {e}"));
    let (st, _) = live.post(
        &format!("/api/campaigns/{}/resume", live.campaign),
        "",
        true,
    );
    assert_eq!(st, 202);
    // Every contact done: the run ends by itself, and the stream with it.
    let (status, out) = live.wait();
    assert!(status.success(), "{out}");
    assert!(out.contains("every contact is done"), "{out}");
    let events = reader
        .join()
        .unwrap_or_else(|_| panic!("the reader panicked"));
    for (name, v) in &events {
        assert_eq!(v["type"].as_str(), Some(name.as_str()), "{v}");
        assert_eq!(v["campaign"].as_str(), Some(live.campaign.as_str()), "{v}");
    }
    let of = |kind: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|(n, _)| n == kind)
            .map(|(_, v)| v)
            .collect()
    };
    assert_eq!(of("resumed").len(), 1, "{events:?}");
    // One `placed` for each contact not dialled before the stream opened, each once.
    let placed = of("placed");
    let mut numbers: Vec<String> = placed
        .iter()
        .filter_map(|v| v["number"].as_str().map(str::to_owned))
        .collect();
    numbers.sort();
    let mut expected: Vec<String> = (0..8).map(number).filter(|n| !before.contains(n)).collect();
    expected.sort();
    assert!(!expected.is_empty());
    assert_eq!(numbers, expected, "{events:?}");
    // Each followed by its `ended`, with the outcome the audit log recorded for that call.
    let recorded: Vec<Value> = live.records("outcome");
    let ended = of("ended");
    assert_eq!(ended.len(), placed.len(), "{events:?}");
    for p in &placed {
        let call = p["call"]
            .as_str()
            .unwrap_or_else(|| panic!("no call in {p}"));
        let pos = |v: &Value| events.iter().position(|(_, e)| e == v);
        let e = ended
            .iter()
            .find(|e| e["call"] == call)
            .unwrap_or_else(|| panic!("no `ended` for {call}: {events:?}"));
        assert!(pos(p) < pos(e), "{call} ended before it was placed");
        assert_eq!(e["number"], p["number"]);
        assert_eq!(e["contact"], p["contact"]);
        let r = recorded
            .iter()
            .find(|r| r["call"] == call)
            .unwrap_or_else(|| panic!("no outcome record for {call}"));
        assert_eq!(e["outcome"], r["outcome"], "{e} against {r}");
        assert_eq!(e["outcome"], "answered-completed", "{e}");
    }
    // The last counters the stream carried never exceed what the run did.
    let progress = of("progress");
    assert!(!progress.is_empty(), "{events:?}");
    for p in &progress {
        assert!(p["counters"]["dialled"].as_u64().unwrap_or(99) <= 8, "{p}");
    }
    live.check_ended(&out);
}

#[test]
fn a_store_served_with_no_run_takes_opt_outs_through_the_command_line_durably_and_audited() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    tone_wav(&d.join("msg.wav"), 1.0);
    tone_wav(&d.join("confirm.wav"), 0.5);
    std::fs::write(
        d.join("c.toml"),
        CampaignToml::new("live", free_port()).build(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("k.csv"), csv(0, 3)).unwrap_or_else(|e| panic!("{e}"));
    let args = ["--campaign", "c.toml", "--store", "store"];
    let o = crieur(d, &[&["import", "--contacts", "k.csv"][..], &args].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = std::fs::File::create(d.join("serve.err")).unwrap_or_else(|e| panic!("{e}"));
    let mut serve = Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args(["serve", "--store", "store", "--campaign", "c.toml"])
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let owner = wait_owner(d, "serve.err");
    let base = format!("http://{}", owner["address"].as_str().unwrap_or_default());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    // Through the command line, which finds the served store's owner.
    let n = number(1);
    let o = crieur(d, &["optout", "add", &n, "--store", "store"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stderr).contains("going through its control API"));
    assert!(text(&o.stdout).contains("opt-out recorded (durable)"));
    let o = crieur(d, &["optout", "check", &n, "--store", "store"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    // The campaign is shown idle; its contacts explained; no run to pause.
    let get = |url: &str| -> (u16, Value) {
        let mut r = agent
            .get(format!("{base}{url}"))
            .call()
            .unwrap_or_else(|e| panic!("{e}"));
        let v = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or(Value::Null);
        (r.status().as_u16(), v)
    };
    let (st, v) = get("/api/campaigns/live");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["running"], false, "{v}");
    let (st, v) = get("/api/campaigns/live/contacts/k001");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["opted_out"], true, "{v}");
    assert_eq!(v["dialable_now"], false, "{v}");
    let token = std::fs::read_to_string(owner["token_file"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let r = agent
        .post(format!("{base}/api/campaigns/live/pause"))
        .header("Authorization", format!("Bearer {}", token.trim()))
        .send("")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 409);
    // A run on the served store is refused, saying by whom.
    let o = crieur(d, &["run", "--campaign", "c.toml", "--store", "store"]);
    assert!(!o.status.success());
    let pid = owner["pid"].as_u64().unwrap_or_default();
    assert!(
        text(&o.stderr).contains(&format!("held by a running crieur (pid {pid}")),
        "{}",
        text(&o.stderr)
    );
    // SIGTERM: a clean stop, the owner file gone.
    let killed = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(s)) = serve.try_wait() {
            break s;
        }
        assert!(Instant::now() < deadline, "crieur serve did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(!d.join("store/owner.json").exists());
    // Durable: the store, opened directly now, has it; audited: the log says so, and verifies.
    let o = crieur(d, &["optout", "check", &n, "--store", "store"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));
    assert!(!text(&o.stderr).contains("control API"));
    let mut changes = Vec::new();
    for e in std::fs::read_dir(d.join("store.audit")).unwrap_or_else(|e| panic!("{e}")) {
        let p = e.unwrap_or_else(|e| panic!("{e}")).path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            for l in std::fs::read_to_string(p).unwrap_or_default().lines() {
                let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
                if v["type"] == "opt-out-list-change" {
                    changes.push(v);
                }
            }
        }
    }
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["action"], "add");
    assert_eq!(changes[0]["numbers"][0].as_str(), Some(n.as_str()));
    // Its two writes overlapped: the record carries the ticket the store kept beside the
    // opt-out until both were durable; nothing was left pending, nothing recovered.
    let ticket = changes[0]["ticket"].as_str().unwrap_or_default().to_owned();
    assert!(!ticket.is_empty(), "{changes:?}");
    assert!(changes[0].get("recovered").is_none(), "{changes:?}");
    {
        use crieur_store::Store;
        let store = crieur_store::SledStore::open(&d.join("store"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        let log = d.join("store.audit").display().to_string();
        let pending = store
            .pending_opt_outs(&log)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(pending.is_empty(), "{pending:?}");
    }
    let o = crieur(d, &["audit", "verify", "store.audit"]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
}

/// The opt-out `body` (JSON for `/api/optouts`, a list for `/api/optouts/import`) POSTed to
/// `url` with `token`: the instant its 200 came back; none if it did not (refused, or the
/// process was killed first: what a client sees of a crash).
fn optout_answered(
    agent: &ureq::Agent,
    base: &str,
    token: &str,
    url: &str,
    body: &str,
) -> Option<DateTime<Utc>> {
    let r = agent
        .post(format!("{base}{url}"))
        .header("Authorization", format!("Bearer {token}"))
        .send(body)
        .ok()?;
    (r.status() == 200).then(Utc::now)
}

/// Contact `i`'s index from its number.
fn index(n: &str) -> usize {
    n.strip_prefix("+33615")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("not a contact's number: {n}"))
}

/// The INVITEs sipp received (its `-trace_msg` trace): each dialled number with the
/// Call-IDs it was dialled under (a retransmission is the same call).
fn invites_received(trace: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut invite: Option<String> = None;
    for l in trace.lines() {
        if l.starts_with("-----") {
            invite = None;
        } else if let Some(uri) = l.strip_prefix("INVITE sip:") {
            invite = uri.split('@').next().map(str::to_owned);
        } else if let (Some(n), Some(id)) = (
            &invite,
            l.strip_prefix("Call-ID:").or_else(|| l.strip_prefix("i:")),
        ) {
            out.entry(n.clone())
                .or_default()
                .insert(id.trim().to_owned());
            invite = None;
        }
    }
    out
}

/// A live run SIGKILLed again and again while opt-outs come in through its API — right after
/// a 200, in the middle of requests, between them — and started again on the same store
/// each time (its start recovers what a crash left between an opt-out's two writes). In the
/// end, from the store (`crieur optout check`), the log (`audit verify`, `audit replay`, its
/// records) and what sipp received: every opt-out answered 200 is in the store and in the
/// log, and the store and the log agree on every number; nothing is left pending; no number
/// was dialled after its opt-out's 200, none more than the one attempt the policy allows,
/// none without its `invite-sent` record.
#[test]
fn opt_outs_answered_200_survive_sigkills_of_the_run_at_any_point() {
    const CONTACTS: usize = 80;
    let mut live = Live::start_with(
        CONTACTS,
        10,
        4,
        1.5,
        "[retry]\nmax_attempts = 1\n",
        &["-trace_msg"],
    );
    let d = live.path().to_path_buf();
    let mut answered: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut asked: BTreeSet<usize> = BTreeSet::new();
    // The numbers to opt out next: the furthest dialled so far (likely in a call now), then
    // those the run is about to dial — the opt-outs race the dialling.
    let mut next = |live: &Live, count: usize| -> Vec<String> {
        let frontier = live
            .records("invite-sent")
            .iter()
            .filter_map(|r| r["number"].as_str().map(index))
            .max()
            .unwrap_or(0);
        let picked: Vec<usize> = (frontier..CONTACTS)
            .chain(0..frontier)
            .filter(|i| !asked.contains(i))
            .take(count)
            .collect();
        asked.extend(&picked);
        picked.into_iter().map(number).collect()
    };
    let one = |n: &str| format!("{{\"number\": \"{n}\", \"source\": \"crash test\"}}");
    for round in 0..6u64 {
        live.wait_state("a call in progress", Duration::from_secs(20), |s| {
            s["in_progress"].as_u64().unwrap_or(0) >= 1
        });
        let (agent, base, token) = (live.agent.clone(), live.base.clone(), live.token.clone());
        match round % 3 {
            // Killed right after a 200 (the second of two, or of an import of two).
            0 => {
                let ns = next(&live, 2);
                if round == 0 {
                    for n in &ns {
                        let t = optout_answered(&agent, &base, &token, "/api/optouts", &one(n));
                        answered.insert(n.clone(), t.unwrap_or_else(|| panic!("{n}: no 200")));
                    }
                } else {
                    let t = optout_answered(
                        &agent,
                        &base,
                        &token,
                        "/api/optouts/import",
                        &format!("{}\n{}\n", ns[0], ns[1]),
                    );
                    let t = t.unwrap_or_else(|| panic!("{ns:?}: no 200"));
                    for n in ns {
                        answered.insert(n, t);
                    }
                }
                live.kill();
            }
            // Killed in the middle of a stream of requests, at a different instant each
            // round: those answered before count, the one cut off may or may not be stored.
            1 => {
                let ns = next(&live, 8);
                let sender = std::thread::spawn(move || {
                    ns.into_iter()
                        .map_while(|n| {
                            optout_answered(&agent, &base, &token, "/api/optouts", &one(&n))
                                .map(|t| (n, t))
                        })
                        .collect::<Vec<_>>()
                });
                std::thread::sleep(Duration::from_millis(20 + 45 * round));
                live.kill();
                let got = sender
                    .join()
                    .unwrap_or_else(|_| panic!("the sender panicked"));
                answered.extend(got);
            }
            // Killed between requests: one answered, then a pause while calls go on.
            _ => {
                let ns = next(&live, 1);
                let t = optout_answered(&agent, &base, &token, "/api/optouts", &one(&ns[0]));
                answered.insert(ns[0].clone(), t.unwrap_or_else(|| panic!("no 200")));
                std::thread::sleep(Duration::from_millis(300));
                live.kill();
            }
        }
        live.run();
    }
    // The last run: one more opt-out, then a clean stop (the log verifies and replays clean).
    live.wait_state("a call in progress", Duration::from_secs(20), |s| {
        s["in_progress"].as_u64().unwrap_or(0) >= 1
    });
    let ns = next(&live, 1);
    let t = optout_answered(
        &live.agent,
        &live.base,
        &live.token,
        "/api/optouts",
        &one(&ns[0]),
    );
    answered.insert(ns[0].clone(), t.unwrap_or_else(|| panic!("no 200")));
    let out = live.stop();
    assert!(answered.len() >= 12, "{answered:?}");

    // The log's opt-outs (none removed here).
    let changes = live.records("opt-out-list-change");
    assert!(changes.iter().all(|c| c["action"] == "add"), "{changes:?}");
    let logged: BTreeSet<String> = changes
        .iter()
        .flat_map(|c| c["numbers"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    // Every contact: in the store exactly when in the log; every 200 in both.
    for i in 0..CONTACTS {
        let n = number(i);
        let o = crieur(&d, &["optout", "check", &n, "--store", "store"]);
        let stored = match o.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("optout check {n}: {}{}", text(&o.stdout), text(&o.stderr)),
        };
        assert_eq!(
            stored,
            logged.contains(&n),
            "{n}: in the store {stored}, in the log {}\n{out}",
            logged.contains(&n)
        );
        if answered.contains_key(&n) {
            assert!(
                stored,
                "{n} was answered 200 but is not in the store\n{out}"
            );
        }
    }
    // Nothing left pending, nothing left to roll forward.
    assert!(!d
        .join("store.audit")
        .join("optouts-unapplied.jsonl")
        .exists());
    {
        use crieur_store::Store;
        let store = crieur_store::SledStore::open(&d.join("store"), false)
            .unwrap_or_else(|e| panic!("{e}"));
        let log = std::path::absolute(d.join("store.audit"))
            .unwrap_or_else(|e| panic!("{e}"))
            .display()
            .to_string();
        let pending = store
            .pending_opt_outs(&log)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(pending.is_empty(), "{pending:?}");
    }
    // What was dialled, by the log and by sipp.
    let mut invites: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    for r in live.records("invite-sent") {
        let sent = r["sent_at"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .unwrap_or_else(|| panic!("no sent_at in {r}"))
            .with_timezone(&Utc);
        let n = r["number"].as_str().unwrap_or_default().to_owned();
        invites.entry(n).or_default().push(sent);
    }
    let received = invites_received(&live._sipp.messages());
    assert!(!received.is_empty(), "sipp's trace has no INVITE");
    for (n, calls) in &received {
        assert!(
            calls.len() <= 1,
            "{n} dialled {} times: {calls:?}",
            calls.len()
        );
        let logged = invites.get(n).map_or(0, Vec::len);
        assert!(
            logged >= calls.len(),
            "{n}: {} INVITE(s) received, {logged} `invite-sent` record(s)",
            calls.len()
        );
    }
    for (n, sent) in &invites {
        assert!(sent.len() <= 1, "{n}: {} `invite-sent` records", sent.len());
        if let Some(ok) = answered.get(n) {
            assert!(
                sent.iter().all(|s| s < ok),
                "{n} dialled at {sent:?}, after its opt-out's 200 at {ok}"
            );
        }
    }
}
