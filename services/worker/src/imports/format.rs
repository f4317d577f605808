//! Reading an uploaded CSV: the header, the records and the faults that refuse a
//! whole file. Pure: works on any [`std::io::Read`], one record in memory at a time.

use std::{collections::HashMap, fmt, io::Read};

/// What a file holds, from its key (`<organization>/<kind>/<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Ders,
    Enrollments,
    MeterData,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Ders, Kind::Enrollments, Kind::MeterData];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ders => "ders",
            Kind::Enrollments => "enrollments",
            Kind::MeterData => "meter_data",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The columns a file of this kind may have.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Kind::Ders => DER_COLUMNS,
            Kind::Enrollments => ENROLLMENT_COLUMNS,
            Kind::MeterData => METER_COLUMNS,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One column of a file format. Columns of the same `group` are alternatives: exactly
/// one of them must be present when the group is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub required: bool,
    pub group: Option<&'static str>,
}

const fn req(name: &'static str) -> Column {
    Column {
        name,
        required: true,
        group: None,
    }
}

const fn opt(name: &'static str) -> Column {
    Column {
        name,
        required: false,
        group: None,
    }
}

const fn one_of(name: &'static str, group: &'static str) -> Column {
    Column {
        name,
        required: true,
        group: Some(group),
    }
}

const DER_COLUMNS: &[Column] = &[
    req("external_id"),
    req("der_type"),
    req("nameplate_kw"),
    opt("nameplate_kwh"),
    opt("latitude"),
    opt("longitude"),
    opt("feeder"),
    opt("substation"),
    opt("gateway_id"),
];

const ENROLLMENT_COLUMNS: &[Column] = &[
    req("der_external_id"),
    req("program_id"),
    req("committed_kw"),
];

const METER_COLUMNS: &[Column] = &[
    one_of("der_external_id", "der"),
    one_of("der_id", "der"),
    req("interval_start"),
    req("interval_minutes"),
    one_of("kwh", "reading"),
    one_of("kw", "reading"),
];

/// Why a whole file is refused. Nothing of it is imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty")]
    Empty,
    #[error("the header is wrong: {0}")]
    Header(String),
    #[error("line {line} is not UTF-8 text")]
    NotUtf8 { line: u64 },
    #[error("line {line} has {found} columns, the header has {expected}")]
    TooManyColumns {
        line: u64,
        found: usize,
        expected: usize,
    },
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("line {line} is not CSV: {message}")]
    NotCsv { line: u64, message: String },
    #[error("the file could not be read: {0}")]
    Read(String),
}

/// The file's columns, by name, as its header orders them.
#[derive(Debug, Clone)]
pub struct Header {
    index: HashMap<&'static str, usize>,
    width: usize,
}

impl Header {
    /// Checks a header against a kind's columns: names are matched after trimming and
    /// lower-casing; unknown, repeated or missing columns refuse the file.
    pub fn parse(kind: Kind, names: &[&str]) -> Result<Header, FileError> {
        let columns = kind.columns();
        let mut index = HashMap::new();
        for (i, raw) in names.iter().enumerate() {
            let name = raw.trim().to_ascii_lowercase();
            let Some(column) = columns.iter().find(|c| c.name == name) else {
                return Err(FileError::Header(format!(
                    "unknown column `{}` (a {kind} file has {})",
                    clip(raw, 40),
                    column_list(columns)
                )));
            };
            if index.insert(column.name, i).is_some() {
                return Err(FileError::Header(format!(
                    "column `{}` appears twice",
                    column.name
                )));
            }
        }
        for column in columns.iter().filter(|c| c.required) {
            match column.group {
                None if !index.contains_key(column.name) => {
                    return Err(FileError::Header(format!(
                        "column `{}` is missing (a {kind} file has {})",
                        column.name,
                        column_list(columns)
                    )));
                }
                Some(group) => {
                    let present: Vec<&str> = columns
                        .iter()
                        .filter(|c| c.group == Some(group) && index.contains_key(c.name))
                        .map(|c| c.name)
                        .collect();
                    if present.len() != 1 {
                        let choices: Vec<&str> = columns
                            .iter()
                            .filter(|c| c.group == Some(group))
                            .map(|c| c.name)
                            .collect();
                        return Err(FileError::Header(format!(
                            "exactly one of `{}` is needed",
                            choices.join("`, `")
                        )));
                    }
                }
                None => {}
            }
        }
        Ok(Header {
            index,
            width: names.len(),
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// The trimmed value of `name` in `record`, `None` when the column is absent or
    /// the cell is blank.
    pub fn get<'r>(&self, record: &'r Record, name: &str) -> Option<&'r str> {
        let value = record.fields.get(*self.index.get(name)?)?.trim();
        (!value.is_empty()).then_some(value)
    }
}

fn column_list(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| {
            if c.required && c.group.is_none() {
                c.name.to_owned()
            } else if c.group.is_some() {
                format!("{} (or its alternative)", c.name)
            } else {
                format!("{} (optional)", c.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn clip(s: &str, chars: usize) -> String {
    s.chars().take(chars).collect()
}

/// One data line: its line number in the file (the header is line 1) and its cells.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub line: u64,
    pub fields: Vec<String>,
}

/// Streams the records of a CSV file after checking its header.
pub struct Records<R: Read> {
    reader: csv::Reader<Limited<R>>,
    header: Header,
    raw: csv::ByteRecord,
    /// Lines end in CRLF (the header's did).
    crlf: bool,
}

impl<R: Read> fmt::Debug for Records<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records")
            .field("header", &self.header)
            .finish()
    }
}

impl<R: Read> Records<R> {
    /// Reads and checks the header. `max_bytes` bounds what is read at all.
    pub fn open(read: R, kind: Kind, max_bytes: u64) -> Result<Self, FileError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(Limited {
                inner: read,
                left: max_bytes,
                limit: max_bytes,
            });
        let mut raw = csv::ByteRecord::new();
        let read = reader.read_byte_record(&mut raw).map_err(file_error)?;
        if !read || raw.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            return Err(FileError::Empty);
        }
        let names = utf8_fields(&raw, 1)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let header = Header::parse(kind, &names)?;
        let crlf = reader.position().line() == 1;
        Ok(Self {
            reader,
            header,
            raw,
            crlf,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next record, `Ok(None)` at the end, or the fault that refuses the file.
    pub fn next_record(&mut self) -> Result<Option<Record>, FileError> {
        loop {
            if !self
                .reader
                .read_byte_record(&mut self.raw)
                .map_err(file_error)?
            {
                return Ok(None);
            }
            let line = self.start_line();
            // A line of only separators is a blank line left by a spreadsheet.
            if self
                .raw
                .iter()
                .all(|f| f.iter().all(u8::is_ascii_whitespace))
            {
                continue;
            }
            if self.raw.len() > self.header.width() {
                return Err(FileError::TooManyColumns {
                    line,
                    found: self.raw.len(),
                    expected: self.header.width(),
                });
            }
            let fields = utf8_fields(&self.raw, line)?;
            return Ok(Some(Record { line, fields }));
        }
    }
}

impl<R: Read> Records<R> {
    /// The line the record just read starts on. The `csv` crate's record position is
    /// taken before it skips blank lines, so it can be short. Counting back from where
    /// the reader stands is right instead: after an LF it stands on the next line,
    /// after a CR (of a CRLF) or at the end of the file still on the record's last
    /// line, and quoted cells keep their line breaks. Only an LF file's last line
    /// without a line break, after a blank line, comes out one short.
    fn start_line(&self) -> u64 {
        let at_start = self.raw.position().map_or(1, csv::Position::line);
        let inside: u64 = self
            .raw
            .iter()
            .map(|f| f.iter().filter(|b| **b == b'\n').count() as u64)
            .sum();
        let after_break = u64::from(!self.crlf);
        let from_end = self
            .reader
            .position()
            .line()
            .saturating_sub(inside + after_break);
        at_start.max(from_end).max(1)
    }
}

fn utf8_fields(raw: &csv::ByteRecord, line: u64) -> Result<Vec<String>, FileError> {
    raw.iter()
        .map(|f| {
            std::str::from_utf8(f)
                .map(str::to_owned)
                .map_err(|_| FileError::NotUtf8 { line })
        })
        .collect()
}

fn file_error(error: csv::Error) -> FileError {
    let line = error.position().map_or(0, csv::Position::line);
    match error.into_kind() {
        csv::ErrorKind::Io(io) => match io.get_ref().and_then(|e| e.downcast_ref::<TooLarge>()) {
            Some(too_large) => FileError::TooLarge { limit: too_large.0 },
            None => FileError::Read(io.to_string()),
        },
        csv::ErrorKind::Utf8 { .. } => FileError::NotUtf8 { line },
        other => FileError::NotCsv {
            line,
            message: format!("{other:?}"),
        },
    }
}

/// A reader that fails once more than `limit` bytes were read, so a file larger than
/// it claimed (or than allowed) is refused instead of read to the end.
struct Limited<R> {
    inner: R,
    left: u64,
    limit: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("more than {0} bytes")]
struct TooLarge(u64);

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a file of exactly the limit from a larger one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(TooLarge(self.limit))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(text: &[u8], kind: Kind) -> Result<Records<&[u8]>, FileError> {
        Records::open(text, kind, 1 << 20)
    }

    fn all(text: &[u8], kind: Kind) -> Result<Vec<Record>, FileError> {
        let mut records = open(text, kind)?;
        let mut out = Vec::new();
        while let Some(r) = records.next_record()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn a_header_in_any_order_and_case_is_read_by_name() {
        let text = b"Committed_KW, program_id ,der_external_id\n2.5,0195f3a0-0000-7000-8000-000000000001,m-1\n";
        let mut records = open(text, Kind::Enrollments).expect("valid");
        let record = records.next_record().expect("reads").expect("a record");
        assert_eq!(record.line, 2);
        assert_eq!(
            records.header().get(&record, "der_external_id"),
            Some("m-1")
        );
        assert_eq!(records.header().get(&record, "committed_kw"), Some("2.5"));
    }

    #[test]
    fn wrong_headers_are_refused_with_the_reason() {
        for (text, expected) in [
            (
                &b"der_external_id,program_id\n"[..],
                "`committed_kw` is missing",
            ),
            (
                b"der_external_id,program_id,committed_kw,colour\n",
                "unknown column `colour`",
            ),
            (
                b"der_external_id,program_id,committed_kw,program_id\n",
                "appears twice",
            ),
            (
                b"der_id,der_external_id,interval_start,interval_minutes,kwh\n",
                "exactly one of `der_external_id`, `der_id`",
            ),
            (
                b"der_id,interval_start,interval_minutes\n",
                "exactly one of `kwh`, `kw`",
            ),
        ] {
            let kind = if text.starts_with(b"der_id") {
                Kind::MeterData
            } else {
                Kind::Enrollments
            };
            let error = open(text, kind).expect_err("refused").to_string();
            assert!(error.contains(expected), "{error} should say {expected}");
        }
    }

    #[test]
    fn empty_files_are_refused() {
        for text in [&b""[..], b"\n\n", b" , ,\n"] {
            assert_eq!(open(text, Kind::Ders).expect_err("empty"), FileError::Empty);
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_named() {
        let text = b"der_external_id,program_id,committed_kw\na,b,1\nc,\xff\xfe,2\n";
        assert_eq!(
            all(text, Kind::Enrollments).expect_err("refused"),
            FileError::NotUtf8 { line: 3 }
        );
    }

    #[test]
    fn more_cells_than_the_header_refuses_the_file_fewer_are_blanks() {
        let text = b"der_external_id,program_id,committed_kw\na,b,1,extra\n";
        assert_eq!(
            all(text, Kind::Enrollments).expect_err("refused"),
            FileError::TooManyColumns {
                line: 2,
                found: 4,
                expected: 3
            }
        );
        let text = b"der_external_id,program_id,committed_kw\na,b\n";
        let records = all(text, Kind::Enrollments).expect("short rows are read");
        assert_eq!(records[0].fields.len(), 2);
    }

    #[test]
    fn blank_lines_are_skipped_and_quoted_newlines_keep_line_numbers_true() {
        for (text, expected) in [
            (
                &b"der_external_id,program_id,committed_kw\n\n\"a\nb\",p,1\n,,\nc,p,2\n"[..],
                [3, 6],
            ),
            (
                b"der_external_id,program_id,committed_kw\n\n\"a\nb\",p,1\n,,\nc,p,2",
                [3, 6],
            ),
            (
                b"der_external_id,program_id,committed_kw\r\n\"a\r\nb\",p,1\r\n\r\n\r\nc,p,2\r\n",
                [2, 6],
            ),
            (
                b"der_external_id,program_id,committed_kw\na,p,1\nc,p,2",
                [2, 3],
            ),
        ] {
            let records = all(text, Kind::Enrollments).expect("valid");
            let lines: Vec<u64> = records.iter().map(|r| r.line).collect();
            assert_eq!(lines, expected, "{}", String::from_utf8_lossy(text));
            assert!(records[0].fields[0].starts_with('a'));
        }
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_column() {
        let text = b"\xef\xbb\xbfder_external_id,program_id,committed_kw\na,b,1\n";
        assert!(all(text, Kind::Enrollments).is_ok());
    }

    #[test]
    fn reading_stops_past_the_size_limit() {
        let text = b"der_external_id,program_id,committed_kw\na,b,1\nc,d,2\n";
        let limit = text.len() as u64;
        let mut exact = Records::open(&text[..], Kind::Enrollments, limit).expect("fits");
        while exact.next_record().expect("fits").is_some() {}
        let mut over = Records::open(&text[..], Kind::Enrollments, limit - 1).expect("header fits");
        let error = loop {
            match over.next_record() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a file over the limit was read to the end"),
                Err(e) => break e,
            }
        };
        assert_eq!(error, FileError::TooLarge { limit: limit - 1 });
    }
}
