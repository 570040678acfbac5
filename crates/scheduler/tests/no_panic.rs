//! Parsers of user input return errors, never panic, whatever the input.

use crieur_scheduler::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn windows_parser(s in ".{0,40}") {
        let _ = s.parse::<Windows>();
    }

    #[test]
    fn windows_parser_near_grammar(s in "[a-z,; -]{0,12}[0-9:, -]{0,20}[;a-z0-9: -]{0,12}") {
        if let Err(Error::InvalidWindow { column, .. }) = s.parse::<Windows>() {
            prop_assert!(column >= 1 && column <= s.chars().count() + 1);
        }
    }

    #[test]
    fn cron_parser(s in "[0-9*/,a-z -]{0,30}") {
        let _ = s.parse::<CronExpr>();
    }

    #[test]
    fn phone_parser(s in "\\+?[0-9 ()+.-]{0,20}") {
        let _ = s.parse::<E164>();
    }

    #[test]
    fn any_text_as_phone_or_zone(s in ".{0,24}") {
        let _ = s.parse::<E164>();
        let _ = parse_zone(&s);
    }
}
