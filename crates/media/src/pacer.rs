//! The shared RTP pacer: a few threads send every call's packets on one sorted schedule.
//!
//! Why not a task and a timer per call: with thousands of calls, tokio's timer wheel (1 ms
//! ticks) and one wake-up per packet per call made every packet leave about a millisecond
//! late, with a tail that grew with load (measured, BENCHMARKS.md). Here each shard (one per
//! core) keeps its streams in a binary heap ordered by when their next packet is due, wakes
//! on a 1 ms grid ([`TICK`]) when something is due, and sends every packet due by then in one
//! pass — thousands of streams cost at most a thousand wake-ups a second per shard, not fifty
//! per stream. Packets stay on each stream's
//! absolute schedule ([`Packetizer`]: packet *n* at start + n × 20 ms), so a late wake-up
//! delays one packet and never shifts the next.
//!
//! The call task keeps the SIP dialog and the receive side; it hands its RTP socket and
//! [`Packetizer`] to the pacer when the call is answered ([`Pacer::open`]) and steers playback
//! through the returned [`Stream`]. The pacer reports back the first packet and the end of
//! each prompt as [`StreamEvent`]s.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::call::Prompt;
use crate::rtp::{Packetizer, Tx};

/// The send grid. A shard wakes only on whole ticks counted from its start, and each wake
/// sends every packet due up to half a tick ahead: a packet leaves within ±TICK/2 of its slot.
/// Because 20 ms is a whole number of ticks, all packets of a stream fall at the same place
/// on the grid, so they still leave exactly 20 ms apart (wake-up jitter aside) — batching
/// costs no jitter. A shard wakes at most once per tick however many streams it carries:
/// measured, waking per due packet cost ~4 µs per packet at 1 000 streams (S3, BENCHMARKS.md).
const TICK: Duration = Duration::from_millis(1);
/// Send lateness histogram: buckets of 10 µs up to 100 ms (the last bucket holds the rest).
const LATE_BUCKET_US: u64 = 10;
const LATE_BUCKETS: usize = 10_000;
/// How long a command that does not start audio may wait in a shard's inbox: a shard with
/// open streams looks at its inbox at least this often (and on every packet tick), so such
/// commands wake it only when it sleeps longer. A stop, hold, codec or address change still
/// comes before the stream's next packet: the inbox is read before each tick's packets.
const LAZY: Duration = Duration::from_millis(20);

/// What a stream reports to its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// The first packet of this prompt left at this instant.
    FirstPacket(Prompt, Instant),
    /// The prompt has been played to its end.
    Done(Prompt, Instant),
}

/// Counters of one stream, readable by its call at any time.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Packets sent, per prompt (`Prompt::Message`, `Prompt::Confirmation`,
    /// `Prompt::Voicemail`).
    sent: [AtomicU32; 3],
    /// The latest any packet of this stream left after its slot, in microseconds.
    max_lateness_us: AtomicU32,
    /// Packets the socket refused (send buffer full, unreachable …).
    send_errors: AtomicU32,
    /// The RTP timestamp of the last packet sent, and its slot in µs from the stream's
    /// epoch ([`Stream::epoch`]): what an RTCP sender report maps to wall-clock time.
    last_ts: AtomicU32,
    last_slot_us: AtomicU64,
}

fn slot(p: Prompt) -> usize {
    match p {
        Prompt::Message => 0,
        Prompt::Confirmation => 1,
        Prompt::Voicemail => 2,
    }
}

impl StreamCounters {
    /// Packets of prompt `p` sent so far.
    pub fn sent(&self, p: Prompt) -> u32 {
        self.sent[slot(p)].load(Ordering::Relaxed)
    }
    /// The worst send lateness so far (µs after the packet's 20 ms slot).
    pub fn max_lateness_us(&self) -> u32 {
        self.max_lateness_us.load(Ordering::Relaxed)
    }
    /// Packets the socket refused.
    pub fn send_errors(&self) -> u32 {
        self.send_errors.load(Ordering::Relaxed)
    }
    /// Every packet sent (every prompt, lead-in included).
    pub fn packets(&self) -> u32 {
        self.sent
            .iter()
            .fold(0u32, |n, c| n.wrapping_add(c.load(Ordering::Relaxed)))
    }
    /// The last packet's RTP timestamp and slot (µs after [`Stream::epoch`]); `None` before
    /// the first packet.
    pub fn last_packet(&self) -> Option<(u32, u64)> {
        (self.packets() > 0).then(|| {
            (
                self.last_ts.load(Ordering::Relaxed),
                self.last_slot_us.load(Ordering::Relaxed),
            )
        })
    }
}

enum Cmd {
    Open(Box<Active>),
    Play {
        id: u64,
        audio: Arc<[u8]>,
        prompt: Prompt,
        start: Instant,
        lead_in: u32,
    },
    Stop(u64),
    Remote(u64, SocketAddr),
    Hold(u64),
    Resume(u64, Instant),
    Codec {
        id: u64,
        payload_type: u8,
        audio: [Arc<[u8]>; 3],
    },
    Close(u64),
}

/// A stream inside its shard.
struct Active {
    id: u64,
    socket: Arc<UdpSocket>,
    remote: SocketAddr,
    packetizer: Packetizer,
    playing: Option<(Arc<[u8]>, Prompt)>,
    /// On hold: the prompt keeps its place and nothing is sent.
    held: bool,
    /// Where [`StreamCounters::last_packet`]'s slots count from.
    epoch: Instant,
    /// Bumped on every play/stop: heap entries of an older generation are stale.
    generation: u32,
    events: UnboundedSender<StreamEvent>,
    counters: Arc<StreamCounters>,
}

struct Shared {
    late: Vec<AtomicU64>,
    /// Streams open on the shard threads (opened and not yet closed): the concurrent-call
    /// gauge, counted where the streams live.
    open: AtomicU64,
}

/// A shard's inbox: the commands its streams' calls queue, and when the shard thread will
/// next look at them by itself. A command wakes the thread only if it is needed sooner (a
/// prompt starting before that wake, or any command to a shard asleep until told): calls
/// opening, steering and closing streams cost no thread switch while the shard is ticking.
/// Before, every command went through a channel that woke the shard: four or five wake-ups
/// of a pacer thread per call (S1, BENCHMARKS.md).
struct Inbox {
    /// The commands and when the shard next looks at them (`crate::inbox`). The shard never
    /// blocks on the queue: it sleeps on its own (`thread::park`), so a push wakes nobody
    /// unless the inbox says the shard would look too late.
    queue: crate::inbox::Inbox<Cmd>,
    /// The shard's grid starts here.
    epoch: Instant,
    thread: OnceLock<std::thread::Thread>,
    /// The pacer and its streams on this shard: the thread ends when none is left.
    handles: AtomicUsize,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("queue", &self.queue)
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// Queues `cmd`, which must be applied by `by`.
    fn send(&self, cmd: Cmd, by: Instant) {
        // Fails only once the shard thread is gone (short of a panic, it outlives every
        // handle): the call then simply plays nothing and ends on its timers.
        if matches!(self.queue.push(cmd, by + TICK / 2), Ok(true)) {
            self.wake();
        }
    }

    /// Queues a command that starts no audio (applied within [`LAZY`]).
    // An I/O edge: the pacer sends on the clock.
    #[allow(clippy::disallowed_methods)]
    fn send_lazy(&self, cmd: Cmd) {
        self.send(cmd, Instant::now() + LAZY);
    }

    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// A handle on this shard (the pacer's or a stream's) is gone.
    fn release(&self) {
        if self.handles.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.wake();
        }
    }
}

/// The pacer: one sending thread per shard. Cheap to share (`Arc`); the threads end when the
/// pacer and every stream are dropped.
pub struct Pacer {
    shards: Vec<Arc<Inbox>>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// A call's handle on its stream. Dropping it closes the stream.
pub struct Stream {
    id: u64,
    shard: Arc<Inbox>,
    counters: Arc<StreamCounters>,
    epoch: Instant,
    /// The call's events, for a prompt that is over as soon as it starts.
    events: UnboundedSender<StreamEvent>,
    /// The stream until its first packet is due: it goes to its shard only with the first
    /// prompt that has a packet ([`Stream::play_after`]), and what is done to it before
    /// (remote, hold, codec, stop) is done here. A call that plays nothing — a short call,
    /// S1 in BENCHMARKS.md — never touches the shard: no command queued, no shard woken to
    /// open, stop and close a stream that sends nothing.
    pending: std::sync::Mutex<Option<Box<Active>>>,
}

impl Pacer {
    /// A pacer with `shards` sending threads (at least one).
    // An I/O edge: the shards' grids start now.
    #[allow(clippy::disallowed_methods)]
    pub fn new(shards: usize) -> std::io::Result<Pacer> {
        let shared = Arc::new(Shared {
            late: (0..LATE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            open: AtomicU64::new(0),
        });
        let mut inboxes = Vec::new();
        for k in 0..shards.max(1) {
            let epoch = Instant::now();
            let (queue, rx) = crate::inbox::Inbox::new(epoch);
            let inbox = Arc::new(Inbox {
                queue,
                epoch,
                thread: OnceLock::new(),
                handles: AtomicUsize::new(1),
            });
            let (shared, theirs) = (shared.clone(), inbox.clone());
            let thread = std::thread::Builder::new()
                .name(format!("rtp-pacer-{k}"))
                .spawn(move || run_shard(&theirs, &rx, &shared))?;
            let _ = inbox.thread.set(thread.thread().clone());
            inboxes.push(inbox);
        }
        Ok(Pacer {
            shards: inboxes,
            next_id: AtomicU64::new(0),
            shared,
        })
    }

    /// A pacer with one shard per available core.
    pub fn per_core() -> std::io::Result<Pacer> {
        Pacer::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Hands a call's RTP socket and packetizer to the pacer; nothing is sent until
    /// [`Stream::play`]. Events arrive on `events`.
    pub fn open(
        &self,
        socket: Arc<UdpSocket>,
        remote: SocketAddr,
        packetizer: Packetizer,
        events: UnboundedSender<StreamEvent>,
    ) -> Stream {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shard = self.shards[(id % self.shards.len() as u64) as usize].clone();
        let counters = Arc::new(StreamCounters::default());
        let epoch = packetizer.poll_timeout();
        // The shard thread lives while this stream does (short of a panic: the call then
        // simply plays nothing and ends on its timers).
        shard.handles.fetch_add(1, Ordering::SeqCst);
        let active = Box::new(Active {
            id,
            socket,
            remote,
            packetizer,
            playing: None,
            held: false,
            epoch,
            generation: 0,
            events: events.clone(),
            counters: counters.clone(),
        });
        Stream {
            id,
            shard,
            counters,
            epoch,
            events,
            pending: std::sync::Mutex::new(Some(active)),
        }
    }

    /// Send lateness of every packet so far: counts per 10 µs bucket (the last bucket counts
    /// everything from 100 ms on).
    pub fn lateness_histogram(&self) -> Vec<u64> {
        self.shared
            .late
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Streams currently open (one per call with media that has sent a packet: a stream
    /// goes to its shard with its first prompt that has one): returns to 0 when every call
    /// has ended and dropped its [`Stream`].
    pub fn open_streams(&self) -> u64 {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Width of a [`Pacer::lateness_histogram`] bucket in microseconds.
    pub const LATENESS_BUCKET_US: u64 = LATE_BUCKET_US;
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("shard", &self.shard)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// Plays `audio` (one byte per sample, already encoded) from `start`, replacing whatever
    /// was playing.
    pub fn play(&self, audio: Arc<[u8]>, prompt: Prompt, start: Instant) {
        self.play_after(audio, prompt, start, 0);
    }
    /// As [`Stream::play`], after `lead_in` packets of silence (packet *n* still at
    /// `start + n × 20 ms`); [`StreamEvent::FirstPacket`] tells when the audio itself began.
    ///
    /// An empty prompt without lead-in has no packet to pace: what was playing stops and the
    /// prompt is reported done at `start` from here, without waking the shard for it and
    /// without its thread handing the event back (two thread switches per such prompt: a
    /// signalling-only call's, S1 in BENCHMARKS.md; a call without a voicemail message).
    pub fn play_after(&self, audio: Arc<[u8]>, prompt: Prompt, start: Instant, lead_in: u32) {
        if audio.is_empty() && lead_in == 0 {
            self.stop();
            let _ = self.events.send(StreamEvent::Done(prompt, start));
            return;
        }
        // The stream's first packet: it goes to its shard now, ahead of this prompt.
        if let Some(a) = self.take_pending() {
            self.shard.send_lazy(Cmd::Open(a));
        }
        self.shard.send(
            Cmd::Play {
                id: self.id,
                audio,
                prompt,
                start,
                lead_in,
            },
            start,
        );
    }
    /// Sends from now on to `remote` (a re-INVITE moved the media, or symmetric RTP latched).
    pub fn set_remote(&self, remote: SocketAddr) {
        if !self.if_pending(|a| a.remote = remote) {
            self.shard.send_lazy(Cmd::Remote(self.id, remote));
        }
    }
    /// Holds: nothing is sent, the prompt keeps its place (a prompt started meanwhile waits).
    pub fn hold(&self) {
        if !self.if_pending(|a| a.held = true) {
            self.shard.send_lazy(Cmd::Hold(self.id));
        }
    }
    /// Ends a hold: the prompt continues where it stopped, on a new schedule from `start`.
    pub fn resume(&self, start: Instant) {
        // Not yet with its shard: nothing plays, so there is no schedule to move.
        if !self.if_pending(|a| a.held = false) {
            self.shard.send(Cmd::Resume(self.id, start), start);
        }
    }
    /// Switches codec: its payload type, and each prompt's audio encoded with it
    /// (`[message, confirmation, voicemail]`, same lengths: one byte per sample).
    pub fn set_codec(&self, payload_type: u8, audio: [Arc<[u8]>; 3]) {
        // Not yet with its shard: nothing plays, so only the payload type changes.
        if !self.if_pending(|a| a.packetizer.set_payload_type(payload_type)) {
            self.shard.send_lazy(Cmd::Codec {
                id: self.id,
                payload_type,
                audio,
            });
        }
    }
    /// The stream if it has not gone to its shard yet.
    fn take_pending(&self) -> Option<Box<Active>> {
        self.pending.lock().ok().and_then(|mut p| p.take())
    }
    /// Does `f` to the stream if it has not gone to its shard yet; false if it has.
    fn if_pending(&self, f: impl FnOnce(&mut Active)) -> bool {
        match self.pending.lock() {
            Ok(mut p) => match p.as_deref_mut() {
                Some(a) => {
                    f(a);
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
    }
    /// The instant [`StreamCounters::last_packet`]'s slots count from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }
    /// Stops playback (the stream stays open).
    pub fn stop(&self) {
        // Not yet with its shard: nothing plays.
        if !self.if_pending(|_| ()) {
            self.shard.send_lazy(Cmd::Stop(self.id));
        }
    }
    /// The stream's counters.
    pub fn counters(&self) -> &StreamCounters {
        &self.counters
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A stream that never went to its shard has nothing there to close.
        if self.take_pending().is_none() {
            self.shard.send_lazy(Cmd::Close(self.id));
        }
        self.shard.release();
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        for s in &self.shards {
            s.release();
        }
    }
}

/// Asks the scheduler for short time slices on this thread (Linux ≥ 6.12, EEVDF "custom
/// slice": `sched_setattr` with `sched_runtime` under the normal policy — no privilege
/// needed): a thread with a short slice gets an earlier deadline when it wakes, so the pacer
/// does not wait behind a busy thread's whole slice. Older kernels refuse it and the pacer
/// runs as any thread. There is no std or libc wrapper for `sched_setattr`, hence the raw
/// system call.
fn request_short_slices() {
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice: 0,
        priority: 0,
        // 100 µs, the shortest slice the kernel accepts.
        runtime: 100_000,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: sched_setattr(pid 0 = this thread, attr, flags 0) with a correctly sized,
    // initialised struct that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r != 0 {
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::info!(
                error = %std::io::Error::last_os_error(),
                "RTP pacer: the kernel refused short time slices; it runs as any thread"
            );
        });
    }
}

// The pacer is an I/O edge: it sends on the clock, so it reads it.
#[allow(clippy::disallowed_methods)]
fn run_shard(inbox: &Inbox, rx: &mpsc::Receiver<Cmd>, shared: &Shared) {
    request_short_slices();
    let mut streams: HashMap<u64, Active> = HashMap::new();
    // (due, stream id, generation), earliest first.
    let mut heap: BinaryHeap<Reverse<(Instant, u64, u32)>> = BinaryHeap::new();
    let grid = Grid { epoch: inbox.epoch };
    loop {
        // The inbox first: a stop, hold, codec or address change queued since the last wake
        // applies before this tick's packets.
        inbox.queue.awake();
        while let Ok(c) = rx.try_recv() {
            apply(c, &mut streams, &mut heap, &shared.open);
        }
        if inbox.handles.load(Ordering::SeqCst) == 0 && !inbox.queue.pending() {
            // The pacer and every stream are gone, and their last commands applied.
            return;
        }
        let now = Instant::now();
        // Everything assigned to this tick or an earlier one (a late wake catches up); a wake
        // for a command between ticks sends nothing that belongs to the next tick.
        let horizon = grid.tick_at_or_before(now) + TICK / 2;
        while let Some(&Reverse((due, id, generation))) = heap.peek() {
            if due > horizon {
                break;
            }
            heap.pop();
            let Some(s) = streams.get_mut(&id) else {
                continue;
            };
            if s.generation != generation {
                continue;
            }
            let Some((audio, prompt)) = s.playing.as_ref() else {
                continue;
            };
            let prompt = *prompt;
            let first = s.packetizer.at_first_audio();
            // A packet taken a little early (within TICK/2) is built as if at its slot.
            match s.packetizer.poll_transmit(now.max(due), audio) {
                Tx::Packet(pkt) => {
                    if s.socket.send_to(pkt, s.remote).is_err() {
                        s.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let late = now.saturating_duration_since(due).as_micros();
                    let late_us = u32::try_from(late).unwrap_or(u32::MAX);
                    s.counters
                        .max_lateness_us
                        .fetch_max(late_us, Ordering::Relaxed);
                    s.counters.sent[slot(prompt)].fetch_add(1, Ordering::Relaxed);
                    if let Some(b) = pkt.get(4..8) {
                        let ts = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                        s.counters.last_ts.store(ts, Ordering::Relaxed);
                    }
                    let slot_us = due.saturating_duration_since(s.epoch).as_micros();
                    s.counters.last_slot_us.store(
                        u64::try_from(slot_us).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                    let bucket = (late as u64 / LATE_BUCKET_US).min(LATE_BUCKETS as u64 - 1);
                    if let Some(b) = shared.late.get(bucket as usize) {
                        b.fetch_add(1, Ordering::Relaxed);
                    }
                    if first {
                        let _ = s.events.send(StreamEvent::FirstPacket(prompt, now));
                    }
                    heap.push(Reverse((s.packetizer.poll_timeout(), id, generation)));
                }
                Tx::Done => {
                    s.playing = None;
                    let _ = s.events.send(StreamEvent::Done(prompt, now));
                }
                Tx::NotDue => heap.push(Reverse((due, id, generation))),
            }
        }
        // Sleep until the tick that sends the next due packet — with open streams, at most
        // [`LAZY`], so their calls' commands need not wake us — or until a command must be
        // applied sooner.
        let next = heap
            .peek()
            .map(|Reverse((due, _, _))| grid.tick_for(*due))
            .or_else(|| (!streams.is_empty()).then(|| Instant::now() + LAZY));
        if !inbox.queue.may_sleep(next) {
            continue;
        }
        match next {
            Some(t) => std::thread::park_timeout(t.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}

/// Whole ticks of [`TICK`] from a shard's start.
struct Grid {
    epoch: Instant,
}

impl Grid {
    fn tick_at_or_before(&self, t: Instant) -> Instant {
        let k = t.saturating_duration_since(self.epoch).as_nanos() / TICK.as_nanos();
        self.tick(k)
    }

    fn tick(&self, k: u128) -> Instant {
        // u64 nanoseconds cover 584 years of uptime.
        let ns = u64::try_from(k * TICK.as_nanos()).unwrap_or(u64::MAX);
        self.epoch + Duration::from_nanos(ns)
    }

    /// The first tick that sends a packet due at `due`: the earliest tick T with
    /// T + TICK/2 ≥ `due`.
    fn tick_for(&self, due: Instant) -> Instant {
        let x = due
            .saturating_duration_since(self.epoch)
            .saturating_sub(TICK / 2)
            .as_nanos();
        self.tick(x.div_ceil(TICK.as_nanos()))
    }
}

fn apply(
    cmd: Cmd,
    streams: &mut HashMap<u64, Active>,
    heap: &mut BinaryHeap<Reverse<(Instant, u64, u32)>>,
    open: &AtomicU64,
) {
    match cmd {
        Cmd::Open(a) => {
            if streams.insert(a.id, *a).is_none() {
                open.fetch_add(1, Ordering::Relaxed);
            }
        }
        Cmd::Play {
            id,
            audio,
            prompt,
            start,
            lead_in,
        } => {
            if let Some(s) = streams.get_mut(&id) {
                s.packetizer.restart_with_lead_in(start, lead_in);
                s.playing = Some((audio, prompt));
                s.generation = s.generation.wrapping_add(1);
                if !s.held {
                    heap.push(Reverse((s.packetizer.poll_timeout(), id, s.generation)));
                }
            }
        }
        Cmd::Remote(id, remote) => {
            if let Some(s) = streams.get_mut(&id) {
                s.remote = remote;
            }
        }
        Cmd::Hold(id) => {
            if let Some(s) = streams.get_mut(&id) {
                s.held = true;
                s.generation = s.generation.wrapping_add(1);
            }
        }
        Cmd::Resume(id, start) => {
            if let Some(s) = streams.get_mut(&id) {
                if s.held {
                    s.held = false;
                    s.generation = s.generation.wrapping_add(1);
                    if s.playing.is_some() {
                        s.packetizer.resume(start);
                        heap.push(Reverse((s.packetizer.poll_timeout(), id, s.generation)));
                    }
                }
            }
        }
        Cmd::Codec {
            id,
            payload_type,
            audio,
        } => {
            if let Some(s) = streams.get_mut(&id) {
                s.packetizer.set_payload_type(payload_type);
                if let Some((a, p)) = s.playing.as_mut() {
                    *a = audio[slot(*p)].clone();
                }
            }
        }
        Cmd::Stop(id) => {
            if let Some(s) = streams.get_mut(&id) {
                s.playing = None;
                s.generation = s.generation.wrapping_add(1);
            }
        }
        Cmd::Close(id) => {
            if streams.remove(&id).is_some() {
                open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp;
    use proptest::prelude::*;

    proptest! {
        /// Every packet leaves within ±TICK/2 of its slot, and a stream's packets 20 ms apart
        /// land on ticks exactly 20 ms apart (batching adds no jitter).
        #[test]
        #[allow(clippy::disallowed_methods)] // an arbitrary epoch; nothing is timed
        fn the_grid_keeps_each_stream_twenty_ms_apart(
            start_us in 1_000u64..10_000_000_000,
            n in 0u32..100_000,
        ) {
            let grid = Grid { epoch: Instant::now() };
            let slot = grid.epoch + Duration::from_micros(start_us);
            let t0 = grid.tick_for(slot);
            prop_assert!(t0 + TICK / 2 >= slot);
            prop_assert!(t0 < slot + TICK / 2);
            let later = slot + Duration::from_millis(20) * n;
            prop_assert_eq!(grid.tick_for(later) - t0, Duration::from_millis(20) * n);
            prop_assert_eq!(grid.tick_at_or_before(t0), t0);
            prop_assert!(grid.tick_at_or_before(t0 + TICK / 3) == t0);
        }
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // real time: the pacer runs on the clock
    fn streams_play_on_schedule_report_their_prompts_and_stop() {
        let pacer = Pacer::new(2).unwrap_or_else(|e| panic!("{e}"));
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        sink.set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{e}"));
        let remote = sink.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut streams = Vec::new();
        let mut events = Vec::new();
        let audio: Arc<[u8]> = vec![0x55u8; 160 * 5].into(); // 5 packets
        let t0 = Instant::now() + Duration::from_millis(20);
        for k in 0..3u32 {
            let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")));
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let p = Packetizer::new(8, 100 + k, 0, 0, t0);
            let s = pacer.open(sock, remote, p, tx);
            s.play(audio.clone(), Prompt::Message, t0);
            streams.push(s);
            events.push(rx);
        }
        // 3 streams × 5 packets, each on its own SSRC in order.
        let mut seen: HashMap<u32, Vec<u16>> = HashMap::new();
        let mut buf = [0u8; 512];
        for _ in 0..15 {
            let n = sink.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            let (h, payload) = rtp::parse(&buf[..n]).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(payload.len(), 160);
            seen.entry(h.ssrc).or_default().push(h.sequence);
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.values().all(|s| s == &[0, 1, 2, 3, 4]), "{seen:?}");
        for (s, rx) in streams.iter().zip(events.iter_mut()) {
            let first = rx.blocking_recv();
            let done = rx.blocking_recv();
            match (first, done) {
                (
                    Some(StreamEvent::FirstPacket(Prompt::Message, a)),
                    Some(StreamEvent::Done(Prompt::Message, b)),
                ) => {
                    // Five 20 ms slots: done after the fifth packet's slot ends.
                    assert!(
                        b.duration_since(a) >= Duration::from_millis(95),
                        "{a:?} {b:?}"
                    );
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(s.counters().sent(Prompt::Message), 5);
            assert!(s.counters().max_lateness_us() < 20_000);
        }
        // Stop one stream mid-prompt: it sends nothing more.
        let t1 = Instant::now() + Duration::from_millis(20);
        streams[0].play(vec![0x55u8; 160 * 50].into(), Prompt::Confirmation, t1);
        std::thread::sleep(Duration::from_millis(100));
        streams[0].stop();
        std::thread::sleep(Duration::from_millis(40));
        let sent = streams[0].counters().sent(Prompt::Confirmation);
        assert!((2..50).contains(&sent), "{sent}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(streams[0].counters().sent(Prompt::Confirmation), sent);
        let total: u64 = pacer.lateness_histogram().iter().sum();
        assert_eq!(total, 15 + u64::from(sent));
        // The open-stream gauge counts the three, and returns to 0 once they are dropped.
        assert_eq!(pacer.open_streams(), 3);
        drop(streams);
        let deadline = Instant::now() + Duration::from_secs(2);
        while pacer.open_streams() != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pacer.open_streams(), 0);
    }

    /// A stream goes to its shard only with its first packet: one that plays nothing (an
    /// empty prompt) is never opened there — the shard's open-stream gauge stays at 0 and
    /// its socket is let go as soon as the stream is dropped — while what was done to it
    /// before (remote moved, payload type changed, held then resumed) applies to its first
    /// packets when a prompt comes.
    #[test]
    #[allow(clippy::disallowed_methods)] // real time: the pacer runs on the clock
    fn a_stream_goes_to_its_shard_only_with_its_first_packet() {
        let pacer = Pacer::new(1).unwrap_or_else(|e| panic!("{e}"));
        let sinks: Vec<UdpSocket> = (0..2)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")))
            .collect();
        sinks[1]
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = |k: usize| sinks[k].local_addr().unwrap_or_else(|e| panic!("{e}"));
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let t0 = Instant::now();

        // Nothing to play: done at once, and the shard never hears of the stream.
        let s = pacer.open(
            sock.clone(),
            addr(0),
            Packetizer::new(8, 7, 0, 0, t0),
            tx.clone(),
        );
        s.set_remote(addr(1));
        s.play(Arc::from(&[][..]), Prompt::Message, t0);
        s.stop();
        assert_eq!(
            rx.try_recv().ok(),
            Some(StreamEvent::Done(Prompt::Message, t0))
        );
        std::thread::sleep(LAZY + TICK * 3);
        assert_eq!(pacer.open_streams(), 0);
        drop(s);
        assert_eq!(
            Arc::strong_count(&sock),
            1,
            "the socket is let go with the stream"
        );

        // Changed before its first packet: the changes hold when it plays.
        let s = pacer.open(sock.clone(), addr(0), Packetizer::new(8, 9, 0, 0, t0), tx);
        s.set_remote(addr(1));
        s.set_codec(
            0,
            [Arc::from(&[][..]), Arc::from(&[][..]), Arc::from(&[][..])],
        );
        s.hold();
        s.resume(Instant::now());
        std::thread::sleep(TICK * 3);
        assert_eq!(pacer.open_streams(), 0);
        s.play(
            vec![0x55u8; 160 * 2].into(),
            Prompt::Message,
            Instant::now(),
        );
        let mut buf = [0u8; 512];
        for seq in 0..2 {
            let n = sinks[1].recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            let (h, _) = rtp::parse(&buf[..n]).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!((h.sequence, h.payload_type, h.ssrc), (seq, 0, 9));
        }
        assert_eq!(pacer.open_streams(), 1);
        drop(s);
        let deadline = Instant::now() + Duration::from_secs(2);
        while pacer.open_streams() != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pacer.open_streams(), 0);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // real time: the pacer runs on the clock
    fn an_empty_prompt_is_done_at_once_and_stops_what_played() {
        let pacer = Pacer::new(1).unwrap_or_else(|e| panic!("{e}"));
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let remote = sink.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let t0 = Instant::now();
        let s = pacer.open(sock, remote, Packetizer::new(8, 7, 0, 0, t0), tx);
        s.play(vec![0x55u8; 160 * 50].into(), Prompt::Message, t0);
        std::thread::sleep(Duration::from_millis(70));
        let t1 = Instant::now();
        s.play(Arc::from(&[][..]), Prompt::Confirmation, t1);
        // Reported at once, from the caller's side: no wait for a tick.
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e);
        }
        assert!(
            got.contains(&StreamEvent::Done(Prompt::Confirmation, t1)),
            "{got:?}"
        );
        // The message stopped (the stop applies before the shard's next packets).
        std::thread::sleep(Duration::from_millis(60));
        let sent = s.counters().sent(Prompt::Message);
        assert!((2..50).contains(&sent), "{sent}");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(s.counters().sent(Prompt::Message), sent);
        assert_eq!(s.counters().sent(Prompt::Confirmation), 0);
        // With lead-in, an empty prompt still goes through the shard (its silence is sent).
        let t2 = Instant::now();
        s.play_after(Arc::from(&[][..]), Prompt::Message, t2, 2);
        assert!(!std::iter::from_fn(|| rx.try_recv().ok())
            .any(|e| e == StreamEvent::Done(Prompt::Message, t2)));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(s.counters().sent(Prompt::Message), sent + 2);
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // real time: the pacer runs on the clock
    fn hold_keeps_the_place_resume_continues_and_remote_moves() {
        let pacer = Pacer::new(1).unwrap_or_else(|e| panic!("{e}"));
        let sinks: Vec<UdpSocket> = (0..2)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")))
            .collect();
        for s in &sinks {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let addr = |k: usize| sinks[k].local_addr().unwrap_or_else(|e| panic!("{e}"));
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")));
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let t0 = Instant::now();
        let s = pacer.open(sock, addr(0), Packetizer::new(0, 9, 0, 0, t0), tx);
        // 50 packets, each its index in every byte; 2 of lead-in silence first.
        let audio: Arc<[u8]> = (0..160 * 50)
            .map(|i| (i / 160) as u8)
            .collect::<Vec<_>>()
            .into();
        s.play_after(audio, Prompt::Message, t0, 2);
        let mut buf = [0u8; 512];
        let mut first = |k: usize| -> Option<(u16, u8)> {
            let n = sinks[k].recv(&mut buf).ok()?;
            rtp::parse(&buf[..n]).ok().map(|(h, p)| (h.sequence, p[0]))
        };
        let got: Vec<_> = (0..4).filter_map(|_| first(0)).collect();
        assert_eq!(got, [(0, 0xFF), (1, 0xFF), (2, 0), (3, 1)]);
        s.hold();
        std::thread::sleep(Duration::from_millis(60));
        let sent_at_hold = s.counters().sent(Prompt::Message);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(s.counters().sent(Prompt::Message), sent_at_hold);
        assert!(sent_at_hold < 52, "the hold came after the end");
        // Drain what left between the last read and the hold.
        for _ in 4..sent_at_hold {
            let _ = first(0);
        }
        let place = (sent_at_hold - 2) as u8; // audio packets played so far
        s.set_remote(addr(1));
        s.resume(Instant::now());
        let rest: Vec<_> = std::iter::from_fn(|| first(1)).collect();
        assert_eq!(
            rest.iter().map(|r| r.1).collect::<Vec<_>>(),
            (place..50).collect::<Vec<_>>(),
            "{rest:?}"
        );
        assert!(rest.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1)));
        assert_eq!(s.counters().sent(Prompt::Message), 52);
        assert_eq!(s.counters().packets(), 52);
        assert!(s.counters().last_packet().is_some());
    }
}
