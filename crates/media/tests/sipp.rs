//! The UAC against a real, independent peer: sipp (Debian package `sip-tester`) as the UAS,
//! started by each test on 127.0.0.1 with free ports, and stopped by it.

// A network test with real processes: it reads the clock to bound its waits.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crieur_media::audio::Message;
use crieur_media::call::Outcome;
use crieur_media::dtmf::DtmfMethod;
use crieur_media::g711::Codec;
use crieur_test_support::kamailio::Kamailio;
use crieur_test_support::scenario::*;
use crieur_test_support::Sipp;

use crieur_media::uac::{
    CallReport, CallRequest, Credentials, OptOutFuture, Trunk, Uac, DEFAULT_LEAD_IN,
};

fn tone(f: f32, secs: f32) -> Message {
    let samples: Vec<f32> = (0..(8000.0 * secs) as usize)
        .map(|n| 0.4 * (2.0 * std::f32::consts::PI * f * n as f32 / 8000.0).sin())
        .collect();
    Message::from_samples(&samples)
}

fn trunk(addr: SocketAddr) -> Trunk {
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
        // Intervals of seconds, to see refreshes and expiries in a short test.
        min_session_expires: Duration::from_secs(1),
        servers: Vec::new(),
    }
}

struct Placed {
    report: CallReport,
    opt_out_hook_ran: bool,
}

async fn place(trunk: &Trunk, message: Message) -> Placed {
    place_with(trunk, message, Ok(())).await
}

/// Places a call whose opt-out hook returns `hook` (after a delay).
async fn place_with(trunk: &Trunk, message: Message, hook: Result<(), String>) -> Placed {
    place_full(trunk, message, hook, DEFAULT_LEAD_IN, None).await
}

/// A UAC on a free loopback port.
async fn local_uac() -> Uac {
    Uac::start(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        "crieur-test/0",
    )
    .await
    .unwrap_or_else(|e| panic!("UAC: {e}"))
}

/// As [`place_with`], with a lead-in and answering-machine detection.
async fn place_full(
    trunk: &Trunk,
    message: Message,
    hook: Result<(), String>,
    lead_in: Duration,
    amd: Option<crieur_media::uac::AmdRequest>,
) -> Placed {
    let uac = local_uac().await;
    call_on(&uac, trunk, message, hook, lead_in, amd).await
}

/// [`place_full`] on a given UAC.
async fn call_on(
    uac: &Uac,
    trunk: &Trunk,
    message: Message,
    hook: Result<(), String>,
    lead_in: Duration,
    amd: Option<crieur_media::uac::AmdRequest>,
) -> Placed {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let req = CallRequest {
        number: "+33612345678".into(),
        message: Arc::new(message),
        confirmation: Arc::new(tone(660.0, 1.0)),
        opt_out_key: '9',
        not_interested_key: None,
        keep_received_audio: true,
        stop: None,
        lead_in,
        amd,
    };
    let report = tokio::time::timeout(
        Duration::from_secs(50),
        uac.call(trunk, req, move |_d, _m| -> OptOutFuture {
            Box::pin(async move {
                // Stands in for the durable store write: slow on purpose, so a confirmation
                // played before it returned would show in the timeline order.
                tokio::time::sleep(Duration::from_millis(200)).await;
                flag.store(true, Ordering::SeqCst);
                hook.map_err(Into::into)
            })
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("call did not finish"))
    .unwrap_or_else(|e| panic!("call: {e}"));
    Placed {
        report,
        opt_out_hook_ran: ran.load(Ordering::SeqCst),
    }
}

fn timeline(r: &CallReport) -> String {
    r.timeline
        .iter()
        .map(|(t, s)| format!("{:>8.3}s {s}\n", t.as_secs_f64()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn answer_and_full_playback_decodes_back_to_the_message() {
    let mut sipp = Sipp::start(&answer_scenario("8 0 101", BYE_200), &["-rtp_echo"]);
    let message = tone(440.0, 2.0); // 100 packets
    let original: Vec<u8> = message.encoded(Codec::Pcma).to_vec();
    let placed = place(&trunk(sipp.addr()), message).await;
    let r = &placed.report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(r)
    );
    assert_eq!(r.codec, Some(Codec::Pcma));
    // 300 ms of lead-in (15 packets of silence), then the message's 100.
    assert_eq!(r.message_packets, 100);
    assert_eq!(r.rtp_sent, 115);
    assert!(
        r.answer_to_first_audio
            .is_some_and(|d| d >= Duration::from_millis(299) && d < Duration::from_millis(400)),
        "{:?}",
        r.answer_to_first_audio
    );
    // sipp echoes our RTP: every packet comes back, in order, 20 ms of timestamp apart,
    // payload type 8: first the lead-in's A-law silence, then exactly the encoded message,
    // on one schedule.
    let got = &r.rtp_received;
    assert!(
        got.len() >= 110,
        "only {} packets echoed back\n{}",
        got.len(),
        timeline(r)
    );
    for w in got.windows(2) {
        assert_eq!(w[1].0.sequence, w[0].0.sequence.wrapping_add(1));
        assert_eq!(w[1].0.timestamp, w[0].0.timestamp.wrapping_add(160));
    }
    assert!(got
        .iter()
        .all(|(h, p)| h.payload_type == 8 && p.len() == 160));
    assert!(got[0].0.marker);
    assert!(
        got[..15].iter().all(|(_, p)| p.iter().all(|&b| b == 0xD5)),
        "the lead-in is not silence"
    );
    let got = &got[15..];
    // Sent on the 20 ms schedule: no packet left a whole slot late.
    assert!(
        r.send_lateness_max_us < 20_000,
        "max lateness {} µs",
        r.send_lateness_max_us
    );
    assert_eq!(r.rtp_send_errors, 0);
    let first_seq = got[0].0.sequence;
    let _ = first_seq;
    let received: Vec<u8> = got.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let offset = original
        .windows(160)
        .position(|w| w == &received[..160])
        .unwrap_or(usize::MAX);
    assert_eq!(
        offset, 0,
        "echoed audio does not start at the message start"
    );
    assert_eq!(&received[..], &original[..received.len()]);
    // Decoded, it is the message within G.711's quantisation error.
    for (i, &b) in received.iter().enumerate() {
        let want = 0.4 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 8000.0).sin() * 32767.0;
        let got = f32::from(Codec::Pcma.decode(b));
        assert!(
            (got - want).abs() <= want.abs() / 16.0 + 16.0,
            "sample {i}: {got} vs {want}"
        );
    }
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn pcma_only_answer_is_used() {
    let mut sipp = Sipp::start(&answer_scenario("8", BYE_200), &[]);
    let r = place(&trunk(sipp.addr()), tone(440.0, 0.5)).await.report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_eq!(r.codec, Some(Codec::Pcma));
    assert!(sipp.succeeded());
}

/// BYE whose `Reason` header must match `regexp` (sipp fails the call otherwise), then 200.
fn bye_checking_reason(regexp: &str) -> String {
    BYE_200.replacen(
        r#"<recv request="BYE"/>"#,
        &format!(
            r#"<recv request="BYE">
    <action><ereg regexp="{regexp}" search_in="hdr" header="Reason:" check_it="true" assign_to="reason"/></action>
  </recv>
  <Reference variables="reason"/>"#
        ),
        1,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn no_common_codec_is_hung_up_as_codec_mismatch_with_a_reason() {
    // Answered with G.729 only: ACK, then BYE carrying `Reason: SIP;cause=488` (RFC 3326).
    let bye = bye_checking_reason(
        "^ *SIP *; *cause=488 *; *text=&quot;no common codec in the answer&quot; *$",
    );
    let mut sipp = Sipp::start(&answer_scenario("18", &bye), &[]);
    let r = place(&trunk(sipp.addr()), tone(440.0, 0.5)).await.report;
    assert_eq!(r.ending.outcome, Outcome::CodecMismatch, "{}", timeline(&r));
    assert_eq!(r.rtp_sent, 0);
    // Never counted as answered.
    assert_eq!(r.answered_at, None);
    assert_eq!(r.answer_to_first_audio, None);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_response_at_all_ends_by_timer_b_without_cancel() {
    // sipp receives the INVITE (and its retransmissions) and never answers. Any other request
    // — a CANCEL, forbidden before a provisional response (RFC 3261 §9.1) — is unexpected
    // there and fails sipp's call.
    let scenario = format!(
        r#"{HEAD}  <pause milliseconds="36000"/>
{TAIL}"#
    );
    let mut sipp = Sipp::start(&scenario, &[]);
    let t = trunk(sipp.addr());
    let started = Instant::now();
    let r = place(&t, tone(440.0, 0.5)).await.report;
    let took = started.elapsed();
    assert_eq!(r.ending.outcome, Outcome::TrunkFailure, "{}", timeline(&r));
    assert!(r.ending.reason.contains("timer B"), "{:?}", r.ending);
    assert!(
        r.timeline.iter().any(|(_, s)| s.starts_with("timer B")),
        "{}",
        timeline(&r)
    );
    assert!(
        !r.timeline.iter().any(|(_, s)| s.contains("CANCEL sent")),
        "{}",
        timeline(&r)
    );
    // No response came: none is recorded.
    assert_eq!(r.final_response, None);
    // Timer B is 64 × T1 = 32 s after the INVITE.
    assert!(
        took >= Duration::from_secs(31) && took < Duration::from_secs(36),
        "{took:?}"
    );
    assert!(sipp.succeeded(), "sipp saw a request other than the INVITE");
}

#[tokio::test(flavor = "multi_thread")]
async fn bye_to_a_vanished_peer_ends_the_call_when_it_left() {
    // Answers, then takes the BYE (and its retransmissions) without ever answering it.
    let after_ack = r#"  <recv request="BYE"/>
  <pause milliseconds="2500"/>
"#;
    let mut sipp = Sipp::start(&answer_scenario("0 8", after_ack), &[]);
    let uac = local_uac().await;
    let req = CallRequest {
        number: "+33612345678".into(),
        message: Arc::new(tone(440.0, 1.0)),
        confirmation: Arc::new(tone(660.0, 1.0)),
        opt_out_key: '9',
        not_interested_key: None,
        keep_received_audio: false,
        stop: None,
        lead_in: DEFAULT_LEAD_IN,
        amd: None,
    };
    let started = Instant::now();
    let r = uac
        .call(&trunk(sipp.addr()), req, |_, _| -> OptOutFuture {
            Box::pin(async { Ok(()) })
        })
        .await
        .unwrap_or_else(|e| panic!("call: {e}"));
    let took = started.elapsed();
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    let at = |what: &str| {
        r.timeline
            .iter()
            .find(|(_, s)| s.starts_with(what))
            .map(|(t, _)| *t)
    };
    let (bye, ended) = (at("BYE sent"), at("ended:"));
    assert!(bye.is_some() && ended.is_some(), "{}", timeline(&r));
    // The call ended when its BYE left, not 32 s later when timer F gave up on it.
    assert!(
        ended
            .zip(bye)
            .is_some_and(|(e, b)| e - b < Duration::from_millis(50)),
        "{}",
        timeline(&r)
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    // The BYE's transaction is still retransmitting in the background.
    assert!(!uac.wait_background(Duration::from_millis(300)).await);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_and_unavailable() {
    for (code, want, status) in [
        ("486 Busy Here", Outcome::Busy, 486),
        ("503 Service Unavailable", Outcome::TrunkFailure, 503),
    ] {
        let mut sipp = Sipp::start(&rejecting(code), &[]);
        let r = place(&trunk(sipp.addr()), tone(440.0, 0.5)).await.report;
        assert_eq!(r.ending.outcome, want, "{}", timeline(&r));
        assert_eq!(r.ending.sip_status, Some(status));
        assert!(sipp.succeeded(), "{code}");
    }
}

/// RFC 3261 §8.1.3.4: a 3xx is not followed (the dialer calls the number it was given, not
/// an unscreened target): one INVITE, the 3xx ACKed, the call `rejected` with its code and
/// a reason naming the redirect.
#[tokio::test(flavor = "multi_thread")]
async fn a_redirect_is_not_followed_and_names_its_target() {
    let scenario = format!(
        "{HEAD}{}{ACK}{TAIL}",
        response(
            "302 Moved Temporarily",
            "Contact: <sip:+33699999999@192.0.2.9>\n",
            None
        )
    );
    let mut sipp = Sipp::start(&scenario, &[]);
    let r = place(&trunk(sipp.addr()), tone(440.0, 0.5)).await.report;
    assert_eq!(r.ending.outcome, Outcome::Rejected, "{}", timeline(&r));
    assert_eq!(r.ending.sip_status, Some(302));
    assert!(
        r.ending.reason.contains("redirected to")
            && r.ending.reason.contains("sip:+33699999999@192.0.2.9")
            && r.ending.reason.ends_with("not followed"),
        "{}",
        r.ending.reason
    );
    assert_eq!(
        r.timeline
            .iter()
            .filter(|(_, s)| s.starts_with("INVITE sent"))
            .count(),
        1,
        "{}",
        timeline(&r)
    );
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn ring_timeout_cancels_then_487_then_ack() {
    // The CANCEL has a single Via equal to the INVITE's top Via (RFC 3261 §9.1).
    let head = head_with(
        "      <ereg regexp=\".*\" search_in=\"hdr\" header=\"Via:\" check_it=\"true\" assign_to=\"invite_via\"/>\n",
    );
    let cancel = format!(
        r#"  <recv request="CANCEL">
    <action>{}</action>
  </recv>
  <nop hide="true" test="same" next="same_via"/>
  <recv request="NEVER" timeout="100"/>
  <label id="same_via"/>
"#,
        same_via_action()
    );
    let scenario = format!("{head}{}{cancel}\n{CANCEL_200_487}{ACK}{TAIL}", ringing());
    let mut sipp = Sipp::start(&scenario, &[]);
    let t = trunk(sipp.addr());
    let started = Instant::now();
    let r = place(&t, tone(440.0, 0.5)).await.report;
    assert_eq!(r.ending.outcome, Outcome::NoAnswer, "{}", timeline(&r));
    assert_eq!(r.ending.sip_status, Some(487));
    assert!(started.elapsed() >= t.ring_timeout);
    assert!(
        r.timeline.iter().any(|(_, s)| s.starts_with("180")),
        "{}",
        timeline(&r)
    );
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn callee_bye_mid_message() {
    let after_ack = format!(
        "  <pause milliseconds=\"1000\"/>\n{}",
        uas_request("BYE", 2, None, "")
    );
    let mut sipp = Sipp::start(&answer_scenario("0 8 101", &after_ack), &[]);
    let r = place(&trunk(sipp.addr()), tone(440.0, 5.0)).await.report;
    assert_eq!(
        r.ending.outcome,
        Outcome::HungUpMidMessage,
        "{}",
        timeline(&r)
    );
    assert!(
        r.rtp_sent > 30 && r.rtp_sent < 200,
        "{} packets",
        r.rtp_sent
    );
    assert!(sipp.succeeded());
}

fn assert_opted_out(p: &Placed, method: DtmfMethod) {
    let r = &p.report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredOptedOut,
        "{}",
        timeline(r)
    );
    assert!(p.opt_out_hook_ran && r.opt_out_recorded);
    assert_eq!(
        r.keys.first().map(|k| (k.0, k.1)),
        Some(('9', method)),
        "{:?}",
        r.keys
    );
    // The confirmation played only after the opt-out was durable.
    let pos = |needle: &str| r.timeline.iter().position(|(_, s)| s.contains(needle));
    let (durable, confirm) = (pos("opt-out recorded durably"), pos("playing Confirmation"));
    assert!(
        durable.is_some() && confirm.is_some() && durable < confirm,
        "{}",
        timeline(r)
    );
    assert!(pos("Confirmation played").is_some(), "{}", timeline(r));
}

#[tokio::test(flavor = "multi_thread")]
async fn opt_out_by_rfc4733() {
    let after_ack = format!(
        "  <pause milliseconds=\"500\"/>\n  <nop><action><exec play_pcap_audio=\"/usr/share/sip-tester/dtmf_2833_9.pcap\"/></action></nop>\n{BYE_200}"
    );
    let mut sipp = Sipp::start(&answer_scenario("0 101", &after_ack), &[]);
    let placed = place(&trunk(sipp.addr()), tone(440.0, 8.0)).await;
    assert_opted_out(&placed, DtmfMethod::Rfc4733);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn opt_out_by_sip_info() {
    let after_ack = format!(
        "  <pause milliseconds=\"500\"/>\n{}{BYE_200}",
        info_key(2, '9')
    );
    let mut sipp = Sipp::start(&answer_scenario("0 8 101", &after_ack), &[]);
    let placed = place(&trunk(sipp.addr()), tone(440.0, 8.0)).await;
    assert_opted_out(&placed, DtmfMethod::SipInfo);
    assert!(sipp.succeeded());
}

/// A pcap of RTP packets (one every 20 ms) for sipp's `play_pcap_audio` (it sends each
/// packet's UDP payload from its media port to the call's RTP address).
fn rtp_pcap(path: &std::path::Path, packets: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (n, rtp) in packets.iter().enumerate() {
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&[
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ]);
        frame.extend_from_slice(&[
            0x1f,
            0x40,
            0x1f,
            0x42,
            (udp_len >> 8) as u8,
            udp_len as u8,
            0,
            0,
        ]);
        frame.extend_from_slice(rtp);
        let usec = n as u32 * 20_000;
        out.extend_from_slice(&(usec / 1_000_000).to_le_bytes());
        out.extend_from_slice(&(usec % 1_000_000).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("pcap: {e}"));
}

/// A pcap of PCMU RTP carrying the DTMF tone for `9` (852 + 1477 Hz), for sipp to play.
fn inband_pcap(path: &std::path::Path) {
    let packets: Vec<Vec<u8>> = (0..40u32)
        .map(|n| {
            let mut rtp = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
            rtp[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            rtp[4..8].copy_from_slice(&(n * 160).to_be_bytes());
            rtp.extend((0..160).map(|i| {
                let k = (n * 160 + i) as f32 / 8000.0;
                let v = if (5..15).contains(&n) {
                    9000.0
                        * ((2.0 * std::f32::consts::PI * 852.0 * k).sin()
                            + (2.0 * std::f32::consts::PI * 1477.0 * k).sin())
                } else {
                    0.0
                };
                Codec::Pcmu.encode(v as i16)
            }));
            rtp
        })
        .collect();
    rtp_pcap(path, &packets);
}

/// RFC 4733 packets for one press of `digit` (event code) on payload type `pt`: 6 updates
/// 20 ms apart, then the end packet three times (§2.5.1.4), one timestamp for the event.
fn rfc4733_packets(pt: u8, digit: u8) -> Vec<Vec<u8>> {
    (0u16..9)
        .map(|n| {
            let end = n >= 6;
            let duration = 160 * (n.min(6) + 1);
            let mut p = vec![
                0x80,
                if n == 0 { 0x80 | pt } else { pt },
                0,
                0,
                0,
                0,
                0x30,
                0x39,
                0x0B,
                0xAD,
                0xF0,
                0x0D,
            ];
            p[2..4].copy_from_slice(&(1000 + n).to_be_bytes());
            p.extend_from_slice(&[digit, if end { 0x80 | 10 } else { 10 }]);
            p.extend_from_slice(&duration.to_be_bytes());
            p
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn opt_out_by_in_band_tones() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pcap = dir.path().join("dtmf9-inband.pcap");
    inband_pcap(&pcap);
    let after_ack = format!(
        "  <pause milliseconds=\"500\"/>\n  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n{BYE_200}",
        pcap.display()
    );
    let mut sipp = Sipp::start(&answer_scenario("0", &after_ack), &[]);
    let placed = place(&trunk(sipp.addr()), tone(440.0, 8.0)).await;
    assert_opted_out(&placed, DtmfMethod::InBand);
    assert!(sipp.succeeded());
}

const NONCE: &str = "c71e0f0e5b7f";

/// Digest response (RFC 2617 without qop) for INVITE to `uri`, as an independent check.
fn digest(user: &str, password: &str, uri: &str) -> String {
    use md5::{Digest, Md5};
    let hex = |s: String| {
        Md5::digest(s.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let ha1 = hex(format!("{user}:crieur.test:{password}"));
    let ha2 = hex(format!("INVITE:{uri}"));
    hex(format!("{ha1}:{NONCE}:{ha2}"))
}

/// Challenges the first INVITE; answers the second with 200 if `verify` (an action setting
/// `authvalid`) accepts its credentials, else challenges again.
fn auth_scenario(challenge: &str, header: &str, verify: &str) -> String {
    let challenge_resp = response(
        challenge,
        &format!("{header}: Digest realm=\"crieur.test\", nonce=\"{NONCE}\", algorithm=MD5\n"),
        None,
    );
    format!(
        r#"{HEAD}{challenge_resp}{ACK}  <recv request="INVITE">
    <action>{verify}</action>
  </recv>
  <nop hide="true" test="authvalid" next="good"/>
{challenge_resp}{ACK}  <nop next="end"/>
  <label id="good"/>
{}{ACK}{BYE_200}  <label id="end"/>
{TAIL}"#,
        response("200 OK", "", Some("0 101"))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_auth_401_and_407_right_and_wrong_password() {
    for (challenge, header) in [
        ("401 Unauthorized", "WWW-Authenticate"),
        ("407 Proxy Authentication Required", "Proxy-Authenticate"),
    ] {
        for (password, want) in [
            ("s3cret", Outcome::AnsweredCompleted),
            ("wrong", Outcome::AuthFailed),
        ] {
            // sipp's `verifyauth` reads only `Authorization`; for 407 the test checks the
            // `Proxy-Authorization` digest itself, computed independently here.
            let mut sipp = Sipp::scenario_for(move |port| {
                let uri = format!("sip:+33612345678@127.0.0.1:{port};user=phone");
                let verify = if header == "WWW-Authenticate" {
                    r#"<verifyauth assign_to="authvalid" username="alice" password="s3cret"/>"#
                        .to_owned()
                } else {
                    format!(
                        r#"<ereg regexp="response=&quot;{}&quot;" search_in="hdr" header="Proxy-Authorization:" assign_to="authvalid"/>"#,
                        digest("alice", "s3cret", &uri)
                    )
                };
                auth_scenario(challenge, header, &verify)
            })
            .timeout_error()
            .start();
            let mut t = trunk(sipp.addr());
            t.credentials = Some(Credentials {
                username: "alice".into(),
                password: password.into(),
            });
            let r = place(&t, tone(440.0, 0.5)).await.report;
            assert_eq!(
                r.ending.outcome,
                want,
                "{challenge} / {password}\n{}",
                timeline(&r)
            );
            assert!(sipp.succeeded(), "{challenge} / {password}");
        }
    }
}

/// A 403 to the INVITE that carried our credentials (after a 401) is the trunk refusing them:
/// `auth-failed`, with `credentials_sent`. A 403 to an INVITE without credentials is the
/// callee's (or the network's) refusal: `rejected`. Nothing rang in either (no 18x).
#[tokio::test(flavor = "multi_thread")]
async fn a_403_after_credentials_is_an_auth_failure_without_them_a_rejection() {
    let challenge = response(
        "401 Unauthorized",
        &format!(
            "WWW-Authenticate: Digest realm=\"crieur.test\", nonce=\"{NONCE}\", algorithm=MD5\n"
        ),
        None,
    );
    let forbidden = response("403 Forbidden", "", None);
    let scenario =
        format!("{HEAD}{challenge}{ACK}  <recv request=\"INVITE\"/>\n{forbidden}{ACK}{TAIL}");
    let mut sipp = Sipp::start(&scenario, &[]);
    let mut t = trunk(sipp.addr());
    t.credentials = Some(Credentials {
        username: "alice".into(),
        password: "wrong".into(),
    });
    let r = place(&t, tone(440.0, 0.5)).await.report;
    assert_eq!(r.ending.outcome, Outcome::AuthFailed, "{}", timeline(&r));
    assert_eq!(r.ending.sip_status, Some(403));
    assert!(r.credentials_sent);
    assert_eq!(r.first_18x, None);
    assert!(sipp.succeeded());

    // Credentials configured, but the trunk never challenged: none were sent.
    let mut sipp = Sipp::start(&rejecting("403 Forbidden"), &[]);
    t.address = sipp.addr();
    let r = place(&t, tone(440.0, 0.5)).await.report;
    assert_eq!(r.ending.outcome, Outcome::Rejected, "{}", timeline(&r));
    assert!(!r.credentials_sent);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_opt_out_write_hangs_up_without_confirming() {
    let after_ack = format!(
        "  <pause milliseconds=\"500\"/>\n{}{BYE_200}",
        info_key(2, '9')
    );
    let mut sipp = Sipp::start(&answer_scenario("0 101", &after_ack), &[]);
    let placed = place_with(
        &trunk(sipp.addr()),
        tone(440.0, 8.0),
        Err("disk full".into()),
    )
    .await;
    let r = &placed.report;
    assert_eq!(r.ending.outcome, Outcome::OptOutFailed, "{}", timeline(r));
    assert!(!r.opt_out_recorded);
    assert!(
        !r.timeline.iter().any(|(_, s)| s.contains("Confirmation")),
        "{}",
        timeline(r)
    );
    assert!(
        r.timeline.iter().any(|(_, s)| s == "BYE sent"),
        "{}",
        timeline(r)
    );
    assert!(sipp.succeeded());
}

// ---- issue 13: telephone-event types, peer address, answer direction, re-INVITE/UPDATE,
// ---- session refresh, RTCP, lead-in.

/// As [`place_full`], with a trunk option changed.
async fn place_on(trunk: &Trunk, message: Message) -> CallReport {
    place_full(trunk, message, Ok(()), DEFAULT_LEAD_IN, None)
        .await
        .report
}

#[tokio::test(flavor = "multi_thread")]
async fn opt_out_when_the_answer_renames_telephone_event() {
    // We offer telephone-event as 101; the answer names it 96. The phone sends its key with
    // the offered type (101) or the answered one (96): both are the opt-out (RFC 3264 §5.1:
    // we receive on what we offered; §6.1: the answerer's numbers are valid too).
    for pt in [101u8, 96] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pcap = dir.path().join(format!("dtmf9-pt{pt}.pcap"));
        rtp_pcap(&pcap, &rfc4733_packets(pt, 9));
        let after_ack = format!(
            "  <pause milliseconds=\"500\"/>\n  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n{BYE_200}",
            pcap.display()
        );
        let mut sipp = Sipp::start(&answer_scenario("0 96", &after_ack), &[]);
        let placed = place(&trunk(sipp.addr()), tone(440.0, 8.0)).await;
        assert_opted_out(&placed, DtmfMethod::Rfc4733);
        assert!(sipp.succeeded(), "key on {pt}");
    }
}

/// A UAS that notes our RTP port, answers, then has a third party — a socket that is not the
/// answer's address — send the RFC 4733 key `9` to that port.
fn foreign_key_scenario(script: &std::path::Path) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="crieur test UAS">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="m=audio ([0-9]+)" search_in="body" check_it="true" assign_to="m,rtpport"/>
    </action>
  </recv>
{}{}{ACK}  <pause milliseconds="500"/>
  <nop><action><exec command="bash {} [$rtpport]"/></action></nop>
{BYE_200}  <Reference variables="m"/>
{TAIL}"#,
        ringing(),
        response("200 OK", "", Some("0 101")),
        script.display()
    )
}

/// A shell script sending RFC 4733 key 9 (type 101) from one socket of its own to
/// 127.0.0.1:<port given as $1>.
fn foreign_sender(dir: &std::path::Path) -> std::path::PathBuf {
    let mut sh = String::from("exec 3>/dev/udp/127.0.0.1/$1\n");
    for p in rfc4733_packets(101, 9) {
        let bytes: String = p.iter().map(|b| format!("\\x{b:02x}")).collect();
        sh += &format!("printf '{bytes}' >&3\nsleep 0.02\n");
    }
    let path = dir.join("foreign.sh");
    std::fs::write(&path, sh).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn rtp_from_a_foreign_source_is_ignored() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let script = foreign_sender(dir.path());
    // Strict (the default): the key from a stranger does not opt the callee out.
    let mut sipp = Sipp::start(&foreign_key_scenario(&script), &[]);
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 3.0)).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert!(r.keys.is_empty(), "{:?}", r.keys);
    assert!(!r.opt_out_recorded);
    assert!(sipp.succeeded());
    // The same packets do reach the call: with symmetric RTP latching on, the first source
    // heard becomes the peer — here the stranger (the option's documented risk).
    let mut sipp = Sipp::start(&foreign_key_scenario(&script), &[]);
    let mut t = trunk(sipp.addr());
    t.symmetric_rtp = true;
    let r = place_on(&t, tone(440.0, 3.0)).await;
    assert_eq!(
        r.keys.first().map(|k| (k.0, k.1)),
        Some(('9', DtmfMethod::Rfc4733)),
        "{}",
        timeline(&r)
    );
    assert_eq!(r.ending.outcome, Outcome::AnsweredOptedOut);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn inactive_and_sendonly_answers_get_no_message() {
    for direction in ["inactive", "sendonly"] {
        let sdp = sdp_body("0 101", &format!("a={direction}\n"), "[media_port]", 1);
        // BYE with `Reason: SIP;cause=488` (RFC 3326): the answer's media is not acceptable.
        let bye = bye_checking_reason(
            "^ *SIP *; *cause=488 *; *text=&quot;the answer does not receive audio&quot; *$",
        );
        let mut sipp = Sipp::start(&answer_scenario_with(sdp, "", &bye), &["-rtp_echo"]);
        let r = place_on(&trunk(sipp.addr()), tone(440.0, 3.0)).await;
        assert_eq!(
            r.ending.outcome,
            Outcome::MediaRefused,
            "{direction}\n{}",
            timeline(&r)
        );
        assert_eq!(r.rtp_sent, 0, "{direction}");
        assert_eq!(r.message_packets, 0);
        assert_eq!(r.first_audio_at, None);
        assert_eq!(r.answered_at, None);
        assert!(
            r.timeline.iter().any(|(_, s)| s.starts_with("BYE sent")),
            "{}",
            timeline(&r)
        );
        assert!(sipp.succeeded(), "{direction}");
    }
}

/// Our SDP bodies in sipp's message trace, in order: (o= version, whole body).
fn our_sdps(trace: &str) -> Vec<(u64, String)> {
    trace
        .split("o=crieur ")
        .skip(1)
        .filter_map(|rest| {
            let version = rest.split_whitespace().nth(1)?.parse().ok()?;
            let body = rest.split("\n\n").next().unwrap_or(rest);
            Some((version, body.to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn reinvite_and_update_with_the_same_sdp_keep_the_call_and_our_version() {
    // The callee accepts rtcp-mux, so its re-offer is the same session as before.
    let same = sdp_body("0 101", "a=rtcp-mux\n", "[media_port]", 1);
    let after_ack = format!(
        "  <pause milliseconds=\"600\"/>\n{}  <pause milliseconds=\"300\"/>\n{}{BYE_200}",
        uas_reinvite(2, &same),
        uas_request_with(
            "UPDATE",
            3,
            Some("application/sdp"),
            "Session-Expires: 1800\nSupported: timer\n",
            &same
        ),
    );
    let mut sipp = Sipp::start(
        &answer_scenario_with(same.clone(), "", &after_ack),
        &["-trace_msg"],
    );
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 3.0)).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_eq!(r.message_packets, 150);
    assert!(sipp.succeeded());
    // Offer, answer to the re-INVITE, answer to the UPDATE: one o= version (RFC 3264 §8).
    let sdps = our_sdps(&sipp.messages());
    assert_eq!(sdps.len(), 3, "{sdps:?}");
    assert!(sdps.iter().all(|(v, _)| *v == sdps[0].0), "{sdps:?}");
    assert!(sdps.iter().all(|(_, b)| b.contains("a=sendrecv")));
    // The UPDATE's Session-Expires (no refresher named) is echoed with the requester as the
    // refresher, and Require: timer since it said Supported: timer (RFC 4028 §9).
    let trace = sipp.messages();
    assert!(
        trace.contains("Session-Expires: 1800;refresher=uac") && trace.contains("Require: timer"),
        "{trace}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reinvite_moves_the_media_to_another_port() {
    let new_rtp = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    new_rtp
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let port = new_rtp
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let moved = sdp_body("0 101", "", &port.to_string(), 2);
    let after_ack = format!(
        "  <pause milliseconds=\"1000\"/>\n{}{BYE_200}",
        uas_reinvite(2, &moved)
    );
    let mut sipp = Sipp::start(
        &answer_scenario_with(sdp_body("0 101", "", "[media_port]", 1), "", &after_ack),
        &["-trace_msg"],
    );
    let addr = sipp.addr();
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        while let Ok((n, from)) = new_rtp.recv_from(&mut buf) {
            if let Ok((h, p)) = crieur_media::rtp::parse(&buf[..n]) {
                got.push((from, h, p.len()));
            }
            if got.len() >= 40 {
                break;
            }
        }
        got
    });
    let r = place_on(&trunk(addr), tone(440.0, 3.0)).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    let got = receiver.join().unwrap_or_default();
    assert!(
        got.len() >= 40,
        "only {} packets at the new port",
        got.len()
    );
    // From our RTP socket, PCMU, one stream: consecutive sequence numbers.
    assert!(got
        .iter()
        .all(|(from, h, n)| Some(*from) == r.rtp_local && h.payload_type == 0 && *n == 160));
    assert!(got
        .windows(2)
        .all(|w| w[1].1.sequence == w[0].1.sequence.wrapping_add(1)));
    assert!(
        r.timeline
            .iter()
            .any(|(_, s)| s.contains(&format!("media moved to 127.0.0.1:{port}"))),
        "{}",
        timeline(&r)
    );
    assert!(sipp.succeeded());
    // Our answer differs from our offer only by the rtcp-mux the callee did not take (an
    // answer may not carry it unoffered, RFC 5761 §5.1.1): so its version is one more.
    let sdps = our_sdps(&sipp.messages());
    assert_eq!(sdps.len(), 2, "{sdps:?}");
    assert_eq!(sdps[1].0, sdps[0].0 + 1);
    assert!(sdps[0].1.contains("a=rtcp-mux") && !sdps[1].1.contains("a=rtcp-mux"));
}

/// The ACK of a re-INVITE from the UAS, CSeq `cseq`, carrying `sdp` (the answer to the offer
/// in our 2xx) if not empty.
fn uas_ack(cseq: u32, sdp: &str) -> String {
    let ct = if sdp.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\n"
    };
    format!(
        r#"  <send><![CDATA[
ACK [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$remote_from]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
{ct}Content-Length: [len]

{sdp}]]></send>
"#
    )
}

/// RFC 3261 §13.2.1, §14.2, RFC 3264: an offerless re-INVITE gets our offer in the 200; the
/// answer comes in the ACK, and when it moves the media our RTP goes to the new address.
#[tokio::test(flavor = "multi_thread")]
async fn the_answer_in_the_ack_of_an_offerless_reinvite_moves_the_media() {
    let new_rtp = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    new_rtp
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let port = new_rtp
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    let moved = sdp_body("0 101", "", &port.to_string(), 2);
    let after_ack = format!(
        "  <pause milliseconds=\"1000\"/>\n{}{}{BYE_200}",
        uas_request("INVITE", 2, None, ""),
        uas_ack(2, &moved),
    );
    let mut sipp = Sipp::start(
        &answer_scenario_with(sdp_body("0 101", "", "[media_port]", 1), "", &after_ack),
        &["-trace_msg"],
    );
    let addr = sipp.addr();
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut got = 0;
        while let Ok((n, _)) = new_rtp.recv_from(&mut buf) {
            if crieur_media::rtp::parse(&buf[..n]).is_ok() {
                got += 1;
            }
            if got >= 40 {
                break;
            }
        }
        got
    });
    let r = place_on(&trunk(addr), tone(440.0, 3.0)).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    let got = receiver.join().unwrap_or_default();
    assert!(
        got >= 40,
        "only {got} packets at the new port\n{}",
        timeline(&r)
    );
    assert!(
        r.timeline.iter().any(|(_, s)| s.contains(&format!(
            "answer in the ACK (sendrecv), media moved to 127.0.0.1:{port}"
        ))),
        "{}",
        timeline(&r)
    );
    assert!(sipp.succeeded());
}

/// RFC 3261 §13.3.1.4: our 2xx to the far end's re-INVITE never ACKed — retransmitted for
/// 64·T1 (32 s) — ends the session with our BYE.
#[tokio::test(flavor = "multi_thread")]
async fn our_2xx_to_a_reinvite_never_acked_ends_the_call_with_a_bye() {
    let same = sdp_body("0 101", "", "[media_port]", 1);
    let after_ack = format!(
        "  <pause milliseconds=\"500\"/>\n{}{BYE_200}",
        uas_request("INVITE", 2, Some("application/sdp"), &same),
    );
    let mut sipp = Sipp::start(&answer_scenario_with(same.clone(), "", &after_ack), &[]);
    let t = Instant::now();
    // A message longer than 64·T1: the call ends by the BYE, not by the message's end.
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 45.0)).await;
    assert_eq!(r.ending.outcome, Outcome::TrunkFailure, "{}", timeline(&r));
    assert!(r.ending.reason.contains("never ACKed"), "{}", timeline(&r));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(32) && took < Duration::from_secs(40),
        "{took:?}"
    );
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn hold_pauses_the_message_and_resume_continues_it() {
    // Held (sendonly) after 1 s for 1.5 s, then resumed: nothing is sent while held, the
    // message continues where it stopped, and plays to its end.
    let hold = sdp_body("0 101", "a=sendonly\n", "[media_port]", 2);
    let resume = sdp_body("0 101", "a=sendrecv\n", "[media_port]", 3);
    let after_ack = format!(
        "  <pause milliseconds=\"1000\"/>\n{}  <pause milliseconds=\"1500\"/>\n{}{BYE_200}",
        uas_reinvite(2, &hold),
        uas_reinvite(3, &resume)
    );
    let mut sipp = Sipp::start(
        &answer_scenario_with(sdp_body("0 101", "", "[media_port]", 1), "", &after_ack),
        &["-rtp_echo", "-trace_msg"],
    );
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 3.0)).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_eq!(r.message_packets, 150, "{}", timeline(&r));
    // The echo shows one gap of about the hold's length, the sequence unbroken across it.
    let got = &r.rtp_received;
    let gaps: Vec<u32> = got
        .windows(2)
        .map(|w| w[1].0.timestamp.wrapping_sub(w[0].0.timestamp))
        .filter(|&d| d != 160)
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(
        gaps[0] > 8 * 1200 && gaps[0] < 8 * 1900,
        "hold gap {} ms",
        gaps[0] / 8
    );
    assert!(got
        .windows(2)
        .all(|w| w[1].0.sequence == w[0].0.sequence.wrapping_add(1)));
    // The message took its length plus the hold.
    let (first, played) = (
        r.first_audio_at,
        r.timeline
            .iter()
            .find(|(_, s)| s == "Message played")
            .map(|(t, _)| *t),
    );
    let took = played.zip(first).map(|(p, f)| p - f).unwrap_or_default();
    assert!(took > Duration::from_millis(4300), "{took:?}");
    assert!(sipp.succeeded());
    // Our answers: recvonly to the hold (version + 1), sendrecv to the resume (+ 1 again).
    let sdps = our_sdps(&sipp.messages());
    assert_eq!(sdps.len(), 3, "{sdps:?}");
    assert!(sdps[1].1.contains("a=recvonly") && sdps[2].1.contains("a=sendrecv"));
    assert_eq!(
        (sdps[1].0, sdps[2].0),
        (sdps[0].0 + 1, sdps[0].0 + 2),
        "{sdps:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reinvite_without_a_common_codec_is_488_and_the_call_goes_on() {
    let g729 = sdp_body("18", "", "[media_port]", 2);
    let after_ack = format!(
        r#"  <pause milliseconds="500"/>
  <send><![CDATA[
INVITE [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$remote_from]
Call-ID: [call_id]
CSeq: 2 INVITE
Contact: <sip:callee@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{g729}]]></send>
  <recv response="488"/>
  <send><![CDATA[
ACK [$contact] SIP/2.0
[last_Via:]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$remote_from]
Call-ID: [call_id]
CSeq: 2 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
{BYE_200}"#
    );
    let mut sipp = Sipp::start(
        &answer_scenario_with(sdp_body("0 101", "", "[media_port]", 1), "", &after_ack),
        &[],
    );
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 2.0)).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_eq!(r.message_packets, 100);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn session_timer_with_refresher_uac_is_refreshed() {
    // The 200 asks us to refresh every 2 s (RFC 4028; below the 90 s Min-SE a real trunk
    // would allow, to keep the test short) and allows UPDATE: an UPDATE comes at ~1 s.
    let after_ack = r#"  <recv request="UPDATE">
    <action>
      <ereg regexp="[0-9]+;refresher=uac" search_in="hdr" header="Session-Expires:" check_it="true" assign_to="se"/>
    </action>
  </recv>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Session-Expires: 2;refresher=uac
Content-Length: 0

]]></send>
  <Reference variables="se"/>
"#
    .to_owned()
        + BYE_200;
    let mut sipp = Sipp::start(
        &answer_scenario_with(
            sdp_body("0 101", "", "[media_port]", 1),
            "Session-Expires: 2;refresher=uac\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE, INFO\nRequire: timer\n",
            &after_ack,
        ),
        &[],
    );
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 1.2)).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    let sent = r
        .timeline
        .iter()
        .find(|(_, s)| s == "session refresh: UPDATE sent")
        .map(|(t, _)| *t);
    let answered = r.answered_at.unwrap_or_default();
    assert!(
        sent.is_some_and(|t| t - answered >= Duration::from_millis(900)
            && t - answered < Duration::from_millis(1500)),
        "{}",
        timeline(&r)
    );
    assert!(
        r.timeline.iter().any(|(_, s)| s == "session refresh: 200"),
        "{}",
        timeline(&r)
    );
    assert!(sipp.succeeded());
}

/// RFC 3261 §14.1: our refresh UPDATE answered 491 (glare) is sent again after a random
/// 2.1–4 s (we own the Call-ID: we placed the call), not at the refresh's usual retry.
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_answered_491_is_retried_after_2_1_to_4_s() {
    let reply = |code: &str, se: u32| {
        format!(
            r#"  <recv request="UPDATE"/>
  <send><![CDATA[
SIP/2.0 {code}
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Session-Expires: {se};refresher=uac
Content-Length: 0

]]></send>
"#
        )
    };
    // The 200 sets a long interval: no third refresh before the message ends. The session
    // (10 s) outlasts the retry (5 s + 2.1–4 s): a retry past the expiry is not sent.
    let after_ack = reply("491 Request Pending", 10) + &reply("200 OK", 600) + BYE_200;
    let mut sipp = Sipp::start(
        &answer_scenario_with(
            sdp_body("0 101", "", "[media_port]", 1),
            "Session-Expires: 10;refresher=uac\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE, INFO\nRequire: timer\n",
            &after_ack,
        ),
        &[],
    );
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 10.0)).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    let sent: Vec<Duration> = r
        .timeline
        .iter()
        .filter(|(_, s)| s == "session refresh: UPDATE sent")
        .map(|(t, _)| *t)
        .collect();
    assert!(sent.len() >= 2, "{}", timeline(&r));
    let gap = sent[1] - sent[0];
    assert!(
        gap >= Duration::from_millis(2050) && gap <= Duration::from_millis(4200),
        "{gap:?}\n{}",
        timeline(&r)
    );
    assert!(
        r.timeline
            .iter()
            .any(|(_, s)| s.starts_with("session refresh: 491; retrying in ")),
        "{}",
        timeline(&r)
    );
    assert!(
        r.timeline.iter().any(|(_, s)| s == "session refresh: 200"),
        "{}",
        timeline(&r)
    );
    assert!(sipp.succeeded());
}

/// RFC 4028 §10: only a 2xx extends the session. We refresh every 2 s of a 4 s session; the
/// far end answers 500 to each refresh: retried a quarter interval later (3 s) while that is
/// before the expiry, not after, and the call is ended with a BYE when the session expires,
/// 4 s after the 2xx (sipp fails on a third UPDATE; without the expiry the refreshes went on
/// every second until the message ended).
#[tokio::test(flavor = "multi_thread")]
async fn a_session_whose_refreshes_fail_is_ended_when_it_expires() {
    // Each UPDATE answered 500 (BYE_200's reply, to an UPDATE, with another status).
    let refused = BYE_200
        .replacen("request=\"BYE\"", "request=\"UPDATE\"", 1)
        .replacen("200 OK", "500 Server Internal Error", 1);
    let after_ack = refused.repeat(2) + BYE_200;
    let mut sipp = Sipp::start(
        &answer_scenario_with(
            sdp_body("0 101", "", "[media_port]", 1),
            "Session-Expires: 4;refresher=uac\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE, INFO\nRequire: timer\n",
            &after_ack,
        ),
        &[],
    );
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 8.0)).await;
    assert_eq!(r.ending.outcome, Outcome::TrunkFailure, "{}", timeline(&r));
    let answered = r.answered_at.unwrap_or_default();
    let sent: Vec<Duration> = r
        .timeline
        .iter()
        .filter(|(_, s)| s == "session refresh: UPDATE sent")
        .map(|(t, _)| *t - answered)
        .collect();
    assert_eq!(sent.len(), 2, "{}", timeline(&r));
    let expired = r
        .timeline
        .iter()
        .find(|(_, s)| s.starts_with("session expired: no refresh of ours"))
        .map(|(t, _)| *t - answered);
    assert!(
        expired
            .is_some_and(|d| d >= Duration::from_millis(3950) && d < Duration::from_millis(4600)),
        "{}",
        timeline(&r)
    );
    assert!(sipp.succeeded());
}

/// RFC 5621 / SIP-I: the 200 carries `multipart/mixed` (SDP, then ISUP marked optional): its
/// SDP part is the answer and the message plays. Then an UPDATE whose only body is ISUP with
/// `handling=optional` is answered 200, its body ignored (RFC 3261 §20.11), not 415 (sipp
/// fails on a 415).
#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_answer_is_read_and_an_optional_body_ignored() {
    let sdp = sdp_body("0 101", "", "[media_port]", 1);
    let body = format!(
        "--sep\nContent-Type: application/sdp\n\n{sdp}\n--sep\nContent-Type: application/isup;version=itu-t92+\nContent-Disposition: signal;handling=optional\n\nIAM\n--sep--\n"
    );
    let ok = response_with("200 OK", "", Some(body)).replacen(
        "Content-Type: application/sdp\n",
        "Content-Type: multipart/mixed;boundary=sep\n",
        1,
    );
    let update = uas_request_with(
        "UPDATE",
        2,
        Some("application/isup;version=itu-t92+"),
        "Content-Disposition: signal;handling=optional\n",
        "IAM\n",
    );
    let scenario = format!("{HEAD_DIALOG}{}{ok}{ACK}{update}{BYE_200}{TAIL}", ringing());
    let mut sipp = Sipp::start(&scenario, &[]);
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 1.0)).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_eq!(r.codec, Some(Codec::Pcmu), "{}", timeline(&r));
    assert!(
        r.timeline
            .iter()
            .any(|(_, s)| s == "UPDATE without SDP (refresh): 200"),
        "{}",
        timeline(&r)
    );
    assert!(sipp.succeeded());
}

/// What the test's RTCP peer saw: (source, packet type of each packet in each compound).
struct RtcpSeen {
    from: Vec<SocketAddr>,
    /// (packet type, SSRC, sender's packet count for an SR) of the first packet of each
    /// compound, and whether the compound had SDES with a CNAME and a BYE.
    compounds: Vec<(u8, u32, u32, bool, bool)>,
}

/// Splits a compound RTCP packet with a parser written for the test (independent of the
/// crate's): the first packet's (type, SSRC, SR packet count), CNAME present, BYE present.
fn read_compound(b: &[u8]) -> Option<(u8, u32, u32, bool, bool)> {
    let word = |at: usize| {
        b.get(at..at + 4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
    };
    let (first, ssrc) = (*b.get(1)?, word(4)?);
    let packets = if first == 200 { word(20)? } else { 0 };
    let (mut at, mut cname, mut bye) = (0, false, false);
    while at + 4 <= b.len() {
        if b[at] >> 6 != 2 {
            return None;
        }
        let len = 4 * (usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]])) + 1);
        match b[at + 1] {
            202 => cname |= b.get(at + 8) == Some(&1) && b.get(at + 9).is_some_and(|&l| l > 0),
            203 => bye = true,
            _ => {}
        }
        at += len;
    }
    (at == b.len()).then_some((first, ssrc, packets, cname, bye))
}

/// A receiver report about `about` (`fraction` lost, 7 lost, jitter 80) echoing at once (DLSR
/// 0) the SR whose NTP middle bits are `lsr`.
fn crafted_rr(reporter: u32, about: u32, fraction: u8, lsr: u32) -> Vec<u8> {
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&reporter.to_be_bytes());
    p.extend_from_slice(&about.to_be_bytes());
    p.extend_from_slice(&[fraction, 0, 0, 7]);
    for w in [5000u32, 80, lsr, 0] {
        p.extend_from_slice(&w.to_be_bytes());
    }
    p
}

/// Plays the far end's RTCP on `sock` until a BYE or `deadline`: on the first SR, sends a
/// receiver report back from `sock` (and a different one from a stranger's socket, to be
/// ignored). RTP datagrams (on a multiplexed port) are skipped.
fn rtcp_peer(sock: UdpSocket, deadline: Instant) -> RtcpSeen {
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let mut seen = RtcpSeen {
        from: Vec::new(),
        compounds: Vec::new(),
    };
    let mut buf = [0u8; 1500];
    let mut answered = false;
    while Instant::now() < deadline {
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if !(200..=204).contains(&buf[1]) {
            continue; // RTP
        }
        let Some(c) = read_compound(&buf[..n]) else {
            panic!("a malformed RTCP compound: {:02x?}", &buf[..n]);
        };
        seen.from.push(from);
        seen.compounds.push(c);
        if c.0 == 200 && !answered {
            answered = true;
            let lsr = u32::from_be_bytes([buf[10], buf[11], buf[12], buf[13]]);
            let _ = stranger.send_to(&crafted_rr(0x5757, c.1, 200, 0), from);
            let _ = sock.send_to(&crafted_rr(0xFEED, c.1, 25, lsr), from);
        }
        if c.4 {
            break;
        }
    }
    seen
}

fn assert_rtcp(r: &CallReport, seen: &RtcpSeen, muxed: bool) {
    let local = r.rtp_local.unwrap_or_else(|| panic!("no RTP address"));
    assert_eq!(local.port() % 2, 0, "RTP port {} is odd", local.port());
    let rtcp_from = if muxed {
        local
    } else {
        SocketAddr::new(local.ip(), local.port() + 1)
    };
    assert!(!seen.compounds.is_empty(), "no RTCP\n{}", timeline(r));
    assert!(seen.from.iter().all(|f| *f == rtcp_from), "{:?}", seen.from);
    // Sender reports with our packet count, CNAME in every compound, BYE at the end.
    let (kind, ssrc, packets, _, _) = seen.compounds[0];
    assert_eq!(kind, 200, "the first report is not an SR");
    assert!(packets > 0);
    assert!(
        seen.compounds.iter().all(|c| c.3),
        "a compound without CNAME"
    );
    assert!(seen.compounds.iter().all(|c| c.1 == ssrc));
    assert!(seen.compounds.last().is_some_and(|c| c.4), "no RTCP BYE");
    assert_eq!(r.rtcp.sent as usize, seen.compounds.len());
    // The peer's report was read; the stranger's was not.
    assert_eq!(r.rtcp.reports_received, 1, "{:?}", r.rtcp);
    let last = r.rtcp.last_report.unwrap_or_default();
    assert_eq!(
        (last.fraction_lost, last.cumulative_lost, last.jitter),
        (25, 7, 80)
    );
    assert_eq!(r.rtcp.worst_fraction_lost, 25);
    assert!(r
        .rtcp
        .round_trip
        .is_some_and(|d| d < Duration::from_secs(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn rtcp_sender_reports_reach_the_peer_and_its_receiver_report_is_read() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = peer.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let sdp = sdp_body(
        "0 101",
        &format!("a=rtcp:{port} IN IP4 127.0.0.1\n"),
        "[media_port]",
        1,
    );
    let mut sipp = Sipp::start(&answer_scenario_with(sdp, "", BYE_200), &[]);
    let peer =
        std::thread::spawn(move || rtcp_peer(peer, Instant::now() + Duration::from_secs(20)));
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 6.0)).await;
    let seen = peer.join().unwrap_or_else(|_| panic!("RTCP peer"));
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_rtcp(&r, &seen, false);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn rtcp_mux_sends_and_reads_rtcp_on_the_rtp_port() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = peer.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let sdp = sdp_body("0 101", "a=rtcp-mux\n", &port.to_string(), 1);
    let mut sipp = Sipp::start(&answer_scenario_with(sdp, "", BYE_200), &[]);
    let peer =
        std::thread::spawn(move || rtcp_peer(peer, Instant::now() + Duration::from_secs(20)));
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 6.0)).await;
    let seen = peer.join().unwrap_or_else(|_| panic!("RTCP peer"));
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_rtcp(&r, &seen, true);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn reinvite_with_only_the_other_law_switches_codec_mid_message() {
    // Answered PCMU; after 1 s a re-INVITE offers only PCMA: the message goes on in A-law, at
    // the same place, as one stream.
    let after_ack = format!(
        "  <pause milliseconds=\"1000\"/>\n{}{BYE_200}",
        uas_reinvite(2, &sdp_body("8 101", "", "[media_port]", 2))
    );
    let mut sipp = Sipp::start(
        &answer_scenario_with(sdp_body("0 101", "", "[media_port]", 1), "", &after_ack),
        &["-rtp_echo"],
    );
    let message = tone(440.0, 3.0);
    let (ulaw, alaw) = (
        message.encoded(Codec::Pcmu).to_vec(),
        message.encoded(Codec::Pcma).to_vec(),
    );
    let r = place_on(&trunk(sipp.addr()), message).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_eq!(r.message_packets, 150);
    assert!(
        r.timeline.iter().any(|(_, s)| s.contains("codec now PCMA")),
        "{}",
        timeline(&r)
    );
    // Echoed: PCMU then PCMA, sequence unbroken, and each packet is the message's samples at
    // its place (counted from the first message packet, after the 15 of lead-in) in its law.
    let got: Vec<_> = r.rtp_received.iter().skip(15).collect();
    let switch = got
        .iter()
        .position(|(h, _)| h.payload_type == 8)
        .unwrap_or_else(|| panic!("no PCMA packet\n{}", timeline(&r)));
    assert!(switch > 20, "switched after {switch} packets");
    assert!(got[..switch].iter().all(|(h, _)| h.payload_type == 0));
    assert!(got[switch..].iter().all(|(h, _)| h.payload_type == 8));
    assert!(got
        .windows(2)
        .all(|w| w[1].0.sequence == w[0].0.sequence.wrapping_add(1)));
    for (k, (_, p)) in got.iter().enumerate() {
        let law = if k < switch { &ulaw } else { &alaw };
        let want = &law[k * 160..((k + 1) * 160).min(law.len())];
        assert_eq!(&p[..want.len()], want, "packet {k}");
    }
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_the_far_end_does_not_refresh_is_ended_before_it_expires() {
    // The 200 makes the far end the refresher every 3 s; it never refreshes: we send BYE
    // min(32 s, 3 s / 3) = 1 s before the session would expire (RFC 4028 §10).
    let mut sipp = Sipp::start(
        &answer_scenario_with(
            sdp_body("0 101", "", "[media_port]", 1),
            "Session-Expires: 3;refresher=uas\nRequire: timer\n",
            BYE_200,
        ),
        &[],
    );
    let r = place_on(&trunk(sipp.addr()), tone(440.0, 6.0)).await;
    assert_eq!(r.ending.outcome, Outcome::TrunkFailure, "{}", timeline(&r));
    let expired = r
        .timeline
        .iter()
        .find(|(_, s)| s.contains("without the far end's refresh"))
        .map(|(t, _)| *t - r.answered_at.unwrap_or_default());
    assert!(
        expired
            .is_some_and(|d| d >= Duration::from_millis(1950) && d < Duration::from_millis(2500)),
        "{}",
        timeline(&r)
    );
    assert!(r.message_packets < 150, "{}", r.message_packets);
    assert!(sipp.succeeded());
}

/// `regexp` as a sipp `ereg` on `header` of the received message, failing the call when absent
/// or different (`check_it`), or when present (`inverse`).
fn check_header(header: &str, regexp: &str, var: &str, inverse: bool) -> String {
    let check = if inverse {
        r#"check_it_inverse="true""#
    } else {
        r#"check_it="true""#
    };
    format!(
        r#"<ereg regexp="{regexp}" search_in="hdr" header="{header}:" {check} assign_to="{var}"/>"#
    )
}

/// A regexp matching `s` literally (sipp uses POSIX extended regexps).
fn literal(s: &str) -> String {
    s.chars()
        .map(|c| {
            if "\\^$.|?*+()[]{}".contains(c) {
                format!("\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn invite_says_allow_supported_pai_and_user_phone_and_in_dialog_options_405() {
    use crieur_media::signalling::{allow, SUPPORTED};
    let supported = if SUPPORTED.is_empty() {
        // Nothing supported: no Supported header at all.
        check_header("Supported", ".", "supported", true)
    } else {
        check_header(
            "Supported",
            &format!("^ *{} *$", literal(&SUPPORTED.join(", "))),
            "supported",
            false,
        )
    };
    let checks = [
        check_header("Allow", &format!("^ *{} *$", literal(&allow())), "allow", false),
        supported,
        check_header(
            "P-Asserted-Identity",
            "^ *&lt;sip:\\+33100000000@crieur\\.test;user=phone&gt; *$",
            "pai",
            false,
        ),
        check_header(
            "To",
            "^ *&lt;sip:\\+33612345678@127\\.0\\.0\\.1:[0-9]+;user=phone&gt; *$",
            "to",
            false,
        ),
        check_header(
            "From",
            "^ *&lt;sip:\\+33100000000@crieur\\.test;user=phone&gt;;tag=",
            "from",
            false,
        ),
        // The Request-URI (RFC 3261 §19.1.1).
        r#"<ereg regexp="^INVITE sip:\+33612345678@127\.0\.0\.1:[0-9]+;user=phone SIP/2\.0" search_in="msg" check_it="true" assign_to="ruri"/>"#.to_owned(),
        // For the requests sipp sends in the dialog.
        r#"<ereg regexp="sip:[^&gt;; ]*" search_in="hdr" header="Contact:" check_it="true" assign_to="contact"/>"#.to_owned(),
        r#"<ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="remote_from"/>"#.to_owned(),
    ];
    // In the dialog: OPTIONS → 200 with Allow; MESSAGE (not implemented) → 405.
    let in_dialog = format!(
        "{}{}",
        uas_request("OPTIONS", 2, None, "").replace(
            r#"<recv response="200"/>"#,
            &format!(
                r#"<recv response="200"><action>{}</action></recv>
  <Reference variables="dlg_allow"/>"#,
                check_header(
                    "Allow",
                    &format!("^ *{} *$", literal(&allow())),
                    "dlg_allow",
                    false
                )
            )
        ),
        uas_request("MESSAGE", 3, Some("text/plain"), "hi")
            .replace(r#"<recv response="200"/>"#, r#"<recv response="405"/>"#)
    );
    let scenario = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="crieur INVITE headers">
  <recv request="INVITE" crlf="true">
    <action>
      {}
    </action>
  </recv>
  <Reference variables="allow,supported,pai,to,from,ruri"/>
{}{ACK}{in_dialog}{BYE_200}{TAIL}"#,
        checks.join("\n      "),
        response("200 OK", "", Some("0 101"))
    );
    let mut sipp = Sipp::start(&scenario, &[]);
    let mut t = trunk(sipp.addr());
    t.p_asserted_identity = Some("sip:+33100000000@crieur.test".into());
    let r = place(&t, tone(440.0, 2.0)).await.report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert!(sipp.succeeded(), "an INVITE header was missing or wrong");
}

/// sipp actions setting `same` when the received request's Via header equals `invite_via`
/// byte for byte.
fn same_via_action() -> &'static str {
    r#"
      <ereg regexp=".*" search_in="hdr" header="Via:" check_it="true" assign_to="req_via"/>
      <strcmp assign_to="diff" variable="invite_via" variable2="req_via"/>
      <test assign_to="same" variable="diff" compare="equal" value="0"/>
    "#
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ack_of_a_486_carries_the_invite_top_via_exactly() {
    // Like a real trunk (RFC 3581, RFC 3261 §18.2.1), sipp answers 486 with our Via plus
    // `rport=<port>` and `received=`; the ACK must carry the INVITE's Via as it was sent
    // (RFC 3261 §17.1.1.3), compared byte for byte.
    let scenario = format!(
        r#"{}  <Reference variables="whole"/>
  <send retrans="500"><![CDATA[
SIP/2.0 486 Busy Here
Via: [$pre];rport=[remote_port][$post];received=127.0.0.2
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK">
    <action>{}</action>
  </recv>
  <nop hide="true" test="same" next="good"/>
  <!-- Different: wait for a message that never comes, which fails the call. -->
  <recv request="NEVER" timeout="100"/>
  <label id="good"/>
{TAIL}"#,
        head_with(
            r#"      <ereg regexp=".*" search_in="hdr" header="Via:" check_it="true" assign_to="invite_via"/>
      <ereg regexp="^ *(.*);rport(.*)$" search_in="hdr" header="Via:" check_it="true" assign_to="whole,pre,post"/>
"#
        ),
        same_via_action()
    );
    let mut sipp = Sipp::start(&scenario, &[]);
    let r = place(&trunk(sipp.addr()), tone(440.0, 0.3)).await.report;
    assert_eq!(r.ending.outcome, Outcome::Busy, "{}", timeline(&r));
    assert!(sipp.succeeded(), "the ACK's Via differs from the INVITE's");
}

/// An out-of-dialog request from sipp (as a UAC) to `[remote_ip]:[remote_port]`.
fn uac_request(method: &str, cseq: u32, body: &str) -> String {
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: text/plain\n"
    };
    format!(
        r#"  <send><![CDATA[
{method} sip:crieur@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:probe@[local_ip]:[local_port]>;tag=[pid]probe[call_number]
To: <sip:crieur@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} {method}
Max-Forwards: 70
{ct}Content-Length: [len]

{body}]]></send>
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn options_get_our_capabilities_and_unknown_methods_405() {
    use crieur_media::signalling::allow;
    let uac = local_uac().await;
    // sipp as a UAC (a trunk's keepalive, then a method we do not implement).
    let allow_check =
        |var: &str| check_header("Allow", &format!("^ *{} *$", literal(&allow())), var, false);
    let scenario = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="probe">
{}  <recv response="200">
    <action>
      {}
      {}
    </action>
  </recv>
{}  <recv response="405">
    <action>{}</action>
  </recv>
  <Reference variables="allow1,accept,allow2"/>
{TAIL}"#,
        uac_request("OPTIONS", 1, ""),
        allow_check("allow1"),
        check_header(
            "Accept",
            &literal(crieur_sip::endpoint::SDP_ACCEPT),
            "accept",
            false,
        ),
        uac_request("MESSAGE", 2, "hello"),
        allow_check("allow2"),
    );
    let target = uac.local_addr().to_string();
    // As a UAC sipp may be done before `Sipp::start` looks: started once, its exit status read.
    // It runs in its own process; this runtime stays free to answer.
    let ok = tokio::task::spawn_blocking(move || {
        Sipp::scenario(&scenario)
            .timeout_error()
            .args(&[&target])
            .start_once()
            .succeeded()
    })
    .await
    .unwrap_or(false);
    assert!(ok, "OPTIONS or MESSAGE got the wrong answer");
}

// ---------------------------------------------------------------------------------------
// Answering-machine detection against sipp: sipp answers and plays, as the callee's audio,
// a pcap of PCMU RTP made from espeak-ng speech (a person's "Hello?" or a machine's greeting)
// with or without a beep.

/// `text` spoken by espeak-ng, through sox to 8 kHz µ-law (as a phone line carries it).
fn spoken(text: &str, dir: &std::path::Path) -> Vec<u8> {
    let raw = dir.join("raw.wav");
    let wav = dir.join("speech.wav");
    let ok = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "165", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap_or_else(|e| panic!("espeak-ng (apt-get install espeak-ng): {e}"));
    assert!(ok.success());
    let ok = Command::new("sox")
        .arg(&raw)
        .args(["-r", "8000", "-c", "1", "-e", "mu-law", "-b", "8"])
        .arg(&wav)
        // Leading and trailing silence trimmed: the speech ends where the file does.
        .args(["norm", "-8", "silence", "1", "0.02", "-50d", "reverse"])
        .args(["silence", "1", "0.02", "-50d", "reverse"])
        .status()
        .unwrap_or_else(|e| panic!("sox: {e}"));
    assert!(ok.success());
    let m = Message::load(&wav).unwrap_or_else(|e| panic!("{e}"));
    m.encoded(Codec::Pcmu).to_vec()
}

fn ulaw_silence(ms: usize) -> Vec<u8> {
    vec![Codec::Pcmu.encode(0); ms * 8]
}

fn ulaw_tone(hz: f32, ms: usize) -> Vec<u8> {
    (0..ms * 8)
        .map(|n| {
            let v = 8000.0 * (2.0 * std::f32::consts::PI * hz * n as f32 / 8000.0).sin();
            Codec::Pcmu.encode(v as i16)
        })
        .collect()
}

/// µ-law audio as a pcap of 20 ms PCMU RTP packets.
fn ulaw_pcap(path: &std::path::Path, audio: &[u8]) {
    let packets: Vec<Vec<u8>> = audio
        .chunks(160)
        .enumerate()
        .map(|(n, chunk)| {
            let mut rtp = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x0A, 0x0B, 0x0C, 0x0D];
            rtp[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            rtp[4..8].copy_from_slice(&(n as u32 * 160).to_be_bytes());
            rtp.extend_from_slice(chunk);
            rtp
        })
        .collect();
    rtp_pcap(path, &packets);
}

/// Answers, plays `audio` (µ-law) as the callee 200 ms after the ACK, then waits for our BYE.
async fn amd_call(
    audio: &[u8],
    message: Message,
    mode: crieur_media::call::AmdMode,
) -> (CallReport, Duration) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pcap = dir.path().join("callee.pcap");
    ulaw_pcap(&pcap, audio);
    let after_ack = format!(
        "  <pause milliseconds=\"200\"/>\n  <nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n{BYE_200}",
        pcap.display()
    );
    let mut sipp = Sipp::start(&answer_scenario("0", &after_ack), &[]);
    let amd = crieur_media::uac::AmdRequest {
        mode,
        params: crieur_media::amd::AmdParams::default(),
        voicemail: Some(Arc::new(tone(880.0, 2.0))),
        voicemail_sha256: None,
    };
    let report = place_full(
        &trunk(sipp.addr()),
        message,
        Ok(()),
        DEFAULT_LEAD_IN,
        Some(amd),
    )
    .await
    .report;
    assert!(sipp.succeeded(), "{:#?}", report.timeline);
    let answered = report
        .answered_at
        .unwrap_or_else(|| panic!("not answered: {:#?}", report.timeline));
    (report, answered)
}

/// [`amd_call`] with our speech message in `voicemail-drop` mode, on a machine: the call ends
/// `machine-message-left`.
async fn voicemail_left(audio: &[u8]) -> (CallReport, Duration) {
    let (r, answered) = amd_call(
        audio,
        speech_message(),
        crieur_media::call::AmdMode::VoicemailDrop,
    )
    .await;
    assert_eq!(
        r.ending.outcome,
        Outcome::MachineMessageLeft,
        "{:#?}",
        r.timeline
    );
    (r, answered)
}

/// The project's own message (speech, 14 s, −23 dBFS RMS): what the detector hears back as
/// echo reference, at a speaking level (a full-scale tone would make a greeting under it
/// read as its echo).
fn speech_message() -> Message {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../audio/rappel-fr.wav");
    Message::load(&p).unwrap_or_else(|e| panic!("{e}"))
}

const GREETING: &str = "Hello, you have reached the voicemail of John Smith. I am not available \
    to take your call right now. Please leave your name and number after the tone.";

#[tokio::test(flavor = "multi_thread")]
async fn amd_greeting_and_beep_then_the_voicemail_message() {
    use crieur_media::amd::{Cause, Kind};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let greeting = spoken(GREETING, dir.path());
    let beep_end_ms = 200 + greeting.len() / 8 + 400 + 500;
    let audio = [
        greeting,
        ulaw_silence(400),
        ulaw_tone(1000.0, 500),
        ulaw_silence(6000),
    ]
    .concat();
    // The message (14 s) would still be playing when the beep comes.
    let (r, answered) = voicemail_left(&audio).await;
    let a = r.amd.as_ref().unwrap_or_else(|| panic!("no AMD report"));
    let (machine_at, v) = a.verdicts[0];
    assert_eq!(v.kind, Kind::Machine, "{a:#?}");
    assert!(
        matches!(v.cause, Cause::LongGreeting | Cause::MaxWords),
        "{a:#?}"
    );
    // The message started at the answer (the 2 s rule) and was stopped by the verdict.
    let first = r
        .first_audio_at
        .unwrap_or_else(|| panic!("no message audio"));
    assert!(
        first - answered < Duration::from_millis(400),
        "{:#?}",
        r.timeline
    );
    assert!(machine_at > first);
    let (_, beep) = a.beeps[0];
    assert!((beep.freq_hz - 1000.0).abs() < 15.0, "{beep:?}");
    // The beep as heard, against where the pcap put it (from the answer; the pcap starts
    // 200 ms after the ACK, give or take sipp's scheduling).
    let heard_end = beep.end.as_millis() as i64;
    assert!(
        (heard_end - beep_end_ms as i64).abs() < 250,
        "beep heard ending at {heard_end} ms, sent ending at {beep_end_ms} ms"
    );
    // The voicemail message's first RTP packet left after the beep ended, within 300 ms.
    let vm = a
        .voicemail_started_at
        .unwrap_or_else(|| panic!("no voicemail audio: {:#?}", r.timeline));
    let beep_end = answered + beep.end;
    assert!(
        vm > beep_end,
        "voicemail at {vm:?}, beep ended {beep_end:?}"
    );
    // Started by the beep, not by the fallback on the silence after the greeting (3 s):
    // `beep.end` is audio time since the answer and `vm` wall time, so the two differ by the
    // far end's start-up jitter too. The ≤ 300 ms p95 of the issue is a figure measured over
    // a corpus (BENCHMARKS.md, `amd_e2e`), not a bound one call can assert on a loaded host.
    assert!(
        vm - beep_end < Duration::from_millis(1_000),
        "{:?}",
        vm - beep_end
    );
    // The whole voicemail message (2 s) played.
    assert_eq!(a.voicemail_packets, 100, "{:#?}", r.timeline);
}

/// A chime's note taken for the beep, then the real beep late in the restart window (its
/// settle wait ending after the window closes): the voicemail message restarts after the real
/// beep. The UAC stops feeding the detector once it says it is done; before `is_done` waited
/// for a beep's settle, the second drop point never came and the message played on from the
/// chime.
#[tokio::test(flavor = "multi_thread")]
async fn amd_the_real_beep_after_a_chime_restarts_the_voicemail_message() {
    use crieur_media::amd::DropCause;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let greeting = spoken(GREETING, dir.path());
    // From the answer (the pcap starts 200 ms after the ACK): the chime's note ends at
    // `chime_end_ms`, its drop point comes ~280 ms later (`beep_settle`), the restart window
    // (1 s) closes ~1.28 s after the note's end; the real beep ends 1.08 s after the note's,
    // inside the window, and its own settle runs past it.
    let chime_end_ms = 200 + greeting.len() / 8 + 400 + 180;
    let beep_end_ms = chime_end_ms + 900 + 180;
    let audio = [
        greeting,
        ulaw_silence(400),
        ulaw_tone(880.0, 180),
        ulaw_silence(900),
        ulaw_tone(880.0, 180),
        ulaw_silence(6000),
    ]
    .concat();
    let (r, answered) = voicemail_left(&audio).await;
    let a = r.amd.as_ref().unwrap_or_else(|| panic!("no AMD report"));
    assert!(
        r.timeline
            .iter()
            .any(|(_, what)| what.contains("the voicemail message restarts")),
        "{:#?}",
        r.timeline
    );
    // The last drop point is the real beep's, and the message started (again) after it.
    let (_, drop) = a.drop.unwrap_or_else(|| panic!("no drop point: {a:#?}"));
    let DropCause::Beep(beep) = drop.cause else {
        panic!("not a beep's drop point: {a:#?}");
    };
    let heard_end = beep.end.as_millis() as i64;
    assert!(
        (heard_end - beep_end_ms as i64).abs() < 250,
        "the last drop's beep ends at {heard_end} ms, the real beep at {beep_end_ms} ms \
         (the chime's note at {chime_end_ms} ms)"
    );
    let vm = a
        .voicemail_started_at
        .unwrap_or_else(|| panic!("no voicemail audio: {:#?}", r.timeline));
    assert!(vm > answered + beep.end, "{:#?}", r.timeline);
}

#[tokio::test(flavor = "multi_thread")]
async fn amd_a_person_hears_the_whole_message() {
    use crieur_media::amd::Kind;
    use crieur_media::call::AmdMode;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let audio = [spoken("Hello?", dir.path()), ulaw_silence(8000)].concat();
    let message = speech_message();
    let packets = message.len().div_ceil(160) as u64;
    let (r, _) = amd_call(&audio, message, AmdMode::VoicemailDrop).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{:#?}",
        r.timeline
    );
    let a = r.amd.as_ref().unwrap_or_else(|| panic!("no AMD report"));
    assert_eq!(a.verdict().map(|v| v.kind), Some(Kind::Human), "{a:#?}");
    assert_eq!(
        r.message_packets, packets,
        "the message played uninterrupted"
    );
    assert_eq!(a.voicemail_packets, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn amd_no_beep_falls_back_on_the_greeting_end() {
    use crieur_media::amd::DropCause;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let greeting = spoken(GREETING, dir.path());
    let greeting_end_ms = 200 + greeting.len() / 8;
    let audio = [greeting, ulaw_silence(8000)].concat();
    let (r, answered) = voicemail_left(&audio).await;
    let a = r.amd.as_ref().unwrap_or_else(|| panic!("no AMD report"));
    let (_, drop) = a.drop.unwrap_or_else(|| panic!("no drop point: {a:#?}"));
    assert_eq!(drop.cause, DropCause::Silence, "{a:#?}");
    assert!(a.beeps.is_empty());
    // After `greeting_end_silence` (3 s) of silence following the greeting.
    let vm = a
        .voicemail_started_at
        .unwrap_or_else(|| panic!("no voicemail audio"));
    let after = (vm - answered).as_millis() as i64 - greeting_end_ms as i64;
    assert!(
        (2800..3600).contains(&after),
        "voicemail {after} ms after the greeting's end"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn amd_hang_up_on_machine() {
    use crieur_media::call::AmdMode;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let audio = [spoken(GREETING, dir.path()), ulaw_silence(3000)].concat();
    let (r, _) = amd_call(&audio, speech_message(), AmdMode::HangUpOnMachine).await;
    assert_eq!(
        r.ending.outcome,
        Outcome::MachineHungUp,
        "{:#?}",
        r.timeline
    );
    assert_eq!(r.amd.as_ref().map(|a| a.voicemail_packets), Some(0));
}

/// A network announcement after a Special Information Tone (Telcordia's table: vacant code is
/// 985.2 Hz long, 1,370.6 Hz short, 1,776.7 Hz long; no circuit intra-LATA 985.2 long,
/// 1,428.5 long, 1,776.7 long): the call hangs up on the tone, `intercepted` (a vacant number,
/// not dialled again) or `intercepted-congestion` (retried), with no voicemail message played
/// into the announcement — in `voicemail-drop` (where the third tone would otherwise be taken
/// for the beep) and in `detect`.
#[tokio::test(flavor = "multi_thread")]
async fn amd_sit_then_announcement_is_intercepted_with_no_voicemail() {
    use crieur_media::amd::SitKind;
    use crieur_media::call::AmdMode;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let announcement = spoken(
        "We're sorry. The number you have dialed is not in service. Please check the number \
         and dial again.",
        dir.path(),
    );
    for (mode, f1, l1, f2, l2, kind, outcome) in [
        (
            AmdMode::VoicemailDrop,
            985.2,
            380,
            1370.6,
            274,
            SitKind::VacantCode,
            Outcome::Intercepted,
        ),
        (
            AmdMode::Detect,
            985.2,
            380,
            1428.5,
            380,
            SitKind::NoCircuitIntra,
            Outcome::InterceptedCongestion,
        ),
    ] {
        let audio = [
            ulaw_silence(300),
            ulaw_tone(f1, l1),
            ulaw_tone(f2, l2),
            ulaw_tone(1776.7, 380),
            ulaw_silence(200),
            announcement.clone(),
            ulaw_silence(6000),
        ]
        .concat();
        let (r, _) = amd_call(&audio, speech_message(), mode).await;
        assert_eq!(r.ending.outcome, outcome, "{mode:?}: {:#?}", r.timeline);
        let a = r.amd.as_ref().unwrap_or_else(|| panic!("no AMD report"));
        let (_, sit) = a.sit.unwrap_or_else(|| panic!("no SIT: {:#?}", r.timeline));
        assert_eq!(sit.kind, kind);
        // Its third tone ends ~1.5 s after the answer (200 ms + 300 ms + 1,034 ms).
        let end = sit.segments[2].end.as_millis();
        assert!((1_300..1_900).contains(&end), "{sit:?}");
        assert_eq!(a.voicemail_packets, 0, "{:#?}", r.timeline);
        assert!(a.drop.is_none(), "{a:#?}");
        assert!(a.beeps.is_empty(), "the third tone is no beep: {a:#?}");
    }
}

// ---- issue 19: the SIP core against sipp -------------------------------------------------

/// Digest response (no qop) for an INVITE to `uri` with `nonce`, by `algorithm` ("MD5",
/// "SHA-256"), computed here independently of the code under test (RFC 7616 §3.4.1).
fn digest_with(algorithm: &str, user: &str, password: &str, uri: &str, nonce: &str) -> String {
    let hex = |s: String| -> String {
        let bytes: Vec<u8> = if algorithm == "SHA-256" {
            use sha2::Digest;
            sha2::Sha256::digest(s.as_bytes()).to_vec()
        } else {
            use md5::Digest;
            md5::Md5::digest(s.as_bytes()).to_vec()
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let ha1 = hex(format!("{user}:crieur.test:{password}"));
    let ha2 = hex(format!("INVITE:{uri}"));
    hex(format!("{ha1}:{nonce}:{ha2}"))
}

/// A UAS whose `challenges` (header values of successive 401s) are answered in turn; the
/// INVITE after the last must carry `response="<expected>"` (checked by sipp) to get a 200.
fn challenged_scenario(challenges: &[String], expected: &str) -> String {
    let mut s = String::from(HEAD);
    for (i, c) in challenges.iter().enumerate() {
        if i > 0 {
            s += "  <recv request=\"INVITE\"/>\n";
        }
        s += &response(
            "401 Unauthorized",
            &format!("WWW-Authenticate: {c}\n"),
            None,
        );
        s += ACK;
    }
    s += &format!(
        r#"  <recv request="INVITE">
    <action><ereg regexp="response=&quot;{expected}&quot;" search_in="hdr" header="Authorization:" check_it="true" assign_to="ok"/></action>
  </recv>
  <Reference variables="ok"/>
"#
    );
    s += &response("200 OK", "", Some("0 101"));
    s += ACK;
    s += BYE_200;
    s += TAIL;
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_nonce_is_answered_again_with_the_new_nonce() {
    // 401 (nonce n1), our credentials, 401 stale=true (nonce n2): the third INVITE must answer
    // n2 with the same password (RFC 7616 §3.3), and the call goes on.
    let mut sipp = Sipp::scenario_for(|port| {
        let uri = format!("sip:+33612345678@127.0.0.1:{port};user=phone");
        challenged_scenario(
            &[
                r#"Digest realm="crieur.test", nonce="n1", algorithm=MD5"#.into(),
                r#"Digest realm="crieur.test", nonce="n2", algorithm=MD5, stale=true"#.into(),
            ],
            &digest_with("MD5", "alice", "s3cret", &uri, "n2"),
        )
    })
    .timeout_error()
    .start();
    let mut t = trunk(sipp.addr());
    t.credentials = Some(Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    });
    let r = place(&t, tone(440.0, 0.5)).await.report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert!(r.credentials_sent);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn sha256_digest_is_answered_with_sha256() {
    // sipp's `verifyauth` knows MD5 only: the expected SHA-256 response is computed here (sha2)
    // and matched by sipp in the Authorization header.
    let mut sipp = Sipp::scenario_for(|port| {
        let uri = format!("sip:+33612345678@127.0.0.1:{port};user=phone");
        challenged_scenario(
            &[r#"Digest realm="crieur.test", nonce="s256", algorithm=SHA-256"#.into()],
            &digest_with("SHA-256", "alice", "s3cret", &uri, "s256"),
        )
    })
    .timeout_error()
    .start();
    let mut t = trunk(sipp.addr());
    t.credentials = Some(Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    });
    let r = place(&t, tone(440.0, 0.5)).await.report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert!(sipp.succeeded());
}

/// A response to the INVITE from one fork (its own To tag), with SDP if `sdp`.
fn fork_response(code: &str, tag: &str, sdp: bool) -> String {
    response(code, "", sdp.then_some("0 101")).replace(
        "[last_To:];tag=[pid]SIPpTag01[call_number]",
        &format!("[last_To:];tag={tag}"),
    )
}

/// Our BYE to the fork `tag` (checked in its To), answered 200.
fn bye_to(tag: &str) -> String {
    BYE_200.replacen(
        r#"<recv request="BYE"/>"#,
        &format!(
            r#"<recv request="BYE">
    <action><ereg regexp="tag={tag}" search_in="hdr" header="To:" check_it="true" assign_to="bye_{tag}"/></action>
  </recv>
  <Reference variables="bye_{tag}"/>"#
        ),
        1,
    )
}

/// The scenario's start, keeping the INVITE's Via, From and To (for [`late_200`]).
fn head_keeping_the_invite() -> String {
    head_with(
        r#"      <ereg regexp=".*" search_in="hdr" header="Via:" check_it="true" assign_to="inv_via"/>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="inv_from"/>
      <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="inv_to"/>
"#,
    )
}

/// A 200 to the INVITE from the fork `tag`, written from the INVITE's headers kept by
/// [`head_keeping_the_invite`] (after an ACK, sipp's `last_` ones are the ACK's).
fn late_200(tag: &str) -> String {
    format!(
        r#"  <send><![CDATA[
SIP/2.0 200 OK
Via: [$inv_via]
From: [$inv_from]
To: [$inv_to];tag={tag}
[last_Call-ID:]
CSeq: 1 INVITE
Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

{}]]></send>
"#,
        sdp_body("0 101", "", "[media_port]", 1)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn forking_first_2xx_wins_the_other_is_acked_and_byed() {
    // Two forks ring, both answer: the first 200 (forkA) is the call; the second (forkB), once
    // forkA's is ACKed, is ACKed and sent a BYE at once (RFC 3261 §13.2.2.4); the call then
    // plays and hangs up forkA. (sipp cannot take a message between two of its own sends, so
    // forkB's 200 follows forkA's ACK.)
    let head = head_keeping_the_invite();
    let ok_b = late_200("forkB");
    let scenario = format!(
        "{head}{}{}{}{ACK}{ok_b}{ACK}{}{}{TAIL}",
        fork_response("180 Ringing", "forkA", false),
        fork_response("180 Ringing", "forkB", false),
        fork_response("200 OK", "forkA", true),
        bye_to("forkB"),
        bye_to("forkA"),
    );
    let mut sipp = Sipp::start(&scenario, &[]);
    let r = place(&trunk(sipp.addr()), tone(440.0, 0.5)).await.report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_eq!(r.message_packets, 25);
    assert!(sipp.succeeded(), "{}", sipp.messages());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forks_2xx_after_a_486_is_acked_and_byed() {
    // One fork rejects the call (486, ACKed), then another answers (200, its own To tag):
    // RFC 3261 §13.2.2.4 wants every 2xx ACKed, and the call has failed, so that dialog gets
    // an ACK and a BYE. sipp expects both (and fails the scenario without them); the call stays
    // busy: nothing is played. The UAC is kept until sipp is done (the late 2xx reaches it).
    let scenario = format!(
        "{}{}{ACK}{}{ACK}{}{TAIL}",
        head_keeping_the_invite(),
        fork_response("486 Busy Here", "forkA", false),
        late_200("forkB"),
        bye_to("forkB"),
    );
    let mut sipp = Sipp::start(&scenario, &[]);
    let uac = local_uac().await;
    let r = call_on(
        &uac,
        &trunk(sipp.addr()),
        tone(440.0, 0.3),
        Ok(()),
        DEFAULT_LEAD_IN,
        None,
    )
    .await
    .report;
    assert_eq!(r.ending.outcome, Outcome::Busy, "{}", timeline(&r));
    assert_eq!(r.rtp_sent, 0, "{}", timeline(&r));
    assert!(sipp.succeeded(), "{}", sipp.messages());
    drop(uac);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2xx_crossing_the_cancel_is_acked_then_byed() {
    // The ring timeout's CANCEL crosses the callee's 200: the 200 is ACKed and the call hung
    // up at once with a BYE; nothing is played; `no-answer` with the 200 recorded.
    // The callee answers the CANCEL (200) while its 200 to the INVITE is on the way (sipp cannot
    // take our ACK between two of its own sends, so the CANCEL's 200 goes first).
    let cancel_crossed = r#"  <recv request="CANCEL"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [last_cseq_number] INVITE
Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
]]></send>
"#;
    let scenario = format!("{HEAD}{}{cancel_crossed}{ACK}{BYE_200}{TAIL}", ringing());
    let mut sipp = Sipp::start(&scenario, &[]);
    let r = place(&trunk(sipp.addr()), tone(440.0, 0.5)).await.report;
    assert_eq!(r.ending.outcome, Outcome::NoAnswer, "{}", timeline(&r));
    assert_eq!(r.ending.sip_status, Some(200), "{}", timeline(&r));
    assert_eq!(r.rtp_sent, 0);
    // No media set up for it: no stream opened, no RTCP (not even the BYE report).
    assert_eq!(r.rtcp.sent, 0, "{}", timeline(&r));
    assert_eq!(r.codec, None, "{}", timeline(&r));
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn record_route_sends_the_dialog_through_the_proxy() {
    // The 200 carries `Record-Route: <sip:proxy;lr>`: our ACK and BYE must go to the proxy
    // (a second sipp, standing in for it), with `Route: <sip:proxy;lr>` and the callee's
    // Contact as Request-URI (RFC 3261 §12.1.2, §12.2.1.1). The callee's sipp only answers.
    let proxy_checks = |method: &str| {
        format!(
            r#"  <recv request="{method}">
    <action>
      <ereg regexp="^{method} sip:callee@127\.0\.0\.1:[0-9]+" search_in="msg" check_it="true" assign_to="ruri_{method}"/>
      <ereg regexp="^ *&lt;sip:127\.0\.0\.1:[0-9]+;lr&gt; *$" search_in="hdr" header="Route:" check_it="true" assign_to="route_{method}"/>
    </action>
  </recv>
  <Reference variables="ruri_{method},route_{method}"/>
"#
        )
    };
    let proxy_scenario = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="crieur test proxy">
{}{}  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
{TAIL}"#,
        proxy_checks("ACK"),
        proxy_checks("BYE")
    );
    let mut proxy = Sipp::start(&proxy_scenario, &[]);
    let record_route = format!("Record-Route: <sip:{};lr>\n", proxy.addr());
    let callee = format!(
        "{HEAD}{}{}{TAIL}",
        ringing(),
        response("200 OK", &record_route, Some("0 101"))
            .replace(r#"<send retrans="500">"#, "<send>")
    );
    let mut sipp = Sipp::start(&callee, &[]);
    let r = place(&trunk(sipp.addr()), tone(440.0, 0.5)).await.report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert!(
        proxy.succeeded(),
        "the ACK and BYE did not reach the proxy as they should"
    );
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_over_tcp() {
    // sipp as a TCP UAS (`-t t1`): our INVITE, ACK and BYE on one connection we opened, its
    // responses back on it; Via says TCP, Contact `;transport=tcp`; no retransmission.
    let checks = r#"      <ereg regexp="^ *SIP/2\.0/TCP 127\.0\.0\.1:[0-9]+;branch=z9hG4bK" search_in="hdr" header="Via:" check_it="true" assign_to="via"/>
      <ereg regexp="transport=tcp" search_in="hdr" header="Contact:" check_it="true" assign_to="contact"/>
"#;
    let scenario = format!(
        "{}{}{}{ACK}{BYE_200}{TAIL}",
        head_with(checks),
        ringing(),
        response("200 OK", "", Some("0 101"))
    );
    let scenario = scenario.replacen(
        "</recv>\n",
        "</recv>\n  <Reference variables=\"via,contact\"/>\n",
        1,
    );
    let mut sipp = Sipp::start(&scenario, &["-t", "t1"]);
    let uac = Uac::start_tcp(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        "crieur-test/0",
    )
    .await
    .unwrap_or_else(|e| panic!("UAC: {e}"));
    let r = call_on(
        &uac,
        &trunk(sipp.addr()),
        tone(440.0, 0.5),
        Ok(()),
        DEFAULT_LEAD_IN,
        None,
    )
    .await
    .report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_eq!(r.message_packets, 25);
    assert!(uac.wait_background(Duration::from_secs(2)).await);
    assert!(sipp.succeeded());
}

/// RFC 3261 §18.3 over TCP: a request that frames (its Content-Length) but does not parse
/// (a Request-URI in `<>`, RFC 4475 §3.1.2.7) is answered 400 on its connection, which stays
/// open: the next request on it (OPTIONS) gets its 200.
#[tokio::test(flavor = "multi_thread")]
async fn over_tcp_a_malformed_request_gets_400_and_the_connection_stays() {
    use std::io::{Read, Write};
    let uac = Uac::start_tcp(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        "crieur-test/0",
    )
    .await
    .unwrap_or_else(|e| panic!("UAC: {e}"));
    let to = uac.local_addr();
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(to).unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap_or_else(|e| panic!("{e}"));
        let me = s.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let request = |line: &str, n: u32| {
            format!("{line}\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bKtcp{n}\r\nFrom: <sip:a@{me}>;tag=t{n}\r\nTo: <sip:crieur@{to}>\r\nCall-ID: tcp-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        };
        let mut answers = Vec::new();
        for (n, line) in [
            (1, format!("OPTIONS <sip:crieur@{to}> SIP/2.0")),
            (2, format!("OPTIONS sip:crieur@{to} SIP/2.0")),
        ] {
            if s.write_all(request(&line, n).as_bytes()).is_err() {
                break;
            }
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Ok(k) if k > 0 => {
                    let text = String::from_utf8_lossy(&buf[..k]).into_owned();
                    answers.push(text.lines().next().unwrap_or_default().to_owned());
                }
                _ => break,
            }
        }
        answers
    })
    .await
    .unwrap_or_default();
    assert_eq!(answers, ["SIP/2.0 400 Bad Request", "SIP/2.0 200 OK"]);
}

/// RFC 3263 §4.3 over TCP: the trunk's first server (by SRV priority) refuses the connection
/// — a transport error — so the INVITE goes at once to the next, sipp over TCP, which answers.
#[tokio::test(flavor = "multi_thread")]
async fn over_tcp_an_unreachable_first_server_fails_over_to_the_next() {
    let mut sipp = Sipp::start(&answer_scenario("0 101", BYE_200), &["-t", "t1"]);
    let refused = SocketAddr::from((
        [127, 0, 0, 1],
        crieur_test_support::kamailio::free_tcp_port(),
    ));
    let uac = Uac::start_tcp(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        "crieur-test/0",
    )
    .await
    .unwrap_or_else(|e| panic!("UAC: {e}"));
    let srv = |priority, addr| crieur_sip::locate::Srv {
        priority,
        weight: 0,
        target: vec![addr],
    };
    let trunk = Trunk {
        servers: vec![srv(20, sipp.addr()), srv(10, refused)],
        ..trunk(refused)
    };
    let started = Instant::now();
    let r = call_on(
        &uac,
        &trunk,
        tone(440.0, 0.5),
        Ok(()),
        DEFAULT_LEAD_IN,
        None,
    )
    .await
    .report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert!(
        r.timeline
            .first()
            .is_some_and(|(_, t)| t == &format!("INVITE sent to {refused}")),
        "{}",
        timeline(&r)
    );
    assert!(
        r.answered_at.is_some_and(|a| a < Duration::from_secs(2)),
        "not at once: {:?} ({:?} in all)",
        r.answered_at,
        started.elapsed()
    );
    assert!(uac.wait_background(Duration::from_secs(2)).await);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_over_tls_through_kamailio() {
    // An independent TLS peer: Kamailio (tls module) relays our sips: call to sipp over UDP and
    // record-routes, so our ACK and BYE go back through it on our TLS connection. Its
    // certificate is checked against the name we give (127.0.0.1, an IP SAN) with the test CA.
    // The callee copies the proxy's Record-Route into its 200 (RFC 3261 §12.1.1).
    let callee = answer_scenario_with(
        sdp_body("0 101", "", "[media_port]", 1),
        "[last_Record-Route:]\n",
        BYE_200,
    );
    let mut sipp = Sipp::start(&callee, &[]);
    let kam = Kamailio::start(sipp.port());
    let tls = |name: &str| crieur_media::uac::TlsTrunk {
        server_name: name.into(),
        ca_file: Some(kam.ca.clone()),
        identity: None,
    };
    let uac = Uac::start_tls(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        "crieur-test/0",
        &tls("127.0.0.1"),
    )
    .await
    .unwrap_or_else(|e| panic!("UAC: {e}"));
    let r = call_on(
        &uac,
        &trunk(kam.tls),
        tone(440.0, 0.5),
        Ok(()),
        DEFAULT_LEAD_IN,
        None,
    )
    .await
    .report;
    assert_eq!(
        r.ending.outcome,
        Outcome::AnsweredCompleted,
        "{}",
        timeline(&r)
    );
    assert_eq!(r.message_packets, 25);
    assert!(uac.wait_background(Duration::from_secs(2)).await);
    assert!(sipp.succeeded(), "{}", kam.log());

    // A name the certificate does not carry: the handshake fails, the INVITE is a transport
    // error at once (not timer B), a trunk failure.
    let uac = Uac::start_tls(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        "crieur-test/0",
        &tls("trunk.example"),
    )
    .await
    .unwrap_or_else(|e| panic!("UAC: {e}"));
    let started = Instant::now();
    let r = call_on(
        &uac,
        &trunk(kam.tls),
        tone(440.0, 0.5),
        Ok(()),
        DEFAULT_LEAD_IN,
        None,
    )
    .await
    .report;
    assert_eq!(r.ending.outcome, Outcome::TrunkFailure, "{}", timeline(&r));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{}",
        timeline(&r)
    );
}

/// A UAS that rings, then takes a CANCEL: 200 to it, 487 to the INVITE, and the ACK.
fn ring_then_cancel() -> String {
    format!(
        "{HEAD}{}  <recv request=\"CANCEL\"/>\n{CANCEL_200_487}{ACK}{TAIL}",
        ringing()
    )
}

/// A request for a call with `message`, no lead-in, and `stop`.
fn short_request(
    message: Message,
    stop: Option<tokio_util::sync::CancellationToken>,
) -> CallRequest {
    CallRequest {
        number: "+33612345678".into(),
        message: Arc::new(message),
        confirmation: Arc::new(Message::from_samples(&[])),
        opt_out_key: '9',
        not_interested_key: None,
        keep_received_audio: false,
        stop,
        lead_in: Duration::ZERO,
        amd: None,
    }
}

fn no_opt_out(_: char, _: DtmfMethod) -> OptOutFuture {
    Box::pin(async { Ok(()) })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_with_nothing_to_play_is_acked_and_byed_at_its_answer() {
    // S1's short call: an empty message and no lead-in, so the script ends at the answer —
    // the SIP loop runs it inline from its INVITE to its report (180, 200, ACK, BYE, the
    // BYE's 200), with no task of its own. Two in a row on one UAC: the loop and the RTP pair
    // the first gave back serve the second.
    let mut sipp = Sipp::scenario(&answer_scenario("0", BYE_200))
        .timeout_error()
        .calls(2)
        .start();
    let uac = local_uac().await;
    let t = trunk(sipp.addr());
    for _ in 0..2 {
        let r = tokio::time::timeout(
            Duration::from_secs(20),
            uac.call(
                &t,
                short_request(Message::from_samples(&[]), None),
                no_opt_out,
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("call did not finish"))
        .unwrap_or_else(|e| panic!("call: {e}"));
        assert_eq!(
            r.ending.outcome,
            Outcome::AnsweredCompleted,
            "{}",
            timeline(&r)
        );
        assert_eq!(r.first_18x.map(|(c, _)| c), Some(180));
        assert_eq!(r.final_response.map(|(c, _)| c), Some(200));
        assert!(r.answered_at.is_some());
        assert_eq!(r.codec, Some(Codec::Pcmu));
        assert_eq!((r.rtp_sent, r.message_packets), (0, 0));
        let notes: Vec<&str> = r.timeline.iter().map(|(_, s)| s.as_str()).collect();
        let (played, bye) = (
            notes.iter().position(|s| *s == "Message played"),
            notes.iter().position(|s| *s == "BYE sent"),
        );
        assert!(played.is_some() && bye > played, "{}", timeline(&r));
        // The BYE's transaction (in the SIP loop after the call) is answered and ends.
        assert!(uac.wait_background(Duration::from_secs(8)).await);
    }
    // Inline from INVITE to report: neither call went on as a task.
    assert_eq!(uac.calls_as_tasks(), 0);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_stopped_while_ringing_is_cancelled_then_487_is_acked() {
    // A call with a stop token (as a campaign's) runs inline in its SIP loop while it rings;
    // its caller's future watches the token and tells the loop. Stopped after its 180, it
    // sends CANCEL (RFC 3261 §9.1: a provisional response came) and ends `local-shutdown`
    // at once; the 487 that follows is ACKed by the endpoint. The ring timeout is 120 s:
    // only the stop can make this CANCEL.
    let mut sipp = Sipp::start(&ring_then_cancel(), &[]);
    let uac = local_uac().await;
    let mut t = trunk(sipp.addr());
    t.ring_timeout = Duration::from_secs(120);
    t.max_call_length = Duration::from_secs(600);
    let stop = tokio_util::sync::CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stopper.cancel();
    });
    let started = Instant::now();
    let req = short_request(tone(440.0, 0.5), Some(stop));
    let r = tokio::time::timeout(Duration::from_secs(20), uac.call(&t, req, no_opt_out))
        .await
        .unwrap_or_else(|_| panic!("call did not finish"))
        .unwrap_or_else(|e| panic!("call: {e}"));
    assert_eq!(r.ending.outcome, Outcome::LocalShutdown, "{}", timeline(&r));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{}",
        timeline(&r)
    );
    let notes: Vec<&str> = r.timeline.iter().map(|(_, s)| s.as_str()).collect();
    assert!(
        notes.iter().any(|s| s.starts_with("180")),
        "{}",
        timeline(&r)
    );
    assert!(notes.contains(&"CANCEL sent"), "{}", timeline(&r));
    assert!(uac.wait_background(Duration::from_secs(8)).await);
    // Inline throughout: the token did not make it a task.
    assert_eq!(uac.calls_as_tasks(), 0);
    assert!(sipp.succeeded());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_whose_stop_token_is_already_cancelled_is_not_placed() {
    // The token is cancelled before the call is handed to its loop (hang-up-all, an opt-out
    // or a shutdown before the INVITE leaves): nothing is placed — no INVITE, no phone ringing
    // to be cancelled — and the call ends at once `local-shutdown`. The "trunk" is a bare
    // socket: any datagram at all within a second fails the test.
    let far = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    far.set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap_or_else(|e| panic!("{e}"));
    let uac = local_uac().await;
    let mut t = trunk(far.local_addr().unwrap_or_else(|e| panic!("{e}")));
    t.ring_timeout = Duration::from_secs(120);
    t.max_call_length = Duration::from_secs(600);
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    let req = short_request(tone(440.0, 0.5), Some(stop));
    let r = tokio::time::timeout(Duration::from_secs(5), uac.call(&t, req, no_opt_out))
        .await
        .unwrap_or_else(|_| panic!("call did not finish"))
        .unwrap_or_else(|e| panic!("call: {e}"));
    assert_eq!(r.ending.outcome, Outcome::LocalShutdown, "{}", timeline(&r));
    assert!(r.rtp_local.is_none(), "{}", timeline(&r));
    let notes: Vec<&str> = r.timeline.iter().map(|(_, s)| s.as_str()).collect();
    assert!(
        !notes.iter().any(|s| s.starts_with("INVITE sent")),
        "{}",
        timeline(&r)
    );
    let mut buf = [0u8; 2048];
    let got = tokio::task::spawn_blocking(move || far.recv_from(&mut buf).map(|(n, _)| n))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(got.is_err(), "a datagram reached the trunk: {got:?}");
    assert!(uac.wait_background(Duration::from_secs(2)).await);
    assert_eq!(uac.calls_as_tasks(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ringing_call_whose_caller_is_gone_is_cancelled() {
    // The caller drops its `Uac::call` future while the call rings, inline in the SIP loop:
    // the loop is told at once and the call is ended as its script would end it — CANCEL (a
    // provisional response came), 487 ACKed — not left ringing with nobody to hear it. The
    // ring timeout is 120 s: only the caller's going can make this CANCEL.
    let mut sipp = Sipp::start(&ring_then_cancel(), &[]);
    let uac = local_uac().await;
    let mut t = trunk(sipp.addr());
    t.ring_timeout = Duration::from_secs(120);
    t.max_call_length = Duration::from_secs(600);
    let call = uac.call(&t, short_request(tone(440.0, 0.5), None), no_opt_out);
    assert!(tokio::time::timeout(Duration::from_millis(500), call)
        .await
        .is_err());
    // sipp ends once its call is done: CANCEL answered, 487 ACKed.
    let dropped = Instant::now();
    while sipp.running() && dropped.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !sipp.running(),
        "no CANCEL within 3 s of the caller's going"
    );
    assert!(sipp.succeeded());
    assert!(uac.wait_background(Duration::from_secs(8)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answered_call_whose_caller_is_gone_is_byed() {
    // A call with a message plays it as a task on its loop's thread. Its caller drops the
    // `Uac::call` future once it is answered: the task takes that as a stop and hangs up —
    // the far end gets a BYE within moments, not when the 30 s message would have ended (or
    // never, were the task just dropped).
    let mut sipp = Sipp::start(&answer_scenario("0", BYE_200), &[]);
    let uac = local_uac().await;
    let t = trunk(sipp.addr());
    let call = uac.call(&t, short_request(tone(440.0, 30.0), None), no_opt_out);
    assert!(tokio::time::timeout(Duration::from_millis(1500), call)
        .await
        .is_err());
    let dropped = Instant::now();
    while sipp.running() && dropped.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!sipp.running(), "no BYE within 3 s of the caller's going");
    // The message made it a task (the counter of the inline test above counts).
    assert_eq!(uac.calls_as_tasks(), 1);
    assert!(sipp.succeeded());
    assert!(uac.wait_background(Duration::from_secs(8)).await);
}

/// RFC 3261 §13.2.2.4: every 2xx is ACKed. A 2xx whose Record-Route holds a value no ACK can
/// carry (a NUL, legal in a quoted-pair, refused by the writer) must not leave the call
/// answered and un-ACKed: the call ends as a trunk failure whose report says why, is not
/// counted answered, and no ACK with a broken header line reaches the far end. The far end
/// here is a raw UDP socket: sipp's XML scenarios cannot hold a NUL byte.
#[tokio::test(flavor = "multi_thread")]
async fn a_2xx_that_cannot_be_acked_ends_the_call_as_a_trunk_failure() {
    let far = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    far.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = far.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let uas = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let (n, from) = far.recv_from(&mut buf).unwrap_or_else(|e| panic!("{e}"));
        let invite = String::from_utf8_lossy(&buf[..n]).into_owned();
        let header = |name: &str| {
            invite
                .lines()
                .find(|l| {
                    l.len() > name.len()
                        && l[..name.len()].eq_ignore_ascii_case(name)
                        && l.as_bytes()[name.len()] == b':'
                })
                .unwrap_or_else(|| panic!("no {name} in {invite}"))
                .to_owned()
        };
        let ok = format!(
            "SIP/2.0 200 OK\r\n{}\r\n{}\r\n{};tag=far\r\n{}\r\n{}\r\nRecord-Route: <sip:127.0.0.1:9;lr>;x=\"a\\\0b\"\r\nContact: <sip:far@{addr}>\r\nContent-Length: 0\r\n\r\n",
            header("Via"),
            header("From"),
            header("To"),
            header("Call-ID"),
            header("CSeq"),
        );
        far.send_to(ok.as_bytes(), from)
            .unwrap_or_else(|e| panic!("{e}"));
        // What comes next, for a second.
        far.set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        while let Ok((n, _)) = far.recv_from(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    });
    let r = place(&trunk(addr), tone(440.0, 0.5)).await.report;
    assert_eq!(r.ending.outcome, Outcome::TrunkFailure, "{}", timeline(&r));
    assert!(r.ending.reason.contains("ACK"), "{:?}", r.ending);
    assert_eq!(r.answered_at, None, "{}", timeline(&r));
    let got = uas
        .join()
        .unwrap_or_else(|_| panic!("the far end panicked"));
    assert!(
        got.iter()
            .all(|m| !m.starts_with("ACK") && !m.contains('\0')),
        "{got:?}"
    );
}
