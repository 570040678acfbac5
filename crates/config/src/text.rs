//! What the command line prints about a campaign and its contacts, as text: instants, waits,
//! a contact's decision explained, a campaign's summary.

use chrono::{DateTime, SecondsFormat, Utc};
use crieur_scheduler::{tzdb_version, Contact, Decision, Evaluator};

use crate::campaign::Campaign;

/// Every instant crieur prints: RFC 3339, UTC, whole seconds, `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A wait in human units: `42 days`, `3 h 05 min`, `12 min`, `40 s`.
pub fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s} s"),
        120..=3599 => format!("{} min", s / 60),
        3600..=172_799 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days", s / 86_400),
    }
}

/// `crieur explain`: the decision for contact `c` of `campaign` at `at`, with everything it
/// rests on (local times, the consent record, the rule set, the next eligible instant).
pub fn explain(
    campaign: &Campaign,
    c: &Contact,
    at: DateTime<Utc>,
) -> Result<String, std::fmt::Error> {
    let policy = &campaign.policy;
    let mut out = String::new();
    use std::fmt::Write as _;
    writeln!(out, "contact   {} {}", c.id(), c.phone())?;
    writeln!(out, "zones     {}", c.describe_zones())?;
    writeln!(out, "at        {}", rfc3339(at))?;
    writeln!(
        out,
        "rule set  {} ({}); tz database {}",
        policy.ruleset().name(),
        policy.ruleset().version(),
        tzdb_version()
    )?;
    writeln!(
        out,
        "call      D = {} s (ring timeout {} s + message {:.1} s)",
        policy.call_duration().as_secs(),
        campaign.ring_timeout.as_secs(),
        campaign.message_length.as_secs_f64()
    )?;
    match Evaluator::new(policy).decide(c, at) {
        Decision::Dial(d) => {
            let rec = &c.consents()[d.consent];
            writeln!(out, "decision  DIAL")?;
            for r in &d.readings {
                writeln!(out, "  local   {r}")?;
            }
            writeln!(
                out,
                "  consent #{}: `{}`, granted {}, source `{}`, proof `{}`",
                d.consent,
                rec.windows,
                rfc3339(rec.granted_at),
                rec.source,
                rec.proof
            )?;
            // `valid_until` looks only an hour ahead; the exact end is that of the dialable
            // interval containing `at` (searched up to 8 days ahead).
            let (until, more) = Evaluator::new(policy)
                .dialable_until(c, at, 8)
                .unwrap_or((d.valid_until, true));
            writeln!(
                out,
                "  a call may start until {}{} (exclusive)",
                if more { "at least " } else { "" },
                rfc3339(until)
            )?;
        }
        Decision::Skip(s) => {
            writeln!(out, "decision  SKIP")?;
            for r in &s.readings {
                writeln!(out, "  local   {r}")?;
            }
            for r in &s.reasons {
                writeln!(out, "  reason  {r}")?;
            }
            match s.next_eligible {
                Some(n) => {
                    let readings: Vec<String> = c
                        .zones()
                        .0
                        .iter()
                        .map(|z| {
                            format!(
                                "{} {}",
                                n.with_timezone(z).format("%a %Y-%m-%d %H:%M:%S"),
                                z
                            )
                        })
                        .collect();
                    writeln!(
                        out,
                        "  next    {} (in {}; {})",
                        rfc3339(n),
                        human_duration(n - at),
                        readings.join("; ")
                    )?
                }
                None => writeln!(
                    out,
                    "  next    none within {} days",
                    crieur_scheduler::NEXT_ELIGIBLE_HORIZON_DAYS
                )?,
            }
        }
    }
    Ok(out)
}

/// `crieur check`'s summary of a campaign that loaded (its warnings follow it).
pub fn campaign_summary(c: &Campaign) -> String {
    let p = &c.policy;
    format!(
        "`{}` (id `{}`), rule set {} ({}), zone {}, {} schedule expression(s), D = {} s (ring {} s + message {:.1} s)\n  message {}; pacing {} call(s)/s, at most {} concurrent; retry: max attempts {}, min delay {}",
        c.name,
        c.id,
        p.ruleset().name(),
        p.ruleset().version(),
        c.zone,
        p.schedule().map_or(0, |s| s.exprs().len()),
        p.call_duration().as_secs(),
        c.ring_timeout.as_secs(),
        c.message_length.as_secs_f64(),
        c.message.display(),
        c.pacing.calls_per_second,
        c.pacing.max_concurrent_calls,
        c.retry.max_attempts.map_or("rule-set default".to_owned(), |n| n.to_string()),
        c.retry.min_delay_secs.map_or("rule-set default".to_owned(), |n| format!("{n} s")),
    )
}

/// `crieur check`'s summary of a contacts file that loaded.
pub fn contacts_summary(path: &std::path::Path, l: &crate::contacts::Loaded) -> String {
    let records: usize = l.contacts.iter().map(|c| c.consents().len()).sum();
    format!(
        "{}: ok: {} contacts, {} consent records in {} rows\n",
        path.display(),
        l.contacts.len(),
        records,
        l.rows
    )
}

/// A warning line for each contact whose zone was guessed or is doubtful.
pub fn zone_warnings(contacts: &[Contact]) -> String {
    contacts
        .iter()
        .filter_map(|c| {
            Some(format!(
                "warning: contact `{}`: {}\n",
                c.id(),
                c.zone_warning()?
            ))
        })
        .collect()
}

/// The most "never callable" warnings printed one by one.
const WARN_MAX: usize = 20;

/// The "can never be called" warnings of `check` and `import`, gathered over one or several
/// sets of contacts (an import's parts): the first [`WARN_MAX`] in words, then a count.
#[derive(Debug, Default)]
pub struct NeverWarnings {
    lines: Vec<String>,
    more: usize,
}

impl NeverWarnings {
    /// Adds the contacts of `contacts` that can never be called from `now`.
    pub fn add(&mut self, campaign: &Campaign, contacts: &[Contact], now: DateTime<Utc>) {
        let never = crate::check::never_callable_all(&campaign.policy, contacts, now);
        for (c, why) in never {
            if self.lines.len() < WARN_MAX {
                self.lines.push(format!(
                    "warning: contact `{}`: cannot be called in the next {} days from {}: {}",
                    c.id(),
                    crieur_scheduler::NEXT_ELIGIBLE_HORIZON_DAYS,
                    rfc3339(now),
                    why.describe(&campaign.policy)
                ));
            } else {
                self.more += 1;
            }
        }
    }

    /// The warnings, a line each.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(l);
            out.push('\n');
        }
        if self.more > 0 {
            out.push_str(&format!(
                "warning: … and {} more contacts that cannot be called in the next {} days (`crieur status --campaign --contacts` lists them all after an import)\n",
                self.more,
                crieur_scheduler::NEXT_ELIGIBLE_HORIZON_DAYS
            ));
        }
        out
    }
}
