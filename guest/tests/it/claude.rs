//! The `claude` agent against the fake `claude` (tests/fixtures/fake-claude),
//! which checks its argv like Claude Code 2.x and prints its stream-json.

use serde_json::{Value, json};

use crate::support::runner::{Job, fake_claude, is_root, recorded_argv, tempdir};

const KEY: &str = "sk-ant-api03-test-KEY-0123456789";

fn claude(task: &str, agent: Value, env: Value) -> Value {
    let mut agent = agent;
    agent["command"] = json!(fake_claude().display().to_string());
    json!({
        "task": task, "agentType": "claude", "agent": agent, "env": env,
        "secrets": env.as_object().unwrap().keys().filter(|k| k.contains("KEY") || k.contains("TOKEN")).collect::<Vec<_>>(),
        "statusMode": "streaming", "artifacts": ["*.txt"],
    })
}

/// A directory the fake (running as the unprivileged job user) can write.
fn writable_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

fn key_env() -> Value {
    json!({"ANTHROPIC_API_KEY": KEY})
}

#[test]
fn success_parses_the_result_and_reports_progress() {
    let f = Job::new(&claude("look around", json!({"maxTurns": 4}), key_env())).run();
    f.expect_code(0);
    let r = f.result();
    assert_eq!(r["status"], "success");
    let a = &r["agent_result"];
    assert_eq!(a["is_error"], false);
    assert_eq!(a["subtype"], "success");
    assert_eq!(a["terminal_reason"], "completed");
    assert_eq!(a["num_turns"], 2);
    assert_eq!(a["total_cost_usd"], 0.0291);
    assert_eq!(a["session_id"], "4b2e1c9a-7d3f-4e8b-9a61-0c5d2f8e7b13");
    assert_eq!(a["result"], "Done: the workspace has been checked.");
    assert_eq!(a["usage"]["output_tokens"], 187);
    assert!(a["model_usage"].get("claude-sonnet-4-5-20250929").is_some());
    assert_eq!(a["permission_denials"], json!([]));
    let progress: Vec<&str> = f
        .of_type("progress")
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        progress.iter().any(|m| m.starts_with("claude started")),
        "{progress:?}"
    );
    assert!(
        progress.iter().any(|m| m.contains("tool: Bash")),
        "{progress:?}"
    );
    assert!(
        progress.iter().any(|m| m.starts_with("claude finished")),
        "{progress:?}"
    );
    // The tool really ran in the workspace, and its file is an artifact.
    assert_eq!(r["artifacts"][0]["path"], "claude-was-here.txt");
}

#[test]
fn the_api_key_never_appears_anywhere() {
    let job = Job::new(&claude("look around", json!({}), key_env()));
    let f = job.run();
    f.expect_code(0);
    let everything: String = f
        .lines
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!everything.contains(KEY), "key leaked into stdout");
    assert!(!f.stderr.contains(KEY), "key leaked into stderr");
    let log = std::fs::read_to_string(job.logs().join("stdout.log")).unwrap();
    assert!(!log.contains(KEY));
    // The fake echoes the key through its tool: it is there, redacted.
    assert!(log.contains("key=***"), "{log}");
    let streamed = String::from_utf8(f.log_bytes("stdout")).unwrap();
    assert_eq!(streamed, log, "the streamed log and the log file differ");
}

#[test]
fn max_turns_fails() {
    let f = Job::new(&claude(
        "work",
        json!({"maxTurns": 1}),
        json!({"ANTHROPIC_API_KEY": KEY, "FAKE_CLAUDE_SCENARIO": "max_turns"}),
    ))
    .run();
    f.expect_code(1);
    let r = f.result();
    assert_eq!(r["error_kind"], "agent");
    assert_eq!(r["agent_result"]["subtype"], "error_max_turns");
    assert_eq!(r["agent_result"]["terminal_reason"], "max_turns");
    assert_eq!(
        r["agent_result"]["errors"],
        json!(["Reached maximum number of turns (1)"])
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("Reached maximum number of turns")
    );
}

#[test]
fn a_bad_key_fails_although_subtype_says_success() {
    let f = Job::new(&claude(
        "work",
        json!({}),
        json!({"ANTHROPIC_API_KEY": "bad-key"}),
    ))
    .run();
    f.expect_code(1);
    let r = f.result();
    assert_eq!(r["agent_result"]["subtype"], "success");
    assert_eq!(r["agent_result"]["is_error"], true);
    assert_eq!(r["error_kind"], "agent");
    assert!(
        r["error"].as_str().unwrap().contains("Invalid API key"),
        "{r}"
    );
}

#[test]
fn no_result_event_fails_and_says_so() {
    let f = Job::new(&claude("work scenario:no_result", json!({}), key_env())).run();
    f.expect_code(1);
    let r = f.result();
    assert_eq!(r["error_kind"], "no_result");
    assert_eq!(r["exit_code"], 0);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("without a result event")
    );
    assert_eq!(r["agent_result"], Value::Null);
}

#[test]
fn missing_credentials_fail_before_spawning() {
    let dir = writable_dir();
    let record = dir.path().join("argv");
    let f = Job::new(&claude(
        "work",
        json!({}),
        json!({"FAKE_CLAUDE_RECORD": record.display().to_string()}),
    ))
    .run();
    f.expect_code(1);
    let r = f.result();
    assert_eq!(r["error_kind"], "credentials");
    let e = r["error"].as_str().unwrap();
    assert!(
        e.contains("ANTHROPIC_API_KEY") && e.contains("CLAUDE_CODE_OAUTH_TOKEN"),
        "{e}"
    );
    assert!(!record.exists(), "claude was spawned without credentials");
    // An OAuth token is enough.
    let f = Job::new(&claude(
        "work",
        json!({}),
        json!({"CLAUDE_CODE_OAUTH_TOKEN": "oauth-token-1"}),
    ))
    .run();
    f.expect_code(0);
}

#[test]
fn a_missing_claude_binary_fails_and_says_so() {
    let m = json!({
        "task": "work", "agentType": "claude", "env": {"ANTHROPIC_API_KEY": KEY, "PATH": "/nonexistent"},
    });
    let f = Job::new(&m).run();
    f.expect_code(1);
    let r = f.result();
    assert_eq!(r["error_kind"], "spawn");
    let e = r["error"].as_str().unwrap();
    assert!(
        e.contains("\"claude\" was not found") && e.contains("Claude Code"),
        "{e}"
    );
}

#[test]
fn claude_is_found_on_path_and_gets_the_documented_argv() {
    let bin = tempdir();
    std::os::unix::fs::symlink(fake_claude(), bin.path().join("claude")).unwrap();
    let dir = writable_dir();
    let record = dir.path().join("argv");
    let task = "--help; $(touch /tmp/pwned) 'quoted' \"double\"";
    let m = json!({
        "task": task, "agentType": "claude",
        "agent": {"claudeModel": "sonnet", "maxTurns": 7, "allowedTools": ["Bash(git log:*)", "Read"], "disallowedTools": ["WebFetch"], "appendSystemPrompt": "be brief"},
        "env": {"ANTHROPIC_API_KEY": KEY, "PATH": format!("{}:/usr/bin:/bin", bin.path().display()), "FAKE_CLAUDE_RECORD": record.display().to_string()},
        "secrets": ["ANTHROPIC_API_KEY"],
    });
    let f = Job::new(&m).run();
    f.expect_code(0);
    let argv = recorded_argv(&record);
    assert_eq!(
        argv,
        [
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            "sonnet",
            "--max-turns",
            "7",
            "--dangerously-skip-permissions",
            "--append-system-prompt",
            "be brief",
            "--allowedTools",
            "Bash(git log:*)",
            "Read",
            "--disallowedTools",
            "WebFetch",
            "--",
            task
        ]
    );
    let facts = std::fs::read_to_string(record.with_extension("env")).unwrap();
    assert!(facts.contains("CLAUDE_CODE_MAX_RETRIES=2"), "{facts}");
    if is_root() {
        assert!(!facts.contains("uid=0"), "claude ran as root: {facts}");
    }
}

#[test]
fn the_manifest_can_set_its_own_retries_and_permission_mode() {
    let dir = writable_dir();
    let record = dir.path().join("argv");
    let f = Job::new(&claude(
        "work",
        json!({"permissionMode": "acceptEdits"}),
        json!({"ANTHROPIC_API_KEY": KEY, "CLAUDE_CODE_MAX_RETRIES": "5", "FAKE_CLAUDE_RECORD": record.display().to_string()}),
    ))
    .run();
    f.expect_code(0);
    let facts = std::fs::read_to_string(record.with_extension("env")).unwrap();
    assert!(facts.contains("CLAUDE_CODE_MAX_RETRIES=5"), "{facts}");
    let argv = String::from_utf8(std::fs::read(&record).unwrap()).unwrap();
    assert!(argv.contains("--permission-mode\0acceptEdits\0"));
    assert!(!argv.contains("--dangerously-skip-permissions"));
}

#[test]
fn skipping_permissions_as_root_is_refused_unless_in_a_sandbox() {
    if !is_root() {
        eprintln!("NOTE: not root; the root refusal is not tested");
        return;
    }
    let f = Job::new(&claude("work", json!({}), key_env()))
        .arg("--no-drop-privileges")
        .run();
    f.expect_code(1);
    let e = f.result()["error"].as_str().unwrap().to_string();
    assert!(e.contains("as root") && e.contains("IS_SANDBOX"), "{e}");
    let f = Job::new(&claude(
        "work",
        json!({}),
        json!({"ANTHROPIC_API_KEY": KEY, "IS_SANDBOX": "1"}),
    ))
    .arg("--no-drop-privileges")
    .run();
    f.expect_code(0);
}

#[test]
fn the_fake_refuses_what_the_real_cli_refuses() {
    let cwd = tempdir();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new(fake_claude())
            .current_dir(cwd.path())
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let out = run(&["-p", "--output-format", "stream-json", "--", "x"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires --verbose"));
    if is_root() {
        let out = run(
            &[
                "-p",
                "--output-format",
                "stream-json",
                "--verbose",
                "--dangerously-skip-permissions",
                "x",
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("root"));
    }
    let out = run(
        &[
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--",
            "x",
        ],
        &[("ANTHROPIC_API_KEY", "k")],
    );
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.first().unwrap()["subtype"], "init");
    assert_eq!(lines.last().unwrap()["type"], "result");
}

#[test]
fn cancel_and_timeout_stop_a_hanging_claude() {
    let m = json!({
        "task": "scenario:hang", "agentType": "claude", "timeout": 2,
        "agent": {"command": fake_claude().display().to_string()},
        "env": {"ANTHROPIC_API_KEY": KEY},
    });
    let f = Job::new(&m).arg("--grace-seconds").arg("1").run();
    f.expect_code(124);
    assert_eq!(f.result()["status"], "timeout");
}
