//! Jurisdictions' legal calling hours as versioned data.

use std::fmt;

use chrono::{Datelike, NaiveDateTime};

use crate::holidays::Holidays;
use crate::window::Windows;
use crate::Error;

/// A jurisdiction's rules for when automated calls may be placed.
///
/// Rule sets are data: the audit log records `name` and `version` with every decision, and a
/// change in the law gets a new version rather than an edit in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    name: &'static str,
    version: &'static str,
    /// Legal hours, in the called party's local wall-clock time; `None` = any time.
    hours: Option<Windows>,
    holidays: Holidays,
    source: &'static str,
}

struct Spec {
    name: &'static str,
    version: &'static str,
    hours: Option<&'static str>,
    holidays: Holidays,
    source: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        name: "FR",
        version: "FR-2023-03-01",
        hours: Some("mon-fri 10:00-13:00,14:00-20:00"),
        holidays: Holidays::France,
        source: "Code de la consommation D.223-9 (décret n° 2022-1313); Code du travail L.3133-1",
    },
    Spec {
        name: "US",
        version: "US-47CFR64.1200c1-1992",
        hours: Some("daily 08:00-21:00"),
        holidays: Holidays::None,
        source: "47 CFR 64.1200(c)(1)",
    },
    Spec {
        name: "none",
        version: "none-1",
        hours: None,
        holidays: Holidays::None,
        source: "consent windows only",
    },
];

impl RuleSet {
    /// The rule set named `name` (`FR`, `US` or `none`).
    pub fn by_name(name: &str) -> Result<RuleSet, Error> {
        let spec = SPECS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::UnknownRuleSet {
                name: name.to_owned(),
            })?;
        let hours = match spec.hours {
            Some(h) => Some(h.parse()?),
            None => None,
        };
        Ok(RuleSet {
            name: spec.name,
            version: spec.version,
            hours,
            holidays: spec.holidays,
            source: spec.source,
        })
    }

    /// Names of every known rule set.
    pub fn names() -> impl Iterator<Item = &'static str> {
        SPECS.iter().map(|s| s.name)
    }

    /// Short name, e.g. `FR`.
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// Version of the rules, recorded with every decision.
    pub fn version(&self) -> &'static str {
        self.version
    }
    /// Legal source of the rules.
    pub fn source(&self) -> &'static str {
        self.source
    }
    /// Legal hours (local wall-clock), `None` when any hour is legal.
    pub fn hours(&self) -> Option<&Windows> {
        self.hours.as_ref()
    }
    /// Whether the rules allow a call at the wall-clock reading `local`: inside legal hours
    /// and not on a public holiday. Uses chrono's calendar (see [`crate::Window::contains`]).
    pub fn permits(&self, local: NaiveDateTime) -> bool {
        let day = crate::time::days_from_civil(i64::from(local.year()), local.month(), local.day());
        self.hours
            .as_ref()
            .is_none_or(|h| h.containing(local).is_some())
            && self.holidays.on_day(day).is_none()
    }

    /// Public holidays on which no call is legal.
    pub fn holidays(&self) -> Holidays {
        self.holidays
    }
}

impl fmt::Display for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.version)
    }
}
