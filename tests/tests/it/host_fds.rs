//! Descriptor headroom, with the real `delegate-host serve` started under
//! an open-file limit of 256 (soft and hard, as after `ulimit -n 256`):
//! 300 idle sockets on its callback port, or on its egress gateway's,
//! opened by someone without a token, neither make `accept` fail in a loop
//! nor the next job fail to provision with "Too many open files"; the
//! host's own limit stays what it was given.

use std::time::Duration;

use delegate_tests::mcp::{HostEnv, Revision, connect_stdio, free_port, hello_manifest};
use tokio::net::TcpStream;

const NOFILE: u64 = 256;
const IDLE: usize = 300;
const LIMIT: Duration = Duration::from_secs(120);

/// The soft `RLIMIT_NOFILE` of a process, from `/proc`.
fn open_file_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Starts the server under `env` limited to [`NOFILE`] descriptors, opens
/// [`IDLE`] idle sockets to `port` and runs two jobs to success.
async fn idle_sockets_do_not_fail_the_next_job(env: &mut HostEnv, port: u16) {
    env.limit_open_files(NOFILE);
    let client = connect_stdio(env, Revision::Current).await;
    let pid = client.server_pid.expect("the server pid");
    assert_eq!(open_file_limit(pid), Some(NOFILE), "{}", env.log());
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        // Some may be refused once the listen backlog is full; the host
        // must hold up whatever happens to them.
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
            idle.push(s);
        }
    }
    assert!(
        idle.len() >= NOFILE as usize,
        "only {} connected",
        idle.len()
    );
    // Let the host accept what it will.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..2 {
        let id = client.submit(hello_manifest(3)).await;
        let v = client.wait_final(&id, LIMIT).await;
        assert_eq!(v["status"], "success", "{v}\n{}", env.log());
    }
    let log = env.log();
    assert!(!log.contains("Too many open files"), "{log}");
    drop(idle);
    client.close().await;
}

#[tokio::test]
async fn three_hundred_idle_sockets_under_ulimit_256_do_not_fail_the_next_job() {
    let mut env = HostEnv::new();
    let port = free_port();
    env.set("CALLBACK_PORT", port.to_string());
    idle_sockets_do_not_fail_the_next_job(&mut env, port).await;
}

#[tokio::test]
async fn three_hundred_idle_sockets_on_the_gateway_under_ulimit_256_do_not_fail_the_next_job() {
    let mut env = HostEnv::new();
    let port = free_port();
    env.set("DELEGATE_EGRESS_LISTEN", format!("127.0.0.1:{port}"));
    idle_sockets_do_not_fail_the_next_job(&mut env, port).await;
}
