//! MCP over streamable HTTP: the gate (bearer token 401, Host and Origin
//! 403), a job's life in both revisions, logs resumed by cursor from a new
//! connection, and resource updates in both revisions.

use std::time::{Duration, Instant};

use delegate_tests::mcp::{HostEnv, HttpHost, Revision, hello_manifest, ticking_manifest};
use reqwest::StatusCode;
use rmcp::model::{
    ReadResourceRequestParams, ResourceContents, ServerNotification, SubscribeRequestParams,
    SubscriptionFilter,
};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(90);

fn initialize_body() -> serde_json::Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}
        }
    })
}

async fn post(
    url: &str,
    host: Option<&str>,
    origin: Option<&str>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&initialize_body());
    if let Some(h) = host {
        req = req.header("host", h);
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("HTTP request")
}

#[tokio::test]
async fn the_gate_wants_a_token_and_a_local_host_and_origin() {
    let mut env = HostEnv::new();
    let server = HttpHost::start(&mut env).await;
    let url = server.url.as_str();
    let token = Some(server.token.as_str());
    let same_origin = format!("http://{}", server.authority());

    let r = post(url, None, None, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("www-authenticate").is_some());
    let r = post(url, None, None, Some("test-token-0123456789abcdeX")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = post(url, None, Some("http://evil.example.com"), token).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post(url, Some("evil.example.com"), None, token).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Host and Origin are judged before the token.
    let r = post(url, Some("evil.example.com:80"), None, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = post(url, None, Some(&same_origin), token).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The session this opened can be closed; the answer is 204.
    let session = r
        .headers()
        .get("mcp-session-id")
        .expect("a legacy session id")
        .to_str()
        .unwrap()
        .to_string();
    let closed = reqwest::Client::new()
        .delete(url)
        .bearer_auth(&server.token)
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(closed.status(), StatusCode::NO_CONTENT);
    let r = post(
        url,
        Some(&format!(
            "localhost:{}",
            server.authority().rsplit(':').next().unwrap()
        )),
        None,
        token,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await;
}

async fn life_over_http(revision: Revision) {
    let mut env = HostEnv::new();
    let server = HttpHost::start(&mut env).await;
    let client = server.connect(revision).await;
    assert_eq!(
        client.service.peer_info().unwrap().protocol_version,
        revision.version()
    );
    let id = client.submit(hello_manifest(5)).await;
    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    assert!(
        !client.recorder.progress().is_empty(),
        "no progress over HTTP"
    );
    let result = client.ok("get_job_result", json!({"job_id": id})).await;
    let uri = result["artifacts"][0]["uri"].as_str().unwrap().to_string();
    let read = client
        .service
        .read_resource(ReadResourceRequestParams::new(uri))
        .await
        .expect("resources/read");
    let ResourceContents::TextResourceContents { text, .. } = &read.contents[0] else {
        panic!("{read:?}");
    };
    assert_eq!(text, "artifact-body\n");
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn job_life_over_http_current_revision() {
    life_over_http(Revision::Current).await;
}

#[tokio::test]
async fn job_life_over_http_legacy_revision() {
    life_over_http(Revision::Legacy).await;
}

#[tokio::test]
async fn logs_resume_from_a_cursor_after_reconnecting() {
    let mut env = HostEnv::new();
    let server = HttpHost::start(&mut env).await;
    let first = server.connect(Revision::Legacy).await;
    let id = first.submit(hello_manifest(200)).await;
    first.wait_final(&id, LIMIT).await;
    let part = first
        .ok(
            "get_job_logs",
            json!({"job_id": id, "stream": "stdout", "max_bytes": 100}),
        )
        .await;
    let mut text = part["data"].as_str().unwrap().to_string();
    let cursor = part["next_cursor"].as_u64().unwrap();
    assert_eq!(cursor, 100);
    first.close().await;

    // Another connection, in the other revision, carries on from the cursor.
    let second = server.connect(Revision::Current).await;
    text.push_str(&second.log_from(&id, "stdout", cursor).await);
    let expected: String = (1..=200).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, expected);
    second.close().await;
    server.stop().await;
}

#[tokio::test]
#[allow(deprecated)] // resources/subscribe is the legacy revisions' API, tested on purpose
async fn resource_updates_over_http_in_both_revisions() {
    let mut env = HostEnv::new();
    let server = HttpHost::start(&mut env).await;

    // Legacy: a session, resources/subscribe, updates on the session's stream.
    let legacy = server.connect(Revision::Legacy).await;
    let id = legacy.submit(ticking_manifest()).await;
    let uri = format!("delegate://jobs/{id}/log");
    legacy
        .service
        .subscribe(SubscribeRequestParams::new(uri.clone()))
        .await
        .expect("resources/subscribe");
    legacy.recorder.wait_updated(&uri, LIMIT).await;

    // Current: subscriptions/listen on its own stream.
    let current = server.connect(Revision::Current).await;
    let mut sub = current
        .service
        .listen(
            SubscriptionFilter::builder()
                .resource_subscription(uri.clone())
                .build(),
        )
        .await
        .expect("subscriptions/listen");
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, sub.next())
            .await
            .expect("an update within the limit")
            .expect("subscription stream")
            .expect("subscription open");
        if let ServerNotification::ResourceUpdatedNotification(n) = n
            && n.params.uri == uri
        {
            break;
        }
    }
    sub.cancel().await.expect("cancel subscription");
    current.ok("cancel_job", json!({"job_id": id})).await;
    legacy.close().await;
    current.close().await;
    server.stop().await;
}
