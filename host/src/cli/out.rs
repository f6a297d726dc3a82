//! Writing a command's output. stdout carries what scripts read (ids,
//! tables, JSON); stderr carries notes and progress for the person.
//!
//! `print!` panics when stdout is a pipe whose reader has gone
//! (`delegate-host list | head -1`); these functions return the error
//! instead, and `main` ends quietly on it. Notes on stderr are best effort.

use std::io::Write;

use serde::Serialize;

use super::exit::CliError;

/// Writes text to stdout as it is.
pub fn text(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Writes one line to stdout.
pub fn line(line: &str) -> Result<(), CliError> {
    text(&format!("{line}\n"))
}

/// Writes a value as pretty JSON to stdout.
pub fn json<T: Serialize>(value: &T) -> Result<(), CliError> {
    let encoded = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
    line(&encoded)
}

/// Writes a note for the person to stderr; a closed stderr loses it.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
