//! `crieur call` end to end: the policy decides first, then a real call to a sipp UAS.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tone_wav(path: &Path, secs: f32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap_or_else(|e| panic!("{e}"));
    for n in 0..(8000.0 * secs) as usize {
        let v = 8000.0 * (2.0 * std::f32::consts::PI * 440.0 * n as f32 / 8000.0).sin();
        w.write_sample(v as i16).unwrap_or_else(|e| panic!("{e}"));
    }
    w.finalize().unwrap_or_else(|e| panic!("{e}"));
}

const UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="answer">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:callee@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
]]></send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"#;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(sip_port: u16, windows: &str, expires: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        tone_wav(&dir.path().join("msg.wav"), 1.0);
        tone_wav(&dir.path().join("confirm.wav"), 0.5);
        let campaign = format!(
            "name = \"t\"\nruleset = \"none\"\nzone = \"Europe/Paris\"\nmessage = \"msg.wav\"\nconfirmation = \"confirm.wav\"\n\
             [trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\nfrom = \"sip:+33100000000@crieur.test\"\nmax_call_secs = 60\n"
        );
        let contacts = format!(
            "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\nc1,+33612345678,,{windows},2020-01-01T00:00:00Z,{expires},,test,p\n"
        );
        for (n, d) in [("c.toml", campaign), ("k.csv", contacts)] {
            std::fs::write(dir.path().join(n), d).unwrap_or_else(|e| panic!("{e}"));
        }
        Setup { dir }
    }

    fn call(&self) -> Output {
        let p = |n: &str| self.dir.path().join(n).display().to_string();
        Command::new(env!("CARGO_BIN_EXE_crieur"))
            .args([
                "call",
                "--campaign",
                &p("c.toml"),
                "--contacts",
                &p("k.csv"),
                "--contact",
                "c1",
                "--optout-file",
                &p("optouts.tsv"),
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(p) = s.local_addr().map(|a| a.port()) else {
            continue;
        };
        if p < 60_000
            && UdpSocket::bind(("127.0.0.1", p + 2)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p + 3)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port");
}

#[test]
fn a_skip_is_refused_with_its_reasons_and_nothing_is_sent() {
    // Nothing listens on this port: a call attempt would time out, a refusal is immediate.
    let s = Setup::new(free_port(), "daily 00:00-24:00", "2021-01-01T00:00:00Z");
    let o = s.call();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let out = text(&o.stdout);
    assert!(out.contains("refused   the policy says SKIP"), "{out}");
    assert!(out.contains("ConsentExpired"), "{out}");
    assert!(!out.contains("INVITE"), "{out}");
}

#[test]
fn an_opted_out_number_is_refused() {
    let s = Setup::new(free_port(), "daily 00:00-24:00", "");
    std::fs::write(
        s.dir.path().join("optouts.tsv"),
        "+33612345678\t2026-01-01T00:00:00+00:00\tkey 9 by rfc4733\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let o = s.call();
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o.stdout).contains("is on the opt-out list"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn a_dial_places_the_call_and_prints_its_timeline() {
    let port = free_port();
    let s = Setup::new(port, "daily 00:00-24:00", "");
    let scen = s.dir.path().join("uas.xml");
    std::fs::write(&scen, UAS).unwrap_or_else(|e| panic!("{e}"));
    let (p, mp, cp) = (
        port.to_string(),
        (port + 2).to_string(),
        (port + 1).to_string(),
    );
    let mut sipp = Command::new("sipp")
        .args([
            "-sf",
            &scen.display().to_string(),
            "-i",
            "127.0.0.1",
            "-p",
            &p,
            "-mp",
            &mp,
            "-cp",
            &cp,
            "-m",
            "1",
            "-timeout",
            "30s",
            "-timeout_error",
            "-nostdin",
        ])
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start sipp (apt-get install sip-tester): {e}"));
    std::thread::sleep(Duration::from_millis(300));
    let o = s.call();
    let sipp_ok = sipp.wait().map(|st| st.success()).unwrap_or(false);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    assert!(out.contains("policy    DIAL under consent #0"), "{out}");
    assert!(
        out.contains("180 Ringing") && out.contains("200 OK"),
        "{out}"
    );
    assert!(out.contains("codec     PCMU"), "{out}");
    assert!(out.contains("answer → first audio"), "{out}");
    assert!(out.contains("outcome   answered-completed"), "{out}");
    assert!(sipp_ok, "sipp did not count the call successful");
}
