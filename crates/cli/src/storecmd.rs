//! `crieur import` and `crieur optout`: the durable store from the command line.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use crieur_config::optouts::number;
use crieur_scheduler::E164;

use crate::input::{InputError, InputErrors};

/// The terminal's progress bar, fed by the contacts reader.
struct Bar<'a>(&'a indicatif::ProgressBar);

impl crieur_config::contacts::Progress for Bar<'_> {
    fn length(&self, bytes: u64) {
        self.0.set_length(bytes);
    }
    fn position(&self, bytes: u64) {
        self.0.set_position(bytes);
    }
}

/// `crieur import`: all-or-nothing by default; with `skip_invalid`, valid rows are imported
/// and each rejected row is written, with its reasons, to `rejects`.
pub fn import(
    campaign: &Path,
    contacts: &Path,
    opts: &crate::contacts::Options,
    store: &Path,
    skip_invalid: bool,
    rejects: &Path,
    actx: &crate::audit::Ctx,
) -> anyhow::Result<ExitCode> {
    let campaign_path = campaign;
    let campaign = crate::campaign::load(campaign)?;
    // A progress bar on a terminal; nothing when stderr is a file or a pipe.
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let len = std::fs::metadata(contacts).map_or(0, |m| m.len());
        let b = indicatif::ProgressBar::new(len);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            b.set_style(style);
        }
        b.set_message("validating");
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let (loaded, rejected, csv_header) = if skip_invalid {
        crate::contacts::load_lenient(contacts, opts, Some(&Bar(&bar)))?
    } else {
        (
            crate::contacts::load_with_progress(contacts, opts, &Bar(&bar))?,
            Vec::new(),
            csv::StringRecord::new(),
        )
    };
    // Everything is validated before the store is created or touched.
    actx.preflight()?;
    let header = crieur_runner::header::header("import", Some((&campaign, campaign_path)))?;
    bar.set_message("writing");
    if !rejected.is_empty() {
        let mut w = csv::Writer::from_path(rejects)
            .with_context(|| format!("writing {}", rejects.display()))?;
        let mut h: Vec<String> = csv_header.iter().map(str::to_owned).collect();
        h.extend(["line".to_owned(), "reject_reason".to_owned()]);
        w.write_record(&h)?;
        for r in &rejected {
            let mut row = r.fields.clone();
            row.push(r.line.to_string());
            row.push(r.reasons.join("; "));
            w.write_record(&row)?;
        }
        w.flush()?;
        println!(
            "{} rows rejected, written with their reasons to {}",
            rejected.len(),
            rejects.display()
        );
    }
    let s = crate::stores::open(store, true)?;
    let mut log = actx.open(store, Some(&campaign))?;
    let stats = crieur_runner::ops::import_contacts(
        &*s,
        &mut log,
        &header,
        &campaign.id,
        contacts,
        &loaded,
        rejected.len(),
        crate::audit::now(),
    )
    .with_context(|| {
        format!(
            "importing {} into {}",
            contacts.display(),
            crate::stores::shown(store)
        )
    })?;
    bar.finish_and_clear();
    crate::status::warn_never_callable(&campaign, &loaded.contacts, crate::audit::now());
    if let Some(w) = campaign.id_warning() {
        println!("warning: {}: {w}", campaign_path.display());
    }
    println!(
        "{}: imported into {} (campaign `{}`): {} new contacts, {} updated, {} consent records added, from {} rows",
        contacts.display(),
        crate::stores::shown(store),
        campaign.id,
        stats.created,
        stats.updated,
        stats.consents_added,
        loaded.rows
    );
    Ok(ExitCode::SUCCESS)
}

/// The rejected lines of an opt-out list: `line,number,reject_reason`.
fn write_optout_rejects(text: &str, errors: &[InputError], path: &Path) -> anyhow::Result<()> {
    let lines: Vec<&str> = text.lines().collect();
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
    w.write_record(["line", "number", "reject_reason"])?;
    for e in errors {
        let line = e.line.unwrap_or(0);
        let number = lines.get(line.wrapping_sub(1)).map_or("", |l| l.trim());
        w.write_record([
            line.to_string(),
            crate::input::cap(number.to_owned()),
            e.message.clone(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// Records an opt-out list change in the audit log, durably.
fn audit_change(
    store: &Path,
    actx: &crate::audit::Ctx,
    action: &str,
    numbers: &[E164],
    source: &str,
    at: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    let mut log = actx.open(store, None)?;
    let header = crieur_runner::header::header("optout", None)?;
    Ok(crieur_runner::ops::record_opt_out_change(
        &mut log, &header, action, numbers, source, at,
    )?)
}

/// `crieur optout add|remove|list|import`.
pub fn optout(
    store: &Path,
    action: &crate::OptOutAction,
    actx: &crate::audit::Ctx,
) -> anyhow::Result<ExitCode> {
    use crate::OptOutAction as A;
    actx.preflight()?;
    // The binary is where the clock is read: the opt-out's own timestamp.
    #[allow(clippy::disallowed_methods)]
    let now = Utc::now();
    match action {
        A::Add { number: n, .. } => {
            let n = number(n, Path::new("<argument>"), None)?;
            let s = crate::stores::open(store, true)?;
            let new = s.add_opt_out(&n, now, "crieur optout add")?;
            audit_change(
                store,
                actx,
                "add",
                std::slice::from_ref(&n),
                "crieur optout add",
                now,
            )?;
            println!(
                "{}",
                if new {
                    "opt-out recorded (durable)"
                } else {
                    "already opted out"
                }
            );
        }
        A::Remove { number: n, .. } => {
            let n = number(n, Path::new("<argument>"), None)?;
            let s = crate::stores::open(store, false)?;
            let removed = s.remove_opt_out(&n)?;
            if removed {
                audit_change(
                    store,
                    actx,
                    "remove",
                    std::slice::from_ref(&n),
                    "crieur optout remove",
                    now,
                )?;
            }
            println!(
                "{}",
                if removed {
                    "opt-out removed"
                } else {
                    "not on the opt-out list"
                }
            );
        }
        A::Check { number: n } => {
            let n = number(n, Path::new("<argument>"), None)?;
            let s = crate::stores::open(store, false)?;
            // Exit 0 when listed, 1 when not, for scripts (`if crieur optout check …`).
            return Ok(if s.is_opted_out(&n)? {
                println!("opted out");
                ExitCode::SUCCESS
            } else {
                println!("not opted out");
                ExitCode::from(1)
            });
        }
        A::List { format } => {
            let s = crate::stores::open(store, false)?;
            let list = s.opt_outs()?;
            if *format == crate::output::Format::Table {
                println!(
                    "{} opt-outs (numbers are stored only as keyed hashes)",
                    list.len()
                );
            }
            let out = std::io::stdout();
            let mut rows = crate::output::Rows::new(
                out.lock(),
                *format,
                &[("number_hash", 64), ("at", 20), ("source", 0)],
            )?;
            for o in list {
                rows.row(&[
                    o.number_hash.to_string().into(),
                    crate::output::rfc3339(o.at).into(),
                    o.source.into(),
                ])?;
            }
            rows.finish()?;
        }
        A::Import {
            file,
            skip_invalid,
            rejects,
            ..
        } => {
            // A byte-order mark is dropped; bytes that are not UTF-8 are located.
            let text = crate::input::read_text(file, "opt-out list")?;
            let (numbers, errors) = crieur_config::optouts::parse(file, &text);
            if !errors.is_empty() && !skip_invalid {
                return Err(InputErrors(errors).into());
            }
            if !errors.is_empty() {
                write_optout_rejects(&text, &errors, rejects)?;
                println!(
                    "{} lines rejected, written with their reasons to {}",
                    errors.len(),
                    rejects.display()
                );
            }
            let s = crate::stores::open(store, true)?;
            let source = format!(
                "import {}",
                file.file_name().map_or("-".into(), |f| f.to_string_lossy())
            );
            let new = s.add_opt_outs(&numbers, now, &source)?;
            audit_change(store, actx, "add", &numbers, &source, now)?;
            println!(
                "{}: {} numbers, {} new opt-outs recorded (durable)",
                file.display(),
                numbers.len(),
                new
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
