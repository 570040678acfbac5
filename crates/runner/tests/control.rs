//! The run under control, against a real sipp UAS on 127.0.0.1: a pause sent before the run
//! starts holds every due contact (the loop turns, nothing is dialled); a resume dials; a stop
//! lets the call in progress end on its own (drained, not hung up) and dials nobody else; the
//! events say so in order; the log verifies and replays clean and no lease is left.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crieur_runner::{control, Control, Event, RunOptions, Scope, Setup};
use crieur_store::{SledStore, Store};
use crieur_test_support::scenario::{answer_scenario, BYE_200};
use crieur_test_support::{free_port, CampaignToml, Scratch, Sipp, CONTACTS_HEADER};

fn setup(dir: &Scratch, port: u16) -> Setup {
    dir.recordings(3.0);
    // One call at a time: while the first is in progress the others wait their turn.
    dir.write("c.toml", CampaignToml::new("t", port).pacing(5, 1).build());
    let mut csv = CONTACTS_HEADER.to_owned();
    for k in 1..=3 {
        csv.push_str(&format!(
            "c{k},+3361234567{k},,daily 00:00-24:00,2020-01-01T00:00:00Z,,,test,p\n"
        ));
    }
    dir.write("k.csv", csv);
    let path = dir.path().join("c.toml");
    let campaign = crieur_config::campaign::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let contacts = crieur_config::contacts::load(&dir.path().join("k.csv"), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let store = SledStore::open(&dir.path().join("store"), true).unwrap_or_else(|e| panic!("{e}"));
    store
        .upsert_contacts(&campaign.id, &contacts.contacts)
        .unwrap_or_else(|e| panic!("{e}"));
    let audit_dir = dir.path().join("audit");
    let log = crieur_audit::AuditLog::open(&audit_dir, Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    Setup {
        header: crieur_runner::header::header("run", Some((&campaign, &path)))
            .unwrap_or_else(|e| panic!("{e}")),
        prepared: crieur_runner::prepare(&campaign).unwrap_or_else(|e| panic!("{e}")),
        campaign: Arc::new(campaign),
        store: Arc::new(store),
        log: Arc::new(Mutex::new(log)),
        audit_dir,
    }
}

fn check_log(dir: &Path) {
    let v = crieur_audit::verify(&dir.join("audit"), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(v.first_break.is_none(), "{:?}", v.first_break);
    let r = crieur_audit::replay(&dir.join("audit")).unwrap_or_else(|e| panic!("{e}"));
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    let store = SledStore::open(&dir.join("store"), false).unwrap_or_else(|e| panic!("{e}"));
    assert!(store.leases().unwrap_or_else(|e| panic!("{e}")).is_empty());
}

#[test]
fn pause_holds_resume_dials_stop_drains() {
    let port = free_port();
    let dir = Scratch::new();
    let setup = setup(&dir, port);
    let _sipp = Sipp::scenario(&answer_scenario("0 101", BYE_200))
        .port(port)
        .timeout_secs(60)
        .start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (handle, rx) = control(8);
    assert!(
        handle.try_send(Control::Pause),
        "the channel takes an order before the run"
    );
    let seen: Arc<Mutex<Vec<(tokio::time::Instant, Event)>>> = Arc::default();
    let summary = rt.block_on(async {
        let mut events = handle.subscribe();
        let log = seen.clone();
        let run = tokio::spawn(async move {
            let mut observer = move |e: &Event| {
                log.lock()
                    .unwrap_or_else(|e| panic!("{e}"))
                    .push((tokio::time::Instant::now(), e.clone()));
            };
            crieur_runner::run(
                setup,
                RunOptions {
                    drain: Duration::from_secs(30),
                    until: None,
                    max_idle: None,
                    scope: Scope::Campaign,
                    node_timeout: crieur_runner::NODE_TIMEOUT,
                },
                rx,
                &mut observer,
            )
            .await
        });
        // Paused from the start: the loop turns (its first progress published) without
        // dialling, though every contact is due.
        loop {
            match events.recv().await.unwrap_or_else(|e| panic!("{e}")) {
                Event::Progress(c) => {
                    assert!(c.paused && c.dialled == 0, "{c:?}");
                    break;
                }
                Event::Placed { .. } => panic!("dialled while paused"),
                _ => {}
            }
        }
        // Wake the loop again (a second turn, still paused) and give it time to dial if it
        // would.
        handle.pause().await.unwrap_or_else(|e| panic!("{e}"));
        let quiet = tokio::time::Instant::now() + Duration::from_millis(1_500);
        while let Ok(e) = tokio::time::timeout_at(quiet, events.recv()).await {
            match e.unwrap_or_else(|e| panic!("{e}")) {
                Event::Progress(c) => assert!(c.paused && c.dialled == 0, "{c:?}"),
                Event::Placed { .. } => panic!("dialled while paused"),
                _ => {}
            }
        }
        let c = handle.counters();
        assert!(c.paused && c.dialled == 0, "{c:?}");
        handle.resume().await.unwrap_or_else(|e| panic!("{e}"));
        // The first call goes out; stop while it is in progress.
        loop {
            if let Event::Placed { .. } = events.recv().await.unwrap_or_else(|e| panic!("{e}")) {
                break;
            }
        }
        handle
            .stop("test stop")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        run.await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"))
    });
    assert_eq!(summary.reason, "test stop");
    // Drained, not hung up: the call in progress played its message to the end; nobody
    // else was dialled.
    assert_eq!(summary.counters.dialled, 1, "{:?}", summary.counters);
    assert_eq!(
        summary.counters.by_outcome.get("answered-completed"),
        Some(&1),
        "{:?}",
        summary.counters
    );
    let seen = seen.lock().unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = seen
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Paused => Some("paused"),
            Event::Resumed => Some("resumed"),
            Event::Placed { .. } => Some("placed"),
            Event::Stopping { ordered: true, .. } => Some("stopping"),
            Event::Ended { .. } => Some("ended"),
            Event::HangingUp { .. } => Some("hanging-up"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["paused", "resumed", "placed", "stopping", "ended"]);
    // Progress: the counters once a second at most while only the counts change, at once
    // when the run resumes or stops, and the final counters last (nobody is left with
    // stale ones).
    let progress: Vec<(tokio::time::Instant, &crieur_runner::Counters)> = seen
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Progress(c) => Some((*t, c)),
            _ => None,
        })
        .collect();
    for w in progress.windows(2) {
        let ((t0, a), (t1, b)) = (w[0], w[1]);
        assert_ne!(a, b, "the same counters published twice");
        let state_changed = a.paused != b.paused || a.stopping != b.stopping || a.trunk != b.trunk;
        assert!(
            state_changed
                || t1.duration_since(t0)
                    >= crieur_runner::PROGRESS_EVERY - Duration::from_millis(50),
            "two progress events {:?} apart: {a:?} then {b:?}",
            t1.duration_since(t0)
        );
    }
    assert!(
        progress.iter().any(|(_, c)| !c.paused),
        "resumed: {progress:?}"
    );
    assert!(
        progress.iter().any(|(_, c)| c.stopping),
        "stopping: {progress:?}"
    );
    assert_eq!(
        progress.last().map(|(_, c)| *c),
        Some(&summary.counters),
        "the last progress is the run's final counters"
    );
    drop(seen);
    check_log(dir.path());
}
