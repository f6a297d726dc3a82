//! Host-held secrets: `DELEGATE_SECRETS_FILE` (`name = value` lines, this
//! user's alone) and `DELEGATE_SECRET_<NAME>` variables. Manifests name
//! them in `secretEnv`; the gateway injects `anthropic` or `claude-oauth`
//! into a `claude` job's API calls. Values are [`Secret`]s: they never print.

use std::collections::BTreeMap;
use std::path::Path;

use crate::resolve::{Machine, Secret, SettingsError, invalid};

/// The variable prefix of one secret each.
const VAR_PREFIX: &str = "DELEGATE_SECRET_";
/// The secret the gateway sends as `x-api-key` to the Anthropic API.
pub const ANTHROPIC_API_KEY: &str = "anthropic";
/// The secret the gateway sends as an OAuth bearer token instead.
pub const ANTHROPIC_OAUTH: &str = "claude-oauth";

/// The host's secrets by lowercase name.
#[derive(Debug, Clone, Default)]
pub struct HostSecrets {
    by_name: BTreeMap<String, Secret>,
}

/// How the gateway authenticates a `claude` job's calls upstream.
#[derive(Debug, Clone)]
pub enum AnthropicCredential {
    /// `x-api-key`.
    ApiKey(Secret),
    /// `Authorization: Bearer`, with the OAuth beta header.
    OAuth(Secret),
}

impl HostSecrets {
    /// Reads the file (refusing one that group or others may read) and the
    /// variables; a variable wins over the file's line of the same name.
    pub fn resolve(file: Option<&Path>, machine: &dyn Machine) -> Result<Self, SettingsError> {
        const SETTING: &str = "DELEGATE_SECRETS_FILE";
        let mut by_name = BTreeMap::new();
        if let Some(path) = file {
            let mode = machine
                .mode(path)
                .ok_or_else(|| invalid(SETTING, format!("{} does not exist", path.display())))?;
            if mode & 0o077 != 0 {
                return Err(invalid(
                    SETTING,
                    format!(
                        "{} is readable by others (mode {:o}); chmod 600 it",
                        path.display(),
                        mode & 0o777
                    ),
                ));
            }
            let bytes = machine.read(path).map_err(|source| SettingsError::Read {
                setting: SETTING,
                path: path.to_path_buf(),
                source,
            })?;
            let text = String::from_utf8(bytes)
                .map_err(|_| invalid(SETTING, format!("{} is not UTF-8", path.display())))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                // The line number only: the line holds a secret.
                let (name, value) = line.split_once('=').ok_or_else(|| {
                    invalid(SETTING, format!("line {} is not name = value", n + 1))
                })?;
                let name = check_name(SETTING, name.trim())?;
                by_name.insert(name, Secret::new(value.trim()));
            }
        }
        for var in machine.var_names(VAR_PREFIX) {
            let Some(value) = machine.var(&var) else {
                continue;
            };
            let name = check_name("DELEGATE_SECRET_<NAME>", &var[VAR_PREFIX.len()..])?;
            // Variables cannot hold '-': DELEGATE_SECRET_CLAUDE_OAUTH is claude-oauth.
            by_name.insert(name.replace('_', "-"), Secret::new(value));
        }
        Ok(HostSecrets { by_name })
    }

    /// The secret of that name (names are case-insensitive; `_` and `-` are
    /// the same, as variables cannot hold `-`).
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.by_name
            .get(&name.to_ascii_lowercase().replace('_', "-"))
    }

    /// The names, for `config` and for telling an agent what exists.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Every value, for redaction.
    pub fn values(&self) -> impl Iterator<Item = &Secret> {
        self.by_name.values()
    }

    /// The credential the gateway injects for `claude` jobs, if any (an
    /// API key wins over an OAuth token).
    pub fn anthropic(&self) -> Option<AnthropicCredential> {
        self.get(ANTHROPIC_API_KEY)
            .map(|s| AnthropicCredential::ApiKey(s.clone()))
            .or_else(|| {
                self.get(ANTHROPIC_OAUTH)
                    .map(|s| AnthropicCredential::OAuth(s.clone()))
            })
    }
}

fn check_name(setting: &'static str, name: &str) -> Result<String, SettingsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if !ok {
        return Err(invalid(
            setting,
            format!("{name:?} is not a secret name (letters, digits, '-', '_')"),
        ));
    }
    Ok(name.to_ascii_lowercase().replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::FixedMachine;

    #[test]
    fn file_and_variables_are_read_and_a_readable_file_refused() {
        let m = FixedMachine::default()
            .with_file("/s", "# comment\ngithub = ghp_abc\nanthropic=sk-file\n")
            .with_var("DELEGATE_SECRET_ANTHROPIC", "sk-var")
            .with_var("DELEGATE_SECRET_CLAUDE_OAUTH", "oat");
        let s = HostSecrets::resolve(Some(Path::new("/s")), &m).unwrap();
        assert_eq!(s.get("GitHub").unwrap().expose(), "ghp_abc");
        assert_eq!(s.get("claude_oauth").unwrap().expose(), "oat");
        assert!(
            matches!(s.anthropic(), Some(AnthropicCredential::ApiKey(k)) if k.expose() == "sk-var")
        );
        assert!(!format!("{s:?}").contains("ghp_abc"));

        let mut m = m;
        m.modes.insert("/s".into(), 0o644);
        let err = HostSecrets::resolve(Some(Path::new("/s")), &m).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let m = FixedMachine::default().with_file("/s", "novalue-sk-123\n");
        let err = HostSecrets::resolve(Some(Path::new("/s")), &m).unwrap_err();
        assert!(!err.to_string().contains("sk-123"), "{err}");
    }
}
