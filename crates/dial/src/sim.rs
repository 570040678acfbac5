//! `simulate`: the campaign core ([`crate::core::Core`]) — the one `crieur run` drives — on
//! a simulated clock with simulated outcomes, so what `simulate` plans is what `run` would
//! do with those outcomes.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_engine::{
    AttemptOutcome, BreakerConfig, CallVerdict, CapRules, Pacing, Planner, RetryPolicy,
};
use crieur_scheduler::{Contact, Policy};

use crate::core::{Core, Output};

/// What is wrong with an outcome mix (the text as given, and what was expected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MixError {
    /// A part of the mix is not `outcome=probability`.
    #[error("`{part}`: expected outcome=probability")]
    Part { part: String },
    /// No outcome of the simulation has this name.
    #[error("`{name}`: expected answered, optout, not-interested, busy, no-answer, failed, rejected or machine")]
    Outcome { name: String },
    /// Not a number (`source`), or not between 0 and 1.
    #[error("`{text}`: expected a probability between 0 and 1")]
    Probability {
        text: String,
        source: Option<std::num::ParseFloatError>,
    },
    #[error("the probabilities add up to more than 1")]
    Sum,
}

/// Probabilities of each outcome; what is left up to 1 is `Answered`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeMix(pub Vec<(AttemptOutcome, f64)>);

impl OutcomeMix {
    /// Parses `answered=0.5,busy=0.1,no-answer=0.3,optout=0.05`.
    pub fn parse(s: &str) -> Result<Self, MixError> {
        let mut v = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, p) = part
                .split_once('=')
                .ok_or_else(|| MixError::Part { part: part.into() })?;
            let o = match k.trim() {
                "answered" => AttemptOutcome::Answered,
                "optout" | "opted-out" => AttemptOutcome::OptedOut,
                "not-interested" => AttemptOutcome::NotInterested,
                "busy" => AttemptOutcome::Busy,
                "no-answer" => AttemptOutcome::NoAnswer,
                "failed" => AttemptOutcome::Failed,
                "rejected" => AttemptOutcome::Rejected,
                "machine" => AttemptOutcome::Machine,
                other => return Err(MixError::Outcome { name: other.into() }),
            };
            let text = p.trim();
            let bad = |source| MixError::Probability {
                text: text.into(),
                source,
            };
            let p: f64 = text.parse().map_err(|e| bad(Some(e)))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(bad(None));
            }
            v.push((o, p));
        }
        if v.iter().map(|(_, p)| p).sum::<f64>() > 1.0 + 1e-9 {
            return Err(MixError::Sum);
        }
        Ok(OutcomeMix(v))
    }

    fn draw(&self, u: f64) -> AttemptOutcome {
        let mut acc = 0.0;
        for (o, p) in &self.0 {
            acc += p;
            if u < acc {
                return *o;
            }
        }
        AttemptOutcome::Answered
    }
}

/// Simulation parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub from: DateTime<Utc>,
    pub days: u32,
    pub mix: OutcomeMix,
    pub seed: u64,
    pub caps: CapRules,
    pub retry: RetryPolicy,
    pub pacing: Pacing,
    pub ring_timeout: Duration,
    pub message_length: Duration,
}

/// One simulated attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    pub contact: usize,
    pub at: DateTime<Utc>,
    pub attempt: u32,
    pub outcome: AttemptOutcome,
    /// When the call ended.
    pub ended: DateTime<Utc>,
}

/// Runs the campaign core from `cfg.from` for `cfg.days` days; returns every attempt in
/// order. Time jumps from one [`Core::poll_timeout`] or call end to the next.
pub fn simulate(contacts: Vec<Contact>, policy: &Policy, cfg: &SimConfig) -> Vec<SimEvent> {
    let mut rng = cfg.seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        // xorshift64*: deterministic per seed, good enough to draw outcomes.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let end = cfg.from + chrono::Duration::days(i64::from(cfg.days));
    let mut core = Core::new(
        Planner::new(
            contacts,
            policy,
            cfg.caps.clone(),
            cfg.retry.clone(),
            cfg.pacing,
            cfg.from,
        ),
        BreakerConfig::default(),
    );
    // Calls in progress: (end, event index) → contact.
    let mut calls: BTreeMap<(DateTime<Utc>, usize), usize> = BTreeMap::new();
    let mut events: Vec<SimEvent> = Vec::new();
    let ring = i64::try_from(cfg.ring_timeout.as_secs()).unwrap_or(15);
    let message = i64::try_from(cfg.message_length.as_secs()).unwrap_or(0) + 1;
    let mut now = cfg.from;
    while now < end {
        let mut progressed = false;
        while let Some((&(t, e), &c)) = calls.first_key_value() {
            if t > now {
                break;
            }
            calls.remove(&(t, e));
            if let Some(ev) = events.get(e) {
                // Simulated calls never meet a trunk fault.
                core.call_ended(c, ev.ended, ev.outcome, CallVerdict::Served);
            }
            progressed = true;
        }
        core.handle_timeout(now);
        while let Some(out) = core.poll_output() {
            let Output::Dial { contact, attempt } = out else {
                continue;
            };
            progressed = true;
            core.dialled(contact);
            let outcome = cfg.mix.draw(uniform());
            // Simulated call lengths: ringing, then the message (half of it for an opt-out).
            let len = match outcome {
                AttemptOutcome::Answered | AttemptOutcome::Machine => 5 + message,
                AttemptOutcome::OptedOut | AttemptOutcome::NotInterested => 5 + message / 2,
                AttemptOutcome::NoAnswer => ring,
                _ => 2,
            };
            let ended = now + chrono::Duration::seconds(len);
            calls.insert((ended, events.len()), contact);
            events.push(SimEvent {
                contact,
                at: now,
                attempt,
                outcome,
                ended,
            });
        }
        // Next instant: a call ends, or the core has something due.
        let next = [core.poll_timeout(), calls.keys().next().map(|(t, _)| *t)]
            .into_iter()
            .flatten()
            .min();
        match next {
            None => break,
            // Due "at or before": never stand still without anything happening.
            Some(n) if n <= now && !progressed => now += chrono::Duration::seconds(1),
            Some(n) => now = n.max(now),
        }
    }
    events
}

/// One day of a simulation (UTC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Day {
    pub dialled: usize,
    pub answered: usize,
    pub opted_out: usize,
    /// Every other outcome (retried or not).
    pub other: usize,
}

/// What the simulation did, day by day (UTC), as a table (`crieur simulate`).
pub fn per_day_table(events: &[SimEvent]) -> String {
    let mut s = format!(
        "{:<12} {:>8} {:>9} {:>10} {:>12}\n",
        "day (UTC)", "dialled", "answered", "opted out", "other/retry"
    );
    for (day, d) in per_day(events) {
        s.push_str(&format!(
            "{:<12} {:>8} {:>9} {:>10} {:>12}\n",
            day.to_string(),
            d.dialled,
            d.answered,
            d.opted_out,
            d.other
        ));
    }
    s
}

/// What the simulation did, day by day (UTC).
pub fn per_day(events: &[SimEvent]) -> std::collections::BTreeMap<chrono::NaiveDate, Day> {
    let mut days: std::collections::BTreeMap<chrono::NaiveDate, Day> = Default::default();
    for e in events {
        let d = days.entry(e.at.date_naive()).or_default();
        d.dialled += 1;
        match e.outcome {
            AttemptOutcome::Answered => d.answered += 1,
            AttemptOutcome::OptedOut => d.opted_out += 1,
            _ => d.other += 1,
        }
    }
    days
}
