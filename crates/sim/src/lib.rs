//! A simulated callee network on loopback: one SIP endpoint (crieur-sip's, driven by
//! crieur-media's SIP loop on UDP) that answers
//! each INVITE the way its number's behaviour says — answer after N s, busy, no answer,
//! reject with a code, answer then press a key (RFC 4733 or SIP INFO) after N s, answer then
//! hang up mid-message, answer and speak (a recording as the callee's audio: a person's
//! "Hello?"), or a voicemail (a greeting, a beep, then "recording" silence). For demos and
//! load; correctness is tested against sipp.

// The simulator is an I/O edge: it sleeps and reads the clock.
#![allow(clippy::disallowed_methods)]

pub mod demo;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crieur_media::uac::{Command, IncomingCall, SipLoop};
use crieur_sip::{CallRef, Config, Endpoint, Event, Method, ServerRef, Timers, Transport};
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The simulator's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plan is not valid TOML for [`Plan`].
    #[error("bad simulator config")]
    Config {
        #[source]
        source: toml::de::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How a key press reaches the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyMethod {
    Rfc4733,
    SipInfo,
}

/// What one callee does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "behaviour", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Behaviour {
    /// Rings `after_ms`, answers, listens until the caller hangs up.
    Answer {
        #[serde(default)]
        after_ms: u64,
    },
    /// 486 Busy Here.
    Busy,
    /// Rings until the caller gives up (CANCEL → 487).
    NoAnswer,
    /// Rejects with `code` (4xx, 5xx, 6xx).
    Reject { code: u16 },
    /// Answers after `after_ms`, then presses `key` `key_after_ms` into the message.
    PressKey {
        #[serde(default)]
        after_ms: u64,
        key: char,
        key_after_ms: u64,
        method: KeyMethod,
    },
    /// Answers after `after_ms`, then hangs up `hangup_after_ms` into the message.
    HangUp {
        #[serde(default)]
        after_ms: u64,
        hangup_after_ms: u64,
    },
    /// Answers after `after_ms` and sends `audio` (a WAV file) as its side of the call — a
    /// person's "Hello?", or anything to play to the caller — then silence until the caller
    /// hangs up.
    Speak {
        #[serde(default)]
        after_ms: u64,
        audio: std::path::PathBuf,
    },
    /// A voicemail: answers after `after_ms`, sends its `greeting` (a WAV file), then
    /// `beep_ms` of a `beep_hz` tone 300 ms later (`beep_hz = 0`: no beep), then silence
    /// (the recording) until the caller hangs up.
    Voicemail {
        #[serde(default)]
        after_ms: u64,
        greeting: std::path::PathBuf,
        #[serde(default = "default_beep_hz")]
        beep_hz: f32,
        #[serde(default = "default_beep_ms")]
        beep_ms: u64,
    },
}

fn default_beep_hz() -> f32 {
    1000.0
}

fn default_beep_ms() -> u64 {
    500
}

/// The callee's side of a `speak` or `voicemail` behaviour, 8 kHz linear samples.
fn callee_audio(b: &Behaviour) -> Option<Vec<i16>> {
    let load = |p: &std::path::Path| match crieur_media::audio::Message::load(p) {
        Ok(m) => Some(
            m.encoded(crieur_media::g711::Codec::Pcmu)
                .iter()
                .map(|&u| crieur_media::g711::Codec::Pcmu.decode(u))
                .collect::<Vec<i16>>(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "simulator: callee audio");
            None
        }
    };
    match b {
        Behaviour::Speak { audio, .. } => load(audio),
        Behaviour::Voicemail {
            greeting,
            beep_hz,
            beep_ms,
            ..
        } => {
            let mut a = load(greeting)?;
            a.extend(std::iter::repeat_n(0, 8 * 300));
            if *beep_hz > 0.0 {
                let n = usize::try_from(beep_ms * 8).unwrap_or(0);
                a.extend((0..n).map(|i| {
                    let t = i as f32 / 8000.0;
                    (6000.0 * (2.0 * std::f32::consts::PI * beep_hz * t).sin()) as i16
                }));
            }
            Some(a)
        }
        _ => None,
    }
}

/// Sends `audio` to `to` as 20 ms RTP packets of `codec` on an absolute schedule, then
/// silence packets until stopped (the caller's BYE ends the task).
async fn send_audio(
    sock: Arc<UdpSocket>,
    to: SocketAddr,
    codec: crieur_media::g711::Codec,
    audio: Vec<i16>,
) {
    use crieur_media::rtp::{write_header, RtpHeader, HEADER_LEN};
    let ssrc: u32 = rand::random();
    let ts0: u32 = rand::random();
    let seq0: u16 = rand::random();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let silence = [0i16; 160];
    for n in 0u32.. {
        tick.tick().await;
        let start = usize::try_from(n).unwrap_or(usize::MAX).saturating_mul(160);
        let chunk = audio
            .get(start..)
            .map_or(&silence[..], |r| &r[..r.len().min(160)]);
        let chunk = if chunk.is_empty() {
            &silence[..]
        } else {
            chunk
        };
        let h = RtpHeader {
            marker: n == 0,
            payload_type: codec.payload_type(),
            sequence: seq0.wrapping_add(n as u16),
            timestamp: ts0.wrapping_add(n.wrapping_mul(160)),
            ssrc,
        };
        let mut head = [0u8; HEADER_LEN];
        write_header(&mut head, &h);
        let mut pkt = Vec::with_capacity(HEADER_LEN + 160);
        pkt.extend_from_slice(&head);
        pkt.extend(chunk.iter().map(|&s| codec.encode(s)));
        let _ = sock.send_to(&pkt, to).await;
    }
}

/// Behaviours per number (E.164, as in the Request-URI), and the default for the rest.
///
/// ```toml
/// default = { behaviour = "answer", after_ms = 1000 }
/// [numbers]
/// "+33612345678" = { behaviour = "busy" }
/// "+33612345679" = { behaviour = "press-key", key = "9", key_after_ms = 2000, method = "rfc4733" }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub default: Behaviour,
    #[serde(default)]
    pub numbers: HashMap<String, Behaviour>,
}

impl Plan {
    /// Reads a plan from TOML text.
    pub fn from_toml(text: &str) -> Result<Plan, Error> {
        toml::from_str(text).map_err(|source| Error::Config { source })
    }

    fn of(&self, number: &str) -> &Behaviour {
        self.numbers.get(number).unwrap_or(&self.default)
    }
}

/// A running simulated network; stops when dropped.
pub struct Network {
    addr: SocketAddr,
    token: CancellationToken,
}

impl Drop for Network {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl Network {
    /// Starts on `bind` (a loopback address; port 0 picks one).
    pub async fn start(bind: SocketAddr, plan: Plan) -> Result<Network, Error> {
        let token = CancellationToken::new();
        let socket = UdpSocket::bind(bind).await?;
        let addr = socket.local_addr()?;
        let endpoint = Endpoint::new(Config {
            local: addr,
            transport: Transport::Udp,
            user_agent: "crieur-sim".into(),
            timers: Timers::default(),
            capabilities: crieur_media::signalling::capabilities(),
            accept_incoming: true,
        });
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        let sip = Arc::new(SipLoop::start(
            crieur_media::uac::SipNet::Udp(socket),
            endpoint,
            Some(incoming_tx),
            token.child_token(),
        )?);
        // RTP on the SIP address's interface (the network is on loopback).
        tokio::spawn(serve(
            addr.ip(),
            sip,
            incoming,
            Arc::new(plan),
            token.child_token(),
        ));
        Ok(Network { addr, token })
    }

    /// Where to send INVITEs.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn serve(
    ip: std::net::IpAddr,
    sip: Arc<SipLoop>,
    mut incoming: mpsc::UnboundedReceiver<IncomingCall>,
    plan: Arc<Plan>,
    stop: CancellationToken,
) {
    loop {
        let call = tokio::select! {
            c = incoming.recv() => match c { Some(c) => c, None => return },
            _ = stop.cancelled() => return,
        };
        let number = call
            .request
            .uri
            .user()
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_default();
        let behaviour = plan.of(&number).clone();
        tokio::spawn(callee(sip.clone(), call, behaviour, ip, stop.child_token()));
    }
}

/// Answers the INVITE (`code`, with an SDP body if any).
fn respond(sip: &SipLoop, server: ServerRef, code: u16, sdp: Option<String>) {
    let headers = if sdp.is_some() {
        vec![("Content-Type".to_owned(), "application/sdp".to_owned())]
    } else {
        Vec::new()
    };
    sip.send(Command::Respond {
        server,
        code,
        headers,
        body: sdp.map(String::into_bytes),
    });
}

/// Waits for the end of the call (the caller's BYE or CANCEL, or our 2xx never ACKed).
async fn ended(events: &mut mpsc::UnboundedReceiver<Event>) {
    while let Some(e) = events.recv().await {
        if matches!(
            e,
            Event::Bye { .. } | Event::Cancelled { .. } | Event::NoAck { .. }
        ) {
            return;
        }
    }
}

/// One callee's script.
async fn callee(
    sip: Arc<SipLoop>,
    call: IncomingCall,
    behaviour: Behaviour,
    ip: std::net::IpAddr,
    stop: CancellationToken,
) {
    let IncomingCall {
        call: leg,
        server,
        request,
        mut events,
    } = call;
    run_callee(
        &sip,
        leg,
        server,
        &request,
        &mut events,
        behaviour,
        ip,
        stop,
    )
    .await;
    sip.send(Command::Forget(leg));
}

#[allow(clippy::too_many_arguments)]
async fn run_callee(
    sip: &SipLoop,
    leg: CallRef,
    server: ServerRef,
    request: &crieur_sip::Request,
    events: &mut mpsc::UnboundedReceiver<Event>,
    behaviour: Behaviour,
    ip: std::net::IpAddr,
    stop: CancellationToken,
) {
    let after = match &behaviour {
        Behaviour::Busy => return respond(sip, server, 486, None),
        Behaviour::Reject { code } => return respond(sip, server, *code, None),
        Behaviour::NoAnswer => {
            // Rings until CANCEL (the endpoint answers it, and the INVITE with 487).
            respond(sip, server, 180, None);
            tokio::select! {
                _ = ended(events) => {}
                _ = stop.cancelled() => {}
            }
            return;
        }
        Behaviour::Answer { after_ms }
        | Behaviour::PressKey { after_ms, .. }
        | Behaviour::HangUp { after_ms, .. }
        | Behaviour::Speak { after_ms, .. }
        | Behaviour::Voicemail { after_ms, .. } => *after_ms,
    };
    respond(sip, server, 180, None);
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(after)) => {}
        _ = stop.cancelled() => return,
        _ = ended(events) => return,
    }
    // The SDP as the endpoint let it through: the whole body, or a multipart body's part.
    let offer = crieur_sip::body::sdp(&request.headers, request.body()).unwrap_or_default();
    let remote = match crieur_media::sdp::parse_answer(offer) {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(error = %e, "simulator: an offer it cannot answer");
            return respond(sip, server, 488, None);
        }
    };
    let rtp = match UdpSocket::bind(SocketAddr::new(ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "simulator: RTP socket");
            return respond(sip, server, 500, None);
        }
    };
    let Ok(local) = rtp.local_addr() else { return };
    let answer = crieur_media::sdp::offer(local, rand::random::<u32>().into());
    respond(sip, server, 200, Some(answer));
    // Received audio is read and dropped (so the socket never backs up). Keys leave from this
    // same socket: the caller accepts RTP only from the address the answer named.
    let rtp = std::sync::Arc::new(rtp);
    let keys_from = rtp.clone();
    // The callee's own audio (speak, voicemail), from the same socket.
    let speaking = callee_audio(&behaviour)
        .map(|a| tokio::spawn(send_audio(rtp.clone(), remote.remote, remote.codec, a)));
    let drain = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while rtp.recv(&mut buf).await.is_ok() {}
    });
    let script = async {
        match behaviour {
            Behaviour::PressKey {
                key,
                key_after_ms,
                method,
                ..
            } => {
                tokio::time::sleep(Duration::from_millis(key_after_ms)).await;
                match method {
                    KeyMethod::SipInfo => {
                        let body = format!("Signal={key}\r\nDuration=160\r\n");
                        sip.send(Command::Request {
                            leg,
                            method: Method::Info,
                            headers: vec![("Content-Type".into(), "application/dtmf-relay".into())],
                            body: body.into_bytes(),
                        });
                    }
                    KeyMethod::Rfc4733 => {
                        if let (Some(pt), Some(code)) = (remote.event_pt, event_code(key)) {
                            send_rfc4733(&keys_from, remote.remote, pt, code).await;
                        }
                    }
                }
                std::future::pending::<()>().await;
            }
            Behaviour::HangUp {
                hangup_after_ms, ..
            } => {
                tokio::time::sleep(Duration::from_millis(hangup_after_ms)).await;
                sip.send(Command::Bye(leg, Vec::new()));
            }
            _ => std::future::pending::<()>().await,
        }
    };
    // Listen until the call ends (the caller's BYE, or ours: the script ends when it hung
    // up), with an upper bound.
    tokio::select! {
        _ = script => {}
        _ = ended(events) => {}
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
    }
    drain.abort();
    if let Some(s) = speaking {
        s.abort();
    }
}

fn event_code(key: char) -> Option<u8> {
    match key {
        '0'..='9' => Some(key as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        _ => None,
    }
}

/// One key press by RFC 4733: 5 packets every 20 ms, then the end packet three times.
async fn send_rfc4733(sock: &UdpSocket, to: SocketAddr, pt: u8, code: u8) {
    let ssrc: u32 = rand::random();
    let ts: u32 = rand::random();
    let seq0: u16 = rand::random();
    for n in 0u16..8 {
        let end = n >= 5;
        let duration = 160 * (n.min(5) + 1);
        let h = crieur_media::rtp::RtpHeader {
            marker: n == 0,
            payload_type: pt,
            sequence: seq0.wrapping_add(n),
            timestamp: ts,
            ssrc,
        };
        let mut pkt = [0u8; crieur_media::rtp::HEADER_LEN + 4];
        let mut head = [0u8; crieur_media::rtp::HEADER_LEN];
        crieur_media::rtp::write_header(&mut head, &h);
        pkt[..crieur_media::rtp::HEADER_LEN].copy_from_slice(&head);
        let d = duration.to_be_bytes();
        pkt[crieur_media::rtp::HEADER_LEN..].copy_from_slice(&[
            code,
            if end { 0x80 | 10 } else { 10 },
            d[0],
            d[1],
        ]);
        let _ = sock.send_to(&pkt, to).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bad plan is a structured error whose source is the TOML parser's own, located.
    #[test]
    fn a_bad_plan_keeps_the_parser_s_error_as_its_source() {
        let e = Plan::from_toml("default = 3\n").err();
        let Some(e @ Error::Config { .. }) = e else {
            panic!("a bad plan was accepted: {e:?}");
        };
        assert_eq!(e.to_string(), "bad simulator config");
        let source = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<toml::de::Error>())
            .unwrap_or_else(|| panic!("no TOML source: {e:?}"));
        assert!(source.span().is_some(), "{source}");
    }
}
