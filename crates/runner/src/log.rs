//! Where a store's audit log lives, opening it with a campaign's options and signing key, and
//! making a signing key.

use std::path::{Path, PathBuf};

use crieur_audit::{AuditLog, Options};
use crieur_config::campaign::Campaign;

use crate::{Error, Result};

/// Where the audit log lives: `explicit`, else next to the store (`<store>.audit`).
pub fn dir_for(store: &Path, explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(d) => d.to_path_buf(),
        // A PostgreSQL store is shared by nodes: each keeps its own log, here by default.
        None if store.to_str().is_some_and(crieur_store::PgStore::is_url) => {
            PathBuf::from("crieur.audit")
        }
        None => {
            let mut s = store.as_os_str().to_owned();
            s.push(".audit");
            PathBuf::from(s)
        }
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Opens the log in `dir`: the campaign's checkpoint cadence, the signing key in `key` (else
/// the campaign's `[audit] signing_key_file`). A torn tail (crash mid-write) is an error:
/// nothing may be appended after it until `crieur audit repair` has set it aside.
pub fn open(dir: &Path, key: Option<&Path>, campaign: Option<&Campaign>) -> Result<AuditLog> {
    let mut opts = Options::default();
    if let Some(c) = campaign {
        if let Some(n) = c.audit.checkpoint_every {
            opts.checkpoint_every = n;
        }
        if let Some(s) = c.audit.checkpoint_secs {
            opts.checkpoint_interval = std::time::Duration::from_secs(s);
        }
    }
    let key = key
        .map(Path::to_path_buf)
        .or_else(|| campaign.and_then(|c| c.audit.signing_key_file.clone()));
    if let Some(k) = key {
        let text = std::fs::read_to_string(&k)
            .map_err(io(format!("reading the audit signing key {}", k.display())))?;
        opts.signing_key =
            Some(
                crieur_audit::signing_key_from_hex(&text).map_err(|source| Error::Key {
                    path: k.clone(),
                    source,
                })?,
            );
    }
    Ok(AuditLog::open(dir, opts)?)
}

/// Makes a signing key: the secret (hex) in `out`, mode 0600; the public key (hex) next to
/// it, `out` with the extension `.pub`. Neither file may exist already.
pub fn keygen(out: &Path) -> Result<(ed25519_dalek::VerifyingKey, PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let pub_path = out.with_extension("pub");
    if pub_path == out || pub_path.exists() {
        return Err(Error::KeyFile {
            path: pub_path.clone(),
            why: if pub_path == out {
                "the secret key file must not end in .pub (the public key goes there)"
            } else {
                "exists already; choose another --out"
            },
        });
    }
    let seed: [u8; 32] = rand::random();
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io(format!(
            "creating {} (it must not exist)",
            out.display()
        )))?;
    f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(format!("writing {}", out.display())))?;
    std::fs::write(&pub_path, format!("{}\n", hex::encode(public.to_bytes())))
        .map_err(io(format!("writing {}", pub_path.display())))?;
    Ok((public, pub_path))
}
