//! A command's results on standard output, for a person or a script.
//!
//! `println!` panics when standard output is closed (`keeper status | head -1`),
//! and a panic exits 101 — after `keeper submit` had already committed, so a
//! script that retries on failure would submit twice. Every command prints
//! through here instead:
//! - a reader that went away (a closed pipe) ends the output quietly: it had
//!   all it wanted, and the command's exit code still says what it did;
//! - any other write failure (a full disk behind `> file`) is an error for a
//!   command that only reads ([`print`]), and a warning for one that has
//!   already committed its change ([`print_after_commit`]), which must exit 0
//!   so that it is not repeated.

use std::io::Write;

/// Standard output could not be written (for a reason other than a reader
/// that went away).
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
pub struct OutputError(#[source] std::io::Error);

/// Writes `text` to standard output as it is (add the line end yourself).
pub fn print(text: &str) -> Result<(), OutputError> {
    write_to(&mut std::io::stdout().lock(), text)
}

/// Writes `text` and a line end.
pub fn println(text: &str) -> Result<(), OutputError> {
    let mut out = std::io::stdout().lock();
    write_to(&mut out, text)?;
    write_to(&mut out, "\n")
}

/// For a command whose work is done and committed: its output is a courtesy,
/// and failing to write it is logged, never an error.
pub fn print_after_commit(text: &str) {
    if let Err(error) = print(text) {
        tracing::warn!(%error, "the command succeeded but its output was not written");
    }
}

/// [`print`] to any writer; the rule in one place.
fn write_to(out: &mut impl Write, text: &str) -> Result<(), OutputError> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(OutputError(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, ErrorKind};

    use super::*;

    /// A writer that fails every write with `kind`.
    struct Failing(ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_went_away_is_not_an_error_but_a_full_disk_is() {
        assert!(write_to(&mut Failing(ErrorKind::BrokenPipe), "x").is_ok());
        let error = write_to(&mut Failing(ErrorKind::StorageFull), "x").unwrap_err();
        assert!(
            error.to_string().starts_with("cannot write to standard output: "),
            "{error}"
        );
        let mut buf = Vec::new();
        write_to(&mut buf, "line\n").unwrap();
        assert_eq!(buf, b"line\n");
    }
}
