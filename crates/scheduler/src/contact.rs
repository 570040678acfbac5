//! Contacts and their consent records.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::window::Windows;
use crate::zone::zones_for_number;
use crate::Error;

/// A contact's identifier, unique within a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContactId(String);

impl ContactId {
    /// A non-empty identifier.
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        if id.trim().is_empty() {
            return Err(Error::EmptyContactId);
        }
        Ok(ContactId(id))
    }
    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid phone number in E.164 form (`+` and up to 15 digits).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    /// The number as `+<digits>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The digits without `+`.
    pub fn digits(&self) -> &str {
        self.0.get(1..).unwrap_or_default()
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Phone numbers are personal data: Debug shows only the country code and last two digits.
/// (Display shows the number in full; the audit log needs it, logs must not use it.)
impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.digits();
        let tail = d.get(d.len().saturating_sub(2)..).unwrap_or_default();
        write!(f, "E164(+{}…{tail})", d.get(..2).unwrap_or_default())
    }
}

impl FromStr for E164 {
    type Err = Error;

    /// Parses and validates with libphonenumber's metadata. The input must be in
    /// international form, starting with `+`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &'static str| Error::InvalidPhone {
            input: s.to_owned(),
            reason,
        };
        if !s.trim_start().starts_with('+') {
            return Err(bad(
                "not in E.164 form: expected `+` then the country code, e.g. +33612345678",
            ));
        }
        let n = phonenumber::parse(None, s).map_err(|_| bad("not a phone number"))?;
        if !phonenumber::is_valid(&n) {
            return Err(bad(
                "not a valid number for its country (libphonenumber metadata)",
            ));
        }
        Ok(E164(n.format().mode(phonenumber::Mode::E164).to_string()))
    }
}

/// One record of consent, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    /// The time windows the person consented to be called in (their local time).
    pub windows: Windows,
    /// When consent was given.
    pub granted_at: DateTime<Utc>,
    /// When it lapses, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was withdrawn, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Where the number came from (a form, a list, a contract …).
    pub source: String,
    /// Reference to the evidence of consent.
    pub proof: String,
}

impl ConsentRecord {
    /// End of validity: the earlier of expiry and revocation.
    pub fn valid_until(&self) -> Option<DateTime<Utc>> {
        match (self.expires_at, self.revoked_at) {
            (Some(e), Some(r)) => Some(e.min(r)),
            (e, r) => e.or(r),
        }
    }
}

/// Where a contact's candidate zones came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneSource {
    /// The contact record names its zone.
    Given,
    /// Inferred from the number with libphonenumber's time-zone map.
    Number,
}

/// A person to call, with their consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    id: ContactId,
    phone: E164,
    zone: Option<Tz>,
    inferred: &'static [Tz],
    consents: Vec<ConsentRecord>,
}

impl Contact {
    /// A contact. With `zone = None` the candidate zones come from the number.
    pub fn new(id: ContactId, phone: E164, zone: Option<Tz>, consents: Vec<ConsentRecord>) -> Self {
        let inferred = if zone.is_none() {
            zones_for_number(phone.digits())
        } else {
            &[]
        };
        Contact {
            id,
            phone,
            zone,
            inferred,
            consents,
        }
    }

    /// The identifier.
    pub fn id(&self) -> &ContactId {
        &self.id
    }
    /// The number.
    pub fn phone(&self) -> &E164 {
        &self.phone
    }
    /// The zone given in the contact record, if any.
    pub fn given_zone(&self) -> Option<Tz> {
        self.zone
    }
    /// The consent records, in the order given.
    pub fn consents(&self) -> &[ConsentRecord] {
        &self.consents
    }
    /// Adds a consent record (history is kept; nothing is replaced).
    pub fn add_consent(&mut self, consent: ConsentRecord) {
        self.consents.push(consent);
    }

    /// Every zone the contact may be in, and where that came from. Empty = unknown.
    pub fn zones(&self) -> (&[Tz], ZoneSource) {
        match &self.zone {
            Some(z) => (std::slice::from_ref(z), ZoneSource::Given),
            None => (self.inferred, ZoneSource::Number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_parse() {
        let ok = |s: &str| s.parse::<E164>().map(|e| e.to_string()).ok();
        assert_eq!(ok("+33 6 12 34 56 78").as_deref(), Some("+33612345678"));
        assert_eq!(ok("+12012345678").as_deref(), Some("+12012345678"));
        assert_eq!(ok("0612345678"), None);
        assert_eq!(ok("+3361234"), None);
        assert_eq!(ok("hello"), None);
    }

    #[test]
    fn debug_redacts() {
        let e: Result<E164, _> = "+33612345678".parse();
        assert_eq!(
            e.map(|e| format!("{e:?}")).ok().as_deref(),
            Some("E164(+33…78)")
        );
    }
}
