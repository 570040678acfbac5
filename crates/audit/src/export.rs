//! Exports for reviewers: one row per call (CDR-style, CSV or JSON) and a self-contained HTML
//! report (counts per outcome, calls per local hour against the consented windows, violations).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use chrono::{NaiveDateTime, Timelike};
use crieur_scheduler::Windows;
use serde::Serialize;

use crate::record::Record;
use crate::replay::ReplayReport;
use crate::{read_all, Result};

/// One call, as a row.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallRow {
    pub call: String,
    pub campaign: String,
    pub contact: String,
    pub number: String,
    pub decided_at: String,
    pub invite_at: String,
    pub final_status: Option<u16>,
    pub answered: bool,
    pub answer_to_audio_ms: Option<u64>,
    pub keys: String,
    pub opted_out: bool,
    pub hangup_by: String,
    pub hangup_reason: String,
    pub outcome: String,
    pub started: String,
    pub ended: String,
}

/// Every call of the log, in INVITE order.
pub fn calls(dir: &Path) -> Result<Vec<CallRow>> {
    let mut rows: Vec<CallRow> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, e) in read_all(dir)? {
        let row = |call: &str, rows: &mut Vec<CallRow>| -> Option<usize> {
            index.get(call).copied().filter(|&i| i < rows.len())
        };
        match e.record {
            Record::InviteSent(i) => {
                index.insert(i.call.clone(), rows.len());
                rows.push(CallRow {
                    call: i.call,
                    campaign: i.campaign,
                    contact: i.contact,
                    number: i.number,
                    decided_at: i.decided_at.to_rfc3339(),
                    invite_at: i.sent_at.to_rfc3339(),
                    ..CallRow::default()
                });
            }
            // A provisional (18x) is evidence that something rang, not the final status.
            Record::SipResponse(r) if r.status >= 200 => {
                if let Some(k) = row(&r.call, &mut rows) {
                    rows[k].final_status = Some(r.status);
                }
            }
            Record::Answered(a) => {
                if let Some(k) = row(&a.call, &mut rows) {
                    rows[k].answered = true;
                }
            }
            Record::FirstAudio(f) => {
                if let Some(k) = row(&f.call, &mut rows) {
                    rows[k].answer_to_audio_ms = Some(f.answer_to_audio_ms);
                }
            }
            Record::Dtmf(d) => {
                if let Some(k) = row(&d.call, &mut rows) {
                    let _ = write!(rows[k].keys, "{}({}) ", d.digit, d.method);
                }
            }
            Record::OptOutRecorded(o) => {
                if let Some(k) = row(&o.call, &mut rows) {
                    rows[k].opted_out = true;
                }
            }
            Record::Hangup(h) => {
                if let Some(k) = row(&h.call, &mut rows) {
                    rows[k].hangup_by = h.by;
                    rows[k].hangup_reason = h.reason;
                }
            }
            Record::Outcome(o) => {
                if let Some(k) = row(&o.call, &mut rows) {
                    rows[k].outcome = o.outcome;
                    rows[k].started = o.started.to_rfc3339();
                    rows[k].ended = o.ended.to_rfc3339();
                }
            }
            _ => {}
        }
    }
    for r in &mut rows {
        r.keys = r.keys.trim_end().to_owned();
    }
    Ok(rows)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Dials per local hour (first candidate zone's reading) and, per hour, how many of those
/// dials' consent windows cover that hour of the same local day.
pub fn hours(dir: &Path) -> Result<([u64; 24], [u64; 24])> {
    let mut calls = [0u64; 24];
    let mut covered = [0u64; 24];
    for (_, _, e) in read_all(dir)? {
        let Record::Decision(d) = e.record else {
            continue;
        };
        if d.verdict != "dial" {
            continue;
        }
        let Some(r) = d.readings.first() else {
            continue;
        };
        let Ok(local) = NaiveDateTime::parse_from_str(&r.local, "%Y-%m-%dT%H:%M:%S") else {
            continue;
        };
        calls[local.hour() as usize] += 1;
        let windows: Vec<Windows> = d
            .consents
            .iter()
            .filter_map(|c| c.windows.parse().ok())
            .collect();
        for (h, slot) in covered.iter_mut().enumerate() {
            let Some(at) = local.date().and_hms_opt(h as u32, 30, 0) else {
                continue;
            };
            if windows.iter().any(|w| w.containing(at).is_some()) {
                *slot += 1;
            }
        }
    }
    Ok((calls, covered))
}

/// The self-contained HTML report (no scripts, no external resources).
pub fn html_report(dir: &Path, replay: &ReplayReport) -> Result<String> {
    let rows = calls(dir)?;
    let (per_hour, covered) = hours(dir)?;
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        let o = if r.outcome.is_empty() {
            "(no outcome recorded)"
        } else {
            &r.outcome
        };
        *by_outcome.entry(o.to_owned()).or_default() += 1;
    }
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>crieur audit report</title>\
         <style>body{{font:14px sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #999;padding:.2em .6em;text-align:left}}.bad{{color:#a00}}</style>\
         <h1>crieur audit report</h1><p>Log: <code>{}</code>. {} records, {} runs, {} decisions \
         ({} dial, {} skip), {} calls.</p>",
        esc(&dir.display().to_string()),
        replay.records,
        replay.runs,
        replay.decisions,
        replay.dials,
        replay.skips,
        replay.invites
    );
    h.push_str("<h2>Calls per outcome</h2><table><tr><th>outcome</th><th>calls</th></tr>");
    for (o, n) in &by_outcome {
        let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", esc(o));
    }
    h.push_str("</table>");
    // The plot: bars = dials per local hour; the grey band = how many of those dials'
    // consent windows cover the hour.
    let max = per_hour
        .iter()
        .chain(covered.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1);
    let (w, ht) = (24 * 24 + 40, 220);
    let _ = write!(
        h,
        "<h2>Calls per local hour against the consented windows</h2>\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" \
         aria-label=\"calls per local hour\">",
        ht + 40
    );
    for hour in 0..24 {
        let x = 30 + hour * 24;
        let ch = covered[hour] * ht / max;
        let bh = per_hour[hour] * ht / max;
        let _ = write!(
            h,
            "<rect x=\"{x}\" y=\"{}\" width=\"22\" height=\"{ch}\" fill=\"#ddd\"><title>{hour}h: consent covers {} dials</title></rect>\
             <rect x=\"{}\" y=\"{}\" width=\"14\" height=\"{bh}\" fill=\"#36c\"><title>{hour}h: {} calls</title></rect>\
             <text x=\"{}\" y=\"{}\" font-size=\"10\">{hour}</text>",
            10 + ht - ch,
            covered[hour],
            x + 4,
            10 + ht - bh,
            per_hour[hour],
            x + 5,
            ht + 25
        );
    }
    let _ = write!(
        h,
        "</svg><p>Blue: dials per hour of the called party's local time. Grey: how many of \
         those dials had consent covering that hour. A blue bar taller than its grey band is a \
         dial outside consent (also listed below).</p><h2>Violations ({})</h2>",
        replay.violations.len()
    );
    if replay.violations.is_empty() {
        h.push_str(
            "<p>None: every dial decision re-derives as a dial from its recorded inputs.</p>",
        );
    } else {
        h.push_str("<table><tr><th>where</th><th>kind</th><th>contact</th><th>detail</th></tr>");
        for v in &replay.violations {
            let _ = write!(
                h,
                "<tr class=\"bad\"><td>{}:{} (seq {})</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&v.segment),
                v.line,
                v.seq,
                esc(&v.kind),
                esc(v.contact.as_deref().unwrap_or("")),
                esc(&v.detail)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</html>\n");
    Ok(h)
}
