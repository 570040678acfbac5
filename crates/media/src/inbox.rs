//! A loop thread's inbox: work other threads queue for it, read at each of the loop's turns,
//! and when the loop will next look at it by itself. A push wakes the loop only if the loop
//! would otherwise look too late (it sleeps past the push's deadline, or until told): while
//! the loop runs or is about to wake anyway, pushing costs no thread switch. The pacer's
//! shards take their streams' commands through one (`pacer.rs`), the UAC's SIP loops their
//! new calls (`uac.rs`).
//!
//! The loop's side, at each turn: [`Inbox::awake`], then the queue drained; before sleeping,
//! [`Inbox::may_sleep`] with its next wake (false: something came meanwhile, take it first).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

/// `wake_at` while the loop runs (it reads the inbox again before sleeping).
const AWAKE: u64 = 0;
/// `wake_at` while the loop sleeps until woken.
const ASLEEP: u64 = u64::MAX;

pub(crate) struct Inbox<T> {
    /// A lock-free queue (std's list channel): a push never waits for the loop, and the loop
    /// never waits for a pusher preempted in the middle of a push. The loop never blocks on
    /// it either (it sleeps on its own), so a push alone wakes nobody.
    queue: mpsc::Sender<T>,
    /// Set with each push, cleared by the loop before it takes the queue.
    pending: AtomicBool,
    /// When the loop next wakes by itself, in ns from `epoch`: [`AWAKE`] while it runs,
    /// [`ASLEEP`] when it sleeps until woken.
    wake_at: AtomicU64,
    epoch: Instant,
}

impl<T> std::fmt::Debug for Inbox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("wake_at", &self.wake_at)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<T> Inbox<T> {
    /// An inbox (its loop running), and the queue's receiving end for the loop.
    pub(crate) fn new(epoch: Instant) -> (Inbox<T>, mpsc::Receiver<T>) {
        let (queue, rx) = mpsc::channel();
        let inbox = Inbox {
            queue,
            pending: AtomicBool::new(false),
            wake_at: AtomicU64::new(AWAKE),
            epoch,
        };
        (inbox, rx)
    }

    fn ns(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(ASLEEP - 1)
    }

    /// Queues `item`, which the loop must take by `by`. `Ok(true)`: the loop sleeps past `by`
    /// and must be woken by the caller; `Err(item)`: the loop has gone (its receiver dropped).
    pub(crate) fn push(&self, item: T, by: Instant) -> Result<bool, T> {
        self.queue.send(item).map_err(|e| e.0)?;
        // With the loop's `wake_at` store then `pending` load (both SeqCst): either the loop
        // sees this item before it sleeps, or this sees when it will wake.
        self.pending.store(true, Ordering::SeqCst);
        Ok(self.wake_at.load(Ordering::SeqCst) > self.ns(by))
    }

    /// Something was pushed since the loop's last [`Inbox::awake`].
    pub(crate) fn pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// The loop's turn begins: it reads the queue after this.
    pub(crate) fn awake(&self) {
        self.wake_at.store(AWAKE, Ordering::SeqCst);
        // A swap, not a store: reading a pusher's `true` synchronizes with it, so the queue
        // read next sees that pusher's item (a plain store orders nothing with the pusher;
        // x86 would not show the difference, weaker memory models could).
        self.pending.swap(false, Ordering::SeqCst);
    }

    /// The loop is about to sleep until `next` (`None`: until woken). False when something
    /// was pushed meanwhile: the loop takes it instead of sleeping.
    pub(crate) fn may_sleep(&self, next: Option<Instant>) -> bool {
        self.wake_at
            .store(next.map_or(ASLEEP, |t| self.ns(t)), Ordering::SeqCst);
        !self.pending.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; nothing is timed
    fn a_push_wakes_the_loop_only_when_it_sleeps_past_the_deadline() {
        let t0 = Instant::now();
        let (inbox, rx) = Inbox::new(t0);
        // Running: it reads the queue before it sleeps.
        assert_eq!(inbox.push(1, t0), Ok(false));
        assert!(!inbox.may_sleep(Some(t0 + Duration::from_millis(5))));
        inbox.awake();
        assert_eq!(rx.try_recv(), Ok(1));
        assert!(!inbox.pending());
        // Asleep until 5 ms: a push due by 10 ms waits, one due by 1 ms wakes it.
        assert!(inbox.may_sleep(Some(t0 + Duration::from_millis(5))));
        assert_eq!(inbox.push(2, t0 + Duration::from_millis(10)), Ok(false));
        assert_eq!(inbox.push(3, t0 + Duration::from_millis(1)), Ok(true));
        // Asleep until told: every push wakes it.
        inbox.awake();
        assert!(inbox.may_sleep(None));
        assert_eq!(inbox.push(4, t0 + Duration::from_secs(3600)), Ok(true));
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![2, 3, 4]);
        // Gone: the item comes back.
        drop(rx);
        assert_eq!(inbox.push(5, t0), Err(5));
    }
}
