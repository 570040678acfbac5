//! Numbers in international form (`+` then digits), read by libphonenumber's rules.
//!
//! libphonenumber's metadata (as the `phonenumber` crate ships it) is the authority on which
//! numbers exist, and libphonenumber's `PhoneNumberUtil.parse` and `isValidNumber` are the
//! authority on how a written number is read. The crate's own parser departs from them in
//! ways that matter here, so this module applies libphonenumber's rules itself, on the
//! crate's metadata:
//!
//! * a national prefix (or carrier code) is stripped only as libphonenumber's
//!   `maybeStripNationalPrefixAndCarrierCode` does: not when the number as written matches
//!   the region's general pattern and what would remain does not, and only when the
//!   remainder has a possible length (`testNumberLength`). The crate strips it whenever the
//!   number starts with it, so it refused St Petersburg `+7 812 234 56 78`, Russian and
//!   Belarusian toll-free `+7 800 …`, `+375 800 …`, Lithuanian `+370 800 …`, Rwandan
//!   fixed lines `+250 06 …`, and Uruguayan and Japanese `+598 0004 …`, `+81 00777 …`;
//! * the prefix rules of the country calling code's main region are used, as in
//!   libphonenumber (the crate picks the region by the number's leading digits);
//! * number patterns must match the whole national number, as in libphonenumber's
//!   `matchNationalNumber`; the crate accepts a match of the number's beginning, so it took
//!   numbers with extra digits (`+213 123 456 780`) as valid.
//!
//! A table of numbers read by libphonenumber itself (`tests/data/libphonenumber-reference.tsv`,
//! made by `scripts/gen-phone-reference` with the release of the crate's metadata) checks
//! every example number of every region and variants of them.
//!
//! The patterns are compiled into plain `regex::Regex`es, once per country calling code on
//! first use: the crate fetches every pattern from one LRU cache behind a process-wide
//! `Mutex`, which made importing millions of contacts slow and more threads slower.

use std::borrow::Cow;
use std::sync::OnceLock;

use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
use phonenumber::Type;
use regex::{Regex, RegexBuilder};

/// libphonenumber's bounds (`MIN_LENGTH_FOR_NSN`, `MAX_LENGTH_FOR_NSN`,
/// `MAX_LENGTH_FOR_COUNTRY_CODE`).
const MIN_NSN: usize = 2;
const MAX_NSN: usize = 17;
const MAX_CC: usize = 3;

/// A valid number, as libphonenumber reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Valid<'a> {
    pub country_code: u16,
    pub kind: Type,
    /// The national significant number (leading zeros included); borrowed when it is the
    /// digits after the country code as written.
    pub national: Cow<'a, str>,
}

/// Why libphonenumber does not accept a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No digits, or too few to hold a country code and a number.
    TooShort,
    /// The digits do not start with a country calling code.
    UnknownCountryCode,
    /// The national number is longer than any numbering plan allows.
    TooLong,
    /// The number does not match any of its region's number patterns.
    Invalid,
}

impl Refusal {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::TooShort => "too short to be a phone number",
            Refusal::UnknownCountryCode => "does not start with a country calling code",
            Refusal::TooLong => "too long to be a phone number",
            Refusal::Invalid => "not a valid number for its country (libphonenumber metadata)",
        }
    }
}

/// A descriptor: a pattern that must match the whole national number, and the lengths it
/// applies to (libphonenumber's `isNumberMatchingDesc`).
struct Desc {
    pattern: Regex,
    lengths: Vec<u16>,
}

impl Desc {
    fn new(d: &Descriptor) -> Option<Desc> {
        Some(Desc {
            pattern: whole(d.national_number().as_str())?,
            lengths: d.possible_length().to_vec(),
        })
    }
    fn is_match(&self, national: &str) -> bool {
        let len = u16::try_from(national.len()).unwrap_or(u16::MAX);
        (self.lengths.is_empty() || self.lengths.contains(&len)) && self.pattern.is_match(national)
    }
}

/// Metadata patterns are written with insignificant whitespace (the crate compiles them with
/// `ignore_whitespace` too).
fn compile(pattern: &str) -> Option<Regex> {
    RegexBuilder::new(pattern)
        .ignore_whitespace(true)
        .build()
        .ok()
}

/// Matches the whole text (Java's `Matcher.matches`).
fn whole(pattern: &str) -> Option<Regex> {
    compile(&format!("^(?:{pattern})$"))
}

/// Matches at the start of the text (Java's `Matcher.lookingAt`).
fn at_start(pattern: &str) -> Option<Regex> {
    compile(&format!("^(?:{pattern})"))
}

fn opt(d: Option<&Descriptor>) -> Option<Option<Desc>> {
    match d {
        None => Some(None),
        Some(d) => Desc::new(d).map(Some),
    }
}

/// The possible lengths of a region's numbers, national and local-only, as libphonenumber
/// computes them for its general descriptor: the union over the number types (the crate
/// leaves the general descriptor's own lists empty, as the metadata file does).
fn general_lengths(m: &Metadata) -> (Vec<u16>, Vec<u16>) {
    let d = m.descriptors();
    let (mut national, mut local) = (Vec::new(), Vec::new());
    for desc in [
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
    ]
    .into_iter()
    .flatten()
    {
        national.extend_from_slice(desc.possible_length());
        local.extend_from_slice(desc.possible_local_length());
    }
    national.sort_unstable();
    national.dedup();
    local.sort_unstable();
    local.dedup();
    local.retain(|l| !national.contains(l));
    (national, local)
}

/// How a region's national prefix (or carrier code) is recognised and removed.
struct NationalPrefix {
    /// `nationalPrefixForParsing`, or the national prefix itself when there is none.
    pattern: Regex,
    /// `nationalPrefixTransformRule`, in `regex` replacement syntax.
    transform: Option<String>,
}

/// Java's `$1` as `${1}`, so that a digit after it cannot extend the group number.
fn replacement(rule: &str) -> String {
    let mut out = String::with_capacity(rule.len() + 4);
    let mut chars = rule.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push_str("${");
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                out.push(d);
            }
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out
}

/// One region's metadata, compiled.
struct Region {
    general: Desc,
    /// The general descriptor's local-only lengths.
    local_lengths: Vec<u16>,
    /// In the order of libphonenumber's `getNumberTypeHelper`.
    special: [(Type, Option<Desc>); 8],
    fixed_line: Option<Desc>,
    mobile: Option<Desc>,
    /// libphonenumber's `sameMobileAndFixedLinePattern`: a region whose fixed-line and
    /// mobile patterns are the same text has "fixed line or mobile" numbers.
    same_fixed_mobile: bool,
    leading_digits: Option<Regex>,
    national_prefix: Option<NationalPrefix>,
}

impl Region {
    fn new(m: &Metadata) -> Option<Region> {
        let d = m.descriptors();
        let (lengths, local_lengths) = general_lengths(m);
        let national_prefix = match m.national_prefix_for_parsing() {
            Some(p) => Some(at_start(p.as_str())?),
            None => match m.national_prefix() {
                Some(p) if !p.is_empty() => Some(at_start(&regex::escape(p))?),
                _ => None,
            },
        };
        Some(Region {
            general: Desc {
                pattern: whole(d.general().national_number().as_str())?,
                lengths,
            },
            local_lengths,
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
                Some(r) => Some(at_start(r.as_str())?),
            },
            national_prefix: national_prefix.map(|pattern| NationalPrefix {
                pattern,
                transform: m
                    .national_prefix_transform_rule()
                    .filter(|r| !r.is_empty())
                    .map(replacement),
            }),
        })
    }

    /// libphonenumber's `getNumberTypeHelper`.
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
        if !self.same_fixed_mobile && self.mobile.as_ref().is_some_and(|d| d.is_match(national)) {
            return Type::Mobile;
        }
        Type::Unknown
    }

    /// Whether the general pattern matches the whole number (libphonenumber's
    /// `matchNationalNumber(number, generalDesc, false)`: the pattern only, not the lengths).
    fn viable(&self, national: &str) -> bool {
        self.general.pattern.is_match(national)
    }

    /// libphonenumber's `maybeStripNationalPrefixAndCarrierCode`: the number without its
    /// national prefix or carrier code, or `None` when it keeps them.
    fn strip_national_prefix(&self, national: &str) -> Option<String> {
        let np = self.national_prefix.as_ref()?;
        // The common case (no prefix) by the cheaper test; captures only when it matches.
        if !np.pattern.is_match(national) {
            return None;
        }
        let caps = np.pattern.captures(national)?;
        let whole_match = caps.get(0)?;
        let viable = self.viable(national);
        // Java's `group(groupCount())`: the last group, or the whole match without groups.
        let last_group = caps.get(caps.len() - 1);
        match &np.transform {
            Some(rule) if last_group.is_some() => {
                let transformed = np.pattern.replace(national, rule.as_str()).into_owned();
                (!viable || self.viable(&transformed)).then_some(transformed)
            }
            _ => {
                let rest = national.get(whole_match.end()..)?;
                (!viable || self.viable(rest)).then(|| rest.to_owned())
            }
        }
    }

    /// Whether libphonenumber's `testNumberLength` (for an unknown type) lets a number of
    /// this length stand: possible, or too long (left for validation to refuse); not too
    /// short, local-only or of a length the region never uses.
    fn length_stands(&self, national: &str) -> bool {
        let len = u16::try_from(national.len()).unwrap_or(u16::MAX);
        let lengths = &self.general.lengths;
        let (Some(&min), Some(&max)) = (lengths.first(), lengths.last()) else {
            return false;
        };
        !self.local_lengths.contains(&len) && len >= min && (len > max || lengths.contains(&len))
    }
}

/// The regions sharing one country calling code, in the metadata's order.
struct Country {
    regions: Vec<Region>,
    /// The main region, whose national prefix rules apply when reading a number
    /// (libphonenumber's `getRegionCodeForCountryCode`).
    main: usize,
}

impl Country {
    fn new(code: u16) -> Option<Country> {
        let names = DATABASE.region(&code)?;
        let mut regions = Vec::with_capacity(names.len());
        let mut main = None;
        if names.len() == 1 {
            // A single region: "001" (non-geographic entities) is looked up by code,
            // anything else by id, which must also be one the crate can name.
            let meta = if names[0] == "001" {
                DATABASE.by_code(&code)?.into_iter().next()?
            } else {
                names[0].parse::<phonenumber::country::Id>().ok()?;
                DATABASE.by_id(names[0])?
            };
            regions.push(Region::new(meta)?);
        } else {
            for (i, name) in names.iter().enumerate() {
                name.parse::<phonenumber::country::Id>().ok()?;
                let meta = DATABASE.by_id(*name)?;
                if meta.is_main_country_for_code() && main.is_none() {
                    main = Some(i);
                }
                regions.push(Region::new(meta)?);
            }
        }
        Some(Country {
            regions,
            main: main.unwrap_or(0),
        })
    }

    /// libphonenumber's `getRegionCodeForNumberFromRegionList`.
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

/// Whether the metadata has a region for this calling code (as `Database::region(..)
/// .is_some()`, which builds a vector on every call). Not from `Database::iter`, which
/// yields one entry per region id, so only one of the non-geographic ("001") codes.
fn is_known_code(code: u16) -> bool {
    static KNOWN: OnceLock<Vec<bool>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        (0..1000u16)
            .map(|c| DATABASE.region(&c).is_some())
            .collect()
    });
    known.get(usize::from(code)).copied().unwrap_or(false)
}

/// Reads the digits after a `+` as libphonenumber's `parse(number, null)` followed by
/// `isValidNumber` does.
pub(crate) fn international(digits: &str) -> Result<Valid<'_>, Refusal> {
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::Invalid);
    }
    // `maybeExtractCountryCode`: more than MIN_NSN digits after the `+`.
    if digits.len() <= MIN_NSN {
        return Err(Refusal::TooShort);
    }
    // `extractCountryCode`: the shortest known code; none starts with 0.
    if digits.starts_with('0') {
        return Err(Refusal::UnknownCountryCode);
    }
    let (code, written) = (1..=MAX_CC)
        .find_map(|len| {
            let code: u16 = digits.get(..len)?.parse().ok()?;
            is_known_code(code).then(|| (code, digits.get(len..).unwrap_or_default()))
        })
        .ok_or(Refusal::UnknownCountryCode)?;
    let country = country(code).ok_or(Refusal::Invalid)?;
    let main = country.regions.get(country.main).ok_or(Refusal::Invalid)?;
    let national: Cow<'_, str> = match main.strip_national_prefix(written) {
        Some(stripped) if main.length_stands(&stripped) => Cow::Owned(stripped),
        _ => Cow::Borrowed(written),
    };
    if national.len() < MIN_NSN {
        return Err(Refusal::TooShort);
    }
    if national.len() > MAX_NSN {
        return Err(Refusal::TooLong);
    }
    let kind = country
        .region_for(&national)
        .map_or(Type::Unknown, |r| r.number_type(&national));
    if kind == Type::Unknown {
        return Err(Refusal::Invalid);
    }
    Ok(Valid {
        country_code: code,
        kind,
        national,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// How libphonenumber itself reads numbers (see `scripts/gen-phone-reference`).
    const REFERENCE: &str = include_str!("../tests/data/libphonenumber-reference.tsv");

    fn type_name(kind: Type) -> &'static str {
        match kind {
            Type::FixedLine => "FIXED_LINE",
            Type::Mobile => "MOBILE",
            Type::FixedLineOrMobile => "FIXED_LINE_OR_MOBILE",
            Type::TollFree => "TOLL_FREE",
            Type::PremiumRate => "PREMIUM_RATE",
            Type::SharedCost => "SHARED_COST",
            Type::Voip => "VOIP",
            Type::PersonalNumber => "PERSONAL_NUMBER",
            Type::Pager => "PAGER",
            Type::Uan => "UAN",
            Type::Voicemail => "VOICEMAIL",
            _ => "UNKNOWN",
        }
    }

    /// `(E.164, type)` as this module reads `s`, or `None`.
    fn read(s: &str) -> Option<(String, &'static str)> {
        let v = international(s.strip_prefix('+')?).ok()?;
        Some((
            format!("+{}{}", v.country_code, v.national),
            type_name(v.kind),
        ))
    }

    #[test]
    fn reads_every_number_of_the_reference_table_as_libphonenumber_does() {
        let (mut checked, mut valid, mut wrong) = (0, 0, Vec::new());
        for line in REFERENCE.lines().filter(|l| !l.starts_with('#')) {
            let mut cols = line.split('\t');
            let (Some(input), Some(expected)) = (cols.next(), cols.next()) else {
                panic!("bad reference line {line:?}");
            };
            let expected = match expected {
                "invalid" => None,
                e164 => Some((e164.to_owned(), cols.next().unwrap_or_default())),
            };
            let got = read(input);
            if got.as_ref().map(|(e, k)| (e.as_str(), *k))
                != expected.as_ref().map(|(e, k)| (e.as_str(), *k))
            {
                wrong.push(format!(
                    "{input}: libphonenumber {expected:?}, crieur {got:?}"
                ));
            }
            checked += 1;
            valid += usize::from(expected.is_some());
        }
        assert!(
            checked > 9_000 && valid > 2_500,
            "{checked} numbers, {valid} valid"
        );
        assert!(
            wrong.is_empty(),
            "{} of {checked} differ (after an update of the `phonenumber` crate, regenerate the \
             table with scripts/gen-phone-reference first):\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }

    #[test]
    fn the_numbers_of_issue_14_are_read_as_written_or_without_their_prefix() {
        for (written, e164) in [
            ("+78122345678", "+78122345678"), // St Petersburg: 8 is the area code
            ("+78002345678", "+78002345678"), // Russian toll-free
            ("+77172345678", "+77172345678"), // Kazakhstan, Astana
            ("+375800123456", "+375800123456"), // Belarus toll-free
            ("+3758011234567", "+3758011234567"), // Belarus toll-free
            ("+37080012345", "+37080012345"), // Lithuania toll-free
            ("+25006123456", "+25006123456"), // Rwanda fixed line 06…
            ("+59800041234567", "+59800041234567"), // Uruguay toll-free 0004…
            ("+8100777012", "+8100777012"),   // Japan toll-free 00777…
            ("+81003766651155", "+81003766651155"), // Japan toll-free 0037…
            // The prefix goes when what remains is a number.
            ("+330612345678", "+33612345678"),
            ("+810120123456", "+81120123456"),
            ("+59808001234", "+5988001234"),
            ("+112015550123", "+12015550123"),
        ] {
            assert_eq!(
                read(written).map(|r| r.0).as_deref(),
                Some(e164),
                "{written}"
            );
        }
    }

    #[test]
    fn whole_numbers_must_match_not_just_their_beginning() {
        // An Algerian fixed-line example with a digit more, a Chinese one with a digit
        // less: the crate's prefix match took both.
        assert_eq!(read("+213123456780"), None);
        assert_eq!(read("+86101234567"), None);
        assert!(read("+21312345678").is_some());
    }

    /// `+<code><example>` for every example number of every number type of every region.
    fn examples() -> Vec<(String, &'static str)> {
        let mut out = Vec::new();
        for code in 1..1000u16 {
            for m in DATABASE.by_code(&code).unwrap_or_default() {
                let d = m.descriptors();
                for (desc, kind) in [
                    (d.fixed_line(), "FIXED_LINE"),
                    (d.mobile(), "MOBILE"),
                    (d.toll_free(), "TOLL_FREE"),
                    (d.premium_rate(), "PREMIUM_RATE"),
                    (d.shared_cost(), "SHARED_COST"),
                    (d.personal_number(), "PERSONAL_NUMBER"),
                    (d.voip(), "VOIP"),
                    (d.pager(), "PAGER"),
                    (d.uan(), "UAN"),
                    (d.voicemail(), "VOICEMAIL"),
                ] {
                    if let Some(e) = desc.and_then(Descriptor::example) {
                        out.push((format!("+{code}{e}"), kind));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn every_example_number_of_every_region_is_valid_as_written_and_of_its_type() {
        let examples = examples();
        assert!(examples.len() > 1_000, "{} examples", examples.len());
        for (e, kind) in &examples {
            let got = read(e);
            let fits = |k: &str| {
                k == *kind
                    || (k == "FIXED_LINE_OR_MOBILE" && ["FIXED_LINE", "MOBILE"].contains(kind))
            };
            assert!(
                got.as_ref().is_some_and(|(text, k)| text == e && fits(k)),
                "{e} ({kind}): {got:?}"
            );
        }
    }

    #[test]
    fn refusals_say_why() {
        let why = |s: &str| international(s).err();
        assert_eq!(why("33"), Some(Refusal::TooShort));
        assert_eq!(why("0612345678"), Some(Refusal::UnknownCountryCode));
        assert_eq!(why("2812345678"), Some(Refusal::UnknownCountryCode)); // 28x unassigned
        assert_eq!(why("3361234"), Some(Refusal::Invalid));
        assert_eq!(why("33612345678901234567"), Some(Refusal::TooLong));
        assert_eq!(why("33 612345678"), Some(Refusal::Invalid));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Example numbers with digits changed, removed or added: what is read as valid
        /// reads back to itself (a stored number means what it meant when imported).
        #[test]
        fn a_valid_number_reads_back_to_itself(
            pick in any::<prop::sample::Index>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..10, 0u8..4), 0..4),
        ) {
            let examples = EXAMPLES.get_or_init(examples);
            let mut s: Vec<u8> = pick.get(examples).0.as_bytes().to_vec();
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
            if let Some((e164, kind)) = read(&s) {
                prop_assert_eq!(read(&e164), Some((e164.clone(), kind)), "{}", s);
            }
        }

        /// Any digits after any calling code: never a panic, and the same reading back.
        #[test]
        fn any_digits_read_back_to_themselves(code in 1u16..999, rest in "[0-9]{0,19}") {
            if let Some((e164, kind)) = read(&format!("+{code}{rest}")) {
                prop_assert_eq!(read(&e164), Some((e164.clone(), kind)));
            }
        }
    }

    static EXAMPLES: OnceLock<Vec<(String, &'static str)>> = OnceLock::new();
}
