//! Opt-out lists: one E.164 number a line (blank lines and `#` comments skipped), each bad
//! line located.

use std::path::Path;

use crieur_scheduler::E164;

use crate::input::{InputError, InputErrors};

/// `s` as an E.164 number; a bad one is located in `file` (at `line`, if any).
pub fn number(s: &str, file: &Path, line: Option<usize>) -> Result<E164, InputErrors> {
    s.trim().parse::<E164>().map_err(|e| {
        let why = match e {
            crieur_scheduler::Error::InvalidPhone { reason, .. } => {
                format!("expected an E.164 number: {reason}")
            }
            e => e.to_string(),
        };
        let e = InputError::new(file, why).value(s.trim());
        InputErrors::from(match line {
            Some(l) => e.at(l, Some(1)),
            None => e,
        })
    })
}

/// The numbers of an opt-out list read from `file` (its `text`), and every line that is not
/// one.
pub fn parse(file: &Path, text: &str) -> (Vec<E164>, Vec<InputError>) {
    let mut numbers = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match number(l, file, Some(i + 1)) {
            Ok(n) => numbers.push(n),
            Err(e) => errors.extend(e.0),
        }
    }
    (numbers, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_blank_lines_are_skipped_and_bad_lines_located() {
        let (numbers, errors) = parse(
            Path::new("l.txt"),
            "# list\n+33612345678\n\n  +33612345679 \nnope\n",
        );
        assert_eq!(numbers.len(), 2);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(5));
        assert!(
            errors[0].message.starts_with("expected an E.164 number"),
            "{}",
            errors[0].message
        );
    }
}
