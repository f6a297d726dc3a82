//! Loopback servers standing in for external hosts behind the egress
//! gateway: each answers every request on a connection of its own with a
//! fixed body (or `len` bytes for downloads) and records what it was sent.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use delegate_host::config::Settings;
use delegate_host::egress::resolver::StaticResolver;
use delegate_host::egress::secrets::HostSecrets;
use delegate_host::egress::settings::Upstream;
use delegate_host::resolve::FixedMachine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::fake::{FakeProvider, template_for};
use super::harness::{Host, until_state};
use delegate_proto::{Bootstrap, JobManifest, JobState};
use serde_json::json;

/// The host's Anthropic key in gateway tests (never to be seen by a job).
pub const API_KEY: &str = "sk-ant-api03-host-only-9f8e7d";
/// The host's `github` secret in gateway tests.
pub const GITHUB: &str = "ghp_host_only_4c3b2a";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Settings with a gateway on 127.0.0.1, the test names resolved to
/// loopback (and `internal.test` to a private address), loopback allowed.
pub fn gateway_settings(dir: &Path, anthropic_port: u16) -> Settings {
    super::harness::settings(dir, |s| {
        let e = &mut s.egress;
        e.listen = Some("127.0.0.1:0".parse().unwrap());
        e.allow_private = vec!["127.0.0.0/8".parse().unwrap()];
        e.resolver = Arc::new(
            StaticResolver::default()
                .with("allowed.test", LOOPBACK)
                .with("denied.test", LOOPBACK)
                .with("api.anthropic.test", LOOPBACK)
                .with("secure.test", LOOPBACK)
                .with("mitm.test", LOOPBACK)
                .with("internal.test", "10.20.30.40".parse().unwrap()),
        );
        e.secrets = HostSecrets::resolve(
            None,
            &FixedMachine::default()
                .with_var("DELEGATE_SECRET_ANTHROPIC", API_KEY)
                .with_var("DELEGATE_SECRET_GITHUB", GITHUB),
        )
        .unwrap();
        e.anthropic_upstream = Upstream {
            tls: false,
            host: "api.anthropic.test".into(),
            port: anthropic_port,
        };
    })
}

/// What an origin answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This text with this content type.
    Text(&'static str, String),
    /// `len` bytes of `x` (a download).
    Bytes(u64),
}

/// A started origin.
pub struct Origin {
    pub addr: SocketAddr,
    /// Every request as received: head and body, as text.
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    pub async fn start(reply: Reply) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let reply = reply.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, reply, seen).await;
                });
            }
        });
        Origin { addr, requests }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn seen(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve(
    mut s: TcpStream,
    reply: Reply,
    seen: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    let request = read_request(&mut s).await?;
    seen.lock().unwrap().push(request);
    match reply {
        Reply::Text(ctype, body) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await?;
            s.write_all(body.as_bytes()).await?;
        }
        Reply::Bytes(len) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 256 * 1024];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                s.write_all(&chunk[..n]).await?;
                left -= n as u64;
            }
        }
    }
    s.shutdown().await
}

/// Reads one request: the head, then a `content-length` body.
pub async fn read_request(s: &mut TcpStream) -> std::io::Result<String> {
    let head = read_head(s).await?;
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(format!("{head}{}", String::from_utf8_lossy(&body)))
}

/// Reads up to and including the blank line that ends a head.
pub async fn read_head(s: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// `Proxy-Authorization` for a job.
pub fn proxy_auth(job_id: &str, token: &str) -> String {
    use base64::Engine as _;
    let raw = format!("{job_id}:{token}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Asks the gateway at `gw` for a `CONNECT` tunnel to `target`: the status,
/// the response (head and body, for refusals) and the stream.
pub async fn tunnel(
    gw: SocketAddr,
    target: &str,
    creds: Option<(&str, &str)>,
) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect(gw).await.unwrap();
    let _ = s.set_nodelay(true);
    let auth = creds
        .map(|(id, t)| format!("proxy-authorization: {}\r\n", proxy_auth(id, t)))
        .unwrap_or_default();
    let req = format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n{auth}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let response = read_request(&mut s).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, response, s)
}

/// Reads `s` to its end without keeping the bytes; how many there were.
pub async fn drain(s: &mut TcpStream) -> u64 {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n as u64,
        }
    }
}

/// Sends `GET /` with `connection: close` over `s`.
pub async fn send_get(s: &mut TcpStream, host: &str) {
    let req = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
}

/// A `GET /` with `connection: close` over `s`; the whole response.
pub async fn get_over(s: &mut TcpStream, host: &str) -> Vec<u8> {
    send_get(s, host).await;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    out
}

/// A job (for the fake provider) that stays running (the fake guest's `hang`) with `extra` fields.
pub fn hanging(agent: &str, extra: serde_json::Value) -> JobManifest {
    let mut v = json!({"task": "hang", "agentType": agent, "vmTemplate": template_for("hang")});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    JobManifest::from_value(v).unwrap()
}

/// Submits `m` and waits until it runs: the bootstrap its guest got.
pub async fn running(host: &Host, fake: &FakeProvider, m: JobManifest) -> Bootstrap {
    let id = host.manager().submit(m).await.unwrap().id;
    until_state(host.manager(), &id, JobState::Running, 10).await;
    fake.bootstrap(&id).unwrap()
}
