//! Machine and human output: one `--format` (`table`, `json`, `jsonl`, `csv`) for every
//! command that prints rows, one timestamp style, one way of writing durations.

use std::io::Write;

use serde_json::Value;

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, for people.
    Table,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header row (written even when there are no rows).
    Csv,
}

pub use crieur_config::text::{human_duration, rfc3339};

/// Rows with named columns, streamed in one of the formats. For `table`, each column is
/// padded to the width given (a wider value is not cut; the rest of its row shifts).
pub struct Rows<W: Write> {
    out: W,
    format: Format,
    columns: Vec<(&'static str, usize)>,
    rows: usize,
}

/// One CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A value as a table or CSV cell: strings bare, null empty, the rest as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl<W: Write> Rows<W> {
    /// Starts the output: the table or CSV header, or the JSON array's `[`.
    pub fn new(
        mut out: W,
        format: Format,
        columns: &[(&'static str, usize)],
    ) -> anyhow::Result<Self> {
        match format {
            Format::Table => {
                let head: Vec<String> = columns
                    .iter()
                    .map(|(n, w)| format!("{n:<w$}", w = *w))
                    .collect();
                writeln!(out, "{}", head.join(" ").trim_end())?;
            }
            Format::Csv => {
                let head: Vec<String> = columns.iter().map(|(n, _)| csv_field(n)).collect();
                writeln!(out, "{}", head.join(","))?;
            }
            Format::Json => write!(out, "[")?,
            Format::Jsonl => {}
        }
        Ok(Rows {
            out,
            format,
            columns: columns.to_vec(),
            rows: 0,
        })
    }

    /// One row: a value per column, in column order (values beyond the columns are left
    /// out).
    pub fn row(&mut self, values: &[Value]) -> anyhow::Result<()> {
        let fields = self.columns.iter().zip(values);
        match self.format {
            Format::Table => {
                let mut line = String::new();
                for (i, ((_, w), v)) in fields.enumerate() {
                    if i > 0 {
                        line.push(' ');
                    }
                    let c = cell(v);
                    line.push_str(&c);
                    line.extend(std::iter::repeat_n(
                        ' ',
                        w.saturating_sub(c.chars().count()),
                    ));
                }
                writeln!(self.out, "{}", line.trim_end())?;
            }
            Format::Csv => {
                for (i, (_, v)) in fields.enumerate() {
                    let sep = if i > 0 { "," } else { "" };
                    write!(self.out, "{sep}{}", csv_field(&cell(v)))?;
                }
                writeln!(self.out)?;
            }
            // In column order (a `serde_json::Map` would sort the keys).
            Format::Jsonl | Format::Json => {
                if self.format == Format::Json {
                    write!(self.out, "{}", if self.rows == 0 { "\n" } else { ",\n" })?;
                }
                for (i, ((name, _), v)) in fields.enumerate() {
                    let open = if i == 0 { "{" } else { "," };
                    write!(self.out, "{open}{}:{v}", Value::from(*name))?;
                }
                write!(self.out, "}}")?;
                if self.format == Format::Jsonl {
                    writeln!(self.out)?;
                }
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Ends the output (the JSON array's `]`) and flushes it.
    pub fn finish(self) -> anyhow::Result<()> {
        self.into_inner().map(drop)
    }

    /// [`Rows::finish`], giving the writer back.
    pub fn into_inner(mut self) -> anyhow::Result<W> {
        if self.format == Format::Json {
            writeln!(self.out, "{}]", if self.rows == 0 { "" } else { "\n" })?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// CSV (header first) as aligned columns, each as wide as its widest cell.
pub fn csv_as_table(csv_bytes: &[u8]) -> anyhow::Result<String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv_bytes);
    let records: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>()?;
    let mut widths: Vec<usize> = Vec::new();
    for r in &records {
        for (i, f) in r.iter().enumerate() {
            let n = f.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(n),
                None => widths.push(n),
            }
        }
    }
    let mut out = String::new();
    for r in &records {
        let mut line = String::new();
        for (i, f) in r.iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            line.push_str(f);
            let w = widths.get(i).copied().unwrap_or(0);
            line.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(f.chars().count()),
            ));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(format: Format, rows: &[[Value; 2]]) -> String {
        let mut r =
            Rows::new(Vec::new(), format, &[("a", 4), ("b", 3)]).unwrap_or_else(|e| panic!("{e}"));
        for v in rows {
            r.row(v).unwrap_or_else(|e| panic!("{e}"));
        }
        String::from_utf8(r.into_inner().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_default()
    }

    #[test]
    fn every_format_with_and_without_rows() {
        let rows = [[json!("x,\"y\""), json!(3)], [json!(null), json!("z")]];
        assert_eq!(render(Format::Table, &rows), "a    b\nx,\"y\" 3\n     z\n");
        assert_eq!(render(Format::Csv, &rows), "a,b\n\"x,\"\"y\"\"\",3\n,z\n");
        assert_eq!(
            render(Format::Jsonl, &rows),
            "{\"a\":\"x,\\\"y\\\"\",\"b\":3}\n{\"a\":null,\"b\":\"z\"}\n"
        );
        let v: Value = serde_json::from_str(&render(Format::Json, &rows)).unwrap_or_default();
        assert_eq!(v, json!([{"a": "x,\"y\"", "b": 3}, {"a": null, "b": "z"}]));
        assert_eq!(render(Format::Csv, &[]), "a,b\n");
        assert_eq!(render(Format::Json, &[]), "[]\n");
        assert_eq!(render(Format::Jsonl, &[]), "");
    }

    #[test]
    fn csv_as_aligned_columns() {
        let t = csv_as_table(b"a,long name\n\"x,y\",1\nzz,\n").unwrap_or_default();
        assert_eq!(t, "a   long name\nx,y 1\nzz\n");
        assert_eq!(csv_as_table(b"").unwrap_or_default(), "");
    }

    #[test]
    fn durations_in_human_units() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(40)), "40 s");
        assert_eq!(human_duration(d(720)), "12 min");
        assert_eq!(human_duration(d(3 * 3600 + 5 * 60)), "3 h 05 min");
        assert_eq!(human_duration(d(42 * 86_400 + 7)), "42 days");
    }
}
