//! The I/O edge: a SIP user agent client (crieur-sip's sans-IO [`Endpoint`] on a UDP socket)
//! and the call's RTP socket, driving the sans-IO [`CallScript`], [`Packetizer`] and DTMF
//! detectors.
//!
//! One [`Uac`] serves many concurrent calls: one SIP loop per loop thread (a task owning a
//! socket and an endpoint: datagrams and time in, datagrams and events out, as the pacer
//! drives its streams; over UDP one loop thread per core, each on its own port, a call going
//! to the first loop with fewer than 64 calls in progress — up to 64 calls held until their
//! start not counted — else to the least loaded), and per call one
//! RTP socket pair. A call's script runs inline in its SIP loop — a state machine (`Call`)
//! fed the loop's events and timers, no task or channel of its own — while it waits only on
//! SIP and its timers (its stop token watched by its caller's future, which tells the loop);
//! a call that must wait on more (its media, the opt-out's durable write,
//! answering-machine detection) goes on as a task on the loop's thread
//! (a single-threaded runtime per loop), steering its call leg through the loop's command
//! channel and hearing its events on its own. [`Uac::call`] only hands the call to a loop
//! thread and waits for its report.

// The I/O edge is where the clock is read; the cores it drives take `now` as input.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crieur_sip::auth::Credentials as SipCredentials;
use crieur_sip::body;
use crieur_sip::{
    wire, CallRef, Config as SipConfig, Endpoint, Event as SipEvent, Invite, Method,
    Outcome as SipOutcome, Request, Response, ServerRef, Timers, Transport,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::amd::{
    AmdEvent, AmdParams, Beep, Detector, DropPoint, EchoReference, Kind, Sit, Verdict,
};
use crate::audio::Message;
use crate::call::{Action, AmdMode, CallScript, Ending, HangupBy, Outcome, Prompt, ScriptConfig};
use crate::dtmf::{parse_sip_info, DtmfMethod};
use crate::g711::Codec;
use crate::pacer::{Pacer, StreamEvent};
use crate::rtp::{self, Packetizer};
use crate::sdp::{self, LocalSdp, RemoteSdp};
use crate::session::{Media, RtcpSummary};
use crate::signalling::{self, Header};
use crate::Error;

/// The minimum ring time: US 47 CFR 64.1200(a)(6) and UK Ofcom require 15 s.
pub const MIN_RING_TIMEOUT: Duration = Duration::from_secs(15);
/// The SIP socket's receive and send buffer asked for by [`Uac::start`] (4 MiB).
pub const SIP_SOCKET_BUFFER: usize = 4 << 20;
/// How long a process that is about to exit lets the BYE and CANCEL transactions of its
/// ended calls go on ([`Uac::wait_background`]): 4 s covers a UDP request's first four
/// transmissions (0, 0.5, 1.5, 3.5 s with T1 = 500 ms).
pub const EXIT_GRACE: Duration = Duration::from_secs(4);
/// The longest call accepted (a larger value is a configuration mistake).
pub const MAX_CALL_LENGTH: Duration = Duration::from_secs(4 * 3600);
/// Silence sent before the message by default, so the callee's media path is up before the
/// first syllable (see [`CallRequest::lead_in`]).
pub const DEFAULT_LEAD_IN: Duration = Duration::from_millis(300);
/// The longest lead-in accepted: the identity must be heard within 2 s of the answer.
pub const MAX_LEAD_IN: Duration = Duration::from_millis(1500);

/// Digest credentials for the trunk. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where and how to place calls.
#[derive(Debug, Clone)]
pub struct Trunk {
    /// The trunk's address (its only server when `servers` is empty).
    pub address: SocketAddr,
    /// Host part of the request URI (`sip:<number>@<domain>`); the trunk's address if `None`.
    pub domain: Option<String>,
    /// Caller ID: the From URI's user part (an E.164 number, usually).
    pub from_user: String,
    /// The From URI's host.
    pub from_domain: String,
    pub credentials: Option<Credentials>,
    /// Ring timeout (≥ [`MIN_RING_TIMEOUT`]).
    pub ring_timeout: Duration,
    /// Longest call, from INVITE to BYE.
    pub max_call_length: Duration,
    /// Symmetric RTP (for a far end behind NAT): accept RTP and RTCP from the first source
    /// heard, once per negotiated address, and send there — instead of only from and to the
    /// SDP's address. Off by default: with it, whoever sends first is the peer.
    pub symmetric_rtp: bool,
    /// `P-Asserted-Identity` (RFC 3325) for trunks that take the caller's identity from it:
    /// a `sip:`, `sips:` or `tel:` URI.
    pub p_asserted_identity: Option<String>,
    /// The shortest session interval (RFC 4028 `Session-Expires`) taken from the far end: a
    /// shorter one is raised to it (and a longer one than a day lowered to a day).
    /// [`MIN_SESSION_EXPIRES`] (90 s, the RFC's floor for any Min-SE, §4/§5) but in tests
    /// that must see a refresh within seconds.
    pub min_session_expires: Duration,
    /// The trunk's servers as its SRV records give them (RFC 3263), each with its addresses:
    /// every call tries them in an order drawn for it ([`Trunk::destinations`]). Empty:
    /// `address` alone.
    pub servers: Vec<crieur_sip::locate::Srv<Vec<SocketAddr>>>,
}

impl Trunk {
    /// Where a call's INVITE goes first, and the servers to try after it, in order (RFC 3263
    /// §4.3: by SRV priority, a weighted draw within one — drawn afresh for each call, so the
    /// weights share the calls out — each server's addresses in turn).
    pub fn destinations(&self) -> (SocketAddr, Vec<SocketAddr>) {
        let mut all =
            crieur_sip::locate::order(self.servers.clone(), |n| rand::random_range(0..=n))
                .into_iter()
                .flatten();
        match all.next() {
            Some(first) => (first, all.collect()),
            None => (self.address, Vec::new()),
        }
    }

    /// Checks the limits the rules impose.
    pub fn validate(&self) -> Result<(), Error> {
        if self.ring_timeout < MIN_RING_TIMEOUT {
            return Err(Error::Config {
                field: "ring_timeout",
                why: format!(
                    "{} s is below the {} s minimum",
                    self.ring_timeout.as_secs(),
                    MIN_RING_TIMEOUT.as_secs()
                ),
            });
        }
        if self.max_call_length > MAX_CALL_LENGTH {
            return Err(Error::Config {
                field: "max_call_length",
                why: format!("at most {} s", MAX_CALL_LENGTH.as_secs()),
            });
        }
        if let Some(pai) = &self.p_asserted_identity {
            if signalling::p_asserted_identity(pai).is_none() {
                return Err(Error::Config {
                    field: "p_asserted_identity",
                    why: format!("{pai}: expected a sip:, sips: or tel: URI"),
                });
            }
        }
        if self.max_call_length <= self.ring_timeout {
            return Err(Error::Config {
                field: "max_call_length",
                why: "must be longer than the ring timeout".into(),
            });
        }
        Ok(())
    }
}

/// One call to place.
pub struct CallRequest {
    /// The number dialled, as the request URI's user part (e.g. `+33612345678`).
    pub number: String,
    pub message: Arc<Message>,
    pub confirmation: Arc<Message>,
    pub opt_out_key: char,
    /// Optional "not interested" key: ends the call as a refusal (no opt-out).
    pub not_interested_key: Option<char>,
    /// Keep the received audio packets in the report (tests, diagnostics; off in production:
    /// it costs memory per call).
    pub keep_received_audio: bool,
    /// Cancelled to stop the call (shutdown): ends it `local-shutdown` (an opt-out in
    /// progress is finished first).
    pub stop: Option<CancellationToken>,
    /// Silence before the message (rounded up to 20 ms packets, on the message's own
    /// schedule; at most [`MAX_LEAD_IN`]). [`DEFAULT_LEAD_IN`] unless told otherwise.
    pub lead_in: Duration,
    /// Answering-machine detection, if any.
    pub amd: Option<AmdRequest>,
}

/// Answering-machine detection for one call: the detector listens from the answer while the
/// message plays (a person hears who is calling within 2 s whatever it concludes).
#[derive(Debug, Clone)]
pub struct AmdRequest {
    pub mode: AmdMode,
    pub params: AmdParams,
    /// The voicemail message (`voicemail-drop`: required).
    pub voicemail: Option<Arc<Message>>,
    /// What the audit log names the voicemail message by (its file's SHA-256), copied into
    /// the report.
    pub voicemail_sha256: Option<String>,
}

/// What answering-machine detection found in a call (offsets from the INVITE).
#[derive(Debug, Clone, Default)]
pub struct AmdReport {
    pub mode: AmdMode,
    /// Every verdict, when it was made: the first, then a beep's correction to `machine`.
    pub verdicts: Vec<(Duration, Verdict)>,
    /// Every beep, when it was confirmed.
    pub beeps: Vec<(Duration, Beep)>,
    /// The drop point (after a `machine` verdict), when it was decided.
    pub drop: Option<(Duration, DropPoint)>,
    /// A Special Information Tone, when it was heard (the call then ends `intercepted` or
    /// `intercepted-congestion`).
    pub sit: Option<(Duration, Sit)>,
    /// When the voicemail message's first RTP packet left.
    pub voicemail_started_at: Option<Duration>,
    /// RTP packets of the voicemail message sent.
    pub voicemail_packets: u64,
    /// [`AmdRequest::voicemail_sha256`].
    pub voicemail_sha256: Option<String>,
}

impl AmdReport {
    /// The verdict that stands: the last one.
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdicts.last().map(|(_, v)| v)
    }
}

/// A future that returns once the opt-out is durable (or the reason it could not be made so).
pub type OptOutFuture = Pin<Box<dyn Future<Output = Result<(), OptOutError>> + Send>>;

/// Why the opt-out hook could not record an opt-out (the store's or the log's own error,
/// with its sources).
pub type OptOutError = Box<dyn std::error::Error + Send + Sync>;

/// What happened during a call, for the operator and the audit log.
#[derive(Debug, Clone)]
pub struct CallReport {
    pub call_id: String,
    pub ending: Ending,
    /// Each event with its offset from the INVITE.
    pub timeline: Vec<(Duration, String)>,
    /// Keys heard (digit, method, offset from the INVITE).
    pub keys: Vec<(char, DtmfMethod, Duration)>,
    pub opt_out_recorded: bool,
    pub answer_to_first_audio: Option<Duration>,
    /// The INVITE's final response and when it came (offset from the INVITE).
    pub final_response: Option<(u16, Duration)>,
    /// The first 18x provisional response (something rang, or early media) and when it came.
    /// With no 18x and no 2xx, the trunk refused the call before anything rang.
    pub first_18x: Option<(u16, Duration)>,
    /// Whether the INVITE that got the final response carried our credentials (we answered a
    /// 401/407 challenge): a 403 to it is an authentication failure.
    pub credentials_sent: bool,
    /// When the call was answered (offset from the INVITE).
    pub answered_at: Option<Duration>,
    /// When the message's first RTP packet left (offset from the INVITE).
    pub first_audio_at: Option<Duration>,
    /// RTP packets of the message sent (× 20 ms = how far the message got), the lead-in's
    /// silence not counted.
    pub message_packets: u64,
    pub codec: Option<Codec>,
    /// Every RTP packet sent (lead-in, message, confirmation).
    pub rtp_sent: u64,
    /// The latest any RTP packet left against its slot (start + n × 20 ms), µs.
    pub send_lateness_max_us: u32,
    /// RTP packets the socket refused to send.
    pub rtp_send_errors: u32,
    /// RTP audio packets received (payloads, in order of arrival), for tests and diagnostics.
    pub rtp_received: Vec<(rtp::RtpHeader, Vec<u8>)>,
    /// Our RTP address (an even port; RTCP on the next one, RFC 3550 §11).
    pub rtp_local: Option<SocketAddr>,
    /// Answering-machine detection, when the call asked for it.
    pub amd: Option<AmdReport>,
    /// RTCP both ways: reports sent, and the far end's reports on our audio (loss, jitter).
    pub rtcp: RtcpSummary,
}

/// A SIP UAC placing any number of concurrent calls: one loop thread or more (over UDP, one
/// per core: [`Uac::start`]), each with its own SIP socket, endpoint and RTP sockets; a call
/// goes to the first loop with fewer than 64 calls in progress (up to 64 calls held until
/// their start not counted: [`Shard::FILL`]), else to the least loaded.
pub struct Uac {
    loops: Vec<Shard>,
    transport: Transport,
    /// TLS without a listener: the socket holding our advertised port (bound, not listening:
    /// a trunk that connects to it is refused at once instead of left waiting).
    _port: Option<socket2::Socket>,
    buffers: (usize, usize),
    pacer: Arc<Pacer>,
    token: CancellationToken,
}

/// One loop thread of a [`Uac`]: its SIP loop (socket and endpoint), the runtime the loop and
/// its calls' tasks run on, and the RTP socket pairs its calls reuse (registered with that
/// runtime's reactor, so a pair stays on the thread that made it).
struct Shard {
    sip: SipLoop,
    local: SocketAddr,
    /// The calls handed to the loop thread, spawned there by its SIP loop.
    jobs: Arc<Jobs>,
    ports: Arc<RtpPorts>,
    /// Calls placed on this loop, or held there until their start, and not ended.
    calls: Arc<AtomicUsize>,
    /// Of those, the calls held until their start ([`Uac::call_at`]), not yet placed.
    held: Arc<AtomicUsize>,
}

impl Shard {
    /// Calls in progress a loop takes before the next loop is used: below it, every call
    /// goes to the first loop not over it (at a low rate one thread does the work, without
    /// waking the others); above, to the loop with the fewest calls, held ones included (a
    /// loop that falls behind keeps its calls longer, so the others take the new ones).
    /// Up to `FILL` calls held until their start do not count toward it: a caller handing a
    /// window of calls ahead ([`Uac::call_at`]) holds a window's worth or two on the loop
    /// besides the calls in progress — 40 to 80 at 4,000 calls/s in 10 ms windows — which
    /// would open the second loop (two loops ticking for work one does) at a rate one loop
    /// keeps up with. The held calls past `FILL` count: a bigger hand-ahead (many calls
    /// handed at once, or a loop that falls behind its starts) spreads over the loops
    /// instead of all going to the first.
    const FILL: usize = 64;

    /// The loop for the next call.
    fn pick(loops: &[Shard]) -> Option<&Shard> {
        let load = |l: &&Shard| l.calls.load(Ordering::Relaxed);
        // Read apart, the two counts may be a call apart: never below zero.
        let counted = |l: &&Shard| {
            let held = l.held.load(Ordering::Relaxed);
            load(l).saturating_sub(held) + held.saturating_sub(Self::FILL)
        };
        loops
            .iter()
            .find(|l| counted(l) < Self::FILL)
            .or_else(|| loops.iter().min_by_key(load))
    }
}

/// Counts a call on its loop while it runs.
struct OnLoop(Arc<AtomicUsize>);

impl OnLoop {
    fn new(calls: &Arc<AtomicUsize>) -> OnLoop {
        calls.fetch_add(1, Ordering::Relaxed);
        OnLoop(calls.clone())
    }
}

impl Drop for OnLoop {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What makes a loop's sockets inside its thread's runtime (given a token stopped with the UAC).
type MakeNet = Box<dyn FnOnce(CancellationToken) -> std::io::Result<SipNet>>;

impl Drop for Uac {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl Uac {
    /// Binds the SIP UDP socket at `bind` (port 0 for any) and starts the stack, with
    /// [`SIP_SOCKET_BUFFER`] asked for as the socket's receive and send buffers: one loop
    /// thread per core ([`Uac::loops_per_core`]), the first on `bind`, the others each on a
    /// port of `bind`'s address the system gives (the trunk sees calls from several local
    /// ports; each call's Via and Contact name its own).
    pub async fn start(bind: SocketAddr, user_agent: &str) -> Result<Uac, Error> {
        Self::start_udp(bind, user_agent, SIP_SOCKET_BUFFER, Self::loops_per_core()).await
    }

    /// One per core the process may run on (at least one).
    pub fn loops_per_core() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// [`Uac::start`] over TCP: a listener on `bind` (port 0 for any) for connections the
    /// trunk opens, and a connection to the trunk opened with the first INVITE and kept
    /// (RFC 3261 §18; our Via says TCP, Contact `;transport=tcp`; no retransmissions, timers
    /// for a reliable transport).
    pub async fn start_tcp(bind: SocketAddr, user_agent: &str) -> Result<Uac, Error> {
        check_bind(bind)?;
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let net: MakeNet =
            Box::new(|_| Ok(SipNet::Tcp(tokio::net::TcpListener::from_std(listener)?)));
        Self::launch(Transport::Tcp, user_agent, vec![(local, net)], (0, 0), None)
    }

    /// [`Uac::start`] over TLS: connections to the trunk with its certificate checked against
    /// `tls.server_name` (system roots plus `tls.ca_file`; SNI sent), `sips:` URIs (Request-URI,
    /// To, From, Contact), Via `TLS`. With `tls.identity`, a TLS listener on `bind` (the
    /// address our Via and Contact give) takes the connections the trunk opens to us, served
    /// with that certificate ([`crate::listen`]); without, `bind`'s port is only what they say
    /// and the trunk can reach us only on our own connection.
    pub async fn start_tls(
        bind: SocketAddr,
        user_agent: &str,
        tls: &TlsTrunk,
    ) -> Result<Uac, Error> {
        check_bind(bind)?;
        let (connector, name) = tls.connector()?;
        let (listener, holder, local) = match &tls.identity {
            Some(id) => {
                let acceptor = id.acceptor()?;
                let listener = std::net::TcpListener::bind(bind)?;
                listener.set_nonblocking(true)?;
                let local = listener.local_addr()?;
                (Some((listener, acceptor)), None, local)
            }
            None => {
                // A port for our Via and Contact: one the system gives, held by a bound
                // socket that does not listen, so it stays ours and refuses connections.
                let holder = socket2::Socket::new(
                    socket2::Domain::for_address(bind),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                holder.bind(&bind.into())?;
                let local = holder.local_addr()?.as_socket().ok_or_else(|| {
                    std::io::Error::other("the TLS port's socket has no IP address")
                })?;
                (None, Some(holder), local)
            }
        };
        let net: MakeNet = Box::new(move |inbound_stop| {
            // The listener's tasks on the loop thread too, beside the connections they
            // hand to the loop.
            let inbound = match listener {
                Some((l, acceptor)) => Some(crate::listen::Inbound::start(
                    tokio::net::TcpListener::from_std(l)?,
                    acceptor,
                    inbound_stop,
                )),
                None => None,
            };
            Ok(SipNet::Tls {
                connector,
                name,
                inbound,
            })
        });
        Self::launch(
            Transport::Tls,
            user_agent,
            vec![(local, net)],
            (0, 0),
            holder,
        )
    }

    /// [`Uac::start`] with one loop thread (one SIP socket, on `bind`) and `buffer` bytes asked
    /// for as the SIP socket's `SO_RCVBUF` and `SO_SNDBUF`. The kernel caps the request at
    /// `net.core.rmem_max` / `wmem_max`; a capped request is logged, and
    /// [`Uac::sip_socket_buffers`] tells what was granted.
    pub async fn start_with_buffer(
        bind: SocketAddr,
        user_agent: &str,
        buffer: usize,
    ) -> Result<Uac, Error> {
        Self::start_udp(bind, user_agent, buffer, 1).await
    }

    /// [`Uac::start_with_buffer`] with `loops` loop threads (at least one): the first on
    /// `bind`, the others on ports of `bind`'s address the system gives, each its own socket
    /// and endpoint (a response comes back to the port its request's Via names, so a call's
    /// transactions stay on one loop; `SO_REUSEPORT` on one port would hash the trunk's
    /// datagrams to one socket whatever loop sent the request).
    pub async fn start_udp(
        bind: SocketAddr,
        user_agent: &str,
        buffer: usize,
        loops: usize,
    ) -> Result<Uac, Error> {
        check_bind(bind)?;
        let mut nets: Vec<(SocketAddr, MakeNet)> = Vec::new();
        let mut buffers = (0, 0);
        for i in 0..loops.max(1) {
            let at = if i == 0 {
                bind
            } else {
                SocketAddr::new(bind.ip(), 0)
            };
            let (socket, granted) = udp_socket(at, buffer)?;
            buffers = granted;
            let local = socket.local_addr()?;
            nets.push((
                local,
                Box::new(|_| Ok(SipNet::Udp(tokio::net::UdpSocket::from_std(socket)?))),
            ));
        }
        Self::launch(Transport::Udp, user_agent, nets, buffers, None)
    }

    /// The UAC on its loop threads: per `(local, net)`, an endpoint at `local` over
    /// `transport`, with the sockets `net` makes inside the thread's runtime (given a token
    /// stopped with the UAC, for the tasks it starts there). `port` is a socket held for the
    /// UAC's life.
    fn launch(
        transport: Transport,
        user_agent: &str,
        nets: Vec<(SocketAddr, MakeNet)>,
        buffers: (usize, usize),
        port: Option<socket2::Socket>,
    ) -> Result<Uac, Error> {
        let token = CancellationToken::new();
        let mut loops = Vec::with_capacity(nets.len());
        let nets_len = nets.len();
        for (local, net) in nets {
            let endpoint = Endpoint::new(SipConfig {
                local,
                transport,
                user_agent: user_agent.to_owned(),
                timers: Timers::default(),
                capabilities: signalling::capabilities(),
                accept_incoming: false,
            });
            let tasks = token.child_token();
            let (sip, jobs) = LoopThread::start(|| net(tasks), endpoint, token.child_token())?;
            loops.push(Shard {
                sip,
                local,
                jobs,
                ports: Arc::new(RtpPorts::new(nets_len)),
                calls: Arc::default(),
                held: Arc::default(),
            });
        }
        Ok(Uac {
            loops,
            transport,
            buffers,
            pacer: Arc::new(Pacer::per_core()?),
            token,
            _port: port,
        })
    }

    /// The RTP pacer every call of this UAC sends through.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// The RTP socket pairs of every loop: bound, reused, closed, and idle now.
    pub fn rtp_pairs(&self) -> RtpPairStats {
        self.loops
            .iter()
            .map(|l| l.ports.stats())
            .fold(RtpPairStats::default(), |a, b| RtpPairStats {
                bound: a.bound + b.bound,
                reused: a.reused + b.reused,
                closed: a.closed + b.closed,
                idle: a.idle + b.idle,
            })
    }

    /// Calls that went on as tasks (to wait on their media, the opt-out's write, the
    /// or detector), rather than running inline to their end in their SIP loop.
    pub fn calls_as_tasks(&self) -> u64 {
        self.loops
            .iter()
            .map(|l| l.jobs.to_tasks.load(Ordering::Relaxed))
            .sum()
    }

    /// How many times the SIP loops waited (on their socket, timer, inbox or commands) and
    /// were woken: at most one thread wake-up each, fewer when the wait ended at once.
    pub fn sip_loop_waits(&self) -> u64 {
        self.loops
            .iter()
            .map(|l| l.jobs.waits.load(Ordering::Relaxed))
            .sum()
    }

    /// RTP socket pairs open now, in calls and idle in the pools (bound and not yet closed):
    /// two counters read per loop, no lock taken — cheap enough to sample often.
    pub fn rtp_pairs_open(&self) -> u64 {
        self.loops
            .iter()
            .map(|l| {
                let bound = l.ports.bound.load(Ordering::Relaxed);
                bound.saturating_sub(l.ports.closed.load(Ordering::Relaxed))
            })
            .sum()
    }

    /// Waits up to `limit` for the CANCEL and BYE transactions of ended calls to get their
    /// final response (a BYE to a vanished peer retransmits for 32 s, timer F; an answered
    /// one is not waited for through its timer K). Call before dropping the `Uac` at exit,
    /// so a lost BYE still gets its retransmissions. True if none is left.
    pub async fn wait_background(&self, limit: Duration) -> bool {
        let end = tokio::time::Instant::now() + limit;
        loop {
            if self.loops.iter().map(|l| l.sip.background()).sum::<usize>() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The local SIP address (the first loop's: `bind`'s).
    pub fn local_addr(&self) -> SocketAddr {
        self.loops
            .first()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |l| l.local)
    }

    /// Every loop's local SIP address (UDP: one per loop thread).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.loops.iter().map(|l| l.local).collect()
    }

    /// The SIP sockets' receive and send buffers as granted by the kernel, in bytes (UDP; 0
    /// over TCP).
    pub fn sip_socket_buffers(&self) -> (usize, usize) {
        self.buffers
    }

    /// Places one call and runs its script to the end. `on_opt_out` is called when the
    /// opt-out key is heard; the confirmation plays only after its future completes `Ok`
    /// (the future runs on the caller's runtime).
    ///
    /// The call is handed to a loop thread, whose SIP loop places it and runs its script
    /// inline — a state machine driven by the loop's own events and timers, with no task,
    /// channel or `select!` of its own — for as long as the call waits only on SIP and its
    /// timers: ringing, CANCEL on the ring timeout, the auth retry, failures, and a call
    /// whose script ends at its answer (an empty message). A call that must wait on more —
    /// its media (RTP, a prompt being paced, re-INVITEs), the opt-out's durable write,
    /// answering-machine detection — goes on from there as a task on the same
    /// thread. This future only waits for its report; dropping it ends the call at once as
    /// its script would end it (CANCEL if ringing, BYE if established), inline or as a task,
    /// and the call counts on its loop until then.
    pub async fn call(
        &self,
        trunk: &Trunk,
        req: CallRequest,
        on_opt_out: impl FnOnce(char, DtmfMethod) -> OptOutFuture + Send + 'static,
    ) -> Result<CallReport, Error> {
        self.place(trunk, req, None, on_opt_out).await
    }

    /// [`Uac::call`], the call placed at `at` rather than at once: its loop thread holds it
    /// and places it from its own timer at its first turn at or after `at` (never before),
    /// so a caller with a schedule can hand the next calls ahead in one go — without a
    /// thread switch per call to hand each over when it is due (the loop places them on
    /// the turns it takes anyway: its datagrams', its timers'). Until it is placed the call
    /// counts on its loop, toward its fill only past [`Shard::FILL`] held calls
    /// ([`Shard::pick`]); dropping this future, or cancelling its stop
    /// token, before `at` places nothing (the stop ends it `local-shutdown`, not placed).
    /// An `at` already past places the call at once, as [`Uac::call`]. A call still held
    /// when the `Uac` stops resolves to [`Error::SipStopped`], not a report; a stop token
    /// cancelled while this future is not polled is seen at the loop's next sweep or, at
    /// the latest, at `at`.
    pub async fn call_at(
        &self,
        trunk: &Trunk,
        req: CallRequest,
        at: Instant,
        on_opt_out: impl FnOnce(char, DtmfMethod) -> OptOutFuture + Send + 'static,
    ) -> Result<CallReport, Error> {
        self.place(trunk, req, Some(at), on_opt_out).await
    }

    /// [`Uac::call`] and [`Uac::call_at`]: the call handed to a loop thread, to be placed at
    /// `at` (at once if `None`), and its report awaited.
    async fn place(
        &self,
        trunk: &Trunk,
        req: CallRequest,
        at: Option<Instant>,
        on_opt_out: impl FnOnce(char, DtmfMethod) -> OptOutFuture + Send + 'static,
    ) -> Result<CallReport, Error> {
        trunk.validate()?;
        check_request(&req)?;
        let Some(shard) = Shard::pick(&self.loops) else {
            return Err(Error::SipStopped);
        };
        let (done, report) = oneshot::channel();
        let req_stop = req.stop.clone();
        let job = Box::new(NewCall {
            // Counted until the call ends, not until this future does (dropped, the call
            // goes on to be hung up).
            counted: OnLoop::new(&shard.calls),
            // Counted as held until the loop places it (or drops it).
            held: at
                .filter(|&at| at > Instant::now())
                .map(|_| OnLoop::new(&shard.held)),
            ctx: CallContext {
                sip: shard.sip.clone(),
                ports: shard.ports.clone(),
                pacer: self.pacer.clone(),
                local: shard.local,
            },
            // Its offer is written on the loop thread, once the call's RTP pair is taken.
            invite: invite_for(trunk, &req.number, shard.local, self.transport),
            script: ScriptConfig {
                ring_timeout: trunk.ring_timeout,
                max_call_length: trunk.max_call_length,
                opt_out_key: req.opt_out_key,
                not_interested_key: req.not_interested_key,
                amd: req.amd.as_ref().map_or(AmdMode::Off, |a| a.mode),
            },
            symmetric_rtp: trunk.symmetric_rtp,
            min_session_expires: trunk.min_session_expires,
            req,
            on_opt_out: Box::new(on_opt_out),
            caller: tokio::runtime::Handle::try_current().ok(),
            done,
            at,
        });
        // Taken at the loop's next turn within a [`TICK`] (a call handed ahead: by its
        // start): the loop thread is woken only if it sleeps past that (not while it runs,
        // or is about to wake anyway — for calls handed ahead in a batch, the first wakes it
        // at most, and it then sleeps until the earliest of them; for calls placed at once
        // while they keep coming, the loop ticks ([`CALLS_COMING`]) and takes them at its
        // next tick, no wake-up each).
        let now = Instant::now();
        let by = (now + TICK).max(at.unwrap_or(now));
        match shard.jobs.inbox.push(job, by) {
            Ok(true) => shard.jobs.wake.notify_one(),
            Ok(false) => {}
            // The loop thread ended (its `Uac` is being dropped).
            Err(_) => return Err(Error::SipStopped),
        }
        let mut gone = CallerGone(Some(&shard.jobs));
        // The stop token is watched here while the call may be inline (its SIP loop polls no
        // future of its own): cancelled, it tells the loop, which stops the call if it is
        // still inline (a call gone on as a task watches its token itself).
        let stop = req_stop;
        let mut stopped = std::pin::pin!(stop.as_ref().map(CancellationToken::cancelled));
        // Polled with a waker that lets the loop wake this caller once per turn for all the
        // reports of that turn, and relays the others' wake-ups (`relay.rs`).
        let relay = crate::relay::ReportWaker::new(shard.jobs.clone());
        let waker = std::task::Waker::from(relay.clone());
        // Dropped with this future (ended, or given up by the caller): what was handed to it
        // is woken, and what the loop would hand it later is woken by the loop.
        let _polling = crate::relay::Polling(relay.clone());
        let mut report = report;
        let report = std::future::poll_fn(|cx| {
            relay.polled(cx.waker());
            if stopped
                .as_mut()
                .as_pin_mut()
                .is_some_and(|s| s.poll(cx).is_ready())
            {
                stopped.set(None);
                shard.jobs.look.store(true, Ordering::SeqCst);
                shard.jobs.wake.notify_one();
            }
            std::pin::Pin::new(&mut report).poll(&mut std::task::Context::from_waker(&waker))
        })
        .await;
        gone.0 = None;
        match report {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // The loop thread ended with the call on it.
            Err(_) => Err(Error::SipStopped),
        }
    }
}

/// A call's report as it begins: `first` its first note, ending `local-shutdown` (no
/// reason yet) until its script ends it.
fn first_report(
    call_id: String,
    first: String,
    rtp_local: Option<SocketAddr>,
    req: &CallRequest,
) -> CallReport {
    CallReport {
        call_id,
        ending: Ending {
            outcome: Outcome::LocalShutdown,
            sip_status: None,
            reason: String::new(),
            hangup_by: HangupBy::Nobody,
        },
        timeline: {
            // Sized for a short call's notes (INVITE sent, 18x, 2xx, BYE, ended): one
            // allocation rather than three as it grows (BENCHMARKS.md S1 step 42).
            let mut t = Vec::with_capacity(8);
            t.push((Duration::ZERO, first));
            t
        },
        keys: Vec::new(),
        opt_out_recorded: false,
        answer_to_first_audio: None,
        final_response: None,
        first_18x: None,
        credentials_sent: false,
        answered_at: None,
        first_audio_at: None,
        message_packets: 0,
        codec: None,
        rtp_sent: 0,
        send_lateness_max_us: 0,
        rtp_send_errors: 0,
        rtp_received: Vec::new(),
        rtp_local,
        rtcp: RtcpSummary::default(),
        amd: req
            .amd
            .as_ref()
            .filter(|a| a.mode != AmdMode::Off)
            .map(|a| AmdReport {
                mode: a.mode,
                voicemail_sha256: a.voicemail_sha256.clone(),
                ..AmdReport::default()
            }),
    }
}

/// A call's request checked before it is handed to a loop.
fn check_request(req: &CallRequest) -> Result<(), Error> {
    if req.lead_in > MAX_LEAD_IN {
        return Err(Error::Config {
            field: "lead_in",
            why: format!(
                "{} ms is above the {} ms maximum (the identity must be heard within 2 s)",
                req.lead_in.as_millis(),
                MAX_LEAD_IN.as_millis()
            ),
        });
    }
    if let Some(a) = &req.amd {
        if a.mode == AmdMode::VoicemailDrop && a.voicemail.as_ref().is_none_or(|v| v.is_empty()) {
            return Err(Error::Config {
                field: "amd.voicemail_message",
                why: "voicemail-drop needs a voicemail message".into(),
            });
        }
    }
    Ok(())
}

/// `n` as 32 lower-case hex digits, most significant first (`format!("{n:032x}")`).
fn push_hex_u128(out: &mut String, n: u128) {
    out.extend(
        (0..32)
            .rev()
            .map(|i| char::from(b"0123456789abcdef"[((n >> (i * 4)) & 0xf) as usize])),
    );
}

/// A call's INVITE from `local` (its body, the offer, is written when the RTP pair is taken).
fn invite_for(trunk: &Trunk, number: &str, local: SocketAddr, transport: Transport) -> Box<Invite> {
    // `{:032x}@{ip}`, the hex digits written by hand: `format!`'s padded hex was a visible
    // share of a call's own work (BENCHMARKS.md S1 step 42).
    use std::fmt::Write as _;
    let mut call_id = String::with_capacity(32 + 1 + 39);
    push_hex_u128(&mut call_id, rand::random::<u128>());
    call_id.push('@');
    let _ = write!(call_id, "{}", local.ip());
    // Borrowed from the trunk (its address written out only when it names no domain).
    let address;
    let domain = match &trunk.domain {
        Some(d) => d.as_str(),
        None => {
            address = trunk.address.to_string();
            address.as_str()
        }
    };
    // Over TLS the URIs are `sips:` (RFC 3261 §19.1, §26.2.2: TLS on every hop).
    let secure = |u: String| match transport {
        Transport::Tls => u.replacen("sip:", "sips:", 1),
        Transport::Udp | Transport::Tcp => u,
    };
    let callee = secure(signalling::sip_uri(number, domain));
    let (destination, alternates) = trunk.destinations();
    Box::new(Invite {
        call_id,
        request_uri: callee.clone(),
        from: secure(signalling::sip_uri(&trunk.from_user, &trunk.from_domain)),
        to: callee,
        contact: match transport {
            Transport::Udp => format!("sip:{}@{}", trunk.from_user, local),
            Transport::Tcp => format!("sip:{}@{};transport=tcp", trunk.from_user, local),
            Transport::Tls => format!("sips:{}@{}", trunk.from_user, local),
        },
        destination,
        alternates,
        headers: signalling::invite_headers(
            trunk
                .p_asserted_identity
                .as_deref()
                .and_then(signalling::p_asserted_identity)
                .as_deref(),
        ),
        content_type: Some("application/sdp".into()),
        body: Vec::new(),
        credentials: trunk
            .credentials
            .as_ref()
            .map(|c| SipCredentials::new(c.username.clone(), c.password.clone())),
    })
}

/// A call handed to a loop thread ([`Uac::call`]), placed there by its SIP loop.
type Job = Box<NewCall>;

/// A loop thread's calls to place: its inbox, read at each of the SIP loop's turns, and what
/// wakes the loop when the inbox says it sleeps too long.
struct Jobs {
    inbox: crate::inbox::Inbox<Job>,
    wake: tokio::sync::Notify,
    /// A caller dropped its `Uac::call` future before its report, or its call's stop token
    /// was cancelled: the loop looks for its inline call (if it is one) at its next turn, and
    /// hangs it up.
    look: AtomicBool,
    /// Calls the loop moved to tasks ([`Uac::calls_as_tasks`]).
    to_tasks: AtomicU64,
    /// The loop's waits so far ([`Uac::sip_loop_waits`]).
    waits: AtomicU64,
    /// The reports' wake-ups of the callers: one per loop turn (`relay.rs`).
    relay: crate::relay::Relay,
}

impl crate::relay::HasRelay for Jobs {
    fn relay(&self) -> &crate::relay::Relay {
        &self.relay
    }
}

/// Tells the loop when the `Uac::call` future holding it is dropped before its report.
struct CallerGone<'a>(Option<&'a Jobs>);

impl Drop for CallerGone<'_> {
    fn drop(&mut self) {
        if let Some(jobs) = self.0 {
            jobs.look.store(true, Ordering::SeqCst);
            jobs.wake.notify_one();
        }
    }
}

/// Where a call's report goes: the report, the call's error, or its panic (resumed in the
/// caller, as a task's panic is by its `JoinHandle`).
type ReportTx = oneshot::Sender<std::thread::Result<Result<CallReport, Error>>>;

/// The caller's opt-out hook ([`Uac::call`]).
type OptOutHook = Box<dyn FnOnce(char, DtmfMethod) -> OptOutFuture + Send>;

/// A call for a loop to place ([`Uac::call`]).
struct NewCall {
    ctx: CallContext,
    invite: Box<Invite>,
    script: ScriptConfig,
    symmetric_rtp: bool,
    min_session_expires: Duration,
    req: CallRequest,
    on_opt_out: OptOutHook,
    caller: Option<tokio::runtime::Handle>,
    done: ReportTx,
    counted: OnLoop,
    /// Counted among its loop's held calls until it is placed ([`Shard::pick`]).
    held: Option<OnLoop>,
    /// When to place it ([`Uac::call_at`]); at once if `None`.
    at: Option<Instant>,
}

/// A call's future with its panic caught, to be resumed in the caller (as a task's panic is
/// by its `JoinHandle`).
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let f = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

/// What a call needs of its [`Uac`]'s loop.
struct CallContext {
    sip: SipLoop,
    ports: Arc<RtpPorts>,
    pacer: Arc<Pacer>,
    /// The loop's SIP address (its IP is the RTP pair's).
    local: SocketAddr,
}

/// How a call's script reaches its SIP loop: from inside the loop (inline: the endpoint at
/// hand, no channel), or from the call's task (the loop's command channel).
enum Sig<'a> {
    Loop(&'a SipLoop),
    Ep {
        ep: &'a mut Endpoint,
        calls: &'a mut Calls,
        now: Instant,
    },
}

impl Sig<'_> {
    fn send(&mut self, c: Command) {
        match self {
            Sig::Loop(sip) => {
                if !sip.send(c) {
                    tracing::debug!("the SIP loop is gone");
                }
            }
            Sig::Ep { ep, calls, now } => {
                // The endpoint's own panic is told apart from the script's: it may have left
                // the endpoint half-updated, so it is fatal for the loop (`Inlines::step`).
                let now = *now;
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    command(ep, calls, c, now);
                }));
                if let Err(p) = r {
                    std::panic::resume_unwind(Box::new(EndpointPanic(p)));
                }
            }
        }
    }
}

/// A panic raised in the endpoint while an inline call's script commanded it.
struct EndpointPanic(Box<dyn std::any::Any + Send>);

/// One call: its script, the report it writes, its RTP pair and media — the state both the
/// inline path (driven by the SIP loop: [`Inline`]) and the call's task ([`Call::run`]) drive,
/// through the same methods.
struct Call {
    ctx: CallContext,
    req: CallRequest,
    symmetric_rtp: bool,
    on_opt_out: Option<OptOutHook>,
    caller: Option<tokio::runtime::Handle>,
    pair: RtpPair,
    pacer_tx: mpsc::UnboundedSender<StreamEvent>,
    pacer_rx: mpsc::UnboundedReceiver<StreamEvent>,
    local_sdp: LocalSdp,
    leg: CallRef,
    t0: Instant,
    script: CallScript,
    report: CallReport,
    /// Boxed: the detector's state is 2.4 KB, and the call is moved whole a few times in its
    /// life (placed, boxed inline, ended) — a call without detection carries 8 bytes of it.
    detector: Option<Box<Detector>>,
    media: Option<Media>,
    opt_out_done: Option<tokio::task::JoinHandle<Result<(), OptOutError>>>,
    refresh: SessionRefresh,
    stopping: bool,
    bye_sent: bool,
    lead_in_packets: u32,
    voicemail: Option<Arc<Message>>,
    /// What came on the RTP pair before the answer has been dropped ([`Call::drop_early`]).
    early_dropped: bool,
    /// Our 2xx to the far end's offerless re-INVITE carried our offer: its answer comes in
    /// the ACK (RFC 3261 §13.2.1, §14.2; RFC 3264) and is applied then.
    answer_in_ack: bool,
    /// The call counted on its loop until it is dropped ([`Shard::pick`]).
    _counted: OnLoop,
}

/// Each prompt's audio in `codec`: message, confirmation, voicemail.
fn prompts_of(req: &CallRequest, voicemail: &Option<Arc<Message>>, codec: Codec) -> [Arc<[u8]>; 3] {
    [
        req.message.encoded_shared(codec),
        req.confirmation.encoded_shared(codec),
        voicemail
            .as_ref()
            .map_or_else(|| Arc::from(&[][..]), |v| v.encoded_shared(codec)),
    ]
}

impl Call {
    /// Places `job`'s call on `ep` at `now`: the call's RTP pair taken, its offer written,
    /// its INVITE sent. `Err` (with the caller's report channel) if it could not be placed.
    fn place(
        job: NewCall,
        ep: &mut Endpoint,
        now: Instant,
    ) -> Result<(Call, ReportTx), (Error, ReportTx)> {
        let NewCall {
            ctx,
            mut invite,
            script,
            symmetric_rtp,
            min_session_expires,
            req,
            on_opt_out,
            caller,
            done,
            counted,
            held: _,
            at: _,
        } = job;
        // RTP on an even port, RTCP on the next (RFC 3550 §11). The pacer sends on the RTP
        // socket and the call receives on both. They are registered with the reactor for
        // reading only: with write interest, every packet the pacer sends would wake the
        // reactor (each freed send buffer is an edge-triggered EPOLLOUT) — measured at a
        // third of the process's CPU in S2 (docs/media.md).
        let pair = match ctx.ports.take(ctx.local.ip(), now) {
            Ok(p) => p,
            Err(e) => return Err((e, done)),
        };
        let mut local_sdp = LocalSdp::new(pair.local, rand::random::<u32>().into());
        invite.body = local_sdp.offer().into_bytes();
        let destination = invite.destination;
        let call_id = invite.call_id.clone();
        let leg = match ep.invite(now, *invite) {
            Ok(leg) => leg,
            Err(source) => {
                ctx.ports.give_back(pair, now);
                let e = Error::Sip {
                    what: "sending the INVITE",
                    source,
                };
                return Err((e, done));
            }
        };
        let (pacer_tx, pacer_rx) = mpsc::unbounded_channel();
        let report = first_report(
            call_id,
            format!("INVITE sent to {destination}"),
            Some(pair.local),
            &req,
        );
        let lead_in_packets = req.lead_in.as_micros().div_ceil(rtp::PTIME.as_micros()) as u32;
        let voicemail = req.amd.as_ref().and_then(|a| a.voicemail.clone());
        let call = Call {
            ctx,
            symmetric_rtp,
            on_opt_out: Some(on_opt_out),
            caller,
            pair,
            pacer_tx,
            pacer_rx,
            local_sdp,
            leg,
            t0: now,
            script: CallScript::new(now, script),
            report,
            detector: None,
            media: None,
            opt_out_done: None,
            refresh: SessionRefresh::with_floor(min_session_expires),
            stopping: false,
            bye_sent: false,
            answer_in_ack: false,
            lead_in_packets,
            voicemail,
            early_dropped: false,
            _counted: counted,
            req,
        };
        Ok((call, done))
    }

    /// Drops what came on the RTP pair before the answer (early media: not the call's
    /// media; a task reads and drops it as it comes, an inline call does not read). Done
    /// before the first packet of ours can come back, and only once.
    fn drop_early(&mut self) {
        if !std::mem::replace(&mut self.early_dropped, true) {
            self.pair.drain();
        }
    }

    fn at(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.t0)
    }

    fn note(&mut self, t: Instant, what: String) {
        let at = self.at(t);
        self.report.timeline.push((at, what));
    }

    /// Whether the call must go on as a task: it waits on something the SIP loop does not
    /// drive — its media (RTP and RTCP to read, a prompt being paced, re-INVITEs and session
    /// refreshes), the opt-out's durable write, or the detector. (A stop token does not: the
    /// caller's future watches it and tells the loop, [`Inlines::sweep`].)
    fn needs_task(&self) -> bool {
        self.media.is_some() || self.opt_out_done.is_some() || self.detector.is_some()
    }

    /// Its stop token was cancelled and the call not yet told.
    fn stop_due(&self) -> bool {
        !self.stopping
            && self
                .req
                .stop
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
    }

    /// Performs what the script asked for.
    fn act(&mut self, sig: &mut Sig<'_>) {
        while let Some(action) = self.script.poll_action() {
            let now = Instant::now();
            match action {
                Action::Cancel => {
                    // crieur-sip holds a CANCEL asked for before any provisional response
                    // until one comes (RFC 3261 §9.1); the script asks for one then only on
                    // shutdown.
                    let what = if self.script.provisional_received() {
                        "CANCEL sent"
                    } else {
                        "CANCEL held until a provisional response (RFC 3261 §9.1)"
                    };
                    self.note(now, what.into());
                    sig.send(Command::Cancel(self.leg));
                }
                Action::Bye { reason } => {
                    self.note(
                        now,
                        match &reason {
                            Some(r) => format!("BYE sent (Reason: {r})"),
                            None => "BYE sent".into(),
                        },
                    );
                    // The BYE's transaction retransmits on its own (timer E/F) in the SIP
                    // loop, counted so that `Uac::wait_background` can let it finish; the call
                    // ends now, when the BYE left, not when (or whether) it is answered.
                    let headers = reason
                        .map(|r| vec![("Reason".to_owned(), r.to_string())])
                        .unwrap_or_default();
                    sig.send(Command::Bye(self.leg, headers));
                    self.bye_sent = true;
                    self.script.handle_bye_sent(now);
                }
                Action::Note(note) => self.note(now, note.into()),
                Action::Play(p) => self.play(p, now),
                Action::StopPlayback => {
                    if let Some(m) = self.media.as_ref() {
                        m.stream().stop();
                    }
                    if let Some(d) = self.detector.as_mut() {
                        d.stop_reference(now);
                    }
                }
                Action::RecordOptOut { digit, method } => {
                    self.note(
                        now,
                        format!("opt-out key {digit} ({}): recording", method.as_str()),
                    );
                    if let Some(hook) = self.on_opt_out.take() {
                        // On the caller's runtime: a durable write is its business, not the
                        // loop thread's.
                        let hook = hook(digit, method);
                        self.opt_out_done = Some(match &self.caller {
                            Some(rt) => rt.spawn(hook),
                            None => tokio::spawn(hook),
                        });
                    }
                }
                Action::KeyPressed { digit, method } => {
                    self.note(now, format!("key {digit} ({})", method.as_str()));
                }
                Action::Finished(e) => {
                    // One string of its size (`concat`, not `format!`: a note per call).
                    let what = ["ended: ", e.outcome.as_str(), " (", &e.reason, ")"].concat();
                    self.note(now, what);
                    self.report.ending = e;
                }
            }
        }
    }

    fn play(&mut self, p: Prompt, now: Instant) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        let codec = m.codec();
        let [message, confirmation, voicemail_audio] =
            prompts_of(&self.req, &self.voicemail, codec);
        let (audio, starts) = match p {
            Prompt::Message => (message, now + rtp::PTIME * self.lead_in_packets),
            Prompt::Confirmation => (confirmation, now),
            Prompt::Voicemail => (voicemail_audio, now),
        };
        // What we play is the detector's echo reference (prepared once per message and law,
        // shared by the campaign's calls).
        if let Some(d) = self.detector.as_mut() {
            let reference = match p {
                Prompt::Message => self.req.message.echo_reference(codec),
                Prompt::Confirmation => self.req.confirmation.echo_reference(codec),
                Prompt::Voicemail => self.voicemail.as_ref().map_or_else(
                    || Arc::new(EchoReference::new(&[])),
                    |v| v.echo_reference(codec),
                ),
            };
            d.set_shared_reference(starts, reference);
        }
        match p {
            Prompt::Message => m.stream().play_after(audio, p, now, self.lead_in_packets),
            _ => m.stream().play(audio, p, now),
        }
        self.note(now, format!("playing {p:?}"));
    }

    /// The call's deadlines, in the order they are served when due together (one per turn):
    /// the script's, the detector's, the session's expiry, our refresh, RTCP.
    fn deadlines(&self) -> [Option<Instant>; 5] {
        let live = self.media.is_some() && !self.stopping;
        [
            self.script.poll_timeout(),
            self.detector
                .as_deref()
                .and_then(Detector::poll_timeout)
                .filter(|_| !self.stopping),
            self.refresh.expires.filter(|_| live).map(Into::into),
            self.refresh.due.filter(|_| live).map(Into::into),
            self.media.as_ref().map(Media::rtcp_due),
        ]
    }

    /// The earliest of [`Call::deadlines`].
    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines().into_iter().flatten().min()
    }

    /// The first of the call's deadlines due at `now`, served.
    fn on_timer(&mut self, now: Instant) {
        let [script, amd, session_end, refresh, rtcp] = self.deadlines();
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(script) {
            self.script.handle_timeout(now);
        } else if due(amd) {
            if let Some(d) = self.detector.as_mut() {
                d.handle_timeout(now);
                amd_events(d, &mut self.script, &mut self.report, now, self.t0);
            }
        } else if due(session_end) {
            self.refresh.expires = None;
            self.refresh.due = None;
            if self.refresh.interval.is_some() {
                self.note(
                    now,
                    "session expired: no refresh of ours answered 2xx (RFC 4028 §10)".into(),
                );
                self.script
                    .handle_dialog_gone(now, "the session expired: our refreshes failed");
            } else {
                self.note(
                    now,
                    "session expiring without the far end's refresh (RFC 4028 §10)".into(),
                );
                self.script
                    .handle_dialog_gone(now, "the session expired: no refresh from the far end");
            }
        } else if due(refresh) {
            self.refresh.due = None;
            let what = self
                .refresh
                .send(self.leg, &mut self.local_sdp, &self.ctx.sip);
            self.note(now, what);
        } else if due(rtcp) {
            if let Some(m) = self.media.as_mut() {
                let socks = (&*self.pair.rtp, &*self.pair.rtcp);
                m.send_rtcp(now, wall_ntp(), rand::random(), socks, false);
            }
        }
    }

    /// The call's stop token was cancelled, or its caller is gone (`why`): the script ends
    /// it (BYE if established, CANCEL if ringing).
    fn on_stop(&mut self, now: Instant, why: &str) {
        self.stopping = true;
        self.note(now, why.into());
        self.script.handle_shutdown(now);
    }

    /// What the pacer says of the call's stream.
    fn on_pacer(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::FirstPacket(p, when)
                if p == Prompt::Message && self.report.first_audio_at.is_none() =>
            {
                self.report.first_audio_at = Some(self.at(when));
                self.script.handle_first_audio(when);
                self.note(when, "first audio packet sent".into());
            }
            StreamEvent::FirstPacket(Prompt::Voicemail, when) => {
                let at = self.at(when);
                if let Some(a) = self.report.amd.as_mut() {
                    // The last start: a later beep restarts the message.
                    a.voicemail_started_at = Some(at);
                }
                self.note(when, "first voicemail packet sent".into());
            }
            StreamEvent::FirstPacket(..) => {}
            StreamEvent::Done(p, when) => {
                self.note(when, format!("{p:?} played"));
                self.script.handle_prompt_done(Instant::now(), p);
            }
        }
    }

    /// One of the call's SIP events.
    fn on_sip(&mut self, ev: SipEvent, now: Instant, sig: &mut Sig<'_>) {
        match ev {
            SipEvent::Provisional { response: resp, .. } => {
                // A script that panics, for the test of what a panic leaves behind (no
                // public way makes the inline path's own code panic).
                #[cfg(test)]
                if self.req.number == tests::PANICS_AT_RINGING {
                    panic!("a script's panic, at its ringing");
                }
                let code = resp.status.code();
                if (180..=199).contains(&code) && self.report.first_18x.is_none() {
                    self.report.first_18x = Some((code, self.at(now)));
                }
                self.note(now, status_note(code, &resp.reason));
                self.script.handle_provisional(now);
            }
            SipEvent::Answered {
                response: resp,
                credentials_sent,
                ..
            } => self.on_answered(&resp, credentials_sent, now),
            SipEvent::Rejected {
                response: resp,
                credentials_sent,
                ..
            } => {
                let code = resp.status.code();
                self.report.credentials_sent = credentials_sent;
                self.note(now, status_note(code, &resp.reason));
                self.report.final_response = Some((code, self.at(now)));
                if code == 403 && credentials_sent {
                    // RFC 3261 §22.2, §22.3: a 403 to the credentialed request is the trunk
                    // refusing our credentials, not the callee.
                    self.script.handle_auth_refused(now, code, &reason(&resp));
                } else if (300..400).contains(&code) {
                    // §8.1.3.4: a UAC MAY recurse on a 3xx; a dialer does not. The targets
                    // are numbers and hosts no one screened (opt-out, calling hours, cost)
                    // — the campaign calls the number it was given, through its trunk,
                    // which routes on its own. The call ends `rejected` with the code, its
                    // reason naming where it was redirected.
                    let to = redirect_targets(&resp);
                    let why = format!("{}; redirected to {to}: not followed", reason(&resp));
                    self.note(now, why.clone());
                    self.script.handle_rejected(now, code, &why);
                } else {
                    self.script.handle_rejected(now, code, &reason(&resp));
                }
            }
            SipEvent::InviteFailed { timeout: true, .. } => {
                self.note(now, "timer B: no final response to the INVITE".into());
                self.script.handle_timer_b(now);
            }
            SipEvent::InviteFailed { timeout: false, .. } => {
                self.script
                    .handle_transport_error(now, "the INVITE could not be sent");
            }
            SipEvent::AckFailed { .. } if self.report.answered_at.is_some() => {
                // A 2xx to our re-INVITE: the endpoint ended the answered call.
                self.script.handle_dialog_gone(
                    now,
                    "a re-INVITE's 2xx could not be ACKed (a header value it set would break the ACK): call ended",
                );
            }
            SipEvent::AckFailed { response: resp, .. } => {
                // The endpoint ended the call (BYE if it could be sent): a failure, not an
                // answer.
                self.report.final_response = Some((resp.status.code(), self.at(now)));
                self.script.handle_transport_error(
                    now,
                    "the 2xx could not be ACKed (a header value it set would break the ACK) or is in a dialog already ended: call ended",
                );
            }
            SipEvent::Info { request, .. } => match info_key(&request) {
                Some(d) => {
                    self.report
                        .keys
                        .push((d, DtmfMethod::SipInfo, self.at(now)));
                    self.script.handle_key(now, d, DtmfMethod::SipInfo);
                }
                None => tracing::debug!("INFO without a key"),
            },
            SipEvent::Request {
                server,
                request: offer_req,
                ..
            } => {
                let (t0, report) = (self.t0, &mut self.report);
                let (req, voicemail) = (&self.req, &self.voicemail);
                let (code, headers, body) = answer_offer(
                    &offer_req,
                    self.media.as_mut(),
                    &mut self.local_sdp,
                    now,
                    &|codec| prompts_of(req, voicemail, codec),
                    &mut |what| {
                        report
                            .timeline
                            .push((now.saturating_duration_since(t0), what))
                    },
                );
                self.refresh.on_remote_refresh(&offer_req, code, now);
                // An offerless re-INVITE answered with our offer: the answer is the ACK's.
                self.answer_in_ack = offer_req.method == Method::Invite
                    && body::sdp(&offer_req.headers, offer_req.body()).is_none()
                    && (200..300).contains(&code)
                    && body.is_some();
                sig.send(Command::Respond {
                    server,
                    code,
                    headers,
                    body,
                });
            }
            SipEvent::Acked { request, .. } if self.answer_in_ack => {
                self.answer_in_ack = false;
                self.on_answer_in_ack(&request, now);
            }
            SipEvent::NoAck { .. } => {
                // RFC 3261 §13.3.1.4: our 2xx to the far end's re-INVITE never ACKed (64·T1):
                // the session is ended with a BYE (the script's end hangs the leg up).
                self.answer_in_ack = false;
                self.note(now, "our 2xx to the re-INVITE was never ACKed: BYE".into());
                self.script.handle_dialog_gone(
                    now,
                    "our 2xx to the far end's re-INVITE was never ACKed (RFC 3261 §13.3.1.4)",
                );
            }
            SipEvent::Done { outcome, .. } => {
                let (req, voicemail) = (&self.req, &self.voicemail);
                let what = self
                    .refresh
                    .handled(outcome, now, self.media.as_mut(), &|codec| {
                        prompts_of(req, voicemail, codec)
                    });
                self.note(now, what.text);
                if what.session_gone {
                    self.script
                        .handle_dialog_gone(now, "the session refresh failed (RFC 4028 §10)");
                }
            }
            SipEvent::Bye { .. } => {
                self.note(now, "BYE received".into());
                self.script.handle_remote_bye(now);
            }
            _ => {}
        }
    }

    /// The ACK of our 2xx that carried our offer (to an offerless re-INVITE): its SDP is
    /// the answer (RFC 3264 §5–6), applied to the media — a new address, codec or direction.
    /// Without one, or one we cannot read, the media stay as they were.
    fn on_answer_in_ack(&mut self, ack: &Request, now: Instant) {
        let Some(sdp_body) = body::sdp(&ack.headers, ack.body()) else {
            self.note(
                now,
                "ACK without the answer to our offer (RFC 3261 §13.2.1): media unchanged".into(),
            );
            return;
        };
        let answer = match sdp::parse_answer(sdp_body) {
            Ok(a) => a,
            Err(e) => {
                self.note(
                    now,
                    format!("the ACK's answer unreadable ({e}): media unchanged"),
                );
                return;
            }
        };
        let Some(media) = self.media.as_mut() else {
            return;
        };
        let (req, voicemail) = (&self.req, &self.voicemail);
        let changes = media.apply(&answer, now, |codec| prompts_of(req, voicemail, codec));
        let what = format!(
            "answer in the ACK ({}){}",
            answer.direction.as_str(),
            describe_changes(&changes)
        );
        self.note(now, what);
    }

    /// The 2xx to our INVITE: the media set up from its answer (or refused).
    fn on_answered(&mut self, resp: &Response, credentials_sent: bool, now: Instant) {
        let code = resp.status.code();
        self.report.credentials_sent = credentials_sent;
        self.note(now, status_note(code, &resp.reason));
        self.report.final_response = Some((code, self.at(now)));
        if self.script.cancel_sent() {
            // A 200 that crossed our CANCEL: the script ends at it (the SIP stack ACKs and
            // BYEs it). No stream opened, no RTP pair drained, no RTCP BYE.
            self.script.handle_answered(now, true);
            return;
        }
        // The SDP alone or a multipart body's SDP part (RFC 5621); none: a parse error.
        match sdp::parse_answer(body::sdp(&resp.headers, resp.body()).unwrap_or_default()) {
            Ok(answer) if !answer.direction.receives() => {
                // RFC 3264 §6.1: a sendonly/inactive answer will not receive our audio.
                // Nothing is played.
                self.report.codec = Some(answer.codec);
                let why = format!(
                    "the answer is a={}: the callee will not receive audio",
                    answer.direction.as_str()
                );
                self.note(now, why.clone());
                self.script.handle_media_refused(now, &why);
            }
            Ok(answer) => {
                self.report.codec = Some(answer.codec);
                // Packets leave at once (lead-in or message): before, not after, the first
                // could be echoed back. With nothing to send, only if the call goes on as a
                // task (a short call's script ends here: no system call for it).
                if self.lead_in_packets > 0 || !self.req.message.is_empty() {
                    self.drop_early();
                }
                let ssrc = rand::random();
                let packetizer = Packetizer::new(
                    answer.codec.payload_type(),
                    ssrc,
                    rand::random(),
                    rand::random(),
                    now,
                );
                let stream = self.ctx.pacer.open(
                    self.pair.rtp.clone(),
                    answer.remote,
                    packetizer,
                    self.pacer_tx.clone(),
                );
                self.media = Some(Media::new(
                    &answer,
                    stream,
                    ssrc,
                    format!("crieur-{ssrc:08x}@{}", self.pair.local.ip()),
                    self.symmetric_rtp,
                    now,
                    rand::random(),
                ));
                if answer.rtcp_mux {
                    self.note(now, "rtcp-mux".into());
                }
                self.refresh = SessionRefresh::from_answer(resp, now, self.refresh.floor);
                self.report.answered_at = Some(self.at(now));
                self.script.handle_answered(now, true);
                // The detector listens from the answer, while the message plays.
                self.detector = self
                    .req
                    .amd
                    .as_ref()
                    .filter(|a| a.mode != AmdMode::Off)
                    .map(|a| Box::new(Detector::new(now, a.params)));
            }
            Err(e) => {
                self.note(now, format!("answer refused: {e}"));
                self.script.handle_answered(now, false);
            }
        }
    }

    /// An RTP datagram on the call's RTP socket.
    fn on_rtp(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(m) = self.media.as_mut() else {
            return;
        };
        let keep = self.req.keep_received_audio && self.report.rtp_received.len() < 100_000;
        let heard = m.on_rtp(now, from, data, wall_ntp(), keep);
        for (d, method) in heard.keys {
            self.report
                .keys
                .push((d, method, now.saturating_duration_since(self.t0)));
            self.script.handle_key(now, d, method);
        }
        self.report.rtp_received.extend(heard.audio);
        if let (Some(d), Some(h)) = (
            self.detector.as_mut().filter(|d| !d.is_done()),
            heard.decoded,
        ) {
            // Placed by its timestamp: a lost packet is silence of its length, not spliced.
            d.feed_packet(now, h.ssrc, h.timestamp, m.last_audio());
            amd_events(d, &mut self.script, &mut self.report, now, self.t0);
        }
    }

    /// The opt-out hook's future finished.
    fn on_opt_out_done(
        &mut self,
        r: Result<Result<(), OptOutError>, tokio::task::JoinError>,
        now: Instant,
    ) {
        self.opt_out_done = None;
        let why = match r {
            Ok(Ok(())) => {
                self.report.opt_out_recorded = true;
                self.note(now, "opt-out recorded durably".into());
                self.script.handle_opt_out_durable(now);
                return;
            }
            Ok(Err(e)) => {
                // With its sources: the reason the operator reads.
                let mut why = e.to_string();
                let mut source = e.source();
                while let Some(c) = source {
                    why.push_str(&format!(": {c}"));
                    source = c.source();
                }
                why
            }
            Err(join) => join.to_string(),
        };
        self.note(now, format!("opt-out NOT recorded: {why}"));
        tracing::error!(%why, "opt-out could not be recorded");
        self.script
            .handle_opt_out_failed(now, &format!("opt-out not recorded: {why}"));
    }

    /// The call as a task: from where the SIP loop left it (at its INVITE, or where it first
    /// had to wait on more than SIP and timers) to its end. Its SIP events come on `sip_rx`.
    /// Its caller gone (`done` closed: the `Uac::call` future dropped) is a stop, as its stop
    /// token's: the call goes on to its end, hung up by its script.
    async fn run(
        mut self,
        mut sip_rx: mpsc::UnboundedReceiver<SipEvent>,
        done: &mut ReportTx,
    ) -> CallReport {
        let sip = self.ctx.sip.clone();
        let mut buf = vec![0u8; 2048];
        let mut rtcp_buf = vec![0u8; 1500];
        // One timer for the call, set to the earliest of its deadlines at each turn: not one
        // registered per deadline and per wake-up.
        let mut timer = std::pin::pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
        loop {
            self.act(&mut Sig::Loop(&sip));
            if self.script.is_over() {
                break;
            }
            let next = self.next_deadline().map(tokio::time::Instant::from_std);
            if let Some(next) = next {
                if timer.deadline() != next {
                    timer.as_mut().reset(next);
                }
            }
            tokio::select! {
                _ = &mut timer, if next.is_some() => self.on_timer(Instant::now()),
                () = stopped(&self.req.stop), if !self.stopping => {
                    self.on_stop(Instant::now(), "shutdown requested");
                }
                () = done.closed(), if !self.stopping => self.on_stop(Instant::now(), "caller gone"),
                // The sender lives in the media's stream registration: never closed here.
                Some(ev) = self.pacer_rx.recv() => self.on_pacer(ev),
                ev = sip_rx.recv() => match ev {
                    Some(ev) => self.on_sip(ev, Instant::now(), &mut Sig::Loop(&sip)),
                    None => self.script.handle_transport_error(Instant::now(), "SIP stack stopped"),
                },
                r = recv_rtp(&self.pair.rtcp_fd, &mut rtcp_buf) => {
                    if let (Ok((n, from)), Some(m)) = (r, self.media.as_mut()) {
                        m.on_rtcp(Instant::now(), from, rtcp_buf.get(..n).unwrap_or_default(), wall_ntp(), false);
                    }
                }
                r = recv_rtp(&self.pair.rtp_fd, &mut buf) => {
                    if let Ok((n, from)) = r {
                        self.on_rtp(Instant::now(), from, buf.get(..n).unwrap_or_default());
                    }
                }
                r = joined(&mut self.opt_out_done) => self.on_opt_out_done(r, Instant::now()),
            }
        }
        self.end(&mut Sig::Loop(&sip))
    }

    /// The call's end: its report completed, its leg ended (BYE or CANCEL if still up; BYE
    /// and CANCEL in flight finish in the SIP loop), its RTP pair back in the pool.
    fn end(mut self, sig: &mut Sig<'_>) -> CallReport {
        self.report.answer_to_first_audio = self.script.answer_to_first_audio();
        if let Some(mut m) = self.media.take() {
            // RTCP BYE (RFC 3550 §6.6): the last report, with BYE.
            let socks = (&*self.pair.rtp, &*self.pair.rtcp);
            m.send_rtcp(Instant::now(), wall_ntp(), 0.5, socks, true);
            let c = m.stream().counters();
            // The lead-in's silence is sent as the message's first packets.
            let message = c.sent(Prompt::Message);
            let report = &mut self.report;
            report.message_packets = u64::from(message.saturating_sub(self.lead_in_packets));
            report.rtp_sent = u64::from(message)
                + u64::from(c.sent(Prompt::Confirmation))
                + u64::from(c.sent(Prompt::Voicemail));
            if let Some(a) = report.amd.as_mut() {
                a.voicemail_packets = u64::from(c.sent(Prompt::Voicemail));
            }
            report.send_lateness_max_us = c.max_lateness_us();
            report.rtp_send_errors = c.send_errors();
            report.rtcp = m.rtcp.clone();
            // Dropping the stream closes it in the pacer.
        }
        if !self.bye_sent && !matches!(self.report.ending.hangup_by, HangupBy::Callee) {
            sig.send(Command::HangUp(self.leg));
        }
        sig.send(Command::Forget(self.leg));
        self.ctx.ports.give_back(self.pair, Instant::now());
        self.report
    }

    /// A call whose own code panicked (its script's state not to be trusted): its leg hung
    /// up whatever the script did (the endpoint sends nothing twice: CANCEL if ringing, BYE
    /// if established and not yet ended), forgotten by the loop, its RTP pair given back.
    fn abandon(self, sig: &mut Sig<'_>) {
        sig.send(Command::HangUp(self.leg));
        sig.send(Command::Forget(self.leg));
        self.ctx.ports.give_back(self.pair, Instant::now());
    }
}

/// Returns when `stop` is cancelled (never without one).
async fn stopped(stop: &Option<CancellationToken>) {
    match stop {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// The opt-out hook's result, when there is one running (never without).
async fn joined(
    j: &mut Option<tokio::task::JoinHandle<Result<(), OptOutError>>>,
) -> Result<Result<(), OptOutError>, tokio::task::JoinError> {
    match j {
        Some(j) => j.await,
        None => std::future::pending().await,
    }
}

/// A call run inline by its SIP loop: its state, where its report goes, and the deadline the
/// loop's timer holds for it.
struct Inline {
    call: Call,
    done: ReportTx,
    armed: Option<Instant>,
}

/// Where the SIP loop sends a call's events: to its script inline, or to its task.
enum Route {
    Inline(Box<Inline>),
    Task(mpsc::UnboundedSender<SipEvent>),
}

/// The SIP loop's calls, by leg.
type Calls = HashMap<CallRef, Route>;

/// The SIP loop's side of its inline calls, and what it publishes of its endpoint.
struct Inlines {
    /// The inline calls' deadlines, earliest first: one entry per call, taken off when the
    /// call moves it, ends or goes to a task (a stale one would wake the loop for nothing).
    timers: std::collections::BTreeSet<(Instant, CallRef)>,
    /// BYE and CANCEL transactions running, and asked for ([`SipLoop::background`]).
    background: Arc<AtomicUsize>,
    /// What the loop last published as the endpoint's own count.
    published: usize,
    /// The loop's inbox and its counters (none for a loop that takes no calls).
    jobs: Option<Arc<Jobs>>,
    /// Calls handed ahead ([`Uac::call_at`]), by start, then by arrival: placed at the
    /// loop's first turn at or after their start, the earliest start on the loop's timer.
    ahead: std::collections::BTreeMap<(Instant, u64), Job>,
    /// Calls handed ahead so far (the tie-break of equal starts).
    ahead_seq: u64,
    /// When the loop last took a call to place at once ([`Uac::call`], or a start already
    /// past): while they keep coming ([`CALLS_COMING`]) the loop ticks.
    last_at_once: Option<Instant>,
}

impl Inlines {
    /// A call handed to the loop: placed now, or held until its start.
    fn take(&mut self, job: Job, ep: &mut Endpoint, calls: &mut Calls, now: Instant) {
        match job.at {
            // A call whose caller went or whose token was cancelled between its push and
            // this turn's sweep is not held until its start: it ends now, not placed.
            Some(at) if at > now && !Self::stopped(&job) => {
                self.ahead_seq += 1;
                self.ahead.insert((at, self.ahead_seq), job);
            }
            _ => {
                self.last_at_once = Some(now);
                self.begin(job, ep, calls);
            }
        }
    }

    /// Calls placed at once keep coming: the last within [`CALLS_COMING`].
    fn coming(&self, now: Instant) -> bool {
        self.last_at_once
            .is_some_and(|t| now.saturating_duration_since(t) <= CALLS_COMING)
    }

    /// A call handed ahead whose caller is gone or whose stop token was cancelled.
    fn stopped(j: &Job) -> bool {
        j.done.is_closed()
            || j.req
                .stop
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
    }

    /// The earliest start of a call handed ahead.
    fn next_start(&self) -> Option<Instant> {
        self.ahead.first_key_value().map(|(&(t, _), _)| t)
    }

    /// Places the calls handed ahead whose start has come.
    fn start_due(&mut self, ep: &mut Endpoint, calls: &mut Calls, now: Instant) {
        while let Some(entry) = self.ahead.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            self.begin(job, ep, calls);
        }
    }

    /// The calls handed ahead whose callers are gone are dropped (nothing placed), and those
    /// whose stop tokens were cancelled end at once, not placed ([`Inlines::begin`]).
    fn sweep_ahead(&mut self, ep: &mut Endpoint, calls: &mut Calls) {
        let due: Vec<(Instant, u64)> = self
            .ahead
            .iter()
            .filter(|(_, j)| Self::stopped(j))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(job) = self.ahead.remove(&k) {
                self.begin(job, ep, calls);
            }
        }
    }

    /// Places a call handed to the loop, inline from its INVITE (stopped at once if its stop
    /// token already was cancelled).
    fn begin(&mut self, mut job: Job, ep: &mut Endpoint, calls: &mut Calls) {
        // No longer held: placed now, or ended.
        job.held = None;
        // A call whose caller is already gone is not begun (no RTP pair taken, no INVITE).
        if job.done.is_closed() {
            return;
        }
        // Nor one stopped before its INVITE leaves (hang-up-all, an opt-out, a shutdown):
        // nothing is placed — no phone rings to be cancelled — and it ends at once
        // `local-shutdown`, as a stop before dialling does.
        if job
            .req
            .stop
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            let NewCall {
                invite, req, done, ..
            } = *job;
            let mut r = first_report(
                invite.call_id,
                "shutdown requested before the INVITE: not placed".into(),
                None,
                &req,
            );
            r.ending.reason = "shutdown before the INVITE".into();
            let _ = done.send(Ok(Ok(r)));
            return;
        }
        let now = Instant::now();
        match Call::place(*job, ep, now) {
            Ok((call, done)) => {
                let c = Box::new(Inline {
                    call,
                    done,
                    armed: None,
                });
                self.step(c, ep, calls, now, |call, _| {
                    if call.stop_due() {
                        call.on_stop(now, "shutdown requested");
                    }
                });
            }
            Err((e, done)) => {
                let _ = done.send(Ok(Err(e)));
            }
        }
    }

    /// A SIP event for an inline call.
    fn event(&mut self, c: Box<Inline>, ev: SipEvent, ep: &mut Endpoint, calls: &mut Calls) {
        let now = Instant::now();
        self.step(c, ep, calls, now, |call, sig| call.on_sip(ev, now, sig));
    }

    /// Serves the inline calls' deadlines due at `now`.
    fn fire(&mut self, ep: &mut Endpoint, calls: &mut Calls, now: Instant) {
        while let Some(&(t, leg)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            if !matches!(calls.get(&leg), Some(Route::Inline(c)) if c.armed == Some(t)) {
                continue;
            }
            if let Some(Route::Inline(mut c)) = calls.remove(&leg) {
                c.armed = None;
                self.step(c, ep, calls, now, |call, _| call.on_timer(now));
            }
        }
    }

    /// Ends the inline calls whose callers are gone (their `Uac::call` futures dropped) or
    /// whose stop tokens were cancelled, at once rather than at their next event or timer:
    /// a ringing call is cancelled (once a provisional response came), an established one
    /// hung up. (A task sees both by itself: `Call::run`.)
    fn sweep(&mut self, ep: &mut Endpoint, calls: &mut Calls) {
        let due: Vec<CallRef> = calls
            .iter()
            .filter(
                |(_, r)| matches!(r, Route::Inline(c) if c.done.is_closed() || c.call.stop_due()),
            )
            .map(|(leg, _)| *leg)
            .collect();
        let now = Instant::now();
        for leg in due {
            if let Some(Route::Inline(c)) = calls.remove(&leg) {
                self.step(c, ep, calls, now, |call, _| {
                    if call.stop_due() {
                        call.on_stop(now, "shutdown requested");
                    }
                });
            }
        }
    }

    /// The earliest inline deadline, or start of a call handed ahead.
    fn next(&self) -> Option<Instant> {
        let ahead = self.next_start();
        [self.timers.first().map(|&(t, _)| t), ahead]
            .into_iter()
            .flatten()
            .min()
    }

    /// Feeds `input` to an inline call, performs what its script then asks for (and what the
    /// pacer says at once: an empty prompt is done as soon as it starts), and settles it:
    /// ended (its report sent), moved to a task, or back in `calls` with its deadline armed.
    /// A panic in the call's own code hangs its leg up (CANCEL or BYE), takes it and its
    /// deadline off the loop, gives its RTP pair back, and is resumed in its caller, as a
    /// task's is. A panic in the endpoint (through `Sig::send`) may have left the endpoint
    /// half-updated: it is resumed here, ending the loop thread (its calls' callers then get
    /// `Error::SipStopped`).
    fn step(
        &mut self,
        mut c: Box<Inline>,
        ep: &mut Endpoint,
        calls: &mut Calls,
        now: Instant,
        input: impl FnOnce(&mut Call, &mut Sig<'_>),
    ) {
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let call = &mut c.call;
            let mut sig = Sig::Ep { ep, calls, now };
            input(call, &mut sig);
            loop {
                call.act(&mut sig);
                match call.pacer_rx.try_recv() {
                    Ok(ev) => call.on_pacer(ev),
                    Err(_) => break,
                }
            }
            if call.script.is_over() || c.done.is_closed() {
                return true;
            }
            false
        }));
        let over = match stepped {
            Ok(over) => over,
            Err(panic) => {
                let panic = match panic.downcast::<EndpointPanic>() {
                    Ok(p) => std::panic::resume_unwind(p.0),
                    Err(p) => p,
                };
                self.disarm(&c);
                let Inline { call, done, .. } = *c;
                call.abandon(&mut Sig::Ep { ep, calls, now });
                self.publish(ep);
                let _ = done.send(Err(panic));
                return;
            }
        };
        if over {
            // Ended, or its caller gone (then hung up, its report dropped).
            self.disarm(&c);
            let Inline { call, done, .. } = *c;
            let report = call.end(&mut Sig::Ep { ep, calls, now });
            // The BYE or CANCEL it left counted before its caller hears of its end (which
            // may wait for them: `Uac::wait_background`).
            self.publish(ep);
            let _ = done.send(Ok(Ok(report)));
            return;
        }
        if c.call.needs_task() {
            self.disarm(&c);
            let Inline { mut call, done, .. } = *c;
            if call.media.is_some() {
                call.drop_early();
            }
            let (tx, rx) = mpsc::unbounded_channel();
            calls.insert(call.leg, Route::Task(tx));
            if let Some(j) = &self.jobs {
                j.to_tasks.fetch_add(1, Ordering::Relaxed);
            }
            tokio::spawn(async move {
                let mut done = done;
                // The caller gone (its future dropped), the call is hung up and runs to its end.
                let r = CatchUnwind(Box::pin(call.run(rx, &mut done))).await;
                let _ = done.send(r.map(Ok));
            });
            return;
        }
        let next = c.call.next_deadline();
        if next != c.armed {
            self.disarm(&c);
            if let Some(t) = next {
                self.timers.insert((t, c.call.leg));
            }
            c.armed = next;
        }
        calls.insert(c.call.leg, Route::Inline(c));
    }

    /// Takes an inline call's deadline off the loop's timer.
    fn disarm(&mut self, c: &Inline) {
        if let Some(t) = c.armed {
            self.timers.remove(&(t, c.call.leg));
        }
    }

    /// Publishes the endpoint's BYE and CANCEL transactions in `background` (with the
    /// commands queued that will make one, added by [`SipLoop::send`]).
    fn publish(&mut self, ep: &Endpoint) {
        let now_bg = ep.background();
        if now_bg >= self.published {
            self.background
                .fetch_add(now_bg - self.published, Ordering::SeqCst);
        } else {
            self.background
                .fetch_sub(self.published - now_bg, Ordering::SeqCst);
        }
        self.published = now_bg;
    }
}

/// A call's RTP socket (even port) and RTCP socket (the next one), registered with the loop
/// thread's reactor for reading only.
struct RtpPair {
    rtp: Arc<std::net::UdpSocket>,
    rtcp: Arc<std::net::UdpSocket>,
    rtp_fd: AsyncFd<Arc<std::net::UdpSocket>>,
    rtcp_fd: AsyncFd<Arc<std::net::UdpSocket>>,
    local: SocketAddr,
}

impl RtpPair {
    /// Reads and drops what is waiting on both sockets (they are non-blocking).
    fn drain(&self) {
        let mut buf = [0u8; 1500];
        for s in [&self.rtp, &self.rtcp] {
            while s.recv_from(&mut buf).is_ok() {}
        }
    }

    /// Reads and drops what the previous call's far end sent after it ended — only on a
    /// socket the loop's reactor has seen readable since it was last read dry: a pair that
    /// got nothing (most: S1's calls send and get no RTP) costs no system call, where reading
    /// each socket until it would block cost two empty `recvfrom` per call. A packet that
    /// arrives after the reactor last looked is left, as one arriving just after a drain
    /// always was: a call hears RTP only from its answer's address, and one with media
    /// drains its pair again before its first packet ([`Call::drop_early`]).
    fn drain_stale(&self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut buf = [0u8; 1500];
        for fd in [&self.rtp_fd, &self.rtcp_fd] {
            if let std::task::Poll::Ready(Ok(mut ready)) = fd.poll_read_ready(&mut cx) {
                // Until it would block (which clears the readiness) or fails.
                while let Ok(Ok(_)) = ready.try_io(|s| s.get_ref().recv_from(&mut buf)) {}
            }
        }
    }

    fn bind(ip: IpAddr) -> Result<RtpPair, Error> {
        let (rtp, rtcp) = bind_rtp_pair(ip)?;
        let (rtp, rtcp) = (Arc::new(rtp), Arc::new(rtcp));
        // SAFETY: each `AsyncFd` owns a clone of its `Arc`, so the socket — and its fd — stays
        // open for the `AsyncFd`'s whole life, and a `UdpSocket`'s fd never changes.
        let rtp_fd = unsafe { AsyncFd::register_with_interest(rtp.clone(), Interest::READABLE) }
            .map_err(|e| Error::Io(e.into()))?;
        let rtcp_fd = unsafe { AsyncFd::register_with_interest(rtcp.clone(), Interest::READABLE) }
            .map_err(|e| Error::Io(e.into()))?;
        let local = rtp.local_addr()?;
        Ok(RtpPair {
            rtp,
            rtcp,
            rtp_fd,
            rtcp_fd,
            local,
        })
    }
}

/// What a [`Uac`]'s RTP socket pairs did so far ([`Uac::rtp_pairs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpPairStats {
    /// Pairs bound (two sockets each, and their port search).
    pub bound: u64,
    /// Calls that took an ended call's pair instead of binding one.
    pub reused: u64,
    /// Pairs closed by the pool: beyond its cap, idle too long, or let go for descriptors.
    pub closed: u64,
    /// Pairs in the pool now (two descriptors each).
    pub idle: u64,
}

/// The RTP/RTCP socket pairs of ended calls, handed to later calls instead of binding two
/// sockets (and registering them, and closing them) per call: six to eight system calls and
/// a port search each (S1, BENCHMARKS.md). A pair is given back the moment its call's script
/// ends (BYE sent or received, CANCEL, failure) and reused only after [`RtpPorts::QUIET`]
/// (what the previous far end still had in flight has arrived by then, and is read and
/// dropped when the pair is taken; a call hears RTP only from its own answer's address
/// anyway, `session::PeerFilter`) and once the pacer has let go of its stream.
///
/// The offer's port cannot be reserved without its socket: UDP has no reservation but a
/// bound socket, and the offerer must be ready to receive on it at once (RFC 3264 §5) — so a
/// pair is taken when the INVITE is sent. The pool is a cache of descriptors, bounded three
/// ways: at most `max_idle` pairs (together a quarter of the process's open-file limit
/// across a UAC's loops), a pair idle longer than [`RtpPorts::MAX_AGE`] is closed, and when
/// binding fails for want of descriptors (`EMFILE`/`ENFILE`) the pool closes its idle pairs
/// and binds again, so calls in progress always come before the cache.
struct RtpPorts {
    idle: std::sync::Mutex<std::collections::VecDeque<(Instant, RtpPair)>>,
    max_idle: usize,
    bound: AtomicU64,
    reused: AtomicU64,
    closed: AtomicU64,
}

impl RtpPorts {
    const QUIET: Duration = Duration::from_millis(500);
    /// A pair idle this long is closed (the rate fell: the pool shrinks back).
    const MAX_AGE: Duration = Duration::from_secs(30);
    /// Pairs one pool keeps at most, whatever the open-file limit.
    const MAX_IDLE: usize = 8192;
    /// And at least (a tiny open-file limit still reuses some).
    const MIN_IDLE: usize = 16;

    /// A pool for one of `loops` loops: the loops' pools together keep at most half of the
    /// soft open-file limit in idle descriptors (two per pair).
    fn new(loops: usize) -> RtpPorts {
        let cap = open_file_limit()
            .map_or(Self::MAX_IDLE, |n| n / 4 / loops.max(1))
            .clamp(Self::MIN_IDLE, Self::MAX_IDLE);
        RtpPorts::with_cap(cap)
    }

    fn with_cap(max_idle: usize) -> RtpPorts {
        RtpPorts {
            idle: std::sync::Mutex::default(),
            max_idle,
            bound: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(Instant, RtpPair)>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take(&self, ip: IpAddr, now: Instant) -> Result<RtpPair, Error> {
        let reused = {
            let mut idle = self.lock();
            self.expire(&mut idle, now);
            match idle.front() {
                // The pair's own `Arc` and its `AsyncFd`'s: the pacer has closed the stream.
                Some((since, p))
                    if now.saturating_duration_since(*since) >= Self::QUIET
                        && Arc::strong_count(&p.rtp) == 2 =>
                {
                    idle.pop_front().map(|(_, p)| p)
                }
                _ => None,
            }
        };
        if let Some(p) = reused {
            self.reused.fetch_add(1, Ordering::Relaxed);
            p.drain_stale();
            return Ok(p);
        }
        let pair = match RtpPair::bind(ip) {
            Err(Error::Io(e)) if out_of_descriptors(&e) => {
                // The cache gives way to the call: its idle pairs are closed, and one more try.
                let freed = std::mem::take(&mut *self.lock());
                if freed.is_empty() {
                    return Err(Error::Io(e));
                }
                tracing::warn!(
                    closed = freed.len(),
                    "out of file descriptors: the idle RTP socket pairs are closed"
                );
                self.closed.fetch_add(freed.len() as u64, Ordering::Relaxed);
                drop(freed);
                RtpPair::bind(ip)?
            }
            r => r?,
        };
        self.bound.fetch_add(1, Ordering::Relaxed);
        Ok(pair)
    }

    fn give_back(&self, pair: RtpPair, now: Instant) {
        let mut idle = self.lock();
        self.expire(&mut idle, now);
        if idle.len() < self.max_idle {
            idle.push_back((now, pair));
        } else {
            drop(idle);
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes the pairs idle longer than [`RtpPorts::MAX_AGE`] (the oldest are in front).
    fn expire(&self, idle: &mut std::collections::VecDeque<(Instant, RtpPair)>, now: Instant) {
        while idle
            .front()
            .is_some_and(|(since, _)| now.saturating_duration_since(*since) > Self::MAX_AGE)
        {
            idle.pop_front();
            self.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn stats(&self) -> RtpPairStats {
        RtpPairStats {
            bound: self.bound.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            idle: self.lock().len() as u64,
        }
    }
}

/// The process's soft open-file limit (`RLIMIT_NOFILE`), if it has one.
fn open_file_limit() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a valid pointer and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    usize::try_from(lim.rlim_cur).ok()
}

/// The process (`EMFILE`) or the system (`ENFILE`) is out of file descriptors.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A UDP socket bound at `at` with `buffer` bytes asked for as its receive and send buffers,
/// and what the kernel granted.
fn udp_socket(
    at: SocketAddr,
    buffer: usize,
) -> Result<(std::net::UdpSocket, (usize, usize)), Error> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(at),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // A burst of responses at a high call rate overflows the default receive buffer
    // (~208 KiB): the kernel drops them and every loss costs a retransmission timer.
    socket.set_recv_buffer_size(buffer)?;
    socket.set_send_buffer_size(buffer)?;
    socket.set_nonblocking(true)?;
    socket.bind(&at.into())?;
    // Linux reports twice the size it grants (the doubling covers its bookkeeping).
    let buffers = (
        socket.recv_buffer_size()? / 2,
        socket.send_buffer_size()? / 2,
    );
    if buffers.0 < buffer || buffers.1 < buffer {
        tracing::warn!(
            asked = buffer,
            receive = buffers.0,
            send = buffers.1,
            "SIP socket buffers capped by the kernel (net.core.rmem_max / wmem_max)"
        );
    }
    Ok((socket.into(), buffers))
}

/// Via, Contact and SDP carry the bound address: it must be one the trunk can reach.
fn check_bind(bind: SocketAddr) -> Result<(), Error> {
    if bind.ip().is_unspecified() {
        return Err(Error::Config {
            field: "bind",
            why: format!("{bind}: bind to the address that reaches the trunk, not a wildcard"),
        });
    }
    Ok(())
}

/// Binds the call's RTP socket on an even port and its RTCP socket on the next one (RFC 3550
/// §11), on `ip`: the kernel picks a port; an odd one, or one whose successor is taken, is
/// let go and another asked for.
fn bind_rtp_pair(ip: IpAddr) -> Result<(std::net::UdpSocket, std::net::UdpSocket), Error> {
    for _ in 0..64 {
        let rtp = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        if let Ok(rtcp) = std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)) {
            rtp.set_nonblocking(true)?;
            rtcp.set_nonblocking(true)?;
            return Ok((rtp, rtcp));
        }
    }
    Err(Error::Io(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free even RTP port with a free RTCP port after it",
    )))
}

/// The wall-clock time now in NTP format (for RTCP).
fn wall_ntp() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::rtcp::ntp(since)
}

/// Answers the far end's re-INVITE or UPDATE (RFC 3311, RFC 3261 §14.2): with an offer, 200
/// and our answer (media moved, codec switched, hold or resume applied), or 488 when it
/// names no codec we take (the session stays as it was); without one, 200 with our current
/// SDP (a re-INVITE: our offer, the answer comes in the ACK and is not read — the session is
/// kept as it is) or no body (an UPDATE). A Session-Expires in the request is echoed (RFC
/// 4028 §9), the requester remaining the refresher unless it chose.
fn answer_offer(
    req: &Request,
    media: Option<&mut Media>,
    local: &mut LocalSdp,
    now: Instant,
    prompts: &impl Fn(Codec) -> [Arc<[u8]>; 3],
    timeline: &mut dyn FnMut(String),
) -> (u16, Vec<Header>, Option<Vec<u8>>) {
    let method = if req.method == Method::Invite {
        "re-INVITE".to_owned()
    } else {
        req.method.to_string()
    };
    let mut headers: Vec<Header> = Vec::new();
    if let Some(se) = header_value(req, "Session-Expires") {
        let se = if se.to_ascii_lowercase().contains("refresher=") {
            se
        } else {
            format!("{se};refresher=uac")
        };
        headers.push(("Session-Expires".into(), se));
        if header_value(req, "Supported")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("timer")))
        {
            headers.push(("Require".into(), "timer".into()));
        }
    }
    let Some(media) = media else {
        timeline(format!("{method} before the call's media: 488"));
        return (488, headers, None);
    };
    // No SDP: no body, an optional one we do not read (RFC 3261 §20.11), a multipart body
    // without an SDP part whose parts are all optional (the endpoint refused any other).
    let Some(offer_body) = body::sdp(&req.headers, req.body()) else {
        if req.method == Method::Invite {
            timeline("re-INVITE without SDP (refresh): 200 with our SDP".into());
            headers.push(("Content-Type".into(), "application/sdp".into()));
            return (200, headers, Some(local.offer().into_bytes()));
        }
        timeline(format!("{method} without SDP (refresh): 200"));
        return (200, headers, None);
    };
    let offer = match sdp::parse_answer(offer_body) {
        Ok(o) => o,
        Err(e) => {
            timeline(format!("{method} refused (488): {e}"));
            return (488, headers, None);
        }
    };
    let changes = media.apply(&offer, now, prompts);
    let answer = local.answer(&offer);
    timeline(describe(&method, &offer, &changes, local.version()));
    headers.push(("Content-Type".into(), "application/sdp".into()));
    (200, headers, Some(answer.into_bytes()))
}

/// A header's value in a request.
fn header_value(r: &Request, name: &str) -> Option<String> {
    wire::value(&r.headers, &wire::name(name))
}

fn describe(
    method: &str,
    sdp: &RemoteSdp,
    changes: &crate::session::Changes,
    version: u64,
) -> String {
    format!(
        "{method} ({}): 200{} (our o= version {version})",
        sdp.direction.as_str(),
        describe_changes(changes)
    )
}

/// What a new SDP changed in the media, for the timeline: `, media moved to …` and the like.
fn describe_changes(changes: &crate::session::Changes) -> String {
    let mut what = String::new();
    if let Some(to) = changes.moved_to {
        what += &format!(", media moved to {to}");
    }
    if let Some(c) = changes.codec {
        what += &format!(", codec now {}", c.name());
    }
    match changes.held {
        Some(true) => what += ", on hold: sending paused (the message keeps its place)",
        Some(false) => what += ", resumed: sending again",
        None => {}
    }
    what
}

/// Session timers (RFC 4028). When we are the refresher (`refresher=uac` in the 200 to our
/// INVITE, or `refresher=uas` in the far end's refresh): an UPDATE without SDP if the far end
/// allows UPDATE, else a re-INVITE with our unchanged SDP, every half interval; only a 2xx
/// extends the session (§10), so while refreshes fail (5xx, 491 past its retries) they are
/// tried again only before the session expires (last 2xx + interval), and at that instant the
/// call is ended (a timeout, 408 or 481 ends it at once, §10). When the far end is: without a
/// refresh from it, the call is ended slightly before the session expires (§10, the side not
/// refreshing: min(32 s, interval / 3) before).
#[derive(Debug, Default)]
struct SessionRefresh {
    /// The shortest interval taken from the far end ([`Trunk::min_session_expires`]).
    floor: Duration,
    interval: Option<Duration>,
    use_update: bool,
    /// When the next refresh is due (none while one is in flight).
    due: Option<tokio::time::Instant>,
    /// When to give the session up: for want of the far end's refresh, or (we refresh) when
    /// it expires, no refresh of ours having been answered 2xx since the last one.
    expires: Option<tokio::time::Instant>,
    /// Our refresh's 491s (glare) or 422s in a row: past [`MAX_GLARE_RETRIES`] retries,
    /// given up.
    glares: u8,
    /// The far end's Min-SE from a 422 to our refresh: sent in every refresh after (§7.4).
    min_se: Option<u64>,
}

/// How many times in a row a refresh answered 491 is sent again after 2.1–4 s (a far end, a
/// B2BUA, that answers 491 to every refresh would otherwise be sent one every 2.1–4 s until
/// the session expires); past them, a 491 is a failure like a 5xx.
const MAX_GLARE_RETRIES: u8 = 3;

struct RefreshOutcome {
    text: String,
    session_gone: bool,
}

/// The key of a SIP INFO: its body, or the part of a multipart body (the endpoint lets
/// either through, [`crieur_sip::body`]), of a DTMF type.
fn info_key(request: &Request) -> Option<char> {
    ["application/dtmf-relay", "application/dtmf"]
        .into_iter()
        .find_map(|t| {
            let part = body::take(&request.headers, request.body(), &[t])?;
            parse_sip_info(t, &String::from_utf8_lossy(part))
        })
}

/// `Session-Expires: <seconds>[;refresher=uac|uas]`.
fn session_expires(r: &Response, floor: Duration) -> Option<(Duration, Option<String>)> {
    parse_session_expires(
        &wire::value(&r.headers, &wire::name("Session-Expires"))?,
        floor,
    )
}

/// The interval is the far end's: clamped to `floor` (at least 1 s; [`MIN_SESSION_EXPIRES`]
/// outside tests: RFC 4028 §4/§5, no Min-SE is below 90 s, so no shorter interval is ever
/// agreed) ..= [`MAX_SESSION_EXPIRES`] (a day: a huge value would overflow `Instant`).
fn parse_session_expires(v: &str, floor: Duration) -> Option<(Duration, Option<String>)> {
    let mut parts = v.split(';');
    let secs: u64 = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    Some((
        Duration::from_secs(secs.clamp(
            floor.as_secs().clamp(1, MAX_SESSION_EXPIRES),
            MAX_SESSION_EXPIRES,
        )),
        refresher,
    ))
}

/// A 422's `Min-SE: <seconds>` (clamped as a Session-Expires is), if it has one.
fn min_se(r: &Response) -> Option<u64> {
    let v = wire::value(&r.headers, &wire::name("Min-SE"))?;
    let secs: u64 = v.split(';').next()?.trim().parse().ok()?;
    Some(secs.clamp(MIN_SESSION_EXPIRES, MAX_SESSION_EXPIRES))
}

/// RFC 4028's floor for any Session-Expires / Min-SE (§4, §5), in seconds: what
/// [`Trunk::min_session_expires`] should be.
pub const MIN_SESSION_EXPIRES: u64 = 90;
/// The longest session interval taken from the far end (one day).
const MAX_SESSION_EXPIRES: u64 = 86_400;

/// `now + d` as a timer instant, or `None` where it would overflow (the timer is then off).
fn later(now: Instant, d: Duration) -> Option<tokio::time::Instant> {
    now.checked_add(d).map(tokio::time::Instant::from_std)
}

impl SessionRefresh {
    /// No timer yet; intervals from the far end no shorter than `floor`.
    fn with_floor(floor: Duration) -> SessionRefresh {
        SessionRefresh {
            floor,
            ..SessionRefresh::default()
        }
    }

    fn from_answer(resp: &Response, now: Instant, floor: Duration) -> SessionRefresh {
        let mut r = SessionRefresh {
            floor,
            use_update: wire::value(&resp.headers, &wire::name("Allow")).is_some_and(|a| {
                a.split(',')
                    .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
            }),
            ..SessionRefresh::default()
        };
        match session_expires(resp, floor) {
            Some((interval, Some(who))) if who == "uac" => r.we_refresh(interval, now),
            // The 2xx must name the refresher (§7.2); without one, the far end is taken to.
            Some((interval, _)) => r.they_refresh(interval, now),
            None => {}
        }
        r
    }

    /// We refresh: the session refreshed at `now` (a 2xx, or the far end's refresh) expires
    /// after `interval`; the next refresh is due at half of it.
    fn we_refresh(&mut self, interval: Duration, now: Instant) {
        match (later(now, interval / 2), later(now, interval)) {
            (Some(due), Some(expires)) => {
                self.interval = Some(interval);
                self.due = Some(due);
                self.expires = Some(expires);
            }
            _ => self.off(),
        }
    }

    /// No session timer: no refresh of ours, no expiry (§9, or an interval we cannot time).
    fn off(&mut self) {
        self.interval = None;
        self.due = None;
        self.expires = None;
    }

    /// A refresh failed (not ending the session at once): tried again after `delay` if that
    /// is before the session expires, else not (the expiry ends the call).
    fn retry_after(&mut self, delay: Duration, now: Instant) -> bool {
        self.due = later(now, delay).filter(|at| self.expires.is_some_and(|e| *at < e));
        self.due.is_some()
    }

    fn they_refresh(&mut self, interval: Duration, now: Instant) {
        self.interval = None;
        self.due = None;
        let margin = (interval / 3).min(Duration::from_secs(32));
        self.expires = later(now, interval.saturating_sub(margin));
    }

    /// The far end's re-INVITE or UPDATE, answered `code`: only a 2xx is a refresh (§10),
    /// with its Session-Expires: `refresher=uas` makes us the refresher, otherwise (`uac`,
    /// or none: we answer `uac`) the far end stays it. Without Session-Expires the session
    /// timer is off (§9).
    fn on_remote_refresh(&mut self, req: &Request, code: u16, now: Instant) {
        if !(200..300).contains(&code) {
            return;
        }
        match header_value(req, "Session-Expires")
            .and_then(|v| parse_session_expires(&v, self.floor))
        {
            Some((interval, Some(who))) if who == "uas" => self.we_refresh(interval, now),
            Some((interval, _)) => self.they_refresh(interval, now),
            None => self.off(),
        }
    }

    fn send(&mut self, leg: CallRef, local: &mut LocalSdp, sip: &SipLoop) -> String {
        let Some(interval) = self.interval else {
            return String::new();
        };
        let mut headers = vec![
            (
                "Session-Expires".to_owned(),
                format!("{};refresher=uac", interval.as_secs()),
            ),
            ("Supported".to_owned(), "timer".to_owned()),
        ];
        if let Some(min) = self.min_se {
            headers.push(("Min-SE".to_owned(), min.to_string()));
        }
        let (method, body, what) = if self.use_update {
            (Method::Update, Vec::new(), "session refresh: UPDATE sent")
        } else {
            headers.push(("Content-Type".to_owned(), "application/sdp".to_owned()));
            (
                Method::Invite,
                local.offer().into_bytes(),
                "session refresh: re-INVITE sent",
            )
        };
        if !sip.send(Command::Request {
            leg,
            method,
            headers,
            body,
        }) {
            tracing::debug!("the SIP loop is gone");
        }
        what.into()
    }

    fn handled(
        &mut self,
        r: SipOutcome,
        now: Instant,
        media: Option<&mut Media>,
        prompts: &impl Fn(Codec) -> [Arc<[u8]>; 3],
    ) -> RefreshOutcome {
        let Some(interval) = self.interval else {
            return RefreshOutcome {
                text: String::new(),
                session_gone: false,
            };
        };
        let resp = match r {
            SipOutcome::Response(resp) => resp,
            SipOutcome::Timeout | SipOutcome::TransportError => {
                let why = if matches!(r, SipOutcome::Timeout) {
                    "no response"
                } else {
                    "transport error"
                };
                return RefreshOutcome {
                    text: format!("session refresh failed: {why}"),
                    session_gone: true,
                };
            }
        };
        let code = resp.status.code();
        if (200..300).contains(&code) {
            let answer = body::sdp(&resp.headers, resp.body()).map(sdp::parse_answer);
            if let (Some(m), Some(Ok(answer))) = (media, answer) {
                m.apply(&answer, now, prompts);
            }
            self.glares = 0;
            // RFC 4028 §7.2: a 2xx without Session-Expires turns the timer off; with
            // `refresher=uas` the far end refreshes from now on; only `uac` keeps it ours.
            match session_expires(&resp, self.floor) {
                Some((next, Some(who))) if who == "uac" => self.we_refresh(next, now),
                Some((next, _)) => self.they_refresh(next, now),
                None => self.off(),
            }
            RefreshOutcome {
                text: format!("session refresh: {code}"),
                session_gone: false,
            }
        } else if code == 408 || code == 481 {
            RefreshOutcome {
                text: format!("session refresh: {code}: the session is gone"),
                session_gone: true,
            }
        } else if let Some(min) = (code == 422 && self.glares < MAX_GLARE_RETRIES)
            .then(|| min_se(&resp))
            .flatten()
        {
            // RFC 4028 §7.4: too short for the far end: sent again at once with a
            // Session-Expires of at least its Min-SE, and the Min-SE itself.
            self.glares += 1;
            self.min_se = Some(min);
            self.interval = Some(interval.max(Duration::from_secs(min)));
            let text = if self.retry_after(Duration::ZERO, now) {
                format!("session refresh: 422; retrying with Session-Expires {min}")
            } else {
                "session refresh: 422; the session expires first: not retried".to_owned()
            };
            RefreshOutcome {
                text,
                session_gone: false,
            }
        } else if code == 491 && self.glares < MAX_GLARE_RETRIES {
            self.glares += 1;
            // Glare (RFC 3261 §14.1): tried again after a random 2.1–4 s in 10 ms steps —
            // the range of the Call-ID's owner, which we are (we placed the call).
            let delay = Duration::from_millis(10 * rand::random_range(210..=400u64));
            let text = if self.retry_after(delay, now) {
                format!("session refresh: 491; retrying in {} ms", delay.as_millis())
            } else {
                "session refresh: 491; the session expires first: not retried".to_owned()
            };
            RefreshOutcome {
                text,
                session_gone: false,
            }
        } else {
            // Another failure (5xx, 491 past its retries …): the session is not extended
            // (§10); tried again in a quarter interval if that is before it expires.
            let text = if self.retry_after(interval / 4, now) {
                format!("session refresh: {code}; retrying")
            } else {
                format!("session refresh: {code}; the session expires before a retry")
            };
            RefreshOutcome {
                text,
                session_gone: false,
            }
        }
    }
}

/// Receives one datagram from the call's read-only registered RTP socket (cancel-safe: the
/// readiness wait holds no datagram; the read itself does not wait).
async fn recv_rtp(
    sock: &AsyncFd<Arc<std::net::UdpSocket>>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    loop {
        let mut ready = sock.readable().await?;
        if let Ok(r) = ready.try_io(|s| s.get_ref().recv_from(buf)) {
            return r;
        }
    }
}

/// At most this many of a 3xx's Contacts are named in the call's reason, in at most
/// [`MAX_REDIRECT_TEXT`] bytes: a 3xx listing hundreds must not bloat the call's record.
const MAX_REDIRECT_CONTACTS: usize = 3;
const MAX_REDIRECT_TEXT: usize = 256;

/// The first [`MAX_REDIRECT_CONTACTS`] Contacts of a 3xx, comma-separated, cut (at a char
/// boundary, marked `…`) past [`MAX_REDIRECT_TEXT`] bytes.
fn redirect_targets(resp: &Response) -> String {
    let all: Vec<String> = resp
        .headers
        .get_all(&wire::name("Contact"))
        .map(|h| String::from_utf8_lossy(&h.value()).into_owned())
        .collect();
    let mut to = all
        .iter()
        .take(MAX_REDIRECT_CONTACTS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > MAX_REDIRECT_CONTACTS {
        to += ", …";
    }
    if to.len() > MAX_REDIRECT_TEXT {
        let mut end = MAX_REDIRECT_TEXT;
        while !to.is_char_boundary(end) {
            end -= 1;
        }
        to.truncate(end);
        to += "…";
    }
    to
}

fn reason(r: &Response) -> String {
    String::from_utf8_lossy(&r.reason).into_owned()
}

/// The timeline's note of a response, `<code> <reason>` (as `format!("{code} {}", reason(r))`
/// wrote it), in one string of its size: a note per response of every call, where `format!`
/// and the reason's own copy were two allocations and the formatting machinery
/// (BENCHMARKS.md S1 step 42).
fn status_note(code: u16, reason: &[u8]) -> String {
    let why = String::from_utf8_lossy(reason);
    if !(100..=999).contains(&code) {
        return format!("{code} {why}");
    }
    let digits = [code / 100, code / 10 % 10, code % 10].map(|d| b'0' + d as u8);
    let mut s = String::with_capacity(4 + why.len());
    s.extend(digits.iter().map(|&d| char::from(d)));
    s.push(' ');
    s.push_str(&why);
    s
}

/// What a call's task asks of the SIP loop ([`SipLoop`]).
pub enum Command {
    Invite {
        invite: Box<Invite>,
        /// The call's events.
        events: mpsc::UnboundedSender<SipEvent>,
        placed: oneshot::Sender<Result<CallRef, crieur_sip::Error>>,
    },
    Cancel(CallRef),
    Bye(CallRef, Vec<Header>),
    /// BYE if established, CANCEL if ringing.
    HangUp(CallRef),
    /// The call's task is done: its events go nowhere from now on.
    Forget(CallRef),
    Request {
        leg: CallRef,
        method: Method,
        headers: Vec<Header>,
        body: Vec<u8>,
    },
    Respond {
        server: ServerRef,
        code: u16,
        headers: Vec<Header>,
        body: Option<Vec<u8>>,
    },
}

/// When datagrams come faster than one per this, the loop reads them at most once per this
/// (sleeping, then draining the socket) instead of being woken by each: a wake-up is a
/// thread switch, which S1's profile put at a quarter of the loop's CPU at 4,000 calls/s.
/// A datagram waits at most this long more (sipp's UAC works on a 1 ms tick too); a slow
/// trickle is read at once as before.
const COALESCE: Duration = Duration::from_millis(1);

/// While a call handed ahead ([`Uac::call_at`]) starts within this, the loop ticks: it does
/// not watch its socket, and its timer — the calls' starts, the endpoint's and the inline
/// calls' deadlines — is due at most once per this, on a grid (the next multiple of this
/// since the loop began): each turn places the calls whose start has come, reads what
/// arrived, serves what is due. At 1,000 calls/s handed ahead a 1 ms tick woke the loop once
/// per call — the thread switch back in, 10–14 % of the process's samples at that rate
/// (BENCHMARKS.md S1, step 40) —; on a 2 ms grid every wake-up placed two, on this 4 ms one
/// four (and 16 at 4,000/s): a wake-up costs this VM's loop ~35 µs of CPU even with nothing
/// to do, and its caches come back cold — 4 ms took a fifth off the CPU per call at 1,000/s
/// against 2 ms (step 46). The price: a call handed ahead leaves up to this after its start,
/// and a datagram waits up to this before it is read — far inside SIP's timers (T1 500 ms).
const TICK: Duration = Duration::from_millis(4);

/// While the loop took a call to place at once ([`Uac::call`]) within this, calls are
/// coming and the loop ticks as for calls handed ahead ([`TICK`]): each call then waits for
/// the next tick (≤ 4 ms: `Uac::call` pushes it with that deadline, so it wakes nothing), and
/// the datagrams too. A caller that places each call when it is due — the campaign runner,
/// whose planner hands its calls over as their pacing tokens come — then costs the loop one
/// wake-up per tick, not one per call and more per datagram (BENCHMARKS.md S1, step 48).
/// 24 ms: ticking (250 wake-ups/s) is the cheaper from ~60 calls/s (a call not ticking
/// wakes the loop ~4 times: handed over, 180, 200, the BYE's 200), and a runner's batches
/// come every 20 ms at most; below that rate, and 24 ms after the last call, the loop
/// watches its socket again and a lone call is placed at once as before.
const CALLS_COMING: Duration = Duration::from_millis(24);

/// Wake-ups by datagrams in a row, each within [`COALESCE`] of the one before, that make the
/// loop pause before its next read: a lone call's responses (180, 200, then its BYE's 200)
/// come that close together and stop there, and pausing for them cost a timer wake-up of its
/// own (tokio writes its eventfd when a timer earlier than its next is set; epoll sleeps whole
/// milliseconds) with nothing to read at its end.
const COALESCE_AFTER: u32 = 4;

/// How often a loop whose UDP socket the reactor would not register for reading
/// ([`UdpNet::watch`]) reads it anyway, on its timer: late, not deaf.
const DEAF_POLL: Duration = Duration::from_millis(5);

/// A call the far end placed (an INVITE from outside any dialog; [`SipLoop::start`] with an
/// `incoming` channel): answer it with [`Command::Respond`]; its events come on `events`.
pub struct IncomingCall {
    pub call: CallRef,
    pub server: ServerRef,
    pub request: Box<Request>,
    pub events: mpsc::UnboundedReceiver<SipEvent>,
}

/// What a SIP loop sends and receives on.
pub enum SipNet {
    /// One UDP socket: a message per datagram.
    Udp(tokio::net::UdpSocket),
    /// TCP: a listener on our address for connections the far end opens, and one connection
    /// per peer we send to (opened on the first message, reused after; messages framed by
    /// their Content-Length, RFC 3261 §18.3).
    Tcp(tokio::net::TcpListener),
    /// TLS (RFC 3261 §26.2, RFC 5922): connections we open, each a TLS session whose
    /// certificate is checked against `name` (sent as SNI); responses and the far end's
    /// requests come back on them. With `inbound`, also the connections the far end opens
    /// to our listener, handshaken with our certificate.
    Tls {
        connector: tokio_rustls::TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
        inbound: Option<crate::listen::Inbound>,
    },
}

/// How a TLS trunk is checked: the name its certificate must carry (a DNS name or an IP
/// address; also sent as SNI) and, besides the system's roots, the CA certificates (PEM) to
/// trust.
#[derive(Debug, Clone)]
pub struct TlsTrunk {
    pub server_name: String,
    pub ca_file: Option<std::path::PathBuf>,
    /// Our certificate and key, for a listener taking the connections the trunk opens to us.
    pub identity: Option<crate::listen::TlsIdentity>,
}

impl TlsTrunk {
    fn connector(
        &self,
    ) -> Result<
        (
            tokio_rustls::TlsConnector,
            rustls::pki_types::ServerName<'static>,
        ),
        Error,
    > {
        use rustls::pki_types::pem::PemObject;
        let bad = |why: String| Error::Config {
            field: "trunk.tls",
            why,
        };
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a system root certificate could not be read");
        }
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = &self.ca_file {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| bad(format!("{}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            }
        } else if added == 0 {
            return Err(bad("no system root certificates and no CA file".into()));
        }
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone())
            .map_err(|e| bad(format!("{}: {e}", self.server_name)))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    }
}

/// One SIP loop: a task that owns a socket (or TCP connections) and a sans-IO [`Endpoint`], takes
/// [`Command`]s and hands each call its events. The UAC runs one; so does crieur-sim (a UAS).
#[derive(Clone)]
pub struct SipLoop {
    commands: mpsc::UnboundedSender<Command>,
    background: Arc<AtomicUsize>,
}

impl SipLoop {
    /// Starts the loop on tokio. With `incoming`, INVITEs from outside a dialog are handed
    /// there; without, the endpoint declines them.
    pub fn start(
        socket: SipNet,
        endpoint: Endpoint,
        incoming: Option<mpsc::UnboundedSender<IncomingCall>>,
        stop: CancellationToken,
    ) -> std::io::Result<SipLoop> {
        Ok(Self::spawn(socket, endpoint, incoming, None, stop)?.0)
    }

    /// [`SipLoop::start`], with the loop's task.
    fn spawn(
        socket: SipNet,
        endpoint: Endpoint,
        incoming: Option<mpsc::UnboundedSender<IncomingCall>>,
        jobs: Option<(Arc<Jobs>, std::sync::mpsc::Receiver<Job>)>,
        stop: CancellationToken,
    ) -> std::io::Result<(SipLoop, tokio::task::JoinHandle<()>)> {
        let (commands, rx) = mpsc::unbounded_channel();
        let background = Arc::new(AtomicUsize::new(0));
        // The socket registered with the reactor here (the caller's runtime: the loop's),
        // so a failure is the caller's error rather than a loop that ends at once.
        let (framed, framed_rx) = mpsc::unbounded_channel();
        let wire = Wire::new(socket, framed)?;
        let task = tokio::spawn(sip_loop(
            (wire, framed_rx),
            endpoint,
            rx,
            incoming,
            jobs,
            background.clone(),
            stop,
        ));
        Ok((
            SipLoop {
                commands,
                background,
            },
            task,
        ))
    }

    /// Asks the loop to do something; false if it has stopped.
    pub fn send(&self, c: Command) -> bool {
        let ending = matches!(
            c,
            Command::Bye(..) | Command::Cancel(_) | Command::HangUp(_)
        );
        if ending {
            // Counted until the loop has made its transaction (`background` then has it).
            self.background.fetch_add(1, Ordering::SeqCst);
        }
        let sent = self.commands.send(c).is_ok();
        if ending && !sent {
            self.background.fetch_sub(1, Ordering::SeqCst);
        }
        sent
    }

    /// BYE and CANCEL transactions still running, and those asked for and not yet made.
    pub fn background(&self) -> usize {
        self.background.load(Ordering::SeqCst)
    }
}

/// A UAC's loop thread: a single-threaded tokio runtime running the SIP loop and every call's
/// task. A call's SIP events go from the loop to its task on the same thread (a queue push,
/// no futex, no thread switch), and its allocations are freed where they were made. The
/// thread ends when the loop does (its `Uac` dropped); calls still on it are dropped then.
struct LoopThread;

impl LoopThread {
    /// Starts the thread and the loop on it; `net` makes the loop's sockets inside the
    /// thread's runtime, so their readiness is the loop thread's own reactor's.
    fn start(
        net: impl FnOnce() -> std::io::Result<SipNet>,
        endpoint: Endpoint,
        stop: CancellationToken,
    ) -> Result<(SipLoop, Arc<Jobs>), Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (inbox, rx) = crate::inbox::Inbox::new(Instant::now());
        let jobs = Arc::new(Jobs {
            inbox,
            wake: tokio::sync::Notify::new(),
            look: AtomicBool::new(false),
            to_tasks: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            relay: crate::relay::Relay::default(),
        });
        let (sip, task) = {
            let _inside = rt.enter();
            SipLoop::spawn(net()?, endpoint, None, Some((jobs.clone(), rx)), stop)?
        };
        std::thread::Builder::new()
            .name("crieur-sip".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = task.await;
                })
            })?;
        Ok((sip, jobs))
    }
}

/// The SIP loop: owns the socket and the sans-IO endpoint; feeds it datagrams, commands and
/// the time; sends what it transmits; routes its events to each call's task. A request the
/// call's task can no longer answer (it ended) is answered 481 here.
async fn sip_loop(
    // The socket, or listener and connections, and the messages the connections framed.
    (mut wire, mut framed_rx): (Wire, mpsc::UnboundedReceiver<(SocketAddr, wire::Framed)>),
    mut ep: Endpoint,
    mut commands: mpsc::UnboundedReceiver<Command>,
    incoming: Option<mpsc::UnboundedSender<IncomingCall>>,
    jobs: Option<(Arc<Jobs>, std::sync::mpsc::Receiver<Job>)>,
    background: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let mut calls: Calls = HashMap::new();
    // The receiver apart: it is not `Sync`, and the inbox is waited on across awaits.
    let (jobs, jobs_rx) = jobs.unzip();
    // Over UDP each wake-up reads what waits in one `recvmmsg`, and each turn's datagrams
    // leave in one `sendmmsg` (`mmsg.rs`).
    let mut batch = crate::mmsg::RecvBatch::default();
    let mut out: Vec<crieur_sip::Transmit> = Vec::new();
    let mut inl = Inlines {
        timers: Default::default(),
        background,
        published: 0,
        jobs: jobs.clone(),
        ahead: Default::default(),
        ahead_seq: 0,
        last_at_once: None,
    };
    // The endpoint's next timer: one `Sleep`, moved when the deadline moves (not one made and
    // registered at every turn).
    let mut timer = std::pin::pin!(tokio::time::sleep_until(tokio::time::Instant::now()));
    // The last wake-up by a datagram, and whether the socket is to be read after a pause.
    let mut last_read: Option<Instant> = None;
    let mut pause = false;
    // Wake-ups by datagrams in a row within `COALESCE` of each other.
    let mut quick = 0u32;
    // The callers' wake-ups by this loop's reports: held in a turn, made when it ends
    // (before each wait, and when the loop ends).
    let _turns = jobs.as_ref().map(|j| j.relay.guard());
    // The origin of the ticks' grid ([`TICK`]).
    let epoch = Instant::now();
    loop {
        // New calls first: placed here, their INVITEs go out with this turn's datagrams.
        if let (Some(jobs), Some(rx)) = (&jobs, &jobs_rx) {
            jobs.relay.begin();
            jobs.inbox.awake();
            let now = Instant::now();
            while let Ok(job) = rx.try_recv() {
                inl.take(job, &mut ep, &mut calls, now);
            }
            inl.start_due(&mut ep, &mut calls, now);
            if jobs.look.swap(false, Ordering::SeqCst) {
                inl.sweep(&mut ep, &mut calls);
                inl.sweep_ahead(&mut ep, &mut calls);
            }
        }
        // Outputs, then: datagrams, then events. Sending may wait (a full UDP send buffer, a
        // TCP or TLS stream): what this turn holds so far is woken before it.
        if let Some(j) = &jobs {
            j.relay.flush();
            j.relay.begin();
        }
        wire.send_all(&mut ep, &mut out).await;
        while let Some(ev) = ep.poll_event() {
            let call = event_call(&ev);
            if let SipEvent::Terminated { call } = ev {
                // A call run inline stays: its script ends it (on its own timers, if need be).
                if matches!(calls.get(&call), Some(Route::Task(_))) {
                    calls.remove(&call);
                }
                continue;
            }
            let ev = match (ev, &incoming) {
                (
                    SipEvent::Incoming {
                        call,
                        server,
                        request,
                    },
                    Some(to),
                ) => {
                    let (tx, events) = mpsc::unbounded_channel();
                    let c = IncomingCall {
                        call,
                        server,
                        request,
                        events,
                    };
                    if to.send(c).is_ok() {
                        calls.insert(call, Route::Task(tx));
                    } else {
                        let _ = ep.respond(Instant::now(), server, 503, &[], None, Vec::new());
                    }
                    continue;
                }
                (ev, _) => ev,
            };
            match calls.get(&call) {
                None => {
                    if let SipEvent::Request { server, .. } | SipEvent::Incoming { server, .. } = ev
                    {
                        let code = if matches!(ev, SipEvent::Incoming { .. }) {
                            603
                        } else {
                            481
                        };
                        let _ = ep.respond(Instant::now(), server, code, &[], None, Vec::new());
                    }
                }
                Some(Route::Task(tx)) => {
                    if let Err(mpsc::error::SendError(SipEvent::Request { server, .. })) =
                        tx.send(ev)
                    {
                        let _ = ep.respond(Instant::now(), server, 481, &[], None, Vec::new());
                    }
                }
                Some(Route::Inline(_)) => {
                    if let Some(Route::Inline(c)) = calls.remove(&call) {
                        inl.event(c, ev, &mut ep, &mut calls);
                    }
                }
            }
        }
        if ep.has_transmit() {
            continue;
        }
        // What this turn's datagrams made has gone out: now the pause, if datagrams come fast.
        if std::mem::take(&mut pause) {
            if let Some(j) = &jobs {
                j.relay.flush();
            }
            if let Some(at) = last_read {
                tokio::time::sleep_until(tokio::time::Instant::from_std(at + COALESCE)).await;
            }
            let now = Instant::now();
            let read = wire.read_batch(&mut batch, &mut ep, now);
            if read == crate::mmsg::BATCH {
                // More waiting: read again without pausing, after the outputs.
                pause = true;
                last_read = None;
            }
            if read > 0 {
                last_read = last_read.map(|_| now);
                continue;
            }
        }
        // `background` = the endpoint's BYE/CANCEL transactions + commands queued that will
        // make one (added by `SipLoop::send`, taken off in `command`).
        inl.publish(&ep);
        // A call handed ahead starts within a tick (at 1,000 calls/s handed ahead, the next
        // start always does): the loop ticks ([`TICK`]) — the socket is not watched
        // meanwhile, what comes is read at the timer's turn (one wake-up for the starts and
        // the datagrams, as sipp's UAC works on a tick too) and, the socket then not
        // registered for readability ([`UdpNet`]), a datagram arriving wakes nothing. So
        // too while calls placed at once keep coming ([`CALLS_COMING`]: the runner's, each
        // handed over when due), the timer then at every tick; otherwise the loop watches its
        // socket.
        // The endpoint's timers and the inline calls' deadlines: one timer — while ticking,
        // not before the next tick.
        let due = [ep.poll_timeout(), inl.next()].into_iter().flatten().min();
        let now = Instant::now();
        let (tick, deadline) = ticking(due, inl.next_start(), inl.coming(now), epoch, now);
        let mut deadline = deadline.map(tokio::time::Instant::from_std);
        if let Some(d) = deadline {
            if timer.deadline() != d {
                timer.as_mut().reset(d);
            }
        }
        if let Some(jobs) = &jobs {
            if !jobs
                .inbox
                .may_sleep(deadline.map(tokio::time::Instant::into_std))
            {
                continue;
            }
            jobs.relay.flush();
        }
        // Not watched while ticking: a datagram then wakes nothing ([`UdpNet`]).
        if wire.watch(!tick) {
            // Not registered for reading though asked to be: read at the timer's turns, the
            // timer armed within `DEAF_POLL` whatever else is due.
            let poll = tokio::time::Instant::now() + DEAF_POLL;
            if deadline.is_none_or(|d| d > poll) {
                deadline = Some(poll);
                timer.as_mut().reset(poll);
            }
        }
        if let Some(j) = &jobs {
            j.waits.fetch_add(1, Ordering::Relaxed);
        }
        tokio::select! {
            () = async {
                match &jobs {
                    Some(jobs) => jobs.wake.notified().await,
                    None => std::future::pending().await,
                }
            } => {}
            r = wire.readable(), if !tick => {
                let now = Instant::now();
                // Woken again within `COALESCE`: the next reads wait for a batch.
                quick = if last_read.is_some_and(|t| now.saturating_duration_since(t) < COALESCE) {
                    quick.saturating_add(1)
                } else {
                    0
                };
                pause = quick + 1 >= COALESCE_AFTER;
                last_read = Some(now);
                match r {
                    // A full batch leaves the socket readable: the next turn reads on.
                    Ok(()) => {
                        wire.read_batch(&mut batch, &mut ep, now);
                    }
                    Err(e) => tracing::debug!(error = %e, "SIP receive"),
                }
            }
            m = framed_rx.recv() => {
                match m {
                    Some((from, wire::Framed::Message(m))) => {
                        ep.handle_message(Instant::now(), from, m);
                    }
                    // Framed but malformed: answered 400 if it can be (RFC 3261 §18.3),
                    // the connection kept.
                    Some((from, wire::Framed::Malformed(bytes))) => {
                        ep.handle_input(Instant::now(), from, &bytes);
                    }
                    None => {}
                }
            }
            a = wire.accept() => wire.accepted(a),
            c = commands.recv() => {
                let Some(c) = c else { break };
                let now = Instant::now();
                let mut ending = 0;
                for c in std::iter::once(c).chain(std::iter::from_fn(|| commands.try_recv().ok())) {
                    ending += usize::from(matches!(c, Command::Bye(..) | Command::Cancel(_) | Command::HangUp(_)));
                    command(&mut ep, &mut calls, c, now);
                }
                // Publish the transactions they made before taking the queued count off.
                let now_bg = ep.background();
                inl.background.fetch_add(now_bg.saturating_sub(inl.published), Ordering::SeqCst);
                inl.published = inl.published.max(now_bg);
                inl.background.fetch_sub(ending, Ordering::SeqCst);
            }
            _ = &mut timer, if deadline.is_some() => {
                let now = Instant::now();
                // What came meanwhile (watched, the reactor's readiness is looked at first: no
                // system call when nothing did; not watched — ticking — one `recvmmsg`); a
                // full batch leaves more for the next turn.
                if wire.read_batch(&mut batch, &mut ep, now) == crate::mmsg::BATCH {
                    pause = true;
                    last_read = None;
                }
                ep.handle_timeout(now);
                inl.fire(&mut ep, &mut calls, now);
            }
            _ = stop.cancelled() => {
                // What the calls asked for before the stop still goes out (a call's last
                // BYE is sent just before its `Uac` may be dropped).
                let now = Instant::now();
                while let Ok(c) = commands.try_recv() {
                    command(&mut ep, &mut calls, c, now);
                }
                while let Some(t) = ep.poll_transmit() {
                    let _ = wire.send(t.destination, &t.payload).await;
                }
                break;
            }
        }
    }
}

/// Whether the loop ticks — a call handed ahead starts within [`TICK`], or calls placed at
/// once keep coming (`coming`: [`CALLS_COMING`]) — and when its timer is due: at `due` (the
/// earliest of its deadlines and held starts), but while ticking not before the first tick
/// after `now` of the grid that began at `epoch`; ticking for calls coming, at that tick
/// whatever is due (the socket, not watched, is read there; the next call is taken there).
fn ticking(
    due: Option<Instant>,
    next_start: Option<Instant>,
    coming: bool,
    epoch: Instant,
    now: Instant,
) -> (bool, Option<Instant>) {
    let held = next_start.is_some_and(|t| t.saturating_duration_since(now) <= TICK);
    if !held && !coming {
        return (false, due);
    }
    let step = TICK.as_nanos();
    let ticks = now.saturating_duration_since(epoch).as_nanos() / step + 1;
    let next = epoch + Duration::from_nanos(u64::try_from(ticks * step).unwrap_or(u64::MAX));
    if coming {
        return (true, Some(next));
    }
    (true, due.map(|d| d.max(next)))
}

/// The loop's network side: the UDP socket, or the TCP listener, the connections' write
/// halves by peer, and the messages their readers framed.
struct Wire {
    net: Net,
    /// Each peer's connection: its id and write half.
    conns: HashMap<SocketAddr, (u64, Box<dyn tokio::io::AsyncWrite + Unpin + Send + Sync>)>,
    /// Where the connections' readers put the messages they framed.
    framed: mpsc::UnboundedSender<(SocketAddr, wire::Framed)>,
    /// The connections (peer, id) their readers saw close ([`Wire::sweep`]).
    closed: Arc<std::sync::Mutex<Vec<(SocketAddr, u64)>>>,
    /// The last connection's id.
    next_id: u64,
}

/// [`SipNet`] as the loop holds it: the UDP socket registered apart for each interest.
enum Net {
    Udp(UdpNet),
    Tcp(tokio::net::TcpListener),
    Tls {
        connector: tokio_rustls::TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
        inbound: Option<crate::listen::Inbound>,
    },
}

/// The SIP loop's UDP socket, sent on directly (registered for writability only to wait
/// out a full send buffer: [`UdpNet::send_to`]), and — through a duplicate of its
/// descriptor — registered for readability only while the loop watches it
/// ([`UdpNet::watch`]). While the loop ticks on its timer (a held call starting within
/// [`TICK`]: 250 calls/s and more handed ahead), what came is read at the tick, and a
/// datagram arriving must not wake the thread meanwhile: registered for readability, the
/// socket woke the reactor's thread (this thread: epoll) at each arrival even when no task
/// waited on it — 1.6 thread switches per call at 1,000/s where the ticks are one. Tokio's
/// `UdpSocket` registers for both interests at once, with no way to drop one. Registered for
/// writability (mio: `EPOLLOUT|EPOLLET`), each datagram sent queued an `EPOLLOUT` event
/// when its buffer was freed — one more reactor turn per sending turn, as on the RTP
/// sockets (BENCHMARKS.md S1).
struct UdpNet {
    /// Non-blocking, not registered with the reactor.
    send: std::net::UdpSocket,
    /// Registered for readability: while watched.
    read: Option<AsyncFd<std::net::UdpSocket>>,
    /// The duplicate, unregistered: while not watched.
    spare: Option<std::net::UdpSocket>,
    /// The last registration for reading was refused (warned once until one succeeds).
    refused: bool,
}

impl UdpNet {
    fn new(s: tokio::net::UdpSocket) -> std::io::Result<UdpNet> {
        // Non-blocking, taken off tokio's reactor.
        let s = s.into_std()?;
        let dup = s.try_clone()?;
        let mut net = UdpNet {
            send: s,
            read: None,
            spare: Some(dup),
            refused: false,
        };
        net.watch(true);
        Ok(net)
    }

    /// Sends one datagram; on a full send buffer, waits for room on a duplicate of the
    /// descriptor registered for writability for that wait only.
    async fn send_to(&self, payload: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        match self.send.send_to(payload, to) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            sent => return sent,
        }
        let wait =
            register(self.send.try_clone()?, Interest::WRITABLE).map_err(|e| e.into_parts().1)?;
        wait.async_io(Interest::WRITABLE, |s| s.send_to(payload, to))
            .await
    }

    /// Registers the socket for readability (`on`), or takes that registration off: one
    /// `epoll_ctl` each way, and only on a change. Registering a socket with datagrams
    /// waiting makes it ready at once (none is missed). False when asked to watch and the
    /// reactor refused: the loop then reads at its timer's turns ([`DEAF_POLL`]), and tries
    /// again at the next turn.
    fn watch(&mut self, on: bool) -> bool {
        if on {
            if let Some(s) = self.spare.take() {
                match register(s, Interest::READABLE) {
                    Ok(r) => {
                        self.read = Some(r);
                        self.refused = false;
                    }
                    Err(e) => {
                        let (s, e) = e.into_parts();
                        if !std::mem::replace(&mut self.refused, true) {
                            tracing::warn!(error = %e, "SIP socket: cannot register for reading, read every few ms");
                        }
                        self.spare = Some(s);
                        return false;
                    }
                }
            }
        } else if let Some(r) = self.read.take() {
            self.spare = Some(r.into_inner());
        }
        true
    }
}

/// `s` registered with the reactor for `interest` only.
fn register(
    s: std::net::UdpSocket,
    interest: Interest,
) -> Result<AsyncFd<std::net::UdpSocket>, tokio::io::unix::AsyncFdRegisterError<std::net::UdpSocket>>
{
    // SAFETY: the socket owns its descriptor, which stays open and the same until the
    // `AsyncFd` is dropped or gives it back (`into_inner`): `UdpSocket::as_raw_fd` returns
    // the one descriptor it was made with.
    unsafe { AsyncFd::register_with_interest(s, interest) }
}

impl Wire {
    fn new(
        net: SipNet,
        framed: mpsc::UnboundedSender<(SocketAddr, wire::Framed)>,
    ) -> std::io::Result<Wire> {
        let net = match net {
            SipNet::Udp(s) => Net::Udp(UdpNet::new(s)?),
            SipNet::Tcp(l) => Net::Tcp(l),
            SipNet::Tls {
                connector,
                name,
                inbound,
            } => Net::Tls {
                connector,
                name,
                inbound,
            },
        };
        Ok(Wire {
            net,
            conns: HashMap::new(),
            framed,
            closed: Arc::default(),
            next_id: 0,
        })
    }

    /// Over UDP, whether the socket is watched for readability ([`UdpNet::watch`]); true
    /// when asked to watch it and it could not be registered.
    fn watch(&mut self, on: bool) -> bool {
        match &mut self.net {
            Net::Udp(u) => !u.watch(on),
            Net::Tcp(_) | Net::Tls { .. } => false,
        }
    }

    /// Sends `payload` to `to`; false when a connection to it could not be had or broke
    /// (a UDP send error is only logged: a datagram may be lost anyway).
    async fn send(&mut self, to: SocketAddr, payload: &[u8]) -> bool {
        use tokio::io::AsyncWriteExt;
        match &self.net {
            Net::Udp(u) => {
                if let Err(e) = u.send_to(payload, to).await {
                    tracing::debug!(error = %e, %to, "SIP send");
                }
                true
            }
            Net::Tcp(_) | Net::Tls { .. } => {
                self.sweep();
                if !self.conns.contains_key(&to) {
                    if let Err(e) = self.connect(to).await {
                        tracing::warn!(error = %e, %to, "SIP: cannot connect");
                        return false;
                    }
                }
                let Some((_, w)) = self.conns.get_mut(&to) else {
                    return false;
                };
                if let Err(e) = w.write_all(payload).await {
                    tracing::debug!(error = %e, %to, "SIP send: the connection is gone");
                    self.conns.remove(&to);
                    return false;
                }
                true
            }
        }
    }

    /// Opens a connection to `to` (TCP, then the TLS handshake with the name checked).
    async fn connect(&mut self, to: SocketAddr) -> std::io::Result<()> {
        let stream = tokio::net::TcpStream::connect(to).await?;
        let _ = stream.set_nodelay(true);
        match &self.net {
            Net::Tls {
                connector, name, ..
            } => {
                let tls = connector.connect(name.clone(), stream).await?;
                let (read, write) = tokio::io::split(tls);
                self.adopt(Box::new(read), Box::new(write), to);
            }
            _ => {
                let (read, write) = stream.into_split();
                self.adopt(Box::new(read), Box::new(write), to);
            }
        }
        Ok(())
    }

    /// A connection: its reader frames messages into the loop; its writer is kept by peer.
    fn adopt(
        &mut self,
        mut read: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        write: Box<dyn tokio::io::AsyncWrite + Unpin + Send + Sync>,
        peer: SocketAddr,
    ) {
        use tokio::io::AsyncReadExt;
        self.sweep();
        self.next_id += 1;
        let id = self.next_id;
        self.conns.insert(peer, (id, write));
        let (tx, closed) = (self.framed.clone(), self.closed.clone());
        tokio::spawn(async move {
            // Framed by Content-Length; a message that frames but does not parse is the
            // endpoint's to answer (400), not the end of the connection (RFC 3261 §18.3).
            let mut parser = wire::Framer::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let n = match read.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        if let Ok(mut c) = closed.lock() {
                            c.push((peer, id));
                        }
                        return;
                    }
                    Ok(n) => n,
                };
                match parser.push(buf.get(..n).unwrap_or_default()) {
                    Ok(messages) => {
                        for m in messages {
                            if tx.send((peer, m)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        // A stream that does not frame cannot be resynchronised (§18.3).
                        tracing::debug!(error = %e, %peer, "SIP: unframeable stream, closed");
                        if let Ok(mut c) = closed.lock() {
                            c.push((peer, id));
                        }
                        return;
                    }
                }
            }
        });
    }

    /// Sends what the endpoint has to send, emptying `out` (its buffer, kept from one turn
    /// to the next). Over UDP all of a turn's datagrams go in one `sendmmsg`, waiting on the
    /// socket only for what a full send buffer refused; a connection that cannot be had is
    /// the endpoint's transport error.
    async fn send_all(&mut self, ep: &mut Endpoint, out: &mut Vec<crieur_sip::Transmit>) {
        out.clear();
        out.extend(std::iter::from_fn(|| ep.poll_transmit()));
        let mut sent = 0;
        if let Net::Udp(u) = &self.net {
            if out.len() > 1 {
                let msgs: Vec<(SocketAddr, &[u8])> = out
                    .iter()
                    .map(|t| (t.destination, &t.payload[..]))
                    .collect();
                sent = match crate::mmsg::send(&u.send, &msgs) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                    Err(e) => {
                        // The first datagram's error, as `send_to` would have logged it.
                        tracing::debug!(error = %e, to = ?out.first().map(|t| t.destination), "SIP send");
                        1
                    }
                };
            }
        }
        for t in out.drain(..).skip(sent) {
            if !self.send(t.destination, &t.payload).await {
                ep.transport_error(Instant::now(), t.destination);
            }
        }
    }

    /// Waits until the UDP socket has a datagram to read (never, over TCP or TLS).
    async fn readable(&self) -> std::io::Result<()> {
        match &self.net {
            Net::Udp(UdpNet { read: Some(r), .. }) => r.readable().await.map(drop),
            Net::Udp(_) | Net::Tcp(_) | Net::Tls { .. } => std::future::pending().await,
        }
    }

    /// Reads what waits on the UDP socket (up to a batch, one `recvmmsg`) into the endpoint;
    /// the number of datagrams taken ([`crate::mmsg::BATCH`]: more may wait).
    fn read_batch(
        &self,
        batch: &mut crate::mmsg::RecvBatch,
        ep: &mut Endpoint,
        now: Instant,
    ) -> usize {
        let Net::Udp(u) = &self.net else {
            return 0;
        };
        // Watched, the reactor's readiness is looked at first (no system call when nothing
        // came); not watched, nothing tracks it: one `recvmmsg`.
        let read = match &u.read {
            Some(r) => batch.read(r),
            None => batch.read_now(&u.send),
        };
        match read {
            Ok(n) => {
                for (d, from) in batch.datagrams() {
                    ep.handle_input(now, from, d);
                }
                n
            }
            Err(e) => {
                tracing::debug!(error = %e, "SIP receive");
                0
            }
        }
    }

    /// A connection the far end opened to our listener (TCP, or TLS handshaken).
    async fn accept(&self) -> std::io::Result<crate::listen::Accepted> {
        match &self.net {
            Net::Tcp(l) => {
                let (stream, peer) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                let (read, write) = stream.into_split();
                Ok(crate::listen::Accepted {
                    read: Box::new(read),
                    write: Box::new(write),
                    peer,
                })
            }
            Net::Tls {
                inbound: Some(i), ..
            } => Ok(i.next().await),
            Net::Udp(_) | Net::Tls { .. } => std::future::pending().await,
        }
    }

    fn accepted(&mut self, a: std::io::Result<crate::listen::Accepted>) {
        match a {
            Ok(a) => self.adopt(a.read, a.write, a.peer),
            Err(e) => tracing::debug!(error = %e, "SIP: accept"),
        }
    }

    /// Drops the write halves of the connections whose readers saw them close: the next
    /// message to that peer opens a new connection (RFC 3261 §18) instead of being written
    /// into a dead one, and a connection the far end opened and closed holds no socket.
    fn sweep(&mut self) {
        let closed = match self.closed.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        for (peer, id) in closed {
            // Only the connection that closed: a newer one to the same peer stays.
            if self.conns.get(&peer).is_some_and(|(i, _)| *i == id) {
                self.conns.remove(&peer);
            }
        }
    }
}

fn command(ep: &mut Endpoint, calls: &mut Calls, c: Command, now: Instant) {
    match c {
        Command::Invite {
            invite,
            events,
            placed,
        } => {
            let r = ep.invite(now, *invite);
            if let Ok(leg) = &r {
                calls.insert(*leg, Route::Task(events));
            }
            let _ = placed.send(r);
        }
        Command::Cancel(leg) => ep.cancel(now, leg),
        Command::Bye(leg, headers) => {
            if let Err(e) = ep.bye(now, leg, &headers) {
                tracing::debug!(error = %e, "BYE");
            }
        }
        Command::HangUp(leg) => ep.hang_up(now, leg),
        Command::Forget(leg) => {
            calls.remove(&leg);
        }
        Command::Request {
            leg,
            method,
            headers,
            body,
        } => {
            let content_type = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
                .map(|(_, v)| v.clone());
            let headers: Vec<Header> = headers
                .into_iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("Content-Type"))
                .collect();
            if let Err(e) = ep.request(now, leg, method, &headers, content_type.as_deref(), body) {
                tracing::debug!(error = %e, "request in the dialog");
                // Another offer pending in the dialog (RFC 3261 §14.1): as a 491, tried again
                // later; anything else: the request could not go.
                let outcome = match e {
                    crieur_sip::Error::NotNow { .. } => crieur_sip::StatusCode::new(491)
                        .map(|s| {
                            SipOutcome::Response(Box::new(Response::new(s, "Request Pending")))
                        })
                        .unwrap_or(SipOutcome::TransportError),
                    _ => SipOutcome::TransportError,
                };
                if let Some(Route::Task(tx)) = calls.get(&leg) {
                    let _ = tx.send(SipEvent::Done {
                        call: leg,
                        request: crieur_sip::RequestRef::none(),
                        outcome,
                    });
                }
            }
        }
        Command::Respond {
            server,
            code,
            headers,
            body,
        } => {
            let content_type = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
                .map(|(_, v)| v.clone());
            let headers: Vec<Header> = headers
                .into_iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("Content-Type"))
                .collect();
            let body = body.unwrap_or_default();
            if let Err(e) = ep.respond(now, server, code, &headers, content_type.as_deref(), body) {
                tracing::debug!(error = %e, "re-INVITE/UPDATE: the transaction is gone");
            }
        }
    }
}

/// The call an event is about.
fn event_call(ev: &SipEvent) -> CallRef {
    match ev {
        SipEvent::Provisional { call, .. }
        | SipEvent::Answered { call, .. }
        | SipEvent::Rejected { call, .. }
        | SipEvent::InviteFailed { call, .. }
        | SipEvent::AckFailed { call, .. }
        | SipEvent::Incoming { call, .. }
        | SipEvent::Request { call, .. }
        | SipEvent::Info { call, .. }
        | SipEvent::Bye { call }
        | SipEvent::Cancelled { call }
        | SipEvent::Acked { call, .. }
        | SipEvent::NoAck { call }
        | SipEvent::Done { call, .. }
        | SipEvent::Terminated { call } => *call,
    }
}

/// Hands the detector's events to the script and the report.
fn amd_events(
    d: &mut Detector,
    script: &mut CallScript,
    report: &mut CallReport,
    now: Instant,
    t0: Instant,
) {
    let at = now.saturating_duration_since(t0);
    while let Some(e) = d.poll_event() {
        let Some(a) = report.amd.as_mut() else {
            continue;
        };
        match e {
            AmdEvent::Verdict(v) => {
                a.verdicts.push((at, v));
                report.timeline.push((
                    at,
                    format!("AMD: {} ({})", v.kind.as_str(), v.cause.as_str()),
                ));
                if v.kind == Kind::Machine {
                    script.handle_machine(now);
                }
            }
            AmdEvent::Beep(b) => {
                a.beeps.push((at, b));
                report
                    .timeline
                    .push((at, format!("AMD: beep {:.0} Hz", b.freq_hz)));
            }
            AmdEvent::Drop(p) => {
                a.drop = Some((at, p));
                report
                    .timeline
                    .push((at, format!("AMD: drop point ({})", p.cause.as_str())));
                script.handle_drop_point(now);
            }
            AmdEvent::Sit(s) => {
                a.sit = Some((at, s));
                let why = format!(
                    "special information tone {} ({:.0}/{:.0}/{:.0} Hz)",
                    s.kind.as_str(),
                    s.segments[0].freq_hz,
                    s.segments[1].freq_hz,
                    s.segments[2].freq_hz
                );
                report.timeline.push((at, format!("AMD: {why}")));
                script.handle_intercepted(now, s.kind.is_temporary(), &why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review-s1mn finding 8: the Call-ID's hand-written hex is `{:032x}`'s.
    #[test]
    fn the_call_id_hex_is_format_s() {
        for n in [
            0u128,
            1,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            let mut s = String::new();
            push_hex_u128(&mut s, n);
            assert_eq!(s, format!("{n:032x}"));
        }
    }

    #[test]
    fn a_response_note_is_code_and_reason_as_format_wrote_it() {
        for code in [100, 180, 183, 200, 404, 487, 503, 699, 0, 99, 1000, 65535] {
            for why in [
                &b"OK"[..],
                b"",
                b"Session Progress",
                b"caf\xc3\xa9",
                b"bad \xff byte",
            ] {
                let old = format!("{code} {}", String::from_utf8_lossy(why));
                assert_eq!(status_note(code, why), old);
            }
        }
    }

    fn parsed_response(s: &str) -> Response {
        match wire::parse(s.replace('\n', "\r\n").as_bytes()) {
            Ok(crieur_sip::Message::Response(r)) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    fn no_prompts(_: Codec) -> [Arc<[u8]>; 3] {
        [Arc::from(&[][..]), Arc::from(&[][..]), Arc::from(&[][..])]
    }

    fn reply(status: &str, extra: &str) -> SipOutcome {
        SipOutcome::Response(Box::new(parsed_response(&head(status, extra))))
    }

    fn head(status: &str, extra: &str) -> String {
        format!("SIP/2.0 {status}\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\nFrom: <sip:a@b>;tag=1\nTo: <sip:c@d>;tag=2\nCall-ID: c\nCSeq: 2 UPDATE\n{extra}Content-Length: 0\n\n")
    }

    /// A refresh answered 491 is retried after 2.1–4 s at most MAX_GLARE_RETRIES times in a
    /// row, then is a failure like a 5xx (a 2xx between starts the count again); a failed
    /// refresh leaves the session's expiry where the last 2xx put it (RFC 4028 §10: only a
    /// 2xx extends it) and is retried only before it.
    #[test]
    fn failed_refreshes_keep_the_expiry_of_the_last_2xx_and_retry_only_before_it() {
        let t0 = Instant::now();
        let secs = |n: u64| tokio::time::Instant::from_std(t0 + Duration::from_secs(n));
        let mut r = SessionRefresh::with_floor(Duration::from_secs(MIN_SESSION_EXPIRES));
        r.we_refresh(Duration::from_secs(90), t0);
        assert_eq!((r.due, r.expires), (Some(secs(45)), Some(secs(90))));
        let glare = || reply("491 Request Pending", "");
        let at = |n: u64| t0 + Duration::from_secs(n);
        for _ in 0..MAX_GLARE_RETRIES {
            let o = r.handled(glare(), at(45), None, &no_prompts);
            assert!(
                !o.session_gone && o.text.contains("retrying in"),
                "{}",
                o.text
            );
            assert!(r.due.is_some_and(|d| d < secs(50)));
        }
        let ok = reply("200 OK", "Session-Expires: 90;refresher=uac\n");
        assert!(!r.handled(ok, at(50), None, &no_prompts).session_gone);
        assert_eq!((r.due, r.expires), (Some(secs(95)), Some(secs(140))));
        for _ in 0..MAX_GLARE_RETRIES {
            assert!(!r.handled(glare(), at(95), None, &no_prompts).session_gone);
        }
        // Past its retries, a 491 is retried a quarter interval later, as a 5xx is.
        let o = r.handled(glare(), at(95), None, &no_prompts);
        assert!(!o.session_gone, "{}", o.text);
        assert_eq!(
            r.due,
            Some(tokio::time::Instant::from_std(
                at(95) + Duration::from_millis(22_500)
            ))
        );
        let o = r.handled(
            reply("500 Server Internal Error", ""),
            at(110),
            None,
            &no_prompts,
        );
        assert!(!o.session_gone && o.text.contains("retrying"), "{}", o.text);
        // The next would come at 140.5 s: past the expiry, not tried; the expiry stays.
        let o = r.handled(
            reply("503 Service Unavailable", ""),
            at(118),
            None,
            &no_prompts,
        );
        assert!(!o.session_gone, "{}", o.text);
        assert_eq!((r.due, r.expires), (None, Some(secs(140))), "{}", o.text);
        // A timeout ends the session at once (§10).
        assert!(
            r.handled(SipOutcome::Timeout, at(120), None, &no_prompts)
                .session_gone
        );
    }

    /// The far end's Session-Expires is clamped to 90 s–1 day: a huge one (which overflowed
    /// `Instant` and panicked the call) and a 1 s one (an UPDATE every 500 ms) are bounded.
    #[test]
    fn a_far_ends_session_expires_is_clamped_and_never_panics() {
        let t0 = Instant::now();
        let huge = "9300000000000000000;refresher=uac";
        assert_eq!(
            parse_session_expires(huge, Duration::from_secs(MIN_SESSION_EXPIRES)),
            Some((Duration::from_secs(86_400), Some("uac".to_owned())))
        );
        assert_eq!(
            parse_session_expires("1;refresher=uas", Duration::from_secs(MIN_SESSION_EXPIRES))
                .map(|(d, _)| d),
            Some(Duration::from_secs(90))
        );
        let answer = head("200 OK", &format!("Session-Expires: {huge}\n"));
        let r = SessionRefresh::from_answer(
            &parsed_response(&answer),
            t0,
            Duration::from_secs(MIN_SESSION_EXPIRES),
        );
        let day = tokio::time::Instant::from_std(t0 + Duration::from_secs(86_400));
        assert_eq!(r.expires, Some(day));
        let answer = head("200 OK", "Session-Expires: 18446744073709551615\n");
        assert!(SessionRefresh::from_answer(
            &parsed_response(&answer),
            t0,
            Duration::from_secs(MIN_SESSION_EXPIRES)
        )
        .expires
        .is_some());
    }

    /// A 2xx to our refresh without Session-Expires turns the timer off (RFC 4028 §7.2: no
    /// expiry, so no BYE of ours at it); with `refresher=uas` the far end refreshes from then
    /// on (no refresh of ours, and the call ends only for want of its refresh).
    #[test]
    fn a_refresh_2xx_without_session_expires_or_naming_the_uas_stops_our_refreshes() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + Duration::from_secs(n);
        let ok = |extra: &str| reply("200 OK", extra);
        let mut r = SessionRefresh::with_floor(Duration::from_secs(MIN_SESSION_EXPIRES));
        r.we_refresh(Duration::from_secs(90), t0);
        assert!(!r.handled(ok(""), at(45), None, &no_prompts).session_gone);
        assert_eq!((r.interval, r.due, r.expires), (None, None, None));

        let mut r = SessionRefresh::with_floor(Duration::from_secs(MIN_SESSION_EXPIRES));
        r.we_refresh(Duration::from_secs(90), t0);
        let o = r.handled(
            ok("Session-Expires: 120;refresher=uas\n"),
            at(45),
            None,
            &no_prompts,
        );
        assert!(!o.session_gone, "{}", o.text);
        // They refresh: ours is off; without theirs the session ends 32 s before 120 s.
        assert_eq!((r.interval, r.due), (None, None));
        assert_eq!(
            r.expires,
            Some(tokio::time::Instant::from_std(at(45 + 120 - 32)))
        );
    }

    /// A refresh answered 422 is sent again at once with the 422's Min-SE as its interval and
    /// a Min-SE header (RFC 4028 §7.4), not the same too-short one until the session
    /// expires; a 422 without Min-SE is a failure like a 5xx.
    #[test]
    fn a_refresh_answered_422_is_retried_with_its_min_se() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + Duration::from_secs(n);
        let mut r = SessionRefresh::with_floor(Duration::from_secs(MIN_SESSION_EXPIRES));
        r.we_refresh(Duration::from_secs(90), t0);
        let o = r.handled(
            reply("422 Session Interval Too Small", "Min-SE: 600\n"),
            at(45),
            None,
            &no_prompts,
        );
        assert!(!o.session_gone && o.text.contains("retrying"), "{}", o.text);
        assert_eq!(r.interval, Some(Duration::from_secs(600)));
        assert_eq!(r.due, Some(tokio::time::Instant::from_std(at(45))));
        assert_eq!(r.min_se, Some(600));
        let mut r = SessionRefresh::with_floor(Duration::from_secs(MIN_SESSION_EXPIRES));
        r.we_refresh(Duration::from_secs(90), t0);
        let o = r.handled(
            reply("422 Session Interval Too Small", ""),
            at(45),
            None,
            &no_prompts,
        );
        assert_eq!(r.interval, Some(Duration::from_secs(90)), "{}", o.text);
        assert_eq!(r.min_se, None);
    }

    /// A far end's re-INVITE we refuse (488 …) is no refresh (RFC 4028 §10): our expiry stays.
    #[test]
    fn a_refused_far_end_refresh_does_not_extend_the_session() {
        let t0 = Instant::now();
        let req = match wire::parse(
            "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKy\r\nFrom: <sip:c@d>;tag=2\r\nTo: <sip:a@b>;tag=1\r\nCall-ID: c\r\nCSeq: 3 INVITE\r\nSession-Expires: 90;refresher=uas\r\nContent-Length: 0\r\n\r\n"
                .as_bytes(),
        ) {
            Ok(crieur_sip::Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        };
        let mut r = SessionRefresh::with_floor(Duration::from_secs(MIN_SESSION_EXPIRES));
        r.we_refresh(Duration::from_secs(90), t0);
        let before = (r.due, r.expires);
        r.on_remote_refresh(&req, 488, t0 + Duration::from_secs(30));
        assert_eq!((r.due, r.expires), before);
        r.on_remote_refresh(&req, 200, t0 + Duration::from_secs(30));
        assert_eq!(
            r.expires,
            Some(tokio::time::Instant::from_std(
                t0 + Duration::from_secs(120)
            ))
        );
    }

    /// An INFO's key is read from its `application/dtmf-relay` body, or from that part of a
    /// `multipart/mixed` body (which the endpoint lets through).
    #[test]
    fn an_infos_key_is_read_from_a_multipart_part_too() {
        let info = |ct: &str, body: &str| {
            let m = format!("INFO sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKi\r\nFrom: <sip:c@d>;tag=2\r\nTo: <sip:a@b>;tag=1\r\nCall-ID: c\r\nCSeq: 4 INFO\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            match wire::parse(m.as_bytes()) {
                Ok(crieur_sip::Message::Request(r)) => r,
                other => panic!("not a request: {other:?}"),
            }
        };
        let relay = "Signal=9\r\nDuration=160\r\n";
        assert_eq!(info_key(&info("application/dtmf-relay", relay)), Some('9'));
        let mixed =
            format!("--b\r\nContent-Type: application/dtmf-relay\r\n\r\n{relay}\r\n--b--\r\n");
        assert_eq!(
            info_key(&info("multipart/mixed;boundary=b", &mixed)),
            Some('9')
        );
        assert_eq!(info_key(&info("text/plain", relay)), None);
    }

    /// A 3xx's reason names its first three Contacts, in at most 256 bytes.
    #[test]
    fn a_redirects_reason_names_three_contacts_at_most_256_bytes() {
        let mut extra = String::new();
        for i in 0..50 {
            extra += &format!("Contact: <sip:+3361234{i:04}@gw{i}.example.net>\n");
        }
        let to = redirect_targets(&parsed_response(&head("302 Moved Temporarily", &extra)));
        assert!(
            to.starts_with("<sip:+33612340000@gw0.example.net>, <sip:+33612340001@"),
            "{to}"
        );
        assert!(!to.contains("gw3."), "{to}");
        let long = format!("Contact: <sip:{}@x.example.net>\n", "9".repeat(600));
        let to = redirect_targets(&parsed_response(&head("302 Moved Temporarily", &long)));
        assert!(to.len() <= MAX_REDIRECT_TEXT + "…".len(), "{}", to.len());
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A call to this number panics in its script at its first provisional response.
    pub(super) const PANICS_AT_RINGING: &str = "+33699999999";

    /// A panic in an inline call's own code (here at its 180, the call ringing inline) is
    /// resumed in its caller, and the call is not left behind: its leg is cancelled at once
    /// (the ring timeout is 120 s: only the panic's handling sends this CANCEL), the 487
    /// ACKed, its RTP pair given back, its loop's count and the loop's `background` back to
    /// nothing — and the loop goes on serving calls.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_panic_in_an_inline_call_cancels_its_leg_and_is_resumed_in_its_caller() {
        use crieur_test_support::scenario::{ringing, ACK, CANCEL_200_487, HEAD, TAIL};
        let scenario = format!(
            "{HEAD}{}  <recv request=\"CANCEL\"/>\n{CANCEL_200_487}{ACK}{TAIL}",
            ringing()
        );
        let mut sipp = crieur_test_support::Sipp::scenario(&scenario)
            .timeout_error()
            .calls(2)
            .start();
        let uac = Arc::new(
            Uac::start(SocketAddr::from((LOCAL, 0)), "crieur-test/0")
                .await
                .unwrap_or_else(|e| panic!("UAC: {e}")),
        );
        let trunk = Trunk {
            address: sipp.addr(),
            domain: None,
            from_user: "+33100000000".into(),
            from_domain: "crieur.test".into(),
            credentials: None,
            ring_timeout: Duration::from_secs(120),
            max_call_length: Duration::from_secs(600),
            symmetric_rtp: false,
            p_asserted_identity: None,
            min_session_expires: Duration::from_secs(MIN_SESSION_EXPIRES),
            servers: Vec::new(),
        };
        let req = |number: &str| CallRequest {
            number: number.into(),
            message: Arc::new(Message::from_samples(&[])),
            confirmation: Arc::new(Message::from_samples(&[])),
            opt_out_key: '9',
            not_interested_key: None,
            keep_received_audio: false,
            stop: None,
            lead_in: Duration::ZERO,
            amd: None,
        };
        let no_hook = |_: char, _: DtmfMethod| -> OptOutFuture { Box::pin(async { Ok(()) }) };
        let (u, t) = (uac.clone(), trunk.clone());
        let call = tokio::spawn(async move {
            u.call(&t, req(PANICS_AT_RINGING), no_hook)
                .await
                .map(|_| ())
        });
        let joined = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("the call's panic never reached its caller"));
        assert!(
            matches!(&joined, Err(e) if e.is_panic()),
            "{:?}",
            joined.map(|r| r.map_err(|e| e.to_string()))
        );
        // CANCEL sent at the panic: its transaction ends well before the ring timeout.
        assert!(uac.wait_background(Duration::from_secs(8)).await);
        let loaded: usize = uac
            .loops
            .iter()
            .map(|l| l.calls.load(Ordering::SeqCst))
            .sum();
        assert_eq!(loaded, 0);
        let ports = uac.loops.iter().map(|l| l.ports.stats());
        assert!(
            ports.clone().all(|p| p.bound == p.closed + p.idle),
            "{:?}",
            ports.collect::<Vec<_>>()
        );
        // The loop goes on: a second call rings and is cancelled by its caller going.
        let second = uac.call(&trunk, req("+33612345678"), no_hook);
        assert!(tokio::time::timeout(Duration::from_secs(1), second)
            .await
            .is_err());
        assert!(uac.wait_background(Duration::from_secs(8)).await);
        assert!(sipp.succeeded());
    }

    /// A trunk to `addr` for the tests of calls handed ahead.
    fn ahead_trunk(addr: SocketAddr) -> Trunk {
        Trunk {
            address: addr,
            domain: None,
            from_user: "+33100000000".into(),
            from_domain: "crieur.test".into(),
            credentials: None,
            ring_timeout: Duration::from_secs(15),
            max_call_length: Duration::from_secs(60),
            symmetric_rtp: false,
            p_asserted_identity: None,
            min_session_expires: Duration::from_secs(MIN_SESSION_EXPIRES),
            servers: Vec::new(),
        }
    }

    /// A call whose script ends at its answer (an empty message): INVITE, 180, 200, ACK, BYE.
    fn short_call(n: usize, stop: Option<CancellationToken>) -> CallRequest {
        CallRequest {
            number: format!("+336{n:08}"),
            message: Arc::new(Message::from_samples(&[])),
            confirmation: Arc::new(Message::from_samples(&[])),
            opt_out_key: '9',
            not_interested_key: None,
            keep_received_audio: false,
            stop,
            lead_in: Duration::ZERO,
            amd: None,
        }
    }

    fn no_hook(_: char, _: DtmfMethod) -> OptOutFuture {
        Box::pin(async { Ok(()) })
    }

    /// RTP pairs taken so far across the loops: one per call placed (its INVITE's offer).
    fn pairs_taken(uac: &Uac) -> u64 {
        let s = uac.rtp_pairs();
        s.bound + s.reused
    }

    fn counted(uac: &Uac) -> Vec<usize> {
        uac.loops
            .iter()
            .map(|l| l.calls.load(Ordering::SeqCst))
            .collect()
    }

    /// sipp answering `calls` calls (ringing, 200, ACK, our BYE) with `args`, and a UAC of
    /// `loops` loop threads with a trunk to it.
    async fn ahead_setup(
        calls: usize,
        loops: usize,
        args: &[&str],
    ) -> (crieur_test_support::Sipp, Arc<Uac>, Trunk) {
        use crieur_test_support::scenario::{answer_scenario, BYE_200};
        ahead_setup_with(&answer_scenario("0", BYE_200), calls, loops, args).await
    }

    /// [`ahead_setup`] with sipp playing `scenario`.
    async fn ahead_setup_with(
        scenario: &str,
        calls: usize,
        loops: usize,
        args: &[&str],
    ) -> (crieur_test_support::Sipp, Arc<Uac>, Trunk) {
        let sipp = crieur_test_support::Sipp::scenario(scenario)
            .timeout_error()
            .calls(calls)
            .args(args)
            .start();
        let uac = Uac::start_udp(
            SocketAddr::from((LOCAL, 0)),
            "crieur-test/0",
            1 << 20,
            loops,
        )
        .await
        .unwrap_or_else(|e| panic!("UAC: {e}"));
        let trunk = ahead_trunk(sipp.addr());
        (sipp, Arc::new(uac), trunk)
    }

    /// Every call's report, each answered and completed.
    async fn all_completed(calls: Vec<tokio::task::JoinHandle<Result<CallReport, Error>>>) {
        for c in calls {
            let r = c
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_completed(&r);
        }
    }

    fn assert_completed(r: &CallReport) {
        assert_eq!(
            r.ending.outcome,
            Outcome::AnsweredCompleted,
            "{:?}",
            r.timeline
        );
    }

    /// Calls placed at once ([`Uac::call`]) one after another at 500 calls/s — a caller placing
    /// each when due, as the campaign runner does — make the loop tick ([`CALLS_COMING`]): it
    /// waits about once per 4 ms tick for the calls and their datagrams together, not once or
    /// more per call (handed over, 180, 200, the BYE's 200: ~2–4 waits per call when it
    /// watched its socket). Every call completes; then, the calls no longer coming, a lone
    /// call is placed and completes as before.
    #[tokio::test(flavor = "multi_thread")]
    async fn calls_placed_at_once_while_they_keep_coming_make_the_loop_tick() {
        const CALLS: usize = 100;
        let (mut sipp, uac, trunk) = ahead_setup(CALLS + 1, 1, &[]).await;
        let waits0 = uac.sip_loop_waits();
        let t0 = Instant::now();
        let mut calls = Vec::new();
        for i in 0..CALLS {
            tokio::time::sleep_until((t0 + Duration::from_millis(2) * i as u32).into()).await;
            let (u, t) = (uac.clone(), trunk.clone());
            calls.push(tokio::spawn(async move {
                u.call(&t, short_call(i, None), no_hook).await
            }));
        }
        all_completed(calls).await;
        let waits = uac.sip_loop_waits() - waits0;
        // 200 ms of calls: ~50 ticks, and the last calls' ends (ticking 24 ms more, then
        // watching): 53 in a run; with `CALLS_COMING` 0 (never ticking for them), 133.
        assert!(
            waits < CALLS as u64 * 3 / 4,
            "{waits} waits of the loop for {CALLS} calls"
        );
        tokio::time::sleep(CALLS_COMING * 2).await;
        let lone = uac.call(&trunk, short_call(CALLS, None), no_hook).await;
        assert_completed(&lone.unwrap_or_else(|e| panic!("{e}")));
        assert!(uac.wait_background(Duration::from_secs(8)).await);
        assert!(sipp.succeeded());
    }

    /// Calls handed ahead ([`Uac::call_at`]) in one go are held by their loop and placed each
    /// at its start — not before (no RTP pair taken, no INVITE) and not long after — and go
    /// on to their ends as any call.
    #[tokio::test(flavor = "multi_thread")]
    async fn calls_handed_ahead_are_placed_at_their_start_not_before() {
        const CALLS: usize = 3;
        let (mut sipp, uac, trunk) = ahead_setup(CALLS, 1, &[]).await;
        let gap = Duration::from_millis(200);
        let first = Instant::now() + Duration::from_millis(400);
        let starts: Vec<Instant> = (0..CALLS).map(|i| first + gap * i as u32).collect();
        let calls: Vec<_> = starts
            .iter()
            .enumerate()
            .map(|(i, &at)| {
                let (u, t) = (uac.clone(), trunk.clone());
                tokio::spawn(async move { u.call_at(&t, short_call(i, None), at, no_hook).await })
            })
            .collect();
        // Just before each start, exactly the calls before it have been placed; just after,
        // it has too. (A look made late, past the start, tells nothing and is skipped.)
        let margin = Duration::from_millis(60);
        let mut looked = 0;
        for (i, &at) in starts.iter().enumerate() {
            tokio::time::sleep_until((at - margin).into()).await;
            let placed = pairs_taken(&uac);
            if Instant::now() < at {
                assert_eq!(placed, i as u64, "before the start of call {i}");
                if i == 0 {
                    assert_eq!(counted(&uac), vec![CALLS], "held calls count on their loop");
                }
                looked += 1;
            }
            tokio::time::sleep_until((at + margin).into()).await;
            assert_eq!(
                pairs_taken(&uac),
                i as u64 + 1,
                "after the start of call {i}"
            );
        }
        assert!(looked > 0, "every look came too late to tell");
        all_completed(calls).await;
        assert!(sipp.succeeded());
    }

    /// With a call handed ahead starting within a tick the loop ticks, its timer due on the
    /// 4 ms grid and never earlier (a start 3.5 ms away too: at 250 calls/s and more handed
    /// ahead, one wake-up per tick places the calls and reads the datagrams); with none, or
    /// the next start further, its timer is its earliest deadline, as before.
    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; nothing is timed
    fn the_loop_ticks_on_a_4_ms_grid_while_a_held_call_starts_within_a_tick_or_calls_keep_coming() {
        let ms = |n: u64| Duration::from_micros(n * 100);
        let epoch = Instant::now();
        // 6.1 ms in: the next tick is at 8 ms.
        let now = epoch + ms(61);
        // A start 3.5 ms away, the endpoint due sooner: ticking, due at the 8 ms tick.
        assert_eq!(
            ticking(Some(now + ms(2)), Some(now + ms(35)), false, epoch, now),
            (true, Some(epoch + ms(80)))
        );
        // Something due past the tick stays as it is.
        assert_eq!(
            ticking(Some(now + ms(25)), Some(now + ms(35)), false, epoch, now),
            (true, Some(now + ms(25)))
        );
        // Due already: at the next tick.
        assert_eq!(
            ticking(Some(now - ms(5)), Some(now - ms(5)), false, epoch, now),
            (true, Some(epoch + ms(80)))
        );
        // Exactly on a tick: the one after.
        assert_eq!(
            ticking(
                Some(epoch + ms(80)),
                Some(epoch + ms(80)),
                false,
                epoch,
                epoch + ms(80)
            ),
            (true, Some(epoch + ms(120)))
        );
        // No held call, or the next start 5 ms away (200 calls/s): no tick, due as due.
        assert_eq!(
            ticking(Some(now + ms(2)), None, false, epoch, now),
            (false, Some(now + ms(2)))
        );
        assert_eq!(
            ticking(Some(now + ms(2)), Some(now + ms(50)), false, epoch, now),
            (false, Some(now + ms(2)))
        );
        // Calls placed at once coming: ticking, the timer at the next tick whatever is due
        // (sooner, later, or nothing: the socket is read there).
        for due in [Some(now + ms(2)), Some(now + ms(25)), None] {
            assert_eq!(
                ticking(due, None, true, epoch, now),
                (true, Some(epoch + ms(80)))
            );
        }
    }

    /// A call handed ahead whose caller goes before its start, or whose stop token is
    /// cancelled then, places nothing: no INVITE reaches the trunk, no RTP pair is taken, and
    /// it no longer counts on its loop; the stopped one ends `local-shutdown`, not placed. A
    /// call placed after them reaches the trunk (the loop and the trace work).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_call_handed_ahead_and_given_up_before_its_start_places_nothing() {
        let (mut sipp, uac, trunk) = ahead_setup(1, 1, &["-trace_msg"]).await;
        let at = Instant::now() + Duration::from_millis(500);
        // Given up: the caller's future dropped 100 ms in.
        let gone = tokio::time::timeout(
            Duration::from_millis(100),
            uac.call_at(&trunk, short_call(1, None), at, no_hook),
        )
        .await;
        assert!(
            gone.is_err(),
            "ended before its start: {:?}",
            gone.map(|r| r.is_ok())
        );
        // Stopped: its token cancelled 100 ms in.
        let stop = CancellationToken::new();
        let (r, ()) = tokio::join!(
            uac.call_at(&trunk, short_call(2, Some(stop.clone())), at, no_hook),
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                stop.cancel();
            }
        );
        let r = r.unwrap_or_else(|e| panic!("{e}"));
        assert!(Instant::now() < at, "the stopped call waited for its start");
        assert_eq!(r.ending.outcome, Outcome::LocalShutdown);
        assert_eq!(r.rtp_local, None, "{:?}", r.timeline);
        // Past their start: nothing placed, nothing counted.
        tokio::time::sleep_until((at + Duration::from_millis(200)).into()).await;
        assert_eq!(pairs_taken(&uac), 0);
        assert_eq!(counted(&uac), vec![0]);
        assert!(!sipp.messages().contains("INVITE"), "{}", sipp.messages());
        // The control: a call placed now reaches the trunk.
        let r = uac
            .call(&trunk, short_call(3, None), no_hook)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_completed(&r);
        assert!(sipp.succeeded());
        assert!(sipp.messages().contains("INVITE"), "{}", sipp.messages());
    }

    /// A batch handed ahead larger than a loop's fill stays on the first loop: up to
    /// [`Shard::FILL`] calls held until their start do not count toward it (a window handed
    /// ahead beside the calls in flight would otherwise open the second loop), every call
    /// placed at its start there.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_handed_ahead_stays_on_the_first_loop() {
        const CALLS: usize = 80;
        let (mut sipp, uac, trunk) = ahead_setup(CALLS, 2, &[]).await;
        let first = Instant::now() + Duration::from_millis(500);
        let calls: Vec<_> = (0..CALLS)
            .map(|i| {
                let (u, t) = (uac.clone(), trunk.clone());
                let at = first + Duration::from_millis(i as u64);
                tokio::spawn(async move { u.call_at(&t, short_call(i, None), at, no_hook).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() < first {
            assert_eq!(pairs_taken(&uac), 0, "placed before their start");
            assert_eq!(counted(&uac), vec![CALLS, 0], "counted at the hand-off");
        }
        all_completed(calls).await;
        assert_eq!(placed_per_loop(&uac), vec![CALLS, 0], "placed");
        assert!(sipp.succeeded());
    }

    /// A batch handed ahead of more than twice [`Shard::FILL`] spans the loops: the held
    /// calls past the first `FILL` count toward the fill, so the first loop takes
    /// about `2 × FILL` (a few either side: the hand-offs race) and the rest go to the second.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_batch_handed_ahead_past_twice_the_fill_spans_the_loops() {
        const MORE: usize = 32;
        const CALLS: usize = 2 * Shard::FILL + MORE;
        let (mut sipp, uac, trunk) = ahead_setup(CALLS, 2, &[]).await;
        let first = Instant::now() + Duration::from_millis(1500);
        let calls: Vec<_> = (0..CALLS)
            .map(|i| {
                let (u, t) = (uac.clone(), trunk.clone());
                let at = first + Duration::from_micros(200 * i as u64);
                tokio::spawn(async move { u.call_at(&t, short_call(i, None), at, no_hook).await })
            })
            .collect();
        // All handed over before the first start.
        let until = Instant::now() + Duration::from_millis(1200);
        while counted(&uac).iter().sum::<usize>() < CALLS && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(Instant::now() < first, "not handed over in time");
        assert_eq!(pairs_taken(&uac), 0, "placed before their start");
        // The hand-offs run on several worker threads at once and `pick` reads the counts
        // before its call is added (and a loop's two counts a call apart): a few calls
        // either side of `2 × FILL` may land on the first loop. Without the rule all go there.
        let at_hand_off = counted(&uac);
        assert_eq!(at_hand_off.iter().sum::<usize>(), CALLS, "{at_hand_off:?}");
        assert!(
            at_hand_off[0] + 4 >= 2 * Shard::FILL && at_hand_off[0] <= 2 * Shard::FILL + 8,
            "the first loop takes about 2 × FILL: {at_hand_off:?}"
        );
        assert!(
            at_hand_off[1] + 8 >= MORE,
            "the rest on the second: {at_hand_off:?}"
        );
        all_completed(calls).await;
        assert_eq!(placed_per_loop(&uac), at_hand_off, "placed where counted");
        assert!(sipp.succeeded());
    }

    /// [`Shard::FILL`] calls in progress on the first loop (ringing) send the next calls —
    /// handed ahead or at once — to the second, each placed there.
    #[tokio::test(flavor = "multi_thread")]
    async fn calls_in_progress_past_the_fill_open_the_second_loop() {
        use crieur_test_support::scenario::{response, ringing, ACK, BYE_200, HEAD, TAIL};
        const MORE: usize = 16;
        let calls = Shard::FILL + MORE;
        // Rings for 4 s before answering: the first calls are all in progress together.
        let scenario = format!(
            "{HEAD}{}  <pause milliseconds=\"4000\"/>\n{}{ACK}{BYE_200}{TAIL}",
            ringing(),
            response("200 OK", "", Some("0"))
        );
        let (mut sipp, uac, trunk) = ahead_setup_with(&scenario, calls, 2, &[]).await;
        let call = |i: usize, at: Option<Instant>| {
            let (u, t) = (uac.clone(), trunk.clone());
            tokio::spawn(async move {
                match at {
                    Some(at) => u.call_at(&t, short_call(i, None), at, no_hook).await,
                    None => u.call(&t, short_call(i, None), no_hook).await,
                }
            })
        };
        let mut handles: Vec<_> = (0..Shard::FILL).map(|i| call(i, None)).collect();
        // Every one placed and none ended (they ring for 4 s; a loaded machine may take a
        // while to place them: the check below shows how many were).
        let until = Instant::now() + Duration::from_secs(3);
        while pairs_taken(&uac) < Shard::FILL as u64 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            placed_per_loop(&uac),
            vec![Shard::FILL, 0],
            "the first calls"
        );
        assert_eq!(counted(&uac), vec![Shard::FILL, 0], "the first calls");
        // The next: half handed ahead, half at once.
        let at = Instant::now() + Duration::from_millis(200);
        handles.extend((Shard::FILL..calls).map(|i| call(i, (i % 2 == 0).then_some(at))));
        all_completed(handles).await;
        assert_eq!(placed_per_loop(&uac), vec![Shard::FILL, MORE], "placed");
        assert!(sipp.succeeded());
    }

    /// RTP pairs taken on each loop: one per call placed there.
    fn placed_per_loop(uac: &Uac) -> Vec<usize> {
        uac.loops
            .iter()
            .map(|l| {
                let s = l.ports.stats();
                (s.bound + s.reused) as usize
            })
            .collect()
    }

    /// The epoll interests registered for `fd` in this process (every epoll instance's
    /// `/proc/self/fdinfo` lists its registrations: `tfd: <fd> events: <hex mask> …`).
    /// Every epoll instance of the test process is read: a registration left by another
    /// test for a descriptor since closed and whose number was reused would be counted.
    /// None is today (the only duplicates, `UdpNet`'s, are deregistered before they are
    /// closed); a test duplicating descriptors without doing so would make this flaky.
    fn epoll_interests(fd: i32) -> Vec<u32> {
        let mut found = Vec::new();
        let Ok(fds) = std::fs::read_dir("/proc/self/fdinfo") else {
            return found;
        };
        for e in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            for line in info.lines().filter(|l| l.starts_with("tfd:")) {
                let w: Vec<&str> = line.split_whitespace().collect();
                if w.get(1).and_then(|t| t.parse::<i32>().ok()) == Some(fd) {
                    if let Some(m) = w.get(3).and_then(|m| u32::from_str_radix(m, 16).ok()) {
                        found.push(m);
                    }
                }
            }
        }
        found
    }

    /// Whether any registration of `fd` asks for readability (`EPOLLIN`).
    fn watched_for_reading(fd: i32) -> bool {
        epoll_interests(fd)
            .iter()
            .any(|m| m & libc::EPOLLIN as u32 != 0)
    }

    /// The SIP loop's UDP socket is registered for readability only while watched: not
    /// watched (the loop ticking on its timer), a datagram wakes no thread — the socket's
    /// descriptors have no `EPOLLIN` registration (tokio's own `UdpSocket` always has one)
    /// — and what came meanwhile is read at once, by the unregistered read or when watched
    /// again (registering a socket with datagrams waiting makes it ready).
    #[tokio::test]
    async fn the_sip_socket_is_registered_for_reading_only_while_watched() {
        use std::os::fd::AsRawFd;
        let sock = tokio::net::UdpSocket::bind((LOCAL, 0))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            watched_for_reading(sock.as_raw_fd()),
            "tokio's UdpSocket: {:x?}",
            epoll_interests(sock.as_raw_fd())
        );
        let addr = sock.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut u = UdpNet::new(sock).unwrap_or_else(|e| panic!("{e}"));
        let send_fd = u.send.as_raw_fd();
        let fds = |u: &UdpNet| {
            [
                Some(send_fd),
                u.read.as_ref().map(AsRawFd::as_raw_fd),
                u.spare.as_ref().map(AsRawFd::as_raw_fd),
            ]
        };
        let reading = |u: &UdpNet| fds(u).into_iter().flatten().any(watched_for_reading);
        assert!(
            epoll_interests(send_fd).is_empty(),
            "the descriptor sent on is not registered: {:x?}",
            epoll_interests(send_fd)
        );
        assert!(reading(&u), "watched from the start");
        u.watch(false);
        assert!(!reading(&u), "not watched: {:?}", fds(&u));
        let peer = std::net::UdpSocket::bind((LOCAL, 0)).unwrap_or_else(|e| panic!("{e}"));
        let mut batch = crate::mmsg::RecvBatch::default();
        peer.send_to(b"one", addr).unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let read = batch.read_now(&u.send).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, 1, "read while not watched");
        peer.send_to(b"two", addr).unwrap_or_else(|e| panic!("{e}"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        u.watch(true);
        assert!(reading(&u), "watched again");
        let r = u.read.as_ref().unwrap_or_else(|| panic!("watched"));
        tokio::time::timeout(Duration::from_secs(1), r.readable())
            .await
            .unwrap_or_else(|_| panic!("the datagram that came meanwhile is not seen"))
            .unwrap_or_else(|e| panic!("{e}"))
            .retain_ready();
        assert_eq!(batch.read(r).unwrap_or_else(|e| panic!("{e}")), 1);
        let got: Vec<&[u8]> = batch.datagrams().map(|(d, _)| d).collect();
        assert_eq!(got, vec![&b"two"[..]]);
    }

    fn stats(p: &RtpPorts) -> (u64, u64, u64, u64) {
        let s = p.stats();
        (s.bound, s.reused, s.closed, s.idle)
    }

    /// A pair given back is handed out again only after the quiet time, and then the same
    /// port, with what its previous far end sent in the meantime read and dropped.
    #[tokio::test]
    async fn a_pair_is_reused_after_the_quiet_time_with_its_stale_packets_dropped() {
        let ports = RtpPorts::with_cap(4);
        let t0 = Instant::now();
        let a = ports.take(LOCAL, t0).unwrap_or_else(|e| panic!("{e}"));
        let port = a.local.port();
        assert_eq!(port % 2, 0, "RTP on an even port");
        assert_eq!(
            a.rtcp.local_addr().map(|l| l.port()).ok(),
            Some(port + 1),
            "RTCP on the next"
        );
        ports.give_back(a, t0);
        // A late packet of the ended call.
        let far = std::net::UdpSocket::bind((LOCAL, 0)).unwrap_or_else(|e| panic!("{e}"));
        far.send_to(b"late", (LOCAL, port))
            .unwrap_or_else(|e| panic!("{e}"));
        let b = ports
            .take(LOCAL, t0 + RtpPorts::QUIET / 2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(b.local.port(), port, "not before the quiet time");
        assert_eq!(stats(&ports), (2, 0, 0, 1));
        // The loop thread's reactor looks at the sockets whenever the loop waits (here: this
        // sleep); a pair is drained only if it saw the pair readable.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = ports
            .take(LOCAL, t0 + RtpPorts::QUIET)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.local.port(), port);
        assert_eq!(stats(&ports), (2, 1, 0, 0));
        let mut buf = [0u8; 16];
        assert!(
            c.rtp.recv_from(&mut buf).is_err(),
            "the stale packet is gone"
        );
    }

    /// The pool keeps at most its cap, closes what is beyond, and closes pairs idle longer
    /// than `MAX_AGE` when it is next used.
    #[tokio::test]
    async fn the_pool_is_bounded_and_shrinks_when_idle() {
        let ports = RtpPorts::with_cap(2);
        let t0 = Instant::now();
        let pairs: Vec<RtpPair> = (0..3)
            .map(|_| ports.take(LOCAL, t0).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        for p in pairs {
            ports.give_back(p, t0);
        }
        assert_eq!(stats(&ports), (3, 0, 1, 2), "the third is closed");
        let later = t0 + RtpPorts::MAX_AGE + Duration::from_secs(1);
        let fresh = ports.take(LOCAL, later).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stats(&ports), (4, 0, 3, 0), "the two idle pairs expired");
        ports.give_back(fresh, later);
        assert_eq!(ports.stats().idle, 1);
    }

    /// Half the soft open-file limit across the loops, two descriptors a pair; bounded both
    /// ways.
    #[test]
    fn the_cap_follows_the_open_file_limit() {
        let limit = open_file_limit();
        let one = RtpPorts::new(1).max_idle;
        let two = RtpPorts::new(2).max_idle;
        match limit {
            Some(n) => {
                let want =
                    |loops: usize| (n / 4 / loops).clamp(RtpPorts::MIN_IDLE, RtpPorts::MAX_IDLE);
                assert_eq!((one, two), (want(1), want(2)));
            }
            None => assert_eq!((one, two), (RtpPorts::MAX_IDLE, RtpPorts::MAX_IDLE)),
        }
        assert!(RtpPorts::new(1_000_000).max_idle >= RtpPorts::MIN_IDLE);
    }
}
