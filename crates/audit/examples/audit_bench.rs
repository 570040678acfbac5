//! Audit log throughput: durable appends with group commit, `verify` MB/s, `replay` decisions/s.
//!
//! `cargo run --release -p crieur-audit --example audit_bench [RECORDS] [GROUP]`
//! RECORDS realistic dial decisions (default 200 000), encoded on two producer threads, chained
//! and committed (fsync) every GROUP records (default 1 000) on the log's thread, with a
//! signed checkpoint every 10 000.
#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crieur_audit::build::{caps_snapshot, decision_record, policy_snapshot, DecisionInputs};
use crieur_audit::record::{RunHeader, FORMAT_VERSION};
use crieur_audit::{AuditLog, Options, Record, VerifyOptions};
use crieur_scheduler::{decide, ConsentRecord, Contact, ContactId, Policy, RuleSet};

/// Threads encoding records, as a run's call tasks do on the runtime's worker threads (one per
/// core here).
const PRODUCERS: usize = 2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(Ok(200_000), |s| s.parse())?;
    let group: usize = args.next().map_or(Ok(1_000), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let policy = Policy::new(
        RuleSet::by_name("FR")?,
        None,
        Duration::from_secs(20),
        Duration::from_secs(10),
    )?;
    let now: DateTime<Utc> = "2027-03-03T17:30:00Z".parse()?;
    let contact = Contact::new(
        ContactId::new("c-000001")?,
        "+33612345678".parse()?,
        None,
        vec![ConsentRecord {
            windows: "mon-fri 18:00-20:00; sat 10:00-12:00".parse()?,
            granted_at: "2027-01-01T00:00:00Z".parse()?,
            expires_at: None,
            revoked_at: None,
            source: "web form".into(),
            proof: "https://example.invalid/proof/000001".into(),
        }],
    );
    let decision = decide(&contact, &policy, now);
    let record = Record::Decision(Box::new(decision_record(
        &contact,
        &decision,
        DecisionInputs {
            campaign: "bench",
            now,
            history: vec![],
            opted_out: false,
            refused: None,
            attempt: 1,
        },
    )));
    let opts = Options {
        signing_key: Some(ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])),
        ..Options::default()
    };
    let mut log = AuditLog::open(dir.path(), opts)?;
    log.append_durable(
        now,
        &Record::RunStart(Box::new(RunHeader {
            format: FORMAT_VERSION,
            command: "bench".into(),
            node: None,
            software: "bench".into(),
            campaign: Some("bench".into()),
            campaign_name: None,
            campaign_file: None,
            campaign_sha256: None,
            campaign_toml: None,
            policy: Some(policy_snapshot(
                &policy,
                "Europe/Paris",
                Duration::from_secs(20),
                Duration::from_secs(10),
            )),
            caps: Some(caps_snapshot(&crieur_engine::CapRules::for_ruleset(
                "FR", 3,
            ))),
            retry: vec![],
            opt_out_key: Some('9'),
            audio: vec![],
            tzdb_version: crieur_scheduler::tzdb_version().into(),
            phone_tz_map_version: crieur_scheduler::phone_tz_map_version().into(),
        })),
    )?;
    // As in a run: the call tasks encode their records on their own threads (here one
    // two producer threads); the log's owner does the serial chain step and the group commits.
    let t0 = Instant::now();
    let mut commits = 0u64;
    // Batches of 256 through the channel: a wake-up per record would cost more than the record.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<crieur_audit::EncodedRecord>>(16);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|k| {
            let (tx, record) = (tx.clone(), record.clone());
            std::thread::spawn(move || -> Result<(), crieur_audit::Error> {
                let mut batch = Vec::with_capacity(256);
                for _ in (k..n).step_by(PRODUCERS) {
                    batch.push(crieur_audit::EncodedRecord::new(&record)?);
                    if batch.len() == 256 && tx.send(std::mem::take(&mut batch)).is_err() {
                        return Ok(());
                    }
                }
                let _ = tx.send(batch);
                Ok(())
            })
        })
        .collect();
    drop(tx);
    let mut i = 0;
    for batch in rx.iter() {
        for body in &batch {
            log.append_encoded(now, body)?;
            i += 1;
            if i % group == 0 {
                log.commit()?;
                commits += 1;
            }
        }
    }
    log.commit()?;
    for p in producers {
        p.join().map_err(|_| "producer panicked")??;
    }
    let append = t0.elapsed();
    drop(log);
    let t1 = Instant::now();
    let rep = crieur_audit::verify(dir.path(), &VerifyOptions::default())?;
    let verify = t1.elapsed();
    assert!(rep.first_break.is_none(), "{:?}", rep.first_break);
    let t2 = Instant::now();
    let replay = crieur_audit::replay(dir.path())?;
    let replay_t = t2.elapsed();
    assert!(
        replay.violations.is_empty(),
        "{:?}",
        replay.violations.first()
    );
    let mb = rep.bytes as f64 / 1e6;
    println!(
        "records={} bytes/record={:.0} group={group} fsyncs={commits}\n\
         durable append: {:.0} records/s ({:.2} s)\n\
         verify: {:.0} MB/s ({:.1} MB in {:.2} s, {} checkpoints)\n\
         replay: {:.0} decisions/s ({:.2} s)",
        rep.records,
        rep.bytes as f64 / rep.records as f64,
        n as f64 / append.as_secs_f64(),
        append.as_secs_f64(),
        mb / verify.as_secs_f64(),
        mb,
        verify.as_secs_f64(),
        rep.checkpoints,
        replay.dials as f64 / replay_t.as_secs_f64(),
        replay_t.as_secs_f64(),
    );
    Ok(())
}
