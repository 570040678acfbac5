//! Located input errors: every problem names its file, line, column or field, the bad
//! value and what was expected. They map to exit code 2.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in an input file. Built with [`InputError::new`] and its located setters
/// ([`at`](InputError::at), [`field`](InputError::field), [`value`](InputError::value)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InputError {
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The field (CSV column or TOML key), when there is one.
    pub field: Option<String>,
    /// The offending value, when there is one.
    pub value: Option<String>,
    /// What is wrong / what was expected.
    pub message: String,
}

impl InputError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        InputError {
            file: file.to_owned(),
            line: None,
            column: None,
            field: None,
            value: None,
            message: cap_at(message.into(), MESSAGE_MAX),
        }
    }
    pub fn at(mut self, line: usize, column: Option<usize>) -> Self {
        self.line = Some(line);
        self.column = column;
        self
    }
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    /// The offending value, capped at [`ECHO_MAX`] characters: a megabyte field is not
    /// echoed whole.
    pub fn value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(cap(value.into()));
        self
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        if let Some(v) = &self.value {
            write!(f, "bad value `{v}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// All the problems found in the inputs; the command prints each and exits 2.
#[derive(Debug)]
pub struct InputErrors(pub Vec<InputError>);

impl fmt::Display for InputErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InputErrors {}

impl From<InputError> for InputErrors {
    fn from(e: InputError) -> Self {
        InputErrors(vec![e])
    }
}

impl From<Box<InputError>> for InputErrors {
    fn from(e: Box<InputError>) -> Self {
        InputErrors(vec![*e])
    }
}

/// The most characters of a bad value an error echoes.
pub const ECHO_MAX: usize = 80;

/// `value` if it has at most [`ECHO_MAX`] characters, else its first [`ECHO_MAX`] and how
/// long it was: `abc… (1048576 bytes)`.
pub fn cap(value: String) -> String {
    cap_at(value, ECHO_MAX)
}

/// `text` cut after `max` characters, with its size.
fn cap_at(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text,
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

/// The most characters of a message printed: a message that quotes a huge input (a parser's
/// own, say) is cut too.
const MESSAGE_MAX: usize = 400;

/// Strips a leading UTF-8 byte-order mark (spreadsheets and Windows editors write one).
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes)
}

/// Reads a text input file: a leading byte-order mark is dropped, and bytes that are not
/// UTF-8 are an error at their line and column (the column counts the characters before
/// them, plus one).
pub fn read_text(path: &Path, what: &str) -> Result<String, InputErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| InputError::new(path, format!("cannot read the {what}: {e}")))?;
    text_of(path, strip_bom(&bytes).to_vec()).map_err(InputErrors::from)
}

/// The SHA-256 of a file's bytes, in lowercase hex (how the audit log names a recording or
/// a campaign file).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path)?;
    Ok(hex::encode(sha2::Sha256::digest(&bytes)))
}

/// `bytes` as text, or an error at the first invalid byte.
pub fn text_of(path: &Path, bytes: Vec<u8>) -> Result<String, Box<InputError>> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        // Everything before `at` is valid UTF-8.
        let before = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
        let (line, col) = line_col(before, before.len());
        InputError::new(
            path,
            format!(
                "not UTF-8 text: byte 0x{:02x} cannot start or continue a character (save the file as UTF-8)",
                bytes.get(at).copied().unwrap_or(0)
            ),
        )
        .at(line, Some(col))
        .into()
    })
}

/// 1-based (line, column) of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses a TOML document into `T`, reporting every problem rather than the first: every
/// syntax error; then, deserialising again with each offending key left out, every unknown
/// key and every value of the wrong type (a required key left out this way is not reported
/// again as missing). Returns the problems, and `T` as read without the offending keys when
/// that could be built (so that the caller's own checks can report theirs too).
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> (Option<T>, Vec<InputError>) {
    use toml::de::{DeTable, DeValue};
    let located = |e: &toml::de::Error| {
        let mut err = InputError::new(path, e.message().trim_end().to_owned());
        if let Some(span) = e.span() {
            let (l, c) = line_col(text, span.start);
            err = err.at(l, Some(c));
        }
        err
    };
    let (mut doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return (None, syntax.iter().map(located).collect());
    }
    doc.get_mut().make_owned();
    /// Removes the innermost entry of `table` whose key or value holds `span` (its value
    /// *is* `span` when `exact`); returns its key.
    fn remove_at(table: &mut DeTable<'_>, span: &Range<usize>, exact: bool) -> Option<String> {
        // A `[table]`'s span is its header only, not the keys under it: look inside every
        // table first.
        for (_, v) in table.iter_mut() {
            if v.span() == *span {
                continue;
            }
            if let DeValue::Table(inner) = v.get_mut() {
                if let Some(key) = remove_at(inner, span, exact) {
                    return Some(key);
                }
            }
        }
        let key = table
            .iter()
            .find(|(k, v)| {
                let (ks, vs) = (k.span(), v.span());
                vs == *span || (!exact && (ks.contains(&span.start) || vs.contains(&span.start)))
            })
            .map(|(k, _)| k.get_ref().to_string())?;
        table.remove(key.as_str());
        Some(key)
    }
    let mut errors = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    // Each round removes one entry, so this ends; the bound is a safeguard.
    for _ in 0..256 {
        match T::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(v) => return (Some(v), errors),
            Err(e) => {
                let missing = e
                    .message()
                    .strip_prefix("missing field `")
                    .and_then(|m| m.split('`').next())
                    .map(str::to_owned);
                if !missing.as_ref().is_some_and(|m| removed.contains(m)) {
                    errors.push(located(&e));
                }
                // A missing key is reported at its table: leave that table out (the root
                // cannot be left out: stop there).
                let next = match e.span() {
                    Some(s) if missing.is_some() && s == doc.span() => None,
                    Some(s) => remove_at(doc.get_mut(), &s, missing.is_some()),
                    None => None,
                };
                match next {
                    Some(key) => removed.push(key),
                    None => break,
                }
            }
        }
    }
    if errors.is_empty() {
        errors.push(InputError::new(path, "cannot read the TOML document"));
    }
    (None, errors)
}
