//! `crieur call`: one call placed the way a campaign places it — a run of one contact
//! through the same core and driver as `crieur run` (`crate::run`); this module only reports it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::anyhow;
use crieur_media::call::Outcome;
use crieur_scheduler::Decision;

use crate::campaign::Campaign;
use crate::input::{InputError, InputErrors};

/// Exit code when the policy refuses the call (a `Skip`, or an opted-out number).
pub const EXIT_REFUSED: u8 = 3;
/// Exit code when the call was placed but not answered (busy, no answer, rejected, trunk or
/// auth failure, codec mismatch, shutdown before the answer). A call answered then hung up by
/// the callee mid-message was answered: exit 0.
pub const EXIT_NOT_ANSWERED: u8 = 4;
/// Exit code when the opt-out key was pressed but could not be recorded during the call.
pub const EXIT_OPT_OUT_FAILED: u8 = 5;
/// Exit code on a trunk fault: `call` — the trunk refused the call (credentials refused, no
/// response, 5xx, no common codec), not the contact's answer; `run` — dialling was stopped
/// (credentials refused) or the run ended with the trunk's breaker open.
pub const EXIT_TRUNK_FAULT: u8 = 6;

/// `crieur call`: a run of one contact ([`crate::run::drive`], [`crieur_runner::Scope::One`]) —
/// the same core, re-check, lease, records, opt-out hook and end of call as `crieur run` —
/// reported call by call, with its exit code.
pub fn run(
    campaign: &Campaign,
    campaign_path: &Path,
    contact_id: &str,
    store_path: &Path,
    actx: &crate::audit::Ctx,
) -> anyhow::Result<ExitCode> {
    // An existing store only: a mistyped path must not silently mean "no opt-outs".
    let store = crate::stores::open(store_path, false)?;
    let id = crieur_scheduler::ContactId::new(contact_id)
        .map_err(|e| InputErrors(vec![InputError::new(Path::new("--contact"), e.to_string())]))?;
    let Some(contact) = store.contact(&campaign.id, &id)? else {
        return Err(InputErrors(vec![InputError::new(
            store_path,
            format!(
                "no contact `{contact_id}` in campaign `{}` of this store: import it with `crieur import`",
                campaign.id
            ),
        )
        .field("--contact")])
        .into());
    };
    println!("call      {} {}", contact.id(), contact.phone());
    let number = contact.phone().to_string();
    let ran = crate::run::drive(
        campaign,
        campaign_path,
        store,
        store_path,
        actx,
        crieur_runner::RunOptions {
            // The call runs to its end (the trunk's maximum call length bounds it); Ctrl-C
            // hangs it up cleanly (an opt-out in progress is recorded first).
            drain: std::time::Duration::from_secs(86_400),
            until: None,
            max_idle: None,
            scope: crieur_runner::Scope::One(Box::new(contact)),
            node_timeout: crieur_runner::NODE_TIMEOUT,
        },
        None,
    )?;
    let Some(done) = ran.calls.into_iter().next() else {
        for r in &ran.refusals {
            print!("{}", crieur_runner::text::refusal(&number, r));
        }
        if ran.refusals.is_empty() {
            println!("refused   {number}: not dialled");
        }
        return Ok(ExitCode::from(EXIT_REFUSED));
    };
    if let Decision::Dial(d) = &done.decision {
        println!(
            "policy    DIAL under consent #{} ({} {}), until {}",
            d.consent,
            d.ruleset.name,
            d.ruleset.version,
            crate::output::rfc3339(d.valid_until)
        );
    }
    let report = done.report.map_err(|e| anyhow!(e))?;
    print!("{}", crieur_runner::text::call_report(&report));
    let e = &report.ending;
    if let Some(recorded) = done.late_opt_out {
        eprintln!(
            "ALERT: {number} pressed the opt-out key but it could not be recorded during the call; {}",
            if recorded { "it is now recorded" } else { "it is STILL NOT recorded: add it with `crieur optout add`" }
        );
        return Ok(ExitCode::from(EXIT_OPT_OUT_FAILED));
    }
    if let Some(f) = crate::fault::fault_of(&report) {
        eprintln!("trunk     {}", crate::fault::describe(&f));
        eprintln!(
            "          {}",
            if !done.outcome.counts() {
                "refused before anything rang: not the contact's answer, no attempt used"
            } else {
                "something rang first: it counts as an attempt"
            }
        );
        return Ok(ExitCode::from(EXIT_TRUNK_FAULT));
    }
    Ok(match e.outcome {
        Outcome::AnsweredCompleted
        | Outcome::AnsweredOptedOut
        | Outcome::AnsweredNotInterested
        | Outcome::HungUpMidMessage => ExitCode::SUCCESS,
        _ => ExitCode::from(EXIT_NOT_ANSWERED),
    })
}
