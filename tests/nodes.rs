//! Several nodes, one campaign, one PostgreSQL store: three `crieur run` processes against
//! sipp (the callee network), the first to hold a lease SIGKILLed in the middle of that call, an opt-out recorded by
//! another process mid-run. Then the invariants: no contact dialled twice, no lease left
//! (the dead node's call recovered by a live node as an interrupted attempt), nobody dialled
//! after their opt-out, every chain intact, and the merged replay of every node's log finds
//! no violation (every INVITE paired with its outcome across logs, caps and opt-outs across
//! nodes).
//!
//! Needs PostgreSQL (`.ci/run` starts it; `CRIEUR_SKIP_POSTGRES=1` skips this locally).
#![allow(clippy::disallowed_methods)] // a test bounds its children with the wall clock

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crieur_test_support::pg::PgDb;
use crieur_test_support::scenario::{answer_scenario, BYE_200};
use crieur_test_support::{free_port, text, tone_wav, CampaignToml, Sipp, CONTACTS_HEADER};

fn crieur(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn node(dir: &Path, url: &str, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args([
            "run",
            "--campaign",
            "c.toml",
            "--store",
            url,
            "--audit",
            &format!("{name}.audit"),
            "--node-timeout-secs",
            "15",
            "--max-idle-secs",
            "20",
        ])
        .env("CRIEUR_NODE", name)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for `child` at most until `deadline` (killed and failed after).
fn wait(mut child: Child, name: &str, deadline: Instant) -> Output {
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            panic!(
                "{name} did not end in time:\n{}{}",
                text(&o.stdout),
                text(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for every node (until `deadline`): each must end successfully.
fn wait_all(nodes: Vec<(String, Child)>, deadline: Instant) {
    for (name, child) in nodes {
        let o = wait(child, &name, deadline);
        assert!(
            o.status.success(),
            "{name}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
}

/// One value from the shared store's database (on a thread of its own: the client runs a
/// runtime).
fn query<T: for<'a> postgres::types::FromSql<'a> + Send>(url: &str, sql: &str) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut c =
                postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| panic!("{e}"));
            c.query_one(sql, &[])
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get::<_, T>(0)
        })
        .join()
        .unwrap_or_else(|_| panic!("{sql}"))
    })
}

fn query_i64(url: &str, sql: &str) -> i64 {
    query(url, sql)
}

/// The campaign `nodes` in `dir` (a `message_secs` message, 2 calls/s, 4 at once), `csv`'s
/// contacts imported into the store at `url`, and sipp answering every call for `secs`.
fn campaign(dir: &Path, url: &str, csv: &str, message_secs: f32, secs: u64) -> Sipp {
    tone_wav(&dir.join("msg.wav"), message_secs);
    tone_wav(&dir.join("confirm.wav"), 0.5);
    std::fs::write(dir.join("contacts.csv"), csv).unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let campaign = CampaignToml::new("nodes", port)
        .ring_timeout_secs(15)
        .pacing(2, 4)
        .build();
    std::fs::write(dir.join("c.toml"), campaign).unwrap_or_else(|e| panic!("{e}"));
    let o = crieur(
        dir,
        &[
            "import",
            "--campaign",
            "c.toml",
            "--store",
            url,
            "--audit",
            "control.audit",
            "--contacts",
            "contacts.csv",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    Sipp::scenario(&answer_scenario("0 101", BYE_200))
        .in_dir(dir, "answer")
        .port(port)
        .calls(1000)
        .timeout_secs(secs)
        .start()
}

#[test]
fn three_nodes_one_killed_dial_everyone_once_and_their_logs_replay_clean() {
    let Some(db) = PgDb::new() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // 30 contacts, then 3 whose consent came later (due last): opted out mid-run.
    let mut csv = String::from(CONTACTS_HEADER);
    for i in 0..33 {
        let granted = if i < 30 { "2020-01-01" } else { "2020-06-01" };
        csv.push_str(&format!(
            "n{i:02},+3361500{i:02}00,,daily 00:00-24:00,{granted}T00:00:00Z,,,test,p{i}\n"
        ));
    }
    let url = db.url.as_str();
    let _sipp = campaign(d, url, &csv, 3.0, 180);
    let deadline = Instant::now() + Duration::from_secs(170);
    let mut nodes: Vec<(String, Child)> = (1..=3)
        .map(|k| {
            let name = format!("node-{k}");
            let child = node(d, url, &name);
            (name, child)
        })
        .collect();
    // The first node to hold a lease is killed in the middle of that call — or, as the lease
    // comes before the INVITE, between its dial decision and its INVITE: the merged replay
    // must accept the other node's `interrupted` outcome either way.
    let victim = loop {
        let holder: Option<String> = query(url, "SELECT min(node) FROM crieur_leases");
        if let Some(name) = holder {
            break name;
        }
        assert!(Instant::now() < deadline, "no node placed a call");
        for (name, child) in &mut nodes {
            assert!(
                !matches!(child.try_wait(), Ok(Some(_))),
                "{name} ended before any call"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let at = nodes
        .iter()
        .position(|(n, _)| *n == victim)
        .unwrap_or_else(|| panic!("no node named {victim}"));
    let (_, mut killed) = nodes.remove(at);
    killed.kill().unwrap_or_else(|e| panic!("{e}")); // SIGKILL
    let _ = killed.wait();
    // An opt-out recorded by another process: no node may dial these numbers from now on.
    for i in 30..33 {
        let number = format!("+3361500{i:02}00");
        let o = crieur(
            d,
            &[
                "optout",
                "add",
                &number,
                "--store",
                url,
                "--audit",
                "control.audit",
            ],
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    wait_all(nodes, deadline);
    // No contact dialled twice; nobody after their opt-out; no lease left behind.
    let twice = "SELECT count(*) FROM (SELECT contact FROM crieur_attempts \
                 GROUP BY contact HAVING count(*) > 1) t";
    assert_eq!(query_i64(url, twice), 0, "a contact was dialled twice");
    assert_eq!(query_i64(url, "SELECT count(*) FROM crieur_leases"), 0);
    let opted = "SELECT count(*) FROM crieur_attempts WHERE contact IN ('n30', 'n31', 'n32')";
    assert_eq!(query_i64(url, opted), 0, "dialled after the opt-out");
    // The killed node's call was recovered by a live node: an interrupted attempt that counts.
    let interrupted = "SELECT count(*) FROM crieur_attempts WHERE outcome = 'interrupted'";
    assert!(query_i64(url, interrupted) >= 1);
    // Everyone else was dialled, by the nodes together.
    let dialled = query_i64(url, "SELECT count(DISTINCT contact) FROM crieur_attempts");
    assert_eq!(dialled, 30, "every contact not opted out was dialled");
    // Every chain verifies (the killed node's torn tail, if the kill tore one, set aside first).
    let victim_log = format!("{victim}.audit");
    let o = crieur(d, &["audit", "repair", &victim_log]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let logs = [
        "node-1.audit",
        "node-2.audit",
        "node-3.audit",
        "control.audit",
    ];
    let mut verify = vec!["audit", "verify"];
    verify.extend(logs);
    let o = crieur(d, &verify);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    // Merged, the logs account for every call: each node alone does not (the killed node's INVITE
    // has its outcome in another node's log).
    let mut replay = vec!["audit", "replay", "--format", "json"];
    replay.extend(logs);
    let o = crieur(d, &replay);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    let rep: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rep["violations"].as_array().map(Vec::len), Some(0), "{out}");
    assert_eq!(
        rep["runs"].as_u64(),
        Some(3 + 4),
        "3 runs and 4 control commands"
    );
    // Alone, the killed node's log has an INVITE without its outcome — when the kill came
    // after its INVITE (killed between its decision and its INVITE, the log has no
    // `invite-sent` to pair, and replays clean alone: see docs/audit-format.md).
    let killed_text: String = std::fs::read_dir(d.join(&victim_log))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    let o = crieur(d, &["audit", "replay", &victim_log]);
    assert_eq!(
        o.status.success(),
        !killed_text.contains("invite-sent"),
        "the killed node's log alone replays clean exactly when it has no INVITE"
    );
}

#[test]
fn an_opt_out_through_one_nodes_api_hangs_up_the_call_another_node_has_in_progress() {
    let Some(db) = PgDb::new() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // One contact, a 30 s message: its call is in progress on one node or the other.
    let number = "+33615000100";
    let csv =
        format!("{CONTACTS_HEADER}n00,{number},,daily 00:00-24:00,2020-01-01T00:00:00Z,,,test,p\n");
    let url = db.url.as_str();
    let _sipp = campaign(d, url, &csv, 30.0, 120);
    let deadline = Instant::now() + Duration::from_secs(100);
    let nodes: Vec<(String, Child)> = ["node-a", "node-b"]
        .iter()
        .map(|name| (name.to_string(), node(d, url, name)))
        .collect();
    // Both serve their API; the call is placed by one of them.
    for (name, _) in &nodes {
        let owner = d.join(format!("{name}.audit/owner.json"));
        while !owner.exists() {
            assert!(Instant::now() < deadline, "{name} serves no API");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let holder = loop {
        let holder: Option<String> = query(url, "SELECT min(node) FROM crieur_leases");
        if let Some(name) = holder {
            break name;
        }
        assert!(Instant::now() < deadline, "no node placed the call");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Well into the call (answered, the message playing).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(query_i64(url, "SELECT count(*) FROM crieur_leases"), 1);
    // The opt-out, through the API of the node that does not hold the call.
    let other = if holder == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    let owner: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join(format!("{other}.audit/owner.json")))
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = std::fs::read_to_string(owner["token_file"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut r = agent
        .post(format!(
            "http://{}/api/optouts",
            owner["address"].as_str().unwrap_or_default()
        ))
        .header("Authorization", format!("Bearer {}", token.trim()))
        .header("Content-Type", "application/json")
        .send(format!("{{\"number\": \"{number}\"}}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let answered = Instant::now();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(r.status().as_u16(), 200, "{body}");
    // The call on the other node ends within 2 s: its lease released, its attempt recorded.
    loop {
        let ended = query_i64(
            url,
            "SELECT count(*) FROM crieur_attempts WHERE contact = 'n00'",
        );
        if ended == 1 && query_i64(url, "SELECT count(*) FROM crieur_leases") == 0 {
            break;
        }
        assert!(
            answered.elapsed() < Duration::from_secs(2),
            "{holder}'s call to {number} still in progress 2 s after the opt-out through {other}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Both nodes end (every contact done); the number was never dialled again.
    wait_all(nodes, deadline);
    assert_eq!(
        query_i64(
            url,
            "SELECT count(*) FROM crieur_attempts WHERE contact = 'n00'"
        ),
        1,
        "dialled again after the opt-out"
    );
    let mut verify = vec![
        "audit",
        "verify",
        "node-a.audit",
        "node-b.audit",
        "control.audit",
    ];
    let o = crieur(d, &verify);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    verify[1] = "replay";
    let o = crieur(d, &verify);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
}
