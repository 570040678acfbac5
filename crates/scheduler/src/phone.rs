//! A fast path for validating numbers already in canonical E.164 form (`+` then digits).
//!
//! Why this exists: the `phonenumber` crate (libphonenumber's metadata, which stays the
//! authority) fetches every pattern from one LRU regex cache behind a process-wide `Mutex`
//! and runs a general-purpose parser first; importing millions of contacts spent most of
//! its time there, and more threads made it slower. This module compiles the *same*
//! patterns from the crate's own metadata into plain `regex::Regex`es (lock-free to share
//! across threads), once per country calling code, on first use.
//!
//! It only ever *confirms*: [`fast_valid`] returns `Some` when the crate would parse the
//! number unchanged and call it valid, and `None` whenever anything could differ (formatting
//! characters, a leading zero, a national prefix the parser might strip, an invalid number,
//! a pattern that failed to compile). The caller then asks the crate, so the crate's answer
//! and its error wording hold everywhere. A property test compares both on numbers derived
//! from every region's examples.

use std::sync::OnceLock;

use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
use phonenumber::Type;
use regex::{Regex, RegexBuilder};

/// libphonenumber's bounds (`MIN_LENGTH_FOR_NSN`, `MAX_LENGTH_FOR_NSN`,
/// `MAX_LENGTH_FOR_COUNTRY_CODE`).
const MIN_NSN: usize = 2;
const MAX_NSN: usize = 17;
const MAX_CC: usize = 3;

/// A number the fast path confirmed valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Confirmed {
    pub country_code: u16,
    pub kind: Type,
}

/// A descriptor: a pattern matched at the start of the national number, and the lengths
/// that pattern applies to (as `phonenumber::metadata::Descriptor::is_match`).
struct Desc {
    pattern: Regex,
    lengths: Vec<u16>,
}

impl Desc {
    fn new(d: &Descriptor) -> Option<Desc> {
        Some(Desc {
            pattern: anchored(d.national_number().as_str())?,
            lengths: d.possible_length().to_vec(),
        })
    }
    fn is_match(&self, national: &str) -> bool {
        let len = u16::try_from(national.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&len)) && self.pattern.is_match(national)
    }
}

/// The crate compiles patterns with `ignore_whitespace` and accepts a match that starts at
/// offset 0 (leftmost-first, so one exists exactly when an anchored match does).
fn anchored(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(&format!("^(?:{pattern})"))
        .ignore_whitespace(true)
        .build()
        .ok()
}

fn opt(d: Option<&Descriptor>) -> Option<Option<Desc>> {
    match d {
        None => Some(None),
        Some(d) => Desc::new(d).map(Some),
    }
}

/// One region's metadata, compiled.
struct Region {
    general: Desc,
    /// In the order of the crate's `validator::number_type`.
    special: [(Type, Option<Desc>); 8],
    fixed_line: Option<Desc>,
    mobile: Option<Desc>,
    /// The crate treats a region whose fixed-line and mobile patterns are the same text as
    /// "fixed line or mobile" without matching the mobile pattern.
    same_fixed_mobile: bool,
    leading_digits: Option<Regex>,
    national_prefix: Option<String>,
    national_prefix_for_parsing: Option<Regex>,
}

impl Region {
    fn new(m: &Metadata) -> Option<Region> {
        let d = m.descriptors();
        Some(Region {
            general: Desc::new(d.general())?,
            special: [
                (Type::PremiumRate, opt(d.premium_rate())?),
                (Type::TollFree, opt(d.toll_free())?),
                (Type::SharedCost, opt(d.shared_cost())?),
                (Type::Voip, opt(d.voip())?),
                (Type::PersonalNumber, opt(d.personal_number())?),
                (Type::Pager, opt(d.pager())?),
                (Type::Uan, opt(d.uan())?),
                (Type::Voicemail, opt(d.voicemail())?),
            ],
            fixed_line: opt(d.fixed_line())?,
            mobile: opt(d.mobile())?,
            same_fixed_mobile: d.fixed_line().map(|x| x.national_number().as_str())
                == d.mobile().map(|x| x.national_number().as_str()),
            leading_digits: match m.leading_digits() {
                None => None,
                Some(r) => Some(anchored(r.as_str())?),
            },
            national_prefix: m.national_prefix().map(str::to_owned),
            national_prefix_for_parsing: match m.national_prefix_for_parsing() {
                None => None,
                Some(r) => Some(anchored(r.as_str())?),
            },
        })
    }

    /// As the crate's `validator::number_type`.
    fn number_type(&self, national: &str) -> Type {
        if !self.general.is_match(national) {
            return Type::Unknown;
        }
        for (kind, desc) in &self.special {
            if desc.as_ref().is_some_and(|d| d.is_match(national)) {
                return *kind;
            }
        }
        if self
            .fixed_line
            .as_ref()
            .is_some_and(|d| d.is_match(national))
        {
            if self.same_fixed_mobile || self.mobile.as_ref().is_some_and(|d| d.is_match(national))
            {
                return Type::FixedLineOrMobile;
            }
            return Type::FixedLine;
        }
        if self.mobile.as_ref().is_some_and(|d| d.is_match(national)) {
            return Type::Mobile;
        }
        Type::Unknown
    }

    /// Whether the crate's parser could rewrite this national number (strip a national
    /// prefix or a carrier code).
    fn parser_may_rewrite(&self, national: &str) -> bool {
        self.national_prefix_for_parsing
            .as_ref()
            .is_some_and(|p| p.is_match(national))
            || self
                .national_prefix
                .as_deref()
                .is_some_and(|p| !p.is_empty() && national.starts_with(p))
    }
}

/// The regions sharing one country calling code, in the crate's order.
struct Country {
    regions: Vec<Region>,
}

impl Country {
    fn new(code: u16) -> Option<Country> {
        let names = DATABASE.region(&code)?;
        let mut regions = Vec::with_capacity(names.len());
        if names.len() == 1 {
            // A single region: the crate takes it without looking at the number; "001"
            // (non-geographic entities) is looked up by code, anything else by id, which
            // must also be one the crate can name.
            let meta = if names[0] == "001" {
                DATABASE.by_code(&code)?.into_iter().next()?
            } else {
                names[0].parse::<phonenumber::country::Id>().ok()?;
                DATABASE.by_id(names[0])?
            };
            regions.push(Region::new(meta)?);
        } else {
            for name in names {
                name.parse::<phonenumber::country::Id>().ok()?;
                regions.push(Region::new(DATABASE.by_id(name)?)?);
            }
        }
        Some(Country { regions })
    }

    /// As the crate's `validator::source_for`.
    fn region_for(&self, national: &str) -> Option<&Region> {
        if self.regions.len() == 1 {
            return self.regions.first();
        }
        self.regions.iter().find(|r| match &r.leading_digits {
            Some(p) => p.is_match(national),
            None => r.number_type(national) != Type::Unknown,
        })
    }
}

/// Compiled countries, by calling code (1..=999), each built on first use.
static COUNTRIES: [OnceLock<Option<Country>>; 1000] = [const { OnceLock::new() }; 1000];

fn country(code: u16) -> Option<&'static Country> {
    COUNTRIES
        .get(usize::from(code))?
        .get_or_init(|| Country::new(code))
        .as_ref()
}

/// Whether the metadata has a region for this calling code (as `Database::by_code(..)
/// .is_some()`, which builds a vector on every call).
fn is_known_code(code: u16) -> bool {
    static KNOWN: OnceLock<Vec<bool>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        let mut k = vec![false; 1000];
        for m in DATABASE.iter() {
            if let Some(slot) = k.get_mut(usize::from(m.country_code())) {
                *slot = true;
            }
        }
        k
    });
    known.get(usize::from(code)).copied().unwrap_or(false)
}

/// `Some` when `s` is `+` then digits only and libphonenumber would accept it unchanged as
/// a valid number; `None` when the full parser must decide.
pub(crate) fn fast_valid(s: &str) -> Option<Confirmed> {
    let digits = s.strip_prefix('+')?;
    if digits.len() <= MIN_NSN
        || digits.len() > MAX_NSN + MAX_CC
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return None;
    }
    let (code, national) = (1..=MAX_CC).find_map(|len| {
        let code: u16 = digits.get(..len)?.parse().ok()?;
        is_known_code(code).then(|| (code, digits.get(len..).unwrap_or_default()))
    })?;
    if national.len() < MIN_NSN || national.len() > MAX_NSN || national.starts_with('0') {
        return None;
    }
    let region = country(code)?.region_for(national)?;
    if region.parser_may_rewrite(national) {
        return None;
    }
    match region.number_type(national) {
        Type::Unknown => None,
        kind => Some(Confirmed {
            country_code: code,
            kind,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `+<code><example>` for every example number of every type of every region.
    fn examples() -> Vec<String> {
        let mut out = Vec::new();
        for m in DATABASE.iter() {
            let d = m.descriptors();
            let all = [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.personal_number(),
                d.voip(),
                d.pager(),
                d.uan(),
                d.voicemail(),
            ];
            for desc in all.into_iter().flatten() {
                if let Some(e) = desc.example() {
                    out.push(format!("+{}{e}", m.country_code()));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// What the crate alone says: `Some((code, type))` when valid and unchanged.
    fn by_crate(s: &str) -> Option<(u16, Type, String)> {
        let n = phonenumber::parse(None, s).ok()?;
        if n.extension().is_some() || !phonenumber::is_valid(&n) {
            return None;
        }
        Some((
            n.code().value(),
            n.number_type(&DATABASE),
            n.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    fn agrees(s: &str) -> Result<(), TestCaseError> {
        if let Some(c) = fast_valid(s) {
            let Some((code, kind, text)) = by_crate(s) else {
                return Err(TestCaseError::fail(format!(
                    "{s}: fast path says valid, the crate does not"
                )));
            };
            prop_assert_eq!(code, c.country_code, "{}", s);
            prop_assert_eq!(kind, c.kind, "{}", s);
            prop_assert_eq!(text.as_str(), s);
        }
        Ok(())
    }

    #[test]
    fn every_example_number_agrees_with_the_crate_and_most_take_the_fast_path() {
        let examples = examples();
        assert!(examples.len() > 800, "{} examples", examples.len());
        let (mut eligible, mut fast) = (0, 0);
        for e in &examples {
            agrees(e).unwrap_or_else(|err| panic!("{err}"));
            if by_crate(e).is_some_and(|(_, _, text)| &text == e) {
                eligible += 1;
                fast += usize::from(fast_valid(e).is_some());
            }
        }
        // The fast path is worth having only if it answers for most valid numbers.
        eprintln!("fast path: {fast} of {eligible} valid examples");
        assert!(
            fast * 10 >= eligible * 9,
            "fast path took {fast} of {eligible} valid examples"
        );
    }

    #[test]
    fn the_fast_path_never_answers_for_formatted_or_odd_input() {
        for s in [
            "+33 6 12 34 56 78",
            "+33-612345678",
            "33612345678",
            "+330612345678",
            "+0612345678",
            "+33612345678 ",
            "+3361234567x",
            "++33612345678",
            "+",
            "+33",
        ] {
            assert_eq!(fast_valid(s), None, "{s}");
        }
        assert!(fast_valid("+33612345678").is_some());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Example numbers with digits changed, removed or added: the fast path either
        /// stands aside or says exactly what the crate says.
        #[test]
        fn mutated_examples_agree_with_the_crate(
            pick in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..10, 0u8..4), 0..4),
        ) {
            let examples = EXAMPLES.get_or_init(examples);
            let mut s: Vec<u8> = pick.get(examples).as_bytes().to_vec();
            for (at, digit, op) in edits {
                // Never touch the `+`.
                let i = 1 + at.index(s.len() - 1);
                let d = b'0' + digit;
                match op {
                    0 | 1 => s[i] = d,
                    2 => s.insert(i, d),
                    _ => { if s.len() > 2 { s.remove(i); } }
                }
            }
            let s = String::from_utf8(s).unwrap_or_default();
            agrees(&s)?;
        }

        /// Any digits after any calling code.
        #[test]
        fn random_digits_agree_with_the_crate(code in 1u16..999, rest in "[0-9]{1,16}") {
            agrees(&format!("+{code}{rest}"))?;
        }
    }

    static EXAMPLES: OnceLock<Vec<String>> = OnceLock::new();
}
