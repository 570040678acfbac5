//! The contract: every path, method and status `docs/openapi.yaml` names is exercised here
//! against the real server (axum on 127.0.0.1, a real store and audit log), and each answer is
//! checked — the status, and what it says or wrote (bad input writes nothing; an opt-out is
//! in the store and the audit log before the answer; an order reaches the run's queue). The
//! test fails if the file names a status nothing here produced, or if a request here gets a
//! status the file does not name.
//!
//! Served as on a non-loopback address, every read but the dashboard and this file needs the
//! token too.
//!
//! The run is a control handle whose receiving end is held but not driven: its queue fills
//! (503), and dropping it ends the run (409). The live behaviour against sipp is in
//! `crates/cli/tests/control.rs`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crieur_control::{feed::Feed, Ctx, Served};
use crieur_runner::Control;
use crieur_store::{SledStore, Store};
use crieur_test_support::{CampaignToml, Scratch, CONTACTS_HEADER};
use serde_json::Value;

/// (method, path template, status) of each operation and answer in the OpenAPI file.
fn documented() -> BTreeSet<(String, String, u16)> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut out = BTreeSet::new();
    let (mut in_paths, mut path, mut method) = (false, String::new(), String::new());
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
            path = format!("/{p}");
        } else if let Some(m) = line
            .strip_prefix("    ")
            .and_then(|m| m.strip_suffix(':'))
            .filter(|m| ["get", "post", "delete", "put", "patch"].contains(m))
        {
            method = m.to_ascii_uppercase();
        } else if let Some(code) = line
            .strip_prefix("        \"")
            .and_then(|c| c.strip_suffix("\":"))
            .and_then(|c| c.parse::<u16>().ok())
        {
            out.insert((method.clone(), path.clone(), code));
        }
    }
    assert!(out.len() > 40, "the OpenAPI file was not read: {out:?}");
    out
}

struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
    seen: Mutex<BTreeSet<(String, String, u16)>>,
    rt: tokio::runtime::Runtime,
}

/// What an answer was.
struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

enum Auth {
    Token,
    None,
    Wrong,
}

impl Api {
    /// `method` on `url` (documented as `template`), with `auth`, `body` of `ctype`.
    fn call(
        &self,
        method: &str,
        template: &str,
        url: &str,
        auth: Auth,
        body: Option<(&str, &[u8])>,
    ) -> Answer {
        let full = format!("{}{url}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&full);
        match auth {
            Auth::Token => req = req.header("Authorization", format!("Bearer {}", self.token)),
            Auth::Wrong => req = req.header("Authorization", "Bearer wrong"),
            Auth::None => {}
        }
        if let Some((ctype, _)) = body {
            req = req.header("Content-Type", ctype);
        }
        let data = body.map_or_else(Vec::new, |(_, b)| b.to_vec());
        let req = req.body(data).unwrap_or_else(|e| panic!("{e}"));
        let mut r = self
            .agent
            .run(req)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = if headers
            .get("content-type")
            .is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"))
        {
            String::new()
        } else {
            r.body_mut().read_to_string().unwrap_or_default()
        };
        self.seen.lock().unwrap_or_else(|e| panic!("{e}")).insert((
            method.to_owned(),
            template.to_owned(),
            status,
        ));
        Answer {
            status,
            headers,
            body,
        }
    }
}

fn contacts_csv(rows: &[(&str, &str)]) -> String {
    let mut csv = CONTACTS_HEADER.to_owned();
    for (id, phone) in rows {
        csv.push_str(&format!(
            "{id},{phone},,daily 00:00-24:00,2020-01-01T00:00:00Z,,,test,p\n"
        ));
    }
    csv
}

/// A scratch directory with recordings and campaign `t`, loaded, and its sled store holding
/// `rows` (id, number) as contacts.
fn campaign_and_store(
    rows: &[(&str, &str)],
) -> (Scratch, crieur_config::campaign::Campaign, Arc<SledStore>) {
    let dir = Scratch::new();
    dir.recordings(1.0);
    dir.write("c.toml", CampaignToml::new("t", 5060).build());
    let campaign =
        crieur_config::campaign::load(&dir.path().join("c.toml")).unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(
        SledStore::open(&dir.path().join("store"), true).unwrap_or_else(|e| panic!("{e}")),
    );
    let loaded = crieur_config::contacts::parse(
        Path::new("k.csv"),
        &Default::default(),
        contacts_csv(rows).as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    store
        .upsert_contacts(&campaign.id, &loaded.contacts)
        .unwrap_or_else(|e| panic!("{e}"));
    (dir, campaign, store)
}

#[test]
#[allow(clippy::too_many_lines)]
fn every_endpoint_and_error_of_the_openapi_file_is_exercised() {
    let (dir, campaign, store) = campaign_and_store(&[("c1", "+33612345671")]);
    let id = campaign.id.clone();
    let audit = dir.path().join("audit");
    let log = Arc::new(Mutex::new(
        crieur_audit::AuditLog::open(&audit, Default::default()).unwrap_or_else(|e| panic!("{e}")),
    ));
    // A queue of one order, never read: the second order finds it full.
    let (handle, rx) = crieur_runner::control(1);
    let rx = Mutex::new(Some(rx));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let served_on = |store: Arc<SledStore>, listen: std::net::SocketAddr| {
        Ctx::new(
            store,
            log.clone(),
            vec![Served {
                campaign: Arc::new(campaign.clone()),
                handle: Some(handle.clone()),
                feed: Arc::new(Feed::new(&id, None)),
                snapshot: Mutex::new(None),
            }],
            "secret-token",
            listen,
        )
    };
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let served = |store: Arc<SledStore>| served_on(store, loopback);
    let ctx = Arc::new(served(store.clone()));
    ctx.refresh();
    // The same API with no write slot: every write is refused (503), nothing written.
    let full = Arc::new(served(store.clone()).with_write_slots(0));
    // The same API as served on every address: every read needs the token too.
    let open = Arc::new(served_on(
        store.clone(),
        std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
    ));
    let (base, base_full, base_open) = rt.block_on(async {
        let mut bases = Vec::new();
        for c in [ctx.clone(), full.clone(), open.clone()] {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            bases.push(format!(
                "http://{}",
                l.local_addr().unwrap_or_else(|e| panic!("{e}"))
            ));
            tokio::spawn(crieur_control::api::serve(l, c));
        }
        (bases[0].clone(), bases[1].clone(), bases[2].clone())
    });
    let api = Api {
        base,
        token: "secret-token".into(),
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(20)))
            .build()
            .into(),
        seen: Mutex::default(),
        rt,
    };
    let busy = Api {
        base: base_full,
        token: api.token.clone(),
        agent: api.agent.clone(),
        seen: Mutex::default(),
        rt: tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}")),
    };
    let c = format!("/api/campaigns/{id}");
    let everywhere = Api {
        base: base_open,
        token: api.token.clone(),
        agent: api.agent.clone(),
        seen: Mutex::default(),
        rt: tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}")),
    };
    for (t, u) in [
        ("/metrics", "/metrics".to_owned()),
        ("/api/campaigns", "/api/campaigns".to_owned()),
        ("/api/campaigns/{id}", c.clone()),
        (
            "/api/optouts/{number}",
            "/api/optouts/+33612345671".to_owned(),
        ),
    ] {
        assert_eq!(
            everywhere.call("GET", t, &u, Auth::None, None).status,
            401,
            "{u}"
        );
        assert_eq!(
            everywhere.call("GET", t, &u, Auth::Token, None).status,
            200,
            "{u}"
        );
    }
    for u in ["/", "/dashboard.js", "/openapi.yaml"] {
        assert_eq!(
            everywhere.call("GET", u, u, Auth::None, None).status,
            200,
            "{u}"
        );
    }

    // Static pages, open on loopback and elsewhere.
    let r = api.call("GET", "/", "/", Auth::None, None);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("crieur — live"));
    assert!(r.headers["content-security-policy"]
        .to_str()
        .unwrap_or("")
        .contains("script-src 'self'"));
    let r = api.call("GET", "/dashboard.js", "/dashboard.js", Auth::None, None);
    assert!(r.status == 200 && r.body.contains("/api/campaigns"));
    let r = api.call("GET", "/openapi.yaml", "/openapi.yaml", Auth::None, None);
    assert!(r.status == 200 && r.body.starts_with("openapi: 3"));

    // Reads on loopback need no token; a wrong token is still refused.
    let r = api.call("GET", "/api/campaigns", "/api/campaigns", Auth::None, None);
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list["campaigns"][0]["id"], id.as_str());
    assert_eq!(list["campaigns"][0]["never_callable"], 0);
    let r = api.call("GET", "/api/campaigns", "/api/campaigns", Auth::Wrong, None);
    assert_eq!(r.status, 401);
    assert!(r.headers.contains_key("www-authenticate"));
    for (t, u) in [
        ("/metrics", "/metrics".to_owned()),
        ("/api/campaigns/{id}", c.clone()),
        ("/api/campaigns/{id}/calls", format!("{c}/calls")),
        (
            "/api/campaigns/{id}/contacts/{contact}",
            format!("{c}/contacts/c1"),
        ),
        ("/api/events", "/api/events".to_owned()),
        (
            "/api/optouts/{number}",
            "/api/optouts/+33612345671".to_owned(),
        ),
    ] {
        assert_eq!(api.call("GET", t, &u, Auth::Wrong, None).status, 401, "{u}");
    }
    // Every change needs the token.
    for (m, t, u) in [
        ("POST", "/api/campaigns/{id}/pause", format!("{c}/pause")),
        ("POST", "/api/campaigns/{id}/resume", format!("{c}/resume")),
        ("POST", "/api/campaigns/{id}/stop", format!("{c}/stop")),
        (
            "POST",
            "/api/campaigns/{id}/contacts",
            format!("{c}/contacts"),
        ),
        ("POST", "/api/optouts", "/api/optouts".to_owned()),
        (
            "POST",
            "/api/optouts/import",
            "/api/optouts/import".to_owned(),
        ),
        (
            "DELETE",
            "/api/optouts/{number}",
            "/api/optouts/+33612345671".to_owned(),
        ),
    ] {
        assert_eq!(api.call(m, t, &u, Auth::None, None).status, 401, "{m} {u}");
        assert_eq!(api.call(m, t, &u, Auth::Wrong, None).status, 401, "{m} {u}");
    }

    // Unknown campaign: 404 everywhere.
    for (m, t, u) in [
        (
            "GET",
            "/api/campaigns/{id}",
            "/api/campaigns/nope".to_owned(),
        ),
        (
            "GET",
            "/api/campaigns/{id}/calls",
            "/api/campaigns/nope/calls".to_owned(),
        ),
        (
            "GET",
            "/api/campaigns/{id}/contacts/{contact}",
            "/api/campaigns/nope/contacts/c1".to_owned(),
        ),
        (
            "POST",
            "/api/campaigns/{id}/pause",
            "/api/campaigns/nope/pause".to_owned(),
        ),
        (
            "POST",
            "/api/campaigns/{id}/resume",
            "/api/campaigns/nope/resume".to_owned(),
        ),
        (
            "POST",
            "/api/campaigns/{id}/stop",
            "/api/campaigns/nope/stop".to_owned(),
        ),
        (
            "POST",
            "/api/campaigns/{id}/contacts",
            "/api/campaigns/nope/contacts".to_owned(),
        ),
        ("GET", "/api/events", "/api/events?campaign=nope".to_owned()),
    ] {
        let r = api.call(m, t, &u, Auth::Token, Some(("text/csv", b"")));
        assert_eq!(r.status, 404, "{m} {u}: {}", r.body);
        assert!(r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("nope")));
    }
    // An unknown contact of a known campaign.
    let r = api.call(
        "GET",
        "/api/campaigns/{id}/contacts/{contact}",
        &format!("{c}/contacts/nobody"),
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 404);

    // The live state, the calls page, a contact with its explanation, metrics, events.
    let r = api.call("GET", "/api/campaigns/{id}", &c, Auth::Token, None);
    assert_eq!(r.status, 200);
    let s = r.json();
    assert_eq!(s["running"], true);
    assert_eq!(s["breaker"], "closed");
    let r = api.call(
        "GET",
        "/api/campaigns/{id}/calls",
        &format!("{c}/calls?since=0"),
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["next"], 0);
    let r = api.call(
        "GET",
        "/api/campaigns/{id}/calls",
        &format!("{c}/calls?since=soon"),
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 400);
    let r = api.call(
        "GET",
        "/api/campaigns/{id}/contacts/{contact}",
        &format!("{c}/contacts/c1"),
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let k = r.json();
    assert_eq!(k["number"], "+33612345671");
    assert_eq!(k["opted_out"], false);
    assert_eq!(k["dialable_now"], true);
    assert_eq!(k["explain"]["contact"], "c1");
    assert_eq!(k["explain"]["verdict"], "dial", "{k}");
    let r = api.call("GET", "/metrics", "/metrics", Auth::Token, None);
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/plain"));
    let r = api.call(
        "GET",
        "/api/events",
        &format!("/api/events?campaign={id}"),
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 200);

    // Opt-outs: malformed JSON, a bad number, an unknown field → 400, nothing written.
    for body in [
        &b"{\"number\": "[..],
        b"{\"number\": \"06 12\"}",
        b"{\"numbr\": \"+33612345672\"}",
        b"{}",
    ] {
        let r = api.call(
            "POST",
            "/api/optouts",
            "/api/optouts",
            Auth::Token,
            Some(("application/json", body)),
        );
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
    }
    let r = api.call(
        "POST",
        "/api/optouts",
        "/api/optouts",
        Auth::Token,
        Some(("application/json", b"{\"number\": \"0612\"}")),
    );
    let e = r.json();
    assert_eq!(e["errors"][0]["value"], "0612", "{e}");
    assert!(e["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .starts_with("expected an E.164 number"));
    let r = api.call(
        "GET",
        "/api/optouts/{number}",
        "/api/optouts/0612",
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 400);
    let r = api.call(
        "DELETE",
        "/api/optouts/{number}",
        "/api/optouts/0612",
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 400);
    // A list with one bad line: 400 located at that line, and its good number not added.
    let r = api.call(
        "POST",
        "/api/optouts/import",
        "/api/optouts/import?file=list.txt",
        Auth::Token,
        Some(("text/plain", b"+33612345673\nnot-a-number\n")),
    );
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["errors"][0]["file"], "list.txt");
    assert_eq!(e["errors"][0]["line"], 2);
    let listed = |n: &str| {
        store
            .is_opted_out(&n.parse().unwrap_or_else(|e| panic!("{e:?}")))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert!(!listed("+33612345673"));

    // Added: durable in the store and the audit log when the answer comes.
    let r = api.call(
        "POST",
        "/api/optouts",
        "/api/optouts",
        Auth::Token,
        Some((
            "application/json",
            b"{\"number\": \"+33612345671\", \"source\": \"letter\"}",
        )),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["new"], true);
    assert!(listed("+33612345671"));
    let logged = || {
        crieur_audit::read_all(&audit)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(_, _, e)| serde_json::to_value(&e.record).unwrap_or_default())
            .collect::<Vec<Value>>()
    };
    assert!(logged().iter().any(|r| r["type"] == "opt-out-list-change"
        && r["action"] == "add"
        && r["source"] == "api: letter"
        && r["numbers"][0] == "+33612345671"));
    let r = api.call(
        "GET",
        "/api/optouts/{number}",
        "/api/optouts/+33612345671",
        Auth::None,
        None,
    );
    assert_eq!(r.json()["opted_out"], true);
    let r = api.call(
        "GET",
        "/api/campaigns/{id}/contacts/{contact}",
        &format!("{c}/contacts/c1"),
        Auth::Token,
        None,
    );
    let k = r.json();
    assert_eq!(
        (k["opted_out"].clone(), k["dialable_now"].clone()),
        (Value::Bool(true), Value::Bool(false))
    );
    assert_eq!(k["explain"]["verdict"], "skip", "{k}");
    assert!(
        k["explain"]["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["code"] == "opted-out")),
        "{k}"
    );
    let r = api.call(
        "POST",
        "/api/optouts/import",
        "/api/optouts/import",
        Auth::Token,
        Some((
            "text/plain",
            b"# from the national list\n+33612345673\n+33612345671\n",
        )),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        (r.json()["numbers"].clone(), r.json()["new"].clone()),
        (2.into(), 1.into())
    );
    let r = api.call(
        "DELETE",
        "/api/optouts/{number}",
        "/api/optouts/+33612345673",
        Auth::Token,
        None,
    );
    assert_eq!(r.json()["removed"], true);
    assert!(!listed("+33612345673"));
    assert!(logged()
        .iter()
        .any(|r| r["type"] == "opt-out-list-change" && r["action"] == "remove"));

    // Contacts: a bad file → 400 with every problem located, nothing written.
    let bad = contacts_csv(&[("c2", "+33612345672"), ("c3", "not-a-number")])
        + "c4,+33612345674,,daily 25:00-26:00,2020-01-01T00:00:00Z,,,test,p\n";
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/contacts",
        &format!("{c}/contacts?file=more.csv"),
        Auth::Token,
        Some(("text/csv", bad.as_bytes())),
    );
    assert_eq!(r.status, 400);
    let e = r.json();
    let lines: Vec<u64> = e["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["line"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(lines, [3, 4], "{e}");
    assert_eq!(e["errors"][0]["file"], "more.csv");
    assert!(store
        .contact(
            &id,
            &crieur_scheduler::ContactId::new("c2").unwrap_or_else(|e| panic!("{e}"))
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .is_none());
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/contacts",
        &format!("{c}/contacts?delimiter=%C3%A9"),
        Auth::Token,
        Some(("text/csv", b"")),
    );
    assert_eq!(r.status, 400);
    // A good file: written, audited, and handed to the run (its one queue slot).
    let good = contacts_csv(&[("c2", "+33612345672"), ("c5", "+33612345675")]);
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/contacts",
        &format!("{c}/contacts?file=more.csv"),
        Auth::Token,
        Some(("text/csv", good.as_bytes())),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["created"], 2);
    assert_eq!(
        store.contacts(&id).unwrap_or_else(|e| panic!("{e}")).len(),
        3
    );
    assert!(logged()
        .iter()
        .any(|r| r["type"] == "import" && r["file"] == "more.csv" && r["created"] == 2));
    // The run's queue now holds the import: an order finds it full, and so does another
    // import (nothing written).
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/pause",
        &format!("{c}/pause"),
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "1");
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/resume",
        &format!("{c}/resume"),
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 503);
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/stop",
        &format!("{c}/stop"),
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 503);
    let more = contacts_csv(&[("c6", "+33612345676")]);
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/contacts",
        &format!("{c}/contacts"),
        Auth::Token,
        Some(("text/csv", more.as_bytes())),
    );
    assert_eq!(r.status, 503);
    assert_eq!(
        store.contacts(&id).unwrap_or_else(|e| panic!("{e}")).len(),
        3
    );
    let order = |rx: &Mutex<Option<crieur_runner::ControlReceiver>>| -> Option<Control> {
        let mut g = rx.lock().unwrap_or_else(|e| panic!("{e}"));
        g.as_mut().and_then(|r| r.try_recv())
    };
    match order(&rx) {
        Some(Control::AddContacts(cs)) => {
            assert_eq!(
                cs.iter().map(|c| c.id().to_string()).collect::<Vec<_>>(),
                ["c2", "c5"]
            );
        }
        o => panic!("{o:?}"),
    }
    // Room again: the orders go through, in order.
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/pause",
        &format!("{c}/pause"),
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 202);
    assert_eq!(order(&rx), Some(Control::Pause));
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/resume",
        &format!("{c}/resume"),
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 202);
    assert_eq!(order(&rx), Some(Control::Resume));
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/stop",
        &format!("{c}/stop"),
        Auth::Token,
        Some(("application/json", b"{\"drain\": 1}")),
    );
    assert_eq!(r.status, 400, "an unknown field");
    let r = api.call(
        "POST",
        "/api/campaigns/{id}/stop",
        &format!("{c}/stop"),
        Auth::Token,
        Some((
            "application/json",
            b"{\"drain_secs\": 5, \"reason\": \"maintenance\"}",
        )),
    );
    assert_eq!(r.status, 202);
    assert_eq!(
        order(&rx),
        Some(Control::Stop {
            reason: "stopped through the API: maintenance".into(),
            drain: Some(std::time::Duration::from_secs(5)),
        })
    );

    // No write slot: 503 and nothing written.
    let r = busy.call(
        "POST",
        "/api/optouts",
        "/api/optouts",
        Auth::Token,
        Some(("application/json", b"{\"number\": \"+33612345677\"}")),
    );
    assert_eq!(r.status, 503);
    let r = busy.call(
        "POST",
        "/api/optouts/import",
        "/api/optouts/import",
        Auth::Token,
        Some(("text/plain", b"+33612345677\n")),
    );
    assert_eq!(r.status, 503);
    let r = busy.call(
        "DELETE",
        "/api/optouts/{number}",
        "/api/optouts/+33612345671",
        Auth::Token,
        None,
    );
    assert_eq!(r.status, 503);
    assert!(!listed("+33612345677") && listed("+33612345671"));

    // The run ended: orders are refused with 409.
    drop(rx.lock().unwrap_or_else(|e| panic!("{e}")).take());
    for (t, u) in [
        ("/api/campaigns/{id}/pause", format!("{c}/pause")),
        ("/api/campaigns/{id}/resume", format!("{c}/resume")),
        ("/api/campaigns/{id}/stop", format!("{c}/stop")),
    ] {
        assert_eq!(
            api.call("POST", t, &u, Auth::Token, None).status,
            409,
            "{u}"
        );
    }
    let r = api.call("GET", "/api/campaigns/{id}", &c, Auth::Token, None);
    assert_eq!(r.json()["running"], false);

    // What was exercised is exactly what is documented.
    let mut seen = api.seen.into_inner().unwrap_or_else(|e| panic!("{e}"));
    seen.extend(busy.seen.into_inner().unwrap_or_else(|e| panic!("{e}")));
    seen.extend(
        everywhere
            .seen
            .into_inner()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let doc = documented();
    let missing: Vec<_> = doc.difference(&seen).collect();
    let undocumented: Vec<_> = seen.difference(&doc).collect();
    assert!(
        missing.is_empty(),
        "documented but never exercised: {missing:?}"
    );
    assert!(
        undocumented.is_empty(),
        "answered but not documented: {undocumented:?}"
    );
    drop(api.rt);
}

/// The counts over every contact (never callable, opted out), on either backend: made by a
/// scan of the store in batches, whatever the campaign's size, served with the instant they
/// are as of, and following the opt-out list at the next count.
fn the_counts_over_every_contact_follow_the_store(store: Arc<dyn Store + Send + Sync>) {
    let dir = Scratch::new();
    dir.recordings(1.0);
    dir.write("c.toml", CampaignToml::new("t", 5060).build());
    let campaign =
        crieur_config::campaign::load(&dir.path().join("c.toml")).unwrap_or_else(|e| panic!("{e}"));
    let id = campaign.id.clone();
    // More than a batch of the count: 10 % of them with a consent that ended in 2021 (never
    // callable again), and the numbers of 3 % put on the opt-out list (a number two
    // contacts share counts for both).
    let n = crieur_control::api::COUNT_BATCH + 2_345;
    let phone = |k: usize| format!("+336{:08}", k % (n - 100));
    let mut csv = CONTACTS_HEADER.to_owned();
    for k in 0..n {
        let expires = if k % 10 == 0 {
            "2021-01-01T00:00:00Z"
        } else {
            ""
        };
        csv.push_str(&format!(
            "c{k},{},,daily 00:00-24:00,2020-01-01T00:00:00Z,{expires},,test,p\n",
            phone(k)
        ));
    }
    let loaded =
        crieur_config::contacts::parse(Path::new("k.csv"), &Default::default(), csv.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    store
        .upsert_contacts(&id, &loaded.contacts)
        .unwrap_or_else(|e| panic!("{e}"));
    let opted: Vec<crieur_scheduler::E164> = (0..n)
        .step_by(33)
        .map(|k| phone(k).parse().unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let at = chrono::DateTime::UNIX_EPOCH;
    store
        .add_opt_outs(&opted, at, "test")
        .unwrap_or_else(|e| panic!("{e}"));
    let expected_opted = |list: &[crieur_scheduler::E164]| {
        (0..n)
            .filter(|k| list.iter().any(|o| o.to_string() == phone(*k)))
            .count()
    };
    let ctx = served_with_no_run(&dir, store.clone(), &campaign);
    let (rt, base) = serve(ctx.clone());
    let state = || get_json(&format!("{base}/api/campaigns/{id}"));
    let s = state();
    assert!(
        s["never_callable"].is_null() && s["counted_at"].is_null(),
        "{s}"
    );
    // Counted in the background (an hour apart but for writes), as of when it started.
    #[allow(clippy::disallowed_methods)] // the test's own instant, to compare with the count's
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    rt.spawn(crieur_control::api::refresh_loop(
        ctx.clone(),
        std::time::Duration::from_secs(3_600),
    ));
    // Bounded by a count of polls (30 s), not the clock.
    let wait_for = |what: &str, ok: &dyn Fn(&Value) -> bool| -> Value {
        for _ in 0..600 {
            let s = state();
            if ok(&s) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{what}: {}", state());
    };
    let s = wait_for("counted", &|s| !s["counted_at"].is_null());
    assert_eq!(
        s["never_callable"].as_u64(),
        Some(n.div_ceil(10) as u64),
        "{s}"
    );
    let first = expected_opted(&opted);
    assert_eq!(s["opted_out_contacts"].as_u64(), Some(first as u64), "{s}");
    let counted: chrono::DateTime<chrono::Utc> = s["counted_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{s}"));
    assert!(counted >= before, "{s}");
    // An opt-out through the API (a number two contacts share): counted again at once, not
    // an hour later; and its removal.
    let bearer = ("Authorization", "Bearer secret-token");
    let added = ureq::post(format!("{base}/api/optouts"))
        .header(bearer.0, bearer.1)
        .header("Content-Type", "application/json")
        .send(r#"{"number": "+33600000001"}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(added.status(), 200);
    let s = wait_for("the opt-out counted", &|s| {
        s["opted_out_contacts"].as_u64() == Some(first as u64 + 2)
    });
    assert!(!s["counted_at"].is_null(), "{s}");
    let removed = ureq::delete(format!("{base}/api/optouts/{}", opted[0]))
        .header(bearer.0, bearer.1)
        .call()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(removed.status(), 200);
    wait_for("the removal counted", &|s| {
        s["opted_out_contacts"].as_u64() == Some(expected_opted(&opted[1..]) as u64 + 2)
    });
    drop(rt);
}

#[test]
fn the_counts_over_every_contact_follow_the_store_sled() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    the_counts_over_every_contact_follow_the_store(Arc::new(
        SledStore::open(dir.path(), true).unwrap_or_else(|e| panic!("{e}")),
    ));
}

#[test]
fn the_counts_over_every_contact_follow_the_store_postgres() {
    let Some(db) = crieur_test_support::pg::PgDb::new() else {
        return;
    };
    the_counts_over_every_contact_follow_the_store(Arc::new(
        crieur_store::PgStore::open(&db.url, true).unwrap_or_else(|e| panic!("{e}")),
    ));
}

/// The API of `store` (an audit log in `dir`) serving `campaign` with no run, as `crieur
/// serve` does, on loopback with the token `secret-token`.
fn served_with_no_run(
    dir: &Scratch,
    store: Arc<dyn Store + Send + Sync>,
    campaign: &crieur_config::campaign::Campaign,
) -> Arc<Ctx> {
    let log = Arc::new(Mutex::new(
        crieur_audit::AuditLog::open(&dir.path().join("audit"), Default::default())
            .unwrap_or_else(|e| panic!("{e}")),
    ));
    Arc::new(Ctx::new(
        store,
        log,
        vec![Served {
            campaign: Arc::new(campaign.clone()),
            handle: None,
            feed: Arc::new(Feed::new(&campaign.id, None)),
            snapshot: Mutex::new(None),
        }],
        "secret-token",
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    ))
}

/// `ctx`'s API on 127.0.0.1 (a port of its own), on a runtime of its own: the runtime and
/// the base URL.
fn serve(ctx: Arc<Ctx>) -> (tokio::runtime::Runtime, String) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let base = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let base = format!(
            "http://{}",
            l.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        tokio::spawn(crieur_control::api::serve(l, ctx));
        base
    });
    (rt, base)
}

fn get_json(url: &str) -> Value {
    let mut r = ureq::get(url).call().unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Served with no run (`crieur serve`) and before the first count over every contact: the
/// live state's `contacts` and `remaining`
/// are the store's counters, as `crieur status` prints them, and follow its changes; what
/// only a count over every contact gives stays `null`.
#[test]
fn without_a_run_the_state_counts_come_from_the_stores_counters() {
    let (dir, campaign, store) = campaign_and_store(&[
        ("c1", "+33612345671"),
        ("c2", "+33612345672"),
        ("c3", "+33612345673"),
    ]);
    let id = campaign.id.clone();
    let ctx = served_with_no_run(&dir, store.clone(), &campaign);
    let (rt, base) = serve(ctx);
    let state = || get_json(&format!("{base}/api/campaigns/{id}"));
    let s = state();
    assert_eq!(
        (s["contacts"].as_u64(), s["remaining"].as_u64()),
        (Some(3), Some(3)),
        "{s}"
    );
    assert!(
        s["never_callable"].is_null() && s["opted_out_contacts"].is_null(),
        "{s}"
    );
    let listed = || get_json(&format!("{base}/api/campaigns"));
    // One contact done (nothing left to do), one more imported: the counters move with the
    // store's writes, not with a count made once.
    let c1 = crieur_scheduler::ContactId::new("c1").unwrap_or_else(|e| panic!("{e}"));
    store
        .set_due(&id, &[(c1, None)])
        .unwrap_or_else(|e| panic!("{e}"));
    let more = crieur_config::contacts::parse(
        Path::new("k2.csv"),
        &Default::default(),
        contacts_csv(&[("c4", "+33612345674")]).as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    store
        .upsert_contacts(&id, &more.contacts)
        .unwrap_or_else(|e| panic!("{e}"));
    let s = state();
    assert_eq!(
        (s["contacts"].as_u64(), s["remaining"].as_u64()),
        (Some(4), Some(3)),
        "{s}"
    );
    let l = listed();
    assert_eq!(l["campaigns"][0]["contacts"].as_u64(), Some(4), "{l}");
    assert_eq!(l["campaigns"][0]["remaining"].as_u64(), Some(3), "{l}");
    let p = store.progress(&id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((p.remaining, p.done), (3, 1));
    drop(rt);
}
