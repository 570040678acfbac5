//! A simulated callee network on loopback: one SIP endpoint (rsipstack, UDP) that answers
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

use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, DialogStateSender};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::dialog::DialogId;
use rsipstack::sip::{Header, Method, StatusCode};
use rsipstack::transaction::TransactionReceiver;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use rsipstack::EndpointBuilder;
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The simulator's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SIP stack failed at `what` we asked of it; its own error is the source.
    #[error("SIP stack: {what}")]
    Sip {
        what: &'static str,
        #[source]
        source: Box<rsipstack::Error>,
    },
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
        let sip = |what: &'static str| {
            move |source| Error::Sip {
                what,
                source: Box::new(source),
            }
        };
        let token = CancellationToken::new();
        let tl = TransportLayer::new(token.child_token());
        let udp = UdpConnection::create_connection(bind, None, Some(token.child_token()))
            .await
            .map_err(sip("opening the SIP socket"))?;
        let addr = udp
            .get_addr()
            .get_socketaddr()
            .map_err(sip("reading the SIP socket's address"))?;
        tl.add_transport(udp.into());
        let endpoint = EndpointBuilder::new()
            .with_user_agent("crieur-sim")
            .with_transport_layer(tl)
            .with_cancel_token(token.child_token())
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(sip("taking the incoming transactions"))?;
        let inner = endpoint.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.serve().await {
                tracing::warn!(error = %e, "simulator endpoint stopped");
            }
        });
        let layer = Arc::new(DialogLayer::new(endpoint.inner.clone()));
        let (state_tx, state_rx) = layer.new_dialog_state_channel();
        tokio::spawn(watch(layer.clone(), state_rx));
        let contact = rsipstack::sip::Uri::try_from(format!("sip:callee@{addr}").as_str())
            .map_err(|e| sip("making the callee's contact URI")(e.into()))?;
        // RTP on the SIP address's interface (the network is on loopback).
        tokio::spawn(serve(
            addr.ip(),
            layer,
            incoming,
            state_tx,
            contact,
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

async fn watch(layer: Arc<DialogLayer>, mut rx: DialogStateReceiver) {
    while let Some(state) = rx.recv().await {
        if let DialogState::Terminated(id, _) = state {
            layer.remove_dialog(&id);
        }
    }
}

async fn serve(
    ip: std::net::IpAddr,
    layer: Arc<DialogLayer>,
    mut incoming: TransactionReceiver,
    state_tx: DialogStateSender,
    contact: rsipstack::sip::Uri,
    plan: Arc<Plan>,
    stop: CancellationToken,
) {
    loop {
        let mut tx = tokio::select! {
            t = incoming.recv() => match t { Some(t) => t, None => return },
            _ = stop.cancelled() => return,
        };
        match tx.original.method {
            Method::Invite => {
                let number = tx.original.uri.user().unwrap_or_default().to_owned();
                let behaviour = plan.of(&number).clone();
                match behaviour {
                    Behaviour::Busy => {
                        let _ = tx.reply(StatusCode::BusyHere).await;
                        continue;
                    }
                    Behaviour::Reject { code } => {
                        let _ = tx.reply(StatusCode::from(code)).await;
                        continue;
                    }
                    _ => {}
                }
                let dialog = match layer.get_or_create_server_invite(
                    &tx,
                    state_tx.clone(),
                    None,
                    Some(contact.clone()),
                ) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::debug!(error = %e, "simulator: no dialog for an INVITE");
                        let _ = tx.reply(StatusCode::ServerInternalError).await;
                        continue;
                    }
                };
                let mut handler = dialog.clone();
                tokio::spawn(async move {
                    if let Err(e) = handler.handle(&mut tx).await {
                        tracing::debug!(error = %e, "simulator: INVITE transaction");
                    }
                });
                tokio::spawn(callee(dialog, behaviour, ip, stop.child_token()));
            }
            _ => {
                // In-dialog requests (BYE, INFO …) go to their dialog; the rest is refused.
                let layer = layer.clone();
                tokio::spawn(async move {
                    let method = tx.original.method;
                    match layer.match_dialog(&tx) {
                        Some(mut d) => {
                            let _ = d.handle(&mut tx).await;
                        }
                        None if method == Method::Ack => {}
                        None => {
                            let _ = tx.reply(StatusCode::CallTransactionDoesNotExist).await;
                        }
                    }
                    if let (Method::Bye, Ok(id)) = (method, DialogId::try_from(&tx)) {
                        layer.remove_dialog(&id);
                    }
                });
            }
        }
    }
}

/// One callee's script.
async fn callee(
    dialog: InviteDialog,
    behaviour: Behaviour,
    ip: std::net::IpAddr,
    stop: CancellationToken,
) {
    let _ = dialog.ringing(None, None);
    let after = match &behaviour {
        Behaviour::NoAnswer => return, // rings until CANCEL; rsipstack answers it with 487
        Behaviour::Answer { after_ms }
        | Behaviour::PressKey { after_ms, .. }
        | Behaviour::HangUp { after_ms, .. }
        | Behaviour::Speak { after_ms, .. }
        | Behaviour::Voicemail { after_ms, .. } => *after_ms,
        Behaviour::Busy | Behaviour::Reject { .. } => return,
    };
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(after)) => {}
        _ = stop.cancelled() => return,
        _ = dialog.cancel_token().cancelled() => return,
    }
    let offer = dialog.initial_request().body;
    let remote = match crieur_media::sdp::parse_answer(&offer) {
        Ok(o) => o,
        Err(e) => {
            let _ = dialog.reject(Some(StatusCode::NotAcceptableHere), Some(e.to_string()));
            return;
        }
    };
    let rtp = match UdpSocket::bind(SocketAddr::new(ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "simulator: RTP socket");
            let _ = dialog.reject(Some(StatusCode::ServerInternalError), None);
            return;
        }
    };
    let local = match rtp.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let answer = crieur_media::sdp::offer(local, rand::random::<u32>().into());
    let headers = vec![Header::ContentType("application/sdp".into())];
    if dialog
        .accept(Some(headers), Some(answer.into_bytes()))
        .is_err()
    {
        return;
    }
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
                    let h = vec![Header::ContentType("application/dtmf-relay".into())];
                    let _ = dialog.info(Some(h), Some(body.into_bytes())).await;
                }
                KeyMethod::Rfc4733 => {
                    if let (Some(pt), Some(code)) = (remote.event_pt, event_code(key)) {
                        send_rfc4733(&keys_from, remote.remote, pt, code).await;
                    }
                }
            }
        }
        Behaviour::HangUp {
            hangup_after_ms, ..
        } => {
            tokio::time::sleep(Duration::from_millis(hangup_after_ms)).await;
            let _ = dialog.bye().await;
        }
        _ => {}
    }
    // Listen until the call ends (the caller's BYE), with an upper bound.
    tokio::select! {
        _ = dialog.cancel_token().cancelled() => {}
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
