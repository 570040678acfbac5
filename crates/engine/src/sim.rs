//! `simulate`: the real planner on a simulated clock with simulated outcomes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_scheduler::{Contact, Policy};

use crate::plan::{AttemptOutcome, CapRules, Pacing, Planner, RetryPolicy};

/// Probabilities of each outcome; what is left up to 1 is `Answered`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeMix(pub Vec<(AttemptOutcome, f64)>);

impl OutcomeMix {
    /// Parses `answered=0.5,busy=0.1,no-answer=0.3,optout=0.05`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut v = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, p) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected outcome=probability"))?;
            let o = match k.trim() {
                "answered" => AttemptOutcome::Answered,
                "optout" | "opted-out" => AttemptOutcome::OptedOut,
                "not-interested" => AttemptOutcome::NotInterested,
                "busy" => AttemptOutcome::Busy,
                "no-answer" => AttemptOutcome::NoAnswer,
                "failed" => AttemptOutcome::Failed,
                "rejected" => AttemptOutcome::Rejected,
                "machine" => AttemptOutcome::Machine,
                other => return Err(format!("`{other}`: expected answered, optout, not-interested, busy, no-answer, failed, rejected or machine")),
            };
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{p}`: expected a probability"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("`{p}`: expected a probability between 0 and 1"));
            }
            v.push((o, p));
        }
        if v.iter().map(|(_, p)| p).sum::<f64>() > 1.0 + 1e-9 {
            return Err("the probabilities add up to more than 1".into());
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

/// Runs the planner from `cfg.from` for `cfg.days` days; returns every attempt in order.
pub fn simulate(contacts: Vec<Contact>, policy: &Policy, cfg: &SimConfig) -> Vec<SimEvent> {
    let mut rng = cfg.seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        // xorshift64*: deterministic per seed, good enough to draw outcomes.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    };
    let start = cfg.from.timestamp();
    let end = start + i64::from(cfg.days) * 86_400;
    let mut planner = Planner::new(
        contacts,
        policy,
        cfg.caps.clone(),
        cfg.retry.clone(),
        cfg.pacing,
        cfg.from,
    );
    let mut calls: BinaryHeap<Reverse<(i64, usize, usize)>> = BinaryHeap::new(); // (end, contact, event index)
    let mut events: Vec<SimEvent> = Vec::new();
    let ring = i64::try_from(cfg.ring_timeout.as_secs()).unwrap_or(15);
    let message = i64::try_from(cfg.message_length.as_secs()).unwrap_or(0) + 1;
    let mut now = start;
    while now < end {
        while let Some(&Reverse((t, c, e))) = calls.peek() {
            if t > now {
                break;
            }
            calls.pop();
            if let Some(ev) = events.get(e) {
                planner.report(c, ev.ended, ev.outcome);
            }
        }
        let at = DateTime::from_timestamp(now, 0).unwrap_or_default();
        for order in planner.tick(at) {
            let outcome = cfg.mix.draw(uniform());
            // Simulated call lengths: ringing, then the message (half of it for an opt-out).
            let len = match outcome {
                AttemptOutcome::Answered | AttemptOutcome::Machine => 5 + message,
                AttemptOutcome::OptedOut | AttemptOutcome::NotInterested => 5 + message / 2,
                AttemptOutcome::NoAnswer => ring,
                _ => 2,
            };
            calls.push(Reverse((now + len, order.contact, events.len())));
            events.push(SimEvent {
                contact: order.contact,
                at,
                attempt: order.attempt,
                outcome,
                ended: DateTime::from_timestamp(now + len, 0).unwrap_or_default(),
            });
        }
        // Next instant: a call ends, something is due, or pacing frees a slot next second.
        let mut next = end;
        if let Some(&Reverse((t, _, _))) = calls.peek() {
            next = next.min(t);
        }
        if let Some(d) = planner.next_due() {
            next = next.min(d.timestamp().max(now + 1));
        }
        if next >= end && calls.is_empty() && planner.next_due().is_none() {
            break;
        }
        now = next.max(now + 1);
    }
    events
}
