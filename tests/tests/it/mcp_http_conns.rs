//! `serve --http`'s connection rules, with the real server and real MCP
//! clients on 127.0.0.1 (`DELEGATE_HTTP_IDLE_TIMEOUT_SECONDS=2`): a head
//! sent one byte a second is cut (after the fixed 10 s), idle sockets are
//! closed, and with a small cap many of them neither stay held
//! nor stop a client's calls; a tool call whose SSE answer is quiet for
//! longer than the idle timeout, and a session's standing SSE stream, are
//! not cut by it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use delegate_tests::mcp::{HostEnv, HttpHost, Revision, hello_manifest};
use delegate_tests::sockets::{CLOSE_WITHIN, closed_by_server, send_slowly};
use serde_json::json;
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(90);
/// The idle timeout the tests set, and a wait well past it.
const IDLE_SECONDS: &str = "2";
const PAST_IDLE: Duration = Duration::from_secs(6);
/// The revision with sessions and a standing GET stream.
const LEGACY: &str = "2025-06-18";

async fn start(env: &mut HostEnv) -> HttpHost {
    env.set("DELEGATE_HTTP_IDLE_TIMEOUT_SECONDS", IDLE_SECONDS);
    HttpHost::start(env).await
}

async fn silent(server: &HttpHost, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(TcpStream::connect(server.authority()).await.unwrap());
    }
    out
}

#[tokio::test]
async fn idle_sockets_are_closed_and_under_a_small_cap_do_not_stop_a_client() {
    const CAP: usize = 8;
    const IDLE: usize = 50;
    let mut env = HostEnv::new();
    env.set("DELEGATE_HTTP_MAX_CONNECTIONS", CAP.to_string());
    let server = start(&mut env).await;
    let mut idle = silent(&server, IDLE).await;
    // All but the cap are closed at once, for newer ones; the rest after
    // the idle timeout.
    let mut closed = 0;
    for s in idle.iter_mut() {
        if closed_by_server(s, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(closed >= IDLE - CAP, "only {closed} of {IDLE} closed");
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, CLOSE_WITHIN).await,
            "idle connection {i} stayed open"
        );
    }
    // The cap full of idle sockets again: a client still gets its calls
    // answered, a job's life long.
    let _fresh = silent(&server, CAP).await;
    let client = server.connect(Revision::Current).await;
    let id = client.submit(hello_manifest(3)).await;
    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_head_sent_one_byte_a_second_is_cut() {
    let mut env = HostEnv::new();
    let server = start(&mut env).await;
    // Longer than the header timeout takes at a byte a second.
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {}\r\nx-padding: {}\r\n\r\n",
        server.authority(),
        "a".repeat(32)
    );
    let mut s = TcpStream::connect(server.authority()).await.unwrap();
    let (sent, cut) = send_slowly(&mut s, head.as_bytes()).await;
    assert!(
        cut,
        "the slow client kept its connection ({sent} bytes sent)"
    );
    assert!(sent < head.len(), "the head was never complete");
    server.stop().await;
}

/// What a standing SSE stream has delivered so far.
#[derive(Default)]
struct Seen {
    bytes: usize,
    ended: Option<String>,
}

/// Opens a legacy session by hand and its standing GET stream, read on a
/// task of its own into the returned record.
async fn standing_stream(server: &HttpHost) -> Arc<Mutex<Seen>> {
    let http = reqwest::Client::new();
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": LEGACY,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}
        }
    });
    let r = http
        .post(&server.url)
        .bearer_auth(&server.token)
        .header("accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let session = r
        .headers()
        .get("mcp-session-id")
        .expect("a session id")
        .to_str()
        .unwrap()
        .to_string();
    drop(r.bytes().await);
    let r = http
        .post(&server.url)
        .bearer_auth(&server.token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", LEGACY)
        .json(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let mut stream = http
        .get(&server.url)
        .bearer_auth(&server.token)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", LEGACY)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = seen.clone();
    tokio::spawn(async move {
        let ended = loop {
            match stream.chunk().await {
                Ok(Some(b)) => record.lock().unwrap().bytes += b.len(),
                Ok(None) => break "ended".to_string(),
                Err(e) => break format!("failed: {e}"),
            }
        };
        record.lock().unwrap().ended = Some(ended);
    });
    seen
}

#[tokio::test]
async fn a_quiet_sse_answer_and_a_standing_stream_outlive_the_idle_timeout() {
    let mut env = HostEnv::new();
    let server = start(&mut env).await;
    let seen = standing_stream(&server).await;
    for revision in [Revision::Legacy, Revision::Current] {
        let client = server.connect(revision).await;
        let id = client
            .submit(json!({"task": "sleep 60", "agentType": "script", "timeout": 120}))
            .await;
        // Nothing changes while it waits: its answer stream stays quiet
        // (progress repeats every 5 s at most) for longer than the idle
        // timeout, and must still arrive.
        let v = client
            .ok(
                "wait_for_job",
                json!({"job_id": id, "timeout_seconds": PAST_IDLE.as_secs()}),
            )
            .await;
        assert_eq!(v["status"], "running", "{v}\n{}", env.log());
        client.ok("cancel_job", json!({"job_id": id})).await;
        client.close().await;
    }
    // The standing stream, quiet all along, is still open, and still
    // carries what the server sends (its keep-alive).
    let before = {
        let s = seen.lock().unwrap();
        assert_eq!(s.ended, None, "the standing stream was cut");
        s.bytes
    };
    let deadline = tokio::time::Instant::now() + CLOSE_WITHIN;
    loop {
        {
            let s = seen.lock().unwrap();
            assert_eq!(s.ended, None, "the standing stream was cut");
            if s.bytes > before {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing more on the standing stream"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}
