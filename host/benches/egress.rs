//! Egress gateway benchmark (issue 11): throughput of a download through
//! the gateway's `CONNECT` tunnel against the same download straight from
//! the loopback server, and the latency the gateway adds per connection
//! (authentication, policy, resolution, connect, the tunnel's set-up).
//! Targets: at least 0.5× direct throughput, under 2 ms added per
//! connection. Prints figures next to the targets; timing never fails the
//! run.
//!
//! `cargo bench -p delegate-host --bench egress` (1 GiB, 200 connections);
//! without `--bench` (as `cargo test --all-targets` runs it) a small pass
//! only proves that every measurement still works.

#[path = "../tests/it/support/mod.rs"]
#[expect(
    dead_code,
    reason = "the integration tests' support; the benchmark uses part of it"
)]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use delegate_proto::{JobManifest, JobState};
use support::fake::{FakeProvider, template_for};
use support::harness::{Host, until_state};
use support::origin::{Origin, Reply, drain, gateway_settings, send_get, tunnel};
use tokio::net::TcpStream;

struct Scale {
    download: u64,
    connections: usize,
}

const FULL: Scale = Scale {
    download: 1 << 30,
    connections: 200,
};
const SMOKE: Scale = Scale {
    download: 8 << 20,
    connections: 10,
};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { FULL } else { SMOKE };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(&scale));
}

async fn run(scale: &Scale) {
    let dir = tempfile::tempdir().expect("temp dir");
    let download = Origin::start(Reply::Bytes(scale.download)).await;
    let small = Origin::start(Reply::Text("text/plain", "ok".into())).await;
    let fake = Arc::new(FakeProvider::new());
    let host = Host::start(gateway_settings(dir.path(), 1), fake.clone()).await;
    let gw = host.engine.as_ref().unwrap().egress_addr.expect("gateway");
    let manifest = JobManifest::from_value(serde_json::json!({
        "task": "hang", "agentType": "script", "vmTemplate": template_for("hang"),
        "network": {"allow": ["allowed.test"]},
    }))
    .expect("manifest");
    let id = host.manager().submit(manifest).await.expect("submit").id;
    until_state(host.manager(), &id, JobState::Running, 10).await;
    let b = fake.bootstrap(&id).expect("bootstrap");
    let creds = (b.job_id.as_str(), b.token.as_str());

    // Throughput: the same download, direct and through the tunnel.
    let direct = timed(|| async {
        let mut s = TcpStream::connect(download.addr).await.unwrap();
        send_get(&mut s, "allowed.test").await;
        drain(&mut s).await
    })
    .await;
    let target = format!("allowed.test:{}", download.port());
    let proxied = timed(|| async {
        let (status, _, mut s) = tunnel(gw, &target, Some(creds)).await;
        assert_eq!(status, 200, "the gateway refused the download");
        send_get(&mut s, "allowed.test").await;
        drain(&mut s).await
    })
    .await;
    assert!(
        direct.0 >= scale.download && proxied.0 == direct.0,
        "{direct:?} {proxied:?}"
    );
    let mib = |(bytes, t): (u64, Duration)| bytes as f64 / (1 << 20) as f64 / t.as_secs_f64();
    let ratio = mib(proxied) / mib(direct);
    println!(
        "download {} MiB: direct {:.0} MiB/s, through the gateway {:.0} MiB/s: {ratio:.2}x (target >= 0.5x) {}",
        scale.download >> 20,
        mib(direct),
        mib(proxied),
        verdict(ratio >= 0.5)
    );

    // Latency per connection: connect + a tiny request, direct and proxied.
    let target = format!("allowed.test:{}", small.port());
    let direct = per_connection(scale.connections, || small_direct(small.addr)).await;
    let proxied = per_connection(scale.connections, || async {
        let (status, _, mut s) = tunnel(gw, &target, Some(creds)).await;
        assert_eq!(status, 200);
        send_get(&mut s, "allowed.test").await;
        drain(&mut s).await;
    })
    .await;
    let added = proxied.saturating_sub(direct);
    println!(
        "per connection ({} each): direct {:.3} ms, through the gateway {:.3} ms: +{:.3} ms (target < 2 ms) {}",
        scale.connections,
        ms(direct),
        ms(proxied),
        ms(added),
        verdict(added < Duration::from_millis(2))
    );
    host.stop().await;
}

async fn small_direct(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    send_get(&mut s, "allowed.test").await;
    drain(&mut s).await;
}

async fn timed<F, Fut>(f: F) -> (u64, Duration)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let start = Instant::now();
    let bytes = f().await;
    (bytes, start.elapsed())
}

/// The median time of `n` sequential connections (the median, so one
/// scheduling hiccup on a shared machine does not decide the figure).
async fn per_connection<F, Fut>(n: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        f().await;
        times.push(start.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}
