//! The I/O edge: a SIP user agent client (rsipstack, UDP) and the call's RTP socket, driving
//! the sans-IO [`CallScript`], [`Packetizer`] and DTMF detectors.
//!
//! One [`Uac`] serves many concurrent calls: one SIP endpoint and dialog layer, one task that
//! answers in-dialog requests, and per call one RTP socket and one task.

// The I/O edge is where the clock is read; the cores it drives take `now` as input.
#![allow(clippy::disallowed_methods)]

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{
    DialogState, DialogStateReceiver, TerminatedReason, TransactionHandle,
};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, Request, Response, StatusCode, Transport, Uri};
use rsipstack::transaction::endpoint::EndpointOption;
use rsipstack::transaction::{CallIdFormat, TransactionReceiver};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use rsipstack::EndpointBuilder;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::amd::{AmdEvent, AmdParams, Beep, Detector, DropPoint, Kind, Verdict};
use crate::audio::Message;
use crate::call::{Action, AmdMode, CallScript, Ending, HangupBy, Outcome, Prompt, ScriptConfig};
use crate::dtmf::{parse_sip_info, DtmfMethod};
use crate::g711::Codec;
use crate::pacer::{Pacer, StreamEvent};
use crate::rtp::{self, Packetizer};
use crate::sdp::{self, LocalSdp, RemoteSdp};
use crate::session::{Media, RtcpSummary};
use crate::signalling::{self, AckViaFix};
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
    /// The trunk's address (UDP).
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
}

impl Trunk {
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

/// A SIP UAC bound to one local address, placing any number of concurrent calls.
pub struct Uac {
    layer: Arc<DialogLayer>,
    local: SocketAddr,
    buffers: (usize, usize),
    pacer: Arc<Pacer>,
    /// CANCEL and BYE transactions still running after their call ended.
    background: TaskTracker,
    token: CancellationToken,
    _endpoint: rsipstack::transaction::endpoint::Endpoint,
}

impl Drop for Uac {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl Uac {
    /// Binds the SIP UDP socket at `bind` (port 0 for any) and starts the stack, with
    /// [`SIP_SOCKET_BUFFER`] asked for as the socket's receive and send buffers.
    pub async fn start(bind: SocketAddr, user_agent: &str) -> Result<Uac, Error> {
        Self::start_with_buffer(bind, user_agent, SIP_SOCKET_BUFFER).await
    }

    /// [`Uac::start`] with `buffer` bytes asked for as the SIP socket's `SO_RCVBUF` and
    /// `SO_SNDBUF`. The kernel caps the request at `net.core.rmem_max` / `wmem_max`; a capped
    /// request is logged, and [`Uac::sip_socket_buffers`] tells what was granted.
    pub async fn start_with_buffer(
        bind: SocketAddr,
        user_agent: &str,
        buffer: usize,
    ) -> Result<Uac, Error> {
        let sip = |what: &'static str| {
            move |source| Error::Sip {
                what,
                source: Box::new(source),
            }
        };
        if bind.ip().is_unspecified() {
            // Via, Contact and SDP carry the bound address: it must be one the trunk can reach.
            return Err(Error::Config {
                field: "bind",
                why: format!("{bind}: bind to the address that reaches the trunk, not a wildcard"),
            });
        }
        let token = CancellationToken::new();
        let tl = TransportLayer::new(token.child_token());
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(bind),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // A burst of responses at a high call rate overflows the default receive buffer
        // (~208 KiB): the kernel drops them and every loss costs a retransmission timer.
        socket.set_recv_buffer_size(buffer)?;
        socket.set_send_buffer_size(buffer)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bind.into())?;
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
        let socket = Arc::new(tokio::net::UdpSocket::from_std(socket.into())?);
        let udp = UdpConnection::from_socket(socket, None, Some(token.child_token()))
            .await
            .map_err(sip("opening the SIP socket"))?;
        let local = udp
            .get_addr()
            .get_socketaddr()
            .map_err(sip("reading the SIP socket's address"))?;
        tl.add_transport(udp.into());
        let endpoint = EndpointBuilder::new()
            .with_user_agent(user_agent)
            .with_inspector(Box::new(AckViaFix::default()))
            .with_transport_layer(tl)
            .with_cancel_token(token.child_token())
            // Call-IDs are ours (set per call); this only governs REGISTER and the like.
            .with_option(EndpointOption {
                callid_format: CallIdFormat::Uuid,
                ..Default::default()
            })
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(sip("taking the incoming transactions"))?;
        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                tracing::warn!(error = %e, "SIP endpoint stopped");
            }
        });
        let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        tokio::spawn(incoming_loop(layer.clone(), incoming));
        Ok(Uac {
            layer,
            local,
            buffers,
            pacer: Arc::new(Pacer::per_core()?),
            background: TaskTracker::new(),
            token,
            _endpoint: endpoint,
        })
    }

    /// The RTP pacer every call of this UAC sends through.
    pub fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Waits up to `limit` for the CANCEL and BYE transactions of ended calls to finish (a
    /// BYE to a vanished peer retransmits for 32 s, timer F). Call before dropping the `Uac`
    /// at exit, so a lost BYE still gets its retransmissions. True if none is left.
    pub async fn wait_background(&self, limit: Duration) -> bool {
        self.background.close();
        let done = tokio::time::timeout(limit, self.background.wait())
            .await
            .is_ok();
        self.background.reopen();
        done
    }

    /// The local SIP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The SIP socket's receive and send buffers as granted by the kernel, in bytes.
    pub fn sip_socket_buffers(&self) -> (usize, usize) {
        self.buffers
    }

    /// Places one call and runs its script to the end. `on_opt_out` is called when the
    /// opt-out key is heard; the confirmation plays only after its future completes `Ok`.
    pub async fn call(
        &self,
        trunk: &Trunk,
        req: CallRequest,
        on_opt_out: impl FnOnce(char, DtmfMethod) -> OptOutFuture,
    ) -> Result<CallReport, Error> {
        trunk.validate()?;
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
            if a.mode == AmdMode::VoicemailDrop && a.voicemail.as_ref().is_none_or(|v| v.is_empty())
            {
                return Err(Error::Config {
                    field: "amd.voicemail_message",
                    why: "voicemail-drop needs a voicemail message".into(),
                });
            }
        }
        // RTP on an even port, RTCP on the next (RFC 3550 §11). The pacer sends on the RTP
        // socket and this task receives on both. They are registered with the reactor for
        // reading only: with write interest, every packet the pacer sends would wake the
        // reactor (each freed send buffer is an edge-triggered EPOLLOUT) — measured at a
        // third of the process's CPU in S2 (docs/media.md).
        let (rtp_send, rtcp_send) = bind_rtp_pair(self.local.ip())?;
        let (rtp_send, rtcp_send) = (Arc::new(rtp_send), Arc::new(rtcp_send));
        // SAFETY: each `AsyncFd` owns a clone of its `Arc`, so the socket — and its fd — stays
        // open for the `AsyncFd`'s whole life, and a `UdpSocket`'s fd never changes.
        let rtp_sock =
            unsafe { AsyncFd::register_with_interest(rtp_send.clone(), Interest::READABLE) }
                .map_err(|e| Error::Io(e.into()))?;
        let rtcp_sock =
            unsafe { AsyncFd::register_with_interest(rtcp_send.clone(), Interest::READABLE) }
                .map_err(|e| Error::Io(e.into()))?;
        let rtp_local = rtp_send.local_addr()?;
        let (pacer_tx, mut pacer_rx) = mpsc::unbounded_channel();
        let call_id = format!("{:032x}@{}", rand::random::<u128>(), self.local.ip());
        let mut local_sdp = LocalSdp::new(rtp_local, rand::random::<u32>().into());
        let offer = local_sdp.offer();
        let uri = |s: String| {
            Uri::try_from(s.as_str()).map_err(|source| Error::BadUri {
                uri: s,
                source: Box::new(source),
            })
        };
        let domain = trunk
            .domain
            .clone()
            .unwrap_or_else(|| trunk.address.to_string());
        let opt = InviteOption {
            caller: uri(signalling::sip_uri(&trunk.from_user, &trunk.from_domain))?,
            // Request-URI and To.
            callee: uri(signalling::sip_uri(&req.number, &domain))?,
            contact: uri(format!("sip:{}@{}", trunk.from_user, self.local))?,
            destination: Some(SipAddr::new(Transport::Udp, trunk.address.into())),
            content_type: Some("application/sdp".into()),
            offer: Some(offer.into_bytes()),
            call_id: Some(call_id.clone()),
            headers: Some(signalling::invite_headers(
                trunk
                    .p_asserted_identity
                    .as_deref()
                    .and_then(signalling::p_asserted_identity)
                    .as_deref(),
            )),
            credential: trunk.credentials.as_ref().map(|c| Credential {
                username: c.username.clone(),
                password: c.password.clone(),
                realm: None,
                auth_username: None,
            }),
            ..Default::default()
        };

        let t0 = Instant::now();
        let mut script = CallScript::new(
            t0,
            ScriptConfig {
                ring_timeout: trunk.ring_timeout,
                max_call_length: trunk.max_call_length,
                opt_out_key: req.opt_out_key,
                not_interested_key: req.not_interested_key,
                amd: req.amd.as_ref().map_or(AmdMode::Off, |a| a.mode),
            },
        );
        let (state_tx, state_rx) = self.layer.new_dialog_state_channel();
        let (dialog, invite) = self
            .layer
            .do_invite_async(opt, state_tx)
            .map_err(|source| Error::Sip {
                what: "sending the INVITE",
                source: Box::new(source),
            })?;
        let (sip_tx, mut sip_rx) = mpsc::unbounded_channel();
        tokio::spawn(watch_states(self.layer.clone(), state_rx, sip_tx.clone()));
        let mut invite = Some(invite);

        let mut report = CallReport {
            call_id,
            ending: Ending {
                outcome: Outcome::LocalShutdown,
                sip_status: None,
                reason: String::new(),
                hangup_by: HangupBy::Nobody,
            },
            timeline: vec![(Duration::ZERO, format!("INVITE sent to {}", trunk.address))],
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
            rtp_local: Some(rtp_local),
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
        };
        let mut detector: Option<Detector> = None;
        let at = |t: Instant| t.saturating_duration_since(t0);
        let mut on_opt_out = Some(on_opt_out);
        let mut media: Option<Media> = None;
        let mut opt_out_done: Option<tokio::task::JoinHandle<Result<(), OptOutError>>> = None;
        let mut refresh = SessionRefresh::default();
        let mut buf = vec![0u8; 2048];
        let mut rtcp_buf = vec![0u8; 1500];
        let mut stopping = false;
        let lead_in_packets = req.lead_in.as_micros().div_ceil(rtp::PTIME.as_micros()) as u32;
        let voicemail = req.amd.as_ref().and_then(|a| a.voicemail.clone());
        let prompts = |codec: Codec| {
            [
                req.message.encoded_shared(codec),
                req.confirmation.encoded_shared(codec),
                voicemail
                    .as_ref()
                    .map_or_else(|| Arc::from(&[][..]), |v| v.encoded_shared(codec)),
            ]
        };
        let mut bye_sent = false;

        loop {
            // Perform what the script asked for.
            while let Some(action) = script.poll_action() {
                let now = Instant::now();
                match action {
                    Action::Cancel => {
                        // rsipstack holds a CANCEL asked for before any provisional response
                        // until one comes (RFC 3261 §9.1); the script asks for one then only
                        // on shutdown.
                        report.timeline.push((
                            at(now),
                            if script.provisional_received() {
                                "CANCEL sent".into()
                            } else {
                                "CANCEL held until a provisional response (RFC 3261 §9.1)".into()
                            },
                        ));
                        let d = dialog.clone();
                        self.background.spawn(async move {
                            if let Err(e) = d.cancel().await {
                                tracing::debug!(error = %e, "CANCEL");
                            }
                        });
                    }
                    Action::Bye { reason } => {
                        report.timeline.push((
                            at(now),
                            match &reason {
                                Some(r) => format!("BYE sent (Reason: {r})"),
                                None => "BYE sent".into(),
                            },
                        ));
                        // The BYE's transaction retransmits on its own (timer E/F) and is
                        // tracked so that `Uac::wait_background` can let it finish; the call
                        // ends now, when the BYE left, not when (or whether) it is answered.
                        let d = dialog.clone();
                        let headers = reason.map(|r| vec![Header::Reason(r.to_string().into())]);
                        self.background.spawn(async move {
                            if let Err(e) = d.bye_with_headers(headers).await {
                                tracing::debug!(error = %e, "BYE");
                            }
                        });
                        bye_sent = true;
                        script.handle_bye_sent(now);
                    }
                    Action::Note(note) => report.timeline.push((at(now), note.into())),
                    Action::Play(p) => {
                        if let Some(m) = media.as_mut() {
                            let codec = m.codec();
                            let [message, confirmation, voicemail] = prompts(codec);
                            let (audio, starts) = match p {
                                Prompt::Message => (message, now + rtp::PTIME * lead_in_packets),
                                Prompt::Confirmation => (confirmation, now),
                                Prompt::Voicemail => (voicemail, now),
                            };
                            // What we play is the detector's echo reference.
                            if let Some(d) = detector.as_mut() {
                                let pcm: Vec<i16> =
                                    audio.iter().map(|&b| codec.decode(b)).collect();
                                d.set_reference(starts, &pcm);
                            }
                            match p {
                                Prompt::Message => {
                                    m.stream().play_after(audio, p, now, lead_in_packets)
                                }
                                _ => m.stream().play(audio, p, now),
                            }
                            report.timeline.push((at(now), format!("playing {p:?}")));
                        }
                    }
                    Action::StopPlayback => {
                        if let Some(m) = media.as_ref() {
                            m.stream().stop();
                        }
                        if let Some(d) = detector.as_mut() {
                            d.clear_reference();
                        }
                    }
                    Action::RecordOptOut { digit, method } => {
                        report.timeline.push((
                            at(now),
                            format!("opt-out key {digit} ({}): recording", method.as_str()),
                        ));
                        if let Some(hook) = on_opt_out.take() {
                            opt_out_done = Some(tokio::spawn(hook(digit, method)));
                        }
                    }
                    Action::KeyPressed { digit, method } => {
                        report
                            .timeline
                            .push((at(now), format!("key {digit} ({})", method.as_str())));
                    }
                    Action::Finished(e) => {
                        report.timeline.push((
                            at(now),
                            format!("ended: {} ({})", e.outcome.as_str(), e.reason),
                        ));
                        report.ending = e;
                    }
                }
            }
            if script.is_over() {
                break;
            }

            let deadline = script.poll_timeout().map(tokio::time::Instant::from_std);
            let rtcp_due = media
                .as_ref()
                .map(|m| tokio::time::Instant::from_std(m.rtcp_due()));
            let refresh_due = refresh.due.filter(|_| media.is_some() && !stopping);
            let amd_due = detector
                .as_ref()
                .and_then(Detector::poll_timeout)
                .filter(|_| !stopping)
                .map(tokio::time::Instant::from_std);
            let session_end = refresh.expires.filter(|_| media.is_some() && !stopping);
            tokio::select! {
                _ = sleep_opt(deadline) => script.handle_timeout(Instant::now()),
                _ = sleep_opt(amd_due) => {
                    let now = Instant::now();
                    if let Some(d) = detector.as_mut() {
                        d.handle_timeout(now);
                        amd_events(d, &mut script, &mut report, now, t0);
                    }
                }
                _ = async {
                    match &req.stop {
                        Some(t) => t.cancelled().await,
                        None => std::future::pending().await,
                    }
                }, if !stopping => {
                    stopping = true;
                    report.timeline.push((at(Instant::now()), "shutdown requested".into()));
                    script.handle_shutdown(Instant::now());
                }
                ev = pacer_rx.recv() => {
                    match ev {
                        Some(StreamEvent::FirstPacket(p, when))
                            if p == Prompt::Message && report.first_audio_at.is_none() =>
                        {
                            report.first_audio_at = Some(at(when));
                            script.handle_first_audio(when);
                            report.timeline.push((at(when), "first audio packet sent".into()));
                        }
                        Some(StreamEvent::FirstPacket(Prompt::Voicemail, when)) => {
                            if let Some(a) = report.amd.as_mut() {
                                a.voicemail_started_at.get_or_insert(at(when));
                            }
                            report.timeline.push((at(when), "first voicemail packet sent".into()));
                        }
                        Some(StreamEvent::FirstPacket(..)) => {}
                        Some(StreamEvent::Done(p, when)) => {
                            report.timeline.push((at(when), format!("{p:?} played")));
                            script.handle_prompt_done(Instant::now(), p);
                        }
                        // The sender lives in `media`'s stream registration: not dropped here.
                        None => {}
                    }
                }
                r = async {
                    match invite.as_mut() {
                        Some(j) => j.await,
                        None => std::future::pending().await,
                    }
                } => {
                    invite = None;
                    let now = Instant::now();
                    match r {
                        Ok(Ok((_, Some(resp)))) => {
                            let code = resp.status_code.code();
                            report.credentials_sent = carries_credentials(&dialog.initial_request());
                            // rsipstack reports timer B (no final response) as a 408 it makes
                            // itself, which has no To tag; a trunk's own 408 has one.
                            let local = resp.to_header().ok().and_then(|t| t.tag().ok().flatten()).is_none();
                            if code == 408 && local {
                                report.timeline.push((at(now), "timer B: no final response to the INVITE".into()));
                                script.handle_timer_b(now);
                            } else if resp.status_code == StatusCode::OK {
                                report.timeline.push((at(now), format!("{code} {}", reason(&resp))));
                                report.final_response = Some((code, at(now)));
                                match sdp::parse_answer(&resp.body) {
                                    Ok(answer) if !answer.direction.receives() => {
                                        // RFC 3264 §6.1: a sendonly/inactive answer will not
                                        // receive our audio. Nothing is played.
                                        report.codec = Some(answer.codec);
                                        let why = format!(
                                            "the answer is a={}: the callee will not receive audio",
                                            answer.direction.as_str()
                                        );
                                        report.timeline.push((at(now), why.clone()));
                                        script.handle_media_refused(now, &why);
                                    }
                                    Ok(answer) => {
                                        report.codec = Some(answer.codec);
                                        let ssrc = rand::random();
                                        let packetizer = Packetizer::new(
                                            answer.codec.payload_type(),
                                            ssrc,
                                            rand::random(),
                                            rand::random(),
                                            now,
                                        );
                                        let stream = self.pacer.open(
                                            rtp_send.clone(),
                                            answer.remote,
                                            packetizer,
                                            pacer_tx.clone(),
                                        );
                                        media = Some(Media::new(
                                            &answer,
                                            stream,
                                            ssrc,
                                            format!("crieur-{ssrc:08x}@{}", rtp_local.ip()),
                                            trunk.symmetric_rtp,
                                            now,
                                            rand::random(),
                                        ));
                                        if answer.rtcp_mux {
                                            report.timeline.push((at(now), "rtcp-mux".into()));
                                        }
                                        refresh = SessionRefresh::from_answer(&resp, now);
                                        report.answered_at = Some(at(now));
                                        script.handle_answered(now, true);
                                        // The detector listens from the answer, while the
                                        // message plays.
                                        detector = req
                                            .amd
                                            .as_ref()
                                            .filter(|a| a.mode != AmdMode::Off)
                                            .map(|a| Detector::new(now, a.params));
                                    }
                                    Err(e) => {
                                        report.timeline.push((at(now), format!("answer refused: {e}")));
                                        script.handle_answered(now, false);
                                    }
                                }
                            } else if code == 403 && report.credentials_sent {
                                report.timeline.push((at(now), format!("{code} {}", reason(&resp))));
                                report.final_response = Some((code, at(now)));
                                // RFC 3261 §22.2, §22.3: a 403 to the credentialed request is
                                // the trunk refusing our credentials, not the callee.
                                script.handle_auth_refused(now, code, &reason(&resp));
                            } else {
                                report.timeline.push((at(now), format!("{code} {}", reason(&resp))));
                                report.final_response = Some((code, at(now)));
                                script.handle_rejected(now, code, &reason(&resp));
                            }
                        }
                        Ok(Ok((_, None))) => script.handle_transport_error(now, "no final response"),
                        Ok(Err(e)) => script.handle_transport_error(now, &e.to_string()),
                        Err(e) => script.handle_transport_error(now, &e.to_string()),
                    }
                }
                ev = sip_rx.recv() => {
                    let now = Instant::now();
                    match ev {
                        Some(SipEvent::Provisional(code, why)) => {
                            if (180..=199).contains(&code) && report.first_18x.is_none() {
                                report.first_18x = Some((code, at(now)));
                            }
                            report.timeline.push((at(now), format!("{code} {why}")));
                            script.handle_provisional(now);
                        }
                        Some(SipEvent::Info { content_type, body }) => {
                            match parse_sip_info(&content_type, &body) {
                                Some(d) => {
                                    report.keys.push((d, DtmfMethod::SipInfo, at(now)));
                                    script.handle_key(now, d, DtmfMethod::SipInfo);
                                }
                                None => tracing::debug!(%content_type, "INFO without a key"),
                            }
                        }
                        Some(SipEvent::Offer { req: offer_req, handle }) => {
                            refresh.on_remote_refresh(&offer_req, now);
                            let (status, headers, body) = answer_offer(
                                &offer_req,
                                media.as_mut(),
                                &mut local_sdp,
                                now,
                                &prompts,
                                &mut |what| report.timeline.push((at(now), what)),
                            );
                            tokio::spawn(async move {
                                if handle.respond(status, Some(headers), body).await.is_err() {
                                    tracing::debug!("re-INVITE/UPDATE: the transaction is gone");
                                }
                            });
                        }
                        Some(SipEvent::Refreshed(r)) => {
                            let what = refresh.handled(r, now, media.as_mut(), &prompts);
                            report.timeline.push((at(now), what.text));
                            if what.session_gone {
                                script.handle_dialog_gone(now, "the session refresh failed (RFC 4028 §10)");
                            }
                        }
                        Some(SipEvent::RemoteBye) => {
                            report.timeline.push((at(now), "BYE received".into()));
                            script.handle_remote_bye(now);
                        }
                        Some(SipEvent::Terminated(why)) => {
                            tracing::debug!(?why, "dialog terminated");
                            if !matches!(why, TerminatedReason::UasBye | TerminatedReason::UacBye | TerminatedReason::UacCancel) {
                                script.handle_dialog_gone(now, &format!("dialog ended: {why:?}"));
                            }
                        }
                        None => script.handle_transport_error(now, "SIP stack stopped"),
                    }
                }
                _ = sleep_opt(session_end) => {
                    refresh.expires = None;
                    let now = Instant::now();
                    report.timeline.push((at(now), "session expiring without the far end's refresh (RFC 4028 §10)".into()));
                    script.handle_dialog_gone(now, "the session expired: no refresh from the far end");
                }
                _ = sleep_opt(refresh_due) => {
                    refresh.due = None;
                    let now = Instant::now();
                    let what = refresh.send(&dialog, &mut local_sdp, sip_tx.clone());
                    report.timeline.push((at(now), what));
                }
                _ = sleep_opt(rtcp_due) => {
                    if let Some(m) = media.as_mut() {
                        m.send_rtcp(Instant::now(), wall_ntp(), rand::random(), (&rtp_send, &rtcp_send), false);
                    }
                }
                r = recv_rtp(&rtcp_sock, &mut rtcp_buf) => {
                    let Ok((n, from)) = r else { continue };
                    if let Some(m) = media.as_mut() {
                        m.on_rtcp(Instant::now(), from, &rtcp_buf[..n], wall_ntp(), false);
                    }
                }
                r = recv_rtp(&rtp_sock, &mut buf) => {
                    let now = Instant::now();
                    let Ok((n, from)) = r else { continue };
                    let Some(m) = media.as_mut() else { continue };
                    let heard = m.on_rtp(now, from, &buf[..n], wall_ntp(), req.keep_received_audio && report.rtp_received.len() < 100_000);
                    for (d, method) in heard.keys {
                        report.keys.push((d, method, at(now)));
                        script.handle_key(now, d, method);
                    }
                    report.rtp_received.extend(heard.audio);
                    if let Some(d) = detector.as_mut().filter(|d| heard.decoded && !d.is_done()) {
                        d.feed(now, m.last_audio());
                        amd_events(d, &mut script, &mut report, now, t0);
                    }
                }
                r = async {
                    match opt_out_done.as_mut() {
                        Some(j) => j.await,
                        None => std::future::pending().await,
                    }
                } => {
                    opt_out_done = None;
                    let now = Instant::now();
                    match r {
                        Ok(Ok(())) => {
                            report.opt_out_recorded = true;
                            report.timeline.push((at(now), "opt-out recorded durably".into()));
                            script.handle_opt_out_durable(now);
                        }
                        Ok(Err(e)) => {
                            // With its sources: the reason the operator reads.
                            let mut why = e.to_string();
                            let mut source = e.source();
                            while let Some(c) = source {
                                why.push_str(&format!(": {c}"));
                                source = c.source();
                            }
                            report.timeline.push((at(now), format!("opt-out NOT recorded: {why}")));
                            tracing::error!(%why, "opt-out could not be recorded");
                            script.handle_opt_out_failed(now, &format!("opt-out not recorded: {why}"));
                        }
                        Err(join) => {
                            let why = join.to_string();
                            report.timeline.push((at(now), format!("opt-out NOT recorded: {why}")));
                            tracing::error!(%why, "opt-out could not be recorded");
                            script.handle_opt_out_failed(now, &format!("opt-out not recorded: {why}"));
                        }
                    }
                }
            }
        }
        report.answer_to_first_audio = script.answer_to_first_audio();
        if let Some(mut m) = media.take() {
            // RTCP BYE (RFC 3550 §6.6): the last report, with BYE.
            m.send_rtcp(
                Instant::now(),
                wall_ntp(),
                0.5,
                (&rtp_send, &rtcp_send),
                true,
            );
            let c = m.stream().counters();
            // The lead-in's silence is sent as the message's first packets.
            let message = c.sent(Prompt::Message);
            report.message_packets = u64::from(message.saturating_sub(lead_in_packets));
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
        // Make sure the dialog is gone (CANCEL/BYE in flight finish on their own tasks).
        if !bye_sent
            && !matches!(report.ending.hangup_by, HangupBy::Callee)
            && report.codec.is_some()
        {
            let _ = dialog.hangup().await;
        }
        Ok(report)
    }
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
) -> (StatusCode, Vec<Header>, Option<Vec<u8>>) {
    let method = if req.method == Method::Invite {
        "re-INVITE".to_owned()
    } else {
        req.method.to_string()
    };
    let mut headers = Vec::new();
    if let Some(se) = req.header_value("Session-Expires") {
        let se = if se.to_ascii_lowercase().contains("refresher=") {
            se
        } else {
            format!("{se};refresher=uac")
        };
        headers.push(Header::SessionExpires(rsipstack::sip::SessionExpires::new(
            se,
        )));
        if req.header_contains_token("Supported", "timer") {
            headers.push(Header::Require(rsipstack::sip::Require::new("timer")));
        }
    }
    let Some(media) = media else {
        timeline(format!("{method} before the call's media: 488"));
        return (StatusCode::NotAcceptableHere, headers, None);
    };
    if req.body.is_empty() {
        if req.method == Method::Invite {
            timeline("re-INVITE without SDP (refresh): 200 with our SDP".into());
            headers.push(Header::ContentType("application/sdp".into()));
            return (StatusCode::OK, headers, Some(local.offer().into_bytes()));
        }
        timeline(format!("{method} without SDP (refresh): 200"));
        return (StatusCode::OK, headers, None);
    }
    let offer = match sdp::parse_answer(&req.body) {
        Ok(o) => o,
        Err(e) => {
            timeline(format!("{method} refused (488): {e}"));
            return (StatusCode::NotAcceptableHere, headers, None);
        }
    };
    let changes = media.apply(&offer, now, prompts);
    let answer = local.answer(&offer);
    timeline(describe(&method, &offer, &changes, local.version()));
    headers.push(Header::ContentType("application/sdp".into()));
    (StatusCode::OK, headers, Some(answer.into_bytes()))
}

fn describe(
    method: &str,
    sdp: &RemoteSdp,
    changes: &crate::session::Changes,
    version: u64,
) -> String {
    let mut what = format!("{method} ({}): 200", sdp.direction.as_str());
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
    what + &format!(" (our o= version {version})")
}

/// Session timers (RFC 4028). When we are the refresher (`refresher=uac` in the 200 to our
/// INVITE, or `refresher=uas` in the far end's refresh): an UPDATE without SDP if the far end
/// allows UPDATE, else a re-INVITE with our unchanged SDP, every half interval. When the far
/// end is: without a refresh from it, the call is ended slightly before the session expires
/// (§10: min(32 s, interval / 3) before).
#[derive(Debug, Default)]
struct SessionRefresh {
    interval: Option<Duration>,
    use_update: bool,
    /// When the next refresh is due (none while one is in flight).
    due: Option<tokio::time::Instant>,
    /// When to give the session up for want of the far end's refresh.
    expires: Option<tokio::time::Instant>,
}

struct RefreshOutcome {
    text: String,
    session_gone: bool,
}

/// `Session-Expires: <seconds>[;refresher=uac|uas]`.
fn session_expires(r: &Response) -> Option<(Duration, Option<String>)> {
    parse_session_expires(&r.header_value("Session-Expires")?)
}

fn parse_session_expires(v: &str) -> Option<(Duration, Option<String>)> {
    let mut parts = v.split(';');
    let secs: u64 = parts.next()?.trim().parse().ok()?;
    let refresher = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    Some((Duration::from_secs(secs.max(1)), refresher))
}

impl SessionRefresh {
    fn from_answer(resp: &Response, now: Instant) -> SessionRefresh {
        let mut r = SessionRefresh {
            use_update: resp.header_value("Allow").is_some_and(|a| {
                a.split(',')
                    .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
            }),
            ..SessionRefresh::default()
        };
        match session_expires(resp) {
            Some((interval, Some(who))) if who == "uac" => r.we_refresh(interval, now),
            // The 2xx must name the refresher (§7.2); without one, the far end is taken to.
            Some((interval, _)) => r.they_refresh(interval, now),
            None => {}
        }
        r
    }

    fn we_refresh(&mut self, interval: Duration, now: Instant) {
        self.interval = Some(interval);
        self.due = Some(tokio::time::Instant::from_std(now + interval / 2));
        self.expires = None;
    }

    fn they_refresh(&mut self, interval: Duration, now: Instant) {
        self.interval = None;
        self.due = None;
        let margin = (interval / 3).min(Duration::from_secs(32));
        self.expires = Some(tokio::time::Instant::from_std(now + interval - margin));
    }

    /// The far end's re-INVITE or UPDATE (any is a refresh, §10) with its Session-Expires:
    /// `refresher=uas` makes us the refresher, otherwise (`uac`, or none: we answer `uac`)
    /// the far end stays it. Without Session-Expires the session timer is off (§9).
    fn on_remote_refresh(&mut self, req: &Request, now: Instant) {
        match req
            .header_value("Session-Expires")
            .and_then(|v| parse_session_expires(&v))
        {
            Some((interval, Some(who))) if who == "uas" => self.we_refresh(interval, now),
            Some((interval, _)) => self.they_refresh(interval, now),
            None => {
                self.interval = None;
                self.due = None;
                self.expires = None;
            }
        }
    }

    fn send(
        &mut self,
        dialog: &InviteDialog,
        local: &mut LocalSdp,
        tx: mpsc::UnboundedSender<SipEvent>,
    ) -> String {
        let Some(interval) = self.interval else {
            return String::new();
        };
        let mut headers = vec![
            Header::SessionExpires(rsipstack::sip::SessionExpires::new(format!(
                "{};refresher=uac",
                interval.as_secs()
            ))),
            Header::Supported(rsipstack::sip::Supported::new("timer")),
        ];
        let d = dialog.clone();
        if self.use_update {
            tokio::spawn(async move {
                let r = d.update(Some(headers), None).await;
                let _ = tx.send(SipEvent::Refreshed(r.map_err(|e| e.to_string())));
            });
            "session refresh: UPDATE sent".into()
        } else {
            headers.push(Header::ContentType("application/sdp".into()));
            let body = local.offer().into_bytes();
            tokio::spawn(async move {
                let r = d.reinvite(Some(headers), Some(body)).await;
                let _ = tx.send(SipEvent::Refreshed(r.map_err(|e| e.to_string())));
            });
            "session refresh: re-INVITE sent".into()
        }
    }

    fn handled(
        &mut self,
        r: Result<Option<Response>, String>,
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
            Ok(Some(resp)) => resp,
            Ok(None) | Err(_) => {
                let why = r.err().unwrap_or_else(|| "dialog not confirmed".into());
                return RefreshOutcome {
                    text: format!("session refresh failed: {why}"),
                    session_gone: true,
                };
            }
        };
        let code = resp.status_code.code();
        if (200..300).contains(&code) {
            if let (Some(m), Ok(answer)) = (media, sdp::parse_answer(&resp.body)) {
                m.apply(&answer, now, prompts);
            }
            let next = session_expires(&resp).map_or(interval, |(i, _)| i);
            self.interval = Some(next);
            self.due = Some(tokio::time::Instant::from_std(now + next / 2));
            RefreshOutcome {
                text: format!("session refresh: {code}"),
                session_gone: false,
            }
        } else if code == 408 || code == 481 {
            RefreshOutcome {
                text: format!("session refresh: {code}: the session is gone"),
                session_gone: true,
            }
        } else {
            // Another failure (491, 5xx …): try again in a quarter interval, still before the
            // session expires.
            self.due = Some(tokio::time::Instant::from_std(now + interval / 4));
            RefreshOutcome {
                text: format!("session refresh: {code}; retrying"),
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

async fn sleep_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Whether a request carries an `Authorization` or `Proxy-Authorization` header.
fn carries_credentials(r: &rsipstack::sip::Request) -> bool {
    use rsipstack::sip::Header;
    r.headers.iter().any(|h| match h {
        Header::Authorization(_) | Header::ProxyAuthorization(_) => true,
        Header::Other(name, _) => {
            name.eq_ignore_ascii_case("authorization")
                || name.eq_ignore_ascii_case("proxy-authorization")
        }
        _ => false,
    })
}

fn reason(r: &Response) -> String {
    r.wire_reason
        .clone()
        .unwrap_or_else(|| r.status_code.text().to_string())
}

enum SipEvent {
    Provisional(u16, String),
    Info {
        content_type: String,
        body: String,
    },
    /// A re-INVITE or UPDATE: answered by the call's task, which holds the media.
    Offer {
        req: Request,
        handle: TransactionHandle,
    },
    /// The response to our session refresh.
    Refreshed(Result<Option<Response>, String>),
    RemoteBye,
    Terminated(TerminatedReason),
}

/// Drains one call's dialog states: reports what the call script needs, answers in-dialog
/// requests, and removes the dialog when it ends (or the registry would leak).
async fn watch_states(
    layer: Arc<DialogLayer>,
    mut rx: DialogStateReceiver,
    tx: mpsc::UnboundedSender<SipEvent>,
) {
    while let Some(st) = rx.recv().await {
        match st {
            DialogState::Trying(_) => {
                let _ = tx.send(SipEvent::Provisional(100, "Trying".into()));
            }
            DialogState::Early(_, r) => {
                let _ = tx.send(SipEvent::Provisional(r.status_code.code(), reason(&r)));
            }
            DialogState::Info(_, req, h) => {
                let content_type = req.header_value("Content-Type").unwrap_or_default();
                let body = String::from_utf8_lossy(&req.body).into_owned();
                if let Err(e) = h.reply(StatusCode::OK).await {
                    tracing::debug!(error = %e, "INFO reply");
                }
                let _ = tx.send(SipEvent::Info { content_type, body });
            }
            DialogState::Options(_, _, h) => {
                let _ = h
                    .respond(StatusCode::OK, Some(signalling::capabilities()), None)
                    .await;
            }
            DialogState::Notify(_, _, h) | DialogState::Message(_, _, h) => {
                // Methods we do not implement (RFC 3261 §8.2.1).
                let _ = h
                    .respond(
                        StatusCode::MethodNotAllowed,
                        Some(signalling::capabilities()),
                        None,
                    )
                    .await;
            }
            DialogState::Updated(_, req, handle) => {
                // Re-INVITE / UPDATE: the call's task answers (it holds the media); if it has
                // ended, the dialog is on its way out.
                if let Err(mpsc::error::SendError(SipEvent::Offer { handle, .. })) =
                    tx.send(SipEvent::Offer { req, handle })
                {
                    let _ = handle.reply(StatusCode::CallTransactionDoesNotExist).await;
                }
            }
            DialogState::Refer(_, _, h) => {
                // REFER: a broadcast call is not transferred.
                let _ = h.reply(StatusCode::NotAcceptableHere).await;
            }
            DialogState::Terminated(id, why) => {
                layer.remove_dialog(&id);
                if matches!(why, TerminatedReason::UasBye) {
                    let _ = tx.send(SipEvent::RemoteBye);
                }
                let _ = tx.send(SipEvent::Terminated(why));
                break;
            }
            _ => {}
        }
    }
}

/// Answers every incoming request: in-dialog ones through their dialog, the rest with 481
/// (or 200 for OPTIONS, 603 for an INVITE: we place calls, we do not take them).
async fn incoming_loop(layer: Arc<DialogLayer>, mut incoming: TransactionReceiver) {
    while let Some(mut tx) = incoming.recv().await {
        let layer = layer.clone();
        tokio::spawn(async move {
            let method = tx.original.method;
            let mut dialog = layer.match_dialog(&tx);
            if dialog.is_none() && method == Method::Bye {
                // A BYE right after the 200 can beat the dialog's re-registration.
                tokio::time::sleep(Duration::from_millis(50)).await;
                dialog = layer.match_dialog(&tx);
            }
            match dialog {
                Some(mut d) => {
                    if let Err(e) = d.handle(&mut tx).await {
                        tracing::debug!(error = %e, "in-dialog request");
                    }
                }
                None => {
                    let (code, headers) = match method {
                        Method::Ack => (None, vec![]),
                        Method::Options => (Some(StatusCode::OK), signalling::capabilities()),
                        Method::Invite => (Some(StatusCode::Decline), vec![]),
                        m if signalling::ALLOWED.contains(&m) => {
                            (Some(StatusCode::CallTransactionDoesNotExist), vec![])
                        }
                        // A method we do not implement (RFC 3261 §8.2.1).
                        _ => (
                            Some(StatusCode::MethodNotAllowed),
                            signalling::capabilities(),
                        ),
                    };
                    if let Some(code) = code {
                        let _ = tx.reply_with(code, headers, None).await;
                    }
                }
            }
            if tx.last_response.is_none() && method != Method::Ack {
                let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
            }
        });
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
        }
    }
}
