//! The contacts file (CSV) → contacts with their consent records.
//!
//! Columns (header required, any order): `id,phone,zone,windows,granted_at,expires_at,
//! revoked_at,source,proof`. Several rows with the same `id` are several consent records of
//! one contact; they must agree on `phone` and `zone`.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use crieur_scheduler::{parse_zone, ConsentRecord, Contact, ContactId, Windows, E164};

use crate::input::{InputError, InputErrors};

pub const COLUMNS: [&str; 9] = [
    "id",
    "phone",
    "zone",
    "windows",
    "granted_at",
    "expires_at",
    "revoked_at",
    "source",
    "proof",
];
const REQUIRED: [bool; 9] = [true, true, false, true, true, false, false, true, true];

/// Contacts in file order, plus non-fatal findings.
#[derive(Debug, Default)]
pub struct Loaded {
    pub contacts: Vec<Contact>,
    pub rows: usize,
}

/// Reads and validates a contacts file. Either every row is valid, or every problem is
/// reported and nothing is returned.
/// [`load`], showing progress on `bar` (bytes read).
pub fn load_with_progress(
    path: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<Loaded, InputErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| InputError::new(path, format!("cannot read the contacts file: {e}")))?;
    bar.set_length(bytes.len() as u64);
    load_bytes(path, &bytes, Some(bar))
}

pub fn load(path: &Path) -> Result<Loaded, InputErrors> {
    // Read whole: the contacts are held in memory anyway, and line numbers for errors are
    // counted from byte offsets (the csv crate's own line count is off with CRLF endings).
    let bytes = std::fs::read(path)
        .map_err(|e| InputError::new(path, format!("cannot read the contacts file: {e}")))?;
    load_bytes(path, &bytes, None)
}

/// A row left out by [`load_lenient`].
#[derive(Debug)]
pub struct Reject {
    pub line: usize,
    pub fields: Vec<String>,
    pub reasons: Vec<String>,
}

/// Like [`load`], but keeps the valid rows and returns each invalid one with its reasons.
/// Problems with the file itself (unreadable, bad header) are still errors.
pub fn load_lenient(
    path: &Path,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<(Loaded, Vec<Reject>, csv::StringRecord), InputErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| InputError::new(path, format!("cannot read the contacts file: {e}")))?;
    let errors = match load_bytes(path, &bytes, bar) {
        Ok(l) => return Ok((l, Vec::new(), header_of(&bytes))),
        Err(e) => e.0,
    };
    if errors.iter().any(|e| e.line.is_none_or(|l| l <= 1)) {
        return Err(InputErrors(errors));
    }
    let mut by_line: HashMap<usize, Vec<String>> = HashMap::new();
    for e in &errors {
        let mut msg = e.to_string();
        // Drop the "file:line:col: " prefix; the rejects file has its own line column.
        if let Some(i) = msg.find(": ") {
            msg = msg[i + 2..].to_owned();
        }
        by_line.entry(e.line.unwrap_or(0)).or_default().push(msg);
    }
    let header = header_of(&bytes);
    let mut lines = LineIndex::new(&bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes.as_slice());
    let mut kept = csv::Writer::from_writer(Vec::new());
    let mut rejects = Vec::new();
    let _ = kept.write_record(&header);
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // A malformed record (bad UTF-8, wrong column count) is rejected, not the rest.
                let line = e.position().map_or(0, |p| lines.line_of(p.byte()));
                rejects.push(Reject {
                    line,
                    fields: Vec::new(),
                    reasons: vec![format!("malformed CSV: {e}")],
                });
                by_line.remove(&line);
                continue;
            }
        }
        let line = record.position().map_or(0, |p| lines.line_of(p.byte()));
        match by_line.remove(&line) {
            Some(reasons) => rejects.push(Reject {
                line,
                fields: record.iter().map(str::to_owned).collect(),
                reasons,
            }),
            None => {
                let _ = kept.write_record(&record);
            }
        }
    }
    let kept = kept
        .into_inner()
        .map_err(|e| InputError::new(path, e.to_string()))?;
    let loaded = load_bytes(path, &kept, None)?;
    Ok((loaded, rejects, header))
}

fn header_of(bytes: &[u8]) -> csv::StringRecord {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(bytes)
        .headers()
        .cloned()
        .unwrap_or_default()
}

fn load_bytes(
    path: &Path,
    bytes: &[u8],
    bar: Option<&indicatif::ProgressBar>,
) -> Result<Loaded, InputErrors> {
    let mut lines = LineIndex::new(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| InputError::new(path, format!("cannot read the header: {e}")).at(1, None))?
        .clone();
    let mut index = [usize::MAX; 9];
    let mut errors = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        // Spreadsheets often save UTF-8 with a byte-order mark.
        let h = if i == 0 {
            h.trim_start_matches('\u{feff}')
        } else {
            h
        };
        match COLUMNS.iter().position(|c| *c == h) {
            Some(k) => index[k] = i,
            None => errors.push(
                InputError::new(
                    path,
                    format!("unknown column; expected the columns {}", COLUMNS.join(",")),
                )
                .at(1, Some(i + 1))
                .value(h),
            ),
        }
    }
    for (k, name) in COLUMNS.iter().enumerate() {
        if index[k] == usize::MAX {
            errors.push(
                InputError::new(
                    path,
                    format!(
                        "missing column `{name}`; expected the columns {}",
                        COLUMNS.join(",")
                    ),
                )
                .at(1, None),
            );
        }
    }
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }

    let mut out = Loaded::default();
    let mut by_id: HashMap<String, (usize, usize)> = HashMap::new(); // id → (contact index, line)
                                                                     // Validation runs on one thread: most of its cost is the `phonenumber` crate, whose
                                                                     // regexes sit behind one process-wide mutex, so more threads made it slower (measured,
                                                                     // see BENCHMARKS.md).
    let mut record = csv::StringRecord::new();
    loop {
        let row = match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                out.rows += 1;
                if let Some(b) = bar.filter(|_| out.rows % 4096 == 0) {
                    b.set_position(record.position().map_or(0, |p| p.byte()));
                }
                let line = record.position().map_or(0, |p| lines.line_of(p.byte()));
                parse_row(path, &index, &record, line)
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line_of(p.byte()));
                let io = matches!(e.kind(), csv::ErrorKind::Io(_));
                errors.push(InputError::new(path, format!("malformed CSV: {e}")).at(line, None));
                if io {
                    break;
                }
                continue;
            }
        };
        let row = match row {
            Ok(r) => r,
            Err(mut e) => {
                errors.append(&mut e);
                continue;
            }
        };
        match by_id.get(row.id.as_str()) {
            Some(&(i, first_line)) => {
                let c = &mut out.contacts[i];
                let err = |k: usize, msg: String, value: &str| {
                    InputError::new(path, msg)
                        .at(row.line, Some(index[k] + 1))
                        .field(COLUMNS[k])
                        .value(value)
                };
                if c.phone() != &row.phone {
                    errors.push(err(
                        1,
                        format!(
                            "contact `{}` has another phone on line {first_line} ({})",
                            row.id,
                            c.phone()
                        ),
                        row.phone.as_str(),
                    ));
                } else if c.given_zone() != row.zone {
                    errors.push(err(
                        2,
                        format!("contact `{}` has another zone on line {first_line}", row.id),
                        row.zone.map_or("", |z| z.name()),
                    ));
                } else {
                    c.add_consent(row.consent);
                }
            }
            None => {
                by_id.insert(row.id.as_str().to_owned(), (out.contacts.len(), row.line));
                out.contacts
                    .push(Contact::new(row.id, row.phone, row.zone, vec![row.consent]));
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(InputErrors(errors))
    }
}

/// One valid row: a consent record of a contact.
struct Row {
    line: usize,
    id: ContactId,
    phone: E164,
    zone: Option<chrono_tz::Tz>,
    consent: ConsentRecord,
}

/// Validates one record; every problem of the row is reported, each at its column.
fn parse_row(
    path: &Path,
    index: &[usize; 9],
    record: &csv::StringRecord,
    line: usize,
) -> Result<Row, Vec<InputError>> {
    let field = |k: usize| record.get(index[k]).unwrap_or("");
    let err = |k: usize, msg: String| {
        InputError::new(path, msg)
            .at(line, Some(index[k] + 1))
            .field(COLUMNS[k])
            .value(field(k))
    };
    let mut errors = Vec::new();
    for k in 0..9 {
        if REQUIRED[k] && field(k).is_empty() {
            errors.push(
                InputError::new(path, "required, but empty")
                    .at(line, Some(index[k] + 1))
                    .field(COLUMNS[k]),
            );
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let id = ContactId::new(field(0)).map_err(|e| err(0, e.to_string()));
    let phone = field(1).parse::<E164>().map_err(|e| match e {
        crieur_scheduler::Error::InvalidPhone { reason, .. } => {
            err(1, format!("expected an E.164 number: {reason}"))
        }
        e => err(1, e.to_string()),
    });
    let zone = match field(2) {
        "" => Ok(None),
        z => parse_zone(z).map(Some).map_err(|_| {
            err(
                2,
                "expected an IANA time-zone name such as Europe/Paris, or empty to infer it from the number".into(),
            )
        }),
    };
    let windows = field(3).parse::<Windows>().map_err(|e| match e {
        crieur_scheduler::Error::InvalidWindow { column, expected, .. } => err(
            3,
            format!("at character {column} of the field: expected {expected} (grammar: `mon-fri 18:00-20:00; sat 10:00-12:00`)"),
        ),
        e => err(3, e.to_string()),
    });
    let granted = instant(field(4)).map_err(|m| err(4, m));
    let expires = optional_instant(field(5)).map_err(|m| err(5, m));
    let revoked = optional_instant(field(6)).map_err(|m| err(6, m));
    let (id, phone, zone, windows, granted, expires, revoked) =
        match (id, phone, zone, windows, granted, expires, revoked) {
            (Ok(id), Ok(phone), Ok(zone), Ok(windows), Ok(granted), Ok(expires), Ok(revoked)) => {
                (id, phone, zone, windows, granted, expires, revoked)
            }
            (id, phone, zone, windows, granted, expires, revoked) => {
                let all = [
                    id.err(),
                    phone.err(),
                    zone.err(),
                    windows.err(),
                    granted.err(),
                    expires.err(),
                    revoked.err(),
                ];
                return Err(all.into_iter().flatten().collect());
            }
        };
    if expires.is_some_and(|e| e <= granted) {
        return Err(vec![err(
            5,
            format!(
                "expected an instant after granted_at ({})",
                granted.to_rfc3339()
            ),
        )]);
    }
    if revoked.is_some_and(|r| r < granted) {
        return Err(vec![err(
            6,
            format!(
                "expected an instant not before granted_at ({})",
                granted.to_rfc3339()
            ),
        )]);
    }
    Ok(Row {
        line,
        id,
        phone,
        zone,
        consent: ConsentRecord {
            windows,
            granted_at: granted,
            expires_at: expires,
            revoked_at: revoked,
            source: field(7).to_owned(),
            proof: field(8).to_owned(),
        },
    })
}

fn instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 instant such as 2027-01-10T09:00:00Z ({e})"))
}

fn optional_instant(s: &str) -> Result<Option<DateTime<Utc>>, String> {
    if s.is_empty() {
        Ok(None)
    } else {
        instant(s).map(Some)
    }
}

/// 1-based line numbers of byte offsets, for offsets that mostly increase.
struct LineIndex<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> LineIndex<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        LineIndex {
            bytes,
            pos: 0,
            line: 1,
        }
    }

    fn line_of(&mut self, byte: u64) -> usize {
        let mut byte = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        // With CRLF endings the csv crate reports a record as starting at the `\n` of the
        // previous line's terminator: skip terminators to the record's first byte.
        while matches!(self.bytes.get(byte), Some(b'\r' | b'\n')) {
            byte += 1;
        }
        if byte < self.pos {
            (self.pos, self.line) = (0, 1);
        }
        self.line += self.bytes[self.pos..byte]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.pos = byte;
        self.line
    }
}
