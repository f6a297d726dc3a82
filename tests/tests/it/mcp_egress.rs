//! The egress gateway end to end: the real `delegate-host serve` with a
//! gateway and a host-held secret, a real local-sandbox job that uses curl
//! through the proxy variables the guest set, a loopback server standing
//! in for the outside. The allowed request arrives, the other is refused
//! and both are logged in the status; a connection that skips the proxy
//! reaches nothing, nor does a job without a policy; the secret named in
//! `secretEnv` reaches the job but never an MCP answer or the store. A
//! credential the gateway injects over TLS it terminates reaches the
//! HTTPS host, and never the sandbox, its processes or the store.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use delegate_tests::mcp::{HostEnv, Revision, assert_not_in_files, connect_stdio, text_of};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "ghp_only_on_the_host_8d7c6b";
const LIMIT: Duration = Duration::from_secs(120);

/// A loopback origin answering `200 hello` to each connection; returns its port.
fn origin() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reaches_what_it_may_through_the_gateway_and_the_secret_stays_out_of_mcp() {
    let allowed = origin();
    let other = origin();
    let mut env = HostEnv::new();
    env.set("DELEGATE_EGRESS_LISTEN", "127.0.0.1:0");
    env.set("DELEGATE_EGRESS_ALLOW_PRIVATE", "127.0.0.0/8");
    env.set("DELEGATE_SECRET_GITHUB", SECRET);
    let client = connect_stdio(&env, Revision::Current).await;
    // The job checks the value by its digest, so not even the task holds it.
    let digest = hex(&Sha256::digest(SECRET.as_bytes()));
    // `--noproxy ''`: loopback is in NO_PROXY, and this job wants the gateway.
    let task = format!(
        r#"test "$(printf %s "$GITHUB_TOKEN" | sha256sum | cut -c1-64)" = "{digest}" || exit 3
echo "token=$GITHUB_TOKEN"
echo "allowed=$(curl -s --noproxy '' -o /dev/null -w '%{{http_code}}' http://localhost:{allowed}/)"
echo "other=$(curl -s --noproxy '' -o /dev/null -w '%{{http_code}}' http://localhost:{other}/)"
echo "direct=$(curl -s --noproxy '*' -m 5 -o /dev/null -w '%{{http_code}}' http://localhost:{allowed}/)""#
    );
    let id = client
        .submit(json!({
            "task": task,
            "agentType": "script",
            "timeout": 60,
            "network": {"allow": [format!("localhost:{allowed}")]},
            "secretEnv": {"GITHUB_TOKEN": "github"},
        }))
        .await;
    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());

    let mut answers = vec![done.to_string()];
    let result = client.call("get_job_result", json!({"job_id": id})).await;
    let out = text_of(&result);
    assert!(out.contains("token=***"), "{out}");
    assert!(out.contains("allowed=200"), "{out}");
    assert!(out.contains("other=403"), "{out}");
    // Around the proxy: the sandbox's loopback is its own, nothing listens.
    assert!(out.contains("direct=000"), "{out}");
    answers.push(out);
    let status = client.ok("get_job_status", json!({"job_id": id})).await;
    assert_eq!(status["egress"]["allowed"], 1, "{status}");
    assert_eq!(status["egress"]["denied"], 1, "{status}");
    let last = status["egress"]["last_denied"][0].as_str().unwrap();
    assert!(last.starts_with(&format!("localhost:{other}: ")), "{last}");
    answers.push(status.to_string());
    answers.push(text_of(
        &client.call("get_job_logs", json!({"job_id": id})).await,
    ));

    // No policy: no proxy variables, and nothing reached either way.
    let task = format!(
        r#"echo "proxy=${{HTTP_PROXY:-none}}"
echo "direct=$(curl -s --noproxy '*' -m 5 -o /dev/null -w '%{{http_code}}' http://localhost:{allowed}/)""#
    );
    let closed = client
        .submit(json!({"task": task, "agentType": "script", "timeout": 60}))
        .await;
    let done = client.wait_final(&closed, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    let out = text_of(
        &client
            .call("get_job_result", json!({"job_id": closed}))
            .await,
    );
    assert!(out.contains("proxy=none"), "{out}");
    assert!(out.contains("direct=000"), "{out}");
    answers.push(text_of(&client.call("list_jobs", json!({})).await));
    for a in &answers {
        assert!(!a.contains(SECRET), "the secret reached an MCP answer: {a}");
    }
    client.close().await;

    assert_not_in_files(&env.data_dir(), SECRET);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host's credential for the git remote: only the gateway adds it.
const INJECTED: &str = "Bearer ghp_injected_only_at_gateway_77";

/// A loopback HTTPS origin with a certificate for `localhost` from a test
/// CA of its own: its port, that CA (PEM), and the heads it was sent.
async fn https_origin() -> (u16, String, Arc<Mutex<Vec<String>>>) {
    let certs = delegate_tests::pve_sim::tls::generate().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(certs.server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecure",
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    (port, certs.ca_pem, heads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_credential_reaches_the_host_but_never_the_sandbox() {
    let (port, ca_pem, heads) = https_origin().await;
    let mut env = HostEnv::new();
    let roots = tempfile::tempdir().unwrap();
    let ca_file = roots.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    env.set("DELEGATE_EGRESS_LISTEN", "127.0.0.1:0");
    env.set("DELEGATE_EGRESS_ALLOW_PRIVATE", "127.0.0.0/8");
    env.set("DELEGATE_SECRET_GITREMOTE", INJECTED);
    env.set(
        "DELEGATE_EGRESS_INJECT",
        "gitremote@localhost=Authorization",
    );
    env.set("DELEGATE_EGRESS_UPSTREAM_CA", ca_file.display().to_string());
    let client = connect_stdio(&env, Revision::Current).await;
    // curl trusts the gateway's CA through CURL_CA_BUNDLE, set by the guest;
    // the `[i]` keeps grep from finding its own command line.
    let task = format!(
        r#"echo "secure=$(curl -s --noproxy '' -H 'Authorization: Bearer mine' https://localhost:{port}/)"
echo "env=$(env | grep -c '[i]njected_only')"
echo "files=$(grep -rl '[i]njected_only' /workspace /tmp /home /run /etc 2>/dev/null | wc -l)"
echo "ps=$(ps -eo args | grep -c '[i]njected_only')""#
    );
    let id = client
        .submit(json!({
            "task": task,
            "agentType": "script",
            "timeout": 60,
            "network": {"allow": [format!("localhost:{port}")]},
        }))
        .await;
    let done = client.wait_final(&id, LIMIT).await;
    assert_eq!(done["status"], "success", "{done}\n{}", env.log());
    let out = text_of(&client.call("get_job_result", json!({"job_id": id})).await);
    assert!(out.contains("secure=secure"), "{out}\n{}", env.log());
    for probe in ["env=0", "files=0", "ps=0"] {
        assert!(out.contains(probe), "{probe}: {out}");
    }
    let seen = heads.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = seen[0].to_ascii_lowercase();
    assert!(
        head.contains(&format!("authorization: {}", INJECTED.to_ascii_lowercase())),
        "{head}"
    );
    assert!(!head.contains("bearer mine"), "{head}");
    let mut answers = vec![done.to_string(), out];
    answers.push(
        client
            .ok("get_job_status", json!({"job_id": id}))
            .await
            .to_string(),
    );
    answers.push(text_of(
        &client.call("get_job_logs", json!({"job_id": id})).await,
    ));
    for a in &answers {
        assert!(
            !a.contains(INJECTED),
            "the credential reached an MCP answer: {a}"
        );
    }
    client.close().await;
    assert_not_in_files(&env.data_dir(), INJECTED);
}
