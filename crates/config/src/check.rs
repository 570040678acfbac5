//! Checks of a campaign's contacts before anything is dialled: who can never be called.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use crieur_scheduler::{Contact, Decision, Evaluator, Policy, SkipReason};

/// Why a contact can never be called within the next-eligible horizon
/// ([`crieur_scheduler::NEXT_ELIGIBLE_HORIZON_DAYS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeverCallable {
    /// Reasons that last: no zone known, no consent, consent expired or revoked.
    Lasting(Vec<SkipReason>),
    /// Its consent windows, the rule set's legal hours and holidays (and the campaign
    /// schedule) never leave room for a call of the policy's length; the reasons at the
    /// instant looked at.
    NoRoom(Vec<SkipReason>),
}

/// Why `c` can never be called within the horizon from `now`, if so.
pub fn never_callable(
    ev: &mut Evaluator<'_>,
    c: &Contact,
    now: DateTime<Utc>,
) -> Option<NeverCallable> {
    match ev.decide(c, now) {
        Decision::Dial(_) => None,
        Decision::Skip(s) if s.next_eligible.is_some() => None,
        Decision::Skip(s) => Some(NeverCallable::from_reasons(s.reasons)),
    }
}

impl NeverCallable {
    /// Why, in words (under `policy`).
    pub fn describe(&self, policy: &Policy) -> String {
        let words = |reasons: &[SkipReason]| {
            reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self {
            NeverCallable::Lasting(reasons) => words(reasons),
            NeverCallable::NoRoom(reasons) => format!(
                "its consent windows, the {} legal hours and holidays{} never leave room for a call of {} s (now: {})",
                policy.ruleset().name(),
                if policy.schedule().is_some() {
                    " and the campaign schedule"
                } else {
                    ""
                },
                policy.call_duration().as_secs(),
                words(reasons)
            ),
        }
    }

    /// The reasons a skip without any next eligible instant gave, classified.
    pub fn from_reasons(reasons: Vec<SkipReason>) -> NeverCallable {
        let lasting: Vec<SkipReason> = reasons
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    SkipReason::UnknownZone
                        | SkipReason::NoConsent
                        | SkipReason::ConsentExpired { .. }
                        | SkipReason::ConsentRevoked { .. }
                )
            })
            .cloned()
            .collect();
        if lasting.is_empty() {
            NeverCallable::NoRoom(reasons)
        } else {
            NeverCallable::Lasting(lasting)
        }
    }
}

/// What a decision depends on besides the policy and the instant: the zones and the
/// consent records (not the id or the number).
type DecisionInputs = (Vec<String>, Vec<(String, i64, Option<i64>, Option<i64>)>);

fn decision_inputs(c: &Contact) -> DecisionInputs {
    (
        c.zones().0.iter().map(|z| z.name().to_owned()).collect(),
        c.consents()
            .iter()
            .map(|r| {
                (
                    r.windows.as_str().to_owned(),
                    r.granted_at.timestamp(),
                    r.expires_at.map(|t| t.timestamp()),
                    r.revoked_at.map(|t| t.timestamp()),
                )
            })
            .collect(),
    )
}

/// Every contact of `contacts` that can never be called under `policy` within the horizon
/// from `now`, in order, with why. Contacts with the same zones and consent records get the
/// same answer: a file of many contacts sharing a few shapes searches the horizon once per
/// shape, not per contact.
pub fn never_callable_all<'c>(
    policy: &Policy,
    contacts: &'c [Contact],
    now: DateTime<Utc>,
) -> Vec<(&'c Contact, NeverCallable)> {
    let mut ev = Evaluator::batch(policy);
    let mut seen: HashMap<DecisionInputs, Option<NeverCallable>> = HashMap::new();
    let mut out = Vec::new();
    for c in contacts {
        let key = decision_inputs(c);
        let never = match seen.get(&key) {
            Some(v) => v.clone(),
            None => {
                let v = never_callable(&mut ev, c, now);
                if seen.len() < 100_000 {
                    seen.insert(key, v.clone());
                }
                v
            }
        };
        if let Some(why) = never {
            out.push((c, why));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{campaign, contacts};

    #[test]
    fn lasting_reasons_and_windows_that_never_meet_the_rules_are_told_apart() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let c =
            campaign::load(&examples.join("campaign-fr.toml")).unwrap_or_else(|e| panic!("{e}"));
        let csv = "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof\n\
                   ok,+33612345678,,mon-fri 18:00-20:00,2027-01-10T09:00:00Z,,,form,p\n\
                   expired,+33612345679,,mon-fri 18:00-20:00,2027-01-10T09:00:00Z,2027-01-11T00:00:00Z,,form,p\n\
                   short,+33612345670,,sun 10:00-12:00,2027-01-10T09:00:00Z,,,form,p\n\
                   same-shape,+33612345671,,sun 10:00-12:00,2027-01-10T09:00:00Z,,,form,p\n";
        let loaded = contacts::parse(
            Path::new("k.csv"),
            &contacts::Options::default(),
            csv.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let now = DateTime::parse_from_rfc3339("2027-03-01T10:00:00Z")
            .unwrap_or_else(|e| panic!("{e}"))
            .with_timezone(&Utc);
        let never = never_callable_all(&c.policy, &loaded.contacts, now);
        let ids: Vec<&str> = never.iter().map(|(c, _)| c.id().as_str()).collect();
        assert_eq!(ids, ["expired", "short", "same-shape"]);
        assert!(
            matches!(&never[0].1, NeverCallable::Lasting(r) if r.iter().all(|r| matches!(r, SkipReason::ConsentExpired { .. }))),
            "{:?}",
            never[0].1
        );
        assert!(
            matches!(never[1].1, NeverCallable::NoRoom(_)),
            "{:?}",
            never[1].1
        );
        // The memoised answer for the same shape is the one computed afresh.
        let mut ev = Evaluator::batch(&c.policy);
        assert_eq!(
            never_callable(&mut ev, never[2].0, now).as_ref(),
            Some(&never[2].1)
        );
    }
}
