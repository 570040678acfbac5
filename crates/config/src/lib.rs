//! crieur's input files as validated domain types, shared by the command line and any
//! embedder (an HTTP API): the campaign file (TOML, [`campaign`]) and the contacts file
//! (CSV, [`contacts`]), read with located errors ([`input`]: every problem with its file,
//! line, column or field, the bad value and what was expected; all of them at once).
//!
//! Validation is the policy's guard at the door: a campaign's `[caps]` may only tighten its
//! rule set's, the ring time is 15 to 300 seconds, a call must fit its recording, every
//! consent record is complete and consistent. Nothing here reads a clock.
//!
//! I/O: the `load` functions read the named file (and a campaign the files it names: its
//! recordings, its audit signing key); contacts are validated on several threads.

pub mod campaign;
pub mod check;
pub mod contacts;
pub mod input;
pub mod optouts;
pub mod split;
pub mod text;

use std::path::PathBuf;

pub use input::{InputError, InputErrors};

/// Loads a campaign and its contacts, reporting the problems of both before giving up.
pub fn load_both(
    campaign: &std::path::Path,
    contacts: &std::path::Path,
    opts: &contacts::Options,
) -> Result<(campaign::Campaign, contacts::Loaded), InputErrors> {
    match (campaign::load(campaign), contacts::load(contacts, opts)) {
        (Ok(c), Ok(l)) => Ok((c, l)),
        (c, l) => {
            let mut all = c.err().map(|e| e.0).unwrap_or_default();
            all.extend(l.err().map(|e| e.0).unwrap_or_default());
            Err(InputErrors(all))
        }
    }
}

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input files, every problem located.
    #[error(transparent)]
    Input(#[from] InputErrors),
    /// The trunk password's environment variable is not set, or not Unicode (`not_unicode`).
    /// No `VarError` source: `VarError::NotUnicode` would carry the password itself.
    #[error("the environment variable {var} (trunk.password_env) {}", if *not_unicode { "is not valid Unicode" } else { "is not set" })]
    PasswordEnv { var: String, not_unicode: bool },
    /// The trunk password file cannot be read.
    #[error("cannot read the password file {} (trunk.password_file)", path.display())]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn examples() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
    }

    /// The library reads the shipped example files (the CLI's own tests check the messages).
    #[test]
    fn the_examples_load_from_files_and_from_text() -> Result<(), Box<dyn std::error::Error>> {
        let path = examples().join("campaign-fr.toml");
        let c = campaign::load(&path)?;
        assert_eq!(c.id, "rappel-vaccination-villeneuve");
        assert_eq!(c.ring_timeout.as_secs(), 25);
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(campaign::parse(&path, &text)?.id, c.id);
        let csv = examples().join("contacts-fr.csv");
        let loaded = contacts::load(&csv, &contacts::Options::default())?;
        let parsed = contacts::parse(&csv, &contacts::Options::default(), &std::fs::read(&csv)?)?;
        assert!(!loaded.contacts.is_empty());
        assert_eq!(loaded.contacts, parsed.contacts);
        assert_eq!(loaded.sha256, parsed.sha256);
        Ok(())
    }

    /// Every problem is located (line, column, field, value) and all are reported at once.
    #[test]
    fn a_bad_campaign_text_reports_every_problem_located() {
        let path = examples().join("bad.toml");
        let text = "name = \"x\"\nruleset = \"FR\"\nzone = \"Mars/Olympus\"\nring_timeout_secs = 5\nmessage = \"../audio/rappel-fr.wav\"\n[caps]\nrolling_max = 9\nrolling_days = 30\n";
        let Err(InputErrors(errors)) = campaign::parse(&path, text) else {
            panic!("a bad campaign was accepted");
        };
        let field = |f: &str| errors.iter().find(|e| e.field.as_deref() == Some(f));
        let zone = field("zone").unwrap_or_else(|| panic!("{errors:?}"));
        assert_eq!((zone.line, zone.column), (Some(3), Some(8)));
        assert_eq!(zone.value.as_deref(), Some("Mars/Olympus"));
        assert!(field("ring_timeout_secs").is_some(), "{errors:?}");
        // Caps may only tighten the rule set's (FR: 4 calls per 30 days).
        let caps = field("caps.rolling_max").unwrap_or_else(|| panic!("{errors:?}"));
        assert!(caps.message.contains("may only be stricter"), "{caps}");
    }

    /// The trunk password's errors are structured; the file's keeps its I/O error as the
    /// source, and an unset variable's message names it without any value.
    #[test]
    fn password_errors_keep_their_source() {
        let mut t = campaign::TrunkConfig {
            uri: "sip:127.0.0.1".into(),
            host: "127.0.0.1".into(),
            port: 5060,
            from_user: "a".into(),
            from_domain: "b".into(),
            username: Some("u".into()),
            password: Some(campaign::PasswordSource::File(
                "/nonexistent/crieur-pw".into(),
            )),
            max_call_length: std::time::Duration::from_secs(60),
            calls_per_second: None,
            max_concurrent_calls: None,
            symmetric_rtp: false,
            breaker: crieur_engine::BreakerConfig::default(),
            local_address: None,
            p_asserted_identity: None,
            transport: campaign::TrunkTransport::Udp,
            tls_ca_file: None,
            tls_identity: None,
            port_given: true,
            dns_server: None,
        };
        match t.read_password() {
            Err(e @ Error::PasswordFile { .. }) => {
                let source = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .map(std::io::Error::kind);
                assert_eq!(source, Some(std::io::ErrorKind::NotFound), "{e}");
            }
            other => panic!("{other:?}"),
        }
        t.password = Some(campaign::PasswordSource::Env(
            "CRIEUR_TEST_SURELY_UNSET_PASSWORD_VARIABLE".into(),
        ));
        match t.read_password() {
            Err(e @ Error::PasswordEnv { .. }) => assert_eq!(
                e.to_string(),
                "the environment variable CRIEUR_TEST_SURELY_UNSET_PASSWORD_VARIABLE (trunk.password_env) is not set"
            ),
            other => panic!("{other:?}"),
        }
        // A value that is not Unicode: said so, and the value (the password) is not shown.
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let var = "CRIEUR_TEST_NOT_UNICODE_PASSWORD_VARIABLE";
            std::env::set_var(var, std::ffi::OsStr::from_bytes(b"secret\xff"));
            t.password = Some(campaign::PasswordSource::Env(var.into()));
            match t.read_password() {
                Err(
                    e @ Error::PasswordEnv {
                        not_unicode: true, ..
                    },
                ) => {
                    let text = e.to_string();
                    assert!(text.ends_with("is not valid Unicode"), "{text}");
                    assert!(!text.contains("secret"), "{text}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
