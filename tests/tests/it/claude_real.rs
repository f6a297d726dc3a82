//! The real Claude Code CLI as a `claude` job on the local provider: the
//! real `delegate-host serve` (over MCP on stdio) with an egress gateway
//! and the host's Anthropic key, a repository job, and a mock Messages API
//! on loopback as the gateway's Anthropic upstream. The mock has Claude
//! Code write a file; the patch shows it, the mock saw the host's key
//! (which only the gateway adds: the sandbox has no network and the job
//! only a placeholder), the gateway logged the API connection, and the key
//! is in no MCP answer and no file of the data directory (store, logs).
//!
//! The CLI comes from `DELEGATE_TEST_CLAUDE_BIN`, which `scripts/test`
//! sets after installing `@anthropic-ai/claude-code` under
//! `target/claude-code`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use delegate_tests::git::new_repo;
use delegate_tests::mcp::{HostEnv, Revision, assert_not_in_files, connect_stdio, text_of};
use delegate_tests::messages_api::{self, MessagesApi};
use serde_json::{Value, json};

/// The host's Anthropic key: only the gateway may send it.
const KEY: &str = "sk-ant-api03-host-only-5e1f0c9d2b7a";
// Alone it takes seconds; beside the whole suite on two cores, minutes.
const LIMIT: Duration = Duration::from_secs(300);

/// The Claude Code executable, resolved through symlinks (npm's `.bin`
/// link points into the package, which is what the sandbox must see).
fn claude_bin() -> PathBuf {
    let Some(path) = std::env::var_os("DELEGATE_TEST_CLAUDE_BIN") else {
        panic!(
            "DELEGATE_TEST_CLAUDE_BIN is not set: this test runs the real Claude Code CLI. \
             scripts/test installs it; by hand: \
             npm install --prefix target/claude-code @anthropic-ai/claude-code && \
             export DELEGATE_TEST_CLAUDE_BIN=$PWD/target/claude-code/node_modules/.bin/claude"
        );
    };
    std::fs::canonicalize(&path).unwrap_or_else(|e| {
        panic!(
            "DELEGATE_TEST_CLAUDE_BIN={}: {e}",
            Path::new(&path).display()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_code_edits_a_repository_through_the_gateway_with_the_host_key() {
    let started = Instant::now();
    let claude = claude_bin();
    let api = MessagesApi::start().await;

    let roots = tempfile::tempdir().unwrap();
    let repo = roots.path().join("project");
    new_repo(&repo, &[("README.md", "# project\n")], "base");

    let mut env = HostEnv::new();
    env.set("DELEGATE_REPO_ROOTS", roots.path().display().to_string());
    env.set("DELEGATE_EGRESS_LISTEN", "127.0.0.1:0");
    // The mock stands in for api.anthropic.com on loopback, and the host's
    // ceiling keeps everything else in: what the CLI tries beside the API
    // (the `@anthropic` preset's api.anthropic.com:443 directly) is refused
    // before any lookup, on a machine with DNS too.
    env.set("DELEGATE_EGRESS_ALLOW_PRIVATE", "127.0.0.0/8");
    env.set("DELEGATE_EGRESS_ALLOW", format!("127.0.0.1:{}", api.port));
    env.set(
        "DELEGATE_ANTHROPIC_UPSTREAM",
        format!("http://127.0.0.1:{}", api.port),
    );
    env.set("DELEGATE_SECRET_ANTHROPIC", KEY);
    // The CLI lives under target/, which sandboxes do not otherwise see.
    let install = claude.parent().expect("the CLI's directory");
    env.set(
        "DELEGATE_LOCAL_READONLY_DIRS",
        install.display().to_string(),
    );
    let client = connect_stdio(&env, Revision::Current).await;

    let id = client
        .submit(json!({
            "task": format!("Create {} saying hello.", messages_api::FILE),
            "agentType": "claude",
            "agent": {"command": claude.display().to_string(), "maxTurns": 4},
            "repo": {"path": repo.display().to_string()},
            // Only the API. The CLI's telemetry, error reports and update
            // checks are off: nothing a job in a throwaway sandbox needs.
            "network": {"allow": ["@anthropic"]},
            "env": {
                "DISABLE_AUTOUPDATER": "1",
                "DISABLE_TELEMETRY": "1",
                "DISABLE_ERROR_REPORTING": "1",
            },
            "timeout": 240,
        }))
        .await;
    let done = client.wait_final(&id, LIMIT).await;
    let requests = api.requests();
    let summary: Vec<String> = requests
        .iter()
        .map(|r| format!("{} -> {}", r.uri, r.answer))
        .collect();
    let logs = text_of(&client.call("get_job_logs", json!({"job_id": id})).await);
    assert_eq!(
        done["status"],
        "success",
        "{done}\nrequests: {summary:?}\njob log:\n{logs}\nhost log:\n{}",
        env.log()
    );

    // Claude Code asked, got the tool call, ran it and ended the turn.
    for kind in ["tool_use", "final"] {
        assert!(
            requests.iter().any(|r| r.answer == kind),
            "no {kind} answer: {summary:?}"
        );
    }
    // Every request reached the mock with the host's key, none with the
    // job's placeholder or a bearer token.
    for r in &requests {
        assert_eq!(r.api_key.as_deref(), Some(KEY), "{} {summary:?}", r.uri);
        assert_eq!(r.authorization, None, "{}", r.uri);
    }

    let result = client.ok("get_job_result", json!({"job_id": id})).await;
    let agent = &result["agent_result"];
    assert_eq!(agent["result"], messages_api::FINAL_TEXT, "{result}");
    let patch = &result["patch"];
    let files: Vec<&str> = patch["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no patch files: {result}"))
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(files, [messages_api::FILE], "{result}");
    let text = patch["text"].as_str().expect("a small patch is inline");
    let added = format!("+{}", messages_api::CONTENT.trim_end());
    assert!(text.contains(&added), "{text}");

    let status = client.ok("get_job_status", json!({"job_id": id})).await;
    assert!(status["egress"]["allowed"].as_u64() >= Some(1), "{status}");
    let mut answers = vec![
        done.to_string(),
        logs,
        result.to_string(),
        status.to_string(),
    ];
    answers.push(text_of(&client.call("list_jobs", json!({})).await));
    for a in &answers {
        assert!(!a.contains(KEY), "the key reached an MCP answer: {a}");
    }
    client.close().await;

    // The gateway's connection log: the API calls, to the mock, allowed.
    let out = env
        .command(&["egress", &id, "--json"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for r in records.iter().filter(|r| r["allowed"] == true) {
        assert_eq!(r["port"], api.port, "only the mock is reached: {records:?}");
    }
    assert!(
        records.iter().any(|r| r["via"] == "anthropic"
            && r["port"] == api.port
            && r["allowed"] == true
            && r["received"].as_u64() > Some(0)),
        "{records:?}"
    );

    assert_not_in_files(&env.data_dir(), KEY);
    assert!(!env.log().contains(KEY), "the key is in the host's log");
    eprintln!(
        "real Claude Code job in {:?}, API requests: {summary:?}",
        started.elapsed()
    );
}
