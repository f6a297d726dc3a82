//! Warm pools on the qemu provider with real micro VMs under TCG: a pooled
//! VM (booted, its guest waiting on its bootstrap port, paused) takes a
//! job, which status calls `warm` and which reaches what its policy allows
//! through the egress gateway; the VM is destroyed after its job and
//! the pool refills; a pool VM is never listed as a job VM; a restarted
//! host adopts the pool VM left for it and destroys it at its own
//! shutdown, leaving no QEMU process. One test, so the machine boots only
//! two VMs (each about 10 s under TCG). Needs what `qemu_vm` needs.

use std::path::Path;
use std::time::Duration;

use crate::qemu_vm::{assert_vm_gone, log_text, processes_mentioning, provider, script};
use crate::support::harness::{Host, eventually, until_state};
use crate::support::origin::{Origin, Reply, gateway_settings};
use delegate_host::config::Settings;
use delegate_host::model::{LogSelector, PoolVmState};
use delegate_host::pool::parse_pool;
use delegate_host::provider::Provider;
use delegate_host::provider::qemu::QemuProvider;
use delegate_host::views::StatusView;
use delegate_proto::{JobState, LogStream};

const CLASS: &str = "micro:1c512m64m";

/// Small VMs, one pool VM of their size, an egress gateway, and fixed
/// callback and gateway ports (a pool VM's forwards are fixed when it
/// boots).
fn pooled(dir: &Path, ports: (u16, u16), keep_on_exit: bool) -> Settings {
    let mut s = gateway_settings(dir, 9);
    s.default_cpu = 1;
    s.default_memory = 512 << 20;
    s.default_disk = 64 << 20;
    s.heartbeat_threshold = Duration::from_secs(60);
    s.callback_bind = std::net::SocketAddr::from(([127, 0, 0, 1], ports.0));
    s.egress.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], ports.1)));
    s.pool = parse_pool(&format!("{CLASS}=1")).unwrap();
    s.pool_keep_on_exit = keep_on_exit;
    s
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The pool's ready VMs, from the store.
fn ready(host: &Host) -> Vec<String> {
    host.manager()
        .store()
        .pool_list()
        .unwrap()
        .into_iter()
        .filter(|r| r.state == PoolVmState::Ready)
        .map(|r| r.vm.id)
        .collect()
}

async fn one_ready(host: &Host, what: &str) -> String {
    let mut ids = eventually(240, what, || async {
        let r = ready(host);
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.remove(0)
}

/// What QMP says the VM does (`paused`, `running`).
async fn qmp_status(p: &QemuProvider, vm: &str) -> String {
    p.vm_status(vm).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_micro_vm_takes_a_job_and_a_restarted_host_adopts_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let port = ports.0;
    let allowed = Origin::start(Reply::Text("text/plain", "allowed body".into())).await;
    let p = provider(dir.path());
    let host = Host::start(pooled(dir.path(), ports, true), p.clone()).await;
    let m = host.manager().clone();

    let first = one_ready(&host, "a ready pool VM").await;
    assert_eq!(
        qmp_status(&p, &first).await,
        "paused",
        "an idle VM is paused"
    );
    let idle: Vec<String> = p
        .list_idle()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.vm.id)
        .collect();
    assert_eq!(idle, std::slice::from_ref(&first));
    let owned = p.list_owned().await.unwrap();
    assert!(owned.is_empty(), "a pool VM is no job VM: {owned:?}");

    let task = format!(
        "echo warm hello; echo allowed=$(curl -s -m 20 http://allowed.test:{}/); date +%s",
        allowed.port()
    );
    let policy = serde_json::json!({
        "network": {"allow": [format!("allowed.test:{}", allowed.port())]},
    });
    let rec = m.submit(script(&task, policy)).await.unwrap();
    let done = until_state(&m, &rec.id, JobState::Success, 120).await;
    let log = log_text(&m, &rec.id, LogSelector::Combined);
    assert_eq!(
        done.vm.as_ref().map(|v| v.id.as_str()),
        Some(first.as_str()),
        "{log}"
    );
    let status = StatusView::of(&done, delegate_host::clock::now_ms(), None);
    let vm = status.vm.expect("the job had a VM");
    assert_eq!(vm.start.as_deref(), Some("warm"));
    assert!(vm.start_seconds.is_some_and(|s| s < 30.0), "{vm:?}");
    let stdout = log_text(&m, &rec.id, LogSelector::Stream(LogStream::Stdout));
    assert!(stdout.contains("warm hello"), "{stdout}");
    assert!(
        stdout.contains("allowed=allowed body"),
        "through the gateway: {stdout}"
    );
    // The guest's clock was set from the host's when it resumed.
    let guest_now: i64 = stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("date +%s");
    let host_now = delegate_host::clock::now_ms() / 1000;
    assert!(
        (host_now - guest_now).abs() < 60,
        "guest {guest_now}, host {host_now}"
    );
    // Its relays end with it; the refilling VM's QEMU names the same
    // callback port, so only this VM is looked for.
    assert_vm_gone(&host, dir.path(), &rec.id).await;

    // The pool refills with another VM; it is left for the next start.
    let second = eventually(240, "the pool to refill", || async {
        ready(&host).into_iter().find(|id| *id != first)
    })
    .await;
    host.stop().await;
    let vm_dir = dir.path().join("qemu/vms").join(&second);
    let marker = vm_dir.to_string_lossy().into_owned();
    assert!(!processes_mentioning(&marker).is_empty(), "kept at exit");

    // A restarted host adopts it and, at its own shutdown, destroys it.
    let host = Host::start(pooled(dir.path(), ports, false), p.clone()).await;
    assert_eq!(one_ready(&host, "the adopted VM").await, second);
    host.stop().await;
    eventually(30, "no QEMU process of the pool VM", || async {
        processes_mentioning(&marker).is_empty().then_some(())
    })
    .await;
    assert!(!vm_dir.exists(), "{} removed", vm_dir.display());
    assert!(p.list_idle().await.unwrap().is_empty());
    let relay = format!("relay 127.0.0.1:{port}");
    eventually(30, "no relay process of either host", || async {
        processes_mentioning(&relay).is_empty().then_some(())
    })
    .await;
}
