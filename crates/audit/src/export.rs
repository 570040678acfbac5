//! `audit export`: one row per call (CDR-style), built from the log alone. The HTML report
//! (`crate::report`) is built from the same rows.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::record::{AmdRecord, Entry, Record};
use crate::{read_all, Result};

/// One call, as a row. The field order is the column order of the CSV export
/// ([`COLUMNS`]); instants are RFC 3339 with milliseconds, durations milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallRow {
    /// crieur's call id.
    pub call: String,
    pub campaign: String,
    pub contact: String,
    pub number: String,
    /// The callee's zone (the dial decision's candidate zones, space-separated).
    pub zone: String,
    /// When the INVITE left, in the callee's (first candidate) zone, with its UTC offset.
    pub start_local: String,
    /// When the INVITE left, UTC.
    pub start_utc: String,
    /// INVITE → answer, or → the final response when unanswered.
    pub ring_ms: Option<u64>,
    /// When the callee answered (UTC), empty when unanswered.
    pub answered_at: String,
    /// Answer → end of the call.
    pub talk_ms: Option<u64>,
    pub outcome: String,
    /// Key presses: `digit(method)`, space-separated.
    pub keys: String,
    /// When the opt-out was durable in the store (UTC), empty when none.
    pub optout_durable_at: String,
    /// The consent the dial decision relied on: its source and proof.
    pub consent_source: String,
    pub consent_proof: String,
    /// Seq of the dial decision (the re-check) this call was placed under.
    pub decision_seq: Option<u64>,
    /// Rule set and version of that decision.
    pub ruleset: String,
    /// The INVITE's final SIP status.
    pub sip_status: Option<u16>,
    /// INVITE → the first 18x (the callee's phone rang), when the log records it.
    pub alerting_ms: Option<u64>,
    pub answer_to_audio_ms: Option<u64>,
    /// Opt-out key press → opt-out durable.
    pub optout_durable_ms: Option<u64>,
    pub hangup_by: String,
    pub hangup_reason: String,
    /// When the call ended (UTC).
    pub ended_utc: String,
}

/// The CSV header, in [`CallRow`]'s field order (a header row is written even when there is
/// no call).
pub const COLUMNS: [&str; 24] = [
    "call",
    "campaign",
    "contact",
    "number",
    "zone",
    "start_local",
    "start_utc",
    "ring_ms",
    "answered_at",
    "talk_ms",
    "outcome",
    "keys",
    "optout_durable_at",
    "consent_source",
    "consent_proof",
    "decision_seq",
    "ruleset",
    "sip_status",
    "alerting_ms",
    "answer_to_audio_ms",
    "optout_durable_ms",
    "hangup_by",
    "hangup_reason",
    "ended_utc",
];

/// A call as built from the log: its row and what the report needs besides.
#[derive(Debug, Clone)]
pub struct Call {
    pub row: CallRow,
    /// Seq of the INVITE record.
    pub seq: u64,
    pub sent_at: DateTime<Utc>,
    /// The callee's first candidate zone, when known.
    pub zone: Option<chrono_tz::Tz>,
    /// The consent windows the dial relied on (every consent's when the decision named none).
    pub windows: Vec<String>,
    /// The far end's RTCP about our audio: report blocks received and the worst fraction
    /// lost (in 1/256), when the call recorded it.
    pub rtcp: Option<(u32, u8)>,
    /// Its answering-machine detection (campaigns with `[amd]`), when the call recorded it.
    pub amd: Option<AmdRecord>,
    answered_at: Option<DateTime<Utc>>,
    opt_out_key_at_ms: Option<u64>,
    opt_out_at: Option<DateTime<Utc>>,
}

/// RFC 3339 UTC with milliseconds and `Z`.
pub fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// RFC 3339 in `zone` with milliseconds and the UTC offset.
pub fn local(t: DateTime<Utc>, zone: chrono_tz::Tz) -> String {
    t.with_timezone(&zone)
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

/// What a dial decision contributes to the call placed under it.
struct DialInfo {
    seq: u64,
    zones: Vec<String>,
    ruleset: String,
    source: String,
    proof: String,
    windows: Vec<String>,
}

/// Every call of the log, in INVITE order.
pub fn calls_of(entries: &[(String, usize, Entry)]) -> Vec<Call> {
    let mut out: Vec<Call> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut dials: HashMap<(String, String, DateTime<Utc>), DialInfo> = HashMap::new();
    let mut opt_out_key: Option<char> = None;
    for (_, _, e) in entries {
        let at = |call: &str| index.get(call).copied();
        match &e.record {
            Record::RunStart(h) => opt_out_key = h.opt_out_key,
            Record::Decision(d) if d.verdict == "dial" => {
                let chosen = d.consent.and_then(|i| d.consents.get(i));
                dials.insert(
                    (d.campaign.clone(), d.contact.clone(), d.now),
                    DialInfo {
                        seq: e.seq,
                        zones: d.readings.iter().map(|r| r.zone.clone()).collect(),
                        ruleset: format!("{} {}", d.ruleset, d.ruleset_version)
                            .trim()
                            .to_owned(),
                        source: chosen.map(|c| c.source.clone()).unwrap_or_default(),
                        proof: chosen.map(|c| c.proof.clone()).unwrap_or_default(),
                        windows: match chosen {
                            Some(c) => vec![c.windows.clone()],
                            None => d.consents.iter().map(|c| c.windows.clone()).collect(),
                        },
                    },
                );
            }
            Record::InviteSent(i) => {
                let info = dials.get(&(i.campaign.clone(), i.contact.clone(), i.decided_at));
                let zone = info
                    .and_then(|d| d.zones.first())
                    .and_then(|z| z.parse::<chrono_tz::Tz>().ok());
                index.insert(i.call.clone(), out.len());
                out.push(Call {
                    row: CallRow {
                        call: i.call.clone(),
                        campaign: i.campaign.clone(),
                        contact: i.contact.clone(),
                        number: i.number.clone(),
                        zone: info.map(|d| d.zones.join(" ")).unwrap_or_default(),
                        start_local: zone.map(|z| local(i.sent_at, z)).unwrap_or_default(),
                        start_utc: utc(i.sent_at),
                        consent_source: info.map(|d| d.source.clone()).unwrap_or_default(),
                        consent_proof: info.map(|d| d.proof.clone()).unwrap_or_default(),
                        decision_seq: info.map(|d| d.seq),
                        ruleset: info.map(|d| d.ruleset.clone()).unwrap_or_default(),
                        ..CallRow::default()
                    },
                    seq: e.seq,
                    sent_at: i.sent_at,
                    zone,
                    windows: info.map(|d| d.windows.clone()).unwrap_or_default(),
                    rtcp: None,
                    amd: None,
                    answered_at: None,
                    opt_out_key_at_ms: None,
                    opt_out_at: None,
                });
            }
            Record::SipResponse(r) => {
                if let Some(c) = at(&r.call).and_then(|k| out.get_mut(k)) {
                    if r.status < 200 {
                        // A provisional response: the first 18x says the phone rang.
                        if (180..200).contains(&r.status) && c.row.alerting_ms.is_none() {
                            c.row.alerting_ms = Some(r.at_ms);
                        }
                    } else {
                        c.row.sip_status = Some(r.status);
                        if c.answered_at.is_none() {
                            c.row.ring_ms = Some(r.at_ms);
                        }
                    }
                }
            }
            Record::Answered(a) => {
                if let Some(c) = at(&a.call).and_then(|k| out.get_mut(k)) {
                    let t = c.sent_at
                        + chrono::Duration::milliseconds(i64::try_from(a.at_ms).unwrap_or(0));
                    c.answered_at = Some(t);
                    c.row.answered_at = utc(t);
                    c.row.ring_ms = Some(a.at_ms);
                }
            }
            Record::FirstAudio(f) => {
                if let Some(c) = at(&f.call).and_then(|k| out.get_mut(k)) {
                    c.row.answer_to_audio_ms = Some(f.answer_to_audio_ms);
                }
            }
            Record::Dtmf(d) => {
                if let Some(c) = at(&d.call).and_then(|k| out.get_mut(k)) {
                    if !c.row.keys.is_empty() {
                        c.row.keys.push(' ');
                    }
                    c.row.keys.push_str(&format!("{}({})", d.digit, d.method));
                    if Some(d.digit) == opt_out_key && c.opt_out_key_at_ms.is_none() {
                        c.opt_out_key_at_ms = Some(d.at_ms);
                    }
                }
            }
            Record::OptOutRecorded(o) => {
                if let Some(c) = at(&o.call).and_then(|k| out.get_mut(k)) {
                    c.row.optout_durable_at = utc(o.at);
                    c.opt_out_at = Some(o.at);
                }
            }
            Record::Rtcp(r) => {
                if let Some(c) = at(&r.call).and_then(|k| out.get_mut(k)) {
                    c.rtcp = Some((r.reports_received, r.worst_fraction_lost_256));
                }
            }
            Record::Amd(a) => {
                if let Some(c) = at(&a.call).and_then(|k| out.get_mut(k)) {
                    c.amd = Some(a.clone());
                }
            }
            Record::Hangup(h) => {
                if let Some(c) = at(&h.call).and_then(|k| out.get_mut(k)) {
                    c.row.hangup_by = h.by.clone();
                    c.row.hangup_reason = h.reason.clone();
                }
            }
            Record::Outcome(o) => {
                if let Some(c) = at(&o.call).and_then(|k| out.get_mut(k)) {
                    c.row.outcome = o.outcome.name();
                    c.row.ended_utc = utc(o.ended);
                    c.row.talk_ms = c.answered_at.map(|a| ms_between(a, o.ended));
                }
            }
            _ => {}
        }
    }
    // The key presses are logged when the call ends, after the opt-out record (which is
    // durable before the confirmation plays): pair them once everything is read.
    for c in &mut out {
        if let (Some(key), Some(durable)) = (c.opt_out_key_at_ms, c.opt_out_at) {
            let pressed =
                c.sent_at + chrono::Duration::milliseconds(i64::try_from(key).unwrap_or(0));
            c.row.optout_durable_ms = Some(ms_between(pressed, durable));
        }
    }
    out
}

/// Every call of the log in `dir`, in INVITE order.
pub fn calls(dir: &Path) -> Result<Vec<CallRow>> {
    let mut entries = read_all(dir)?;
    crate::resolve_consents(&mut entries);
    Ok(calls_of(&entries).into_iter().map(|c| c.row).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSV header names every field, in the order serde writes them.
    #[test]
    fn columns_are_the_row_fields_in_order() {
        let text = serde_json::to_string(&CallRow::default()).unwrap_or_default();
        let fields = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.as_object().map(|o| o.len()))
            .unwrap_or(0);
        assert_eq!(fields, COLUMNS.len(), "{text}");
        let positions: Vec<usize> = COLUMNS
            .iter()
            .map(|c| text.find(&format!("\"{c}\":")).unwrap_or(usize::MAX))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{text} is not in COLUMNS order"
        );
    }
}
