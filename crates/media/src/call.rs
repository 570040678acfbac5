//! The per-call script, sans I/O: what to play, when the opt-out applies, the call timers,
//! and how the call ended.
//!
//! Shape: `handle_*(now, input)` then drain [`CallScript::poll_action`]; sleep until
//! [`CallScript::poll_timeout`] and call [`CallScript::handle_timeout`]. States are named after
//! what they wait for.
//!
//! | timer | starts | on expiry |
//! |---|---|---|
//! | ring timeout (≥ 15 s) | INVITE sent | CANCEL if a provisional response came (RFC 3261 §9.1 forbids it before one); the call ends `no-answer` when the INVITE's final response (487) arrives, or after a 32 s grace if none does. Without a provisional response nothing is sent: the CANCEL goes out when one arrives, else the INVITE ends by timer B (`trunk-failure`) |
//! | no response (timer B + 2 s) | INVITE sent, only while no provisional response came | `trunk-failure` (the stack's own timer B normally ends the INVITE first) |
//! | max call length | INVITE sent | BYE; ends `answered-completed` (message cut), or `opt-out-failed` if the opt-out is still not durable |
//! | opt-out durability | opt-out key heard | bounded by the max call length: the confirmation plays only once the store says the opt-out is durable; if the callee hangs up first the call still waits for it |

use std::time::{Duration, Instant};

use crate::dtmf::DtmfMethod;

/// How a call ended (shared with the store, the audit log and the planner).
pub use crieur_outcome::CallOutcome as Outcome;

/// Who hung up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupBy {
    Us,
    Callee,
    /// Nobody: the call was never answered.
    Nobody,
}

/// The end of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub outcome: Outcome,
    /// The INVITE's final SIP status, when one came.
    pub sip_status: Option<u16>,
    /// The reason phrase or a description.
    pub reason: String,
    pub hangup_by: HangupBy,
}

/// Which recording to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    Message,
    Confirmation,
    /// The voicemail message (answering-machine detection, `voicemail-drop`).
    Voicemail,
}

/// What answering-machine detection does with a `machine` verdict (`[amd] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AmdMode {
    /// No detection.
    #[default]
    Off,
    /// Classify only: the verdict is recorded, the call goes on as without it.
    Detect,
    /// Stop the message, wait for the beep (or the greeting's end), play the voicemail
    /// message from its start, hang up: `machine-message-left`.
    VoicemailDrop,
    /// Stop the message and hang up: `machine-hung-up`.
    HangUpOnMachine,
}

impl AmdMode {
    /// The name in the campaign file and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            AmdMode::Off => "off",
            AmdMode::Detect => "detect",
            AmdMode::VoicemailDrop => "voicemail-drop",
            AmdMode::HangUpOnMachine => "hang-up-on-machine",
        }
    }

    /// Reads a mode's name.
    pub fn parse(name: &str) -> Option<AmdMode> {
        [
            AmdMode::Off,
            AmdMode::Detect,
            AmdMode::VoicemailDrop,
            AmdMode::HangUpOnMachine,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
}

/// What the I/O layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send CANCEL for the pending INVITE (only once a provisional response came, or — on
    /// shutdown — deferred by the stack until one does, RFC 3261 §9.1).
    Cancel,
    /// Send BYE in the dialog, with a `Reason` header (RFC 3326) when there is one. The call
    /// ends when the BYE leaves ([`CallScript::handle_bye_sent`]), not when it is answered.
    Bye { reason: Option<SipReason> },
    /// Something for the call's timeline; nothing to do.
    Note(&'static str),
    /// Start playing a prompt now (stopping any other).
    Play(Prompt),
    /// Stop playing.
    StopPlayback,
    /// Record the opt-out durably, then call [`CallScript::handle_opt_out_durable`].
    RecordOptOut { digit: char, method: DtmfMethod },
    /// A key that is not the opt-out key (reported for later use, e.g. "press 1 to repeat").
    KeyPressed { digit: char, method: DtmfMethod },
    /// The call is over.
    Finished(Ending),
}

/// A `Reason` header value for a BYE (RFC 3326 §2): `SIP;cause=<code>;text="<text>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipReason {
    pub cause: u16,
    pub text: String,
}

impl std::fmt::Display for SipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `text` is a quoted-string (RFC 3261 §25.1): `"` and `\` are escaped, control
        // characters (not allowed) are dropped.
        write!(f, "SIP;cause={};text=\"", self.cause)?;
        for c in self.text.chars().filter(|c| !c.is_control()) {
            if c == '"' || c == '\\' {
                write!(f, "\\")?;
            }
            write!(f, "{c}")?;
        }
        write!(f, "\"")
    }
}

/// Call parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptConfig {
    pub ring_timeout: Duration,
    pub max_call_length: Duration,
    pub opt_out_key: char,
    /// Optional "not interested" key (a refusal without opt-out).
    pub not_interested_key: Option<char>,
    /// What a `machine` verdict does ([`CallScript::handle_machine`]).
    pub amd: AmdMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    AwaitingAnswer {
        /// A provisional response (1xx, 100 included) came: CANCEL is allowed (RFC 3261 §9.1).
        provisional: bool,
        /// The ring timeout passed before any provisional response: CANCEL on the first one.
        ring_expired: bool,
        cancel_sent: Option<Instant>,
    },
    Playing,
    /// A machine (`voicemail-drop`): the message stopped, waiting for the beep or the
    /// greeting's end.
    AwaitingDropPoint,
    PlayingVoicemail,
    AwaitingOptOutDurable {
        callee_gone: bool,
    },
    Confirming,
    AwaitingByeSent,
    Ended,
}

/// Grace for the final response after CANCEL (64 × T1, the INVITE transaction's own limit).
const CANCEL_GRACE: Duration = Duration::from_secs(32);
/// Timer B (64 × T1, RFC 3261 §17.1.1.2): an INVITE with no response at all fails then.
pub const TIMER_B: Duration = Duration::from_secs(32);
/// How long past timer B the script waits for the stack to report it before ending the call
/// itself (a bound that does not depend on the stack).
const TIMER_B_SLACK: Duration = Duration::from_secs(2);

/// One call's script.
#[derive(Debug)]
pub struct CallScript {
    cfg: ScriptConfig,
    state: State,
    invited: Instant,
    answered: Option<Instant>,
    first_audio: Option<Instant>,
    actions: std::collections::VecDeque<Action>,
    pending_end: Option<Ending>,
    shutdown_requested: bool,
}

impl CallScript {
    /// A script for a call whose INVITE is sent at `now`.
    pub fn new(now: Instant, cfg: ScriptConfig) -> Self {
        CallScript {
            cfg,
            state: State::AwaitingAnswer {
                provisional: false,
                ring_expired: false,
                cancel_sent: None,
            },
            invited: now,
            answered: None,
            first_audio: None,
            actions: Default::default(),
            pending_end: None,
            shutdown_requested: false,
        }
    }

    /// The next action to perform.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether the call has ended.
    pub fn is_over(&self) -> bool {
        self.state == State::Ended
    }

    /// Answer → first audio packet, once both happened.
    pub fn answer_to_first_audio(&self) -> Option<Duration> {
        Some(self.first_audio?.saturating_duration_since(self.answered?))
    }

    /// Whether the call is still waiting for its answer with a CANCEL sent (an answer now
    /// crossed it: nothing is played, the call ends at it).
    pub fn cancel_sent(&self) -> bool {
        matches!(
            self.state,
            State::AwaitingAnswer {
                cancel_sent: Some(_),
                ..
            }
        )
    }

    /// Whether a provisional response to the INVITE came (so CANCEL may be sent).
    pub fn provisional_received(&self) -> bool {
        !matches!(
            self.state,
            State::AwaitingAnswer {
                provisional: false,
                ..
            }
        )
    }

    /// When [`CallScript::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let max = self.invited + self.cfg.max_call_length;
        match &self.state {
            State::AwaitingAnswer {
                cancel_sent: Some(t),
                ..
            } => Some(*t + CANCEL_GRACE),
            State::AwaitingAnswer {
                ring_expired: false,
                ..
            } => Some((self.invited + self.cfg.ring_timeout).min(max)),
            // The ring timeout passed with no provisional response: waiting for one (then
            // CANCEL) or for timer B.
            State::AwaitingAnswer { .. } => Some(self.invited + TIMER_B + TIMER_B_SLACK),
            State::Playing
            | State::Confirming
            | State::AwaitingDropPoint
            | State::PlayingVoicemail
            | State::AwaitingOptOutDurable { .. } => Some(max),
            _ => None,
        }
    }

    fn finish(
        &mut self,
        outcome: Outcome,
        sip_status: Option<u16>,
        reason: impl Into<String>,
        hangup_by: HangupBy,
    ) {
        self.state = State::Ended;
        self.actions.push_back(Action::Finished(Ending {
            outcome,
            sip_status,
            reason: reason.into(),
            hangup_by,
        }));
    }

    fn hang_up(&mut self, outcome: Outcome, reason: &str) {
        self.hang_up_with(outcome, reason, None);
    }

    fn hang_up_with(&mut self, outcome: Outcome, reason: &str, sip_reason: Option<SipReason>) {
        self.actions.push_back(Action::StopPlayback);
        self.actions.push_back(Action::Bye { reason: sip_reason });
        self.pending_end = Some(Ending {
            outcome,
            sip_status: Some(200),
            reason: reason.into(),
            hangup_by: HangupBy::Us,
        });
        self.state = State::AwaitingByeSent;
    }

    /// Timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.poll_timeout() else {
            return;
        };
        if now < due {
            return;
        }
        match self.state {
            State::AwaitingAnswer {
                cancel_sent: Some(_),
                ..
            } => {
                self.finish(
                    Outcome::NoAnswer,
                    None,
                    "no final response after CANCEL",
                    HangupBy::Nobody,
                );
            }
            State::AwaitingAnswer {
                provisional: true, ..
            } => {
                self.actions.push_back(Action::Note("ring timeout"));
                self.actions.push_back(Action::Cancel);
                self.state = State::AwaitingAnswer {
                    provisional: true,
                    ring_expired: true,
                    cancel_sent: Some(now),
                };
            }
            State::AwaitingAnswer {
                provisional: false,
                ring_expired: false,
                ..
            } => {
                self.actions.push_back(Action::Note(
                    "ring timeout with no provisional response: no CANCEL (RFC 3261 §9.1); \
                     waiting for one or for timer B",
                ));
                self.state = State::AwaitingAnswer {
                    provisional: false,
                    ring_expired: true,
                    cancel_sent: None,
                };
            }
            State::AwaitingAnswer { .. } => self.finish(
                Outcome::TrunkFailure,
                None,
                "timer B: no response to the INVITE",
                HangupBy::Nobody,
            ),
            State::AwaitingOptOutDurable { .. } => {
                self.handle_opt_out_failed(
                    now,
                    "the opt-out was not durable within the call's maximum length",
                );
            }
            State::AwaitingDropPoint | State::PlayingVoicemail => self.hang_up(
                Outcome::MachineHungUp,
                "maximum call length reached before the voicemail message ended",
            ),
            State::Playing | State::Confirming => {
                let outcome = if self.state == State::Confirming {
                    Outcome::AnsweredOptedOut
                } else {
                    Outcome::AnsweredCompleted
                };
                self.hang_up(outcome, "maximum call length reached");
            }
            _ => {}
        }
    }

    /// A provisional response (1xx, 100 Trying included) to the INVITE. If the ring timeout
    /// already passed, the CANCEL it held back goes now.
    pub fn handle_provisional(&mut self, now: Instant) {
        if let State::AwaitingAnswer {
            ring_expired,
            cancel_sent,
            ..
        } = self.state
        {
            let cancel_now = ring_expired && cancel_sent.is_none();
            if cancel_now {
                self.actions
                    .push_back(Action::Note("provisional response after the ring timeout"));
                self.actions.push_back(Action::Cancel);
            }
            self.state = State::AwaitingAnswer {
                provisional: true,
                ring_expired,
                cancel_sent: if cancel_now { Some(now) } else { cancel_sent },
            };
        }
    }

    /// The INVITE transaction timed out (timer B, RFC 3261 §17.1.1.2): no final response.
    pub fn handle_timer_b(&mut self, _now: Instant) {
        if let State::AwaitingAnswer {
            provisional,
            cancel_sent,
            ..
        } = self.state
        {
            let (outcome, why) = match (provisional, cancel_sent) {
                (false, _) => (Outcome::TrunkFailure, "timer B: no response to the INVITE"),
                (true, Some(_)) => (Outcome::NoAnswer, "timer B: no final response after CANCEL"),
                (true, None) => (
                    Outcome::TrunkFailure,
                    "timer B: no final response after a provisional one",
                ),
            };
            self.finish(outcome, None, why, HangupBy::Nobody);
        }
    }

    /// A final non-2xx response to the INVITE.
    pub fn handle_rejected(&mut self, _now: Instant, code: u16, reason: &str) {
        if let State::AwaitingAnswer { cancel_sent, .. } = self.state {
            self.finish(
                Outcome::of_status(code, cancel_sent.is_some()),
                Some(code),
                reason,
                HangupBy::Nobody,
            );
        }
    }

    /// A final refusal of the INVITE that carried our credentials (403 after a 401/407
    /// challenge): the trunk refuses them, `auth-failed` whatever the code.
    pub fn handle_auth_refused(&mut self, _now: Instant, code: u16, reason: &str) {
        if let State::AwaitingAnswer { .. } = self.state {
            self.finish(Outcome::AuthFailed, Some(code), reason, HangupBy::Nobody);
        }
    }

    /// The INVITE failed without a response (timer B, ICMP, transport error).
    pub fn handle_transport_error(&mut self, _now: Instant, why: &str) {
        if matches!(self.state, State::AwaitingAnswer { .. }) {
            self.finish(Outcome::TrunkFailure, None, why, HangupBy::Nobody);
        }
    }

    /// 200 OK. `codec_ok`: whether the answer named a codec we offered; if not, the call is
    /// hung up at once (BYE with `Reason: SIP;cause=488`, RFC 3326) as `codec-mismatch`, and
    /// is not counted as answered.
    pub fn handle_answered(&mut self, now: Instant, codec_ok: bool) {
        let State::AwaitingAnswer { cancel_sent, .. } = self.state else {
            return;
        };
        if cancel_sent.is_some() {
            // A 200 that crossed our CANCEL: the SIP stack ACKs and BYEs it; nothing plays.
            self.finish(
                Outcome::NoAnswer,
                Some(200),
                "answered after the ring timeout's CANCEL",
                HangupBy::Us,
            );
            return;
        }
        if codec_ok {
            self.answered = Some(now);
            self.state = State::Playing;
            self.actions.push_back(Action::Play(Prompt::Message));
        } else {
            let why = "no common codec in the answer";
            self.hang_up_with(
                Outcome::CodecMismatch,
                why,
                Some(SipReason {
                    cause: 488,
                    text: why.into(),
                }),
            );
        }
    }

    /// 200 OK whose answer refuses our audio (`a=sendonly` / `a=inactive`: the callee will not
    /// receive): nothing is played; the call is hung up at once as `media-refused`.
    pub fn handle_media_refused(&mut self, now: Instant, why: &str) {
        let State::AwaitingAnswer {
            cancel_sent: None, ..
        } = self.state
        else {
            // A 200 crossing our CANCEL: as any answer after the ring timeout.
            self.handle_answered(now, true);
            return;
        };
        // Not answered as far as the message goes (as for a codec mismatch): nothing plays.
        self.hang_up_with(
            Outcome::MediaRefused,
            why,
            Some(SipReason {
                cause: 488,
                text: "the answer does not receive audio".into(),
            }),
        );
    }

    /// The first RTP packet of the message left.
    pub fn handle_first_audio(&mut self, now: Instant) {
        self.first_audio.get_or_insert(now);
    }

    /// Answering-machine detection concluded `machine` (a later beep may conclude it after a
    /// `human` verdict). Only while the message plays: `hang-up-on-machine` hangs up,
    /// `voicemail-drop` stops the message and waits for [`CallScript::handle_drop_point`];
    /// `detect` and `off` change nothing.
    pub fn handle_machine(&mut self, _now: Instant) {
        if self.state != State::Playing {
            return;
        }
        match self.cfg.amd {
            AmdMode::HangUpOnMachine => {
                self.hang_up(Outcome::MachineHungUp, "answering machine: hung up")
            }
            AmdMode::VoicemailDrop => {
                self.actions.push_back(Action::StopPlayback);
                self.actions.push_back(Action::Note(
                    "answering machine: message stopped, waiting for the beep",
                ));
                self.state = State::AwaitingDropPoint;
            }
            AmdMode::Detect | AmdMode::Off => {}
        }
    }

    /// A Special Information Tone: the network answered with an announcement, not the callee
    /// (`temporary`: reorder or no circuit). Whatever was playing stops, no voicemail message
    /// is left, and the call hangs up as `intercepted` / `intercepted-congestion`. Every AMD
    /// mode but `off` (where there is no detector) acts on it.
    pub fn handle_intercepted(&mut self, _now: Instant, temporary: bool, why: &str) {
        if !matches!(
            self.state,
            State::Playing | State::AwaitingDropPoint | State::PlayingVoicemail
        ) || self.cfg.amd == AmdMode::Off
        {
            return;
        }
        let outcome = if temporary {
            Outcome::InterceptedCongestion
        } else {
            Outcome::Intercepted
        };
        self.hang_up(outcome, why);
    }

    /// The beep ended (or the greeting did without one): the voicemail message starts. A
    /// later drop point while it plays (a second beep within the detector's restart window:
    /// the recording started after it) plays it again from its start.
    pub fn handle_drop_point(&mut self, _now: Instant) {
        match self.state {
            State::AwaitingDropPoint => {
                self.state = State::PlayingVoicemail;
                self.actions.push_back(Action::Play(Prompt::Voicemail));
            }
            State::PlayingVoicemail => {
                self.actions.push_back(Action::Note(
                    "answering machine: a later beep, the voicemail message restarts",
                ));
                self.actions.push_back(Action::Play(Prompt::Voicemail));
            }
            _ => {}
        }
    }

    /// A key press, from any method. The opt-out key works during the voicemail message and
    /// the wait for the beep too: a person wrongly taken for a machine can still opt out.
    pub fn handle_key(&mut self, _now: Instant, digit: char, method: DtmfMethod) {
        match self.state {
            State::Playing | State::AwaitingDropPoint | State::PlayingVoicemail
                if digit == self.cfg.opt_out_key =>
            {
                self.actions.push_back(Action::StopPlayback);
                self.actions
                    .push_back(Action::RecordOptOut { digit, method });
                self.state = State::AwaitingOptOutDurable { callee_gone: false };
            }
            State::Playing if Some(digit) == self.cfg.not_interested_key => {
                self.actions.push_back(Action::KeyPressed { digit, method });
                self.hang_up(Outcome::AnsweredNotInterested, "the not-interested key");
            }
            State::Playing | State::AwaitingDropPoint | State::PlayingVoicemail => {
                self.actions.push_back(Action::KeyPressed { digit, method })
            }
            _ => {}
        }
    }

    /// The store confirmed the opt-out is durable.
    pub fn handle_opt_out_durable(&mut self, _now: Instant) {
        if let State::AwaitingOptOutDurable { callee_gone } = self.state {
            if callee_gone {
                self.finish(
                    Outcome::AnsweredOptedOut,
                    Some(200),
                    "callee hung up during the opt-out",
                    HangupBy::Callee,
                );
            } else if self.shutdown_requested {
                self.hang_up(
                    Outcome::AnsweredOptedOut,
                    "opt-out recorded; shutdown before the confirmation",
                );
            } else {
                self.state = State::Confirming;
                self.actions.push_back(Action::Play(Prompt::Confirmation));
            }
        }
    }

    /// The opt-out could not be made durable: no confirmation; hang up.
    pub fn handle_opt_out_failed(&mut self, _now: Instant, why: &str) {
        if let State::AwaitingOptOutDurable { callee_gone } = self.state {
            if callee_gone {
                self.finish(Outcome::OptOutFailed, Some(200), why, HangupBy::Callee);
            } else {
                self.hang_up(Outcome::OptOutFailed, why);
            }
        }
    }

    /// The dialog ended without the callee's BYE (a transport or session failure).
    pub fn handle_dialog_gone(&mut self, now: Instant, why: &str) {
        match self.state {
            State::Playing
            | State::Confirming
            | State::AwaitingDropPoint
            | State::PlayingVoicemail => {
                self.actions.push_back(Action::StopPlayback);
                self.finish(Outcome::TrunkFailure, None, why, HangupBy::Nobody);
            }
            State::AwaitingOptOutDurable { .. } => {
                self.state = State::AwaitingOptOutDurable { callee_gone: true }
            }
            State::AwaitingByeSent => self.handle_bye_sent(now),
            _ => {}
        }
    }

    /// A prompt played to its end.
    pub fn handle_prompt_done(&mut self, _now: Instant, prompt: Prompt) {
        match (&self.state, prompt) {
            (State::Playing, Prompt::Message) => {
                self.hang_up(Outcome::AnsweredCompleted, "message played")
            }
            (State::Confirming, Prompt::Confirmation) => {
                self.hang_up(Outcome::AnsweredOptedOut, "opt-out confirmed")
            }
            (State::PlayingVoicemail, Prompt::Voicemail) => {
                self.hang_up(Outcome::MachineMessageLeft, "voicemail message left")
            }
            _ => {}
        }
    }

    /// Our BYE left: the call is over. (Its transaction keeps retransmitting on its own; a
    /// vanished peer does not hold the call's end for the 32 s of timer F.)
    pub fn handle_bye_sent(&mut self, _now: Instant) {
        if self.state == State::AwaitingByeSent {
            if let Some(e) = self.pending_end.take() {
                self.state = State::Ended;
                self.actions.push_back(Action::Finished(e));
            }
        }
    }

    /// The callee sent BYE.
    pub fn handle_remote_bye(&mut self, _now: Instant) {
        match self.state {
            State::Playing => {
                self.actions.push_back(Action::StopPlayback);
                self.finish(
                    Outcome::HungUpMidMessage,
                    Some(200),
                    "callee hung up during the message",
                    HangupBy::Callee,
                );
            }
            State::AwaitingDropPoint | State::PlayingVoicemail => {
                self.actions.push_back(Action::StopPlayback);
                self.finish(
                    Outcome::MachineHungUp,
                    Some(200),
                    if self.state == State::AwaitingDropPoint {
                        "the machine hung up before the voicemail message"
                    } else {
                        "the machine hung up during the voicemail message"
                    },
                    HangupBy::Callee,
                );
            }
            State::AwaitingOptOutDurable { .. } => {
                // The opt-out is still being recorded; the call ends when it is durable.
                self.state = State::AwaitingOptOutDurable { callee_gone: true };
            }
            State::Confirming => {
                self.actions.push_back(Action::StopPlayback);
                self.finish(
                    Outcome::AnsweredOptedOut,
                    Some(200),
                    "callee hung up during the confirmation",
                    HangupBy::Callee,
                );
            }
            State::AwaitingByeSent => {
                if let Some(e) = self.pending_end.take() {
                    self.state = State::Ended;
                    self.actions.push_back(Action::Finished(e));
                }
            }
            _ => {}
        }
    }

    /// Local shutdown: end the call now.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        match self.state {
            State::AwaitingAnswer {
                cancel_sent: None, ..
            } => {
                // Before any provisional response the stack holds the CANCEL until one comes
                // (RFC 3261 §9.1): the phone must not go on ringing with nobody calling.
                self.actions.push_back(Action::Cancel);
                self.finish(
                    Outcome::LocalShutdown,
                    None,
                    "shutdown before answer",
                    HangupBy::Us,
                );
            }
            State::AwaitingAnswer { .. } => {
                self.finish(Outcome::LocalShutdown, None, "shutdown", HangupBy::Us)
            }
            State::Playing
            | State::Confirming
            | State::AwaitingDropPoint
            | State::PlayingVoicemail => self.hang_up(Outcome::LocalShutdown, "shutdown"),
            // The opt-out in progress is finished first (see handle_opt_out_durable).
            State::AwaitingOptOutDurable { .. } => self.shutdown_requested = true,
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // an arbitrary origin for the fake clock
mod tests {
    use super::*;

    fn cfg() -> ScriptConfig {
        ScriptConfig {
            ring_timeout: Duration::from_secs(20),
            max_call_length: Duration::from_secs(120),
            opt_out_key: '9',
            not_interested_key: Some('2'),
            amd: AmdMode::Off,
        }
    }

    fn amd(mode: AmdMode) -> (Instant, CallScript) {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, ScriptConfig { amd: mode, ..cfg() });
        s.handle_answered(t0, true);
        assert_eq!(drain(&mut s), vec![Action::Play(Prompt::Message)]);
        (t0, s)
    }

    #[test]
    fn voicemail_drop_stops_waits_plays_and_hangs_up() {
        let (t0, mut s) = amd(AmdMode::VoicemailDrop);
        // A drop point before any machine verdict means nothing.
        s.handle_drop_point(t0);
        assert!(drain(&mut s).is_empty());
        s.handle_machine(t0 + Duration::from_secs(3));
        let a = drain(&mut s);
        assert_eq!(a[0], Action::StopPlayback, "{a:?}");
        assert_eq!(a.len(), 2);
        // The message is not "done" any more: its end does not hang up.
        s.handle_prompt_done(t0, Prompt::Message);
        assert!(drain(&mut s).is_empty());
        s.handle_drop_point(t0 + Duration::from_secs(8));
        assert_eq!(drain(&mut s), vec![Action::Play(Prompt::Voicemail)]);
        // A second beep: the voicemail message starts again (the playback is replaced).
        s.handle_drop_point(t0 + Duration::from_millis(8600));
        let a = drain(&mut s);
        assert_eq!(a.last(), Some(&Action::Play(Prompt::Voicemail)), "{a:?}");
        assert_eq!(a.len(), 2, "{a:?}");
        s.handle_prompt_done(t0 + Duration::from_secs(30), Prompt::Voicemail);
        assert_eq!(
            drain(&mut s),
            vec![Action::StopPlayback, Action::Bye { reason: None }]
        );
        s.handle_bye_sent(t0 + Duration::from_secs(30));
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::MachineMessageLeft));
    }

    #[test]
    fn machine_hanging_up_during_the_voicemail_is_machine_hung_up() {
        let (t0, mut s) = amd(AmdMode::VoicemailDrop);
        s.handle_machine(t0);
        s.handle_drop_point(t0);
        drain(&mut s);
        s.handle_remote_bye(t0);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::MachineHungUp));
    }

    #[test]
    fn hang_up_on_machine_and_detect_only() {
        let (t0, mut s) = amd(AmdMode::HangUpOnMachine);
        s.handle_machine(t0);
        assert_eq!(
            drain(&mut s),
            vec![Action::StopPlayback, Action::Bye { reason: None }]
        );
        s.handle_bye_sent(t0);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::MachineHungUp));
        for mode in [AmdMode::Detect, AmdMode::Off] {
            let (t0, mut s) = amd(mode);
            s.handle_machine(t0);
            s.handle_drop_point(t0);
            assert!(drain(&mut s).is_empty(), "{mode:?}");
            s.handle_prompt_done(t0, Prompt::Message);
            s.handle_bye_sent(t0);
            assert_eq!(ended(&drain(&mut s)), Some(Outcome::AnsweredCompleted));
        }
    }

    #[test]
    fn a_sit_hangs_up_intercepted_in_every_mode_but_off() {
        for mode in [
            AmdMode::Detect,
            AmdMode::VoicemailDrop,
            AmdMode::HangUpOnMachine,
        ] {
            for (temporary, outcome) in [
                (false, Outcome::Intercepted),
                (true, Outcome::InterceptedCongestion),
            ] {
                let (t0, mut s) = amd(mode);
                s.handle_intercepted(t0, temporary, "SIT");
                assert_eq!(
                    drain(&mut s),
                    vec![Action::StopPlayback, Action::Bye { reason: None }],
                    "{mode:?}"
                );
                // A drop point after it changes nothing: no voicemail message.
                s.handle_drop_point(t0);
                assert!(drain(&mut s).is_empty());
                s.handle_bye_sent(t0);
                assert_eq!(ended(&drain(&mut s)), Some(outcome), "{mode:?}");
            }
        }
        // While waiting for the beep (the third tone taken for a machine's first).
        let (t0, mut s) = amd(AmdMode::VoicemailDrop);
        s.handle_machine(t0);
        drain(&mut s);
        s.handle_intercepted(t0, false, "SIT");
        assert!(drain(&mut s).contains(&Action::Bye { reason: None }));
        s.handle_bye_sent(t0);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::Intercepted));
        let (t0, mut s) = amd(AmdMode::Off);
        s.handle_intercepted(t0, false, "SIT");
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn opt_out_still_works_while_waiting_for_the_beep() {
        let (t0, mut s) = amd(AmdMode::VoicemailDrop);
        s.handle_machine(t0);
        drain(&mut s);
        s.handle_key(t0, '9', DtmfMethod::Rfc4733);
        assert!(drain(&mut s).contains(&Action::RecordOptOut {
            digit: '9',
            method: DtmfMethod::Rfc4733
        }));
        s.handle_opt_out_durable(t0);
        assert_eq!(drain(&mut s), vec![Action::Play(Prompt::Confirmation)]);
    }

    #[test]
    fn amd_mode_names_round_trip() {
        for m in [
            AmdMode::Off,
            AmdMode::Detect,
            AmdMode::VoicemailDrop,
            AmdMode::HangUpOnMachine,
        ] {
            assert_eq!(AmdMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(AmdMode::parse("voicemail"), None);
    }

    fn drain(s: &mut CallScript) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    fn ended(actions: &[Action]) -> Option<Outcome> {
        actions.iter().find_map(|a| match a {
            Action::Finished(e) => Some(e.outcome),
            _ => None,
        })
    }

    #[test]
    fn answered_and_completed() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0 + Duration::from_secs(3), true);
        assert_eq!(drain(&mut s), vec![Action::Play(Prompt::Message)]);
        s.handle_first_audio(t0 + Duration::from_millis(3002));
        assert_eq!(s.answer_to_first_audio(), Some(Duration::from_millis(2)));
        s.handle_key(t0 + Duration::from_secs(4), '1', DtmfMethod::SipInfo);
        assert_eq!(
            drain(&mut s),
            vec![Action::KeyPressed {
                digit: '1',
                method: DtmfMethod::SipInfo
            }]
        );
        s.handle_prompt_done(t0 + Duration::from_secs(20), Prompt::Message);
        assert_eq!(
            drain(&mut s),
            vec![Action::StopPlayback, Action::Bye { reason: None }]
        );
        s.handle_bye_sent(t0 + Duration::from_secs(20));
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::AnsweredCompleted));
        assert!(s.is_over());
    }

    #[test]
    fn opt_out_confirms_only_after_durable() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, true);
        drain(&mut s);
        s.handle_key(t0, '9', DtmfMethod::Rfc4733);
        assert_eq!(
            drain(&mut s),
            vec![
                Action::StopPlayback,
                Action::RecordOptOut {
                    digit: '9',
                    method: DtmfMethod::Rfc4733
                }
            ]
        );
        // Nothing plays until the store says the opt-out is durable; more 9s are ignored.
        s.handle_key(t0, '9', DtmfMethod::InBand);
        s.handle_timeout(t0 + Duration::from_secs(100));
        assert!(drain(&mut s).is_empty());
        s.handle_opt_out_durable(t0);
        assert_eq!(drain(&mut s), vec![Action::Play(Prompt::Confirmation)]);
        s.handle_prompt_done(t0, Prompt::Confirmation);
        s.handle_remote_bye(t0); // the callee's BYE crossing ours
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::AnsweredOptedOut));
    }

    #[test]
    fn hang_up_during_opt_out_still_waits_for_durability() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, true);
        s.handle_key(t0, '9', DtmfMethod::SipInfo);
        drain(&mut s);
        s.handle_remote_bye(t0);
        assert!(drain(&mut s).is_empty());
        s.handle_opt_out_durable(t0);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::AnsweredOptedOut));
    }

    #[test]
    fn not_interested_key_hangs_up_as_a_refusal_and_other_keys_do_not() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, true);
        drain(&mut s);
        s.handle_key(t0, '5', DtmfMethod::Rfc4733);
        assert_eq!(
            drain(&mut s),
            vec![Action::KeyPressed {
                digit: '5',
                method: DtmfMethod::Rfc4733
            }]
        );
        s.handle_key(t0, '2', DtmfMethod::Rfc4733);
        let a = drain(&mut s);
        assert!(a.contains(&Action::Bye { reason: None }), "{a:?}");
        assert!(!a.iter().any(|x| matches!(x, Action::RecordOptOut { .. })));
        s.handle_bye_sent(t0);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::AnsweredNotInterested));
    }

    #[test]
    fn ring_timeout_cancels_then_487_is_no_answer() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(20)));
        s.handle_provisional(t0 + Duration::from_secs(1));
        s.handle_timeout(t0 + Duration::from_secs(19));
        assert!(drain(&mut s).is_empty());
        s.handle_timeout(t0 + Duration::from_secs(20));
        assert_eq!(
            drain(&mut s),
            vec![Action::Note("ring timeout"), Action::Cancel]
        );
        s.handle_rejected(t0 + Duration::from_secs(20), 487, "Request Terminated");
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::NoAnswer));
    }

    #[test]
    fn ring_timeout_without_provisional_sends_no_cancel_and_ends_by_timer_b() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_timeout(t0 + Duration::from_secs(20));
        let a = drain(&mut s);
        assert!(!a.contains(&Action::Cancel), "{a:?}");
        assert!(!s.provisional_received());
        // The script's own bound is past timer B: the stack reports timer B first.
        assert_eq!(s.poll_timeout(), Some(t0 + TIMER_B + TIMER_B_SLACK));
        s.handle_timer_b(t0 + TIMER_B);
        let a = drain(&mut s);
        assert!(!a.contains(&Action::Cancel), "{a:?}");
        let e = a.iter().find_map(|a| match a {
            Action::Finished(e) => Some(e.clone()),
            _ => None,
        });
        assert_eq!(e.as_ref().map(|e| e.outcome), Some(Outcome::TrunkFailure));
        assert!(e.is_some_and(|e| e.reason.contains("timer B")));

        // Without the stack's report, the script's bound ends it the same way.
        let mut s = CallScript::new(t0, cfg());
        s.handle_timeout(t0 + Duration::from_secs(20));
        drain(&mut s);
        s.handle_timeout(t0 + TIMER_B + TIMER_B_SLACK);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::TrunkFailure));
    }

    #[test]
    fn a_provisional_after_the_ring_timeout_releases_the_cancel() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_timeout(t0 + Duration::from_secs(20));
        drain(&mut s);
        s.handle_provisional(t0 + Duration::from_secs(25));
        assert!(s.provisional_received());
        let a = drain(&mut s);
        assert_eq!(a.last(), Some(&Action::Cancel), "{a:?}");
        // Only once.
        s.handle_provisional(t0 + Duration::from_secs(26));
        assert!(drain(&mut s).is_empty());
        s.handle_rejected(t0 + Duration::from_secs(26), 487, "Request Terminated");
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::NoAnswer));

        // A provisional before the ring timeout: CANCEL at the ring timeout.
        let mut s = CallScript::new(t0, cfg());
        s.handle_provisional(t0 + Duration::from_secs(1));
        assert!(drain(&mut s).is_empty());
        s.handle_timeout(t0 + Duration::from_secs(20));
        assert_eq!(drain(&mut s).last(), Some(&Action::Cancel));
        s.handle_timer_b(t0 + Duration::from_secs(52));
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::NoAnswer));
    }

    #[test]
    fn the_call_ends_when_our_bye_leaves() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, true);
        s.handle_prompt_done(t0 + Duration::from_secs(10), Prompt::Message);
        drain(&mut s);
        assert!(!s.is_over());
        assert_eq!(s.poll_timeout(), None);
        s.handle_bye_sent(t0 + Duration::from_secs(10));
        assert!(s.is_over());
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::AnsweredCompleted));
    }

    #[test]
    fn reason_header_value_is_a_quoted_string() {
        let r = SipReason {
            cause: 488,
            text: "no \"common\" codec\\\n".into(),
        };
        assert_eq!(
            r.to_string(),
            r#"SIP;cause=488;text="no \"common\" codec\\""#
        );
    }

    #[test]
    fn opt_out_failure_hangs_up_without_confirmation() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, true);
        s.handle_key(t0, '9', DtmfMethod::Rfc4733);
        drain(&mut s);
        s.handle_opt_out_failed(t0, "disk full");
        assert_eq!(
            drain(&mut s),
            vec![Action::StopPlayback, Action::Bye { reason: None }]
        );
        s.handle_bye_sent(t0);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::OptOutFailed));
        // A hook that never returns is bounded by the max call length.
        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, true);
        s.handle_key(t0, '9', DtmfMethod::Rfc4733);
        drain(&mut s);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(120)));
        s.handle_timeout(t0 + Duration::from_secs(120));
        assert_eq!(
            drain(&mut s),
            vec![Action::StopPlayback, Action::Bye { reason: None }]
        );
    }

    #[test]
    fn answer_crossing_cancel_is_no_answer_and_shutdown_waits_for_opt_out() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_provisional(t0);
        s.handle_timeout(t0 + Duration::from_secs(20));
        drain(&mut s);
        s.handle_answered(t0 + Duration::from_secs(20), true);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::NoAnswer));

        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, true);
        s.handle_key(t0, '9', DtmfMethod::SipInfo);
        drain(&mut s);
        s.handle_shutdown(t0);
        assert!(drain(&mut s).is_empty());
        s.handle_opt_out_durable(t0);
        assert_eq!(
            drain(&mut s),
            vec![Action::StopPlayback, Action::Bye { reason: None }]
        );
        s.handle_bye_sent(t0);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::AnsweredOptedOut));

        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, true);
        drain(&mut s);
        s.handle_dialog_gone(t0, "transport timeout");
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::TrunkFailure));
    }

    #[test]
    fn final_responses_classify() {
        for (code, want) in [
            (486, Outcome::Busy),
            (600, Outcome::Busy),
            (480, Outcome::NoAnswer),
            (404, Outcome::NotFound),
            (403, Outcome::Rejected),
            (603, Outcome::Rejected),
            (503, Outcome::TrunkFailure),
            (407, Outcome::AuthFailed),
            (488, Outcome::CodecMismatch),
            (487, Outcome::Rejected),
        ] {
            let t0 = Instant::now();
            let mut s = CallScript::new(t0, cfg());
            s.handle_rejected(t0, code, "x");
            assert_eq!(ended(&drain(&mut s)), Some(want), "{code}");
        }
    }

    #[test]
    fn a_403_to_the_credentialed_invite_is_an_auth_failure() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_auth_refused(t0, 403, "Forbidden");
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::AuthFailed));
        // Without credentials, a 403 is the callee's (or the network's) refusal.
        let mut s = CallScript::new(t0, cfg());
        s.handle_rejected(t0, 403, "Forbidden");
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::Rejected));
    }

    #[test]
    fn callee_bye_mid_message_and_codec_mismatch_and_max_length() {
        let t0 = Instant::now();
        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, true);
        s.handle_remote_bye(t0);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::HungUpMidMessage));

        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, false);
        assert_eq!(
            drain(&mut s),
            vec![
                Action::StopPlayback,
                Action::Bye {
                    reason: Some(SipReason {
                        cause: 488,
                        text: "no common codec in the answer".into()
                    })
                }
            ]
        );
        assert_eq!(s.answer_to_first_audio(), None);
        s.handle_bye_sent(t0);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::CodecMismatch));

        // An answer that will not receive: nothing plays, BYE, media-refused.
        let mut s = CallScript::new(t0, cfg());
        s.handle_media_refused(t0, "a=inactive");
        let a = drain(&mut s);
        assert!(!a.iter().any(|x| matches!(x, Action::Play(_))), "{a:?}");
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Bye { reason: Some(r) } if r.cause == 488)),
            "{a:?}"
        );
        assert_eq!(s.answer_to_first_audio(), None);
        s.handle_bye_sent(t0);
        assert_eq!(ended(&drain(&mut s)), Some(Outcome::MediaRefused));

        let mut s = CallScript::new(t0, cfg());
        s.handle_answered(t0, true);
        drain(&mut s);
        s.handle_timeout(t0 + Duration::from_secs(120));
        assert_eq!(
            drain(&mut s),
            vec![Action::StopPlayback, Action::Bye { reason: None }]
        );
    }
}
