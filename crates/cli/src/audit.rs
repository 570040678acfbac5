//! The audit log at the CLI: where it lives, the run header, and `crieur audit …`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use crieur_audit::{AuditLog, Options, VerifyOptions};

use crate::campaign::Campaign;
use crate::output::Format;

/// Exit code when `audit verify` finds a break or `audit replay` a violation.
pub const EXIT_FINDINGS: u8 = 1;

pub use crieur_runner::log::{dir_for, keygen};

/// The clock, read at the edge (records are stamped by the binary).
pub fn now() -> DateTime<Utc> {
    #[allow(clippy::disallowed_methods)]
    Utc::now()
}

/// Which audit log a reading command works on: DIR, else `--audit`, else `<store>.audit`.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// The audit log directory (default: --audit, else `<store>.audit`).
    dir: Option<PathBuf>,
    /// The audit log directory (default: `<store>.audit`).
    #[arg(long, env = "CRIEUR_AUDIT")]
    audit: Option<PathBuf>,
    /// The store whose log it is (`<store>.audit`).
    #[arg(long, env = "CRIEUR_STORE", default_value = "crieur.store")]
    store: PathBuf,
}

impl LogArgs {
    /// The log directory.
    pub fn dir(&self) -> PathBuf {
        match self.dir.as_ref().or(self.audit.as_ref()) {
            Some(d) => d.clone(),
            None => dir_for(&self.store, None),
        }
    }
}

/// Which audit logs `verify` and `replay` read: the DIRs (one per node of a shared
/// PostgreSQL store), else `--audit`, else `<store>.audit`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The audit log directories (default: --audit, else `<store>.audit`). Several: the logs
    /// of several nodes, each its own chain, read together.
    dirs: Vec<PathBuf>,
    /// The audit log directory (default: `<store>.audit`).
    #[arg(long, env = "CRIEUR_AUDIT")]
    audit: Option<PathBuf>,
    /// The store whose log it is (`<store>.audit`).
    #[arg(long, env = "CRIEUR_STORE", default_value = "crieur.store")]
    store: PathBuf,
}

impl LogsArgs {
    /// The log directories, each once.
    pub fn dirs(&self) -> anyhow::Result<Vec<PathBuf>> {
        let dirs = match (&self.dirs[..], &self.audit) {
            ([], Some(d)) => vec![d.clone()],
            ([], None) => vec![dir_for(&self.store, None)],
            (d, _) => d.to_vec(),
        };
        let mut seen = std::collections::HashSet::new();
        for d in &dirs {
            if !seen.insert(std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())) {
                anyhow::bail!("{} is given twice: give each node's log once", d.display());
            }
        }
        Ok(dirs)
    }
}

#[derive(clap::Subcommand)]
pub enum AuditCmd {
    /// Checks the chain, seq continuity and checkpoint signatures; reports the first break
    /// (segment, line, seq) and the records no checkpoint covers yet (each log given: one
    /// chain per node). Exit 1 on any break, and with --pubkey when the log has no
    /// checkpoint at all (nothing in it is proven).
    Verify {
        #[command(flatten)]
        log: LogsArgs,
        /// The Ed25519 public key (64 hex characters) checkpoints must be signed with.
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// A checkpoint exported earlier (`audit checkpoint --export`): the log must still
        /// hold that record with that hash (shows whether its newest records were cut).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
    /// Re-derives every dial decision from its recorded inputs and lists each violation.
    /// Several logs (one per node sharing a PostgreSQL store) are replayed merged in time
    /// order: caps and opt-outs across nodes, an INVITE's outcome in another node's log.
    /// Exit 1 if there is any. `json`: the whole report; `jsonl`, `csv`: one violation a row.
    Replay {
        #[command(flatten)]
        log: LogsArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One row per call (CDR-style).
    Export {
        #[command(flatten)]
        log: LogArgs,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Same as --format csv.
        #[arg(long, hide = true, conflicts_with_all = ["json", "format"])]
        csv: bool,
        /// Same as --format json.
        #[arg(long, hide = true, conflicts_with = "format")]
        json: bool,
    },
    /// A self-contained HTML page for a reviewer: campaign, rules, period, verification,
    /// calls per hour against consent, timings against the 2 s rule, violations, every call.
    Report {
        #[command(flatten)]
        log: LogArgs,
        /// The page to write.
        #[arg(long)]
        html: PathBuf,
        /// The Ed25519 public key (64 hex characters) checkpoints must be signed with.
        #[arg(long)]
        pubkey: Option<PathBuf>,
    },
    /// Writes the latest signed checkpoint to a file, for anchoring outside the system
    /// (give it to `audit verify --checkpoint` later).
    Checkpoint {
        #[command(flatten)]
        log: LogArgs,
        /// The file to write the checkpoint (JSON) to.
        #[arg(long)]
        export: PathBuf,
    },
    /// After a crash tore the last record: sets the torn bytes aside (kept, hashed, recorded).
    Repair {
        #[command(flatten)]
        log: LogArgs,
    },
    /// Makes a signing key: the secret (hex) in FILE (mode 0600), the public key next to it
    /// (FILE with the extension `.pub`, e.g. audit.key → audit.pub), and on stdout.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

/// Verifies one log and prints what it found.
fn verify_one(dir: &Path, opts: &crieur_audit::VerifyOptions) -> anyhow::Result<ExitCode> {
    let rep = crieur_audit::verify(dir, opts)?;
    print!("{}", rep.describe(dir, opts.public_key.is_some()));
    match &rep.first_break {
        None => {
            println!("OK        the chain is intact");
            Ok(ExitCode::SUCCESS)
        }
        Some(b) => {
            println!("BROKEN    {b}");
            Ok(ExitCode::from(EXIT_FINDINGS))
        }
    }
}

pub fn run(cmd: &AuditCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::Verify {
            log,
            pubkey,
            checkpoint,
        } => {
            let mut opts = verify_options(pubkey.as_deref())?;
            if let Some(c) = checkpoint {
                let text = std::fs::read_to_string(c)
                    .with_context(|| format!("reading {}", c.display()))?;
                opts.anchor = Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("{}: not an exported checkpoint", c.display()))?,
                );
            }
            let mut code = ExitCode::SUCCESS;
            for dir in &log.dirs()? {
                if verify_one(dir, &opts)? != ExitCode::SUCCESS {
                    code = ExitCode::from(EXIT_FINDINGS);
                }
            }
            Ok(code)
        }
        AuditCmd::Replay { log, format } => {
            let dirs = log.dirs()?;
            let dirs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
            let rep = crieur_audit::replay::replay_logs(&dirs)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rep)?),
                Format::Table => print!("{}", rep.table()),
                Format::Jsonl | Format::Csv => {
                    let mut rows = crate::output::Rows::new(
                        std::io::stdout().lock(),
                        *format,
                        &[
                            ("segment", 0),
                            ("line", 0),
                            ("seq", 0),
                            ("kind", 0),
                            ("contact", 0),
                            ("detail", 0),
                        ],
                    )?;
                    for v in &rep.violations {
                        // Each field as the report's JSON has it.
                        let j = serde_json::to_value(v)?;
                        let f = |k: &str| j.get(k).cloned().unwrap_or_default();
                        rows.row(&[
                            f("segment"),
                            f("line"),
                            f("seq"),
                            f("kind"),
                            f("contact"),
                            f("detail"),
                        ])?;
                    }
                    rows.finish()?;
                }
            }
            Ok(if rep.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FINDINGS)
            })
        }
        AuditCmd::Export {
            log,
            format,
            csv: _,
            json,
        } => {
            let rows = crieur_audit::export::calls(&log.dir())?;
            let format = if *json { Format::Json } else { *format };
            // The CSV rendering: the header row first, even when there is no call.
            let as_csv = || -> anyhow::Result<Vec<u8>> {
                let mut w = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(Vec::new());
                w.write_record(crieur_audit::export::COLUMNS)?;
                for r in &rows {
                    w.serialize(r)?;
                }
                Ok(w.into_inner()?)
            };
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Jsonl => {
                    for r in &rows {
                        println!("{}", serde_json::to_string(r)?);
                    }
                }
                Format::Csv => {
                    use std::io::Write;
                    std::io::stdout().lock().write_all(&as_csv()?)?;
                }
                Format::Table => {
                    // The CSV rendering, aligned.
                    print!("{}", crate::output::csv_as_table(&as_csv()?)?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Report { log, html, pubkey } => {
            let rep =
                crieur_audit::report::html_report(&log.dir(), &verify_options(pubkey.as_deref())?)?;
            std::fs::write(html, &rep.html)
                .with_context(|| format!("writing {}", html.display()))?;
            println!(
                "{}: {} calls, {} violations, chain {}",
                html.display(),
                rep.calls,
                rep.violations,
                if rep.intact { "intact" } else { "BROKEN" }
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Checkpoint { log, export } => {
            let dir = log.dir();
            match crieur_audit::latest_checkpoint(&dir)? {
                Some(cp) => {
                    std::fs::write(export, format!("{}\n", serde_json::to_string(&cp)?))
                        .with_context(|| format!("writing {}", export.display()))?;
                    println!(
                        "{}: the latest checkpoint of {} (keep it outside your systems; check the log against it with `crieur audit verify --checkpoint {}`)",
                        export.display(),
                        dir.display(),
                        export.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => anyhow::bail!(
                    "{}: no checkpoint yet (checkpoints need a signing key: --audit-key or [audit] signing_key_file)",
                    dir.display()
                ),
            }
        }
        AuditCmd::Repair { log } => {
            let dir = &log.dir();
            match AuditLog::repair_torn_tail(dir, Options::default(), now())? {
                Some(t) => println!(
                    "{}: torn tail of {} bytes (sha256 {}) moved to {}; a torn-tail record says so",
                    t.segment, t.bytes, t.sha256, t.saved_as
                ),
                None => println!("{}: not torn; nothing to do", dir.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Keygen { out } => {
            let (public, pub_path) = keygen(out)?;
            eprintln!(
                "secret key in {} (mode 0600), public key in {}",
                out.display(),
                pub_path.display()
            );
            println!("{}", hex::encode(public.to_bytes()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Verification options with the pinned public key, if one is given.
fn verify_options(pubkey: Option<&Path>) -> anyhow::Result<VerifyOptions> {
    let mut opts = VerifyOptions::default();
    if let Some(p) = pubkey {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        opts.public_key = Some(crieur_audit::verifying_key_from_hex(&text)?);
    }
    Ok(opts)
}

/// The audit options every writing command gets.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub dir: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Ctx {
    /// Checks, before anything is created, that `--audit-key` can be read (a campaign's
    /// own key was checked when the campaign was loaded).
    pub fn preflight(&self) -> Result<(), crate::input::InputErrors> {
        match self
            .key
            .as_deref()
            .and_then(crate::campaign::signing_key_problem)
        {
            Some(why) => Err(crate::input::InputError::new(Path::new("--audit-key"), why).into()),
            None => Ok(()),
        }
    }

    /// Opens the log for a command working on `store`.
    pub fn open(&self, store: &Path, campaign: Option<&Campaign>) -> anyhow::Result<AuditLog> {
        let dir = dir_for(store, self.dir.as_deref());
        Ok(crieur_runner::log::open(
            &dir,
            self.key.as_deref(),
            campaign,
        )?)
    }
}
