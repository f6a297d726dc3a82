//! Ending jobs early through MCP: cancel while provisioning, cancel while
//! running, and the job timeout. Each time the job's processes must be gone
//! afterwards and `get_job_result` must answer for the final state.
//!
//! Processes are found by a marker in their command line (`exec -a`), so
//! the check sees every process of the job on this machine, whatever pid
//! namespace it runs in.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use delegate_tests::bins::bins;
use delegate_tests::mcp::{
    HostEnv, Revision, connect_stdio, eventually, marker, pids_with, sleeper_manifest, write_file,
};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn cancel_while_running_kills_the_process_tree() {
    let env = HostEnv::new();
    let client = connect_stdio(&env, Revision::Current).await;
    let mark = marker("run");
    let id = client.submit(sleeper_manifest(&mark, 300)).await;
    client.wait_state(&id, "running", LIMIT).await;
    eventually("the job's sleep is running", LIMIT, || {
        !pids_with(&mark).is_empty()
    })
    .await;

    let v = client.ok("cancel_job", json!({"job_id": id})).await;
    assert_eq!(v["cancelled"], true, "{v}");
    assert_eq!(v["status"], "cancelled");
    eventually("the job's processes are gone", LIMIT, || {
        pids_with(&mark).is_empty()
    })
    .await;

    let status = client.ok("get_job_status", json!({"job_id": id})).await;
    assert_eq!(status["status"], "cancelled");
    let result = client.ok("get_job_result", json!({"job_id": id})).await;
    assert_eq!(result["status"], "cancelled");
    // A second cancel changes nothing and says so.
    let again = client.ok("cancel_job", json!({"job_id": id})).await;
    assert_eq!(again["cancelled"], false);
    assert_eq!(again["status"], "cancelled");
    assert!(
        again["message"].as_str().unwrap().contains("already"),
        "{again}"
    );
    // The VM (here: the sandbox) is destroyed.
    let mut destroyed = false;
    for _ in 0..300 {
        let s = client.ok("get_job_status", json!({"job_id": id})).await;
        if s["vm"]["destroyed"] == true {
            destroyed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        destroyed,
        "the job's VM was not marked destroyed\n{}",
        env.log()
    );
    client.close().await;
}

#[tokio::test]
async fn cancel_while_provisioning() {
    // A guest that takes its time to boot: the job stays provisioning
    // (the guest has not fetched its manifest) until cancelled.
    let mut env = HostEnv::new();
    let mark = marker("boot");
    let wrapper = write_file(
        env.dir.path(),
        "slow-guest",
        &format!(
            "#!/bin/bash\n(exec -a {mark} sleep 600)\nexec {} \"$@\"\n",
            bins().guest.display()
        ),
    );
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.set("DELEGATE_GUEST_BIN", wrapper.display().to_string());
    let client = connect_stdio(&env, Revision::Legacy).await;
    let id = client
        .submit(json!({"task": "echo never", "agentType": "script", "timeout": 300}))
        .await;
    client.wait_state(&id, "provisioning", LIMIT).await;
    eventually("the slow guest is booting", LIMIT, || {
        !pids_with(&mark).is_empty()
    })
    .await;

    let v = client.ok("cancel_job", json!({"job_id": id})).await;
    assert_eq!(v["cancelled"], true, "{v}");
    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    eventually("the booting guest is gone", LIMIT, || {
        pids_with(&mark).is_empty()
    })
    .await;
    let result = client.ok("get_job_result", json!({"job_id": id})).await;
    assert_eq!(result["status"], "cancelled");
    assert!(
        result["output"].is_null(),
        "the guest never reported: {result}"
    );
    client.close().await;
}

#[tokio::test]
async fn timeout_ends_the_job_and_its_processes() {
    let env = HostEnv::new();
    let client = connect_stdio(&env, Revision::Current).await;
    let mark = marker("timeout");
    let id = client.submit(sleeper_manifest(&mark, 3)).await;
    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "timeout", "{done}\n{}", env.log());
    assert!(
        done["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{done}"
    );
    eventually("the timed-out job's processes are gone", LIMIT, || {
        pids_with(&mark).is_empty()
    })
    .await;
    let result = client.ok("get_job_result", json!({"job_id": id})).await;
    assert_eq!(result["status"], "timeout");
    assert_eq!(result["error_kind"], "timeout", "{result}");
    client.close().await;
}
