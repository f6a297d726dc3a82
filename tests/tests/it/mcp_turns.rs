//! Follow-up turns through MCP over stdio and the command line, with the
//! real `delegate-host serve` and the local sandbox: a persistent script
//! job's VM is listed as kept, `continue_job` runs a second turn that sees
//! the first turn's files, `release_job` ends the VM, and what cannot be
//! continued is refused with the reason (exit code 7 on the command line).

use std::time::Duration;

use delegate_tests::mcp::{HostEnv, Revision, connect_stdio};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);

fn script(task: &str, persistent: bool) -> Value {
    json!({
        "task": task,
        "agentType": "script",
        "statusMode": "streaming",
        "lifecycle": if persistent { "persistent" } else { "ephemeral" },
        "timeout": 120,
    })
}

#[tokio::test]
async fn a_persistent_job_is_continued_listed_and_released() {
    let env = HostEnv::new();
    let client = connect_stdio(&env, Revision::Current).await;

    let first = client
        .submit(script("echo one > note.txt; echo first turn", true))
        .await;
    let done = client.wait_final(&first, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    let status = client.ok("get_job_status", json!({"job_id": first})).await;
    assert_eq!(status["session"]["vm_kept"], true, "{status}");
    assert_eq!(status["session"]["turn"], 1);
    assert!(status["session"]["kept_until"].is_string(), "{status}");
    let listed = client.ok("list_jobs", json!({})).await;
    let line = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == first.as_str())
        .unwrap()
        .clone();
    assert_eq!(line["session"]["vm_kept"], true, "{line}");

    let turn = client
        .ok(
            "continue_job",
            json!({"job_id": first, "task": "cat note.txt; echo two >> note.txt; cat note.txt"}),
        )
        .await;
    assert_eq!(turn["turn"], 2, "{turn}");
    assert_eq!(turn["session_id"], first.as_str());
    let turn_id = turn["job_id"].as_str().unwrap().to_string();
    assert_ne!(turn_id, first);
    let done = client.wait_final(&turn_id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    assert_eq!(done["session"]["turn"], 2, "{done}");
    let log = client
        .ok(
            "get_job_logs",
            json!({"job_id": turn_id, "stream": "stdout"}),
        )
        .await;
    // The second turn read the file the first one wrote.
    assert_eq!(log["data"], "one\none\ntwo\n", "{log}");

    let ephemeral = client.submit(script("echo once", false)).await;
    client.wait_final(&ephemeral, LIMIT).await;
    let e = client
        .tool_error(
            "continue_job",
            json!({"job_id": ephemeral, "task": "echo again"}),
        )
        .await;
    assert!(e.contains("is not persistent"), "{e}");
    let out = env
        .command(&["continue", &ephemeral, "echo again"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not persistent"),
        "{out:?}"
    );

    let released = client.ok("release_job", json!({"job_id": turn_id})).await;
    assert_eq!(released["session_id"], first.as_str(), "{released}");
    assert_eq!(released["released"], true);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let s = client.ok("get_job_status", json!({"job_id": first})).await;
        if s["vm"]["destroyed"] == true {
            assert_eq!(s["session"]["vm_kept"], false, "{s}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "VM not destroyed: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = client
        .tool_error(
            "continue_job",
            json!({"job_id": first, "task": "echo late"}),
        )
        .await;
    assert!(e.contains("cannot be continued"), "{e}");
    client.close().await;
}
