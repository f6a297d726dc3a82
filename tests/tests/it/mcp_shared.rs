//! A stdio session beside a server that owns the engine (a second Claude
//! Code conversation while `serve --http` runs as a daemon): it serves its
//! client through the shared store and still sends progress and
//! `notifications/resources/updated`, read from the store.

use std::time::Duration;

use delegate_tests::mcp::{HostEnv, HttpHost, Revision, connect_stdio, eventually};
use rmcp::model::SubscribeRequestParams;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test]
#[allow(deprecated)] // resources/subscribe is the legacy revisions' API, tested on purpose
async fn a_session_without_the_engine_gets_progress_and_resource_updates() {
    let mut env = HostEnv::new();
    let server = HttpHost::start(&mut env).await;
    let client = connect_stdio(&env, Revision::Legacy).await;
    eventually("the stdio session to find the engine taken", LIMIT, || {
        env.log()
            .contains("serving this client through the shared store")
    })
    .await;
    // The default statusMode: the log reaches the host all the same.
    let id = client
        .submit(json!({
            "task": "sleep 1; for i in $(seq 1 6); do echo tick $i; sleep 0.5; done",
            "agentType": "script",
            "timeout": 120
        }))
        .await;
    let uri = format!("delegate://jobs/{id}/log");
    client
        .service
        .subscribe(SubscribeRequestParams::new(uri.clone()))
        .await
        .expect("resources/subscribe");
    client.recorder.wait_updated(&uri, LIMIT).await;

    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    let progress = client.recorder.progress();
    assert!(
        progress.iter().any(|p| p
            .message
            .as_deref()
            .is_some_and(|m| m.contains(&id) && m.contains("running"))),
        "no progress named the running job: {progress:?}"
    );
    client.close().await;
    server.stop().await;
}
