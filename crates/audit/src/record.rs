//! The records of the audit log (see `docs/audit-format.md`, the regulator-facing spec).
//!
//! Every line is one JSON object: the envelope (`seq`, `ts`, `prev`, `type`) and the payload
//! of its type, flattened. Field names are part of the format: change them only with a new
//! format version.

use chrono::{DateTime, Utc};
pub use crieur_outcome::Outcome;
use serde::{Deserialize, Serialize};

/// Format version, written in every run header. 3: decisions cite their consent snapshot by
/// hash (`consents_sha256`, a `consent` record earlier in the chain); 2: skip reasons are
/// coded objects ([`Reason`]) and skip decisions carry their rule set, consents inline;
/// version 1 wrote reasons as free text (still read, as [`Reason::Text`]).
pub const FORMAT_VERSION: u32 = 3;

/// One line as read back: the envelope and the typed payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    pub prev: String,
    #[serde(flatten)]
    pub record: Record,
}

/// What a line records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    /// A command started (a campaign run, one call, an import …), with everything its
    /// decisions depend on.
    RunStart(Box<RunHeader>),
    /// The command ended.
    RunStop(RunStop),
    /// A contact's consent records, recorded once per chain under their SHA-256; decisions
    /// cite them by that hash.
    Consent(ConsentSnapshotRecord),
    /// A dial decision (dial or skip) with every input needed to re-derive it.
    Decision(Box<DecisionRecord>),
    /// The INVITE left, after the decision was re-checked.
    InviteSent(InviteSent),
    /// A SIP response to the INVITE: the first 18x provisional (something rang), the final.
    SipResponse(SipResponse),
    /// 200 OK: the call is answered.
    Answered(CallEvent),
    /// The first RTP packet of the message left.
    FirstAudio(FirstAudio),
    /// The message played past the opt-out prompt.
    OptOutPromptReached(CallEvent),
    /// A key press.
    Dtmf(Dtmf),
    /// The opt-out is durable in the store (before any confirmation).
    OptOutRecorded(OptOutRecorded),
    /// RTCP at the end of an answered call: the far end's reports on our audio (evidence it
    /// arrived: loss and jitter as the callee's side measured them).
    Rtcp(RtcpRecord),
    /// The call ended.
    Hangup(Hangup),
    /// The attempt's outcome, as counted toward caps and retries.
    Outcome(OutcomeRecord),
    /// Contacts imported.
    Import(ImportRecord),
    /// A number added to or removed from the opt-out list outside a call.
    OptOutListChange(OptOutListChange),
    /// Ed25519-signed checkpoint over the chain up to `upto_seq`.
    Checkpoint(Checkpoint),
    /// The log was found torn after a crash; the torn bytes were set aside, not dropped.
    TornTail(TornTail),
    /// The trunk's circuit breaker changed state: dialling paused, resumed or stopped.
    TrunkBreaker(TrunkBreaker),
    /// Answering-machine detection in an answered call: the verdict, its cause and features,
    /// the beep, and the voicemail message left.
    Amd(AmdRecord),
}

impl Record {
    /// The `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::RunStart(_) => "run-start",
            Record::RunStop(_) => "run-stop",
            Record::Consent(_) => "consent",
            Record::Decision(_) => "decision",
            Record::InviteSent(_) => "invite-sent",
            Record::SipResponse(_) => "sip-response",
            Record::Answered(_) => "answered",
            Record::FirstAudio(_) => "first-audio",
            Record::OptOutPromptReached(_) => "opt-out-prompt-reached",
            Record::Dtmf(_) => "dtmf",
            Record::OptOutRecorded(_) => "opt-out-recorded",
            Record::Rtcp(_) => "rtcp",
            Record::Hangup(_) => "hangup",
            Record::Outcome(_) => "outcome",
            Record::Import(_) => "import",
            Record::OptOutListChange(_) => "opt-out-list-change",
            Record::Checkpoint(_) => "checkpoint",
            Record::TornTail(_) => "torn-tail",
            Record::TrunkBreaker(_) => "trunk-breaker",
            Record::Amd(_) => "amd",
        }
    }
}

/// The policy a run decides with, in a form replay can rebuild exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySnapshot {
    pub ruleset: String,
    pub ruleset_version: String,
    /// The campaign's zone (its cron schedule is read there).
    pub zone: String,
    /// 5-field cron expressions; empty = any time.
    pub schedule: Vec<String>,
    pub ring_timeout_ms: u64,
    pub message_ms: u64,
}

/// Caps in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapsSnapshot {
    pub max_attempts: u32,
    pub rolling_max: Option<u32>,
    pub rolling_days: Option<u64>,
    pub quiet_days_after_refusal: Option<u64>,
}

/// A retry rule in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrySnapshot {
    pub outcome: String,
    pub delay_secs: u64,
    pub max_retries: u32,
}

/// A recording the run plays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioSnapshot {
    /// `message` or `confirmation`.
    pub role: String,
    pub path: String,
    pub sha256: String,
    pub length_ms: u64,
    /// The transcript file next to the recording (`<name>.txt`), if there is one.
    pub transcript: Option<String>,
}

/// The run header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    pub format: u32,
    /// `call`, `run`, `import`, `optout` …
    pub command: String,
    /// The node (process) that writes this log: nodes sharing one PostgreSQL store each keep
    /// their own chain, and `audit replay` merges them. Absent in logs written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub software: String,
    pub campaign: Option<String>,
    /// The campaign's display name (`campaign` is what records refer to it by).
    #[serde(default)]
    pub campaign_name: Option<String>,
    /// The campaign file's path as given to the command.
    #[serde(default)]
    pub campaign_file: Option<String>,
    /// Lowercase hex SHA-256 of the campaign file's bytes (what `sha256sum` prints).
    #[serde(default)]
    pub campaign_sha256: Option<String>,
    /// The campaign file, verbatim.
    pub campaign_toml: Option<String>,
    pub policy: Option<PolicySnapshot>,
    pub caps: Option<CapsSnapshot>,
    pub retry: Vec<RetrySnapshot>,
    pub opt_out_key: Option<char>,
    pub audio: Vec<AudioSnapshot>,
    pub tzdb_version: String,
    pub phone_tz_map_version: String,
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStop {
    pub reason: String,
}

/// A consent record as the decision saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentSnapshot {
    pub windows: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub source: String,
    pub proof: String,
}

/// A consent snapshot recorded once in a chain: `sha256` is the lowercase hex SHA-256 of
/// `consents` as written (compact JSON, this crate's field order: [`snapshot_sha256`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentSnapshotRecord {
    pub sha256: String,
    pub consents: Vec<ConsentSnapshot>,
}

/// The SHA-256 (lowercase hex) of a consent snapshot: of its compact JSON, as the `consents`
/// of a `consent` record is written (`jq -cj .consents | sha256sum` on a verified line).
pub fn snapshot_sha256(consents: &[ConsentSnapshot]) -> serde_json::Result<String> {
    snapshot_digest(consents).map(hex::encode)
}

/// [`snapshot_sha256`]'s 32 bytes.
pub fn snapshot_digest(consents: &[ConsentSnapshot]) -> serde_json::Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    Ok(Sha256::digest(serde_json::to_vec(consents)?).into())
}

/// The wall-clock reading of `now` in one candidate zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneReading {
    pub zone: String,
    pub utc_offset_secs: i32,
    pub local: String,
    /// The consented window containing this reading, if any.
    pub window: Option<String>,
}

/// One earlier attempt on the number, as the decision counted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastAttempt {
    /// When the attempt started (what rolling caps count).
    pub at: DateTime<Utc>,
    /// When it ended (retry delays count from here); none if unknown.
    pub ended: Option<DateTime<Utc>>,
    pub outcome: Outcome,
    pub campaign: String,
}

/// A dial decision and its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub campaign: String,
    pub contact: String,
    pub number: String,
    /// The instant decided for.
    pub now: DateTime<Utc>,
    /// The contact's zone as given (none: inferred from the number).
    pub given_zone: Option<String>,
    /// The contact's consent records inline (format 2, and a decision not yet written);
    /// empty when `consents_sha256` cites them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consents: Vec<ConsentSnapshot>,
    /// Format 3: the `consent` record (earlier in the same chain) holding the contact's
    /// consent records, by its `sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consents_sha256: Option<String>,
    /// Every earlier attempt on the number (all campaigns): the cap and retry inputs.
    pub history: Vec<PastAttempt>,
    /// Whether the number was on the opt-out list.
    pub opted_out: bool,
    /// `dial` or `skip`.
    pub verdict: String,
    /// Dial: the consent record that allowed it (index into `consents`).
    pub consent: Option<usize>,
    pub readings: Vec<ZoneReading>,
    pub ruleset: String,
    pub ruleset_version: String,
    /// Dial: the decision holds until this instant.
    pub valid_until: Option<DateTime<Utc>>,
    /// Skip: why (the caller's refusal first, then the policy's reasons), each a coded object.
    #[serde(deserialize_with = "reasons_any_version")]
    pub reasons: Vec<Reason>,
    pub next_eligible: Option<DateTime<Utc>>,
    /// Attempt number this dial would be, in this campaign (1-based).
    pub attempt: u32,
}

/// Why a decision is a skip: a stable `code` and the fields of that code, one JSON object
/// (`{"code":"outside-legal-hours","local":"2027-03-03T08:00:00","ruleset":"FR","zone":"Europe/Paris"}`).
/// Every code and its fields are listed in `docs/audit-format.md`; a code's fields do not
/// change meaning without a new format version. Instants are RFC 3339 UTC, `local` readings
/// are wall-clock `YYYY-MM-DDTHH:MM:SS` in `zone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Reason {
    // The policy's reasons (the scheduler's `SkipReason`).
    /// No time zone is known for the number.
    UnknownZone,
    /// The contact has no consent record.
    NoConsent,
    /// Consent record `consent` (index into `consents`) is granted only later.
    ConsentNotYetGranted {
        consent: usize,
        granted_at: DateTime<Utc>,
    },
    ConsentExpired {
        consent: usize,
        expires_at: DateTime<Utc>,
    },
    ConsentRevoked {
        consent: usize,
        revoked_at: DateTime<Utc>,
    },
    /// The reading in `zone` is in no consented window.
    OutsideConsentWindow { zone: String, local: String },
    /// Each zone's reading is in some window, but no one consent record covers them all.
    NoSingleConsentCoversAllZones,
    /// The reading in `zone` is outside the legal hours of `ruleset`.
    OutsideLegalHours {
        zone: String,
        local: String,
        ruleset: String,
    },
    /// `date` (`YYYY-MM-DD`) is a public holiday in `zone`.
    PublicHoliday {
        zone: String,
        date: String,
        name: String,
    },
    /// The campaign's schedule does not hold (reading in the campaign's zone).
    OutsideCampaignSchedule { zone: String, local: String },
    /// Calling is allowed only until `allowed_until`, less than a call may take.
    CallWouldNotFit {
        allowed_until: DateTime<Utc>,
        call_duration_secs: u64,
    },
    // The caller's refusals, before the policy.
    /// The number is on the opt-out list.
    OptedOut,
    /// The campaign's attempt cap is reached.
    AttemptCap { made: u32, max: u32 },
    /// `recent` attempts (all campaigns) in the last `days` days, at most `max`; lifts `until`.
    RollingCap {
        recent: u32,
        max: u32,
        days: u64,
        until: DateTime<Utc>,
    },
    /// Refused (`outcome`) at `refused_at`: no contact `until`.
    QuietAfterRefusal {
        refused_at: DateTime<Utc>,
        outcome: Outcome,
        until: DateTime<Utc>,
    },
    /// The retry delay of the last attempt's outcome runs until `not_before`.
    RetryDelay { not_before: DateTime<Utc> },
    /// The campaign is done with the contact: a final outcome, or its retries are used up.
    CampaignDone,
    /// The number's stored call history cannot be read (damaged): not dialled until it is
    /// repaired, since a shorter history could hide an attempt that counts toward a cap.
    HistoryUnreadable { why: String },
    /// A format-1 log's reason, which was free text.
    Text { text: String },
    /// A code this version does not know (written by a later one); its fields are not kept.
    #[serde(other)]
    Unknown,
}

impl Reason {
    /// The stable code (`outside-legal-hours` …).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::UnknownZone => "unknown-zone",
            Reason::NoConsent => "no-consent",
            Reason::ConsentNotYetGranted { .. } => "consent-not-yet-granted",
            Reason::ConsentExpired { .. } => "consent-expired",
            Reason::ConsentRevoked { .. } => "consent-revoked",
            Reason::OutsideConsentWindow { .. } => "outside-consent-window",
            Reason::NoSingleConsentCoversAllZones => "no-single-consent-covers-all-zones",
            Reason::OutsideLegalHours { .. } => "outside-legal-hours",
            Reason::PublicHoliday { .. } => "public-holiday",
            Reason::OutsideCampaignSchedule { .. } => "outside-campaign-schedule",
            Reason::CallWouldNotFit { .. } => "call-would-not-fit",
            Reason::OptedOut => "opted-out",
            Reason::AttemptCap { .. } => "attempt-cap",
            Reason::RollingCap { .. } => "rolling-cap",
            Reason::QuietAfterRefusal { .. } => "quiet-after-refusal",
            Reason::RetryDelay { .. } => "retry-delay",
            Reason::CampaignDone => "campaign-done",
            Reason::HistoryUnreadable { .. } => "history-unreadable",
            Reason::Text { .. } => "text",
            Reason::Unknown => "unknown",
        }
    }
}

/// In words, for people (the log keeps the coded form).
impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = |d: &DateTime<Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self {
            Reason::UnknownZone => write!(f, "no time zone is known for this number"),
            Reason::NoConsent => write!(f, "the contact has no consent record"),
            Reason::ConsentNotYetGranted {
                consent,
                granted_at,
            } => write!(f, "consent #{consent} is granted only from {}", t(granted_at)),
            Reason::ConsentExpired {
                consent,
                expires_at,
            } => write!(f, "consent #{consent} expired at {}", t(expires_at)),
            Reason::ConsentRevoked {
                consent,
                revoked_at,
            } => write!(f, "consent #{consent} was revoked at {}", t(revoked_at)),
            Reason::OutsideConsentWindow { zone, local } => {
                write!(f, "{local} in {zone} is in no consented window")
            }
            Reason::NoSingleConsentCoversAllZones => write!(
                f,
                "no one consent record in force covers the time in every zone"
            ),
            Reason::OutsideLegalHours {
                zone,
                local,
                ruleset,
            } => write!(f, "{local} in {zone} is outside the {ruleset} legal hours"),
            Reason::PublicHoliday { zone, date, name } => {
                write!(f, "{date} in {zone} is a public holiday ({name})")
            }
            Reason::OutsideCampaignSchedule { zone, local } => write!(
                f,
                "the campaign schedule does not hold at {local} ({zone})"
            ),
            Reason::CallWouldNotFit {
                allowed_until,
                call_duration_secs,
            } => write!(
                f,
                "calling is allowed until {}, less than the {call_duration_secs} s a call may take",
                t(allowed_until)
            ),
            Reason::OptedOut => write!(f, "the number is on the opt-out list"),
            Reason::AttemptCap { made, max } => write!(
                f,
                "attempt cap: {made} of {max} attempts made in this campaign"
            ),
            Reason::RollingCap {
                recent,
                max,
                days,
                until,
            } => write!(
                f,
                "rolling cap: {recent} attempts in the last {days} days, all campaigns (at most {max}); lifts at {}",
                t(until)
            ),
            Reason::QuietAfterRefusal {
                refused_at,
                outcome,
                until,
            } => write!(
                f,
                "refused on {} ({outcome}): no contact until {}",
                t(refused_at),
                t(until)
            ),
            Reason::RetryDelay { not_before } => {
                write!(f, "retry delay: not before {}", t(not_before))
            }
            Reason::CampaignDone => write!(
                f,
                "this campaign is done with this contact (final outcome, or its retries are used up)"
            ),
            Reason::HistoryUnreadable { why } => write!(
                f,
                "the number's call history is damaged ({why}): not dialled until it is repaired"
            ),
            Reason::Text { text } => f.write_str(text),
            Reason::Unknown => write!(f, "a reason this version of crieur does not know"),
        }
    }
}

/// Reads `reasons` as format 2 writes them (coded objects) or as format 1 did (text).
fn reasons_any_version<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<Reason>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum AnyVersion {
        Coded(Reason),
        Text(String),
    }
    Ok(Vec::<AnyVersion>::deserialize(d)?
        .into_iter()
        .map(|r| match r {
            AnyVersion::Coded(r) => r,
            AnyVersion::Text(text) => Reason::Text { text },
        })
        .collect())
}

/// The INVITE left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteSent {
    pub call: String,
    pub campaign: String,
    pub contact: String,
    pub number: String,
    pub decided_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
    /// The decision re-checked just before sending: `dial` (else no INVITE is sent).
    pub recheck: String,
    pub valid_until: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipResponse {
    pub call: String,
    pub status: u16,
    pub at_ms: u64,
}

/// An event of a call, `at_ms` after the INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEvent {
    pub call: String,
    pub at_ms: u64,
}

/// Answering-machine detection in one answered call (`docs/audit-format.md`, `amd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmdRecord {
    pub call: String,
    /// `detect`, `voicemail-drop` or `hang-up-on-machine`.
    pub mode: String,
    /// The verdict that stands: `human`, `machine`, `not-sure`, or `none` (the call ended
    /// first).
    pub verdict: String,
    /// Its cause (`long-greeting`, `max-words`, `after-greeting-silence`, `beep` …).
    pub cause: Option<String>,
    /// The first verdict, when a beep later turned it into `machine`.
    pub first_verdict: Option<String>,
    /// From the answer to the verdict that stands.
    pub answer_to_verdict_ms: Option<u64>,
    /// The features the verdict was made from.
    pub features: Option<AmdFeatures>,
    /// The beep the voicemail message waited for, if one was heard.
    pub beep: Option<AmdBeep>,
    /// Why the voicemail message started: `beep`, `silence` (the greeting ended without a
    /// beep) or `timeout`.
    pub drop: Option<String>,
    /// From the beep's end to the voicemail message's first RTP packet.
    pub beep_to_voicemail_ms: Option<u64>,
    /// When the voicemail message's first packet left (from the INVITE).
    pub voicemail_at_ms: Option<u64>,
    /// The voicemail message played (its run header `audio` entry, role `voicemail`).
    pub voicemail_sha256: Option<String>,
    /// How much of it played.
    pub voicemail_played_ms: u64,
    /// A Special Information Tone heard (the call then ended `intercepted` or
    /// `intercepted-congestion`); absent when none was (and in logs written before it
    /// existed, which hash the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sit: Option<AmdSit>,
}

/// [`AmdRecord::sit`]: the tone's type and its three segments (times from the answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmdSit {
    /// `ic`, `vc`, `ro-intra`, `ro-inter`, `nc-intra`, `nc-inter`, `io`, `reserved` or
    /// `unknown` (a combination the table does not assign).
    pub code: String,
    /// Each segment's measured frequency.
    pub freq_hz: [u32; 3],
    /// Each segment's length.
    pub length_ms: [u64; 3],
    /// The first segment's start and the third's end.
    pub start_ms: u64,
    pub end_ms: u64,
}

/// [`AmdRecord::features`] (milliseconds of analysed audio from the answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmdFeatures {
    pub initial_silence_ms: u32,
    pub voice_ms: u32,
    pub words: u32,
    pub longest_word_ms: u32,
    pub silence_ms: u32,
    pub analysed_ms: u32,
    pub noise_floor_dbfs: i32,
}

/// [`AmdRecord::beep`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmdBeep {
    pub freq_hz: u32,
    pub length_ms: u64,
    /// Its end, from the answer.
    pub end_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstAudio {
    pub call: String,
    pub at_ms: u64,
    pub answer_to_audio_ms: u64,
}

/// RTCP of one call (RFC 3550 §6.4): what we sent, and the latest report block the far end
/// sent about our stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcpRecord {
    pub call: String,
    /// Compound RTCP packets we sent (sender reports, the last with BYE).
    pub reports_sent: u32,
    /// Report blocks about our audio received from the far end.
    pub reports_received: u32,
    /// Fraction of our packets lost, in 1/256, in the far end's latest report.
    pub fraction_lost_256: Option<u8>,
    /// The worst fraction lost of any of its reports, in 1/256.
    pub worst_fraction_lost_256: u8,
    /// Our packets lost since the start, as the far end counted them.
    pub cumulative_lost: Option<i32>,
    /// Interarrival jitter in its latest report, in microseconds.
    pub jitter_us: Option<u64>,
    /// Round-trip time from its latest report that echoed one of our sender reports.
    pub round_trip_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dtmf {
    pub call: String,
    pub at_ms: u64,
    pub digit: char,
    /// `rfc4733`, `sip-info` or `in-band`.
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOutRecorded {
    pub call: String,
    pub number: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hangup {
    pub call: String,
    /// `us`, `callee` or `nobody`.
    pub by: String,
    pub reason: String,
    pub sip_status: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub call: String,
    pub campaign: String,
    pub contact: String,
    pub number: String,
    pub started: DateTime<Utc>,
    pub ended: DateTime<Utc>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub campaign: String,
    pub file: String,
    pub sha256: String,
    pub rows: usize,
    pub created: usize,
    pub updated: usize,
    pub consents_added: usize,
    pub rejected: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOutListChange {
    /// `add` or `remove`.
    pub action: String,
    pub numbers: Vec<String>,
    pub source: String,
    pub at: DateTime<Utc>,
    /// An API opt-out whose store commit ran beside this record's fsync: the ticket the
    /// store kept with it until both were durable (recovery at start matches the two by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Written at an owner's start, not when the change was made: `store` (the store held
    /// the opt-out, the log did not: a crash between the two writes) or `log` (the log held
    /// it, the store did not: it was written into the store then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub upto_seq: u64,
    /// Hex SHA-256 of record `upto_seq`'s line.
    pub upto_hash: String,
    /// Hex Ed25519 public key.
    pub public_key: String,
    /// Hex Ed25519 signature over [`checkpoint_message`].
    pub signature: String,
}

/// The bytes a checkpoint signs.
pub fn checkpoint_message(upto_seq: u64, upto_hash: &str) -> Vec<u8> {
    format!("crieur-audit-checkpoint-v1\n{upto_seq}\n{upto_hash}\n").into_bytes()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornTail {
    pub segment: String,
    pub bytes: u64,
    pub sha256: String,
    /// Where the torn bytes were set aside.
    pub saved_as: String,
}

/// Why the trunk's breaker changed state: a stable `code` and what showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerCause {
    /// `trunk-auth-failed`, `trunk-unreachable`, `trunk-server-error`, `codec-mismatch` (a
    /// trunk fault), `open-period-elapsed`, `call-served`.
    pub code: String,
    /// The call whose end caused it, if one did.
    pub call: Option<String>,
    /// The INVITE's final SIP status, if the cause is a call that got one.
    pub sip_status: Option<u16>,
    pub detail: String,
}

/// The trunk's circuit breaker changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrunkBreaker {
    pub campaign: String,
    /// `closed`, `open`, `half-open` or `stopped`.
    pub from: String,
    pub state: String,
    pub cause: BreakerCause,
    /// Trunk faults in a row when it changed.
    pub consecutive_faults: u32,
    /// `open`: no call before this instant.
    pub until: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    /// Every code: written as `{"code": code(), …}` and read back the same.
    #[test]
    fn every_reason_round_trips_under_its_code() {
        let at = t("2027-03-03T10:00:00Z");
        let all = [
            Reason::UnknownZone,
            Reason::NoConsent,
            Reason::ConsentNotYetGranted {
                consent: 0,
                granted_at: at,
            },
            Reason::ConsentExpired {
                consent: 1,
                expires_at: at,
            },
            Reason::ConsentRevoked {
                consent: 2,
                revoked_at: at,
            },
            Reason::OutsideConsentWindow {
                zone: "Europe/Paris".into(),
                local: "2027-03-03T11:00:00".into(),
            },
            Reason::NoSingleConsentCoversAllZones,
            Reason::OutsideLegalHours {
                zone: "Europe/Paris".into(),
                local: "2027-03-03T08:00:00".into(),
                ruleset: "FR".into(),
            },
            Reason::PublicHoliday {
                zone: "Europe/Paris".into(),
                date: "2027-05-01".into(),
                name: "Fête du Travail".into(),
            },
            Reason::OutsideCampaignSchedule {
                zone: "Europe/Paris".into(),
                local: "2027-03-03T11:00:00".into(),
            },
            Reason::CallWouldNotFit {
                allowed_until: at,
                call_duration_secs: 45,
            },
            Reason::OptedOut,
            Reason::AttemptCap { made: 3, max: 3 },
            Reason::RollingCap {
                recent: 4,
                max: 4,
                days: 30,
                until: at,
            },
            Reason::QuietAfterRefusal {
                refused_at: at,
                outcome: Outcome::Scheduled(crieur_engine::AttemptOutcome::NotInterested),
                until: at,
            },
            Reason::RetryDelay { not_before: at },
            Reason::CampaignDone,
            Reason::HistoryUnreadable { why: "x".into() },
            Reason::Text { text: "y".into() },
        ];
        for r in all {
            let v = serde_json::to_value(&r).unwrap_or_default();
            assert_eq!(v["code"], r.code(), "{v}");
            let back: Reason = serde_json::from_value(v.clone()).unwrap_or(Reason::Unknown);
            assert_eq!(back, r, "{v}");
            assert!(!r.to_string().is_empty());
        }
        assert_eq!(
            serde_json::to_string(&Reason::OutsideLegalHours {
                zone: "Europe/Paris".into(),
                local: "2027-03-03T08:00:00".into(),
                ruleset: "FR".into(),
            })
            .unwrap_or_default(),
            r#"{"code":"outside-legal-hours","zone":"Europe/Paris","local":"2027-03-03T08:00:00","ruleset":"FR"}"#
        );
    }
}
