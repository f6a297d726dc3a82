//! The manifest's rules. Each check names the field (as a JSON path) and the
//! rule it enforces; the first failure wins so messages stay short.

use crate::manifest::{
    AgentType, CLAUDE_PERMISSION_MODES, JobManifest, MAX_CPU, MAX_FILES, MAX_FILES_BYTES,
    MAX_MEMORY, MAX_TIMEOUT_SECONDS, ManifestError, WORKSPACE_PREFIX,
};
use crate::size::parse_size;

/// Longest `task` accepted (it becomes one argv element for `claude`).
const MAX_TASK_BYTES: usize = 1024 * 1024;
/// Longest single argument or env value (Linux caps one argv string at 128 KiB).
const MAX_ARG_BYTES: usize = 128 * 1024;
const MAX_ARGS: usize = 1024;
const MAX_ENV: usize = 1024;
const MAX_ARTIFACT_GLOBS: usize = 256;
const MIN_MEMORY: u64 = 32 << 20;
/// Largest `agent.maxBudgetUsd` (a typo's guard, not a policy: the host
/// has its own ceiling).
const MAX_BUDGET_USD: f64 = 100_000.0;

pub(crate) fn manifest(m: &JobManifest) -> Result<(), ManifestError> {
    no_nul("task", &m.task)?;
    if m.task.trim().is_empty() {
        return Err(ManifestError::new("task", "must not be empty"));
    }
    if m.task.len() > MAX_TASK_BYTES {
        return Err(ManifestError::new(
            "task",
            format!("must be at most {MAX_TASK_BYTES} bytes"),
        ));
    }
    agent(m)?;
    files(m)?;
    env(m)?;
    crate::network::validate(m.network.as_ref(), &m.secret_env, &m.env)?;
    resources(m)?;
    if let Some(t) = m.timeout
        && !(1..=MAX_TIMEOUT_SECONDS).contains(&t)
    {
        return Err(ManifestError::new(
            "timeout",
            format!("must be between 1 and {MAX_TIMEOUT_SECONDS} seconds, got {t}"),
        ));
    }
    artifacts(m)?;
    crate::repo::validate(m)?;
    if let Some(t) = &m.vm_template {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(ManifestError::new(
                "vmTemplate",
                "must be a VMID or a template name of letters, digits, '-', '_' and '.' (at most 128)",
            ));
        }
    }
    Ok(())
}

fn agent(m: &JobManifest) -> Result<(), ManifestError> {
    let a = &m.agent;
    if let Some(cmd) = &a.command {
        no_nul("agent.command", cmd)?;
        if cmd.trim().is_empty() {
            return Err(ManifestError::new(
                "agent.command",
                "must not be empty when given",
            ));
        }
    }
    if m.agent_type == AgentType::Custom && a.command.is_none() {
        return Err(ManifestError::new(
            "agent.command",
            "is required when agentType is custom",
        ));
    }
    if !a.args.is_empty() && m.agent_type != AgentType::Custom {
        return Err(ManifestError::new(
            "agent.args",
            "is only used when agentType is custom",
        ));
    }
    if a.args.len() > MAX_ARGS {
        return Err(ManifestError::new(
            "agent.args",
            format!("at most {MAX_ARGS} arguments"),
        ));
    }
    for (i, arg) in a.args.iter().enumerate() {
        let field = format!("agent.args[{i}]");
        no_nul(&field, arg)?;
        if arg.len() > MAX_ARG_BYTES {
            return Err(ManifestError::new(
                field,
                format!("at most {MAX_ARG_BYTES} bytes"),
            ));
        }
    }
    if let Some(model) = &a.claude_model {
        let ok = !model.is_empty()
            && model.len() <= 128
            && model.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '[' | ']')
            });
        if !ok {
            return Err(ManifestError::new(
                "agent.claudeModel",
                "must be a model name such as claude-sonnet-4-5 or sonnet",
            ));
        }
    }
    if a.max_turns == Some(0) {
        return Err(ManifestError::new("agent.maxTurns", "must be at least 1"));
    }
    if let Some(mode) = &a.permission_mode
        && !CLAUDE_PERMISSION_MODES.contains(&mode.as_str())
    {
        return Err(ManifestError::new(
            "agent.permissionMode",
            format!("must be one of {}", CLAUDE_PERMISSION_MODES.join(", ")),
        ));
    }
    for (list, name) in [
        (&a.allowed_tools, "agent.allowedTools"),
        (&a.disallowed_tools, "agent.disallowedTools"),
    ] {
        for (i, tool) in list.iter().enumerate() {
            let field = format!("{name}[{i}]");
            no_nul(&field, tool)?;
            if tool.trim().is_empty() {
                return Err(ManifestError::new(field, "must not be empty"));
            }
        }
    }
    if let Some(p) = &a.append_system_prompt {
        no_nul("agent.appendSystemPrompt", p)?;
    }
    if let Some(usd) = a.max_budget_usd {
        if !(usd.is_finite() && usd > 0.0 && usd <= MAX_BUDGET_USD) {
            return Err(ManifestError::new(
                "agent.maxBudgetUsd",
                format!("must be a number of US dollars above 0 and at most {MAX_BUDGET_USD}"),
            ));
        }
        if m.agent_type != AgentType::Claude {
            return Err(ManifestError::new(
                "agent.maxBudgetUsd",
                "is only used when agentType is claude",
            ));
        }
    }
    Ok(())
}

fn files(m: &JobManifest) -> Result<(), ManifestError> {
    if m.files.len() > MAX_FILES {
        return Err(ManifestError::new(
            "files",
            format!("at most {MAX_FILES} files"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut total: u64 = 0;
    for (i, f) in m.files.iter().enumerate() {
        let field = format!("files[{i}].path");
        let rel = workspace_relative(&f.path).map_err(|rule| ManifestError::new(&field, rule))?;
        if !seen.insert(rel.clone()) {
            return Err(ManifestError::new(field, format!("{rel:?} is given twice")));
        }
        let content_field = if f.text.is_some() && f.content.is_none() {
            format!("files[{i}].text")
        } else {
            format!("files[{i}].content")
        };
        if let Some(text) = &f.text {
            no_nul(&format!("files[{i}].text"), text)?;
        }
        let decoded = f
            .bytes()
            .map_err(|rule| ManifestError::new(&content_field, rule))?;
        total += decoded.len() as u64;
        if total > MAX_FILES_BYTES {
            return Err(ManifestError::new(
                content_field,
                format!("input files exceed {MAX_FILES_BYTES} bytes in total"),
            ));
        }
        if let Some(mode) = &f.mode {
            match mode.bits() {
                Some(bits) if bits <= 0o777 => {}
                Some(_) => {
                    return Err(ManifestError::new(
                        format!("files[{i}].mode"),
                        "must be permission bits 0..=0o777 (no setuid, setgid or sticky)",
                    ));
                }
                None => {
                    return Err(ManifestError::new(
                        format!("files[{i}].mode"),
                        "must be a number or an octal string such as \"0755\"",
                    ));
                }
            }
        }
    }
    // A file that is also a directory of another file cannot be written.
    for (i, f) in m.files.iter().enumerate() {
        let rel = workspace_relative(&f.path).unwrap_or_default();
        let as_dir = format!("{rel}/");
        if seen.iter().any(|other| other.starts_with(&as_dir)) {
            return Err(ManifestError::new(
                format!("files[{i}].path"),
                format!("{rel:?} is both a file and the directory of another file"),
            ));
        }
    }
    Ok(())
}

fn env(m: &JobManifest) -> Result<(), ManifestError> {
    if m.env.len() > MAX_ENV {
        return Err(ManifestError::new(
            "env",
            format!("at most {MAX_ENV} variables"),
        ));
    }
    for (key, value) in &m.env {
        if !is_env_name(key) {
            return Err(ManifestError::new(
                format!("env.{key}"),
                "is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
            ));
        }
        no_nul(&format!("env.{key}"), value)?;
        if value.len() > MAX_ARG_BYTES {
            return Err(ManifestError::new(
                format!("env.{key}"),
                format!("value must be at most {MAX_ARG_BYTES} bytes"),
            ));
        }
    }
    for (i, name) in m.secrets.iter().enumerate() {
        if !m.env.contains_key(name) {
            return Err(ManifestError::new(
                format!("secrets[{i}]"),
                format!("names {name:?}, which is not in env"),
            ));
        }
    }
    Ok(())
}

fn resources(m: &JobManifest) -> Result<(), ManifestError> {
    let Some(r) = &m.resources else { return Ok(()) };
    if let Some(cpu) = &r.cpu {
        let whole = cpu.as_u64().filter(|n| (1..=MAX_CPU).contains(n));
        if whole.is_none() {
            return Err(ManifestError::new(
                "resources.cpu",
                format!("must be a whole number from 1 to {MAX_CPU}, got {cpu}"),
            ));
        }
    }
    if let Some(mem) = &r.memory {
        let bytes =
            parse_size(mem).map_err(|e| ManifestError::new("resources.memory", e.to_string()))?;
        if bytes < MIN_MEMORY {
            return Err(ManifestError::new(
                "resources.memory",
                "must be at least 32M",
            ));
        }
        if bytes > MAX_MEMORY {
            return Err(ManifestError::new(
                "resources.memory",
                format!("must be at most 4T, got {mem}"),
            ));
        }
    }
    if let Some(disk) = &r.disk {
        let bytes =
            parse_size(disk).map_err(|e| ManifestError::new("resources.disk", e.to_string()))?;
        if bytes < (1 << 20) {
            return Err(ManifestError::new("resources.disk", "must be at least 1M"));
        }
    }
    Ok(())
}

fn artifacts(m: &JobManifest) -> Result<(), ManifestError> {
    if m.artifacts.len() > MAX_ARTIFACT_GLOBS {
        return Err(ManifestError::new(
            "artifacts",
            format!("at most {MAX_ARTIFACT_GLOBS} globs"),
        ));
    }
    for (i, glob) in m.artifacts.iter().enumerate() {
        let field = format!("artifacts[{i}]");
        let rel = workspace_relative(glob).map_err(|rule| ManifestError::new(&field, rule))?;
        globset::Glob::new(&rel).map_err(|e| {
            ManifestError::new(&field, format!("is not a valid glob: {}", e.kind()))
        })?;
    }
    Ok(())
}

/// Maps a manifest path to a path relative to the workspace: `a/b`,
/// `./a/b` and `/workspace/a/b` all give `a/b`. Refuses anything that could
/// leave the workspace or name it as a whole: other absolute paths, `..`,
/// empty paths, NUL bytes and backslashes.
pub fn workspace_relative(path: &str) -> Result<String, String> {
    if path.contains('\0') {
        return Err("must not contain NUL".into());
    }
    if path.contains('\\') {
        return Err("must use '/' as separator, not '\\'".into());
    }
    if path.len() > 4096 {
        return Err("must be at most 4096 bytes".into());
    }
    let rest = if let Some(abs) = path.strip_prefix('/') {
        let under = format!("{}/", WORKSPACE_PREFIX);
        match format!("/{abs}").strip_prefix(&under) {
            Some(r) => r.to_string(),
            None => {
                return Err(format!(
                    "{path:?} is absolute outside {WORKSPACE_PREFIX}; use a relative path"
                ));
            }
        }
    } else {
        path.to_string()
    };
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("{path:?} contains '..'")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "{path:?} does not name anything inside the workspace"
        ));
    }
    Ok(parts.join("/"))
}

pub(crate) fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && key.len() <= 256
}

fn no_nul(field: &str, value: &str) -> Result<(), ManifestError> {
    if value.contains('\0') {
        return Err(ManifestError::new(field, "must not contain NUL bytes"));
    }
    Ok(())
}
