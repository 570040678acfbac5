//! Contacts and their consent records.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::window::Windows;
use crate::zone::zones_for;
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
pub struct E164 {
    text: String,
    /// The country calling code.
    country_code: u16,
    /// Whether libphonenumber places the number geographically (fixed line, fixed line or
    /// mobile, or a mobile in a country with geographic mobiles).
    geographic: bool,
}

/// Countries whose mobile numbers are geographically assigned (libphonenumber's
/// `GEO_MOBILE_COUNTRIES`: Mexico, Argentina, Brazil, Indonesia, China).
const GEO_MOBILE_COUNTRIES: [u16; 5] = [52, 54, 55, 62, 86];

impl E164 {
    /// The number as `+<digits>`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
    /// The digits without `+`.
    pub fn digits(&self) -> &str {
        self.text.get(1..).unwrap_or_default()
    }
    /// The country calling code.
    pub fn country_code(&self) -> u16 {
        self.country_code
    }
    /// Whether the number's own prefix (area code) locates it; if not, only its country does.
    pub fn is_geographic(&self) -> bool {
        self.geographic
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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

    /// Parses and validates by libphonenumber's rules and metadata (see `phone`). The
    /// input must be in international form: `+`, then digits, optionally grouped with
    /// spaces, `-`, `(`, `)` or `.`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &'static str| Error::InvalidPhone {
            input: s.to_owned(),
            reason,
        };
        let t = s.trim();
        let Some(rest) = t.strip_prefix('+') else {
            return Err(bad(
                "not in E.164 form: expected `+` then the country code, e.g. +33612345678",
            ));
        };
        // libphonenumber's parser is lenient (letters as on a keypad, extensions, several
        // `+`); a consent record must name exactly one reachable number.
        let digits: Cow<'_, str> = if rest.bytes().all(|b| b.is_ascii_digit()) {
            Cow::Borrowed(rest)
        } else if rest
            .chars()
            .all(|c| c.is_ascii_digit() || " -().".contains(c))
        {
            Cow::Owned(rest.chars().filter(char::is_ascii_digit).collect())
        } else {
            return Err(bad("only digits, spaces and - ( ) . may follow the `+`"));
        };
        let ok = crate::phone::international(&digits).map_err(|r| bad(r.reason()))?;
        let text = match (&digits, &ok.national) {
            // Written as it is read: keep the caller's string.
            (Cow::Borrowed(_), Cow::Borrowed(_)) => t.to_owned(),
            _ => format!("+{}{}", ok.country_code, ok.national),
        };
        Ok(E164 {
            text,
            country_code: ok.country_code,
            geographic: is_geographic(ok.kind, ok.country_code),
        })
    }
}

/// Whether libphonenumber places a number of this type geographically.
fn is_geographic(kind: phonenumber::Type, country_code: u16) -> bool {
    use phonenumber::Type;
    match kind {
        Type::FixedLine | Type::FixedLineOrMobile => true,
        Type::Mobile => GEO_MOBILE_COUNTRIES.contains(&country_code),
        _ => false,
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
            zones_for(&phone)
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
    fn e164_rejects_what_cannot_be_dialled_exactly() {
        for bad in [
            "+33612345678x12",
            "++33612345678",
            "+33612345678;",
            "+1-800-FLOWERS",
            "+33 6 12 34 56 78 ext. 5",
        ] {
            assert!(bad.parse::<E164>().is_err(), "{bad}");
        }
    }

    #[test]
    fn geographic_numbers() {
        let geo = |s: &str| s.parse::<E164>().map(|e| e.is_geographic()).ok();
        assert_eq!(geo("+33142685300"), Some(true)); // Paris fixed line
        assert_eq!(geo("+33612345678"), Some(false)); // French mobile
        assert_eq!(geo("+12012345678"), Some(true)); // NANP: fixed line or mobile
        assert_eq!(geo("+61412345678"), Some(false)); // Australian mobile
        assert_eq!(geo("+18005550199"), Some(false)); // toll-free
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
