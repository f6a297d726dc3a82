//! The egress gateway over real sockets on 127.0.0.1: loopback servers
//! stand in for external hosts, and a test resolver maps their names to
//! 127.0.0.1 (which the host then allows explicitly, as
//! `DELEGATE_EGRESS_ALLOW_PRIVATE` would). The test plays the job with the
//! bootstrap the provider double received.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use delegate_host::config::Settings;

use delegate_host::egress::log::{self, ConnRecord, Via};
use delegate_proto::Bootstrap;
use delegate_proto::api::{self, JobSpec, PROTOCOL_HEADER};
use delegate_proto::network::EgressSpec;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::support::fake::FakeProvider;
use crate::support::harness::{Host, eventually, settings};
use crate::support::origin::{API_KEY, GITHUB, gateway_settings, hanging, running};
use crate::support::origin::{Origin, Reply, drain, get_over, send_get, tunnel};

/// A host with the egress gateway, on the fake provider.
struct Gateway {
    host: Host,
    fake: Arc<FakeProvider>,
    /// The gateway's TCP address.
    addr: SocketAddr,
}

impl Gateway {
    async fn start(settings: Settings) -> Gateway {
        let fake = Arc::new(FakeProvider::new());
        let host = Host::start(settings, fake.clone()).await;
        let addr = host.engine.as_ref().unwrap().egress_addr.unwrap();
        Gateway { host, fake, addr }
    }

    /// Submits a [`hanging`] job and waits until it runs: the bootstrap
    /// the fake provider received, which the test then plays the job with.
    async fn run(&self, agent: &str, extra: serde_json::Value) -> Bootstrap {
        running(&self.host, &self.fake, hanging(agent, extra)).await
    }

    /// What the guest of job `b` is told (`GET manifest`).
    async fn job_spec(&self, b: &Bootstrap) -> JobSpec {
        reqwest::Client::new()
            .get(format!(
                "{}{}",
                self.host.base_url(),
                api::manifest_path(&b.job_id)
            ))
            .bearer_auth(&b.token)
            .header(PROTOCOL_HEADER, "1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Writes `request` to `s` and reads until the other side closes: the
/// answer as text, and how the read ended (a TLS peer may close without
/// `close_notify`, which is an error after a whole answer).
async fn exchange(
    s: &mut (impl AsyncRead + AsyncWrite + Unpin),
    request: &[u8],
) -> (String, std::io::Result<usize>) {
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out).await;
    (String::from_utf8_lossy(&out).into_owned(), read)
}

async fn log_of(host: &Host, id: &str, n: usize) -> Vec<ConnRecord> {
    eventually(10, &format!("{n} egress records"), || async {
        let records = log::read(host.manager().store(), id).unwrap();
        (records.len() >= n).then_some(records)
    })
    .await
}

#[tokio::test]
async fn allowed_hosts_are_reached_and_everything_else_refused_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(Reply::Text("text/plain", "hello from origin".into())).await;
    let g = Gateway::start(gateway_settings(dir.path(), 1)).await;
    let (host, gw) = (&g.host, g.addr);
    let b = g
        .run(
            "script",
            json!({"network": {"allow": ["allowed.test", "internal.test"]}}),
        )
        .await;
    let creds = Some((b.job_id.as_str(), b.token.as_str()));
    let allowed = format!("allowed.test:{}", origin.port());

    // CONNECT to an allowed host: a tunnel the gateway does not read.
    let (status, _, mut s) = tunnel(gw, &allowed, creds).await;
    assert_eq!(status, 200);
    let body = get_over(&mut s, "allowed.test").await;
    // The tunnel is logged when both sides closed it.
    drop(s);
    assert!(String::from_utf8_lossy(&body).ends_with("hello from origin"));

    // Plain HTTP through the proxy, as any HTTP client does it.
    let http = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::http(format!("http://{gw}"))
                .unwrap()
                .basic_auth(&b.job_id, &b.token),
        )
        .build()
        .unwrap();
    let r = http
        .get(format!("http://{allowed}/pkg?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from origin");
    let seen = origin.seen();
    let forwarded = seen.iter().find(|r| r.contains("/pkg?x=1")).unwrap();
    assert!(
        forwarded.starts_with("GET /pkg?x=1 HTTP/1.1"),
        "{forwarded}"
    );
    assert!(
        !forwarded
            .to_ascii_lowercase()
            .contains("proxy-authorization")
    );

    // Not in the allow list (same loopback server behind another name).
    let (status, text, _) = tunnel(gw, &format!("denied.test:{}", origin.port()), creds).await;
    assert_eq!(status, 403);
    assert!(text.contains("not in the job's network.allow"), "{text}");
    // Allowed by name, but the name resolves to a private address.
    let (status, text, _) = tunnel(gw, "internal.test:443", creds).await;
    assert_eq!(status, 403);
    assert!(text.contains("10.20.30.40 is a private address"), "{text}");
    // No credentials, or a wrong token: asked to authenticate, nothing logged.
    assert_eq!(tunnel(gw, &allowed, None).await.0, 407);
    let wrong = "0".repeat(64);
    assert_eq!(tunnel(gw, &allowed, Some((&b.job_id, &wrong))).await.0, 407);

    let records = log_of(host, &b.job_id, 4).await;
    let connect = records
        .iter()
        .find(|r| r.allowed && r.via == Via::Connect)
        .unwrap();
    assert_eq!(
        (connect.host.as_str(), connect.port),
        ("allowed.test", origin.port())
    );
    assert!(connect.sent > 0 && connect.received > "hello from origin".len() as u64);
    assert!(
        records
            .iter()
            .any(|r| r.allowed && r.via == Via::Http && r.received > 0)
    );
    let denied: Vec<_> = records.iter().filter(|r| !r.allowed).collect();
    assert_eq!(denied.len(), 2, "{records:?}");
    let summary = log::summarize(&records);
    assert_eq!((summary.allowed, summary.denied), (2, 2));
    assert!(summary.last_denied[0].starts_with("denied.test:"));
    // The status shows it too.
    let status = delegate_host::mcp::calls::status_view(
        host.manager(),
        &host.manager().get(&b.job_id).unwrap(),
    );
    let egress = status.egress.expect("status shows egress");
    assert_eq!((egress.allowed, egress.denied), (2, 2));
    g.host.stop().await;
}

#[tokio::test]
async fn a_job_without_policy_reaches_nothing_and_ends_its_access_when_final() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(Reply::Text("text/plain", "x".into())).await;
    let g = Gateway::start(gateway_settings(dir.path(), 1)).await;
    let (host, gw) = (&g.host, g.addr);
    let b = g.run("script", json!({})).await;
    let target = format!("allowed.test:{}", origin.port());
    let (status, text, _) = tunnel(gw, &target, Some((&b.job_id, &b.token))).await;
    assert_eq!(status, 403);
    assert!(text.contains("no network policy"), "{text}");
    assert!(origin.seen().is_empty());
    let records = log_of(host, &b.job_id, 1).await;
    assert!(!records[0].allowed);

    // A job with a policy loses the gateway once it is final.
    let b = g.run("script", json!({"network": {"allow": ["*"]}})).await;
    host.manager().cancel(&b.job_id).await.unwrap();
    eventually(10, "the job to be final", || async {
        host.manager()
            .get(&b.job_id)
            .ok()
            .filter(|r| r.state.is_final())
    })
    .await;
    assert_eq!(
        tunnel(gw, &target, Some((&b.job_id, &b.token))).await.0,
        407
    );
    g.host.stop().await;
}

#[tokio::test]
async fn claude_jobs_get_the_host_key_injected_and_never_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let api = Origin::start(Reply::Text(
        "application/json",
        r#"{"type":"message","content":[{"type":"text","text":"hi"}]}"#.into(),
    ))
    .await;
    let g = Gateway::start(gateway_settings(dir.path(), api.port())).await;
    let (host, gw) = (&g.host, g.addr);
    let b = g
        .run("claude", json!({"secretEnv": {"GITHUB_TOKEN": "github"}}))
        .await;

    // What the guest is told: the endpoint, a placeholder, the named secret.
    let http = reqwest::Client::new();
    let spec = g.job_spec(&b).await;
    let egress = spec.egress.clone().unwrap();
    assert_eq!(
        egress.anthropic_base_url.as_deref(),
        Some(format!("http://127.0.0.1:{}/anthropic", gw.port()).as_str())
    );
    assert_eq!(egress.proxy_url, None, "no network policy, no proxy");
    assert_eq!(egress.secret_env["GITHUB_TOKEN"], GITHUB);
    assert!(!serde_json::to_string(&spec).unwrap().contains(API_KEY));

    // The Claude CLI's call, as ANTHROPIC_BASE_URL and the placeholder make it.
    let placeholder = EgressSpec::placeholder_key(&b.job_id, &b.token);
    let r = http
        .post(format!(
            "{}/v1/messages",
            egress.anthropic_base_url.unwrap()
        ))
        .header("x-api-key", &placeholder)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("\"hi\""));
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    let upstream = seen[0].to_ascii_lowercase();
    assert!(
        upstream.starts_with("post /v1/messages http/1.1"),
        "{upstream}"
    );
    assert!(upstream.contains(&format!("x-api-key: {}", API_KEY.to_ascii_lowercase())));
    assert!(upstream.contains(&format!("host: api.anthropic.test:{}", api.port())));
    assert!(
        !upstream.contains(&b.token),
        "the job's token stays at the gateway"
    );
    assert!(upstream.contains("\"max_tokens\":5"));

    // A wrong placeholder is refused before anything goes upstream.
    let r = http
        .post(format!("http://{gw}/anthropic/v1/messages"))
        .header(
            "x-api-key",
            EgressSpec::placeholder_key(&b.job_id, &"1".repeat(64)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(api.seen().len(), 1);
    let records = log_of(host, &b.job_id, 1).await;
    assert!(records[0].allowed && records[0].via == Via::Anthropic);

    // A script job gets no injection even with valid credentials.
    let s = g.run("script", json!({})).await;
    let r = http
        .post(format!("http://{gw}/anthropic/v1/messages"))
        .header(
            "x-api-key",
            EgressSpec::placeholder_key(&s.job_id, &s.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(api.seen().len(), 1);

    // Neither secret is anywhere in the store: database, logs, anything.
    g.host.stop().await;
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for secret in [API_KEY, GITHUB] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in {}",
                entry.display()
            );
        }
    }
}

#[tokio::test]
async fn manifests_needing_what_the_host_lacks_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gateway::start(gateway_settings(dir.path(), 1)).await;
    let m = g.host.manager();
    let err = m
        .submit(hanging("script", json!({"secretEnv": {"T": "nope"}})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("secretEnv.T"), "{err}");
    assert!(
        err.to_string().contains("github"),
        "names what exists: {err}"
    );
    let err = m
        .submit(hanging("script", json!({"network": {"allow": ["@nope"]}})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("network.allow[0]"), "{err}");
    g.host.stop().await;

    // Without a gateway, a network policy cannot be honoured.
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(settings(dir.path(), |_| {}), Arc::new(FakeProvider::new())).await;
    let err = host
        .manager()
        .submit(hanging(
            "script",
            json!({"network": {"allow": ["pypi.org"]}}),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("DELEGATE_EGRESS_LISTEN"), "{err}");
    host.stop().await;
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_download_through_the_tunnel_arrives_whole_and_is_counted() {
    const LEN: u64 = 4 << 20;
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start(Reply::Bytes(LEN)).await;
    let g = Gateway::start(gateway_settings(dir.path(), 1)).await;
    let (host, gw) = (&g.host, g.addr);
    let b = g
        .run("script", json!({"network": {"allow": ["allowed.test"]}}))
        .await;
    let target = format!("allowed.test:{}", origin.port());
    let (status, _, mut s) = tunnel(gw, &target, Some((&b.job_id, &b.token))).await;
    assert_eq!(status, 200);
    send_get(&mut s, "allowed.test").await;
    let received = drain(&mut s).await;
    drop(s);
    // The body and a short head, all of it, and the log counted the same.
    let head = received - LEN;
    assert!((60..300).contains(&head), "{received} bytes for {LEN}");
    let records = log_of(host, &b.job_id, 1).await;
    assert_eq!(records[0].received, received);
    g.host.stop().await;
}

#[tokio::test]
async fn the_gateway_also_answers_on_its_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("egress.sock");
    let origin = Origin::start(Reply::Text("text/plain", "via the socket".into())).await;
    let mut s = gateway_settings(&dir.path().join("data"), 1);
    s.egress.socket = Some(socket.clone());
    let g = Gateway::start(s).await;
    let b = g
        .run("script", json!({"network": {"allow": ["allowed.test"]}}))
        .await;
    let mut s = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let target = format!("allowed.test:{}", origin.port());
    let auth = crate::support::origin::proxy_auth(&b.job_id, &b.token);
    let req = format!(
        "CONNECT {target} HTTP/1.1\r\nhost: {target}\r\nproxy-authorization: {auth}\r\n\r\n\
         GET / HTTP/1.1\r\nhost: allowed.test\r\nconnection: close\r\n\r\n"
    );
    let (text, read) = exchange(&mut s, req.as_bytes()).await;
    read.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("via the socket"), "{text}");
    g.host.stop().await;
    assert!(!socket.exists(), "the socket is removed at shutdown");
}

/// TLS over a tunnel the gateway answered, trusting only `ca_pem`.
async fn tls_over(
    s: tokio::net::TcpStream,
    ca_pem: &str,
    name: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name.to_string().try_into().unwrap(), s)
        .await
        .expect("the job trusts the gateway's leaf for an injection host")
}

#[tokio::test]
async fn injection_hosts_get_the_credential_over_tls_the_gateway_terminates() {
    use crate::support::tls_origin::TlsOrigin;
    use delegate_host::egress::settings::Injection;

    let dir = tempfile::tempdir().unwrap();
    let secure = TlsOrigin::start("secure.test").await;
    // A host whose certificate the gateway does not trust: a stand-in for
    // someone in the middle between the gateway and the real host.
    let mitm = TlsOrigin::start("mitm.test").await;
    let mut s = gateway_settings(dir.path(), 1);
    s.egress.injections = ["secure.test", "mitm.test"]
        .iter()
        .map(|h| Injection {
            secret: "github".into(),
            host: h.to_string(),
            header: hyper::header::AUTHORIZATION,
        })
        .collect();
    s.egress.upstream_roots = vec![secure.ca.clone()];
    let g = Gateway::start(s).await;
    let (host, gw) = (&g.host, g.addr);
    let b = g
        .run(
            "script",
            json!({"network": {"allow": ["secure.test", "mitm.test"]}}),
        )
        .await;
    let spec = g.job_spec(&b).await;
    let ca_pem = spec.egress.unwrap().ca_pem.expect("the gateway's CA");
    assert!(!ca_pem.contains("PRIVATE KEY"));
    let key =
        std::fs::read_to_string(dir.path().join(delegate_host::egress::ca::KEY_FILE)).unwrap();
    assert!(
        key.contains("PRIVATE KEY"),
        "the key stays in the data directory"
    );
    let creds = Some((b.job_id.as_str(), b.token.as_str()));

    let (status, _, s) = tunnel(gw, &format!("secure.test:{}", secure.port), creds).await;
    assert_eq!(status, 200);
    let mut tls = tls_over(s, &ca_pem, "secure.test").await;
    let (out, _) = exchange(
        &mut tls,
        b"GET /repo HTTP/1.1\r\nhost: secure.test\r\nauthorization: Bearer from-the-job\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("secure hello"), "{out}");
    let seen = secure.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = seen[0].to_ascii_lowercase();
    assert!(head.starts_with("get /repo http/1.1"), "{head}");
    assert!(
        head.contains(&format!("authorization: {}", GITHUB.to_ascii_lowercase())),
        "{head}"
    );
    assert!(
        !head.contains("from-the-job"),
        "the job's own header is dropped"
    );

    // The real host's certificate is verified: an untrusted one is refused
    // before any request (and so the credential) goes out.
    let (status, _, s) = tunnel(gw, &format!("mitm.test:{}", mitm.port), creds).await;
    assert_eq!(status, 200);
    let mut tls = tls_over(s, &ca_pem, "mitm.test").await;
    let (out, _) = exchange(
        &mut tls,
        b"GET / HTTP/1.1\r\nhost: mitm.test\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(out.contains("TLS to mitm.test"), "{out}");
    assert!(mitm.seen().is_empty());

    let records = log_of(host, &b.job_id, 2).await;
    assert!(records.iter().all(|r| r.via == Via::Inject), "{records:?}");
    assert!(records.iter().any(|r| r.allowed && r.host == "secure.test"));
    assert!(
        records.iter().any(
            |r| r.host == "mitm.test" && r.reason.as_deref().is_some_and(|w| w.contains("TLS"))
        )
    );
    g.host.stop().await;
}
