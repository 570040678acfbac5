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
    if let Some(c) = owner(store)? {
        return import_through(&c, &campaign, contacts, opts, skip_invalid);
    }
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
    // All or nothing: the file split by contact id on disk (bounded memory), every part
    // validated, before anything is written; --skip-invalid reads it whole.
    let mut never = crieur_config::text::NeverWarnings::default();
    let now = crate::audit::now();
    let (loaded, rejected, csv_header, split) = if skip_invalid {
        let (l, r, h) = crate::contacts::load_lenient(contacts, opts, Some(&Bar(&bar)))?;
        never.add(&campaign, &l.contacts, now);
        (l, r, h, None)
    } else {
        let bar = Some(&Bar(&bar) as &dyn crate::contacts::Progress);
        let s = crieur_runner::ops::split_contacts(contacts, opts, &campaign, now, bar, &mut never);
        (Default::default(), Vec::new(), Default::default(), Some(s?))
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
    let source = crieur_runner::ops::Source::of(split.as_ref(), &loaded, rejected.len());
    let rows = split.as_ref().map_or(loaded.rows, |s| s.rows);
    let stats = crieur_runner::ops::import_contacts(
        &*s,
        &mut log,
        &header,
        &campaign.id,
        contacts,
        source,
        now,
    )
    .with_context(|| {
        format!(
            "importing {} into {}",
            contacts.display(),
            crate::stores::shown(store)
        )
    })?;
    bar.finish_and_clear();
    print!("{}", never.text());
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
        rows
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
    if let Some(c) = owner(store)? {
        return optout_through(&c, action);
    }
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

/// The client of the process running a campaign on `store`, if one is (its owner file names
/// a live process): ops commands then go through its control API instead of failing on the
/// store's lock.
fn owner(store: &Path) -> anyhow::Result<Option<crieur_control::client::Client>> {
    let c = crieur_control::client::for_store(store)?;
    c.iter().for_each(|c| eprintln!("{}", c.note(store)));
    Ok(c)
}

/// An API refusal: located input errors (exit 2) as the CLI would print them, else the
/// message.
fn api_error(e: crieur_control::Error) -> anyhow::Error {
    match &e {
        crieur_control::Error::Api(a) if !a.located().is_empty() => InputErrors(a.located()).into(),
        _ => e.into(),
    }
}

/// A file's bytes, or a located error.
fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| InputError::new(path, format!("cannot read {what}: {e}")))
        .map_err(|e| InputErrors::from(e).into())
}

/// `--skip-invalid` while a campaign runs: refused (the API imports all or nothing).
fn no_skip(skip_invalid: bool, what: &str) -> anyhow::Result<()> {
    if skip_invalid {
        anyhow::bail!(
            "--skip-invalid is not available while a campaign runs on this store: fix {what} (all or nothing), or import it after the run"
        );
    }
    Ok(())
}

/// `crieur import` through the running owner: the file's bytes, validated there exactly as
/// here (all or nothing), written, audited, and handed to the running planner.
fn import_through(
    c: &crieur_control::client::Client,
    campaign: &crieur_config::campaign::Campaign,
    contacts: &Path,
    opts: &crate::contacts::Options,
    skip_invalid: bool,
) -> anyhow::Result<ExitCode> {
    no_skip(skip_invalid, "the file")?;
    let bytes = read(contacts, "the contacts file")?;
    let region = opts.default_region.map(|r| format!("{r:?}"));
    let v = c
        .import_contacts(
            &campaign.id,
            &contacts.display().to_string(),
            opts.delimiter,
            region.as_deref(),
            &bytes,
        )
        .map_err(api_error)?;
    println!(
        "{}: imported into the running campaign `{}`: {} new contacts, {} updated, {} consent records added, from {} rows",
        contacts.display(),
        campaign.id,
        v.created,
        v.updated,
        v.consents_added,
        v.rows
    );
    Ok(ExitCode::SUCCESS)
}

/// `crieur optout …` through the running owner.
fn optout_through(
    c: &crieur_control::client::Client,
    action: &crate::OptOutAction,
) -> anyhow::Result<ExitCode> {
    use crate::OptOutAction as A;
    let arg = |n: &str| -> anyhow::Result<String> {
        Ok(number(n, Path::new("<argument>"), None)?.to_string())
    };
    match action {
        A::Add { number: n, .. } => {
            let (new, hung_up) = c
                .add_opt_out(&arg(n)?, "crieur optout add")
                .map_err(api_error)?;
            println!(
                "{}",
                if new {
                    "opt-out recorded (durable)"
                } else {
                    "already opted out"
                }
            );
            if hung_up > 0 {
                println!("its call in progress was hung up");
            }
        }
        A::Remove { number: n, .. } => {
            let removed = c.remove_opt_out(&arg(n)?).map_err(api_error)?;
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
            return Ok(if c.is_opted_out(&arg(n)?).map_err(api_error)? {
                println!("opted out");
                ExitCode::SUCCESS
            } else {
                println!("not opted out");
                ExitCode::from(1)
            });
        }
        A::List { .. } => anyhow::bail!(
            "`crieur optout list` reads the store, which a running campaign holds (pid {}): run it after the run; `crieur optout check NUMBER` works now",
            c.owner.pid
        ),
        A::Import {
            file, skip_invalid, ..
        } => {
            no_skip(*skip_invalid, "the list")?;
            let bytes = read(file, "the opt-out list")?;
            let (numbers, new) = c
                .import_opt_outs(&file.display().to_string(), &bytes)
                .map_err(api_error)?;
            println!(
                "{}: {numbers} numbers, {new} new opt-outs recorded (durable)",
                file.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
