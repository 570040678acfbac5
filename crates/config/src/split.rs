//! A contacts file too large to hold in memory, split by contact id into parts that are
//! validated (and imported) one at a time.
//!
//! [`split`] reads the file once, streaming: it checks the header, frames the records and
//! copies each one, byte for byte, into the part its id falls in (`part_of`), remembering
//! the line each of its lines had in the file. Every row of one contact is in one part, so
//! [`Split::load`] of a part is exactly [`crate::contacts::load`] of those rows: the same
//! checks (a contact's rows must agree on phone and zone), located at the file's own lines.
//! Memory is one block of the file and one part at a time, whatever the file's size; the
//! parts are on disk, in a directory removed when the [`Split`] is dropped.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::contacts::{load_bytes, Loaded, Options, Progress, COLUMNS};
use crate::input::{strip_bom, InputError, InputErrors};

/// Bytes read from the file at a time.
const BLOCK: usize = 8 << 20;

/// A contacts file split into parts by contact id (see the module's documentation).
#[derive(Debug)]
pub struct Split {
    path: PathBuf,
    opts: Options,
    dir: PathBuf,
    parts: usize,
    /// Data rows (records) in the file.
    pub rows: usize,
    /// SHA-256 of the file as read.
    pub sha256: [u8; 32],
    /// Records that could not be framed (left out of the parts), located.
    framing: Vec<InputError>,
}

impl Drop for Split {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Split {
    /// How many parts.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// Validates part `i`: its contacts, or every problem in it, located in the file.
    pub fn load(&self, i: usize) -> Result<Loaded, InputErrors> {
        let (rows, lines) = (
            self.dir.join(format!("{i}.csv")),
            self.dir.join(format!("{i}.lines")),
        );
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| {
                InputErrors::from(InputError::new(
                    &self.path,
                    format!("cannot read the part {}: {e}", p.display()),
                ))
            })
        };
        let bytes = read(&rows)?;
        let map: Vec<u32> = read(&lines)?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut loaded = load_bytes(&self.path, &self.opts, &bytes, None, Some(&map))?;
        loaded.sha256 = self.sha256;
        Ok(loaded)
    }

    /// Validates every part, dropping the contacts: every problem of the file, in line
    /// order, or the number of contacts. `each` sees each valid part's contacts, in part
    /// order. The parts are parsed on every core ([`Split::each_loaded`]).
    pub fn validate(&self, mut each: impl FnMut(&Loaded)) -> Result<usize, InputErrors> {
        let mut errors = self.framing.clone();
        let mut contacts = 0;
        let mut take = |r: Result<Loaded, InputErrors>| match r {
            Ok(l) => {
                contacts += l.contacts.len();
                each(&l);
            }
            Err(e) => errors.extend(e.0),
        };
        self.each_loaded(|_, r| {
            take(r);
            true
        });
        if errors.is_empty() {
            Ok(contacts)
        } else {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(InputErrors(errors))
        }
    }

    /// Every part's [`Split::load`], handed to `f` in part order while the next ones are
    /// parsed on the other cores (up to 4 threads, each holding one part until it is taken:
    /// memory is that many parts and `f`'s); `f` returning `false` stops it.
    pub fn each_loaded(&self, mut f: impl FnMut(usize, Result<Loaded, InputErrors>) -> bool) {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(self.parts);
        if threads <= 1 {
            for i in 0..self.parts {
                if !f(i, self.load(i)) {
                    return;
                }
            }
            return;
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            // One channel per thread: part i is parsed by thread i mod threads, so the
            // parts arrive in order by taking from each channel in turn.
            let mut receivers = Vec::with_capacity(threads);
            for t in 0..threads {
                // Rendezvous: a thread holds the part it parsed until it is taken.
                let (tx, rx) = std::sync::mpsc::sync_channel(0);
                receivers.push(rx);
                let stop = &stop;
                scope.spawn(move || {
                    let mut i = t;
                    while i < self.parts && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if tx.send(self.load(i)).is_err() {
                            break;
                        }
                        i += threads;
                    }
                });
            }
            for i in 0..self.parts {
                let Ok(r) = receivers[i % threads].recv() else {
                    break;
                };
                if !f(i, r) {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
            }
            // Unblocks the threads still sending: they stop.
            drop(receivers);
        });
    }
}

/// One part being written: its rows and the file line of each of their lines.
struct PartWriter {
    rows: BufWriter<File>,
    lines: BufWriter<File>,
}

/// Splits the contacts file at `path` into `parts` parts by `part_of(id)` (taken modulo
/// `parts`), in a new directory `dir` (which must not exist). Checks the header (an error
/// here) and frames every record (a malformed record is left out, and reported by
/// [`Split::validate`] with the rows' own problems).
pub fn split(
    path: &Path,
    opts: &Options,
    parts: usize,
    part_of: &dyn Fn(&str) -> usize,
    dir: &Path,
    progress: Option<&dyn Progress>,
) -> Result<Split, InputErrors> {
    split_blocks(path, opts, parts, part_of, dir, progress, BLOCK)
}

/// [`split`], reading `block` bytes at a time.
fn split_blocks(
    path: &Path,
    opts: &Options,
    parts: usize,
    part_of: &dyn Fn(&str) -> usize,
    dir: &Path,
    progress: Option<&dyn Progress>,
    block: usize,
) -> Result<Split, InputErrors> {
    let parts = parts.max(1);
    let fail = |what: &str, e: std::io::Error| {
        InputErrors::from(InputError::new(path, format!("{what}: {e}")))
    };
    let mut file = File::open(path).map_err(|e| fail("cannot read the contacts file", e))?;
    if let Some(p) = progress {
        p.length(file.metadata().map_or(0, |m| m.len()));
    }
    std::fs::create_dir(dir).map_err(|e| fail(&format!("cannot create {}", dir.display()), e))?;
    // From here the directory is the Split's: removed with it, also on an error.
    let mut out = Split {
        path: path.to_owned(),
        opts: *opts,
        dir: dir.to_owned(),
        parts,
        rows: 0,
        sha256: [0; 32],
        framing: Vec::new(),
    };
    let mut digest = sha2::Sha256::new();
    let mut data: Vec<u8> = Vec::with_capacity(block * 2);
    let mut eof = false;
    let mut fill = |data: &mut Vec<u8>, eof: &mut bool| -> Result<(), InputErrors> {
        let start = data.len();
        data.resize(start + block, 0);
        let mut got = 0;
        while got < block {
            match file.read(&mut data[start + got..]) {
                Ok(0) => {
                    *eof = true;
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail("cannot read the contacts file", e)),
            }
        }
        data.truncate(start + got);
        digest.update(&data[start..]);
        Ok(())
    };
    // The header: read until it is whole (a header is never longer than a block or two).
    fill(&mut data, &mut eof)?;
    while !eof && !data.contains(&b'\n') {
        fill(&mut data, &mut eof)?;
    }
    let bom = data.len() - strip_bom(&data).len();
    let (header, id_column, width, body) = {
        let mut reader = opts.reader_no_headers(&data[bom..]);
        let mut h = csv::ByteRecord::new();
        let _ = reader.read_byte_record(&mut h);
        let end = bom + usize::try_from(reader.position().byte()).unwrap_or(0);
        let id = h.iter().position(|f| {
            let f = String::from_utf8_lossy(f);
            f.trim_start_matches('\u{feff}')
                .trim()
                .eq_ignore_ascii_case(COLUMNS[0])
        });
        (data[bom..end].to_vec(), id, h.len(), end)
    };
    // Every problem of the header, as a whole file's load reports it.
    let mut header_line = header.clone();
    if !header_line.ends_with(b"\n") {
        header_line.push(b'\n');
    }
    load_bytes(path, opts, &header_line, None, None)?;
    let id_column = id_column.unwrap_or(0);
    let mut writers = Vec::with_capacity(parts);
    for i in 0..parts {
        let open = |name: String| {
            File::create(dir.join(&name))
                .map(BufWriter::new)
                .map_err(|e| fail(&format!("cannot write {}", dir.join(&name).display()), e))
        };
        let mut rows = open(format!("{i}.csv"))?;
        rows.write_all(&header_line)
            .map_err(|e| fail("cannot write a part", e))?;
        writers.push(PartWriter {
            rows,
            lines: open(format!("{i}.lines"))?,
        });
    }
    let mut errors = Vec::new();
    // `data[at..]` is not split yet; `line` is the file's line at `data[at]`.
    let mut at = body;
    let mut line = 1 + data[..body].iter().filter(|&&b| b == b'\n').count();
    let mut consumed = 0u64;
    loop {
        // Record starts in `data[at..]`; the last one may be cut by the block's end.
        // Each with its id, or what is wrong with its framing.
        let mut starts: Vec<(usize, Result<String, String>)> = Vec::new();
        {
            let mut reader = opts.reader_no_headers(&data[at..]);
            let mut rec = csv::ByteRecord::new();
            loop {
                let pos = |p: Option<&csv::Position>| at + p.map_or(0, |p| p.byte() as usize);
                match reader.read_byte_record(&mut rec) {
                    Ok(false) => break,
                    Ok(true) if rec.len() != width => starts.push((
                        pos(rec.position()),
                        Err(format!(
                            "malformed CSV: found a record with {} fields, but the header has {width}",
                            rec.len()
                        )),
                    )),
                    Ok(true) => {
                        let id = String::from_utf8_lossy(rec.get(id_column).unwrap_or_default());
                        starts.push((pos(rec.position()), Ok(id.trim().to_owned())));
                    }
                    Err(e) => starts.push((pos(e.position()), Err(format!("malformed CSV: {e}")))),
                }
            }
        }
        // Unless the file has ended, the last record may be incomplete: keep it for the
        // next block.
        let complete = if eof {
            starts.len()
        } else {
            starts.len().saturating_sub(1)
        };
        for k in 0..complete {
            let (start, framed) = &starts[k];
            let start = *start;
            let end = starts.get(k + 1).map_or(data.len(), |s| s.0);
            // The record's own bytes, without the line terminators around it.
            let mut s = start;
            while s < end && matches!(data[s], b'\r' | b'\n') {
                s += 1;
            }
            let mut e = end;
            while e > s && matches!(data[e - 1], b'\r' | b'\n') {
                e -= 1;
            }
            line += data[at..s].iter().filter(|&&b| b == b'\n').count();
            at = s;
            if s == e {
                continue;
            }
            let raw = &data[s..e];
            match framed {
                Err(why) => errors.push(InputError::new(path, why.clone()).at(line, None)),
                Ok(id) => {
                    out.rows += 1;
                    let w = &mut writers[part_of(id) % parts];
                    let n = 1 + raw.iter().filter(|&&b| b == b'\n').count();
                    let write = |w: &mut PartWriter| -> std::io::Result<()> {
                        w.rows.write_all(raw)?;
                        w.rows.write_all(b"\n")?;
                        for l in line..line + n {
                            w.lines.write_all(&(l as u32).to_le_bytes())?;
                        }
                        Ok(())
                    };
                    write(w).map_err(|e| fail("cannot write a part", e))?;
                }
            }
        }
        if eof {
            break;
        }
        // Keep the unsplit tail; read on.
        let keep = starts
            .get(complete)
            .map_or(data.len(), |s| s.0.min(data.len()))
            .max(at);
        line += data[at..keep].iter().filter(|&&b| b == b'\n').count();
        consumed += keep as u64;
        data.drain(..keep);
        at = 0;
        if let Some(p) = progress {
            p.position(consumed);
        }
        fill(&mut data, &mut eof)?;
    }
    for w in &mut writers {
        w.rows
            .flush()
            .and_then(|()| w.lines.flush())
            .map_err(|e| fail("cannot write a part", e))?;
    }
    drop(writers);
    out.sha256 = digest.finalize().into();
    out.framing = errors;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contacts::load;

    const HEADER: &str = "id,phone,zone,windows,granted_at,expires_at,revoked_at,source,proof";

    fn row(id: &str, phone: &str, proof: &str) -> String {
        format!("{id},{phone},,mon-fri 18:00-20:00,2027-01-10T09:00:00Z,,,form,{proof}")
    }

    /// Splits `text` with blocks of `block` bytes into `parts`.
    fn split_text(
        text: &str,
        parts: usize,
        block: usize,
    ) -> (tempfile::TempDir, Result<Split, InputErrors>) {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = d.path().join("k.csv");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        let part = |id: &str| id.bytes().map(usize::from).sum::<usize>();
        let s = split_blocks(
            &path,
            &Options::default(),
            parts,
            &part,
            &d.path().join("parts"),
            None,
            block,
        );
        (d, s)
    }

    fn summary(contacts: &[crieur_scheduler::Contact]) -> Vec<(String, String, usize)> {
        let mut v: Vec<_> = contacts
            .iter()
            .map(|c| {
                (
                    c.id().to_string(),
                    c.phone().to_string(),
                    c.consents().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Whatever the block size (records cut at every place), the parts hold exactly the
    /// contacts a whole load finds: CRLF endings, a byte-order mark, a quoted proof over two
    /// lines, a contact's rows far apart.
    #[test]
    fn the_parts_hold_what_a_whole_load_holds() {
        let mut text = format!("\u{feff}{HEADER}\r\n");
        for i in 0..40 {
            text.push_str(&row(
                &format!("c{}", i % 25),
                &format!("+336123456{:02}", i % 25),
                &format!("p{i}"),
            ));
            text.push_str("\r\n");
        }
        text.push_str(
            "q1,+33612345699,,mon 10:00-11:00,2027-01-10T09:00:00Z,,,form,\"two\r\nlines\"\r\n",
        );
        let d0 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let whole_path = d0.path().join("k.csv");
        std::fs::write(&whole_path, &text).unwrap_or_else(|e| panic!("{e}"));
        let whole = load(&whole_path, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
        for block in [7, 64, 100, 1 << 20] {
            let (_d, s) = split_text(&text, 4, block);
            let s = s.unwrap_or_else(|e| panic!("block {block}: {e}"));
            assert_eq!(s.rows, 41);
            assert_eq!(s.sha256, whole.sha256);
            let mut got = Vec::new();
            let n = s
                .validate(|l| got.extend(l.contacts.iter().cloned()))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(n, 26);
            assert_eq!(summary(&got), summary(&whole.contacts), "block {block}");
            let q = got.iter().find(|c| c.id().as_str() == "q1");
            assert_eq!(
                q.map(|c| c.consents()[0].proof.as_str()),
                Some("two\r\nlines")
            );
        }
    }

    /// Problems are reported at the file's own lines, every one of them, in line order —
    /// also a contact whose rows disagree across the file.
    #[test]
    fn problems_are_located_in_the_file() {
        let mut text = format!("{HEADER}\n");
        for i in 0..30 {
            text.push_str(&row(&format!("c{i}"), &format!("+336123456{i:02}"), "p"));
            text.push('\n');
        }
        // Line 32: a bad number; line 33: c3 again with another phone (c3 is on line 5);
        // line 34: a short record.
        text.push_str(&row("bad", "+3361", "p"));
        text.push('\n');
        text.push_str(&row("c3", "+33612345688", "p"));
        text.push_str("\nx,y\n");
        for block in [16, 1 << 20] {
            let (_d, s) = split_text(&text, 3, block);
            let s = s.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.rows, 32);
            let e = s.validate(|_| {}).err().unwrap_or_else(|| panic!("valid"));
            let got: Vec<(Option<usize>, String)> =
                e.0.iter().map(|e| (e.line, e.to_string())).collect();
            assert_eq!(got.len(), 3, "{got:?}");
            assert_eq!(got[0].0, Some(32), "{got:?}");
            assert_eq!(got[1].0, Some(33), "{got:?}");
            assert!(got[1].1.contains("another phone on line 5"), "{got:?}");
            assert_eq!(got[2].0, Some(34), "{got:?}");
            assert!(
                got[2].1.contains("2 fields, but the header has 9"),
                "{got:?}"
            );
        }
    }

    /// A header problem is reported as a whole load reports it, and nothing is left on disk.
    #[test]
    fn a_bad_header_fails_and_leaves_no_parts() {
        let (d, s) = split_text("id,phone\nc1,+33612345678\n", 2, 1 << 20);
        let e = s.err().unwrap_or_else(|| panic!("accepted"));
        assert!(e.to_string().contains("missing column `windows`"), "{e}");
        assert!(!d.path().join("parts").exists());
    }
}
