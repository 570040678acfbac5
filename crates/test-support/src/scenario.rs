//! sipp scenarios (XML) for a UAS answering crieur's calls, built from parts: the INVITE
//! received ([`HEAD`], [`HEAD_DIALOG`], [`head_dialog_with`]), responses with or without SDP,
//! requests the UAS sends in the dialog (INFO keys, BYE, re-INVITE), the end ([`TAIL`]).

/// The scenario's start: the INVITE received.
pub const HEAD: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="crieur test UAS">
  <recv request="INVITE" crlf="true"/>
"#;

/// As [`HEAD`], keeping the caller's Contact and From for requests the UAS sends in the dialog.
pub const HEAD_DIALOG: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="crieur test UAS">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="sip:[^&gt;; ]*" search_in="hdr" header="Contact:" check_it="true" assign_to="contact"/>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="remote_from"/>
    </action>
  </recv>
"#;

/// An SDP body for sipp to send: `formats` on `port` (`[media_port]`: sipp's own), with
/// extra attribute lines, `version` in its `o=` line.
pub fn sdp_body(formats: &str, attrs: &str, port: &str, version: u32) -> String {
    let rtpmaps: String = formats
        .split(' ')
        .map(|f| match f {
            "0" => "a=rtpmap:0 PCMU/8000\n".to_owned(),
            "8" => "a=rtpmap:8 PCMA/8000\n".to_owned(),
            "18" => "a=rtpmap:18 G729/8000\n".to_owned(),
            pt => format!("a=rtpmap:{pt} telephone-event/8000\n"),
        })
        .collect();
    format!(
        "v=0\no=sipp 1 {version} IN IP[local_ip_type] [local_ip]\ns=-\nc=IN IP[media_ip_type] [media_ip]\nt=0 0\nm=audio {port} RTP/AVP {formats}\n{rtpmaps}{attrs}"
    )
}

/// A response to the INVITE with `code`, `extra_headers` and an SDP offering `formats`
/// (e.g. `"0 101"`) if any.
pub fn response(code: &str, extra_headers: &str, sdp: Option<&str>) -> String {
    response_with(
        code,
        extra_headers,
        sdp.map(|f| sdp_body(f, "", "[media_port]", 1)),
    )
}

/// A response with `body` (SDP) if any.
pub fn response_with(code: &str, extra_headers: &str, body: Option<String>) -> String {
    // Final responses are retransmitted until the ACK; provisional ones are sent once.
    let retrans = if code.starts_with('1') {
        ""
    } else {
        r#" retrans="500""#
    };
    let (ct, body) = match body {
        Some(b) => ("Content-Type: application/sdp\n", b),
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

/// `180 Ringing`.
pub fn ringing() -> String {
    response("180 Ringing", "", None)
}

/// The ACK received.
pub const ACK: &str = "  <recv request=\"ACK\" crlf=\"true\"/>\n";
/// Our BYE received and answered 200.
pub const BYE_200: &str = r#"  <recv request="BYE"/>
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
/// The scenario's end.
pub const TAIL: &str = "</scenario>\n";

/// A request from the UAS inside the dialog (INFO, BYE).
pub fn uas_request(method: &str, cseq: u32, content_type: Option<&str>, body: &str) -> String {
    uas_request_with(method, cseq, content_type, "", body)
}

/// As [`uas_request`], with extra header lines.
pub fn uas_request_with(
    method: &str,
    cseq: u32,
    content_type: Option<&str>,
    extra_headers: &str,
    body: &str,
) -> String {
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
Contact: <sip:callee@[local_ip]:[local_port]>
Max-Forwards: 70
{extra_headers}{ct}Content-Length: [len]

{body}]]></send>
  <recv response="200"/>
"#
    )
}

/// A UAS that rings, answers with `formats`, then does `after_ack` (e.g. [`BYE_200`]).
pub fn answer_scenario(formats: &str, after_ack: &str) -> String {
    answer_scenario_with(sdp_body(formats, "", "[media_port]", 1), "", after_ack)
}

/// A UAS that answers with `sdp` (and `extra_headers`), then does `after_ack`.
pub fn answer_scenario_with(sdp: String, extra_headers: &str, after_ack: &str) -> String {
    let head = if after_ack.contains("[$contact]") {
        HEAD_DIALOG
    } else {
        HEAD
    };
    format!(
        "{head}{}{}{ACK}{after_ack}{TAIL}",
        ringing(),
        response_with("200 OK", extra_headers, Some(sdp))
    )
}

/// A re-INVITE from the UAS with `sdp`, its 200 and the ACK.
pub fn uas_reinvite(cseq: u32, sdp: &str) -> String {
    format!(
        r#"{}  <send><![CDATA[
ACK [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$remote_from]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
"#,
        uas_request("INVITE", cseq, Some("application/sdp"), sdp)
    )
}

/// As [`HEAD`], with `actions` (XML lines) on the INVITE.
pub fn head_with(actions: &str) -> String {
    HEAD.replacen(
        r#"<recv request="INVITE" crlf="true"/>"#,
        &format!("<recv request=\"INVITE\" crlf=\"true\">\n    <action>\n{actions}    </action>\n  </recv>"),
        1,
    )
}

/// As [`HEAD_DIALOG`], with more `actions` (XML) on the INVITE first.
pub fn head_dialog_with(actions: &str) -> String {
    HEAD_DIALOG.replacen("    <action>\n", &format!("    <action>\n{actions}"), 1)
}

/// A UAS rejecting the INVITE with `code`.
pub fn rejecting(code: &str) -> String {
    format!("{HEAD}{}{ACK}{TAIL}", response(code, "", None))
}

/// The key `key` sent by SIP INFO (`application/dtmf-relay`) in the dialog, CSeq `cseq`.
pub fn info_key(cseq: u32, key: char) -> String {
    uas_request(
        "INFO",
        cseq,
        Some("application/dtmf-relay"),
        &format!("Signal={key}\nDuration=160\n"),
    )
}

/// After a CANCEL: its 200, then the INVITE's 487 (whose CSeq is the INVITE's, not the
/// CANCEL's last one).
pub const CANCEL_200_487: &str = r#"  <send><![CDATA[
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
"#;
