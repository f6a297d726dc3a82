//! Spend caps and text input files, against the fake `claude`
//! (tests/fixtures/fake-claude): `agent.maxBudgetUsd` reaches Claude Code
//! as `--max-budget-usd`, and a run that stops on its budget is reported as
//! such, with what it spent.

use serde_json::json;

use crate::support::runner::{Job, fake_claude, recorded_argv, tempdir};

/// A directory the fake (running as the unprivileged job user) can write.
fn writable_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

#[test]
fn the_budget_reaches_claude_and_a_budget_stop_is_reported_with_its_cost() {
    let dir = writable_dir();
    let record = dir.path().join("argv");
    let m = json!({
        "task": "fix everything scenario:budget",
        "agentType": "claude",
        "agent": {"command": fake_claude().display().to_string(), "maxBudgetUsd": 0.25},
        "env": {"ANTHROPIC_API_KEY": "sk-ant-test", "FAKE_CLAUDE_RECORD": record.display().to_string()},
        "secrets": ["ANTHROPIC_API_KEY"],
        "files": [{"path": "notes/NOTES.md", "text": "plain text, no base64\n", "mode": "0600"}],
        "artifacts": ["notes/*"],
    });
    let f = Job::new(&m).run();
    f.expect_code(1);
    let argv = recorded_argv(&record);
    let at = argv
        .iter()
        .position(|a| a == "--max-budget-usd")
        .unwrap_or_else(|| panic!("no --max-budget-usd in {argv:?}"));
    assert_eq!(argv[at + 1], "0.25");
    let r = f.result();
    assert_eq!(r["status"], "failed");
    assert_eq!(r["error_kind"], "budget");
    let error = r["error"].as_str().unwrap();
    assert!(
        error.contains("budget") && error.contains("$0.2512"),
        "{error}"
    );
    assert_eq!(r["agent_result"]["subtype"], "error_max_budget_usd");
    assert_eq!(r["agent_result"]["total_cost_usd"], 0.2512);
    // The text file was written as it is, and artifacts are still collected.
    assert_eq!(r["artifacts"][0]["path"], "notes/NOTES.md");
    assert_eq!(r["artifacts"][0]["size"], 22);
}

#[test]
fn a_budget_on_a_script_job_is_refused_naming_the_field() {
    let m = json!({
        "task": "true", "agentType": "script", "agent": {"maxBudgetUsd": 1},
    });
    let f = Job::new(&m).run();
    f.expect_code(2);
    let e = f.result()["error"].as_str().unwrap().to_string();
    assert!(e.contains("agent.maxBudgetUsd"), "{e}");
}
