//! `crieur run` over TCP and TLS: whole campaigns placed through an independent peer — sipp
//! over TCP (`-t t1`), and Kamailio's TLS module relaying to sipp — the message's RTP
//! received by the test itself, the audit log verified and replayed.
#![allow(clippy::disallowed_methods)] // a test bounds its children with the wall clock

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crieur_test_support::dns::{Dns, SrvRecord};
use crieur_test_support::kamailio::Kamailio;
use crieur_test_support::scenario::*;
use crieur_test_support::{text, CampaignToml, Scratch, Sipp, CONTACTS_HEADER};

/// Contacts in each campaign (sipp's `-m`).
const CALLS: usize = 2;

fn number(i: usize) -> String {
    format!("+336120001{i:02}")
}

/// The test's RTP receiver: the address the callee's SDP names, where crieur sends the
/// message. Counts the audio packets (PCMU, 160 bytes: 20 ms) of each stream (SSRC).
struct RtpSink {
    port: u16,
    streams: Arc<Mutex<BTreeMap<u32, usize>>>,
}

impl RtpSink {
    fn start() -> RtpSink {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = s.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap_or_else(|e| panic!("{e}"));
        let streams = Arc::new(Mutex::new(BTreeMap::new()));
        let counts = streams.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let end = Instant::now() + Duration::from_secs(120);
            while Instant::now() < end {
                let Ok(n) = s.recv(&mut buf) else {
                    if Arc::strong_count(&counts) == 1 {
                        return;
                    }
                    continue;
                };
                // RTP version 2, payload type 0 (PCMU), 12-byte header + 160 bytes.
                if n == 172 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 0 {
                    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    if let Ok(mut m) = counts.lock() {
                        *m.entry(ssrc).or_default() += 1;
                    }
                }
            }
        });
        RtpSink { port, streams }
    }

    /// Audio packets received per stream.
    fn streams(&self) -> Vec<usize> {
        self.streams
            .lock()
            .map(|m| m.values().copied().collect())
            .unwrap_or_default()
    }
}

/// A callee that rings and answers (PCMU, telephone-event 101) with its media at `rtp_port`
/// and copies the proxies' Record-Route into its 200 (RFC 3261 §12.1.1), then waits for our
/// BYE.
fn callee(rtp_port: u16) -> String {
    answer_scenario_with(
        sdp_body("0 101", "", &rtp_port.to_string(), 1),
        "[last_Record-Route:]\n",
        BYE_200,
    )
}

fn crieur(dir: &Path, args: &[&str]) -> Output {
    // Bounded: a run that does not end is a failure, not a hung test.
    let mut child = Command::new(env!("CARGO_BIN_EXE_crieur"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
}

/// A campaign of [`CALLS`] contacts (1 s message) through the trunk `uri`, its `[trunk]`
/// ending with `trunk_extra`, imported into `store`.
fn campaign(dir: &Scratch, uri: &str, trunk_extra: &str) {
    campaign_of(dir, uri, trunk_extra, CALLS, 1.0);
}

/// A campaign of `calls` contacts with a `message_secs` message.
fn campaign_of(dir: &Scratch, uri: &str, trunk_extra: &str, calls: usize, message_secs: f32) {
    dir.recordings(message_secs);
    let c = CampaignToml::new("transport", 5060)
        .extra("[retry]\nmax_attempts = 1\n")
        .pacing(10, calls as u32)
        .build()
        .replace("uri = \"sip:127.0.0.1:5060\"", &format!("uri = \"{uri}\""));
    dir.write("c.toml", format!("{c}{trunk_extra}"));
    let mut csv = String::from(CONTACTS_HEADER);
    for i in 0..calls {
        csv.push_str(&format!(
            "c{i},{},,daily 00:00-24:00,2020-01-01T00:00:00Z,,,test,p{i}\n",
            number(i)
        ));
    }
    dir.write("k.csv", csv);
    let o = crieur(
        dir.path(),
        &[
            "import",
            "--campaign",
            "c.toml",
            "--store",
            "store",
            "--contacts",
            "k.csv",
        ],
    );
    assert!(o.status.success(), "import: {}", text(&o.stderr));
}

/// The audit log's records of `kind`.
fn records(d: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(d.join("store.audit/audit-000001.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == kind)
        .collect()
}

/// `crieur run` to its end; then every contact answered and its message heard whole (1 s: 50
/// packets, after the 300 ms lead-in's 15), each call in the audit log — INVITE, 200, first
/// audio, outcome `answered-completed`, our hang-up — the chain verifying and replay clean.
fn run_and_check(dir: &Scratch, sink: &RtpSink, peer_log: impl Fn() -> String) {
    let d = dir.path();
    let o = crieur(d, &["run", "--campaign", "c.toml", "--store", "store"]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{out}{err}\n{}", peer_log());
    assert!(out.contains("every contact is done"), "{out}{err}");
    let outcomes: Vec<String> = records(d, "outcome")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        outcomes,
        vec!["answered-completed"; CALLS],
        "{out}{err}\n{}",
        peer_log()
    );
    assert_eq!(records(d, "invite-sent").len(), CALLS);
    let finals: Vec<u64> = records(d, "sip-response")
        .iter()
        .filter_map(|r| r["status"].as_u64())
        .filter(|s| *s >= 200)
        .collect();
    assert_eq!(finals, vec![200; CALLS]);
    assert_eq!(records(d, "first-audio").len(), CALLS);
    let hangups: Vec<String> = records(d, "hangup")
        .iter()
        .map(|r| r["by"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(hangups, vec!["us"; CALLS]);
    // The last packets may still be in flight when the run ends.
    let deadline = Instant::now() + Duration::from_secs(2);
    while sink.streams().iter().filter(|n| **n >= 65).count() < CALLS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let streams = sink.streams();
    assert_eq!(streams.len(), CALLS, "RTP streams received: {streams:?}");
    assert!(
        streams.iter().all(|n| *n >= 65),
        "RTP packets per stream: {streams:?}"
    );
    audit_clean(d);
}

/// `transport = "tcp"` against sipp over TCP (`-t t1`: it speaks TCP only, on one
/// connection): the calls are placed, answered, played and hung up over our connection.
#[test]
fn a_campaign_runs_over_tcp() {
    let dir = Scratch::new();
    let sink = RtpSink::start();
    let mut sipp = Sipp::scenario(&callee(sink.port))
        .in_dir(dir.path(), "tcp")
        .calls(CALLS)
        .timeout_secs(60)
        .args(&["-t", "t1", "-trace_msg"])
        .start();
    campaign(
        &dir,
        &format!("sip:127.0.0.1:{}", sipp.port()),
        "transport = \"tcp\"\n",
    );
    run_and_check(&dir, &sink, || sipp.messages());
    assert!(sipp.succeeded(), "{}", sipp.messages());
}

/// A `sips:` trunk (TLS) through Kamailio's TLS module, relaying to sipp over UDP: its
/// certificate checked against the URI's host with the campaign's CA file; the ACK and BYE
/// go back through Kamailio (Record-Route) on our TLS connection.
#[test]
fn a_campaign_runs_over_tls_through_kamailio() {
    let dir = Scratch::new();
    let sink = RtpSink::start();
    let mut sipp = Sipp::scenario(&callee(sink.port))
        .in_dir(dir.path(), "tls")
        .calls(CALLS)
        .timeout_secs(60)
        .args(&["-trace_msg"])
        .start();
    let kam = Kamailio::start(sipp.port());
    campaign(
        &dir,
        &format!("sips:127.0.0.1:{}", kam.tls.port()),
        &format!("tls_ca_file = \"{}\"\n", kam.ca.display()),
    );
    run_and_check(&dir, &sink, || {
        format!("{}\n{}", sipp.messages(), kam.log())
    });
    assert!(sipp.succeeded(), "{}\n{}", sipp.messages(), kam.log());
}

/// A callee behind the proxy that answers, then hangs up 1 s into the message: its BYE goes to
/// our Contact through the proxy (its Route set from the INVITE's Record-Route, `rrs`).
fn callee_hanging_up() -> String {
    let head = HEAD.replacen(
        r#"<recv request="INVITE" crlf="true"/>"#,
        r#"<recv request="INVITE" crlf="true" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="remote_from"/>
    </action>
  </recv>"#,
        1,
    );
    format!(
        "{head}{}{}{ACK}  <pause milliseconds=\"1000\"/>\n{}{TAIL}",
        ringing(),
        response_with(
            "200 OK",
            "[last_Record-Route:]\n",
            Some(sdp_body("0 101", "", "[media_port]", 1))
        ),
        uas_request_with("BYE", 2, None, "[routes]\n", "").replacen("[$contact]", "[next_url]", 1),
    )
}

/// The callee hangs up through Kamailio, which relays its BYE to our Contact: Kamailio's
/// connection to us is not ours to it (ours comes from another port and says no `alias`,
/// RFC 5923), so it opens a new one to the address our Via and Contact give — as a proxy or
/// trunk does once our connection has closed. `trunk` is `(uri, extra [trunk] keys)`.
fn the_callee_hangs_up_through_kamailio(
    trunk: impl Fn(&Kamailio) -> (String, String),
) -> (Scratch, Option<String>, bool, String) {
    let dir = Scratch::new();
    let mut sipp = Sipp::scenario(&callee_hanging_up())
        .in_dir(dir.path(), "bye")
        .timeout_secs(30)
        .args(&["-trace_msg"])
        .start();
    let kam = Kamailio::start(sipp.port());
    let (uri, extra) = trunk(&kam);
    campaign_of(&dir, &uri, &extra, 1, 4.0);
    let o = crieur(
        dir.path(),
        &["run", "--campaign", "c.toml", "--store", "store"],
    );
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{out}{err}\n{}", kam.log());
    let outcome = records(dir.path(), "outcome")
        .first()
        .and_then(|r| r["outcome"].as_str().map(str::to_owned));
    let ok = sipp.succeeded();
    let log = format!("{out}{err}\n{}\n{}", sipp.messages(), kam.log());
    (dir, outcome, ok, log)
}

/// The audit log of a finished run verifies and replays without a violation.
fn audit_clean(d: &Path) {
    let o = crieur(d, &["audit", "verify", "store.audit"]);
    assert!(o.status.success(), "{}", text(&o.stdout));
    let o = crieur(d, &["audit", "replay", "store.audit"]);
    assert!(
        o.status.success() && text(&o.stdout).contains("; 0 violations"),
        "{}",
        text(&o.stdout)
    );
}

/// Over TCP, our listener takes the callee's BYE on the connection Kamailio opens to it.
#[test]
fn over_tcp_the_trunk_reaches_us_on_a_connection_of_its_own() {
    let (dir, outcome, sipp_ok, log) = the_callee_hangs_up_through_kamailio(|k| {
        (
            format!("sip:127.0.0.1:{}", k.tcp.port()),
            "transport = \"tcp\"\n".into(),
        )
    });
    assert_eq!(outcome.as_deref(), Some("hung-up-mid-message"), "{log}");
    assert!(sipp_ok, "the callee's BYE was not answered 200: {log}");
    let by: Vec<String> = records(dir.path(), "hangup")
        .iter()
        .map(|r| r["by"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(by, ["callee"], "{log}");
    audit_clean(dir.path());
}

/// Over TLS, with `tls_cert_file` / `tls_key_file` our TLS listener takes Kamailio's
/// connection (Kamailio checks our certificate against the test CA) and the callee's BYE on
/// it. Without them there is no listener: the BYE cannot reach us, the message plays to its
/// end and we hang up — what the listener is for.
#[test]
fn over_tls_the_trunk_reaches_us_on_our_tls_listener() {
    let (dir, outcome, sipp_ok, log) = the_callee_hangs_up_through_kamailio(|k| {
        (
            format!("sips:127.0.0.1:{}", k.tls.port()),
            format!(
                "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
                k.ca.display(),
                k.our_cert().display(),
                k.our_key().display()
            ),
        )
    });
    assert_eq!(outcome.as_deref(), Some("hung-up-mid-message"), "{log}");
    assert!(sipp_ok, "the callee's BYE was not answered 200: {log}");
    audit_clean(dir.path());

    let (dir, outcome, sipp_ok, log) = the_callee_hangs_up_through_kamailio(|k| {
        (
            format!("sips:127.0.0.1:{}", k.tls.port()),
            format!("tls_ca_file = \"{}\"\n", k.ca.display()),
        )
    });
    assert_eq!(outcome.as_deref(), Some("answered-completed"), "{log}");
    assert!(!sipp_ok, "{log}");
    audit_clean(dir.path());
}

/// RFC 3263 end to end: a trunk named by a host without a port (`sip:trunk.test`), located
/// by SRV on a real DNS server (dnsmasq, `[trunk] dns_server`): the first server (priority
/// 10) answers 503, the INVITE goes on to the second (priority 20), which answers; one call,
/// its message heard, the audit log clean.
#[test]
fn a_trunk_located_by_srv_fails_over_from_503_to_its_next_server() {
    let dir = Scratch::new();
    let sink = RtpSink::start();
    let mut first = Sipp::scenario(&rejecting("503 Service Unavailable"))
        .in_dir(dir.path(), "first")
        .timeout_secs(30)
        .args(&["-trace_msg"])
        .start();
    let mut second = Sipp::scenario(&callee(sink.port))
        .in_dir(dir.path(), "second")
        .timeout_secs(30)
        .args(&["-trace_msg"])
        .start();
    let dns = Dns::start(
        &[
            SrvRecord {
                service: "_sip._udp.trunk.test",
                target: "second.trunk.test",
                port: second.port(),
                priority: 20,
                weight: 0,
            },
            SrvRecord {
                service: "_sip._udp.trunk.test",
                target: "first.trunk.test",
                port: first.port(),
                priority: 10,
                weight: 0,
            },
        ],
        &[
            ("first.trunk.test", "127.0.0.1"),
            ("second.trunk.test", "127.0.0.1"),
        ],
    );
    campaign_of(
        &dir,
        "sip:trunk.test",
        &format!("dns_server = \"{}\"\n", dns.addr),
        1,
        1.0,
    );
    let o = crieur(
        dir.path(),
        &["run", "--campaign", "c.toml", "--store", "store"],
    );
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    let log = || format!("{out}{err}\n{}\n{}", first.messages(), second.messages());
    assert!(o.status.success(), "{}", log());
    let outcomes: Vec<String> = records(dir.path(), "outcome")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(outcomes, ["answered-completed"], "{}", log());
    // The 503 was the first server's, not the call's: the call's final response is the 200.
    let finals: Vec<u64> = records(dir.path(), "sip-response")
        .iter()
        .filter_map(|r| r["status"].as_u64())
        .filter(|s| *s >= 200)
        .collect();
    assert_eq!(finals, [200], "{}", log());
    // The Request-URI names the trunk's domain, not a server SRV chose.
    assert!(
        second
            .messages()
            .contains("INVITE sip:+33612000100@trunk.test;user=phone SIP/2.0"),
        "{}",
        log()
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while sink.streams().iter().all(|n| *n < 65) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        sink.streams().iter().any(|n| *n >= 65),
        "{:?}",
        sink.streams()
    );
    assert!(
        first.succeeded(),
        "the first server did not see its 503 ACKed"
    );
    assert!(second.succeeded(), "{}", second.messages());
    audit_clean(dir.path());
}
