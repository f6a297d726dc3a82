//! Killing the server in the middle of a job and starting it again, as a
//! client sees it over stdio: the job goes on and finishes, its log is
//! complete, and a reader resumes from the cursor it had before the crash.

use std::time::Duration;

use delegate_tests::mcp::{HostEnv, Revision, connect_stdio, eventually, free_port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_killed_server_restarts_and_the_job_finishes() {
    // Guests keep calling the callback URL they were given, so the restarted
    // server listens where the first one did.
    let mut env = HostEnv::new();
    env.set("CALLBACK_PORT", free_port().to_string());
    let first = connect_stdio(&env, Revision::Legacy).await;
    let id = first
        .submit(json!({
            "task": "for i in $(seq 1 12); do echo step $i; sleep 0.5; done",
            "agentType": "script",
            "statusMode": "streaming",
            "timeout": 300
        }))
        .await;
    first.wait_state(&id, "running", LIMIT).await;
    // Read what is there so far, then lose the server the hard way.
    let mut text = String::new();
    let mut cursor = 0u64;
    for _ in 0..100 {
        let v = first
            .ok(
                "get_job_logs",
                json!({"job_id": id, "stream": "stdout", "cursor": cursor}),
            )
            .await;
        text.push_str(v["data"].as_str().unwrap());
        cursor = v["next_cursor"].as_u64().unwrap();
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(text.starts_with("step 1\n"), "{text}");
    first.kill_server(LIMIT).await;

    // A new server on the same data directory carries on with the job.
    let second = connect_stdio(&env, Revision::Current).await;
    let done = second.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    text.push_str(&second.log_from(&id, "stdout", cursor).await);
    let expected: String = (1..=12).map(|i| format!("step {i}\n")).collect();
    assert_eq!(text, expected);
    second.close().await;
}

#[tokio::test]
async fn a_silent_guest_loses_its_lease() {
    let mut env = HostEnv::new();
    env.set("HEARTBEAT_THRESHOLD_SECONDS", "3");
    let client = connect_stdio(&env, Revision::Current).await;
    let mark = delegate_tests::mcp::marker("lease");
    let id = client
        .submit(delegate_tests::mcp::sleeper_manifest(&mark, 300))
        .await;
    client.wait_state(&id, "running", LIMIT).await;
    // Freeze the guest (found by its sandbox under this data directory) and
    // the job's processes: nothing reports any more.
    let frozen: Vec<u32> = delegate_tests::mcp::sandbox_pids(&env.data_dir())
        .into_iter()
        .chain(delegate_tests::mcp::pids_with(&mark))
        .collect();
    assert!(!frozen.is_empty(), "no guest process found");
    for pid in &frozen {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGSTOP);
    }
    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error_kind"], "lost", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("heartbeat"),
        "{done}"
    );
    // The VM is destroyed: the frozen processes are gone.
    eventually("the lost job's processes are gone", LIMIT, || {
        delegate_tests::mcp::pids_with(&mark).is_empty()
    })
    .await;
    for pid in &frozen {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGCONT);
    }
    client.close().await;
}

#[tokio::test]
async fn a_second_stdio_server_shares_the_data_dir_and_takes_the_engine_over() {
    // Each MCP client session starts its own `serve`: the first (here an
    // HTTP server) runs the engine, a stdio one beside it serves through
    // the store, and runs the engine itself once the first is gone.
    let mut env = HostEnv::new();
    let first = delegate_tests::mcp::HttpHost::start(&mut env).await;
    let second = connect_stdio(&env, Revision::Current).await;
    let quick = json!({"task": "echo shared", "agentType": "script"});
    let id = second.submit(quick.clone()).await;
    let done = second.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());

    first.stop().await;
    let id = second.submit(quick).await;
    let done = second.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    assert!(
        env.log().contains("running the engine here now"),
        "{}",
        env.log()
    );
    second.close().await;
}
