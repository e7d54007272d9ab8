//! Splits the input of `keeper submit --json` into JSON records as it reads
//! it: one object, an array of objects, or objects one after another (one per
//! line, or pretty-printed over several lines).
//!
//! The input may be a pipe that never ends, so nothing here holds more than
//! the record being read, and every record, and every stretch of blank space
//! between two records, is limited to [`MAX_RECORD_BYTES`] (the API's body
//! limit): an endless line or an enormous record fails with a clear error
//! once the limit is passed, not when memory runs out. The whole input is
//! limited too ([`MAX_INPUT_BYTES`]), because every report is validated
//! before the first one is written. A UTF-8 byte order mark at the start
//! (Windows editors write one) is skipped.
//!
//! Records are split, not parsed: the caller parses each one, so a broken
//! line is reported with its line number and the lines after it are read on.

use std::io::BufRead;

/// The largest record (and the longest blank run between records) accepted.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// The largest input one `keeper submit` takes: larger imports are split.
pub const MAX_INPUT_BYTES: u64 = 256 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One record's bytes, as read (not yet checked to be UTF-8 or JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub bytes: Vec<u8>,
    /// The line it starts on, from 1.
    pub line: usize,
    /// Its place in the input, from 1.
    pub index: usize,
}

/// How the records are laid out, from the input's first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[ {...}, {...} ]`: records are the array's elements.
    Array,
    /// Values one after another: one per line, or one spread over lines.
    Sequence,
}

/// Why the input cannot be read; nothing is written after any of these.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("cannot read {source_name}: {error}")]
    Io { source_name: String, error: std::io::Error },
    #[error(
        "{what} at line {line} is larger than {MAX_RECORD_BYTES} bytes, the limit for one report (an endless \
         line?); nothing was written"
    )]
    TooLarge { what: &'static str, line: usize },
    #[error(
        "the input is larger than {} MiB, the limit for one `keeper submit`; nothing was written. Split it \
         into smaller files",
        MAX_INPUT_BYTES >> 20
    )]
    InputTooLarge,
    #[error("the array opened at line {line} is not closed with `]`; nothing was written")]
    UnclosedArray { line: usize },
    #[error("line {line}: text after the array's closing `]`; nothing was written")]
    AfterArray { line: usize },
}

/// Tracks whether a record's brackets and strings are balanced so far.
#[derive(Debug, Default, Clone, Copy)]
struct Nesting {
    depth: i64,
    in_string: bool,
    escaped: bool,
}

impl Nesting {
    fn feed(&mut self, byte: u8) {
        if self.in_string {
            match byte {
                _ if self.escaped => self.escaped = false,
                b'\\' => self.escaped = true,
                b'"' => self.in_string = false,
                _ => {}
            }
            return;
        }
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => self.depth -= 1,
            _ => {}
        }
    }

    /// Every bracket opened so far is closed (or one too many was closed).
    fn closed(&self) -> bool {
        self.depth <= 0 && !self.in_string
    }
}

/// Reads records from `input` (its name goes into error messages).
pub struct Records<R> {
    input: R,
    name: String,
    layout: Option<Layout>,
    /// Lines consumed so far (the current line's number is this plus one).
    newlines: usize,
    read: u64,
    records: usize,
    array_line: usize,
    array_closed: bool,
}

impl<R: BufRead> Records<R> {
    pub fn new(input: R, name: impl Into<String>) -> Records<R> {
        Records {
            input,
            name: name.into(),
            layout: None,
            newlines: 0,
            read: 0,
            records: 0,
            array_line: 0,
            array_closed: false,
        }
    }

    /// The layout, once the first record was asked for.
    pub fn layout(&self) -> Option<Layout> {
        self.layout
    }

    fn io(&self, error: std::io::Error) -> RecordsError {
        RecordsError::Io {
            source_name: self.name.clone(),
            error,
        }
    }

    fn line(&self) -> usize {
        self.newlines + 1
    }

    /// The next byte without consuming it; `None` at the end.
    fn peek(&mut self) -> Result<Option<u8>, RecordsError> {
        loop {
            match self.input.fill_buf() {
                Ok(buf) => return Ok(buf.first().copied()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            }
        }
    }

    fn bump(&mut self, byte: u8) -> Result<(), RecordsError> {
        self.input.consume(1);
        self.read += 1;
        if self.read > MAX_INPUT_BYTES {
            return Err(RecordsError::InputTooLarge);
        }
        if byte == b'\n' {
            self.newlines += 1;
        }
        Ok(())
    }

    /// Skips blank space (and, in an array, the commas between elements),
    /// at most [`MAX_RECORD_BYTES`] of it.
    fn skip_blank(&mut self, commas: bool) -> Result<Option<u8>, RecordsError> {
        let mut skipped = 0usize;
        while let Some(byte) = self.peek()? {
            if !(byte.is_ascii_whitespace() || (commas && byte == b',')) {
                return Ok(Some(byte));
            }
            skipped += 1;
            if skipped > MAX_RECORD_BYTES {
                return Err(RecordsError::TooLarge {
                    what: "blank space",
                    line: self.line(),
                });
            }
            self.bump(byte)?;
        }
        Ok(None)
    }

    /// Decides the layout from the first character (after a BOM).
    fn start(&mut self) -> Result<Layout, RecordsError> {
        let mut matched = 0;
        while matched < BOM.len() && self.peek()? == Some(BOM[matched]) {
            self.input.consume(1);
            matched += 1;
        }
        if matched > 0 && matched < BOM.len() {
            return Err(self.io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the input starts with part of a UTF-8 byte order mark and is not UTF-8",
            )));
        }
        let layout = match self.skip_blank(false)? {
            Some(b'[') => {
                self.array_line = self.line();
                self.bump(b'[')?;
                Layout::Array
            }
            _ => Layout::Sequence,
        };
        self.layout = Some(layout);
        Ok(layout)
    }

    /// The next record, `None` at the end of the input.
    pub fn next_record(&mut self) -> Result<Option<Record>, RecordsError> {
        let layout = match self.layout {
            Some(l) => l,
            None => self.start()?,
        };
        let record = match layout {
            Layout::Array => self.next_element()?,
            Layout::Sequence => self.next_in_sequence()?,
        };
        if record.is_some() {
            self.records += 1;
        }
        Ok(record.map(|(bytes, line)| Record {
            bytes,
            line,
            index: self.records,
        }))
    }

    fn push(&self, bytes: &mut Vec<u8>, byte: u8, line: usize) -> Result<(), RecordsError> {
        if bytes.len() >= MAX_RECORD_BYTES {
            return Err(RecordsError::TooLarge {
                what: "the report",
                line,
            });
        }
        bytes.push(byte);
        Ok(())
    }

    /// One array element: a bracketed value up to its closing bracket, a
    /// string up to its closing quote, anything else up to `,`, `]` or space.
    fn next_element(&mut self) -> Result<Option<(Vec<u8>, usize)>, RecordsError> {
        if self.array_closed {
            return match self.skip_blank(false)? {
                None => Ok(None),
                Some(_) => Err(RecordsError::AfterArray { line: self.line() }),
            };
        }
        let Some(first) = self.skip_blank(true)? else {
            return Err(RecordsError::UnclosedArray { line: self.array_line });
        };
        if first == b']' {
            self.bump(first)?;
            self.array_closed = true;
            return self.next_element();
        }
        let line = self.line();
        let mut bytes = Vec::new();
        let mut nesting = Nesting::default();
        let bracketed = matches!(first, b'{' | b'[' | b'"');
        while let Some(byte) = self.peek()? {
            if !bracketed && (byte == b',' || byte == b']' || byte.is_ascii_whitespace()) {
                break;
            }
            self.push(&mut bytes, byte, line)?;
            self.bump(byte)?;
            nesting.feed(byte);
            if bracketed && nesting.closed() {
                break;
            }
        }
        Ok(Some((bytes, line)))
    }

    /// One value of a sequence. A value ends where its brackets close; one
    /// that is still open at the end of its first line goes on over the next
    /// lines only if that line is the start of a valid value (a pretty-printed
    /// object), so a broken line in a file of one object per line is its own
    /// record, reported with its own line number.
    fn next_in_sequence(&mut self) -> Result<Option<(Vec<u8>, usize)>, RecordsError> {
        if self.skip_blank(false)?.is_none() {
            return Ok(None);
        }
        let line = self.line();
        let mut bytes = Vec::new();
        let mut nesting = Nesting::default();
        let mut first_line = true;
        while let Some(byte) = self.peek()? {
            self.bump(byte)?;
            if byte == b'\n' {
                if nesting.closed() || (first_line && !opens_a_value(&bytes)) {
                    break;
                }
                first_line = false;
            }
            self.push(&mut bytes, byte, line)?;
            nesting.feed(byte);
        }
        Ok(Some((bytes, line)))
    }
}

/// Whether `text` is the beginning of a JSON value that more text could
/// complete (rather than text that is wrong already).
fn opens_a_value(text: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(text) {
        Ok(_) => true,
        Err(e) => e.is_eof(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8]) -> Result<Vec<(String, usize)>, RecordsError> {
        let mut records = Records::new(input, "test input");
        let mut out = Vec::new();
        while let Some(r) = records.next_record()? {
            out.push((String::from_utf8_lossy(&r.bytes).trim().to_owned(), r.line));
        }
        Ok(out)
    }

    #[test]
    fn lines_pretty_objects_and_arrays_split_into_records() {
        let lines = split(b"{\"a\":1}\n\n{\"b\":\"}\\\"{\"}\r\n{not json\n{\"c\":3}").unwrap();
        assert_eq!(
            lines,
            vec![
                ("{\"a\":1}".into(), 1),
                ("{\"b\":\"}\\\"{\"}".into(), 3),
                ("{not json".into(), 4),
                ("{\"c\":3}".into(), 5)
            ]
        );
        let pretty = split(b"\xEF\xBB\xBF{\n  \"a\": [1,\n 2]\n}\n{\"b\": 2}\n").unwrap();
        assert_eq!(pretty.len(), 2, "{pretty:?}");
        assert_eq!(pretty[0].1, 1);
        assert_eq!(pretty[1], ("{\"b\": 2}".into(), 5));
        let array = split(b"\xEF\xBB\xBF [\n{\"a\":\"],\"}, {\"b\":[2]} ,\n 7, \"s\"]\n").unwrap();
        let texts: Vec<&str> = array.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["{\"a\":\"],\"}", "{\"b\":[2]}", "7", "\"s\""]);
        assert_eq!(array[2].1, 3);
        assert!(split(b"").unwrap().is_empty());
        assert!(split(b"[]").unwrap().is_empty());
    }

    #[test]
    fn limits_and_broken_arrays_are_errors() {
        let mut long = b"{\"description\": \"".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_RECORD_BYTES));
        long.extend_from_slice(b"\"}\n");
        let e = split(&long).unwrap_err().to_string();
        assert!(
            e.starts_with("the report at line 1 is larger than 1048576 bytes"),
            "{e}"
        );
        let mut array = b"[".to_vec();
        array.extend_from_slice(&long);
        assert!(matches!(split(&array), Err(RecordsError::TooLarge { line: 1, .. })));
        let blank = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(
            split(&blank)
                .unwrap_err()
                .to_string()
                .starts_with("blank space at line 1")
        );
        let e = split(b"[{\"a\":1},\n{\"b\":2}").unwrap_err().to_string();
        assert!(e.contains("array opened at line 1 is not closed"), "{e}");
        let e = split(b"[{\"a\":1}]\n{\"b\":2}").unwrap_err().to_string();
        assert!(e.starts_with("line 2: text after the array"), "{e}");
    }
}
