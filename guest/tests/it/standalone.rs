//! `delegate-guest run` on a laptop: the agent is found on the caller's
//! `PATH`, and a `claude` job borrows the caller's credentials as secrets.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::support::runner::{Job, fake_claude, tempdir};

const KEY: &str = "sk-ant-api03-caller-KEY-9876543210";

/// A directory holding `claude` (the fake), as an npm prefix's `bin` would.
fn npm_bin() -> tempfile::TempDir {
    let dir = tempdir();
    let claude = dir.path().join("claude");
    std::fs::copy(fake_claude(), &claude).unwrap();
    std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn claude_from_the_callers_path_with_the_callers_key() {
    let bin = npm_bin();
    let bin_dir = bin.path().display().to_string();
    let manifest = json!({"task": "look around", "agentType": "claude", "statusMode": "streaming"});
    let job = Job::new(&manifest)
        .env("PATH", &format!("{bin_dir}:/usr/bin:/bin"))
        .env("ANTHROPIC_API_KEY", KEY);
    let f = job.run();
    f.expect_code(0);
    assert_eq!(f.result()["status"], "success");

    let phases: Vec<String> = f
        .of_type("phase")
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        phases.iter().any(|m| m
            .contains("took ANTHROPIC_API_KEY from the caller's environment (treated as secrets)")),
        "{phases:?}"
    );
    assert!(
        phases.iter().any(|m| m.contains(&format!(
            "claude found on the caller's PATH; {bin_dir} added to the job's PATH"
        ))),
        "{phases:?}"
    );
    assert!(
        f.stderr.contains("took ANTHROPIC_API_KEY"),
        "the person running it is told: {}",
        f.stderr
    );

    // The fake echoes the key through its tool: it reached the agent, and it
    // is redacted everywhere the run writes.
    let log = std::fs::read_to_string(job.logs().join("stdout.log")).unwrap();
    assert!(log.contains("key=***"), "{log}");
    assert!(!log.contains(KEY));
    let everything: String = f.lines.iter().map(|l| l.to_string()).collect();
    assert!(!everything.contains(KEY), "key leaked into stdout");
    assert!(!f.stderr.contains(KEY), "key leaked into stderr");
}

#[test]
fn the_manifest_key_wins_and_nothing_is_borrowed() {
    let bin = npm_bin();
    let manifest = json!({
        "task": "look around", "agentType": "claude",
        "agent": {"command": bin.path().join("claude").display().to_string()},
        "env": {"ANTHROPIC_API_KEY": "bad-key"}, "secrets": ["ANTHROPIC_API_KEY"],
    });
    let f = Job::new(&manifest).env("ANTHROPIC_API_KEY", KEY).run();
    // The fake fails with the manifest's bad key, as the real CLI would: the
    // caller's good key was not used.
    f.expect_code(1);
    assert_eq!(f.result()["agent_result"]["is_error"], true);
    assert!(!f.stderr.contains("took "), "{}", f.stderr);
}

#[test]
fn a_missing_agent_names_both_paths_searched() {
    let manifest = json!({"task": "t", "agentType": "custom",
        "agent": {"command": "no-such-agent-anywhere"}});
    let f = Job::new(&manifest)
        .env("PATH", "/nonexistent-caller-dir")
        .run();
    let r = f.result();
    assert_eq!(r["status"], "failed");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("no-such-agent-anywhere"), "{error}");
    assert!(
        error.contains("/usr/bin")
            && error.contains("then the caller's PATH=/nonexistent-caller-dir"),
        "{error}"
    );
}

#[test]
fn script_jobs_borrow_no_credentials() {
    let manifest =
        json!({"task": "echo \"key=${ANTHROPIC_API_KEY:-unset}\"", "agentType": "script"});
    let job = Job::new(&manifest).env("ANTHROPIC_API_KEY", KEY);
    let f = job.run();
    f.expect_code(0);
    let log = std::fs::read_to_string(job.logs().join("stdout.log")).unwrap();
    assert_eq!(log, "key=unset\n");
}
