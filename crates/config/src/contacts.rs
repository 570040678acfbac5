//! The contacts file (CSV) → contacts with their consent records.
//!
//! Columns (header required, any order): `id,phone,zone,windows,granted_at,expires_at,
//! revoked_at,source,proof`. Several rows with the same `id` are several consent records of
//! one contact; they must agree on `phone` and `zone`.

use std::collections::HashMap;
use std::path::Path;

use sha2::Digest;

use chrono::{DateTime, Utc};
use crieur_scheduler::{parse_zone, ConsentRecord, Contact, ContactId, WindowsCache, E164};

use crate::input::{strip_bom, InputError, InputErrors};

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

/// How to read a contacts file.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The field separator (default `,`).
    pub delimiter: u8,
    /// Numbers without `+` are national numbers of this region (`--default-region FR`);
    /// without it every number must be in E.164.
    pub default_region: Option<phonenumber::country::Id>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            delimiter: b',',
            default_region: None,
        }
    }
}

impl Options {
    /// A reader that takes every record as it comes (the header too), whatever its width.
    pub(crate) fn reader_no_headers<R: std::io::Read>(&self, r: R) -> csv::Reader<R> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(self.delimiter)
            .from_reader(r)
    }

    fn reader(&self) -> csv::ReaderBuilder {
        let mut b = csv::ReaderBuilder::new();
        b.has_headers(true).delimiter(self.delimiter);
        b
    }
}

/// Contacts in file order, plus non-fatal findings.
#[derive(Debug, Default)]
pub struct Loaded {
    pub contacts: Vec<Contact>,
    pub rows: usize,
    /// SHA-256 of the file as read (for the audit record of an import).
    pub sha256: [u8; 32],
}

/// [`load`], reporting progress (bytes read) to `progress`.
pub fn load_with_progress(
    path: &Path,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Loaded, InputErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| InputError::new(path, format!("cannot read the contacts file: {e}")))?;
    progress.length(bytes.len() as u64);
    load_bytes(path, opts, &bytes, Some(progress), None)
}

/// Where a long read reports how far it got (a progress bar, a log line).
pub trait Progress {
    /// The input's length in bytes, once known.
    fn length(&self, bytes: u64);
    /// Bytes read so far.
    fn position(&self, bytes: u64);
}

/// Reads and validates a contacts file. Either every row is valid, or every problem is
/// reported and nothing is returned.
pub fn load(path: &Path, opts: &Options) -> Result<Loaded, InputErrors> {
    // Read whole: the contacts are held in memory anyway, and line numbers for errors are
    // counted from byte offsets (the csv crate's own line count is off with CRLF endings).
    let bytes = std::fs::read(path)
        .map_err(|e| InputError::new(path, format!("cannot read the contacts file: {e}")))?;
    load_bytes(path, opts, &bytes, None, None)
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
    opts: &Options,
    progress: Option<&dyn Progress>,
) -> Result<(Loaded, Vec<Reject>, csv::StringRecord), InputErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| InputError::new(path, format!("cannot read the contacts file: {e}")))?;
    let errors = match load_bytes(path, opts, &bytes, progress, None) {
        Ok(l) => return Ok((l, Vec::new(), header_of(opts, &bytes))),
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
    let header = header_of(opts, &bytes);
    // Line numbers and the reader over the same bytes (after any byte-order mark), as in
    // `load_bytes`.
    let body = strip_bom(&bytes);
    let mut lines = LineIndex::new(body, None);
    let mut reader = opts.reader().from_reader(body);
    let mut kept = csv::WriterBuilder::new()
        .delimiter(opts.delimiter)
        .from_writer(Vec::new());
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
    let mut loaded = load_bytes(path, opts, &kept, None, None)?;
    loaded.sha256 = sha2::Sha256::digest(&bytes).into();
    Ok((loaded, rejects, header))
}

fn header_of(opts: &Options, bytes: &[u8]) -> csv::StringRecord {
    opts.reader()
        .from_reader(strip_bom(bytes))
        .headers()
        .cloned()
        .unwrap_or_default()
}

/// The separator a header line uses if it is not the one it was read with: a header read
/// as a single field that splits into known column names on `;`, tab or `|`.
fn other_delimiter(headers: &csv::StringRecord, used: u8) -> Option<char> {
    let only = match headers.len() {
        1 => headers.get(0)?,
        _ => return None,
    };
    [',', ';', '\t', '|']
        .into_iter()
        .filter(|&d| d as u32 != u32::from(used))
        .find(|&d| {
            let names: Vec<&str> = only.split(d).map(|n| n.trim().trim_matches('"')).collect();
            names.len() > 1
                && names
                    .iter()
                    .filter(|n| COLUMNS.iter().any(|c| c.eq_ignore_ascii_case(n)))
                    .count()
                    >= 2
        })
}

/// Validates the bytes of a contacts file (as read: a byte-order mark is dropped),
/// locating every problem in `path`; [`load`] without the reading.
pub fn parse(path: &Path, opts: &Options, file: &[u8]) -> Result<Loaded, InputErrors> {
    load_bytes(path, opts, file, None, None)
}

/// Validates `file` (a whole contacts file, or a part of one: its header then some of its
/// rows, `lines` giving the line in `path` of each of the part's lines after the header).
pub(crate) fn load_bytes(
    path: &Path,
    opts: &Options,
    file: &[u8],
    progress: Option<&dyn Progress>,
    lines: Option<&[u32]>,
) -> Result<Loaded, InputErrors> {
    // Spreadsheets often save UTF-8 with a byte-order mark (the hash is of the file as read).
    let bytes = strip_bom(file);
    let mut lines = LineIndex::new(bytes, lines);
    // Fields are trimmed (and checked for UTF-8) by the workers, not by the reader: this
    // thread only frames records, the one part that cannot be spread over the cores.
    let mut reader = opts.reader().from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| InputError::new(path, format!("cannot read the header: {e}")).at(1, None))?
        .clone();
    let mut index = [usize::MAX; 9];
    let mut errors = Vec::new();
    for (i, h) in headers.iter().enumerate() {
        // Spreadsheets often save UTF-8 with a byte-order mark; headers are matched
        // whatever their case (`Phone`, `PHONE`).
        let h = if i == 0 {
            h.trim_start_matches('\u{feff}').trim()
        } else {
            h.trim()
        };
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(h)) {
            // Two columns of one name: which one is meant cannot be known (the consent
            // would be attached to the wrong number).
            Some(k) if index[k] != usize::MAX => errors.push(
                InputError::new(
                    path,
                    format!(
                        "column {} and column {} are both `{}`; expected each column once",
                        index[k] + 1,
                        i + 1,
                        COLUMNS[k]
                    ),
                )
                .at(1, Some(i + 1))
                .value(h),
            ),
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
    if let Some(d) = other_delimiter(&headers, opts.delimiter) {
        // One column holding the names joined by another separator: say so rather than
        // listing every column as missing.
        return Err(InputError::new(
            path,
            format!(
                "this file looks `{}`-separated; give --delimiter '{}'",
                d.escape_default(),
                d.escape_default()
            ),
        )
        .at(1, None)
        .into());
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

    // Sized from the line count up front: growing these while millions of contacts stream
    // in was a tenth of the load time (copies and fresh pages).
    let rows = bytes.iter().filter(|&&b| b == b'\n').count();
    let mut out = Loaded {
        contacts: Vec::with_capacity(rows),
        rows: 0,
        sha256: [0; 32],
    };
    let mut by_id = ById::with_capacity(rows);
    // Rows are read in blocks on this thread (CSV framing and line numbers are sequential),
    // validated on every core, then merged in file order here. Each worker keeps the
    // windows it has parsed: a campaign's contacts share a few distinct window texts.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    std::thread::scope(|scope| {
        let digest = scope.spawn(|| <[u8; 32]>::from(sha2::Sha256::digest(file)));
        // Long-lived workers (their allocator heaps and regex caches stay warm), each with
        // its own queue; blocks go round-robin and come back in order.
        let mut queues = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (to_worker, jobs) = std::sync::mpsc::channel::<Block>();
            let (to_main, done) = std::sync::mpsc::channel::<(Block, Parsed)>();
            let index = &index;
            scope.spawn(move || {
                let mut cache = WindowsCache::default();
                for block in jobs {
                    let parsed = block
                        .records
                        .iter()
                        .zip(&block.lines)
                        .take(block.len)
                        .map(|(r, &l)| parse_row(path, opts, index, r, l, &mut cache))
                        .collect();
                    if to_main.send((block, parsed)).is_err() {
                        break;
                    }
                }
            });
            queues.push((to_worker, done));
        }
        let mut spare: Vec<Block> = Vec::new();
        let mut in_flight = std::collections::VecDeque::new();
        let mut sent = 0usize;
        let mut end = false;
        loop {
            while !end && in_flight.len() < 2 * workers {
                let mut block = spare.pop().unwrap_or_else(Block::new);
                end = read_block(path, &mut reader, &mut lines, &mut block, &mut errors);
                out.rows += block.len;
                if let Some(b) = progress {
                    if let Some(p) = block.records[..block.len].last().and_then(|r| r.position()) {
                        b.position(p.byte());
                    }
                }
                let w = sent % workers;
                if queues[w].0.send(block).is_err() {
                    break;
                }
                in_flight.push_back(w);
                sent += 1;
            }
            let Some(w) = in_flight.pop_front() else {
                break;
            };
            // A closed queue means the worker panicked; leaving the scope re-raises it.
            let Ok((block, parsed)) = queues[w].1.recv() else {
                break;
            };
            spare.push(block);
            for row in parsed {
                match row {
                    Ok(r) => by_id.merge(path, &index, &mut out, &mut errors, r),
                    Err(mut e) => errors.append(&mut e),
                }
            }
        }
        // Closing the queues ends the workers.
        drop(queues);
        out.sha256 = digest
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
    });
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(InputErrors(errors))
    }
}

/// Rows validated per block.
const BLOCK: usize = 8192;

/// A block of CSV records and their line numbers; `len` of them are filled.
struct Block {
    records: Vec<csv::ByteRecord>,
    lines: Vec<usize>,
    len: usize,
}

type Parsed = Vec<Result<Row, Vec<InputError>>>;

impl Block {
    fn new() -> Self {
        Block {
            records: vec![csv::ByteRecord::new(); BLOCK],
            lines: vec![0; BLOCK],
            len: 0,
        }
    }
}

/// Fills `block` with up to [`BLOCK`] records; malformed ones go to `errors`. Returns
/// whether the file has ended.
fn read_block(
    path: &Path,
    reader: &mut csv::Reader<&[u8]>,
    lines: &mut LineIndex<'_>,
    block: &mut Block,
    errors: &mut Vec<InputError>,
) -> bool {
    block.len = 0;
    while block.len < BLOCK {
        let n = block.len;
        match reader.read_byte_record(&mut block.records[n]) {
            Ok(false) => return true,
            Ok(true) => {
                block.lines[n] = block.records[n]
                    .position()
                    .map_or(0, |p| lines.line_of(p.byte()));
                block.len += 1;
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line_of(p.byte()));
                let io = matches!(e.kind(), csv::ErrorKind::Io(_));
                errors.push(InputError::new(path, format!("malformed CSV: {e}")).at(line, None));
                if io {
                    return true;
                }
            }
        }
    }
    false
}

/// Contacts by id without a copy of each id: keyed by the id's hash (computed on the
/// workers), the index checked against the contact itself; a true 64-bit collision falls
/// back to a map by id.
struct ById {
    by_hash: HashMap<u64, usize, std::hash::BuildHasherDefault<Prehashed>>,
    collided: HashMap<String, usize>,
    /// The first line of each contact.
    first_line: Vec<usize>,
}

/// The hasher of keys that are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The hash of a contact id (SipHash with fixed keys: the same on every thread).
fn id_hash(id: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(id)
}

impl ById {
    fn with_capacity(n: usize) -> Self {
        ById {
            by_hash: HashMap::with_capacity_and_hasher(n, Default::default()),
            collided: HashMap::new(),
            first_line: Vec::with_capacity(n),
        }
    }

    fn get(&self, contacts: &[Contact], hash: u64, id: &str) -> Option<usize> {
        match self.by_hash.get(&hash) {
            Some(&i) if contacts.get(i).is_some_and(|c| c.id().as_str() == id) => Some(i),
            Some(_) => self.collided.get(id).copied(),
            None => None,
        }
    }

    /// Adds a valid row to the contacts: a new contact, or one more consent record of a
    /// contact already seen (which must agree on phone and zone).
    fn merge(
        &mut self,
        path: &Path,
        index: &[usize; 9],
        out: &mut Loaded,
        errors: &mut Vec<InputError>,
        row: Row,
    ) {
        let row_id = row.contact.id().as_str();
        match self.get(&out.contacts, row.id_hash, row_id) {
            Some(i) => {
                let first_line = self.first_line.get(i).copied().unwrap_or(0);
                let c = &mut out.contacts[i];
                let err = |k: usize, msg: String, value: &str| {
                    InputError::new(path, msg)
                        .at(row.line, Some(index[k] + 1))
                        .field(COLUMNS[k])
                        .value(value)
                };
                let new = &row.contact;
                if c.phone() != new.phone() {
                    errors.push(err(
                        1,
                        format!(
                            "contact `{}` has another phone on line {first_line} ({})",
                            row_id,
                            c.phone()
                        ),
                        new.phone().as_str(),
                    ));
                } else if c.given_zone() != new.given_zone() {
                    errors.push(err(
                        2,
                        format!("contact `{row_id}` has another zone on line {first_line}"),
                        new.given_zone().map_or("", |z| z.name()),
                    ));
                } else {
                    for consent in new.consents() {
                        c.add_consent(consent.clone());
                    }
                }
            }
            None => {
                let i = out.contacts.len();
                if let std::collections::hash_map::Entry::Vacant(v) =
                    self.by_hash.entry(row.id_hash)
                {
                    v.insert(i);
                } else {
                    self.collided.insert(row_id.to_owned(), i);
                }
                self.first_line.push(row.line);
                out.contacts.push(row.contact);
            }
        }
    }
}

/// One valid row: a consent record of a contact.
/// (Built whole on the worker, so the merging thread only files it.)
struct Row {
    line: usize,
    id_hash: u64,
    /// The contact with this row's consent record.
    contact: Contact,
}

/// Validates one record; every problem of the row is reported, each at its column.
fn parse_row(
    path: &Path,
    opts: &Options,
    index: &[usize; 9],
    record: &csv::ByteRecord,
    line: usize,
    windows: &mut WindowsCache,
) -> Result<Row, Vec<InputError>> {
    let mut errors = Vec::new();
    let mut fields = [""; 9];
    for (k, f) in fields.iter_mut().enumerate() {
        match std::str::from_utf8(record.get(index[k]).unwrap_or_default()) {
            Ok(v) => *f = v.trim(),
            Err(e) => errors.push(
                InputError::new(path, format!("malformed CSV: invalid UTF-8 ({e})"))
                    .at(line, Some(index[k] + 1))
                    .field(COLUMNS[k]),
            ),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let field = |k: usize| fields[k];
    let err = |k: usize, msg: String| {
        InputError::new(path, msg)
            .at(line, Some(index[k] + 1))
            .field(COLUMNS[k])
            .value(field(k))
    };
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
    let phone = national(field(1), opts)
        .parse::<E164>()
        .map_err(|e| match e {
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
    let windows = windows.parse(field(3)).map_err(|e| match e {
        crieur_scheduler::Error::InvalidWindow { column, expected, .. } => err(
            3,
            format!("at character {column} of the field: expected {expected} (grammar: `mon-fri 18:00-20:00; sat 10:00-12:00`)"),
        ),
        e => err(3, e.to_string()),
    });
    let granted = instant(field(4)).map_err(|e| err(4, bad_instant(e)));
    let expires = optional_instant(field(5)).map_err(|e| err(5, bad_instant(e)));
    let revoked = optional_instant(field(6)).map_err(|e| err(6, bad_instant(e)));
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
                granted.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        )]);
    }
    if revoked.is_some_and(|r| r < granted) {
        return Err(vec![err(
            6,
            format!(
                "expected an instant not before granted_at ({})",
                granted.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        )]);
    }
    let consent = ConsentRecord {
        windows,
        granted_at: granted,
        expires_at: expires,
        revoked_at: revoked,
        source: field(7).to_owned(),
        proof: field(8).to_owned(),
    };
    Ok(Row {
        line,
        id_hash: id_hash(id.as_str()),
        contact: Contact::new(id, phone, zone, vec![consent]),
    })
}

/// A national number (no `+`) of the default region, in E.164; anything else as it is.
fn national<'a>(s: &'a str, opts: &Options) -> std::borrow::Cow<'a, str> {
    match opts.default_region {
        Some(region) if !s.starts_with('+') && !s.is_empty() => {
            match phonenumber::parse(Some(region), s) {
                Ok(n) => n.format().mode(phonenumber::Mode::E164).to_string().into(),
                Err(_) => s.into(),
            }
        }
        _ => s.into(),
    }
}

fn instant(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|d| d.with_timezone(&Utc))
}

/// The input error's message for an instant that does not parse.
fn bad_instant(e: chrono::ParseError) -> String {
    format!("expected an RFC 3339 instant such as 2027-01-10T09:00:00Z ({e})")
}

fn optional_instant(s: &str) -> Result<Option<DateTime<Utc>>, chrono::ParseError> {
    if s.is_empty() {
        Ok(None)
    } else {
        instant(s).map(Some)
    }
}

/// 1-based line numbers of byte offsets, for offsets that mostly increase (in the file the
/// bytes are a part of, when `map` gives the original line of each line after the header).
struct LineIndex<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
    map: Option<&'a [u32]>,
}

impl<'a> LineIndex<'a> {
    fn new(bytes: &'a [u8], map: Option<&'a [u32]>) -> Self {
        LineIndex {
            bytes,
            pos: 0,
            line: 1,
            map,
        }
    }

    fn line_of(&mut self, byte: u64) -> usize {
        let line = self.line_here(byte);
        match self.map {
            Some(m) if line >= 2 => m.get(line - 2).map_or(line, |&l| l as usize),
            _ => line,
        }
    }

    fn line_here(&mut self, byte: u64) -> usize {
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
