//! Reading a manifest file for `submit`, with errors a person can act on:
//! a JSON syntax error names its line and column, a document that is not an
//! object says so in a sentence. The manifest's own rules are checked by
//! `JobManifest::from_value`, as for MCP clients.

use std::io::Read;
use std::path::Path;

use delegate_proto::JobManifest;
use serde_json::Value;

use super::exit::CliError;
use crate::jobs::JobError;

/// Reads and checks the manifest at `path` (`-` is stdin).
pub fn read(path: &Path) -> Result<JobManifest, CliError> {
    let mut bytes = Vec::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    read.map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let shown = if path == Path::new("-") {
        Path::new("<stdin>")
    } else {
        path
    };
    let invalid = |message: String| CliError::Manifest {
        path: shown.to_path_buf(),
        message,
    };
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(syntax(&e)))?;
    if !value.is_object() {
        return Err(invalid(format!(
            "a manifest is a JSON object such as {{\"task\": \"echo hi\", \"agentType\": \
             \"script\"}}, but this file holds {}",
            kind(&value)
        )));
    }
    JobManifest::from_value(value).map_err(|e| CliError::from(JobError::InvalidManifest(e)))
}

/// A JSON error in words, with where it is.
fn syntax(e: &serde_json::Error) -> String {
    if e.is_eof() && e.line() <= 1 && e.column() == 0 {
        return "the file is empty; a manifest is a JSON object".into();
    }
    // serde_json ends its message with " at line L column C"; say it first.
    let message = e.to_string();
    let what = message
        .rfind(" at line ")
        .map_or(message.as_str(), |i| &message[..i]);
    format!(
        "not valid JSON at line {}, column {}: {what}",
        e.line(),
        e.column()
    )
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Array(items) if items.is_empty() => "an empty array ([])",
        Value::Array(_) => "an array (submit one manifest per file)",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<JobManifest, CliError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        std::fs::write(&path, text).unwrap();
        read(&path)
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = read_text("{\n  \"task\": \"x\",\n  \"agentType\": script\n}").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 3, column 16"), "{text}");
        assert_eq!(e.exit_code(), super::super::exit::INVALID_MANIFEST);
    }

    #[test]
    fn documents_that_are_not_objects_get_a_sentence() {
        let text = read_text("[]").unwrap_err().to_string();
        assert!(text.contains("a manifest is a JSON object"), "{text}");
        assert!(text.contains("an empty array"), "{text}");
        assert!(!text.contains("invalid type"), "{text}");
        let text = read_text("").unwrap_err().to_string();
        assert!(text.contains("empty"), "{text}");
    }

    #[test]
    fn a_good_manifest_reads() {
        let m = read_text(r#"{"task": "echo hi", "agentType": "script"}"#).unwrap();
        assert_eq!(m.task, "echo hi");
    }
}
