//! What the API keeps of a run's events: the recent calls (placed, ended) behind a cursor,
//! each event as JSON (the event stream's and the webhooks' body), and the observer that
//! feeds them from the run (in order, none lost: the run's observer callback, not the
//! broadcast stream).

use std::collections::VecDeque;
use std::sync::Mutex;

use crieur_runner::Event;
use serde_json::{json, Value};

use crate::webhook::Webhook;

/// Recent calls kept at most (the oldest dropped first).
pub const RECENT: usize = 10_000;

/// One call event, numbered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CallItem {
    /// Its cursor: strictly increasing.
    pub seq: u64,
    #[serde(flatten)]
    pub event: Value,
}

#[derive(Default)]
struct Ring {
    next: u64,
    items: VecDeque<CallItem>,
}

/// The recent calls of one campaign, and its webhook.
pub struct Feed {
    campaign: String,
    ring: Mutex<Ring>,
    webhook: Option<Webhook>,
}

/// A page of recent calls.
#[derive(Debug, serde::Serialize)]
pub struct Page {
    pub calls: Vec<CallItem>,
    /// The cursor to ask with next.
    pub next: u64,
    /// Calls after the asked cursor were dropped before they could be read (more than
    /// [`RECENT`] since).
    pub dropped: bool,
}

impl Feed {
    pub fn new(campaign: &str, webhook: Option<Webhook>) -> Feed {
        Feed {
            campaign: campaign.to_owned(),
            ring: Mutex::default(),
            webhook,
        }
    }

    /// One of the run's events (the run's observer calls this, in order).
    pub fn observe(&self, e: &Event) {
        if !matches!(e, Event::Placed { .. } | Event::Ended { .. }) {
            return;
        }
        let Some(v) = event_json(&self.campaign, e) else {
            return;
        };
        let seq = {
            let Ok(mut r) = self.ring.lock() else {
                return;
            };
            let seq = r.next;
            r.next += 1;
            if r.items.len() == RECENT {
                r.items.pop_front();
            }
            r.items.push_back(CallItem {
                seq,
                event: v.clone(),
            });
            seq
        };
        if let (Some(w), Event::Ended { call, .. }) = (&self.webhook, e) {
            let body = serde_json::to_vec(&v).unwrap_or_default();
            w.send(format!("{call}-{seq}"), body);
        }
    }

    /// The calls after cursor `since` (none: the latest `limit`), at most `limit`.
    pub fn since(&self, since: Option<u64>, limit: usize) -> Page {
        let Ok(r) = self.ring.lock() else {
            return Page {
                calls: Vec::new(),
                next: 0,
                dropped: false,
            };
        };
        let first = r.items.front().map_or(r.next, |i| i.seq);
        let (calls, dropped): (Vec<CallItem>, bool) = match since {
            // The items are numbered without gaps from `first`: the page starts at its
            // index, whatever the ring holds (no walk from the oldest).
            Some(s) => (
                r.items
                    .range(
                        usize::try_from(s.saturating_sub(first))
                            .unwrap_or(usize::MAX)
                            .min(r.items.len())..,
                    )
                    .take(limit)
                    .cloned()
                    .collect(),
                s < first,
            ),
            None => {
                let skip = r.items.len().saturating_sub(limit);
                (r.items.iter().skip(skip).cloned().collect(), false)
            }
        };
        let next = calls
            .last()
            .map_or(since.unwrap_or(r.next).max(first), |c| c.seq + 1);
        Page {
            calls,
            next,
            dropped,
        }
    }
}

fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The counters as JSON (the live state's and the `progress` event's).
pub fn counters_json(c: &crieur_runner::Counters) -> Value {
    json!({
        "dialled": c.dialled,
        "answered": c.answered,
        "opted_out": c.opted_out,
        "failed": c.failed,
        "trunk_refused": c.trunk_refused,
        "in_progress": c.in_flight,
        "remaining": c.remaining,
        "contacts": c.contacts,
        "due_now": c.due_now,
        "next_due": c.next_due.as_ref().map(rfc3339),
        "calls_per_second": c.calls_per_second,
        "idle_until": c.idle_until.as_ref().map(rfc3339),
        "breaker": c.trunk.clone().unwrap_or_else(|| "closed".into()),
        "paused": c.paused,
        "stopping": c.stopping,
        "by_outcome": c.by_outcome,
    })
}

/// An event as JSON: `{"type": …, "campaign": …, …}`; `None` for the ones not published.
pub fn event_json(campaign: &str, e: &Event) -> Option<Value> {
    let mut v = match e {
        Event::Placed {
            call,
            contact,
            number,
            at,
        } => {
            json!({"type": "placed", "call": call, "contact": contact, "number": number, "at": rfc3339(at)})
        }
        Event::Ended {
            call,
            contact,
            number,
            outcome,
            at,
        } => {
            json!({"type": "ended", "call": call, "contact": contact, "number": number, "outcome": outcome.name(), "at": rfc3339(at)})
        }
        Event::Decided {
            contact,
            at,
            decision,
            refused,
        } => json!({
            "type": "decided",
            "contact": contact,
            "at": rfc3339(at),
            "verdict": match (decision, refused) {
                (_, Some(_)) => "refused",
                (crieur_scheduler::Decision::Dial(_), None) => "dial",
                (crieur_scheduler::Decision::Skip(_), None) => "skip",
            },
            "reason": refused.as_ref().map(|r| r.code()),
        }),
        Event::LateOptOut { number, recorded } => {
            json!({"type": "late-opt-out", "number": number, "recorded": recorded})
        }
        Event::Breaker(t) => {
            json!({"type": "breaker", "state": t.to.as_str(), "at": rfc3339(&t.at)})
        }
        Event::Idle { next_due } => json!({"type": "idle", "next_due": rfc3339(next_due)}),
        Event::Paused => json!({"type": "paused"}),
        Event::Resumed => json!({"type": "resumed"}),
        Event::Stopping {
            reason, in_flight, ..
        } => json!({"type": "stopping", "reason": reason, "in_progress": in_flight}),
        Event::HangingUp { .. } => json!({"type": "hanging-up"}),
        Event::Progress(c) => json!({"type": "progress", "counters": counters_json(c)}),
        Event::Recovered(r) => json!({"type": "recovered", "what": r.to_string()}),
        _ => return None,
    };
    if let Some(o) = v.as_object_mut() {
        o.insert("campaign".into(), Value::String(campaign.to_owned()));
    }
    Some(v)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `placed` event numbered `n` (shared with the event stream's tests).
    pub(crate) fn placed(n: u32) -> Event {
        Event::Placed {
            call: format!("call{n}"),
            contact: format!("c{n}"),
            number: "+33612345678".into(),
            at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_cursor_pages_through_calls_and_says_when_some_were_dropped() {
        let f = Feed::new("x", None);
        for n in 0..5 {
            f.observe(&placed(n));
        }
        f.observe(&Event::Paused);
        let p = f.since(Some(0), 2);
        assert_eq!(p.calls.iter().map(|c| c.seq).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(p.next, 2);
        assert!(!p.dropped);
        let p = f.since(Some(p.next), 10);
        assert_eq!(p.calls.len(), 3);
        assert_eq!(p.next, 5);
        let p = f.since(Some(5), 10);
        assert!(p.calls.is_empty() && p.next == 5);
        assert_eq!(f.since(None, 1).calls[0].seq, 4);
        for n in 0..RECENT as u32 {
            f.observe(&placed(n));
        }
        let p = f.since(Some(1), 1);
        assert!(p.dropped);
        assert_eq!(p.calls[0].seq, 5);
        assert_eq!(p.calls[0].event["campaign"], "x");
        // A cursor inside the rolled ring starts its page there; one past the end gives
        // nothing and keeps the cursor.
        let p = f.since(Some(5_000), 3);
        assert_eq!(
            p.calls.iter().map(|c| c.seq).collect::<Vec<_>>(),
            [5_000, 5_001, 5_002]
        );
        assert!(!p.dropped && p.next == 5_003);
        let end = 5 + RECENT as u64;
        assert_eq!(f.since(Some(end - 1), 10).calls.len(), 1);
        let p = f.since(Some(end + 3), 10);
        assert!(p.calls.is_empty() && p.next == end + 3 && !p.dropped);
    }
}
