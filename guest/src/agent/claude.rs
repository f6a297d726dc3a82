//! `claude`: Claude Code in print mode with stream-json output.
//!
//! Facts this builds on (Claude Code 2.x): `--output-format stream-json`
//! needs `--verbose` in print mode; `--dangerously-skip-permissions` is
//! refused as root unless `IS_SANDBOX=1`; credentials come from
//! `ANTHROPIC_API_KEY` or `CLAUDE_CODE_OAUTH_TOKEN`; API errors are retried
//! 10 times unless `CLAUDE_CODE_MAX_RETRIES` says otherwise; and whether a
//! run succeeded is said by the result event's `is_error` and
//! `terminal_reason`, never by `subtype` (a bad key gives `subtype: success`
//! with `is_error: true`).

use std::collections::BTreeMap;

use delegate_proto::outcome::ErrorKind;
use delegate_proto::{AgentResult, JobManifest};

use super::Invocation;

/// Retries of failed API calls unless the manifest sets its own: a broken
/// key or an outage should fail the job in seconds, not after ten backoffs.
pub const DEFAULT_MAX_RETRIES: &str = "2";
/// The variables that carry credentials; one of them must be set.
pub const CREDENTIAL_VARS: [&str; 2] = ["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"];

/// `claude -p --output-format stream-json --verbose [options] -- TASK`.
///
/// The task is one argv element and comes last, after `--`, so a task that
/// starts with `-` can never be read as an option, and the variadic
/// `--allowedTools` / `--disallowedTools` lists cannot swallow it. Without a
/// permission mode the run is headless in a throwaway machine with nobody to
/// approve tool use, so permissions are skipped (as the unprivileged job
/// user; see [`root_refusal`]).
pub fn invocation(m: &JobManifest) -> Invocation {
    let a = &m.agent;
    let mut args: Vec<String> = vec![
        "-p".into(),
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
    ];
    if let Some(model) = &a.claude_model {
        args.extend(["--model".into(), model.clone()]);
    }
    if let Some(n) = a.max_turns {
        args.extend(["--max-turns".into(), n.to_string()]);
    }
    if let Some(usd) = a.max_budget_usd {
        args.extend(["--max-budget-usd".into(), usd.to_string()]);
    }
    match &a.permission_mode {
        Some(mode) => args.extend(["--permission-mode".into(), mode.clone()]),
        None => args.push("--dangerously-skip-permissions".into()),
    }
    if let Some(prompt) = &a.append_system_prompt {
        args.extend(["--append-system-prompt".into(), prompt.clone()]);
    }
    if !a.allowed_tools.is_empty() {
        args.push("--allowedTools".into());
        args.extend(a.allowed_tools.iter().cloned());
    }
    if !a.disallowed_tools.is_empty() {
        args.push("--disallowedTools".into());
        args.extend(a.disallowed_tools.iter().cloned());
    }
    args.push("--".into());
    args.push(m.task.clone());
    Invocation {
        program: a.command.clone().unwrap_or_else(|| "claude".into()),
        args,
        env_defaults: vec![
            ("CLAUDE_CODE_MAX_RETRIES".into(), DEFAULT_MAX_RETRIES.into()),
            // No telemetry, error reports or self-update from a throwaway
            // VM: through the gateway they would leave for Anthropic's hosts
            // with the placeholder key, and they are no part of the job.
            // The manifest's env may still set it to 0.
            (
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
                "1".into(),
            ),
        ],
        label: match &a.claude_model {
            Some(model) => format!("claude ({model})"),
            None => "claude".into(),
        },
    }
}

/// `inv` continuing Claude Code session `session` (`--resume`, before the
/// `--` that ends the options): a follow-up turn of a persistent job, whose
/// session files are in the job user's home in the kept workspace.
pub fn resuming(mut inv: Invocation, session: &str) -> Invocation {
    let at = inv
        .args
        .iter()
        .rposition(|a| a == "--")
        .unwrap_or(inv.args.len());
    inv.args
        .splice(at..at, ["--resume".to_string(), session.to_string()]);
    inv
}

/// Checks, before spawning, that the agent's environment has credentials.
pub fn check_credentials(env: &BTreeMap<String, String>) -> Result<(), String> {
    if CREDENTIAL_VARS
        .iter()
        .any(|k| env.get(*k).is_some_and(|v| !v.trim().is_empty()))
    {
        return Ok(());
    }
    Err(format!(
        "claude needs credentials: set {} or {} in the manifest's env (and list it in secrets)",
        CREDENTIAL_VARS[0], CREDENTIAL_VARS[1]
    ))
}

/// Claude Code exits at once when asked to skip permissions as root outside
/// a declared sandbox; say why before spawning instead of after.
pub fn root_refusal(
    args: &[String],
    env: &BTreeMap<String, String>,
    agent_is_root: bool,
) -> Option<String> {
    let skips = args.iter().any(|a| a == "--dangerously-skip-permissions");
    let sandbox = env.get("IS_SANDBOX").is_some_and(|v| v == "1");
    (agent_is_root && skips && !sandbox).then(|| {
        "claude refuses --dangerously-skip-permissions as root: let the runner drop privileges \
         (the default when it runs as root), set agent.permissionMode, or set IS_SANDBOX=1 in env"
            .to_string()
    })
}

/// Claude Code's result subtype when a run stopped at `--max-budget-usd`.
pub const BUDGET_SUBTYPE: &str = "error_max_budget_usd";

/// When the run ended on its budget: the sentence saying so, with the cost
/// so far (the workspace and the patch are kept like after any failure).
pub fn budget_stop(r: &AgentResult) -> Option<String> {
    let by_subtype = r.subtype.as_deref() == Some(BUDGET_SUBTYPE);
    let by_reason = r
        .terminal_reason
        .as_deref()
        .is_some_and(|t| t.contains("budget"));
    (by_subtype || by_reason).then(|| match r.total_cost_usd {
        Some(cost) => {
            format!("claude stopped at its budget (agent.maxBudgetUsd) after spending ${cost:.4}")
        }
        None => "claude stopped at its budget (agent.maxBudgetUsd)".to_string(),
    })
}

/// Why a Claude run did not succeed, or `None` when it did. Decided by the
/// result event's `is_error` and `terminal_reason`, then the exit code.
pub fn judge(result: Option<&AgentResult>, exit_code: Option<i32>) -> Option<(ErrorKind, String)> {
    let Some(r) = result else {
        let how = match exit_code {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".into(),
        };
        return Some((
            ErrorKind::NoResult,
            format!("claude ended without a result event ({how}); see the stderr tail"),
        ));
    };
    let reason = r.terminal_reason.as_deref();
    if let Some(stop) = budget_stop(r) {
        return Some((ErrorKind::Budget, stop));
    }
    if r.is_error {
        let detail = r
            .errors
            .as_ref()
            .and_then(first_error)
            .or_else(|| r.result.clone())
            .unwrap_or_default();
        return Some((
            ErrorKind::Agent,
            format!(
                "claude reported an error (subtype {}, terminal_reason {}): {}",
                r.subtype.as_deref().unwrap_or("none"),
                reason.unwrap_or("none"),
                detail
            ),
        ));
    }
    if let Some(reason) = reason.filter(|r| *r != "completed") {
        return Some((
            ErrorKind::Agent,
            format!("claude stopped early: terminal_reason {reason}"),
        ));
    }
    match exit_code {
        Some(0) => None,
        Some(c) => Some((
            ErrorKind::Exit,
            format!("claude exited with code {c} after a successful result"),
        )),
        None => Some((ErrorKind::Exit, "claude was killed by a signal".into())),
    }
}

fn first_error(errors: &serde_json::Value) -> Option<String> {
    let list = errors.as_array()?;
    let parts: Vec<String> = list
        .iter()
        .map(|e| match e {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(agent: serde_json::Value, task: &str) -> JobManifest {
        JobManifest::from_value(
            serde_json::json!({"task": task, "agentType": "claude", "agent": agent}),
        )
        .unwrap()
    }

    #[test]
    fn minimal_argv() {
        let inv = invocation(&manifest(serde_json::json!({}), "fix the bug"));
        let resumed = resuming(inv.clone(), "s-1");
        assert_eq!(
            resumed.args[resumed.args.len() - 4..],
            ["--resume", "s-1", "--", "fix the bug"]
        );
        assert_eq!(inv.program, "claude");
        assert_eq!(
            inv.args,
            vec![
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--dangerously-skip-permissions",
                "--",
                "fix the bug"
            ]
        );
        assert_eq!(
            inv.env_defaults,
            vec![
                ("CLAUDE_CODE_MAX_RETRIES".to_string(), "2".to_string()),
                (
                    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_string(),
                    "1".to_string()
                )
            ]
        );
    }

    #[test]
    fn full_argv_keeps_the_task_last_and_whole() {
        let inv = invocation(&manifest(
            serde_json::json!({
                "command": "/opt/claude/bin/claude",
                "claudeModel": "sonnet", "maxTurns": 5, "permissionMode": "acceptEdits",
                "appendSystemPrompt": "be brief", "allowedTools": ["Bash(git log:*)", "Read"],
                "disallowedTools": ["WebFetch"]
            }),
            "--help; $(rm -rf /)",
        ));
        assert_eq!(inv.program, "/opt/claude/bin/claude");
        assert_eq!(
            inv.args,
            vec![
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--model",
                "sonnet",
                "--max-turns",
                "5",
                "--permission-mode",
                "acceptEdits",
                "--append-system-prompt",
                "be brief",
                "--allowedTools",
                "Bash(git log:*)",
                "Read",
                "--disallowedTools",
                "WebFetch",
                "--",
                "--help; $(rm -rf /)"
            ]
        );
        assert_eq!(inv.label, "claude (sonnet)");
    }

    #[test]
    fn credentials_are_required() {
        let mut env = BTreeMap::new();
        let err = check_credentials(&env).unwrap_err();
        assert!(err.contains("ANTHROPIC_API_KEY") && err.contains("CLAUDE_CODE_OAUTH_TOKEN"));
        env.insert("ANTHROPIC_API_KEY".into(), " ".into());
        assert!(check_credentials(&env).is_err());
        env.insert("CLAUDE_CODE_OAUTH_TOKEN".into(), "tok".into());
        assert!(check_credentials(&env).is_ok());
    }

    #[test]
    fn root_refusal_only_when_skipping_as_root_outside_a_sandbox() {
        let skip = vec!["--dangerously-skip-permissions".to_string()];
        let mut env = BTreeMap::new();
        assert!(root_refusal(&skip, &env, true).is_some());
        assert!(root_refusal(&skip, &env, false).is_none());
        assert!(root_refusal(&[], &env, true).is_none());
        env.insert("IS_SANDBOX".into(), "1".into());
        assert!(root_refusal(&skip, &env, true).is_none());
    }

    fn result(json: serde_json::Value) -> AgentResult {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn judged_by_is_error_and_terminal_reason_not_subtype() {
        let ok = result(
            serde_json::json!({"is_error": false, "subtype": "success", "terminal_reason": "completed"}),
        );
        assert_eq!(judge(Some(&ok), Some(0)), None);
        let older = result(serde_json::json!({"is_error": false, "subtype": "success"}));
        assert_eq!(judge(Some(&older), Some(0)), None);

        let bad_key = result(serde_json::json!({
            "is_error": true, "subtype": "success", "result": "Invalid API key · Please run /login"
        }));
        let (kind, msg) = judge(Some(&bad_key), Some(1)).unwrap();
        assert_eq!(kind, ErrorKind::Agent);
        assert!(msg.contains("Invalid API key"), "{msg}");

        let turns = result(serde_json::json!({
            "is_error": true, "subtype": "error_max_turns", "terminal_reason": "max_turns",
            "errors": ["Reached maximum number of turns (3)"]
        }));
        let (_, msg) = judge(Some(&turns), Some(1)).unwrap();
        assert!(
            msg.contains("max_turns") && msg.contains("Reached maximum"),
            "{msg}"
        );

        let aborted = result(
            serde_json::json!({"is_error": false, "subtype": "success", "terminal_reason": "aborted_streaming"}),
        );
        assert_eq!(judge(Some(&aborted), Some(0)).unwrap().0, ErrorKind::Agent);
        assert_eq!(judge(Some(&ok), Some(3)).unwrap().0, ErrorKind::Exit);
    }

    #[test]
    fn no_result_is_its_own_failure() {
        let (kind, msg) = judge(None, Some(0)).unwrap();
        assert_eq!(kind, ErrorKind::NoResult);
        assert!(msg.contains("without a result event"));
    }
}
