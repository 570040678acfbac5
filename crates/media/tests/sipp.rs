//! The UAC against a real, independent peer: sipp (Debian package `sip-tester`) as the UAS,
//! started by each test on 127.0.0.1 with free ports, and stopped by it.

// A network test with real processes: it reads the clock to bound its waits.
#![allow(clippy::disallowed_methods)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crieur_media::audio::Message;
use crieur_media::call::Outcome;
use crieur_media::dtmf::DtmfMethod;
use crieur_media::g711::Codec;
use crieur_media::uac::{CallReport, CallRequest, Credentials, OptOutFuture, Trunk, Uac};

/// Three consecutive free UDP ports (SIP, RTP, RTCP) on loopback.
fn free_ports() -> (u16, u16) {
    for _ in 0..50 {
        let Ok(a) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(p) = a.local_addr().map(|a| a.port()) else {
            continue;
        };
        if p > 60_000 {
            continue;
        }
        let media = p + 2;
        if UdpSocket::bind(("127.0.0.1", media)).is_ok()
            && UdpSocket::bind(("127.0.0.1", media + 1)).is_ok()
        {
            return (p, media);
        }
    }
    panic!("no free ports on 127.0.0.1");
}

/// A running sipp UAS; killed on drop.
struct Sipp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sipp {
    /// Starts sipp on free ports. A port found free can be taken by another process before
    /// sipp binds it (sipp then exits at once): that is retried on other ports.
    fn start(scenario: &str, extra: &[&str]) -> Sipp {
        for _ in 0..5 {
            let mut sipp = Self::start_on(free_ports().0, scenario, extra);
            if matches!(sipp.child.try_wait(), Ok(None)) {
                return sipp;
            }
        }
        panic!("sipp exited at start five times (ports taken?)");
    }

    fn start_on(port: u16, scenario: &str, extra: &[&str]) -> Sipp {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("scenario.xml");
        std::fs::write(&path, scenario).unwrap_or_else(|e| panic!("write scenario: {e}"));
        let media = port + 2;
        let (port_s, media_s) = (port.to_string(), media.to_string());
        // sipp's control port (default 8888) would collide between tests run in parallel.
        let control_s = (port + 1).to_string();
        let mut args = vec![
            "-sf",
            path.to_str().unwrap_or_default(),
            "-i",
            "127.0.0.1",
            "-p",
            &port_s,
            "-mp",
            &media_s,
            "-cp",
            &control_s,
            "-m",
            "1",
            "-timeout",
            "40s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ];
        args.extend_from_slice(extra);
        let child = Command::new("sipp")
            .args(&args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sipp (apt-get install sip-tester): {e}"));
        // Let sipp bind before the INVITE (SIP retransmission would cover a miss anyway).
        std::thread::sleep(Duration::from_millis(300));
        Sipp { child, port, dir }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits for sipp to finish its one call; true if sipp counted it successful.
    fn succeeded(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !status.success() {
                    let errs = std::fs::read_dir(self.dir.path())
                        .into_iter()
                        .flatten()
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with("errors.log"))
                        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                        .collect::<String>();
                    eprintln!("sipp failed ({status}):\n{errs}");
                }
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HEAD: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="crieur test UAS">
  <recv request="INVITE" crlf="true"/>
"#;

/// As [`HEAD`], keeping the caller's Contact and From for requests the UAS sends in the dialog.
const HEAD_DIALOG: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="crieur test UAS">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="sip:[^&gt;; ]*" search_in="hdr" header="Contact:" check_it="true" assign_to="contact"/>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="remote_from"/>
    </action>
  </recv>
"#;

fn response(code: &str, extra_headers: &str, sdp: Option<&str>) -> String {
    // Final responses are retransmitted until the ACK; provisional ones are sent once.
    let retrans = if code.starts_with('1') {
        ""
    } else {
        r#" retrans="500""#
    };
    let (ct, body) = match sdp {
        Some(formats) => {
            let rtpmaps: String = formats
                .split(' ')
                .map(|f| match f {
                    "0" => "a=rtpmap:0 PCMU/8000\n".to_owned(),
                    "8" => "a=rtpmap:8 PCMA/8000\n".to_owned(),
                    "18" => "a=rtpmap:18 G729/8000\n".to_owned(),
                    pt => format!("a=rtpmap:{pt} telephone-event/8000\n"),
                })
                .collect();
            (
                "Content-Type: application/sdp\n",
                format!(
                    "v=0\no=sipp 1 1 IN IP[local_ip_type] [local_ip]\ns=-\nc=IN IP[media_ip_type] [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP {formats}\n{rtpmaps}"
                ),
            )
        }
        None => ("", String::new()),
    };
    format!(
        r#"  <send{retrans}><![CDATA[
SIP/2.0 {code}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:callee@[local_ip]:[local_port];transport=[transport]>
{extra_headers}{ct}Content-Length: [len]

{body}]]></send>
"#
    )
}

fn ringing() -> String {
    response("180 Ringing", "", None)
}

const ACK: &str = "  <recv request=\"ACK\" crlf=\"true\"/>\n";
const BYE_200: &str = r#"  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
"#;
const TAIL: &str = "</scenario>\n";

/// A request from the UAS inside the dialog (INFO, BYE).
fn uas_request(method: &str, cseq: u32, content_type: Option<&str>, body: &str) -> String {
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\n"))
        .unwrap_or_default();
    format!(
        r#"  <send><![CDATA[
{method} [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$remote_from]
Call-ID: [call_id]
CSeq: {cseq} {method}
Max-Forwards: 70
{ct}Content-Length: [len]

{body}]]></send>
  <recv response="200"/>
"#
    )
}

fn answer_scenario(formats: &str, after_ack: &str) -> String {
    let head = if after_ack.contains("[$contact]") {
        HEAD_DIALOG
    } else {
        HEAD
    };
    format!(
        "{head}{}{}{ACK}{after_ack}{TAIL}",
        ringing(),
        response("200 OK", "", Some(formats))
    )
}

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
        p_asserted_identity: None,
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
    let uac = Uac::start(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        "crieur-test/0",
    )
    .await
    .unwrap_or_else(|e| panic!("UAC: {e}"));
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
    };
    let report = tokio::time::timeout(
        Duration::from_secs(50),
        uac.call(trunk, req, move |_d, _m| -> OptOutFuture {
            Box::pin(async move {
                // Stands in for the durable store write: slow on purpose, so a confirmation
                // played before it returned would show in the timeline order.
                tokio::time::sleep(Duration::from_millis(200)).await;
                flag.store(true, Ordering::SeqCst);
                hook
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
    assert_eq!(r.rtp_sent, 100);
    assert!(
        r.answer_to_first_audio
            .is_some_and(|d| d < Duration::from_millis(100)),
        "{:?}",
        r.answer_to_first_audio
    );
    // sipp echoes our RTP: every packet comes back, in order, 20 ms of timestamp apart,
    // payload type 8, carrying exactly the encoded message.
    let got = &r.rtp_received;
    assert!(
        got.len() >= 95,
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
    let uac = Uac::start(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        "crieur-test/0",
    )
    .await
    .unwrap_or_else(|e| panic!("UAC: {e}"));
    let req = CallRequest {
        number: "+33612345678".into(),
        message: Arc::new(tone(440.0, 1.0)),
        confirmation: Arc::new(tone(660.0, 1.0)),
        opt_out_key: '9',
        not_interested_key: None,
        keep_received_audio: false,
        stop: None,
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

fn rejecting(code: &str) -> String {
    format!("{HEAD}{}{ACK}{TAIL}", response(code, "", None))
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

#[tokio::test(flavor = "multi_thread")]
async fn ring_timeout_cancels_then_487_then_ack() {
    // The CANCEL has a single Via equal to the INVITE's top Via (RFC 3261 §9.1).
    let head = HEAD.replacen(
        r#"<recv request="INVITE" crlf="true"/>"#,
        r#"<recv request="INVITE" crlf="true">
    <action><ereg regexp=".*" search_in="hdr" header="Via:" check_it="true" assign_to="invite_via"/></action>
  </recv>"#,
        1,
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
    let scenario = format!(
        r#"{head}{}{cancel}
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
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [last_cseq_number] INVITE
Content-Length: 0

]]></send>
{ACK}{TAIL}"#,
        ringing()
    );
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
        uas_request(
            "INFO",
            2,
            Some("application/dtmf-relay"),
            "Signal=9\nDuration=160\n"
        )
    );
    let mut sipp = Sipp::start(&answer_scenario("0 8 101", &after_ack), &[]);
    let placed = place(&trunk(sipp.addr()), tone(440.0, 8.0)).await;
    assert_opted_out(&placed, DtmfMethod::SipInfo);
    assert!(sipp.succeeded());
}

/// A pcap of PCMU RTP carrying the DTMF tone for `9` (852 + 1477 Hz), for sipp to play.
fn inband_pcap(path: &std::path::Path) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for n in 0..40u32 {
        let payload: Vec<u8> = (0..160)
            .map(|i| {
                let k = (n * 160 + i) as f32 / 8000.0;
                let v = if (5..15).contains(&n) {
                    9000.0
                        * ((2.0 * std::f32::consts::PI * 852.0 * k).sin()
                            + (2.0 * std::f32::consts::PI * 1477.0 * k).sin())
                } else {
                    0.0
                };
                Codec::Pcmu.encode(v as i16)
            })
            .collect();
        let mut rtp = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        rtp[2..4].copy_from_slice(&(n as u16).to_be_bytes());
        rtp[4..8].copy_from_slice(&(n * 160).to_be_bytes());
        rtp.extend_from_slice(&payload);
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
        frame.extend_from_slice(&rtp);
        let usec = n * 20_000;
        out.extend_from_slice(&(usec / 1_000_000).to_le_bytes());
        out.extend_from_slice(&(usec % 1_000_000).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("pcap: {e}"));
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
            let (port, _) = free_ports();
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
            let mut sipp = Sipp::start_on(port, &auth_scenario(challenge, header, &verify), &[]);
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
        uas_request(
            "INFO",
            2,
            Some("application/dtmf-relay"),
            "Signal=9\nDuration=160\n"
        )
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
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="ACK Via">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" check_it="true" assign_to="invite_via"/>
      <ereg regexp="^ *(.*);rport(.*)$" search_in="hdr" header="Via:" check_it="true" assign_to="whole,pre,post"/>
    </action>
  </recv>
  <Reference variables="whole"/>
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
    let uac = Uac::start(
        "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        "crieur-test/0",
    )
    .await
    .unwrap_or_else(|e| panic!("UAC: {e}"));
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
        check_header("Accept", "application/sdp", "accept", false),
        uac_request("MESSAGE", 2, "hello"),
        allow_check("allow2"),
    );
    let target = uac.local_addr().to_string();
    // As a UAC sipp may be done before `Sipp::start` looks: started once, its exit status read.
    // It runs in its own process; this runtime stays free to answer.
    let ok = tokio::task::spawn_blocking(move || {
        Sipp::start_on(free_ports().0, &scenario, &[&target]).succeeded()
    })
    .await
    .unwrap_or(false);
    assert!(ok, "OPTIONS or MESSAGE got the wrong answer");
}
