//! The egress gateway's connection rules over real sockets on 127.0.0.1
//! (loopback origins, the test playing the job as in `egress_gateway`): a
//! head sent one byte a second is cut; idle connections are closed; an
//! established tunnel outlives the head and idle timeouts and is cut only
//! when quiet; with a small cap, idle sockets neither stay held nor stop a
//! job's traffic, busy connections over the cap are told why (503), and a
//! job over its own cap is told why (429, logged) while others go on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use delegate_host::egress::conn_settings::EgressConns;
use delegate_host::egress::log;
use delegate_proto::Bootstrap;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::fake::FakeProvider;
use crate::support::harness::{Host, eventually};
use crate::support::origin::{Origin, Reply, gateway_settings, get_over, hanging, running, tunnel};
use crate::support::sockets::{CLOSE_WITHIN, NEVER, closed_by_server, send_slowly, silent};

const BODY: &str = "hello from origin";

struct Gateway {
    host: Host,
    fake: Arc<FakeProvider>,
    addr: SocketAddr,
    origin: Origin,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(f: impl FnOnce(&mut EgressConns)) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let origin = Origin::start(Reply::Text("text/plain", BODY.into())).await;
        let mut s = gateway_settings(dir.path(), 1);
        f(&mut s.egress.conns);
        let fake = Arc::new(FakeProvider::new());
        let host = Host::start(s, fake.clone()).await;
        let addr = host.engine.as_ref().unwrap().egress_addr.unwrap();
        Gateway {
            host,
            fake,
            addr,
            origin,
            _dir: dir,
        }
    }

    /// A running job allowed to reach `allowed.test`.
    async fn job(&self) -> Bootstrap {
        let m = hanging("script", json!({"network": {"allow": ["allowed.test"]}}));
        running(&self.host, &self.fake, m).await
    }

    fn target(&self) -> String {
        format!("allowed.test:{}", self.origin.port())
    }

    /// A tunnel for `job` to the origin, with its status and response.
    async fn tunnel(&self, job: &Bootstrap) -> (u16, String, TcpStream) {
        tunnel(self.addr, &self.target(), Some((&job.job_id, &job.token))).await
    }

    /// Whether a tunnel for `job` carries a request and its answer.
    async fn reaches_origin(&self, job: &Bootstrap) -> bool {
        let (status, text, mut s) = self.tunnel(job).await;
        assert_eq!(status, 200, "{text}");
        String::from_utf8_lossy(&get_over(&mut s, "allowed.test").await).ends_with(BODY)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_one_byte_a_second_is_cut_after_the_header_timeout() {
    let gw = Gateway::start(|c| {
        c.conn.header_timeout = Duration::from_secs(2);
        c.conn.idle_timeout = NEVER;
    })
    .await;
    let head = format!(
        "CONNECT {0} HTTP/1.1\r\nhost: {0}\r\nx-padding: {1}\r\n\r\n",
        gw.target(),
        "a".repeat(64)
    );
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let (sent, cut) = send_slowly(&mut s, head.as_bytes()).await;
    assert!(
        cut,
        "the slow client kept its connection ({sent} bytes sent)"
    );
    assert!(sent < head.len(), "the head was never complete");
    gw.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_new_or_kept_alive_are_closed_after_the_idle_timeout() {
    let gw = Gateway::start(|c| {
        c.conn.idle_timeout = Duration::from_secs(2);
        c.conn.header_timeout = NEVER;
    })
    .await;
    let mut idle = silent(gw.addr.port(), 20).await;
    // One request answered on a kept-alive connection, then silence.
    let mut kept = TcpStream::connect(gw.addr).await.unwrap();
    kept.write_all(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let head = crate::support::origin::read_head(&mut kept).await.unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 400"), "{head}");
    assert!(!head.contains("connection: close"), "kept alive: {head}");
    assert!(
        closed_by_server(&mut kept, CLOSE_WITHIN).await,
        "the kept-alive connection stayed open"
    );
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, CLOSE_WITHIN).await,
            "idle connection {i} stayed open"
        );
    }
    gw.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_outlives_the_head_and_idle_timeouts_and_is_cut_only_when_quiet() {
    let gw = Gateway::start(|c| {
        c.conn.idle_timeout = Duration::from_secs(1);
        c.conn.header_timeout = Duration::from_secs(1);
        c.conn.body_timeout = Duration::from_secs(3);
        c.conn.busy_timeout = Some(Duration::from_secs(3));
    })
    .await;
    let job = gw.job().await;
    // A request trickling through the tunnel for longer than every
    // timeout (a byte every half second): carrying data, never cut.
    let (status, text, mut s) = gw.tunnel(&job).await;
    assert_eq!(status, 200, "{text}");
    let request = "GET / HTTP/1.1\r\nhost: allowed.test\r\nconnection: close\r\n\r\n";
    for b in request.as_bytes() {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut answer)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&answer).ends_with(BODY));
    // A tunnel nothing crosses is closed after the tunnel idle timeout, and
    // the log says why.
    let (status, text, mut quiet) = gw.tunnel(&job).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        closed_by_server(&mut quiet, CLOSE_WITHIN).await,
        "the quiet tunnel stayed open"
    );
    let store = gw.host.manager().store().clone();
    let why = eventually(10, "the quiet tunnel's record", || async {
        log::read(&store, &job.job_id)
            .unwrap()
            .into_iter()
            .find_map(|r| r.reason)
    })
    .await;
    assert!(
        why.contains("DELEGATE_EGRESS_TUNNEL_IDLE_TIMEOUT_SECONDS"),
        "{why}"
    );
    gw.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_low_cap_idle_sockets_are_shed_and_jobs_still_get_out() {
    const CAP: usize = 8;
    const IDLE: usize = 50;
    let gw = Gateway::start(|c| c.conn.max_connections = CAP).await;
    let job = gw.job().await;
    // A tunnel open before the flood is busy: never shed for a new socket.
    let (status, text, mut early) = gw.tunnel(&job).await;
    assert_eq!(status, 200, "{text}");
    let mut idle = silent(gw.addr.port(), IDLE).await;
    let mut closed = 0;
    for s in idle.iter_mut() {
        if closed_by_server(s, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(closed >= IDLE - CAP, "only {closed} of {IDLE} closed");
    assert!(
        String::from_utf8_lossy(&get_over(&mut early, "allowed.test").await).ends_with(BODY),
        "the early tunnel was cut"
    );
    // New idle sockets fill the cap again; the job still gets out, by
    // tunnel and by plain HTTP.
    let _fresh = silent(gw.addr.port(), CAP).await;
    assert!(gw.reaches_origin(&job).await);
    let http = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::http(format!("http://{}", gw.addr))
                .unwrap()
                .basic_auth(&job.job_id, &job.token),
        )
        .build()
        .unwrap();
    let r = http
        .get(format!("http://{}/pkg", gw.target()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), BODY);
    gw.host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_caps_clients_are_told_why_and_one_job_cannot_take_every_connection() {
    let gw = Gateway::start(|c| {
        c.conn.max_connections = 3;
        c.per_job = 2;
    })
    .await;
    let greedy = gw.job().await;
    let other = gw.job().await;
    let (_, _, _a) = gw.tunnel(&greedy).await;
    let (_, _, b) = gw.tunnel(&greedy).await;
    // The job's own cap: refused with the reason, logged with the job.
    let (status, text, _) = gw.tunnel(&greedy).await;
    assert_eq!(status, 429, "{text}");
    assert!(
        text.contains("DELEGATE_EGRESS_MAX_CONNECTIONS_PER_JOB"),
        "{text}"
    );
    let store = gw.host.manager().store().clone();
    eventually(10, "the refusal in the job's log", || async {
        log::read(&store, &greedy.job_id)
            .unwrap()
            .into_iter()
            .find(|r| {
                !r.allowed
                    && r.reason
                        .as_deref()
                        .is_some_and(|w| w.contains("MAX_CONNECTIONS_PER_JOB"))
            })
    })
    .await;
    // Another job is not held back by it.
    let (status, text, _c) = gw.tunnel(&other).await;
    assert_eq!(status, 200, "{text}");
    // Three tunnels hold the host's cap, all busy: a fourth connection is
    // told so.
    let (status, text, _) = gw.tunnel(&other).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("DELEGATE_EGRESS_MAX_CONNECTIONS"), "{text}");
    // A tunnel closed gives its place back.
    drop(b);
    eventually(10, "a place for the greedy job again", || async {
        let (status, _, s) = gw.tunnel(&greedy).await;
        (status == 200).then_some(s)
    })
    .await;
    gw.host.stop().await;
}
