//! Opt-out numbers and lists as the command line and the control API read them: one E.164
//! number per line, blank lines and `#` comments skipped, every bad line located.

use std::path::Path;

use crieur_scheduler::E164;

use crate::input::{InputError, InputErrors};

/// Reads one number (`+` and digits, E.164), located at `line` of `file` when given.
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

/// Reads an opt-out list (the text of `file`): the valid numbers, and every bad line located.
pub fn list(text: &str, file: &Path) -> (Vec<E164>, Vec<InputError>) {
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
    fn a_list_keeps_the_good_numbers_and_locates_each_bad_line() {
        let (ok, bad) = list(
            "# comment\n+33612345678\n\nnot a number\n +14155550100 \n",
            Path::new("l.txt"),
        );
        assert_eq!(ok.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].line, Some(4));
        assert_eq!(bad[0].value.as_deref(), Some("not a number"));
    }
}
