//! `audit report --html`: one self-contained HTML page from which a regulator can answer, from
//! the log alone, who called, when, under which rules, with what proof, and what went wrong.
//!
//! The page is built from the records (every value in it is escaped: names, numbers, proofs
//! and transcripts are the operator's input), `verify`'s result and `replay`'s violations. It
//! loads nothing (inline CSS, SVG and one small script, pinned by its hash in the page's
//! Content-Security-Policy) and reads no clock: the same log gives the same page.
//! `docs/audit-format.md` ("The report") says what each section shows and where it comes from.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use crieur_scheduler::{RuleSet, Windows};
use sha2::{Digest, Sha256};

use crate::export::{calls_of, local, utc, Call};
use crate::record::{AmdRecord, Entry, Reason, Record, RunHeader};
use crate::replay::{replay, ReplayReport, MAX_ANSWER_TO_AUDIO_MS};
use crate::verify::{verify, VerifyOptions, VerifyReport};
use crate::{read_readable, Result};

/// The page and the figures the command prints.
#[derive(Debug, Clone)]
pub struct Report {
    pub html: String,
    pub calls: usize,
    pub violations: usize,
    /// Whether `verify` found the chain intact.
    pub intact: bool,
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The short fingerprint of an Ed25519 public key shown in the report: the first 16 hex
/// digits of the SHA-256 of its 32 bytes (`xxd -r -p key.pub | sha256sum | cut -c1-16`).
pub fn key_fingerprint(public_key_hex: &str) -> String {
    match hex::decode(public_key_hex.trim()) {
        Ok(b) => hex::encode(Sha256::digest(b))[..16].to_owned(),
        Err(_) => "(malformed key)".into(),
    }
}

/// The sort script of the per-call and violation tables: a click on a header sorts by that
/// column (numbers by their `data-v`), a second click reverses.
const SCRIPT: &str = r#"document.querySelectorAll("table.sortable").forEach(function (t) {
  var heads = t.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, i) {
    th.tabIndex = 0;
    var sort = function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var num = th.getAttribute("data-type") === "num";
      var key = function (r) {
        var c = r.cells[i], v = c.getAttribute("data-v");
        v = v === null ? c.textContent : v;
        return num ? (v === "" ? null : Number(v)) : v;
      };
      var body = t.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === y) return 0;
        if (x === null) return 1;
        if (y === null) return -1;
        var d = num ? x - y : String(x).localeCompare(String(y));
        return asc ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") sort(); });
  });
  t.classList.add("sort-ready");
});"#;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:90em;\
padding:0 1em;color:#111}h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.2em .5em;\
text-align:left;vertical-align:top}th{background:#eee}td.n,th.n{text-align:right}\
.sortable th{cursor:pointer}.sortable th[aria-sort=ascending]::after{content:' \\25B2'}\
.sortable th[aria-sort=descending]::after{content:' \\25BC'}.bad{color:#a00;font-weight:600}\
tr.bad td{background:#fee}.ok{color:#070;font-weight:600}.verdict{border:2px solid;\
padding:.5em 1em;display:inline-block}code,pre{font-family:ui-monospace,monospace;font-size:12px}\
pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em;max-width:80em}.hash{word-break:break-all}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:600}dd{margin:0}\
svg{max-width:100%;height:auto}svg text{font:11px sans-serif}.scroll{overflow-x:auto}#calls-table td,#calls-table th{white-space:nowrap}.note{color:#555}";

/// One table cell: escaped text, an optional sort key, a class.
struct Cell {
    html: String,
    sort: Option<String>,
    class: &'static str,
}

fn txt(s: &str) -> Cell {
    Cell {
        html: esc(s),
        sort: None,
        class: "",
    }
}

fn code(s: &str) -> Cell {
    Cell {
        html: if s.is_empty() {
            String::new()
        } else {
            format!("<code>{}</code>", esc(s))
        },
        sort: Some(esc(s)),
        class: "",
    }
}

fn num(n: impl std::fmt::Display) -> Cell {
    let s = n.to_string();
    Cell {
        html: esc(&s),
        sort: Some(esc(&s)),
        class: "n",
    }
}

fn opt_num(n: Option<u64>) -> Cell {
    match n {
        Some(n) => num(n),
        None => Cell {
            html: String::new(),
            sort: Some(String::new()),
            class: "n",
        },
    }
}

/// A column: its title and whether it sorts as numbers.
type Col<'a> = (&'a str, bool);

fn table(
    h: &mut String,
    id: &str,
    sortable: bool,
    cols: &[Col<'_>],
    rows: impl IntoIterator<Item = (bool, Vec<Cell>)>,
) {
    let _ = write!(
        h,
        "<table id=\"{id}\"{}><thead><tr>",
        if sortable { " class=\"sortable\"" } else { "" }
    );
    for (title, numeric) in cols {
        let _ = write!(
            h,
            "<th{}>{}</th>",
            if *numeric {
                " class=\"n\" data-type=\"num\""
            } else {
                ""
            },
            esc(title)
        );
    }
    h.push_str("</tr></thead><tbody>");
    for (bad, cells) in rows {
        h.push_str(if bad { "<tr class=\"bad\">" } else { "<tr>" });
        for c in cells {
            h.push_str("<td");
            if !c.class.is_empty() {
                let _ = write!(h, " class=\"{}\"", c.class);
            }
            if let Some(v) = &c.sort {
                let _ = write!(h, " data-v=\"{v}\"");
            }
            let _ = write!(h, ">{}</td>", c.html);
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>");
}

fn dl(h: &mut String, items: &[(&str, String)]) {
    h.push_str("<dl>");
    for (k, v) in items {
        let _ = write!(h, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    }
    h.push_str("</dl>");
}

/// A bar series of a chart.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    values: &'a [u64],
}

/// A round step for about five ticks up to `max`.
fn tick_step(max: u64) -> u64 {
    let raw = max.div_ceil(5).max(1);
    let mut p = 1u64;
    while p.saturating_mul(10) <= raw {
        p *= 10;
    }
    [1, 2, 5, 10]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10 * p)
}

/// A grouped bar chart with both axes labelled, tick values, each bar's value above it, a
/// legend, and an optional vertical rule after category `rule.0` labelled `rule.1`.
#[allow(clippy::too_many_arguments)]
fn bar_chart(
    h: &mut String,
    id: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    categories: &[String],
    series: &[Series<'_>],
    rule: Option<(usize, &str)>,
    min_group: u64,
) {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let step = tick_step(max);
    let top = max.div_ceil(step) * step;
    let (left, right, up, bottom) = (56u64, 16u64, 28u64, 64u64);
    let group = (series.len() as u64 * 14 + 10).max(min_group);
    let plot_w = group * categories.len() as u64;
    let plot_h = 220u64;
    let (w, ht) = (left + plot_w + right, up + plot_h + bottom);
    let y = |v: u64| up + plot_h - v * plot_h / top;
    let _ = write!(
        h,
        "<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" \
         role=\"img\" aria-labelledby=\"{id}-title\"><title id=\"{id}-title\">{}</title>",
        esc(title)
    );
    // Y axis: gridlines and tick values.
    let mut v = 0;
    while v <= top {
        let _ = write!(
            h,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{yy}\" y2=\"{yy}\" stroke=\"#ddd\"/>\
             <text class=\"tick y\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{v}</text>",
            left + plot_w,
            left - 6,
            y(v) + 4,
            yy = y(v)
        );
        v += step;
    }
    // Bars, their values, the category labels.
    let bar_w = (group - 10) / series.len().max(1) as u64;
    for (k, cat) in categories.iter().enumerate() {
        let x0 = left + k as u64 * group + 5;
        for (j, s) in series.iter().enumerate() {
            let val = s.values.get(k).copied().unwrap_or(0);
            let x = x0 + j as u64 * bar_w;
            let _ = write!(
                h,
                "<rect class=\"bar\" data-series=\"{}\" data-category=\"{}\" data-value=\"{val}\" \
                 x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}: {} = {val}</title></rect>",
                esc(s.name),
                esc(cat),
                y(val),
                bar_w.saturating_sub(1),
                up + plot_h - y(val),
                s.color,
                esc(cat),
                esc(s.name)
            );
            if val > 0 {
                let _ = write!(
                    h,
                    "<text class=\"value\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"9\">{val}</text>",
                    x + bar_w / 2,
                    y(val) - 2
                );
            }
        }
        let _ = write!(
            h,
            "<text class=\"tick x\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x0 + (group - 10) / 2,
            up + plot_h + 14,
            esc(cat)
        );
    }
    if let Some((after, label)) = rule {
        let x = left + (after as u64 + 1) * group;
        let _ = write!(
            h,
            "<line class=\"rule\" x1=\"{x}\" x2=\"{x}\" y1=\"{up}\" y2=\"{}\" stroke=\"#c00\" \
             stroke-dasharray=\"4 3\"/><text x=\"{}\" y=\"{}\" fill=\"#c00\">{}</text>",
            up + plot_h,
            x + 4,
            up + 10,
            esc(label)
        );
    }
    // Axes, their labels, the legend.
    let _ = write!(
        h,
        "<line x1=\"{left}\" x2=\"{left}\" y1=\"{up}\" y2=\"{}\" stroke=\"#000\"/>\
         <line x1=\"{left}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#000\"/>\
         <text class=\"axis-label x\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text class=\"axis-label y\" x=\"14\" y=\"{}\" text-anchor=\"middle\" \
         transform=\"rotate(-90 14 {})\">{}</text>",
        up + plot_h,
        left + plot_w,
        up + plot_h,
        up + plot_h,
        left + plot_w / 2,
        up + plot_h + 36,
        esc(x_label),
        up + plot_h / 2,
        up + plot_h / 2,
        esc(y_label)
    );
    let mut lx = left;
    for s in series {
        let _ = write!(
            h,
            "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text class=\"legend\" x=\"{}\" y=\"{}\">{}</text>",
            ht - 16,
            s.color,
            lx + 14,
            ht - 7,
            esc(s.name)
        );
        lx += 20 + 7 * s.name.chars().count() as u64;
    }
    h.push_str("</svg>");
}

/// Upper bounds (inclusive, ms) of the latency buckets; the last bucket is open.
const BUCKETS: [u64; 9] = [50, 100, 250, 500, 1000, 1500, 2000, 3000, 5000];

fn bucket_labels() -> Vec<String> {
    let mut out = Vec::new();
    let mut lo = 0;
    for b in BUCKETS {
        out.push(if lo == 0 {
            format!("0–{b}")
        } else {
            format!("{}–{b}", lo + 1)
        });
        lo = b;
    }
    out.push(format!(">{lo}"));
    out
}

/// A one-row table of sorted durations `v`: count, min, median, p95, p99, max, and how many
/// are over a bound (`over`: the bound and its column title; the row is red when any is).
fn quantiles(h: &mut String, id: &str, v: &[u64], over: Option<(u64, &str)>) {
    let pct = |p: usize| -> String {
        if v.is_empty() {
            return "–".into();
        }
        let rank = (p * v.len()).div_ceil(100).max(1) - 1;
        v[rank.min(v.len() - 1)].to_string()
    };
    let mut cols: Vec<Col<'_>> = vec![
        ("measured", true),
        ("min ms", true),
        ("median ms", true),
        ("p95 ms", true),
        ("p99 ms", true),
        ("max ms", true),
    ];
    let mut cells = vec![
        num(v.len()),
        num(v.first().map_or("–".into(), u64::to_string)),
        num(pct(50)),
        num(pct(95)),
        num(pct(99)),
        num(v.last().map_or("–".into(), u64::to_string)),
    ];
    let mut bad = false;
    if let Some((bound, title)) = over {
        let n = v.iter().filter(|&&x| x > bound).count();
        bad = n > 0;
        cols.push((title, true));
        cells.push(num(n));
    }
    table(h, id, false, &cols, [(bad, cells)]);
}

/// A latency distribution against the 2 s rule: summary, histogram.
fn distribution(h: &mut String, id: &str, title: &str, mut v: Vec<u64>) {
    v.sort_unstable();
    let _ = write!(h, "<div id=\"{id}\"><h3>{}</h3>", esc(title));
    quantiles(
        h,
        &format!("{id}-summary"),
        &v,
        Some((MAX_ANSWER_TO_AUDIO_MS, "over 2 000 ms")),
    );
    let mut counts = vec![0u64; BUCKETS.len() + 1];
    for x in &v {
        let k = BUCKETS.iter().position(|b| x <= b).unwrap_or(BUCKETS.len());
        counts[k] += 1;
    }
    bar_chart(
        h,
        &format!("{id}-chart"),
        title,
        "milliseconds",
        "calls",
        &bucket_labels(),
        &[Series {
            name: "calls",
            color: "#36c",
            values: &counts,
        }],
        Some((6, "2 s rule")),
        72,
    );
    h.push_str("</div>");
}

/// Calls per local hour, and how many of all calls' consent windows cover each hour of the
/// same local day as the call.
fn hours(calls: &[Call]) -> ([u64; 24], [u64; 24]) {
    let mut per_hour = [0u64; 24];
    let mut covered = [0u64; 24];
    for c in calls {
        let Some(zone) = c.zone else { continue };
        let local: NaiveDateTime = c.sent_at.with_timezone(&zone).naive_local();
        per_hour[local.hour() as usize] += 1;
        let windows: Vec<Windows> = c.windows.iter().filter_map(|w| w.parse().ok()).collect();
        for (hr, slot) in covered.iter_mut().enumerate() {
            let at = local.date().and_hms_opt(hr as u32, 30, 0);
            if at.is_some_and(|at| windows.iter().any(|w| w.containing(at).is_some())) {
                *slot += 1;
            }
        }
    }
    (per_hour, covered)
}

/// A run header and where it is.
struct Run<'a> {
    seq: u64,
    ts: DateTime<Utc>,
    header: &'a RunHeader,
    stop: Option<(u64, &'a str)>,
}

/// The code a skip reason is grouped by: its stable `code`; for a format-1 log's free text,
/// its leading word.
fn reason_code(r: &Reason) -> String {
    match r {
        Reason::Text { text } => text_reason_code(text),
        r => r.code().to_owned(),
    }
}

/// A format-1 log's free-text reason, grouped: the Rust name of the scheduler's reason, or
/// the sentence without the number it starts with.
fn text_reason_code(r: &str) -> String {
    // Free text that starts with the number ("+336… is on the opt-out list"): the rest.
    let r = match r.split_once(' ') {
        Some((first, rest)) if first.starts_with('+') => rest,
        _ => r,
    };
    r.split(['{', '(', ':'])
        .next()
        .unwrap_or(r)
        .trim()
        .to_owned()
}

fn fmt_dur_ms(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

/// Builds the report of the log in `dir`, verifying it with `opts`.
pub fn html_report(dir: &Path, opts: &VerifyOptions) -> Result<Report> {
    let ver = verify(dir, opts)?;
    // A damaged log is reported as far as it can be read; replay needs all of it.
    let (mut entries, unreadable) = read_readable(dir)?;
    crate::resolve_consents(&mut entries);
    let (rep, replay_failed) = match &unreadable {
        None => (replay(dir)?, None),
        Some(e) => (ReplayReport::default(), Some(e.to_string())),
    };
    let calls = calls_of(&entries);
    let html = render(
        dir,
        opts,
        &ver,
        &rep,
        replay_failed.as_deref(),
        &entries,
        &calls,
    );
    Ok(Report {
        html,
        calls: calls.len(),
        violations: rep.violations.len(),
        intact: ver.first_break.is_none() && unreadable.is_none(),
    })
}

fn render(
    dir: &Path,
    opts: &VerifyOptions,
    ver: &VerifyReport,
    rep: &ReplayReport,
    replay_failed: Option<&str>,
    entries: &[(String, usize, Entry)],
    calls: &[Call],
) -> String {
    let mut runs: Vec<Run<'_>> = Vec::new();
    for (_, _, e) in entries {
        match &e.record {
            Record::RunStart(h) => runs.push(Run {
                seq: e.seq,
                ts: e.ts,
                header: h,
                stop: None,
            }),
            Record::RunStop(s) => {
                if let Some(r) = runs.last_mut().filter(|r| r.stop.is_none()) {
                    r.stop = Some((e.seq, &s.reason));
                }
            }
            _ => {}
        }
    }
    let names: BTreeSet<&str> = runs
        .iter()
        .filter_map(|r| {
            r.header
                .campaign_name
                .as_deref()
                .or(r.header.campaign.as_deref())
        })
        .collect();
    let title = if names.is_empty() {
        "crieur audit report".to_owned()
    } else {
        format!(
            "crieur audit report — {}",
            names.iter().copied().collect::<Vec<_>>().join(", ")
        )
    };
    let script_hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(SCRIPT));
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'sha256-{script_hash}'\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1>",
        t = esc(&title)
    );
    summary(&mut h, dir, ver, rep, replay_failed, calls);
    campaigns(&mut h, &runs);
    period(&mut h, entries, calls, &runs);
    verification(&mut h, opts, ver, entries);
    chart_hours(&mut h, calls);
    zones(&mut h, calls);
    outcomes(&mut h, calls);
    breaker(&mut h, entries);
    latencies(&mut h, calls);
    amd(&mut h, calls);
    violations(&mut h, ver, rep, replay_failed);
    skips(&mut h, entries);
    lists(&mut h, entries);
    call_table(&mut h, calls, rep);
    let _ = write!(
        h,
        "<footer class=\"note\"><p>Built by crieur from the audit log alone (the same log gives \
         the same page). Check it yourself: <code>crieur audit verify {d} --pubkey KEY</code>, \
         <code>crieur audit replay {d}</code>, <code>crieur audit export {d}</code>; the format \
         is in crieur's <code>docs/audit-format.md</code>.</p></footer>\
         <script>{SCRIPT}</script></body></html>",
        d = esc(&dir.display().to_string())
    );
    h.push('\n');
    h
}

fn summary(
    h: &mut String,
    dir: &Path,
    ver: &VerifyReport,
    rep: &ReplayReport,
    replay_failed: Option<&str>,
    calls: &[Call],
) {
    let intact = ver.first_break.is_none();
    let clean = intact && rep.violations.is_empty() && replay_failed.is_none();
    let _ = write!(
        h,
        "<section id=\"summary\"><p class=\"verdict {}\">{}</p><p>Log <code>{}</code>: {} \
         records, {} runs, {} decisions ({} dial, {} skip), {} calls, {} violations.</p></section>",
        if clean { "ok" } else { "bad" },
        match (intact, rep.violations.len()) {
            _ if replay_failed.is_some() => format!(
                "Chain {}; the log cannot be replayed: a record is unreadable.",
                if intact {
                    "intact"
                } else {
                    "BROKEN (see Verification)"
                }
            ),
            (true, 0) => "Chain intact; replay finds no violation.".to_owned(),
            (true, n) => format!("Chain intact; replay finds {n} violation(s)."),
            (false, n) =>
                format!("Chain BROKEN (see Verification); replay finds {n} violation(s)."),
        },
        esc(&dir.display().to_string()),
        rep.records,
        rep.runs,
        rep.decisions,
        rep.dials,
        rep.skips,
        calls.len(),
        rep.violations.len()
    );
}

fn campaigns(h: &mut String, runs: &[Run<'_>]) {
    h.push_str("<section id=\"campaign\"><h2>Campaign and rules</h2>");
    // One block per distinct campaign file (name + content).
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for r in runs {
        let hd = r.header;
        let (Some(name), Some(toml)) = (&hd.campaign, &hd.campaign_toml) else {
            continue;
        };
        let computed = hex::encode(Sha256::digest(toml.as_bytes()));
        if !seen.insert((name.clone(), computed.clone())) {
            continue;
        }
        let hash = match &hd.campaign_sha256 {
            Some(rec) if *rec == computed => format!(
                "<code class=\"hash\">{}</code> <span class=\"ok\">matches the file recorded below</span>",
                esc(rec)
            ),
            Some(rec) => format!(
                "<code class=\"hash\">{}</code> <span class=\"bad\">does NOT match the file \
                 recorded below ({})</span>",
                esc(rec),
                esc(&computed)
            ),
            None => format!(
                "<code class=\"hash\">{}</code> (computed from the file recorded below; this \
                 run did not record a hash)",
                esc(&computed)
            ),
        };
        let _ = match hd.campaign_name.as_deref().filter(|n| n != name) {
            Some(display) => write!(
                h,
                "<div class=\"campaign\"><h3>{} <span class=\"note\">(id {})</span></h3>",
                esc(display),
                esc(name)
            ),
            None => write!(h, "<div class=\"campaign\"><h3>{}</h3>", esc(name)),
        };
        let mut items = vec![
            (
                "campaign file",
                format!(
                    "<code>{}</code>",
                    esc(hd.campaign_file.as_deref().unwrap_or("(path not recorded)"))
                ),
            ),
            ("file SHA-256", hash),
            (
                "first recorded",
                format!("run-start seq {} at {}", r.seq, esc(&utc(r.ts))),
            ),
            ("software", esc(&hd.software)),
            (
                "data versions",
                format!(
                    "tzdb {}, phone time-zone map {}",
                    esc(&hd.tzdb_version),
                    esc(&hd.phone_tz_map_version)
                ),
            ),
        ];
        if let Some(p) = &hd.policy {
            let known = RuleSet::by_name(&p.ruleset).ok();
            let rules = match &known {
                Some(rs) if rs.version() == p.ruleset_version => format!(
                    "<span class=\"ruleset\">{} version {}</span> — {}; legal hours: {}",
                    esc(&p.ruleset),
                    esc(&p.ruleset_version),
                    esc(rs.source()),
                    esc(&rs
                        .hours()
                        .map_or("any time".to_owned(), ToString::to_string))
                ),
                _ => format!(
                    "<span class=\"ruleset\">{} version {}</span> <span class=\"bad\">(not a \
                     rule set this crieur knows: replay reports it)</span>",
                    esc(&p.ruleset),
                    esc(&p.ruleset_version)
                ),
            };
            items.push(("rule set", rules));
            items.push(("campaign zone", esc(&p.zone)));
            items.push((
                "campaign schedule",
                if p.schedule.is_empty() {
                    "any time (within consent and the rule set)".into()
                } else {
                    esc(&p.schedule.join("; "))
                },
            ));
            items.push((
                "ring timeout / message",
                format!(
                    "{} / {}",
                    fmt_dur_ms(p.ring_timeout_ms),
                    fmt_dur_ms(p.message_ms)
                ),
            ));
        }
        if let Some(c) = &hd.caps {
            let mut s = format!("at most {} attempts per contact", c.max_attempts);
            if let (Some(m), Some(d)) = (c.rolling_max, c.rolling_days) {
                let _ = write!(s, "; at most {m} calls per number in {d} days");
            }
            if let Some(q) = c.quiet_days_after_refusal {
                let _ = write!(s, "; {q} quiet days after a refusal");
            }
            items.push(("caps", s));
        }
        if !hd.retry.is_empty() {
            items.push((
                "retry rules",
                esc(&hd
                    .retry
                    .iter()
                    .map(|r| {
                        format!(
                            "{}: after {} s, at most {} retries",
                            r.outcome, r.delay_secs, r.max_retries
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")),
            ));
        }
        if let Some(k) = hd.opt_out_key {
            items.push(("opt-out key", format!("<kbd>{}</kbd>", esc(&k.to_string()))));
        }
        dl(h, &items);
        if !hd.audio.is_empty() {
            table(
                h,
                "audio",
                false,
                &[
                    ("role", false),
                    ("file", false),
                    ("SHA-256", false),
                    ("length", true),
                    ("transcript", false),
                ],
                hd.audio.iter().map(|a| {
                    (
                        false,
                        vec![
                            txt(&a.role),
                            code(&a.path),
                            Cell {
                                html: format!("<code class=\"hash\">{}</code>", esc(&a.sha256)),
                                sort: None,
                                class: "",
                            },
                            num(fmt_dur_ms(a.length_ms)),
                            Cell {
                                html: match &a.transcript {
                                    Some(t) => {
                                        format!("<pre class=\"transcript\">{}</pre>", esc(t))
                                    }
                                    None => {
                                        "<span class=\"bad\">no transcript recorded</span>".into()
                                    }
                                },
                                sort: None,
                                class: "",
                            },
                        ],
                    )
                }),
            );
        }
        let _ = write!(
            h,
            "<details><summary>The campaign file, verbatim</summary><pre class=\"toml\">{}</pre></details></div>",
            esc(toml)
        );
    }
    if seen.is_empty() {
        h.push_str("<p>No run of this log names a campaign.</p>");
    }
    h.push_str("<h3>Runs</h3>");
    table(
        h,
        "runs",
        false,
        &[
            ("seq", true),
            ("started (UTC)", false),
            ("command", false),
            ("campaign", false),
            ("rule set", false),
            ("stopped", false),
        ],
        runs.iter().map(|r| {
            (
                false,
                vec![
                    num(r.seq),
                    txt(&utc(r.ts)),
                    txt(&r.header.command),
                    txt(r.header.campaign.as_deref().unwrap_or("")),
                    txt(&r
                        .header
                        .policy
                        .as_ref()
                        .map(|p| format!("{} {}", p.ruleset, p.ruleset_version))
                        .unwrap_or_default()),
                    txt(&r.stop.map_or("(no run-stop record)".into(), |(s, why)| {
                        format!("seq {s}: {why}")
                    })),
                ],
            )
        }),
    );
    h.push_str("</section>");
}

fn period(h: &mut String, entries: &[(String, usize, Entry)], calls: &[Call], runs: &[Run<'_>]) {
    h.push_str("<section id=\"period\"><h2>Period</h2>");
    let zone = runs
        .iter()
        .find_map(|r| r.header.policy.as_ref())
        .and_then(|p| p.zone.parse::<chrono_tz::Tz>().ok());
    let both = |t: DateTime<Utc>| match zone {
        Some(z) => format!(
            "{} UTC = {} {}",
            esc(&utc(t)),
            esc(&local(t, z)),
            esc(z.name())
        ),
        None => format!("{} UTC", esc(&utc(t))),
    };
    let mut items = Vec::new();
    if let (Some(f), Some(l)) = (entries.first(), entries.last()) {
        items.push(("first record", both(f.2.ts)));
        items.push(("last record", both(l.2.ts)));
    }
    if let (Some(f), Some(l)) = (
        calls.iter().map(|c| c.sent_at).min(),
        calls.iter().map(|c| c.sent_at).max(),
    ) {
        items.push(("first call", both(f)));
        items.push(("last call", both(l)));
    }
    if items.is_empty() {
        h.push_str("<p>The log is empty.</p>");
    } else {
        dl(h, &items);
        h.push_str(
            "<p class=\"note\">Local times are in the campaign's zone; each callee's own local \
             times are in the zone table and the call table.</p>",
        );
    }
    h.push_str("</section>");
}

fn verification(
    h: &mut String,
    opts: &VerifyOptions,
    ver: &VerifyReport,
    entries: &[(String, usize, Entry)],
) {
    h.push_str("<section id=\"verification\"><h2>Verification</h2>");
    let _ = match &ver.first_break {
        None => write!(
            h,
            "<p class=\"verdict ok\" id=\"verify-result\">Chain intact: every record's hash \
             links to the next, seq continuous, every checkpoint signature valid.</p>"
        ),
        Some(b) => write!(
            h,
            "<p class=\"verdict bad\" id=\"verify-result\">Chain BROKEN at {}: nothing from \
             there on can be trusted.</p>",
            esc(&b.to_string())
        ),
    };
    let pinned = match &opts.public_key {
        Some(k) => {
            let hexk = hex::encode(k.to_bytes());
            format!(
                "pinned: checked against the given key <code class=\"hash\">{}</code> \
                 (fingerprint <code class=\"fingerprint\">{}</code>)",
                esc(&hexk),
                esc(&key_fingerprint(&hexk))
            )
        }
        None => "<span class=\"bad\">not pinned</span>: each checkpoint was checked against the \
                 key it names, which proves only that whoever holds that key signed it (give \
                 the operator's public key with <code>--pubkey</code>)"
            .into(),
    };
    dl(
        h,
        &[
            ("segments", ver.segments.to_string()),
            ("records", ver.records.to_string()),
            ("bytes", ver.bytes.to_string()),
            ("checkpoints", ver.checkpoints.to_string()),
            (
                "last checkpoint",
                ver.last_checkpoint
                    .map_or("none".into(), |s| format!("seq {s}")),
            ),
            (
                "head",
                ver.head.as_ref().map_or("none".into(), |(s, hash)| {
                    format!("seq {s} <code class=\"hash\">{}</code>", esc(hash))
                }),
            ),
            (
                "unproven records",
                match &ver.unproven {
                    None => "<span class=\"ok\" id=\"unproven\">0</span>: every record is \
                             covered by a signed checkpoint"
                        .into(),
                    Some(u) => format!(
                        "<span class=\"bad\" id=\"unproven\">{}</span> record(s), seq {} to {}, \
                         {}: they could have been changed or cut without a trace",
                        u.records,
                        u.first_seq,
                        u.last_seq,
                        if ver.checkpoints == 0 {
                            "no checkpoint in the log"
                        } else {
                            "after the last signed checkpoint"
                        }
                    ),
                },
            ),
            ("signature key", pinned),
        ],
    );
    // The keys the checkpoints name.
    let mut keys: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for (_, _, e) in entries {
        if let Record::Checkpoint(c) = &e.record {
            let k = keys.entry(&c.public_key).or_insert((0, e.seq, e.seq));
            k.0 += 1;
            k.2 = e.seq;
        }
    }
    if !keys.is_empty() {
        table(
            h,
            "signing-keys",
            false,
            &[
                ("public key the checkpoints name", false),
                ("fingerprint", false),
                ("checkpoints", true),
                ("first seq", true),
                ("last seq", true),
            ],
            keys.iter().map(|(k, (n, first, last))| {
                (
                    opts.public_key
                        .is_some_and(|p| hex::encode(p.to_bytes()) != *k),
                    vec![
                        Cell {
                            html: format!("<code class=\"hash\">{}</code>", esc(k)),
                            sort: None,
                            class: "",
                        },
                        code(&key_fingerprint(k)),
                        num(n),
                        num(first),
                        num(last),
                    ],
                )
            }),
        );
    }
    let torn: Vec<_> = entries
        .iter()
        .filter_map(|(_, _, e)| match &e.record {
            Record::TornTail(t) => Some((e.seq, t)),
            _ => None,
        })
        .collect();
    if !torn.is_empty() {
        h.push_str("<h3>Torn tails set aside after a crash</h3>");
        table(
            h,
            "torn-tails",
            false,
            &[
                ("seq", true),
                ("segment", false),
                ("bytes", true),
                ("SHA-256", false),
                ("kept as", false),
            ],
            torn.iter().map(|(s, t)| {
                (
                    true,
                    vec![
                        num(s),
                        txt(&t.segment),
                        num(t.bytes),
                        code(&t.sha256),
                        code(&t.saved_as),
                    ],
                )
            }),
        );
    }
    h.push_str("</section>");
}

fn chart_hours(h: &mut String, calls: &[Call]) {
    let (per_hour, covered) = hours(calls);
    h.push_str("<section id=\"hours\"><h2>Calls per local hour against consent</h2>");
    let cats: Vec<String> = (0..24).map(|x| format!("{x:02}")).collect();
    bar_chart(
        h,
        "hours-chart",
        "Calls per hour of the callee's local time, and consent coverage",
        "hour of the callee's local time (call start)",
        "calls",
        &cats,
        &[
            Series {
                name: "consent covers the hour",
                color: "#bbb",
                values: &covered,
            },
            Series {
                name: "calls started",
                color: "#36c",
                values: &per_hour,
            },
        ],
        None,
        34,
    );
    h.push_str(
        "<p class=\"note\">Blue: calls started in each hour of the callee's local time (its \
         first candidate zone). Grey: of all calls, how many relied on a consent whose windows \
         cover that hour of the call's local day. A blue bar above its grey bar means calls at \
         an hour few consents allow; a call outside its own consent is a violation, listed \
         below.</p></section>",
    );
}

/// Whether the callee answered.
fn answered(c: &Call) -> bool {
    !c.row.answered_at.is_empty()
}

fn zones(h: &mut String, calls: &[Call]) {
    #[derive(Default)]
    struct Z {
        calls: u64,
        answered: u64,
        completed: u64,
        opted_out: u64,
        first: Option<(DateTime<Utc>, String)>,
        last: Option<(DateTime<Utc>, String)>,
    }
    let mut by: BTreeMap<String, Z> = BTreeMap::new();
    for c in calls {
        let name = c.zone.map_or("(unknown)".into(), |z| z.name().to_owned());
        let z = by.entry(name).or_default();
        z.calls += 1;
        z.answered += u64::from(answered(c));
        z.completed += u64::from(c.row.outcome == "answered-completed");
        z.opted_out += u64::from(!c.row.optout_durable_at.is_empty());
        let at = (c.sent_at, c.row.start_local.clone());
        if z.first.as_ref().is_none_or(|f| at.0 < f.0) {
            z.first = Some(at.clone());
        }
        if z.last.as_ref().is_none_or(|l| at.0 > l.0) {
            z.last = Some(at);
        }
    }
    h.push_str("<section id=\"zones\"><h2>Calls per zone</h2>");
    table(
        h,
        "zones-table",
        false,
        &[
            ("zone", false),
            ("calls", true),
            ("answered", true),
            ("completed", true),
            ("opted out", true),
            ("first call (local)", false),
            ("last call (local)", false),
        ],
        by.iter().map(|(name, z)| {
            (
                false,
                vec![
                    txt(name),
                    num(z.calls),
                    num(z.answered),
                    num(z.completed),
                    num(z.opted_out),
                    txt(z.first.as_ref().map_or("", |f| f.1.as_str())),
                    txt(z.last.as_ref().map_or("", |l| l.1.as_str())),
                ],
            )
        }),
    );
    h.push_str("</section>");
}

fn outcomes(h: &mut String, calls: &[Call]) {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for c in calls {
        let o = if c.row.outcome.is_empty() {
            "(no outcome recorded)"
        } else {
            c.row.outcome.as_str()
        };
        *by.entry(o).or_default() += 1;
    }
    let total = calls.len().max(1) as u64;
    h.push_str("<section id=\"outcomes\"><h2>Calls per outcome</h2>");
    table(
        h,
        "outcomes-table",
        false,
        &[("outcome", false), ("calls", true), ("share", true)],
        by.iter().map(|(o, n)| {
            (
                o.starts_with('(') || *o == "opt-out-failed" || o.starts_with("trunk-fault"),
                vec![
                    txt(o),
                    num(n),
                    num(format!("{:.1} %", *n as f64 * 100.0 / total as f64)),
                ],
            )
        }),
    );
    h.push_str("</section>");
}

fn breaker(h: &mut String, entries: &[(String, usize, Entry)]) {
    let rows: Vec<_> = entries
        .iter()
        .filter_map(|(_, _, e)| match &e.record {
            Record::TrunkBreaker(b) => Some((e.seq, e.ts, b)),
            _ => None,
        })
        .collect();
    h.push_str("<section id=\"breaker\"><h2>Trunk breaker</h2>");
    if rows.is_empty() {
        h.push_str("<p>The trunk's circuit breaker never changed state: dialling was never paused for trunk faults.</p>");
    } else {
        h.push_str(
            "<p class=\"note\">Each change of the trunk's circuit breaker: while it is open, \
             nobody is dialled; a fault before anything rang uses up no attempt.</p>",
        );
        table(
            h,
            "breaker-table",
            false,
            &[
                ("seq", true),
                ("at (UTC)", false),
                ("campaign", false),
                ("change", false),
                ("cause", false),
                ("call", false),
                ("SIP status", true),
                ("faults in a row", true),
                ("no call before", false),
                ("detail", false),
            ],
            rows.iter().map(|(seq, ts, b)| {
                (
                    b.state != "closed",
                    vec![
                        num(seq),
                        txt(&utc(*ts)),
                        txt(&b.campaign),
                        txt(&format!("{} → {}", b.from, b.state)),
                        code(&b.cause.code),
                        code(b.cause.call.as_deref().unwrap_or("")),
                        opt_num(b.cause.sip_status.map(u64::from)),
                        num(b.consecutive_faults),
                        txt(&b.until.map(utc).unwrap_or_default()),
                        txt(&b.cause.detail),
                    ],
                )
            }),
        );
    }
    h.push_str("</section>");
}

fn latencies(h: &mut String, calls: &[Call]) {
    h.push_str(
        "<section id=\"latency\"><h2>Timing against the 2 s rule</h2><p class=\"note\">The \
         message must start within 2 s of the answer; an opt-out must be durable (stored and \
         logged) before its confirmation plays, measured here from the key press.</p>",
    );
    distribution(
        h,
        "answer-to-audio",
        "Answer → first audio packet",
        calls
            .iter()
            .filter_map(|c| c.row.answer_to_audio_ms)
            .collect(),
    );
    distribution(
        h,
        "optout-to-durable",
        "Opt-out key → opt-out durable",
        calls
            .iter()
            .filter_map(|c| c.row.optout_durable_ms)
            .collect(),
    );
    h.push_str("</section>");
}

/// The beep → voicemail message delay crieur aims under (issue 18; BENCHMARKS.md): a message
/// starting later loses its first words to nothing, one starting earlier would be cut by the
/// beep. Shown, not a violation.
const BEEP_TO_VOICEMAIL_TARGET_MS: u64 = 300;

/// What a call's AMD verdict column shows: the verdict that stands, and the first one when a
/// beep overturned it.
fn amd_verdict(a: &AmdRecord) -> String {
    match &a.first_verdict {
        Some(first) => format!("{} (first {first})", a.verdict),
        None => a.verdict.clone(),
    }
}

fn amd(h: &mut String, calls: &[Call]) {
    let runs: Vec<&AmdRecord> = calls.iter().filter_map(|c| c.amd.as_ref()).collect();
    h.push_str(
        "<section id=\"amd\"><h2>Answering-machine detection</h2><p class=\"note\">The \
         message starts at the answer (the 2 s rule comes first) while crieur listens to the \
         far end. A <code>machine</code> verdict stops it: in <code>voicemail-drop</code> mode \
         the voicemail message then starts after the beep, or once the greeting has ended \
         without one; in <code>hang-up-on-machine</code> mode the call ends. \
         <code>human</code> and <code>not-sure</code> let the message play on. Each call's \
         verdict, cause and timings are in the call table.</p>",
    );
    if runs.is_empty() {
        h.push_str(
            "<p>No call in this log ran answering-machine detection (no campaign with an \
             <code>[amd]</code> section).</p></section>",
        );
        return;
    }
    let count = |f: &dyn Fn(&AmdRecord) -> bool| runs.iter().filter(|a| f(a)).count();
    let mut modes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut drops: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &runs {
        *modes.entry(a.mode.as_str()).or_default() += 1;
        if a.voicemail_at_ms.is_some() {
            *drops.entry(a.drop.as_deref().unwrap_or("?")).or_default() += 1;
        }
    }
    let list = |m: &BTreeMap<&str, usize>| {
        m.iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let machines = count(&|a| a.verdict == "machine");
    let left: usize = drops.values().sum();
    dl(
        h,
        &[
            (
                "calls analysed",
                format!("{} ({})", runs.len(), list(&modes)),
            ),
            (
                "judged a machine",
                format!(
                    "{machines}, of which {} first judged a person and overturned by a beep",
                    count(&|a| a.verdict == "machine" && a.first_verdict.is_some())
                ),
            ),
            (
                "voicemail messages started",
                if left == 0 {
                    "0".to_owned()
                } else {
                    format!("{left} (after: {})", list(&drops))
                },
            ),
            (
                "machines hung up on",
                count(&|a| a.mode == "hang-up-on-machine" && a.verdict == "machine").to_string(),
            ),
        ],
    );
    let mut by: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for a in &runs {
        *by.entry((a.verdict.as_str(), a.cause.as_deref().unwrap_or("")))
            .or_default() += 1;
    }
    table(
        h,
        "amd-verdicts",
        false,
        &[
            ("verdict", false),
            ("cause", false),
            ("calls", true),
            ("share", true),
        ],
        by.iter().map(|((v, c), n)| {
            (
                false,
                vec![
                    txt(v),
                    txt(c),
                    num(n),
                    num(format!("{:.1} %", *n as f64 * 100.0 / runs.len() as f64)),
                ],
            )
        }),
    );
    let sorted = |f: &dyn Fn(&AmdRecord) -> Option<u64>| {
        let mut v: Vec<u64> = runs.iter().filter_map(|a| f(a)).collect();
        v.sort_unstable();
        v
    };
    h.push_str("<h3>Answer → verdict</h3>");
    quantiles(
        h,
        "amd-verdict-time",
        &sorted(&|a| a.answer_to_verdict_ms),
        None,
    );
    let _ = write!(
        h,
        "<h3>Beep → voicemail message</h3><p class=\"note\">From the beep's end to the \
         voicemail message's first RTP packet; crieur aims under {BEEP_TO_VOICEMAIL_TARGET_MS} \
         ms.</p>"
    );
    quantiles(
        h,
        "amd-beep-to-voicemail",
        &sorted(&|a| a.beep_to_voicemail_ms),
        Some((BEEP_TO_VOICEMAIL_TARGET_MS, "over 300 ms")),
    );
    h.push_str("</section>");
}

fn violations(h: &mut String, ver: &VerifyReport, rep: &ReplayReport, failed: Option<&str>) {
    if let Some(why) = failed {
        let _ = write!(
            h,
            "<section id=\"violations\"><h2>Violations (not replayed)</h2><p class=\"bad\">\
             Replay needs every record and this one cannot be read: {}. The sections above and \
             below show the records before it.</p></section>",
            esc(why)
        );
        return;
    }
    let _ = write!(
        h,
        "<section id=\"violations\"><h2>Violations ({})</h2>",
        rep.violations.len()
    );
    if ver.first_break.is_some() {
        h.push_str(
            "<p class=\"bad\">The chain is broken: records from the break on may have been \
             changed, so a replay of them proves nothing either way.</p>",
        );
    }
    if rep.violations.is_empty() {
        h.push_str(
            "<p class=\"ok\">None: every dial decision re-derives as a dial from its recorded \
             inputs, no INVITE left without one or after it expired, no opted-out number was \
             called and every first audio packet was within 2 s.</p>",
        );
    } else {
        table(
            h,
            "violations-table",
            true,
            &[
                ("seq", true),
                ("where", false),
                ("kind", false),
                ("contact", false),
                ("number", false),
                ("detail", false),
                ("evidence", false),
            ],
            rep.violations.iter().map(|v| {
                (
                    true,
                    vec![
                        num(v.seq),
                        txt(&format!("{}:{}", v.segment, v.line)),
                        code(&v.kind),
                        txt(v.contact.as_deref().unwrap_or("")),
                        txt(v.number.as_deref().unwrap_or("")),
                        txt(&v.detail),
                        code(&if v.fields.is_empty() {
                            String::new()
                        } else {
                            serde_json::Value::Object(v.fields.clone()).to_string()
                        }),
                    ],
                )
            }),
        );
    }
    h.push_str("</section>");
}

fn skips(h: &mut String, entries: &[(String, usize, Entry)]) {
    // Code → (decisions, first seq, the first one in words).
    let mut by: BTreeMap<String, (u64, u64, String)> = BTreeMap::new();
    for (_, _, e) in entries {
        if let Record::Decision(d) = &e.record {
            if d.verdict == "skip" {
                for r in &d.reasons {
                    let s = by
                        .entry(reason_code(r))
                        .or_insert_with(|| (0, e.seq, r.to_string()));
                    s.0 += 1;
                }
            }
        }
    }
    h.push_str("<section id=\"skips\"><h2>Decisions not to call</h2>");
    if by.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        table(
            h,
            "skips-table",
            false,
            &[
                ("reason", false),
                ("decisions", true),
                ("first seq", true),
                ("the first, in words", false),
            ],
            by.iter()
                .map(|(r, (n, s, words))| (false, vec![code(r), num(n), num(s), txt(words)])),
        );
    }
    h.push_str("</section>");
}

fn lists(h: &mut String, entries: &[(String, usize, Entry)]) {
    h.push_str("<section id=\"imports\"><h2>Contact imports and opt-out list changes</h2>");
    let mut rows = Vec::new();
    for (_, _, e) in entries {
        match &e.record {
            Record::Import(i) => rows.push((
                false,
                vec![
                    num(e.seq),
                    txt(&utc(e.ts)),
                    txt("import"),
                    txt(&format!(
                        "{} → campaign {}: {} rows, {} created, {} updated, {} consents added, {} rejected",
                        i.file, i.campaign, i.rows, i.created, i.updated, i.consents_added, i.rejected
                    )),
                    code(&i.sha256),
                ],
            )),
            Record::OptOutListChange(c) => rows.push((
                false,
                vec![
                    num(e.seq),
                    txt(&utc(e.ts)),
                    txt(&format!("opt-out {}", c.action)),
                    txt(&format!("{} ({})", c.numbers.join(" "), c.source)),
                    txt(""),
                ],
            )),
            _ => {}
        }
    }
    if rows.is_empty() {
        h.push_str("<p>None in this log.</p>");
    } else {
        table(
            h,
            "imports-table",
            false,
            &[
                ("seq", true),
                ("at (UTC)", false),
                ("what", false),
                ("detail", false),
                ("file SHA-256", false),
            ],
            rows,
        );
    }
    h.push_str("</section>");
}

fn call_table(h: &mut String, calls: &[Call], rep: &ReplayReport) {
    let mut flagged: BTreeMap<u64, u64> = BTreeMap::new();
    for v in &rep.violations {
        *flagged.entry(v.seq).or_default() += 1;
    }
    let _ = write!(
        h,
        "<section id=\"calls\"><h2>Calls ({})</h2><p class=\"note\">Click a column title to \
         sort. Times: start in the callee's zone and in UTC; durations in ms. A row in red has \
         a violation at its INVITE or its decision.</p>",
        calls.len()
    );
    h.push_str("<div class=\"scroll\">");
    table(
        h,
        "calls-table",
        true,
        &[
            ("call", false),
            ("campaign", false),
            ("contact", false),
            ("number", false),
            ("zone", false),
            ("start (local)", false),
            ("start (UTC)", false),
            ("alerting ms", true),
            ("ring ms", true),
            ("SIP status", true),
            ("talk ms", true),
            ("outcome", false),
            ("keys", false),
            ("answer→audio ms", true),
            ("opt-out→durable ms", true),
            ("RTCP reports", true),
            ("worst loss %", true),
            ("AMD verdict", false),
            ("AMD cause", false),
            ("answer→verdict ms", true),
            ("beep→voicemail ms", true),
            ("consent source", false),
            ("consent proof", false),
            ("rule set", false),
            ("decision seq", true),
            ("invite seq", true),
            ("violations", true),
        ],
        calls.iter().map(|c| {
            let r = &c.row;
            let v = flagged.get(&c.seq).copied().unwrap_or(0)
                + r.decision_seq
                    .and_then(|s| flagged.get(&s).copied())
                    .unwrap_or(0);
            (
                v > 0,
                vec![
                    code(&r.call),
                    txt(&r.campaign),
                    txt(&r.contact),
                    txt(&r.number),
                    txt(&r.zone),
                    txt(&r.start_local),
                    txt(&r.start_utc),
                    opt_num(r.alerting_ms),
                    opt_num(r.ring_ms),
                    opt_num(r.sip_status.map(u64::from)),
                    opt_num(r.talk_ms),
                    txt(&r.outcome),
                    txt(&r.keys),
                    opt_num(r.answer_to_audio_ms),
                    opt_num(r.optout_durable_ms),
                    opt_num(c.rtcp.map(|(n, _)| u64::from(n))),
                    match c.rtcp {
                        Some((n, lost)) if n > 0 => {
                            num(format!("{:.1}", f64::from(lost) * 100.0 / 256.0))
                        }
                        _ => opt_num(None),
                    },
                    txt(&c.amd.as_ref().map(amd_verdict).unwrap_or_default()),
                    txt(c
                        .amd
                        .as_ref()
                        .and_then(|a| a.cause.as_deref())
                        .unwrap_or_default()),
                    opt_num(c.amd.as_ref().and_then(|a| a.answer_to_verdict_ms)),
                    opt_num(c.amd.as_ref().and_then(|a| a.beep_to_voicemail_ms)),
                    txt(&r.consent_source),
                    txt(&r.consent_proof),
                    txt(&r.ruleset),
                    opt_num(r.decision_seq),
                    num(c.seq),
                    num(v),
                ],
            )
        }),
    );
    h.push_str("</div>");
    h.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            esc("<a href=\"x\" title='y'>&</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        for (max, step) in [
            (1, 1),
            (4, 1),
            (7, 2),
            (24, 5),
            (99, 20),
            (1000, 200),
            (1001, 500),
        ] {
            assert_eq!(tick_step(max), step, "max {max}");
            assert!(max.div_ceil(step) <= 5 || step == 1, "max {max}");
        }
    }

    #[test]
    fn reason_codes_are_the_stable_code_or_the_old_text_s_leading_word() {
        assert_eq!(reason_code(&Reason::OptedOut), "opted-out");
        let text = |t: &str| Reason::Text { text: t.into() };
        assert_eq!(
            reason_code(&text("OutsideLegalHours { zone: Europe/Paris }")),
            "OutsideLegalHours"
        );
        assert_eq!(
            reason_code(&text("+33612345670 is on the opt-out list")),
            "is on the opt-out list"
        );
    }
}
