//! `replay`: re-derives every dial decision from the inputs recorded with it, with the same
//! scheduler, and lists every violation. It trusts nothing the operator's process concluded:
//! only the recorded inputs (consent snapshot, history, instants) and the policy of the run
//! header, rebuilt here.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crieur_engine::{Attempt, AttemptOutcome, CapRules, Loosening};
use crieur_scheduler::{
    decide, parse_zone, CampaignSchedule, ConsentRecord, Contact, ContactId, CronExpr, Decision,
    Policy, RuleSet, SkipReason, Windows, E164,
};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::record::{ConsentSnapshot, DecisionRecord, Outcome, Reason, Record, RunHeader};
use crate::{read_all, Located, Result, Snapshots};

/// The law (and the FR rules) allow 2 s from answer to the message; more is a violation.
pub const MAX_ANSWER_TO_AUDIO_MS: u64 = 2_000;

/// One violation found by replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub segment: String,
    pub line: usize,
    pub seq: u64,
    /// Stable kind: `outside-consent-window`, `outside-legal-hours`, `no-valid-consent`,
    /// `outside-campaign-schedule`, `call-would-not-fit`, `unknown-zone`, `dial-after-opt-out`,
    /// `cap-exceeded`, `retry-too-early`, `header-looser-than-ruleset`, `history-omitted`,
    /// `invite-after-window`, `invite-without-decision`, `slow-first-audio`,
    /// `trunk-fault-misclassified`, `outcome-without-invite`, `invite-without-outcome`,
    /// `unconfigured-voicemail`, `consent-snapshot-mismatch`, `consent-snapshot-unknown`,
    /// `unreplayable`.
    pub kind: String,
    pub contact: Option<String>,
    pub number: Option<String>,
    /// The evidence, one JSON object whose fields are stable per kind (`docs/audit-format.md`):
    /// for a dial the policy refuses, the scheduler's reason as the log codes it
    /// (`{"code":"outside-legal-hours","zone":…,"local":…,"ruleset":"FR"}`) and `at`; for the
    /// others the values compared.
    pub fields: Map<String, Value>,
    /// The same in words.
    pub detail: String,
}

/// What replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub records: usize,
    pub runs: usize,
    pub decisions: usize,
    pub dials: usize,
    pub skips: usize,
    pub invites: usize,
    /// Skip decisions per reason code (a decision with several reasons counts under each).
    pub skip_reasons: BTreeMap<String, usize>,
    pub violations: Vec<Violation>,
}

/// A JSON object of `v` (a `json!({…})` or a serialised [`Reason`]).
fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The kind of violation a scheduler `Skip` reason stands for, when a dial was recorded.
fn kind_of(r: &SkipReason) -> &'static str {
    match r {
        SkipReason::UnknownZone => "unknown-zone",
        SkipReason::NoConsent
        | SkipReason::ConsentNotYetGranted { .. }
        | SkipReason::ConsentExpired { .. }
        | SkipReason::ConsentRevoked { .. } => "no-valid-consent",
        SkipReason::OutsideConsentWindow { .. } | SkipReason::NoSingleConsentCoversAllZones => {
            "outside-consent-window"
        }
        SkipReason::OutsideLegalHours { .. } | SkipReason::PublicHoliday { .. } => {
            "outside-legal-hours"
        }
        SkipReason::OutsideCampaignSchedule { .. } => "outside-campaign-schedule",
        SkipReason::CallWouldNotFit { .. } => "call-would-not-fit",
        // A reason added to the scheduler after this replay was written.
        _ => "policy-skip",
    }
}

/// The policy, caps and retry delays of a run, rebuilt from its header.
struct RunPolicy {
    policy: Policy,
    caps: CapRules,
    /// The rule set's own caps (with the header's attempt cap): dials are checked against
    /// these too, so a header that claims looser caps hides nothing.
    ruleset_caps: CapRules,
    retry: HashMap<String, Duration>,
    /// How the header's caps and retry rules are looser than the rule set's own: the
    /// violation's fields and words.
    looser: Vec<(Map<String, Value>, String)>,
}

/// The outcomes the engine retries: a run header must give a rule for each, or replay
/// could not check retry delays after them.
const RETRYABLE: [AttemptOutcome; 6] = [
    AttemptOutcome::Busy,
    AttemptOutcome::NoAnswer,
    AttemptOutcome::Failed,
    AttemptOutcome::Rejected,
    AttemptOutcome::Machine,
    AttemptOutcome::Interrupted,
];

/// Every way the header's caps and retry rules are looser than the rule set's own.
fn looser_than_ruleset(
    h: &RunHeader,
    caps: &CapRules,
    ruleset_caps: &CapRules,
) -> Vec<(Map<String, Value>, String)> {
    let mut out: Vec<(Map<String, Value>, String)> = caps
        .looser_than(ruleset_caps)
        .iter()
        .map(|l| {
            let fields = match l {
                Loosening::RollingCap { given, required } => json!({
                    "rule": "rolling-cap",
                    "given_max": given.map(|g| g.0),
                    "given_days": given.map(|g| g.1),
                    "required_max": required.0,
                    "required_days": required.1,
                }),
                Loosening::QuietAfterRefusal {
                    given_days,
                    required_days,
                } => json!({
                    "rule": "quiet-after-refusal",
                    "given_days": given_days,
                    "required_days": required_days,
                }),
            };
            (object(fields), l.to_string())
        })
        .collect();
    for r in &h.retry {
        if r.max_retries > 0
            && r.outcome
                .parse::<Outcome>()
                .is_ok_and(|o| o.scheduled().is_final())
        {
            out.push((
                object(json!({
                    "rule": "retry-after-final",
                    "outcome": r.outcome,
                    "max_retries": r.max_retries,
                })),
                format!(
                    "retry rule for `{}` allows {} retries: an answered, opted-out or refused contact is never called again",
                    r.outcome, r.max_retries
                ),
            ));
        }
    }
    for o in RETRYABLE {
        if !h.retry.iter().any(|r| {
            r.outcome
                .parse::<Outcome>()
                .is_ok_and(|r| r.scheduled() == o)
        }) {
            out.push((
                object(json!({"rule": "no-retry-rule", "outcome": o.as_str()})),
                format!(
                    "no retry rule for `{}`: the retry delays after it cannot be checked",
                    o.as_str()
                ),
            ));
        }
    }
    out
}

/// Why a run header's policy cannot be rebuilt (replay then flags its decisions
/// `unreplayable`).
#[derive(Debug, thiserror::Error)]
enum HeaderProblem {
    #[error(transparent)]
    Policy(#[from] crieur_scheduler::Error),
    #[error("rule set {name} version {recorded} was recorded; this replay knows version {known}")]
    RulesetVersion {
        name: String,
        recorded: String,
        known: &'static str,
    },
}

fn rebuild(h: &RunHeader) -> std::result::Result<Option<RunPolicy>, HeaderProblem> {
    let Some(p) = &h.policy else {
        return Ok(None);
    };
    let ruleset = RuleSet::by_name(&p.ruleset)?;
    if ruleset.version() != p.ruleset_version {
        return Err(HeaderProblem::RulesetVersion {
            name: p.ruleset.clone(),
            recorded: p.ruleset_version.clone(),
            known: ruleset.version(),
        });
    }
    let zone = parse_zone(&p.zone)?;
    let schedule = if p.schedule.is_empty() {
        None
    } else {
        let exprs = p
            .schedule
            .iter()
            .map(|s| s.parse::<CronExpr>())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Some(CampaignSchedule::new(exprs, zone)?)
    };
    let policy = Policy::new(
        ruleset,
        schedule,
        Duration::from_millis(p.ring_timeout_ms),
        Duration::from_millis(p.message_ms),
    )?;
    let caps = match &h.caps {
        Some(c) => CapRules {
            max_attempts: c.max_attempts,
            rolling: c
                .rolling_max
                .zip(c.rolling_days)
                .map(|(m, d)| (m, Duration::from_secs(d.saturating_mul(86_400)))),
            quiet_after_refusal: c
                .quiet_days_after_refusal
                .map(|d| Duration::from_secs(d.saturating_mul(86_400))),
        },
        None => CapRules::for_ruleset(&p.ruleset, 3),
    };
    let ruleset_caps = CapRules::for_ruleset(&p.ruleset, caps.max_attempts);
    let retry = h
        .retry
        .iter()
        .map(|r| (r.outcome.clone(), Duration::from_secs(r.delay_secs)))
        .collect();
    Ok(Some(RunPolicy {
        policy,
        looser: looser_than_ruleset(h, &caps, &ruleset_caps),
        caps,
        ruleset_caps,
        retry,
    }))
}

fn contact_of(
    d: &DecisionRecord,
    snapshot: &[ConsentSnapshot],
) -> std::result::Result<Contact, crieur_scheduler::Error> {
    let id = ContactId::new(d.contact.clone())?;
    let phone: E164 = d.number.parse()?;
    let zone = d.given_zone.as_deref().map(parse_zone).transpose()?;
    let mut consents = Vec::with_capacity(snapshot.len());
    for c in snapshot {
        consents.push(ConsentRecord {
            windows: c.windows.parse::<Windows>()?,
            granted_at: c.granted_at,
            expires_at: c.expires_at,
            revoked_at: c.revoked_at,
            source: c.source.clone(),
            proof: c.proof.clone(),
        });
    }
    Ok(Contact::new(id, phone, zone, consents))
}

/// Whether a final status can be a trunk fault: a refused credential (401, 407, 403 to the
/// credentialed INVITE), no response (408: the transaction's own timeout), no common codec
/// (488, 606), a server failure (5xx).
fn trunk_fault_status(s: u16) -> bool {
    matches!(s, 401 | 403 | 407 | 408 | 488 | 606 | 500..=599)
}

/// Whether a history entry `a` and a logged outcome's start `b` are the same attempt: the
/// store keeps attempt instants to the microsecond (to the second before store format 3: a
/// whole-second entry matches any start within its second), the log to the nanosecond.
fn same_attempt(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    a.timestamp_micros() == b.timestamp_micros()
        || (a.timestamp_subsec_nanos() == 0 && a.timestamp() == b.timestamp())
}

/// An `invite-sent` not yet closed by an `outcome` record: where it is, for the violation.
struct OpenInvite {
    segment: String,
    line: usize,
    seq: u64,
    contact: String,
    number: String,
    sent_at: DateTime<Utc>,
}

/// Replays the log in `dir`.
pub fn replay(dir: &Path) -> Result<ReplayReport> {
    replay_logs(&[dir])
}

/// The records of several logs (one per node) merged into one sequence by timestamp, each
/// log's own order kept (a record is taken from the log whose next record is earliest; ties
/// go to the log given first): `(log index, segment, line, entry)`. With more than one log
/// the segment is named `<log dir>/<segment>`.
pub fn merged(dirs: &[&Path]) -> Result<Vec<(usize, Located)>> {
    let mut logs = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let mut entries = read_all(dir)?;
        if dirs.len() > 1 {
            for (segment, _, _) in &mut entries {
                *segment = format!("{}/{segment}", dir.display());
            }
        }
        logs.push(entries.into_iter().peekable());
    }
    let mut out = Vec::with_capacity(logs.iter().map(|l| l.len()).sum());
    loop {
        let next = logs
            .iter_mut()
            .enumerate()
            .filter_map(|(i, l)| l.peek().map(|(_, _, e)| (e.ts, i)))
            .min();
        let Some((_, i)) = next else { break };
        if let Some(e) = logs[i].next() {
            out.push((i, e));
        }
    }
    Ok(out)
}

/// Replays several nodes' logs of the same campaigns as one: each decision is checked
/// against its own log's run header, while opt-outs, outcomes (the caps across campaigns
/// and nodes) and the pairing of each INVITE with its outcome (a node may record the outcome
/// of a call another node placed and died in) are taken from every log, in time order.
pub fn replay_logs(dirs: &[&Path]) -> Result<ReplayReport> {
    let entries = merged(dirs)?;
    let mut rep = ReplayReport {
        records: entries.len(),
        ..ReplayReport::default()
    };
    // The current run header of each log.
    let mut runs: Vec<Option<std::result::Result<Option<RunPolicy>, HeaderProblem>>> =
        (0..dirs.len()).map(|_| None).collect();
    let mut opted_out: HashSet<String> = HashSet::new();
    // Outcomes recorded in this log, per number: (started, outcome, campaign).
    let mut outcomes: HashMap<String, Vec<(DateTime<Utc>, Outcome, String)>> = HashMap::new();
    // Dial decisions by (campaign, contact, instant decided).
    let mut dials: HashSet<(String, String, DateTime<Utc>)> = HashSet::new();
    // Calls where something rang or answered (an 18x or 2xx response, an `answered` record).
    let mut rang: HashSet<String> = HashSet::new();
    // The final status of each call's INVITE, when one came.
    let mut final_status: HashMap<String, u16> = HashMap::new();
    // Attempts recorded as trunk faults although something rang, by (number, start second):
    // they count, whatever their name says.
    let mut misclassified: HashSet<(String, i64)> = HashSet::new();
    // The voicemail messages the current run's header declares (sha256), per log.
    let mut voicemails: Vec<HashSet<String>> = vec![HashSet::new(); dirs.len()];
    // The consent snapshots each log recorded so far: a decision cites one of its own log's.
    let mut snapshots: Vec<Snapshots> = (0..dirs.len()).map(|_| Snapshots::default()).collect();
    // Every call an `invite-sent` names, and those no `outcome` has closed yet (by log and
    // seq: the order they were sent in).
    let mut invited: HashSet<String> = HashSet::new();
    // Dial decisions no `invite-sent` for their contact has followed yet, by (campaign,
    // contact): a node killed between its decision and its INVITE leaves one, and the node
    // that recovers its expired lease closes that call `interrupted` in its own log, not
    // knowing whether the INVITE left (`recover_expired`) — a counted attempt and no call,
    // which is not an outcome without an INVITE.
    let mut dial_pending: HashSet<(String, String)> = HashSet::new();
    let mut open: BTreeMap<(usize, u64), (String, OpenInvite)> = BTreeMap::new();
    let mut open_by_call: HashMap<String, (usize, u64)> = HashMap::new();
    for (log, (segment, line, e)) in &entries {
        let log = *log;
        let run = &mut runs[log];
        let voicemails = &mut voicemails[log];
        let snapshots = &mut snapshots[log];
        let mut flag = |kind: &str,
                        contact: Option<&str>,
                        number: Option<&str>,
                        fields: Value,
                        detail: String| {
            rep.violations.push(Violation {
                segment: segment.clone(),
                line: *line,
                seq: e.seq,
                kind: kind.to_owned(),
                contact: contact.map(str::to_owned),
                number: number.map(str::to_owned),
                fields: object(fields),
                detail,
            })
        };
        match &e.record {
            Record::RunStart(h) => {
                rep.runs += 1;
                *voicemails = h
                    .audio
                    .iter()
                    .filter(|a| a.role == "voicemail")
                    .map(|a| a.sha256.clone())
                    .collect();
                let rebuilt = rebuild(h);
                if let Ok(Some(rp)) = &rebuilt {
                    let rs = rp.policy.ruleset();
                    for (fields, why) in &rp.looser {
                        let mut fields = fields.clone();
                        fields.insert("ruleset".into(), rs.name().into());
                        fields.insert("ruleset_version".into(), rs.version().into());
                        flag(
                            "header-looser-than-ruleset",
                            None,
                            None,
                            Value::Object(fields),
                            format!("{rs}: {why}"),
                        );
                    }
                }
                *run = Some(rebuilt);
            }
            Record::OptOutRecorded(o) => {
                opted_out.insert(o.number.clone());
            }
            Record::OptOutListChange(c) => {
                for n in &c.numbers {
                    if c.action == "remove" {
                        opted_out.remove(n);
                    } else {
                        opted_out.insert(n.clone());
                    }
                }
            }
            Record::SipResponse(r) => {
                if (180..300).contains(&r.status) {
                    rang.insert(r.call.clone());
                }
                if r.status >= 200 {
                    final_status.insert(r.call.clone(), r.status);
                }
            }
            Record::Answered(a) => {
                rang.insert(a.call.clone());
            }
            Record::Outcome(o) => {
                let decided_not_sent = o.outcome.name() == "interrupted"
                    && dial_pending.remove(&(o.campaign.clone(), o.contact.clone()));
                if !invited.contains(&o.call) && !decided_not_sent {
                    flag(
                        "outcome-without-invite",
                        Some(&o.contact),
                        Some(&o.number),
                        json!({
                            "call": o.call,
                            "outcome": o.outcome,
                            "started": o.started,
                        }),
                        format!(
                            "outcome `{}` of call {} but no `invite-sent` names that call earlier in this log",
                            o.outcome, o.call
                        ),
                    );
                }
                if let Some(seq) = open_by_call.remove(&o.call) {
                    open.remove(&seq);
                }
                let mut outcome = o.outcome;
                let status = final_status.get(&o.call).copied();
                if outcome.scheduled() == AttemptOutcome::TrunkFault
                    && (rang.contains(&o.call) || !status.is_none_or(trunk_fault_status))
                {
                    let why = if rang.contains(&o.call) {
                        "it rang or was answered".to_owned()
                    } else {
                        format!(
                            "its final response {} is the callee's answer, not a trunk fault",
                            status.unwrap_or_default()
                        )
                    };
                    flag(
                        "trunk-fault-misclassified",
                        Some(&o.contact),
                        Some(&o.number),
                        json!({
                            "call": o.call,
                            "outcome": o.outcome,
                            "rang": rang.contains(&o.call),
                            "final_status": status,
                        }),
                        format!(
                            "call {} is recorded `{}` (refused by the trunk before anything rang, not counted) but {why}: it counts",
                            o.call, o.outcome
                        ),
                    );
                    misclassified.insert((o.number.clone(), o.started.timestamp()));
                    if let Outcome::Call { outcome: call, .. } = o.outcome {
                        outcome = Outcome::call(call);
                    }
                }
                outcomes.entry(o.number.clone()).or_default().push((
                    o.started,
                    outcome,
                    o.campaign.clone(),
                ));
            }
            Record::Amd(a) => {
                if let Some(sit) = a.sit.as_ref().filter(|_| a.voicemail_played_ms > 0) {
                    flag(
                        "voicemail-after-sit",
                        None,
                        None,
                        json!({ "call": a.call, "sit": sit.code, "voicemail_played_ms": a.voicemail_played_ms }),
                        format!(
                            "call {}: a voicemail message played after a special information tone ({}): \
                             the network's announcement records nothing",
                            a.call, sit.code
                        ),
                    );
                }
                if let Some(h) = a
                    .voicemail_sha256
                    .as_ref()
                    .filter(|h| !voicemails.contains(*h))
                {
                    flag(
                        "unconfigured-voicemail",
                        None,
                        None,
                        json!({ "call": a.call, "voicemail_sha256": h }),
                        format!(
                            "call {}: the voicemail message played ({h}) is not one its run header declares",
                            a.call
                        ),
                    );
                }
            }
            Record::FirstAudio(f) if f.answer_to_audio_ms > MAX_ANSWER_TO_AUDIO_MS => {
                flag(
                    "slow-first-audio",
                    None,
                    None,
                    json!({
                        "call": f.call,
                        "answer_to_audio_ms": f.answer_to_audio_ms,
                        "max_ms": MAX_ANSWER_TO_AUDIO_MS,
                    }),
                    format!(
                        "call {}: {} ms from answer to the first audio (at most {MAX_ANSWER_TO_AUDIO_MS} ms)",
                        f.call, f.answer_to_audio_ms
                    ),
                );
            }
            Record::InviteSent(i) => {
                rep.invites += 1;
                dial_pending.remove(&(i.campaign.clone(), i.contact.clone()));
                invited.insert(i.call.clone());
                open_by_call.insert(i.call.clone(), (log, e.seq));
                open.insert(
                    (log, e.seq),
                    (
                        i.call.clone(),
                        OpenInvite {
                            segment: segment.clone(),
                            line: *line,
                            seq: e.seq,
                            contact: i.contact.clone(),
                            number: i.number.clone(),
                            sent_at: i.sent_at,
                        },
                    ),
                );
                if !dials.contains(&(i.campaign.clone(), i.contact.clone(), i.decided_at)) {
                    flag(
                        "invite-without-decision",
                        Some(&i.contact),
                        Some(&i.number),
                        json!({"call": i.call, "decided_at": i.decided_at}),
                        format!(
                            "no dial decision at {} precedes this INVITE",
                            i.decided_at.to_rfc3339()
                        ),
                    );
                }
                // Starts are allowed in [decided, valid_until): at valid_until it is too late.
                if i.sent_at >= i.valid_until || i.recheck != "dial" {
                    flag(
                        "invite-after-window",
                        Some(&i.contact),
                        Some(&i.number),
                        json!({
                            "call": i.call,
                            "sent_at": i.sent_at,
                            "valid_until": i.valid_until,
                            "recheck": i.recheck,
                        }),
                        format!(
                            "INVITE sent at {} but the decision held only until {} (re-check: {})",
                            i.sent_at.to_rfc3339(),
                            i.valid_until.to_rfc3339(),
                            i.recheck
                        ),
                    );
                }
                if opted_out.contains(&i.number) {
                    flag(
                        "dial-after-opt-out",
                        Some(&i.contact),
                        Some(&i.number),
                        json!({"call": i.call, "source": "log"}),
                        "INVITE to a number whose opt-out is recorded earlier in this log".into(),
                    );
                }
            }
            Record::Consent(c) => {
                let intact = snapshots.learn(c);
                if !intact {
                    let computed = crate::record::snapshot_sha256(&c.consents).unwrap_or_default();
                    flag(
                        "consent-snapshot-mismatch",
                        None,
                        None,
                        json!({ "sha256": c.sha256, "computed": computed }),
                        format!(
                            "a consent snapshot recorded as {} hashes to {computed}",
                            c.sha256
                        ),
                    );
                }
            }
            Record::Decision(d) => {
                rep.decisions += 1;
                let snapshot = snapshots.of(d);
                if snapshot.is_none() {
                    let sha = d.consents_sha256.clone().unwrap_or_default();
                    flag(
                        "consent-snapshot-unknown",
                        Some(&d.contact),
                        Some(&d.number),
                        json!({ "sha256": sha }),
                        format!("the decision cites consent snapshot {sha}, which no intact consent record before it in its own log holds"),
                    );
                }
                if d.verdict == "dial" {
                    dial_pending.insert((d.campaign.clone(), d.contact.clone()));
                }
                if d.verdict != "dial" {
                    rep.skips += 1;
                    for r in &d.reasons {
                        *rep.skip_reasons.entry(r.code().to_owned()).or_default() += 1;
                    }
                    continue;
                }
                rep.dials += 1;
                dials.insert((d.campaign.clone(), d.contact.clone(), d.now));
                let (c, n) = (Some(d.contact.as_str()), Some(d.number.as_str()));
                let rp = match &*run {
                    None => {
                        let why = "a decision before any run header";
                        flag("unreplayable", c, n, json!({ "why": why }), why.into());
                        continue;
                    }
                    Some(Err(why)) => {
                        let why = format!("the run header: {why}");
                        flag("unreplayable", c, n, json!({ "why": why }), why);
                        continue;
                    }
                    Some(Ok(None)) => {
                        let why = "the run header has no policy";
                        flag("unreplayable", c, n, json!({ "why": why }), why.into());
                        continue;
                    }
                    Some(Ok(Some(rp))) => rp,
                };
                if d.opted_out || opted_out.contains(&d.number) {
                    flag(
                        "dial-after-opt-out",
                        c,
                        n,
                        json!({ "source": if d.opted_out { "decision" } else { "log" } }),
                        "dialled a number on the opt-out list".into(),
                    );
                }
                match snapshot.map(|s| contact_of(d, s)) {
                    // Reported above: nothing to re-derive the decision from.
                    None => {}
                    Some(Err(why)) => {
                        let why = format!("the consent snapshot: {why}");
                        flag("unreplayable", c, n, json!({ "why": why }), why);
                    }
                    Some(Ok(contact)) => {
                        if let Decision::Skip(s) = decide(&contact, &rp.policy, d.now) {
                            for r in &s.reasons {
                                let reason = Reason::from(r);
                                let mut fields = object(json!(reason));
                                fields.insert("at".into(), json!(d.now));
                                flag(
                                    kind_of(r),
                                    c,
                                    n,
                                    Value::Object(fields),
                                    format!("at {}: {reason}", d.now.to_rfc3339()),
                                );
                            }
                        }
                    }
                }
                // Every outcome this log recorded earlier for the number must be among the
                // decision's inputs.
                let logged = outcomes.get(&d.number).map_or(&[][..], Vec::as_slice);
                let missing = logged
                    .iter()
                    .filter(|(at, _, _)| !d.history.iter().any(|h| same_attempt(h.at, *at)))
                    .count();
                if missing > 0 {
                    flag(
                        "history-omitted",
                        c,
                        n,
                        json!({ "missing": missing }),
                        format!("{missing} earlier attempt(s) in this log are missing from the decision's history"),
                    );
                }
                // What an attempt counts as: its recorded name, unless this log shows it rang.
                let outcome_of = |h: &crate::record::PastAttempt| {
                    let o = h.outcome.scheduled();
                    if o == AttemptOutcome::TrunkFault
                        && misclassified.contains(&(d.number.clone(), h.at.timestamp()))
                    {
                        AttemptOutcome::Failed
                    } else {
                        o
                    }
                };
                let mut attempts: Vec<Attempt> = d
                    .history
                    .iter()
                    .map(|h| Attempt {
                        at: h.at,
                        outcome: outcome_of(h),
                        this_campaign: h.campaign == d.campaign,
                    })
                    .collect();
                for (at, o, camp) in logged {
                    if !d.history.iter().any(|h| same_attempt(h.at, *at)) {
                        attempts.push(Attempt {
                            at: *at,
                            outcome: o.scheduled(),
                            this_campaign: *camp == d.campaign,
                        });
                    }
                }
                let cap = |hit: &crieur_engine::CapHit, caps: &str| {
                    let mut fields = object(json!(Reason::from(hit)));
                    fields.insert("caps".into(), caps.into());
                    Value::Object(fields)
                };
                if let Some(hit) = rp.caps.check(&attempts, d.now) {
                    flag("cap-exceeded", c, n, cap(&hit, "header"), hit.to_string());
                } else if let Some(hit) = rp.ruleset_caps.check(&attempts, d.now) {
                    flag(
                        "cap-exceeded",
                        c,
                        n,
                        cap(&hit, "ruleset"),
                        format!("{hit} (the rule set's own caps; the run header's are looser)"),
                    );
                }
                // A trunk fault sets no retry delay: the last attempt that counts does.
                let last_here = d
                    .history
                    .iter()
                    .filter(|h| h.campaign == d.campaign && outcome_of(h).counts())
                    .max_by_key(|h| h.ended.unwrap_or(h.at));
                if let Some(h) = last_here {
                    let o = outcome_of(h);
                    if let Some(delay) = rp.retry.get(o.as_str()) {
                        let ended = h.ended.unwrap_or(h.at);
                        let earliest = chrono::Duration::from_std(*delay)
                            .ok()
                            .and_then(|dl| ended.checked_add_signed(dl));
                        if let Some(earliest) = earliest.filter(|e| d.now < *e) {
                            flag(
                                "retry-too-early",
                                c,
                                n,
                                json!({
                                    "at": d.now,
                                    "after": h.outcome,
                                    "ended": ended,
                                    "not_before": earliest,
                                }),
                                format!(
                                    "retry at {} after `{}` ending {}; the rule allows it from {}",
                                    d.now.to_rfc3339(),
                                    h.outcome,
                                    ended.to_rfc3339(),
                                    earliest.to_rfc3339()
                                ),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // Every INVITE must end in an outcome (recovery after a crash writes the `interrupted`
    // ones): an INVITE without one is a call the log cannot account for.
    for (call, i) in open.into_values() {
        rep.violations.push(Violation {
            segment: i.segment,
            line: i.line,
            seq: i.seq,
            kind: "invite-without-outcome".into(),
            contact: Some(i.contact),
            number: Some(i.number),
            fields: object(json!({"call": call, "sent_at": i.sent_at})),
            detail: format!(
                "INVITE of call {call} sent at {} has no outcome record in this log",
                i.sent_at.to_rfc3339()
            ),
        });
    }
    Ok(rep)
}

impl ReplayReport {
    /// The report as a table (`crieur audit replay`): the totals, then one line per
    /// violation.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} records, {} runs, {} decisions ({} dial, {} skip), {} INVITEs; {} violations\n",
            self.records,
            self.runs,
            self.decisions,
            self.dials,
            self.skips,
            self.invites,
            self.violations.len()
        );
        if !self.violations.is_empty() {
            s.push_str(&format!(
                "{:<28} {:<26} {:<14} detail\n",
                "where", "kind", "contact"
            ));
        }
        for v in &self.violations {
            s.push_str(&format!(
                "{:<28} {:<26} {:<14} {}\n",
                format!("{}:{} seq {}", v.segment, v.line, v.seq),
                v.kind,
                v.contact.as_deref().unwrap_or("-"),
                v.detail
            ));
        }
        s
    }
}
