//! A run's first and last records: the header (the campaign verbatim, the policy, caps and
//! retry rules as replay rebuilds them, each recording's hash, length and transcript, the
//! data versions); the stop record is `crieur_dial::session::record_stop`.

use std::path::Path;

use crieur_audit::record::{AudioSnapshot, Record, RunHeader};
use crieur_config::campaign::Campaign;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        what: format!("reading {}", path.display()),
        source,
    }
}

fn audio(role: &str, path: &Path, length: std::time::Duration) -> Result<AudioSnapshot> {
    let transcript = std::fs::read_to_string(path.with_extension("txt")).ok();
    Ok(AudioSnapshot {
        role: role.into(),
        path: path.display().to_string(),
        sha256: crieur_config::input::sha256_file(path).map_err(read_error(path))?,
        length_ms: u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
        transcript,
    })
}

/// The length of the recording at `path` (zero when it cannot be loaded: the campaign's
/// validation has already said why).
fn length_of(path: &Path) -> std::time::Duration {
    crieur_media::audio::Message::load(path)
        .map(|m| m.duration())
        .unwrap_or_default()
}

/// This process's node id, in its run headers and on the leases it takes in a shared store:
/// `CRIEUR_NODE`, else the host name and process id.
pub fn node_id() -> String {
    if let Ok(n) = std::env::var("CRIEUR_NODE") {
        if !n.is_empty() {
            return n;
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!("{host}-{}", std::process::id())
}

/// The header of a command's run (`command`: `run`, `call`, `import`, …) over `campaign`
/// (read from `path`, kept verbatim), if any.
pub fn header(command: &str, campaign: Option<(&Campaign, &Path)>) -> Result<Record> {
    let mut h = RunHeader {
        format: crieur_audit::record::FORMAT_VERSION,
        command: command.into(),
        node: Some(node_id()),
        software: concat!("crieur ", env!("CARGO_PKG_VERSION")).into(),
        campaign: None,
        campaign_name: None,
        campaign_file: None,
        campaign_sha256: None,
        campaign_toml: None,
        policy: None,
        caps: None,
        retry: Vec::new(),
        opt_out_key: None,
        audio: Vec::new(),
        tzdb_version: crieur_scheduler::tzdb_version().into(),
        phone_tz_map_version: crieur_scheduler::phone_tz_map_version().into(),
    };
    if let Some((c, path)) = campaign {
        h.campaign = Some(c.id.clone());
        let bytes = std::fs::read(path).map_err(read_error(path))?;
        h.campaign_name = Some(c.name.clone());
        h.campaign_file = Some(path.display().to_string());
        h.campaign_sha256 = Some(hex::encode(Sha256::digest(&bytes)));
        h.campaign_toml = Some(String::from_utf8(bytes).map_err(|_| Error::Io {
            what: format!("{}: not UTF-8", path.display()),
            source: std::io::ErrorKind::InvalidData.into(),
        })?);
        h.policy = Some(crieur_audit::build::policy_snapshot(
            &c.policy,
            c.zone.name(),
            c.ring_timeout,
            c.message_length,
        ));
        h.caps = Some(crieur_audit::build::caps_snapshot(&c.caps));
        h.retry = crieur_audit::build::retry_snapshot(&c.retry.policy());
        h.opt_out_key = Some(c.opt_out_key);
        h.audio
            .push(audio("message", &c.message, c.message_length)?);
        if let Some(conf) = &c.confirmation {
            h.audio.push(audio("confirmation", conf, length_of(conf))?);
        }
        if let Some(vm) = c.amd.as_ref().and_then(|a| a.voicemail.as_ref()) {
            h.audio.push(audio("voicemail", vm, length_of(vm))?);
        }
    }
    Ok(Record::RunStart(Box::new(h)))
}
