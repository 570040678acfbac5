//! The campaign file (TOML) → a validated [`Campaign`] with its scheduler [`Policy`].

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crieur_engine::BreakerConfig;
use crieur_scheduler::{parse_zone, CampaignSchedule, CronExpr, Policy, RuleSet, Tz};
use serde::Deserialize;
use toml::Spanned;

use crate::input::{line_col, parse_toml, read_text, InputError, InputErrors};

/// The minimum ring time before giving up: 47 CFR 64.1200(a)(6) and Ofcom require 15 s.
pub const MIN_RING_TIMEOUT_SECS: u64 = 15;
/// No trunk rings for longer than this; a larger value is a typo.
pub const MAX_RING_TIMEOUT_SECS: u64 = 300;
/// A prerecorded message longer than this is refused (it would also defeat call fit).
pub const MAX_MESSAGE_SECS: u64 = 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    /// The stable id (the store and the audit log key on it); absent: the name.
    #[serde(default)]
    id: Option<Spanned<String>>,
    name: Spanned<String>,
    ruleset: Spanned<String>,
    zone: Spanned<String>,
    #[serde(default)]
    schedule: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    ring_timeout_secs: Option<Spanned<u64>>,
    message: Spanned<String>,
    /// Silence before the message, in milliseconds (default 300).
    #[serde(default)]
    lead_in_ms: Option<Spanned<u64>>,
    #[serde(default)]
    pacing: Option<Spanned<Pacing>>,
    #[serde(default)]
    retry: Option<Spanned<Retry>>,
    #[serde(default)]
    opt_out_key: Option<Spanned<String>>,
    #[serde(default)]
    not_interested_key: Option<Spanned<String>>,
    #[serde(default)]
    caps: Option<Spanned<RawCaps>>,
    #[serde(default)]
    audit: Option<RawAudit>,
    #[serde(default)]
    confirmation: Option<Spanned<String>>,
    #[serde(default)]
    trunk: Option<Spanned<RawTrunk>>,
    #[serde(default)]
    amd: Option<Spanned<RawAmd>>,
}

/// `[amd]`: answering-machine detection (`docs/formats.md`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmd {
    mode: Spanned<String>,
    #[serde(default)]
    voicemail_message: Option<Spanned<String>>,
    #[serde(default)]
    initial_silence_ms: Option<u64>,
    #[serde(default)]
    greeting_ms: Option<u64>,
    #[serde(default)]
    after_greeting_silence_ms: Option<u64>,
    #[serde(default)]
    total_analysis_ms: Option<u64>,
    #[serde(default)]
    min_word_ms: Option<u64>,
    #[serde(default)]
    between_words_ms: Option<u64>,
    #[serde(default)]
    max_words: Option<u32>,
    #[serde(default)]
    max_word_ms: Option<u64>,
    #[serde(default)]
    greeting_end_silence_ms: Option<u64>,
    #[serde(default)]
    max_greeting_wait_ms: Option<u64>,
}

/// Answering-machine detection for the campaign's calls.
#[derive(Debug, Clone)]
pub struct AmdConfig {
    pub mode: crieur_media::call::AmdMode,
    pub params: crieur_media::amd::AmdParams,
    /// The voicemail message (required by `voicemail-drop`).
    pub voicemail: Option<PathBuf>,
    /// Its SHA-256, as the run header records it (each `amd` record names the one played).
    pub voicemail_sha256: Option<String>,
}

/// A recording named by `field` (relative to the campaign file): its path if it decodes.
fn wav_file(cx: &mut Ctx<'_>, base: &Path, v: &Spanned<String>, field: &str) -> Option<PathBuf> {
    let path = base.join(v.get_ref());
    match wav_length(&path) {
        Ok(_) => Some(path),
        Err(why) => {
            cx.err(
                v.span(),
                field,
                Some(v.get_ref()),
                format!("expected a readable WAV file ({}): {why}", path.display()),
            );
            None
        }
    }
}

/// `[amd]` → its configuration; every problem reported at the section's span.
fn amd_config(cx: &mut Ctx<'_>, base: &Path, a: &Spanned<RawAmd>) -> Option<AmdConfig> {
    use crieur_media::call::AmdMode;
    let span = a.span();
    let a = a.get_ref();
    let errors = cx.errors.len();
    let mode = AmdMode::parse(a.mode.get_ref());
    if mode.is_none() {
        cx.err(
            a.mode.span(),
            "amd.mode",
            Some(a.mode.get_ref()),
            "expected off, detect, voicemail-drop or hang-up-on-machine".into(),
        );
    }
    let mut p = crieur_media::amd::AmdParams::default();
    let ms = Duration::from_millis;
    for (name, v, field) in [
        (
            "initial_silence_ms",
            a.initial_silence_ms,
            &mut p.initial_silence,
        ),
        ("greeting_ms", a.greeting_ms, &mut p.greeting),
        (
            "after_greeting_silence_ms",
            a.after_greeting_silence_ms,
            &mut p.after_greeting_silence,
        ),
        (
            "total_analysis_ms",
            a.total_analysis_ms,
            &mut p.total_analysis_time,
        ),
        ("min_word_ms", a.min_word_ms, &mut p.min_word_length),
        (
            "between_words_ms",
            a.between_words_ms,
            &mut p.between_words_silence,
        ),
        ("max_word_ms", a.max_word_ms, &mut p.max_word_length),
        (
            "greeting_end_silence_ms",
            a.greeting_end_silence_ms,
            &mut p.greeting_end_silence,
        ),
        (
            "max_greeting_wait_ms",
            a.max_greeting_wait_ms,
            &mut p.max_greeting_wait,
        ),
    ] {
        match v {
            Some(v @ 10..=120_000) => *field = ms(v),
            Some(v) => cx.err(
                span.clone(),
                &format!("amd.{name}"),
                Some(&v.to_string()),
                "expected 10 to 120000 milliseconds".into(),
            ),
            None => {}
        }
    }
    match a.max_words {
        Some(n @ 1..=100) => p.max_words = n,
        Some(n) => cx.err(
            span.clone(),
            "amd.max_words",
            Some(&n.to_string()),
            "expected 1 to 100 words".into(),
        ),
        None => {}
    }
    let voicemail = a
        .voicemail_message
        .as_ref()
        .and_then(|v| wav_file(cx, base, v, "amd.voicemail_message"));
    if mode == Some(AmdMode::VoicemailDrop) && a.voicemail_message.is_none() {
        cx.err(
            span,
            "amd.voicemail_message",
            None,
            "voicemail-drop needs a voicemail message (identity, call-back number, how to opt \
             out: 47 CFR 64.1200(b))"
                .into(),
        );
    }
    let voicemail_sha256 = voicemail
        .as_deref()
        .and_then(|v| crate::input::sha256_file(v).ok());
    (cx.errors.len() == errors).then(|| AmdConfig {
        mode: mode.unwrap_or_default(),
        params: p,
        voicemail,
        voicemail_sha256,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrunk {
    uri: Spanned<String>,
    #[serde(default)]
    transport: Option<Spanned<String>>,
    /// TLS: CA certificates (PEM) trusted besides the system's roots.
    #[serde(default)]
    tls_ca_file: Option<Spanned<String>>,
    /// TLS: our certificate chain (PEM), for the connections the trunk opens to us.
    #[serde(default)]
    tls_cert_file: Option<Spanned<String>>,
    /// TLS: the private key (PEM) of `tls_cert_file`.
    #[serde(default)]
    tls_key_file: Option<Spanned<String>>,
    /// The DNS server (`IP:port`) asked for the trunk's SRV and address records, instead of
    /// the system's.
    #[serde(default)]
    dns_server: Option<Spanned<String>>,
    from: Spanned<String>,
    #[serde(default)]
    username: Option<Spanned<String>>,
    #[serde(default)]
    password_env: Option<Spanned<String>>,
    #[serde(default)]
    password_file: Option<Spanned<String>>,
    #[serde(default)]
    max_call_secs: Option<Spanned<u64>>,
    /// The trunk's own limits (the stricter of these and the campaign's pacing applies).
    #[serde(default)]
    calls_per_second: Option<f64>,
    #[serde(default)]
    max_concurrent_calls: Option<u32>,
    /// Symmetric RTP latching (a far end behind NAT).
    #[serde(default)]
    symmetric_rtp: bool,
    /// Our SIP address (`IP:port`), for trunks that whitelist it.
    #[serde(default)]
    local_address: Option<Spanned<String>>,
    /// `P-Asserted-Identity` (RFC 3325) on the INVITE.
    #[serde(default)]
    p_asserted_identity: Option<Spanned<String>>,
    /// `[trunk.breaker]`: when trunk faults pause or stop dialling.
    #[serde(default)]
    breaker: Option<Spanned<RawBreaker>>,
}

/// `[trunk.breaker]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    /// Trunk faults in a row that open the breaker.
    #[serde(default)]
    consecutive_faults: Option<Spanned<u32>>,
    /// Seconds it stays open before one probe call.
    #[serde(default)]
    open_secs: Option<Spanned<u64>>,
}

/// The longest a breaker may stay open before probing (a larger value is a typo).
const MAX_BREAKER_OPEN_SECS: u64 = 24 * 3600;

/// `[trunk.breaker]` → the breaker's thresholds (defaults: 5 faults in a row, open 60 s).
fn breaker_config(cx: &mut Ctx<'_>, b: Option<&Spanned<RawBreaker>>) -> BreakerConfig {
    let mut cfg = BreakerConfig::default();
    let Some(b) = b.map(Spanned::get_ref) else {
        return cfg;
    };
    if let Some(n) = &b.consecutive_faults {
        match *n.get_ref() {
            0 | 1001.. => cx.err(
                n.span(),
                "trunk.breaker.consecutive_faults",
                Some(&n.get_ref().to_string()),
                "expected 1 to 1000 trunk faults in a row".into(),
            ),
            v => cfg.open_after = v,
        }
    }
    if let Some(o) = &b.open_secs {
        match *o.get_ref() {
            v @ 1..=MAX_BREAKER_OPEN_SECS => cfg.open_for = Duration::from_secs(v),
            v => cx.err(
                o.span(),
                "trunk.breaker.open_secs",
                Some(&v.to_string()),
                format!("expected 1 to {MAX_BREAKER_OPEN_SECS} seconds"),
            ),
        }
    }
    cfg
}

/// Where the trunk password comes from. The password itself is read only when a call is
/// placed, and never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Env(String),
    File(PathBuf),
}

/// The SIP trunk calls go through.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkConfig {
    /// As written, e.g. `sip:127.0.0.1:5060`.
    pub uri: String,
    pub host: String,
    /// The URI's port, or the transport's default (5060, 5061 for TLS) when it gives none.
    pub port: u16,
    /// Whether the URI gives the port: without one, a host name is located by DNS SRV
    /// (RFC 3263 §4.2).
    pub port_given: bool,
    /// The DNS server to ask (`[trunk] dns_server`); `None`: the system's (`/etc/resolv.conf`).
    pub dns_server: Option<std::net::SocketAddr>,
    /// Caller ID (From user) and From host.
    pub from_user: String,
    pub from_domain: String,
    pub username: Option<String>,
    pub password: Option<PasswordSource>,
    pub max_call_length: Duration,
    pub calls_per_second: Option<f64>,
    pub max_concurrent_calls: Option<u32>,
    /// Accept RTP from the first source heard instead of the SDP's address (NAT).
    pub symmetric_rtp: bool,
    /// When trunk faults pause (open) or stop dialling (`[trunk.breaker]`).
    pub breaker: BreakerConfig,
    /// The local SIP address (IP and port) calls are placed from; `None`: the address that
    /// routes to the trunk, any port.
    pub local_address: Option<std::net::SocketAddr>,
    /// `P-Asserted-Identity` URI (RFC 3325).
    pub p_asserted_identity: Option<String>,
    /// What SIP travels on to the trunk (`transport = "udp" | "tcp" | "tls"`; a `sips:` URI
    /// means TLS).
    pub transport: TrunkTransport,
    /// TLS: CA certificates (PEM) trusted besides the system's roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// TLS: our certificate chain and private key (PEM), served by a listener on our SIP
    /// address to the connections the trunk opens to us (a request inside a dialog after our
    /// connection closed); `None`: no listener, the trunk reaches us on our connection only.
    pub tls_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The trunk's SIP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrunkTransport {
    #[default]
    Udp,
    Tcp,
    /// TLS, the trunk's certificate checked against the URI's host.
    Tls,
}

impl TrunkConfig {
    /// Reads the password from its source.
    pub fn read_password(&self) -> Result<Option<String>, crate::Error> {
        match &self.password {
            None => Ok(None),
            Some(PasswordSource::Env(v)) => {
                std::env::var(v)
                    .map(Some)
                    .map_err(|e| crate::Error::PasswordEnv {
                        var: v.clone(),
                        not_unicode: matches!(e, std::env::VarError::NotUnicode(_)),
                    })
            }
            Some(PasswordSource::File(p)) => std::fs::read_to_string(p)
                .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_owned()))
                .map_err(|source| crate::Error::PasswordFile {
                    path: p.clone(),
                    source,
                }),
        }
    }
}

/// Pacing (used by the dialling loop; parsed and checked now).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pacing {
    #[serde(default = "default_cps")]
    pub calls_per_second: f64,
    #[serde(default = "default_concurrent")]
    pub max_concurrent_calls: u32,
}

fn default_cps() -> f64 {
    1.0
}
fn default_concurrent() -> u32 {
    10
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            calls_per_second: default_cps(),
            max_concurrent_calls: default_concurrent(),
        }
    }
}

/// Retry policy (used by the dialling loop; parsed and checked now).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "kebab-case")]
pub struct Retry {
    /// Attempts per contact in this campaign; `None` = 3.
    #[serde(rename = "max_attempts")]
    pub max_attempts: Option<u32>,
    /// Minimum delay between two attempts, seconds.
    #[serde(rename = "min_delay_secs")]
    pub min_delay_secs: Option<u64>,
    /// Per-outcome rules (`[retry.busy]`, `[retry.no-answer]` …); absent = the defaults.
    pub busy: Option<RetryRule>,
    pub no_answer: Option<RetryRule>,
    pub failed: Option<RetryRule>,
    pub rejected: Option<RetryRule>,
    pub machine: Option<RetryRule>,
    pub interrupted: Option<RetryRule>,
}

/// `[caps]`: overrides of the rule set's caps. Under a rule set that sets a cap, an override
/// may only tighten it.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaps {
    rolling_max: Option<u32>,
    rolling_days: Option<u32>,
    quiet_days_after_refusal: Option<u32>,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    signing_key_file: Option<Spanned<String>>,
    checkpoint_every: Option<u64>,
    checkpoint_secs: Option<u64>,
}

/// Audit log settings.
#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    /// Ed25519 signing key (64 hex characters), relative to the campaign file.
    pub signing_key_file: Option<PathBuf>,
    pub checkpoint_every: Option<u64>,
    pub checkpoint_secs: Option<u64>,
}

/// When to retry after one outcome.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    pub delay_secs: u64,
    pub max_retries: u32,
}

impl Retry {
    /// The engine's retry policy: the defaults, overridden per outcome, every delay at least
    /// `min_delay_secs`.
    pub fn policy(&self) -> crieur_engine::RetryPolicy {
        let mut p = crieur_engine::RetryPolicy::default();
        let set = |r: &mut crieur_engine::RetryRule, o: Option<RetryRule>| {
            if let Some(o) = o {
                r.delay = Duration::from_secs(o.delay_secs);
                r.max_retries = o.max_retries;
            }
        };
        set(&mut p.busy, self.busy);
        set(&mut p.no_answer, self.no_answer);
        set(&mut p.failed, self.failed);
        set(&mut p.rejected, self.rejected);
        set(&mut p.machine, self.machine);
        set(&mut p.interrupted, self.interrupted);
        if let Some(min) = self.min_delay_secs.map(Duration::from_secs) {
            for r in [
                &mut p.busy,
                &mut p.no_answer,
                &mut p.failed,
                &mut p.rejected,
                &mut p.machine,
                &mut p.interrupted,
            ] {
                r.delay = r.delay.max(min);
            }
        }
        p
    }
}

/// A validated campaign.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// The stable id: what the store and the audit log know the campaign by. The TOML's
    /// `id`, or (for files written before ids existed) its `name`.
    pub id: String,
    /// Whether `id` was given (rather than taken from the name).
    pub id_given: bool,
    /// The display name (may change between runs).
    pub name: String,
    pub zone: Tz,
    pub message: PathBuf,
    pub message_length: Duration,
    /// Silence before the message (`lead_in_ms`).
    pub lead_in: Duration,
    pub ring_timeout: Duration,
    pub pacing: Pacing,
    pub retry: Retry,
    pub policy: Policy,
    /// The key that opts out, for the whole message.
    pub opt_out_key: char,
    /// Optional key for "not interested": a refusal (quiet period under FR), not an opt-out.
    pub not_interested_key: Option<char>,
    /// Attempt cap, rolling cap and quiet period: the rule set's, tightened by `[caps]`.
    pub caps: crieur_engine::CapRules,
    pub audit: AuditConfig,
    /// The opt-out confirmation recording.
    pub confirmation: Option<PathBuf>,
    pub trunk: Option<TrunkConfig>,
    /// `[amd]`: answering-machine detection (none: off).
    pub amd: Option<AmdConfig>,
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<InputError>,
}

impl Ctx<'_> {
    fn err(&mut self, span: Range<usize>, field: &str, value: Option<&str>, message: String) {
        let (line, col) = line_col(self.text, span.start);
        let mut e = InputError::new(self.path, message)
            .at(line, Some(col))
            .field(field);
        if let Some(v) = value {
            e = e.value(v);
        }
        self.errors.push(e);
    }
}

/// Whether `id` is a campaign id: 1 to 64 ASCII letters, digits, `-`, `_` or `.`,
/// starting with a letter or digit.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Campaign {
    /// Said by `check` when the campaign has no `id`.
    pub fn id_warning(&self) -> Option<String> {
        (!self.id_given).then(|| {
            format!(
                "no `id`: the name `{}` is the campaign's id in the store and the audit log \
                 (as before ids existed), so renaming the campaign would leave its contacts \
                 and history behind; add `id = \"…\"` (for an existing store, its name as it is \
                 now: `crieur campaigns` lists them)",
                self.name
            )
        })
    }

    /// What `check` warns about: no `id`, a schedule expression that never holds.
    pub fn warnings(&self) -> Vec<String> {
        let schedules = self.policy.schedule().map_or(&[][..], |s| s.exprs());
        self.id_warning()
            .into_iter()
            .chain(schedules.iter().filter(|e| !e.holds_ever()).map(|e| {
                format!(
                    "schedule expression `{}` never holds: the campaign will never call under it",
                    e.source()
                )
            }))
            .collect()
    }

    /// The stricter of the campaign's pacing and the trunk's own limits.
    pub fn effective_pacing(&self) -> crieur_engine::Pacing {
        let trunk_cps = self
            .trunk
            .as_ref()
            .and_then(|t| t.calls_per_second)
            .unwrap_or(f64::INFINITY);
        let trunk_max = self
            .trunk
            .as_ref()
            .and_then(|t| t.max_concurrent_calls)
            .unwrap_or(u32::MAX);
        crieur_engine::Pacing {
            calls_per_second: self.pacing.calls_per_second.min(trunk_cps),
            max_concurrent: self.pacing.max_concurrent_calls.min(trunk_max),
        }
    }
}

/// Reads and validates a campaign file; every problem found is reported.
pub fn load(path: &Path) -> Result<Campaign, InputErrors> {
    parse(path, &read_text(path, "campaign file")?)
}

/// Validates the text of a campaign file; every problem found is reported, located in
/// `path`. The files it names (recordings, signing key) are relative to `path`'s directory
/// and are read to check them.
pub fn parse(path: &Path, text: &str) -> Result<Campaign, InputErrors> {
    let (raw, errors) = parse_toml::<RawCampaign>(path, text);
    let Some(raw) = raw else {
        return Err(InputErrors(errors));
    };
    // The checks below add their problems to those of the TOML itself.
    let mut cx = Ctx { path, text, errors };

    if raw.name.get_ref().trim().is_empty() || raw.name.get_ref().contains('\0') {
        cx.err(
            raw.name.span(),
            "name",
            None,
            "expected a non-empty campaign name without NUL characters".into(),
        );
    }
    if let Some(id) = &raw.id {
        if !valid_id(id.get_ref()) {
            cx.err(
                id.span(),
                "id",
                Some(id.get_ref()),
                "expected 1 to 64 ASCII letters, digits, `-`, `_` or `.`, starting with a letter or digit (e.g. `rappel-2027`)".into(),
            );
        }
    }
    let ruleset = RuleSet::by_name(raw.ruleset.get_ref())
        .map_err(|e| {
            cx.err(
                raw.ruleset.span(),
                "ruleset",
                Some(raw.ruleset.get_ref()),
                e.to_string(),
            )
        })
        .ok();
    let zone = parse_zone(raw.zone.get_ref())
        .map_err(|_| {
            cx.err(
                raw.zone.span(),
                "zone",
                Some(raw.zone.get_ref()),
                "expected an IANA time-zone name such as Europe/Paris".into(),
            )
        })
        .ok();

    let mut exprs = Vec::new();
    if let Some(list) = &raw.schedule {
        if list.get_ref().is_empty() {
            cx.err(
                list.span(),
                "schedule",
                None,
                "expected at least one cron expression; remove `schedule` to call at any time"
                    .into(),
            );
        }
        for item in list.get_ref() {
            match item.get_ref().parse::<CronExpr>() {
                Ok(e) => exprs.push(e),
                Err(crieur_scheduler::Error::InvalidCron { reason, .. }) => cx.err(
                    item.span(),
                    "schedule",
                    Some(item.get_ref()),
                    format!("expected a 5-field cron expression (minute hour day-of-month month day-of-week): {reason}"),
                ),
                Err(e) => cx.err(item.span(), "schedule", Some(item.get_ref()), e.to_string()),
            }
        }
    }

    let ring = match &raw.ring_timeout_secs {
        Some(r) if *r.get_ref() < MIN_RING_TIMEOUT_SECS => {
            cx.err(
                r.span(),
                "ring_timeout_secs",
                Some(&r.get_ref().to_string()),
                format!("expected at least {MIN_RING_TIMEOUT_SECS} seconds (US 47 CFR 64.1200(a)(6), UK Ofcom)"),
            );
            MIN_RING_TIMEOUT_SECS
        }
        Some(r) if *r.get_ref() > MAX_RING_TIMEOUT_SECS => {
            cx.err(
                r.span(),
                "ring_timeout_secs",
                Some(&r.get_ref().to_string()),
                format!("expected at most {MAX_RING_TIMEOUT_SECS} seconds"),
            );
            MIN_RING_TIMEOUT_SECS
        }
        Some(r) => *r.get_ref(),
        None => MIN_RING_TIMEOUT_SECS,
    };

    let max_lead_in = crieur_media::uac::MAX_LEAD_IN.as_millis() as u64;
    let lead_in = match &raw.lead_in_ms {
        Some(l) if *l.get_ref() > max_lead_in => {
            cx.err(
                l.span(),
                "lead_in_ms",
                Some(&l.get_ref().to_string()),
                format!("expected at most {max_lead_in} (the identity must be heard within 2 s of the answer)"),
            );
            crieur_media::uac::DEFAULT_LEAD_IN
        }
        Some(l) => Duration::from_millis(*l.get_ref()),
        None => crieur_media::uac::DEFAULT_LEAD_IN,
    };

    let base = path.parent().unwrap_or(Path::new("."));
    let message = base.join(raw.message.get_ref());
    let message_length = match wav_length(&message) {
        Ok(d) if d.as_secs() >= MAX_MESSAGE_SECS => {
            cx.err(
                raw.message.span(),
                "message",
                Some(raw.message.get_ref()),
                format!(
                    "the message lasts {:.0} s; expected at most {MAX_MESSAGE_SECS} s",
                    d.as_secs_f64()
                ),
            );
            None
        }
        Ok(d) => Some(d),
        Err(why) => {
            cx.err(
                raw.message.span(),
                "message",
                Some(raw.message.get_ref()),
                format!(
                    "expected a readable WAV file ({}): {why}",
                    message.display()
                ),
            );
            None
        }
    };

    let pacing = raw
        .pacing
        .as_ref()
        .map(|p| p.get_ref().clone())
        .unwrap_or_default();
    if let Some(p) = &raw.pacing {
        if !(pacing.calls_per_second > 0.0 && pacing.calls_per_second.is_finite()) {
            cx.err(
                p.span(),
                "pacing.calls_per_second",
                Some(&pacing.calls_per_second.to_string()),
                "expected a positive number".into(),
            );
        }
        if pacing.max_concurrent_calls == 0 {
            cx.err(
                p.span(),
                "pacing.max_concurrent_calls",
                Some("0"),
                "expected at least 1".into(),
            );
        }
    }
    let retry = raw
        .retry
        .as_ref()
        .map(|r| r.get_ref().clone())
        .unwrap_or_default();
    if let (Some(r), Some(0)) = (&raw.retry, retry.max_attempts) {
        cx.err(
            r.span(),
            "retry.max_attempts",
            Some("0"),
            "expected at least 1".into(),
        );
    }

    let mut key = |k: &Spanned<String>, field: &str| {
        let mut chars = k.get_ref().chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_digit() || c == '*' || c == '#' => Some(c),
            _ => {
                cx.err(
                    k.span(),
                    field,
                    Some(k.get_ref()),
                    "expected one key: 0-9, * or #".into(),
                );
                None
            }
        }
    };
    let opt_out_key = match &raw.opt_out_key {
        None => '9',
        Some(k) => key(k, "opt_out_key").unwrap_or('9'),
    };
    let not_interested_key = raw
        .not_interested_key
        .as_ref()
        .and_then(|k| key(k, "not_interested_key").map(|c| (k, c)));
    let not_interested_key = match not_interested_key {
        Some((k, c)) if c == opt_out_key => {
            cx.err(
                k.span(),
                "not_interested_key",
                Some(k.get_ref()),
                format!("must differ from the opt-out key `{opt_out_key}`"),
            );
            None
        }
        other => other.map(|(_, c)| c),
    };
    let confirmation = raw
        .confirmation
        .as_ref()
        .and_then(|c| wav_file(&mut cx, base, c, "confirmation"));
    let trunk = raw
        .trunk
        .as_ref()
        .and_then(|t| trunk_config(&mut cx, base, t.get_ref()));
    let amd = raw.amd.as_ref().and_then(|a| amd_config(&mut cx, base, a));
    if let (Some(t), Some(len)) = (&trunk, message_length) {
        if t.max_call_length <= Duration::from_secs(ring) + len {
            cx.err(
                raw.trunk.as_ref().map_or(0..0, |t| t.span()),
                "trunk.max_call_secs",
                Some(&t.max_call_length.as_secs().to_string()),
                "expected more than the ring timeout plus the message length".into(),
            );
        }
    }

    // The signing key is read now: a missing or malformed key must stop `check`, not a
    // later `import` or `run` halfway.
    let signing_key_file = raw
        .audit
        .as_ref()
        .and_then(|a| a.signing_key_file.as_ref())
        .and_then(|f| {
            let p = base.join(f.get_ref());
            match signing_key_problem(&p) {
                None => Some(p),
                Some(why) => {
                    cx.err(f.span(), "audit.signing_key_file", Some(f.get_ref()), why);
                    None
                }
            }
        });

    let schedule = match (exprs.is_empty(), zone) {
        (false, Some(z)) => CampaignSchedule::new(exprs, z).ok(),
        _ => None,
    };
    let caps = ruleset.as_ref().map(|r| {
        let mut caps =
            crieur_engine::CapRules::for_ruleset(r.name(), retry.max_attempts.unwrap_or(3));
        if let Some(c) = &raw.caps {
            let span = c.span();
            let c = *c.get_ref();
            const DAY: u64 = 86_400;
            let rs = r.name();
            if c.rolling_max.is_some() || c.rolling_days.is_some() {
                let (dmax, ddays) = caps
                    .rolling
                    .map_or((None, None), |(m, w)| (Some(m), Some(w.as_secs() / DAY)));
                let max = c.rolling_max.or(dmax);
                let days = c.rolling_days.map(u64::from).or(ddays);
                match (max, days) {
                    (Some(m), Some(d)) if m >= 1 && d >= 1 => {
                        if dmax.is_some_and(|x| m > x) || ddays.is_some_and(|x| d < x) {
                            cx.err(
                                span.clone(),
                                "caps.rolling_max",
                                Some(&format!("{m} per {d} days")),
                                format!(
                                    "{rs} allows at most {} calls per {} days; an override may only be stricter",
                                    dmax.unwrap_or(0),
                                    ddays.unwrap_or(0)
                                ),
                            );
                        }
                        caps.rolling = Some((m, Duration::from_secs(d * DAY)));
                    }
                    _ => cx.err(
                        span.clone(),
                        "caps.rolling_max",
                        None,
                        "expected both rolling_max and rolling_days, each at least 1".into(),
                    ),
                }
            }
            if let Some(q) = c.quiet_days_after_refusal {
                let q = u64::from(q);
                let d = caps.quiet_after_refusal.map(|w| w.as_secs() / DAY);
                if d.is_some_and(|d| q < d) {
                    cx.err(
                        span,
                        "caps.quiet_days_after_refusal",
                        Some(&q.to_string()),
                        format!(
                            "{rs} requires at least {} days; an override may only be stricter",
                            d.unwrap_or(0)
                        ),
                    );
                }
                caps.quiet_after_refusal = (q > 0).then(|| Duration::from_secs(q * DAY));
            }
        }
        caps
    });
    match (cx.errors.is_empty(), ruleset, zone, message_length, caps) {
        (true, Some(ruleset), Some(zone), Some(message_length), Some(caps)) => {
            let ring_timeout = Duration::from_secs(ring);
            let policy = Policy::new(ruleset, schedule, ring_timeout, message_length)
                .map_err(|e| InputError::new(path, e.to_string()).field("message"))?;
            let name = raw.name.into_inner();
            Ok(Campaign {
                id: raw
                    .id
                    .as_ref()
                    .map_or_else(|| name.clone(), |i| i.get_ref().clone()),
                id_given: raw.id.is_some(),
                name,
                zone,
                message,
                message_length,
                lead_in,
                ring_timeout,
                pacing,
                retry,
                policy,
                opt_out_key,
                not_interested_key,
                caps,
                audit: AuditConfig {
                    signing_key_file,
                    checkpoint_every: raw.audit.as_ref().and_then(|a| a.checkpoint_every),
                    checkpoint_secs: raw.audit.as_ref().and_then(|a| a.checkpoint_secs),
                },
                confirmation,
                trunk,
                amd,
            })
        }
        _ => Err(InputErrors(cx.errors)),
    }
}

/// What is wrong with an audit signing key file, if anything.
pub fn signing_key_problem(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Err(e) => Some(format!(
            "cannot read the signing key {}: {e} (make one with `crieur audit keygen --out {}`)",
            path.display(),
            path.display()
        )),
        Ok(text) => crieur_audit::signing_key_from_hex(&text)
            .err()
            .map(|e| format!("{}: not a signing key: {e}", path.display())),
    }
}

/// Length of a WAV file's audio, decoded whole (as a call will play it): a file whose data
/// is shorter than its header says, or that does not decode, is refused here rather than at
/// the first call.
fn wav_length(path: &Path) -> Result<Duration, WavProblem> {
    crieur_media::audio::Message::load(path)
        .map(|m| m.duration())
        .map_err(WavProblem)
}

/// Why a recording cannot be used, as an input error states it: the media error, shown
/// without the path (the message names it).
#[derive(Debug)]
struct WavProblem(crieur_media::Error);

impl std::fmt::Display for WavProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            crieur_media::Error::Audio { source, .. } => source.fmt(f),
            e => e.fmt(f),
        }
    }
}

fn trunk_config(cx: &mut Ctx<'_>, base: &Path, t: &RawTrunk) -> Option<TrunkConfig> {
    let errors = cx.errors.len();
    // `sips:` (RFC 3261 §19.1): TLS to the trunk, port 5061 by default (or SRV's, RFC 3263).
    let uri = t.uri.get_ref();
    let (rest, secure) = match uri.strip_prefix("sips:") {
        Some(r) => (Some(r), true),
        None => (uri.strip_prefix("sip:"), false),
    };
    let (host, port) = match rest {
        Some(rest) if !rest.is_empty() && !rest.contains(['@', ';', '?']) => {
            // `sip:[::1]:5060`: an IPv6 host is bracketed; a trailing `]` means no port.
            match rest.rsplit_once(':').filter(|_| !rest.ends_with(']')) {
                Some((h, p)) => match p.parse::<u16>() {
                    Ok(p) if p > 0 => (h.to_owned(), p),
                    _ => {
                        cx.err(
                            t.uri.span(),
                            "trunk.uri",
                            Some(t.uri.get_ref()),
                            "expected a port from 1 to 65535".into(),
                        );
                        (String::new(), 0)
                    }
                },
                None => (rest.to_owned(), 0),
            }
        }
        _ => {
            cx.err(
                t.uri.span(),
                "trunk.uri",
                Some(t.uri.get_ref()),
                "expected sip:<host>[:<port>] or sips:<host>[:<port>], e.g. sip:trunk.example.net:5060"
                    .into(),
            );
            (String::new(), 0)
        }
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    // (An empty host with a URI error already reported is not reported again.)
    if host.is_empty() && cx.errors.len() == errors {
        cx.err(
            t.uri.span(),
            "trunk.uri",
            Some(t.uri.get_ref()),
            "expected a host before the port".into(),
        );
    }
    if t.calls_per_second
        .is_some_and(|c| !(c > 0.0 && c.is_finite()))
    {
        cx.err(
            t.uri.span(),
            "trunk.calls_per_second",
            t.calls_per_second.map(|c| c.to_string()).as_deref(),
            "expected a positive number".into(),
        );
    }
    if t.max_concurrent_calls == Some(0) {
        cx.err(
            t.uri.span(),
            "trunk.max_concurrent_calls",
            Some("0"),
            "expected at least 1".into(),
        );
    }
    let transport = match t
        .transport
        .as_ref()
        .map(|tr| tr.get_ref().to_ascii_lowercase())
    {
        None if secure => TrunkTransport::Tls,
        None => TrunkTransport::Udp,
        Some(tr) if tr == "tls" => TrunkTransport::Tls,
        Some(tr) if tr == "udp" && !secure => TrunkTransport::Udp,
        Some(tr) if tr == "tcp" && !secure => TrunkTransport::Tcp,
        Some(_) => {
            if let Some(tr) = &t.transport {
                cx.err(
                    tr.span(),
                    "trunk.transport",
                    Some(tr.get_ref()),
                    if secure {
                        "expected `tls` for a sips: trunk (RFC 3261 §26.2.2)".into()
                    } else {
                        "expected `udp`, `tcp` or `tls`".into()
                    },
                );
            }
            TrunkTransport::Udp
        }
    };
    let tls_ca_file = t.tls_ca_file.as_ref().map(|f| base.join(f.get_ref()));
    if let (Some(f), Some(path)) = (&t.tls_ca_file, &tls_ca_file) {
        if transport != TrunkTransport::Tls {
            cx.err(
                f.span(),
                "trunk.tls_ca_file",
                Some(f.get_ref()),
                "only with transport = \"tls\"".into(),
            );
        } else if std::fs::metadata(path).is_err() {
            cx.err(
                f.span(),
                "trunk.tls_ca_file",
                Some(f.get_ref()),
                "expected a readable PEM file of CA certificates".into(),
            );
        }
    }
    let tls_identity = tls_identity(cx, base, t, transport);
    // No port in the URI: the transport's default (RFC 3261 §19.1.2), unless SRV gives one.
    let port_given = port != 0;
    let port = match (port, transport) {
        (0, TrunkTransport::Tls) => 5061,
        (0, _) => 5060,
        (p, _) => p,
    };
    let dns_server =
        t.dns_server
            .as_ref()
            .and_then(|d| match d.get_ref().parse::<std::net::SocketAddr>() {
                Ok(a) if !a.ip().is_unspecified() && a.port() != 0 => Some(a),
                _ => {
                    cx.err(
                        d.span(),
                        "trunk.dns_server",
                        Some(d.get_ref()),
                        "expected <IP>:<port> of a DNS server, e.g. 192.0.2.53:53".into(),
                    );
                    None
                }
            });
    let (from_user, from_domain) = match t
        .from
        .get_ref()
        .strip_prefix("sip:")
        .and_then(|r| r.split_once('@'))
    {
        Some((u, d)) if !u.is_empty() && !d.is_empty() => (u.to_owned(), d.to_owned()),
        _ => {
            cx.err(
                t.from.span(),
                "trunk.from",
                Some(t.from.get_ref()),
                "expected sip:<caller id>@<domain>, e.g. sip:+33100000000@example.fr".into(),
            );
            (String::new(), String::new())
        }
    };
    let password = match (&t.password_env, &t.password_file) {
        (Some(_), Some(f)) => {
            cx.err(
                f.span(),
                "trunk.password_file",
                None,
                "expected either password_env or password_file, not both".into(),
            );
            None
        }
        (Some(e), None) => Some(PasswordSource::Env(e.get_ref().clone())),
        (None, Some(f)) => Some(PasswordSource::File(base.join(f.get_ref()))),
        (None, None) => None,
    };
    if password.is_some() && t.username.is_none() {
        cx.err(
            t.uri.span(),
            "trunk.username",
            None,
            "a password needs a username".into(),
        );
    }
    let breaker = breaker_config(cx, t.breaker.as_ref());
    let max_call_length =
        Duration::from_secs(t.max_call_secs.as_ref().map_or(300, |m| *m.get_ref()));
    if let Some(m) = t.max_call_secs.as_ref().filter(|m| *m.get_ref() > 4 * 3600) {
        cx.err(
            m.span(),
            "trunk.max_call_secs",
            Some(&m.get_ref().to_string()),
            "expected at most 14400 (4 hours)".into(),
        );
    }
    let local_address = t.local_address.as_ref().and_then(|a| {
        match a.get_ref().parse::<std::net::SocketAddr>() {
            // Via, Contact and SDP carry it: it must be an address the trunk can reach.
            Ok(s) if !s.ip().is_unspecified() => Some(s),
            _ => {
                cx.err(
                    a.span(),
                    "trunk.local_address",
                    Some(a.get_ref()),
                    "expected <IP>:<port> of this host, e.g. 203.0.113.5:5060 or [2001:db8::5]:5060 \
                     (not a wildcard; port 0 for any)"
                        .into(),
                );
                None
            }
        }
    });
    if let Some(p) = &t.p_asserted_identity {
        if crieur_media::signalling::p_asserted_identity(p.get_ref()).is_none() {
            cx.err(
                p.span(),
                "trunk.p_asserted_identity",
                Some(p.get_ref()),
                "expected a sip:, sips: or tel: URI, e.g. sip:+33100000000@example.fr".into(),
            );
        }
    }
    (cx.errors.len() == errors).then(|| TrunkConfig {
        uri: t.uri.get_ref().clone(),
        host,
        port,
        port_given,
        dns_server,
        from_user,
        from_domain,
        username: t.username.as_ref().map(|u| u.get_ref().clone()),
        password,
        max_call_length,
        calls_per_second: t.calls_per_second,
        max_concurrent_calls: t.max_concurrent_calls,
        symmetric_rtp: t.symmetric_rtp,
        breaker,
        local_address,
        p_asserted_identity: t.p_asserted_identity.as_ref().map(|p| p.get_ref().clone()),
        transport,
        tls_ca_file,
        tls_identity,
    })
}

/// `tls_cert_file` and `tls_key_file`: both or neither, only over TLS, each a readable PEM
/// file holding what it should (the chain and key are parsed again when the listener starts).
fn tls_identity(
    cx: &mut Ctx<'_>,
    base: &Path,
    t: &RawTrunk,
    transport: TrunkTransport,
) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = match (&t.tls_cert_file, &t.tls_key_file) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        (Some(f), None) | (None, Some(f)) => {
            cx.err(
                f.span(),
                if t.tls_cert_file.is_some() {
                    "trunk.tls_key_file"
                } else {
                    "trunk.tls_cert_file"
                },
                None,
                "tls_cert_file and tls_key_file go together".into(),
            );
            return None;
        }
    };
    if transport != TrunkTransport::Tls {
        cx.err(
            cert.span(),
            "trunk.tls_cert_file",
            Some(cert.get_ref()),
            "only with transport = \"tls\"".into(),
        );
        return None;
    }
    let mut ok = true;
    for (f, field, marker, what) in [
        (
            cert,
            "trunk.tls_cert_file",
            "-----BEGIN CERTIFICATE-----",
            "a readable PEM file of our certificate chain",
        ),
        (
            key,
            "trunk.tls_key_file",
            "PRIVATE KEY-----",
            "a readable PEM file of our private key",
        ),
    ] {
        let holds =
            std::fs::read_to_string(base.join(f.get_ref())).is_ok_and(|text| text.contains(marker));
        if !holds {
            cx.err(
                f.span(),
                field,
                Some(f.get_ref()),
                format!("expected {what}"),
            );
            ok = false;
        }
    }
    ok.then(|| (base.join(cert.get_ref()), base.join(key.get_ref())))
}
