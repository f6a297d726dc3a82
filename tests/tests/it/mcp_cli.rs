//! The command line for people, run as a person would: the README's first
//! command (`submit examples/hello.json --wait` on a fresh data directory),
//! queueing without a server, status/list/cancel/result from the store, a
//! second server refused on the same data directory, the commands beside a
//! running server, and settings printed with secrets masked.

use std::path::PathBuf;

use delegate_tests::mcp::{HostEnv, HttpHost, TEST_TOKEN, write_file};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn readme_first_command_runs_the_hello_example_end_to_end() {
    let mut env = HostEnv::new();
    // The README runs it with the default callback port; keep the test off
    // a port another run might hold, the derived URL follows the bind.
    env.set("RUST_LOG", "warn");
    let hello = example("hello.json");
    let out = env
        .output(&["submit", hello.to_str().unwrap(), "--wait"])
        .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("success, exit code 0"), "{stdout}");
    assert!(stdout.contains("hello from"), "{stdout}");
    assert!(stdout.contains("out/hello.txt"), "{stdout}");
    assert!(stderr.contains("submitted"), "{stderr}");

    // The job is in the store for the read-only commands.
    let id = stderr
        .split_whitespace()
        .skip_while(|w| *w != "job")
        .nth(1)
        .expect("job id in the submit message")
        .to_string();
    let status = env.output(&["status", &id]).await;
    assert_eq!(status.status.code(), Some(0));
    assert!(
        text(&status.stdout).contains("success"),
        "{}",
        text(&status.stdout)
    );
    assert!(text(&status.stdout).contains("not a VM"));
    // The one-shot engine destroyed the job's sandbox before it stopped.
    let status = env.output(&["status", &id, "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status --json");
    assert_eq!(v["vm"]["destroyed"], true, "{v}");
    let logs = env.output(&["logs", &id, "--stream", "stdout"]).await;
    assert!(
        text(&logs.stdout).starts_with("hello from"),
        "{}",
        text(&logs.stdout)
    );
    let json = env.output(&["result", &id, "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("result --json");
    assert_eq!(v["status"], "success");
    assert_eq!(v["artifacts"][0]["path"], "out/hello.txt");
}

#[tokio::test]
async fn without_a_server_jobs_queue_and_can_be_cancelled() {
    let env = HostEnv::new();
    let manifest = write_file(
        env.dir.path(),
        "m.json",
        r#"{"task": "echo queued", "agentType": "script"}"#,
    );
    let out = env.output(&["submit", manifest.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 36, "the id alone on stdout: {id:?}");
    assert!(
        text(&out.stderr).contains("delegate-host serve"),
        "{}",
        text(&out.stderr)
    );

    let status = env.output(&["status", &id, "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["status"], "pending");
    let list = env.output(&["list", "--status", "pending"]).await;
    assert!(text(&list.stdout).contains(&id), "{}", text(&list.stdout));
    let early = env.output(&["result", &id]).await;
    assert_eq!(
        early.status.code(),
        Some(6),
        "not finished: {}",
        text(&early.stderr)
    );

    let cancel = env.output(&["cancel", &id]).await;
    assert_eq!(cancel.status.code(), Some(0));
    assert!(
        text(&cancel.stdout).contains("cancelled"),
        "{}",
        text(&cancel.stdout)
    );
    let result = env.output(&["result", &id]).await;
    assert_eq!(result.status.code(), Some(130), "{}", text(&result.stdout));

    let bad = env.output(&["list", "--status", "done"]).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("unknown job status"),
        "{}",
        text(&bad.stderr)
    );
    let missing = env
        .output(&["status", "00000000-0000-4000-8000-000000000000"])
        .await;
    assert_eq!(missing.status.code(), Some(4));
    let invalid = write_file(
        env.dir.path(),
        "bad.json",
        r#"{"task": "x", "agentType": "robot"}"#,
    );
    let refused = env.output(&["submit", invalid.to_str().unwrap()]).await;
    assert_eq!(refused.status.code(), Some(5));
    assert!(
        text(&refused.stderr).contains("agentType"),
        "{}",
        text(&refused.stderr)
    );
}

#[tokio::test]
async fn beside_a_running_server() {
    let mut env = HostEnv::new();
    let server = HttpHost::start(&mut env).await;

    // A second HTTP server on the same data directory is refused, naming
    // the process in the way (a stdio server shares it instead).
    let second = env.output(&["serve", "--http", "127.0.0.1:0"]).await;
    assert_eq!(second.status.code(), Some(3), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("pid"),
        "{}",
        text(&second.stderr)
    );

    // Submitting goes to the server's engine; --wait waits for it there.
    let manifest = write_file(
        env.dir.path(),
        "m.json",
        r#"{"task": "for i in 1 2 3; do echo n$i; sleep 0.3; done", "agentType": "script", "statusMode": "streaming"}"#,
    );
    let out = env.output(&["submit", manifest.to_str().unwrap()]).await;
    let id = text(&out.stdout).trim().to_string();
    assert!(
        !text(&out.stderr).contains("no server"),
        "{}",
        text(&out.stderr)
    );
    let follow = env.output(&["logs", &id, "--follow"]).await;
    assert_eq!(text(&follow.stdout), "n1\nn2\nn3\n");
    let waited = env
        .output(&["submit", manifest.to_str().unwrap(), "--wait", "--json"])
        .await;
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited.stderr));
    server.stop().await;
}

#[tokio::test]
async fn config_masks_the_http_token() {
    let mut env = HostEnv::new();
    env.set("DELEGATE_HTTP_TOKEN", TEST_TOKEN);
    let out = env.output(&["config"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains("DELEGATE_PROVIDER=local"), "{stdout}");
    assert!(stdout.contains("DELEGATE_HTTP_TOKEN="), "{stdout}");
    assert!(!stdout.contains(TEST_TOKEN), "the token leaked: {stdout}");
    let doctor = env.output(&["doctor"]).await;
    assert_eq!(doctor.status.code(), Some(0), "{}", text(&doctor.stdout));
    assert!(
        text(&doctor.stdout).contains("not a VM"),
        "{}",
        text(&doctor.stdout)
    );
    assert!(
        text(&doctor.stdout).contains("[ok] egress: no gateway"),
        "{}",
        text(&doctor.stdout)
    );
    // With a gateway, doctor says what keeps the sandbox's jobs behind it.
    env.set("DELEGATE_EGRESS_LISTEN", "127.0.0.1:0");
    let doctor = text(&env.output(&["doctor"]).await.stdout);
    assert!(
        doctor.contains("[ok] egress: enforced: a sandbox has only its own loopback"),
        "{doctor}"
    );
    env.set("DELEGATE_WAIT_MAX_SECONDS", "forever");
    let bad = env.output(&["config"]).await;
    assert_eq!(bad.status.code(), Some(2));
}
