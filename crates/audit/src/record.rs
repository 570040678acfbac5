//! The records of the audit log (see `docs/audit-format.md`, the regulator-facing spec).
//!
//! Every line is one JSON object: the envelope (`seq`, `ts`, `prev`, `type`) and the payload
//! of its type, flattened. Field names are part of the format: change them only with a new
//! format version.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Format version, written in every run header.
pub const FORMAT_VERSION: u32 = 1;

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
}

impl Record {
    /// The `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::RunStart(_) => "run-start",
            Record::RunStop(_) => "run-stop",
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
    pub outcome: String,
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
    pub consents: Vec<ConsentSnapshot>,
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
    /// Skip: why (policy reasons, opt-out, cap).
    pub reasons: Vec<String>,
    pub next_eligible: Option<DateTime<Utc>>,
    /// Attempt number this dial would be, in this campaign (1-based).
    pub attempt: u32,
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
    pub outcome: String,
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
