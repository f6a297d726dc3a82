//! What a standalone run (`delegate-guest run` without `--callback`) takes
//! from the person who started it.
//!
//! Standalone runs are for debugging a manifest on a laptop before it goes to
//! a VM. The job still gets the clean environment it gets in a VM; only two
//! things come from the caller, and both are said in the run's output:
//! - the caller's `PATH` is searched for the agent program after the job's own
//!   (a `claude` installed under the user's npm prefix is found), and the
//!   directory it was found in is added to the job's `PATH`, so an interpreter
//!   installed beside it (`#!/usr/bin/env node` under nvm) is found too;
//! - a `claude` job borrows the caller's Claude credentials that the manifest
//!   does not set, as secrets: they are redacted like any manifest secret.
//!
//! In a VM none of this applies: the runner's own environment is the host's
//! business, never the job's.

use std::collections::BTreeMap;
use std::ffi::OsString;

use delegate_proto::{AgentType, JobManifest};

/// The variables a `claude` job may borrow from the caller.
pub const CLAUDE_CREDENTIALS: [&str; 3] = [
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
];

/// The parts of the caller's environment a standalone run may use.
#[derive(Clone, Default)]
pub struct CallerEnv {
    /// The caller's `PATH`, searched for the agent after the job's own.
    pub path: Option<String>,
    /// Values of [`CLAUDE_CREDENTIALS`] the caller has set (non-empty, UTF-8).
    credentials: BTreeMap<String, String>,
}

impl std::fmt::Debug for CallerEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the credential values.
        f.debug_struct("CallerEnv")
            .field("path", &self.path)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl CallerEnv {
    /// The environment this process was started with.
    pub fn current() -> Self {
        Self::from_vars(std::env::vars_os())
    }

    /// The same from any list of variables (tests).
    pub fn from_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let mut caller = CallerEnv::default();
        for (name, value) in vars {
            let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            if name == "PATH" {
                caller.path = Some(value.to_string());
            } else if CLAUDE_CREDENTIALS.contains(&name) {
                caller
                    .credentials
                    .insert(name.to_string(), value.to_string());
            }
        }
        caller
    }

    /// Gives a `claude` job the caller's credentials its manifest does not
    /// set, each added to `env` and named in `secrets` (so it is redacted
    /// from output, events and the result). Returns the names lent, in
    /// order; other agent types get nothing.
    pub fn lend_claude_credentials(&self, manifest: &mut JobManifest) -> Vec<&'static str> {
        if manifest.agent_type != AgentType::Claude {
            return Vec::new();
        }
        let mut lent = Vec::new();
        for name in CLAUDE_CREDENTIALS {
            let Some(value) = self.credentials.get(name) else {
                continue;
            };
            if manifest.env.contains_key(name) {
                continue;
            }
            manifest.env.insert(name.to_string(), value.clone());
            if !manifest.secrets.iter().any(|s| s == name) {
                manifest.secrets.push(name.to_string());
            }
            lent.push(name);
        }
        lent
    }
}

/// The sentence a run prints about what it borrowed.
pub fn lent_note(names: &[&str]) -> Option<String> {
    (!names.is_empty()).then(|| {
        format!(
            "took {} from the caller's environment (treated as secrets)",
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(vars: &[(&str, &str)]) -> CallerEnv {
        CallerEnv::from_vars(vars.iter().map(|(k, v)| (k.into(), v.into())))
    }

    fn manifest(json: serde_json::Value) -> JobManifest {
        JobManifest::from_value(json).unwrap()
    }

    #[test]
    fn lends_only_what_the_manifest_lacks_and_marks_it_secret() {
        let c = caller(&[
            ("ANTHROPIC_API_KEY", "sk-caller"),
            ("CLAUDE_CODE_OAUTH_TOKEN", "oauth-caller"),
            ("ANTHROPIC_BASE_URL", ""),
            ("HOME", "/home/me"),
            ("PATH", "/home/me/.npm/bin:/usr/bin"),
        ]);
        assert_eq!(c.path.as_deref(), Some("/home/me/.npm/bin:/usr/bin"));
        let mut m = manifest(serde_json::json!({
            "task": "t", "agentType": "claude",
            "env": {"CLAUDE_CODE_OAUTH_TOKEN": "from-manifest"},
        }));
        let lent = c.lend_claude_credentials(&mut m);
        assert_eq!(lent, ["ANTHROPIC_API_KEY"]);
        assert_eq!(m.env["ANTHROPIC_API_KEY"], "sk-caller");
        assert_eq!(m.env["CLAUDE_CODE_OAUTH_TOKEN"], "from-manifest");
        assert!(!m.env.contains_key("ANTHROPIC_BASE_URL"), "empty is unset");
        assert!(!m.env.contains_key("HOME"));
        assert_eq!(m.secrets, ["ANTHROPIC_API_KEY"]);
        assert!(m.secret_values().contains(&"sk-caller"));
        assert_eq!(
            lent_note(&lent).unwrap(),
            "took ANTHROPIC_API_KEY from the caller's environment (treated as secrets)"
        );
    }

    #[test]
    fn other_agents_borrow_nothing() {
        let c = caller(&[("ANTHROPIC_API_KEY", "sk-caller")]);
        let mut m = manifest(serde_json::json!({"task": "env", "agentType": "script"}));
        assert!(c.lend_claude_credentials(&mut m).is_empty());
        assert!(m.env.is_empty() && m.secrets.is_empty());
        assert_eq!(lent_note(&[]), None);
    }

    #[test]
    fn debug_output_hides_values() {
        let c = caller(&[("ANTHROPIC_API_KEY", "sk-very-secret")]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("ANTHROPIC_API_KEY"), "{shown}");
    }
}
