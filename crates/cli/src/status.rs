//! `crieur campaigns` and `crieur status`: what a store holds and where a campaign stands.

use std::io::BufWriter;
use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use crieur_config::check::NeverCallable;
use crieur_dial::protocol::{standing, Standing};
use crieur_scheduler::{Contact, Evaluator, SkipReason, NEXT_ELIGIBLE_HORIZON_DAYS};
use serde_json::Value;

use crate::campaign::Campaign;
use crate::output::{human_duration, rfc3339, Format, Rows};

/// `crieur campaigns`.
pub fn campaigns(store_path: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let store = crate::stores::open(store_path, false)?;
    let stdout = std::io::stdout();
    #[rustfmt::skip]
    let cols = [("campaign", 32), ("contacts", 9), ("remaining", 9), ("done", 0)];
    let mut rows = Rows::new(BufWriter::new(stdout.lock()), format, &cols)?;
    for id in store.campaigns()? {
        let p = store.progress(&id)?;
        let total = p.remaining + p.done;
        rows.row(&[id.into(), total.into(), p.remaining.into(), p.done.into()])?;
    }
    rows.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// `crieur status --campaign`.
pub fn status(
    campaign: &Campaign,
    store_path: &Path,
    now: DateTime<Utc>,
    format: Format,
    each: bool,
) -> anyhow::Result<ExitCode> {
    let store = crate::stores::open(store_path, false)?;
    let p = store.progress(&campaign.id)?;
    if !each && format == Format::Table && p.remaining + p.done > 0 {
        let next = store.next_due(&campaign.id)?;
        let (id, name) = (&campaign.id, &campaign.name);
        print!(
            "{}",
            crieur_runner::text::campaign_counts(id, name, now, p, next)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let contacts = store.contacts(&campaign.id)?;
    if contacts.is_empty() {
        let known = store.campaigns()?;
        anyhow::bail!(
            "campaign `{}` has no contacts in {} (campaigns there: {}); import them with `crieur import`",
            campaign.id,
            crate::stores::shown(store_path),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    let mut ev = Evaluator::batch(&campaign.policy);
    let rules = crieur_runner::rules(campaign);
    let never =
        |why: &[SkipReason]| NeverCallable::from_reasons(why.to_vec()).describe(&campaign.policy);
    let mut states = Vec::with_capacity(contacts.len());
    for c in &contacts {
        states.push(standing(&rules, &*store, &mut ev, c, now)?);
    }
    let stdout = std::io::stdout();
    let out = BufWriter::new(stdout.lock());
    if format != Format::Table {
        let mut rows = Rows::new(
            out,
            format,
            &[("contact", 0), ("state", 0), ("next", 0), ("why", 0)],
        )?;
        for (c, s) in contacts.iter().zip(&states) {
            let (state, next, why): (&str, Value, Value) = match s {
                Standing::Done(why) => ("done", Value::Null, why.to_string().into()),
                Standing::Due => ("due", rfc3339(now).into(), Value::Null),
                Standing::Waiting(t) => ("waiting", rfc3339(*t).into(), Value::Null),
                Standing::Never(why) => ("never", Value::Null, never(why).into()),
            };
            rows.row(&[c.id().as_str().into(), state.into(), next, why])?;
        }
        rows.finish()?;
        return Ok(ExitCode::SUCCESS);
    }
    use std::io::Write;
    let mut out = out;
    let count = |f: fn(&Standing) -> bool| states.iter().filter(|s| f(s)).count();
    let next = states
        .iter()
        .filter_map(|s| match s {
            Standing::Waiting(t) => Some(*t),
            _ => None,
        })
        .min();
    let never: Vec<(&Contact, String)> = contacts
        .iter()
        .zip(&states)
        .filter_map(|(c, s)| match s {
            Standing::Never(why) => Some((c, never(why))),
            _ => None,
        })
        .collect();
    writeln!(
        out,
        "campaign  {} (`{}`) at {}",
        campaign.id,
        campaign.name,
        rfc3339(now)
    )?;
    writeln!(out, "contacts  {}", contacts.len())?;
    writeln!(
        out,
        "done      {} (opted out, a final outcome, or out of attempts)",
        count(|s| matches!(s, Standing::Done(_)))
    )?;
    writeln!(out, "due now   {}", count(|s| matches!(s, Standing::Due)))?;
    match next {
        Some(t) => writeln!(
            out,
            "next due  {} (in {}; {} contacts waiting)",
            rfc3339(t),
            human_duration(t - now),
            count(|s| matches!(s, Standing::Waiting(_)))
        )?,
        None => writeln!(out, "next due  -")?,
    }
    writeln!(
        out,
        "never     {} (no instant allowed in the next {NEXT_ELIGIBLE_HORIZON_DAYS} days)",
        never.len()
    )?;
    for (c, why) in never {
        writeln!(out, "  {:<20} {why}", c.id().as_str())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
