//! What our INVITE says about us: the headers a trunk checks (`Allow`, `Supported`,
//! `P-Asserted-Identity`) and `user=phone` on telephone numbers. (The ACK of a non-2xx carries
//! the INVITE's own Via by construction in crieur-sip: no correction is needed any more.)

/// A header as (name, value), as crieur-sip takes them.
pub type Header = (String, String);

/// The methods we handle (RFC 3261 §20.5): INVITE (we place calls; one outside a dialog
/// gets 603; a re-INVITE in the dialog is answered), ACK, CANCEL, BYE, OPTIONS (200), INFO
/// (keys) and UPDATE (RFC 3311: a new offer or a session refresh). Any other method outside a
/// dialog gets 405 with `Allow` (RFC 3261 §8.2.1).
pub const ALLOWED: [&str; 7] = [
    "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE",
];

/// [`ALLOWED`] comma-separated: the `Allow` header's value, written out once
/// (`allow_and_supported_are_their_lists` holds it to the list).
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";

/// [`SUPPORTED`] comma-separated, held to it as [`ALLOW`] is.
const SUPPORTED_VALUE: &str = "timer";

/// The `Allow` header's value: [`ALLOWED`], comma-separated.
pub fn allow() -> String {
    ALLOW.to_owned()
}

/// What we can do, for a 200 to OPTIONS (RFC 3261 §11.2: `Allow`, `Accept`, `Supported`)
/// and a 405 (`Allow`, §8.2.1).
pub fn capabilities() -> Vec<Header> {
    let mut h = vec![
        ("Allow".to_owned(), allow()),
        // What the endpoint's 415 names: the bodies it lets through to us.
        (
            "Accept".to_owned(),
            crieur_sip::endpoint::SDP_ACCEPT.to_owned(),
        ),
    ];
    if !SUPPORTED.is_empty() {
        h.push(("Supported".to_owned(), SUPPORTED_VALUE.to_owned()));
    }
    h
}

/// The option tags we support (RFC 3261 §20.37): `timer` (RFC 4028 session timers: we refresh
/// when made the refresher, and end a session the far end stops refreshing). `100rel` is not.
pub const SUPPORTED: &[&str] = &["timer"];

/// Whether `user` is a telephone-subscriber (RFC 3966 §3): a global number (`+` and digits,
/// visual separators `-` `.` allowed) or a local one with its `phone-context`.
pub fn is_telephone_number(user: &str) -> bool {
    let digits = |s: &str, extra: &str| {
        s.chars().any(|c| c.is_ascii_digit())
            && s.chars()
                .all(|c| c.is_ascii_digit() || "-.".contains(c) || extra.contains(c))
    };
    match user.split_once(";phone-context=") {
        Some((local, ctx)) => !ctx.is_empty() && digits(local, "*#ABCDabcd"),
        None => user.strip_prefix('+').is_some_and(|g| digits(g, "")),
    }
}

/// `sip:<user>@<host>`, with `;user=phone` when the user part is a telephone number (RFC 3261
/// §19.1.1: trunks route `sip:+33…@host;user=phone` as a number, not as a user name).
pub fn sip_uri(user: &str, host: &str) -> String {
    // `concat`: one string of its size, no formatting machinery (a URI per call, S1 step 42).
    if is_telephone_number(user) {
        ["sip:", user, "@", host, ";user=phone"].concat()
    } else {
        ["sip:", user, "@", host].concat()
    }
}

/// A `P-Asserted-Identity` value (RFC 3325 §9.1) from a configured `sip:`, `sips:` or `tel:`
/// URI: a SIP URI whose user part is a telephone number gets `;user=phone` unless it names
/// a `user` parameter already. `None` when it is not such a URI.
pub fn p_asserted_identity(uri: &str) -> Option<String> {
    let uri = uri.trim();
    let (scheme, rest) = uri.split_once(':')?;
    let valid = |s: &str| !s.is_empty() && !s.contains(['<', '>', '"', ',', ' ']);
    if !valid(rest) {
        return None;
    }
    match scheme.to_ascii_lowercase().as_str() {
        "tel" => Some(format!("<{uri}>")),
        "sip" | "sips" => {
            let (user, host) = rest.split_once('@')?;
            if user.is_empty() || host.is_empty() {
                return None;
            }
            let has_user_param = host
                .split(';')
                .skip(1)
                .any(|p| p.to_ascii_lowercase().starts_with("user="));
            if is_telephone_number(user) && !has_user_param {
                Some(format!("<{uri};user=phone>"))
            } else {
                Some(format!("<{uri}>"))
            }
        }
        _ => None,
    }
}

/// The headers our INVITE carries beyond the ones every request has.
pub fn invite_headers(p_asserted_identity: Option<&str>) -> Vec<Header> {
    // Sized once for the three headers; `Allow` and `Supported` from their constants joined
    // (no `join` per call: one INVITE per call, BENCHMARKS.md S1 step 37).
    let mut h = Vec::with_capacity(3);
    h.push(("Allow".to_owned(), ALLOW.to_owned()));
    if !SUPPORTED.is_empty() {
        h.push(("Supported".to_owned(), SUPPORTED_VALUE.to_owned()));
    }
    if let Some(pai) = p_asserted_identity {
        h.push(("P-Asserted-Identity".to_owned(), pai.to_owned()));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telephone_numbers_get_user_phone() {
        assert!(is_telephone_number("+33612345678"));
        assert!(is_telephone_number("+1-202-555-0100"));
        assert!(is_telephone_number("1234;phone-context=example.com"));
        assert!(!is_telephone_number("0612345678")); // local, without its context
        assert!(!is_telephone_number("alice"));
        assert!(!is_telephone_number("+"));
        assert!(!is_telephone_number("+33a"));
        assert_eq!(
            sip_uri("+33612345678", "trunk.example:5060"),
            "sip:+33612345678@trunk.example:5060;user=phone"
        );
        assert_eq!(sip_uri("alice", "h"), "sip:alice@h");
    }

    #[test]
    fn allow_and_supported_are_their_lists() {
        assert_eq!(ALLOW, ALLOWED.join(", "));
        assert_eq!(SUPPORTED_VALUE, SUPPORTED.join(", "));
    }

    #[test]
    fn p_asserted_identity_values() {
        assert_eq!(
            p_asserted_identity("sip:+33100000000@example.fr").as_deref(),
            Some("<sip:+33100000000@example.fr;user=phone>")
        );
        assert_eq!(
            p_asserted_identity("sip:+33100000000@example.fr;user=phone").as_deref(),
            Some("<sip:+33100000000@example.fr;user=phone>")
        );
        assert_eq!(
            p_asserted_identity("tel:+33100000000").as_deref(),
            Some("<tel:+33100000000>")
        );
        assert_eq!(
            p_asserted_identity("sip:ops@example.fr").as_deref(),
            Some("<sip:ops@example.fr>")
        );
        for bad in [
            "",
            "+33100000000",
            "http://x",
            "sip:@x",
            "sip:a@",
            "sip:a b@x",
        ] {
            assert_eq!(p_asserted_identity(bad), None, "{bad}");
        }
    }
}
