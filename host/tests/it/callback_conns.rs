//! The callback listener's connection rules over real sockets on
//! 127.0.0.1, none of which needs a token: a client sending its head one
//! byte a second is cut after the header timeout; idle connections, new or
//! kept alive after a request, are closed after the idle timeout; and with
//! a low connection cap, many idle sockets neither stay held nor keep a
//! real job (local sandbox, real guest) from running to its end.

use std::sync::Arc;
use std::time::Duration;

use delegate_host::config::Settings;
use delegate_host::net::conn::ConnSettings;
use delegate_proto::JobState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::fake::FakeProvider;
use crate::support::harness::{Host, settings};
use crate::support::local::{local_host, quiet_script};
use crate::support::sockets::{CLOSE_WITHIN, NEVER, closed_by_server, send_slowly, silent};

fn conn_settings(s: &mut Settings, f: impl FnOnce(&mut ConnSettings)) {
    f(&mut s.callback_conn);
}

async fn fake_host(dir: &std::path::Path, f: impl FnOnce(&mut ConnSettings)) -> Host {
    let s = settings(dir, |s| conn_settings(s, f));
    Host::start(s, Arc::new(FakeProvider::new())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_one_byte_a_second_is_cut_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let host = fake_host(dir.path(), |c| {
        c.header_timeout = Duration::from_secs(2);
        c.idle_timeout = NEVER;
    })
    .await;
    let head = format!(
        "GET /v1/jobs/j-slow/manifest HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(64)
    );
    let mut s = TcpStream::connect(("127.0.0.1", host.port()))
        .await
        .unwrap();
    let (sent, cut) = send_slowly(&mut s, head.as_bytes()).await;
    assert!(
        cut,
        "the slow client kept its connection ({sent} bytes sent)"
    );
    assert!(sent < head.len(), "the head was never complete");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_new_or_kept_alive_are_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let host = fake_host(dir.path(), |c| {
        c.idle_timeout = Duration::from_secs(2);
        c.header_timeout = NEVER;
    })
    .await;
    let mut silent = silent(host.port(), 20).await;
    // One request answered on a kept-alive connection, then silence.
    let mut kept = TcpStream::connect(("127.0.0.1", host.port()))
        .await
        .unwrap();
    kept.write_all(
        b"GET /v1/jobs/j-none/manifest HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Delegate-Protocol: 1\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = kept.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 4"), "{head}");
    assert!(!head.contains("connection: close"), "kept alive: {head}");
    assert!(
        closed_by_server(&mut kept, CLOSE_WITHIN).await,
        "the kept-alive connection stayed open"
    );
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, CLOSE_WITHIN).await,
            "idle connection {i} stayed open"
        );
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_low_cap_idle_sockets_are_shed_and_a_real_job_still_completes() {
    const CAP: usize = 8;
    const IDLE: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let host = local_host(dir.path(), |s| {
        conn_settings(s, |c| c.max_connections = CAP);
    })
    .await;
    let mut idle = silent(host.port(), IDLE).await;
    // All but the cap are closed by the server: at once or for a newer one.
    let mut closed = 0;
    for s in idle.iter_mut() {
        if closed_by_server(s, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(closed >= IDLE - CAP, "only {closed} of {IDLE} closed");
    // New idle sockets fill the cap again just before the job starts.
    let fresh = silent(host.port(), CAP).await;
    let m = host.manager().clone();
    let rec = m
        .submit(quiet_script("echo done > /workspace/out.txt"))
        .await
        .unwrap();
    let done = m
        .wait(&rec.id, Duration::from_secs(90), |_| {})
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Success, "{done:?}");
    drop(fresh);
    host.stop().await;
}
