//! `crieur demo`'s world: 100 callees in five time zones that behave in every way the
//! simulator knows (most answer; some are busy, do not answer, reject, hang up, press 9 by
//! RFC 4733 or SIP INFO, or are voicemails with and without a beep), the recordings, the
//! campaign that calls them and its contacts, whose consent windows are open at `now`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use chrono::{DateTime, Timelike, Utc};

use crate::{Behaviour, KeyMethod, Plan};

// The demo's recordings travel inside the binary (made by scripts/gen-audio with espeak-ng):
// the message, the opt-out confirmation, the voicemail message crieur leaves (each with its
// transcript), and the greeting the simulated voicemails play.
const FILES: [(&str, &[u8]); 7] = [
    (
        "rappel-fr.wav",
        include_bytes!("../../../audio/rappel-fr.wav"),
    ),
    (
        "rappel-fr.txt",
        include_bytes!("../../../audio/rappel-fr.txt"),
    ),
    (
        "optout-fr.wav",
        include_bytes!("../../../audio/optout-fr.wav"),
    ),
    (
        "optout-fr.txt",
        include_bytes!("../../../audio/optout-fr.txt"),
    ),
    (
        "voicemail-fr.wav",
        include_bytes!("../../../audio/voicemail-fr.wav"),
    ),
    (
        "voicemail-fr.txt",
        include_bytes!("../../../audio/voicemail-fr.txt"),
    ),
    (
        "greeting-fr.wav",
        include_bytes!("../../../audio/greeting-fr.wav"),
    ),
];

/// How many callees.
pub const CONTACTS: usize = 100;

const ZONES: [&str; 5] = [
    "Europe/Paris",
    "America/New_York",
    "Asia/Tokyo",
    "Indian/Reunion",
    "America/Guadeloupe",
];

/// Callee `i`'s number.
pub fn number(i: usize) -> String {
    format!("+3361{i:07}")
}

/// What callee `i` does: mostly answer and listen; a few of everything else, voicemails
/// (greeting in `dir`) with and without a beep among them.
pub fn behaviour(i: usize, dir: &Path) -> Behaviour {
    match i % 20 {
        9 | 10 => Behaviour::Voicemail {
            after_ms: 1500,
            greeting: dir.join("greeting-fr.wav"),
            beep_hz: if i % 20 == 9 { 1000.0 } else { 0.0 },
            beep_ms: 500,
        },
        3 => Behaviour::Busy,
        4 => Behaviour::NoAnswer,
        5 => Behaviour::PressKey {
            after_ms: 1000,
            key: '9',
            key_after_ms: 3000,
            method: KeyMethod::Rfc4733,
        },
        6 => Behaviour::PressKey {
            after_ms: 1500,
            key: '9',
            key_after_ms: 2500,
            method: KeyMethod::SipInfo,
        },
        7 => Behaviour::HangUp {
            after_ms: 1000,
            hangup_after_ms: 4000,
        },
        8 => Behaviour::Reject { code: 503 },
        k => Behaviour::Answer {
            after_ms: 500 + 150 * k as u64,
        },
    }
}

/// The simulated network's plan: every callee's behaviour (recordings in `dir`).
pub fn plan(dir: &Path) -> Plan {
    let mut plan = Plan {
        default: Behaviour::Answer { after_ms: 1000 },
        numbers: Default::default(),
    };
    for i in 0..CONTACTS {
        plan.numbers.insert(number(i), behaviour(i, dir));
    }
    plan
}

/// Writes the recordings and their transcripts into `dir`.
pub fn write_recordings(dir: &Path) -> std::io::Result<()> {
    for (name, bytes) in FILES {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// The demo campaign, calling the simulated network at `trunk`, signing its audit log with
/// `audit.key` (next to it).
pub fn campaign_toml(trunk: SocketAddr) -> String {
    format!(
        "# The demo campaign: rule set `none` so that it runs at any hour (FR or US would wait\n\
         # for legal calling hours); every contact's own consent window is open now.\n\
         id = \"demo\"\nname = \"crieur demo\"\nruleset = \"none\"\nzone = \"Europe/Paris\"\nring_timeout_secs = 15\n\
         message = \"rappel-fr.wav\"\nconfirmation = \"optout-fr.wav\"\nopt_out_key = \"9\"\n\
         [pacing]\ncalls_per_second = 10\nmax_concurrent_calls = 40\n\
         [retry]\nmax_attempts = 2\n[retry.busy]\ndelay_secs = 10\nmax_retries = 1\n\
         [retry.no-answer]\ndelay_secs = 10\nmax_retries = 0\n[retry.failed]\ndelay_secs = 10\nmax_retries = 0\n\
         [retry.machine]\ndelay_secs = 10\nmax_retries = 0\n\
         [amd]\nmode = \"voicemail-drop\"\nvoicemail_message = \"voicemail-fr.wav\"\n\
         [audit]\nsigning_key_file = \"audit.key\"\n\
         [trunk]\nuri = \"sip:{trunk}\"\nfrom = \"sip:+33100000000@crieur.demo\"\nmax_call_secs = 60\n"
    )
}

/// A daily window from an hour before `now` to two hours after, in `zone`'s wall-clock time.
fn window_open_at(now: DateTime<Utc>, zone: chrono_tz::Tz) -> String {
    let h = now.with_timezone(&zone).hour();
    let from = (h + 23) % 24;
    let to = (h + 2) % 24;
    let to = if to == 0 {
        "24:00".to_owned()
    } else {
        format!("{to:02}:00")
    };
    format!("daily {from:02}:00-{to}")
}

/// The contacts file: every callee, in one of five zones, its consent window open at `now`.
pub fn contacts_csv(now: DateTime<Utc>) -> String {
    let mut csv =
        String::from("id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n");
    for i in 0..CONTACTS {
        let zone = ZONES[i % ZONES.len()];
        let window = zone.parse::<chrono_tz::Tz>().map_or_else(
            |_| "daily 00:00-24:00".to_owned(),
            |tz| window_open_at(now, tz),
        );
        let _ = writeln!(
            csv,
            "demo-{i:03},{},{zone},{window},2026-01-01T00:00:00Z,,,demo form,demo-proof-{i:03}",
            number(i),
        );
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_window_holds_the_hour_around_now_in_its_zone() {
        let now = DateTime::parse_from_rfc3339("2027-03-10T23:30:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{e}"));
        // 00:30 in Paris: from 23:00 to 02:00.
        assert_eq!(
            window_open_at(now, chrono_tz::Europe::Paris),
            "daily 23:00-02:00"
        );
        // 08:30 in Tokyo: from 07:00 to 10:00.
        assert_eq!(
            window_open_at(now, chrono_tz::Asia::Tokyo),
            "daily 07:00-10:00"
        );
        let csv = contacts_csv(now);
        assert_eq!(csv.lines().count(), CONTACTS + 1);
        assert!(!csv.contains("daily 00:00-24:00"), "every zone parses");
    }
}
