//! End to end on a simulated Proxmox cluster: a real MCP client drives
//! `delegate-host serve` with `DELEGATE_PROVIDER=proxmox` against the PVE
//! simulator, whose VMs run the real `delegate-guest boot` once the
//! bootstrap is written through the guest agent. Jobs succeed, fail, time
//! out, are cancelled while cloning, starting and running; a burst of 50
//! spreads over the nodes within the clone caps; and after every test no VM
//! of ours remains.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use delegate_tests::mcp::{
    Client, HostEnv, Revision, connect_stdio, free_port, hello_manifest, marker, pids_with,
    sleeper_manifest,
};
use delegate_tests::pve_host::{real_guest, serve_env};
use delegate_tests::pve_sim::{PveSim, SimConfig};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(180);

async fn start(mut cfg: SimConfig, extra: &[(&str, &str)]) -> (PveSim, HostEnv) {
    cfg.guest = Some(real_guest());
    let sim = PveSim::start(cfg).await.unwrap();
    let mut env = serve_env(&sim, "e2e", free_port());
    env.set("CLEANUP_INTERVAL_SECONDS", "2");
    for (k, v) in extra {
        env.set(k, *v);
    }
    (sim, env)
}

/// Polls until no VM of ours is left in the cluster.
async fn assert_no_vm_left(sim: &PveSim, env: &HostEnv) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = sim.guest_vmids();
        if left.is_empty() && sim.guest_pids().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "VMs left behind: {left:?}\n{}",
            env.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect(env: &HostEnv) -> Client {
    connect_stdio(env, Revision::Current).await
}

#[tokio::test]
async fn jobs_succeed_fail_and_time_out_in_simulated_vms() {
    let (sim, env) = start(SimConfig::standard(), &[]).await;
    let client = connect(&env).await;

    let ok = client.submit(hello_manifest(3)).await;
    let v = client.wait_final(&ok, LIMIT).await;
    assert_eq!(v["status"], "success", "{v}\n{}", env.log());
    let status = client.ok("get_job_status", json!({"job_id": ok})).await;
    assert_eq!(status["vm"]["provider"], "proxmox", "{status}");
    let result = client.ok("get_job_result", json!({"job_id": ok})).await;
    assert!(result.to_string().contains("line 3"), "{result}");

    let bad = client
        .submit(json!({"task": "echo failing; exit 3", "agentType": "script", "timeout": 120}))
        .await;
    let v = client.wait_final(&bad, LIMIT).await;
    assert_eq!(v["status"], "failed", "{v}");

    let mark = marker("pve-e2e-timeout");
    let slow = client.submit(sleeper_manifest(&mark, 8)).await;
    let v = client.wait_final(&slow, LIMIT).await;
    assert_eq!(v["status"], "timeout", "{v}");
    assert_no_vm_left(&sim, &env).await;
    assert!(pids_with(&mark).is_empty());
    client.close().await;
}

#[tokio::test]
async fn cancel_while_cloning_starting_and_running() {
    let mut cfg = SimConfig::standard();
    cfg.timings.linked_clone = Duration::from_secs(3);
    let (sim, env) = start(cfg, &[]).await;
    let client = connect(&env).await;

    // While cloning: the VM exists, locked by its clone.
    let id = client
        .submit(sleeper_manifest(&marker("pve-e2e-c1"), 300))
        .await;
    let deadline = Instant::now() + LIMIT;
    while !sim.with(|c| c.vms.values().any(|v| v.lock() == Some("clone"))) {
        assert!(Instant::now() < deadline, "{}", env.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = client.ok("cancel_job", json!({"job_id": id})).await;
    assert_eq!(v["status"], "cancelled", "{v}");
    assert_no_vm_left(&sim, &env).await;

    // While starting: the VM runs but its agent is not up yet.
    sim.with(|c| {
        c.timings.linked_clone = Duration::from_millis(100);
        c.timings.agent_boot = Duration::from_secs(4);
    });
    let id = client
        .submit(sleeper_manifest(&marker("pve-e2e-c2"), 300))
        .await;
    let deadline = Instant::now() + LIMIT;
    while !sim.with(|c| c.vms.values().any(|v| v.running && v.guest.is_none())) {
        assert!(Instant::now() < deadline, "{}", env.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = client.ok("cancel_job", json!({"job_id": id})).await;
    assert_eq!(v["status"], "cancelled", "{v}");
    assert_no_vm_left(&sim, &env).await;

    // While running: the job's processes die with the VM.
    sim.with(|c| c.timings.agent_boot = Duration::from_millis(200));
    let mark = marker("pve-e2e-c3");
    let id = client.submit(sleeper_manifest(&mark, 300)).await;
    client.wait_state(&id, "running", LIMIT).await;
    let deadline = Instant::now() + LIMIT;
    while pids_with(&mark).is_empty() {
        assert!(Instant::now() < deadline, "{}", env.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let v = client.ok("cancel_job", json!({"job_id": id})).await;
    assert_eq!(v["status"], "cancelled", "{v}");
    assert_no_vm_left(&sim, &env).await;
    assert!(pids_with(&mark).is_empty());
    client.close().await;
}

#[tokio::test]
async fn a_vm_dying_mid_job_fails_the_job_and_is_cleaned_up() {
    let (sim, env) = start(
        SimConfig::standard(),
        &[("HEARTBEAT_THRESHOLD_SECONDS", "30")],
    )
    .await;
    let client = connect(&env).await;
    let id = client.submit(sleeper_manifest("pve-e2e-die", 300)).await;
    client.wait_state(&id, "running", LIMIT).await;
    let vmid = sim.guest_vmids()[0];
    assert!(sim.crash_vm(vmid));
    let v = client.wait_final(&id, LIMIT).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_no_vm_left(&sim, &env).await;
    client.close().await;
}

#[tokio::test]
async fn a_vm_stopped_or_deleted_behind_the_hosts_back_fails_its_job_within_seconds() {
    // A lease far longer than the wait below: only the provider's look at
    // the VM can end these jobs in time.
    let (sim, env) = start(
        SimConfig::standard(),
        &[("HEARTBEAT_THRESHOLD_SECONDS", "900")],
    )
    .await;
    let client = connect(&env).await;
    for (deleted, says) in [(false, "stopped"), (true, "no longer exists")] {
        let id = client.submit(sleeper_manifest("pve-e2e-gone", 300)).await;
        client.wait_state(&id, "running", LIMIT).await;
        let vmid = sim.guest_vmids()[0];
        if deleted {
            assert!(sim.delete_vm(vmid));
        } else {
            assert!(sim.crash_vm(vmid));
        }
        let v = client.wait_final(&id, Duration::from_secs(60)).await;
        assert_eq!(v["status"], "failed", "{v}");
        let why = v["error"].as_str().unwrap_or_default();
        assert!(why.contains(says), "{v}");
        assert!(!why.contains("heartbeat lease"), "{v}");
        assert_no_vm_left(&sim, &env).await;
    }
    client.close().await;
}

#[tokio::test]
async fn a_burst_of_50_spreads_over_nodes_within_the_caps() {
    let (sim, env) = start(
        SimConfig::standard(),
        &[
            ("DELEGATE_MAX_RUNNING", "50"),
            ("DELEGATE_MAX_PROVISIONING", "50"),
            ("PROXMOX_MAX_CLONES_PER_NODE", "2"),
            ("PROXMOX_MAX_CLONES_PER_STORAGE", "5"),
        ],
    )
    .await;
    let client = connect(&env).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(client.submit(hello_manifest(1)).await);
    }
    for id in &ids {
        let v = client.wait_final(id, Duration::from_secs(600)).await;
        assert_eq!(v["status"], "success", "{v}\n{}", env.log());
    }
    let (peak, total) = sim.with(|c| (c.clones_peak.clone(), c.clones_total.clone()));
    assert!(peak.values().all(|n| *n <= 2), "per-node cap: {peak:?}");
    let nodes: BTreeSet<&String> = total.keys().collect();
    assert_eq!(nodes.len(), 3, "spread: {total:?}");
    assert_eq!(total.values().sum::<u32>(), 50);
    assert_no_vm_left(&sim, &env).await;
    client.close().await;
}
