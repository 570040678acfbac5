//! The event stream (`GET /api/events`, server-sent events): each campaign's call events as
//! the run publishes them, in batches.
//!
//! **Batched, not one write per event.** A subscriber waits for an event, then lets
//! [`FLUSH`] pass and takes everything the broadcast holds by then (at most [`BATCH`]), sent
//! together: hyper writes the events that are ready at once as one write. The API's thread
//! is therefore woken at most about 1 / [`FLUSH`] times a second per subscriber, whatever the
//! dialling rate — not once per event the run publishes (a `decided`, a `placed` and an
//! `ended` per call), each of which used to cost a wake-up of this thread, a JSON encoding
//! and its own loopback packet (measured: `BENCHMARKS.md`, "The control API under dialling
//! load"). An event reaches the client at most [`FLUSH`] after it happened. The run itself
//! publishes `progress` at most once a second while only its counts change
//! ([`crieur_runner::PROGRESS_EVERY`]; at once on a pause, a resume, a stop, a breaker change,
//! and at its end): every one it publishes is sent. The run keeps [`crieur_runner::EVENT_BUFFER`] events for a
//! subscriber: one that falls further behind is told how many it missed (`lagged`).
//!
//! **Ended, not cut off.** When the API stops (the run's end), [`Ctx::end_event_streams`]
//! tells every stream to send what the run published before — its last calls' `ended` and
//! final `progress`, published within [`FLUSH`] of its end — and end; the server stops after.

use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use crieur_runner::Event;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};

use crate::api::{ApiError, Ctx, Served};
use crate::feed::event_json;

/// How long a subscriber gathers events after the first before sending them.
pub const FLUSH: Duration = Duration::from_millis(50);
/// The most events sent in one batch (the rest follow at once, in the next).
pub const BATCH: usize = 512;

/// One subscriber to one campaign's events.
pub struct Subscriber {
    rx: broadcast::Receiver<Event>,
    campaign: String,
    closed: bool,
    /// The API is stopping ([`Ctx::end_event_streams`]): send what is held, then end.
    ending: Option<tokio::sync::watch::Receiver<bool>>,
}

/// An event to send: its name and its data (JSON).
pub type Rendered = (String, String);

impl Subscriber {
    pub fn new(rx: broadcast::Receiver<Event>, campaign: &str) -> Subscriber {
        Subscriber {
            rx,
            campaign: campaign.to_owned(),
            closed: false,
            ending: None,
        }
    }

    /// Ends the stream when `ending` turns true, after sending what the run published
    /// before.
    pub fn ending_with(mut self, ending: tokio::sync::watch::Receiver<bool>) -> Subscriber {
        self.ending = Some(ending);
        self
    }

    /// Whether the API is stopping.
    fn is_ending(&self) -> bool {
        self.ending.as_ref().is_some_and(|e| *e.borrow())
    }

    /// What `r` sends, if anything (not an event that is not published).
    fn render(&self, r: Result<Event, u64>) -> Option<Rendered> {
        match r {
            Ok(e) => {
                let v = event_json(&self.campaign, &e)?;
                let kind = v["type"].as_str().unwrap_or("event").to_owned();
                Some((kind, v.to_string()))
            }
            Err(skipped) => {
                let v = json!({"type": "lagged", "campaign": self.campaign, "skipped": skipped});
                Some(("lagged".to_owned(), v.to_string()))
            }
        }
    }

    /// Appends to `out` what `first` and the events held now send, until `out` holds
    /// [`BATCH`] or nothing more is held (the stream closed: [`Subscriber::closed`]).
    pub fn drain(&mut self, first: Result<Event, u64>, out: &mut Vec<Rendered>) {
        out.extend(self.render(first));
        while out.len() < BATCH {
            let r = match self.rx.try_recv() {
                Ok(e) => Ok(e),
                Err(TryRecvError::Lagged(n)) => Err(n),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Closed) => {
                    self.closed = true;
                    return;
                }
            };
            out.extend(self.render(r));
        }
    }

    /// Whether the run has ended (nothing more will come).
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// The next batch: at least one event, gathered for [`FLUSH`] after the first;
    /// `None` once the run has ended and everything was sent.
    async fn next(mut self) -> Option<(Vec<Rendered>, Subscriber)> {
        let mut out = Vec::new();
        while out.is_empty() {
            if self.closed {
                return None;
            }
            if self.is_ending() {
                // What the run published before the API stopped, then the end.
                self.drain_held(&mut out);
                if out.is_empty() {
                    return None;
                }
                break;
            }
            let mut ending = self.ending.clone();
            let stopping = async {
                match ending.as_mut() {
                    Some(e) => {
                        // The sender gone (no API left to stop): never ending, rather
                        // than a wait that returns at once and a loop that spins.
                        if e.wait_for(|v| *v).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let first = tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(e) => Ok(e),
                    Err(RecvError::Lagged(n)) => Err(n),
                    Err(RecvError::Closed) => return None,
                },
                _ = stopping => continue,
            };
            // Not listening meanwhile: the run's sends do not wake this thread.
            if !self.is_ending() {
                tokio::time::sleep(FLUSH).await;
            }
            self.drain(first, &mut out);
        }
        Some((out, self))
    }

    /// Appends to `out` what the broadcast holds now, up to [`BATCH`]; the stream is
    /// [`Subscriber::closed`] once nothing more is held.
    fn drain_held(&mut self, out: &mut Vec<Rendered>) {
        while out.len() < BATCH {
            let r = match self.rx.try_recv() {
                Ok(e) => Ok(e),
                Err(TryRecvError::Lagged(n)) => Err(n),
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => {
                    self.closed = true;
                    return;
                }
            };
            out.extend(self.render(r));
        }
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct EventsQuery {
    campaign: Option<String>,
}

pub(crate) async fn events(
    axum::extract::State(ctx): axum::extract::State<std::sync::Arc<Ctx>>,
    q: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>>, ApiError> {
    let axum::extract::Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let chosen: Vec<&Served> = match &q.campaign {
        Some(id) => vec![ctx.served(id)?],
        None => ctx.served_all().collect(),
    };
    // A campaign with no run has no events: its stream stays open, with keep-alives.
    let idle = chosen.iter().any(|s| s.handle.is_none());
    let streams = chosen.into_iter().filter_map(|s| {
        let sub = Subscriber::new(s.handle.as_ref()?.subscribe(), &s.campaign.id)
            .ending_with(ctx.ending.subscribe());
        Some(
            stream::unfold(sub, Subscriber::next)
                .flat_map(|batch| {
                    stream::iter(batch.into_iter().map(|(kind, data)| {
                        Ok::<_, std::convert::Infallible>(
                            SseEvent::default().event(kind).data(data),
                        )
                    }))
                })
                .boxed(),
        )
    });
    let all = stream::select_all(streams);
    let all = if idle {
        // Open until the API stops.
        let mut ending = ctx.ending.subscribe();
        let stop = stream::once(async move {
            let _ = ending.wait_for(|v| *v).await;
        })
        .filter_map(|()| async { None });
        all.chain(stop).boxed()
    } else {
        all.boxed()
    };
    // Counted while open, so that a stopping API waits for it to send what it holds.
    let open = Open::new(ctx.clone());
    let all = all.map(move |e| {
        let _ = &open;
        e
    });
    Ok(Sse::new(all).keep_alive(KeepAlive::default()))
}

/// An open event stream, counted in [`Ctx`]'s `streams` until dropped.
struct Open(std::sync::Arc<Ctx>);

impl Open {
    fn new(ctx: std::sync::Arc<Ctx>) -> Open {
        ctx.streams
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Open(ctx)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0
            .streams
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::tests::placed;

    fn progress() -> Event {
        Event::Progress(crieur_runner::Counters::default())
    }

    fn names(batch: &[Rendered]) -> Vec<&str> {
        batch.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stopping_api_gets_what_was_published_then_the_end() {
        let (tx, rx) = broadcast::channel(64);
        let ending = tokio::sync::watch::Sender::new(false);
        let sub = Subscriber::new(rx, "x").ending_with(ending.subscribe());
        // Published just before the API stops (within the batching delay): still sent.
        tx.send(placed(1)).ok();
        tx.send(progress()).ok();
        ending.send_replace(true);
        let Some((batch, sub)) = sub.next().await else {
            panic!("the events published before the end were not sent");
        };
        assert_eq!(names(&batch), ["placed", "progress"]);
        // Then the stream ends, although the run's sender is still there.
        assert!(sub.next().await.is_none());
        drop(tx);
    }

    #[test]
    fn a_batch_takes_what_is_held_in_order_bounded_with_every_progress_the_run_published() {
        let (tx, rx) = broadcast::channel(4 * BATCH);
        let mut sub = Subscriber::new(rx, "x");
        for n in 1..=3 {
            tx.send(placed(n)).ok();
            tx.send(progress()).ok();
        }
        let mut out = Vec::new();
        sub.drain(Ok(placed(0)), &mut out);
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["placed", "placed", "progress", "placed", "progress", "placed", "progress"]
        );
        let calls: Vec<String> = out
            .iter()
            .filter(|(k, _)| k == "placed")
            .map(|(_, d)| {
                let v: serde_json::Value = serde_json::from_str(d).unwrap_or_default();
                assert_eq!(v["campaign"], "x");
                v["call"].as_str().unwrap_or("").to_owned()
            })
            .collect();
        assert_eq!(calls, ["call0", "call1", "call2", "call3"]);
        assert!(!sub.closed());

        // More than a batch is split, none lost.
        for n in 0..(BATCH as u32 + 10) {
            tx.send(placed(n)).ok();
        }
        let mut out = Vec::new();
        sub.drain(Ok(progress()), &mut out);
        assert_eq!(out.len(), BATCH);
        assert_eq!(out[0].0, "progress");
        let mut rest = Vec::new();
        sub.drain(Ok(placed(999)), &mut rest);
        assert_eq!(rest.len(), 1 + 11, "the first and the 11 left");
        assert!(rest.iter().all(|(k, _)| k == "placed"));

        // Lagging behind the buffer is said; the end of the run closes the stream.
        let (tx, rx) = broadcast::channel(4);
        let mut sub = Subscriber::new(rx, "x");
        for n in 0..10 {
            tx.send(placed(n)).ok();
        }
        drop(tx);
        let mut out = Vec::new();
        sub.drain(Ok(placed(99)), &mut out);
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["placed", "lagged", "placed", "placed", "placed", "placed"]
        );
        assert!(out[1].1.contains("\"skipped\":6"), "{}", out[1].1);
        assert!(sub.closed());
    }
}
