//! What the dial tests share: instants, a policy with no legal-hours limit, contacts with
//! consent at any hour, and opening a store just dropped in this process.
#![allow(dead_code)] // Each test file uses some of it.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_scheduler::{parse_zone, ConsentRecord, Contact, ContactId, Policy, RuleSet, Windows};
use crieur_store::{Outcome, SledStore};

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Rule set `none`, 20 s of ringing, a 30 s message.
pub fn policy() -> Policy {
    Policy::new(
        RuleSet::by_name("none").unwrap_or_else(|e| panic!("{e}")),
        None,
        Duration::from_secs(20),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Contact `c<k>` has number `+336123456<numbers[k]>` (entries may repeat: two contacts, one
/// number) and consent at any hour.
pub fn contacts(numbers: &[u8]) -> Vec<Contact> {
    numbers
        .iter()
        .enumerate()
        .map(|(k, n)| {
            Contact::new(
                ContactId::new(format!("c{k}")).unwrap_or_else(|e| panic!("{e}")),
                format!("+336123456{n:02}")
                    .parse()
                    .unwrap_or_else(|e| panic!("{e}")),
                Some(parse_zone("Europe/Paris").unwrap_or_else(|e| panic!("{e}"))),
                vec![ConsentRecord {
                    windows: "mon-sun 00:00-24:00"
                        .parse::<Windows>()
                        .unwrap_or_else(|e| panic!("{e}")),
                    granted_at: t("2027-01-01T00:00:00Z"),
                    expires_at: None,
                    revoked_at: None,
                    source: "test".into(),
                    proof: "test".into(),
                }],
            )
        })
        .collect()
}

/// Opens the store at `path`. A store just dropped in this process may keep its file lock a
/// moment (sled releases it from a background thread): the open is retried while that lock
/// is held, and only then (the store's own tests do the same).
pub fn open(path: &Path, create: bool) -> SledStore {
    for _ in 0..500 {
        match SledStore::open(path, create) {
            Ok(s) => return s,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{}: still locked after 5 s", path.display())
}

/// The run header a run writes: the policy, caps and retry rules replay re-derives every
/// decision with (`ring` + `message`: the call's length the policy was built with).
pub fn run_header(
    rules: &crieur_dial::DialRules,
    policy: &Policy,
    ring: Duration,
    message: Duration,
) -> crieur_audit::Record {
    use crieur_audit::build::{caps_snapshot, policy_snapshot, retry_snapshot};
    crieur_audit::Record::RunStart(Box::new(crieur_audit::record::RunHeader {
        format: crieur_audit::record::FORMAT_VERSION,
        command: "run".into(),
        node: None,
        software: "dial tests".into(),
        campaign: Some(rules.campaign.clone()),
        campaign_name: None,
        campaign_file: None,
        campaign_sha256: None,
        campaign_toml: None,
        policy: Some(policy_snapshot(policy, "Europe/Paris", ring, message)),
        caps: Some(caps_snapshot(&rules.caps)),
        retry: retry_snapshot(&rules.retry),
        opt_out_key: Some('9'),
        audio: Vec::new(),
        tzdb_version: crieur_scheduler::tzdb_version().into(),
        phone_tz_map_version: crieur_scheduler::phone_tz_map_version().into(),
    }))
}

/// What the media edge would report of a call that ended with `outcome` and final `status`
/// (200: answered; anything but 486 rang first). No keys, no opt-out.
pub fn report(
    call: &str,
    outcome: crieur_media::call::Outcome,
    status: u16,
) -> crieur_media::uac::CallReport {
    use crieur_media::call::{Ending, HangupBy};
    let s = Duration::from_millis;
    let answered = status == 200;
    crieur_media::uac::CallReport {
        call_id: call.to_owned(),
        ending: Ending {
            outcome,
            sip_status: Some(status),
            reason: outcome.as_str().into(),
            hangup_by: if answered {
                HangupBy::Us
            } else {
                HangupBy::Nobody
            },
        },
        timeline: Vec::new(),
        keys: Vec::new(),
        opt_out_recorded: false,
        answer_to_first_audio: answered.then(|| s(80)),
        final_response: Some((status, s(if answered { 2_000 } else { 1_400 }))),
        first_18x: (status != 486).then(|| (180, s(300))),
        credentials_sent: false,
        answered_at: answered.then(|| s(2_000)),
        first_audio_at: answered.then(|| s(2_080)),
        message_packets: if answered { 900 } else { 0 },
        codec: None,
        rtp_sent: if answered { 900 } else { 0 },
        send_lateness_max_us: 0,
        rtp_send_errors: 0,
        rtp_received: Vec::new(),
        rtp_local: None,
        rtcp: Default::default(),
        amd: None,
    }
}

/// A recorded outcome by the name a store or a log holds.
pub fn named(name: &str) -> Outcome {
    name.parse().unwrap_or_else(|e| panic!("{e}"))
}
