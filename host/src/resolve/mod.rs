//! What every settings layer resolves with: the [`Machine`] it may look at,
//! the one [`SettingsError`], and [`Secret`] values.
//!
//! This sits below both `config` (the host's settings) and `provider/*`
//! (each provider's own settings), so the chain is `resolve` ← `provider` ←
//! `config`: config gathers the providers' settings, never the reverse.

mod machine;
mod secret;

use std::path::PathBuf;

pub use machine::{FileKind, FixedMachine, Machine, ProcessMachine};
pub use secret::Secret;

/// A setting that failed validation; every variant names the setting, so a
/// person knows which variable (or flag) to fix.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A value is missing, out of range or malformed.
    #[error("{setting}: {message}")]
    Invalid {
        /// The environment variable naming the setting.
        setting: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
    /// A file named by a setting could not be read.
    #[error("{setting}: cannot read {}: {source}", path.display())]
    Read {
        /// The setting.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is unusable (syntax, an unknown key, a value
    /// of the wrong type, a secret others may read).
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    File {
        /// The file.
        path: PathBuf,
        /// The line, when the fault has one.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A value from the environment or the configuration file that its
    /// setting cannot take.
    #[error("{origin}: {message}")]
    Given {
        /// The variable, or the file, line and key.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// mcp-proxmox-admin's configuration (found through
    /// `PROXMOX_ADMIN_PATH`, `MCP_SETTINGS` or its variables) is unusable.
    #[error("PROXMOX_ADMIN_PATH: mcp-proxmox-admin configuration {origin}: {message}")]
    Migration {
        /// The file or variable.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// An on/off setting as people write it in variables: `1`/`0`, `true`/
/// `false`, `yes`/`no`, `on`/`off` (any case; empty is off). The value
/// parser of every boolean setting, so `DELEGATE_LOCAL_UNSANDBOXED=1`
/// works as `PROXMOX_INSECURE=1` does.
pub fn parse_flag(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        other => Err(format!("expected 1 or 0 (true/false), got {other:?}")),
    }
}

/// A [`SettingsError::Invalid`].
pub fn invalid(setting: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        setting,
        message: message.into(),
    }
}

/// `path` made absolute against the machine's working directory; empty
/// and unresolvable paths are refused, naming `setting`.
pub fn absolute(
    setting: &'static str,
    path: &std::path::Path,
    machine: &dyn Machine,
) -> Result<PathBuf, SettingsError> {
    if path.as_os_str().is_empty() {
        return Err(invalid(setting, "is empty"));
    }
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    machine
        .cwd()
        .map(|cwd| cwd.join(path))
        .ok_or_else(|| invalid(setting, "is relative and the current directory is unknown"))
}
