//! A job's whole life through MCP over stdio, in both revisions: submit,
//! wait with progress notifications, status, result with artifacts read as
//! resources, logs by cursor, listing with filter and paging, a result
//! asked too early.

use std::time::Duration;

use base64::Engine as _;
use delegate_tests::mcp::{Client, HostEnv, Revision, connect_stdio, hello_manifest};
use rmcp::model::{ReadResourceRequestParams, ResourceContents};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const LIMIT: Duration = Duration::from_secs(120);

async fn read_text(client: &Client, uri: &str) -> String {
    let r = client
        .service
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .unwrap_or_else(|e| panic!("resources/read {uri}: {e}"));
    match &r.contents[0] {
        ResourceContents::TextResourceContents { text, .. } => text.clone(),
        ResourceContents::BlobResourceContents { blob, .. } => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(blob)
                .unwrap(),
        )
        .unwrap(),
        other => panic!("unexpected contents {other:?}"),
    }
}

/// Reads a log through get_job_logs `max` bytes at a time.
async fn read_log_in_pieces(client: &Client, id: &str, stream: &str, max: u32) -> String {
    let mut cursor = 0u64;
    let mut out = String::new();
    for _ in 0..10_000 {
        let v = client
            .ok(
                "get_job_logs",
                json!({"job_id": id, "stream": stream, "cursor": cursor, "max_bytes": max}),
            )
            .await;
        assert_eq!(v["cursor"], cursor);
        assert_eq!(v["encoding"], "utf-8", "{v}");
        out.push_str(v["data"].as_str().unwrap());
        let next = v["next_cursor"].as_u64().unwrap();
        assert!(next >= cursor);
        if v["complete"] == true {
            return out;
        }
        assert!(next > cursor, "a final job's log must advance: {v}");
        cursor = next;
    }
    panic!("log never completed");
}

async fn whole_life(revision: Revision) {
    let env = HostEnv::new();
    let client = connect_stdio(&env, revision).await;

    let submitted = client
        .ok("submit_job", json!({"manifest": hello_manifest(30)}))
        .await;
    let id = submitted["job_id"].as_str().unwrap().to_string();
    assert!(
        ["pending", "provisioning", "running"].contains(&submitted["status"].as_str().unwrap()),
        "{submitted}"
    );

    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    assert_eq!(done["wait_timed_out"], false);
    let progress = client.recorder.progress();
    assert!(
        progress
            .iter()
            .any(|p| p.message.as_deref().is_some_and(|m| m.contains(&id))),
        "no progress notification named the job: {progress:?}"
    );

    let status = client.ok("get_job_status", json!({"job_id": id})).await;
    assert_eq!(status["finished"], true);
    assert_eq!(status["isolation"]["kind"], "process_sandbox");
    assert!(
        status["isolation"]["description"]
            .as_str()
            .unwrap()
            .contains("not a VM"),
        "{status}"
    );
    assert_eq!(status["vm"]["provider"], "local");
    assert!(status["completed_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        status["recent_output"]["stdout"]
            .as_str()
            .unwrap()
            .ends_with("line 30"),
        "{status}"
    );

    let result = client.ok("get_job_result", json!({"job_id": id})).await;
    assert_eq!(result["status"], "success");
    assert_eq!(result["exit_code"], 0);
    let stdout = result["output"]["stdout"]["text"].as_str().unwrap();
    assert!(
        stdout.starts_with("line 1\n") && stdout.contains("line 30\n"),
        "{stdout}"
    );
    assert_eq!(result["output"]["stdout"]["truncated"], false);
    assert_eq!(result["output"]["stderr"]["text"], "to-stderr\n");
    assert!(result["duration_seconds"].as_f64().unwrap() >= 0.0);
    let artifacts = result["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 1, "{result}");
    let a = &artifacts[0];
    assert_eq!(a["path"], "out/result.txt");
    assert_eq!(a["size"], 14);
    let expected_sha = format!("{:x}", Sha256::digest(b"artifact-body\n"));
    assert_eq!(a["sha256"], expected_sha);
    assert_eq!(a["mime_type"], "text/plain");
    let uri = a["uri"].as_str().unwrap();
    assert_eq!(read_text(&client, uri).await, "artifact-body\n");

    // Logs: whole, in small pieces, and by stream.
    let combined = read_text(&client, &format!("delegate://jobs/{id}/log")).await;
    assert!(
        combined.contains("line 17\n") && combined.contains("to-stderr"),
        "{combined}"
    );
    let pieces = read_log_in_pieces(&client, &id, "combined", 7).await;
    assert_eq!(pieces, combined);
    let stdout_log = read_log_in_pieces(&client, &id, "stdout", 1000).await;
    let expected: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    assert_eq!(stdout_log, expected);
    assert_eq!(
        read_log_in_pieces(&client, &id, "stderr", 3).await,
        "to-stderr\n"
    );

    // The resource list names the log and the artifact.
    let resources = client
        .service
        .list_all_resources()
        .await
        .expect("resources/list");
    let uris: Vec<_> = resources.iter().map(|r| r.uri.as_str()).collect();
    assert!(uris.contains(&uri), "{uris:?}");

    client.close().await;
}

#[tokio::test]
async fn whole_life_current_revision() {
    whole_life(Revision::Current).await;
}

#[tokio::test]
async fn whole_life_legacy_revision() {
    whole_life(Revision::Legacy).await;
}

#[tokio::test]
async fn wait_reports_progress_and_a_live_result_is_not_finished() {
    let env = HostEnv::new();
    let client = connect_stdio(&env, Revision::Current).await;
    let id = client
        .submit(json!({
            "task": "echo begin; sleep 4; echo end",
            "agentType": "script",
            "statusMode": "streaming",
            "timeout": 120
        }))
        .await;
    let early = client
        .tool_error("get_job_result", json!({"job_id": id}))
        .await;
    assert!(early.contains("not finished"), "{early}");
    assert!(
        ["pending", "provisioning", "running"]
            .iter()
            .any(|s| early.contains(s)),
        "{early}"
    );
    // A short wait ends before the job and says so.
    let short = client
        .ok("wait_for_job", json!({"job_id": id, "timeout_seconds": 1}))
        .await;
    if short["finished"] == false {
        assert_eq!(short["wait_timed_out"], true);
        assert!(short["waited_seconds"].as_f64().unwrap() >= 0.9, "{short}");
    }
    let before = client.recorder.progress().len();
    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    let progress = client.recorder.progress();
    assert!(
        progress.len() >= before + 2,
        "expected progress while waiting: {progress:?}"
    );
    // Progress only grows within one request's token.
    let token = &progress.last().unwrap().progress_token;
    let values: Vec<f64> = progress
        .iter()
        .filter(|p| &p.progress_token == token)
        .map(|p| p.progress)
        .collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    assert!(
        progress
            .last()
            .unwrap()
            .message
            .as_deref()
            .unwrap()
            .contains("success"),
        "{progress:?}"
    );
    client.close().await;
}

#[tokio::test]
async fn list_filters_and_pages_newest_first() {
    let env = HostEnv::new();
    let client = connect_stdio(&env, Revision::Legacy).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            client
                .submit(json!({"task": format!("echo job {i}"), "agentType": "script"}))
                .await,
        );
    }
    let failing = client
        .submit(json!({"task": "echo failing >&2; exit 3", "agentType": "script"}))
        .await;
    for id in ids.iter().chain([&failing]) {
        client.wait_final(id, LIMIT).await;
    }
    let failed = client
        .ok("get_job_result", json!({"job_id": failing}))
        .await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["exit_code"], 3);

    // Pages of two, newest first, covering all six exactly once.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut args = json!({"limit": 2});
        if !cursor.is_null() {
            args["cursor"] = cursor.clone();
        }
        let page = client.ok("list_jobs", args).await;
        let jobs = page["jobs"].as_array().unwrap();
        assert!(jobs.len() <= 2);
        seen.extend(
            jobs.iter()
                .map(|j| j["job_id"].as_str().unwrap().to_string()),
        );
        cursor = page["next_cursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    let mut expected: Vec<String> = ids.iter().cloned().chain([failing.clone()]).collect();
    expected.reverse();
    assert_eq!(seen, expected);

    let only_failed = client.ok("list_jobs", json!({"status": "failed"})).await;
    let failed_ids: Vec<_> = only_failed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].clone())
        .collect();
    assert_eq!(failed_ids, vec![json!(failing)]);
    let successes = client
        .ok("list_jobs", json!({"status": "success", "limit": 100}))
        .await;
    assert_eq!(successes["jobs"].as_array().unwrap().len(), 5);
    let e = client
        .tool_error("list_jobs", json!({"cursor": "not-a-cursor"}))
        .await;
    assert!(e.contains("cursor"), "{e}");
    client.close().await;
}

#[tokio::test]
async fn secrets_stay_out_of_answers_and_artifacts_are_served_by_type() {
    let mut env = HostEnv::new();
    env.set("DELEGATE_MAX_RESOURCE_BYTES", "2K");
    let client = connect_stdio(&env, Revision::Current).await;
    let secret = "s3cr3t-zz-value-91";
    let id = client
        .submit(json!({
            "task": "echo \"token is $TOKEN_X\"\necho \"token is $TOKEN_X\" >&2\nmkdir -p out\nprintf '\\x89PNG\\r\\n\\x1a\\n\\x00\\x01' > out/pixel.png\nhead -c 4096 /dev/zero | tr '\\0' a > out/big.txt\necho small > out/small.txt",
            "agentType": "script",
            "statusMode": "streaming",
            "env": {"TOKEN_X": secret},
            "secrets": ["TOKEN_X"],
            "artifacts": ["out/*"]
        }))
        .await;
    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    let answers = [
        done,
        client.ok("get_job_status", json!({"job_id": id})).await,
        client.ok("get_job_result", json!({"job_id": id})).await,
        client.ok("list_jobs", json!({})).await,
        client.ok("get_job_logs", json!({"job_id": id})).await,
    ];
    for a in &answers {
        assert!(!a.to_string().contains(secret), "the secret leaked: {a}");
    }
    let stdout = answers[2]["output"]["stdout"]["text"].as_str().unwrap();
    assert!(stdout.contains("token is ***"), "{stdout}");

    let read = |path: &str| {
        client
            .service
            .read_resource(ReadResourceRequestParams::new(format!(
                "delegate://jobs/{id}/artifacts/{path}"
            )))
    };
    match &read("out/pixel.png").await.expect("read png").contents[0] {
        ResourceContents::BlobResourceContents {
            blob, mime_type, ..
        } => {
            assert_eq!(mime_type.as_deref(), Some("image/png"));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(blob)
                .unwrap();
            assert_eq!(bytes, b"\x89PNG\r\n\x1a\n\x00\x01");
        }
        other => panic!("a PNG must be a blob: {other:?}"),
    }
    assert_eq!(
        read_text(
            &client,
            &format!("delegate://jobs/{id}/artifacts/out/small.txt")
        )
        .await,
        "small\n"
    );
    let too_big = read("out/big.txt")
        .await
        .expect_err("over DELEGATE_MAX_RESOURCE_BYTES");
    assert!(too_big.to_string().contains("limit"), "{too_big}");
    let missing = read("out/none.txt").await.expect_err("no such artifact");
    assert!(missing.to_string().contains("none.txt"), "{missing}");
    client.close().await;
}
