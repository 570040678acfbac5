//! Tamper cases: each must be caught by `verify` or `replay`; and the crash case (torn line).

use std::path::Path;

use crieur_audit::record::*;
use crieur_audit::{read_all, replay, verify, AuditLog, Entry, Options, VerifyOptions};
use crieur_scheduler::Contact;

mod common;
use common::{retry, t};

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
}

fn contact(id: &str, number: &str, windows: &str) -> Contact {
    common::contact_with(id, number, windows, "form", "p-1")
}

fn header() -> Record {
    Record::RunStart(Box::new(common::header("t")))
}

/// A decision at `now` for `c`, as the scheduler makes it.
fn decision(c: &Contact, now: &str, history: Vec<PastAttempt>) -> Record {
    common::decision(c, t(now), history)
}

fn call(c: &Contact, call: &str, decided: &str, outcome: &str) -> Vec<Record> {
    let at = t(decided);
    vec![
        Record::InviteSent(InviteSent {
            call: call.into(),
            campaign: "t".into(),
            contact: c.id().to_string(),
            number: c.phone().to_string(),
            decided_at: at,
            sent_at: at + chrono::Duration::milliseconds(3),
            recheck: "dial".into(),
            valid_until: at + chrono::Duration::minutes(30),
        }),
        Record::Answered(CallEvent {
            call: call.into(),
            at_ms: 4000,
        }),
        Record::FirstAudio(FirstAudio {
            call: call.into(),
            at_ms: 4002,
            answer_to_audio_ms: 2,
        }),
        Record::Outcome(OutcomeRecord {
            call: call.into(),
            campaign: "t".into(),
            contact: c.id().to_string(),
            number: c.phone().to_string(),
            started: at,
            ended: at + chrono::Duration::seconds(15),
            outcome: common::named(outcome),
        }),
    ]
}

/// A clean log: a header, a skip, a dial and its call, another contact's call; checkpoints
/// every 3 records.
fn write_log(dir: &Path, signing: bool) -> Vec<Record> {
    let c1 = contact("c1", "+33612345678", "mon-fri 18:00-20:00");
    let c2 = contact("c2", "+33612345679", "mon-fri 18:00-20:00");
    let mut records = vec![
        header(),
        decision(&c1, "2027-03-03T10:00:00Z", vec![]), // 11:00 Paris: outside the window
        decision(&c1, "2027-03-03T17:30:00Z", vec![]), // 18:30 Paris: dial
    ];
    records.extend(call(
        &c1,
        "call-1",
        "2027-03-03T17:30:00Z",
        "answered-completed",
    ));
    records.push(decision(&c2, "2027-03-03T17:31:00Z", vec![]));
    records.extend(call(&c2, "call-2", "2027-03-03T17:31:00Z", "busy"));
    records.push(Record::RunStop(RunStop {
        reason: "done".into(),
    }));
    let opts = Options {
        checkpoint_every: 3,
        signing_key: signing.then(key),
        ..Options::default()
    };
    let mut log = AuditLog::open(dir, opts).unwrap_or_else(|e| panic!("{e}"));
    for (i, r) in records.iter().enumerate() {
        log.append(
            t("2027-03-03T17:00:00Z") + chrono::Duration::seconds(i as i64),
            r,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    log.checkpoint(t("2027-03-03T18:00:00Z"))
        .unwrap_or_else(|e| panic!("{e}"));
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    records
}

fn segment(dir: &Path) -> std::path::PathBuf {
    dir.join("audit-000001.jsonl")
}

fn lines(dir: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(segment(dir)).unwrap_or_else(|e| panic!("{e}"));
    b.split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(dir: &Path, ls: &[Vec<u8>]) {
    let mut out = Vec::new();
    for l in ls {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    std::fs::write(segment(dir), out).unwrap_or_else(|e| panic!("{e}"));
}

/// Rewrites the whole log from `entries`, recomputing every `prev` (and seq): what a forger
/// without the signing key can do.
fn rechain(dir: &Path, entries: Vec<Entry>) {
    let mut prev = crieur_audit::GENESIS.to_owned();
    let mut out = Vec::new();
    for (i, mut e) in entries.into_iter().enumerate() {
        e.seq = i as u64;
        e.prev = prev;
        let line = serde_json::to_vec(&e).unwrap_or_else(|e| panic!("{e}"));
        prev = crieur_audit::log::line_hash(&line);
        out.push(line);
    }
    write_lines(dir, &out);
}

fn entries(dir: &Path) -> Vec<Entry> {
    read_all(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(_, _, e)| e)
        .collect()
}

fn first_break(dir: &Path, opts: &VerifyOptions) -> Option<crieur_audit::Break> {
    verify(dir, opts)
        .unwrap_or_else(|e| panic!("{e}"))
        .first_break
}

fn pinned() -> VerifyOptions {
    VerifyOptions {
        public_key: Some(key().verifying_key()),
        anchor: None,
    }
}

#[test]
fn a_clean_log_verifies_and_replays_without_violations() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let records = write_log(d.path(), true);
    let rep = verify(d.path(), &pinned()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rep.first_break, None);
    assert!(rep.checkpoints >= 4, "{rep:?}");
    // c1 and c2 have the same consent records: one snapshot, recorded before the first
    // decision, cited by all three.
    let snapshots = lines(d.path())
        .iter()
        .filter(|l| String::from_utf8_lossy(l).contains(r#""type":"consent""#))
        .count();
    assert_eq!(snapshots, 1);
    assert_eq!(
        rep.records as usize,
        records.len() + rep.checkpoints as usize + snapshots
    );
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.violations, vec![], "{r:?}");
    assert_eq!((r.decisions, r.dials, r.skips, r.invites), (3, 2, 1, 2));
    // The chain is checkable with sha256sum: each prev is the SHA-256 of the previous line.
    let ls = lines(d.path());
    let e1: serde_json::Value = serde_json::from_slice(&ls[1]).unwrap_or_default();
    assert_eq!(
        e1["prev"].as_str(),
        Some(crieur_audit::log::line_hash(&ls[0]).as_str())
    );
    assert!(ls[0].starts_with(b"{\"seq\":0,\"ts\":\"2027-03-03T17:00:00Z\",\"prev\":\"0000"));
}

#[test]
fn flipping_one_byte_is_caught_at_its_line() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), false);
    let mut ls = lines(d.path());
    let i = ls[4].len() / 2;
    ls[4][i] ^= 0x01;
    write_lines(d.path(), &ls);
    let b =
        first_break(d.path(), &VerifyOptions::default()).unwrap_or_else(|| panic!("not caught"));
    // The flipped line itself may still parse; the next line's prev no longer matches it.
    assert!(b.line == 5 || b.line == 6, "{b}");
    assert_eq!(b.segment, "audit-000001.jsonl");
}

#[test]
fn deleting_or_swapping_records_is_caught() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), false);
    let orig = lines(d.path());
    let mut ls = orig.clone();
    ls.remove(3);
    write_lines(d.path(), &ls);
    let b = first_break(d.path(), &VerifyOptions::default()).unwrap_or_else(|| panic!("delete"));
    assert_eq!((b.line, b.seq), (4, Some(4)), "{b}");
    assert!(b.what.contains("seq 4 where 3 was expected"), "{b}");
    let mut ls = orig;
    ls.swap(5, 6);
    write_lines(d.path(), &ls);
    let b = first_break(d.path(), &VerifyOptions::default()).unwrap_or_else(|| panic!("swap"));
    assert_eq!(b.line, 6, "{b}");
}

#[test]
fn truncating_the_tail_is_caught_against_an_exported_checkpoint() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), true);
    let anchor = crieur_audit::latest_checkpoint(d.path())
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no checkpoint"));
    let mut ls = lines(d.path());
    ls.truncate(ls.len() - 3);
    write_lines(d.path(), &ls);
    // A plain chain cannot show the cut …
    assert_eq!(first_break(d.path(), &pinned()), None);
    // … the exported checkpoint does.
    let opts = VerifyOptions {
        anchor: Some(anchor),
        ..pinned()
    };
    let b = first_break(d.path(), &opts).unwrap_or_else(|| panic!("cut not caught"));
    assert!(b.what.contains("newest records were cut"), "{b}");
}

#[test]
fn widening_a_consent_window_is_caught_even_with_a_recomputed_chain() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), true);
    let mut es = entries(d.path());
    // The decisions cite their consent records; the `consent` record holds them.
    widen_snapshots(&mut es, true);
    rechain(d.path(), es);
    let b = first_break(d.path(), &pinned()).unwrap_or_else(|| panic!("not caught"));
    assert!(b.what.contains("checkpoint"), "{b}");
}

/// Widens every consent window of the log's consent snapshots (the hash they are recorded
/// under recomputed, and the decisions' citations with it, when `rehash`).
fn widen_snapshots(es: &mut [Entry], rehash: bool) -> usize {
    let mut changed = 0;
    let mut renamed = std::collections::HashMap::new();
    for e in es.iter_mut() {
        match &mut e.record {
            Record::Consent(s) => {
                for c in &mut s.consents {
                    c.windows = "daily 00:00-24:00".into();
                }
                if rehash {
                    let new = snapshot_sha256(&s.consents).unwrap_or_else(|e| panic!("{e}"));
                    renamed.insert(s.sha256.clone(), new.clone());
                    s.sha256 = new;
                }
                changed += 1;
            }
            Record::Decision(d) => {
                assert!(
                    d.consents.is_empty(),
                    "a decision written with its consents inline"
                );
                if let Some(new) = d.consents_sha256.as_ref().and_then(|h| renamed.get(h)) {
                    d.consents_sha256 = Some(new.clone());
                }
            }
            _ => {}
        }
    }
    changed
}

#[test]
fn a_changed_consent_snapshot_is_caught_by_replay_even_with_a_recomputed_chain() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), false);
    let mut es = entries(d.path());
    // Widen the snapshot's windows, keep its recorded hash, re-chain: the chain holds …
    assert_eq!(widen_snapshots(&mut es, false), 1);
    let snapshot_seq = es
        .iter()
        .position(|e| matches!(e.record, Record::Consent(_)))
        .unwrap_or_else(|| panic!("no snapshot")) as u64;
    rechain(d.path(), es);
    assert_eq!(first_break(d.path(), &VerifyOptions::default()), None);
    // … but the snapshot no longer hashes to its name, and no decision resolves.
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<(&str, u64)> = r
        .violations
        .iter()
        .map(|v| (v.kind.as_str(), v.seq))
        .collect();
    assert_eq!(
        kinds[0],
        ("consent-snapshot-mismatch", snapshot_seq),
        "{r:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|(k, _)| *k == "consent-snapshot-unknown")
            .count(),
        3,
        "{r:?}"
    );
    // Export and report do not take the widened windows either: the dial's consent is unknown.
    let rows = crieur_audit::export::calls(d.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(rows.iter().all(|c| c.consent_source.is_empty()), "{rows:?}");
}

#[test]
fn a_snapshot_rehashed_with_its_citations_replays_as_the_new_windows_say() {
    // A forger who rewrites the snapshot, its hash and every citation has written a
    // different consent: replay judges each dial against it, as with consents inline (and
    // only a signed checkpoint shows the rewrite). Here the wider windows still allow the
    // dials, and the log replays clean: the references resolve after the rewrite.
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), false);
    let mut es = entries(d.path());
    widen_snapshots(&mut es, true);
    rechain(d.path(), es);
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.violations, vec![], "{r:?}");
    let rows = crieur_audit::export::calls(d.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows[0].consent_source, "form", "{rows:?}");
}

#[test]
fn a_decision_may_cite_only_a_snapshot_of_its_own_log() {
    // Node A records c1's snapshot and decides; node B cites the same hash without having
    // recorded it: replaying both logs merged flags B's decision.
    let a = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let b = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c1 = contact("c1", "+33612345678", "mon-fri 18:00-20:00");
    let mut log = AuditLog::open(a.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    for r in [header(), decision(&c1, "2027-03-03T10:00:00Z", vec![])] {
        log.append(t("2027-03-03T17:00:00Z"), &r)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    let cited = entries(a.path())
        .into_iter()
        .find_map(|e| match e.record {
            Record::Decision(d) => d.consents_sha256,
            _ => None,
        })
        .unwrap_or_else(|| panic!("no citation"));
    let Record::Decision(mut on_b) = decision(&c1, "2027-03-03T10:00:01Z", vec![]) else {
        panic!("not a decision")
    };
    on_b.consents.clear();
    on_b.consents_sha256 = Some(cited.clone());
    let mut log = AuditLog::open(b.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    for r in [header(), Record::Decision(on_b)] {
        log.append(t("2027-03-03T17:00:01Z"), &r)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    // B's log holds no snapshot: its decision was written citing one.
    assert!(entries(b.path())
        .iter()
        .all(|e| !matches!(e.record, Record::Consent(_))));
    let r =
        crieur_audit::replay::replay_logs(&[a.path(), b.path()]).unwrap_or_else(|e| panic!("{e}"));
    let unknown: Vec<&crieur_audit::Violation> = r
        .violations
        .iter()
        .filter(|v| v.kind == "consent-snapshot-unknown")
        .collect();
    assert_eq!(unknown.len(), 1, "{r:?}");
    assert!(unknown[0]
        .segment
        .starts_with(&b.path().display().to_string()));
    assert_eq!(unknown[0].fields.get("sha256"), Some(&cited.into()));
}

#[test]
fn each_log_records_a_snapshot_once_and_again_after_reopening() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c1 = contact("c1", "+33612345678", "mon-fri 18:00-20:00");
    let c2 = contact("c2", "+33612345679", "mon 18:00-20:00");
    for _ in 0..2 {
        let mut log =
            AuditLog::open(d.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
        log.append(t("2027-03-03T17:00:00Z"), &header())
            .unwrap_or_else(|e| panic!("{e}"));
        for now in ["2027-03-03T10:00:00Z", "2027-03-03T11:00:00Z"] {
            for c in [&c1, &c2] {
                log.append(t("2027-03-03T17:00:00Z"), &decision(c, now, vec![]))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        log.commit().unwrap_or_else(|e| panic!("{e}"));
    }
    let kinds: Vec<&str> = entries(d.path()).iter().map(|e| e.record.kind()).collect();
    let run = [
        "run-start",
        "consent",
        "decision",
        "consent",
        "decision",
        "decision",
        "decision",
    ];
    assert_eq!(kinds, [run, run].concat());
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.violations, vec![], "{r:?}");
    assert_eq!(r.decisions, 8);
}

#[test]
fn a_dial_outside_its_window_with_a_valid_chain_is_caught_by_replay() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), false);
    let mut es = entries(d.path());
    // Turn the 11:00 skip into a dial (as a forger or a buggy dialler would record it).
    let skip = es
        .iter()
        .position(|e| matches!(&e.record, Record::Decision(x) if x.verdict == "skip"))
        .unwrap_or_else(|| panic!("no skip"));
    if let Record::Decision(x) = &mut es[skip].record {
        x.verdict = "dial".into();
        x.reasons.clear();
    }
    rechain(d.path(), es);
    assert_eq!(first_break(d.path(), &VerifyOptions::default()), None);
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = r.violations.iter().map(|v| v.kind.as_str()).collect();
    assert!(kinds.contains(&"outside-consent-window"), "{r:?}");
    assert!(kinds.contains(&"outside-legal-hours") || kinds.contains(&"outside-consent-window"));
    assert_eq!(r.violations[0].seq, skip as u64);
    // With the scheduler's reason as the log codes it.
    let v = r
        .violations
        .iter()
        .find(|v| v.kind == "outside-consent-window")
        .unwrap_or_else(|| panic!("{r:?}"));
    let f = serde_json::Value::Object(v.fields.clone());
    assert_eq!(
        f,
        serde_json::json!({
            "code": "outside-consent-window",
            "zone": "Europe/Paris",
            "local": "2027-03-03T11:00:00",
            "at": "2027-03-03T10:00:00Z",
        })
    );
    assert_eq!(
        v.detail,
        "at 2027-03-03T10:00:00+00:00: 2027-03-03T11:00:00 in Europe/Paris is in no consented window"
    );
    // The JSON report carries them as they are.
    let json = serde_json::to_value(&r).unwrap_or_default();
    assert_eq!(
        json["violations"][0]["fields"]["code"],
        "outside-consent-window"
    );
}

#[test]
fn replay_lists_opt_out_cap_retry_late_invite_and_slow_audio_violations() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = contact("c1", "+33612345678", "mon-fri 18:00-20:00");
    let mut log = AuditLog::open(d.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let busy = |at: &str| PastAttempt {
        at: t(at),
        ended: Some(t(at) + chrono::Duration::seconds(20)),
        outcome: common::named("busy"),
        campaign: "t".into(),
    };
    let mut rs = vec![header()];
    // A retry 10 minutes after a busy (the rule says 30).
    rs.push(decision(
        &c,
        "2027-03-03T17:15:00Z",
        vec![busy("2027-03-03T17:05:00Z")],
    ));
    // Over the cap: three attempts already in this campaign.
    rs.push(decision(
        &c,
        "2027-03-04T17:15:00Z",
        vec![
            busy("2027-03-01T17:05:00Z"),
            busy("2027-03-02T17:05:00Z"),
            busy("2027-03-03T17:05:00Z"),
        ],
    ));
    // An INVITE sent after its decision expired, and a slow first packet.
    let mut late = call(&c, "call-9", "2027-03-04T17:15:00Z", "answered-completed");
    if let Record::InviteSent(i) = &mut late[0] {
        i.sent_at = i.valid_until + chrono::Duration::seconds(5);
    }
    if let Record::FirstAudio(f) = &mut late[2] {
        f.answer_to_audio_ms = 2500;
    }
    rs.extend(late);
    // An opt-out, then a dial to the same number whose history omits the logged attempt.
    rs.push(Record::OptOutRecorded(OptOutRecorded {
        call: "call-9".into(),
        number: "+33612345678".into(),
        at: t("2027-03-04T17:16:00Z"),
    }));
    rs.push(decision(&c, "2027-03-05T17:15:00Z", vec![]));
    for r in &rs {
        log.append(t("2027-03-05T00:00:00Z"), r)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = r.violations.iter().map(|v| v.kind.as_str()).collect();
    for k in [
        "retry-too-early",
        "cap-exceeded",
        "invite-after-window",
        "slow-first-audio",
        "dial-after-opt-out",
        "history-omitted",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
}

#[test]
fn a_torn_last_line_is_reported_and_repaired_without_losing_it() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), true);
    let before = lines(d.path()).len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(segment(d.path()))
        .unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut f, b"{\"seq\":99,\"ts\":\"2027-")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(f);
    let b = first_break(d.path(), &pinned()).unwrap_or_else(|| panic!("torn line not reported"));
    assert!(b.what.contains("torn last line"), "{b}");
    assert_eq!(b.line, before + 1);
    match AuditLog::open(d.path(), Options::default()) {
        Err(crieur_audit::Error::TornTail { line, .. }) => assert_eq!(line, before + 1),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a torn log"),
    }
    let torn = AuditLog::repair_torn_tail(d.path(), Options::default(), t("2027-03-04T00:00:00Z"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("nothing repaired"));
    assert_eq!(torn.bytes, 21);
    let saved = std::fs::read(d.path().join(&torn.saved_as)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(saved, b"{\"seq\":99,\"ts\":\"2027-");
    assert_eq!(first_break(d.path(), &pinned()), None);
    assert!(matches!(
        entries(d.path()).last().map(|e| &e.record),
        Some(Record::TornTail(_))
    ));
}

#[test]
fn segments_rotate_and_the_chain_spans_them() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let opts = Options {
        segment_bytes: 4096,
        ..Options::default()
    };
    let c = contact("c1", "+33612345678", "mon-fri 18:00-20:00");
    let mut log = AuditLog::open(d.path(), opts.clone()).unwrap_or_else(|e| panic!("{e}"));
    log.append(t("2027-03-03T17:00:00Z"), &header())
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..40 {
        log.append(
            t("2027-03-03T17:00:00Z"),
            &decision(&c, "2027-03-03T17:30:00Z", vec![]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        if i % 7 == 0 {
            log.commit().unwrap_or_else(|e| panic!("{e}"));
        }
    }
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    drop(log);
    // Reopening continues the chain.
    let mut log = AuditLog::open(d.path(), opts).unwrap_or_else(|e| panic!("{e}"));
    // The header, the snapshot once, 40 decisions citing it.
    assert_eq!(log.next_seq(), 42);
    log.append_durable(
        t("2027-03-03T18:00:00Z"),
        &Record::RunStop(RunStop { reason: "x".into() }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rep = verify(d.path(), &VerifyOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rep.first_break, None);
    assert!(rep.segments > 3, "{rep:?}");
    assert_eq!(rep.records, 43);
    // A missing middle segment is a break.
    std::fs::remove_file(d.path().join("audit-000002.jsonl")).unwrap_or_else(|e| panic!("{e}"));
    let b = first_break(d.path(), &VerifyOptions::default()).unwrap_or_else(|| panic!("gap"));
    assert!(b.what.contains("missing"), "{b}");
}

#[test]
fn a_log_rechained_without_its_checkpoints_fails_with_a_pinned_key() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), true);
    let es: Vec<Entry> = entries(d.path())
        .into_iter()
        .filter(|e| !matches!(e.record, Record::Checkpoint(_)))
        .collect();
    let n = es.len() as u64;
    rechain(d.path(), es);
    // The chain alone is intact …
    let plain = verify(d.path(), &VerifyOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plain.first_break, None);
    assert_eq!(plain.checkpoints, 0);
    // … and says that nothing in it is proven.
    let all = Some(crieur_audit::Unproven {
        records: n,
        first_seq: 0,
        last_seq: n - 1,
    });
    assert_eq!(plain.unproven, all);
    // With the operator's key pinned, a log without a checkpoint fails.
    let rep = verify(d.path(), &pinned()).unwrap_or_else(|e| panic!("{e}"));
    let b = rep
        .first_break
        .unwrap_or_else(|| panic!("no checkpoint, yet it passed"));
    assert!(
        b.what.contains("no checkpoint signed by the given key"),
        "{b}"
    );
    assert!(b.what.contains(&format!("none of the {n} records")), "{b}");
    assert_eq!(rep.unproven, all);
}

#[test]
fn records_after_the_last_checkpoint_are_reported_unproven() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), true);
    // A clean log ends with a checkpoint: everything is proven.
    let rep = verify(d.path(), &pinned()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((rep.first_break, rep.unproven), (None, None));
    // A forger turns the last decision into something else and re-chains from there; the
    // checkpoints after it no longer verify, so they go too.
    let mut es = entries(d.path());
    let k = es
        .iter()
        .rposition(|e| matches!(e.record, Record::Decision(_)))
        .unwrap_or_else(|| panic!("no decision"));
    if let Record::Decision(x) = &mut es[k].record {
        x.opted_out = true;
    }
    let mut kept = Vec::new();
    for (i, e) in es.into_iter().enumerate() {
        if !(i > k && matches!(e.record, Record::Checkpoint(_))) {
            kept.push(e);
        }
    }
    let last_cp = kept
        .iter()
        .rposition(|e| matches!(e.record, Record::Checkpoint(_)))
        .unwrap_or_else(|| panic!("no checkpoint left")) as u64;
    let n = kept.len() as u64;
    rechain(d.path(), kept);
    let rep = verify(d.path(), &pinned()).unwrap_or_else(|e| panic!("{e}"));
    // The chain and the remaining checkpoints hold; the altered tail is reported unproven.
    assert_eq!(rep.first_break, None);
    assert_eq!(rep.last_checkpoint, Some(last_cp));
    let u = rep
        .unproven
        .unwrap_or_else(|| panic!("the tail after the last checkpoint is not reported"));
    assert_eq!(
        (u.first_seq, u.last_seq, u.records),
        (last_cp + 1, n - 1, n - 1 - last_cp)
    );
    assert!(
        u.first_seq <= k as u64,
        "{u:?} does not cover the altered record {k}"
    );
}

#[test]
fn a_run_header_looser_than_its_rule_set_is_a_violation_and_does_not_hide_one() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = contact("c1", "+33612345678", "mon-fri 18:00-20:00");
    // Under FR (4 calls per 30 days, 60 quiet days after a refusal) the header claims 100
    // calls per 30 days, no quiet period, and retries after a refusal.
    let Record::RunStart(mut h) = header() else {
        panic!("not a header")
    };
    h.caps = Some(CapsSnapshot {
        max_attempts: 10,
        rolling_max: Some(100),
        rolling_days: Some(30),
        quiet_days_after_refusal: None,
    });
    h.retry.push(retry("not-interested", 60, 2));
    // … and gives no rule for `machine` (replay could not check retries after one).
    h.retry.retain(|r| r.outcome != "machine");
    let busy = |at: &str, campaign: &str| PastAttempt {
        at: t(at),
        ended: Some(t(at) + chrono::Duration::seconds(20)),
        outcome: common::named("busy"),
        campaign: campaign.into(),
    };
    // A fifth call in 30 days: within the header's caps, over FR's.
    let history = vec![
        busy("2027-02-20T17:05:00Z", "other"),
        busy("2027-02-24T17:05:00Z", "other"),
        busy("2027-02-27T17:05:00Z", "t"),
        busy("2027-03-01T17:05:00Z", "t"),
    ];
    let mut log = AuditLog::open(d.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    for r in [
        Record::RunStart(h),
        decision(&c, "2027-03-03T17:30:00Z", history),
    ] {
        log.append(t("2027-03-03T17:30:00Z"), &r)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    let at = |seq: u64, kind: &str| -> Vec<&str> {
        r.violations
            .iter()
            .filter(|v| v.seq == seq && v.kind == kind)
            .map(|v| v.detail.as_str())
            .collect()
    };
    let header = at(0, "header-looser-than-ruleset");
    assert_eq!(header.len(), 4, "{r:?}");
    assert!(header.iter().any(|d| d.contains(
        "rolling cap 100 calls per 30 days where the rule set allows at most 4 per 30 days"
    )));
    assert!(header
        .iter()
        .any(|d| d.contains("no quiet period after a refusal where the rule set requires 60")));
    assert!(header
        .iter()
        .any(|d| d.contains("retry rule for `not-interested` allows 2 retries")));
    assert!(header
        .iter()
        .any(|d| d.contains("no retry rule for `machine`")));
    // seq 1 is the contact's consent snapshot, seq 2 the decision citing it.
    let cap = at(2, "cap-exceeded");
    assert_eq!(cap.len(), 1, "{r:?}");
    assert!(
        cap[0].contains("rolling cap: 4 attempts in the last 30 days"),
        "{}",
        cap[0]
    );
    assert!(cap[0].contains("the rule set's own caps"), "{}", cap[0]);
}

#[test]
fn a_run_header_as_strict_as_its_rule_set_is_not_a_violation() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Record::RunStart(mut h) = header() else {
        panic!("not a header")
    };
    // An explicit "never retry" after a refusal is fine.
    h.retry.push(retry("not-interested", 0, 0));
    // Stricter than FR: 2 calls per 60 days, 90 quiet days.
    h.caps = Some(CapsSnapshot {
        max_attempts: 3,
        rolling_max: Some(2),
        rolling_days: Some(60),
        quiet_days_after_refusal: Some(90),
    });
    let mut log = AuditLog::open(d.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    log.append_durable(t("2027-03-03T17:30:00Z"), &Record::RunStart(h))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.violations, vec![], "{r:?}");
}

#[test]
fn skip_reasons_are_coded_objects_with_their_rule_set_and_replay_reads_them() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), false);
    let ls = lines(d.path());
    // The 11:00 skip (seq 2, after the consent snapshot it cites): outside the consent
    // window, in FR's legal hours.
    let skip = String::from_utf8(ls[2].clone()).unwrap_or_default();
    assert!(
        skip.contains(r#""reasons":[{"code":"outside-consent-window","zone":"Europe/Paris","local":"2027-03-03T11:00:00"}]"#),
        "{skip}"
    );
    assert!(
        skip.contains(r#""ruleset":"FR","ruleset_version":"FR-2023-03-01""#),
        "{skip}"
    );
    let v: serde_json::Value = serde_json::from_str(&skip).unwrap_or_default();
    assert_eq!(v["reasons"][0]["code"], "outside-consent-window");
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.skip_reasons.get("outside-consent-window").copied(),
        Some(1),
        "{r:?}"
    );
}

#[test]
fn format_1_logs_with_text_reasons_still_replay() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), false);
    // Rewrite the skip's reasons as format 1 wrote them (Rust Debug text), and the header's
    // format number.
    let ls: Vec<Vec<u8>> = lines(d.path())
        .into_iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_slice(&l).unwrap_or_default();
            if v["type"] == "decision" && v["verdict"] == "skip" {
                v["reasons"] = serde_json::json!([
                    "OutsideConsentWindow { zone: Europe/Paris, local: 2027-03-03T11:00:00 }"
                ]);
            }
            if v["type"] == "run-start" {
                v["format"] = 1.into();
            }
            serde_json::to_vec(&v).unwrap_or_default()
        })
        .collect();
    write_lines(d.path(), &ls);
    let es = entries(d.path());
    let reasons: Vec<&Reason> = es
        .iter()
        .filter_map(|e| match &e.record {
            Record::Decision(x) if x.verdict == "skip" => Some(&x.reasons),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        reasons,
        [&Reason::Text {
            text: "OutsideConsentWindow { zone: Europe/Paris, local: 2027-03-03T11:00:00 }".into()
        }]
    );
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.violations, vec![], "{r:?}");
    assert_eq!(r.skip_reasons.get("text").copied(), Some(1));
    // A code from a later version is read as `unknown`, not refused.
    let later: Reason = serde_json::from_str(r#"{"code":"breaker-open","trunk":"x"}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(later, Reason::Unknown);
}

/// Trunk faults: many `trunk-fault:*` attempts do not make a cap violation, the breaker's
/// records are accepted; but an attempt recorded as a trunk fault although it rang counts, is
/// flagged, and the cap it then breaks is flagged too.
#[test]
fn trunk_faults_count_toward_no_cap_unless_the_log_shows_they_rang() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c = contact("c1", "+33612345678", "mon-fri 18:00-20:00");
    let fault = |at: &str| PastAttempt {
        at: t(at),
        ended: Some(t(at) + chrono::Duration::seconds(1)),
        outcome: common::named("trunk-fault:auth-failed"),
        campaign: "t".into(),
    };
    let refused = |call: &str, at: &str, status: u16, rang: bool| {
        let mut rs = vec![Record::InviteSent(InviteSent {
            call: call.into(),
            campaign: "t".into(),
            contact: "c1".into(),
            number: "+33612345678".into(),
            decided_at: t(at),
            sent_at: t(at),
            recheck: "dial".into(),
            valid_until: t(at) + chrono::Duration::minutes(30),
        })];
        if rang {
            rs.push(Record::SipResponse(SipResponse {
                call: call.into(),
                status: 180,
                at_ms: 100,
            }));
        }
        rs.push(Record::SipResponse(SipResponse {
            call: call.into(),
            status,
            at_ms: 200,
        }));
        rs.push(Record::Outcome(OutcomeRecord {
            call: call.into(),
            campaign: "t".into(),
            contact: "c1".into(),
            number: "+33612345678".into(),
            started: t(at),
            ended: t(at) + chrono::Duration::seconds(1),
            outcome: common::named(&format!(
                "trunk-fault:{}",
                if status == 403 {
                    "auth-failed"
                } else {
                    "trunk-failure"
                }
            )),
        }));
        rs
    };
    let breaker = |state: &str, code: &str| {
        Record::TrunkBreaker(TrunkBreaker {
            campaign: "t".into(),
            from: "closed".into(),
            state: state.into(),
            cause: BreakerCause {
                code: code.into(),
                call: Some("call-3".into()),
                sip_status: Some(503),
                detail: "Service Unavailable".into(),
            },
            consecutive_faults: 5,
            until: Some(t("2027-03-03T17:40:00Z")),
        })
    };
    // FR caps, 3 attempts per campaign, 4 in 30 days: five earlier trunk faults and a dial.
    let history: Vec<PastAttempt> = (1..=5)
        .map(|i| fault(&format!("2027-03-03T17:0{i}:00Z")))
        .collect();
    let mut rs = vec![header()];
    for i in 1..=5 {
        rs.push(decision(
            &c,
            &format!("2027-03-03T17:0{i}:00Z"),
            history[..i - 1].to_vec(),
        ));
        rs.extend(refused(
            &format!("call-{i}"),
            &format!("2027-03-03T17:0{i}:00Z"),
            403,
            false,
        ));
    }
    rs.push(breaker("open", "trunk-server-error"));
    rs.push(decision(&c, "2027-03-03T17:30:00Z", history.clone()));
    let clean = rs.len();
    // Then three more "trunk faults" that were not: they count; the fourth dial is over the
    // cap of 3 attempts in this campaign.
    let mut h = history.clone();
    for i in 6..=8 {
        let at = format!("2027-03-03T17:3{i}:00Z");
        rs.push(decision(&c, &at, h.clone()));
        // Two rang (a 180), the third was a callee's busy (486), not a trunk fault.
        let (status, rang) = if i == 8 { (486, false) } else { (503, true) };
        rs.extend(refused(&format!("call-{i}"), &at, status, rang));
        h.push(PastAttempt {
            outcome: common::named("trunk-fault:trunk-failure"),
            ..fault(&at)
        });
    }
    rs.push(decision(&c, "2027-03-03T17:50:00Z", h));
    let mut log = AuditLog::open(d.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    for (i, r) in rs.iter().enumerate() {
        log.append(t("2027-03-04T00:00:00Z"), r)
            .unwrap_or_else(|e| panic!("{e}"));
        if i + 1 == clean {
            log.commit().unwrap_or_else(|e| panic!("{e}"));
            let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.violations, vec![], "trunk faults alone break no cap");
        }
    }
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first_break(d.path(), &VerifyOptions::default()), None);
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = r.violations.iter().map(|v| v.kind.as_str()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "trunk-fault-misclassified")
            .count(),
        3,
        "{kinds:?}"
    );
    let caps: Vec<&crieur_audit::Violation> = r
        .violations
        .iter()
        .filter(|v| v.kind == "cap-exceeded")
        .collect();
    assert_eq!(caps.len(), 1, "{kinds:?}");
    assert!(
        caps[0].detail.contains("attempt cap: 3 of 3"),
        "{}",
        caps[0].detail
    );
}

/// Every INVITE must end in an outcome of its call, and every outcome follow its INVITE: a
/// call a crash left without an outcome, and an outcome with no INVITE (what crieur used to
/// write on recovery, `recovered-<campaign>/<contact>`), are both violations.
#[test]
fn an_outcome_without_its_invite_and_an_invite_without_outcome_are_flagged() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let c1 = contact("c1", "+33612345678", "mon-fri 18:00-20:00");
    let c2 = contact("c2", "+33612345679", "mon-fri 18:00-20:00");
    let mut rs = vec![
        header(),
        decision(&c1, "2027-03-03T17:30:00Z", vec![]),
        decision(&c2, "2027-03-03T17:31:00Z", vec![]),
    ];
    // c1's call: its INVITE, then the crash (no outcome).
    let mut c1_call = call(&c1, "call-1", "2027-03-03T17:30:00Z", "busy");
    c1_call.truncate(1);
    rs.extend(c1_call);
    // c2's call complete, then an outcome naming no INVITE.
    rs.extend(call(&c2, "call-2", "2027-03-03T17:31:00Z", "busy"));
    rs.push(Record::Outcome(OutcomeRecord {
        call: "recovered-t/c1".into(),
        campaign: "t".into(),
        contact: "c1".into(),
        number: "+33612345678".into(),
        started: t("2027-03-03T17:30:00Z"),
        ended: t("2027-03-03T18:30:00Z"),
        outcome: common::named("interrupted"),
    }));
    let mut log = AuditLog::open(d.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    for r in &rs {
        log.append(t("2027-03-03T17:00:00Z"), r)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(&str, Option<&str>, Option<&serde_json::Value>)> = r
        .violations
        .iter()
        .map(|v| (v.kind.as_str(), v.contact.as_deref(), v.fields.get("call")))
        .collect();
    let call = |s: &str| serde_json::Value::String(s.into());
    assert_eq!(
        got,
        vec![
            (
                "outcome-without-invite",
                Some("c1"),
                Some(&call("recovered-t/c1"))
            ),
            ("invite-without-outcome", Some("c1"), Some(&call("call-1"))),
        ],
        "{r:?}"
    );
    // The INVITE's violation points at the INVITE's own line.
    let invite = &r.violations[1];
    assert_eq!(invite.line, 5);
    assert!(invite.fields.contains_key("sent_at"));
}

/// Retry delays are checked to the instant: a busy call that ended at .995 s may not be
/// retried in the second before its delay runs out (the store once kept whole seconds,
/// which hid such retries from replay too).
#[test]
fn a_retry_early_by_less_than_a_second_is_flagged() {
    let c = contact("c1", "+33612345678", "mon-fri 18:00-20:00");
    let busy = PastAttempt {
        at: t("2027-03-03T17:05:00.250Z"),
        ended: Some(t("2027-03-03T17:05:20.995Z")),
        outcome: common::named("busy"),
        campaign: "t".into(),
    };
    for (at, early) in [
        // 30 min after the end is 17:35:20.995.
        ("2027-03-03T17:35:20.500Z", true),
        ("2027-03-03T17:35:20.995Z", false),
    ] {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut log =
            AuditLog::open(d.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
        for r in [header(), decision(&c, at, vec![busy.clone()])] {
            log.append(t("2027-03-03T17:00:00Z"), &r)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        log.commit().unwrap_or_else(|e| panic!("{e}"));
        let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
        let kinds: Vec<&str> = r.violations.iter().map(|v| v.kind.as_str()).collect();
        assert_eq!(kinds.contains(&"retry-too-early"), early, "{at}: {kinds:?}");
    }
}

fn amd_record(call: &str, sha: String, sit: Option<AmdSit>) -> Record {
    Record::Amd(AmdRecord {
        call: call.into(),
        mode: "voicemail-drop".into(),
        verdict: "machine".into(),
        cause: Some("long-greeting".into()),
        first_verdict: None,
        answer_to_verdict_ms: Some(3_400),
        features: None,
        beep: Some(AmdBeep {
            freq_hz: 1000,
            length_ms: 500,
            end_ms: 9_000,
        }),
        drop: Some("beep".into()),
        beep_to_voicemail_ms: Some(110),
        voicemail_at_ms: Some(12_000),
        voicemail_sha256: Some(sha),
        voicemail_played_ms: 19_460,
        sit,
    })
}

/// A voicemail message played after a special information tone is a violation (the
/// network's announcement records nothing; the call must hang up on the tone).
#[test]
fn a_voicemail_message_after_a_sit_is_a_violation() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut log = AuditLog::open(d.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let sit = AmdSit {
        code: "vc".into(),
        freq_hz: [985, 1371, 1777],
        length_ms: [380, 270, 380],
        start_ms: 120,
        end_ms: 1_150,
    };
    let mut quiet = amd_record("call-2", "aa".repeat(32), Some(sit.clone()));
    if let Record::Amd(a) = &mut quiet {
        a.voicemail_played_ms = 0;
        a.voicemail_sha256 = None;
    }
    for r in [
        header(),
        amd_record("call-1", "aa".repeat(32), Some(sit)),
        quiet,
    ] {
        log.append(t("2027-03-05T00:00:00Z"), &r)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    let hits: Vec<_> = r
        .violations
        .iter()
        .filter(|v| v.kind == "voicemail-after-sit")
        .collect();
    assert_eq!(hits.len(), 1, "{:?}", r.violations);
    assert_eq!(
        hits[0].fields.get("call").and_then(|c| c.as_str()),
        Some("call-1")
    );
}

/// An `amd` record naming a voicemail message its run header does not declare is a
/// violation; the declared one is not.
#[test]
fn a_voicemail_message_not_in_the_run_header_is_a_violation() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut log = AuditLog::open(d.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut h = header();
    if let Record::RunStart(h) = &mut h {
        h.audio.push(AudioSnapshot {
            role: "voicemail".into(),
            path: "voicemail-fr.wav".into(),
            sha256: "aa".repeat(32),
            length_ms: 19_460,
            transcript: None,
        });
    }
    let amd = |call: &str, sha: String| amd_record(call, sha, None);
    for r in [
        h,
        amd("call-1", "aa".repeat(32)),
        amd("call-2", "bb".repeat(32)),
    ] {
        log.append(t("2027-03-05T00:00:00Z"), &r)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    log.commit().unwrap_or_else(|e| panic!("{e}"));
    let r = replay(d.path()).unwrap_or_else(|e| panic!("{e}"));
    let hits: Vec<_> = r
        .violations
        .iter()
        .filter(|v| v.kind == "unconfigured-voicemail")
        .collect();
    assert_eq!(hits.len(), 1, "{:?}", r.violations);
    assert_eq!(
        hits[0].fields.get("call").and_then(|c| c.as_str()),
        Some("call-2")
    );
}

/// An `outcome` record names its outcome as it always has; a name no version of crieur writes
/// is an error located at its segment and line, naming it — replay does not count it as some
/// other outcome.
#[test]
fn an_unknown_outcome_name_is_a_located_error() {
    let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write_log(d.path(), false);
    let mut ls = lines(d.path());
    let at = ls
        .iter()
        .position(|l| {
            let l = String::from_utf8_lossy(l);
            l.contains("\"type\":\"outcome\"") && l.contains("\"outcome\":\"busy\"")
        })
        .unwrap_or_else(|| panic!("no `busy` outcome record"));
    let edited = String::from_utf8_lossy(&ls[at])
        .replace("\"outcome\":\"busy\"", "\"outcome\":\"busy-ish\"");
    ls[at] = edited.into_bytes();
    write_lines(d.path(), &ls);
    match replay(d.path()) {
        Err(crieur_audit::Error::Unreadable {
            segment,
            line,
            source,
        }) => {
            assert_eq!((segment.as_str(), line), ("audit-000001.jsonl", at + 1));
            assert!(
                source.to_string().contains("unknown outcome \"busy-ish\""),
                "{source}"
            );
        }
        other => panic!("an unknown outcome was replayed: {other:?}"),
    }
}
