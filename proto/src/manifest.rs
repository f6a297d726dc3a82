//! The job manifest: what a client submits and what the guest runs.
//!
//! Field names are camelCase and a superset of the original TypeScript
//! delegation server's `JobManifest`, so manifests written for it parse
//! unchanged. Unknown fields are refused so that a typo (`timout`) is an
//! error rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Upper bound on the manifest's JSON size, input files included.
pub const MAX_MANIFEST_BYTES: usize = 32 * 1024 * 1024;
/// Upper bound on the decoded size of all input files together.
pub const MAX_FILES_BYTES: u64 = 16 * 1024 * 1024;
/// Upper bound on the number of input files.
pub const MAX_FILES: usize = 4096;
/// Largest accepted `timeout`, in seconds (one week).
pub const MAX_TIMEOUT_SECONDS: u64 = 604_800;
/// Largest accepted `resources.cpu`.
pub const MAX_CPU: u64 = 128;
/// Largest accepted `resources.memory` (4T, Proxmox VE's ceiling for one
/// VM); a host also refuses more than its provider can give.
pub const MAX_MEMORY: u64 = 4 << 40;
/// The directory inside a VM where the workspace lives; manifest paths that
/// start with it are mapped into the actual workspace.
pub const WORKSPACE_PREFIX: &str = "/workspace";

/// A job as submitted by a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobManifest {
    /// What to do: the prompt for `claude`, the script for `script` when
    /// `agent.command` is absent, a description otherwise.
    pub task: String,
    /// Which kind of agent runs the task.
    pub agent_type: AgentType,
    /// Agent details (command, args, model, ...).
    #[serde(default, skip_serializing_if = "AgentConfig::is_empty")]
    pub agent: AgentConfig,
    /// Input files written into the workspace before the agent starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InputFile>,
    /// Environment variables for the agent, on top of a clean base.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of `env` entries whose values are secret: redacted everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// CPU, memory and disk for the VM (and the cgroup in the guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Wall-clock limit for the whole job in seconds (1..=604800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Whether the VM is destroyed when the job ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// How much the guest reports while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_mode: Option<StatusMode>,
    /// Globs, relative to the workspace, of files to collect as artifacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<String>,
    /// Template (name or VMID) to clone instead of the host's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_template: Option<String>,
    /// Destinations the job may reach through the host's egress gateway;
    /// none means no egress beyond the callback API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkPolicy>,
    /// Variables set from host-held secrets, by name (`{"GITHUB_TOKEN":
    /// "github"}`): the value never passes through the client or the store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// A git repository delivered into the workspace before the agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<crate::repo::RepoSpec>,
    /// What is collected besides artifacts (the patch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect: Option<crate::repo::CollectSpec>,
}

/// The kind of agent that runs a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentType {
    /// Claude Code in print mode with stream-json output.
    Claude,
    /// `bash -c` with `agent.command`, or with `task` when there is no command.
    Script,
    /// `agent.command` with `agent.args`, executed directly without a shell.
    Custom,
}

impl AgentType {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentType::Claude => "claude",
            AgentType::Script => "script",
            AgentType::Custom => "custom",
        }
    }
}

/// Agent details. All optional; which ones apply depends on `agentType`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// `script`: the bash script. `custom`: the program. `claude`: the
    /// `claude` executable to use instead of the one on `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// `custom`: the program's arguments, passed as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `claude`: the model (`--model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude_model: Option<String>,
    /// `claude`: `--max-turns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    /// `claude`: `--allowedTools`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// `claude`: `--disallowedTools`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disallowed_tools: Vec<String>,
    /// `claude`: `--permission-mode` (`default`, `acceptEdits`, `plan`,
    /// `bypassPermissions`, `dontAsk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
    /// `claude`: `--append-system-prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append_system_prompt: Option<String>,
    /// `claude`: `--max-budget-usd`, the most the run may spend (the host
    /// may lower it to its own ceiling, never raise it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_usd: Option<f64>,
}

impl AgentConfig {
    fn is_empty(&self) -> bool {
        self == &AgentConfig::default()
    }
}

/// The permission modes Claude Code accepts for `--permission-mode`.
pub const CLAUDE_PERMISSION_MODES: &[&str] = &[
    "default",
    "acceptEdits",
    "plan",
    "bypassPermissions",
    "dontAsk",
];

/// A file written into the workspace before the job starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputFile {
    /// Relative to the workspace, or absolute under `/workspace`.
    pub path: String,
    /// The content, base64 (standard alphabet). Exactly one of `content`
    /// and `text` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The content as UTF-8 text, written as it is (no encoding needed, so
    /// a model can write files directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Permission bits: a number, or an octal string such as `"0755"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
}

impl InputFile {
    /// The bytes to write: `text` as it is, or `content` decoded. Fails
    /// when neither or both are given, or `content` is not base64.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine as _;
        match (&self.content, &self.text) {
            (Some(b64), None) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| format!("is not valid base64: {e}")),
            (None, Some(text)) => Ok(text.as_bytes().to_vec()),
            (Some(_), Some(_)) => Err("give either content (base64) or text, not both".into()),
            (None, None) => Err("give content (base64) or text".into()),
        }
    }
}

/// A file mode as written in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FileMode {
    /// A plain number (JSON has no octal literals, so `493` is `0o755`).
    Number(u32),
    /// An octal string: `"755"`, `"0755"` or `"0o755"`.
    Octal(String),
}

impl FileMode {
    /// The permission bits, or `None` when an octal string does not parse.
    pub fn bits(&self) -> Option<u32> {
        match self {
            FileMode::Number(n) => Some(*n),
            FileMode::Octal(s) => {
                let digits = s.strip_prefix("0o").unwrap_or(s);
                if digits.is_empty() {
                    return None;
                }
                u32::from_str_radix(digits, 8).ok()
            }
        }
    }
}

/// Resources requested for the job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// Whole number of CPUs, 1..=128. Kept as a JSON number so that `1.5`
    /// is reported as a rule violation rather than a parse error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<serde_json::Number>,
    /// Memory such as `512M` or `2G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Disk such as `10G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

impl Resources {
    /// The CPU count, when present and valid.
    pub fn cpu_count(&self) -> Option<u32> {
        self.cpu
            .as_ref()
            .and_then(|n| n.as_u64())
            .filter(|n| (1..=MAX_CPU).contains(n))
            .map(|n| n as u32)
    }

    /// Memory in bytes, when present and valid.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory
            .as_deref()
            .and_then(|s| crate::size::parse_size(s).ok())
    }

    /// Disk in bytes, when present and valid.
    pub fn disk_bytes(&self) -> Option<u64> {
        self.disk
            .as_deref()
            .and_then(|s| crate::size::parse_size(s).ok())
    }
}

/// What happens to the VM when the job ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Destroyed as soon as the job is final (the default).
    #[default]
    Ephemeral,
    /// Kept after the job for inspection; listed by the host.
    Persistent,
}

/// How much the guest reports while a job runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusMode {
    /// Phases and the result.
    Simple,
    /// Phases, progress, heartbeats and the result (the default).
    #[default]
    Detailed,
    /// Everything in `detailed`, plus the output as log chunks.
    Streaming,
}

/// Why a manifest was refused: the field (a JSON path such as
/// `files[2].path`) and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid manifest: {field}: {rule}")]
pub struct ManifestError {
    /// JSON path of the offending field, `$` for the document itself.
    pub field: String,
    /// The rule, in words.
    pub rule: String,
}

impl ManifestError {
    pub(crate) fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ManifestError {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl JobManifest {
    /// Parses and validates a manifest from JSON bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::new(
                "$",
                format!(
                    "manifest is {} bytes, the limit is {MAX_MANIFEST_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let manifest: JobManifest = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| parse_error(e.path().to_string(), e.inner()))?;
        de.end()
            .map_err(|e| ManifestError::new("$", format!("trailing data: {e}")))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Parses and validates a manifest from an already-decoded JSON value.
    pub fn from_value(value: serde_json::Value) -> Result<Self, ManifestError> {
        let size = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
        if size > MAX_MANIFEST_BYTES {
            return Err(ManifestError::new(
                "$",
                format!("manifest is {size} bytes, the limit is {MAX_MANIFEST_BYTES}"),
            ));
        }
        let manifest: JobManifest = serde_path_to_error::deserialize(value)
            .map_err(|e| parse_error(e.path().to_string(), e.inner()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks every rule; the first broken one is returned.
    pub fn validate(&self) -> Result<(), ManifestError> {
        crate::validate::manifest(self)
    }

    /// The effective timeout in seconds, given the host's default.
    pub fn timeout_or(&self, default_seconds: u64) -> u64 {
        self.timeout.unwrap_or(default_seconds)
    }

    /// The effective status mode.
    pub fn status_mode(&self) -> StatusMode {
        self.status_mode.unwrap_or_default()
    }

    /// Whether the guest makes a patch at the end: `collect.patch`, which
    /// defaults to true when a repository is given.
    pub fn wants_patch(&self) -> bool {
        self.collect
            .as_ref()
            .and_then(|c| c.patch)
            .unwrap_or(self.repo.is_some())
    }

    /// The effective lifecycle.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.unwrap_or_default()
    }

    /// The values of the `env` entries named in `secrets`, for redaction.
    pub fn secret_values(&self) -> Vec<&str> {
        self.secrets
            .iter()
            .filter_map(|name| self.env.get(name))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// A copy with secret values replaced by `***`, safe to show or store
    /// where secrets must not appear.
    ///
    /// Secret values are also replaced inside every other text a client
    /// wrote (the task, the agent's settings, other env values, input
    /// files): a client that pastes a secret into `task` still never sees
    /// it in a status or a listing, and a final job's stored manifest keeps
    /// none.
    pub fn redacted(&self) -> JobManifest {
        let secrets = self.secret_values();
        let scrub = |t: &mut String| *t = scrub_secrets(t, &secrets);
        let mut copy = self.clone();
        for (name, v) in copy.env.iter_mut() {
            if self.secrets.contains(name) {
                *v = crate::REDACTED.to_string();
            } else {
                scrub(v);
            }
        }
        if secrets.is_empty() {
            return copy;
        }
        scrub(&mut copy.task);
        let agent = &mut copy.agent;
        agent.command.iter_mut().for_each(scrub);
        agent.args.iter_mut().for_each(scrub);
        agent.append_system_prompt.iter_mut().for_each(scrub);
        for f in &mut copy.files {
            f.content.iter_mut().for_each(scrub);
            f.text.iter_mut().for_each(scrub);
        }
        copy
    }
}

/// `text` with every one of `secrets` replaced by [`REDACTED`], longest
/// first (so a secret that contains another is replaced whole).
pub fn scrub_secrets(text: &str, secrets: &[&str]) -> String {
    let mut sorted: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for secret in sorted {
        if out.contains(secret) {
            out = out.replace(secret, REDACTED);
        }
    }
    out
}

/// What secrets are replaced with wherever they would otherwise appear.
pub const REDACTED: &str = "***";

fn parse_error(path: String, err: &serde_json::Error) -> ManifestError {
    let field = if path.is_empty() || path == "." {
        "$".to_string()
    } else {
        path
    };
    // serde's messages carry a position that means nothing to a caller who
    // sent a JSON value; keep the message, drop " at line 1 column 30".
    let msg = err.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    ManifestError::new(field, msg)
}
