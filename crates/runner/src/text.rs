//! The run as the operator reads it, as text: a one-contact run's call and refusals, the
//! breaker's transitions, the counters' progress line.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use crieur_config::text::{human_duration, rfc3339};
use crieur_engine::{BreakerState, Cause};
use crieur_media::uac::CallReport;
use crieur_scheduler::Decision;

use crate::{Counters, Event, Refusal};

/// `crieur status` without `--contacts`: where a campaign stands from the store's counters
/// and its due index (no contact read): contacts, remaining and done, the next due instant.
pub fn campaign_counts(
    id: &str,
    name: &str,
    now: DateTime<Utc>,
    p: crieur_store::Progress,
    next_due: Option<DateTime<Utc>>,
) -> String {
    let mut out = format!("campaign  {id} (`{name}`) at {}\n", rfc3339(now));
    let _ = writeln!(out, "contacts  {}", p.remaining + p.done);
    let _ = writeln!(
        out,
        "remaining {} (the run decides each again when it is due)",
        p.remaining
    );
    let _ = writeln!(
        out,
        "done      {} (the run is done with them: opted out, a final outcome, out of attempts, never callable)",
        p.done
    );
    let _ = match next_due {
        Some(t) if t <= now => writeln!(out, "next due  {} (due now)", rfc3339(t)),
        Some(t) => writeln!(
            out,
            "next due  {} (in {})",
            rfc3339(t),
            human_duration(t - now)
        ),
        None => writeln!(out, "next due  -"),
    };
    out.push_str("(from the store's counters; `--contacts` evaluates every contact now)\n");
    out
}

/// Why the contact was not dialled, as the decision recorded it.
pub fn refusal(number: &str, r: &Refusal) -> String {
    let mut out = String::new();
    let _ = write_refusal(&mut out, number, r);
    out
}

fn write_refusal(out: &mut String, number: &str, r: &Refusal) -> std::fmt::Result {
    if let Some(why) = &r.refused {
        writeln!(out, "refused   {number}: {why}")?;
        return Ok(());
    }
    match &r.decision {
        Decision::Skip(s) => {
            writeln!(out, "refused   the policy says SKIP at {}:", rfc3339(r.at))?;
            for reason in &s.reasons {
                writeln!(out, "  reason  {reason}")?;
            }
            if let Some(n) = s.next_eligible {
                writeln!(out, "  next    {}", rfc3339(n))?;
            }
        }
        Decision::Dial(d) => writeln!(
            out,
            "refused   the decision at {} held only until {}: too close to send the INVITE",
            rfc3339(r.at),
            rfc3339(d.valid_until)
        )?,
    }
    Ok(())
}

/// The call as the operator reads it: its timeline, codec, audio, RTCP, keys, opt-out and
/// outcome.
pub fn call_report(report: &CallReport) -> String {
    let mut out = String::new();
    let _ = write_call_report(&mut out, report);
    out
}

fn write_call_report(out: &mut String, report: &CallReport) -> std::fmt::Result {
    for (at, what) in &report.timeline {
        writeln!(out, "{:>9.3}s {what}", at.as_secs_f64())?;
    }
    writeln!(
        out,
        "codec     {}",
        report.codec.map_or("-".to_owned(), |c| c.name().to_owned())
    )?;
    writeln!(
        out,
        "audio     answer → first audio {}; {} RTP packets sent",
        report
            .answer_to_first_audio
            .map_or("-".to_owned(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1000.0
            )),
        report.rtp_sent
    )?;
    if report.rtcp.sent > 0 {
        let q = &report.rtcp;
        writeln!(
            out,
            "rtcp      {} reports sent; far end: {}",
            q.sent,
            match (q.fraction_lost(), q.jitter_ms()) {
                (Some(loss), Some(jitter)) => format!(
                    "{:.1} % lost ({} packets), jitter {jitter:.1} ms{}",
                    loss * 100.0,
                    q.last_report.map_or(0, |b| b.cumulative_lost),
                    q.round_trip.map_or(String::new(), |d| format!(
                        ", round trip {} ms",
                        d.as_millis()
                    ))
                ),
                _ => "no report".to_owned(),
            }
        )?;
    }
    let keys: Vec<String> = report
        .keys
        .iter()
        .map(|(d, m, at)| format!("{d} by {} at {:.3}s", m.as_str(), at.as_secs_f64()))
        .collect();
    writeln!(
        out,
        "keys      {}",
        if keys.is_empty() {
            "none".to_owned()
        } else {
            keys.join(", ")
        }
    )?;
    writeln!(
        out,
        "opt-out   {}",
        if report.opt_out_recorded {
            "recorded"
        } else {
            "not recorded"
        }
    )?;
    let e = &report.ending;
    writeln!(
        out,
        "outcome   {} (SIP {}, {})",
        e.outcome.as_str(),
        e.sip_status.map_or("-".to_owned(), |s| s.to_string()),
        e.reason
    )?;
    Ok(())
}

/// The breaker's transition, for the operator.
pub fn breaker_line(t: &crieur_engine::Transition) -> String {
    let why = match &t.cause {
        Cause::Fault(f) => crieur_dial::fault::describe(f),
        c => c.code().to_owned(),
    };
    match t.to {
        BreakerState::Open { until } => format!(
            "breaker   OPEN: dialling paused until {} after {} trunk fault(s) in a row; last: {why}",
            until.to_rfc3339(),
            t.consecutive_faults
        ),
        BreakerState::HalfOpen => format!("breaker   half-open: one probe call ({why})"),
        BreakerState::Closed => format!("breaker   closed: dialling resumes ({why})"),
        BreakerState::Stopped => format!(
            "breaker   STOPPED: {why}. Dialling stops until an operator fixes the trunk settings and runs again; no contact's attempt was used by this fault"
        ),
    }
}

/// The run's counters on one line (the progress line).
pub fn counters_line(c: &Counters) -> String {
    let mut s = format!(
        "dialled {} · answered {} · opted out {} · failed {} · remaining {} · {:.1} calls/s · {} in progress",
        c.dialled, c.answered, c.opted_out, c.failed, c.remaining, c.calls_per_second, c.in_flight
    );
    if c.trunk_refused > 0 {
        s.push_str(&format!(" · {} refused by the trunk", c.trunk_refused));
    }
    if c.paused {
        s.push_str(" · paused");
    }
    if let Some(n) = c.idle_until {
        s.push_str(&format!(" · idle until {}", rfc3339(n)));
    }
    if let Some(t) = &c.trunk {
        s.push_str(&format!(" · {t}"));
    }
    s
}

/// An event of the run as a line for the operator (`now`: to say how far away the next due
/// contact is); `None` for the events shown otherwise (progress) or not at all.
pub fn event_line(e: &Event, now: DateTime<Utc>) -> Option<String> {
    Some(match e {
        Event::Recovered(r) => format!("recovered {r}"),
        Event::Breaker(t) => breaker_line(t),
        Event::Idle { next_due } => format!(
            "idle      no contact is dialable now; the next becomes due at {} (in {})",
            rfc3339(*next_due),
            human_duration(*next_due - now)
        ),
        Event::Stopping {
            reason,
            in_flight,
            drain,
            ordered: true,
        } => format!(
            "stopping  {reason}: no new calls; {in_flight} in progress get up to {} s (again to hang up now)",
            drain.as_secs()
        ),
        Event::HangingUp { ordered: true } => "stopping  now: hanging up every call".to_owned(),
        Event::LateOptOut { number, recorded } => format!(
            "ALERT: {number} pressed the opt-out key but it could not be recorded during the call; {}",
            if *recorded {
                "it is now recorded"
            } else {
                "it is STILL NOT recorded: add it with `crieur optout add`"
            }
        ),
        _ => return None,
    })
}
