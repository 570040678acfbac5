//! Controlling a run from outside and watching it: a bounded control channel ([`Control`]),
//! an event stream ([`Event`], tokio broadcast) and a [`Counters`] snapshot (tokio watch).
//! The control API serves these; the CLI's SIGINT is a [`RunHandle::stop`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_audit::record::Reason;
use crieur_engine::Transition;
use crieur_scheduler::{Contact, Decision};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// What a run can be told while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// Place no new call until [`Control::Resume`]; the calls in progress go on. Due contacts
    /// stay due (nothing is skipped or recorded for the pause).
    Pause,
    /// Dial again what is due.
    Resume,
    /// Place no new call; the calls in progress get `drain` (default: the run's own drain
    /// time) to end, then are hung up; the run returns, stopped for `reason`. A second stop
    /// hangs up at once.
    Stop {
        reason: String,
        drain: Option<Duration>,
    },
    /// Hang up every call in progress now (an opt-out being recorded is finished first) and
    /// stop.
    HangUpNow { reason: String },
    /// Contacts just written to the store (an import into the running campaign): the planner
    /// takes them (a contact it already holds gets its new consent records and is looked at
    /// again now); each is dialled, as any, only after the re-check at the INVITE instant.
    AddContacts(Vec<Contact>),
}

/// What a run tells its observers, in order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// Crash recovery reconciled a call of an earlier run from the log.
    Recovered(crieur_dial::Recovered),
    /// A contact was decided on (re-checked at the INVITE instant, or skipped by the planner)
    /// and the decision recorded; `refused`: the opt-out list, its history, a cap or the
    /// retry rules refused it first.
    Decided {
        contact: String,
        at: DateTime<Utc>,
        decision: Decision,
        refused: Option<Reason>,
    },
    /// A call's INVITE left (its lease and `invite-sent` record durable).
    Placed {
        call: String,
        contact: String,
        number: String,
        at: DateTime<Utc>,
    },
    /// A call ended and was recorded (store and log) with `outcome`.
    Ended {
        call: String,
        contact: String,
        number: String,
        outcome: crieur_dial::fault::Recorded,
        at: DateTime<Utc>,
    },
    /// The opt-out key was pressed but could not be recorded during the call: whether it is
    /// recorded now.
    LateOptOut {
        number: String,
        recorded: bool,
    },
    /// The trunk's breaker changed (recorded as a `trunk-breaker` record).
    Breaker(Arc<Transition>),
    /// Nothing is dialable now; the next contact is due at `next_due`. Sent once per
    /// distinct instant.
    Idle {
        next_due: DateTime<Utc>,
    },
    Paused,
    Resumed,
    /// No new calls from now; the `in_flight` calls get `drain` to end. `ordered`: by a
    /// [`Control`] order (else `until`, a trunk that refuses our credentials, …).
    Stopping {
        reason: String,
        in_flight: u64,
        drain: Duration,
        ordered: bool,
    },
    /// Every call in progress is being hung up (`ordered`: by a [`Control`] order, else the
    /// drain time is over).
    HangingUp {
        ordered: bool,
    },
    /// The counters: at most once every [`PROGRESS_EVERY`] while they change, at once when
    /// the run pauses, resumes, starts stopping or its trunk's breaker changes, and a last
    /// time at the end of the run (what the counters were when it returned). The
    /// [`RunHandle::counters`] snapshot follows every turn of the loop.
    Progress(Counters),
}

/// The most often a run publishes [`Event::Progress`] while only its counts change.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// When the run publishes [`Event::Progress`]: the counters change at every turn of its loop
/// (a call placed, one ended), which at 200 calls/s would be hundreds of events a second
/// that every subscriber clones and every observer renders, for a display that needs one a
/// second. Sans-IO: the caller gives the instant.
#[derive(Debug, Default)]
pub(crate) struct ProgressGate {
    /// The last counters published, and when.
    last: Option<(tokio::time::Instant, Counters)>,
}

impl ProgressGate {
    /// Whether `c` is to be published at `now` (if so, it is taken as published): the
    /// first, a change of state (paused, stopping, the trunk's breaker) at once, a change of
    /// counts [`PROGRESS_EVERY`] after the last one published; with `last`, any change (the
    /// end of the run).
    pub(crate) fn take(&mut self, c: &Counters, now: tokio::time::Instant, last: bool) -> bool {
        let due = match &self.last {
            None => true,
            Some((_, p)) if p == c => false,
            Some((at, p)) => {
                last || p.paused != c.paused
                    || p.stopping != c.stopping
                    || p.trunk != c.trunk
                    || now.saturating_duration_since(*at) >= PROGRESS_EVERY
            }
        };
        if due {
            self.last = Some((now, c.clone()));
        }
        due
    }

    /// When `c`, held back, is due (none: it was published).
    pub(crate) fn due(&self, c: &Counters) -> Option<tokio::time::Instant> {
        match &self.last {
            Some((at, p)) if p != c => Some(*at + PROGRESS_EVERY),
            _ => None,
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Counters {
    /// Calls placed (INVITEs sent).
    pub dialled: u64,
    pub answered: u64,
    pub opted_out: u64,
    /// Calls that failed (rejected, trunk or local errors; busy and no answer are not).
    pub failed: u64,
    /// Calls the trunk refused before anything rang (no attempt used).
    pub trunk_refused: u64,
    pub in_flight: u64,
    /// Contacts not done (counted at most once a second).
    pub remaining: u64,
    /// Calls placed over the last 10 s, per second.
    pub calls_per_second: f64,
    /// Nothing in flight and nothing due before this instant.
    pub idle_until: Option<DateTime<Utc>>,
    /// The trunk's breaker when not closed: why.
    pub trunk: Option<String>,
    pub paused: bool,
    pub stopping: bool,
    /// Calls ended, by recorded outcome.
    pub by_outcome: BTreeMap<String, u64>,
    /// Contacts this run holds that are due now (waiting for pacing, a call slot or a resume;
    /// counted at most once a second).
    pub due_now: u64,
    /// The earliest instant a queued contact is due (past: due now).
    pub next_due: Option<DateTime<Utc>>,
    /// The campaign's contacts, done or not (a campaign run: as the store counted them at
    /// the last refill from its due index).
    pub contacts: u64,
}

/// The calls in progress by number, each with the token that hangs it up: what lets an
/// opt-out that arrives from outside (the control API) end the call to that number at once,
/// without going through the control channel.
#[derive(Default)]
pub struct InProgress {
    calls: Mutex<HashMap<String, CancellationToken>>,
}

impl InProgress {
    /// Registers a call to `number` about to leave, unless `opted_out` (read under the same
    /// lock: an opt-out made durable before [`InProgress::hang_up`] is seen either here or
    /// there, never by neither); `false`: it was cancelled at once.
    pub(crate) fn register(
        &self,
        number: &str,
        token: CancellationToken,
        opted_out: impl FnOnce() -> bool,
    ) -> bool {
        let Ok(mut calls) = self.calls.lock() else {
            token.cancel();
            return false;
        };
        calls.insert(number.to_owned(), token.clone());
        if opted_out() {
            token.cancel();
            return false;
        }
        true
    }

    pub(crate) fn remove(&self, number: &str) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.remove(number);
        }
    }

    /// Hangs up the call in progress to `number` (E.164, as `Display`s it), if any: whether
    /// there was one. Call it after the opt-out is durable in the store.
    pub fn hang_up(&self, number: &str) -> bool {
        match self.calls.lock() {
            Ok(calls) => calls.get(number).map(CancellationToken::cancel).is_some(),
            Err(_) => false,
        }
    }

    /// Hangs up every call in progress whose number `matches`: how many.
    pub fn hang_up_where(&self, mut matches: impl FnMut(&str) -> bool) -> usize {
        match self.calls.lock() {
            Ok(calls) => calls
                .iter()
                .filter(|(n, _)| matches(n))
                .map(|(_, t)| t.cancel())
                .count(),
            Err(_) => 0,
        }
    }

    /// The numbers of the calls in progress.
    pub fn numbers(&self) -> Vec<String> {
        self.calls
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// How many calls are in progress.
    pub fn len(&self) -> usize {
        self.calls.lock().map_or(0, |c| c.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The run's side of the control channel (given to [`crate::run`]).
pub struct ControlReceiver {
    pub(crate) rx: mpsc::Receiver<Control>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) counters: watch::Sender<Counters>,
    pub(crate) in_progress: Arc<InProgress>,
}

impl ControlReceiver {
    /// An order waiting, if any (for a caller that reads the orders itself instead of
    /// handing them to [`crate::run`]).
    pub fn try_recv(&mut self) -> Option<Control> {
        self.rx.try_recv().ok()
    }
}

/// The controller's side: tell the run what to do, watch it. Cloneable; the run goes on
/// when every handle is dropped.
#[derive(Clone)]
pub struct RunHandle {
    tx: mpsc::Sender<Control>,
    events: broadcast::Sender<Event>,
    counters: watch::Receiver<Counters>,
    in_progress: Arc<InProgress>,
}

/// The run has returned: it takes no more orders.
#[derive(Debug, thiserror::Error)]
#[error("the run has ended")]
pub struct Ended;

/// Why an order was not taken without waiting.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The control channel is full: try again shortly.
    #[error("the run's control queue is full")]
    Full,
    #[error(transparent)]
    Ended(#[from] Ended),
}

/// The events the stream keeps for a subscriber that lags: a few seconds of a run at
/// 200 calls/s (three events per call, a `progress` a second), so that a
/// subscriber that reads them in batches (the control API's event stream, every 50 ms)
/// misses none.
pub const EVENT_BUFFER: usize = 4096;

/// A control channel holding up to `capacity` orders, and an event stream keeping the last
/// [`EVENT_BUFFER`] events for a subscriber that lags.
pub fn control(capacity: usize) -> (RunHandle, ControlReceiver) {
    let capacity = capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let (counters, watched) = watch::channel(Counters::default());
    let in_progress = Arc::new(InProgress::default());
    (
        RunHandle {
            tx,
            events: events.clone(),
            counters: watched,
            in_progress: in_progress.clone(),
        },
        ControlReceiver {
            rx,
            events,
            counters,
            in_progress,
        },
    )
}

impl RunHandle {
    /// Sends `c`, waiting while the channel is full.
    pub async fn send(&self, c: Control) -> Result<(), Ended> {
        self.tx.send(c).await.map_err(|_| Ended)
    }

    /// Sends `c` without waiting (from a signal handler or a synchronous context): `false`
    /// when the channel is full or the run has ended.
    pub fn try_send(&self, c: Control) -> bool {
        self.tx.try_send(c).is_ok()
    }

    /// Sends `c` without waiting, saying why it was not taken.
    pub fn offer(&self, c: Control) -> Result<(), Refused> {
        self.tx.try_send(c).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refused::Full,
            mpsc::error::TrySendError::Closed(_) => Refused::Ended(Ended),
        })
    }

    /// A slot in the control channel, held (so that an order prepared by slow work — an
    /// import written to the store — cannot then find the channel full).
    pub fn reserve(&self) -> Result<mpsc::Permit<'_, Control>, Refused> {
        self.tx.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refused::Full,
            mpsc::error::TrySendError::Closed(_) => Refused::Ended(Ended),
        })
    }

    /// Whether the run has returned.
    pub fn is_ended(&self) -> bool {
        self.tx.is_closed()
    }

    /// The calls in progress, by number (to hang one up after an opt-out).
    pub fn in_progress(&self) -> &InProgress {
        &self.in_progress
    }

    pub async fn pause(&self) -> Result<(), Ended> {
        self.send(Control::Pause).await
    }

    pub async fn resume(&self) -> Result<(), Ended> {
        self.send(Control::Resume).await
    }

    /// Stop and drain (the run's own drain time); the run stops for `reason`.
    pub async fn stop(&self, reason: &str) -> Result<(), Ended> {
        self.send(Control::Stop {
            reason: reason.to_owned(),
            drain: None,
        })
        .await
    }

    /// The events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The counters as the run last published them.
    pub fn counters(&self) -> Counters {
        self.counters.borrow().clone()
    }

    /// A receiver notified whenever the counters change.
    pub fn watch_counters(&self) -> watch::Receiver<Counters> {
        self.counters.clone()
    }
}

/// SIGINT and SIGTERM as stop orders: the first drains the calls in progress, the next hangs
/// them up. Each is one stream registered for the whole run: a signal that arrives while the
/// run is busy is kept, never missed.
pub async fn forward_signals(handle: RunHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    loop {
        let s = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        if handle.stop(s).await.is_err() {
            return Ok(());
        }
    }
}

/// How long the opt-out watch waits for a notification at a time (and so how long it takes
/// to stop).
const WATCH_WAIT: Duration = Duration::from_millis(500);
/// The watch's poll: every call in progress re-checked against the store this often, and
/// after each reconnection (notifications sent while it was down are lost).
const WATCH_POLL: Duration = Duration::from_secs(30);

/// On a store other processes write to (PostgreSQL: other nodes, their control APIs, the
/// command line), the thread that hangs up a call in progress here as soon as its number is
/// opted out anywhere: it LISTENs for each opt-out's notification, and polls the store for
/// the calls in progress every [`WATCH_POLL`] and after a lost connection. Stopped and joined
/// when dropped.
pub(crate) struct OptOutWatcher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OptOutWatcher {
    /// Starts watching `store` for the calls in `in_progress`, if the store can be watched.
    pub(crate) fn start(
        store: Arc<dyn crieur_store::Store + Send + Sync>,
        in_progress: Arc<InProgress>,
    ) -> Option<OptOutWatcher> {
        let mut watch = match store.watch_opt_outs() {
            Ok(Some(w)) => w,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "opt-outs of other processes cannot be watched");
                return None;
            }
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("crieur-optout-watch".into())
            .spawn(move || {
                use std::sync::atomic::Ordering;
                // The first connection, as any reconnection, is followed by a poll.
                let mut poll_due = true;
                #[allow(clippy::disallowed_methods)]
                let mut last_poll = std::time::Instant::now();
                while !stopping.load(Ordering::Acquire) {
                    match watch.next(WATCH_WAIT) {
                        Ok(keys) if !keys.is_empty() => {
                            let n = in_progress.hang_up_where(|number| keys.contains(&watch.key_of(number)));
                            if n > 0 {
                                tracing::info!(calls = n, "opted out elsewhere: hung up");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "the opt-out watch lost its connection: polling, then reconnecting");
                            poll_due = true;
                            std::thread::sleep(WATCH_WAIT);
                        }
                    }
                    #[allow(clippy::disallowed_methods)]
                    let now = std::time::Instant::now();
                    if poll_due || now.duration_since(last_poll) >= WATCH_POLL {
                        poll_due = false;
                        last_poll = now;
                        for number in in_progress.numbers() {
                            let Ok(n) = number.parse::<crieur_scheduler::E164>() else {
                                continue;
                            };
                            if store.is_opted_out(&n).unwrap_or(false) {
                                in_progress.hang_up(&number);
                            }
                        }
                    }
                }
            })
            .ok()?;
        Some(OptOutWatcher {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for OptOutWatcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_published_once_a_second_at_once_on_a_change_of_state_and_at_the_end() {
        let t0 = tokio::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut gate = ProgressGate::default();
        let mut c = Counters::default();
        assert!(gate.take(&c, t0, false), "the first");
        assert_eq!(gate.due(&c), None);
        // Unchanged: never again, not even at the end.
        assert!(!gate.take(&c, ms(5_000), false));
        assert!(!gate.take(&c, ms(5_000), true));
        // Counts that change: held back until a second after the last one published, and
        // due then.
        c.dialled = 1;
        assert!(!gate.take(&c, ms(300), false));
        c.dialled = 2;
        c.in_flight = 2;
        assert!(!gate.take(&c, ms(999), false));
        assert_eq!(gate.due(&c), Some(ms(1_000)));
        assert!(gate.take(&c, ms(1_000), false));
        assert_eq!(gate.due(&c), None);
        // A pause, a resume, a stop, the breaker: at once, each.
        c.paused = true;
        assert!(gate.take(&c, ms(1_001), false));
        c.paused = false;
        assert!(gate.take(&c, ms(1_002), false));
        c.trunk = Some("trunk breaker half-open: one probe call".into());
        assert!(gate.take(&c, ms(1_003), false));
        c.dialled = 3;
        assert!(!gate.take(&c, ms(1_004), false));
        c.stopping = true;
        assert!(
            gate.take(&c, ms(1_005), false),
            "stopping, with the new count"
        );
        // The end of the run: the last counts, whenever.
        c.in_flight = 0;
        c.by_outcome.insert("answered-completed".into(), 3);
        assert!(!gate.take(&c, ms(1_006), false));
        assert_eq!(gate.due(&c), Some(ms(2_005)));
        assert!(gate.take(&c, ms(1_007), true));
        assert_eq!(gate.due(&c), None);
    }
}
