//! Where keeper's log lines go and what they look like.
//!
//! Logs go to standard error, so standard output carries only a command's
//! results (`keeper status --json | jq`). They are read by people in a
//! terminal, by log files and pipes, and by the log shippers of hosted
//! platforms, which want different things:
//! - colour only on a terminal: escape codes in a file or a pipe are noise,
//!   and `NO_COLOR` (any non-empty value, <https://no-color.org>) turns it
//!   off there too;
//! - `KEEPER_LOG_FORMAT=json`: one JSON object per line, the event's fields
//!   at the top level beside `timestamp`, `level`, `target` and `message`;
//! - a closed standard error (`2>&1 | head -3`) is not worth dying for: a log
//!   line that cannot be written is dropped silently. (tracing-subscriber
//!   would otherwise report the failure with `eprintln!`, which panics on
//!   that same closed stderr.)

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The log filter's environment variable (`tracing` env-filter syntax).
pub const FILTER_VAR: &str = "KEEPER_LOG";
/// The log format's environment variable.
pub const FORMAT_VAR: &str = "KEEPER_LOG_FORMAT";

/// How log lines are written (`KEEPER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for Format {
    type Err = LoggingError;

    fn from_str(value: &str) -> Result<Format, LoggingError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(LoggingError::UnknownFormat(value.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("{FORMAT_VAR}={0:?} is not a log format: use `text` (the default) or `json`")]
    UnknownFormat(String),
}

/// What [`init`] decided, from the environment and standard error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub format: Format,
    /// Colour escape codes in text lines.
    pub ansi: bool,
}

impl Choice {
    /// `format`: the value of `KEEPER_LOG_FORMAT`; `no_color`: of `NO_COLOR`;
    /// `terminal`: whether standard error is a terminal.
    pub fn new(format: Option<&str>, no_color: Option<&str>, terminal: bool) -> Result<Choice, LoggingError> {
        let format = format.map(str::parse).transpose()?.unwrap_or_default();
        let ansi = format == Format::Text && terminal && no_color.is_none_or(str::is_empty);
        Ok(Choice { format, ansi })
    }
}

/// Installs the process's log subscriber on standard error, as the
/// environment (`KEEPER_LOG`, `KEEPER_LOG_FORMAT`, `NO_COLOR`) asks. Call it
/// once, after `.env` is loaded so its values count.
pub fn init() -> Result<(), LoggingError> {
    let var = |name: &str| std::env::var(name).ok();
    let choice = Choice::new(
        var(FORMAT_VAR).as_deref(),
        var("NO_COLOR").as_deref(),
        std::io::stderr().is_terminal(),
    )?;
    let (filter, bad_filter) = match EnvFilter::try_from_env(FILTER_VAR) {
        Ok(filter) => (filter, None),
        Err(error) => {
            let set = var(FILTER_VAR).is_some_and(|v| !v.trim().is_empty());
            (EnvFilter::new("info"), set.then_some(error))
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(choice.ansi)
        .log_internal_errors(false);
    match choice.format {
        Format::Text => builder.init(),
        Format::Json => builder.json().flatten_event(true).init(),
    }
    if let Some(error) = bad_filter {
        tracing::warn!(%error, "{FILTER_VAR} is not a valid log filter; logging at `info`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_for_text_on_a_terminal_without_no_color() {
        let colour = |format, no_color, terminal| Choice::new(format, no_color, terminal).unwrap().ansi;
        assert!(colour(None, None, true));
        assert!(colour(Some("text"), Some(""), true), "an empty NO_COLOR does not count");
        assert!(!colour(None, None, false), "a file or a pipe gets no escape codes");
        assert!(!colour(None, Some("1"), true));
        assert!(!colour(Some("json"), None, true), "JSON lines never carry escape codes");
    }

    #[test]
    fn formats_are_named_text_or_json() {
        assert_eq!("JSON".parse::<Format>().unwrap(), Format::Json);
        assert_eq!(" text ".parse::<Format>().unwrap(), Format::Text);
        assert_eq!("".parse::<Format>().unwrap(), Format::Text);
        let error = "logfmt".parse::<Format>().unwrap_err().to_string();
        assert_eq!(
            error,
            "KEEPER_LOG_FORMAT=\"logfmt\" is not a log format: use `text` (the default) or `json`"
        );
    }
}
